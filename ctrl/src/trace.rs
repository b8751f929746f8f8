//! `flowpath trace`: where does this packet go, and why — in the form of
//! `ovs-appctl ofproto/trace`, but against real conntrack state: an optional
//! STEPS prefix runs first, so a reply packet takes its real path.

use std::fmt::Write as _;

use datapath::key::{FlowKey, slot};
use datapath::pipeline::Pipeline;
use datapath::pipeline::exec::TracePass;
use datapath::pipeline::format;
use datapath::pipeline::ir::Match;
use datapath::pipeline::xlate::{DpAction, TraceEvent};
use datapath::replay::{PortMap, Replayer, Step, StepResult};

/// Trace one packet (hex or flow string) arriving on `in_port`, after
/// running `prefix`. Returns the report text.
pub fn trace(
    p: &Pipeline,
    ports: &PortMap,
    prefix: &[Step],
    in_port: &str,
    packet_hex: Option<&str>,
    flow: Option<&str>,
) -> anyhow::Result<String> {
    let port = ports
        .resolve(in_port)
        .ok_or_else(|| anyhow::anyhow!("--in-port: unknown port `{in_port}`"))?;
    let bytes = match (packet_hex, flow) {
        (Some(h), _) => {
            datapath::replay::parse_hex(h).map_err(|e| anyhow::anyhow!("--packet: {e}"))?
        }
        (None, Some(f)) => packet_from_flow(f)?,
        (None, None) => anyhow::bail!("one of --packet or --flow is required"),
    };
    let mut r = Replayer::new(p, ports);
    r.run(prefix);
    // The pipeline the traced packet meets: the given one plus what the
    // prefix learned (trace indices name its flows; the packet's own
    // learns apply after it).
    let cur = r.current().clone();
    let p = &cur;
    let mut passes = Vec::new();
    let res = r.step(
        prefix.len(),
        &Step::Packet {
            port: port.to_string(),
            bytes,
        },
        Some(&mut passes),
    );
    let mut out = String::new();
    if passes.is_empty() {
        let reasons: Vec<String> = r
            .stats
            .drops
            .nonzero()
            .map(|(n, c)| format!("{n}={c}"))
            .collect();
        let _ = writeln!(
            out,
            "Packet dropped before the pipeline: {}",
            reasons.join(", ")
        );
        return Ok(out);
    }
    for (i, pass) in passes.iter().enumerate() {
        if i > 0 {
            let _ = writeln!(out, "\n{}", "=".repeat(79));
            let _ = writeln!(
                out,
                "recirc(0x{:x}) - resume conntrack with ct_state={}",
                pass.key.get(slot::RECIRC_ID),
                ct_state_words(pass.key.get(slot::CT_STATE) as u8)
            );
            let _ = writeln!(out, "{}", "=".repeat(79));
        }
        write_pass(&mut out, p, ports, pass);
    }
    if let StepResult::Packet {
        outputs, answers, ..
    } = res
    {
        let _ = writeln!(out, "\nOutputs:");
        if outputs.is_empty() {
            let _ = writeln!(out, "    (none: the packet is dropped)");
        }
        for (i, (port, b)) in outputs.iter().enumerate() {
            let tag = match answers.iter().find(|(j, _)| *j == i) {
                Some((_, a)) => format!(" (reject answer: {})", a.name()),
                None => String::new(),
            };
            let _ = writeln!(out, "    {port}: {}{tag}", describe_packet(b));
        }
    }
    Ok(out)
}

