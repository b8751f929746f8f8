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
//! pass's last action, the packet is an unfragmented IPv4 TCP or UDP
//! packet and no `ct()` answered `+new`, recording turns the walk into a
//! self-contained program ([`Compiled`]): a flat list of [`Op`]s (notes,
//! outputs, REJECTs, punts, `ct_clear`, forgetting the cached connection,
//! and each `ct()` with its call, recorded answer, tuple and connection
//! hint), so a replay neither reads megaflow entries nor walks their
//! action lists, and evicting megaflows (a per-connection select-group
//! pass makes one per connection) leaves compiled chains valid. The
//! walk's `Set` actions and NAT rewrites run on a copy of its headers at
//! recording, which cuts a [`Patch`] wherever the walk needs the bytes
//! (each output and REJECT, and the end): the changed bytes and one
//! checksum delta each for IPv4 and TCP/UDP (see [`super::patch`] for why
//! that is bit-exact). A replay of a compiled chain (for a packet with the
//! recorded header offsets) executes no rewrite: it applies the next patch
//! at each output. Each `ct()` also keeps a catch-up patch (the bytes just
//! before it) and the metadata its recirculation froze: where conntrack
//! answers otherwise, the catch-up patch and conntrack's rewrite bring the
//! bytes to where the ordinary path has them and the walk continues on the
//! ordinary path from that recirculation. Walks in which conntrack
//! answered `+new` are not compiled: a TCP connection's next packet
//! diverges from them (only retransmissions replay them), so new
//! connections do not pay for compiling; a one-way UDP flow replays them
//! uncompiled, from their megaflow entries. Debug builds keep the walk's
//! `Set`s, run them alongside every compiled replay and compare the bytes
//! at each patch and the tuple at each `ct()`.
//!
//! Statistics: an uncompiled replay credits each pass's megaflow entry as
//! the ordinary path does. A compiled chain counts its packets once per
//! walk and is credited to the rules of all its passes (a rule hit by two
//! passes twice) when it is dropped or the counts are read
//! ([`ChainCache::rule_counts_into`]); a replay that stops part way
//! credits the rules of the passes it ran. `dump-megaflows` adds a
//! compiled chain's packets to the megaflows its walk ran while they stay
//! cached (an evicted megaflow's share shows in the rules' counts only).
//!
//! Walks that fork (a `ct(table=N)` that is not its pass's last action), that
//! are traced, or whose passes carry learn bookkeeping (`learn()` actions,
//! learned flows whose use refreshes their timeouts) are never recorded:
//! they take the pass-by-pass path every time. Every other walk is
//! recorded, SYNs included (retried SYNs to a Service without endpoints
//! replay; recording costs a new connection ~4% of its instructions).
//!
//! Owner and invalidation: the chain cache lives inside [`MegaflowCache`]
//! (one per worker). An uncompiled chain refers to its megaflow entries
//! by index and slot generation: one of whose megaflows was evicted is
//! stale, found so at lookup (one generation compare per pass) and
//! dropped. A cache clear (pipeline generation change) drops every chain,
//! compiled or not.
//!
//! Eviction: at most `capacity` chains, in a slab of slots indexed by key;
//! their steps, programs, patches and chunks live in arenas. When the
//! cache is full, an insert looks at up to [`super::SWEEP`] chains from a
//! CLOCK hand and evicts the first one not replayed for [`CHAIN_IDLE_MS`]
//! or recorded from a `+new` answer and never replayed (a TCP SYN's walk:
//! its connection's next packet takes another); if there is none, the
//! walk is not recorded (and no sweep is tried again within the same
//! millisecond). So chains of connections that ended make room for new
//! ones after two idle seconds, while a working set of live connections
//! larger than the cache keeps replaying `capacity` of them instead of
//! evicting each chain just before its next use (100,000 established
//! flows visited round robin against 65,536 chains would otherwise never
//! replay). Removed chains leave their ranges in the arenas; once they
//! hold more dead elements than live ones plus a slack, an insert
//! compacts them (the live chains' ranges copied to the front), so
//! compaction costs O(1) amortised per chain.
//!
//! Memory: a chain costs its slot (168 bytes, its 56-byte [`ChainKey`]
//! included) and an index entry (~5 bytes); an uncompiled one 128 bytes
//! per pass, a compiled one instead 8 bytes per op, 112 + 104 per `ct()`
//! (what a replay reads, what one that stops there reads; the calls
//! themselves are shared), 12 per patch, 24 per changed 8-byte window, 4
//! per rule and 8 per pass (the NodePort walk of an established packet:
//! ~1 kB; [`ChainCache::bytes`] measures it). The
//! slab and arenas grow as chains are recorded, up to the capacity.
//!
//! [`MegaflowCache`]: super::MegaflowCache

use std::cell::Cell;
use std::hash::BuildHasher;

