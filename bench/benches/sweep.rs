//! Sweeps of the compiled NodePort ETP Cluster chain in memory (no I/O),
//! through the engine with its megaflow cache, as a worker runs it:
//!
//! - `established/services/N`: an established client data packet to the
//!   last NodePort Service, with N = 1, 100, 10,000, 100,000 Services
//!   (every fifth a NodePort, 4 endpoints each on the peer node), 1
//!   connection.
//! - `established/connections/N`: 100 Services (20 NodePorts), N = 1,
//!   1,000, 100,000, 1,000,000 established connections spread over the
//!   NodePorts (at most 50,000 per NodePort: Antrea SNATs each to the one
//!   gateway IP towards the Service's virtual IP, ~64.5k source ports),
//!   each of which sent a data packet before (untimed); packets visit the
//!   connections in a pseudo-random order.
//! - `new_connection/syn_3_zones_snat`: a SYN of a fresh connection through the same
//!   chain: three conntrack commits (zones 52100, 52200, 65500) and an SNAT
//!   port allocation -> new connections per second per core.
//!
//! After criterion's figures, a summary measured in this same run (best of
//! 40 interleaved rounds of 2,000 packets, every point once per round, one
//! packet per `Engine::process` call and in bursts of `BURST` through
//! `Engine::process_burst`; the
//! new-connection figure best of 40 batches of 1,024 SYNs) prints
//! ns/packet, Mpps per core and the ratio to the 1-Service/1-connection
//! point, and the memory per tracked connection: bytes the conntrack table
//! really allocates (counted per thread by the `allocation-counter` crate)
//! divided by its capacity, and per NodePort connection (three conntrack
//! connections, one per zone).
//!
//! With `FLOWPATH_SWEEP=summary` in the environment only the in-run
//! summary of the established points runs (no criterion groups, no
//! new-connection figure): the quick way to compare two builds.
//!
//! `cargo bench -p bench --bench sweep` (about 1 minute after the build;
//! on a shared machine run the built binary pinned and SCHED_FIFO:
//! `chrt -f 10 taskset -c 1 target/release/deps/sweep-* --bench`); under
//! `cargo test` (CI) the sizes shrink to 1/100 Services and 1/1,000
//! connections.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{build, node, node_port, synthetic};
use conntrack::{CtConfig, Shard};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datapath::cache::MegaflowCache;
use datapath::pipeline::Pipeline;
use datapath::pipeline::exec::{BURST, Engine, ExecStats, Scratch};
use datapath::wire::build::{ACK, PSH, PacketBuilder, SYN};
use datapath::worker::WorkerConfig;

const EXT_MAC: [u8; 6] = [0x00, 0x50, 0x56, 0xa7, 0xca, 0x77];
const UPLINK_MAC: [u8; 6] = [0x00, 0x50, 0x56, 0xa7, 0x35, 0x0b];
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 176, 25, 244);
const UPLINK: u32 = 3;
const PORTS: [u32; 4] = [2, 3, 4, 5];
/// Connections per NodePort at most (SNAT source ports to spare).
const PER_NODEPORT: usize = 50_000;
/// Services of the connection sweep (20 NodePorts: up to 1 M connections).
const CONN_SWEEP_SERVICES: usize = 100;

fn services_sizes() -> Vec<usize> {
    if bench::quick() {
        vec![1, 100]
    } else {
        vec![1, 100, 10_000, 100_000]
    }
}

fn conn_sizes() -> Vec<usize> {
    if bench::quick() {
        vec![1, 1_000]
    } else {
        vec![1, 1_000, 100_000, 1_000_000]
    }
}

/// Connection `i`'s client address and port (distinct for every `i`).
fn client(i: usize) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(0x0a01_0000 + (i / 60_000) as u32),
        1024 + (i % 60_000) as u16,
    )
}

fn tcp(i: usize, dport: u16, flags: u16) -> Vec<u8> {
    let (src, sport) = client(i);
    let b = PacketBuilder::tcp(EXT_MAC, UPLINK_MAC, src, NODE_IP, sport, dport).flags(flags);
    if flags == SYN {
        b.seq(1).build()
    } else {
        b.seq(2).ack(1).payload(b"GET / HTTP/1.0\r\n\r\n").build()
    }
}

/// A worker's state for one pipeline: conntrack shard, megaflow cache.
struct Core<'a> {
    p: &'a Pipeline,
    ct: Shard,
    cache: MegaflowCache,
    stats: ExecStats,
    scratch: Scratch,
    buf: Vec<u8>,
}

