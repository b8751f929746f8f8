//! flowpath's documented deviations from OVS 3.1, each shown on both sides:
//! what OVS does, and what flowpath does instead (README, "Documented
//! deviations"). If OVS's behaviour changes or flowpath drifts, these fail.

use datapath::drop::DropReason;
use datapath::pipeline::{Pipeline, parse};
use datapath::replay::{self, PortMap, Replayer};
use datapath::wire::build::PacketBuilder;
use tests::ovs::{OvsSwitch, skip_without_ovs};

const PORTS: &str = "p1=1,p2=2";

fn ports() -> Vec<(String, u32)> {
    vec![("p1".into(), 1), ("p2".into(), 2)]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Outputs per packet step of an OVS replay result.
fn ovs_outputs(v: &serde_json::Value) -> Vec<usize> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.get("outputs").map(|o| o.as_array().unwrap().len()))
        .collect()
}

/// Run `steps` through flowpath; return outputs per packet step and the
/// drop counters.
fn flowpath(flows: &str, steps: &str) -> (Vec<usize>, Replayer<'static>) {
    let p: &'static Pipeline = Box::leak(Box::new(Pipeline::new(
        parse::parse_flows("f", flows).unwrap(),
        vec![],
    )));
    let pm: &'static PortMap = Box::leak(Box::new(PortMap::parse(PORTS).unwrap()));
    let steps = replay::parse_steps("s", steps, pm).unwrap();
    let mut r = Replayer::new(p, pm);
    let outs = r
        .run(&steps)
        .into_iter()
        .filter_map(|s| match s {
            replay::StepResult::Packet { outputs, .. } => Some(outputs.len()),
            _ => None,
        })
        .collect();
    (outs, r)
}

const MAC_A: u64 = 0x0200_0000_0001;
const MAC_B: u64 = 0x0200_0000_0002;

