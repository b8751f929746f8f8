//! The veth benchmark's UDP workload (`scripts/bench.sh`) in memory: the
//! same pipeline text (the e2e NodePort ETP Cluster chain, NodePorts 30232
//! and 30233 sent to four local endpoints, `tcp` replaced by `udp`) and the
//! same packets (one client address, source ports from 1024, two
//! destination ports, a reflector answering at the endpoints' port), so
//! the flow caches' behaviour at N flows can be looked at without veths.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use datapath::key::OFPP_LOCAL;
use datapath::pipeline::{Pipeline, parse};
use datapath::wire::build::PacketBuilder;

/// The uplink's OpenFlow port (the client's packets arrive here).
pub const UPLINK: u32 = 3;
/// The endpoints' port (the reflector answers here).
pub const POD1: u32 = 4;
/// The gateway's port.
pub const GW0: u32 = 2;
/// The endpoints' last octets (172.16.2.N), as `EPS` in bench.sh.
pub const EPS: [u8; 4] = [10, 12, 13, 14];
/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 176, 26, 36);
/// The node address the NodePorts listen on.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 176, 25, 244);

/// The pipeline's flows and groups text, as `rules udp` in bench.sh writes
/// them.
pub fn udp_rules() -> (String, String) {
    udp_rules_for(&EPS)
}

/// [`udp_rules`] with the NodePorts' select groups over endpoints
/// 172.16.2.N for N in `eps` (a test comparing megaflows with OVS uses one:
/// which bucket a select group picks is a documented deviation).
pub fn udp_rules_for(eps: &[u8]) -> (String, String) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("tests/e2e file");
    let flows0 = read("flows.txt");
    let groups0 = read("groups.txt");
    let mut buckets = String::new();
    for (i, e) in eps.iter().enumerate() {
        buckets.push_str(&format!(
            ",bucket=bucket_id:{i},weight=100,actions=ct(commit,table=42,zone=65500,nat(dst=172.16.2.{e}:8080),exec(load:0x21->NXM_NX_CT_MARK[]))"
        ));
    }
    let mut groups: String = groups0
        .lines()
        .filter(|l| !l.starts_with("group_id=1,") && !l.starts_with("group_id=4,"))
        .map(|l| format!("{l}\n"))
        .collect();
    for g in [1, 4] {
        groups.push_str(&format!(
            "group_id={g},type=select,selection_method=hash,fields(ip_src,tcp_src){buckets}\n"
        ));
    }
    let mut flows = flows0.clone();
    let pod = flows0
        .lines()
        .find(|l| l.starts_with("table=70,priority=200,ip,nw_dst=172.16.2.10,"))
        .expect("table 70's pod1 flow");
    for e in eps.iter().filter(|e| **e != 10) {
        flows.push_str(&pod.replace("172.16.2.10,", &format!("172.16.2.{e},")));
        flows.push('\n');
    }
    (flows.replace("tcp", "udp"), groups.replace("tcp", "udp"))
}

/// The pipeline and its existing port numbers.
pub fn udp_pipeline() -> (Pipeline, Vec<u32>) {
    let (f, g) = udp_rules();
    let flows = parse::parse_flows("flows.txt", &f).expect("flows parse");
    let groups = parse::parse_groups("groups.txt", &g).expect("groups parse");
    (
        Pipeline::new(flows, groups),
        vec![GW0, UPLINK, POD1, OFPP_LOCAL],
    )
}

/// Flow `i`'s client packet, as pktgen's `--sport 1024 --dports 2`
/// (`crate::flows::FlowSpread`): source port 1024 + i / 2, destination
/// port 30232 + i % 2 (i < 128,000).
pub fn client_udp(i: u32) -> Vec<u8> {
    let (sport, dport) = (1024 + (i / 2) as u16, 30232 + (i % 2) as u16);
    PacketBuilder::udp(
        [0x00, 0x50, 0x56, 0xa7, 0xca, 0x77],
        [0x00, 0x50, 0x56, 0xa7, 0x35, 0x0b],
        CLIENT,
        VIP,
        sport,
        dport,
    )
    .pad_to(60)
    .build()
}

/// The reflector's answer to `frame` (an Ethernet/IPv4/UDP frame): MACs,
/// addresses and ports swapped, checksums unchanged (a swap keeps them).
pub fn reflect(frame: &[u8]) -> Vec<u8> {
    let mut r = frame.to_vec();
    for i in 0..6 {
        r.swap(i, 6 + i);
    }
    let ihl = ((r[14] & 0x0f) as usize) * 4;
    for i in 0..4 {
        r.swap(26 + i, 30 + i);
    }
    let l4 = 14 + ihl;
    for i in 0..2 {
        r.swap(l4 + i, l4 + 2 + i);
    }
    r
}
