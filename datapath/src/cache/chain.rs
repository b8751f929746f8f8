//! The chain cache: a per-core exact-match cache of a packet's whole walk
//! through the pipeline — every pass, across recirculations — keyed by the
//! flow key of its first pass.
//!
//! A megaflow covers one pass. A NodePort packet makes six (one per
//! `ct(table=N)`), and through the megaflow cache each pass still costs a
//! re-extraction of the key, a metadata restore and a cache probe. A chain
//! records, for a packet whose walk forked nowhere, which megaflow entry
//! each pass used and what conntrack answered at each recirculation (the
//! ct fields the next pass's key is built from, and the NAT rewrite
//! applied to the bytes). The next packet with the same first-pass key
//! runs the same entries' actions in order — every `ct()` still executes
//! against the shard, so TCP tracking, timeouts, counters, NAT and
//! mark/label commits happen exactly as before — and at each
//! recirculation checks that conntrack answered as recorded. If it did, the
//! next pass's key would be the recorded one (it is built from the packet's
//! header fields, which the recorded rewrites determine, the frozen
//! metadata and those ct fields), so its megaflow entry is the recorded one
//! and no key is built. If it did not (connection closed, expired, flushed,
//! re-created with another NAT mapping, mark/label changed, window check
//! failed), the walk continues on the ordinary path from that
//! recirculation and the chain is dropped.
//!
//! A replay does not look the connection up or re-parse the packet at
//! every `ct()`: each step also records the tuple the packet had at the
//! `ct()` that started it (the recorded rewrites make it the same on every
//! replay that got that far) and where conntrack found the connection, a
//! [`ConnHint`] that [`conntrack::Shard::execute_hinted`] tries before
//! hashing (and takes only if that slot still holds a live, unexpired
//! connection with exactly the key it would search for). The packet is
//! parsed for conntrack once (checksums verified, TCP facts read), since
//! rewrites change neither.
//!
//! Compiled chains: when every `ct()` of the walk recirculates as its
//! pass's last action and the packet is an unfragmented IPv4 TCP or UDP
//! packet, recording also runs the walk's `Set` actions and NAT rewrites on
//! a copy of its headers and cuts a [`Patch`] wherever the walk needs the
//! bytes (each output and REJECT, and the end): the changed bytes and one
//! checksum delta each for IPv4 and TCP/UDP (see [`super::patch`] for why
//! that is bit-exact). A replay of a compiled chain (for a packet with the
//! recorded header offsets) executes no rewrite: it applies the next patch
//! at each output. Where conntrack answers otherwise, the rewrites since
//! the last patch are run for real before the walk continues on the
//! ordinary path. Walks in which conntrack answered `+new` are not
//! compiled: a TCP connection's next packet diverges from them (only
//! retransmissions replay them), so new connections do not pay for
//! compiling; a one-way UDP flow replays them uncompiled. Debug builds run
//! the rewrites alongside every compiled replay and compare the bytes at
//! each patch.
//!
//! Walks that fork (a `ct(table=N)` that is not its pass's last action), that
//! are traced, or whose passes carry learn bookkeeping (`learn()` actions,
//! learned flows whose use refreshes their timeouts) are never recorded:
//! they take the pass-by-pass path every time. Every other walk is
//! recorded, SYNs included (retried SYNs to a Service without endpoints
//! replay; recording costs a new connection ~4% of its instructions).
//!
//! Owner and invalidation: the chain cache lives inside [`MegaflowCache`]
//! (one per worker) and refers to its entries by index and slot generation:
//! a chain one of whose megaflows was evicted is stale, found so at lookup
//! (one generation compare per pass) and dropped; a cache clear (pipeline
//! generation change) drops every chain.
//!
//! Eviction: at most `capacity` chains, in a slab of slots indexed by key;
//! their steps, patches and chunks live in three arenas. When the cache is
//! full, an insert looks at up to [`super::SWEEP`] chains from a CLOCK
//! hand and evicts the first one not replayed for [`CHAIN_IDLE_MS`]; if
//! there is none, the walk is not recorded (and no sweep is tried again
//! within the same millisecond). So chains of connections that ended make
//! room for new ones after two idle seconds, while a working set of live
//! connections larger than the cache keeps replaying `capacity` of them
//! instead of evicting each chain just before its next use (100,000
//! established flows visited round robin against 65,536 chains would
//! otherwise never replay). Removed chains leave their ranges in the
//! arenas; an arena that runs out of room is compacted (the live chains'
//! ranges copied to the front), which the bounds (the most every live
//! chain could need) make rare.
//!
//! Memory: one chain costs its key (168 bytes), a slot and an index entry
//! (~30 bytes) and 128 bytes per pass, plus for a compiled chain 12 bytes
//! per patch and 24 per changed 8-byte window (about 900 bytes for the
//! four-pass NodePort walk of an established packet, compiled); the slab
//! and arenas grow as chains are recorded, up to the capacity.
//!
//! [`MegaflowCache`]: super::MegaflowCache

