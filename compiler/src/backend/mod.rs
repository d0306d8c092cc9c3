//! Targets: the [`Backend`] trait, target [`Profile`]s, and the plan slice a backend lowers.
//!
//! # The contract
//!
//! A target is anything that can run part of the pipeline: the OCTEON NPC flow table
//! (`octeon-cn10k`, crate `pipec-rte-flow`), the eBPF pipeline (`ebpf`, crate
//! `pipec-ebpf`), or a vendor's own backend outside this workspace. Each target says four
//! things about itself:
//!
//! - its **name**, under which it is looked up ([`lookup`], [`LookupError`]);
//! - its **profile** ([`Profile`]): what it can match and do ([`Capabilities`]) and how
//!   much of it ([`Budget`]). Capabilities are conservative: [`Capabilities::default`]
//!   can do nothing, and anything a profile does not declare is "can't";
//! - how to **compile** its part of a node's pipeline ([`Backend::compile`]): it is given
//!   the MAG, the [`MagInfo`] that proves it well formed, and the partition [`Plan`]
//!   (a hardware target lowers the plan's [`PlanSlice`]; the eBPF target takes the whole
//!   MAG, since it always holds every rule), and returns an [`Artifact`] or why it cannot
//!   ([`Unsupported`], the one "can't" type of every target);
//! - how to **move a device** from one artifact to the next ([`Backend::diff`]): typed,
//!   ordered, printable [`Operations`], make-before-break (additions, then changes, then
//!   removals), which the runtime applies.
//!
//! ```text
//!  (Mag, MagInfo, Plan) ──Backend::compile──▶ Artifact ──text / json──▶ emitted
//!                                               │
//!  old Artifact, new Artifact ──Backend::diff──▶ Operations ──▶ apply (runtime)
//! ```
//!
//! [`crate::session::Session`] is the one caller of `compile` and `diff` in the workspace.
//! This module is the API that out-of-tree backends implement; its public surface is
//! snapshotted by the `backend_api` test, so a change to it is a deliberate one.

mod profile;
mod slice;

pub use profile::{
    builtin_profiles, ebpf_profile, octeon_cn10k_2307_profile, octeon_cn10k_profile, ActionKind,
    Budget, Capabilities, FieldCap, MaskCap, Profile, OCTEON_CN10K_2307, OFFLOAD_ENTRIES,
};
pub use slice::RuleContent;
pub use slice::{HwAction, HwMatch, HwRule, PacketField, PlanSlice, PortDirection};

use crate::mag::{Mag, MagInfo};
use crate::partition::Plan;
use serde::Serialize;
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;

/// Why a target cannot take something: the "can't" answer of a backend or a profile check.
///
/// The partitioner turns it into a placement on the eBPF pipeline and explain shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("target {target} cannot take this: {reason}")]
pub struct Unsupported {
    /// The target that refused.
    pub target: String,
    /// Why.
    pub reason: Reason,
}

impl Unsupported {
    /// An answer from `target` with `reason`.
    pub fn new(target: impl Into<String>, reason: Reason) -> Unsupported {
        Unsupported {
            target: target.into(),
            reason,
        }
    }
}

