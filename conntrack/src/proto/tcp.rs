//! TCP state and sequence-window tracking, pf style, as OVS 3.1
//! `lib/conntrack-tcp.c` does it (Guido van Rooij's algorithm).
//!
//! Each direction ("peer") tracks `seqlo` (highest sequence sent), `seqhi`
//! (highest the other end acknowledged plus its window), `max_win` and the
//! window scale. Surprises worth knowing, all OVS behaviour:
//! * a SYN-ACK cannot create a connection; a bare ACK can (mid-stream
//!   pickup, both window scales "unknown" = be liberal);
//! * the first packet creates the connection without going through the
//!   update, so a second original-direction packet before any reply is
//!   already `+est` unless it is a SYN (a retransmitted SYN stays `+new`);
//! * packets without payload have their sequence restrictions eased
//!   (`seq = end = seqlo`) but the ACK-skew check still applies;
//! * a SYN on a connection whose both sides are >= FIN_WAIT_2 asks for a
//!   fresh connection (`CtUpdate::New`).

use super::CtUpdate;
use crate::api::TcpInfo;
use crate::config::Tm;

/// TCP flag bits.
pub(crate) mod flags {
    pub const FIN: u16 = 0x01;
    pub const SYN: u16 = 0x02;
    pub const RST: u16 = 0x04;
    pub const PSH: u16 = 0x08;
    pub const ACK: u16 = 0x10;
    pub const URG: u16 = 0x20;
}
use flags::*;

/// OVS `CT_DPIF_TCPS_*` states, in order (the order matters: OVS compares
/// them with `<`/`>=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum TcpState {
    /// CLOSED.
    #[default]
    Closed = 0,
    /// LISTEN.
    Listen,
    /// SYN_SENT.
    SynSent,
    /// SYN_RECV.
    SynRecv,
    /// ESTABLISHED.
    Established,
    /// CLOSE_WAIT.
    CloseWait,
    /// FIN_WAIT_1.
    FinWait1,
    /// CLOSING.
    Closing,
    /// LAST_ACK.
    LastAck,
    /// FIN_WAIT_2.
    FinWait2,
    /// TIME_WAIT.
    TimeWait,
}

impl TcpState {
    /// OVS's name (`ct_dpif_tcp_state_string`).
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Closed => "CLOSED",
            TcpState::Listen => "LISTEN",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::FinWait1 => "FIN_WAIT_1",
            TcpState::Closing => "CLOSING",
            TcpState::LastAck => "LAST_ACK",
            TcpState::FinWait2 => "FIN_WAIT_2",
            TcpState::TimeWait => "TIME_WAIT",
        }
    }

    /// The single state `dpctl/dump-conntrack` prints for a connection:
    /// the larger of the two directions, with FIN_WAIT_2 shown as
    /// TIME_WAIT and SYN_RECV as ESTABLISHED (OVS `coalesce_tcp_state`).
    pub fn coalesce(orig: TcpState, reply: TcpState) -> TcpState {
        match orig.max(reply) {
            TcpState::FinWait2 => TcpState::TimeWait,
            TcpState::SynRecv => TcpState::Established,
            s => s,
        }
    }
}

const WSCALE_FLAG: u8 = 0x80;
const WSCALE_UNKNOWN: u8 = 0x40;
const WSCALE_MASK: u8 = 0x0f;
const MAX_WSCALE: u8 = 14;
const MAXACKWINDOW: i64 = 0xffff + 1500;

/// One direction's tracking state (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TcpPeer {
    pub seqlo: u32,
    pub seqhi: u32,
    pub max_win: u16,
    pub wscale: u8,
    pub state: TcpState,
}

