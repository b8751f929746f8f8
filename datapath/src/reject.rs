//! Answering REJECT: a Service without endpoints refuses a new connection
//! with a TCP RST or an ICMP port unreachable, built by the datapath itself.
//!
//! # Why the datapath answers
//!
//! The Service compiler sends the first packet of a connection to a Service
//! without usable endpoints to `controller(reason=no_match,userdata=52.45.4a.
//! 45.43.54)` ("REJECT" in ASCII), as Antrea does. OVS cannot build a reset
//! from flow actions, so Antrea's agent answers the packet-in
//! (`pkg/agent/controller/networkpolicy/reject.go`). flowpath has no external
//! controller: [`crate::pipeline::xlate`] turns a controller action with that
//! userdata into [`crate::pipeline::xlate::DpAction::Reject`], and the engine
//! calls [`RejectState::answer`]. Every other controller action stays a
//! counted `controller_punt` drop. Real OVS without a controller drops the
//! packet: a documented deviation (`tests/tests/deviations.rs`).
//!
//! # Which addresses: the packet as it entered flowpath
//!
//! The client must see the answer come from the address it targeted (node IP
//! and nodePort, ClusterIP and port, external IP) and go to its own address,
//! or its stack will not match it to the socket (Linux looks a UDP socket up
//! by the header quoted in the ICMP error; a RST must carry the connection's
//! 4-tuple). By the time the packet reaches ServiceLB, NodePort traffic has
//! been DNATed to the virtual IP and SNATed to the gateway IP.
//!
//! Antrea answers from the packet-in (the rewritten packet, addresses
//! swapped) and sends its packet-out through the conntrack tables, so the
//! zones un-NAT it on the way back. flowpath instead keeps a snapshot of the
//! first pass's flow key ([`RejectState::begin`]: the 5 header words, 40
//! bytes, of the key the engine extracted anyway; no copy of the frame;
//! measured +9 instructions per established NodePort packet, 4,775 -> 4,784
//! with `scripts/bench-insn.sh`) and builds the answer
//! from it directly, with Ethernet addresses swapped, out of the port the
//! packet came in on. Reasons:
//! - the answer is correct by construction, whatever the pipeline does
//!   between entry and ServiceLB (a walk back depends on reply-direction
//!   rules that route it to the right port: the seeds send NodePort replies
//!   out of the gateway into the host's routing, not back out of the
//!   uplink);
//! - the walk back would run conntrack on a packet the client never sent
//!   (below: nothing needs it);
//! - it costs five word copies per packet and nothing else until a REJECT.
//!
//! The ICMP error quotes the offending datagram as the client sent it: the
//! current bytes (payload untouched by the pipeline) are copied on this cold
//! path with addresses, ports, TOS and TTL restored from the snapshot by
//! [`crate::extract::commit`] (checksums restored incrementally).
//!
//! # Conntrack leftovers
//!
//! A REJECTed packet has usually been committed in earlier zones (NodePort:
//! 52100 and 52200) and is never answered by a backend, so the entries stay
//! until they expire (30 s in state SYN_SENT or UDP "first"), in OVS as in
//! flowpath; the answer does not go through conntrack. A retry of the same
//! 5-tuple still behaves exactly like the first attempt, because OVS 3.1
//! (lib/conntrack-tcp.c, lib/conntrack-other.c) reports a pure SYN on a
//! connection whose sender is at most in SYN_SENT, and any UDP packet of a
//! connection that never saw a reply, as `CT_UPDATE_VALID_NEW`: `+new`,
//! whatever the new initial sequence number, so the pipeline takes the
//! `+new` path again and reaches REJECT again (the existing NAT binding is
//! reused, to the same addresses). Antrea's packet-out walks the RST through
//! the zones, which closes the TCP entry; a later SYN on a closed entry is
//! `+new` as well. So flowpath keeps OVS's conntrack state exactly (dumps
//! stay comparable with OVS) and tests that retries, TCP with a new ISN and
//! UDP from the same socket, are answered again
//! (`tests/tests/deviations.rs` checks OVS's side).
//!
//! # Never answered
//!
//! As RFC 1122 3.2.2 / RFC 1812 4.3.2.7 ask of ICMP errors (and RFC 9293
//! of resets): a RST, an ICMP message (Services carry TCP, UDP and SCTP
//! only), a non-first fragment, a packet from a zero, broadcast, multicast
//! or class E source or to a broadcast or multicast address, a frame from a
//! group Ethernet address. These count `reject_not_answerable`. Answers are
//! rate limited per worker by a token bucket ([`RATE_PER_SEC`], burst
//! [`BURST`], the kernel's `icmp_msgs_per_sec`/`icmp_msgs_burst` defaults):
//! over the limit the packet is dropped as `reject_ratelimit` (the kernel's
//! `icmp_ratelimit`). Answers sent count `rejects`.
//!
//! Nothing here allocates after the first answer (the buffers keep their
//! capacity) and nothing panics, whatever the bytes.

