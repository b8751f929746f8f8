//! End to end from manifests: node1 of the namespace cluster runs `flowpath
//! run` with `services = DIR` (the Services and EndpointSlices of
//! `tests/e2e/manifests/`, as `kubectl get svc,endpointslices -o yaml`
//! prints them), so every packet goes through the pipeline the Service
//! compiler built, not hand-written flows.
//!
//! `service_matrix_from_manifests`: every case of the matrix (NodePort ETP
//! Cluster from an external client, the node and a local pod to a local
//! pod, a remote pod, a local and a remote hostNetwork endpoint; ETP Local
//! keeping the client address; ClusterIP from pods and from the node;
//! externalIPs and load-balancer ingress IPs with ETP Cluster, SNATed so a
//! remote endpoint answers through this node, and ETP Local; a multi-port
//! Service; UDP), plus hairpin (a pod reaching itself through its own
//! ClusterIP and NodePort). Each case checks the answer, the source address
//! the endpoint saw, every byte of a 256 KiB download; then the captures and
//! the counters.
//!
//! `reload_under_steady_traffic`: 8 TCP streams through NodePort, external
//! IP and ClusterIP Services keep flowing while the manifests change and the
//! node reloads 10 times in about 3 s (SIGHUP, `flowpath reload` on the
//! control socket, and the directory watcher); not one established
//! connection may break, and new connections opened during the reloads must
//! all be answered.

mod e2e_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e_common::*;

fn manifests() -> std::path::PathBuf {
    repo().join("tests/e2e/manifests")
}

