//! A minimal packet builder for test inputs: Ethernet II carrying ARP or
//! IPv4 with TCP, UDP, ICMP echo or IGMP, every checksum computed.
//!
//! Kept deliberately small: it only has to produce well-formed frames (and,
//! on request, frames with a broken checksum) for the OVS fact tests and the
//! differential cases. Frames are never padded to 60 bytes.

use std::net::Ipv4Addr;

/// A MAC address as six bytes.
pub type Mac = [u8; 6];

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn mac(s: &str) -> Mac {
    let mut out = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    assert_eq!(parts.len(), 6, "bad MAC {s}");
    for (o, p) in out.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).unwrap_or_else(|_| panic!("bad MAC {s}"));
    }
    out
}

/// Parse a dotted IPv4 address.
pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap_or_else(|_| panic!("bad IPv4 {s}"))
}

/// TCP flag bits.
pub mod tcp_flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// PSH
    pub const PSH: u8 = 0x08;
    /// ACK
    pub const ACK: u8 = 0x10;
}

/// The transport part of an IPv4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L4 {
    /// TCP segment (no options, window as given).
    Tcp {
        /// source port
        sport: u16,
        /// destination port
        dport: u16,
        /// sequence number
        seq: u32,
        /// acknowledgement number
        ack: u32,
        /// flag bits, see [`tcp_flags`]
        flags: u8,
        /// receive window
        win: u16,
        /// payload bytes
        payload: Vec<u8>,
    },
    /// UDP datagram.
    Udp {
        /// source port
        sport: u16,
        /// destination port
        dport: u16,
        /// payload bytes
        payload: Vec<u8>,
    },
    /// ICMP echo request (type 8) or reply (type 0), or any other type/code.
    Icmp {
        /// ICMP type
        ty: u8,
        /// ICMP code
        code: u8,
        /// identifier (echo)
        id: u16,
        /// sequence (echo)
        seq: u16,
        /// payload bytes
        payload: Vec<u8>,
    },
    /// IGMPv2 message (protocol 2), 8 bytes.
    Igmp {
        /// IGMP type (0x16 = v2 membership report)
        ty: u8,
        /// group address
        group: Ipv4Addr,
    },
}

/// An IPv4 packet description.
#[derive(Debug, Clone)]
pub struct Ipv4 {
    /// source
    pub src: Ipv4Addr,
    /// destination
    pub dst: Ipv4Addr,
    /// TTL
    pub ttl: u8,
    /// identification
    pub id: u16,
    /// TOS byte (DSCP+ECN)
    pub tos: u8,
    /// payload
    pub l4: L4,
    /// deliberately corrupt the IPv4 header checksum
    pub bad_ip_csum: bool,
    /// deliberately corrupt the L4 checksum
    pub bad_l4_csum: bool,
}

/// Internet checksum (RFC 1071) over `data` with an initial partial sum.
pub fn csum(init: u32, data: &[u8]) -> u16 {
    let mut sum = init;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    u32::from(u16::from_be_bytes([s[0], s[1]]))
        + u32::from(u16::from_be_bytes([s[2], s[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]))
        + u32::from(proto)
        + len as u32
}

impl Ipv4 {
    /// A packet with TTL 64 and id 1.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Self {
        Ipv4 {
            src,
            dst,
            ttl: 64,
            id: 1,
            tos: 0,
            l4,
            bad_ip_csum: false,
            bad_l4_csum: false,
        }
    }

    /// The IPv4 header and payload bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let (proto, mut l4) = match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                win,
                payload,
            } => {
                let mut b = Vec::with_capacity(20 + payload.len());
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&ack.to_be_bytes());
                b.push(5 << 4);
                b.push(*flags);
                b.extend_from_slice(&win.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]);
                b.extend_from_slice(payload);
                let c = csum(pseudo(self.src, self.dst, 6, b.len()), &b);
                b[16..18].copy_from_slice(&c.to_be_bytes());
                (6u8, b)
            }
            L4::Udp {
                sport,
                dport,
                payload,
            } => {
                let len = 8 + payload.len();
                let mut b = Vec::with_capacity(len);
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&(len as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(payload);
                let mut c = csum(pseudo(self.src, self.dst, 17, len), &b);
                // RFC 768: a computed checksum of zero is transmitted as all ones.
                if c == 0 {
                    c = 0xffff;
                }
                b[6..8].copy_from_slice(&c.to_be_bytes());
                (17u8, b)
            }
            L4::Icmp {
                ty,
                code,
                id,
                seq,
                payload,
            } => {
                let mut b = vec![*ty, *code, 0, 0];
                b.extend_from_slice(&id.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(payload);
                let c = csum(0, &b);
                b[2..4].copy_from_slice(&c.to_be_bytes());
                (1u8, b)
            }
            L4::Igmp { ty, group } => {
                let mut b = vec![*ty, 0, 0, 0];
                b.extend_from_slice(&group.octets());
                let c = csum(0, &b);
                b[2..4].copy_from_slice(&c.to_be_bytes());
                (2u8, b)
            }
        };
        if self.bad_l4_csum {
            let off = match proto {
                6 => 16,
                17 => 6,
                _ => 2,
            };
            l4[off] ^= 0x5a;
        }
        let total = 20 + l4.len();
        let mut h = vec![0x45, self.tos];
        h.extend_from_slice(&(total as u16).to_be_bytes());
        h.extend_from_slice(&self.id.to_be_bytes());
        h.extend_from_slice(&[0x40, 0x00]); // DF
        h.push(self.ttl);
        h.push(proto);
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        let mut c = csum(0, &h);
        if self.bad_ip_csum {
            c ^= 0x1234;
        }
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(&l4);
        h
    }
}

