//! Byte encoding of conntrack operations, shared by the fuzz target and the
//! corpus seeder. Each step is 24 bytes:
//! `[kind, flags, src, dst, sport_hi/lo.., dport.., tcp flags, seq(4),
//! ack(2), len, calls, call bytes x3, dt_hi, dt_lo, zone_sel]`.
#![allow(dead_code)]

use conntrack::*;

pub const STEP: usize = 24;
const ADDRS: [u32; 6] = [
    0xc0a8_010a, // client
    0x0a60_000a, // VIP
    0x0af4_0105, // endpoint
    0x0af4_0001, // gateway
    0xac12_0002, // node
    0xa9fe_a96e, // virtual IP
];
const PORTS: [u16; 8] = [1, 80, 511, 600, 1024, 8080, 30232, 50000];
const ZONES: [u16; 4] = [0, 52100, 52200, 65500];

pub struct Step {
    pub pkt: CtPacket,
    pub calls: Vec<CtCall>,
    pub dt_ms: u64,
}

fn call(b: u8, zsel: u8) -> CtCall {
    let zone = ZONES[usize::from((b ^ zsel) & 3)];
    let commit = b & 4 != 0;
    let nat = match (b >> 3) & 7 {
        0 | 1 | 2 => None,
        3 | 4 => Some(NatSpec::Existing),
        5 => Some(NatSpec::Src(NatRange {
            addr_min: ADDRS[3],
            addr_max: ADDRS[3],
            ..NatRange::default()
        })),
        6 => Some(NatSpec::Dst(NatRange {
            addr_min: ADDRS[2],
            addr_max: ADDRS[2],
            port_min: 8080,
            port_max: 8080,
            ..NatRange::default()
        })),
        _ => Some(NatSpec::Src(NatRange {
            addr_min: ADDRS[3],
            addr_max: ADDRS[3] + 1,
            port_min: 1000,
            port_max: 1003,
            ..NatRange::default()
        })),
    };
    CtCall {
        zone,
        commit,
        force: commit && b & 0x40 != 0,
        nat,
        set_mark: (commit && b & 0x80 != 0).then_some((u32::from(b), 0xff)),
        set_label: (commit && b & 0x80 != 0).then_some((u128::from(b) << 64, u128::MAX)),
    }
}

pub fn decode(d: &[u8]) -> Step {
    let t = Tuple {
        src: ADDRS[usize::from(d[2]) % ADDRS.len()],
        dst: ADDRS[usize::from(d[3]) % ADDRS.len()],
        sport: if d[4] & 0x80 != 0 {
            u16::from_be_bytes([d[4] & 0x7f, d[5]])
        } else {
            PORTS[usize::from(d[5]) % PORTS.len()]
        },
        dport: PORTS[usize::from(d[6]) % PORTS.len()],
        proto: 6,
    };
    let seq = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
    let ack = seq.wrapping_add(u32::from(u16::from_be_bytes([d[12], d[13]])));
    let (tuple, l4) = match d[0] % 6 {
        0 | 1 => (
            t,
            L4::Tcp(TcpInfo {
                flags: u16::from(d[7]) & 0x3f,
                seq,
                ack,
                win: u16::from_be_bytes([d[13], d[12]]),
                wscale: (d[7] & 0x40 != 0).then_some(d[14] & 15),
                payload_len: u32::from(d[14]) * 8,
            }),
        ),
        2 => (Tuple { proto: 17, ..t }, L4::Udp),
        3 => (
            Tuple {
                proto: 1,
                dport: t.sport,
                ..t
            },
            L4::IcmpQuery {
                ty: [8, 0, 13, 14, 3][usize::from(d[7]) % 5],
                code: u8::from(d[7] & 0x80 != 0),
            },
        ),
        4 => (
            Tuple {
                proto: 1,
                sport: 0,
                dport: 0,
                ..t
            },
            L4::IcmpError {
                ty: [3, 11, 4, 8][usize::from(d[7]) % 4],
                code: 3,
                inner: Tuple {
                    src: t.dst,
                    dst: t.src,
                    sport: t.dport,
                    dport: t.sport,
                    proto: [6, 17, 1][usize::from(d[14]) % 3],
                },
            },
        ),
        _ => (
            Tuple {
                proto: 47,
                sport: 0,
                dport: 0,
                ..t
            },
            L4::Other,
        ),
    };
    let pkt = CtPacket {
        tuple,
        l4,
        valid: d[1] & 0x0f != 0,
        fragment: d[1] & 0xf0 == 0xf0,
    };
    let n = usize::from(d[15] % 3) + 1;
    let calls = (0..n).map(|i| call(d[16 + i], d[23])).collect();
    let dt_ms = u64::from(u16::from_be_bytes([d[19], d[20]])) * u64::from(d[21] % 8 + 1) * 8;
    Step { pkt, calls, dt_ms }
}
