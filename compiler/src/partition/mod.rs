//! The partitioner: which MAG entries the hardware flow table takes, and why.
//!
//! # Hardware as a sound cache
//!
//! The eBPF pipeline always holds the whole MAG. The partitioner chooses a part of it that
//! the hardware (the profile given, such as `octeon-cn10k`) decides on its own, and
//! gives every MAG entry a [`Placement`] with a [`Why`]: the hardware entry is in the flow
//! table, or it is left to eBPF and the reason says which rule of DESIGN.md §7 failed.
//!
//! What hardware does with a packet: it **drops** the packets that policy denies where
//! that is sound, and it **marks** (MARK [`MARK_ALLOW`], [`MARK_REDIRECT`]) packets that
//! policy allows, handing them to the software pipeline, which runs everything (services,
//! conntrack, routing) as before. A mark never decides; a hardware drop does, so the
//! soundness rules below are about drops.
//!
//! Policy entries of local pods with IPv4 addresses are candidates. A rule is created on one
//! port and sees what that port receives: an ingress entry goes on the uplink (port 0) and
//! matches the pod's address as destination; an egress entry goes on the sending pod's own
//! port (numbered by its endpoint), where everything the pod sends arrives, and matches
//! the destination only (a profile must declare `in_port` for this; without it egress
//! policy stays in eBPF). The remote identity is expanded into the exact IPv4 prefixes the
//! ipcache gives it (longest prefix wins), aggregated. All ports draw on one entry budget.
//! The steps, one module each:
//!
//! 1. [`capability`]: the entry can be written as ternary rules the profile accepts;
//! 2. [`closure`]: **priority-closed** (every higher-priority overlapping entry of the same
//!    table and port with another action is placed too) and **stateless-sound** (an
//!    ingress drop only where the pod itself can open no connection of that protocol to the
//!    sources, an egress drop only where no destination of it can open such a connection
//!    to the pod, so no reply is ever dropped; egress rules leave out service addresses);
//! 3. [`budget`]: entries, counters, ranked by value (drops first, then address space
//!    covered per hardware entry), charged after compression, with `reserve` hints'
//!    entries set aside; steps 1 (building the rules) and 2 run lazily, only for the
//!    entries the budget reaches;
//! 4. [`compress`]: merges rules of one port, action and level into fewer ternary rules, and
//!    assigns priority levels by overlap depth, never more than the profile has.
//!
//! Engine `hw` ([`crate::engine::hw`]) runs a plan: the hardware model first, the MAG for what
//! hardware passes.

pub mod budget;
pub mod capability;
pub mod closure;
pub mod compress;
pub mod explain;
pub mod hints;
pub mod incremental;
pub mod prefixes;

pub use hints::PlacementHint;

