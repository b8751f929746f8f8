//! Execution: apply a pass's datapath actions to the packet bytes, run
//! conntrack, and start a new pass for each recirculation — the part of OVS
//! that lives in `lib/dpif-netdev.c` / `lib/odp-execute.c`.
//!
//! A recirculation is executed at once, depth first: the forked copy's
//! outputs come before those of the actions that follow the `ct()` in the
//! original pass, as in dpif-netdev. The original continues with the bytes
//! conntrack produced (NAT included) and with the packet's conntrack metadata,
//! while its translation already treated it as untracked.

use conntrack::{PktCtMeta, Shard, cs};

use hashbrown::HashMap;

use super::Pipeline;
use super::classifier::FlowIdx;
use super::learn::{LearnEvent, REFRESH_MS};
use super::stats::FlowStat;
use super::xlate::{DpAction, PortSet, Recirc, TraceEvent, Xlation, xlate, xlate_into};
use crate::cache::{Chain, Compiled, CtAt, CtExpect, MegaflowCache, Op, Recorder};
use crate::drop::{DropCounters, DropReason};
use crate::extract::{self, Layout};
use crate::key::{self, FlowKey, slot};
use crate::reject::{Answer, Outcome, RejectState};

/// Packets [`Engine::process_burst`] parses and warms before running them.
pub const BURST: usize = 16;

/// dpif-netdev's recirculation depth limit (`MAX_RECIRC_DEPTH`).
pub const MAX_RECIRC_DEPTH: u32 = 6;

/// Per-core execution counters.
#[derive(Debug, Clone, Default)]
pub struct ExecStats {
    /// Packets received.
    pub rx: u64,
    /// Packets transmitted (each output copy counts).
    pub tx: u64,
    /// Passes translated (first passes plus recirculations).
    pub passes: u64,
    /// Recirculations.
    pub recircs: u64,
    /// Controller punts (REJECTs included).
    pub punts: u64,
    /// REJECTs answered: TCP resets and ICMP port unreachables sent (each
    /// also counts in `tx`).
    pub rejects: u64,
    /// Drops and skipped outputs by reason.
    pub drops: DropCounters,
}

/// One translated pass, kept for `trace`.
#[derive(Debug, Clone)]
pub struct TracePass {
    /// Table the pass started in.
    pub table: u8,
    /// The flow key at the start of the pass.
    pub key: FlowKey,
    /// Translation events.
    pub events: Vec<TraceEvent>,
    /// The translation result.
    pub xlation: Xlation,
    /// Conntrack results of this pass's `ct()` actions, in order.
    pub ct_results: Vec<PktCtMeta>,
    /// What the datapath did beyond the translation (a REJECT answered or
    /// not), one line each.
    pub notes: Vec<String>,
}

/// Where outputs go.
pub trait Sink {
    /// Transmit `pkt` on OpenFlow port `port`.
    fn output(&mut self, port: u32, pkt: &[u8]);

    /// Transmit `pkt` on `port` where nothing uses the packet's bytes
    /// after this output: the last action of a pass that runs on the
    /// packet's own buffer (a pass is only ever continued by a
    /// recirculation that is its last action; forks run on copies). A sink
    /// that owns that buffer may send it as is instead of copying it (the
    /// worker transmits the received frame). Default: [`Sink::output`].
    fn output_last(&mut self, port: u32, pkt: &[u8]) {
        self.output(port, pkt)
    }

    /// Transmit `pkt`, the datapath's own answer to a REJECT, on `port`
    /// (the request's in_port). Transmitted like any output unless the sink
    /// wants to tell them apart (`replay` marks them).
    fn answer(&mut self, port: u32, pkt: &[u8], answer: Answer) {
        let _ = answer;
        self.output(port, pkt)
    }
}

/// A 64-bit FNV-1a digest of `b`: debug builds check with it that a packet
/// sent by [`Sink::output_last`] keeps the bytes it had there.
pub fn digest(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl<F: FnMut(u32, &[u8])> Sink for F {
    fn output(&mut self, port: u32, pkt: &[u8]) {
        self(port, pkt)
    }
}

/// Everything a packet needs to run through the pipeline on one core.
pub struct Engine<'a, P: PortSet + ?Sized> {
    /// The pipeline.
    pub pipeline: &'a Pipeline,
    /// Existing ports.
    pub ports: &'a P,
    /// This core's conntrack shard.
    pub ct: &'a mut Shard,
    /// Conntrack clock, milliseconds.
    pub now_ms: u64,
    /// Counters.
    pub stats: &'a mut ExecStats,
    /// Flow cache; `None` translates every pass.
    pub cache: Option<&'a mut MegaflowCache>,
    /// Buffers for forked recirculations.
    pub scratch: &'a mut Scratch,
}

/// One reusable buffer per recirculation depth, for `ct(table=N)` forks that
/// are not the pass's last action (a last-action recirculation reuses the
/// packet itself), the outbox of learn events, and the REJECT state
/// (first-pass snapshot, rate limiter, answer buffers). After the first few
/// packets nothing here allocates.
#[derive(Debug, Default)]
pub struct Scratch {
    bufs: [Vec<u8>; MAX_RECIRC_DEPTH as usize + 1],
    /// Learn events of the packets processed since the owner last drained
    /// it ([`crate::pipeline::learn`]): new flows to learn, learned flows
    /// used. The engine's owner takes them between packets (replay) or
    /// after a burst (worker) and hands them to the learned-flow owner.
    pub learn_events: Vec<LearnEvent>,
    reject: RejectState,
    /// Per-flow counts of passes translated without a cache (not traced):
    /// classifier indices under the engine's pipeline
    /// ([`crate::pipeline::stats`]; cached passes count in the cache).
    pub uncached_rules: HashMap<FlowIdx, FlowStat>,
    /// The translation buffer of cache misses (the cache keeps a compact
    /// copy).
    xl: Xlation,
    /// The conntrack view of the packet being processed, parsed (checksums
    /// verified) at its first `ct()` and brought up to date at the next
    /// ones by [`extract::refresh_ct_packet`] (validity and TCP facts do
    /// not change with header rewrites). Reset per packet.
    ct_view: Option<conntrack::CtPacket>,
}

/// Queue `x`'s learn events (the fin_timeouts only for a TCP FIN/RST).
#[cold]
fn report_learn(out: &mut Vec<LearnEvent>, x: &Xlation, key: &FlowKey, all: bool) {
    if all {
        out.extend(x.learns.iter().map(|m| LearnEvent::Learn(m.clone())));
        out.extend(x.learned_hits.iter().map(|id| LearnEvent::Used(*id)));
    }
    let tcp = key.get(slot::DL_TYPE) == key::eth_type::IPV4 as u64
        && key.get(slot::NW_PROTO) == key::ip_proto::TCP as u64;
    // FIN 0x001, RST 0x004.
    if tcp && key.get(slot::TCP_FLAGS) & 0x005 != 0 {
        out.extend(
            x.fins
                .iter()
                .map(|&(id, idle, hard)| LearnEvent::Fin { id, idle, hard }),
        );
    }
}

