//! IR -> `ovs-ofctl dump-flows` / `dump-groups` text.
//!
//! [`format_flow`] prints a flow exactly as `ovs-ofctl --no-stats dump-flows`
//! (OVS 3.1, default OpenFlow 1.0 + NXM session) prints it after the flow
//! went into the switch and back out. That trip changes some actions, and
//! [`normalize`] applies the same changes to the IR, so that
//! `parse(format(f)) == normalize(f)`:
//! - `set_field` on a field with an OpenFlow 1.0 action becomes that action
//!   (`eth_src` -> `mod_dl_src`, `ip_dst` -> `mod_nw_dst`, `nw_tos`/`ip_dscp`
//!   -> `mod_nw_tos`, `tcp_dst` -> `mod_tp_dst`);
//!   any other `set_field`, and `mod_nw_ttl`, become `load`s, one per
//!   contiguous run of mask bits, at most 64 bits each
//!   (`set_field:0x5/0x5->reg4` -> `load:0x1->NXM_NX_REG4[0],load:0x1->NXM_NX_REG4[2]`);
//! - `goto_table:T` prints as `resubmit(,T)` (OpenFlow 1.0 has no
//!   instructions; as the last action the two behave the same);
//! - `note` bytes are zero-padded to the action's 8-byte alignment
//!   (6, 14, 22... bytes);
//! - `output:CONTROLLER`/`controller` print as `CONTROLLER:65535`;
//! - inside `ct()`, `nat` prints before `exec(...)`.
//!
//! Match fields print in OVS's `match_format()` order with its shorthands:
//! `tcp` for `dl_type=0x0800,nw_proto=6`, `nw_tos` for `ip_dscp`, registers
//! for `xreg` halves, `arp_spa`/`arp_op` for ARP's `nw_src`/`nw_proto`.
//!
//! Dump order: OVS prints a table's flows in classifier iteration order,
//! which depends on its hash tables and is not reproducible. [`sort_for_dump`]
//! orders by table, then priority (highest first), then printed match, which
//! is what `ovs-ofctl --rsort dump-flows` gives modulo ties.

use std::fmt::Write;

use conntrack::{NatRange, NatSpec};

use super::fields::{self, FieldDef, FieldId, Format};
use super::ir::{
    Action, Bucket, CtAction, CtZone, DEFAULT_PRIORITY, Flow, Group, GroupType, LearnAction,
    LearnSpec, LearnSrc, Match, SubField,
};
use super::parse::value_helpers::{ct_flag_name, tcp_flag_name, user_mask};
use crate::key::{self, FlowKey, slot};

/// Printing options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FormatOptions {
    /// Print `table=0` too (OVS omits it).
    pub show_table_zero: bool,
}

/// A flow's statistics as `ovs-ofctl dump-flows` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShownStats {
    /// Milliseconds since the flow was added (`duration`).
    pub duration_ms: u64,
    /// `n_packets`.
    pub packets: u64,
    /// `n_bytes`.
    pub bytes: u64,
    /// Seconds since last used, or since added when never used.
    pub idle_age: u64,
    /// Seconds since last modified (printed when it differs from the
    /// duration's seconds, as OVS does).
    pub hard_age: u64,
}

/// Print one flow like `ovs-ofctl --no-stats dump-flows` (with its leading
/// space, without a newline).
pub fn format_flow(flow: &Flow, opts: FormatOptions) -> String {
    format_flow_with(flow, opts, None)
}

/// Print one flow like `ovs-ofctl dump-flows` (with its statistics:
/// `cookie`, `duration`, `table`, `n_packets`, `n_bytes`, `idle_age`, and
/// `hard_age` when it differs from the duration).
pub fn format_flow_stats(flow: &Flow, stats: &ShownStats) -> String {
    format_flow_with(flow, FormatOptions::default(), Some(stats))
}

fn format_flow_with(flow: &Flow, opts: FormatOptions, stats: Option<&ShownStats>) -> String {
    let flow = normalize(flow);
    let mut s = String::from(" ");
    if stats.is_some() || flow.cookie != 0 {
        let _ = write!(s, "cookie={:#x}, ", flow.cookie);
    }
    if let Some(st) = stats {
        let (sec, ms) = (st.duration_ms / 1000, st.duration_ms % 1000);
        if ms == 0 {
            let _ = write!(s, "duration={sec}s, ");
        } else {
            let _ = write!(s, "duration={sec}.{ms:03}s, ");
        }
    }
    if stats.is_some() || flow.table != 0 || opts.show_table_zero {
        let _ = write!(s, "table={}, ", flow.table);
    }
    if let Some(st) = stats {
        let _ = write!(s, "n_packets={}, n_bytes={}, ", st.packets, st.bytes);
    }
    if flow.idle_timeout != 0 {
        let _ = write!(s, "idle_timeout={}, ", flow.idle_timeout);
    }
    if flow.hard_timeout != 0 {
        let _ = write!(s, "hard_timeout={}, ", flow.hard_timeout);
    }
    if let Some(st) = stats {
        let _ = write!(s, "idle_age={}, ", st.idle_age);
        if st.hard_age != st.duration_ms / 1000 {
            let _ = write!(s, "hard_age={}, ", st.hard_age);
        }
    }
    let mut m = String::new();
    if flow.priority != DEFAULT_PRIORITY {
        let _ = write!(m, "priority={},", flow.priority);
    }
    m.push_str(&format_match(&flow.matches));
    let m = m.trim_end_matches(',');
    s.push_str(m);
    if !m.is_empty() {
        s.push(' ');
    }
    s.push_str("actions=");
    s.push_str(&format_actions(&flow.actions));
    s
}

