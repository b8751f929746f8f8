//! A forwarding worker: one thread, pinned to one core, owning one queue
//! set. Its loop, burst by burst:
//!
//! ```text
//!  rx_burst (each owned port) ─► owner check (several workers) ──other worker──► handoff ring
//!                                                               │ mine
//!                                                               ▼
//!          Engine::process on the rx frame, in place (extract ─► megaflow/EMC cache or xlate ─► Set/Ct/recirc)
//!                                                               │ output(port)
//!                                                               ▼
//!                          port owned here? ──yes──► per-port tx Batch ──► tx_burst at end of burst
//!                                           └─no───► handoff ring (transmit) to the owner
//! ```
//!
//! The walk's last use of the packet, when it is an output to a port of
//! this worker ([`Sink::output_last`]), puts the received frame itself on
//! that port's tx batch: forwarding A -> B moves the descriptor, no byte
//! is copied in userspace. Every other output (an output followed by more
//! actions, a second output, a handoff) is a copy into a fresh frame or
//! ring slot, taken when the engine emits it.
//!
//! # What a worker owns
//! Its [`Umem`], its ports (AF_XDP sockets for its queues, the TAP or memory
//! ports assigned to it), one tx [`Batch`] per owned port, its flow cache
//! ([`MegaflowCache`]), its conntrack [`Shard`], its counters and a packet
//! buffer. All `&mut`, never shared.
//!
//! # What it shares, and how
//! * The pipeline, through [`PipelineCell`]: the control thread stores a new
//!   `Arc<Pipeline>` (lock-free, `arc-swap`) and then bumps the generation
//!   (`Release`). Between bursts the worker loads the generation
//!   (`Acquire`, one load per burst); when it changed, it loads the new
//!   pipeline and flushes its cache. No lock and no reference count is
//!   touched per packet.
//! * Conntrack ownership across workers ([`conntrack::Directory`] and a
//!   [`HandoffMesh`]), only with more than one worker. The NIC (or veth)
//!   spreads packets over queues by a hash of the wire tuple, so a reply may
//!   arrive on a worker that does not own its connection. Before processing
//!   an IPv4 packet, the worker asks the directory who owns its tuple; if
//!   another worker does, the packet's bytes are pushed into the SPSC ring
//!   from this worker to the owner (`Handoff::Process`) and the owner runs
//!   it through its own shard, as if received on the same OpenFlow port. A
//!   tuple nobody owns is a new connection: it stays here and this worker
//!   becomes its owner (its shard publishes both tuples of every connection
//!   it commits, in every zone). Before deciding "new", the tuple the first
//!   `ct()` will see after the pipeline's own header rewrites is looked up
//!   as well ([`Worker`]'s `owner_probe`: cached actions applied to a copy,
//!   no conntrack state touched). SNAT ports are sliced per worker
//!   (`port % n == worker`) so translations never collide.
//! * Outputs to a port this worker does not own (the TAP lives on worker 0;
//!   an interface with fewer queues than workers) go through the same rings
//!   as `Handoff::Transmit`; the owner puts them on its tx batch.
//! * Counters: on request (an atomic sequence number bumped by the control
//!   thread), the worker copies a [`WorkerStats`] snapshot into a mutex
//!   between bursts; the control thread never touches the live counters.
//! * Conntrack commands (dump, flush, flush these tuples): the same
//!   mailbox shape, [`WorkerControl::conntrack`]. The control thread puts
//!   one [`CtCommand`] in a slot and bumps a sequence number; the worker
//!   sees the number change between bursts (one `Acquire` load), runs the
//!   command on its own shard and posts a [`CtReply`]. The slot's mutex is
//!   only taken by the worker when a command is pending, never per packet.
//! * Learned flows ([`crate::pipeline::learn`]): the engine leaves its
//!   learn events in its scratch outbox; after the burst the worker pushes
//!   them into the cell's bounded lock-free queue (counted when full) and
//!   unparks the learner thread, which applies them and publishes a new
//!   generation. Cold path only: a cache hit reports at most every 500 ms.
//! * Stop: an `AtomicBool`; the worker finishes its burst, flushes its tx
//!   batches and handoff rings once more, and returns its final counters.
//!
//! # Cost
//! Per packet: the engine, run on the received frame's bytes in place
//! ([`Umem::lend`]); the single output of a forwarded packet transmits that
//! frame (counted in `tx_in_place`); only extra outputs are copied into
//! fresh frames. With several workers the owner check first copies the
//! packet into the worker's buffer (the probe reads it there). Nothing
//! allocates in steady state (cache hits, established connections):
//! batches, rings and buffers are sized at start (`tests/worker_alloc.rs`
//! counts zero allocations over 128 k packets).
//!
//! Measured (release, the shared 2-core VM, veth AF_XDP copy mode, the
//! established NodePort ETP Cluster chain, `scripts/bench.sh`): a flood
//! delivers 0.4-0.5 Mpps against 0.65-0.9 Mpps for the bare AF_XDP
//! forwarder in the same runs. A profile of the worker's core during a
//! flood (`perf record -C 1`): about half its time is the kernel's
//! copy-mode TX and the sink namespace's receive path (veth delivers on
//! the sender's core), which the bare forwarder pays too; the other half is
//! the pipeline (conntrack lookups, the engine, extract); port I/O in
//! userspace (rx/tx bursts, the TAP poll) is under 2%.
//!
//! # Stalls
//! The worker counts the time between the starts of consecutive polls
//! (`max_gap_ns`, `gaps`; `flowpath stats`). Frames wait in the AF_XDP RX
//! ring while the worker does not poll, so a gap longer than ring size /
//! packet rate overflows it (the port's `rx_ring_full`). On a core shared
//! with other threads a SCHED_FIFO worker that never sleeps is stopped by
//! the kernel's fair deadline server for ~50 ms about once a second;
//! [`WorkerConfig::yield_for`] hands that time out in small slices instead.
//!
//! Memory of the handoff mesh: `workers²` rings of `capacity` slots of
//! [`HANDOFF_MAX`] bytes each, preallocated (2 workers x 256 slots: 1.8 MB;
//! many workers want smaller rings, or frame indices instead of copies).

use std::any::Any;
use std::fs::File;
use std::io::BufWriter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use conntrack::{CtCounters, Directory, HandoffMesh, Shard};
use crossbeam_queue::ArrayQueue;

use crate::cache::{CacheStats, MegaflowCache};
use crate::extract;
use crate::io::{BURST, Batch, Frame, Port, PortStats, Umem};
use crate::key::FlowKey;
use crate::pipeline::Pipeline;
use crate::pipeline::classifier::FlowIdx;
use crate::pipeline::exec::{self, Engine, ExecStats, Scratch, Sink};
use crate::pipeline::learn::{self, LearnEvent, LearnStore};
use crate::pipeline::stats::{FlowStat, FlowTimes, RuleReport, RuleStats};
use crate::pipeline::xlate::{DpAction, xlate};

