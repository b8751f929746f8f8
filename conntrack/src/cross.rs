//! Cross-core building blocks: the ownership directory, the owner-selection
//! function and the SPSC handoff ring.
//!
//! # The problem
//! Each worker owns a [`crate::Shard`]; the NIC spreads packets over queues
//! by a hash of the wire 5-tuple. A connection's reply has a different
//! 5-tuple from its request (always after NAT; and with asymmetric RSS even
//! without), so it may land on another worker, which must not touch the
//! owner's shard.
//!
//! # The scheme: an ownership directory with per-writer partitions
//! [`Directory`] holds one open-addressing array of `AtomicU64` per worker.
//! Partition `w` is written only by worker `w` (single writer, no CAS), on
//! connection create and delete — never on the established path. A cell
//! holds a 64-bit fingerprint of a zone-less wire tuple; the owner is the
//! partition it is found in, so a cell needs no owner field. When a shard
//! commits a connection it publishes both of its keys' tuples (the
//! original, and the reply tuple after NAT), so the first packet of either
//! direction in *any* zone of a NAT chain names the worker that owns the
//! whole chain (all zones of one packet's pipeline are created by the same
//! worker).
//!
//! On receive, a worker calls [`Directory::owner_of`]: its own partition is
//! probed first (the common case, a read of lines only it writes), then the
//! others. `Some(w)` with `w != me` means: hand the *packet* to `w` through
//! the [`HandoffRing`] from `me` to `w`; `None` means a new connection,
//! processed locally (this worker becomes its owner).
//!
//! # Port slices: unique translations without coordination
//! A translated tuple must be unique across *all* workers, or two workers'
//! replies would carry the same 5-tuple. As in VPP nat44-ed, each worker
//! owns a slice of every SNAT port class: worker `w` of `n` only hands out
//! SNAT ports with `port % n == w` ([`port_slice_owner`]), so two workers
//! can never pick the same SNAT tuple even at the same instant. DNAT keeps
//! the client's port (OVS) and only searches ports on a clash; there the
//! candidate is also checked against the other workers' partitions.
//!
//! Why not port slices alone for routing: they route SNAT replies (the
//! reply's destination port names its owner) but not DNAT-only replies (a
//! Service endpoint answering a client has no translated port to look at).
//! The directory routes both; the slices make SNAT choices race-free. In a
//! single shard (replay, differential tests) there are no slices and OVS's
//! port choices are reproduced exactly; with `n` workers a client port that
//! falls outside the worker's slice moves to the next port of the slice.
//!
//! Orderings: fingerprints carry no pointer to other data (the owner
//! re-validates every packet against its own table), so stores are
//! `Release` and loads `Acquire` only to keep the publication visible in the
//! order it was made; a stale read costs at most one misrouted packet,
//! which the receiver treats exactly as OVS treats a packet of an unknown
//! connection. A fingerprint collision (2^-62 per pair) does the same.
//!
//! Limits: deleted cells become tombstones unless followed by an empty
//! cell; partitions are sized at 4 cells per connection so probe chains
//! stay short.

use crate::api::{CtPacket, L4, Tuple};
use crate::key::wire_fingerprint;
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicU64, Ordering};

const EMPTY: u64 = 0;
const TOMB: u64 = 1;

/// The ownership directory shared by all workers (see the module docs).
#[derive(Debug)]
pub struct Directory {
    parts: Vec<Box<[AtomicU64]>>,
    mask: usize,
}

/// A worker's private bookkeeping for its directory partition (reference
/// counts: several connections, e.g. in different zones, share a tuple).
#[derive(Debug)]
pub(crate) struct DirWriter {
    pub worker: usize,
    refs: Vec<u32>,
}

impl Directory {
    /// A directory for `workers` workers of `capacity` connections each.
    pub fn new(workers: usize, capacity: u32) -> Directory {
        let cells = (capacity.max(1) as usize * 4).next_power_of_two();
        Directory {
            parts: (0..workers)
                .map(|_| (0..cells).map(|_| AtomicU64::new(EMPTY)).collect())
                .collect(),
            mask: cells - 1,
        }
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.parts.len()
    }

    pub(crate) fn writer(&self, worker: usize) -> DirWriter {
        assert!(worker < self.parts.len(), "worker out of range");
        DirWriter {
            worker,
            refs: vec![0; self.mask + 1],
        }
    }

    fn probe(&self, part: usize, fp: u64) -> bool {
        let p = &self.parts[part];
        let mut pos = fp as usize & self.mask;
        for _ in 0..=self.mask {
            // Acquire: pairs with the writer's Release (see module docs).
            match p[pos].load(Ordering::Acquire) {
                EMPTY => return false,
                v if v == fp => return true,
                _ => pos = (pos + 1) & self.mask,
            }
        }
        false
    }

    /// Whether a worker other than `me` has published `t` (used by NAT to
    /// keep translated tuples unique across workers).
    pub fn owned_by_other(&self, t: &Tuple, me: usize) -> bool {
        let fp = wire_fingerprint(t);
        (0..self.parts.len()).any(|w| w != me && self.probe(w, fp))
    }

    /// Owner of the connection `pkt` belongs to, if any worker published
    /// it; `me` is probed first.
    pub fn owner_of(&self, pkt: &CtPacket, me: usize) -> Option<usize> {
        let fp = wire_fingerprint(&owner_tuple(pkt));
        if self.probe(me, fp) {
            return Some(me);
        }
        (0..self.parts.len()).find(|&w| w != me && self.probe(w, fp))
    }

