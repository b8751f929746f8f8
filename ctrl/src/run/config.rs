//! `node.toml` for `flowpath run`: ports, where the rules come from, workers
//! and table sizes. Every error names the file, line, column and field.
//!
//! ```toml
//! flows = "flows.txt"            # ovs-ofctl add-flows syntax, relative to this file
//! groups = "groups.txt"          # optional
//! workers = 2                    # default: the most queues any afxdp port lists (at least 1)
//! cores = [0, 1]                 # optional: worker i runs pinned on cores[i] (default: i mod CPUs);
//!                                 #   control threads run on the CPUs left over, if any
//!
//! [cache]
//! megaflows = 65536              # per worker (idle ones evicted when full)
//! chains = 131072                # whole-walk chains per worker (0: off)
//! emc = true
//!
//! [conntrack]
//! capacity = 65536               # connections per worker
//! tcp_seq_check = true
//!
//! [[ports]]
//! name = "uplink"
//! ofport = 3                     # what in_port=/output: in the flows mean; or "LOCAL"
//! type = "afxdp"
//! interface = "eth0"
//! queues = [0, 1]                # queue i of this list is served by worker i mod workers
//! mode = "native"                # auto | native | skb
//! pass_ethertypes = [0x0806]     # give ARP to the host stack
//!
//! [[ports]]
//! name = "gw0"
//! ofport = 2
//! type = "tap"
//! ip = "172.16.2.1/24"
//! mac = "0a:58:ac:10:02:01"
//! ```
//!
//! The node-description keys the Service compiler reads (`name`, `mode`,
//! `node_ips`, `pod_cidr`, `uplink`, `gateway`, `pods`, `peers`, ...) may
//! share this file; `flowpath run` accepts and ignores them.

use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use datapath::io::afxdp::{XdpMode, ZeroCopy};
use datapath::key::OFPP_LOCAL;
use serde::Deserialize;
use toml::Spanned;

