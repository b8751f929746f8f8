//! Prefix sets: what OVS's classifier prefix tries (`lib/classifier.c`:
//! `trie_lookup_value`) answer, computed from sorted vectors.
//!
//! A table keeps one set per trie field (`nw_dst`, `nw_src`: OVS's
//! `default_prefix_fields`) of the prefixes its rules match on, and each
//! subtable one set of its rules' masked L4 ports (OVS's ports trie). A
//! lookup of a 32-bit value answers two things: which prefix lengths have a
//! rule matching the value (`plens`), and how many leading bits of the value
//! a megaflow must match to prove that nothing longer matches (`maskbits`:
//! up to and including the first bit where the value leaves every stored
//! prefix, or the full length when it leaves none). The classifier uses them
//! to skip a subtable, or to un-wildcard only a prefix of the ports, exactly
//! where OVS's tries do, so its megaflows are as wide as OVS's.
//!
//! Prefixes of one length are kept sorted; the longest common prefix of a
//! value with a set of equal-length prefixes is found at the value's
//! neighbours in that order, so a lookup is one binary search per distinct
//! prefix length (rules rarely use more than a handful).

/// Prefixes of a 32-bit field, grouped by length.
#[derive(Debug, Default, Clone)]
pub struct PrefixSet {
    /// (length 1..=32, sorted distinct prefixes with the bits past the
    /// length cleared).
    groups: Vec<(u8, Vec<u32>)>,
}

/// What a lookup answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixMatch {
    /// Bit `p - 1` set when a stored prefix of length `p` matches.
    pub plens: u64,
    /// Leading bits that decide the answer (OVS's trie `maskbits`).
    pub maskbits: u8,
}

/// The mask of the first `n` bits of a 32-bit value.
#[inline]
pub fn prefix_mask(n: u8) -> u32 {
    if n == 0 {
        0
    } else {
        u32::MAX << (32 - n.min(32))
    }
}

/// Length of a contiguous prefix mask (`None` for a non-contiguous one; 0
/// for no bits).
pub fn prefix_len(mask: u32) -> Option<u8> {
    let n = mask.leading_ones();
    (mask == prefix_mask(n as u8)).then_some(n as u8)
}

impl PrefixSet {
    /// Add the prefix of `value` of length `plen` (1..=32).
    pub fn insert(&mut self, value: u32, plen: u8) {
        debug_assert!((1..=32).contains(&plen));
        let v = value & prefix_mask(plen);
        let g = match self.groups.iter().position(|(p, _)| *p == plen) {
            Some(i) => &mut self.groups[i].1,
            None => {
                self.groups.push((plen, Vec::new()));
                &mut self.groups.last_mut().expect("just pushed").1
            }
        };
        if let Err(i) = g.binary_search(&v) {
            g.insert(i, v);
        }
    }