/// A target limitation, with a stable [`code`](Reason::code) for scripts and explain.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "code", rename_all = "kebab-case")]
pub enum Reason {
    /// The target cannot match this field at all.
    FieldNotMatchable {
        /// The field's name (a MAG field name, such as `ipv6.src`).
        field: String,
    },
    /// The target matches the field, but not with this mask.
    MaskNotSupported {
        /// The field.
        field: String,
        /// The mask asked for, in hex.
        mask: String,
    },
    /// The target matches the field only for some values (such as protocol layer types).
    ValueNotSupported {
        /// The field.
        field: String,
        /// The value asked for.
        value: String,
    },
    /// The target has no range match; the range was not prefix-expanded.
    RangeNotSupported {
        /// The field.
        field: String,
    },
    /// The target cannot perform this action (in this direction).
    ActionNotSupported {
        /// The action.
        action: ActionKind,
        /// The direction the rule was for.
        direction: PortDirection,
    },
    /// A combination of actions the target refuses (such as DROP with MARK).
    ActionCombination {
        /// What is wrong.
        detail: String,
    },
    /// An argument is out of the target's range (a MARK id wider than the target's mark).
    ArgumentOutOfRange {
        /// What is wrong.
        detail: String,
    },
    /// The rule needs a priority level the target does not have.
    PriorityLevel {
        /// The level asked for (0 is the highest).
        level: u32,
        /// The levels the target has.
        levels: u32,
    },
    /// A structural feature the target lacks (groups, JUMP, conntrack, rewrite, ...).
    Feature {
        /// The feature.
        feature: String,
    },
    /// The rule cannot be written as one device rule of this target (it must be split).
    Shape {
        /// What is wrong.
        detail: String,
    },
    /// A budget ran out (entries, counters, RSS groups, ...).
    Capacity {
        /// The resource.
        resource: String,
        /// Its size.
        limit: u64,
    },
    /// The target's implementation has no support for this part of the pipeline (a table,
    /// key or action its fixed programs do not implement).
    NotImplemented {
        /// Where in the pipeline (a table, an entry).
        site: String,
        /// What is missing.
        detail: String,
    },
    /// The cluster state a target compiles from is malformed (an IPsec key Secret with a
    /// bad key line): nothing of the target is compiled, so nothing is applied.
    InvalidInput {
        /// The target's coded diagnostics, one per line; never a Secret's value.
        diagnostics: Vec<String>,
    },
    /// The device refused the rule when it was validated or created.
    Device {
        /// The error name (`ENOSYS`, `ENOSPC`, `EINVAL`, ...).
        errno: String,
        /// The driver's message.
        message: String,
    },
}

impl Reason {
    /// The stable code, as shown by explain and in JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::FieldNotMatchable { .. } => "field-not-matchable",
            Reason::MaskNotSupported { .. } => "mask-not-supported",
            Reason::ValueNotSupported { .. } => "value-not-supported",
            Reason::RangeNotSupported { .. } => "range-not-supported",
            Reason::ActionNotSupported { .. } => "action-not-supported",
            Reason::ActionCombination { .. } => "action-combination",
            Reason::ArgumentOutOfRange { .. } => "argument-out-of-range",
            Reason::PriorityLevel { .. } => "priority-level",
            Reason::Feature { .. } => "feature",
            Reason::Shape { .. } => "shape",
            Reason::Capacity { .. } => "capacity",
            Reason::NotImplemented { .. } => "not-implemented",
            Reason::InvalidInput { .. } => "invalid-input",
            Reason::Device { .. } => "device",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::FieldNotMatchable { field } => write!(f, "field {field} is not matchable"),
            Reason::MaskNotSupported { field, mask } => {
                write!(f, "field {field} cannot be matched with mask {mask}")
            }
            Reason::ValueNotSupported { field, value } => {
                write!(f, "field {field} cannot be matched with value {value}")
            }
            Reason::RangeNotSupported { field } => write!(f, "no range match on {field}"),
            Reason::ActionNotSupported { action, direction } => {
                write!(f, "action {action} is not supported on {direction}")
            }
            Reason::ActionCombination { detail } => write!(f, "actions: {detail}"),
            Reason::ArgumentOutOfRange { detail } => write!(f, "argument out of range: {detail}"),
            Reason::PriorityLevel { level, levels } => {
                write!(
                    f,
                    "priority level {level} needs more than the {levels} levels"
                )
            }
            Reason::Feature { feature } => write!(f, "no {feature}"),
            Reason::Shape { detail } => write!(f, "not one device rule: {detail}"),
            Reason::Capacity { resource, limit } => {
                write!(f, "{resource} budget of {limit} is used up")
            }
            Reason::NotImplemented { site, detail } => write!(f, "{site}: {detail}"),
            Reason::InvalidInput { diagnostics } => {
                write!(f, "invalid input: {}", diagnostics.join("; "))
            }
            Reason::Device { errno, message } => write!(f, "device refused ({errno}): {message}"),
        }
    }
}