use crate::backend::{PlanSlice, Profile};
use crate::mag::{EntryId, Mag, MagInfo, TableId};
use serde::{Serialize, Serializer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// The MARK id of a packet that hardware found allowed by policy.
pub const MARK_ALLOW: u32 = 1;
/// The MARK id of a packet that policy sends to the L7 proxy.
pub const MARK_REDIRECT: u32 = 2;

/// The text of a reason: most reasons are fixed sentences, borrowed so that millions of
/// placements that share one allocate nothing.
pub type Text = Cow<'static, str>;

/// Why an entry is where it is: a stable code and a few words for a network engineer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "kebab-case")]
pub enum Why {
    /// In hardware: capable, priority-closed, sound, within budget.
    InHardware {
        /// What hardware does with the packets (`drop` or `mark`).
        does: Text,
    },
    /// The pipeline stage needs something the flow table lacks (rewrite, state, metadata).
    Stage {
        /// What is missing, in a few words.
        detail: Text,
    },
    /// The entry cannot be written as hardware rules of this profile.
    NotCapable {
        /// The profile's answer, in a few words.
        detail: Text,
    },
    /// A higher-priority overlapping entry with another action stays in eBPF.
    NotPriorityClosed {
        /// The entry that stays in eBPF (`t9.e2`).
        above: Text,
    },
    /// A hardware drop here could drop replies of connections policy allows.
    NotSound {
        /// Why, in a few words.
        detail: Text,
    },
    /// The entry matches no IPv4 address, so hardware has nothing to match.
    NothingToMatch {
        /// Why.
        detail: Text,
    },
    /// A `.pipe` placement hint keeps it out of hardware.
    Excluded {
        /// The hint, `exclude policy "p" from hardware`.
        hint: Text,
    },
    /// The budget ran out before this entry's turn.
    Budget {
        /// The resource (`flow entries`, `priority levels`).
        resource: Text,
        /// Its size.
        limit: u64,
    },
}

impl Why {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Why::InHardware { .. } => "in-hardware",
            Why::Stage { .. } => "stage-not-offloadable",
            Why::NotCapable { .. } => "not-capable",
            Why::NotPriorityClosed { .. } => "not-priority-closed",
            Why::NotSound { .. } => "not-stateless-sound",
            Why::NothingToMatch { .. } => "nothing-to-match",
            Why::Excluded { .. } => "excluded-by-hint",
            Why::Budget { .. } => "over-budget",
        }
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::InHardware { does } => write!(f, "in hardware ({does})"),
            Why::Stage { detail } => write!(f, "{detail}"),
            Why::NotCapable { detail } => write!(f, "hardware cannot match it: {detail}"),
            Why::NotPriorityClosed { above } => {
                write!(f, "a rule above it ({above}) stays in software")
            }
            Why::NotSound { detail } => write!(f, "{detail}"),
            Why::NothingToMatch { detail } => write!(f, "{detail}"),
            Why::Excluded { hint } => write!(f, "placement hint: {hint}"),
            Why::Budget { resource, limit } => write!(f, "no room: {resource} ({limit}) used up"),
        }
    }
}

/// The target that decides an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The eBPF pipeline (which always holds every entry too).
    Ebpf,
    /// The hardware profile the plan is for ([`Plan::target`]).
    Hardware,
}

/// Where one MAG entry runs.
///
/// A plan has one per MAG entry, millions at full scale, so it holds ids rather than
/// text: [`Plan`] renders the entry, table, target and origin names when it is printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The entry's table.
    pub table: TableId,
    /// The entry.
    pub entry: EntryId,
    /// The target that decides it.
    pub target: Target,
    /// Why.
    pub why: Why,
    /// Earlier steps of the reasoning (for `explain --rule`), in order; empty (and not
    /// allocated) for the entries that never reach the hardware checks.
    pub chain: Vec<String>,
    /// Hardware rules before compression (the entry's cost).
    pub hw_rules: u64,
    /// What naive direct expansion would cost: one rule per source prefix of the
    /// ipcache × destination address × port prefix.
    pub naive_rules: u64,
    /// The entry's value for ranking (higher first).
    pub value: u64,
    /// Index into [`Mag::provenance`] of the first provenance record, if any.
    pub prov: Option<u32>,
}

impl Placement {
    /// A placement in eBPF for `why`, with nothing counted yet.
    pub fn ebpf(table: TableId, entry: EntryId, why: Why, prov: Option<u32>) -> Placement {
        Placement {
            table,
            entry,
            target: Target::Ebpf,
            why,
            chain: Vec::new(),
            hw_rules: 0,
            naive_rules: 0,
            value: 0,
            prov,
        }
    }

    /// The entry's name, `t9.e2`.
    pub fn entry_name(&self) -> String {
        entry_name(self.table, self.entry)
    }
}

