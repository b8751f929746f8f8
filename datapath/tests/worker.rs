//! The forwarding worker against offline replay: every seed scenario's
//! packets, injected into in-memory ports of one worker — and of two
//! workers that split the ports and the uplink's queues, so replies cross
//! workers through the conntrack owner handoff — come out on the same ports
//! with the same bytes as `Replayer` (the engine the differential tests
//! hold against OVS) produces. Plus a pipeline swap picked up between
//! bursts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use conntrack::{CtConfig, Directory, HandoffMesh, Shard};
use datapath::io::memory::MemoryPort;
use datapath::io::{Umem, UmemConfig};
use datapath::pipeline::Pipeline;
use datapath::pipeline::parse::{parse_flows, parse_groups};
use datapath::replay::{PortMap, Replayer, Step, StepResult, parse_steps};
use datapath::worker::{
    Cross, OwnedPort, PipelineCell, Route, Worker, WorkerConfig, WorkerControl,
};

fn scenarios() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios");
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("steps.txt").exists())
        .collect();
    v.sort();
    v
}

fn load(dir: &Path) -> (Pipeline, PortMap, Vec<Step>) {
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
    let flows = parse_flows("flows.txt", &read("flows.txt")).unwrap();
    let groups = parse_groups("groups.txt", &read("groups.txt")).unwrap();
    let ports = PortMap::parse(read("ports.txt").trim()).unwrap();
    let steps = parse_steps("steps.txt", &read("steps.txt"), &ports).unwrap();
    (Pipeline::new(flows, groups), ports, steps)
}

/// Workers over memory ports. `assign(name) -> workers` says which workers
/// get a memory port for that OpenFlow port (several: one "queue" each).
struct Rig {
    workers: Vec<Worker>,
    names: Vec<(String, u32)>,
    cell: Arc<PipelineCell>,
}

impl Rig {
    fn new(p: Pipeline, ports: &PortMap, n: usize, assign: impl Fn(&str) -> Vec<usize>) -> Rig {
        let cell = Arc::new(PipelineCell::new(p));
        let cross = (n > 1).then(|| Cross {
            directory: Arc::new(Directory::new(n, 1024)),
            mesh: Arc::new(HandoffMesh::new(n, 64)),
        });
        let mut owned: Vec<Vec<OwnedPort>> = (0..n).map(|_| Vec::new()).collect();
        for (name, ofport) in &ports.ports {
            for (q, w) in assign(name).into_iter().enumerate() {
                owned[w].push(OwnedPort {
                    name: name.clone(),
                    ofport: *ofport,
                    queue: q as u32,
                    port: Box::new(MemoryPort::new(name.clone())),
                    pcap: None,
                });
            }
        }
        let owner = |ofport: u32| {
            owned
                .iter()
                .position(|ps| ps.iter().any(|p| p.ofport == ofport))
                .unwrap()
        };
        let routes: Vec<Vec<(u32, Route)>> = owned
            .iter()
            .map(|mine| {
                ports
                    .ports
                    .iter()
                    .map(|(_, of)| match mine.iter().position(|p| p.ofport == *of) {
                        Some(i) => (*of, Route::Local(i)),
                        None => (*of, Route::Worker(owner(*of))),
                    })
                    .collect()
            })
            .collect();
        let workers = owned
            .into_iter()
            .zip(routes)
            .enumerate()
            .map(|(w, (ps, rs))| -> Worker {
                let mut ct = Shard::new(CtConfig::with_capacity(1024));
                if let Some(c) = &cross {
                    ct.attach_directory(c.directory.clone(), w);
                }
                Worker::new(
                    WorkerConfig {
                        id: w,
                        cache_capacity: 1024,
                        ..WorkerConfig::default()
                    },
                    Umem::new(UmemConfig {
                        frame_count: 512,
                        frame_size: 2048,
                    })
                    .unwrap(),
                    ps,
                    rs,
                    cell.clone(),
                    ct,
                    cross.clone(),
                    Arc::new(WorkerControl::default()),
                )
            })
            .collect();
        Rig {
            workers,
            names: ports.ports.clone(),
            cell,
        }
    }

