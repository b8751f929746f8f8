//! The Service compiler: a node's description and its Services in, the
//! Antrea-style OpenFlow pipeline of the seeds out (ordinary [`Flow`]s and
//! [`Group`]s, the same IR flow files parse into).
//!
//! A NodePort packet's walk through what this module generates (tables in
//! [`tables`]):
//!
//! ```text
//!  0 Classifier   IGMP drop; ARP responders (virtual IP; Service IPs asked by the host);
//!                 in_port -> reg0[0..15] mark (uplink 4, gateway 1, pod 2, LOCAL 5)
//!  5 Uplink       from the uplink, or to a node IP -> 6; else -> 30
//!  6 NodePortIP   nw_dst is a node IP or an ETP Cluster external IP (hash) -> 7; else -> 12
//!  7 NodePortPort proto+tp_dst is a NodePort (hash) -> ct(zone=52100,nat,table=8);
//!                 ETP Cluster external IP+proto+port (hash): reg8=1 -> 9 (SNAT only)
//!  8 NodePortDnat new: reg8=1, ct(commit,zone=52100,nat(dst=VIP)) -> 9; est: reg8=1 -> 9;
//!                 replies (reg8=2), un-DNATed: -> 70
//!  9 PostDnat     ct(zone=52200,nat,table=11)
//! 11 Snat         new, ETP Cluster: ct(commit,zone=52200,nat(src=GwIP)) -> 12;
//!                 new, ETP Local (VIP+proto+NodePort, hash): -> 12 (client IP kept);
//!                 replies: ct(zone=52100,nat,table=8)
//! 12 PostSnat     replies to GwIP: ct(zone=52200,nat,table=11); other replies:
//!                 ct(zone=52100,nat,table=8); requests: ct(zone=65500,nat,table=30)
//! 30 Conntrack    replies from the host to the virtual IP (local hostNetwork endpoints) and
//!                 to the hairpin IP are un-SNATed statelessly; ct(zone=65500,nat,table=31)
//! 31 CtState      uplink -> local pod CIDR (noencap) -> 50; +inv drop; +new -> 40, 41; else -> 70
//! 40 Affinity     reg4[16..18] = 1 ("select an endpoint")
//! 41 ServiceLB    ip+proto+port (hash, one subtable) -> group (buckets: ct(commit,zone=65500,
//!                 nat(dst=EP),exec(ct_mark=0x21)) -> 42); no endpoints -> controller (reject)
//! 42 EndpointDnat -> 70
//! 50 Noencap      -> 70
//! 70 L3Forwarding local pods (hash on nw_dst; hairpin: nw_src=nw_dst -> source = hairpin IP);
//!                 gateway IP; node IPs (hostNetwork endpoints); noencap peers' pod CIDRs and
//!                 node IPs -> uplink with the peer's MAC; default -> gateway
//!105 CtCommit     commit non-Service connections (ct_mark 0x20)
//!110 Output       replies from the virtual IP (reg8=2) -> 12; replies from an ETP Cluster
//!                 external IP to the gateway IP: reg8=2, ct(zone=52200,nat,table=70);
//!                 hairpin (reg1 = in_port) -> IN_PORT; output:reg1
//! ```
//!
//! Every per-Service flow is an exact match on fields that all flows of its
//! table share (same mask), so the classifier keeps one subtable per table
//! and the per-packet cost does not grow with the number of Services
//! (`ctrl/tests/compile_scale.rs` checks the masks; `bench/benches/compile.rs`
//! measures it: 1 vs 10,000 Services within 1%; 10,000 Services x 10
//! endpoints compile and build in ~0.4 s).
//!
//! Choices and limits, each OVS-expressible (the differential tests load
//! every flow into OVS):
//! - Session affinity (`ClientIP`): OVS's `learn` is not in our action set,
//!   so the select group hashes the client address alone: a client keeps
//!   its endpoint while the endpoint set is unchanged. `timeoutSeconds` is
//!   read but not enforced.
//! - A Service without usable endpoints sends new connections to the
//!   controller (`controller(reason=no_match,userdata=REJECT)`, as Antrea
//!   does); the runtime must answer with a TCP RST or ICMP port unreachable.
//!   Until it does, the packet is dropped (OVS without a controller too).
//! - Stale UDP conntrack entries: [`stale_udp_flushes`] lists the (zone,
//!   frontend, backend) entries a reload must delete; applying them is the
//!   runtime's job.
//! - externalIPs and load-balancer ingress IPs arriving on the uplink with
//!   externalTrafficPolicy Cluster are SNATed to the gateway IP in zone 52200
//!   (as Antrea does), so an endpoint on another node answers through this
//!   node: table 6 sends the IP to table 7, which matches IP, protocol and
//!   port (reg8=1, into the zone 52200 step of the NodePort chain, without
//!   the DNAT to the virtual IP); the Service's own frontend in table 41
//!   then picks the endpoint. The endpoint's reply, un-DNATed in zone 65500
//!   (source = the external IP, destination = the gateway IP), is caught in
//!   table 110 and un-SNATed in zone 52200 before routing. With
//!   externalTrafficPolicy Local these IPs keep the client address (table
//!   41 directly, local endpoints only). Traffic to these IPs from inside
//!   the node (pods, the host) is never SNATed, like ClusterIP traffic.
//! - Replies to clients outside the node leave through the gateway (the host
//!   routes them to the uplink), as in the seeds; flowpath knows no next-hop
//!   MAC for them.

