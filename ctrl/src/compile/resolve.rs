//! From Services and EndpointSlices to frontends and backends: which
//! endpoints serve each Service port, where each one lives, and which of them
//! each traffic policy allows.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::config::k8s::{EndpointSlice, Protocol, Service, ServicePort};
use crate::config::node::NodeConfig;

/// Where an endpoint lives, which decides how the datapath reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Placement {
    /// A pod on this node (an exact L3 flow to its port).
    LocalPod,
    /// This node's host network (endpoint IP is one of `node_ips`).
    LocalHost,
    /// A pod on another node (routed to the peer over the uplink).
    RemotePod,
    /// Another node's host network (endpoint IP is a peer's `node_ip`).
    RemoteHost,
}

/// One endpoint of one Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    /// Endpoint IP.
    pub ip: Ipv4Addr,
    /// Endpoint (target) port.
    pub port: u16,
    /// Where it lives.
    pub placement: Placement,
}

impl Backend {
    /// On this node (the set `externalTrafficPolicy: Local` and
    /// `internalTrafficPolicy: Local` keep).
    pub fn is_local(&self) -> bool {
        matches!(self.placement, Placement::LocalPod | Placement::LocalHost)
    }
}

/// One Service port with its usable endpoints.
#[derive(Debug, Clone)]
pub struct ResolvedPort<'a> {
    /// The Service.
    pub svc: &'a Service,
    /// The port.
    pub port: &'a ServicePort,
    /// Usable endpoints, sorted: the ready ones, or when none is ready the
    /// serving and terminating ones (KEP-1669 fallback).
    pub backends: Vec<Backend>,
}

impl ResolvedPort<'_> {
    /// Backends for traffic from inside the cluster (ClusterIP).
    pub fn internal(&self) -> Vec<Backend> {
        self.filtered(self.svc.internal_local)
    }
    /// Backends for traffic from outside (NodePort, externalIPs, LB IPs).
    pub fn external(&self) -> Vec<Backend> {
        self.filtered(self.svc.external_local)
    }
    fn filtered(&self, local_only: bool) -> Vec<Backend> {
        self.backends
            .iter()
            .filter(|b| !local_only || b.is_local())
            .copied()
            .collect()
    }
}

/// Where an endpoint IP lives, as seen from `node`.
pub fn placement(node: &NodeConfig, ip: Ipv4Addr, node_name: Option<&str>) -> Placement {
    if node.node_ips.contains(&ip) {
        Placement::LocalHost
    } else if node.peers.iter().any(|p| p.node_ip == ip) {
        Placement::RemoteHost
    } else if node.pod_cidr.contains(ip) || node_name == Some(node.name.as_str()) {
        Placement::LocalPod
    } else {
        Placement::RemotePod
    }
}

/// Resolve every port of every Service against the slices.
pub fn resolve<'a>(
    node: &NodeConfig,
    services: &'a [Service],
    slices: &'a [EndpointSlice],
) -> Vec<ResolvedPort<'a>> {
    let mut by_svc: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        by_svc
            .entry((s.namespace.as_str(), s.service.as_str()))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    for svc in services {
        let slices = by_svc
            .get(&(svc.namespace.as_str(), svc.name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for sp in &svc.ports {
            out.push(ResolvedPort {
                svc,
                port: sp,
                backends: backends_for(node, slices, &sp.name, sp.protocol),
            });
        }
    }
    out
}

fn backends_for(
    node: &NodeConfig,
    slices: &[&EndpointSlice],
    port_name: &str,
    proto: Protocol,
) -> Vec<Backend> {
    let mut ready = Vec::new();
    let mut fallback = Vec::new();
    for s in slices {
        let Some(p) = s
            .ports
            .iter()
            .find(|p| p.name == port_name && p.protocol == proto)
        else {
            continue;
        };
        for e in &s.endpoints {
            for &ip in &e.addresses {
                let b = Backend {
                    ip,
                    port: p.port,
                    placement: placement(node, ip, e.node_name.as_deref()),
                };
                if e.ready {
                    ready.push(b);
                } else if e.serving && e.terminating {
                    fallback.push(b);
                }
            }
        }
    }
    let mut v = if ready.is_empty() { fallback } else { ready };
    v.sort();
    v.dedup_by_key(|b| (b.ip, b.port));
    v
}
