//! The seeds' NodePort ETP Cluster chain as a benchmark fixture: the
//! scenario's pipeline and ports, the steps that set up an established
//! connection (handshake and first data exchange, up to the first `@ct`),
//! and the client's data packet that follows — an established packet that
//! walks all six passes and three conntrack zones.

use std::path::PathBuf;

use datapath::pipeline::{Pipeline, parse};
use datapath::replay::{self, PortMap, Step};

/// The fixture.
pub struct NodePort {
    /// The scenario's flows and groups.
    pub pipeline: Pipeline,
    /// Its ports.
    pub ports: PortMap,
    /// Steps establishing the connection.
    pub prefix: Vec<Step>,
    /// The established client data packet.
    pub data: Vec<u8>,
    /// The port it arrives on (`uplink`).
    pub in_port: u32,
}

impl NodePort {
    /// Load `tests/scenarios/nodeport_etp_cluster`.
    pub fn load() -> NodePort {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/scenarios/nodeport_etp_cluster");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("scenario file");
        let flows = parse::parse_flows("flows.txt", &read("flows.txt")).expect("flows parse");
        let groups = parse::parse_groups("groups.txt", &read("groups.txt")).expect("groups parse");
        let ports = PortMap::parse(read("ports.txt").trim()).expect("ports");
        let steps = replay::parse_steps("steps.txt", &read("steps.txt"), &ports).expect("steps");
        let prefix: Vec<Step> = steps
            .iter()
            .take_while(|s| !matches!(s, Step::Ct(_)))
            .cloned()
            .collect();
        let data = steps
            .iter()
            .skip(prefix.len())
            .find_map(|s| match s {
                Step::Packet { port, bytes } if port == "uplink" => Some(bytes.clone()),
                _ => None,
            })
            .expect("a client data packet");
        let in_port = ports.resolve("uplink").expect("uplink");
        NodePort {
            pipeline: Pipeline::new(flows, groups),
            ports,
            prefix,
            data,
            in_port,
        }
    }
}
