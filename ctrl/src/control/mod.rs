//! The control socket of `flowpath run`, and the client the CLI uses.
//!
//! A Unix stream socket (`control_socket` in node.toml, default
//! [`DEFAULT_SOCKET`](crate::run::config::DEFAULT_SOCKET)), mode 0600, served
//! by a thread of its own (never a worker; one more per connection). The
//! protocol is one JSON object per line each way:
//!
//! ```text
//! -> {"cmd":"dump-flows","table":41}
//! <- {"ok":true,"text":"...ovs-ofctl form...","json":[...]}
//! <- {"ok":false,"error":"..."}
//! ```
//!
//! Commands: `dump-flows [table]`, `add-flow flow`, `del-flows [spec]`
//! (`cookie=V[/M]`, `table=N`), `replace-flows flows`, `dump-groups`,
//! `dump-conntrack [zone]`, `flush-conntrack [zone]`, `dump-megaflows`
//! (every worker's megaflow cache, as `ovs-appctl dpctl/dump-flows`),
//! `stats`, `ports`,
//! `reload`, `trace in_port flow|packet` (through the running pipeline,
//! with an empty conntrack of its own, as the offline `trace`). Flow changes build a new [`Pipeline`] here, off the hot path,
//! and publish it atomically ([`NodeHandle::publish`]); the workers pick it
//! up between bursts. Conntrack commands go to every worker's mailbox
//! ([`WorkerControl::conntrack`]) and are answered between bursts, so the
//! hot path never waits for a lock.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use datapath::pipeline::classifier::FlowIdx;
use datapath::pipeline::ir::Flow;
use datapath::pipeline::learn::LEARNED_BIT;
use datapath::pipeline::{Pipeline, format, parse};
use datapath::worker::{CtCommand, CtReply};
use serde_json::{Value, json};

use crate::run::{NodeHandle, PortKind};

/// Bind the socket (replacing a stale one; one another process still
/// answers on is an error), restrict it to its owner and serve it on a
/// thread of its own until the process exits.
pub fn serve(path: &Path, node: Arc<NodeHandle>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("control socket directory {}", dir.display()))?;
    }
    if UnixStream::connect(path).is_ok() {
        bail!(
            "control socket {} is served by another running flowpath",
            path.display()
        );
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove stale {}", path.display())),
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("bind control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    std::thread::Builder::new()
        .name("fp-control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    // A thread per connection: a client that keeps its
                    // connection open never holds up another one.
                    Ok(s) => {
                        let node = node.clone();
                        let spawned = std::thread::Builder::new()
                            .name("fp-control-conn".into())
                            .spawn(move || {
                                if let Err(e) = serve_one(s, &node) {
                                    eprintln!("flowpath run: control connection: {e:#}");
                                }
                            });
                        if let Err(e) = spawned {
                            eprintln!("flowpath run: control connection: {e}");
                        }
                    }
                    Err(e) => eprintln!("flowpath run: control socket accept: {e}"),
                }
            }
        })
        .context("spawn control thread")?;
    Ok(())
}

fn serve_one(s: UnixStream, node: &NodeHandle) -> anyhow::Result<()> {
    let mut w = s.try_clone()?;
    for line in BufReader::new(s).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Value>(&line) {
            Ok(req) => match handle(node, &req) {
                Ok((text, json)) => json!({"ok": true, "text": text, "json": json}),
                Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
            },
            Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
        };
        writeln!(w, "{resp}")?;
        w.flush()?;
    }
    Ok(())
}