use crate::drop::DropReason;
use crate::extract::{self, Proto};
use crate::key::{FlowKey, eth_type, frag, ip_proto, slot};
use crate::wire::checksum;
use crate::wire::tcp;

/// The controller userdata of the compiler's REJECT ("REJECT" in ASCII).
pub const REJECT_USERDATA: &str = "52.45.4a.45.43.54";

/// Whether the arguments of a `controller(...)` action ask for a REJECT.
pub fn is_reject(controller_args: &str) -> bool {
    controller_args.split(',').any(|a| {
        a.trim()
            .strip_prefix("userdata=")
            .is_some_and(|u| u.eq_ignore_ascii_case(REJECT_USERDATA))
    })
}

/// Answers per second and per worker.
pub const RATE_PER_SEC: u64 = 1000;
/// Answers a worker may send at once after a quiet period.
pub const BURST: u64 = 50;
/// Largest IPv4 datagram of an ICMP error (RFC 1812 4.3.2.3).
pub const ICMP_ERROR_MAX: usize = 576;
/// Largest answer frame: Ethernet, one VLAN tag, [`ICMP_ERROR_MAX`].
pub const ANSWER_MAX: usize = 14 + 4 + ICMP_ERROR_MAX;

/// Key words [`RejectState::begin`] keeps: every slot an answer reads lives
/// in them (a unit test checks).
pub const ORIGIN_WORDS: usize = 5;

/// The key slots an answer reads.
pub const ORIGIN_SLOTS: &[crate::key::Slot] = &[
    slot::IN_PORT,
    slot::DL_TYPE,
    slot::VLAN_TCI,
    slot::DL_SRC,
    slot::DL_DST,
    slot::NW_TOS,
    slot::NW_PROTO,
    slot::NW_FRAG,
    slot::NW_TTL,
    slot::NW_SRC,
    slot::NW_DST,
    slot::TP_SRC,
    slot::TP_DST,
    slot::TCP_FLAGS,
];

/// What a REJECT was answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// TCP reset (RFC 9293 3.10.7.1).
    TcpRst,
    /// ICMP destination unreachable, port unreachable (type 3, code 3).
    IcmpPortUnreachable,
}

impl Answer {
    /// Stable name (replay JSON, traces).
    pub fn name(self) -> &'static str {
        match self {
            Answer::TcpRst => "tcp_rst",
            Answer::IcmpPortUnreachable => "icmp_port_unreachable",
        }
    }
}

/// The request's addresses as it entered flowpath (from the first pass's
/// flow key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Ethernet source (the client or its router).
    pub eth_src: u64,
    /// Ethernet destination (this node's port).
    pub eth_dst: u64,
    /// 802.1Q TCI with the CFI bit (0x1000) set when tagged, else 0.
    pub vlan_tci: u16,
    /// IPv4 source.
    pub ip_src: u32,
    /// IPv4 destination (the address the client targeted).
    pub ip_dst: u32,
    /// L4 source port.
    pub sport: u16,
    /// L4 destination port.
    pub dport: u16,
}

impl Request {
    /// The request as `k` (a first-pass key) describes it.
    pub fn from_key(k: &FlowKey) -> Request {
        Request {
            eth_src: k.get(slot::DL_SRC),
            eth_dst: k.get(slot::DL_DST),
            vlan_tci: k.get(slot::VLAN_TCI) as u16,
            ip_src: k.get(slot::NW_SRC) as u32,
            ip_dst: k.get(slot::NW_DST) as u32,
            sport: k.get(slot::TP_SRC) as u16,
            dport: k.get(slot::TP_DST) as u16,
        }
    }
}

/// The TCP facts a reset depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    /// SEG.SEQ.
    pub seq: u32,
    /// SEG.ACK.
    pub ack: u32,
    /// Flags (12 bits).
    pub flags: u16,
    /// Payload bytes (SYN and FIN are added by [`tcp_rst`]).
    pub payload_len: u32,
}

/// Whether an address may be the source of a packet worth an error: not
/// zero ("this host"), not limited broadcast, not multicast or class E.
fn unicast_source(ip: u32) -> bool {
    ip != 0 && ip >> 28 < 0xe
}

/// Whether the request may be answered at all (see the module docs).
pub fn answerable(k: &FlowKey) -> bool {
    if k.get(slot::DL_TYPE) != eth_type::IPV4 as u64 {
        return false;
    }
    let req = Request::from_key(k);
    let proto = k.get(slot::NW_PROTO) as u8;
    let later = k.get(slot::NW_FRAG) as u8 & frag::LATER != 0;
    let rst = proto == ip_proto::TCP && k.get(slot::TCP_FLAGS) as u16 & tcp::RST != 0;
    // Group bit of the Ethernet source: multicast or broadcast.
    let group_src = req.eth_src & 0x0100_0000_0000 != 0;
    let bad_dst = req.ip_dst == u32::MAX || req.ip_dst >> 28 == 0xe;
    !(later
        || rst
        || proto == ip_proto::ICMP
        || group_src
        || bad_dst
        || !unicast_source(req.ip_src))
}

