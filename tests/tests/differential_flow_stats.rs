//! Per-flow statistics against real OVS: every scenario in
//! `tests/scenarios/` is replayed on OVS 3.1 and through flowpath (with the
//! flow cache — chains, megaflows — and without), and afterwards every
//! flow's `n_packets` and `n_bytes` must be what `ovs-ofctl dump-flows`
//! shows (after `revalidator/purge` pushed the datapath's counts).
//!
//! The scenarios cover recirculations through three conntrack zones, NAT,
//! select groups, resubmit chains (a flow hit by several passes of one
//! packet counts each pass, as in OVS), explicit drops and table misses.

use std::collections::BTreeMap;

use datapath::pipeline::format::{self, FormatOptions};
use datapath::pipeline::learn::LEARNED_BIT;
use datapath::pipeline::{Pipeline, parse};
use datapath::replay::{PortMap, Replayer, parse_steps};
use tests::ovs::{OvsSwitch, skip_without_ovs};
use tests::scenario::{self, Scenario};

/// flowpath's counts after replaying `sc`: `--no-stats` text -> (packets,
/// bytes), every flow included.
fn flowpath_counts(sc: &Scenario, cached: bool) -> BTreeMap<String, (u64, u64)> {
    let names = &sc.ports;
    let flows = parse::with_port_names(names, || parse::parse_flows("flows.txt", &sc.flows))
        .expect("flows parse");
    let groups = match &sc.groups {
        Some(g) => parse::with_port_names(names, || parse::parse_groups("groups.txt", g))
            .expect("groups parse"),
        None => Vec::new(),
    };
    let p = Pipeline::new(flows, groups);
    let ports = PortMap {
        ports: names.clone(),
    };
    let steps = parse_steps("steps.txt", &sc.steps_text, &ports).expect("steps parse");
    let mut r = Replayer::new(&p, &ports);
    if cached {
        r = r.with_cache();
    }
    r.run(&steps);
    let counts = r.flow_counts();
    let cur = r.current();
    let statics = cur.flows.iter().enumerate().map(|(i, f)| (i as u32, f));
    let learned = cur
        .learned
        .flows()
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u32 | LEARNED_BIT, &*l.flow));
    statics
        .chain(learned)
        .map(|(i, f)| {
            let text = format::format_flow(f, FormatOptions::default())
                .trim_start()
                .to_string();
            let (s, _) = counts.get(&i).copied().unwrap_or_default();
            (text, (s.packets, s.bytes))
        })
        .collect()
}

fn show(m: &BTreeMap<String, (u64, u64)>) -> String {
    m.iter()
        .filter(|(_, c)| c.0 > 0)
        .map(|(f, (p, b))| format!("    n_packets={p}, n_bytes={b}, {f}\n"))
        .collect()
}

#[test]
fn every_flows_counters_match_ovs_after_each_scenario() {
    if skip_without_ovs("every_flows_counters_match_ovs_after_each_scenario") {
        return;
    }
    let scenarios = scenario::load_all().expect("scenarios load");
    assert!(scenarios.len() >= 6, "{} scenarios", scenarios.len());
    let mut packets_seen = 0;
    for sc in &scenarios {
        let mut sw = OvsSwitch::start(&sc.ports).expect("ovs starts");
        sw.replay(&sc.flows, sc.groups.as_deref(), &sc.steps_text)
            .unwrap_or_else(|e| panic!("{}: OVS replay: {e}", sc.name));
        let ovs = sw.flow_stats().expect("OVS flow stats");
        assert!(
            ovs.values().any(|c| c.0 > 0),
            "{}: OVS counted nothing: {ovs:?}",
            sc.name
        );
        for cached in [true, false] {
            let fp = flowpath_counts(sc, cached);
            assert_eq!(
                ovs.keys().collect::<Vec<_>>(),
                fp.keys().collect::<Vec<_>>(),
                "{}: the same flows",
                sc.name
            );
            assert!(
                ovs == fp,
                "{} ({}): per-flow counters differ\n  OVS:\n{}  flowpath:\n{}",
                sc.name,
                if cached { "cached" } else { "uncached" },
                show(&ovs),
                show(&fp)
            );
        }
        packets_seen += ovs.values().map(|c| c.0).sum::<u64>();
        eprintln!(
            "{}: {} flows, {} with packets, {} flow hits: equal",
            sc.name,
            ovs.len(),
            ovs.values().filter(|c| c.0 > 0).count(),
            ovs.values().map(|c| c.0).sum::<u64>()
        );
    }
    assert!(packets_seen > 100, "{packets_seen} flow hits in all");
}
