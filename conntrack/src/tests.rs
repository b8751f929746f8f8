//! Golden scenarios: each OVS behaviour flowpath must reproduce, as a test.

use crate::*;
pub(crate) mod cross_core;

pub(crate) const fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

pub(crate) const SYN: u16 = 0x02;
pub(crate) const ACK: u16 = 0x10;
pub(crate) const FIN: u16 = 0x01;
pub(crate) const RST: u16 = 0x04;
pub(crate) const PSH: u16 = 0x08;

pub(crate) fn tcp(
    src: (u32, u16),
    dst: (u32, u16),
    flags: u16,
    seq: u32,
    ack: u32,
    len: u32,
) -> CtPacket {
    CtPacket {
        tuple: Tuple {
            src: src.0,
            dst: dst.0,
            sport: src.1,
            dport: dst.1,
            proto: 6,
        },
        l4: L4::Tcp(TcpInfo {
            flags,
            seq,
            ack,
            win: 64240,
            wscale: if flags & SYN != 0 { Some(7) } else { None },
            payload_len: len,
        }),
        valid: true,
        fragment: false,
    }
}

pub(crate) fn udp(src: (u32, u16), dst: (u32, u16)) -> CtPacket {
    CtPacket {
        tuple: Tuple {
            src: src.0,
            dst: dst.0,
            sport: src.1,
            dport: dst.1,
            proto: 17,
        },
        l4: L4::Udp,
        valid: true,
        fragment: false,
    }
}

pub(crate) fn echo(src: u32, dst: u32, id: u16, ty: u8) -> CtPacket {
    CtPacket {
        tuple: Tuple {
            src,
            dst,
            sport: id,
            dport: id,
            proto: 1,
        },
        l4: L4::IcmpQuery { ty, code: 0 },
        valid: true,
        fragment: false,
    }
}

pub(crate) fn icmp_err(src: u32, dst: u32, ty: u8, inner: Tuple) -> CtPacket {
    CtPacket {
        tuple: Tuple {
            src,
            dst,
            sport: 0,
            dport: 0,
            proto: 1,
        },
        l4: L4::IcmpError { ty, code: 3, inner },
        valid: true,
        fragment: false,
    }
}

/// Apply a rewrite like the datapath does.
pub(crate) fn apply(p: &CtPacket, r: &CtResult) -> CtPacket {
    let mut q = *p;
    if let Some(rw) = r.rewrite {
        q.tuple = rw.outer;
        if let (L4::IcmpError { ty, code, .. }, Some(i)) = (p.l4, rw.inner) {
            q.l4 = L4::IcmpError { ty, code, inner: i };
        }
    }
    q
}

pub(crate) fn ct(zone: u16) -> CtCall {
    CtCall {
        zone,
        ..CtCall::default()
    }
}
pub(crate) fn ct_nat(zone: u16) -> CtCall {
    CtCall {
        zone,
        nat: Some(NatSpec::Existing),
        ..CtCall::default()
    }
}
pub(crate) fn commit(zone: u16) -> CtCall {
    CtCall {
        zone,
        commit: true,
        ..CtCall::default()
    }
}
pub(crate) fn range(addr: u32, port: u16) -> NatRange {
    NatRange {
        addr_min: addr,
        addr_max: addr,
        port_min: port,
        port_max: port,
        ..NatRange::default()
    }
}
pub(crate) fn commit_dnat(zone: u16, addr: u32, port: u16) -> CtCall {
    CtCall {
        zone,
        commit: true,
        nat: Some(NatSpec::Dst(range(addr, port))),
        ..CtCall::default()
    }
}
pub(crate) fn commit_snat(zone: u16, addr: u32) -> CtCall {
    CtCall {
        zone,
        commit: true,
        nat: Some(NatSpec::Src(range(addr, 0))),
        ..CtCall::default()
    }
}

const NEW_TRK: u8 = cs::NEW | cs::TRK;
const EST_TRK: u8 = cs::EST | cs::TRK;
const EST_RPL: u8 = cs::EST | cs::RPL | cs::TRK;
const INV_TRK: u8 = cs::INV | cs::TRK;

/// A shard plus a clock; `run` sends a packet through a list of ct() calls
/// in order (like a pipeline with recirculations), applying rewrites.
pub(crate) struct Rig {
    pub sh: Shard,
    pub now: u64,
}

impl Rig {
    pub fn new() -> Rig {
        Rig::with(CtConfig::with_capacity(1024))
    }
    pub fn with(c: CtConfig) -> Rig {
        Rig {
            sh: Shard::new(c),
            now: 1_000,
        }
    }
    /// One ct() on a fresh packet.
    pub fn one(&mut self, p: &CtPacket, c: &CtCall) -> (u8, CtResult, PktCtMeta) {
        let mut md = PktCtMeta::default();
        let r = self.sh.execute(p, &mut md, c, self.now);
        self.sh.check_invariants().unwrap();
        (md.state, r, md)
    }
    /// A pipeline of ct() calls; returns the final packet, metadata and the
    /// state after each call.
    pub fn chain(&mut self, p: &CtPacket, calls: &[CtCall]) -> (CtPacket, PktCtMeta, Vec<u8>) {
        let mut md = PktCtMeta::default();
        let mut p = *p;
        let mut states = Vec::new();
        for c in calls {
            let r = self.sh.execute(&p, &mut md, c, self.now);
            assert_eq!(r.drop, None);
            p = apply(&p, &r);
            states.push(md.state);
            self.sh.check_invariants().unwrap();
        }
        (p, md, states)
    }
    pub fn lines(&self) -> Vec<String> {
        self.sh
            .dump_at(None, self.now)
            .iter()
            .map(|d| d.to_string())
            .collect()
    }
}

const C: u32 = ip(192, 168, 1, 10);
const VIP: u32 = ip(10, 96, 0, 10);
const E: u32 = ip(10, 244, 1, 5);
const N: u32 = ip(172, 18, 0, 2);
const GW: u32 = ip(10, 244, 0, 1);
const NVIP: u32 = ip(169, 254, 169, 110);

