//! Byte patches: what a chain's header rewrites (set actions and
//! conntrack's NAT) do to a packet's bytes between two points where the
//! bytes are needed (an output, a REJECT answer, the end of the walk),
//! precomputed when the chain is recorded so that a replay costs a few
//! masked stores and two checksum additions instead of one incremental
//! update per rewritten field (VPP's nat44-ed precomputes its checksum
//! deltas per session the same way).
//!
//! Why a patch is exact. Every rewrite on the walk writes header fields
//! (MACs, VLAN TCI, IPv4 addresses, TOS, TTL, TCP/UDP ports) to values fixed
//! by the chain's first-pass key and the conntrack answers the chain
//! checks, and adjusts the IPv4 header checksum and the TCP/UDP checksum by
//! RFC 1624 equation 3 ([`update16`](crate::wire::checksum::update16):
//! `x' = fold(x + ~m + m')` with `x = ~HC`). One such update yields `0`
//! only when `x` and both operands are `0`, and otherwise the one's-
//! complement residue of the sum in its canonical form (`1..=0xffff`). So a
//! sequence of updates from `x0` yields `0` when `x0` and every operand are
//! `0`, and otherwise the canonical residue of `x0 + sum(operands)`: the
//! same as one update by `D`, the sequence's result from `x0 = 0` (which is
//! itself `0` exactly when every operand is). A patch therefore records the
//! final values of the bytes that changed and `D` for each checksum, found
//! by running the real rewrite code ([`extract::commit`],
//! [`extract::apply_rewrite`]) on a copy of the recorded packet's headers
//! whose checksum fields are set to `0xffff` (`x = 0`). A UDP checksum of
//! `0` ("none") is never touched and one in use never becomes `0` (each
//! update maps a computed `0` to `0xffff`), so for UDP only the residue
//! matters and the patch applies `D` to a checksum in use, mapping `0` to
//! `0xffff` (RFC 768).
//!
//! Patches are only built for unfragmented IPv4 TCP/UDP packets whose
//! L4 header is complete, and applied only to packets with the recorded
//! header offsets (`Shape`); anything else replays through the
//! rewrite code itself.

use crate::extract::{self, Layout, Proto};
use crate::key::FlowKey;
use crate::wire::checksum::{fold, udp_wire};
use crate::wire::{be16, ipv4, set_be16, tcp, udp};
use conntrack::Rewrite;

/// Most header bytes a patch covers (Ethernet with tags, IPv4 with
/// options, the TCP header without options).
pub const MAX_HDR: usize = 128;

/// Most 8-byte chunks one patch writes.
const MAX_CHUNKS: usize = 12;

/// An 8-byte window of the headers: the bytes under `mask` are replaced by
/// those of `val` (native byte order, as read from the frame).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chunk {
    off: u16,
    mask: u64,
    val: u64,
}

/// The bytes and checksum deltas of one stretch of a chain (its chunks are
/// `chunks[start..start + n]` of the chain cache's arena).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Patch {
    start: u32,
    n: u8,
    /// `D` for the IPv4 header checksum (0: unchanged).
    ip: u16,
    /// `D` for the TCP/UDP checksum (0: unchanged).
    l4: u16,
}

impl Patch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.n == 0 && self.ip == 0 && self.l4 == 0
    }
}

/// The header offsets a chain's patches were computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    l3: u16,
    l4: u16,
    /// End of the L4 header the patches may write (ports, checksum).
    end: u16,
    udp: bool,
}

impl Shape {
    /// The shape of a packet with `layout`, if patches can describe its
    /// rewrites: unfragmented IPv4 TCP or UDP with the whole L4 header.
    pub fn of(layout: &Layout, len: usize) -> Option<Shape> {
        let (udp, l4_len) = match layout.proto {
            Proto::Tcp => (false, tcp::MIN_HEADER_LEN),
            Proto::Udp => (true, udp::HEADER_LEN),
            _ => return None,
        };
        let end = layout.l4 + l4_len;
        (!layout.fragment && layout.fits(len) && end <= layout.ip_end && end <= MAX_HDR).then_some(
            Shape {
                l3: layout.l3 as u16,
                l4: layout.l4 as u16,
                end: end as u16,
                udp,
            },
        )
    }

    /// Whether a packet with `layout` (of `len` bytes) has this shape.
    #[inline]
    pub fn matches(&self, layout: &Layout, len: usize) -> bool {
        Shape::of(layout, len) == Some(*self)
    }