impl<P: PortSet + ?Sized> Engine<'_, P> {
    /// Run a packet received on `in_port` through the pipeline, sending
    /// outputs to `sink`. With `trace`, every pass is recorded.
    pub fn process(
        &mut self,
        pkt: &mut [u8],
        in_port: u32,
        sink: &mut dyn Sink,
        trace: Option<&mut Vec<TracePass>>,
    ) {
        let mut key = FlowKey::ZERO;
        let layout = extract::extract(pkt, in_port, &mut key);
        self.process_extracted(pkt, &key, layout, sink, trace);
    }

    /// Run a burst of packets, each with its in_port, through the pipeline
    /// as [`Engine::process`] does one by one (same outputs, state and
    /// counters), but in two sweeps over each group of [`BURST`] packets:
    /// first every packet is parsed and the memory its chain replay will
    /// read (the chain's slot and program, the connections its `ct()`s
    /// found) is loaded, so those cache misses overlap across the group
    /// instead of being paid one after another (a load-based prefetch, as
    /// VPP's graph nodes do with prefetch instructions; this crate keeps
    /// `unsafe` to its io module), then each packet runs on warm lines.
    pub fn process_burst(&mut self, burst: &mut [(&mut [u8], u32)], sink: &mut dyn Sink) {
        let mut keys = [FlowKey::ZERO; BURST];
        let mut layouts = [Err(DropReason::EthTruncated); BURST];
        let mut slots = [None; BURST];
        let mut hints = [[None; crate::cache::chain::MAX_PASSES]; BURST];
        for group in burst.chunks_mut(BURST) {
            let n = group.len();
            let mut acc = 0u64;
            // Stages, each over the whole group so that its loads (which
            // depend on the previous stage's) overlap across packets: the
            // chains' slots, their programs, the connections.
            for (j, (pkt, in_port)) in group.iter().enumerate() {
                keys[j] = FlowKey::ZERO;
                layouts[j] = extract::extract(pkt, *in_port, &mut keys[j]);
                slots[j] = match (self.cache.as_deref(), &layouts[j]) {
                    (Some(c), Ok(_)) => c.chains.warm_slot(&keys[j]),
                    _ => None,
                };
            }
            if let Some(c) = self.cache.as_deref() {
                for j in 0..n {
                    hints[j] = [None; crate::cache::chain::MAX_PASSES];
                    if let Some(s) = slots[j] {
                        acc = acc.wrapping_add(c.chains.warm_prog(s, &mut hints[j]));
                    }
                }
                for h in hints[..n].iter().flatten() {
                    acc = acc.wrapping_add(self.ct.warm(*h));
                }
            }
            std::hint::black_box(acc);
            for (j, (pkt, _)) in group.iter_mut().enumerate() {
                self.process_extracted(pkt, &keys[j], layouts[j], sink, None);
            }
        }
    }

    /// [`Engine::process`] for a packet already parsed into `key` (the
    /// result of [`extract::extract`] on it: its layout, or why it is
    /// dropped).
    fn process_extracted(
        &mut self,
        pkt: &mut [u8],
        key: &FlowKey,
        layout: Result<Layout, DropReason>,
        sink: &mut dyn Sink,
        mut trace: Option<&mut Vec<TracePass>>,
    ) {
        self.stats.rx += 1;
        let key = *key;
        let layout = match layout {
            Ok(l) => l,
            Err(r) => {
                self.stats.drops.bump(r);
                return;
            }
        };
        self.scratch.reject.begin(&key);
        self.scratch.ct_view = None;
        let mut md = PktCtMeta::default();
        let (tx0, punts0, drops0) = (self.stats.tx, self.stats.punts, self.stats.drops.total());
        match self
            .cache
            .as_deref()
            .filter(|c| trace.is_none() && c.chains.enabled())
        {
            Some(c) => {
                // Through the cache: replay the whole walk's chain if one is
                // recorded for this key, else walk it pass by pass and
                // record it.
                let epoch = c.epoch();
                if !self.replay_chain(pkt, &layout, &key, sink) {
                    let mut rec = Recorder::new(epoch);
                    rec.capture(pkt, &layout);
                    self.pass(
                        pkt,
                        &layout,
                        key,
                        0,
                        &mut md,
                        0,
                        sink,
                        &mut trace,
                        Some(&mut rec),
                    );
                    if let Some(c) = self.cache.as_deref_mut()
                        && rec.ok
                        && c.epoch() == rec.epoch
                    {
                        // A walk into a new connection is recorded only
                        // when its key walks a second time (`NewWalks`).
                        if !rec.met_new || c.new_walks.seen_again(&key) {
                            c.record_chain(&key, &rec, self.now_ms);
                        } else {
                            c.stats.chain_deferred += 1;
                        }
                    }
                }
            }
            None => self.pass(pkt, &layout, key, 0, &mut md, 0, sink, &mut trace, None),
        }
        // A packet that went nowhere counts one reason: the one its walk
        // recorded (table miss, explicit drop, ...), else `no_output`.
        if self.stats.tx == tx0 && self.stats.punts == punts0 && self.stats.drops.total() == drops0
        {
            self.stats.drops.bump(DropReason::NoOutput);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pass(
        &mut self,
        pkt: &mut [u8],
        layout: &Layout,
        key: FlowKey,
        table: u8,
        md: &mut PktCtMeta,
        recirc_depth: u32,
        sink: &mut dyn Sink,
        trace: &mut Option<&mut Vec<TracePass>>,
        mut rec: Option<&mut Recorder>,
    ) {
        self.stats.passes += 1;
        // Translate, through the cache when there is one and no trace is
        // wanted. A cached pass is replayed by entry index; if the cache is
        // flushed while a recirculation runs (epoch change), the rest of this
        // pass continues from a fresh translation.
        let mut slot_idx = None;
        let mut owned: Option<Xlation> = None;
        let mut cached = None;
        match (self.cache.as_deref_mut(), trace.is_some()) {
            (Some(c), false) => {
                let idx = match c.lookup_idx(&key) {
                    Some(i) => i,
                    None => {
                        let xl = &mut self.scratch.xl;
                        xlate_into(self.pipeline, self.ports, &key, table, None, xl);
                        c.insert(&key, xl.compact())
                    }
                };
                for n in &c.entry(idx).notes {
                    self.stats.drops.bump(*n);
                }
                if c.entry(idx).has_learn_events() {
                    // A walk with learn bookkeeping is never a chain: its
                    // passes must report (below) on every packet.
                    if let Some(r) = rec.as_deref_mut() {
                        r.ok = false;
                    }
                    // A cached pass reports at most every REFRESH_MS, as OVS
                    // pushes a megaflow's stats to its rules (and re-runs its
                    // learns) when it revalidates.
                    let e = c.entry_mut(idx);
                    let all = self.now_ms >= e.reported_ms + REFRESH_MS;
                    if all {
                        e.reported_ms = self.now_ms;
                    }
                    report_learn(&mut self.scratch.learn_events, e, &key, all);
                }
                c.credit(idx, pkt.len(), self.now_ms);
                let sgen = c.slot_gen(idx);
                cached = Some((idx, c.epoch(), sgen));
                if let Some(r) = rec.as_deref_mut() {
                    r.pass(idx, sgen);
                }
            }
            _ => {
                if let Some(r) = rec.as_deref_mut() {
                    r.ok = false;
                }
                let mut events = Vec::new();
                let xl = xlate(
                    self.pipeline,
                    self.ports,
                    &key,
                    table,
                    trace.as_ref().map(|_| &mut events),
                );
                for n in &xl.notes {
                    self.stats.drops.bump(*n);
                }
                if trace.is_none() {
                    for r in &xl.rules {
                        let e = self.scratch.uncached_rules.entry(*r).or_default();
                        e.credit(pkt.len(), self.now_ms);
                    }
                }
                if xl.has_learn_events() {
                    report_learn(&mut self.scratch.learn_events, &xl, &key, true);
                }
                slot_idx = trace.as_deref_mut().map(|t| {
                    t.push(TracePass {
                        table,
                        key,
                        events,
                        xlation: xl.clone(),
                        ct_results: Vec::new(),
                        notes: Vec::new(),
                    });
                    t.len() - 1
                });
                owned = Some(xl);
            }
        }
        let error = match (&owned, &cached) {
            (Some(x), _) => x.error,
            (None, Some((i, _, _))) => self
                .cache
                .as_deref()
                .map(|c| c.entry(*i).error)
                .unwrap_or(None),
            _ => None,
        };
        if let Some(e) = error {
            self.stats.drops.bump(e);
            return;
        }
        let n_actions = match (&owned, &cached) {
            (Some(x), _) => x.actions.len(),
            (None, Some((i, _, _))) => self
                .cache
                .as_deref()
                .map(|c| c.entry(*i).actions.len())
                .unwrap_or(0),
            _ => 0,
        };
        let mut ai = 0;
        while ai < n_actions {
            if let (None, Some((i, epoch, sgen))) = (&owned, cached) {
                let c = self.cache.as_deref().expect("cached pass has a cache");
                if c.epoch() != epoch || c.slot_gen(i) != sgen {
                    owned = Some(xlate(self.pipeline, self.ports, &key, table, None));
                }
            }
            // The action in place (a `Set` carries two keys: not copied).
            let a = match (&owned, cached) {
                (Some(x), _) => &x.actions[ai],
                (None, Some((i, _, _))) => {
                    let c = self.cache.as_deref().expect("cached pass has a cache");
                    &c.entry(i).actions[ai]
                }
                _ => break,
            };
            ai += 1;
            match a {
                DpAction::Set { from, to } => {
                    extract::commit(pkt, layout, from, to);
                    if rewrites_conn_key(from, to, &key) {
                        // OVS's packet_set_ipv4_addr / packet_set_{tcp,udp}_port
                        // / packet_set_icmp forget the cached connection
                        // (pkt_metadata_init_conn): the next ct() looks the
                        // rewritten packet up afresh.
                        md.conn = None;
                    }
                }
                DpAction::Output(port) => {
                    self.stats.tx += 1;
                    if ai == n_actions {
                        sink.output_last(*port, pkt);
                    } else {
                        sink.output(*port, pkt);
                    }
                }
                DpAction::Punt => {
                    self.stats.punts += 1;
                    self.stats.drops.bump(DropReason::ControllerPunt);
                }
                DpAction::Reject => {
                    let outcome =
                        reject(self.stats, &mut self.scratch.reject, self.now_ms, pkt, sink);
                    if let (Some(t), Some(i)) = (trace.as_deref_mut(), slot_idx) {
                        let note = reject_note(outcome, self.scratch.reject.origin());
                        t[i].notes.push(note);
                    }
                }
                DpAction::CtClear => *md = PktCtMeta::default(),
                DpAction::Ct { call, recirc } => {
                    let (call, recirc) = (*call, *recirc);
                    let Ok((rw, at)) = self.run_ct(pkt, layout, &key, md, &call) else {
                        return;
                    };
                    if let (Some(t), Some(i)) = (trace.as_deref_mut(), slot_idx) {
                        t[i].ct_results.push(*md);
                    }
                    if let Some(r) = recirc {
                        if recirc_depth >= MAX_RECIRC_DEPTH {
                            self.stats.drops.bump(DropReason::RecircDepth);
                            continue;
                        }
                        self.stats.recircs += 1;
                        let mut k2 = FlowKey::ZERO;
                        let in_port = r.frozen.get(slot::IN_PORT) as u32;
                        let Ok(l2) = extract::extract(pkt, in_port, &mut k2) else {
                            if let Some(r) = rec.as_deref_mut() {
                                r.ok = false;
                            }
                            continue;
                        };
                        restore_metadata(&mut k2, &r.frozen, r.table, md);
                        let mut md2 = *md;
                        if let Some(r) = rec.as_deref_mut() {
                            r.pending = CtExpect::new(md, rw);
                            r.pending_ct = at;
                            r.met_new |= md.state & cs::NEW != 0;
                        }
                        if ai == n_actions {
                            // Last action: the packet itself recirculates
                            // (no copy), as in dpif-netdev.
                            self.pass(
                                pkt,
                                &l2,
                                k2,
                                r.table,
                                &mut md2,
                                recirc_depth + 1,
                                sink,
                                trace,
                                rec.as_deref_mut(),
                            );
                        } else {
                            if let Some(r) = rec.as_deref_mut() {
                                r.ok = false;
                            }
                            // A fork: the copy goes into this depth's scratch
                            // buffer (allocated once, reused for every packet).
                            let d = recirc_depth as usize;
                            let mut buf = std::mem::take(&mut self.scratch.bufs[d]);
                            buf.clear();
                            buf.extend_from_slice(pkt);
                            self.pass(
                                &mut buf,
                                &l2,
                                k2,
                                r.table,
                                &mut md2,
                                recirc_depth + 1,
                                sink,
                                trace,
                                None,
                            );
                            self.scratch.bufs[d] = buf;
                        }
                    }
                }
            }
        }
    }
}

impl<P: PortSet + ?Sized> Engine<'_, P> {
    /// Run one `ct()` on the packet (conntrack, then its NAT rewrite on the
    /// bytes), updating `md`. `Err` when conntrack drops the packet (counted
    /// here); else the rewrite it applied and what a chain records of the
    /// call (the tuple and the connection found).
    #[inline]
    fn run_ct(
        &mut self,
        pkt: &mut [u8],
        layout: &Layout,
        key: &FlowKey,
        md: &mut PktCtMeta,
        call: &conntrack::CtCall,
    ) -> Result<(Option<conntrack::Rewrite>, CtAt), ()> {
        if key.get(slot::DL_TYPE) == key::eth_type::IPV4 as u64 {
            let view = &mut self.scratch.ct_view;
            let fresh = view
                .as_mut()
                .is_some_and(|p| extract::refresh_ct_packet(pkt, layout, p));
            let cp = match view {
                Some(p) if fresh => *p,
                _ => *view.insert(extract::ct_packet(pkt, layout)),
            };
            debug_assert_eq!(cp, extract::ct_packet(pkt, layout));
            let res = self.ct.execute(&cp, md, call, self.now_ms);
            if let Some(conntrack::CtDrop::NatExhausted) = res.drop {
                self.stats.drops.bump(DropReason::CtNatExhausted);
                return Err(());
            }
            if let Some(rw) = &res.rewrite {
                extract::apply_rewrite(pkt, layout, rw);
            }
            let at = CtAt {
                tuple: cp.tuple,
                hint: res.found,
            };
            Ok((res.rewrite, at))
        } else {
            // Not IPv4: conntrack cannot track it.
            if md.zone != call.zone {
                *md = PktCtMeta::default();
            }
            md.zone = call.zone;
            md.state = cs::TRK | cs::INV;
            Ok((None, CtAt::default()))
        }
    }

    /// Replay the chain recorded for first-pass key `key` (see
    /// [`crate::cache::chain`]): a compiled chain's program
    /// ([`run_compiled`]), or the recorded passes' megaflow actions in
    /// order, every `ct()` executed for real (on the recorded tuple,
    /// trying the recorded connection first), and at each recirculation a
    /// check that conntrack answered as recorded; where it did not, the
    /// walk continues on the ordinary path and the chain is dropped.
    /// `false` when there is no chain for `key` (or a compiled one for
    /// another header layout): the caller walks pass by pass.
    fn replay_chain(
        &mut self,
        pkt: &mut [u8],
        layout: &Layout,
        key: &FlowKey,
        sink: &mut dyn Sink,
    ) -> bool {
        let Some(cache) = self.cache.as_deref() else {
            return false;
        };
        let steps = match cache.chains.lookup(key, self.now_ms) {
            None => return false,
            Some(Chain::Steps(steps)) => steps,
            Some(Chain::Compiled(prog)) => {
                if !prog.shape.matches(layout, pkt.len()) {
                    return false;
                }
                let (ran, passes) = run_compiled(
                    &prog,
                    self.ct,
                    self.stats,
                    self.scratch,
                    self.now_ms,
                    pkt,
                    layout,
                    sink,
                );
                let (len, now) = (pkt.len(), self.now_ms);
                let c = self.cache.as_deref_mut().expect("checked above");
                c.stats.chain_passes += passes;
                match ran {
                    Ran::Whole => c.stats.chain_hits += 1,
                    Ran::Stopped { rules } => {
                        c.stats.chain_hits += 1;
                        c.chains.credit_part(key, rules, len, now);
                    }
                    Ran::Diverged {
                        rules,
                        resume,
                        depth,
                        mut md,
                    } => {
                        c.stats.chain_diverged += 1;
                        c.chains.credit_part(key, rules, len, now);
                        c.chains.remove(key);
                        self.resume(pkt, &resume, depth, &mut md, sink);
                    }
                }
                return true;
            }
        };
        // A chain is stale once one of its megaflows was evicted (its slot
        // generation moved): drop it and walk pass by pass.
        if steps.iter().any(|s| cache.slot_gen(s.entry) != s.sgen) {
            let c = self.cache.as_deref_mut().expect("checked above");
            c.chains.remove(key);
            c.stats.chain_stale += 1;
            return false;
        }
        let ipv4 = key.get(slot::DL_TYPE) == key::eth_type::IPV4 as u64;
        let mut md = PktCtMeta::default();
        let mut step = 0;
        // The conntrack view of the packet, parsed (checksums verified) at
        // the first ct(), its tuple refreshed from the bytes after.
        let mut cp: Option<conntrack::CtPacket> = None;
        // Where the walk left the chain: the recirculation to continue from.
        let resume = 'passes: loop {
            let x = cache.entry(steps[step].entry);
            cache.credit(steps[step].entry, pkt.len(), self.now_ms);
            self.stats.passes += 1;
            for n in &x.notes {
                self.stats.drops.bump(*n);
            }
            if let Some(e) = x.error {
                self.stats.drops.bump(e);
                break None;
            }
            let mut next = false;
            let last = x.actions.len();
            for (ai, a) in x.actions.iter().enumerate() {
                match a {
                    DpAction::Set { from, to } => {
                        extract::commit(pkt, layout, from, to);
                        if rewrites_conn_key(from, to, key) {
                            md.conn = None;
                        }
                    }
                    DpAction::Output(port) => {
                        self.stats.tx += 1;
                        // The step's last action: a chain recirculates only
                        // as a step's last action, so no later step runs.
                        if ai + 1 == last {
                            sink.output_last(*port, pkt);
                        } else {
                            sink.output(*port, pkt);
                        }
                    }
                    DpAction::Punt => {
                        self.stats.punts += 1;
                        self.stats.drops.bump(DropReason::ControllerPunt);
                    }
                    DpAction::Reject => {
                        reject(self.stats, &mut self.scratch.reject, self.now_ms, pkt, sink);
                    }
                    DpAction::CtClear => md = PktCtMeta::default(),
                    DpAction::Ct { call, recirc } => {
                        // Inlined `Self::run_ct` (it borrows all of `self`, and
                        // `cache` is borrowed here).
                        let at = match recirc {
                            Some(_) => steps.get(step + 1).map(|s| &s.ct),
                            None => None,
                        };
                        let rw = if ipv4 {
                            let fresh = match cp.as_mut() {
                                Some(p) => extract::refresh_ct_packet(pkt, layout, p),
                                None => false,
                            };
                            if !fresh {
                                cp = Some(extract::ct_packet(pkt, layout));
                            }
                            let p = cp.as_ref().expect("parsed above");
                            debug_assert!(*p == extract::ct_packet(pkt, layout));
                            let hint = at.and_then(|a| a.hint);
                            let res = self.ct.execute_hinted(p, &mut md, call, self.now_ms, hint);
                            if let Some(conntrack::CtDrop::NatExhausted) = res.drop {
                                self.stats.drops.bump(DropReason::CtNatExhausted);
                                break 'passes None;
                            }
                            if let Some(rw) = &res.rewrite {
                                extract::apply_rewrite(pkt, layout, rw);
                            }
                            res.rewrite
                        } else {
                            if md.zone != call.zone {
                                md = PktCtMeta::default();
                            }
                            md.zone = call.zone;
                            md.state = cs::TRK | cs::INV;
                            None
                        };
                        if let Some(r) = recirc {
                            if step as u32 >= MAX_RECIRC_DEPTH {
                                self.stats.drops.bump(DropReason::RecircDepth);
                                continue;
                            }
                            self.stats.recircs += 1;
                            // A recorded chain never forks, so this is the
                            // pass's last action.
                            match steps.get(step + 1) {
                                Some(s) if s.expect.matches(&md, &rw) => next = true,
                                _ => break 'passes Some((*r, step as u32)),
                            }
                        }
                    }
                }
            }
            if !next {
                break None;
            }
            step += 1;
        };
        let c = self.cache.as_deref_mut().expect("checked above");
        c.stats.chain_passes += step as u64 + 1;
        match resume {
            None => c.stats.chain_hits += 1,
            Some((r, depth)) => {
                c.stats.chain_diverged += 1;
                c.chains.remove(key);
                self.resume(pkt, &r, depth, &mut md, sink);
            }
        }
        true
    }

    /// Continue a replayed walk on the ordinary path after the `ct()` of
    /// recirculation `r` at depth `depth`, where conntrack answered `md`
    /// and the bytes are as the ordinary path leaves them there.
    #[cold]
    fn resume(
        &mut self,
        pkt: &mut [u8],
        r: &Recirc,
        depth: u32,
        md: &mut PktCtMeta,
        sink: &mut dyn Sink,
    ) {
        let mut k2 = FlowKey::ZERO;
        let in_port = r.frozen.get(slot::IN_PORT) as u32;
        if let Ok(l2) = extract::extract(pkt, in_port, &mut k2) {
            restore_metadata(&mut k2, &r.frozen, r.table, md);
            self.pass(pkt, &l2, k2, r.table, md, depth + 1, sink, &mut None, None);
        }
    }
}

