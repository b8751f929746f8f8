//! `dpctl/dump-conntrack` entries and their exact OVS text form
//! (OVS 3.1 `ct_dpif_format_entry`, non-verbose, without `-s`).

use crate::api::Tuple;
use crate::key::proto;
use crate::proto::tcp::TcpState;
use std::fmt;

/// One connection as `dpctl/dump-conntrack` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnDump {
    /// Original-direction tuple (ICMP: ports are the id).
    pub orig: Tuple,
    /// Reply-direction tuple (after NAT, the translated one).
    pub reply: Tuple,
    /// ICMP type of the original direction (0 for other protocols).
    pub orig_icmp_type: u8,
    /// ICMP type of the reply direction.
    pub reply_icmp_type: u8,
    /// Zone.
    pub zone: u16,
    /// `ct_mark`.
    pub mark: u32,
    /// `ct_label`.
    pub label: u128,
    /// TCP states (original sender, replier).
    pub tcp: Option<(TcpState, TcpState)>,
    /// Seconds until expiry (printed by OVS only with `-s`; not here).
    pub timeout_s: u32,
}

impl ConnDump {
    /// The single TCP state OVS prints.
    pub fn tcp_state(&self) -> Option<TcpState> {
        self.tcp.map(|(o, r)| TcpState::coalesce(o, r))
    }

    /// Deterministic order: zone, then original tuple, then reply tuple.
    #[allow(clippy::type_complexity)]
    pub fn sort_key(&self) -> (u16, (u8, u32, u32, u16, u16), u8, (u8, u32, u32, u16, u16)) {
        let t = |t: &Tuple| (t.proto, t.src, t.dst, t.sport, t.dport);
        (
            self.zone,
            t(&self.orig),
            self.orig_icmp_type,
            t(&self.reply),
        )
    }
}

fn ip(a: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(a)
}

fn proto_name(p: u8) -> Option<&'static str> {
    Some(match p {
        1 => "icmp",
        58 => "icmpv6",
        6 => "tcp",
        17 => "udp",
        132 => "sctp",
        136 => "udplite",
        33 => "dccp",
        2 => "igmp",
        _ => return None,
    })
}

fn tuple(f: &mut fmt::Formatter<'_>, t: &Tuple, icmp_type: u8) -> fmt::Result {
    write!(f, "src={},dst={}", ip(t.src), ip(t.dst))?;
    if t.proto == proto::ICMP {
        write!(f, ",id={},type={},code=0", t.sport, icmp_type)
    } else {
        write!(f, ",sport={},dport={}", t.sport, t.dport)
    }
}

impl fmt::Display for ConnDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match proto_name(self.orig.proto) {
            Some(n) => f.write_str(n)?,
            None => write!(f, "{}", self.orig.proto)?,
        }
        f.write_str(",orig=(")?;
        tuple(f, &self.orig, self.orig_icmp_type)?;
        f.write_str("),reply=(")?;
        tuple(f, &self.reply, self.reply_icmp_type)?;
        f.write_str(")")?;
        if self.zone != 0 {
            write!(f, ",zone={}", self.zone)?;
        }
        if self.mark != 0 {
            write!(f, ",mark={}", self.mark)?;
        }
        if self.label != 0 {
            // OVS ds_put_hex: big-endian bytes, leading zero bytes skipped,
            // first byte without padding == {:#x}.
            write!(f, ",labels={:#x}", self.label)?;
        }
        if let Some(s) = self.tcp_state() {
            write!(f, ",protoinfo=(state={})", s.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_ovs() {
        let d = ConnDump {
            orig: Tuple {
                src: 0x0a00_0001,
                dst: 0x0a00_0002,
                sport: 1234,
                dport: 80,
                proto: 6,
            },
            reply: Tuple {
                src: 0x0a00_0002,
                dst: 0x0a00_0001,
                sport: 80,
                dport: 1234,
                proto: 6,
            },
            orig_icmp_type: 0,
            reply_icmp_type: 0,
            zone: 52100,
            mark: 33,
            label: 0x0102,
            tcp: Some((TcpState::Established, TcpState::Established)),
            timeout_s: 0,
        };
        assert_eq!(
            d.to_string(),
            "tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=1234,dport=80),\
             reply=(src=10.0.0.2,dst=10.0.0.1,sport=80,dport=1234),\
             zone=52100,mark=33,labels=0x102,protoinfo=(state=ESTABLISHED)"
        );
        let i = ConnDump {
            orig: Tuple {
                src: 0x0a00_0001,
                dst: 0x0a00_0002,
                sport: 7,
                dport: 7,
                proto: 1,
            },
            reply: Tuple {
                src: 0x0a00_0002,
                dst: 0x0a00_0001,
                sport: 7,
                dport: 7,
                proto: 1,
            },
            orig_icmp_type: 8,
            reply_icmp_type: 0,
            zone: 0,
            mark: 0,
            label: 0,
            tcp: None,
            timeout_s: 0,
        };
        assert_eq!(
            i.to_string(),
            "icmp,orig=(src=10.0.0.1,dst=10.0.0.2,id=7,type=8,code=0),\
             reply=(src=10.0.0.2,dst=10.0.0.1,id=7,type=0,code=0)"
        );
    }
}
