//! Step 4, compression and priority levels.
//!
//! **Levels by overlap.** An entry's level is one below the deepest entry above it that it
//! depends on (overlapping, another action); entries with nothing above them share level 0.
//! So the number of levels is the longest chain of overlapping entries with alternating
//! actions, not the number of policy priorities. An entry that would need a level the
//! profile does not have stays in eBPF (so do the entries below it, which need deeper
//! levels still).
//!
//! **Merging (TCAM-Razor style).** Within one port, level and action, two rules that differ
//! in exactly one bit of one field's value (same masks everywhere) become one rule with
//! that bit masked out. The union is exact, so the table means the same; repeated, this
//! aggregates CIDRs and port prefixes across rules and entries.

use super::capability::{Candidate, Kind};
use super::{Target, Usage, Why};
use crate::backend::{
    HwAction, HwMatch, HwRule, MaskCap, PacketField, PlanSlice, PortDirection, Profile,
};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashMap};

/// The text of a hardware action.
pub fn action_text(a: &HwAction) -> String {
    match a {
        HwAction::Drop => "drop".into(),
        HwAction::Count => "count".into(),
        HwAction::Mark { id } => format!("mark {id}"),
        HwAction::Flag => "flag".into(),
        HwAction::Queue { index } => format!("queue {index}"),
        HwAction::Rss { queues } => format!("rss {queues:?}"),
        HwAction::Security { sa } => format!("security {sa:?}"),
        HwAction::PushVlan { vid } => format!("push_vlan {vid}"),
        HwAction::Vf { vf } => format!("vf {vf}"),
        HwAction::PortId { port } => format!("port_id {port}"),
    }
}

/// The level of each chosen entry (one below the deepest entry above it that it depends
/// on, or the first of `range`), and whether it fits: an entry is placed only if its level
/// is in `range` and every entry it depends on is placed.
pub(super) fn levels(
    cands: &[Candidate],
    chosen: &[usize],
    range: std::ops::Range<u32>,
) -> HashMap<usize, (u32, bool)> {
    let mut order = chosen.to_vec();
    order.sort_by_key(|i| (std::cmp::Reverse(cands[*i].priority), *i));
    let mut out: HashMap<usize, (u32, bool)> = HashMap::with_capacity(order.len());
    for i in order {
        let deps = &cands[i].deps;
        // An entry above that is not in `chosen` was placed by an earlier budget pool (a
        // reservation): counted as placed at the first level.
        let level = deps
            .iter()
            .map(|d| out.get(d).map_or(range.start + 1, |(l, _)| l + 1))
            .max()
            .unwrap_or(range.start);
        let deps_placed = deps.iter().all(|d| !matches!(out.get(d), Some((_, false))));
        out.insert(i, (level, range.contains(&level) && deps_placed));
    }
    out
}

/// A compressed rule and the candidates whose rules it covers (sorted, no repeats). The
/// rule's `origin` text is written once the slice is final ([`finish`]).
#[derive(Clone, Debug)]
pub struct Merged {
    /// The rule (its actions without the counter [`finish`] may add).
    pub rule: HwRule,
    /// The candidates it covers.
    pub from: Vec<u32>,
}

/// The compressed rules of the placed entries, ordered by level, matches and actions.
pub(super) fn compressed(
    cands: &[Candidate],
    placed: &[(usize, u32)],
    profile: &Profile,
) -> Vec<Merged> {
    merge_all(inputs(cands, placed), profile)
}

/// The rules of the placed entries at their levels, each covering its entry.
pub(super) fn inputs(cands: &[Candidate], placed: &[(usize, u32)]) -> Vec<Merged> {
    let mut out = Vec::new();
    for (i, level) in placed {
        for r in &cands[*i].rules {
            let mut r = r.clone();
            r.level = *level;
            out.push(Merged {
                rule: r,
                from: vec![*i as u32],
            });
        }
    }
    out
}

/// The rules of one merge group: one port and direction (a rule never covers packets of
/// another port), one level, one action list.
pub(super) type GroupKey = (u16, PortDirection, u32, Vec<HwAction>);

/// `rules` compressed within each port, level and action, ordered by port, level, matches
/// and actions.
pub(super) fn merge_all(rules: Vec<Merged>, profile: &Profile) -> Vec<Merged> {
    let merger = Merger::new(profile);
    let mut out: Vec<Merged> = Vec::new();
    for group in grouped(rules).into_values() {
        out.extend(merger.merge(group));
    }
    sort_rules(&mut out);
    out
}

