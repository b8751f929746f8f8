//! From packet bytes to a flow key and back: [`extract`] fills the header
//! fields of a [`FlowKey`] exactly as OVS's `flow_extract` (lib/flow.c,
//! `miniflow_extract`) would, [`commit`] writes changed header fields back
//! into the bytes as OVS's `odp-execute` set actions do (lib/packets.c),
//! [`ct_packet`] gives conntrack its view of the packet, and
//! [`apply_rewrite`] applies conntrack's NAT as lib/conntrack.c does.
//!
//! # A packet's walk
//!
//! Take a tagged TCP SYN, `02:..:01 > 02:..:02, vlan 100, 10.0.0.1:40000 >
//! 10.0.0.2:80`. [`extract`] reads the MACs, sees TPID 0x8100 and stores
//! `vlan_tci = 0x1064` (the CFI bit 0x1000 marks "tagged", OVS's
//! convention), takes `dl_type = 0x0800` from behind the tag, and records
//! `l3 = 18` in the [`Layout`]. The IPv4 header passes the sanity checks
//! below; its addresses, TOS byte, TTL and protocol go into the key, and
//! `ip_end = l3 + total length` marks where the IP packet stops (anything
//! after is Ethernet padding, kept but never parsed or checksummed). The
//! TCP header at `l4 = l3 + ihl*4` gives the ports and the 12 flag bits.
//!
//! The pipeline then matches and rewrites the key; say it sets `nw_dst`.
//! [`commit`] compares the original key with the final one and writes only
//! what differs: the new address, the IPv4 header checksum and the TCP
//! checksum (pseudo-header) adjusted by RFC 1624 increments. A `ct()` action
//! gets [`ct_packet`]: the 5-tuple, TCP sequence facts and whether the
//! checksums verify; if conntrack answers with a NAT [`Rewrite`],
//! [`apply_rewrite`] patches addresses and ports the same incremental way.
//! The layout stays valid throughout: nothing here changes a length.
//!
//! # Malformed packets: flowpath drops them
//!
//! OVS forwards a malformed packet with a partial flow key (the fields it
//! could not parse left zero), which can then match flows meant for other
//! packets. flowpath deliberately drops instead, with a named
//! [`DropReason`]; this is a documented deviation. Precisely:
//!
//! | condition | reason | OVS |
//! |---|---|---|
//! | frame < 14 bytes | `EthTruncated` | empty key |
//! | VLAN TPID (0x8100/0x88a8) but frame < 18 bytes | `VlanTruncated` | `dl_type=0x8100`, no tag |
//! | ARP/RARP body < 28 bytes | `ArpTruncated` | L2 fields only |
//! | IPv4 with < 20 bytes, version != 4, IHL < 5, or IHL*4 beyond the frame | `Ipv4Malformed` | L2 fields only (OVS never checks the version) |
//! | IPv4 total length < IHL*4 or beyond the frame | `Ipv4BadLength` | L2 fields only |
//! | TCP (not a later fragment) with < 20 bytes, data offset < 5, or header beyond the IP end | `TcpMalformed` | no L4 fields |
//! | UDP with < 8 bytes | `UdpMalformed` | no L4 fields |
//! | ICMP with < 8 bytes | `IcmpMalformed` | no L4 fields (OVS's `ICMP_HEADER_LEN` is 8) |
//! | IGMP with < 8 bytes | `IgmpMalformed` | no L4 fields |
//!
//! Not drops: trailing bytes after the IP total length (Ethernet padding;
//! outputs keep the received length); ARP whose hardware/protocol types are
//! not Ethernet/IPv4 (L2 fields only, as OVS); an ARP opcode above 255 (no
//! `arp_op`, as OVS); ICMP errors whose quoted packet is short (the key
//! never looks inside; [`ct_packet`] reports them invalid, as OVS's
//! conntrack does); later fragments (no L4 fields, as OVS); IPv6 and every
//! other ethertype (L2 fields and `dl_type` only); 802.3 frames (OVS's LLC
//! rule: SNAP with OUI 0 yields the encapsulated ethertype, anything else
//! `dl_type=0x05ff`); a second VLAN tag (OVS's default `vlan-limit=1`: the
//! inner TPID becomes `dl_type`).
//!
//! # Checksums
//!
//! Every rewrite adjusts checksums incrementally (RFC 1624, see
//! [`crate::wire::checksum`]), never recomputes them, so a packet that
//! arrived with a wrong checksum leaves wrong by the same amount, as through
//! OVS. The one exception is OVS's own: NAT of an ICMP error recomputes the
//! ICMP checksum over the whole message (lib/conntrack.c
//! `nat_inner_packet`). A UDP checksum of 0 means "none" and stays 0; an
//! updated UDP checksum that comes out 0 is stored as 0xffff (RFC 768).
//!
//! None of these functions allocates, and none panics, whatever the bytes
//! (a property test and the `extract` fuzz target check that).

