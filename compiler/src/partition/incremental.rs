//! Re-planning after an event: only the entries the event touched are planned again.
//!
//! A plan from scratch ranks every ingress entry and compresses the whole pool several
//! times (about a second per compression at 1,500 pods). An event changes a few entries:
//! a pod's address, an identity's prefixes, one policy's entries. [`replan`] starts from
//! the [`Basis`] the previous plan left and
//!
//! 0. **screens** only the policy entries whose screen reads something that changed (their
//!    pod's addresses, their remote identity's prefixes, for egress the service
//!    frontends); of the others, those that passed before pass with the counts the last
//!    re-plan found;
//! 1. **keeps** every entry it placed whose hardware rules cannot have changed: the same
//!    entry (by content and table, not index: indices move when entries come and go), the
//!    same addresses of its pod, the same prefixes for its remote identity, for a drop the
//!    same policy of its pod in the other direction (what the soundness proof read: the
//!    egress policy for an ingress drop, the ingress policy for an egress drop), and for
//!    an egress entry the same service frontends (which it must not match); and, when
//!    only identities' prefixes changed for it (a pod added, deleted or relabelled), an
//!    entry built from them, built again: its compressed rules that match no packet it
//!    stopped deciding stay, and only its new rules and those of the broken compressed
//!    rules are compressed (all or none; rules are compared as the device holds them,
//!    without the origin text, which names an entry by its place). Their new rules,
//!    compressed, must fit the table's free entries; on a full table the lowest-ranked
//!    kept entries (rebuilt ones included) that nothing kept depends on and that share no
//!    compressed rule leave to make room, as a fresh plan leaves the lowest out first;
//! 2. **re-checks priority closure** of the kept entries against the new graph, highest
//!    priority first: a kept entry with an entry above it that is not kept (a new one, or
//!    one the event touched) leaves and competes again, and so do the kept entries below
//!    it that depend on it;
//! 3. **keeps the compressed rules** all of whose entries are kept at their old level,
//!    exactly as they were; of a compressed rule that also covered an entry that left or
//!    moved, the rules of its kept entries that no rule which stays covers are compressed
//!    again (so coverage is never lost, which priority closure needs);
//! 4. **fills** the free budget up to where a plan from scratch stops (the headroom,
//!    `budget::HEADROOM_PERCENT`, stays free) in rank order from every candidate it does
//!    not hold, charging each its uncompressed cost, as the last step of a plan from
//!    scratch does;
//!    then takes every candidate the event touched that did not fit so charged (unless the
//!    last plan left it out for budget and it would not be owed, or owes little: that one
//!    competes for the free budget only), and compresses what it took together with the
//!    rules of step 3. When the compressed total does not fit the budget, the
//!    lowest-ranked touched entries (each with the entries above it that it brought) are
//!    evicted until it does, as a fresh plan would leave them out first; the search
//!    recompresses only the compression groups (port, level, action) their rules are in.
//!    The headroom a plan from scratch leaves free is for this step and step 1's new
//!    rules;
//! 5. **displaces**, when the entries left out outrank kept ones by more value than the
//!    plan may owe (below): the lowest-ranked kept entries that no entry built depends on
//!    leave, as many as free the flow entries the owed entries cost, and steps 3 and 4 run
//!    again, at most [`MAX_DISPLACEMENTS`] times. A fresh plan places every drop before
//!    any mark; without this step the marks kept from earlier plans held the table
//!    against new pods' drops, and every few pod events on a full table declined to a plan
//!    from scratch (seconds at 1,500 pods, minutes at full scale).
//!
//! # The bound on its value
//!
//! Soundness is the same as a fresh plan's: every placed entry passed capability,
//! stateless soundness and priority closure on the current graph (steps 1 and 2 re-check
//! what an event can change), and compression only merges rules of one level and action
//! exactly. Its value can differ from a fresh plan's in two ways, and each is bounded:
//!
//! - **Ranking.** A candidate the event touched would be ranked against every kept entry
//!   by a fresh plan; the incremental plan cannot tell whether it would win. It takes every
//!   touched candidate the last plan placed, and when they do not fit once compressed it
//!   evicts the lowest-ranked of them (it declines, [`FromScratch::Budget`], only when
//!   the kept rules alone do not fit). Every candidate it leaves out owes its value, or,
//!   when the last plan from scratch left it out at no less cost (as the screen counts
//!   it), the value it gained since ([`owes`]): when the value owed passes
//!   [`MAX_OWED_PERCENT`] of the value placed, it displaces kept entries (step 5), and
//!   when that does not bring it within, it declines ([`FromScratch::Ranking`]). A kept
//!   entry displaced (by step 5, or to make room in step 1) is owed like any other. So
//!   its value is at least a fresh plan's less that share, and while the budget has room
//!   it places exactly the entries a fresh plan places (the property test checks this).
//!   On a full table a
//!   touched entry the last plan had left out no longer forces a plan from scratch: an
//!   identity's new prefix touches every entry naming it, thousands on a node whose egress
//!   drops fill the table (the session bench planned from scratch on every event before).
//! - **Compression.** Rules compressed in separate rounds can miss merges one round
//!   would find. The basis remembers the compression ratio (uncompressed rules per flow
//!   entry) of the last plan from scratch; when an incremental plan's ratio falls below
//!   [`MIN_RATIO_KEPT`] of it, or after [`MAX_EVENTS`] incremental plans, `replan`
//!   declines, and the caller plans from scratch. This bounds the ratio, not the value:
//!   on a table of three entries, a re-plan that holds four marks in two rules where a
//!   fresh plan merges them into one has no room for a fifth, and places a fifth less
//!   value than the fresh plan (found by checking value in the small-budget property
//!   test; not checked there, as it does not hold).
//!
//! Placement hints (`.pipe` `place` blocks) rank and reserve across the whole graph, so a
//! node with hints is always planned from scratch.

use super::budget::{fill_limit, ranked, Chooser};
use super::capability::{
    note_capable, screen, stage_placements, unscreened, Candidate, Context, Kind, Reuse, RuleCheck,
    Run, Screened, Side,
};
use super::closure::{note_closed, note_sound, Closure};
use super::compress::{self, Merged};
use super::{assemble, Placement, Plan, Why};
use crate::backend::{HwAction, HwRule, PlanSlice, Profile, RuleContent};
use crate::mag::{ActionCall, Field, FieldMatch, Mag, TableId};
use crate::util::FxHashSet;
use rustc_hash::{FxHashMap, FxHasher};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Incremental plans in a row before the next plan from scratch.
pub const MAX_EVENTS: u32 = 4096;

/// The share of the last plan from scratch's compression ratio an incremental plan must
/// keep; below it the next plan is from scratch. It is a bound on the worst case, not a
/// target: with new pods at scattered addresses a plan from scratch compresses worse too
/// (in the session bench, after 10 pod adds, 5,487 flow entries from scratch against 4,487
/// incremental for the same 63,495 entries), and re-planning then costs seconds for nothing.
pub const MIN_RATIO_KEPT: f64 = 0.5;

/// The value an incremental plan may leave out that a fresh plan might place, in percent
/// of the value it places; above it the plan is made from scratch. Owed are the entries
/// left out that the last plan from scratch did not leave out as they rank now: a touched
/// entry that did not fit the free budget, an entry an event made more valuable or
/// cheaper, an entry no fresh plan ranked.
pub const MAX_OWED_PERCENT: u64 = 5;

/// A policy entry as plans know it across graphs: its table and content, not its index.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EntryKey {
    side: Side,
    priority: u32,
    matches: Arc<[FieldMatch]>,
    action: ActionCall,
}

impl EntryKey {
    /// The order of [`Priors`]: a canonical graph's, in which the candidates of each
    /// side come (higher priority first, then by matches), so that a re-plan meets the
    /// keys in order.
    fn order(&self, other: &EntryKey) -> Ordering {
        self.side
            .cmp(&other.side)
            .then_with(|| other.priority.cmp(&self.priority))
            .then_with(|| self.matches.cmp(&other.matches))
            .then_with(|| self.action.cmp(&other.action))
    }
}

/// What the last plan made of its policy entries, by key: per side, in key order
/// ([`EntryKey::order`]) with no key twice. A re-plan asks it for tens of thousands of
/// candidates, which come in nearly the same order: walking the keys alongside them reads
/// memory in sequence, where a hash map of this size missed the cache at every look-up.
/// The sides are kept apart because the two policy tables may come in either order; one
/// list in key order cost a split of every entry by side each time a basis was built.
#[derive(Clone, Debug, Default)]
struct Priors([Vec<(EntryKey, Prior)>; 2]);

/// The place of a side's priors in [`Priors`].
fn side_at(side: Side) -> usize {
    match side {
        Side::Ingress => 0,
        Side::Egress => 1,
    }
}

impl Priors {
    /// The priors of `entries`, in any order. Of two entries with one key (which a
    /// validated graph does not have), the later one's answer wins, as it would in a map.
    #[cfg(test)]
    fn new(entries: Vec<(EntryKey, Prior)>) -> Priors {
        let (ingress, egress) = entries
            .into_iter()
            .partition(|(k, _)| k.side == Side::Ingress);
        Priors::of_sides([ingress, egress], Default::default())
    }

    /// The priors of each side's entries, given in candidate order: each policy table
    /// holds its entries in key order, so they are sorted only when they are not. `found`:
    /// per side and entry, where a re-plan found its key in the last priors (entries found
    /// at rising places are in order without comparing their keys, which was a third of
    /// building a basis).
    fn of_sides(mut sides: [Vec<(EntryKey, Prior)>; 2], found: [Vec<Option<u32>>; 2]) -> Priors {
        for (entries, found) in sides.iter_mut().zip(found) {
            let at = |i: usize| found.get(i).copied().flatten();
            let in_order = |i: usize| match (at(i), at(i + 1)) {
                (Some(a), Some(b)) if a < b => true,
                _ => entries[i].0.order(&entries[i + 1].0) == Ordering::Less,
            };
            if (1..entries.len()).all(|i| in_order(i - 1)) {
                continue;
            }
            // Stable, so that of equal keys the later stays later.
            entries.sort_by(|a, b| a.0.order(&b.0));
            entries.dedup_by(|later, earlier| {
                if later.0 != earlier.0 {
                    return false;
                }
                earlier.1.absorb(std::mem::take(&mut later.1));
                true
            });
        }
        Priors(sides)
    }

    /// A walk over the priors that expects each side's keys in order.
    fn walk(&self) -> Walk<'_> {
        Walk {
            priors: &self.0,
            next: [0, 0],
        }
    }
}

/// A position in each side of [`Priors`]: the place after the last key found.
struct Walk<'a> {
    priors: &'a [Vec<(EntryKey, Prior)>; 2],
    next: [usize; 2],
}