#[inline]
fn seq_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}
#[inline]
fn seq_geq(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// pf's flag sanity check (OVS `tcp_invalid_flags`).
pub(crate) fn invalid_flags(f: u16) -> bool {
    if f & SYN != 0 {
        if f & (RST | FIN) != 0 {
            return true;
        }
    } else if f & (ACK | RST) == 0 {
        return true;
    }
    f & ACK == 0 && f & (FIN | PSH | URG) != 0
}

/// May this packet create a connection (OVS `tcp_valid_new`)?
pub(crate) fn valid_new(t: &TcpInfo) -> bool {
    let syn_ack = t.flags & (SYN | ACK) == (SYN | ACK);
    !invalid_flags(t.flags) && !syn_ack
}

fn wscale_of(t: &TcpInfo) -> u8 {
    match t.wscale {
        Some(w) => w.min(MAX_WSCALE) | WSCALE_FLAG,
        None => 0,
    }
}

/// Peers of a new connection created by `t` (OVS `tcp_new_conn`).
pub(crate) fn new_conn(t: &TcpInfo) -> [TcpPeer; 2] {
    let mut src = TcpPeer {
        seqlo: t.seq,
        ..TcpPeer::default()
    };
    let mut dst = TcpPeer::default();
    src.seqhi = src.seqlo.wrapping_add(t.payload_len).wrapping_add(1);
    if t.flags & SYN != 0 {
        src.seqhi = src.seqhi.wrapping_add(1);
        src.wscale = wscale_of(t);
    } else {
        src.wscale = WSCALE_UNKNOWN;
        dst.wscale = WSCALE_UNKNOWN;
    }
    src.max_win = t.win.max(1);
    if src.wscale & WSCALE_MASK != 0 {
        let sws = u32::from(src.wscale & WSCALE_MASK);
        src.max_win = u32::from(src.max_win).div_ceil(1 << sws) as u16;
    }
    if t.flags & FIN != 0 {
        src.seqhi = src.seqhi.wrapping_add(1);
    }
    dst.seqhi = 1;
    dst.max_win = 1;
    src.state = TcpState::SynSent;
    dst.state = TcpState::Closed;
    [src, dst]
}

/// Why a TCP packet of a known connection was declared invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpInvalid {
    Flags,
    Window,
}

/// Update the connection with packet `t` travelling in direction `reply`
/// (OVS `tcp_conn_update`). Returns the verdict, the new timeout class (if
/// the timer must be refreshed) and, for invalid packets, why.
#[inline]
pub(crate) fn update(
    peers: &mut [TcpPeer; 2],
    t: &TcpInfo,
    reply: bool,
    seq_check: bool,
) -> (CtUpdate, Option<Tm>, Option<TcpInvalid>) {
    match update_established(peers, t, reply, seq_check) {
        Some(r) => r,
        None => update_any(peers, t, reply, seq_check),
    }
}

/// Window scales to apply to a segment without SYN: both ends' when both
/// announced one, the largest when both are unknown (mid-stream pickup),
/// else none.
#[inline]
fn scales(src: &TcpPeer, dst: &TcpPeer) -> (u32, u32) {
    if src.wscale & WSCALE_FLAG != 0 && dst.wscale & WSCALE_FLAG != 0 {
        (
            u32::from(src.wscale & WSCALE_MASK),
            u32::from(dst.wscale & WSCALE_MASK),
        )
    } else if src.wscale & WSCALE_UNKNOWN != 0 && dst.wscale & WSCALE_UNKNOWN != 0 {
        (u32::from(MAX_WSCALE), u32::from(MAX_WSCALE))
    } else {
        (0, 0)
    }
}

/// Move the window: `src` sent up to `end` with window `win` (scaled by
/// `sws`), acknowledging `ack`.
#[inline]
fn slide(src: &mut TcpPeer, dst: &mut TcpPeer, win: u32, end: u32, ack: u32, sws: u32) {
    if u32::from(src.max_win) < win {
        src.max_win = win as u16;
    }
    if seq_gt(end, src.seqlo) {
        src.seqlo = end;
    }
    let w = win.wrapping_shl(sws);
    if seq_geq(ack.wrapping_add(w), dst.seqhi) {
        dst.seqhi = ack.wrapping_add(w.max(1));
    }
}