#[test]
fn tcp_handshake_data_and_fin_both_ways_through_dnat() {
    let mut r = Rig::new();
    let fwd = [ct_nat(5), commit_dnat(5, E, 8080)];
    let rev = [ct_nat(5)];
    // SYN: first ct() without commit is +new, no NAT; commit DNATs.
    let (p, md, st) = r.chain(&tcp((C, 40000), (VIP, 80), SYN, 100, 0, 0), &fwd);
    assert_eq!(st, vec![NEW_TRK, NEW_TRK | cs::DNAT]);
    assert_eq!(p.tuple.dst, E);
    assert_eq!(p.tuple.dport, 8080);
    assert_eq!(
        md.orig,
        Some(Tuple {
            src: C,
            dst: VIP,
            sport: 40000,
            dport: 80,
            proto: 6
        })
    );
    // SYN-ACK from the endpoint: reply, un-DNAT sets +snat.
    let (p, _, st) = r.chain(&tcp((E, 8080), (C, 40000), SYN | ACK, 900, 101, 0), &rev);
    assert_eq!(st, vec![EST_RPL | cs::SNAT]);
    assert_eq!((p.tuple.src, p.tuple.sport), (VIP, 80));
    // ACK, data both ways.
    let (p, _, st) = r.chain(&tcp((C, 40000), (VIP, 80), ACK, 101, 901, 0), &fwd);
    assert_eq!(st, vec![EST_TRK | cs::DNAT, EST_TRK | cs::DNAT]);
    assert_eq!(p.tuple.dst, E);
    r.chain(&tcp((C, 40000), (VIP, 80), ACK | PSH, 101, 901, 50), &fwd);
    let (_, _, st) = r.chain(&tcp((E, 8080), (C, 40000), ACK | PSH, 901, 151, 500), &rev);
    assert_eq!(st, vec![EST_RPL | cs::SNAT]);
    assert_eq!(
        r.lines(),
        vec![
            "tcp,orig=(src=192.168.1.10,dst=10.96.0.10,sport=40000,dport=80),\
             reply=(src=10.244.1.5,dst=192.168.1.10,sport=8080,dport=40000),\
             zone=5,protoinfo=(state=ESTABLISHED)"
        ]
    );
    // FIN from the client, ACK+FIN from the server, last ACK.
    r.chain(&tcp((C, 40000), (VIP, 80), FIN | ACK, 151, 1401, 0), &fwd);
    assert!(r.lines()[0].ends_with("state=CLOSING)"));
    r.chain(&tcp((E, 8080), (C, 40000), FIN | ACK, 1401, 152, 0), &rev);
    let (_, _, st) = r.chain(&tcp((C, 40000), (VIP, 80), ACK, 152, 1402, 0), &fwd);
    assert_eq!(st[0], EST_TRK | cs::DNAT);
    assert!(
        r.lines()[0].ends_with("state=TIME_WAIT)"),
        "{:?}",
        r.lines()
    );
    // Both sides >= FIN_WAIT_2: the close timeout (30 s) applies.
    r.now += 29_999;
    assert_eq!(r.sh.dump_at(None, r.now).len(), 1);
    r.now += 1;
    assert_eq!(r.sh.dump_at(None, r.now).len(), 0);
}

#[test]
fn nodeport_chain_three_zones_and_the_reply_walks_back() {
    let mut r = Rig::new();
    let req = [
        ct_nat(52100),
        commit_dnat(52100, NVIP, 0),
        ct_nat(52200),
        commit_snat(52200, GW),
        ct_nat(65500),
        commit_dnat(65500, E, 8080),
    ];
    let (p, md, st) = r.chain(&tcp((C, 50000), (N, 30232), SYN, 1, 0, 0), &req);
    assert_eq!(
        st,
        vec![
            NEW_TRK,
            NEW_TRK | cs::DNAT,
            NEW_TRK,
            NEW_TRK | cs::SNAT,
            NEW_TRK,
            NEW_TRK | cs::DNAT
        ]
    );
    // Source port kept (free), addresses translated in all three zones.
    assert_eq!(
        p.tuple,
        Tuple {
            src: GW,
            dst: E,
            sport: 50000,
            dport: 8080,
            proto: 6
        }
    );
    assert_eq!(md.zone, 65500);
    // The reply walks back 65500 -> 52200 -> 52100.
    let back = [ct_nat(65500), ct_nat(52200), ct_nat(52100)];
    let (p, _, st) = r.chain(&tcp((E, 8080), (GW, 50000), SYN | ACK, 77, 2, 0), &back);
    assert_eq!(
        st,
        vec![EST_RPL | cs::SNAT, EST_RPL | cs::DNAT, EST_RPL | cs::SNAT]
    );
    assert_eq!(
        p.tuple,
        Tuple {
            src: N,
            dst: C,
            sport: 30232,
            dport: 50000,
            proto: 6
        }
    );
    let lines = r.lines();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].contains("zone=52100"));
    assert!(lines[0].contains("reply=(src=169.254.169.110,dst=192.168.1.10,sport=30232"));
    assert!(
        lines[1].contains(
            "reply=(src=169.254.169.110,dst=10.244.0.1,sport=30232,dport=50000),zone=52200"
        )
    );
    assert!(
        lines[2]
            .contains("reply=(src=10.244.1.5,dst=10.244.0.1,sport=8080,dport=50000),zone=65500")
    );
    // Next request packet: established in every zone, translated again.
    let (p, _, st) = r.chain(&tcp((C, 50000), (N, 30232), ACK, 2, 78, 0), &req);
    assert_eq!(
        st,
        vec![
            EST_TRK | cs::DNAT,
            EST_TRK | cs::DNAT,
            EST_TRK | cs::SNAT,
            EST_TRK | cs::SNAT,
            EST_TRK | cs::DNAT,
            EST_TRK | cs::DNAT
        ]
    );
    assert_eq!((p.tuple.src, p.tuple.dst), (GW, E));
}