use std::cell::Cell;
use std::hash::BuildHasher;

use conntrack::{ConnHint, PktCtMeta, Rewrite, Tuple, cs};
use hashbrown::{DefaultHashBuilder, HashTable};

use super::EntryIdx;
use super::patch::{Chunk, MAX_HDR, Patch, Shape, Sim};
use crate::extract::Layout;
use crate::key::FlowKey;
use crate::pipeline::exec::MAX_RECIRC_DEPTH;
use crate::pipeline::xlate::{DpAction, Xlation};

/// Most passes a chain can hold: the first plus one per recirculation.
pub const MAX_PASSES: usize = MAX_RECIRC_DEPTH as usize + 1;

/// What conntrack answered at a recirculation, in the parts the next pass
/// depends on: the ct fields of its key and the header rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtExpect {
    label: u128,
    mark: u32,
    zone: u16,
    state: u8,
    orig: Option<Tuple>,
    rewrite: Option<Rewrite>,
}

impl CtExpect {
    /// The expectation for conntrack metadata `md` and rewrite `rw`.
    #[inline]
    pub fn new(md: &PktCtMeta, rw: Option<Rewrite>) -> CtExpect {
        CtExpect {
            label: md.label,
            mark: md.mark,
            zone: md.zone,
            state: md.state,
            orig: md.orig,
            rewrite: rw,
        }
    }

    /// Whether conntrack metadata `md` and rewrite `rw` are this answer
    /// (`CtExpect::new(md, rw) == *self`, without building one).
    #[inline]
    pub fn matches(&self, md: &PktCtMeta, rw: &Option<Rewrite>) -> bool {
        self.state == md.state
            && self.zone == md.zone
            && self.mark == md.mark
            && self.label == md.label
            && self.orig == md.orig
            && self.rewrite == *rw
    }

    /// The NAT rewrite conntrack applied.
    #[inline]
    pub fn rewrite(&self) -> Option<Rewrite> {
        self.rewrite
    }
}

/// The `ct()` that started a pass, as the recording saw it: the tuple of
/// the packet it ran on (the chain's rewrites make it the same on every
/// replay that got that far) and where conntrack found the connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtAt {
    /// The packet's outer tuple at the `ct()`.
    pub tuple: Tuple,
    /// The connection the lookup found, tried first on replay.
    pub hint: Option<ConnHint>,
}

/// One pass of a chain: the megaflow entry it ran and, for every pass but
/// the first, what conntrack answered at the recirculation that started it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChainStep {
    /// Megaflow entry of the pass.
    pub entry: EntryIdx,
    /// The entry's slot generation when recorded (stale once it moved).
    pub sgen: u32,
    /// Conntrack's answer before the pass (unused for the first pass).
    pub expect: CtExpect,
    /// The `ct()` before the pass (unused for the first pass).
    pub ct: CtAt,
}

/// A chain being recorded by the ordinary path.
#[derive(Debug)]
pub struct Recorder {
    /// Still recordable (no fork, no trace, no cache flush, no failed
    /// re-extraction).
    pub ok: bool,
    /// The megaflow cache epoch when recording started.
    pub epoch: u64,
    /// The expectation for the next pass (set at a recirculation).
    pub pending: CtExpect,
    /// The `ct()` before the next pass (set at a recirculation).
    pub pending_ct: CtAt,
    /// Conntrack answered `+new` at a recirculation: the chain replays
    /// only while it keeps answering so (a retransmitted SYN, a one-way UDP
    /// stream), not for the connection's later packets.
    pub met_new: bool,
    len: usize,
    steps: [ChainStep; MAX_PASSES],
    /// The packet's layout and length before the walk, and its first
    /// `MAX_HDR` bytes (to compute the chain's patches).
    start: Option<(Layout, usize)>,
    hdr: [u8; MAX_HDR],
}