/// `rules` split into the groups compression merges within (one port, direction, level
/// and action list each), by group, each in the order given.
pub(super) fn grouped(rules: Vec<Merged>) -> BTreeMap<GroupKey, Vec<Merged>> {
    let mut groups: BTreeMap<GroupKey, Vec<Merged>> = BTreeMap::new();
    for m in rules {
        groups
            .entry((
                m.rule.port,
                m.rule.direction,
                m.rule.level,
                m.rule.actions.clone(),
            ))
            .or_default()
            .push(m);
    }
    groups
}

/// Compression of one group of [`grouped`] at a time, for a caller that compresses
/// some groups again and keeps the others (the incremental plan's eviction).
pub(super) struct Merger {
    fields: Vec<PacketField>,
}

impl Merger {
    pub(super) fn new(profile: &Profile) -> Merger {
        Merger {
            fields: mergeable_fields(profile),
        }
    }

    /// One group compressed (unsorted: [`sort_rules`] orders the slice).
    pub(super) fn merge(&self, group: Vec<Merged>) -> Vec<Merged> {
        merge(group, &self.fields)
    }
}

/// The fields whose bits compression may mask: those the profile matches with any mask.
fn mergeable_fields(profile: &Profile) -> Vec<PacketField> {
    [
        PacketField::Ipv4Src,
        PacketField::Ipv4Dst,
        PacketField::L4Dport,
    ]
    .into_iter()
    .filter(|f| {
        profile
            .caps
            .fields
            .get(f.name())
            .is_some_and(|c| c.masks == MaskCap::Any)
    })
    .collect()
}

/// The slice's order: port and direction, level, then matches, then actions.
pub(super) fn sort_rules(rules: &mut [Merged]) {
    fn key(m: &Merged) -> (u16, PortDirection, u32, &[HwMatch], &[HwAction]) {
        let r = &m.rule;
        (r.port, r.direction, r.level, &r.matches, &r.actions)
    }
    rules.sort_by(|a, b| key(a).cmp(&key(b)));
}

/// The placed entries of `chosen` with their levels, in index order.
fn placed(cands: &[Candidate], chosen: &[usize], profile: &Profile) -> Vec<(usize, u32)> {
    let levels = levels(cands, chosen, profile.plan_levels());
    let mut out: Vec<(usize, u32)> = levels
        .into_iter()
        .filter(|(_, (_, ok))| *ok)
        .map(|(i, (l, _))| (i, l))
        .collect();
    out.sort_unstable();
    out
}

/// How many flow entries `chosen` takes after compression: what the budget charges.
pub fn count(cands: &[Candidate], chosen: &[usize], profile: &Profile) -> u64 {
    compressed(cands, &placed(cands, chosen, profile), profile).len() as u64
}

/// Assigns levels, builds the compressed slice, and fills the placements of the chosen.
/// Also returns the candidates each slice rule covers (by rule id).
pub fn build(
    cands: &mut [Candidate],
    chosen: &[usize],
    profile: &Profile,
) -> (PlanSlice, Usage, Vec<Vec<u32>>) {
    let placed = place(cands, chosen, profile);
    let rules = compressed(cands, &placed, profile);
    finish(cands, &placed, rules, profile)
}

/// Gives the chosen entries their levels and hardware placements; an entry whose level
/// the profile lacks leaves for eBPF. Returns the placed entries and levels, in index
/// order.
pub(super) fn place(
    cands: &mut [Candidate],
    chosen: &[usize],
    profile: &Profile,
) -> Vec<(usize, u32)> {
    let range = profile.plan_levels();
    let levels = levels(cands, chosen, range.clone());
    let mut placed: Vec<(usize, u32)> = Vec::new();
    let mut order = chosen.to_vec();
    order.sort_unstable();
    for i in order {
        let (level, fits) = levels[&i];
        cands[i].level = level;
        if !fits {
            cands[i].leave(Why::Budget {
                resource: "priority levels".into(),
                limit: range.len() as u64,
            });
            continue;
        }
        placed.push((i, level));
        let c = &mut cands[i];
        c.placement.target = Target::Hardware;
        let does = match c.kind {
            Kind::Drop => "drop",
            Kind::Allow => "mark as allowed, hand to software",
            Kind::Redirect => "mark for the L7 proxy, hand to software",
        };
        c.placement
            .chain
            .push(format!("in budget: priority level {level}"));
        // Every rule of an entry is on one port; explain names it.
        let does = match c.rules.first() {
            Some(r) => format!("{does}; {}", super::capability::port_text(r.port)),
            None => does.to_string(),
        };
        c.placement.why = Why::InHardware { does: does.into() };
    }
    placed
}

