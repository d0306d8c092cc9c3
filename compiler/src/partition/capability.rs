//! Step 1, capability: every MAG entry gets a first placement, and the policy entries
//! that hardware could take are written as ternary [`HwRule`]s and checked against the
//! profile.
//!
//! **Ports.** A cnxk rule is created on one port and sees only what that port receives.
//! A profile that says so declares the field `in_port` (exact match only: a rule names one
//! port). Ports are numbered as the MAG numbers them (`meta::ports`): 0 is the network
//! uplink, and a local pod's port (its VF) has the pod's endpoint number, the value the
//! MAG's `classify` table reads from `in_port`. So
//!
//! - an **ingress** policy entry of local pod `D` becomes rules on the uplink (port 0)
//!   that match `D`'s addresses as destination and the remote identity's prefixes as
//!   source;
//! - an **egress** policy entry of local pod `S` becomes rules on `S`'s own port, which
//!   receives only what `S` sends: they match the remote identity's prefixes as
//!   destination and nothing as source (the port is the source). Only a profile with
//!   `in_port` takes them; without it one flow table for every packet cannot tell a pod's
//!   own packets from packets that carry its address, and egress policy stays in eBPF.
//!
//! Stages other than policy stay in eBPF with a reason a network engineer recognises (the
//! flow table has no header rewrite, no connection state, no metadata).

use super::prefixes::{range_to_prefixes, IdentitySets, Prefix};
use super::{Placement, Target, Why, MARK_ALLOW, MARK_REDIRECT};
use crate::backend::{HwAction, HwMatch, HwRule, PacketField, PortDirection, Profile};
use crate::mag::algebra::port_prefixes;
use crate::mag::{ct, ports, ActionId, EntryId, Field, FieldMatch, Mag, Op, TableId};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The field a profile declares to say that a rule is created on one port and matches only
/// what that port receives (see the module documentation): the MAG's `in_port`.
pub const IN_PORT: &str = "in_port";

/// The port hardware rules of ingress policy are created on: the network uplink.
pub const UPLINK: u16 = ports::WIRE as u16;

/// Which policy table a candidate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// `ingress_policy`: rules on the uplink, matching the pod's addresses as destination.
    Ingress,
    /// `egress_policy`: rules on the sending pod's port, matching the remote destination.
    Egress,
}

impl Side {
    /// The side of a table, by its name (`None`: not a policy table).
    pub fn of_table(name: &str) -> Option<Side> {
        use crate::mag::pipeline::table as pt;
        match name {
            pt::INGRESS_POLICY => Some(Side::Ingress),
            pt::EGRESS_POLICY => Some(Side::Egress),
            _ => None,
        }
    }

    /// The field that names the remote peer's identity in this side's table.
    pub fn remote_identity(self) -> Field {
        match self {
            Side::Ingress => Field::SrcIdentity,
            Side::Egress => Field::DstIdentity,
        }
    }
}

/// Whether `profile` places rules per port (declares [`IN_PORT`]).
pub fn per_port(profile: &Profile) -> bool {
    profile.caps.fields.contains_key(IN_PORT)
}

/// Which port `port` is, in a few words for explain.
pub fn port_text(port: u16) -> String {
    if port == UPLINK {
        format!("port {port}, the uplink")
    } else {
        // The plan names a pod's port by its endpoint number; the VF's ethdev port is the
        // device's business (pipecd maps one to the other, `pipec trace` shows both).
        format!("port of endpoint {port}, the sending pod's VF")
    }
}

/// What a policy entry does, as hardware sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Drop.
    Drop,
    /// Allow (mark and hand on).
    Allow,
    /// Redirect to the L7 proxy (mark and hand on).
    Redirect,
}

impl Kind {
    /// The kind of a MAG action.
    pub fn of(mag: &Mag, action: ActionId) -> Kind {
        let Some(def) = mag.action(action) else {
            return Kind::Allow;
        };
        if def.ops.iter().any(|o| matches!(o, Op::Drop)) {
            Kind::Drop
        } else if def.ops.iter().any(|o| {
            matches!(
                o,
                Op::Set {
                    field: Field::Mark,
                    ..
                }
            )
        }) {
            Kind::Redirect
        } else {
            Kind::Allow
        }
    }

    /// The hardware actions.
    pub fn actions(self) -> Vec<HwAction> {
        match self {
            Kind::Drop => vec![HwAction::Drop],
            Kind::Allow => vec![HwAction::Mark { id: MARK_ALLOW }],
            Kind::Redirect => vec![HwAction::Mark { id: MARK_REDIRECT }],
        }
    }
}

