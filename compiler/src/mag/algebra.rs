//! The value algebra of match fields, shared by every stage and target that rewrites a
//! match: ranges as prefixes, prefixes as masks ([`super::prefix_mask`]).
//!
//! A hardware table, an eBPF LPM trie and the MAG's own ternary rows all need a range of
//! values (a port range, an address interval) as the fewest aligned prefixes that cover it
//! exactly. One function does it for every width, so the stages cannot disagree on how a
//! range is split.

/// The fewest prefixes of a `width`-bit field (`(value, length)`, bits past the length
/// zero) that cover `lo..=hi` exactly, in increasing order; empty when `lo > hi`.
///
/// Each step takes the largest block aligned at `lo` that does not pass `hi`, which gives
/// the unique minimal cover (at most `2 * width - 2` prefixes).
pub fn range_prefixes(lo: u128, hi: u128, width: u32) -> Vec<(u128, u32)> {
    debug_assert!(width <= 128, "a field of {width} bits");
    let top = if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    let hi = hi.min(top);
    let mut out = Vec::new();
    let mut lo = lo;
    while lo <= hi {
        // The block of `bits` free low bits aligned at `lo`: its last value is `lo` with
        // those bits set, computed without `lo + size`, which overflows at 128 bits.
        let mut bits = if lo == 0 {
            width
        } else {
            lo.trailing_zeros().min(width)
        };
        let last = |bits: u32| {
            if bits >= 128 {
                u128::MAX
            } else {
                lo | ((1u128 << bits) - 1)
            }
        };
        while bits > 0 && last(bits) > hi {
            bits -= 1;
        }
        out.push((lo, width - bits));
        let end = last(bits);
        if end >= hi {
            break;
        }
        lo = end + 1;
    }
    out
}

/// The fewest 16-bit port prefixes (`(value, length)`) covering `lo..=hi` exactly: at most
/// 30.
pub fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    range_prefixes(u128::from(lo), u128::from(hi), 16)
        .into_iter()
        .map(|(v, len)| (v as u16, len as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value of the range is covered once, and nothing else is: the cover is exact.
    fn covers_exactly(lo: u128, hi: u128, width: u32) -> bool {
        let mut next = lo;
        for (v, len) in range_prefixes(lo, hi, width) {
            if v != next || v & !super::super::prefix_mask(len, width) & ((1 << width) - 1) != 0 {
                return false;
            }
            next = v + (1u128 << (width - len));
        }
        next == hi + 1
    }

    #[test]
    fn port_ranges_become_fewest_prefixes() {
        assert_eq!(port_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(port_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(port_prefixes(8080, 8083), vec![(8080, 14)]);
        assert_eq!(port_prefixes(1, 3), vec![(1, 16), (2, 15)]);
        assert_eq!(
            port_prefixes(1000, 1010),
            vec![(1000, 13), (1008, 15), (1010, 16)]
        );
        assert_eq!(port_prefixes(1, 1023).len(), 10);
        assert_eq!(port_prefixes(1024, 65535).len(), 6);
        assert_eq!(port_prefixes(1, 65534).len(), 30);
        assert_eq!(port_prefixes(8000, 8080).len(), 3);
        assert!(port_prefixes(9, 8).is_empty());
        let total: u32 = port_prefixes(1000, 2000)
            .iter()
            .map(|(_, len)| 1u32 << (16 - len))
            .sum();
        assert_eq!(total, 1001);
    }

    #[test]
    fn address_ranges_become_fewest_prefixes() {
        assert_eq!(range_prefixes(0, u128::from(u32::MAX), 32), vec![(0, 0)]);
        assert_eq!(range_prefixes(1, 2, 32), vec![(1, 32), (2, 32)]);
        assert_eq!(range_prefixes(0, u128::MAX, 128), vec![(0, 0)]);
        assert_eq!(
            range_prefixes(u128::MAX - 1, u128::MAX, 128),
            vec![(u128::MAX - 1, 127)]
        );
        for (lo, hi) in [(0, 0), (1, 65534), (3, 17), (4096, 8191), (65535, 65535)] {
            assert!(covers_exactly(lo, hi, 16), "{lo}..={hi}");
        }
        for (lo, hi) in [
            (0, 1),
            (0x0a00_0001, 0x0a00_ff00),
            (5, u128::from(u32::MAX)),
        ] {
            assert!(covers_exactly(lo, hi, 32), "{lo}..={hi}");
        }
    }
}