fn write_pass(out: &mut String, p: &Pipeline, ports: &PortMap, pass: &TracePass) {
    let _ = writeln!(
        out,
        "Flow: {}\n",
        format::format_match(&key_as_match(&pass.key))
    );
    let _ = writeln!(out, "bridge(\"flowpath\")\n------------------");
    for e in &pass.events {
        match e {
            TraceEvent::Table { depth, table, flow } => {
                let ind = " ".repeat(*depth as usize * 4);
                match flow {
                    Some(i) => {
                        let f = p.flow(*i);
                        let m = format::format_match(&f.matches);
                        let m = if m.is_empty() {
                            String::new()
                        } else {
                            format!("{m}, ")
                        };
                        let _ = writeln!(
                            out,
                            "{ind}{:2}. {m}priority {}, cookie {:#x}",
                            table, f.priority, f.cookie
                        );
                    }
                    None => {
                        let _ = writeln!(out, "{ind}{:2}. No match.\n{ind}    drop", table);
                    }
                }
            }
            TraceEvent::Action { depth, action } => {
                let ind = " ".repeat(*depth as usize * 4);
                let _ = writeln!(
                    out,
                    "{ind}{}",
                    format::format_actions(std::slice::from_ref(action))
                );
            }
            TraceEvent::Note { depth, text } => {
                let ind = " ".repeat(*depth as usize * 4 + 1);
                let _ = writeln!(out, "{ind}{text}");
            }
        }
    }
    let x = &pass.xlation;
    let mega = Match {
        value: pass.key.masked(&x.wc),
        mask: x.wc,
    };
    let _ = writeln!(out, "\nMegaflow: {}", format::format_match(&mega));
    if let Some(e) = x.error {
        let _ = writeln!(out, "Translation failed ({}), packet is dropped.", e.name());
    }
    let _ = writeln!(out, "Datapath actions: {}", dp_actions(&x.actions, ports));
    for (i, md) in pass.ct_results.iter().enumerate() {
        let _ = writeln!(
            out,
            "Conntrack #{}: ct_state={} ct_zone={} ct_mark={:#x}",
            i + 1,
            ct_state_words(md.state),
            md.zone,
            md.mark
        );
    }
    for n in &pass.notes {
        let _ = writeln!(out, "Datapath: {n}");
    }
}

/// Datapath actions in the form `trace` and `dump-megaflows` print them.
pub(crate) fn dp_actions(actions: &[DpAction], ports: &PortMap) -> String {
    if actions.is_empty() {
        return "drop".into();
    }
    let mut parts = Vec::new();
    for a in actions {
        match a {
            DpAction::Set { from, to } => {
                let changed = changed_fields(from, to);
                parts.push(format!("set({changed})"));
            }
            DpAction::Output(port) => parts.push(format!("output:{}", ports.name(*port))),
            DpAction::Punt => parts.push("userspace(controller)".into()),
            DpAction::Reject => parts.push("userspace(controller,reject)".into()),
            DpAction::CtClear => parts.push("ct_clear".into()),
            DpAction::Ct { call, recirc } => {
                let mut s = String::from("ct(");
                if call.commit {
                    s.push_str("commit,");
                }
                if call.force {
                    s.push_str("force,");
                }
                let _ = write!(s, "zone={}", call.zone);
                if let Some(n) = &call.nat {
                    let _ = write!(s, ",{}", nat_text(n));
                }
                if let Some((v, m)) = call.set_mark {
                    let _ = write!(s, ",mark={v:#x}/{m:#x}");
                }
                s.push(')');
                parts.push(s);
                if let Some(r) = recirc {
                    parts.push(format!("recirc(0x{:x})", 1 + r.table as u32));
                }
            }
        }
    }
    parts.join(",")
}

fn changed_fields(from: &FlowKey, to: &FlowKey) -> String {
    let mut v = Vec::new();
    for f in datapath::pipeline::fields::all() {
        if f.is_header()
            && f.writable
            && f.read(from) != f.read(to)
            && !v.iter().any(|(s, _)| *s == f.slot)
        {
            v.push((f.slot, format!("{}={}", f.name, value_text(f, f.read(to)))));
        }
    }
    v.into_iter().map(|(_, s)| s).collect::<Vec<_>>().join(",")
}

fn ct_state_words(s: u8) -> String {
    let names = ["new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat"];
    let v: Vec<&str> = (0..8)
        .filter(|b| s & (1 << b) != 0)
        .map(|b| names[b])
        .collect();
    if v.is_empty() {
        "0".into()
    } else {
        v.join("|")
    }
}