/// [`update`] for the established data path: an ACK without SYN, FIN or
/// RST on a connection whose both ends are ESTABLISHED, with
/// [`update_any`]'s results (its branches for other flags and states
/// cannot be taken: no state changes, the timeout class stays
/// `TcpEstablished`, and an out-of-window segment is invalid since the
/// loose acceptance needs a closed or closing end). `None` otherwise.
#[inline]
fn update_established(
    peers: &mut [TcpPeer; 2],
    t: &TcpInfo,
    reply: bool,
    seq_check: bool,
) -> Option<(CtUpdate, Option<Tm>, Option<TcpInvalid>)> {
    if t.flags & (SYN | FIN | RST | ACK) != ACK {
        return None;
    }
    let [p0, p1] = peers;
    let (src, dst) = if reply { (p1, p0) } else { (p0, p1) };
    if src.state != TcpState::Established || dst.state != TcpState::Established {
        return None;
    }
    let (sws, dws) = scales(src, dst);
    let win = u32::from(t.win);
    let ack = t.ack;
    let (seq, end) = if t.payload_len == 0 {
        // Ease sequencing restrictions on packets without data.
        (src.seqlo, src.seqlo)
    } else {
        (t.seq, t.seq.wrapping_add(t.payload_len))
    };
    let ackskew = i64::from(dst.seqlo.wrapping_sub(ack) as i32);
    let max_win_back = u32::from(dst.max_win) << dws;
    let in_window = seq_geq(src.seqhi, end)
        && seq_geq(seq, src.seqlo.wrapping_sub(max_win_back))
        && ackskew >= -MAXACKWINDOW
        && ackskew <= (MAXACKWINDOW << sws);
    Some(if in_window || !seq_check {
        slide(src, dst, win, end, ack, sws);
        (CtUpdate::Valid, Some(Tm::TcpEstablished), None)
    } else {
        (CtUpdate::Invalid, None, Some(TcpInvalid::Window))
    })
}

