//! Forward every frame between two interfaces through AF_XDP, one thread,
//! one shared UMEM, and print the rate each second.
//!
//! ```text
//! xdp_fwd <if_a> <if_b> [--mode auto|native|skb] [--zero-copy auto|on|off]
//!         [--queue Q] [--secs S] [--netns NS] [--yield-us U]
//! ```
//!
//! `--yield-us U`: sleep U µs after every 16·U µs of polling, as
//! flowpath's workers do with `yield_us` (a SCHED_FIFO poller on a core
//! shared with other threads; see `datapath::worker::WorkerConfig`).
//!
//! Frames received on A are posted on B's TX ring without copying (both
//! sockets share the UMEM) and vice versa; frames B cannot take are
//! dropped and counted. Busy-polls; stop with Ctrl-C or `--secs`.

use std::time::{Duration, Instant};

use datapath::io::afxdp::{AfXdpConfig, AfXdpPort, XdpConfig, XdpMode, XdpProgram, ZeroCopy};
use datapath::io::{Batch, Port, Umem, UmemConfig, netlink};

struct Args {
    a: String,
    b: String,
    mode: XdpMode,
    zero_copy: ZeroCopy,
    queue: u32,
    secs: Option<u64>,
    netns: Option<String>,
    yield_us: u64,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut pos = Vec::new();
    let mut args = Args {
        a: String::new(),
        b: String::new(),
        mode: XdpMode::Auto,
        zero_copy: ZeroCopy::Auto,
        queue: 0,
        secs: None,
        netns: None,
        yield_us: 0,
    };
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--mode" => args.mode = val()?.parse()?,
            "--zero-copy" => {
                args.zero_copy = match val()?.as_str() {
                    "auto" => ZeroCopy::Auto,
                    "on" => ZeroCopy::Required,
                    "off" => ZeroCopy::Off,
                    v => return Err(format!("--zero-copy {v}: expected auto, on or off")),
                }
            }
            "--queue" => args.queue = val()?.parse().map_err(|e| format!("--queue: {e}"))?,
            "--secs" => args.secs = Some(val()?.parse().map_err(|e| format!("--secs: {e}"))?),
            "--netns" => args.netns = Some(val()?),
            "--yield-us" => {
                args.yield_us = val()?.parse().map_err(|e| format!("--yield-us: {e}"))?
            }
            _ if a.starts_with('-') => return Err(format!("unknown option {a}")),
            _ => pos.push(a),
        }
    }
    let [a, b]: [String; 2] = pos
        .try_into()
        .map_err(|_| "usage: xdp_fwd <if_a> <if_b> [options]".to_string())?;
    args.a = a;
    args.b = b;
    Ok(args)
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(ns) = &args.netns {
        netlink::enter_netns(ns)?;
    }
    let mut umem = Umem::new(UmemConfig {
        frame_count: 16384,
        frame_size: 2048,
    })?;
    let xcfg = XdpConfig {
        mode: args.mode,
        ..XdpConfig::default()
    };
    let pa = XdpProgram::attach(&args.a, &xcfg)?;
    let pb = XdpProgram::attach(&args.b, &xcfg)?;
    let cfg = AfXdpConfig {
        queue: args.queue,
        zero_copy: args.zero_copy,
        ring_size: 2048,
        fill_size: 2048,
        ..AfXdpConfig::default()
    };
    let mut a = AfXdpPort::open(&mut umem, &pa, &cfg)?;
    let mut b = AfXdpPort::open(&mut umem, &pb, &cfg)?;
    eprintln!(
        "xdp_fwd: {} <-> {} queue {} ({:?} mode, {})",
        args.a,
        args.b,
        args.queue,
        pa.mode(),
        if a.is_zero_copy() {
            "zero-copy"
        } else {
            "copy"
        }
    );
    let mut batch = Batch::new();
    let mut iter = 0u32;
    let (mut fwd, mut dropped) = (0u64, 0u64);
    let start = Instant::now();
    let mut tick = start;
    let yield_for = Duration::from_micros(args.yield_us);
    let mut awake_since = start;
    let mut last = 0u64;
    let (mut best, mut sum, mut secs) = (0f64, 0f64, 0u32);
    loop {
        for dir in 0..2 {
            let (rx, tx) = if dir == 0 {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            if rx.rx_burst(&mut umem, &mut batch) > 0 {
                fwd += tx.tx_burst(&mut umem, &mut batch) as u64;
                dropped += batch.len() as u64;
                umem.free_batch(&mut batch);
            }
        }
        // Reading the clock every iteration costs more than an empty poll.
        iter = iter.wrapping_add(1);
        if yield_for.is_zero() {
            if !iter.is_multiple_of(1024) {
                continue;
            }
        } else {
            if !iter.is_multiple_of(64) {
                continue;
            }
            let now = Instant::now();
            if now.duration_since(awake_since) >= yield_for * datapath::worker::YIELD_RATIO {
                std::thread::sleep(yield_for);
                awake_since = Instant::now();
            }
            if !iter.is_multiple_of(1024) {
                continue;
            }
        }
        let now = Instant::now();
        if now.duration_since(tick) >= Duration::from_secs(1) {
            let mpps = (fwd - last) as f64 / now.duration_since(tick).as_secs_f64() / 1e6;
            if fwd > last {
                best = best.max(mpps);
                sum += mpps;
                secs += 1;
            }
            println!("{mpps:.3} Mpps forwarded (total {fwd}, tx-full drops {dropped})");
            last = fwd;
            tick = now;
            if args
                .secs
                .is_some_and(|s| now.duration_since(start).as_secs() >= s)
            {
                break;
            }
        }
    }
    let (sa, sb) = (a.stats(), b.stats());
    println!("{}: {sa:?}", a.name());
    println!("{}: {sb:?}", b.name());
    println!(
        "xdp_fwd: average {:.3} Mpps over {secs} busy seconds, peak {best:.3} Mpps",
        if secs > 0 { sum / secs as f64 } else { 0.0 }
    );
    Ok(())
}

fn main() {
    match parse() {
        Ok(args) => {
            if let Err(e) = run(args) {
                eprintln!("xdp_fwd: {e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("xdp_fwd: {e}");
            std::process::exit(2);
        }
    }
}
