//! Maglev tables of backend ids, for the datapath tests and the benchmark, which write
//! artifacts by hand. They are built by the compiler's Maglev ([`pipec::lower::maglev`]),
//! the one the MAG's `lb_backend` tables come from, so hand-written and compiled services
//! spread flows alike.
//!
//! What the datapath needs of a table (`pipec.bpf.c`): slot `tuple_hash % maglev_size`
//! holds a backend id of the `backends` map, for every slot; the size need not be prime
//! for the datapath, only for Maglev's permutations.

use pipec::lower::maglev::populate;

/// A default table size: a prime, as Maglev requires, large enough for ~100 backends.
pub const DEFAULT_SIZE: u32 = 1021;

/// The lookup table of `size` slots (a prime) over `backends` (ids, in any order; the
/// result does not depend on it): slot → backend id. Empty when there are no backends.
pub fn table(backends: &[u32], size: u32) -> Vec<u32> {
    let mut ids: Vec<u32> = backends.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() || size == 0 {
        return Vec::new();
    }
    // The compiler's Maglev hashes backend names; an id's decimal text is its name here.
    let names: Vec<String> = ids.iter().map(u32::to_string).collect();
    populate(&names, size)
        .into_iter()
        .map(|i| ids[i as usize])
        .collect()
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