use crate::drop::DropReason;
use crate::key::{FlowKey, eth_type, frag, ip_proto, slot};
use crate::wire::ethernet::{ETHERTYPE_MIN, HEADER_LEN as ETH_LEN, VLAN_TAG_LEN, is_vlan_tpid};
use crate::wire::{arp, be16, be32, icmp, igmp, ipv4, tcp, udp};

mod commit;
mod ct;
#[cfg(test)]
mod tests;

pub use commit::commit;
pub use ct::{apply_rewrite, ct_packet, refresh_ct_packet};

/// `dl_type` OVS gives 802.3 frames without a SNAP-encapsulated ethertype
/// (`FLOW_DL_TYPE_NONE`).
pub const DL_TYPE_NONE: u16 = 0x05ff;
/// The CFI bit of `vlan_tci`, which in the key means "a tag is present".
pub const VLAN_CFI: u16 = 0x1000;
/// LLC + SNAP header with OUI 00-00-00, before the 2-byte ethertype.
const LLC_SNAP: [u8; 6] = [0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00];

/// What [`extract`] found after the Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Nothing parsed beyond L2 (IPv6, other ethertypes, non-Ethernet/IPv4
    /// ARP).
    L2,
    /// Ethernet/IPv4 ARP (or RARP).
    Arp,
    /// IPv4 whose L4 header is not parsed: another protocol, or a later
    /// fragment.
    Ipv4,
    /// IPv4 + complete TCP header.
    Tcp,
    /// IPv4 + UDP header.
    Udp,
    /// IPv4 + ICMP header (8 bytes).
    Icmp,
    /// IPv4 + IGMP header (8 bytes).
    Igmp,
}

/// Where the headers are, as [`extract`] found them. Offsets are from the
/// start of the frame. Valid for the packet it was extracted from for as
/// long as its length does not change (nothing in flowpath changes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Start of the L3 header (14, 18 with a tag, +8 after LLC/SNAP).
    pub l3: usize,
    /// Start of the L4 header: `l3 + ihl*4` for IPv4, `l3 + 28` for ARP,
    /// `l3` otherwise.
    pub l4: usize,
    /// End of the IPv4 packet, `l3 + total length` (Ethernet padding may
    /// follow); the end of the ARP body for ARP; the frame length otherwise.
    pub ip_end: usize,
    /// What was parsed.
    pub proto: Proto,
    /// A VLAN tag is present (at bytes 12..16).
    pub vlan: bool,
    /// IPv4 fragment (MF set or offset non-zero).
    pub fragment: bool,
    /// IPv4 later fragment (offset non-zero): no L4 header.
    pub later_fragment: bool,
}

impl Layout {
    /// Whether the layout fits a packet of `len` bytes, with room for the
    /// headers its `proto` promises. A layout from [`extract`] on the same
    /// packet always does; checking makes [`commit`], [`ct_packet`] and
    /// [`apply_rewrite`] total even for a layout built by hand.
    #[inline]
    pub(crate) fn fits(&self, len: usize) -> bool {
        let l4_min = match self.proto {
            Proto::Tcp => tcp::MIN_HEADER_LEN,
            Proto::Udp => udp::HEADER_LEN,
            Proto::Icmp => icmp::HEADER_LEN,
            Proto::Igmp => igmp::HEADER_LEN,
            Proto::L2 | Proto::Arp | Proto::Ipv4 => 0,
        };
        let l3_min = match self.proto {
            Proto::L2 => 0,
            Proto::Arp => arp::LEN,
            _ => ipv4::MIN_HEADER_LEN,
        };
        self.l3 >= ETH_LEN
            && (!self.vlan || self.l3 >= ETH_LEN + VLAN_TAG_LEN)
            && self.l3.saturating_add(l3_min) <= self.l4
            && self.l4.saturating_add(l4_min) <= self.ip_end
            && self.ip_end <= len
    }

