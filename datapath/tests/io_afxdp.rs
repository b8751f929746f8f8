//! AF_XDP ports against a real kernel: UDP between two namespaces through
//! an AF_XDP forwarder in a third, in native and skb mode, single and
//! multi-queue; program lifetime (kill -9, stale programs, foreign owners).
//!
//! Every test builds its own namespaces and veths (names carry the pid)
//! and removes them on drop. Tests skip, printing why, only if the AF_XDP
//! probe fails (kernel or privileges lack it).

mod io_common;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use datapath::io::afxdp::{
    AfXdpConfig, AfXdpError, AfXdpPort, XdpConfig, XdpMode, XdpProgram, ZeroCopy,
};
use datapath::io::{Batch, Port, PortStats, Umem, UmemConfig, netlink};
use io_common::{GEN_IP, SINK_IP, Topo, has_xdp, ip, skip_without_afxdp};

/// What the forwarder saw.
struct DutReport {
    a: Vec<PortStats>,
    b: Vec<PortStats>,
    zero_copy: bool,
}

/// Run an AF_XDP forwarder between `a` and `b` (every queue) in `ns`
/// until `stop`; `ready` gets Ok once the ports are open.
fn forwarder(
    ns: String,
    a: String,
    b: String,
    mode: XdpMode,
    queues: u32,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<(), String>>,
) -> DutReport {
    let setup = || -> Result<_, String> {
        netlink::enter_netns(&ns).map_err(|e| format!("enter {ns}: {e}"))?;
        let mut umem = Umem::new(UmemConfig {
            frame_count: 2048 * 2 * queues,
            frame_size: 2048,
        })
        .map_err(|e| e.to_string())?;
        let xcfg = XdpConfig {
            mode,
            ..XdpConfig::default()
        };
        let pa = XdpProgram::attach(&a, &xcfg).map_err(|e| e.to_string())?;
        let pb = XdpProgram::attach(&b, &xcfg).map_err(|e| e.to_string())?;
        if pa.mode() != mode || pb.mode() != mode {
            return Err(format!("asked for {mode:?}, got {:?}", pa.mode()));
        }
        let mut open = |p: &Arc<XdpProgram>, q| {
            let cfg = AfXdpConfig {
                queue: q,
                ring_size: 512,
                fill_size: 512,
                ..AfXdpConfig::default()
            };
            AfXdpPort::open(&mut umem, p, &cfg).map_err(|e| e.to_string())
        };
        let pa_ports = (0..queues)
            .map(|q| open(&pa, q))
            .collect::<Result<Vec<_>, _>>()?;
        let pb_ports = (0..queues)
            .map(|q| open(&pb, q))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((umem, pa_ports, pb_ports))
    };
    let (mut umem, mut pa, mut pb) = match setup() {
        Ok(x) => {
            ready.send(Ok(())).unwrap();
            x
        }
        Err(e) => {
            ready.send(Err(e)).unwrap();
            return DutReport {
                a: vec![],
                b: vec![],
                zero_copy: false,
            };
        }
    };
    let mut batch = Batch::new();
    // Relaxed: a stop flag; the results travel through join().
    while !stop.load(Ordering::Relaxed) {
        for q in 0..queues as usize {
            if pa[q].rx_burst(&mut umem, &mut batch) > 0 {
                pb[q].tx_burst(&mut umem, &mut batch);
                umem.free_batch(&mut batch);
            }
            if pb[q].rx_burst(&mut umem, &mut batch) > 0 {
                pa[q].tx_burst(&mut umem, &mut batch);
                umem.free_batch(&mut batch);
            }
        }
    }
    DutReport {
        a: pa.iter().map(|p| p.stats()).collect(),
        b: pb.iter().map(|p| p.stats()).collect(),
        zero_copy: pa[0].is_zero_copy(),
    }
}