/// Print a match in OVS `match_format()` order, fields separated by commas
/// (no priority). Empty for the match-everything match.
pub fn format_match(m: &Match) -> String {
    let mut s = String::new();
    let (v, k) = (&m.value, &m.mask);
    let get = |sl: key::Slot| (v.get(sl), k.get(sl));
    let put_u32 = |s: &mut String, name: &str, (val, msk): (u64, u64), full: u64| {
        if msk != 0 {
            let _ = write!(s, "{name}={}", hex0(val as u128));
            if msk != full {
                let _ = write!(s, "/{}", hex0(msk as u128));
            }
            s.push(',');
        }
    };
    let put_dec16 = |s: &mut String, name: &str, (val, msk): (u64, u64), full: u64| {
        if msk != 0 {
            if msk == full {
                let _ = write!(s, "{name}={val},");
            } else {
                let _ = write!(s, "{name}={val:#x}/{msk:#x},");
            }
        }
    };
    let put_ip = |s: &mut String, name: &str, (val, msk): (u64, u64)| {
        if msk != 0 {
            let _ = write!(s, "{name}={}", ipv4(val as u32));
            if msk != 0xffff_ffff {
                let m32 = msk as u32;
                if m32.leading_ones() + m32.trailing_zeros() == 32 {
                    let _ = write!(s, "/{}", m32.leading_ones());
                } else {
                    let _ = write!(s, "/{}", ipv4(m32));
                }
            }
            s.push(',');
        }
    };
    let put_mac = |s: &mut String, name: &str, (val, msk): (u64, u64)| {
        if msk != 0 {
            let _ = write!(s, "{name}={}", mac(val));
            if msk != 0xffff_ffff_ffff {
                let _ = write!(s, "/{}", mac(msk));
            }
            s.push(',');
        }
    };

    put_u32(&mut s, "pkt_mark", get(slot::PKT_MARK), 0xffff_ffff);
    let (cj, cjm) = get(slot::CONJ_ID);
    if cjm != 0 {
        let _ = write!(s, "conj_id={cj},");
    }
    let (cs, csm) = get(slot::CT_STATE);
    if csm != 0 {
        s.push_str("ct_state=");
        if csm == 0xff {
            s.push_str(&flags_exact(cs as u32, ct_flag_name));
        } else {
            s.push_str(&flags_masked(cs as u32, csm as u32, ct_flag_name));
        }
        s.push(',');
    }
    put_dec16(&mut s, "ct_zone", get(slot::CT_ZONE), 0xffff);
    put_u32(&mut s, "ct_mark", get(slot::CT_MARK), 0xffff_ffff);
    let (lv, lm) = (v.ct_label(), k.ct_label());
    if lm != 0 {
        let _ = write!(s, "ct_label={}", hex0(lv));
        if lm != u128::MAX {
            let _ = write!(s, "/{}", hex0(lm));
        }
        s.push(',');
    }
    put_ip(&mut s, "ct_nw_src", get(slot::CT_NW_SRC));
    put_ip(&mut s, "ct_nw_dst", get(slot::CT_NW_DST));
    let (cp, cpm) = get(slot::CT_NW_PROTO);
    if cpm != 0 {
        let _ = write!(s, "ct_nw_proto={cp},");
    }
    // OVS prints ct_tp_* only together with ct_nw_proto; flowpath always
    // prints them so that nothing matched is hidden.
    put_dec16(&mut s, "ct_tp_src", get(slot::CT_TP_SRC), 0xffff);
    put_dec16(&mut s, "ct_tp_dst", get(slot::CT_TP_DST), 0xffff);

    let (dl, dlm) = get(slot::DL_TYPE);
    let (np, npm) = get(slot::NW_PROTO);
    let dl_known = dlm == 0xffff;
    let is_ip = dl_known && dl == key::eth_type::IPV4 as u64;
    let is_arp = dl_known && dl == key::eth_type::ARP as u64;
    let mut skip_type = false;
    let mut skip_proto = false;
    if dlm != 0 {
        skip_type = true;
        if is_ip {
            if npm != 0 {
                skip_proto = true;
                match np as u8 {
                    key::ip_proto::ICMP => s.push_str("icmp,"),
                    key::ip_proto::TCP => s.push_str("tcp,"),
                    key::ip_proto::UDP => s.push_str("udp,"),
                    132 => s.push_str("sctp,"),
                    _ => {
                        s.push_str("ip,");
                        skip_proto = false;
                    }
                }
            } else {
                s.push_str("ip,");
            }
        } else if dl == key::eth_type::IPV6 as u64 {
            s.push_str("ipv6,");
        } else if is_arp {
            s.push_str("arp,");
        } else if dl == 0x8035 {
            s.push_str("rarp,");
        } else {
            skip_type = false;
        }
    }
    for r in 0..16 {
        put_u32(
            &mut s,
            &format!("reg{r}"),
            get(key::reg_slot(r)),
            0xffff_ffff,
        );
    }
    let (md, mdm) = get(slot::METADATA);
    if mdm != 0 {
        let _ = write!(s, "metadata={}", hex0(md as u128));
        if mdm != u64::MAX {
            let _ = write!(s, "/{}", hex0(mdm as u128));
        }
        s.push(',');
    }
    let (ip, ipm) = get(slot::IN_PORT);
    if ipm != 0 {
        let _ = write!(s, "in_port={},", port_name(ip as u32));
    }
    let (tci, tcim) = get(slot::VLAN_TCI);
    if tcim != 0 {
        let vid_mask = tcim & 0x0fff;
        let pcp_mask = tcim & 0xe000;
        let cfi = tcim & 0x1000 != 0;
        if cfi
            && tci & 0x1000 != 0
            && (vid_mask == 0 || vid_mask == 0xfff)
            && (pcp_mask == 0 || pcp_mask == 0xe000)
            && (vid_mask != 0 || pcp_mask != 0)
        {
            if vid_mask != 0 {
                let _ = write!(s, "dl_vlan={},", tci & 0xfff);
            }
            if pcp_mask != 0 {
                let _ = write!(s, "dl_vlan_pcp={},", tci >> 13);
            }
        } else if tcim == 0xffff {
            let _ = write!(s, "vlan_tci=0x{tci:04x},");
        } else {
            let _ = write!(s, "vlan_tci=0x{tci:04x}/0x{tcim:04x},");
        }
    }
    put_mac(&mut s, "dl_src", get(slot::DL_SRC));
    put_mac(&mut s, "dl_dst", get(slot::DL_DST));
    if !skip_type && dlm != 0 {
        let _ = write!(s, "dl_type=0x{dl:04x},");
    }
    if is_arp {
        put_ip(&mut s, "arp_spa", get(slot::NW_SRC));
        put_ip(&mut s, "arp_tpa", get(slot::NW_DST));
    } else {
        put_ip(&mut s, "nw_src", get(slot::NW_SRC));
        put_ip(&mut s, "nw_dst", get(slot::NW_DST));
    }
    if !skip_proto && npm != 0 {
        if is_arp {
            let _ = write!(s, "arp_op={np},");
        } else {
            let _ = write!(s, "nw_proto={np},");
        }
    }
    if is_arp {
        put_mac(&mut s, "arp_sha", get(slot::ARP_SHA));
        put_mac(&mut s, "arp_tha", get(slot::ARP_THA));
    }
    let (tos, tosm) = get(slot::NW_TOS);
    if tosm & 0xfc != 0 {
        let _ = write!(s, "nw_tos={},", tos & 0xfc);
    }
    if tosm & 0x03 != 0 {
        let _ = write!(s, "nw_ecn={},", tos & 0x03);
    }
    let (ttl, ttlm) = get(slot::NW_TTL);
    if ttlm != 0 {
        let _ = write!(s, "nw_ttl={ttl},");
    }
    let (fr, frm) = get(slot::NW_FRAG);
    let (any, later) = (key::frag::ANY as u64, key::frag::LATER as u64);
    match frm & (any | later) {
        m if m == any | later => {
            let t = match (fr & any != 0, fr & later != 0) {
                (true, true) => "later",
                (true, false) => "first",
                (false, false) => "no",
                (false, true) => "<error>",
            };
            let _ = write!(s, "nw_frag={t},");
        }
        m if m == any => {
            let _ = write!(s, "nw_frag={},", if fr & any != 0 { "yes" } else { "no" });
        }
        m if m == later => {
            let _ = write!(
                s,
                "nw_frag={},",
                if fr & later != 0 {
                    "later"
                } else {
                    "not_later"
                }
            );
        }
        _ => {}
    }
    if is_ip && np == key::ip_proto::ICMP as u64 {
        // icmp_type/icmp_code are 8-bit fields in the low byte of tp_src/tp_dst.
        let full8 = |(v, m): (u64, u64)| (v, if m == 0xff { 0xffff } else { m });
        put_dec16(&mut s, "icmp_type", full8(get(slot::TP_SRC)), 0xffff);
        put_dec16(&mut s, "icmp_code", full8(get(slot::TP_DST)), 0xffff);
    } else {
        put_dec16(&mut s, "tp_src", get(slot::TP_SRC), 0xffff);
        put_dec16(&mut s, "tp_dst", get(slot::TP_DST), 0xffff);
    }
    let (tf, tfm) = get(slot::TCP_FLAGS);
    let (tf, tfm) = (tf & 0xfff, tfm & 0xfff);
    if is_ip && np == key::ip_proto::TCP as u64 && tfm != 0 {
        s.push_str("tcp_flags=");
        if tfm == 0xfff {
            s.push_str(&flags_exact(tf as u32, tcp_flag_name));
        } else {
            s.push_str(&flags_masked(tf as u32, tfm as u32, tcp_flag_name));
        }
        s.push(',');
    }
    while s.ends_with(',') {
        s.pop();
    }
    s
}

