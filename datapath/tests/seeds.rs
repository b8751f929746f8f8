//! Every `ovs-ofctl add-flow` line of the design notes (`shared/seeds`)
//! parses, prints, and parses back to the same flow.
//!
//! The notes are PowerShell: `$Name="value"` assignments set the variables
//! their flow lines use. Each line is substituted with the latest assignment
//! before it in the same file, falling back to the first assignment in any
//! file (file 000 uses 001's tables), and to the values a gateway had when
//! the notes were written (`$GwIP`). The substituted lines are checked in as
//! `tests/data/seed_flows.txt`; when `../shared/seeds` exists the test also
//! checks that the checked-in list is still what the notes say
//! (`FLOWPATH_BLESS=1` rewrites it; `FLOWPATH_SEEDS_DIR` points elsewhere).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use datapath::pipeline::format::{FormatOptions, format_flow, normalize};
use datapath::pipeline::parse::{parse_flow, parse_flows};

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Values the notes read from the machine (`Get-NetIPAddress`...).
const MACHINE: &[(&str, &str)] = &[("GwIP", "172.16.2.1"), ("GwMac", "0a:58:ac:10:02:01")];

fn assignments(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        let Some(rest) = t.strip_prefix('$') else {
            continue;
        };
        let Some((name, val)) = rest.split_once('=') else {
            continue;
        };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let val = val.split(" #").next().unwrap().trim();
        if val.starts_with('(') {
            continue; // computed from the machine, see MACHINE
        }
        out.push((n, name.to_string(), val.trim_matches('"').to_string()));
    }
    out
}

fn substitute(line: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..end];
        let v = vars
            .get(name)
            .unwrap_or_else(|| panic!("no value for ${name} in {line}"));
        out.push_str(v);
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn extract(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let texts: Vec<String> = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let mut global: HashMap<String, String> = MACHINE
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for t in &texts {
        for (_, k, v) in assignments(t) {
            global.entry(k).or_insert(v);
        }
    }
    let mut out = Vec::new();
    for t in &texts {
        let assigns = assignments(t);
        for (n, line) in t.lines().enumerate() {
            let Some(rest) = line.trim().strip_prefix("ovs-ofctl add-flow br-int \"") else {
                continue;
            };
            let Some(spec) = rest.strip_suffix('"') else {
                continue;
            };
            let mut vars = global.clone();
            for (an, k, v) in &assigns {
                if *an < n {
                    vars.insert(k.clone(), v.clone());
                }
            }
            out.push(substitute(spec, &vars));
        }
    }
    out
}

fn checked_in() -> Vec<String> {
    let text = std::fs::read_to_string(manifest().join("tests/data/seed_flows.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn checked_in_seed_list_matches_the_notes() {
    let dir = std::env::var_os("FLOWPATH_SEEDS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest().join("../../shared/seeds"));
    if !dir.is_dir() {
        eprintln!(
            "{} not present; using the checked-in list only",
            dir.display()
        );
        return;
    }
    let lines = extract(&dir);
    if std::env::var_os("FLOWPATH_BLESS").is_some() {
        let mut s = String::from(
            "# ovs-ofctl add-flow lines of shared/seeds/*.txt with $Variables substituted.\n# Regenerate: FLOWPATH_BLESS=1 cargo test -p datapath --test seeds\n",
        );
        for l in &lines {
            s.push_str(l);
            s.push('\n');
        }
        std::fs::write(manifest().join("tests/data/seed_flows.txt"), s).unwrap();
    }
    assert!(lines.len() >= 60, "only {} flow lines found", lines.len());
    assert_eq!(
        lines,
        checked_in(),
        "seed notes changed: rerun with FLOWPATH_BLESS=1"
    );
}

#[test]
fn every_seed_flow_parses_and_round_trips() {
    let lines = checked_in();
    assert!(lines.len() >= 60);
    for l in &lines {
        let f = parse_flow(l).unwrap_or_else(|e| panic!("{l}\n{e}"));
        let printed = format_flow(&f, FormatOptions::default());
        let back = parse_flow(printed.trim()).unwrap_or_else(|e| panic!("{printed}\n{e}"));
        assert_eq!(back, normalize(&f), "{l}\n{printed}");
        assert_eq!(format_flow(&back, FormatOptions::default()), printed);
    }
    // And as one add-flows file.
    let file = lines.join("\n");
    assert_eq!(parse_flows("seeds", &file).unwrap().len(), lines.len());
}

#[test]
fn seed_samples_print_like_ovs() {
    let f = parse_flow("table=5, cookie=0x520,priority=210,reg0=0x4/0xffff,ip,nw_dst=10.176.25.244,tcp,tp_dst=31736 actions=resubmit(,6)").unwrap();
    assert_eq!(
        format_flow(&f, FormatOptions::default()),
        " cookie=0x520, table=5, priority=210,tcp,reg0=0x4/0xffff,nw_dst=10.176.25.244,tp_dst=31736 actions=resubmit(,6)"
    );
}