impl Recorder {
    /// An empty recording under cache epoch `epoch`.
    pub fn new(epoch: u64) -> Recorder {
        Recorder {
            ok: true,
            epoch,
            pending: CtExpect::default(),
            pending_ct: CtAt::default(),
            met_new: false,
            len: 0,
            steps: [ChainStep::default(); MAX_PASSES],
            start: None,
            hdr: [0; MAX_HDR],
        }
    }

    /// Keep the headers of `pkt` (laid out as `layout`) as the walk found
    /// them.
    pub fn capture(&mut self, pkt: &[u8], layout: &Layout) {
        let n = pkt.len().min(MAX_HDR);
        self.hdr[..n].copy_from_slice(&pkt[..n]);
        self.start = Some((*layout, pkt.len()));
    }

    /// A pass started on megaflow entry `entry` (slot generation `sgen`).
    #[inline]
    pub fn pass(&mut self, entry: EntryIdx, sgen: u32) {
        if self.len == MAX_PASSES {
            self.ok = false;
            return;
        }
        self.steps[self.len] = ChainStep {
            entry,
            sgen,
            expect: self.pending,
            ct: self.pending_ct,
        };
        self.len += 1;
    }

    /// The recorded passes.
    pub fn steps(&self) -> &[ChainStep] {
        &self.steps[..self.len]
    }
}

/// Where a chain lives in the arenas.
#[derive(Debug, Clone, Copy)]
struct ChainRef {
    start: u32,
    len: u8,
    /// Patches (`patches[p..p + n]`) and the shape they were cut for, when
    /// the chain's rewrites could be precomputed.
    prog: Option<(Shape, u32, u8)>,
    /// The patches' chunks: `chunks[c..c + n]` (patches index into it).
    chunks: (u32, u32),
}

/// One chain's slot.
#[derive(Debug)]
struct Slot {
    key: FlowKey,
    /// `None` for a free slot.
    r: Option<ChainRef>,
    /// The engine clock (ms) when it was recorded or last replayed.
    used_ms: Cell<u64>,
}

/// A chain replayed within this long (ms) is never evicted: when the cache
/// is full of such chains, new walks are not recorded (see the module
/// doc).
pub const CHAIN_IDLE_MS: u64 = 2_000;

/// A recorded chain.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a> {
    /// Its passes.
    pub steps: &'a [ChainStep],
    /// Its precomputed rewrites, if any.
    pub prog: Option<Prog<'a>>,
}

/// A chain's precomputed rewrites: one [`Patch`] per output (or REJECT) of
/// the walk, in order, plus one for the end of the walk when rewrites
/// follow the last output. A replay that uses them executes no `Set` and
/// applies no NAT rewrite itself; it applies the next patch where the
/// walk needs the bytes.
#[derive(Debug, Clone, Copy)]
pub struct Prog<'a> {
    /// The header offsets the patches are for.
    pub shape: Shape,
    /// The patches.
    pub patches: &'a [Patch],
    /// The chain's chunks, which the patches index.
    pub chunks: &'a [Chunk],
}

impl Prog<'_> {
    /// Apply patch `i`, if there is one, to `pkt`.
    #[inline]
    pub fn apply(&self, i: usize, pkt: &mut [u8]) {
        if let Some(p) = self.patches.get(i) {
            self.shape.apply(p, self.chunks, pkt);
        }
    }
}

/// Most patches a chain may need to be compiled.
const MAX_PATCHES: usize = 8;

/// The chains of one core.
#[derive(Debug)]
pub struct ChainCache {
    /// Slot indices, hashed by their slot's key.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    steps: Vec<ChainStep>,
    patches: Vec<Patch>,
    chunks: Vec<Chunk>,
    /// Chunks of the walk being compiled.
    scratch: Vec<Chunk>,
    capacity: usize,
    hand: usize,
    /// After a sweep that found no idle chain, none is tried before this
    /// (engine clock, ms): a refused walk costs nothing until time passes.
    backoff_until: u64,
    /// Chains evicted to make room.
    pub evictions: u64,
}

impl ChainCache {
    /// At most `capacity` chains; 0 turns chains off (every packet walks
    /// pass by pass through the megaflow cache).
    pub fn new(capacity: usize) -> ChainCache {
        ChainCache {
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            steps: Vec::new(),
            patches: Vec::new(),
            chunks: Vec::new(),
            scratch: Vec::new(),
            capacity,
            hand: 0,
            backoff_until: 0,
            evictions: 0,
        }
    }

