//! `flowpath replay`: run STEPS through the pipeline and report every output.
//!
//! Contract (relied on by other checks; keep it exactly):
//! `flowpath replay --flows F [--groups G] --ports NAME=OFPORT,... --packets STEPS [--format json|text] [--pcap-dir D]`
//! JSON: `{"ports": {NAME: OFPORT}, "results": [...]}`, one entry per step:
//! packets `{"index": i, "in_port": NAME, "outputs": [{"port": NAME, "hex": HEX}, ...]}`,
//! an output that is the datapath's own answer to a REJECT (a Service
//! without endpoints) also carrying `"reject": "tcp_rst"|"icmp_port_unreachable"`,
//! directives `{"index": i, "cmd": "warp"|"ct"|"flush-ct"|"flows", "args": [...]}`
//! (`ct` and `flows` entries also carry `"entries": [dump lines]`).

use std::fmt::Write as _;
use std::path::Path;

use datapath::pipeline::Pipeline;
use datapath::replay::{PortMap, Replayer, Step, StepResult};
use serde_json::{Value, json};

/// Options of one replay run.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Run through the per-core flow cache (megaflow + exact match) rather
    /// than translating every pass. Both must give identical results.
    pub cache: bool,
}

/// Run `steps` through `p`.
pub fn run(p: &Pipeline, ports: &PortMap, steps: &[Step], opts: &ReplayOptions) -> Vec<StepResult> {
    let r = Replayer::new(p, ports);
    let mut r = if opts.cache { r.with_cache() } else { r };
    r.run(steps)
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// The contract JSON.
pub fn to_json(ports: &PortMap, results: &[StepResult]) -> Value {
    let mut pm = serde_json::Map::new();
    for (n, p) in &ports.ports {
        pm.insert(n.clone(), json!(p));
    }
    let results: Vec<Value> = results
        .iter()
        .map(|r| match r {
            StepResult::Packet {
                index,
                in_port,
                outputs,
                answers,
            } => json!({
                "index": index,
                "in_port": in_port,
                "outputs": outputs.iter().enumerate().map(|(i, (p, b))| {
                    let mut o = json!({"port": p, "hex": hex(b)});
                    if let Some((_, a)) = answers.iter().find(|(j, _)| *j == i) {
                        o["reject"] = json!(a.name());
                    }
                    o
                }).collect::<Vec<_>>(),
            }),
            StepResult::Cmd {
                index,
                cmd,
                args,
                entries,
            } => {
                let mut v = json!({"index": index, "cmd": cmd, "args": args});
                if *cmd == "ct" || *cmd == "flows" {
                    v["entries"] = json!(entries);
                }
                v
            }
        })
        .collect();
    json!({"ports": pm, "results": results})
}

/// Human-readable results: one line per output, decoded.
pub fn to_text(results: &[StepResult]) -> String {
    let mut out = String::new();
    for r in results {
        match r {
            StepResult::Packet {
                index,
                in_port,
                outputs,
                answers,
            } => {
                let _ = writeln!(
                    out,
                    "#{index} in_port={in_port}: {} output(s)",
                    outputs.len()
                );
                for (i, (p, b)) in outputs.iter().enumerate() {
                    let tag = match answers.iter().find(|(j, _)| *j == i) {
                        Some((_, a)) => format!(" (reject answer: {})", a.name()),
                        None => String::new(),
                    };
                    let _ = writeln!(out, "    -> {p}: {}{tag}", crate::trace::describe_packet(b));
                }
            }
            StepResult::Cmd {
                index,
                cmd,
                args,
                entries,
            } => {
                let _ = writeln!(out, "#{index} @{cmd} {}", args.join(" "));
                for e in entries {
                    let _ = writeln!(out, "    {e}");
                }
            }
        }
    }
    out
}

/// Write each port's outputs to `dir/NAME.pcap` (one file per port that
/// transmitted anything).
pub fn write_pcaps(dir: &Path, ports: &PortMap, results: &[StepResult]) -> anyhow::Result<()> {
    use datapath::io::pcap::PcapWriter;
    std::fs::create_dir_all(dir)?;
    let mut writers: std::collections::BTreeMap<
        String,
        PcapWriter<std::io::BufWriter<std::fs::File>>,
    > = Default::default();
    let _ = ports;
    for r in results {
        if let StepResult::Packet { index, outputs, .. } = r {
            for (p, b) in outputs {
                if !writers.contains_key(p) {
                    let f = std::fs::File::create(dir.join(format!("{p}.pcap")))?;
                    writers.insert(p.clone(), PcapWriter::new(std::io::BufWriter::new(f))?);
                }
                if let Some(w) = writers.get_mut(p) {
                    w.write(*index as u64 * 1000, b)?;
                }
            }
        }
    }
    for (_, w) in writers {
        w.into_inner()?;
    }
    Ok(())
}

/// Replay `steps_text` through `flows_text`/`groups_text` with the given
/// port names, returning the contract JSON (what the CLI prints).
pub fn replay_json(
    flows_text: &str,
    groups_text: Option<&str>,
    ports: &[(String, u32)],
    steps_text: &str,
    opts: &ReplayOptions,
) -> anyhow::Result<Value> {
    use datapath::pipeline::parse;
    let flows = parse::parse_flows("flows", flows_text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let groups = match groups_text {
        Some(g) => parse::parse_groups("groups", g).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Vec::new(),
    };
    let p = Pipeline::new(flows, groups);
    let pm = PortMap {
        ports: ports.to_vec(),
    };
    let steps = datapath::replay::parse_steps("steps", steps_text, &pm)?;
    Ok(to_json(&pm, &run(&p, &pm, &steps, opts)))
}
