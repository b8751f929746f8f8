//! IGMP messages (RFC 2236 v2 layout; v3 reports share the first 8 bytes).
//!
//! ```text
//!  0      1              2      4              8
//!  | type | max resp/code| csum | group address |
//! ```
//! OVS puts the type in `tp_src` and the second byte in `tp_dst`, as it does
//! for ICMP; flowpath's key follows.

use super::{WireError, be16, be32, checksum, set_be16, set_be32};

/// Byte offsets of the IGMP header fields.
pub mod field {
    /// Type.
    pub const TYPE: usize = 0;
    /// Max response time (v2) / code.
    pub const CODE: usize = 1;
    /// Checksum (over the whole message).
    pub const CHECKSUM: usize = 2;
    /// Group address.
    pub const GROUP: usize = 4;
}

/// Header length (OVS's `IGMP_HEADER_LEN`).
pub const HEADER_LEN: usize = 8;

/// IGMP types.
pub mod ty {
    /// Membership query.
    pub const QUERY: u8 = 0x11;
    /// v1 membership report.
    pub const V1_REPORT: u8 = 0x12;
    /// v2 membership report.
    pub const V2_REPORT: u8 = 0x16;
    /// v2 leave group.
    pub const LEAVE: u8 = 0x17;
    /// v3 membership report.
    pub const V3_REPORT: u8 = 0x22;
}

/// A view of an IGMP message. The constructor checks for 8 bytes; no
/// accessor can panic after that.
#[derive(Debug, Clone, Copy)]
pub struct IgmpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> IgmpPacket<T> {
    /// Wrap `buf`, checking the header fits.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(IgmpPacket { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Type.
    pub fn msg_type(&self) -> u8 {
        self.b()[field::TYPE]
    }
    /// Max response time / code.
    pub fn code(&self) -> u8 {
        self.b()[field::CODE]
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM)
    }
    /// Group address.
    pub fn group(&self) -> u32 {
        be32(self.b(), field::GROUP)
    }
    /// Whether the checksum over the whole buffer is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.b()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IgmpPacket<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    /// Set the type.
    pub fn set_msg_type(&mut self, v: u8) {
        self.m()[field::TYPE] = v;
    }
    /// Set the max response time / code.
    pub fn set_code(&mut self, v: u8) {
        self.m()[field::CODE] = v;
    }
    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_be16(self.m(), field::CHECKSUM, v)
    }
    /// Set the group address.
    pub fn set_group(&mut self, v: u32) {
        set_be32(self.m(), field::GROUP, v)
    }
    /// Compute and store the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.b());
        self.set_checksum(c);
    }
}

/// An IGMP header in owned form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IgmpRepr {
    /// Type.
    pub msg_type: u8,
    /// Max response time / code.
    pub code: u8,
    /// Group address.
    pub group: u32,
}

impl IgmpRepr {
    /// Read a checked header.
    pub fn parse<T: AsRef<[u8]>>(p: &IgmpPacket<T>) -> IgmpRepr {
        IgmpRepr {
            msg_type: p.msg_type(),
            code: p.code(),
            group: p.group(),
        }
    }

    /// Write the header into `buf` (anything after it must already be in
    /// place) and fill the checksum over the whole of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let mut p = IgmpPacket::new_checked(buf)?;
        p.set_msg_type(self.msg_type);
        p.set_code(self.code);
        p.set_group(self.group);
        p.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// v2 report for 239.1.1.1.
    const REPORT: [u8; 8] = [0x16, 0x00, 0xf9, 0xfc, 239, 1, 1, 1];

    #[test]
    fn golden_report() {
        let p = IgmpPacket::new_checked(&REPORT[..]).unwrap();
        assert_eq!(p.msg_type(), ty::V2_REPORT);
        assert_eq!(p.group(), 0xef01_0101);
        assert!(p.verify_checksum());
        let mut b = [0u8; 8];
        IgmpRepr::parse(&p).emit(&mut b).unwrap();
        assert_eq!(b, REPORT);
        assert!(IgmpPacket::new_checked(&REPORT[..7]).is_err());
    }
}
