//! One AF_XDP socket: creation, UMEM registration or sharing, ring setup
//! and mapping, bind. Everything here runs on the control path.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use super::ring::{ConsRing, ProdRing, RingParts};
use crate::io::Umem;

/// A shared mapping of one ring, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by exactly one `Mmap`; only raw pointers
// into it exist, held by the ring views of the same socket object.
unsafe impl Send for Mmap {}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: exactly the region mapped in `map_ring`; the ring views
        // into it are dropped together with it (same owning struct, and
        // they are declared before it so they drop first).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `getsockopt(SOL_XDP, opt)` into a zeroed `T`; returns the value and the
/// length the kernel wrote.
pub(crate) fn getsockopt<T: Copy>(fd: RawFd, opt: libc::c_int) -> io::Result<(T, usize)> {
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is writable for `len` bytes; `len` is a valid in/out.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_XDP, opt, v.as_mut_ptr().cast(), &mut len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised, then partly written by the kernel; every
    // `T` used here is a plain-integer `repr(C)` struct, valid for any bits.
    Ok((unsafe { v.assume_init() }, len as usize))
}

/// The ring sizes of one socket; each a power of two.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingSizes {
    pub rx: u32,
    pub tx: u32,
    pub fill: u32,
    pub comp: u32,
}

/// A bound socket with its four rings mapped.
pub(crate) struct Socket {
    // Ring views first: they must drop before the mappings they point into.
    pub rx: ConsRing<libc::xdp_desc>,
    pub tx: ProdRing<libc::xdp_desc>,
    pub fill: ProdRing<u64>,
    pub comp: ConsRing<u64>,
    _maps: [Mmap; 4],
    pub fd: OwnedFd,
    pub zero_copy: bool,
}

/// Bind flags requested for the first socket of a UMEM.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CopyFlags {
    /// Neither flag: the kernel tries zero-copy and falls back to copy.
    Auto,
    Zero,
    Copy,
}

fn new_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); checked before use.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Create and close an AF_XDP socket (capability probe).
pub(crate) fn probe_socket() -> io::Result<()> {
    new_socket().map(drop)
}

