//! Values: numbers, addresses, ports, flag sets, with masks.

use super::ParseError;
use crate::key::{self, ct_state as cs};
use crate::pipeline::fields::{FieldDef, Format, Maskable};

/// The user-visible bits a field can hold (`nw_tos`: 0xfc).
pub(crate) fn user_mask(f: &FieldDef) -> u128 {
    let bits = f.bits as u32 - f.user_shift as u32;
    let m = if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    m << f.user_shift
}

/// Decimal or `0x` hex, up to 128 bits.
pub(crate) fn parse_uint(s: &str) -> Option<u128> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if h.is_empty() || h.len() > 32 {
            return None;
        }
        u128::from_str_radix(h, 16).ok()
    } else {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
}

/// Dotted-quad IPv4.
pub(crate) fn parse_ipv4(s: &str) -> Option<u32> {
    let mut out = 0u32;
    let mut n = 0;
    for part in s.split('.') {
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let v: u32 = part.parse().ok()?;
        if v > 255 {
            return None;
        }
        out = out << 8 | v;
        n += 1;
    }
    (n == 4).then_some(out)
}

/// `aa:bb:cc:dd:ee:ff` (also `-` separated).
pub(crate) fn parse_mac(s: &str) -> Option<u64> {
    let mut out = 0u64;
    let mut n = 0;
    for part in s.split([':', '-']) {
        if part.is_empty() || part.len() > 2 {
            return None;
        }
        out = out << 8 | u64::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

thread_local! {
    /// Port names in effect for the parse running on this thread (see
    /// [`super::with_port_names`]): control-path only, empty otherwise.
    static PORT_NAMES: std::cell::RefCell<Vec<(String, u32)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `f` with `names` resolvable as ports, restoring the previous table.
pub(crate) fn with_port_names<T>(names: &[(String, u32)], f: impl FnOnce() -> T) -> T {
    let old = PORT_NAMES.with(|p| std::mem::replace(&mut *p.borrow_mut(), names.to_vec()));
    let out = f();
    PORT_NAMES.with(|p| *p.borrow_mut() = old);
    out
}

fn port_by_name(s: &str) -> Option<u32> {
    PORT_NAMES.with(|p| p.borrow().iter().find(|(n, _)| n == s).map(|(_, num)| *num))
}

/// An OpenFlow port: number, reserved name, or a name from the port table
/// in effect (as `ovs-ofctl` resolves names against the bridge).
pub(crate) fn parse_port(s: &str) -> Option<u32> {
    if let Some(n) = port_by_name(s) {
        return Some(n);
    }
    match s {
        "LOCAL" | "local" => Some(key::OFPP_LOCAL),
        "IN_PORT" | "in_port" => Some(key::OFPP_IN_PORT),
        "CONTROLLER" | "controller" => Some(key::OFPP_CONTROLLER),
        "NONE" | "ANY" | "none" | "any" => Some(key::OFPP_NONE),
        _ => {
            let n = parse_uint(s)?;
            // OpenFlow 1.1+ numbering of the reserved ports maps onto 1.0's.
            if (0xffff_fff0..=0xffff_ffff).contains(&n) {
                return Some((n as u32 - 0xffff_ff00) | 0xff00);
            }
            u32::try_from(n).ok().filter(|&p| p <= 0xffff)
        }
    }
}

const CT_FLAGS: [(&str, u8); 8] = [
    ("new", cs::NEW),
    ("est", cs::EST),
    ("rel", cs::REL),
    ("rpl", cs::RPL),
    ("inv", cs::INV),
    ("trk", cs::TRK),
    ("snat", cs::SNAT),
    ("dnat", cs::DNAT),
];

/// TCP flag names in bit order (bit 0 = fin).
pub(crate) const TCP_FLAGS: [&str; 12] = [
    "fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns", "[200]", "[400]", "[800]",
];

/// Names of the `ct_state` bits, for printing.
pub(crate) fn ct_flag_name(bit: u32) -> Option<&'static str> {
    CT_FLAGS
        .iter()
        .find(|(_, b)| *b as u32 == bit)
        .map(|(n, _)| *n)
}

fn flag_bit(fmt: Format, name: &str) -> Option<u32> {
    match fmt {
        Format::CtState => CT_FLAGS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b as u32),
        _ => TCP_FLAGS.iter().position(|n| *n == name).map(|i| 1u32 << i),
    }
}

/// `+a-b`, `a|b`, or a number with optional mask.
fn parse_flags(f: &FieldDef, s: &str, pos: usize) -> Result<(u128, u128), ParseError> {
    let full = if f.format == Format::CtState {
        0xff
    } else {
        0xfff
    };
    let bad = |what: &str| {
        ParseError::new(
            pos,
            s,
            format!("bad {} value ({what})", f.name),
            if f.format == Format::CtState {
                "+flag-flag... with flags new est rel rpl inv trk snat dnat, or VALUE[/MASK]"
            } else {
                "+flag-flag... with flags fin syn rst psh ack urg ece cwr ns, or VALUE[/MASK]"
            },
        )
    };
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        let (v, m) = match s.split_once('/') {
            Some((a, b)) => (parse_uint(a), parse_uint(b)),
            None => (parse_uint(s), Some(full)),
        };
        let (Some(v), Some(m)) = (v, m) else {
            return Err(bad("not a number"));
        };
        // ct_state is a 32-bit field in NXM; only the low 8 bits exist.
        let width_max = if f.format == Format::CtState {
            u32::MAX as u128
        } else {
            0xffff
        };
        if v > width_max || m > width_max || v & !full != 0 && m & v & !full != 0 {
            return Err(bad("unknown bits"));
        }
        return Ok((v & m & full, m & full));
    }
    if s.starts_with(['+', '-']) {
        let (mut v, mut m) = (0u128, 0u128);
        let mut rest = s;
        while !rest.is_empty() {
            let plus = rest.starts_with('+');
            if !plus && !rest.starts_with('-') {
                return Err(bad("flags must start with + or -"));
            }
            rest = &rest[1..];
            let end = rest.find(['+', '-']).unwrap_or(rest.len());
            let name = &rest[..end];
            let bit = flag_bit(f.format, name).ok_or_else(|| bad("unknown flag"))? as u128;
            if m & bit != 0 && (v & bit != 0) != plus {
                return Err(bad("flag both set and cleared"));
            }
            m |= bit;
            if plus {
                v |= bit;
            }
            rest = &rest[end..];
        }
        return Ok((v, m));
    }
    // `a|b|c`: exactly these flags.
    let mut v = 0u128;
    for name in s.split('|') {
        v |= flag_bit(f.format, name).ok_or_else(|| bad("unknown flag"))? as u128;
    }
    Ok((v, full))
}

