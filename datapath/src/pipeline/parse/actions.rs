//! Action lists: `output:1,load:0x1->NXM_NX_REG8[],ct(commit,...)`.

use conntrack::{NatRange, NatSpec};

use super::value::{self, parse_ipv4, parse_mac, parse_port, parse_uint};
use super::{Item, Items, MatchBuilder, ParseError, need_value, prereq_name};
use crate::key;
use crate::pipeline::fields::{self, FieldDef, FieldId, Prereq};
use crate::pipeline::ir::{Action, CtAction, CtZone, SubField};

/// Where an action list appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    /// A flow's actions: prerequisites are checked against its match.
    Flow,
    /// A group bucket: there is no match to check against.
    Bucket,
    /// Inside `ct(exec(...))`.
    CtExec,
}

const EXPECTED_ACTION: &str = "an action: output, resubmit, goto_table, load, move, set_field, mod_*, dec_ttl, ct, ct_clear, group, conjunction, learn, fin_timeout, note, drop, controller or a port";

/// Parse an action list starting at byte `base` of the line.
pub(crate) fn parse_actions(
    text: &str,
    base: usize,
    mb: &MatchBuilder,
    table: u8,
    ctx: Ctx,
) -> Result<Vec<Action>, ParseError> {
    let mut out = Vec::new();
    let mut drop_pos = None;
    let mut conj_pos = None;
    let mut other_pos = None;
    let mut goto_pos: Option<(usize, &str)> = None;
    for it in Items::new(text, base) {
        if let Some((p, t)) = goto_pos {
            return Err(ParseError::new(
                p,
                t,
                "goto_table must be the last action",
                "goto_table at the end of the list",
            ));
        }
        let a = parse_action(&it, mb, table, ctx)?;
        match &a {
            Action::Drop => drop_pos = Some(it.key_pos),
            Action::Conjunction { .. } => conj_pos = Some((it.key_pos, it.key)),
            Action::Note(_) => {}
            Action::GotoTable(_) => {
                goto_pos = Some((it.key_pos, it.key));
                other_pos = Some((it.key_pos, it.key));
            }
            _ => other_pos = Some((it.key_pos, it.key)),
        }
        out.push(a);
    }
    if let Some(p) = drop_pos {
        if out.len() > 1 {
            return Err(ParseError::new(
                p,
                "drop",
                "\"drop\" must not be combined with other actions",
                "drop alone, or other actions without drop",
            ));
        }
        out.clear();
    }
    if let (Some((p, t)), Some(_)) = (other_pos, conj_pos) {
        return Err(ParseError::new(
            p,
            t,
            "\"conjunction\" actions may only be combined with \"note\", not",
            "conjunction and note actions only",
        ));
    }
    Ok(out)
}

fn bad(
    it_pos: usize,
    tok: &str,
    problem: impl Into<String>,
    expected: impl Into<String>,
) -> ParseError {
    ParseError::new(it_pos, tok, problem, expected)
}

/// A copy's source and destination must be as wide as each other (`move`,
/// and learn's `D=S` and `load:S->D`).
pub(crate) fn same_width(
    src: &SubField,
    dst: &SubField,
    pos: usize,
    tok: &str,
) -> Result<(), ParseError> {
    if src.n_bits != dst.n_bits {
        return Err(bad(
            pos,
            tok,
            format!(
                "source is {} bits but destination is {} bits",
                src.n_bits, dst.n_bits
            ),
            "equal widths",
        ));
    }
    Ok(())
}

