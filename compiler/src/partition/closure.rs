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

//!
//! Both checks run lazily, entry by entry, when the budget reaches an entry
//! ([`Closure::materialize`]): the entries above one are found through an index by
//! endpoint and remote identity (entries of different endpoints or different identities
//! never overlap), not by a scan of the table.

use super::capability::{admits, build_rules, exact32, Candidate, Context, Kind};
use super::Why;
use crate::mag::{ct, Field, FieldMatch, Mag};
use std::ops::Range;

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
pub fn overlaps(mag: &Mag, a: &Candidate, b: &Candidate) -> bool {
    a.key(mag)
        .zip(b.key(mag))
        .all(|((f, ma), (_, mb))| intersects(&ma, &mb, f.width()))
}

/// The overlap index of the ingress entries and the egress view, for lazy checks.
pub struct Closure<'m> {
    /// Ingress entries sorted by (endpoint, identity, index); `None` (several endpoints,
    /// any identity) sorts first.
    ingress: Vec<usize>,
    egress: EgressView<'m>,
}

impl<'m> Closure<'m> {
    /// Indexes the ingress entries of `cands` and the egress table of `mag`.
    pub fn new(mag: &'m Mag, cands: &[Candidate]) -> Closure<'m> {
        let ingress_table = mag.table_by_name(crate::mag::pipeline::table::INGRESS_POLICY);
        let mut ingress: Vec<usize> = (0..cands.len())
            .filter(|i| Some(cands[*i].table) == ingress_table)
            .collect();
        ingress.sort_by_key(|i| (cands[*i].endpoint, cands[*i].identity, *i));
        Closure {
            ingress,
            egress: EgressView::new(mag),
        }
    }

    /// The positions in the index of the entries with this endpoint and identity key
    /// (`identity: None` of the argument: every identity of the endpoint).
    fn range(&self, cands: &[Candidate], ep: Option<u32>, id: Option<Option<u32>>) -> Range<usize> {
        let key = |i: &usize| (cands[*i].endpoint, cands[*i].identity);
        let (lo, hi) = match id {
            Some(id) => (
                self.ingress.partition_point(|i| key(i) < (ep, id)),
                self.ingress.partition_point(|i| key(i) <= (ep, id)),
            ),
            None => (
                self.ingress.partition_point(|i| cands[*i].endpoint < ep),
                self.ingress.partition_point(|i| cands[*i].endpoint <= ep),
            ),
        };
        lo..hi
    }

    /// Entries that may overlap `b`: same endpoint or several endpoints, same identity
    /// or any identity.
    fn peers(&self, cands: &[Candidate], b: usize) -> Vec<usize> {
        let c = &cands[b];
        let mut eps = vec![None];
        if c.endpoint.is_some() {
            eps.push(c.endpoint);
        }
        let mut out = Vec::new();
        for ep in eps {
            let ranges = match c.identity {
                Some(id) => vec![
                    self.range(cands, ep, Some(None)),
                    self.range(cands, ep, Some(Some(id))),
                ],
                None => vec![self.range(cands, ep, None)],
            };
            for r in ranges {
                out.extend_from_slice(&self.ingress[r]);
            }
        }
        out
    }

    /// The entries above `b` that it depends on: higher priority, another action, able
    /// to match a new connection, overlapping. Sorted by index.
    pub(super) fn deps(&self, mag: &Mag, cands: &[Candidate], b: usize) -> Vec<usize> {
        let c = &cands[b];
        let mut deps: Vec<usize> = self
            .peers(cands, b)
            .into_iter()
            .filter(|j| {
                let a = &cands[*j];
                *j != b
                    && a.priority > c.priority
                    && a.kind != c.kind
                    && admits(&a.get(mag, Field::CtState), ct::NEW, 8)
                    && overlaps(mag, a, c)
            })
            .collect();
        deps.sort_unstable();
        deps.dedup();
        deps
    }

    /// Builds entry `i`'s rules and checks soundness and priority closure (building the
    /// entries above it first). Returns whether it is still a hardware candidate.
    pub fn materialize(&self, ctx: &Context<'_>, cands: &mut [Candidate], i: usize) -> bool {
        if cands[i].built {
            return cands[i].ok;
        }
        cands[i].built = true;
        if !build_rules(&mut cands[i], ctx) {
            return false;
        }
        if cands[i].kind == Kind::Drop && !self.sound(ctx.mag, &mut cands[i]) {
            return false;
        }
        let deps = self.deps(ctx.mag, cands, i);
        // Entries above have a strictly higher priority, so this recursion ends.
        for j in &deps {
            if !self.materialize(ctx, cands, *j) {
                let above = cands[*j].placement.entry_name().into();
                cands[i].leave(Why::NotPriorityClosed { above });
                cands[i].deps = deps;
                return false;
            }
        }
        cands[i].deps = deps;
        note_closed(&mut cands[i]);
        true
    }

    /// Whether a drop is stateless-sound; leaves it to eBPF if not.
    fn sound(&self, mag: &Mag, c: &mut Candidate) -> bool {
        let Some(ep) = c.endpoint else {
            return true;
        };
        let why = self.egress.may_open(
            mag,
            u128::from(ep),
            &c.get(mag, Field::SrcIdentity),
            &c.get(mag, Field::IpProto),
        );
        if let Some(detail) = why {
            c.leave(Why::NotSound {
                detail: detail.into(),
            });
            false
        } else {
            note_sound(c);
            true
        }
    }
}

/// The soundness step of a hardware drop's chain.
pub(super) fn note_sound(c: &mut Candidate) {
    c.placement
        .chain
        .push("sound: the pod opens no such connection, so no reply is dropped".into());
}

/// The closure step of a hardware entry's chain, once its dependencies are known.
pub(super) fn note_closed(c: &mut Candidate) {
    if !c.deps.is_empty() {
        let n = c.deps.len();
        c.placement.chain.push(format!(
            "priority-closed: the {n} rule(s) above it go to hardware too"
        ));
    }
}

/// The egress policy table, read for the soundness check: its entries that do not drop,
/// sorted by endpoint (`None`: several endpoints) so one pod's entries are found at once.
struct EgressView<'m> {
    table: Option<&'m crate::mag::Table>,
    passing: Vec<(Option<u128>, usize)>,
}

