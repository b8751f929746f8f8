//! Drive a private, throw-away Open vSwitch running in userspace with the
//! dummy datapath, the way OVS's own test suite does (`OVS_VSWITCHD_START` in
//! `tests/ofproto-macros.at`): `ovsdb-server` + `ovs-vswitchd --enable-dummy
//! --disable-system --disable-system-route`, a bridge `br0` with
//! `datapath_type=dummy`, one `type=dummy` interface per port whose
//! transmissions go to `NAME-tx.pcap`, and a stopped clock (`time/stop`) so
//! conntrack only ages through [`OvsSwitch::warp`].
//!
//! Facts about the harness, established empirically on OVS 3.1.0:
//! - `netdev-dummy/receive` is NOT synchronous: it only queues the frame;
//!   the main thread polls it in its next loop iteration (about 1 in 30
//!   packets is still unprocessed when `ovs-appctl` returns). So after each
//!   inject the harness polls `dpif-netdev/pmd-stats-show` until the
//!   "packets received" counter has moved: stats are read by the same main
//!   thread that processes the packet (upcalls, recirculation, conntrack and
//!   tx included), so once the count shows it, its outputs are in the pcaps
//!   (`receive_is_synchronous` in `ovs_facts.rs` checks 300 packets).
//! - appctl commands go over one persistent JSON-RPC connection to the
//!   daemon's unixctl socket (~0.1 ms per call instead of ~5 ms per
//!   `ovs-appctl` process).
//! - The bridge's LOCAL port (`br0`, type `internal`, a `dummy-internal`
//!   netdev on this datapath) accepts `options:tx_pcap` too, so LOCAL outputs
//!   are captured, and `netdev-dummy/receive br0 HEX` injects from LOCAL.
//! - Start-up of a fresh switch takes ~0.1-0.2 s; tear-down a few ms.

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::pcap::PcapTail;

/// Harness errors are plain strings: this is test support, and every error
/// is a test failure that a human reads.
pub type Result<T> = std::result::Result<T, String>;

