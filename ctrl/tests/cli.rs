//! The `flowpath` command as users (and other checks) run it: the `replay`
//! JSON contract, `check` errors, `dump-flows`, `trace`.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowpath"))
}

fn scenario(f: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/scenarios/nodeport_etp_cluster")
        .join(f)
        .display()
        .to_string()
}

fn tmp(name: &str, text: &str) -> String {
    let d = std::env::temp_dir().join(format!("flowpath-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// `flowpath CMD` with the NodePort scenario's flows, groups and ports.
fn on_scenario(cmd: &str) -> Command {
    let ports = std::fs::read_to_string(scenario("ports.txt")).unwrap();
    let mut c = bin();
    c.args([
        cmd,
        "--flows",
        &scenario("flows.txt"),
        "--groups",
        &scenario("groups.txt"),
    ])
    .args(["--ports", ports.trim()]);
    c
}

#[test]
fn replay_json_contract() {
    let out = on_scenario("replay")
        .args(["--packets", &scenario("steps.txt")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ports"]["uplink"], 3);
    assert_eq!(v["ports"]["pod1"], 4);
    let results = v["results"].as_array().unwrap();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i, "results are one per step, in order");
    }
    // The client's SYN reaches pod1, SNATed to the gateway IP and DNATed
    // to the endpoint.
    let first = &results[0];
    assert_eq!(first["in_port"], "uplink");
    let outs = first["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0]["port"], "pod1");
    let hex = outs[0]["hex"].as_str().unwrap();
    assert!(
        hex.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    // IPv4 src 172.16.2.1 (ac100201), dst 172.16.2.10 (ac10020a).
    assert_eq!(&hex[52..68], "ac100201ac10020a");
    let ct: Vec<&serde_json::Value> = results.iter().filter(|r| r["cmd"] == "ct").collect();
    assert!(!ct.is_empty());
    assert_eq!(ct[0]["args"][0], "52100");
    assert!(ct[0]["entries"][0].as_str().unwrap().contains("zone=52100"));
}

#[test]
fn replay_text_and_pcaps() {
    let dir = std::env::temp_dir().join(format!("flowpath-cli-pcap-{}", std::process::id()));
    let out = on_scenario("replay")
        .args([
            "--packets",
            &scenario("steps.txt"),
            "--format",
            "text",
            "--cache",
        ])
        .args(["--pcap-dir", &dir.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("#0 in_port=uplink: 1 output(s)"), "{text}");
    assert!(text.contains("-> gw0: tcp,"), "{text}");
    let pod1 = std::fs::read(dir.join("pod1.pcap")).unwrap();
    let pkts = datapath::io::pcap::read_all(&pod1[..]).unwrap();
    assert!(
        pkts.len() >= 5,
        "pod1 received the whole client side of the exchange"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_reports_file_line_column() {
    let f = tmp(
        "bad.flows",
        "table=0,priority=1,actions=drop\n\ntable=0,ip,nw_dstt=1.2.3.4,actions=drop\n",
    );
    let out = bin().args(["check", &f]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.flows:3:"), "{err}");
    assert!(err.contains("nw_dstt"), "{err}");
    let good = tmp("good.flows", "table=0,priority=1,ip,actions=output:2\n");
    let out = bin().args(["check", &good]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("1 flows"));
}

#[test]
fn dump_flows_prints_ovs_form() {
    let f = tmp(
        "dump.flows",
        "table=5, cookie=0x520,priority=210,reg0=0x4/0xffff,ip,nw_dst=10.176.25.244,tcp,tp_dst=31736 actions=resubmit(,6)\n",
    );
    let out = bin().args(["dump-flows", "--flows", &f]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        " cookie=0x520, table=5, priority=210,tcp,reg0=0x4/0xffff,nw_dst=10.176.25.244,tp_dst=31736 actions=resubmit(,6)\n"
    );
}

#[test]
fn trace_shows_tables_recirculations_and_outputs() {
    let out = on_scenario("trace")
        .args(["--in-port", "uplink"])
        .args([
            "--flow",
            "tcp,nw_src=10.176.26.36,nw_dst=10.176.25.244,tp_src=40001,tp_dst=30232,tcp_flags=+syn",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap();
    assert!(t.contains("ct(table=8,zone=52100,nat)"), "{t}");
    assert!(
        t.contains("recirc(0x9) - resume conntrack with ct_state=new|trk"),
        "{t}"
    );
    assert!(t.contains("nat(dst=169.254.169.110)"), "{t}");
    assert!(t.contains("Outputs:\n    pod1: tcp,"), "{t}");
}

#[test]
fn port_names_in_flows_resolve_from_ports() {
    let f = tmp("named.flows", "table=0,in_port=uplink,actions=output:gw0\n");
    let pkt =
        datapath::wire::build::PacketBuilder::udp(1u64, 2u64, 0x0a00_0001u32, 0x0a00_0002u32, 1, 2)
            .build();
    let hex: String = pkt.iter().map(|b| format!("{b:02x}")).collect();
    let steps = tmp("named.steps", &format!("uplink {hex}\n"));
    let out = bin()
        .args([
            "replay",
            "--flows",
            &f,
            "--ports",
            "uplink=3,gw0=2",
            "--packets",
            &steps,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["outputs"][0]["port"], "gw0");
    // Without a port table the name is an error naming the line.
    let out = bin().args(["check", &f]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("named.flows:1:"));
}
