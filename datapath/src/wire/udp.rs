//! UDP headers (RFC 768).
//!
//! ```text
//!  0       2       4       6       8
//!  | sport | dport |  len  | csum  | payload...
//! ```
//! A checksum field of zero means "no checksum" over IPv4, so a computed
//! checksum of zero is sent as `0xffff` (RFC 768), and rewrites leave a zero
//! checksum zero.

use super::{WireError, be16, checksum, set_be16};

/// Byte offsets of the UDP header fields.
pub mod field {
    /// Source port.
    pub const SRC_PORT: usize = 0;
    /// Destination port.
    pub const DST_PORT: usize = 2;
    /// Length (header + payload).
    pub const LENGTH: usize = 4;
    /// Checksum.
    pub const CHECKSUM: usize = 6;
}

/// Header length.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram. The constructor checks for 8 bytes; no
/// accessor can panic after that. The length field is not checked against
/// the buffer (see [`UdpPacket::length_ok`]).
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wrap `buf`, checking the header fits.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(UdpPacket { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.b(), field::SRC_PORT)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.b(), field::DST_PORT)
    }
    /// Length field.
    pub fn length(&self) -> u16 {
        be16(self.b(), field::LENGTH)
    }
    /// Checksum field (0 = none).
    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM)
    }
    /// Whether the length field is at least 8 and within the buffer, the
    /// check OVS's conntrack makes.
    pub fn length_ok(&self) -> bool {
        let l = self.length() as usize;
        l >= HEADER_LEN && l <= self.b().len()
    }
    /// Payload: after the header to the end of the buffer.
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..]
    }
    /// Whether the checksum is correct (or absent) for a datagram carried
    /// from `src` to `dst`. Like OVS, the sum covers the whole buffer (the
    /// IP payload), not just `length` bytes.
    pub fn verify_checksum(&self, src: u32, dst: u32) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let b = self.b();
        let ph = checksum::pseudo_header_v4(src, dst, crate::key::ip_proto::UDP, b.len() as u16);
        checksum::fold(checksum::sum(ph, b)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    /// Set the source port (checksum untouched).
    pub fn set_src_port(&mut self, v: u16) {
        set_be16(self.m(), field::SRC_PORT, v)
    }
    /// Set the destination port (checksum untouched).
    pub fn set_dst_port(&mut self, v: u16) {
        set_be16(self.m(), field::DST_PORT, v)
    }
    /// Set the length field.
    pub fn set_length(&mut self, v: u16) {
        set_be16(self.m(), field::LENGTH, v)
    }
    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_be16(self.m(), field::CHECKSUM, v)
    }
    /// Compute and store the checksum over the whole buffer; a result of 0
    /// is stored as `0xffff` (RFC 768).
    pub fn fill_checksum(&mut self, src: u32, dst: u32) {
        self.set_checksum(0);
        let b = self.b();
        let ph = checksum::pseudo_header_v4(src, dst, crate::key::ip_proto::UDP, b.len() as u16);
        let c = checksum::udp_wire(checksum::finish(checksum::sum(ph, b)));
        self.set_checksum(c);
    }
}

/// A UDP header in owned form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// Read a checked header.
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>) -> UdpRepr {
        UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
        }
    }

    /// Write the header into the start of `buf` with the length set to the
    /// whole of `buf` and a zero checksum.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let len = buf.len();
        let mut p = UdpPacket::new_checked(buf)?;
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_length(len as u16);
        p.set_checksum(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DNS query header 10.0.0.1:5353 -> 10.0.0.2:53 with 4 payload bytes.
    const DGRAM: [u8; 12] = [
        0x14, 0xe9, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef,
    ];
    const SRC: u32 = 0x0a00_0001;
    const DST: u32 = 0x0a00_0002;

    #[test]
    fn golden_and_fill() {
        let mut b = DGRAM;
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.length()), (5353, 53, 12));
        assert!(p.length_ok());
        assert!(p.verify_checksum(SRC, DST), "zero checksum means none");
        p.fill_checksum(SRC, DST);
        assert_ne!(p.checksum(), 0);
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, DST ^ 1));
    }

    #[test]
    fn computed_zero_goes_out_as_ffff() {
        // Choose a payload word that makes the computed checksum zero.
        let mut b = [0u8; 10];
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.set_length(10);
        let ph = checksum::pseudo_header_v4(SRC, DST, 17, 10);
        let s = checksum::fold(checksum::sum(ph, &b));
        let fix = 0xffff - s; // brings the folded sum to 0xffff
        b[8..10].copy_from_slice(&fix.to_be_bytes());
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(SRC, DST);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn short() {
        assert!(UdpPacket::new_checked(&DGRAM[..7]).is_err());
        let mut b = DGRAM;
        b[5] = 13;
        assert!(!UdpPacket::new_checked(&b[..]).unwrap().length_ok());
    }
}