/// Parse a field value with an optional mask (`allow_mask`), as
/// (value, mask), both user-visible.
pub(crate) fn parse_field_value(
    f: &FieldDef,
    s: &str,
    pos: usize,
    allow_mask: bool,
) -> Result<(u128, u128), ParseError> {
    let full = user_mask(f);
    let (vs, ms) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    if ms.is_some() && (!allow_mask || (f.maskable == Maskable::No && f.format != Format::CtState))
    {
        return Err(ParseError::new(
            pos,
            s,
            format!("field {} does not support masking", f.name),
            format!("an exact {} value", f.name),
        ));
    }
    let bad = |exp: &str| {
        ParseError::new(
            pos,
            s,
            format!("bad value for field {}", f.name),
            exp.to_string(),
        )
    };
    let (v, m) = match f.format {
        Format::Ipv4 => {
            let v = parse_ipv4(vs)
                .ok_or_else(|| bad("an IPv4 address[/prefix length or /netmask]"))?
                as u128;
            let m = match ms {
                None => full,
                Some(ms) => {
                    if let Some(ip) = parse_ipv4(ms) {
                        ip as u128
                    } else {
                        match ms.parse::<u32>() {
                            Ok(n) if n <= 32 => {
                                if n == 0 {
                                    0
                                } else {
                                    (u32::MAX << (32 - n)) as u128
                                }
                            }
                            _ => return Err(bad("an IPv4 address[/prefix length or /netmask]")),
                        }
                    }
                }
            };
            (v, m)
        }
        Format::Mac => {
            let v =
                parse_mac(vs).ok_or_else(|| bad("a MAC address xx:xx:xx:xx:xx:xx[/mask]"))? as u128;
            let m = match ms {
                None => full,
                Some(ms) => parse_mac(ms)
                    .ok_or_else(|| bad("a MAC address xx:xx:xx:xx:xx:xx[/mask]"))?
                    as u128,
            };
            (v, m)
        }
        Format::Port => {
            let v =
                parse_port(vs).ok_or_else(|| bad("a port number or LOCAL, IN_PORT, CONTROLLER"))?;
            (v as u128, full)
        }
        Format::CtState | Format::TcpFlags => return parse_flags(f, s, pos),
        Format::Frag => {
            use key::frag::{ANY, LATER};
            let (v, m) = match s {
                "no" => (0, ANY),
                "yes" => (ANY, ANY),
                "first" => (ANY, ANY | LATER),
                "later" => (ANY | LATER, ANY | LATER),
                "not_later" => (0, LATER),
                _ => return Err(bad("no, yes, first, later or not_later")),
            };
            (v as u128, m as u128)
        }
        Format::Dec | Format::Hex => {
            let v = parse_uint(vs).ok_or_else(|| bad("a decimal or 0x hex number"))?;
            let m = match ms {
                None => full,
                Some(ms) => parse_uint(ms).ok_or_else(|| bad("a decimal or 0x hex number"))?,
            };
            (v, m)
        }
    };
    if v & !full != 0 || m & !full != 0 {
        return Err(ParseError::new(
            pos,
            s,
            format!("{vs} is not a valid value for field {}", f.name),
            format!("a value within mask {full:#x}"),
        ));
    }
    Ok((v & m, m))
}

/// Name of one TCP flag bit, for printing.
pub(crate) fn tcp_flag_name(bit: u32) -> Option<&'static str> {
    if !bit.is_power_of_two() {
        return None;
    }
    TCP_FLAGS.get(bit.trailing_zeros() as usize).copied()
}
