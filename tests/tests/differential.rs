//! Differential test: every scenario in `tests/scenarios/` through real OVS
//! and through flowpath's `replay` (plain interpreter and flow cache), every
//! packet step compared per port (order within a port matters, order across
//! ports does not), every `@ct` dump compared line for line. Mismatches are
//! printed decoded, side by side.

use ctrl::replay::{ReplayOptions, replay_json};
use tests::compare::{Stats, compare};
use tests::ovs::{OvsSwitch, skip_without_ovs};
use tests::scenario;

#[test]
fn differential_scenarios() {
    if skip_without_ovs("differential_scenarios") {
        return;
    }
    let scenarios = scenario::load_all().expect("load scenarios");
    assert!(!scenarios.is_empty());
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    let t = std::time::Instant::now();
    for sc in &scenarios {
        let mut sw = OvsSwitch::start(&sc.ports).expect("start OVS");
        let ovs = sw
            .replay(&sc.flows, sc.groups.as_deref(), &sc.steps_text)
            .unwrap_or_else(|e| panic!("{}: OVS side failed: {e}", sc.name));
        let log = sw.new_log_problems().unwrap();
        assert!(log.is_empty(), "{}: ovs-vswitchd log: {log:#?}", sc.name);
        for cache in [false, true] {
            let label = format!("{} (cache={cache})", sc.name);
            let opts = ReplayOptions { cache };
            match replay_json(
                &sc.flows,
                sc.groups.as_deref(),
                &sc.ports,
                &sc.steps_text,
                &opts,
            ) {
                Ok(fp) => match compare(&label, &sc.steps, &ovs, &fp) {
                    Ok(s) => stats += s,
                    Err(e) => failures.push(e),
                },
                Err(e) => failures.push(format!("{label}: flowpath replay failed: {e:#}")),
            }
        }
    }
    println!(
        "differential: {} scenarios x 2 modes, {} packets ({} outputs) and {} ct dumps compared in {:?}",
        scenarios.len(),
        stats.packets,
        stats.outputs,
        stats.ct_dumps,
        t.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} mismatching scenario runs:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
