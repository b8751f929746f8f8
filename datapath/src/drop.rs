//! Why the datapath drops packets: one enum, one counter and one name each.

/// A named reason for dropping a packet. Every drop in the datapath counts
/// exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Frame shorter than an Ethernet header.
    EthTruncated,
    /// VLAN tag truncated.
    VlanTruncated,
    /// ARP packet shorter than an Ethernet/IPv4 ARP body.
    ArpTruncated,
    /// IPv4 header truncated, IHL < 5, or version != 4.
    Ipv4Malformed,
    /// IPv4 total length below the header length or beyond the frame.
    Ipv4BadLength,
    /// TCP header truncated or data offset invalid.
    TcpMalformed,
    /// UDP header truncated or length invalid.
    UdpMalformed,
    /// ICMP header truncated.
    IcmpMalformed,
    /// IGMP header truncated.
    IgmpMalformed,
    /// No flow matched (OVS: table miss drops).
    TableMiss,
    /// The action list ended without an output.
    NoOutput,
    /// Explicit `drop` (or an empty action list).
    Explicit,
    /// Resubmit/goto nesting beyond the OVS limit.
    ResubmitDepth,
    /// Recirculation beyond the OVS limit.
    RecircDepth,
    /// `output` to the packet's own in_port (OVS drops it; use `IN_PORT`).
    OutputToInPort,
    /// Output to a port that does not exist.
    NoSuchPort,
    /// `group:G` with no such group.
    NoSuchGroup,
    /// Sent to the controller (flowpath has none: counted punt).
    ControllerPunt,
    /// `dec_ttl` on a packet with TTL 0 or 1.
    TtlExpired,
    /// conntrack could not allocate a NAT address/port.
    CtNatExhausted,
    /// A REJECT (Service without endpoints) that must not be answered: a
    /// RST, an ICMP message, a later fragment, a broadcast/multicast/zero
    /// source or a broadcast/multicast destination (see `crate::reject`).
    RejectNotAnswerable,
    /// A REJECT over the worker's answer rate (the kernel's
    /// `icmp_ratelimit`).
    RejectRateLimited,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: &'static [DropReason] = &[
        DropReason::EthTruncated,
        DropReason::VlanTruncated,
        DropReason::ArpTruncated,
        DropReason::Ipv4Malformed,
        DropReason::Ipv4BadLength,
        DropReason::TcpMalformed,
        DropReason::UdpMalformed,
        DropReason::IcmpMalformed,
        DropReason::IgmpMalformed,
        DropReason::TableMiss,
        DropReason::NoOutput,
        DropReason::Explicit,
        DropReason::ResubmitDepth,
        DropReason::RecircDepth,
        DropReason::OutputToInPort,
        DropReason::NoSuchPort,
        DropReason::NoSuchGroup,
        DropReason::ControllerPunt,
        DropReason::TtlExpired,
        DropReason::CtNatExhausted,
        DropReason::RejectNotAnswerable,
        DropReason::RejectRateLimited,
    ];

    /// Stable snake_case name, used in counters and JSON.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::EthTruncated => "eth_truncated",
            DropReason::VlanTruncated => "vlan_truncated",
            DropReason::ArpTruncated => "arp_truncated",
            DropReason::Ipv4Malformed => "ipv4_malformed",
            DropReason::Ipv4BadLength => "ipv4_bad_length",
            DropReason::TcpMalformed => "tcp_malformed",
            DropReason::UdpMalformed => "udp_malformed",
            DropReason::IcmpMalformed => "icmp_malformed",
            DropReason::IgmpMalformed => "igmp_malformed",
            DropReason::TableMiss => "table_miss",
            DropReason::NoOutput => "no_output",
            DropReason::Explicit => "explicit_drop",
            DropReason::ResubmitDepth => "resubmit_depth",
            DropReason::RecircDepth => "recirc_depth",
            DropReason::OutputToInPort => "output_to_in_port",
            DropReason::NoSuchPort => "no_such_port",
            DropReason::NoSuchGroup => "no_such_group",
            DropReason::ControllerPunt => "controller_punt",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::CtNatExhausted => "ct_nat_exhausted",
            DropReason::RejectNotAnswerable => "reject_not_answerable",
            DropReason::RejectRateLimited => "reject_ratelimit",
        }
    }

    /// Index into a counter array of length `ALL.len()`.
    pub fn index(self) -> usize {
        DropReason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Per-core drop counters, one `u64` per [`DropReason`].
#[derive(Debug, Clone, Default)]
pub struct DropCounters {
    counts: [u64; 32],
}

impl DropCounters {
    /// Count one drop.
    #[inline]
    pub fn bump(&mut self, r: DropReason) {
        self.counts[r as usize] += 1;
    }

    /// Current count for `r`.
    pub fn get(&self, r: DropReason) -> u64 {
        self.counts[r as usize]
    }

    /// Sum of every counter.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Non-zero counters with their names.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .filter(|r| self.get(**r) != 0)
            .map(|r| (r.name(), self.get(*r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unique_and_fit_counters() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
        assert!(DropReason::ALL.len() <= 32);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL must list reasons in declaration order");
        }
    }
}
