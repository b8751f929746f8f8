//! OpenFlow and conntrack semantics facts, asserted against real OVS
//! (3.1.0, userspace dummy datapath) — and, through [`tests::lab::Both`],
//! against flowpath in lockstep: every packet's outputs and every conntrack
//! dump must be identical on both sides, so each fact is its own
//! differential case. Each test states the fact it pins down. Where OVS contradicted
//! a fact as first written in the design notes, the test asserts what OVS
//! really does and says so.
//!
//! ct_state is observed with a "probe" table that copies the ct fields into
//! the output frame's destination MAC (`move:NXM_NX_CT_STATE[0..7]->
//! NXM_OF_ETH_DST[0..7]` etc.), so one output shows every bit at once:
//! new=0x01 est=0x02 rel=0x04 rpl=0x08 inv=0x10 trk=0x20 snat=0x40 dnat=0x80.

use tests::decode::{fields, summary};
use tests::lab::Both as OvsSwitch;
use tests::ovs::skip_without_ovs;
use tests::pkt::{self, Ipv4, L4, Mac, ip, mac, tcp_flags::*};

const A_MAC: &str = "02:00:00:00:00:0a";
const B_MAC: &str = "02:00:00:00:00:0b";

fn a_mac() -> Mac {
    mac(A_MAC)
}
fn b_mac() -> Mac {
    mac(B_MAC)
}

/// A switch with ports p1..p5 = 1..5 and `flows` installed.
fn lab(flows: &str) -> OvsSwitch {
    let ports: Vec<(String, u32)> = (1..=5).map(|i| (format!("p{i}"), i)).collect();
    let mut sw = OvsSwitch::start(&ports).expect("start OVS");
    sw.replace_flows(flows).expect("flows");
    sw
}

/// Inject and return the outputs.
fn send(sw: &mut OvsSwitch, port: &str, frame: &[u8]) -> Vec<(String, Vec<u8>)> {
    sw.inject(port, frame).expect("inject");
    let out = sw.take_outputs().expect("outputs");
    for (p, f) in &out {
        eprintln!("    -> {p}: {}", summary(f));
    }
    out
}

/// Output ports only.
fn ports_of(out: &[(String, Vec<u8>)]) -> Vec<&str> {
    out.iter().map(|(p, _)| p.as_str()).collect()
}

/// Probe table 9: dl_dst[0..7] = ct_state, dl_dst[8..23] = ct_zone,
/// dl_src[0..7] = ct_mark, then out p5.
const PROBE: &str = "table=9,actions=move:NXM_NX_CT_STATE[0..7]->NXM_OF_ETH_DST[0..7],\
move:NXM_NX_CT_ZONE[]->NXM_OF_ETH_DST[8..23],move:NXM_NX_CT_MARK[0..7]->NXM_OF_ETH_SRC[0..7],output:p5\n";

fn state_str(bits: u8) -> String {
    let names = ["new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat"];
    let mut s = String::new();
    for (i, n) in names.iter().enumerate() {
        if bits & (1 << i) != 0 {
            s += "+";
            s += n;
        }
    }
    if s.is_empty() { "0".into() } else { s }
}

/// The ct_state recorded by the probe in the single p5 output.
fn probed(out: &[(String, Vec<u8>)]) -> String {
    let f: Vec<&Vec<u8>> = out
        .iter()
        .filter(|(p, _)| p == "p5")
        .map(|(_, f)| f)
        .collect();
    assert_eq!(f.len(), 1, "expected one probe output, got {out:?}");
    state_str(f[0][5])
}

fn tcp_ab(seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    pkt::tcp(
        a_mac(),
        b_mac(),
        (ip("10.0.0.1"), 40000),
        (ip("10.0.0.2"), 80),
        seq,
        ack,
        flags,
        payload,
    )
}

fn tcp_ba(seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    pkt::tcp(
        b_mac(),
        a_mac(),
        (ip("10.0.0.2"), 80),
        (ip("10.0.0.1"), 40000),
        seq,
        ack,
        flags,
        payload,
    )
}

fn udp_ab(sport: u16) -> Vec<u8> {
    pkt::udp(
        a_mac(),
        b_mac(),
        (ip("10.0.0.1"), sport),
        (ip("10.0.0.2"), 53),
        b"q",
    )
}

fn check_log(sw: &mut OvsSwitch, allowed: &[&str]) {
    let problems: Vec<String> = sw
        .new_log_problems()
        .unwrap()
        .into_iter()
        .filter(|l| !allowed.iter().any(|a| l.contains(a)))
        .collect();
    assert!(problems.is_empty(), "ovs-vswitchd log: {problems:#?}");
}

