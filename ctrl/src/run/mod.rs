//! `flowpath run`: the forwarding process.
//!
//! Startup, on the control (main) thread: read `node.toml`
//! ([`config`]), load the flows into a [`Pipeline`], attach one XDP program
//! per AF_XDP interface (stale ones from a crashed run are removed first),
//! then build each worker: its UMEM, an AF_XDP socket for every queue it
//! serves (queue entry i of a port goes to worker i mod workers), the TAP
//! and memory ports assigned to it, its conntrack shard (attached to the
//! shared ownership directory when there are several workers) and its
//! route table (which worker transmits on which OpenFlow port). Each worker
//! runs on its own thread, pinned with `core_affinity`.
//!
//! Signals, handled on the control thread (`signal-hook`; the workers never
//! see them):
//! * SIGTERM / SIGINT: stop the workers (each finishes its burst and
//!   flushes), join them, drop every socket and XDP link (the programs are
//!   detached), print the final counters, exit 0.
//! * SIGHUP: reload the flows/groups files; on success publish the new
//!   pipeline (workers pick it up between bursts and flush their caches;
//!   conntrack state is kept, so established connections keep flowing); on
//!   error print it and keep the running rules.
//! * SIGUSR1: print every worker's counters ([`stats`]).
//!
//! With `services = "DIR"` the rules are compiled from node.toml and the
//! manifests ([`build`]); a watcher thread polls them once a second and a
//! change reloads them like SIGHUP.
//!
//! The control socket ([`crate::control`]) is served from its own thread
//! through a [`NodeHandle`]: `dump-flows`, `add-flow`, `del-flows`,
//! `replace-flows`, `dump-groups`, `dump-conntrack`, `flush-conntrack`,
//! `stats`, `ports`, `reload`.
//!
//! [`Node`] is the same thing as a library: [`Node::stats`] returns the
//! counters as data.

pub mod config;
pub mod stats;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::compile;
use anyhow::Context;
use conntrack::{CtConfig, Directory, HandoffMesh, Shard};
use datapath::io::afxdp::{AfXdpConfig, AfXdpPort, XdpConfig, XdpProgram};
use datapath::io::memory::MemoryPort;
use datapath::io::tap::{TapConfig, TapPort};
use datapath::io::{BURST, Umem, UmemConfig, affinity};
use datapath::pipeline::Pipeline;
use datapath::pipeline::classifier::FlowIdx;
use datapath::pipeline::stats::{FlowStat, FlowTimes, RuleReport, merge as merge_flow_stats};
use datapath::worker::{
    Capture, Cross, CtCommand, CtReply, OwnedPort, PipelineCell, Route, Worker, WorkerConfig,
    WorkerControl, WorkerStats,
};

pub use config::{ConfigError, PortConfig, PortKind, RunConfig};

/// Handoff ring slots per ordered worker pair.
const HANDOFF_RING: usize = 256;

/// Counter output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// A running node: the workers, their controls and the XDP programs.
pub struct Node {
    handle: Arc<NodeHandle>,
    threads: Vec<JoinHandle<WorkerStats>>,
    /// Applies `learn` events and expires learned flows.
    learner: Option<JoinHandle<()>>,
    /// Expires static flows with timeouts ([`NodeHandle::expire_flows`]).
    expirer: Option<(Arc<std::sync::atomic::AtomicBool>, JoinHandle<()>)>,
    programs: Vec<Arc<XdpProgram>>,
}

/// What the control thread and the control socket share about a running
/// node: its config, the pipeline cell and every worker's control. Any
/// thread may call these; none of them blocks a worker (pipeline edits
/// publish a new pointer, counters and conntrack commands go through the
/// workers' mailboxes, answered between bursts).
pub struct NodeHandle {
    cfg: RunConfig,
    cell: Arc<PipelineCell>,
    controls: Vec<Arc<WorkerControl>>,
    /// Serializes read-modify-publish edits of the pipeline (socket edits,
    /// reloads), so two edits never lose one another.
    edit: Mutex<()>,
    /// The last compile, when the rules come from Service manifests (for
    /// the stale-UDP flush list of the next reload).
    compiled: Mutex<Option<compile::Compiled>>,
    /// The CPUs no worker is pinned to, where the control plane's threads
    /// run (empty: the workers take every CPU, so it runs anywhere).
    control_cpus: Vec<usize>,
}