/// Budget use of the hardware slice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Flow entries used (after compression).
    pub entries: u64,
    /// Flow entries available (the profile's entries minus the reserved ones).
    pub entries_limit: u64,
    /// Counters used.
    pub counters: u64,
    /// Counters available.
    pub counters_limit: u64,
    /// Priority levels used, of those the plan may use ([`Profile::plan_levels`]).
    pub levels: u32,
    /// Priority levels the plan may use (without level 0 when the profile keeps it for
    /// connection offload).
    pub levels_limit: u32,
    /// Hardware rules before compression.
    pub uncompressed: u64,
    /// Naive direct expansion of the placed entries.
    pub naive: u64,
    /// Flow entries set aside by `reserve` hints, and what their subjects used.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reserved: Vec<budget::ReservationUse>,
}

/// The partition of one node's MAG.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The node.
    pub node: String,
    /// The hardware target's name.
    pub target: String,
    /// One placement per MAG entry, in table then entry order.
    pub placements: Vec<Placement>,
    /// The rules placed on the hardware target.
    pub slice: PlanSlice,
    /// Budget use.
    pub usage: Usage,
    /// Entries that were capable and sound but left out for budget, most valuable first
    /// (named `t9.e2` by [`entry_name`]). Ids, not names: an incremental plan leaves out
    /// tens of thousands of entries, and naming each of them on every event was a sixteenth
    /// of a pod event's re-plan.
    pub left_out: Vec<(TableId, EntryId)>,
    /// The MAG's table names, by table index, to name placements without the MAG.
    pub tables: Vec<String>,
    /// The provenance text of every first provenance record a placement names, by its
    /// index into [`Mag::provenance`]: far fewer than placements, so each is kept once.
    pub origins: BTreeMap<u32, String>,
}

impl Plan {
    /// The name of `p`'s table.
    pub fn table_name(&self, p: &Placement) -> &str {
        self.tables
            .get(p.table.0.index())
            .map_or("", String::as_str)
    }

    /// The name of the target that decides `p`: the hardware profile's or `ebpf`.
    pub fn target_name(&self, p: &Placement) -> &str {
        match p.target {
            Target::Hardware => &self.target,
            Target::Ebpf => "ebpf",
        }
    }

    /// Where `p` came from (provenance text; empty when it has none).
    pub fn origin(&self, p: &Placement) -> &str {
        p.prov
            .and_then(|i| self.origins.get(&i))
            .map_or("", String::as_str)
    }

    /// `p` with its names, as JSON and YAML show it.
    fn row<'p>(&'p self, p: &'p Placement) -> PlacementRow<'p> {
        PlacementRow {
            entry: p.entry_name(),
            table: self.table_name(p),
            target: self.target_name(p),
            why: &p.why,
            chain: &p.chain,
            hw_rules: p.hw_rules,
            naive_rules: p.naive_rules,
            value: p.value,
            origin: self.origin(p),
        }
    }
}

/// A placement with its names, rendered one at a time while serializing.
#[derive(Serialize)]
struct PlacementRow<'p> {
    entry: String,
    table: &'p str,
    target: &'p str,
    why: &'p Why,
    chain: &'p [String],
    hw_rules: u64,
    naive_rules: u64,
    value: u64,
    origin: &'p str,
}

/// The placements of a plan, serialized as a sequence of [`PlacementRow`]s.
struct Rows<'p>(&'p Plan);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.placements.iter().map(|p| self.0.row(p)))
    }
}

/// The serialized form of a plan; the name tables are not part of it, they only render
/// the placements.
#[derive(Serialize)]
struct PlanView<'p> {
    node: &'p str,
    target: &'p str,
    placements: Rows<'p>,
    slice: &'p PlanSlice,
    usage: &'p Usage,
    left_out: Names<'p>,
}

/// Entries, serialized by name.
struct Names<'p>(&'p [(TableId, EntryId)]);

impl Serialize for Names<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(t, e)| entry_name(*t, *e)))
    }
}

