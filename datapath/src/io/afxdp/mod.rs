//! AF_XDP ports: one socket per (interface, queue) per worker, all of a
//! worker's sockets sharing its [`Umem`] (`XDP_SHARED_UMEM`), fed by
//! flowpath's own XDP program.
//!
//! Setup, per interface (once, shared by every worker through an `Arc`):
//! [`XdpProgram::attach`] removes stale flowpath programs left by a crashed
//! run, creates an XSKMAP, loads the redirect program (raw eBPF, see
//! [`bpf`]) and attaches it with a BPF link, so the kernel detaches it when
//! the last fd closes, including on `kill -9`.
//!
//! Per worker and queue: [`AfXdpPort::open`] creates the socket, registers
//! the worker's UMEM (first socket) or shares it (later ones, with their
//! own fill and completion rings), binds it, pre-fills the fill ring and
//! puts the socket in the XSKMAP at its queue index.
//!
//! Hot path: `rx_burst` reaps completions, refills the fill ring (clamped
//! to both the ring's free slots and the UMEM's free chunks) and moves RX
//! descriptors into the batch; `tx_burst` posts descriptors on the TX ring
//! and kicks the kernel with `sendto` (every burst in copy mode, where each
//! kick sends at most 32 frames; only when asked in zero-copy mode).
//! Measured: see `examples/xdp_fwd.rs` and `io/README.md`.
#![allow(unsafe_code)]

pub mod bpf;
mod ring;
mod socket;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use super::{Batch, Port, PortStats, Umem, netlink};
use socket::{CopyFlags, RingSizes, Socket};

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native if the driver supports it, else generic (skb).
    #[default]
    Auto,
    /// In the driver (`XDP_FLAGS_DRV_MODE`). Required for zero-copy, and on
    /// veth the only mode that reports the real RX queue index.
    Native,
    /// Generic XDP on the skb (`XDP_FLAGS_SKB_MODE`): works everywhere,
    /// copy mode only, slowest.
    Skb,
}

impl std::str::FromStr for XdpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(XdpMode::Auto),
            "native" | "drv" => Ok(XdpMode::Native),
            "skb" | "generic" => Ok(XdpMode::Skb),
            _ => Err(format!("xdp mode {s:?}: expected auto, native or skb")),
        }
    }
}

/// Whether AF_XDP moves frames by DMA into the UMEM or by copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Zero-copy when the driver supports it, else copy.
    #[default]
    Auto,
    /// Zero-copy or fail.
    Required,
    /// Always copy.
    Off,
}

/// Settings for attaching the XDP program to one interface.
#[derive(Debug, Clone, Default)]
pub struct XdpConfig {
    /// Native, skb or auto.
    pub mode: XdpMode,
    /// EtherTypes (host order) the program passes to the kernel stack
    /// instead of redirecting (at most [`bpf::MAX_PASS_ETHERTYPES`]).
    pub pass_ethertypes: Vec<u16>,
    /// XSKMAP size: highest RX queue index + 1 (0 means 256).
    pub max_queues: u32,
}

/// Settings for one AF_XDP socket.
#[derive(Debug, Clone, Copy)]
pub struct AfXdpConfig {
    /// RX/TX queue index to bind.
    pub queue: u32,
    /// RX and TX ring size (power of two).
    pub ring_size: u32,
    /// Fill and completion ring size (power of two).
    pub fill_size: u32,
    /// Zero-copy policy. Only the first socket on a UMEM decides; later
    /// ones inherit its mode.
    pub zero_copy: ZeroCopy,
    /// Use `XDP_USE_NEED_WAKEUP` (recommended; first socket decides).
    pub need_wakeup: bool,
}

impl Default for AfXdpConfig {
    fn default() -> Self {
        AfXdpConfig {
            queue: 0,
            ring_size: 2048,
            fill_size: 2048,
            zero_copy: ZeroCopy::Auto,
            need_wakeup: true,
        }
    }
}

