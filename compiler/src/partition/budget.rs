//! Step 3, budget and ranking: the most valuable entries first (drops, then address space
//! covered per hardware rule), each with the entries above it that it depends on, while
//! the flow table has room.
//!
//! **Lazy.** Ranking needs only the cost and value the capability step computed from an
//! entry's factored form; an entry's rules are built, and its soundness and closure
//! checked, only when its turn comes ([`Closure::materialize`]). The entries the budget
//! never reaches stay in eBPF with [`Why::Budget`], so a MAG of millions of ingress entries
//! costs the few thousand the table holds.
//!
//! **Charged after compression.** The budget counts flow entries as the compressed slice
//! has them. Entries are taken in rank order in batches sized by the compression ratio
//! seen so far; the first batch that overflows is cut to its longest prefix that fits
//! (bisection), and the last slack is filled charging each entry its uncompressed cost (an
//! upper bound of what it adds), so the slice never exceeds the budget. The number of
//! compressions of the pool is so bounded by the batches that fit, the bisection and one
//! final check.
//!
//! **Headroom.** A plan from scratch fills the table only up to [`HEADROOM_PERCENT`] short of
//! its limit. The incremental plans of later events fill what is free up to the same mark,
//! and use the headroom only for what events bring: the entries an event touched (a new
//! pod's egress rules) and the rules that kept entries gain (a pod added to an identity
//! they name). So such an event fits in what the last plan left, instead of declining and
//! costing another plan from scratch (seconds on a full table), or taking every entry it
//! touched out to compress it again. The price is bounded: the entries a fresh plan would
//! have put in the last few percent of the table, the lowest-ranked it places.
//!
//! **Reservations.** A `reserve N entries` hint sets `N` entries aside for its subject's
//! entries: they are filled first, from the subject's entries only; the others share
//! what is left, so an unused part of a reservation stays free.

use super::capability::{Candidate, Context};
use super::closure::Closure;
use super::compress;
use super::Why;

/// Entries set aside for a subject by a `reserve` hint.
#[derive(Clone, Debug)]
pub struct Reservation {
    /// The hint, as explain shows it.
    pub hint: String,
    /// The entries reserved.
    pub amount: u64,
    /// The candidates of the subject, in index order.
    pub members: Vec<usize>,
}

/// What one reservation used.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReservationUse {
    /// The hint.
    pub hint: String,
    /// The entries reserved.
    pub entries: u64,
    /// The entries its subject used (after compression).
    pub used: u64,
}

/// The share of the plan's entries (in percent) a plan from scratch leaves free for the
/// incremental plans of later events.
pub const HEADROOM_PERCENT: u64 = 3;

/// The entries a plan from scratch fills: the plan's limit less the headroom.
pub fn fill_limit(profile: &crate::backend::Profile) -> u64 {
    match profile.plan_entries() {
        Some(limit) => limit - limit * HEADROOM_PERCENT / 100,
        None => u64::MAX,
    }
}

/// Batches sized by the compression ratio (each followed by one compression) before the
/// conservative fill; after a few, the slack left is small.
const MAX_BATCHES: usize = 8;

/// Uncompressed rules one batch may build beyond the slack. Where almost everything
/// compresses (hundreds of rules into one), the ratio would size the next batch to every
/// remaining entry and build millions of rules at once, more than the machine holds.
const MAX_BATCH_RULES: u64 = 1 << 20;

/// Compressions spent cutting an overflowing batch; what is left after them goes to the
/// conservative fill.
const MAX_BISECTIONS: usize = 6;

/// The budget step over all candidates.
pub struct Chooser<'a, 'm> {
    ctx: &'a Context<'m>,
    closure: &'a Closure<'m>,
    /// Whether a candidate is taken (by any pool, or by the batch under test).
    taken: Vec<bool>,
}

impl<'a, 'm> Chooser<'a, 'm> {
    /// A chooser with nothing taken.
    pub fn new(ctx: &'a Context<'m>, closure: &'a Closure<'m>, n: usize) -> Chooser<'a, 'm> {
        Chooser {
            ctx,
            closure,
            taken: vec![false; n],
        }
    }

    /// Counts candidate `i` as already taken (an entry an incremental re-plan keeps).
    pub(super) fn take(&mut self, i: usize) {
        self.taken[i] = true;
    }

