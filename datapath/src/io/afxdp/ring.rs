//! Single-producer/single-consumer rings shared with the kernel.
//!
//! Each AF_XDP ring is a power-of-two array of descriptors plus two free
//! running `u32` indices, `producer` and `consumer`, that wrap at 2^32
//! (never masked in memory; masked only to index the array). Userspace
//! produces on the fill and TX rings and consumes the RX and completion
//! rings; the kernel does the opposite.
//!
//! Every operation is a transaction: [`ProdRing::reserve`] returns a
//! [`ProdTxn`] whose slots are published only by [`ProdTxn::commit`], and
//! [`ConsRing::peek`] returns a [`ConsTxn`] whose entries are given back
//! only by [`ConsTxn::release`]. Dropping a transaction rolls it back.
//!
//! Memory ordering (matching the kernel's `smp_load_acquire` /
//! `smp_store_release` pairs in `net/xdp/xsk_queue.h`):
//! * the producer writes descriptors, then stores `producer` with
//!   `Release`, so the consumer that loads `producer` with `Acquire` sees
//!   the descriptors;
//! * the consumer reads descriptors, then stores `consumer` with
//!   `Release`, so the producer that loads `consumer` with `Acquire` never
//!   overwrites a slot still being read.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Entries a producer may still write, given its producer index and the
/// last consumer index it saw. Correct across wraparound.
#[inline]
pub(crate) fn free_entries(size: u32, prod: u32, cons: u32) -> u32 {
    size - prod.wrapping_sub(cons)
}

/// Entries a consumer may read, given the last producer index it saw and
/// its consumer index. Correct across wraparound.
#[inline]
pub(crate) fn avail_entries(prod: u32, cons: u32) -> u32 {
    prod.wrapping_sub(cons)
}

/// Raw parts of one ring, as laid out in its mapping.
#[derive(Debug)]
pub(crate) struct RingParts<T> {
    pub producer: NonNull<AtomicU32>,
    pub consumer: NonNull<AtomicU32>,
    /// Absent in old kernels and in the unit tests' fake rings.
    pub flags: Option<NonNull<AtomicU32>>,
    pub descs: NonNull<T>,
    pub size: u32,
}

/// The userspace-produced side (fill and TX rings).
#[derive(Debug)]
pub(crate) struct ProdRing<T: Copy> {
    r: RingParts<T>,
    mask: u32,
    /// Our producer index (only we write it).
    prod: u32,
    /// Last consumer index loaded from shared memory.
    cached_cons: u32,
}

/// The userspace-consumed side (RX and completion rings).
#[derive(Debug)]
pub(crate) struct ConsRing<T: Copy> {
    r: RingParts<T>,
    mask: u32,
    /// Our consumer index (only we write it).
    cons: u32,
    /// Last producer index loaded from shared memory.
    cached_prod: u32,
}

// SAFETY: a ring is a view of a mapping owned by the same socket object
// that owns the ring; moving it to another thread moves the only userspace
// handle to that side of the ring.
unsafe impl<T: Copy> Send for ProdRing<T> {}
// SAFETY: as for `ProdRing`.
unsafe impl<T: Copy> Send for ConsRing<T> {}

const NEED_WAKEUP: u32 = 1;

impl<T: Copy> RingParts<T> {
    #[inline]
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: `from_parts` requires the pointer to be valid and aligned
        // for the ring's lifetime.
        unsafe { self.producer.as_ref() }
    }
    #[inline]
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }
    #[inline]
    fn needs_wakeup(&self) -> bool {
        // Relaxed, as libxdp's READ_ONCE: the flag is a hint; a missed
        // wakeup is repaired by the next kick, and no data is read under it.
        self.flags
            // SAFETY: as for `producer`.
            .is_some_and(|f| unsafe { f.as_ref() }.load(Ordering::Relaxed) & NEED_WAKEUP != 0)
    }
}

impl<T: Copy> ProdRing<T> {
    /// Wrap a ring we produce into.
    ///
    /// # Safety
    /// The pointers must be valid, aligned, and point into memory that
    /// outlives the ring; `descs` must have `size` entries; `size` must be
    /// a power of two; no other userspace object may produce into it.
    pub(crate) unsafe fn from_parts(r: RingParts<T>) -> ProdRing<T> {
        debug_assert!(r.size.is_power_of_two());
        // Relaxed: nobody else writes `producer`; `consumer` is reloaded
        // with Acquire before any slot is reused.
        // SAFETY: pointers are valid per this function's contract.
        let prod = unsafe { r.producer.as_ref() }.load(Ordering::Relaxed);
        // SAFETY: as above.
        let cons = unsafe { r.consumer.as_ref() }.load(Ordering::Acquire);
        ProdRing {
            mask: r.size - 1,
            prod,
            cached_cons: cons,
            r,
        }
    }

