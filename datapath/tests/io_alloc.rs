//! The hot path does not allocate: a counting allocator (per thread, so
//! other tests' threads do not interfere; the `allocation-counter` crate) watches steady-state bursts
//! through the memory port and through real AF_XDP sockets.

mod io_common;

use datapath::io::afxdp::{AfXdpConfig, AfXdpPort, XdpConfig, XdpMode, XdpProgram};
use datapath::io::memory::MemoryPort;
use datapath::io::{Batch, Port, Umem, UmemConfig, netlink};
use io_common::{Netns, ip, skip_without_afxdp, tag};

/// Allocations `f` makes on this thread; fails unless counting is active
/// (so a zero cannot pass vacuously).
fn allocs(f: impl FnOnce()) -> u64 {
    let probe = allocation_counter::measure(|| drop(std::hint::black_box(vec![0u8; 64])));
    assert_eq!(probe.count_total, 1, "the counting allocator is active");
    allocation_counter::measure(f).count_total
}

fn frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x88, 0xb5]);
    f.resize(60, 0xab);
    f
}

#[test]
fn memory_port_bursts_do_not_allocate() {
    let mut umem = Umem::new(UmemConfig {
        frame_count: 256,
        frame_size: 2048,
    })
    .unwrap();
    let mut source = MemoryPort::new("gen");
    source.set_replay(vec![frame(), frame()]);
    let mut sink = MemoryPort::new("sink");
    sink.set_capture(false);
    let mut batch = Batch::new();
    let a = allocs(|| {
        for _ in 0..1000 {
            source.rx_burst(&mut umem, &mut batch);
            sink.tx_burst(&mut umem, &mut batch);
        }
    });
    assert_eq!(a, 0, "allocations in 1000 bursts");
    assert_eq!(sink.stats().tx_packets, 64_000);
}

#[test]
fn afxdp_bursts_do_not_allocate() {
    if skip_without_afxdp() {
        return;
    }
    let t = tag();
    let ns = format!("fp-{t}-alloc");
    let _guard = Netns::new(std::slice::from_ref(&ns));
    let (x, y) = (format!("x{t}"), format!("y{t}"));
    ip(&["-n", &ns, "link", "add", &x, "type", "veth", "peer", &y]);
    for d in [&x, &y] {
        ip(&["-n", &ns, "link", "set", d, "up"]);
    }
    std::thread::spawn(move || {
        netlink::enter_netns(&ns).unwrap();
        let mut umem = Umem::new(UmemConfig {
            frame_count: 8192,
            frame_size: 2048,
        })
        .unwrap();
        let cfg = XdpConfig {
            mode: XdpMode::Native,
            ..XdpConfig::default()
        };
        let (px, py) = (
            XdpProgram::attach(&x, &cfg).unwrap(),
            XdpProgram::attach(&y, &cfg).unwrap(),
        );
        let mut tx_port = AfXdpPort::open(&mut umem, &px, &AfXdpConfig::default()).unwrap();
        let mut rx_port = AfXdpPort::open(&mut umem, &py, &AfXdpConfig::default()).unwrap();
        let mut source = MemoryPort::new("gen");
        source.set_replay(vec![frame()]);
        let (mut out, mut inp) = (Batch::new(), Batch::new());
        let mut burst = |umem: &mut Umem| {
            source.rx_burst(umem, &mut out);
            tx_port.tx_burst(umem, &mut out);
            umem.free_batch(&mut out);
            let n = rx_port.rx_burst(umem, &mut inp);
            umem.free_batch(&mut inp);
            n
        };
        // Warm up (first kicks, lazily initialised kernel state).
        for _ in 0..100 {
            burst(&mut umem);
        }
        let mut received = 0;
        let a = allocs(|| {
            for _ in 0..2000 {
                received += burst(&mut umem);
            }
        });
        assert_eq!(a, 0, "allocations in 2000 AF_XDP bursts");
        assert!(received > 1000, "only {received} frames crossed the veth");
    })
    .join()
    .unwrap();
}
