//! `flowpath run` from Service manifests (`services = "DIR"` in node.toml),
//! with memory ports (no privileges needed): the running rules are the
//! compiler's, `flowpath reload` (and the watcher, and SIGHUP) recompiles
//! a changed directory and publishes it, and a bad manifest is refused with its file, document and
//! field while the running rules stay.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn bin() -> PathBuf {
    let st = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "ctrl", "--bin", "flowpath"])
        .current_dir(repo())
        .status()
        .expect("cargo build");
    assert!(st.success());
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .find(|p| p.join("debug").join("flowpath").exists())
        .map(|p| p.join("debug").join("flowpath"))
        .expect("flowpath binary next to the test binary")
}

struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(bin: &Path, sock: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin)
        .args(args)
        .arg("--socket")
        .arg(sock)
        .output()
        .expect("run flowpath");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// Flows the running node has.
fn running(bin: &Path, sock: &Path) -> usize {
    let (ok, out) = cli(bin, sock, &["dump-flows", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    v.as_array().expect("array").len()
}

/// Flows `flowpath compile` prints for the node.
fn compiled(bin: &Path, node: &Path, dir: &Path) -> usize {
    let out = Command::new(bin)
        .args(["compile", "--node"])
        .arg(node)
        .arg("--groups-out")
        .arg(dir.join("groups.out"))
        .output()
        .expect("flowpath compile");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn run_compiles_manifests_and_reloads_them() {
    let bin = bin();
    let dir = std::env::temp_dir().join(format!("fpcm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("services")).unwrap();
    let fixtures = repo().join("tests/compile");
    for f in ["clusterip.yaml", "nodeport.yaml"] {
        std::fs::copy(
            fixtures.join("services").join(f),
            dir.join("services").join(f),
        )
        .unwrap();
    }
    let sock = dir.join("ctl.sock");
    let mut node = std::fs::read_to_string(fixtures.join("node.toml")).unwrap();
    // Run keys first (top level), then the compiler's tables.
    node = format!(
        "control_socket = \"ctl.sock\"\nidle_sleep_us = 200\n{node}\n{}",
        [("gw0", 2), ("uplink", 3), ("pod1", 4), ("pod2", 5)]
            .iter()
            .map(|(n, p)| format!("[[ports]]\nname = \"{n}\"\nofport = {p}\ntype = \"memory\"\n"))
            .collect::<String>()
    );
    let node_path = dir.join("node.toml");
    std::fs::write(&node_path, node).unwrap();

    let mut child = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&node_path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start flowpath run");
    let out = child.stdout.take().unwrap();
    let run = Run(child);
    let mut lines = BufReader::new(out).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(ready.contains("ready"), "{ready}");

    // The running rules are the compiler's.
    let all = compiled(&bin, &node_path, &dir);
    assert!(all > 50);
    assert_eq!(running(&bin, &sock), all);
    let (ok, g) = cli(&bin, &sock, &["dump-groups"]);
    assert!(ok && g.starts_with("group_id="), "{g}");

    // One manifest gone: reload publishes the smaller pipeline.
    std::fs::remove_file(dir.join("services/nodeport.yaml")).unwrap();
    let fewer = compiled(&bin, &node_path, &dir);
    assert!(fewer < all);
    let (ok, r) = cli(&bin, &sock, &["reload"]);
    assert!(ok && r.contains("reloaded: generation"), "{r}");
    assert_eq!(running(&bin, &sock), fewer);

    // A bad manifest: refused with file, document and field; rules stay.
    std::fs::copy(
        fixtures.join("errors/bad_port.yaml"),
        dir.join("services/bad_port.yaml"),
    )
    .unwrap();
    let (ok, r) = cli(&bin, &sock, &["reload"]);
    assert!(!ok, "{r}");
    assert!(
        r.contains("bad_port.yaml: document 0: spec.ports[0].nodePort") && r.contains("70000"),
        "{r}"
    );
    assert_eq!(running(&bin, &sock), fewer);

    // Fixed: SIGHUP takes the directory back.
    std::fs::remove_file(dir.join("services/bad_port.yaml")).unwrap();
    std::fs::copy(
        fixtures.join("services/nodeport.yaml"),
        dir.join("services/nodeport.yaml"),
    )
    .unwrap();
    // The watcher picks the change up by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while running(&bin, &sock) != all && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(running(&bin, &sock), all, "watcher did not reload");
    let st = Command::new("kill")
        .args(["-HUP", &run.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let reloaded = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("flowpath run: reloaded"))
        .unwrap_or_default();
    assert!(reloaded.contains("generation"), "{reloaded}");
    assert_eq!(running(&bin, &sock), all);
    std::thread::sleep(Duration::from_millis(10));
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);
}