impl<'a> Walk<'a> {
    /// What the last plan made of `key`, if anything.
    #[cfg(test)]
    fn find(&mut self, key: &EntryKey) -> Option<&'a Prior> {
        self.find_at(key).map(|(_, p)| p)
    }

    /// [`Walk::find`], with the key's place in its side of the priors.
    fn find_at(&mut self, key: &EntryKey) -> Option<(u32, &'a Prior)> {
        let side = side_at(key.side);
        let priors = &self.priors[side];
        let at = self.next[side];
        if let Some((k, p)) = priors.get(at) {
            if k == key {
                self.next[side] = at + 1;
                return Some((at as u32, p));
            }
        }
        // A key between the last one found and the next is not there: a new entry, or one
        // the last plan did not remember.
        let after_last = at == 0 || priors[at - 1].0.order(key) == Ordering::Less;
        let before_next = priors
            .get(at)
            .is_none_or(|(k, _)| k.order(key) == Ordering::Greater);
        if after_last && before_next {
            return None;
        }
        match priors.binary_search_by(|(k, _)| k.order(key)) {
            Ok(found) => {
                self.next[side] = found + 1;
                Some((found as u32, &priors[found].1))
            }
            Err(gap) => {
                self.next[side] = gap;
                None
            }
        }
    }
}

/// How the last plan from scratch ranked a candidate it left out for budget: its value
/// and the cost its screen counted ([`Candidate::screened`]), or `None` when an
/// incremental plan first left it out. The screen's count, not the rules built: a plan
/// builds only the entries it tries, so the same entry left out by a fresh plan (built,
/// 989 rules once service addresses are cut out) and met unbuilt by a re-plan (224 before
/// the cut) would seem to have got cheaper, and be owed, though nothing changed.
type Ranked = Option<(u64, u64)>;

/// What the last plan made of one policy entry. The four are kept apart, as they would
/// be in four maps, so that two entries with one key behave as they did.
#[derive(Clone, Debug, Default)]
struct Prior {
    /// What its screen counted, when it passed (screened by its plan, or counted by the
    /// plan before and taken over).
    screen: Option<Screened>,
    /// Its place in [`Basis::held`], when it was placed.
    held: Option<u32>,
    /// How it was ranked, when it was left out for budget (see [`Ranked`]).
    left: Option<Ranked>,
    /// Its placement, when it failed a check that reads only its own inputs.
    failed: Option<Box<super::Placement>>,
}

impl Prior {
    /// Takes what `later` says, where it says anything.
    fn absorb(&mut self, later: Prior) {
        if later.screen.is_some() {
            self.screen = later.screen;
        }
        if later.held.is_some() {
            self.held = later.held;
        }
        if later.left.is_some() {
            self.left = later.left;
        }
        if later.failed.is_some() {
            self.failed = later.failed;
        }
    }
}

/// What a plan saw of its candidates before placing them, for its basis: what each one's
/// screen counted (`None`: it did not pass), and for an incremental plan how the last plan
/// from scratch ranked each one it leaves out (an entry first left out now was ranked by
/// no fresh plan). Every keyed entry has a prior, so that the next re-plan finds each of
/// its candidates in order.
#[derive(Clone, Copy)]
struct Seen<'a> {
    screens: &'a [Option<Screened>],
    ranks: Option<&'a [Option<Ranked>]>,
    /// For an incremental plan, where each candidate's key was found in the last priors.
    found: Option<&'a [Option<u32>]>,
}

/// A placed entry: its uncompressed rules and level.
#[derive(Clone, Debug)]
struct Held {
    rules: Vec<HwRule>,
    level: u32,
    /// Whether service addresses were cut out of its rules (for its chain).
    cut: bool,
    /// Whether its rules were narrowed to some identities (for its chain).
    narrowed: Option<(u32, u32)>,
    /// A narrowed drop's rules by remote prefix ([`Candidate::runs`]).
    runs: Vec<Run>,
}

/// What a plan leaves for the next incremental one: what its placed entries read, their
/// rules, and which compressed rule covers which of them.
#[derive(Clone, Debug, Default)]
pub struct Basis {
    profile: String,
    /// Identity → its IPv4 prefixes and naive cost, as the placed rules read them.
    ids: BTreeMap<u128, (Vec<super::prefixes::Prefix>, u64)>,
    /// Endpoint → its IPv4 addresses.
    eps: BTreeMap<u128, Vec<u32>>,
    /// Endpoint (`None`: entries for several endpoints, and the default) → a hash of the
    /// egress entries the soundness proof of its ingress drops read.
    egress: BTreeMap<Option<u128>, u64>,
    /// The same of the ingress entries, which the proof of its egress drops read.
    ingress: BTreeMap<Option<u128>, u64>,
    /// A hash of the service frontends, which egress entries must not match.
    frontends: u64,
    held: Vec<Held>,
    /// Per policy entry: where it is held; or, left out for budget, the value and the cost
    /// (uncompressed rules) the last plan from scratch ranked it by (`None` for those
    /// first left out by an incremental plan, which no fresh plan ranked); or, failed a
    /// check that reads only the entry's own inputs (its rules, or for a drop the egress
    /// policy of its pod), the placement saying why.
    priors: Priors,
    /// The compressed rules (without counters, without origin text), each with the held
    /// entries it covers.
    slice: Vec<(HwRule, Vec<u32>)>,
    /// Incremental plans since the last plan from scratch.
    events: u32,
    /// Uncompressed rules per flow entry of the last plan from scratch.
    ratio: f64,
    /// What step 1b kept in the plan this basis is of.
    rebuilt: Rebuilds,
}

/// What step 1b of an incremental plan kept: the held entries built anew that kept their
/// compressed rules, and their rules that were new (compressed and created); the rest of
/// their rules stayed on the device as they were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuilds {
    /// Held entries built anew and kept.
    pub entries: usize,
    /// Their rules that no old rule equals.
    pub new_rules: usize,
    /// Kept entries displaced to make room for those new rules on a full table.
    pub displaced: usize,
}

impl Basis {
    /// The basis of a finished plan: `cands` with their final placements (their rules
    /// move into the basis) and what their screen counted, the slice and which
    /// candidates each of its rules covers.
    pub(super) fn new(
        ctx: &Context<'_>,
        cands: &mut [Candidate],
        screens: &[Option<Screened>],
        slice: &PlanSlice,
        origins: &[Vec<u32>],
    ) -> Basis {
        let keys = cands.iter().map(|c| entry_key(ctx.mag, c)).collect();
        let read = Read::of(ctx);
        let seen = Seen {
            screens,
            ranks: None,
            found: None,
        };
        let mut basis = Basis::with(ctx, cands, keys, read, slice, origins, seen);
        basis.ratio = basis.ratio_now();
        basis
    }

    /// [`Basis::new`] with the entries' keys (`None`: not a policy candidate) and what
    /// the placed rules read already computed. A left-out candidate is ranked as this plan
    /// ranks it, or for an incremental plan as `seen` says. `events` and `ratio` are left
    /// for the caller.
    fn with(
        ctx: &Context<'_>,
        cands: &mut [Candidate],
        keys: Vec<Option<EntryKey>>,
        read: Read,
        slice: &PlanSlice,
        origins: &[Vec<u32>],
        seen: Seen<'_>,
    ) -> Basis {
        let mut held = Vec::new();
        let mut per_side = [0, 0];
        for key in keys.iter().flatten() {
            per_side[side_at(key.side)] += 1;
        }
        let mut priors: [Vec<(EntryKey, Prior)>; 2] = per_side.map(Vec::with_capacity);
        // Beside each side's priors, where a re-plan found their keys (nothing when the
        // plan is from scratch).
        let mut found: [Vec<Option<u32>>; 2] = Default::default();
        let mut pos: FxHashMap<u32, u32> = FxHashMap::default();
        for (i, (c, key)) in cands.iter_mut().zip(keys).enumerate() {
            let Some(key) = key else {
                continue;
            };
            if let Some(at) = seen.found {
                found[side_at(key.side)].push(at[i]);
            }
            let screen = seen.screens[i];
            if c.placement.target != super::Target::Hardware {
                let prior = match c.placement.why {
                    Why::Budget { .. } => {
                        let ranked = match seen.ranks {
                            Some(r) => r[i].flatten(),
                            None => Some((c.placement.value, c.screened)),
                        };
                        Prior {
                            left: Some(ranked),
                            screen,
                            ..Prior::default()
                        }
                    }
                    Why::NotCapable { .. } | Why::NotSound { .. } | Why::NothingToMatch { .. }
                        if c.built =>
                    {
                        Prior {
                            failed: Some(Box::new(c.placement.clone())),
                            screen,
                            ..Prior::default()
                        }
                    }
                    // Screened (passed or not) but nothing more to remember.
                    _ => Prior {
                        screen,
                        ..Prior::default()
                    },
                };
                priors[side_at(key.side)].push((key, prior));
                continue;
            }
            let at = held.len() as u32;
            pos.insert(i as u32, at);
            let prior = Prior {
                held: Some(at),
                screen,
                ..Prior::default()
            };
            priors[side_at(key.side)].push((key, prior));
            held.push(Held {
                rules: std::mem::take(&mut c.rules),
                level: c.level,
                cut: c.cut,
                narrowed: c.narrowed,
                runs: c.runs.take().map(|r| *r).unwrap_or_default(),
            });
        }
        let slice: Vec<(HwRule, Vec<u32>)> = slice
            .rules
            .iter()
            .zip(origins)
            .map(|(r, from)| {
                // The origin text is left out: finishing the next slice writes it anew.
                let r = HwRule {
                    id: r.id,
                    port: r.port,
                    direction: r.direction,
                    level: r.level,
                    matches: r.matches.clone(),
                    actions: r
                        .actions
                        .iter()
                        .filter(|a| **a != HwAction::Count)
                        .cloned()
                        .collect(),
                    origin: String::new(),
                };
                let from = from.iter().filter_map(|i| pos.get(i).copied()).collect();
                (r, from)
            })
            .collect();
        Basis {
            profile: ctx.profile.name.clone(),
            ids: read.ids,
            eps: ctx.eps.clone(),
            egress: read.egress,
            ingress: read.ingress,
            frontends: read.frontends,
            held,
            priors: Priors::of_sides(priors, found),
            slice,
            events: 0,
            ratio: 0.0,
            rebuilt: Rebuilds::default(),
        }
    }

    /// What step 1b kept in the plan this basis is of (nothing in a plan from scratch).
    pub fn rebuilt(&self) -> Rebuilds {
        self.rebuilt
    }

    /// Uncompressed rules per flow entry of the plan this basis is of.
    fn ratio_now(&self) -> f64 {
        let uncompressed: usize = self.held.iter().map(|h| h.rules.len()).sum();
        uncompressed as f64 / self.slice.len().max(1) as f64
    }