pub mod build;
pub mod resolve;
pub mod tables;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use datapath::pipeline::Pipeline;
use datapath::pipeline::fields::FieldId;
use datapath::pipeline::format;
use datapath::pipeline::ir::{Action, Bucket, Flow, Group, GroupType};

use crate::config::k8s::{Protocol, ServiceType};
use crate::config::{ConfigError, Manifests, NodeConfig};
use build::{M, ct, flow, load, nat_range, resubmit, sub, whole};
use resolve::{Backend, ResolvedPort};
use tables::*;

/// The compiler's output.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// Flows, in generation order.
    pub flows: Vec<Flow>,
    /// Groups, by increasing id.
    pub groups: Vec<Group>,
    /// Every UDP (frontend, backend) pair the groups can pick, with its
    /// conntrack zone: a reload that drops a pair must flush its entries
    /// (see [`stale_udp_flushes`]).
    pub udp_backends: BTreeSet<UdpBackend>,
    /// Things that compiled but deserve a look (an endpoint on this node that
    /// is not a configured pod, ...).
    pub warnings: Vec<String>,
}

/// A UDP frontend and one backend it may DNAT to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UdpBackend {
    /// Conntrack zone of the DNAT entry.
    pub zone: u16,
    /// Frontend address as conntrack sees it (ClusterIP, external IP, or the
    /// virtual IP for NodePorts).
    pub frontend: (Ipv4Addr, u16),
    /// Backend.
    pub backend: (Ipv4Addr, u16),
}

/// A conntrack flush a reload must perform: entries of `zone`, protocol
/// `proto`, whose original destination is `orig_dst` and whose reply source
/// is `reply_src` (the removed backend). This is kubernetes#48370: a UDP
/// client keeps sending to a dead backend through its conntrack entry until
/// the entry is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CtFlush {
    /// Zone.
    pub zone: u16,
    /// IP protocol (17).
    pub proto: u8,
    /// Original-direction destination (the frontend).
    pub orig_dst: (Ipv4Addr, u16),
    /// Reply-direction source (the backend that went away).
    pub reply_src: (Ipv4Addr, u16),
}

impl fmt::Display for CtFlush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "zone={} ct_nw_proto={} orig_dst={}:{} reply_src={}:{}",
            self.zone,
            self.proto,
            self.orig_dst.0,
            self.orig_dst.1,
            self.reply_src.0,
            self.reply_src.1
        )
    }
}

/// The flushes that moving from `old` to `new` requires: every UDP
/// (frontend, backend) pair `old` could pick and `new` cannot.
pub fn stale_udp_flushes(old: &Compiled, new: &Compiled) -> Vec<CtFlush> {
    old.udp_backends
        .difference(&new.udp_backends)
        .map(|u| CtFlush {
            zone: u.zone,
            proto: 17,
            orig_dst: u.frontend,
            reply_src: u.backend,
        })
        .collect()
}

impl Compiled {
    /// The flows as `ovs-ofctl --no-stats dump-flows` prints them (sorted by
    /// table, priority, match), one per line: `ovs-ofctl add-flows` and
    /// `flowpath replay` accept the text as is.
    pub fn flows_text(&self) -> String {
        let mut flows = self.flows.clone();
        format::sort_for_dump(&mut flows);
        let mut out = String::with_capacity(flows.len() * 160);
        for f in &flows {
            out.push_str(
                format::format_flow(
                    f,
                    format::FormatOptions {
                        show_table_zero: true,
                    },
                )
                .trim_start(),
            );
            out.push('\n');
        }
        out
    }