/// Write the Ethernet (+ VLAN) and IPv4 headers of an answer to `req` into
/// `out`; returns the L4 offset. `out` must hold [`ANSWER_MAX`] bytes.
fn headers(req: &Request, proto: u8, tos: u8, ip_len: u16, out: &mut [u8]) -> usize {
    out[0..6].copy_from_slice(&req.eth_src.to_be_bytes()[2..]);
    out[6..12].copy_from_slice(&req.eth_dst.to_be_bytes()[2..]);
    let mut l3 = 12;
    if req.vlan_tci & 0x1000 != 0 {
        out[12..14].copy_from_slice(&eth_type::VLAN.to_be_bytes());
        out[14..16].copy_from_slice(&(req.vlan_tci & !0x1000).to_be_bytes());
        l3 = 16;
    }
    out[l3..l3 + 2].copy_from_slice(&eth_type::IPV4.to_be_bytes());
    let l3 = l3 + 2;
    let ip = &mut out[l3..l3 + 20];
    ip[0] = 0x45;
    ip[1] = tos;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&[0, 0]); // identification: DF set, never fragmented
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&req.ip_dst.to_be_bytes());
    ip[16..20].copy_from_slice(&req.ip_src.to_be_bytes());
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    l3 + 20
}

/// Build the reset answering `seg` (RFC 9293 3.10.7.1) into `out` (at least
/// [`ANSWER_MAX`] bytes); returns the frame length. If the incoming segment
/// has ACK set: `<SEQ=SEG.ACK><CTL=RST>`; otherwise `<SEQ=0><ACK=SEG.SEQ +
/// SEG.LEN><CTL=RST,ACK>`, where SYN and FIN each count one.
pub fn tcp_rst(req: &Request, seg: &TcpSegment, out: &mut [u8]) -> usize {
    let l4 = headers(req, ip_proto::TCP, 0, 40, out);
    let (seq, ack, flags) = if seg.flags & tcp::ACK != 0 {
        (seg.ack, 0, tcp::RST)
    } else {
        let len = seg
            .payload_len
            .wrapping_add(u32::from(seg.flags & tcp::SYN != 0))
            .wrapping_add(u32::from(seg.flags & tcp::FIN != 0));
        (0, seg.seq.wrapping_add(len), tcp::RST | tcp::ACK)
    };
    let t = &mut out[l4..l4 + 20];
    t[0..2].copy_from_slice(&req.dport.to_be_bytes());
    t[2..4].copy_from_slice(&req.sport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12..14].copy_from_slice(&((5u16 << 12) | flags).to_be_bytes());
    t[14..20].copy_from_slice(&[0; 6]); // window, checksum, urgent
    let ph = checksum::pseudo_header_v4(req.ip_dst, req.ip_src, ip_proto::TCP, 20);
    let c = checksum::finish(checksum::sum(ph, t));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    l4 + 20
}

/// Build an ICMP port unreachable quoting `quote` (the offending IPv4
/// header and as much of its payload as keeps the datagram within
/// [`ICMP_ERROR_MAX`] bytes) into `out` (at least [`ANSWER_MAX`] bytes);
/// returns the frame length.
pub fn icmp_port_unreachable(req: &Request, quote: &[u8], out: &mut [u8]) -> usize {
    let quote = &quote[..quote.len().min(ICMP_ERROR_MAX - 28)];
    // Internetwork control precedence, as Linux sends its ICMP errors.
    let l4 = headers(req, ip_proto::ICMP, 0xc0, (28 + quote.len()) as u16, out);
    let m = &mut out[l4..l4 + 8 + quote.len()];
    m[0] = 3; // destination unreachable
    m[1] = 3; // port unreachable
    m[2..8].copy_from_slice(&[0; 6]); // checksum, unused
    m[8..].copy_from_slice(quote);
    let c = checksum::checksum(m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    l4 + 8 + quote.len()
}

/// A token bucket: [`RATE_PER_SEC`] tokens a second, at most [`BURST`]
/// saved. Per worker, so it needs no lock and no atomic.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    /// Thousandths of a token.
    milli: u64,
    last_ms: u64,
}

impl Default for TokenBucket {
    fn default() -> Self {
        TokenBucket {
            milli: BURST * 1000,
            last_ms: 0,
        }
    }
}