#[test]
fn ovs_syn_ack_cannot_create_a_connection() {
    let mut r = Rig::new();
    let (st, _, _) = r.one(&tcp((C, 1), (E, 2), SYN | ACK, 1, 1, 0), &commit(1));
    assert_eq!(st, INV_TRK);
    assert!(r.sh.is_empty());
    assert_eq!(r.sh.counters().invalid(InvalidReason::NotNew), 1);
}

#[test]
fn ovs_bare_ack_creates_a_connection_mid_stream() {
    let mut r = Rig::new();
    let (st, _, _) = r.one(&tcp((C, 1000), (E, 80), ACK, 5000, 7000, 0), &commit(1));
    assert_eq!(st, NEW_TRK);
    assert_eq!(r.sh.len(), 1);
    // Both directions liberal: data either way is accepted.
    let (st, _, _) = r.one(&tcp((E, 80), (C, 1000), ACK, 7000, 5000, 100), &ct(1));
    assert_eq!(st, EST_RPL);
    let (st, _, _) = r.one(&tcp((C, 1000), (E, 80), ACK, 5000, 7100, 10), &ct(1));
    assert_eq!(st, EST_TRK);
}

#[test]
fn ovs_second_original_packet_before_any_reply_is_established() {
    let mut r = Rig::new();
    r.one(&tcp((C, 1000), (E, 80), SYN, 100, 0, 0), &commit(1));
    let (st, _, _) = r.one(&tcp((C, 1000), (E, 80), ACK, 101, 0, 0), &ct(1));
    assert_eq!(st, EST_TRK);
    // UDP differs: without a reply it stays +new.
    r.one(&udp((C, 53), (E, 53)), &commit(1));
    let (st, _, _) = r.one(&udp((C, 53), (E, 53)), &ct(1));
    assert_eq!(st, NEW_TRK);
}

#[test]
fn ovs_retransmitted_syn_stays_new() {
    let mut r = Rig::new();
    r.one(&tcp((C, 1000), (E, 80), SYN, 100, 0, 0), &commit(1));
    let (st, _, _) = r.one(&tcp((C, 1000), (E, 80), SYN, 100, 0, 0), &ct(1));
    assert_eq!(st, NEW_TRK);
    assert_eq!(r.sh.len(), 1);
}

fn established(r: &mut Rig) {
    r.one(&tcp((C, 1000), (E, 80), SYN, 100, 0, 0), &commit(1));
    r.one(&tcp((E, 80), (C, 1000), SYN | ACK, 5000, 101, 0), &ct(1));
    let (st, _, _) = r.one(&tcp((C, 1000), (E, 80), ACK, 101, 5001, 0), &ct(1));
    assert_eq!(st, EST_TRK);
}

#[test]
fn ovs_out_of_window_data_is_invalid_but_an_empty_ack_is_exempt() {
    let mut r = Rig::new();
    established(&mut r);
    let far = 101u32.wrapping_add(50_000_000);
    let (st, _, _) = r.one(&tcp((C, 1000), (E, 80), ACK, far, 5001, 100), &ct(1));
    assert_eq!(st, INV_TRK);
    assert_eq!(r.sh.counters().invalid(InvalidReason::TcpWindow), 1);
    // Same bogus sequence number, no payload: sequence checks are eased.
    let (st, _, _) = r.one(&tcp((C, 1000), (E, 80), ACK, far, 5001, 0), &ct(1));
    assert_eq!(st, EST_TRK);
    // ...but not the ACK-skew check: acking far beyond what was sent fails.
    let (st, _, _) = r.one(
        &tcp(
            (C, 1000),
            (E, 80),
            ACK,
            101,
            5001u32.wrapping_add(50_000_000),
            0,
        ),
        &ct(1),
    );
    assert_eq!(st, INV_TRK);
}

#[test]
fn disabling_sequence_checks_accepts_out_of_window_data() {
    let mut r = Rig::new();
    established(&mut r);
    r.sh.set_tcp_seq_check(false);
    let (st, _, _) = r.one(&tcp((C, 1000), (E, 80), ACK, 50_000_000, 5001, 100), &ct(1));
    assert_eq!(st, EST_TRK);
}

#[test]
fn invalid_tcp_flags_on_a_connection() {
    let mut r = Rig::new();
    established(&mut r);
    let (st, _, md) = r.one(&tcp((C, 1000), (E, 80), FIN, 101, 0, 0), &ct(1));
    assert_eq!(st, INV_TRK);
    // OVS still reports the connection's metadata for an invalid packet.
    assert!(md.orig.is_some());
}

#[test]
fn bad_checksum_and_fragments_are_invalid() {
    let mut r = Rig::new();
    let mut p = tcp((C, 1), (E, 2), SYN, 1, 0, 0);
    p.valid = false;
    let (st, _, md) = r.one(&p, &commit(3));
    assert_eq!((st, md.zone, md.orig), (INV_TRK, 3, None));
    let mut p = udp((C, 1), (E, 2));
    p.fragment = true;
    let (st, _, _) = r.one(&p, &commit(3));
    assert_eq!(st, INV_TRK);
    assert!(r.sh.is_empty());
    let c = r.sh.counters();
    assert_eq!(c.invalid(InvalidReason::BadPacket), 1);
    assert_eq!(c.invalid(InvalidReason::Fragment), 1);
    // Port 0 cannot be keyed.
    let (st, _, _) = r.one(&udp((C, 0), (E, 2)), &commit(3));
    assert_eq!(st, INV_TRK);
}

#[test]
fn rst_closes_and_a_new_syn_reopens() {
    let mut r = Rig::new();
    established(&mut r);
    let (st, _, _) = r.one(&tcp((E, 80), (C, 1000), RST | ACK, 5001, 101, 0), &ct(1));
    assert_eq!(st, EST_RPL);
    assert!(r.lines()[0].ends_with("state=TIME_WAIT)"));
    // Both sides >= FIN_WAIT_2: a SYN starts a fresh connection.
    let (st, _, _) = r.one(&tcp((C, 1000), (E, 80), SYN, 9000, 0, 0), &commit(1));
    assert_eq!(st, NEW_TRK);
    assert_eq!(r.sh.dump_at(None, r.now).len(), 1);
    assert!(r.lines()[0].ends_with("state=SYN_SENT)"));
}

