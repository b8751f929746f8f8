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
//! 40 Affinity     reg4[16..18] = 1 ("select an endpoint"); flows learned for ClientIP
//!                 affinity (client + frontend -> endpoint in reg3/reg4, state 2)
//! 41 ServiceLB    ip+proto+port (hash, one subtable) -> group (buckets: ct(commit,zone=65500,
//!                 nat(dst=EP),exec(ct_mark=0x21)) -> 42); no endpoints -> controller (reject);
//!                 ClientIP affinity: select (state 1) -> group -> learn (state 3) -> 43,
//!                 selected (state 2) -> 43
//! 42 EndpointDnat -> 70
//! 43 AffinityDnat reg3 + reg4[0..15] = an endpoint: ct(commit,zone=65500,nat(dst=EP)) -> 42;
//!                 else select again (state 1) -> 41
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
//! - Session affinity (`ClientIP`), Antrea's shape with OVS `learn`: table
//!   41 sends a new connection to the Service's select group with reg4
//!   state 3; the chosen bucket loads the endpoint (reg3 = IP, reg4[0..15]
//!   = port) and comes back to table 41, whose priority-200 "learn" flow
//!   adds to table 40 a flow matching IPv4 + protocol + destination port +
//!   frontend IP + client address (reg5) that loads the same endpoint with state 2
//!   ("selected"), then goes to table 43, which DNATs to reg3:reg4[0..15]
//!   in zone 65500. The next new connection of that client finds its
//!   learned flow in table 40, and table 41's state-2 flow sends it
//!   straight to table 43. A learned endpoint that is no longer an endpoint
//!   has no table 43 flow: the packet selects again (and re-learns).
//!   `timeoutSeconds` (default 10800, at most 65535 here: the timeout field
//!   is 16 bits) is the learned flow's **idle_timeout**: only the first
//!   packet of each new connection reaches table 40 (table 31 sends only
//!   `+new` there), so the timer restarts at every new connection of the
//!   client, as kube-proxy's `recent --rcheck --seconds` / `--set` does.
//!   (Antrea uses `hard_timeout`, which expires the affinity that long after
//!   the first connection whatever the traffic.) `delete_learned` drops a
//!   frontend's learned flows when the frontend goes. The group hashes the
//!   client address and port, so without a learned flow connections
//!   spread. The key is the client address in reg5: NodePort and external
//!   IP traffic with externalTrafficPolicy Cluster is SNATed to the gateway
//!   IP (zone 52200) before table 41, so for affinity Services table 7
//!   saves `nw_src` in reg5 before the chain (registers survive the
//!   recirculations); table 31 fills it from `nw_src` for every other new
//!   connection. Cost: an affinity NodePort's megaflows match the client
//!   address (non-affinity Services are unaffected).
//! - A Service without usable endpoints sends new connections to the
//!   controller (`controller(reason=no_match,userdata=REJECT)`, as Antrea
//!   does); the datapath answers it itself (`datapath::reject`): a TCP RST,
//!   or an ICMP port unreachable for UDP and SCTP, from the address the
//!   client targeted, out of the port the packet came in on (rate limited,
//!   counted as `rejects`). OVS without a controller drops it: a documented
//!   deviation.
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
//! - A local hostNetwork endpoint of an ETP Local Service sees an outside
//!   client's own address; its host must send the answer back through the
//!   gateway (policy routing of connections that arrived there, e.g. a
//!   connmark and an `ip rule`, as the end-to-end cluster does), not
//!   straight out of the uplink around the un-NAT.

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
use build::{M, ct, flow, load, mov, nat_range, resubmit, sub, whole};
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
/// the controller, marked by the REJECT userdata. flowpath's datapath
/// recognises the userdata and answers the packet itself (`run`, `replay`
/// and `trace` alike, see `datapath::reject`); OVS without a controller
/// drops it.
fn reject() -> Action {
    Action::Controller {
        args: "reason=no_match,userdata=52.45.4a.45.43.54".into(),
    }
}

/// `actions`, preceded for a ClientIP-affinity Service by saving the client
/// address in reg5 (its affinity key) before the NodePort chain SNATs it to
/// the gateway IP. Only affinity Services pay for it: the move makes their
/// megaflows match the client address.
fn save_client(affinity: bool, mut actions: Vec<Action>) -> Vec<Action> {
    if affinity {
        actions.insert(
            0,
            mov(whole(FieldId::NwSrc), whole(FieldId::Reg(REG_CLIENT))),
        );
    }
    actions
}

