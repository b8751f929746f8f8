//! Per-core flow caches, in the manner of OVS's dpif-netdev: a *megaflow*
//! cache keyed by the wildcard mask each translation reported (one hash
//! table per distinct mask, probed in turn) and an optional *exact-match*
//! front cache keyed by the whole flow key.
//!
//! Owner: exactly one worker thread; nothing here is shared or locked.
//! A cached entry is a pass's [`Xlation`] (datapath actions including
//! `ct()` calls and recirculations: a recirculated pass is simply another
//! lookup with the recirculation id in the key).
//!
//! Invalidation is by generation: every entry records the pipeline
//! generation it was translated under; a worker that sees a newer pipeline
//! clears its caches before its next burst (the pipeline itself is swapped
//! by pointer, so no lock is taken per packet). Learned flows
//! ([`crate::pipeline::learn`]) change the pipeline by a new generation
//! too, so a megaflow never outlives the learned-table contents it was
//! translated against (the price: a learn flushes every worker's cache).
//! An entry whose pass went through learned flows or `learn` actions keeps
//! the time it last reported them (`Xlation::reported_ms`).
//!
//! Eviction: both caches are bounded. The megaflow cache holds at most
//! `capacity` entries; when full it is cleared whole (entries repopulate
//! from the slow path; OVS's revalidators instead age entries out, which
//! flowpath does not need because translation is deterministic and cheap).
//! The exact-match cache is direct-mapped: a colliding insert overwrites.
//!
//! Per-flow statistics ([`crate::pipeline::stats`]): every entry counts the
//! packets that ran it ([`MegaflowCache::credit`]); before entries are
//! dropped their counts are folded into per-rule totals
//! ([`MegaflowCache::rule_counts`], [`MegaflowCache::take_rule_counts`]).

use std::cell::Cell;

use hashbrown::HashMap;

pub mod chain;
pub mod patch;
pub use chain::{ChainCache, ChainStep, CtAt, CtExpect, Recorder};

use crate::key::{FlowKey, KEY_WORDS};
use crate::pipeline::classifier::FlowIdx;
use crate::pipeline::stats::FlowStat;
use crate::pipeline::xlate::Xlation;

/// Index of an entry in [`MegaflowCache`].
pub type EntryIdx = u32;

#[derive(Debug)]
struct Subtable {
    mask: FlowKey,
    words: Box<[u8]>,
    map: HashMap<FlowKey, EntryIdx>,
    hits: u64,
}

/// Hit/miss counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Exact-match cache hits.
    pub emc_hits: u64,
    /// Megaflow hits (after an exact-match miss).
    pub megaflow_hits: u64,
    /// Misses (upcalls to the translator).
    pub misses: u64,
    /// Entries inserted.
    pub inserts: u64,
    /// Whole-cache flushes (generation change or capacity).
    pub flushes: u64,
    /// Packets whose whole walk replayed a recorded chain (see [`chain`]).
    pub chain_hits: u64,
    /// Passes served by chain replays (hits that made no emc/megaflow
    /// lookup).
    pub chain_passes: u64,
    /// Chain replays that met a different conntrack answer and finished on
    /// the ordinary path (the chain is dropped).
    pub chain_diverged: u64,
}

const EMC_SLOTS: usize = 8192;

/// A per-core megaflow cache with an exact-match front.
#[derive(Debug)]
pub struct MegaflowCache {
    subtables: Vec<Subtable>,
    entries: Vec<Xlation>,
    /// Each entry's packets (a `Cell`: a chain replay credits entries
    /// while it holds them borrowed; the cache is one thread's).
    counts: Vec<Cell<FlowStat>>,
    /// Per-rule totals of dropped entries (classifier indices under the
    /// current generation).
    folded: HashMap<FlowIdx, FlowStat>,
    capacity: usize,
    generation: u64,
    epoch: u64,
    emc: Vec<Option<(FlowKey, EntryIdx)>>,
    emc_enabled: bool,
    /// Whole-walk chains over this cache's entries.
    pub chains: ChainCache,
    /// Counters.
    pub stats: CacheStats,
}