/// A bad `node.toml`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A syntax, type or value problem at a place in the file.
    #[error("{file}:{line}:{column}: {field}: {message}")]
    At {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The key (dotted path where known, e.g. `ports[1].mode`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// Where an OpenFlow port's frames come from and go to.
#[derive(Debug, Clone, PartialEq)]
pub enum PortKind {
    /// AF_XDP sockets on an interface, one per listed queue.
    AfXdp {
        /// Interface name.
        interface: String,
        /// Queues served; entry i goes to worker i mod workers.
        queues: Vec<u32>,
        /// XDP attach mode.
        mode: XdpMode,
        /// Zero-copy policy.
        zero_copy: ZeroCopy,
        /// EtherTypes the XDP program passes to the host stack.
        pass_ethertypes: Vec<u16>,
        /// RX/TX ring size.
        ring_size: u32,
        /// Fill/completion ring size.
        fill_size: u32,
    },
    /// A TAP device the host stack sees (the gateway, or `LOCAL`).
    Tap {
        /// Device name (default: the port's name).
        device: String,
        /// Host-side address and prefix.
        ip: Option<(Ipv4Addr, u8)>,
        /// Device MAC.
        mac: Option<[u8; 6]>,
        /// MTU.
        mtu: Option<u32>,
        /// Worker that polls it.
        worker: usize,
    },
    /// An in-process port (tests, benches).
    Memory {
        /// Worker that polls it.
        worker: usize,
    },
}

/// One configured OpenFlow port.
#[derive(Debug, Clone, PartialEq)]
pub struct PortConfig {
    /// Name (used in counters).
    pub name: String,
    /// OpenFlow port number (`OFPP_LOCAL` for `LOCAL`).
    pub ofport: u32,
    /// Kind and its settings.
    pub kind: PortKind,
    /// Capture every frame received and sent here into this pcap file
    /// (with several queues: `NAME.qN.pcap` next to it for queue N > first).
    pub pcap: Option<PathBuf>,
}

/// Default AF_XDP ring sizes (RX, TX, fill, completion), as OVS's AF_XDP
/// ports (libbpf's defaults). Frames arriving while the worker does not
/// poll wait in the RX ring: 2048 slots hold ~7 ms at 300 kpps.
pub const DEFAULT_RING: u32 = 2048;

/// Chains per worker by default: two per megaflow slot, so one worker keeps
/// a whole-walk chain for each direction of ~65,000 connections (about
/// 900 bytes each, allocated as they are recorded).
pub const DEFAULT_CHAINS: usize = 131_072;

/// Where `flowpath run` serves its control socket unless `control_socket`
/// says otherwise, and where the CLI looks for it.
pub const DEFAULT_SOCKET: &str = "/run/flowpath/flowpath.sock";

/// A checked `node.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// Flows file (empty when the rules come from `services`).
    pub flows: PathBuf,
    /// Service manifests (`services = "DIR"`): the rules are compiled from
    /// them and this file's node description instead of read from `flows`.
    pub services: Option<PathBuf>,
    /// Control socket path (`control_socket`, default
    /// [`DEFAULT_SOCKET`]).
    pub control_socket: PathBuf,
    /// Groups file.
    pub groups: Option<PathBuf>,
    /// Worker threads.
    pub workers: usize,
    /// Core of each worker, when given.
    pub cores: Option<Vec<usize>>,
    /// Megaflows per worker.
    pub cache_megaflows: usize,
    /// Chains (whole-walk replays) per worker; 0 turns them off.
    pub cache_chains: usize,
    /// Exact-match cache on.
    pub emc: bool,
    /// Conntrack connections per worker.
    pub ct_capacity: u32,
    /// TCP sequence checking.
    pub tcp_seq_check: bool,
    /// UMEM chunks per worker (default: enough for its sockets' rings).
    pub umem_frames: Option<u32>,
    /// UMEM chunk size (2048 or 4096).
    pub frame_size: u32,
    /// Idle worker sleep, microseconds (0: spin).
    pub idle_sleep_us: u64,
    /// Empty polls in a row before an idle worker sleeps.
    pub idle_polls: u32,
    /// Cooperative yield, microseconds (0: never); see
    /// `datapath::worker::WorkerConfig::yield_for`.
    pub yield_us: u64,
    /// Ports.
    pub ports: Vec<PortConfig>,
}

impl RunConfig {
    /// `(name, ofport)` of every port, for resolving port names in the
    /// flows file.
    pub fn port_names(&self) -> Vec<(String, u32)> {
        self.ports
            .iter()
            .map(|p| (p.name.clone(), p.ofport))
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    flows: Option<Spanned<String>>,
    groups: Option<Spanned<String>>,
    workers: Option<Spanned<usize>>,
    cores: Option<Spanned<Vec<usize>>>,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    conntrack: RawCt,
    #[serde(default)]
    umem: RawUmem,
    idle_sleep_us: Option<u64>,
    idle_polls: Option<u32>,
    yield_us: Option<u64>,
    control_socket: Option<String>,
    #[serde(default)]
    ports: Vec<Spanned<RawPort>>,
    // The Service compiler's node description (issue 5) may share the
    // file: accepted here, read by the compiler.
    #[allow(dead_code)]
    name: Option<toml::Value>,
    #[allow(dead_code)]
    mode: Option<toml::Value>,
    #[allow(dead_code)]
    node_ips: Option<toml::Value>,
    #[allow(dead_code)]
    pod_cidr: Option<toml::Value>,
    #[allow(dead_code)]
    virtual_ip: Option<toml::Value>,
    #[allow(dead_code)]
    virtual_mac: Option<toml::Value>,
    #[allow(dead_code)]
    hairpin_ip: Option<toml::Value>,
    #[allow(dead_code)]
    uplink: Option<toml::Value>,
    #[allow(dead_code)]
    gateway: Option<toml::Value>,
    #[allow(dead_code)]
    pods: Option<toml::Value>,
    #[allow(dead_code)]
    peers: Option<toml::Value>,
    services: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    megaflows: Option<Spanned<usize>>,
    chains: Option<usize>,
    emc: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCt {
    capacity: Option<Spanned<u32>>,
    tcp_seq_check: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUmem {
    frames: Option<Spanned<u32>>,
    frame_size: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: Spanned<String>,
    ofport: Spanned<toml::Value>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    interface: Option<Spanned<String>>,
    queues: Option<Spanned<Vec<u32>>>,
    mode: Option<Spanned<String>>,
    zero_copy: Option<Spanned<String>>,
    pass_ethertypes: Option<Spanned<Vec<u32>>>,
    ring_size: Option<Spanned<u32>>,
    fill_size: Option<Spanned<u32>>,
    device: Option<Spanned<String>>,
    ip: Option<Spanned<String>>,
    mac: Option<Spanned<String>>,
    mtu: Option<Spanned<u32>>,
    worker: Option<Spanned<usize>>,
    pcap: Option<Spanned<String>>,
}

struct Ctx<'a> {
    file: String,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.text, span.start);
        ConfigError::At {
            file: self.file.clone(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

fn line_col(text: &str, off: usize) -> (usize, usize) {
    let off = off.min(text.len());
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let column = off - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

/// The key written on the line at `off` (`key = ...`), or the table header.
fn key_at(text: &str, off: usize) -> String {
    let off = off.min(text.len());
    let start = text[..off].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = text[off..]
        .find('\n')
        .map(|i| off + i)
        .unwrap_or(text.len());
    let line = text[start..end].trim();
    if let Some((k, _)) = line.split_once('=') {
        return k.trim().to_string();
    }
    line.trim_matches(|c| c == '[' || c == ']').to_string()
}

/// Read and check a `node.toml`.
pub fn load(path: &Path) -> Result<RunConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse(path, &text)
}

/// Check a `node.toml` already read from `path` (paths in it are relative
/// to `path`'s directory).
pub fn parse(path: &Path, text: &str) -> Result<RunConfig, ConfigError> {
    let cx = Ctx {
        file: path.display().to_string(),
        text,
    };
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let msg = e.message().trim().to_string();
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.starts_with("unknown field") || msg.starts_with("missing field"))
            .map(str::to_string)
            .unwrap_or_else(|| key_at(text, span.start));
        cx.err(span, &field, msg)
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let rel = |s: &str| -> PathBuf {
        let p = Path::new(s);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    let services = raw.services.as_ref().map(|sv| rel(sv.get_ref()));
    let flows = match (&raw.flows, &raw.services) {
        (Some(f), None) => {
            let flows = rel(f.get_ref());
            if !flows.is_file() {
                return Err(cx.err(
                    f.span(),
                    "flows",
                    format!("no such file {}", flows.display()),
                ));
            }
            flows
        }
        (None, Some(_)) => PathBuf::new(),
        (Some(f), Some(_)) => {
            return Err(cx.err(
                f.span(),
                "flows",
                "give either flows or services (manifests to compile), not both",
            ));
        }
        (None, None) => {
            return Err(cx.err(
                0..0,
                "flows",
                "missing field `flows` (or `services`, manifests to compile)",
            ));
        }
    };
    let groups = match &raw.groups {
        Some(g) => {
            let p = rel(g.get_ref());
            if !p.is_file() {
                return Err(cx.err(g.span(), "groups", format!("no such file {}", p.display())));
            }
            Some(p)
        }
        None => None,
    };

    let mut ports: Vec<PortConfig> = Vec::new();
    let mut ofport_at: Vec<(u32, Range<usize>)> = Vec::new();
    let mut max_queues = 1usize;
    let mut worker_refs: Vec<(usize, Range<usize>, String)> = Vec::new();
    for (i, sp) in raw.ports.iter().enumerate() {
        let rp = sp.get_ref();
        let f = |k: &str| format!("ports[{i}].{k}");
        let name = rp.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(cx.err(rp.name.span(), &f("name"), "must not be empty"));
        }
        if ports.iter().any(|p| p.name == name) {
            return Err(cx.err(
                rp.name.span(),
                &f("name"),
                format!("duplicate port name {name:?}"),
            ));
        }
        let ofport = match rp.ofport.get_ref() {
            toml::Value::Integer(n) if *n > 0 && *n < 0xff00 => *n as u32,
            toml::Value::String(s) if s.eq_ignore_ascii_case("LOCAL") => OFPP_LOCAL,
            v => {
                return Err(cx.err(
                    rp.ofport.span(),
                    &f("ofport"),
                    format!("{v} is not an OpenFlow port (1..65279 or \"LOCAL\")"),
                ));
            }
        };
        if let Some((_, _)) = ofport_at.iter().find(|(p, _)| *p == ofport) {
            return Err(cx.err(
                rp.ofport.span(),
                &f("ofport"),
                format!("OpenFlow port {ofport} is already used by another port"),
            ));
        }
        ofport_at.push((ofport, rp.ofport.span()));
        let kind_s = rp.kind.get_ref().as_str();
        // Keys that only apply to some kinds.
        let only = |key: &str, present: bool, span: Option<Range<usize>>, kinds: &[&str]| {
            if present && !kinds.contains(&kind_s) {
                Err(cx.err(
                    span.unwrap_or(sp.span()),
                    &f(key),
                    format!(
                        "does not apply to type {kind_s:?} (only {})",
                        kinds.join(", ")
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let span_of = |s: &Option<Spanned<String>>| s.as_ref().map(|x| x.span());
        only(
            "interface",
            rp.interface.is_some(),
            span_of(&rp.interface),
            &["afxdp"],
        )?;
        only(
            "queues",
            rp.queues.is_some(),
            rp.queues.as_ref().map(|x| x.span()),
            &["afxdp"],
        )?;
        only("mode", rp.mode.is_some(), span_of(&rp.mode), &["afxdp"])?;
        only(
            "zero_copy",
            rp.zero_copy.is_some(),
            span_of(&rp.zero_copy),
            &["afxdp"],
        )?;
        only(
            "pass_ethertypes",
            rp.pass_ethertypes.is_some(),
            rp.pass_ethertypes.as_ref().map(|x| x.span()),
            &["afxdp"],
        )?;
        only(
            "ring_size",
            rp.ring_size.is_some(),
            rp.ring_size.as_ref().map(|x| x.span()),
            &["afxdp"],
        )?;
        only(
            "fill_size",
            rp.fill_size.is_some(),
            rp.fill_size.as_ref().map(|x| x.span()),
            &["afxdp"],
        )?;
        only("device", rp.device.is_some(), span_of(&rp.device), &["tap"])?;
        only("ip", rp.ip.is_some(), span_of(&rp.ip), &["tap"])?;
        only("mac", rp.mac.is_some(), span_of(&rp.mac), &["tap"])?;
        only(
            "mtu",
            rp.mtu.is_some(),
            rp.mtu.as_ref().map(|x| x.span()),
            &["tap"],
        )?;
        only(
            "worker",
            rp.worker.is_some(),
            rp.worker.as_ref().map(|x| x.span()),
            &["tap", "memory"],
        )?;
        let worker = match &rp.worker {
            Some(w) => {
                worker_refs.push((*w.get_ref(), w.span(), f("worker")));
                *w.get_ref()
            }
            None => 0,
        };
        let kind = match kind_s {
            "afxdp" => {
                let interface = rp
                    .interface
                    .as_ref()
                    .ok_or_else(|| {
                        cx.err(
                            sp.span(),
                            &f("interface"),
                            "missing (type afxdp needs an interface)",
                        )
                    })?
                    .get_ref()
                    .clone();
                let queues = match &rp.queues {
                    Some(q) if q.get_ref().is_empty() => {
                        return Err(cx.err(q.span(), &f("queues"), "must list at least one queue"));
                    }
                    Some(q) => {
                        let mut v = q.get_ref().clone();
                        v.sort_unstable();
                        if v.windows(2).any(|w| w[0] == w[1]) {
                            return Err(cx.err(q.span(), &f("queues"), "a queue is listed twice"));
                        }
                        q.get_ref().clone()
                    }
                    None => vec![0],
                };
                max_queues = max_queues.max(queues.len());
                let mode = match &rp.mode {
                    Some(m) => m
                        .get_ref()
                        .parse::<XdpMode>()
                        .map_err(|e| cx.err(m.span(), &f("mode"), e))?,
                    None => XdpMode::Auto,
                };
                let zero_copy = match rp
                    .zero_copy
                    .as_ref()
                    .map(|z| (z.get_ref().as_str(), z.span()))
                {
                    None | Some(("auto", _)) => ZeroCopy::Auto,
                    Some(("required", _)) => ZeroCopy::Required,
                    Some(("off", _)) => ZeroCopy::Off,
                    Some((v, span)) => {
                        return Err(cx.err(
                            span,
                            &f("zero_copy"),
                            format!("{v:?}: expected auto, required or off"),
                        ));
                    }
                };
                let pass_ethertypes = match &rp.pass_ethertypes {
                    Some(p) => {
                        let mut out = Vec::new();
                        for &t in p.get_ref() {
                            if t > 0xffff {
                                return Err(cx.err(
                                    p.span(),
                                    &f("pass_ethertypes"),
                                    format!("{t:#x} is not an EtherType"),
                                ));
                            }
                            out.push(t as u16);
                        }
                        if out.len() > datapath::io::afxdp::bpf::MAX_PASS_ETHERTYPES {
                            return Err(cx.err(
                                p.span(),
                                &f("pass_ethertypes"),
                                format!(
                                    "at most {} EtherTypes",
                                    datapath::io::afxdp::bpf::MAX_PASS_ETHERTYPES
                                ),
                            ));
                        }
                        out
                    }
                    None => Vec::new(),
                };
                let pow2 = |v: &Option<Spanned<u32>>, key: &str| -> Result<u32, ConfigError> {
                    match v {
                        None => Ok(DEFAULT_RING),
                        Some(s) if s.get_ref().is_power_of_two() && *s.get_ref() <= 1 << 16 => {
                            Ok(*s.get_ref())
                        }
                        Some(s) => Err(cx.err(
                            s.span(),
                            &f(key),
                            format!("{} is not a power of two up to 65536", s.get_ref()),
                        )),
                    }
                };
                PortKind::AfXdp {
                    interface,
                    queues,
                    mode,
                    zero_copy,
                    pass_ethertypes,
                    ring_size: pow2(&rp.ring_size, "ring_size")?,
                    fill_size: pow2(&rp.fill_size, "fill_size")?,
                }
            }
            "tap" => {
                let device = rp
                    .device
                    .as_ref()
                    .map(|d| d.get_ref().clone())
                    .unwrap_or_else(|| name.clone());
                if device.is_empty() || device.len() > 15 {
                    let span = rp
                        .device
                        .as_ref()
                        .map(|d| d.span())
                        .unwrap_or(rp.name.span());
                    return Err(cx.err(
                        span,
                        &f("device"),
                        format!("{device:?}: interface names are 1-15 bytes"),
                    ));
                }
                let ip = match &rp.ip {
                    Some(s) => {
                        Some(parse_cidr(s.get_ref()).map_err(|e| cx.err(s.span(), &f("ip"), e))?)
                    }
                    None => None,
                };
                let mac = match &rp.mac {
                    Some(s) => {
                        Some(parse_mac(s.get_ref()).map_err(|e| cx.err(s.span(), &f("mac"), e))?)
                    }
                    None => None,
                };
                let mtu = match &rp.mtu {
                    Some(m) if !(68..=9000).contains(m.get_ref()) => {
                        return Err(cx.err(
                            m.span(),
                            &f("mtu"),
                            format!("{} is outside 68..9000", m.get_ref()),
                        ));
                    }
                    Some(m) => Some(*m.get_ref()),
                    None => None,
                };
                PortKind::Tap {
                    device,
                    ip,
                    mac,
                    mtu,
                    worker,
                }
            }
            "memory" => PortKind::Memory { worker },
            other => {
                return Err(cx.err(
                    rp.kind.span(),
                    &f("type"),
                    format!("{other:?}: expected afxdp, tap or memory"),
                ));
            }
        };
        ports.push(PortConfig {
            name,
            ofport,
            kind,
            pcap: rp.pcap.as_ref().map(|p| rel(p.get_ref())),
        });
    }
    if ports.is_empty() {
        return Err(cx.err(0..0, "ports", "no [[ports]] configured"));
    }
    let workers = match &raw.workers {
        Some(w) if *w.get_ref() == 0 || *w.get_ref() > 256 => {
            return Err(cx.err(w.span(), "workers", "must be 1..256"));
        }
        Some(w) => *w.get_ref(),
        None => max_queues,
    };
    for (w, span, field) in worker_refs {
        if w >= workers {
            return Err(cx.err(
                span,
                &field,
                format!("worker {w} does not exist ({workers} workers)"),
            ));
        }
    }
    let cores = match &raw.cores {
        Some(c) if c.get_ref().len() < workers => {
            return Err(cx.err(
                c.span(),
                "cores",
                format!("{} cores listed for {workers} workers", c.get_ref().len()),
            ));
        }
        Some(c) => Some(c.get_ref().clone()),
        None => None,
    };
    let cache_megaflows = match &raw.cache.megaflows {
        Some(m) if *m.get_ref() == 0 => {
            return Err(cx.err(m.span(), "cache.megaflows", "must be at least 1"));
        }
        Some(m) => *m.get_ref(),
        None => 65536,
    };
    let ct_capacity = match &raw.conntrack.capacity {
        Some(c) if *c.get_ref() == 0 => {
            return Err(cx.err(c.span(), "conntrack.capacity", "must be at least 1"));
        }
        Some(c) => *c.get_ref(),
        None => 65536,
    };
    let frame_size = match &raw.umem.frame_size {
        Some(s) if *s.get_ref() != 2048 && *s.get_ref() != 4096 => {
            return Err(cx.err(
                s.span(),
                "umem.frame_size",
                format!("{}: expected 2048 or 4096", s.get_ref()),
            ));
        }
        Some(s) => *s.get_ref(),
        None => 2048,
    };
    Ok(RunConfig {
        path: path.to_path_buf(),
        flows,
        groups,
        workers,
        cores,
        cache_megaflows,
        cache_chains: raw.cache.chains.unwrap_or(DEFAULT_CHAINS),
        emc: raw.cache.emc.unwrap_or(true),
        ct_capacity,
        tcp_seq_check: raw.conntrack.tcp_seq_check.unwrap_or(true),
        umem_frames: raw.umem.frames.map(|f| *f.get_ref()),
        frame_size,
        idle_sleep_us: raw.idle_sleep_us.unwrap_or(50),
        idle_polls: raw.idle_polls.unwrap_or(256).max(1),
        yield_us: raw.yield_us.unwrap_or(0).min(10_000),
        services,
        control_socket: raw
            .control_socket
            .as_deref()
            .map(rel)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        ports,
    })
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected ADDRESS/PREFIX, e.g. 172.16.2.1/24"))?;
    let addr = a
        .parse::<Ipv4Addr>()
        .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
    let prefix = p
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("{p:?} is not a prefix length 0..32"))?;
    Ok((addr, prefix))
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || format!("{s:?}: expected a MAC like 0a:58:ac:10:02:01");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_flows() -> PathBuf {
        let d = std::env::temp_dir().join(format!("fp-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("flows.txt"), "table=0,actions=drop\n").unwrap();
        d
    }

    fn parse_str(text: &str) -> Result<RunConfig, ConfigError> {
        parse(&dir_with_flows().join("node.toml"), text)
    }

    const GOOD: &str = r#"flows = "flows.txt"
[[ports]]
name = "uplink"
ofport = 3
type = "afxdp"
interface = "eth0"
queues = [0, 1]
mode = "native"
pass_ethertypes = [0x0806]

[[ports]]
name = "gw0"
ofport = "LOCAL"
type = "tap"
ip = "172.16.2.1/24"
mac = "0a:58:ac:10:02:01"
"#;

    #[test]
    fn good_config_and_defaults() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.workers, 2, "workers default to the most queues");
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.ports[1].ofport, OFPP_LOCAL);
        assert!(matches!(
            &c.ports[0].kind,
            PortKind::AfXdp { mode: XdpMode::Native, pass_ethertypes, .. } if pass_ethertypes == &[0x0806]
        ));
        match &c.ports[1].kind {
            PortKind::Tap {
                device, ip, mac, ..
            } => {
                assert_eq!(device, "gw0");
                assert_eq!(*ip, Some(("172.16.2.1".parse().unwrap(), 24)));
                assert_eq!(*mac, Some([0x0a, 0x58, 0xac, 0x10, 0x02, 0x01]));
            }
            k => panic!("{k:?}"),
        }
    }

    fn err_of(text: &str) -> String {
        parse_str(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = err_of(&GOOD.replace("mode = \"native\"", "mode = \"turbo\""));
        assert!(e.contains("node.toml:8:"), "{e}");
        assert!(e.contains("ports[0].mode"), "{e}");
        assert!(e.contains("turbo"), "{e}");

        let e = err_of(&GOOD.replace("queues = [0, 1]", "queus = [0, 1]"));
        assert!(e.contains(":7:") && e.contains("queus"), "{e}");

        let e = err_of(&GOOD.replace("ofport = \"LOCAL\"", "ofport = 3"));
        assert!(
            e.contains(":13:") && e.contains("ports[1].ofport") && e.contains("already used"),
            "{e}"
        );

        let e = err_of(&GOOD.replace("172.16.2.1/24", "172.16.2.300/24"));
        assert!(e.contains(":15:") && e.contains("ports[1].ip"), "{e}");

        let e = err_of(&GOOD.replace("flows.txt", "nope.txt"));
        assert!(
            e.contains(":1:") && e.contains("flows") && e.contains("no such file"),
            "{e}"
        );

        let e = err_of(&GOOD.replace("ip = \"172", "queues = [1]\nip = \"172"));
        assert!(
            e.contains("ports[1].queues") && e.contains("does not apply"),
            "{e}"
        );

        let e = err_of(&GOOD.replace("ofport = 3", "ofport = \"three\""));
        assert!(e.contains(":4:") && e.contains("ports[0].ofport"), "{e}");

        let e = err_of(&format!("{GOOD}workers = 0\n"));
        assert!(e.contains("workers"), "{e}");
    }

    #[test]
    fn example_config_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/node.toml");
        let c = load(&p).unwrap();
        assert_eq!(c.workers, 2);
        assert_eq!(c.ports.len(), 4);
        assert!(c.services.is_some() && c.flows.as_os_str().is_empty());
    }

    #[test]
    fn compiler_keys_may_share_the_file() {
        let text = format!(
            "name = \"node-a\"\nmode = \"noencap\"\nnode_ips = [\"10.176.25.244\"]\n{GOOD}\n[gateway]\nip = \"172.16.2.1\"\n"
        );
        assert!(parse_str(&text).is_ok());
    }
}
