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
//! Eviction: the megaflow cache holds at most `capacity` entries in a
//! fixed slab. When it is full, an insert evicts one entry chosen by CLOCK
//! (second chance): a hand walks the slab; an entry used since the hand
//! last passed it (its packet count moved) is spared, the first one that
//! was not is evicted, and after [`SWEEP`] spared entries the one under the
//! hand goes anyway, so an insert costs a bounded walk. Idle entries (a new
//! connection's per-connection megaflows, used by one packet) therefore
//! make room while the busy ones stay — OVS's revalidators likewise
//! delete idle datapath flows rather than the whole table. Every slot has
//! a generation, bumped when its entry is evicted: whoever keeps an
//! [`EntryIdx`] (the chains, the exact-match cache, a walk in progress)
//! keeps the generation with it and checks it before use. The exact-match
//! cache is direct-mapped: a colliding insert overwrites.
//!
//! Per-flow statistics ([`crate::pipeline::stats`]): every entry counts the
//! packets that ran it ([`MegaflowCache::credit`]); before entries are
//! dropped (evicted, or the cache cleared) their counts are folded into
//! per-rule totals ([`MegaflowCache::rule_counts`],
//! [`MegaflowCache::take_rule_counts`]). The same counts (packets, bytes,
//! last use) are what `flowpath dump-megaflows` prints per megaflow, as
//! `ovs-appctl dpctl/dump-flows` does.

use std::cell::Cell;

use hashbrown::HashMap;

pub mod chain;
pub mod patch;
pub use chain::{
    Chain, ChainCache, ChainKey, ChainStep, Compiled, CtAt, CtCold, CtExpect, CtOp, Op, Recorder,
};

use crate::key::{FlowKey, slot};
use crate::masked::MaskedMap;
use crate::pipeline::classifier::FlowIdx;
use crate::pipeline::stats::FlowStat;
use crate::pipeline::xlate::Xlation;

/// Index of an entry in [`MegaflowCache`].
pub type EntryIdx = u32;

/// Entries the CLOCK hand may spare per eviction before it evicts the one
/// under it regardless (bounds an insert's cost when everything is busy).
pub const SWEEP: usize = 64;

#[derive(Debug)]
struct Subtable {
    map: MaskedMap<EntryIdx>,
    hits: u64,
}

/// One cached megaflow.
#[derive(Debug)]
struct Entry {
    x: Xlation,
    /// The masked key it is filed under, and its subtable.
    key: FlowKey,
    subtable: u16,
    /// Bumped whenever the slot's entry is evicted.
    sgen: u32,
    /// Its packets, bytes and last use (a `Cell`: a chain replay credits
    /// entries while it holds them borrowed; the cache is one thread's).
    stat: Cell<FlowStat>,
    /// `stat.packets` when the CLOCK hand last passed.
    seen: u64,
}

/// One megaflow as [`MegaflowCache::megaflows`] reports it.
#[derive(Debug, Clone, Copy)]
pub struct MegaflowInfo<'a> {
    /// The match: key bits under `mask`.
    pub key: FlowKey,
    /// The wildcard mask (set bits are matched).
    pub mask: FlowKey,
    /// The translation (datapath actions).
    pub xlation: &'a Xlation,
    /// Its packets, bytes and last use (engine clock, ms; 0: never).
    pub stat: FlowStat,
}

/// One megaflow as `flowpath dump-megaflows` reports it: owned, for the
/// control thread.
#[derive(Debug, Clone)]
pub struct MegaflowDump {
    /// The match: key bits under `mask`.
    pub key: FlowKey,
    /// The wildcard mask (set bits are matched).
    pub mask: FlowKey,
    /// Its datapath actions.
    pub actions: Vec<crate::pipeline::xlate::DpAction>,
    /// Set when its translation failed (the packets are dropped).
    pub error: Option<crate::drop::DropReason>,
    /// Its packets, bytes and last use.
    pub stat: FlowStat,
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
    /// Whole-cache flushes (generation change).
    pub flushes: u64,
    /// Entries evicted to make room (CLOCK).
    pub evictions: u64,
    /// Packets whose whole walk replayed a recorded chain (see [`chain`]).
    pub chain_hits: u64,
    /// Passes served by chain replays (hits that made no emc/megaflow
    /// lookup).
    pub chain_passes: u64,
    /// Chain replays that met a different conntrack answer and finished on
    /// the ordinary path (the chain is dropped).
    pub chain_diverged: u64,
    /// Chains dropped at lookup because a megaflow they ran was evicted.
    pub chain_stale: u64,
    /// Chains evicted to make room (CLOCK).
    pub chain_evictions: u64,
    /// Walks into a new connection not recorded as chains: the first
    /// sighting of their key (see [`NewWalks`]).
    pub chain_deferred: u64,
}

