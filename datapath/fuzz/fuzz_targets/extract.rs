//! Fuzz the packet layer: `extract` on arbitrary bytes, then `commit` of
//! arbitrary key changes, `ct_packet`, and `apply_rewrite` of an arbitrary
//! NAT. None may panic, and none may change the packet's length.
//!
//! Input: the first 64 bytes (zero-padded if shorter) steer the key edits
//! and the rewrite; the rest is the frame.
#![no_main]

use conntrack::{Rewrite, Tuple};
use datapath::extract::{apply_rewrite, commit, ct_packet, extract};
use datapath::key::FlowKey;
use libfuzzer_sys::fuzz_target;

const CTL: usize = 64;

fn word(ctl: &[u8; CTL], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&ctl[i * 8..i * 8 + 8]);
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let mut ctl = [0u8; CTL];
    let n = data.len().min(CTL);
    ctl[..n].copy_from_slice(&data[..n]);
    let frame = &data[n..];

    let mut key = FlowKey::ZERO;
    let Ok(layout) = extract(frame, 1, &mut key) else {
        return;
    };
    let mut pkt = frame.to_vec();
    let mut to = key;
    for i in 0..7 {
        // Each control word xors into one header word of the key.
        to.w[i] ^= word(&ctl, i);
    }
    commit(&mut pkt, &layout, &key, &to);
    let ct = ct_packet(&pkt, &layout);
    let w = word(&ctl, 7);
    let rw = Rewrite {
        outer: Tuple {
            src: ct.tuple.src ^ w as u32,
            dst: ct.tuple.dst ^ (w >> 32) as u32,
            sport: ct.tuple.sport ^ w as u16,
            dport: ct.tuple.dport ^ (w >> 16) as u16,
            proto: ct.tuple.proto,
        },
        inner: Some(Tuple {
            src: (w >> 8) as u32,
            dst: (w >> 24) as u32,
            sport: (w >> 40) as u16,
            dport: (w >> 48) as u16,
            proto: 0,
        }),
    };
    apply_rewrite(&mut pkt, &layout, &rw);
    assert_eq!(pkt.len(), frame.len());
});
