//! Offline replay: a STEPS file of packets and directives run through a
//! pipeline on one in-memory core with an injected conntrack clock.
//!
//! STEPS, one per line: `PORT HEX` (port by name, number or `LOCAL`; the hex
//! may contain spaces or colons), `@warp MS` (advance the conntrack clock),
//! `@flush-ct`, `@ct [ZONE]` (record a conntrack dump), `@flows [TABLE]`
//! (record `dump-flows`: static and learned flows, sorted lines); blank
//! lines and `#` comments are skipped.
//!
//! Flows that `learn` actions add are applied after each packet, on the
//! replay clock, and expire as the clock moves (`@warp`): a
//! [`LearnStore`] per session.

use std::fmt;

use conntrack::Shard;

use crate::cache::MegaflowCache;
use crate::key::OFPP_LOCAL;
use crate::pipeline::Pipeline;
use crate::pipeline::classifier::FlowIdx;
use crate::pipeline::exec::{self, Engine, ExecStats, Scratch, Sink, TracePass};
use crate::pipeline::learn::LearnStore;
use crate::pipeline::stats::{FlowStat, FlowTimes, RuleStats, merge};
use crate::reject::Answer;

/// Port names and numbers of a replay.
#[derive(Debug, Clone, Default)]
pub struct PortMap {
    /// `(name, ofport)` in the order given.
    pub ports: Vec<(String, u32)>,
}

impl PortMap {
    /// Parse `NAME=OFPORT,...` (OFPORT a number or `LOCAL`).
    pub fn parse(s: &str) -> Result<PortMap, String> {
        let mut ports = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, num) = item
                .split_once('=')
                .ok_or_else(|| format!("--ports: `{item}`: expected NAME=OFPORT"))?;
            let num = parse_port_number(num.trim()).ok_or_else(|| {
                format!("--ports: `{item}`: `{num}` is not a port number or LOCAL")
            })?;
            let name = name.trim();
            if name.is_empty()
                || ports
                    .iter()
                    .any(|(n, p): &(String, u32)| n == name || *p == num)
            {
                return Err(format!(
                    "--ports: `{item}`: empty or duplicate port name or number"
                ));
            }
            ports.push((name.to_string(), num));
        }
        Ok(PortMap { ports })
    }

    /// Resolve a port written in a step: a name, a number, or `LOCAL`.
    pub fn resolve(&self, s: &str) -> Option<u32> {
        if let Some((_, n)) = self.ports.iter().find(|(name, _)| name == s) {
            return Some(*n);
        }
        parse_port_number(s)
    }

    /// The name to print for `port`.
    pub fn name(&self, port: u32) -> String {
        match self.ports.iter().find(|(_, n)| *n == port) {
            Some((name, _)) => name.clone(),
            None if port == OFPP_LOCAL => "LOCAL".into(),
            None => port.to_string(),
        }
    }

    /// Port numbers that exist: the mapped ones plus `LOCAL`.
    pub fn numbers(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.ports.iter().map(|(_, n)| *n).collect();
        if !v.contains(&OFPP_LOCAL) {
            v.push(OFPP_LOCAL);
        }
        v
    }
}

fn parse_port_number(s: &str) -> Option<u32> {
    if s.eq_ignore_ascii_case("LOCAL") {
        return Some(OFPP_LOCAL);
    }
    s.parse::<u32>().ok().filter(|n| *n > 0 && *n < 0xff00)
}

/// One step of a STEPS file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Receive `bytes` on `port` (as written).
    Packet {
        /// Port as written.
        port: String,
        /// Frame bytes.
        bytes: Vec<u8>,
    },
    /// Advance the conntrack clock by this many milliseconds.
    Warp(u64),
    /// Flush all conntrack entries.
    FlushCt,
    /// Record a conntrack dump, optionally of one zone.
    Ct(Option<u16>),
    /// Record the flows (as `ovs-ofctl --no-stats dump-flows`, sorted
    /// lines), optionally of one table.
    Flows(Option<u8>),
}

/// A STEPS syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// File name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.msg)
    }
}

impl std::error::Error for StepError {}