/// Table slots a conntrack dump page covers: at most ~16k entries built
/// between two bursts (well under a millisecond), against a receive ring
/// that holds ~2 ms of traffic at 1 Mpps.
pub const DUMP_PAGE_SLOTS: u32 = 16_384;

/// Largest frame a handoff carries (a 2048-byte chunk minus its headroom).
pub const HANDOFF_MAX: usize = 2048 - 256;

/// Conntrack clock offset, so that nothing looks expired at start.
const CLOCK_EPOCH_MS: u64 = 1_000_000;

/// The pipeline the workers run, swapped whole by the control thread, and
/// the learned flows ([`crate::pipeline::learn`]).
///
/// Writers: the control thread ([`PipelineCell::publish`]) and the learner
/// thread ([`PipelineCell::spawn_learner`], which publishes a generation
/// with new learned flows); both hold the learn store's mutex while they
/// publish, so neither loses the other's change. Readers: every worker,
/// once per burst ([`PipelineCell::generation`], `Acquire`), and on a
/// change [`PipelineCell::load`].
///
/// Learn events go from the workers to the learner through a bounded
/// lock-free queue ([`PipelineCell::post_learn`], after a burst that had
/// any); a full queue drops the event and counts it. Workers never take
/// the store's mutex.
#[derive(Debug)]
pub struct PipelineCell {
    generation: AtomicU64,
    current: ArcSwap<Pipeline>,
    learn_queue: ArrayQueue<LearnEvent>,
    learn_dropped: AtomicU64,
    store: Mutex<LearnStore>,
    learner: OnceLock<std::thread::Thread>,
    learner_stop: AtomicBool,
    clock: Instant,
    /// When each static flow was added and modified (control side only).
    times: Mutex<FlowTimes>,
}

/// Learn events the queue holds before it drops.
const LEARN_QUEUE: usize = 8192;

/// How often the learner wakes without events, to expire learned flows.
const LEARN_SWEEP: Duration = Duration::from_millis(100);

impl PipelineCell {
    /// A cell holding `p` as generation 1.
    pub fn new(p: Pipeline) -> PipelineCell {
        let times = Mutex::new(FlowTimes::new(&p, 0));
        PipelineCell {
            generation: AtomicU64::new(1),
            current: ArcSwap::from_pointee(p),
            learn_queue: ArrayQueue::new(LEARN_QUEUE),
            learn_dropped: AtomicU64::new(0),
            store: Mutex::new(LearnStore::new()),
            learner: OnceLock::new(),
            learner_stop: AtomicBool::new(false),
            clock: Instant::now(),
            times,
        }
    }

    /// Publish a new pipeline; returns its generation. Workers pick it up
    /// between bursts and flush their flow caches. The learned flows carry
    /// over, except those of a `delete_learned` learn that no flow of `p`
    /// holds any more.
    pub fn publish(&self, p: Pipeline) -> u64 {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load();
        let before = learn::delete_learned_keys(old.flows.iter());
        let after = learn::delete_learned_keys(p.flows.iter());
        let dead: Vec<(u64, u8)> = before.into_iter().filter(|k| !after.contains(k)).collect();
        store.delete_cookies(&dead);
        let p = p.with_learned(store.snapshot());
        {
            let mut t = self.times.lock().unwrap_or_else(|e| e.into_inner());
            *t = t.rebase(&p, self.learn_now());
        }
        self.store_generation(p)
    }

    /// Restart the duration of the static flows `added` picks (an
    /// OpenFlow add over an existing flow), on the current pipeline.
    pub fn restart_flows(&self, added: impl FnMut(&crate::pipeline::ir::Flow) -> bool) {
        let mut t = self.times.lock().unwrap_or_else(|e| e.into_inner());
        t.restart(self.learn_now(), added);
    }

    /// The static flows of `p` whose idle or hard timeout passed, given
    /// the workers' per-flow `counts` ([`crate::pipeline::stats::merge`]).
    pub fn expired_flows(
        &self,
        p: &Pipeline,
        counts: &std::collections::HashMap<FlowIdx, (FlowStat, Option<u64>)>,
    ) -> Vec<FlowIdx> {
        let t = self.times.lock().unwrap_or_else(|e| e.into_inner());
        t.expired(p, counts, self.learn_now())
    }