fn map_ring(fd: RawFd, off: libc::off_t, len: usize) -> io::Result<Mmap> {
    // SAFETY: mapping a ring of this socket at the offset the AF_XDP ABI
    // defines for it; the result is checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<u8>())
        .map(|ptr| Mmap { ptr, len })
        .ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Pointers into `map` at the kernel-reported offsets.
///
/// # Safety
/// `off` must be the offsets the kernel reported for the ring mapped in
/// `map`, which must have `size` descriptors of `T`.
unsafe fn parts<T>(map: &Mmap, off: &libc::xdp_ring_offset, size: u32) -> RingParts<T> {
    let at = |o: u64| {
        // SAFETY: the kernel's offsets lie inside the mapping (the caller's
        // contract), so the pointer is in bounds and non-null.
        unsafe { NonNull::new_unchecked(map.ptr.as_ptr().add(o as usize)) }
    };
    RingParts {
        producer: at(off.producer).cast::<AtomicU32>(),
        consumer: at(off.consumer).cast::<AtomicU32>(),
        flags: Some(at(off.flags).cast::<AtomicU32>()),
        descs: at(off.desc).cast::<T>(),
        size,
    }
}

/// Make one AF_XDP socket on `ifindex`/`queue`. The first socket of a
/// UMEM registers it (honouring `copy`); later ones share it, inheriting
/// its copy mode, with their own fill and completion rings.
pub(crate) fn open(
    umem: &mut Umem,
    ifindex: u32,
    queue: u32,
    sizes: RingSizes,
    copy: CopyFlags,
    need_wakeup: bool,
) -> io::Result<Socket> {
    let sock = new_socket()?;
    let fd = sock.as_raw_fd();
    let owner = umem.xsk.is_none();
    if owner {
        let (addr, len) = umem.region();
        let reg = libc::xdp_umem_reg {
            addr: addr as u64,
            len: len as u64,
            chunk_size: umem.frame_size(),
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(fd, libc::XDP_UMEM_REG, &reg)?;
    }
    setsockopt(fd, libc::XDP_UMEM_FILL_RING, &sizes.fill)?;
    setsockopt(fd, libc::XDP_UMEM_COMPLETION_RING, &sizes.comp)?;
    setsockopt(fd, libc::XDP_RX_RING, &sizes.rx)?;
    setsockopt(fd, libc::XDP_TX_RING, &sizes.tx)?;
    let (off, _) = getsockopt::<libc::xdp_mmap_offsets>(fd, libc::XDP_MMAP_OFFSETS)?;
    let d = std::mem::size_of::<libc::xdp_desc>();
    let rx_map = map_ring(
        fd,
        libc::XDP_PGOFF_RX_RING,
        off.rx.desc as usize + sizes.rx as usize * d,
    )?;
    let tx_map = map_ring(
        fd,
        libc::XDP_PGOFF_TX_RING,
        off.tx.desc as usize + sizes.tx as usize * d,
    )?;
    let fill_map = map_ring(
        fd,
        libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
        off.fr.desc as usize + sizes.fill as usize * 8,
    )?;
    let comp_map = map_ring(
        fd,
        libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
        off.cr.desc as usize + sizes.comp as usize * 8,
    )?;

    // SAFETY: an all-zero sockaddr_xdp is a valid value of the struct.
    let mut sa: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
    sa.sxdp_family = libc::AF_XDP as u16;
    sa.sxdp_ifindex = ifindex;
    sa.sxdp_queue_id = queue;
    match &umem.xsk {
        None => {
            sa.sxdp_flags = match copy {
                CopyFlags::Auto => 0,
                CopyFlags::Zero => libc::XDP_ZEROCOPY,
                CopyFlags::Copy => libc::XDP_COPY,
            };
            if need_wakeup {
                sa.sxdp_flags |= libc::XDP_USE_NEED_WAKEUP;
            }
        }
        Some(reg) => {
            // Shared sockets may not pass mode flags: they inherit them.
            sa.sxdp_flags = libc::XDP_SHARED_UMEM;
            sa.sxdp_shared_umem_fd = reg.fd.as_raw_fd() as u32;
        }
    }
    // SAFETY: `sa` is a valid sockaddr_xdp of the size passed.
    let r = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_xdp).cast(),
            std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let (opts, _) = getsockopt::<libc::xdp_options>(fd, libc::XDP_OPTIONS)?;
    let zero_copy = opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0;
    if owner {
        umem.xsk = Some(super::UmemRegistration {
            fd: sock.try_clone()?,
            zero_copy,
        });
    }
    // SAFETY: the offsets are the kernel's for these mappings, each made
    // for exactly `size` descriptors; each ring gets a single userspace
    // handle, which `Socket` keeps alongside (and drops before) the maps.
    let (rx, tx, fill, comp) = unsafe {
        (
            ConsRing::from_parts(parts(&rx_map, &off.rx, sizes.rx)),
            ProdRing::from_parts(parts(&tx_map, &off.tx, sizes.tx)),
            ProdRing::from_parts(parts(&fill_map, &off.fr, sizes.fill)),
            ConsRing::from_parts(parts(&comp_map, &off.cr, sizes.comp)),
        )
    };
    Ok(Socket {
        rx,
        tx,
        fill,
        comp,
        _maps: [rx_map, tx_map, fill_map, comp_map],
        fd: sock,
        zero_copy,
    })
}

/// Wake the kernel's TX path (copy mode sends at most 32 frames per call).
#[inline]
pub(crate) fn kick_tx(fd: RawFd) -> io::Result<()> {
    // SAFETY: sendto with no buffer and no address is the AF_XDP TX kick.
    let r = unsafe {
        libc::sendto(
            fd,
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Wake the kernel's RX path after refilling (need_wakeup mode).
#[inline]
pub(crate) fn kick_rx(fd: RawFd) {
    // SAFETY: recvfrom with no buffer is the AF_XDP RX wakeup; its result
    // carries no information we need.
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
}

/// Raise RLIMIT_MEMLOCK so UMEM registration is not refused on kernels
/// that still charge it (best effort; CAP_IPC_LOCK makes it moot).
pub(crate) fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `lim` is a valid rlimit; failure is harmless and ignored.
    unsafe {
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
    }
}