fn cases() -> Vec<Case> {
    let k = |name, client, url, endpoint, peer| Case {
        name,
        client,
        url,
        endpoint,
        peer,
    };
    vec![
        // NodePort, externalTrafficPolicy Cluster: SNAT to the gateway IP;
        // a local hostNetwork endpoint sees the virtual IP (seed 003).
        k(
            "ext -> NodePort -> local pod",
            ext,
            "http://10.176.25.244:30232",
            "pod1",
            GW_IP,
        ),
        k(
            "ext -> NodePort -> remote pod",
            ext,
            "http://10.176.25.244:30233",
            "rpod",
            GW_IP,
        ),
        k(
            "ext -> NodePort -> local hostNetwork",
            ext,
            "http://10.176.25.244:30234",
            "node1",
            VIP,
        ),
        k(
            "ext -> NodePort -> remote hostNetwork",
            ext,
            "http://10.176.25.244:30235",
            "node2",
            GW_IP,
        ),
        k(
            "node -> NodePort -> local pod",
            node,
            "http://10.176.25.244:30232",
            "pod1",
            GW_IP,
        ),
        k(
            "node -> NodePort -> remote pod",
            node,
            "http://10.176.25.244:30233",
            "rpod",
            GW_IP,
        ),
        k(
            "node -> NodePort -> local hostNetwork",
            node,
            "http://10.176.25.244:30234",
            "node1",
            VIP,
        ),
        k(
            "node -> NodePort -> remote hostNetwork",
            node,
            "http://10.176.25.244:30235",
            "node2",
            GW_IP,
        ),
        k(
            "pod -> NodePort -> local pod",
            pod2,
            "http://10.176.25.244:30232",
            "pod1",
            GW_IP,
        ),
        k(
            "pod -> NodePort -> remote pod",
            pod2,
            "http://10.176.25.244:30233",
            "rpod",
            GW_IP,
        ),
        k(
            "pod -> NodePort -> local hostNetwork",
            pod2,
            "http://10.176.25.244:30234",
            "node1",
            VIP,
        ),
        k(
            "pod -> NodePort -> remote hostNetwork",
            pod2,
            "http://10.176.25.244:30235",
            "node2",
            GW_IP,
        ),
        // ETP Local: local endpoints only (the Service also has one on
        // node2), client address kept.
        k(
            "ext -> NodePort ETP Local -> local pod",
            ext,
            "http://10.176.25.244:30236",
            "pod2",
            EXT_IP,
        ),
        k(
            "node -> NodePort ETP Local -> local pod",
            node,
            "http://10.176.25.244:30236",
            "pod2",
            GW_IP,
        ),
        k(
            "pod -> NodePort ETP Local -> local pod",
            pod1,
            "http://10.176.25.244:30236",
            "pod2",
            POD1_IP,
        ),
        // ... to a hostNetwork endpoint: the outside client's address too
        // (the host answers it back through gw0, see e2e_common); from the
        // node, the virtual IP as with ETP Cluster.
        k(
            "ext -> NodePort ETP Local -> local hostNetwork",
            ext,
            "http://10.176.25.244:30242",
            "node1",
            EXT_IP,
        ),
        k(
            "node -> NodePort ETP Local -> local hostNetwork",
            node,
            "http://10.176.25.244:30242",
            "node1",
            VIP,
        ),
        k(
            "pod -> NodePort ETP Local -> local hostNetwork",
            pod2,
            "http://10.176.25.244:30242",
            "node1",
            POD2_IP,
        ),
        // ClusterIP: no SNAT (the host's own source is the gateway IP).
        k(
            "pod -> ClusterIP -> local pod",
            pod2,
            "http://10.96.0.10",
            "pod1",
            POD2_IP,
        ),
        k(
            "node -> ClusterIP -> local pod",
            node,
            "http://10.96.0.10",
            "pod1",
            GW_IP,
        ),
        k(
            "pod -> ClusterIP -> remote pod",
            pod1,
            "http://10.96.1.2",
            "rpod",
            POD1_IP,
        ),
        k(
            "node -> ClusterIP -> remote pod",
            node,
            "http://10.96.1.2",
            "rpod",
            GW_IP,
        ),
        k(
            "pod -> ClusterIP -> local hostNetwork",
            pod2,
            "http://10.96.1.3",
            "node1",
            POD2_IP,
        ),
        k(
            "pod -> ClusterIP -> remote hostNetwork",
            pod2,
            "http://10.96.1.4",
            "node2",
            POD2_IP,
        ),
        // externalIPs / load-balancer ingress, ETP Cluster: SNATed from
        // outside (the remote endpoint answers through this node), not from
        // a pod.
        k(
            "ext -> externalIP ETP Cluster -> remote pod",
            ext,
            "http://192.0.2.10",
            "rpod",
            GW_IP,
        ),
        k(
            "ext -> LB ingress ETP Cluster -> remote pod",
            ext,
            "http://198.51.100.10",
            "rpod",
            GW_IP,
        ),
        k(
            "ext -> externalIP ETP Cluster -> local pod",
            ext,
            "http://192.0.2.12",
            "pod1",
            GW_IP,
        ),
        k(
            "pod -> externalIP ETP Cluster -> remote pod",
            pod1,
            "http://192.0.2.10",
            "rpod",
            POD1_IP,
        ),
        // ... ETP Local: client address kept, local endpoint only.
        k(
            "ext -> externalIP ETP Local -> local pod",
            ext,
            "http://192.0.2.11",
            "pod2",
            EXT_IP,
        ),
        k(
            "ext -> LB ingress ETP Local -> local pod",
            ext,
            "http://198.51.100.11",
            "pod2",
            EXT_IP,
        ),
        // A multi-port Service: each port reaches its target port.
        k(
            "ext -> NodePort multi-port :30237 -> 8080",
            ext,
            "http://10.176.25.244:30237",
            "pod2",
            GW_IP,
        ),
        k(
            "ext -> NodePort multi-port :30238 -> 8081",
            ext,
            "http://10.176.25.244:30238",
            "pod2-alt",
            GW_IP,
        ),
        k(
            "pod -> ClusterIP multi-port :81 -> 8081",
            pod1,
            "http://10.96.1.7:81",
            "pod2-alt",
            POD1_IP,
        ),
        // UDP.
        k(
            "ext -> NodePort UDP -> local pod",
            ext,
            "udp://10.176.25.244:30253",
            "pod1-dns",
            GW_IP,
        ),
        k(
            "node -> NodePort UDP -> local pod",
            node,
            "udp://10.176.25.244:30253",
            "pod1-dns",
            GW_IP,
        ),
        k(
            "pod -> ClusterIP UDP -> local pod",
            pod2,
            "udp://10.96.1.8:53",
            "pod1-dns",
            POD2_IP,
        ),
        // Hairpin: a pod reaching itself. Through its ClusterIP (and through
        // an ETP Local NodePort, which keeps its address) it sees the hairpin
        // IP; through an ETP Cluster NodePort, the gateway IP (SNAT first).
        k(
            "hairpin: pod1 -> ClusterIP -> pod1",
            pod1,
            "http://10.96.0.10",
            "pod1",
            HAIRPIN_IP,
        ),
        k(
            "hairpin: pod1 -> NodePort -> pod1",
            pod1,
            "http://10.176.25.244:30232",
            "pod1",
            GW_IP,
        ),
        k(
            "hairpin: pod2 -> NodePort ETP Local -> pod2",
            pod2,
            "http://10.176.25.244:30236",
            "pod2",
            HAIRPIN_IP,
        ),
    ]
}

