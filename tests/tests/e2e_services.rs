//! End to end: real TCP (curl against a Python HTTP server) through
//! `flowpath run` on AF_XDP, for every Service case the seed pipelines
//! express: NodePort ETP Cluster from an external client, from the node and
//! from a local pod to a local pod, a remote pod, a local and a remote
//! hostNetwork endpoint; NodePort ETP Local; ClusterIP from a pod and from
//! the node. Each case checks the HTTP answer, the source address the
//! endpoint saw, and every byte of a 256 KiB download; then the
//! captures (no duplicate or malformed frames) and the datapath counters.
//!
//! See `e2e_common` for the cluster. Cases run one after another against
//! one cluster and one flowpath process (the suite must stay fast on two
//! cores); every failure is collected and reported together.

mod e2e_common;

use e2e_common::*;

fn cases() -> Vec<Case> {
    let np = |name, client, url, endpoint, peer| Case {
        name,
        client,
        url,
        endpoint,
        peer,
    };
    vec![
        // ETP Cluster from outside: SNAT to the gateway IP.
        np(
            "external -> NodePort -> local pod",
            ext,
            "http://10.176.25.244:30232",
            "pod1",
            GW_IP,
        ),
        // Never worked on OVS (seed 000: wrong TCP sequence numbers).
        np(
            "external -> NodePort -> remote pod",
            ext,
            "http://10.176.25.244:30233",
            "rpod",
            GW_IP,
        ),
        // seed 003: the local host endpoint sees the virtual IP.
        np(
            "external -> NodePort -> local hostNetwork",
            ext,
            "http://10.176.25.244:30234",
            "node1",
            VIP,
        ),
        // Never worked on OVS.
        np(
            "external -> NodePort -> remote hostNetwork",
            ext,
            "http://10.176.25.244:30235",
            "node2",
            GW_IP,
        ),
        // ETP Local keeps the client address.
        np(
            "external -> NodePort ETP Local -> local pod",
            ext,
            "http://10.176.25.244:30236",
            "pod2",
            EXT_IP,
        ),
        // From the node (the host's NodePort traffic is routed into gw0).
        np(
            "node -> NodePort -> local pod",
            node,
            "http://10.176.25.244:30232",
            "pod1",
            GW_IP,
        ),
        np(
            "node -> NodePort -> remote pod",
            node,
            "http://10.176.25.244:30233",
            "rpod",
            GW_IP,
        ),
        np(
            "node -> NodePort -> local hostNetwork",
            node,
            "http://10.176.25.244:30234",
            "node1",
            VIP,
        ),
        np(
            "node -> NodePort -> remote hostNetwork",
            node,
            "http://10.176.25.244:30235",
            "node2",
            GW_IP,
        ),
        // From a local pod.
        np(
            "pod -> NodePort -> local pod",
            pod2,
            "http://10.176.25.244:30232",
            "pod1",
            GW_IP,
        ),
        np(
            "pod -> NodePort -> remote pod",
            pod2,
            "http://10.176.25.244:30233",
            "rpod",
            GW_IP,
        ),
        np(
            "pod -> NodePort -> local hostNetwork",
            pod2,
            "http://10.176.25.244:30234",
            "node1",
            VIP,
        ),
        np(
            "pod -> NodePort -> remote hostNetwork",
            pod2,
            "http://10.176.25.244:30235",
            "node2",
            GW_IP,
        ),
        // ETP Local from inside the node keeps the source too.
        np(
            "node -> NodePort ETP Local -> local pod",
            node,
            "http://10.176.25.244:30236",
            "pod2",
            GW_IP,
        ),
        np(
            "pod -> NodePort ETP Local -> local pod",
            pod1,
            "http://10.176.25.244:30236",
            "pod2",
            POD1_IP,
        ),
        // ClusterIP: no SNAT.
        np(
            "pod -> ClusterIP -> local pod",
            pod2,
            "http://10.96.0.10:80",
            "pod1",
            POD2_IP,
        ),
        np(
            "node -> ClusterIP -> local pod",
            node,
            "http://10.96.0.10:80",
            "pod1",
            GW_IP,
        ),
    ]
}

/// Every case through `queues` queues per AF_XDP port served by as many
/// workers (native mode).
fn matrix(queues: u32) {
    let mut c = Cluster::new(queues);
    let workers = format!("workers = {queues}");
    let fp = c.start_flowpath(queues, "native", &workers);
    let failures = c.run_cases(&cases());
    finish_matrix(&c, fp, failures);
    for dev in [&c.up1, &c.p1, &c.p2] {
        assert!(
            !has_xdp(&c.n1, dev),
            "XDP program left on {dev} after SIGTERM"
        );
    }
}

#[test]
fn service_matrix_over_afxdp() {
    if skip() {
        return;
    }
    matrix(1);
}

/// The same with two queues and two workers: replies that land on the
/// other worker's queue are handed to the connection's owner, and frames
/// for the TAP (polled by worker 0) are handed to worker 0.
#[test]
fn service_matrix_two_workers() {
    if skip() {
        return;
    }
    matrix(2);
}

/// Not a test: builds the cluster, starts flowpath and waits, for poking
/// at it by hand (`FLOWPATH_E2E_HOLD=SECS cargo test -p tests --test
/// e2e_services hold -- --ignored --nocapture`).
#[test]
#[ignore]
fn hold() {
    if skip() {
        return;
    }
    let secs: u64 = std::env::var("FLOWPATH_E2E_HOLD")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let q: u32 = std::env::var("FLOWPATH_E2E_QUEUES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut c = Cluster::new(q);
    let mut fp = c.start_flowpath(q, "native", &format!("workers = {q}"));
    eprintln!(
        "cluster {} up for {secs}s: ext={} n1={} n2={} pod1={} pod2={} rpod={} dir={}",
        c.tag,
        c.ext,
        c.n1,
        c.n2,
        c.pod1,
        c.pod2,
        c.rpod,
        c.dir.display()
    );
    let t0 = std::time::Instant::now();
    while t0.elapsed().as_secs() < secs {
        std::thread::sleep(std::time::Duration::from_secs(5));
        let s = fp.stats();
        for w in s["workers"].as_array().unwrap() {
            eprintln!("worker {}: {}", w["worker"], w["worker_counters"]);
            eprintln!("  drops {} ct {}", w["drops"], w["conntrack"]);
        }
    }
}
