//! `flowpath-pktgen`: a pktgen-style traffic generator and sink over AF_XDP.
//!
//! ```text
//! flowpath-pktgen gen  <ifname> --dst-mac MAC --dst IP [--dport N] [--dports N] [--src IP]
//!                      [--sport N] [--flows N] [--proto udp|syn|ack|tcp] [--size BYTES] [--burst N]
//!                      [--rate PPS] [--secs S | --count N] [--queue Q] [--mode auto|native|skb]
//!                      [--netns NS] [--src-mac MAC]
//! flowpath-pktgen sink <ifname> [--secs S] [--idle S] [--sent N] [--queue Q] [--mode M] [--netns NS]
//!                      [--reflect]
//! ```
//!
//! The generator cycles through `--flows` (source address, source port,
//! destination port) tuples (`--dports` consecutive destination ports from
//! `--dport`), stamps each packet with a sequence number and its send time, and
//! prints a JSON summary on exit. The sink counts arrivals, reads the stamps
//! back for latency and loss (against `--sent`, or the highest sequence
//! number seen), and stops after `--secs` or `--idle` seconds without
//! traffic once some arrived. With `--reflect` the sink also sends every
//! IPv4 UDP/TCP frame back with addresses and ports swapped (checksums stay
//! valid: a swap keeps the one's-complement sums), so a datapath sees a reply
//! for every flow and its conntrack counts the flow as established. On a
//! terminal both show a live progress line.

use std::io::{IsTerminal, Write};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bench::flows::FlowSpread;
use bench::rate::RateLimiter;
use bench::summary::{SinkStats, gen_json, progress_line};
use bench::template::{Proto, Spec, Stamp, Template};
use datapath::io::afxdp::{AfXdpConfig, AfXdpPort, XdpConfig, XdpMode, XdpProgram};
use datapath::io::{Batch, Port, Umem, UmemConfig, netlink};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Opts {
    sink: bool,
    ifname: String,
    dst_mac: Option<[u8; 6]>,
    src_mac: [u8; 6],
    dst: Ipv4Addr,
    dport: u16,
    dports: u16,
    src: Ipv4Addr,
    sport: u16,
    flows: u32,
    proto: Proto,
    size: usize,
    burst: usize,
    rate: u64,
    secs: f64,
    count: Option<u64>,
    idle: f64,
    sent: Option<u64>,
    reflect: bool,
    queue: u32,
    mode: XdpMode,
    netns: Option<String>,
}

const USAGE: &str = "usage: flowpath-pktgen gen|sink <ifname> [options] (see --help)";

fn mac(v: &str) -> Res<[u8; 6]> {
    let b: Vec<u8> = v
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()?;
    Ok(<[u8; 6]>::try_from(b).map_err(|_| format!("bad MAC {v}"))?)
}

fn parse() -> Res<Opts> {
    let mut args = std::env::args().skip(1);
    let sink = match args.next().as_deref() {
        Some("gen") => false,
        Some("sink") => true,
        Some("--help" | "-h") => {
            println!(
                "{}",
                include_str!("pktgen.rs")
                    .lines()
                    .take(10)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::process::exit(0);
        }
        _ => return Err(USAGE.into()),
    };
    let mut o = Opts {
        sink,
        ifname: String::new(),
        dst_mac: None,
        src_mac: [0x02, 0, 0, 0, 0, 0x99],
        dst: Ipv4Addr::new(10, 77, 0, 2),
        dport: 9,
        dports: 1,
        src: Ipv4Addr::new(10, 77, 0, 1),
        sport: 1024,
        flows: 1,
        proto: Proto::Udp,
        size: 60,
        burst: 64,
        rate: 0,
        secs: 5.0,
        count: None,
        idle: 1.0,
        sent: None,
        reflect: false,
        queue: 0,
        mode: XdpMode::Auto,
        netns: None,
    };
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--dst-mac" => o.dst_mac = Some(mac(&val()?)?),
            "--src-mac" => o.src_mac = mac(&val()?)?,
            "--dst" => o.dst = val()?.parse()?,
            "--dport" => o.dport = val()?.parse()?,
            "--dports" => o.dports = val()?.parse()?,
            "--src" => o.src = val()?.parse()?,
            "--sport" => o.sport = val()?.parse()?,
            "--flows" => o.flows = val()?.parse()?,
            "--proto" => o.proto = val()?.parse()?,
            "--size" => o.size = val()?.parse()?,
            "--burst" => o.burst = val()?.parse::<usize>()?.clamp(1, 64),
            "--rate" => o.rate = val()?.parse()?,
            "--secs" => o.secs = val()?.parse()?,
            "--count" => o.count = Some(val()?.parse()?),
            "--idle" => o.idle = val()?.parse()?,
            "--sent" => o.sent = Some(val()?.parse()?),
            "--reflect" => o.reflect = true,
            "--queue" => o.queue = val()?.parse()?,
            "--mode" => o.mode = val()?.parse()?,
            "--netns" => o.netns = Some(val()?),
            s if s.starts_with('-') => return Err(format!("unknown option {s}; {USAGE}").into()),
            _ => o.ifname = a,
        }
    }
    if o.ifname.is_empty() {
        return Err(USAGE.into());
    }
    Ok(o)
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A once-a-second `\r` progress line on a terminal; silent otherwise.
struct Progress {
    tty: bool,
    what: &'static str,
    last: Instant,
    last_n: u64,
}

