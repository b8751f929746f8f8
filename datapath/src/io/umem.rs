//! The worker's packet memory: a page-aligned region of equal chunks, one
//! packet per chunk, registered with the kernel as an AF_XDP UMEM when the
//! worker opens its first AF_XDP port.
//!
//! Layout of a chunk (aligned mode, as the kernel fills it on RX):
//!
//! ```text
//! | XDP_PACKET_HEADROOM (256) | packet ........................ | tail room |
//! ^ chunk base                ^ Frame::addr                      ^ base + chunk_size
//! ```
//!
//! The 256 bytes of headroom let the pipeline push headers (VLAN, tunnel)
//! without copying. With 2048-byte chunks a frame carries at most 1792
//! bytes; use 4096-byte chunks for jumbo frames.
#![allow(unsafe_code)]

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Headroom the kernel leaves in front of every received packet.
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// Sizing for a [`Umem`].
#[derive(Debug, Clone, Copy)]
pub struct UmemConfig {
    /// Number of chunks. Must cover every ring the worker's ports keep full
    /// (fill + TX ring of each AF_XDP port) plus the batches in flight.
    pub frame_count: u32,
    /// Chunk size: 2048 or 4096.
    pub frame_size: u32,
}

impl Default for UmemConfig {
    fn default() -> Self {
        UmemConfig {
            frame_count: 8192,
            frame_size: 2048,
        }
    }
}

/// Why a [`Umem`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum UmemError {
    /// `frame_size` is not 2048 or 4096, or `frame_count` is 0 or too big.
    #[error("umem: invalid config frame_size={frame_size} frame_count={frame_count}")]
    Config {
        /// Requested chunk size.
        frame_size: u32,
        /// Requested chunk count.
        frame_count: u32,
    },
    /// `mmap` failed.
    #[error("umem: mmap of {bytes} bytes: {source}")]
    Mmap {
        /// Region size.
        bytes: usize,
        /// The OS error.
        source: io::Error,
    },
}

/// Frame length the caller asked for does not fit in the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame does not fit: wanted {wanted} bytes, room for {room}")]
pub struct NoRoom {
    /// Bytes requested.
    pub wanted: usize,
    /// Bytes available.
    pub room: usize,
}

/// A packet in a chunk of one particular [`Umem`]; see the module docs of
/// [`crate::io`] for the ownership rules. Move-only: no `Clone`, no public
/// constructor.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// Byte offset of the first packet byte from the start of the UMEM.
    addr: u64,
    /// Packet length in bytes.
    len: u32,
    /// Id of the owning [`Umem`].
    umem: u32,
}

impl Frame {
    /// Placeholder for unused [`crate::io::Batch`] slots. Its umem id (0)
    /// matches no `Umem`, so it can never reach packet memory.
    pub(crate) const EMPTY: Frame = Frame {
        addr: 0,
        len: 0,
        umem: 0,
    };

    /// Packet length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True for a zero-length frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the packet in the UMEM (what goes in an AF_XDP
    /// descriptor).
    pub fn addr(&self) -> u64 {
        self.addr
    }
}

/// Source of unique [`Umem`] ids; 0 is reserved for [`Frame::EMPTY`].
/// Relaxed: only uniqueness matters, no other memory is published with it.
static NEXT_UMEM_ID: AtomicU32 = AtomicU32::new(1);

/// The worker's packet memory and its free list. See the module docs.
pub struct Umem {
    base: NonNull<u8>,
    size: usize,
    frame_size: u32,
    frame_shift: u32,
    frame_count: u32,
    id: u32,
    /// Chunk base offsets owned by userspace and not in use. Capacity is
    /// `frame_count`, reserved up front: pushes never allocate.
    free: Vec<u64>,
    /// AF_XDP registration, set by the first AF_XDP port opened on this
    /// UMEM (see `afxdp::socket`).
    pub(crate) xsk: Option<crate::io::afxdp::UmemRegistration>,
    /// [`Umem::lend`] calls in progress on this value. While one is, the
    /// mapping must outlive the lent slice: `Drop` then leaks it rather
    /// than unmap (only reachable if the closure swaps this `Umem` out
    /// and drops it).
    lending: u32,
}

// SAFETY: `Umem` owns its mapping exclusively (the raw pointer is never
// shared outside `&self`/`&mut self` borrows), so moving it to another
// thread moves sole ownership with it.
unsafe impl Send for Umem {}

impl std::fmt::Debug for Umem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Umem")
            .field("id", &self.id)
            .field("frame_size", &self.frame_size)
            .field("frame_count", &self.frame_count)
            .field("free", &self.free.len())
            .finish()
    }
}