    /// How many entries the basis holds in hardware.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// What the placed rules and soundness proofs of a plan read from its graph.
struct Read {
    ids: BTreeMap<u128, (Vec<super::prefixes::Prefix>, u64)>,
    egress: BTreeMap<Option<u128>, u64>,
    ingress: BTreeMap<Option<u128>, u64>,
    frontends: u64,
}

impl Read {
    fn of(ctx: &Context<'_>) -> Read {
        use crate::mag::pipeline::table as pt;
        Read {
            ids: identity_sets(ctx),
            egress: policy_prints(ctx.mag, pt::EGRESS_POLICY),
            ingress: policy_prints(ctx.mag, pt::INGRESS_POLICY),
            frontends: frontends_print(ctx.mag),
        }
    }
}

/// The identities' prefixes and naive costs, one map.
fn identity_sets(ctx: &Context<'_>) -> BTreeMap<u128, (Vec<super::prefixes::Prefix>, u64)> {
    ctx.ids
        .v4
        .iter()
        .map(|(id, p)| {
            (
                *id,
                (p.clone(), ctx.ids.naive.get(id).copied().unwrap_or(1)),
            )
        })
        .collect()
}

/// The key of a policy candidate, or `None` for an entry of another table.
fn entry_key(mag: &Mag, c: &Candidate) -> Option<EntryKey> {
    let side = c.side?;
    let table = mag.table(c.table)?;
    let e = table.entries.get(c.entry.0 as usize)?;
    Some(EntryKey {
        side,
        priority: e.priority,
        matches: e.matches.clone(),
        action: e.action.clone(),
    })
}

/// Per endpoint, a hash of what the stateless-soundness proof of drops of the other
/// direction reads from the policy table `name`: its entries that do not drop, and (under
/// `None`, with the entries of several endpoints) whether its default drops.
fn policy_prints(mag: &Mag, name: &str) -> BTreeMap<Option<u128>, u64> {
    // A hash map while hashing: a look-up per row of tens of thousands, each row's
    // endpoint found in a tree of thousands cost a pod event about 2 ms.
    let mut hashers: FxHashMap<Option<u128>, FxHasher> = FxHashMap::default();
    let Some(t) = mag.table_by_name(name).and_then(|t| mag.table(t)) else {
        return BTreeMap::new();
    };
    let default_drops = Kind::of(mag, t.default_action.action) == Kind::Drop;
    default_drops.hash(hashers.entry(None).or_default());
    let ep_col = t.key.iter().position(|k| k.field == Field::Endpoint);
    for e in &t.entries {
        if Kind::of(mag, e.action.action) == Kind::Drop {
            continue;
        }
        let ep = ep_col.and_then(|c| super::capability::exact32(&e.matches[c]));
        let h = hashers.entry(ep).or_default();
        e.priority.hash(h);
        e.matches.hash(h);
    }
    hashers.into_iter().map(|(k, h)| (k, h.finish())).collect()
}

/// A hash of the `service_lb` table's entries: the frontends an egress entry's rules must
/// not match.
fn frontends_print(mag: &Mag) -> u64 {
    let mut h = FxHasher::default();
    if let Some(t) = mag
        .table_by_name(crate::mag::pipeline::table::SERVICE_LB)
        .and_then(|t| mag.table(t))
    {
        for e in &t.entries {
            e.priority.hash(&mut h);
            e.matches.hash(&mut h);
        }
    }
    h.finish()
}

/// What changed between the basis and the new graph, asked per endpoint and identity.
/// The maps are compared once, key by key, so that each of the tens of thousands of
/// candidates asks a few small sets (usually empty) instead of comparing the maps' values.
struct Touched {
    /// The endpoints whose addresses changed.
    eps: FxHashSet<u128>,
    /// The identities whose prefixes or naive costs changed.
    ids: FxHashSet<u128>,
    /// The keys of the egress policy's prints that changed.
    egress: FxHashSet<Option<u128>>,
    /// The keys of the ingress policy's prints that changed.
    ingress: FxHashSet<Option<u128>>,
    /// Whether the service frontends are the ones they were.
    frontends_same: bool,
}

impl Touched {
    /// What changed from `prev` to the graph that `read` and `eps` are of.
    fn new(prev: &Basis, read: &Read, eps: &BTreeMap<u128, Vec<u32>>) -> Touched {
        Touched {
            eps: changed_keys(eps, &prev.eps),
            ids: changed_keys(&read.ids, &prev.ids),
            egress: changed_keys(&read.egress, &prev.egress),
            ingress: changed_keys(&read.ingress, &prev.ingress),
            frontends_same: read.frontends == prev.frontends,
        }
    }

    /// Whether an identity's prefixes that the rules of a kept entry `c` were built from
    /// changed: those of its one remote identity; or, for an egress drop of every
    /// destination that was narrowed to the addresses of some identities (`narrowed`:
    /// whether it may have been), those of any identity. One that was not narrowed is
    /// sound for every destination: that reads its pod's ingress policy, not the
    /// prefixes, so a new pod's identity leaves it as it was.
    fn prefixes_changed(&self, c: &Candidate, narrowed: bool) -> bool {
        if c.identity
            .is_some_and(|id| self.ids.contains(&u128::from(id)))
        {
            return true;
        }
        c.side == Some(Side::Egress)
            && c.kind == Kind::Drop
            && c.identity.is_none()
            && narrowed
            && !self.ids.is_empty()
    }

    /// Whether what the screen of `c` reads is as it was ([`Screened`]): its pod's
    /// addresses, its remote identity's prefixes and naive cost, and for an egress entry
    /// the service frontends. An entry that matches every pod, or a partial identity,
    /// fails the screen whatever they are.
    fn screen_reads_same(&self, c: &Candidate) -> bool {
        c.endpoint
            .is_none_or(|ep| !self.eps.contains(&u128::from(ep)))
            && c.identity
                .is_none_or(|id| !self.ids.contains(&u128::from(id)))
            && (c.side != Some(Side::Egress) || self.frontends_same)
    }

    /// Whether what the rules and the soundness of a kept entry `c` read is as it was,
    /// but for identities' prefixes ([`Touched::prefixes_changed`]).
    fn unchanged_but_prefixes(&self, c: &Candidate) -> bool {
        let Some(ep) = c.endpoint.map(u128::from) else {
            return false;
        };
        if self.eps.contains(&ep) {
            return false;
        }
        let egress = c.side == Some(Side::Egress);
        if egress && !self.frontends_same {
            return false;
        }
        if c.kind == Kind::Drop {
            // The proof of a drop read the pod's policy of the other direction.
            let changed = if egress { &self.ingress } else { &self.egress };
            if changed.contains(&None) || changed.contains(&Some(ep)) {
                return false;
            }
        }
        true
    }
}

/// The keys whose values differ between `now` and `before`, a key missing from one map
/// included.
fn changed_keys<K, V>(now: &BTreeMap<K, V>, before: &BTreeMap<K, V>) -> FxHashSet<K>
where
    K: Ord + Hash + Copy,
    V: PartialEq,
{
    let mut out = FxHashSet::default();
    for (k, v) in now {
        if before.get(k) != Some(v) {
            out.insert(*k);
        }
    }
    for k in before.keys() {
        if !now.contains_key(k) {
            out.insert(*k);
        }
    }
    out
}

/// Why a plan had to be made from scratch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FromScratch {
    /// The first plan of a session, or one after a failure.
    NoBasis,
    /// The node has placement hints, which rank and reserve across the whole graph.
    Hints,
    /// The hardware profile is another one.
    Profile,
    /// [`MAX_EVENTS`] incremental plans in a row.
    Events,
    /// A kept entry needs a priority level the profile lacks.
    Levels,
    /// The kept rules and the new ones do not fit the budget.
    Budget,
    /// A touched candidate does not fit: a fresh plan might rank it above a kept entry.
    Ranking,
    /// Compression fell below [`MIN_RATIO_KEPT`] of the last plan from scratch.
    Compression,
}

impl FromScratch {
    /// A few words for logs and benchmarks.
    pub fn text(self) -> &'static str {
        match self {
            FromScratch::NoBasis => "no previous plan",
            FromScratch::Hints => "placement hints",
            FromScratch::Profile => "another profile",
            FromScratch::Events => "incremental plans in a row",
            FromScratch::Levels => "priority levels",
            FromScratch::Budget => "budget",
            FromScratch::Ranking => "a touched entry left out",
            FromScratch::Compression => "compression drifted",
        }
    }
}

