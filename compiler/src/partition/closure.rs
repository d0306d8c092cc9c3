//! Step 2: priority closure and stateless soundness.
//!
//! **Priority-closed.** Hardware decides by the first matching rule of the port a packet
//! arrives on, so an entry may go to hardware only if every higher-priority entry of its
//! table and port that overlaps it and does something else goes too (rule dependency, as
//! in CacheFlow). Entries of one policy table for one pod share a port (ingress: the
//! uplink, egress: the pod's own), so dependencies are looked up per (table, endpoint).
//! Entries that match only packets of known connections (`ct_state` established or reply)
//! are not dependencies: the soundness rules below make sure no such packet reaches a
//! hardware drop.
//!
//! **Stateless-sound.** Hardware keeps no connection state. A hardware *mark* never
//! decides, so it is always sound. A hardware *drop* must deny every packet it matches,
//! replies included.
//!
//! An **ingress** drop of packets from sources `S` to local pod `D` (protocol `P`), on the
//! uplink:
//! - a new connection from `S`: the ingress entry denies it (and it is priority-closed);
//! - a later packet of a connection `S` opened: policy denied its first packet;
//! - a reply to a connection `D` opened to `S` (directly or through a service): it would be
//!   allowed, so the drop is sound only if `D`'s egress policy denies every new `P`
//!   connection to `S`. This is what the check reads from the `egress_policy` table.
//!
//! An **egress** drop of packets pod `S` sends to destinations `D` (protocol `P`), on `S`'s
//! port, mirrors it:
//! - a new connection to `D`: the egress entry denies it (priority-closed);
//! - a later packet of a connection `S` opened to `D`: policy denied its first packet;
//! - a reply of `S` to a connection `D` opened to `S` (directly or through a service,
//!   whose replies leave `S` untranslated): it would be allowed, so the drop is sound only
//!   if `S`'s ingress policy denies every new `P` connection from `D`, read from the
//!   `ingress_policy` table;
//! - a packet to a service address: software translates it before egress policy, so the
//!   policy judges the backend, while hardware sees the service address. Every egress
//!   rule (drop or mark) leaves out the addresses of every service frontend, gathered
//!   into a few blocks (its destination prefix is cut into the prefixes around them, in
//!   [`super::capability`]), so no rule on a pod's port matches any packet to a frontend
//!   address, whatever its port: such packets take the port's default path to software.
//!   Cutting every rule of the port the same way keeps priority closure: a packet to a
//!   block meets no rule at all.
//!
//! Anything the checks cannot prove leaves the entry in eBPF.
//!
//! Both checks run lazily, entry by entry, when the budget reaches an entry
//! ([`Closure::materialize`]): the entries above one are found through an index by
//! table, endpoint and remote identity (entries of different tables, endpoints or
//! identities never overlap), not by a scan of the table.

use super::capability::{
    admits, exact32, narrow_rules, rebuild_rules, Candidate, Context, Kind, Reuse, Side,
};
use super::Why;
use crate::backend::HwRule;
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

/// The overlap index of the policy entries and the views of both policy tables, for lazy
/// checks.
pub struct Closure<'m> {
    /// Policy entries sorted by (side, endpoint, identity, index); within a side, `None`
    /// (several endpoints, any identity) sorts first.
    index: Vec<usize>,
    /// The egress table: what a pod may open (the soundness of ingress drops).
    egress: PolicyView<'m>,
    /// The ingress table: what a pod may accept (the soundness of egress drops).
    ingress: PolicyView<'m>,
}

/// The sort key of candidate `i` in [`Closure`]'s index, packed in one integer: side,
/// endpoint and identity (each `None` before any value), then the index. Sorting these
/// integers orders as the tuple would, and compares faster than tuples of options (the
/// sort was half of building the closure, in a profile at 1,500 pods).
fn index_key(c: &Candidate, i: usize) -> u128 {
    let opt = |v: Option<u32>| v.map_or(0, |v| u128::from(v) + 1);
    let side = c.side.map_or(0, |s| s as u128 + 1);
    debug_assert!(i <= u32::MAX as usize, "candidate indices are 32-bit");
    side << 98 | opt(c.endpoint) << 65 | opt(c.identity) << 32 | i as u128
}

