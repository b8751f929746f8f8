//! Line up two `replay` JSON results (OVS's and flowpath's) step by step.
//!
//! Per packet step: for every port, the sequence of frames that port sent
//! must be identical (order within a port matters; order across ports does
//! not, OVS's is not meaningful). Per `@ct` step: the sorted dump lines must
//! be identical. A mismatch is reported with the input and both sides'
//! outputs decoded.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::decode::summary;
use crate::ovs::Step;
use crate::pkt::unhex;

/// What was compared.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// packet steps compared
    pub packets: usize,
    /// output frames compared (counted on the OVS side)
    pub outputs: usize,
    /// `@ct` dumps compared
    pub ct_dumps: usize,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.packets += o.packets;
        self.outputs += o.outputs;
        self.ct_dumps += o.ct_dumps;
    }
}

fn results(v: &Value) -> Result<&Vec<Value>, String> {
    v.get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no \"results\" array in {v}"))
}

/// Per port, in order, the hex of each output of one packet result.
/// flowpath's answers to a REJECT (outputs marked `"reject"`) are left out:
/// OVS without a controller drops those packets, a documented deviation
/// (README "Deviations"); [`rejects_by_port`] lists them.
pub fn outputs_by_port(r: &Value) -> BTreeMap<String, Vec<String>> {
    outputs_where(r, false)
}

/// Per port, in order, the hex of flowpath's answers to a REJECT in one
/// packet result (`{"port", "hex", "reject": KIND}` outputs).
pub fn rejects_by_port(r: &Value) -> BTreeMap<String, Vec<String>> {
    outputs_where(r, true)
}

fn outputs_where(r: &Value, rejects: bool) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in r
        .get("outputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|o| o.get("reject").is_some() == rejects)
    {
        let port = o.get("port").and_then(Value::as_str).unwrap_or("?");
        let hex = o.get("hex").and_then(Value::as_str).unwrap_or("");
        m.entry(port.to_string())
            .or_default()
            .push(hex.to_ascii_lowercase());
    }
    m
}

fn decode_hex(h: &str) -> String {
    match unhex(h) {
        Some(b) => summary(&b),
        None => format!("<bad hex {h}>"),
    }
}

fn side(label: &str, m: &BTreeMap<String, Vec<String>>) -> String {
    let mut s = format!("  {label}:\n");
    if m.is_empty() {
        s += "    (dropped: no output)\n";
    }
    for (port, frames) in m {
        for (i, h) in frames.iter().enumerate() {
            s += &format!("    {port}[{i}] {}\n      {h}\n", decode_hex(h));
        }
    }
    s
}

/// Compare `ovs` with `fp` (flowpath). `steps` (the parsed input) is used
/// only to print the input packet of a mismatching step. `case` names the
/// case in messages.
pub fn compare(case: &str, steps: &[Step], ovs: &Value, fp: &Value) -> Result<Stats, String> {
    let a = results(ovs)?;
    let b = results(fp).map_err(|e| format!("{case}: flowpath: {e}"))?;
    let mut stats = Stats::default();
    let mut errors = Vec::new();
    if a.len() != b.len() {
        errors.push(format!(
            "{case}: OVS has {} results, flowpath {}",
            a.len(),
            b.len()
        ));
    }
    for (i, (ra, rb)) in a.iter().zip(b).enumerate() {
        let input = match steps.get(i) {
            Some(Step::Packet { port, frame }) => format!("{port} {}", summary(frame)),
            Some(s) => format!("{s:?}"),
            None => "?".into(),
        };
        if ra.get("index") != rb.get("index") {
            errors.push(format!(
                "{case} step {i}: index OVS {:?} vs flowpath {:?}",
                ra.get("index"),
                rb.get("index")
            ));
        }
        if ra.get("cmd").is_some() || rb.get("cmd").is_some() {
            if ra.get("cmd") != rb.get("cmd") || ra.get("args") != rb.get("args") {
                errors.push(format!(
                    "{case} step {i}: directive OVS {ra} vs flowpath {rb}"
                ));
                continue;
            }
            let cmd = ra.get("cmd").and_then(Value::as_str).unwrap_or("");
            if cmd == "ct" || cmd == "flows" {
                stats.ct_dumps += 1;
                let ea = ra.get("entries").cloned().unwrap_or(Value::Null);
                let eb = rb.get("entries").cloned().unwrap_or(Value::Null);
                if ea != eb {
                    let lines = |v: &Value| -> Vec<String> {
                        v.as_array()
                            .into_iter()
                            .flatten()
                            .map(|x| x.as_str().unwrap_or("?").to_string())
                            .collect()
                    };
                    let (la, lb) = (lines(&ea), lines(&eb));
                    let what = if cmd == "ct" { "conntrack" } else { "flows" };
                    let mut s = format!("{case} step {i}: {what} dump differs ({input})\n");
                    for l in &la {
                        let mark = if lb.contains(l) { ' ' } else { '-' };
                        s += &format!("  {mark} OVS      {l}\n");
                    }
                    for l in &lb {
                        let mark = if la.contains(l) { ' ' } else { '+' };
                        s += &format!("  {mark} flowpath {l}\n");
                    }
                    errors.push(s);
                }
            }
            continue;
        }
        stats.packets += 1;
        let (oa, ob) = (outputs_by_port(ra), outputs_by_port(rb));
        stats.outputs += oa.values().map(Vec::len).sum::<usize>();
        if ra.get("in_port") != rb.get("in_port") {
            errors.push(format!(
                "{case} step {i}: in_port OVS {:?} vs flowpath {:?}",
                ra.get("in_port"),
                rb.get("in_port")
            ));
        }
        if oa != ob {
            errors.push(format!(
                "{case} step {i}: outputs differ\n  input: {input}\n{}{}",
                side("OVS", &oa),
                side("flowpath", &ob)
            ));
        }
    }
    if errors.is_empty() {
        Ok(stats)
    } else {
        Err(errors.join("\n"))
    }
}
