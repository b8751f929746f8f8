//! End to end: the control socket of `flowpath run`, driven through the
//! CLI against the namespace cluster while real TCP flows: `add-flow`
//! changes forwarding, `del-flows cookie=V/M` undoes it, `dump-flows` shows
//! the flow in `ovs-ofctl` form (with `--stats`, its counters, which
//! survive replace-flows and reload as in OVS; a `hard_timeout` flow
//! expires), `dump-conntrack` shows the
//! connections a curl left, `flush-conntrack` empties them,
//! `dump-megaflows` shows the megaflow of the curl's first pass, `--json`
//! parses.

mod e2e_common;

use std::path::Path;

use e2e_common::*;

fn ok(sock: &Path, args: &[&str]) -> String {
    let (good, out) = cli(sock, args);
    assert!(good, "flowpath {args:?} failed: {out}");
    out
}

fn json(sock: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = ok(sock, &a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} --json: {e}: {out}"))
}

/// CPUs of a `Cpus_allowed_list` ("0-2,5").
fn cpu_list(s: &str) -> Vec<usize> {
    s.trim()
        .split(',')
        .flat_map(|r| match r.split_once('-') {
            Some((a, b)) => a.parse().unwrap()..=b.parse().unwrap(),
            None => r.parse().unwrap()..=r.parse().unwrap(),
        })
        .collect()
}

/// The threads of process `pid`: (name, allowed CPUs).
fn threads(pid: u32) -> Vec<(String, Vec<usize>)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| {
            let status = std::fs::read_to_string(t.ok()?.path().join("status")).ok()?;
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_string())
            };
            Some((field("Name:")?, cpu_list(&field("Cpus_allowed_list:")?)))
        })
        .collect()
}

/// The worker runs on one core; with CPUs to spare, the control plane's
/// threads (the main thread, the control socket's, the learner, flow
/// expiry) never run there.
fn control_threads_stay_off_the_worker_core(pid: u32) {
    let ts = threads(pid);
    let worker = ts
        .iter()
        .find(|(n, _)| n == "fp-worker-0")
        .unwrap_or_else(|| panic!("no worker thread: {ts:?}"));
    assert_eq!(worker.1.len(), 1, "worker pinned to one core: {ts:?}");
    let core = worker.1[0];
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return;
    }
    for name in ["flowpath", "fp-control", "fp-learn", "fp-expire"] {
        let (_, cpus) = ts
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no thread {name}: {ts:?}"));
        assert!(
            !cpus.is_empty() && !cpus.contains(&core),
            "{name} may run on the worker's core {core}: {ts:?}"
        );
    }
}

