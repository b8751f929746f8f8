//! Per-protocol connection state: TCP (`tcp`), and the two small state
//! machines OVS uses for ICMP queries and for everything else (UDP included).

pub mod tcp;

use crate::config::Tm;

/// Result of updating a connection with a packet (OVS `ct_update_res`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CtUpdate {
    /// Invalid for this connection: `+inv`.
    Invalid,
    /// Valid: `+est` (and `+rpl` in the reply direction).
    Valid,
    /// The connection is over; the packet starts a new one.
    New,
    /// Valid, but the connection is still `+new` (no reply seen yet).
    ValidNew,
}

/// "Other" protocol states (OVS `conntrack-other.c`), used for UDP and any
/// protocol other than TCP and ICMP.
pub(crate) mod other {
    use super::*;
    /// First packet seen.
    pub const FIRST: u8 = 0;
    /// More packets, one direction only.
    pub const MULTIPLE: u8 = 1;
    /// Packets in both directions.
    pub const BIDIR: u8 = 2;

    /// OVS `other_conn_update`.
    pub fn update(state: &mut u8, reply: bool) -> (CtUpdate, Tm) {
        if reply && *state != BIDIR {
            *state = BIDIR;
        } else if *state == FIRST {
            *state = MULTIPLE;
        }
        let tm = match *state {
            FIRST => Tm::OtherFirst,
            MULTIPLE => Tm::OtherMultiple,
            _ => Tm::OtherBidir,
        };
        let r = if *state == BIDIR {
            CtUpdate::Valid
        } else {
            CtUpdate::ValidNew
        };
        (r, tm)
    }
}

/// ICMP query states (OVS `conntrack-icmp.c`).
pub(crate) mod icmp {
    use super::*;
    /// Request seen.
    pub const FIRST: u8 = 0;
    /// Reply seen.
    pub const REPLY: u8 = 1;

    /// OVS `icmp_conn_update`.
    pub fn update(state: &mut u8, reply: bool) -> (CtUpdate, Tm) {
        let mut r = CtUpdate::Valid;
        if reply && *state == FIRST {
            *state = REPLY;
        } else if *state == FIRST {
            r = CtUpdate::ValidNew;
        }
        let tm = if *state == FIRST {
            Tm::IcmpFirst
        } else {
            Tm::IcmpReply
        };
        (r, tm)
    }

    /// May an ICMP packet of type `ty` create a connection
    /// (OVS `icmp4_valid_new`: echo, info and timestamp requests)?
    pub fn valid_new(ty: u8) -> bool {
        matches!(ty, 8 | 13 | 15)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_is_new_until_a_reply_then_bidirectional() {
        let mut s = other::FIRST;
        assert_eq!(
            other::update(&mut s, false),
            (CtUpdate::ValidNew, Tm::OtherMultiple)
        );
        assert_eq!(
            other::update(&mut s, true),
            (CtUpdate::Valid, Tm::OtherBidir)
        );
        assert_eq!(
            other::update(&mut s, false),
            (CtUpdate::Valid, Tm::OtherBidir)
        );
    }

    #[test]
    fn icmp_reply_establishes() {
        let mut s = icmp::FIRST;
        assert_eq!(
            icmp::update(&mut s, false),
            (CtUpdate::ValidNew, Tm::IcmpFirst)
        );
        assert_eq!(icmp::update(&mut s, true), (CtUpdate::Valid, Tm::IcmpReply));
        assert!(icmp::valid_new(8) && !icmp::valid_new(0));
    }
}
