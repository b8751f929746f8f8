//! NAT: choosing a unique reply tuple for a new connection, and rewriting
//! packets of existing ones.
//!
//! The choice follows OVS 3.1 `nat_get_unique_tuple()`:
//! * the address is `addr_min + hash % n_addrs` (or the packet's own
//!   address when the range is all-zero); OVS does not iterate addresses;
//! * with `nat(src=IP)` and no port range, and for every DNAT, the source
//!   port search starts at the packet's own source port inside its class
//!   (1-511, 600-1023 or 1024-65535): a free original port is kept, on a
//!   clash the next port of the class is tried (wrapping to the class
//!   minimum);
//! * with a port range the first candidate is `min + hash % range`;
//! * DNAT with a destination port range first searches destination ports,
//!   then falls back to source ports;
//! * the search tries `min(range, 128)` consecutive ports, then rounds of
//!   64, 32, 16 and 8 starting at random ports: at most 248 attempts.
//!
//! `random`, `hash` and `persistent` are accepted and, as in OVS's
//! userspace datapath, do not change the choice. flowpath's hash is its own
//! (OVS salts its hash at start-up, so its exact range picks are not
//! reproducible anyway); the sequential choices are.

use crate::api::NatRange;
use crate::key::{Key, hash2};
use crate::table::NatKind;

/// Attempts of the first round (OVS `max_attempts`).
const MAX_ATTEMPTS: u32 = 128;

/// Port class of `port` when no explicit range applies (OVS
/// `set_sport_range`).
pub(crate) fn port_class(port: u16) -> (u16, u16) {
    if port < 512 {
        (1, 511)
    } else if port < 1024 {
        (600, 1023)
    } else {
        (1024, 65535)
    }
}

/// Hash of the original key and the NAT range (OVS `nat_range_hash`).
fn range_hash(fwd: &Key, r: &NatRange, seed: u64) -> u32 {
    let a = (u64::from(r.addr_min) << 32) | u64::from(r.addr_max);
    let b = (u64::from(r.port_max) << 16) | u64::from(r.port_min);
    let h = hash2(a, b, seed);
    let k = fwd.hash(h);
    (k ^ (k >> 32)) as u32
}

/// The ports of one search (current, min, max).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PortSearch {
    pub curr: u16,
    pub min: u16,
    pub max: u16,
}

impl PortSearch {
    fn range(&self) -> u32 {
        u32::from(self.max) - u32::from(self.min) + 1
    }
}

/// The reply key before port search, and the searches to run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NatPlan {
    /// Reply key with the chosen address and initial ports.
    pub rev: Key,
    /// Destination-port search (DNAT with a port range), tried first.
    pub dport: Option<PortSearch>,
    /// Source-port search.
    pub sport: PortSearch,
}

/// Plan the translation of `fwd` under `kind`/`r`.
pub(crate) fn plan(fwd: &Key, kind: NatKind, r: &NatRange, seed: u64) -> NatPlan {
    let h = range_hash(fwd, r, seed);
    let addr_max = r.addr_max.max(r.addr_min);
    let addr = if r.addr_min == 0 {
        match kind {
            NatKind::Src => fwd.src,
            NatKind::Dst => fwd.dst,
            _ => 0,
        }
    } else {
        let n = u64::from(addr_max - r.addr_min) + 1;
        r.addr_min + (u64::from(h) % n) as u32
    };
    let has_ports = r.port_min != 0 || r.port_max != 0;
    let (pmin, pmax) = (r.port_min, r.port_max.max(r.port_min));
    let ranged = |min: u16, max: u16| {
        let n = u32::from(max) - u32::from(min) + 1;
        PortSearch {
            curr: (u32::from(min) + h % n) as u16,
            min,
            max,
        }
    };
    let sport = if (kind == NatKind::Src && !has_ports) || kind == NatKind::Dst {
        let (min, max) = port_class(fwd.sport);
        PortSearch {
            curr: fwd.sport,
            min,
            max,
        }
    } else if kind == NatKind::Src {
        ranged(pmin, pmax)
    } else {
        // Plain `nat` on commit (empty NAT action): OVS's range is 0..0.
        PortSearch {
            curr: 0,
            min: 0,
            max: 0,
        }
    };
    let dport = (kind == NatKind::Dst && has_ports).then(|| ranged(pmin, pmax));
    let curr_d = dport.map_or(fwd.dport, |d| d.curr);
    let mut rev = fwd.reverse();
    if fwd.pat() {
        rev.sport = curr_d;
        rev.dport = sport.curr;
    }
    if kind == NatKind::Src {
        rev.dst = addr;
    } else {
        rev.src = addr;
    }
    NatPlan { rev, dport, sport }
}

/// Search for a free port (OVS `nat_get_unique_l4`): `taken(port)` says
/// whether the reply key with that port is in use, `random` draws random
/// numbers for the later rounds. Returns the free port, or `None` after at
/// most 248 attempts (the caller keeps the original port).
pub(crate) fn search(
    s: PortSearch,
    taken: &mut dyn FnMut(u16) -> bool,
    random: &mut dyn FnMut() -> u32,
) -> Option<u16> {
    let range = s.range();
    let mut attempts = range.min(MAX_ATTEMPTS);
    let mut curr = s.curr;
    let in_range = |p: u16| p >= s.min && p <= s.max;
    loop {
        // FOR_EACH_PORT_IN_RANGE: an out-of-range start is tried first,
        // then the range from its minimum.
        let n = if in_range(curr) { range } else { range + 1 };
        for i in 0..n {
            if i >= attempts {
                break;
            }
            if !taken(curr) {
                return Some(curr);
            }
            curr = if !in_range(curr) || curr == s.max {
                s.min
            } else {
                curr + 1
            };
        }
        if attempts < range && attempts >= 16 {
            attempts /= 2;
            curr = (u32::from(s.min) + random() % range) as u16;
        } else {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn key(sport: u16) -> Key {
        Key {
            src: 0x0a00_0001,
            dst: 0x0a00_0002,
            sport,
            dport: 80,
            zone: 1,
            proto: 6,
            ity: 0,
        }
    }

    #[test]
    fn classes() {
        assert_eq!(port_class(80), (1, 511));
        assert_eq!(port_class(700), (600, 1023));
        assert_eq!(port_class(40000), (1024, 65535));
    }

    #[test]
    fn snat_without_ports_keeps_then_increments_the_source_port() {
        let r = NatRange {
            addr_min: 0x0a00_00fe,
            addr_max: 0x0a00_00fe,
            ..NatRange::default()
        };
        let p = plan(&key(40000), NatKind::Src, &r, 7);
        assert_eq!(p.rev.dst, 0x0a00_00fe);
        assert_eq!(p.rev.dport, 40000);
        let used: HashSet<u16> = [40000, 40001].into_iter().collect();
        let mut tried = Vec::new();
        let got = search(
            p.sport,
            &mut |x| {
                tried.push(x);
                used.contains(&x)
            },
            &mut || 0,
        );
        assert_eq!(got, Some(40002));
        assert_eq!(tried, vec![40000, 40001, 40002]);
    }

    #[test]
    fn class_wraps_to_its_minimum_and_attempts_are_bounded_by_248() {
        let s = PortSearch {
            curr: 65535,
            min: 1024,
            max: 65535,
        };
        let mut tried = Vec::new();
        let mut seed = 1u32;
        let got = search(
            s,
            &mut |x| {
                tried.push(x);
                true
            },
            &mut || {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                seed
            },
        );
        assert_eq!(got, None);
        assert_eq!(&tried[..2], &[65535, 1024]);
        assert_eq!(tried.len(), 248);
    }
}
