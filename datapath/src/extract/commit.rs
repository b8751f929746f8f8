//! [`commit`](super::commit): writing changed key fields back into the
//! packet, with incremental checksum updates, as OVS's set actions do.

use super::{ETH_LEN, Layout, Proto, VLAN_CFI, VLAN_TAG_LEN, put_mac48};
use crate::key::{FlowKey, Slot, slot};
use crate::wire::checksum::{self, update16, update32};
use crate::wire::{arp, be16, be32, icmp, ipv4, set_be16, set_be32, tcp, udp};

/// Write into `pkt` every writable header field whose value differs between
/// `from` (the key [`extract`] produced, or the last committed one) and `to`,
/// fixing checksums incrementally, as OVS's set actions do:
///
/// - `dl_src`, `dl_dst`;
/// - `vlan_tci`, only when the packet is tagged and `to` keeps the CFI
///   (present) bit; the CFI/DEI bit on the wire is written 0, as OVS's
///   `eth_push_vlan` does. Adding or removing a tag is not representable
///   (the IR has no length-changing VLAN actions) and is ignored;
/// - IPv4 `nw_src`/`nw_dst` (header checksum, and the TCP/UDP checksum for
///   the pseudo-header when the L4 header is present and not a later
///   fragment; a UDP checksum of 0 stays 0), TOS byte, TTL
///   (`packet_set_ipv4`);
/// - TCP/UDP ports with the L4 checksum (`packet_set_tcp_port`,
///   `packet_set_udp_port`), ICMP type/code from the low 8 bits of
///   `tp_src`/`tp_dst` with the ICMP checksum (`packet_set_icmp`);
/// - ARP `arp_op` (written as the 16-bit opcode), `arp_spa`, `arp_tpa`,
///   `arp_sha`, `arp_tha`.
///
/// Old values for the checksum arithmetic are read from the packet, so the
/// checksums stay consistent with the bytes even if `from` were stale.
/// Fields the packet does not carry are ignored.
pub fn commit(pkt: &mut [u8], layout: &Layout, from: &FlowKey, to: &FlowKey) {
    if pkt.len() < ETH_LEN || !layout.fits(pkt.len()) {
        return;
    }
    let changed = |s: Slot| from.get(s) != to.get(s);
    if changed(slot::DL_DST) {
        put_mac48(pkt, 0, to.get(slot::DL_DST));
    }
    if changed(slot::DL_SRC) {
        put_mac48(pkt, 6, to.get(slot::DL_SRC));
    }
    if layout.vlan && changed(slot::VLAN_TCI) && pkt.len() >= ETH_LEN + VLAN_TAG_LEN {
        let tci = to.get(slot::VLAN_TCI) as u16;
        if tci & VLAN_CFI != 0 {
            set_be16(pkt, 14, tci & !VLAN_CFI);
        }
    }
    match layout.proto {
        Proto::L2 => {}
        Proto::Arp => commit_arp(pkt, layout, from, to),
        _ => commit_ipv4(pkt, layout, from, to),
    }
}

fn commit_arp(pkt: &mut [u8], layout: &Layout, from: &FlowKey, to: &FlowKey) {
    let Some(b) = pkt.get_mut(layout.l3..layout.l3 + arp::LEN) else {
        return;
    };
    let Ok(mut a) = arp::ArpPacket::new_checked(b) else {
        return;
    };
    let changed = |s: Slot| from.get(s) != to.get(s);
    if changed(slot::NW_PROTO) {
        a.set_op(to.get(slot::NW_PROTO) as u16);
    }
    if changed(slot::NW_SRC) {
        a.set_spa(to.get(slot::NW_SRC) as u32);
    }
    if changed(slot::NW_DST) {
        a.set_tpa(to.get(slot::NW_DST) as u32);
    }
    if changed(slot::ARP_SHA) {
        a.set_sha(crate::wire::Mac::from_u64(to.get(slot::ARP_SHA)));
    }
    if changed(slot::ARP_THA) {
        a.set_tha(crate::wire::Mac::from_u64(to.get(slot::ARP_THA)));
    }
}

/// Where an L4 checksum that covers the IPv4 pseudo-header lives.
#[derive(Clone, Copy)]
pub(super) enum PseudoCsum {
    /// No L4 checksum to fix (other protocol, ICMP, later fragment, or
    /// the header is not present).
    None,
    /// TCP checksum at this offset.
    Tcp(usize),
    /// UDP checksum at this offset (0 = none, left alone).
    Udp(usize),
}

/// OVS's `packet_set_ipv4_addr`: store `new` at `off` (an address in an
/// IPv4 header whose checksum is at `ip_csum`), fixing the L4 checksum for
/// the pseudo-header first.
pub(super) fn set_ipv4_addr(pkt: &mut [u8], off: usize, ip_csum: usize, l4: PseudoCsum, new: u32) {
    let old = be32(pkt, off);
    if old == new {
        return;
    }
    match l4 {
        PseudoCsum::Tcp(c) => {
            let v = update32(be16(pkt, c), old, new);
            set_be16(pkt, c, v);
        }
        PseudoCsum::Udp(c) => {
            let cur = be16(pkt, c);
            if cur != 0 {
                set_be16(pkt, c, checksum::udp_wire(update32(cur, old, new)));
            }
        }
        PseudoCsum::None => {}
    }
    let v = update32(be16(pkt, ip_csum), old, new);
    set_be16(pkt, ip_csum, v);
    set_be32(pkt, off, new);
}

