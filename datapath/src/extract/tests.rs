//! Unit and property tests of the extract module.

use super::*;
use crate::key::reg_slot;
use crate::key::{frag, slot};
use crate::wire::build::{ACK, PacketBuilder, SYN};
use crate::wire::checksum::update16;
use crate::wire::icmp::IcmpPacket;
use crate::wire::igmp;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use conntrack::{L4 as CtL4, Rewrite, TcpInfo, Tuple};
use proptest::prelude::*;

const A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const IP_A: [u8; 4] = [10, 0, 0, 1];
const IP_B: [u8; 4] = [10, 0, 0, 2];

fn key_of(pkt: &[u8]) -> (FlowKey, Layout) {
    let mut k = FlowKey::ZERO;
    let l = extract(pkt, 7, &mut k).expect("extracts");
    (k, l)
}

/// A tagged TCP SYN with an IP option and Ethernet padding, as bytes.
#[rustfmt::skip]
const TAGGED_SYN: [u8; 66] = [
    0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, // dst, src
    0x81, 0x00, 0xa0, 0x64, 0x08, 0x00,       // vlan pcp 5 vid 100, IPv4
    0x46, 0xb8, 0x00, 0x2c, 0x12, 0x34, 0x40, 0x00, 0x3f, 0x06, 0x00, 0x00, // csum unchecked
    10, 0, 0, 1, 10, 0, 0, 2,
    0x01, 0x01, 0x01, 0x00,                   // options: NOP NOP NOP EOL
    0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0xc2, 0xff, 0xff, 0, 0, 0, 0,
    0, 0, 0, 0,                               // padding beyond total length 44
];

#[test]
fn golden_tagged_syn() {
    let (k, l) = key_of(&TAGGED_SYN);
    assert_eq!(k.get(slot::IN_PORT), 7);
    assert_eq!(k.get(slot::DL_DST), 0x0200_0000_0002);
    assert_eq!(k.get(slot::DL_SRC), 0x0200_0000_0001);
    assert_eq!(k.get(slot::VLAN_TCI), 0xb064, "CFI marks the tag");
    assert_eq!(k.get(slot::DL_TYPE), 0x0800);
    assert_eq!(k.get(slot::NW_TOS), 0xb8);
    assert_eq!(k.get(slot::NW_TTL), 0x3f);
    assert_eq!(k.get(slot::NW_PROTO), 6);
    assert_eq!(k.get(slot::NW_FRAG), 0);
    assert_eq!(k.get(slot::NW_SRC), 0x0a00_0001);
    assert_eq!(k.get(slot::NW_DST), 0x0a00_0002);
    assert_eq!(k.get(slot::TP_SRC), 40000);
    assert_eq!(k.get(slot::TP_DST), 80);
    assert_eq!(k.get(slot::TCP_FLAGS), 0x0c2, "SYN|ECE|CWR");
    assert_eq!(
        l,
        Layout {
            l3: 18,
            l4: 42,
            ip_end: 62,
            proto: Proto::Tcp,
            vlan: true,
            fragment: false,
            later_fragment: false,
        }
    );
}

#[test]
fn metadata_untouched_and_stale_headers_cleared() {
    let mut k = FlowKey::ZERO;
    k.set(reg_slot(3), 0xdead);
    k.set(slot::CT_ZONE, 9);
    k.set(slot::CT_STATE, 0x21);
    k.set(slot::CT_NW_PROTO, 6);
    k.set(slot::RECIRC_ID, 5);
    k.set(slot::METADATA, 1);
    k.set(slot::PKT_MARK, 3);
    k.set_ct_label(77);
    let before = k;
    extract(&TAGGED_SYN, 1, &mut k).unwrap();
    let arp = PacketBuilder::arp_request(A, IP_A, IP_B).build();
    extract(&arp, 1, &mut k).unwrap();
    for s in [
        slot::CT_ZONE,
        slot::CT_STATE,
        slot::CT_NW_PROTO,
        slot::RECIRC_ID,
        slot::METADATA,
        slot::PKT_MARK,
        reg_slot(3),
    ] {
        assert_eq!(k.get(s), before.get(s), "{s:?}");
    }
    assert_eq!(k.ct_label(), 77);
    // The TCP fields of the previous packet are gone.
    assert_eq!(k.get(slot::TP_SRC), 0);
    assert_eq!(k.get(slot::TCP_FLAGS), 0);
    assert_eq!(k.get(slot::VLAN_TCI), 0);
    assert_eq!(k.get(slot::NW_TTL), 0);
    assert_eq!(k.get(slot::NW_PROTO), 1, "ARP op in nw_proto");
}