    /// Chooses the candidates that fit; leaves the others with [`Why::Budget`]. Returns the
    /// chosen indices (sorted) and what each reservation used.
    pub fn choose(
        mut self,
        cands: &mut [Candidate],
        reservations: &[Reservation],
    ) -> (Vec<usize>, Vec<ReservationUse>) {
        let limit = fill_limit(self.ctx.profile);
        let mut shared = limit;
        let mut uses = Vec::new();
        for r in reservations {
            let amount = r.amount.min(shared);
            shared -= amount;
            let order = ranked(cands, r.members.iter().copied());
            let used = self.fill(cands, &order, amount);
            uses.push(ReservationUse {
                hint: r.hint.clone(),
                entries: amount,
                used,
            });
        }
        let order = ranked(cands, 0..cands.len());
        self.fill(cands, &order, shared);
        for (i, c) in cands.iter_mut().enumerate() {
            if c.ok && !self.taken[i] {
                c.leave(Why::Budget {
                    resource: "flow entries".into(),
                    limit,
                });
            }
        }
        let chosen = (0..cands.len()).filter(|i| self.taken[*i]).collect();
        (chosen, uses)
    }

    /// Takes entries of `order` (ranked) into one pool of `limit` compressed entries;
    /// returns the compressed entries the pool uses.
    fn fill(&mut self, cands: &mut [Candidate], order: &[usize], limit: u64) -> u64 {
        let profile = self.ctx.profile;
        let mut pool: Vec<usize> = Vec::new();
        let mut used = 0u64;
        let mut pos = 0usize;
        let mut ratio = 1.0f64;
        for _ in 0..MAX_BATCHES {
            if used >= limit || pos >= order.len() {
                break;
            }
            // Uncompressed rules this batch may add, by the compression seen so far; a
            // little under, so that a batch rarely overflows.
            let slack = limit - used;
            let target = ((slack as f64) * ratio * 0.8).max(slack as f64) as u64;
            let target = target.min(MAX_BATCH_RULES.max(slack));
            let (groups, next) = self.batch(cands, order, pos, target);
            if groups.is_empty() {
                break;
            }
            let mut all = pool.clone();
            all.extend(groups.iter().flatten());
            let n = compress::count(cands, &all, profile);
            if n <= limit {
                pool = all;
                used = n;
                pos = next;
                let uncompressed: u64 = pool.iter().map(|i| cands[*i].placement.hw_rules).sum();
                ratio = (uncompressed as f64 / used.max(1) as f64).max(1.0);
                continue;
            }
            // Compression is not monotonic: rules merge with partners that may come later
            // in rank order (the same policy on a neighbouring pod), so a batch that
            // overflows alone may fit with the rest of the candidates. Tried once.
            if let Some((rest, n)) = self.with_the_rest(cands, order, next, &all, limit) {
                pool = all;
                pool.extend(rest.into_iter().flatten());
                used = n;
                pos = order.len();
                break;
            }
            let (k, n) = self.longest_fit(cands, &pool, &groups, limit);
            for g in &groups[k..] {
                for i in g {
                    self.taken[*i] = false;
                }
            }
            pool.extend(groups[..k].iter().flatten());
            used = n;
            // The first group that did not fit is where the conservative fill starts. No
            // further batch is tried: the slack the bisection leaves is small, and every
            // further batch would overflow it again and cost another round of
            // compressions of the whole pool (about a second each at 1,500 pods), which
            // made a re-plan at the budget's edge take half a minute.
            pos = order
                .iter()
                .position(|i| *i == groups[k][0])
                .unwrap_or(next);
            break;
        }
        let tail = self.fill_tail(cands, order, pos, limit.saturating_sub(used));
        if tail.is_empty() {
            return used;
        }
        pool.extend(&tail);
        let n = compress::count(cands, &pool, profile);
        if n <= limit {
            return n;
        }
        // Compression never grows a union in practice; if it did, the tail goes back.
        for i in tail {
            self.taken[i] = false;
        }
        used
    }

    /// The groups (an entry and the entries above it not yet taken) from `pos` on, in rank
    /// order, until their uncompressed cost reaches `target`; marks them taken. Returns them
    /// and the position after the last one.
    fn batch(
        &mut self,
        cands: &mut [Candidate],
        order: &[usize],
        mut pos: usize,
        target: u64,
    ) -> (Vec<Vec<usize>>, usize) {
        let mut groups = Vec::new();
        let mut cost = 0u64;
        while pos < order.len() && cost < target {
            let i = order[pos];
            pos += 1;
            if let Some(g) = self.group(cands, i) {
                cost += g.iter().map(|j| cands[*j].placement.hw_rules).sum::<u64>();
                for j in &g {
                    self.taken[*j] = true;
                }
                groups.push(g);
            }
        }
        (groups, pos)
    }

