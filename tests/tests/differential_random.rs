//! Seeded random differential test: small random pipelines and packets,
//! real OVS vs flowpath `replay` (interpreter and cache), one OVS switch
//! reused across cases (groups and flows replaced, conntrack flushed).
//!
//! `FLOWPATH_DIFF_DUMP=DIR` writes each case's flows/groups/steps/ports
//! files under DIR/caseN for `flowpath replay`/`trace`.
//! `FLOWPATH_DIFF_SEED` (default 0x5eed), `FLOWPATH_DIFF_CASES` (default
//! 1000), `FLOWPATH_DIFF_CASE=N` to rerun one case. Case `i` draws from its
//! own RNG seeded with `seed + i`, so a failing case reproduces alone.
//!
//! What the generator avoids, because OVS's result would not be a function
//! of the input: two flows of one table with the same priority (OVS picks
//! either); select groups with more than one bucket and NAT with address or
//! port RANGES (both hashed with a per-process random basis); resubmit to
//! the same or an earlier table (no loops). Flows OVS rejects (prerequisite
//! violations the generator did not foresee) are counted and skipped.

use std::fmt::Write as _;

use ctrl::replay::{ReplayOptions, replay_json};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::net::Ipv4Addr;
use tests::compare::{Stats, compare};
use tests::ovs::{OvsSwitch, parse_steps, skip_without_ovs};
use tests::pkt::{self, ip, tcp_flags::*};

const ADDRS: &[&str] = &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.1.0.1", "10.1.0.2"];
const TP: &[u16] = &[80, 53, 1234, 40000, 8080];
const ZONES: &[u16] = &[0, 1, 65500];
const NAT_IPS: &[&str] = &["10.9.0.1", "10.9.0.2"];

fn ports() -> Vec<(String, u32)> {
    (1..=4).map(|i| (format!("p{i}"), i)).collect()
}

/// Protocol class of a flow's match: decides which fields and actions are
/// legal (OpenFlow prerequisites).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Any,
    Ip,
    Tcp,
    Udp,
    Icmp,
    Arp,
}

fn pick<'a, T>(r: &mut SmallRng, v: &'a [T]) -> &'a T {
    &v[r.gen_range(0..v.len())]
}

fn cidr(r: &mut SmallRng) -> String {
    let a = pick(r, ADDRS);
    match r.gen_range(0..3) {
        0 => a.to_string(),
        1 => format!("{a}/24"),
        _ => format!("{a}/16"),
    }
}

/// One random case: groups, flows, steps.
struct Case {
    groups: String,
    flows: String,
    steps: String,
}

fn gen_match(r: &mut SmallRng, class: Class) -> String {
    let mut m: Vec<String> = Vec::new();
    m.push(
        match class {
            Class::Any => "",
            Class::Ip => "ip",
            Class::Tcp => "tcp",
            Class::Udp => "udp",
            Class::Icmp => "icmp",
            Class::Arp => "arp",
        }
        .to_string(),
    );
    if r.gen_bool(0.3) {
        m.push(format!("in_port={}", r.gen_range(1..=4)));
    }
    let l3 = !matches!(class, Class::Any | Class::Arp);
    if l3 && r.gen_bool(0.3) {
        m.push(format!("nw_src={}", cidr(r)));
    }
    if l3 && r.gen_bool(0.3) {
        m.push(format!("nw_dst={}", cidr(r)));
    }
    if class == Class::Arp && r.gen_bool(0.3) {
        m.push(format!("arp_tpa={}", pick(r, ADDRS)));
    }
    if matches!(class, Class::Tcp | Class::Udp) && r.gen_bool(0.4) {
        m.push(format!("tp_dst={}", pick(r, TP)));
    }
    if r.gen_bool(0.2) {
        let bit = r.gen_range(0..4);
        m.push(format!(
            "reg0={:#x}/{:#x}",
            r.gen_range(0..2) << bit,
            1 << bit
        ));
    }
    if l3 && r.gen_bool(0.35) {
        m.push(
            pick(
                r,
                &[
                    "ct_state=-trk",
                    "ct_state=+trk",
                    "ct_state=+new+trk",
                    "ct_state=+est+trk",
                    "ct_state=+est+rpl+trk",
                    "ct_state=-new+trk",
                    "ct_state=+inv+trk",
                    "ct_state=+trk+dnat",
                    "ct_state=+trk+snat",
                ],
            )
            .to_string(),
        );
    }
    if l3 && r.gen_bool(0.15) {
        m.push(format!("ct_mark={:#x}", r.gen_range(0..3)));
    }
    if r.gen_bool(0.1) {
        m.push(format!("pkt_mark={:#x}", r.gen_range(0..3)));
    }
    m.retain(|s| !s.is_empty());
    m.join(",")
}