/// What a backend produced: printable as stable text and JSON, and diffable by item.
pub trait Artifact: fmt::Debug + Send + Sync + 'static {
    /// The target that made it.
    fn target(&self) -> &str;
    /// The stable text form (`pipec compile --emit <target>`).
    fn text(&self) -> String;
    /// The JSON form.
    fn json(&self) -> serde_json::Value;
    /// The artifact's items, each with a key stable across compilations and its text; the
    /// default [`Backend::diff`] compares these. Keys are unique.
    fn items(&self) -> Vec<(String, String)>;
    /// For backends that need their concrete type back (`downcast_ref`).
    fn as_any(&self) -> &dyn Any;
}

/// What one delta operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaOp {
    /// Install a new item.
    Add,
    /// Replace an item that keeps its key.
    Modify,
    /// Remove an item.
    Remove,
}

/// One step of moving a device from an old artifact to a new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delta {
    /// What to do.
    pub op: DeltaOp,
    /// The item's key.
    pub key: String,
    /// The item's text (the new text for [`DeltaOp::Add`] and [`DeltaOp::Modify`], the old
    /// text for [`DeltaOp::Remove`]).
    pub text: String,
}

/// Diffs two item lists into ordered deltas: every addition first, then changes, then
/// removals (make-before-break), each group in key order.
pub fn diff_items(old: &[(String, String)], new: &[(String, String)]) -> Vec<Delta> {
    let old: BTreeMap<&str, &str> = old.iter().map(|(k, t)| (k.as_str(), t.as_str())).collect();
    let new: BTreeMap<&str, &str> = new.iter().map(|(k, t)| (k.as_str(), t.as_str())).collect();
    let mut out = Vec::new();
    for (k, t) in &new {
        match old.get(k) {
            None => out.push((DeltaOp::Add, k, t)),
            Some(o) if o != t => out.push((DeltaOp::Modify, k, t)),
            Some(_) => {}
        }
    }
    for (k, t) in &old {
        if !new.contains_key(k) {
            out.push((DeltaOp::Remove, k, t));
        }
    }
    out.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    out.into_iter()
        .map(|(op, k, t)| Delta {
            op,
            key: (*k).to_string(),
            text: (*t).to_string(),
        })
        .collect()
}

/// What a backend compiles from: one node's pipeline, its proof of well-formedness, and
/// the partition of it onto the hardware target (`None` when the run has no hardware
/// target).
///
/// Only pipec builds it (the session); backends read it. It is `#[non_exhaustive]` so that
/// a new input (a field) is not a breaking change for backend crates.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct CompileInput<'a> {
    /// The node's match-action graph.
    pub mag: &'a Mag,
    /// What [`crate::mag::validate`] proved about it.
    pub info: &'a MagInfo,
    /// The partition plan, whose [`Plan::slice`] holds the hardware rules.
    pub plan: Option<&'a Plan>,
    /// The cluster model the MAG was lowered from, for targets that compile cluster state
    /// the MAG does not carry (the CPT target's nodes, boot IDs and IPsec key Secret).
    pub cluster: &'a crate::model::Cluster,
    /// The node compiled for.
    pub node: &'a str,
}

/// A backend's typed operations from one artifact to the next, in the order they must be
/// applied (make-before-break). Each backend has its own operation type; the runtime gets
/// it back with [`Operations::as_any`].
pub trait Operations: fmt::Debug + Send + Sync + 'static {
    /// The target they are for.
    fn target(&self) -> &str;
    /// How many operations there are.
    fn len(&self) -> usize;
    /// True when there is nothing to do.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One line per operation, in order, for logs and snapshots.
    fn text(&self) -> String;
    /// For the runtime that applies them (`downcast_ref` to the backend's type).
    fn as_any(&self) -> &dyn Any;
}