    /// Slots free for writing, refreshing the consumer index only if the
    /// cached value shows fewer than `want`.
    #[inline]
    pub(crate) fn free(&mut self, want: u32) -> u32 {
        let free = free_entries(self.r.size, self.prod, self.cached_cons);
        if free >= want {
            return free;
        }
        // Acquire: pairs with the consumer's Release store, so the slots
        // it reports consumed are no longer read (see module docs).
        self.cached_cons = self.r.consumer().load(Ordering::Acquire);
        free_entries(self.r.size, self.prod, self.cached_cons)
    }

    /// Reserve up to `n` slots (fewer if the ring is fuller).
    #[inline]
    #[must_use = "reserved slots are only published by commit()"]
    pub(crate) fn reserve(&mut self, n: u32) -> ProdTxn<'_, T> {
        let n = n.min(self.free(n));
        ProdTxn {
            start: self.prod,
            n,
            ring: self,
        }
    }

    /// Entries published and not yet consumed (as last observed).
    #[inline]
    pub(crate) fn outstanding(&mut self) -> u32 {
        // Acquire: as in `free`.
        self.cached_cons = self.r.consumer().load(Ordering::Acquire);
        self.prod.wrapping_sub(self.cached_cons)
    }

    /// Whether the kernel asked to be woken (need_wakeup mode).
    #[inline]
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.r.needs_wakeup()
    }
}

/// Reserved producer slots. Write each with [`ProdTxn::write`], then
/// [`ProdTxn::commit`]; dropping it publishes nothing.
#[must_use = "reserved slots are only published by commit()"]
pub(crate) struct ProdTxn<'a, T: Copy> {
    ring: &'a mut ProdRing<T>,
    start: u32,
    n: u32,
}

impl<T: Copy> ProdTxn<'_, T> {
    /// Slots reserved.
    #[inline]
    pub(crate) fn len(&self) -> u32 {
        self.n
    }

    /// Write slot `i` (< `len()`).
    #[inline]
    pub(crate) fn write(&mut self, i: u32, v: T) {
        assert!(i < self.n);
        let idx = (self.start.wrapping_add(i) & self.ring.mask) as usize;
        // SAFETY: idx < size; the slot is between our producer index and
        // the consumer index + size, so the kernel does not read it until
        // we publish.
        unsafe { self.ring.r.descs.as_ptr().add(idx).write(v) }
    }

    /// Publish the first `n` written slots (`n <= len()`).
    #[inline]
    pub(crate) fn commit_n(self, n: u32) {
        assert!(n <= self.n);
        let new = self.start.wrapping_add(n);
        self.ring.prod = new;
        // Release: the descriptors written above become visible before the
        // new producer index (see module docs).
        self.ring.r.producer().store(new, Ordering::Release);
    }

    /// Publish every reserved slot.
    #[inline]
    pub(crate) fn commit(self) {
        let n = self.n;
        self.commit_n(n)
    }
}

impl<T: Copy> ConsRing<T> {
    /// Wrap a ring we consume from.
    ///
    /// # Safety
    /// As for [`ProdRing::from_parts`], with "consume" for "produce".
    pub(crate) unsafe fn from_parts(r: RingParts<T>) -> ConsRing<T> {
        debug_assert!(r.size.is_power_of_two());
        // Relaxed: nobody else writes `consumer`.
        // SAFETY: pointers are valid per this function's contract.
        let cons = unsafe { r.consumer.as_ref() }.load(Ordering::Relaxed);
        // SAFETY: as above.
        let prod = unsafe { r.producer.as_ref() }.load(Ordering::Acquire);
        ConsRing {
            mask: r.size - 1,
            cons,
            cached_prod: prod,
            r,
        }
    }

    /// Entries ready, refreshing the producer index only if the cached
    /// value shows fewer than `want`.
    #[inline]
    pub(crate) fn avail(&mut self, want: u32) -> u32 {
        let avail = avail_entries(self.cached_prod, self.cons);
        if avail >= want {
            return avail;
        }
        // Acquire: pairs with the producer's Release store, so the
        // descriptors up to the new index are visible.
        self.cached_prod = self.r.producer().load(Ordering::Acquire);
        avail_entries(self.cached_prod, self.cons)
    }

    /// Look at up to `n` ready entries.
    #[inline]
    #[must_use = "peeked entries are only given back by release()"]
    pub(crate) fn peek(&mut self, n: u32) -> ConsTxn<'_, T> {
        let n = n.min(self.avail(n));
        ConsTxn {
            start: self.cons,
            n,
            ring: self,
        }
    }
}

/// Entries being consumed. Read them with [`ConsTxn::read`], then
/// [`ConsTxn::release`]; dropping it leaves them in the ring.
#[must_use = "peeked entries are only given back by release()"]
pub(crate) struct ConsTxn<'a, T: Copy> {
    ring: &'a mut ConsRing<T>,
    start: u32,
    n: u32,
}