/// One MAG entry on its way through the partitioner.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The placement so far.
    pub placement: Placement,
    /// The table.
    pub table: TableId,
    /// The entry.
    pub entry: EntryId,
    /// Still a hardware candidate.
    pub ok: bool,
    /// The hardware rules (level 0, id 0 until [`super::compress`]).
    pub rules: Vec<HwRule>,
    /// What it does.
    pub kind: Kind,
    /// The MAG priority.
    pub priority: u32,
    /// The policy table it comes from (`None`: another stage).
    pub side: Option<Side>,
    /// The local endpoint a policy entry applies to (`None`: several or every one).
    /// Endpoints and identities are 32-bit fields, kept as `u32` so that a candidate of
    /// a million-entry MAG stays small.
    pub endpoint: Option<u32>,
    /// The one remote identity it matches (the source of an ingress entry, the destination
    /// of an egress one; `None`: any or a partial match).
    pub identity: Option<u32>,
    /// Candidates above it (higher priority, overlapping, another action).
    pub deps: Vec<usize>,
    /// Its priority level once placed.
    pub level: u32,
    /// Whether [`materialize`] ran: rules built, soundness and closure checked.
    pub built: bool,
    /// Whether service frontend addresses were cut out of its rules (egress entries).
    pub cut: bool,
    /// For an egress drop of any destination: its rules were narrowed to the destinations
    /// of `.0` of the `.1` identities whose connections its pod does not accept.
    pub narrowed: Option<(u32, u32)>,
    /// For a narrowed drop: its rules by remote prefix, in address order (`None` for
    /// every other entry). Building it again reuses the rules of the prefixes that stayed.
    /// Boxed, so that it costs one pointer in each of the tens of thousands of candidates
    /// a plan copies.
    pub runs: Option<Box<Vec<Run>>>,
    /// The uncompressed rules the screen counted, before any were built. Building can
    /// change the count (service addresses cut out, destinations narrowed), so this is the
    /// measure plans compare across graphs for an entry they may not have built.
    pub screened: u64,
}

impl Candidate {
    /// The match on `f`, if the entry's table has that field; read from the MAG so that a
    /// million candidates do not each keep a copy of their key.
    pub fn get(&self, mag: &Mag, f: Field) -> FieldMatch {
        let Some(table) = mag.table(self.table) else {
            return FieldMatch::Any;
        };
        let Some(e) = table.entries.get(self.entry.0 as usize) else {
            return FieldMatch::Any;
        };
        table
            .key
            .iter()
            .position(|k| k.field == f)
            .and_then(|i| e.matches.get(i).copied())
            .unwrap_or(FieldMatch::Any)
    }

    /// The entry's key and matches, for overlap checks.
    pub fn key<'m>(&self, mag: &'m Mag) -> impl Iterator<Item = (Field, FieldMatch)> + 'm {
        let table = mag.table(self.table);
        let entry = table.and_then(|t| t.entries.get(self.entry.0 as usize));
        table
            .into_iter()
            .flat_map(|t| t.key.iter())
            .zip(entry.into_iter().flat_map(|e| e.matches.iter()))
            .map(|(k, m)| (k.field, *m))
    }

    fn fail(&mut self, why: Why) {
        self.ok = false;
        // Only candidates still in the running are compressed or followed up by their
        // dependants, so a candidate that leaves frees its rules and dependencies: at
        // full scale the budget builds and rejects millions of them.
        self.rules = Vec::new();
        self.runs = None;
        self.deps = Vec::new();
        self.placement.target = Target::Ebpf;
        self.placement.why = why;
    }

    /// Leaves the entry to eBPF for `why`, keeping the reasoning so far in the chain.
    pub fn leave(&mut self, why: Why) {
        self.fail(why);
    }
}

/// The reason a whole stage stays in eBPF.
fn stage_reason(table: &str) -> &'static str {
    use crate::mag::pipeline::table as pt;
    match table {
        pt::CLASSIFY => "needs the receiving port as metadata (no metadata match in hardware)",
        pt::ANTI_SPOOF => "needs the sending pod as metadata (no metadata match in hardware)",
        pt::SERVICE_LB | pt::LB_BACKEND => {
            "service load balancing rewrites headers (no NAT in hardware)"
        }
        pt::CONNTRACK => "connection tracking (no conntrack in hardware)",
        pt::SRC_IPCACHE | pt::DST_IPCACHE => {
            "identity lookup; hardware rules carry the addresses instead"
        }
        pt::EGRESS_POLICY => {
            "egress rule: this profile has one flow table for every port, which cannot tell which pod sent a packet"
        }
        pt::ROUTE => "forwarding to pods and nodes stays in software",
        _ => "this stage is not offloaded",
    }
}

/// Endpoint number → its IPv4 addresses, from the `route` table.
fn endpoint_addrs(mag: &Mag) -> BTreeMap<u128, Vec<u32>> {
    let mut out: BTreeMap<u128, Vec<u32>> = BTreeMap::new();
    let Some(t) = mag
        .table_by_name(crate::mag::pipeline::table::ROUTE)
        .and_then(|t| mag.table(t))
    else {
        return out;
    };
    let v4 = t.key.iter().position(|k| k.field == Field::Ipv4Dst);
    for e in &t.entries {
        let Some(def) = mag.action(e.action.action) else {
            continue;
        };
        if def.name != "to_endpoint" {
            continue;
        }
        let Some(v4) = v4 else { continue };
        let addr = match e.matches[v4] {
            FieldMatch::Exact(v) => v as u32,
            FieldMatch::Prefix { value, len: 32 } => value as u32,
            FieldMatch::Ternary { value, mask } if mask as u32 == u32::MAX => value as u32,
            _ => continue,
        };
        if let Some(ep) = e.action.args.first() {
            out.entry(*ep).or_default().push(addr);
        }
    }
    out
}

/// Whether a match admits `v`.
pub fn admits(m: &FieldMatch, v: u128, width: u32) -> bool {
    m.matches(v, width)
}

/// A target's answer for one hardware rule: `Ok` when it can hold it.
pub type RuleCheck<'a> =
    dyn Fn(&crate::backend::HwRule) -> Result<(), crate::backend::Unsupported> + 'a;