/// [`update`], every case.
fn update_any(
    peers: &mut [TcpPeer; 2],
    t: &TcpInfo,
    reply: bool,
    seq_check: bool,
) -> (CtUpdate, Option<Tm>, Option<TcpInvalid>) {
    let (s, d) = if reply { (1, 0) } else { (0, 1) };
    let [p0, p1] = peers;
    let (src, dst) = if s == 0 { (p0, p1) } else { (p1, p0) };
    let _ = d;
    let f = t.flags;
    let mut sws: u32 = 0;
    let mut dws: u32 = 0;
    let mut win = u32::from(t.win);

    if invalid_flags(f) {
        return (CtUpdate::Invalid, None, Some(TcpInvalid::Flags));
    }

    if f & (SYN | ACK) == SYN {
        if dst.state >= TcpState::FinWait2 && src.state >= TcpState::FinWait2 {
            src.state = TcpState::Closed;
            dst.state = TcpState::Closed;
            return (CtUpdate::New, None, None);
        } else if src.state <= TcpState::SynSent {
            src.state = TcpState::SynSent;
            return (CtUpdate::ValidNew, Some(Tm::TcpFirstPacket), None);
        }
    }

    if f & SYN == 0 {
        (sws, dws) = scales(src, dst);
    }

    let orig_seq = t.seq;
    let mut seq = t.seq;
    let mut ack = t.ack;
    let mut end;
    let mut check_ackskew = true;
    if src.state < TcpState::SynSent {
        // First packet from this end.
        end = seq.wrapping_add(t.payload_len);
        if f & SYN != 0 {
            end = end.wrapping_add(1);
            if dst.wscale & WSCALE_FLAG != 0 {
                src.wscale = wscale_of(t);
                if src.wscale & WSCALE_FLAG != 0 {
                    sws = u32::from(src.wscale & WSCALE_MASK);
                    win = win.div_ceil(1 << sws);
                    dws = u32::from(dst.wscale & WSCALE_MASK);
                } else {
                    // Fix up the other window; the u16 truncation is OVS's.
                    dst.max_win = (u32::from(dst.max_win) << (dst.wscale & WSCALE_MASK)) as u16;
                    dst.wscale = 0;
                }
            }
        }
        if f & FIN != 0 {
            end = end.wrapping_add(1);
        }
        src.seqlo = seq;
        src.state = TcpState::SynSent;
        let fwd = (u32::from(dst.max_win) << dws).max(1);
        if src.seqhi == 1 || seq_geq(end.wrapping_add(fwd), src.seqhi) {
            src.seqhi = end.wrapping_add(fwd);
            check_ackskew = false;
        }
        if win > u32::from(src.max_win) {
            src.max_win = win as u16;
        }
    } else {
        end = seq.wrapping_add(t.payload_len);
        if f & SYN != 0 {
            end = end.wrapping_add(1);
        }
        if f & FIN != 0 {
            end = end.wrapping_add(1);
        }
    }

    if f & ACK == 0 || (ack == 0 && f & (ACK | RST) == (ACK | RST)) {
        ack = dst.seqlo;
    }

    if seq == end {
        // Ease sequencing restrictions on packets without data.
        seq = src.seqlo;
        end = seq;
    }

    let ackskew: i64 = if check_ackskew {
        i64::from(dst.seqlo.wrapping_sub(ack) as i32)
    } else {
        0
    };
    let max_win_back = (u32::from(dst.max_win) << dws) as u64 as u32;
    let in_window = seq_geq(src.seqhi, end)
        && seq_geq(seq, src.seqlo.wrapping_sub(max_win_back))
        && ackskew >= -MAXACKWINDOW
        && ackskew <= (MAXACKWINDOW << sws)
        && (f & RST == 0
            || orig_seq == src.seqlo
            || orig_seq == src.seqlo.wrapping_add(1)
            || orig_seq.wrapping_add(1) == src.seqlo);

    let slide = |src: &mut TcpPeer, dst: &mut TcpPeer| slide(src, dst, win, end, ack, sws);

    if in_window || !seq_check {
        slide(src, dst);
        if f & SYN != 0 && src.state < TcpState::SynSent {
            src.state = TcpState::SynSent;
        }
        if f & FIN != 0 && src.state < TcpState::Closing {
            src.state = TcpState::Closing;
        }
        if f & ACK != 0 {
            if dst.state == TcpState::SynSent {
                dst.state = TcpState::Established;
            } else if dst.state == TcpState::Closing {
                dst.state = TcpState::FinWait2;
            }
        }
        if f & RST != 0 {
            src.state = TcpState::TimeWait;
            dst.state = TcpState::TimeWait;
        }
        let tm = if src.state >= TcpState::FinWait2 && dst.state >= TcpState::FinWait2 {
            Tm::TcpClosed
        } else if src.state >= TcpState::Closing && dst.state >= TcpState::Closing {
            Tm::TcpFinWait
        } else if src.state < TcpState::Established || dst.state < TcpState::Established {
            Tm::TcpOpening
        } else if src.state >= TcpState::Closing || dst.state >= TcpState::Closing {
            Tm::TcpClosing
        } else {
            Tm::TcpEstablished
        };
        (CtUpdate::Valid, Some(tm), None)
    } else if (dst.state < TcpState::SynSent
        || dst.state >= TcpState::FinWait2
        || src.state >= TcpState::FinWait2)
        && seq_geq(src.seqhi.wrapping_add(MAXACKWINDOW as u32), end)
        && seq_geq(seq, src.seqlo.wrapping_sub(MAXACKWINDOW as u32))
    {
        // Loose acceptance: shotgunned SYNs, mid-stream pickup, spurious
        // packets right after close. The timer is deliberately not
        // refreshed.
        slide(src, dst);
        if f & FIN != 0 && src.state < TcpState::Closing {
            src.state = TcpState::Closing;
        }
        if f & RST != 0 {
            src.state = TcpState::TimeWait;
            dst.state = TcpState::TimeWait;
        }
        (CtUpdate::Valid, None, None)
    } else {
        (CtUpdate::Invalid, None, Some(TcpInvalid::Window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(flags: u16, seq: u32, ack: u32, len: u32) -> TcpInfo {
        TcpInfo {
            flags,
            seq,
            ack,
            win: 65535,
            wscale: None,
            payload_len: len,
        }
    }

    #[test]
    fn flag_sanity_matches_pf() {
        assert!(invalid_flags(SYN | RST));
        assert!(invalid_flags(SYN | FIN));
        assert!(invalid_flags(0));
        assert!(invalid_flags(FIN));
        assert!(!invalid_flags(SYN));
        assert!(!invalid_flags(ACK));
        assert!(!invalid_flags(RST));
        assert!(!invalid_flags(FIN | ACK));
        assert!(invalid_flags(PSH | RST));
    }

    #[test]
    fn handshake_reaches_established_both_ways() {
        let mut p = new_conn(&seg(SYN, 1000, 0, 0));
        let (r, tm, _) = update(&mut p, &seg(SYN | ACK, 5000, 1001, 0), true, true);
        assert_eq!(r, CtUpdate::Valid);
        assert_eq!(tm, Some(Tm::TcpOpening));
        assert_eq!(p[0].state, TcpState::Established);
        assert_eq!(p[1].state, TcpState::SynSent);
        let (r, tm, _) = update(&mut p, &seg(ACK, 1001, 5001, 0), false, true);
        assert_eq!(r, CtUpdate::Valid);
        assert_eq!(tm, Some(Tm::TcpEstablished));
        assert_eq!(p[1].state, TcpState::Established);
    }

    fn state() -> impl Strategy<Value = TcpState> {
        prop_oneof![
            Just(TcpState::Established),
            Just(TcpState::Established),
            (0u8..11).prop_map(|i| [
                TcpState::Closed,
                TcpState::Listen,
                TcpState::SynSent,
                TcpState::SynRecv,
                TcpState::Established,
                TcpState::CloseWait,
                TcpState::FinWait1,
                TcpState::Closing,
                TcpState::LastAck,
                TcpState::FinWait2,
                TcpState::TimeWait,
            ][i as usize]),
        ]
    }

    fn peer() -> impl Strategy<Value = TcpPeer> {
        (
            any::<u32>(),
            0u32..100_000,
            any::<u16>(),
            prop_oneof![
                Just(0u8),
                Just(WSCALE_UNKNOWN),
                (0u8..16).prop_map(|w| w | WSCALE_FLAG),
                any::<u8>()
            ],
            state(),
        )
            .prop_map(|(seqlo, span, max_win, wscale, state)| TcpPeer {
                seqlo,
                seqhi: seqlo.wrapping_add(span),
                max_win,
                wscale,
                state,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The established fast path gives exactly the general code's
        /// results and state, on segments near and far from the window.
        #[test]
        fn established_fast_path_is_the_general_update(
            peers in [peer(), peer()],
            flags in prop_oneof![Just(ACK), Just(ACK | PSH), 0u16..0x200],
            dseq in -90_000i64..90_000,
            dack in -90_000i64..90_000,
            far in prop_oneof![Just(false), Just(false), Just(false), Just(true)],
            win in any::<u16>(),
            len in prop_oneof![Just(0u32), 0u32..3000],
            reply in any::<bool>(),
            seq_check in any::<bool>(),
        ) {
            let (s, d) = if reply { (1, 0) } else { (0, 1) };
            let base = |p: &TcpPeer, x: i64| if far { x as u32 } else { p.seqlo.wrapping_add(x as u32) };
            let t = TcpInfo {
                flags,
                seq: base(&peers[s], dseq),
                ack: base(&peers[d], dack),
                win,
                wscale: None,
                payload_len: len,
            };
            let mut a = peers;
            let mut b = peers;
            let fast = update(&mut a, &t, reply, seq_check);
            let slow = update_any(&mut b, &t, reply, seq_check);
            prop_assert_eq!(fast, slow);
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn coalesced_state_names() {
        assert_eq!(
            TcpState::coalesce(TcpState::FinWait2, TcpState::Closing),
            TcpState::TimeWait
        );
        assert_eq!(
            TcpState::coalesce(TcpState::SynSent, TcpState::SynRecv),
            TcpState::Established
        );
        assert_eq!(TcpState::Established.name(), "ESTABLISHED");
    }
}
