//! Kubernetes Services and EndpointSlices, read exactly as
//! `kubectl get svc,endpointslices -o yaml` prints them: single documents,
//! multi-document YAML (`---`) and `kind: List` (nested lists too).
//!
//! Only the fields the datapath honours are read; everything else kubectl
//! prints (`metadata.uid`, `managedFields`, `selector`, ...) is ignored. A
//! field that is read must be valid: a wrong value is a
//! [`ConfigError::Manifest`] naming the file, the document (0-based), the
//! field path (`items[3].spec.ports[0].protocol`) and the value. Objects of
//! other kinds are errors too (a typo'd kind must not silently vanish), except
//! `Endpoints` (the legacy API, superseded by EndpointSlices) which is
//! skipped.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::ConfigError;

/// L4 protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
    /// `tcp` / `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// `spec.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    /// Reachable on its cluster IPs only.
    ClusterIp,
    /// Also on every node IP at `nodePort`.
    NodePort,
    /// NodePort plus `status.loadBalancer.ingress` IPs.
    LoadBalancer,
}

/// Where an object came from, for errors and comments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    /// File as given.
    pub file: String,
    /// 0-based YAML document index in the file.
    pub doc: usize,
    /// Path of the object inside the document (`""` or `items[2]`).
    pub path: String,
}

/// One `spec.ports[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `name` (empty when the Service has a single unnamed port).
    pub name: String,
    /// `protocol` (default TCP).
    pub protocol: Protocol,
    /// `port`.
    pub port: u16,
    /// `nodePort` (NodePort/LoadBalancer).
    pub node_port: Option<u16>,
    /// `targetPort` when numeric: the endpoint port used when no
    /// EndpointSlice names one.
    pub target_port: Option<u16>,
}