/// `NAME[]`, `NAME[n]`, `NAME[a..b]`.
pub(crate) fn parse_subfield(s: &str, pos: usize) -> Result<SubField, ParseError> {
    let err = |p: &str| {
        bad(
            pos,
            s,
            p.to_string(),
            "FIELD[], FIELD[bit] or FIELD[start..end] with a known field",
        )
    };
    let open = s.find('[').ok_or_else(|| err("missing bit range in"))?;
    if !s.ends_with(']') {
        return Err(err("unterminated bit range in"));
    }
    let name = &s[..open];
    let f = fields::lookup(name).ok_or_else(|| {
        bad(
            pos,
            name,
            "unknown field",
            "an NXM/OXM field name such as NXM_NX_REG0",
        )
    })?;
    let range = &s[open + 1..s.len() - 1];
    let (ofs, n_bits) = if range.is_empty() {
        (0u32, f.bits as u32)
    } else if let Some((a, b)) = range.split_once("..") {
        let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) else {
            return Err(err("bad bit range in"));
        };
        if b < a {
            return Err(err("bit range ends before it starts in"));
        }
        (a, b - a + 1)
    } else {
        let Ok(a) = range.parse::<u32>() else {
            return Err(err("bad bit range in"));
        };
        (a, 1)
    };
    if ofs + n_bits > f.bits as u32 {
        return Err(bad(
            pos,
            s,
            format!("bit range exceeds the {}-bit field", f.bits),
            format!("bits within 0..{}", f.bits - 1),
        ));
    }
    Ok(SubField {
        field: f.id,
        ofs: ofs as u16,
        n_bits: n_bits as u16,
    })
}

/// `tp_src`/`tp_dst` written in an action become the protocol's own field, so
/// that prerequisites and printing are exact.
fn concrete_field(id: FieldId, mb: &MatchBuilder) -> FieldId {
    let proto = mb.nw_proto();
    match (id, proto) {
        (FieldId::TpSrc, Some(key::ip_proto::UDP)) => FieldId::UdpSrc,
        (FieldId::TpDst, Some(key::ip_proto::UDP)) => FieldId::UdpDst,
        (FieldId::TpSrc, _) => FieldId::TcpSrc,
        (FieldId::TpDst, _) => FieldId::TcpDst,
        (x, _) => x,
    }
}

fn check_prereq(
    f: &FieldDef,
    mb: &MatchBuilder,
    ctx: Ctx,
    pos: usize,
    tok: &str,
    role: &str,
) -> Result<(), ParseError> {
    if ctx == Ctx::Bucket {
        return Ok(());
    }
    if !mb.prereq_ok(f.prereq) {
        return Err(bad(
            pos,
            tok,
            format!(
                "{role} field {} lacks its prerequisite {}",
                f.name,
                prereq_name(f.prereq)
            ),
            format!("{} in the flow's match", prereq_name(f.prereq)),
        ));
    }
    if super::is_ct_tuple(f.id) && !mb.ct_valid() {
        return Err(bad(
            pos,
            tok,
            format!("{role} field {} needs a valid connection", f.name),
            "ct_state=+trk-inv (or +new/+est...) in the match",
        ));
    }
    Ok(())
}

fn is_ct_meta(id: FieldId) -> bool {
    matches!(id, FieldId::CtMark | FieldId::CtLabel)
}

fn check_dst(
    f: &FieldDef,
    mb: &MatchBuilder,
    ctx: Ctx,
    pos: usize,
    tok: &str,
) -> Result<(), ParseError> {
    if ctx == Ctx::CtExec {
        if !is_ct_meta(f.id) {
            return Err(bad(
                pos,
                tok,
                format!("ct exec may not set {}", f.name),
                "only ct_mark and ct_label inside ct(exec(...))",
            ));
        }
        return Ok(());
    }
    if is_ct_meta(f.id) {
        return Err(bad(
            pos,
            tok,
            "cannot set CT fields outside of ct action",
            "ct(commit,exec(set_field:...->ct_mark))",
        ));
    }
    if !f.writable {
        return Err(bad(
            pos,
            tok,
            format!("field {} is read-only", f.name),
            "a writable field",
        ));
    }
    check_prereq(f, mb, ctx, pos, tok, "destination")
}

fn parse_table(s: &str, pos: usize) -> Result<u8, ParseError> {
    parse_uint(s)
        .and_then(|n| u8::try_from(n).ok())
        .filter(|&t| t != 255)
        .ok_or_else(|| bad(pos, s, "bad table id", "a table number 0..254"))
}

fn port_or_err(s: &str, pos: usize) -> Result<u32, ParseError> {
    parse_port(s).ok_or_else(|| {
        bad(
            pos,
            s,
            "bad port",
            "a port number 0..65279 or LOCAL, IN_PORT, CONTROLLER",
        )
    })
}