/// Why an AF_XDP port or its XDP program could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    /// The interface does not exist (in this network namespace).
    #[error("{ifname}: no such interface: {source}")]
    NoInterface {
        /// Interface name.
        ifname: String,
        /// The OS error.
        source: io::Error,
    },
    /// A system call failed.
    #[error("{ifname}: {op}: {source}")]
    Sys {
        /// Interface name.
        ifname: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Another program owns the XDP hook; flowpath does not replace it.
    #[error("{ifname}: foreign XDP program {prog:?} (id {id}) is attached; not replacing it")]
    Foreign {
        /// Interface name.
        ifname: String,
        /// The attached program's name.
        prog: String,
        /// Its id.
        id: u32,
    },
    /// A live BPF link holds flowpath's program on the interface: another
    /// flowpath process is running on it.
    #[error("{ifname}: a live flowpath XDP link owns the interface (another flowpath running?)")]
    Busy {
        /// Interface name.
        ifname: String,
    },
    /// A ring size is not a power of two, or the config is inconsistent.
    #[error("{ifname}: bad config: {field} = {value}")]
    Config {
        /// Interface name.
        ifname: String,
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
}

/// Check that this kernel and these privileges allow AF_XDP: an `AF_XDP`
/// socket and an XSKMAP can be created. `Err` says what is missing; tests
/// use it to skip (with the reason) only where AF_XDP truly is unavailable.
pub fn probe() -> Result<(), String> {
    socket::probe_socket().map_err(|e| format!("socket(AF_XDP): {e}"))?;
    bpf::create_xskmap(1)
        .map(drop)
        .map_err(|e| format!("bpf(BPF_MAP_CREATE, XSKMAP): {e}"))
}

/// Set on a [`Umem`] by its first AF_XDP socket.
pub(crate) struct UmemRegistration {
    /// A dup of the registering socket: keeps it alive for later sockets
    /// to name in `sxdp_shared_umem_fd`, whatever happens to its port.
    pub fd: OwnedFd,
    /// Whether the UMEM is in zero-copy mode (inherited by shared sockets).
    pub zero_copy: bool,
}

/// flowpath's XDP program attached to one interface. Shared (in an `Arc`)
/// by every port on the interface; the program detaches when the last
/// clone drops or the process dies.
///
/// Thread safety: immutable after `attach`; XSKMAP updates go through the
/// `bpf(2)` syscall, which the kernel serialises.
#[derive(Debug)]
pub struct XdpProgram {
    ifname: String,
    ifindex: u32,
    mode: XdpMode,
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
}

impl XdpProgram {
    /// Remove stale flowpath programs from `ifname`, then load and attach
    /// a fresh one with a BPF link.
    pub fn attach(ifname: &str, cfg: &XdpConfig) -> Result<Arc<XdpProgram>, AfXdpError> {
        let ifindex = netlink::ifindex(ifname).map_err(|source| AfXdpError::NoInterface {
            ifname: ifname.into(),
            source,
        })?;
        if cfg.pass_ethertypes.len() > bpf::MAX_PASS_ETHERTYPES {
            return Err(AfXdpError::Config {
                ifname: ifname.into(),
                field: "pass_ethertypes",
                value: format!("{:?}", cfg.pass_ethertypes),
            });
        }
        socket::raise_memlock();
        cleanup_stale(ifname, ifindex)?;
        let sys = |op| {
            let ifname = ifname.to_string();
            move |source| AfXdpError::Sys { ifname, op, source }
        };
        let entries = if cfg.max_queues == 0 {
            256
        } else {
            cfg.max_queues
        };
        let map = bpf::create_xskmap(entries).map_err(sys("create XSKMAP"))?;
        let insns = bpf::program(map.as_raw_fd(), &cfg.pass_ethertypes);
        let prog = bpf::load_program(&insns).map_err(sys("load XDP program"))?;
        let try_mode = |m: XdpMode| {
            let flags = match m {
                XdpMode::Skb => bpf::XDP_FLAGS_SKB_MODE,
                _ => bpf::XDP_FLAGS_DRV_MODE,
            };
            bpf::link_xdp(&prog, ifindex, flags).map(|l| (l, m))
        };
        let (link, mode) = match cfg.mode {
            XdpMode::Auto => try_mode(XdpMode::Native).or_else(|_| try_mode(XdpMode::Skb)),
            m => try_mode(m),
        }
        .map_err(sys("BPF_LINK_CREATE (XDP)"))?;
        tracing_like_log(&format!(
            "{ifname}: flowpath XDP program attached ({mode:?} mode, via BPF link)"
        ));
        Ok(Arc::new(XdpProgram {
            ifname: ifname.into(),
            ifindex,
            mode,
            map,
            _prog: prog,
            _link: link,
        }))
    }

    /// Attach flowpath's program the pre-5.9 way, with netlink and no
    /// link, and leak it: what a crashed old flowpath leaves behind. For
    /// tests of the stale-program cleanup; returns the program id.
    #[doc(hidden)]
    pub fn attach_unmanaged_for_test(ifname: &str, mode: XdpMode) -> io::Result<u32> {
        let ifindex = netlink::ifindex(ifname)?;
        let map = bpf::create_xskmap(4)?;
        let prog = bpf::load_program(&bpf::program(map.as_raw_fd(), &[]))?;
        let flags = match mode {
            XdpMode::Skb => bpf::XDP_FLAGS_SKB_MODE,
            _ => bpf::XDP_FLAGS_DRV_MODE,
        };
        netlink::xdp_set_fd(ifindex, prog.as_raw_fd(), flags)?;
        let st = netlink::xdp_state(ifindex)?;
        Ok(st.programs().next().map(|p| p.0).unwrap_or(0))
    }

    /// Attach flowpath's program through a BPF link and pin the link at
    /// [`pin_path`] (bpffs must be mounted at `/sys/fs/bpf`), then close
    /// every fd: the link outlives the process, as a pinned one left by
    /// tooling would. For tests of the stale-link cleanup.
    #[doc(hidden)]
    pub fn attach_pinned_for_test(ifname: &str, mode: XdpMode) -> io::Result<std::path::PathBuf> {
        let ifindex = netlink::ifindex(ifname)?;
        let map = bpf::create_xskmap(4)?;
        let prog = bpf::load_program(&bpf::program(map.as_raw_fd(), &[]))?;
        let flags = match mode {
            XdpMode::Skb => bpf::XDP_FLAGS_SKB_MODE,
            _ => bpf::XDP_FLAGS_DRV_MODE,
        };
        let link = bpf::link_xdp(&prog, ifindex, flags)?;
        std::fs::create_dir_all(PIN_DIR)?;
        let path = pin_path(ifname);
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        bpf::obj_pin(&link, &c)?;
        Ok(path)
    }

    /// The mode the program actually runs in (never `Auto`).
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

/// Stand-in for `tracing` until the workspace adopts it: control-path
/// messages go to stderr only when `FLOWPATH_IO_LOG` is set.
fn tracing_like_log(msg: &str) {
    if std::env::var_os("FLOWPATH_IO_LOG").is_some() {
        eprintln!("flowpath io: {msg}");
    }
}

/// Directory under bpffs where flowpath would pin links; pinned XDP links
/// found here for the interface are detached and unpinned at start.
pub const PIN_DIR: &str = "/sys/fs/bpf/flowpath";

/// Detach flowpath programs left on `ifindex` by a crashed run: attached
/// by netlink (no link), or held by a link pinned at [`pin_path`].
/// Refuses to touch other programs, and reports a live link as `Busy`.
fn cleanup_stale(ifname: &str, ifindex: u32) -> Result<(), AfXdpError> {
    let sys = |op| {
        let ifname = ifname.to_string();
        move |source| AfXdpError::Sys { ifname, op, source }
    };
    unpin_stale_link(ifname, ifindex);
    let st = netlink::xdp_state(ifindex).map_err(sys("query XDP state"))?;
    for (id, flags) in st.programs() {
        let name = bpf::prog_name_by_id(id).unwrap_or_default();
        if name != bpf::PROG_NAME {
            return Err(AfXdpError::Foreign {
                ifname: ifname.into(),
                prog: name,
                id,
            });
        }
        match netlink::xdp_set_fd(ifindex, -1, flags) {
            Ok(()) => tracing_like_log(&format!(
                "{ifname}: removed stale flowpath XDP program id {id}"
            )),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(AfXdpError::Busy {
                    ifname: ifname.into(),
                });
            }
            Err(e) => return Err(sys("detach stale XDP program")(e)),
        }
    }
    Ok(())
}

/// Where a pinned XDP link for `ifname` would live: `PIN_DIR/xdp-<ifname>`.
/// flowpath never pins its own links (they must die with the process);
/// this is the conventional place tooling or older versions used.
pub fn pin_path(ifname: &str) -> std::path::PathBuf {
    std::path::Path::new(PIN_DIR).join(format!("xdp-{ifname}"))
}

/// Detach and unpin a flowpath XDP link pinned at [`pin_path`] for this
/// interface. Only that one path is examined: link info carries an ifindex
/// but no namespace, so scanning every pin could hit another namespace's
/// interface with the same index.
fn unpin_stale_link(ifname: &str, ifindex: u32) {
    let path = pin_path(ifname);
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    let Ok(fd) = bpf::obj_get(&c) else { return };
    // struct bpf_link_info: type, id, prog_id, pad, then xdp.ifindex.
    let mut info = [0u8; 24];
    if bpf::obj_info(&fd, &mut info).is_err() {
        return;
    }
    let word = |o: usize| u32::from_ne_bytes([info[o], info[o + 1], info[o + 2], info[o + 3]]);
    let ours = bpf::prog_name_by_id(word(8)).is_ok_and(|n| n == bpf::PROG_NAME);
    if word(0) == bpf::BPF_LINK_TYPE_XDP
        && word(16) == ifindex
        && ours
        && bpf::link_detach(&fd).is_ok()
    {
        let _ = std::fs::remove_file(&path);
        tracing_like_log(&format!("removed stale pinned XDP link {}", path.display()));
    }
}

/// One AF_XDP socket bound to an (interface, queue), as a [`Port`].
pub struct AfXdpPort {
    name: String,
    queue: u32,
    umem_id: u32,
    sock: Socket,
    prog: Arc<XdpProgram>,
    stats: PortStats,
}

impl std::fmt::Debug for AfXdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpPort")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field("zero_copy", &self.sock.zero_copy)
            .finish()
    }
}