#[test]
fn udp_first_single_and_bidir_timeouts() {
    let mut r = Rig::new();
    let (st, _, _) = r.one(&udp((C, 5000), (E, 53)), &commit(0));
    assert_eq!(st, NEW_TRK);
    // First packet: 60 s.
    r.now += 59_999;
    let (st, _, _) = r.one(&udp((C, 5000), (E, 53)), &ct(0));
    assert_eq!(st, NEW_TRK, "still +new, one direction (udp_single 60 s)");
    let (st, _, _) = r.one(&udp((E, 53), (C, 5000)), &ct(0));
    assert_eq!(st, EST_RPL);
    // Bidirectional: 30 s.
    r.now += 29_999;
    assert_eq!(r.sh.dump_at(None, r.now).len(), 1);
    r.now += 1;
    assert_eq!(r.sh.dump_at(None, r.now).len(), 0);
    let (st, _, _) = r.one(&udp((E, 53), (C, 5000)), &ct(0));
    assert_eq!(st, NEW_TRK, "expired: the reply now looks new");
    assert_eq!(
        r.lines(),
        Vec::<String>::new(),
        "invisible before being reclaimed"
    );
}

#[test]
fn expired_connections_are_invisible_before_reclaim() {
    let mut cfg = CtConfig::with_capacity(16);
    cfg.reap_per_call = 0;
    let mut r = Rig::with(cfg);
    r.one(&tcp((C, 1), (E, 2), SYN, 1, 0, 0), &commit(0));
    r.now += 30_000;
    let (st, _, _) = r.one(&tcp((C, 1), (E, 2), SYN, 1, 0, 0), &ct(0));
    assert_eq!(st, NEW_TRK);
    assert_eq!(r.sh.len(), 1, "not reclaimed yet");
    // Re-committing the same key coexists with the dead entry.
    r.one(&tcp((C, 1), (E, 2), SYN, 1, 0, 0), &commit(0));
    assert_eq!(r.sh.len(), 2);
    assert_eq!(r.sh.dump_at(None, r.now).len(), 1);
    r.now += 30_000;
    assert_eq!(r.sh.sweep(r.now, 100), 2);
    assert!(r.sh.is_empty());
    assert_eq!(r.sh.counters().expired, 2);
    r.sh.check_invariants().unwrap();
}

#[test]
fn tcp_timeouts_follow_the_state() {
    let mut r = Rig::new();
    r.one(&tcp((C, 1000), (E, 80), SYN, 100, 0, 0), &commit(1));
    assert_eq!(r.sh.dump_at(None, r.now)[0].timeout_s, 30);
    established(&mut r);
    assert_eq!(r.sh.dump_at(None, r.now)[0].timeout_s, 24 * 3600);
    r.one(&tcp((C, 1000), (E, 80), FIN | ACK, 101, 5001, 0), &ct(1));
    assert_eq!(r.sh.dump_at(None, r.now)[0].timeout_s, 15 * 60);
    r.one(&tcp((E, 80), (C, 1000), FIN | ACK, 5001, 102, 0), &ct(1));
    assert_eq!(
        r.sh.dump_at(None, r.now)[0].timeout_s,
        45,
        "both closing: time_wait"
    );
}

#[test]
fn per_zone_timeouts() {
    let mut cfg = CtConfig::with_capacity(16);
    cfg.zone_timeouts = vec![(
        7,
        Timeouts {
            udp_first: 5,
            ..Timeouts::default()
        },
    )];
    let mut r = Rig::with(cfg);
    r.one(&udp((C, 1), (E, 2)), &commit(7));
    r.one(&udp((C, 1), (E, 2)), &commit(8));
    let d = r.sh.dump_at(None, r.now);
    assert_eq!((d[0].zone, d[0].timeout_s), (7, 5));
    assert_eq!((d[1].zone, d[1].timeout_s), (8, 60));
}

#[test]
fn icmp_echo_request_reply_and_dump() {
    let mut r = Rig::new();
    let (st, _, md) = r.one(&echo(C, E, 7, 8), &commit(0));
    assert_eq!(st, NEW_TRK);
    // OVS puts the ICMP type and code in ct_tp_src/ct_tp_dst.
    assert_eq!(md.orig.map(|o| (o.sport, o.dport)), Some((8, 0)));
    let (st, _, _) = r.one(&echo(C, E, 7, 8), &ct(0));
    assert_eq!(st, NEW_TRK);
    let (st, _, _) = r.one(&echo(E, C, 7, 0), &ct(0));
    assert_eq!(st, EST_RPL);
    assert_eq!(
        r.lines(),
        vec![
            "icmp,orig=(src=192.168.1.10,dst=10.244.1.5,id=7,type=8,code=0),\
             reply=(src=10.244.1.5,dst=192.168.1.10,id=7,type=0,code=0)"
        ]
    );
    // An echo reply cannot start a connection.
    let (st, _, _) = r.one(&echo(E, C, 9, 0), &commit(0));
    assert_eq!(st, INV_TRK);
    // Reply timeout 30 s.
    r.now += 30_000;
    assert!(r.sh.dump_at(None, r.now).is_empty());
}

