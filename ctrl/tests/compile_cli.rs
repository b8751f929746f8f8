//! `flowpath compile` as users run it: flows on stdout in the golden form,
//! groups after them or in `--groups-out`, manifests from node.toml's
//! `services` when `--services` is absent, and a located error with exit
//! status 1 for a bad manifest.

use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compile")
}

fn flowpath(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flowpath"))
        .args(args)
        .output()
        .expect("run flowpath")
}

#[test]
fn compile_prints_the_golden_flows_and_groups() {
    let node = dir().join("node.toml");
    let gout = std::env::temp_dir().join(format!("flowpath-groups-{}.txt", std::process::id()));
    let o = flowpath(&[
        "compile",
        "--node",
        node.to_str().unwrap(),
        "--groups-out",
        gout.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let golden = |f: &str| std::fs::read_to_string(dir().join("golden").join(f)).unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), golden("flows.txt"));
    assert_eq!(
        std::fs::read_to_string(&gout).unwrap(),
        golden("groups.txt")
    );
    let _ = std::fs::remove_file(&gout);

    // Without --groups-out the groups follow the flows; explicit --services
    // gives the same result as node.toml's `services`.
    let services = dir().join("services");
    let o = flowpath(&[
        "compile",
        "--node",
        node.to_str().unwrap(),
        "--services",
        services.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        golden("flows.txt") + &golden("groups.txt")
    );
}

#[test]
fn compile_reports_a_bad_manifest_and_fails() {
    let node = dir().join("node.toml");
    let bad = dir().join("errors/bad_protocol.yaml");
    let o = flowpath(&[
        "compile",
        "--node",
        node.to_str().unwrap(),
        "--services",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty(), "nothing is printed for a bad input");
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("bad_protocol.yaml: document 1: items[0].spec.ports[0].protocol")
            && err.contains("\"SCTP\""),
        "{err}"
    );
}
