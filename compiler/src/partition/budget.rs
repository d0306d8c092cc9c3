//! Step 3, budget and ranking: the most valuable entries first (drops, then address space
//! covered per hardware rule), each with the entries above it that it depends on, while
//! the flow table has room. Costs are counted before compression, so the budget holds
//! whatever compression saves.

use super::capability::Candidate;
use super::Why;
use crate::backend::Profile;

/// Chooses the candidates that fit; leaves the others with [`Why::Budget`]. Returns the
/// chosen indices.
pub fn choose(cands: &mut [Candidate], profile: &Profile) -> Vec<usize> {
    let limit = profile.budget.entries.map_or(u64::MAX, |e| {
        e.saturating_sub(profile.budget.reserved_entries)
    });
    let mut order: Vec<usize> = (0..cands.len()).filter(|i| cands[*i].ok).collect();
    order.sort_by(|a, b| {
        cands[*b]
            .placement
            .value
            .cmp(&cands[*a].placement.value)
            .then_with(|| a.cmp(b))
    });
    let mut chosen = vec![false; cands.len()];
    let mut used = 0u64;
    for i in order {
        if chosen[i] || !cands[i].ok {
            continue;
        }
        // The entry and everything above it that it depends on.
        let mut group = vec![i];
        let mut k = 0;
        while k < group.len() {
            for d in cands[group[k]].deps.clone() {
                if !chosen[d] && !group.contains(&d) {
                    group.push(d);
                }
            }
            k += 1;
        }
        let all_ok = group.iter().all(|g| cands[*g].ok);
        let cost: u64 = group.iter().map(|g| cands[*g].placement.hw_rules).sum();
        if all_ok && used + cost <= limit {
            used += cost;
            for g in group {
                chosen[g] = true;
            }
        } else {
            cands[i].leave(Why::Budget {
                resource: "flow entries".into(),
                limit,
            });
        }
    }
    (0..cands.len()).filter(|i| chosen[*i]).collect()
}