/// How often, and how long at first, to retry a bind that fails with
/// EBUSY (the previous owner of the queue is still being torn down).
const BIND_RETRIES: u32 = 8;
const BIND_BACKOFF: Duration = Duration::from_millis(20);

impl AfXdpPort {
    /// Open a socket on `prog`'s interface at `cfg.queue`, using (and, for
    /// the first socket, registering) `umem`, and start receiving.
    pub fn open(
        umem: &mut Umem,
        prog: &Arc<XdpProgram>,
        cfg: &AfXdpConfig,
    ) -> Result<AfXdpPort, AfXdpError> {
        let ifname = prog.ifname.clone();
        for (field, v) in [("ring_size", cfg.ring_size), ("fill_size", cfg.fill_size)] {
            if !v.is_power_of_two() || v > 1 << 16 {
                return Err(AfXdpError::Config {
                    ifname,
                    field,
                    value: v.to_string(),
                });
            }
        }
        if let Some(reg) = &umem.xsk {
            let want_zc = match cfg.zero_copy {
                ZeroCopy::Auto => reg.zero_copy,
                ZeroCopy::Required => true,
                ZeroCopy::Off => false,
            };
            if want_zc != reg.zero_copy {
                return Err(AfXdpError::Config {
                    ifname,
                    field: "zero_copy",
                    value: format!(
                        "{:?} (the shared UMEM is already zero_copy={})",
                        cfg.zero_copy, reg.zero_copy
                    ),
                });
            }
        }
        let copy = match (prog.mode, cfg.zero_copy) {
            // Generic XDP cannot do zero-copy; asking would only fail.
            (XdpMode::Skb, _) | (_, ZeroCopy::Off) => CopyFlags::Copy,
            (_, ZeroCopy::Required) => CopyFlags::Zero,
            (_, ZeroCopy::Auto) => CopyFlags::Auto,
        };
        let sizes = RingSizes {
            rx: cfg.ring_size,
            tx: cfg.ring_size,
            fill: cfg.fill_size,
            comp: cfg.fill_size.max(cfg.ring_size),
        };
        let mut delay = BIND_BACKOFF;
        let mut attempt = 0;
        let sock = loop {
            match socket::open(umem, prog.ifindex, cfg.queue, sizes, copy, cfg.need_wakeup) {
                Ok(s) => break s,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < BIND_RETRIES => {
                    attempt += 1;
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(source) => {
                    return Err(AfXdpError::Sys {
                        ifname,
                        op: "AF_XDP socket setup/bind",
                        source,
                    });
                }
            }
        };
        let mut port = AfXdpPort {
            name: format!("{}@{}", prog.ifname, cfg.queue),
            queue: cfg.queue,
            umem_id: umem.id(),
            sock,
            prog: prog.clone(),
            stats: PortStats::default(),
        };
        port.refill(umem);
        bpf::xskmap_set(&prog.map, cfg.queue, port.sock.fd.as_raw_fd()).map_err(|source| {
            AfXdpError::Sys {
                ifname: prog.ifname.clone(),
                op: "XSKMAP update",
                source,
            }
        })?;
        Ok(port)
    }

    /// Whether frames move by DMA (true) or are copied by the kernel.
    pub fn is_zero_copy(&self) -> bool {
        self.sock.zero_copy
    }

    /// The queue this socket serves.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The XDP program feeding this socket.
    pub fn program(&self) -> &Arc<XdpProgram> {
        &self.prog
    }

    /// Give completed TX chunks back to the UMEM.
    #[inline]
    fn reap(&mut self, umem: &mut Umem) {
        let t = self.sock.comp.peek(u32::MAX);
        for i in 0..t.len() {
            umem.free_chunk(t.read(i));
        }
        t.release();
    }

    /// Top up the fill ring from the UMEM's free chunks.
    #[inline]
    fn refill(&mut self, umem: &mut Umem) {
        // Always reload the kernel's consumer index (one Acquire load per
        // burst): a stale cached count would under-fill the ring.
        let want = self.sock.fill.free(u32::MAX).min(umem.free_count() as u32);
        if want == 0 {
            return;
        }
        let mut t = self.sock.fill.reserve(want);
        let mut n = 0;
        while n < t.len() {
            // Clamped to free_count above, so this always yields; never
            // post a made-up address (the kernel would write into it).
            let Some(chunk) = umem.alloc_chunk() else {
                break;
            };
            t.write(n, chunk);
            n += 1;
        }
        t.commit_n(n);
    }

    #[inline]
    fn check_umem(&self, umem: &Umem) {
        assert_eq!(
            umem.id(),
            self.umem_id,
            "AF_XDP port used with a foreign Umem"
        );
    }
}

impl Port for AfXdpPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, umem: &mut Umem, batch: &mut Batch) -> usize {
        self.check_umem(umem);
        self.reap(umem);
        self.refill(umem);
        let before = batch.len();
        let t = self.sock.rx.peek(batch.space() as u32);
        let n = t.len();
        for i in 0..n {
            let d = t.read(i);
            match umem.frame_from_desc(d.addr, d.len) {
                Some(f) => {
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += d.len as u64;
                    // Cannot fail: peeked at most `space` entries.
                    let _ = batch.push(f);
                }
                None => self.stats.errors += 1,
            }
        }
        t.release();
        if n == 0 && self.sock.fill.needs_wakeup() {
            socket::kick_rx(self.sock.fd.as_raw_fd());
        }
        batch.len() - before
    }

    fn tx_burst(&mut self, umem: &mut Umem, batch: &mut Batch) -> usize {
        self.check_umem(umem);
        self.reap(umem);
        let mut t = self.sock.tx.reserve(batch.len() as u32);
        let n = t.len();
        for i in 0..n {
            let (addr, len) = umem.to_kernel(batch.take(i as usize));
            self.stats.tx_bytes += len as u64;
            t.write(
                i,
                libc::xdp_desc {
                    addr,
                    len,
                    options: 0,
                },
            );
        }
        t.commit();
        batch.consume_front(n as usize);
        self.stats.tx_packets += n as u64;
        self.stats.tx_busy += batch.len() as u64;
        self.kick(umem);
        n as usize
    }

    fn stats(&self) -> PortStats {
        let mut s = self.stats;
        if let Ok((k, len)) = socket::getsockopt::<libc::xdp_statistics>(
            self.sock.fd.as_raw_fd(),
            libc::XDP_STATISTICS,
        ) {
            s.rx_dropped += k.rx_dropped;
            s.errors += k.rx_invalid_descs + k.tx_invalid_descs;
            if len >= std::mem::size_of::<libc::xdp_statistics>() {
                s.rx_dropped += k.rx_ring_full;
                s.rx_ring_full += k.rx_ring_full;
                s.rx_fill_empty += k.rx_fill_ring_empty_descs;
            }
        }
        s
    }
}