impl MegaflowCache {
    /// A cache holding at most `capacity` megaflows, with the exact-match
    /// front cache on or off.
    pub fn new(capacity: usize, emc: bool) -> Self {
        MegaflowCache {
            subtables: Vec::new(),
            entries: Vec::with_capacity(capacity),
            counts: Vec::with_capacity(capacity),
            folded: HashMap::new(),
            capacity: capacity.max(1),
            generation: 0,
            epoch: 0,
            emc: if emc {
                vec![None; EMC_SLOTS]
            } else {
                Vec::new()
            },
            emc_enabled: emc,
            chains: ChainCache::new(capacity),
            stats: CacheStats::default(),
        }
    }

    /// Hold at most `n` chains (default: the megaflow capacity); 0 turns
    /// the chain cache off.
    pub fn with_chain_capacity(mut self, n: usize) -> Self {
        self.chains = ChainCache::new(n);
        self
    }

    /// Drop every entry if `generation` differs from the one the entries
    /// were built under. Per-rule counts not taken before
    /// ([`MegaflowCache::take_rule_counts`]) are dropped with them: they are
    /// keyed by the old generation's flow indices.
    pub fn sync_generation(&mut self, generation: u64) {
        if generation != self.generation {
            self.clear();
            self.folded.clear();
            self.generation = generation;
        }
    }

    /// Drop every entry.
    pub fn clear(&mut self) {
        self.fold();
        self.epoch += 1;
        self.subtables.clear();
        self.entries.clear();
        self.counts.clear();
        self.chains.clear();
        for e in self.emc.iter_mut() {
            *e = None;
        }
        self.stats.flushes += 1;
    }

    /// Changes whenever entries are dropped: an [`EntryIdx`] taken under
    /// one epoch is only valid under the same epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Count one packet of `bytes` bytes through entry `idx` at `now_ms`.
    #[inline]
    pub fn credit(&self, idx: EntryIdx, bytes: usize, now_ms: u64) {
        if let Some(c) = self.counts.get(idx as usize) {
            let mut s = c.get();
            s.credit(bytes, now_ms);
            c.set(s);
        }
    }

    /// Move the entries' counts into the per-rule totals.
    fn fold(&mut self) {
        for (x, c) in self.entries.iter().zip(&self.counts) {
            let s = c.take();
            if s.packets == 0 {
                continue;
            }
            for r in &x.rules {
                self.folded.entry(*r).or_default().add(s);
            }
        }
    }

    /// Per-rule totals (classifier indices under the cache's current
    /// generation): dropped entries' and live ones'.
    pub fn rule_counts(&self) -> HashMap<FlowIdx, FlowStat> {
        let mut out = self.folded.clone();
        for (x, c) in self.entries.iter().zip(&self.counts) {
            let s = c.get();
            if s.packets == 0 {
                continue;
            }
            for r in &x.rules {
                out.entry(*r).or_default().add(s);
            }
        }
        out
    }

    /// Per-rule totals, taken: the cache starts counting from zero (for a
    /// worker about to change pipelines).
    pub fn take_rule_counts(&mut self) -> HashMap<FlowIdx, FlowStat> {
        self.fold();
        std::mem::take(&mut self.folded)
    }

    /// The entry at `idx` (valid within the epoch it was returned in).
    #[inline]
    pub fn entry(&self, idx: EntryIdx) -> &Xlation {
        &self.entries[idx as usize]
    }

    /// The entry at `idx`, mutable (its learn bookkeeping).
    #[inline]
    pub fn entry_mut(&mut self, idx: EntryIdx) -> &mut Xlation {
        &mut self.entries[idx as usize]
    }

    /// Record the walk `rec` as the chain of first-pass key `key` (see
    /// [`chain`]).
    #[cold]
    pub fn record_chain(&mut self, key: &FlowKey, rec: &Recorder) {
        self.chains.insert(key, rec, &self.entries);
    }

