//! `flowpath run` as users call it, without ports: `--check` accepts the
//! shipped example and reports a bad node.toml by file, line, column and
//! field with exit status 1 (the forwarding itself is covered by the
//! end-to-end tests in `tests/tests/e2e_*.rs`).

use std::path::Path;
use std::process::Command;

fn flowpath(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowpath"))
        .args(args)
        .output()
        .expect("run flowpath");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_example() {
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/node.toml");
    let (code, out, err) = flowpath(&["run", "--check", "--config", ex.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ok: 4 port(s) (4 AF_XDP socket(s)), 2 worker(s)"),
        "{out}"
    );
}

#[test]
fn bad_config_names_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("fp-run-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("flows.txt"), "table=0,actions=drop\n").unwrap();
    let cases = [
        (
            "flows = \"flows.txt\"\n[[ports]]\nname = \"up\"\nofport = 3\ntype = \"afxdp\"\ninterface = \"eth0\"\nmode = \"turbo\"\n",
            ":7:8: ports[0].mode: xdp mode \"turbo\"",
        ),
        (
            "flows = \"flows.txt\"\n[[ports]]\nname = \"gw\"\nofport = 2\ntype = \"tap\"\nmac = \"0a:58\"\n",
            ":6:7: ports[0].mac:",
        ),
        ("flows = \"nope.txt\"\n", ":1:9: flows: no such file"),
        (
            "flows = \"flows.txt\"\nworkerz = 2\n",
            ":2:1: workerz: unknown field `workerz`",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = dir.join(format!("node{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let (code, _, err) = flowpath(&["run", "--check", "--config", p.to_str().unwrap()]);
        assert_eq!(code, 1, "case {i}: {err}");
        assert!(
            err.contains(&format!("{}{want}", p.display())),
            "case {i}: want {want:?} in {err:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