fn parse_action(
    it: &Item<'_>,
    mb: &MatchBuilder,
    table: u8,
    ctx: Ctx,
) -> Result<Action, ParseError> {
    let (k, kp, vp) = (it.key, it.key_pos, it.value_pos);
    let v = it.value;
    if ctx == Ctx::CtExec && !matches!(k, "load" | "set_field") {
        return Err(bad(
            kp,
            k,
            "ct exec allows only",
            "set_field or load to ct_mark / ct_label",
        ));
    }
    let val = || need_value(k, kp, v);
    Ok(match k {
        "drop" if v.is_none() => Action::Drop,
        "learn" => super::learn::parse_learn(it)?,
        "fin_timeout" if it.paren => super::learn::parse_fin_timeout(it)?,
        "output" if it.paren => {
            let (mut port, mut max_len) = (None, None);
            for sub in Items::new(v.unwrap_or(""), vp) {
                let sv = need_value(sub.key, sub.key_pos, sub.value)?;
                match sub.key {
                    "port" => port = Some(port_or_err(sv, sub.value_pos)?),
                    "max_len" => {
                        max_len = Some(
                            parse_uint(sv)
                                .and_then(|n| u16::try_from(n).ok())
                                .ok_or_else(|| {
                                    bad(sub.value_pos, sv, "bad max_len", "a 16-bit number")
                                })?,
                        )
                    }
                    _ => {
                        return Err(bad(
                            sub.key_pos,
                            sub.key,
                            "unknown output option",
                            "port=P or max_len=N",
                        ));
                    }
                }
            }
            let port =
                port.ok_or_else(|| bad(kp, k, "missing port in", "output(port=P,max_len=N)"))?;
            Action::Output { port, max_len }
        }
        "output" => {
            let s = val()?;
            if s.contains('[') {
                let sf = parse_subfield(s, vp)?;
                check_prereq(fields::get(sf.field), mb, ctx, vp, s, "source")?;
                Action::OutputField(sf)
            } else {
                output_port(port_or_err(s, vp)?)
            }
        }
        "controller" | "CONTROLLER" if it.paren => Action::Controller {
            args: controller_args(v.unwrap_or(""), vp)?,
        },
        "controller" | "CONTROLLER" => {
            let max_len = match v {
                Some(s) => parse_uint(s)
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| bad(vp, s, "bad max_len", "CONTROLLER:N with a 16-bit N"))?,
                None => u16::MAX,
            };
            Action::Controller {
                args: if max_len == u16::MAX {
                    String::new()
                } else {
                    format!("max_len={max_len}")
                },
            }
        }
        "resubmit" => {
            let s = val()?;
            if it.paren {
                let parts: Vec<&str> = s.split(',').collect();
                if parts.len() > 3 {
                    return Err(bad(
                        vp,
                        s,
                        "too many resubmit arguments",
                        "resubmit(PORT,TABLE[,ct])",
                    ));
                }
                let p = parts[0].trim();
                let port = if p.is_empty() {
                    None
                } else {
                    Some(port_or_err(p, vp)?)
                }
                .filter(|&p| p != key::OFPP_IN_PORT);
                let t = parts.get(1).map(|t| t.trim()).unwrap_or("");
                let tbl = if t.is_empty() {
                    None
                } else {
                    Some(parse_table(t, vp)?)
                };
                let ct = match parts.get(2).map(|c| c.trim()) {
                    None => false,
                    Some("ct") => true,
                    Some(o) => return Err(bad(vp, o, "unknown resubmit option", "ct")),
                };
                if port.is_none() && tbl.is_none() {
                    return Err(bad(
                        kp,
                        k,
                        "resubmit needs a port or a table in",
                        "resubmit(PORT,TABLE)",
                    ));
                }
                if ct && ctx == Ctx::Flow && !mb.ct_valid() {
                    return Err(bad(
                        kp,
                        k,
                        "resubmit(...,ct) needs a valid connection match for",
                        "ct_state=+trk-inv (or +new/+est...) in the match",
                    ));
                }
                Action::Resubmit {
                    port,
                    table: tbl,
                    ct,
                }
            } else {
                let port = port_or_err(s, vp)?;
                Action::Resubmit {
                    port: Some(port).filter(|&p| p != key::OFPP_IN_PORT),
                    table: None,
                    ct: false,
                }
            }
        }
        "goto_table" => {
            let s = val()?;
            let t = parse_table(s, vp)?;
            if ctx == Ctx::Flow && t <= table {
                return Err(bad(
                    vp,
                    s,
                    format!("goto_table must go to a later table than {table}"),
                    format!("a table > {table}"),
                ));
            }
            Action::GotoTable(t)
        }
        "load" => {
            let s = val()?;
            let (a, b) = s
                .split_once("->")
                .ok_or_else(|| bad(vp, s, "missing \"->\" in", "load:VALUE->FIELD[range]"))?;
            let bpos = vp + a.len() + 2;
            let dst = parse_subfield(b, bpos)?;
            let f = fields::get(dst.field);
            let dst = SubField {
                field: concrete_field(dst.field, mb),
                ..dst
            };
            let value = parse_uint(a)
                .ok_or_else(|| bad(vp, a, "bad load value", "a decimal or 0x hex number"))?;
            if dst.n_bits < 128 && value >> dst.n_bits != 0 {
                return Err(bad(
                    vp,
                    a,
                    format!("value does not fit in {} bits", dst.n_bits),
                    format!("a value < 2^{}", dst.n_bits),
                ));
            }
            check_dst(fields::get(dst.field), mb, ctx, bpos, b)?;
            let _ = f;
            Action::Load { dst, value }
        }
        "move" => {
            let s = val()?;
            let (a, b) = s.split_once("->").ok_or_else(|| {
                bad(
                    vp,
                    s,
                    "missing \"->\" in",
                    "move:FIELD[range]->FIELD[range]",
                )
            })?;
            let bpos = vp + a.len() + 2;
            let mut src = parse_subfield(a, vp)?;
            let mut dst = parse_subfield(b, bpos)?;
            src.field = concrete_field(src.field, mb);
            dst.field = concrete_field(dst.field, mb);
            same_width(&src, &dst, vp, s)?;
            check_prereq(fields::get(src.field), mb, ctx, vp, a, "source")?;
            check_dst(fields::get(dst.field), mb, ctx, bpos, b)?;
            Action::Move { src, dst }
        }
        "set_field" => {
            let s = val()?;
            let (a, b) = s
                .split_once("->")
                .ok_or_else(|| bad(vp, s, "missing \"->\" in", "set_field:VALUE[/MASK]->FIELD"))?;
            let bpos = vp + a.len() + 2;
            let f = fields::lookup(b).ok_or_else(|| {
                bad(
                    bpos,
                    b,
                    "unknown field",
                    "a field name such as reg0 or ip_dst",
                )
            })?;
            let f = fields::get(concrete_field(f.id, mb));
            let (value, mask) = value::parse_field_value(f, a, vp, true)?;
            check_dst(f, mb, ctx, bpos, b)?;
            Action::SetField {
                field: f.id,
                value,
                mask,
            }
        }
        "mod_dl_src" | "mod_dl_dst" => {
            let s = val()?;
            let mac =
                parse_mac(s).ok_or_else(|| bad(vp, s, "bad MAC address", "xx:xx:xx:xx:xx:xx"))?;
            if k == "mod_dl_src" {
                Action::ModDlSrc(mac)
            } else {
                Action::ModDlDst(mac)
            }
        }
        "mod_nw_src" | "mod_nw_dst" => {
            let s = val()?;
            let ip = parse_ipv4(s).ok_or_else(|| bad(vp, s, "bad IPv4 address", "a.b.c.d"))?;
            if k == "mod_nw_src" {
                Action::ModNwSrc(ip)
            } else {
                Action::ModNwDst(ip)
            }
        }
        "mod_nw_tos" => {
            let s = val()?;
            let n = parse_uint(s)
                .and_then(|n| u8::try_from(n).ok())
                .filter(|n| n & 3 == 0)
                .ok_or_else(|| bad(vp, s, "bad TOS value", "a multiple of 4 in 0..252"))?;
            Action::ModNwTos(n)
        }
        "mod_nw_ecn" => {
            let s = val()?;
            let n = parse_uint(s)
                .filter(|&n| n <= 3)
                .ok_or_else(|| bad(vp, s, "bad ECN value", "0..3"))?;
            Action::SetField {
                field: FieldId::NwEcn,
                value: n,
                mask: 3,
            }
        }
        "mod_nw_ttl" => {
            let s = val()?;
            let n = parse_uint(s)
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| bad(vp, s, "bad TTL", "0..255"))?;
            if ctx == Ctx::Flow && !mb.prereq_ok(Prereq::Ip) {
                return Err(bad(
                    kp,
                    k,
                    "set_field nw_ttl lacks its prerequisite ip:",
                    "ip in the flow's match",
                ));
            }
            Action::ModNwTtl(n)
        }
        "mod_tp_src" | "mod_tp_dst" => {
            let s = val()?;
            let n = parse_uint(s)
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| bad(vp, s, "bad port", "0..65535"))?;
            if k == "mod_tp_src" {
                Action::ModTpSrc(n)
            } else {
                Action::ModTpDst(n)
            }
        }
        "dec_ttl" if v.is_none() => Action::DecTtl,
        "ct_clear" if v.is_none() => Action::CtClear,
        "ct" => Action::Ct(parse_ct(it, mb, ctx)?),
        "group" => {
            let s = val()?;
            Action::Group(
                parse_uint(s)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|&g| g <= 0xffff_ff00)
                    .ok_or_else(|| bad(vp, s, "bad group id", "a group number"))?,
            )
        }
        "conjunction" if it.paren => {
            let s = v.unwrap_or("");
            let e = || {
                bad(
                    vp,
                    s,
                    "bad conjunction",
                    "conjunction(ID,K/N) with 1 <= K <= N, 2 <= N <= 64",
                )
            };
            let (id, kn) = s.split_once(',').ok_or_else(e)?;
            let (kk, n) = kn.split_once('/').ok_or_else(e)?;
            let id = parse_uint(id.trim())
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(e)?;
            let clause = kk.trim().parse::<u8>().map_err(|_| e())?;
            let n_clauses = n.trim().parse::<u8>().map_err(|_| e())?;
            if !(2..=64).contains(&n_clauses) || clause == 0 || clause > n_clauses {
                return Err(e());
            }
            Action::Conjunction {
                id,
                clause,
                n_clauses,
            }
        }
        "note" => {
            let s = v.unwrap_or("");
            let mut bytes = Vec::new();
            let hex: String = s.chars().filter(|c| *c != '.').collect();
            if !hex.len().is_multiple_of(2) || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(
                    vp,
                    s,
                    "bad note",
                    "hex bytes, optionally separated by dots",
                ));
            }
            for i in (0..hex.len()).step_by(2) {
                bytes.push(
                    u8::from_str_radix(&hex[i..i + 2], 16)
                        .map_err(|_| bad(vp, s, "bad note", "hex bytes"))?,
                );
            }
            Action::Note(bytes)
        }
        "strip_vlan" | "pop_vlan" | "push_vlan" | "mod_vlan_vid" | "mod_vlan_pcp" | "normal"
        | "NORMAL" | "flood" | "FLOOD" | "all" | "ALL" | "multipath" | "bundle" | "bundle_load"
        | "enqueue" | "set_queue" | "pop_queue" | "sample" | "meter" | "clone" | "push_mpls"
        | "pop_mpls" | "set_tunnel" | "set_tunnel64" | "exit" | "write_metadata"
        | "write_actions" | "clear_actions" | "check_pkt_larger" => {
            return Err(bad(kp, k, "unsupported action", EXPECTED_ACTION));
        }
        _ if v.is_none() => match parse_port(k) {
            Some(p) => output_port(p),
            None => return Err(bad(kp, k, "unknown action", EXPECTED_ACTION)),
        },
        _ => return Err(bad(kp, k, "unknown action", EXPECTED_ACTION)),
    })
}