/// The learn of a ClientIP-affinity frontend: in table 40, a flow that
/// matches this client and frontend (IPv4, protocol, destination port and
/// address, the client address saved in reg5) and loads the chosen endpoint (reg3, reg4[0..15])
/// with state "selected". Idle timeout = timeoutSeconds (see the module
/// doc); `delete_learned` drops the learned flows with the frontend.
fn affinity_learn(proto: Protocol, cookie: u64, timeout: u32) -> Action {
    use datapath::pipeline::ir::{LearnAction, LearnSpec, LearnSrc};
    let (nw_proto, tp_dst) = match proto {
        Protocol::Tcp => (6, FieldId::TcpDst),
        Protocol::Udp => (17, FieldId::UdpDst),
    };
    let m = |f: FieldId, bits: u16| LearnSpec::Match {
        dst: sub(f, 0, bits),
        src: LearnSrc::Field(sub(f, 0, bits)),
    };
    let copy = |f: FieldId, ofs: u16, bits: u16| LearnSpec::Load {
        dst: sub(f, ofs, bits),
        src: LearnSrc::Field(sub(f, ofs, bits)),
    };
    Action::Learn(Box::new(LearnAction {
        table: T_AFFINITY,
        idle_timeout: timeout.min(u16::MAX as u32) as u16,
        hard_timeout: 0,
        fin_idle_timeout: 0,
        fin_hard_timeout: 0,
        priority: 200,
        cookie,
        send_flow_rem: false,
        delete_learned: true,
        limit: 0,
        result_dst: None,
        specs: vec![
            LearnSpec::Match {
                dst: sub(FieldId::DlType, 0, 16),
                src: LearnSrc::Imm(0x800),
            },
            LearnSpec::Match {
                dst: sub(FieldId::NwProto, 0, 8),
                src: LearnSrc::Imm(nw_proto),
            },
            m(tp_dst, 16),
            m(FieldId::NwDst, 32),
            m(FieldId::Reg(REG_CLIENT), 32),
            copy(FieldId::Reg(4), 0, 16),
            copy(FieldId::Reg(3), 0, 32),
            LearnSpec::Load {
                dst: sub(FieldId::Reg(4), 16, 3),
                src: LearnSrc::Imm((REG4_SELECTED >> 16) as u128),
            },
        ],
    }))
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
    /// Endpoints that already have their table 43 DNAT flow (affinity).
    affinity_eps: BTreeSet<(Protocol, Ipv4Addr, u16)>,
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
        affinity_eps: BTreeSet::new(),
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
        let fields = vec![(FieldId::NwSrc, None), (tp_src, None)];
        let buckets = backends
            .iter()
            .enumerate()
            .map(|(i, b)| Bucket {
                id: Some(i as u32),
                weight: 100,
                watch_port: None,
                actions: if *affinity {
                    // ClientIP affinity (Antrea's shape): the bucket names
                    // the endpoint in reg3 / reg4[0..15] and goes back to
                    // table 41, which learns it and DNATs in table 43.
                    // (set_field: what OVS gives back for a bucket.)
                    vec![
                        Action::SetField {
                            field: FieldId::Reg(3),
                            value: u32::from(b.ip) as u128,
                            mask: u32::MAX as u128,
                        },
                        Action::SetField {
                            field: FieldId::Reg(4),
                            value: b.port as u128,
                            mask: 0xffff,
                        },
                        Action::SetField {
                            field: FieldId::Reg(4),
                            value: REG4_LEARN as u128,
                            mask: REG4_STATE_MASK as u128,
                        },
                        resubmit(T_SERVICE_LB),
                    ]
                } else {
                    vec![ct(
                        true,
                        T_ENDPOINT_DNAT,
                        ZONE_SERVICE,
                        Some(conntrack::NatSpec::Dst(nat_range(b.ip, Some(b.port)))),
                        vec![load(sub(FieldId::CtMark, 0, 32), CT_MARK_SERVICE as u128)],
                    )]
                },
            })
            .collect();
        if *affinity {
            for b in backends.iter() {
                if self.affinity_eps.insert((*proto, b.ip, b.port)) {
                    self.out.flows.push(flow(
                        T_AFFINITY_DNAT,
                        200,
                        COOKIE_BASE,
                        M::proto(*proto).reg(3, u32::from(b.ip), u32::MAX).reg(
                            4,
                            REG4_SELECTED | b.port as u32,
                            REG4_STATE_MASK | 0xffff,
                        ),
                        vec![ct(
                            true,
                            T_ENDPOINT_DNAT,
                            ZONE_SERVICE,
                            Some(conntrack::NatSpec::Dst(nat_range(b.ip, Some(b.port)))),
                            vec![load(sub(FieldId::CtMark, 0, 32), CT_MARK_SERVICE as u128)],
                        )],
                    ));
                }
            }
        }
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

    /// Table 41 for one frontend. With ClientIP affinity (`affinity` =
    /// timeoutSeconds) the frontend gets Antrea's three flows: select
    /// (group, whose bucket comes back with "learn"), learn (remember
    /// client IP + frontend -> endpoint in table 40 for `timeout` idle
    /// seconds, then DNAT in table 43) and selected (table 40 found a
    /// learned endpoint: DNAT in table 43).
    fn lb_flow(
        &mut self,
        ip: Ipv4Addr,
        proto: Protocol,
        port: u16,
        group: Option<u32>,
        cookie: u64,
        affinity: Option<u32>,
    ) {
        let m = |state: u32| {
            M::proto(proto)
                .reg(4, state, REG4_STATE_MASK)
                .nw_dst(ip)
                .tp_dst(port)
        };
        let state = |v: u32| load(sub(FieldId::Reg(4), 16, 3), (v >> 16) as u128);
        let (Some(g), Some(timeout)) = (group, affinity) else {
            let actions = match group {
                Some(g) => vec![state(REG4_SELECTED), Action::Group(g)],
                None => vec![reject()],
            };
            if group.is_none() && affinity.is_some() {
                // Clients still learned to an endpoint that went away.
                self.out.flows.push(flow(
                    T_SERVICE_LB,
                    200,
                    cookie,
                    m(REG4_SELECTED),
                    vec![reject()],
                ));
            }
            self.out
                .flows
                .push(flow(T_SERVICE_LB, 200, cookie, m(REG4_SELECT), actions));
            return;
        };
        self.out.flows.push(flow(
            T_SERVICE_LB,
            200,
            cookie,
            m(REG4_SELECT),
            vec![state(REG4_LEARN), Action::Group(g)],
        ));
        self.out.flows.push(flow(
            T_SERVICE_LB,
            200,
            cookie,
            m(REG4_LEARN),
            vec![
                affinity_learn(proto, cookie, timeout),
                state(REG4_SELECTED),
                resubmit(T_AFFINITY_DNAT),
            ],
        ));
        self.out.flows.push(flow(
            T_SERVICE_LB,
            200,
            cookie,
            m(REG4_SELECTED),
            vec![resubmit(T_AFFINITY_DNAT)],
        ));
    }

    /// An ETP Cluster external IP (externalIPs, load-balancer ingress):
    /// from the uplink, SNAT to the gateway IP in zone 52200 (tables 6, 7,
    /// then the NodePort chain from table 9 on, with the external IP left as
    /// the destination), and the replies' way back (table 110). See the
    /// module doc.
    fn external_snat(
        &mut self,
        ip: Ipv4Addr,
        proto: Protocol,
        port: u16,
        cookie: u64,
        affinity: bool,
    ) {
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
            save_client(
                affinity,
                vec![
                    load(whole(FieldId::Reg(8)), REG8_REQUEST as u128),
                    resubmit(T_NODEPORT_POST_DNAT),
                ],
            ),
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
                self.lb_flow(ip, proto, port, gi, cookie, rp.svc.affinity_timeout);
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
                self.lb_flow(ip, proto, port, ge, cookie, rp.svc.affinity_timeout);
                self.record_udp(proto, (ip, port), &external);
                if !rp.svc.external_local {
                    self.external_snat(ip, proto, port, cookie, affinity);
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
            save_client(
                rp.svc.affinity_timeout.is_some() && !rp.svc.external_local,
                vec![ct(
                    false,
                    T_NODEPORT_DNAT,
                    ZONE_NODEPORT_DNAT,
                    Some(conntrack::NatSpec::Existing),
                    vec![],
                )],
            ),
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
        self.lb_flow(vip, proto, np, ge, cookie, rp.svc.affinity_timeout);
        self.record_udp(proto, (vip, np), &external);
        Ok(())
    }
}