/// Ethernet II frame carrying IPv4.
pub fn eth_ipv4(src: Mac, dst: Mac, ip: &Ipv4) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 40);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip.bytes());
    f
}

/// Ethernet II frame carrying an ARP request (op 1) or reply (op 2).
#[allow(clippy::too_many_arguments)]
pub fn arp(
    eth_src: Mac,
    eth_dst: Mac,
    op: u16,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// Convenience: a TCP frame.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    eth_src: Mac,
    eth_dst: Mac,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    eth_ipv4(
        eth_src,
        eth_dst,
        &Ipv4::new(
            src.0,
            dst.0,
            L4::Tcp {
                sport: src.1,
                dport: dst.1,
                seq,
                ack,
                flags,
                win: 64240,
                payload: payload.to_vec(),
            },
        ),
    )
}

/// Convenience: a UDP frame.
pub fn udp(
    eth_src: Mac,
    eth_dst: Mac,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    eth_ipv4(
        eth_src,
        eth_dst,
        &Ipv4::new(
            src.0,
            dst.0,
            L4::Udp {
                sport: src.1,
                dport: dst.1,
                payload: payload.to_vec(),
            },
        ),
    )
}

/// Convenience: an ICMP echo request (type 8) or reply (type 0).
pub fn icmp_echo(
    eth_src: Mac,
    eth_dst: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ty: u8,
    id: u16,
    seq: u16,
) -> Vec<u8> {
    eth_ipv4(
        eth_src,
        eth_dst,
        &Ipv4::new(
            src,
            dst,
            L4::Icmp {
                ty,
                code: 0,
                id,
                seq,
                payload: b"flowpath".to_vec(),
            },
        ),
    )
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Parse hex, ignoring spaces, colons and newlines.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b':')
        .collect();
    if !clean.len().is_multiple_of(2) {
        return None;
    }
    clean
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}

/// Whether the IPv4 header checksum and the TCP/UDP/ICMP checksum of an
/// Ethernet frame are valid. Non-IPv4 frames are reported valid.
pub fn checksums_ok(frame: &[u8]) -> bool {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return true;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    if frame.len() < 14 + total || total < ihl {
        return false;
    }
    let iph = &frame[14..14 + ihl];
    if csum(0, iph) != 0 {
        return false;
    }
    let src = Ipv4Addr::new(iph[12], iph[13], iph[14], iph[15]);
    let dst = Ipv4Addr::new(iph[16], iph[17], iph[18], iph[19]);
    let l4 = &frame[14 + ihl..14 + total];
    match iph[9] {
        6 => csum(pseudo(src, dst, 6, l4.len()), l4) == 0,
        17 => {
            l4.len() >= 8 && (l4[6..8] == [0, 0] || csum(pseudo(src, dst, 17, l4.len()), l4) == 0)
        }
        1 | 2 => csum(0, l4) == 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_checksums_verify() {
        let a = mac("00:00:00:00:00:01");
        let b = mac("00:00:00:00:00:02");
        let t = tcp(
            a,
            b,
            (ip("10.0.0.1"), 1234),
            (ip("10.0.0.2"), 80),
            1,
            0,
            tcp_flags::SYN,
            b"",
        );
        assert!(checksums_ok(&t));
        let u = udp(a, b, (ip("10.0.0.1"), 53), (ip("10.0.0.2"), 53), b"abc");
        assert!(checksums_ok(&u));
        let i = icmp_echo(a, b, ip("10.0.0.1"), ip("10.0.0.2"), 8, 7, 1);
        assert!(checksums_ok(&i));
        let mut p = Ipv4::new(
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            L4::Udp {
                sport: 1,
                dport: 2,
                payload: vec![],
            },
        );
        p.bad_l4_csum = true;
        assert!(!checksums_ok(&eth_ipv4(a, b, &p)));
        // Golden: IPv4 header checksum of a known header (RFC 1071 example-style).
        let h = Ipv4::new(
            ip("192.168.0.1"),
            ip("192.168.0.2"),
            L4::Igmp {
                ty: 0x16,
                group: ip("224.0.0.1"),
            },
        )
        .bytes();
        assert_eq!(csum(0, &h[..20]), 0);
    }
}