/// OpenFlow number of the bridge's LOCAL port.
pub const OFPP_LOCAL: u32 = 0xfffe;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether the OVS binaries are installed (tests skip, loudly, when not).
pub fn ovs_available() -> bool {
    Command::new("ovs-vswitchd")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Returns true (and prints why) when a test needing OVS must be skipped.
pub fn skip_without_ovs(test: &str) -> bool {
    if ovs_available() {
        false
    } else {
        eprintln!("SKIP {test}: ovs-vswitchd is not installed (run scripts/setup-ovs.sh)");
        true
    }
}

/// Log lines at WARN or above that are expected and harmless in this setup.
const BENIGN_LOG: &[&str] = &[
    // Userspace datapath has no kernel to ask for the system route table etc.
    "Failed to create the netlink socket",
    // --detach with a non-root or containerised environment.
    "failed to set",
    "mlockall",
    // OpenFlow version negotiation noise from ovs-ofctl.
    "negotiated",
    // OVS warns when the clock is stopped/warped.
    "Unreasonably long",
    // ovs-appctl exit during teardown.
    "connection dropped",
    // time/warp jumps the clock: the RCU thread thinks main was blocked.
    "waiting for main to quiesce",
    // A revalidator raced a flow's deletion (seen on a loaded machine): its
    // own bookkeeping, not a packet's fate.
    "failed to flow_get",
    // The same race when a handler or revalidator modifies a datapath flow
    // another thread just deleted ("failed to put[modify]").
    "failed to put[modify]",
];

/// A JSON-RPC client for a daemon's unixctl socket (what `ovs-appctl`
/// speaks).
#[derive(Debug)]
struct Unixctl {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    id: u64,
}

impl Unixctl {
    fn connect(path: &Path) -> Result<Unixctl> {
        let s = UnixStream::connect(path).map_err(|e| format!("{}: {e}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        Ok(Unixctl {
            reader: BufReader::new(s.try_clone().map_err(|e| e.to_string())?),
            writer: s,
            id: 0,
        })
    }

    fn call(&mut self, method: &str, params: &[&str]) -> Result<String> {
        self.id += 1;
        let req = serde_json::json!({"method": method, "params": params, "id": self.id});
        self.writer
            .write_all(req.to_string().as_bytes())
            .map_err(|e| format!("unixctl {method}: {e}"))?;
        let reply: serde_json::Value = serde_json::Deserializer::from_reader(&mut self.reader)
            .into_iter::<serde_json::Value>()
            .next()
            .ok_or_else(|| format!("unixctl {method}: connection closed"))?
            .map_err(|e| format!("unixctl {method}: {e}"))?;
        if reply.get("id").and_then(|v| v.as_u64()) != Some(self.id) {
            return Err(format!("unixctl {method}: unexpected reply {reply}"));
        }
        match reply.get("error") {
            Some(e) if !e.is_null() => Err(format!(
                "ovs-appctl {method} {}: {}",
                params.join(" "),
                e.as_str().unwrap_or(&e.to_string())
            )),
            _ => Ok(reply
                .get("result")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()),
        }
    }
}

/// One port of the switch.
#[derive(Debug)]
struct Port {
    name: String,
    ofport: u32,
    /// The OVS interface name (`br0` for LOCAL).
    iface: String,
    tx: PcapTail,
}

/// A private ovsdb-server + ovs-vswitchd with one dummy bridge.
#[derive(Debug)]
pub struct OvsSwitch {
    dir: PathBuf,
    ports: Vec<Port>,
    log_offset: u64,
    alive: bool,
    ctl: Option<Unixctl>,
    /// Packets the datapath has received so far (pmd-stats).
    rx_count: u64,
}

impl OvsSwitch {
    /// Start a switch whose bridge `br0` has one dummy port per
    /// `(name, ofport)`. A port with number [`OFPP_LOCAL`] names the
    /// bridge's own LOCAL port; LOCAL is always captured, under the name
    /// `LOCAL` unless given another.
    pub fn start(ports: &[(String, u32)]) -> Result<OvsSwitch> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("flowpath-ovs-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let mut sw = OvsSwitch {
            dir,
            ports: Vec::new(),
            log_offset: 0,
            alive: true,
            ctl: None,
            rx_count: 0,
        };
        sw.boot(ports)?;
        Ok(sw)
    }

    fn boot(&mut self, ports: &[(String, u32)]) -> Result<()> {
        let d = self.dir.display().to_string();
        self.run(
            "ovsdb-tool",
            &[
                "create",
                &format!("{d}/conf.db"),
                "/usr/share/openvswitch/vswitch.ovsschema",
            ],
        )?;
        self.run(
            "ovsdb-server",
            &[
                "--detach",
                "--no-chdir",
                "--pidfile",
                "--log-file",
                "-vconsole:off",
                &format!("--remote=punix:{d}/db.sock"),
                &format!("{d}/conf.db"),
            ],
        )?;
        self.run("ovs-vsctl", &["--no-wait", "init"])?;
        self.run(
            "ovs-vswitchd",
            &[
                "--enable-dummy",
                "--disable-system",
                "--disable-system-route",
                "--detach",
                "--no-chdir",
                "--pidfile",
                "--log-file",
                "-vconsole:off",
                &format!("unix:{d}/db.sock"),
            ],
        )?;
        let mut args: Vec<String> = [
            "--",
            "add-br",
            "br0",
            "--",
            "set",
            "bridge",
            "br0",
            "datapath_type=dummy",
            "fail-mode=secure",
            "other-config:datapath-id=fedcba9876543210",
            "other-config:hwaddr=aa:55:aa:55:00:00",
            "protocols=[OpenFlow10,OpenFlow13,OpenFlow15]",
            "--",
            "set",
            "interface",
            "br0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("options:tx_pcap={d}/LOCAL-tx.pcap"));
        let mut local_name = "LOCAL".to_string();
        for (name, ofport) in ports {
            if *ofport == OFPP_LOCAL {
                local_name = name.clone();
                continue;
            }
            args.extend(
                [
                    "--",
                    "add-port",
                    "br0",
                    name,
                    "--",
                    "set",
                    "interface",
                    name,
                    "type=dummy",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            args.push(format!("ofport_request={ofport}"));
            args.push(format!("options:tx_pcap={d}/{name}-tx.pcap"));
            self.ports.push(Port {
                name: name.clone(),
                ofport: *ofport,
                iface: name.clone(),
                tx: PcapTail::new(&self.dir.join(format!("{name}-tx.pcap"))),
            });
        }
        self.ports.push(Port {
            name: local_name,
            ofport: OFPP_LOCAL,
            iface: "br0".into(),
            tx: PcapTail::new(&self.dir.join("LOCAL-tx.pcap")),
        });
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        self.run("ovs-vsctl", &argv)?;
        // Check every port got the number it asked for.
        let show = self.run("ovs-ofctl", &["-O", "OpenFlow15", "show", "br0"])?;
        for p in &self.ports {
            if p.ofport == OFPP_LOCAL {
                continue;
            }
            let want = format!(" {}({}):", p.ofport, p.iface);
            if !show.contains(&want) {
                return Err(format!(
                    "port {} did not get ofport {}:\n{show}",
                    p.name, p.ofport
                ));
            }
        }
        let pid = std::fs::read_to_string(self.dir.join("ovs-vswitchd.pid"))
            .map_err(|e| format!("ovs-vswitchd.pid: {e}"))?;
        let sock = self.dir.join(format!("ovs-vswitchd.{}.ctl", pid.trim()));
        self.ctl = Some(Unixctl::connect(&sock)?);
        self.appctl(&["time/stop"])?;
        self.rx_count = self.datapath_rx_count()?;
        Ok(())
    }

    /// Sum of "packets received" over the datapath's threads.
    fn datapath_rx_count(&mut self) -> Result<u64> {
        let out = self.appctl(&["dpif-netdev/pmd-stats-show"])?;
        let mut n = 0;
        for l in out.lines() {
            if let Some(v) = l.trim().strip_prefix("packets received:") {
                n += v
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("pmd-stats-show: {l}"))?;
            }
        }
        Ok(n)
    }

    /// The switch's private directory (db, logs, pcaps).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Port names and numbers, LOCAL included, in the order given to start.
    pub fn ports(&self) -> Vec<(String, u32)> {
        self.ports
            .iter()
            .map(|p| (p.name.clone(), p.ofport))
            .collect()
    }

    fn command(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            c.env(var, &self.dir);
        }
        c.current_dir(&self.dir);
        c
    }

    /// Run an OVS utility in this switch's environment; stdout on success.
    pub fn run(&self, prog: &str, args: &[&str]) -> Result<String> {
        let out = self
            .command(prog)
            .args(args)
            .output()
            .map_err(|e| format!("{prog}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{prog} {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ovs-appctl ARGS` against ovs-vswitchd (over the persistent unixctl
    /// connection once it is up).
    pub fn appctl(&mut self, args: &[&str]) -> Result<String> {
        match &mut self.ctl {
            Some(c) => c.call(args[0], &args[1..]),
            None => {
                let mut a = vec!["-t", "ovs-vswitchd"];
                a.extend_from_slice(args);
                self.run("ovs-appctl", &a)
            }
        }
    }

    /// `ovs-ofctl --no-stats dump-flows br0 [table=T]` (OpenFlow 1.0, as
    /// flowpath's printer), one flow per line, sorted. Learned flows print
    /// like any other.
    pub fn dump_flows(&self, table: Option<u8>) -> Result<Vec<String>> {
        let t = table.map(|t| format!("table={t}"));
        let mut a = vec!["--no-stats", "dump-flows", "br0"];
        if let Some(t) = &t {
            a.push(t);
        }
        let out = self.run("ovs-ofctl", &a)?;
        let mut lines: Vec<String> = out
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| {
                !l.is_empty() && !l.starts_with("NXST_FLOW") && !l.starts_with("OFPST_FLOW")
            })
            .collect();
        lines.sort();
        Ok(lines)
    }

    /// Every flow's `n_packets` and `n_bytes` after the revalidators pushed
    /// the datapath's counts to the rules (`revalidator/purge` deletes the
    /// datapath flows, crediting their stats): `--no-stats` flow text ->
    /// (packets, bytes).
    pub fn flow_stats(&mut self) -> Result<BTreeMap<String, (u64, u64)>> {
        self.appctl(&["revalidator/purge"])?;
        let out = self.run("ovs-ofctl", &["dump-flows", "br0"])?;
        let mut m = BTreeMap::new();
        for l in out.lines().map(str::trim) {
            if l.is_empty() || l.starts_with("NXST_FLOW") || l.starts_with("OFPST_FLOW") {
                continue;
            }
            let (mut packets, mut bytes) = (None, None);
            let mut kept = Vec::new();
            // The statistics are the leading `name=value, ` items; the
            // rest (from the match on) is the --no-stats text.
            let mut rest = l;
            while let Some((item, tail)) = rest.split_once(", ") {
                let Some((name, value)) = item.split_once('=') else {
                    break;
                };
                match name {
                    "duration" | "idle_age" | "hard_age" => {}
                    "n_packets" => packets = value.parse().ok(),
                    "n_bytes" => bytes = value.parse().ok(),
                    "cookie" if value == "0x0" => {}
                    "table" if value == "0" => {}
                    "cookie" | "table" | "idle_timeout" | "hard_timeout" | "importance" => {
                        kept.push(item)
                    }
                    _ => break,
                }
                rest = tail;
            }
            kept.push(rest);
            let (Some(p), Some(b)) = (packets, bytes) else {
                return Err(format!("no n_packets/n_bytes in {l:?}"));
            };
            m.insert(kept.join(", "), (p, b));
        }
        Ok(m)
    }

    /// `ovs-ofctl -O OpenFlow15 ARGS br0 ...`.
    pub fn ofctl(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["-O", "OpenFlow15"];
        a.extend_from_slice(args);
        self.run("ovs-ofctl", &a)
    }

    fn write_file(&self, name: &str, text: &str) -> Result<PathBuf> {
        let p = self.dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))?;
        Ok(p)
    }

    /// Replace the whole flow table with `text` (ovs-ofctl flow syntax, one
    /// flow per line, `#` comments allowed), atomically (`--bundle`), and
    /// purge the datapath flow cache so no stale megaflow survives.
    pub fn replace_flows(&mut self, text: &str) -> Result<()> {
        let p = self.write_file("flows.txt", text)?;
        let p = p.display().to_string();
        self.run(
            "ovs-ofctl",
            &["--bundle", "-O", "OpenFlow15", "replace-flows", "br0", &p],
        )?;
        self.appctl(&["revalidator/purge"])?;
        Ok(())
    }

    /// Delete all flows and all groups, then add the groups in `text`. Call
    /// before [`replace_flows`](Self::replace_flows).
    ///
    /// Flows go first on purpose: OVS 3.1.0 aborts ("assertion rule->state
    /// == RULE_INSERTED failed in ofproto_rule_remove__()") when
    /// `del-groups` has to remove flows that refer to the deleted groups
    /// right after a bundled `replace-flows`; seen within 10 random cases.
    pub fn replace_groups(&self, text: &str) -> Result<()> {
        self.ofctl(&["del-flows", "br0"])?;
        self.ofctl(&["del-groups", "br0"])?;
        if text.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        }) {
            let p = self.write_file("groups.txt", text)?;
            self.ofctl(&["add-groups", "br0", &p.display().to_string()])?;
        }
        Ok(())
    }

    /// Replace the whole pipeline, groups and flows, in ONE OpenFlow bundle
    /// (`ovs-ofctl bundle`: delete all flows, delete all groups, add the
    /// groups, add the flows), atomically; then purge the datapath flow
    /// cache. One `ovs-ofctl` run costs ~50-80 ms, so this is ~4x faster than
    /// [`replace_groups`](Self::replace_groups) +
    /// [`replace_flows`](Self::replace_flows).
    pub fn load_pipeline(&mut self, flows: &str, groups: Option<&str>) -> Result<()> {
        let mut b = String::from("flow delete\ngroup delete group_id=all\n");
        let lines = |t: &str| -> Vec<String> {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        for g in lines(groups.unwrap_or("")) {
            b += &format!("group add {g}\n");
        }
        for f in lines(flows) {
            b += &format!("flow add {f}\n");
        }
        let p = self.write_file("bundle.txt", &b)?;
        self.ofctl(&["bundle", "br0", &p.display().to_string()])?;
        self.appctl(&["revalidator/purge"])?;
        Ok(())
    }

    /// Map a port given by name, OpenFlow number or `LOCAL` to its index.
    fn port_index(&self, port: &str) -> Result<usize> {
        let found = self.ports.iter().position(|p| p.name == port).or_else(|| {
            if port.eq_ignore_ascii_case("LOCAL") {
                self.ports.iter().position(|p| p.ofport == OFPP_LOCAL)
            } else {
                let n: u32 = port.parse().ok()?;
                self.ports.iter().position(|p| p.ofport == n)
            }
        });
        found.ok_or_else(|| format!("unknown port {port:?}"))
    }

    /// The port's name as given to [`start`](Self::start) (LOCAL as `LOCAL`
    /// unless renamed).
    pub fn port_name(&self, port: &str) -> Result<String> {
        Ok(self.ports[self.port_index(port)?].name.clone())
    }

    /// Inject one frame as if received on `port` (name, number or LOCAL).
    /// On return the frame has been fully processed (see the module doc).
    pub fn inject(&mut self, port: &str, frame: &[u8]) -> Result<()> {
        let iface = self.ports[self.port_index(port)?].iface.clone();
        self.appctl(&["netdev-dummy/receive", &iface, &crate::pkt::hex(frame)])?;
        let want = self.rx_count + 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = self.datapath_rx_count()?;
            if n >= want {
                self.rx_count = n;
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "datapath did not receive the frame on {port} within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Advance OVS's (stopped) clock by `ms` milliseconds.
    pub fn warp(&mut self, ms: u64) -> Result<()> {
        self.appctl(&["time/warp", &ms.to_string()])?;
        Ok(())
    }

    /// Delete every conntrack entry in every zone.
    pub fn flush_conntrack(&mut self) -> Result<()> {
        self.appctl(&["dpctl/flush-conntrack"])?;
        Ok(())
    }

    /// `dpctl/dump-conntrack [zone=N]`, one entry per line, sorted.
    pub fn dump_conntrack(&mut self, zone: Option<u16>) -> Result<Vec<String>> {
        let zarg = zone.map(|z| format!("zone={z}"));
        let mut args = vec!["dpctl/dump-conntrack"];
        if let Some(z) = &zarg {
            args.push(z);
        }
        let out = self.appctl(&args)?;
        let mut v: Vec<String> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        v.sort();
        Ok(v)
    }

    /// Every frame each port transmitted since the last call, per port in
    /// order of transmission; ports in the order given to start, LOCAL last.
    /// Ports that sent nothing are omitted.
    pub fn take_outputs(&mut self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for p in &mut self.ports {
            for f in p.tx.read_new()? {
                out.push((p.name.clone(), f));
            }
        }
        Ok(out)
    }

    /// ovs-vswitchd log lines at WARN/ERR/EMER written since the last call,
    /// minus known-benign ones.
    pub fn new_log_problems(&mut self) -> Result<Vec<String>> {
        let path = self.dir.join("ovs-vswitchd.log");
        let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let start = (self.log_offset as usize).min(data.len());
        let text = String::from_utf8_lossy(&data[start..]).into_owned();
        self.log_offset = data.len() as u64;
        Ok(text
            .lines()
            .filter(|l| l.contains("|WARN|") || l.contains("|ERR|") || l.contains("|EMER|"))
            .filter(|l| !BENIGN_LOG.iter().any(|b| l.contains(b)))
            .map(String::from)
            .collect())
    }

    /// Replay `steps_text` (the `flowpath replay` step language) after
    /// installing `groups` and `flows` and flushing conntrack, returning the
    /// same JSON as `flowpath replay --format json`.
    pub fn replay(
        &mut self,
        flows: &str,
        groups: Option<&str>,
        steps_text: &str,
    ) -> Result<serde_json::Value> {
        self.load_pipeline(flows, groups)?;
        self.flush_conntrack()?;
        self.take_outputs()?;
        let steps = parse_steps(steps_text)?;
        let mut results = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            results.push(self.run_step(i, step)?);
        }
        let mut ports = serde_json::Map::new();
        for p in &self.ports {
            if p.ofport != OFPP_LOCAL || p.name != "LOCAL" {
                ports.insert(p.name.clone(), p.ofport.into());
            }
        }
        Ok(serde_json::json!({ "ports": ports, "results": results }))
    }

    /// Run one parsed step, returning its contract JSON entry.
    pub fn run_step(&mut self, index: usize, step: &Step) -> Result<serde_json::Value> {
        Ok(match step {
            Step::Packet { port, frame } => {
                let name = self.port_name(port)?;
                self.inject(port, frame)?;
                let outputs: Vec<serde_json::Value> = self
                    .take_outputs()?
                    .into_iter()
                    .map(|(p, f)| serde_json::json!({"port": p, "hex": crate::pkt::hex(&f)}))
                    .collect();
                serde_json::json!({"index": index, "in_port": name, "outputs": outputs})
            }
            Step::Warp(ms) => {
                self.warp(*ms)?;
                serde_json::json!({"index": index, "cmd": "warp", "args": [ms.to_string()]})
            }
            Step::FlushCt => {
                self.flush_conntrack()?;
                serde_json::json!({"index": index, "cmd": "flush-ct", "args": []})
            }
            Step::Flows(table) => {
                let entries = self.dump_flows(*table)?;
                let args: Vec<String> = table.iter().map(|t| t.to_string()).collect();
                serde_json::json!({"index": index, "cmd": "flows", "args": args, "entries": entries})
            }
            Step::Ct(zone) => {
                let entries = self.dump_conntrack(*zone)?;
                let args: Vec<String> = zone.iter().map(|z| z.to_string()).collect();
                serde_json::json!({"index": index, "cmd": "ct", "args": args, "entries": entries})
            }
        })
    }

    fn stop(&mut self) {
        if !self.alive {
            return;
        }
        self.alive = false;
        self.ctl = None;
        for daemon in ["ovs-vswitchd", "ovsdb-server"] {
            let _ = self
                .command("ovs-appctl")
                .args(["-t", daemon, "exit"])
                .output();
            // If the daemon did not exit, kill it by the pid it wrote.
            let pidfile = self.dir.join(format!("{daemon}.pid"));
            if let Ok(pid) = std::fs::read_to_string(&pidfile) {
                let pid = pid.trim();
                if !pid.is_empty() && Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = Command::new("kill").arg(pid).output();
                }
            }
        }
        if std::env::var_os("FLOWPATH_KEEP_OVS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept OVS dir {}", self.dir.display());
        }
    }
}

