use super::*;
use crate::extract::extract;
use crate::pipeline::Pipeline;
use crate::pipeline::exec::{Engine, ExecStats, Scratch};
use crate::pipeline::parse;
use crate::wire::build::PacketBuilder;
use conntrack::Shard;

const CLIENT_MAC: u64 = 0x0200_0000_0001;
const NODE_MAC: u64 = 0x0200_0000_0002;
const CLIENT: u32 = 0x0a00_0001; // 10.0.0.1
const SERVICE: u32 = 0x0a60_000a; // 10.96.0.10

/// A from-scratch RFC 1071 sum, independent of `wire::checksum`: the
/// one's-complement sum of the bytes (plus `extra`), folded; a correct
/// message sums to 0xffff.
fn ones_sum(bytes: &[u8], extra: u32) -> u16 {
    let mut s: u64 = extra as u64;
    for (i, b) in bytes.iter().enumerate() {
        s += if i % 2 == 0 {
            (*b as u64) << 8
        } else {
            *b as u64
        };
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let w = |b: &[u8]| ((b[0] as u32) << 8 | b[1] as u32) + ((b[2] as u32) << 8 | b[3] as u32);
    w(src) + w(dst) + proto as u32 + len as u32
}

fn key_of(pkt: &[u8], in_port: u32) -> FlowKey {
    let mut k = FlowKey::ZERO;
    extract(pkt, in_port, &mut k).expect("well-formed");
    k
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Decode an answer: (eth dst, eth src, IPv4 header, L4 message), checking
/// the IPv4 header checksum independently.
fn decode(f: &[u8]) -> (u64, u64, &[u8], &[u8]) {
    let mac = |b: &[u8]| b.iter().fold(0u64, |a, x| a << 8 | *x as u64);
    assert_eq!(&f[12..14], &[0x08, 0x00]);
    let ip = &f[14..34];
    assert_eq!(ip[0], 0x45);
    assert_eq!(ones_sum(ip, 0), 0xffff, "IPv4 header checksum");
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    assert_eq!(total + 14, f.len(), "IP total length covers the frame");
    (mac(&f[0..6]), mac(&f[6..12]), ip, &f[34..])
}

#[test]
fn reject_userdata_is_recognised() {
    assert!(is_reject("reason=no_match,userdata=52.45.4a.45.43.54"));
    assert!(is_reject("userdata=52.45.4A.45.43.54, reason=no_match"));
    assert!(!is_reject("reason=no_match"));
    assert!(!is_reject("reason=no_match,userdata=52.45.4a.45.43"));
    assert!(!is_reject("max_len=65535"));
    assert!(!is_reject(""));
}

fn rst_for(flags: u16, seq: u32, ack: u32, payload: &[u8]) -> (u32, u32, u16) {
    let req = PacketBuilder::tcp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 40000, 80)
        .flags(flags)
        .seq(seq)
        .ack(ack)
        .payload(payload)
        .build();
    let k = key_of(&req, 3);
    let seg = TcpSegment {
        seq,
        ack,
        flags,
        payload_len: payload.len() as u32,
    };
    let mut out = vec![0; ANSWER_MAX];
    let n = tcp_rst(&Request::from_key(&k), &seg, &mut out);
    let f = &out[..n];
    assert_eq!(n, 54);
    let (dst, src, ip, t) = decode(f);
    assert_eq!((dst, src), (CLIENT_MAC, NODE_MAC), "Ethernet swapped");
    assert_eq!(ip[9], 6);
    assert_eq!((be32(&ip[12..16]), be32(&ip[16..20])), (SERVICE, CLIENT));
    assert_eq!(t.len(), 20);
    assert_eq!(&t[0..4], &[0, 80, 0x9c, 0x40], "ports swapped");
    assert_eq!(t[12] >> 4, 5, "no options");
    assert_eq!(
        ones_sum(t, pseudo(&ip[12..16], &ip[16..20], 6, 20)),
        0xffff,
        "TCP checksum"
    );
    let flags = u16::from_be_bytes([t[12], t[13]]) & 0x0fff;
    (be32(&t[4..8]), be32(&t[8..12]), flags)
}

#[test]
fn rst_without_ack_acknowledges_the_segment() {
    // SYN: SEG.LEN counts the SYN.
    assert_eq!(
        rst_for(tcp::SYN, 1000, 0, b""),
        (0, 1001, tcp::RST | tcp::ACK)
    );
    // SYN + FIN + 10 bytes: 12; the sequence space wraps.
    assert_eq!(
        rst_for(tcp::SYN | tcp::FIN, u32::MAX - 5, 0, &[7; 10]),
        (0, 6, tcp::RST | tcp::ACK)
    );
    // A bare data segment without ACK.
    assert_eq!(
        rst_for(tcp::PSH, 500, 0, &[1; 3]),
        (0, 503, tcp::RST | tcp::ACK)
    );
}

#[test]
fn rst_with_ack_takes_its_sequence_from_the_ack() {
    assert_eq!(
        rst_for(tcp::ACK, 1000, 0xdead_beef, b""),
        (0xdead_beef, 0, tcp::RST)
    );
    assert_eq!(
        rst_for(tcp::ACK | tcp::PSH, 1000, 77, b"GET / HTTP/1.1\r\n"),
        (77, 0, tcp::RST)
    );
}

#[test]
fn icmp_quotes_the_datagram_within_576_bytes() {
    for (payload_len, quoted) in [(12usize, 20 + 8 + 12), (2000, 548)] {
        let req = PacketBuilder::udp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 5353, 53)
            .payload(&vec![0x5a; payload_len])
            .build();
        let k = key_of(&req, 7);
        let mut out = vec![0; ANSWER_MAX];
        let n = icmp_port_unreachable(&Request::from_key(&k), &req[14..], &mut out);
        let (dst, src, ip, m) = decode(&out[..n]);
        assert_eq!((dst, src), (CLIENT_MAC, NODE_MAC));
        assert_eq!(ip[9], 1);
        assert_eq!((be32(&ip[12..16]), be32(&ip[16..20])), (SERVICE, CLIENT));
        assert!(n - 14 <= ICMP_ERROR_MAX);
        assert_eq!((m[0], m[1]), (3, 3), "port unreachable");
        assert_eq!(&m[4..8], &[0; 4]);
        assert_eq!(ones_sum(m, 0), 0xffff, "ICMP checksum");
        assert_eq!(m.len() - 8, quoted);
        assert_eq!(&m[8..], &req[14..14 + quoted], "quote is the datagram");
    }
}