/// `%#x` as C prints it: `0` for zero, else `0x...`.
fn hex0(v: u128) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!("{v:#x}")
    }
}

fn ipv4(a: u32) -> String {
    let b = a.to_be_bytes();
    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
}

fn mac(a: u64) -> String {
    let b = a.to_be_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[2], b[3], b[4], b[5], b[6], b[7]
    )
}

fn port_name(p: u32) -> String {
    match p {
        key::OFPP_LOCAL => "LOCAL".into(),
        key::OFPP_IN_PORT => "IN_PORT".into(),
        key::OFPP_CONTROLLER => "CONTROLLER".into(),
        key::OFPP_NONE => "ANY".into(),
        0xfff9 => "TABLE".into(),
        0xfffa => "NORMAL".into(),
        0xfffb => "FLOOD".into(),
        0xfffc => "ALL".into(),
        _ => p.to_string(),
    }
}

fn flags_exact(v: u32, name: fn(u32) -> Option<&'static str>) -> String {
    if v == 0 {
        return "0".into();
    }
    let mut parts = Vec::new();
    let mut bad = 0;
    for i in 0..32 {
        let bit = 1u32 << i;
        if v & bit != 0 {
            match name(bit) {
                Some(n) => parts.push(n.to_string()),
                None => bad |= bit,
            }
        }
    }
    if bad != 0 {
        parts.push(format!("{bad:#x}"));
    }
    parts.join("|")
}

