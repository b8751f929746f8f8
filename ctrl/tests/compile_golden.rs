//! Golden tests for the Service compiler: `tests/compile/node.toml` and the
//! manifests in `tests/compile/services/` in, the flows and groups in
//! `tests/compile/golden/` out. The snapshots are reviewed like code; after
//! an intended change regenerate them with
//! `FLOWPATH_BLESS=1 cargo test -p ctrl --test compile_golden` and read the
//! diff.
//!
//! Also: every bad manifest in `tests/compile/errors/` fails with the error
//! its first line (`# expect: ...`) names, and the compiled text parses back
//! into the same flows (what `flowpath compile` prints is what loads).

use std::path::{Path, PathBuf};

use ctrl::compile::{self, stale_udp_flushes};
use ctrl::config::{Manifests, NodeConfig};
use datapath::pipeline::{format, parse};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compile")
}

fn fixture() -> (NodeConfig, Manifests) {
    let node = NodeConfig::load(&dir().join("node.toml")).expect("node.toml");
    let m = Manifests::load(&[dir().join("services")]).expect("manifests");
    (node, m)
}

fn check_golden(name: &str, got: &str) {
    let path = dir().join("golden").join(name);
    if std::env::var_os("FLOWPATH_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (FLOWPATH_BLESS=1 creates it)", path.display()));
    if want != got {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}:\n  want {a}\n  got  {b}", i + 1))
            .collect();
        panic!(
            "{} differs from the compiler's output ({} vs {} lines); first differences:\n{}\n\
             (FLOWPATH_BLESS=1 regenerates it; review the diff)",
            path.display(),
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn golden_flows_and_groups() {
    let (node, m) = fixture();
    let c = compile::compile(&node, &m).expect("compile");
    check_golden("flows.txt", &c.flows_text());
    check_golden("groups.txt", &c.groups_text());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn printed_text_parses_back_to_the_same_flows() {
    let (node, m) = fixture();
    let c = compile::compile(&node, &m).unwrap();
    let parsed = parse::parse_flows("compiled", &c.flows_text()).expect("reparse flows");
    let mut want: Vec<_> = c.flows.iter().map(format::normalize).collect();
    let mut got = parsed;
    format::sort_for_dump(&mut want);
    format::sort_for_dump(&mut got);
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w, g, "{}", format::format_flow(w, Default::default()));
    }
    let groups = parse::parse_groups("compiled", &c.groups_text()).expect("reparse groups");
    assert_eq!(groups.len(), c.groups.len());
    for (w, g) in c.groups.iter().zip(&groups) {
        assert_eq!(format::normalize_group(w), format::normalize_group(g));
    }
}

#[test]
fn every_group_is_used_and_every_used_group_exists() {
    use datapath::pipeline::ir::Action;
    let (node, m) = fixture();
    let c = compile::compile(&node, &m).unwrap();
    let used: std::collections::BTreeSet<u32> = c
        .flows
        .iter()
        .flat_map(|f| &f.actions)
        .filter_map(|a| match a {
            Action::Group(g) => Some(*g),
            _ => None,
        })
        .collect();
    let defined: std::collections::BTreeSet<u32> = c.groups.iter().map(|g| g.id).collect();
    assert_eq!(used, defined);
}

#[test]
fn errors_name_file_document_field_and_value() {
    let node = NodeConfig::load(&dir().join("node.toml")).unwrap();
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir().join("errors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: ...`", path.display()));
        let err = Manifests::load(std::slice::from_ref(&path))
            .and_then(|m| compile::compile(&node, &m).map(|_| ()))
            .expect_err(&format!("{} must fail", path.display()));
        let msg = err.to_string();
        let file = path.display().to_string();
        assert!(
            msg.starts_with(&file) && msg.contains(expect),
            "{}: error {msg:?} must start with the file and contain {expect:?}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 5, "only {n} error cases");
}

#[test]
fn removing_a_udp_endpoint_asks_for_a_conntrack_flush() {
    let (node, m) = fixture();
    let before = compile::compile(&node, &m).unwrap();
    let mut m2 = m.clone();
    for s in &mut m2.slices {
        if s.service == "np-etp-local" {
            s.endpoints
                .retain(|e| e.addresses[0].to_string() != "172.16.2.11");
        }
    }
    let after = compile::compile(&node, &m2).unwrap();
    let flushes: Vec<String> = stale_udp_flushes(&before, &after)
        .iter()
        .map(|f| f.to_string())
        .collect();
    assert_eq!(
        flushes,
        [
            // ClusterIP 10.96.1.5:53 and the NodePort's VIP:30053 lost 172.16.2.11
            "zone=65500 ct_nw_proto=17 orig_dst=10.96.1.5:53 reply_src=172.16.2.11:5353",
            "zone=65500 ct_nw_proto=17 orig_dst=169.254.169.110:30053 reply_src=172.16.2.11:5353",
        ]
    );
    // Nothing to flush when nothing changes, and TCP never asks.
    assert!(stale_udp_flushes(&before, &before).is_empty());
}