/// How a compiled chain's replay ended (returned by value, once per
/// packet: the size of the diverging variant costs nothing on the others).
#[allow(clippy::large_enum_variant)]
enum Ran {
    /// The whole walk (or it ended in a translation error).
    Whole,
    /// Conntrack dropped the packet: the passes up to the `ct()` ran
    /// (their first `rules` rules).
    Stopped { rules: u16 },
    /// Conntrack answered otherwise than recorded: the walk continues on
    /// the ordinary path from `resume` at `depth` with metadata `md`.
    Diverged {
        rules: u16,
        resume: Recirc,
        depth: u32,
        md: PktCtMeta,
    },
}

/// Run compiled chain `prog` on `pkt` (see [`crate::cache::Compiled`]):
/// its ops in order, every `ct()` executed for real on the recorded tuple
/// (the bytes may lag behind: they are brought up to date by the next
/// patch wherever the walk needs them), trying the recorded connection
/// first. Where conntrack answers otherwise the bytes are brought to where
/// the ordinary path has them and the replay stops. Returns how it ended
/// and the passes it ran. Counts the packet in the chain when it ran the
/// whole walk.
#[allow(clippy::too_many_arguments)]
#[inline]
fn run_compiled(
    prog: &Compiled<'_>,
    ct: &mut Shard,
    stats: &mut ExecStats,
    scratch: &mut Scratch,
    now_ms: u64,
    pkt: &mut [u8],
    layout: &Layout,
    sink: &mut dyn Sink,
) -> (Ran, u64) {
    let mut md = PktCtMeta::default();
    let mut passes = 1;
    stats.passes += 1;
    // The conntrack view of the packet, parsed (checksums verified) at the
    // first ct(): checksum validity and TCP facts do not change with
    // rewrites (see refresh_ct_packet); the tuple is the recorded one.
    let mut cp: Option<conntrack::CtPacket> = None;
    let mut patch = 0;
    let mut shadow = Shadow::new(pkt, true);
    for op in prog.ops {
        match *op {
            Op::Note(n) => stats.drops.bump(n),
            Op::Error(e) => {
                stats.drops.bump(e);
                break;
            }
            #[cfg(debug_assertions)]
            Op::Set(i) => {
                let (from, to) = &prog.sets[i as usize];
                shadow.commit(layout, from, to);
            }
            Op::ForgetConn => md.conn = None,
            Op::Output { port, last } => {
                prog.apply(patch, pkt);
                patch += 1;
                shadow.check(pkt);
                stats.tx += 1;
                if last {
                    sink.output_last(port, pkt);
                } else {
                    sink.output(port, pkt);
                }
            }
            Op::Punt => {
                stats.punts += 1;
                stats.drops.bump(DropReason::ControllerPunt);
            }
            Op::Reject => {
                prog.apply(patch, pkt);
                patch += 1;
                shadow.check(pkt);
                reject(stats, &mut scratch.reject, now_ms, pkt, sink);
            }
            Op::CtClear => md = PktCtMeta::default(),
            Op::Ct(i) => {
                let c = &prog.cts[i as usize];
                let p = cp.get_or_insert_with(|| extract::ct_packet(pkt, layout));
                p.tuple = c.at.tuple;
                shadow.ct_tuple(layout, p);
                let call = &prog.calls[c.call as usize];
                let res = ct.execute_hinted(p, &mut md, call, now_ms, c.at.hint);
                if let Some(conntrack::CtDrop::NatExhausted) = res.drop {
                    stats.drops.bump(DropReason::CtNatExhausted);
                    let rules = prog.cold[i as usize].rules_upto;
                    return (Ran::Stopped { rules }, passes);
                }
                shadow.rewrite(layout, &res.rewrite);
                stats.recircs += 1;
                if !c.expect.matches(&md, &res.rewrite) {
                    // The bytes as the ordinary path has them after this
                    // ct(): the rewrites since the last output, then
                    // conntrack's.
                    let cold = &prog.cold[i as usize];
                    prog.apply_patch(&cold.catchup, pkt);
                    if let Some(rw) = &res.rewrite {
                        extract::apply_rewrite(pkt, layout, rw);
                    }
                    shadow.check(pkt);
                    let ran = Ran::Diverged {
                        rules: cold.rules_upto,
                        resume: cold.resume.recirc(),
                        depth: passes as u32 - 1,
                        md,
                    };
                    return (ran, passes);
                }
                passes += 1;
                stats.passes += 1;
            }
        }
    }
    // Rewrites after the last output: the bytes end as the ordinary path
    // leaves them.
    prog.apply(patch, pkt);
    shadow.check(pkt);
    prog.credit(pkt.len(), now_ms);
    (Ran::Whole, passes)
}

