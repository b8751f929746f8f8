//! ICMPv4 messages (RFC 792): queries (echo, timestamp, information) with
//! an identifier, and errors quoting the IPv4 header and first 8 bytes of
//! the packet that caused them.
//!
//! ```text
//!  0      1      2      4           6         8
//!  | type | code | csum | id        | seq     | data...            (query)
//!  | type | code | csum | unused / mtu / ptr | quoted IPv4 header + 8 bytes (error)
//! ```

use super::{WireError, be16, be32, checksum, ipv4::Ipv4Packet, set_be16, set_be32};

/// Byte offsets of the ICMP header fields.
pub mod field {
    /// Type.
    pub const TYPE: usize = 0;
    /// Code.
    pub const CODE: usize = 1;
    /// Checksum (over the whole ICMP message, no pseudo-header).
    pub const CHECKSUM: usize = 2;
    /// Query identifier.
    pub const IDENT: usize = 4;
    /// Query sequence number.
    pub const SEQ: usize = 6;
    /// The 4 bytes after the checksum, whatever the type.
    pub const REST: usize = 4;
    /// Start of the quoted packet of an error (or the data of a query).
    pub const DATA: usize = 8;
}

/// Header length, as OVS's `ICMP_HEADER_LEN` (type, code, checksum and the
/// 4 type-specific bytes).
pub const HEADER_LEN: usize = 8;
/// Bytes of the offending packet's L4 header an error must quote (RFC 792).
pub const ERROR_L4_LEN: usize = 8;

/// ICMP types.
pub mod ty {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (error).
    pub const DEST_UNREACH: u8 = 3;
    /// Source quench (error).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect (error).
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (error).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem (error).
    pub const PARAM_PROBLEM: u8 = 12;
    /// Timestamp request.
    pub const TIMESTAMP: u8 = 13;
    /// Timestamp reply.
    pub const TIMESTAMP_REPLY: u8 = 14;
    /// Information request.
    pub const INFO_REQUEST: u8 = 15;
    /// Information reply.
    pub const INFO_REPLY: u8 = 16;
}

/// Whether `t` is an error type that quotes an inner packet (3, 4, 5, 11,
/// 12): the set OVS's conntrack treats as related.
#[inline]
pub fn is_error(t: u8) -> bool {
    matches!(
        t,
        ty::DEST_UNREACH | ty::SOURCE_QUENCH | ty::REDIRECT | ty::TIME_EXCEEDED | ty::PARAM_PROBLEM
    )
}

/// Whether `t` is a query/reply type with an identifier (0, 8, 13-16):
/// OVS's `packet_is_icmpv4_info_message`.
#[inline]
pub fn is_query(t: u8) -> bool {
    matches!(
        t,
        ty::ECHO_REPLY
            | ty::ECHO_REQUEST
            | ty::TIMESTAMP
            | ty::TIMESTAMP_REPLY
            | ty::INFO_REQUEST
            | ty::INFO_REPLY
    )
}

