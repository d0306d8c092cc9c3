//! Maglev consistent hashing: the per-service lookup table that maps a hash slot to a
//! backend (Eisenbud et al., NSDI 2016), deterministic for a given backend list.

/// Table sizes: primes, chosen as the smallest at least twice the backend count, so that
/// a backend change moves few slots and the table stays small.
const SIZES: [u32; 11] = [
    61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521,
];

/// The table size for `n` backends: the smallest of [`SIZES`] with at least two slots per
/// backend. The smallest size is a fixed minimum with headroom (as Cilium uses one fixed
/// M for every service): every service with up to 30 backends has 61 slots, so scaling a
/// typical Deployment up or down by a replica moves only the slots that change hands
/// (about 1/n of them) and never rewrites the whole table. The size depends on the
/// backend count alone, so the table stays a deterministic function of the backend set.
pub fn table_size(n: usize) -> u32 {
    SIZES
        .into_iter()
        .find(|m| *m as usize >= 2 * n.max(1))
        .unwrap_or(SIZES[SIZES.len() - 1])
}

fn fnv(seed: u64, s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Fills a table of `m` slots (`m` prime) from backend names; slot → backend index. Every
/// slot is filled when there is at least one backend.
pub fn populate(names: &[String], m: u32) -> Vec<u32> {
    let n = names.len();
    if n == 0 {
        return Vec::new();
    }
    let m64 = u64::from(m);
    let perms: Vec<(u64, u64)> = names
        .iter()
        .map(|name| {
            let offset = fnv(0x5bd1_e995, name) % m64;
            let skip = fnv(0x9e37_79b9, name) % (m64 - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut table = vec![u32::MAX; m as usize];
    let mut filled = 0;
    'outer: loop {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m64;
            while table[c as usize] != u32::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m64;
            }
            table[c as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == m as usize {
                break 'outer;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_full_balanced_and_stable() {
        let names: Vec<String> = (0..5).map(|i| format!("10.0.0.{i}:80")).collect();
        let m = table_size(names.len());
        assert_eq!(m, 61);
        assert_eq!(table_size(15), table_size(16));
        let t = populate(&names, m);
        assert!(t.iter().all(|b| (*b as usize) < names.len()));
        let mut counts = [0; 5];
        t.iter().for_each(|b| counts[*b as usize] += 1);
        assert!(counts.iter().all(|c| (12..=13).contains(c)), "{counts:?}");
        // Removing one backend moves only the slots it held, and a few more.
        let fewer = populate(&names[..4], m);
        let moved = t
            .iter()
            .zip(&fewer)
            .filter(|(a, b)| **a != 4 && a != b)
            .count();
        assert!(moved <= 3, "{moved}");
    }
}