macro_rules! need_ovs {
    ($name:expr) => {
        if skip_without_ovs($name) {
            return;
        }
    };
}

/// Fact 1: `output:N` to the packet's own in_port is silently dropped;
/// `IN_PORT` sends it back out of the port it came in on.
#[test]
fn fact1_output_to_in_port_dropped_in_port_sends_back() {
    need_ovs!("fact1");
    let mut sw = lab("table=0,in_port=1,tcp,actions=output:1,output:2\n\
         table=0,in_port=1,udp,actions=IN_PORT\n");
    let out = send(&mut sw, "p1", &tcp_ab(1, 0, SYN, b""));
    assert_eq!(ports_of(&out), vec!["p2"]);
    let u = udp_ab(1000);
    let out = send(&mut sw, "p1", &u);
    assert_eq!(out, vec![("p1".to_string(), u)]);
    check_log(&mut sw, &[]);
}

/// Fact 2: output copies the packet as it is at that point:
/// `output:2,output:2,mod_nw_dst:X,output:2` emits two unmodified copies
/// then one modified copy, in that order on port 2.
#[test]
fn fact2_output_snapshots_before_later_mods() {
    need_ovs!("fact2");
    let mut sw =
        lab("table=0,in_port=1,ip,actions=output:2,output:2,mod_nw_dst:10.9.9.9,output:2\n");
    let inp = tcp_ab(1, 0, SYN, b"");
    let out = send(&mut sw, "p1", &inp);
    assert_eq!(ports_of(&out), vec!["p2", "p2", "p2"]);
    assert_eq!(out[0].1, inp);
    assert_eq!(out[1].1, inp);
    let f = fields(&out[2].1);
    assert_eq!(f["ip_dst"], "10.9.9.9");
    assert_eq!(f["csum"], "ok");
    check_log(&mut sw, &[]);
}

/// Fact 3: `mod_nw_src/dst`, `mod_tp_src/dst`, `set_field` of IPs/ports,
/// `mod_nw_tos`, `dec_ttl` and NAT all leave valid IPv4 and TCP/UDP
/// checksums.
#[test]
fn fact3_rewrites_fix_checksums() {
    need_ovs!("fact3");
    let mut sw = lab(
        "table=0,in_port=1,tcp,actions=mod_nw_src:10.1.1.1,mod_nw_dst:10.2.2.2,mod_tp_src:1111,mod_tp_dst:2222,output:2,\
         set_field:10.3.3.3->ip_dst,set_field:3333->tcp_dst,mod_nw_tos:16,dec_ttl,output:3,\
         ct(commit,zone=3,nat(src=10.7.7.7:5000)),output:4\n\
         table=0,in_port=1,udp,actions=mod_nw_src:10.1.1.1,mod_tp_dst:5353,output:2,\
         ct(commit,zone=3,nat(dst=10.8.8.8:53)),output:4\n",
    );
    let out = send(&mut sw, "p1", &tcp_ab(100, 0, SYN, b""));
    assert_eq!(ports_of(&out), vec!["p2", "p3", "p4"]);
    for (p, f) in &out {
        assert!(pkt::checksums_ok(f), "{p}: {}", summary(f));
    }
    let f3 = fields(&out[1].1);
    assert_eq!(
        (
            f3["ip_dst"].as_str(),
            f3["dport"].as_str(),
            f3["ttl"].as_str(),
            f3["tos"].as_str()
        ),
        ("10.3.3.3", "3333", "63", "16")
    );
    let out = send(&mut sw, "p1", &udp_ab(999));
    assert_eq!(ports_of(&out), vec!["p2", "p4"]);
    for (p, f) in &out {
        assert!(pkt::checksums_ok(f), "{p}: {}", summary(f));
    }
    check_log(&mut sw, &[]);
}