    /// Whether chains are on (capacity above 0).
    pub fn enabled(&self) -> bool {
        self.capacity != 0
    }

    /// The most chains it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Drop every chain.
    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.free_slots.clear();
        self.steps.clear();
        self.patches.clear();
        self.chunks.clear();
        self.hand = 0;
    }

    /// Number of chains.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    #[inline]
    fn find(&self, key: &FlowKey) -> Option<u32> {
        let h = self.hasher.hash_one(key);
        self.index
            .find(h, |&s| self.slots[s as usize].key == *key)
            .copied()
    }

    /// The chain recorded for first-pass key `key` (stamped as used at
    /// `now_ms`).
    #[inline]
    pub fn lookup(&self, key: &FlowKey, now_ms: u64) -> Option<Chain<'_>> {
        if self.capacity == 0 {
            return None;
        }
        let s = &self.slots[self.find(key)? as usize];
        let c = s.r.as_ref()?;
        s.used_ms.set(now_ms);
        Some(Chain {
            steps: &self.steps[c.start as usize..c.start as usize + c.len as usize],
            prog: c.prog.map(|(shape, p, n)| Prog {
                shape,
                patches: &self.patches[p as usize..p as usize + n as usize],
                chunks: &self.chunks[c.chunks.0 as usize..(c.chunks.0 + c.chunks.1) as usize],
            }),
        })
    }

    /// Free slot `s`: out of the index; its ranges stay in the arenas
    /// until the next compaction.
    fn free(&mut self, s: u32) {
        let h = self.hasher.hash_one(self.slots[s as usize].key);
        if let Ok(e) = self.index.find_entry(h, |&x| x == s) {
            e.remove();
        }
        self.slots[s as usize].r = None;
        self.free_slots.push(s);
    }

    /// Evict one chain idle for [`CHAIN_IDLE_MS`], looking at up to
    /// [`super::SWEEP`] chains from the hand. `false` when none was found.
    fn evict_idle(&mut self, now_ms: u64) -> bool {
        let n = self.slots.len();
        if self.index.is_empty() || now_ms < self.backoff_until {
            return false;
        }
        for _ in 0..super::SWEEP.min(n) {
            let i = self.hand;
            self.hand = (self.hand + 1) % n;
            let s = &self.slots[i];
            if s.r.is_none() || now_ms.saturating_sub(s.used_ms.get()) < CHAIN_IDLE_MS {
                continue;
            }
            self.free(i as u32);
            self.evictions += 1;
            return true;
        }
        self.backoff_until = now_ms + 1;
        false
    }

    /// Copy the live chains' ranges to the front of fresh arenas (cold:
    /// only when an arena runs out of room).
    #[cold]
    fn compact(&mut self) {
        let mut steps = Vec::with_capacity(self.steps.capacity());
        let mut patches = Vec::with_capacity(self.patches.capacity());
        let mut chunks = Vec::with_capacity(self.chunks.capacity());
        for r in self.slots.iter_mut().filter_map(|s| s.r.as_mut()) {
            let (a, n) = (r.start as usize, r.len as usize);
            r.start = steps.len() as u32;
            steps.extend_from_slice(&self.steps[a..a + n]);
            if let Some((_, p, n)) = r.prog.as_mut() {
                let a = *p as usize;
                *p = patches.len() as u32;
                patches.extend_from_slice(&self.patches[a..a + *n as usize]);
            }
            let (a, n) = (r.chunks.0 as usize, r.chunks.1 as usize);
            r.chunks.0 = chunks.len() as u32;
            chunks.extend_from_slice(&self.chunks[a..a + n]);
        }
        self.steps = steps;
        self.patches = patches;
        self.chunks = chunks;
    }

    /// Whether the arenas have room for `steps` more steps and a compiled
    /// chain's patches and chunks.
    fn room(&self, steps: usize) -> bool {
        let room = self.capacity * MAX_PASSES;
        self.steps.len() + steps <= room
            && self.patches.len() + MAX_PATCHES <= room
            && self.chunks.len() + 4 * MAX_PATCHES <= 4 * room
    }

    /// Record the walk `rec` for first-pass key `key` at `now_ms`; `entry`
    /// gives the megaflow entries its steps name. When full, an idle chain
    /// is evicted; when every chain is busy, the walk is not recorded.
    #[cold]
    pub fn insert<'e>(
        &mut self,
        key: &FlowKey,
        rec: &Recorder,
        entry: &dyn Fn(EntryIdx) -> Option<&'e Xlation>,
        now_ms: u64,
    ) {
        let steps = rec.steps();
        if steps.is_empty() || self.capacity == 0 {
            return;
        }
        if let Some(s) = self.find(key) {
            self.free(s);
        }
        if self.index.len() >= self.capacity && !self.evict_idle(now_ms) {
            return;
        }
        if !self.room(steps.len()) {
            if self.index.is_empty() {
                self.clear();
            } else {
                self.compact();
            }
            if !self.room(steps.len()) {
                return;
            }
        }
        let start = self.steps.len() as u32;
        self.steps.extend_from_slice(steps);
        let prog = self.compile(rec, entry);
        let c0 = self.chunks.len() as u32;
        self.chunks.extend_from_slice(&self.scratch);
        let slot = Slot {
            key: *key,
            r: Some(ChainRef {
                start,
                len: steps.len() as u8,
                prog,
                chunks: (c0, self.scratch.len() as u32),
            }),
            used_ms: Cell::new(now_ms),
        };
        let s = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s as usize] = slot;
                s
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let (index, hasher, slots) = (&mut self.index, &self.hasher, &self.slots);
        index.insert_unique(hasher.hash_one(key), s, |&x| {
            hasher.hash_one(slots[x as usize].key)
        });
    }

    /// Precompute the byte patches of walk `rec` (see [`super::patch`]):
    /// run its `Set`s and recorded NAT rewrites on a copy of its headers,
    /// cutting a patch at every output and REJECT and at the end. Only
    /// walks whose every `ct()` recirculates as its pass's last action
    /// (so that every rewrite conntrack made is one the replay checks) and
    /// whose packet has a patchable shape are compiled.
    fn compile<'e>(
        &mut self,
        rec: &Recorder,
        entry: &dyn Fn(EntryIdx) -> Option<&'e Xlation>,
    ) -> Option<(Shape, u32, u8)> {
        // The chain's chunks are cut into `scratch` (indices from 0), then
        // appended to the arena by the caller.
        self.scratch.clear();
        let steps = rec.steps();
        if steps.iter().skip(1).any(|s| s.expect.state & cs::NEW != 0) {
            // A new connection's walk: its next packet finds the connection
            // in another state and diverges (only retransmissions replay
            // it), so new connections do not pay for compiling.
            return None;
        }
        let (layout, len) = rec.start?;
        let shape = Shape::of(&layout, len)?;
        let mut sim = Sim::new(shape, &layout, &rec.hdr)?;
        let p0 = self.patches.len();
        let mut ok = || -> Option<()> {
            for (s, st) in steps.iter().enumerate() {
                let x = entry(st.entry)?;
                if x.error.is_some() {
                    break;
                }
                let last_pass = s + 1 == steps.len();
                for (ai, a) in x.actions.iter().enumerate() {
                    match a {
                        DpAction::Set { from, to } => sim.commit(from, to),
                        DpAction::Output(_) | DpAction::Reject => {
                            let p = sim.cut(&mut self.scratch)?;
                            self.patches.push(p);
                        }
                        DpAction::Ct {
                            recirc: Some(_), ..
                        } if !last_pass && ai + 1 == x.actions.len() => {
                            if let Some(rw) = &steps[s + 1].expect.rewrite() {
                                sim.rewrite(rw);
                            }
                        }
                        DpAction::Ct { .. } => return None,
                        DpAction::CtClear | DpAction::Punt => {}
                    }
                }
            }
            let p = sim.cut(&mut self.scratch)?;
            if !p.is_empty() {
                self.patches.push(p);
            }
            (self.patches.len() - p0 <= MAX_PATCHES).then_some(())
        };
        match ok() {
            Some(()) => Some((shape, p0 as u32, (self.patches.len() - p0) as u8)),
            None => {
                self.patches.truncate(p0);
                self.scratch.clear();
                None
            }
        }
    }

    /// Forget the chain of `key`.
    #[cold]
    pub fn remove(&mut self, key: &FlowKey) {
        if let Some(s) = self.find(key) {
            self.free(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> FlowKey {
        let mut k = FlowKey::default();
        k.w[0] = i;
        k
    }

    fn walk(entry: EntryIdx, passes: usize) -> Recorder {
        let mut r = Recorder::new(0);
        for _ in 0..passes {
            r.pass(entry, 0);
        }
        r
    }

    #[test]
    fn sizes_in_the_module_doc() {
        assert_eq!(std::mem::size_of::<ChainStep>(), 128);
        assert_eq!(std::mem::size_of::<Patch>(), 12);
        assert_eq!(std::mem::size_of::<Chunk>(), 24);
    }

    fn none(_: EntryIdx) -> Option<&'static Xlation> {
        None
    }

    #[test]
    fn a_full_cache_evicts_an_idle_chain_and_keeps_busy_ones() {
        let mut c = ChainCache::new(2);
        c.insert(&key(1), &walk(1, 4), &none, 0);
        c.insert(&key(2), &walk(2, 4), &none, 0);
        // Both replayed recently: a third walk is not recorded.
        assert!(c.lookup(&key(1), 1_000).is_some());
        c.insert(&key(3), &walk(3, 4), &none, 1_500);
        assert!(c.lookup(&key(3), 1_500).is_none(), "no idle chain to evict");
        assert_eq!(c.len(), 2);
        // Connection 1 keeps replaying; 2 went quiet for CHAIN_IDLE_MS.
        assert!(c.lookup(&key(1), 2_500).is_some());
        c.insert(&key(3), &walk(3, 4), &none, 2_600);
        assert_eq!(c.evictions, 1);
        assert!(
            c.lookup(&key(2), 2_600).is_none(),
            "the idle chain made room"
        );
        assert_eq!(c.lookup(&key(1), 2_600).unwrap().steps[0].entry, 1);
        assert_eq!(c.lookup(&key(3), 2_600).unwrap().steps[0].entry, 3);
        // A diverged chain frees its slot for the next walk at once.
        c.remove(&key(1));
        c.insert(&key(4), &walk(4, 4), &none, 2_600);
        assert_eq!(c.evictions, 1);
        assert_eq!(c.lookup(&key(4), 2_600).unwrap().steps.len(), 4);
    }

    #[test]
    fn removed_chains_ranges_are_reclaimed_by_compaction() {
        let mut c = ChainCache::new(2);
        // Churn: every chain diverges; the arena fills with dead steps and
        // is compacted; recording never stops.
        for i in 0..100u64 {
            c.insert(&key(i), &walk(i as EntryIdx, MAX_PASSES), &none, i);
            assert_eq!(
                c.lookup(&key(i), i).unwrap().steps.len(),
                MAX_PASSES,
                "chain {i}"
            );
            assert!(c.steps.len() <= 2 * MAX_PASSES);
            c.remove(&key(i));
        }
        assert!(c.is_empty());
    }

    /// More live connections than chains, visited round robin: the cache
    /// keeps replaying `capacity` of them (evicting each just before its
    /// turn would replay none); once those stop, the others get recorded,
    /// and chains of every length find room in the arenas.
    #[test]
    fn a_working_set_larger_than_the_cache_keeps_replaying_part_of_it() {
        let mut c = ChainCache::new(4);
        let mut now = 0;
        let mut replays = 0;
        for _round in 0..10u64 {
            for i in 0..9u64 {
                now += 10;
                let len = 1 + (i as usize % MAX_PASSES);
                match c.lookup(&key(i), now) {
                    Some(ch) => {
                        assert_eq!((ch.steps.len(), ch.steps[0].entry), (len, i as EntryIdx));
                        replays += 1;
                    }
                    None => c.insert(&key(i), &walk(i as EntryIdx, len), &none, now),
                }
                assert!(c.len() <= 4);
                assert!(c.steps.len() <= 4 * MAX_PASSES);
            }
        }
        assert_eq!(
            replays,
            4 * 9,
            "the first four, every round after the first"
        );
        // Connections 0..4 end; 5..9 go on and take over after the idle time.
        now += CHAIN_IDLE_MS;
        for i in 5..9u64 {
            let len = 1 + (i as usize % MAX_PASSES);
            now += 10;
            assert!(c.lookup(&key(i), now).is_none());
            c.insert(&key(i), &walk(i as EntryIdx, len), &none, now);
            let got = c.lookup(&key(i), now).map(|ch| ch.steps.len());
            assert_eq!(got, Some(len), "key {i}");
        }
        assert_eq!(c.evictions, 4);
    }
}