fn flags_masked(v: u32, m: u32, name: fn(u32) -> Option<&'static str>) -> String {
    let mut s = String::new();
    for i in 0..32 {
        let bit = 1u32 << i;
        if m & bit != 0 {
            s.push(if v & bit != 0 { '+' } else { '-' });
            s.push_str(name(bit).unwrap_or("[Unknown]"));
        }
    }
    s
}

/// The name `load`/`move` print for a field: its NXM name, else its OXM
/// name, as OVS's `mf_format_subfield()`.
pub fn nxm_name(id: FieldId) -> &'static str {
    let f = fields::get(id);
    match id {
        FieldId::TpSrc => return "NXM_OF_TCP_SRC",
        FieldId::TpDst => return "NXM_OF_TCP_DST",
        _ => {}
    }
    f.aliases
        .iter()
        .find(|a| a.starts_with("NXM_"))
        .or_else(|| f.aliases.iter().find(|a| a.starts_with("OXM_")))
        .copied()
        .unwrap_or(f.name)
}

/// Print a bit range the way OVS does: `F[]`, `F[n]` or `F[a..b]`.
pub fn format_subfield(sf: &SubField) -> String {
    let f = fields::get(sf.field);
    let name = nxm_name(sf.field);
    if sf.ofs == 0 && sf.n_bits == f.bits {
        format!("{name}[]")
    } else if sf.n_bits == 1 {
        format!("{name}[{}]", sf.ofs)
    } else {
        format!("{name}[{}..{}]", sf.ofs, sf.ofs + sf.n_bits - 1)
    }
}

/// Print an action list (already [`normalize`]d) as `dump-flows` does;
/// `drop` for an empty list.
pub fn format_actions(actions: &[Action]) -> String {
    if actions.is_empty() {
        return "drop".into();
    }
    let parts: Vec<String> = actions.iter().map(format_action).collect();
    parts.join(",")
}