/// Parse a STEPS file. Ports are resolved against `ports` so that an unknown
/// port is reported with its line.
pub fn parse_steps(file: &str, text: &str, ports: &PortMap) -> Result<Vec<Step>, StepError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let err = |msg: String| StepError {
            file: file.to_string(),
            line: i + 1,
            msg,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('@') {
            let mut it = rest.split_whitespace();
            let cmd = it.next().unwrap_or("");
            let args: Vec<&str> = it.collect();
            let step = match (cmd, args.as_slice()) {
                ("warp", [ms]) => {
                    Step::Warp(ms.parse().map_err(|_| {
                        err(format!("@warp: `{ms}` is not a number of milliseconds"))
                    })?)
                }
                ("flush-ct", []) => Step::FlushCt,
                ("flows", []) => Step::Flows(None),
                ("flows", [t]) => {
                    let t = t.strip_prefix("table=").unwrap_or(t);
                    Step::Flows(Some(t.parse().map_err(|_| {
                        err(format!("@flows: `{t}` is not a table (0-254)"))
                    })?))
                }
                ("ct", []) => Step::Ct(None),
                ("ct", [z]) => {
                    let z = z.strip_prefix("zone=").unwrap_or(z);
                    Step::Ct(Some(z.parse().map_err(|_| {
                        err(format!("@ct: `{z}` is not a zone (0-65535)"))
                    })?))
                }
                _ => {
                    return Err(err(format!(
                        "unknown directive `@{rest}` (expected @warp MS, @flush-ct, @ct [ZONE] or @flows [TABLE])"
                    )));
                }
            };
            out.push(step);
            continue;
        }
        let (port, hex) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| err("expected `PORT HEX`".into()))?;
        if ports.resolve(port).is_none() {
            return Err(err(format!(
                "unknown port `{port}` (known: {})",
                known(ports)
            )));
        }
        let bytes = parse_hex(hex).map_err(|m| err(format!("packet hex: {m}")))?;
        if bytes.is_empty() {
            return Err(err("empty packet".into()));
        }
        out.push(Step::Packet {
            port: port.to_string(),
            bytes,
        });
    }
    Ok(out)
}

fn known(ports: &PortMap) -> String {
    let mut v: Vec<String> = ports
        .ports
        .iter()
        .map(|(n, p)| format!("{n}={p}"))
        .collect();
    v.push("LOCAL".into());
    v.join(", ")
}

/// Parse hex digits, ignoring spaces, tabs and colons.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'\t' | b':'))
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|c| {
            let h = std::str::from_utf8(c).map_err(|_| "not hex".to_string())?;
            u8::from_str_radix(h, 16).map_err(|_| format!("`{h}` is not a hex byte"))
        })
        .collect()
}

/// What one step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    /// A packet's outputs in emission order.
    Packet {
        /// Step index.
        index: usize,
        /// In-port name.
        in_port: String,
        /// `(port name, bytes)` in emission order.
        outputs: Vec<(String, Vec<u8>)>,
        /// Which of `outputs` are the datapath's own answers to a REJECT
        /// (index into `outputs`, and what it is). OVS without a controller
        /// sends nothing for them: a documented deviation.
        answers: Vec<(usize, Answer)>,
    },
    /// A directive; `entries` holds the dump lines of `@ct`.
    Cmd {
        /// Step index.
        index: usize,
        /// `warp`, `ct`, `flush-ct` or `flows`.
        cmd: &'static str,
        /// Arguments as strings.
        args: Vec<String>,
        /// Conntrack dump lines (for `ct`), flow lines (for `flows`).
        entries: Vec<String>,
    },
}

/// Collects a packet's outputs, marking REJECT answers.
#[derive(Default)]
struct ReplaySink {
    outputs: Vec<(u32, Vec<u8>)>,
    answers: Vec<(usize, Answer)>,
    /// The last `output_last`: where its bytes were, and what they were.
    last: Option<(*const u8, usize, u64)>,
}

impl ReplaySink {
    /// Whether `pkt` (the buffer the walk ran on) still holds what an
    /// `output_last` of that buffer sent: the contract that lets the worker
    /// transmit a received frame in place instead of copying it.
    fn last_output_kept(&self, pkt: &[u8]) -> bool {
        match self.last {
            Some((p, n, d)) if (p, n) == (pkt.as_ptr(), pkt.len()) => exec::digest(pkt) == d,
            _ => true,
        }
    }
}

impl Sink for ReplaySink {
    fn output_last(&mut self, port: u32, pkt: &[u8]) {
        self.last = Some((pkt.as_ptr(), pkt.len(), exec::digest(pkt)));
        self.output(port, pkt);
    }

    fn output(&mut self, port: u32, pkt: &[u8]) {
        self.outputs.push((port, pkt.to_vec()));
    }

    fn answer(&mut self, port: u32, pkt: &[u8], answer: Answer) {
        self.answers.push((self.outputs.len(), answer));
        self.output(port, pkt);
    }
}

/// Conntrack clock at the start of a replay (ms). Non-zero so that nothing
/// looks expired at time zero.
pub const REPLAY_EPOCH_MS: u64 = 1_000_000;