/// The (zone, original tuple) of every entry of `dump` that one of
/// `flushes` names: same zone and protocol, original destination the
/// frontend, reply source the backend that went away.
fn stale_entries(
    flushes: &[compile::CtFlush],
    dump: &[conntrack::ConnDump],
) -> Vec<(u16, conntrack::Tuple)> {
    dump.iter()
        .filter(|c| {
            flushes.iter().any(|f| {
                f.zone == c.zone
                    && f.proto == c.orig.proto
                    && u32::from(f.orig_dst.0) == c.orig.dst
                    && f.orig_dst.1 == c.orig.dport
                    && u32::from(f.reply_src.0) == c.reply.src
                    && f.reply_src.1 == c.reply.sport
            })
        })
        .map(|c| (c.zone, c.orig))
        .collect()
}

/// The rules `cfg` describes: its flows/groups files, or node.toml and the
/// Service manifests compiled (`services = "DIR"`).
pub fn build(cfg: &RunConfig) -> anyhow::Result<(Pipeline, Option<compile::Compiled>)> {
    match &cfg.services {
        Some(dir) => {
            let node = crate::config::NodeConfig::load(&cfg.path)?;
            let manifests = crate::config::Manifests::load(std::slice::from_ref(dir))?;
            let c = compile::compile(&node, &manifests)?;
            for w in &c.warnings {
                eprintln!("flowpath run: warning: {w}");
            }
            Ok((c.pipeline(), Some(c)))
        }
        None => Ok((
            crate::load::load_named(&cfg.flows, cfg.groups.as_deref(), &cfg.port_names())?,
            None,
        )),
    }
}

impl NodeHandle {
    /// The checked node.toml.
    pub fn cfg(&self) -> &RunConfig {
        &self.cfg
    }

    /// Where the rules come from, for messages.
    pub fn source(&self) -> String {
        match &self.cfg.services {
            Some(d) => format!("{} + {}", self.cfg.path.display(), d.display()),
            None => self.cfg.flows.display().to_string(),
        }
    }

    /// The pipeline the workers run now.
    pub fn pipeline(&self) -> Arc<Pipeline> {
        self.cell.load()
    }

    /// Build a new pipeline from the current one with `f` (off the hot
    /// path) and publish it. On error nothing is published. Returns the new
    /// generation.
    pub fn edit(
        &self,
        f: impl FnOnce(&Pipeline) -> anyhow::Result<Pipeline>,
    ) -> anyhow::Result<u64> {
        let _g = self
            .edit
            .lock()
            .map_err(|_| anyhow::anyhow!("edit lock poisoned"))?;
        let p = f(&self.cell.load())?;
        Ok(self.cell.publish(p))
    }

    /// Re-read the flows (and groups) files, or recompile node.toml and
    /// the Service manifests, and publish the result. On error (a bad
    /// manifest names file, document and field) the running pipeline
    /// stays. After a recompile, conntrack entries of UDP backends that
    /// went away are deleted on every worker ([`compile::stale_udp_flushes`],
    /// kubernetes#48370). Returns the new generation.
    pub fn reload(&self) -> anyhow::Result<u64> {
        let (p, compiled) = build(&self.cfg)?;
        let g = self.edit(|_| Ok(p))?;
        let mut flushes = Vec::new();
        if let Ok(mut old) = self.compiled.lock() {
            if let (Some(o), Some(n)) = (old.as_ref(), compiled.as_ref()) {
                flushes = compile::stale_udp_flushes(o, n);
            }
            *old = compiled;
        }
        if !flushes.is_empty() {
            let n = self.flush_stale(&flushes)?;
            println!(
                "flowpath run: {} stale UDP backend(s): {n} conntrack entr(ies) deleted",
                flushes.len()
            );
        }
        Ok(g)
    }

