//! Differential tests of the Service compiler: the pipeline `flowpath
//! compile` builds from `tests/compile/node.toml` and
//! `tests/compile/services/` is loaded into a real OVS and into flowpath's
//! `replay`, and every case of the seed matrix is driven through both as a
//! full exchange (TCP: SYN, SYN-ACK, ACK, data both ways, FIN both ways,
//! final ACK; UDP: two request/response pairs), followed by conntrack dumps
//! of zones 52100, 52200 and 65500.
//!
//! Each case asserts twice: OVS and flowpath agree frame for frame (port,
//! bytes) and dump for dump; and what came out is what the Service means —
//! every frame decoded and checked against the expected port, addresses,
//! ports and MACs, with valid checksums.
//!
//! Every case uses single-endpoint groups (or groups whose other buckets
//! OVS's own hash could pick), so bucket choice never differs between the
//! two; see README "Select groups".

use std::net::Ipv4Addr;

use ctrl::compile;
use ctrl::config::{Manifests, NodeConfig};
use ctrl::replay::{ReplayOptions, replay_json};
use datapath::wire::build::{ACK, FIN, PSH, PacketBuilder, SYN};
use tests::compare::{compare, outputs_by_port, rejects_by_port};
use tests::decode::{fields, summary};
use tests::ovs::{ovs_replay, parse_steps, skip_without_ovs};
use tests::pkt::unhex;

type Mac = [u8; 6];

const EXT_MAC: Mac = [0x00, 0x50, 0x56, 0xa7, 0xca, 0x77];
const UPLINK_MAC: Mac = [0x00, 0x50, 0x56, 0xa7, 0x35, 0x0b];
const PEER_MAC: Mac = [0x00, 0x50, 0x56, 0xa7, 0xaa, 0x01];
const GW_MAC: Mac = [0x0a, 0x58, 0xac, 0x10, 0x02, 0x01];
const VIRT_MAC: Mac = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];
const POD1_MAC: Mac = [0x0a, 0x58, 0xac, 0x10, 0x02, 0x0a];
const POD2_MAC: Mac = [0x0a, 0x58, 0xac, 0x10, 0x02, 0x0b];

const EXT: Ipv4Addr = Ipv4Addr::new(10, 176, 26, 36);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 176, 25, 244);
const NODE_IP2: Ipv4Addr = Ipv4Addr::new(10, 176, 25, 245);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 176, 26, 50);
const GW: Ipv4Addr = Ipv4Addr::new(172, 16, 2, 1);
const POD1: Ipv4Addr = Ipv4Addr::new(172, 16, 2, 10);
const POD2: Ipv4Addr = Ipv4Addr::new(172, 16, 2, 11);
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(172, 16, 3, 20);
const VIP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 110);
const HAIRPIN: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 111);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

/// One end of a connection as it appears on one port.
#[derive(Clone, Copy)]
struct End {
    /// Port name the end's frames enter and leave on.
    port: &'static str,
    /// Its own MAC (source of what it sends).
    mac: Mac,
    /// MAC it sends to (its next hop).
    next_hop: Mac,
    /// Its own address.
    ip: Ipv4Addr,
    l4: u16,
    /// The peer's address as this end sees it.
    peer: (Ipv4Addr, u16),
}

