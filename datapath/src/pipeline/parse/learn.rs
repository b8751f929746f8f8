//! `learn(...)` and `fin_timeout(...)`, as OVS's `lib/learn.c` parses
//! them (ovs-actions(7)).
//!
//! Keywords: `table`, `idle_timeout`, `hard_timeout`, `fin_idle_timeout`,
//! `fin_hard_timeout`, `priority`, `cookie`, `send_flow_rem`,
//! `delete_learned`, `limit`, `result_dst`. Every other item is a spec:
//! - `F[]`, `F[a..b]`, `F` (match the packet's own bits),
//! - `D[..]=S[..]` (match D against the packet's S), `F=VALUE` (a full
//!   field: the field's own value syntax) or `D[a..b]=INT` (a constant),
//! - `load:S[..]->D[..]`, `load:INT->D[..]`,
//! - `output:F[..]`.

use super::actions::{parse_subfield, same_width};
use super::value::{parse_field_value, parse_uint};
use super::{Item, Items, ParseError, need_value};
use crate::pipeline::fields::{self, FieldId};
use crate::pipeline::ir::{Action, LearnAction, LearnSpec, LearnSrc, SubField};

fn bad(pos: usize, tok: &str, problem: impl Into<String>, exp: impl Into<String>) -> ParseError {
    ParseError::new(pos, tok, problem, exp)
}

/// `NAME[range]` or a bare field name (the whole field), as OVS's
/// `mf_parse_subfield()`.
fn subfield(s: &str, pos: usize) -> Result<SubField, ParseError> {
    if s.contains('[') {
        return parse_subfield(s, pos);
    }
    let f = fields::lookup(s).ok_or_else(|| {
        bad(
            pos,
            s,
            "unknown field",
            "a field name or NXM/OXM name with an optional [range]",
        )
    })?;
    Ok(SubField {
        field: f.id,
        ofs: 0,
        n_bits: f.bits,
    })
}

fn num<T: TryFrom<u128>>(s: &str, pos: usize, what: &str) -> Result<T, ParseError> {
    parse_uint(s)
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| bad(pos, s, format!("bad {what}"), "a number in range"))
}

fn fits(v: u128, n_bits: u16) -> bool {
    n_bits >= 128 || v >> n_bits == 0
}

