//! The flow key: every field the pipeline can match or set, in a fixed
//! layout of 64-bit words.
//!
//! The layout is the contract between packet parsing (which fills the key),
//! the field registry ([`crate::pipeline::fields`], which names bit ranges of
//! it), the classifier (which compares `key & mask` word by word) and the flow
//! caches (which hash only the words a megaflow mask touches).
//!
//! Every field lives inside one word (ct_label spans two, as two halves), so a
//! field read is a shift and a mask. Values are host integers: `nw_src` holds
//! the IPv4 address as a `u32` whose most significant byte is the first octet,
//! MAC addresses hold the first octet in bits 40..48, exactly as OVS prints
//! them. Header fields of protocols the packet does not carry are zero.
//!
//! | word | bits 63..0 |
//! |------|-----------|
//! | 0 | in_port 63..32, dl_type 31..16, vlan_tci 15..0 |
//! | 1 | nw_tos (whole TOS byte) 63..56, nw_proto 55..48, dl_dst 47..0 |
//! | 2 | nw_frag 63..56, nw_ttl 55..48, dl_src 47..0 |
//! | 3 | nw_src 63..32, nw_dst 31..0 (ARP: spa, tpa) |
//! | 4 | tp_src 63..48, tp_dst 47..32, tcp_flags 31..16, ct_zone 15..0 |
//! | 5 | ct_nw_proto 63..56, ct_state 55..48, arp_sha 47..0 |
//! | 6 | recirc_id 63..48 (internal), arp_tha 47..0 |
//! | 7..=14 | xreg0..xreg7 (reg2N in 63..32, reg2N+1 in 31..0) |
//! | 15 | pkt_mark 63..32, ct_mark 31..0 |
//! | 16 | ct_label bits 127..64 |
//! | 17 | ct_label bits 63..0 |
//! | 18 | conj_id 63..32, ct_tp_src 31..16, ct_tp_dst 15..0 |
//! | 19 | ct_nw_src 63..32, ct_nw_dst 31..0 |
//! | 20 | metadata (OpenFlow metadata, 64 bits) |
//!
//! `nw_proto` carries the ARP opcode for ARP packets and `tp_src`/`tp_dst`
//! carry ICMP type/code for ICMP, as in OVS's `struct flow`.

/// Number of 64-bit words in a [`FlowKey`].
pub const KEY_WORDS: usize = 21;

/// OpenFlow port number of the bridge's local (internal) port, `LOCAL`.
/// flowpath uses the OpenFlow 1.0 numbering that `ovs-ofctl` prints.
pub const OFPP_LOCAL: u32 = 0xfffe;
/// `IN_PORT` pseudo-port.
pub const OFPP_IN_PORT: u32 = 0xfff8;
/// `CONTROLLER` pseudo-port.
pub const OFPP_CONTROLLER: u32 = 0xfffd;
/// `NONE`/`ANY` pseudo-port.
pub const OFPP_NONE: u32 = 0xffff;

/// Ethertypes the key distinguishes.
pub mod eth_type {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IPv6 (classified only, never parsed further).
    pub const IPV6: u16 = 0x86dd;
}

/// IP protocol numbers the key distinguishes.
pub mod ip_proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// IGMP.
    pub const IGMP: u8 = 2;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// `nw_frag` bits, as OVS defines them.
pub mod frag {
    /// The packet is a fragment (any).
    pub const ANY: u8 = 1;
    /// The packet is a later fragment (offset != 0).
    pub const LATER: u8 = 2;
}

/// Connection tracking state bits (`ct_state`), the OVS `CS_*` values
/// (defined once, by conntrack, which produces them).
pub use conntrack::cs as ct_state;

/// A location in the key: `bits` wide, starting at bit `shift` of `word`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    /// Word index.
    pub word: u8,
    /// Bit position of the field's least significant bit.
    pub shift: u8,
    /// Width in bits (1..=64).
    pub bits: u8,
}

impl Slot {
    /// Mask of the field, in place within its word.
    #[inline]
    pub const fn word_mask(self) -> u64 {
        (if self.bits == 64 {
            u64::MAX
        } else {
            (1u64 << self.bits) - 1
        }) << self.shift
    }
}

