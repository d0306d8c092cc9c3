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

use super::budget::Reservation;
use super::capability::Candidate;
use super::Why;
use crate::mag::{Mag, Provenance};
use policy_lang::resolved::{Hint, PlaceSubject, Placement, Resource};

/// The text of a hint, as explain shows it.
pub fn hint_text(p: &Placement) -> String {
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

fn subject_text(s: &PlaceSubject) -> String {
    match s {
        PlaceSubject::Policy(p) => format!("policy \"{p}\""),
        PlaceSubject::Service { namespace, name } => format!("service \"{namespace}/{name}\""),
        PlaceSubject::Table(t) => format!("table \"{t}\""),
    }
}

/// Whether candidate `c` of `mag` is about `subject`.
pub fn names(mag: &Mag, c: &Candidate, subject: &PlaceSubject) -> bool {
    if let PlaceSubject::Table(t) = subject {
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
            PlaceSubject::Policy(p) => origin.name == *p || origin.display_name() == *p,
            PlaceSubject::Service { namespace, name } => {
                origin.kind == "Service"
                    && origin.namespace.as_deref() == Some(namespace.as_str())
                    && origin.name == *name
            }
            PlaceSubject::Table(_) => false,
        }
    })
}

/// Applies `hints` for the hardware target `target`; returns the reservations of flow
/// entries on it, in the order of the hints.
pub fn apply(
    mag: &Mag,
    cands: &mut [Candidate],
    hints: &[Placement],
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