    pub(crate) fn publish(&self, w: &mut DirWriter, t: &Tuple) {
        let fp = wire_fingerprint(t);
        let p = &self.parts[w.worker];
        let mut pos = fp as usize & self.mask;
        let mut tomb = None;
        for _ in 0..=self.mask {
            // Relaxed: this worker is the only writer of its partition.
            let v = p[pos].load(Ordering::Relaxed);
            if v == fp {
                w.refs[pos] += 1;
                return;
            }
            if v == TOMB && tomb.is_none() {
                tomb = Some(pos);
            }
            if v == EMPTY {
                let at = tomb.unwrap_or(pos);
                w.refs[at] = 1;
                p[at].store(fp, Ordering::Release);
                return;
            }
            pos = (pos + 1) & self.mask;
        }
        if let Some(at) = tomb {
            w.refs[at] = 1;
            p[at].store(fp, Ordering::Release);
        }
    }

    pub(crate) fn unpublish(&self, w: &mut DirWriter, t: &Tuple) {
        let fp = wire_fingerprint(t);
        let p = &self.parts[w.worker];
        let mut pos = fp as usize & self.mask;
        for _ in 0..=self.mask {
            let v = p[pos].load(Ordering::Relaxed);
            if v == EMPTY {
                return;
            }
            if v == fp {
                w.refs[pos] -= 1;
                if w.refs[pos] == 0 {
                    let next = p[(pos + 1) & self.mask].load(Ordering::Relaxed);
                    if next == EMPTY {
                        // No chain passes through here: empty it and any
                        // tombstones just before it.
                        p[pos].store(EMPTY, Ordering::Release);
                        let mut q = pos.wrapping_sub(1) & self.mask;
                        while p[q].load(Ordering::Relaxed) == TOMB {
                            p[q].store(EMPTY, Ordering::Release);
                            q = q.wrapping_sub(1) & self.mask;
                        }
                    } else {
                        p[pos].store(TOMB, Ordering::Release);
                    }
                }
                return;
            }
            pos = (pos + 1) & self.mask;
        }
    }
}

/// The worker whose slice holds SNAT `port` among `workers` workers.
pub fn port_slice_owner(port: u16, workers: usize) -> usize {
    usize::from(port) % workers.max(1)
}

/// The tuple that names a packet's connection in the directory: the wire
/// tuple, or for an ICMP error the quoted packet's tuple reversed.
pub fn owner_tuple(pkt: &CtPacket) -> Tuple {
    match pkt.l4 {
        L4::IcmpError { inner, .. } => Tuple {
            src: inner.dst,
            dst: inner.src,
            sport: inner.dport,
            dport: inner.sport,
            proto: inner.proto,
        },
        L4::IcmpQuery { .. } => Tuple {
            dport: pkt.tuple.sport,
            ..pkt.tuple
        },
        _ => pkt.tuple,
    }
}

/// Single-producer single-consumer handoff ring from one worker to
/// another: a bounded lock-free queue (`crossbeam_queue::ArrayQueue`, no
/// allocation after construction). `T` is whatever the datapath hands over:
/// the packet itself in tests, a frame index into the sender's UMEM in
/// AF_XDP. A full ring refuses the push and the sender counts a drop.
#[derive(Debug)]
pub struct HandoffRing<T> {
    q: ArrayQueue<T>,
}

impl<T> HandoffRing<T> {
    /// A ring of `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        HandoffRing {
            q: ArrayQueue::new(capacity.max(1)),
        }
    }

    /// Enqueue (producer side). Gives the item back when full.
    pub fn push(&self, item: T) -> Result<(), T> {
        self.q.push(item)
    }

    /// Dequeue (consumer side).
    pub fn pop(&self) -> Option<T> {
        self.q.pop()
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

/// The N x N rings between N workers: `ring(from, to)`.
#[derive(Debug)]
pub struct HandoffMesh<T> {
    n: usize,
    rings: Vec<HandoffRing<T>>,
}

impl<T> HandoffMesh<T> {
    /// Rings of `capacity` entries between `workers` workers.
    pub fn new(workers: usize, capacity: usize) -> Self {
        HandoffMesh {
            n: workers,
            rings: (0..workers * workers)
                .map(|_| HandoffRing::new(capacity))
                .collect(),
        }
    }

    /// The ring `from` produces into and `to` consumes from.
    pub fn ring(&self, from: usize, to: usize) -> &HandoffRing<T> {
        &self.rings[from * self.n + to]
    }

    /// Pop the next packet handed to `to` by any worker.
    pub fn pop_for(&self, to: usize) -> Option<T> {
        (0..self.n).find_map(|from| self.ring(from, to).pop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_unpublish_with_refcounts() {
        let d = Directory::new(2, 16);
        let mut w1 = d.writer(1);
        let t = Tuple {
            src: 1,
            dst: 2,
            sport: 3,
            dport: 4,
            proto: 6,
        };
        let pkt = CtPacket {
            tuple: t,
            l4: L4::Udp,
            valid: true,
            fragment: false,
        };
        assert_eq!(d.owner_of(&pkt, 0), None);
        d.publish(&mut w1, &t);
        d.publish(&mut w1, &t);
        assert_eq!(d.owner_of(&pkt, 0), Some(1));
        d.unpublish(&mut w1, &t);
        assert_eq!(d.owner_of(&pkt, 0), Some(1));
        d.unpublish(&mut w1, &t);
        assert_eq!(d.owner_of(&pkt, 0), None);
    }

    #[test]
    fn ring_is_bounded_fifo() {
        let r = HandoffRing::new(2);
        assert!(r.push(1).is_ok());
        assert!(r.push(2).is_ok());
        assert_eq!(r.push(3), Err(3));
        assert_eq!(r.pop(), Some(1));
        assert_eq!(r.pop(), Some(2));
        assert_eq!(r.pop(), None);
    }
}
