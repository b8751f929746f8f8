//! `ovs-ofctl` flow and group text -> IR.
//!
//! Accepts what `ovs-ofctl add-flow(s)` / `add-group(s)` accept for the
//! fields of [`super::fields`] and the actions of [`super::ir`], tokenised
//! exactly as OVS's `ofputil_parse_key_value()` does: `key=value`,
//! `key:value` or `key(value)` items separated by commas and/or white space,
//! with everything after `actions=` being the action list.
//!
//! Where OVS silently rewrites a flow, flowpath refuses it instead, so that
//! what is loaded is what was written:
//! - a match field whose protocol prerequisite is missing (`nw_src` without
//!   `ip`, `tp_dst` without `tcp`/`udp`, `icmp_type` without `icmp`) is an
//!   error; OVS 3.1 drops the field and logs "normalization changed";
//! - the same field given twice with different values is an error; OVS keeps
//!   the last one;
//! - `igmp` is accepted as `ip,nw_proto=2` (OVS 3.1 rejects the shorthand,
//!   older Windows builds accepted it).
//!
//! Action checks follow OVS: `load`/`set_field`/`move` need the match to pin
//! the protocol of the fields they touch, `mod_nw_ttl` needs `ip`, `ct()`
//! needs `ip` (and `alg=ftp` needs `tcp`), `resubmit(,T,ct)` needs a valid
//! `ct_state`, `ct_mark`/`ct_label` may only be set inside `ct(exec(...))`,
//! `conjunction` may only be combined with `note`, and `goto_table` must go
//! forward. Like OVS, the legacy `mod_nw_*`/`mod_tp_*` actions are accepted
//! without a matching protocol and do nothing to packets that lack it.

mod actions;
mod group;
mod value;

/// Value helpers shared with the printer.
pub(crate) mod value_helpers {
    pub(crate) use super::value::{ct_flag_name, tcp_flag_name, user_mask};
}

use std::fmt;

use super::fields::{self, FieldDef, FieldId, Prereq};
use super::ir::{DEFAULT_PRIORITY, Flow, Match};
use crate::key::{self, slot};

pub use group::{parse_group, parse_groups};

/// A syntax or consistency error in one flow or group spec.
///
/// `column` is 1-based (in characters) within the spec; `token` is the text
/// at fault; the message reads `{problem} "{token}" (expected {expected})`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {problem} \"{token}\" (expected {expected})")]
pub struct ParseError {
    /// 1-based column of the offending token.
    pub column: usize,
    /// The offending token.
    pub token: String,
    /// What is wrong with it.
    pub problem: String,
    /// What would have been accepted.
    pub expected: String,
}

impl ParseError {
    fn new(
        pos: usize,
        token: &str,
        problem: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        ParseError {
            column: pos + 1,
            token: token.to_string(),
            problem: problem.into(),
            expected: expected.into(),
        }
    }
}

/// One error located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// File name as given.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// The error within the line (its column is relative to the line).
    pub error: ParseError,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.error;
        write!(
            f,
            "{}:{}:{}: {} \"{}\" (expected {})",
            self.file, self.line, e.column, e.problem, e.token, e.expected
        )
    }
}

/// Errors of a whole flows/groups file. Loading is atomic: when this is
/// returned nothing was loaded. Holds every bad line, first one first;
/// `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileError {
    /// The errors, in line order (never empty).
    pub errors: Vec<LineError>,
}

