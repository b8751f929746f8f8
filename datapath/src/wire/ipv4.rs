//! IPv4 headers (RFC 791), with options and fragments.
//!
//! ```text
//!  0        1        2        3
//!  |ver|ihl |  tos   |   total length  |
//!  |   identification |flg| frag offset |
//!  |  ttl   | proto  |    checksum     |
//!  |           source address           |
//!  |         destination address        |
//!  |     options (ihl > 5) ...          |
//! ```

use super::{WireError, be16, be32, checksum, set_be16, set_be32};

/// Byte offsets of the IPv4 header fields.
pub mod field {
    /// Version (high nibble) and IHL (low nibble, 32-bit words).
    pub const VER_IHL: usize = 0;
    /// TOS byte (DSCP << 2 | ECN).
    pub const TOS: usize = 1;
    /// Total length.
    pub const LENGTH: usize = 2;
    /// Identification.
    pub const IDENT: usize = 4;
    /// Flags (3 bits) and fragment offset (13 bits, 8-byte units).
    pub const FLG_OFF: usize = 6;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: usize = 10;
    /// Source address.
    pub const SRC: usize = 12;
    /// Destination address.
    pub const DST: usize = 16;
    /// First option byte.
    pub const OPTIONS: usize = 20;
}

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Don't-fragment flag in the flags/offset word.
pub const FLAG_DF: u16 = 0x4000;
/// More-fragments flag in the flags/offset word.
pub const FLAG_MF: u16 = 0x2000;
/// Fragment offset mask in the flags/offset word.
pub const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 header and what follows. The constructor checks that
/// the buffer holds at least 20 bytes, that IHL >= 5 and that the whole
/// header (options included) fits; no accessor can panic after that.
///
/// It does not check the version, nor the total length against the buffer:
/// a header quoted inside an ICMP error describes a packet longer than the
/// quote, and OVS's conntrack parses such headers without a version check.
/// [`crate::extract`] applies the stricter outer-packet checks.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wrap `buf`, checking the header fits.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = ((b[field::VER_IHL] & 0x0f) as usize) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if b.len() < hl {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4Packet { buf })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Version nibble.
    pub fn version(&self) -> u8 {
        self.b()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL * 4, at least 20).
    pub fn header_len(&self) -> usize {
        ((self.b()[field::VER_IHL] & 0x0f) as usize) * 4
    }
    /// The TOS byte.
    pub fn tos(&self) -> u8 {
        self.b()[field::TOS]
    }
    /// Total length field.
    pub fn total_len(&self) -> u16 {
        be16(self.b(), field::LENGTH)
    }
    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.b(), field::IDENT)
    }
    /// The whole flags/fragment-offset word.
    pub fn flags_frag(&self) -> u16 {
        be16(self.b(), field::FLG_OFF)
    }
    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }
    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }
    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        self.flags_frag() & OFFSET_MASK
    }
    /// Whether this is a fragment (MF set or offset non-zero), OVS's
    /// `IP_IS_FRAGMENT`.
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | OFFSET_MASK) != 0
    }
    /// Whether this is a later fragment (offset non-zero): no L4 header.
    pub fn is_later_fragment(&self) -> bool {
        self.frag_offset() != 0
    }
    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }
    /// Protocol.
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }
    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM)
    }
    /// Source address.
    pub fn src(&self) -> u32 {
        be32(self.b(), field::SRC)
    }
    /// Destination address.
    pub fn dst(&self) -> u32 {
        be32(self.b(), field::DST)
    }
    /// Option bytes (empty when IHL is 5).
    pub fn options(&self) -> &[u8] {
        &self.b()[field::OPTIONS..self.header_len()]
    }
    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.b()[..self.header_len()]) == 0
    }
    /// End of the IP packet within the buffer: the total length, clamped to
    /// `header_len()..=buf.len()`.
    pub fn payload_end(&self) -> usize {
        (self.total_len() as usize).clamp(self.header_len(), self.b().len())
    }
    /// The payload: after the header up to [`Self::payload_end`].
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.payload_end()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    /// Set version 4 and the header length in bytes (multiple of 4, 20..=60).
    pub fn set_version_and_header_len(&mut self, hl: usize) {
        self.m()[field::VER_IHL] = 0x40 | ((hl / 4) as u8 & 0x0f);
    }
    /// Set the TOS byte.
    pub fn set_tos(&mut self, v: u8) {
        self.m()[field::TOS] = v;
    }
    /// Set the total length.
    pub fn set_total_len(&mut self, v: u16) {
        set_be16(self.m(), field::LENGTH, v)
    }
    /// Set the identification.
    pub fn set_ident(&mut self, v: u16) {
        set_be16(self.m(), field::IDENT, v)
    }
    /// Set the whole flags/fragment-offset word.
    pub fn set_flags_frag(&mut self, v: u16) {
        set_be16(self.m(), field::FLG_OFF, v)
    }
    /// Set the TTL.
    pub fn set_ttl(&mut self, v: u8) {
        self.m()[field::TTL] = v;
    }
    /// Set the protocol.
    pub fn set_protocol(&mut self, v: u8) {
        self.m()[field::PROTOCOL] = v;
    }
    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_be16(self.m(), field::CHECKSUM, v)
    }
    /// Set the source address.
    pub fn set_src(&mut self, v: u32) {
        set_be32(self.m(), field::SRC, v)
    }
    /// Set the destination address.
    pub fn set_dst(&mut self, v: u32) {
        set_be32(self.m(), field::DST, v)
    }
    /// Option bytes, mutably.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.m()[field::OPTIONS..hl]
    }
    /// Compute and store the header checksum (full computation: for
    /// building packets, never for rewriting them).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.b()[..hl]);
        self.set_checksum(c);
    }
    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (s, e) = (self.header_len(), self.payload_end());
        &mut self.m()[s..e]
    }
}