    /// Delete the conntrack entries `flushes` name, on every worker.
    fn flush_stale(&self, flushes: &[compile::CtFlush]) -> anyhow::Result<usize> {
        let mut zones: Vec<u16> = flushes.iter().map(|f| f.zone).collect();
        zones.sort_unstable();
        zones.dedup();
        let mut tuples = Vec::new();
        for z in zones {
            tuples.extend(stale_entries(flushes, &self.dump_conntrack(Some(z))?));
        }
        if tuples.is_empty() {
            return Ok(0);
        }
        Ok(self
            .conntrack(&CtCommand::FlushTuples(tuples))?
            .into_iter()
            .map(|r| match r {
                CtReply::Flushed(n, _) => n,
                CtReply::Dump { .. } | CtReply::FlowStats(_) | CtReply::Megaflows { .. } => 0,
            })
            .sum())
    }

    /// Publish an already-built pipeline (the Service compiler's path).
    pub fn publish(&self, p: Pipeline) -> u64 {
        let _g = self.edit.lock();
        self.cell.publish(p)
    }

    /// Current pipeline generation.
    pub fn generation(&self) -> u64 {
        self.cell.generation()
    }

    /// Remove the learned flows `keep` rejects (`del-flows`,
    /// `replace-flows`); returns how many went.
    pub fn retain_learned(&self, keep: impl FnMut(&datapath::pipeline::ir::Flow) -> bool) -> usize {
        let _g = self.edit.lock();
        self.cell.retain_learned(keep)
    }

    /// The learner's clock (ms), which learned flows' timestamps use.
    pub fn learn_now(&self) -> u64 {
        self.cell.learn_now()
    }

    /// Learned flows' current (id, created, modified, used), ms.
    pub fn learned_times(&self) -> Vec<(u64, u64, u64, u64)> {
        self.cell.learned_times()
    }

    /// Every flow's counters in pipeline `p`, summed over the workers
    /// ([`datapath::pipeline::stats`]): classifier index -> (counts, ms
    /// since last used).
    pub fn flow_stats(
        &self,
        p: &Pipeline,
    ) -> anyhow::Result<std::collections::HashMap<FlowIdx, (FlowStat, Option<u64>)>> {
        let reports: Vec<RuleReport> = self
            .conntrack(&CtCommand::FlowStats)?
            .into_iter()
            .filter_map(|r| match r {
                CtReply::FlowStats(b) => Some(*b),
                _ => None,
            })
            .collect();
        Ok(merge_flow_stats(p, &reports))
    }

    /// Remove the static flows whose `idle_timeout` or `hard_timeout`
    /// passed (OVS's `rule_expire`; learned flows expire in the learner).
    /// Returns how many went. Costs nothing while no flow has a timeout;
    /// otherwise every worker reports its per-flow counters.
    pub fn expire_flows(&self) -> anyhow::Result<usize> {
        let p = self.pipeline();
        if p.timed.is_empty() {
            return Ok(0);
        }
        let counts = self.flow_stats(&p)?;
        let dead = self.cell.expired_flows(&p, &counts);
        if dead.is_empty() {
            return Ok(0);
        }
        // Only if no edit replaced the flows meanwhile (then next round).
        self.edit(|cur| {
            anyhow::ensure!(Arc::ptr_eq(&cur.flows, &p.flows), "flows changed");
            Ok(cur.without(&dead))
        })
        .map(|_| dead.len())
        .or(Ok(0))
    }

    /// When each static flow was added and modified, on the learner clock
    /// ([`FlowTimes::get`]).
    pub fn flow_times(&self) -> FlowTimes {
        self.cell.flow_times()
    }