impl FileError {
    /// The first error.
    pub fn first(&self) -> &LineError {
        &self.errors[0]
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A `del-flows` / `dump-flows` / `trace --flow` style spec: a match plus
/// optional header fields, no actions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowSpec {
    /// `table=N`, when given.
    pub table: Option<u8>,
    /// `priority=N`, when given.
    pub priority: Option<u16>,
    /// `cookie=V[/M]`, as (value, mask); a bare `cookie=V` has mask all ones.
    pub cookie: Option<(u64, u64)>,
    /// `out_port=P`, when given.
    pub out_port: Option<u32>,
    /// The match. For `trace --flow`, `matches.value` is the packet's key.
    pub matches: Match,
}

// ---------------------------------------------------------------------------
// Tokeniser

/// One `key[=:(]value` item; positions are byte offsets into the line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item<'a> {
    pub key: &'a str,
    pub key_pos: usize,
    pub value: Option<&'a str>,
    pub value_pos: usize,
    /// Whether the value was given in parentheses.
    pub paren: bool,
}

/// Splits `s` (which starts at byte `base` of the line) into items, exactly
/// as OVS's `ofputil_parse_key_value()`.
pub(crate) struct Items<'a> {
    s: &'a str,
    pos: usize,
    base: usize,
}

impl<'a> Items<'a> {
    pub(crate) fn new(s: &'a str, base: usize) -> Self {
        Items { s, pos: 0, base }
    }
}

fn value_len(s: &[u8], delims: &[u8]) -> usize {
    let mut n = 0;
    while n < s.len() && !delims.contains(&s[n]) {
        if s[n] == b'(' {
            let mut level = 0i32;
            loop {
                if n >= s.len() {
                    return n;
                }
                match s[n] {
                    b'(' => level += 1,
                    b')' => level -= 1,
                    _ => {}
                }
                n += 1;
                if level <= 0 {
                    break;
                }
            }
        } else {
            n += 1;
        }
    }
    n
}

impl<'a> Iterator for Items<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let b = self.s.as_bytes();
        while self.pos < b.len() && b", \t\r\n".contains(&b[self.pos]) {
            self.pos += 1;
        }
        if self.pos >= b.len() {
            return None;
        }
        let key_start = self.pos;
        let mut i = key_start;
        while i < b.len() && !b":=(, \t\r\n".contains(&b[i]) {
            i += 1;
        }
        let key = &self.s[key_start..i];
        let delim = b.get(i).copied();
        self.pos = if delim.is_some() { i + 1 } else { i };
        let delims: &[u8] = match delim {
            Some(b':') | Some(b'=') => b", \t\r\n",
            Some(b'(') => b")",
            _ => {
                return Some(Item {
                    key,
                    key_pos: self.base + key_start,
                    value: None,
                    value_pos: self.base + i,
                    paren: false,
                });
            }
        };
        let vstart = self.pos;
        let n = value_len(&b[vstart..], delims);
        let value = &self.s[vstart..vstart + n];
        self.pos = (vstart + n + 1).min(b.len());
        Some(Item {
            key,
            key_pos: self.base + key_start,
            value: Some(value),
            value_pos: self.base + vstart,
            paren: delim == Some(b'('),
        })
    }
}

// ---------------------------------------------------------------------------
// Match building

/// A match under construction: the fields given (for prerequisite checks)
/// and the value/mask so far.
#[derive(Debug, Default, Clone)]
pub(crate) struct MatchBuilder {
    pub m: Match,
    /// Fields set, with the position of their token, for prerequisite checks.
    pub given: Vec<(&'static FieldDef, usize, String)>,
}

impl MatchBuilder {
    /// The exact `dl_type`, when matched.
    pub fn dl_type(&self) -> Option<u16> {
        (self.m.mask.get(slot::DL_TYPE) == 0xffff).then(|| self.m.value.get(slot::DL_TYPE) as u16)
    }

    /// The exact `nw_proto`, when matched (IPv4 only).
    pub fn nw_proto(&self) -> Option<u8> {
        (self.m.mask.get(slot::NW_PROTO) == 0xff).then(|| self.m.value.get(slot::NW_PROTO) as u8)
    }

    pub fn prereq_ok(&self, p: Prereq) -> bool {
        fields::prereq_satisfied(p, self.dl_type(), self.nw_proto())
    }

