//! End to end: a Service without endpoints refuses connections at once.
//!
//! node1 runs `flowpath run` from manifests (`services = DIR`) holding three
//! Services without a usable endpoint: a TCP ClusterIP (no EndpointSlice),
//! a TCP NodePort (no EndpointSlice) and a UDP ClusterIP (its only endpoint
//! not ready). The compiled pipeline sends their new connections to
//! REJECT, and the datapath answers: `curl` from a pod to the ClusterIP and
//! from the external client to the NodePort fails with "Connection refused"
//! well within a second (a TCP RST from the address it targeted), and a
//! connected UDP socket's `recv` raises `ConnectionRefusedError` (an ICMP
//! port unreachable quoting the datagram as sent). The counters show the
//! answers. Then the manifests gain an endpoint (pod1), node1 reloads, and
//! the same clients are served.

mod e2e_common;

use std::process::Command;
use std::time::{Duration, Instant};

use e2e_common::*;

const CLUSTER_IP: &str = "10.96.5.1";
const NODE_PORT: u16 = 30290;
const UDP_IP: &str = "10.96.5.3";

fn service(name: &str, uid: u32, ty: &str, ip: &str, port: &str) -> String {
    format!(
        r#"- apiVersion: v1
  kind: Service
  metadata:
    name: {name}
    namespace: default
    uid: 5f1c0000-0000-4000-8000-0000000005{uid:02}
    creationTimestamp: "2026-11-21T06:00:00Z"
  spec:
    type: {ty}
    clusterIP: {ip}
    clusterIPs: [{ip}]
    externalTrafficPolicy: Cluster
    internalTrafficPolicy: Cluster
    ipFamilies: [IPv4]
    ipFamilyPolicy: SingleStack
    ports:
    - {port}
    selector: {{app: {name}}}
    sessionAffinity: None
  status:
    loadBalancer: {{}}
"#
    )
}

fn slice(service: &str, ready: bool, port: &str) -> String {
    format!(
        r#"- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: {service}-r8k2
    namespace: default
    labels:
      kubernetes.io/service-name: {service}
      endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
  addressType: IPv4
  endpoints:
  - addresses: [{POD1_IP}]
    conditions: {{ready: {ready}, serving: {ready}, terminating: false}}
    nodeName: node1
  ports:
  - {port}
"#
    )
}

/// The manifests: without endpoints, or with pod1 behind every Service.
fn manifests(with_endpoints: bool) -> String {
    let mut s =
        String::from("apiVersion: v1\nkind: List\nmetadata:\n  resourceVersion: \"\"\nitems:\n");
    s += &service(
        "rj-clusterip",
        1,
        "ClusterIP",
        CLUSTER_IP,
        "{name: http, port: 80, protocol: TCP, targetPort: 8080}",
    );
    s += &service(
        "rj-nodeport",
        2,
        "NodePort",
        "10.96.5.2",
        &format!(
            "{{name: http, nodePort: {NODE_PORT}, port: 80, protocol: TCP, targetPort: 8080}}"
        ),
    );
    s += &service(
        "rj-udp",
        3,
        "ClusterIP",
        UDP_IP,
        "{name: dns, port: 53, protocol: UDP, targetPort: 5353}",
    );
    let http = "{name: http, port: 8080, protocol: TCP}";
    if with_endpoints {
        s += &slice("rj-clusterip", true, http);
        s += &slice("rj-nodeport", true, http);
    }
    // The UDP Service's endpoint exists all along; it becomes ready.
    s += &slice(
        "rj-udp",
        with_endpoints,
        "{name: dns, port: 5353, protocol: UDP}",
    );
    s
}

/// `curl -v` from `ns`: (exit code, stderr, how long it took).
fn curl_v(ns: &str, url: &str) -> (Option<i32>, String, Duration) {
    let t0 = Instant::now();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "-v",
            "--max-time",
            "8",
            "--connect-timeout",
            "4",
            url,
        ])
        .output()
        .expect("run curl");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.code(), text, t0.elapsed())
}