    /// Restart the duration of the static flows `added` picks.
    pub fn restart_flows(&self, added: impl FnMut(&datapath::pipeline::ir::Flow) -> bool) {
        self.cell.restart_flows(added)
    }

    /// Every worker's counters (a worker that does not answer within a
    /// second is left out).
    pub fn stats(&self) -> Vec<WorkerStats> {
        self.controls
            .iter()
            .filter_map(|c| c.snapshot(Duration::from_secs(1)))
            .collect()
    }

    /// Delete every worker's connections (of `zone`), page by page
    /// ([`WorkerControl::flush_conntrack`]); how many.
    pub fn flush_conntrack(&self, zone: Option<u16>) -> anyhow::Result<usize> {
        Ok(self
            .per_worker(|c| c.flush_conntrack(zone, Duration::from_secs(2)))?
            .into_iter()
            .sum())
    }

    /// Keep the calling thread (and the threads it spawns later) off the
    /// workers' cores, when there are CPUs left for it. Best effort: a
    /// failure (a cpuset that forbids those CPUs) is reported and ignored.
    pub fn pin_control_thread(&self) {
        affinity::keep_current_thread_on(&self.control_cpus);
    }

    /// Every worker's live connections (of `zone`), unsorted, each worker's
    /// dumped page by page ([`WorkerControl::dump_conntrack`]).
    pub fn dump_conntrack(&self, zone: Option<u16>) -> anyhow::Result<Vec<conntrack::ConnDump>> {
        Ok(self
            .per_worker(|c| c.dump_conntrack(zone, Duration::from_secs(2)))?
            .into_iter()
            .flatten()
            .collect())
    }

    /// `f` of every worker's control, in worker order; a worker that does
    /// not answer (`None`) is an error.
    fn per_worker<T>(&self, f: impl Fn(&WorkerControl) -> Option<T>) -> anyhow::Result<Vec<T>> {
        self.controls
            .iter()
            .enumerate()
            .map(|(w, c)| f(c).ok_or_else(|| anyhow::anyhow!("worker {w} did not answer")))
            .collect()
    }

    /// Run a conntrack command on every worker's shard (between its
    /// bursts); one reply per worker. A worker that does not answer is an
    /// error.
    pub fn conntrack(&self, cmd: &CtCommand) -> anyhow::Result<Vec<CtReply>> {
        self.per_worker(|c| c.conntrack(cmd.clone(), Duration::from_secs(2)))
    }
}

impl Node {
    /// Open every port and start the workers.
    pub fn start(cfg: RunConfig, pipeline: Pipeline) -> anyhow::Result<Node> {
        Node::start_compiled(cfg, pipeline, None)
    }