    /// Build from `(value, plen)` pairs in any order.
    pub fn of(items: impl IntoIterator<Item = (u32, u8)>) -> PrefixSet {
        let mut s = PrefixSet::default();
        for (v, p) in items {
            let v = v & prefix_mask(p);
            match s.groups.iter().position(|(q, _)| *q == p) {
                Some(i) => s.groups[i].1.push(v),
                None => s.groups.push((p, vec![v])),
            }
        }
        for (_, g) in s.groups.iter_mut() {
            g.sort_unstable();
            g.dedup();
        }
        s
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Look `value` up (see the module doc).
    pub fn lookup(&self, value: u32) -> PrefixMatch {
        let mut plens = 0u64;
        // Longest common prefix with any stored prefix, and per length.
        let mut lcps = [0u8; 33];
        let mut depth = 0u8;
        for (plen, g) in &self.groups {
            let lcp = |x: u32| ((value ^ x).leading_zeros() as u8).min(*plen);
            let l = match g.binary_search(&(value & prefix_mask(*plen))) {
                Ok(_) => {
                    plens |= 1 << (plen - 1);
                    *plen
                }
                Err(i) => {
                    let a = if i > 0 { lcp(g[i - 1]) } else { 0 };
                    let b = g.get(i).map_or(0, |x| lcp(*x));
                    a.max(b)
                }
            };
            lcps[*plen as usize] = l;
            depth = depth.max(l);
        }
        // The value leaves the trie at `depth`: one more bit is needed when
        // a longer prefix goes on from there (the first mismatching bit).
        let longer = self
            .groups
            .iter()
            .any(|(plen, _)| *plen > depth && lcps[*plen as usize] == depth);
        let maskbits = if depth < 32 && longer {
            depth + 1
        } else {
            depth
        };
        PrefixMatch { plens, maskbits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_be_bytes([a, b, c, d])
    }

    #[test]
    fn masks() {
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(8), 0xff00_0000);
        assert_eq!(prefix_mask(32), u32::MAX);
        assert_eq!(prefix_len(0xffff_fc00), Some(22));
        assert_eq!(prefix_len(0), Some(0));
        assert_eq!(prefix_len(0x00ff_0000), None);
    }

    /// OVS: a /32 rule for 10.176.25.244 and a packet to 172.16.2.1 differ
    /// in the 6th bit (10 = 00001010, 172 = 10101100: the first bit): one
    /// bit decides.
    #[test]
    fn first_mismatching_bit_decides() {
        let s = PrefixSet::of([(ip(10, 176, 25, 244), 32)]);
        let m = s.lookup(ip(172, 16, 2, 1));
        assert_eq!(m.plens, 0);
        assert_eq!(m.maskbits, 1);
        // 172.16.2.1 against 169.254.169.110/32: 10101100 vs 10101001:
        // equal for 5 bits, the 6th differs (OVS prints /252.0.0.0 = /6).
        let s = PrefixSet::of([(ip(169, 254, 169, 110), 32)]);
        assert_eq!(s.lookup(ip(172, 16, 2, 1)).maskbits, 6);
    }

    #[test]
    fn matching_prefixes_and_longer_ones() {
        let s = PrefixSet::of([
            (ip(172, 16, 2, 0), 24),
            (ip(172, 16, 2, 10), 32),
            (ip(172, 16, 2, 11), 32),
        ]);
        // Matches the /24; the /32s go on and diverge in the last octet:
        // 0x0c = 00001100 vs 0x0a = 00001010 / 0x0b = 00001011: bit 29.
        let m = s.lookup(ip(172, 16, 2, 12));
        assert_eq!(m.plens, 1 << 23);
        assert_eq!(m.maskbits, 30);
        // Matches the /32 exactly: the whole field.
        let m = s.lookup(ip(172, 16, 2, 10));
        assert_eq!(m.plens, (1 << 23) | (1 << 31));
        assert_eq!(m.maskbits, 32);
        // Only the /24 stored: a matching value needs its 24 bits, no more.
        let s = PrefixSet::of([(ip(172, 16, 2, 0), 24)]);
        assert_eq!(s.lookup(ip(172, 16, 2, 99)).maskbits, 24);
        assert_eq!(PrefixSet::default().lookup(1).maskbits, 0);
    }

    /// The sorted-vector answer equals a bit-by-bit walk over every prefix.
    #[test]
    fn equals_a_plain_walk() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let n = (rnd() % 6) as usize;
            let base = rnd() as u32;
            let items: Vec<(u32, u8)> = (0..n)
                .map(|_| {
                    let noise = (rnd() as u32) >> (rnd() % 32);
                    (base ^ noise, 1 + (rnd() % 32) as u8)
                })
                .collect();
            let s = PrefixSet::of(items.iter().copied());
            for _ in 0..20 {
                let v = base ^ ((rnd() as u32) >> (rnd() % 33).min(31));
                let m = s.lookup(v);
                // Walk: depth d is reachable while some prefix agrees with v
                // on d bits and is at least d long.
                let agrees = |d: u8| {
                    items
                        .iter()
                        .any(|(x, p)| *p >= d && (x ^ v) & prefix_mask(d) == 0)
                };
                let mut d = 0;
                while d < 32 && agrees(d + 1) {
                    d += 1;
                }
                let longer = items
                    .iter()
                    .any(|(x, p)| *p > d && (x ^ v) & prefix_mask(d) == 0);
                let want = if d < 32 && longer { d + 1 } else { d };
                assert_eq!(m.maskbits, want, "{items:x?} {v:#x}");
                let mut plens = 0u64;
                for (x, p) in &items {
                    if (x ^ v) & prefix_mask(*p) == 0 {
                        plens |= 1 << (p - 1);
                    }
                }
                assert_eq!(m.plens, plens);
            }
        }
    }
}