impl<'a> Core<'a> {
    fn new(p: &'a Pipeline, conns: usize) -> Core<'a> {
        let cap = (3 * conns + 4096) as u32;
        Core {
            p,
            ct: Shard::new(CtConfig::with_capacity(cap)),
            // A worker's defaults (65,536 megaflows, 131,072 chains).
            cache: {
                let w = WorkerConfig::default();
                MegaflowCache::new(w.cache_capacity, w.emc).with_chain_capacity(w.chain_capacity)
            },
            stats: ExecStats::default(),
            scratch: Scratch::default(),
            buf: Vec::with_capacity(128),
        }
    }

    /// Runs `pkt` in from the uplink; returns the port of the last output
    /// (0: none).
    fn run(&mut self, pkt: &[u8]) -> u32 {
        self.buf.clear();
        self.buf.extend_from_slice(pkt);
        let mut last = 0u32;
        let mut sink = |port: u32, _b: &[u8]| last = port;
        let mut e = Engine {
            pipeline: self.p,
            ports: &PORTS[..],
            ct: &mut self.ct,
            now_ms: 1_000_000,
            stats: &mut self.stats,
            cache: Some(&mut self.cache),
            scratch: &mut self.scratch,
        };
        e.process(&mut self.buf, UPLINK, &mut sink, None);
        last
    }
}

/// `n` established connections to the NodePorts `nps` (round robin) and
/// their data packets, stored flat (`stride` bytes each).
struct Established<'a> {
    core: Core<'a>,
    pkts: Vec<u8>,
    stride: usize,
    order: Vec<u32>,
    next: usize,
    /// Buffers of a burst.
    bufs: Vec<Vec<u8>>,
}

impl<'a> Established<'a> {
    fn new(p: &'a Pipeline, nps: &[u16], n: usize) -> Established<'a> {
        assert!(
            n <= nps.len() * PER_NODEPORT,
            "{n} connections need more NodePorts"
        );
        let mut core = Core::new(p, n);
        let stride = tcp(0, nps[0], PSH | ACK).len();
        let mut pkts = Vec::with_capacity(n * stride);
        for i in 0..n {
            let np = nps[i % nps.len()];
            assert_eq!(core.run(&tcp(i, np, SYN)), UPLINK, "SYN {i} forwarded");
            pkts.extend_from_slice(&tcp(i, np, PSH | ACK));
        }
        assert_eq!(core.ct.len(), 3 * n, "three conntrack connections each");
        // Every connection has sent data before (as in a steady state):
        // the measured packets replay what their connection recorded
        // instead of mostly being first visits.
        for i in 0..n {
            let p = &pkts[i * stride..(i + 1) * stride];
            assert_eq!(core.run(p), UPLINK, "data packet {i} forwarded");
        }
        assert_eq!(core.ct.counters().nat_exhausted, 0);
        // A pseudo-random visiting order over every connection.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let order = (0..n.clamp(1, 1 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % n as u64) as u32
            })
            .collect();
        let mut e = Established {
            core,
            pkts,
            stride,
            order,
            next: 0,
            bufs: (0..BURST).map(|_| Vec::with_capacity(stride)).collect(),
        };
        assert_eq!(e.one(), UPLINK, "established data packet forwarded");
        assert_eq!(e.burst(), BURST, "a burst of established packets forwarded");
        e
    }

    /// The next [`BURST`] packets through [`Engine::process_burst`];
    /// returns how many were forwarded to the uplink.
    fn burst(&mut self) -> usize {
        let s = self.stride;
        for b in self.bufs.iter_mut() {
            let i = self.order[self.next] as usize;
            self.next = (self.next + 1) % self.order.len();
            b.clear();
            b.extend_from_slice(&self.pkts[i * s..(i + 1) * s]);
        }
        let mut burst: [(&mut [u8], u32); BURST] = {
            let mut it = self.bufs.iter_mut();
            std::array::from_fn(|_| (it.next().expect("BURST buffers").as_mut_slice(), UPLINK))
        };
        let c = &mut self.core;
        let mut fwd = 0;
        let mut sink = |port: u32, _b: &[u8]| fwd += usize::from(port == UPLINK);
        let mut e = Engine {
            pipeline: c.p,
            ports: &PORTS[..],
            ct: &mut c.ct,
            now_ms: 1_000_000,
            stats: &mut c.stats,
            cache: Some(&mut c.cache),
            scratch: &mut c.scratch,
        };
        e.process_burst(&mut burst, &mut sink);
        fwd
    }

    fn one(&mut self) -> u32 {
        let i = self.order[self.next] as usize;
        self.next = (self.next + 1) % self.order.len();
        let s = self.stride;
        // Disjoint fields: the packet store and the core.
        let pkt = &self.pkts[i * s..(i + 1) * s];
        self.core.run(pkt)
    }
}

