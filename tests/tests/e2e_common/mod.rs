//! The end-to-end cluster: network namespaces wired like a two-node
//! Antrea noencap cluster, with `flowpath run` as node 1's datapath.
//!
//! ```text
//!   ext (10.176.26.36) ──┐
//!                        ├── lan (bridge) ──┬── node1 uplink (10.176.25.244, AF_XDP, ofport 3)
//!   node2 (10.176.25.245)┘                  │     gw0 TAP 172.16.2.1 (ofport 2, created by flowpath)
//!     └── rpod 172.16.3.10                  │     pod1 172.16.2.10 (veth, AF_XDP, ofport 4)
//!                                           │     pod2 172.16.2.11 (veth, AF_XDP, ofport 5)
//! ```
//!
//! node1's host stack owns 10.176.25.244 on the uplink (the XDP program
//! passes ARP to it; everything IPv4 goes to flowpath) and forwards between
//! gw0 and the uplink (noencap, seed 004): remote pods 172.16.3.0/24 via
//! node2. Its NodePorts reach flowpath from the host through an `ip rule`
//! that routes them to gw0 (what kube-proxy's rules do in a real node), and
//! the host answers connections that reached it through gw0 back through gw0
//! (a connmark and an `ip rule`; a real node needs the same): an endpoint on
//! the host network that sees an outside client's address (NodePort ETP
//! Local) must not answer it straight out of the uplink, around the un-NAT.
//!
//! Every namespace carries the pid in its name and is deleted on drop, after
//! every process started in it is killed, even when the test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

pub const NODE_IP: &str = "10.176.25.244";
pub const NODE2_IP: &str = "10.176.25.245";
pub const EXT_IP: &str = "10.176.26.36";
pub const GW_IP: &str = "172.16.2.1";
pub const VIP: &str = "169.254.169.110";
pub const POD1_IP: &str = "172.16.2.10";
pub const POD2_IP: &str = "172.16.2.11";
pub const RPOD_IP: &str = "172.16.3.10";
/// node2's uplink MAC (the compiled pipeline routes to peers by MAC).
pub const NODE2_MAC: &str = "00:50:56:a7:35:0c";
/// Hairpin source the compiler gives a pod reaching itself (its default).
pub const HAIRPIN_IP: &str = "169.254.169.111";

/// Run a command; panic with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a shell script inside namespace `ns` (`set -e`).
pub fn sh(ns: &str, script: &str) -> String {
    run("ip", &["netns", "exec", ns, "sh", "-ec", script])
}

/// Skip (true, with the reason printed) unless this kernel and these
/// privileges allow namespaces, TUN and AF_XDP.
pub fn skip() -> bool {
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
        && std::fs::metadata("/dev/net/tun").is_ok();
    if !netns {
        eprintln!("SKIP: needs root, iproute2 and /dev/net/tun");
        return true;
    }
    if let Err(why) = datapath::io::afxdp::probe() {
        eprintln!("SKIP: AF_XDP unavailable on this kernel/with these privileges: {why}");
        return true;
    }
    for tool in ["curl", "python3", "ethtool", "iptables"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("SKIP: {tool} not installed (scripts/setup.sh installs it)");
            return true;
        }
    }
    false
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn tag() -> String {
    // Relaxed: only uniqueness matters.
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{}x{n}", std::process::id())
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `flowpath` binary, built once per test process.
pub fn flowpath_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "ctrl", "--bin", "flowpath"])
            .current_dir(repo())
            .status()
            .expect("run cargo build");
        assert!(st.success(), "cargo build -p ctrl failed");
        // The test binary is target/<profile>/deps/NAME; the command is
        // target/<profile>/flowpath... for the dev profile that `cargo
        // build` used.
        let exe = std::env::current_exe().expect("current exe");
        let target = exe
            .ancestors()
            .find(|p| p.join("debug").is_dir() && p.join("debug").join("flowpath").exists())
            .map(|p| p.join("debug").join("flowpath"));
        target.expect("flowpath binary next to the test binary")
    })
    .clone()
}

