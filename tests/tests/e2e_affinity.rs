//! End to end: `sessionAffinity: ClientIP` with `timeoutSeconds` enforced
//! through OVS-style `learn` flows, in the namespace cluster, node1 running
//! `flowpath run` from manifests (one Service, 10.96.0.77:80 -> pod1 and
//! pod2 :8080, timeoutSeconds 1, AF_XDP with two queues and two workers, so
//! connections of one client land on both workers).
//!
//! - 20 connections in a row from the node (client 172.16.2.1, a new source
//!   port each) all reach one endpoint; the learned flow is in `dump-flows`
//!   (table 40, idle_timeout=1) over the control socket;
//! - after a second without new connections the learned flow is gone, and
//!   the next connection chooses afresh: over rounds separated by the
//!   timeout both endpoints answer (the group hashes the source port too; a
//!   round picks either endpoint with probability 1/2, 12 rounds all on one
//!   side has probability 2^-11);
//! - a Service without affinity to the same endpoints spreads 20 connections
//!   over both (all on one: 2^-19).

mod e2e_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e_common::*;

const MANIFESTS: &str = r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: sticky, namespace: default}
  spec:
    type: ClusterIP
    clusterIP: 10.96.0.77
    ports:
    - {name: http, port: 80, protocol: TCP, targetPort: 8080}
    sessionAffinity: ClientIP
    sessionAffinityConfig: {clientIP: {timeoutSeconds: 1}}
- apiVersion: v1
  kind: Service
  metadata: {name: spread, namespace: default}
  spec:
    type: ClusterIP
    clusterIP: 10.96.0.78
    ports:
    - {name: http, port: 80, protocol: TCP, targetPort: 8080}
    sessionAffinity: None
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: sticky-1
    namespace: default
    labels: {kubernetes.io/service-name: sticky}
  addressType: IPv4
  endpoints:
  - addresses: [172.16.2.10]
    nodeName: node1
  - addresses: [172.16.2.11]
    nodeName: node1
  ports:
  - {name: http, port: 8080, protocol: TCP}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: spread-1
    namespace: default
    labels: {kubernetes.io/service-name: spread}
  addressType: IPv4
  endpoints:
  - addresses: [172.16.2.10]
    nodeName: node1
  - addresses: [172.16.2.11]
    nodeName: node1
  ports:
  - {name: http, port: 8080, protocol: TCP}
"#;

/// `flowpath dump-flows TABLE --socket S`.
fn dump(sock: &Path, table: &str) -> String {
    let out = Command::new(flowpath_bin())
        .args(["dump-flows", table, "--socket"])
        .arg(sock)
        .output()
        .expect("run flowpath");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Which pod answered (`hello from pod1; ...`).
fn endpoint(c: &Cluster, url: &str) -> String {
    let (ok, body) = c.curl(&c.n1, url);
    assert!(ok, "{url}: {body}");
    body.strip_prefix("hello from ")
        .and_then(|b| b.split(';').next())
        .unwrap_or_else(|| panic!("{url}: {body}"))
        .to_string()
}

fn learned(flows: &str) -> Vec<&str> {
    flows
        .lines()
        .filter(|l| l.contains("table=40") && l.contains("idle_timeout=1,"))
        .collect()
}

#[test]
fn client_ip_affinity_sticks_then_expires() {
    if skip() {
        return;
    }
    let mut c = Cluster::new(2);
    let svc = c.dir.join("services");
    std::fs::create_dir_all(&svc).unwrap();
    std::fs::write(svc.join("affinity.yaml"), MANIFESTS).unwrap();
    c.services = Some(svc);
    let sock = c.dir.join("fp.sock");
    let fp = c.start_flowpath(
        2,
        "native",
        &format!("workers = 2\ncontrol_socket = \"{}\"", sock.display()),
    );
    let t0 = Instant::now();

    // Sticky: 20 connections, one endpoint.
    let first = endpoint(&c, "http://10.96.0.77");
    for i in 1..20 {
        let e = endpoint(&c, "http://10.96.0.77");
        assert_eq!(e, first, "connection {i} left the affinity endpoint");
    }
    let flows = dump(&sock, "40");
    let l = learned(&flows);
    assert_eq!(l.len(), 1, "one learned flow for the one client:\n{flows}");
    assert!(
        // The client address is the key, in reg5 (compile::tables::REG_CLIENT).
        l[0].contains(&format!(
            "reg5={:#x}",
            u32::from(GW_IP.parse::<std::net::Ipv4Addr>().unwrap())
        )) && l[0].contains("nw_dst=10.96.0.77"),
        "{}",
        l[0]
    );
    eprintln!("sticky phase: {:?}, learned: {}", t0.elapsed(), l[0]);
    let out = Command::new(flowpath_bin())
        .args(["dump-flows", "40", "--json", "--socket"])
        .arg(&sock)
        .output()
        .expect("run flowpath");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let lf: Vec<&serde_json::Value> = v
        .as_array()
        .expect("array")
        .iter()
        .filter(|f| f["learned"] == true)
        .collect();
    assert_eq!(lf.len(), 1, "{v}");
    assert!(
        lf[0]["idle_age"].as_u64().is_some_and(|a| a <= 1),
        "{}",
        lf[0]
    );

    // Idle for longer than timeoutSeconds: the learned flow goes, and each
    // new round chooses afresh.
    let mut seen = vec![first.clone()];
    for round in 0..12 {
        std::thread::sleep(Duration::from_millis(1300));
        if round == 0 {
            let flows = dump(&sock, "40");
            assert!(learned(&flows).is_empty(), "expired:\n{flows}");
        }
        let e = endpoint(&c, "http://10.96.0.77");
        if !seen.contains(&e) {
            seen.push(e);
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "after expiry every round chose {first}");
    eprintln!("expiry phase done at {:?}", t0.elapsed());

    // No affinity: 20 connections spread.
    let mut spread = Vec::new();
    for _ in 0..20 {
        let e = endpoint(&c, "http://10.96.0.78");
        if !spread.contains(&e) {
            spread.push(e);
        }
    }
    assert_eq!(spread.len(), 2, "20 connections all on {spread:?}");
    let (code, fin) = fp.terminate();
    assert_eq!(code, Some(0));
    eprintln!("counters: {}", fin["total"]);
}