fn output_port(p: u32) -> Action {
    if p == key::OFPP_CONTROLLER {
        Action::Controller {
            args: String::new(),
        }
    } else {
        Action::Output {
            port: p,
            max_len: None,
        }
    }
}

/// Normalise `controller(...)` arguments to the order and spelling OVS
/// prints (`reason=..,max_len=..,id=..,userdata=..,pause`), dropping
/// defaults.
fn controller_args(s: &str, base: usize) -> Result<String, ParseError> {
    let (mut reason, mut max_len, mut id, mut userdata, mut pause) =
        (None, None, None, None, false);
    for it in Items::new(s, base) {
        match (it.key, it.value) {
            ("reason", Some(r)) => {
                if !matches!(
                    r,
                    "action" | "no_match" | "invalid_ttl" | "action_set" | "group" | "packet_out"
                ) {
                    return Err(bad(
                        it.value_pos,
                        r,
                        "unknown controller reason",
                        "action, no_match, invalid_ttl, action_set, group or packet_out",
                    ));
                }
                reason = Some(r).filter(|r| *r != "action");
            }
            ("max_len", Some(n)) => {
                let n = parse_uint(n)
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| bad(it.value_pos, n, "bad max_len", "a 16-bit number"))?;
                max_len = Some(n).filter(|&n| n != u16::MAX);
            }
            ("id", Some(n)) => {
                let n = parse_uint(n)
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| bad(it.value_pos, n, "bad controller id", "a 16-bit number"))?;
                id = Some(n).filter(|&n| n != 0);
            }
            ("userdata", Some(u)) => {
                let hex: String = u.chars().filter(|c| *c != '.').collect();
                if hex.is_empty()
                    || !hex.len().is_multiple_of(2)
                    || !hex.bytes().all(|c| c.is_ascii_hexdigit())
                {
                    return Err(bad(
                        it.value_pos,
                        u,
                        "bad userdata",
                        "hex bytes separated by dots",
                    ));
                }
                let parts: Vec<&str> = (0..hex.len()).step_by(2).map(|i| &hex[i..i + 2]).collect();
                userdata = Some(parts.join(".").to_ascii_lowercase());
            }
            ("pause", None) => pause = true,
            _ => {
                return Err(bad(
                    it.key_pos,
                    it.key,
                    "unknown controller option",
                    "reason=, max_len=, id=, userdata= or pause",
                ));
            }
        }
    }
    let mut out = Vec::new();
    if let Some(r) = reason {
        out.push(format!("reason={r}"));
    }
    if let Some(m) = max_len {
        out.push(format!("max_len={m}"));
    }
    if let Some(i) = id {
        out.push(format!("id={i}"));
    }
    if let Some(u) = userdata {
        out.push(format!("userdata={u}"));
    }
    if pause {
        out.push("pause".into());
    }
    Ok(out.join(","))
}

