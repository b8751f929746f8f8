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
mod learn;
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

/// Parse with `names` (`(name, ofport)`) accepted wherever a port is, e.g.
/// `in_port=uplink`, `output:gw0`, `resubmit(pod1,5)` — what `ovs-ofctl`
/// does by asking the bridge. Names shadow nothing reserved: `LOCAL`,
/// `IN_PORT` and numbers keep their meaning unless a port is named so.
pub fn with_port_names<T>(names: &[(String, u32)], f: impl FnOnce() -> T) -> T {
    value::with_port_names(names, f)
}

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

#[cfg(test)]
mod port_name_tests {
    use super::*;
    use crate::pipeline::ir::Action;

    #[test]
    fn names_resolve_only_inside_with_port_names() {
        let names = vec![("uplink".to_string(), 3), ("gw0".to_string(), 2)];
        let f = with_port_names(&names, || {
            parse_flow("in_port=uplink,actions=output:gw0,resubmit(gw0,5)")
        })
        .unwrap();
        assert_eq!(f.matches.value.get(slot::IN_PORT), 3);
        assert_eq!(
            f.actions[0],
            Action::Output {
                port: 2,
                max_len: None
            }
        );
        assert!(matches!(
            f.actions[1],
            Action::Resubmit {
                port: Some(2),
                table: Some(5),
                ..
            }
        ));
        assert!(
            parse_flow("in_port=uplink,actions=drop").is_err(),
            "no table, no names"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ir::{Action, CtZone};

    fn err(s: &str) -> ParseError {
        parse_flow(s).expect_err(s)
    }

    #[test]
    fn file_errors_name_file_line_column_token_and_expectation() {
        let text = "# comment\n\ntable=1,ip,nw_dst=1.2.3.4 actions=drop\nadd table=2, ip,nw_dstt=1.2.3.4 actions=drop\nmodify actions=drop\n";
        let e = parse_flows("flows.txt", text).unwrap_err();
        assert_eq!(e.errors.len(), 2);
        assert_eq!(
            e.to_string(),
            "flows.txt:4:17: unknown field \"nw_dstt\" (expected a match field or \"actions=\")\n\
             flows.txt:5:1: command unsupported in a flows file \"modify\" (expected a flow, optionally after \"add\")"
        );
        assert_eq!(e.first().line, 4);
        assert_eq!(e.first().error.token, "nw_dstt");
    }

    #[test]
    fn columns_count_characters() {
        let e = parse_flows("f", "priority=1,ip,nw_dst=1.2.3.4 actions=note:zz # é").unwrap_err();
        assert_eq!(e.first().error.column, 43);
        let e = parse_flows("f", "priority=1,\u{e9}x=1 actions=drop").unwrap_err();
        assert_eq!(e.first().error.column, 12);
    }

    #[test]
    fn prerequisites_are_enforced() {
        assert!(
            err("nw_src=1.2.3.4,actions=drop")
                .problem
                .contains("requires ip")
        );
        assert!(
            err("ip,tp_dst=80,actions=drop")
                .problem
                .contains("requires tcp or udp")
        );
        assert!(
            err("tcp,icmp_type=3,actions=drop")
                .problem
                .contains("requires icmp")
        );
        assert!(
            err("ip,arp_op=1,actions=drop")
                .problem
                .contains("requires arp")
        );
        assert!(
            err("ip,ct_nw_src=1.2.3.4,actions=drop")
                .problem
                .contains("valid connection")
        );
        // Order does not matter.
        parse_flow("nw_dst=1.2.3.4,tp_dst=80,tcp,actions=drop").unwrap();
        parse_flow("ct_state=+est+trk,ct_nw_src=1.2.3.4,ip,actions=drop").unwrap();
    }

    #[test]
    fn conflicting_duplicates_are_errors() {
        assert!(err("tcp,udp,actions=drop").problem.contains("conflicting"));
        assert!(
            err("ip,nw_dst=1.2.3.4,nw_dst=1.2.3.5,actions=drop")
                .problem
                .contains("conflicting")
        );
        parse_flow("ip,tcp,nw_dst=1.2.3.4,nw_dst=1.2.3.4,actions=drop").unwrap();
    }

    #[test]
    fn action_checks_follow_ovs() {
        assert!(
            err("actions=load:1->NXM_OF_IP_DST[]")
                .problem
                .contains("prerequisite ip")
        );
        assert!(
            err("ip,actions=load:1->NXM_OF_ARP_OP[]")
                .problem
                .contains("prerequisite arp")
        );
        assert!(err("actions=mod_nw_ttl:5").problem.contains("nw_ttl"));
        assert!(
            err("actions=ct(commit)")
                .problem
                .contains("ct requires an ip")
        );
        assert!(err("ip,actions=ct(commit,alg=ftp)").problem.contains("alg"));
        assert!(err("ip,actions=ct(force)").problem.contains("force"));
        assert!(
            err("ip,actions=set_field:1->ct_mark")
                .problem
                .contains("CT fields")
        );
        assert!(
            err("ip,actions=ct(commit,exec(set_field:1->reg0))")
                .problem
                .contains("exec")
        );
        assert!(
            err("ip,actions=load:0x10000->NXM_NX_REG0[0..15]")
                .problem
                .contains("16 bits")
        );
        assert!(
            err("actions=move:NXM_NX_REG0[0..7]->NXM_NX_REG1[0..15]")
                .problem
                .contains("8 bits")
        );
        assert!(err("actions=drop,output:1").problem.contains("drop"));
        assert!(
            err("actions=conjunction(1,1/2),output:1")
                .problem
                .contains("conjunction")
        );
        assert!(
            err("table=3,actions=goto_table:2")
                .problem
                .contains("later table")
        );
        assert!(
            err("actions=resubmit(,4,ct)")
                .problem
                .contains("valid connection")
        );
        assert!(
            err("actions=load:1->ct_state[]")
                .problem
                .contains("read-only")
        );
        assert!(err("ip,actions=mod_nw_tos:5").problem.contains("TOS"));
        // Legacy mod_* actions need no match, as in OVS.
        parse_flow("actions=mod_nw_dst:1.2.3.4,mod_tp_dst:80").unwrap();
    }

    #[test]
    fn seed_style_flow_parses_to_expected_ir() {
        let f = parse_flow("table=8, cookie=0x520,priority=190,ip,ct_state=+new+trk actions=load:0x1->NXM_NX_REG8[],ct(commit,table=9,zone=NXM_NX_REG4[0..15],nat(dst=169.254.169.110:80-90,random))").unwrap();
        assert_eq!((f.table, f.priority, f.cookie), (8, 190, 0x520));
        assert_eq!(f.matches.value.get(slot::CT_STATE), 0x21);
        assert_eq!(f.matches.mask.get(slot::CT_STATE), 0x21);
        assert_eq!(
            f.actions[0],
            Action::Load {
                dst: crate::pipeline::ir::SubField {
                    field: FieldId::Reg(8),
                    ofs: 0,
                    n_bits: 32
                },
                value: 1
            }
        );
        let Action::Ct(ct) = &f.actions[1] else {
            panic!()
        };
        assert!(ct.commit && ct.table == Some(9));
        assert!(
            matches!(ct.zone, CtZone::Field(sf) if sf.field == FieldId::Reg(4) && sf.n_bits == 16)
        );
        let Some(conntrack::NatSpec::Dst(r)) = ct.nat else {
            panic!()
        };
        assert_eq!(
            (r.addr_min, r.port_min, r.port_max, r.random),
            (0xa9fea96e, 80, 90, true)
        );
    }

    #[test]
    fn syntax_variants() {
        let a = parse_flow("table=1,priority=5,ip,nw_dst=10.0.0.0/8,actions=output:3").unwrap();
        let b = parse_flow("table:1 priority:5\tip nw_dst:10.0.0.0/255.0.0.0 actions=3").unwrap();
        assert_eq!(a, b);
        let c = parse_flow(
            "actions=output:LOCAL,IN_PORT,in_port,resubmit:2,resubmit(2),CONTROLLER:100",
        )
        .unwrap();
        assert_eq!(c.actions.len(), 6);
        let d = parse_flow("tcp,tcp_flags=+syn-ack,ct_state=0x21/0x21,reg8=0x1/0xffff,xreg0=5,ct_label=0x1/0xff,actions=drop").unwrap();
        assert_eq!(d.matches.mask.get(slot::TCP_FLAGS) & 0xfff, 0x12);
        assert_eq!(d.matches.value.get(slot::TCP_FLAGS), 0x02);
        parse_flow("ip,nw_frag=later,actions=drop").unwrap();
        assert!(
            err("ipv6,tcp6,actions=drop")
                .problem
                .contains("unsupported")
        );
        assert!(
            err("ip,nw_dst=1.2.3.4")
                .problem
                .contains("missing action list")
        );
    }

    #[test]
    fn match_specs_for_del_flows_and_trace() {
        let s = parse_flow_match(
            "table=105,cookie=0x520/-1,ct_state=+new+trk,ip,reg0=0x1/0xffff,ct_mark=0x21",
        )
        .unwrap();
        assert_eq!(s.table, Some(105));
        assert_eq!(s.cookie, Some((0x520, u64::MAX)));
        let t = parse_flow_match("in_port=3,tcp,dl_src=00:50:56:a7:ca:77,nw_src=10.176.26.36,nw_dst=10.176.25.244,tcp_dst=30232,nw_ttl=255").unwrap();
        assert_eq!(t.matches.value.get(slot::IN_PORT), 3);
        assert_eq!(t.matches.value.get(slot::TP_DST), 30232);
        assert!(parse_flow_match("ip actions=drop").is_err());
        assert!(
            parse_flow("cookie=0x1/0xff,actions=drop")
                .unwrap_err()
                .problem
                .contains("cookie mask")
        );
    }

    #[test]
    fn groups() {
        let g = parse_group("group_id=1,type=select,selection_method=hash,fields(ip_src,nw_proto,tcp_dst),bucket=bucket_id:0,weight:100,actions=output:1,bucket=bucket_id:1,weight:50,actions=load:0x1->NXM_NX_REG0[],resubmit(,5)").unwrap();
        assert_eq!(g.buckets.len(), 2);
        assert_eq!(g.fields.len(), 3);
        assert_eq!(g.buckets[1].weight, 50);
        assert_eq!(g.buckets[1].actions.len(), 2);
        let g = parse_group("group_id=2,type=all,bucket=output:1,bucket=actions=output:2").unwrap();
        assert_eq!(
            g.buckets[0].actions,
            vec![Action::Output {
                port: 1,
                max_len: None
            }]
        );
        assert!(parse_group("group_id=3,type=bogus,bucket=output:1").is_err());
        let e = parse_groups(
            "g.txt",
            "group_id=1,type=all,bucket=output:1\ngroup_id=2,type=all,bucket=frob:1\n",
        )
        .unwrap_err();
        assert_eq!(e.first().line, 2);
        assert_eq!(e.first().error.token, "frob");
    }
}