/// What the capability step reads once per MAG: identities' addresses, endpoints'
/// addresses, and the hardware profile.
pub struct Context<'m> {
    /// The MAG.
    pub mag: &'m Mag,
    /// The hardware profile.
    pub profile: &'m Profile,
    /// The hardware target's own answer for one rule (its backend's
    /// [`check_rule`](crate::backend::Backend::check_rule)); the profile's when none is given.
    pub check: Option<&'m RuleCheck<'m>>,
    pub(super) ids: IdentitySets,
    pub(super) eps: BTreeMap<u128, Vec<u32>>,
    pub(super) frontends: Frontends,
}

impl<'m> Context<'m> {
    /// Reads the ipcache and route tables of `mag`.
    pub fn new(mag: &'m Mag, profile: &'m Profile) -> Context<'m> {
        Context {
            mag,
            profile,
            check: None,
            ids: IdentitySets::from_mag(mag),
            eps: endpoint_addrs(mag),
            frontends: Frontends::new(mag),
        }
    }
}

/// A policy entry's hardware rules in factored form: every local address × every remote
/// prefix × every port match, on one port. Building the rules multiplies this out.
struct Shape<'c> {
    side: Side,
    /// The port the rules are created on.
    port: u16,
    /// The local pod's addresses (the destination of an ingress rule); an egress rule
    /// names no local address (its port is the pod).
    dsts: &'c [u32],
    /// The remote identity's prefixes (the source of an ingress rule, the destination of
    /// an egress rule).
    srcs: Remotes<'c>,
    /// How many address matches the remote prefixes become: one each, or for an egress
    /// rule, at most `32 - length` for each service address cut out of a prefix (an upper
    /// bound the budget may charge).
    remote_pieces: u64,
    naive_src: u64,
    proto: Option<u128>,
    ports: Ports,
}

/// The remote addresses of a shape: any, or an identity's prefixes. Borrowed from the
/// identity sets, as a plan screens every policy entry after every event and only counts
/// them.
enum Remotes<'c> {
    Any,
    Prefixes(Cow<'c, [Prefix]>),
}

impl Remotes<'_> {
    fn len(&self) -> usize {
        match self {
            Remotes::Any => 1,
            Remotes::Prefixes(p) => p.len(),
        }
    }

    /// Each remote match: `None` for any address.
    fn iter(&self) -> impl Iterator<Item = Option<Prefix>> + '_ {
        let (any, prefixes) = match self {
            Remotes::Any => (true, &[][..]),
            Remotes::Prefixes(p) => (false, &p[..]),
        };
        any.then_some(None)
            .into_iter()
            .chain(prefixes.iter().map(|p| Some(*p)))
    }
}

/// The destination port matches of a shape: one, as most entries have, held without an
/// allocation, or the prefixes of a range.
enum Ports {
    One([Option<(u16, u16)>; 1]),
    Many(Vec<Option<(u16, u16)>>),
}

impl std::ops::Deref for Ports {
    type Target = [Option<(u16, u16)>];

    fn deref(&self) -> &Self::Target {
        match self {
            Ports::One(one) => one,
            Ports::Many(many) => many,
        }
    }
}

impl Shape<'_> {
    /// How many local addresses a rule set multiplies by: an egress rule names none.
    fn locals(&self) -> usize {
        match self.side {
            Side::Ingress => self.dsts.len(),
            Side::Egress => 1,
        }
    }

    fn rules(&self) -> u64 {
        self.locals() as u64 * self.remote_pieces * self.ports.len() as u64
    }

    /// Drops decide in hardware and come first, then ingress marks, then egress marks;
    /// within each, the address space covered per hardware rule (bits of wildcard of the fields a rule matches on, plus one, averaged
    /// over the rules). Computed from the factors, so that ranking builds no rule.
    fn value(&self, kind: Kind) -> u64 {
        let src_bits: u64 = self
            .srcs
            .iter()
            .map(|s| match &s {
                Some((_, len)) if *len > 0 => 32 - u64::from(*len),
                _ => 0,
            })
            .sum();
        let port_bits: u64 = self
            .ports
            .iter()
            .map(|p| match p {
                Some((_, mask)) if *mask != 0 => 16 - u64::from(mask.count_ones()),
                _ => 0,
            })
            .sum();
        let (d, s, p) = (
            self.locals() as u64,
            self.srcs.len() as u64,
            self.ports.len() as u64,
        );
        let covered = d * (p * src_bits + s * port_bits + s * p);
        // Drops decide, so they come first. Marks decide nothing; the rules of an ingress
        // mark merge with the neighbouring pods' (all on the uplink, one rule for a prefix
        // of pods), while an egress mark's rules sit on one pod's port and merge with no
        // other pod's, so a flow entry holds more of the ingress marks: they come next
        // (on a 1,500-pod node the egress marks, ranked alike, took the whole table and
        // left out tens of thousands of ingress entries that compress a hundredfold).
        let bonus = match (kind, self.side) {
            (Kind::Drop, _) => 1 << 40,
            (_, Side::Ingress) => 1 << 30,
            (_, Side::Egress) => 0,
        };
        bonus + covered * 1000 / self.rules().max(1)
    }
}

/// Placements for every entry. Policy entries that hardware could take are only
/// screened here (cheap checks, cost and value from the factored form); their rules are
/// built by [`materialize`] when the budget reaches them.
pub fn candidates(ctx: &Context<'_>) -> Vec<Candidate> {
    let mut out = unscreened(ctx);
    for c in out.iter_mut().filter(|c| c.side.is_some()) {
        screen(c, ctx);
    }
    out
}

