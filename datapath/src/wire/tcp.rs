//! TCP headers (RFC 9293), with the window-scale option (RFC 7323).
//!
//! ```text
//!  0       2       4               8               12  13      14     16      18     20
//!  | sport | dport |      seq      |      ack      |off|  flags | win | csum | urg | options...
//! ```
//! The 16-bit word at offset 12 holds the data offset (4 bits), 3 reserved
//! bits and 9 flag bits; like OVS (`TCP_FLAGS`), flowpath keeps the low 12
//! bits as "the flags".

use super::{WireError, be16, be32, checksum, set_be16, set_be32};

/// Byte offsets of the TCP header fields.
pub mod field {
    /// Source port.
    pub const SRC_PORT: usize = 0;
    /// Destination port.
    pub const DST_PORT: usize = 2;
    /// Sequence number.
    pub const SEQ: usize = 4;
    /// Acknowledgement number.
    pub const ACK: usize = 8;
    /// Data offset (high nibble) and flags (low 12 bits) word.
    pub const OFF_FLAGS: usize = 12;
    /// Window.
    pub const WINDOW: usize = 14;
    /// Checksum.
    pub const CHECKSUM: usize = 16;
    /// Urgent pointer.
    pub const URGENT: usize = 18;
    /// First option byte.
    pub const OPTIONS: usize = 20;
}

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// FIN flag.
pub const FIN: u16 = 0x001;
/// SYN flag.
pub const SYN: u16 = 0x002;
/// RST flag.
pub const RST: u16 = 0x004;
/// PSH flag.
pub const PSH: u16 = 0x008;
/// ACK flag.
pub const ACK: u16 = 0x010;
/// URG flag.
pub const URG: u16 = 0x020;
/// ECE flag.
pub const ECE: u16 = 0x040;
/// CWR flag.
pub const CWR: u16 = 0x080;
/// NS flag (RFC 3540, historic).
pub const NS: u16 = 0x100;
/// The 12 bits OVS calls the TCP flags.
pub const FLAGS_MASK: u16 = 0x0fff;

/// Option kinds.
pub mod opt {
    /// End of option list.
    pub const EOL: u8 = 0;
    /// No-operation.
    pub const NOP: u8 = 1;
    /// Maximum segment size.
    pub const MSS: u8 = 2;
    /// Window scale.
    pub const WSCALE: u8 = 3;
}

/// Largest window-scale shift (RFC 7323 §2.3); larger values are clamped.
pub const MAX_WSCALE: u8 = 14;

/// A view of a TCP segment. The constructor checks that the buffer holds 20
/// bytes, that the data offset is at least 5 and that the whole header fits;
/// no accessor can panic after that. The buffer should end where the IP
/// payload ends, since checksums cover all of it.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wrap `buf`, checking the header fits.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = (b[field::OFF_FLAGS] >> 4) as usize * 4;
        if hl < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if b.len() < hl {
            return Err(WireError::Truncated);
        }
        Ok(TcpPacket { buf })
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
    /// Sequence number.
    pub fn seq(&self) -> u32 {
        be32(self.b(), field::SEQ)
    }
    /// Acknowledgement number.
    pub fn ack(&self) -> u32 {
        be32(self.b(), field::ACK)
    }
    /// Header length in bytes (data offset * 4).
    pub fn header_len(&self) -> usize {
        (self.b()[field::OFF_FLAGS] >> 4) as usize * 4
    }
    /// The 12 flag bits.
    pub fn flags(&self) -> u16 {
        be16(self.b(), field::OFF_FLAGS) & FLAGS_MASK
    }
    /// Window.
    pub fn window(&self) -> u16 {
        be16(self.b(), field::WINDOW)
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM)
    }
    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        be16(self.b(), field::URGENT)
    }
    /// Option bytes.
    pub fn options(&self) -> &[u8] {
        &self.b()[field::OPTIONS..self.header_len()]
    }
    /// Payload (after the options, to the end of the buffer).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }

    /// The window-scale option, clamped to [`MAX_WSCALE`]; the last one wins
    /// if repeated. Walks the options exactly as OVS's `tcp_get_wscale`:
    /// stops at EOL, skips NOPs, treats option lengths below 2 as 2, and
    /// does not look at the final two option bytes.
    pub fn window_scale(&self) -> Option<u8> {
        let o = self.options();
        let mut i = 0;
        let mut ws = None;
        while o.len() - i >= 3 {
            match o[i] {
                opt::EOL => break,
                opt::NOP => i += 1,
                kind => {
                    if kind == opt::WSCALE {
                        ws = Some(o[i + 2].min(MAX_WSCALE));
                    }
                    let len = (o[i + 1] as usize).max(2);
                    if len > o.len() - i {
                        break;
                    }
                    i += len;
                }
            }
        }
        ws
    }

    /// Whether the checksum is correct for a segment carried from `src` to
    /// `dst` (the whole buffer is the segment).
    pub fn verify_checksum(&self, src: u32, dst: u32) -> bool {
        let b = self.b();
        let ph = checksum::pseudo_header_v4(src, dst, crate::key::ip_proto::TCP, b.len() as u16);
        checksum::fold(checksum::sum(ph, b)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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
    /// Set the sequence number.
    pub fn set_seq(&mut self, v: u32) {
        set_be32(self.m(), field::SEQ, v)
    }
    /// Set the acknowledgement number.
    pub fn set_ack(&mut self, v: u32) {
        set_be32(self.m(), field::ACK, v)
    }
    /// Set the 12 flag bits, keeping the data offset.
    pub fn set_flags(&mut self, v: u16) {
        let w = be16(self.b(), field::OFF_FLAGS) & !FLAGS_MASK;
        set_be16(self.m(), field::OFF_FLAGS, w | (v & FLAGS_MASK))
    }
    /// Set the window.
    pub fn set_window(&mut self, v: u16) {
        set_be16(self.m(), field::WINDOW, v)
    }
    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_be16(self.m(), field::CHECKSUM, v)
    }
    /// Set the urgent pointer.
    pub fn set_urgent(&mut self, v: u16) {
        set_be16(self.m(), field::URGENT, v)
    }
    /// Compute and store the checksum over the whole buffer (for building
    /// packets; rewrites use incremental updates).
    pub fn fill_checksum(&mut self, src: u32, dst: u32) {
        self.set_checksum(0);
        let b = self.b();
        let ph = checksum::pseudo_header_v4(src, dst, crate::key::ip_proto::TCP, b.len() as u16);
        let c = checksum::finish(checksum::sum(ph, b));
        self.set_checksum(c);
    }
}