    /// When each static flow was added and modified, on the learner clock
    /// (a copy: the control thread reads it for a whole dump).
    pub fn flow_times(&self) -> FlowTimes {
        self.times.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn store_generation(&self, p: Pipeline) -> u64 {
        self.current.store(Arc::new(p));
        // Release: a worker that sees the new generation also sees the
        // pipeline stored above.
        self.generation.fetch_add(1, Ordering::Release) + 1
    }

    /// The learner's clock, milliseconds since the cell was made (learned
    /// flows' timestamps are on it).
    pub fn learn_now(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Queue a learn event for the learner; false (and counted) when the
    /// queue is full.
    pub fn post_learn(&self, ev: LearnEvent) -> bool {
        match self.learn_queue.push(ev) {
            Ok(()) => true,
            Err(_) => {
                self.learn_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Wake the learner (after posting).
    pub fn wake_learner(&self) {
        if let Some(t) = self.learner.get() {
            t.unpark();
        }
    }

    /// Learn events dropped because the queue was full.
    pub fn learn_dropped(&self) -> u64 {
        self.learn_dropped.load(Ordering::Relaxed)
    }

    /// Apply the queued learn events and expire learned flows, at the
    /// learner clock; publish a new generation when the learned flows
    /// changed. Returns whether it published. The learner thread calls
    /// this; tests may call it directly.
    pub fn run_learner(&self) -> bool {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.learn_now();
        let mut changed = false;
        while let Some(ev) = self.learn_queue.pop() {
            changed |= store.apply(&ev, now);
        }
        changed |= store.expire(now) > 0;
        if changed {
            let p = self.current.load().with_learned(store.snapshot());
            self.store_generation(p);
        }
        changed
    }

    /// Start the learner thread: it applies learn events as workers post
    /// them and sweeps timeouts every 100 ms, until
    /// [`PipelineCell::stop_learner`]. It runs on `cpus` (empty: anywhere).
    pub fn spawn_learner(
        self: &Arc<Self>,
        cpus: Vec<usize>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let cell = self.clone();
        let h = std::thread::Builder::new()
            .name("fp-learn".into())
            .spawn(move || {
                crate::io::affinity::keep_current_thread_on(&cpus);
                while !cell.learner_stop.load(Ordering::Acquire) {
                    cell.run_learner();
                    std::thread::park_timeout(LEARN_SWEEP);
                }
            })?;
        let _ = self.learner.set(h.thread().clone());
        Ok(h)
    }

    /// Remove the learned flows `keep` rejects and, when any went, publish
    /// a new generation. Returns how many went.
    pub fn retain_learned(&self, keep: impl FnMut(&crate::pipeline::ir::Flow) -> bool) -> usize {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let n = store.retain(keep);
        if n > 0 {
            let p = self.current.load().with_learned(store.snapshot());
            self.store_generation(p);
        }
        n
    }

    /// Every learned flow's (id, created, modified, used) on the learner
    /// clock, current (control side: takes the store's mutex).
    pub fn learned_times(&self) -> Vec<(u64, u64, u64, u64)> {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).times()
    }

    /// Ask the learner thread to stop.
    pub fn stop_learner(&self) {
        self.learner_stop.store(true, Ordering::Release);
        self.wake_learner();
    }

    /// The current generation.
    #[inline]
    pub fn generation(&self) -> u64 {
        // Acquire: pairs with `publish`.
        self.generation.load(Ordering::Acquire)
    }

    /// The current pipeline.
    pub fn load(&self) -> Arc<Pipeline> {
        self.current.load_full()
    }
}

/// What a handoff asks the receiving worker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffOp {
    /// Run the packet through the pipeline as received on OpenFlow port
    /// `port` (the receiver owns its connection).
    Process,
    /// Transmit the packet on OpenFlow port `port` (the receiver owns it).
    Transmit,
}

/// A packet crossing from one worker to another: copied by value into the
/// ring's preallocated slot (the frame stays in the sender's UMEM).
#[derive(Clone)]
pub struct Handoff {
    /// What to do with it.
    pub op: HandoffOp,
    /// OpenFlow port: in_port for `Process`, out port for `Transmit`.
    pub port: u32,
    /// Bytes used in `data`.
    pub len: u16,
    /// The frame.
    pub data: [u8; HANDOFF_MAX],
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("op", &self.op)
            .field("port", &self.port)
            .field("len", &self.len)
            .finish()
    }
}

/// The cross-worker pieces: who owns which connection, and the rings.
#[derive(Debug, Clone)]
pub struct Cross {
    /// Ownership directory (each worker's shard is attached to it).
    pub directory: Arc<Directory>,
    /// `ring(from, to)` for every ordered pair of workers.
    pub mesh: Arc<HandoffMesh<Handoff>>,
}

/// Where an OpenFlow port's transmissions go, from one worker's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// One of this worker's ports (index into its port list).
    Local(usize),
    /// Owned by another worker: hand the frame over.
    Worker(usize),
}

/// Anything a worker can poll: a [`Port`] that can be moved to the worker
/// thread and, for tests, reached again by its concrete type.
pub trait WorkerPort: Port + Send + 'static {
    /// For downcasting (tests reach their memory ports this way).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Port + Send + 'static> WorkerPort for T {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// One port as a worker holds it.
pub struct OwnedPort {
    /// Configured name (the OpenFlow port's name).
    pub name: String,
    /// OpenFlow port number.
    pub ofport: u32,
    /// Queue served (0 for TAP and memory ports).
    pub queue: u32,
    /// The port.
    pub port: Box<dyn WorkerPort>,
    /// Capture of every frame received and transmitted here.
    pub pcap: Option<Capture>,
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's index (0-based).
    pub id: usize,
    /// Megaflow cache capacity.
    pub cache_capacity: usize,
    /// Chain cache capacity (0: off).
    pub chain_capacity: usize,
    /// Exact-match front cache on or off.
    pub emc: bool,
    /// Sleep this long after `idle_polls` empty polls in a row (zero: spin).
    pub idle_sleep: Duration,
    /// Empty polls before sleeping.
    pub idle_polls: u32,
    /// Cooperative yield (zero: never): after `YIELD_RATIO` times this long
    /// without sleeping, the worker sleeps this long. For a core shared
    /// with ordinary (SCHED_OTHER) threads while the worker runs with a
    /// real-time policy: since Linux 6.12 the fair deadline server then
    /// takes the core away for one ~50 ms block per second (5% of it) to
    /// run them, and a 50 ms gap overflows any RX ring at more than ~20
    /// kpps per 1024 slots. Handing out that 5% in slices of `yield_for`
    /// lets the starved threads run before the server has to step in.
    pub yield_for: Duration,
}

/// A worker with `yield_for` set sleeps that long after this many times
/// as long without sleeping: ~6% of the core, above the fair server's 5%.
pub const YIELD_RATIO: u32 = 16;

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: 0,
            cache_capacity: 65536,
            chain_capacity: 131_072,
            emc: true,
            idle_sleep: Duration::from_micros(50),
            idle_polls: 256,
            yield_for: Duration::ZERO,
        }
    }
}

/// Counters the worker keeps itself (the ports, engine, cache and
/// conntrack keep theirs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Polling iterations.
    pub polls: u64,
    /// Bursts that carried at least one packet.
    pub busy_polls: u64,
    /// Packets handed to another worker for processing (conntrack owner).
    pub handoff_process_out: u64,
    /// Packets received from another worker for processing.
    pub handoff_process_in: u64,
    /// Frames handed to another worker for transmission.
    pub handoff_tx_out: u64,
    /// Frames received from another worker for transmission.
    pub handoff_tx_in: u64,
    /// Of `handoff_process_out`: packets whose wire tuple nobody owns but
    /// whose first `ct()`, after the header rewrites the pipeline does
    /// before it, belongs to another worker's connection.
    pub handoff_rewritten: u64,
    /// Handoffs refused because the ring was full (dropped).
    pub handoff_full: u64,
    /// Outputs that sent the received frame itself (processed in place,
    /// the walk's last use of it), no copy.
    pub tx_in_place: u64,
    /// Outputs dropped: no free UMEM chunk for the copy.
    pub tx_no_frame: u64,
    /// Outputs dropped: frame longer than a chunk or a handoff slot.
    pub tx_too_long: u64,
    /// Outputs dropped: the port stayed busy after a retry.
    pub tx_busy_dropped: u64,
    /// Outputs to an OpenFlow port no worker owns.
    pub tx_no_route: u64,
    /// Pipeline generations picked up (cache flushes by reload).
    pub reloads: u64,
    /// Learn events posted to the learner (new flows, used learned flows).
    pub learn_events: u64,
    /// Learn events dropped: the learner's queue was full.
    pub learn_dropped: u64,
    /// Cooperative yields ([`WorkerConfig::yield_for`]).
    pub yields: u64,
    /// Longest time between the starts of two consecutive polls, in
    /// nanoseconds, the worker's own idle sleeps not counted (their
    /// overshoot is). A burst's processing is part of a gap; anything much
    /// longer than a burst (tens of microseconds) is the thread not
    /// running: preempted, or stuck in the kernel. While it lasts nobody
    /// empties the RX rings, so a gap longer than ring size / packet rate
    /// loses frames (`rx_ring_full`).
    pub max_gap_ns: u64,
    /// Poll gaps (as in `max_gap_ns`) by length: bucket `i` counts gaps
    /// shorter than [`GAP_BOUNDS_NS`]`[i]`, the last one the rest.
    pub gaps: [u64; GAP_BUCKETS],
}