    /// [`Node::start`] with the compile `pipeline` came from (reloads
    /// flush the conntrack entries of UDP backends it had and the next
    /// compile drops).
    pub fn start_compiled(
        cfg: RunConfig,
        pipeline: Pipeline,
        compiled: Option<compile::Compiled>,
    ) -> anyhow::Result<Node> {
        let n = cfg.workers;
        // One XDP program per interface, shared by the workers.
        let mut programs: Vec<(String, Arc<XdpProgram>)> = Vec::new();
        for p in &cfg.ports {
            if let PortKind::AfXdp {
                interface,
                queues,
                mode,
                pass_ethertypes,
                ..
            } = &p.kind
            {
                let xcfg = XdpConfig {
                    mode: *mode,
                    pass_ethertypes: pass_ethertypes.clone(),
                    max_queues: queues.iter().max().copied().unwrap_or(0) + 1,
                };
                let prog = XdpProgram::attach(interface, &xcfg)
                    .with_context(|| format!("port {}: attach XDP program", p.name))?;
                programs.push((interface.clone(), prog));
            }
        }
        let prog_of = |ifname: &str| {
            programs
                .iter()
                .find(|(i, _)| i == ifname)
                .map(|(_, p)| p.clone())
                .expect("attached above")
        };

        // Which worker owns which (port, queue).
        let mut owned: Vec<Vec<OwnedPort>> = (0..n).map(|_| Vec::new()).collect();
        let mut umems: Vec<Umem> = Vec::with_capacity(n);
        for w in 0..n {
            let sockets: u32 = cfg
                .ports
                .iter()
                .map(|p| match &p.kind {
                    PortKind::AfXdp {
                        queues,
                        ring_size,
                        fill_size,
                        ..
                    } => {
                        let mine = (0..queues.len()).filter(|i| i % n == w).count() as u32;
                        mine * (fill_size + 2 * ring_size)
                    }
                    _ => 0,
                })
                .sum();
            let frames = cfg
                .umem_frames
                .unwrap_or(sockets + 8 * BURST as u32 * cfg.ports.len() as u32 + 1024);
            umems.push(
                Umem::new(UmemConfig {
                    frame_count: frames,
                    frame_size: cfg.frame_size,
                })
                .with_context(|| format!("worker {w}: UMEM of {frames} chunks"))?,
            );
        }
        for p in &cfg.ports {
            match &p.kind {
                PortKind::AfXdp {
                    interface,
                    queues,
                    zero_copy,
                    ring_size,
                    fill_size,
                    ..
                } => {
                    let prog = prog_of(interface);
                    for (i, &q) in queues.iter().enumerate() {
                        let w = i % n;
                        let acfg = AfXdpConfig {
                            queue: q,
                            ring_size: *ring_size,
                            fill_size: *fill_size,
                            zero_copy: *zero_copy,
                            need_wakeup: true,
                        };
                        let port =
                            AfXdpPort::open(&mut umems[w], &prog, &acfg).with_context(|| {
                                format!("port {} ({interface} queue {q}, worker {w})", p.name)
                            })?;
                        let pcap = open_capture(p, i, q)?;
                        owned[w].push(OwnedPort {
                            name: p.name.clone(),
                            ofport: p.ofport,
                            queue: q,
                            port: Box::new(port),
                            pcap,
                        });
                    }
                }
                PortKind::Tap {
                    device,
                    ip,
                    mac,
                    mtu,
                    worker,
                } => {
                    let tap = TapPort::open(&TapConfig {
                        name: device.clone(),
                        mac: *mac,
                        ipv4: *ip,
                        mtu: *mtu,
                    })
                    .with_context(|| format!("port {}: TAP {device}", p.name))?;
                    let pcap = open_capture(p, 0, 0)?;
                    owned[*worker].push(OwnedPort {
                        name: p.name.clone(),
                        ofport: p.ofport,
                        queue: 0,
                        port: Box::new(tap),
                        pcap,
                    });
                }
                PortKind::Memory { worker } => {
                    let pcap = open_capture(p, 0, 0)?;
                    owned[*worker].push(OwnedPort {
                        name: p.name.clone(),
                        ofport: p.ofport,
                        queue: 0,
                        port: Box::new(MemoryPort::new(p.name.clone())),
                        pcap,
                    });
                }
            }
        }

        // Routes: every OpenFlow port, transmitted locally when this worker
        // has a socket on it, else by the first worker that has one.
        let owner_of = |ofport: u32| {
            owned
                .iter()
                .position(|ps| ps.iter().any(|p| p.ofport == ofport))
        };
        let mut routes: Vec<Vec<(u32, Route)>> = Vec::with_capacity(n);
        for mine in &owned {
            let mut r = Vec::new();
            for p in &cfg.ports {
                if let Some(i) = mine.iter().position(|o| o.ofport == p.ofport) {
                    r.push((p.ofport, Route::Local(i)));
                } else if let Some(o) = owner_of(p.ofport) {
                    r.push((p.ofport, Route::Worker(o)));
                }
            }
            routes.push(r);
        }

        let cross = (n > 1).then(|| Cross {
            directory: Arc::new(Directory::new(n, cfg.ct_capacity)),
            mesh: Arc::new(HandoffMesh::new(n, HANDOFF_RING)),
        });
        let cell = Arc::new(PipelineCell::new(pipeline));
        let all_cpus = core_affinity::get_core_ids().unwrap_or_default();
        // Worker w's core: as configured, else w mod the CPUs we may use.
        let worker_core = |w: usize| match &cfg.cores {
            Some(c) => Some(c[w]),
            None if !all_cpus.is_empty() => Some(all_cpus[w % all_cpus.len()].id),
            None => None,
        };
        let worker_cores: Vec<usize> = (0..n).filter_map(worker_core).collect();
        let control_cpus = affinity::control_cpus(
            &all_cpus.iter().map(|c| c.id).collect::<Vec<_>>(),
            &worker_cores,
        );
        let learner = cell
            .spawn_learner(control_cpus.clone())
            .context("spawn the learner thread")?;
        let mut controls = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for (w, ((ports, umem), routes)) in owned.into_iter().zip(umems).zip(routes).enumerate() {
            let mut ct = Shard::new(CtConfig {
                tcp_seq_check: cfg.tcp_seq_check,
                ..CtConfig::with_capacity(cfg.ct_capacity)
            });
            if let Some(c) = &cross {
                ct.attach_directory(c.directory.clone(), w);
            }
            let ctl = Arc::new(WorkerControl::default());
            let worker = Worker::new(
                WorkerConfig {
                    id: w,
                    cache_capacity: cfg.cache_megaflows,
                    chain_capacity: cfg.cache_chains,
                    emc: cfg.emc,
                    idle_sleep: Duration::from_micros(cfg.idle_sleep_us),
                    idle_polls: cfg.idle_polls,
                    yield_for: Duration::from_micros(cfg.yield_us),
                },
                umem,
                ports,
                routes,
                cell.clone(),
                ct,
                cross.clone(),
                ctl.clone(),
            );
            let core = worker_core(w).map(|id| core_affinity::CoreId { id });
            let t = std::thread::Builder::new()
                .name(format!("fp-worker-{w}"))
                .spawn(move || {
                    if let Some(c) = core
                        && !core_affinity::set_for_current(c)
                    {
                        eprintln!("flowpath: worker {w}: could not pin to core {}", c.id);
                    }
                    worker.run()
                })
                .with_context(|| format!("spawn worker {w}"))?;
            controls.push(ctl);
            threads.push(t);
        }
        let handle = Arc::new(NodeHandle {
            cfg,
            cell,
            controls,
            edit: Mutex::new(()),
            compiled: Mutex::new(compiled),
            control_cpus,
        });
        let expirer = spawn_expirer(handle.clone()).context("spawn the flow expiry thread")?;
        Ok(Node {
            handle,
            threads,
            learner: Some(learner),
            expirer: Some(expirer),
            programs: programs.into_iter().map(|(_, p)| p).collect(),
        })
    }