#[test]
fn control_socket_drives_the_running_node() {
    if skip() {
        return;
    }
    let mut c = Cluster::new(1);
    let sock = c.dir.join("ctl.sock");
    let fp = c.start_flowpath(
        1,
        "auto",
        &format!("control_socket = \"{}\"", sock.display()),
    );
    let mode = std::fs::metadata(&sock).expect("socket exists");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600, "socket mode");

    // ports and stats answer, as text and JSON.
    let ports = ok(&sock, &["ports"]);
    assert!(ports.contains(" 3(uplink): afxdp"), "{ports}");
    let pj = json(&sock, &["ports"]);
    assert_eq!(pj.as_array().map(Vec::len), Some(4), "{pj}");
    let st = json(&sock, &["stats"]);
    assert!(st.get("workers").is_some(), "{st}");
    control_threads_stay_off_the_worker_core(fp.child.id());

    let nodeport = "http://10.176.25.244:30232";
    let (good, body) = c.curl(&c.ext, nodeport);
    assert!(good && body.starts_with("hello from pod1"), "{body}");

    // The megaflow of the curl's first pass: the NodePort's match, its
    // packets, and its datapath actions (ct in zone 52100, recirculation).
    let mf = ok(&sock, &["dump-megaflows"]);
    assert!(mf.starts_with("flow-dump from worker 0:"), "{mf}");
    assert!(
        mf.lines().any(|l| l.starts_with("recirc_id(0),")
            && l.contains("nw_dst=10.176.25.244")
            && l.contains("tp_dst=30232")
            && !l.contains("packets:0,")
            && l.contains("actions:ct(zone=52100,nat),recirc(")),
        "dump-megaflows:\n{mf}"
    );
    let mj = json(&sock, &["dump-megaflows"]);
    assert!(
        mj[0]["megaflows"].as_array().is_some_and(|a| !a.is_empty()),
        "{mj}"
    );

    // The curl's connection through the NodePort chain, live.
    let ct = ok(&sock, &["dump-conntrack"]);
    assert!(
        ct.lines().any(
            |l| l.starts_with("tcp,orig=(src=10.176.26.36,dst=10.176.25.244,")
                && l.contains("dport=30232")
                && l.contains("zone=52100")
        ),
        "dump-conntrack:\n{ct}"
    );
    let z = ok(&sock, &["dump-conntrack", "65500"]);
    assert!(
        !z.is_empty() && z.lines().all(|l| l.contains("zone=65500")),
        "{z}"
    );
    let ctj = json(&sock, &["dump-conntrack"]);
    assert!(
        ctj.as_array()
            .is_some_and(|a| !a.is_empty() && a[0].get("zone").is_some()),
        "{ctj}"
    );
    let fl = json(&sock, &["flush-conntrack"]);
    assert!(fl["flushed"].as_u64().unwrap_or(0) >= 3, "{fl}");
    assert_eq!(ok(&sock, &["dump-conntrack"]), "", "flushed");

    // A drop for the NodePort, added live, stops new connections...
    let before = ok(&sock, &["dump-flows"]);
    ok(
        &sock,
        &[
            "add-flow",
            "table=0,priority=1000,cookie=0xbad1,tcp,nw_dst=10.176.25.244,tp_dst=30232,actions=drop",
        ],
    );
    let t0 = ok(&sock, &["dump-flows", "0"]);
    assert!(
        t0.lines().next().is_some_and(|l| l
            == " cookie=0xbad1, priority=1000,tcp,nw_dst=10.176.25.244,tp_dst=30232 actions=drop"),
        "dump-flows 0:\n{t0}"
    );
    let (good, body) = c.curl(&c.ext, nodeport);
    assert!(!good, "the drop flow did not take: {body}");
    // Its counters show the curl's dropped SYNs, in `ovs-ofctl dump-flows`
    // form.
    let st = ok(&sock, &["dump-flows", "--stats", "0"]);
    let l = st
        .lines()
        .find(|l| l.contains("cookie=0xbad1"))
        .unwrap_or_else(|| panic!("dump-flows --stats 0:\n{st}"));
    assert!(
        l.starts_with(" cookie=0xbad1, duration=") && l.contains("s, table=0, n_packets="),
        "{l}"
    );
    let n: u64 = l
        .split("n_packets=")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(n >= 1, "the drop flow counted the SYNs: {l}");
    // ... other Services still work ...
    let (good, body) = c.curl(&c.ext, "http://10.176.25.244:30236");
    assert!(good, "{body}");
    // ... and deleting it by cookie brings the NodePort back.
    let d = json(&sock, &["del-flows", "cookie=0xbad0/0xfff0"]);
    assert_eq!(d["removed"], 1, "{d}");
    assert_eq!(
        ok(&sock, &["dump-flows"]),
        before,
        "back to the original flows"
    );
    let (good, body) = c.curl(&c.ext, nodeport);
    assert!(good && body.starts_with("hello from pod1"), "{body}");

    let groups = ok(&sock, &["dump-groups"]);
    assert!(groups.starts_with("group_id="), "{groups}");
    let fj = json(&sock, &["dump-flows"]);
    assert_eq!(
        fj.as_array().map(Vec::len),
        Some(before.lines().count()),
        "{fj}"
    );

    // trace through the running pipeline, in ofproto/trace form.
    let t = ok(
        &sock,
        &[
            "trace",
            "--in-port",
            "uplink",
            "--flow",
            "tcp,nw_src=10.176.26.36,nw_dst=10.176.25.244,tp_src=40001,tp_dst=30232,tcp_flags=+syn",
        ],
    );
    assert!(
        t.contains("Datapath actions: ct(zone=52100,nat)"),
        "trace:\n{t}"
    );

    // The busiest flow's counters and age, before replace-flows...
    let busiest = |j: &serde_json::Value| -> (String, u64, u64) {
        j.as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                let g = |k: &str| f[k].as_u64().unwrap_or_else(|| panic!("{k} in {f}"));
                (
                    f["flow"].as_str().unwrap_or("").to_string(),
                    g("n_packets"),
                    g("duration_ms"),
                )
            })
            .max_by_key(|f| f.1)
            .expect("flows")
    };
    let (flow, packets, age) = busiest(&json(&sock, &["dump-flows", "--stats"]));
    assert!(packets >= 10, "{flow}: {packets} packets");
    // replace-flows with the file itself, and reload: the same flows.
    ok(&sock, &["replace-flows", &c.flows.display().to_string()]);
    assert_eq!(ok(&sock, &["dump-flows"]), before);
    // ... and after: a flow that stays keeps its counters and duration.
    let after = json(&sock, &["dump-flows", "--stats"]);
    let same = after
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["flow"].as_str() == Some(flow.as_str()))
        .unwrap_or_else(|| panic!("{flow} after replace-flows: {after}"));
    assert!(
        same["n_packets"].as_u64() >= Some(packets) && same["duration_ms"].as_u64() >= Some(age),
        "counters kept across replace-flows: before {packets} packets, {age} ms; after {same}"
    );
    let r = ok(&sock, &["reload"]);
    assert!(r.starts_with("reloaded: generation "), "{r}");
    let (good, body) = c.curl(&c.ext, nodeport);
    assert!(good, "{body}");

    // A bad flow is refused with the reason; nothing changes.
    let (good, out) = cli(
        &sock,
        &["add-flow", "table=0,tcp,tp_dst=99999,actions=drop"],
    );
    assert!(!good && out.contains("tp_dst"), "{out}");
    assert_eq!(ok(&sock, &["dump-flows"]), before);

    // A flow with a hard_timeout goes by itself (the expiry thread), idle
    // or not.
    ok(
        &sock,
        &[
            "add-flow",
            "table=0,priority=999,cookie=0xbad2,hard_timeout=1,udp,tp_dst=9,actions=drop",
        ],
    );
    assert!(ok(&sock, &["dump-flows", "0"]).contains("cookie=0xbad2, hard_timeout=1,"));
    let t = std::time::Instant::now();
    while ok(&sock, &["dump-flows"]) != before {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "hard_timeout=1 flow still there after 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("hard_timeout=1 flow expired after {:?}", t.elapsed());

    let (code, _) = fp.terminate();
    assert_eq!(code, Some(0));
    assert!(!sock.exists(), "socket removed at exit");
}