/// Buckets of [`WorkerCounters::gaps`].
pub const GAP_BUCKETS: usize = 8;

/// Upper bounds (exclusive, ns) of the first `GAP_BUCKETS - 1` gap buckets:
/// 16 µs, 64 µs, 256 µs, 1 ms, 4 ms, 16 ms, 64 ms.
pub const GAP_BOUNDS_NS: [u64; GAP_BUCKETS - 1] = [
    16_000, 64_000, 256_000, 1_000_000, 4_000_000, 16_000_000, 64_000_000,
];

/// Labels of the gap buckets, for reports.
pub const GAP_LABELS: [&str; GAP_BUCKETS] = [
    "<16us", "<64us", "<256us", "<1ms", "<4ms", "<16ms", "<64ms", ">=64ms",
];

impl WorkerCounters {
    /// Count one poll gap of `ns` nanoseconds.
    #[inline]
    pub fn note_gap(&mut self, ns: u64) {
        self.max_gap_ns = self.max_gap_ns.max(ns);
        let i = GAP_BOUNDS_NS
            .iter()
            .position(|&b| ns < b)
            .unwrap_or(GAP_BUCKETS - 1);
        self.gaps[i] += 1;
    }
}

/// A port's counters, with where it is.
#[derive(Debug, Clone)]
pub struct PortCounters {
    /// Configured name.
    pub name: String,
    /// OpenFlow port.
    pub ofport: u32,
    /// Queue.
    pub queue: u32,
    /// The port's own counters.
    pub stats: PortStats,
}

/// A snapshot of everything one worker counts.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    /// Worker index.
    pub worker: usize,
    /// Pipeline generation in use.
    pub generation: u64,
    /// Per port and queue.
    pub ports: Vec<PortCounters>,
    /// Engine counters (rx/tx, passes, recirculations, drops by reason).
    pub exec: ExecStats,
    /// Flow cache hits and misses (a miss is an upcall to the translator).
    pub cache: CacheStats,
    /// Megaflows held.
    pub cache_entries: usize,
    /// Distinct megaflow masks.
    pub cache_masks: usize,
    /// Conntrack counters.
    pub ct: CtCounters,
    /// Live conntrack entries.
    pub ct_entries: usize,
    /// The worker's own counters.
    pub counters: WorkerCounters,
}

/// The control thread's handle on one worker: stop flag and counter
/// snapshots. Written by the control thread: `stop`, `stats_req`. Written
/// by the worker: `stats_done`, `snapshot` (locked only to answer a
/// request, never per packet).
#[derive(Debug, Default)]
pub struct WorkerControl {
    stop: AtomicBool,
    stats_req: AtomicU64,
    stats_done: AtomicU64,
    snapshot: Mutex<WorkerStats>,
    /// Serializes conntrack commands from several control threads.
    ct_client: Mutex<()>,
    ct_req: AtomicU64,
    ct_done: AtomicU64,
    ct_slot: Mutex<(Option<CtCommand>, Option<CtReply>)>,
}

/// A conntrack command run by a worker on its own shard, between bursts.
#[derive(Debug, Clone)]
pub enum CtCommand {
    /// One page of the connections (of one zone): those in
    /// [`DUMP_PAGE_SLOTS`] table slots from slot `from` on (see
    /// [`WorkerControl::dump_conntrack`], which takes them all).
    Dump {
        /// Zone, or every zone.
        zone: Option<u16>,
        /// First table slot of the page.
        from: u32,
    },
    /// Delete every connection (of one zone) in [`DUMP_PAGE_SLOTS`] table
    /// slots from slot `from` on (see [`WorkerControl::flush_conntrack`]).
    Flush {
        /// Zone, or every zone.
        zone: Option<u16>,
        /// First table slot of the page.
        from: u32,
    },
    /// Delete these connections: (zone, original or reply tuple).
    FlushTuples(Vec<(u16, conntrack::Tuple)>),
    /// Not conntrack, but the same mailbox: the worker's per-flow counters
    /// ([`crate::pipeline::stats`]).
    FlowStats,
    /// Not conntrack either: a copy of the worker's megaflow cache
    /// (`flowpath dump-megaflows`).
    DumpMegaflows,
}

/// A worker's answer to a [`CtCommand`].
#[derive(Debug, Clone)]
pub enum CtReply {
    /// A page of the dump, unsorted, and where the next page starts
    /// (`None`: that was the last).
    Dump {
        /// The live connections of the page.
        entries: Vec<conntrack::ConnDump>,
        /// First slot of the next page.
        next: Option<u32>,
    },
    /// Connections deleted, and where the next page of a paged flush
    /// starts (`None`: done).
    Flushed(usize, Option<u32>),
    /// Per-flow counters.
    FlowStats(Box<RuleReport>),
    /// The megaflows, and the worker's clock (ms) to age their last use by.
    Megaflows {
        /// The worker's conntrack clock when it answered.
        now_ms: u64,
        /// Every megaflow of its cache.
        flows: Vec<crate::cache::MegaflowDump>,
    },
}

impl WorkerControl {
    /// Ask the worker to finish its burst, flush and return.
    pub fn stop(&self) {
        // Release: nothing to publish with it; Release/Acquire keeps it
        // simple to reason about and costs one load per burst.
        self.stop.store(true, Ordering::Release);
    }

