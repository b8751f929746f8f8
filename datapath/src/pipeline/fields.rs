//! The field registry: every matchable/settable field, with its `ovs-ofctl`
//! name, NXM/OXM aliases, location in the [`FlowKey`], prerequisites and
//! print format.
//!
//! One table serves the flow parser (names and aliases), `dump-flows`
//! (canonical names and formats), prerequisite checks (a field may only be
//! matched or set when the match pins the protocol that carries it, as OVS
//! requires), and the interpreter (where `load`/`move`/`set_field` write).

use crate::key::{self, FlowKey, Slot, reg_slot, slot, xreg_slot};

/// What protocol a field needs the match to establish first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prereq {
    /// No prerequisite.
    None,
    /// `dl_type=0x0800`.
    Ip,
    /// `dl_type=0x0806`.
    Arp,
    /// IPv4 and `nw_proto=6`.
    Tcp,
    /// IPv4 and `nw_proto=17`.
    Udp,
    /// IPv4 and `nw_proto` 6 or 17 (`tp_src`/`tp_dst`).
    TcpOrUdp,
    /// IPv4 and `nw_proto=1`.
    Icmp,
}

/// How a field's value is printed and parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Decimal.
    Dec,
    /// Hexadecimal with `0x`.
    Hex,
    /// Dotted IPv4.
    Ipv4,
    /// `aa:bb:cc:dd:ee:ff`.
    Mac,
    /// OpenFlow port (number, or `LOCAL`, `IN_PORT`...).
    Port,
    /// `+new+trk` style conntrack state flags.
    CtState,
    /// `+syn+ack` style TCP flags.
    TcpFlags,
    /// `no`/`first`/`later`/`yes`/`not_later`.
    Frag,
}

/// Which kind of mask a field accepts in a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maskable {
    /// Exact match only.
    No,
    /// Arbitrary bitwise mask.
    Bitwise,
}

/// Identifies a field. Ordered as `dump-flows` prints matches (after the
/// protocol shorthand), see [`FieldDef::print_order`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum FieldId {
    Reg(u8),
    XReg(u8),
    XXReg(u8),
    PktMark,
    CtState,
    CtZone,
    CtMark,
    CtLabel,
    CtNwSrc,
    CtNwDst,
    CtNwProto,
    CtTpSrc,
    CtTpDst,
    Metadata,
    ConjId,
    InPort,
    VlanTci,
    DlSrc,
    DlDst,
    DlType,
    NwSrc,
    NwDst,
    ArpSpa,
    ArpTpa,
    ArpOp,
    ArpSha,
    ArpTha,
    NwProto,
    NwTos,
    IpDscp,
    NwEcn,
    NwTtl,
    NwFrag,
    TpSrc,
    TpDst,
    TcpSrc,
    TcpDst,
    UdpSrc,
    UdpDst,
    IcmpType,
    IcmpCode,
    TcpFlags,
}

/// One field's description.
#[derive(Debug, Clone, Copy)]
pub struct FieldDef {
    /// The field.
    pub id: FieldId,
    /// Canonical `ovs-ofctl` name (what `dump-flows` prints).
    pub name: &'static str,
    /// Other accepted names: NXM/OXM names, `ovs-ofctl` synonyms.
    pub aliases: &'static [&'static str],
    /// Where the value lives. For 128-bit `ct_label` this is the low half and
    /// [`FieldDef::hi`] the high half.
    pub slot: Slot,
    /// High half of a field wider than 64 bits.
    pub hi: Option<Slot>,
    /// Width in bits as users see it.
    pub bits: u16,
    /// The user-visible value is the slot's value shifted left by this much
    /// (`nw_tos` is the DSCP bits of the TOS byte, printed in place).
    pub user_shift: u8,
    /// Mask kind accepted in a match.
    pub maskable: Maskable,
    /// Protocol prerequisite.
    pub prereq: Prereq,
    /// Print/parse format.
    pub format: Format,
    /// Whether actions may write it (`load`, `set_field`, `move` destination).
    pub writable: bool,
}