#[test]
fn tagged_request_gets_a_tagged_answer() {
    let req = PacketBuilder::udp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 5353, 53)
        .vlan(100)
        .build();
    let k = key_of(&req, 7);
    let mut out = vec![0; ANSWER_MAX];
    let n = icmp_port_unreachable(&Request::from_key(&k), &req[18..], &mut out);
    assert_eq!(&out[12..16], &[0x81, 0x00, 0x00, 100]);
    let mut k2 = FlowKey::ZERO;
    let l = extract(&out[..n], 7, &mut k2).unwrap();
    assert!(l.vlan);
    assert_eq!(k2.get(slot::NW_DST) as u32, CLIENT);
}

#[test]
fn never_answered_cases() {
    let tcp = |src: u32, dst: u32, flags: u16| {
        PacketBuilder::tcp(CLIENT_MAC, NODE_MAC, src, dst, 1, 80)
            .flags(flags)
            .build()
    };
    assert!(answerable(&key_of(&tcp(CLIENT, SERVICE, tcp::SYN), 1)));
    assert!(!answerable(&key_of(
        &tcp(CLIENT, SERVICE, tcp::RST | tcp::ACK),
        1
    )));
    for src in [0, u32::MAX, 0xe000_0001, 0xf000_0001] {
        assert!(
            !answerable(&key_of(&tcp(src, SERVICE, tcp::SYN), 1)),
            "{src:x}"
        );
    }
    for dst in [u32::MAX, 0xe000_00fb] {
        assert!(
            !answerable(&key_of(&tcp(CLIENT, dst, tcp::SYN), 1)),
            "{dst:x}"
        );
    }
    let group_src = PacketBuilder::tcp(0x0100_5e00_0001u64, NODE_MAC, CLIENT, SERVICE, 1, 80)
        .flags(tcp::SYN)
        .build();
    assert!(!answerable(&key_of(&group_src, 1)));
    let icmp =
        PacketBuilder::icmp_echo_request(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 1, 1).build();
    assert!(!answerable(&key_of(&icmp, 1)));
    let later = PacketBuilder::udp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 1, 53)
        .fragment(100, false)
        .build();
    assert!(!answerable(&key_of(&later, 1)));
    let first = PacketBuilder::udp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 1, 53)
        .fragment(0, true)
        .build();
    assert!(
        answerable(&key_of(&first, 1)),
        "a first fragment is answered"
    );
    let arp = PacketBuilder::arp_request(CLIENT_MAC, CLIENT, SERVICE).build();
    assert!(!answerable(&key_of(&arp, 1)));
}