    /// Whether stop was asked.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Ask for a snapshot and wait (up to `timeout`) for the worker to
    /// publish it. `None` if the worker did not answer (stopped or stuck).
    pub fn snapshot(&self, timeout: Duration) -> Option<WorkerStats> {
        // AcqRel: the request number orders with the worker's answer.
        let want = self.stats_req.fetch_add(1, Ordering::AcqRel) + 1;
        let deadline = Instant::now() + timeout;
        while self.stats_done.load(Ordering::Acquire) < want {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Some(self.snapshot.lock().ok()?.clone())
    }

    /// Run `cmd` on the worker's conntrack shard between its bursts and
    /// wait (up to `timeout`) for the reply. `None` if the worker did not
    /// answer (stopped or stuck); a late answer is discarded by the next
    /// command.
    pub fn conntrack(&self, cmd: CtCommand, timeout: Duration) -> Option<CtReply> {
        let _client = self.ct_client.lock().ok()?;
        {
            let mut slot = self.ct_slot.lock().ok()?;
            *slot = (Some(cmd), None);
        }
        // AcqRel: the command written above is visible to the worker that
        // sees this number.
        let want = self.ct_req.fetch_add(1, Ordering::AcqRel) + 1;
        let deadline = Instant::now() + timeout;
        while self.ct_done.load(Ordering::Acquire) < want {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        self.ct_slot.lock().ok()?.1.take()
    }

    /// Run a paged command to the end: `cmd(from)` builds the command for
    /// the page at slot `from`, `page` takes its reply and says where the
    /// next page starts (`None`: done; an unexpected reply ends it with
    /// `None`). `timeout` applies to each page.
    fn paged(
        &self,
        timeout: Duration,
        cmd: impl Fn(u32) -> CtCommand,
        mut page: impl FnMut(CtReply) -> Option<Option<u32>>,
    ) -> Option<()> {
        let mut from = 0;
        loop {
            match page(self.conntrack(cmd(from), timeout)?)? {
                Some(next) => from = next,
                None => return Some(()),
            }
        }
    }

    /// Every live connection of the worker's shard (of `zone`), unsorted,
    /// taken a page at a time so that the worker never stops forwarding
    /// for the whole table; `timeout` applies to each page. `None` if the
    /// worker did not answer.
    pub fn dump_conntrack(
        &self,
        zone: Option<u16>,
        timeout: Duration,
    ) -> Option<Vec<conntrack::ConnDump>> {
        let mut all = Vec::new();
        self.paged(
            timeout,
            |from| CtCommand::Dump { zone, from },
            |r| match r {
                CtReply::Dump { entries, next } => {
                    all.extend(entries);
                    Some(next)
                }
                _ => None,
            },
        )?;
        Some(all)
    }

    /// Delete every connection of the worker's shard (of `zone`), a page
    /// at a time as [`WorkerControl::dump_conntrack`]; how many. `None` if
    /// the worker did not answer.
    pub fn flush_conntrack(&self, zone: Option<u16>, timeout: Duration) -> Option<usize> {
        let mut n = 0;
        self.paged(
            timeout,
            |from| CtCommand::Flush { zone, from },
            |r| match r {
                CtReply::Flushed(k, next) => {
                    n += k;
                    Some(next)
                }
                _ => None,
            },
        )?;
        Some(n)
    }
}

/// One forwarding worker. Build it with [`Worker::new`], move it to its
/// thread, call [`Worker::run`] (or [`Worker::poll_once`] in tests).
pub struct Worker {
    cfg: WorkerConfig,
    umem: Umem,
    ports: Vec<OwnedPort>,
    txq: Vec<Batch>,
    routes: Vec<(u32, Route)>,
    ofports: Vec<u32>,
    cell: Arc<PipelineCell>,
    pipeline: Arc<Pipeline>,
    generation: u64,
    ct: Shard,
    cache: MegaflowCache,
    /// Per-flow totals of earlier pipeline generations (the cache holds
    /// the current one's).
    rule_stats: RuleStats,
    exec: ExecStats,
    scratch: Scratch,
    rx: Batch,
    buf: Box<[u8]>,
    probe: Box<[u8]>,
    cross: Option<Cross>,
    ctl: Arc<WorkerControl>,
    counters: WorkerCounters,
    clock: Instant,
    stats_seen: u64,
    ct_seen: u64,
    last_sweep_ms: u64,
    /// Start of the previous poll (ns on `clock`), for the gap counters.
    last_poll_ns: u64,
    /// Idle sleep asked for since the previous poll (ns), not a gap.
    slept_ns: u64,
}

impl Worker {
    /// A worker over `ports` (all opened on `umem`), routing outputs by
    /// `routes` (every OpenFlow port that exists, and who transmits on it),
    /// with its conntrack shard (already attached to `cross.directory` as
    /// worker `cfg.id` when there are several workers).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: WorkerConfig,
        umem: Umem,
        ports: Vec<OwnedPort>,
        routes: Vec<(u32, Route)>,
        cell: Arc<PipelineCell>,
        ct: Shard,
        cross: Option<Cross>,
        ctl: Arc<WorkerControl>,
    ) -> Worker {
        let pipeline = cell.load();
        let generation = cell.generation();
        let mut cache =
            MegaflowCache::new(cfg.cache_capacity, cfg.emc).with_chain_capacity(cfg.chain_capacity);
        cache.sync_generation(generation);
        // Starting empty is not a flush.
        cache.stats.flushes = 0;
        let buf_len = umem.max_frame_len().max(HANDOFF_MAX);
        Worker {
            rule_stats: RuleStats::new(&pipeline),
            txq: ports.iter().map(|_| Batch::new()).collect(),
            ofports: routes.iter().map(|(p, _)| *p).collect(),
            routes,
            ports,
            umem,
            cell,
            pipeline,
            generation,
            ct,
            cache,
            exec: ExecStats::default(),
            scratch: Scratch::default(),
            rx: Batch::new(),
            buf: vec![0u8; buf_len].into_boxed_slice(),
            probe: vec![0u8; buf_len].into_boxed_slice(),
            cross,
            ctl,
            counters: WorkerCounters::default(),
            clock: Instant::now(),
            stats_seen: 0,
            ct_seen: 0,
            last_sweep_ms: 0,
            last_poll_ns: 0,
            slept_ns: 0,
            cfg,
        }
    }

    /// This worker's ports (tests reach memory ports through
    /// [`WorkerPort::as_any_mut`]).
    pub fn ports_mut(&mut self) -> &mut [OwnedPort] {
        &mut self.ports
    }

    /// Sleep on purpose (idle, yield): not a poll gap.
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
        self.slept_ns += d.as_nanos() as u64;
    }

    /// Conntrack clock now.
    fn now_ms(&self) -> u64 {
        CLOCK_EPOCH_MS + self.clock.elapsed().as_millis() as u64
    }

    /// Poll until stopped; returns the final counters. Drains on stop: the
    /// burst in hand is finished and every tx batch flushed.
    pub fn run(mut self) -> WorkerStats {
        let mut idle = 0u32;
        let yield_ns = self.cfg.yield_for.as_nanos() as u64;
        let run_ns = yield_ns * u64::from(YIELD_RATIO);
        // Start of the current stretch without a sleep (ns on `clock`).
        let mut awake_since = 0u64;
        while !self.ctl.stopping() {
            let n = self.poll_once();
            if n == 0 {
                idle += 1;
                if idle >= self.cfg.idle_polls && !self.cfg.idle_sleep.is_zero() {
                    self.sleep(self.cfg.idle_sleep);
                    awake_since = self.last_poll_ns;
                }
            } else {
                idle = 0;
            }
            if yield_ns != 0 && self.last_poll_ns.saturating_sub(awake_since) >= run_ns {
                self.sleep(self.cfg.yield_for);
                self.counters.yields += 1;
                awake_since = self.last_poll_ns;
            }
            self.housekeeping();
        }
        // Drain: what other workers handed us, then our tx batches (a few
        // rounds, so copy-mode AF_XDP completions come back).
        for _ in 0..4 {
            self.drain_handoffs();
            self.flush_tx();
        }
        self.finish_pcaps();
        let s = self.stats();
        self.answer_stats_request(&s);
        s
    }