/// Fact 4: `ct(table=N)` forks. The copy resumes at table N with the ct
/// fields set; the original continues after the ct action, untracked
/// (ct_state 0 for any later match) and byte-for-byte unchanged.
///
/// CONTRARY to the design notes' guess, a `ct(commit,nat(...))` WITHOUT
/// `table` DOES rewrite the packet that continues in the same action list:
/// the outputs after it carry the NATed addresses/ports (with valid
/// checksums), while the ct fields seen by later matches are cleared
/// (ct_state=0, ct_zone=0), exactly as for an un-NATed `ct()`.
#[test]
fn fact4_ct_forks_and_nat_without_table_rewrites() {
    need_ovs!("fact4");
    let flows = format!(
        "table=0,in_port=1,tcp,actions=ct(table=9,zone=5),output:2\n\
         table=0,in_port=1,udp,actions=ct(commit,zone=6,nat(dst=10.0.0.99:5353)),output:2,resubmit(,9)\n\
         table=0,in_port=3,tcp,actions=ct(commit,zone=7,nat(src=10.0.0.77)),output:2\n\
         table=0,in_port=4,tcp,actions=ct(zone=7,nat),output:2\n\
         {PROBE}"
    );
    let mut sw = lab(&flows);
    let inp = tcp_ab(1, 0, SYN, b"");
    let out = send(&mut sw, "p1", &inp);
    let mut ps = ports_of(&out);
    ps.sort();
    assert_eq!(ps, vec!["p2", "p5"]);
    let orig = out.iter().find(|(p, _)| p == "p2").unwrap();
    assert_eq!(orig.1, inp, "original continues unchanged");
    assert_eq!(probed(&out), "+new+trk");
    let p5 = &out.iter().find(|(p, _)| p == "p5").unwrap().1;
    assert_eq!(p5[3..5], [0, 5], "probe sees ct_zone 5");

    // ct(commit, nat(dst)) without table: committed, packet NATed, and the
    // original's ct_state/zone (seen via the probe) are 0.
    let u = udp_ab(1234);
    let out = send(&mut sw, "p1", &u);
    assert_eq!(ports_of(&out), vec!["p2", "p5"]);
    for (p, f) in &out {
        let fl = fields(f);
        assert_eq!(
            (
                fl["ip_dst"].as_str(),
                fl["dport"].as_str(),
                fl["csum"].as_str()
            ),
            ("10.0.0.99", "5353", "ok"),
            "{p} is DNATed"
        );
    }
    assert_eq!(probed(&out), "0");
    assert_eq!(out[1].1[3..5], [0, 0], "ct_zone cleared too");
    let dump = sw.dump_conntrack(Some(6)).unwrap();
    assert_eq!(
        dump,
        vec![
            "udp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=1234,dport=53),\
              reply=(src=10.0.0.99,dst=10.0.0.1,sport=5353,dport=1234),zone=6"
                .to_string()
        ]
    );
    // Same for SNAT.
    let inp = tcp_ab(1, 0, SYN, b"");
    let out = send(&mut sw, "p3", &inp);
    assert_eq!(ports_of(&out), vec!["p2"]);
    let fl = fields(&out[0].1);
    assert_eq!(
        (
            fl["ip_src"].as_str(),
            fl["sport"].as_str(),
            fl["csum"].as_str()
        ),
        ("10.0.0.77", "40000", "ok")
    );
    let dump = sw.dump_conntrack(Some(7)).unwrap();
    assert_eq!(
        dump,
        vec![
            "tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=40000,dport=80),\
              reply=(src=10.0.0.2,dst=10.0.0.77,sport=80,dport=40000),zone=7,\
              protoinfo=(state=SYN_SENT)"
                .to_string()
        ]
    );
    // A later packet of that connection through ct(nat) without table is
    // rewritten by the existing connection's NAT.
    let out = send(&mut sw, "p4", &tcp_ab(2, 0, ACK, b""));
    assert_eq!(ports_of(&out), vec!["p2"]);
    assert_eq!(fields(&out[0].1)["ip_src"], "10.0.0.77");
    check_log(&mut sw, &[]);
}

/// Fact 5: registers, pkt_mark and metadata survive recirculation through
/// `ct(table=N)`.
#[test]
fn fact5_registers_and_pkt_mark_survive_recirculation() {
    need_ovs!("fact5");
    let mut sw = lab(
        "table=0,in_port=1,ip,actions=load:0x5->NXM_NX_REG3[],set_field:0x7->pkt_mark,\
         load:0xab->OXM_OF_METADATA[],load:0x1234->NXM_NX_XXREG1[0..15],ct(table=1,zone=1)\n\
         table=1,reg3=5,pkt_mark=7,metadata=0xab,actions=output:2\n\
         table=1,priority=0,actions=output:3\n",
    );
    let out = send(&mut sw, "p1", &tcp_ab(1, 0, SYN, b""));
    assert_eq!(ports_of(&out), vec!["p2"]);
    check_log(&mut sw, &[]);
}