/// A cluster running from `services`, with the extra servers the manifests
/// name and the external client's routes to the external IPs.
fn cluster(queues: u32, services: &Path, extra: &str) -> (Cluster, Flowpath) {
    let mut c = Cluster::new(queues);
    c.services = Some(services.to_path_buf());
    let (pod1, pod2) = (c.pod1.clone(), c.pod2.clone());
    c.server(&pod2, "pod2-alt", POD2_IP, 8081);
    c.udp_server(&pod1, "pod1-dns", POD1_IP, 5353);
    sh(
        &c.ext,
        &format!(
            "ip route add 192.0.2.0/24 via {NODE_IP}; ip route add 198.51.100.0/24 via {NODE_IP}"
        ),
    );
    let extra = format!("workers = {queues}\n{extra}");
    let fp = c.start_flowpath(queues, "native", &extra);
    (c, fp)
}

#[test]
fn service_matrix_from_manifests() {
    if skip() {
        return;
    }
    let (c, fp) = cluster(1, &manifests(), "");
    let mut failures = c.run_cases(&cases());
    // ETP Local: the endpoint on node2 is never picked for outside traffic.
    for i in 0..8 {
        for url in ["http://10.176.25.244:30236", "http://198.51.100.11"] {
            let (ok, body) = c.curl(&c.ext, url);
            let want = format!("hello from pod2; peer={EXT_IP}:");
            if !ok || !body.starts_with(&want) {
                failures.push(format!("ETP Local {url} #{i}: {body:?}"));
            }
        }
    }
    finish_matrix(&c, fp, failures);
}

fn generation(sock: &Path) -> u64 {
    let (ok, out) = cli(sock, &["stats", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats JSON");
    v["generation"].as_u64().expect("generation")
}

/// Streams from `ns` (scripts/e2e-stream-client.py) for `secs`.
fn streams(ns: &str, secs: f64, new_url: &str, urls: &[&str]) -> std::process::Child {
    Command::new("ip")
        .args(["netns", "exec", ns, "python3"])
        .arg(repo().join("scripts/e2e-stream-client.py"))
        .arg(secs.to_string())
        .args(["--new", new_url])
        .args(urls)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the stream client")
}

/// A Service nothing streams through (its coming and going is a reload).
fn unrelated(n: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: extra-{n}, namespace: other}}\n\
         spec:\n  type: NodePort\n  clusterIP: 10.96.9.{n}\n  ports:\n  \
         - {{port: 80, protocol: TCP, targetPort: 8080, nodePort: {}}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: extra-{n}-1\n  namespace: other\n  labels: {{kubernetes.io/service-name: extra-{n}}}\n\
         addressType: IPv4\nendpoints:\n- addresses: [172.16.3.10]\nports:\n- {{port: 8080, protocol: TCP}}\n",
        31000 + n
    )
}

