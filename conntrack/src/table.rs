//! The per-core connection table: a preallocated slot array, an
//! open-addressing index with one entry per connection direction, and the
//! expiry lists.
//!
//! * **Slots** (`Vec<Conn>`, sized by `capacity` at start): a free stack
//!   hands out slot numbers; a slot's `generation` is bumped on free so a
//!   stale [`crate::ConnRef`] is detected.
//! * **Index** (`Vec<u64>`, 4 cells per connection, power of two, linear
//!   probing, backward-shift deletion so there are no tombstones). A cell
//!   packs `tag(31) | dir(1) | slot+1(32)`; the tag is the upper hash bits
//!   and also gives the home cell, so deletion never re-hashes keys. Every
//!   connection has exactly two cells: its original key and its reply key
//!   (after NAT, the translated reply tuple). Keys of expired but not yet
//!   reclaimed connections may coexist with a live duplicate; lookups skip
//!   expired connections, so at most one *live* connection answers a key.
//!   (Only the NAT port choice still counts an expired, unreclaimed NAT
//!   connection's reply key as taken, as OVS does: [`Table::nat_key_taken`].)
//! * **Expiry**: one FIFO list per distinct timeout duration. A connection
//!   sits in the list of its current timeout class; a refresh of the same
//!   class only rewrites `expiration` (no list surgery on the established
//!   path), and the sweeper re-queues a head whose `expiration` moved on
//!   (lazy re-queue). `qexp` is the expiration when queued, so each list
//!   is ordered by `qexp` and a sweep stops at the first head with
//!   `qexp > now`: O(1) amortised per reclaimed or refreshed connection.

use crate::key::Key;
use crate::proto::tcp::TcpPeer;

/// "No slot" in list links.
pub(crate) const NIL: u32 = u32::MAX;
/// `Conn::list` of a free slot.
pub(crate) const FREE: u8 = u8::MAX;

/// NAT action of a connection (OVS `nat_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub(crate) enum NatKind {
    /// No NAT.
    #[default]
    None = 0,
    /// Source NAT.
    Src,
    /// Destination NAT.
    Dst,
    /// `ct(commit,nat)` on a new connection: OVS 3.1 records an empty NAT
    /// action with a degenerate reply key and never translates.
    Empty,
}

/// One connection: two cache lines, 128-byte aligned so a slot is one
/// buddy pair for the adjacent-line prefetcher and never straddles a third. The first line holds everything the established UDP/ICMP path
/// reads and writes (keys, expiration, mark, small state); the second the
/// label, the TCP windows and the sweeper's `qexp`. The index adds 4 cells x
/// 8 bytes.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(128))]
pub(crate) struct Conn {
    /// `keys[0]`: original direction; `keys[1]`: reply direction.
    pub keys: [Key; 2],
    /// Expiration time (ms); the connection is dead once `now >= expiration`.
    pub expiration: u64,
    /// `ct_mark`.
    pub mark: u32,
    /// Slot generation.
    pub generation: u32,
    /// Expiry list links.
    pub prev: u32,
    /// Expiry list links.
    pub next: u32,
    /// Expiry list (FREE when the slot is free).
    pub list: u8,
    /// Timeout policy index.
    pub policy: u8,
    /// ICMP / other state.
    pub l4: u8,
    /// NAT action.
    pub nat: NatKind,
    /// `ct_label`.
    pub label: u128,
    /// `expiration` when the connection was last queued on its list.
    pub qexp: u64,
    /// TCP peers (original sender, replier).
    pub tcp: [TcpPeer; 2],
    /// Sequence number of the zone limit that admitted the connection
    /// (0: none), as OVS's `admit_zone` + `zone_limit_seq`.
    pub admit_seq: u32,
}

const _: () = assert!(std::mem::size_of::<Conn>() == 128);

/// Index cells per connection (two keys at load factor <= 1/2).
pub(crate) const INDEX_CELLS_PER_CONN: usize = 4;

/// A FIFO of connections sharing one timeout duration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct List {
    pub head: u32,
    pub tail: u32,
    /// `qexp` of the head (valid when `head != NIL`), to test the head
    /// without touching its cache line.
    pub head_qexp: u64,
    /// Timeout of this list in ms.
    pub dur_ms: u64,
}