/// Plans `mag` starting from `prev` (see the module documentation), or says why the plan
/// must be made from scratch. `prev` is spent either way (the rules of the entries kept
/// move out of it); what is left of it is the caller's to free, which the session does off
/// the event's path.
pub fn replan(
    prev: &mut Basis,
    mag: &Mag,
    profile: &Profile,
    placement_hints: &[super::PlacementHint],
    check: Option<&RuleCheck<'_>>,
) -> Result<(Plan, Basis), FromScratch> {
    if !placement_hints.is_empty() {
        return Err(FromScratch::Hints);
    }
    if prev.profile.is_empty() {
        return Err(FromScratch::NoBasis);
    }
    if prev.profile != profile.name {
        return Err(FromScratch::Profile);
    }
    if prev.events >= MAX_EVENTS {
        return Err(FromScratch::Events);
    }
    let mut ctx = Context::new(mag, profile);
    ctx.check = check;
    let mut cands = unscreened(&ctx);
    let read = Read::of(&ctx);
    let mut keys: Vec<Option<EntryKey>> = vec![None; cands.len()];
    // How the last plan left each candidate out (`None`: it did not), looked up once.
    let mut left_prev: Vec<Option<Ranked>> = vec![None; cands.len()];
    // What each policy candidate's screen counted, for the next re-plan.
    let mut screens: Vec<Option<Screened>> = vec![None; cands.len()];
    // Where each policy candidate's key is in the last priors, for the next basis.
    let mut found: Vec<Option<u32>> = vec![None; cands.len()];
    // Step 1: the entries kept, by candidate, with their place in the basis; and the
    // entries that failed a check of their own inputs, which fail again unchecked.
    let mut kept: Vec<(usize, u32)> = Vec::new();
    let mut moved: Vec<(usize, u32)> = Vec::new();
    let mut rebuild: Vec<(usize, u32)> = Vec::new();
    {
        let touched = Touched::new(prev, &read, &ctx.eps);
        let mut walk = prev.priors.walk();
        for (i, c) in cands.iter_mut().enumerate() {
            let Some(key) = entry_key(mag, c) else {
                continue;
            };
            let prior = walk.find_at(&key).map(|(at, p)| {
                found[i] = Some(at);
                p
            });
            // Step 0: the screen, of the entries whose inputs changed.
            match prior.and_then(|p| p.screen) {
                Some(s) if touched.screen_reads_same(c) => s.apply(c),
                _ => screen(c, &ctx),
            }
            screens[i] = Screened::of(c);
            if !c.ok {
                // Keyed, so that the next re-plan finds it in order (and screens it again).
                keys[i] = Some(key);
                continue;
            }
            left_prev[i] = prior.and_then(|p| p.left);
            // Only a placed entry is known not to have been narrowed to some identities.
            let narrowed = prior
                .and_then(|p| p.held)
                .is_none_or(|at| prev.held[at as usize].narrowed.is_some());
            let rest_same = touched.unchanged_but_prefixes(c);
            let prefixes = touched.prefixes_changed(c, narrowed);
            match (rest_same, prefixes, prior) {
                // Held, and only identities' prefixes changed: it may keep its compressed
                // rules (step 1b).
                (true, true, Some(prior)) => {
                    if let (None, Some(at)) = (&prior.failed, prior.held) {
                        rebuild.push((i, at));
                    }
                }
                (true, false, Some(prior)) => {
                    if let Some(p) = &prior.failed {
                        c.built = true;
                        c.leave(p.why.clone());
                        c.placement.chain = p.chain.clone();
                        // Its cost as it was counted when its rules were built (an egress
                        // entry's, once cut, is below the screen's bound).
                        c.placement.hw_rules = p.hw_rules;
                    } else if let Some(at) = prior.held {
                        moved.push((i, at));
                    }
                }
                _ => {}
            }
            keys[i] = Some(key);
        }
    }
    // The kept entries' rules move from the basis (their `origin` is rewritten when the
    // slice is finished).
    for (i, at) in moved {
        cands[i].rules = std::mem::take(&mut prev.held[at as usize].rules);
        cands[i].cut = prev.held[at as usize].cut;
        cands[i].narrowed = prev.held[at as usize].narrowed;
        let runs = std::mem::take(&mut prev.held[at as usize].runs);
        cands[i].runs = (!runs.is_empty()).then(|| Box::new(runs));
        // An egress entry's cost is its rules once cut, as a fresh plan counts it.
        cands[i].placement.hw_rules = cands[i].rules.len() as u64;
        cands[i].built = true;
        kept.push((i, at));
    }
    // Step 1b: when identities' prefixes changed (a pod added, deleted or relabelled),
    // every held entry whose rules were built from them is built again and keeps what it
    // held: of its compressed rules, those that match none of the packets it no longer
    // decides still match only packets it decides, so they stay, and only its new rules
    // are compressed (with the rules of the compressed rules that break). Compressing
    // every rule of such entries again was most of a pod event's plan (29 egress drops of
    // about 1,000 rules each on the session bench's node). When the new rules do not fit
    // the table's free entries ([`new_rules_need`]), the lowest-ranked kept and rebuilt
    // entries that can leave without breaking another's rules are displaced to make room
    // ([`make_room`]), as a fresh plan would leave them out first. All or none: when one of
    // them fails a check now, or no such room can be made, they all compete again as
    // touched entries, as a compressed rule may cover several of them (a rebuilt entry
    // kept beside a touched one breaks the rules they share, and holds its place against
    // it on a full table).
    let limit = profile.plan_entries().unwrap_or(u64::MAX);
    let closure = Closure::new(mag, &cands);
    let room = limit.saturating_sub(prev.slice.len() as u64);
    let (rebuilt, room_made) = keep_rebuilt(&ctx, &closure, &mut cands, prev, rebuild, &kept, room);
    let rebuilds = Rebuilds {
        entries: rebuilt.len(),
        new_rules: rebuilt.iter().map(|(_, _, r)| r.new.len()).sum(),
        displaced: room_made.len(),
    };
    // The entries displaced for room compete for nothing in this plan, as those of step 5.
    let n = cands.len();
    let mut displaced = vec![false; n];
    for v in room_made {
        displaced[v] = true;
        unkeep(&mut cands[v]);
    }
    kept.retain(|(i, _)| !displaced[*i]);
    let mut by_candidate: FxHashMap<usize, Rebuilt> = FxHashMap::default();
    for (i, at, r) in rebuilt {
        kept.push((i, at));
        by_candidate.insert(i, r);
    }
    let rebuilt = by_candidate;
    // Step 2: priority closure, highest priority first, so that an entry's dependencies
    // are settled before it.
    let mut is_kept = vec![false; n];
    for (i, _) in &kept {
        is_kept[*i] = true;
    }
    kept.sort_by_key(|(i, _)| (std::cmp::Reverse(cands[*i].priority), *i));
    for &(i, _) in &kept {
        let deps = closure.deps(mag, &cands, i);
        debug_assert!(
            deps.iter().all(|d| !displaced[*d]),
            "step 1b displaced an entry that a kept entry depends on"
        );
        if deps.iter().all(|d| is_kept[*d]) {
            let c = &mut cands[i];
            c.deps = deps;
            note_capable(c);
            if c.kind == Kind::Drop {
                note_sound(c);
            }
            note_closed(c);
        } else {
            is_kept[i] = false;
            unkeep(&mut cands[i]);
        }
    }
    kept.retain(|(i, _)| is_kept[*i]);
    kept.sort_unstable();
    // Steps 3 and 4; while they leave out entries that outrank kept ones by more than the
    // plan may owe, the lowest-ranked kept entries are displaced and the steps run again.
    let mut round = 0u32;
    let fit = loop {
        let steps = Steps {
            prev,
            ctx: &ctx,
            closure: &closure,
            left_prev: &left_prev,
            displaced: &displaced,
            displacing: round > 0,
            limit,
            rebuilt: &rebuilt,
        };
        let fit = steps.fit(&mut cands, &kept, &is_kept)?;
        if fit.owed_value().saturating_mul(100) <= fit.placed_value.saturating_mul(MAX_OWED_PERCENT)
        {
            break fit;
        }
        round += 1;
        let victims = victims(&cands, &kept, &fit, prev.ratio, round);
        if round > MAX_DISPLACEMENTS || victims.is_empty() {
            return Err(FromScratch::Ranking);
        }
        for v in victims {
            is_kept[v] = false;
            displaced[v] = true;
        }
        kept.retain(|(i, _)| is_kept[*i]);
    };
    let kept_idx: Vec<usize> = kept.iter().map(|(i, _)| *i).collect();
    let Fit {
        filled,
        taken,
        mut intact,
        stays,
        rules,
        ..
    } = fit;
    for (i, c) in cands.iter_mut().enumerate() {
        if c.ok && !taken[i] {
            c.leave(Why::Budget {
                resource: "flow entries".into(),
                limit,
            });
        }
    }
    let mut chosen: Vec<usize> = kept_idx.iter().chain(&filled).copied().collect();
    chosen.sort_unstable();
    let placed = compress::place(&mut cands, &chosen, profile);
    let mut rules = rules;
    rules.retain(|m| match stays.find(&intact, &m.rule) {
        Some(j) => {
            let from = &mut intact[j].from;
            from.extend_from_slice(&m.from);
            from.sort_unstable();
            from.dedup();
            false
        }
        None => true,
    });
    rules.extend(intact);
    if rules.len() as u64 > limit {
        return Err(FromScratch::Budget);
    }
    let uncompressed: usize = placed.iter().map(|(i, _)| cands[*i].rules.len()).sum();
    let ratio = uncompressed as f64 / rules.len().max(1) as f64;
    if ratio < prev.ratio * MIN_RATIO_KEPT {
        return Err(FromScratch::Compression);
    }
    let (slice, usage, origins) = compress::finish(&cands, &placed, rules, profile);
    // What a left-out entry was ranked by stays the last plan from scratch's.
    let mut basis = Basis::with(
        &ctx,
        &mut cands,
        keys,
        read,
        &slice,
        &origins,
        Seen {
            screens: &screens,
            ranks: Some(&left_prev),
            found: Some(&found),
        },
    );
    basis.events = prev.events + 1;
    basis.ratio = prev.ratio;
    basis.rebuilt = rebuilds;
    Ok((assemble(mag, profile, cands, slice, usage), basis))
}

/// Forgets what keeping a held entry gave candidate `c` (its rules, built as they were):
/// it is built again if it competes.
fn unkeep(c: &mut Candidate) {
    c.built = false;
    c.rules = Vec::new();
    c.runs = None;
}

/// The tables a plan reads: the policy tables its candidates come from (a drop's proof
/// reads the other direction's), the service frontends egress rules must not match, the
/// pods' addresses and the identities' prefixes. An event that changes none of them (an
/// endpoint of a Service turning ready, a backend's Maglev slots) leaves the plan as it
/// was ([`carry`]).
const READ_TABLES: [&str; 5] = [
    crate::mag::pipeline::table::INGRESS_POLICY,
    crate::mag::pipeline::table::EGRESS_POLICY,
    crate::mag::pipeline::table::SERVICE_LB,
    crate::mag::pipeline::table::ROUTE,
    crate::mag::pipeline::table::SRC_IPCACHE,
];

/// What [`carry`] replaced in a plan, to put back if the new state is refused.
#[derive(Debug)]
pub struct Carried {
    /// Each changed table, in table order, with its old placements.
    tables: Vec<(TableId, Vec<Placement>)>,
    /// The provenance records that came into [`Plan::origins`], and those that left it
    /// with their text.
    origins: (Vec<u32>, Vec<(u32, String)>),
}

impl Carried {
    /// Puts `plan` back as it was before [`carry`].
    pub fn undo(self, plan: &mut Plan) {
        for (t, old) in self.tables.into_iter().rev() {
            let range = table_range(&plan.placements, t);
            plan.placements.splice(range, old);
        }
        let (came, left) = self.origins;
        for p in came {
            plan.origins.remove(&p);
        }
        plan.origins.extend(left);
    }
}

/// Moves `plan` to `mag`, a graph (with the same tables) that differs from the plan's own
/// only in the entries of the `changed` tables, when no plan reads any of them
/// ([`READ_TABLES`]). Everything the plan placed and left out, and everything its proofs
/// read, is then as it was: the plan stays, with the changed tables' entries placed anew
/// in their eBPF stages. A re-plan of such an event ran every pass over every candidate to
/// keep all of them (about 55 ms of a Service endpoint change's 115 ms at 1,500 pods).
/// Returns what it replaced; `None`, with the plan untouched, when a changed table is one
/// plans read. The caller checks that the graph has no placement hints, which rank
/// across the whole graph.
pub fn carry(plan: &mut Plan, mag: &Mag, changed: &[TableId]) -> Option<Carried> {
    let mut changed = changed.to_vec();
    changed.sort_unstable();
    changed.dedup();
    let read = |t: &TableId| {
        mag.table(*t)
            .is_none_or(|table| READ_TABLES.contains(&table.name.as_str()))
    };
    if changed.iter().any(read) {
        return None;
    }
    debug_assert!(plan.placements.is_sorted_by_key(|p| p.table));
    let mut tables = Vec::with_capacity(changed.len());
    let (mut named, mut unnamed) = (BTreeSet::new(), BTreeSet::new());
    for t in changed {
        let range = table_range(&plan.placements, t);
        let new = stage_placements(mag, t);
        named.extend(new.iter().filter_map(|p| p.prov));
        let old: Vec<Placement> = plan.placements.splice(range, new).collect();
        unnamed.extend(old.iter().filter_map(|p| p.prov));
        tables.push((t, old));
    }
    let origins = carry_origins(plan, mag, &named, &unnamed);
    debug_assert_eq!(plan.origins, super::origin_texts(mag, &plan.placements));
    Some(Carried { tables, origins })
}

/// Keeps [`Plan::origins`] what [`super::origin_texts`] of the placements gives, after the
/// placements of some tables were replaced: those naming the records `named` came, those
/// naming `unnamed` left. A record that left is looked for among every placement only
/// when no new placement names it (an endpoint event's rows mostly keep their Service's
/// record), where writing out every record's text again cost an endpoint event 1.5 ms.
/// Returns the records that came and those that left, with their text.
fn carry_origins(
    plan: &mut Plan,
    mag: &Mag,
    named: &BTreeSet<u32>,
    unnamed: &BTreeSet<u32>,
) -> (Vec<u32>, Vec<(u32, String)>) {
    let mut came = Vec::new();
    for &p in named {
        if let std::collections::btree_map::Entry::Vacant(v) = plan.origins.entry(p) {
            v.insert(super::origin_text(mag, p));
            came.push(p);
        }
    }
    let gone: BTreeSet<u32> = unnamed.difference(named).copied().collect();
    if gone.is_empty() {
        return (came, Vec::new());
    }
    let kept: BTreeSet<u32> = plan
        .placements
        .iter()
        .filter_map(|p| p.prov)
        .filter(|p| gone.contains(p))
        .collect();
    let left = gone
        .difference(&kept)
        .filter_map(|p| plan.origins.remove(p).map(|t| (*p, t)))
        .collect();
    (came, left)
}