    /// OVS `is_ct_valid()` for a match: a valid-connection state bit is
    /// required, or `+trk` together with an explicit `-inv`.
    pub fn ct_valid(&self) -> bool {
        use key::ct_state as cs;
        let v = self.m.value.get(slot::CT_STATE) as u8;
        let msk = self.m.mask.get(slot::CT_STATE) as u8;
        v & (cs::NEW | cs::EST | cs::REL | cs::RPL | cs::SNAT | cs::DNAT) != 0
            || (v & cs::TRK != 0 && msk & cs::INV != 0 && v & cs::INV == 0)
    }

    /// Add `value/mask` (user-visible) for field `f`; `pos`/`token` locate
    /// the text for errors.
    pub fn set(
        &mut self,
        f: &'static FieldDef,
        value: u128,
        mask: u128,
        pos: usize,
        token: &str,
    ) -> Result<(), ParseError> {
        let full = value::user_mask(f);
        let mask = mask & full;
        let value = value & mask;
        let old_m = f.read(&self.m.mask);
        let old_v = f.read(&self.m.value);
        if (old_v ^ value) & old_m & mask != 0 || (old_m != 0 && old_m != mask && old_m & mask != 0)
        {
            return Err(ParseError::new(
                pos,
                token,
                format!("conflicting match on {}", f.name),
                "each field at most once, with one value",
            ));
        }
        f.write(&mut self.m.mask, old_m | mask);
        f.write(&mut self.m.value, old_v | value);
        Ok(())
    }

    fn set_slot(
        &mut self,
        s: key::Slot,
        v: u64,
        pos: usize,
        token: &str,
        what: &str,
    ) -> Result<(), ParseError> {
        let om = self.m.mask.get(s);
        let ov = self.m.value.get(s);
        let full = s.word_mask() >> s.shift;
        if om != 0 && (om != full || ov != v) {
            return Err(ParseError::new(
                pos,
                token,
                format!("conflicting {what}"),
                "one protocol per flow",
            ));
        }
        self.m.mask.set_all(s);
        self.m.value.set(s, v);
        Ok(())
    }

    /// Protocol shorthand (`ip`, `tcp`...). Returns false if `name` is not
    /// one.
    pub fn shorthand(&mut self, name: &str, pos: usize) -> Result<bool, ParseError> {
        use key::{eth_type as et, ip_proto as ipp};
        let (dl, proto) = match name {
            "ip" => (et::IPV4, None),
            "arp" => (et::ARP, None),
            "tcp" => (et::IPV4, Some(ipp::TCP)),
            "udp" => (et::IPV4, Some(ipp::UDP)),
            "icmp" => (et::IPV4, Some(ipp::ICMP)),
            "igmp" => (et::IPV4, Some(ipp::IGMP)),
            "ipv6" => (et::IPV6, None),
            "tcp6" | "udp6" | "icmp6" | "sctp" | "sctp6" | "rarp" | "mpls" | "mplsm" | "nsh" => {
                return Err(ParseError::new(
                    pos,
                    name,
                    "unsupported protocol",
                    "ip, arp, tcp, udp, icmp, igmp or ipv6",
                ));
            }
            _ => return Ok(false),
        };
        self.set_slot(slot::DL_TYPE, dl as u64, pos, name, "protocol")?;
        if let Some(p) = proto {
            self.set_slot(slot::NW_PROTO, p as u64, pos, name, "protocol")?;
        }
        Ok(true)
    }