/// Echo every datagram to 10.77.0.2:7777 back to its sender until `stop`.
fn echo_server(ns: String, stop: Arc<AtomicBool>, ready: mpsc::Sender<()>) {
    netlink::enter_netns(&ns).unwrap();
    let s = UdpSocket::bind((SINK_IP, 7777)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    ready.send(()).unwrap();
    let mut buf = [0u8; 2048];
    // Relaxed: a stop flag.
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    }
}

/// From the gen namespace, send `windows` rounds of one datagram per flow
/// (a flow is a source port), waiting for each echo; returns (sent,
/// echoed intact).
fn send_and_check_echoes(ns: &str, flows: usize, windows: usize, size: usize) -> (usize, usize) {
    netlink::enter_netns(ns).unwrap();
    let socks: Vec<UdpSocket> = (0..flows)
        .map(|_| {
            let s = UdpSocket::bind((GEN_IP, 0)).unwrap();
            s.connect((SINK_IP, 7777)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        })
        .collect();
    let (mut sent, mut ok) = (0, 0);
    let mut buf = vec![0u8; 2048];
    for w in 0..windows {
        for (f, s) in socks.iter().enumerate() {
            let mut msg = vec![(w + f) as u8; size];
            msg[..8].copy_from_slice(&((w * flows + f) as u64).to_be_bytes());
            s.send(&msg).unwrap();
            sent += 1;
        }
        for (f, s) in socks.iter().enumerate() {
            if let Ok(n) = s.recv(&mut buf) {
                let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                if n == size
                    && seq == (w * flows + f) as u64
                    && buf[8..n].iter().all(|&b| b == (w + f) as u8)
                {
                    ok += 1;
                }
            }
        }
    }
    (sent, ok)
}

/// Build gen -> dut(AF_XDP forwarder) -> sink and bounce UDP through it.
fn forward_through_afxdp(
    mode: XdpMode,
    queues: u32,
    flows: usize,
    windows: usize,
) -> (usize, usize, DutReport) {
    let t = Topo::new(queues);
    let stop = Arc::new(AtomicBool::new(false));
    let (rtx, rrx) = mpsc::channel();
    let dut = {
        let (ns, a, b, stop) = (t.dut_ns.clone(), t.a.clone(), t.b.clone(), stop.clone());
        thread::spawn(move || forwarder(ns, a, b, mode, queues, stop, rtx))
    };
    let (etx, erx) = mpsc::channel();
    let echo = {
        let (ns, stop) = (t.sink_ns.clone(), stop.clone());
        thread::spawn(move || echo_server(ns, stop, etx))
    };
    let setup = rrx
        .recv_timeout(Duration::from_secs(20))
        .expect("forwarder never became ready");
    erx.recv_timeout(Duration::from_secs(5))
        .expect("echo server never became ready");
    if let Err(e) = setup {
        stop.store(true, Ordering::Relaxed);
        let _ = echo.join();
        panic!("forwarder setup failed: {e}");
    }
    assert!(has_xdp(&t.dut_ns, &t.a), "no XDP program on {}", t.a);
    let gen_ns = t.gen_ns.clone();
    let (sent, ok) = thread::spawn(move || send_and_check_echoes(&gen_ns, flows, windows, 200))
        .join()
        .unwrap();
    // Relaxed: a stop flag.
    stop.store(true, Ordering::Relaxed);
    let report = dut.join().unwrap();
    echo.join().unwrap();
    // The program went away with its last owner. The kernel releases a BPF
    // link from a work queue after its last fd closes: give it 2 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while has_xdp(&t.dut_ns, &t.a) && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !has_xdp(&t.dut_ns, &t.a),
        "XDP program left on {} after close",
        t.a
    );
    (sent, ok, report)
}

