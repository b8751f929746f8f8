//! Megaflows of the veth benchmark's workload, in memory: `scripts/bench.sh`'s
//! UDP pipeline (the e2e NodePort ETP Cluster chain, NodePorts 30232/30233 to
//! four endpoints), N flows from one client address (source ports 1024 +
//! i, two destination ports), each answered by a reflector (so it is
//! established), then every flow once more. Prints the megaflow count and
//! the masks, with how many megaflows each has.
//!
//! ```text
//! megaflows [FLOWS] [--dump]      (default 1000)
//! ```

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
    let (p, numbers) = vethbench::udp_pipeline();
    let mut ct = conntrack::Shard::new(conntrack::CtConfig::with_capacity(1 << 20));
    let mut stats = ExecStats::default();
    let mut cache = MegaflowCache::new(1 << 20, true);
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
    for i in 0..n {
        let mut pkt = vethbench::client_udp(i);
        run(&mut cache, &mut ct, &mut pkt, vethbench::UPLINK);
    }
    report("after N established", &cache);
    let mut by_mask: BTreeMap<String, usize> = BTreeMap::new();
    for (k, m, _) in cache.megaflows() {
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