/// Slots of [`NewWalks`] (a power of two).
const NEW_WALK_SLOTS: usize = 8192;

/// First sightings of walks that met `+new` at a recirculation. Such a
/// walk's chain replays only while conntrack keeps answering `+new`: a
/// TCP connection's next packet (the handshake's ACK) is established and
/// would diverge from it, so recording every SYN's chain cost a chain
/// insert per new connection (and chain cache room) for nothing but
/// retransmissions. The first such walk of a first-pass key is only noted
/// here (a key hash in a direct-mapped slot); a second one (a retransmitted
/// SYN, the next packet of a one-way UDP stream, still `+new` in OVS) is
/// recorded and replays from the third. A slot overwritten in between only
/// defers recording again; walks that did not meet `+new` (established,
/// replies) are recorded at once as before.
#[derive(Debug)]
pub struct NewWalks {
    slots: Box<[u64]>,
    seed: u64,
}

impl Default for NewWalks {
    fn default() -> Self {
        use std::hash::BuildHasher;
        NewWalks {
            slots: vec![0; NEW_WALK_SLOTS].into_boxed_slice(),
            seed: hashbrown::DefaultHashBuilder::default().hash_one(0u64) | 1,
        }
    }
}

impl NewWalks {
    /// Whether `key`'s walk into a new connection was noted before (and its
    /// slot not taken since); notes it when not.
    pub fn seen_again(&mut self, key: &FlowKey) -> bool {
        let mut h = self.seed;
        for w in key.w.iter() {
            let p = ((h ^ *w) as u128) * (self.seed as u128);
            h = (p as u64) ^ ((p >> 64) as u64);
        }
        let h = h | 1;
        let s = &mut self.slots[(h as usize) & (NEW_WALK_SLOTS - 1)];
        if *s == h {
            *s = 0;
            true
        } else {
            *s = h;
            false
        }
    }

    /// Forget every sighting.
    pub fn clear(&mut self) {
        self.slots.fill(0);
    }
}

const EMC_SLOTS: usize = 8192;

/// A per-core megaflow cache with an exact-match front.
#[derive(Debug)]
pub struct MegaflowCache {
    /// One per (mask, recirculation id) where the mask matches the whole
    /// recirculation id (every translation's does: a pass depends on
    /// it), one per mask otherwise.
    subtables: Vec<Subtable>,
    /// Per recirculation id, the subtables of keys with that id: a pass's
    /// lookup probes only those of its own id, then `any`, instead of
    /// every mask of every pass (the seven passes of a NodePort SYN have
    /// as many masks, which every miss used to probe). Busiest first.
    by_recirc: Vec<Vec<u16>>,
    /// Subtables whose mask does not match the whole recirculation id
    /// (probed for every key), busiest first.
    any: Vec<u16>,
    entries: Vec<Entry>,
    /// Per-rule totals of dropped entries (classifier indices under the
    /// current generation).
    folded: HashMap<FlowIdx, FlowStat>,
    capacity: usize,
    hand: usize,
    generation: u64,
    epoch: u64,
    emc: Vec<Option<(FlowKey, EntryIdx, u32)>>,
    emc_enabled: bool,
    /// Whole-walk chains over this cache's entries.
    pub chains: ChainCache,
    /// First sightings of walks into new connections (not recorded).
    pub new_walks: NewWalks,
    /// Counters.
    pub stats: CacheStats,
}

impl MegaflowCache {
    /// A cache holding at most `capacity` megaflows, with the exact-match
    /// front cache on or off. The chain cache holds as many chains (see
    /// [`MegaflowCache::with_chain_capacity`]).
    pub fn new(capacity: usize, emc: bool) -> Self {
        MegaflowCache {
            subtables: Vec::new(),
            by_recirc: Vec::new(),
            any: Vec::new(),
            entries: Vec::new(),
            folded: HashMap::new(),
            capacity: capacity.max(1),
            hand: 0,
            generation: 0,
            epoch: 0,
            emc: if emc {
                vec![None; EMC_SLOTS]
            } else {
                Vec::new()
            },
            emc_enabled: emc,
            chains: ChainCache::new(capacity),
            new_walks: NewWalks::default(),
            stats: CacheStats::default(),
        }
    }