    /// One iteration: pick up a new pipeline, receive a burst from every
    /// port, process it, take what other workers handed over, transmit.
    /// Returns the packets received (from ports and handoffs).
    pub fn poll_once(&mut self) -> usize {
        let g = self.cell.generation();
        if g != self.generation {
            self.pick_up(g);
        }
        self.counters.polls += 1;
        // One clock read per poll: the gap counters and conntrack's clock.
        let t = self.clock.elapsed().as_nanos() as u64;
        if self.last_poll_ns != 0 {
            let gap = t
                .saturating_sub(self.last_poll_ns)
                .saturating_sub(self.slept_ns);
            self.counters.note_gap(gap);
        }
        self.last_poll_ns = t.max(1);
        self.slept_ns = 0;
        let now = CLOCK_EPOCH_MS + t / 1_000_000;
        let mut total = 0;
        for i in 0..self.ports.len() {
            let n = self.ports[i].port.rx_burst(&mut self.umem, &mut self.rx);
            if n == 0 {
                continue;
            }
            total += n;
            let in_port = self.ports[i].ofport;
            // `pop` takes from the back: reverse once for arrival order.
            self.rx.frames_mut().reverse();
            while let Some(frame) = self.rx.pop() {
                if let Some(w) = self.ports[i].pcap.as_mut() {
                    w.write(self.umem.data(&frame));
                }
                self.handle(in_port, frame, now);
            }
        }
        total += self.drain_handoffs();
        self.flush_tx();
        if !self.scratch.learn_events.is_empty() {
            self.post_learns();
        }
        if total > 0 {
            self.counters.busy_polls += 1;
        }
        total
    }

    /// Hand this burst's learn events to the learner and wake it.
    #[cold]
    fn post_learns(&mut self) {
        for ev in self.scratch.learn_events.drain(..) {
            if self.cell.post_learn(ev) {
                self.counters.learn_events += 1;
            } else {
                self.counters.learn_dropped += 1;
            }
        }
        self.cell.wake_learner();
    }

    fn pick_up(&mut self, g: u64) {
        // Per-flow counts are keyed by the old pipeline's flow indices:
        // take them before the cache drops its entries, then re-key them.
        let counts = self.cache.take_rule_counts();
        self.rule_stats.add_indexed(&self.pipeline, counts);
        self.pipeline = self.cell.load();
        self.rule_stats.rebase(&self.pipeline);
        self.generation = g;
        self.cache.sync_generation(g);
        self.counters.reloads += 1;
    }

    /// Run the received `frame` (from `in_port`): hand it to its conntrack
    /// owner, or process it here, in place.
    fn handle(&mut self, in_port: u32, frame: Frame, now: u64) {
        if self.cross.is_some() {
            let me = self.cfg.id;
            // The probe reads a copy (several workers only: the owner check
            // needs the bytes while the worker's tables are borrowed).
            let len = frame.len().min(self.buf.len());
            self.buf[..len].copy_from_slice(&self.umem.data(&frame)[..len]);
            if let Some((owner, rewritten)) = self.owner_probe(in_port, len)
                && owner != me
            {
                self.umem.free(frame);
                let cross = self.cross.as_ref().expect("checked");
                let ring = cross.mesh.ring(me, owner);
                if push_handoff(ring, HandoffOp::Process, in_port, &self.buf[..len]) {
                    self.counters.handoff_process_out += 1;
                    self.counters.handoff_rewritten += u64::from(rewritten);
                    self.ct.note_handoff(true);
                } else {
                    self.counters.handoff_full += 1;
                }
                return;
            }
        }
        self.process_frame(in_port, frame, now);
    }

    /// Run the pipeline on `frame`'s bytes where they are (no copy). When
    /// the walk's last use of the packet is an output to a port of this
    /// worker, that output takes the frame itself ([`Sink::output_last`]);
    /// other outputs are copies into fresh frames. Otherwise the frame goes
    /// back to the free list.
    fn process_frame(&mut self, in_port: u32, frame: Frame, now: u64) {
        let mut take = None;
        let (frame, ()) = self.umem.lend(frame, |pkt, umem| {
            let mut sink = TxSink {
                me: self.cfg.id,
                umem,
                ports: &mut self.ports,
                txq: &mut self.txq,
                routes: &self.routes,
                cross: self.cross.as_ref(),
                counters: &mut self.counters,
                in_place: (pkt.as_ptr(), pkt.len()),
                take: &mut take,
            };
            let mut eng = Engine {
                pipeline: &self.pipeline,
                ports: &self.ofports[..],
                ct: &mut self.ct,
                now_ms: now,
                stats: &mut self.exec,
                cache: Some(&mut self.cache),
                scratch: &mut self.scratch,
            };
            eng.process(pkt, in_port, &mut sink, None);
            // The contract `output_last` relies on: nothing changes the
            // bytes after it, so the frame sent is what the walk output.
            debug_assert!(
                take.is_none_or(|t: Taken| t.digest == exec::digest(pkt)),
                "the packet's bytes changed after output_last"
            );
        });
        match take.map(|t| t.port) {
            Some(i) => {
                self.counters.tx_in_place += 1;
                enqueue(
                    &mut self.umem,
                    &mut self.ports[i],
                    &mut self.txq[i],
                    &mut self.counters,
                    frame,
                );
            }
            None => self.umem.free(frame),
        }
    }

    /// Which worker owns the connection of the packet in `self.buf[..len]`
    /// (and whether that was found only after the pipeline's rewrites).
    ///
    /// The wire tuple is looked up first. A pipeline may rewrite headers
    /// before its first `ct()` (the seeds' local hostNetwork endpoint: the
    /// host's reply to the virtual IP is turned back to the gateway IP
    /// before conntrack), so when nobody owns the wire tuple, the first
    /// pass's datapath actions (from the flow cache, as the engine will use
    /// them) are applied to a copy up to the first `ct()`, and the tuple
    /// conntrack would see there is looked up. No conntrack state is
    /// touched. `None`: a new connection (this worker will own it).
    #[cold]
    fn owner_probe(&mut self, in_port: u32, len: usize) -> Option<(usize, bool)> {
        let cross = self.cross.as_ref()?;
        let me = self.cfg.id;
        let mut key = FlowKey::ZERO;
        let layout = extract::extract(&self.buf[..len], in_port, &mut key).ok()?;
        if !layout.is_ipv4() {
            return None;
        }
        let cp = extract::ct_packet(&self.buf[..len], &layout);
        if let Some(o) = cross.directory.owner_of(&cp, me) {
            return Some((o, false));
        }
        // The probe's cache lookup is bookkeeping, not a packet: keep the
        // hit/miss counters for the engine's own lookup.
        let counted = self.cache.stats;
        let idx = match self.cache.lookup_idx(&key) {
            Some(i) => i,
            None => self.cache.insert(
                &key,
                xlate(&self.pipeline, &self.ofports[..], &key, 0, None),
            ),
        };
        self.cache.stats.emc_hits = counted.emc_hits;
        self.cache.stats.megaflow_hits = counted.megaflow_hits;
        self.cache.stats.misses = counted.misses;
        let mut rewritten = false;
        for a in self.cache.entry(idx).actions.iter() {
            match a {
                DpAction::Set { from, to } => {
                    if !rewritten {
                        self.probe[..len].copy_from_slice(&self.buf[..len]);
                        rewritten = true;
                    }
                    extract::commit(&mut self.probe[..len], &layout, from, to);
                }
                DpAction::Ct { .. } => {
                    if !rewritten {
                        return None;
                    }
                    let cp = extract::ct_packet(&self.probe[..len], &layout);
                    return cross.directory.owner_of(&cp, me).map(|o| (o, true));
                }
                _ => {}
            }
        }
        None
    }

