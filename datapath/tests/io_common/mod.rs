//! Shared by the I/O integration tests: network namespaces and veth pairs
//! with names unique to this process, removed by a guard's `Drop` even when
//! the test fails.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Run `ip` with `args`; panic with its stderr if it fails.
pub fn ip(args: &[&str]) -> String {
    run("ip", args)
}

/// Run a command; panic with its stderr if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Skip (return true, printing why) unless AF_XDP really is unavailable
/// here; the probe decides, not a guess.
pub fn skip_without_afxdp() -> bool {
    if let Err(why) = datapath::io::afxdp::probe() {
        eprintln!("SKIP: AF_XDP unavailable on this kernel/with these privileges: {why}");
        return true;
    }
    false
}

/// Skip unless we may create network namespaces (root with iproute2).
pub fn skip_without_netns() -> bool {
    let ok = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
        && std::fs::metadata("/dev/net/tun").is_ok();
    if !ok {
        eprintln!("SKIP: needs root, iproute2 and /dev/net/tun");
    }
    !ok
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short tag: pid plus a per-process counter (fits in interface
/// names, which are at most 15 bytes).
pub fn tag() -> String {
    // Relaxed: only uniqueness matters.
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{}x{n}", std::process::id())
}

/// Network namespaces deleted on drop (which also deletes the veths in
/// them).
pub struct Netns {
    pub names: Vec<String>,
}

impl Netns {
    pub fn new(names: &[String]) -> Netns {
        let mut ns = Netns { names: Vec::new() };
        for n in names {
            ip(&["netns", "add", n]);
            ns.names.push(n.clone());
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// gen --(g|a)-- dut --(b|s)-- sink, each pair a veth with `queues`
/// queues; gen is 10.77.0.1/24 on g, sink 10.77.0.2/24 on s, with static
/// neighbours, tx checksum offload off (frames crossing AF_XDP must carry
/// full checksums).
pub struct Topo {
    pub gen_ns: String,
    pub dut_ns: String,
    pub sink_ns: String,
    pub g: String,
    pub a: String,
    pub b: String,
    pub s: String,
    _ns: Netns,
}

pub const GEN_IP: &str = "10.77.0.1";
pub const SINK_IP: &str = "10.77.0.2";

fn mac_of(ns: &str, dev: &str) -> String {
    let out = ip(&["-n", ns, "-br", "link", "show", dev]);
    out.split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

impl Topo {
    pub fn new(queues: u32) -> Topo {
        let t = tag();
        let names = [
            format!("fp-{t}-gen"),
            format!("fp-{t}-dut"),
            format!("fp-{t}-sink"),
        ];
        let ns = Netns::new(&names);
        let [gen_ns, dut_ns, sink_ns] = names;
        let (g, a, b, s) = (
            format!("g{t}"),
            format!("a{t}"),
            format!("b{t}"),
            format!("s{t}"),
        );
        let q = queues.to_string();
        for (x, xns, y, yns) in [(&g, &gen_ns, &a, &dut_ns), (&b, &dut_ns, &s, &sink_ns)] {
            ip(&[
                "link",
                "add",
                x,
                "netns",
                xns,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                y,
                "netns",
                yns,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
            ]);
        }
        ip(&[
            "-n",
            &gen_ns,
            "addr",
            "add",
            &format!("{GEN_IP}/24"),
            "dev",
            &g,
        ]);
        ip(&[
            "-n",
            &sink_ns,
            "addr",
            "add",
            &format!("{SINK_IP}/24"),
            "dev",
            &s,
        ]);
        for (n, d) in [(&gen_ns, &g), (&dut_ns, &a), (&dut_ns, &b), (&sink_ns, &s)] {
            ip(&["-n", n, "link", "set", d, "up"]);
        }
        for (n, d) in [(&gen_ns, &g), (&sink_ns, &s)] {
            run("ip", &["netns", "exec", n, "ethtool", "-K", d, "tx", "off"]);
        }
        let (gm, sm) = (mac_of(&gen_ns, &g), mac_of(&sink_ns, &s));
        ip(&[
            "-n", &gen_ns, "neigh", "replace", SINK_IP, "lladdr", &sm, "dev", &g,
        ]);
        ip(&[
            "-n", &sink_ns, "neigh", "replace", GEN_IP, "lladdr", &gm, "dev", &s,
        ]);
        Topo {
            gen_ns,
            dut_ns,
            sink_ns,
            g,
            a,
            b,
            s,
            _ns: ns,
        }
    }
}

/// Whether `ip link show` reports an XDP program on `dev` in `ns`.
pub fn has_xdp(ns: &str, dev: &str) -> bool {
    let out = ip(&["-n", ns, "link", "show", "dev", dev]);
    out.contains("prog/xdp") || out.split_whitespace().any(|w| w.starts_with("xdp"))
}