/// Debug builds: the bytes the ordinary path would produce, computed
/// alongside a compiled chain's replay and compared wherever its patches
/// bring the packet up to date; also checks that the tuple recorded for
/// each `ct()` is the packet's. Release builds: nothing.
struct Shadow {
    #[cfg(debug_assertions)]
    buf: Option<([u8; 2048], usize)>,
}

#[cfg(debug_assertions)]
impl Shadow {
    fn new(pkt: &[u8], on: bool) -> Shadow {
        Shadow {
            buf: (on && pkt.len() <= 2048).then(|| {
                let mut b = [0u8; 2048];
                b[..pkt.len()].copy_from_slice(pkt);
                (b, pkt.len())
            }),
        }
    }
    fn bytes(&mut self) -> Option<&mut [u8]> {
        self.buf.as_mut().map(|(b, n)| &mut b[..*n])
    }
    fn commit(&mut self, layout: &Layout, from: &FlowKey, to: &FlowKey) {
        if let Some(b) = self.bytes() {
            extract::commit(b, layout, from, to);
        }
    }
    fn ct_tuple(&mut self, layout: &Layout, cp: &conntrack::CtPacket) {
        if let Some(b) = self.bytes() {
            assert_eq!(extract::ct_packet(b, layout), *cp, "recorded ct() tuple");
        }
    }
    fn rewrite(&mut self, layout: &Layout, rw: &Option<conntrack::Rewrite>) {
        if let (Some(b), Some(rw)) = (self.bytes(), rw) {
            extract::apply_rewrite(b, layout, rw);
        }
    }
    fn check(&mut self, pkt: &[u8]) {
        if let Some(b) = self.bytes() {
            assert_eq!(pkt, &*b, "compiled chain bytes");
        }
    }
}

