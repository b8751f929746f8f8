//! `node.toml`: what the compiler needs to know about this node — its
//! addresses, its OpenFlow ports, its local pods and its noencap peers.
//!
//! ```toml
//! name = "node-a"
//! mode = "noencap"
//! node_ips = ["10.176.25.244"]          # every address NodePorts answer on
//! pod_cidr = "172.16.2.0/24"
//! # virtual_ip = "169.254.169.110"       # NodePort virtual IP (default)
//! # virtual_mac = "aa:bb:cc:dd:ee:ff"    # MAC the ARP responders answer with (default)
//! # hairpin_ip = "169.254.169.111"       # source a pod sees when it reaches itself (default)
//!
//! [uplink]
//! port = 3
//! mac = "00:50:56:a7:35:0b"
//!
//! [gateway]
//! name = "antrea-gw0"
//! ip = "172.16.2.1"
//! mac = "0a:58:ac:10:02:01"
//! port = 2
//!
//! [[pods]]
//! name = "pod1"
//! ip = "172.16.2.10"
//! port = 4                              # mac defaults to 0a:58 + the IP's bytes
//!
//! [[peers]]
//! name = "node-b"
//! node_ip = "10.176.26.36"
//! node_mac = "00:50:56:a7:ca:77"
//! pod_cidr = "172.16.3.0/24"
//! ```
//!
//! Unknown keys are errors (a typo must not silently change the pipeline).

use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

/// A MAC address, parsed from `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The MAC as a 48-bit number (for `mod_dl_*` and `load`).
    pub fn as_u64(self) -> u64 {
        self.0.iter().fold(0u64, |a, &b| (a << 8) | b as u64)
    }

    /// Antrea's pod MAC convention: `0a:58` followed by the IPv4 bytes.
    pub fn from_pod_ip(ip: Ipv4Addr) -> MacAddr {
        let o = ip.octets();
        MacAddr([0x0a, 0x58, o[0], o[1], o[2], o[3]])
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("bad MAC {s:?} (want aa:bb:cc:dd:ee:ff)"));
        }
        for (o, p) in out.iter_mut().zip(parts) {
            *o = u8::from_str_radix(p, 16)
                .ok()
                .filter(|_| p.len() == 2)
                .ok_or_else(|| format!("bad MAC {s:?} (want aa:bb:cc:dd:ee:ff)"))?;
        }
        Ok(MacAddr(out))
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv4 prefix, parsed from `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Cidr {
    /// The netmask as a number.
    pub fn mask(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        }
    }

    /// Whether `ip` is inside the prefix.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad CIDR {s:?} (want a.b.c.d/len with zero host bits)");
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let len: u8 = l.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
        let c = Cidr { addr, len };
        if u32::from(addr) & !c.mask() != 0 {
            return Err(bad());
        }
        Ok(c)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Routing mode. Only `noencap` (pods routed by the underlay, as in seed 004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Pod traffic to other nodes leaves on the uplink unencapsulated.
    #[default]
    Noencap,
}

/// The uplink (the node's NIC attached to the bridge).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    /// OpenFlow port number.
    pub port: u32,
    /// The NIC's MAC: source MAC of frames routed to noencap peers.
    pub mac: MacAddr,
}

/// The gateway interface between the bridge and the host network stack.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Interface name (`antrea-gw0`), for documentation and port naming.
    #[serde(default = "default_gw_name")]
    pub name: String,
    /// Gateway IP (first address of the pod CIDR in Antrea); the SNAT source
    /// for externalTrafficPolicy Cluster.
    pub ip: Ipv4Addr,
    /// Gateway MAC: source MAC of frames routed to pods.
    pub mac: MacAddr,
    /// OpenFlow port number.
    pub port: u32,
}

fn default_gw_name() -> String {
    "antrea-gw0".into()
}

/// A pod on this node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    /// Name (the port name in `replay`/`trace`).
    pub name: String,
    /// Pod IP (inside the node's pod CIDR).
    pub ip: Ipv4Addr,
    /// Pod MAC; defaults to Antrea's `0a:58:` + IP bytes.
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// OpenFlow port number.
    pub port: u32,
}

impl Pod {
    /// The pod's MAC (given or derived from its IP).
    pub fn mac(&self) -> MacAddr {
        self.mac.unwrap_or_else(|| MacAddr::from_pod_ip(self.ip))
    }
}

/// Another node, reached directly over the underlay (noencap).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Kubernetes node name (matches EndpointSlice `nodeName`).
    pub name: String,
    /// The peer's node IP (hostNetwork endpoints on it use this address).
    pub node_ip: Ipv4Addr,
    /// The peer's MAC on the shared L2 segment.
    pub node_mac: MacAddr,
    /// The peer's pod CIDR.
    pub pod_cidr: Cidr,
}

/// `node.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Kubernetes node name (matches EndpointSlice `nodeName`).
    pub name: String,
    /// Routing mode.
    #[serde(default)]
    pub mode: Mode,
    /// Addresses NodePorts are served on; the first is the primary.
    pub node_ips: Vec<Ipv4Addr>,
    /// This node's pod CIDR.
    pub pod_cidr: Cidr,
    /// NodePort virtual IP (zone 52100 DNATs node IPs to it).
    #[serde(default = "default_vip")]
    pub virtual_ip: Ipv4Addr,
    /// MAC answered for the virtual IP and for Service IPs (ARP responders).
    #[serde(default = "default_vmac")]
    pub virtual_mac: MacAddr,
    /// Source address a pod sees when it reaches itself through a Service.
    #[serde(default = "default_hairpin")]
    pub hairpin_ip: Ipv4Addr,
    /// The uplink.
    pub uplink: Uplink,
    /// The gateway.
    pub gateway: Gateway,
    /// Local pods.
    #[serde(default)]
    pub pods: Vec<Pod>,
    /// Noencap peers.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// Service manifests (file or directory, relative to this file), used
    /// when `flowpath compile` is given no `--services`.
    #[serde(default)]
    pub services: Option<std::path::PathBuf>,
    /// `flowpath run`'s keys may share the file; the compiler ignores them.
    #[serde(flatten)]
    pub runtime: RuntimeKeys,
}

