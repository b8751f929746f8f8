//! A packet builder for tests, benches and fuzz corpora: whole Ethernet
//! frames with correct lengths and checksums, in one expression.
//!
//! ```
//! use datapath::wire::build::{PacketBuilder, SYN, ACK};
//! let mac_a = [0x02, 0, 0, 0, 0, 1];
//! let mac_b = [0x02, 0, 0, 0, 0, 2];
//! let syn = PacketBuilder::tcp(mac_a, mac_b, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 80)
//!     .flags(SYN)
//!     .seq(1)
//!     .wscale(7)
//!     .build();
//! assert_eq!(syn.len(), 14 + 20 + 24);
//!
//! // An ICMP "port unreachable" quoting a UDP datagram's first 28 bytes.
//! let dgram = PacketBuilder::udp(mac_a, mac_b, [10, 0, 0, 1], [10, 0, 0, 2], 5000, 53)
//!     .payload(b"query")
//!     .build_ip();
//! let err = PacketBuilder::icmp_error(mac_b, mac_a, [10, 0, 0, 2], [10, 0, 0, 1], 3, 3, &dgram)
//!     .vlan(100)
//!     .build();
//! assert_eq!(err.len(), 18 + 20 + 8 + 28);
//! let _ = ACK;
//! ```
//!
//! Defaults: no VLAN tag, TTL 64, TOS 0, IP id 0, no DF, no fragmentation,
//! TCP flags 0, seq 0, ack 0, window 65535, UDP checksum on, no padding.
//! Modifiers that do not apply to the packet kind (e.g. `seq` on UDP)
//! panic: this is a test tool and a silent no-op would hide a mistake.

use super::arp::{self, ArpRepr};
use super::ethernet::{EthernetRepr, Mac};
use super::icmp::{self, IcmpPacket, IcmpRepr};
use super::igmp::{IgmpPacket, IgmpRepr};
use super::ipv4::{self, Ipv4Packet};
use super::tcp::{TcpPacket, TcpRepr};
use super::udp::{self, UdpPacket, UdpRepr};
use crate::key::{eth_type, ip_proto};
use std::net::Ipv4Addr;

pub use super::tcp::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};

#[derive(Debug, Clone)]
enum L4 {
    Tcp(TcpRepr),
    Udp { repr: UdpRepr, checksum: bool },
    Icmp(IcmpRepr),
    Igmp(IgmpRepr),
    Raw,
}

#[derive(Debug, Clone)]
struct Ip {
    src: u32,
    dst: u32,
    proto: u8,
    tos: u8,
    ttl: u8,
    ident: u16,
    flags_frag: u16,
    options: Vec<u8>,
    l4: L4,
}

#[derive(Debug, Clone)]
enum L3 {
    Ipv4(Ip),
    Arp(ArpRepr),
    Raw(u16),
}

/// Builds one Ethernet frame. See the module docs.
#[derive(Debug, Clone)]
#[must_use = "call build() to get the bytes"]
pub struct PacketBuilder {
    src: Mac,
    dst: Mac,
    vlan: Option<u16>,
    l3: L3,
    payload: Vec<u8>,
    pad_to: usize,
    bad_ip_csum: bool,
    bad_l4_csum: bool,
}

fn ip4(a: impl Into<Ipv4Addr>) -> u32 {
    u32::from(a.into())
}

impl PacketBuilder {
    fn with_l3(src: impl Into<Mac>, dst: impl Into<Mac>, l3: L3) -> PacketBuilder {
        PacketBuilder {
            src: src.into(),
            dst: dst.into(),
            vlan: None,
            l3,
            payload: Vec::new(),
            pad_to: 0,
            bad_ip_csum: false,
            bad_l4_csum: false,
        }
    }

    fn ip(
        src_mac: impl Into<Mac>,
        dst_mac: impl Into<Mac>,
        src_ip: impl Into<Ipv4Addr>,
        dst_ip: impl Into<Ipv4Addr>,
        proto: u8,
        l4: L4,
    ) -> PacketBuilder {
        Self::with_l3(
            src_mac,
            dst_mac,
            L3::Ipv4(Ip {
                src: ip4(src_ip),
                dst: ip4(dst_ip),
                proto,
                tos: 0,
                ttl: 64,
                ident: 0,
                flags_frag: 0,
                options: Vec::new(),
                l4,
            }),
        )
    }