#[test]
fn arp_fields_and_ovs_quirks() {
    let f = PacketBuilder::arp_reply(A, IP_A, B, IP_B).build();
    let (k, l) = key_of(&f);
    assert_eq!(l.proto, Proto::Arp);
    assert_eq!(k.get(slot::DL_TYPE), 0x0806);
    assert_eq!(k.get(slot::NW_PROTO), 2);
    assert_eq!(k.get(slot::NW_SRC), 0x0a00_0001);
    assert_eq!(k.get(slot::NW_DST), 0x0a00_0002);
    assert_eq!(k.get(slot::ARP_SHA), 0x0200_0000_0001);
    assert_eq!(k.get(slot::ARP_THA), 0x0200_0000_0002);
    // Opcode above 255: no arp_op, other fields still there.
    let mut g = f.clone();
    g[20] = 0x01;
    let (k, _) = key_of(&g);
    assert_eq!(k.get(slot::NW_PROTO), 0);
    assert_eq!(k.get(slot::NW_SRC), 0x0a00_0001);
    // Not Ethernet/IPv4: L2 only.
    let mut g = f.clone();
    g[14 + 5] = 16;
    let (k, l) = key_of(&g);
    assert_eq!(l.proto, Proto::L2);
    assert_eq!(k.get(slot::NW_SRC), 0);
    assert_eq!(k.get(slot::DL_TYPE), 0x0806);
    // RARP parses the same way.
    let mut g = f.clone();
    g[12..14].copy_from_slice(&[0x80, 0x35]);
    let (k, l) = key_of(&g);
    assert_eq!(l.proto, Proto::Arp);
    assert_eq!(k.get(slot::DL_TYPE), 0x8035);
    // Truncated body drops.
    let mut k = FlowKey::ZERO;
    assert_eq!(extract(&f[..41], 1, &mut k), Err(DropReason::ArpTruncated));
}

#[test]
fn other_ethertypes_and_llc() {
    let v6 = PacketBuilder::ethernet(A, B, 0x86dd)
        .payload(&[0x60; 40])
        .build();
    let (k, l) = key_of(&v6);
    assert_eq!(l.proto, Proto::L2);
    assert_eq!(k.get(slot::DL_TYPE), 0x86dd);
    assert_eq!(k.get(slot::NW_SRC) | k.get(slot::NW_TTL), 0);
    // 802.3 + LLC (STP): FLOW_DL_TYPE_NONE.
    let stp = PacketBuilder::ethernet(A, B, 38)
        .payload(&[0x42, 0x42, 0x03, 0, 0, 0, 0, 0])
        .build();
    assert_eq!(key_of(&stp).0.get(slot::DL_TYPE), DL_TYPE_NONE as u64);
    // 802.3 + SNAP carrying IPv4: parsed behind the 8-byte LLC/SNAP.
    let ip = PacketBuilder::udp(A, B, IP_A, IP_B, 1, 2).build_ip();
    let mut snap = vec![0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00];
    snap.extend_from_slice(&ip);
    let f = PacketBuilder::ethernet(A, B, snap.len() as u16)
        .payload(&snap)
        .build();
    let (k, l) = key_of(&f);
    assert_eq!(k.get(slot::DL_TYPE), 0x0800);
    assert_eq!((l.l3, l.proto), (22, Proto::Udp));
    assert_eq!(k.get(slot::TP_DST), 2);
    // Double tag: the inner TPID is the dl_type.
    let qinq = PacketBuilder::ethernet(A, B, 0x8100)
        .vlan(5)
        .payload(&[0, 6, 8, 0])
        .build();
    let (k, l) = key_of(&qinq);
    assert_eq!(k.get(slot::DL_TYPE), 0x8100);
    assert_eq!(k.get(slot::VLAN_TCI), 0x1005);
    assert_eq!(l.proto, Proto::L2);
}