use conntrack::{ConnHint, CtCall, PktCtMeta, Rewrite, Tuple, cs};
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use super::EntryIdx;
use super::patch::{Chunk, MAX_HDR, Patch, Shape, Sim};
use crate::drop::DropReason;
use crate::extract::Layout;
use crate::key::{FlowKey, slot};
use crate::pipeline::classifier::FlowIdx;
use crate::pipeline::exec::{MAX_RECIRC_DEPTH, rewrites_conn_key};
use crate::pipeline::stats::FlowStat;
use crate::pipeline::xlate::{DpAction, Recirc, Xlation};

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

/// One operation of a compiled chain's program (see [`Compiled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Count a pass's note (a skipped output and the like).
    Note(DropReason),
    /// The pass failed to translate: the packet is dropped (the walk ends;
    /// the bytes get the next patch).
    Error(DropReason),
    /// Apply the next patch and transmit on the port; `last`: the last
    /// action of its pass, and so of the walk.
    Output {
        /// OpenFlow port.
        port: u32,
        /// Nothing uses the bytes after it ([`crate::pipeline::exec::Sink::output_last`]).
        last: bool,
    },
    /// Apply the next patch and answer the REJECT.
    Reject,
    /// A controller punt.
    Punt,
    /// `ct_clear`.
    CtClear,
    /// A header rewrite that changes what conntrack keys on: the packet's
    /// cached connection is forgotten, as in OVS.
    ForgetConn,
    /// The `ct()` (`cts[i]`) that ends a pass and recirculates.
    Ct(u8),
    /// Debug builds: a `Set` (`sets[i]`) the shadow check runs.
    #[cfg(debug_assertions)]
    Set(u32),
}

/// Metadata a recirculation freezes, enough to continue the walk on the
/// ordinary path where a replay diverges (see `restore_metadata` in
/// `pipeline::exec`): in_port, registers, pkt_mark, OpenFlow metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Table the next pass starts in.
    pub table: u8,
    in_port: u32,
    pkt_mark: u32,
    metadata: u64,
    regs: [u64; 8],
}

impl Resume {
    fn of(r: &Recirc) -> Resume {
        let f = &r.frozen;
        let mut regs = [0; 8];
        regs.copy_from_slice(&f.w[7..=14]);
        Resume {
            table: r.table,
            in_port: f.get(slot::IN_PORT) as u32,
            pkt_mark: f.get(slot::PKT_MARK) as u32,
            metadata: f.get(slot::METADATA),
            regs,
        }
    }

    /// The recirculation: its table and a frozen flow carrying every field
    /// a recirculated pass takes from it.
    pub fn recirc(&self) -> Recirc {
        let mut frozen = FlowKey::ZERO;
        frozen.w[7..=14].copy_from_slice(&self.regs);
        frozen.set(slot::IN_PORT, u64::from(self.in_port));
        frozen.set(slot::PKT_MARK, u64::from(self.pkt_mark));
        frozen.set(slot::METADATA, self.metadata);
        Recirc {
            table: self.table,
            frozen,
        }
    }
}

/// A compiled chain's `ct()`, the part a replay reads: the call, what
/// conntrack answered when the walk was recorded, on which tuple and
/// connection.
#[derive(Debug, Clone, Copy)]
pub struct CtOp {
    /// The `ct()` parameters: an index into [`Compiled::calls`] (the
    /// calls of a pipeline's flows are few and shared by every chain).
    pub call: u16,
    /// Conntrack's recorded answer (the next pass depends on it).
    pub expect: CtExpect,
    /// The tuple the packet has at this `ct()` and the connection found.
    pub at: CtAt,
}

/// What a compiled chain's replay needs of a `ct()` only where it stops
/// there (kept apart from [`CtOp`] so a replay's working set stays small).
#[derive(Debug, Clone, Copy)]
pub struct CtCold {
    /// The bytes just before this `ct()`, from where the last output's
    /// patch left them: applied only when the replay diverges here.
    pub catchup: Patch,
    /// How many of the chain's rules belong to the passes up to this
    /// `ct()` (credited when the replay stops here).
    pub rules_upto: u16,
    /// Where the walk continues when the replay diverges here.
    pub resume: Resume,
}

/// Where a compiled chain lives in the [`Arenas`]: `(start, len)` in each
/// (its `ct()`s' cold halves share the range of `cts`).
#[derive(Debug, Clone, Copy)]
struct ProgRef {
    shape: Shape,
    ops: (u32, u16),
    cts: (u32, u8),
    patches: (u32, u8),
    /// The patches' chunks (patches index into them).
    chunks: (u32, u32),
    rules: (u32, u16),
    /// The megaflow entries (and their slot generations) the walk ran, for
    /// `dump-megaflows` only.
    refs: (u32, u8),
    #[cfg(debug_assertions)]
    sets: (u32, u16),
}