impl Drop for OvsSwitch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One step of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Inject `frame` on `port` (name, number or LOCAL).
    Packet {
        /// port as written
        port: String,
        /// frame bytes
        frame: Vec<u8>,
    },
    /// `@warp MS`
    Warp(u64),
    /// `@flush-ct`
    FlushCt,
    /// `@ct [ZONE]`
    Ct(Option<u16>),
    /// `@flows [TABLE]`: `ovs-ofctl --no-stats dump-flows`, sorted lines.
    Flows(Option<u8>),
}

/// Parse the step language: `PORT HEX` (hex may contain spaces and colons),
/// `@warp MS`, `@flush-ct`, `@ct [ZONE]`; blank and `#` lines skipped.
pub fn parse_steps(text: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |m: &str| format!("steps line {}: {m}: {line}", ln + 1);
        let mut it = line.splitn(2, char::is_whitespace);
        let first = it.next().unwrap_or("");
        let rest = it.next().unwrap_or("").trim();
        let step = match first {
            "@warp" => Step::Warp(rest.parse().map_err(|_| err("bad warp ms"))?),
            "@flush-ct" => Step::FlushCt,
            "@flows" => Step::Flows(if rest.is_empty() {
                None
            } else {
                Some(
                    rest.trim_start_matches("table=")
                        .parse()
                        .map_err(|_| err("bad table"))?,
                )
            }),
            "@ct" => Step::Ct(if rest.is_empty() {
                None
            } else {
                Some(rest.parse().map_err(|_| err("bad zone"))?)
            }),
            d if d.starts_with('@') => return Err(err("unknown directive")),
            port => Step::Packet {
                port: port.to_string(),
                frame: crate::pkt::unhex(rest).ok_or_else(|| err("bad hex"))?,
            },
        };
        steps.push(step);
    }
    Ok(steps)
}