fn parse_ct(it: &Item<'_>, mb: &MatchBuilder, ctx: Ctx) -> Result<CtAction, ParseError> {
    let mut ct = CtAction {
        commit: false,
        force: false,
        table: None,
        zone: CtZone::Imm(0),
        nat: None,
        exec: Vec::new(),
        alg: None,
    };
    let inner = if it.paren { it.value.unwrap_or("") } else { "" };
    if !it.paren && it.value.is_some() {
        return Err(bad(it.key_pos, it.key, "bad ct syntax", "ct or ct(ARGS)"));
    }
    let mut alg_pos = None;
    for sub in Items::new(inner, it.value_pos) {
        let (k, kp, v, vp) = (sub.key, sub.key_pos, sub.value, sub.value_pos);
        match k {
            "commit" if v.is_none() => ct.commit = true,
            "force" if v.is_none() => ct.force = true,
            "table" => ct.table = Some(parse_table(need_value(k, kp, v)?, vp)?),
            "zone" => {
                let s = need_value(k, kp, v)?;
                ct.zone = if s.contains('[') {
                    let sf = parse_subfield(s, vp)?;
                    if sf.n_bits != 16 {
                        return Err(bad(
                            vp,
                            s,
                            "zone field must be 16 bits",
                            "zone=FIELD[a..a+15]",
                        ));
                    }
                    CtZone::Field(sf)
                } else {
                    CtZone::Imm(
                        parse_uint(s)
                            .and_then(|n| u16::try_from(n).ok())
                            .ok_or_else(|| {
                                bad(vp, s, "bad zone", "0..65535 or a 16-bit field range")
                            })?,
                    )
                };
            }
            "nat" => {
                if ct.nat.is_some() {
                    return Err(bad(kp, k, "nat given twice in", "one nat clause"));
                }
                ct.nat = Some(if sub.paren {
                    parse_nat(v.unwrap_or(""), vp)?
                } else {
                    NatSpec::Existing
                });
            }
            "exec" if sub.paren => {
                ct.exec = parse_actions(v.unwrap_or(""), vp, mb, 0, Ctx::CtExec)?;
            }
            "alg" => {
                let s = need_value(k, kp, v)?;
                if !matches!(s, "ftp" | "tftp") {
                    return Err(bad(vp, s, "unknown alg", "ftp or tftp"));
                }
                alg_pos = Some(vp);
                ct.alg = Some(s.to_string());
            }
            _ => {
                return Err(bad(
                    kp,
                    k,
                    "unknown ct option",
                    "commit, force, table=, zone=, nat, nat(...), exec(...), alg=",
                ));
            }
        }
    }
    if ct.force && !ct.commit {
        return Err(bad(
            it.key_pos,
            "force",
            "\"force\" flag requires \"commit\" flag in",
            "ct(commit,force,...)",
        ));
    }
    if !ct.exec.is_empty() && !ct.commit {
        return Err(bad(
            it.key_pos,
            it.key,
            "ct exec requires commit in",
            "ct(commit,exec(...))",
        ));
    }
    if ctx == Ctx::Flow {
        if !mb.prereq_ok(Prereq::Ip) && mb.dl_type() != Some(key::eth_type::IPV6) {
            return Err(bad(
                it.key_pos,
                it.key,
                "ct requires an ip match for",
                "ip (or tcp, udp, icmp) in the flow's match",
            ));
        }
        if let (Some(alg), Some(p)) = (&ct.alg, alg_pos) {
            let pre = if alg == "ftp" {
                Prereq::Tcp
            } else {
                Prereq::Udp
            };
            if !mb.prereq_ok(pre) {
                return Err(bad(p, alg, "alg needs a match on", prereq_name(pre)));
            }
        }
    }
    Ok(ct)
}