/// [`candidates`] before the screen: a re-plan screens only the policy entries whose
/// inputs changed, and takes the others' answers from the last plan ([`Screened`]).
pub(super) fn unscreened(ctx: &Context<'_>) -> Vec<Candidate> {
    let mag = ctx.mag;
    // Sized exactly: at millions of entries, growing by doubling would hold up to twice
    // the candidates' memory, and the old and new buffers at once while copying.
    let total = mag
        .table_ids()
        .into_iter()
        .filter_map(|t| mag.table(t))
        .map(|t| t.entries.len())
        .sum();
    let mut out = Vec::with_capacity(total);
    for t in mag.table_ids() {
        let Some(table) = mag.table(t) else { continue };
        let side = Side::of_table(&table.name);
        // Egress entries are candidates only where rules are placed per port.
        let side = side.filter(|s| *s == Side::Ingress || per_port(ctx.profile));
        let detail = stage_reason(&table.name);
        let ep_col = table.key.iter().position(|k| k.field == Field::Endpoint);
        let id_field = side.map_or(Field::SrcIdentity, Side::remote_identity);
        let id_col = table.key.iter().position(|k| k.field == id_field);
        for (i, e) in table.entries.iter().enumerate() {
            let eid = EntryId(i as u32);
            let prov = e.provenance.first().map(|p| p.0);
            let col = |c: Option<usize>| c.map_or(FieldMatch::Any, |c| e.matches[c]);
            let c = Candidate {
                placement: stage_placement(t, eid, detail, prov),
                table: t,
                entry: eid,
                ok: false,
                rules: Vec::new(),
                kind: Kind::of(mag, e.action.action),
                side,
                priority: e.priority,
                endpoint: exact_u32(&col(ep_col)),
                identity: exact_u32(&col(id_col)),
                deps: Vec::new(),
                level: 0,
                built: side.is_none(),
                cut: false,
                narrowed: None,
                runs: None,
                screened: 0,
            };
            out.push(c);
        }
    }
    out
}

/// An entry's placement before any check: in eBPF, for its stage's reason `detail`. The
/// entries of a table that holds no policy keep it.
fn stage_placement(t: TableId, e: EntryId, detail: &'static str, prov: Option<u32>) -> Placement {
    let why = Why::Stage {
        detail: detail.into(),
    };
    Placement::ebpf(t, e, why, prov)
}

/// The placements of every entry of `t`, a table whose entries are no candidates.
pub(super) fn stage_placements(mag: &Mag, t: TableId) -> Vec<Placement> {
    let Some(table) = mag.table(t) else {
        return Vec::new();
    };
    let detail = stage_reason(&table.name);
    table
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let prov = e.provenance.first().map(|p| p.0);
            stage_placement(t, EntryId(i as u32), detail, prov)
        })
        .collect()
}

/// [`exact32`] as a `u32`: validation keeps every match within its field's width, so
/// the value of a 32-bit field always fits.
fn exact_u32(m: &FieldMatch) -> Option<u32> {
    exact32(m).and_then(|v| u32::try_from(v).ok())
}

/// The value of an exact match on a 32-bit field (an exact or full-mask ternary match).
pub fn exact32(m: &FieldMatch) -> Option<u128> {
    match *m {
        FieldMatch::Exact(v) => Some(v),
        FieldMatch::Ternary { value, mask } if mask == u128::from(u32::MAX) => Some(value),
        _ => None,
    }
}

/// The cheap checks of a policy entry; sets its cost, naive cost and value.
pub(super) fn screen(c: &mut Candidate, ctx: &Context<'_>) {
    match shape(c, ctx) {
        Ok(s) => Screened {
            naive_rules: s.naive_src * s.locals() as u64 * s.ports.len() as u64,
            hw_rules: s.rules(),
            value: s.value(c.kind),
        }
        .apply(c),
        Err(why) => c.fail(why),
    }
}

/// What the screen counted for a policy entry that passed it. It reads only the entry,
/// its pod's addresses, its remote identity's prefixes and naive cost, and (for an egress
/// entry) the service frontends, so an entry whose inputs are as they were passes again with the
/// same counts: a re-plan takes them from the last plan instead of screening again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Screened {
    naive_rules: u64,
    hw_rules: u64,
    value: u64,
}

impl Screened {
    /// The counts of `c`, just screened; `None` when it did not pass.
    pub(super) fn of(c: &Candidate) -> Option<Screened> {
        c.ok.then_some(Screened {
            naive_rules: c.placement.naive_rules,
            hw_rules: c.screened,
            value: c.placement.value,
        })
    }

    /// Makes `c` a candidate that passed the screen with these counts.
    pub(super) fn apply(self, c: &mut Candidate) {
        c.ok = true;
        c.placement.naive_rules = self.naive_rules;
        c.placement.hw_rules = self.hw_rules;
        c.screened = self.hw_rules;
        c.placement.value = self.value;
    }
}

