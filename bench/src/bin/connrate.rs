//! `flowpath-connrate`: connection setup rate with a real TCP stack (RFC
//! 9693's "TCP connection establishment rate", the kernel's TCP on both
//! ends, the device under test in between).
//!
//! ```text
//! flowpath-connrate client --dst IP:PORT [--dports N] [--src IP] [--src-count N]
//!                          [--sport N] [--secs S] [--concurrency C] [--timeout-ms T]
//! flowpath-connrate server [--listen IP:PORT] [--secs S]
//! ```
//!
//! The client keeps `--concurrency` nonblocking connects in flight, each
//! from its own explicit source address and port (cycled port-first over
//! `--src-count` consecutive addresses from `--src`, ports from `--sport`
//! up, so no 4-tuple repeats within 64k x N connections and no ephemeral
//! port range limits the run). A connect counts as established when epoll
//! reports it writable without a socket error (the SYN-ACK came back through
//! the datapath and the ACK went out); its latency is connect() to that
//! moment. The socket is then closed with SO_LINGER 0 (an RST: no
//! TIME_WAIT on either host, the datapath still sees the teardown).
//! `--dports N` spreads the connects over N consecutive destination ports
//! (Services), round robin. Connects
//! older than `--timeout-ms` count as timeouts; errors count by name. The
//! server accepts and closes. Both print one JSON summary.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use bench::connrate::ConnStats;
use bench::flows::FlowSet;
use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: flowpath-connrate client --dst IP:PORT [options] | server [--listen IP:PORT] [--secs S] (see --help)";

struct Opts {
    server: bool,
    dst: SocketAddrV4,
    dports: u16,
    listen: SocketAddrV4,
    src: Ipv4Addr,
    src_count: u32,
    sport: u16,
    secs: f64,
    concurrency: usize,
    timeout: Duration,
}

fn parse() -> Res<Opts> {
    let mut args = std::env::args().skip(1);
    let server = match args.next().as_deref() {
        Some("client") => false,
        Some("server") => true,
        Some("--help" | "-h") => {
            let doc: Vec<_> = include_str!("connrate.rs").lines().take(23).collect();
            println!("{}", doc.join("\n"));
            std::process::exit(0);
        }
        _ => return Err(USAGE.into()),
    };
    let mut o = Opts {
        server,
        dst: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080),
        dports: 1,
        listen: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080),
        src: Ipv4Addr::UNSPECIFIED,
        src_count: 1,
        sport: 1024,
        secs: 3.0,
        concurrency: 128,
        timeout: Duration::from_millis(3000),
    };
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--dst" => o.dst = val()?.parse()?,
            "--dports" => o.dports = val()?.parse::<u16>()?.max(1),
            "--listen" => o.listen = val()?.parse()?,
            "--src" => o.src = val()?.parse()?,
            "--src-count" => o.src_count = val()?.parse::<u32>()?.max(1),
            "--sport" => o.sport = val()?.parse()?,
            "--secs" => o.secs = val()?.parse()?,
            "--concurrency" => o.concurrency = val()?.parse::<usize>()?.clamp(1, 65536),
            "--timeout-ms" => o.timeout = Duration::from_millis(val()?.parse()?),
            s => return Err(format!("unknown argument {s}; {USAGE}").into()),
        }
    }
    Ok(o)
}

fn main() -> Res<()> {
    let o = parse()?;
    let summary = if o.server { server(&o)? } else { client(&o)? };
    println!("{summary}");
    Ok(())
}

