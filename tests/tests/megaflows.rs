//! Megaflows per connection, flowpath against OVS: the veth benchmark's
//! UDP workload (`scripts/bench.sh`: the e2e NodePort ETP Cluster chain,
//! NodePorts 30232/30233 to four endpoints; flows from one client address,
//! distinct source ports, each answered by a reflector, then sent once
//! more established) through OVS (`dpctl/dump-flows`) and through
//! flowpath's flow cache.

use datapath::key::{self, FlowKey, slot};
use datapath::pipeline::format;
use datapath::pipeline::ir::Match;
use datapath::pipeline::{Pipeline, parse};
use datapath::replay::{PortMap, Replayer, Step, StepResult};
use datapath::wire::build::PacketBuilder;
use std::net::Ipv4Addr;
use tests::ovs::{OvsSwitch, skip_without_ovs};

/// One endpoint: which bucket a select group picks is a documented
/// deviation (flowpath's hash is its own), so with several endpoints the two
/// would spread the same connections over different per-endpoint megaflows.
const EPS: [u8; 1] = [10];

fn rules() -> (String, String) {
    bench::vethbench::udp_rules_for(&EPS)
}

fn client(i: u32) -> Vec<u8> {
    PacketBuilder::udp(
        [0x00, 0x50, 0x56, 0xa7, 0xca, 0x77],
        [0x00, 0x50, 0x56, 0xa7, 0x35, 0x0b],
        Ipv4Addr::new(10, 176, 26, 36),
        Ipv4Addr::new(10, 176, 25, 244),
        1024 + (i / 2) as u16,
        30232 + (i % 2) as u16,
    )
    .pad_to(60)
    .build()
}

fn reflect(frame: &[u8]) -> Vec<u8> {
    let mut r = frame.to_vec();
    for i in 0..6 {
        r.swap(i, 6 + i);
    }
    for i in 0..4 {
        r.swap(26 + i, 30 + i);
    }
    let l4 = 14 + ((r[14] & 0x0f) as usize) * 4;
    for i in 0..2 {
        r.swap(l4 + i, l4 + 2 + i);
    }
    r
}

fn ports() -> Vec<(String, u32)> {
    vec![("gw0".into(), 2), ("uplink".into(), 3), ("pod1".into(), 4)]
}

/// OVS's megaflows after `n` connections: dump-flows lines.
fn ovs_megaflows(n: u32) -> Vec<String> {
    let (flows, groups) = rules();
    let mut sw = OvsSwitch::start(&ports()).expect("start OVS");
    sw.load_pipeline(&flows, Some(&groups)).expect("load");
    for i in 0..n {
        sw.inject("uplink", &client(i)).unwrap();
        for (p, f) in sw.take_outputs().unwrap() {
            if p == "pod1" {
                sw.inject("pod1", &reflect(&f)).unwrap();
            }
        }
        sw.take_outputs().unwrap();
    }
    for i in 0..n {
        sw.inject("uplink", &client(i)).unwrap();
    }
    let out = sw.appctl(&["dpctl/dump-flows"]).unwrap();
    out.lines()
        .filter(|l| !l.is_empty() && !l.starts_with("flow-dump"))
        .map(String::from)
        .collect()
}

/// flowpath's megaflows after `n` connections: (masked key, mask).
fn flowpath_megaflows(n: u32) -> Vec<(FlowKey, FlowKey)> {
    let (flows, groups) = rules();
    let pm: &'static PortMap = Box::leak(Box::new(PortMap { ports: ports() }));
    let flows = parse::with_port_names(&pm.ports, || parse::parse_flows("flows", &flows)).unwrap();
    let groups = parse::parse_groups("groups", &groups).unwrap();
    let p: &'static Pipeline = Box::leak(Box::new(Pipeline::new(flows, groups)));
    let mut r = Replayer::new(p, pm).with_cache();
    let pkt = |r: &mut Replayer, port: &str, bytes: Vec<u8>| match r.step(
        0,
        &Step::Packet {
            port: port.into(),
            bytes,
        },
        None,
    ) {
        StepResult::Packet { outputs, .. } => outputs,
        _ => Vec::new(),
    };
    for i in 0..n {
        for (p, f) in pkt(&mut r, "uplink", client(i)) {
            if p == "pod1" {
                pkt(&mut r, "pod1", reflect(&f));
            }
        }
    }
    for i in 0..n {
        pkt(&mut r, "uplink", client(i));
    }
    let c = r.cache.as_ref().unwrap();
    c.megaflows().map(|m| (m.key, m.mask)).collect()
}