/// OVS's `packet_set_tcp_port`/`packet_set_udp_port`: set both ports at
/// `l4`, adjusting the checksum at `csum` (if any).
pub(super) fn set_ports(pkt: &mut [u8], l4: usize, csum: PseudoCsum, sport: u16, dport: u16) {
    let c_off = match csum {
        PseudoCsum::Tcp(c) => Some(c),
        PseudoCsum::Udp(c) if be16(pkt, c) != 0 => Some(c),
        _ => None,
    };
    for (off, new) in [(l4, sport), (l4 + 2, dport)] {
        let old = be16(pkt, off);
        if old != new {
            if let Some(c) = c_off {
                let v = update16(be16(pkt, c), old, new);
                set_be16(pkt, c, v);
            }
            set_be16(pkt, off, new);
        }
    }
    if let (PseudoCsum::Udp(c), Some(_)) = (csum, c_off) {
        // A UDP checksum that was in use must not become "none" (RFC 768).
        if be16(pkt, c) == 0 {
            set_be16(pkt, c, 0xffff);
        }
    }
}

/// The L4 checksum location of the outer packet, for a parsed layout.
pub(super) fn outer_pseudo(layout: &Layout) -> PseudoCsum {
    match layout.proto {
        Proto::Tcp => PseudoCsum::Tcp(layout.l4 + tcp::field::CHECKSUM),
        Proto::Udp => PseudoCsum::Udp(layout.l4 + udp::field::CHECKSUM),
        _ => PseudoCsum::None,
    }
}

fn commit_ipv4(pkt: &mut [u8], layout: &Layout, from: &FlowKey, to: &FlowKey) {
    let l3 = layout.l3;
    let l4 = layout.l4;
    if l3 + ipv4::MIN_HEADER_LEN > layout.ip_end {
        return;
    }
    let changed = |s: Slot| from.get(s) != to.get(s);
    let ip_csum = l3 + ipv4::field::CHECKSUM;
    let pseudo = outer_pseudo(layout);
    if changed(slot::NW_SRC) {
        let v = to.get(slot::NW_SRC) as u32;
        set_ipv4_addr(pkt, l3 + ipv4::field::SRC, ip_csum, pseudo, v);
    }
    if changed(slot::NW_DST) {
        let v = to.get(slot::NW_DST) as u32;
        set_ipv4_addr(pkt, l3 + ipv4::field::DST, ip_csum, pseudo, v);
    }
    if changed(slot::NW_TOS) {
        let old = pkt[l3 + ipv4::field::TOS];
        let new = to.get(slot::NW_TOS) as u8;
        if old != new {
            // TOS is the low byte of the header's first word.
            let v = update16(be16(pkt, ip_csum), old as u16, new as u16);
            set_be16(pkt, ip_csum, v);
            pkt[l3 + ipv4::field::TOS] = new;
        }
    }
    if changed(slot::NW_TTL) {
        let old = pkt[l3 + ipv4::field::TTL];
        let new = to.get(slot::NW_TTL) as u8;
        if old != new {
            // TTL is the high byte of the TTL/protocol word.
            let v = update16(be16(pkt, ip_csum), (old as u16) << 8, (new as u16) << 8);
            set_be16(pkt, ip_csum, v);
            pkt[l3 + ipv4::field::TTL] = new;
        }
    }
    let ports_changed = changed(slot::TP_SRC) || changed(slot::TP_DST);
    if !ports_changed {
        return;
    }
    // OVS commits L4 ports with a *masked* set action: only the changed
    // field is written, the other keeps the packet's current value (which
    // may differ from the flow's, e.g. after NAT; random differential case
    // seed 0xbeef #380).
    let pick = |s: crate::key::Slot, cur: u16| if changed(s) { to.get(s) as u16 } else { cur };
    match layout.proto {
        Proto::Tcp | Proto::Udp => {
            let (sport, dport) = (
                pick(slot::TP_SRC, be16(pkt, l4)),
                pick(slot::TP_DST, be16(pkt, l4 + 2)),
            );
            set_ports(pkt, l4, pseudo, sport, dport)
        }
        Proto::Icmp => {
            let old = be16(pkt, l4);
            let ty = if changed(slot::TP_SRC) {
                to.get(slot::TP_SRC) as u16 & 0xff
            } else {
                old >> 8
            };
            let code = if changed(slot::TP_DST) {
                to.get(slot::TP_DST) as u16 & 0xff
            } else {
                old & 0xff
            };
            let new = ty << 8 | code;
            if old != new {
                let c = l4 + icmp::field::CHECKSUM;
                let v = update16(be16(pkt, c), old, new);
                set_be16(pkt, c, v);
                set_be16(pkt, l4, new);
            }
        }
        _ => {}
    }
}