    /// Parse `name=value` for a match field. Returns Ok(false) if `name` is
    /// not a match field.
    pub fn field(
        &mut self,
        name: &str,
        name_pos: usize,
        v: Option<&str>,
        v_pos: usize,
    ) -> Result<bool, ParseError> {
        if name == "dl_vlan" || name == "dl_vlan_pcp" {
            let v = need_value(name, name_pos, v)?;
            let n = value::parse_uint(v).ok_or_else(|| {
                ParseError::new(v_pos, v, format!("bad value for {name}"), "a number")
            })?;
            let (val, mask) = if name == "dl_vlan" {
                if n > 0xfff {
                    return Err(ParseError::new(v_pos, v, "VLAN id out of range", "0..4095"));
                }
                (n as u16 | 0x1000, 0x1fffu16)
            } else {
                if n > 7 {
                    return Err(ParseError::new(v_pos, v, "VLAN PCP out of range", "0..7"));
                }
                (((n as u16) << 13) | 0x1000, 0xf000u16)
            };
            let f = fields::get(FieldId::VlanTci);
            let om = f.read(&self.m.mask) as u16;
            let ov = f.read(&self.m.value) as u16;
            if (ov ^ val) & om & mask != 0 {
                return Err(ParseError::new(
                    name_pos,
                    name,
                    "conflicting match on vlan_tci",
                    "one VLAN match",
                ));
            }
            f.write(&mut self.m.mask, (om | mask) as u128);
            f.write(&mut self.m.value, (ov | val) as u128);
            return Ok(true);
        }
        let Some(f) = fields::lookup(name) else {
            return Ok(false);
        };
        let v = need_value(name, name_pos, v)?;
        let (val, mask) = value::parse_field_value(f, v, v_pos, true)?;
        self.set(f, val, mask, name_pos, name)?;
        self.given.push((f, name_pos, name.to_string()));
        Ok(true)
    }

    /// Check every given field's prerequisites against the final match.
    pub fn check_prereqs(&self) -> Result<(), ParseError> {
        for (f, pos, tok) in &self.given {
            if !self.prereq_ok(f.prereq) {
                return Err(ParseError::new(
                    *pos,
                    tok,
                    format!("field {} requires {}", f.name, prereq_name(f.prereq)),
                    format!("{} in the match", prereq_name(f.prereq)),
                ));
            }
            if is_ct_tuple(f.id) && !self.ct_valid() {
                return Err(ParseError::new(
                    *pos,
                    tok,
                    format!("field {} requires a tracked, valid connection", f.name),
                    "ct_state with +new, +est, +rel, +rpl, +snat or +dnat (or +trk-inv) in the match",
                ));
            }
        }
        Ok(())
    }
}

/// Fields of the conntrack original tuple (OVS prerequisite "CT valid").
pub(crate) fn is_ct_tuple(id: FieldId) -> bool {
    matches!(
        id,
        FieldId::CtNwSrc
            | FieldId::CtNwDst
            | FieldId::CtNwProto
            | FieldId::CtTpSrc
            | FieldId::CtTpDst
    )
}

pub(crate) fn prereq_name(p: Prereq) -> &'static str {
    match p {
        Prereq::None => "nothing",
        Prereq::Ip => "ip",
        Prereq::Arp => "arp",
        Prereq::Tcp => "tcp",
        Prereq::Udp => "udp",
        Prereq::TcpOrUdp => "tcp or udp",
        Prereq::Icmp => "icmp",
    }
}

pub(crate) fn need_value<'a>(
    name: &str,
    pos: usize,
    v: Option<&'a str>,
) -> Result<&'a str, ParseError> {
    match v {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ParseError::new(
            pos,
            name,
            "missing value for",
            format!("{name}=VALUE"),
        )),
    }
}

// ---------------------------------------------------------------------------
// Flows

/// Where the action list starts: OVS looks for the first `action` and the
/// `=` after it. Returns (match part, actions part, byte offset of actions).
fn split_actions(text: &str) -> Option<(&str, Option<(&str, usize)>)> {
    match text.find("action") {
        None => Some((text, None)),
        Some(i) => {
            let rest = &text[i..];
            let eq = rest.find('=')?;
            Some((&text[..i], Some((&rest[eq + 1..], i + eq + 1))))
        }
    }
}