impl FieldDef {
    /// Read the user-visible value from a key.
    #[inline]
    pub fn read(&self, k: &FlowKey) -> u128 {
        let lo = k.get(self.slot) as u128;
        let v = match self.hi {
            Some(h) => ((k.get(h) as u128) << 64) | lo,
            None => lo,
        };
        v << self.user_shift
    }

    /// Write the user-visible value `v` into a key (truncated to the width).
    #[inline]
    pub fn write(&self, k: &mut FlowKey, v: u128) {
        let v = v >> self.user_shift;
        k.set(self.slot, v as u64);
        if let Some(h) = self.hi {
            k.set(h, (v >> 64) as u64);
        }
    }

    /// Set the key bits of `mask` (user-visible) to one, leaving the others
    /// (un-wildcarding `mask` in a wildcard mask).
    #[inline]
    pub fn or_mask(&self, k: &mut FlowKey, mask: u128) {
        let v = mask >> self.user_shift;
        k.set(self.slot, k.get(self.slot) | v as u64);
        if let Some(h) = self.hi {
            k.set(h, k.get(h) | (v >> 64) as u64);
        }
    }

    /// Write `v` under `mask` (both user-visible): only mask bits change.
    #[inline]
    pub fn write_masked(&self, k: &mut FlowKey, v: u128, mask: u128) {
        let old = self.read(k);
        self.write(k, (old & !mask) | (v & mask));
    }

    /// All-ones value of the field's width (user-visible).
    #[inline]
    pub fn full_mask(&self) -> u128 {
        let m = if self.bits >= 128 {
            u128::MAX
        } else {
            (1u128 << self.bits) - 1
        };
        m << self.user_shift
    }

    /// Whether this field is part of the packet's headers (writing it changes
    /// packet bytes) rather than metadata.
    pub fn is_header(&self) -> bool {
        !matches!(
            self.id,
            FieldId::Reg(_)
                | FieldId::XReg(_)
                | FieldId::XXReg(_)
                | FieldId::PktMark
                | FieldId::CtState
                | FieldId::CtZone
                | FieldId::CtMark
                | FieldId::CtLabel
                | FieldId::CtNwSrc
                | FieldId::CtNwDst
                | FieldId::CtNwProto
                | FieldId::CtTpSrc
                | FieldId::CtTpDst
                | FieldId::Metadata
                | FieldId::ConjId
                | FieldId::InPort
        )
    }
}

#[allow(clippy::too_many_arguments)]
const fn def(
    id: FieldId,
    name: &'static str,
    aliases: &'static [&'static str],
    slot: Slot,
    bits: u16,
    maskable: Maskable,
    prereq: Prereq,
    format: Format,
    writable: bool,
) -> FieldDef {
    FieldDef {
        id,
        name,
        aliases,
        slot,
        hi: None,
        bits,
        user_shift: 0,
        maskable,
        prereq,
        format,
        writable,
    }
}

use Format as F;
use Maskable as M;
use Prereq as P;

const fn s(word: u8, shift: u8, bits: u8) -> Slot {
    Slot { word, shift, bits }
}

