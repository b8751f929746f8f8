//! ARP for Ethernet/IPv4 (RFC 826), the 28-byte body after the Ethernet
//! header.
//!
//! ```text
//!  0     2     4   5   6    8     14    18    24    28
//!  | hrd | pro |hln|pln| op | sha | spa | tha | tpa |
//! ```

use super::{WireError, be16, be32, ethernet::Mac, set_be16, set_be32};

/// Byte offsets of the ARP fields.
pub mod field {
    use core::ops::Range;
    /// Hardware type (1 = Ethernet).
    pub const HRD: usize = 0;
    /// Protocol type (0x0800).
    pub const PRO: usize = 2;
    /// Hardware address length (6).
    pub const HLN: usize = 4;
    /// Protocol address length (4).
    pub const PLN: usize = 5;
    /// Opcode.
    pub const OP: usize = 6;
    /// Sender hardware address.
    pub const SHA: Range<usize> = 8..14;
    /// Sender protocol address.
    pub const SPA: usize = 14;
    /// Target hardware address.
    pub const THA: Range<usize> = 18..24;
    /// Target protocol address.
    pub const TPA: usize = 24;
}

/// Length of an Ethernet/IPv4 ARP body.
pub const LEN: usize = 28;
/// ARP request opcode.
pub const OP_REQUEST: u16 = 1;
/// ARP reply opcode.
pub const OP_REPLY: u16 = 2;
/// RARP ethertype; OVS parses RARP bodies exactly like ARP.
pub const ETHERTYPE_RARP: u16 = 0x8035;

/// A view of an ARP body. The constructor checks for 28 bytes; no accessor
/// can panic after that. It does not check the hardware/protocol types: see
/// [`ArpPacket::is_eth_ipv4`].
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wrap `buf`, which must hold at least [`LEN`] bytes.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < LEN {
            return Err(WireError::Truncated);
        }
        Ok(ArpPacket { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Hardware type.
    pub fn hrd(&self) -> u16 {
        be16(self.b(), field::HRD)
    }
    /// Protocol type.
    pub fn pro(&self) -> u16 {
        be16(self.b(), field::PRO)
    }
    /// Hardware address length.
    pub fn hln(&self) -> u8 {
        self.b()[field::HLN]
    }
    /// Protocol address length.
    pub fn pln(&self) -> u8 {
        self.b()[field::PLN]
    }
    /// Whether this is Ethernet/IPv4 ARP (hrd 1, pro 0x0800, hln 6, pln 4),
    /// the only kind OVS extracts ARP fields from.
    pub fn is_eth_ipv4(&self) -> bool {
        self.hrd() == 1
            && self.pro() == crate::key::eth_type::IPV4
            && self.hln() == 6
            && self.pln() == 4
    }
    /// Opcode.
    pub fn op(&self) -> u16 {
        be16(self.b(), field::OP)
    }
    /// Sender hardware address.
    pub fn sha(&self) -> Mac {
        Mac::read(&self.b()[field::SHA])
    }
    /// Sender protocol address.
    pub fn spa(&self) -> u32 {
        be32(self.b(), field::SPA)
    }
    /// Target hardware address.
    pub fn tha(&self) -> Mac {
        Mac::read(&self.b()[field::THA])
    }
    /// Target protocol address.
    pub fn tpa(&self) -> u32 {
        be32(self.b(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    /// Set the opcode.
    pub fn set_op(&mut self, v: u16) {
        set_be16(self.m(), field::OP, v)
    }
    /// Set the sender hardware address.
    pub fn set_sha(&mut self, v: Mac) {
        self.m()[field::SHA].copy_from_slice(&v.0)
    }
    /// Set the sender protocol address.
    pub fn set_spa(&mut self, v: u32) {
        set_be32(self.m(), field::SPA, v)
    }
    /// Set the target hardware address.
    pub fn set_tha(&mut self, v: Mac) {
        self.m()[field::THA].copy_from_slice(&v.0)
    }
    /// Set the target protocol address.
    pub fn set_tpa(&mut self, v: u32) {
        set_be32(self.m(), field::TPA, v)
    }
}

/// An Ethernet/IPv4 ARP body in owned form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    /// Opcode.
    pub op: u16,
    /// Sender hardware address.
    pub sha: Mac,
    /// Sender protocol address.
    pub spa: u32,
    /// Target hardware address.
    pub tha: Mac,
    /// Target protocol address.
    pub tpa: u32,
}

impl ArpRepr {
    /// Parse an Ethernet/IPv4 ARP body; `Malformed` for other kinds.
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Result<ArpRepr, WireError> {
        if !p.is_eth_ipv4() {
            return Err(WireError::Malformed);
        }
        Ok(ArpRepr {
            op: p.op(),
            sha: p.sha(),
            spa: p.spa(),
            tha: p.tha(),
            tpa: p.tpa(),
        })
    }

    /// Write the 28-byte body into the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        if buf.len() < LEN {
            return Err(WireError::Truncated);
        }
        set_be16(buf, field::HRD, 1);
        set_be16(buf, field::PRO, crate::key::eth_type::IPV4);
        buf[field::HLN] = 6;
        buf[field::PLN] = 4;
        let mut p = ArpPacket { buf };
        p.set_op(self.op);
        p.set_sha(self.sha);
        p.set_spa(self.spa);
        p.set_tha(self.tha);
        p.set_tpa(self.tpa);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// who-has 10.0.0.2 tell 10.0.0.1, from 02:00:00:00:00:01.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // hrd pro hln pln op
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, // sha spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2, // tha tpa
    ];

    #[test]
    fn golden_request_roundtrip() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        let r = ArpRepr::parse(&p).unwrap();
        assert_eq!(r.op, OP_REQUEST);
        assert_eq!(r.spa, 0x0a00_0001);
        assert_eq!(r.tpa, 0x0a00_0002);
        assert_eq!(r.sha, Mac([2, 0, 0, 0, 0, 1]));
        let mut out = [0u8; 28];
        r.emit(&mut out).unwrap();
        assert_eq!(out, REQUEST);
    }

    #[test]
    fn short_and_foreign() {
        assert!(ArpPacket::new_checked(&REQUEST[..27]).is_err());
        let mut b = REQUEST;
        b[5] = 16; // IPv6-sized protocol addresses
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert!(!p.is_eth_ipv4());
        assert_eq!(ArpRepr::parse(&p).unwrap_err(), WireError::Malformed);
    }
}