/// The slice of `rules` (compressed rules of the `placed` entries, in any order): sorted,
/// numbered, with counters on the drops when the profile has enough, and the usage.
/// Returns the candidates each rule covers too (by rule id).
pub(super) fn finish(
    cands: &[Candidate],
    placed: &[(usize, u32)],
    mut rules: Vec<Merged>,
    profile: &Profile,
) -> (PlanSlice, Usage, Vec<Vec<u32>>) {
    // Levels are counted within the plan's range: level 0, when kept for connection
    // offload, is neither used nor free for the plan.
    let range = profile.plan_levels();
    let levels_limit = range.end - range.start;
    let mut usage = Usage {
        entries_limit: profile.plan_entries().unwrap_or(u64::MAX),
        counters_limit: profile.budget.counters.unwrap_or(u64::MAX),
        levels_limit,
        ..Usage::default()
    };
    for (i, _) in placed {
        usage.uncompressed += cands[*i].placement.hw_rules;
        usage.naive += cands[*i].placement.naive_rules;
    }
    sort_rules(&mut rules);
    let drops = rules
        .iter()
        .filter(|m| m.rule.actions.contains(&HwAction::Drop))
        .count() as u64;
    // Counters go on every drop rule or on none, so overlapping drops stay identical.
    let counted = drops > 0 && drops <= usage.counters_limit;
    if counted {
        usage.counters = drops;
    }
    let mut origins = Vec::with_capacity(rules.len());
    let mut out = Vec::with_capacity(rules.len());
    for (i, m) in rules.into_iter().enumerate() {
        let mut r = m.rule;
        r.id = i as u32;
        r.origin = origin_text(cands, &m.from);
        if counted && r.actions.contains(&HwAction::Drop) {
            r.actions = vec![HwAction::Count, HwAction::Drop];
        }
        out.push(r);
        origins.push(m.from);
    }
    usage.entries = out.len() as u64;
    usage.levels = out
        .iter()
        .map(|r| (r.level + 1).saturating_sub(range.start))
        .max()
        .unwrap_or(0);
    (
        PlanSlice {
            target: profile.name.clone(),
            rules: out,
        },
        usage,
        origins,
    )
}

/// The entries a rule covers, as explain shows them: sorted names, at most four.
fn origin_text(cands: &[Candidate], from: &[u32]) -> String {
    let mut parts: Vec<String> = from
        .iter()
        .map(|i| cands[*i as usize].placement.entry_name())
        .collect();
    parts.sort_unstable();
    parts.dedup();
    if parts.len() > 4 {
        format!("{},... ({} entries)", parts[..4].join(","), parts.len())
    } else {
        parts.join(",")
    }
}

/// Merges rules of one level and action that differ in one bit of one field.
fn merge(mut rules: Vec<Merged>, fields: &[PacketField]) -> Vec<Merged> {
    // Identical matches first.
    rules.sort_by(|a, b| a.rule.matches.cmp(&b.rule.matches));
    rules.dedup_by(|a, b| {
        if a.rule.matches == b.rule.matches {
            union_into(&mut b.from, &a.from);
            true
        } else {
            false
        }
    });
    // Address fields first, as unions: pairwise merging needs equal masks, so an
    // identity's aggregated /31 never merged with a neighbouring /32 of another identity
    // (one pod more of an identity could double the slice).
    for f in fields {
        if matches!(f, PacketField::Ipv4Src | PacketField::Ipv4Dst) {
            rules = aggregate(rules, *f);
        }
    }
    loop {
        let before = rules.len();
        for f in fields {
            for bit in 0..f.width() {
                rules = merge_bit(rules, *f, bit);
            }
        }
        if rules.len() == before {
            return rules;
        }
    }
}

/// Rewrites each set of rules that match alike except on the 32-bit field `f` as the
/// fewest prefixes of `f` that cover the union of theirs (exact: the same packets). A set
/// with a match on `f` that is not a prefix is left as it is.
fn aggregate(rules: Vec<Merged>, f: PacketField) -> Vec<Merged> {
    let mut sets: FxHashMap<Vec<HwMatch>, Vec<Merged>> = FxHashMap::default();
    let mut order: Vec<Vec<HwMatch>> = Vec::new();
    for r in rules {
        let rest: Vec<HwMatch> = r
            .rule
            .matches
            .iter()
            .filter(|m| m.field != f)
            .copied()
            .collect();
        let set = sets.entry(rest).or_insert_with_key(|k| {
            order.push(k.clone());
            Vec::new()
        });
        set.push(r);
    }
    let mut out = Vec::new();
    for key in order {
        let set = sets.remove(&key).unwrap_or_default();
        if set.len() == 1 {
            out.extend(set);
            continue;
        }
        match intervals(&set, f) {
            Some(iv) => out.extend(cover(set, &iv, f)),
            None => out.extend(set),
        }
    }
    out
}