/// `src[=IP[-IP][:PORT[-PORT]]][,random|hash|persistent]` or `dst...`.
fn parse_nat(s: &str, base: usize) -> Result<NatSpec, ParseError> {
    let mut kind = None;
    let mut r = NatRange::default();
    for it in Items::new(s, base) {
        match (it.key, it.value) {
            ("src" | "dst", v) => {
                if kind.is_some() {
                    return Err(bad(
                        it.key_pos,
                        it.key,
                        "nat direction given twice",
                        "one of src or dst",
                    ));
                }
                kind = Some(it.key);
                if let Some(v) = v {
                    parse_nat_range(v, it.value_pos, &mut r)?;
                }
            }
            ("random", None) => r.random = true,
            ("hash", None) => r.hash = true,
            ("persistent", None) => r.persistent = true,
            _ => {
                return Err(bad(
                    it.key_pos,
                    it.key,
                    "unknown nat option",
                    "src=, dst=, random, hash or persistent",
                ));
            }
        }
    }
    if r.random && r.hash {
        return Err(bad(
            base,
            s,
            "both \"hash\" and \"random\" are specified in",
            "at most one of hash and random",
        ));
    }
    match kind {
        Some("src") => Ok(NatSpec::Src(r)),
        Some("dst") => Ok(NatSpec::Dst(r)),
        _ => Err(bad(
            base,
            s,
            "nat needs a direction",
            "nat(src=...) or nat(dst=...)",
        )),
    }
}

fn parse_nat_range(s: &str, pos: usize, r: &mut NatRange) -> Result<(), ParseError> {
    let e = || bad(pos, s, "bad nat range", "IP[-IP][:PORT[-PORT]] (IPv4)");
    let (addrs, ports) = match s.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let (a, b) = match addrs.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (addrs, None),
    };
    r.addr_min = parse_ipv4(a).ok_or_else(e)?;
    r.addr_max = match b {
        Some(b) => parse_ipv4(b).ok_or_else(e)?,
        None => r.addr_min,
    };
    if r.addr_max < r.addr_min {
        return Err(e());
    }
    if let Some(p) = ports {
        let (a, b) = match p.split_once('-') {
            Some((a, b)) => (a, Some(b)),
            None => (p, None),
        };
        r.port_min = a.parse().map_err(|_| e())?;
        r.port_max = match b {
            Some(b) => b.parse().map_err(|_| e())?,
            None => r.port_min,
        };
        if r.port_max < r.port_min || r.port_min == 0 {
            return Err(e());
        }
    }
    Ok(())
}