/// A Service, reduced to what the datapath needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Where it was read.
    pub source: Source,
    /// `metadata.namespace` (default `default`).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`.
    pub kind: ServiceType,
    /// IPv4 `spec.clusterIPs` (or `clusterIP`); empty for headless.
    pub cluster_ips: Vec<Ipv4Addr>,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `sessionAffinity: ClientIP`, with `timeoutSeconds` (default 10800).
    pub affinity_timeout: Option<u32>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip` (LoadBalancer only).
    pub lb_ips: Vec<Ipv4Addr>,
}

/// One port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    /// `name` (matches the Service port's name; empty when unnamed).
    pub name: String,
    /// `protocol`.
    pub protocol: Protocol,
    /// `port`: the endpoint's (target) port.
    pub port: u16,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `addresses` (Kubernetes allows exactly one today; all are kept).
    pub addresses: Vec<Ipv4Addr>,
    /// `conditions.ready` (absent = true).
    pub ready: bool,
    /// `conditions.serving` (absent = ready).
    pub serving: bool,
    /// `conditions.terminating` (absent = false).
    pub terminating: bool,
    /// `nodeName`.
    pub node_name: Option<String>,
}

/// An IPv4 EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    /// Where it was read.
    pub source: Source,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Label `kubernetes.io/service-name`.
    pub service: String,
    /// `ports`.
    pub ports: Vec<SlicePort>,
    /// `endpoints`.
    pub endpoints: Vec<Endpoint>,
}

/// Everything read from a set of manifest files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifests {
    /// Services with a datapath presence (ExternalName and headless Services
    /// are skipped: they have no virtual IP).
    pub services: Vec<Service>,
    /// IPv4 EndpointSlices (IPv6 and FQDN slices are skipped).
    pub slices: Vec<EndpointSlice>,
}

/// A position in a YAML document, for reading fields with their path.
#[derive(Clone, Copy)]
struct Cur<'a> {
    src: &'a Source,
    path: &'a str,
    v: &'a Value,
}

impl<'a> Cur<'a> {
    fn err(&self, path: &str, value: &Value, problem: impl Into<String>) -> ConfigError {
        ConfigError::Manifest {
            file: self.src.file.clone(),
            doc: self.src.doc,
            path: path.to_string(),
            value: show(value),
            problem: problem.into(),
        }
    }

    fn join(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(&self.join(key), v, "expected a string")),
        }
    }

    fn req_str(&self, key: &str) -> Result<&'a str, ConfigError> {
        self.str(key)?
            .ok_or_else(|| self.err(&self.join(key), &Value::Null, "required field missing"))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(&self.join(key), v, "expected true or false")),
        }
    }

    fn port(&self, key: &str) -> Result<Option<u16>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n @ 1..=65535) => Ok(Some(n as u16)),
                _ => Err(self.err(&self.join(key), v, "expected a port number 1..65535")),
            },
        }
    }

    fn ipv4(&self, path: &str, v: &Value) -> Result<Option<Ipv4Addr>, ConfigError> {
        let Some(s) = v.as_str() else {
            return Err(self.err(path, v, "expected an IP address"));
        };
        if s.contains(':') {
            return Ok(None); // IPv6: not served by this datapath
        }
        s.parse()
            .map(Some)
            .map_err(|_| self.err(path, v, "not an IPv4 address"))
    }

    fn seq(&self, key: &str) -> Result<Vec<(String, &'a Value)>, ConfigError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(s)) => Ok(s
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{}[{i}]", self.join(key)), v))
                .collect()),
            Some(v) => Err(self.err(&self.join(key), v, "expected a list")),
        }
    }

    fn at(&self, path: &'a str, v: &'a Value) -> Cur<'a> {
        Cur {
            src: self.src,
            path,
            v,
        }
    }

    fn protocol(&self) -> Result<Protocol, ConfigError> {
        match self.str("protocol")? {
            None | Some("TCP") => Ok(Protocol::Tcp),
            Some("UDP") => Ok(Protocol::Udp),
            Some(_) => Err(self.err(
                &self.join("protocol"),
                self.v.get("protocol").unwrap_or(&Value::Null),
                "unsupported protocol (TCP or UDP)",
            )),
        }
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "<missing>".into(),
        Value::String(s) => format!("{s:?}"),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

impl Manifests {
    /// Parse one file's text (any number of documents) and add its objects.
    /// JSON (`kubectl get -o json`, one or more concatenated objects) takes
    /// a faster parser than YAML; the result is the same.
    pub fn add_text(&mut self, file: &str, text: &str) -> Result<(), ConfigError> {
        if let Some(m) = super::fast::read(file, text) {
            self.services.extend(m.services);
            self.slices.extend(m.slices);
            return Ok(());
        }
        self.add_text_checked(file, text)
    }

    /// The field-by-field reader: slower than [`super::fast`], and the one
    /// that explains what is wrong.
    pub(crate) fn add_text_checked(&mut self, file: &str, text: &str) -> Result<(), ConfigError> {
        use serde::Deserialize;
        if text.trim_start().starts_with('{') {
            let stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
            for (doc, v) in stream.enumerate() {
                let v = v.map_err(|e| ConfigError::Yaml {
                    file: file.into(),
                    doc,
                    error: e.to_string(),
                })?;
                let src = Source {
                    file: file.into(),
                    doc,
                    path: String::new(),
                };
                self.add_object(&src, "", &json_to_yaml(v))?;
            }
            return Ok(());
        }
        for (doc, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let v = Value::deserialize(de).map_err(|e| ConfigError::Yaml {
                file: file.into(),
                doc,
                error: e.to_string(),
            })?;
            if v.is_null() {
                continue; // empty document (a trailing `---`)
            }
            let src = Source {
                file: file.into(),
                doc,
                path: String::new(),
            };
            self.add_object(&src, "", &v)?;
        }
        Ok(())
    }

    /// Read manifests from files and directories (every `*.yaml`, `*.yml`
    /// and `*.json` in a directory, sorted by name, not recursive).
    pub fn load(paths: &[PathBuf]) -> Result<Manifests, ConfigError> {
        let mut m = Manifests::default();
        for p in paths {
            for f in expand(p)? {
                let file = f.display().to_string();
                let text = std::fs::read_to_string(&f).map_err(|e| ConfigError::Io {
                    file: file.clone(),
                    error: e.to_string(),
                })?;
                m.add_text(&file, &text)?;
            }
        }
        Ok(m)
    }

    fn add_object(&mut self, src: &Source, path: &str, v: &Value) -> Result<(), ConfigError> {
        let c = Cur { src, path, v };
        if !v.is_mapping() {
            return Err(c.err(path, v, "expected a Kubernetes object"));
        }
        let kind = c.req_str("kind")?;
        match kind {
            "List" | "ServiceList" | "EndpointSliceList" => {
                for (p, item) in c.seq("items")? {
                    self.add_object(src, &p, item)?;
                }
                Ok(())
            }
            "Service" => {
                if let Some(s) = parse_service(src, &c)? {
                    self.services.push(s);
                }
                Ok(())
            }
            "EndpointSlice" => {
                if let Some(s) = parse_slice(src, &c)? {
                    self.slices.push(s);
                }
                Ok(())
            }
            "Endpoints" => Ok(()),
            _ => Err(c.err(
                &c.join("kind"),
                v.get("kind").unwrap_or(&Value::Null),
                "unsupported kind (Service, EndpointSlice, List)",
            )),
        }
    }
}

/// JSON is a subset of YAML: convert the tree without reparsing.
fn json_to_yaml(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::Number(u.into())
            } else if let Some(i) = n.as_i64() {
                Value::Number(i.into())
            } else {
                Value::Number(n.as_f64().unwrap_or(f64::NAN).into())
            }
        }
        J::String(s) => Value::String(s),
        J::Array(a) => Value::Sequence(a.into_iter().map(json_to_yaml).collect()),
        J::Object(o) => Value::Mapping(
            o.into_iter()
                .map(|(k, v)| (Value::String(k), json_to_yaml(v)))
                .collect(),
        ),
    }
}

fn expand(p: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let io = |e: std::io::Error| ConfigError::Io {
        file: p.display().to_string(),
        error: e.to_string(),
    };
    if !p.is_dir() {
        return Ok(vec![p.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| {
            f.is_file() && matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    v.sort();
    Ok(v)
}

fn metadata<'a>(c: &Cur<'a>) -> Result<(String, String), ConfigError> {
    let Some(md) = c.get("metadata") else {
        return Err(c.err(&c.join("metadata"), &Value::Null, "required field missing"));
    };
    let mp = c.join("metadata");
    let m = c.at(&mp, md);
    let name = m.req_str("name")?.to_string();
    let ns = m.str("namespace")?.unwrap_or("default").to_string();
    Ok((ns, name))
}

fn object_source(src: &Source, c: &Cur<'_>) -> Source {
    Source {
        path: c.path.to_string(),
        ..src.clone()
    }
}

fn parse_service(src: &Source, c: &Cur<'_>) -> Result<Option<Service>, ConfigError> {
    let (namespace, name) = metadata(c)?;
    let sp = c.join("spec");
    let Some(specv) = c.get("spec") else {
        return Err(c.err(&sp, &Value::Null, "required field missing"));
    };
    let spec = c.at(&sp, specv);
    let kind = match spec.str("type")? {
        None | Some("ClusterIP") => ServiceType::ClusterIp,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => return Ok(None),
        Some(_) => {
            return Err(spec.err(
                &spec.join("type"),
                specv.get("type").unwrap_or(&Value::Null),
                "unknown Service type (ClusterIP, NodePort, LoadBalancer, ExternalName)",
            ));
        }
    };
    let mut cluster_ips = Vec::new();
    let ips = spec.seq("clusterIPs")?;
    if ips.is_empty() {
        if let Some(v) = spec.get("clusterIP")
            && v.as_str() != Some("None")
            && v.as_str() != Some("")
            && let Some(ip) = spec.ipv4(&spec.join("clusterIP"), v)?
        {
            cluster_ips.push(ip);
        }
    } else {
        for (p, v) in &ips {
            if v.as_str() == Some("None") {
                continue;
            }
            if let Some(ip) = spec.ipv4(p, v)? {
                cluster_ips.push(ip);
            }
        }
    }
    let mut ports = Vec::new();
    for (p, v) in spec.seq("ports")? {
        let pc = spec.at(&p, v);
        let protocol = pc.protocol()?;
        let port = pc
            .port("port")?
            .ok_or_else(|| pc.err(&pc.join("port"), &Value::Null, "required field missing"))?;
        let node_port = pc.port("nodePort")?;
        if node_port.is_some() && kind == ServiceType::ClusterIp {
            return Err(pc.err(
                &pc.join("nodePort"),
                v.get("nodePort").unwrap_or(&Value::Null),
                "nodePort on a ClusterIP Service",
            ));
        }
        let target_port = match pc.get("targetPort") {
            Some(Value::String(_)) | None => None,
            Some(_) => pc.port("targetPort")?,
        };
        ports.push(ServicePort {
            name: pc.str("name")?.unwrap_or("").to_string(),
            protocol,
            port,
            node_port,
            target_port,
        });
    }
    let policy = |key: &str| -> Result<bool, ConfigError> {
        match spec.str(key)? {
            None | Some("Cluster") => Ok(false),
            Some("Local") => Ok(true),
            Some(_) => Err(spec.err(
                &spec.join(key),
                specv.get(key).unwrap_or(&Value::Null),
                "expected Cluster or Local",
            )),
        }
    };
    let external_local = policy("externalTrafficPolicy")?;
    let internal_local = policy("internalTrafficPolicy")?;
    let affinity_timeout = match spec.str("sessionAffinity")? {
        None | Some("None") => None,
        Some("ClientIP") => {
            let t = specv
                .get("sessionAffinityConfig")
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"));
            match t {
                None | Some(Value::Null) => Some(10800),
                Some(v) => match v.as_u64() {
                    Some(n @ 1..=86400) => Some(n as u32),
                    _ => {
                        return Err(spec.err(
                            &spec.join("sessionAffinityConfig.clientIP.timeoutSeconds"),
                            v,
                            "expected 1..86400",
                        ));
                    }
                },
            }
        }
        Some(_) => {
            return Err(spec.err(
                &spec.join("sessionAffinity"),
                specv.get("sessionAffinity").unwrap_or(&Value::Null),
                "expected None or ClientIP",
            ));
        }
    };
    let mut external_ips = Vec::new();
    for (p, v) in spec.seq("externalIPs")? {
        if let Some(ip) = spec.ipv4(&p, v)? {
            external_ips.push(ip);
        }
    }
    let mut lb_ips = Vec::new();
    if kind == ServiceType::LoadBalancer
        && let Some(ing) = c
            .get("status")
            .and_then(|s| s.get("loadBalancer"))
            .filter(|l| !l.is_null())
    {
        let lp = c.join("status.loadBalancer");
        let lc = c.at(&lp, ing);
        for (p, v) in lc.seq("ingress")? {
            let ic = lc.at(&p, v);
            if let Some(ipv) = ic.get("ip")
                && let Some(ip) = ic.ipv4(&ic.join("ip"), ipv)?
            {
                lb_ips.push(ip);
            }
        }
    }
    if cluster_ips.is_empty() {
        return Ok(None); // headless or IPv6-only: nothing to load-balance here
    }
    Ok(Some(Service {
        source: object_source(src, c),
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

fn parse_slice(src: &Source, c: &Cur<'_>) -> Result<Option<EndpointSlice>, ConfigError> {
    let (namespace, name) = metadata(c)?;
    match c.req_str("addressType")? {
        "IPv4" => {}
        "IPv6" | "FQDN" => return Ok(None),
        _ => {
            return Err(c.err(
                &c.join("addressType"),
                c.v.get("addressType").unwrap_or(&Value::Null),
                "expected IPv4, IPv6 or FQDN",
            ));
        }
    }
    let service =
        c.v.get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                c.err(
                    &c.join("metadata.labels.kubernetes.io/service-name"),
                    &Value::Null,
                    "required label missing (which Service does this slice belong to?)",
                )
            })?
            .to_string();
    let mut ports = Vec::new();
    for (p, v) in c.seq("ports")? {
        let pc = c.at(&p, v);
        let Some(port) = pc.port("port")? else {
            continue; // no port: "all ports", unused by Services with ports
        };
        ports.push(SlicePort {
            name: pc.str("name")?.unwrap_or("").to_string(),
            protocol: pc.protocol()?,
            port,
        });
    }
    let mut endpoints = Vec::new();
    for (p, v) in c.seq("endpoints")? {
        let ec = c.at(&p, v);
        let mut addresses = Vec::new();
        for (ap, av) in ec.seq("addresses")? {
            if let Some(ip) = ec.ipv4(&ap, av)? {
                addresses.push(ip);
            }
        }
        let (ready, serving, terminating) = match ec.get("conditions") {
            None => (true, true, false),
            Some(cv) => {
                let cp = ec.join("conditions");
                let cc = ec.at(&cp, cv);
                let ready = cc.bool("ready")?.unwrap_or(true);
                let serving = cc.bool("serving")?.unwrap_or(ready);
                let terminating = cc.bool("terminating")?.unwrap_or(false);
                (ready, serving, terminating)
            }
        };
        endpoints.push(Endpoint {
            addresses,
            ready,
            serving,
            terminating,
            node_name: ec.str("nodeName")?.map(str::to_string),
        });
    }
    Ok(Some(EndpointSlice {
        source: object_source(src, c),
        namespace,
        name,
        service,
        ports,
        endpoints,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: default, uid: abc}
  spec:
    type: NodePort
    clusterIP: 10.96.0.10
    clusterIPs: [10.96.0.10]
    externalTrafficPolicy: Local
    ports:
    - {name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30232}
    - {name: dns, port: 53, protocol: UDP, targetPort: dns, nodePort: 30053}
    sessionAffinity: ClientIP
    sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  status: {loadBalancer: {}}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: web-abcde
    namespace: default
    labels: {kubernetes.io/service-name: web}
  addressType: IPv4
  ports: [{name: http, port: 8080, protocol: TCP}]
  endpoints:
  - addresses: [172.16.2.10]
    conditions: {ready: false, serving: true, terminating: true}
    nodeName: node-a
  - addresses: [172.16.3.20]
"#;

    #[test]
    fn reads_a_kind_list() {
        let mut m = Manifests::default();
        m.add_text("svc.yaml", LIST).unwrap();
        let s = &m.services[0];
        assert_eq!(s.kind, ServiceType::NodePort);
        assert!(s.external_local);
        assert_eq!(s.affinity_timeout, Some(60));
        assert_eq!(s.ports[1].protocol, Protocol::Udp);
        assert_eq!(s.ports[1].node_port, Some(30053));
        assert_eq!(s.ports[1].target_port, None);
        assert_eq!(s.source.path, "items[0]");
        let e = &m.slices[0].endpoints;
        assert!(!e[0].ready && e[0].serving && e[0].terminating);
        assert!(e[1].ready && e[1].serving && !e[1].terminating);
        assert_eq!(e[0].node_name.as_deref(), Some("node-a"));
    }

    #[test]
    fn multi_document() {
        let text = "kind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n---\nkind: Service\nmetadata: {name: b}\nspec: {clusterIP: None}\n---\n";
        let mut m = Manifests::default();
        m.add_text("f.yaml", text).unwrap();
        assert_eq!(m.services.len(), 1, "the headless Service is skipped");
        assert_eq!(m.services[0].name, "a");
        assert_eq!(m.services[0].source.doc, 0);
    }

    #[test]
    fn bad_protocol_names_file_doc_path_and_value() {
        let bad = LIST.replace(
            "protocol: UDP, targetPort: dns",
            "protocol: SCTP, targetPort: dns",
        );
        let text = format!("kind: List\nitems: []\n---\n{bad}");
        let e = Manifests::default()
            .add_text("svc.yaml", &text)
            .unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("svc.yaml")
                && s.contains("document 1")
                && s.contains("items[0].spec.ports[1].protocol")
                && s.contains("\"SCTP\""),
            "{s}"
        );
    }

    /// The fast path builds exactly what the checked reader builds.
    #[test]
    fn fast_path_agrees_with_the_checked_reader() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/compile/services");
        let mut texts = vec![("svc.yaml".to_string(), LIST.to_string())];
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            texts.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
        let v: serde_json::Value = serde_yaml::from_str(LIST).unwrap();
        texts.push(("svc.json".into(), serde_json::to_string(&v).unwrap()));
        for (file, text) in texts {
            let fast = crate::config::fast::read(&file, &text)
                .unwrap_or_else(|| panic!("{file}: the fast path gave up on a valid file"));
            let mut slow = Manifests::default();
            slow.add_text_checked(&file, &text).unwrap();
            assert_eq!(fast, slow, "{file}");
            assert!(!fast.services.is_empty(), "{file}");
        }
        // Invalid input: the fast path gives up, the checked reader explains.
        let bad = LIST.replace("protocol: UDP", "protocol: SCTP");
        assert!(crate::config::fast::read("x", &bad).is_none());
        assert!(crate::config::fast::read("x", "kind: Deployment\n").is_none());
    }

    #[test]
    fn json_reads_like_yaml() {
        let mut y = Manifests::default();
        y.add_text("svc.yaml", LIST).unwrap();
        let v: serde_json::Value = serde_yaml::from_str(LIST).unwrap();
        let mut j = Manifests::default();
        j.add_text("svc.yaml", &serde_json::to_string_pretty(&v).unwrap())
            .unwrap();
        assert_eq!(y, j);
        let e = Manifests::default()
            .add_text("x.json", r#"{"kind": "Service", "metadata": {"name": "a"}, "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 0}]}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.json: document 0: spec.ports[0].port"), "{e}");
    }

    #[test]
    fn unknown_kind_and_bad_ip() {
        let e = Manifests::default()
            .add_text("x.yaml", "kind: Deployment\nmetadata: {name: a}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kind") && e.contains("Deployment"), "{e}");
        let e = Manifests::default()
            .add_text(
                "x.yaml",
                "kind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.96.0.300}\n",
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.clusterIP") && e.contains("10.96.0.300"),
            "{e}"
        );
    }
}