macro_rules! slots {
    ($($(#[$m:meta])* $name:ident = ($w:expr, $s:expr, $b:expr);)*) => {
        /// Field locations in the key.
        pub mod slot {
            use super::Slot;
            $( $(#[$m])* pub const $name: Slot = Slot { word: $w, shift: $s, bits: $b }; )*
        }
    };
}

slots! {
    /// Ingress OpenFlow port.
    IN_PORT = (0, 32, 32);
    /// Ethertype (after any VLAN tag).
    DL_TYPE = (0, 16, 16);
    /// 802.1Q TCI, with the CFI bit (0x1000) set when a tag is present.
    VLAN_TCI = (0, 0, 16);
    /// Whole IPv4 TOS byte (DSCP and ECN).
    NW_TOS = (1, 56, 8);
    /// IP protocol, or ARP opcode (low 8 bits).
    NW_PROTO = (1, 48, 8);
    /// Ethernet destination.
    DL_DST = (1, 0, 48);
    /// Fragment bits, see [`super::frag`].
    NW_FRAG = (2, 56, 8);
    /// IPv4 TTL.
    NW_TTL = (2, 48, 8);
    /// Ethernet source.
    DL_SRC = (2, 0, 48);
    /// IPv4 source, or ARP SPA.
    NW_SRC = (3, 32, 32);
    /// IPv4 destination, or ARP TPA.
    NW_DST = (3, 0, 32);
    /// TCP/UDP source port, or ICMP type.
    TP_SRC = (4, 48, 16);
    /// TCP/UDP destination port, or ICMP code.
    TP_DST = (4, 32, 16);
    /// TCP flags (12 bits used).
    TCP_FLAGS = (4, 16, 16);
    /// Conntrack zone of the last ct().
    CT_ZONE = (4, 0, 16);
    /// Protocol of the conntrack original tuple.
    CT_NW_PROTO = (5, 56, 8);
    /// Conntrack state bits.
    CT_STATE = (5, 48, 8);
    /// ARP source hardware address.
    ARP_SHA = (5, 0, 48);
    /// Recirculation id (internal; never matched by users).
    RECIRC_ID = (6, 48, 16);
    /// ARP target hardware address.
    ARP_THA = (6, 0, 48);
    /// Packet mark.
    PKT_MARK = (15, 32, 32);
    /// Conntrack mark.
    CT_MARK = (15, 0, 32);
    /// Conntrack label, high half.
    CT_LABEL_HI = (16, 0, 64);
    /// Conntrack label, low half.
    CT_LABEL_LO = (17, 0, 64);
    /// Conjunction id.
    CONJ_ID = (18, 32, 32);
    /// Conntrack original-direction source port.
    CT_TP_SRC = (18, 16, 16);
    /// Conntrack original-direction destination port.
    CT_TP_DST = (18, 0, 16);
    /// Conntrack original-direction source address.
    CT_NW_SRC = (19, 32, 32);
    /// Conntrack original-direction destination address.
    CT_NW_DST = (19, 0, 32);
    /// OpenFlow metadata.
    METADATA = (20, 0, 64);
}

/// Location of register `n` (0..16): reg2N is the high half of xreg N.
#[inline]
pub const fn reg_slot(n: usize) -> Slot {
    Slot {
        word: 7 + (n / 2) as u8,
        shift: if n & 1 == 0 { 32 } else { 0 },
        bits: 32,
    }
}

/// Location of extended register `n` (0..8).
#[inline]
pub const fn xreg_slot(n: usize) -> Slot {
    Slot {
        word: 7 + n as u8,
        shift: 0,
        bits: 64,
    }
}

/// A flow key (or a mask over one): [`KEY_WORDS`] words, see the module docs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// The words, laid out as the module docs describe.
    pub w: [u64; KEY_WORDS],
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == KEY_WORDS * 8);

impl FlowKey {
    /// An all-zero key.
    pub const ZERO: FlowKey = FlowKey { w: [0; KEY_WORDS] };

    /// Read the field at `s`.
    #[inline]
    pub fn get(&self, s: Slot) -> u64 {
        (self.w[s.word as usize] & s.word_mask()) >> s.shift
    }

    /// Write `v` (truncated to the field's width) into the field at `s`.
    #[inline]
    pub fn set(&mut self, s: Slot, v: u64) {
        let m = s.word_mask();
        let w = &mut self.w[s.word as usize];
        *w = (*w & !m) | ((v << s.shift) & m);
    }

    /// Set the bits of `s` to all ones (for building masks).
    #[inline]
    pub fn set_all(&mut self, s: Slot) {
        self.w[s.word as usize] |= s.word_mask();
    }

    /// `self & mask`, word by word.
    #[inline]
    pub fn masked(&self, mask: &FlowKey) -> FlowKey {
        let mut out = FlowKey::ZERO;
        for i in 0..KEY_WORDS {
            out.w[i] = self.w[i] & mask.w[i];
        }
        out
    }

    /// Register `n` (0..16).
    #[inline]
    pub fn reg(&self, n: usize) -> u32 {
        self.get(reg_slot(n)) as u32
    }

    /// The 128-bit conntrack label.
    #[inline]
    pub fn ct_label(&self) -> u128 {
        ((self.get(slot::CT_LABEL_HI) as u128) << 64) | self.get(slot::CT_LABEL_LO) as u128
    }

    /// Set the 128-bit conntrack label.
    #[inline]
    pub fn set_ct_label(&mut self, v: u128) {
        self.set(slot::CT_LABEL_HI, (v >> 64) as u64);
        self.set(slot::CT_LABEL_LO, v as u64);
    }

    /// Clear every conntrack field (what OVS does when a packet leaves a ct
    /// branch untracked).
    pub fn clear_ct(&mut self) {
        for s in [
            slot::CT_STATE,
            slot::CT_ZONE,
            slot::CT_MARK,
            slot::CT_LABEL_HI,
            slot::CT_LABEL_LO,
            slot::CT_NW_PROTO,
            slot::CT_NW_SRC,
            slot::CT_NW_DST,
            slot::CT_TP_SRC,
            slot::CT_TP_DST,
        ] {
            self.set(s, 0);
        }
    }
}

impl core::fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FlowKey[")?;
        for (i, w) in self.w.iter().enumerate() {
            if *w != 0 {
                write!(f, " {i}:{w:#x}")?;
            }
        }
        f.write_str(" ]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_do_not_overlap() {
        let mut all: Vec<Slot> = vec![
            slot::IN_PORT,
            slot::DL_TYPE,
            slot::VLAN_TCI,
            slot::NW_TOS,
            slot::NW_PROTO,
            slot::DL_DST,
            slot::NW_FRAG,
            slot::NW_TTL,
            slot::DL_SRC,
            slot::NW_SRC,
            slot::NW_DST,
            slot::TP_SRC,
            slot::TP_DST,
            slot::TCP_FLAGS,
            slot::CT_ZONE,
            slot::CT_NW_PROTO,
            slot::CT_STATE,
            slot::ARP_SHA,
            slot::RECIRC_ID,
            slot::ARP_THA,
            slot::PKT_MARK,
            slot::CT_MARK,
            slot::CT_LABEL_HI,
            slot::CT_LABEL_LO,
            slot::CONJ_ID,
            slot::CT_TP_SRC,
            slot::CT_TP_DST,
            slot::CT_NW_SRC,
            slot::CT_NW_DST,
            slot::METADATA,
        ];
        all.extend((0..16).map(reg_slot));
        let mut used = [0u64; KEY_WORDS];
        for s in all {
            assert!(s.shift as u32 + s.bits as u32 <= 64, "{s:?}");
            assert_eq!(used[s.word as usize] & s.word_mask(), 0, "{s:?} overlaps");
            used[s.word as usize] |= s.word_mask();
        }
    }

    #[test]
    fn get_set_roundtrip_and_truncate() {
        let mut k = FlowKey::ZERO;
        k.set(slot::NW_SRC, 0x0a00_0001);
        k.set(slot::DL_DST, 0xffff_aabb_ccdd_eeff);
        assert_eq!(k.get(slot::NW_SRC), 0x0a00_0001);
        assert_eq!(k.get(slot::DL_DST), 0xaabb_ccdd_eeff);
        assert_eq!(k.get(slot::NW_DST), 0);
        k.set(reg_slot(0), 0x1234);
        k.set(reg_slot(1), 0x5678);
        assert_eq!(k.get(xreg_slot(0)), 0x1234_0000_5678);
        k.set_ct_label(u128::MAX - 5);
        assert_eq!(k.ct_label(), u128::MAX - 5);
    }
}