    fn port(&mut self, w: usize, name: &str) -> Option<&mut MemoryPort> {
        self.workers[w]
            .ports_mut()
            .iter_mut()
            .find(|p| p.name == name)
            .and_then(|p| p.port.as_any_mut().downcast_mut::<MemoryPort>())
    }

    /// Inject on worker `w`'s port `name`, poll every worker until nothing
    /// moves, return what each port sent, by name, in order.
    fn step(&mut self, w: usize, name: &str, bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        self.port(w, name)
            .expect("port on that worker")
            .inject(bytes);
        for _ in 0..4 {
            for wk in self.workers.iter_mut() {
                wk.poll_once();
            }
        }
        let mut out = Vec::new();
        for (n, _) in self.names.clone() {
            for w in 0..self.workers.len() {
                if let Some(p) = self.port(w, &n) {
                    for b in p.take_sent() {
                        out.push((n.clone(), b));
                    }
                }
            }
        }
        out
    }
}

fn by_port(mut v: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    // Order within a port is kept by the sort's stability.
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn check(dir: &Path, n: usize) -> usize {
    let (p, ports, steps) = load(dir);
    if steps
        .iter()
        .any(|s| matches!(s, Step::Warp(_) | Step::FlushCt))
    {
        // The worker runs on the wall clock and owns its conntrack: clock
        // warps and flushes are replay-only directives.
        return 0;
    }
    let (p2, _, _) = load(dir);
    let mut rep = Replayer::new(&p2, &ports).with_cache();
    let mut rig = Rig::new(p, &ports, n, |name| {
        if n == 1 {
            vec![0]
        } else if name == "uplink" {
            vec![1, 0] // queue 0 on worker 1, queue 1 on worker 0
        } else if name == "pod2" {
            vec![1]
        } else {
            vec![0]
        }
    });
    let mut uplink_turn = 0;
    let mut checked = 0;
    for (i, s) in steps.iter().enumerate() {
        let Step::Packet { port, bytes } = s else {
            continue;
        };
        let name = ports.name(ports.resolve(port).unwrap());
        let w = if n == 1 {
            0
        } else if name == "uplink" {
            // Alternate queues, first one on worker 1 (keeps the client's
            // odd source port inside worker 1's SNAT port slice, so the
            // bytes match the single-shard replay).
            uplink_turn += 1;
            if uplink_turn % 2 == 1 { 1 } else { 0 }
        } else if name == "pod2" {
            if n > 1 { 1 } else { 0 }
        } else {
            0
        };
        let want = match rep.step(i, s, None) {
            StepResult::Packet { outputs, .. } => outputs,
            _ => unreachable!(),
        };
        let got = rig.step(w, &name, bytes);
        assert_eq!(
            by_port(got),
            by_port(want),
            "{} step {i} ({n} worker(s))",
            dir.display()
        );
        checked += 1;
    }
    if n > 1 {
        let handed: u64 = rig
            .workers
            .iter()
            .map(|w| w.stats().counters.handoff_process_out)
            .sum();
        eprintln!("{}: {handed} packets handed to their owner", dir.display());
    }
    checked
}

#[test]
fn one_worker_matches_replay_on_every_scenario() {
    let mut total = 0;
    for d in scenarios() {
        total += check(&d, 1);
    }
    assert!(total >= 40, "only {total} packets checked");
}

#[test]
fn two_workers_with_handoffs_match_replay() {
    let mut total = 0;
    for d in scenarios() {
        total += check(&d, 2);
    }
    assert!(total >= 40, "only {total} packets checked");
}

#[test]
fn pipeline_swap_is_picked_up_between_bursts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios/nodeport_etp_cluster");
    let (p, ports, steps) = load(&dir);
    let mut rig = Rig::new(p, &ports, 1, |_| vec![0]);
    let Step::Packet { bytes, .. } = &steps[0] else {
        panic!("first step is a packet")
    };
    let out = rig.step(0, "uplink", bytes);
    assert_eq!(out.len(), 1, "{out:?}");
    // A pipeline that drops everything: published, picked up before the
    // next burst, cache flushed.
    let flushes = rig.workers[0].stats().cache.flushes;
    let drop_all = parse_flows("drop", "table=0,priority=0,actions=drop\n").unwrap();
    assert_eq!(rig.cell.publish(Pipeline::new(drop_all, Vec::new())), 2);
    let out = rig.step(0, "uplink", bytes);
    assert!(out.is_empty(), "{out:?}");
    let s = rig.workers[0].stats();
    assert_eq!(s.generation, 2);
    assert_eq!(s.counters.reloads, 1);
    assert_eq!(s.cache.flushes, flushes + 1);
    assert_eq!(s.exec.rx, 2);
    assert!(
        s.exec.drops.nonzero().count() > 0,
        "the new rules dropped it"
    );
}

