//! The connection key: one direction of a connection as conntrack sees it.
//!
//! A [`Key`] is OVS's `struct conn_key` for IPv4: zone, addresses, ports (or
//! the ICMP id) and protocol. ICMP queries additionally carry the ICMP type
//! of the sending side (`ity`): an echo request and a timestamp request with
//! the same id are different connections, and reversing a key maps the type
//! to its reply (8 <-> 0, 13 <-> 14, 15 <-> 16), as OVS's
//! `reverse_icmp_type()` does.

use crate::api::Tuple;

/// IP protocol numbers conntrack treats specially.
pub(crate) mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// One direction of a connection. 16 bytes, compared as two words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Key {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub zone: u16,
    pub proto: u8,
    /// ICMP type of the sender of this direction (queries only), else 0.
    pub ity: u8,
}

const _: () = assert!(std::mem::size_of::<Key>() == 16);

/// The reply type of an ICMP query type (OVS `reverse_icmp_type`).
/// Non-query types map to themselves (they never reach a key).
pub(crate) fn reverse_icmp_type(ty: u8) -> u8 {
    match ty {
        8 => 0,
        0 => 8,
        13 => 14,
        14 => 13,
        15 => 16,
        16 => 15,
        other => other,
    }
}

/// Whether `ty` is an ICMP query type OVS tracks as a connection.
pub(crate) fn is_icmp_query(ty: u8) -> bool {
    matches!(ty, 0 | 8 | 13 | 14 | 15 | 16)
}

/// Whether `ty` is an ICMP error type whose payload quotes a packet.
pub(crate) fn is_icmp_error(ty: u8) -> bool {
    matches!(ty, 3 | 4 | 5 | 11 | 12)
}

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

/// A fast 64-bit hash of two words (folded multiply, as wyhash/foldhash).
#[inline]
pub(crate) fn hash2(a: u64, b: u64, seed: u64) -> u64 {
    const K1: u64 = 0x243f_6a88_85a3_08d3;
    const K2: u64 = 0x1319_8a2e_0370_7344;
    const K3: u64 = 0xa409_3822_299f_31d0;
    fold(fold(a ^ K1 ^ seed, b ^ K2) ^ seed, K3)
}

impl Key {
    /// The key of the opposite direction (addresses, ports and ICMP type
    /// swapped).
    #[inline]
    pub fn reverse(&self) -> Key {
        Key {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            zone: self.zone,
            proto: self.proto,
            ity: if self.proto == proto::ICMP {
                reverse_icmp_type(self.ity)
            } else {
                0
            },
        }
    }

    #[inline]
    fn words(&self) -> (u64, u64) {
        let a = (u64::from(self.src) << 32) | u64::from(self.dst);
        let b = (u64::from(self.sport) << 48)
            | (u64::from(self.dport) << 32)
            | (u64::from(self.zone) << 16)
            | (u64::from(self.proto) << 8)
            | u64::from(self.ity);
        (a, b)
    }

    /// Hash of the whole key (direction-sensitive).
    #[inline]
    pub fn hash(&self, seed: u64) -> u64 {
        let (a, b) = self.words();
        hash2(a, b, seed)
    }

    /// Key for `t` in `zone`; `ity` is the ICMP type for ICMP queries.
    #[inline]
    pub fn from_tuple(t: &Tuple, zone: u16, ity: u8) -> Key {
        Key {
            src: t.src,
            dst: t.dst,
            sport: t.sport,
            dport: t.dport,
            zone,
            proto: t.proto,
            ity: if t.proto == proto::ICMP { ity } else { 0 },
        }
    }

    /// The key as a [`Tuple`] (ICMP: both ports are the id).
    #[inline]
    pub fn tuple(&self) -> Tuple {
        Tuple {
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
        }
    }

    /// The tuple OVS writes into the packet's `ct_nw_src`/`ct_tp_src`...
    /// fields: for ICMP the "ports" are the ICMP type and code
    /// (OVS `write_ct_md`).
    #[inline]
    pub fn orig_tuple(&self) -> Tuple {
        if self.proto == proto::ICMP {
            Tuple {
                src: self.src,
                dst: self.dst,
                sport: u16::from(self.ity),
                dport: 0,
                proto: self.proto,
            }
        } else {
            self.tuple()
        }
    }

    /// Whether the protocol has ports that NAT may rewrite.
    #[inline]
    pub fn pat(&self) -> bool {
        self.proto == proto::TCP || self.proto == proto::UDP
    }
}

/// Zone-less fingerprint of a wire tuple for the cross-core ownership
/// directory. Never 0 or 1 (those mark empty and deleted directory cells).
#[inline]
pub(crate) fn wire_fingerprint(t: &Tuple) -> u64 {
    let a = (u64::from(t.src) << 32) | u64::from(t.dst);
    let b = (u64::from(t.sport) << 48) | (u64::from(t.dport) << 32) | u64::from(t.proto);
    hash2(a, b, 0x5eed_f10b_a7c0_ffee).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_is_an_involution_and_maps_icmp_types() {
        let k = Key {
            src: 1,
            dst: 2,
            sport: 7,
            dport: 7,
            zone: 3,
            proto: proto::ICMP,
            ity: 8,
        };
        let r = k.reverse();
        assert_eq!((r.src, r.dst, r.ity), (2, 1, 0));
        assert_eq!(r.reverse(), k);
        let t = Key {
            src: 1,
            dst: 2,
            sport: 1000,
            dport: 80,
            zone: 0,
            proto: proto::TCP,
            ity: 0,
        };
        assert_eq!(t.reverse().reverse(), t);
        assert_ne!(t.hash(0), t.reverse().hash(0));
    }

    #[test]
    fn orig_tuple_of_icmp_carries_type_and_code() {
        let k = Key {
            src: 1,
            dst: 2,
            sport: 77,
            dport: 77,
            zone: 0,
            proto: proto::ICMP,
            ity: 8,
        };
        let o = k.orig_tuple();
        assert_eq!((o.sport, o.dport), (8, 0));
    }
}