/// The factored rules of a policy entry, or why hardware cannot take it.
fn shape<'c>(c: &Candidate, ctx: &'c Context<'_>) -> Result<Shape<'c>, Why> {
    let mag = ctx.mag;
    let side = c.side.unwrap_or(Side::Ingress);
    if !admits(&c.get(mag, Field::CtState), ct::NEW, 8) {
        return Err(Why::Stage {
            detail: "matches packets of known connections (no conntrack in hardware)".into(),
        });
    }
    let Some(ep) = exact32(&c.get(mag, Field::Endpoint)) else {
        return Err(Why::NotCapable {
            detail: "it applies to every local pod".into(),
        });
    };
    if side == Side::Egress && ep < ports::FIRST_ENDPOINT {
        return Err(Why::Stage {
            detail: "it passes packets that no local pod sent (egress policy does not apply)"
                .into(),
        });
    }
    let Some(dsts) = ctx.eps.get(&ep) else {
        return Err(Why::NothingToMatch {
            detail: "the pod has no IPv4 address (IPv6 is not in the hardware key)".into(),
        });
    };
    // An egress rule sits on the pod's own port, whose number is the endpoint's.
    let port = match side {
        Side::Ingress => UPLINK,
        Side::Egress => match u16::try_from(ep) {
            Ok(p) if u128::from(p) >= ports::FIRST_ENDPOINT => p,
            _ => {
                return Err(Why::NotCapable {
                    detail: format!("endpoint {ep} has no device port number").into(),
                })
            }
        },
    };
    let (srcs, naive_src): (Remotes<'_>, u64) = match c.get(mag, side.remote_identity()) {
        FieldMatch::Any => (Remotes::Any, 1),
        FieldMatch::Exact(id)
        | FieldMatch::Ternary {
            value: id,
            mask: 0xffff_ffff,
        } => match ctx.ids.v4.get(&id) {
            Some(p) if !p.is_empty() => (
                Remotes::Prefixes(Cow::Borrowed(p)),
                ctx.ids.naive.get(&id).copied().unwrap_or(1),
            ),
            _ => {
                return Err(Why::NothingToMatch {
                    detail: format!("identity {id} has no IPv4 address").into(),
                })
            }
        },
        _ => {
            return Err(Why::NotCapable {
                detail: "a partial identity match".into(),
            })
        }
    };
    let proto = match c.get(mag, Field::IpProto) {
        FieldMatch::Any => None,
        FieldMatch::Exact(p) => Some(p),
        FieldMatch::Ternary { value, mask: 0xff } => Some(value),
        _ => {
            return Err(Why::NotCapable {
                detail: "a partial protocol match".into(),
            })
        }
    };
    let ports = port_matches(&c.get(mag, Field::L4Dport));
    let has_ports = matches!(proto, Some(6 | 17 | 132));
    if ports.iter().any(Option::is_some) && !has_ports {
        // For other protocols the MAG's port is 0 and the packet has no port header, so
        // a hardware port match would mean something else.
        return Err(Why::NotCapable {
            detail: "a port match without TCP, UDP or SCTP".into(),
        });
    }
    let remote_pieces = match side {
        Side::Ingress => srcs.len() as u64,
        Side::Egress => srcs.iter().map(|p| ctx.frontends.pieces(p)).sum(),
    };
    Ok(Shape {
        side,
        port,
        dsts,
        remote_pieces,
        srcs,
        naive_src,
        proto,
        ports,
    })
}

/// The destination port match as (value, mask) pairs; ranges are prefix-expanded.
fn port_matches(m: &FieldMatch) -> Ports {
    match *m {
        FieldMatch::Any => Ports::One([None]),
        FieldMatch::Exact(p) => Ports::One([Some((p as u16, 0xffff))]),
        FieldMatch::Ternary { value, mask } => Ports::One([Some((value as u16, mask as u16))]),
        FieldMatch::Prefix { value, len } => Ports::One([Some((
            value as u16,
            (0xffffu32 << (16 - u32::from(len))) as u16,
        ))]),
        FieldMatch::Range { lo, hi } => Ports::Many(
            port_prefixes(lo as u16, hi as u16)
                .into_iter()
                .map(|(value, len)| {
                    Some((value, crate::mag::prefix_mask(u32::from(len), 16) as u16))
                })
                .collect(),
        ),
    }
}

/// Builds the hardware rules of a screened policy entry and checks them against the
/// profile; an entry the profile refuses leaves for eBPF. Returns whether it is still a
/// candidate.
pub fn build_rules(c: &mut Candidate, ctx: &Context<'_>) -> bool {
    build_rules_to(c, ctx, None, &|_| false, None)
}

/// The rules a narrowed drop built for one remote prefix: the run of its rules that ends
/// (exclusive) at `end`, every one of them inside `remote`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// The remote prefix.
    pub remote: Prefix,
    /// Where the run ends in the entry's rules.
    pub end: u32,
    /// Whether service addresses were cut out of the run's rules.
    pub cut: bool,
}

/// A narrowed drop's rules as it last built them, by remote prefix. Building it again
/// copies the run of every prefix that stayed instead of building it: when a pod comes or
/// goes, one identity's prefixes change, and every drop narrowed to most identities
/// changed by a rule or two while it built about a thousand.
#[derive(Clone, Copy)]
pub(super) struct Reuse<'a> {
    /// The runs, in address order.
    pub(super) runs: &'a [Run],
    /// The rules the runs divide.
    pub(super) rules: &'a [HwRule],
}