/// The placements of table `t` in `placements` (in table order).
fn table_range(placements: &[Placement], t: TableId) -> std::ops::Range<usize> {
    let start = placements.partition_point(|p| p.table < t);
    let end = placements.partition_point(|p| p.table <= t);
    start..end
}

/// What leaving candidate `i` out may cost against a fresh plan: its value; or, for one
/// the last plan from scratch left out at no less cost (as the screen counts it), the
/// value it gained since, which is nothing while it ranks no better (a fresh plan would
/// leave it out again, whatever events changed of its rules). A fresh plan that placed it
/// now would mostly leave out in its stead an entry that ranked above it then, and gain at
/// most the value it gained. Not always: the last slack of a plan from scratch goes to
/// cheap entries in rank order, and ranked higher it may meet more slack and take the
/// place of entries below it; that gain is not counted, so the bound is an estimate there.
/// (A pod joining an identity adds a sliver of value to every mark naming the identity; at
/// 15,000 pods, counting each such mark's whole value as owed forced a plan from scratch on
/// most pod events.)
fn owes(left_prev: &[Option<Ranked>], cands: &[Candidate], i: usize) -> u64 {
    let c = &cands[i];
    match left_prev[i].flatten() {
        Some((value, cost)) if c.screened >= cost => c.placement.value.saturating_sub(value),
        _ => c.placement.value,
    }
}

/// Displacement rounds before a re-plan that owes too much declines.
const MAX_DISPLACEMENTS: u32 = 3;

/// What steps 3 and 4 of a re-plan read besides the candidates.
struct Steps<'a, 'm> {
    prev: &'a Basis,
    ctx: &'a Context<'m>,
    closure: &'a Closure<'m>,
    /// How the last plan left each candidate out (`None`: it did not).
    left_prev: &'a [Option<Ranked>],
    /// The kept entries displaced by earlier rounds: they compete for nothing.
    displaced: &'a [bool],
    /// Whether this is a round after a displacement.
    displacing: bool,
    limit: u64,
    /// The kept entries built again (step 1b), with how their rules changed.
    rebuilt: &'a FxHashMap<usize, Rebuilt>,
}

/// What steps 3 and 4 chose, with what the plan owes.
struct Fit {
    /// The entries taken beside them.
    filled: Vec<usize>,
    /// Per candidate, whether it is placed.
    taken: Vec<bool>,
    /// The basis' compressed rules that stay.
    intact: Vec<Merged>,
    /// The rules that stay, by content.
    stays: Stays,
    /// The rules compressed anew.
    rules: Vec<Merged>,
    /// The candidates left out that a fresh plan might place, each with what it owes
    /// ([`owes`]).
    owed: Vec<(usize, u64)>,
    /// The value of the entries placed.
    placed_value: u64,
}

impl Steps<'_, '_> {
    /// Steps 3 and 4 for the `kept` entries (with their places in the basis).
    fn fit(
        &self,
        cands: &mut [Candidate],
        kept: &[(usize, u32)],
        is_kept: &[bool],
    ) -> Result<Fit, FromScratch> {
        let (prev, profile, limit) = (self.prev, self.ctx.profile, self.limit);
        let n = cands.len();
        // Step 3: the compressed rules that stay as they were, and the kept entries to
        // compress again.
        let kept_idx: Vec<usize> = kept.iter().map(|(i, _)| *i).collect();
        let levels = compress::levels(cands, &kept_idx, profile.plan_levels());
        // Held position → candidate, for the kept entries whose level stayed.
        let mut now: Vec<Option<u32>> = vec![None; prev.held.len()];
        for &(i, at) in kept {
            let (level, fits) = levels[&i];
            if !fits {
                return Err(FromScratch::Levels);
            }
            if level == prev.held[at as usize].level {
                now[at as usize] = Some(i as u32);
            }
        }
        // A rebuilt entry's compressed rules that matched packets it no longer decides
        // break too.
        let lost: FxHashMap<u32, &[HwRule]> = kept
            .iter()
            .filter_map(|(i, at)| self.rebuilt.get(i).map(|g| (*at, g.lost.as_slice())))
            .filter(|(_, lost)| !lost.is_empty())
            .collect();
        let (intact, touched_rules) = split_slice(prev, &now, &lost);
        // What the broken rules covered of kept entries, and no rule that stays covers:
        // those rules are compressed again. Kept entries whose level moved have no rule
        // that stays: all their rules are compressed again, at the new level.
        let mut again = uncovered(cands, &intact, &touched_rules, &now, prev, self.rebuilt);
        for &(i, at) in kept {
            if now[at as usize].is_none() {
                let level = levels[&i].0;
                again.extend(cands[i].rules.iter().map(|r| Merged {
                    rule: HwRule { level, ..r.clone() },
                    from: vec![i as u32],
                }));
            }
        }
        // Each merge group of those rules, compressed: what they take counts against the
        // budget now, and the pool below keeps the compression of every group that no
        // other entry's rule joins. Compressing them twice was about a seventh of the fit
        // of a pod event that breaks compressed rules, at 1,500 pods.
        let merger = compress::Merger::new(profile);
        let again: Again = compress::grouped(again)
            .into_iter()
            .map(|(key, rules)| {
                let merged = merger.merge(rules.clone());
                (key, (rules, merged))
            })
            .collect();
        let again_used: usize = again.values().map(|(_, merged)| merged.len()).sum();
        let used = intact.len() as u64 + again_used as u64;
        if used > limit {
            return Err(FromScratch::Budget);
        }
        // Step 4: fill the free budget in rank order.
        let mut chooser = Chooser::new(self.ctx, self.closure, n);
        for i in &kept_idx {
            chooser.take(*i);
        }
        // Up to where a plan from scratch stops: the headroom is kept for the entries
        // events touch (below), and for the rules kept entries gain (step 1b).
        let free = fill_limit(profile).min(limit).saturating_sub(used);
        let left_as = |i: usize| self.left_prev[i].as_ref();
        let kept_value: u64 = kept_idx.iter().map(|i| cands[*i].placement.value).sum();
        let heavy = kept_value.saturating_mul(MAX_OWED_PERCENT) / 1000;
        let competes = |cands: &[Candidate], i: usize| {
            left_as(i).is_none() || (self.displacing && owes(self.left_prev, cands, i) >= heavy)
        };
        let out = (0..n).filter(|i| !is_kept[*i] && !self.displaced[*i]);
        // With nothing free, only the entries that compete below need an order: most
        // events on a full table rank a few new entries, not the tens of thousands left
        // out.
        let order = match free {
            0 => ranked(cands, out.filter(|i| competes(cands, *i))),
            _ => ranked(cands, out),
        };
        let mut filled = chooser.fill_tail(cands, &order, 0, free);
        let mut taken = vec![false; n];
        for i in kept_idx.iter().chain(&filled) {
            taken[*i] = true;
        }
        // Charged uncompressed, touched entries the last plan placed may not seem to fit
        // where they do once compressed (a relabelled pod's entries merge with their
        // neighbours'). They are all taken, and the compressed total below decides: within
        // the budget the plan stands, over it the lowest-ranked are evicted. An entry the
        // last plan left out for budget competes for the free budget only, even when the
        // event touched it: an identity's new prefix touches every entry that names the
        // identity, and on a full table those are thousands. Unless kept entries are
        // being displaced, and it would be owed, and left out it would owe a tenth of what
        // a plan may owe by itself (a drop, on the session bench's node): such an entry
        // would never come back by the free budget, which the touched entries ranked above
        // it use up. Only then: on a full table it rarely fits, and taking it on every
        // event cost each event a search of what fits (about 100 ms at 1,500 pods).
        let touched: Vec<usize> = order
            .iter()
            .copied()
            .filter(|i| !taken[*i] && cands[*i].ok && competes(cands, *i))
            .collect();
        let more = chooser.fill_groups(cands, &touched, 0, u64::MAX);
        // The compressed rules of the plan with the first `k` groups of `more`: the kept
        // entries' rules compressed again and the new entries' rules, merged; a rule equal
        // to one that stays is that rule, so it is not counted twice.
        let stays = Stays::new(&intact);
        let base: Vec<usize> = kept_idx.iter().chain(&filled).copied().collect();
        let pool = Pool::new(cands, &base, &more, is_kept, again, merger, profile);
        let with_groups = |k: usize| {
            let (rules, new) = pool.with_groups(k, &stays, &intact);
            (rules, new + intact.len() as u64)
        };
        let (rules, k) = fit_groups(more.len(), limit, with_groups).ok_or(FromScratch::Budget)?;
        // The groups from `k` on were never marked taken here: they are left out.
        filled.extend(more[..k].iter().flatten());
        for i in more[..k].iter().flatten() {
            taken[*i] = true;
        }
        // A candidate left out that the last plan from scratch did not leave out as it
        // ranks now: a fresh plan might rank it above an entry this one keeps, unless it
        // ranks below every entry placed or is dearer than the whole budget. Its value is
        // owed.
        let (lowest, placed_value) = cands.iter().zip(&taken).filter(|(_, t)| **t).fold(
            (None, 0u64),
            |(low, sum), (c, _)| {
                let v = c.placement.value;
                (
                    Some(low.map_or(v, |l: u64| l.min(v))),
                    sum.saturating_add(v),
                )
            },
        );
        let lowest = lowest.unwrap_or(0);
        let owed: Vec<(usize, u64)> = (0..n)
            .filter(|i| {
                let c = &cands[*i];
                c.ok && !taken[*i] && c.placement.value > lowest && c.placement.hw_rules <= limit
            })
            .map(|i| (i, owes(self.left_prev, cands, i)))
            .filter(|(_, owed)| *owed > 0)
            .collect();
        Ok(Fit {
            filled,
            taken,
            intact,
            stays,
            rules,
            owed,
            placed_value,
        })
    }
}

impl Fit {
    /// What the plan owes in all.
    fn owed_value(&self) -> u64 {
        self.owed.iter().map(|(_, v)| *v).sum()
    }
}

