//! Ethernet II frames with at most one 802.1Q (or 802.1ad) tag, and the
//! [`Mac`] address type.
//!
//! ```text
//!  0      6      12          14 (untagged)
//!  | dst  | src  | ethertype | payload...
//!  0      6      12     14   16          18 (tagged)
//!  | dst  | src  | TPID | TCI| ethertype | payload...
//! ```

use super::{WireError, be16, set_be16};

/// Byte offsets of the Ethernet header fields.
pub mod field {
    use core::ops::Range;
    /// Destination MAC.
    pub const DST: Range<usize> = 0..6;
    /// Source MAC.
    pub const SRC: Range<usize> = 6..12;
    /// Ethertype (or TPID when tagged).
    pub const ETHERTYPE: usize = 12;
    /// VLAN TCI (tagged frames only).
    pub const TCI: usize = 14;
    /// Inner ethertype (tagged frames only).
    pub const INNER_ETHERTYPE: usize = 16;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// 802.1ad service tag TPID, which OVS parses like 802.1Q.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Smallest ethertype value; smaller values are 802.3 lengths (LLC follows).
pub const ETHERTYPE_MIN: u16 = 0x0600;

/// Whether `ty` is a VLAN TPID (802.1Q or 802.1ad), as OVS's `eth_type_vlan`.
#[inline]
pub fn is_vlan_tpid(ty: u16) -> bool {
    ty == crate::key::eth_type::VLAN || ty == ETHERTYPE_QINQ
}

/// A MAC address, first octet first.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// `00:00:00:00:00:00`.
    pub const ZERO: Mac = Mac([0; 6]);

    /// The address as the flow key holds it: first octet in bits 40..48.
    #[inline]
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// From the flow-key form (bits above 48 ignored).
    #[inline]
    pub fn from_u64(v: u64) -> Mac {
        let b = v.to_be_bytes();
        Mac([b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// Read a MAC from the first 6 bytes of `b` (which must hold 6 bytes).
    #[inline]
    pub(crate) fn read(b: &[u8]) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&b[..6]);
        Mac(m)
    }
}

impl From<[u8; 6]> for Mac {
    fn from(b: [u8; 6]) -> Mac {
        Mac(b)
    }
}

impl From<u64> for Mac {
    fn from(v: u64) -> Mac {
        Mac::from_u64(v)
    }
}

impl core::fmt::Debug for Mac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self, f)
    }
}

impl core::fmt::Display for Mac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl core::str::FromStr for Mac {
    type Err = WireError;
    /// Parse `aa:bb:cc:dd:ee:ff`.
    fn from_str(s: &str) -> Result<Mac, WireError> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for o in &mut out {
            let p = parts.next().ok_or(WireError::Malformed)?;
            if p.is_empty() || p.len() > 2 {
                return Err(WireError::Malformed);
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| WireError::Malformed)?;
        }
        if parts.next().is_some() {
            return Err(WireError::Malformed);
        }
        Ok(Mac(out))
    }
}