    /// Whether an IPv4 header was parsed.
    #[inline]
    pub fn is_ipv4(&self) -> bool {
        matches!(
            self.proto,
            Proto::Ipv4 | Proto::Tcp | Proto::Udp | Proto::Icmp | Proto::Igmp
        )
    }
}

#[inline]
pub(crate) fn mac48(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes([
        0,
        0,
        b[off],
        b[off + 1],
        b[off + 2],
        b[off + 3],
        b[off + 4],
        b[off + 5],
    ])
}

#[inline]
pub(crate) fn put_mac48(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 6].copy_from_slice(&v.to_be_bytes()[2..]);
}

/// Fill every header field of `key` from `pkt` received on `in_port`, as
/// OVS's `flow_extract` would, and return where the headers are. Metadata
/// (registers, `metadata`, `pkt_mark`, conntrack fields, `recirc_id`,
/// `conj_id`) is left untouched. On `Err` the packet must be dropped and the
/// key's header fields are unspecified. See the module docs for the exact
/// drop rules.
pub fn extract(pkt: &[u8], in_port: u32, key: &mut FlowKey) -> Result<Layout, DropReason> {
    if pkt.len() < ETH_LEN {
        return Err(DropReason::EthTruncated);
    }
    let dl_dst = mac48(pkt, 0);
    let dl_src = mac48(pkt, 6);
    let mut dl_type = be16(pkt, 12);
    let mut l3 = ETH_LEN;
    let mut tci = 0u16;
    let vlan = is_vlan_tpid(dl_type);
    if vlan {
        if pkt.len() < ETH_LEN + VLAN_TAG_LEN {
            return Err(DropReason::VlanTruncated);
        }
        tci = be16(pkt, 14) | VLAN_CFI;
        dl_type = be16(pkt, 16);
        l3 += VLAN_TAG_LEN;
    }
    if dl_type < ETHERTYPE_MIN {
        // 802.3 length field: only LLC/SNAP with OUI 0 carries an ethertype.
        let snap = pkt.get(l3..l3 + 8);
        match snap {
            Some(s) if s[..6] == LLC_SNAP && be16(s, 6) >= ETHERTYPE_MIN => {
                dl_type = be16(s, 6);
                l3 += 8;
            }
            _ => dl_type = DL_TYPE_NONE,
        }
    }

    // Header words of the key, built locally and stored at the end.
    let mut nw_tos = 0u64;
    let mut nw_proto = 0u64;
    let mut nw_frag = 0u64;
    let mut nw_ttl = 0u64;
    let mut nw_src = 0u64;
    let mut nw_dst = 0u64;
    let mut tp_src = 0u64;
    let mut tp_dst = 0u64;
    let mut tcp_flags = 0u64;
    let mut arp_sha = 0u64;
    let mut arp_tha = 0u64;
    let mut layout = Layout {
        l3,
        l4: l3,
        ip_end: pkt.len(),
        proto: Proto::L2,
        vlan,
        fragment: false,
        later_fragment: false,
    };

    if dl_type == eth_type::IPV4 {
        let rem = pkt.len() - l3;
        if rem < ipv4::MIN_HEADER_LEN {
            return Err(DropReason::Ipv4Malformed);
        }
        let vihl = pkt[l3];
        let ihl = ((vihl & 0x0f) as usize) * 4;
        if vihl >> 4 != 4 || ihl < ipv4::MIN_HEADER_LEN || ihl > rem {
            return Err(DropReason::Ipv4Malformed);
        }
        let tot = be16(pkt, l3 + ipv4::field::LENGTH) as usize;
        if tot < ihl || tot > rem || rem - tot > u16::MAX as usize {
            return Err(DropReason::Ipv4BadLength);
        }
        let ff = be16(pkt, l3 + ipv4::field::FLG_OFF);
        let fragment = ff & (ipv4::FLAG_MF | ipv4::OFFSET_MASK) != 0;
        let later = ff & ipv4::OFFSET_MASK != 0;
        nw_tos = pkt[l3 + ipv4::field::TOS] as u64;
        nw_ttl = pkt[l3 + ipv4::field::TTL] as u64;
        let proto = pkt[l3 + ipv4::field::PROTOCOL];
        nw_proto = proto as u64;
        nw_src = be32(pkt, l3 + ipv4::field::SRC) as u64;
        nw_dst = be32(pkt, l3 + ipv4::field::DST) as u64;
        nw_frag = if fragment {
            (frag::ANY | if later { frag::LATER } else { 0 }) as u64
        } else {
            0
        };
        let l4 = l3 + ihl;
        let ip_end = l3 + tot;
        let l4_len = tot - ihl;
        layout.l4 = l4;
        layout.ip_end = ip_end;
        layout.fragment = fragment;
        layout.later_fragment = later;
        layout.proto = Proto::Ipv4;
        if !later {
            match proto {
                ip_proto::TCP => {
                    if l4_len < tcp::MIN_HEADER_LEN {
                        return Err(DropReason::TcpMalformed);
                    }
                    let hl = (pkt[l4 + tcp::field::OFF_FLAGS] >> 4) as usize * 4;
                    if hl < tcp::MIN_HEADER_LEN || hl > l4_len {
                        return Err(DropReason::TcpMalformed);
                    }
                    tp_src = be16(pkt, l4 + tcp::field::SRC_PORT) as u64;
                    tp_dst = be16(pkt, l4 + tcp::field::DST_PORT) as u64;
                    tcp_flags = (be16(pkt, l4 + tcp::field::OFF_FLAGS) & tcp::FLAGS_MASK) as u64;
                    layout.proto = Proto::Tcp;
                }
                ip_proto::UDP => {
                    if l4_len < udp::HEADER_LEN {
                        return Err(DropReason::UdpMalformed);
                    }
                    tp_src = be16(pkt, l4 + udp::field::SRC_PORT) as u64;
                    tp_dst = be16(pkt, l4 + udp::field::DST_PORT) as u64;
                    layout.proto = Proto::Udp;
                }
                ip_proto::ICMP => {
                    if l4_len < icmp::HEADER_LEN {
                        return Err(DropReason::IcmpMalformed);
                    }
                    tp_src = pkt[l4 + icmp::field::TYPE] as u64;
                    tp_dst = pkt[l4 + icmp::field::CODE] as u64;
                    layout.proto = Proto::Icmp;
                }
                ip_proto::IGMP => {
                    if l4_len < igmp::HEADER_LEN {
                        return Err(DropReason::IgmpMalformed);
                    }
                    tp_src = pkt[l4 + igmp::field::TYPE] as u64;
                    tp_dst = pkt[l4 + igmp::field::CODE] as u64;
                    layout.proto = Proto::Igmp;
                }
                _ => {}
            }
        }
    } else if dl_type == eth_type::ARP || dl_type == arp::ETHERTYPE_RARP {
        let Some(body) = pkt.get(l3..l3 + arp::LEN) else {
            return Err(DropReason::ArpTruncated);
        };
        let a = match arp::ArpPacket::new_checked(body) {
            Ok(a) => a,
            Err(_) => return Err(DropReason::ArpTruncated),
        };
        if a.is_eth_ipv4() {
            nw_src = a.spa() as u64;
            nw_dst = a.tpa() as u64;
            let op = a.op();
            if op <= 0xff {
                nw_proto = op as u64;
            }
            arp_sha = a.sha().to_u64();
            arp_tha = a.tha().to_u64();
            layout.proto = Proto::Arp;
            layout.l4 = l3 + arp::LEN;
            layout.ip_end = l3 + arp::LEN;
        }
    }

    let keep = |w: u64, s: crate::key::Slot| w & !s.word_mask();
    key.w[0] = (in_port as u64) << 32 | (dl_type as u64) << 16 | tci as u64;
    key.w[1] = nw_tos << 56 | nw_proto << 48 | dl_dst;
    key.w[2] = nw_frag << 56 | nw_ttl << 48 | dl_src;
    key.w[3] = nw_src << 32 | nw_dst;
    key.w[4] =
        (key.w[4] & slot::CT_ZONE.word_mask()) | tp_src << 48 | tp_dst << 32 | tcp_flags << 16;
    key.w[5] = keep(key.w[5], slot::ARP_SHA) | arp_sha;
    key.w[6] = keep(key.w[6], slot::ARP_THA) | arp_tha;
    Ok(layout)
}
