//! Longest-prefix match as disjoint ranges.
//!
//! The ipcache is a longest-prefix-match table (a pod's /32 inside a node's /24 inside the
//! world's /0), but an nftables interval map refuses overlapping elements. So the prefixes
//! are painted onto the address space from the shortest to the longest, each more specific
//! prefix overwriting the part it covers, and the result is a list of disjoint ranges that
//! gives every address the value of its longest matching prefix.

/// A range `lo..=hi` of addresses (as integers of the family's width) and its value.
pub type Range = (u128, u128, u32);

/// The disjoint ranges of `prefixes` (`(value, len, id)`, `value` with host bits zero) in a
/// `width`-bit address space, sorted, with equal neighbours merged.
pub fn lpm_ranges(width: u8, prefixes: &[(u128, u8, u32)]) -> Vec<Range> {
    let mut sorted: Vec<&(u128, u8, u32)> = prefixes.iter().collect();
    // Shorter prefixes first; at one length, the later entry wins, as in a map insert.
    sorted.sort_by_key(|(_, len, _)| *len);
    let mut out: Vec<Range> = Vec::new();
    for &&(value, len, id) in &sorted {
        let (lo, hi) = bounds(width, value, len);
        paint(&mut out, lo, hi, id);
    }
    merge(out)
}

/// The first and last address of a prefix.
pub fn bounds(width: u8, value: u128, len: u8) -> (u128, u128) {
    let host_bits = u32::from(width.saturating_sub(len));
    let span = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let lo = value & !span;
    (lo, lo | span)
}

/// Sets `lo..=hi` to `id`, splitting the ranges it overlaps.
fn paint(out: &mut Vec<Range>, lo: u128, hi: u128, id: u32) {
    let mut next = Vec::with_capacity(out.len() + 2);
    for &(a, b, v) in out.iter() {
        if b < lo || a > hi {
            next.push((a, b, v));
            continue;
        }
        if a < lo {
            next.push((a, lo - 1, v));
        }
        if b > hi {
            next.push((hi + 1, b, v));
        }
    }
    next.push((lo, hi, id));
    next.sort_unstable();
    *out = next;
}

fn merge(ranges: Vec<Range>) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.2 == r.2 && last.1.checked_add(1) == Some(r.0) => last.1 = r.1,
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_specific_prefixes_cut_holes_in_shorter_ones() {
        let v = |a: [u8; 4]| u128::from(u32::from_be_bytes(a));
        let r = lpm_ranges(
            32,
            &[
                (0, 0, 2),
                (v([10, 0, 0, 0]), 24, 7),
                (v([10, 0, 0, 5]), 32, 9),
            ],
        );
        assert_eq!(
            r,
            vec![
                (0, v([9, 255, 255, 255]), 2),
                (v([10, 0, 0, 0]), v([10, 0, 0, 4]), 7),
                (v([10, 0, 0, 5]), v([10, 0, 0, 5]), 9),
                (v([10, 0, 0, 6]), v([10, 0, 0, 255]), 7),
                (v([10, 0, 1, 0]), u128::from(u32::MAX), 2),
            ]
        );
    }

    #[test]
    fn a_full_ipv6_space_has_no_overflow() {
        let r = lpm_ranges(128, &[(0, 0, 10), (1, 128, 11)]);
        assert_eq!(r, vec![(0, 0, 10), (1, 1, 11), (2, u128::MAX, 10)]);
    }
}
