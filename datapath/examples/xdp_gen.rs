//! A fast UDP generator for benchmarking `xdp_fwd`: transmits one 60-byte
//! UDP/IPv4 frame template through an AF_XDP socket as fast as the TX ring
//! drains (far beyond what a UDP socket loop reaches on a small machine).
//!
//! ```text
//! xdp_gen <ifname> --dst-mac aa:bb:cc:dd:ee:ff [--secs S] [--netns NS]
//!         [--mode auto|native|skb] [--src 10.77.0.1] [--dst 10.77.0.2]
//! ```

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use datapath::io::afxdp::{AfXdpConfig, AfXdpPort, XdpConfig, XdpMode, XdpProgram};
use datapath::io::{Batch, Port, Umem, UmemConfig, netlink};

fn template(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    // UDP 9 -> 9, length 26, checksum 0 (none; RFC 768), 18 bytes payload.
    f.extend_from_slice(&[0, 9, 0, 9, 0, 26, 0, 0]);
    f.resize(60, 0x5a);
    f
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut ifname, mut dst_mac, mut secs, mut netns) = (None, None, 5u64, None);
    let (mut mode, mut src, mut dst) = (
        XdpMode::Auto,
        Ipv4Addr::new(10, 77, 0, 1),
        Ipv4Addr::new(10, 77, 0, 2),
    );
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--dst-mac" => {
                let v = val()?;
                let b: Vec<u8> = v
                    .split(':')
                    .map(|x| u8::from_str_radix(x, 16))
                    .collect::<Result<_, _>>()?;
                dst_mac = Some(<[u8; 6]>::try_from(b).map_err(|_| format!("bad MAC {v}"))?);
            }
            "--secs" => secs = val()?.parse()?,
            "--netns" => netns = Some(val()?),
            "--mode" => mode = val()?.parse()?,
            "--src" => src = val()?.parse()?,
            "--dst" => dst = val()?.parse()?,
            _ => ifname = Some(a),
        }
    }
    let ifname = ifname.ok_or("usage: xdp_gen <ifname> --dst-mac MAC [options]")?;
    let dst_mac = dst_mac.ok_or("--dst-mac is required")?;
    if let Some(ns) = &netns {
        netlink::enter_netns(ns)?;
    }
    let tpl = template(dst_mac, src, dst);
    let mut umem = Umem::new(UmemConfig {
        frame_count: 4096,
        frame_size: 2048,
    })?;
    let prog = XdpProgram::attach(
        &ifname,
        &XdpConfig {
            mode,
            ..XdpConfig::default()
        },
    )?;
    let mut port = AfXdpPort::open(
        &mut umem,
        &prog,
        &AfXdpConfig {
            ring_size: 2048,
            fill_size: 64,
            ..AfXdpConfig::default()
        },
    )?;
    let mut batch = Batch::new();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        while batch.space() > 0 {
            let Some(mut f) = umem.alloc() else { break };
            umem.set_len(&mut f, tpl.len())?;
            umem.data_mut(&f).copy_from_slice(&tpl);
            let _ = batch.push(f);
        }
        sent += port.tx_burst(&mut umem, &mut batch) as u64;
        // Anything received (nothing, normally) goes straight back.
        let mut rx = Batch::new();
        port.rx_burst(&mut umem, &mut rx);
        umem.free_batch(&mut rx);
    }
    umem.free_batch(&mut batch);
    let s = start.elapsed().as_secs_f64();
    println!(
        "xdp_gen: sent {sent} frames in {s:.1}s = {:.3} Mpps",
        sent as f64 / s / 1e6
    );
    Ok(())
}