/// The non-register fields. Registers are produced by [`lookup`] / [`get`].
static FIELDS: &[FieldDef] = &[
    def(
        FieldId::InPort,
        "in_port",
        &["NXM_OF_IN_PORT", "OXM_OF_IN_PORT"],
        slot::IN_PORT,
        32,
        M::No,
        P::None,
        F::Port,
        true,
    ),
    def(
        FieldId::DlSrc,
        "dl_src",
        &["eth_src", "NXM_OF_ETH_SRC", "OXM_OF_ETH_SRC"],
        slot::DL_SRC,
        48,
        M::Bitwise,
        P::None,
        F::Mac,
        true,
    ),
    def(
        FieldId::DlDst,
        "dl_dst",
        &["eth_dst", "NXM_OF_ETH_DST", "OXM_OF_ETH_DST"],
        slot::DL_DST,
        48,
        M::Bitwise,
        P::None,
        F::Mac,
        true,
    ),
    def(
        FieldId::DlType,
        "dl_type",
        &["eth_type", "NXM_OF_ETH_TYPE", "OXM_OF_ETH_TYPE"],
        slot::DL_TYPE,
        16,
        M::No,
        P::None,
        F::Hex,
        false,
    ),
    def(
        FieldId::VlanTci,
        "vlan_tci",
        &["NXM_OF_VLAN_TCI"],
        slot::VLAN_TCI,
        16,
        M::Bitwise,
        P::None,
        F::Hex,
        true,
    ),
    def(
        FieldId::NwSrc,
        "nw_src",
        &["ip_src", "NXM_OF_IP_SRC", "OXM_OF_IPV4_SRC"],
        slot::NW_SRC,
        32,
        M::Bitwise,
        P::Ip,
        F::Ipv4,
        true,
    ),
    def(
        FieldId::NwDst,
        "nw_dst",
        &["ip_dst", "NXM_OF_IP_DST", "OXM_OF_IPV4_DST"],
        slot::NW_DST,
        32,
        M::Bitwise,
        P::Ip,
        F::Ipv4,
        true,
    ),
    def(
        FieldId::ArpSpa,
        "arp_spa",
        &["NXM_OF_ARP_SPA", "OXM_OF_ARP_SPA"],
        slot::NW_SRC,
        32,
        M::Bitwise,
        P::Arp,
        F::Ipv4,
        true,
    ),
    def(
        FieldId::ArpTpa,
        "arp_tpa",
        &["NXM_OF_ARP_TPA", "OXM_OF_ARP_TPA"],
        slot::NW_DST,
        32,
        M::Bitwise,
        P::Arp,
        F::Ipv4,
        true,
    ),
    def(
        FieldId::ArpOp,
        "arp_op",
        &["NXM_OF_ARP_OP", "OXM_OF_ARP_OP"],
        slot::NW_PROTO,
        16,
        M::No,
        P::Arp,
        F::Dec,
        true,
    ),
    def(
        FieldId::ArpSha,
        "arp_sha",
        &["NXM_NX_ARP_SHA", "OXM_OF_ARP_SHA"],
        slot::ARP_SHA,
        48,
        M::Bitwise,
        P::Arp,
        F::Mac,
        true,
    ),
    def(
        FieldId::ArpTha,
        "arp_tha",
        &["NXM_NX_ARP_THA", "OXM_OF_ARP_THA"],
        slot::ARP_THA,
        48,
        M::Bitwise,
        P::Arp,
        F::Mac,
        true,
    ),
    def(
        FieldId::NwProto,
        "nw_proto",
        &["ip_proto", "NXM_OF_IP_PROTO", "OXM_OF_IP_PROTO"],
        slot::NW_PROTO,
        8,
        M::No,
        P::Ip,
        F::Dec,
        false,
    ),
    FieldDef {
        user_shift: 2,
        ..def(
            FieldId::NwTos,
            "nw_tos",
            &["NXM_OF_IP_TOS"],
            s(1, 58, 6),
            8,
            M::No,
            P::Ip,
            F::Dec,
            true,
        )
    },
    def(
        FieldId::IpDscp,
        "ip_dscp",
        &["OXM_OF_IP_DSCP"],
        s(1, 58, 6),
        6,
        M::No,
        P::Ip,
        F::Dec,
        true,
    ),
    def(
        FieldId::NwEcn,
        "nw_ecn",
        &["ip_ecn", "NXM_NX_IP_ECN", "OXM_OF_IP_ECN"],
        s(1, 56, 2),
        2,
        M::No,
        P::Ip,
        F::Dec,
        true,
    ),
    def(
        FieldId::NwTtl,
        "nw_ttl",
        &["NXM_NX_IP_TTL"],
        slot::NW_TTL,
        8,
        M::No,
        P::Ip,
        F::Dec,
        true,
    ),
    def(
        FieldId::NwFrag,
        "nw_frag",
        &["ip_frag", "NXM_NX_IP_FRAG"],
        s(2, 56, 2),
        2,
        M::Bitwise,
        P::Ip,
        F::Frag,
        false,
    ),
    def(
        FieldId::TpSrc,
        "tp_src",
        &[],
        slot::TP_SRC,
        16,
        M::Bitwise,
        P::TcpOrUdp,
        F::Dec,
        true,
    ),
    def(
        FieldId::TpDst,
        "tp_dst",
        &[],
        slot::TP_DST,
        16,
        M::Bitwise,
        P::TcpOrUdp,
        F::Dec,
        true,
    ),
    def(
        FieldId::TcpSrc,
        "tcp_src",
        &["NXM_OF_TCP_SRC", "OXM_OF_TCP_SRC"],
        slot::TP_SRC,
        16,
        M::Bitwise,
        P::Tcp,
        F::Dec,
        true,
    ),
    def(
        FieldId::TcpDst,
        "tcp_dst",
        &["NXM_OF_TCP_DST", "OXM_OF_TCP_DST"],
        slot::TP_DST,
        16,
        M::Bitwise,
        P::Tcp,
        F::Dec,
        true,
    ),
    def(
        FieldId::UdpSrc,
        "udp_src",
        &["NXM_OF_UDP_SRC", "OXM_OF_UDP_SRC"],
        slot::TP_SRC,
        16,
        M::Bitwise,
        P::Udp,
        F::Dec,
        true,
    ),
    def(
        FieldId::UdpDst,
        "udp_dst",
        &["NXM_OF_UDP_DST", "OXM_OF_UDP_DST"],
        slot::TP_DST,
        16,
        M::Bitwise,
        P::Udp,
        F::Dec,
        true,
    ),
    def(
        FieldId::IcmpType,
        "icmp_type",
        &["NXM_OF_ICMP_TYPE", "OXM_OF_ICMPV4_TYPE"],
        s(4, 48, 8),
        8,
        M::No,
        P::Icmp,
        F::Dec,
        true,
    ),
    def(
        FieldId::IcmpCode,
        "icmp_code",
        &["NXM_OF_ICMP_CODE", "OXM_OF_ICMPV4_CODE"],
        s(4, 32, 8),
        8,
        M::No,
        P::Icmp,
        F::Dec,
        true,
    ),
    def(
        FieldId::TcpFlags,
        "tcp_flags",
        &["NXM_NX_TCP_FLAGS", "OXM_OF_TCP_FLAGS"],
        s(4, 16, 12),
        12,
        M::Bitwise,
        P::Tcp,
        F::TcpFlags,
        false,
    ),
    def(
        FieldId::PktMark,
        "pkt_mark",
        &["NXM_NX_PKT_MARK"],
        slot::PKT_MARK,
        32,
        M::Bitwise,
        P::None,
        F::Hex,
        true,
    ),
    def(
        FieldId::CtState,
        "ct_state",
        &["NXM_NX_CT_STATE"],
        slot::CT_STATE,
        32,
        M::Bitwise,
        P::None,
        F::CtState,
        false,
    ),
    def(
        FieldId::CtZone,
        "ct_zone",
        &["NXM_NX_CT_ZONE"],
        slot::CT_ZONE,
        16,
        M::No,
        P::None,
        F::Hex,
        false,
    ),
    def(
        FieldId::CtMark,
        "ct_mark",
        &["NXM_NX_CT_MARK"],
        slot::CT_MARK,
        32,
        M::Bitwise,
        P::None,
        F::Hex,
        true,
    ),
    FieldDef {
        hi: Some(slot::CT_LABEL_HI),
        ..def(
            FieldId::CtLabel,
            "ct_label",
            &["NXM_NX_CT_LABEL"],
            slot::CT_LABEL_LO,
            128,
            M::Bitwise,
            P::None,
            F::Hex,
            true,
        )
    },
    def(
        FieldId::CtNwSrc,
        "ct_nw_src",
        &["NXM_NX_CT_NW_SRC"],
        slot::CT_NW_SRC,
        32,
        M::Bitwise,
        P::None,
        F::Ipv4,
        false,
    ),
    def(
        FieldId::CtNwDst,
        "ct_nw_dst",
        &["NXM_NX_CT_NW_DST"],
        slot::CT_NW_DST,
        32,
        M::Bitwise,
        P::None,
        F::Ipv4,
        false,
    ),
    def(
        FieldId::CtNwProto,
        "ct_nw_proto",
        &["NXM_NX_CT_NW_PROTO"],
        slot::CT_NW_PROTO,
        8,
        M::No,
        P::None,
        F::Dec,
        false,
    ),
    def(
        FieldId::CtTpSrc,
        "ct_tp_src",
        &["NXM_NX_CT_TP_SRC"],
        slot::CT_TP_SRC,
        16,
        M::Bitwise,
        P::None,
        F::Dec,
        false,
    ),
    def(
        FieldId::CtTpDst,
        "ct_tp_dst",
        &["NXM_NX_CT_TP_DST"],
        slot::CT_TP_DST,
        16,
        M::Bitwise,
        P::None,
        F::Dec,
        false,
    ),
    def(
        FieldId::Metadata,
        "metadata",
        &["OXM_OF_METADATA"],
        slot::METADATA,
        64,
        M::Bitwise,
        P::None,
        F::Hex,
        true,
    ),
    def(
        FieldId::ConjId,
        "conj_id",
        &[],
        slot::CONJ_ID,
        32,
        M::No,
        P::None,
        F::Dec,
        false,
    ),
];