#[test]
fn token_bucket_limits_the_rate() {
    let mut b = TokenBucket::default();
    let t0 = 1_000_000;
    let sent = (0..BURST + 10).filter(|_| b.take(t0)).count() as u64;
    assert_eq!(sent, BURST);
    assert!(!b.take(t0));
    // One token per millisecond at 1000/s.
    assert!(b.take(t0 + 1));
    assert!(!b.take(t0 + 1));
    // A clock that goes backwards refills nothing.
    assert!(!b.take(t0));
    // A long pause refills the burst, no more.
    let later = t0 + 3_600_000;
    assert_eq!(
        (0..BURST + 10).filter(|_| b.take(later)).count() as u64,
        BURST
    );
}

#[test]
fn malformed_bytes_are_not_answered_and_never_panic() {
    let mut st = RejectState::default();
    let syn = PacketBuilder::tcp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 1, 80)
        .flags(tcp::SYN)
        .build();
    let k = key_of(&syn, 1);
    // The origin is fine, but the current bytes are cut or garbage.
    for cut in [0, 10, 14, 20, 33, 40, 53] {
        st.begin(&k);
        assert_eq!(
            st.answer(&syn[..cut], 1_000_000),
            Outcome::Dropped(DropReason::RejectNotAnswerable),
            "cut at {cut}"
        );
    }
    // Pseudo-random frames: whatever the bytes, no panic.
    let mut x: u64 = 0x1234_5678;
    for i in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut f = syn.clone();
        let pos = (x as usize) % f.len();
        f[pos] = (x >> 32) as u8;
        f.truncate(((x >> 40) as usize % (f.len() + 1)).max(pos.min(f.len())));
        st.begin(&key_of(&syn, 1));
        let _ = st.answer(&f, 1_000_000 + i);
    }
    // A second REJECT in the same walk sends nothing more.
    st.begin(&k);
    assert!(matches!(st.answer(&syn, 2_000_000), Outcome::Sent { .. }));
    assert_eq!(st.answer(&syn, 2_000_000), Outcome::Already);
}

/// A NodePort-like chain: DNAT in zone 5 (committed), then REJECT. Returns
/// each packet's outputs.
const CHAIN: &str = "\
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=5,nat)
table=1,priority=10,ct_state=+new+trk,tcp,actions=ct(commit,table=2,zone=5,nat(dst=10.9.9.9))
table=1,priority=10,ct_state=+new+trk,udp,actions=ct(commit,table=2,zone=5,nat(dst=10.9.9.9))
table=1,priority=5,ct_state=+inv+trk,ip,actions=output:2
table=2,priority=10,ip,actions=controller(reason=no_match,userdata=52.45.4a.45.43.54)
";

struct Run {
    p: Pipeline,
    ct: Shard,
    stats: ExecStats,
    scratch: Scratch,
    now: u64,
    cache: Option<crate::cache::MegaflowCache>,
}