/// Random actions for a flow in table `t` (index `ti` of `tables`).
/// `may_commit` is false when the match requires +inv: OVS rejects
/// ct(commit) there (OFPBAC_MATCH_INCONSISTENT).
fn gen_actions(
    r: &mut SmallRng,
    class: Class,
    may_commit: bool,
    tables: &[u8],
    ti: usize,
    n_groups: u32,
) -> String {
    let later = &tables[ti + 1..];
    let l3 = !matches!(class, Class::Any | Class::Arp);
    let l4 = matches!(class, Class::Tcp | Class::Udp);
    let mut a: Vec<String> = Vec::new();
    let mut ct_used = false;
    for _ in 0..r.gen_range(1..=4) {
        let choice = r.gen_range(0..14);
        let act = match choice {
            0 | 1 => format!("output:{}", r.gen_range(1..=4)),
            2 => "IN_PORT".to_string(),
            3 if !later.is_empty() => format!("resubmit(,{})", pick(r, later)),
            4 => format!(
                "load:{:#x}->NXM_NX_REG{}[{}]",
                r.gen_range(0..2),
                r.gen_range(0..2),
                r.gen_range(0..4)
            ),
            5 => "move:NXM_NX_REG0[0..3]->NXM_NX_REG1[0..3]".to_string(),
            6 => format!("set_field:{:#x}->pkt_mark", r.gen_range(0..3)),
            7 => format!("mod_dl_dst:02:00:00:00:00:{:02x}", r.gen_range(0..4)),
            8 if l3 => match r.gen_range(0..4) {
                0 => format!("mod_nw_src:{}", pick(r, ADDRS)),
                1 => format!("mod_nw_dst:{}", pick(r, ADDRS)),
                2 => "dec_ttl".to_string(),
                _ => format!("mod_nw_tos:{}", 4 * r.gen_range(0..4)),
            },
            9 if l4 => match r.gen_range(0..2) {
                0 => format!("mod_tp_src:{}", pick(r, TP)),
                _ => format!("mod_tp_dst:{}", pick(r, TP)),
            },
            10..=12 if l3 && !ct_used => {
                ct_used = true;
                let zone = pick(r, ZONES);
                let commit = may_commit && r.gen_bool(0.6);
                let mut parts = Vec::new();
                if commit {
                    parts.push("commit".to_string());
                }
                parts.push(format!("zone={zone}"));
                if !later.is_empty() && r.gen_bool(0.7) {
                    parts.push(format!("table={}", pick(r, later)));
                }
                match r.gen_range(0..4) {
                    0 if commit => parts.push(format!("nat(src={})", pick(r, NAT_IPS))),
                    1 if commit && l4 => {
                        parts.push(format!("nat(dst={}:{})", pick(r, NAT_IPS), pick(r, TP)))
                    }
                    2 => parts.push("nat".to_string()),
                    _ => {}
                }
                if commit && r.gen_bool(0.3) {
                    parts.push(format!(
                        "exec(load:{:#x}->NXM_NX_CT_MARK[])",
                        r.gen_range(1..3)
                    ));
                }
                format!("ct({})", parts.join(","))
            }
            13 if n_groups > 0 => format!("group:{}", r.gen_range(1..=n_groups)),
            _ => format!("output:{}", r.gen_range(1..=4)),
        };
        a.push(act);
    }
    if !later.is_empty() && r.gen_bool(0.3) {
        a.push(format!("goto_table:{}", pick(r, later)));
    }
    a.join(",")
}

