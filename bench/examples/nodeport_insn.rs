//! A fixed packet set through the seeds' NodePort ETP Cluster chain, for a
//! deterministic instruction count per packet (`scripts/bench-insn.sh` runs
//! it under `valgrind --tool=callgrind` with two packet counts and divides
//! the difference, so setup cancels out).
//!
//! ```text
//! nodeport_insn [PACKETS] [megaflow] [syn]     (default 10000)
//! ```
//! With `syn`, each packet is instead the SYN of a new connection (source
//! port 1024 + i): the miss path (three conntrack commits, per-connection
//! megaflow upcalls). The SYN is built once and its source port (and TCP
//! checksum, incrementally) rewritten per packet, so the count is the
//! datapath's; building each SYN with `PacketBuilder`, as this example did
//! before 2026-11-21, added 1,766 instructions per packet.
//! Replays the scenario's handshake, then sends its established client data
//! packet PACKETS times through the cached engine (megaflow + chain cache;
//! with `megaflow`, chain cache off: every pass probes the megaflow cache).

use bench::nodeport::NodePort;
use datapath::pipeline::exec::{Engine, ExecStats, Scratch};
use datapath::replay::Replayer;
use datapath::wire::build::{PacketBuilder, SYN};
use datapath::wire::checksum::update16;
use std::net::Ipv4Addr;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().expect("PACKETS is a number"));
    let NodePort {
        pipeline: p,
        ports,
        prefix,
        data,
        in_port,
    } = NodePort::load();
    let numbers = ports.numbers();
    let args: Vec<String> = std::env::args().collect();
    let chains = !args.iter().any(|a| a == "megaflow");
    let syn = args.iter().any(|a| a == "syn");
    let mut r = Replayer::new(&p, &ports).with_cache();
    if !chains {
        r.cache = r.cache.map(|c| c.with_chain_capacity(0));
    }
    r.run(&prefix);
    let mut stats = ExecStats::default();
    let mut cache = r.cache.take();
    let mut scratch = Scratch::default();
    let template = PacketBuilder::tcp(
        [0x00, 0x50, 0x56, 0xa7, 0xca, 0x77],
        [0x00, 0x50, 0x56, 0xa7, 0x35, 0x0b],
        Ipv4Addr::new(10, 176, 26, 36),
        Ipv4Addr::new(10, 176, 25, 244),
        1024,
        30232,
    )
    .flags(SYN)
    .seq(1)
    .build();
    // Ethernet + a 20-byte IPv4 header: the TCP source port and checksum.
    const SPORT: usize = 14 + 20;
    const CSUM: usize = SPORT + 16;
    let mut buf = if syn { template.clone() } else { data.clone() };
    let mut outs = 0u64;
    for i in 0..n {
        if syn {
            buf.copy_from_slice(&template);
            let sport = 1024 + (i % 60_000) as u16;
            let csum = u16::from_be_bytes([template[CSUM], template[CSUM + 1]]);
            buf[SPORT..SPORT + 2].copy_from_slice(&sport.to_be_bytes());
            buf[CSUM..CSUM + 2].copy_from_slice(&update16(csum, 1024, sport).to_be_bytes());
        } else {
            buf.copy_from_slice(&data);
        }
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