    /// The groups in `ovs-ofctl add-groups` form, one per line.
    pub fn groups_text(&self) -> String {
        let mut out = String::new();
        for g in &self.groups {
            out.push_str(format::format_group(g).trim_start());
            out.push('\n');
        }
        out
    }

    /// A ready-to-run pipeline.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(self.flows.clone(), self.groups.clone())
    }
}

/// Reject with `controller(reason=no_match)`: what a Service without
/// endpoints does to a new connection. OVS cannot build a TCP RST or an ICMP
/// port unreachable from flow actions alone; like Antrea, the packet goes to
/// the controller (the runtime), which answers it. Without a controller the
/// packet is dropped, in OVS and in `replay` alike.
fn reject() -> Action {
    Action::Controller {
        args: "reason=no_match,userdata=52.45.4a.45.43.54".into(),
    }
}

struct Ctx<'a> {
    node: &'a NodeConfig,
    out: Compiled,
    /// frontend (ip, proto, port) -> "ns/name" that claimed it
    frontends: BTreeMap<(Ipv4Addr, Protocol, u16), String>,
    /// (proto, nodePort) -> "ns/name"
    node_ports: BTreeMap<(Protocol, u16), String>,
    /// backends -> group id, so identical endpoint sets share a group
    group_of: BTreeMap<(Protocol, bool, Vec<Backend>), u32>,
    next_group: u32,
    /// External IPs (ETP Cluster) that already have their table 6 and 110
    /// flows.
    snat_ips: BTreeSet<Ipv4Addr>,
}

/// Compile `manifests` for `node`.
pub fn compile(node: &NodeConfig, manifests: &Manifests) -> Result<Compiled, ConfigError> {
    let mut services: Vec<_> = manifests.services.clone();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    if let Some(w) = services
        .windows(2)
        .find(|w| (&w[0].namespace, &w[0].name) == (&w[1].namespace, &w[1].name))
    {
        let s = &w[1];
        return Err(ConfigError::Conflict {
            file: s.source.file.clone(),
            doc: s.source.doc,
            path: join(&s.source.path, "metadata.name"),
            problem: format!("Service {}/{} is defined twice", s.namespace, s.name),
        });
    }
    let mut cx = Ctx {
        node,
        out: Compiled::default(),
        frontends: BTreeMap::new(),
        node_ports: BTreeMap::new(),
        group_of: BTreeMap::new(),
        next_group: 1,
        snat_ips: BTreeSet::new(),
    };
    tables::base(node, &mut cx.out.flows);
    let resolved = resolve::resolve(node, &services, &manifests.slices);
    let mut svc_index: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (i, s) in services.iter().enumerate() {
        svc_index.insert((&s.namespace, &s.name), i as u64 + 1);
    }
    for rp in &resolved {
        let idx = svc_index[&(rp.svc.namespace.as_str(), rp.svc.name.as_str())];
        cx.service_port(rp, COOKIE_SERVICE | idx)?;
    }
    for s in &services {
        let cookie = COOKIE_SERVICE | svc_index[&(s.namespace.as_str(), s.name.as_str())];
        // ARP: the host reaches Service IPs through the gateway (seed 003).
        for &ip in &s.cluster_ips {
            cx.out.flows.push(tables::arp_responder(
                node,
                ip,
                Some(node.gateway.port),
                cookie,
            ));
        }
    }
    for rp in &resolved {
        for b in &rp.backends {
            if b.placement == resolve::Placement::LocalPod && node.pod_by_ip(b.ip).is_none() {
                cx.out.warnings.push(format!(
                    "{}/{}: endpoint {} is on this node but not a configured pod; it is sent to the gateway",
                    rp.svc.namespace, rp.svc.name, b.ip
                ));
            }
        }
    }
    cx.out.warnings.dedup();
    Ok(cx.out)
}

fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