fn gen_case(r: &mut SmallRng) -> Case {
    // Tables: 0 then 1-3 increasing ids.
    let n_tables = r.gen_range(2..=4);
    let mut tables = vec![0u8];
    while tables.len() < n_tables {
        let next = tables.last().unwrap() + r.gen_range(1..20);
        tables.push(next);
    }
    let n_groups = r.gen_range(0..=2u32);
    let mut groups = String::new();
    for g in 1..=n_groups {
        let ty = if r.gen_bool(0.5) { "select" } else { "all" };
        let acts = match r.gen_range(0..3) {
            0 => format!("output:{}", r.gen_range(1..=4)),
            1 => format!(
                "mod_dl_src:02:00:00:00:01:{:02x},output:{}",
                g,
                r.gen_range(1..=4)
            ),
            _ => format!("load:0x1->NXM_NX_REG2[0],output:{}", r.gen_range(1..=4)),
        };
        writeln!(
            groups,
            "group_id={g},type={ty},bucket=bucket_id:0,actions={acts}"
        )
        .unwrap();
    }
    let mut flows = String::new();
    for (ti, t) in tables.iter().enumerate() {
        let n_flows = r.gen_range(3..=12);
        // Distinct priorities within a table.
        let mut prios: Vec<u32> = (1..=100).collect();
        for i in 0..n_flows {
            let j = r.gen_range(i..prios.len());
            prios.swap(i, j);
        }
        for prio in prios.iter().take(n_flows) {
            let class = *pick(
                r,
                &[
                    Class::Any,
                    Class::Ip,
                    Class::Ip,
                    Class::Tcp,
                    Class::Tcp,
                    Class::Udp,
                    Class::Icmp,
                    Class::Arp,
                ],
            );
            let m = gen_match(r, class);
            let a = gen_actions(r, class, !m.contains("+inv"), &tables, ti, n_groups);
            let m = if m.is_empty() {
                String::new()
            } else {
                format!("{m},")
            };
            writeln!(flows, "table={t},priority={prio},{m}actions={a}").unwrap();
        }
    }
    // Packets.
    let mut steps = String::new();
    let mut sent: Vec<(u8, Ipv4Addr, u16, Ipv4Addr, u16)> = Vec::new();
    let n_pkts = r.gen_range(3..=8);
    for _ in 0..n_pkts {
        let port = r.gen_range(1..=4);
        let smac = pkt::mac(&format!("02:00:00:00:00:{:02x}", r.gen_range(0..4)));
        let dmac = pkt::mac(&format!("02:00:00:00:00:{:02x}", r.gen_range(0..4)));
        // Sometimes the reply of an earlier packet.
        let (proto, src, sport, dst, dport) = if !sent.is_empty() && r.gen_bool(0.35) {
            let &(p, s, sp, d, dp) = pick(r, &sent);
            (p, d, dp, s, sp)
        } else {
            let p = *pick(r, &[6u8, 6, 17, 1, 0]);
            (
                p,
                ip(pick::<&str>(r, ADDRS)),
                *pick(r, TP),
                ip(pick::<&str>(r, ADDRS)),
                *pick(r, TP),
            )
        };
        let frame = match proto {
            6 => {
                let flags = *pick(
                    r,
                    &[SYN, SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, ACK],
                );
                let payload: &[u8] = if flags & PSH != 0 { b"data" } else { b"" };
                pkt::tcp(
                    smac,
                    dmac,
                    (src, sport),
                    (dst, dport),
                    r.gen_range(1000..1010),
                    r.gen_range(0..2) * 5001,
                    flags,
                    payload,
                )
            }
            17 => pkt::udp(smac, dmac, (src, sport), (dst, dport), b"udp"),
            1 => pkt::icmp_echo(smac, dmac, src, dst, *pick(r, &[8u8, 8, 0]), sport, 1),
            _ => pkt::arp(
                smac,
                pkt::mac("ff:ff:ff:ff:ff:ff"),
                1,
                smac,
                src,
                [0; 6],
                dst,
            ),
        };
        if proto != 0 {
            sent.push((proto, src, sport, dst, dport));
        }
        writeln!(steps, "p{port} {}", pkt::hex(&frame)).unwrap();
        if r.gen_bool(0.1) {
            writeln!(steps, "@warp {}", pick(r, &[1000u64, 31000, 61000])).unwrap();
        }
    }
    writeln!(steps, "@ct").unwrap();
    Case {
        groups,
        flows,
        steps,
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = if let Some(h) = v.strip_prefix("0x") {
                u64::from_str_radix(h, 16)
            } else {
                v.parse()
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        }
        Err(_) => default,
    }
}