#[cfg(not(debug_assertions))]
impl Shadow {
    #[inline(always)]
    fn new(_: &[u8], _: bool) -> Shadow {
        Shadow {}
    }
    #[inline(always)]
    fn ct_tuple(&mut self, _: &Layout, _: &conntrack::CtPacket) {}
    #[inline(always)]
    fn rewrite(&mut self, _: &Layout, _: &Option<conntrack::Rewrite>) {}
    #[inline(always)]
    fn check(&mut self, _: &[u8]) {}
}

/// Execute a REJECT: answer the packet (see [`crate::reject`]) on its
/// in_port, or count why not. Cold: only Services without endpoints get
/// here.
#[cold]
fn reject(
    stats: &mut ExecStats,
    st: &mut RejectState,
    now_ms: u64,
    pkt: &[u8],
    sink: &mut dyn Sink,
) -> Outcome {
    stats.punts += 1;
    let outcome = st.answer(pkt, now_ms);
    match outcome {
        Outcome::Sent { answer, port } => {
            stats.tx += 1;
            stats.rejects += 1;
            sink.answer(port, st.frame(), answer);
        }
        Outcome::Dropped(r) => stats.drops.bump(r),
        Outcome::Already => {}
    }
    outcome
}

/// The trace line for a REJECT: what was answered, from which address to
/// which, or why not.
fn reject_note(outcome: Outcome, origin: &FlowKey) -> String {
    let ip = |s| std::net::Ipv4Addr::from(origin.get(s) as u32);
    let (src, dst) = (ip(slot::NW_SRC), ip(slot::NW_DST));
    let (sp, dp) = (origin.get(slot::TP_SRC), origin.get(slot::TP_DST));
    match outcome {
        Outcome::Sent { answer, port } => format!(
            "reject: answered with {} from {dst}:{dp} to {src}:{sp} (the packet as it entered), out in_port {port}",
            answer.name()
        ),
        Outcome::Dropped(r) => format!("reject: not answered, dropped ({})", r.name()),
        Outcome::Already => "reject: already answered".into(),
    }
}