fn format_action(a: &Action) -> String {
    match a {
        Action::Output {
            port,
            max_len: Some(m),
        } => format!("output(port={},max_len={m})", port_name(*port)),
        Action::Output {
            port,
            max_len: None,
        } => {
            if *port < 0xff00 {
                format!("output:{port}")
            } else if *port == key::OFPP_CONTROLLER {
                "CONTROLLER:65535".into()
            } else {
                port_name(*port)
            }
        }
        Action::OutputField(sf) => format!("output:{}", format_subfield(sf)),
        Action::Controller { args } => {
            if args.is_empty() {
                "CONTROLLER:65535".into()
            } else if let Some(n) = args
                .strip_prefix("max_len=")
                .filter(|n| n.bytes().all(|c| c.is_ascii_digit()))
            {
                format!("CONTROLLER:{n}")
            } else {
                format!("controller({args})")
            }
        }
        Action::Resubmit { port, table, ct } => match (port, table, ct) {
            (Some(p), None, false) => format!("resubmit:{}", port_name(*p)),
            _ => {
                let mut s = String::from("resubmit(");
                if let Some(p) = port {
                    s.push_str(&port_name(*p));
                }
                s.push(',');
                if let Some(t) = table {
                    let _ = write!(s, "{t}");
                }
                if *ct {
                    s.push_str(",ct");
                }
                s.push(')');
                s
            }
        },
        Action::GotoTable(t) => format!("resubmit(,{t})"),
        Action::Load { dst, value } => format!("load:{}->{}", hex0(*value), format_subfield(dst)),
        Action::Move { src, dst } => {
            format!("move:{}->{}", format_subfield(src), format_subfield(dst))
        }
        Action::SetField {
            field: FieldId::NwEcn,
            value,
            ..
        } => format!("mod_nw_ecn:{value}"),
        Action::SetField { field, value, mask } => {
            // Only reached for IR that was not normalised.
            let f = fields::get(*field);
            if *mask == user_mask(f) {
                format!("set_field:{}->{}", format_value(f, *value), f.name)
            } else {
                format!(
                    "set_field:{}/{}->{}",
                    format_value(f, *value),
                    format_value(f, *mask),
                    f.name
                )
            }
        }
        Action::ModDlSrc(m) => format!("mod_dl_src:{}", mac(*m)),
        Action::ModDlDst(m) => format!("mod_dl_dst:{}", mac(*m)),
        Action::ModNwSrc(a) => format!("mod_nw_src:{}", ipv4(*a)),
        Action::ModNwDst(a) => format!("mod_nw_dst:{}", ipv4(*a)),
        Action::ModNwTos(t) => format!("mod_nw_tos:{t}"),
        Action::ModNwTtl(t) => format!("mod_nw_ttl:{t}"),
        Action::ModTpSrc(p) => format!("mod_tp_src:{p}"),
        Action::ModTpDst(p) => format!("mod_tp_dst:{p}"),
        Action::DecTtl => "dec_ttl".into(),
        Action::Ct(ct) => format_ct(ct),
        Action::CtClear => "ct_clear".into(),
        Action::Group(g) => format!("group:{g}"),
        Action::Conjunction {
            id,
            clause,
            n_clauses,
        } => format!("conjunction({id},{clause}/{n_clauses})"),
        Action::Note(bytes) => {
            let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("note:{}", hex.join("."))
        }
        Action::Drop => "drop".into(),
        Action::Learn(l) => format_learn(l),
        Action::FinTimeout { idle, hard } => {
            let mut parts = Vec::new();
            if *idle != 0 {
                parts.push(format!("idle_timeout={idle}"));
            }
            if *hard != 0 {
                parts.push(format!("hard_timeout={hard}"));
            }
            format!("fin_timeout({})", parts.join(","))
        }
    }
}

/// `learn(...)` as OVS's `learn_format()`: options that differ from the
/// defaults in a fixed order, then the specs as written in canonical form.
fn format_learn(l: &LearnAction) -> String {
    let mut s = format!("learn(table={}", l.table);
    let mut opt = |cond: bool, text: String| {
        if cond {
            s.push(',');
            s.push_str(&text);
        }
    };
    opt(
        l.idle_timeout != 0,
        format!("idle_timeout={}", l.idle_timeout),
    );
    opt(
        l.hard_timeout != 0,
        format!("hard_timeout={}", l.hard_timeout),
    );
    opt(
        l.fin_idle_timeout != 0,
        format!("fin_idle_timeout={}", l.fin_idle_timeout),
    );
    opt(
        l.fin_hard_timeout != 0,
        format!("fin_hard_timeout={}", l.fin_hard_timeout),
    );
    opt(
        l.priority != DEFAULT_PRIORITY,
        format!("priority={}", l.priority),
    );
    opt(l.send_flow_rem, "send_flow_rem".into());
    opt(l.delete_learned, "delete_learned".into());
    opt(l.cookie != 0, format!("cookie={:#x}", l.cookie));
    opt(l.limit != 0, format!("limit={}", l.limit));
    if let Some(r) = &l.result_dst {
        opt(true, format!("result_dst={}", format_subfield(r)));
    }
    for spec in &l.specs {
        s.push(',');
        match spec {
            LearnSpec::Match {
                dst,
                src: LearnSrc::Imm(v),
            } => {
                let f = fields::get(dst.field);
                if dst.ofs == 0 && dst.n_bits == f.bits {
                    let _ = write!(s, "{}={}", mf_name(dst.field), format_value(f, *v));
                } else {
                    let _ = write!(s, "{}={}", format_subfield(dst), hex0(*v));
                }
            }
            LearnSpec::Match {
                dst,
                src: LearnSrc::Field(src),
            } => {
                s.push_str(&format_subfield(dst));
                if src.field != dst.field || src.ofs != dst.ofs {
                    let _ = write!(s, "={}", format_subfield(src));
                }
            }
            LearnSpec::Load { dst, src } => {
                let from = match src {
                    LearnSrc::Imm(v) => hex0(*v),
                    LearnSrc::Field(f) => format_subfield(f),
                };
                let _ = write!(s, "load:{from}->{}", format_subfield(dst));
            }
            LearnSpec::Output { src } => {
                let _ = write!(s, "output:{}", format_subfield(src));
            }
        }
    }
    s.push(')');
    s
}