#[test]
fn icmp_error_is_related_and_nat_rewrites_the_inner_header() {
    let mut r = Rig::new();
    // SNAT C:40000 -> S:53 to GW.
    let s = ip(8, 8, 8, 8);
    let (p, _, _) = r.chain(&udp((C, 40000), (s, 53)), &[commit_snat(9, GW)]);
    assert_eq!((p.tuple.src, p.tuple.sport), (GW, 40000));
    // A router answers "port unreachable" about the translated packet.
    let router = ip(1, 1, 1, 1);
    let err = icmp_err(router, GW, 3, p.tuple);
    let mut md = PktCtMeta::default();
    let res = r.sh.execute(&err, &mut md, &ct_nat(9), r.now);
    assert_eq!(md.state, cs::REL | cs::RPL | cs::TRK | cs::DNAT);
    let rw = res.rewrite.unwrap();
    assert_eq!((rw.outer.src, rw.outer.dst), (router, C));
    assert_eq!(
        rw.inner,
        Some(Tuple {
            src: C,
            dst: s,
            sport: 40000,
            dport: 53,
            proto: 17
        })
    );
    // Original direction: the client reports an error about a reply.
    let reply_as_seen = Tuple {
        src: s,
        dst: C,
        sport: 53,
        dport: 40000,
        proto: 17,
    };
    let err = icmp_err(C, s, 3, reply_as_seen);
    let mut md = PktCtMeta::default();
    let res = r.sh.execute(&err, &mut md, &ct_nat(9), r.now);
    assert_eq!(md.state, cs::REL | cs::TRK | cs::SNAT);
    let rw = res.rewrite.unwrap();
    assert_eq!((rw.outer.src, rw.outer.dst), (GW, s));
    assert_eq!(rw.inner.map(|i| (i.dst, i.dport)), Some((GW, 40000)));
    // Unknown quoted connection: invalid, never creates one.
    let err = icmp_err(router, C, 3, udp((C, 1), (s, 2)).tuple);
    let (st, _, _) = r.one(&err, &commit(9));
    assert_eq!(st, INV_TRK);
    assert_eq!(r.sh.counters().invalid(InvalidReason::RelatedUnknown), 1);
}

#[test]
fn icmp_error_quoting_an_echo_request() {
    let mut r = Rig::new();
    r.one(&echo(C, E, 7, 8), &commit(0));
    let inner = echo(C, E, 7, 8).tuple;
    let (st, _, _) = r.one(&icmp_err(ip(1, 1, 1, 1), C, 11, inner), &ct(0));
    assert_eq!(st, cs::REL | cs::RPL | cs::TRK);
}

#[test]
fn zone_limit_refuses_new_commits_only() {
    let mut cfg = CtConfig::with_capacity(16);
    cfg.zone_limits = vec![(4, 1)];
    let mut r = Rig::with(cfg);
    r.one(&tcp((C, 1), (E, 80), SYN, 1, 0, 0), &commit(4));
    let (st, _, md) = r.one(&tcp((C, 2), (E, 80), SYN, 1, 0, 0), &commit(4));
    assert_eq!(st, NEW_TRK, "OVS: +new, not committed, not dropped");
    assert_eq!(md.conn, None);
    assert_eq!(r.sh.counters().zone_limit, 1);
    assert_eq!(r.sh.zone_count(4), 1);
    // The admitted connection is unaffected; other zones are free.
    let (st, _, _) = r.one(&tcp((E, 80), (C, 1), SYN | ACK, 9, 2, 0), &ct(4));
    assert_eq!(st, EST_RPL);
    r.one(&tcp((C, 2), (E, 80), SYN, 1, 0, 0), &commit(5));
    assert_eq!(r.sh.len(), 2);
}

#[test]
fn full_table_refuses_new_connections_and_keeps_established_ones() {
    let mut r = Rig::with(CtConfig::with_capacity(2));
    established(&mut r);
    r.one(&udp((C, 1), (E, 2)), &commit(1));
    let (st, res, _) = r.one(&udp((C, 3), (E, 4)), &commit(1));
    assert_eq!((st, res.drop), (NEW_TRK, None));
    assert_eq!(r.sh.counters().table_full, 1);
    let (st, _, _) = r.one(&tcp((E, 80), (C, 1000), ACK, 5001, 101, 10), &ct(1));
    assert_eq!(st, EST_RPL);
}

#[test]
fn flush_all_by_zone_and_by_tuple() {
    let mut r = Rig::new();
    r.one(&udp((C, 1), (E, 2)), &commit(1));
    r.one(&udp((C, 3), (E, 4)), &commit(1));
    r.one(&udp((C, 1), (E, 2)), &commit(2));
    r.one(&echo(C, E, 5, 8), &commit(2));
    assert_eq!(
        r.sh.flush(Some(1), Some(udp((E, 4), (C, 3)).tuple)),
        1,
        "reply tuple"
    );
    assert_eq!(r.sh.flush(Some(2), Some(echo(C, E, 5, 8).tuple)), 1);
    assert_eq!(r.sh.flush(Some(2), None), 1);
    assert_eq!(r.sh.len(), 1);
    assert_eq!(r.sh.flush(None, None), 1);
    assert!(r.sh.is_empty());
    r.sh.check_invariants().unwrap();
}

#[test]
fn snat_port_clash_takes_the_next_port_of_the_class() {
    let mut r = Rig::new();
    let s = ip(8, 8, 8, 8);
    let a = ip(10, 0, 0, 1);
    let b = ip(10, 0, 0, 2);
    let c = ip(10, 0, 0, 3);
    let (p1, _, _) = r.chain(
        &tcp((a, 40000), (s, 443), SYN, 1, 0, 0),
        &[commit_snat(0, GW)],
    );
    let (p2, _, _) = r.chain(
        &tcp((b, 40000), (s, 443), SYN, 1, 0, 0),
        &[commit_snat(0, GW)],
    );
    let (p3, _, _) = r.chain(
        &tcp((c, 40000), (s, 443), SYN, 1, 0, 0),
        &[commit_snat(0, GW)],
    );
    assert_eq!(p1.tuple.sport, 40000);
    assert_eq!(p2.tuple.sport, 40001);
    assert_eq!(p3.tuple.sport, 40002);
    // Low ports stay in their class: 511 wraps to 1.
    let (q1, _, _) = r.chain(&udp((a, 511), (s, 53)), &[commit_snat(0, GW)]);
    let (q2, _, _) = r.chain(&udp((b, 511), (s, 53)), &[commit_snat(0, GW)]);
    assert_eq!((q1.tuple.sport, q2.tuple.sport), (511, 1));
    // Replies find their own connection.
    let (p, _, st) = r.chain(
        &tcp((s, 443), (GW, 40001), SYN | ACK, 5, 2, 0),
        &[ct_nat(0)],
    );
    assert_eq!(st, vec![EST_RPL | cs::DNAT]);
    assert_eq!((p.tuple.dst, p.tuple.dport), (b, 40000));
}