/// Whether a header commit changes what conntrack keys on (IPv4 addresses,
/// TCP/UDP ports, ICMP type/code), which invalidates the packet's cached
/// connection as in OVS.
pub(crate) fn rewrites_conn_key(from: &FlowKey, to: &FlowKey, key: &FlowKey) -> bool {
    if key.get(slot::DL_TYPE) != key::eth_type::IPV4 as u64 {
        return false;
    }
    let differs = |s: key::Slot| from.get(s) != to.get(s);
    let l4 = matches!(
        key.get(slot::NW_PROTO) as u8,
        key::ip_proto::TCP | key::ip_proto::UDP | key::ip_proto::ICMP
    ) && (differs(slot::TP_SRC) || differs(slot::TP_DST));
    differs(slot::NW_SRC) || differs(slot::NW_DST) || l4
}

/// Build a recirculated pass's key: headers from the packet, metadata
/// (registers, pkt_mark, OpenFlow metadata) frozen at the `ct()`, conntrack
/// fields from the packet's conntrack metadata.
fn restore_metadata(k: &mut FlowKey, frozen: &FlowKey, table: u8, md: &PktCtMeta) {
    for w in 7..=14 {
        k.w[w] = frozen.w[w];
    }
    k.set(slot::PKT_MARK, frozen.get(slot::PKT_MARK));
    k.set(slot::METADATA, frozen.get(slot::METADATA));
    k.set(slot::RECIRC_ID, 1 + table as u64);
    set_ct_fields(k, md);
}