impl Umem {
    /// Map `frame_count * frame_size` bytes of anonymous, pre-faulted
    /// memory and put every chunk on the free list.
    pub fn new(cfg: UmemConfig) -> Result<Umem, UmemError> {
        let bad = UmemError::Config {
            frame_size: cfg.frame_size,
            frame_count: cfg.frame_count,
        };
        if !(cfg.frame_size == 2048 || cfg.frame_size == 4096) || cfg.frame_count == 0 {
            return Err(bad);
        }
        let size = (cfg.frame_count as usize)
            .checked_mul(cfg.frame_size as usize)
            .filter(|&s| s <= 1 << 40)
            .ok_or(bad)?;
        // SAFETY: an anonymous private mapping with no address hint aliases
        // nothing; the result is checked for MAP_FAILED below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(UmemError::Mmap {
                bytes: size,
                source: io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or(UmemError::Mmap {
            bytes: size,
            source: io::Error::other("mmap returned null"),
        })?;
        let mut free = Vec::with_capacity(cfg.frame_count as usize);
        // Highest first, so the first allocations come from the start.
        free.extend(
            (0..cfg.frame_count as u64)
                .rev()
                .map(|i| i * cfg.frame_size as u64),
        );
        Ok(Umem {
            base,
            size,
            frame_size: cfg.frame_size,
            frame_shift: cfg.frame_size.trailing_zeros(),
            frame_count: cfg.frame_count,
            // Relaxed: see NEXT_UMEM_ID.
            id: NEXT_UMEM_ID.fetch_add(1, Ordering::Relaxed),
            free,
            xsk: None,
            lending: 0,
        })
    }

    /// Chunk size in bytes.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Number of chunks.
    pub fn frame_count(&self) -> u32 {
        self.frame_count
    }

    /// Chunks on the free list.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Largest packet a chunk can hold with the standard headroom.
    pub fn max_frame_len(&self) -> usize {
        (self.frame_size - XDP_PACKET_HEADROOM) as usize
    }

    /// Take a free chunk as an empty frame with the standard headroom.
    #[inline]
    pub fn alloc(&mut self) -> Option<Frame> {
        let base = self.free.pop()?;
        Some(Frame {
            addr: base + XDP_PACKET_HEADROOM as u64,
            len: 0,
            umem: self.id,
        })
    }

    /// Return a frame's chunk to the free list.
    ///
    /// # Panics
    /// If the frame belongs to another `Umem` (a worker bug).
    #[inline]
    pub fn free(&mut self, frame: Frame) {
        assert_eq!(frame.umem, self.id, "frame freed to the wrong Umem");
        let base = self.chunk_base(frame.addr);
        // Never reallocates: at most frame_count chunks exist.
        debug_assert!(self.free.len() < self.frame_count as usize);
        self.free.push(base);
    }

    /// Free every frame in `batch`, leaving it empty.
    pub fn free_batch(&mut self, batch: &mut crate::io::Batch) {
        while let Some(f) = batch.pop() {
            self.free(f);
        }
    }