/// Fact 6: a table miss drops (fail-mode secure, no miss flow); the highest
/// priority match wins; resubmit depth is bounded — but only resubmits to
/// the SAME or an EARLIER table count (ofproto-dpif-xlate.c:
/// `deepens = table_id <= old_table_id`; group buckets count too). A forward
/// chain 0 -> 1 -> ... -> 253 works. Within one table, 64 nested resubmits
/// work and the 65th fails (MAX_DEPTH 64, checked before each resubmit:
/// depth >= 64 is an error). A translation error drops the WHOLE packet,
/// including outputs made before the failing resubmit, and ovs-vswitchd
/// logs "over max translation depth 64". (There is also a cap of 4096
/// resubmits in total, MAX_RESUBMITS, not exercised here.)
#[test]
fn fact6_miss_drops_priority_wins_resubmit_depth() {
    need_ovs!("fact6");
    let mut sw = lab("table=0,priority=10,in_port=1,tcp,actions=output:2\n\
         table=0,priority=20,in_port=1,tcp,tp_dst=80,actions=output:3\n\
         table=0,priority=5,in_port=1,udp,actions=goto_table:1\n");
    let out = send(&mut sw, "p1", &tcp_ab(1, 0, SYN, b""));
    assert_eq!(ports_of(&out), vec!["p3"]);
    assert!(
        send(&mut sw, "p1", &udp_ab(5)).is_empty(),
        "miss in table 1 drops"
    );
    assert!(
        send(&mut sw, "p1", &icmp_ab()).is_empty(),
        "miss in table 0 drops"
    );

    // Resubmit chain table 0 -> 1 -> ... -> n, output at table n; also an
    // output early on (table 0) to see whether it survives a failure.
    let chain = |n: u32| -> String {
        let mut s = String::from("table=0,in_port=1,actions=output:4,resubmit(,1)\n");
        for t in 1..n {
            s += &format!("table={t},actions=resubmit(,{})\n", t + 1);
        }
        s += &format!("table={n},actions=output:2\n");
        s
    };
    for n in [64u32, 65, 200, 253] {
        sw.replace_flows(&chain(n)).unwrap();
        let out = send(&mut sw, "p1", &tcp_ab(1, 0, SYN, b""));
        let mut ps = ports_of(&out);
        ps.sort();
        assert_eq!(ps, vec!["p2", "p4"], "table chain of {n}");
    }
    // Nested resubmits within one table, counting in reg0.
    let nest = |n: u32| -> String {
        let mut s = String::from("table=0,in_port=1,actions=output:4,resubmit(,1)\n");
        for k in 0..n {
            s += &format!(
                "table=1,reg0={k},actions=load:{}->NXM_NX_REG0[],resubmit(,1)\n",
                k + 1
            );
        }
        s += &format!("table=1,reg0={n},actions=output:2\n");
        s
    };
    let mut max_ok = 0;
    for n in [62u32, 63, 64, 65, 66, 127, 128, 129] {
        sw.replace_flows(&nest(n)).unwrap();
        let out = send(&mut sw, "p1", &tcp_ab(1, 0, SYN, b""));
        let mut ps = ports_of(&out);
        ps.sort();
        eprintln!("nest {n}: {ps:?}");
        if ps == vec!["p2", "p4"] {
            max_ok = n;
        } else {
            assert!(
                out.is_empty(),
                "failed translation drops everything: {out:?}"
            );
        }
    }
    assert_eq!(max_ok, 64, "deepest working nested resubmit");
    // A self-loop is dropped too.
    sw.replace_flows("table=0,in_port=1,actions=output:3,resubmit(,0)\n")
        .unwrap();
    assert!(send(&mut sw, "p1", &tcp_ab(1, 0, SYN, b"")).is_empty());
    check_log(
        &mut sw,
        &["over max translation depth", "ofproto_dpif_upcall"],
    );
}

fn icmp_ab() -> Vec<u8> {
    pkt::icmp_echo(a_mac(), b_mac(), ip("10.0.0.1"), ip("10.0.0.2"), 8, 7, 1)
}

