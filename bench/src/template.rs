//! Packet templates: one Ethernet/IPv4/{UDP,TCP} frame built once, then per
//! packet the flow's source address and port, a sequence number and a send
//! timestamp are written in and the checksums recomputed.
//!
//! Stamp layout at the start of the L4 payload (big endian), 18 bytes:
//! `magic u16 = 0xF9A7 | seq u64 | tx time u64 (ns, CLOCK_REALTIME)`.
//! UDP goes out without a checksum (0, allowed for IPv4 by RFC 768); TCP
//! carries a full checksum because conntrack (kernel, OVS) validates it.

use std::net::Ipv4Addr;

/// First two payload bytes of a stamped packet.
pub const MAGIC: u16 = 0xF9A7;
/// Bytes the stamp occupies.
pub const STAMP_LEN: usize = 18;
const ETH: usize = 14;
const IP: usize = 20;

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP datagrams.
    Udp,
    /// TCP segments with SYN set.
    TcpSyn,
    /// TCP segments with ACK set.
    TcpAck,
    /// TCP segments with PSH|ACK and payload.
    TcpData,
}

impl std::str::FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Proto, String> {
        match s {
            "udp" => Ok(Proto::Udp),
            "syn" | "tcp-syn" => Ok(Proto::TcpSyn),
            "ack" | "tcp-ack" => Ok(Proto::TcpAck),
            "tcp" | "data" | "tcp-data" => Ok(Proto::TcpData),
            _ => Err(format!("unknown protocol {s:?} (udp, syn, ack, tcp)")),
        }
    }
}

impl Proto {
    fn l4_len(self) -> usize {
        if self == Proto::Udp { 8 } else { 20 }
    }
    fn ip_proto(self) -> u8 {
        if self == Proto::Udp { 17 } else { 6 }
    }
}

/// Fixed fields of every generated frame.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Destination MAC (the device under test's ingress port).
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination address.
    pub dst_ip: Ipv4Addr,
    /// Destination port.
    pub dst_port: u16,
    /// Protocol and TCP flags.
    pub proto: Proto,
    /// Frame length without FCS; raised to fit the headers and the stamp.
    pub size: usize,
}

/// A prebuilt frame plus where its fields live.
#[derive(Debug, Clone)]
pub struct Template {
    frame: Vec<u8>,
    proto: Proto,
}

/// What the sink reads back out of a stamped frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sender's sequence number.
    pub seq: u64,
    /// Sender's transmit time, ns since the epoch.
    pub tx_ns: u64,
}