/// node1 for the Service compiler (the tables of node.toml; the top-level
/// keys are written with the run keys).
const NODE1_TABLES: &str = r#"
[uplink]
port = 3
mac = "00:50:56:a7:35:0b"

[gateway]
name = "gw0"
ip = "172.16.2.1"
mac = "0a:58:ac:10:02:01"
port = 2

[[pods]]
name = "pod1"
ip = "172.16.2.10"
mac = "0a:58:ac:10:02:0a"
port = 4

[[pods]]
name = "pod2"
ip = "172.16.2.11"
mac = "0a:58:ac:10:02:0b"
port = 5

[[peers]]
name = "node2"
node_ip = "10.176.25.245"
node_mac = "00:50:56:a7:35:0c"
pod_cidr = "172.16.3.0/24"
"#;

/// Namespaces of one cluster and the processes running in them.
pub struct Cluster {
    pub tag: String,
    pub lan: String,
    pub ext: String,
    pub n1: String,
    pub n2: String,
    pub pod1: String,
    pub pod2: String,
    pub rpod: String,
    /// node1's uplink interface (AF_XDP).
    pub up1: String,
    /// node1's pod-side veths (AF_XDP).
    pub p1: String,
    pub p2: String,
    pub dir: PathBuf,
    /// Flows and groups node1 runs (default: tests/e2e/).
    pub flows: PathBuf,
    pub groups: PathBuf,
    /// When set, node1 runs from these manifests instead (`services =
    /// DIR`, with node1's description as the compiler's node keys).
    pub services: Option<PathBuf>,
    rules_done: bool,
    children: Vec<Child>,
    namespaces: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn veth(a: &str, ans: &str, b: &str, bns: &str, queues: u32) {
    let q = queues.to_string();
    run(
        "ip",
        &[
            "link",
            "add",
            a,
            "netns",
            ans,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            b,
            "netns",
            bns,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ],
    );
}

impl Cluster {
    /// Build the namespaces and links; `queues` for node1's uplink and pod
    /// veths. Starts the HTTP servers.
    pub fn new(queues: u32) -> Cluster {
        let t = tag();
        let name = |s: &str| format!("fpe-{t}-{s}");
        let mut c = Cluster {
            lan: name("lan"),
            ext: name("ext"),
            n1: name("n1"),
            n2: name("n2"),
            pod1: name("pod1"),
            pod2: name("pod2"),
            rpod: name("rpod"),
            up1: format!("u{t}"),
            p1: format!("pa{t}"),
            p2: format!("pb{t}"),
            dir: std::env::temp_dir().join(format!("fpe-{t}")),
            tag: t.clone(),
            flows: repo().join("tests/e2e/flows.txt"),
            groups: repo().join("tests/e2e/groups.txt"),
            services: None,
            rules_done: false,
            children: Vec::new(),
            namespaces: Vec::new(),
        };
        std::fs::create_dir_all(&c.dir).expect("temp dir");
        for n in [&c.lan, &c.ext, &c.n1, &c.n2, &c.pod1, &c.pod2, &c.rpod] {
            run("ip", &["netns", "add", n]);
            c.namespaces.push(n.clone());
        }
        let (le, l1, l2) = (format!("le{t}"), format!("l1{t}"), format!("l2{t}"));
        let (e0, u2, rp) = (format!("e{t}"), format!("v{t}"), format!("r{t}"));
        veth(&e0, &c.ext, &le, &c.lan, 1);
        veth(&c.up1, &c.n1, &l1, &c.lan, queues);
        veth(&u2, &c.n2, &l2, &c.lan, 1);
        veth(&c.p1, &c.n1, "eth0", &c.pod1, queues);
        veth(&c.p2, &c.n1, "eth0", &c.pod2, queues);
        veth(&rp, &c.n2, "eth0", &c.rpod, 1);
        sh(
            &c.lan,
            &format!(
                "ip link add br0 type bridge; ip link set br0 up
                 for i in {le} {l1} {l2}; do ip link set $i master br0 up; done"
            ),
        );
        sh(
            &c.ext,
            &format!(
                "ip link set lo up; ip link set {e0} address 00:50:56:a7:ca:77 up
                 ip addr add {EXT_IP}/16 dev {e0}; ethtool -K {e0} tx off >/dev/null"
            ),
        );
        sh(
            &c.n1,
            &format!(
                "ip link set lo up
                 sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
                    net.ipv4.conf.all.accept_local=1 net.ipv4.conf.default.accept_local=1 \
                    net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0
                 ip link set {up} address 00:50:56:a7:35:0b up
                 ip addr add {NODE_IP}/16 dev {up}
                 ethtool -K {up} tx off >/dev/null
                 ip route add 172.16.3.0/24 via {NODE2_IP} dev {up}
                 ip link set {p1} up; ip link set {p2} up
                 ethtool -K {p1} tx off >/dev/null; ethtool -K {p2} tx off >/dev/null",
                up = c.up1,
                p1 = c.p1,
                p2 = c.p2
            ),
        );
        for (ns, ip, mac) in [
            (&c.pod1, POD1_IP, "0a:58:ac:10:02:0a"),
            (&c.pod2, POD2_IP, "0a:58:ac:10:02:0b"),
        ] {
            sh(
                ns,
                &format!(
                    "ip link set lo up; ip link set eth0 address {mac} up
                     ip addr add {ip}/24 dev eth0; ip route add default via {GW_IP}
                     ethtool -K eth0 tx off >/dev/null"
                ),
            );
        }
        sh(
            &c.n2,
            &format!(
                "ip link set lo up; sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
                 ip link set {u2} address {NODE2_MAC} up; ip addr add {NODE2_IP}/16 dev {u2}; ethtool -K {u2} tx off >/dev/null
                 ip route add 172.16.2.0/24 via {NODE_IP} dev {u2}
                 ip link set {rp} up; ip addr add 172.16.3.1/24 dev {rp}; ethtool -K {rp} tx off >/dev/null"
            ),
        );
        sh(
            &c.rpod,
            &format!(
                "ip link set lo up; ip link set eth0 up; ip addr add {RPOD_IP}/24 dev eth0
                 ip route add default via 172.16.3.1; ethtool -K eth0 tx off >/dev/null"
            ),
        );
        let servers = [
            (c.pod1.clone(), "pod1", POD1_IP),
            (c.pod2.clone(), "pod2", POD2_IP),
            (c.rpod.clone(), "rpod", RPOD_IP),
            (c.n1.clone(), "node1", NODE_IP),
            (c.n2.clone(), "node2", NODE2_IP),
        ];
        for (ns, name, ip) in servers {
            c.server(&ns, name, ip, 8080);
        }
        c
    }

