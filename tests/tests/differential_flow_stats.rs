//! Per-flow statistics against real OVS: every scenario in
//! `tests/scenarios/` is replayed on OVS 3.1 and through flowpath (with the
//! flow cache — chains, megaflows — and without), and afterwards every
//! flow's `n_packets` and `n_bytes` must be what `ovs-ofctl dump-flows`
//! shows (after `revalidator/purge` pushed the datapath's counts).
//!
//! The scenarios cover recirculations through three conntrack zones, NAT,
//! select groups, resubmit chains (a flow hit by several passes of one
//! packet counts each pass, as in OVS), explicit drops and table misses.
//!
//! Flows with `idle_timeout`/`hard_timeout` expire as in OVS (lockstep with
//! OVS's stopped clock: `time/warp`, then two revalidator rounds so OVS has
//! pushed its stats and run `rule_expire`).

use std::collections::BTreeMap;

use datapath::pipeline::format::{self, FormatOptions};
use datapath::pipeline::{Pipeline, parse};
use datapath::replay::{PortMap, Replayer, parse_steps};
use tests::lab::Both;
use tests::ovs::{OvsSwitch, skip_without_ovs};
use tests::pkt::{self, ip, mac};
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
    r.current()
        .indexed_flows()
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

#[test]
fn idle_and_hard_timeouts_expire_flows_as_in_ovs() {
    if skip_without_ovs("idle_and_hard_timeouts_expire_flows_as_in_ovs") {
        return;
    }
    let ports: Vec<(String, u32)> = (1..=3).map(|i| (format!("p{i}"), i)).collect();
    let mut sw = Both::start(&ports).expect("start OVS");
    sw.replace_flows(
        "table=0,priority=10,idle_timeout=2,udp,in_port=p1,actions=output:p2\n\
         table=0,priority=5,hard_timeout=8,in_port=p1,actions=output:p3\n\
         table=0,priority=0,actions=drop\n",
    )
    .expect("flows");
    let frame = pkt::udp(
        mac("02:00:00:00:00:0a"),
        mac("02:00:00:00:00:0b"),
        (ip("10.0.0.1"), 1000),
        (ip("10.0.0.2"), 2000),
        b"timeouts",
    );
    // Advance both clocks; let OVS's revalidators push their stats and
    // its ofproto run its expiry (they follow a completed dump).
    let tick = |sw: &mut Both, ms: u64| {
        sw.warp(ms).expect("warp");
        for _ in 0..2 {
            sw.ovs
                .appctl(&["revalidator/wait"])
                .expect("revalidator/wait");
        }
    };
    let send = |sw: &mut Both| -> Vec<String> {
        sw.inject("p1", &frame).expect("inject");
        sw.take_outputs()
            .expect("outputs")
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    };
    // t=0: the idle flow forwards (and is used).
    assert_eq!(send(&mut sw), ["p2"]);
    // t=1.5, t=3.0: used every 1.5 s, it stays.
    tick(&mut sw, 1500);
    assert_eq!(send(&mut sw), ["p2"]);
    tick(&mut sw, 1500);
    assert_eq!(send(&mut sw), ["p2"]);
    assert_eq!(sw.dump_flows(None).expect("dump").len(), 3);
    // t=5.1: idle 2.1 s > 2 s: gone; the hard_timeout flow (8 s) takes
    // over.
    tick(&mut sw, 2100);
    let flows = sw.dump_flows(None).expect("dump");
    assert_eq!(flows.len(), 2, "{flows:?}");
    assert!(
        !flows.iter().any(|f| f.contains("idle_timeout")),
        "{flows:?}"
    );
    assert_eq!(send(&mut sw), ["p3"]);
    // t=8.1: the hard timeout passed although the flow was just used.
    tick(&mut sw, 3000);
    let flows = sw.dump_flows(None).expect("dump");
    assert_eq!(flows, ["priority=0 actions=drop"]);
    assert!(send(&mut sw).is_empty(), "dropped");
}