impl Run {
    fn new(flows: &str) -> Run {
        Run {
            p: Pipeline::new(parse::parse_flows("f", flows).unwrap(), vec![]),
            ct: Shard::default(),
            stats: ExecStats::default(),
            scratch: Scratch::default(),
            now: 1_000_000,
            cache: None,
        }
    }

    /// Through the flow cache (megaflows, exact match, whole-walk chains).
    fn cached(flows: &str) -> Run {
        let mut r = Run::new(flows);
        r.cache = Some(crate::cache::MegaflowCache::new(1024, true));
        r
    }

    fn send(&mut self, pkt: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let ports = [1u32, 2];
        let mut out = Vec::new();
        let mut e = Engine {
            pipeline: &self.p,
            ports: &ports[..],
            ct: &mut self.ct,
            now_ms: self.now,
            stats: &mut self.stats,
            cache: self.cache.as_mut(),
            scratch: &mut self.scratch,
        };
        let mut buf = pkt.to_vec();
        e.process(
            &mut buf,
            1,
            &mut |p: u32, b: &[u8]| out.push((p, b.to_vec())),
            None,
        );
        out
    }
}

#[test]
fn answer_comes_from_the_address_the_client_targeted() {
    let mut r = Run::new(CHAIN);
    let syn = PacketBuilder::tcp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 40000, 30080)
        .flags(tcp::SYN)
        .seq(7)
        .build();
    let out = r.send(&syn);
    assert_eq!(out.len(), 1);
    let (port, f) = &out[0];
    assert_eq!(*port, 1, "out of the port it came in on");
    let mut k = FlowKey::ZERO;
    extract(f, 1, &mut k).unwrap();
    assert_eq!(
        k.get(slot::NW_SRC) as u32,
        SERVICE,
        "not the DNATed 10.9.9.9"
    );
    assert_eq!(k.get(slot::NW_DST) as u32, CLIENT);
    assert_eq!((k.get(slot::TP_SRC), k.get(slot::TP_DST)), (30080, 40000));
    assert_eq!(k.get(slot::TCP_FLAGS) as u16, tcp::RST | tcp::ACK);
    assert_eq!(be32(&f[34 + 8..34 + 12]), 8);
    assert_eq!((r.stats.rejects, r.stats.tx, r.stats.punts), (1, 1, 1));
    assert_eq!(r.stats.drops.total(), 0);

    // UDP: the quote carries the original addresses and ports, checksums
    // restored: the client's stack finds its socket by them.
    let dgram = PacketBuilder::udp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 5353, 53)
        .payload(b"query")
        .build();
    let out = r.send(&dgram);
    assert_eq!(out.len(), 1);
    let (_, f) = &out[0];
    let (_, _, ip, m) = decode(f);
    assert_eq!((be32(&ip[12..16]), be32(&ip[16..20])), (SERVICE, CLIENT));
    assert_eq!(&m[8..], &dgram[14..], "the datagram as the client sent it");
    assert_eq!(r.stats.rejects, 2);
}

#[test]
fn a_retry_after_reject_behaves_like_the_first_attempt() {
    let syn = |seq: u32| {
        PacketBuilder::tcp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 40000, 30080)
            .flags(tcp::SYN)
            .seq(seq)
            .build()
    };
    let mut r = Run::new(CHAIN);
    let first = r.send(&syn(1000));
    assert_eq!(first.len(), 1);
    // The committed, never-answered entry stays, as in OVS.
    assert_eq!(r.ct.len(), 1);
    // Same 5-tuple, a new ISN far from the first: still +new (OVS's
    // CT_UPDATE_VALID_NEW), not +inv (which would go out of port 2).
    let out = r.send(&syn(0x8000_0000));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1, "answered like the first attempt");
    let mut k = FlowKey::ZERO;
    extract(&out[0].1, 1, &mut k).unwrap();
    assert_eq!(k.get(slot::NW_SRC) as u32, SERVICE);
    assert_eq!(be32(&out[0].1[34 + 8..34 + 12]), 0x8000_0001);
    // UDP from the same socket, twice.
    let dgram = PacketBuilder::udp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 5353, 53).build();
    let a = r.send(&dgram);
    let b = r.send(&dgram);
    assert_eq!(a, b, "identical answers");
    assert_eq!(a.len(), 1);
    assert_eq!(r.ct.len(), 2);
    assert_eq!(r.stats.rejects, 4);
    assert_eq!(r.stats.drops.total(), 0);
}