fn format_value(f: &FieldDef, v: u128) -> String {
    match f.format {
        Format::Ipv4 => ipv4(v as u32),
        Format::Mac => mac(v as u64),
        Format::Port => port_name(v as u32),
        Format::Dec => v.to_string(),
        _ => hex0(v),
    }
}

fn format_nat(n: &NatSpec) -> String {
    let (dir, r): (&str, &NatRange) = match n {
        NatSpec::Existing => return "nat".into(),
        NatSpec::Src(r) => ("src", r),
        NatSpec::Dst(r) => ("dst", r),
    };
    let mut s = format!("nat({dir}");
    if r.addr_min != 0 || r.addr_max != 0 {
        let _ = write!(s, "={}", ipv4(r.addr_min));
        if r.addr_max != 0 && r.addr_max != r.addr_min {
            let _ = write!(s, "-{}", ipv4(r.addr_max));
        }
        if r.port_min != 0 {
            let _ = write!(s, ":{}", r.port_min);
            if r.port_max != 0 && r.port_max != r.port_min {
                let _ = write!(s, "-{}", r.port_max);
            }
        }
        if r.persistent {
            s.push_str(",persistent");
        }
        if r.hash {
            s.push_str(",hash");
        }
        if r.random {
            s.push_str(",random");
        }
    }
    s.push(')');
    s
}

fn format_ct(ct: &CtAction) -> String {
    let mut parts: Vec<String> = Vec::new();
    if ct.commit {
        parts.push("commit".into());
    }
    if ct.force {
        parts.push("force".into());
    }
    if let Some(t) = ct.table {
        parts.push(format!("table={t}"));
    }
    match ct.zone {
        CtZone::Field(sf) => parts.push(format!("zone={}", format_subfield(&sf))),
        CtZone::Imm(0) => {}
        CtZone::Imm(z) => parts.push(format!("zone={z}")),
    }
    if let Some(n) = &ct.nat {
        parts.push(format_nat(n));
    }
    if !ct.exec.is_empty() {
        parts.push(format!("exec({})", format_actions(&ct.exec)));
    }
    if let Some(a) = &ct.alg {
        parts.push(format!("alg={a}"));
    }
    format!("ct({})", parts.join(","))
}

/// Split a masked write into OVS `load`s: one per contiguous run of mask
/// bits, at most 64 bits each (`next_load_segment()`).
fn load_segments(field: FieldId, value: u128, mask: u128, out: &mut Vec<Action>) {
    let f = fields::get(field);
    // Loads address the field's own bits; nw_tos is 8 bits wide in place.
    let bits = f.bits as u32;
    let mut ofs = 0u32;
    while ofs < bits {
        if mask >> ofs & 1 == 0 {
            ofs += 1;
            continue;
        }
        let mut end = ofs + 1;
        while end < bits && end < ofs + 64 && mask >> end & 1 == 1 {
            end += 1;
        }
        let n = end - ofs;
        let v = (value >> ofs) & ((1u128 << n) - 1);
        out.push(Action::Load {
            dst: SubField {
                field,
                ofs: ofs as u16,
                n_bits: n as u16,
            },
            value: v,
        });
        ofs = end;
    }
}