/// The kept entries to displace so that a fresh plan's ranking is owed less: for the
/// owed entries in rank order, until what is still owed is within half of
/// [`MAX_OWED_PERCENT`] (so that the next events do not displace again at once), the
/// lowest-ranked kept entries that rank below them, as many as free the flow entries the
/// owed entries cost uncompressed. A kept entry frees its rules divided by `ratio` (the
/// uncompressed rules per flow entry of the last plan from scratch); each round doubles
/// what is freed, as an entry not yet built is counted by its screen, which cutting
/// service addresses out of its rules can quadruple. An entry that another entry built so
/// far depends on stays: the one below it would decide its packets, or bring it back.
fn victims(
    cands: &[Candidate],
    kept: &[(usize, u32)],
    fit: &Fit,
    ratio: f64,
    round: u32,
) -> Vec<usize> {
    let depended: FxHashSet<usize> = cands
        .iter()
        .filter(|c| c.ok && c.built)
        .flat_map(|c| c.deps.iter().copied())
        .collect();
    let mut free: Vec<usize> = kept
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| !depended.contains(i))
        .collect();
    // The lowest rank first: the least value, then the later index ([`ranked`] breaks
    // ties by index).
    free.sort_unstable_by_key(|i| (cands[*i].placement.value, std::cmp::Reverse(*i)));
    let mut owed = fit.owed.clone();
    owed.sort_unstable_by_key(|(i, _)| (std::cmp::Reverse(cands[*i].placement.value), *i));
    let allowed = fit.placed_value.saturating_mul(MAX_OWED_PERCENT) / 200;
    let per_entry = ratio.max(1.0);
    let mut still = fit.owed_value();
    let (mut need, mut freed) = (0f64, 0f64);
    let mut free = free.into_iter().peekable();
    let mut out = Vec::new();
    for (o, amount) in owed {
        if still <= allowed {
            break;
        }
        let c = &cands[o];
        still -= amount;
        need += (c.placement.hw_rules.max(c.screened) << round.saturating_sub(1)) as f64;
        while freed < need {
            match free.next_if(|v| cands[*v].placement.value < c.placement.value) {
                Some(v) => {
                    freed += cands[v].rules.len() as f64 / per_entry;
                    out.push(v);
                }
                None => break,
            }
        }
    }
    out
}

/// Splits the basis' compressed rules into those that stay (every entry they cover is
/// kept at its old level: `now` gives its new candidate; their entries renumbered; and
/// none of them matches a rule an entry `lost`, by its place in the basis) and the
/// others, by index.
fn split_slice(
    prev: &Basis,
    now: &[Option<u32>],
    lost: &FxHashMap<u32, &[HwRule]>,
) -> (Vec<Merged>, Vec<u32>) {
    let mut intact = Vec::new();
    let mut broken = Vec::new();
    for (r, (rule, from)) in prev.slice.iter().enumerate() {
        let mapped: Option<Vec<u32>> = from.iter().map(|at| now[*at as usize]).collect();
        let matched_lost = from
            .iter()
            .filter_map(|at| lost.get(at))
            .any(|lost| lost.iter().any(|l| overlaps(rule, l)));
        match mapped.filter(|_| !matched_lost) {
            Some(mut from) if !from.is_empty() => {
                from.sort_unstable();
                intact.push(Merged {
                    rule: rule.clone(),
                    from,
                });
            }
            _ => broken.push(r as u32),
        }
    }
    (intact, broken)
}

/// The rules of the kept entries that the `broken` rules of the basis covered and that no
/// rule which stays (`intact`) covers, each at its entry's level. Every rule of a kept
/// entry is so either inside a rule that stays or compressed again: coverage is never lost,
/// which priority closure needs (a lost rule above a drop would let the drop decide).
fn uncovered(
    cands: &[Candidate],
    intact: &[Merged],
    broken: &[u32],
    now: &[Option<u32>],
    prev: &Basis,
    rebuilt: &FxHashMap<usize, Rebuilt>,
) -> Vec<Merged> {
    let mut affected: Vec<(u32, u32)> = broken
        .iter()
        .flat_map(|r| prev.slice[*r as usize].1.iter())
        .filter_map(|at| now[*at as usize].map(|i| (i, *at)))
        .collect();
    affected.sort_unstable();
    affected.dedup();
    // A rebuilt entry whose level stayed: its old rules are inside the rules that stay, or
    // in a broken one (then all its rules are checked, above); its new ones are not.
    let mut new_only: Vec<(u32, u32)> = (0..now.len() as u32)
        .filter_map(|at| now[at as usize].map(|i| (i, at)))
        .filter(|(i, _)| rebuilt.contains_key(&(*i as usize)))
        .filter(|e| affected.binary_search(e).is_err())
        .collect();
    new_only.sort_unstable();
    if affected.is_empty() && new_only.is_empty() {
        return Vec::new();
    }
    let mut stays_of: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
    for (j, m) in intact.iter().enumerate() {
        for i in &m.from {
            stays_of.entry(*i).or_default().push(j as u32);
        }
    }
    let mut out = Vec::new();
    let all = affected
        .iter()
        .map(|(i, at)| (*i, *at, &cands[*i as usize].rules));
    let new = new_only
        .iter()
        .map(|(i, at)| (*i, *at, &rebuilt[&(*i as usize)].new));
    for (i, at, rules) in all.chain(new) {
        let level = prev.held[at as usize].level;
        let stays = stays_of.get(&i).map_or(&[][..], Vec::as_slice);
        for r in rules {
            if !stays.iter().any(|j| inside(r, &intact[*j as usize].rule)) {
                out.push(Merged {
                    rule: HwRule { level, ..r.clone() },
                    from: vec![i],
                });
            }
        }
    }
    out
}

/// A held entry built anew in step 1b: its rules that are new, and its old rules whose
/// packets it no longer decides (no new rule holds them).
#[derive(Debug)]
struct Rebuilt {
    new: Vec<HwRule>,
    lost: Vec<HwRule>,
}

/// Step 1b: the entries of `rebuild` (held at the given places of `prev`), built anew in
/// `cands`, each with its place and how its rules changed; all of them when each builds as
/// before ([`rebuild_held`]) and their new rules fit in `room` flow entries, or in what
/// displacing the lowest-ranked of them and of the `kept` entries frees ([`make_room`]);
/// else none. Second: the entries displaced.
fn keep_rebuilt(
    ctx: &Context<'_>,
    closure: &Closure<'_>,
    cands: &mut [Candidate],
    prev: &Basis,
    rebuild: Vec<(usize, u32)>,
    kept: &[(usize, u32)],
    room: u64,
) -> (Vec<(usize, u32, Rebuilt)>, Vec<usize>) {
    // Given up as soon as one fails: the entries are then built again as touched ones, so
    // building the rest here would be wasted.
    let mut built = Vec::with_capacity(rebuild.len());
    for (i, at) in rebuild {
        let Some(b) = rebuild_held(ctx, closure, &cands[i], &prev.held[at as usize]) else {
            return Default::default();
        };
        built.push((i, at, b));
    }
    let Some(victims) = make_room(ctx, closure, cands, prev, kept, &mut built, room) else {
        return Default::default();
    };
    let built = built
        .into_iter()
        .map(|(i, at, (c, r))| {
            cands[i] = c;
            (i, at, r)
        })
        .collect();
    (built, victims)
}

/// A rebuilt entry of step 1b: its candidate, its place in the basis, its new candidate
/// and how its rules changed.
type Built = (usize, u32, (Candidate, Rebuilt));

/// Makes the new rules of the `built` entries fit in `room` free flow entries and what
/// displacing entries frees: returns the entries displaced (none when the rules fit),
/// or `None` when they cannot be made to fit.
///
/// A fresh plan ranks every entry by value and leaves the lowest out first. So the kept
/// entries and the rebuilt ones are taken lowest rank first, and each leaves: a kept
/// entry frees its flow entries, a rebuilt one frees its old flow entries and no longer
/// needs its new rules. Each must be the only entry of every compressed rule it is in, so
/// that what it frees is exact and no other entry's rules break, and no kept entry may
/// depend on it (the entry below would decide its packets). An entry that cannot leave
/// stays, and the search goes on above it; every entry displaced is owed its value
/// ([`owes`]), so a fresh plan that would have kept it instead counts against the plan's
/// bound as in step 5.
///
/// On a full table the rebuilt entries otherwise all competed again as touched entries:
/// tens of thousands of rules compressed anew, twice a pod event's usual plan, and the
/// lowest-ranked of them evicted to make room, narrowed drops of every destination among
/// them (on the session bench's node a run of label changes lost 44 of 97 such drops).
fn make_room(
    ctx: &Context<'_>,
    closure: &Closure<'_>,
    cands: &[Candidate],
    prev: &Basis,
    kept: &[(usize, u32)],
    built: &mut Vec<Built>,
    room: u64,
) -> Option<Vec<usize>> {
    let mut need = new_rules_need(prev, built, room, ctx.profile);
    if need <= room {
        return Some(Vec::new());
    }
    // Per held entry: the compressed rules that cover it alone, and whether it shares one.
    let mut alone = vec![0u64; prev.held.len()];
    let mut shares = vec![false; prev.held.len()];
    for (_, from) in &prev.slice {
        match from.as_slice() {
            [at] => alone[*at as usize] += 1,
            _ => from.iter().for_each(|at| shares[*at as usize] = true),
        }
    }
    let mut is_kept = vec![false; cands.len()];
    // Per rebuilt entry: whether it gains rules.
    let mut gains: FxHashMap<usize, bool> = FxHashMap::default();
    for (i, _, (_, r)) in built.iter() {
        is_kept[*i] = true;
        gains.insert(*i, !r.new.is_empty());
    }
    for (i, _) in kept {
        is_kept[*i] = true;
    }
    // Only an entry alone in each of its compressed rules frees what it holds exactly.
    let mut order: Vec<(usize, u32)> = kept
        .iter()
        .copied()
        .chain(built.iter().map(|(i, at, _)| (*i, *at)))
        .filter(|(_, at)| alone[*at as usize] > 0 && !shares[*at as usize])
        .collect();
    // The lowest rank first: the least value, then the later index ([`ranked`] breaks
    // ties by index).
    order.sort_unstable_by_key(|(i, _)| (cands[*i].placement.value, std::cmp::Reverse(*i)));
    let mut freed = 0;
    let mut out = Vec::new();
    for (v, at) in order {
        if need <= room + freed {
            break;
        }
        if closure.depended_on(ctx.mag, cands, v, &|i| is_kept[i]) {
            continue;
        }
        freed += alone[at as usize];
        is_kept[v] = false;
        out.push(v);
        let Some(gained) = gains.get(&v) else {
            continue;
        };
        built.retain(|(i, ..)| *i != v);
        if *gained {
            need = new_rules_need(prev, built, room + freed, ctx.profile);
        }
    }
    (need <= room + freed).then_some(out)
}

/// The flow entries the new rules of the `built` entries take: counted one each when
/// that fits in `room`, else compressed together at their entries' levels, as step 3
/// compresses them. A batch of pod events gives each drop of "every destination" a rule
/// per new address, which uncompressed passed the room on most of the daemon's steps
/// (100–200 rules against 80–200 free entries) while compressed they took 17–84.
fn new_rules_need(prev: &Basis, built: &[Built], room: u64, profile: &Profile) -> u64 {
    let count = built
        .iter()
        .map(|(_, _, (_, r))| r.new.len())
        .sum::<usize>() as u64;
    if count <= room {
        return count;
    }
    let rules: Vec<Merged> = built
        .iter()
        .flat_map(|(i, at, (_, r))| {
            let level = prev.held[*at as usize].level;
            r.new.iter().map(move |n| Merged {
                rule: HwRule { level, ..n.clone() },
                from: vec![*i as u32],
            })
        })
        .collect();
    compress::merge_all(rules, profile).len() as u64
}

