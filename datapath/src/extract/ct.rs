//! [`ct_packet`](super::ct_packet) and [`apply_rewrite`](super::apply_rewrite):
//! the packet as conntrack sees it, and conntrack's NAT applied back to it.

use super::Layout;
use super::Proto;
use super::commit::{PseudoCsum, outer_pseudo, set_ipv4_addr, set_ports};
use crate::key::ip_proto;
use crate::wire::checksum::{self, update16};
use crate::wire::icmp::{self, IcmpPacket};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::udp::{self, UdpPacket};
use crate::wire::{be16, be32, set_be16};
use conntrack::{CtPacket, L4 as CtL4, Rewrite, TcpInfo, Tuple};

/// The conntrack view of the packet. `valid` is false unless the packet is
/// IPv4 with a correct header checksum and, for TCP/UDP/ICMP, a correct L4
/// checksum (TCP/UDP over the pseudo-header; a UDP checksum of 0 means none;
/// ICMP over the message), a UDP length within the datagram, and, where OVS's
/// `conn_key_extract` would fail for reasons conntrack cannot see in this
/// struct, false too: a later fragment; an ICMP type that is neither a query
/// (0, 8, 13-16) nor an error (3, 4, 5, 11, 12); a query with a non-zero code;
/// an error whose quote lacks a full inner IPv4 header (IHL checked, version
/// not, as OVS) plus 8 L4 bytes, whose inner header is a later fragment, or
/// whose inner ICMP is not a code-0 query. Checks on values conntrack does
/// see (port 0, inner source != outer destination) are left to conntrack.
///
/// For ICMP queries both tuple ports are the identifier. For ICMP errors the
/// inner tuple is in the direction of the quoted packet (its ports, or its
/// ICMP id in both); with an unusable quote it is all-zero.
pub fn ct_packet(pkt: &[u8], layout: &Layout) -> CtPacket {
    let mut out = CtPacket {
        tuple: Tuple::default(),
        l4: CtL4::Other,
        valid: false,
        fragment: layout.fragment,
    };
    if !layout.is_ipv4() || !layout.fits(pkt.len()) {
        out.fragment = false;
        return out;
    }
    let Ok(ip) = Ipv4Packet::new_checked(&pkt[layout.l3..layout.ip_end]) else {
        return out;
    };
    out.tuple.src = ip.src();
    out.tuple.dst = ip.dst();
    out.tuple.proto = ip.protocol();
    let mut valid = ip.verify_checksum() && !layout.later_fragment;
    let l4 = &pkt[layout.l4..layout.ip_end];
    let (src, dst) = (ip.src(), ip.dst());
    match layout.proto {
        Proto::Tcp => match TcpPacket::new_checked(l4) {
            Ok(t) => {
                out.tuple.sport = t.src_port();
                out.tuple.dport = t.dst_port();
                valid &= t.verify_checksum(src, dst);
                out.l4 = CtL4::Tcp(TcpInfo {
                    flags: t.flags(),
                    seq: t.seq(),
                    ack: t.ack(),
                    win: t.window(),
                    wscale: t.window_scale(),
                    payload_len: (l4.len() - t.header_len()) as u32,
                });
            }
            Err(_) => valid = false,
        },
        Proto::Udp => match UdpPacket::new_checked(l4) {
            Ok(u) => {
                out.tuple.sport = u.src_port();
                out.tuple.dport = u.dst_port();
                valid &= u.length_ok() && u.verify_checksum(src, dst);
                out.l4 = CtL4::Udp;
            }
            Err(_) => valid = false,
        },
        Proto::Icmp => match IcmpPacket::new_checked(l4) {
            Ok(i) => {
                valid &= i.verify_checksum();
                let (ty, code) = (i.msg_type(), i.code());
                if icmp::is_query(ty) {
                    out.tuple.sport = i.ident();
                    out.tuple.dport = i.ident();
                    valid &= code == 0;
                    out.l4 = CtL4::IcmpQuery { ty, code };
                } else if icmp::is_error(ty) {
                    let inner = inner_tuple(i.data());
                    valid &= inner.is_some();
                    out.l4 = CtL4::IcmpError {
                        ty,
                        code,
                        inner: inner.unwrap_or_default(),
                    };
                } else {
                    valid = false;
                    out.l4 = CtL4::IcmpQuery { ty, code };
                }
            }
            Err(_) => valid = false,
        },
        _ => {}
    }
    out.valid = valid;
    out
}

