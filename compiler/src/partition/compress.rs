//! Step 4, compression and priority levels.
//!
//! **Levels by overlap.** An entry's level is one below the deepest entry above it that it
//! depends on (overlapping, another action); entries with nothing above them share level 0.
//! So the number of levels is the longest chain of overlapping entries with alternating
//! actions, not the number of policy priorities. An entry that would need a level the
//! profile does not have stays in eBPF (so do the entries below it, which need deeper
//! levels still).
//!
//! **Merging (TCAM-Razor style).** Within one level and one action, two rules that differ
//! in exactly one bit of one field's value (same masks everywhere) become one rule with
//! that bit masked out. The union is exact, so the table means the same; repeated, this
//! aggregates CIDRs and port prefixes across rules and entries.

use super::capability::{Candidate, Kind};
use super::{Target, Usage, Why};
use crate::backend::{HwAction, HwMatch, HwRule, MaskCap, PacketField, PlanSlice, Profile};
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
    }
}

/// The level of each chosen entry (one below the deepest entry above it that it depends
/// on), and whether it fits the profile's levels: an entry is placed only if its level
/// exists and every entry it depends on is placed.
fn levels(cands: &[Candidate], chosen: &[usize], limit: u32) -> HashMap<usize, (u32, bool)> {
    let mut order = chosen.to_vec();
    order.sort_by_key(|i| (std::cmp::Reverse(cands[*i].priority), *i));
    let mut out: HashMap<usize, (u32, bool)> = HashMap::with_capacity(order.len());
    for i in order {
        let deps = &cands[i].deps;
        // An entry above that is not in `chosen` was placed by an earlier budget pool (a
        // reservation): counted as placed at level 0.
        let level = deps
            .iter()
            .map(|d| out.get(d).map_or(1, |(l, _)| l + 1))
            .max()
            .unwrap_or(0);
        let deps_placed = deps.iter().all(|d| !matches!(out.get(d), Some((_, false))));
        out.insert(i, (level, level < limit && deps_placed));
    }
    out
}

