//! The fast path for reading manifests: serde straight into typed structs,
//! no intermediate YAML/JSON tree (a reload of 10,000 Services spends its
//! time allocating that tree otherwise).
//!
//! It is only a fast path. It accepts exactly what the field-by-field reader
//! in [`super::k8s`] accepts and builds the same objects (a test checks both
//! on every fixture); whenever anything is off — a type mismatch, an unknown
//! kind, a bad address, a value out of range — it gives up and the caller
//! re-reads the file with the slow reader, whose error names the file,
//! document, field path and value.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Deserialize;

use super::k8s::{
    Endpoint, EndpointSlice, Manifests, Protocol, Service, ServicePort, ServiceType, SlicePort,
    Source,
};

#[derive(Deserialize)]
#[serde(tag = "kind")]
enum Obj {
    List(List),
    ServiceList(List),
    EndpointSliceList(List),
    Service(RawService),
    EndpointSlice(RawSlice),
    Endpoints(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct List {
    #[serde(default)]
    items: Option<Vec<Obj>>,
}

#[derive(Deserialize)]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawService {
    metadata: Option<Meta>,
    spec: Option<Spec>,
    status: Option<Status>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    cluster_ips: Option<Vec<String>>,
    ports: Option<Vec<Port>>,
    external_traffic_policy: Option<String>,
    internal_traffic_policy: Option<String>,
    session_affinity: Option<String>,
    session_affinity_config: Option<Sac>,
    #[serde(rename = "externalIPs")]
    external_ips: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sac {
    #[serde(rename = "clientIP")]
    client_ip: Option<SacClient>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SacClient {
    timeout_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(u64),
    Str(#[allow(dead_code)] String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Port {
    name: Option<String>,
    protocol: Option<String>,
    port: Option<u64>,
    node_port: Option<u64>,
    target_port: Option<IntOrString>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    load_balancer: Option<Lb>,
}

#[derive(Deserialize)]
struct Lb {
    ingress: Option<Vec<Ingress>>,
}

#[derive(Deserialize)]
struct Ingress {
    ip: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSlice {
    metadata: Option<Meta>,
    address_type: Option<String>,
    ports: Option<Vec<RawSlicePort>>,
    endpoints: Option<Vec<RawEndpoint>>,
}

#[derive(Deserialize)]
struct RawSlicePort {
    name: Option<String>,
    protocol: Option<String>,
    port: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEndpoint {
    addresses: Option<Vec<String>>,
    conditions: Option<Cond>,
    node_name: Option<String>,
}

#[derive(Deserialize)]
struct Cond {
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
}

/// Give up: the slow reader will explain.
struct GiveUp;

type R<T> = Result<T, GiveUp>;

fn port(v: Option<u64>) -> R<Option<u16>> {
    match v {
        None => Ok(None),
        Some(n @ 1..=65535) => Ok(Some(n as u16)),
        Some(_) => Err(GiveUp),
    }
}

fn protocol(p: Option<&str>) -> R<Protocol> {
    match p {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some(_) => Err(GiveUp),
    }
}

/// IPv4, `None` for IPv6 (skipped, as the slow reader does).
fn ipv4(s: &str) -> R<Option<Ipv4Addr>> {
    if s.contains(':') {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| GiveUp)
}

type Labels = Option<BTreeMap<String, String>>;

/// (namespace, name, labels)
fn meta(m: Option<Meta>) -> R<(String, String, Labels)> {
    let m = m.ok_or(GiveUp)?;
    Ok((
        m.namespace.unwrap_or_else(|| "default".into()),
        m.name.ok_or(GiveUp)?,
        m.labels,
    ))
}

fn service(src: Source, s: RawService) -> R<Option<Service>> {
    let (namespace, name, _) = meta(s.metadata)?;
    let spec = s.spec.ok_or(GiveUp)?;
    let kind = match spec.kind.as_deref() {
        None | Some("ClusterIP") => ServiceType::ClusterIp,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => return Ok(None),
        Some(_) => return Err(GiveUp),
    };
    let mut cluster_ips = Vec::new();
    match spec.cluster_ips.filter(|v| !v.is_empty()) {
        None => {
            if let Some(ip) = spec.cluster_ip.as_deref()
                && ip != "None"
                && !ip.is_empty()
                && let Some(ip) = ipv4(ip)?
            {
                cluster_ips.push(ip);
            }
        }
        Some(ips) => {
            for ip in ips.iter().filter(|ip| *ip != "None") {
                if let Some(ip) = ipv4(ip)? {
                    cluster_ips.push(ip);
                }
            }
        }
    }
    let mut ports = Vec::new();
    for p in spec.ports.unwrap_or_default() {
        let node_port = port(p.node_port)?;
        if node_port.is_some() && kind == ServiceType::ClusterIp {
            return Err(GiveUp);
        }
        ports.push(ServicePort {
            name: p.name.unwrap_or_default(),
            protocol: protocol(p.protocol.as_deref())?,
            port: port(p.port)?.ok_or(GiveUp)?,
            node_port,
            target_port: match p.target_port {
                None | Some(IntOrString::Str(_)) => None,
                Some(IntOrString::Int(n)) => port(Some(n))?,
            },
        });
    }
    let policy = |p: Option<&str>| match p {
        None | Some("Cluster") => Ok(false),
        Some("Local") => Ok(true),
        Some(_) => Err(GiveUp),
    };
    let external_local = policy(spec.external_traffic_policy.as_deref())?;
    let internal_local = policy(spec.internal_traffic_policy.as_deref())?;
    let affinity_timeout = match spec.session_affinity.as_deref() {
        None | Some("None") => None,
        Some("ClientIP") => match spec
            .session_affinity_config
            .and_then(|c| c.client_ip)
            .and_then(|c| c.timeout_seconds)
        {
            None => Some(10800),
            Some(n @ 1..=86400) => Some(n as u32),
            Some(_) => return Err(GiveUp),
        },
        Some(_) => return Err(GiveUp),
    };
    let mut external_ips = Vec::new();
    for ip in spec.external_ips.unwrap_or_default() {
        if let Some(ip) = ipv4(&ip)? {
            external_ips.push(ip);
        }
    }
    let mut lb_ips = Vec::new();
    if kind == ServiceType::LoadBalancer {
        let ingress = s
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .unwrap_or_default();
        for i in ingress {
            if let Some(ip) = i.ip
                && let Some(ip) = ipv4(&ip)?
            {
                lb_ips.push(ip);
            }
        }
    }
    if cluster_ips.is_empty() {
        return Ok(None);
    }
    Ok(Some(Service {
        source: src,
        namespace,
        name,
        kind,
        cluster_ips,
        ports,
        external_local,
        internal_local,
        affinity_timeout,
        external_ips,
        lb_ips,
    }))
}

fn slice(src: Source, s: RawSlice) -> R<Option<EndpointSlice>> {
    let (namespace, name, labels) = meta(s.metadata)?;
    match s.address_type.as_deref() {
        Some("IPv4") => {}
        Some("IPv6" | "FQDN") => return Ok(None),
        _ => return Err(GiveUp),
    }
    let service = labels
        .and_then(|mut l| l.remove("kubernetes.io/service-name"))
        .ok_or(GiveUp)?;
    let mut ports = Vec::new();
    for p in s.ports.unwrap_or_default() {
        let Some(port) = port(p.port)? else {
            continue;
        };
        ports.push(SlicePort {
            name: p.name.unwrap_or_default(),
            protocol: protocol(p.protocol.as_deref())?,
            port,
        });
    }
    let mut endpoints = Vec::new();
    for e in s.endpoints.unwrap_or_default() {
        let mut addresses = Vec::new();
        for a in e.addresses.unwrap_or_default() {
            if let Some(ip) = ipv4(&a)? {
                addresses.push(ip);
            }
        }
        let (ready, serving, terminating) = match e.conditions {
            None => (true, true, false),
            Some(c) => {
                let ready = c.ready.unwrap_or(true);
                (
                    ready,
                    c.serving.unwrap_or(ready),
                    c.terminating.unwrap_or(false),
                )
            }
        };
        endpoints.push(Endpoint {
            addresses,
            ready,
            serving,
            terminating,
            node_name: e.node_name,
        });
    }
    Ok(Some(EndpointSlice {
        source: src,
        namespace,
        name,
        service,
        ports,
        endpoints,
    }))
}

fn add(out: &mut Manifests, src: &Source, path: String, o: Obj) -> R<()> {
    let here = Source {
        path: path.clone(),
        ..src.clone()
    };
    match o {
        Obj::List(l) | Obj::ServiceList(l) | Obj::EndpointSliceList(l) => {
            let prefix = if path.is_empty() {
                "items".to_string()
            } else {
                format!("{path}.items")
            };
            for (i, item) in l.items.unwrap_or_default().into_iter().enumerate() {
                add(out, src, format!("{prefix}[{i}]"), item)?;
            }
        }
        Obj::Service(s) => out.services.extend(service(here, s)?),
        Obj::EndpointSlice(s) => out.slices.extend(slice(here, s)?),
        Obj::Endpoints(_) => {}
    }
    Ok(())
}

/// Read one file's text on the fast path; `None` when the slow reader must
/// look (it will find an error, or in a corner case the fast path does not
/// cover, read the file correctly).
pub fn read(file: &str, text: &str) -> Option<Manifests> {
    let mut out = Manifests::default();
    let src = |doc| Source {
        file: file.into(),
        doc,
        path: String::new(),
    };
    if text.trim_start().starts_with('{') {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Obj>();
        for (doc, o) in stream.enumerate() {
            add(&mut out, &src(doc), String::new(), o.ok()?).ok()?;
        }
        return Some(out);
    }
    for (doc, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        // An empty document (a trailing `---`) is skipped by the slow reader.
        match Option::<Obj>::deserialize(de) {
            Ok(Some(o)) => add(&mut out, &src(doc), String::new(), o).ok()?,
            Ok(None) => {}
            Err(_) => return None,
        }
    }
    Some(out)
}