#[derive(Default)]
struct Header {
    table: Option<u8>,
    priority: Option<u16>,
    cookie: Option<(u64, u64)>,
    idle: Option<u16>,
    hard: Option<u16>,
    out_port: Option<u32>,
}

fn parse_num<T: TryFrom<u128>>(
    name: &str,
    v: Option<&str>,
    npos: usize,
    vpos: usize,
) -> Result<T, ParseError> {
    let v = need_value(name, npos, v)?;
    value::parse_uint(v)
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            ParseError::new(
                vpos,
                v,
                format!("bad value for {name}"),
                format!("a number that fits {name}"),
            )
        })
}

/// Parse the match-and-header part of a flow.
fn parse_match_part(text: &str, spec: bool) -> Result<(Header, MatchBuilder), ParseError> {
    let mut h = Header::default();
    let mut mb = MatchBuilder::default();
    for it in Items::new(text, 0) {
        let (k, v, kp, vp) = (it.key, it.value, it.key_pos, it.value_pos);
        match k {
            "table" => h.table = Some(parse_num(k, v, kp, vp)?),
            "priority" => h.priority = Some(parse_num(k, v, kp, vp)?),
            "idle_timeout" => h.idle = Some(parse_num(k, v, kp, vp)?),
            "hard_timeout" => h.hard = Some(parse_num(k, v, kp, vp)?),
            "importance" => {
                let _: u16 = parse_num(k, v, kp, vp)?;
            }
            "send_flow_rem" | "check_overlap" | "reset_counts" | "no_packet_counts"
            | "no_byte_counts" => {}
            "cookie" => {
                let s = need_value(k, kp, v)?;
                let (val, mask) = match s.split_once('/') {
                    Some((a, b)) if spec => {
                        let a = value::parse_uint(a).and_then(|n| u64::try_from(n).ok());
                        let b = if b == "-1" {
                            Some(u64::MAX)
                        } else {
                            value::parse_uint(b).and_then(|n| u64::try_from(n).ok())
                        };
                        match (a, b) {
                            (Some(a), Some(b)) => (a, b),
                            _ => {
                                return Err(ParseError::new(
                                    vp,
                                    s,
                                    "bad cookie",
                                    "cookie=VALUE[/MASK], 64-bit numbers",
                                ));
                            }
                        }
                    }
                    Some(_) => {
                        return Err(ParseError::new(
                            vp,
                            s,
                            "cookie mask not allowed when adding flows",
                            "cookie=VALUE (masks only in del-flows/dump-flows specs)",
                        ));
                    }
                    None => (parse_num(k, v, kp, vp)?, u64::MAX),
                };
                h.cookie = Some((val, mask));
            }
            "out_port" if spec => {
                let s = need_value(k, kp, v)?;
                h.out_port = Some(value::parse_port(s).ok_or_else(|| {
                    ParseError::new(
                        vp,
                        s,
                        "bad port",
                        "a port number or LOCAL, IN_PORT, CONTROLLER",
                    )
                })?);
            }
            _ => {
                if v.is_none() && mb.shorthand(k, kp)? {
                    continue;
                }
                if !mb.field(k, kp, v, vp)? {
                    return Err(ParseError::new(
                        kp,
                        k,
                        "unknown field",
                        if spec {
                            "a match field"
                        } else {
                            "a match field or \"actions=\""
                        },
                    ));
                }
            }
        }
    }
    mb.check_prereqs()?;
    Ok((h, mb))
}