impl Serialize for Plan {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PlanView {
            node: &self.node,
            target: &self.target,
            placements: Rows(self),
            slice: &self.slice,
            usage: &self.usage,
            left_out: Names(&self.left_out),
        }
        .serialize(s)
    }
}

/// The table names of `mag`, by table index.
fn table_names(mag: &Mag) -> Vec<String> {
    let mut names = Vec::new();
    for t in mag.table_ids() {
        let i = t.0.index();
        if names.len() <= i {
            names.resize(i + 1, String::new());
        }
        if let Some(table) = mag.table(t) {
            names[i] = table.name.clone();
        }
    }
    names
}

/// The provenance text of each first provenance record that `placements` name.
fn origin_texts(mag: &Mag, placements: &[Placement]) -> BTreeMap<u32, String> {
    // Far fewer records than placements, and neighbouring placements often share one:
    // the records are gathered and deduplicated first, so the map is built once, in order.
    let mut provs: Vec<u32> = placements.iter().filter_map(|p| p.prov).collect();
    provs.sort_unstable();
    provs.dedup();
    provs
        .into_iter()
        .map(|i| (i, origin_text(mag, i)))
        .collect()
}

/// The text of provenance record `i` of `mag` (empty for a record it does not have).
fn origin_text(mag: &Mag, i: u32) -> String {
    mag.provenance
        .get_index(i as usize)
        .map_or_else(String::new, ToString::to_string)
}

/// Partitions a validated MAG for the hardware target `profile` (the eBPF pipeline takes
/// everything else), honouring the placement `hints` (see [`hints`]; the model converts
/// `.pipe` placement statements with `model::pipe::placement_hints`).
pub fn mag_to_plan(mag: &Mag, info: &MagInfo, profile: &Profile, hints: &[PlacementHint]) -> Plan {
    mag_to_plan_checked(mag, info, profile, hints, None)
}

/// [`mag_to_plan`], asking `check` (the hardware backend's
/// [`check_rule`](crate::backend::Backend::check_rule)) whether the target can hold each
/// rule, so that nothing the backend would refuse is placed.
pub fn mag_to_plan_checked(
    mag: &Mag,
    info: &MagInfo,
    profile: &Profile,
    placement_hints: &[PlacementHint],
    check: Option<&capability::RuleCheck<'_>>,
) -> Plan {
    plan_from_scratch(mag, info, profile, placement_hints, check).0
}

/// [`mag_to_plan_checked`], with the [`incremental::Basis`] a later
/// [`incremental::replan`] starts from.
pub fn plan_from_scratch(
    mag: &Mag,
    info: &MagInfo,
    profile: &Profile,
    placement_hints: &[PlacementHint],
    check: Option<&capability::RuleCheck<'_>>,
) -> (Plan, incremental::Basis) {
    let _ = info;
    let mut ctx = capability::Context::new(mag, profile);
    ctx.check = check;
    let mut cands = capability::candidates(&ctx);
    let screens: Vec<_> = cands.iter().map(capability::Screened::of).collect();
    let reservations = hints::apply(mag, &mut cands, placement_hints, &profile.name);
    let closure = closure::Closure::new(mag, &cands);
    let (chosen, reserved) =
        budget::Chooser::new(&ctx, &closure, cands.len()).choose(&mut cands, &reservations);
    let (slice, mut usage, origins) = compress::build(&mut cands, &chosen, profile);
    usage.reserved = reserved;
    let basis = incremental::Basis::new(&ctx, &mut cands, &screens, &slice, &origins);
    (assemble(mag, profile, cands, slice, usage), basis)
}