impl<T: Copy> ConsTxn<'_, T> {
    /// Entries available in this transaction.
    #[inline]
    pub(crate) fn len(&self) -> u32 {
        self.n
    }

    /// Read entry `i` (< `len()`).
    #[inline]
    pub(crate) fn read(&self, i: u32) -> T {
        assert!(i < self.n);
        let idx = (self.start.wrapping_add(i) & self.ring.mask) as usize;
        // SAFETY: idx < size; the entry is between the consumer index and
        // the producer index we loaded with Acquire, so the producer wrote
        // it and will not touch it until we release.
        unsafe { self.ring.r.descs.as_ptr().add(idx).read() }
    }

    /// Give all entries back to the producer.
    #[inline]
    pub(crate) fn release(self) {
        let new = self.start.wrapping_add(self.n);
        self.ring.cons = new;
        // Release: our reads of the entries happen before the producer may
        // reuse their slots (see module docs).
        self.ring.r.consumer().store(new, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_arithmetic_wraps() {
        assert_eq!(free_entries(8, 0, 0), 8);
        assert_eq!(free_entries(8, 8, 0), 0);
        assert_eq!(free_entries(8, 3, 1), 6);
        // Producer wrapped past 2^32, consumer not yet.
        assert_eq!(free_entries(8, 2, u32::MAX - 1), 4);
        assert_eq!(avail_entries(2, u32::MAX - 1), 4);
        assert_eq!(avail_entries(5, 5), 0);
    }

    /// A ring in ordinary memory: both sides in userspace, playing kernel.
    struct Fake {
        prod: Box<AtomicU32>,
        cons: Box<AtomicU32>,
        flags: Box<AtomicU32>,
        descs: Box<[u64]>,
    }

    impl Fake {
        fn new(size: u32, start: u32) -> Fake {
            Fake {
                prod: Box::new(AtomicU32::new(start)),
                cons: Box::new(AtomicU32::new(start)),
                flags: Box::new(AtomicU32::new(0)),
                descs: vec![0; size as usize].into_boxed_slice(),
            }
        }
        fn parts(&mut self) -> RingParts<u64> {
            RingParts {
                producer: NonNull::from(&*self.prod),
                consumer: NonNull::from(&*self.cons),
                flags: Some(NonNull::from(&*self.flags)),
                descs: NonNull::new(self.descs.as_mut_ptr()).unwrap(),
                size: self.descs.len() as u32,
            }
        }
    }

    fn pair(fake: &mut Fake) -> (ProdRing<u64>, ConsRing<u64>) {
        // SAFETY: `fake` outlives both rings in every test, and each side
        // has exactly one handle.
        unsafe {
            (
                ProdRing::from_parts(fake.parts()),
                ConsRing::from_parts(fake.parts()),
            )
        }
    }

    #[test]
    fn produce_consume_across_u32_wrap() {
        let mut fake = Fake::new(8, u32::MAX - 5);
        let (mut p, mut c) = pair(&mut fake);
        let mut next = 0u64;
        let mut expect = 0u64;
        for round in 0..20 {
            let mut t = p.reserve(5);
            let n = t.len();
            for i in 0..n {
                t.write(i, next);
                next += 1;
            }
            t.commit();
            let take = if round % 2 == 0 { 3 } else { 8 };
            let t = c.peek(take);
            for i in 0..t.len() {
                assert_eq!(t.read(i), expect);
                expect += 1;
            }
            t.release();
        }
        assert!(next > 40);
        // Everything produced was consumed or is still in the ring.
        assert_eq!(next - expect, c.avail(8) as u64);
        assert!(fake.prod.load(Ordering::Relaxed) < 100, "index wrapped");
    }

    #[test]
    fn full_ring_reserves_nothing_and_rollback_publishes_nothing() {
        let mut fake = Fake::new(4, 0);
        let (mut p, mut c) = pair(&mut fake);
        let mut t = p.reserve(10);
        assert_eq!(t.len(), 4);
        for i in 0..4 {
            t.write(i, i as u64);
        }
        t.commit();
        assert_eq!(p.reserve(1).len(), 0);
        // A dropped consumer transaction gives nothing back...
        {
            let t = c.peek(2);
            assert_eq!(t.len(), 2);
        }
        assert_eq!(p.free(1), 0);
        // ...and a dropped producer transaction publishes nothing.
        c.peek(2).release();
        {
            let mut t = p.reserve(2);
            t.write(0, 99);
        }
        assert_eq!(c.avail(4), 2);
        let t = c.peek(4);
        assert_eq!((t.read(0), t.read(1)), (2, 3));
        t.release();
        assert_eq!(c.avail(1), 0);
        assert_eq!(p.outstanding(), 0);
    }

    #[test]
    fn partial_commit_and_wakeup_flag() {
        let mut fake = Fake::new(8, 0);
        let (mut p, mut c) = pair(&mut fake);
        let mut t = p.reserve(4);
        t.write(0, 10);
        t.write(1, 11);
        t.commit_n(2);
        assert_eq!(c.avail(8), 2);
        assert_eq!(p.outstanding(), 2);
        assert!(!p.needs_wakeup());
        fake.flags.store(NEED_WAKEUP, Ordering::Relaxed);
        assert!(p.needs_wakeup());
    }
}