impl<'a> Reuse<'a> {
    /// The rules of run `k`.
    pub(super) fn rules_of(&self, k: usize) -> &'a [HwRule] {
        let start = k.checked_sub(1).map_or(0, |j| self.runs[j].end as usize);
        &self.rules[start..self.runs[k].end as usize]
    }

    /// The rules built for exactly `remote`, and whether they were cut.
    fn run(&self, remote: Prefix) -> Option<(&'a [HwRule], bool)> {
        let k = self.runs.binary_search_by(|r| r.remote.cmp(&remote)).ok()?;
        Some((self.rules_of(k), self.runs[k].cut))
    }

    /// Whether a rule equal to `r` (by [`HwRule::content`]) is among the rules. Only the
    /// run whose prefix holds `r`'s destination can hold it, as every rule of a run lies
    /// inside the run's prefix and the prefixes are disjoint.
    pub(super) fn holds(&self, r: &HwRule) -> bool {
        let lo = r
            .get(PacketField::Ipv4Dst)
            .map_or(0, |m| (m.value & m.mask) as u32);
        let Some(k) = self
            .runs
            .partition_point(|run| run.remote.0 <= lo)
            .checked_sub(1)
        else {
            return false;
        };
        let content = r.content();
        self.rules_of(k).iter().any(|o| o.content() == content)
    }
}

/// [`build_rules`] for an entry built before, whose rules for which `checked` says so
/// passed the target's check then and are not checked again.
pub(super) fn rebuild_rules(
    c: &mut Candidate,
    ctx: &Context<'_>,
    checked: &dyn Fn(&HwRule) -> bool,
) -> bool {
    build_rules_to(c, ctx, None, checked, None)
}

/// Builds the rules of an egress drop of any destination again, for the destinations
/// `remotes` only (the addresses of the identities its soundness holds for; see
/// [`super::closure`]). `safe` of `total` identities are kept, for its chain.
/// The rules for which `checked` says so passed the target's check before.
pub(super) fn narrow_rules(
    c: &mut Candidate,
    ctx: &Context<'_>,
    remotes: Vec<Prefix>,
    (safe, total): (u32, u32),
    checked: &dyn Fn(&HwRule) -> bool,
    reuse: Option<Reuse<'_>>,
) -> bool {
    // The chain's first step counted the rules before; it is written again.
    if !c.placement.chain.is_empty() {
        c.placement.chain.remove(0);
    }
    c.narrowed = Some((safe, total));
    build_rules_to(c, ctx, Some(remotes), checked, reuse)
}

/// [`build_rules`], with the remote prefixes replaced by `remotes` when given (the entry's
/// [`Candidate::runs`] are then recorded); the rules for which `checked` says so are not
/// checked again, nor are those copied from `reuse`.
fn build_rules_to(
    c: &mut Candidate,
    ctx: &Context<'_>,
    remotes: Option<Vec<Prefix>>,
    checked: &dyn Fn(&HwRule) -> bool,
    reuse: Option<Reuse<'_>>,
) -> bool {
    c.runs = None;
    if !c.ok {
        return false;
    }
    let mut s = match shape(c, ctx) {
        Ok(s) => s,
        Err(why) => {
            c.fail(why);
            return false;
        }
    };
    let narrowed = remotes.is_some();
    if let Some(remotes) = remotes {
        s.srcs = Remotes::Prefixes(Cow::Owned(remotes));
    }
    // The rules built now, as ranges of `rules`; the others were copied from `reuse`.
    let mut fresh: Vec<std::ops::Range<usize>> = Vec::new();
    let mut runs = Vec::new();
    let mut rules = Vec::with_capacity(s.rules() as usize);
    match s.side {
        Side::Ingress => {
            for d in s.dsts {
                for remote in s.srcs.iter() {
                    for p in s.ports.iter() {
                        rules.push(rule(c, &s, Some(*d), remote, *p));
                    }
                }
            }
            fresh.push(0..rules.len());
        }
        Side::Egress => {
            let mut cut_any = false;
            for remote in s.srcs.iter() {
                let start = rules.len();
                let cut = match remote.zip(reuse).and_then(|(p, old)| old.run(p)) {
                    Some((old, cut)) => {
                        rules.extend_from_slice(old);
                        cut
                    }
                    None => {
                        let built = s.ports.iter().map(|p| rule(c, &s, None, remote, *p));
                        let (pieces, cut) = ctx.frontends.cut(built.collect());
                        rules.extend(pieces);
                        match fresh.last_mut() {
                            Some(last) if last.end == start => last.end = rules.len(),
                            _ => fresh.push(start..rules.len()),
                        }
                        cut
                    }
                };
                cut_any |= cut;
                if let (true, Some(remote)) = (narrowed, remote) {
                    let end = rules.len() as u32;
                    runs.push(Run { remote, end, cut });
                }
            }
            c.cut = cut_any;
            if rules.is_empty() {
                c.fail(Why::NothingToMatch {
                    detail: "its destinations are service addresses, which software translates before egress policy".into(),
                });
                return false;
            }
            c.placement.hw_rules = rules.len() as u64;
        }
    }
    let built_now = fresh.into_iter().flat_map(|range| &rules[range]);
    for r in built_now.filter(|r| !checked(r)) {
        let answer = match ctx.check {
            Some(check) => check(r),
            None => ctx.profile.check_rule(r),
        };
        if let Err(e) = answer {
            c.fail(Why::NotCapable {
                detail: e.reason.to_string().into(),
            });
            return false;
        }
    }
    c.rules = rules;
    c.runs = narrowed.then(|| Box::new(runs));
    note_capable(c);
    true
}

/// The first step of a hardware entry's chain: how many rules it takes, on which port.
pub(super) fn note_capable(c: &mut Candidate) {
    let on = c
        .rules
        .first()
        .map(|r| format!(" on {}", port_text(r.port)))
        .unwrap_or_default();
    let cut = if c.cut {
        "; service addresses cut out (software translates them before egress policy)"
    } else {
        ""
    };
    c.placement.chain.insert(
        0,
        format!("capable: {} hardware rule(s){on}{cut}", c.rules.len()),
    );
}