    /// The handle the control socket shares.
    pub fn handle(&self) -> Arc<NodeHandle> {
        self.handle.clone()
    }

    /// [`NodeHandle::reload`].
    pub fn reload(&self) -> anyhow::Result<u64> {
        self.handle.reload()
    }

    /// [`NodeHandle::publish`].
    pub fn publish(&self, p: Pipeline) -> u64 {
        self.handle.publish(p)
    }

    /// [`NodeHandle::generation`].
    pub fn generation(&self) -> u64 {
        self.handle.generation()
    }

    /// [`NodeHandle::stats`].
    pub fn stats(&self) -> Vec<WorkerStats> {
        self.handle.stats()
    }

    /// Stop and join the workers, then detach the XDP programs. Returns the
    /// final counters.
    pub fn stop(mut self) -> Vec<WorkerStats> {
        if let Some((stop, t)) = self.expirer.take() {
            stop.store(true, std::sync::atomic::Ordering::Release);
            t.thread().unpark();
            let _ = t.join();
        }
        self.handle.cell.stop_learner();
        if let Some(l) = self.learner.take() {
            let _ = l.join();
        }
        for c in &self.handle.controls {
            c.stop();
        }
        let out: Vec<WorkerStats> = self
            .threads
            .into_iter()
            .filter_map(|t| t.join().ok())
            .collect();
        // The sockets were dropped with the workers; the last references to
        // the programs go here, closing the BPF links (XDP detached).
        drop(self.programs);
        out
    }
}