#[test]
fn drop_reasons() {
    let tcp = PacketBuilder::tcp(A, B, IP_A, IP_B, 1, 2).build();
    let mut k = FlowKey::ZERO;
    let mut check = |f: &[u8], want: DropReason| {
        assert_eq!(extract(f, 1, &mut k), Err(want), "{f:02x?}");
    };
    check(&tcp[..13], DropReason::EthTruncated);
    check(&TAGGED_SYN[..17], DropReason::VlanTruncated);
    check(&tcp[..33], DropReason::Ipv4Malformed);
    let mut f = tcp.clone();
    f[14] = 0x65; // version 6
    check(&f, DropReason::Ipv4Malformed);
    f[14] = 0x44; // IHL 4
    check(&f, DropReason::Ipv4Malformed);
    f[14] = 0x4f; // 60-byte header in a 40-byte packet
    check(&f, DropReason::Ipv4Malformed);
    let mut f = tcp.clone();
    f[16..18].copy_from_slice(&19u16.to_be_bytes());
    check(&f, DropReason::Ipv4BadLength);
    f[16..18].copy_from_slice(&41u16.to_be_bytes());
    check(&f, DropReason::Ipv4BadLength);
    // TCP: short, offset < 5, header beyond IP end.
    check(&tcp[..53], DropReason::Ipv4BadLength);
    let mut f = tcp.clone();
    f[16..18].copy_from_slice(&39u16.to_be_bytes());
    check(&f, DropReason::TcpMalformed);
    let mut f = tcp.clone();
    f[46] = 0x40;
    check(&f, DropReason::TcpMalformed);
    f[46] = 0x60;
    check(&f, DropReason::TcpMalformed);
    let udp = PacketBuilder::udp(A, B, IP_A, IP_B, 1, 2).build();
    let mut f = udp.clone();
    f[16..18].copy_from_slice(&27u16.to_be_bytes());
    check(&f, DropReason::UdpMalformed);
    let icmp = PacketBuilder::icmp_echo_request(A, B, IP_A, IP_B, 1, 1).build();
    let mut f = icmp.clone();
    f[16..18].copy_from_slice(&27u16.to_be_bytes());
    check(&f, DropReason::IcmpMalformed);
    let igmp = PacketBuilder::igmp(A, B, IP_A, [224, 0, 0, 22], 0x16, [239, 1, 1, 1]).build();
    let mut f = igmp.clone();
    f[16..18].copy_from_slice(&27u16.to_be_bytes());
    check(&f, DropReason::IgmpMalformed);
}

#[test]
fn padding_kept_and_fragments() {
    let f = PacketBuilder::udp(A, B, IP_A, IP_B, 1, 2)
        .pad_to(60)
        .build();
    let (_, l) = key_of(&f);
    assert_eq!((l.ip_end, f.len()), (42, 60));
    assert!(ct_packet(&f, &l).valid, "padding is not checksummed");
    let first = PacketBuilder::tcp(A, B, IP_A, IP_B, 1, 2)
        .fragment(0, true)
        .build();
    let (k, l) = key_of(&first);
    assert_eq!(k.get(slot::NW_FRAG), frag::ANY as u64);
    assert_eq!(k.get(slot::TP_DST), 2);
    assert!(l.fragment && !l.later_fragment);
    assert!(ct_packet(&first, &l).fragment);
    // A later fragment needs no L4 header at all.
    let later = PacketBuilder::ipv4(A, B, IP_A, IP_B, 6)
        .fragment(100, false)
        .payload(&[1, 2, 3])
        .build();
    let (k, l) = key_of(&later);
    assert_eq!(k.get(slot::NW_FRAG), (frag::ANY | frag::LATER) as u64);
    assert_eq!(k.get(slot::NW_PROTO), 6);
    assert_eq!(k.get(slot::TP_SRC) | k.get(slot::TP_DST), 0);
    assert_eq!(l.proto, Proto::Ipv4);
    let c = ct_packet(&later, &l);
    assert!(!c.valid && c.fragment);
}

#[test]
fn icmp_and_igmp_key() {
    let f = PacketBuilder::icmp(A, B, IP_A, IP_B, 3, 4, 0).build();
    let (k, l) = key_of(&f);
    assert_eq!((k.get(slot::TP_SRC), k.get(slot::TP_DST)), (3, 4));
    assert_eq!(l.proto, Proto::Icmp);
    // An ICMP error with a short quote is not a drop.
    let f = PacketBuilder::icmp_error(A, B, IP_A, IP_B, 11, 0, &[0x45, 0]).build();
    let (k, l) = key_of(&f);
    assert_eq!(k.get(slot::TP_SRC), 11);
    let c = ct_packet(&f, &l);
    assert!(!c.valid);
    let f = PacketBuilder::igmp(A, B, IP_A, [224, 0, 0, 22], 0x16, [239, 1, 1, 1]).build();
    let (k, l) = key_of(&f);
    assert_eq!((k.get(slot::TP_SRC), k.get(slot::TP_DST)), (0x16, 0));
    assert_eq!(l.proto, Proto::Igmp);
    assert!(ct_packet(&f, &l).valid);
}

/// Commit then re-extract: the packet now carries `to`, with checksums
/// that verify.
fn commit_and_check(pkt: &[u8], edit: impl Fn(&mut FlowKey)) -> (Vec<u8>, FlowKey) {
    let mut p = pkt.to_vec();
    let (from, l) = key_of(&p);
    let mut to = from;
    edit(&mut to);
    commit(&mut p, &l, &from, &to);
    let (got, l2) = key_of(&p);
    assert_eq!(l, l2);
    (p, got)
}

