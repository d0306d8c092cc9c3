//! Placement hints from `.pipe` files (`exclude policy "p" from hardware;`, `pin table
//! "t" to ebpf;`), applied before the closure step.
//!
//! An **exclude** hint (or a pin to `ebpf`) leaves every entry whose provenance names the
//! subject in eBPF with [`Why::Excluded`]; the closure step then keeps the entries below
//! it that depend on it in eBPF too, so a hint never makes the plan unsound. A **pin** to
//! the hardware target ranks the subject's entries first in the budget (it cannot make an
//! incapable or unsound entry hardware: those reasons stay). `prefer` ranks like `pin`.
//! A **reserve** hint of flow entries on the hardware target becomes a
//! [`Reservation`] that the budget step fills with the subject's entries first; a
//! reservation of another resource or for another target is only shown in the chain.
//!
//! The hints are the partitioner's own types: `model::pipe::placement_hints` converts the
//! `.pipe` placement statements into them, so the partitioner knows nothing of policy-lang.

use super::budget::Reservation;
use super::capability::Candidate;
use super::Why;
use crate::mag::{Mag, Provenance};

/// One placement hint: what it is about and what it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementHint {
    /// What it is about.
    pub subject: Subject,
    /// What it asks for.
    pub hint: Hint,
}

/// What a placement hint is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    /// A policy, by name (a `.pipe` policy's name, or an object's display name).
    Policy(String),
    /// A Service, by namespace and name.
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A table of the pipeline, by name.
    Table(String),
}

/// A resource a hint can reserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// Table entries.
    Entries,
    /// Counters.
    Counters,
    /// Security associations.
    Sas,
}

/// What a placement hint asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hint {
    /// Must be on this target.
    Pin {
        /// The target.
        target: String,
    },
    /// Should be on this target when it fits.
    Prefer {
        /// The target.
        target: String,
    },
    /// Keep this much of a resource on a target for it.
    Reserve {
        /// The target.
        target: String,
        /// The resource.
        resource: Resource,
        /// How much.
        amount: u32,
    },
    /// Never in hardware: software (eBPF) only.
    ExcludeFromHardware,
}

/// The text of a hint, as explain shows it.
pub fn hint_text(p: &PlacementHint) -> String {
    let subject = subject_text(&p.subject);
    match &p.hint {
        Hint::ExcludeFromHardware => format!("exclude {subject} from hardware"),
        Hint::Pin { target } => format!("pin {subject} to {target}"),
        Hint::Prefer { target } => format!("prefer {subject} on {target}"),
        Hint::Reserve {
            target,
            resource,
            amount,
        } => format!("reserve {amount} {resource:?} on {target} for {subject}").to_lowercase(),
    }
}

fn subject_text(s: &Subject) -> String {
    match s {
        Subject::Policy(p) => format!("policy \"{p}\""),
        Subject::Service { namespace, name } => format!("service \"{namespace}/{name}\""),
        Subject::Table(t) => format!("table \"{t}\""),
    }
}

/// Whether candidate `c` of `mag` is about `subject`.
pub fn names(mag: &Mag, c: &Candidate, subject: &Subject) -> bool {
    if let Subject::Table(t) = subject {
        return mag.table(c.table).is_some_and(|table| table.name == *t);
    }
    let Some(table) = mag.table(c.table) else {
        return false;
    };
    let Some(entry) = table.entries.get(c.entry.0 as usize) else {
        return false;
    };
    entry.provenance.iter().any(|id| {
        let origin = match mag.provenance.get_index(id.0 as usize) {
            Some(Provenance::Rule(r)) => &r.origin,
            Some(Provenance::Object(o)) => o,
            _ => return false,
        };
        match subject {
            Subject::Policy(p) => origin.name == *p || origin.display_name() == *p,
            Subject::Service { namespace, name } => {
                origin.kind == "Service"
                    && origin.namespace.as_deref() == Some(namespace.as_str())
                    && origin.name == *name
            }
            Subject::Table(_) => false,
        }
    })
}

/// Applies `hints` for the hardware target `target`; returns the reservations of flow
/// entries on it, in the order of the hints.
pub fn apply(
    mag: &Mag,
    cands: &mut [Candidate],
    hints: &[PlacementHint],
    target: &str,
) -> Vec<Reservation> {
    let mut reservations: Vec<Reservation> = hints
        .iter()
        .filter_map(|h| match &h.hint {
            Hint::Reserve {
                target: t,
                resource: Resource::Entries,
                amount,
            } if t == target => Some(Reservation {
                hint: hint_text(h),
                amount: u64::from(*amount),
                members: Vec::new(),
            }),
            _ => None,
        })
        .collect();
    if hints.is_empty() {
        return reservations;
    }
    for (i, c) in cands.iter_mut().enumerate() {
        let mut reserved = 0;
        for h in hints {
            if !names(mag, c, &h.subject) {
                continue;
            }
            let text = hint_text(h);
            match &h.hint {
                Hint::ExcludeFromHardware => c.leave(Why::Excluded { hint: text.into() }),
                Hint::Pin { target: t } if t != target => {
                    c.leave(Why::Excluded { hint: text.into() })
                }
                Hint::Pin { .. } | Hint::Prefer { .. } => {
                    if c.ok {
                        c.placement.value = c.placement.value.saturating_add(1 << 50);
                        c.placement.chain.push(format!("ranked first: {text}"));
                    }
                }
                Hint::Reserve {
                    target: t,
                    resource: Resource::Entries,
                    ..
                } if t == target => {
                    // Each reserve hint is one reservation; the entry joins the first that
                    // names it.
                    if let Some(r) = reservations.iter_mut().find(|r| r.hint == text) {
                        if reserved == 0 && c.ok {
                            r.members.push(i);
                            c.placement.chain.push(format!("budget set aside: {text}"));
                        }
                    }
                    reserved += 1;
                }
                Hint::Reserve { .. } => {
                    c.placement
                        .chain
                        .push(format!("not applied (another target or resource): {text}"));
                }
            }
        }
    }
    reservations
}