    /// Hold at most `n` chains (default: the megaflow capacity); 0 turns
    /// the chain cache off.
    pub fn with_chain_capacity(mut self, n: usize) -> Self {
        self.chains = ChainCache::new(n);
        self
    }

    /// Record the walk `rec` as the chain of first-pass key `key` (see
    /// [`chain`]) at `now_ms`, counting the chains evicted to make room.
    #[cold]
    pub fn record_chain(&mut self, key: &FlowKey, rec: &Recorder, now_ms: u64) {
        let entries = &self.entries;
        let entry = |i: EntryIdx, sgen: u32| {
            entries
                .get(i as usize)
                .filter(|e| e.sgen == sgen)
                .map(|e| &e.x)
        };
        self.chains.insert(key, rec, &entry, now_ms);
        self.stats.chain_evictions = self.chains.evictions;
    }

    /// Drop every entry if `generation` differs from the one the entries
    /// were built under. Per-rule counts not taken before
    /// ([`MegaflowCache::take_rule_counts`]) are dropped with them: they are
    /// keyed by the old generation's flow indices.
    pub fn sync_generation(&mut self, generation: u64) {
        if generation != self.generation {
            self.clear();
            self.folded.clear();
            self.chains.forget_rule_counts();
            self.generation = generation;
        }
    }

    /// Drop every entry.
    pub fn clear(&mut self) {
        self.fold();
        self.epoch += 1;
        self.subtables.clear();
        self.by_recirc.clear();
        self.any.clear();
        self.entries.clear();
        self.hand = 0;
        self.chains.clear();
        self.new_walks.clear();
        for e in self.emc.iter_mut() {
            *e = None;
        }
        self.stats.flushes += 1;
    }

    /// Changes whenever the cache is cleared (slot generations start over).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The entry at `idx` (check [`MegaflowCache::slot_gen`] first if the index
    /// was kept across an insert).
    #[inline]
    pub fn entry(&self, idx: EntryIdx) -> &Xlation {
        &self.entries[idx as usize].x
    }

    /// The entry at `idx`, mutable (its learn bookkeeping).
    #[inline]
    pub fn entry_mut(&mut self, idx: EntryIdx) -> &mut Xlation {
        &mut self.entries[idx as usize].x
    }

    /// The generation of slot `idx`: an index kept with its generation is
    /// still the same entry while they agree (within one [`epoch`]).
    ///
    /// [`epoch`]: MegaflowCache::epoch
    #[inline]
    pub fn slot_gen(&self, idx: EntryIdx) -> u32 {
        self.entries.get(idx as usize).map_or(u32::MAX, |e| e.sgen)
    }

    /// Count one packet of `bytes` bytes through entry `idx` at `now_ms`.
    #[inline]
    pub fn credit(&self, idx: EntryIdx, bytes: usize, now_ms: u64) {
        if let Some(e) = self.entries.get(idx as usize) {
            let mut s = e.stat.get();
            s.credit(bytes, now_ms);
            e.stat.set(s);
        }
    }

    /// Add counts `s` of entry `e` to the totals of the rules it went
    /// through.
    fn add_to_rules(totals: &mut HashMap<FlowIdx, FlowStat>, e: &Entry, s: FlowStat) {
        if s.packets == 0 {
            return;
        }
        for r in &e.x.rules {
            totals.entry(*r).or_default().add(s);
        }
    }

    /// Fold one entry's counts into the per-rule totals.
    fn fold_entry(folded: &mut HashMap<FlowIdx, FlowStat>, e: &Entry) {
        Self::add_to_rules(folded, e, e.stat.take());
    }

    /// Move the entries' counts into the per-rule totals.
    fn fold(&mut self) {
        for e in &self.entries {
            Self::fold_entry(&mut self.folded, e);
        }
    }

    /// Per-rule totals (classifier indices under the cache's current
    /// generation): dropped entries' and live ones'.
    pub fn rule_counts(&self) -> HashMap<FlowIdx, FlowStat> {
        let mut out = self.folded.clone();
        for e in &self.entries {
            Self::add_to_rules(&mut out, e, e.stat.get());
        }
        self.chains.rule_counts_into(&mut out);
        out
    }