#[test]
fn commit_ipv4_tcp_fields() {
    let f = PacketBuilder::tcp(A, B, IP_A, IP_B, 1000, 80)
        .flags(SYN | ACK)
        .payload(b"hello")
        .build();
    let (p, got) = commit_and_check(&f, |k| {
        k.set(slot::NW_SRC, 0xc0a8_0101);
        k.set(slot::NW_DST, 0xc0a8_0102);
        k.set(slot::TP_SRC, 5555);
        k.set(slot::TP_DST, 8080);
        k.set(slot::NW_TOS, 0x2e << 2 | 1);
        k.set(slot::NW_TTL, 3);
        k.set(slot::DL_SRC, 0xaabb_ccdd_eeff);
    });
    assert_eq!(got.get(slot::NW_SRC), 0xc0a8_0101);
    assert_eq!(got.get(slot::TP_DST), 8080);
    assert_eq!(got.get(slot::NW_TOS), 0xb9);
    assert_eq!(got.get(slot::NW_TTL), 3);
    assert_eq!(got.get(slot::DL_SRC), 0xaabb_ccdd_eeff);
    let (_, l) = key_of(&p);
    assert!(ct_packet(&p, &l).valid);
    // Same bytes as building the rewritten packet directly.
    let want = PacketBuilder::tcp(
        [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
        B,
        [192, 168, 1, 1],
        [192, 168, 1, 2],
        5555,
        8080,
    )
    .flags(SYN | ACK)
    .tos(0xb9)
    .ttl(3)
    .payload(b"hello")
    .build();
    assert_eq!(p, want);
}

#[test]
fn commit_keeps_wrong_checksums_wrong() {
    let bad = PacketBuilder::tcp(A, B, IP_A, IP_B, 1, 2)
        .bad_l4_checksum()
        .bad_ip_checksum()
        .build();
    let (mut p, _) = commit_and_check(&bad, |k| {
        k.set(slot::NW_DST, 0x0b00_0001);
        k.set(slot::TP_DST, 99);
    });
    let (_, l) = key_of(&p);
    assert!(!ct_packet(&p, &l).valid);
    // Each checksum is off from the correct one by exactly what it was
    // off on arrival (one's-complement difference).
    let good = PacketBuilder::tcp(A, B, IP_A, [11, 0, 0, 1], 1, 99).build();
    let good_in = PacketBuilder::tcp(A, B, IP_A, IP_B, 1, 2).build();
    let at = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]) as u32;
    let diff = |a: u32, b: u32| (a + 0xffff - b) % 0xffff;
    for off in [24, 50] {
        assert_ne!(at(&p, off), at(&good, off));
        assert_eq!(
            diff(at(&p, off), at(&good, off)),
            diff(at(&bad, off), at(&good_in, off)),
            "checksum at {off}"
        );
    }
    p[24..26].copy_from_slice(&good[24..26]);
    p[50..52].copy_from_slice(&good[50..52]);
    assert_eq!(p, good);
}

#[test]
fn commit_udp_zero_checksum_stays_zero() {
    let f = PacketBuilder::udp(A, B, IP_A, IP_B, 1, 2)
        .no_udp_checksum()
        .build();
    let (p, _) = commit_and_check(&f, |k| {
        k.set(slot::NW_SRC, 0x0102_0304);
        k.set(slot::TP_SRC, 7);
    });
    assert_eq!(&p[40..42], &[0, 0]);
    let (_, l) = key_of(&p);
    assert!(ct_packet(&p, &l).valid);
}

#[test]
fn commit_udp_zero_result_becomes_ffff() {
    // Find a source port for which the incrementally updated checksum
    // would be 0: it must be stored as 0xffff.
    let f = PacketBuilder::udp(A, B, IP_A, IP_B, 1, 2).build();
    let csum = u16::from_be_bytes([f[40], f[41]]);
    // update16(csum, 1, new) == 0  <=>  fold(~csum + ~1 + new) == 0xffff.
    let new = (0..=0xffffu16)
        .find(|n| update16(csum, 1, *n) == 0)
        .expect("some port zeroes it");
    let (p, _) = commit_and_check(&f, |k| k.set(slot::TP_SRC, new as u64));
    assert_eq!(&p[40..42], &[0xff, 0xff]);
    let (_, l) = key_of(&p);
    assert!(ct_packet(&p, &l).valid);
}

#[test]
fn commit_later_fragment_leaves_payload() {
    let f = PacketBuilder::ipv4(A, B, IP_A, IP_B, 6)
        .fragment(10, false)
        .payload(&[0x55; 24])
        .build();
    let (p, _) = commit_and_check(&f, |k| k.set(slot::NW_SRC, 1));
    assert_eq!(&p[34..], &[0x55; 24]);
    let ip = Ipv4Packet::new_checked(&p[14..]).unwrap();
    assert!(ip.verify_checksum());
}

