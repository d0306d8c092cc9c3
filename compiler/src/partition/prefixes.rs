//! IPv4 address sets: the exact set of addresses each identity owns under the ipcache's
//! longest-prefix rule, written as the fewest prefixes (CIDR aggregation).

use crate::mag::algebra::range_prefixes;
use crate::mag::{prefix_mask, Field, FieldMatch, Mag};
use std::collections::BTreeMap;

/// An IPv4 prefix: `(address, length)`, bits past the length zero.
pub type Prefix = (u32, u8);

/// The IPv4 addresses of every identity in a node's source ipcache table.
#[derive(Clone, Debug, Default)]
pub struct IdentitySets {
    /// Identity → its disjoint, aggregated prefixes.
    pub v4: BTreeMap<u128, Vec<Prefix>>,
    /// Identity → how many ipcache prefixes name it (the naive cost of matching it).
    pub naive: BTreeMap<u128, u64>,
}

impl IdentitySets {
    /// Reads the `src_ipcache` table of a MAG (entries `eth.type=0x0800 ipv4.src=P ->
    /// set_src_identity(id)`); an empty set when the table is missing.
    pub fn from_mag(mag: &Mag) -> IdentitySets {
        let mut prefixes: Vec<(u8, u32, u128)> = Vec::new();
        let Some(t) = mag
            .table_by_name(crate::mag::pipeline::table::SRC_IPCACHE)
            .and_then(|t| mag.table(t))
        else {
            return IdentitySets::default();
        };
        let col = t.key.iter().position(|k| k.field == Field::Ipv4Src);
        let eth = t.key.iter().position(|k| k.field == Field::EthType);
        for e in &t.entries {
            let (Some(col), Some(id)) = (col, e.action.args.first()) else {
                continue;
            };
            if let Some(eth) = eth {
                if !matches!(e.matches[eth], FieldMatch::Exact(0x0800)) {
                    continue;
                }
            }
            let (value, len) = match e.matches[col] {
                FieldMatch::Any => (0, 0),
                FieldMatch::Exact(v) => (v as u32, 32),
                FieldMatch::Prefix { value, len } => (value as u32, len),
                FieldMatch::Ternary { value, mask } => {
                    let ones = (mask as u32).count_ones();
                    if (mask as u32) != prefix_mask(ones, 32) as u32 {
                        continue;
                    }
                    (value as u32, ones as u8)
                }
                FieldMatch::Range { .. } => continue,
            };
            prefixes.push((len, value, *id));
        }
        // Paint shorter prefixes first, so a longer prefix overwrites the addresses it
        // covers: this is the longest-prefix rule.
        prefixes.sort();
        let mut naive: BTreeMap<u128, u64> = BTreeMap::new();
        // Step function: an interval starts at the key and has the value until the next key.
        let mut paint: BTreeMap<u64, Option<u128>> = BTreeMap::new();
        paint.insert(0, None);
        for (len, value, id) in &prefixes {
            *naive.entry(*id).or_default() += 1;
            let lo = u64::from(*value & prefix_mask(u32::from(*len), 32) as u32);
            let hi = lo + (1u64 << (32 - u32::from(*len))) - 1;
            let after = paint.range(..=hi + 1).next_back().and_then(|(_, v)| *v);
            let inside: Vec<u64> = paint.range(lo..=hi + 1).map(|(k, _)| *k).collect();
            for k in inside {
                paint.remove(&k);
            }
            paint.insert(lo, Some(*id));
            if hi < u64::from(u32::MAX) {
                paint.insert(hi + 1, after);
            }
        }
        let mut ranges: BTreeMap<u128, Vec<(u64, u64)>> = BTreeMap::new();
        let keys: Vec<(u64, Option<u128>)> = paint.into_iter().collect();
        for (i, (start, id)) in keys.iter().enumerate() {
            let end = keys.get(i + 1).map_or(u64::from(u32::MAX), |(k, _)| k - 1);
            if let Some(id) = id {
                let v = ranges.entry(*id).or_default();
                match v.last_mut() {
                    Some(last) if last.1 + 1 == *start => last.1 = end,
                    _ => v.push((*start, end)),
                }
            }
        }
        let v4 = ranges
            .into_iter()
            .map(|(id, rs)| {
                let mut out = Vec::new();
                for (lo, hi) in rs {
                    range_to_prefixes(lo, hi, &mut out);
                }
                (id, out)
            })
            .collect();
        IdentitySets { v4, naive }
    }
}

/// The fewest IPv4 prefixes that cover `lo..=hi` exactly, appended to `out` (the shared
/// [`range_prefixes`] at 32 bits, in this module's [`Prefix`] form).
pub fn range_to_prefixes(lo: u64, hi: u64, out: &mut Vec<Prefix>) {
    out.extend(
        range_prefixes(u128::from(lo), u128::from(hi), 32)
            .into_iter()
            .map(|(v, len)| (v as u32, len as u8)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_into_fewest_prefixes() {
        let mut out = Vec::new();
        range_to_prefixes(0, u64::from(u32::MAX), &mut out);
        assert_eq!(out, vec![(0, 0)]);
        out.clear();
        range_to_prefixes(1, 2, &mut out);
        assert_eq!(out, vec![(1, 32), (2, 32)]);
    }
}
