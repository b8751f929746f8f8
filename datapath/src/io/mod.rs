//! Port I/O: how frames get into and out of a worker.
//!
//! # The port model
//!
//! A worker (one per core) owns one [`Umem`]: a page-aligned region of
//! fixed-size chunks (2048 or 4096 bytes) that holds every packet buffer
//! the worker ever touches. The worker also owns its ports: one AF_XDP
//! socket per (interface, queue) it serves, at most one TAP device, and
//! in tests any number of in-memory ports. Every [`Port`] call takes the
//! worker's `&mut Umem`, so a port never owns packet memory of its own and
//! the borrow checker serialises access to it:
//!
//! ```text
//!   rx_burst(&mut umem, &mut batch)        tx_burst(&mut umem, &mut batch)
//!   port A ──► Batch of Frames ──► worker (parse, classify, rewrite in place) ──► port B
//!              (chunk addresses into the worker's Umem; no bytes move)
//! ```
//!
//! All AF_XDP sockets of a worker share its UMEM (`XDP_SHARED_UMEM`, each
//! socket with its own fill and completion ring), so forwarding from port A
//! to port B is a descriptor move: the chunk the kernel filled for A's RX
//! ring is posted as-is on B's TX ring and comes back through B's
//! completion ring to the worker's free list. In copy mode the kernel
//! copies once on RX (skb to UMEM) and once on TX (UMEM to skb), as it
//! must; in zero-copy mode the NIC DMAs straight into and out of the
//! chunks. TAP and memory ports read and write the same chunks, so a
//! packet from the host stack to the NIC costs one `read(2)` into a chunk
//! and nothing more in userspace.
//!
//! # Buffer ownership
//!
//! A [`Frame`] is a move-only token: a chunk of a particular [`Umem`] plus
//! the packet's offset and length inside it. There is no public
//! constructor and it is neither `Clone` nor `Copy`, so at any moment each
//! chunk is owned by exactly one of:
//!
//! * the [`Umem`] free list ([`Umem::alloc`] takes one out, [`Umem::free`]
//!   puts one back),
//! * a port (an AF_XDP fill/RX/TX/completion ring, i.e. the kernel, or a
//!   port's internal queue),
//! * the worker, as a `Frame` in a [`Batch`] or a local variable.
//!
//! Packet bytes are reached through the `Umem` ([`Umem::data`],
//! [`Umem::data_mut`]), which checks that the frame belongs to it. Because
//! the kernel only writes chunks it owns (fill and RX rings) and only reads
//! chunks it owns (TX ring), and those are never reachable as a `Frame`,
//! no safe code can observe a chunk while the kernel writes it. A frame
//! that is dropped instead of freed leaks its chunk (never unsound; the
//! worker frees or transmits every frame, counting a drop reason).
//!
//! # Threads
//!
//! Everything here is owned by one worker thread: the `Umem`, its ports,
//! their rings and batches (`Send`, not shared). The only cross-thread
//! object is an attached XDP program ([`afxdp::XdpProgram`], in an `Arc`),
//! shared by the workers serving different queues of one interface: its
//! XSKMAP is updated with the `bpf(2)` syscall, which the kernel
//! serialises, and the BPF link detaches when the last owner drops it or
//! the process dies.
//!
//! # Modules
//!
//! * [`umem`]: the chunk region, its free list, [`Frame`] accessors.
//! * [`memory`]: in-process queues (tests, benches, golden-packet replay).
//! * [`tap`]: a TAP device the host stack sees as an ordinary interface
//!   (OVS's `LOCAL` port / `antrea-gw0`).
//! * [`afxdp`]: AF_XDP sockets, their rings, and flowpath's own XDP program
//!   (raw eBPF, loaded with `bpf(2)`, attached through a BPF link).
//! * [`netlink`]: the few rtnetlink requests setup needs (link up, MTU,
//!   MAC, IPv4 address, XDP query and detach).
//! * [`pcap`]: a minimal capture writer/reader.
//! * [`affinity`]: a thread's CPU set (`sched_setaffinity(2)`), to keep the
//!   control plane's threads off the workers' cores.
//!
//! `unsafe` code exists only in `umem`, `afxdp`, `tap`, `netlink` and
//! `affinity`; each
//! of those modules opts in with `#![allow(unsafe_code)]`.

pub mod affinity;
pub mod afxdp;
pub mod memory;
pub mod netlink;
pub mod pcap;
pub mod tap;
pub mod umem;

pub use umem::{Frame, Umem, UmemConfig};

/// Most frames a [`Batch`] holds: the burst size of every port call.
pub const BURST: usize = 64;

/// Up to [`BURST`] frames, in order. Fixed-size and allocation-free; the
/// worker keeps one per direction and reuses it every burst.
///
/// Dropping a non-empty batch leaks its frames' chunks; hand them back with
/// [`Umem::free_batch`] or transmit them.
pub struct Batch {
    frames: [Frame; BURST],
    len: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch.
    pub const fn new() -> Batch {
        Batch {
            frames: [const { Frame::EMPTY }; BURST],
            len: 0,
        }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no frames are held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free slots left.
    pub fn space(&self) -> usize {
        BURST - self.len
    }

    /// Append a frame; gives it back if the batch is full.
    pub fn push(&mut self, frame: Frame) -> Result<(), Frame> {
        if self.len == BURST {
            return Err(frame);
        }
        self.frames[self.len] = frame;
        self.len += 1;
        Ok(())
    }

    /// Remove and return the last frame.
    pub fn pop(&mut self) -> Option<Frame> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        Some(core::mem::replace(&mut self.frames[self.len], Frame::EMPTY))
    }