    /// Look `key` up, returning the entry index.
    #[inline]
    pub fn lookup_idx(&mut self, key: &FlowKey) -> Option<EntryIdx> {
        if self.emc_enabled {
            let s = Self::emc_slot(key);
            if let Some((_, idx)) = self.emc[s].as_ref().filter(|(k, _)| k == key) {
                self.stats.emc_hits += 1;
                return Some(*idx);
            }
        }
        let mut found = None;
        for st in self.subtables.iter_mut() {
            let mut m = FlowKey::ZERO;
            for &w in st.words.iter() {
                m.w[w as usize] = key.w[w as usize] & st.mask.w[w as usize];
            }
            if let Some(idx) = st.map.get(&m) {
                st.hits += 1;
                found = Some(*idx);
                break;
            }
        }
        match found {
            Some(idx) => {
                self.stats.megaflow_hits += 1;
                if self.emc_enabled {
                    self.emc[Self::emc_slot(key)] = Some((*key, idx));
                }
                Some(idx)
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Number of megaflows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every megaflow: (masked key, mask, translation).
    pub fn megaflows(&self) -> impl Iterator<Item = (FlowKey, FlowKey, &Xlation)> + '_ {
        self.subtables.iter().flat_map(move |st| {
            st.map
                .iter()
                .map(move |(k, i)| (*k, st.mask, &self.entries[*i as usize]))
        })
    }

    /// Number of distinct masks (subtables probed on a miss).
    pub fn n_masks(&self) -> usize {
        self.subtables.len()
    }

    fn emc_slot(key: &FlowKey) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for w in key.w.iter() {
            h = (h ^ *w).wrapping_mul(0x0000_0100_0000_01b3);
            h ^= h >> 29;
        }
        (h as usize) & (EMC_SLOTS - 1)
    }

    /// Look `key` up: the cached translation, if any.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey) -> Option<&Xlation> {
        let idx = self.lookup_idx(key)?;
        self.entries.get(idx as usize)
    }

    /// Insert the translation of `key` (its `wc` is the megaflow mask) and
    /// return a reference to the stored copy.
    #[cold]
    pub fn insert(&mut self, key: &FlowKey, x: Xlation) -> EntryIdx {
        if self.entries.len() >= self.capacity {
            self.clear();
        }
        let mask = x.wc;
        let idx = self.entries.len() as EntryIdx;
        let pos = match self.subtables.iter().position(|s| s.mask == mask) {
            Some(p) => p,
            None => {
                self.subtables.push(Subtable {
                    mask,
                    words: (0..KEY_WORDS as u8)
                        .filter(|w| mask.w[*w as usize] != 0)
                        .collect(),
                    map: HashMap::new(),
                    hits: 0,
                });
                self.subtables.len() - 1
            }
        };
        self.subtables[pos].map.insert(key.masked(&mask), idx);
        self.entries.push(x);
        self.counts.push(Cell::default());
        self.stats.inserts += 1;
        if self.emc_enabled {
            self.emc[Self::emc_slot(key)] = Some((*key, idx));
        }
        // Keep the busiest subtables first (OVS sorts its dpcls subtables
        // by hit count for the same reason).
        if self.stats.inserts.is_multiple_of(1024) {
            self.subtables.sort_by_key(|s| std::cmp::Reverse(s.hits));
        }
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::slot;

    fn x(mask: &[crate::key::Slot]) -> Xlation {
        let mut wc = FlowKey::ZERO;
        for s in mask {
            wc.set_all(*s);
        }
        Xlation {
            wc,
            ..Default::default()
        }
    }

    #[test]
    fn megaflow_matches_only_on_masked_bits() {
        let mut c = MegaflowCache::new(16, false);
        let mut k = FlowKey::ZERO;
        k.set(slot::NW_DST, 1);
        k.set(slot::TP_SRC, 1000);
        assert!(c.lookup(&k).is_none());
        c.insert(&k, x(&[slot::NW_DST]));
        let mut k2 = k;
        k2.set(slot::TP_SRC, 2000);
        assert!(c.lookup(&k2).is_some(), "tp_src is wildcarded");
        k2.set(slot::NW_DST, 2);
        assert!(c.lookup(&k2).is_none(), "nw_dst is not");
        assert_eq!(c.stats.megaflow_hits, 1);
        assert_eq!(c.stats.misses, 2);
    }

    #[test]
    fn emc_and_generation() {
        let mut c = MegaflowCache::new(16, true);
        let k = FlowKey::ZERO;
        c.insert(&k, x(&[slot::IN_PORT]));
        assert!(c.lookup(&k).is_some());
        assert_eq!(c.stats.emc_hits, 1);
        c.sync_generation(1);
        assert!(c.lookup(&k).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn capacity_bounds_entries() {
        let mut c = MegaflowCache::new(4, true);
        for i in 0..10u64 {
            let mut k = FlowKey::ZERO;
            k.set(slot::NW_DST, i);
            c.insert(&k, x(&[slot::NW_DST]));
            assert!(c.len() <= 4);
        }
    }
}