impl Progress {
    fn tick(&mut self, start: Instant, n: u64) {
        if !self.tty || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        let pps = (n - self.last_n) as f64 / self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        self.last_n = n;
        let line = progress_line(self.what, start.elapsed().as_secs_f64(), n, pps);
        let mut out = std::io::stdout();
        let _ = write!(out, "\r{line}");
        let _ = out.flush();
    }
    fn done(&self) {
        if self.tty {
            println!();
        }
    }
}

fn main() -> Res<()> {
    let o = parse()?;
    if let Some(ns) = &o.netns {
        netlink::enter_netns(ns)?;
    }
    let mut umem = Umem::new(UmemConfig {
        frame_count: 4096,
        frame_size: 2048,
    })?;
    let prog = XdpProgram::attach(
        &o.ifname,
        &XdpConfig {
            mode: o.mode,
            ..XdpConfig::default()
        },
    )?;
    let mut port = AfXdpPort::open(
        &mut umem,
        &prog,
        &AfXdpConfig {
            queue: o.queue,
            ring_size: 2048,
            fill_size: if o.sink { 2048 } else { 64 },
            ..AfXdpConfig::default()
        },
    )?;
    let mut progress = Progress {
        tty: std::io::stdout().is_terminal(),
        what: if o.sink { "sink" } else { "gen" },
        last: Instant::now(),
        last_n: 0,
    };
    let summary = if o.sink {
        sink(&o, &mut umem, &mut port, &mut progress)
    } else {
        generate(&o, &mut umem, &mut port, &mut progress)?
    };
    progress.done();
    println!("{summary}");
    Ok(())
}

fn generate(
    o: &Opts,
    umem: &mut Umem,
    port: &mut AfXdpPort,
    p: &mut Progress,
) -> Res<serde_json::Value> {
    let tpl = Template::new(&Spec {
        dst_mac: o.dst_mac.ok_or("gen needs --dst-mac")?,
        src_mac: o.src_mac,
        dst_ip: o.dst,
        dst_port: o.dport,
        proto: o.proto,
        size: o.size,
    });
    if tpl.len() > umem.max_frame_len() {
        return Err(format!(
            "--size {} exceeds the frame room {}",
            tpl.len(),
            umem.max_frame_len()
        )
        .into());
    }
    let flows = FlowSpread::new(o.src, o.sport, o.flows, o.dport, o.dports);
    let start = Instant::now();
    let mut limiter = RateLimiter::new(o.rate, o.burst as u64, 0);
    let limit = o.count.unwrap_or(u64::MAX);
    let (mut seq, mut sent) = (0u64, 0u64);
    let mut batch = Batch::new();
    let mut rx = Batch::new();
    while sent < limit && (o.count.is_some() || start.elapsed().as_secs_f64() < o.secs) {
        let want = (o.burst.min(batch.space()) as u64).min(limit - seq.min(limit));
        let n = limiter.take(start.elapsed().as_nanos() as u64, want);
        let now = wall_ns();
        for _ in 0..n {
            let Some(mut f) = umem.alloc() else { break };
            umem.set_len(&mut f, tpl.len())?;
            let (ip, sport, dport) = flows.flow(seq);
            tpl.write_flow(
                umem.data_mut(&f),
                ip,
                sport,
                dport,
                Stamp { seq, tx_ns: now },
            );
            seq += 1;
            let _ = batch.push(f);
        }
        sent += port.tx_burst(umem, &mut batch) as u64;
        // Anything received (nothing, normally) goes straight back.
        port.rx_burst(umem, &mut rx);
        umem.free_batch(&mut rx);
        p.tick(start, sent);
    }
    // Frames the ring never took were stamped but not sent.
    umem.free_batch(&mut batch);
    let secs = start.elapsed().as_secs_f64();
    Ok(gen_json(sent, sent * tpl.len() as u64, flows.flows, secs))
}

fn sink(o: &Opts, umem: &mut Umem, port: &mut AfXdpPort, p: &mut Progress) -> serde_json::Value {
    let mut stats = SinkStats::default();
    let start = Instant::now();
    let (mut first, mut last) = (None::<Instant>, Instant::now());
    let mut batch = Batch::new();
    loop {
        let now = Instant::now();
        if now.duration_since(start).as_secs_f64() >= o.secs
            || (first.is_some() && now.duration_since(last).as_secs_f64() >= o.idle)
        {
            break;
        }
        if port.rx_burst(umem, &mut batch) == 0 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        let t = wall_ns();
        last = now;
        first.get_or_insert(now);
        for f in batch.frames() {
            let d = umem.data(f);
            stats.record(d.len(), Stamp::parse(d), t);
        }
        if o.reflect {
            for f in batch.frames() {
                reflect(umem.data_mut(f));
            }
            port.tx_burst(umem, &mut batch);
        }
        umem.free_batch(&mut batch);
        p.tick(start, stats.packets);
    }
    // The rate is over the span traffic arrived in, not the idle tail.
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    stats.to_json(secs, o.sent)
}

/// Swaps a frame's MACs, IPv4 addresses and L4 ports in place (UDP and TCP;
/// anything else only gets its MACs swapped). Checksums stay valid.
fn reflect(f: &mut [u8]) {
    if f.len() < 14 {
        return;
    }
    for i in 0..6 {
        f.swap(i, 6 + i);
    }
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return;
    }
    for i in 0..4 {
        f.swap(26 + i, 30 + i);
    }
    let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
    if matches!(f[23], 6 | 17) && f.len() >= l4 + 4 {
        f.swap(l4, l4 + 2);
        f.swap(l4 + 1, l4 + 3);
    }
}