#[test]
fn reload_under_steady_traffic() {
    if skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("fpe-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let yaml = dir.join("services.yaml");
    std::fs::copy(manifests().join("services.yaml"), &yaml).expect("copy manifests");
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(dir.clone());
    let sock_dir = std::env::temp_dir().join(format!("fpe-reload-sock-{}", std::process::id()));
    std::fs::create_dir_all(&sock_dir).expect("socket dir");
    let _rm_sock = Rm(sock_dir.clone());
    let sock = sock_dir.join("ctl.sock");
    let (c, fp) = cluster(2, &dir, &format!("control_socket = \"{}\"", sock.display()));
    let g0 = generation(&sock);

    const SECS: f64 = 6.0;
    let mut outside = streams(
        &c.ext,
        SECS,
        "http://10.176.25.244:30232/",
        &[
            "http://10.176.25.244:30232",
            "http://10.176.25.244:30232",
            "http://10.176.25.244:30233",
            "http://10.176.25.244:30236",
            "http://192.0.2.10",
        ],
    );
    let mut inside = streams(
        &c.pod2,
        SECS,
        "http://10.96.0.10/",
        &["http://10.96.0.10", "http://10.96.0.10", "http://10.96.1.2"],
    );
    let started = |child: &mut std::process::Child| {
        let out = child.stdout.take().expect("piped");
        let mut r = BufReader::new(out);
        let mut line = String::new();
        r.read_line(&mut line).expect("stream client output");
        assert!(
            line.starts_with("streaming"),
            "streams did not start: {line:?}"
        );
        r
    };
    let mut out_r = started(&mut outside);
    let mut in_r = started(&mut inside);

    // 10 reloads in about 3 s while the streams flow: Services come and go,
    // the streamed NodePort Service gains an endpoint; SIGHUP and the
    // control socket alternate (the watcher adds its own).
    let t0 = Instant::now();
    let mut reloads = 0;
    for i in 0..10u32 {
        match i % 4 {
            0 => std::fs::write(dir.join(format!("extra-{i}.yaml")), unrelated(i)).unwrap(),
            1 => std::fs::remove_file(dir.join(format!("extra-{}.yaml", i - 1))).unwrap(),
            2 if i == 2 => {
                let text = std::fs::read_to_string(&yaml).unwrap();
                let at = text
                    .find("kubernetes.io/service-name: np-local-pod\n")
                    .expect("np-local-pod's slice");
                let ep = at + text[at..].find("  endpoints:\n").unwrap() + "  endpoints:\n".len();
                let mut t = text.clone();
                t.insert_str(
                    ep,
                    "  - addresses: [172.16.2.11]\n    conditions: {ready: true}\n    nodeName: node1\n",
                );
                std::fs::write(&yaml, t).unwrap();
            }
            _ => std::fs::write(dir.join(format!("extra-{i}.yaml")), unrelated(i)).unwrap(),
        }
        if i % 2 == 0 {
            fp.signal("HUP");
        } else {
            let (ok, out) = cli(&sock, &["reload"]);
            assert!(ok && out.contains("reloaded: generation"), "{out}");
        }
        reloads += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let reload_time = t0.elapsed();
    let g1 = generation(&sock);
    let (ok, groups) = cli(&sock, &["dump-groups"]);
    assert!(ok, "{groups}");

    let report = |r: &mut BufReader<std::process::ChildStdout>| {
        let mut line = String::new();
        r.read_line(&mut line).expect("stream report");
        serde_json::from_str::<serde_json::Value>(&line)
            .unwrap_or_else(|e| panic!("stream report {line:?}: {e}"))
    };
    let a = report(&mut out_r);
    let b = report(&mut in_r);
    let _ = outside.wait();
    let _ = inside.wait();
    let (code, fin) = fp.terminate();

    let mut broken = Vec::new();
    let mut bytes = 0u64;
    let (mut attempted, mut answered) = (0, 0);
    for r in [&a, &b] {
        for s in r["streams"].as_array().expect("streams") {
            bytes += s["bytes"].as_u64().unwrap_or(0);
            if !s["error"].is_null() || s["bytes"].as_u64().unwrap_or(0) < 100_000 {
                broken.push(s.to_string());
            }
        }
        attempted += r["new_attempted"].as_u64().unwrap_or(0);
        answered += r["new_ok"].as_u64().unwrap_or(0);
    }
    let max_gap = [&a, &b]
        .iter()
        .flat_map(|r| r["streams"].as_array().unwrap().iter())
        .filter_map(|s| s["max_gap_ms"].as_u64())
        .max()
        .unwrap_or(0);
    eprintln!(
        "reload under traffic: {reloads} reloads in {reload_time:.2?} (generation {g0} -> {g1}); \
         8 established streams: {} broken, {:.1} MB moved, longest gap {max_gap} ms; \
         new connections during the run: {answered}/{attempted} answered",
        broken.len(),
        bytes as f64 / 1e6
    );
    assert!(broken.is_empty(), "broken streams:\n{}", broken.join("\n"));
    assert!(attempted > 20, "{a}\n{b}");
    assert_eq!(answered, attempted, "new connections failed: {a}\n{b}");
    assert!(g1 >= g0 + 10, "only {} reloads took effect", g1 - g0);
    // The streamed Service's new endpoint is live.
    assert!(
        groups
            .lines()
            .any(|l| l.contains("nat(dst=172.16.2.10:8080)")
                && l.contains("nat(dst=172.16.2.11:8080)")
                && !l.contains("172.16.3.10")),
        "np-local-pod's group has no second endpoint:\n{groups}"
    );
    assert_eq!(code, Some(0));
    assert!(fin["total"]["rx"].as_u64().unwrap_or(0) > 1000, "{fin}");
}
