//! A fixed packet set through the seeds' NodePort ETP Cluster chain, for a
//! deterministic instruction count per packet (`scripts/bench-insn.sh` runs
//! it under `valgrind --tool=callgrind` with two packet counts and divides
//! the difference, so setup cancels out).
//!
//! ```text
//! nodeport_insn [PACKETS]     (default 10000)
//! ```
//! Replays the scenario's handshake, then sends its established client data
//! packet PACKETS times through the megaflow-cached engine.

use std::path::PathBuf;

use datapath::pipeline::exec::{Engine, ExecStats, Scratch};
use datapath::pipeline::{Pipeline, parse};
use datapath::replay::{self, PortMap, Replayer, Step};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().expect("PACKETS is a number"));
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios/nodeport_etp_cluster");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("scenario file");
    let flows = parse::parse_flows("flows.txt", &read("flows.txt")).expect("flows parse");
    let groups = parse::parse_groups("groups.txt", &read("groups.txt")).expect("groups parse");
    let ports = PortMap::parse(read("ports.txt").trim()).expect("ports");
    let steps = replay::parse_steps("steps.txt", &read("steps.txt"), &ports).expect("steps");
    let p = Pipeline::new(flows, groups);
    let prefix: Vec<Step> = steps
        .iter()
        .take_while(|s| !matches!(s, Step::Ct(_)))
        .cloned()
        .collect();
    let data = steps
        .iter()
        .skip(prefix.len())
        .find_map(|s| match s {
            Step::Packet { port, bytes } if port == "uplink" => Some(bytes.clone()),
            _ => None,
        })
        .expect("a client data packet");
    let in_port = ports.resolve("uplink").expect("uplink");
    let numbers = ports.numbers();
    let mut r = Replayer::new(&p, &ports).with_cache();
    r.run(&prefix);
    let mut stats = ExecStats::default();
    let mut cache = r.cache.take();
    let mut scratch = Scratch::default();
    let mut buf = data.clone();
    let mut outs = 0u64;
    for _ in 0..n {
        buf.copy_from_slice(&data);
        let mut sink = |_p: u32, _b: &[u8]| outs += 1;
        let mut e = Engine {
            pipeline: &p,
            ports: &numbers[..],
            ct: &mut r.ct,
            now_ms: r.now_ms,
            stats: &mut stats,
            cache: cache.as_mut(),
            scratch: &mut scratch,
        };
        e.process(&mut buf, in_port, &mut sink, None);
    }
    assert_eq!(outs, n, "every established packet is forwarded once");
    println!("{n} packets forwarded");
}