    /// The frames, in order.
    pub fn frames(&self) -> &[Frame] {
        &self.frames[..self.len]
    }

    /// The frames, in order, for in-place edits (length, headroom).
    pub fn frames_mut(&mut self) -> &mut [Frame] {
        &mut self.frames[..self.len]
    }

    /// Remove the first `n` frames (which the caller has already moved
    /// out with [`Batch::take`]) and shift the rest to the front, keeping
    /// their order. Used by ports after a partial transmit.
    fn consume_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.frames[..self.len].rotate_left(n);
        self.len -= n;
    }

    /// Move frame `i` out, leaving an empty placeholder that must be
    /// removed with [`Batch::consume_front`] before the batch is used again.
    fn take(&mut self, i: usize) -> Frame {
        core::mem::replace(&mut self.frames[i], Frame::EMPTY)
    }
}

/// Counters a port keeps. Plain `u64`s owned by the port's worker; the
/// control plane asks the worker for a copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames handed to the worker.
    pub rx_packets: u64,
    /// Bytes handed to the worker.
    pub rx_bytes: u64,
    /// Frames accepted for transmission.
    pub tx_packets: u64,
    /// Bytes accepted for transmission.
    pub tx_bytes: u64,
    /// Frames lost before the worker saw them: AF_XDP `rx_dropped` plus
    /// `rx_ring_full`, TAP frames too long for a chunk, or no free chunk.
    pub rx_dropped: u64,
    /// Of `rx_dropped`: frames the kernel had for an AF_XDP socket whose
    /// RX ring was full (AF_XDP `rx_ring_full`): the worker did not empty
    /// the ring in time (too slow, or not running for a while; see the
    /// worker's poll-gap counters).
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when the kernel needed a chunk
    /// (AF_XDP `rx_fill_ring_empty_descs`): a sign the UMEM is too small.
    pub rx_fill_empty: u64,
    /// Frames refused for transmission because the device or ring was
    /// full: they stay in the caller's batch, which decides.
    pub tx_busy: u64,
    /// Descriptors the kernel rejected (AF_XDP `rx/tx_invalid_descs`), or
    /// TAP write errors other than "would block".
    pub errors: u64,
}

/// A burst-oriented packet port: one per (interface, queue) per worker.
///
/// Implementations never allocate or log per packet. Both calls take the
/// worker's [`Umem`], which must be the one the port was opened on (ports
/// that do not depend on a particular UMEM, such as TAP and memory ports,
/// accept any).
pub trait Port {
    /// The port's name (interface name, or the memory port's label).
    fn name(&self) -> &str;

    /// Receive up to `batch.space()` frames, appending them to `batch`.
    /// Returns how many were appended. Also does the port's housekeeping:
    /// refilling the AF_XDP fill ring and reaping the completion ring.
    fn rx_burst(&mut self, umem: &mut Umem, batch: &mut Batch) -> usize;

    /// Transmit frames from the front of `batch`, in order. Frames sent
    /// are removed (the port owns them until the device is done, then they
    /// return to `umem`'s free list); frames the port could not take
    /// (device busy, ring full) stay at the front of `batch`, in order, for
    /// the caller to retry or free. Returns how many were taken: sent, or
    /// consumed by an error that retrying cannot fix (counted in
    /// [`PortStats::errors`]).
    fn tx_burst(&mut self, umem: &mut Umem, batch: &mut Batch) -> usize;

    /// A snapshot of the port's counters.
    fn stats(&self) -> PortStats;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Workers are spawned per core and take their UMEM and ports with
    /// them; the XDP program is shared between workers.
    #[test]
    fn ownership_crosses_threads() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<Umem>();
        send::<Batch>();
        send::<afxdp::AfXdpPort>();
        send::<tap::TapPort>();
        send::<memory::MemoryPort>();
        send_sync::<afxdp::XdpProgram>();
    }

    #[test]
    fn batch_push_pop_and_partial_consume_keep_order() {
        let mut umem = Umem::new(UmemConfig {
            frame_count: 128,
            ..UmemConfig::default()
        })
        .unwrap();
        let mut b = Batch::new();
        for i in 0..BURST {
            let mut f = umem.alloc().unwrap();
            umem.set_len(&mut f, 1).unwrap();
            umem.data_mut(&f)[0] = i as u8;
            b.push(f).unwrap();
        }
        let extra = umem.alloc().unwrap();
        let extra = b.push(extra).unwrap_err();
        umem.free(extra);
        assert_eq!(b.space(), 0);
        // A port that sent the first 10: the rest shift down, in order.
        for i in 0..10 {
            let f = b.take(i);
            umem.free(f);
        }
        b.consume_front(10);
        assert_eq!(b.len(), BURST - 10);
        let firsts: Vec<u8> = b.frames().iter().map(|f| umem.data(f)[0]).collect();
        assert_eq!(firsts, (10..BURST as u8).collect::<Vec<_>>());
        umem.free_batch(&mut b);
        assert!(b.is_empty());
        assert_eq!(umem.free_count(), 128);
    }
}