impl Template {
    /// Builds the frame for `spec` (source address and port filled per packet).
    pub fn new(spec: &Spec) -> Template {
        let l4 = spec.proto.l4_len();
        let len = spec.size.max(ETH + IP + l4 + STAMP_LEN).max(60);
        let mut f = vec![0u8; len];
        f[0..6].copy_from_slice(&spec.dst_mac);
        f[6..12].copy_from_slice(&spec.src_mac);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[ETH..ETH + IP];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((len - ETH) as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = spec.proto.ip_proto();
        ip[16..20].copy_from_slice(&spec.dst_ip.octets());
        let t = &mut f[ETH + IP..];
        t[2..4].copy_from_slice(&spec.dst_port.to_be_bytes());
        match spec.proto {
            Proto::Udp => t[4..6].copy_from_slice(&((len - ETH - IP) as u16).to_be_bytes()),
            p => {
                t[4..8].copy_from_slice(&1u32.to_be_bytes()); // seq
                t[12] = 5 << 4; // data offset
                t[13] = match p {
                    Proto::TcpSyn => 0x02,
                    Proto::TcpAck => 0x10,
                    _ => 0x18,
                };
                if p != Proto::TcpSyn {
                    t[8..12].copy_from_slice(&1u32.to_be_bytes()); // ack
                }
                t[14..16].copy_from_slice(&65535u16.to_be_bytes()); // window
            }
        }
        let p = ETH + IP + l4;
        f[p..p + 2].copy_from_slice(&MAGIC.to_be_bytes());
        Template {
            frame: f,
            proto: spec.proto,
        }
    }

    /// Frame length.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Never empty; for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the frame for one packet into `buf` (at least [`Self::len`]
    /// bytes): flow, stamp, checksums.
    pub fn write(&self, buf: &mut [u8], src: Ipv4Addr, sport: u16, stamp: Stamp) {
        let l4 = ETH + IP;
        let dport = u16::from_be_bytes([self.frame[l4 + 2], self.frame[l4 + 3]]);
        self.write_flow(buf, src, sport, dport, stamp);
    }

    /// [`Self::write`] with another destination port than the template's
    /// (a generator spreading flows over several Services).
    pub fn write_flow(&self, buf: &mut [u8], src: Ipv4Addr, sport: u16, dport: u16, stamp: Stamp) {
        let buf = &mut buf[..self.frame.len()];
        buf.copy_from_slice(&self.frame);
        buf[ETH + 12..ETH + 16].copy_from_slice(&src.octets());
        let c = !fold(sum(&buf[ETH..ETH + IP]));
        buf[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
        let l4 = ETH + IP;
        buf[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
        buf[l4 + 2..l4 + 4].copy_from_slice(&dport.to_be_bytes());
        let p = l4 + self.proto.l4_len() + 2;
        buf[p..p + 8].copy_from_slice(&stamp.seq.to_be_bytes());
        buf[p + 8..p + 16].copy_from_slice(&stamp.tx_ns.to_be_bytes());
        if self.proto != Proto::Udp {
            // Pseudo header (RFC 793): addresses, protocol, TCP length.
            let seg = &buf[l4..];
            let pseudo = sum(&buf[ETH + 12..ETH + 20]) + 6 + seg.len() as u32;
            let c = !fold(pseudo + sum(seg));
            buf[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        }
    }
}

impl Stamp {
    /// The stamp of a frame the generator sent (after any NAT on the way:
    /// only addresses and ports change, so the payload is where it was), or
    /// `None` for anything else.
    pub fn parse(f: &[u8]) -> Option<Stamp> {
        if f.len() < ETH + IP || f[12..14] != [0x08, 0x00] || f[ETH] >> 4 != 4 {
            return None;
        }
        let l4 = ETH + usize::from(f[ETH] & 0x0f) * 4;
        let p = match f[ETH + 9] {
            17 => l4 + 8,
            6 => l4 + usize::from(*f.get(l4 + 12)? >> 4) * 4,
            _ => return None,
        };
        let s = f.get(p..p + STAMP_LEN)?;
        if u16::from_be_bytes([s[0], s[1]]) != MAGIC {
            return None;
        }
        Some(Stamp {
            seq: u64::from_be_bytes(s[2..10].try_into().ok()?),
            tx_ns: u64::from_be_bytes(s[10..18].try_into().ok()?),
        })
    }
}

/// One's-complement sum of big-endian 16-bit words (odd tail zero-padded).
fn sum(b: &[u8]) -> u32 {
    let mut s = 0u32;
    let mut c = b.chunks_exact(2);
    for w in &mut c {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [x] = c.remainder() {
        s += u32::from(*x) << 8;
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(proto: Proto, size: usize) -> Spec {
        Spec {
            dst_mac: [0, 0x50, 0x56, 0xa7, 0x35, 0x0b],
            src_mac: [2, 0, 0, 0, 0, 0x99],
            dst_ip: Ipv4Addr::new(10, 176, 25, 244),
            dst_port: 30232,
            proto,
            size,
        }
    }

    #[test]
    fn udp_golden_bytes() {
        let t = Template::new(&spec(Proto::Udp, 60));
        let mut b = [0u8; 60];
        let stamp = Stamp {
            seq: 7,
            tx_ns: 0x0102030405060708,
        };
        t.write(&mut b, Ipv4Addr::new(10, 176, 26, 36), 1024, stamp);
        #[rustfmt::skip]
        let want: [u8; 60] = [
            0, 0x50, 0x56, 0xa7, 0x35, 0x0b, 2, 0, 0, 0, 0, 0x99, 8, 0,
            0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0xf1, 0x47, 10, 176, 26, 36, 10, 176, 25, 244,
            4, 0, 0x76, 0x18, 0, 26, 0, 0,
            0xf9, 0xa7, 0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        assert_eq!(b, want);
        // A correct IPv4 header sums to 0xffff.
        assert_eq!(fold(sum(&b[14..34])), 0xffff);
        assert_eq!(Stamp::parse(&b), Some(stamp));
    }

    #[test]
    fn tcp_checksums_verify_and_flags_are_set() {
        for (p, flags) in [
            (Proto::TcpSyn, 0x02),
            (Proto::TcpAck, 0x10),
            (Proto::TcpData, 0x18),
        ] {
            let t = Template::new(&spec(p, 60));
            assert_eq!(t.len(), 14 + 20 + 20 + STAMP_LEN);
            let mut b = vec![0u8; t.len()];
            let stamp = Stamp { seq: 1, tx_ns: 2 };
            t.write(&mut b, Ipv4Addr::new(192, 168, 1, 9), 40000, stamp);
            assert_eq!(b[14 + 20 + 13], flags);
            let seg = &b[34..];
            let pseudo = sum(&b[26..34]) + 6 + seg.len() as u32;
            assert_eq!(fold(pseudo + sum(seg)), 0xffff, "{p:?}");
            assert_eq!(Stamp::parse(&b), Some(stamp));
        }
    }

    #[test]
    fn write_flow_sets_the_destination_port_under_the_checksum() {
        let t = Template::new(&spec(Proto::TcpSyn, 60));
        let mut b = vec![0u8; t.len()];
        let stamp = Stamp { seq: 3, tx_ns: 4 };
        t.write_flow(&mut b, Ipv4Addr::new(10, 1, 2, 3), 5000, 30233, stamp);
        assert_eq!(&b[36..38], &30233u16.to_be_bytes());
        let seg = &b[34..];
        assert_eq!(
            fold(sum(&b[26..34]) + 6 + seg.len() as u32 + sum(seg)),
            0xffff
        );
        let mut w = vec![0u8; t.len()];
        t.write(&mut w, Ipv4Addr::new(10, 1, 2, 3), 5000, stamp);
        assert_eq!(&w[36..38], &30232u16.to_be_bytes());
    }

    #[test]
    fn size_is_honoured_and_foreign_frames_have_no_stamp() {
        assert_eq!(Template::new(&spec(Proto::Udp, 1500)).len(), 1500);
        assert_eq!(Stamp::parse(&[0u8; 60]), None);
        let mut b = [0u8; 60];
        Template::new(&spec(Proto::Udp, 60)).write(
            &mut b,
            Ipv4Addr::LOCALHOST,
            1,
            Stamp { seq: 0, tx_ns: 0 },
        );
        b[42] = 0;
        assert_eq!(Stamp::parse(&b), None);
    }
}