/// The keys of `flowpath run`'s configuration (see `ctrl::run::config`),
/// accepted and ignored here so that one `node.toml` serves both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RuntimeKeys {
    pub flows: Option<toml::Value>,
    pub groups: Option<toml::Value>,
    pub workers: Option<toml::Value>,
    pub cores: Option<toml::Value>,
    pub cache: Option<toml::Value>,
    pub conntrack: Option<toml::Value>,
    pub umem: Option<toml::Value>,
    pub idle_sleep_us: Option<toml::Value>,
    pub idle_polls: Option<toml::Value>,
    pub yield_us: Option<toml::Value>,
    pub control_socket: Option<toml::Value>,
    pub ports: Option<toml::Value>,
}

fn default_vip() -> Ipv4Addr {
    Ipv4Addr::new(169, 254, 169, 110)
}
fn default_vmac() -> MacAddr {
    MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
}
fn default_hairpin() -> Ipv4Addr {
    Ipv4Addr::new(169, 254, 169, 111)
}

impl NodeConfig {
    /// Parse and validate `node.toml` text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<NodeConfig, ConfigError> {
        let n: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Node {
            file: file.into(),
            field: e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!(
                        "line {line} column {col} {:?}",
                        &text[s.start..s.end.min(text.len())]
                    )
                })
                .unwrap_or_default(),
            problem: e.message().to_string(),
        })?;
        n.validate(file)?;
        Ok(n)
    }

    /// Read and parse `node.toml`.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            file: file.clone(),
            error: e.to_string(),
        })?;
        NodeConfig::parse(&file, &text)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |field: &str, problem: String| ConfigError::Node {
            file: file.into(),
            field: field.into(),
            problem,
        };
        if self.node_ips.is_empty() {
            return Err(bad("node_ips", "at least one node IP is required".into()));
        }
        let mut ports = std::collections::BTreeMap::new();
        let mut claim = |port: u32, who: String| -> Result<(), ConfigError> {
            if port == 0 || port >= 0xff00 {
                return Err(bad(
                    &who,
                    format!("OpenFlow port {port} out of range 1..65279"),
                ));
            }
            if let Some(other) = ports.insert(port, who.clone()) {
                return Err(bad(
                    &who,
                    format!("OpenFlow port {port} already used by {other}"),
                ));
            }
            Ok(())
        };
        claim(self.uplink.port, "uplink.port".into())?;
        claim(self.gateway.port, "gateway.port".into())?;
        for (i, p) in self.pods.iter().enumerate() {
            claim(p.port, format!("pods[{i}].port"))?;
        }
        if !self.pod_cidr.contains(self.gateway.ip) {
            return Err(bad(
                "gateway.ip",
                format!("{} is outside pod_cidr {}", self.gateway.ip, self.pod_cidr),
            ));
        }
        let mut ips = std::collections::BTreeSet::new();
        for (i, p) in self.pods.iter().enumerate() {
            if !self.pod_cidr.contains(p.ip) {
                return Err(bad(
                    &format!("pods[{i}].ip"),
                    format!("{} is outside pod_cidr {}", p.ip, self.pod_cidr),
                ));
            }
            if p.ip == self.gateway.ip || !ips.insert(p.ip) {
                return Err(bad(
                    &format!("pods[{i}].ip"),
                    format!("{} is used twice", p.ip),
                ));
            }
        }
        for (i, p) in self.peers.iter().enumerate() {
            if p.name == self.name {
                return Err(bad(
                    &format!("peers[{i}].name"),
                    "a peer cannot be this node".into(),
                ));
            }
            let overlaps = |a: Cidr, b: Cidr| a.contains(b.addr) || b.contains(a.addr);
            if overlaps(p.pod_cidr, self.pod_cidr) {
                return Err(bad(
                    &format!("peers[{i}].pod_cidr"),
                    format!("{} overlaps this node's {}", p.pod_cidr, self.pod_cidr),
                ));
            }
        }
        Ok(())
    }

    /// The local pod with this IP.
    pub fn pod_by_ip(&self, ip: Ipv4Addr) -> Option<&Pod> {
        self.pods.iter().find(|p| p.ip == ip)
    }

    /// `NAME=OFPORT` pairs for `replay`/`trace`: gateway, uplink, pods.
    pub fn port_names(&self) -> Vec<(String, u32)> {
        let mut v = vec![
            (self.gateway.name.clone(), self.gateway.port),
            ("uplink".to_string(), self.uplink.port),
        ];
        v.extend(self.pods.iter().map(|p| (p.name.clone(), p.port)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"
name = "node-a"
node_ips = ["10.176.25.244"]
pod_cidr = "172.16.2.0/24"
[uplink]
port = 3
mac = "00:50:56:a7:35:0b"
[gateway]
ip = "172.16.2.1"
mac = "0a:58:ac:10:02:01"
port = 2
[[pods]]
name = "pod1"
ip = "172.16.2.10"
port = 4
"#;

    #[test]
    fn parses_with_defaults() {
        let n = NodeConfig::parse("node.toml", NODE).unwrap();
        assert_eq!(n.virtual_ip, Ipv4Addr::new(169, 254, 169, 110));
        assert_eq!(n.pods[0].mac().to_string(), "0a:58:ac:10:02:0a");
        assert_eq!(n.gateway.name, "antrea-gw0");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e = NodeConfig::parse("n.toml", &format!("{NODE}\nbogus = 1\n")).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("n.toml: line 17 column 1") && s.contains("bogus"),
            "{s}"
        );
    }

    #[test]
    fn unknown_top_level_key_is_an_error() {
        let e = NodeConfig::parse("n.toml", &format!("bogus = 1\n{NODE}")).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("line 1 column 1") && s.contains("bogus"), "{s}");
    }

    #[test]
    fn runtime_keys_may_share_the_file() {
        // examples/node.toml holds both: run's keys and tables, the
        // compiler's node description.
        let n = NodeConfig::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/node.toml"
        )))
        .unwrap();
        assert_eq!(n.pods.len(), 2);
        assert!(n.services.is_some());
        assert!(n.runtime.ports.is_some() && n.runtime.control_socket.is_some());
        // And the compiler's keys may follow a flows-based run file.
        let text = format!(
            "{}\nflows = \"f.txt\"\nworkers = 2\n[[ports]]\nname = \"up\"\n{}",
            &NODE[..NODE.find("[uplink]").unwrap()],
            &NODE[NODE.find("[uplink]").unwrap()..]
        );
        let n = NodeConfig::parse("node.toml", &text).unwrap();
        assert_eq!(n.pods.len(), 1);
        assert!(n.runtime.flows.is_some());
    }

    #[test]
    fn pod_outside_cidr_is_an_error() {
        let t = NODE.replace("172.16.2.10", "172.16.9.10");
        let s = NodeConfig::parse("n.toml", &t).unwrap_err().to_string();
        assert!(s.contains("pods[0].ip") && s.contains("172.16.9.10"), "{s}");
    }

    #[test]
    fn duplicate_port_is_an_error() {
        let t = NODE.replace("port = 4", "port = 2");
        let s = NodeConfig::parse("n.toml", &t).unwrap_err().to_string();
        assert!(
            s.contains("pods[0].port") && s.contains("gateway.port"),
            "{s}"
        );
    }
}