/// The header part of an OVS datapath flow's mask, in a form both sides
/// print: `ct_state` flags, which of ct_zone/ct_mark/dl_src/dl_dst/nw_proto/
/// nw_ttl are matched, the address prefix lengths and the L4 port masks.
fn ovs_shape(line: &str) -> String {
    let m = line.split(", packets:").next().unwrap_or(line);
    let arg = |name: &str| -> Option<String> {
        let i = m.find(&format!("{name}("))?;
        let rest = &m[i + name.len() + 1..];
        Some(rest[..rest.find(')')?].to_string())
    };
    let kv = |inner: &Option<String>, k: &str| -> Option<String> {
        inner
            .as_ref()?
            .split(',')
            .find_map(|p| p.strip_prefix(&format!("{k}=")).map(String::from))
    };
    let plen = |v: Option<String>| match v {
        None => 0,
        Some(v) => match v.split_once('/') {
            None => 32,
            Some((_, m)) => u32::from(m.parse::<Ipv4Addr>().unwrap()).leading_ones(),
        },
    };
    let port = |v: Option<String>| match v {
        None => 0,
        Some(v) => match v.split_once('/') {
            None => 0xffff,
            Some((_, m)) => u32::from_str_radix(m.trim_start_matches("0x"), 16).unwrap(),
        },
    };
    let (eth, ip) = (arg("eth"), arg("ipv4"));
    let l4 = arg("udp").or(arg("tcp"));
    shape(
        arg("ct_state").unwrap_or_default(),
        [
            arg("ct_zone").is_some(),
            arg("ct_mark").is_some(),
            kv(&eth, "src").is_some(),
            kv(&eth, "dst").is_some(),
            kv(&ip, "proto").is_some(),
            kv(&ip, "ttl").is_some(),
        ],
        [plen(kv(&ip, "src")), plen(kv(&ip, "dst"))],
        [port(kv(&l4, "src")), port(kv(&l4, "dst"))],
    )
}

fn shape(ct_state: String, has: [bool; 6], plens: [u32; 2], ports: [u32; 2]) -> String {
    let names = [
        "ct_zone", "ct_mark", "dl_src", "dl_dst", "nw_proto", "nw_ttl",
    ];
    let mut s = format!("ct_state({ct_state})");
    for (n, h) in names.iter().zip(has) {
        if h {
            s += &format!(",{n}");
        }
    }
    format!(
        "{s},nw_src/{},nw_dst/{},tp_src/{:#x},tp_dst/{:#x}",
        plens[0], plens[1], ports[0], ports[1]
    )
}

/// flowpath's megaflow mask in the same form.
fn flowpath_shape(value: &FlowKey, mask: &FlowKey) -> String {
    let printed = format::format_match(&Match {
        value: *value,
        mask: *mask,
    });
    let ct_state = printed
        .split(',')
        .find_map(|p| p.strip_prefix("ct_state="))
        .unwrap_or_default()
        .to_string();
    let on = |s: key::Slot| mask.get(s) != 0;
    let udp = value.get(slot::NW_PROTO) == 17 || value.get(slot::NW_PROTO) == 6;
    shape(
        ct_state,
        [
            on(slot::CT_ZONE),
            on(slot::CT_MARK),
            on(slot::DL_SRC),
            on(slot::DL_DST),
            on(slot::NW_PROTO),
            on(slot::NW_TTL),
        ],
        [
            (mask.get(slot::NW_SRC) as u32).leading_ones(),
            (mask.get(slot::NW_DST) as u32).leading_ones(),
        ],
        if udp {
            [mask.get(slot::TP_SRC) as u32, mask.get(slot::TP_DST) as u32]
        } else {
            [0, 0]
        },
    )
}

/// The veth benchmark's established UDP workload at 4 and 8 connections:
/// flowpath makes as many megaflows as OVS, with the same header masks
/// (one per connection: the select group's pass, which hashes the source
/// address and port; established packets share theirs), where before the
/// classifier followed OVS's staged lookup and prefix tries it made four
/// per connection (a rule on `tp_src=8080` un-wildcarded every packet's
/// source port, rules on `tp_dst` every reply's destination port).
#[test]
fn megaflows_per_connection_like_ovs() {
    if skip_without_ovs("megaflows_per_connection_like_ovs") {
        return;
    }
    let mut counts = Vec::new();
    for n in [4, 8] {
        let ovs = ovs_megaflows(n);
        let fp = flowpath_megaflows(n);
        let mut o: Vec<String> = ovs.iter().map(|l| ovs_shape(l)).collect();
        let mut f: Vec<String> = fp.iter().map(|(v, m)| flowpath_shape(v, m)).collect();
        o.sort();
        f.sort();
        assert_eq!(
            o,
            f,
            "{n} connections: megaflow masks differ (left: OVS)\nOVS:\n{}",
            ovs.join("\n")
        );
        counts.push(fp.len());
    }
    assert_eq!(counts[1] - counts[0], 4, "one megaflow per connection");
}