impl ProgRef {
    /// Arena elements it holds (for the compaction bookkeeping).
    fn units(&self) -> usize {
        let u = self.ops.1 as usize
            + self.cts.1 as usize
            + self.patches.1 as usize
            + self.chunks.1 as usize
            + self.rules.1 as usize
            + self.refs.1 as usize;
        #[cfg(debug_assertions)]
        let u = u + self.sets.1 as usize;
        u
    }
}

/// Where a chain lives in the arenas: recorded steps (a chain that is not
/// compiled replays its megaflows' actions), or a compiled program.
#[derive(Debug, Clone, Copy)]
struct ChainRef {
    /// `steps[s..s + n]` (uncompiled chains only).
    steps: (u32, u8),
    prog: Option<ProgRef>,
    /// A conntrack answer of the walk was `+new`.
    new: bool,
}

impl ChainRef {
    /// Arena elements it holds (for the compaction bookkeeping).
    fn units(&self) -> usize {
        self.steps.1 as usize + self.prog.map_or(0, |p| p.units())
    }
}

/// Words of a first-pass key a chain is filed under: the ones extraction
/// writes (in_port through the ARP addresses); the rest (registers,
/// metadata, conntrack fields, recirculation id) are zero in every
/// first-pass key, so these words are the whole key in 56 bytes, one cache
/// line, instead of 168.
pub const CHAIN_KEY_WORDS: usize = 7;

/// A first-pass key as the chain cache files it (see [`CHAIN_KEY_WORDS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainKey([u64; CHAIN_KEY_WORDS]);

impl ChainKey {
    /// The chain key of first-pass key `k`; `None` if a word beyond
    /// [`CHAIN_KEY_WORDS`] is set (not a key extraction made).
    #[inline]
    pub fn of(k: &FlowKey) -> Option<ChainKey> {
        if k.w[CHAIN_KEY_WORDS..].iter().any(|w| *w != 0) {
            return None;
        }
        let mut w = [0; CHAIN_KEY_WORDS];
        w.copy_from_slice(&k.w[..CHAIN_KEY_WORDS]);
        Some(ChainKey(w))
    }

    /// A folded-multiply hash of the words (seeded per cache).
    #[inline]
    fn hash(&self, seed: u64) -> u64 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = seed;
        for w in self.0 {
            let p = u128::from(h ^ w) * u128::from(K);
            h = (p as u64) ^ ((p >> 64) as u64);
        }
        h
    }
}

/// One chain's slot: its key and where it lives first (what a lookup
/// reads), then its bookkeeping.
#[derive(Debug)]
struct Slot {
    key: ChainKey,
    /// `None` for a free slot.
    r: Option<ChainRef>,
    /// The engine clock (ms) when it was recorded or last replayed.
    used_ms: Cell<u64>,
    /// Replayed at least once.
    replayed: Cell<bool>,
    /// A compiled chain's packets (its whole walk), credited to its rules
    /// when it is dropped or the counts are read.
    stat: Cell<FlowStat>,
}

/// A chain replayed within this long (ms) is never evicted: when the cache
/// is full of such chains, new walks are not recorded (see the module
/// doc).
pub const CHAIN_IDLE_MS: u64 = 2_000;

/// A recorded chain.
#[derive(Debug, Clone, Copy)]
pub enum Chain<'a> {
    /// Not compiled: its passes, replayed from their megaflow entries.
    Steps(&'a [ChainStep]),
    /// Compiled: a self-contained program.
    Compiled(Compiled<'a>),
}

/// A compiled chain: the walk as a flat program of [`Op`]s that needs no
/// megaflow entry (so evicting megaflows leaves it valid), with its
/// header rewrites precomputed as [`Patch`]es: one per output (or
/// REJECT), in order, plus one for the end of the walk when rewrites
/// follow the last output. A replay executes no `Set` and applies no NAT
/// rewrite itself; it applies the next patch where the walk needs the
/// bytes. Its packets are counted once per walk ([`Compiled::credit`])
/// and credited to the rules of every pass.
#[derive(Debug, Clone, Copy)]
pub struct Compiled<'a> {
    /// The header offsets the patches are for.
    pub shape: Shape,
    /// The program.
    pub ops: &'a [Op],
    /// Its `ct()`s.
    pub cts: &'a [CtOp],
    /// What a replay that stops at a `ct()` needs (`cold[i]` for `cts[i]`).
    pub cold: &'a [CtCold],
    /// The calls [`CtOp::call`] indexes.
    pub calls: &'a [CtCall],
    /// The patches.
    pub patches: &'a [Patch],
    /// The chain's chunks, which the patches index.
    pub chunks: &'a [Chunk],
    /// Every rule of every pass, pass by pass.
    pub rules: &'a [FlowIdx],
    /// Debug builds: the walk's `Set`s, for the shadow check.
    #[cfg(debug_assertions)]
    pub sets: &'a [(FlowKey, FlowKey)],
    stat: &'a Cell<FlowStat>,
}

