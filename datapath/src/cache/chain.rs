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
//! ordinary path. Debug builds run the rewrites alongside every compiled
//! replay and compare the bytes at each patch.
//!
//! Walks that fork (a `ct(table=N)` that is not its pass's last action), that
//! are traced, or whose passes carry learn bookkeeping (`learn()` actions,
//! learned flows whose use refreshes their timeouts) are never recorded:
//! they take the pass-by-pass path every time. Every other walk is
//! recorded, SYNs included (retried SYNs to a Service without endpoints
//! replay; recording costs a new connection ~4% of its instructions).
//!
//! Owner and invalidation: the chain cache lives inside [`MegaflowCache`]
//! (one per worker) and refers to its entries by index, so it is cleared
//! whenever the megaflow cache is (pipeline generation change, capacity).
//! Eviction: at most `capacity` chains. When that many are live, new walks
//! are simply not recorded: dropping them all would make a working set
//! larger than the cache (100,000 established flows against 65,536 chains,
//! visited round robin) record, overflow and drop forever without a single
//! replay, whereas keeping them replays `capacity` of the connections. The
//! steps of removed (diverged) chains stay in the arena; when it has no
//! room left the chains are dropped and the arena starts over. Chains of
//! connections that end without diverging go with the next megaflow flush
//! (new connections' megaflows fill that cache and flush it with their
//! chains).
//!
//! Memory: one chain costs its key (168 bytes), a map slot and 112 bytes
//! per pass, plus for a compiled chain 12 bytes per patch and 24 per
//! changed 8-byte window (about 800 bytes for the four-pass NodePort walk
//! of an established packet, compiled).
//!
//! [`MegaflowCache`]: super::MegaflowCache

use conntrack::{ConnHint, PktCtMeta, Rewrite, Tuple};
use hashbrown::HashMap;

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

    /// A pass started on megaflow entry `entry`.
    #[inline]
    pub fn pass(&mut self, entry: EntryIdx) {
        if self.len == MAX_PASSES {
            self.ok = false;
            return;
        }
        self.steps[self.len] = ChainStep {
            entry,
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
}

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
    /// The chunk arena the patches index.
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
    map: HashMap<FlowKey, ChainRef>,
    steps: Vec<ChainStep>,
    patches: Vec<Patch>,
    chunks: Vec<Chunk>,
    capacity: usize,
}

impl ChainCache {
    /// At most `capacity` chains; 0 turns chains off (every packet walks
    /// pass by pass through the megaflow cache).
    pub fn new(capacity: usize) -> ChainCache {
        ChainCache {
            map: HashMap::new(),
            steps: Vec::new(),
            patches: Vec::new(),
            chunks: Vec::new(),
            capacity,
        }
    }

    /// Whether chains are on (capacity above 0).
    pub fn enabled(&self) -> bool {
        self.capacity != 0
    }

    /// Drop every chain.
    pub fn clear(&mut self) {
        self.map.clear();
        self.steps.clear();
        self.patches.clear();
        self.chunks.clear();
    }

