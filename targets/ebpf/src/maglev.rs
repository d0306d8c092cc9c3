//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): the per-service lookup table.
//!
//! Each backend gets a permutation of the slots from two hashes of its id (offset and
//! skip); backends take turns claiming their next free slot until the table is full. A
//! backend change moves few slots, so most flows keep their backend even without
//! conntrack. The hash is fixed (not seeded), so a table is a pure function of its input.

/// A default table size: a prime, as Maglev requires, large enough for ~100 backends.
pub const DEFAULT_SIZE: u32 = 1021;

fn mix(mut h: u64) -> u64 {
    // splitmix64's finalizer: a cheap, well-distributed, unseeded hash.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The lookup table of `size` slots (a prime) over `backends` (ids, in any order; the
/// result does not depend on it). Empty when there are no backends.
pub fn table(backends: &[u32], size: u32) -> Vec<u32> {
    let mut ids: Vec<u32> = backends.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() || size == 0 {
        return Vec::new();
    }
    let m = u64::from(size);
    let perms: Vec<(u64, u64)> = ids
        .iter()
        .map(|&id| {
            let offset = mix(u64::from(id)) % m;
            let skip = mix(u64::from(id) ^ 0x5bd1_e995_0000_0000) % (m - 1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; ids.len()];
    let mut entry: Vec<Option<u32>> = vec![None; size as usize];
    let mut filled = 0u32;
    'outer: loop {
        for (i, &(offset, skip)) in perms.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m;
            while entry[c as usize].is_some() {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            entry[c as usize] = Some(ids[i]);
            next[i] += 1;
            filled += 1;
            if filled == size {
                break 'outer;
            }
        }
    }
    entry.into_iter().map(|e| e.unwrap_or(ids[0])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_and_stable() {
        let t = table(&[1, 2, 3], 251);
        assert_eq!(t.len(), 251);
        for b in [1, 2, 3] {
            let n = t.iter().filter(|&&x| x == b).count();
            assert!((80..=88).contains(&n), "backend {b} has {n} slots");
        }
        // Removing one backend moves only (about) its own slots.
        let t2 = table(&[1, 2], 251);
        let moved = t
            .iter()
            .zip(&t2)
            .filter(|(a, b)| a != b && **a != 3)
            .count();
        assert!(moved < 30, "{moved} slots moved");
        assert_eq!(table(&[3, 1, 2], 251), t);
        assert!(table(&[], 251).is_empty());
    }
}