/// Answer one request: (text in the OVS tools' form, JSON for scripts).
pub fn handle(node: &NodeHandle, req: &Value) -> anyhow::Result<(String, Value)> {
    let cmd = req
        .get("cmd")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("request without \"cmd\""))?;
    let arg = |k: &str| req.get(k).and_then(Value::as_str);
    let zone = || -> anyhow::Result<Option<u16>> {
        match req.get("zone") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|z| u16::try_from(z).ok())
                .map(Some)
                .ok_or_else(|| anyhow!("zone {v} is not 0..65535")),
        }
    };
    match cmd {
        "dump-flows" => {
            let table = match req.get("table") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|t| u8::try_from(t).ok())
                        .ok_or_else(|| anyhow!("table {v} is not 0..255"))?,
                ),
            };
            let with_stats = req.get("stats").and_then(Value::as_bool).unwrap_or(false);
            let p = node.pipeline();
            // Every flow with its classifier index (static, then learned),
            // in dump order.
            let mut flows: Vec<(FlowIdx, &Flow)> = p
                .indexed_flows()
                .filter(|(_, f)| table.is_none_or(|t| f.table == t))
                .collect();
            flows.sort_by_cached_key(|(_, f)| format::dump_order(f));
            let counts = if with_stats {
                node.flow_stats(&p)?
            } else {
                Default::default()
            };
            // Ages in seconds (OVS's `duration`, `idle_age`, `hard_age`):
            // learned flows' from the learn store, static flows' from the
            // publish times; both on the learner clock.
            let now = node.learn_now();
            let times = node.flow_times();
            let learned_times: std::collections::HashMap<u64, (u64, u64, u64)> = node
                .learned_times()
                .into_iter()
                .map(|(id, c, m, u)| (id, (c, m, u)))
                .collect();
            let mut lines = Vec::with_capacity(flows.len());
            let mut json = Vec::with_capacity(flows.len());
            for (idx, f) in &flows {
                let learned = (idx & LEARNED_BIT != 0).then(|| {
                    let l = &p.learned.flows()[(idx & !LEARNED_BIT) as usize];
                    learned_times.get(&l.id).copied().unwrap_or((
                        l.created_ms,
                        l.modified_ms,
                        l.used_ms,
                    ))
                });
                let (created, modified, used) = match learned {
                    Some(t) => t,
                    None => {
                        let (c, m) = times.get(&p, *idx).unwrap_or((now, now));
                        (c, m, c)
                    }
                };
                let (st, idle_ms) = counts.get(idx).copied().unwrap_or_default();
                let since = |t: u64| now.saturating_sub(t);
                // Never used: idle since added, as OVS starts `used` at the
                // creation time.
                let idle_ms = match (idle_ms, learned) {
                    (Some(i), Some(_)) => i.min(since(used)),
                    (Some(i), None) => i.min(since(created)),
                    (None, _) => since(used),
                };
                let shown = format::ShownStats {
                    duration_ms: since(created),
                    packets: st.packets,
                    bytes: st.bytes,
                    idle_age: idle_ms / 1000,
                    hard_age: since(modified) / 1000,
                };
                let plain = format::format_flow(f, format::FormatOptions::default());
                // JSON's "flow" is always the --no-stats text; the
                // statistics are fields of their own.
                let mut v = json!({"table": f.table, "priority": f.priority,
                       "cookie": format!("{:#x}", f.cookie), "flow": plain.trim_start()});
                let line = if with_stats {
                    format::format_flow_stats(f, &shown)
                } else {
                    plain
                };
                if learned.is_some() {
                    v["learned"] = json!(true);
                }
                if learned.is_some() || with_stats {
                    v["duration"] = json!(shown.duration_ms / 1000);
                    v["idle_age"] = json!(shown.idle_age);
                    v["hard_age"] = json!(shown.hard_age);
                }
                if with_stats {
                    v["duration_ms"] = json!(shown.duration_ms);
                    v["n_packets"] = json!(st.packets);
                    v["n_bytes"] = json!(st.bytes);
                }
                lines.push(line);
                json.push(v);
            }
            Ok((join_lines(&lines), Value::Array(json)))
        }
        "add-flow" => {
            let text = arg("flow").ok_or_else(|| anyhow!("add-flow needs \"flow\""))?;
            let new = parse_flows(node, "add-flow", text)?;
            let n = new.len();
            let ids: std::collections::HashSet<_> = new
                .iter()
                .map(|f| (f.table, f.priority, f.matches))
                .collect();
            let g = node.edit(|p| {
                let mut flows = p.flows.to_vec();
                flows.extend(new);
                Ok(Pipeline::new(flows, groups_of(p)))
            })?;
            // An OpenFlow add over an existing flow keeps its counts but
            // restarts its duration (OVS's add vs modify).
            node.restart_flows(|f| ids.contains(&(f.table, f.priority, f.matches)));
            Ok((String::new(), json!({"added": n, "generation": g})))
        }
        "del-flows" => {
            let spec = DelSpec::parse(arg("spec").unwrap_or(""))?;
            let mut removed = 0;
            let g = node.edit(|p| {
                let before = p.flows.len();
                let flows: Vec<Flow> = p
                    .flows
                    .iter()
                    .filter(|f| !spec.matches(f))
                    .cloned()
                    .collect();
                removed = before - flows.len();
                Ok(Pipeline::new(flows, groups_of(p)))
            })?;
            // As in OVS, learned flows that match go too.
            removed += node.retain_learned(|f| !spec.matches(f));
            let g = g.max(node.generation());
            Ok((String::new(), json!({"removed": removed, "generation": g})))
        }
        "replace-flows" => {
            let text = arg("flows").ok_or_else(|| anyhow!("replace-flows needs \"flows\""))?;
            let name = arg("file").unwrap_or("replace-flows");
            let new = parse_flows(node, name, text)?;
            let n = new.len();
            let g = node.edit(|p| Ok(Pipeline::new(new, groups_of(p))))?;
            // Every flow not in the file goes, learned ones included.
            node.retain_learned(|_| false);
            let g = g.max(node.generation());
            Ok((String::new(), json!({"flows": n, "generation": g})))
        }
        "dump-groups" => {
            let p = node.pipeline();
            let mut groups = groups_of(&p);
            groups.sort_by_key(|g| g.id);
            let lines: Vec<String> = groups
                .iter()
                .map(|g| format::format_group(g).trim_start().to_string())
                .collect();
            let json = groups
                .iter()
                .zip(&lines)
                .map(|(g, l)| json!({"group_id": g.id, "group": l}))
                .collect();
            Ok((join_lines(&lines), Value::Array(json)))
        }
        "dump-conntrack" => {
            let mut all = node.dump_conntrack(zone()?)?;
            all.sort_by_key(|d| d.sort_key());
            let lines: Vec<String> = all.iter().map(|d| d.to_string()).collect();
            let json = all
                .iter()
                .zip(&lines)
                .map(|(d, l)| {
                    let t = |t: &conntrack::Tuple| {
                        json!({"src": std::net::Ipv4Addr::from(t.src).to_string(),
                               "dst": std::net::Ipv4Addr::from(t.dst).to_string(),
                               "sport": t.sport, "dport": t.dport})
                    };
                    json!({"zone": d.zone, "proto": d.orig.proto, "orig": t(&d.orig),
                           "reply": t(&d.reply), "mark": d.mark,
                           "state": d.tcp_state().map(|s| format!("{s:?}")), "entry": l})
                })
                .collect();
            Ok((join_lines(&lines), Value::Array(json)))
        }
        "flush-conntrack" => {
            let n = node.flush_conntrack(zone()?)?;
            Ok((String::new(), json!({"flushed": n})))
        }
        "stats" => {
            let s = node.stats();
            let g = node.generation();
            Ok((
                crate::run::stats::to_text(&s, g),
                crate::run::stats::to_json(&s, g),
            ))
        }
        "ports" => {
            let mut text = String::new();
            let mut json = Vec::new();
            for p in &node.cfg().ports {
                let ofport = if p.ofport == datapath::key::OFPP_LOCAL {
                    "LOCAL".to_string()
                } else {
                    p.ofport.to_string()
                };
                let (kind, dev) = match &p.kind {
                    PortKind::AfXdp {
                        interface, queues, ..
                    } => ("afxdp", format!("{interface} queues {queues:?}")),
                    PortKind::Tap { device, .. } => ("tap", device.clone()),
                    PortKind::Memory { .. } => ("memory", String::new()),
                };
                text.push_str(&format!(" {ofport}({}): {kind} {dev}\n", p.name));
                json.push(json!({"name": p.name, "ofport": ofport, "type": kind, "device": dev}));
            }
            Ok((text, Value::Array(json)))
        }
        "dump-megaflows" => {
            let ports = port_map(node)?;
            let mut text = String::new();
            let mut workers = Vec::new();
            for (w, r) in node
                .conntrack(&CtCommand::DumpMegaflows)?
                .into_iter()
                .enumerate()
            {
                let CtReply::Megaflows { now_ms, flows } = r else {
                    continue;
                };
                let mut lines: Vec<String> = flows
                    .iter()
                    .map(|f| megaflow_line(f, now_ms, &ports))
                    .collect();
                lines.sort();
                text.push_str(&format!("flow-dump from worker {w}:\n"));
                for l in &lines {
                    text.push_str(l);
                    text.push('\n');
                }
                workers.push(json!({"worker": w, "megaflows": lines}));
            }
            Ok((text, Value::Array(workers)))
        }
        "trace" => {
            let in_port = arg("in_port").ok_or_else(|| anyhow!("trace needs \"in_port\""))?;
            let ports = port_map(node)?;
            let out = crate::trace::trace(
                &node.pipeline(),
                &ports,
                &[],
                in_port,
                arg("packet"),
                arg("flow"),
            )?;
            Ok((out.clone(), json!({"trace": out})))
        }
        "reload" => {
            let g = node.reload()?;
            Ok((
                format!("reloaded: generation {g}\n"),
                json!({"generation": g}),
            ))
        }
        other => bail!("unknown command {other:?}"),
    }
}