/// A replay session: pipeline, ports, one conntrack shard and a clock.
pub struct Replayer<'a> {
    /// The pipeline as given.
    pub pipeline: &'a Pipeline,
    /// The pipeline packets run through: `pipeline` plus what was learned.
    current: Pipeline,
    /// Learned flows.
    pub learned: LearnStore,
    /// Port names.
    pub ports: &'a PortMap,
    numbers: Vec<u32>,
    /// Conntrack.
    pub ct: Shard,
    /// Clock.
    pub now_ms: u64,
    /// Counters.
    pub stats: ExecStats,
    /// Flow cache, when replaying through the cached path.
    pub cache: Option<MegaflowCache>,
    scratch: Scratch,
    /// Per-flow counts of earlier learned-flow generations.
    rule_stats: RuleStats,
    /// The static flows in force: `pipeline`'s, less those expired.
    base: Pipeline,
    /// When the static flows were added and modified (their timeouts).
    times: FlowTimes,
}

impl<'a> Replayer<'a> {
    /// A fresh session with an empty conntrack table.
    pub fn new(pipeline: &'a Pipeline, ports: &'a PortMap) -> Self {
        Replayer {
            pipeline,
            current: pipeline.clone(),
            learned: LearnStore::new(),
            ports,
            numbers: ports.numbers(),
            ct: Shard::default(),
            now_ms: REPLAY_EPOCH_MS,
            stats: ExecStats::default(),
            cache: None,
            scratch: Scratch::default(),
            rule_stats: RuleStats::new(pipeline),
            base: pipeline.clone(),
            times: FlowTimes::new(pipeline, REPLAY_EPOCH_MS),
        }
    }

    /// Replay through a flow cache (megaflow + exact match) instead of
    /// translating every pass.
    pub fn with_cache(mut self) -> Self {
        self.cache = Some(MegaflowCache::new(65536, true));
        self
    }

    /// Run one step (`index` is echoed into the result).
    pub fn step(
        &mut self,
        index: usize,
        step: &Step,
        trace: Option<&mut Vec<TracePass>>,
    ) -> StepResult {
        match step {
            Step::Packet { port, bytes } => {
                self.expire_static();
                let in_port = self.ports.resolve(port).unwrap_or(0);
                let mut pkt = bytes.clone();
                let mut sink = ReplaySink::default();
                let mut eng = Engine {
                    pipeline: &self.current,
                    ports: &self.numbers[..],
                    ct: &mut self.ct,
                    now_ms: self.now_ms,
                    stats: &mut self.stats,
                    cache: self.cache.as_mut(),
                    scratch: &mut self.scratch,
                };
                eng.process(&mut pkt, in_port, &mut sink, trace);
                debug_assert!(
                    sink.last_output_kept(&pkt),
                    "the packet's bytes changed after output_last"
                );
                self.apply_learned();
                StepResult::Packet {
                    index,
                    in_port: self.ports.name(in_port),
                    outputs: sink
                        .outputs
                        .into_iter()
                        .map(|(p, b)| (self.ports.name(p), b))
                        .collect(),
                    answers: sink.answers,
                }
            }
            Step::Warp(ms) => {
                self.now_ms += ms;
                self.apply_learned();
                self.expire_static();
                StepResult::Cmd {
                    index,
                    cmd: "warp",
                    args: vec![ms.to_string()],
                    entries: vec![],
                }
            }
            Step::FlushCt => {
                self.ct.flush(None, None);
                StepResult::Cmd {
                    index,
                    cmd: "flush-ct",
                    args: vec![],
                    entries: vec![],
                }
            }
            Step::Flows(table) => {
                self.expire_static();
                let mut flows: Vec<crate::pipeline::ir::Flow> = self
                    .current
                    .all_flows()
                    .filter(|f| table.is_none_or(|t| f.table == t))
                    .cloned()
                    .collect();
                crate::pipeline::format::sort_for_dump(&mut flows);
                let mut entries: Vec<String> = flows
                    .iter()
                    .map(|f| {
                        crate::pipeline::format::format_flow(f, Default::default())
                            .trim_start()
                            .to_string()
                    })
                    .collect();
                entries.sort();
                StepResult::Cmd {
                    index,
                    cmd: "flows",
                    args: table.iter().map(|t| t.to_string()).collect(),
                    entries,
                }
            }
            Step::Ct(zone) => {
                let mut entries: Vec<String> = self
                    .ct
                    .dump_at(*zone, self.now_ms)
                    .iter()
                    .map(|e| e.to_string())
                    .collect();
                entries.sort();
                StepResult::Cmd {
                    index,
                    cmd: "ct",
                    args: zone.iter().map(|z| z.to_string()).collect(),
                    entries,
                }
            }
        }
    }

    /// The pipeline packets run through now (with the learned flows).
    pub fn current(&self) -> &Pipeline {
        &self.current
    }