/// NAT tuple exhaustion: ICMP has no port to vary, so a second echo from
/// another source with the same id, SNATed to the same address, cannot get
/// a unique tuple. OVS logs a warning and forwards it un-NATed; flowpath
/// drops it and counts `ct_nat_exhausted`.
#[test]
fn nat_exhaustion_drops_and_counts() {
    let flows =
        "table=0,priority=10,ip,in_port=1,actions=ct(commit,zone=7,nat(src=10.9.0.9)),output:2\n";
    let a = PacketBuilder::icmp_echo_request(MAC_A, MAC_B, 0x0a00_0001u32, 0x0a01_0001u32, 77, 1)
        .build();
    let b = PacketBuilder::icmp_echo_request(MAC_A, MAC_B, 0x0a00_0002u32, 0x0a01_0001u32, 77, 1)
        .build();
    let steps = format!("p1 {}\np1 {}\n", hex(&a), hex(&b));
    let (outs, r) = flowpath(flows, &steps);
    assert_eq!(
        outs,
        vec![1, 0],
        "flowpath forwards the first echo and drops the second"
    );
    assert_eq!(r.stats.drops.get(DropReason::CtNatExhausted), 1);
    if skip_without_ovs("nat_exhaustion_drops_and_counts (OVS side)") {
        return;
    }
    let mut sw = OvsSwitch::start(&ports()).unwrap();
    let v = sw.replay(flows, None, &steps).unwrap();
    assert_eq!(
        ovs_outputs(&v),
        vec![1, 1],
        "OVS forwards the second echo un-NATed"
    );
    // The warning reaches ovs-vswitchd's log asynchronously: poll briefly.
    let mut logged = false;
    for _ in 0..40 {
        logged |= sw
            .new_log_problems()
            .unwrap()
            .iter()
            .any(|l| l.contains("Unable to NAT due to tuple space exhaustion"));
        if logged {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(logged, "OVS logs the exhaustion");
}

/// A TCP segment whose header is cut short (IPv4 total length covers only
/// 10 bytes of TCP header): OVS forwards it with a partial flow key;
/// flowpath drops it as `tcp_malformed`.
#[test]
fn truncated_tcp_header_is_dropped() {
    let flows = "table=0,priority=10,in_port=1,actions=output:2\n";
    let mut pkt =
        PacketBuilder::tcp(MAC_A, MAC_B, 0x0a00_0001u32, 0x0a01_0001u32, 1234, 80).build();
    // Keep Ethernet + IPv4 + 10 bytes of TCP; fix the IPv4 length and
    // checksum so only the TCP header is short.
    pkt.truncate(14 + 20 + 10);
    pkt[16..18].copy_from_slice(&30u16.to_be_bytes());
    pkt[24..26].copy_from_slice(&[0, 0]);
    let sum = datapath::wire::checksum::checksum(&pkt[14..34]);
    pkt[24..26].copy_from_slice(&sum.to_be_bytes());
    let steps = format!("p1 {}\n", hex(&pkt));
    let (outs, r) = flowpath(flows, &steps);
    assert_eq!(outs, vec![0]);
    assert_eq!(r.stats.drops.get(DropReason::TcpMalformed), 1);
    if skip_without_ovs("truncated_tcp_header_is_dropped (OVS side)") {
        return;
    }
    let mut sw = OvsSwitch::start(&ports()).unwrap();
    let v = sw.replay(flows, None, &steps).unwrap();
    assert_eq!(
        ovs_outputs(&v),
        vec![1],
        "OVS forwards the truncated segment"
    );
}

/// Matching `nw_src` without `ip`: OVS silently drops the field from the
/// match (the flow then matches every packet); flowpath rejects the line.
#[test]
fn missing_prerequisite_is_an_error() {
    let flows = "table=0,priority=10,nw_src=10.0.0.1,actions=output:2\n";
    let e = parse::parse_flows("flows.txt", flows)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("flows.txt:1:"), "{e}");
    assert!(e.contains("nw_src"), "{e}");
    if skip_without_ovs("missing_prerequisite_is_an_error (OVS side)") {
        return;
    }
    let mut sw = OvsSwitch::start(&ports()).unwrap();
    sw.replace_flows(flows)
        .expect("OVS accepts the flow, dropping nw_src");
}

/// A Service without endpoints (`controller(...,userdata=52.45.4a.45.43.54)`,
/// "REJECT"): OVS without a controller drops the packet; flowpath answers it
/// itself, a TCP RST or an ICMP port unreachable from the address the
/// client targeted, out of the port it came in on. Conntrack state is the
/// same on both sides, and a retry of the same 5-tuple (a SYN with a new
/// ISN, the same UDP datagram) is `+new` again in OVS, so flowpath answers
/// it like the first attempt.
#[test]
fn service_without_endpoints_is_answered() {
    let flows = "\
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=5)
table=1,priority=10,ct_state=+new+trk,ip,actions=ct(commit,zone=5),controller(reason=no_match,userdata=52.45.4a.45.43.54)
table=1,priority=5,ct_state=+inv+trk,ip,actions=output:2
";
    let (client, svc) = (0x0a00_0001u32, 0x0a60_0063u32);
    let syn = |seq: u32| {
        PacketBuilder::tcp(MAC_A, MAC_B, client, svc, 40000, 80)
            .flags(datapath::wire::build::SYN)
            .seq(seq)
            .build()
    };
    let dgram = PacketBuilder::udp(MAC_A, MAC_B, client, svc, 5353, 53)
        .payload(b"query")
        .build();
    let steps = format!(
        "p1 {}\np1 {}\np1 {}\np1 {}\n@ct\n",
        hex(&syn(1000)),
        hex(&syn(0x8000_0000)),
        hex(&dgram),
        hex(&dgram)
    );
    let p: &'static Pipeline = Box::leak(Box::new(Pipeline::new(
        parse::parse_flows("f", flows).unwrap(),
        vec![],
    )));
    let pm: &'static PortMap = Box::leak(Box::new(PortMap::parse(PORTS).unwrap()));
    let mut r = Replayer::new(p, pm);
    let results = r.run(&replay::parse_steps("s", &steps, pm).unwrap());
    let mut fp_ct = Vec::new();
    for (i, res) in results.iter().enumerate() {
        match res {
            replay::StepResult::Packet {
                outputs, answers, ..
            } => {
                assert_eq!(outputs.len(), 1, "step {i}: one answer");
                assert_eq!(outputs[0].0, "p1", "step {i}: back out of the in_port");
                let kind = if i < 2 {
                    datapath::reject::Answer::TcpRst
                } else {
                    datapath::reject::Answer::IcmpPortUnreachable
                };
                assert_eq!(answers, &vec![(0, kind)], "step {i}");
                let f = &outputs[0].1;
                assert_eq!(&f[26..30], &svc.to_be_bytes(), "from the Service address");
                assert_eq!(&f[30..34], &client.to_be_bytes());
            }
            replay::StepResult::Cmd { entries, .. } => fp_ct = entries.clone(),
        }
    }
    assert_eq!(r.stats.rejects, 4);
    assert_eq!(fp_ct.len(), 2, "{fp_ct:?}");
    if skip_without_ovs("service_without_endpoints_is_answered (OVS side)") {
        return;
    }
    let mut sw = OvsSwitch::start(&ports()).unwrap();
    let v = sw.replay(flows, None, &steps).unwrap();
    assert_eq!(
        ovs_outputs(&v),
        vec![0, 0, 0, 0],
        "OVS drops them all, the retries too (+new, not +inv)"
    );
    let mut ovs_ct: Vec<String> = v["results"][4]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    ovs_ct.sort();
    assert_eq!(ovs_ct, fp_ct, "same conntrack state");
}
