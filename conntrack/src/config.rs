//! Shard configuration: capacity, limits, timeouts, sequence checking.

/// Timeout policy in seconds, with OVS's userspace defaults
/// (`ct_dpif_netdev_tp_def` in OVS 3.1 `lib/conntrack-tp.c`).
///
/// OVS maps its internal timeout classes onto these attributes; note that
/// UDP and every other non-TCP/ICMP protocol share the `udp_*` values:
/// first packet -> `udp_first`, more packets in one direction ->
/// `udp_single`, packets seen both ways -> `udp_multiple`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP first packet (`CT_TM_TCP_FIRST_PACKET`), default 30 s.
    pub tcp_syn_sent: u32,
    /// TCP opening (`CT_TM_TCP_OPENING`), default 30 s.
    pub tcp_syn_recv: u32,
    /// TCP established, default 24 h.
    pub tcp_established: u32,
    /// TCP one side closing (`CT_TM_TCP_CLOSING`), default 15 min.
    pub tcp_fin_wait: u32,
    /// TCP both sides closing (`CT_TM_TCP_FIN_WAIT`), default 45 s.
    pub tcp_time_wait: u32,
    /// TCP closed (`CT_TM_TCP_CLOSED`), default 30 s.
    pub tcp_close: u32,
    /// Other/UDP first packet, default 60 s.
    pub udp_first: u32,
    /// Other/UDP several packets one way (`CT_TM_OTHER_MULTIPLE`), 60 s.
    pub udp_single: u32,
    /// Other/UDP packets both ways (`CT_TM_OTHER_BIDIR`), default 30 s.
    pub udp_multiple: u32,
    /// ICMP first packet, default 60 s.
    pub icmp_first: u32,
    /// ICMP after a reply, default 30 s.
    pub icmp_reply: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: 30,
            tcp_syn_recv: 30,
            tcp_established: 24 * 60 * 60,
            tcp_fin_wait: 15 * 60,
            tcp_time_wait: 45,
            tcp_close: 30,
            udp_first: 60,
            udp_single: 60,
            udp_multiple: 30,
            icmp_first: 60,
            icmp_reply: 30,
        }
    }
}

/// OVS's internal timeout classes (`CT_TM_*`), the index of a connection's
/// expiry list within its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Tm {
    TcpFirstPacket = 0,
    TcpOpening,
    TcpEstablished,
    TcpClosing,
    TcpFinWait,
    TcpClosed,
    OtherFirst,
    OtherMultiple,
    OtherBidir,
    IcmpFirst,
    IcmpReply,
}

/// Number of timeout classes.
pub(crate) const N_TM: usize = 11;

impl Timeouts {
    /// Seconds for class `tm` (OVS `tm_to_ct_dpif_tp`).
    pub(crate) fn secs(&self, tm: usize) -> u32 {
        [
            self.tcp_syn_sent,
            self.tcp_syn_recv,
            self.tcp_established,
            self.tcp_fin_wait,
            self.tcp_time_wait,
            self.tcp_close,
            self.udp_first,
            self.udp_single,
            self.udp_multiple,
            self.icmp_first,
            self.icmp_reply,
        ][tm]
    }
}

/// Configuration of one [`crate::Shard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtConfig {
    /// Maximum number of connections (slots preallocated at start; OVS
    /// `dpctl/ct-set-maxconns`).
    pub capacity: u32,
    /// TCP sequence/window checking (OVS `dpctl/ct-enable-tcp-seq-chk`);
    /// `false` is `ct-disable-tcp-seq-chk`.
    pub tcp_seq_check: bool,
    /// Default timeout policy.
    pub timeouts: Timeouts,
    /// Per-zone timeout policies (OVS zone timeout policies).
    pub zone_timeouts: Vec<(u16, Timeouts)>,
    /// Default per-zone connection limit (`ct-set-limits default=N`).
    pub default_zone_limit: Option<u32>,
    /// Per-zone connection limits (`ct-set-limits zone=Z,limit=N`).
    pub zone_limits: Vec<(u16, u32)>,
    /// Expired connections reclaimed per `execute` call at most.
    pub reap_per_call: u32,
    /// Seed of the table hash and of NAT's random port choices.
    pub seed: u64,
}

impl Default for CtConfig {
    fn default() -> Self {
        CtConfig {
            capacity: 65536,
            tcp_seq_check: true,
            timeouts: Timeouts::default(),
            zone_timeouts: Vec::new(),
            default_zone_limit: None,
            zone_limits: Vec::new(),
            reap_per_call: 4,
            seed: 0x0f10_da7a_c0de_5eed,
        }
    }
}

impl CtConfig {
    /// Default configuration with room for `capacity` connections.
    pub fn with_capacity(capacity: u32) -> Self {
        CtConfig {
            capacity,
            ..CtConfig::default()
        }
    }
}