    /// Start the HTTP server in `ns` and wait until it listens.
    pub fn server(&mut self, ns: &str, name: &str, ip: &str, port: u16) {
        self.server_proto(ns, name, ip, port, "tcp");
    }

    /// The UDP echo server (answers every datagram with the hello line).
    pub fn udp_server(&mut self, ns: &str, name: &str, ip: &str, port: u16) {
        self.server_proto(ns, name, ip, port, "udp");
    }

    fn server_proto(&mut self, ns: &str, name: &str, ip: &str, port: u16, proto: &str) {
        let script = repo().join("scripts/e2e-http-server.py");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3"])
            .arg(&script)
            .args([name, ip, &port.to_string(), proto])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start http server");
        let out = child.stdout.take().expect("piped");
        self.children.push(child);
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("server output");
        assert!(line.starts_with("listening"), "server {name}: {line:?}");
    }

    /// Write node.toml for node1 and start `flowpath run` in node1's
    /// namespace. `queues` entries per AF_XDP port.
    pub fn start_flowpath(&mut self, queues: u32, mode: &str, extra: &str) -> Flowpath {
        let qs: Vec<String> = (0..queues).map(|q| q.to_string()).collect();
        let qs = qs.join(", ");
        let pcap = |n: &str| self.dir.join(format!("{n}.pcap")).display().to_string();
        let rules = match &self.services {
            None => format!(
                "flows = \"{}\"\ngroups = \"{}\"",
                self.flows.display(),
                self.groups.display()
            ),
            Some(dir) => format!(
                "services = \"{}\"\nname = \"node1\"\nmode = \"noencap\"\n\
                 node_ips = [\"{NODE_IP}\"]\npod_cidr = \"172.16.2.0/24\"",
                dir.display()
            ),
        };
        let cfg = format!(
            r#"# node1 of the e2e cluster (written by tests/tests/e2e_common)
{rules}
idle_sleep_us = 20
{extra}
[conntrack]
capacity = 16384

[cache]
megaflows = 4096

[[ports]]
name = "gw0"
ofport = 2
type = "tap"
ip = "{GW_IP}/24"
mac = "0a:58:ac:10:02:01"
pcap = "{pgw}"

[[ports]]
name = "uplink"
ofport = 3
type = "afxdp"
interface = "{up}"
queues = [{qs}]
mode = "{mode}"
pass_ethertypes = [0x0806]
pcap = "{pup}"

[[ports]]
name = "pod1"
ofport = 4
type = "afxdp"
interface = "{p1}"
queues = [{qs}]
mode = "{mode}"
pcap = "{pp1}"

[[ports]]
name = "pod2"
ofport = 5
type = "afxdp"
interface = "{p2}"
queues = [{qs}]
mode = "{mode}"
pcap = "{pp2}"
{node}"#,
            node = if self.services.is_some() {
                NODE1_TABLES
            } else {
                ""
            },
            up = self.up1,
            p1 = self.p1,
            p2 = self.p2,
            pgw = pcap("gw0"),
            pup = pcap("uplink"),
            pp1 = pcap("pod1"),
            pp2 = pcap("pod2"),
        );
        let path = self.dir.join("node.toml");
        std::fs::write(&path, cfg).expect("write node.toml");
        let fp = Flowpath::start(&self.n1, &path);
        // The gateway exists now: the host's routes through it (they go
        // away with the device, so again after a restart).
        sh(
            &self.n1,
            &format!(
                "ip route replace {VIP}/32 dev gw0
                 ip route replace 10.96.0.0/16 dev gw0 src {GW_IP}
                 ip route replace {NODE_IP}/32 via {VIP} dev gw0 onlink src {GW_IP} table 100
                 ip route replace default via {VIP} dev gw0 onlink table 101"
            ),
        );
        if !self.rules_done {
            sh(
                &self.n1,
                &format!(
                    "ip rule add pref 100 lookup local
                     ip rule del pref 0
                     ip rule add pref 10 to {NODE_IP} ipproto tcp dport 30000-32767 lookup 100
                     ip rule add pref 11 to {NODE_IP} ipproto udp dport 30000-32767 lookup 100
                     iptables -t mangle -A PREROUTING -i gw0 -m conntrack --ctstate NEW -j CONNMARK --set-mark 0x10/0x10
                     iptables -t mangle -A OUTPUT -j CONNMARK --restore-mark
                     ip rule add pref 20 fwmark 0x10/0x10 lookup 101"
                ),
            );
            self.rules_done = true;
        }
        fp
    }