fn check_forwarding(sent: usize, ok: usize, r: &DutReport) {
    assert_eq!(ok, sent, "echoes intact: {ok} of {sent}");
    let sum = |v: &[PortStats], f: fn(&PortStats) -> u64| v.iter().map(f).sum::<u64>();
    // Each datagram crosses a (rx) then b (tx), and its echo b then a.
    assert!(sum(&r.a, |s| s.rx_packets) >= sent as u64);
    assert!(sum(&r.b, |s| s.tx_packets) >= sent as u64);
    assert!(sum(&r.b, |s| s.rx_packets) >= sent as u64);
    assert!(sum(&r.a, |s| s.tx_packets) >= sent as u64);
    assert_eq!(sum(&r.a, |s| s.errors) + sum(&r.b, |s| s.errors), 0);
    assert!(!r.zero_copy, "veth has no AF_XDP zero-copy");
}

#[test]
fn udp_through_afxdp_forwarder_native() {
    if skip_without_afxdp() {
        return;
    }
    let (sent, ok, r) = forward_through_afxdp(XdpMode::Native, 1, 4, 100);
    check_forwarding(sent, ok, &r);
}

#[test]
fn udp_through_afxdp_forwarder_skb() {
    if skip_without_afxdp() {
        return;
    }
    let (sent, ok, r) = forward_through_afxdp(XdpMode::Skb, 1, 4, 100);
    check_forwarding(sent, ok, &r);
}

#[test]
fn multi_queue_native_spreads_flows_over_queues() {
    if skip_without_afxdp() {
        return;
    }
    // 16 flows over 2 queues: all on one queue has probability 2^-15.
    let (sent, ok, r) = forward_through_afxdp(XdpMode::Native, 2, 16, 20);
    check_forwarding(sent, ok, &r);
    let per_queue: Vec<u64> = r.a.iter().map(|s| s.rx_packets).collect();
    eprintln!("rx per queue on a: {per_queue:?}");
    assert!(
        per_queue.iter().all(|&n| n > 0),
        "rx per queue on a: {per_queue:?}"
    );
}

