//! The per-packet cost of the compiled pipeline must not grow with the number
//! of Services: every table's classifier costs one hash probe per distinct
//! mask, so the set of (table, mask) pairs — and the priorities they sit at —
//! must be the same for 1 Service and for 2,000 of every kind. (The bench
//! `bench/benches/compile.rs` measures the same thing in nanoseconds.)

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ctrl::compile;
use ctrl::config::k8s::{
    Endpoint, EndpointSlice, Protocol, Service, ServicePort, ServiceType, SlicePort, Source,
};
use ctrl::config::{Manifests, NodeConfig};

fn node() -> NodeConfig {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compile");
    NodeConfig::load(&dir.join("node.toml")).unwrap()
}

/// `n` Services of each flavour: ClusterIP TCP, NodePort ETP Cluster,
/// NodePort ETP Local with UDP, LoadBalancer with externalIPs and affinity.
fn services(n: usize) -> Manifests {
    let mut m = Manifests::default();
    for i in 0..n {
        for (k, kind) in [
            ServiceType::ClusterIp,
            ServiceType::NodePort,
            ServiceType::NodePort,
            ServiceType::LoadBalancer,
        ]
        .into_iter()
        .enumerate()
        {
            let idx = i * 4 + k;
            let name = format!("s{idx}");
            let node_port = (kind != ServiceType::ClusterIp).then_some(30000 + idx as u16);
            m.services.push(Service {
                source: Source::default(),
                namespace: "ns".into(),
                name: name.clone(),
                kind,
                cluster_ips: vec![Ipv4Addr::new(10, 96, (idx >> 8) as u8, idx as u8)],
                ports: vec![ServicePort {
                    name: "p".into(),
                    protocol: if k == 2 { Protocol::Udp } else { Protocol::Tcp },
                    port: 80,
                    node_port,
                    target_port: None,
                }],
                external_local: k == 2,
                internal_local: false,
                affinity_timeout: (k == 3).then_some(60),
                external_ips: if k == 3 {
                    vec![Ipv4Addr::new(192, 0, (idx >> 8) as u8, idx as u8)]
                } else {
                    vec![]
                },
                lb_ips: vec![],
            });
            m.slices.push(EndpointSlice {
                source: Source::default(),
                namespace: "ns".into(),
                name: format!("{name}-1"),
                service: name,
                ports: vec![SlicePort {
                    name: "p".into(),
                    protocol: if k == 2 { Protocol::Udp } else { Protocol::Tcp },
                    port: 8080,
                }],
                endpoints: [Ipv4Addr::new(172, 16, 2, 10), Ipv4Addr::new(172, 16, 3, 7)]
                    .into_iter()
                    .map(|ip| Endpoint {
                        addresses: vec![ip],
                        ready: true,
                        serving: true,
                        terminating: false,
                        node_name: None,
                    })
                    .collect(),
            });
        }
    }
    m
}

fn shapes(n: usize) -> (BTreeSet<String>, usize) {
    let c = compile::compile(&node(), &services(n)).unwrap();
    let s = c
        .flows
        .iter()
        .map(|f| {
            format!(
                "table={} priority={} mask={:?}",
                f.table, f.priority, f.matches.mask
            )
        })
        .collect();
    (s, c.flows.len())
}

#[test]
fn masks_do_not_grow_with_services() {
    let (one, n1) = shapes(1);
    let (many, n2) = shapes(2000);
    assert!(
        n2 > n1 + 7 * 2000,
        "{n1} vs {n2} flows: the Services were compiled"
    );
    assert_eq!(
        one, many,
        "a (table, priority, mask) appears with more Services: that table's lookups now cost more"
    );
}
