//! Small builders for IR matches and actions, so the compiler reads like the
//! flows it emits (`M::ip().reg(0, 0x4, 0xffff).nw_dst(ip)`).

use std::net::Ipv4Addr;

use conntrack::{NatRange, NatSpec};
use datapath::key::{eth_type, ip_proto};
use datapath::pipeline::fields::{self, FieldId};
use datapath::pipeline::ir::{Action, CtAction, CtZone, Flow, Match, SubField};

use crate::config::k8s::Protocol;
use crate::config::node::Cidr;

/// A match under construction.
#[derive(Debug, Clone, Copy, Default)]
pub struct M(pub Match);

impl M {
    /// Match everything.
    pub fn any() -> M {
        M(Match::ANY)
    }
    /// `ip`.
    pub fn ip() -> M {
        M::any().f(FieldId::DlType, eth_type::IPV4 as u128)
    }
    /// `arp`.
    pub fn arp() -> M {
        M::any().f(FieldId::DlType, eth_type::ARP as u128)
    }
    /// `tcp` / `udp`.
    pub fn proto(p: Protocol) -> M {
        M::ip().f(FieldId::NwProto, p.number() as u128)
    }
    /// `igmp`.
    pub fn igmp() -> M {
        M::ip().f(FieldId::NwProto, ip_proto::IGMP as u128)
    }
    /// Exact match on a field.
    pub fn f(self, id: FieldId, v: u128) -> M {
        let full = fields::get(id).full_mask();
        self.fm(id, v, full)
    }
    /// Masked match on a field.
    pub fn fm(mut self, id: FieldId, v: u128, mask: u128) -> M {
        let f = fields::get(id);
        let om = f.read(&self.0.mask);
        let ov = f.read(&self.0.value);
        f.write(&mut self.0.mask, om | mask);
        f.write(&mut self.0.value, (ov & !mask) | (v & mask));
        self
    }
    /// `regN=v/mask`.
    pub fn reg(self, n: u8, v: u32, mask: u32) -> M {
        self.fm(FieldId::Reg(n), v as u128, mask as u128)
    }
    /// `in_port=P`.
    pub fn in_port(self, p: u32) -> M {
        self.f(FieldId::InPort, p as u128)
    }
    /// `nw_src=IP`.
    pub fn nw_src(self, ip: Ipv4Addr) -> M {
        self.f(FieldId::NwSrc, u32::from(ip) as u128)
    }
    /// `nw_dst=IP`.
    pub fn nw_dst(self, ip: Ipv4Addr) -> M {
        self.f(FieldId::NwDst, u32::from(ip) as u128)
    }
    /// `nw_dst=CIDR`.
    pub fn nw_dst_net(self, c: Cidr) -> M {
        self.fm(FieldId::NwDst, u32::from(c.addr) as u128, c.mask() as u128)
    }
    /// `tp_dst=P` (needs `tcp`/`udp`).
    pub fn tp_dst(self, p: u16) -> M {
        self.f(FieldId::TpDst, p as u128)
    }
    /// `ct_state`: bits in `set` on, bits in `clear` off.
    pub fn ct_state(self, set: u8, clear: u8) -> M {
        self.fm(FieldId::CtState, set as u128, (set | clear) as u128)
    }
    /// `ct_mark=V`.
    pub fn ct_mark(self, v: u32) -> M {
        self.f(FieldId::CtMark, v as u128)
    }
    /// `ct_zone=Z`.
    pub fn ct_zone(self, z: u16) -> M {
        self.f(FieldId::CtZone, z as u128)
    }
}

/// A flow with no cookie or timeouts.
pub fn flow(table: u8, priority: u16, cookie: u64, m: M, actions: Vec<Action>) -> Flow {
    Flow {
        table,
        priority,
        cookie,
        idle_timeout: 0,
        hard_timeout: 0,
        matches: m.0,
        actions,
    }
}

/// `field[ofs..ofs+n_bits-1]`.
pub fn sub(field: FieldId, ofs: u16, n_bits: u16) -> SubField {
    SubField { field, ofs, n_bits }
}

/// A whole field as a subfield.
pub fn whole(field: FieldId) -> SubField {
    sub(field, 0, fields::get(field).bits)
}

/// `load:V->dst`.
pub fn load(dst: SubField, value: u128) -> Action {
    Action::Load { dst, value }
}

/// `move:src->dst`.
pub fn mov(src: SubField, dst: SubField) -> Action {
    Action::Move { src, dst }
}

/// `resubmit(,T)`.
pub fn resubmit(table: u8) -> Action {
    Action::Resubmit {
        port: None,
        table: Some(table),
        ct: false,
    }
}

/// `output:P`.
pub fn output(port: u32) -> Action {
    Action::Output {
        port,
        max_len: None,
    }
}

/// A NAT range of one address, optionally one port.
pub fn nat_range(ip: Ipv4Addr, port: Option<u16>) -> NatRange {
    let a = u32::from(ip);
    NatRange {
        addr_min: a,
        addr_max: a,
        port_min: port.unwrap_or(0),
        port_max: port.unwrap_or(0),
        random: false,
        hash: false,
        persistent: false,
    }
}

/// `ct(table=T,zone=Z[,commit][,nat...][,exec(...)])`.
pub fn ct(commit: bool, table: u8, zone: u16, nat: Option<NatSpec>, exec: Vec<Action>) -> Action {
    Action::Ct(CtAction {
        commit,
        force: false,
        table: Some(table),
        zone: CtZone::Imm(zone),
        nat,
        exec,
        alg: None,
    })
}