/// Parse one flow as `ovs-ofctl add-flow` does.
pub fn parse_flow(text: &str) -> Result<Flow, ParseError> {
    let Some((mtext, acts)) = split_actions(text) else {
        let i = text.find("action").unwrap_or(0);
        return Err(ParseError::new(
            i,
            &text[i..],
            "missing \"=\" after",
            "actions=ACTIONS",
        ));
    };
    let Some((atext, apos)) = acts else {
        let t = text.trim_end();
        return Err(ParseError::new(
            t.len(),
            "",
            "missing action list",
            "actions=... at the end of the flow",
        ));
    };
    let (h, mb) = parse_match_part(mtext, false)?;
    let table = h.table.unwrap_or(0);
    let actions = actions::parse_actions(atext, apos, &mb, table, actions::Ctx::Flow)?;
    Ok(Flow {
        table,
        priority: h.priority.unwrap_or(DEFAULT_PRIORITY),
        cookie: h.cookie.map(|c| c.0).unwrap_or(0),
        idle_timeout: h.idle.unwrap_or(0),
        hard_timeout: h.hard.unwrap_or(0),
        matches: mb.m,
        actions,
    })
}

/// Parse a match with optional `table`, `priority`, `cookie=V[/M]` and
/// `out_port`, as `ovs-ofctl del-flows`, `dump-flows` and
/// `ofproto/trace` take it. Actions are not allowed.
pub fn parse_flow_match(text: &str) -> Result<FlowSpec, ParseError> {
    if let Some(i) = text.find("action") {
        return Err(ParseError::new(
            i,
            "actions",
            "actions not allowed in a match",
            "only match fields",
        ));
    }
    let (h, mb) = parse_match_part(text, true)?;
    Ok(FlowSpec {
        table: h.table,
        priority: h.priority,
        cookie: h.cookie,
        out_port: h.out_port,
        matches: mb.m,
    })
}

/// Lines of an `add-flows`/`add-groups` file that carry a spec: skips blank
/// lines and `#` comments, strips a leading `add` keyword, rejects `modify`
/// and `delete`. Yields (1-based line number, byte offset of the spec in the
/// line, spec text) or a located error.
pub(crate) fn spec_lines(
    text: &str,
) -> impl Iterator<Item = (usize, Result<(usize, &str), ParseError>)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return None;
        }
        let off = line.len() - trimmed.len();
        let word_end = trimmed
            .find(|c: char| c.is_whitespace())
            .unwrap_or(trimmed.len());
        let word = &trimmed[..word_end];
        let res = match word {
            "add" => {
                let rest = &trimmed[word_end..];
                let r2 = rest.trim_start();
                Ok((off + word_end + (rest.len() - r2.len()), r2))
            }
            "modify" | "modify_strict" | "delete" | "delete_strict" => Err(ParseError::new(
                off,
                word,
                "command unsupported in a flows file",
                "a flow, optionally after \"add\"",
            )),
            _ => Ok((off, trimmed)),
        };
        Some((i + 1, res))
    })
}

pub(crate) fn shift_err(mut e: ParseError, off: usize) -> ParseError {
    e.column += off;
    e
}

/// Convert a byte column to a character column within `line`.
pub(crate) fn char_column(line: &str, e: &mut ParseError) {
    let byte = e.column.saturating_sub(1).min(line.len());
    let mut b = byte;
    while !line.is_char_boundary(b) {
        b -= 1;
    }
    e.column = line[..b].chars().count() + 1;
}

/// Parse a file in `ovs-ofctl add-flows` format. All or nothing: any bad
/// line fails the whole file, and every bad line is reported.
pub fn parse_flows(file: &str, text: &str) -> Result<Vec<Flow>, FileError> {
    parse_file(file, text, parse_flow)
}

pub(crate) fn parse_file<T>(
    file: &str,
    text: &str,
    f: fn(&str) -> Result<T, ParseError>,
) -> Result<Vec<T>, FileError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, r) in spec_lines(text) {
        let res = r.and_then(|(off, spec)| f(spec).map_err(|e| shift_err(e, off)));
        match res {
            Ok(x) => out.push(x),
            Err(mut e) => {
                char_column(lines[n - 1], &mut e);
                errors.push(LineError {
                    file: file.to_string(),
                    line: n,
                    error: e,
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(FileError { errors })
    }
}