impl TokenBucket {
    /// Take one token at `now_ms`; false when none is left.
    pub fn take(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        // `elapsed` ms at RATE_PER_SEC tokens/s = elapsed * RATE milli-tokens.
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(RATE_PER_SEC))
            .min(BURST * 1000);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// What [`RejectState::answer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer is ready in [`RejectState::frame`], to send on `port`.
    Sent {
        /// What it is.
        answer: Answer,
        /// The port the request came in on.
        port: u32,
    },
    /// Not answered; the packet is dropped for this reason.
    Dropped(DropReason),
    /// The packet was already answered by an earlier REJECT of its walk.
    Already,
}

/// A worker's REJECT state: the first-pass snapshot, the rate limiter and
/// the answer buffers.
/// Owned by one worker (inside its [`crate::pipeline::exec::Scratch`]).
#[derive(Debug)]
pub struct RejectState {
    origin: FlowKey,
    answered: bool,
    bucket: TokenBucket,
    restored: Vec<u8>,
    out: Vec<u8>,
    len: usize,
}

impl Default for RejectState {
    fn default() -> Self {
        RejectState {
            origin: FlowKey::ZERO,
            answered: false,
            bucket: TokenBucket::default(),
            restored: Vec::with_capacity(2048),
            out: vec![0; ANSWER_MAX],
            len: 0,
        }
    }
}

impl RejectState {
    /// Start a packet: remember its first-pass key's header words (all an
    /// answer needs: in_port, dl_type, VLAN, MACs, TOS, protocol, fragment
    /// bits, TTL, addresses, ports, TCP flags; see [`ORIGIN_WORDS`]), 40
    /// bytes rather than the whole key.
    #[inline]
    pub fn begin(&mut self, key: &FlowKey) {
        self.origin.w[..ORIGIN_WORDS].copy_from_slice(&key.w[..ORIGIN_WORDS]);
        self.answered = false;
    }

    /// The answer built by the last [`RejectState::answer`] that returned
    /// [`Outcome::Sent`].
    pub fn frame(&self) -> &[u8] {
        &self.out[..self.len]
    }

    /// The first-pass key of the current packet.
    pub fn origin(&self) -> &FlowKey {
        &self.origin
    }

    /// Answer the current packet, whose bytes are now `pkt` (as rewritten by
    /// the pipeline so far), at `now_ms`.
    #[cold]
    pub fn answer(&mut self, pkt: &[u8], now_ms: u64) -> Outcome {
        if self.answered {
            return Outcome::Already;
        }
        self.answered = true;
        if !answerable(&self.origin) {
            return Outcome::Dropped(DropReason::RejectNotAnswerable);
        }
        let proto = self.origin.get(slot::NW_PROTO) as u8;
        // The current bytes: the rewritten packet (same lengths as the
        // original; only headers change on the way).
        let mut cur = FlowKey::ZERO;
        let Ok(layout) = extract::extract(pkt, 0, &mut cur) else {
            return Outcome::Dropped(DropReason::RejectNotAnswerable);
        };
        if !layout.is_ipv4() || cur.get(slot::NW_PROTO) as u8 != proto {
            return Outcome::Dropped(DropReason::RejectNotAnswerable);
        }
        if !self.bucket.take(now_ms) {
            return Outcome::Dropped(DropReason::RejectRateLimited);
        }
        let req = Request::from_key(&self.origin);
        let port = self.origin.get(slot::IN_PORT) as u32;
        if proto == ip_proto::TCP {
            if layout.proto != Proto::Tcp {
                return Outcome::Dropped(DropReason::RejectNotAnswerable);
            }
            let t = &pkt[layout.l4..layout.ip_end];
            let hlen = usize::from(t[12] >> 4) * 4;
            let seg = TcpSegment {
                seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
                ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
                flags: u16::from_be_bytes([t[12], t[13]]) & tcp::FLAGS_MASK,
                payload_len: t.len().saturating_sub(hlen) as u32,
            };
            self.len = tcp_rst(&req, &seg, &mut self.out);
            return Outcome::Sent {
                answer: Answer::TcpRst,
                port,
            };
        }
        // UDP, SCTP and other transports: quote the datagram as it arrived.
        self.restored.clear();
        self.restored.extend_from_slice(&pkt[..layout.ip_end]);
        let mut to = cur;
        for s in [
            slot::NW_SRC,
            slot::NW_DST,
            slot::NW_TOS,
            slot::NW_TTL,
            slot::TP_SRC,
            slot::TP_DST,
        ] {
            to.set(s, self.origin.get(s));
        }
        extract::commit(&mut self.restored, &layout, &cur, &to);
        let quote = &self.restored[layout.l3..layout.ip_end];
        self.len = icmp_port_unreachable(&req, quote, &mut self.out);
        Outcome::Sent {
            answer: Answer::IcmpPortUnreachable,
            port,
        }
    }
}

#[cfg(test)]
mod tests;