    /// Every group from `pos` on, if together with `pool` they fit `limit` once
    /// compressed (and their uncompressed rules stay under [`MAX_BATCH_RULES`]): the groups
    /// (left taken) and the compressed size. Otherwise nothing stays taken.
    fn with_the_rest(
        &mut self,
        cands: &mut [Candidate],
        order: &[usize],
        pos: usize,
        pool: &[usize],
        limit: u64,
    ) -> Option<(Vec<Vec<usize>>, u64)> {
        let pending: u64 = order[pos.min(order.len())..]
            .iter()
            .filter(|i| !self.taken[**i])
            .map(|i| cands[*i].placement.hw_rules)
            .sum();
        if pending > MAX_BATCH_RULES {
            return None;
        }
        let (rest, _) = self.batch(cands, order, pos, u64::MAX);
        let mut all = pool.to_vec();
        all.extend(rest.iter().flatten());
        let n = compress::count(cands, &all, self.ctx.profile);
        if n <= limit {
            return Some((rest, n));
        }
        for i in rest.iter().flatten() {
            self.taken[*i] = false;
        }
        None
    }

    /// The longest prefix of `groups` that fits `limit` together with `pool` (bisection),
    /// and its compressed size.
    fn longest_fit(
        &self,
        cands: &[Candidate],
        pool: &[usize],
        groups: &[Vec<usize>],
        limit: u64,
    ) -> (usize, u64) {
        let profile = self.ctx.profile;
        let with = |k: usize| {
            let mut all = pool.to_vec();
            all.extend(groups[..k].iter().flatten());
            compress::count(cands, &all, profile)
        };
        // Invariant: a prefix of `lo` groups fits, one of `hi` does not.
        let (mut lo, mut hi) = (0usize, groups.len());
        let mut lo_n = compress::count(cands, pool, profile);
        let mut steps = 0;
        while hi - lo > 1 && steps < MAX_BISECTIONS {
            steps += 1;
            let mid = lo + (hi - lo) / 2;
            let n = with(mid);
            if n <= limit {
                lo = mid;
                lo_n = n;
            } else {
                hi = mid;
            }
        }
        (lo, lo_n)
    }

    /// The last slack: each group charged its uncompressed cost, in rank order.
    pub(super) fn fill_tail(
        &mut self,
        cands: &mut [Candidate],
        order: &[usize],
        pos: usize,
        slack: u64,
    ) -> Vec<usize> {
        self.fill_groups(cands, order, pos, slack)
            .into_iter()
            .flatten()
            .collect()
    }

    /// [`Chooser::fill_tail`], with each group taken (an entry and the entries above it
    /// that it brought) apart, in the order taken.
    pub(super) fn fill_groups(
        &mut self,
        cands: &mut [Candidate],
        order: &[usize],
        pos: usize,
        mut slack: u64,
    ) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        for &i in &order[pos.min(order.len())..] {
            if slack == 0 {
                break;
            }
            // The cheap test first: an entry dearer than the slack is not built.
            if self.taken[i] || cands[i].placement.hw_rules > slack {
                continue;
            }
            let Some(g) = self.group(cands, i) else {
                continue;
            };
            let cost: u64 = g.iter().map(|j| cands[*j].placement.hw_rules).sum();
            if cost <= slack {
                slack -= cost;
                for j in &g {
                    self.taken[*j] = true;
                }
                out.push(g);
            }
        }
        out
    }

    /// Entry `i` and every entry above it that it depends on and that is not yet taken,
    /// or `None` when it is taken or no longer a hardware candidate.
    fn group(&self, cands: &mut [Candidate], i: usize) -> Option<Vec<usize>> {
        if self.taken[i] || !self.closure.materialize(self.ctx, cands, i) {
            return None;
        }
        let mut group = vec![i];
        let mut k = 0;
        while k < group.len() {
            for d in cands[group[k]].deps.clone() {
                if !self.taken[d] && !group.contains(&d) {
                    group.push(d);
                }
            }
            k += 1;
        }
        Some(group)
    }
}

/// The hardware candidates among `items`, most valuable first (ties: table order).
pub(super) fn ranked(cands: &[Candidate], items: impl Iterator<Item = usize>) -> Vec<usize> {
    // The values are copied next to the indices: sorting tens of thousands of indices by
    // a value read from each candidate misses the cache at every comparison. The index
    // breaks ties, so no two keys are equal and an unstable sort gives the one order.
    let mut keyed: Vec<(std::cmp::Reverse<u64>, usize)> = items
        .filter(|i| cands[*i].ok)
        .map(|i| (std::cmp::Reverse(cands[i].placement.value), i))
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, i)| i).collect()
}