/// Slots + index + expiry lists.
#[derive(Debug)]
pub(crate) struct Table {
    pub conns: Vec<Conn>,
    free: Vec<u32>,
    index: Vec<u64>,
    mask: usize,
    pub lists: Vec<List>,
    pub seed: u64,
    /// Live (allocated) slots.
    pub n_conn: u32,
    /// Lower bound of every list's `head_qexp`: the sweeper has nothing to
    /// do while `now < next_due` (one compare per packet).
    pub next_due: u64,
}

#[inline]
fn cell(tag: u64, dir: usize, slot: u32) -> u64 {
    (tag << 33) | ((dir as u64) << 32) | (u64::from(slot) + 1)
}

impl Table {
    /// A table with `capacity` slots.
    pub fn new(capacity: u32, seed: u64) -> Table {
        let capacity = capacity.max(1);
        let cells = (capacity as usize * INDEX_CELLS_PER_CONN).next_power_of_two();
        assert!(cells <= 1 << 31, "conntrack capacity too large");
        let mut conns = vec![Conn::default(); capacity as usize];
        for c in &mut conns {
            c.list = FREE;
            c.prev = NIL;
            c.next = NIL;
        }
        Table {
            conns,
            free: (0..capacity).rev().collect(),
            index: vec![0; cells],
            mask: cells - 1,
            lists: Vec::new(),
            seed,
            n_conn: 0,
            next_due: u64::MAX,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> u32 {
        self.conns.len() as u32
    }

    /// Bytes of index per connection.
    pub fn index_bytes_per_conn(&self) -> usize {
        self.index.len() * 8 / self.conns.len()
    }

    #[inline]
    fn tag_of(&self, key: &Key) -> u64 {
        key.hash(self.seed) >> 33
    }

    /// Find a live connection with `key` in either direction.
    /// Returns (slot, direction is reply).
    #[inline]
    pub fn lookup(&self, key: &Key, now: u64) -> Option<(u32, bool)> {
        let tag = self.tag_of(key);
        let mut pos = tag as usize & self.mask;
        loop {
            let e = self.index[pos];
            if e == 0 {
                return None;
            }
            if e >> 33 == tag {
                let slot = (e as u32).wrapping_sub(1);
                let dir = ((e >> 32) & 1) as usize;
                let c = &self.conns[slot as usize];
                if c.keys[dir] == *key && now < c.expiration {
                    return Some((slot, dir == 1));
                }
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// [`Table::lookup`], trying the slot `hint` names first: it answers
    /// when it holds a live, unexpired connection whose key in the hinted
    /// direction is `key` (and, for the reply direction, whose original key
    /// is not also `key`: lookup would find that cell first). That is the
    /// answer `lookup` gives, because at most one live, unexpired
    /// connection holds a key, except a connection whose two keys are equal
    /// (its original cell is inserted, and so probed, first). Debug builds
    /// check the claim on every hinted lookup.
    #[inline]
    pub fn lookup_hinted(
        &self,
        key: &Key,
        now: u64,
        hint: Option<crate::api::ConnHint>,
    ) -> Option<(u32, bool)> {
        if let Some(h) = hint
            && let Some(c) = self.conns.get(h.slot as usize)
            && c.list != FREE
            && now < c.expiration
            && c.keys[usize::from(h.dir & 1)] == *key
            && (h.dir == 0 || c.keys[0] != *key)
        {
            let found = (h.slot, h.dir == 1);
            debug_assert_eq!(Some(found), self.lookup(key, now), "hint disagrees");
            return Some(found);
        }
        self.lookup(key, now)
    }

    /// Whether `key` is unavailable as the reply key of a new NAT
    /// connection (OVS `nat_get_unique_tuple`'s `conn_lookup`): a live
    /// connection uses it in either direction, or a NAT connection that has
    /// expired (by its timer, or force-expired by a SYN re-opening its
    /// tuple) but is not reclaimed yet still holds it as its reply key. OVS
    /// 3.1 keeps a NAT connection's reply tuple in its table as a separate
    /// "un-NAT" entry that lookups never treat as expired; it goes only
    /// when the sweeper cleans the connection. So a re-opened NAT
    /// connection gets a different port than the one it replaces.
    /// Cold path (new NAT connections only).
    pub fn nat_key_taken(&self, key: &Key, now: u64) -> bool {
        let tag = self.tag_of(key);
        let mut pos = tag as usize & self.mask;
        loop {
            let e = self.index[pos];
            if e == 0 {
                return false;
            }
            if e >> 33 == tag {
                let slot = (e as u32).wrapping_sub(1);
                let dir = ((e >> 32) & 1) as usize;
                let c = &self.conns[slot as usize];
                if c.keys[dir] == *key
                    && (now < c.expiration || (dir == 1 && c.nat != NatKind::None))
                {
                    return true;
                }
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// The slot the first cells of `key`'s probe sequence point to with a
    /// matching tag (up to 4 cells): a plain load used to start a burst's
    /// cache misses early.
    #[inline]
    pub fn home_slot(&self, key: &Key) -> Option<u32> {
        let tag = self.tag_of(key);
        let mut pos = tag as usize & self.mask;
        for _ in 0..4 {
            let e = self.index[pos];
            if e == 0 {
                return None;
            }
            if e >> 33 == tag {
                return Some((e as u32).wrapping_sub(1));
            }
            pos = (pos + 1) & self.mask;
        }
        None
    }

    /// Take a free slot.
    pub fn alloc(&mut self) -> Option<u32> {
        let s = self.free.pop()?;
        self.n_conn += 1;
        Some(s)
    }

    /// Return an allocated but never inserted slot.
    pub fn unalloc(&mut self, slot: u32) {
        self.n_conn -= 1;
        self.free.push(slot);
    }

    /// Insert both index cells of `slot` (its keys must be set).
    pub fn insert(&mut self, slot: u32) {
        for dir in 0..2 {
            let key = self.conns[slot as usize].keys[dir];
            let tag = self.tag_of(&key);
            let mut pos = tag as usize & self.mask;
            while self.index[pos] != 0 {
                pos = (pos + 1) & self.mask;
            }
            self.index[pos] = cell(tag, dir, slot);
        }
    }

    fn remove_cell(&mut self, slot: u32, dir: usize) {
        let key = self.conns[slot as usize].keys[dir];
        let tag = self.tag_of(&key);
        let want = cell(tag, dir, slot);
        let mut pos = tag as usize & self.mask;
        while self.index[pos] != want {
            debug_assert!(self.index[pos] != 0, "index cell missing");
            if self.index[pos] == 0 {
                return;
            }
            pos = (pos + 1) & self.mask;
        }
        // Backward-shift deletion.
        let mut i = pos;
        let mut j = pos;
        loop {
            j = (j + 1) & self.mask;
            let e = self.index[j];
            if e == 0 {
                break;
            }
            let home = (e >> 33) as usize & self.mask;
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if stays {
                continue;
            }
            self.index[i] = e;
            i = j;
        }
        self.index[i] = 0;
    }

    /// Remove `slot` from the index and its list, free it and bump its
    /// generation.
    pub fn free(&mut self, slot: u32) {
        self.remove_cell(slot, 0);
        self.remove_cell(slot, 1);
        self.unlink(slot);
        let c = &mut self.conns[slot as usize];
        c.list = FREE;
        c.generation = c.generation.wrapping_add(1);
        self.n_conn -= 1;
        self.free.push(slot);
    }

    /// Whether `slot` holds a connection.
    #[inline]
    pub fn is_live(&self, slot: u32) -> bool {
        self.conns
            .get(slot as usize)
            .is_some_and(|c| c.list != FREE)
    }

    /// Unlink `slot` from its list.
    pub fn unlink(&mut self, slot: u32) {
        let (l, prev, next) = {
            let c = &self.conns[slot as usize];
            (c.list, c.prev, c.next)
        };
        if l == FREE {
            return;
        }
        if prev == NIL {
            self.lists[l as usize].head = next;
            if next != NIL {
                let q = self.conns[next as usize].qexp;
                self.lists[l as usize].head_qexp = q;
                self.next_due = self.next_due.min(q);
            }
        } else {
            self.conns[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[l as usize].tail = prev;
        } else {
            self.conns[next as usize].prev = prev;
        }
        let c = &mut self.conns[slot as usize];
        c.prev = NIL;
        c.next = NIL;
    }

    /// Append `slot` to list `l`, queued at its current expiration.
    pub fn push_back(&mut self, slot: u32, l: u8) {
        let tail = self.lists[l as usize].tail;
        let c = &mut self.conns[slot as usize];
        c.list = l;
        c.qexp = c.expiration;
        c.prev = tail;
        c.next = NIL;
        let q = c.qexp;
        if tail == NIL {
            self.lists[l as usize].head = slot;
            self.lists[l as usize].head_qexp = q;
            self.next_due = self.next_due.min(q);
        } else {
            self.conns[tail as usize].next = slot;
        }
        self.lists[l as usize].tail = slot;
    }

    /// Put `slot` at the head of its list so the sweeper finds it first
    /// (used for force-expired connections).
    pub fn push_front(&mut self, slot: u32) {
        let l = self.conns[slot as usize].list;
        self.unlink(slot);
        let head = self.lists[l as usize].head;
        let c = &mut self.conns[slot as usize];
        c.qexp = c.expiration;
        c.prev = NIL;
        c.next = head;
        let q = c.qexp;
        if head == NIL {
            self.lists[l as usize].tail = slot;
        } else {
            self.conns[head as usize].prev = slot;
        }
        self.lists[l as usize].head = slot;
        self.lists[l as usize].head_qexp = q;
        self.next_due = self.next_due.min(q);
    }

    /// Set the expiration of `slot` to `now + dur(l)`, moving it to list `l`
    /// only if the list changes.
    #[inline]
    pub fn set_timer(&mut self, slot: u32, l: u8, now: u64) {
        let exp = now.saturating_add(self.lists[l as usize].dur_ms);
        let c = &mut self.conns[slot as usize];
        c.expiration = exp;
        if c.list != l {
            self.unlink(slot);
            self.push_back(slot, l);
        }
    }

    /// Visit every index cell (for invariant checks): (cell position, slot,
    /// dir).
    pub fn index_cells(&self) -> impl Iterator<Item = (usize, u32, usize, u64)> + '_ {
        self.index
            .iter()
            .enumerate()
            .filter(|(_, e)| **e != 0)
            .map(|(pos, &e)| {
                (
                    pos,
                    (e as u32).wrapping_sub(1),
                    ((e >> 32) & 1) as usize,
                    e >> 33,
                )
            })
    }

    /// Number of free slots.
    pub fn n_free(&self) -> usize {
        self.free.len()
    }

    /// Home cell of `tag`.
    pub fn home(&self, tag: u64) -> usize {
        tag as usize & self.mask
    }

    /// Tag a key hashes to.
    pub fn tag(&self, key: &Key) -> u64 {
        self.tag_of(key)
    }

    /// Whether the index has any empty cell between `from` (inclusive) and
    /// `to` (exclusive) when walking forward (linear-probe reachability).
    pub fn gap_between(&self, from: usize, to: usize) -> bool {
        let mut p = from;
        while p != to {
            if self.index[p] == 0 {
                return true;
            }
            p = (p + 1) & self.mask;
        }
        false
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[test]
    fn probe_lengths_stay_short_at_full_load() {
        let n = 1u32 << 18;
        let mut t = Table::new(n, 0x0f10_da7a_c0de_5eed);
        for i in 0..n {
            let s = t.alloc().unwrap();
            let k = Key {
                src: 0x0a01_0000 + i / 60_000,
                dst: 0x5db8_d800 + i % 64,
                sport: 1024 + (i % 60_000) as u16,
                dport: 53,
                zone: 1,
                proto: 17,
                ity: 0,
            };
            t.conns[s as usize].keys = [k, k.reverse()];
            t.insert(s);
        }
        let mut total = 0usize;
        let mut worst = 0usize;
        for (pos, _, _, tag) in t.index_cells() {
            let d = (pos.wrapping_sub(t.home(tag))) & t.mask;
            total += d;
            worst = worst.max(d);
        }
        let avg = total as f64 / (2 * n) as f64;
        assert!(avg < 2.0 && worst < 64, "avg {avg} worst {worst}");
    }
}