/// Accepts and closes until `--secs` have passed.
fn server(o: &Opts) -> Res<serde_json::Value> {
    let l = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_reuseaddr(&l, true)?;
    rustix::net::bind(&l, &o.listen)?;
    rustix::net::listen(&l, 4096)?;
    // accept() gives up every 100 ms so the deadline is checked.
    sockopt::set_socket_timeout(&l, sockopt::Timeout::Recv, Some(Duration::from_millis(100)))?;
    let start = Instant::now();
    let mut accepted = 0u64;
    while start.elapsed().as_secs_f64() < o.secs {
        match rustix::net::accept(&l) {
            Ok(fd) => {
                accepted += 1;
                drop(fd);
            }
            Err(Errno::AGAIN | Errno::INTR | Errno::CONNABORTED) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(serde_json::json!({
        "mode": "server",
        "secs": start.elapsed().as_secs_f64(),
        "accepted": accepted,
    }))
}

fn errno_name(e: Errno) -> String {
    match e {
        Errno::CONNREFUSED => "ECONNREFUSED".into(),
        Errno::TIMEDOUT => "ETIMEDOUT".into(),
        Errno::HOSTUNREACH => "EHOSTUNREACH".into(),
        Errno::NETUNREACH => "ENETUNREACH".into(),
        Errno::CONNRESET => "ECONNRESET".into(),
        Errno::ADDRNOTAVAIL => "EADDRNOTAVAIL".into(),
        e => format!("errno {}", e.raw_os_error()),
    }
}

/// One connect in flight.
struct Pending {
    fd: OwnedFd,
    since: Instant,
}

fn client(o: &Opts) -> Res<serde_json::Value> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let flows = FlowSet::with_flows(o.src, o.sport, u32::MAX);
    let flows = FlowSet {
        ips: o.src_count,
        ..flows
    };
    let mut slots: Vec<Option<Pending>> = (0..o.concurrency).map(|_| None).collect();
    let mut free: Vec<usize> = (0..o.concurrency).rev().collect();
    let mut events = Vec::with_capacity(o.concurrency);
    let mut stats = ConnStats::default();
    let mut next = 0u64;
    let start = Instant::now();
    let mut last_sweep = start;
    let wait = Timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    while start.elapsed().as_secs_f64() < o.secs {
        // Fill every free slot with a new connect.
        while let Some(slot) = free.pop() {
            let (ip, port) = flows.flow(next);
            let dst = SocketAddrV4::new(
                *o.dst.ip(),
                o.dst.port() + (next % u64::from(o.dports)) as u16,
            );
            next += 1;
            match open(ip, port, &dst) {
                Ok(Some(fd)) => {
                    epoll::add(
                        &ep,
                        &fd,
                        epoll::EventData::new_u64(slot as u64),
                        epoll::EventFlags::OUT | epoll::EventFlags::ERR | epoll::EventFlags::HUP,
                    )?;
                    stats.attempted += 1;
                    slots[slot] = Some(Pending {
                        fd,
                        since: Instant::now(),
                    });
                }
                Ok(None) => {
                    stats.bind_failures += 1;
                    free.push(slot);
                    // Guards against a loop when every source is taken.
                    if stats.bind_failures > 1_000_000 {
                        return Err("bind keeps failing: every source port in use".into());
                    }
                }
                Err(e) => {
                    stats.attempted += 1;
                    stats.failed(&errno_name(e));
                    free.push(slot);
                    break;
                }
            }
        }
        events.clear();
        epoll::wait(&ep, spare_capacity(&mut events), Some(&wait))?;
        let now = Instant::now();
        for ev in &events {
            let slot = ev.data.u64() as usize;
            let Some(p) = slots[slot].take() else {
                continue;
            };
            match sockopt::socket_error(&p.fd)? {
                Ok(()) => stats.established(now.duration_since(p.since).as_micros() as u64),
                Err(e) => stats.failed(&errno_name(e)),
            }
            // Dropping the fd closes it: with SO_LINGER 0, an RST.
            drop(p);
            free.push(slot);
        }
        if now.duration_since(last_sweep) >= Duration::from_millis(10) {
            last_sweep = now;
            for (i, s) in slots.iter_mut().enumerate() {
                if s.as_ref()
                    .is_some_and(|p| now.duration_since(p.since) >= o.timeout)
                {
                    *s = None;
                    stats.timeouts += 1;
                    free.push(i);
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    stats.abandoned = slots.iter().filter(|s| s.is_some()).count() as u64;
    Ok(stats.to_json(secs))
}

/// A nonblocking socket bound to `ip:port`, linger 0, connect issued.
/// `Ok(None)`: that source is still in use.
fn open(ip: Ipv4Addr, port: u16, dst: &SocketAddrV4) -> Result<Option<OwnedFd>, Errno> {
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    sockopt::set_socket_linger(&fd, Some(Duration::ZERO))?;
    match rustix::net::bind(&fd, &SocketAddrV4::new(ip, port)) {
        Ok(()) => {}
        Err(Errno::ADDRINUSE) => return Ok(None),
        Err(e) => return Err(e),
    }
    match rustix::net::connect(&fd, dst) {
        Ok(()) | Err(Errno::INPROGRESS) => Ok(Some(fd)),
        Err(e) => Err(e),
    }
}