impl Compiled<'_> {
    /// Apply patch `i`, if there is one, to `pkt`.
    #[inline]
    pub fn apply(&self, i: usize, pkt: &mut [u8]) {
        if let Some(p) = self.patches.get(i) {
            self.shape.apply(p, self.chunks, pkt);
        }
    }

    /// Apply `p` (a [`CtOp::catchup`]) to `pkt`.
    #[inline]
    pub fn apply_patch(&self, p: &Patch, pkt: &mut [u8]) {
        self.shape.apply(p, self.chunks, pkt);
    }

    /// Count one packet of `bytes` bytes that ran the whole walk.
    #[inline]
    pub fn credit(&self, bytes: usize, now_ms: u64) {
        let mut s = self.stat.get();
        s.credit(bytes, now_ms);
        self.stat.set(s);
    }
}

/// Most patches a chain may need to be compiled.
const MAX_PATCHES: usize = 8;

/// Arena elements freed chains may leave behind, beyond the live ones,
/// before the arenas are compacted (so compaction, O(live), runs at most
/// once per that many freed elements).
const COMPACT_SLACK: usize = if cfg!(test) { 64 } else { 1 << 16 };

/// The arenas compiled programs live in: the cache's, which hold every
/// compiled chain's ranges, and the one a walk is compiled into before it
/// is appended to those (the cache's `scratch`).
#[derive(Debug, Default)]
struct Arenas {
    ops: Vec<Op>,
    cts: Vec<CtOp>,
    /// `cold[i]` for `cts[i]`.
    cold: Vec<CtCold>,
    patches: Vec<Patch>,
    chunks: Vec<Chunk>,
    rules: Vec<FlowIdx>,
    refs: Vec<(EntryIdx, u32)>,
    #[cfg(debug_assertions)]
    sets: Vec<(FlowKey, FlowKey)>,
}

impl Arenas {
    fn clear(&mut self) {
        self.ops.clear();
        self.cts.clear();
        self.cold.clear();
        self.patches.clear();
        self.chunks.clear();
        self.rules.clear();
        self.refs.clear();
        #[cfg(debug_assertions)]
        self.sets.clear();
    }

    /// Empty arenas with the capacity of these (to compact into).
    fn empty_like(&self) -> Arenas {
        Arenas {
            ops: Vec::with_capacity(self.ops.capacity()),
            cts: Vec::with_capacity(self.cts.capacity()),
            cold: Vec::with_capacity(self.cold.capacity()),
            patches: Vec::with_capacity(self.patches.capacity()),
            chunks: Vec::with_capacity(self.chunks.capacity()),
            rules: Vec::with_capacity(self.rules.capacity()),
            refs: Vec::with_capacity(self.refs.capacity()),
            #[cfg(debug_assertions)]
            sets: Vec::with_capacity(self.sets.capacity()),
        }
    }

    /// Bytes allocated.
    fn bytes(&self) -> usize {
        let n = bytes_of(&self.ops)
            + bytes_of(&self.cts)
            + bytes_of(&self.cold)
            + bytes_of(&self.patches)
            + bytes_of(&self.chunks)
            + bytes_of(&self.rules)
            + bytes_of(&self.refs);
        #[cfg(debug_assertions)]
        let n = n + bytes_of(&self.sets);
        n
    }

    /// Append the whole of `src` (one compiled program, whose lengths
    /// `compile` bounded), returning where it went.
    fn append(&mut self, src: &Arenas, shape: Shape) -> ProgRef {
        push(&mut self.cold, &src.cold);
        ProgRef {
            shape,
            ops: (push(&mut self.ops, &src.ops), src.ops.len() as u16),
            cts: (push(&mut self.cts, &src.cts), src.cts.len() as u8),
            patches: (
                push(&mut self.patches, &src.patches),
                src.patches.len() as u8,
            ),
            chunks: (push(&mut self.chunks, &src.chunks), src.chunks.len() as u32),
            rules: (push(&mut self.rules, &src.rules), src.rules.len() as u16),
            refs: (push(&mut self.refs, &src.refs), src.refs.len() as u8),
            #[cfg(debug_assertions)]
            sets: (push(&mut self.sets, &src.sets), src.sets.len() as u16),
        }
    }

    /// Move program `p`'s ranges from these arenas to the end of `dst`
    /// (compaction), updating `p`.
    fn relocate(&self, dst: &mut Arenas, p: &mut ProgRef) {
        let mut c0 = p.cts.0;
        relocate(&self.cold, &mut dst.cold, &mut c0, p.cts.1 as usize);
        relocate(&self.ops, &mut dst.ops, &mut p.ops.0, p.ops.1 as usize);
        relocate(&self.cts, &mut dst.cts, &mut p.cts.0, p.cts.1 as usize);
        let n = p.patches.1 as usize;
        relocate(&self.patches, &mut dst.patches, &mut p.patches.0, n);
        let n = p.chunks.1 as usize;
        relocate(&self.chunks, &mut dst.chunks, &mut p.chunks.0, n);
        relocate(
            &self.rules,
            &mut dst.rules,
            &mut p.rules.0,
            p.rules.1 as usize,
        );
        relocate(&self.refs, &mut dst.refs, &mut p.refs.0, p.refs.1 as usize);
        #[cfg(debug_assertions)]
        relocate(&self.sets, &mut dst.sets, &mut p.sets.0, p.sets.1 as usize);
    }

