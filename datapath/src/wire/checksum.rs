//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! All values are host integers holding the network-order (big-endian)
//! interpretation of the bytes: a checksum field containing bytes `12 34`
//! is `0x1234`. One's-complement arithmetic is byte-order independent
//! (RFC 1071 §2(B)), so this is the same arithmetic OVS does on raw
//! network-order words.
//!
//! Rewrites never recompute a checksum from scratch: [`update16`] and
//! [`update32`] adjust the old checksum by the difference of the changed
//! words, so a packet that arrived with a wrong checksum leaves with a
//! checksum that is wrong by exactly the same amount, as it does through
//! OVS (whose `recalc_csum16` is the same RFC 1624 equation 3).

/// One's-complement sum of `data` as big-endian 16-bit words, an odd final
/// byte padded with a zero low byte, added to `initial`. The result is a
/// partial sum: feed it to [`finish`] (or more data to `sum` again).
///
/// Never overflows: the accumulator is 64 bits wide and folded at the end.
/// Eight bytes are added at a time, as two big-endian 32-bit words: since
/// `2^16 = 1` modulo `0xffff`, a 32-bit word is congruent to the sum of its
/// two 16-bit halves, so the partial sum differs from a 16-bit word sum
/// only by multiples of `0xffff` (and is `0` exactly when it is), which
/// [`fold`] removes.
#[inline]
pub fn sum(initial: u32, data: &[u8]) -> u32 {
    let mut acc = initial as u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_be_bytes(w.try_into().expect("8 bytes"));
        acc += (v >> 32) + (v & 0xffff_ffff);
    }
    let mut chunks = words.remainder().chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u64) << 8;
    }
    // Fold 64 -> 32 bits; the end-around carries keep the one's-complement value.
    while acc >> 32 != 0 {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Fold a partial sum to 16 bits with end-around carry (not complemented).
#[inline]
pub fn fold(partial: u32) -> u16 {
    // Two end-around carries always suffice for 32 bits: the first leaves
    // at most 0x1fffe, the second at most 0xffff (a third would change
    // nothing).
    let s = (partial & 0xffff) + (partial >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum field value for a partial sum: the folded sum, complemented.
#[inline]
pub fn finish(partial: u32) -> u16 {
    !fold(partial)
}

/// The checksum of `data`: what a correct checksum field holds when the
/// field itself was zero while summing, and `0` when `data` includes a
/// correct checksum field.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(0, data))
}

/// Partial sum of the IPv4 pseudo-header (RFC 793 §3.1, RFC 768) for an
/// upper-layer message of `len` bytes (the IPv4 payload length, total
/// length minus header length, as OVS's `packet_csum_pseudoheader` uses).
#[inline]
pub fn pseudo_header_v4(src: u32, dst: u32, proto: u8, len: u16) -> u32 {
    (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto as u32 + len as u32
}

/// RFC 1624 equation 3: the new checksum after a 16-bit word of the covered
/// data changed from `old` to `new`: `HC' = ~(~HC + ~m + m')`.
///
/// This is exactly OVS's `recalc_csum16`, so results agree bit for bit,
/// including which of the two one's-complement zeros (`0x0000`, `0xffff`)
/// comes out (RFC 1624 §4 shows the case where equation 2 and equation 3
/// differ).
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let s = (!csum) as u32 + (!old) as u32 + new as u32;
    !fold(s)
}

/// [`update16`] for a 32-bit field (an IPv4 address), high word first, the
/// order in which OVS's `recalc_csum32` applies the two halves on a
/// little-endian host (it matters only for which representation of zero an
/// intermediate result takes).
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let c = update16(csum, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

/// A UDP checksum as it goes on the wire: a computed value of zero is sent
/// as `0xffff`, because zero means "no checksum" (RFC 768).
#[inline]
pub fn udp_wire(csum: u16) -> u16 {
    if csum == 0 { 0xffff } else { csum }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The IPv4 header from RFC 1071-style worked examples (Wikipedia's
    /// "IPv4 header checksum" example): checksum field 0xb861.
    const IP_HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn golden_ipv4_header() {
        assert_eq!(checksum(&IP_HDR), 0);
        let mut h = IP_HDR;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn odd_length_pads_low_byte() {
        assert_eq!(sum(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives 0x0000.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn udp_zero_goes_out_as_ffff() {
        assert_eq!(udp_wire(0), 0xffff);
        assert_eq!(udp_wire(0x1234), 0x1234);
    }

    /// The 16-bit word sum of RFC 1071, one word at a time.
    fn sum16(initial: u32, data: &[u8]) -> u32 {
        let mut acc = initial as u64;
        for c in data.chunks(2) {
            acc += (u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])) as u64;
        }
        while acc >> 32 != 0 {
            acc = (acc & 0xffff_ffff) + (acc >> 32);
        }
        acc as u32
    }

    proptest! {
        #[test]
        fn fold_is_the_end_around_carry_loop(x in prop_oneof![any::<u32>(), 0xfff0_0000u32..]) {
            let mut s = x;
            while s >> 16 != 0 {
                s = (s & 0xffff) + (s >> 16);
            }
            prop_assert_eq!(fold(x), s as u16);
        }

        #[test]
        fn wide_sum_folds_as_the_word_sum(
            initial in prop_oneof![Just(0u32), any::<u32>()],
            data in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..80),
                proptest::collection::vec(prop_oneof![Just(0u8), Just(0xff)], 0..80),
            ],
        ) {
            prop_assert_eq!(fold(sum(initial, &data)), fold(sum16(initial, &data)));
        }

        #[test]
        fn incremental_equals_full(
            mut data in proptest::collection::vec(any::<u8>(), 4..64),
            pos in 0usize..32,
            new in any::<u16>(),
        ) {
            if data.len() % 2 == 1 { data.push(0); }
            let pos = (pos * 2) % (data.len() - 2) + 2; // never the checksum word
            data[0] = 0;
            data[1] = 0;
            let c = checksum(&data);
            data[0..2].copy_from_slice(&c.to_be_bytes());
            let old = u16::from_be_bytes([data[pos], data[pos + 1]]);
            data[pos..pos + 2].copy_from_slice(&new.to_be_bytes());
            // All-zero data has no checksum that sums to 0xffff.
            prop_assume!(data[2..].iter().any(|b| *b != 0));
            let inc = update16(c, old, new);
            data[0..2].copy_from_slice(&inc.to_be_bytes());
            // The updated checksum verifies.
            prop_assert_eq!(fold(sum(0, &data)), 0xffff);
        }
    }
}