/// The node's ports as a replay port map (names for `output:`).
fn port_map(node: &NodeHandle) -> anyhow::Result<datapath::replay::PortMap> {
    let names: Vec<String> = node
        .cfg()
        .ports
        .iter()
        .map(|p| {
            if p.ofport == datapath::key::OFPP_LOCAL {
                format!("{}=LOCAL", p.name)
            } else {
                format!("{}={}", p.name, p.ofport)
            }
        })
        .collect();
    crate::load::ports(&names.join(","))
}

/// One megaflow as `ovs-appctl dpctl/dump-flows` prints a datapath flow:
/// `recirc_id(N),` (the pass: 0 for a packet's first, 1 + the table a
/// recirculation resumes at otherwise), the masked match in `ovs-ofctl`
/// form (as `trace` prints "Megaflow:"), then packets, bytes, the time
/// since its last use on the worker's clock, and its datapath actions.
pub(crate) fn megaflow_line(
    f: &datapath::cache::MegaflowDump,
    now_ms: u64,
    ports: &datapath::replay::PortMap,
) -> String {
    use datapath::key::slot;
    let m = datapath::pipeline::ir::Match {
        value: f.key,
        mask: f.mask,
    };
    let used = if f.stat.packets == 0 {
        "never".to_string()
    } else {
        format!(
            "{:.3}s",
            now_ms.saturating_sub(f.stat.used_ms) as f64 / 1000.0
        )
    };
    let actions = match f.error {
        Some(e) => format!("drop({})", e.name()),
        None => crate::trace::dp_actions(&f.actions, ports),
    };
    let matched = format::format_match(&m);
    let recirc = match f.key.get(slot::RECIRC_ID) {
        0 => "0".to_string(),
        r => format!("{r:#x}"),
    };
    format!(
        "recirc_id({recirc}),{}, packets:{}, bytes:{}, used:{used}, actions:{actions}",
        matched.trim_end_matches(','),
        f.stat.packets,
        f.stat.bytes,
    )
}

