//! Conntrack benchmarks: established lookup with 1 M connections in the
//! table next to a bare `hashbrown` lookup of the same keys (the baseline,
//! measured in the same run), and new connections with SNAT port
//! allocation.
//!
//! Each iteration processes a burst of 1024 packets; criterion's
//! throughput is packets/s, ns/packet = time / 1024.

use conntrack::*;
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use std::hint;
use std::time::{Duration, Instant};

/// Connections in the table: 1 M, or 16 k under `cargo test` (`bench::quick`).
fn n_conn() -> u32 {
    if bench::quick() { 1 << 14 } else { 1 << 20 }
}
const BURST: usize = 1024;
const GW: u32 = 0x0af4_0001;

/// Same 16-byte shape as conntrack's internal key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct K {
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    zone: u16,
    proto: u8,
    ity: u8,
}

fn client(i: u32) -> (u32, u16) {
    (0x0a01_0000 + i / 60_000, 1024 + (i % 60_000) as u16)
}
fn server(i: u32) -> u32 {
    0x5db8_d800 + (i % 64)
}

fn udp(src: (u32, u16), dst: (u32, u16)) -> CtPacket {
    CtPacket {
        tuple: Tuple {
            src: src.0,
            dst: dst.0,
            sport: src.1,
            dport: dst.1,
            proto: 17,
        },
        l4: L4::Udp,
        valid: true,
        fragment: false,
    }
}

/// A pseudo-random permutation of burst indices over `n` connections.
fn order(n: u32, len: usize) -> Vec<u32> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(n)) as u32
        })
        .collect()
}

fn established(c: &mut Criterion) {
    let ct1 = CtCall {
        zone: 1,
        ..CtCall::default()
    };
    let commit = CtCall {
        commit: true,
        ..ct1
    };
    let mut sh = Shard::new(CtConfig::with_capacity(n_conn() + 1024));
    let now = 1_000;
    let mut base = hashbrown::HashMap::with_capacity(2 * n_conn() as usize);
    for i in 0..n_conn() {
        let c = client(i);
        let s = (server(i), 53);
        let mut md = PktCtMeta::default();
        sh.execute(&udp(c, s), &mut md, &commit, now);
        let mut md = PktCtMeta::default();
        sh.execute(&udp(s, c), &mut md, &ct1, now);
        assert_eq!(md.state, cs::EST | cs::RPL | cs::TRK);
        let k = K {
            src: c.0,
            dst: s.0,
            sport: c.1,
            dport: s.1,
            zone: 1,
            proto: 17,
            ity: 0,
        };
        base.insert(k, i);
        base.insert(
            K {
                src: k.dst,
                dst: k.src,
                sport: k.dport,
                dport: k.sport,
                ..k
            },
            i,
        );
    }
    let idx = order(n_conn(), 1 << 16);
    let pkts: Vec<CtPacket> = idx
        .iter()
        .map(|&i| udp(client(i), (server(i), 53)))
        .collect();
    let keys: Vec<K> = pkts
        .iter()
        .map(|p| K {
            src: p.tuple.src,
            dst: p.tuple.dst,
            sport: p.tuple.sport,
            dport: p.tuple.dport,
            zone: 1,
            proto: 17,
            ity: 0,
        })
        .collect();

    let mut g = c.benchmark_group("ct_established_1M");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut off = 0;
    g.bench_function("hashbrown_baseline", |b| {
        b.iter(|| {
            let mut sum = 0u32;
            for k in &keys[off..off + BURST] {
                sum = sum.wrapping_add(*base.get(k).unwrap());
            }
            off = (off + BURST) % keys.len();
            black_box(sum)
        })
    });
    let mut off = 0;
    g.bench_function("shard_execute", |b| {
        b.iter(|| {
            let mut st = 0u8;
            for p in &pkts[off..off + BURST] {
                let mut md = PktCtMeta::default();
                sh.execute(p, &mut md, &ct1, now);
                st |= md.state;
            }
            off = (off + BURST) % pkts.len();
            black_box(st)
        })
    });
    let mut off = 0;
    let mut mds = vec![PktCtMeta::default(); BURST];
    let mut out = vec![CtResult::default(); BURST];
    g.bench_function("shard_execute_burst", |b| {
        b.iter(|| {
            mds.fill(PktCtMeta::default());
            sh.execute_burst(&pkts[off..off + BURST], &mut mds, &ct1, now, &mut out);
            off = (off + BURST) % pkts.len();
            black_box(mds[0].state)
        })
    });
    g.finish();
    assert_eq!(sh.counters().invalid_total(), 0);
}

fn new_nat(c: &mut Criterion) {
    let cap = n_conn();
    let snat = CtCall {
        zone: 1,
        commit: true,
        nat: Some(NatSpec::Src(NatRange {
            addr_min: GW,
            addr_max: GW,
            ..NatRange::default()
        })),
        ..CtCall::default()
    };
    let mut sh = Shard::new(CtConfig::with_capacity(cap));
    let mut g = c.benchmark_group("ct_new");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut next = 0u32;
    g.bench_function("snat_commit", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                if sh.len() + BURST > cap as usize {
                    sh.flush(None, None);
                    next = 0;
                }
                let pkts: Vec<CtPacket> = (next..next + BURST as u32)
                    .map(|i| udp(client(i), (server(i / 60_000), 53)))
                    .collect();
                next += BURST as u32;
                let start = Instant::now();
                for p in &pkts {
                    let mut md = PktCtMeta::default();
                    let r = sh.execute(p, &mut md, &snat, 1_000);
                    hint::black_box(r);
                }
                t += start.elapsed();
            }
            t
        })
    });
    g.finish();
    assert_eq!(sh.counters().nat_exhausted, 0);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = established, new_nat
}
criterion_main!(benches);