/// A match with every field the key's protocol carries, exact: how a
/// packet's flow is printed.
pub fn key_as_match(k: &FlowKey) -> Match {
    use datapath::key::{eth_type, ip_proto};
    let mut mask = FlowKey::ZERO;
    for s in [slot::IN_PORT, slot::DL_SRC, slot::DL_DST, slot::DL_TYPE] {
        mask.set_all(s);
    }
    for r in 0..16 {
        if k.reg(r) != 0 {
            mask.set_all(datapath::key::reg_slot(r));
        }
    }
    for s in [
        slot::PKT_MARK,
        slot::CT_STATE,
        slot::CT_ZONE,
        slot::CT_MARK,
        slot::VLAN_TCI,
    ] {
        if k.get(s) != 0 {
            mask.set_all(s);
        }
    }
    let dl_type = k.get(slot::DL_TYPE) as u16;
    if dl_type == eth_type::IPV4 {
        for s in [
            slot::NW_SRC,
            slot::NW_DST,
            slot::NW_PROTO,
            slot::NW_TOS,
            slot::NW_TTL,
            slot::NW_FRAG,
        ] {
            mask.set_all(s);
        }
        let proto = k.get(slot::NW_PROTO) as u8;
        if matches!(proto, ip_proto::TCP | ip_proto::UDP | ip_proto::ICMP) {
            mask.set_all(slot::TP_SRC);
            mask.set_all(slot::TP_DST);
        }
        if proto == ip_proto::TCP {
            mask.w[slot::TCP_FLAGS.word as usize] |= 0xfff << slot::TCP_FLAGS.shift;
        }
        if proto == ip_proto::ICMP {
            // ICMP type/code are 8 bits wide in the key's port slots.
            mask.set(slot::TP_SRC, 0xff);
            mask.set(slot::TP_DST, 0xff);
        }
    } else if dl_type == eth_type::ARP {
        for s in [
            slot::NW_SRC,
            slot::NW_DST,
            slot::NW_PROTO,
            slot::ARP_SHA,
            slot::ARP_THA,
        ] {
            mask.set_all(s);
        }
        mask.set(slot::NW_PROTO, 0xff);
    }
    Match {
        value: k.masked(&mask),
        mask,
    }
}

/// Build a packet from an OVS flow string: the fields given, defaults for
/// the rest (TTL 64, zero MACs), correct checksums.
fn packet_from_flow(text: &str) -> anyhow::Result<Vec<u8>> {
    use datapath::key::{eth_type, ip_proto};
    use datapath::wire::build::PacketBuilder;
    let spec = datapath::pipeline::parse::parse_flow_match(text)
        .map_err(|e| anyhow::anyhow!("--flow: {e}"))?;
    let k = spec.matches.value;
    let (src, dst) = (k.get(slot::DL_SRC), k.get(slot::DL_DST));
    let (nsrc, ndst) = (k.get(slot::NW_SRC) as u32, k.get(slot::NW_DST) as u32);
    let (tsrc, tdst) = (k.get(slot::TP_SRC) as u16, k.get(slot::TP_DST) as u16);
    let b = match k.get(slot::DL_TYPE) as u16 {
        eth_type::IPV4 => {
            let ttl = match k.get(slot::NW_TTL) as u8 {
                0 => 64,
                t => t,
            };
            let b = match k.get(slot::NW_PROTO) as u8 {
                ip_proto::TCP => {
                    let flags = match k.get(slot::TCP_FLAGS) as u16 {
                        0 => 0x002,
                        f => f,
                    };
                    PacketBuilder::tcp(src, dst, nsrc, ndst, tsrc, tdst).flags(flags)
                }
                ip_proto::UDP => PacketBuilder::udp(src, dst, nsrc, ndst, tsrc, tdst),
                ip_proto::ICMP => {
                    PacketBuilder::icmp(src, dst, nsrc, ndst, tsrc as u8, tdst as u8, 0)
                }
                p => PacketBuilder::ipv4(src, dst, nsrc, ndst, p),
            };
            b.ttl(ttl).tos(k.get(slot::NW_TOS) as u8)
        }
        eth_type::ARP => {
            let op = match k.get(slot::NW_PROTO) as u16 {
                0 => 1,
                o => o,
            };
            PacketBuilder::arp(
                src,
                dst,
                op,
                k.get(slot::ARP_SHA),
                nsrc,
                k.get(slot::ARP_THA),
                ndst,
            )
        }
        0 => anyhow::bail!("--flow: give a protocol (ip, tcp, udp, icmp, arp)"),
        t => PacketBuilder::ethernet(src, dst, t),
    };
    Ok(b.build())
}