/// Log lines that are legitimate OVS behaviour for random pipelines.
const EXPECTED_LOG: &[&str] = &[
    "Max recirculation depth exceeded",
    "over max translation depth",
    "ofproto_dpif_upcall",
    // NAT with no free tuple (e.g. ICMP or a fixed dst port colliding).
    // See NAT_EXHAUSTION below: a documented deviation.
    NAT_EXHAUSTION,
];

/// OVS's log line when `nat(...)` finds no free tuple. OVS then lets the
/// packet continue un-NATed as `+new+trk`; flowpath drops it and counts
/// `ct_nat_exhausted` (a documented, tested deviation: see
/// tests/tests/deviations.rs). Cases where OVS hit it are not compared.
const NAT_EXHAUSTION: &str = "Unable to NAT due to tuple space exhaustion";

struct Run {
    cases: usize,
    rejected: usize,
    /// Cases not compared because OVS hit a documented deviation.
    deviations: usize,
    stats: Stats,
    failures: Vec<String>,
    log_notes: Vec<String>,
}

fn run(seed: u64, range: std::ops::Range<u64>, with_flowpath: bool) -> Run {
    let ports = ports();
    let mut sw = OvsSwitch::start(&ports).expect("start OVS");
    let mut out = Run {
        cases: 0,
        rejected: 0,
        deviations: 0,
        stats: Stats::default(),
        failures: Vec::new(),
        log_notes: Vec::new(),
    };
    for i in range {
        let mut r = SmallRng::seed_from_u64(seed.wrapping_add(i));
        let case = gen_case(&mut r);
        if let Some(dir) = std::env::var_os("FLOWPATH_DIFF_DUMP") {
            // Write the case as files `flowpath replay` / `trace` take.
            let d = std::path::Path::new(&dir).join(format!("case{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("flows.txt"), &case.flows).unwrap();
            std::fs::write(d.join("groups.txt"), &case.groups).unwrap();
            std::fs::write(d.join("steps.txt"), &case.steps).unwrap();
            let pl: Vec<String> = ports.iter().map(|(n, p)| format!("{n}={p}")).collect();
            std::fs::write(d.join("ports.txt"), pl.join(",")).unwrap();
        }
        let groups = (!case.groups.is_empty()).then_some(case.groups.as_str());
        let ovs = match sw.replay(&case.flows, groups, &case.steps) {
            Ok(v) => v,
            Err(e) if e.contains("ovs-ofctl -O OpenFlow15 bundle") && !e.contains("br0.mgmt") => {
                if std::env::var_os("FLOWPATH_DIFF_VERBOSE").is_some() {
                    eprintln!("case {i} rejected: {e}");
                }
                out.rejected += 1;
                continue;
            }
            Err(e) => panic!("case {i}: OVS side failed: {e}\nflows:\n{}", case.flows),
        };
        let mut deviation = false;
        for l in sw.new_log_problems().unwrap() {
            deviation |= l.contains(NAT_EXHAUSTION);
            if !EXPECTED_LOG.iter().any(|x| l.contains(x)) {
                out.log_notes.push(format!("case {i}: {l}"));
            }
        }
        if deviation {
            out.deviations += 1;
            continue;
        }
        out.cases += 1;
        let steps = parse_steps(&case.steps).unwrap();
        if !with_flowpath {
            out.stats.packets += steps
                .iter()
                .filter(|s| matches!(s, tests::ovs::Step::Packet { .. }))
                .count();
            continue;
        }
        let failures_before = out.failures.len();
        for cache in [false, true] {
            let label = format!("case {i} (seed {seed:#x}, cache={cache})");
            let res = replay_json(
                &case.flows,
                groups,
                &ports,
                &case.steps,
                &ReplayOptions { cache },
            );
            let res = match res {
                Ok(fp) => compare(&label, &steps, &ovs, &fp),
                Err(e) => Err(format!("{label}: flowpath replay failed: {e:#}")),
            };
            match res {
                Ok(s) => out.stats += s,
                Err(e) => {
                    if out.failures.len() < 5 {
                        out.failures.push(format!(
                            "{e}\n--- groups:\n{}--- flows:\n{}(rerun: FLOWPATH_DIFF_SEED={seed:#x} FLOWPATH_DIFF_CASE={i})",
                            case.groups, case.flows
                        ));
                    } else {
                        out.failures.push(label);
                    }
                }
            }
        }
        if out.failures.len() > failures_before {
            // OVS writes the exhaustion warning to its log asynchronously:
            // before calling a mismatch, make sure OVS did not hit the
            // documented deviation in this case after all.
            for _ in 0..10 {
                std::thread::sleep(std::time::Duration::from_millis(50));
                if sw
                    .new_log_problems()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains(NAT_EXHAUSTION))
                {
                    out.failures.truncate(failures_before);
                    out.deviations += 1;
                    out.cases -= 1;
                    break;
                }
            }
        }
    }
    out
}

#[test]
fn differential_random() {
    if skip_without_ovs("differential_random") {
        return;
    }
    let seed = env_u64("FLOWPATH_DIFF_SEED", 0x5eed);
    let range = match std::env::var("FLOWPATH_DIFF_CASE") {
        Ok(_) => {
            let c = env_u64("FLOWPATH_DIFF_CASE", 0);
            c..c + 1
        }
        Err(_) => 0..env_u64("FLOWPATH_DIFF_CASES", 1000),
    };
    let t = std::time::Instant::now();
    let r = run(seed, range, true);
    println!(
        "differential_random: {} cases ({} rejected by ovs-ofctl, {} skipped as documented NAT-exhaustion deviations), {} packets ({} outputs) and {} ct dumps compared x 2 modes, seed {seed:#x}, {:?}",
        r.cases,
        r.rejected,
        r.deviations,
        r.stats.packets / 2,
        r.stats.outputs / 2,
        r.stats.ct_dumps / 2,
        t.elapsed()
    );
    for n in &r.log_notes {
        println!("ovs-vswitchd: {n}");
    }
    assert!(
        r.deviations * 20 <= r.cases.max(1),
        "too many cases skipped as deviations: {}",
        r.deviations
    );
    assert!(
        r.failures.is_empty(),
        "{} mismatching case runs:\n\n{}",
        r.failures.len(),
        r.failures.join("\n\n")
    );
}

/// The OVS side alone: the generator produces pipelines OVS accepts and
/// the harness runs them (no flowpath). Catches generator/harness breakage
/// while flowpath's replay is still being written.
#[test]
fn random_cases_run_on_ovs() {
    if skip_without_ovs("random_cases_run_on_ovs") {
        return;
    }
    let n = env_u64("FLOWPATH_DIFF_OVS_CASES", 60);
    let t = std::time::Instant::now();
    let r = run(0x5eed, 0..n, false);
    println!(
        "random_cases_run_on_ovs: {} cases ok, {} rejected by ovs-ofctl, {} packets in {:?}",
        r.cases,
        r.rejected,
        r.stats.packets,
        t.elapsed()
    );
    for n in &r.log_notes {
        println!("ovs-vswitchd: {n}");
    }
    assert!(r.rejected * 5 <= r.cases, "too many rejected cases");
    assert!(r.log_notes.is_empty(), "unexpected ovs-vswitchd log lines");
}