/// Fact 8 (found while building the NodePort scenario): the userspace
/// datapath allows at most 6 nested recirculations (dpif-netdev.c
/// MAX_RECIRC_DEPTH 6). A 7th `ct(table=..)` drops that packet in the
/// datapath and logs "Packet dropped. Max recirculation depth exceeded.";
/// unlike a translation error, outputs already executed before the failing
/// recirculation are still sent.
#[test]
fn fact8_recirculation_depth_is_6() {
    need_ovs!("fact8");
    for n in [6u32, 7] {
        let mut flows = String::new();
        for t in 0..n {
            flows += &format!("table={t},ip,actions=output:2,ct(table={},zone=1)\n", t + 1);
        }
        flows += &format!("table={n},ip,actions=output:3\n");
        let mut sw = lab(&flows);
        let out = send(&mut sw, "p1", &udp_ab(9));
        let n2 = out.iter().filter(|(p, _)| p == "p2").count();
        let n3 = out.iter().filter(|(p, _)| p == "p3").count();
        if n == 6 {
            assert_eq!((n2, n3), (6, 1), "6 recirculations work");
            check_log(&mut sw, &[]);
        } else {
            assert_eq!((n2, n3), (7, 0), "the 7th recirculation drops");
            // The warning is logged by OVS's handler after the packet has
            // gone: poll for it (up to 5 s) instead of reading once.
            let mut log = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !log
                .iter()
                .any(|l: &String| l.contains("Max recirculation depth exceeded"))
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
                log.extend(sw.new_log_problems().unwrap());
            }
            assert!(
                log.iter()
                    .any(|l| l.contains("Max recirculation depth exceeded")),
                "{log:?}"
            );
        }
    }
}

/// Fact 7: frames are not padded: a 42-byte ARP goes out as 42 bytes.
#[test]
fn fact7_frames_not_padded() {
    need_ovs!("fact7");
    let mut sw = lab("table=0,in_port=1,actions=output:2\n");
    let a = pkt::arp(
        a_mac(),
        mac("ff:ff:ff:ff:ff:ff"),
        1,
        a_mac(),
        ip("10.0.0.1"),
        [0; 6],
        ip("10.0.0.2"),
    );
    assert_eq!(a.len(), 42);
    let out = send(&mut sw, "p1", &a);
    assert_eq!(out, vec![("p2".to_string(), a)]);
    check_log(&mut sw, &[]);
}

/// Conntrack pipeline for the ct facts: p1 = A side, p3 = B side; both go
/// through ct(commit, zone=9) then the probe. Replies from p3.
fn ct_lab() -> OvsSwitch {
    lab(&format!(
        "table=0,ip,actions=ct(commit,table=9,zone=9)\n{PROBE}"
    ))
}

/// SYN-ACK cannot create a connection (+inv, nothing committed); a bare ACK
/// can (+new, mid-stream pickup); retransmitted SYN stays +new; a second
/// original-direction packet before any reply: see assertions.
#[test]
fn fact_ct_tcp_new_rules() {
    need_ovs!("fact_ct_tcp_new_rules");
    let mut sw = ct_lab();
    let out = send(&mut sw, "p1", &tcp_ab(1000, 5, SYN | ACK, b""));
    assert_eq!(probed(&out), "+inv+trk", "SYN-ACK first");
    assert!(sw.dump_conntrack(None).unwrap().is_empty());
    sw.flush_conntrack().unwrap();

    let out = send(&mut sw, "p1", &tcp_ab(1000, 5, ACK, b""));
    assert_eq!(probed(&out), "+new+trk", "bare ACK first");
    assert_eq!(sw.dump_conntrack(None).unwrap().len(), 1);
    sw.flush_conntrack().unwrap();

    let out = send(&mut sw, "p1", &tcp_ab(1000, 0, SYN, b""));
    assert_eq!(probed(&out), "+new+trk");
    let out = send(&mut sw, "p1", &tcp_ab(1000, 0, SYN, b""));
    assert_eq!(probed(&out), "+new+trk", "retransmitted SYN");
    let out = send(&mut sw, "p1", &tcp_ab(1001, 0, ACK, b""));
    let second = probed(&out);
    eprintln!("second original-direction non-SYN before reply: {second}");
    assert_eq!(
        second, "+est+trk",
        "second original-direction non-SYN before reply"
    );
    check_log(&mut sw, &[]);
}

