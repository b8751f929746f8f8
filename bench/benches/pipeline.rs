//! Pipeline benchmarks on the seeds' NodePort ETP Cluster chain (three
//! conntrack zones, SNAT to the gateway IP, endpoint DNAT): an established
//! client data packet, (a) through the plain interpreter (translate every
//! pass), (b) through the per-core megaflow cache pass by pass (chain cache
//! off) and (c) with the chain cache replaying the whole walk. (a) and (b)
//! are the baselines, measured in the same run.

use bench::nodeport::NodePort;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datapath::pipeline::exec::{Engine, ExecStats, Scratch};
use datapath::replay::Replayer;

fn nodeport_established(c: &mut Criterion) {
    let NodePort {
        pipeline: p,
        ports,
        prefix,
        data,
        in_port,
    } = NodePort::load();
    let numbers = ports.numbers();
    let mut g = c.benchmark_group("nodeport_chain_established");
    g.throughput(Throughput::Elements(1));
    for (name, cached, chains) in [
        ("interpreter", false, false),
        ("megaflow_cache", true, false),
        ("chain_cache", true, true),
    ] {
        let mut r = Replayer::new(&p, &ports);
        if cached {
            r = r.with_cache();
        }
        if !chains {
            r.cache = r.cache.map(|c| c.with_chain_capacity(0));
        }
        r.run(&prefix);
        let mut stats = ExecStats::default();
        let mut cache = r.cache.take();
        let mut buf = data.clone();
        let mut scratch = Scratch::default();
        let mut outs = 0u64;
        let mut run_once = |buf: &mut Vec<u8>, outs: &mut u64| {
            buf.copy_from_slice(&data);
            let mut sink = |_p: u32, _b: &[u8]| *outs += 1;
            let mut e = Engine {
                pipeline: &p,
                ports: &numbers[..],
                ct: &mut r.ct,
                now_ms: r.now_ms,
                stats: &mut stats,
                cache: cache.as_mut(),
                scratch: &mut scratch,
            };
            e.process(buf, in_port, &mut sink, None);
        };
        run_once(&mut buf, &mut outs);
        assert_eq!(outs, 1, "the established packet is forwarded once");
        g.bench_function(name, |b| b.iter(|| run_once(&mut buf, &mut outs)));
    }
    g.finish();
}

criterion_group!(benches, nodeport_established);
criterion_main!(benches);
