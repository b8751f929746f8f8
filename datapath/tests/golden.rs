//! flowpath prints flows and groups exactly as a real OVS 3.1 switch dumps
//! them (`tests/data/*_golden.txt`, captured by
//! `tests/data/capture_ovs_dump.sh`), and what it prints parses back to the
//! normalised flow.

use std::path::PathBuf;

use datapath::pipeline::format::{
    FormatOptions, format_flow, format_group, normalize, normalize_group,
};
use datapath::pipeline::parse::{parse_flow, parse_group};

fn cases(name: &str) -> Vec<(String, String)> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let text = std::fs::read_to_string(p).unwrap();
    let mut out = Vec::new();
    let mut input = None;
    for line in text.lines() {
        if let Some(i) = line.strip_prefix("in: ") {
            input = Some(i.to_string());
        } else if let Some(o) = line.strip_prefix("out:") {
            out.push((input.take().expect("out: without in:"), o.to_string()));
        }
    }
    assert!(!out.is_empty());
    out
}

#[test]
fn flows_print_like_ovs_dump_flows() {
    let mut bad = Vec::new();
    for (input, want) in cases("dump_golden.txt") {
        let f = parse_flow(&input).unwrap_or_else(|e| panic!("{input}\n{e}"));
        let got = format_flow(&f, FormatOptions::default());
        if got != want {
            bad.push(format!("in:   {input}\nwant: {want}\ngot:  {got}"));
        }
        let back = parse_flow(got.trim()).unwrap_or_else(|e| panic!("{got}\n{e}"));
        assert_eq!(back, normalize(&f), "{input}");
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n\n")
    );
}

#[test]
fn groups_print_like_ovs_dump_groups() {
    let mut bad = Vec::new();
    for (input, want) in cases("group_golden.txt") {
        let g = parse_group(&input).unwrap_or_else(|e| panic!("{input}\n{e}"));
        let got = format!(" {}", format_group(&g));
        if got != want {
            bad.push(format!("in:   {input}\nwant: {want}\ngot:  {got}"));
        }
        let back = parse_group(got.trim()).unwrap_or_else(|e| panic!("{got}\n{e}"));
        assert_eq!(normalize_group(&back), normalize_group(&g), "{input}");
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n\n")
    );
}
