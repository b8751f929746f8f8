//! Synthetic Services shared by the compile and sweep benches: a node
//! (`NODE`, the e2e node's addresses, one peer node) and `n` Services whose
//! endpoints are pods on the peer (every measured packet then takes the
//! same path, whatever bucket the hash picks).
#![allow(dead_code)]

use std::net::Ipv4Addr;

use ctrl::compile;
use ctrl::config::k8s::{
    Endpoint, EndpointSlice, Protocol, Service, ServicePort, ServiceType, SlicePort, Source,
};
use ctrl::config::{Manifests, NodeConfig};
use datapath::pipeline::Pipeline;

pub const NODE: &str = r#"
name = "node-a"
node_ips = ["10.176.25.244"]
pod_cidr = "172.16.2.0/24"
[uplink]
port = 3
mac = "00:50:56:a7:35:0b"
[gateway]
name = "gw0"
ip = "172.16.2.1"
mac = "0a:58:ac:10:02:01"
port = 2
[[pods]]
name = "pod1"
ip = "172.16.2.10"
port = 4
[[pods]]
name = "pod2"
ip = "172.16.2.11"
port = 5
[[peers]]
name = "node-b"
node_ip = "10.176.26.50"
node_mac = "00:50:56:a7:aa:01"
pod_cidr = "10.244.0.0/16"
"#;

pub fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a60_0000 + i as u32)
}

pub fn node_port(i: usize) -> Option<u16> {
    i.is_multiple_of(5).then(|| 30000 + (i / 5) as u16)
}

/// `n` Services with `eps` endpoints each. Service `i` has ClusterIP
/// 10.96.0.0 + i, port 80; every fifth is a NodePort. Endpoints are pods on the peer
/// node (so every measured packet takes the same path whatever bucket the
/// hash picks).
pub fn synthetic(n: usize, eps: usize) -> Manifests {
    let mut m = Manifests::default();
    for i in 0..n {
        let name = format!("svc-{i}");
        m.services.push(Service {
            source: Source::default(),
            namespace: "bench".into(),
            name: name.clone(),
            kind: if node_port(i).is_some() {
                ServiceType::NodePort
            } else {
                ServiceType::ClusterIp
            },
            cluster_ips: vec![cluster_ip(i)],
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: node_port(i),
                target_port: Some(8080),
            }],
            external_local: false,
            internal_local: false,
            affinity_timeout: None,
            external_ips: vec![],
            lb_ips: vec![],
        });
        let endpoints = (0..eps)
            .map(|e| {
                let k = i * eps + e;
                Endpoint {
                    addresses: vec![Ipv4Addr::new(10, 244, (k >> 8) as u8, (k & 0xff) as u8)],
                    ready: true,
                    serving: true,
                    terminating: false,
                    node_name: Some("node-b".into()),
                }
            })
            .collect();
        m.slices.push(EndpointSlice {
            source: Source::default(),
            namespace: "bench".into(),
            name: format!("{name}-1"),
            service: name,
            ports: vec![SlicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
            endpoints,
        });
    }
    m
}

/// The compiled and built pipeline of `m` on `node`.
pub fn build(node: &NodeConfig, m: &Manifests) -> Pipeline {
    compile::compile(node, m).expect("compile").pipeline()
}

/// `NODE`, parsed.
pub fn node() -> NodeConfig {
    NodeConfig::parse("node.toml", NODE).unwrap()
}