impl AfXdpPort {
    /// Push posted TX descriptors into the kernel. In copy mode each
    /// `sendto` moves at most 32 frames, so kick until the ring drains (or
    /// the kernel pushes back); in zero-copy mode only when asked to.
    #[inline]
    fn kick(&mut self, umem: &mut Umem) {
        let fd = self.sock.fd.as_raw_fd();
        if self.sock.zero_copy {
            if self.sock.tx.needs_wakeup() {
                let _ = socket::kick_tx(fd);
            }
            return;
        }
        for _ in 0..(super::BURST / 32 + 2) {
            if self.sock.tx.outstanding() == 0 {
                break;
            }
            match socket::kick_tx(fd) {
                Ok(()) => {}
                Err(e) => match e.raw_os_error() {
                    // More to send (EAGAIN) or completion ring full (EBUSY,
                    // ENOBUFS): reap and go on.
                    Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) => {}
                    // Link down and the like: frames stay in the ring.
                    _ => {
                        self.stats.errors += 1;
                        break;
                    }
                },
            }
            self.reap(umem);
        }
    }
}

impl AsFd for AfXdpPort {
    /// The socket, for `poll(2)` when a worker idles.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.fd.as_fd()
    }
}

impl Drop for AfXdpPort {
    fn drop(&mut self) {
        // Stop the program steering frames here. Chunks still in this
        // socket's rings stay with the kernel until the UMEM is dropped.
        let _ = bpf::xskmap_clear(&self.prog.map, self.queue);
    }
}
