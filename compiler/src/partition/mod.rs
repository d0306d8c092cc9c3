//! The partitioner: which MAG entries the hardware flow table takes, and why.
//!
//! # Hardware as a sound cache
//!
//! The eBPF pipeline always holds the whole MAG. The partitioner chooses a part of it that
//! the hardware (the first profile given, such as `octeon-cn10k`) decides on its own, and
//! gives every MAG entry a [`Placement`] with a [`Why`]: the hardware entry is in the flow
//! table, or it is left to eBPF and the reason says which rule of DESIGN.md §7 failed.
//!
//! What hardware does with a packet: it **drops** the packets that policy denies where
//! that is sound, and it **marks** (MARK [`MARK_ALLOW`], [`MARK_REDIRECT`]) packets that
//! policy allows, handing them to the software pipeline, which runs everything (services,
//! conntrack, routing) as before. A mark never decides; a hardware drop does, so the
//! soundness rules below are about drops.
//!
//! Only ingress policy entries of local pods with IPv4 addresses are candidates: their
//! packets name the pod's address as destination, and the remote identity is expanded into
//! the exact IPv4 prefixes the ipcache gives it (longest prefix wins), aggregated. The
//! steps, one module each:
//!
//! 1. [`capability`]: the entry can be written as ternary rules the profile accepts;
//! 2. [`closure`]: **priority-closed** (every higher-priority overlapping entry with another
//!    action is placed too) and **stateless-sound** (a drop only where the pod itself can
//!    open no connection of that protocol to the sources, so no reply is ever dropped);
//! 3. [`budget`]: entries, counters, ranked by value (drops first, then address space
//!    covered per hardware entry), charged after compression, with `reserve` hints'
//!    entries set aside; steps 1 (building the rules) and 2 run lazily, only for the
//!    entries the budget reaches;
//! 4. [`compress`]: merges rules of one action and level into fewer ternary rules, and
//!    assigns priority levels by overlap depth, never more than the profile has.
//!
//! [`engine`] is engine `hw` (the hardware model first, the MAG for what hardware passes).

pub mod budget;
pub mod capability;
pub mod closure;
pub mod compress;
pub mod engine;
pub mod explain;
pub mod hints;
pub mod prefixes;

use crate::backend::{PlanSlice, Profile};
use crate::mag::{EntryId, Mag, MagInfo, TableId};
use serde::Serialize;
use std::fmt;

/// The MARK id of a packet that hardware found allowed by policy.
pub const MARK_ALLOW: u32 = 1;
/// The MARK id of a packet that policy sends to the L7 proxy.
pub const MARK_REDIRECT: u32 = 2;

/// Why an entry is where it is: a stable code and a few words for a network engineer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "kebab-case")]
pub enum Why {
    /// In hardware: capable, priority-closed, sound, within budget.
    InHardware {
        /// What hardware does with the packets (`drop` or `mark`).
        does: String,
    },
    /// The pipeline stage needs something the flow table lacks (rewrite, state, metadata).
    Stage {
        /// What is missing, in a few words.
        detail: String,
    },
    /// The entry cannot be written as hardware rules of this profile.
    NotCapable {
        /// The profile's answer, in a few words.
        detail: String,
    },
    /// A higher-priority overlapping entry with another action stays in eBPF.
    NotPriorityClosed {
        /// The entry that stays in eBPF (`t9.e2`).
        above: String,
    },
    /// A hardware drop here could drop replies of connections policy allows.
    NotSound {
        /// Why, in a few words.
        detail: String,
    },
    /// The entry matches no IPv4 address, so hardware has nothing to match.
    NothingToMatch {
        /// Why.
        detail: String,
    },
    /// A `.pipe` placement hint keeps it out of hardware.
    Excluded {
        /// The hint, `exclude policy "p" from hardware`.
        hint: String,
    },
    /// The budget ran out before this entry's turn.
    Budget {
        /// The resource (`flow entries`, `priority levels`).
        resource: String,
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

/// Where one MAG entry runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// The entry, `t9.e2`.
    pub entry: String,
    /// The table's name.
    pub table: String,
    /// The target that decides it: the hardware profile's name or `ebpf` (which always
    /// holds it too).
    pub target: String,
    /// Why.
    pub why: Why,
    /// Earlier steps of the reasoning (for `explain --rule`), in order.
    pub chain: Vec<String>,
    /// Hardware rules before compression (the entry's cost).
    pub hw_rules: u64,
    /// What naive direct expansion would cost: one rule per source prefix of the
    /// ipcache × destination address × port prefix.
    pub naive_rules: u64,
    /// The entry's value for ranking (higher first).
    pub value: u64,
    /// Where it came from (provenance text).
    pub origin: String,
    /// Index into [`Mag::provenance`] of the first provenance record, if any.
    #[serde(skip)]
    pub prov: Option<usize>,
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
    /// Priority levels used.
    pub levels: u32,
    /// Priority levels available.
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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
    /// Entries that were capable and sound but left out for budget, most valuable first.
    pub left_out: Vec<String>,
}

/// Partitions a validated MAG over `profiles` (the first one is the hardware target; the
/// eBPF pipeline takes everything else). With no profile, everything stays in eBPF.
pub fn mag_to_plan(mag: &Mag, info: &MagInfo, profiles: &[Profile]) -> Plan {
    mag_to_plan_with_hints(mag, info, profiles, &[])
}

/// [`mag_to_plan`] honouring `.pipe` placement hints (`resolved::Program::placements`):
/// see [`hints`].
pub fn mag_to_plan_with_hints(
    mag: &Mag,
    info: &MagInfo,
    profiles: &[Profile],
    placement_hints: &[policy_lang::resolved::Placement],
) -> Plan {
    let _ = info;
    let profile = profiles
        .first()
        .cloned()
        .unwrap_or_else(crate::backend::octeon_cn10k_profile);
    let ctx = capability::Context::new(mag, &profile);
    let mut cands = capability::candidates(&ctx);
    let reservations = hints::apply(mag, &mut cands, placement_hints, &profile.name);
    let closure = closure::Closure::new(mag, &cands);
    let (chosen, reserved) =
        budget::Chooser::new(&ctx, &closure, cands.len()).choose(&mut cands, &reservations);
    let (slice, mut usage) = compress::build(&mut cands, &chosen, &profile);
    usage.reserved = reserved;
    let mut left_out: Vec<(u64, usize)> = cands
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.placement.why, Why::Budget { .. }))
        .map(|(i, c)| (c.placement.value, i))
        .collect();
    // Most valuable first; equal values in table order, as the budget ranked them.
    left_out.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let left_out = left_out
        .into_iter()
        .map(|(_, i)| cands[i].placement.entry.clone())
        .collect();
    Plan {
        node: mag.node.clone(),
        target: profile.name.clone(),
        placements: cands.into_iter().map(|c| c.placement).collect(),
        slice,
        usage,
        left_out,
    }
}

/// The name of an entry, `t9.e2`.
pub fn entry_name(t: TableId, e: EntryId) -> String {
    format!("{t}.{e}")
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
            "entry {} {} -> {} [{}] cost {} naive {} @ {}",
            p.entry,
            p.table,
            p.target,
            p.why.code(),
            p.hw_rules,
            p.naive_rules,
            p.origin
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
            "rule r{} level {} {} -> {} # {}",
            r.id,
            r.level,
            m.join(" "),
            a.join(", "),
            r.origin
        );
    }
    for e in &plan.left_out {
        let _ = writeln!(out, "left-out {e}");
    }
    out
}