/// Each rule's interval of `f` (no match: every value), or `None` if one is not a prefix.
fn intervals(set: &[Merged], f: PacketField) -> Option<Vec<(u64, u64)>> {
    set.iter()
        .map(|r| match r.rule.get(f) {
            None => Some((0, u64::from(u32::MAX))),
            Some(m) => {
                let mask = m.mask as u32;
                let len = mask.count_ones();
                if u128::from(mask) != m.mask
                    || u128::from(mask) != crate::mag::prefix_mask(len, 32)
                {
                    return None;
                }
                let lo = u64::from(m.value as u32 & mask);
                Some((lo, lo + (u64::from(!mask))))
            }
        })
        .collect()
}

/// The rules of `set` (one rest-of-key, intervals `iv` of `f`) rewritten as the prefixes
/// of the union of their intervals, each covering the entries of the rules it overlaps.
fn cover(set: Vec<Merged>, iv: &[(u64, u64)], f: PacketField) -> Vec<Merged> {
    let mut spans: Vec<(u64, u64)> = iv.to_vec();
    spans.sort_unstable();
    let mut union: Vec<(u64, u64)> = Vec::new();
    for (lo, hi) in spans {
        match union.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => union.push((lo, hi)),
        }
    }
    let mut prefixes = Vec::new();
    for (lo, hi) in union {
        super::prefixes::range_to_prefixes(lo, hi, &mut prefixes);
    }
    let template = &set[0].rule;
    prefixes
        .into_iter()
        .map(|(value, len)| {
            let lo = u64::from(value);
            let hi = lo + (1u64 << (32 - u32::from(len))) - 1;
            let mut from: Vec<u32> = Vec::new();
            for (r, (a, b)) in set.iter().zip(iv) {
                if *a <= hi && lo <= *b {
                    from.extend_from_slice(&r.from);
                }
            }
            from.sort_unstable();
            from.dedup();
            let mut rule = template.clone();
            rule.matches.retain(|m| m.field != f);
            if len > 0 {
                rule.matches
                    .push(HwMatch::prefix(f, u128::from(value), u32::from(len)));
            } else {
                keep_ipv4(&mut rule, f);
            }
            rule.matches.sort();
            Merged { rule, from }
        })
        .collect()
}

/// `into ∪ from`, both sorted without repeats.
fn union_into(into: &mut Vec<u32>, from: &[u32]) {
    into.extend_from_slice(from);
    into.sort_unstable();
    into.dedup();
}

fn merge_bit(rules: Vec<Merged>, f: PacketField, bit: u32) -> Vec<Merged> {
    let b = 1u128 << bit;
    // Called thousands of times per plan on hundreds of thousands of rules: a rule's key
    // (its matches with this bit cleared) is hashed in place rather than copied, and only
    // compared in full on a hash hit. Keys whose hash collides with another key go to
    // `slow`, keyed by the full key, so the result is exactly that of a map of full keys.
    let mut seen: FxHashMap<u64, usize> = FxHashMap::default();
    let mut slow: FxHashMap<Vec<HwMatch>, usize> = FxHashMap::default();
    let mut out: Vec<Merged> = Vec::with_capacity(rules.len());
    for r in rules {
        let Some(m) = r.rule.get(f).copied() else {
            out.push(r);
            continue;
        };
        if m.mask & b == 0 {
            out.push(r);
            continue;
        }
        let matches = &r.rule.matches;
        let h = key_hash(matches, f, b);
        let fast = seen.get(&h).copied();
        let same = fast.is_some_and(|j| same_key(&out[j].rule.matches, matches, f, b));
        let partner = if same {
            seen.remove(&h)
        } else if slow.is_empty() && fast.is_none() {
            None
        } else {
            slow.remove(&masked(matches, f, b))
        };
        if let Some(j) = partner {
            let other = &mut out[j];
            let ov = other.rule.get(f).map_or(0, |m| m.value & b);
            if ov != m.value & b {
                union_into(&mut other.from, &r.from);
                other.rule.matches = masked(matches, f, b)
                    .into_iter()
                    .filter(|k| k.mask != 0)
                    .collect();
                keep_ipv4(&mut other.rule, f);
                continue;
            }
        }
        // Remember this rule under its key: in the fast map when its hash is free (or was
        // this very key's), else in the slow one.
        if same || fast.is_none() || partner.is_some() && !seen.contains_key(&h) {
            seen.insert(h, out.len());
        } else {
            slow.insert(masked(matches, f, b), out.len());
        }
        out.push(r);
    }
    out
}