/// What the switch gives back for `actions` after an OpenFlow 1.0 round
/// trip (see the module docs).
pub fn normalize_actions(actions: &[Action]) -> Vec<Action> {
    let mut out = Vec::with_capacity(actions.len());
    for a in actions {
        match a {
            Action::Drop => {}
            Action::SetField { field, value, mask } => {
                let f = fields::get(*field);
                let full = *mask == user_mask(f);
                match field {
                    FieldId::DlSrc if full => out.push(Action::ModDlSrc(*value as u64)),
                    FieldId::DlDst if full => out.push(Action::ModDlDst(*value as u64)),
                    FieldId::NwSrc if full => out.push(Action::ModNwSrc(*value as u32)),
                    FieldId::NwDst if full => out.push(Action::ModNwDst(*value as u32)),
                    FieldId::NwTos if full => out.push(Action::ModNwTos(*value as u8)),
                    FieldId::IpDscp if full => out.push(Action::ModNwTos((*value as u8) << 2)),
                    FieldId::TcpSrc | FieldId::UdpSrc | FieldId::TpSrc if full => {
                        out.push(Action::ModTpSrc(*value as u16))
                    }
                    FieldId::TcpDst | FieldId::UdpDst | FieldId::TpDst if full => {
                        out.push(Action::ModTpDst(*value as u16))
                    }
                    _ => load_segments(*field, *value, *mask, &mut out),
                }
            }
            Action::ModNwTtl(t) => out.push(Action::Load {
                dst: SubField {
                    field: FieldId::NwTtl,
                    ofs: 0,
                    n_bits: 8,
                },
                value: *t as u128,
            }),
            Action::GotoTable(t) => out.push(Action::Resubmit {
                port: None,
                table: Some(*t),
                ct: false,
            }),
            Action::Load { dst, value } if dst.n_bits > 64 => {
                let m = ((1u128 << dst.n_bits) - 1) << dst.ofs;
                load_segments(dst.field, value << dst.ofs, m, &mut out);
            }
            Action::Note(b) => {
                let total = (b.len() + 10).div_ceil(8) * 8;
                let mut b = b.clone();
                b.resize(total - 10, 0);
                out.push(Action::Note(b));
            }
            Action::Output {
                port: key::OFPP_CONTROLLER,
                max_len: None,
            } => out.push(Action::Controller {
                args: String::new(),
            }),
            Action::Resubmit {
                port: Some(key::OFPP_IN_PORT),
                table,
                ct,
            } => out.push(Action::Resubmit {
                port: None,
                table: *table,
                ct: *ct,
            }),
            Action::Ct(ct) => {
                let mut ct = ct.clone();
                ct.exec = normalize_actions(&ct.exec);
                out.push(Action::Ct(ct));
            }
            other => out.push(other.clone()),
        }
    }
    out
}

/// The flow as the switch gives it back (see the module docs).
pub fn normalize(flow: &Flow) -> Flow {
    Flow {
        actions: normalize_actions(&flow.actions),
        ..flow.clone()
    }
}

/// Sort flows for a stable dump: table ascending, priority descending, then
/// printed match. OVS's own order within a table is hash order.
pub fn sort_for_dump(flows: &mut [Flow]) {
    flows.sort_by_cached_key(dump_order);
}

/// The sort key of [`sort_for_dump`].
pub fn dump_order(f: &Flow) -> (u8, std::cmp::Reverse<u16>, String) {
    (
        f.table,
        std::cmp::Reverse(f.priority),
        format_match(&f.matches),
    )
}

/// OVS's internal (`meta-flow`) name of a field, as `dump-groups` prints
/// it in `fields(...)` and OpenFlow 1.5 `set_field` actions.
pub fn mf_name(id: FieldId) -> &'static str {
    match id {
        FieldId::DlSrc => "eth_src",
        FieldId::DlDst => "eth_dst",
        FieldId::DlType => "eth_type",
        FieldId::NwSrc => "ip_src",
        FieldId::NwDst => "ip_dst",
        FieldId::TpSrc => "tcp_src",
        FieldId::TpDst => "tcp_dst",
        _ => fields::get(id).name,
    }
}

/// Rank of a field in OVS's `enum mf_field_id`, which orders
/// `fields(...)` in `dump-groups`.
fn mf_rank(id: FieldId) -> u32 {
    use FieldId as F;
    match id {
        F::ConjId => 0,
        F::Metadata => 1,
        F::InPort => 2,
        F::PktMark => 3,
        F::CtState => 4,
        F::CtZone => 5,
        F::CtMark => 6,
        F::CtLabel => 7,
        F::CtNwProto => 8,
        F::CtNwSrc => 9,
        F::CtNwDst => 10,
        F::CtTpSrc => 11,
        F::CtTpDst => 12,
        F::Reg(n) => 20 + n as u32,
        F::XReg(n) => 40 + n as u32,
        F::XXReg(n) => 48 + n as u32,
        F::DlSrc => 60,
        F::DlDst => 61,
        F::DlType => 62,
        F::VlanTci => 63,
        F::NwSrc => 70,
        F::NwDst => 71,
        F::NwProto => 72,
        F::NwTos => 73,
        F::IpDscp => 74,
        F::NwEcn => 75,
        F::NwTtl => 76,
        F::NwFrag => 77,
        F::ArpOp => 80,
        F::ArpSpa => 81,
        F::ArpTpa => 82,
        F::ArpSha => 83,
        F::ArpTha => 84,
        F::TcpSrc | F::TpSrc => 90,
        F::TcpDst | F::TpDst => 91,
        F::TcpFlags => 92,
        F::UdpSrc => 93,
        F::UdpDst => 94,
        F::IcmpType => 95,
        F::IcmpCode => 96,
    }
}