/// OVS 3.1: a SYN on a closed NATed connection force-expires it, but its
/// reply tuple stays taken until the sweeper reclaims it, so the re-opened
/// connection is translated to the next port; the old one is invisible in
/// dumps meanwhile. (Differential scenario `nodeport_chain_invalidation`.)
#[test]
fn reopened_nat_connection_gets_another_port_until_the_old_one_is_reclaimed() {
    let mut r = Rig::new();
    let s = ip(8, 8, 8, 8);
    let pipe = [ct_nat(0), commit_snat(0, GW)];
    let (p, _, st) = r.chain(&tcp((C, 40000), (s, 443), SYN, 1, 0, 0), &pipe);
    assert_eq!(p.tuple.sport, 40000);
    assert_eq!(st, vec![NEW_TRK, NEW_TRK | cs::SNAT]);
    r.chain(
        &tcp((s, 443), (GW, 40000), SYN | ACK, 5000, 2, 0),
        &[ct_nat(0)],
    );
    r.chain(&tcp((C, 40000), (s, 443), ACK, 2, 5001, 0), &pipe);
    r.chain(
        &tcp((s, 443), (GW, 40000), RST | ACK, 5001, 2, 0),
        &[ct_nat(0)],
    );
    assert!(
        r.lines()[0].ends_with("state=TIME_WAIT)"),
        "{:?}",
        r.lines()
    );

    let (p, _, st) = r.chain(&tcp((C, 40000), (s, 443), SYN, 9000, 0, 0), &pipe);
    assert_eq!(st, vec![NEW_TRK, NEW_TRK | cs::SNAT]);
    assert_eq!(p.tuple.sport, 40001, "the old reply tuple is still held");
    assert_eq!(r.sh.len(), 2, "the old connection is not reclaimed yet");
    let lines = r.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("dport=40001)"), "{lines:?}");
    assert!(lines[0].ends_with("state=SYN_SENT)"), "{lines:?}");
    // The reply reaches the new connection and is un-NATed to the client.
    let (p, _, st) = r.chain(
        &tcp((s, 443), (GW, 40001), SYN | ACK, 7000, 9001, 0),
        &[ct_nat(0)],
    );
    assert_eq!(st, vec![EST_RPL | cs::DNAT]);
    assert_eq!((p.tuple.dst, p.tuple.dport), (C, 40000));

    // Once both are reclaimed the port is free again.
    r.now += 86_400_000;
    while r.sh.sweep(r.now, 64) > 0 {}
    assert!(r.sh.is_empty());
    let (p, _, _) = r.chain(&tcp((C, 40000), (s, 443), SYN, 1, 0, 0), &pipe);
    assert_eq!(p.tuple.sport, 40000);
}

/// Without NAT nothing can observe a force-expired connection, so it is
/// reclaimed by the next ct() call.
#[test]
fn reopened_plain_connection_is_reclaimed_at_once() {
    let mut r = Rig::new();
    established(&mut r);
    r.one(&tcp((E, 80), (C, 1000), RST | ACK, 5001, 101, 0), &ct(1));
    r.one(&tcp((C, 1000), (E, 80), SYN, 9000, 0, 0), &commit(1));
    r.one(&tcp((C, 1000), (E, 80), SYN, 9000, 0, 0), &ct(1));
    assert_eq!(r.sh.len(), 1);
}

#[test]
fn nat_exhaustion_drops_with_a_counter() {
    let mut r = Rig::new();
    let s = ip(8, 8, 8, 8);
    let snat_range = CtCall {
        zone: 0,
        commit: true,
        nat: Some(NatSpec::Src(NatRange {
            addr_min: GW,
            addr_max: GW,
            port_min: 1000,
            port_max: 1001,
            ..NatRange::default()
        })),
        ..CtCall::default()
    };
    for i in 0..2 {
        let (_, res, _) = r.one(&udp((C, 5000 + i), (s, 53)), &snat_range);
        assert_eq!(res.drop, None);
        let port = res.rewrite.unwrap().outer.sport;
        assert!((1000..=1001).contains(&port));
    }
    let (st, res, _) = r.one(&udp((C, 6000), (s, 53)), &snat_range);
    assert_eq!(res.drop, Some(CtDrop::NatExhausted));
    assert_eq!(st, NEW_TRK);
    assert_eq!(r.sh.counters().nat_exhausted, 1);
    assert_eq!(r.sh.len(), 2);
}

#[test]
fn nat_is_applied_once_per_zone_and_not_on_uncommitted_new_connections() {
    let mut r = Rig::new();
    // Uncommitted new connection: nat(dst) does nothing.
    let nat_no_commit = CtCall {
        commit: false,
        ..commit_dnat(3, E, 8080)
    };
    let (st, res, _) = r.one(&tcp((C, 1), (VIP, 80), SYN, 1, 0, 0), &nat_no_commit);
    assert_eq!((st, res.rewrite), (NEW_TRK, None));
    // Committed, then ct(nat) again in the same zone: no second rewrite.
    let (p, md, st) = r.chain(
        &tcp((C, 1), (VIP, 80), SYN, 1, 0, 0),
        &[commit_dnat(3, E, 8080), ct_nat(3)],
    );
    assert_eq!(p.tuple.dst, E);
    assert_eq!(st[1], NEW_TRK | cs::DNAT);
    assert_eq!(md.orig.unwrap().dst, VIP);
    // A different zone NATs again (none here: no connection in zone 4).
    let mut md2 = md;
    let res = r.sh.execute(&p, &mut md2, &ct_nat(4), r.now);
    assert_eq!((md2.state, res.rewrite), (NEW_TRK, None));
}

#[test]
fn force_deletes_a_connection_seen_in_the_reply_direction() {
    let mut r = Rig::new();
    r.one(&udp((C, 1), (E, 2)), &commit(1));
    let force = CtCall {
        force: true,
        ..commit(1)
    };
    let (st, _, _) = r.one(&udp((E, 2), (C, 1)), &force);
    assert_eq!(st, NEW_TRK);
    let d = r.sh.dump_at(None, r.now);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].orig.src, E);
}

