//! Flow iteration: the generator cycles through `ips x ports` distinct
//! (source IP, source port) pairs, so "N flows" means N 5-tuples that a
//! datapath has to track.

use std::net::Ipv4Addr;

/// A range of source addresses and ports, cycled port-first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSet {
    /// First source address.
    pub src_ip: Ipv4Addr,
    /// Number of consecutive source addresses (>= 1).
    pub ips: u32,
    /// First source port.
    pub src_port: u16,
    /// Number of consecutive source ports (>= 1, at most 65536 - src_port).
    pub ports: u32,
}

impl FlowSet {
    /// The smallest set of `flows` flows starting at `src_ip:src_port`: ports
    /// first (up to the end of the port space), then more addresses.
    pub fn with_flows(src_ip: Ipv4Addr, src_port: u16, flows: u32) -> FlowSet {
        let room = 65536 - u32::from(src_port);
        let flows = flows.max(1);
        let ports = flows.min(room);
        FlowSet {
            src_ip,
            ips: flows.div_ceil(ports),
            src_port,
            ports,
        }
    }

    /// Number of distinct flows.
    pub fn len(&self) -> u64 {
        u64::from(self.ips.max(1)) * u64::from(self.ports.max(1))
    }

    /// Never empty (a set has at least one flow); for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `i`-th flow (wrapping): port varies fastest.
    pub fn flow(&self, i: u64) -> (Ipv4Addr, u16) {
        let i = i % self.len();
        let ports = u64::from(self.ports.max(1));
        let ip = u32::from(self.src_ip).wrapping_add((i / ports) as u32);
        (
            Ipv4Addr::from(ip),
            self.src_port.wrapping_add((i % ports) as u16),
        )
    }
}

/// `flows` distinct 5-tuples spread over `dports` consecutive destination
/// ports: flow `i` goes to port `dport + i % dports` from the source pair
/// `i / dports` of a [`FlowSet`] just big enough, so every destination port
/// sees `flows / dports` distinct sources (each Service's SNAT needs a port
/// per connection: ~64k per Service at most).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSpread {
    /// Source pairs.
    pub sources: FlowSet,
    /// First destination port.
    pub dport: u16,
    /// Number of destination ports (>= 1).
    pub dports: u16,
    /// Number of flows (>= 1).
    pub flows: u64,
}

impl FlowSpread {
    /// `flows` flows from `src_ip:src_port` up, over `dports` ports from `dport`.
    pub fn new(src_ip: Ipv4Addr, src_port: u16, flows: u32, dport: u16, dports: u16) -> FlowSpread {
        let flows = flows.max(1);
        let dports = dports.max(1);
        FlowSpread {
            sources: FlowSet::with_flows(src_ip, src_port, flows.div_ceil(u32::from(dports))),
            dport,
            dports,
            flows: u64::from(flows),
        }
    }

    /// The `i`-th flow (wrapping after `flows`): source address, source
    /// port, destination port.
    pub fn flow(&self, i: u64) -> (Ipv4Addr, u16, u16) {
        let i = i % self.flows;
        let d = u64::from(self.dports);
        let (ip, sport) = self.sources.flow(i / d);
        (ip, sport, self.dport.wrapping_add((i % d) as u16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_port_first_then_wraps() {
        let s = FlowSet {
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            ips: 2,
            src_port: 1000,
            ports: 3,
        };
        let got: Vec<_> = (0..7).map(|i| s.flow(i)).collect();
        let ip1 = Ipv4Addr::new(10, 0, 0, 1);
        let ip2 = Ipv4Addr::new(10, 0, 0, 2);
        assert_eq!(
            got,
            vec![
                (ip1, 1000),
                (ip1, 1001),
                (ip1, 1002),
                (ip2, 1000),
                (ip2, 1001),
                (ip2, 1002),
                (ip1, 1000)
            ]
        );
    }

    #[test]
    fn with_flows_spills_into_more_addresses() {
        let s = FlowSet::with_flows(Ipv4Addr::new(10, 0, 0, 1), 1024, 100_000);
        assert_eq!(s.ports, 64512);
        assert_eq!(s.ips, 2);
        assert!(s.len() >= 100_000);
        let distinct: std::collections::HashSet<_> = (0..100_000).map(|i| s.flow(i)).collect();
        assert_eq!(distinct.len(), 100_000);
        assert_eq!(FlowSet::with_flows(Ipv4Addr::LOCALHOST, 9, 1).len(), 1);
    }

    #[test]
    fn spread_is_distinct_and_wraps_at_the_flow_count() {
        let s = FlowSpread::new(Ipv4Addr::new(10, 0, 0, 1), 1024, 100_000, 30232, 2);
        let all: std::collections::HashSet<_> = (0..100_000).map(|i| s.flow(i)).collect();
        assert_eq!(all.len(), 100_000);
        let per_port = all.iter().filter(|f| f.2 == 30233).count();
        assert_eq!(per_port, 50_000);
        assert_eq!(s.flow(100_000), s.flow(0));
        // 129,024 source pairs would exist with 2 addresses; only 100,000 flows are used.
        let one = FlowSpread::new(Ipv4Addr::new(10, 0, 0, 1), 1024, 100_000, 9, 1);
        assert_eq!(one.flow(100_000), one.flow(0));
        assert_eq!(one.flow(64_512).0, Ipv4Addr::new(10, 0, 0, 2));
        let single = FlowSpread::new(Ipv4Addr::LOCALHOST, 9, 1, 30232, 2);
        assert_eq!(single.flow(7), (Ipv4Addr::LOCALHOST, 9, 30232));
    }
}