/// An IPv4 header without options, in owned form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Protocol.
    pub protocol: u8,
    /// TOS byte.
    pub tos: u8,
    /// TTL.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// Flags and fragment offset word (DF/MF/offset).
    pub flags_frag: u16,
    /// Payload length (total length minus header length).
    pub payload_len: u16,
}

impl Ipv4Repr {
    /// Read a checked header (options are skipped, not represented).
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Ipv4Repr {
        Ipv4Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            tos: p.tos(),
            ttl: p.ttl(),
            ident: p.ident(),
            flags_frag: p.flags_frag(),
            payload_len: p.total_len().saturating_sub(p.header_len() as u16),
        }
    }

    /// Write a 20-byte header with a correct checksum into `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        if buf.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        buf[field::VER_IHL] = 0x45;
        let mut p = Ipv4Packet { buf };
        p.set_tos(self.tos);
        p.set_total_len(self.payload_len.wrapping_add(MIN_HEADER_LEN as u16));
        p.set_ident(self.ident);
        p.set_flags_frag(self.flags_frag);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src(self.src);
        p.set_dst(self.dst);
        p.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UDP 192.168.0.1 -> 192.168.0.199, DF, ttl 64, total 0x73.
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn golden_header() {
        let p = Ipv4Packet::new_checked(&HDR[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 0x73);
        assert!(p.dont_frag() && !p.is_fragment());
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.src(), 0xc0a8_0001);
        assert_eq!(p.dst(), 0xc0a8_00c7);
        assert!(p.verify_checksum());
        // Total length beyond the buffer: the payload is clamped, not a panic.
        assert_eq!(p.payload(), &[] as &[u8]);
        let r = Ipv4Repr::parse(&p);
        let mut out = [0u8; 20];
        r.emit(&mut out).unwrap();
        assert_eq!(out, HDR);
    }

    #[test]
    fn ihl_checks() {
        let mut h = HDR;
        h[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&h[..]).unwrap_err(),
            WireError::Malformed
        );
        h[0] = 0x46; // 24-byte header in a 20-byte buffer
        assert_eq!(
            Ipv4Packet::new_checked(&h[..]).unwrap_err(),
            WireError::Truncated
        );
        assert!(Ipv4Packet::new_checked(&HDR[..19]).is_err());
    }

    #[test]
    fn fragments() {
        let mut h = HDR;
        h[6] = 0x20; // MF, offset 0: first fragment
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert!(p.is_fragment() && !p.is_later_fragment());
        h[6] = 0x00;
        h[7] = 0x10; // offset 16 * 8
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert!(p.is_fragment() && p.is_later_fragment());
        assert_eq!(p.frag_offset(), 16);
    }
}