    /// A TCP segment.
    pub fn tcp(
        src_mac: impl Into<Mac>,
        dst_mac: impl Into<Mac>,
        src_ip: impl Into<Ipv4Addr>,
        dst_ip: impl Into<Ipv4Addr>,
        sport: u16,
        dport: u16,
    ) -> PacketBuilder {
        let t = TcpRepr {
            src_port: sport,
            dst_port: dport,
            window: 65535,
            ..TcpRepr::default()
        };
        Self::ip(src_mac, dst_mac, src_ip, dst_ip, ip_proto::TCP, L4::Tcp(t))
    }

    /// A UDP datagram.
    pub fn udp(
        src_mac: impl Into<Mac>,
        dst_mac: impl Into<Mac>,
        src_ip: impl Into<Ipv4Addr>,
        dst_ip: impl Into<Ipv4Addr>,
        sport: u16,
        dport: u16,
    ) -> PacketBuilder {
        let repr = UdpRepr {
            src_port: sport,
            dst_port: dport,
        };
        let l4 = L4::Udp {
            repr,
            checksum: true,
        };
        Self::ip(src_mac, dst_mac, src_ip, dst_ip, ip_proto::UDP, l4)
    }

    /// Any ICMP message: type, code and the 4 bytes after the checksum.
    pub fn icmp(
        src_mac: impl Into<Mac>,
        dst_mac: impl Into<Mac>,
        src_ip: impl Into<Ipv4Addr>,
        dst_ip: impl Into<Ipv4Addr>,
        ty: u8,
        code: u8,
        rest: u32,
    ) -> PacketBuilder {
        let r = IcmpRepr {
            msg_type: ty,
            code,
            rest,
        };
        Self::ip(
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            ip_proto::ICMP,
            L4::Icmp(r),
        )
    }

    /// An ICMP echo request.
    pub fn icmp_echo_request(
        src_mac: impl Into<Mac>,
        dst_mac: impl Into<Mac>,
        src_ip: impl Into<Ipv4Addr>,
        dst_ip: impl Into<Ipv4Addr>,
        id: u16,
        seq: u16,
    ) -> PacketBuilder {
        let rest = (id as u32) << 16 | seq as u32;
        Self::icmp(
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            icmp::ty::ECHO_REQUEST,
            0,
            rest,
        )
    }

    /// An ICMP echo reply.
    pub fn icmp_echo_reply(
        src_mac: impl Into<Mac>,
        dst_mac: impl Into<Mac>,
        src_ip: impl Into<Ipv4Addr>,
        dst_ip: impl Into<Ipv4Addr>,
        id: u16,
        seq: u16,
    ) -> PacketBuilder {
        let rest = (id as u32) << 16 | seq as u32;
        Self::icmp(
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            icmp::ty::ECHO_REPLY,
            0,
            rest,
        )
    }

    /// An ICMP error (`ty` 3, 4, 5, 11 or 12) quoting `offending`, an IPv4
    /// packet (e.g. from [`PacketBuilder::build_ip`]): its header and the
    /// first 8 bytes after it, as RFC 792 asks. Use
    /// [`PacketBuilder::quote_len`] to quote more or less.
    pub fn icmp_error(
        src_mac: impl Into<Mac>,
        dst_mac: impl Into<Mac>,
        src_ip: impl Into<Ipv4Addr>,
        dst_ip: impl Into<Ipv4Addr>,
        ty: u8,
        code: u8,
        offending: &[u8],
    ) -> PacketBuilder {
        let hl = offending
            .first()
            .map_or(ipv4::MIN_HEADER_LEN, |b| ((b & 0x0f) as usize) * 4);
        let n = (hl + icmp::ERROR_L4_LEN).min(offending.len());
        Self::icmp(src_mac, dst_mac, src_ip, dst_ip, ty, code, 0).payload(&offending[..n])
    }

    /// An IGMP message of type `ty` for `group`.
    pub fn igmp(
        src_mac: impl Into<Mac>,
        dst_mac: impl Into<Mac>,
        src_ip: impl Into<Ipv4Addr>,
        dst_ip: impl Into<Ipv4Addr>,
        ty: u8,
        group: impl Into<Ipv4Addr>,
    ) -> PacketBuilder {
        let r = IgmpRepr {
            msg_type: ty,
            code: 0,
            group: ip4(group),
        };
        Self::ip(
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            ip_proto::IGMP,
            L4::Igmp(r),
        )
        .ttl(1)
    }