    fn ip_csum(&self) -> usize {
        self.l3 as usize + ipv4::field::CHECKSUM
    }

    fn l4_csum(&self) -> usize {
        self.l4 as usize
            + if self.udp {
                udp::field::CHECKSUM
            } else {
                tcp::field::CHECKSUM
            }
    }

    fn is_csum(&self, i: usize) -> bool {
        let (a, b) = (self.ip_csum(), self.l4_csum());
        (a..a + 2).contains(&i) || (b..b + 2).contains(&i)
    }

    /// Apply `p` (chunks from `chunks`) to `pkt`, which has this shape.
    #[inline]
    pub fn apply(&self, p: &Patch, chunks: &[Chunk], pkt: &mut [u8]) {
        for c in &chunks[p.start as usize..p.start as usize + p.n as usize] {
            let o = c.off as usize;
            let w: &mut [u8; 8] = (&mut pkt[o..o + 8]).try_into().expect("8 bytes");
            *w = ((u64::from_ne_bytes(*w) & !c.mask) | c.val).to_ne_bytes();
        }
        if p.ip != 0 {
            let o = self.ip_csum();
            set_be16(pkt, o, add(be16(pkt, o), p.ip));
        }
        if p.l4 != 0 {
            let o = self.l4_csum();
            let hc = be16(pkt, o);
            if !self.udp {
                set_be16(pkt, o, add(hc, p.l4));
            } else if hc != 0 {
                set_be16(pkt, o, udp_wire(add(hc, p.l4)));
            }
        }
    }
}

/// The checksum after updates whose combined delta is `d` (see the module
/// doc).
#[inline]
fn add(hc: u16, d: u16) -> u16 {
    !fold((!hc) as u32 + d as u32)
}

/// Runs a chain's rewrites on a copy of the recorded packet's headers and
/// cuts patches at the points where the bytes are needed.
#[derive(Debug)]
pub struct Sim {
    shape: Shape,
    layout: Layout,
    base: [u8; MAX_HDR],
    cur: [u8; MAX_HDR],
}

impl Sim {
    /// A simulation over `hdr` (the packet's first bytes, at least up to
    /// the shape's end), laid out as `layout`.
    pub fn new(shape: Shape, layout: &Layout, hdr: &[u8]) -> Option<Sim> {
        let end = shape.end as usize;
        let mut cur = [0u8; MAX_HDR];
        cur[..end].copy_from_slice(hdr.get(..end)?);
        let mut s = Sim {
            shape,
            // The copy ends with the L4 header: nothing past it is read or
            // written by the rewrites of a TCP/UDP packet.
            layout: Layout {
                ip_end: end,
                ..*layout
            },
            base: [0; MAX_HDR],
            cur,
        };
        s.reset();
        Some(s)
    }

    fn reset(&mut self) {
        set_be16(&mut self.cur, self.shape.ip_csum(), 0xffff);
        set_be16(&mut self.cur, self.shape.l4_csum(), 0xffff);
        self.base = self.cur;
    }

    fn hdr(&mut self) -> &mut [u8] {
        &mut self.cur[..self.shape.end as usize]
    }

    /// A `Set` datapath action.
    pub fn commit(&mut self, from: &FlowKey, to: &FlowKey) {
        let l = self.layout;
        extract::commit(self.hdr(), &l, from, to);
    }

    /// Conntrack's NAT rewrite.
    pub fn rewrite(&mut self, rw: &Rewrite) {
        let l = self.layout;
        extract::apply_rewrite(self.hdr(), &l, rw);
    }

    /// The patch from the last cut to here, its chunks appended to
    /// `chunks`; `None` if it needs too many chunks. The next patch starts
    /// here.
    pub fn cut(&mut self, chunks: &mut Vec<Chunk>) -> Option<Patch> {
        let p = self.peek(chunks)?;
        self.reset();
        Some(p)
    }