/// Copy the packet's conntrack metadata into the key's ct fields.
pub fn set_ct_fields(k: &mut FlowKey, md: &PktCtMeta) {
    k.set(slot::CT_STATE, md.state as u64);
    k.set(slot::CT_ZONE, md.zone as u64);
    k.set(slot::CT_MARK, md.mark as u64);
    k.set_ct_label(md.label);
    if let Some(t) = md.orig {
        k.set(slot::CT_NW_SRC, t.src as u64);
        k.set(slot::CT_NW_DST, t.dst as u64);
        k.set(slot::CT_NW_PROTO, t.proto as u64);
        k.set(slot::CT_TP_SRC, t.sport as u64);
        k.set(slot::CT_TP_DST, t.dport as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse;
    use crate::wire::build::PacketBuilder;

    fn run(flows: &str) -> ExecStats {
        let p = Pipeline::new(parse::parse_flows("f", flows).unwrap(), vec![]);
        let mut ct = Shard::default();
        let mut stats = ExecStats::default();
        let mut scratch = Scratch::default();
        let ports = [1u32, 2];
        let mut e = Engine {
            pipeline: &p,
            ports: &ports[..],
            ct: &mut ct,
            now_ms: 0,
            stats: &mut stats,
            cache: None,
            scratch: &mut scratch,
        };
        let mut pkt = PacketBuilder::udp(1u64, 2u64, 0x0a00_0001u32, 0x0a00_0002u32, 1, 2).build();
        e.process(&mut pkt, 1, &mut |_: u32, _: &[u8]| {}, None);
        stats
    }

    /// The chain cache replays a walk only while conntrack answers as
    /// recorded: a new connection's chain diverges on its next packet
    /// (now established), an established one replays, a flush makes it
    /// diverge again, and a pipeline generation change drops every chain.
    #[test]
    fn chains_replay_until_conntrack_answers_differently() {
        let flows = "table=0,ip,actions=ct(zone=1,table=1)\n\
                     table=1,ct_state=+trk+new,ip,actions=ct(zone=1,commit),output:2\n\
                     table=1,ct_state=+trk+est,ip,actions=mod_nw_tos:8,output:2\n";
        let p = Pipeline::new(parse::parse_flows("f", flows).unwrap(), vec![]);
        let mut ct = Shard::default();
        let mut stats = ExecStats::default();
        let mut scratch = Scratch::default();
        let mut cache = MegaflowCache::new(64, true);
        let ports = [1u32, 2];
        let fwd = PacketBuilder::udp(1u64, 2u64, 0x0a00_0001u32, 0x0a00_0002u32, 1, 2).build();
        let rpl = PacketBuilder::udp(2u64, 1u64, 0x0a00_0002u32, 0x0a00_0001u32, 2, 1).build();
        let mut send = |ct: &mut Shard, cache: &mut MegaflowCache, pkt0: &[u8]| {
            let mut outs = Vec::new();
            let mut e = Engine {
                pipeline: &p,
                ports: &ports[..],
                ct,
                now_ms: 0,
                stats: &mut stats,
                cache: Some(cache),
                scratch: &mut scratch,
            };
            let mut pkt = pkt0.to_vec();
            e.process(
                &mut pkt,
                1,
                &mut |port: u32, b: &[u8]| outs.push((port, b[15])),
                None,
            );
            (outs, cache.stats.chain_hits, cache.stats.chain_diverged)
        };
        // New: a walk into a new connection is not recorded the first
        // time its key walks (`NewWalks`)...
        assert_eq!(send(&mut ct, &mut cache, &fwd), (vec![(2, 0)], 0, 0));
        assert_eq!(cache.stats.chain_deferred, 1);
        assert!(cache.chains.is_empty());
        // ... but the second time: still new (OVS: one-way UDP stays +new
        // until a reply), recorded with ct_state=new, then replayed.
        assert_eq!(send(&mut ct, &mut cache, &fwd), (vec![(2, 0)], 0, 0));
        assert!(!cache.chains.is_empty());
        assert_eq!(send(&mut ct, &mut cache, &fwd), (vec![(2, 0)], 1, 0));
        // The reply is +est+rpl: recorded at once.
        assert_eq!(send(&mut ct, &mut cache, &rpl), (vec![(2, 8)], 1, 0));
        // Established now: the replay diverges at the recirculation and the
        // ordinary path takes the +est flow (TOS rewritten).
        assert_eq!(send(&mut ct, &mut cache, &fwd), (vec![(2, 8)], 1, 1));
        assert_eq!(send(&mut ct, &mut cache, &fwd), (vec![(2, 8)], 1, 1));
        assert_eq!(send(&mut ct, &mut cache, &fwd), (vec![(2, 8)], 2, 1));
        assert_eq!(send(&mut ct, &mut cache, &rpl), (vec![(2, 8)], 3, 1));
        assert_eq!(cache.stats.chain_deferred, 1);
        assert_eq!(ct.len(), 1);
        ct.flush(None, None);
        assert_eq!(send(&mut ct, &mut cache, &fwd), (vec![(2, 0)], 3, 2));
        assert_eq!(ct.len(), 1, "committed again on the ordinary path");
        assert!(!cache.chains.is_empty());
        cache.sync_generation(7);
        assert!(cache.chains.is_empty(), "a new pipeline drops every chain");
    }

    /// DNAT in zone 1 (port 1 to 10.0.0.9:8080), then MAC/TTL rewrites
    /// towards port 2; replies go back to port 1.
    const DNAT_FLOWS: &str = "table=0,ip,actions=ct(zone=1,table=1,nat)\n\
        table=1,ct_state=+trk+new,ip,actions=ct(zone=1,commit,table=2,nat(dst=10.0.0.9:8080))\n\
        table=1,ct_state=+trk+est,ip,actions=resubmit(,2)\n\
        table=2,ip,in_port=1,actions=mod_dl_src:0a:58:ac:10:02:01,dec_ttl,output:2\n\
        table=2,ip,in_port=2,actions=output:1\n";

    /// A compiled chain (DNAT, then MAC/TTL rewrites) sends exactly the
    /// bytes the uncached engine does, through new, established, reply,
    /// flushed and re-created connections, and does replay compiled.
    #[test]
    fn compiled_chains_send_the_bytes_of_the_ordinary_path() {
        let p = Pipeline::new(parse::parse_flows("f", DNAT_FLOWS).unwrap(), vec![]);
        let ports = [1u32, 2];
        let fwd = PacketBuilder::udp(1u64, 2u64, 0x0a00_0001u32, 0x0a00_0002u32, 1000, 53).build();
        let rpl =
            PacketBuilder::udp(2u64, 1u64, 0x0a00_0009u32, 0x0a00_0001u32, 8080, 1000).build();
        let mut ct = [Shard::default(), Shard::default()];
        let mut cache = MegaflowCache::new(64, true);
        let mut scratch = Scratch::default();
        let mut run = |ct: &mut Shard, cache: Option<&mut MegaflowCache>, pkt0: &[u8], port| {
            let mut stats = ExecStats::default();
            let mut outs = Vec::new();
            let mut e = Engine {
                pipeline: &p,
                ports: &ports[..],
                ct,
                now_ms: 0,
                stats: &mut stats,
                cache,
                scratch: &mut scratch,
            };
            let mut pkt = pkt0.to_vec();
            e.process(
                &mut pkt,
                port,
                &mut |o: u32, b: &[u8]| outs.push((o, b.to_vec())),
                None,
            );
            outs
        };
        let seq = [1, 2, 1, 1, 1, 1, 2, 2, 1, 1, 1];
        for (i, port) in seq.into_iter().enumerate() {
            let pkt = if port == 1 { &fwd } else { &rpl };
            if i == 8 {
                // Established both ways by now: the client's chain is
                // compiled (a +new walk never is).
                let mut k = FlowKey::ZERO;
                extract::extract(&fwd, 1, &mut k).unwrap();
                let chain = cache.chains.lookup(&k, 0).expect("the client's chain");
                assert!(matches!(chain, Chain::Compiled(_)), "compiled");
                ct[0].flush(None, None);
                ct[1].flush(None, None);
            }
            let [a, b] = &mut ct;
            let want = run(a, None, pkt, port);
            let got = run(b, Some(&mut cache), pkt, port);
            assert_eq!(got, want, "packet {i}");
            assert_eq!(want.len(), 1, "packet {i}");
        }
        assert!(cache.stats.chain_hits >= 5, "{:?}", cache.stats);
        // The flush makes the client's chain diverge (the first packet's
        // +new walk was never recorded: `NewWalks`).
        assert!(cache.stats.chain_diverged >= 1, "{:?}", cache.stats);
        assert!(cache.stats.chain_deferred >= 1, "{:?}", cache.stats);
    }

    /// Compiled chains need no megaflow entry: with far more connections
    /// than megaflows (each connection's established pass is its own
    /// megaflow, evicted by the next), established packets still replay
    /// their chains, send the uncached engine's bytes, and every rule's
    /// counts are the uncached engine's.
    #[test]
    fn compiled_chains_outlive_their_megaflows_and_count_exactly() {
        let flows = "table=0,ip,actions=ct(zone=1,table=1)\n\
                     table=1,ct_state=+trk+new,ip,actions=ct(zone=1,commit),output:2\n\
                     table=1,ct_state=+trk+est,udp,in_port=1,actions=move:NXM_OF_UDP_SRC[]->NXM_NX_REG0[0..15],mod_nw_tos:8,output:2\n\
                     table=1,ct_state=+trk+est,udp,in_port=2,actions=output:1\n";
        let p = Pipeline::new(parse::parse_flows("f", flows).unwrap(), vec![]);
        let ports = [1u32, 2];
        let mut ct = [Shard::default(), Shard::default()];
        let mut cache = MegaflowCache::new(6, true).with_chain_capacity(64);
        let mut scratch = [Scratch::default(), Scratch::default()];
        let run = |ct: &mut Shard,
                   scratch: &mut Scratch,
                   cache: Option<&mut MegaflowCache>,
                   pkt0: &[u8],
                   port| {
            let mut stats = ExecStats::default();
            let mut outs = Vec::new();
            let mut e = Engine {
                pipeline: &p,
                ports: &ports[..],
                ct,
                now_ms: 5,
                stats: &mut stats,
                cache,
                scratch,
            };
            let mut pkt = pkt0.to_vec();
            e.process(
                &mut pkt,
                port,
                &mut |o: u32, b: &[u8]| outs.push((o, b.to_vec())),
                None,
            );
            outs
        };
        let n = 12u16;
        let fwd = |i: u16| {
            PacketBuilder::udp(1u64, 2u64, 0x0a00_0001u32, 0x0a00_0002u32, 1000 + i, 53).build()
        };
        let rpl = |i: u16| {
            PacketBuilder::udp(2u64, 1u64, 0x0a00_0002u32, 0x0a00_0001u32, 53, 1000 + i).build()
        };
        let mut seq = Vec::new();
        for i in 0..n {
            seq.push((fwd(i), 1));
            seq.push((rpl(i), 2));
        }
        for _round in 0..4 {
            for i in 0..n {
                seq.push((fwd(i), 1));
            }
        }
        let mut before_last_round = cache.stats;
        for (j, (pkt, port)) in seq.iter().enumerate() {
            if j == seq.len() - n as usize {
                before_last_round = cache.stats;
            }
            let [a, b] = &mut ct;
            let [sa, sb] = &mut scratch;
            let want = run(a, sa, None, pkt, *port);
            let got = run(b, sb, Some(&mut cache), pkt, *port);
            assert_eq!(got, want, "packet {j}");
            assert_eq!(want.len(), 1, "packet {j}");
        }
        let s = cache.stats;
        assert!(s.evictions > 0, "{s:?}");
        // By the last round every connection's chain is compiled: every
        // packet replays it, though its megaflows are long evicted.
        assert_eq!(s.chain_hits - before_last_round.chain_hits, u64::from(n));
        assert_eq!(s.chain_stale, before_last_round.chain_stale, "{s:?}");
        assert!(cache.len() < n as usize, "most of their megaflows are gone");
        let mut got: Vec<_> = cache
            .rule_counts()
            .into_iter()
            .map(|(r, s)| (r, s.packets, s.bytes))
            .collect();
        let mut want: Vec<_> = scratch[0]
            .uncached_rules
            .iter()
            .map(|(r, s)| (*r, s.packets, s.bytes))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        // Taken counts start over; a pipeline change keeps nothing.
        let taken = cache.take_rule_counts();
        assert_eq!(
            taken.values().map(|s| s.packets).sum::<u64>(),
            want.iter().map(|w| w.1).sum::<u64>()
        );
        assert!(cache.rule_counts().values().all(|s| s.packets == 0));
    }

    /// `process_burst` is `process` packet by packet: same outputs,
    /// conntrack state, counters and per-rule counts, through new,
    /// established, diverging and dropped packets.
    #[test]
    fn a_burst_runs_as_its_packets_one_by_one() {
        let p = Pipeline::new(parse::parse_flows("f", DNAT_FLOWS).unwrap(), vec![]);
        let ports = [1u32, 2];
        let fwd = |i: u16| {
            PacketBuilder::udp(1u64, 2u64, 0x0a00_0001u32, 0x0a00_0002u32, 1000 + i, 53).build()
        };
        let rpl = |i: u16| {
            PacketBuilder::udp(2u64, 1u64, 0x0a00_0009u32, 0x0a00_0001u32, 8080, 1000 + i).build()
        };
        let mut pkts: Vec<(Vec<u8>, u32)> = Vec::new();
        for round in 0..6u16 {
            for i in 0..7u16 {
                pkts.push((fwd(i), 1));
                if round % 2 == 1 {
                    pkts.push((rpl(i), 2));
                }
            }
            // A runt: dropped at extraction.
            pkts.push((vec![0u8; 10], 1));
        }
        let mut outs = [Vec::new(), Vec::new()];
        let mut stats = [ExecStats::default(), ExecStats::default()];
        let mut ct = [Shard::default(), Shard::default()];
        let mut caches = [MegaflowCache::new(64, true), MegaflowCache::new(64, true)];
        for (k, ((out, st), (ct, cache))) in outs
            .iter_mut()
            .zip(stats.iter_mut())
            .zip(ct.iter_mut().zip(caches.iter_mut()))
            .enumerate()
        {
            let mut scratch = Scratch::default();
            let mut e = Engine {
                pipeline: &p,
                ports: &ports[..],
                ct,
                now_ms: 0,
                stats: st,
                cache: Some(cache),
                scratch: &mut scratch,
            };
            let mut sink = |o: u32, b: &[u8]| out.push((o, b.to_vec()));
            let mut bufs = pkts.clone();
            if k == 0 {
                for (b, port) in bufs.iter_mut() {
                    e.process(b, *port, &mut sink, None);
                }
            } else {
                for chunk in bufs.chunks_mut(5) {
                    let mut burst: Vec<(&mut [u8], u32)> = chunk
                        .iter_mut()
                        .map(|(b, p)| (b.as_mut_slice(), *p))
                        .collect();
                    e.process_burst(&mut burst, &mut sink);
                }
            }
        }
        assert_eq!(outs[0], outs[1]);
        assert!(outs[0].len() > 40);
        assert_eq!(format!("{:?}", stats[0]), format!("{:?}", stats[1]));
        assert_eq!(caches[0].stats, caches[1].stats);
        assert!(caches[0].stats.chain_hits > 10, "{:?}", caches[0].stats);
        assert_eq!(ct[0].dump(None), ct[1].dump(None));
        let counts = |c: &MegaflowCache| {
            let mut v: Vec<_> = c
                .rule_counts()
                .into_iter()
                .map(|(r, s)| (r, s.packets))
                .collect();
            v.sort();
            v
        };
        assert_eq!(counts(&caches[0]), counts(&caches[1]));
    }

    #[test]
    fn a_dropped_packet_counts_exactly_one_reason() {
        let s = run("table=0,actions=drop\n");
        assert_eq!((s.drops.get(DropReason::Explicit), s.drops.total()), (1, 1));
        let s = run("table=1,actions=output:2\n");
        assert_eq!(
            (s.drops.get(DropReason::TableMiss), s.drops.total()),
            (1, 1)
        );
        let s = run("table=0,actions=load:0x1->NXM_NX_REG0[]\n");
        assert_eq!((s.drops.get(DropReason::NoOutput), s.drops.total()), (1, 1));
        let s = run("table=0,actions=output:2\n");
        assert_eq!((s.tx, s.drops.total()), (1, 0));
    }
}