/// The `flowpath replay` contract run against a fresh real OVS.
pub fn ovs_replay(
    flows: &str,
    groups: Option<&str>,
    ports: &[(String, u32)],
    steps_text: &str,
) -> Result<serde_json::Value> {
    let mut sw = OvsSwitch::start(ports)?;
    let v = sw.replay(flows, groups, steps_text)?;
    let problems = sw.new_log_problems()?;
    if !problems.is_empty() {
        return Err(format!(
            "ovs-vswitchd logged problems:\n{}",
            problems.join("\n")
        ));
    }
    Ok(v)
}

/// Parse `a=1,b=2` (or one per line) into port pairs.
pub fn parse_ports(text: &str) -> Result<Vec<(String, u32)>> {
    let mut v = Vec::new();
    let mut seen = BTreeMap::new();
    for item in text.split([',', '\n']) {
        let item = item.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        let (n, p) = item
            .split_once('=')
            .ok_or_else(|| format!("bad port item {item:?}"))?;
        let p: u32 = if p.trim() == "LOCAL" {
            OFPP_LOCAL
        } else {
            p.trim()
                .parse()
                .map_err(|_| format!("bad port number in {item:?}"))?
        };
        if seen.insert(n.trim().to_string(), p).is_some() {
            return Err(format!("duplicate port {n}"));
        }
        v.push((n.trim().to_string(), p));
    }
    Ok(v)
}