    /// Number of chains.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The chain recorded for first-pass key `key`.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<Chain<'_>> {
        if self.capacity == 0 {
            return None;
        }
        let c = self.map.get(key)?;
        Some(Chain {
            steps: &self.steps[c.start as usize..c.start as usize + c.len as usize],
            prog: c.prog.map(|(shape, p, n)| Prog {
                shape,
                patches: &self.patches[p as usize..p as usize + n as usize],
                chunks: &self.chunks,
            }),
        })
    }

    /// Record the walk `rec` for first-pass key `key`; `entries` are the
    /// megaflow entries its steps name.
    #[cold]
    pub fn insert(&mut self, key: &FlowKey, rec: &Recorder, entries: &[Xlation]) {
        let steps = rec.steps();
        if steps.is_empty() || self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity {
            // Full of live chains: keep them (see the module doc).
            return;
        }
        let room = self.capacity * MAX_PASSES;
        if self.steps.len() + steps.len() > room
            || self.patches.len() > room
            || self.chunks.len() > 4 * room
        {
            // The arenas are full of removed chains' steps: start over.
            self.clear();
        }
        let start = self.steps.len() as u32;
        self.steps.extend_from_slice(steps);
        let prog = self.compile(rec, entries);
        self.map.insert(
            *key,
            ChainRef {
                start,
                len: steps.len() as u8,
                prog,
            },
        );
    }

    /// Precompute the byte patches of walk `rec` (see [`super::patch`]):
    /// run its `Set`s and recorded NAT rewrites on a copy of its headers,
    /// cutting a patch at every output and REJECT and at the end. Only
    /// walks whose every `ct()` recirculates as its pass's last action
    /// (so that every rewrite conntrack made is one the replay checks) and
    /// whose packet has a patchable shape are compiled.
    fn compile(&mut self, rec: &Recorder, entries: &[Xlation]) -> Option<(Shape, u32, u8)> {
        let (layout, len) = rec.start?;
        let shape = Shape::of(&layout, len)?;
        let mut sim = Sim::new(shape, &layout, &rec.hdr)?;
        let (p0, c0) = (self.patches.len(), self.chunks.len());
        let steps = rec.steps();
        let mut ok = || -> Option<()> {
            for (s, st) in steps.iter().enumerate() {
                let x = entries.get(st.entry as usize)?;
                if x.error.is_some() {
                    break;
                }
                let last_pass = s + 1 == steps.len();
                for (ai, a) in x.actions.iter().enumerate() {
                    match a {
                        DpAction::Set { from, to } => sim.commit(from, to),
                        DpAction::Output(_) | DpAction::Reject => {
                            let p = sim.cut(&mut self.chunks)?;
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
            let p = sim.cut(&mut self.chunks)?;
            if !p.is_empty() {
                self.patches.push(p);
            }
            (self.patches.len() - p0 <= MAX_PATCHES).then_some(())
        };
        match ok() {
            Some(()) => Some((shape, p0 as u32, (self.patches.len() - p0) as u8)),
            None => {
                self.patches.truncate(p0);
                self.chunks.truncate(c0);
                None
            }
        }
    }

    /// Forget the chain of `key` (its steps stay allocated until the next
    /// clear).
    #[cold]
    pub fn remove(&mut self, key: &FlowKey) {
        self.map.remove(key);
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
            r.pass(entry);
        }
        r
    }

    #[test]
    fn sizes_in_the_module_doc() {
        assert_eq!(std::mem::size_of::<ChainStep>(), 112);
        assert_eq!(std::mem::size_of::<Patch>(), 12);
        assert_eq!(std::mem::size_of::<Chunk>(), 24);
    }

    #[test]
    fn a_full_cache_keeps_its_chains() {
        let mut c = ChainCache::new(2);
        c.insert(&key(1), &walk(1, 4), &[]);
        c.insert(&key(2), &walk(2, 4), &[]);
        // A third connection while two are live: not recorded, and the
        // two recorded ones still replay (a clear here would thrash).
        c.insert(&key(3), &walk(3, 4), &[]);
        assert_eq!(c.len(), 2);
        assert!(c.lookup(&key(3)).is_none());
        assert_eq!(c.lookup(&key(1)).unwrap().steps[0].entry, 1);
        assert_eq!(c.lookup(&key(2)).unwrap().steps[0].entry, 2);
        // A diverged chain frees its slot for the next walk.
        c.remove(&key(1));
        c.insert(&key(3), &walk(3, 4), &[]);
        assert_eq!(c.lookup(&key(3)).unwrap().steps.len(), 4);
        assert_eq!(c.lookup(&key(2)).unwrap().steps[0].entry, 2);
    }

    #[test]
    fn removed_chains_steps_are_reclaimed_by_starting_over() {
        let mut c = ChainCache::new(2);
        // Churn: every chain diverges, the arena fills with dead steps and
        // is started over; recording never stops.
        for i in 0..100u64 {
            c.insert(&key(i), &walk(i as EntryIdx, MAX_PASSES), &[]);
            assert_eq!(
                c.lookup(&key(i)).unwrap().steps.len(),
                MAX_PASSES,
                "chain {i}"
            );
            assert!(c.steps.len() <= 2 * MAX_PASSES);
            c.remove(&key(i));
        }
        assert!(c.is_empty());
    }
}