#[test]
fn mark_and_label_on_commit_and_later_commits() {
    let mut r = Rig::new();
    let c1 = CtCall {
        set_mark: Some((0x21, 0xffff_ffff)),
        set_label: Some((1 << 64, u128::MAX)),
        ..commit(52100)
    };
    let (_, _, md) = r.one(&udp((C, 1), (E, 2)), &c1);
    assert_eq!((md.mark, md.label), (0x21, 1 << 64));
    let (_, _, md) = r.one(&udp((E, 2), (C, 1)), &ct(52100));
    assert_eq!((md.mark, md.label), (0x21, 1 << 64));
    let c2 = CtCall {
        set_mark: Some((0x100, 0xff00)),
        ..commit(52100)
    };
    let (_, _, md) = r.one(&udp((C, 1), (E, 2)), &c2);
    assert_eq!(md.mark, 0x121);
    assert_eq!(
        r.lines(),
        vec![
            "udp,orig=(src=192.168.1.10,dst=10.244.1.5,sport=1,dport=2),\
             reply=(src=10.244.1.5,dst=192.168.1.10,sport=2,dport=1),\
             zone=52100,mark=289,labels=0x10000000000000000"
        ]
    );
}

#[test]
fn cached_conn_is_reused_within_a_zone_and_dropped_on_a_new_one() {
    let mut r = Rig::new();
    let mut md = PktCtMeta::default();
    let p = udp((C, 1), (E, 2));
    r.sh.execute(&p, &mut md, &commit(1), r.now);
    assert!(md.conn.is_some());
    let lookups = r.sh.counters().lookups;
    // Same zone: process_one_fast (state untouched, mark refreshed).
    let c = CtCall {
        set_mark: Some((5, u32::MAX)),
        ..commit(1)
    };
    r.sh.execute(&p, &mut md, &c, r.now);
    assert_eq!(md.state, NEW_TRK);
    assert_eq!(md.mark, 5);
    assert_eq!(r.sh.counters().lookups, lookups + 1);
    // The slot is freed and reused: the stale ref is ignored.
    r.sh.flush(None, None);
    r.sh.execute(
        &udp((C, 9), (E, 9)),
        &mut PktCtMeta::default(),
        &commit(1),
        r.now,
    );
    r.sh.execute(&p, &mut md, &ct(1), r.now);
    assert_eq!(md.state, NEW_TRK);
    assert_eq!(md.mark, 0);
}

#[test]
fn ovs31_plain_nat_on_commit_records_an_empty_nat() {
    // OVS 3.1 passes an empty NAT action to conn_not_found, which builds a
    // reply key with a zero source address: replies do not match.
    let mut r = Rig::new();
    let c = CtCall {
        nat: Some(NatSpec::Existing),
        ..commit(1)
    };
    let (st, res, _) = r.one(&tcp((C, 1000), (E, 80), SYN, 1, 0, 0), &c);
    assert_eq!((st, res.rewrite), (NEW_TRK, None));
    assert_eq!(
        r.lines(),
        vec![
            "tcp,orig=(src=192.168.1.10,dst=10.244.1.5,sport=1000,dport=80),\
             reply=(src=0.0.0.0,dst=192.168.1.10,sport=80,dport=0),\
             zone=1,protoinfo=(state=SYN_SENT)"
        ]
    );
    let (st, _, _) = r.one(&tcp((E, 80), (C, 1000), SYN | ACK, 1, 2, 0), &ct(1));
    assert_eq!(
        st, INV_TRK,
        "the SYN-ACK finds nothing and cannot start one"
    );
}

#[test]
fn state_is_reset_when_entering_a_new_zone_only() {
    let mut r = Rig::new();
    let (_, md, st) = r.chain(&udp((C, 1), (E, 2)), &[commit(1), ct(1), ct(2)]);
    assert_eq!(st, vec![NEW_TRK, NEW_TRK, NEW_TRK]);
    assert_eq!(md.zone, 2);
    assert_eq!(md.orig.unwrap().src, C);
}

#[test]
fn connection_fits_the_memory_budget() {
    let sh = Shard::new(CtConfig::with_capacity(1 << 16));
    // Slot (128 bytes, two cache lines) + 4 index cells (32 bytes), NAT
    // state included.
    assert!(sh.bytes_per_conn() <= 256, "{} bytes", sh.bytes_per_conn());
    assert_eq!(sh.bytes_per_conn(), 128 + INDEX_BYTES_PER_CONN);
}