/// Fresh SYNs through the chain; the table is emptied (untimed) whenever
/// the next batch could overflow it or a NodePort's SNAT ports.
struct NewConns<'a> {
    core: Core<'a>,
    nps: Vec<u16>,
    next: usize,
    limit: usize,
    batch: Vec<Vec<u8>>,
}

impl<'a> NewConns<'a> {
    fn new(p: &'a Pipeline, nps: Vec<u16>) -> NewConns<'a> {
        let limit = (nps.len() * PER_NODEPORT / 2).min(1 << 18);
        NewConns {
            core: Core::new(p, limit),
            nps,
            next: 0,
            limit,
            batch: Vec::new(),
        }
    }

    /// Prepares the next `k` SYNs (untimed).
    fn prepare(&mut self, k: usize) {
        if self.next + k > self.limit {
            self.core.ct.flush(None, None);
            self.next = 0;
        }
        self.batch = (self.next..self.next + k)
            .map(|i| tcp(i, self.nps[i % self.nps.len()], SYN))
            .collect();
        self.next += k;
    }

    /// Runs the prepared SYNs; returns how many were forwarded.
    fn run(&mut self) -> usize {
        let mut ok = 0;
        for i in 0..self.batch.len() {
            ok += usize::from(self.core.run(&self.batch[i]) == UPLINK);
        }
        ok
    }
}

fn nodeports(n: usize) -> Vec<u16> {
    (0..n).filter_map(node_port).collect()
}

/// Best ns/packet per point over 40 interleaved rounds of short batches
/// (every point once per round), so load from other processes on this
/// shared machine hits every point alike and the best batch of each ran
/// unpreempted.
fn interleaved(points: &mut [(String, Established<'_>)]) -> (Vec<f64>, Vec<f64>) {
    let (batch, rounds) = if bench::quick() {
        (200, 2)
    } else {
        (2_000, 40)
    };
    let mut best = vec![f64::MAX; points.len()];
    let mut best_burst = vec![f64::MAX; points.len()];
    for _ in 0..rounds {
        for ((b, bb), (_, e)) in best
            .iter_mut()
            .zip(best_burst.iter_mut())
            .zip(points.iter_mut())
        {
            let t = Instant::now();
            for _ in 0..batch {
                std::hint::black_box(e.one());
            }
            *b = b.min(t.elapsed().as_nanos() as f64 / f64::from(batch));
            let t = Instant::now();
            for _ in 0..batch / BURST as u32 {
                std::hint::black_box(e.burst());
            }
            let n = (batch / BURST as u32) * BURST as u32;
            *bb = bb.min(t.elapsed().as_nanos() as f64 / f64::from(n));
        }
    }
    (best, best_burst)
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

fn sweeps(c: &mut Criterion) {
    let node = node();
    let svc_sizes = services_sizes();
    let pipelines: Vec<Pipeline> = svc_sizes
        .iter()
        .chain([CONN_SWEEP_SERVICES].iter())
        .map(|&n| build(&node, &synthetic(n, 4)))
        .collect();
    // Summary name and point; criterion ids in `ids`.
    let mut points: Vec<(String, Established<'_>)> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for (i, &n) in svc_sizes.iter().enumerate() {
        let last_np = *nodeports(n).last().expect("a NodePort");
        ids.push(format!("services/{n}"));
        points.push((
            format!("{n} Service{}, 1 connection", if n == 1 { "" } else { "s" }),
            Established::new(&pipelines[i], &[last_np], 1),
        ));
    }
    let p = pipelines.last().expect("the connection sweep's pipeline");
    let nps = nodeports(CONN_SWEEP_SERVICES);
    for n in conn_sizes() {
        let t = Instant::now();
        ids.push(format!("connections/{n}"));
        points.push((
            format!(
                "{CONN_SWEEP_SERVICES} Services, {n} connection{}",
                if n == 1 { "" } else { "s" }
            ),
            Established::new(p, &nps, n),
        ));
        eprintln!(
            "{n} connections established in {:?} ({:.0} ns each, SYN + packet store)",
            t.elapsed(),
            t.elapsed().as_nanos() as f64 / n as f64
        );
    }

    let summary_only = std::env::var("FLOWPATH_SWEEP").is_ok_and(|v| v == "summary");
    if summary_only {
        summarize(&mut points, None);
        return;
    }
    let mut g = c.benchmark_group("established");
    g.throughput(Throughput::Elements(1));
    for (id, (_, e)) in ids.iter().zip(points.iter_mut()) {
        g.bench_function(id.as_str(), |b| b.iter(|| e.one()));
    }
    g.finish();

    let mut g = c.benchmark_group("new_connection");
    let k = 1024;
    g.throughput(Throughput::Elements(k as u64));
    let mut nc = NewConns::new(p, nps.clone());
    g.bench_function("syn_3_zones_snat", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                nc.prepare(k);
                let start = Instant::now();
                let ok = nc.run();
                t += start.elapsed();
                assert_eq!(ok, k, "every SYN forwarded");
            }
            t
        })
    });
    g.finish();
    let new_ns = (0..40)
        .map(|_| {
            nc.prepare(k);
            let t = Instant::now();
            nc.run();
            t.elapsed().as_nanos() as f64 / k as f64
        })
        .fold(f64::MAX, f64::min);
    assert_eq!(nc.core.ct.counters().nat_exhausted, 0);
    drop(nc);
    summarize(&mut points, Some(new_ns));
}