    /// An IPv4 packet of protocol `proto` whose payload is given with
    /// [`PacketBuilder::payload`] (no L4 header is generated).
    pub fn ipv4(
        src_mac: impl Into<Mac>,
        dst_mac: impl Into<Mac>,
        src_ip: impl Into<Ipv4Addr>,
        dst_ip: impl Into<Ipv4Addr>,
        proto: u8,
    ) -> PacketBuilder {
        Self::ip(src_mac, dst_mac, src_ip, dst_ip, proto, L4::Raw)
    }

    /// An Ethernet/IPv4 ARP packet.
    #[allow(clippy::too_many_arguments)]
    pub fn arp(
        src_mac: impl Into<Mac>,
        dst_mac: impl Into<Mac>,
        op: u16,
        sha: impl Into<Mac>,
        spa: impl Into<Ipv4Addr>,
        tha: impl Into<Mac>,
        tpa: impl Into<Ipv4Addr>,
    ) -> PacketBuilder {
        let r = ArpRepr {
            op,
            sha: sha.into(),
            spa: ip4(spa),
            tha: tha.into(),
            tpa: ip4(tpa),
        };
        Self::with_l3(src_mac, dst_mac, L3::Arp(r))
    }

    /// A broadcast ARP request: who has `tpa`, tell `spa` at `sha`.
    pub fn arp_request(
        sha: impl Into<Mac>,
        spa: impl Into<Ipv4Addr>,
        tpa: impl Into<Ipv4Addr>,
    ) -> PacketBuilder {
        let sha = sha.into();
        Self::arp(
            sha,
            Mac::BROADCAST,
            arp::OP_REQUEST,
            sha,
            spa,
            Mac::ZERO,
            tpa,
        )
    }

    /// A unicast ARP reply: `spa` is at `sha`, sent to `tha`/`tpa`.
    pub fn arp_reply(
        sha: impl Into<Mac>,
        spa: impl Into<Ipv4Addr>,
        tha: impl Into<Mac>,
        tpa: impl Into<Ipv4Addr>,
    ) -> PacketBuilder {
        let (sha, tha) = (sha.into(), tha.into());
        Self::arp(sha, tha, arp::OP_REPLY, sha, spa, tha, tpa)
    }

    /// A frame with any ethertype; its payload from [`PacketBuilder::payload`].
    pub fn ethernet(
        src_mac: impl Into<Mac>,
        dst_mac: impl Into<Mac>,
        ethertype: u16,
    ) -> PacketBuilder {
        Self::with_l3(src_mac, dst_mac, L3::Raw(ethertype))
    }

    fn ip_mut(&mut self, what: &str) -> &mut Ip {
        match &mut self.l3 {
            L3::Ipv4(ip) => ip,
            _ => panic!("PacketBuilder::{what} needs an IPv4 packet"),
        }
    }

    fn tcp_mut(&mut self, what: &str) -> &mut TcpRepr {
        match &mut self.ip_mut(what).l4 {
            L4::Tcp(t) => t,
            _ => panic!("PacketBuilder::{what} needs a TCP packet"),
        }
    }

    /// Add an 802.1Q tag (TPID 0x8100) with this TCI as on the wire.
    pub fn vlan(mut self, tci: u16) -> Self {
        self.vlan = Some(tci);
        self
    }