/// Bring `cp`, the [`ct_packet`] of this packet taken before some header
/// rewrites, up to date without re-verifying checksums: for an unfragmented
/// TCP or UDP packet only the outer tuple can have changed (no action writes
/// TCP flags, sequence numbers or lengths), and validity cannot have: every
/// rewrite updates the IPv4 and L4 checksums by RFC 1624 equation 3, which
/// keeps the one's-complement sum of the covered data, so a correct checksum
/// stays correct and a wrong one stays wrong by the same amount (a UDP
/// checksum of 0, "none", is never touched, and one in use never becomes 0).
/// `false` (and `cp` untouched) for anything else: call [`ct_packet`].
#[inline]
pub fn refresh_ct_packet(pkt: &[u8], layout: &Layout, cp: &mut CtPacket) -> bool {
    if layout.fragment
        || !matches!(
            (layout.proto, cp.l4),
            (Proto::Tcp, CtL4::Tcp(_)) | (Proto::Udp, CtL4::Udp)
        )
        || !layout.fits(pkt.len())
        || layout.l4 + 4 > layout.ip_end
    {
        return false;
    }
    let l3 = layout.l3;
    cp.tuple.src = be32(pkt, l3 + ipv4::field::SRC);
    cp.tuple.dst = be32(pkt, l3 + ipv4::field::DST);
    cp.tuple.sport = be16(pkt, layout.l4);
    cp.tuple.dport = be16(pkt, layout.l4 + 2);
    true
}

/// The tuple of the packet quoted in an ICMP error, as OVS's conntrack
/// reads it (`extract_l3_ipv4` + `extract_l4` on the quote), or `None` when
/// OVS would call the error invalid.
fn inner_tuple(quote: &[u8]) -> Option<Tuple> {
    let ip = Ipv4Packet::new_checked(quote).ok()?;
    if ip.is_later_fragment() {
        return None;
    }
    let mut t = Tuple {
        src: ip.src(),
        dst: ip.dst(),
        sport: 0,
        dport: 0,
        proto: ip.protocol(),
    };
    let l4 = &quote[ip.header_len()..];
    match t.proto {
        ip_proto::TCP | ip_proto::UDP => {
            if l4.len() < icmp::ERROR_L4_LEN {
                return None;
            }
            t.sport = be16(l4, 0);
            t.dport = be16(l4, 2);
        }
        ip_proto::ICMP => {
            let i = IcmpPacket::new_checked(l4).ok()?;
            if !icmp::is_query(i.msg_type()) || i.code() != 0 {
                return None;
            }
            t.sport = i.ident();
            t.dport = i.ident();
        }
        _ => {}
    }
    Some(t)
}

