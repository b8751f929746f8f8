//! Sequences of (packet, ct() calls, clock advance) through one shard,
//! checking the table's invariants after every call and that expiring
//! everything leaves it empty.
#![no_main]

use conntrack::*;
use libfuzzer_sys::fuzz_target;

mod ops;

fn apply(p: &CtPacket, r: &CtResult) -> CtPacket {
    let mut q = *p;
    if let Some(rw) = r.rewrite {
        q.tuple = rw.outer;
        if let (L4::IcmpError { ty, code, .. }, Some(i)) = (p.l4, rw.inner) {
            q.l4 = L4::IcmpError { ty, code, inner: i };
        }
    }
    q
}

fuzz_target!(|data: &[u8]| {
    let mut cfg = CtConfig::with_capacity(64);
    cfg.zone_limits = vec![(52200, 20)];
    let mut sh = Shard::new(cfg);
    let mut now = 1_000u64;
    for chunk in data.chunks_exact(ops::STEP) {
        let step = ops::decode(chunk);
        now += step.dt_ms;
        if chunk[22] == 0xff {
            sh.flush(None, None);
        } else if chunk[22] == 0xfe {
            sh.flush(Some(52100), None);
        } else if chunk[22] == 0xfd {
            sh.flush(Some(0), Some(step.pkt.tuple));
        }
        if chunk[1] == 0x5a {
            sh.set_tcp_seq_check(false);
        }
        let mut md = PktCtMeta::default();
        let mut p = step.pkt;
        for c in &step.calls {
            let r = sh.execute(&p, &mut md, c, now);
            assert!(md.state & cs::TRK != 0);
            if r.drop.is_some() {
                break;
            }
            p = apply(&p, &r);
            if let Err(e) = sh.check_invariants() {
                panic!("invariant: {e}");
            }
        }
        for d in sh.dump_at(None, now) {
            let _ = d.to_string();
        }
    }
    now += 1_000_000_000;
    while sh.sweep(now, 32) > 0 {}
    assert!(sh.is_empty(), "leak: {} connections left", sh.len());
    sh.check_invariants().unwrap();
});