#[test]
fn commit_vlan_icmp_arp() {
    let f = PacketBuilder::icmp_echo_request(A, B, IP_A, IP_B, 9, 1)
        .vlan(0x1064) // DEI set on the wire
        .build();
    let (p, got) = commit_and_check(&f, |k| {
        k.set(slot::VLAN_TCI, 0x1000 | 0x6000 | 200);
        k.set(slot::TP_SRC, 0);
        k.set(slot::TP_DST, 0);
    });
    assert_eq!(&p[14..16], &[0x60, 200]);
    assert_eq!(got.get(slot::VLAN_TCI), 0x7000 | 200);
    assert_eq!(got.get(slot::TP_SRC), 0);
    let (_, l) = key_of(&p);
    assert!(ct_packet(&p, &l).valid, "ICMP checksum updated");
    // Removing the tag is not representable: ignored.
    let (p2, _) = commit_and_check(&f, |k| k.set(slot::VLAN_TCI, 0));
    assert_eq!(p2, f);

    let a = PacketBuilder::arp_request(A, IP_A, IP_B).build();
    let (p, got) = commit_and_check(&a, |k| {
        k.set(slot::NW_PROTO, 2);
        k.set(slot::NW_SRC, 0x0a00_0002);
        k.set(slot::NW_DST, 0x0a00_0001);
        k.set(slot::ARP_SHA, 0x0200_0000_0002);
        k.set(slot::ARP_THA, 0x0200_0000_0001);
        k.set(slot::DL_DST, 0x0200_0000_0001);
    });
    assert_eq!(got.get(slot::NW_PROTO), 2);
    // Ethernet source unchanged (A), destination now A too.
    let want = PacketBuilder::arp(A, A, 2, B, IP_B, A, IP_A).build();
    assert_eq!(p, want);
}

#[test]
fn ct_packet_tcp_udp_icmp() {
    let f = PacketBuilder::tcp(A, B, IP_A, IP_B, 40000, 80)
        .flags(SYN)
        .seq(7)
        .ack(9)
        .win(1000)
        .wscale(20)
        .payload(&[0; 10])
        .build();
    let (_, l) = key_of(&f);
    let c = ct_packet(&f, &l);
    assert!(c.valid && !c.fragment);
    assert_eq!(
        c.tuple,
        Tuple {
            src: 0x0a00_0001,
            dst: 0x0a00_0002,
            sport: 40000,
            dport: 80,
            proto: 6
        }
    );
    assert_eq!(
        c.l4,
        CtL4::Tcp(TcpInfo {
            flags: SYN,
            seq: 7,
            ack: 9,
            win: 1000,
            wscale: Some(14),
            payload_len: 10
        })
    );
    let f = PacketBuilder::icmp_echo_reply(A, B, IP_A, IP_B, 0x4242, 3).build();
    let (_, l) = key_of(&f);
    let c = ct_packet(&f, &l);
    assert!(c.valid);
    assert_eq!((c.tuple.sport, c.tuple.dport), (0x4242, 0x4242));
    assert_eq!(c.l4, CtL4::IcmpQuery { ty: 0, code: 0 });
    // Query with a non-zero code, and an unknown type: invalid (OVS).
    for (ty, code) in [(8, 1), (9, 0)] {
        let f = PacketBuilder::icmp(A, B, IP_A, IP_B, ty, code, 0).build();
        let (_, l) = key_of(&f);
        assert!(!ct_packet(&f, &l).valid);
    }
    // UDP length beyond the datagram: invalid.
    let mut f = PacketBuilder::udp(A, B, IP_A, IP_B, 1, 2)
        .no_udp_checksum()
        .build();
    f[39] = 9;
    let (_, l) = key_of(&f);
    assert!(!ct_packet(&f, &l).valid);
    // Non-IP: never valid.
    let a = PacketBuilder::arp_request(A, IP_A, IP_B).build();
    let (_, l) = key_of(&a);
    assert!(!ct_packet(&a, &l).valid);
}

#[test]
fn ct_packet_icmp_error_inner() {
    let inner = PacketBuilder::tcp(B, A, IP_B, [8, 8, 8, 8], 33000, 443).build_ip();
    let f = PacketBuilder::icmp_error(A, B, [9, 9, 9, 9], IP_B, 3, 1, &inner).build();
    let (_, l) = key_of(&f);
    let c = ct_packet(&f, &l);
    assert!(c.valid);
    assert_eq!(
        c.l4,
        CtL4::IcmpError {
            ty: 3,
            code: 1,
            inner: Tuple {
                src: 0x0a00_0002,
                dst: 0x0808_0808,
                sport: 33000,
                dport: 443,
                proto: 6
            }
        }
    );
    // Quote of 27 bytes (header + 7): invalid, inner zeroed.
    let f = PacketBuilder::icmp_error(A, B, [9, 9, 9, 9], IP_B, 3, 1, &inner)
        .quote_len(27)
        .build();
    let (_, l) = key_of(&f);
    let c = ct_packet(&f, &l);
    assert!(!c.valid);
    assert!(matches!(c.l4, CtL4::IcmpError { inner, .. } if inner == Tuple::default()));
    // Inner ICMP echo: id in both ports.
    let echo = PacketBuilder::icmp_echo_request(B, A, IP_B, [8, 8, 8, 8], 77, 1).build_ip();
    let f = PacketBuilder::icmp_error(A, B, [9, 9, 9, 9], IP_B, 11, 0, &echo).build();
    let (_, l) = key_of(&f);
    let c = ct_packet(&f, &l);
    assert!(c.valid);
    assert!(
        matches!(c.l4, CtL4::IcmpError { inner, .. } if inner.sport == 77 && inner.dport == 77)
    );
}