/// Open a DUT-side setup on one interface in `ns` (helper for the tests
/// below, which only need the program and one socket).
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    thread::spawn(move || {
        netlink::enter_netns(&ns).unwrap();
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn zero_copy_required_fails_on_veth_and_auto_falls_back_to_copy() {
    if skip_without_afxdp() {
        return;
    }
    let t = Topo::new(1);
    let a = t.a.clone();
    in_ns(&t.dut_ns, move || {
        let mut umem = Umem::new(UmemConfig::default()).unwrap();
        let prog = XdpProgram::attach(
            &a,
            &XdpConfig {
                mode: XdpMode::Native,
                ..XdpConfig::default()
            },
        )
        .unwrap();
        let zc = AfXdpConfig {
            zero_copy: ZeroCopy::Required,
            ..AfXdpConfig::default()
        };
        let err = AfXdpPort::open(&mut umem, &prog, &zc).unwrap_err();
        assert!(matches!(err, AfXdpError::Sys { .. }), "{err}");
        let port = AfXdpPort::open(&mut umem, &prog, &AfXdpConfig::default()).unwrap();
        assert!(!port.is_zero_copy());
        // A later socket on the same UMEM cannot ask for another mode.
        let err = AfXdpPort::open(&mut umem, &prog, &zc).unwrap_err();
        assert!(
            matches!(
                err,
                AfXdpError::Config {
                    field: "zero_copy",
                    ..
                }
            ),
            "{err}"
        );
    });
}

#[test]
fn stale_netlink_program_is_replaced_and_live_link_is_busy() {
    if skip_without_afxdp() {
        return;
    }
    let t = Topo::new(1);
    let a = t.a.clone();
    let (stale_id, dut_ns) = (
        in_ns(&t.dut_ns, {
            let a = a.clone();
            move || XdpProgram::attach_unmanaged_for_test(&a, XdpMode::Skb).unwrap()
        }),
        t.dut_ns.clone(),
    );
    assert!(stale_id != 0);
    let out = ip(&["-n", &dut_ns, "link", "show", "dev", &a]);
    assert!(out.contains(&format!("id {stale_id}")), "{out}");
    let ns = dut_ns.clone();
    in_ns(&dut_ns, move || {
        let cfg = XdpConfig {
            mode: XdpMode::Skb,
            ..XdpConfig::default()
        };
        let prog = XdpProgram::attach(&a, &cfg).unwrap();
        let out = ip(&["-n", &ns, "link", "show", "dev", &a]);
        assert!(
            out.contains("flowpath_xsk") && !out.contains(&format!("id {stale_id} ")),
            "{out}"
        );
        // While this process holds the link, another attach must refuse.
        let err = XdpProgram::attach(&a, &cfg).unwrap_err();
        assert!(matches!(err, AfXdpError::Busy { .. }), "{err}");
        drop(prog);
    });
    assert!(!has_xdp(&t.dut_ns, &t.a));
}

const CHILD_ENV: &str = "FLOWPATH_TEST_KILL9_CHILD";

/// Not a test on its own: the child process of `kill9_leaves_no_xdp_program`
/// (re-executed test binary). Attaches, opens a socket, says so, sleeps.
#[test]
fn kill9_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (ns, dev) = spec.split_once(':').unwrap();
    netlink::enter_netns(ns).unwrap();
    let mut umem = Umem::new(UmemConfig::default()).unwrap();
    let prog = XdpProgram::attach(dev, &XdpConfig::default()).unwrap();
    let _port = AfXdpPort::open(&mut umem, &prog, &AfXdpConfig::default()).unwrap();
    println!("FLOWPATH-CHILD-READY");
    thread::sleep(Duration::from_secs(120));
}

#[test]
fn kill9_leaves_no_xdp_program() {
    if skip_without_afxdp() {
        return;
    }
    let t = Topo::new(1);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["kill9_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}:{}", t.dut_ns, t.a))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("FLOWPATH-CHILD-READY") {
                let _ = tx.send(());
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(30));
    if ready.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("child never attached");
    }
    assert!(has_xdp(&t.dut_ns, &t.a), "child's program not attached");
    child.kill().unwrap(); // SIGKILL: no destructors run
    child.wait().unwrap();
    // The kernel frees the link asynchronously after the last fd closes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while has_xdp(&t.dut_ns, &t.a) {
        assert!(
            Instant::now() < deadline,
            "XDP program still attached after kill -9"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pass_filter_sends_listed_ethertypes_to_the_stack() {
    if skip_without_afxdp() {
        return;
    }
    // x (10.79.0.1, namespace nx) -- y (10.79.0.2, namespace ny).
    let t = io_common::tag();
    let (nx, ny) = (format!("fp-{t}-fx"), format!("fp-{t}-fy"));
    let _guard = io_common::Netns::new(&[nx.clone(), ny.clone()]);
    let (x, y) = (format!("x{t}"), format!("y{t}"));
    ip(&[
        "link", "add", &x, "netns", &nx, "type", "veth", "peer", &y, "netns", &ny,
    ]);
    ip(&["-n", &nx, "addr", "add", "10.79.0.1/24", "dev", &x]);
    ip(&["-n", &ny, "addr", "add", "10.79.0.2/24", "dev", &y]);
    ip(&["-n", &nx, "link", "set", &x, "up"]);
    ip(&["-n", &ny, "link", "set", &y, "up"]);
    io_common::run(
        "ip",
        &["netns", "exec", &nx, "ethtool", "-K", &x, "tx", "off"],
    );
    // Both programs pass IPv4 and ARP to the stack and steer the rest to
    // their socket.
    let filtered = || XdpConfig {
        mode: XdpMode::Native,
        pass_ethertypes: vec![0x0800, 0x0806],
        ..XdpConfig::default()
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = {
        let (ny, y) = (ny.clone(), y.clone());
        thread::spawn(move || {
            netlink::enter_netns(&ny).unwrap();
            let mut umem = Umem::new(UmemConfig::default()).unwrap();
            let py = XdpProgram::attach(&y, &filtered()).unwrap();
            let mut sy = AfXdpPort::open(&mut umem, &py, &AfXdpConfig::default()).unwrap();
            let server = UdpSocket::bind("10.79.0.2:7000").unwrap();
            server
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            ready_tx.send(()).unwrap();
            // IPv4 (after ARP, also passed) reaches y's stack.
            let mut buf = [0u8; 64];
            let (n, _) = server
                .recv_from(&mut buf)
                .expect("IPv4 was not passed to the stack");
            assert_eq!(&buf[..n], b"via the stack");
            // The 0x88b5 frame reaches the socket; nothing else does.
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut b = Batch::new();
            let mut seen = Vec::new();
            while Instant::now() < deadline && !seen.contains(&[0x88, 0xb5]) {
                sy.rx_burst(&mut umem, &mut b);
                seen.extend(b.frames().iter().map(|f| {
                    let d = umem.data(f);
                    [d[12], d[13]]
                }));
                umem.free_batch(&mut b);
            }
            seen
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("receiver setup failed");
    in_ns(&nx, move || {
        let client = UdpSocket::bind("10.79.0.1:0").unwrap();
        client.send_to(b"via the stack", "10.79.0.2:7000").unwrap();
        let mut umem = Umem::new(UmemConfig::default()).unwrap();
        let px = XdpProgram::attach(&x, &filtered()).unwrap();
        let mut sx = AfXdpPort::open(&mut umem, &px, &AfXdpConfig::default()).unwrap();
        let mut frame = umem.alloc().unwrap();
        umem.set_len(&mut frame, 60).unwrap();
        let d = umem.data_mut(&frame);
        d.fill(0x77);
        d[..6].copy_from_slice(&[0xff; 6]);
        d[12..14].copy_from_slice(&[0x88, 0xb5]);
        let mut b = Batch::new();
        b.push(frame).unwrap();
        assert_eq!(sx.tx_burst(&mut umem, &mut b), 1);
        // Keep the socket (and its TX) alive until the frame is surely out.
        thread::sleep(Duration::from_millis(200));
    });
    let seen = receiver.join().expect("receiver failed");
    assert!(
        seen.contains(&[0x88, 0xb5]),
        "0x88b5 frame never reached the socket: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|t| *t != [0x08, 0x00] && *t != [0x08, 0x06]),
        "IPv4/ARP reached the socket: {seen:?}"
    );
}

#[test]
fn stale_pinned_link_is_detached_and_unpinned() {
    if skip_without_afxdp() {
        return;
    }
    // Pinning needs bpffs; mount it if nobody has (harmless, idempotent).
    let mounted = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounted
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        io_common::run("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"]);
    }
    let t = Topo::new(1);
    let a = t.a.clone();
    in_ns(&t.dut_ns, move || {
        let pin = XdpProgram::attach_pinned_for_test(&a, XdpMode::Native).unwrap();
        // The pin keeps the link (and program) alive with no fd open.
        assert!(pin.exists());
        let st = netlink::xdp_state(netlink::ifindex(&a).unwrap()).unwrap();
        assert_eq!(st.programs().count(), 1);
        let prog = XdpProgram::attach(
            &a,
            &XdpConfig {
                mode: XdpMode::Native,
                ..XdpConfig::default()
            },
        )
        .expect("stale pinned link not cleaned up");
        assert!(!pin.exists(), "pin not removed");
        drop(prog);
        let st = netlink::xdp_state(netlink::ifindex(&a).unwrap()).unwrap();
        assert_eq!(st.programs().count(), 0);
    });
    // Leave bpffs as found (removes the directory only if empty).
    let _ = std::fs::remove_dir(datapath::io::afxdp::PIN_DIR);
}
