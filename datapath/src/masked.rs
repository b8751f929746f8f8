//! A hash map keyed by a flow key's bits under one fixed mask: the shape of
//! both a classifier subtable (rules with the same match mask) and a
//! megaflow subtable (megaflows with the same wildcard mask).
//!
//! A lookup takes the packet's whole key and never builds the masked copy:
//! it hashes and compares only the mask's non-zero words (a NodePort
//! pass's masks have 4 to 8 of the key's 21), where a map keyed by the
//! masked [`FlowKey`] zeroed and filled a 168-byte key, hashed all of it
//! and compared all of it on every probe. The hash (one folded multiply
//! per word, foldhash's construction) starts from a random seed per map
//! (drawn from hashbrown's randomly seeded default hasher), so packets
//! cannot be chosen to collide.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::key::{FlowKey, KEY_WORDS};

/// Values of type `V` keyed by `key & mask` for one fixed `mask`.
#[derive(Debug, Clone)]
pub struct MaskedMap<V> {
    mask: FlowKey,
    /// The mask's non-zero words: (index, mask word).
    words: Box<[(usize, u64)]>,
    /// Random per-map hash seeds.
    seed: [u64; 2],
    /// (masked key, value).
    table: HashTable<(FlowKey, V)>,
}

impl<V> MaskedMap<V> {
    /// An empty map for `mask`.
    pub fn new(mask: FlowKey) -> Self {
        MaskedMap {
            mask,
            words: (0..KEY_WORDS)
                .filter(|w| mask.w[*w] != 0)
                .map(|w| (w, mask.w[w]))
                .collect(),
            seed: {
                let s = DefaultHashBuilder::default();
                [s.hash_one(0u64), s.hash_one(1u64) | 1]
            },
            table: HashTable::new(),
        }
    }

    /// The mask.
    #[inline]
    pub fn mask(&self) -> &FlowKey {
        &self.mask
    }

    /// `key & mask`.
    pub fn masked(&self, key: &FlowKey) -> FlowKey {
        let mut m = FlowKey::ZERO;
        for &(w, mw) in self.words.iter() {
            m.w[w] = key.w[w] & mw;
        }
        m
    }

    #[inline]
    fn hash(seed: &[u64; 2], words: &[(usize, u64)], key: &FlowKey) -> u64 {
        let mut h = seed[0];
        for &(w, mw) in words {
            h = folded_multiply(h ^ (key.w[w] & mw), seed[1]);
        }
        h
    }

    /// Whether `stored` (a masked key) is `key & mask`.
    #[inline]
    fn eq(words: &[(usize, u64)], stored: &FlowKey, key: &FlowKey) -> bool {
        words.iter().all(|&(w, mw)| stored.w[w] == key.w[w] & mw)
    }

    /// The value filed under `key & mask` (`key` need not be masked).
    #[inline]
    pub fn get(&self, key: &FlowKey) -> Option<&V> {
        let words = &self.words[..];
        let h = Self::hash(&self.seed, words, key);
        self.table
            .find(h, |(k, _)| Self::eq(words, k, key))
            .map(|(_, v)| v)
    }

    /// The value filed under `key & mask`, mutable.
    #[inline]
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut V> {
        let words = &self.words[..];
        let h = Self::hash(&self.seed, words, key);
        self.table
            .find_mut(h, |(k, _)| Self::eq(words, k, key))
            .map(|(_, v)| v)
    }

    /// File `v` under `key & mask`, returning the value it replaces.
    pub fn insert(&mut self, key: &FlowKey, v: V) -> Option<V> {
        let m = self.masked(key);
        let (words, seed) = (&self.words[..], &self.seed);
        let h = Self::hash(seed, words, &m);
        match self.table.entry(
            h,
            |(k, _)| Self::eq(words, k, &m),
            |(k, _)| Self::hash(seed, words, k),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => {
                Some(std::mem::replace(&mut e.get_mut().1, v))
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert((m, v));
                None
            }
        }
    }

    /// The value under `key & mask`, inserted as `V::default()` if absent.
    pub fn get_or_default(&mut self, key: &FlowKey) -> &mut V
    where
        V: Default,
    {
        if self.get(key).is_none() {
            self.insert(key, V::default());
        }
        self.get_mut(key).expect("just inserted")
    }

    /// Remove the value under `key & mask`.
    pub fn remove(&mut self, key: &FlowKey) -> Option<V> {
        let words = &self.words[..];
        let h = Self::hash(&self.seed, words, key);
        self.table
            .find_entry(h, |(k, _)| Self::eq(words, k, key))
            .ok()
            .map(|e| e.remove().0.1)
    }

    /// Number of keys.
    #[inline]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the map is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Every (masked key, value).
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &V)> {
        self.table.iter().map(|(k, v)| (k, v))
    }

    /// Every masked key.
    pub fn keys(&self) -> impl Iterator<Item = &FlowKey> {
        self.table.iter().map(|(k, _)| k)
    }

    /// Every value, mutable.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.table.iter_mut().map(|(_, v)| v)
    }
}

/// The 128-bit product of `a` and `b`, its halves XOR-ed.
#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = (a as u128) * (b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::slot;

    #[test]
    fn keys_match_under_the_mask_only() {
        let mut mask = FlowKey::ZERO;
        mask.set_all(slot::NW_DST);
        mask.set(slot::TP_DST, 0xff00);
        let mut m: MaskedMap<u32> = MaskedMap::new(mask);
        let mut k = FlowKey::ZERO;
        k.set(slot::NW_DST, 7);
        k.set(slot::TP_DST, 0x1234);
        k.set(slot::NW_SRC, 9);
        assert_eq!(m.insert(&k, 1), None);
        let mut k2 = k;
        k2.set(slot::NW_SRC, 10);
        k2.set(slot::TP_DST, 0x12ff);
        assert_eq!(
            m.get(&k2),
            Some(&1),
            "nw_src and the low port bits are wildcarded"
        );
        assert_eq!(m.insert(&k2, 2), Some(1), "the same masked key");
        assert_eq!(m.len(), 1);
        assert_eq!(m.keys().next(), Some(&m.masked(&k)));
        k2.set(slot::TP_DST, 0x1334);
        assert_eq!(m.get(&k2), None);
        *m.get_or_default(&k2) += 5;
        assert_eq!(m.get(&k2), Some(&5));
        assert_eq!(m.remove(&k), Some(2));
        assert_eq!(m.get(&k), None);
        assert_eq!(m.len(), 1);
    }
}
