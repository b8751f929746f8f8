//! End to end: the runtime behaviour of `flowpath run` — two workers on two
//! queues with replies landing on the other worker (conntrack handoff),
//! SIGHUP reload under traffic, a bad reload, kill -9 leaving no XDP
//! program, restart, SIGTERM exit 0.

mod e2e_common;

use std::time::Duration;

use e2e_common::*;

/// Two queues per AF_XDP port, native mode, two workers: connections from
/// the external client and between pods spread over both queues, and a
/// reply that arrives on the queue of the worker that does not own its
/// connection is handed to the owner. Every request must still succeed.
#[test]
fn two_queues_replies_cross_workers() {
    if skip() {
        return;
    }
    let mut c = Cluster::new(2);
    let mut fp = c.start_flowpath(2, "native", "workers = 2");
    let mut failures = Vec::new();
    for i in 0..16 {
        for (client, url, want) in [
            (
                &c.ext,
                "http://10.176.25.244:30232",
                "hello from pod1; peer=172.16.2.1:",
            ),
            (
                &c.ext,
                "http://10.176.25.244:30233",
                "hello from rpod; peer=172.16.2.1:",
            ),
            (
                &c.pod2,
                "http://10.96.0.10:80",
                "hello from pod1; peer=172.16.2.11:",
            ),
        ] {
            let (ok, body) = c.curl(client, url);
            if !ok || !body.starts_with(want) {
                failures.push(format!("#{i} {url}: {body:?}"));
            }
        }
    }
    let s = fp.stats();
    let (code, _) = fp.terminate();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let workers = s["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2);
    // Both uplink queues carried traffic, on different workers.
    let mut uplink_rx = Vec::new();
    for w in workers {
        for p in w["ports"].as_array().unwrap() {
            if p["name"] == "uplink" {
                uplink_rx.push((
                    w["worker"].clone(),
                    p["queue"].clone(),
                    p["rx_packets"].clone(),
                ));
            }
        }
    }
    eprintln!("uplink rx per (worker, queue): {uplink_rx:?}");
    assert!(
        uplink_rx
            .iter()
            .all(|(_, _, rx)| rx.as_u64().unwrap_or(0) > 0),
        "both uplink queues received: {uplink_rx:?}"
    );
    let handoffs: u64 = workers
        .iter()
        .map(|w| {
            w["worker_counters"]["handoff_process_out"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    let handoffs_in: u64 = workers
        .iter()
        .map(|w| {
            w["worker_counters"]["handoff_process_in"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    eprintln!(
        "handoffs: out {handoffs} in {handoffs_in}; total {}",
        s["total"]
    );
    assert!(handoffs > 0, "no reply crossed workers: {}", s["total"]);
    assert_eq!(handoffs, handoffs_in, "every handoff was received");
    assert_eq!(code, Some(0));
    for dev in [&c.up1, &c.p1, &c.p2] {
        assert!(!has_xdp(&c.n1, dev), "XDP left on {dev}");
    }
}

/// SIGHUP swaps the rules while a download is in flight (it completes);
/// new connections follow the new rules; a broken flows file is refused
/// and the running rules stay; kill -9 leaves no XDP program behind and a
/// restart works; SIGTERM exits 0 with the programs detached.
#[test]
fn reload_kill9_restart() {
    if skip() {
        return;
    }
    let mut c = Cluster::new(1);
    // A private copy of the rules to edit.
    let flows = c.dir.join("flows.txt");
    let groups = c.dir.join("groups.txt");
    std::fs::copy(&c.flows, &flows).unwrap();
    std::fs::copy(&c.groups, &groups).unwrap();
    c.flows = flows.clone();
    c.groups = groups.clone();
    let mut fp = c.start_flowpath(1, "native", "");
    let (ok, body) = c.curl(&c.ext, "http://10.176.25.244:30232");
    assert!(ok && body.starts_with("hello from pod1"), "{body}");

    // A slow download across the reload: 256 KiB at 128 KiB/s.
    let ext = c.ext.clone();
    let slow = std::thread::spawn(move || {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ext,
                "curl",
                "-sS",
                "--max-time",
                "20",
                "--limit-rate",
                "128k",
                "http://10.176.25.244:30232/big",
            ])
            .output()
            .expect("curl");
        (out.status.success(), out.stdout.len())
    });
    std::thread::sleep(Duration::from_millis(700));
    // NodePort 30232 now goes to pod2.
    let g = std::fs::read_to_string(&groups).unwrap().replacen(
        "group_id=1,type=select,selection_method=hash,fields(ip_src,tcp_src),bucket=bucket_id:0,weight=100,actions=ct(commit,table=42,zone=65500,nat(dst=172.16.2.10:8080)",
        "group_id=1,type=select,selection_method=hash,fields(ip_src,tcp_src),bucket=bucket_id:0,weight=100,actions=ct(commit,table=42,zone=65500,nat(dst=172.16.2.11:8080)",
        1,
    );
    assert!(
        g.lines()
            .next()
            .unwrap_or_default()
            .contains("nat(dst=172.16.2.11:8080)"),
        "group 1 rewritten"
    );
    std::fs::write(&groups, g).unwrap();
    fp.signal("HUP");
    fp.wait_line(|l| l.contains("reloaded"), Duration::from_secs(5))
        .expect("reload acknowledged");
    let (ok, len) = slow.join().unwrap();
    assert!(
        ok && len > 256 * 1024,
        "download across the reload: ok={ok} len={len}"
    );
    let (ok, body) = c.curl(&c.ext, "http://10.176.25.244:30232");
    assert!(
        ok && body.starts_with("hello from pod2; peer=172.16.2.1:"),
        "after reload: {body}"
    );
    let s = fp.stats();
    assert_eq!(s["generation"], 2, "{s}");
    assert!(
        s["workers"][0]["worker_counters"]["reloads"].as_u64() == Some(1),
        "{s}"
    );

    // A broken flows file: refused, the rules stay.
    std::fs::write(&flows, "table=0,priority=1,actions=frobnicate\n").unwrap();
    fp.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let s = fp.stats();
    assert_eq!(s["generation"], 2, "a bad reload publishes nothing");
    let (ok, body) = c.curl(&c.ext, "http://10.176.25.244:30232");
    assert!(
        ok && body.starts_with("hello from pod2"),
        "after bad reload: {body}"
    );

    // kill -9: the kernel detaches the XDP programs with the BPF links.
    fp.signal("KILL");
    let _ = fp.child.wait();
    drop(fp);
    for dev in [&c.up1, &c.p1, &c.p2] {
        assert!(
            !has_xdp(&c.n1, dev),
            "XDP program left on {dev} after kill -9"
        );
    }
    // Restart right away (sockets may still be tearing down: EBUSY retries).
    std::fs::copy(repo().join("tests/e2e/flows.txt"), &flows).unwrap();
    let fp = c.start_flowpath(1, "native", "");
    let (ok, body) = c.curl(&c.ext, "http://10.176.25.244:30232");
    assert!(
        ok && body.starts_with("hello from pod2"),
        "after restart: {body}"
    );
    let (code, fin) = fp.terminate();
    assert_eq!(code, Some(0), "SIGTERM exits 0");
    assert!(fin["total"]["rx"].as_u64().unwrap_or(0) > 0);
    for dev in [&c.up1, &c.p1, &c.p2] {
        assert!(
            !has_xdp(&c.n1, dev),
            "XDP program left on {dev} after SIGTERM"
        );
    }
}