/// `learn` in the runtime: a flow learned from a packet on worker 0 (posted
/// to the cell's queue, applied by the learner, published as a new
/// generation) forwards the next packet on worker 1; the learned flow
/// refreshes by cache hits and idles out on the learner's clock; and a
/// publish that drops the `delete_learned` learning flow drops what it
/// learned.
#[test]
fn learned_flows_reach_every_worker_and_expire() {
    use datapath::wire::build::PacketBuilder;
    let flows = "table=0,in_port=1,actions=learn(table=1,idle_timeout=1,priority=100,delete_learned,\
cookie=0x9,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0x1->NXM_NX_REG1[0..15]),resubmit(,1),resubmit(,2)\n\
table=0,in_port=2,actions=resubmit(,1),resubmit(,2)\n\
table=1,priority=0,actions=load:0x3->NXM_NX_REG1[0..15]\n\
table=2,reg1=1,actions=output:1\n\
table=2,reg1=3,actions=output:3\n";
    let p = Pipeline::new(parse_flows("learn", flows).unwrap(), Vec::new());
    let ports = PortMap::parse("a=1,b=2,c=3").unwrap();
    // Port a on worker 0, b on worker 1, c on worker 0.
    let mut rig = Rig::new(p, &ports, 2, |n| vec![if n == "b" { 1 } else { 0 }]);
    let a = [0x02, 0, 0, 0, 0, 0x0a];
    let b = [0x02, 0, 0, 0, 0, 0x0b];
    let frame = |src, dst, sport| {
        PacketBuilder::udp(src, dst, 0x0a00_0001u32, 0x0a00_0002u32, sport, 53).build()
    };
    let names = |o: Vec<(String, Vec<u8>)>| o.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    // B -> A before anything is learned: the default (c).
    assert_eq!(names(rig.step(1, "b", &frame(b, a, 1))), ["c"]);
    // A speaks on worker 0: learn posted, not applied yet.
    assert_eq!(names(rig.step(0, "a", &frame(a, b, 2))), ["c"]);
    let g = rig.cell.generation();
    assert!(rig.cell.run_learner(), "the learn changed the flows");
    assert_eq!(rig.cell.generation(), g + 1);
    assert_eq!(rig.cell.load().learned.flows().len(), 1);
    // Worker 1 now sends B -> A to a.
    assert_eq!(names(rig.step(1, "b", &frame(b, a, 3))), ["a"]);
    assert!(rig.workers[0].stats().counters.learn_events >= 1);
    // Hits keep it (idle 1 s; a cached megaflow reports at most every 500 ms and
    // the learner applies the refresh).
    for i in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(names(rig.step(1, "b", &frame(b, a, 3))), ["a"], "round {i}");
        rig.cell.run_learner();
    }
    assert_eq!(rig.cell.load().learned.flows().len(), 1, "refreshed");
    // Idle: gone.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert!(rig.cell.run_learner());
    assert!(rig.cell.load().learned.is_empty());
    assert_eq!(names(rig.step(1, "b", &frame(b, a, 4))), ["c"]);
    // Learn again, then publish rules without the learning flow.
    rig.step(0, "a", &frame(a, b, 5));
    rig.cell.run_learner();
    assert_eq!(rig.cell.load().learned.flows().len(), 1);
    let plain = flows.lines().skip(1).collect::<Vec<_>>().join("\n");
    rig.cell.publish(Pipeline::new(
        parse_flows("plain", &plain).unwrap(),
        Vec::new(),
    ));
    assert!(rig.cell.load().learned.is_empty(), "delete_learned");
}

