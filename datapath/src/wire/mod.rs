//! Zero-copy packet views and small owned `Repr` types, smoltcp style.
//!
//! Each header has a view (`EthernetFrame`, `Ipv4Packet`, `TcpPacket`...)
//! generic over `T: AsRef<[u8]>` (and `AsMut<[u8]>` for setters). The view's
//! `new_checked` constructor checks the length once; after that no accessor
//! can panic. Field offsets live in one `field` module per header. Each
//! header also has a `Repr` with `parse` and `emit`, used by [`build`].
//!
//! A frame is read outside in: [`ethernet::EthernetFrame`] (one 802.1Q tag
//! at most) gives the ethertype and the L3 offset; [`ipv4::Ipv4Packet`]
//! gives the header length and total length, and thus the L4 slice
//! `l3 + ihl*4 .. l3 + total_len`; [`tcp`], [`udp`], [`icmp`] and [`igmp`]
//! views are built over exactly that slice, so their checksums cover the
//! right bytes. [`crate::extract`] does this walk once per packet and keeps
//! the offsets in a `Layout`, so later stages re-wrap a slice without
//! re-parsing. Rewrites use [`checksum::update16`] / [`checksum::update32`]
//! (RFC 1624), never a full recomputation.
//!
//! [`build`] assembles whole frames with correct checksums for tests,
//! benches and fuzz corpora.

pub mod arp;
pub mod build;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod igmp;
pub mod ipv4;
pub mod tcp;
pub mod udp;

pub use ethernet::Mac;

/// Why a view could not be built over a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header needs.
    #[error("truncated header")]
    Truncated,
    /// A length or type field has an impossible value.
    #[error("malformed header")]
    Malformed,
}

/// Big-endian u16 at `off`. Callers guarantee `off + 2 <= b.len()`.
#[inline(always)]
pub(crate) fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Big-endian u32 at `off`. Callers guarantee `off + 4 <= b.len()`.
#[inline(always)]
pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Store a big-endian u16 at `off`.
#[inline(always)]
pub(crate) fn set_be16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// Store a big-endian u32 at `off`.
#[inline(always)]
pub(crate) fn set_be32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
