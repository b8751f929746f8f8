//! The types the datapath exchanges with conntrack on every `ct()` action.
//!
//! conntrack never touches packet bytes: the datapath parses the packet into a
//! [`CtPacket`], calls [`crate::Shard::execute`] with the `ct()` parameters
//! ([`CtCall`]) and the packet's conntrack metadata ([`PktCtMeta`], which
//! travels with the packet across recirculations like OVS's `pkt->md`), and
//! applies the returned [`Rewrite`] to the bytes itself.

/// OVS `CS_*` conntrack state bits (the `ct_state` field).
pub mod cs {
    /// Start of a new connection.
    pub const NEW: u8 = 0x01;
    /// Part of an existing connection.
    pub const EST: u8 = 0x02;
    /// Related to an existing connection (ICMP error).
    pub const REL: u8 = 0x04;
    /// Reply direction.
    pub const RPL: u8 = 0x08;
    /// Invalid.
    pub const INV: u8 = 0x10;
    /// Tracked.
    pub const TRK: u8 = 0x20;
    /// Source NAT applied.
    pub const SNAT: u8 = 0x40;
    /// Destination NAT applied.
    pub const DNAT: u8 = 0x80;
}

/// IPv4 5-tuple in host byte order. For ICMP echo, `sport` and `dport` are
/// both the echo identifier; `proto` is the IP protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tuple {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port (or ICMP id).
    pub sport: u16,
    /// Destination port (or ICMP id).
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
}

/// TCP header facts conntrack needs for state and window tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpInfo {
    /// TCP flags (low 12 bits of the header word: FIN=0x01 SYN=0x02 RST=0x04
    /// PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40 CWR=0x80).
    pub flags: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Raw window field.
    pub win: u16,
    /// Window scale option, when present (only meaningful on SYNs).
    pub wscale: Option<u8>,
    /// Payload length in bytes (IP total length minus IP and TCP headers).
    pub payload_len: u32,
}

/// Layer-4 view of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP, with ports in the tuple.
    Tcp(TcpInfo),
    /// UDP, with ports in the tuple.
    Udp,
    /// ICMP echo request (type 8) / reply (type 0), and other non-error ICMP
    /// (timestamp, info) with their id in the tuple ports.
    IcmpQuery {
        /// ICMP type.
        ty: u8,
        /// ICMP code.
        code: u8,
    },
    /// ICMP error (dest unreachable 3, source quench 4, redirect 5, time
    /// exceeded 11, parameter problem 12) quoting an inner IPv4 header.
    IcmpError {
        /// ICMP type.
        ty: u8,
        /// ICMP code.
        code: u8,
        /// The quoted packet's tuple as it appears inside the error (i.e. in
        /// the direction of the packet that caused the error).
        inner: Tuple,
    },
    /// Any other IP protocol (ports zero).
    Other,
}

/// What the datapath extracted from the packet for one `ct()` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtPacket {
    /// The outer tuple.
    pub tuple: Tuple,
    /// Layer-4 details.
    pub l4: L4,
    /// Headers complete and IPv4/L4 checksums correct. `false` makes the
    /// packet `+inv` (OVS validates checksums in userspace conntrack).
    pub valid: bool,
    /// The packet is an IPv4 fragment (conntrack treats it as invalid: OVS
    /// userspace needs reassembly first, which flowpath does not do).
    pub fragment: bool,
}

/// NAT address/port range and flags of `nat(src=...)` / `nat(dst=...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatRange {
    /// First address of the range (host order).
    pub addr_min: u32,
    /// Last address of the range (== `addr_min` for one address).
    pub addr_max: u32,
    /// First port, 0 when no port range was given.
    pub port_min: u16,
    /// Last port, 0 when no port range was given.
    pub port_max: u16,
    /// `random` flag.
    pub random: bool,
    /// `hash` flag.
    pub hash: bool,
    /// `persistent` flag.
    pub persistent: bool,
}

/// The `nat` clause of a `ct()` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatSpec {
    /// Plain `nat`: apply an existing connection's translation.
    Existing,
    /// `nat(src=...)`.
    Src(NatRange),
    /// `nat(dst=...)`.
    Dst(NatRange),
}

/// The parameters of one `ct()` execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtCall {
    /// Zone (resolved from an immediate or a register by the datapath).
    pub zone: u16,
    /// `commit`.
    pub commit: bool,
    /// `force`: a committed connection in the opposite direction is deleted
    /// and the packet starts a new one.
    pub force: bool,
    /// `nat` clause.
    pub nat: Option<NatSpec>,
    /// `exec(set_field:V/M->ct_mark)` on commit: (value, mask).
    pub set_mark: Option<(u32, u32)>,
    /// `exec(set_field:V/M->ct_label)` on commit: (value, mask).
    pub set_label: Option<(u128, u128)>,
}

/// Opaque handle to a connection in a shard (OVS's `pkt->md.conn`), cached
/// in the packet metadata between `ct()` calls of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    /// Slot index in the shard.
    pub idx: u32,
    /// Generation of the slot when the reference was taken.
    pub generation: u32,
}

/// Where a `ct()` found the packet's connection in the table (slot and
/// direction), returned in [`CtResult::found`] so that a caller that will
/// run a packet with the same tuple through the same `ct()` again (the
/// datapath's chain cache) can hand it back to
/// [`crate::Shard::execute_hinted`] and skip hashing and probing. A hint
/// is only ever a shortcut: it is used when that slot still holds a live,
/// unexpired connection with exactly the key the lookup would search for,
/// and the answer is then the one the lookup would give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnHint {
    pub(crate) slot: u32,
    pub(crate) dir: u8,
}

/// Conntrack metadata carried by a packet through the pipeline, including
/// across recirculations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PktCtMeta {
    /// `ct_state` bits, see [`cs`].
    pub state: u8,
    /// `ct_zone`.
    pub zone: u16,
    /// `ct_mark`.
    pub mark: u32,
    /// `ct_label`.
    pub label: u128,
    /// Original-direction tuple of the connection (`ct_nw_src`... fields),
    /// when the packet matched or created one.
    pub orig: Option<Tuple>,
    /// Connection found by the last `ct()`, and whether the packet was in
    /// its reply direction.
    pub conn: Option<(ConnRef, bool)>,
}

/// New header values after NAT. The datapath writes every field that differs
/// from the packet and fixes checksums incrementally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// The outer tuple after translation.
    pub outer: Tuple,
    /// For ICMP errors: the quoted inner tuple after translation.
    pub inner: Option<Tuple>,
}

/// Why conntrack asks the datapath to drop a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtDrop {
    /// No free NAT address/port after the bounded number of attempts.
    NatExhausted,
}

/// The result of one `ct()` execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtResult {
    /// Rewrite to apply to the packet, if NAT changed anything.
    pub rewrite: Option<Rewrite>,
    /// Set when the packet must be dropped.
    pub drop: Option<CtDrop>,
    /// The connection the table lookup found (not set when the packet used
    /// its cached connection, was invalid, or started a connection).
    pub found: Option<ConnHint>,
}