    /// `curl` from `ns`; returns (exit ok, body).
    pub fn curl(&self, ns: &str, url: &str) -> (bool, String) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "curl",
                "-sS",
                "--max-time",
                "8",
                "--connect-timeout",
                "4",
                url,
            ])
            .output()
            .expect("run curl");
        let mut body = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            body.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        (out.status.success(), body)
    }

    /// Send one UDP datagram from `ns` to `ip:port` and return the answer
    /// (empty when none came within 3 s).
    pub fn udp(&self, ns: &str, ip: &str, port: u16) -> String {
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.settimeout(3)\ns.sendto(b'ping',('{ip}',{port}))\n\
             try:\n print(s.recv(2048).decode(),end='')\nexcept OSError:\n pass\n"
        );
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &script])
            .output()
            .expect("run python3");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run every case (see [`Case`]) against the running node; returns the
    /// failures, one line each.
    pub fn run_cases(&self, cases: &[Case]) -> Vec<String> {
        let mut failures = Vec::new();
        for case in cases {
            let client = (case.client)(self);
            let t0 = Instant::now();
            let want = format!("hello from {}; peer={}:", case.endpoint, case.peer);
            if let Some(port) = case.url.strip_prefix("udp://") {
                let (ip, port) = port.split_once(':').expect("udp://IP:PORT");
                let got = self.udp(&client, ip, port.parse().expect("port"));
                if got.starts_with(&want) {
                    eprintln!("ok: {} ({:.2?})", case.name, t0.elapsed());
                } else {
                    failures.push(format!("{}: want {want:?}..., got {got:?}", case.name));
                }
                continue;
            }
            let (ok, body) = self.curl(&client, case.url);
            if !ok || !body.starts_with(&want) {
                failures.push(format!(
                    "{}: want {want:?}..., got ok={ok} {body:?}",
                    case.name
                ));
                continue;
            }
            let (ok, big) = self.curl(&client, &format!("{}/big", case.url));
            let body = big.split_once('\n').map_or("", |(_, b)| b);
            if !ok || body.len() != BIG_LEN || body.as_bytes() != big_payload().as_slice() {
                failures.push(format!(
                    "{} /big: ok={ok}, {} bytes after the hello line, want {BIG_LEN} of the pattern{}",
                    case.name,
                    body.len(),
                    if body.len() == BIG_LEN { " (corrupt)" } else { "" }
                ));
            } else {
                eprintln!("ok: {} ({:.2?})", case.name, t0.elapsed());
            }
        }
        failures
    }

    /// Duplicate or malformed frames in the captures of node1's ports.
    pub fn capture_failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        for port in ["gw0", "uplink", "pod1", "pod2"] {
            let frames = self.capture(port);
            for p in capture_problems(&frames).into_iter().take(5) {
                failures.push(format!("capture {port}: {p}"));
            }
        }
        failures
    }

    /// Frames captured by flowpath on `port` (rx and tx).
    pub fn capture(&self, port: &str) -> Vec<Vec<u8>> {
        let p = self.dir.join(format!("{port}.pcap"));
        match std::fs::File::open(&p) {
            Ok(f) => datapath::io::pcap::read_all(f).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

/// One end-to-end case: from `client`'s namespace, `url` (http://IP:PORT,
/// or udp://IP:PORT for one datagram) must answer "hello from `endpoint`;
/// peer=`peer`:..." (the source address the endpoint saw); HTTP cases also
/// download /big and compare every byte.
pub struct Case {
    pub name: &'static str,
    pub client: fn(&Cluster) -> String,
    pub url: &'static str,
    pub endpoint: &'static str,
    pub peer: &'static str,
}

/// Clients for [`Case::client`].
pub fn ext(c: &Cluster) -> String {
    c.ext.clone()
}
pub fn node(c: &Cluster) -> String {
    c.n1.clone()
}
pub fn pod1(c: &Cluster) -> String {
    c.pod1.clone()
}
pub fn pod2(c: &Cluster) -> String {
    c.pod2.clone()
}

/// Length of /big's payload after the hello line (256 KiB and a newline).
pub const BIG_LEN: usize = 256 * 1024 + 1;

/// /big's payload after the hello line: byte k is 33 + k % 89, then "\n"
/// (scripts/e2e-http-server.py).
pub fn big_payload() -> &'static Vec<u8> {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        let mut v: Vec<u8> = (0..256 * 1024).map(|k| 33 + (k % 89) as u8).collect();
        v.push(b'\n');
        v
    })
}