/// A view of an Ethernet frame. The constructor checks for a full header,
/// including the VLAN tag and inner ethertype when the outer ethertype is a
/// VLAN TPID; no accessor can panic after that.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T> {
    buf: T,
    tagged: bool,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wrap `buf`, checking the header (and one VLAN tag, if present) fits.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let tagged = is_vlan_tpid(be16(b, field::ETHERTYPE));
        if tagged && b.len() < HEADER_LEN + VLAN_TAG_LEN {
            return Err(WireError::Truncated);
        }
        Ok(EthernetFrame { buf, tagged })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Mac {
        Mac::read(&self.buf.as_ref()[field::DST])
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> Mac {
        Mac::read(&self.buf.as_ref()[field::SRC])
    }

    /// Whether the frame carries a VLAN tag.
    #[inline]
    pub fn is_tagged(&self) -> bool {
        self.tagged
    }

    /// The TCI of the tag as on the wire (no CFI-means-present convention).
    #[inline]
    pub fn tci(&self) -> Option<u16> {
        self.tagged.then(|| be16(self.buf.as_ref(), field::TCI))
    }

    /// The outer ethertype field (the TPID when tagged).
    #[inline]
    pub fn outer_ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), field::ETHERTYPE)
    }

    /// The ethertype after the tag, if any.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        if self.tagged {
            be16(self.buf.as_ref(), field::INNER_ETHERTYPE)
        } else {
            self.outer_ethertype()
        }
    }

    /// Header length: 14, or 18 when tagged.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.tagged {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Set the destination address.
    #[inline]
    pub fn set_dst(&mut self, m: Mac) {
        self.buf.as_mut()[field::DST].copy_from_slice(&m.0);
    }

    /// Set the source address.
    #[inline]
    pub fn set_src(&mut self, m: Mac) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&m.0);
    }

    /// Set the TCI of an existing tag; no-op on an untagged frame.
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        if self.tagged {
            set_be16(self.buf.as_mut(), field::TCI, tci);
        }
    }

    /// Set the (inner, when tagged) ethertype.
    #[inline]
    pub fn set_ethertype(&mut self, ty: u16) {
        let off = if self.tagged {
            field::INNER_ETHERTYPE
        } else {
            field::ETHERTYPE
        };
        set_be16(self.buf.as_mut(), off, ty);
    }

    /// Everything after the header, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buf.as_mut()[h..]
    }
}

/// An Ethernet header in owned form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Destination.
    pub dst: Mac,
    /// Source.
    pub src: Mac,
    /// 802.1Q TCI as on the wire, when tagged (TPID 0x8100 on emit).
    pub vlan: Option<u16>,
    /// Ethertype (inner, when tagged).
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Read the header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(f: &EthernetFrame<T>) -> EthernetRepr {
        EthernetRepr {
            dst: f.dst(),
            src: f.src(),
            vlan: f.tci(),
            ethertype: f.ethertype(),
        }
    }

    /// Header length when emitted.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + if self.vlan.is_some() { VLAN_TAG_LEN } else { 0 }
    }

    /// Write the header into the first [`Self::header_len`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        if buf.len() < self.header_len() {
            return Err(WireError::Truncated);
        }
        buf[field::DST].copy_from_slice(&self.dst.0);
        buf[field::SRC].copy_from_slice(&self.src.0);
        match self.vlan {
            Some(tci) => {
                set_be16(buf, field::ETHERTYPE, crate::key::eth_type::VLAN);
                set_be16(buf, field::TCI, tci);
                set_be16(buf, field::INNER_ETHERTYPE, self.ethertype);
            }
            None => set_be16(buf, field::ETHERTYPE, self.ethertype),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGGED: [u8; 20] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x81, 0x00, 0x20, 0x64, // TPID, PCP 1 VID 100
        0x08, 0x06, // ARP
        0xaa, 0xbb,
    ];

    #[test]
    fn golden_tagged() {
        let f = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(f.dst(), Mac::BROADCAST);
        assert_eq!(f.src().to_string(), "02:00:00:00:00:01");
        assert_eq!(f.tci(), Some(0x2064));
        assert_eq!(f.ethertype(), 0x0806);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
        let r = EthernetRepr::parse(&f);
        let mut out = [0u8; 18];
        r.emit(&mut out).unwrap();
        assert_eq!(out, TAGGED[..18]);
    }

    #[test]
    fn truncated_tag_and_header() {
        assert_eq!(
            EthernetFrame::new_checked(&TAGGED[..13]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            EthernetFrame::new_checked(&TAGGED[..17]).unwrap_err(),
            WireError::Truncated
        );
        assert!(EthernetFrame::new_checked(&TAGGED[..18]).is_ok());
    }

    #[test]
    fn mac_text_and_key_form() {
        let m: Mac = "0a:1B:2c:3d:4e:5f".parse().unwrap();
        assert_eq!(m.to_u64(), 0x0a1b_2c3d_4e5f);
        assert_eq!(Mac::from_u64(0xffff_0a1b_2c3d_4e5f), m);
        assert!("0a:1b:2c:3d:4e".parse::<Mac>().is_err());
        assert!("0a:1b:2c:3d:4e:5f:00".parse::<Mac>().is_err());
    }
}