/// One hardware rule of shape `s`: local address `d` (ingress), remote prefix, protocol
/// and port match.
fn rule(
    c: &Candidate,
    s: &Shape<'_>,
    d: Option<u32>,
    remote: Option<Prefix>,
    port: Option<(u16, u16)>,
) -> HwRule {
    let mut matches = Vec::new();
    let remote_field = match s.side {
        Side::Ingress => PacketField::Ipv4Src,
        Side::Egress => PacketField::Ipv4Dst,
    };
    if let Some((v, len)) = remote {
        matches.push(HwMatch::prefix(remote_field, u128::from(v), u32::from(len)));
    }
    if let Some(d) = d {
        matches.push(HwMatch::exact(PacketField::Ipv4Dst, u128::from(d)));
    }
    if s.side == Side::Egress && !matches.iter().any(|m| m.mask != 0) {
        // A rule with no address match would take every packet of the port, IPv6 and ARP
        // included: the ethertype keeps it to the IPv4 packets the entry is about.
        matches.push(HwMatch::exact(PacketField::EthType, crate::mag::eth::IPV4));
    }
    if let Some(proto) = s.proto {
        matches.push(HwMatch::exact(PacketField::IpProto, proto));
    }
    if let Some((v, m)) = port {
        matches.push(HwMatch::ternary(
            PacketField::L4Dport,
            u128::from(v),
            u128::from(m),
        ));
    }
    matches.retain(|m| m.mask != 0);
    matches.sort();
    HwRule {
        id: 0,
        port: s.port,
        direction: PortDirection::Ingress,
        level: 0,
        matches,
        actions: c.kind.actions(),
        origin: c.placement.entry_name(),
    }
}

/// The blocks of addresses that egress rules leave out: the IPv4 service frontends of the
/// `service_lb` table (packets to them are translated by software before policy),
/// gathered into at most [`MAX_BLOCKS`] prefixes of one length, the longest that does (but
/// never shorter than a /8). Cutting a block out of a prefix costs at most one rule per bit
/// between the two lengths, so a few blocks cost far fewer rules than hundreds of scattered
/// addresses (a Service CIDR's cluster IPs become one block); every address of a block goes
/// to software, which is sound, only less decided in hardware.
pub(super) struct Frontends {
    /// Disjoint `(first, last)` address intervals of the blocks, sorted.
    blocks: Vec<(u32, u32)>,
}

/// The most blocks the frontends are gathered into (see [`Frontends`]).
const MAX_BLOCKS: usize = 8;

/// The shortest block [`Frontends`] makes.
const MIN_BLOCK_LEN: u32 = 8;

impl Frontends {
    pub(super) fn new(mag: &Mag) -> Frontends {
        let mut addrs = Vec::new();
        let table = mag
            .table_by_name(crate::mag::pipeline::table::SERVICE_LB)
            .and_then(|t| mag.table(t));
        if let Some(t) = table {
            if let Some(col) = t.key.iter().position(|k| k.field == Field::Ipv4Dst) {
                for e in &t.entries {
                    let a = match e.matches[col] {
                        FieldMatch::Prefix { value, len: 32 } => Some(value),
                        m => exact32(&m),
                    };
                    if let Some(a) = a {
                        addrs.push(a as u32);
                    }
                }
            }
        }
        Frontends::from_addrs(addrs)
    }

    /// The blocks of these frontend addresses.
    fn from_addrs(mut addrs: Vec<u32>) -> Frontends {
        addrs.sort_unstable();
        addrs.dedup();
        let prefixes_at = |len: u32| -> Vec<u32> {
            let mask = crate::mag::prefix_mask(len, 32) as u32;
            let mut p: Vec<u32> = addrs.iter().map(|a| a & mask).collect();
            p.dedup();
            p
        };
        let len = (MIN_BLOCK_LEN..=32)
            .rev()
            .find(|len| prefixes_at(*len).len() <= MAX_BLOCKS)
            .unwrap_or(MIN_BLOCK_LEN);
        let size = !(crate::mag::prefix_mask(len, 32) as u32);
        let blocks = prefixes_at(len)
            .into_iter()
            .map(|lo| (lo, lo | size))
            .collect();
        Frontends { blocks }
    }

    /// The blocks that meet `[lo, hi]`.
    fn meeting(&self, lo: u32, hi: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        let first = self.blocks.partition_point(|b| b.1 < lo);
        self.blocks[first..]
            .iter()
            .copied()
            .take_while(move |b| b.0 <= hi)
    }

    /// An upper bound of the prefixes `prefix` (`None`: every address) becomes once the
    /// blocks are cut out: none if a block holds it, else at most one per bit between its
    /// length and each block's inside it.
    fn pieces(&self, prefix: Option<Prefix>) -> u64 {
        let (lo, hi, len) = match prefix {
            Some((v, len)) => {
                let mask = crate::mag::prefix_mask(u32::from(len), 32) as u32;
                (v & mask, (v & mask) | !mask, u32::from(len))
            }
            None => (0, u32::MAX, 0),
        };
        let mut pieces = 0u64;
        let mut any = false;
        for (b_lo, b_hi) in self.meeting(lo, hi) {
            any = true;
            if b_lo <= lo && hi <= b_hi {
                return 0;
            }
            let b_len = (b_hi - b_lo).leading_zeros();
            pieces += u64::from(b_len.saturating_sub(len));
        }
        if any {
            pieces
        } else {
            1
        }
    }

