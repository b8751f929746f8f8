//! Loading flows, groups, ports and STEPS files for the offline commands,
//! with errors that name the file and line.

use std::path::Path;

use anyhow::Context;
use datapath::pipeline::Pipeline;
use datapath::pipeline::{format, parse};
use datapath::replay::{self, PortMap, Step};

/// Read and parse a flows file (and optional groups file) into a pipeline.
/// Any bad line fails the whole load.
pub fn load(flows: &Path, groups: Option<&Path>) -> anyhow::Result<Pipeline> {
    load_named(flows, groups, &[])
}

/// [`load`], with port names (`output:gw0`, `in_port=uplink`) resolved
/// against `names`, as `ovs-ofctl` resolves them against the bridge.
pub fn load_named(
    flows: &Path,
    groups: Option<&Path>,
    names: &[(String, u32)],
) -> anyhow::Result<Pipeline> {
    parse::with_port_names(names, || load_inner(flows, groups))
}

fn load_inner(flows: &Path, groups: Option<&Path>) -> anyhow::Result<Pipeline> {
    let name = flows.display().to_string();
    let text =
        std::fs::read_to_string(flows).with_context(|| format!("cannot read flows file {name}"))?;
    let fl = parse::parse_flows(&name, &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gr = match groups {
        Some(g) => {
            let gname = g.display().to_string();
            let gtext = std::fs::read_to_string(g)
                .with_context(|| format!("cannot read groups file {gname}"))?;
            parse::parse_groups(&gname, &gtext).map_err(|e| anyhow::anyhow!("{e}"))?
        }
        None => Vec::new(),
    };
    Ok(Pipeline::new(fl, gr))
}

/// Parse `--ports`.
pub fn ports(s: &str) -> anyhow::Result<PortMap> {
    PortMap::parse(s).map_err(|e| anyhow::anyhow!(e))
}

/// Read and parse a STEPS file.
pub fn steps(path: &Path, ports: &PortMap) -> anyhow::Result<Vec<Step>> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read steps file {name}"))?;
    Ok(replay::parse_steps(&name, &text, ports)?)
}

/// The pipeline's flows in `ovs-ofctl --no-stats dump-flows` form.
pub fn dump_flows(p: &Pipeline, table: Option<u8>) -> String {
    let mut flows: Vec<_> = p
        .flows
        .iter()
        .filter(|f| table.is_none_or(|t| f.table == t))
        .cloned()
        .collect();
    format::sort_for_dump(&mut flows);
    let mut out = String::new();
    for f in &flows {
        out.push_str(&format::format_flow(f, format::FormatOptions::default()));
        out.push('\n');
    }
    out
}