fn join_lines(lines: &[String]) -> String {
    let mut out = String::new();
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out
}

fn groups_of(p: &Pipeline) -> Vec<datapath::pipeline::ir::Group> {
    p.groups.values().cloned().collect()
}

fn parse_flows(node: &NodeHandle, name: &str, text: &str) -> anyhow::Result<Vec<Flow>> {
    parse::with_port_names(&node.cfg().port_names(), || {
        parse::parse_flows(name, text).map_err(|e| anyhow!("{e}"))
    })
}

/// What `del-flows` deletes: `cookie=V[/M]` and `table=N`, both optional
/// (nothing: every flow), as `ovs-ofctl del-flows` reads them.
#[derive(Debug, Default, PartialEq)]
struct DelSpec {
    cookie: Option<(u64, u64)>,
    table: Option<u8>,
}

impl DelSpec {
    fn parse(s: &str) -> anyhow::Result<DelSpec> {
        let mut d = DelSpec::default();
        for tok in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, v) = tok.split_once('=').unwrap_or((tok, ""));
            match k {
                "cookie" => {
                    let (v, m) = v.split_once('/').unwrap_or((v, "-1"));
                    let m = if m == "-1" { "0xffffffffffffffff" } else { m };
                    d.cookie = Some((num(v)?, num(m)?));
                }
                "table" => d.table = Some(num(v)?.try_into().context("table is 0..255")?),
                _ => bail!(
                    "del-flows: {tok:?}: only cookie=V/M and table=N select flows to delete here"
                ),
            }
        }
        Ok(d)
    }

    fn matches(&self, f: &Flow) -> bool {
        self.cookie.is_none_or(|(v, m)| f.cookie & m == v & m)
            && self.table.is_none_or(|t| f.table == t)
    }
}