/// Parse the inside of `learn(...)`.
pub(crate) fn parse_learn(it: &Item<'_>) -> Result<Action, ParseError> {
    let mut l = LearnAction {
        table: 1,
        idle_timeout: 0,
        hard_timeout: 0,
        fin_idle_timeout: 0,
        fin_hard_timeout: 0,
        priority: crate::pipeline::ir::DEFAULT_PRIORITY,
        cookie: 0,
        send_flow_rem: false,
        delete_learned: false,
        limit: 0,
        result_dst: None,
        specs: Vec::new(),
    };
    if !it.paren {
        return Err(bad(it.key_pos, it.key, "learn needs", "learn(SPEC,...)"));
    }
    // The learned flow's protocol so far, for its fields' prerequisites
    // (OVS `learn_check()`).
    let (mut dl_type, mut nw_proto): (Option<u16>, Option<u8>) = (None, None);
    let prereq = |dst: &SubField, dl: Option<u16>, np: Option<u8>, pos: usize, tok: &str| {
        let f = fields::get(dst.field);
        if fields::prereq_satisfied(f.prereq, dl, np) {
            Ok(())
        } else {
            Err(bad(
                pos,
                tok,
                format!(
                    "learned flow field {} lacks its prerequisite {}",
                    f.name,
                    super::prereq_name(f.prereq)
                ),
                "eth_type=/nw_proto= specs before it",
            ))
        }
    };
    for sub in Items::new(it.value.unwrap_or(""), it.value_pos) {
        let (k, kp, vp) = (sub.key, sub.key_pos, sub.value_pos);
        let val = || need_value(k, kp, sub.value);
        match k {
            "table" => {
                let v = val()?;
                l.table = parse_uint(v)
                    .and_then(|n| u8::try_from(n).ok())
                    .filter(|t| *t != 255)
                    .ok_or_else(|| bad(vp, v, "bad table id", "a table number 0..254"))?;
            }
            "priority" => l.priority = num(val()?, vp, "priority")?,
            "idle_timeout" => l.idle_timeout = num(val()?, vp, "idle_timeout")?,
            "hard_timeout" => l.hard_timeout = num(val()?, vp, "hard_timeout")?,
            "fin_idle_timeout" => l.fin_idle_timeout = num(val()?, vp, "fin_idle_timeout")?,
            "fin_hard_timeout" => l.fin_hard_timeout = num(val()?, vp, "fin_hard_timeout")?,
            "cookie" => l.cookie = num(val()?, vp, "cookie")?,
            "limit" => l.limit = num(val()?, vp, "limit")?,
            "send_flow_rem" if sub.value.is_none() => l.send_flow_rem = true,
            "delete_learned" if sub.value.is_none() => l.delete_learned = true,
            "result_dst" => {
                let v = val()?;
                let sf = subfield(v, vp)?;
                if sf.n_bits != 1 {
                    return Err(bad(
                        vp,
                        v,
                        "result_dst in 'learn' action must be a single bit",
                        "FIELD[bit]",
                    ));
                }
                if !fields::get(sf.field).writable {
                    return Err(bad(vp, v, "read-only field", "a writable field"));
                }
                l.result_dst = Some(sf);
            }
            "load" => {
                let v = val()?;
                let (a, b) = v
                    .split_once("->")
                    .ok_or_else(|| bad(vp, v, "missing `->' in", "load:SRC->DST[range]"))?;
                let bpos = vp + a.len() + 2;
                let dst = subfield(b, bpos)?;
                let src = match parse_uint(a) {
                    Some(n) => {
                        if !fits(n, dst.n_bits) {
                            return Err(bad(
                                vp,
                                a,
                                format!("value does not fit into {} bits", dst.n_bits),
                                "a smaller value",
                            ));
                        }
                        LearnSrc::Imm(n)
                    }
                    None => {
                        let src = subfield(a, vp)?;
                        same_width(&src, &dst, vp, v)?;
                        LearnSrc::Field(src)
                    }
                };
                if !fields::get(dst.field).writable {
                    return Err(bad(bpos, b, "read-only destination", "a writable field"));
                }
                prereq(&dst, dl_type, nw_proto, bpos, b)?;
                l.specs.push(LearnSpec::Load { dst, src });
            }
            "output" => {
                let v = val()?;
                l.specs.push(LearnSpec::Output {
                    src: subfield(v, vp)?,
                });
            }
            _ => {
                let dst = subfield(k, kp)?;
                let src = match sub.value {
                    None | Some("") => LearnSrc::Field(dst),
                    Some(v) => {
                        let f = fields::get(dst.field);
                        let whole = dst.ofs == 0 && dst.n_bits == f.bits;
                        if let Ok(src) = subfield(v, vp) {
                            if src.n_bits != dst.n_bits {
                                return Err(bad(
                                    vp,
                                    v,
                                    format!(
                                        "bit widths of {k} ({}) and {v} ({}) differ",
                                        dst.n_bits, src.n_bits
                                    ),
                                    "equal widths",
                                ));
                            }
                            LearnSrc::Field(src)
                        } else if whole {
                            let (x, _) = parse_field_value(f, v, vp, false)?;
                            LearnSrc::Imm(x)
                        } else {
                            let n = parse_uint(v).ok_or_else(|| {
                                bad(
                                    vp,
                                    v,
                                    "cannot be parsed as a subfield or an integer",
                                    "FIELD[range] or a number",
                                )
                            })?;
                            if !fits(n, dst.n_bits) {
                                return Err(bad(
                                    vp,
                                    v,
                                    format!("value does not fit into {} bits", dst.n_bits),
                                    "a smaller value",
                                ));
                            }
                            LearnSrc::Imm(n)
                        }
                    }
                };
                prereq(&dst, dl_type, nw_proto, kp, k)?;
                let whole = dst.ofs == 0 && dst.n_bits == fields::get(dst.field).bits;
                match (dst.field, src) {
                    (FieldId::DlType, LearnSrc::Imm(v)) if whole => dl_type = Some(v as u16),
                    (FieldId::NwProto, LearnSrc::Imm(v)) if whole => nw_proto = Some(v as u8),
                    _ => {}
                }
                l.specs.push(LearnSpec::Match { dst, src });
            }
        }
    }
    Ok(Action::Learn(Box::new(l)))
}

/// Parse `fin_timeout(idle_timeout=I,hard_timeout=H)`.
pub(crate) fn parse_fin_timeout(it: &Item<'_>) -> Result<Action, ParseError> {
    let (mut idle, mut hard) = (0, 0);
    for sub in Items::new(it.value.unwrap_or(""), it.value_pos) {
        let v = need_value(sub.key, sub.key_pos, sub.value)?;
        match sub.key {
            "idle_timeout" => idle = num(v, sub.value_pos, "idle_timeout")?,
            "hard_timeout" => hard = num(v, sub.value_pos, "hard_timeout")?,
            _ => {
                return Err(bad(
                    sub.key_pos,
                    sub.key,
                    "unknown fin_timeout option",
                    "idle_timeout=N or hard_timeout=N",
                ));
            }
        }
    }
    Ok(Action::FinTimeout { idle, hard })
}