#[test]
fn rewrite_snat_tcp_and_echo() {
    let f = PacketBuilder::tcp(A, B, IP_A, IP_B, 40000, 80).build();
    let mut p = f.clone();
    let (_, l) = key_of(&p);
    let mut outer = ct_packet(&p, &l).tuple;
    outer.src = 0xac10_0001;
    outer.sport = 1024;
    apply_rewrite(&mut p, &l, &Rewrite { outer, inner: None });
    let want = PacketBuilder::tcp(A, B, [172, 16, 0, 1], IP_B, 1024, 80).build();
    assert_eq!(p, want);

    let f = PacketBuilder::icmp_echo_request(A, B, IP_A, IP_B, 5, 1).build();
    let mut p = f.clone();
    let (_, l) = key_of(&p);
    let mut outer = ct_packet(&p, &l).tuple;
    outer.dst = 0x0a00_0063;
    outer.sport = 6;
    outer.dport = 6;
    apply_rewrite(&mut p, &l, &Rewrite { outer, inner: None });
    let want = PacketBuilder::icmp_echo_request(A, B, IP_A, [10, 0, 0, 99], 6, 1).build();
    assert_eq!(p, want);
}

#[test]
fn rewrite_icmp_error_inner_udp_and_tcp() {
    // A reply-direction error for an SNATed flow: the router saw the
    // translated source 172.16.0.1:1024; NAT restores 10.0.0.1:40000.
    for tcp_inner in [false, true] {
        let mk = |src: [u8; 4], sport: u16| {
            let b = if tcp_inner {
                PacketBuilder::tcp(A, B, src, [8, 8, 8, 8], sport, 53)
            } else {
                PacketBuilder::udp(A, B, src, [8, 8, 8, 8], sport, 53)
            };
            b.payload(b"0123456789").build_ip()
        };
        let quote_all = |b: PacketBuilder, q: &[u8]| b.payload(q).build();
        let n = if tcp_inner { 40 } else { 28 };
        let seen = mk([172, 16, 0, 1], 1024);
        let orig = mk(IP_A, 40000);
        let f = quote_all(
            PacketBuilder::icmp_error(B, A, [9, 9, 9, 9], [172, 16, 0, 1], 3, 3, &seen),
            &seen[..n],
        );
        let mut p = f.clone();
        let (_, l) = key_of(&p);
        let c = ct_packet(&p, &l);
        assert!(c.valid);
        let CtL4::IcmpError { mut inner, .. } = c.l4 else {
            panic!("error")
        };
        let mut outer = c.tuple;
        outer.dst = 0x0a00_0001;
        inner.src = 0x0a00_0001;
        inner.sport = 40000;
        apply_rewrite(
            &mut p,
            &l,
            &Rewrite {
                outer,
                inner: Some(inner),
            },
        );
        let want = quote_all(
            PacketBuilder::icmp_error(B, A, [9, 9, 9, 9], IP_A, 3, 3, &orig),
            &orig[..n],
        );
        assert_eq!(p, want, "tcp_inner={tcp_inner}");
    }
}

fn arb_builder() -> impl Strategy<Value = PacketBuilder> {
    let macs = (any::<[u8; 6]>(), any::<[u8; 6]>());
    let ips = (any::<[u8; 4]>(), any::<[u8; 4]>());
    let ports = (any::<u16>(), any::<u16>());
    let ipopts = (
        any::<u8>(),
        1u8..=255,
        any::<u16>(),
        any::<bool>(),
        proptest::option::of(any::<u16>()),
    );
    let payload = proptest::collection::vec(any::<u8>(), 0..40);
    (
        macs,
        ips,
        ports,
        ipopts,
        payload,
        0u8..6,
        any::<u16>(),
        any::<u32>(),
        any::<u8>(),
    )
        .prop_map(
            |(
                (sm, dm),
                (si, di),
                (sp, dp),
                (tos, ttl, id, df, vlan),
                payload,
                kind,
                flags,
                seq,
                x,
            )| {
                let b = match kind {
                    3 => {
                        // The payload of an error is its quote.
                        let inner = PacketBuilder::udp(dm, sm, di, si, sp, dp)
                            .payload(&payload)
                            .build_ip();
                        PacketBuilder::icmp_error(sm, dm, si, di, 3, x % 16, &inner)
                    }
                    0 => PacketBuilder::tcp(sm, dm, si, di, sp, dp)
                        .flags(flags & 0xfff)
                        .seq(seq)
                        .ack(seq.rotate_left(7))
                        .win(sp ^ dp),
                    1 => PacketBuilder::udp(sm, dm, si, di, sp, dp),
                    2 => PacketBuilder::icmp_echo_request(sm, dm, si, di, sp, dp),
                    4 => PacketBuilder::igmp(sm, dm, si, di, 0x16, [239, 0, 0, x]),
                    _ => PacketBuilder::ipv4(sm, dm, si, di, 47),
                };
                let b = if kind == 3 { b } else { b.payload(&payload) };
                let b = b.tos(tos).ttl(ttl).ip_id(id).df(df);
                match vlan {
                    Some(t) => b.vlan(t),
                    None => b,
                }
            },
        )
}