/// The in-run summary: the established points interleaved, the new
/// connection figure (when measured) and the conntrack table's memory.
fn summarize(points: &mut [(String, Established<'_>)], new_ns: Option<f64>) {
    let (best, best_burst) = interleaved(points);
    let mut chain_bytes = Vec::new();
    for (name, e) in points.iter() {
        let s = e.core.cache.stats;
        chain_bytes.push(format!(
            "{name}: {} chains ({} bytes), {} megaflows, chain stats hits {} stale {} diverged {} evictions {} (megaflow evictions {})",
            e.core.cache.chains.len(),
            e.core.cache.chains.bytes(),
            e.core.cache.len(),
            s.chain_hits,
            s.chain_stale,
            s.chain_diverged,
            s.chain_evictions,
            s.evictions
        ));
    }

    // Memory: what a table of `cap` connections really allocates.
    let cap = if bench::quick() { 1 << 14 } else { 1 << 20 };
    let mut sh = None;
    let table = allocation_counter::measure(|| sh = Some(Shard::new(CtConfig::with_capacity(cap))))
        .bytes_current;
    let sh = sh.expect("built");
    let per_conn = table as f64 / f64::from(sh.capacity());
    let own = sh.bytes_per_conn();
    drop(sh);

    let base = best[0];
    eprintln!(
        "\nsummary (best of 40 interleaved rounds, this run; ratio to 1 Service / 1 connection):"
    );
    eprintln!(
        "| point | ns/packet | Mpps/core | ratio | bursts of {BURST}: ns/packet | Mpps/core | ratio |"
    );
    eprintln!("|---|---:|---:|---:|---:|---:|---:|");
    let base_burst = best_burst[0];
    for (((name, _), ns), bns) in points.iter().zip(&best).zip(&best_burst) {
        eprintln!(
            "| established, {name} | {ns:.0} | {:.2} | {:.2}x | {bns:.0} | {:.2} | {:.2}x |",
            1e3 / ns,
            ns / base,
            1e3 / bns,
            bns / base_burst
        );
    }
    if let Some(new_ns) = new_ns {
        eprintln!(
            "| new connection (SYN: 3 conntrack commits + SNAT port), {CONN_SWEEP_SERVICES} Services | {new_ns:.0} | {:.3} M conns/s/core | {:.2}x |",
            1e3 / new_ns,
            new_ns / base
        );
    }
    for l in &chain_bytes {
        eprintln!("{l}");
    }
    eprintln!(
        "memory: conntrack table of {cap} connections allocates {table} bytes = {per_conn:.1} bytes per tracked connection \
         (the shard's own figure: {own}); a NodePort connection is 3 of them: {:.0} bytes",
        3.0 * per_conn
    );
}

criterion_group! {
    name = benches;
    config = config();
    targets = sweeps
}
criterion_main!(benches);
