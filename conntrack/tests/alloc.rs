//! The established path and warmed-up connection creation allocate
//! nothing (a counting allocator watches this thread, the
//! `allocation-counter` crate: other threads of the test binary do not
//! count).

use conntrack::*;

fn tcp(src: (u32, u16), dst: (u32, u16), flags: u16, seq: u32, ack: u32) -> CtPacket {
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
            wscale: None,
            payload_len: 0,
        }),
        valid: true,
        fragment: false,
    }
}

#[test]
fn no_allocation_on_established_or_new_nat_connections() {
    let mut sh = Shard::new(CtConfig::with_capacity(4096));
    let snat = CtCall {
        zone: 7,
        commit: true,
        nat: Some(NatSpec::Src(NatRange {
            addr_min: 0x0af4_0001,
            addr_max: 0x0af4_0001,
            ..NatRange::default()
        })),
        ..CtCall::default()
    };
    let ct = CtCall {
        zone: 7,
        nat: Some(NatSpec::Existing),
        ..CtCall::default()
    };
    let s = (0x5db8_d822, 443);
    // Warm up: one connection in the zone (the zone counter's entry).
    let mut md = PktCtMeta::default();
    sh.execute(
        &tcp((0x0a01_0000, 999), s, 0x02, 1, 0),
        &mut md,
        &snat,
        1000,
    );

    let probe = allocation_counter::measure(|| drop(std::hint::black_box(vec![0u8; 64])));
    assert_eq!(probe.count_total, 1, "the counting allocator is active");
    let stats = allocation_counter::measure(|| {
        for i in 0..1000u32 {
            let c = (0x0a01_0001 + i, 40000);
            let mut md = PktCtMeta::default();
            let r = sh.execute(&tcp(c, s, 0x02, i, 0), &mut md, &snat, 1000);
            assert_eq!(md.state, cs::NEW | cs::TRK | cs::SNAT);
            let port = r.rewrite.unwrap().outer.sport;
            let mut md = PktCtMeta::default();
            sh.execute(
                &tcp(s, (0x0af4_0001, port), 0x12, 5, i + 1),
                &mut md,
                &ct,
                1001,
            );
            assert_eq!(md.state, cs::EST | cs::RPL | cs::TRK | cs::DNAT);
            let mut md = PktCtMeta::default();
            sh.execute(&tcp(c, s, 0x10, i + 1, 6), &mut md, &ct, 1002);
            assert_eq!(md.state, cs::EST | cs::TRK | cs::SNAT);
        }
    });
    assert_eq!(stats.count_total, 0, "{stats:?}");
}