/// A view of an ICMP message. The constructor checks for 8 bytes; no
/// accessor can panic after that. The buffer should end where the IP
/// payload ends, since the checksum covers all of it.
#[derive(Debug, Clone, Copy)]
pub struct IcmpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wrap `buf`, checking the 8-byte header fits.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(IcmpPacket { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Type.
    pub fn msg_type(&self) -> u8 {
        self.b()[field::TYPE]
    }
    /// Code.
    pub fn code(&self) -> u8 {
        self.b()[field::CODE]
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM)
    }
    /// Query identifier (bytes 4..6, whatever the type).
    pub fn ident(&self) -> u16 {
        be16(self.b(), field::IDENT)
    }
    /// Query sequence number (bytes 6..8).
    pub fn seq(&self) -> u16 {
        be16(self.b(), field::SEQ)
    }
    /// The 4 type-specific bytes after the checksum.
    pub fn rest(&self) -> u32 {
        be32(self.b(), field::REST)
    }
    /// Everything after the 8-byte header: query data or the quoted packet.
    pub fn data(&self) -> &[u8] {
        &self.b()[field::DATA..]
    }
    /// The quoted IPv4 header of an error, if the type is an error and the
    /// quote holds a full header (IHL >= 5).
    pub fn inner(&self) -> Option<Ipv4Packet<&[u8]>> {
        if !is_error(self.msg_type()) {
            return None;
        }
        Ipv4Packet::new_checked(self.data()).ok()
    }
    /// Whether the checksum over the whole buffer is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.b()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    /// Set the type (checksum untouched).
    pub fn set_msg_type(&mut self, v: u8) {
        self.m()[field::TYPE] = v;
    }
    /// Set the code (checksum untouched).
    pub fn set_code(&mut self, v: u8) {
        self.m()[field::CODE] = v;
    }
    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_be16(self.m(), field::CHECKSUM, v)
    }
    /// Set the identifier (checksum untouched).
    pub fn set_ident(&mut self, v: u16) {
        set_be16(self.m(), field::IDENT, v)
    }
    /// Set the sequence number (checksum untouched).
    pub fn set_seq(&mut self, v: u16) {
        set_be16(self.m(), field::SEQ, v)
    }
    /// Set the 4 type-specific bytes.
    pub fn set_rest(&mut self, v: u32) {
        set_be32(self.m(), field::REST, v)
    }
    /// Everything after the header, mutably.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.m()[field::DATA..]
    }
    /// Compute and store the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.b());
        self.set_checksum(c);
    }
}

/// An ICMP header in owned form: type, code and the 4 type-specific bytes
/// (id << 16 | seq for queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IcmpRepr {
    /// Type.
    pub msg_type: u8,
    /// Code.
    pub code: u8,
    /// Bytes 4..8.
    pub rest: u32,
}

impl IcmpRepr {
    /// Read a checked header.
    pub fn parse<T: AsRef<[u8]>>(p: &IcmpPacket<T>) -> IcmpRepr {
        IcmpRepr {
            msg_type: p.msg_type(),
            code: p.code(),
            rest: p.rest(),
        }
    }

    /// Write the header into `buf` (data must already be in place after it)
    /// and fill the checksum over the whole of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let mut p = IcmpPacket::new_checked(buf)?;
        p.set_msg_type(self.msg_type);
        p.set_code(self.code);
        p.set_rest(self.rest);
        p.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echo request id 0x1234 seq 1, data "abcd".
    const ECHO: [u8; 12] = [
        0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd',
    ];

    #[test]
    fn golden_echo() {
        let mut b = ECHO;
        IcmpRepr::parse(&IcmpPacket::new_checked(&ECHO[..]).unwrap())
            .emit(&mut b)
            .unwrap();
        // 0x0800 + 0x1234 + 0x0001 + 0x6162 + 0x6364 = 0xdefb, ~ = 0x2104
        assert_eq!(&b[2..4], &[0x21, 0x04]);
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(
            (p.msg_type(), p.code(), p.ident(), p.seq()),
            (8, 0, 0x1234, 1)
        );
        assert!(is_query(p.msg_type()) && !is_error(p.msg_type()));
        assert!(p.inner().is_none());
    }

    #[test]
    fn error_quotes_inner_header() {
        let mut b = [0u8; 8 + 20 + 8];
        b[0] = ty::DEST_UNREACH;
        b[1] = 3;
        b[8] = 0x45;
        b[8 + 9] = 17;
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        let inner = p.inner().unwrap();
        assert_eq!(inner.protocol(), 17);
        // A quote shorter than an IPv4 header has no inner view.
        let p = IcmpPacket::new_checked(&b[..27]).unwrap();
        assert!(p.inner().is_none());
        assert!(IcmpPacket::new_checked(&b[..7]).is_err());
    }
}