/// After a merge widened field `f` to every value: when `f` was the rule's last IPv4
/// field, the rule would match every ethertype (IPv6 and ARP too) and its transport match
/// could not be written as one rte_flow pattern, so the ethertype keeps it to the IPv4
/// packets the merged rules were about. (An egress rule on a pod's port matches only
/// destinations, so merging them can widen its one address field to everything.)
fn keep_ipv4(rule: &mut HwRule, f: PacketField) {
    use PacketField::{EthType, Ipv4Dst, Ipv4Src, Ipv4Tos};
    if !matches!(f, Ipv4Src | Ipv4Dst | Ipv4Tos) {
        return;
    }
    let v4 = [Ipv4Src, Ipv4Dst, Ipv4Tos]
        .iter()
        .any(|k| rule.get(*k).is_some_and(|m| m.mask != 0));
    if !v4 && rule.get(EthType).is_none() {
        rule.matches
            .push(HwMatch::exact(EthType, crate::mag::eth::IPV4));
        rule.matches.sort();
    }
}

/// The matches with `bit` of field `f` cleared in value and mask: a rule's merge key.
fn masked(matches: &[HwMatch], f: PacketField, bit: u128) -> Vec<HwMatch> {
    matches
        .iter()
        .map(|m| {
            let mut m = *m;
            if m.field == f {
                m.mask &= !bit;
                m.value &= !bit;
            }
            m
        })
        .collect()
}

/// The hash of [`masked`] without building it.
fn key_hash(matches: &[HwMatch], f: PacketField, bit: u128) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = rustc_hash::FxHasher::default();
    matches.len().hash(&mut h);
    for m in matches {
        let clear = if m.field == f { !bit } else { u128::MAX };
        m.field.hash(&mut h);
        (m.value & clear).hash(&mut h);
        (m.mask & clear).hash(&mut h);
    }
    h.finish()
}

/// Whether two rules have the same merge key.
fn same_key(a: &[HwMatch], b: &[HwMatch], f: PacketField, bit: u128) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let clear = if x.field == f { !bit } else { u128::MAX };
            x.field == y.field
                && x.value & clear == y.value & clear
                && x.mask & clear == y.mask & clear
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress_drop(prefix: u32, len: u32) -> Merged {
        Merged {
            rule: HwRule {
                id: 0,
                port: 7,
                direction: PortDirection::Ingress,
                level: 0,
                matches: vec![
                    HwMatch::exact(PacketField::IpProto, 6),
                    HwMatch::prefix(PacketField::Ipv4Dst, u128::from(prefix), len),
                    HwMatch::exact(PacketField::L4Dport, 80),
                ],
                actions: vec![HwAction::Drop],
                origin: String::new(),
            },
            from: vec![prefix],
        }
    }

    /// Two halves of the address space merge into a rule with no address match; it must
    /// still be an IPv4 rule (the rules it replaces matched IPv4 only), or it would match
    /// IPv6 and ARP too and could not be written as one rte_flow pattern.
    #[test]
    fn a_merge_to_every_address_keeps_the_rule_ipv4() {
        for merged in [
            merge(
                vec![egress_drop(0, 1), egress_drop(0x8000_0000, 1)],
                &[PacketField::Ipv4Dst],
            ),
            merge_bit(
                vec![egress_drop(0, 1), egress_drop(0x8000_0000, 1)],
                PacketField::Ipv4Dst,
                31,
            ),
        ] {
            assert_eq!(merged.len(), 1, "{merged:?}");
            let r = &merged[0].rule;
            assert!(r.get(PacketField::Ipv4Dst).is_none(), "{r:?}");
            assert_eq!(
                r.get(PacketField::EthType).map(|m| m.value),
                Some(crate::mag::eth::IPV4),
                "{r:?}"
            );
            assert!(r.matches.windows(2).all(|w| w[0].field <= w[1].field));
        }
    }
}