proptest! {
    #[test]
    fn build_extract_roundtrip(b in arb_builder()) {
        let f = b.build();
        let ip = Ipv4Packet::new_checked(&f[if f[12] == 0x81 { 18 } else { 14 }..]).unwrap();
        let (k, l) = key_of(&f);
        prop_assert_eq!(k.get(slot::DL_DST), crate::wire::Mac::read(&f[0..6]).to_u64());
        prop_assert_eq!(k.get(slot::NW_SRC), ip.src() as u64);
        prop_assert_eq!(k.get(slot::NW_DST), ip.dst() as u64);
        prop_assert_eq!(k.get(slot::NW_TOS), ip.tos() as u64);
        prop_assert_eq!(k.get(slot::NW_TTL), ip.ttl() as u64);
        prop_assert_eq!(k.get(slot::NW_PROTO), ip.protocol() as u64);
        prop_assert_eq!(l.ip_end, f.len());
        prop_assert_eq!(l.vlan, f[12] == 0x81);
        if l.vlan {
            prop_assert_eq!(k.get(slot::VLAN_TCI), (u16::from_be_bytes([f[14], f[15]]) | 0x1000) as u64);
        }
        let l4 = &f[l.l4..];
        match l.proto {
            Proto::Tcp | Proto::Udp => {
                prop_assert_eq!(k.get(slot::TP_SRC), u16::from_be_bytes([l4[0], l4[1]]) as u64);
                prop_assert_eq!(k.get(slot::TP_DST), u16::from_be_bytes([l4[2], l4[3]]) as u64);
            }
            Proto::Icmp | Proto::Igmp => {
                prop_assert_eq!(k.get(slot::TP_SRC), l4[0] as u64);
                prop_assert_eq!(k.get(slot::TP_DST), l4[1] as u64);
            }
            _ => prop_assert_eq!(k.get(slot::TP_SRC), 0),
        }
        // Built packets verify.
        prop_assert!(ct_packet(&f, &l).valid);
    }

    #[test]
    fn built_packets_valid_flipped_invalid(b in arb_builder(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let f = b.build();
        let (_, l) = key_of(&f);
        let c = ct_packet(&f, &l);
        prop_assert!(c.valid, "{:?}", c);
        // Flip one bit in the IP header or the L4 message (conntrack, as
        // OVS's, checks no L4 checksum for IGMP and other protocols).
        let end = if matches!(l.proto, Proto::Tcp | Proto::Udp | Proto::Icmp) { l.ip_end } else { l.l4 };
        let i = l.l3 + pos.index(end - l.l3);
        let mut g = f.clone();
        g[i] ^= 1 << bit;
        // A UDP checksum flipped to 0 means "no checksum": still valid.
        let udp_csum_zeroed = l.proto == Proto::Udp && g[l.l4 + 6] == 0 && g[l.l4 + 7] == 0;
        let mut k = FlowKey::ZERO;
        if let Ok(l2) = extract(&g, 1, &mut k) {
            let c2 = ct_packet(&g, &l2);
            prop_assert!(!c2.valid || udp_csum_zeroed, "flip at {} bit {} still valid", i, bit);
        }
    }

    #[test]
    fn commit_random_changes_verify(
        b in arb_builder(),
        fields in proptest::collection::vec((0usize..10, any::<u64>()), 0..6),
    ) {
        let f = b.build();
        let mut p = f.clone();
        let (from, l) = key_of(&p);
        let mut to = from;
        for (which, v) in fields {
            let s = [
                slot::DL_SRC, slot::DL_DST, slot::NW_SRC, slot::NW_DST, slot::NW_TOS,
                slot::NW_TTL, slot::TP_SRC, slot::TP_DST, slot::VLAN_TCI, slot::NW_SRC,
            ][which];
            let mut v = v;
            if s == slot::VLAN_TCI { v |= 0x1000 }
            if matches!(l.proto, Proto::Icmp) && (s == slot::TP_SRC || s == slot::TP_DST) { v &= 0xff }
            to.set(s, v);
        }
        commit(&mut p, &l, &from, &to);
        let (got, l2) = key_of(&p);
        prop_assert_eq!(l, l2);
        // Full recomputation agrees with the incremental updates.
        prop_assert!(checksums_ok(&p, &l2));
        // Writable fields the packet carries now hold `to`.
        for s in [slot::DL_SRC, slot::DL_DST, slot::NW_SRC, slot::NW_DST, slot::NW_TOS, slot::NW_TTL] {
            prop_assert_eq!(got.get(s), to.get(s), "{:?}", s);
        }
        if matches!(l.proto, Proto::Tcp | Proto::Udp | Proto::Icmp) {
            prop_assert_eq!(got.get(slot::TP_SRC), to.get(slot::TP_SRC));
            prop_assert_eq!(got.get(slot::TP_DST), to.get(slot::TP_DST));
        }
        if l.vlan {
            prop_assert_eq!(got.get(slot::VLAN_TCI), to.get(slot::VLAN_TCI) | 0x1000);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..120),
        to_words in any::<[u64; 8]>(),
        rw in any::<(u32, u32, u16, u16, u32, u32, u16, u16)>(),
    ) {
        fuzz_one(&bytes, to_words, rw);
    }

    #[test]
    fn hand_built_layouts_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..100),
        offs in any::<(u8, u8, u8)>(),
        proto in 0usize..7,
        flags in any::<(bool, bool, bool)>(),
    ) {
        let l = Layout {
            l3: offs.0 as usize,
            l4: offs.1 as usize,
            ip_end: offs.2 as usize,
            proto: [Proto::L2, Proto::Arp, Proto::Ipv4, Proto::Tcp, Proto::Udp, Proto::Icmp, Proto::Igmp][proto],
            vlan: flags.0,
            fragment: flags.1,
            later_fragment: flags.2,
        };
        let mut p = bytes.clone();
        let mut to = FlowKey::ZERO;
        to.w[..7].copy_from_slice(&[u64::MAX; 7]);
        commit(&mut p, &l, &FlowKey::ZERO, &to);
        let _ = ct_packet(&p, &l);
        let t = Tuple { src: 1, dst: 2, sport: 3, dport: 4, proto: 6 };
        apply_rewrite(&mut p, &l, &Rewrite { outer: t, inner: Some(t) });
        prop_assert_eq!(p.len(), bytes.len());
    }

    #[test]
    fn mutated_packets_never_panic(
        b in arb_builder(),
        cut in any::<prop::sample::Index>(),
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        to_words in any::<[u64; 8]>(),
        rw in any::<(u32, u32, u16, u16, u32, u32, u16, u16)>(),
    ) {
        let mut f = b.build();
        for (i, v) in muts {
            let i = i.index(f.len());
            f[i] = v;
        }
        f.truncate(cut.index(f.len() + 1));
        fuzz_one(&f, to_words, rw);
    }
}

