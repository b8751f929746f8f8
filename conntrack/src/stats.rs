//! Per-shard counters: plain `u64`s owned by the worker, summed on demand.

/// Why conntrack declared a packet `+inv`. One counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum InvalidReason {
    /// Bad IPv4 or L4 checksum, or truncated headers (`CtPacket::valid`).
    BadPacket = 0,
    /// IPv4 fragment (flowpath does not reassemble).
    Fragment,
    /// Headers conntrack cannot key: port 0, ICMP code != 0 on a query,
    /// unknown ICMP type, ICMP error quoting a packet not sent to its source,
    /// `l4` inconsistent with the protocol.
    Unkeyable,
    /// Cannot start a connection (SYN-ACK, ICMP reply... without one).
    NotNew,
    /// ICMP error whose quoted connection is unknown.
    RelatedUnknown,
    /// Illegal TCP flag combination.
    TcpFlags,
    /// TCP segment outside the tracked sequence/ACK windows.
    TcpWindow,
}

impl InvalidReason {
    /// Number of reasons.
    pub const COUNT: usize = 7;
    /// All reasons, in counter order.
    pub const ALL: [InvalidReason; Self::COUNT] = [
        InvalidReason::BadPacket,
        InvalidReason::Fragment,
        InvalidReason::Unkeyable,
        InvalidReason::NotNew,
        InvalidReason::RelatedUnknown,
        InvalidReason::TcpFlags,
        InvalidReason::TcpWindow,
    ];

    /// Counter name.
    pub fn name(self) -> &'static str {
        match self {
            InvalidReason::BadPacket => "bad_packet",
            InvalidReason::Fragment => "fragment",
            InvalidReason::Unkeyable => "unkeyable",
            InvalidReason::NotNew => "not_new",
            InvalidReason::RelatedUnknown => "related_unknown",
            InvalidReason::TcpFlags => "tcp_flags",
            InvalidReason::TcpWindow => "tcp_window",
        }
    }
}

/// Counters of one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtCounters {
    /// `execute` calls that looked a key up in the table.
    pub lookups: u64,
    /// Lookups that found a live connection (either direction, incl. via
    /// the cached `md.conn` or the original tuple).
    pub hits: u64,
    /// Packets that got `+new` without a connection being found.
    pub new: u64,
    /// Connections created.
    pub committed: u64,
    /// Connections reclaimed after expiring.
    pub expired: u64,
    /// Connections removed by flush.
    pub flushed: u64,
    /// `+inv` packets by [`InvalidReason`].
    pub invalid: [u64; InvalidReason::COUNT],
    /// Commits refused: no free NAT tuple (packet dropped).
    pub nat_exhausted: u64,
    /// Commits refused: table at capacity (OVS `conntrack_full`).
    pub table_full: u64,
    /// Commits refused: zone at its limit (OVS `conntrack_zone_full`).
    pub zone_limit: u64,
    /// Packets handed to another worker (counted by the sender).
    pub handoffs: u64,
    /// Packets received from another worker.
    pub handoffs_in: u64,
}

impl CtCounters {
    /// Total invalid packets.
    pub fn invalid_total(&self) -> u64 {
        self.invalid.iter().sum()
    }

    /// Invalid packets for `r`.
    pub fn invalid(&self, r: InvalidReason) -> u64 {
        self.invalid[r as usize]
    }

    /// Add `o` into `self` (summing shards).
    pub fn add(&mut self, o: &CtCounters) {
        self.lookups += o.lookups;
        self.hits += o.hits;
        self.new += o.new;
        self.committed += o.committed;
        self.expired += o.expired;
        self.flushed += o.flushed;
        for (a, b) in self.invalid.iter_mut().zip(o.invalid.iter()) {
            *a += b;
        }
        self.nat_exhausted += o.nat_exhausted;
        self.table_full += o.table_full;
        self.zone_limit += o.zone_limit;
        self.handoffs += o.handoffs;
        self.handoffs_in += o.handoffs_in;
    }
}
