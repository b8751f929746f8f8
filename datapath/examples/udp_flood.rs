//! A simple UDP flood for benchmarking `xdp_fwd`: sends fixed-size
//! datagrams to `dst` as fast as one socket per thread allows.
//!
//! ```text
//! udp_flood <dst-ip:port> [--secs S] [--size BYTES] [--threads N] [--netns NS]
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datapath::io::netlink;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dst: Option<SocketAddr> = None;
    let (mut secs, mut size, mut threads, mut netns) = (5u64, 18usize, 1usize, None);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--secs" => secs = val().parse().expect("--secs"),
            "--size" => size = val().parse().expect("--size"),
            "--threads" => threads = val().parse().expect("--threads"),
            "--netns" => netns = Some(val()),
            _ => dst = Some(a.parse().expect("destination ip:port")),
        }
    }
    let dst = dst.expect("usage: udp_flood <dst-ip:port> [options]");
    if let Some(ns) = &netns {
        netlink::enter_netns(ns).expect("enter netns");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
                s.connect(dst).expect("connect");
                let buf = vec![0x5a; size];
                let mut n = 0u64;
                // Relaxed: a stop flag, no data published with it.
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        if s.send(&buf).is_ok() {
                            n += 1;
                        }
                    }
                }
                // Relaxed: summed after join.
                sent.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    // Relaxed: see the loop.
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let n = sent.load(Ordering::Relaxed);
    println!(
        "udp_flood: sent {n} datagrams in {:.1}s = {:.3} Mpps",
        t.elapsed().as_secs_f64(),
        n as f64 / t.elapsed().as_secs_f64() / 1e6
    );
}