#[test]
fn expiring_everything_leaves_an_empty_table() {
    let mut r = Rig::with(CtConfig::with_capacity(4096));
    for i in 0..1000u16 {
        r.one(&tcp((C, 1000 + i), (E, 80), SYN, 1, 0, 0), &commit(i % 3));
        r.one(&udp((C, 1000 + i), (E, 53)), &commit_snat(i % 3, GW));
        r.now += 7;
    }
    assert_eq!(r.sh.len(), 2000);
    r.now += 61_000;
    while r.sh.sweep(r.now, 64) > 0 {}
    assert!(r.sh.is_empty());
    r.sh.check_invariants().unwrap();
    assert_eq!(r.sh.counters().expired, 2000);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn arb_pkt() -> impl Strategy<Value = CtPacket> {
        let addr = prop::sample::select(vec![C, E, GW, VIP]);
        let port = prop::sample::select(vec![1u16, 80, 511, 1000, 40000, 40001]);
        (
            addr.clone(),
            port.clone(),
            addr,
            port,
            0u8..4,
            any::<u16>(),
            0u32..3000,
        )
            .prop_map(|(s, sp, d, dp, kind, fl, seq)| match kind {
                0 => tcp((s, sp), (d, dp), fl & 0x1f, seq, seq / 2, seq % 3 * 10),
                1 => udp((s, sp), (d, dp)),
                2 => echo(s, d, sp, if fl & 1 == 0 { 8 } else { 0 }),
                _ => icmp_err(s, d, 3, udp((d, dp), (s, sp)).tuple),
            })
    }

    fn arb_call() -> impl Strategy<Value = CtCall> {
        (0u16..3, any::<bool>(), 0u8..4, any::<bool>()).prop_map(|(z, c, n, f)| CtCall {
            zone: z,
            commit: c,
            force: f && c,
            nat: match n {
                0 => None,
                1 => Some(NatSpec::Existing),
                2 => Some(NatSpec::Src(range(GW, 0))),
                _ => Some(NatSpec::Dst(range(E, 8080))),
            },
            set_mark: c.then_some((z as u32, u32::MAX)),
            set_label: None,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn invariants_hold_and_everything_expires(
            steps in prop::collection::vec((arb_pkt(), prop::collection::vec(arb_call(), 1..4), 0u64..40_000), 1..60)
        ) {
            let mut sh = Shard::new(CtConfig::with_capacity(32));
            let mut now = 0;
            for (p, calls, dt) in steps {
                now += dt;
                let mut md = PktCtMeta::default();
                let mut p = p;
                for c in &calls {
                    let r = sh.execute(&p, &mut md, c, now);
                    p = apply(&p, &r);
                    prop_assert!(md.state & cs::TRK != 0);
                    sh.check_invariants().map_err(TestCaseError::fail)?;
                }
            }
            now += 100_000_000;
            while sh.sweep(now, 16) > 0 {}
            prop_assert!(sh.is_empty());
            sh.check_invariants().map_err(TestCaseError::fail)?;
        }
    }
}

#[test]
fn execute_burst_matches_execute_one_by_one() {
    let mut a = Rig::new();
    let mut b = Rig::new();
    let pkts: Vec<CtPacket> = (0..100u16)
        .map(|i| match i % 4 {
            0 => tcp((C, 1000 + i % 7), (E, 80), SYN, 1, 0, 0),
            1 => tcp((E, 80), (C, 1000 + i % 7), SYN | ACK, 9, 2, 0),
            2 => udp((C, i % 5 + 1), (E, 53)),
            _ => echo(C, E, i % 3, 8),
        })
        .collect();
    let call = commit_snat(3, GW);
    let mut mds = vec![PktCtMeta::default(); pkts.len()];
    let mut out = vec![CtResult::default(); pkts.len()];
    b.sh.execute_burst(&pkts, &mut mds, &call, b.now, &mut out);
    for (i, p) in pkts.iter().enumerate() {
        let mut md = PktCtMeta::default();
        let r = a.sh.execute(p, &mut md, &call, a.now);
        assert_eq!((r, md), (out[i], mds[i]), "packet {i}");
    }
    assert_eq!(a.lines(), b.lines());
}

#[test]
fn ovs31_default_zone_limit_is_one_pool_shared_by_zones_without_their_own() {
    let mut r = Rig::new();
    // Admitted before any limit exists: never counted.
    r.one(&udp((C, 9), (E, 9)), &commit(1));
    r.sh.set_default_zone_limit(Some(2));
    r.sh.set_zone_limit(9, Some(1));
    r.one(&udp((C, 1), (E, 1)), &commit(1));
    r.one(&udp((C, 2), (E, 2)), &commit(2));
    assert_eq!(r.sh.zone_limit(3), Some((2, 2)));
    let (st, _, _) = r.one(&udp((C, 3), (E, 3)), &commit(3));
    assert_eq!(st, NEW_TRK);
    assert_eq!(
        r.sh.counters().zone_limit,
        1,
        "zone 3 refused: the pool is full"
    );
    // A zone with its own limit is not in the pool.
    r.one(&udp((C, 4), (E, 4)), &commit(9));
    assert_eq!(r.sh.zone_limit(9), Some((1, 1)));
    // Freeing a pooled connection makes room for any zone.
    r.sh.flush(Some(2), None);
    r.one(&udp((C, 3), (E, 3)), &commit(3));
    assert_eq!(r.sh.zone_limit(3), Some((2, 2)));
    assert_eq!(r.sh.len(), 4);
}

#[test]
fn a_dump_taken_in_pages_lists_every_connection_once() {
    let mut r = Rig::new();
    for i in 0..300u16 {
        let zone = i % 3;
        r.one(&udp((C, 1000 + i), (E, 53)), &commit(zone));
    }
    // Delete a few so that the pages have holes.
    for i in (0..300u16).step_by(7) {
        r.sh.flush(Some(i % 3), Some(udp((C, 1000 + i), (E, 53)).tuple));
    }
    for zone in [None, Some(1)] {
        let whole = r.sh.dump_at(zone, r.now);
        assert!(!whole.is_empty());
        for page in [1, 5, 64, 1000, 4096] {
            let mut all = Vec::new();
            let mut from = 0;
            let mut pages = 0;
            loop {
                let (v, next) = r.sh.dump_page(zone, from, page, r.now);
                assert!(v.len() <= page as usize);
                all.extend(v);
                pages += 1;
                match next {
                    Some(n) => {
                        assert_eq!(n, from + page, "pages are contiguous");
                        from = n;
                    }
                    None => break,
                }
            }
            assert_eq!(pages, r.sh.capacity().div_ceil(page).max(1));
            all.sort_by_key(|d| d.sort_key());
            assert_eq!(all, whole, "page size {page}, zone {zone:?}");
        }
    }
    // Past the end: empty, and the last page.
    assert_eq!(r.sh.dump_page(None, u32::MAX, 10, r.now), (vec![], None));
}

#[test]
fn a_flush_taken_in_pages_removes_exactly_the_zone() {
    let mut r = Rig::new();
    for i in 0..300u16 {
        r.one(&udp((C, 1000 + i), (E, 53)), &commit(i % 3));
    }
    let before = r.sh.dump_at(None, r.now);
    let mut from = 0;
    let mut n = 0;
    loop {
        let (k, next) = r.sh.flush_page(Some(1), from, 100);
        r.sh.check_invariants().unwrap();
        n += k;
        match next {
            Some(f) => from = f,
            None => break,
        }
    }
    assert_eq!(n, 100);
    let after = r.sh.dump_at(None, r.now);
    let kept: Vec<_> = before.into_iter().filter(|d| d.zone != 1).collect();
    assert_eq!(after, kept);
    assert_eq!(r.sh.flush(None, None), 200, "the unpaged flush is one page");
    assert!(r.sh.is_empty());
}
