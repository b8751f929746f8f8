//! Table numbers, zones, marks and the Service-independent part of the
//! pipeline (classification, the NodePort chain's fixed flows, conntrack,
//! L3 forwarding, output). Numbers follow the seeds (Antrea's Windows
//! pipeline of the time).

use std::net::Ipv4Addr;

use datapath::key::OFPP_LOCAL;
use datapath::pipeline::fields::FieldId;
use datapath::pipeline::ir::{Action, Flow};

use super::build::{M, ct, flow, load, mov, nat_range, output, resubmit, sub, whole};
use crate::config::node::NodeConfig;

pub use datapath::key::ct_state;

/// Classifier: in_port -> reg0 mark; ARP responders; IGMP drop.
pub const T_CLASSIFIER: u8 = 0;
/// Uplink (and anything to a node IP) -> NodePort filter.
pub const T_UPLINK: u8 = 5;
/// NodePortFilterTable1: node IPs.
pub const T_NODEPORT_IP: u8 = 6;
/// NodePortFilterTable2: NodePorts.
pub const T_NODEPORT_PORT: u8 = 7;
/// DNAT to the virtual IP (zone 52100).
pub const T_NODEPORT_DNAT: u8 = 8;
/// After the DNAT.
pub const T_NODEPORT_POST_DNAT: u8 = 9;
/// SNAT to the gateway IP (zone 52200).
pub const T_NODEPORT_SNAT: u8 = 11;
/// After the SNAT; replies start here.
pub const T_NODEPORT_POST_SNAT: u8 = 12;
/// Conntrack zone 65500.
pub const T_CONNTRACK: u8 = 30;
/// Conntrack state.
pub const T_CT_STATE: u8 = 31;
/// Session affinity (marks "select an endpoint").
pub const T_AFFINITY: u8 = 40;
/// Service load balancing (frontend -> select group).
pub const T_SERVICE_LB: u8 = 41;
/// After the endpoint DNAT.
pub const T_ENDPOINT_DNAT: u8 = 42;
/// ClientIP affinity: DNAT to the endpoint named in reg3 / reg4[0..15].
pub const T_AFFINITY_DNAT: u8 = 43;
/// Uplink traffic for local pods (noencap, seed 004).
pub const T_NOENCAP: u8 = 50;
/// L3 forwarding.
pub const T_L3_FORWARDING: u8 = 70;
/// Commit non-Service connections.
pub const T_CT_COMMIT: u8 = 105;
/// Output by reg1.
pub const T_OUTPUT: u8 = 110;

/// Zone of the NodePort DNAT to the virtual IP.
pub const ZONE_NODEPORT_DNAT: u16 = 52100;
/// Zone of the NodePort SNAT to the gateway IP.
pub const ZONE_NODEPORT_SNAT: u16 = 52200;
/// Zone of the endpoint DNAT (and every other connection).
pub const ZONE_SERVICE: u16 = 65500;

/// reg0[0..15]: from the gateway.
pub const MARK_FROM_GATEWAY: u32 = 0x1;
/// reg0[0..15]: from a local pod.
pub const MARK_FROM_POD: u32 = 0x2;
/// reg0[0..15]: from the uplink.
pub const MARK_FROM_UPLINK: u32 = 0x4;
/// reg0[0..15]: from the bridge's LOCAL port.
pub const MARK_FROM_BRIDGE: u32 = 0x5;
/// reg8: NodePort request direction.
pub const REG8_REQUEST: u32 = 0x1;
/// reg8: NodePort reply direction.
pub const REG8_REPLY: u32 = 0x2;
/// reg4 value (bits 16..18 = 1): an endpoint must be selected.
pub const REG4_SELECT: u32 = 0x1_0000;
/// reg4 mask of the endpoint-selection state.
pub const REG4_STATE_MASK: u32 = 0x7_0000;
/// reg4[16..18] = 2: an endpoint is chosen (learned, or picked by a group).
pub const REG4_SELECTED: u32 = 0x2_0000;
/// reg4[16..18] = 3: the group named an endpoint to learn (affinity).
pub const REG4_LEARN: u32 = 0x3_0000;
/// reg5: the client address of a new connection, the key of ClientIP
/// session affinity. Saved before the NodePort chain's SNAT to the gateway
/// IP for affinity Services (table 7), otherwise by table 31 from `nw_src`.
pub const REG_CLIENT: u8 = 5;
/// ct_mark of Service connections (committed by the LB group).
pub const CT_MARK_SERVICE: u32 = 0x21;
/// ct_mark of other connections (committed by table 105).
pub const CT_MARK_OTHER: u32 = 0x20;