/// The group as the switch gives it back: buckets' actions normalised,
/// `fields(...)` in OVS order, bucket ids assigned 0, 1, ... where missing.
pub fn normalize_group(g: &Group) -> Group {
    let mut g = g.clone();
    g.fields.sort_by_key(|(id, _)| mf_rank(*id));
    for (i, b) in g.buckets.iter_mut().enumerate() {
        b.id.get_or_insert(i as u32);
        b.actions = normalize_actions(&b.actions);
    }
    g
}

/// Print a group like `ovs-ofctl -O OpenFlow15 dump-groups` (without the
/// leading space). Bucket actions print in their OpenFlow 1.5 form: every
/// `load`, `set_field` and `mod_*` becomes `set_field`.
pub fn format_group(g: &Group) -> String {
    let g = normalize_group(g);
    let mut s = format!("group_id={},type=", g.id);
    s.push_str(match g.kind {
        GroupType::All => "all",
        GroupType::Select => "select",
        GroupType::Indirect => "indirect",
        GroupType::FastFailover => "ff",
    });
    if let Some(m) = &g.selection_method {
        let _ = write!(s, ",selection_method={m}");
        if g.selection_param != 0 {
            let _ = write!(s, ",selection_method_param={}", g.selection_param);
        }
        let names: Vec<String> = g
            .fields
            .iter()
            .map(|(id, mask)| {
                let f = fields::get(*id);
                match mask {
                    Some(m) if *m != user_mask(f) => {
                        format!("{}={}", mf_name(*id), format_value(f, *m))
                    }
                    _ => mf_name(*id).to_string(),
                }
            })
            .collect();
        match names.len() {
            0 => {}
            1 => {
                let _ = write!(s, ",fields={}", names[0]);
            }
            _ => {
                let _ = write!(s, ",fields({})", names.join(","));
            }
        }
    }
    for b in &g.buckets {
        s.push_str(",bucket=");
        s.push_str(&format_bucket(b));
    }
    s
}

fn format_bucket(b: &Bucket) -> String {
    let mut s = format!("bucket_id:{},", b.id.unwrap_or(0));
    if b.weight != 1 {
        let _ = write!(s, "weight:{},", b.weight);
    }
    if let Some(p) = b.watch_port {
        let _ = write!(s, "watch_port:{},", port_name(p));
    }
    s.push_str("actions=");
    let acts: Vec<Action> = b.actions.iter().map(to_of15).collect();
    s.push_str(&format_actions_of15(&acts));
    s
}

/// OpenFlow 1.5 has only `set_field`: express writes as one.
fn to_of15(a: &Action) -> Action {
    let sf = |field: FieldId, value: u128| Action::SetField {
        field,
        value,
        mask: user_mask(fields::get(field)),
    };
    match a {
        Action::Load { dst, value } => {
            let m = if dst.n_bits >= 128 {
                u128::MAX
            } else {
                ((1u128 << dst.n_bits) - 1) << dst.ofs
            };
            Action::SetField {
                field: dst.field,
                value: value << dst.ofs,
                mask: m,
            }
        }
        Action::ModDlSrc(m) => sf(FieldId::DlSrc, *m as u128),
        Action::ModDlDst(m) => sf(FieldId::DlDst, *m as u128),
        Action::ModNwSrc(m) => sf(FieldId::NwSrc, *m as u128),
        Action::ModNwDst(m) => sf(FieldId::NwDst, *m as u128),
        Action::ModNwTos(m) => sf(FieldId::NwTos, *m as u128),
        Action::ModNwTtl(m) => sf(FieldId::NwTtl, *m as u128),
        Action::ModTpSrc(m) => sf(FieldId::TcpSrc, *m as u128),
        Action::ModTpDst(m) => sf(FieldId::TcpDst, *m as u128),
        other => other.clone(),
    }
}

fn format_actions_of15(actions: &[Action]) -> String {
    if actions.is_empty() {
        return "drop".into();
    }
    let parts: Vec<String> = actions
        .iter()
        .map(|a| match a {
            Action::SetField { field, value, mask } => {
                let f = fields::get(*field);
                if *mask == user_mask(f) {
                    format!("set_field:{}->{}", format_value(f, *value), mf_name(*field))
                } else {
                    format!(
                        "set_field:{}/{}->{}",
                        format_value(f, *value),
                        format_value(f, *mask),
                        mf_name(*field)
                    )
                }
            }
            other => format_action(other),
        })
        .collect();
    parts.join(",")
}

/// Print a key as a `trace --flow` style match of every non-zero field
/// (debug aid).
pub fn format_key(k: &FlowKey) -> String {
    let mut full = FlowKey::ZERO;
    for f in fields::all() {
        if f.read(k) != 0 {
            f.write(&mut full, user_mask(f));
        }
    }
    format_match(&Match {
        value: k.masked(&full),
        mask: full,
    })
}