    /// The packet bytes.
    ///
    /// # Panics
    /// If the frame belongs to another `Umem`.
    #[inline]
    pub fn data(&self, frame: &Frame) -> &[u8] {
        self.check(frame);
        // SAFETY: `check` proved the frame is ours; frames only ever span
        // `addr..addr+len` inside one chunk of the mapping (enforced by
        // every constructor and `set_len`/`push_head`). The frame token is
        // unique, so the kernel does not own this chunk, and the `&self`
        // borrow excludes `&mut` access through this Umem.
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(frame.addr as usize), frame.len())
        }
    }

    /// The packet bytes, writable.
    ///
    /// # Panics
    /// If the frame belongs to another `Umem`.
    #[inline]
    pub fn data_mut(&mut self, frame: &Frame) -> &mut [u8] {
        self.check(frame);
        // SAFETY: as in `data`; `&mut self` makes this the only live
        // reference into the mapping.
        unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(frame.addr as usize), frame.len())
        }
    }

    /// Lend `frame`'s bytes and the `Umem` together: `f` gets the packet,
    /// writable, and `&mut self` for everything else (allocating, copying
    /// into other frames, transmitting them). The frame comes back with
    /// `f`'s result. This is how a worker runs the pipeline on a received
    /// frame in place and then transmits that same frame.
    ///
    /// # Panics
    /// If the frame belongs to another `Umem`.
    #[inline]
    pub fn lend<R>(
        &mut self,
        frame: Frame,
        f: impl FnOnce(&mut [u8], &mut Umem) -> R,
    ) -> (Frame, R) {
        self.check(&frame);
        let p = self.base.as_ptr();
        self.lending += 1;
        // SAFETY: `check` proved the frame is ours and frames only span
        // `addr..addr+len` inside one chunk of the mapping. The frame token
        // is unique and moved in here, so while `f` runs no `Frame` for
        // this chunk exists: no safe path through `&mut Umem` (`data`,
        // `data_mut`, `room_mut`, all of which take a `Frame`) reaches
        // these bytes, the free list does not hold the chunk (so `alloc`
        // cannot hand it out), and the kernel does not own it (not on a
        // fill or TX ring, so no RX descriptor can name it). The slice and
        // `&mut self` therefore never alias. The slice cannot escape `f`
        // (`R` does not borrow from it), and the mapping outlives it: even
        // if `f` swaps `*self` for another `Umem` and drops this one,
        // `lending` makes `Drop` leak the mapping instead of unmapping it.
        let pkt =
            unsafe { std::slice::from_raw_parts_mut(p.add(frame.addr as usize), frame.len()) };
        let r = f(pkt, self);
        self.lending = self.lending.saturating_sub(1);
        (frame, r)
    }

    /// Everything from the packet start to the end of its chunk, for
    /// writing a packet of unknown length (TAP `read`, memory port). Follow
    /// with [`Umem::set_len`].
    #[inline]
    pub fn room_mut(&mut self, frame: &Frame) -> &mut [u8] {
        self.check(frame);
        let room = self.room(frame);
        // SAFETY: as in `data_mut`; `room` ends at the chunk end, inside
        // the mapping.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(frame.addr as usize), room) }
    }

    /// Bytes from the packet start to the end of its chunk.
    #[inline]
    pub fn room(&self, frame: &Frame) -> usize {
        (self.chunk_base(frame.addr) + self.frame_size as u64 - frame.addr) as usize
    }

    /// Bytes in front of the packet inside its chunk.
    #[inline]
    pub fn headroom(&self, frame: &Frame) -> usize {
        (frame.addr - self.chunk_base(frame.addr)) as usize
    }

    /// Set the packet length (truncate or extend into tail room; extended
    /// bytes hold whatever the chunk held).
    #[inline]
    pub fn set_len(&self, frame: &mut Frame, len: usize) -> Result<(), NoRoom> {
        self.check(frame);
        let room = self.room(frame);
        if len > room {
            return Err(NoRoom { wanted: len, room });
        }
        frame.len = len as u32;
        Ok(())
    }

    /// Grow the packet by `n` bytes at the front (for pushing a header),
    /// using headroom.
    #[inline]
    pub fn push_head(&self, frame: &mut Frame, n: usize) -> Result<(), NoRoom> {
        self.check(frame);
        let head = self.headroom(frame);
        if n > head {
            return Err(NoRoom {
                wanted: n,
                room: head,
            });
        }
        frame.addr -= n as u64;
        frame.len += n as u32;
        Ok(())
    }

    /// Shrink the packet by `n` bytes at the front (for popping a header).
    #[inline]
    pub fn pull_head(&self, frame: &mut Frame, n: usize) -> Result<(), NoRoom> {
        self.check(frame);
        if n > frame.len() {
            return Err(NoRoom {
                wanted: n,
                room: frame.len(),
            });
        }
        frame.addr += n as u64;
        frame.len -= n as u32;
        Ok(())
    }

    #[inline]
    fn check(&self, frame: &Frame) {
        assert_eq!(frame.umem, self.id, "frame used with the wrong Umem");
    }

    #[inline]
    pub(crate) fn chunk_base(&self, addr: u64) -> u64 {
        addr & !((self.frame_size as u64) - 1)
    }

    /// Turn a descriptor the kernel returned (RX ring) into a frame, after
    /// checking it lies inside one chunk of this UMEM. `None` means the
    /// kernel handed back something impossible; the caller counts it.
    #[inline]
    pub(crate) fn frame_from_desc(&self, addr: u64, len: u32) -> Option<Frame> {
        let end = addr.checked_add(len as u64)?;
        if end > self.size as u64 || (len > 0 && self.chunk_base(addr) != self.chunk_base(end - 1))
        {
            return None;
        }
        Some(Frame {
            addr,
            len,
            umem: self.id,
        })
    }

    /// Take a free chunk's base offset for a fill ring.
    #[inline]
    pub(crate) fn alloc_chunk(&mut self) -> Option<u64> {
        self.free.pop()
    }

    /// Return a chunk by any address inside it (completion ring entries,
    /// whose ownership the kernel hands back).
    #[inline]
    pub(crate) fn free_chunk(&mut self, addr: u64) {
        if addr < self.size as u64 {
            debug_assert!(self.free.len() < self.frame_count as usize);
            self.free.push(self.chunk_base(addr));
        }
    }

    /// Give up ownership of a frame to the kernel (TX ring); returns its
    /// descriptor. The chunk comes back through [`Umem::free_chunk`].
    #[inline]
    pub(crate) fn to_kernel(&self, frame: Frame) -> (u64, u32) {
        self.check(&frame);
        (frame.addr, frame.len)
    }

    /// Id used to check frames and ports belong to this UMEM.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Start and length of the mapping, for `XDP_UMEM_REG`.
    pub(crate) fn region(&self) -> (*mut u8, usize) {
        (self.base.as_ptr(), self.size)
    }

    /// log2 of the chunk size.
    #[allow(dead_code)]
    pub(crate) fn frame_shift(&self) -> u32 {
        self.frame_shift
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // Close the registration socket first, then unmap. If AF_XDP
        // sockets are still open the kernel keeps the pages pinned, so it
        // never writes to memory that went back to the allocator.
        self.xsk = None;
        if self.lending != 0 {
            // A lent slice may still point into the mapping (see `lend`).
            return;
        }
        // SAFETY: `base`/`size` are exactly the mapping made in `new`, and
        // no references into it outlive `&mut self` (`lending` is 0).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn umem(n: u32) -> Umem {
        Umem::new(UmemConfig {
            frame_count: n,
            frame_size: 2048,
        })
        .unwrap()
    }

    #[test]
    fn rejects_bad_config() {
        assert!(
            Umem::new(UmemConfig {
                frame_count: 4,
                frame_size: 1000
            })
            .is_err()
        );
        assert!(
            Umem::new(UmemConfig {
                frame_count: 0,
                frame_size: 2048
            })
            .is_err()
        );
    }

    #[test]
    fn alloc_free_and_room() {
        let mut u = umem(4);
        assert_eq!(u.max_frame_len(), 1792);
        let mut f = u.alloc().unwrap();
        assert_eq!(f.addr(), 256);
        assert_eq!(u.headroom(&f), 256);
        assert_eq!(u.room(&f), 1792);
        assert_eq!(
            u.set_len(&mut f, 1793),
            Err(NoRoom {
                wanted: 1793,
                room: 1792
            })
        );
        u.set_len(&mut f, 60).unwrap();
        u.data_mut(&f).copy_from_slice(&[7; 60]);
        u.push_head(&mut f, 4).unwrap();
        assert_eq!(f.len(), 64);
        assert_eq!(&u.data(&f)[4..], &[7; 60]);
        u.pull_head(&mut f, 4).unwrap();
        assert_eq!(u.data(&f), &[7; 60]);
        assert!(u.push_head(&mut f, 257).is_err());
        let others: Vec<_> = (0..3).map(|_| u.alloc().unwrap()).collect();
        assert!(u.alloc().is_none());
        u.free(f);
        for o in others {
            u.free(o);
        }
        assert_eq!(u.free_count(), 4);
    }

    #[test]
    fn kernel_descs_are_bounds_checked() {
        let u = umem(2);
        assert!(u.frame_from_desc(2048 + 256, 1792).is_some());
        // Crosses a chunk boundary.
        assert!(u.frame_from_desc(256, 1793).is_none());
        // Past the end of the region.
        assert!(u.frame_from_desc(4096, 1).is_none());
        assert!(u.frame_from_desc(u64::MAX - 2, 10).is_none());
    }

    #[test]
    #[should_panic(expected = "wrong Umem")]
    fn foreign_frames_are_refused() {
        let mut a = umem(2);
        let b = umem(2);
        let f = a.alloc().unwrap();
        let _ = b.data(&f);
    }

    /// `lend` gives the packet and the Umem at once: other frames can be
    /// allocated and written meanwhile, edits to the lent bytes stay.
    #[test]
    fn lend_packet_and_umem_together() {
        let mut u = umem(8);
        let mut f = u.alloc().unwrap();
        u.set_len(&mut f, 4).unwrap();
        u.data_mut(&f).copy_from_slice(&[1, 2, 3, 4]);
        let (f, copy) = u.lend(f, |pkt, u| {
            let mut c = u.alloc().unwrap();
            u.set_len(&mut c, pkt.len()).unwrap();
            u.data_mut(&c).copy_from_slice(pkt);
            pkt[0] = 9;
            c
        });
        assert_eq!(u.data(&f), &[9, 2, 3, 4]);
        assert_eq!(u.data(&copy), &[1, 2, 3, 4]);
        u.free(f);
        u.free(copy);
        assert_eq!(u.free_count(), 8);
        assert_eq!(u.lending, 0);
    }

    /// A closure that swaps the lent `Umem` out and drops it must not free
    /// the memory under the lent slice: the mapping is leaked instead.
    #[test]
    fn lend_survives_the_umem_being_swapped_and_dropped() {
        let mut u = umem(8);
        let mut f = u.alloc().unwrap();
        u.set_len(&mut f, 4).unwrap();
        let (f, ()) = u.lend(f, |pkt, u| {
            drop(std::mem::replace(u, umem(8)));
            pkt.fill(7); // would fault if the mapping had been unmapped
        });
        // The frame belongs to the Umem that was dropped (leaked).
        assert_ne!(f.umem, u.id());
    }
}