static REGS: [FieldDef; 16] = {
    let mut out = [def(
        FieldId::Reg(0),
        "reg0",
        &[],
        reg_slot(0),
        32,
        M::Bitwise,
        P::None,
        F::Hex,
        true,
    ); 16];
    let names = [
        "reg0", "reg1", "reg2", "reg3", "reg4", "reg5", "reg6", "reg7", "reg8", "reg9", "reg10",
        "reg11", "reg12", "reg13", "reg14", "reg15",
    ];
    let nxm: [&[&str]; 16] = [
        &["NXM_NX_REG0"],
        &["NXM_NX_REG1"],
        &["NXM_NX_REG2"],
        &["NXM_NX_REG3"],
        &["NXM_NX_REG4"],
        &["NXM_NX_REG5"],
        &["NXM_NX_REG6"],
        &["NXM_NX_REG7"],
        &["NXM_NX_REG8"],
        &["NXM_NX_REG9"],
        &["NXM_NX_REG10"],
        &["NXM_NX_REG11"],
        &["NXM_NX_REG12"],
        &["NXM_NX_REG13"],
        &["NXM_NX_REG14"],
        &["NXM_NX_REG15"],
    ];
    let mut i = 0;
    while i < 16 {
        out[i] = def(
            FieldId::Reg(i as u8),
            names[i],
            nxm[i],
            reg_slot(i),
            32,
            M::Bitwise,
            P::None,
            F::Hex,
            true,
        );
        i += 1;
    }
    out
};