/// How often static flows' timeouts are checked (OVS checks after each
/// revalidator dump, about every 500 ms).
const EXPIRY_PERIOD: Duration = Duration::from_millis(500);

/// The thread that expires static flows with timeouts until its flag is
/// set.
fn spawn_expirer(
    handle: Arc<NodeHandle>,
) -> std::io::Result<(Arc<std::sync::atomic::AtomicBool>, JoinHandle<()>)> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let t = std::thread::Builder::new()
        .name("fp-expire".into())
        .spawn(move || {
            handle.pin_control_thread();
            while !flag.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::park_timeout(EXPIRY_PERIOD);
                if let Ok(n) = handle.expire_flows()
                    && n > 0
                {
                    eprintln!("flowpath run: {n} flow(s) expired (idle_timeout/hard_timeout)");
                }
            }
        })?;
    Ok((stop, t))
}

fn open_capture(p: &PortConfig, index: usize, queue: u32) -> anyhow::Result<Option<Capture>> {
    let Some(path) = &p.pcap else {
        return Ok(None);
    };
    let path = if index == 0 {
        path.clone()
    } else {
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        path.with_file_name(format!("{stem}.q{queue}.pcap"))
    };
    Ok(Some(Capture::create(&path).with_context(|| {
        format!("port {}: pcap {}", p.name, path.display())
    })?))
}

/// Watch node.toml and the manifests directory (polled once a second, on a
/// thread of its own): a change recompiles and publishes, as `reload`.
fn watch(h: Arc<NodeHandle>) -> anyhow::Result<()> {
    fn fingerprint(
        cfg: &RunConfig,
    ) -> Vec<(std::path::PathBuf, Option<std::time::SystemTime>, u64)> {
        let mut paths = vec![cfg.path.clone()];
        if let Some(dir) = &cfg.services
            && let Ok(rd) = std::fs::read_dir(dir)
        {
            paths.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
        }
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                let m = std::fs::metadata(&p).ok();
                let t = m.as_ref().and_then(|m| m.modified().ok());
                let len = m.map_or(0, |m| m.len());
                (p, t, len)
            })
            .collect()
    }
    std::thread::Builder::new()
        .name("fp-watch".into())
        .spawn(move || {
            let mut last = fingerprint(&h.cfg);
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let now = fingerprint(&h.cfg);
                if now == last {
                    continue;
                }
                last = now;
                match h.reload() {
                    Ok(g) => println!(
                        "flowpath run: {} changed: reloaded: generation {g}",
                        h.source()
                    ),
                    Err(e) => eprintln!(
                        "flowpath run: {} changed: reload failed, keeping the running rules: {e:#}",
                        h.source()
                    ),
                }
                let _ = std::io::stdout().flush();
            }
        })
        .context("spawn the manifest watcher")?;
    Ok(())
}

/// `flowpath run --check`: validate the config and its flows/groups files
/// without opening any port. Returns a one-line summary.
pub fn check(config: &std::path::Path) -> anyhow::Result<String> {
    let cfg = config::load(config)?;
    let (p, _) = build(&cfg)?;
    let sockets: usize = cfg
        .ports
        .iter()
        .map(|p| match &p.kind {
            PortKind::AfXdp { queues, .. } => queues.len(),
            _ => 0,
        })
        .sum();
    Ok(format!(
        "{}: ok: {} port(s) ({sockets} AF_XDP socket(s)), {} worker(s), {} flows, {} groups",
        config.display(),
        cfg.ports.len(),
        cfg.workers,
        p.flows.len(),
        p.groups.len()
    ))
}