/// The generic operations: [`Delta`]s over an artifact's [`items`](Artifact::items), what
/// [`Backend::diff`] gives unless a backend has operations of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Deltas {
    /// The target.
    pub target: String,
    /// The deltas, in order.
    pub deltas: Vec<Delta>,
}

impl Operations for Deltas {
    fn target(&self) -> &str {
        &self.target
    }
    fn len(&self) -> usize {
        self.deltas.len()
    }
    fn text(&self) -> String {
        self.deltas
            .iter()
            .map(|d| format!("{:?} {} {}\n", d.op, d.key, d.text).to_lowercase())
            .collect()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A target: identity, profile, compilation, emission and diff.
///
/// Implementations must be deterministic: equal inputs compile to equal artifacts.
pub trait Backend: Send + Sync {
    /// The name the target is looked up by (`octeon-cn10k`).
    fn name(&self) -> &str;
    /// What the target can do and how much of it.
    fn profile(&self) -> &Profile;
    /// Whether the target can hold one hardware rule. The partitioner asks this for every
    /// rule it would place, so a plan never holds a rule the backend refuses; the default
    /// asks the profile alone.
    fn check_rule(&self, rule: &HwRule) -> Result<(), Unsupported> {
        self.profile().check_rule(rule)
    }
    /// Compiles the target's part of a node's pipeline, or says why it cannot.
    fn compile(&self, input: &CompileInput<'_>) -> Result<Box<dyn Artifact>, Unsupported>;
    /// [`Backend::compile`] for a device that holds `before`, this target's artifact of the
    /// last state, when the graph changed by the entries of `diff` only (the tables, keys
    /// and actions are the same). A backend may take from `before` what no changed table
    /// reaches; the result must equal what [`Backend::compile`] gives for `input`. A
    /// session calls this after every event lowered incrementally. The default compiles
    /// from scratch, which is always right.
    fn recompile(
        &self,
        input: &CompileInput<'_>,
        before: &dyn Artifact,
        diff: &crate::lower::incremental::Diff,
    ) -> Result<Box<dyn Artifact>, Unsupported> {
        let _ = (before, diff);
        self.compile(input)
    }
    /// Whether [`Backend::compile`] reads nothing of its input but the plan. A session
    /// that keeps the plan for an event (one that changes no table a plan reads, such as
    /// a Service's endpoints) then keeps such a target's artifact too, without compiling
    /// or diffing it. The default, `false`, is always right.
    fn reads_only_the_plan(&self) -> bool {
        false
    }
    /// The stable text form of an artifact of this target.
    fn emit_text(&self, artifact: &dyn Artifact) -> String {
        artifact.text()
    }
    /// The JSON form of an artifact of this target.
    fn emit_json(&self, artifact: &dyn Artifact) -> serde_json::Value {
        artifact.json()
    }
    /// Ordered operations that take a device holding `old` (nothing, for `None`) to `new`;
    /// both are artifacts of this target.
    fn diff(&self, old: Option<&dyn Artifact>, new: &dyn Artifact) -> Box<dyn Operations> {
        let old = old.map(Artifact::items).unwrap_or_default();
        Box::new(Deltas {
            target: self.name().to_string(),
            deltas: diff_items(&old, &new.items()),
        })
    }
}

/// A backend that takes a rule its own profile does not declare it can hold: a bug in the
/// backend (its `check_rule` or its profile is wrong), caught before the rule is placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("target {target} accepts rule r{rule} ({origin}), but its profile does not declare it: {capability}")]
pub struct ProfileViolation {
    /// The backend.
    pub target: String,
    /// The rule's id.
    pub rule: u32,
    /// Where the rule came from.
    pub origin: String,
    /// The capability the profile lacks (what the profile check says).
    pub capability: String,
}

/// Whether `backend` holds one rule: its own [`Backend::check_rule`] *and* its declared
/// [`Profile`] must both accept it. A backend that accepts what its profile does not declare
/// is refused the rule with [`ProfileViolation`], so a plan never rests on an undeclared
/// capability. The session's partitioner asks this for every rule.
pub fn check_declared(backend: &dyn Backend, rule: &HwRule) -> Result<(), CheckError> {
    backend.check_rule(rule).map_err(CheckError::Refused)?;
    backend.profile().check_rule(rule).map_err(|e| {
        CheckError::Undeclared(ProfileViolation {
            target: backend.name().to_string(),
            rule: rule.id,
            origin: rule.origin.clone(),
            capability: e.reason.to_string(),
        })
    })
}

/// Why [`check_declared`] did not accept a rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The backend refused it (an ordinary "can't").
    #[error(transparent)]
    Refused(Unsupported),
    /// The backend accepted it, but its profile does not declare what the rule needs.
    #[error(transparent)]
    Undeclared(ProfileViolation),
}

/// Every [`ProfileViolation`] of `backend` over `rules`: the check a backend crate runs in
/// its tests over the rules a plan would give it (see `docs/backends.md`).
pub fn profile_violations(backend: &dyn Backend, rules: &[HwRule]) -> Vec<ProfileViolation> {
    rules
        .iter()
        .filter_map(|r| match check_declared(backend, r) {
            Err(CheckError::Undeclared(v)) => Some(v),
            _ => None,
        })
        .collect()
}

/// The hardware slice of a compile input: an empty slice when there is no plan.
pub fn plan_slice<'a>(input: &CompileInput<'a>) -> std::borrow::Cow<'a, PlanSlice> {
    match input.plan {
        Some(p) => std::borrow::Cow::Borrowed(&p.slice),
        None => std::borrow::Cow::Owned(PlanSlice::default()),
    }
}