static XREGS: [FieldDef; 8] = {
    let mut out = [def(
        FieldId::XReg(0),
        "xreg0",
        &[],
        xreg_slot(0),
        64,
        M::Bitwise,
        P::None,
        F::Hex,
        true,
    ); 8];
    let names = [
        "xreg0", "xreg1", "xreg2", "xreg3", "xreg4", "xreg5", "xreg6", "xreg7",
    ];
    let oxm: [&[&str]; 8] = [
        &["OXM_OF_PKT_REG0"],
        &["OXM_OF_PKT_REG1"],
        &["OXM_OF_PKT_REG2"],
        &["OXM_OF_PKT_REG3"],
        &["OXM_OF_PKT_REG4"],
        &["OXM_OF_PKT_REG5"],
        &["OXM_OF_PKT_REG6"],
        &["OXM_OF_PKT_REG7"],
    ];
    let mut i = 0;
    while i < 8 {
        out[i] = def(
            FieldId::XReg(i as u8),
            names[i],
            oxm[i],
            xreg_slot(i),
            64,
            M::Bitwise,
            P::None,
            F::Hex,
            true,
        );
        i += 1;
    }
    out
};

/// `xxreg0`..`xxreg3`: 128 bits each, `xxregN` = reg4N (most significant)
/// .. reg4N+3, i.e. xreg2N (high half) and xreg2N+1 (low half).
static XXREGS: [FieldDef; 4] = {
    let names = ["xxreg0", "xxreg1", "xxreg2", "xxreg3"];
    let nxm: [&[&str]; 4] = [
        &["NXM_NX_XXREG0"],
        &["NXM_NX_XXREG1"],
        &["NXM_NX_XXREG2"],
        &["NXM_NX_XXREG3"],
    ];
    let mut out = [def(
        FieldId::XXReg(0),
        "xxreg0",
        &[],
        xreg_slot(1),
        128,
        M::Bitwise,
        P::None,
        F::Hex,
        true,
    ); 4];
    let mut i = 0;
    while i < 4 {
        out[i] = FieldDef {
            hi: Some(xreg_slot(2 * i)),
            ..def(
                FieldId::XXReg(i as u8),
                names[i],
                nxm[i],
                xreg_slot(2 * i + 1),
                128,
                M::Bitwise,
                P::None,
                F::Hex,
                true,
            )
        };
        i += 1;
    }
    out
};