/// IPv4 and L4 checksums all verify (full recomputation).
fn checksums_ok(p: &[u8], l: &Layout) -> bool {
    let ip = Ipv4Packet::new_checked(&p[l.l3..l.ip_end]).unwrap();
    let l4 = &p[l.l4..l.ip_end];
    ip.verify_checksum()
        && match l.proto {
            Proto::Tcp => TcpPacket::new_checked(l4)
                .unwrap()
                .verify_checksum(ip.src(), ip.dst()),
            Proto::Udp => UdpPacket::new_checked(l4)
                .unwrap()
                .verify_checksum(ip.src(), ip.dst()),
            Proto::Icmp => IcmpPacket::new_checked(l4).unwrap().verify_checksum(),
            Proto::Igmp => igmp::IgmpPacket::new_checked(l4).unwrap().verify_checksum(),
            _ => true,
        }
}

/// What the fuzz target does: every entry point on arbitrary bytes.
fn fuzz_one(bytes: &[u8], to_words: [u64; 8], rw: (u32, u32, u16, u16, u32, u32, u16, u16)) {
    let mut k = FlowKey::ZERO;
    let Ok(l) = extract(bytes, 1, &mut k) else {
        return;
    };
    let mut to = k;
    to.w[..7].copy_from_slice(&to_words[..7]);
    let mut p = bytes.to_vec();
    commit(&mut p, &l, &k, &to);
    let c = ct_packet(&p, &l);
    let rewrite = Rewrite {
        outer: Tuple {
            src: rw.0,
            dst: rw.1,
            sport: rw.2,
            dport: rw.3,
            proto: c.tuple.proto,
        },
        inner: Some(Tuple {
            src: rw.4,
            dst: rw.5,
            sport: rw.6,
            dport: rw.7,
            proto: 0,
        }),
    };
    apply_rewrite(&mut p, &l, &rewrite);
    assert_eq!(p.len(), bytes.len());
}