    /// The patch from the last cut to here, as [`Sim::cut`], without
    /// starting the next patch here (a patch applied only instead of the
    /// next one).
    pub fn peek(&self, chunks: &mut Vec<Chunk>) -> Option<Patch> {
        let end = self.shape.end as usize;
        let start = chunks.len();
        let mut n = 0;
        let mut off = 0;
        while off < end {
            // The last window ends at `end` (overlapping the one before;
            // its mask leaves the overlap alone).
            let o = off.min(end - 8);
            if self.base[o..o + 8] == self.cur[o..o + 8] {
                off = o + 8;
                continue;
            }
            let (mut m, mut v) = ([0u8; 8], [0u8; 8]);
            for j in 0..8 {
                let i = o + j;
                if i >= off && self.base[i] != self.cur[i] && !self.shape.is_csum(i) {
                    m[j] = 0xff;
                    v[j] = self.cur[i];
                }
            }
            if m != [0; 8] {
                if n == MAX_CHUNKS {
                    chunks.truncate(start);
                    return None;
                }
                chunks.push(Chunk {
                    off: o as u16,
                    mask: u64::from_ne_bytes(m),
                    val: u64::from_ne_bytes(v),
                });
                n += 1;
            }
            off = o + 8;
        }
        let p = Patch {
            start: start as u32,
            n: n as u8,
            ip: !be16(&self.cur, self.shape.ip_csum()),
            l4: !be16(&self.cur, self.shape.l4_csum()),
        };
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::slot;
    use crate::wire::build::PacketBuilder;
    use conntrack::Tuple;
    use proptest::prelude::*;

    fn key_of(pkt: &[u8]) -> (FlowKey, Layout) {
        let mut k = FlowKey::ZERO;
        let l = extract::extract(pkt, 1, &mut k).unwrap();
        (k, l)
    }

    /// A patch equals the rewrite code it was cut from, checksums included,
    /// on packets with any checksum values (the representation of zero
    /// included) and UDP checksums in use or not.
    fn check(udp: bool, csum_ip: u16, csum_l4: u16, addrs: [u32; 4], ports: [u16; 4], ttl: u8) {
        let mut pkt = if udp {
            PacketBuilder::udp(1u64, 2u64, addrs[0], addrs[1], ports[0], ports[1]).build()
        } else {
            PacketBuilder::tcp(
                [0, 1, 2, 3, 4, 5],
                [6, 7, 8, 9, 10, 11],
                addrs[0],
                addrs[1],
                ports[0],
                ports[1],
            )
            .build()
        };
        let (key, layout) = key_of(&pkt);
        let shape = Shape::of(&layout, pkt.len()).unwrap();
        set_be16(&mut pkt, shape.ip_csum(), csum_ip);
        set_be16(&mut pkt, shape.l4_csum(), csum_l4);
        let mut to = key;
        to.set(slot::DL_SRC, 0x0a58_ac10_0201);
        to.set(slot::NW_TTL, ttl as u64);
        to.set(slot::NW_SRC, addrs[2] as u64);
        let rw = Rewrite {
            outer: Tuple {
                src: addrs[2],
                dst: addrs[3],
                sport: ports[2],
                dport: ports[3],
                proto: if udp { 17 } else { 6 },
            },
            inner: None,
        };
        let mut want = pkt.clone();
        extract::commit(&mut want, &layout, &key, &to);
        extract::apply_rewrite(&mut want, &layout, &rw);
        let mut sim = Sim::new(shape, &layout, &pkt).unwrap();
        sim.commit(&key, &to);
        sim.rewrite(&rw);
        let mut chunks = Vec::new();
        let p = sim.cut(&mut chunks).unwrap();
        let mut got = pkt.clone();
        shape.apply(&p, &chunks, &mut got);
        assert_eq!(got, want);
    }

    #[test]
    fn golden_nodeport_rewrite() {
        check(
            false,
            0xf157,
            0x62e6,
            [0x0ab0_1a24, 0x0ab0_19f4, 0xac10_0201, 0xac10_020a],
            [40001, 30232, 40001, 8080],
            63,
        );
    }

    #[test]
    fn checksum_zero_representations() {
        for c in [0x0000, 0xffff, 0x0001, 0xfffe] {
            check(
                false,
                c,
                c,
                [0xffff_ffff, 0, 0, 0xffff_ffff],
                [0xffff, 0, 0, 0xffff],
                0,
            );
            check(
                true,
                c,
                c,
                [0xffff_ffff, 0, 0, 0xffff_ffff],
                [0xffff, 0, 0, 0xffff],
                0,
            );
        }
    }

    proptest! {
        #[test]
        fn patch_equals_the_rewrites(
            udp in any::<bool>(),
            csum_ip in any::<u16>(),
            csum_l4 in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
            addrs in any::<[u32; 4]>(),
            ports in any::<[u16; 4]>(),
            ttl in any::<u8>(),
        ) {
            check(udp, csum_ip, csum_l4, addrs, ports, ttl);
        }
    }
}
