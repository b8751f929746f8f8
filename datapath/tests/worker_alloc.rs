//! A worker's steady state does not allocate: a counting allocator (per
//! thread, the `allocation-counter` crate) watches 1,000 polls of established NodePort traffic (both
//! directions, 64-packet bursts through the whole ETP Cluster chain: three
//! conntrack zones, recirculations, NAT) after a warm-up.

use std::path::Path;
use std::sync::Arc;

use conntrack::{CtConfig, Shard};
use datapath::io::memory::MemoryPort;
use datapath::io::{Umem, UmemConfig};
use datapath::pipeline::Pipeline;
use datapath::pipeline::parse::{parse_flows, parse_groups};
use datapath::replay::{PortMap, Step, parse_steps};
use datapath::worker::{OwnedPort, PipelineCell, Route, Worker, WorkerConfig, WorkerControl};

fn mem<'a>(w: &'a mut Worker, name: &str) -> &'a mut MemoryPort {
    w.ports_mut()
        .iter_mut()
        .find(|p| p.name == name)
        .and_then(|p| p.port.as_any_mut().downcast_mut::<MemoryPort>())
        .expect("memory port")
}

#[test]
fn steady_state_bursts_do_not_allocate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios/nodeport_etp_cluster");
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
    let p = Pipeline::new(
        parse_flows("flows", &read("flows.txt")).unwrap(),
        parse_groups("groups", &read("groups.txt")).unwrap(),
    );
    let ports = PortMap::parse(read("ports.txt").trim()).unwrap();
    let steps = parse_steps("steps", &read("steps.txt"), &ports).unwrap();
    let packets: Vec<(String, Vec<u8>)> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Packet { port, bytes } => Some((port.clone(), bytes.clone())),
            _ => None,
        })
        .collect();
    let owned: Vec<OwnedPort> = ports
        .ports
        .iter()
        .map(|(n, of)| OwnedPort {
            name: n.clone(),
            ofport: *of,
            queue: 0,
            port: Box::new(MemoryPort::new(n.clone())),
            pcap: None,
        })
        .collect();
    let routes = ports
        .ports
        .iter()
        .enumerate()
        .map(|(i, (_, of))| (*of, Route::Local(i)))
        .collect();
    let mut w = Worker::new(
        WorkerConfig::default(),
        Umem::new(UmemConfig {
            frame_count: 1024,
            frame_size: 2048,
        })
        .unwrap(),
        owned,
        routes,
        Arc::new(PipelineCell::new(p)),
        Shard::new(CtConfig::with_capacity(1024)),
        None,
        Arc::new(WorkerControl::default()),
    );
    // Handshake: SYN, SYN-ACK, ACK.
    for (port, bytes) in &packets[..3] {
        mem(&mut w, port).inject(bytes);
        w.poll_once();
    }
    for (n, _) in &ports.ports {
        let m = mem(&mut w, n);
        m.take_sent();
        m.set_capture(false);
    }
    // Established traffic both ways, repeated forever: the client's ACK
    // from the uplink and the pod's data segment.
    let client_ack = packets[2].1.clone();
    let pod_data = packets
        .iter()
        .find(|(p, b)| p == "pod1" && b.len() > 60)
        .expect("a pod data segment")
        .1
        .clone();
    mem(&mut w, "uplink").set_replay(vec![client_ack]);
    mem(&mut w, "pod1").set_replay(vec![pod_data]);
    for _ in 0..200 {
        w.poll_once();
    }
    let before = w.stats();
    let t0 = std::time::Instant::now();
    let mut n = 0;
    let a = allocation_counter::measure(|| {
        for _ in 0..1000 {
            n += w.poll_once();
        }
    })
    .count_total;
    let dt = t0.elapsed();
    let probe = allocation_counter::measure(|| drop(std::hint::black_box(vec![0u8; 64])));
    assert_eq!(probe.count_total, 1, "the counting allocator is active");
    eprintln!(
        "{n} packets in {dt:?}: {:.0} ns/packet (memory ports, one core, established NodePort chain)",
        dt.as_nanos() as f64 / n as f64
    );
    let after = w.stats();
    assert!(n >= 1000 * 64, "{n} packets");
    let tx = after.exec.tx - before.exec.tx;
    assert!(
        tx as usize >= n - 10,
        "{tx} of {n} forwarded: {:?}",
        after.exec.drops
    );
    assert_eq!(after.cache.misses, before.cache.misses, "all cache hits");
    assert_eq!(a, 0, "{a} allocations over {n} packets");
}