    /// Cuts the blocks out of the destinations of an egress entry's rules (see
    /// [`super::closure`]); returns the rules and whether any was cut.
    fn cut(&self, rules: Vec<HwRule>) -> (Vec<HwRule>, bool) {
        let mut cut_any = false;
        let mut out = Vec::with_capacity(rules.len());
        for r in rules {
            let (lo, hi) = match r.get(PacketField::Ipv4Dst) {
                Some(m) => {
                    let mask = m.mask as u32;
                    let lo = m.value as u32 & mask;
                    (lo, lo | !mask)
                }
                None => (0, u32::MAX),
            };
            let inside: Vec<(u32, u32)> = self.meeting(lo, hi).collect();
            if inside.is_empty() {
                out.push(r);
                continue;
            }
            cut_any = true;
            // The gaps between the blocks, as prefixes.
            let mut prefixes = Vec::new();
            let mut from = u64::from(lo);
            for (b_lo, b_hi) in inside {
                if u64::from(b_lo) > from {
                    range_to_prefixes(from, u64::from(b_lo) - 1, &mut prefixes);
                }
                from = from.max(u64::from(b_hi) + 1);
            }
            if from <= u64::from(hi) {
                range_to_prefixes(from, u64::from(hi), &mut prefixes);
            }
            for (value, len) in prefixes {
                let mut piece = r.clone();
                piece
                    .matches
                    .retain(|m| m.field != PacketField::Ipv4Dst && m.field != PacketField::EthType);
                piece.matches.push(HwMatch::prefix(
                    PacketField::Ipv4Dst,
                    u128::from(value),
                    u32::from(len),
                ));
                piece.matches.sort();
                out.push(piece);
            }
        }
        (out, cut_any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_to(dst: Option<Prefix>) -> HwRule {
        HwRule {
            id: 0,
            port: 5,
            direction: PortDirection::Ingress,
            level: 0,
            matches: match dst {
                Some((v, len)) => vec![HwMatch::prefix(
                    PacketField::Ipv4Dst,
                    u128::from(v),
                    u32::from(len),
                )],
                None => vec![HwMatch::exact(PacketField::EthType, crate::mag::eth::IPV4)],
            },
            actions: vec![HwAction::Drop],
            origin: String::new(),
        }
    }

    fn covers(rules: &[HwRule], a: u32) -> usize {
        rules
            .iter()
            .filter(|r| {
                r.get(PacketField::Ipv4Dst)
                    .is_none_or(|m| m.matches(u128::from(a)))
            })
            .count()
    }

    #[test]
    fn frontends_become_few_blocks_that_egress_rules_leave_out() {
        // Forty cluster IPs spread over a /12 and two node addresses.
        let ip = |a: u8, b: u8, c: u8, d: u8| u32::from_be_bytes([a, b, c, d]);
        let mut addrs: Vec<u32> = (0..40u8).map(|i| ip(10, 96 + i % 16, i, 7)).collect();
        addrs.extend([ip(172, 16, 0, 10), ip(172, 16, 0, 11)]);
        let f = Frontends::from_addrs(addrs.clone());
        assert!(f.blocks.len() <= MAX_BLOCKS, "{:?}", f.blocks);
        for a in &addrs {
            assert!(f.blocks.iter().any(|(lo, hi)| lo <= a && a <= hi));
        }
        for dst in [
            None,
            Some((ip(10, 0, 0, 0), 8)),
            Some((ip(172, 16, 0, 0), 30)),
        ] {
            let (rules, cut) = f.cut(vec![rule_to(dst)]);
            assert!(cut);
            assert!(rules.len() as u64 <= f.pieces(dst), "{dst:?}");
            // No piece meets a block; every other address of the prefix is in exactly one.
            for (lo, hi) in &f.blocks {
                assert_eq!(covers(&rules, *lo), 0);
                assert_eq!(covers(&rules, *hi), 0);
            }
            for a in [
                ip(10, 1, 2, 3),
                ip(10, 244, 0, 5),
                ip(172, 16, 0, 8),
                ip(8, 8, 8, 8),
            ] {
                let (lo, hi) = match dst {
                    Some((v, len)) => {
                        let mask = crate::mag::prefix_mask(u32::from(len), 32) as u32;
                        (v & mask, (v & mask) | !mask)
                    }
                    None => (0, u32::MAX),
                };
                let in_block = f.blocks.iter().any(|(l, h)| *l <= a && a <= *h);
                let expected = usize::from(lo <= a && a <= hi && !in_block);
                assert_eq!(covers(&rules, a), expected, "{a:#x} in {dst:?}");
            }
        }
        // A prefix inside a block is cut to nothing; one away from every block stays whole.
        assert_eq!(
            f.cut(vec![rule_to(Some((ip(172, 16, 0, 10), 32)))]).0.len(),
            0
        );
        let (kept, cut) = f.cut(vec![rule_to(Some((ip(10, 244, 0, 0), 16)))]);
        assert_eq!((kept.len(), cut), (1, false));
    }

    #[test]
    fn few_frontends_are_cut_out_exactly() {
        let f = Frontends::from_addrs(vec![0x0a60_0032, 0x0a60_0001]);
        assert_eq!(
            f.blocks,
            vec![(0x0a60_0001, 0x0a60_0001), (0x0a60_0032, 0x0a60_0032)]
        );
    }
}