/// One-line description of a frame: its flow in OVS syntax, or why it
/// cannot be parsed.
pub fn describe_packet(b: &[u8]) -> String {
    let mut k = FlowKey::ZERO;
    match datapath::extract::extract(b, 0, &mut k) {
        Ok(_) => {
            let mut m = key_as_match(&k);
            m.mask.set(slot::IN_PORT, 0);
            m.value.set(slot::IN_PORT, 0);
            format!("{} len={}", format::format_match(&m), b.len())
        }
        Err(r) => format!("unparsable ({}) len={}", r.name(), b.len()),
    }
}

fn value_text(f: &datapath::pipeline::fields::FieldDef, v: u128) -> String {
    use datapath::pipeline::fields::Format;
    match f.format {
        Format::Ipv4 => std::net::Ipv4Addr::from(v as u32).to_string(),
        Format::Mac => {
            let b = (v as u64).to_be_bytes();
            format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                b[2], b[3], b[4], b[5], b[6], b[7]
            )
        }
        Format::Hex => format!("{v:#x}"),
        _ => v.to_string(),
    }
}

fn nat_text(n: &conntrack::NatSpec) -> String {
    let (kind, r) = match n {
        conntrack::NatSpec::Existing => return "nat".into(),
        conntrack::NatSpec::Src(r) => ("src", r),
        conntrack::NatSpec::Dst(r) => ("dst", r),
    };
    let ip = |a: u32| std::net::Ipv4Addr::from(a).to_string();
    let mut s = format!("nat({kind}={}", ip(r.addr_min));
    if r.addr_max != r.addr_min {
        let _ = write!(s, "-{}", ip(r.addr_max));
    }
    if r.port_min != 0 {
        let _ = write!(s, ":{}", r.port_min);
        if r.port_max != r.port_min {
            let _ = write!(s, "-{}", r.port_max);
        }
    }
    for (on, name) in [
        (r.random, "random"),
        (r.hash, "hash"),
        (r.persistent, "persistent"),
    ] {
        if on {
            let _ = write!(s, ",{name}");
        }
    }
    s.push(')');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow learned by the steps prefix is what the traced packet hits,
    /// and the trace names it.
    #[test]
    fn trace_sees_flows_learned_by_the_prefix() {
        let flows = datapath::pipeline::parse::parse_flows(
            "f",
            "table=0,in_port=1,actions=learn(table=1,idle_timeout=5,priority=9,\
NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0x1->NXM_NX_REG1[]),output:2\n\
table=0,in_port=2,actions=resubmit(,1)\n\
table=1,priority=0,actions=drop\ntable=1,priority=1,reg1=1,actions=output:1\n",
        )
        .unwrap();
        let p = Pipeline::new(flows, vec![]);
        let ports = PortMap::parse("a=1,b=2").unwrap();
        let learn =
            packet_from_flow("udp,dl_src=02:00:00:00:00:0a,dl_dst=02:00:00:00:00:0b").unwrap();
        let prefix = [Step::Packet {
            port: "a".into(),
            bytes: learn,
        }];
        let out = trace(
            &p,
            &ports,
            &prefix,
            "b",
            None,
            Some("udp,dl_src=02:00:00:00:00:0b,dl_dst=02:00:00:00:00:0a"),
        )
        .unwrap();
        assert!(
            out.contains("1. dl_dst=02:00:00:00:00:0a, priority 9"),
            "{out}"
        );
    }
}
