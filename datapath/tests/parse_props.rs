//! Property tests: the parser never panics, and random valid flows survive
//! format -> parse.

use datapath::key::{self, FlowKey};
use datapath::pipeline::fields::{self, FieldId, Maskable};
use datapath::pipeline::format::{FormatOptions, format_flow, normalize};
use datapath::pipeline::ir::{Action, CtAction, CtZone, Flow, Match, SubField};
use datapath::pipeline::parse::{parse_flow, parse_flow_match, parse_flows, parse_group};
use proptest::prelude::*;

fn seed_lines() -> Vec<String> {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/seed_flows.txt");
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn all_parsers(s: &str) {
    let _ = parse_flow(s);
    let _ = parse_flow_match(s);
    let _ = parse_group(s);
    let _ = parse_flows("f", s);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        all_parsers(&s);
    }

    #[test]
    fn ofctl_like_text_never_panics(s in "[a-z_=:,()\\[\\]./0-9x>+|-]{0,120}") {
        all_parsers(&s);
        all_parsers(&format!("ip,{s} actions={s}"));
        all_parsers(&format!("group_id=1,type=select,{s},bucket={s}"));
    }

    #[test]
    fn mutated_seed_lines_never_panic(idx in 0usize..1000, pos in 0usize..400, op in 0u8..3, c in proptest::char::any(), n in 1usize..6) {
        let lines = seed_lines();
        let line = &lines[idx % lines.len()];
        let mut chars: Vec<char> = line.chars().collect();
        let p = pos % (chars.len() + 1);
        match op {
            0 => { for _ in 0..n { if p < chars.len() { chars.remove(p); } } }
            1 => { for _ in 0..n { chars.insert(p, c); } }
            _ => { if p < chars.len() { chars[p] = c; } }
        }
        let s: String = chars.into_iter().collect();
        all_parsers(&s);
        // Whatever parses must print and parse back.
        if let Ok(f) = parse_flow(&s) {
            let out = format_flow(&f, FormatOptions::default());
            prop_assert_eq!(parse_flow(out.trim()).map_err(|e| e.to_string()), Ok(normalize(&f)), "{}", out);
        }
    }

    #[test]
    fn random_flows_round_trip(f in arb_flow()) {
        let out = format_flow(&f, FormatOptions::default());
        let back = parse_flow(out.trim()).map_err(|e| format!("{out}\n{e}"));
        prop_assert_eq!(back, Ok(normalize(&f)), "{}", out);
    }
}

#[derive(Debug, Clone, Copy)]
enum Proto {
    Any,
    Ip,
    Arp,
    Tcp,
    Udp,
    Icmp,
}

fn field_ok(id: FieldId, p: Proto) -> bool {
    use FieldId as F;
    let ip = matches!(p, Proto::Ip | Proto::Tcp | Proto::Udp | Proto::Icmp);
    match id {
        F::DlType | F::NwProto | F::ArpOp | F::ConjId => false,
        F::CtNwSrc | F::CtNwDst | F::CtNwProto | F::CtTpSrc | F::CtTpDst => false,
        F::NwSrc | F::NwDst | F::NwTos | F::IpDscp | F::NwEcn | F::NwTtl | F::NwFrag => ip,
        F::ArpSpa | F::ArpTpa | F::ArpSha | F::ArpTha => matches!(p, Proto::Arp),
        F::TpSrc | F::TpDst => matches!(p, Proto::Tcp | Proto::Udp),
        F::TcpSrc | F::TcpDst | F::TcpFlags => matches!(p, Proto::Tcp),
        F::UdpSrc | F::UdpDst => matches!(p, Proto::Udp),
        F::IcmpType | F::IcmpCode => matches!(p, Proto::Icmp),
        _ => true,
    }
}

fn user_mask(f: &fields::FieldDef) -> u128 {
    let bits = (f.bits - f.user_shift as u16) as u32;
    let m = if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    m << f.user_shift
}

fn arb_match() -> impl Strategy<Value = Match> {
    let protos = prop_oneof![
        Just(Proto::Any),
        Just(Proto::Ip),
        Just(Proto::Arp),
        Just(Proto::Tcp),
        Just(Proto::Udp),
        Just(Proto::Icmp)
    ];
    (
        protos,
        proptest::collection::vec(
            (0usize..200, any::<u128>(), any::<u128>(), any::<bool>()),
            0..6,
        ),
    )
        .prop_map(|(p, picks)| {
            let mut m = Match::ANY;
            let (dl, np) = match p {
                Proto::Any => (None, None),
                Proto::Ip => (Some(key::eth_type::IPV4), None),
                Proto::Arp => (Some(key::eth_type::ARP), None),
                Proto::Tcp => (Some(key::eth_type::IPV4), Some(6u8)),
                Proto::Udp => (Some(key::eth_type::IPV4), Some(17)),
                Proto::Icmp => (Some(key::eth_type::IPV4), Some(1)),
            };
            if let Some(d) = dl {
                m.mask.set_all(key::slot::DL_TYPE);
                m.value.set(key::slot::DL_TYPE, d as u64);
            }
            if let Some(n) = np {
                m.mask.set_all(key::slot::NW_PROTO);
                m.value.set(key::slot::NW_PROTO, n as u64);
            }
            let defs: Vec<_> = fields::all().filter(|f| field_ok(f.id, p)).collect();
            for (i, v, mk, exact) in picks {
                let f = defs[i % defs.len()];
                // Skip fields sharing a slot with one already set.
                if f.read(&m.mask) != 0 || (f.hi.is_none() && m.mask.get(f.slot) != 0) {
                    continue;
                }
                if matches!(f.id, FieldId::XReg(_)) && (m.mask.get(f.slot) != 0) {
                    continue;
                }
                let full = user_mask(f);
                let mut mask = if exact || f.maskable == Maskable::No {
                    full
                } else {
                    mk & full
                };
                let mut val = v & mask;
                match f.id {
                    FieldId::InPort => {
                        val = if v % 7 == 0 {
                            key::OFPP_LOCAL as u128
                        } else {
                            v % 0xff00
                        }
                    }
                    FieldId::NwFrag => {
                        // The states the parser produces (OVS prints (2,2) and (0,3) ambiguously).
                        let opts = [(0, 1), (1, 1), (1, 3), (3, 3), (0, 2)];
                        let (a, b) = opts[(v % 5) as usize];
                        val = a;
                        mask = b;
                    }
                    FieldId::VlanTci if mask == 0 => continue,
                    _ => {}
                }
                if mask == 0 {
                    continue;
                }
                let mut tmp = FlowKey::ZERO;
                f.write(&mut tmp, val & mask);
                let mut tm = FlowKey::ZERO;
                f.write(&mut tm, mask);
                for w in 0..key::KEY_WORDS {
                    m.value.w[w] |= tmp.w[w];
                    m.mask.w[w] |= tm.w[w];
                }
            }
            m
        })
}