/// One matrix case: a client, a server, and what each sees.
struct Case {
    name: &'static str,
    proto: Proto,
    client: End,
    server: End,
    /// Port and MAC the requests must leave on towards the server.
    server_rx: (&'static str, Mac),
    /// Port and MAC the replies must leave on towards the client (replies
    /// to external clients go to the host through the gateway, which routes
    /// them, as in the seeds).
    client_rx: (&'static str, Mac),
}

impl Case {
    fn frame(&self, from_client: bool, flags: u16, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let e = if from_client {
            &self.client
        } else {
            &self.server
        };
        match self.proto {
            Proto::Tcp => PacketBuilder::tcp(e.mac, e.next_hop, e.ip, e.peer.0, e.l4, e.peer.1)
                .flags(flags)
                .seq(seq)
                .ack(ack)
                .win(64240)
                .payload(payload)
                .build(),
            Proto::Udp => PacketBuilder::udp(e.mac, e.next_hop, e.ip, e.peer.0, e.l4, e.peer.1)
                .payload(payload)
                .build(),
        }
    }

    /// The steps, and per packet step whether it is a request (client to
    /// server).
    fn steps(&self) -> (String, Vec<Option<bool>>) {
        let (c, s) = (1000u32, 5000u32);
        let req = b"GET / HTTP/1.0\r\n\r\n";
        let resp = b"HTTP/1.0 200 OK\r\n\r\nhello";
        let pkts: Vec<(bool, Vec<u8>)> = match self.proto {
            Proto::Tcp => vec![
                (true, self.frame(true, SYN, c, 0, b"")),
                (false, self.frame(false, SYN | ACK, s, c + 1, b"")),
                (true, self.frame(true, ACK, c + 1, s + 1, b"")),
                (true, self.frame(true, PSH | ACK, c + 1, s + 1, req)),
                (false, self.frame(false, PSH | ACK, s + 1, c + 19, resp)),
                (true, self.frame(true, FIN | ACK, c + 19, s + 25, b"")),
                (false, self.frame(false, FIN | ACK, s + 25, c + 20, b"")),
                (true, self.frame(true, ACK, c + 20, s + 26, b"")),
            ],
            Proto::Udp => vec![
                (true, self.frame(true, 0, 0, 0, b"query-1")),
                (false, self.frame(false, 0, 0, 0, b"answer-1")),
                (true, self.frame(true, 0, 0, 0, b"query-2")),
                (false, self.frame(false, 0, 0, 0, b"answer-2")),
            ],
        };
        let mut text = format!("# {}\n", self.name);
        let mut dirs = Vec::new();
        for (i, (from_client, f)) in pkts.iter().enumerate() {
            let port = if *from_client {
                self.client.port
            } else {
                self.server.port
            };
            text.push_str(&format!("# {}\n{port} {}\n", summary(f), hex(f)));
            dirs.push(Some(*from_client));
            if i == 2 || i == pkts.len() - 1 {
                text.push_str("@ct 52100\n@ct 52200\n@ct 65500\n");
                dirs.extend([None, None, None]);
            }
        }
        (text, dirs)
    }

    /// Check one output frame against what the Service means.
    fn check(&self, request: bool, port: &str, frame: &[u8]) -> Result<(), String> {
        let f = fields(frame);
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        let (to, (rx_port, rx_mac)) = if request {
            (&self.server, self.server_rx)
        } else {
            (&self.client, self.client_rx)
        };
        let want = [
            ("port", rx_port.to_string(), port.to_string()),
            ("ip_dst", to.ip.to_string(), get("ip_dst")),
            ("dport", to.l4.to_string(), get("dport")),
            ("ip_src", to.peer.0.to_string(), get("ip_src")),
            ("sport", to.peer.1.to_string(), get("sport")),
            ("eth_dst", mac(rx_mac), get("eth_dst")),
            ("csum", "ok".into(), get("csum")),
        ];
        let bad: Vec<String> = want
            .iter()
            .filter(|(_, w, g)| w != g)
            .map(|(k, w, g)| format!("{k}: want {w}, got {g}"))
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!("{} ({})", bad.join(", "), summary(frame)))
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn mac(m: Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ports() -> Vec<(String, u32)> {
    [("gw0", 2), ("uplink", 3), ("pod1", 4), ("pod2", 5)]
        .iter()
        .map(|(n, p)| (n.to_string(), *p))
        .collect()
}

fn compiled() -> (String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("compile");
    let node = NodeConfig::load(&dir.join("node.toml")).expect("node.toml");
    let m = Manifests::load(&[dir.join("services")]).expect("manifests");
    let c = compile::compile(&node, &m).expect("compile");
    (c.flows_text(), c.groups_text())
}

/// An external client on the uplink.
fn external(l4: u16, dst: (Ipv4Addr, u16)) -> End {
    End {
        port: "uplink",
        mac: EXT_MAC,
        next_hop: UPLINK_MAC,
        ip: EXT,
        l4,
        peer: dst,
    }
}

/// A local pod.
fn pod(n: u8, l4: u16, peer: (Ipv4Addr, u16)) -> End {
    let (port, mac, ip) = match n {
        1 => ("pod1", POD1_MAC, POD1),
        _ => ("pod2", POD2_MAC, POD2),
    };
    End {
        port,
        mac,
        next_hop: GW_MAC,
        ip,
        l4,
        peer,
    }
}

/// Something on the other side of the uplink at `ip` (a remote pod or
/// node), talking to us through the peer's MAC.
fn remote(ip: Ipv4Addr, l4: u16, peer: (Ipv4Addr, u16)) -> End {
    End {
        port: "uplink",
        mac: PEER_MAC,
        next_hop: UPLINK_MAC,
        ip,
        l4,
        peer,
    }
}

/// The host behind the gateway port.
fn host(ip: Ipv4Addr, l4: u16, peer: (Ipv4Addr, u16), next_hop: Mac) -> End {
    End {
        port: "gw0",
        mac: GW_MAC,
        next_hop,
        ip,
        l4,
        peer,
    }
}

fn cases() -> Vec<Case> {
    vec![
        // --- NodePort, externalTrafficPolicy Cluster, from an external client
        Case {
            name: "etp_cluster_external_to_local_pod",
            proto: Proto::Tcp,
            client: external(40001, (NODE_IP, 30001)),
            server: pod(1, 8080, (GW, 40001)),
            server_rx: ("pod1", POD1_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "etp_cluster_external_to_remote_pod",
            proto: Proto::Tcp,
            client: external(40002, (NODE_IP2, 30002)),
            server: remote(REMOTE_POD, 8080, (GW, 40002)),
            server_rx: ("uplink", PEER_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "etp_cluster_external_to_local_hostnetwork",
            proto: Proto::Tcp,
            client: external(40003, (NODE_IP, 30003)),
            server: host(NODE_IP, 9090, (VIP, 40003), VIRT_MAC),
            server_rx: ("gw0", GW_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "etp_cluster_external_to_remote_hostnetwork",
            proto: Proto::Tcp,
            client: external(40004, (NODE_IP, 30004)),
            server: remote(PEER_IP, 9090, (GW, 40004)),
            server_rx: ("uplink", PEER_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        // --- NodePort, ETP Cluster, from a local pod
        Case {
            name: "etp_cluster_local_pod_to_local_pod",
            proto: Proto::Tcp,
            client: pod(2, 41001, (NODE_IP, 30001)),
            server: pod(1, 8080, (GW, 41001)),
            server_rx: ("pod1", POD1_MAC),
            client_rx: ("pod2", POD2_MAC),
        },
        Case {
            name: "etp_cluster_local_pod_to_remote_pod",
            proto: Proto::Tcp,
            client: pod(2, 41002, (NODE_IP, 30002)),
            server: remote(REMOTE_POD, 8080, (GW, 41002)),
            server_rx: ("uplink", PEER_MAC),
            client_rx: ("pod2", POD2_MAC),
        },
        Case {
            name: "etp_cluster_local_pod_to_local_hostnetwork",
            proto: Proto::Tcp,
            client: pod(2, 41003, (NODE_IP, 30003)),
            server: host(NODE_IP, 9090, (VIP, 41003), VIRT_MAC),
            server_rx: ("gw0", GW_MAC),
            client_rx: ("pod2", POD2_MAC),
        },
        Case {
            name: "etp_cluster_local_pod_to_remote_hostnetwork",
            proto: Proto::Tcp,
            client: pod(1, 41004, (NODE_IP2, 30004)),
            server: remote(PEER_IP, 9090, (GW, 41004)),
            server_rx: ("uplink", PEER_MAC),
            client_rx: ("pod1", POD1_MAC),
        },
        // --- NodePort, externalTrafficPolicy Local: the client IP is kept
        Case {
            name: "etp_local_external_to_local_pod",
            proto: Proto::Tcp,
            client: external(40005, (NODE_IP, 30005)),
            server: pod(2, 8080, (EXT, 40005)),
            server_rx: ("pod2", POD2_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "etp_local_external_udp_to_local_pod",
            proto: Proto::Udp,
            client: external(40053, (NODE_IP2, 30053)),
            server: pod(2, 5353, (EXT, 40053)),
            server_rx: ("pod2", POD2_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "etp_local_local_pod_to_local_pod",
            proto: Proto::Tcp,
            client: pod(1, 41005, (NODE_IP, 30005)),
            server: pod(2, 8080, (POD1, 41005)),
            server_rx: ("pod2", POD2_MAC),
            client_rx: ("pod1", POD1_MAC),
        },
        // ETP Local to a local hostNetwork endpoint: the host sees the
        // client's address and answers it through the gateway.
        Case {
            name: "etp_local_external_to_local_hostnetwork",
            proto: Proto::Tcp,
            client: external(40006, (NODE_IP, 30006)),
            server: host(NODE_IP, 9090, (EXT, 40006), GW_MAC),
            server_rx: ("gw0", GW_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "etp_local_local_pod_to_local_hostnetwork",
            proto: Proto::Tcp,
            client: pod(1, 41006, (NODE_IP2, 30006)),
            server: host(NODE_IP, 9090, (POD1, 41006), GW_MAC),
            server_rx: ("gw0", GW_MAC),
            client_rx: ("pod1", POD1_MAC),
        },
        // --- NodePort from the node (the host sends from the gateway IP)
        Case {
            name: "etp_cluster_node_to_local_pod",
            proto: Proto::Tcp,
            client: host(GW, 43101, (NODE_IP, 30001), VIRT_MAC),
            server: pod(1, 8080, (GW, 43101)),
            server_rx: ("pod1", POD1_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "etp_cluster_node_to_remote_pod",
            proto: Proto::Tcp,
            client: host(GW, 43102, (NODE_IP2, 30002), VIRT_MAC),
            server: remote(REMOTE_POD, 8080, (GW, 43102)),
            server_rx: ("uplink", PEER_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "etp_local_node_to_local_pod",
            proto: Proto::Tcp,
            client: host(GW, 43105, (NODE_IP, 30005), VIRT_MAC),
            server: pod(2, 8080, (GW, 43105)),
            server_rx: ("pod2", POD2_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        // --- LoadBalancer / externalIPs (ETP Local)
        Case {
            name: "external_ip_to_local_pod",
            proto: Proto::Tcp,
            client: external(40443, (Ipv4Addr::new(192, 0, 2, 10), 443)),
            server: pod(2, 8443, (EXT, 40443)),
            server_rx: ("pod2", POD2_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        // --- externalIPs / LoadBalancer ingress, ETP Cluster: SNAT to the
        // gateway IP, so a remote endpoint answers through this node.
        Case {
            name: "external_ip_etp_cluster_to_remote_pod",
            proto: Proto::Tcp,
            client: external(40020, (Ipv4Addr::new(192, 0, 2, 20), 80)),
            server: remote(REMOTE_POD, 8080, (GW, 40020)),
            server_rx: ("uplink", PEER_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "lb_ingress_etp_cluster_to_remote_pod",
            proto: Proto::Tcp,
            client: external(40021, (Ipv4Addr::new(198, 51, 100, 20), 80)),
            server: remote(REMOTE_POD, 8080, (GW, 40021)),
            server_rx: ("uplink", PEER_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "external_ip_etp_cluster_udp_to_remote_pod",
            proto: Proto::Udp,
            client: external(40053, (Ipv4Addr::new(192, 0, 2, 20), 53)),
            server: remote(REMOTE_POD, 5353, (GW, 40053)),
            server_rx: ("uplink", PEER_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "external_ip_etp_cluster_to_local_pod",
            proto: Proto::Tcp,
            client: external(40022, (Ipv4Addr::new(192, 0, 2, 21), 80)),
            server: pod(1, 8080, (GW, 40022)),
            server_rx: ("pod1", POD1_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        // From a local pod the external IP is not SNATed (ClusterIP-like).
        Case {
            name: "external_ip_etp_cluster_from_pod",
            proto: Proto::Tcp,
            client: pod(2, 42020, (Ipv4Addr::new(192, 0, 2, 20), 80)),
            server: remote(REMOTE_POD, 8080, (POD2, 42020)),
            server_rx: ("uplink", PEER_MAC),
            client_rx: ("pod2", POD2_MAC),
        },
        // --- ClusterIP from pods
        Case {
            name: "clusterip_pod_to_local_pod",
            proto: Proto::Tcp,
            client: pod(2, 42001, (Ipv4Addr::new(10, 96, 0, 10), 80)),
            server: pod(1, 8080, (POD2, 42001)),
            server_rx: ("pod1", POD1_MAC),
            client_rx: ("pod2", POD2_MAC),
        },
        Case {
            name: "clusterip_pod_to_remote_pod",
            proto: Proto::Tcp,
            client: pod(1, 42002, (Ipv4Addr::new(10, 96, 0, 11), 80)),
            server: remote(REMOTE_POD, 8080, (POD1, 42002)),
            server_rx: ("uplink", PEER_MAC),
            client_rx: ("pod1", POD1_MAC),
        },
        Case {
            name: "clusterip_pod_to_remote_hostnetwork",
            proto: Proto::Tcp,
            client: pod(1, 42003, (Ipv4Addr::new(10, 96, 1, 4), 80)),
            server: remote(PEER_IP, 9090, (POD1, 42003)),
            server_rx: ("uplink", PEER_MAC),
            client_rx: ("pod1", POD1_MAC),
        },
        Case {
            name: "clusterip_pod_to_local_hostnetwork",
            proto: Proto::Tcp,
            client: pod(2, 42004, (Ipv4Addr::new(10, 96, 1, 3), 80)),
            server: host(NODE_IP, 9090, (POD2, 42004), GW_MAC),
            server_rx: ("gw0", GW_MAC),
            client_rx: ("pod2", POD2_MAC),
        },
        Case {
            name: "clusterip_pod_udp_affinity",
            proto: Proto::Udp,
            client: pod(1, 42053, (Ipv4Addr::new(10, 96, 0, 53), 53)),
            server: pod(2, 5353, (POD1, 42053)),
            server_rx: ("pod2", POD2_MAC),
            client_rx: ("pod1", POD1_MAC),
        },
        Case {
            name: "clusterip_terminating_fallback",
            proto: Proto::Tcp,
            client: pod(2, 42012, (Ipv4Addr::new(10, 96, 0, 12), 80)),
            server: pod(1, 8080, (POD2, 42012)),
            server_rx: ("pod1", POD1_MAC),
            client_rx: ("pod2", POD2_MAC),
        },
        Case {
            name: "hairpin_pod_to_itself",
            proto: Proto::Tcp,
            client: pod(1, 42100, (Ipv4Addr::new(10, 96, 0, 10), 80)),
            server: pod(1, 8080, (HAIRPIN, 42100)),
            server_rx: ("pod1", POD1_MAC),
            client_rx: ("pod1", POD1_MAC),
        },
        // --- ClusterIP from the node (the host masquerades to the gateway IP)
        Case {
            name: "clusterip_node_to_local_pod",
            proto: Proto::Tcp,
            client: host(GW, 43001, (Ipv4Addr::new(10, 96, 0, 10), 80), VIRT_MAC),
            server: pod(1, 8080, (GW, 43001)),
            server_rx: ("pod1", POD1_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "clusterip_node_to_remote_pod",
            proto: Proto::Tcp,
            client: host(GW, 43002, (Ipv4Addr::new(10, 96, 0, 11), 80), VIRT_MAC),
            server: remote(REMOTE_POD, 8080, (GW, 43002)),
            server_rx: ("uplink", PEER_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "clusterip_node_to_remote_hostnetwork",
            proto: Proto::Tcp,
            client: host(GW, 43004, (Ipv4Addr::new(10, 96, 1, 4), 80), VIRT_MAC),
            server: remote(PEER_IP, 9090, (GW, 43004)),
            server_rx: ("uplink", PEER_MAC),
            client_rx: ("gw0", GW_MAC),
        },
        Case {
            name: "clusterip_node_to_local_hostnetwork",
            proto: Proto::Tcp,
            client: host(GW, 43003, (Ipv4Addr::new(10, 96, 1, 3), 80), VIRT_MAC),
            server: host(NODE_IP, 9090, (VIP, 43003), VIRT_MAC),
            server_rx: ("gw0", GW_MAC),
            client_rx: ("gw0", GW_MAC),
        },
    ]
}

/// Compare OVS and flowpath (interpreter and cache), then check OVS's
/// frames against the case's meaning. Returns problems, empty when fine.
fn run_case(flows: &str, groups: &str, case: &Case) -> Vec<String> {
    let (steps_text, dirs) = case.steps();
    let steps = parse_steps(&steps_text).expect("steps");
    let ovs = match ovs_replay(flows, Some(groups), &ports(), &steps_text) {
        Ok(v) => v,
        Err(e) => return vec![format!("{}: OVS: {e}", case.name)],
    };
    let mut problems = Vec::new();
    for cache in [false, true] {
        let label = format!("{} (cache={cache})", case.name);
        match replay_json(
            flows,
            Some(groups),
            &ports(),
            &steps_text,
            &ReplayOptions { cache },
        ) {
            Ok(fp) => {
                if let Err(e) = compare(&label, &steps, &ovs, &fp) {
                    problems.push(e);
                }
            }
            Err(e) => problems.push(format!("{label}: replay: {e:#}")),
        }
    }
    let results = ovs["results"].as_array().expect("results");
    for (i, dir) in dirs.iter().enumerate() {
        let Some(request) = *dir else { continue };
        let outs = outputs_by_port(&results[i]);
        let frames: Vec<(&String, &String)> = outs
            .iter()
            .flat_map(|(p, v)| v.iter().map(move |h| (p, h)))
            .collect();
        if frames.len() != 1 {
            problems.push(format!(
                "{} step {i}: want exactly one output, got {}: {:?}",
                case.name,
                frames.len(),
                frames
                    .iter()
                    .map(|(p, h)| format!("{p}: {}", summary(&unhex(h).unwrap_or_default())))
                    .collect::<Vec<_>>()
            ));
            continue;
        }
        let (port, h) = frames[0];
        if let Err(e) = case.check(request, port, &unhex(h).unwrap_or_default()) {
            problems.push(format!("{} step {i}: {e}", case.name));
        }
    }
    problems
}

#[test]
fn compiled_pipeline_matrix_matches_ovs() {
    if skip_without_ovs("compiled_pipeline_matrix_matches_ovs") {
        return;
    }
    let (flows, groups) = compiled();
    let only = std::env::var("FLOWPATH_COMPILED_CASE").ok();
    let mut problems = Vec::new();
    let mut ran = 0;
    for case in cases() {
        if only.as_deref().is_some_and(|o| o != case.name) {
            continue;
        }
        ran += 1;
        let p = run_case(&flows, &groups, &case);
        println!(
            "{:<48} {}",
            case.name,
            if p.is_empty() { "ok" } else { "FAIL" }
        );
        problems.extend(p);
    }
    assert!(ran > 0);
    assert!(
        problems.is_empty(),
        "{} problems:\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

/// A Service without endpoints: the SYN goes to the controller. OVS has
/// none and drops it; flowpath answers it with a TCP RST from the Service
/// address back out of the pod's port (the documented deviation, README
/// "Deviations"): everything else, conntrack included, is identical. A
/// Service with endpoints on the same node keeps working in the same run.
#[test]
fn service_without_endpoints_is_rejected_not_forwarded() {
    if skip_without_ovs("service_without_endpoints_is_rejected_not_forwarded") {
        return;
    }
    let (flows, groups) = compiled();
    let syn = |dst: Ipv4Addr, sport: u16| {
        PacketBuilder::tcp(POD1_MAC, GW_MAC, POD1, dst, sport, 80)
            .flags(SYN)
            .seq(1)
            .build()
    };
    let steps_text = format!(
        "pod1 {}\npod1 {}\n@ct\n",
        hex(&syn(Ipv4Addr::new(10, 96, 0, 99), 44000)),
        hex(&syn(Ipv4Addr::new(10, 96, 0, 11), 44001)),
    );
    let steps = parse_steps(&steps_text).unwrap();
    let ovs = ovs_replay(&flows, Some(&groups), &ports(), &steps_text).expect("OVS");
    let fp = replay_json(
        &flows,
        Some(&groups),
        &ports(),
        &steps_text,
        &Default::default(),
    )
    .expect("replay");
    compare("no endpoints", &steps, &ovs, &fp).unwrap_or_else(|e| panic!("{e}"));
    let r = ovs["results"].as_array().unwrap();
    assert!(
        outputs_by_port(&r[0]).is_empty(),
        "no-endpoint SYN was forwarded: {}",
        r[0]
    );
    assert_eq!(outputs_by_port(&r[1]).get("uplink").map(Vec::len), Some(1));
    // flowpath's answer: a RST on pod1 from the ClusterIP.
    let f = fp["results"].as_array().unwrap();
    let rejects = rejects_by_port(&f[0]);
    assert_eq!(rejects.len(), 1, "{}", f[0]);
    let rst = fields(&unhex(&rejects["pod1"][0]).unwrap());
    assert_eq!(rst["ip_src"], "10.96.0.99");
    assert_eq!(rst["ip_dst"], POD1.to_string());
    assert_eq!(rst["sport"], "80");
    assert_eq!(rst["dport"], "44000");
    assert_eq!((rst["flags"].as_str(), rst["seq"].as_str()), ("RA", "0"));
    assert_eq!(rst["ack"], "2", "SEG.SEQ + 1 for the SYN");
    assert_eq!(rst["csum"], "ok");
    assert_eq!(rst["eth_dst"], mac(POD1_MAC));
    assert_eq!(rst["eth_src"], mac(GW_MAC));
    assert!(rejects_by_port(&f[1]).is_empty());
}

/// ARP responders: the virtual IP from any port, Service IPs from the host.
#[test]
fn arp_responders_match_ovs() {
    if skip_without_ovs("arp_responders_match_ovs") {
        return;
    }
    let (flows, groups) = compiled();
    let who_has = |tpa: Ipv4Addr| PacketBuilder::arp_request(GW_MAC, GW, tpa).build();
    let steps_text = format!(
        "gw0 {}\ngw0 {}\nuplink {}\npod1 {}\ngw0 {}\npod2 {}\n",
        hex(&who_has(VIP)),
        hex(&who_has(Ipv4Addr::new(10, 96, 0, 10))),
        hex(&PacketBuilder::arp_request(EXT_MAC, EXT, Ipv4Addr::new(10, 96, 0, 10)).build()),
        // A pod asks for its gateway; the host asks for a pod; a pod asks
        // for another pod: forwarded, not answered.
        hex(&PacketBuilder::arp_request(POD1_MAC, POD1, GW).build()),
        hex(&who_has(POD2)),
        hex(&PacketBuilder::arp_request(POD2_MAC, POD2, POD1).build()),
    );
    let steps = parse_steps(&steps_text).unwrap();
    let ovs = ovs_replay(&flows, Some(&groups), &ports(), &steps_text).expect("OVS");
    let fp = replay_json(
        &flows,
        Some(&groups),
        &ports(),
        &steps_text,
        &Default::default(),
    )
    .expect("replay");
    compare("arp", &steps, &ovs, &fp).unwrap_or_else(|e| panic!("{e}"));
    let r = ovs["results"].as_array().unwrap();
    for (i, ip) in [(0, VIP), (1, Ipv4Addr::new(10, 96, 0, 10))] {
        let outs = outputs_by_port(&r[i]);
        let h = &outs
            .get("gw0")
            .unwrap_or_else(|| panic!("step {i}: no reply: {}", r[i]))[0];
        let f = fields(&unhex(h).unwrap());
        assert_eq!(f["arp_op"], "2");
        assert_eq!(f["arp_spa"], ip.to_string());
        assert_eq!(f["arp_sha"], mac(VIRT_MAC));
        assert_eq!(f["eth_dst"], mac(GW_MAC));
    }
    // Service IPs are not answered on the uplink.
    assert!(outputs_by_port(&r[2]).is_empty());
    // Pod ARP is forwarded unchanged to whoever owns the address.
    for (i, to) in [(3, "gw0"), (4, "pod2"), (5, "pod1")] {
        let outs = outputs_by_port(&r[i]);
        assert_eq!(outs.len(), 1, "step {i}: {}", r[i]);
        let f = fields(&unhex(&outs[to][0]).unwrap());
        assert_eq!(f["arp_op"], "1", "step {i}");
    }
}

/// ClientIP affinity (the `dns` Service: timeoutSeconds 300, learned in
/// table 40 by table 41's `learn`): queries from several source ports of
/// one client, the learned flow in `dump-flows`, its idle timeout kept
/// alive by a new query and then expiring, all identical in OVS and
/// flowpath (with and without the flow cache).
#[test]
fn client_ip_affinity_learns_and_expires_like_ovs() {
    if skip_without_ovs("client_ip_affinity_learns_and_expires_like_ovs") {
        return;
    }
    let (flows, groups) = compiled();
    let dns = Ipv4Addr::new(10, 96, 0, 53);
    let q = |sport: u16| {
        hex(&PacketBuilder::udp(POD1_MAC, GW_MAC, POD1, dns, sport, 53)
            .payload(b"query")
            .build())
    };
    let mut steps_text = String::new();
    for sport in 42100..42103 {
        steps_text += &format!("pod1 {}\n", q(sport));
    }
    steps_text += "@flows 40\n@warp 200000\n";
    // A new connection 200 s later goes through the learned flow (its
    // idle timeout restarts): still there 200 s after that.
    steps_text += &format!("pod1 {}\n@warp 200000\n@flows 40\n", q(42110));
    // 301 s idle: gone (OVS expires flows once a second: small steps).
    steps_text += "@warp 300000\n";
    for _ in 0..4 {
        steps_text += "@warp 500\n";
    }
    steps_text += &format!("@flows 40\npod1 {}\n@flows 40\n", q(42111));
    let steps = parse_steps(&steps_text).unwrap();
    let ovs = ovs_replay(&flows, Some(&groups), &ports(), &steps_text).expect("OVS");
    let dumps: Vec<usize> = ovs["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["cmd"] == "flows")
        .map(|r| r["entries"].as_array().unwrap().len())
        .collect();
    // Default flow + one learned flow, kept, expired, learned again.
    assert_eq!(dumps, [2, 2, 1, 2], "OVS table 40 sizes");
    for cache in [false, true] {
        let fp = replay_json(
            &flows,
            Some(&groups),
            &ports(),
            &steps_text,
            &ReplayOptions { cache },
        )
        .expect("replay");
        if let Err(e) = compare(&format!("affinity (cache={cache})"), &steps, &ovs, &fp) {
            panic!("{e}");
        }
    }
}

/// ClientIP affinity behind a NodePort with externalTrafficPolicy Cluster
/// (`np-sticky`): the chain SNATs every external client to the gateway IP
/// before the Service's table 41, so the affinity key is the client address
/// saved in reg5 by table 7. Two external clients each get their own learned
/// flow (keyed on their own address, not the gateway's), and a second query
/// of one of them reuses its flow; identical in OVS and flowpath.
#[test]
fn nodeport_affinity_keys_on_the_external_client_like_ovs() {
    if skip_without_ovs("nodeport_affinity_keys_on_the_external_client_like_ovs") {
        return;
    }
    let (flows, groups) = compiled();
    let ext2 = Ipv4Addr::new(10, 176, 26, 37);
    let q = |src: Ipv4Addr, sport: u16| {
        hex(
            &PacketBuilder::udp(EXT_MAC, UPLINK_MAC, src, NODE_IP, sport, 30064)
                .payload(b"query")
                .build(),
        )
    };
    let steps_text = format!(
        "uplink {}\n@flows 40\nuplink {}\nuplink {}\n@flows 40\n",
        q(EXT, 43001),
        q(ext2, 43002),
        q(EXT, 43003)
    );
    let steps = parse_steps(&steps_text).unwrap();
    let ovs = ovs_replay(&flows, Some(&groups), &ports(), &steps_text).expect("OVS");
    let learned: Vec<Vec<String>> = ovs["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["cmd"] == "flows")
        .map(|r| {
            r["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.to_string())
                .filter(|e| e.contains("reg5="))
                .collect()
        })
        .collect();
    // One learned flow per external client, keyed on its own address.
    assert_eq!(learned.len(), 2, "{learned:?}");
    assert_eq!(learned[0].len(), 1, "{learned:?}");
    assert_eq!(learned[1].len(), 2, "{learned:?}");
    for (ip, hexip) in [(EXT, "0xab01a24"), (ext2, "0xab01a25")] {
        assert!(
            learned[1]
                .iter()
                .any(|e| e.contains(&format!("reg5={hexip},"))),
            "no learned flow for {ip}: {learned:?}"
        );
    }
    for cache in [false, true] {
        let fp = replay_json(
            &flows,
            Some(&groups),
            &ports(),
            &steps_text,
            &ReplayOptions { cache },
        )
        .expect("replay");
        if let Err(e) = compare(&format!("np affinity (cache={cache})"), &steps, &ovs, &fp) {
            panic!("{e}");
        }
    }
}