/// Cookie of the Service-independent flows.
pub const COOKIE_BASE: u64 = 0x1_0000_0000;
/// Cookie of the NodePort chain (the seeds' 0x520).
pub const COOKIE_NODEPORT: u64 = 0x520;
/// Cookie of a Service's flows: this | its 1-based index in name order.
pub const COOKIE_SERVICE: u64 = 0x2_0000_0000;

fn reg0_mark(m: u32) -> M {
    M::ip().reg(0, m, 0xffff)
}

/// ARP responder: answer a request for `ip` with the virtual MAC (seed 002).
pub fn arp_responder(node: &NodeConfig, ip: Ipv4Addr, in_port: Option<u32>, cookie: u64) -> Flow {
    let mut m = M::arp()
        .f(FieldId::ArpOp, 1)
        .f(FieldId::ArpTpa, u32::from(ip) as u128);
    if let Some(p) = in_port {
        m = m.in_port(p);
    }
    let vmac = node.virtual_mac.as_u64() as u128;
    flow(
        T_CLASSIFIER,
        200,
        cookie,
        m,
        vec![
            mov(whole(FieldId::DlSrc), whole(FieldId::DlDst)),
            Action::ModDlSrc(node.virtual_mac.as_u64()),
            load(whole(FieldId::ArpOp), 2),
            mov(whole(FieldId::ArpSha), whole(FieldId::ArpTha)),
            load(whole(FieldId::ArpSha), vmac),
            mov(whole(FieldId::ArpSpa), whole(FieldId::ArpTpa)),
            load(whole(FieldId::ArpSpa), u32::from(ip) as u128),
            output(datapath::key::OFPP_IN_PORT),
        ],
    )
}