/// One datagram from a connected UDP socket in `ns`: "refused", "timeout"
/// or "answer:TEXT".
fn udp_connected(ns: &str, ip: &str, port: u16) -> String {
    let script = format!(
        "import socket\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.settimeout(3)\n\
         s.connect(('{ip}',{port}))\n\
         s.send(b'ping')\n\
         try:\n print('answer:'+s.recv(2048).decode(),end='')\n\
         except ConnectionRefusedError:\n print('refused',end='')\n\
         except socket.timeout:\n print('timeout',end='')\n"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", &script])
        .output()
        .expect("run python3");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every worker's counter `f`, summed.
fn sum(stats: &serde_json::Value, f: impl Fn(&serde_json::Value) -> u64) -> u64 {
    stats["workers"]
        .as_array()
        .map(|ws| ws.iter().map(f).sum())
        .unwrap_or(0)
}

#[test]
fn services_without_endpoints_refuse_then_serve() {
    if skip() {
        return;
    }
    let mut c = Cluster::new(1);
    let dir = c.dir.join("services");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("reject.yaml");
    std::fs::write(&file, manifests(false)).unwrap();
    c.services = Some(dir.clone());
    let pod1 = c.pod1.clone();
    c.udp_server(&pod1, "pod1-dns", POD1_IP, 5353);
    let mut fp = c.start_flowpath(1, "native", "workers = 1\n");
    let mut failures = Vec::new();

    // TCP: refused, not timed out.
    let nodeport = format!("http://{NODE_IP}:{NODE_PORT}");
    for (who, ns, url) in [
        (
            "pod2 -> ClusterIP",
            c.pod2.clone(),
            format!("http://{CLUSTER_IP}"),
        ),
        ("ext -> NodePort", c.ext.clone(), nodeport.clone()),
    ] {
        let (code, text, took) = curl_v(&ns, &url);
        eprintln!("{who}: exit {code:?} in {took:.2?}");
        if code != Some(7) || !text.contains("Connection refused") || took > Duration::from_secs(2)
        {
            failures.push(format!(
                "{who}: want a refusal within 2 s, got exit {code:?} after {took:.2?}:\n{text}"
            ));
        }
    }
    // UDP: ECONNREFUSED on the connected socket.
    let got = udp_connected(&c.pod2, UDP_IP, 53);
    if got != "refused" {
        failures.push(format!("pod2 -> UDP ClusterIP: want refused, got {got:?}"));
    }
    let stats = fp.stats();
    let rejects = stats["total"]["rejects"].as_u64().unwrap_or(0);
    let punts = sum(&stats, |w| w["punts"].as_u64().unwrap_or(0));
    eprintln!("rejects {rejects}, punts {punts}");
    if rejects < 3 {
        failures.push(format!(
            "counters: {rejects} reject answers, want >= 3: {stats}"
        ));
    }

    // Endpoints appear: the same clients are served.
    let tmp = c.dir.join("reject.yaml.tmp");
    std::fs::write(&tmp, manifests(true)).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    fp.signal("HUP");
    if fp
        .wait_line(
            |l| l.starts_with("flowpath run:") && l.contains("reloaded"),
            Duration::from_secs(10),
        )
        .is_none()
    {
        failures.push(format!("no reload line: {:?}", fp.log));
    }
    for (who, ns, url, peer) in [
        (
            "pod2 -> ClusterIP",
            c.pod2.clone(),
            format!("http://{CLUSTER_IP}"),
            POD2_IP,
        ),
        ("ext -> NodePort", c.ext.clone(), nodeport, GW_IP),
    ] {
        let (ok, body) = c.curl(&ns, &url);
        let want = format!("hello from pod1; peer={peer}:");
        if !ok || !body.starts_with(&want) {
            failures.push(format!(
                "{who} after the endpoint appeared: want {want:?}, got ok={ok} {body:?}"
            ));
        }
    }
    let got = udp_connected(&c.pod2, UDP_IP, 53);
    if !got.starts_with("answer:hello from pod1") {
        failures.push(format!(
            "pod2 -> UDP ClusterIP after the endpoint appeared: got {got:?}"
        ));
    }
    let after = fp.stats();
    let rejects_after = after["total"]["rejects"].as_u64().unwrap_or(0);
    if rejects_after != rejects {
        failures.push(format!(
            "answers sent after the endpoints appeared: {rejects} -> {rejects_after}"
        ));
    }
    failures.extend(c.capture_failures());
    let (code, _) = fp.terminate();
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(code, Some(0));
}
