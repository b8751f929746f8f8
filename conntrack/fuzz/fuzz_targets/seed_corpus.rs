//! Writes the golden scenarios (handshake through DNAT, NodePort chain,
//! ICMP error, UDP, port clash) as encoded steps into `corpus/ct_ops/`.
//! Run: `cargo run --bin seed_corpus` from `conntrack/fuzz`.

mod ops;

fn step(
    kind: u8,
    src: u8,
    dst: u8,
    sport: u8,
    dport: u8,
    flags: u8,
    seq: u32,
    calls: &[u8],
    dt: u16,
) -> Vec<u8> {
    let mut v = vec![0u8; ops::STEP];
    v[0] = kind;
    v[1] = 1;
    v[2] = src;
    v[3] = dst;
    v[5] = sport;
    v[6] = dport;
    v[7] = flags;
    v[8..12].copy_from_slice(&seq.to_be_bytes());
    v[12] = 0;
    v[13] = 1;
    v[15] = (calls.len() as u8).saturating_sub(1);
    for (i, c) in calls.iter().take(3).enumerate() {
        v[16 + i] = *c;
    }
    v[19..21].copy_from_slice(&dt.to_be_bytes());
    v
}

fn main() {
    // call byte: zone index in bits 0-1, commit bit 2, nat kind bits 3-5.
    const CT_NAT_Z1: u8 = 1 | (3 << 3);
    const COMMIT_DNAT_Z1: u8 = 1 | 4 | (6 << 3);
    const COMMIT_SNAT_Z2: u8 = 2 | 4 | (5 << 3);
    const CT_NAT_Z2: u8 = 2 | (3 << 3);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let handshake = [
        step(0, 0, 1, 7, 1, 0x02, 100, &[CT_NAT_Z1, COMMIT_DNAT_Z1], 1),
        step(0, 2, 0, 5, 7, 0x12, 900, &[CT_NAT_Z1], 1),
        step(0, 0, 1, 7, 1, 0x10, 101, &[CT_NAT_Z1, COMMIT_DNAT_Z1], 1),
        step(0, 0, 1, 7, 1, 0x11, 101, &[CT_NAT_Z1], 1),
        step(0, 2, 0, 5, 7, 0x11, 901, &[CT_NAT_Z1], 1),
    ]
    .concat();
    cases.push(("handshake_dnat", handshake));
    let chain = [
        step(
            0,
            0,
            4,
            7,
            6,
            0x02,
            1,
            &[CT_NAT_Z1, COMMIT_DNAT_Z1, CT_NAT_Z2],
            1,
        ),
        step(0, 0, 4, 7, 6, 0x02, 1, &[COMMIT_SNAT_Z2], 1),
        step(0, 2, 3, 5, 7, 0x12, 9, &[CT_NAT_Z2, CT_NAT_Z1], 1),
    ]
    .concat();
    cases.push(("nodeport_chain", chain));
    let udp = [
        step(2, 0, 2, 4, 1, 0, 0, &[COMMIT_SNAT_Z2], 1),
        step(4, 3, 3, 4, 1, 0, 0, &[CT_NAT_Z2], 1),
        step(2, 2, 3, 1, 4, 0, 0, &[CT_NAT_Z2], 60000),
    ]
    .concat();
    cases.push(("udp_icmp_error", udp));
    let echo = [
        step(3, 0, 2, 3, 3, 0, 0, &[4], 1),
        step(3, 2, 0, 3, 3, 1, 0, &[0], 1),
    ]
    .concat();
    cases.push(("icmp_echo", echo));
    let clash = [
        step(0, 0, 2, 7, 1, 0x02, 1, &[COMMIT_SNAT_Z2], 1),
        step(0, 1, 2, 7, 1, 0x02, 1, &[COMMIT_SNAT_Z2], 1),
        step(0, 4, 2, 7, 1, 0x02, 1, &[COMMIT_SNAT_Z2], 1),
    ]
    .concat();
    cases.push(("port_clash", clash));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/ct_ops");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in cases {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