/// The compressed rules of the placed entries, ordered by level, matches and actions.
fn compressed(cands: &[Candidate], placed: &[(usize, u32)], profile: &Profile) -> Vec<HwRule> {
    let mut groups: BTreeMap<(u32, Vec<HwAction>), Vec<HwRule>> = BTreeMap::new();
    for (i, level) in placed {
        for r in &cands[*i].rules {
            let mut r = r.clone();
            r.level = *level;
            groups
                .entry((*level, r.actions.clone()))
                .or_default()
                .push(r);
        }
    }
    let mergeable: Vec<PacketField> = [
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
    .collect();
    let mut rules: Vec<HwRule> = Vec::new();
    for (_, group) in groups {
        rules.extend(merge(group, &mergeable));
    }
    rules.sort_by(|a, b| (a.level, &a.matches, &a.actions).cmp(&(b.level, &b.matches, &b.actions)));
    rules
}

/// The placed entries of `chosen` with their levels, in index order.
fn placed(cands: &[Candidate], chosen: &[usize], profile: &Profile) -> Vec<(usize, u32)> {
    let levels = levels(cands, chosen, profile.caps.priority_levels.max(1));
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
pub fn build(cands: &mut [Candidate], chosen: &[usize], profile: &Profile) -> (PlanSlice, Usage) {
    let levels_limit = profile.caps.priority_levels.max(1);
    let levels = levels(cands, chosen, levels_limit);
    let mut placed: Vec<(usize, u32)> = Vec::new();
    let mut order = chosen.to_vec();
    order.sort_unstable();
    for i in order {
        let (level, fits) = levels[&i];
        cands[i].level = level;
        if !fits {
            cands[i].leave(Why::Budget {
                resource: "priority levels".into(),
                limit: u64::from(levels_limit),
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
        c.placement.why = Why::InHardware { does: does.into() };
    }
    let mut usage = Usage {
        entries_limit: profile.budget.entries.map_or(u64::MAX, |e| {
            e.saturating_sub(profile.budget.reserved_entries)
        }),
        counters_limit: profile.budget.counters.unwrap_or(u64::MAX),
        levels_limit,
        ..Usage::default()
    };
    for (i, _) in &placed {
        usage.uncompressed += cands[*i].placement.hw_rules;
        usage.naive += cands[*i].placement.naive_rules;
    }
    let mut rules = compressed(cands, &placed, profile);
    let drops = rules
        .iter()
        .filter(|r| r.actions.contains(&HwAction::Drop))
        .count() as u64;
    // Counters go on every drop rule or on none, so overlapping drops stay identical.
    if drops > 0 && drops <= usage.counters_limit {
        for r in rules
            .iter_mut()
            .filter(|r| r.actions.contains(&HwAction::Drop))
        {
            r.actions = vec![HwAction::Count, HwAction::Drop];
        }
        usage.counters = drops;
    }
    for (i, r) in rules.iter_mut().enumerate() {
        r.id = i as u32;
    }
    usage.entries = rules.len() as u64;
    usage.levels = rules.iter().map(|r| r.level + 1).max().unwrap_or(0);
    (
        PlanSlice {
            target: profile.name.clone(),
            rules,
        },
        usage,
    )
}

/// Merges rules of one level and action that differ in one bit of one field.
fn merge(mut rules: Vec<HwRule>, fields: &[PacketField]) -> Vec<HwRule> {
    // Identical matches first.
    rules.sort_by(|a, b| a.matches.cmp(&b.matches));
    rules.dedup_by(|a, b| {
        if a.matches == b.matches {
            b.origin = merge_origin(&b.origin, &a.origin);
            true
        } else {
            false
        }
    });
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

fn merge_origin(a: &str, b: &str) -> String {
    let mut parts: Vec<&str> = a.split(',').chain(b.split(',')).collect();
    parts.sort_unstable();
    parts.dedup();
    if parts.len() > 4 {
        format!("{},... ({} entries)", parts[..4].join(","), parts.len())
    } else {
        parts.join(",")
    }
}

fn merge_bit(rules: Vec<HwRule>, f: PacketField, bit: u32) -> Vec<HwRule> {
    let b = 1u128 << bit;
    // Called thousands of times per plan on hundreds of thousands of rules: a rule's key
    // (its matches with this bit cleared) is hashed in place rather than copied, and only
    // compared in full on a hash hit. Keys whose hash collides with another key go to
    // `slow`, keyed by the full key, so the result is exactly that of a map of full keys.
    let mut seen: FxHashMap<u64, usize> = FxHashMap::default();
    let mut slow: FxHashMap<Vec<HwMatch>, usize> = FxHashMap::default();
    let mut out: Vec<HwRule> = Vec::with_capacity(rules.len());
    for r in rules {
        let Some(m) = r.get(f).copied() else {
            out.push(r);
            continue;
        };
        if m.mask & b == 0 {
            out.push(r);
            continue;
        }
        let h = key_hash(&r.matches, f, b);
        let fast = seen.get(&h).copied();
        let same = fast.is_some_and(|j| same_key(&out[j].matches, &r.matches, f, b));
        let partner = if same {
            seen.remove(&h)
        } else if slow.is_empty() && fast.is_none() {
            None
        } else {
            slow.remove(&masked(&r.matches, f, b))
        };
        if let Some(j) = partner {
            let other = &mut out[j];
            let ov = other.get(f).map_or(0, |m| m.value & b);
            if ov != m.value & b {
                other.origin = merge_origin(&other.origin, &r.origin);
                other.matches = masked(&r.matches, f, b)
                    .into_iter()
                    .filter(|k| k.mask != 0)
                    .collect();
                continue;
            }
        }
        // Remember this rule under its key: in the fast map when its hash is free (or was
        // this very key's), else in the slow one.
        if same || fast.is_none() || partner.is_some() && !seen.contains_key(&h) {
            seen.insert(h, out.len());
        } else {
            slow.insert(masked(&r.matches, f, b), out.len());
        }
        out.push(r);
    }
    out
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
