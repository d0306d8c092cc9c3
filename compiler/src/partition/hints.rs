//! Placement hints from `.pipe` files (`exclude policy "p" from hardware;`, `pin table
//! "t" to ebpf;`), applied before the closure step.
//!
//! An **exclude** hint (or a pin to `ebpf`) leaves every entry whose provenance names the
//! subject in eBPF with [`Why::Excluded`]; the closure step then keeps the entries below
//! it that depend on it in eBPF too, so a hint never makes the plan unsound. A **pin** to
//! the hardware target ranks the subject's entries first in the budget (it cannot make an
//! incapable or unsound entry hardware: those reasons stay). `prefer` ranks like `pin`;
//! `reserve` is not applied yet (the hint is shown in the chain of the subject's entries).

use super::capability::Candidate;
use super::Why;
use crate::mag::{Mag, Provenance};
use policy_lang::resolved::{Hint, PlaceSubject, Placement};

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
        return c.placement.table == *t;
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

/// Applies `hints` for the hardware target `target`.
pub fn apply(mag: &Mag, cands: &mut [Candidate], hints: &[Placement], target: &str) {
    if hints.is_empty() {
        return;
    }
    for c in cands.iter_mut() {
        for h in hints {
            if !names(mag, c, &h.subject) {
                continue;
            }
            let text = hint_text(h);
            match &h.hint {
                Hint::ExcludeFromHardware => c.leave(Why::Excluded { hint: text }),
                Hint::Pin { target: t } if t != target => c.leave(Why::Excluded { hint: text }),
                Hint::Pin { .. } | Hint::Prefer { .. } => {
                    if c.ok {
                        c.placement.value = c.placement.value.saturating_add(1 << 50);
                        c.placement.chain.push(format!("ranked first: {text}"));
                    }
                }
                Hint::Reserve { .. } => {
                    c.placement.chain.push(format!("not applied yet: {text}"));
                }
            }
        }
    }
}