    /// Run the pipeline on the packet in `self.buf[..len]` (a handoff from
    /// another worker); every output is a copy.
    fn process(&mut self, in_port: u32, len: usize, now: u64) {
        let mut take = None;
        let mut sink = TxSink {
            me: self.cfg.id,
            umem: &mut self.umem,
            ports: &mut self.ports,
            txq: &mut self.txq,
            routes: &self.routes,
            cross: self.cross.as_ref(),
            counters: &mut self.counters,
            in_place: (std::ptr::null(), 0),
            take: &mut take,
        };
        let mut eng = Engine {
            pipeline: &self.pipeline,
            ports: &self.ofports[..],
            ct: &mut self.ct,
            now_ms: now,
            stats: &mut self.exec,
            cache: Some(&mut self.cache),
            scratch: &mut self.scratch,
        };
        eng.process(&mut self.buf[..len], in_port, &mut sink, None);
    }

    /// Take up to a burst of handoffs addressed to this worker.
    fn drain_handoffs(&mut self) -> usize {
        let Some(cross) = self.cross.clone() else {
            return 0;
        };
        let me = self.cfg.id;
        let now = self.now_ms();
        let mut n = 0;
        while n < BURST {
            let Some(h) = cross.mesh.pop_for(me) else {
                break;
            };
            n += 1;
            let len = usize::from(h.len).min(self.buf.len());
            match h.op {
                HandoffOp::Process => {
                    self.counters.handoff_process_in += 1;
                    self.ct.note_handoff(false);
                    self.buf[..len].copy_from_slice(&h.data[..len]);
                    self.process(h.port, len, now);
                }
                HandoffOp::Transmit => {
                    self.counters.handoff_tx_in += 1;
                    let mut take = None;
                    let mut sink = TxSink {
                        me,
                        umem: &mut self.umem,
                        ports: &mut self.ports,
                        txq: &mut self.txq,
                        routes: &self.routes,
                        cross: None,
                        counters: &mut self.counters,
                        in_place: (std::ptr::null(), 0),
                        take: &mut take,
                    };
                    sink.output(h.port, &h.data[..len]);
                }
            }
        }
        n
    }

    fn flush_tx(&mut self) {
        for i in 0..self.ports.len() {
            flush_port(
                &mut self.umem,
                &mut self.ports[i],
                &mut self.txq[i],
                &mut self.counters,
            );
        }
    }

    fn housekeeping(&mut self) {
        // Relaxed would do for a hint, Acquire pairs with the request.
        let req = self.ctl.stats_req.load(Ordering::Acquire);
        if req != self.stats_seen {
            let s = self.stats();
            self.answer_stats_request(&s);
        }
        let req = self.ctl.ct_req.load(Ordering::Acquire);
        if req != self.ct_seen {
            self.answer_ct_command(req);
        }
        let now = self.now_ms();
        if now >= self.last_sweep_ms + 100 {
            self.last_sweep_ms = now;
            self.ct.sweep(now, 256);
            for p in self.ports.iter_mut() {
                if let Some(w) = p.pcap.as_mut() {
                    w.flush();
                }
            }
        }
    }

    #[cold]
    fn answer_ct_command(&mut self, req: u64) {
        let ctl = self.ctl.clone();
        if let Ok(mut slot) = ctl.ct_slot.lock() {
            let reply = slot.0.take().map(|cmd| match cmd {
                CtCommand::Dump { zone, from } => {
                    let now = self.ct.last_now();
                    let (entries, next) = self.ct.dump_page(zone, from, DUMP_PAGE_SLOTS, now);
                    CtReply::Dump { entries, next }
                }
                CtCommand::Flush { zone, from } => {
                    let (n, next) = self.ct.flush_page(zone, from, DUMP_PAGE_SLOTS);
                    CtReply::Flushed(n, next)
                }
                CtCommand::FlushTuples(ts) => CtReply::Flushed(
                    ts.into_iter()
                        .map(|(z, t)| self.ct.flush(Some(z), Some(t)))
                        .sum(),
                    None,
                ),
                CtCommand::FlowStats => CtReply::FlowStats(Box::new(self.rule_report())),
                CtCommand::DumpMegaflows => CtReply::Megaflows {
                    now_ms: self.now_ms(),
                    flows: self.cache.dump(),
                },
            });
            slot.1 = reply;
        }
        self.ct_seen = req;
        // Release: the reply written above is visible to whoever sees this.
        self.ctl.ct_done.store(req, Ordering::Release);
    }

    fn answer_stats_request(&mut self, s: &WorkerStats) {
        let req = self.ctl.stats_req.load(Ordering::Acquire);
        if let Ok(mut slot) = self.ctl.snapshot.lock() {
            *slot = s.clone();
        }
        self.stats_seen = req;
        // Release: the snapshot written above is visible to whoever sees
        // this answer.
        self.ctl.stats_done.store(req, Ordering::Release);
    }

    fn finish_pcaps(&mut self) {
        for p in self.ports.iter_mut() {
            if let Some(w) = p.pcap.as_mut() {
                w.flush();
            }
        }
    }

    /// This worker's per-flow counters (see [`crate::pipeline::stats`]).
    pub fn rule_report(&self) -> RuleReport {
        // Every pass of a worker goes through its cache (the engine's
        // uncached counts are only for cacheless replays).
        let live = self.cache.rule_counts();
        self.rule_stats.report(&self.pipeline, live, self.now_ms())
    }

    /// A snapshot of this worker's counters.
    pub fn stats(&self) -> WorkerStats {
        WorkerStats {
            worker: self.cfg.id,
            generation: self.generation,
            ports: self
                .ports
                .iter()
                .map(|p| PortCounters {
                    name: p.name.clone(),
                    ofport: p.ofport,
                    queue: p.queue,
                    stats: p.port.stats(),
                })
                .collect(),
            exec: self.exec.clone(),
            cache: self.cache.stats,
            cache_entries: self.cache.len(),
            cache_masks: self.cache.n_masks(),
            ct: *self.ct.counters(),
            ct_entries: self.ct.len(),
            counters: self.counters,
        }
    }
}