/// Held entry `c` (whose rules the basis keeps as `held`) with its rules built anew and,
/// for a drop, its soundness checked again (an egress drop narrowed again to the
/// identities it is sound for), and how its rules changed; `None` when it fails a check
/// now or service addresses were cut otherwise. A rule equal to an old one passed the
/// target's check before and is not checked again.
///
/// A narrowed drop is built again from its runs ([`rebuild_by_runs`]); debug builds
/// check that this gives what building every rule again gives.
fn rebuild_held(
    ctx: &Context<'_>,
    closure: &Closure<'_>,
    c: &Candidate,
    held: &Held,
) -> Option<(Candidate, Rebuilt)> {
    if held.runs.is_empty() {
        return rebuild_whole(ctx, closure, c, held);
    }
    let out = rebuild_by_runs(ctx, closure, c, held);
    #[cfg(debug_assertions)]
    same_rebuild(&out, &rebuild_whole(ctx, closure, c, held));
    out
}

/// [`rebuild_held`] of a narrowed drop: the rules of the remote prefixes that stayed are
/// copied from `held`, and only the runs of the prefixes that came or went are compared
/// rule by rule. On the session bench's node every pod add built 29 such drops again, of
/// about 1,000 rules each, to find a rule or two that changed.
fn rebuild_by_runs(
    ctx: &Context<'_>,
    closure: &Closure<'_>,
    c: &Candidate,
    held: &Held,
) -> Option<(Candidate, Rebuilt)> {
    let old = Reuse {
        runs: &held.runs,
        rules: &held.rules,
    };
    let mut built = c.clone();
    if !closure.build(ctx, &mut built, &|r| old.holds(r), Some(old)) || built.cut != held.cut {
        return None;
    }
    let Some(runs) = &built.runs else {
        // Not narrowed this time: every rule is compared.
        let old = held.rules.iter().map(HwRule::content).collect();
        return Some(rebuilt_rules(built, held, &old));
    };
    let now = Reuse {
        runs,
        rules: &built.rules,
    };
    // The runs of the prefixes that went (in `old`) and came (in `now`), in order.
    let (mut gone, mut came) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.runs.len() || j < now.runs.len() {
        match (old.runs.get(i), now.runs.get(j)) {
            (Some(a), Some(b)) if a.remote == b.remote => (i, j) = (i + 1, j + 1),
            (Some(a), b) if b.is_none_or(|b| a.remote < b.remote) => {
                gone.push(i);
                i += 1;
            }
            _ => {
                came.push(j);
                j += 1;
            }
        }
    }
    // A rule of a new prefix can equal an old rule only of a prefix that went, and the
    // other way round: the prefixes of one build are disjoint.
    let new: Vec<HwRule> = came
        .iter()
        .flat_map(|j| now.rules_of(*j))
        .filter(|r| !old.holds(r))
        .cloned()
        .collect();
    let lost: Vec<HwRule> = gone
        .iter()
        .flat_map(|i| old.rules_of(*i))
        .filter(|r| !now.holds(r) && !still_decided(r, &new, &built.rules))
        .cloned()
        .collect();
    Some(finish_rebuilt(built, Rebuilt { new, lost }))
}

/// Debug builds: [`rebuild_by_runs`] gave what building every rule again gives.
#[cfg(debug_assertions)]
fn same_rebuild(runs: &Option<(Candidate, Rebuilt)>, whole: &Option<(Candidate, Rebuilt)>) {
    let key = |out: &Option<(Candidate, Rebuilt)>| {
        out.as_ref().map(|(c, r)| {
            let contents = |rules: &[HwRule]| {
                format!(
                    "{:?}",
                    rules.iter().map(HwRule::content).collect::<Vec<_>>()
                )
            };
            (
                contents(&c.rules),
                c.runs.clone(),
                c.cut,
                c.narrowed,
                c.placement.hw_rules,
                contents(&r.new),
                contents(&r.lost),
            )
        })
    };
    assert_eq!(
        key(runs),
        key(whole),
        "a drop built again from its runs differs"
    );
}

/// [`rebuild_held`] by building and comparing every rule.
fn rebuild_whole(
    ctx: &Context<'_>,
    closure: &Closure<'_>,
    c: &Candidate,
    held: &Held,
) -> Option<(Candidate, Rebuilt)> {
    let old: FxHashSet<RuleContent<'_>> = held.rules.iter().map(HwRule::content).collect();
    let mut built = c.clone();
    let checked = |r: &HwRule| old.contains(&r.content());
    if !closure.build(ctx, &mut built, &checked, None) || built.cut != held.cut {
        return None;
    }
    Some(rebuilt_rules(built, held, &old))
}

/// How the rules of `built` changed from `held`'s (whose contents are `old`), compared rule
/// by rule.
fn rebuilt_rules(
    built: Candidate,
    held: &Held,
    old: &FxHashSet<RuleContent<'_>>,
) -> (Candidate, Rebuilt) {
    let checked = |r: &HwRule| old.contains(&r.content());
    let new: Vec<HwRule> = built
        .rules
        .iter()
        .filter(|r| !checked(r))
        .cloned()
        .collect();
    let now: FxHashSet<RuleContent<'_>> = built.rules.iter().map(HwRule::content).collect();
    let lost: Vec<HwRule> = held
        .rules
        .iter()
        .filter(|r| !now.contains(&r.content()) && !still_decided(r, &new, &built.rules))
        .cloned()
        .collect();
    finish_rebuilt(built, Rebuilt { new, lost })
}

/// Whether the packets of an old rule `r` that no rule of the entry's new build (`now`)
/// equals are still decided alike: a new rule (`new`) with its actions holds it, or rules
/// of `now` tile it ([`tiled`]). Only a rule for which neither holds is lost.
fn still_decided(r: &HwRule, new: &[HwRule], now: &[HwRule]) -> bool {
    new.iter().any(|n| n.actions == r.actions && inside(r, n)) || tiled(r, now)
}

/// A held entry built again, ready to be kept.
fn finish_rebuilt(mut built: Candidate, rebuilt: Rebuilt) -> (Candidate, Rebuilt) {
    // Step 2 writes its chain as for every kept entry.
    built.placement.chain.clear();
    built.built = true;
    (built, rebuilt)
}

/// Whether rules of `now` with `r`'s port, direction and actions, each equal to `r` on
/// every field but one where it matches a prefix inside `r`'s, cover every value `r`
/// matches on that field. Such a rule was split, not lost: its entry still decides every
/// packet it matched. (On the session bench's node, every other pod add wrote a narrowed
/// drop's `10.0.0.0/31` as `10.0.0.0/32` and `10.0.0.1/32`; counted as lost, it broke the
/// compressed rules holding it, and about 8,000 rules were compressed again.)
fn tiled(r: &HwRule, now: &[HwRule]) -> bool {
    // Per field: the value ranges of the rules that differ from `r` there only.
    let mut parts: Vec<(crate::backend::PacketField, u128, u128)> = Vec::new();
    for n in now {
        if n.port != r.port
            || n.direction != r.direction
            || n.actions != r.actions
            || n.matches.len() != r.matches.len()
        {
            continue;
        }
        let mut differs = r.matches.iter().zip(&n.matches).filter(|(a, b)| a != b);
        let (Some((a, b)), None) = (differs.next(), differs.next()) else {
            continue;
        };
        if let (true, Some((first, last))) = (a.field == b.field && within(b, a), value_range(b)) {
            parts.push((a.field, first, last));
        }
    }
    parts.sort_unstable();
    r.matches.iter().any(|m| {
        let Some((first, last)) = value_range(m) else {
            return false;
        };
        // The first value not covered yet; `None` past the field's last value.
        let mut next = Some(first);
        for (_, from, to) in parts.iter().filter(|(f, _, _)| *f == m.field) {
            match next {
                Some(n) if *from <= n => next = to.checked_add(1).map(|after| after.max(n)),
                _ => break,
            }
        }
        next.is_none_or(|n| n > last)
    })
}

/// The values a prefix match (a mask of leading ones within its field) matches, first and
/// last; `None` for another mask.
fn value_range(m: &crate::backend::HwMatch) -> Option<(u128, u128)> {
    let all = m.field.full_mask();
    let low = !m.mask & all;
    (m.mask & !all == 0 && low & low.wrapping_add(1) == 0).then_some((m.value, m.value | low))
}

/// Whether some packet matches both rules (on the same port and direction).
fn overlaps(a: &HwRule, b: &HwRule) -> bool {
    a.port == b.port
        && a.direction == b.direction
        && a.matches.iter().all(|m| {
            b.get(m.field)
                .is_none_or(|n| (m.value ^ n.value) & m.mask & n.mask == 0)
        })
}

/// Whether every packet `r` matches, `outer` matches (on the same port).
fn inside(r: &HwRule, outer: &HwRule) -> bool {
    r.port == outer.port
        && r.direction == outer.direction
        && outer
            .matches
            .iter()
            .all(|o| r.get(o.field).is_some_and(|m| within(m, o)))
}

/// Whether every value match `m` takes, `outer` (a match of the same field) takes too.
fn within(m: &crate::backend::HwMatch, outer: &crate::backend::HwMatch) -> bool {
    m.mask & outer.mask == outer.mask && m.value & outer.mask == outer.value
}

/// The compressed rules that stay (`intact`), found by content ([`HwRule::content`]):
/// their hashes sorted, so that asking for each of thousands of new rules copies none of
/// them (a map keyed by owned copies of their matches and actions allocated two vectors
/// per rule).
struct Stays(Vec<(u64, u32)>);

impl Stays {
    fn new(intact: &[Merged]) -> Stays {
        let mut hashes: Vec<(u64, u32)> = intact
            .iter()
            .enumerate()
            .map(|(j, m)| (m.rule.content_hash(), j as u32))
            .collect();
        hashes.sort_unstable();
        Stays(hashes)
    }

    /// The place in `intact` (which [`Stays::new`] read) of the rule equal to `r` on the
    /// device; of two such, the later.
    fn find(&self, intact: &[Merged], r: &HwRule) -> Option<usize> {
        let h = r.content_hash();
        let from = self.0.partition_point(|(k, _)| *k < h);
        let content = r.content();
        self.0[from..]
            .iter()
            .take_while(|(k, _)| *k == h)
            .map(|(_, j)| *j as usize)
            .filter(|j| intact[*j].rule.content() == content)
            .last()
    }
}

/// Kept entries' rules compressed again, by merge group: each group's rules and their
/// compression.
type Again = BTreeMap<compress::GroupKey, (Vec<Merged>, Vec<Merged>)>;

/// The rules an incremental plan compresses anew, split into compression groups, for
/// finding how many of the touched groups (`more`, in rank order) fit: evicting the last
/// groups compresses again only the compression groups their rules are in.
struct Pool {
    merger: compress::Merger,
    /// Per compression group: its rules, the last touched group any of them came with
    /// (`None`: only kept or free-budget entries), and the group compressed with every
    /// touched group.
    groups: Vec<(Vec<Merged>, Option<usize>, Vec<Merged>)>,
    /// Candidate → the touched group it came with.
    group_of: FxHashMap<u32, usize>,
}