    /// Per-rule totals, taken: the cache starts counting from zero (for a
    /// worker about to change pipelines).
    pub fn take_rule_counts(&mut self) -> HashMap<FlowIdx, FlowStat> {
        self.fold();
        let mut out = std::mem::take(&mut self.folded);
        self.chains.take_rule_counts_into(&mut out);
        out
    }

    /// Look `key` up, returning the entry index.
    #[inline]
    pub fn lookup_idx(&mut self, key: &FlowKey) -> Option<EntryIdx> {
        let emc = if self.emc_enabled {
            Self::emc_slot(key)
        } else {
            0
        };
        if self.emc_enabled
            && let Some((_, idx, sgen)) = self.emc[emc].as_ref().filter(|(k, _, _)| k == key)
            && self
                .entries
                .get(*idx as usize)
                .is_some_and(|e| e.sgen == *sgen)
        {
            self.stats.emc_hits += 1;
            return Some(*idx);
        }
        let mut found = None;
        let recirc = key.get(slot::RECIRC_ID) as usize;
        let own = self.by_recirc.get(recirc).map_or(&[][..], |v| &v[..]);
        for &o in own.iter().chain(self.any.iter()) {
            let st = &mut self.subtables[o as usize];
            if st.map.is_empty() {
                continue;
            }
            if let Some(idx) = st.map.get(key) {
                st.hits += 1;
                found = Some(*idx);
                break;
            }
        }
        match found {
            Some(idx) => {
                self.stats.megaflow_hits += 1;
                if self.emc_enabled {
                    let sgen = self.entries[idx as usize].sgen;
                    self.emc[emc] = Some((*key, idx, sgen));
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
        self.subtables.iter().map(|s| s.map.len()).sum()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most megaflows it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Every megaflow, subtable by subtable. A megaflow's counts include
    /// the packets of the compiled chains that ran it (while it stays
    /// cached; a compiled chain replays without its megaflows, so packets
    /// of chains whose megaflow was evicted count in the rules' totals
    /// only).
    pub fn megaflows(&self) -> impl Iterator<Item = MegaflowInfo<'_>> + '_ {
        let mut via_chains: HashMap<EntryIdx, FlowStat> = HashMap::new();
        self.chains.for_each_ref(|e, g, st| {
            if self.slot_gen(e) == g {
                via_chains.entry(e).or_default().add(st);
            }
        });
        let mut out = Vec::with_capacity(self.entries.len());
        for st in &self.subtables {
            for (k, i) in st.map.iter() {
                let e = &self.entries[*i as usize];
                let mut stat = e.stat.get();
                if let Some(c) = via_chains.get(i) {
                    stat.add(*c);
                }
                out.push(MegaflowInfo {
                    key: *k,
                    mask: *st.map.mask(),
                    xlation: &e.x,
                    stat,
                });
            }
        }
        out.into_iter()
    }

    /// Every megaflow, owned (cold: for the control socket).
    #[cold]
    pub fn dump(&self) -> Vec<MegaflowDump> {
        self.megaflows()
            .map(|m| MegaflowDump {
                key: m.key,
                mask: m.mask,
                actions: m.xlation.actions.clone(),
                error: m.xlation.error,
                stat: m.stat,
            })
            .collect()
    }

    /// Number of distinct masks.
    pub fn n_masks(&self) -> usize {
        let mut masks: Vec<&FlowKey> = self
            .subtables
            .iter()
            .filter(|s| !s.map.is_empty())
            .map(|s| s.map.mask())
            .collect();
        masks.sort_unstable_by_key(|a| a.w);
        masks.dedup();
        masks.len()
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
        self.entries.get(idx as usize).map(|e| &e.x)
    }

    /// The slot to fill: a fresh one while there is room, else the one
    /// CLOCK evicts (see the module doc).
    fn victim(&mut self) -> usize {
        if self.entries.len() < self.capacity {
            return self.entries.len();
        }
        let n = self.entries.len();
        let mut spared = 0;
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % n;
            let e = &mut self.entries[i];
            let p = e.stat.get().packets;
            if p != e.seen && spared < SWEEP {
                e.seen = p;
                spared += 1;
                continue;
            }
            let st = &mut self.subtables[e.subtable as usize];
            if st.map.get(&e.key) == Some(&(i as EntryIdx)) {
                st.map.remove(&e.key);
            }
            Self::fold_entry(&mut self.folded, e);
            self.stats.evictions += 1;
            return i;
        }
    }

    /// Insert the translation of `key` (its `wc` is the megaflow mask),
    /// evicting an entry when full, and return its index.
    #[cold]
    pub fn insert(&mut self, key: &FlowKey, x: Xlation) -> EntryIdx {
        let mask = x.wc;
        let full = slot::RECIRC_ID.word_mask();
        let recirc = (mask.w[slot::RECIRC_ID.word as usize] & full == full)
            .then(|| key.get(slot::RECIRC_ID) as u16);
        let candidates = match recirc {
            Some(r) => self.by_recirc.get(r as usize).map_or(&[][..], |v| &v[..]),
            None => &self.any[..],
        };
        let found = candidates
            .iter()
            .map(|&o| o as usize)
            .find(|&o| *self.subtables[o].map.mask() == mask);
        let pos = match found {
            Some(p) => p,
            None => {
                self.subtables.push(Subtable {
                    map: MaskedMap::new(mask),
                    hits: 0,
                });
                let i = (self.subtables.len() - 1) as u16;
                match recirc {
                    Some(r) => {
                        let r = r as usize;
                        if self.by_recirc.len() <= r {
                            self.by_recirc.resize_with(r + 1, Vec::new);
                        }
                        self.by_recirc[r].push(i);
                    }
                    None => self.any.push(i),
                }
                self.subtables.len() - 1
            }
        };
        let slot = self.victim();
        let masked = key.masked(&mask);
        let entry = Entry {
            x,
            key: masked,
            subtable: pos as u16,
            sgen: 0,
            stat: Cell::new(FlowStat::default()),
            seen: 0,
        };
        if slot == self.entries.len() {
            self.entries.push(entry);
        } else {
            let sgen = self.entries[slot].sgen.wrapping_add(1);
            self.entries[slot] = Entry { sgen, ..entry };
        }
        let idx = slot as EntryIdx;
        // A megaflow whose mask and masked key are already filed (two
        // walks translating the same pass before either was cached cannot
        // happen on one core, but a replaced slot must not leave a stale
        // map entry behind): the map points at the new slot.
        if let Some(old) = self.subtables[pos].map.insert(&masked, idx)
            && old != idx
        {
            self.entries[old as usize].sgen = self.entries[old as usize].sgen.wrapping_add(1);
        }
        self.stats.inserts += 1;
        if self.emc_enabled {
            let sgen = self.entries[slot].sgen;
            self.emc[Self::emc_slot(key)] = Some((*key, idx, sgen));
        }
        // Keep the busiest subtables first (OVS sorts its dpcls subtables
        // by hit count for the same reason).
        if self.stats.inserts.is_multiple_of(1024) {
            let subtables = &self.subtables;
            for l in self
                .by_recirc
                .iter_mut()
                .chain(std::iter::once(&mut self.any))
            {
                l.sort_by_key(|&o| std::cmp::Reverse(subtables[o as usize].hits));
            }
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

    /// CLOCK: a full cache evicts entries nobody used since the hand last
    /// passed, keeps the busy one, and an index kept across the eviction
    /// is recognised as stale by its slot generation.
    #[test]
    fn a_full_cache_evicts_idle_entries_and_keeps_busy_ones() {
        let mut c = MegaflowCache::new(4, false);
        let key = |i: u64| {
            let mut k = FlowKey::ZERO;
            k.set(slot::NW_DST, i);
            k
        };
        let busy = c.insert(&key(0), x(&[slot::NW_DST]));
        let busy_gen = c.slot_gen(busy);
        let first_idle = c.insert(&key(1), x(&[slot::NW_DST]));
        let idle_gen = c.slot_gen(first_idle);
        for i in 2..50u64 {
            // Key 0's megaflow carries traffic all along.
            let idx = c.lookup_idx(&key(0)).expect("the busy megaflow stays");
            c.credit(idx, 60, i);
            if c.lookup_idx(&key(i)).is_none() {
                c.insert(&key(i), x(&[slot::NW_DST]));
            }
            assert!(c.len() <= 4);
        }
        assert_eq!(c.slot_gen(busy), busy_gen);
        assert_eq!(c.stats.evictions, 48 - 2);
        assert_ne!(c.slot_gen(first_idle), idle_gen, "its slot was reused");
        assert!(c.lookup_idx(&key(1)).is_none());
        assert!(c.lookup_idx(&key(49)).is_some());
        let dumped: Vec<u64> = c.megaflows().map(|m| m.stat.packets).collect();
        assert_eq!(dumped.len(), 4);
        assert_eq!(dumped.iter().max(), Some(&48));
    }
}