/// A port's capture file: classic pcap, microsecond wall-clock stamps,
/// every frame received and transmitted on the port. Debugging aid: it
/// reads the clock and writes per packet, so it is off by default.
#[derive(Debug)]
pub struct Capture {
    w: BufWriter<File>,
    /// Write errors (the capture stops counting bytes, forwarding goes on).
    pub errors: u64,
}

impl Capture {
    /// Create (truncate) `path` and write the pcap header.
    pub fn create(path: &std::path::Path) -> std::io::Result<Capture> {
        use std::io::Write;
        let mut w = BufWriter::new(File::create(path)?);
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        h[16..20].copy_from_slice(&65535u32.to_le_bytes());
        h[20..24].copy_from_slice(&1u32.to_le_bytes()); // Ethernet
        w.write_all(&h)?;
        Ok(Capture { w, errors: 0 })
    }

    /// Append one frame stamped now.
    pub fn write(&mut self, pkt: &[u8]) {
        use std::io::Write;
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&(t.as_secs() as u32).to_le_bytes());
        h[4..8].copy_from_slice(&t.subsec_micros().to_le_bytes());
        h[8..12].copy_from_slice(&(pkt.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(pkt.len() as u32).to_le_bytes());
        if self
            .w
            .write_all(&h)
            .and_then(|_| self.w.write_all(pkt))
            .is_err()
        {
            self.errors += 1;
        }
    }

    /// Push buffered records to the file.
    pub fn flush(&mut self) {
        use std::io::Write;
        if self.w.flush().is_err() {
            self.errors += 1;
        }
    }
}

/// Copy `pkt` into a ring slot; false if the ring is full or the frame too
/// long for a slot.
fn push_handoff(
    ring: &conntrack::HandoffRing<Handoff>,
    op: HandoffOp,
    port: u32,
    pkt: &[u8],
) -> bool {
    if pkt.len() > HANDOFF_MAX {
        return false;
    }
    let mut h = Handoff {
        op,
        port,
        len: pkt.len() as u16,
        data: [0; HANDOFF_MAX],
    };
    h.data[..pkt.len()].copy_from_slice(pkt);
    ring.push(h).is_ok()
}

/// Transmit what `q` holds on `p`; frames the port refused twice are
/// freed and counted.
fn flush_port(umem: &mut Umem, p: &mut OwnedPort, q: &mut Batch, c: &mut WorkerCounters) {
    if q.is_empty() {
        return;
    }
    if let Some(w) = p.pcap.as_mut() {
        for f in q.frames() {
            w.write(umem.data(f));
        }
    }
    p.port.tx_burst(umem, q);
    if !q.is_empty() {
        p.port.tx_burst(umem, q);
    }
    if !q.is_empty() {
        c.tx_busy_dropped += q.len() as u64;
        umem.free_batch(q);
    }
}

/// Put `f` on `q` (port `p`'s tx batch), flushing a full batch first.
#[inline]
fn enqueue(umem: &mut Umem, p: &mut OwnedPort, q: &mut Batch, c: &mut WorkerCounters, f: Frame) {
    if q.space() == 0 {
        flush_port(umem, p, q, c);
    }
    if let Err(f) = q.push(f) {
        umem.free(f);
        c.tx_busy_dropped += 1;
    }
}

/// The engine's outputs: copied into a fresh frame on the owning port's tx
/// batch, or handed to the worker that owns the port; or, for the last use
/// of a packet processed in place, its own frame (`take`).
struct TxSink<'a> {
    me: usize,
    umem: &'a mut Umem,
    ports: &'a mut [OwnedPort],
    txq: &'a mut [Batch],
    routes: &'a [(u32, Route)],
    cross: Option<&'a Cross>,
    counters: &'a mut WorkerCounters,
    /// Address and length of the packet when it is a received frame being
    /// processed in place (null otherwise): an `output_last` of exactly
    /// those bytes may take the frame. Compared, never dereferenced.
    in_place: (*const u8, usize),
    /// Set by `output_last`: the local port (index) that transmits the
    /// in-place frame itself once the engine is done with it.
    take: &'a mut Option<Taken>,
}

/// The in-place frame's transmission, decided by `output_last`.
#[derive(Debug, Clone, Copy)]
struct Taken {
    /// Local port (index) that transmits the frame.
    port: usize,
    /// Debug builds: [`exec::digest`] of the bytes at `output_last`,
    /// checked when the engine is done (zero in release builds).
    digest: u64,
}

impl TxSink<'_> {
    fn route(&self, port: u32) -> Option<Route> {
        self.routes
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, r)| *r)
    }
}

impl Sink for TxSink<'_> {
    fn output_last(&mut self, port: u32, pkt: &[u8]) {
        if !self.in_place.0.is_null()
            && (pkt.as_ptr(), pkt.len()) == self.in_place
            && self.take.is_none()
            && let Some(Route::Local(i)) = self.route(port)
        {
            *self.take = Some(Taken {
                port: i,
                digest: if cfg!(debug_assertions) {
                    exec::digest(pkt)
                } else {
                    0
                },
            });
            return;
        }
        self.output(port, pkt);
    }

    fn output(&mut self, port: u32, pkt: &[u8]) {
        match self.route(port) {
            Some(Route::Local(i)) => {
                let Some(mut f) = self.umem.alloc() else {
                    self.counters.tx_no_frame += 1;
                    return;
                };
                if self.umem.set_len(&mut f, pkt.len()).is_err() {
                    self.umem.free(f);
                    self.counters.tx_too_long += 1;
                    return;
                }
                self.umem.data_mut(&f).copy_from_slice(pkt);
                enqueue(
                    self.umem,
                    &mut self.ports[i],
                    &mut self.txq[i],
                    self.counters,
                    f,
                );
            }
            Some(Route::Worker(w)) => match self.cross {
                Some(c) => {
                    if push_handoff(c.mesh.ring(self.me, w), HandoffOp::Transmit, port, pkt) {
                        self.counters.handoff_tx_out += 1;
                    } else {
                        self.counters.handoff_full += 1;
                    }
                }
                None => self.counters.tx_no_route += 1,
            },
            None => self.counters.tx_no_route += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_buckets_and_max() {
        let mut c = WorkerCounters::default();
        for ns in [
            0,
            15_999,
            16_000,
            999_999,
            1_000_000,
            63_999_999,
            64_000_000,
            5_000_000_000,
        ] {
            c.note_gap(ns);
        }
        assert_eq!(c.gaps, [2, 1, 0, 1, 1, 0, 1, 2]);
        assert_eq!(c.max_gap_ns, 5_000_000_000);
        assert_eq!(GAP_LABELS.len(), GAP_BOUNDS_NS.len() + 1);
    }
}
