//! Scenario directories (`tests/scenarios/NAME/`): `flows.txt`, optional
//! `groups.txt`, `ports.txt` (`uplink=1,gw0=2,...`) and `steps.txt` in the
//! `flowpath replay` step language.
//!
//! `steps.txt` also carries the expected behaviour as comments that replay
//! ignores: after each packet line, one `#> PORT field=value ...` line per
//! frame that port must send (fields as in [`crate::decode::fields`]), or
//! `#> drop` when nothing may come out. Frames of one port are matched in
//! order; across ports order is free.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::compare::outputs_by_port;
use crate::decode::{fields, summary};
use crate::ovs::{Step, parse_ports, parse_steps};
use crate::pkt::unhex;

/// One expected output frame.
#[derive(Debug, Clone)]
pub struct Expected {
    /// port name
    pub port: String,
    /// required decoded field values
    pub fields: Vec<(String, String)>,
}

/// A loaded scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// directory name
    pub name: String,
    /// flows.txt
    pub flows: String,
    /// groups.txt, if present
    pub groups: Option<String>,
    /// ports.txt parsed
    pub ports: Vec<(String, u32)>,
    /// steps.txt as text
    pub steps_text: String,
    /// steps parsed
    pub steps: Vec<Step>,
    /// per packet step (by step index): its expected outputs
    pub expect: BTreeMap<usize, Vec<Expected>>,
}

/// The directory holding all scenarios.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Load every scenario, sorted by name.
pub fn load_all() -> Result<Vec<Scenario>, String> {
    let mut names: Vec<String> = std::fs::read_dir(scenarios_dir())
        .map_err(|e| format!("scenarios dir: {e}"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("steps.txt").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.iter().map(|n| load(n)).collect()
}

/// Load one scenario by name.
pub fn load(name: &str) -> Result<Scenario, String> {
    let dir = scenarios_dir().join(name);
    let read =
        |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| format!("{name}/{f}: {e}"));
    let steps_text = read("steps.txt")?;
    let steps = parse_steps(&steps_text).map_err(|e| format!("{name}: {e}"))?;
    let expect = parse_expectations(&steps_text).map_err(|e| format!("{name}: {e}"))?;
    Ok(Scenario {
        name: name.to_string(),
        flows: read("flows.txt")?,
        groups: read("groups.txt").ok(),
        ports: parse_ports(&read("ports.txt")?).map_err(|e| format!("{name}: {e}"))?,
        steps_text,
        steps,
        expect,
    })
}

/// Parse the `#>` expectation comments, keyed by step index.
pub fn parse_expectations(text: &str) -> Result<BTreeMap<usize, Vec<Expected>>, String> {
    let mut out: BTreeMap<usize, Vec<Expected>> = BTreeMap::new();
    let mut step: Option<usize> = None;
    let mut next = 0usize;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("#>") {
            let i = step.ok_or_else(|| format!("expectation before any packet: {line}"))?;
            let entry = out.entry(i).or_default();
            let mut toks = rest.split_whitespace();
            let port = toks.next().ok_or("empty expectation")?;
            if port == "drop" {
                continue;
            }
            let fields = toks
                .map(|t| {
                    t.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| format!("bad expectation field {t:?}"))
                })
                .collect::<Result<_, _>>()?;
            entry.push(Expected {
                port: port.to_string(),
                fields,
            });
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        step = if line.starts_with('@') {
            None
        } else {
            Some(next)
        };
        next += 1;
    }
    Ok(out)
}

/// Check a replay result (OVS's) against the scenario's expectations:
/// every packet step must have expectations, and every output must match.
pub fn check_expectations(sc: &Scenario, result: &Value) -> Result<usize, String> {
    let results = result
        .get("results")
        .and_then(Value::as_array)
        .ok_or("no results")?;
    let mut errors = Vec::new();
    let mut checked = 0;
    for (i, step) in sc.steps.iter().enumerate() {
        let Step::Packet { port, frame } = step else {
            continue;
        };
        let Some(exp) = sc.expect.get(&i) else {
            errors.push(format!("step {i}: no `#>` expectation written"));
            continue;
        };
        let got = results.get(i).map(outputs_by_port).unwrap_or_default();
        let mut want: BTreeMap<&str, Vec<&Expected>> = BTreeMap::new();
        for e in exp {
            want.entry(&e.port).or_default().push(e);
        }
        let mut msg = Vec::new();
        let ports: std::collections::BTreeSet<String> = got
            .keys()
            .cloned()
            .chain(want.keys().map(|s| s.to_string()))
            .collect();
        for p in ports {
            let g = got.get(&p).cloned().unwrap_or_default();
            let w = want.get(p.as_str()).cloned().unwrap_or_default();
            if g.len() != w.len() {
                msg.push(format!(
                    "port {p}: expected {} frames, got {}: {:?}",
                    w.len(),
                    g.len(),
                    g.iter()
                        .map(|h| unhex(h).map(|b| summary(&b)).unwrap_or_default())
                        .collect::<Vec<_>>()
                ));
                continue;
            }
            for (h, e) in g.iter().zip(w) {
                let b = unhex(h).unwrap_or_default();
                let f = fields(&b);
                for (k, v) in &e.fields {
                    if f.get(k.as_str()).map(String::as_str) != Some(v.as_str()) {
                        msg.push(format!(
                            "port {p}: {k} expected {v}, got {:?} in {}",
                            f.get(k.as_str()),
                            summary(&b)
                        ));
                    }
                }
                // Every frame OVS emits in our scenarios has valid checksums.
                if f.get("csum").map(String::as_str) == Some("BAD") {
                    msg.push(format!("port {p}: bad checksum in {}", summary(&b)));
                }
                checked += 1;
            }
        }
        if !msg.is_empty() {
            errors.push(format!(
                "{} step {i} (input {port} {}):\n    {}",
                sc.name,
                summary(frame),
                msg.join("\n    ")
            ));
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors.join("\n"))
    }
}