/// A `flowpath run` process.
pub struct Flowpath {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Drop for Flowpath {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Flowpath {
    pub fn start(ns: &str, config: &Path) -> Flowpath {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(flowpath_bin())
            .args(["run", "--stats-format", "json", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start flowpath run");
        let out = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut fp = Flowpath {
            child,
            lines: rx,
            log: Vec::new(),
        };
        fp.wait_line(|l| l.contains("ready"), Duration::from_secs(20))
            .unwrap_or_else(|| panic!("flowpath run did not start: {:?}", fp.log));
        fp
    }

    /// Wait for a stdout line satisfying `f`.
    pub fn wait_line(&mut self, f: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if f(&l) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        run("kill", &[&format!("-{sig}"), &self.child.id().to_string()]);
    }

    /// Counters via SIGUSR1.
    pub fn stats(&mut self) -> serde_json::Value {
        self.signal("USR1");
        let l = self
            .wait_line(|l| l.starts_with('{'), Duration::from_secs(5))
            .expect("counters after SIGUSR1");
        serde_json::from_str(&l).expect("counters are JSON")
    }

    /// SIGTERM; returns (exit code, final counters).
    pub fn terminate(mut self) -> (Option<i32>, serde_json::Value) {
        self.signal("TERM");
        let l = self
            .wait_line(|l| l.starts_with('{'), Duration::from_secs(10))
            .expect("final counters after SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                break st.code();
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (code, serde_json::from_str(&l).expect("JSON"))
    }
}

/// `flowpath ARGS --socket S`: (exit ok, stdout + stderr).
pub fn cli(sock: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(flowpath_bin())
        .args(args)
        .arg("--socket")
        .arg(sock)
        .output()
        .expect("run flowpath");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// The end of a matrix run: the counters (SIGUSR1) and the captures'
/// problems join `failures`; flowpath is stopped; every failure is
/// reported together, then the counters must show the traffic (rx, a cache
/// that hits, conntrack entries) and SIGTERM must exit 0 with final counters
/// at least as high.
pub fn finish_matrix(c: &Cluster, mut fp: Flowpath, mut failures: Vec<String>) {
    let stats = fp.stats();
    failures.extend(c.capture_failures());
    let total = &stats["total"];
    eprintln!("counters: {total}");
    let (code, fin) = fp.terminate();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let rx = total["rx"].as_u64().unwrap_or(0);
    assert!(rx > 1000, "rx {rx}");
    let hit = total["cache_hit_rate"].as_f64().unwrap_or(0.0);
    assert!(hit > 50.0, "cache hit rate {hit}%: {total}");
    assert!(total["ct_entries"].as_u64().unwrap_or(0) > 0, "{total}");
    assert_eq!(code, Some(0), "flowpath run exits 0 on SIGTERM");
    assert!(fin["total"]["rx"].as_u64().unwrap_or(0) >= rx);
}

/// Whether `dev` in `ns` has an XDP program attached.
pub fn has_xdp(ns: &str, dev: &str) -> bool {
    let out = run("ip", &["-n", ns, "link", "show", "dev", dev]);
    out.contains("prog/xdp") || out.split_whitespace().any(|w| w.starts_with("xdp"))
}

/// Frames that appear twice in a capture, and IPv4 frames with a bad
/// checksum: what a user would see as duplicate or malformed packets.
pub fn capture_problems(frames: &[Vec<u8>]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for f in frames {
        let s = tests::decode::summary(f);
        // Hosts legitimately repeat ARP and IPv6 ND/MLD; only IPv4 counts.
        if f.len() < 14 || f[12..14] != [0x08, 0x00] {
            continue;
        }
        if s.contains("csum BAD") {
            out.push(format!("bad checksum: {s}"));
        }
        // Same bytes twice: a duplicate (pure ACKs can legitimately repeat
        // only when the payload-free window update repeats; compare whole
        // frames including IP id).
        if !seen.insert(f.clone()) {
            out.push(format!("duplicate: {s}"));
        }
    }
    out
}