/// Why a target name did not resolve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// A built-in target that this build left out.
    #[error("target {name} is not built in this binary (enable the `{feature}` feature)")]
    Disabled {
        /// The target name.
        name: String,
        /// The Cargo feature that builds it.
        feature: String,
    },
    /// No such target.
    #[error("unknown target {name}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    Unknown {
        /// The name asked for.
        name: String,
        /// The closest known name, if one is close.
        suggestion: Option<String>,
    },
}

/// How mature a built-in target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SupportLevel {
    /// Tested end to end against its oracle.
    Supported,
    /// Works, with gaps that its profile names.
    Experimental,
}

/// The built-in targets: name, the crate feature that builds it, support level.
pub const BUILTIN_TARGETS: &[(&str, &str, SupportLevel)] = &[
    ("octeon-cn10k", "rte_flow", SupportLevel::Experimental),
    ("ebpf", "ebpf", SupportLevel::Experimental),
];

/// Finds a target by name among `available` (the backends this binary was built with);
/// a built-in name that is not available is [`LookupError::Disabled`].
pub fn lookup<'a>(
    available: &'a [Box<dyn Backend>],
    name: &str,
) -> Result<&'a dyn Backend, LookupError> {
    if let Some(b) = available.iter().find(|b| b.name() == name) {
        return Ok(b.as_ref());
    }
    if let Some((n, feature, _)) = BUILTIN_TARGETS.iter().find(|(n, _, _)| *n == name) {
        return Err(LookupError::Disabled {
            name: (*n).to_string(),
            feature: (*feature).to_string(),
        });
    }
    let names: Vec<&str> = available
        .iter()
        .map(|b| b.name())
        .chain(BUILTIN_TARGETS.iter().map(|(n, _, _)| *n))
        .collect();
    Err(LookupError::Unknown {
        name: name.to_string(),
        suggestion: crate::util::closest(name, names).map(str::to_string),
    })
}

/// The text of `pipec targets`: every profile, in the order given.
pub fn targets_text(profiles: &[Profile]) -> String {
    let mut out = String::new();
    for p in profiles {
        out.push_str(&p.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