impl Pool {
    /// `again` (kept entries' rules to compress again, with their compression, by group)
    /// and the rules of every chosen entry that is not kept (`base` and all of `more`), at
    /// the levels the whole set gives them.
    fn new(
        cands: &[Candidate],
        base: &[usize],
        more: &[Vec<usize>],
        is_kept: &[bool],
        again: Again,
        merger: compress::Merger,
        profile: &Profile,
    ) -> Pool {
        let mut chosen = base.to_vec();
        chosen.extend(more.iter().flatten());
        // An entry's level depends only on the entries above it, which come before it in
        // rank order or are kept: evicting later groups leaves every other level as it is.
        let levels = compress::levels(cands, &chosen, profile.plan_levels());
        let mut fresh: Vec<(usize, u32)> = chosen
            .iter()
            .filter(|i| !is_kept[**i])
            .filter_map(|i| {
                let (level, fits) = levels[i];
                fits.then_some((*i, level))
            })
            .collect();
        fresh.sort_unstable();
        let mut group_of: FxHashMap<u32, usize> = FxHashMap::default();
        for (g, members) in more.iter().enumerate() {
            for i in members {
                group_of.insert(*i as u32, g);
            }
        }
        // A group that chosen entries' rules join is compressed again, with them after
        // the kept entries' rules; the others keep their compression.
        let mut all: BTreeMap<compress::GroupKey, (Vec<Merged>, Option<Vec<Merged>>)> = again
            .into_iter()
            .map(|(key, (rules, merged))| (key, (rules, Some(merged))))
            .collect();
        for (key, rules) in compress::grouped(compress::inputs(cands, &fresh)) {
            let (group, merged) = all.entry(key).or_default();
            group.extend(rules);
            *merged = None;
        }
        let groups = all
            .into_values()
            .map(|(rules, merged)| {
                // A rule of `again` comes from a kept entry, never from a touched group.
                let last = rules
                    .iter()
                    .filter_map(|m| m.from.first().and_then(|i| group_of.get(i)))
                    .max()
                    .copied();
                let merged = merged.unwrap_or_else(|| merger.merge(rules.clone()));
                (rules, last, merged)
            })
            .collect();
        Pool {
            merger,
            groups,
            group_of,
        }
    }

    /// The compressed rules with the first `k` touched groups, and how many flow entries
    /// they take beside the rules that stay (a rule equal to one that stays is that rule).
    fn with_groups(&self, k: usize, stays: &Stays, intact: &[Merged]) -> (Vec<Merged>, u64) {
        let mut out = Vec::new();
        for (rules, last, merged) in &self.groups {
            if last.is_none_or(|l| l < k) {
                out.extend(merged.iter().cloned());
                continue;
            }
            let kept: Vec<Merged> = rules
                .iter()
                .filter(|m| !self.evicted(m, k))
                .cloned()
                .collect();
            out.extend(self.merger.merge(kept));
        }
        compress::sort_rules(&mut out);
        let new = out
            .iter()
            .filter(|m| stays.find(intact, &m.rule).is_none())
            .count();
        (out, new as u64)
    }

    /// Whether rule `m` came with a touched group from `k` on.
    fn evicted(&self, m: &Merged, k: usize) -> bool {
        m.from
            .first()
            .and_then(|i| self.group_of.get(i))
            .is_some_and(|g| *g >= k)
    }
}
/// Compressions spent finding how many touched groups fit.
const MAX_EVICTION_STEPS: usize = 6;

/// The most groups `k` of `n` (a prefix, in rank order) whose compressed rules fit
/// `limit`, found by bisection in at most [`MAX_EVICTION_STEPS`] compressions beyond the
/// first two, with those rules; `None` when not even the plan without any fits.
fn fit_groups(
    n: usize,
    limit: u64,
    with_groups: impl Fn(usize) -> (Vec<Merged>, u64),
) -> Option<(Vec<Merged>, usize)> {
    let (rules, count) = with_groups(n);
    if count <= limit {
        return Some((rules, n));
    }
    let (rules, count) = with_groups(0);
    if count > limit {
        return None;
    }
    // Invariant: `lo` groups fit (with `best`), `hi` do not.
    let (mut lo, mut hi, mut best) = (0usize, n, rules);
    let mut steps = 0;
    while hi - lo > 1 && steps < MAX_EVICTION_STEPS {
        steps += 1;
        let mid = lo + (hi - lo) / 2;
        let (rules, count) = with_groups(mid);
        if count <= limit {
            lo = mid;
            best = rules;
        } else {
            hi = mid;
        }
    }
    Some((best, lo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mag::ActionId;

    fn key(side: Side, priority: u32, port: u128) -> EntryKey {
        EntryKey {
            side,
            priority,
            matches: Arc::from([FieldMatch::Exact(port)]),
            action: ActionCall {
                action: ActionId(0),
                args: Arc::from([]),
            },
        }
    }

    fn held(at: u32) -> Prior {
        Prior {
            held: Some(at),
            ..Prior::default()
        }
    }

    fn rule(level: u32, src: u128, origin: &str) -> Merged {
        use crate::backend::{HwMatch, PacketField, PortDirection};
        Merged {
            rule: HwRule {
                id: 0,
                port: 1,
                direction: PortDirection::Ingress,
                level,
                matches: vec![HwMatch::exact(PacketField::Ipv4Src, src)],
                actions: vec![HwAction::Drop],
                origin: origin.into(),
            },
            from: Vec::new(),
        }
    }

    /// A drop of `dst/len` (IPv4 destination), with a TCP port match beside it.
    fn prefix_drop(dst: u32, len: u32, action: HwAction) -> HwRule {
        use crate::backend::{HwMatch, PacketField};
        let mask = u128::from(u32::MAX) << (32 - len) & u128::from(u32::MAX);
        HwRule {
            matches: vec![
                HwMatch {
                    field: PacketField::Ipv4Dst,
                    value: u128::from(dst) & mask,
                    mask,
                },
                HwMatch::exact(PacketField::L4Dport, 80),
            ],
            actions: vec![action],
            ..rule(0, 0, "").rule
        }
    }

    /// A prefix written as the prefixes that tile it is split, not lost; a prefix of which
    /// part is missing, or covered with other actions or on another port, is lost.
    #[test]
    fn a_prefix_split_into_halves_is_not_lost() {
        let net = 0x0a00_0000;
        let old = prefix_drop(net, 30, HwAction::Drop);
        let quarters: Vec<HwRule> = (0..4)
            .map(|i| prefix_drop(net + i, 32, HwAction::Drop))
            .collect();
        assert!(tiled(&old, &quarters));
        let halves = [
            prefix_drop(net, 31, HwAction::Drop),
            prefix_drop(net + 2, 32, HwAction::Drop),
            prefix_drop(net + 3, 32, HwAction::Drop),
        ];
        assert!(tiled(&old, &halves));
        assert!(!tiled(&old, &quarters[..3]), "one address is missing");
        assert!(!tiled(&old, &quarters[1..]), "the first address is missing");
        let marks: Vec<HwRule> = (0..4)
            .map(|i| prefix_drop(net + i, 32, HwAction::Count))
            .collect();
        assert!(!tiled(&old, &marks), "other actions");
        let mut other_port = quarters.clone();
        other_port[2].port = 2;
        assert!(!tiled(&old, &other_port), "one quarter on another port");
        let mut other_dport = quarters;
        other_dport[0].matches[1].value = 81;
        assert!(
            !tiled(&old, &other_dport),
            "one quarter for another port number"
        );
    }

    /// A rule that stays is found by what the device holds (not its id or origin text);
    /// a rule at another level or with another match is not; of two equal rules, the
    /// later is found, as a map keyed by their content would answer.
    #[test]
    fn stays_finds_rules_by_content() {
        let intact = vec![rule(0, 10, "a"), rule(1, 10, "b"), rule(0, 10, "c")];
        let stays = Stays::new(&intact);
        let found = |m: &Merged| stays.find(&intact, &m.rule);
        assert_eq!(found(&rule(0, 10, "other")), Some(2));
        assert_eq!(found(&rule(1, 10, "")), Some(1));
        assert_eq!(found(&rule(2, 10, "a")), None);
        assert_eq!(found(&rule(0, 11, "a")), None);
    }

    /// The priors answer as a map would, whatever order the keys come in: a walk in
    /// order, out of order, and for keys they do not have; of one key given twice, the
    /// later answer wins.
    #[test]
    fn priors_answer_as_a_map_in_any_order() {
        let keys = [
            key(Side::Egress, 9, 1),
            key(Side::Egress, 3, 2),
            key(Side::Ingress, 9, 1),
            key(Side::Ingress, 5, 7),
            key(Side::Ingress, 5, 8),
        ];
        let mut entries: Vec<(EntryKey, Prior)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), held(i as u32)))
            .collect();
        let twice = Prior {
            left: Some(None),
            ..held(9)
        };
        entries.push((keys[3].clone(), twice));
        let priors = Priors::new(entries);
        let answer = |walk: &mut Walk<'_>, i: usize| walk.find(&keys[i]).and_then(|p| p.held);
        for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]] {
            let mut walk = priors.walk();
            for i in order {
                let expected = if i == 3 { 9 } else { i as u32 };
                assert_eq!(answer(&mut walk, i), Some(expected), "key {i}");
            }
            for absent in [
                key(Side::Egress, 9, 0),
                key(Side::Ingress, 5, 9),
                key(Side::Ingress, 1, 1),
            ] {
                assert!(walk.find(&absent).is_none());
            }
        }
        assert_eq!(
            priors.walk().find(&keys[3]).and_then(|p| p.left),
            Some(None)
        );
    }

    /// Entries a re-plan found at rising places of the last priors are taken as in order;
    /// entries found at falling places, or not found, are compared, and sorted when they
    /// are out of order.
    #[test]
    fn priors_trust_only_rising_places() {
        let (a, b, c) = (
            key(Side::Ingress, 9, 1),
            key(Side::Ingress, 5, 1),
            key(Side::Ingress, 1, 1),
        );
        let side = |keys: [&EntryKey; 3]| -> Vec<(EntryKey, Prior)> {
            keys.iter()
                .enumerate()
                .map(|(i, k)| ((*k).clone(), held(i as u32)))
                .collect()
        };
        for found in [
            vec![Some(1), Some(0), None],
            vec![None, None, None],
            vec![Some(4), Some(2), Some(0)],
        ] {
            let priors = Priors::of_sides([side([&c, &b, &a]), Vec::new()], [found, Vec::new()]);
            let mut walk = priors.walk();
            for (k, at) in [(&a, 2), (&b, 1), (&c, 0)] {
                assert_eq!(walk.find(k).and_then(|p| p.held), Some(at));
            }
        }
        // In order, with places rising: kept as given.
        let found = vec![Some(0), Some(3), Some(7)];
        let priors = Priors::of_sides([side([&a, &b, &c]), Vec::new()], [found, Vec::new()]);
        assert_eq!(
            priors.0[0].iter().map(|(_, p)| p.held).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(2)]
        );
    }
}