/// `flowpath run --config FILE`: start, serve signals until SIGTERM/SIGINT.
pub fn run(config: &std::path::Path, format: StatsFormat) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let cfg = config::load(config)?;
    let (pipeline, compiled) = build(&cfg)?;
    // Registered before any worker thread exists, on this thread.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("install signal handlers")?;
    let workers = cfg.workers;
    let ports = cfg.ports.len();
    let socket = cfg.control_socket.clone();
    let node = Node::start_compiled(cfg, pipeline, compiled)?;
    // This thread serves signals (reload compiles) and spawns the control
    // socket's and the manifest watcher's threads: off the workers' cores.
    node.handle.pin_control_thread();
    // An explicitly configured socket must work; the default one (under
    // /run, root's) only warns, so unprivileged runs with memory ports and
    // several test nodes on one host still start.
    let mut socket = Some(socket);
    if let Some(path) = &socket
        && let Err(e) = crate::control::serve(path, node.handle())
    {
        if path.as_path() != std::path::Path::new(config::DEFAULT_SOCKET) {
            let _ = node.stop();
            return Err(e);
        }
        eprintln!("flowpath run: warning: no control socket: {e:#}");
        socket = None;
    }
    if node.handle.cfg.services.is_some() {
        watch(node.handle())?;
    }
    println!(
        "flowpath run: ready: {workers} worker(s), {ports} port(s), pid {}",
        std::process::id()
    );
    let _ = std::io::stdout().flush();
    for sig in signals.forever() {
        match sig {
            SIGHUP => match node.reload() {
                Ok(g) => println!(
                    "flowpath run: reloaded {}: generation {g}",
                    node.handle.source()
                ),
                Err(e) => {
                    eprintln!("flowpath run: reload failed, keeping the running rules: {e:#}")
                }
            },
            SIGUSR1 => {
                let s = node.stats();
                print!("{}", stats::render(&s, node.generation(), format));
            }
            _ => break,
        }
        let _ = std::io::stdout().flush();
    }
    let g = node.generation();
    let finals = node.stop();
    if let Some(path) = &socket {
        let _ = std::fs::remove_file(path);
    }
    print!("{}", stats::render(&finals, g, format));
    println!("flowpath run: stopped");
    let _ = std::io::stdout().flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn conn(
        zone: u16,
        proto: u8,
        dst: (Ipv4Addr, u16),
        backend: (Ipv4Addr, u16),
    ) -> conntrack::ConnDump {
        let client = u32::from(Ipv4Addr::new(172, 16, 2, 11));
        conntrack::ConnDump {
            orig: conntrack::Tuple {
                src: client,
                dst: dst.0.into(),
                sport: 40000,
                dport: dst.1,
                proto,
            },
            reply: conntrack::Tuple {
                src: backend.0.into(),
                dst: client,
                sport: backend.1,
                dport: 40000,
                proto,
            },
            orig_icmp_type: 0,
            reply_icmp_type: 0,
            zone,
            mark: 0,
            label: 0,
            tcp: None,
            timeout_s: 30,
        }
    }

    /// Only the UDP entries DNATed to the backend that went away, in its
    /// zone and for its frontend, are flushed (kubernetes#48370).
    #[test]
    fn stale_entries_are_the_gone_backends_udp_conns() {
        let vip = (Ipv4Addr::new(10, 96, 0, 53), 53);
        let gone = (Ipv4Addr::new(172, 16, 2, 10), 5353);
        let kept = (Ipv4Addr::new(172, 16, 2, 12), 5353);
        let flushes = [compile::CtFlush {
            zone: 65500,
            proto: 17,
            orig_dst: vip,
            reply_src: gone,
        }];
        let dump = [
            conn(65500, 17, vip, gone),
            conn(65500, 17, vip, kept),
            conn(65500, 6, vip, gone),
            conn(52100, 17, vip, gone),
            conn(65500, 17, (vip.0, 54), gone),
        ];
        let hit = stale_entries(&flushes, &dump);
        assert_eq!(hit, vec![(65500, dump[0].orig)]);
    }
}