    /// Program `p`'s rules.
    #[inline]
    fn rules(&self, p: &ProgRef) -> &[FlowIdx] {
        &self.rules[range(p.rules)]
    }

    /// Program `p`'s megaflow references.
    #[inline]
    fn refs(&self, p: &ProgRef) -> &[(EntryIdx, u32)] {
        &self.refs[range(p.refs)]
    }

    /// Program `p` as a replay reads it.
    #[inline]
    fn compiled<'a>(
        &'a self,
        p: &ProgRef,
        calls: &'a [CtCall],
        stat: &'a Cell<FlowStat>,
    ) -> Compiled<'a> {
        Compiled {
            shape: p.shape,
            ops: &self.ops[range(p.ops)],
            cts: &self.cts[range(p.cts)],
            cold: &self.cold[range(p.cts)],
            calls,
            patches: &self.patches[range(p.patches)],
            chunks: &self.chunks[range(p.chunks)],
            rules: self.rules(p),
            #[cfg(debug_assertions)]
            sets: &self.sets[range(p.sets)],
            stat,
        }
    }
}

/// The index range of arena range `(start, len)`.
#[inline]
fn range<N: Into<u32>>((a, n): (u32, N)) -> std::ops::Range<usize> {
    let n: u32 = n.into();
    a as usize..a as usize + n as usize
}

/// Bytes `v` has allocated.
fn bytes_of<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// Append `src` to `dst`, returning where it went.
fn push<T: Copy>(dst: &mut Vec<T>, src: &[T]) -> u32 {
    let at = dst.len() as u32;
    dst.extend_from_slice(src);
    at
}

/// Move range `(start, n)` of `src` to the end of `dst`.
fn relocate<T: Copy>(src: &[T], dst: &mut Vec<T>, start: &mut u32, n: usize) {
    let a = *start as usize;
    *start = push(dst, &src[a..a + n]);
}

/// The chains of one core.
#[derive(Debug)]
pub struct ChainCache {
    /// Slot indices, hashed by their slot's key.
    index: HashTable<u32>,
    /// Seed of the key hash.
    seed: u64,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    steps: Vec<ChainStep>,
    /// The compiled chains' programs.
    arenas: Arenas,
    /// Distinct `ct()` calls of the compiled chains (never compacted:
    /// bounded by the pipeline's flows; cleared with the cache).
    calls: Vec<CtCall>,
    /// Arena elements of live chains and of freed ones.
    live_units: usize,
    dead_units: usize,
    /// The walk being compiled.
    scratch: Arenas,
    capacity: usize,
    hand: usize,
    /// After a sweep that found no idle chain, none is tried before this
    /// (engine clock, ms): a refused walk costs nothing until time passes.
    backoff_until: u64,
    /// Per-rule counts of dropped compiled chains and of replays that
    /// stopped part way (classifier indices under the cache's generation).
    folded: HashMap<FlowIdx, FlowStat>,
    /// Chains evicted to make room.
    pub evictions: u64,
}