/// The poll-gap counters see a worker that did not poll for a while (here
/// the test's own sleep stands for a preemption), bucket it and keep the
/// longest; back-to-back polls land in the shortest bucket.
#[test]
fn poll_gaps_record_stalls() {
    use datapath::worker::{GAP_BOUNDS_NS, GAP_BUCKETS};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios/nodeport_etp_cluster");
    let (p, ports, _) = load(&dir);
    let mut rig = Rig::new(p, &ports, 1, |_| vec![0]);
    let w = &mut rig.workers[0];
    w.poll_once();
    std::thread::sleep(std::time::Duration::from_millis(20));
    w.poll_once();
    let c = w.stats().counters;
    assert!(c.max_gap_ns >= 20_000_000, "{c:?}");
    assert_eq!(c.gaps.iter().sum::<u64>(), 1, "one gap between two polls");
    let b = GAP_BOUNDS_NS.iter().position(|&b| c.max_gap_ns < b);
    assert_eq!(c.gaps[b.unwrap_or(GAP_BUCKETS - 1)], 1, "{c:?}");
    assert!(b.is_none_or(|b| b >= 5), "20 ms is not below 16 ms: {c:?}");
}

/// Packets are processed in the received frame: the walk's last output
/// transmits that frame (no copy), earlier outputs are copies taken before
/// later actions rewrite the bytes, and no frame leaks (many more packets
/// than the worker's 512 chunks).
#[test]
fn last_output_sends_the_received_frame_earlier_outputs_copy() {
    let ports = PortMap::parse("a=1,b=2,c=3").unwrap();
    let flows = parse_flows(
        "flows.txt",
        "table=0,in_port=1,ip,actions=output:2,mod_nw_tos:8,output:3\n\
         table=0,in_port=2,ip,actions=output:3\n",
    )
    .unwrap();
    let mut rig = Rig::new(Pipeline::new(flows, Vec::new()), &ports, 1, |_| vec![0]);
    // Ethernet + IPv4 (TOS 0) + UDP, valid checksums not needed here.
    let mut pkt = vec![0u8; 60];
    pkt[12..14].copy_from_slice(&[0x08, 0x00]);
    pkt[14] = 0x45;
    pkt[16..18].copy_from_slice(&46u16.to_be_bytes());
    pkt[22] = 64;
    pkt[23] = 17;
    pkt[26..30].copy_from_slice(&[10, 0, 0, 1]);
    pkt[30..34].copy_from_slice(&[10, 0, 0, 2]);
    pkt[38..40].copy_from_slice(&26u16.to_be_bytes());
    let n = 2000;
    for i in 0..n {
        let out = rig.step(0, "a", &pkt);
        assert_eq!(out.len(), 2, "packet {i}: {out:?}");
        assert_eq!(out[0].0, "b");
        assert_eq!(out[0].1, pkt, "the copy went out before the rewrite");
        assert_eq!(out[1].0, "c");
        assert_eq!(out[1].1[15], 8, "the frame itself carries the new TOS");
        let out = rig.step(0, "b", &pkt);
        assert_eq!(out, vec![("c".to_string(), pkt.clone())]);
    }
    let c = rig.workers[0].stats().counters;
    assert_eq!(c.tx_in_place, 2 * n, "{c:?}");
    assert_eq!(c.tx_no_frame, 0, "no chunk leaked: {c:?}");
}
