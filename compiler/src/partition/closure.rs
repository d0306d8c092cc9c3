//! Step 2: priority closure and stateless soundness.
//!
//! **Priority-closed.** Hardware decides by the first matching rule, so an entry may go to
//! hardware only if every higher-priority entry of its table that overlaps it and does
//! something else goes too (rule dependency, as in CacheFlow). Entries that match only
//! packets of known connections (`ct_state` established or reply) are not dependencies:
//! the soundness rule below makes sure no such packet reaches a hardware drop.
//!
//! **Stateless-sound.** Hardware keeps no connection state. A hardware *mark* never
//! decides, so it is always sound. A hardware *drop* of packets from sources `S` to local
//! pod `D` (protocol `P`) is sound when every packet it matches is denied:
//! - a new connection from `S`: the ingress entry denies it (and it is priority-closed);
//! - a later packet of a connection `S` opened: policy denied its first packet;
//! - a reply to a connection `D` opened to `S` (directly or through a service): it would be
//!   allowed, so the drop is sound only if `D`'s egress policy denies every new `P`
//!   connection to `S`. This is what the check reads from the `egress_policy` table;
//!   anything it cannot prove leaves the drop in eBPF.

use super::capability::{admits, Candidate, Kind};
use super::Why;
use crate::mag::{ct, Field, FieldMatch, Mag};
use std::collections::BTreeMap;

/// The (value, mask) of a match over a `width`-bit field, or `None` for a range.
fn ternary(m: &FieldMatch, width: u32) -> Option<(u128, u128)> {
    let full = if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    match *m {
        FieldMatch::Any => Some((0, 0)),
        FieldMatch::Exact(v) => Some((v, full)),
        FieldMatch::Prefix { value, len } => {
            let mask = crate::mag::prefix_mask(u32::from(len), width);
            Some((value & mask, mask))
        }
        FieldMatch::Ternary { value, mask } => Some((value, mask)),
        FieldMatch::Range { .. } => None,
    }
}

/// Whether two matches of one field can hold for one value (ranges: assumed yes).
pub fn intersects(a: &FieldMatch, b: &FieldMatch, width: u32) -> bool {
    match (ternary(a, width), ternary(b, width)) {
        (Some((va, ma)), Some((vb, mb))) => (va ^ vb) & ma & mb == 0,
        _ => true,
    }
}

/// Whether two entries of one table can match one packet.
pub fn overlaps(a: &Candidate, b: &Candidate) -> bool {
    a.key
        .iter()
        .zip(b.key.iter())
        .all(|((f, ma), (_, mb))| intersects(ma, mb, f.width()))
}

fn endpoint_of(c: &Candidate) -> Option<u128> {
    match c.get(Field::Endpoint) {
        FieldMatch::Exact(v) => Some(v),
        FieldMatch::Ternary { value, mask } if mask == u128::from(u32::MAX) => Some(value),
        _ => None,
    }
}

/// Fills `deps`, then leaves to eBPF every entry that is not priority-closed or not sound.
pub fn check(mag: &Mag, cands: &mut [Candidate]) {
    let ingress: Vec<usize> = (0..cands.len())
        .filter(|i| cands[*i].placement.table == "ingress_policy")
        .collect();
    // Group by endpoint: entries of different endpoints never overlap.
    let mut by_ep: BTreeMap<Option<u128>, Vec<usize>> = BTreeMap::new();
    for i in &ingress {
        by_ep.entry(endpoint_of(&cands[*i])).or_default().push(*i);
    }
    let wild: Vec<usize> = by_ep.get(&None).cloned().unwrap_or_default();
    for i in &ingress {
        let b = &cands[*i];
        if !b.ok {
            continue;
        }
        let mut deps = Vec::new();
        let ep = endpoint_of(b);
        let peers = by_ep.get(&ep).into_iter().flatten().chain(wild.iter());
        for j in peers {
            let a = &cands[*j];
            if *j != *i
                && a.priority > b.priority
                && a.kind != b.kind
                && admits(&a.get(Field::CtState), ct::NEW, 8)
                && overlaps(a, b)
            {
                deps.push(*j);
            }
        }
        deps.sort_unstable();
        deps.dedup();
        cands[*i].deps = deps;
    }
    // Soundness of drops.
    let egress = EgressView::new(mag);
    for i in &ingress {
        let c = &cands[*i];
        if !c.ok || c.kind != Kind::Drop {
            continue;
        }
        let Some(ep) = endpoint_of(c) else { continue };
        let why = egress.may_open(ep, &c.get(Field::SrcIdentity), &c.get(Field::IpProto));
        if let Some(detail) = why {
            cands[*i].leave(Why::NotSound { detail });
        } else {
            cands[*i]
                .placement
                .chain
                .push("sound: the pod opens no such connection, so no reply is dropped".into());
        }
    }
    // Priority closure, highest priority first, so that what is above is settled.
    let mut order = ingress.clone();
    order.sort_by_key(|i| std::cmp::Reverse(cands[*i].priority));
    for i in order {
        if !cands[i].ok {
            continue;
        }
        if let Some(j) = cands[i].deps.iter().copied().find(|j| !cands[*j].ok) {
            let above = cands[j].placement.entry.clone();
            cands[i].leave(Why::NotPriorityClosed { above });
        } else if !cands[i].deps.is_empty() {
            let n = cands[i].deps.len();
            cands[i].placement.chain.push(format!(
                "priority-closed: the {n} rule(s) above it go to hardware too"
            ));
        }
    }
}

/// The egress policy table, read for the soundness check.
struct EgressView<'m> {
    mag: &'m Mag,
    table: Option<&'m crate::mag::Table>,
}

impl<'m> EgressView<'m> {
    fn new(mag: &'m Mag) -> EgressView<'m> {
        let table = mag
            .table_by_name("egress_policy")
            .and_then(|t| mag.table(t));
        EgressView { mag, table }
    }

    /// Why pod `ep` may open a new connection of protocol `proto` to identity `to`, or
    /// `None` when its egress policy denies every such connection.
    fn may_open(&self, ep: u128, to: &FieldMatch, proto: &FieldMatch) -> Option<String> {
        let Some(t) = self.table else {
            return Some("no egress policy table to prove replies safe".into());
        };
        let unsafe_msg = || {
            Some("the pod may open connections to these sources; a hardware drop would drop their replies".to_string())
        };
        if Kind::of(self.mag, t.default_action.action) != Kind::Drop {
            return unsafe_msg();
        }
        for e in &t.entries {
            if Kind::of(self.mag, e.action.action) == Kind::Drop {
                continue;
            }
            let fits = t
                .key
                .iter()
                .zip(e.matches.iter())
                .all(|(k, m)| match k.field {
                    Field::CtState => admits(m, ct::NEW, 8),
                    Field::Endpoint => admits(m, ep, 32),
                    Field::DstIdentity => intersects(m, to, 32),
                    Field::IpProto => intersects(m, proto, 8),
                    _ => true,
                });
            if fits {
                return unsafe_msg();
            }
        }
        None
    }
}