impl ChainCache {
    /// At most `capacity` chains; 0 turns chains off (every packet walks
    /// pass by pass through the megaflow cache).
    pub fn new(capacity: usize) -> ChainCache {
        ChainCache {
            index: HashTable::new(),
            seed: DefaultHashBuilder::default().hash_one(0u64) | 1,
            slots: Vec::new(),
            free_slots: Vec::new(),
            steps: Vec::new(),
            arenas: Arenas::default(),
            calls: Vec::new(),
            live_units: 0,
            dead_units: 0,
            scratch: Arenas::default(),
            capacity,
            hand: 0,
            backoff_until: 0,
            folded: HashMap::new(),
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

    /// Drop every chain (compiled chains' counts are folded into the
    /// per-rule totals first).
    pub fn clear(&mut self) {
        for s in 0..self.slots.len() {
            self.fold_slot(s);
        }
        self.index.clear();
        self.slots.clear();
        self.free_slots.clear();
        self.steps.clear();
        self.arenas.clear();
        self.calls.clear();
        self.live_units = 0;
        self.dead_units = 0;
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

    /// Bytes the chains' slots, index and arenas hold (allocated
    /// capacity, so what the cache costs in memory).
    pub fn bytes(&self) -> usize {
        bytes_of(&self.slots)
            + bytes_of(&self.free_slots)
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + bytes_of(&self.steps)
            + self.arenas.bytes()
            + bytes_of(&self.calls)
    }

    #[inline]
    fn find(&self, key: &FlowKey) -> Option<u32> {
        let k = ChainKey::of(key)?;
        self.index
            .find(k.hash(self.seed), |&s| self.slots[s as usize].key == k)
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
        s.replayed.set(true);
        Some(match &c.prog {
            None => Chain::Steps(&self.steps[range(c.steps)]),
            Some(p) => Chain::Compiled(self.arenas.compiled(p, &self.calls, &s.stat)),
        })
    }

    /// The slot of the compiled chain of `key`, if any (loading it): the
    /// first stage of warming a burst (see
    /// [`crate::pipeline::exec::Engine::process_burst`]). Changes nothing.
    #[inline]
    pub fn warm_slot(&self, key: &FlowKey) -> Option<u32> {
        let s = self.find(key)?;
        self.slots[s as usize].r.as_ref()?.prog?;
        Some(s)
    }

    /// The second stage: load slot `s`'s `ct()`s (and first op), writing
    /// the connection hints a replay will try into `hints`; returns a
    /// value derived from the loads, for the caller to sink.
    #[inline]
    pub fn warm_prog(&self, s: u32, hints: &mut [Option<ConnHint>; MAX_PASSES]) -> u64 {
        let Some(p) = self.slots.get(s as usize).and_then(|s| s.r.as_ref()?.prog) else {
            return 0;
        };
        let acc = self
            .arenas
            .ops
            .get(p.ops.0 as usize)
            .map_or(0, |o| match o {
                Op::Ct(i) => u64::from(*i),
                _ => 1,
            });
        let cts = self.arenas.cts.get(range(p.cts)).unwrap_or(&[]);
        for (h, c) in hints.iter_mut().zip(cts) {
            *h = c.at.hint;
        }
        acc
    }

    /// Add slot `s`'s compiled counts to the per-rule totals (taking them).
    fn fold_slot(&mut self, s: usize) {
        let slot = &self.slots[s];
        if let Some(p) = slot.r.as_ref().and_then(|r| r.prog) {
            let st = slot.stat.take();
            if st.packets != 0 {
                for r in self.arenas.rules(&p) {
                    self.folded.entry(*r).or_default().add(st);
                }
            }
        }
    }

    /// Credit one packet of `bytes` bytes to the first `n` rules of the
    /// compiled chain of `key` (a replay that stopped part way: the
    /// passes it ran).
    #[cold]
    pub fn credit_part(&mut self, key: &FlowKey, n: u16, bytes: usize, now_ms: u64) {
        let Some(p) = self
            .find(key)
            .and_then(|s| self.slots[s as usize].r.as_ref()?.prog)
        else {
            return;
        };
        let rules = self.arenas.rules(&p);
        for r in &rules[..usize::from(n).min(rules.len())] {
            self.folded.entry(*r).or_default().credit(bytes, now_ms);
        }
    }

    /// Add the per-rule counts of the chains (dropped and live) to `out`.
    pub fn rule_counts_into(&self, out: &mut HashMap<FlowIdx, FlowStat>) {
        for (r, s) in &self.folded {
            out.entry(*r).or_default().add(*s);
        }
        for slot in &self.slots {
            if let Some(p) = slot.r.as_ref().and_then(|r| r.prog) {
                let st = slot.stat.get();
                if st.packets != 0 {
                    for r in self.arenas.rules(&p) {
                        out.entry(*r).or_default().add(st);
                    }
                }
            }
        }
    }

    /// [`ChainCache::rule_counts_into`], taken: the chains start counting
    /// from zero.
    pub fn take_rule_counts_into(&mut self, out: &mut HashMap<FlowIdx, FlowStat>) {
        for s in 0..self.slots.len() {
            self.fold_slot(s);
        }
        for (r, s) in self.folded.drain() {
            out.entry(r).or_default().add(s);
        }
    }

    /// Forget the per-rule totals (a new generation's indices differ).
    pub fn forget_rule_counts(&mut self) {
        self.folded.clear();
    }

    /// Each live compiled chain's counts, attributed to the megaflow
    /// entries its walk ran: `f(entry, slot generation, counts)`.
    pub fn for_each_ref(&self, mut f: impl FnMut(EntryIdx, u32, FlowStat)) {
        for slot in &self.slots {
            if let Some(p) = slot.r.as_ref().and_then(|r| r.prog) {
                let st = slot.stat.get();
                if st.packets == 0 {
                    continue;
                }
                for &(e, g) in self.arenas.refs(&p) {
                    f(e, g, st);
                }
            }
        }
    }

    /// Free slot `s`: out of the index, its counts folded; its ranges stay
    /// in the arenas until the next compaction.
    fn free(&mut self, s: u32) {
        self.fold_slot(s as usize);
        let h = self.slots[s as usize].key.hash(self.seed);
        if let Ok(e) = self.index.find_entry(h, |&x| x == s) {
            e.remove();
        }
        if let Some(r) = self.slots[s as usize].r.take() {
            let u = r.units();
            self.live_units -= u;
            self.dead_units += u;
        }
        self.free_slots.push(s);
    }

    /// Evict one evictable chain, looking at up to [`super::SWEEP`] chains
    /// from the hand: one idle for [`CHAIN_IDLE_MS`], or a new
    /// connection's walk never replayed (a TCP SYN's: its connection's
    /// next packet takes another walk). `false` when none was found.
    fn evict_idle(&mut self, now_ms: u64) -> bool {
        let n = self.slots.len();
        if self.index.is_empty() || now_ms < self.backoff_until {
            return false;
        }
        for _ in 0..super::SWEEP.min(n) {
            let i = self.hand;
            self.hand = (self.hand + 1) % n;
            let s = &self.slots[i];
            let Some(r) = &s.r else { continue };
            let idle = now_ms.saturating_sub(s.used_ms.get()) >= CHAIN_IDLE_MS;
            let evictable = idle || (r.new && !s.replayed.get());
            if !evictable {
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
    /// only once freed chains left more than the live ones plus
    /// [`COMPACT_SLACK`] elements behind).
    #[cold]
    fn compact(&mut self) {
        let mut steps = Vec::with_capacity(self.steps.capacity());
        let mut arenas = self.arenas.empty_like();
        for r in self.slots.iter_mut().filter_map(|s| s.r.as_mut()) {
            relocate(&self.steps, &mut steps, &mut r.steps.0, r.steps.1 as usize);
            if let Some(p) = r.prog.as_mut() {
                self.arenas.relocate(&mut arenas, p);
            }
        }
        self.steps = steps;
        self.arenas = arenas;
        self.dead_units = 0;
    }

    /// Record the walk `rec` for first-pass key `key` at `now_ms`; `entry`
    /// gives the megaflow entries its steps name (`None` once a slot's
    /// generation moved: the walk's own inserts may have evicted an
    /// earlier pass's entry). When full, an evictable
    /// chain is evicted; when every chain is busy, the walk is not
    /// recorded.
    #[cold]
    pub fn insert<'e>(
        &mut self,
        key: &FlowKey,
        rec: &Recorder,
        entry: &dyn Fn(EntryIdx, u32) -> Option<&'e Xlation>,
        now_ms: u64,
    ) {
        let steps = rec.steps();
        let Some(ck) = ChainKey::of(key) else {
            return;
        };
        if steps.is_empty() || self.capacity == 0 {
            return;
        }
        if let Some(s) = self.find(key) {
            self.free(s);
        }
        if self.index.len() >= self.capacity && !self.evict_idle(now_ms) {
            return;
        }
        if self.dead_units > self.live_units + COMPACT_SLACK {
            self.compact();
        }
        let new = steps.iter().skip(1).any(|s| s.expect.state & cs::NEW != 0);
        let prog = if new {
            // A new connection's walk: its next packet finds the connection
            // in another state and diverges (only retransmissions replay
            // it), so new connections do not pay for compiling.
            None
        } else {
            self.compile(key, rec, entry)
        };
        let (steps, prog) = match prog {
            None => ((push(&mut self.steps, steps), steps.len() as u8), None),
            Some(shape) => ((0, 0), Some(self.arenas.append(&self.scratch, shape))),
        };
        let r = ChainRef { steps, prog, new };
        self.live_units += r.units();
        let slot = Slot {
            key: ck,
            r: Some(r),
            used_ms: Cell::new(now_ms),
            replayed: Cell::new(false),
            stat: Cell::new(FlowStat::default()),
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
        let (index, seed, slots) = (&mut self.index, self.seed, &self.slots);
        index.insert_unique(ck.hash(seed), s, |&x| slots[x as usize].key.hash(seed));
    }

    /// Compile walk `rec` into `self.scratch` (see [`Compiled`] and
    /// [`super::patch`]): run its `Set`s and recorded NAT rewrites on a
    /// copy of its headers, cutting a patch at every output and REJECT and
    /// at the end, and a catch-up patch at every `ct()`. Only walks whose
    /// every `ct()` recirculates as its pass's last action (so that every
    /// rewrite conntrack made is one the replay checks), whose every
    /// megaflow is still cached and whose packet has a patchable shape are
    /// compiled. `None` (and `scratch` empty) otherwise.
    fn compile<'e>(
        &mut self,
        key: &FlowKey,
        rec: &Recorder,
        entry: &dyn Fn(EntryIdx, u32) -> Option<&'e Xlation>,
    ) -> Option<Shape> {
        self.scratch.clear();
        let steps = rec.steps();
        let (layout, len) = rec.start?;
        let shape = Shape::of(&layout, len)?;
        let mut sim = Sim::new(shape, &layout, &rec.hdr)?;
        let sc = &mut self.scratch;
        let calls = &mut self.calls;
        let mut ok = || -> Option<()> {
            for (s, st) in steps.iter().enumerate() {
                let x = entry(st.entry, st.sgen)?;
                sc.refs.push((st.entry, st.sgen));
                sc.rules.extend_from_slice(&x.rules);
                sc.ops.extend(x.notes.iter().map(|n| Op::Note(*n)));
                if let Some(e) = x.error {
                    sc.ops.push(Op::Error(e));
                    break;
                }
                let last_pass = s + 1 == steps.len();
                for (ai, a) in x.actions.iter().enumerate() {
                    match a {
                        DpAction::Set { from, to } => {
                            sim.commit(from, to);
                            #[cfg(debug_assertions)]
                            {
                                sc.ops.push(Op::Set(sc.sets.len() as u32));
                                sc.sets.push((*from, *to));
                            }
                            if rewrites_conn_key(from, to, key) {
                                sc.ops.push(Op::ForgetConn);
                            }
                        }
                        DpAction::Output(port) => {
                            sc.patches.push(sim.cut(&mut sc.chunks)?);
                            sc.ops.push(Op::Output {
                                port: *port,
                                last: ai + 1 == x.actions.len(),
                            });
                        }
                        DpAction::Reject => {
                            sc.patches.push(sim.cut(&mut sc.chunks)?);
                            sc.ops.push(Op::Reject);
                        }
                        DpAction::Ct {
                            call,
                            recirc: Some(r),
                        } if !last_pass && ai + 1 == x.actions.len() => {
                            let next = &steps[s + 1];
                            let catchup = sim.peek(&mut sc.chunks)?;
                            if let Some(rw) = &next.expect.rewrite() {
                                sim.rewrite(rw);
                            }
                            sc.ops.push(Op::Ct(u8::try_from(sc.cts.len()).ok()?));
                            let ci = match calls.iter().position(|c| c == call) {
                                Some(i) => i,
                                None => {
                                    calls.push(*call);
                                    calls.len() - 1
                                }
                            };
                            sc.cts.push(CtOp {
                                call: u16::try_from(ci).ok()?,
                                expect: next.expect,
                                at: next.ct,
                            });
                            sc.cold.push(CtCold {
                                catchup,
                                rules_upto: u16::try_from(sc.rules.len()).ok()?,
                                resume: Resume::of(r),
                            });
                        }
                        DpAction::Ct { .. } => return None,
                        DpAction::CtClear => sc.ops.push(Op::CtClear),
                        DpAction::Punt => sc.ops.push(Op::Punt),
                    }
                }
            }
            let p = sim.cut(&mut sc.chunks)?;
            if !p.is_empty() {
                sc.patches.push(p);
            }
            (sc.patches.len() <= MAX_PATCHES
                && sc.ops.len() <= u16::MAX as usize
                && sc.rules.len() <= u16::MAX as usize)
                .then_some(())
        };
        match ok() {
            Some(()) => Some(shape),
            None => {
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
        assert_eq!(std::mem::size_of::<Op>(), 8);
        assert_eq!(std::mem::size_of::<CtOp>(), 112);
        assert_eq!(std::mem::size_of::<CtCold>(), 104);
        assert_eq!(std::mem::size_of::<Slot>(), 168);
    }

    fn none(_: EntryIdx, _: u32) -> Option<&'static Xlation> {
        None
    }

    fn steps(c: Chain<'_>) -> &[ChainStep] {
        match c {
            Chain::Steps(s) => s,
            Chain::Compiled(_) => panic!("compiled"),
        }
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
        assert_eq!(steps(c.lookup(&key(1), 2_600).unwrap())[0].entry, 1);
        assert_eq!(steps(c.lookup(&key(3), 2_600).unwrap())[0].entry, 3);
        // A diverged chain frees its slot for the next walk at once.
        c.remove(&key(1));
        c.insert(&key(4), &walk(4, 4), &none, 2_600);
        assert_eq!(c.evictions, 1);
        assert_eq!(steps(c.lookup(&key(4), 2_600).unwrap()).len(), 4);
    }

    #[test]
    fn removed_chains_ranges_are_reclaimed_by_compaction() {
        let mut c = ChainCache::new(2);
        // Churn: every chain diverges; the arena fills with dead steps and
        // is compacted; recording never stops.
        for i in 0..100u64 {
            c.insert(&key(i), &walk(i as EntryIdx, MAX_PASSES), &none, i);
            assert_eq!(
                steps(c.lookup(&key(i), i).unwrap()).len(),
                MAX_PASSES,
                "chain {i}"
            );
            assert!(c.steps.len() <= COMPACT_SLACK + 3 * MAX_PASSES);
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
                        let ch = steps(ch);
                        assert_eq!((ch.len(), ch[0].entry), (len, i as EntryIdx));
                        replays += 1;
                    }
                    None => c.insert(&key(i), &walk(i as EntryIdx, len), &none, now),
                }
                assert!(c.len() <= 4);
                assert!(c.steps.len() <= COMPACT_SLACK + 9 * MAX_PASSES);
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
            let got = c.lookup(&key(i), now).map(|ch| steps(ch).len());
            assert_eq!(got, Some(len), "key {i}");
        }
        assert_eq!(c.evictions, 4);
    }
}