/// The Service-independent flows.
pub fn base(node: &NodeConfig, out: &mut Vec<Flow>) {
    let c = COOKIE_BASE;
    let np = COOKIE_NODEPORT;
    let gw = &node.gateway;
    let vip = node.virtual_ip;
    let trk_new = |m: M| m.ct_state(ct_state::NEW | ct_state::TRK, 0);
    let trk_est = |m: M| m.ct_state(ct_state::TRK, ct_state::NEW);
    let reg8 = |m: M, v: u32| m.reg(8, v, 0xffff);

    // 0 Classifier
    out.push(flow(T_CLASSIFIER, 220, c, M::igmp(), vec![Action::Drop]));
    out.push(arp_responder(node, vip, None, c));
    // ARP between the pods and the host (the gateway's owner) and between
    // pods: Antrea's ARP tables end in NORMAL, which this pipeline has no
    // use for; the same forwarding, spelled out. A request or reply for a
    // pod goes to the pod; anything else a pod sends goes to the gateway
    // (the host answers for its address). Without these a pod never learns
    // the gateway's MAC.
    for p in &node.pods {
        out.push(flow(
            T_CLASSIFIER,
            196,
            c,
            M::arp().f(FieldId::ArpTpa, u32::from(p.ip) as u128),
            vec![output(p.port)],
        ));
        out.push(flow(
            T_CLASSIFIER,
            195,
            c,
            M::arp().in_port(p.port),
            vec![output(gw.port)],
        ));
    }
    let classify = |port: u32, mark: u32| {
        flow(
            T_CLASSIFIER,
            190,
            c,
            M::any().in_port(port),
            vec![
                load(sub(FieldId::Reg(0), 0, 16), mark as u128),
                resubmit(T_UPLINK),
            ],
        )
    };
    out.push(classify(node.uplink.port, MARK_FROM_UPLINK));
    out.push(classify(gw.port, MARK_FROM_GATEWAY));
    for p in &node.pods {
        out.push(classify(p.port, MARK_FROM_POD));
    }
    out.push(classify(OFPP_LOCAL, MARK_FROM_BRIDGE));
    out.push(flow(T_CLASSIFIER, 0, c, M::any(), vec![Action::Drop]));

    // 5 Uplink: everything from the uplink, and anything to a node IP, may
    // be NodePort traffic.
    out.push(flow(
        T_UPLINK,
        200,
        c,
        reg0_mark(MARK_FROM_UPLINK),
        vec![resubmit(T_NODEPORT_IP)],
    ));
    for &ip in &node.node_ips {
        out.push(flow(
            T_UPLINK,
            190,
            c,
            M::ip().nw_dst(ip),
            vec![resubmit(T_NODEPORT_IP)],
        ));
    }
    out.push(flow(T_UPLINK, 0, c, M::any(), vec![resubmit(T_CONNTRACK)]));

    // 6/7 NodePort filter: node IPs, then ports (per Service, see mod.rs).
    for &ip in &node.node_ips {
        out.push(flow(
            T_NODEPORT_IP,
            200,
            np,
            M::ip().nw_dst(ip),
            vec![resubmit(T_NODEPORT_PORT)],
        ));
    }
    out.push(flow(
        T_NODEPORT_IP,
        190,
        np,
        M::any(),
        vec![resubmit(T_NODEPORT_POST_SNAT)],
    ));
    out.push(flow(
        T_NODEPORT_PORT,
        190,
        np,
        M::any(),
        vec![resubmit(T_NODEPORT_POST_SNAT)],
    ));

    // 8 DNAT to the virtual IP (zone 52100); un-DNATed replies are routed.
    let reg8_load = |v: u32| load(whole(FieldId::Reg(8)), v as u128);
    out.push(flow(
        T_NODEPORT_DNAT,
        200,
        np,
        reg8(M::ip(), REG8_REPLY),
        vec![resubmit(T_L3_FORWARDING)],
    ));
    out.push(flow(
        T_NODEPORT_DNAT,
        190,
        np,
        trk_new(M::ip()),
        vec![
            reg8_load(REG8_REQUEST),
            ct(
                true,
                T_NODEPORT_POST_DNAT,
                ZONE_NODEPORT_DNAT,
                Some(conntrack::NatSpec::Dst(nat_range(vip, None))),
                vec![],
            ),
        ],
    ));
    out.push(flow(
        T_NODEPORT_DNAT,
        190,
        np,
        trk_est(M::ip()),
        vec![reg8_load(REG8_REQUEST), resubmit(T_NODEPORT_POST_DNAT)],
    ));
    out.push(flow(T_NODEPORT_DNAT, 0, np, M::any(), vec![Action::Drop]));

    // 9 after the DNAT: into the SNAT zone.
    let existing = Some(conntrack::NatSpec::Existing);
    out.push(flow(
        T_NODEPORT_POST_DNAT,
        190,
        np,
        M::ip(),
        vec![ct(
            false,
            T_NODEPORT_SNAT,
            ZONE_NODEPORT_SNAT,
            existing,
            vec![],
        )],
    ));
    out.push(flow(
        T_NODEPORT_POST_DNAT,
        0,
        np,
        M::any(),
        vec![Action::Drop],
    ));

    // 11 SNAT to the gateway IP (ETP Cluster); ETP Local flows at 195.
    out.push(flow(
        T_NODEPORT_SNAT,
        190,
        np,
        trk_new(reg8(M::ip(), REG8_REQUEST)),
        vec![ct(
            true,
            T_NODEPORT_POST_SNAT,
            ZONE_NODEPORT_SNAT,
            Some(conntrack::NatSpec::Src(nat_range(gw.ip, None))),
            vec![],
        )],
    ));
    out.push(flow(
        T_NODEPORT_SNAT,
        190,
        np,
        trk_est(reg8(M::ip(), REG8_REQUEST)),
        vec![resubmit(T_NODEPORT_POST_SNAT)],
    ));
    // Replies, un-SNATed: on to the un-DNAT. A reply this zone never saw
    // (ETP Local from the node: the client already was the gateway IP, no
    // SNAT was committed) is +new here and takes the same way.
    out.push(flow(
        T_NODEPORT_SNAT,
        190,
        np,
        reg8(M::ip(), REG8_REPLY).ct_state(ct_state::TRK, 0),
        vec![ct(
            false,
            T_NODEPORT_DNAT,
            ZONE_NODEPORT_DNAT,
            existing,
            vec![],
        )],
    ));
    out.push(flow(T_NODEPORT_SNAT, 0, np, M::any(), vec![Action::Drop]));

    // 12 after the SNAT: replies walk back, requests go on to zone 65500.
    out.push(flow(
        T_NODEPORT_POST_SNAT,
        200,
        np,
        reg8(M::ip(), REG8_REPLY).nw_dst(gw.ip),
        vec![ct(
            false,
            T_NODEPORT_SNAT,
            ZONE_NODEPORT_SNAT,
            existing,
            vec![],
        )],
    ));
    out.push(flow(
        T_NODEPORT_POST_SNAT,
        190,
        np,
        reg8(M::ip(), REG8_REPLY),
        vec![ct(
            false,
            T_NODEPORT_DNAT,
            ZONE_NODEPORT_DNAT,
            existing,
            vec![],
        )],
    ));
    out.push(flow(
        T_NODEPORT_POST_SNAT,
        0,
        np,
        M::ip(),
        vec![ct(false, T_CONNTRACK, ZONE_SERVICE, existing, vec![])],
    ));

    // 30 Conntrack zone 65500.
    // Local hostNetwork endpoints answer the virtual IP (the source they
    // were given, seed 003); restore the gateway IP before un-DNAT.
    for &ip in &node.node_ips {
        out.push(flow(
            T_CONNTRACK,
            221,
            c,
            reg0_mark(MARK_FROM_GATEWAY).nw_src(ip).nw_dst(vip),
            vec![
                Action::ModNwDst(u32::from(gw.ip)),
                ct(false, T_CT_STATE, ZONE_SERVICE, existing, vec![]),
            ],
        ));
    }
    // Hairpin replies: the pod answered the hairpin IP; it was talking to
    // itself, so the destination is its own (source) address.
    out.push(flow(
        T_CONNTRACK,
        220,
        c,
        M::ip().nw_dst(node.hairpin_ip),
        vec![
            mov(whole(FieldId::NwSrc), whole(FieldId::NwDst)),
            ct(false, T_CT_STATE, ZONE_SERVICE, existing, vec![]),
        ],
    ));
    out.push(flow(
        T_CONNTRACK,
        210,
        c,
        M::ip().ct_state(ct_state::TRK, 0).ct_zone(ZONE_SERVICE),
        vec![resubmit(T_CT_STATE)],
    ));
    out.push(flow(
        T_CONNTRACK,
        200,
        c,
        M::ip(),
        vec![ct(false, T_CT_STATE, ZONE_SERVICE, existing, vec![])],
    ));
    out.push(flow(T_CONNTRACK, 0, c, M::any(), vec![Action::Drop]));

    // 31 CtState
    out.push(flow(
        T_CT_STATE,
        220,
        c,
        reg0_mark(MARK_FROM_UPLINK).nw_dst_net(node.pod_cidr),
        vec![load(sub(FieldId::Reg(0), 19, 1), 1), resubmit(T_NOENCAP)],
    ));
    out.push(flow(
        T_CT_STATE,
        200,
        c,
        M::ip().ct_state(ct_state::INV | ct_state::TRK, 0),
        vec![Action::Drop],
    ));
    // New connections: reg5 = the client address (affinity's key) unless
    // the NodePort chain saved it before its SNAT (table 7).
    out.push(flow(
        T_CT_STATE,
        191,
        c,
        trk_new(M::ip()).reg(REG_CLIENT, 0, u32::MAX),
        vec![
            mov(whole(FieldId::NwSrc), whole(FieldId::Reg(REG_CLIENT))),
            resubmit(T_AFFINITY),
            resubmit(T_SERVICE_LB),
        ],
    ));
    out.push(flow(
        T_CT_STATE,
        190,
        c,
        trk_new(M::ip()),
        vec![resubmit(T_AFFINITY), resubmit(T_SERVICE_LB)],
    ));
    out.push(flow(
        T_CT_STATE,
        0,
        c,
        M::any(),
        vec![resubmit(T_L3_FORWARDING)],
    ));

    // 40/41/42/50
    out.push(flow(
        T_AFFINITY,
        0,
        c,
        M::any(),
        vec![load(sub(FieldId::Reg(4), 16, 3), 1)],
    ));
    out.push(flow(
        T_SERVICE_LB,
        0,
        c,
        M::any(),
        vec![resubmit(T_L3_FORWARDING)],
    ));
    out.push(flow(
        T_ENDPOINT_DNAT,
        0,
        c,
        M::any(),
        vec![resubmit(T_L3_FORWARDING)],
    ));
    // A learned endpoint that is gone (no DNAT flow any more): select
    // again; the new choice is learned over the stale one.
    out.push(flow(
        T_AFFINITY_DNAT,
        0,
        c,
        M::any(),
        vec![
            load(sub(FieldId::Reg(4), 16, 3), (REG4_SELECT >> 16) as u128),
            resubmit(T_SERVICE_LB),
        ],
    ));
    out.push(flow(
        T_NOENCAP,
        0,
        c,
        M::any(),
        vec![resubmit(T_L3_FORWARDING)],
    ));

    // 70 L3 forwarding
    let to_port = |port: u32| load(whole(FieldId::Reg(1)), port as u128);
    for p in &node.pods {
        let deliver = vec![
            Action::ModDlSrc(gw.mac.as_u64()),
            Action::ModDlDst(p.mac().as_u64()),
            Action::DecTtl,
            to_port(p.port),
            resubmit(T_CT_COMMIT),
        ];
        out.push(flow(
            T_L3_FORWARDING,
            200,
            c,
            M::ip().nw_dst(p.ip),
            deliver.clone(),
        ));
        // Hairpin: a pod reaching itself through a Service. Give it a source
        // it will answer through the bridge (undone in table 30).
        let mut hp = vec![Action::ModNwSrc(u32::from(node.hairpin_ip))];
        hp.extend(deliver);
        out.push(flow(
            T_L3_FORWARDING,
            210,
            c,
            M::ip().nw_src(p.ip).nw_dst(p.ip),
            hp,
        ));
    }
    let to_gw = |extra: Vec<Action>| {
        let mut v = extra;
        v.extend([
            Action::ModDlDst(gw.mac.as_u64()),
            to_port(gw.port),
            resubmit(T_CT_COMMIT),
        ]);
        v
    };
    out.push(flow(
        T_L3_FORWARDING,
        190,
        c,
        M::ip().nw_dst(gw.ip),
        to_gw(vec![]),
    ));
    for &ip in &node.node_ips {
        // Service traffic to a local hostNetwork endpoint goes to the host;
        // when its source is the gateway IP (ETP Cluster SNAT, or the host
        // itself), the host would answer itself, so the source becomes the
        // virtual IP, which the host routes back through the gateway.
        // Straight out (table 110 would take a virtual-IP source for a
        // NodePort reply); back out of the gateway when it came in there
        // (OpenFlow never outputs to the input port by number).
        let to_host = |port: u32| {
            vec![
                Action::ModNwSrc(u32::from(vip)),
                Action::ModDlDst(gw.mac.as_u64()),
                output(port),
            ]
        };
        let m = M::ip().ct_mark(CT_MARK_SERVICE).nw_src(gw.ip).nw_dst(ip);
        out.push(flow(
            T_L3_FORWARDING,
            197,
            c,
            m.in_port(gw.port),
            to_host(datapath::key::OFPP_IN_PORT),
        ));
        out.push(flow(T_L3_FORWARDING, 196, c, m, to_host(gw.port)));
        out.push(flow(
            T_L3_FORWARDING,
            195,
            c,
            M::ip().nw_dst(ip),
            to_gw(vec![]),
        ));
    }
    for peer in &node.peers {
        let route = vec![
            Action::ModDlSrc(node.uplink.mac.as_u64()),
            Action::ModDlDst(peer.node_mac.as_u64()),
            Action::DecTtl,
            to_port(node.uplink.port),
            resubmit(T_CT_COMMIT),
        ];
        out.push(flow(
            T_L3_FORWARDING,
            180,
            c,
            M::ip().nw_dst_net(peer.pod_cidr),
            route.clone(),
        ));
        // Remote hostNetwork endpoints: only Service traffic is routed
        // here; the host reaches its peers by itself.
        out.push(flow(
            T_L3_FORWARDING,
            185,
            c,
            M::ip().ct_mark(CT_MARK_SERVICE).nw_dst(peer.node_ip),
            route,
        ));
    }
    out.push(flow(T_L3_FORWARDING, 0, c, M::ip(), to_gw(vec![])));

    // 105 commit non-Service connections
    out.push(flow(
        T_CT_COMMIT,
        200,
        c,
        trk_new(M::ip()).ct_mark(CT_MARK_SERVICE),
        vec![resubmit(T_OUTPUT)],
    ));
    out.push(flow(
        T_CT_COMMIT,
        190,
        c,
        trk_new(M::ip()),
        vec![ct(
            true,
            T_OUTPUT,
            ZONE_SERVICE,
            None,
            vec![load(sub(FieldId::CtMark, 0, 32), CT_MARK_OTHER as u128)],
        )],
    ));
    out.push(flow(T_CT_COMMIT, 0, c, M::any(), vec![resubmit(T_OUTPUT)]));

    // 110 output
    out.push(flow(
        T_OUTPUT,
        220,
        np,
        M::ip().nw_src(vip),
        vec![
            load(whole(FieldId::Reg(8)), REG8_REPLY as u128),
            resubmit(T_NODEPORT_POST_SNAT),
        ],
    ));
    // Back out of the port it came in on (a hairpinned pod; a NodePort
    // request from the uplink to a remote endpoint; a gateway reply routed
    // back to the host): OpenFlow drops output:N when N is the input port.
    let mut all_ports = vec![node.uplink.port, gw.port];
    all_ports.extend(node.pods.iter().map(|p| p.port));
    for port in all_ports {
        out.push(flow(
            T_OUTPUT,
            210,
            c,
            M::ip().in_port(port).reg(1, port, u32::MAX),
            vec![output(datapath::key::OFPP_IN_PORT)],
        ));
    }
    out.push(flow(
        T_OUTPUT,
        200,
        c,
        M::ip(),
        vec![Action::OutputField(whole(FieldId::Reg(1)))],
    ));
}