/// The full handshake: SYN +new, SYN-ACK +est+rpl, data both ways +est, FIN.
/// Out-of-window data is +inv while a zero-payload ACK is exempt.
#[test]
fn fact_ct_tcp_window() {
    need_ovs!("fact_ct_tcp_window");
    let mut sw = ct_lab();
    assert_eq!(
        probed(&send(&mut sw, "p1", &tcp_ab(1000, 0, SYN, b""))),
        "+new+trk"
    );
    assert_eq!(
        probed(&send(&mut sw, "p3", &tcp_ba(5000, 1001, SYN | ACK, b""))),
        "+est+rpl+trk"
    );
    assert_eq!(
        probed(&send(&mut sw, "p1", &tcp_ab(1001, 5001, ACK, b""))),
        "+est+trk"
    );
    assert_eq!(
        probed(&send(
            &mut sw,
            "p1",
            &tcp_ab(1001, 5001, ACK | PSH, b"hello")
        )),
        "+est+trk"
    );
    // Data far outside the window (seq + 2^31).
    let far = 1006u32.wrapping_add(0x8000_0000);
    let oow = probed(&send(&mut sw, "p1", &tcp_ab(far, 5001, ACK | PSH, b"x")));
    eprintln!("out-of-window data: {oow}");
    assert_eq!(oow, "+inv+trk");
    let oow_ack = probed(&send(&mut sw, "p1", &tcp_ab(far, 5001, ACK, b"")));
    eprintln!("out-of-window zero-payload ACK: {oow_ack}");
    assert_eq!(oow_ack, "+est+trk");
    // Reply data, then FINs both ways.
    assert_eq!(
        probed(&send(
            &mut sw,
            "p3",
            &tcp_ba(5001, 1006, ACK | PSH, b"world")
        )),
        "+est+rpl+trk"
    );
    assert_eq!(
        probed(&send(&mut sw, "p1", &tcp_ab(1006, 5006, FIN | ACK, b""))),
        "+est+trk"
    );
    assert_eq!(
        probed(&send(&mut sw, "p3", &tcp_ba(5006, 1007, FIN | ACK, b""))),
        "+est+rpl+trk"
    );
    assert_eq!(
        probed(&send(&mut sw, "p1", &tcp_ab(1007, 5007, ACK, b""))),
        "+est+trk"
    );
    let dump = sw.dump_conntrack(Some(9)).unwrap();
    eprintln!("after close: {dump:?}");
    assert_eq!(dump.len(), 1);
    assert!(dump[0].contains("state=TIME_WAIT"), "{dump:?}");
    check_log(&mut sw, &[]);
}

/// A bad IPv4 header checksum or a bad L4 checksum makes the packet +inv.
#[test]
fn fact_ct_bad_checksums_invalid() {
    need_ovs!("fact_ct_bad_checksums_invalid");
    let mut sw = ct_lab();
    for (bad_ip, bad_l4, proto) in [
        (true, false, "tcp"),
        (false, true, "tcp"),
        (false, true, "udp"),
        (false, true, "icmp"),
    ] {
        let l4 = match proto {
            "tcp" => L4::Tcp {
                sport: 1,
                dport: 2,
                seq: 1,
                ack: 0,
                flags: SYN,
                win: 100,
                payload: vec![],
            },
            "udp" => L4::Udp {
                sport: 1,
                dport: 2,
                payload: vec![1],
            },
            _ => L4::Icmp {
                ty: 8,
                code: 0,
                id: 1,
                seq: 1,
                payload: vec![],
            },
        };
        let mut p = Ipv4::new(ip("10.0.0.1"), ip("10.0.0.2"), l4);
        p.bad_ip_csum = bad_ip;
        p.bad_l4_csum = bad_l4;
        let out = send(&mut sw, "p1", &pkt::eth_ipv4(a_mac(), b_mac(), &p));
        assert_eq!(
            probed(&out),
            "+inv+trk",
            "{proto} bad_ip={bad_ip} bad_l4={bad_l4}"
        );
    }
    assert!(sw.dump_conntrack(None).unwrap().is_empty());
    check_log(&mut sw, &[]);
}

/// NAT is applied at most once per connection per zone: a second
/// ct(nat(dst=other)) in the same zone keeps the first translation. The
/// recirculated copy after ct(commit,nat(dst)) is +new+trk+dnat; the reply
/// of the DNATed connection is +est+rpl+trk+snat: the bit names the
/// rewrite applied to THIS packet (un-DNAT of a reply rewrites its source).
/// Likewise an SNAT original is +new+trk+snat.
#[test]
fn fact_ct_nat_bits_and_once_per_zone() {
    need_ovs!("fact_ct_nat_bits_and_once_per_zone");
    let mut sw = lab(&format!(
        "table=0,in_port=1,tcp,actions=ct(commit,table=1,zone=9,nat(dst=10.0.0.50:8080))\n\
         table=1,ip,actions=resubmit(,9),ct(commit,table=2,zone=9,nat(dst=10.0.0.60:9090))\n\
         table=2,actions=output:p2\n\
         table=0,in_port=3,tcp,actions=ct(table=9,zone=9,nat)\n\
         table=0,in_port=4,udp,actions=ct(commit,table=9,zone=4,nat(src=10.0.0.44))\n\
         {PROBE}"
    ));
    let out = send(&mut sw, "p1", &tcp_ab(1000, 0, SYN, b""));
    assert_eq!(probed(&out), "+new+trk+dnat");
    let second = &out.iter().find(|(p, _)| p == "p2").unwrap().1;
    let f = fields(second);
    assert_eq!(
        (f["ip_dst"].as_str(), f["dport"].as_str()),
        ("10.0.0.50", "8080"),
        "second nat in the same zone is a no-op"
    );
    // Reply from the endpoint: un-DNATed back to what A sent to.
    let reply = pkt::tcp(
        b_mac(),
        a_mac(),
        (ip("10.0.0.50"), 8080),
        (ip("10.0.0.1"), 40000),
        5000,
        1001,
        SYN | ACK,
        b"",
    );
    let out = send(&mut sw, "p3", &reply);
    let st = probed(&out);
    eprintln!("reply of DNAT connection: {st}");
    assert_eq!(st, "+est+rpl+trk+snat");
    let f = fields(&out[0].1);
    assert_eq!(
        (f["ip_src"].as_str(), f["sport"].as_str()),
        ("10.0.0.2", "80")
    );
    assert_eq!(f["csum"], "ok");
    // SNAT original direction: +new+trk+snat.
    let out = send(&mut sw, "p4", &udp_ab(7));
    assert_eq!(probed(&out), "+new+trk+snat");
    let dump = sw.dump_conntrack(None).unwrap();
    eprintln!("{dump:#?}");
    check_log(&mut sw, &[]);
}