/// A TCP header in owned form (options: window scale only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags (12 bits).
    pub flags: u16,
    /// Window.
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Window-scale option (emitted as NOP + 3-byte option).
    pub wscale: Option<u8>,
}

impl TcpRepr {
    /// Read a checked header.
    pub fn parse<T: AsRef<[u8]>>(p: &TcpPacket<T>) -> TcpRepr {
        TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq(),
            ack: p.ack(),
            flags: p.flags(),
            window: p.window(),
            urgent: p.urgent(),
            wscale: p.window_scale(),
        }
    }

    /// Header length when emitted.
    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN + if self.wscale.is_some() { 4 } else { 0 }
    }

    /// Write the header into the start of `buf`, with a zero checksum (fill
    /// it once the payload is in place, see [`TcpPacket::fill_checksum`]).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let hl = self.header_len();
        if buf.len() < hl {
            return Err(WireError::Truncated);
        }
        set_be16(
            buf,
            field::OFF_FLAGS,
            ((hl as u16 / 4) << 12) | (self.flags & FLAGS_MASK),
        );
        if let Some(ws) = self.wscale {
            buf[field::OPTIONS..field::OPTIONS + 4].copy_from_slice(&[
                opt::NOP,
                opt::WSCALE,
                3,
                ws,
            ]);
        }
        let mut p = TcpPacket { buf };
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq(self.seq);
        p.set_ack(self.ack);
        p.set_window(self.window);
        p.set_checksum(0);
        p.set_urgent(self.urgent);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SYN 10.0.0.1:12345 -> 10.0.0.2:80, seq 1, win 65535, options
    /// MSS 1460, NOP, wscale 7, with a correct checksum.
    const SYN_SEG: [u8; 28] = [
        0x30, 0x39, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x70, 0x02, 0xff,
        0xff, 0x3f, 0x8c, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x07,
    ];
    const SRC: u32 = 0x0a00_0001;
    const DST: u32 = 0x0a00_0002;

    #[test]
    fn golden_syn() {
        let p = TcpPacket::new_checked(&SYN_SEG[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (12345, 80));
        assert_eq!(p.seq(), 1);
        assert_eq!(p.flags(), SYN);
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.window_scale(), Some(7));
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, DST + 1));
        let mut b = SYN_SEG;
        let mut q = TcpPacket::new_checked(&mut b[..]).unwrap();
        q.set_checksum(0x1234);
        q.fill_checksum(SRC, DST);
        assert_eq!(b, SYN_SEG);
    }

    #[test]
    fn wscale_walk_like_ovs() {
        let mk = |opts: &[u8]| {
            let mut b = vec![0u8; 20 + opts.len()];
            b[12] = (((20 + opts.len()) / 4) as u8) << 4;
            b[20..].copy_from_slice(opts);
            b
        };
        // Clamped to 14.
        let b = mk(&[3, 3, 20, 0]);
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap().window_scale(),
            Some(14)
        );
        // EOL stops the walk.
        let b = mk(&[0, 3, 3, 7]);
        assert_eq!(TcpPacket::new_checked(&b[..]).unwrap().window_scale(), None);
        // Zero-length option counts as 2 and the walk goes on.
        let b = mk(&[9, 0, 3, 3, 5, 0, 0, 0]);
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap().window_scale(),
            Some(5)
        );
        // No options.
        let b = mk(&[]);
        assert_eq!(TcpPacket::new_checked(&b[..]).unwrap().window_scale(), None);
    }

    #[test]
    fn offset_checks() {
        let mut b = SYN_SEG;
        b[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        b[12] = 0x80; // 32 bytes of header in a 28-byte buffer
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );
        assert!(TcpPacket::new_checked(&SYN_SEG[..19]).is_err());
    }

    #[test]
    fn repr_roundtrip() {
        let r = TcpRepr::parse(&TcpPacket::new_checked(&SYN_SEG[..]).unwrap());
        let mut b = [0u8; 24];
        r.emit(&mut b).unwrap();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(TcpRepr::parse(&p), r);
    }
}