/// The plan of candidates whose placements are final.
fn assemble(
    mag: &Mag,
    profile: &Profile,
    cands: Vec<capability::Candidate>,
    slice: PlanSlice,
    usage: Usage,
) -> Plan {
    // Most valuable first; equal values in table then entry order (the candidates' order),
    // as the budget ranked them. Each entry is one integer, the value's complement above
    // the ids, so the sort compares integers and reads no candidate again (reading each
    // candidate again in value order missed the cache at every one).
    let mut left_out: Vec<u128> = cands
        .iter()
        .filter(|c| matches!(c.placement.why, Why::Budget { .. }))
        .map(|c| {
            let p = &c.placement;
            let id = (p.table.0.index() as u64) << 32 | u64::from(p.entry.0);
            u128::from(!p.value) << 64 | u128::from(id)
        })
        .collect();
    left_out.sort_unstable();
    let left_out = left_out
        .into_iter()
        .map(|k| {
            let (t, e) = ((k >> 32) as u32, k as u32);
            (
                TableId(petgraph::graph::NodeIndex::new(t as usize)),
                EntryId(e),
            )
        })
        .collect();
    let placements: Vec<Placement> = cands.into_iter().map(|c| c.placement).collect();
    Plan {
        node: mag.node.clone(),
        target: profile.name.clone(),
        tables: table_names(mag),
        origins: origin_texts(mag, &placements),
        placements,
        slice,
        usage,
        left_out,
    }
}

/// The name of an entry, `t9.e2`.
///
/// Written digit by digit rather than with `format!`: a plan names every entry it leaves
/// out for budget, tens of thousands per event, and the formatting machinery was most of
/// that cost. The text is the one the ids' `Display` gives.
pub fn entry_name(t: TableId, e: EntryId) -> String {
    let mut out = String::with_capacity(16);
    out.push('t');
    push_decimal(&mut out, t.0.index());
    out.push_str(".e");
    push_decimal(&mut out, e.0 as usize);
    out
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[start..].iter().map(|d| char::from(*d)));
}

/// The stable text form of a plan (`pipec compile --emit plan`).
pub fn plan_to_text(plan: &Plan) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let u = &plan.usage;
    let _ = writeln!(out, "plan node {} target {}", plan.node, plan.target);
    let _ = writeln!(
        out,
        "budget entries {}/{} counters {}/{} levels {}/{} uncompressed {} naive {}",
        u.entries,
        u.entries_limit,
        u.counters,
        u.counters_limit,
        u.levels,
        u.levels_limit,
        u.uncompressed,
        u.naive
    );
    for r in &u.reserved {
        let _ = writeln!(out, "reserved {}/{} {}", r.used, r.entries, r.hint);
    }
    for p in &plan.placements {
        let _ = writeln!(
            out,
            "entry {}.{} {} -> {} [{}] cost {} naive {} @ {}",
            p.table,
            p.entry,
            plan.table_name(p),
            plan.target_name(p),
            p.why.code(),
            p.hw_rules,
            p.naive_rules,
            plan.origin(p)
        );
    }
    for r in &plan.slice.rules {
        let m: Vec<String> = r
            .matches
            .iter()
            .map(|m| {
                if m.mask == m.field.full_mask() {
                    format!("{}={}", m.field, m.field.fmt_value(m.value))
                } else {
                    format!(
                        "{}={}&{}",
                        m.field,
                        m.field.fmt_value(m.value),
                        m.field.fmt_value(m.mask)
                    )
                }
            })
            .collect();
        let a: Vec<String> = r.actions.iter().map(compress::action_text).collect();
        let _ = writeln!(
            out,
            "rule r{} port {} level {} {} -> {} # {}",
            r.id,
            r.port,
            r.level,
            m.join(" "),
            a.join(", "),
            r.origin
        );
    }
    for (t, e) in &plan.left_out {
        let _ = writeln!(out, "left-out {}", entry_name(*t, *e));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_the_ids_display() {
        for (t, e) in [(0u32, 0u32), (9, 2), (10, 99), (123, 4_294_967_295)] {
            let t = TableId(petgraph::graph::NodeIndex::new(t as usize));
            let e = EntryId(e);
            assert_eq!(entry_name(t, e), format!("{t}.{e}"));
        }
    }
}