/// The definition of `id`.
pub fn get(id: FieldId) -> &'static FieldDef {
    match id {
        FieldId::Reg(n) => &REGS[n as usize],
        FieldId::XReg(n) => &XREGS[n as usize],
        FieldId::XXReg(n) => &XXREGS[n as usize],
        _ => FIELDS
            .iter()
            .find(|f| f.id == id)
            .expect("every FieldId has a definition"),
    }
}

/// Look a field up by any of its names (case-sensitive for NXM/OXM names, as
/// OVS is; `ovs-ofctl` names are lower case).
pub fn lookup(name: &str) -> Option<&'static FieldDef> {
    all().find(|f| f.name == name || f.aliases.contains(&name))
}

/// Every field definition.
pub fn all() -> impl Iterator<Item = &'static FieldDef> {
    FIELDS
        .iter()
        .chain(REGS.iter())
        .chain(XREGS.iter())
        .chain(XXREGS.iter())
}

/// Key slots that a field's prerequisite pins, used by the parser to check
/// prerequisites and by `dump-flows` to fold them into a shorthand.
pub fn prereq_satisfied(p: Prereq, dl_type: Option<u16>, nw_proto: Option<u8>) -> bool {
    let ip = dl_type == Some(key::eth_type::IPV4);
    match p {
        Prereq::None => true,
        Prereq::Ip => ip,
        Prereq::Arp => dl_type == Some(key::eth_type::ARP),
        Prereq::Tcp => ip && nw_proto == Some(key::ip_proto::TCP),
        Prereq::Udp => ip && nw_proto == Some(key::ip_proto::UDP),
        Prereq::TcpOrUdp => {
            ip && matches!(
                nw_proto,
                Some(key::ip_proto::TCP) | Some(key::ip_proto::UDP)
            )
        }
        Prereq::Icmp => ip && nw_proto == Some(key::ip_proto::ICMP),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_resolves_and_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for f in all() {
            assert!(
                std::ptr::eq(get(f.id), f) || matches!(f.id, FieldId::Reg(_) | FieldId::XReg(_))
            );
            for n in std::iter::once(&f.name).chain(f.aliases.iter()) {
                assert!(seen.insert(*n), "duplicate name {n}");
            }
        }
        assert_eq!(lookup("NXM_NX_REG8").unwrap().id, FieldId::Reg(8));
        assert_eq!(lookup("NXM_OF_ETH_SRC").unwrap().id, FieldId::DlSrc);
        assert_eq!(lookup("xreg3").unwrap().id, FieldId::XReg(3));
    }

    #[test]
    fn tos_is_shifted_and_label_is_128_bits() {
        let mut k = FlowKey::ZERO;
        get(FieldId::NwTos).write(&mut k, 0xb8);
        assert_eq!(k.get(slot::NW_TOS), 0xb8);
        assert_eq!(get(FieldId::NwTos).read(&k), 0xb8);
        assert_eq!(get(FieldId::IpDscp).read(&k), 0x2e);
        let l = get(FieldId::CtLabel);
        l.write(&mut k, 1u128 << 100 | 7);
        assert_eq!(l.read(&k), 1u128 << 100 | 7);
        assert_eq!(l.full_mask(), u128::MAX);
        // xxreg1 is reg4 (most significant) .. reg7 (least), as in OVS.
        let x = lookup("NXM_NX_XXREG1").unwrap();
        x.write(&mut k, 0x1234 | (0xab << 96));
        assert_eq!((k.reg(7), k.reg(4)), (0x1234, 0xab));
        assert_eq!(x.read(&k), 0x1234 | (0xab << 96));
    }
}