impl<'m> EgressView<'m> {
    fn new(mag: &'m Mag) -> EgressView<'m> {
        let table = mag
            .table_by_name(crate::mag::pipeline::table::EGRESS_POLICY)
            .and_then(|t| mag.table(t));
        let mut passing = Vec::new();
        if let Some(t) = table {
            let ep_col = t.key.iter().position(|k| k.field == Field::Endpoint);
            for (i, e) in t.entries.iter().enumerate() {
                if Kind::of(mag, e.action.action) != Kind::Drop {
                    let ep = ep_col.and_then(|c| exact32(&e.matches[c]));
                    passing.push((ep, i));
                }
            }
        }
        passing.sort_unstable();
        EgressView { table, passing }
    }

    /// The indices of the passing entries that may apply to endpoint `ep`, in table order.
    fn for_endpoint(&self, ep: u128) -> Vec<usize> {
        let of = |key: Option<u128>| {
            let lo = self.passing.partition_point(|(e, _)| *e < key);
            let hi = self.passing.partition_point(|(e, _)| *e <= key);
            self.passing[lo..hi].iter().map(|(_, i)| *i)
        };
        let mut out: Vec<usize> = of(None).chain(of(Some(ep))).collect();
        out.sort_unstable();
        out
    }

    /// Why pod `ep` may open a new connection of protocol `proto` to identity `to`, or
    /// `None` when its egress policy denies every such connection.
    fn may_open(&self, mag: &Mag, ep: u128, to: &FieldMatch, proto: &FieldMatch) -> Option<String> {
        let Some(t) = self.table else {
            return Some("no egress policy table to prove replies safe".into());
        };
        let unsafe_msg = || {
            Some("the pod may open connections to these sources; a hardware drop would drop their replies".to_string())
        };
        if Kind::of(mag, t.default_action.action) != Kind::Drop {
            return unsafe_msg();
        }
        for i in self.for_endpoint(ep) {
            let e = &t.entries[i];
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