/// Apply conntrack's NAT to the packet, as OVS's `nat_packet` does: outer
/// addresses first (IPv4 checksum, plus the TCP/UDP pseudo-header checksum),
/// then ports (TCP/UDP with their checksum; for ICMP queries the identifier,
/// from `rw.outer.sport`, with the ICMP checksum). For an ICMP error with
/// `rw.inner`, the quoted packet is rewritten as OVS's `nat_inner_packet`
/// does: inner ports (or ICMP id) then inner addresses, fixing the inner
/// IPv4 checksum and the inner L4 checksum incrementally where the quote
/// holds it (TCP: only if the quote has the checksum field for a port change,
/// and the full 20-byte header for an address change; UDP: unless 0), and
/// finally the ICMP checksum is recomputed over the whole message. Fields
/// already equal to the target are not touched.
pub fn apply_rewrite(pkt: &mut [u8], layout: &Layout, rw: &Rewrite) {
    if !layout.is_ipv4()
        || !layout.fits(pkt.len())
        || layout.l3 + ipv4::MIN_HEADER_LEN > layout.ip_end
    {
        return;
    }
    let l3 = layout.l3;
    let l4 = layout.l4;
    let ip_csum = l3 + ipv4::field::CHECKSUM;
    let pseudo = outer_pseudo(layout);
    set_ipv4_addr(pkt, l3 + ipv4::field::SRC, ip_csum, pseudo, rw.outer.src);
    set_ipv4_addr(pkt, l3 + ipv4::field::DST, ip_csum, pseudo, rw.outer.dst);
    match layout.proto {
        Proto::Tcp | Proto::Udp => set_ports(pkt, l4, pseudo, rw.outer.sport, rw.outer.dport),
        Proto::Icmp => {
            let ty = pkt[l4 + icmp::field::TYPE];
            if icmp::is_query(ty) {
                set_icmp_id(pkt, l4, rw.outer.sport);
            } else if icmp::is_error(ty)
                && let Some(inner) = &rw.inner
            {
                nat_inner(pkt, l4, layout.ip_end, inner);
            }
        }
        _ => {}
    }
}

/// OVS's `packet_set_icmp_id` on the ICMP header at `l4` (8 bytes present).
fn set_icmp_id(pkt: &mut [u8], l4: usize, id: u16) {
    let off = l4 + icmp::field::IDENT;
    let old = be16(pkt, off);
    if old != id {
        let c = l4 + icmp::field::CHECKSUM;
        let v = update16(be16(pkt, c), old, id);
        set_be16(pkt, c, v);
        set_be16(pkt, off, id);
    }
}

/// Rewrite the packet quoted by the ICMP error at `icmp_off` (message ends
/// at `end`) to `inner`, then recompute the ICMP checksum.
fn nat_inner(pkt: &mut [u8], icmp_off: usize, end: usize, inner: &Tuple) {
    let il3 = icmp_off + icmp::HEADER_LEN;
    let hl = match pkt.get(il3..end).map(Ipv4Packet::new_checked) {
        Some(Ok(ip)) => ip.header_len(),
        _ => return,
    };
    let il4 = il3 + hl;
    let l4_len = end - il4;
    let proto = pkt[il3 + ipv4::field::PROTOCOL];
    // Inner L4 checksum reachable within the quote, for port and address
    // changes (OVS writes beyond the quote otherwise; flowpath does not).
    let (port_csum, addr_csum) = match proto {
        ip_proto::TCP => {
            let c = il4 + tcp::field::CHECKSUM;
            let port = if l4_len >= tcp::field::CHECKSUM + 2 {
                PseudoCsum::Tcp(c)
            } else {
                PseudoCsum::None
            };
            let addr = if l4_len >= tcp::MIN_HEADER_LEN {
                PseudoCsum::Tcp(c)
            } else {
                PseudoCsum::None
            };
            (port, addr)
        }
        ip_proto::UDP if l4_len >= udp::HEADER_LEN => {
            let c = PseudoCsum::Udp(il4 + udp::field::CHECKSUM);
            (c, c)
        }
        _ => (PseudoCsum::None, PseudoCsum::None),
    };
    match proto {
        ip_proto::TCP | ip_proto::UDP if l4_len >= 4 => {
            set_ports(pkt, il4, port_csum, inner.sport, inner.dport)
        }
        ip_proto::ICMP if l4_len >= icmp::HEADER_LEN && icmp::is_query(pkt[il4]) => {
            set_icmp_id(pkt, il4, inner.sport)
        }
        _ => {}
    }
    let ic = il3 + ipv4::field::CHECKSUM;
    set_ipv4_addr(pkt, il3 + ipv4::field::SRC, ic, addr_csum, inner.src);
    set_ipv4_addr(pkt, il3 + ipv4::field::DST, ic, addr_csum, inner.dst);
    let c = icmp_off + icmp::field::CHECKSUM;
    set_be16(pkt, c, 0);
    let v = checksum::checksum(&pkt[icmp_off..end]);
    set_be16(pkt, c, v);
}