    /// Apply the learn events of the last packet and expire learned flows
    /// at the current clock; a change becomes the new pipeline and empties
    /// the flow cache (as a new generation does for a worker).
    fn apply_learned(&mut self) {
        let mut changed = false;
        for ev in self.scratch.learn_events.drain(..) {
            changed |= self.learned.apply(&ev, self.now_ms);
        }
        changed |= self.learned.expire(self.now_ms) > 0;
        if changed {
            let counts = self.take_rule_counts();
            self.rule_stats.add_indexed(&self.current, counts);
            self.current = self.base.with_learned(self.learned.snapshot());
            self.rule_stats.rebase(&self.current);
            if let Some(c) = self.cache.as_mut() {
                c.clear();
            }
        }
    }

    /// Remove the static flows whose idle or hard timeout passed (as
    /// OVS's `rule_expire`, which runs after each revalidator dump; here
    /// before each packet and after each warp).
    fn expire_static(&mut self) {
        if self.base.timed.is_empty() {
            return;
        }
        let dead = self
            .times
            .expired(&self.current, &self.flow_counts(), self.now_ms);
        if dead.is_empty() {
            return;
        }
        let counts = self.take_rule_counts();
        self.rule_stats.add_indexed(&self.current, counts);
        self.base = self.base.without(&dead);
        self.current = self.base.with_learned(self.learned.snapshot());
        self.times = self.times.rebase(&self.current, self.now_ms);
        self.rule_stats.rebase(&self.current);
        if let Some(c) = self.cache.as_mut() {
            c.clear();
        }
    }

    fn take_rule_counts(&mut self) -> Vec<(FlowIdx, FlowStat)> {
        let mut v: Vec<_> = self.scratch.uncached_rules.drain().collect();
        if let Some(c) = self.cache.as_mut() {
            v.extend(c.take_rule_counts());
        }
        v
    }

    /// Every flow's counters so far (`n_packets`, `n_bytes`, as `ovs-ofctl
    /// dump-flows` shows them; see [`crate::pipeline::stats`]), by
    /// classifier index in [`Replayer::current`], with ms since last use.
    pub fn flow_counts(&self) -> std::collections::HashMap<FlowIdx, (FlowStat, Option<u64>)> {
        let mut live: Vec<(FlowIdx, FlowStat)> = self
            .scratch
            .uncached_rules
            .iter()
            .map(|(i, s)| (*i, *s))
            .collect();
        if let Some(c) = self.cache.as_ref() {
            live.extend(c.rule_counts());
        }
        let report = self.rule_stats.report(&self.current, live, self.now_ms);
        merge(&self.current, &[report])
    }

    /// Run every step.
    pub fn run(&mut self, steps: &[Step]) -> Vec<StepResult> {
        steps
            .iter()
            .enumerate()
            .map(|(i, s)| self.step(i, s, None))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_after_output_last_is_caught() {
        let mut pkt = vec![1u8, 2, 3, 4];
        let mut sink = ReplaySink::default();
        sink.output_last(1, &pkt);
        assert!(sink.last_output_kept(&pkt));
        // Another buffer with other bytes is not the one sent in place.
        assert!(sink.last_output_kept(&[9, 9, 9, 9]));
        pkt[2] = 7;
        assert!(!sink.last_output_kept(&pkt));
    }

    #[test]
    fn ports_and_steps_parse() {
        let ports = PortMap::parse("uplink=1, gw0=2,pod=LOCAL").unwrap();
        assert_eq!(ports.resolve("gw0"), Some(2));
        assert_eq!(ports.resolve("LOCAL"), Some(OFPP_LOCAL));
        assert_eq!(ports.name(OFPP_LOCAL), "pod");
        assert!(PortMap::parse("a=1,b=1").is_err());
        assert!(PortMap::parse("a").is_err());
        let steps = parse_steps(
            "s",
            "# comment\n\nuplink 00:11 22 33\n@warp 61000\n@ct\n@ct 52100\n@flush-ct\n2 aabb\n",
            &ports,
        )
        .unwrap();
        assert_eq!(
            steps,
            vec![
                Step::Packet {
                    port: "uplink".into(),
                    bytes: vec![0, 0x11, 0x22, 0x33]
                },
                Step::Warp(61000),
                Step::Ct(None),
                Step::Ct(Some(52100)),
                Step::FlushCt,
                Step::Packet {
                    port: "2".into(),
                    bytes: vec![0xaa, 0xbb]
                },
            ]
        );
        let e = parse_steps("s.txt", "uplink 00\nnope 00\n", &ports).unwrap_err();
        assert_eq!((e.line, e.file.as_str()), (2, "s.txt"));
        assert!(e.to_string().contains("unknown port `nope`"));
        assert!(
            parse_steps("s", "uplink 0", &ports)
                .unwrap_err()
                .msg
                .contains("odd")
        );
        assert!(parse_steps("s", "@warp x", &ports).is_err());
        assert!(parse_steps("s", "@bogus", &ports).is_err());
    }
}