impl Ctx<'_> {
    fn claim(
        &mut self,
        rp: &ResolvedPort<'_>,
        ip: Ipv4Addr,
        field: &str,
    ) -> Result<bool, ConfigError> {
        let me = format!("{}/{}", rp.svc.namespace, rp.svc.name);
        let key = (ip, rp.port.protocol, rp.port.port);
        match self.frontends.get(&key) {
            Some(other) if *other != me => Err(ConfigError::Conflict {
                file: rp.svc.source.file.clone(),
                doc: rp.svc.source.doc,
                path: join(&rp.svc.source.path, field),
                problem: format!(
                    "{ip}:{}/{} is already served by Service {other}",
                    rp.port.port,
                    rp.port.protocol.name()
                ),
            }),
            Some(_) => Ok(false),
            None => {
                self.frontends.insert(key, me);
                Ok(true)
            }
        }
    }

    /// The group for a backend set (shared between frontends with the same
    /// set), or `None` when the set is empty.
    fn group(&mut self, proto: Protocol, affinity: bool, backends: Vec<Backend>) -> Option<u32> {
        if backends.is_empty() {
            return None;
        }
        let key = (proto, affinity, backends);
        if let Some(&g) = self.group_of.get(&key) {
            return Some(g);
        }
        let id = self.next_group;
        self.next_group += 1;
        let (proto, affinity, backends) = &key;
        let tp_src = match proto {
            Protocol::Tcp => FieldId::TcpSrc,
            Protocol::Udp => FieldId::UdpSrc,
        };
        // selection_method=hash: OVS picks the bucket during translation, no
        // extra recirculation (the NodePort chain already uses OVS's six).
        // ClientIP affinity hashes the client address alone, so one client
        // always reaches the same endpoint while the endpoint set is stable.
        let fields = if *affinity {
            vec![(FieldId::NwSrc, None)]
        } else {
            vec![(FieldId::NwSrc, None), (tp_src, None)]
        };
        let buckets = backends
            .iter()
            .enumerate()
            .map(|(i, b)| Bucket {
                id: Some(i as u32),
                weight: 100,
                watch_port: None,
                actions: vec![ct(
                    true,
                    T_ENDPOINT_DNAT,
                    ZONE_SERVICE,
                    Some(conntrack::NatSpec::Dst(nat_range(b.ip, Some(b.port)))),
                    vec![load(sub(FieldId::CtMark, 0, 32), CT_MARK_SERVICE as u128)],
                )],
            })
            .collect();
        self.out.groups.push(Group {
            id,
            kind: GroupType::Select,
            selection_method: Some("hash".into()),
            fields,
            selection_param: 0,
            buckets,
        });
        self.group_of.insert(key, id);
        Some(id)
    }

    fn lb_flow(
        &mut self,
        ip: Ipv4Addr,
        proto: Protocol,
        port: u16,
        group: Option<u32>,
        cookie: u64,
    ) {
        let m = M::proto(proto)
            .reg(4, REG4_SELECT, REG4_STATE_MASK)
            .nw_dst(ip)
            .tp_dst(port);
        let actions = match group {
            Some(g) => vec![load(sub(FieldId::Reg(4), 16, 3), 2), Action::Group(g)],
            None => vec![reject()],
        };
        self.out
            .flows
            .push(flow(T_SERVICE_LB, 200, cookie, m, actions));
    }

    /// An ETP Cluster external IP (externalIPs, load-balancer ingress):
    /// from the uplink, SNAT to the gateway IP in zone 52200 (tables 6, 7,
    /// then the NodePort chain from table 9 on, with the external IP left as
    /// the destination), and the replies' way back (table 110). See the
    /// module doc.
    fn external_snat(&mut self, ip: Ipv4Addr, proto: Protocol, port: u16, cookie: u64) {
        let gw = self.node.gateway.ip;
        if self.snat_ips.insert(ip) {
            if !self.node.node_ips.contains(&ip) {
                self.out.flows.push(flow(
                    T_NODEPORT_IP,
                    200,
                    cookie,
                    M::ip().nw_dst(ip),
                    vec![resubmit(T_NODEPORT_PORT)],
                ));
            }
            self.out.flows.push(flow(
                T_OUTPUT,
                220,
                cookie,
                M::ip().reg(8, 0, 0xffff).nw_src(ip).nw_dst(gw),
                vec![
                    load(whole(FieldId::Reg(8)), REG8_REPLY as u128),
                    ct(
                        false,
                        T_L3_FORWARDING,
                        ZONE_NODEPORT_SNAT,
                        Some(conntrack::NatSpec::Existing),
                        vec![],
                    ),
                ],
            ));
        }
        self.out.flows.push(flow(
            T_NODEPORT_PORT,
            210,
            cookie,
            M::proto(proto).nw_dst(ip).tp_dst(port),
            vec![
                load(whole(FieldId::Reg(8)), REG8_REQUEST as u128),
                resubmit(T_NODEPORT_POST_DNAT),
            ],
        ));
    }

    fn record_udp(&mut self, proto: Protocol, frontend: (Ipv4Addr, u16), backends: &[Backend]) {
        if proto != Protocol::Udp {
            return;
        }
        for b in backends {
            self.out.udp_backends.insert(UdpBackend {
                zone: ZONE_SERVICE,
                frontend,
                backend: (b.ip, b.port),
            });
        }
    }

    fn service_port(&mut self, rp: &ResolvedPort<'_>, cookie: u64) -> Result<(), ConfigError> {
        let proto = rp.port.protocol;
        let port = rp.port.port;
        let affinity = rp.svc.affinity_timeout.is_some();
        let internal = rp.internal();
        let external = rp.external();
        let gi = self.group(proto, affinity, internal.clone());
        for (i, &ip) in rp.svc.cluster_ips.iter().enumerate() {
            if self.claim(rp, ip, &format!("spec.clusterIPs[{i}]"))? {
                self.lb_flow(ip, proto, port, gi, cookie);
                self.record_udp(proto, (ip, port), &internal);
            }
        }
        let extra: Vec<(Ipv4Addr, String)> = rp
            .svc
            .external_ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (*ip, format!("spec.externalIPs[{i}]")))
            .chain(
                rp.svc
                    .lb_ips
                    .iter()
                    .enumerate()
                    .map(|(i, ip)| (*ip, format!("status.loadBalancer.ingress[{i}].ip"))),
            )
            .collect();
        let serves_external = !extra.is_empty()
            || (rp.port.node_port.is_some() && rp.svc.kind != ServiceType::ClusterIp);
        let ge = if !serves_external {
            None
        } else if external == internal {
            gi
        } else {
            self.group(proto, affinity, external.clone())
        };
        for (ip, field) in extra {
            if self.claim(rp, ip, &field)? {
                self.lb_flow(ip, proto, port, ge, cookie);
                self.record_udp(proto, (ip, port), &external);
                if !rp.svc.external_local {
                    self.external_snat(ip, proto, port, cookie);
                }
            }
        }
        let Some(np) = rp.port.node_port else {
            return Ok(());
        };
        if rp.svc.kind == ServiceType::ClusterIp {
            return Ok(());
        }
        let me = format!("{}/{}", rp.svc.namespace, rp.svc.name);
        if let Some(other) = self.node_ports.insert((proto, np), me.clone()) {
            if other != me {
                let i = rp.svc.ports.iter().position(|p| p == rp.port).unwrap_or(0);
                return Err(ConfigError::Conflict {
                    file: rp.svc.source.file.clone(),
                    doc: rp.svc.source.doc,
                    path: join(&rp.svc.source.path, &format!("spec.ports[{i}].nodePort")),
                    problem: format!(
                        "nodePort {np}/{} is already used by Service {other}",
                        proto.name()
                    ),
                });
            }
            return Ok(());
        }
        let vip = self.node.virtual_ip;
        // Table 7: this NodePort enters the DNAT-to-VIP chain.
        self.out.flows.push(flow(
            T_NODEPORT_PORT,
            200,
            cookie,
            M::proto(proto).tp_dst(np),
            vec![ct(
                false,
                T_NODEPORT_DNAT,
                ZONE_NODEPORT_DNAT,
                Some(conntrack::NatSpec::Existing),
                vec![],
            )],
        ));
        if rp.svc.external_local {
            // Table 11: ETP Local skips the SNAT to the gateway IP.
            self.out.flows.push(flow(
                T_NODEPORT_SNAT,
                195,
                cookie,
                M::proto(proto)
                    .reg(8, REG8_REQUEST, 0xffff)
                    .nw_dst(vip)
                    .tp_dst(np)
                    .ct_state(ct_state::NEW | ct_state::TRK, 0),
                vec![resubmit(T_NODEPORT_POST_SNAT)],
            ));
        }
        // Table 41: VIP:NodePort is the frontend after the DNAT to the VIP.
        self.lb_flow(vip, proto, np, ge, cookie);
        self.record_udp(proto, (vip, np), &external);
        Ok(())
    }
}