fn reg(n: u8, ofs: u16, bits: u16) -> SubField {
    SubField {
        field: FieldId::Reg(n),
        ofs,
        n_bits: bits,
    }
}

fn arb_action(ip: bool) -> impl Strategy<Value = Action> {
    let base = prop_oneof![
        (1u32..0xff00).prop_map(|p| Action::Output {
            port: p,
            max_len: None
        }),
        (1u32..0xff00, any::<u16>()).prop_map(|(p, m)| Action::Output {
            port: p,
            max_len: Some(m)
        }),
        Just(Action::Output {
            port: key::OFPP_LOCAL,
            max_len: None
        }),
        Just(Action::Output {
            port: key::OFPP_IN_PORT,
            max_len: None
        }),
        (
            proptest::option::of(1u32..0xff00),
            proptest::option::of(0u8..255)
        )
            .prop_filter_map("resubmit needs port or table", |(p, t)| {
                (p.is_some() || t.is_some()).then_some(Action::Resubmit {
                    port: p,
                    table: t,
                    ct: false,
                })
            }),
        (0u8..16, 0u16..32, 1u16..=32, any::<u32>()).prop_map(|(r, o, n, v)| {
            let n = n.min(32 - o);
            Action::Load {
                dst: reg(r, o, n),
                value: (v as u128) & ((1u128 << n) - 1),
            }
        }),
        (0u8..16, 0u8..16, 1u16..=16).prop_map(|(a, b, n)| Action::Move {
            src: reg(a, 0, n),
            dst: reg(b, 16, n)
        }),
        (0u8..16, any::<u32>(), any::<u32>()).prop_map(|(r, v, m)| Action::SetField {
            field: FieldId::Reg(r),
            value: (v & m) as u128,
            mask: m as u128
        }),
        any::<u64>().prop_map(|m| Action::ModDlSrc(m & 0xffff_ffff_ffff)),
        any::<u32>().prop_map(Action::Group),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(Action::Note),
        Just(Action::CtClear),
        Just(Action::DecTtl),
        any::<u16>().prop_map(Action::ModTpDst),
    ];
    if !ip {
        return base.boxed();
    }
    prop_oneof![
        base,
        any::<u32>().prop_map(Action::ModNwDst),
        any::<u8>().prop_map(Action::ModNwTtl),
        (
            any::<bool>(),
            proptest::option::of(0u8..255),
            any::<u16>(),
            0u8..4,
            any::<u32>(),
            1u16..100
        )
            .prop_map(|(commit, table, zone, nat, a, p)| {
                let r = conntrack::NatRange {
                    addr_min: a,
                    addr_max: a.saturating_add(3),
                    port_min: p,
                    port_max: p + 10,
                    random: nat == 3,
                    hash: false,
                    persistent: nat == 2,
                };
                let nat = match nat {
                    0 => None,
                    1 => Some(conntrack::NatSpec::Existing),
                    2 => Some(conntrack::NatSpec::Src(r)),
                    _ => Some(conntrack::NatSpec::Dst(r)),
                };
                Action::Ct(CtAction {
                    commit,
                    force: false,
                    table,
                    zone: if zone % 3 == 0 {
                        CtZone::Field(reg(4, 0, 16))
                    } else {
                        CtZone::Imm(zone)
                    },
                    nat,
                    exec: if commit {
                        vec![Action::SetField {
                            field: FieldId::CtMark,
                            value: zone as u128,
                            mask: 0xffff_ffff,
                        }]
                    } else {
                        vec![]
                    },
                    alg: None,
                })
            }),
    ]
    .boxed()
}

fn arb_flow() -> impl Strategy<Value = Flow> {
    arb_match()
        .prop_flat_map(|m| {
            let ip = m.mask.get(key::slot::DL_TYPE) != 0
                && m.value.get(key::slot::DL_TYPE) == key::eth_type::IPV4 as u64;
            (
                Just(m),
                0u8..254,
                any::<u16>(),
                any::<u64>(),
                any::<u16>(),
                any::<u16>(),
                proptest::collection::vec(arb_action(ip), 0..6),
            )
        })
        .prop_map(
            |(matches, table, priority, cookie, idle, hard, actions)| Flow {
                table,
                priority,
                cookie,
                idle_timeout: idle,
                hard_timeout: hard,
                matches,
                actions,
            },
        )
}