impl<'m> Closure<'m> {
    /// Indexes the policy entries of `cands` and the policy tables of `mag`.
    pub fn new(mag: &'m Mag, cands: &[Candidate]) -> Closure<'m> {
        // Sorted by keys copied next to the indices, which the cache prefers to reading
        // each candidate at every comparison; the index is part of the key, so an unstable
        // sort gives the one order.
        let mut keyed: Vec<u128> = cands
            .iter()
            .enumerate()
            .filter(|(_, c)| c.side.is_some())
            .map(|(i, c)| index_key(c, i))
            .collect();
        keyed.sort_unstable();
        let index: Vec<usize> = keyed.into_iter().map(|k| k as u32 as usize).collect();
        use crate::mag::pipeline::table as pt;
        Closure {
            index,
            egress: PolicyView::new(mag, pt::EGRESS_POLICY, Side::Egress),
            ingress: PolicyView::new(mag, pt::INGRESS_POLICY, Side::Ingress),
        }
    }

    /// The positions in the index of the entries of `side` with this endpoint and
    /// identity key (`identity: None` of the argument: every identity of the endpoint).
    fn range(
        &self,
        cands: &[Candidate],
        side: Option<Side>,
        ep: Option<u32>,
        id: Option<Option<u32>>,
    ) -> Range<usize> {
        let key = |i: &usize| (cands[*i].side, cands[*i].endpoint, cands[*i].identity);
        let ep_key = |i: &usize| (cands[*i].side, cands[*i].endpoint);
        let (lo, hi) = match id {
            Some(id) => (
                self.index.partition_point(|i| key(i) < (side, ep, id)),
                self.index.partition_point(|i| key(i) <= (side, ep, id)),
            ),
            None => (
                self.index.partition_point(|i| ep_key(i) < (side, ep)),
                self.index.partition_point(|i| ep_key(i) <= (side, ep)),
            ),
        };
        lo..hi
    }

    /// Entries that may overlap `b`: same table, same endpoint (so the same port) or
    /// several endpoints, same identity or any identity.
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
                    self.range(cands, c.side, ep, Some(None)),
                    self.range(cands, c.side, ep, Some(Some(id))),
                ],
                None => vec![self.range(cands, c.side, ep, None)],
            };
            for r in ranges {
                out.extend_from_slice(&self.index[r]);
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

    /// Whether an entry for which `kept` says so depends on entry `v` ([`Closure::deps`]
    /// read the other way round). An entry of several endpoints is taken as depended on:
    /// the entries below it are those of every endpoint, which this does not look up.
    pub(super) fn depended_on(
        &self,
        mag: &Mag,
        cands: &[Candidate],
        v: usize,
        kept: &dyn Fn(usize) -> bool,
    ) -> bool {
        let a = &cands[v];
        let Some(ep) = a.endpoint else {
            return true;
        };
        if !admits(&a.get(mag, Field::CtState), ct::NEW, 8) {
            return false;
        }
        // The entries whose peers hold `v`: of its endpoint, and of its identity or of
        // any identity (`peers` looks up the same two keys the other way).
        let ranges = match a.identity {
            Some(id) => vec![
                self.range(cands, a.side, Some(ep), Some(None)),
                self.range(cands, a.side, Some(ep), Some(Some(id))),
            ],
            None => vec![self.range(cands, a.side, Some(ep), None)],
        };
        ranges.into_iter().flat_map(|r| &self.index[r]).any(|&i| {
            let c = &cands[i];
            i != v && kept(i) && a.priority > c.priority && a.kind != c.kind && overlaps(mag, a, c)
        })
    }

    /// Builds entry `i`'s rules and checks soundness and priority closure (building the
    /// entries above it first). Returns whether it is still a hardware candidate.
    pub fn materialize(&self, ctx: &Context<'_>, cands: &mut [Candidate], i: usize) -> bool {
        if cands[i].built {
            return cands[i].ok;
        }
        cands[i].built = true;
        if !self.build(ctx, &mut cands[i], &|_| false, None) {
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

    /// Builds entry `c`'s rules and, for a drop, checks its soundness: all that
    /// [`Closure::materialize`] does but priority closure. The rules for which `checked`
    /// says so passed the target's check before and are not checked again. A drop
    /// narrowed again copies the rules of its last build (`reuse`) for the prefixes that
    /// stayed.
    pub(super) fn build(
        &self,
        ctx: &Context<'_>,
        c: &mut Candidate,
        checked: &dyn Fn(&HwRule) -> bool,
        reuse: Option<Reuse<'_>>,
    ) -> bool {
        if !rebuild_rules(c, ctx, checked) {
            return false;
        }
        c.kind != Kind::Drop || self.sound(ctx, c, checked, reuse)
    }

    /// Whether a drop is stateless-sound; leaves it to eBPF if not. An egress drop of
    /// every destination that is not sound is narrowed to the identities it is sound for
    /// (those whose connections the pod does not accept), if there are any.
    fn sound(
        &self,
        ctx: &Context<'_>,
        c: &mut Candidate,
        checked: &dyn Fn(&HwRule) -> bool,
        reuse: Option<Reuse<'_>>,
    ) -> bool {
        let mag = ctx.mag;
        let Some(ep) = c.endpoint else {
            return true;
        };
        // The replies an ingress drop could meet are of connections the pod opened (its
        // egress policy); those an egress drop could meet, of connections opened to the
        // pod (its ingress policy).
        let (view, remote) = match c.side {
            Some(Side::Egress) => (&self.ingress, Field::DstIdentity),
            _ => (&self.egress, Field::SrcIdentity),
        };
        let why = view.may_pass(
            mag,
            u128::from(ep),
            &c.get(mag, remote),
            &c.get(mag, Field::IpProto),
        );
        let Some(detail) = why else {
            note_sound(c);
            return true;
        };
        if c.side == Some(Side::Egress) && c.get(mag, Field::DstIdentity) == FieldMatch::Any {
            let proto = c.get(mag, Field::IpProto);
            let mut remotes = Vec::new();
            let mut safe = 0u32;
            for (id, prefixes) in &ctx.ids.v4 {
                let peer = FieldMatch::Exact(*id);
                if self
                    .ingress
                    .may_pass(mag, u128::from(ep), &peer, &proto)
                    .is_none()
                {
                    safe += 1;
                    remotes.extend_from_slice(prefixes);
                }
            }
            let total = ctx.ids.v4.len() as u32;
            if safe > 0 {
                remotes.sort_unstable();
                if !narrow_rules(c, ctx, remotes, (safe, total), checked, reuse) {
                    return false;
                }
                note_sound(c);
                return true;
            }
        }
        c.leave(Why::NotSound {
            detail: detail.into(),
        });
        false
    }
}

/// The soundness step of a hardware drop's chain.
pub(super) fn note_sound(c: &mut Candidate) {
    let text = match (c.side, c.narrowed) {
        (Some(Side::Egress), Some((safe, total))) => format!(
            "sound for {safe} of {total} identities: the pod accepts no such connection from them, so none of its replies is dropped; the others' packets stay in software"
        ),
        (Some(Side::Egress), None) => {
            "sound: the pod accepts no such connection, so none of its replies is dropped".into()
        }
        _ => "sound: the pod opens no such connection, so no reply is dropped".into(),
    };
    c.placement.chain.push(text);
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

/// One policy table, read for the soundness check: its entries that do not drop, sorted by
/// endpoint (`None`: several endpoints) so one pod's entries are found at once.
struct PolicyView<'m> {
    table: Option<&'m crate::mag::Table>,
    /// The identity field of the peer (the destination in egress, the source in ingress).
    remote: Field,
    passing: Vec<(Option<u128>, usize)>,
}

impl<'m> PolicyView<'m> {
    fn new(mag: &'m Mag, name: &str, side: Side) -> PolicyView<'m> {
        let table = mag.table_by_name(name).and_then(|t| mag.table(t));
        // Sorted as packed integers (endpoint, `None` first, then index), which compare
        // faster than tuples of an option and an index; validation keeps an endpoint
        // within 32 bits.
        let mut packed: Vec<u128> = Vec::new();
        if let Some(t) = table {
            let ep_col = t.key.iter().position(|k| k.field == Field::Endpoint);
            for (i, e) in t.entries.iter().enumerate() {
                if Kind::of(mag, e.action.action) != Kind::Drop {
                    let ep = ep_col.and_then(|c| exact32(&e.matches[c]));
                    packed.push(ep.map_or(0, |e| e + 1) << 64 | i as u128);
                }
            }
        }
        packed.sort_unstable();
        let passing = packed
            .into_iter()
            .map(|k| ((k >> 64).checked_sub(1), k as u64 as usize))
            .collect();
        PolicyView {
            table,
            remote: side.remote_identity(),
            passing,
        }
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

    /// Why this table may let pod `ep` have a new connection of protocol `proto` with
    /// identity `peer` (open it, in the egress table; accept it, in the ingress table), or
    /// `None` when it denies every such connection.
    fn may_pass(
        &self,
        mag: &Mag,
        ep: u128,
        peer: &FieldMatch,
        proto: &FieldMatch,
    ) -> Option<String> {
        let Some(t) = self.table else {
            return Some("no policy table of the other direction to prove replies safe".into());
        };
        let unsafe_msg = || {
            Some(match self.remote {
                Field::DstIdentity => "the pod may open connections to these sources; a hardware drop would drop their replies".to_string(),
                _ => "these destinations may open connections to the pod; a hardware drop would drop the pod's replies".to_string(),
            })
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
                    f if f == self.remote => intersects(m, peer, 32),
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
