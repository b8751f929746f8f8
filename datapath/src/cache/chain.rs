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
//! Memory: one chain costs its key (168 bytes), a map slot and 80 bytes
//! per pass (about 900 bytes for the six-pass NodePort walk).
//!
//! [`MegaflowCache`]: super::MegaflowCache

use conntrack::{PktCtMeta, Rewrite, Tuple};
use hashbrown::HashMap;

use super::EntryIdx;
use crate::key::FlowKey;
use crate::pipeline::exec::MAX_RECIRC_DEPTH;

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
}

/// One pass of a chain: the megaflow entry it ran and, for every pass but
/// the first, what conntrack answered at the recirculation that started it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChainStep {
    /// Megaflow entry of the pass.
    pub entry: EntryIdx,
    /// Conntrack's answer before the pass (unused for the first pass).
    pub expect: CtExpect,
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
    len: usize,
    steps: [ChainStep; MAX_PASSES],
}

impl Recorder {
    /// An empty recording under cache epoch `epoch`.
    pub fn new(epoch: u64) -> Recorder {
        Recorder {
            ok: true,
            epoch,
            pending: CtExpect::default(),
            len: 0,
            steps: [ChainStep::default(); MAX_PASSES],
        }
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
        };
        self.len += 1;
    }

    /// The recorded passes.
    pub fn steps(&self) -> &[ChainStep] {
        &self.steps[..self.len]
    }
}

/// Index of a chain (valid until the chain cache is next cleared).
pub type ChainIdx = u32;

/// The chains of one core.
#[derive(Debug)]
pub struct ChainCache {
    map: HashMap<FlowKey, (u32, u8)>,
    steps: Vec<ChainStep>,
    capacity: usize,
}

impl ChainCache {
    /// At most `capacity` chains; 0 turns chains off (every packet walks
    /// pass by pass through the megaflow cache).
    pub fn new(capacity: usize) -> ChainCache {
        ChainCache {
            map: HashMap::new(),
            steps: Vec::new(),
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
    pub fn lookup(&self, key: &FlowKey) -> Option<&[ChainStep]> {
        if self.capacity == 0 {
            return None;
        }
        let &(start, len) = self.map.get(key)?;
        Some(&self.steps[start as usize..start as usize + len as usize])
    }

    /// Record `steps` for first-pass key `key`.
    #[cold]
    pub fn insert(&mut self, key: &FlowKey, steps: &[ChainStep]) {
        if steps.is_empty() || self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity {
            // Full of live chains: keep them (see the module doc).
            return;
        }
        if self.steps.len() + steps.len() > self.capacity * MAX_PASSES {
            // The arena is full of removed chains' steps: start over.
            self.clear();
        }
        let start = self.steps.len() as u32;
        self.steps.extend_from_slice(steps);
        self.map.insert(*key, (start, steps.len() as u8));
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

    fn walk(entry: EntryIdx, passes: usize) -> Vec<ChainStep> {
        (0..passes)
            .map(|_| ChainStep {
                entry,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn a_full_cache_keeps_its_chains() {
        let mut c = ChainCache::new(2);
        c.insert(&key(1), &walk(1, 4));
        c.insert(&key(2), &walk(2, 4));
        // A third connection while two are live: not recorded, and the
        // two recorded ones still replay (a clear here would thrash).
        c.insert(&key(3), &walk(3, 4));
        assert_eq!(c.len(), 2);
        assert!(c.lookup(&key(3)).is_none());
        assert_eq!(c.lookup(&key(1)).unwrap()[0].entry, 1);
        assert_eq!(c.lookup(&key(2)).unwrap()[0].entry, 2);
        // A diverged chain frees its slot for the next walk.
        c.remove(&key(1));
        c.insert(&key(3), &walk(3, 4));
        assert_eq!(c.lookup(&key(3)).unwrap().len(), 4);
        assert_eq!(c.lookup(&key(2)).unwrap()[0].entry, 2);
    }

    #[test]
    fn removed_chains_steps_are_reclaimed_by_starting_over() {
        let mut c = ChainCache::new(2);
        // Churn: every chain diverges, the arena fills with dead steps and
        // is started over; recording never stops.
        for i in 0..100u64 {
            c.insert(&key(i), &walk(i as EntryIdx, MAX_PASSES));
            assert_eq!(c.lookup(&key(i)).unwrap().len(), MAX_PASSES, "chain {i}");
            assert!(c.steps.len() <= 2 * MAX_PASSES);
            c.remove(&key(i));
        }
        assert!(c.is_empty());
    }
}