/// nat(src=IP) keeps the source port when it is free; on a clash (a second
/// client with the same source port to the same destination) OVS picks
/// another port: see the assertion for which.
#[test]
fn fact_ct_snat_port_clash() {
    need_ovs!("fact_ct_snat_port_clash");
    let mut sw = lab(
        "table=0,in_port=1,tcp,actions=ct(commit,table=1,zone=2,nat(src=10.0.0.100)),output:p2\n\
         table=0,in_port=1,udp,actions=ct(commit,table=1,zone=2,nat(src=10.0.0.100)),output:p2\n\
         table=1,actions=output:p3\n",
    );
    let mut got = Vec::new();
    for proto in ["tcp", "udp"] {
        for (i, client) in ["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
            .iter()
            .enumerate()
        {
            let f = if proto == "tcp" {
                pkt::tcp(
                    a_mac(),
                    b_mac(),
                    (ip(client), 40000),
                    (ip("10.0.0.2"), 80),
                    1,
                    0,
                    SYN,
                    b"",
                )
            } else {
                pkt::udp(
                    a_mac(),
                    b_mac(),
                    (ip(client), 40000),
                    (ip("10.0.0.2"), 53),
                    b"x",
                )
            };
            let out = send(&mut sw, "p1", &f);
            let n = &out.iter().find(|(p, _)| p == "p3").unwrap().1;
            let fl = fields(n);
            assert_eq!(fl["ip_src"], "10.0.0.100");
            got.push((proto, i, fl["sport"].clone()));
        }
    }
    eprintln!("snat ports: {got:?}");
    let dump = sw.dump_conntrack(Some(2)).unwrap();
    eprintln!("{dump:#?}");
    let tcp_ports: Vec<&str> = got
        .iter()
        .filter(|g| g.0 == "tcp")
        .map(|g| g.2.as_str())
        .collect();
    assert_eq!(tcp_ports[0], "40000", "free port is kept");
    // lib/conntrack.c nat_get_unique_l4: without a port range, try the
    // original source port, then the following ones (wrapping inside its
    // class: 1-511, 600-1023 or 1024-65535), up to 128 tries, before random
    // starting points. So the 2nd..4th clients get 40001, 40002, 40003.
    assert_eq!(tcp_ports, vec!["40000", "40001", "40002", "40003"]);
    let udp_ports: Vec<&str> = got
        .iter()
        .filter(|g| g.0 == "udp")
        .map(|g| g.2.as_str())
        .collect();
    assert_eq!(udp_ports, vec!["40000", "40001", "40002", "40003"]);
    check_log(&mut sw, &[]);
}

/// Timeouts through time/warp (OVS 3.1 lib/conntrack-tp.c defaults):
/// UDP first/single 60 s, UDP after a reply 30 s, TCP SYN_SENT 30 s. A
/// connection is gone as soon as the full timeout has passed since its last
/// packet: after exactly 60000 ms (UDP first) or 30000 ms the next packet
/// finds no connection (alive iff elapsed < timeout).
///
/// NOTE: a UDP (and any non-TCP, non-ICMP) packet in the original
/// direction stays +new until a reply has been seen (conntrack-other.c
/// returns CT_UPDATE_VALID_NEW until OTHERS_BIDIR); ICMP echo requests too
/// until the echo reply. So UDP expiry is observed through the reply.
#[test]
fn fact_ct_timeouts() {
    need_ovs!("fact_ct_timeouts");
    let mut sw = ct_lab();
    let udp_ba = || {
        pkt::udp(
            b_mac(),
            a_mac(),
            (ip("10.0.0.2"), 53),
            (ip("10.0.0.1"), 1),
            b"r",
        )
    };
    assert_eq!(probed(&send(&mut sw, "p1", &udp_ab(1))), "+new+trk");
    assert_eq!(
        probed(&send(&mut sw, "p1", &udp_ab(1))),
        "+new+trk",
        "UDP stays +new without a reply"
    );
    assert_eq!(probed(&send(&mut sw, "p3", &udp_ba())), "+est+rpl+trk");
    assert_eq!(probed(&send(&mut sw, "p1", &udp_ab(1))), "+est+trk");

    let mut seen = Vec::new();
    // UDP first: A->B, warp, reply B->A.
    for ms in [59_000u64, 60_000, 60_001] {
        sw.flush_conntrack().unwrap();
        send(&mut sw, "p1", &udp_ab(1));
        sw.warp(ms).unwrap();
        let st = probed(&send(&mut sw, "p3", &udp_ba()));
        seen.push(("udp_first", ms, st));
    }
    // UDP after a reply: A->B, B->A, warp, A->B.
    for ms in [29_000u64, 30_000, 30_001] {
        sw.flush_conntrack().unwrap();
        send(&mut sw, "p1", &udp_ab(1));
        send(&mut sw, "p3", &udp_ba());
        sw.warp(ms).unwrap();
        let st = probed(&send(&mut sw, "p1", &udp_ab(1)));
        seen.push(("udp_bidir", ms, st));
    }
    // TCP SYN_SENT: SYN, warp, ACK.
    for ms in [29_000u64, 30_000, 30_001] {
        sw.flush_conntrack().unwrap();
        send(&mut sw, "p1", &tcp_ab(1, 0, SYN, b""));
        sw.warp(ms).unwrap();
        let st = probed(&send(&mut sw, "p1", &tcp_ab(2, 0, ACK, b"")));
        seen.push(("tcp_syn_sent", ms, st));
    }
    eprintln!("{seen:#?}");
    let got: Vec<String> = seen
        .iter()
        .map(|(k, ms, st)| format!("{k} {ms} {st}"))
        .collect();
    assert_eq!(
        got,
        vec![
            "udp_first 59000 +est+rpl+trk",
            "udp_first 60000 +new+trk",
            "udp_first 60001 +new+trk",
            "udp_bidir 29000 +est+trk",
            "udp_bidir 30000 +new+trk",
            "udp_bidir 30001 +new+trk",
            "tcp_syn_sent 29000 +est+trk",
            "tcp_syn_sent 30000 +new+trk",
            "tcp_syn_sent 30001 +new+trk",
        ]
    );
    check_log(&mut sw, &[]);
}

/// `OvsSwitch::inject` returns only once the frame is fully processed, even
/// through recirculation and conntrack (raw `netdev-dummy/receive` is not
/// synchronous; see `tests::ovs`): every output is in the pcaps at once and
/// none turns up late.
#[test]
fn receive_is_synchronous() {
    need_ovs!("receive_is_synchronous");
    let mut sw = lab(
        "table=0,in_port=1,udp,actions=ct(commit,table=1,zone=1,nat(src=10.9.0.1)),output:3\n\
         table=1,ip,actions=ct(table=2,zone=2),output:4\n\
         table=2,actions=output:2\n",
    );
    let start = std::time::Instant::now();
    for i in 0..300u16 {
        let out = sw
            .inject("p1", &udp_ab(1000 + i))
            .and_then(|_| sw.take_outputs());
        let out = out.unwrap();
        assert_eq!(out.len(), 3, "packet {i}: {out:?}");
    }
    eprintln!("300 packets in {:?}", start.elapsed());
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(sw.take_outputs().unwrap().is_empty(), "no late outputs");
    check_log(&mut sw, &[]);
}

/// Start-up and tear-down time of a fresh switch (informational; asserts a
/// generous bound so per-scenario switches stay affordable).
#[test]
fn startup_is_fast() {
    need_ovs!("startup_is_fast");
    let t = std::time::Instant::now();
    let sw = lab("table=0,actions=drop\n");
    let up = t.elapsed();
    drop(sw);
    eprintln!("start {up:?}, total with teardown {:?}", t.elapsed());
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}