    /// Payload bytes after the L4 header (for `icmp_error`: the quote).
    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.to_vec();
        self
    }

    /// Pad the frame with zeros to at least `len` bytes (Ethernet minimum
    /// frame padding is `pad_to(60)`); the IP total length does not cover
    /// the padding.
    pub fn pad_to(mut self, len: usize) -> Self {
        self.pad_to = len;
        self
    }

    /// IPv4 TTL.
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ip_mut("ttl").ttl = ttl;
        self
    }

    /// IPv4 TOS byte (DSCP << 2 | ECN).
    pub fn tos(mut self, tos: u8) -> Self {
        self.ip_mut("tos").tos = tos;
        self
    }

    /// IPv4 identification.
    pub fn ip_id(mut self, id: u16) -> Self {
        self.ip_mut("ip_id").ident = id;
        self
    }

    /// IPv4 don't-fragment flag.
    pub fn df(mut self, df: bool) -> Self {
        let ip = self.ip_mut("df");
        ip.flags_frag = (ip.flags_frag & !ipv4::FLAG_DF) | if df { ipv4::FLAG_DF } else { 0 };
        self
    }

    /// Make this a fragment: offset in 8-byte units, and the MF flag. The L4
    /// header is still emitted (as the fragment's first bytes), so an
    /// offset of 0 with `more` gives a real first fragment.
    pub fn fragment(mut self, offset8: u16, more: bool) -> Self {
        let ip = self.ip_mut("fragment");
        let df = ip.flags_frag & ipv4::FLAG_DF;
        ip.flags_frag = df | (offset8 & ipv4::OFFSET_MASK) | if more { ipv4::FLAG_MF } else { 0 };
        self
    }

    /// IPv4 option bytes, padded with EOL (zero) to a multiple of 4 (at
    /// most 40 bytes).
    pub fn ip_options(mut self, opts: &[u8]) -> Self {
        assert!(opts.len() <= 40, "IPv4 options are at most 40 bytes");
        let ip = self.ip_mut("ip_options");
        ip.options = opts.to_vec();
        ip.options.resize(opts.len().div_ceil(4) * 4, 0);
        self
    }

    /// TCP flags ([`SYN`], [`ACK`]... or-ed together).
    pub fn flags(mut self, flags: u16) -> Self {
        self.tcp_mut("flags").flags = flags;
        self
    }

    /// TCP sequence number.
    pub fn seq(mut self, seq: u32) -> Self {
        self.tcp_mut("seq").seq = seq;
        self
    }

    /// TCP acknowledgement number.
    pub fn ack(mut self, ack: u32) -> Self {
        self.tcp_mut("ack").ack = ack;
        self
    }

    /// TCP window.
    pub fn win(mut self, win: u16) -> Self {
        self.tcp_mut("win").window = win;
        self
    }

    /// TCP window-scale option (emitted as NOP, WS).
    pub fn wscale(mut self, shift: u8) -> Self {
        self.tcp_mut("wscale").wscale = Some(shift);
        self
    }

    /// Send the UDP datagram without a checksum (field 0).
    pub fn no_udp_checksum(mut self) -> Self {
        match &mut self.ip_mut("no_udp_checksum").l4 {
            L4::Udp { checksum, .. } => *checksum = false,
            _ => panic!("PacketBuilder::no_udp_checksum needs a UDP packet"),
        }
        self
    }

    /// Keep only the first `n` bytes of an ICMP error's quote (or pad it
    /// with zeros to `n`).
    pub fn quote_len(mut self, n: usize) -> Self {
        self.payload.resize(n, 0);
        self
    }

    /// Corrupt the IPv4 header checksum (flip its low bit).
    pub fn bad_ip_checksum(mut self) -> Self {
        self.bad_ip_csum = true;
        self
    }

    /// Corrupt the L4 checksum (flip its low bit; a UDP checksum is
    /// corrupted even if disabled).
    pub fn bad_l4_checksum(mut self) -> Self {
        self.bad_l4_csum = true;
        self
    }

    /// The IPv4 packet alone (no Ethernet header, no padding), e.g. to quote
    /// in an ICMP error. Panics for ARP and raw-ethertype builders.
    pub fn build_ip(&self) -> Vec<u8> {
        let L3::Ipv4(ip) = &self.l3 else {
            panic!("PacketBuilder::build_ip needs an IPv4 packet")
        };
        let hl = ipv4::MIN_HEADER_LEN + ip.options.len();
        let l4_hl = match &ip.l4 {
            L4::Tcp(t) => t.header_len(),
            L4::Udp { .. } => udp::HEADER_LEN,
            L4::Icmp(_) => icmp::HEADER_LEN,
            L4::Igmp(_) => super::igmp::HEADER_LEN,
            L4::Raw => 0,
        };
        let total = hl + l4_hl + self.payload.len();
        let mut out = vec![0u8; total];
        let (hdr, l4) = out.split_at_mut(hl);
        l4[l4_hl..].copy_from_slice(&self.payload);
        // Emission cannot fail: every slice was sized above.
        let flip = if self.bad_l4_csum { 1 } else { 0 };
        match &ip.l4 {
            L4::Tcp(t) => {
                t.emit(l4).expect("sized");
                let mut p = TcpPacket::new_checked(&mut l4[..]).expect("sized");
                p.fill_checksum(ip.src, ip.dst);
                let c = p.checksum();
                p.set_checksum(c ^ flip);
            }
            L4::Udp { repr, checksum } => {
                repr.emit(l4).expect("sized");
                let mut p = UdpPacket::new_checked(&mut l4[..]).expect("sized");
                if *checksum {
                    p.fill_checksum(ip.src, ip.dst);
                }
                let c = p.checksum();
                p.set_checksum(c ^ flip);
            }
            L4::Icmp(r) => {
                r.emit(l4).expect("sized");
                let mut p = IcmpPacket::new_checked(&mut l4[..]).expect("sized");
                let c = p.checksum();
                p.set_checksum(c ^ flip);
            }
            L4::Igmp(r) => {
                r.emit(l4).expect("sized");
                let mut p = IgmpPacket::new_checked(&mut l4[..]).expect("sized");
                let c = p.checksum();
                p.set_checksum(c ^ flip);
            }
            L4::Raw => {}
        }
        hdr[ipv4::MIN_HEADER_LEN..].copy_from_slice(&ip.options);
        hdr[ipv4::field::VER_IHL] = 0x40 | (hl / 4) as u8;
        let mut p = Ipv4Packet::new_checked(&mut hdr[..]).expect("sized");
        p.set_tos(ip.tos);
        p.set_total_len(total as u16);
        p.set_ident(ip.ident);
        p.set_flags_frag(ip.flags_frag);
        p.set_ttl(ip.ttl);
        p.set_protocol(ip.proto);
        p.set_src(ip.src);
        p.set_dst(ip.dst);
        p.fill_checksum();
        if self.bad_ip_csum {
            let c = p.checksum();
            p.set_checksum(c ^ 1);
        }
        out
    }

    /// The whole frame.
    pub fn build(&self) -> Vec<u8> {
        let ethertype = match &self.l3 {
            L3::Ipv4(_) => eth_type::IPV4,
            L3::Arp(_) => eth_type::ARP,
            L3::Raw(t) => *t,
        };
        let eth = EthernetRepr {
            dst: self.dst,
            src: self.src,
            vlan: self.vlan,
            ethertype,
        };
        let mut out = vec![0u8; eth.header_len()];
        eth.emit(&mut out).expect("sized");
        match &self.l3 {
            L3::Ipv4(_) => out.extend_from_slice(&self.build_ip()),
            L3::Arp(r) => {
                let at = out.len();
                out.resize(at + arp::LEN, 0);
                r.emit(&mut out[at..]).expect("sized");
                out.extend_from_slice(&self.payload);
            }
            L3::Raw(_) => out.extend_from_slice(&self.payload),
        }
        if out.len() < self.pad_to {
            out.resize(self.pad_to, 0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

    /// A minimal TCP SYN, byte for byte.
    #[test]
    fn golden_tcp_syn() {
        let f = PacketBuilder::tcp(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 12345, 80)
            .flags(SYN)
            .seq(1)
            .build();
        #[rustfmt::skip]
        let want: [u8; 54] = [
            0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00,
            0x45, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00, 0x40, 0x06, 0x66, 0xce,
            10, 0, 0, 1, 10, 0, 0, 2,
            0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff,
            0x6b, 0x56, 0x00, 0x00,
        ];
        assert_eq!(f, want);
    }

    #[test]
    fn arp_request_layout() {
        let f = PacketBuilder::arp_request(A, [10, 0, 0, 1], [10, 0, 0, 2])
            .pad_to(60)
            .build();
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[38..42], &[10, 0, 0, 2]);
    }

    #[test]
    fn options_vlan_fragment() {
        let f = PacketBuilder::udp(A, B, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2)
            .vlan(0x0064)
            .ip_options(&[1, 1, 1]) // three NOPs, padded to 4
            .fragment(0, true)
            .df(true)
            .build();
        assert_eq!(&f[12..18], &[0x81, 0x00, 0x00, 0x64, 0x08, 0x00]);
        let ip = Ipv4Packet::new_checked(&f[18..]).unwrap();
        assert_eq!(ip.header_len(), 24);
        assert!(ip.verify_checksum());
        assert!(ip.dont_frag() && ip.more_frags() && ip.frag_offset() == 0);
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(0x0101_0101, 0x0202_0202));
        assert_ne!(u.checksum(), 0);
    }

    #[test]
    #[should_panic(expected = "needs a TCP packet")]
    fn misuse_panics() {
        let _ = PacketBuilder::udp(A, B, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2).seq(5);
    }
}