fn num(s: &str) -> anyhow::Result<u64> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| anyhow!("{s:?} is not a number"))
}

/// Send one request to the socket at `path` and return the response
/// object (`ok` checked: an error answer becomes `Err`).
pub fn request(path: &Path, req: &Value) -> anyhow::Result<Value> {
    let mut s = UnixStream::connect(path).with_context(|| {
        format!(
            "cannot reach flowpath run at {} (is it running? --socket PATH)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    writeln!(s, "{req}")?;
    s.flush()?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    let resp: Value = serde_json::from_str(&line)
        .with_context(|| format!("bad answer from {}", path.display()))?;
    if resp.get("ok") != Some(&Value::Bool(true)) {
        bail!(
            "{}",
            resp.get("error")
                .and_then(Value::as_str)
                .unwrap_or("request failed")
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A megaflow prints as OVS's dpctl/dump-flows does: its pass, masked
    /// match, counters, age and datapath actions with port names.
    #[test]
    fn megaflow_lines() {
        use datapath::cache::MegaflowCache;
        use datapath::key::{FlowKey, eth_type, slot};
        let flows = parse::parse_flows(
            "f",
            "table=0,priority=5,ip,nw_dst=10.0.0.1,actions=output:2\ntable=0,priority=1,actions=drop\n",
        )
        .unwrap();
        let p = Pipeline::new(flows, vec![]);
        let ports = datapath::replay::PortMap::parse("a=1,b=2").unwrap();
        let mut key = FlowKey::ZERO;
        key.set(slot::IN_PORT, 1);
        key.set(slot::DL_TYPE, eth_type::IPV4 as u64);
        key.set(
            slot::NW_DST,
            u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1)) as u64,
        );
        key.set(slot::NW_SRC, 7);
        let mut c = MegaflowCache::new(16, true);
        let x = datapath::pipeline::xlate::xlate(&p, &[1u32, 2][..], &key, 0, None);
        let idx = c.insert(&key, x);
        c.credit(idx, 60, 1_500);
        let d = c.dump();
        assert_eq!(d.len(), 1);
        let l = megaflow_line(&d[0], 2_000, &ports);
        assert!(l.starts_with("recirc_id(0),"), "{l}");
        assert!(
            l.contains("in_port=1") && l.contains("nw_dst=10.0.0.1"),
            "{l}"
        );
        assert!(!l.contains("nw_src"), "nw_src is wildcarded: {l}");
        assert!(
            l.ends_with(", packets:1, bytes:60, used:0.500s, actions:output:b"),
            "{l}"
        );
    }

    #[test]
    fn del_spec_reads_cookie_and_table() {
        let d = DelSpec::parse("cookie=0x520/0xff0,table=5").unwrap();
        assert_eq!(d.cookie, Some((0x520, 0xff0)));
        assert_eq!(d.table, Some(5));
        assert_eq!(
            DelSpec::parse("cookie=7").unwrap().cookie,
            Some((7, u64::MAX))
        );
        assert_eq!(DelSpec::parse("").unwrap(), DelSpec::default());
        assert!(DelSpec::parse("ip,nw_dst=10.0.0.1").is_err());
        let f = |cookie, table| Flow {
            table,
            priority: 1,
            cookie,
            idle_timeout: 0,
            hard_timeout: 0,
            matches: Default::default(),
            actions: vec![],
        };
        let d = DelSpec::parse("cookie=0x500/0xf00").unwrap();
        assert!(d.matches(&f(0x520, 0)));
        assert!(!d.matches(&f(0x620, 0)));
    }
}