#[test]
fn over_the_rate_answers_are_dropped_and_counted() {
    let mut r = Run::new(CHAIN);
    let mut answered = 0;
    for i in 0..(BURST + 5) as u16 {
        let syn = PacketBuilder::tcp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 1000 + i, 30080)
            .flags(tcp::SYN)
            .build();
        answered += r.send(&syn).len() as u64;
    }
    assert_eq!(answered, BURST);
    assert_eq!(r.stats.rejects, BURST);
    assert_eq!(r.stats.drops.get(DropReason::RejectRateLimited), 5);
    r.now += 1000;
    let rst = PacketBuilder::tcp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 999, 30080)
        .flags(tcp::RST)
        .build();
    assert!(r.send(&rst).is_empty());
    assert_eq!(r.stats.drops.get(DropReason::RejectNotAnswerable), 1);
}

#[test]
fn other_controller_actions_stay_counted_drops() {
    let mut r = Run::new("table=0,priority=10,ip,actions=controller(reason=no_match)\n");
    let syn = PacketBuilder::tcp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 1, 80)
        .flags(tcp::SYN)
        .build();
    assert!(r.send(&syn).is_empty());
    assert_eq!(r.stats.drops.get(DropReason::ControllerPunt), 1);
    assert_eq!(r.stats.rejects, 0);
}

#[test]
fn the_cached_path_answers_like_the_interpreter() {
    let (mut plain, mut cached) = (Run::new(CHAIN), Run::cached(CHAIN));
    for i in 0..6u16 {
        // Same flow each time (cache hits after the first), then new ports.
        let sport = 40000 + i / 3;
        let syn = PacketBuilder::tcp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, sport, 30080)
            .flags(tcp::SYN)
            .seq(100 + i as u32)
            .build();
        let dgram = PacketBuilder::udp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, sport, 53).build();
        for p in [&syn, &dgram] {
            let a = plain.send(p);
            let b = cached.send(p);
            assert_eq!(a.len(), 1, "packet {i}");
            assert_eq!(a, b, "packet {i}: cache and interpreter differ");
        }
    }
    assert_eq!(cached.stats.rejects, 12);
    let c = cached.cache.as_ref().unwrap();
    assert!(c.stats.emc_hits + c.stats.megaflow_hits > 0);
    // Nothing committed: every packet meets the same conntrack answers, so
    // the whole walk replays from a recorded chain.
    let uncommitted = "\
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=5)
table=1,priority=10,ct_state=+new+trk,ip,actions=controller(reason=no_match,userdata=52.45.4a.45.43.54)
";
    let (mut plain, mut cached) = (Run::new(uncommitted), Run::cached(uncommitted));
    let syn = PacketBuilder::tcp(CLIENT_MAC, NODE_MAC, CLIENT, SERVICE, 40000, 80)
        .flags(tcp::SYN)
        .build();
    for i in 0..4 {
        let (a, b) = (plain.send(&syn), cached.send(&syn));
        assert_eq!(a.len(), 1, "packet {i}");
        assert_eq!(a, b, "packet {i}");
    }
    assert!(cached.cache.as_ref().unwrap().stats.chain_hits >= 2);
    assert_eq!(cached.stats.rejects, 4);
}

#[test]
fn the_snapshot_holds_every_slot_an_answer_reads() {
    for s in ORIGIN_SLOTS {
        assert!((s.word as usize) < ORIGIN_WORDS, "{s:?}");
    }
}
