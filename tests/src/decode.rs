//! Decode frames into readable one-liners and field maps, for failure
//! messages and for scenario expectations (`#> PORT field=value ...`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

fn mac_str(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn ip4(b: &[u8], o: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3])
}

/// TCP flags as letters in tcpdump style (`S`, `SA`, `FA`, `.` for bare ACK).
pub fn tcp_flags_str(f: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (0x01, 'F'),
        (0x02, 'S'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x10, 'A'),
        (0x20, 'U'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    if s.is_empty() { "none".into() } else { s }
}

/// Field map of a frame: `len eth_src eth_dst eth_type`, then for ARP
/// `arp_op arp_sha arp_spa arp_tha arp_tpa`, for IPv4 `ip_src ip_dst ttl
/// proto tos ip_id csum(ok|BAD)`, for TCP/UDP `sport dport` (+ TCP `flags seq
/// ack win payload_len`), for ICMP `icmp_type icmp_code icmp_id`.
pub fn fields(f: &[u8]) -> BTreeMap<&'static str, String> {
    let mut m = BTreeMap::new();
    m.insert("len", f.len().to_string());
    if f.len() < 14 {
        m.insert("truncated", "eth".into());
        return m;
    }
    m.insert("eth_dst", mac_str(&f[0..6]));
    m.insert("eth_src", mac_str(&f[6..12]));
    let ty = be16(f, 12);
    m.insert("eth_type", format!("0x{ty:04x}"));
    match ty {
        0x0806 if f.len() >= 42 => {
            m.insert("arp_op", be16(f, 20).to_string());
            m.insert("arp_sha", mac_str(&f[22..28]));
            m.insert("arp_spa", ip4(f, 28).to_string());
            m.insert("arp_tha", mac_str(&f[32..38]));
            m.insert("arp_tpa", ip4(f, 38).to_string());
        }
        0x0800 if f.len() >= 34 => {
            let ihl = usize::from(f[14] & 0xf) * 4;
            m.insert("ip_src", ip4(f, 26).to_string());
            m.insert("ip_dst", ip4(f, 30).to_string());
            m.insert("ttl", f[22].to_string());
            m.insert("tos", f[15].to_string());
            m.insert("ip_id", be16(f, 18).to_string());
            m.insert("proto", f[23].to_string());
            m.insert(
                "csum",
                if crate::pkt::checksums_ok(f) {
                    "ok"
                } else {
                    "BAD"
                }
                .into(),
            );
            let l4 = 14 + ihl;
            let total = usize::from(be16(f, 16));
            match f[23] {
                6 if f.len() >= l4 + 20 => {
                    m.insert("sport", be16(f, l4).to_string());
                    m.insert("dport", be16(f, l4 + 2).to_string());
                    m.insert("seq", be32(f, l4 + 4).to_string());
                    m.insert("ack", be32(f, l4 + 8).to_string());
                    m.insert("flags", tcp_flags_str(f[l4 + 13]));
                    m.insert("win", be16(f, l4 + 14).to_string());
                    let doff = usize::from(f[l4 + 12] >> 4) * 4;
                    m.insert("payload_len", total.saturating_sub(ihl + doff).to_string());
                }
                17 if f.len() >= l4 + 8 => {
                    m.insert("sport", be16(f, l4).to_string());
                    m.insert("dport", be16(f, l4 + 2).to_string());
                }
                1 if f.len() >= l4 + 8 => {
                    m.insert("icmp_type", f[l4].to_string());
                    m.insert("icmp_code", f[l4 + 1].to_string());
                    m.insert("icmp_id", be16(f, l4 + 4).to_string());
                }
                _ => {}
            }
        }
        _ => {}
    }
    m
}

/// One line, tcpdump-like: `aa:..>bb:.. 10.0.0.1:1234 > 10.0.0.2:80 tcp [S] seq 1 ack 0 ttl 64 len 54 csum ok`.
pub fn summary(f: &[u8]) -> String {
    let m = fields(f);
    let g = |k: &str| m.get(k).cloned().unwrap_or_default();
    let mut s = format!("{}>{} ", g("eth_src"), g("eth_dst"));
    match g("eth_type").as_str() {
        "0x0806" => {
            s += &format!(
                "ARP op {} sha {} spa {} tha {} tpa {}",
                g("arp_op"),
                g("arp_sha"),
                g("arp_spa"),
                g("arp_tha"),
                g("arp_tpa")
            );
        }
        "0x0800" => {
            let proto = g("proto");
            match proto.as_str() {
                "6" => {
                    s += &format!(
                        "{}:{} > {}:{} tcp [{}] seq {} ack {} win {} payload {}",
                        g("ip_src"),
                        g("sport"),
                        g("ip_dst"),
                        g("dport"),
                        g("flags"),
                        g("seq"),
                        g("ack"),
                        g("win"),
                        g("payload_len")
                    )
                }
                "17" => {
                    s += &format!(
                        "{}:{} > {}:{} udp",
                        g("ip_src"),
                        g("sport"),
                        g("ip_dst"),
                        g("dport")
                    )
                }
                "1" => {
                    s += &format!(
                        "{} > {} icmp type {} code {} id {}",
                        g("ip_src"),
                        g("ip_dst"),
                        g("icmp_type"),
                        g("icmp_code"),
                        g("icmp_id")
                    )
                }
                p => s += &format!("{} > {} proto {p}", g("ip_src"), g("ip_dst")),
            }
            s += &format!(" ttl {} tos {} csum {}", g("ttl"), g("tos"), g("csum"));
        }
        t => s += &format!("type {t}"),
    }
    s + &format!(" len {}", g("len"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkt::*;

    #[test]
    fn decodes_tcp() {
        let f = tcp(
            mac("00:00:00:00:00:01"),
            mac("00:00:00:00:00:02"),
            (ip("10.0.0.1"), 1234),
            (ip("10.0.0.2"), 80),
            7,
            9,
            tcp_flags::SYN | tcp_flags::ACK,
            b"hi",
        );
        assert_eq!(
            summary(&f),
            "00:00:00:00:00:01>00:00:00:00:00:02 10.0.0.1:1234 > 10.0.0.2:80 tcp [SA] \
             seq 7 ack 9 win 64240 payload 2 ttl 64 tos 0 csum ok len 56"
        );
    }
}
