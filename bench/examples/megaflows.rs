//! Megaflows of the veth benchmark's workload, in memory: `scripts/bench.sh`'s
//! UDP pipeline (the e2e NodePort ETP Cluster chain, NodePorts 30232/30233 to
//! four endpoints), N flows from one client address (source ports 1024 +
//! i, two destination ports), each answered by a reflector (so it is
//! established), then every flow once more. Prints the megaflow count and
//! the masks, with how many megaflows each has.
//!
//! ```text
//! megaflows [FLOWS] [--dump] [--rounds N] [--capacity N]
//! ```
//! (default 1,000 flows, 3 established rounds, the default 65,536
//! megaflows per worker). Prints the counters after the warm-up and after
//! the established rounds, the hit rate of those rounds alone, and the
//! masks.

use bench::vethbench;
use datapath::cache::MegaflowCache;
use datapath::pipeline::exec::{Engine, ExecStats, Scratch};
use datapath::pipeline::format;
use datapath::pipeline::ir::Match;
use std::collections::BTreeMap;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let dump = args.iter().any(|a| a == "--dump");
    let opt = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = opt("--rounds", 3);
    let capacity = opt("--capacity", 65_536);
    let (p, numbers) = vethbench::udp_pipeline();
    let mut ct = conntrack::Shard::new(conntrack::CtConfig::with_capacity(1 << 20));
    let mut stats = ExecStats::default();
    let mut cache = MegaflowCache::new(capacity, true).with_chain_capacity(2 * capacity);
    let mut scratch = Scratch::default();
    let mut run =
        |cache: &mut MegaflowCache, ct: &mut conntrack::Shard, pkt: &mut Vec<u8>, port: u32| {
            let mut outs: Vec<(u32, Vec<u8>)> = Vec::new();
            let mut sink = |p: u32, b: &[u8]| outs.push((p, b.to_vec()));
            let mut e = Engine {
                pipeline: &p,
                ports: &numbers[..],
                ct,
                now_ms: 1000,
                stats: &mut stats,
                cache: Some(cache),
                scratch: &mut scratch,
            };
            e.process(pkt, port, &mut sink, None);
            outs
        };
    let report = |what: &str, c: &MegaflowCache| {
        println!(
            "{what}: {} megaflows, {} masks, stats {:?}",
            c.len(),
            c.n_masks(),
            c.stats
        );
    };
    for i in 0..n {
        let mut pkt = vethbench::client_udp(i);
        let outs = run(&mut cache, &mut ct, &mut pkt, vethbench::UPLINK);
        for (port, out) in outs {
            if port == vethbench::POD1 {
                let mut r = vethbench::reflect(&out);
                run(&mut cache, &mut ct, &mut r, port);
            }
        }
    }
    report("after warm-up (N new + N replies)", &cache);
    let before = cache.stats;
    for _ in 0..rounds {
        for i in 0..n {
            let mut pkt = vethbench::client_udp(i);
            run(&mut cache, &mut ct, &mut pkt, vethbench::UPLINK);
        }
    }
    report("after the established rounds", &cache);
    let s = cache.stats;
    let hits = (s.emc_hits - before.emc_hits)
        + (s.megaflow_hits - before.megaflow_hits)
        + (s.chain_passes - before.chain_passes);
    let misses = s.misses - before.misses;
    println!(
        "established rounds: {} packets, hits {hits}, misses {misses}, hit rate {:.1}%, chains {} (whole-walk replays {})",
        rounds as u64 * n as u64,
        100.0 * hits as f64 / (hits + misses).max(1) as f64,
        cache.chains.len(),
        s.chain_hits - before.chain_hits
    );
    let mut by_mask: BTreeMap<String, usize> = BTreeMap::new();
    for mf in cache.megaflows() {
        let (k, m) = (mf.key, mf.mask);
        let s = format::format_match(&Match { value: k, mask: m });
        if dump {
            println!("  {s}");
        }
        let masks = format::format_match(&Match { value: m, mask: m });
        *by_mask.entry(masks).or_default() += 1;
    }
    for (m, c) in by_mask {
        println!("{c:>7}  {m}");
    }
}
