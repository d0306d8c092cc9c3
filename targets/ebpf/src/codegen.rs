//! Codegen: the MAG of one node → the content of the datapath's maps.
//!
//! The programs in `bpf/pipec.bpf.c` are a fixed implementation of the default node
//! pipeline of [`pipec::lower`], so codegen reads the MAG's tables by name and checks that
//! each has the key and actions the programs implement; anything else is [`Unsupported`].
//!
//! | MAG table | eBPF map |
//! |---|---|
//! | `classify`, `anti_spoof`, `route` (`to_endpoint`) | `endpoints` |
//! | `src_ipcache`, `dst_ipcache` (must agree) | `ipcache_host` (/32, /128 entries), `ipcache` (LPM, the other prefixes) |
//! | `egress_policy`, `ingress_policy` | `policy` (LPM, two lookups, deny precedence) |
//! | `service_lb` (rows for every sender), `lb_backend` | `services`, `maglev`, `backends`, `revnat` |
//! | `service_lb` (rows for the wire alone: sending endpoint 0) | `wire_services` (read by `from_wire` before `services`) |
//! | `conntrack`, the conntrack rows of the policy tables | built into the programs |
//!
//! # The policy table
//!
//! The MAG's decision table is priority-ordered: a row for one remote class beats a row
//! for every class. The datapath makes two LPM lookups instead, the remote identity and the
//! wildcard identity 0, where a deny of either wins. Codegen evaluates the MAG's decision
//! for every (endpoint, direction, remote class, protocol, port interval) cell and encodes
//! it so the two lookups give the same answer:
//!
//! - the wildcard entries hold the decision for a remote class no row names (`W`), as an
//!   exact prefix cover of each protocol's port intervals, and one all-protocol entry for
//!   the protocols no row names;
//! - where `W` denies but some class is allowed (a *conflict* cell), the wildcard holds no
//!   deny: the cell is left out (no entry denies) so the class's own allow is not overruled;
//! - each class gets entries exactly where the two lookups would otherwise give another
//!   answer than the MAG.
//!
//! Cookies are stable hashes of the deciding rule's provenance ([`cookie_of`]; 0 is "no
//! rule"); [`EbpfArtifact::cookies`] names them. A denial that falls on a left-out conflict cell is counted on cookie 0.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use pipec::backend::{Reason, Unsupported};
use pipec::mag::algebra::port_prefixes;
use pipec::mag::pipeline::table as pt;
use pipec::mag::{self, ct, eth, mark, verdict, ActionCall, Field, FieldMatch, Mag, MagInfo, Op};
use pipec::mag::{Operand, Table};
use pipec_ebpf_common as c;

use crate::artifact::{
    Action, Backend, EbpfArtifact, Endpoint, Frontend, PolicyDecision, PolicyDirection,
    PolicyMatch, Prefix, Service,
};

/// The proxy port of redirected flows: the MAG marks a flow for the L7 proxy without
/// naming a port, and pipec's proxy listens here.
pub const PROXY_PORT: u16 = 15001;

/// The name the eBPF target is known by (its profile's name).
pub const TARGET: &str = "ebpf";

/// Something in the MAG that the eBPF maps cannot express: the one [`Unsupported`] of every
/// target, with [`Reason::NotImplemented`].
fn unsupported(site: impl fmt::Display, reason: impl Into<String>) -> Unsupported {
    Unsupported::new(
        TARGET,
        Reason::NotImplemented {
            site: site.to_string(),
            detail: reason.into(),
        },
    )
}

/// Where in the graph something is, for an error: rendered only when there is one, since
/// formatting it for every entry of a large graph cost more than compiling the entry.
struct Site<'a> {
    table: &'a str,
    matches: &'a [FieldMatch],
}

impl fmt::Display for Site<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} entry {:?}", self.table, self.matches)
    }
}

/// A policy outcome: the action and the cookie of the deciding rule.
type Val = (Action, u64);

const DENY0: Val = (Action::Deny, 0);

/// Protocols whose packets carry ports the datapath matches on.
fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132)
}

/// The value an action call writes into `field`, if it writes a known value.
fn set_value(mag: &Mag, call: &ActionCall, field: Field) -> Option<u128> {
    let def = mag.action(call.action)?;
    def.ops.iter().rev().find_map(|op| match op {
        Op::Set { field: f, value } if *f == field => match value {
            Operand::Param(i) => call.args.get(*i as usize).copied(),
            Operand::Const(v) => Some(*v),
        },
        _ => None,
    })
}

fn drops(mag: &Mag, call: &ActionCall) -> bool {
    mag.action(call.action)
        .is_some_and(|d| d.ops.iter().any(|o| matches!(o, Op::Drop)))
}

/// The cookies of the graph's provenances, each worked out on first use: a node's policy
/// tables have tens of thousands of rows but a few thousand rules, and a cookie hashes the
/// rule's text, which is formatted anew each time.
pub(crate) struct Cookies(Vec<u64>);

impl Cookies {
    pub(crate) fn new(mag: &Mag) -> Cookies {
        Cookies(vec![0; mag.provenance.len()])
    }

    /// The cookie of the entry's deciding rule (its first provenance), 0 for none.
    fn of(&mut self, mag: &Mag, e: &mag::Entry) -> u64 {
        let Some(p) = e.provenance.first() else {
            return 0;
        };
        let at = p.0 as usize;
        match self.0.get(at) {
            Some(0) => {
                let ck = mag
                    .provenance
                    .get_index(at)
                    .map_or(0, |p| cookie_of(&p.to_string()));
                self.0[at] = ck;
                ck
            }
            Some(ck) => *ck,
            None => 0,
        }
    }

    /// The provenances whose cookie was worked out, with it.
    fn known(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, ck)| **ck != 0)
            .map(|(i, ck)| (i, *ck))
    }
}

/// A rule's cookie: a 64-bit FNV-1a hash of its provenance text, never 0. It depends on
/// the rule alone, not on the order a session first saw the rules, so the same rule keeps
/// its cookie across changes, restarts and fresh compiles (a restarted daemon rewrites no
/// policy entry, and counters keyed by cookie stay the rule's).
pub fn cookie_of(provenance: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in provenance.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// The policy action of a call: drop, redirect (verdict or mark), or allow.
fn policy_action(mag: &Mag, call: &ActionCall) -> Option<Action> {
    if drops(mag, call) {
        return Some(Action::Deny);
    }
    let v = set_value(mag, call, Field::Verdict);
    let m = set_value(mag, call, Field::Mark).unwrap_or(0);
    if v == Some(verdict::REDIRECT) || m & mark::L7_REDIRECT != 0 {
        return Some(Action::Redirect {
            proxy_port: PROXY_PORT,
        });
    }
    (v == Some(verdict::ALLOW)).then_some(Action::Allow)
}

pub(crate) fn table<'m>(mag: &'m Mag, name: &str) -> Result<&'m Table, Unsupported> {
    mag.table_by_name(name)
        .and_then(|t| mag.table(t))
        .ok_or_else(|| unsupported(name, "the table is missing (not the default node pipeline)"))
}

/// Positions of `fields` in a table's key, which must hold exactly these fields.
pub(crate) fn key_positions(t: &Table, fields: &[Field]) -> Result<Vec<usize>, Unsupported> {
    if t.key.len() != fields.len() {
        return Err(unsupported(
            &t.name,
            format!(
                "the key has {} fields, the datapath matches {}",
                t.key.len(),
                fields.len()
            ),
        ));
    }
    fields
        .iter()
        .map(|f| {
            t.key
                .iter()
                .position(|k| k.field == *f)
                .ok_or_else(|| unsupported(&t.name, format!("the key lacks {f}")))
        })
        .collect()
}

/// The value of an exact match (an exact or a full-mask ternary match); `None` for any.
pub(crate) fn exact(
    m: &FieldMatch,
    f: Field,
    site: &dyn fmt::Display,
) -> Result<Option<u128>, Unsupported> {
    match *m {
        FieldMatch::Any => Ok(None),
        FieldMatch::Exact(v) => Ok(Some(v)),
        FieldMatch::Ternary { value, mask } if mask == f.max() => Ok(Some(value)),
        FieldMatch::Prefix { value, len } if u32::from(len) == f.width() => Ok(Some(value)),
        other => Err(unsupported(
            site,
            format!("{f} matches {other:?}; the datapath matches it exactly or not at all"),
        )),
    }
}

/// A prefix match as (value, length); `Any` is length 0.
fn prefix(m: &FieldMatch, f: Field, site: &dyn fmt::Display) -> Result<(u128, u32), Unsupported> {
    let w = f.width();
    match *m {
        FieldMatch::Any => Ok((0, 0)),
        FieldMatch::Exact(v) => Ok((v, w)),
        FieldMatch::Prefix { value, len } => Ok((value, u32::from(len))),
        FieldMatch::Ternary { value, mask } => {
            let len = mask.count_ones().min(w);
            if mag::prefix_mask(len, w) != mask {
                return Err(unsupported(
                    site,
                    format!(
                        "{f} mask {mask:#x} is not a prefix; the datapath's tries match prefixes"
                    ),
                ));
            }
            Ok((value, len))
        }
        FieldMatch::Range { .. } => Err(unsupported(site, format!("{f} is a range"))),
    }
}

/// The address prefix of an (eth.type, v4, v6) match, or `None` for another family.
fn addr_prefix(
    et: Option<u128>,
    v4: &FieldMatch,
    v6: &FieldMatch,
    f4: Field,
    f6: Field,
    site: &dyn fmt::Display,
) -> Result<Option<Prefix>, Unsupported> {
    match et {
        Some(eth::IPV4) => {
            let (v, len) = prefix(v4, f4, site)?;
            Ok(Some(Prefix {
                addr: IpAddr::V4((v as u32).into()),
                len: len as u8,
            }))
        }
        Some(eth::IPV6) => {
            let (v, len) = prefix(v6, f6, site)?;
            Ok(Some(Prefix {
                addr: IpAddr::V6(v.into()),
                len: len as u8,
            }))
        }
        _ => Ok(None),
    }
}

/// The value of an operand in one call of its action (a missing argument reads as 0,
/// which every caller refuses).
fn operand_value(call: &ActionCall, operand: Operand) -> u128 {
    match operand {
        Operand::Param(i) => call.args.get(i as usize).copied().unwrap_or(0),
        Operand::Const(v) => v,
    }
}

/// Compiles the MAG of one node into the datapath's map contents.
///
/// Endpoint interfaces are left 0: they are known when pods are wired, and bound with
/// [`EbpfArtifact::bind_interfaces`].
pub fn mag_to_ebpf(mag: &Mag, info: &MagInfo) -> Result<EbpfArtifact, Unsupported> {
    mag_to_ebpf_cached(mag, info, &mut PolicyCache::default())
}

/// [`mag_to_ebpf`], reusing the policy entries of endpoints whose rows `cache` saw in the
/// last compile (a compile session's backend keeps one).
pub fn mag_to_ebpf_cached(
    mag: &Mag,
    info: &MagInfo,
    cache: &mut PolicyCache,
) -> Result<EbpfArtifact, Unsupported> {
    let _ = info.start;
    let mut a = EbpfArtifact::default();
    ipcache(mag, &mut a)?;
    endpoints(mag, &mut a)?;
    services(mag, &mut a)?;
    let eps = endpoint_ids(&a);
    cache.begin();
    let mut cookies = Cookies::new(mag);
    let rows = policy_entries(
        mag,
        ([&eps, &eps], Rows::All),
        &universe(&a),
        cache,
        &mut cookies,
    )?;
    cache.end();
    // One sort and a bulk build, instead of one tree insertion per entry: the map has an
    // entry per endpoint, identity and port cell, tens of thousands on a node.
    a.policy = rows.into_iter().collect();
    a.cookies = cookie_names(mag, &cookies, &a.policy, &BTreeMap::new());
    Ok(a)
}

/// The identities a policy entry may name: every one the ipcache gives, and world.
pub(crate) fn universe(a: &EbpfArtifact) -> BTreeSet<u32> {
    a.ipcache
        .values()
        .copied()
        .chain([c::IDENTITY_WORLD])
        .collect()
}

/// The ids of the local endpoints, ascending, each once.
pub(crate) fn endpoint_ids(a: &EbpfArtifact) -> Vec<u32> {
    let ids: BTreeSet<u32> = a.endpoints.values().map(|e| e.id).collect();
    ids.into_iter().collect()
}

/// The policy tables, each with the direction it decides and the field of the remote
/// identity: egress first, then ingress.
pub(crate) const POLICY_TABLES: [PolicyTable<'static>; 2] = [
    (
        pt::EGRESS_POLICY,
        PolicyDirection::Egress,
        Field::DstIdentity,
    ),
    (
        pt::INGRESS_POLICY,
        PolicyDirection::Ingress,
        Field::SrcIdentity,
    ),
];

/// The policy entries of the endpoints `eps` (egress, ingress), unsorted, within a
/// compile the caller began and ends on `cache`; `cookies` learns the cookie of every
/// policy row.
pub(crate) fn policy_entries(
    mag: &Mag,
    (eps, which): ([&[u32]; 2], Rows),
    universe: &BTreeSet<u32>,
    cache: &mut PolicyCache,
    cookies: &mut Cookies,
) -> Result<Vec<(PolicyMatch, PolicyDecision)>, Unsupported> {
    let mut rows = Vec::new();
    for (table, eps) in POLICY_TABLES.into_iter().zip(eps) {
        policy(
            mag,
            table,
            (eps, which),
            universe,
            (&mut rows, cache, cookies),
        )?;
    }
    Ok(rows)
}

/// What each cookie the policy entries hold stands for: the provenance of the row it came
/// from, among the rows `cookies` read, else the name `known` gives (the last artifact's,
/// for entries kept from it).
pub(crate) fn cookie_names(
    mag: &Mag,
    cookies: &Cookies,
    policy: &BTreeMap<PolicyMatch, PolicyDecision>,
    known: &BTreeMap<u64, String>,
) -> BTreeMap<u64, String> {
    // A sorted list, not a set: the map has tens of thousands of entries and few cookies.
    let mut used: Vec<u64> = policy
        .values()
        .map(|d| d.cookie)
        .filter(|ck| *ck != 0)
        .collect();
    used.sort_unstable();
    used.dedup();
    let mut out: BTreeMap<u64, String> = cookies
        .known()
        .filter(|(_, ck)| used.binary_search(ck).is_ok())
        .map(|(i, ck)| (ck, mag.provenance[i].to_string()))
        .collect();
    for ck in used {
        if let (std::collections::btree_map::Entry::Vacant(v), Some(name)) =
            (out.entry(ck), known.get(&ck))
        {
            v.insert(name.clone());
        }
    }
    out
}

impl EbpfArtifact {
    /// Sets each endpoint's interface: `ifindex(endpoint id)`; endpoints it has no
    /// interface for keep theirs.
    pub fn bind_interfaces(&mut self, ifindex: impl Fn(u32) -> Option<u32>) {
        for e in self.endpoints.values_mut() {
            if let Some(i) = ifindex(e.id) {
                e.ifindex = i;
            }
        }
    }
}

pub(crate) fn ipcache(mag: &Mag, a: &mut EbpfArtifact) -> Result<(), Unsupported> {
    let mut tables = Vec::new();
    for (name, f4, f6, id) in [
        (
            pt::SRC_IPCACHE,
            Field::Ipv4Src,
            Field::Ipv6Src,
            Field::SrcIdentity,
        ),
        (
            pt::DST_IPCACHE,
            Field::Ipv4Dst,
            Field::Ipv6Dst,
            Field::DstIdentity,
        ),
    ] {
        let t = table(mag, name)?;
        let pos = key_positions(t, &[Field::EthType, f4, f6])?;
        let default = set_value(mag, &t.default_action, id);
        if default != Some(u128::from(c::IDENTITY_WORLD)) {
            return Err(unsupported(
                name,
                format!("the default identity is {default:?}; the datapath's is world (2)"),
            ));
        }
        let mut out = BTreeMap::new();
        for e in &t.entries {
            let site = Site {
                table: name,
                matches: &e.matches,
            };
            let et = exact(&e.matches[pos[0]], Field::EthType, &site)?;
            let p = addr_prefix(et, &e.matches[pos[1]], &e.matches[pos[2]], f4, f6, &site)?
                .ok_or_else(|| unsupported(&site, "not an IPv4 or IPv6 prefix"))?;
            let v = set_value(mag, &e.action, id)
                .ok_or_else(|| unsupported(&site, "the action sets no identity"))?;
            if u32::from(p.len) != e.priority {
                return Err(unsupported(&site, "the priority is not the prefix length"));
            }
            out.insert(p, v as u32);
        }
        tables.push(out);
    }
    if tables[0] != tables[1] {
        return Err(unsupported(
            "src_ipcache/dst_ipcache",
            "the two tables differ; the datapath has one ipcache",
        ));
    }
    a.ipcache = tables.swap_remove(0);
    Ok(())
}

/// The ipcache as a longest-prefix lookup: each prefix by its network and length, and the
/// lengths present, longest first. Looking an address up tries those lengths only, where
/// a scan of the whole ipcache per endpoint cost 7 ms a compile on 1,500 pods and grows
/// with pods × prefixes.
struct Lpm {
    by_net: BTreeMap<(IpAddr, u8), u32>,
    lengths: Vec<u8>,
}

impl Lpm {
    fn of(ipcache: &BTreeMap<Prefix, u32>) -> Lpm {
        let mut by_net = BTreeMap::new();
        for (p, id) in ipcache {
            // A prefix written with host bits set matches as its network does; of two
            // that are the same network, the later one wins, as the scan this replaces
            // let it.
            if let Ok(net) = ipnet::IpNet::new(p.addr, p.len) {
                by_net.insert((net.trunc().addr(), p.len), *id);
            }
        }
        let mut lengths: Vec<u8> = by_net.keys().map(|(_, len)| *len).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        Lpm { by_net, lengths }
    }

    /// The identity of the longest prefix holding `ip`, world when none does.
    fn identity_of(&self, ip: IpAddr) -> u32 {
        self.lengths
            .iter()
            .find_map(|len| {
                let net = ipnet::IpNet::new(ip, *len).ok()?.trunc();
                self.by_net.get(&(net.addr(), *len)).copied()
            })
            .unwrap_or(c::IDENTITY_WORLD)
    }
}

pub(crate) fn endpoints(mag: &Mag, a: &mut EbpfArtifact) -> Result<(), Unsupported> {
    let t = table(mag, pt::ANTI_SPOOF)?;
    let pos = key_positions(
        t,
        &[
            Field::Endpoint,
            Field::EthType,
            Field::Ipv4Src,
            Field::Ipv6Src,
        ],
    )?;
    if !drops(mag, &t.default_action) {
        return Err(unsupported(
            pt::ANTI_SPOOF,
            "the default action does not drop",
        ));
    }
    let mut addrs: BTreeMap<IpAddr, u32> = BTreeMap::new();
    for e in &t.entries {
        let site = Site {
            table: "anti_spoof",
            matches: &e.matches,
        };
        if drops(mag, &e.action) {
            return Err(unsupported(&site, "an explicit drop row"));
        }
        let ep = exact(&e.matches[pos[0]], Field::Endpoint, &site)?
            .ok_or_else(|| unsupported(&site, "no endpoint"))?;
        let et = exact(&e.matches[pos[1]], Field::EthType, &site)?;
        let p = addr_prefix(
            et,
            &e.matches[pos[2]],
            &e.matches[pos[3]],
            Field::Ipv4Src,
            Field::Ipv6Src,
            &site,
        )?
        .ok_or_else(|| unsupported(&site, "not an IPv4 or IPv6 address"))?;
        if u32::from(p.len) != if p.addr.is_ipv4() { 32 } else { 128 } {
            return Err(unsupported(
                &site,
                "a prefix; the endpoints map holds addresses",
            ));
        }
        addrs.insert(p.addr, ep as u32);
    }
    // Delivery to an endpoint (where its ingress policy runs) must use the same addresses.
    let route = table(mag, pt::ROUTE)?;
    let rpos = key_positions(route, &[Field::EthType, Field::Ipv4Dst, Field::Ipv6Dst])?;
    for e in &route.entries {
        let Some(ep) = set_value(mag, &e.action, Field::OutPort) else {
            continue;
        };
        if ep < mag::ports::FIRST_ENDPOINT {
            continue;
        }
        let site = Site {
            table: "route",
            matches: &e.matches,
        };
        let et = exact(&e.matches[rpos[0]], Field::EthType, &site)?;
        let p = addr_prefix(
            et,
            &e.matches[rpos[1]],
            &e.matches[rpos[2]],
            Field::Ipv4Dst,
            Field::Ipv6Dst,
            &site,
        )?;
        match p {
            Some(p) if addrs.get(&p.addr) == Some(&(ep as u32)) => {}
            _ => {
                return Err(unsupported(
                    &site,
                    "delivers to an endpoint at an address that is not the endpoint's own",
                ))
            }
        }
    }
    let lpm = Lpm::of(&a.ipcache);
    for (addr, ep) in addrs {
        let identity = lpm.identity_of(addr);
        a.endpoints.insert(
            addr,
            Endpoint {
                id: ep,
                ifindex: 0,
                identity,
            },
        );
    }
    Ok(())
}

/// Which senders a `service_lb` row is for, and so which map holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Senders {
    /// Every sender, pods and the wire (`services`, read by `from_pod` and `from_wire`).
    All,
    /// The wire alone: sending endpoint 0, such as the cluster-wide table an outside
    /// client keeps under `internalTrafficPolicy: Local` (`wire_services`, read by
    /// `from_wire` first). In the MAG such a row outranks the row for every sender, as
    /// the wire's map comes first in `from_wire`.
    Wire,
}

/// The senders of a `service_lb` row from its sending-endpoint match (`None` when the key
/// has no endpoint). A row for one pod only is not expressible: services are keyed by
/// frontend alone.
fn senders(m: Option<&FieldMatch>, site: &dyn fmt::Display) -> Result<Senders, Unsupported> {
    match m
        .map(|m| exact(m, Field::Endpoint, site))
        .transpose()?
        .flatten()
    {
        None => Ok(Senders::All),
        Some(0) => Ok(Senders::Wire),
        Some(ep) => Err(unsupported(
            site,
            format!("a frontend for endpoint {ep} only; the datapath keys services by frontend"),
        )),
    }
}

pub(crate) fn services(mag: &Mag, a: &mut EbpfArtifact) -> Result<(), Unsupported> {
    let lb = table(mag, pt::SERVICE_LB)?;
    let mut fields = vec![
        Field::EthType,
        Field::Ipv4Dst,
        Field::Ipv6Dst,
        Field::IpProto,
        Field::L4Dport,
    ];
    // The sending endpoint is in the key when a traffic policy tells pods and the wire apart.
    if lb.key.iter().any(|k| k.field == Field::Endpoint) {
        fields.push(Field::Endpoint);
    }
    let pos = key_positions(lb, &fields)?;
    let be = table(mag, pt::LB_BACKEND)?;
    let bpos = key_positions(be, &[Field::Service, Field::Hash])?;
    // Maglev slots of every MAG service id: (slot, (address, port)), in table order.
    type Slots = Vec<(u128, (IpAddr, u16))>;
    let mut slots: BTreeMap<u128, Slots> = BTreeMap::new();
    for e in &be.entries {
        let site = Site {
            table: "lb_backend",
            matches: &e.matches,
        };
        let svc = exact(&e.matches[bpos[0]], Field::Service, &site)?
            .ok_or_else(|| unsupported(&site, "no service"))?;
        let slot = exact(&e.matches[bpos[1]], Field::Hash, &site)?
            .ok_or_else(|| unsupported(&site, "no slot"))?;
        let addr = if let Some(v) = set_value(mag, &e.action, Field::Ipv4Dst) {
            IpAddr::V4((v as u32).into())
        } else if let Some(v) = set_value(mag, &e.action, Field::Ipv6Dst) {
            IpAddr::V6(v.into())
        } else {
            return Err(unsupported(&site, "the action translates no address"));
        };
        let port = set_value(mag, &e.action, Field::L4Dport)
            .ok_or_else(|| unsupported(&site, "the action translates no port"))?;
        slots
            .entry(svc)
            .or_default()
            .push((slot, (addr, port as u16)));
    }
    // Of two rows for one slot the later one holds it, as in a map written in table order.
    // The rows of a service come in slot order in a canonical graph, so mostly nothing
    // moves.
    for rows in slots.values_mut() {
        if rows.windows(2).any(|w| w[0].0 >= w[1].0) {
            rows.reverse();
            rows.sort_by_key(|(slot, _)| *slot);
            rows.dedup_by_key(|(slot, _)| *slot);
        }
    }
    // Sorted and deduplicated as a vector: as a set, inserting every slot's backend was a
    // third of a Service endpoint event's eBPF codegen (ten thousand slots, a thousand
    // backends, on the session bench's node).
    let mut backend_set: Vec<(IpAddr, u16)> = slots
        .values()
        .flat_map(|rows| rows.iter().map(|(_, b)| *b))
        .collect();
    backend_set.sort_unstable();
    backend_set.dedup();
    let backend_id = stable_ids(&backend_set, |(addr, port)| {
        natural_id(&[0, addr_value(*addr), u128::from(*port)])
    });
    // Each service's slots with their backend's id: looked up once per row, not once per
    // slot of every frontend (tens of thousands of map look-ups for each compile).
    let id_of: pipec::util::FxHashMap<(IpAddr, u16), u32> = backend_set
        .iter()
        .copied()
        .zip(backend_id.iter().copied())
        .collect();
    let slots: BTreeMap<u128, Vec<(u128, u32)>> = slots
        .into_iter()
        .map(|(svc, rows)| {
            let ids = rows.iter().map(|(slot, b)| (*slot, id_of[b])).collect();
            (svc, ids)
        })
        .collect();
    for ((addr, port), id) in backend_set.iter().zip(&backend_id) {
        a.backends.insert(
            *id,
            Backend {
                addr: *addr,
                port: *port,
            },
        );
    }
    // The frontends of each map: (affinity timeout, Maglev slots).
    type Frontends = BTreeMap<Frontend, (Option<u32>, Vec<u32>)>;
    let (mut all, mut wire) = (Frontends::new(), Frontends::new());
    for e in &lb.entries {
        let site = Site {
            table: "service_lb",
            matches: &e.matches,
        };
        let frontends = match senders(pos.get(5).map(|p| &e.matches[*p]), &site)? {
            Senders::All => &mut all,
            Senders::Wire => &mut wire,
        };
        let et = exact(&e.matches[pos[0]], Field::EthType, &site)?;
        let addr = match et {
            Some(eth::IPV4) => exact(&e.matches[pos[1]], Field::Ipv4Dst, &site)?
                .map(|v| IpAddr::V4((v as u32).into())),
            Some(eth::IPV6) => {
                exact(&e.matches[pos[2]], Field::Ipv6Dst, &site)?.map(|v| IpAddr::V6(v.into()))
            }
            _ => None,
        }
        .ok_or_else(|| unsupported(&site, "a frontend must be one address"))?;
        let proto = exact(&e.matches[pos[3]], Field::IpProto, &site)?
            .ok_or_else(|| unsupported(&site, "a frontend must have a protocol"))?;
        let port = exact(&e.matches[pos[4]], Field::L4Dport, &site)?
            .ok_or_else(|| unsupported(&site, "a frontend must have a port"))?;
        let fe = Frontend {
            addr,
            protocol: proto as u8,
            port: port as u16,
        };
        // The services map has one value per frontend; rows that differ in what else they
        // match (their priority decides in the MAG) cannot both be written.
        if frontends.contains_key(&fe) {
            return Err(unsupported(&site, "a second row for the same frontend"));
        }
        if drops(mag, &e.action) {
            frontends.insert(fe, (None, Vec::new()));
            continue;
        }
        let def = mag
            .action(e.action.action)
            .ok_or_else(|| unsupported(&site, "unknown action"))?;
        let svc = set_value(mag, &e.action, Field::Service)
            .ok_or_else(|| unsupported(&site, "the action selects no service"))?;
        let modulo = def
            .ops
            .iter()
            .find_map(|op| match op {
                Op::Hash { modulo, .. } => Some(*modulo),
                _ => None,
            })
            .ok_or_else(|| unsupported(&site, "the action hashes nothing"))?;
        let m = operand_value(&e.action, modulo);
        if m == 0 || m > 1 << 20 {
            return Err(unsupported(&site, format!("Maglev table size {m}")));
        }
        // The datapath remembers the backend per client for the timeout the action
        // carries (the Service's `timeoutSeconds`).
        let affinity = def.ops.iter().find_map(|op| match op {
            Op::Affinity { timeout } => Some(operand_value(&e.action, *timeout)),
            _ => None,
        });
        let affinity = match affinity.map(u32::try_from) {
            None => None,
            Some(Ok(t)) if t > 0 => Some(t),
            Some(_) => return Err(unsupported(&site, "an affinity timeout out of range")),
        };
        let mut maglev: Vec<u32> = vec![0; m as usize];
        for (slot, id) in slots.get(&svc).map_or(&[][..], Vec::as_slice) {
            if let Some(at) = maglev.get_mut(*slot as usize).filter(|_| *slot < m) {
                *at = *id;
            }
        }
        frontends.insert(fe, (affinity, maglev));
    }
    // Ids are unique across both maps (Maglev, affinity and reverse NAT are keyed by id):
    // a frontend's natural id hashes the map it is in with it.
    // In order: the maps' keys are, and the first map's tag is the smaller.
    let keys: Vec<(u8, Frontend)> = all
        .keys()
        .map(|fe| (1u8, *fe))
        .chain(wire.keys().map(|fe| (2u8, *fe)))
        .collect();
    let mut ids = stable_ids(&keys, |(map, fe)| {
        natural_id(&[
            u128::from(*map),
            addr_value(fe.addr),
            u128::from(fe.protocol),
            u128::from(fe.port),
        ])
    })
    .into_iter();
    for (map, frontends) in [(&mut a.services, all), (&mut a.wire_services, wire)] {
        for ((fe, (affinity_timeout, maglev)), id) in frontends.into_iter().zip(&mut ids) {
            let service = Service {
                id,
                affinity_timeout,
                maglev,
            };
            map.insert(fe, service);
        }
    }
    Ok(())
}

/// Ids that stay with what they name: each item's natural id, or on a collision the next
/// free one, in item order (never 0, which means "none" in the maps). Dense numbering
/// renumbered every later backend or frontend when one came or went, and so rewrote every
/// Maglev slot naming them: one Service's endpoint change cost thousands of map writes.
/// `items` are sorted, each once; the ids come in their order.
fn stable_ids<K: Ord>(items: &[K], natural: impl Fn(&K) -> u32) -> Vec<u32> {
    debug_assert!(items.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
    let mut used: pipec::util::FxHashSet<u32> = Default::default();
    used.reserve(items.len());
    items
        .iter()
        .map(|item| {
            let mut id = natural(item);
            while id == 0 || !used.insert(id) {
                id = id.wrapping_add(1);
            }
            id
        })
        .collect()
}

/// A 24-bit hash of `values` (FNV-1a, folded), an id's first choice: wide enough that a
/// node's backends and frontends rarely collide, short enough to read in the artifact.
fn natural_id(values: &[u128]) -> u32 {
    let h = pipec::mag::interp::hash_values(values.iter().copied());
    ((h ^ (h >> 32)) as u32) & 0x00ff_ffff
}

/// An address as one value, IPv4 and IPv6 apart. Not `pipec::mag::ip_value`, which maps
/// IPv4 into IPv6: this value feeds the natural ids of backends and frontends, which
/// pinned maps carry across daemon restarts and upgrades, so it must not change.
fn addr_value(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)) | (1 << 64),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// One policy row, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    priority: u32,
    endpoint: Option<u32>,
    remote: Option<u32>,
    proto: Option<u8>,
    ports: (u16, u16),
    val: Val,
}

/// The policy entries of each endpoint and direction from the last compile, with the rows
/// they were computed from. An endpoint's entries depend only on its rows (its own and the
/// rows for every endpoint) and the default, so an event that changes one pod's rows
/// recomputes that pod's entries only. The identities the rows do not name share one
/// template, written out for each identity the node has at every compile, so a new
/// identity recomputes nothing. Entries are reused only when the rows are equal (not a
/// hash of them), so a reuse is never a guess.
#[derive(Default)]
pub struct PolicyCache {
    endpoints: BTreeMap<(PolicyDirection, u32), Computed>,
    /// The keys used by the compile under way; the others are dropped at its end.
    used: BTreeSet<(PolicyDirection, u32)>,
}

/// One endpoint's policy entries and what they were computed from.
struct Computed {
    rows: Vec<Row>,
    default: Val,
    /// The wildcard's entries and the named remotes'.
    entries: Vec<(PolicyMatch, PolicyDecision)>,
    /// The entries of a remote no row names, with identity 0.
    template: Vec<(PolicyMatch, PolicyDecision)>,
    /// The remotes the rows name.
    named: BTreeSet<u32>,
}

impl Computed {
    /// Writes the entries, and the template once for every identity of `universe` that
    /// the rows do not name.
    fn expand(&self, universe: &BTreeSet<u32>, out: &mut Vec<(PolicyMatch, PolicyDecision)>) {
        out.extend(self.entries.iter().copied());
        if self.template.is_empty() {
            return;
        }
        for identity in universe.difference(&self.named) {
            out.extend(self.template.iter().map(|(m, d)| {
                let m = PolicyMatch {
                    identity: *identity,
                    ..*m
                };
                (m, *d)
            }));
        }
    }
}

impl fmt::Debug for PolicyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyCache")
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

/// What an endpoint's entries are computed into: the wildcard's and the named remotes',
/// the template, and the remotes named.
type Parts = (
    Vec<(PolicyMatch, PolicyDecision)>,
    Vec<(PolicyMatch, PolicyDecision)>,
    BTreeSet<u32>,
);

impl PolicyCache {
    /// Starts a compile.
    pub(crate) fn begin(&mut self) {
        self.used.clear();
    }

    /// Keeps the entries of `key` past this compile's end, unread: a compile that keeps
    /// an endpoint's entries from the last artifact computes nothing for it.
    pub(crate) fn keep(&mut self, key: (PolicyDirection, u32)) {
        self.used.insert(key);
    }

    /// The entries of `key` if they were computed from exactly these rows and default.
    fn get(
        &mut self,
        key: (PolicyDirection, u32),
        rows: &[&Row],
        default: Val,
    ) -> Option<&Computed> {
        self.used.insert(key);
        let c = self.endpoints.get(&key)?;
        let same = c.default == default
            && c.rows.len() == rows.len()
            && c.rows.iter().zip(rows).all(|(a, b)| a == *b);
        same.then_some(c)
    }

    fn put(
        &mut self,
        key: (PolicyDirection, u32),
        rows: &[&Row],
        default: Val,
        (entries, template, named): Parts,
    ) -> &Computed {
        let rows = rows.iter().map(|r| (*r).clone()).collect();
        let computed = Computed {
            rows,
            default,
            entries,
            template,
            named,
        };
        match self.endpoints.entry(key) {
            std::collections::btree_map::Entry::Occupied(mut o) => {
                o.insert(computed);
                o.into_mut()
            }
            std::collections::btree_map::Entry::Vacant(v) => v.insert(computed),
        }
    }

    /// Ends a compile: the entries of endpoints it did not compile are dropped.
    pub(crate) fn end(&mut self) {
        let used = std::mem::take(&mut self.used);
        self.endpoints.retain(|k, _| used.contains(k));
    }
}

/// A decision function over one protocol's ports: intervals covering 0..=65535.
type Ivs = Vec<(u16, u16, Val)>;

/// One policy table: its name, the direction it decides and the field of the remote
/// identity.
pub(crate) type PolicyTable<'a> = (&'a str, PolicyDirection, Field);

/// Which rows of a policy table [`policy`] reads: all of them (each is checked), or those
/// of the endpoints it computes and of every endpoint (the others are the last compile's,
/// checked then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    All,
    OfEndpoints,
}

/// The key positions of a policy table's fields, in [`Row`] order.
pub(crate) fn policy_positions(t: &Table, remote_field: Field) -> Result<Vec<usize>, Unsupported> {
    key_positions(
        t,
        &[
            Field::CtState,
            Field::Endpoint,
            remote_field,
            Field::IpProto,
            Field::L4Dport,
        ],
    )
}

/// Checks the entries `added` to policy `table` as a compile reads them.
pub(crate) fn check_policy_rows<'e>(
    mag: &Mag,
    (name, _, remote_field): PolicyTable<'_>,
    added: impl IntoIterator<Item = &'e mag::Entry>,
    cookies: &mut Cookies,
) -> Result<(), Unsupported> {
    let pos = policy_positions(table(mag, name)?, remote_field)?;
    for e in added {
        decode_row(mag, (name, remote_field, &pos), e, &|_| true, cookies)?;
    }
    Ok(())
}

/// One row of a policy table as the policy computation reads it: `None` for a row that
/// decides nothing there (later packets of a connection, packets without a local
/// endpoint) or whose endpoint `wanted` says no to.
fn decode_row(
    mag: &Mag,
    (name, remote_field, pos): (&str, Field, &[usize]),
    e: &mag::Entry,
    wanted: &dyn Fn(u32) -> bool,
    cookies: &mut Cookies,
) -> Result<Option<Row>, Unsupported> {
    let site = Site {
        table: name,
        matches: &e.matches,
    };
    let ct_m = e.matches[pos[0]];
    if !ct_m.matches(ct::NEW, Field::CtState.width()) {
        // Rows for later packets of a connection: the datapath's conntrack allows
        // those by itself, so only an allow is expressible.
        if policy_action(mag, &e.action) != Some(Action::Allow) {
            return Err(unsupported(&site, "a conntrack row that does not allow"));
        }
        return Ok(None);
    }
    let endpoint = exact(&e.matches[pos[1]], Field::Endpoint, &site)?.map(|v| v as u32);
    if endpoint == Some(0) {
        // Packets with no local source endpoint: the datapath runs no egress policy
        // for them (from_wire), so the row must let them pass.
        if drops(mag, &e.action) {
            return Err(unsupported(
                &site,
                "a drop for packets without a local endpoint",
            ));
        }
        return Ok(None);
    }
    if endpoint.is_some_and(|ep| !wanted(ep)) {
        return Ok(None);
    }
    let Some(act) = policy_action(mag, &e.action) else {
        return Err(unsupported(&site, "the action decides nothing"));
    };
    let remote = exact(&e.matches[pos[2]], remote_field, &site)?.map(|v| v as u32);
    let proto = exact(&e.matches[pos[3]], Field::IpProto, &site)?.map(|v| v as u8);
    let (pv, plen) = prefix(&e.matches[pos[4]], Field::L4Dport, &site)?;
    let lo = pv as u16;
    let hi = lo | !(mag::prefix_mask(plen, 16) as u16);
    Ok(Some(Row {
        priority: e.priority,
        endpoint,
        remote,
        proto,
        ports: (lo, hi),
        val: (act, cookies.of(mag, e)),
    }))
}

fn policy(
    mag: &Mag,
    (name, dir, remote_field): PolicyTable<'_>,
    (eps, which): (&[u32], Rows),
    universe: &BTreeSet<u32>,
    (out, cache, cookies): (
        &mut Vec<(PolicyMatch, PolicyDecision)>,
        &mut PolicyCache,
        &mut Cookies,
    ),
) -> Result<(), Unsupported> {
    let t = table(mag, name)?;
    let pos = policy_positions(t, remote_field)?;
    let default = policy_action(mag, &t.default_action)
        .ok_or_else(|| unsupported(name, "the default action decides nothing"))?;
    let wanted = |ep: u32| which == Rows::All || eps.binary_search(&ep).is_ok();
    let mut rows = Vec::new();
    for e in &t.entries {
        if let Some(row) = decode_row(mag, (name, remote_field, &pos), e, &wanted, cookies)? {
            rows.push(row);
        }
    }
    let default = (default, 0);
    // Rows by endpoint (`None`: every endpoint), each in table order.
    let mut by_ep: BTreeMap<Option<u32>, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_ep.entry(r.endpoint).or_default().push(i);
    }
    let everyone = by_ep.get(&None).cloned().unwrap_or_default();
    for &ep in eps {
        // The rows of this endpoint and of every endpoint, in table order (ties go to the
        // first row, as the interpreter decides).
        let own = by_ep.get(&Some(ep)).map_or(&[][..], Vec::as_slice);
        let mine: Vec<&Row> = merged(&everyone, own).map(|i| &rows[i]).collect();
        if let Some(computed) = cache.get((dir, ep), &mine, default) {
            computed.expand(universe, out);
            continue;
        }
        let mut emitted: Vec<(PolicyMatch, PolicyDecision)> = Vec::new();
        let protos: BTreeSet<u8> = mine.iter().filter_map(|r| r.proto).collect();
        // The remotes the rows name. Every other identity is decided by the rows of any
        // remote, as the wildcard is, so its entries are one template worked out once
        // (below) and written for each such identity: the entries computed here do not
        // depend on which identities the node has, and a new identity reuses them.
        let named: BTreeSet<u32> = mine.iter().filter_map(|r| r.remote).collect();
        // The rows a remote can match: those of any remote, and per named remote its own
        // with them, each list in table order (ties go to the first row). A remote's
        // decisions read only its rows, so an endpoint with rows for thousands of remotes
        // does not scan all of them for each one.
        let mut any_idx: Vec<usize> = Vec::new();
        let mut own_idx: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, r) in mine.iter().enumerate() {
            match r.remote {
                None => any_idx.push(i),
                Some(x) => own_idx.entry(x).or_default().push(i),
            }
        }
        let any_rows: Vec<&Row> = any_idx.iter().map(|i| mine[*i]).collect();
        // Both index lists are ascending: merged, they keep table order.
        let rows_of = |remote: u32| -> Vec<&Row> {
            let own = own_idx.get(&remote).map_or(&[][..], Vec::as_slice);
            merged(&any_idx, own).map(|i| mine[i]).collect()
        };
        // The MAG's decision: the highest-priority row that matches (first on ties, as
        // the interpreter does), else the default.
        let decide = |rows: &[&Row], remote: Option<u32>, proto: Option<u8>, port: u16| -> Val {
            let mut best: Option<&Row> = None;
            for r in rows {
                let hit = r.remote.is_none_or(|x| Some(x) == remote)
                    && r.proto.is_none_or(|x| Some(x) == proto)
                    && r.ports.0 <= port
                    && port <= r.ports.1;
                if hit && best.is_none_or(|b| r.priority > b.priority) {
                    best = Some(r);
                }
            }
            best.map(|r| r.val).unwrap_or(default)
        };
        // The decision over the ports of `proto`, as intervals: it changes only at the
        // bounds of the rows the remote can match.
        let function = |rows: &[&Row], remote: Option<u32>, proto: u8| -> Ivs {
            if !has_ports(proto) {
                return vec![(0, u16::MAX, decide(rows, remote, Some(proto), 0))];
            }
            let mut cuts: BTreeSet<u32> = BTreeSet::from([0, 65536]);
            for r in rows {
                if r.proto.is_none_or(|p| p == proto) {
                    cuts.insert(u32::from(r.ports.0));
                    cuts.insert(u32::from(r.ports.1) + 1);
                }
            }
            let cuts: Vec<u32> = cuts.into_iter().collect();
            let mut out: Ivs = Vec::new();
            for w in cuts.windows(2) {
                let (lo, hi) = (w[0] as u16, (w[1] - 1) as u16);
                let v = decide(rows, remote, Some(proto), lo);
                match out.last_mut() {
                    Some(last) if last.2 == v => last.1 = hi,
                    _ => out.push((lo, hi, v)),
                }
            }
            out
        };
        // Ports of other protocols are 0 in the datapath, so one value covers them.
        let wild: BTreeMap<u8, Ivs> = protos
            .iter()
            .map(|p| (*p, function(&any_rows, None, *p)))
            .collect();
        let wild_other = decide(&any_rows, None, None, 0);
        // A remote no row names is decided by the rows of any remote only, as the
        // wildcard is: its functions are the wildcard's, and it is the template. It never
        // makes a cell a conflict (where the wildcard denies, so does it), so the
        // conflicts are the named remotes' alone.
        let class: BTreeMap<u32, (BTreeMap<u8, Ivs>, Val)> = named
            .iter()
            .map(|r| {
                let rows = rows_of(*r);
                let f = protos
                    .iter()
                    .map(|p| (*p, function(&rows, Some(*r), *p)))
                    .collect();
                (*r, (f, decide(&rows, Some(*r), None, 0)))
            })
            .collect();
        let allows = |v: &Val| v.0 != Action::Deny;
        // Conflict cells: the wildcard denies, some class is allowed.
        let conflict = |proto: u8, port: u16| -> bool {
            let w = value_at(&wild[&proto], port);
            w.0 == Action::Deny
                && class
                    .values()
                    .any(|(f, _)| allows(&value_at(&f[&proto], port)))
        };
        let any_conflict = protos.iter().any(|p| {
            let mut points: BTreeSet<u16> = wild[p].iter().map(|x| x.0).collect();
            for (f, _) in class.values() {
                points.extend(f[p].iter().map(|x| x.0));
            }
            points.into_iter().any(|port| conflict(*p, port))
        });
        let other_conflict = wild_other.0 == Action::Deny && class.values().any(|(_, o)| allows(o));
        let emit_other = !(wild_other.0 == Action::Deny && (any_conflict || other_conflict));
        let any_other: Option<Val> = emit_other.then_some(wild_other);
        let entry = |identity: u32, proto: Option<u8>, port: Option<(u16, u8)>, v: Val| {
            let m = PolicyMatch {
                endpoint: ep,
                direction: dir,
                identity,
                protocol: proto,
                port: port.filter(|(_, bits)| *bits > 0),
            };
            let d = PolicyDecision {
                action: v.0,
                cookie: v.1,
            };
            (m, d)
        };
        let mut put = |identity: u32, proto: Option<u8>, port: Option<(u16, u8)>, v: Val| {
            emitted.push(entry(identity, proto, port, v));
        };
        if let Some(v) = any_other {
            put(0, None, None, v);
        }
        // The wildcard entries, and what the wildcard lookup answers per cell.
        let mut any_at: BTreeMap<u8, AnyAt> = BTreeMap::new();
        for p in &protos {
            let ivs = &wild[p];
            let uniform = ivs.len() == 1 && Some(ivs[0].2) == any_other;
            let mut cells = Vec::new();
            for &(lo, hi, v) in ivs {
                for (clo, chi) in
                    split_conflicts(lo, hi, |port| conflict(*p, port), &class, *p, ivs)
                {
                    let c = conflict(*p, clo);
                    let got = if c || uniform { any_other } else { Some(v) };
                    if !c && !uniform {
                        emit_cells(&mut put, 0, *p, clo, chi, v);
                    }
                    cells.push((clo, chi, got));
                }
            }
            any_at.insert(*p, cells);
        }
        // Class entries where the two lookups would answer otherwise: each named remote's,
        // then the template's (identity 0 until it is written for an identity).
        let cells = Cells {
            protos: &protos,
            any_at: &any_at,
            any_other,
        };
        for (r, (f, other)) in &class {
            cells.class_entries(*r, f, *other, &mut put);
        }
        let mut template = Vec::new();
        cells.class_entries(0, &wild, wild_other, &mut |i, p, port, v| {
            template.push(entry(i, p, port, v));
        });
        let computed = cache.put((dir, ep), &mine, default, (emitted, template, named));
        computed.expand(universe, out);
    }
    Ok(())
}

/// What the wildcard lookup answers over one protocol's ports: cells and the answer in
/// each (`None`: no wildcard entry there).
type AnyAt = Vec<(u16, u16, Option<Val>)>;

/// What the wildcard lookup answers per protocol and port cell, which a remote's entries
/// are worked out against.
struct Cells<'a> {
    protos: &'a BTreeSet<u8>,
    any_at: &'a BTreeMap<u8, AnyAt>,
    any_other: Option<Val>,
}

impl Cells<'_> {
    /// The entries of remote `r`, whose decisions are `f` per protocol and `other` for the
    /// protocols no row names: written where the two lookups would otherwise answer
    /// something else than the MAG.
    fn class_entries(
        &self,
        r: u32,
        f: &BTreeMap<u8, Ivs>,
        other: Val,
        put: &mut impl FnMut(u32, Option<u8>, Option<(u16, u8)>, Val),
    ) {
        let needs_other = final_val(None, self.any_other) != other
            && !(self.any_other.is_none() && other.0 == Action::Deny);
        if needs_other {
            put(r, None, None, other);
        }
        for p in self.protos {
            for &(lo, hi, v) in &f[p] {
                for &(alo, ahi, av) in &self.any_at[p] {
                    let (s, e) = (lo.max(alo), hi.min(ahi));
                    if s > e {
                        continue;
                    }
                    let got = final_val(None, av);
                    let same = if av.is_none() { got.0 == v.0 } else { got == v };
                    if needs_other || !same {
                        emit_cells(put, r, *p, s, e, v);
                    }
                }
            }
        }
    }
}

/// Two ascending index lists merged into one ascending sequence (the lists of rows for
/// every endpoint or remote and of one, which together keep table order).
fn merged<'a>(a: &'a [usize], b: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        let from_a = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x <= y,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if from_a {
            i += 1;
            Some(a[i - 1])
        } else {
            j += 1;
            Some(b[j - 1])
        }
    })
}

/// Splits `lo..=hi` (one interval of the wildcard function) where conflict status changes;
/// the cut points are the class functions' interval starts.
fn split_conflicts(
    lo: u16,
    hi: u16,
    conflict: impl Fn(u16) -> bool,
    class: &BTreeMap<u32, (BTreeMap<u8, Ivs>, Val)>,
    proto: u8,
    _wild: &Ivs,
) -> Vec<(u16, u16)> {
    let mut cuts: BTreeSet<u32> = BTreeSet::from([u32::from(lo), u32::from(hi) + 1]);
    for (f, _) in class.values() {
        for (s, e, _) in &f[&proto] {
            for x in [u32::from(*s), u32::from(*e) + 1] {
                if x > u32::from(lo) && x <= u32::from(hi) {
                    cuts.insert(x);
                }
            }
        }
    }
    let cuts: Vec<u32> = cuts.into_iter().collect();
    let mut out: Vec<(u16, u16, bool)> = Vec::new();
    for w in cuts.windows(2) {
        let (s, e) = (w[0] as u16, (w[1] - 1) as u16);
        let c = conflict(s);
        match out.last_mut() {
            Some(last) if last.2 == c => last.1 = e,
            _ => out.push((s, e, c)),
        }
    }
    out.into_iter().map(|(s, e, _)| (s, e)).collect()
}

fn value_at(ivs: &Ivs, port: u16) -> Val {
    ivs.iter()
        .find(|(lo, hi, _)| *lo <= port && port <= *hi)
        .map(|x| x.2)
        .unwrap_or(DENY0)
}

/// What the datapath decides from the two lookups (see `policy_decide` in the C code).
fn final_val(specific: Option<Val>, any: Option<Val>) -> Val {
    match (specific, any) {
        (Some(s), _) if s.0 == Action::Deny => s,
        (_, Some(a)) if a.0 == Action::Deny => a,
        (Some(s), _) => s,
        (None, Some(a)) => a,
        (None, None) => DENY0,
    }
}

fn emit_cells(
    put: &mut impl FnMut(u32, Option<u8>, Option<(u16, u8)>, Val),
    identity: u32,
    proto: u8,
    lo: u16,
    hi: u16,
    v: Val,
) {
    if !has_ports(proto) {
        put(identity, Some(proto), None, v);
        return;
    }
    for (value, bits) in port_prefixes(lo, hi) {
        put(identity, Some(proto), Some((value, bits)), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The identity of the longest prefix holding `ip` by scanning every prefix: what
    /// [`Lpm`] must answer.
    fn scanned(ipcache: &BTreeMap<Prefix, u32>, ip: IpAddr) -> u32 {
        ipcache
            .iter()
            .filter(|(p, _)| ipnet::IpNet::new(p.addr, p.len).is_ok_and(|n| n.contains(&ip)))
            .max_by_key(|(p, _)| p.len)
            .map_or(c::IDENTITY_WORLD, |(_, id)| *id)
    }

    proptest! {
        /// Merging two ascending lists gives what sorting them together gives.
        #[test]
        fn merged_is_the_sorted_union(
            mut a in proptest::collection::vec(0usize..50, 0..20),
            mut b in proptest::collection::vec(0usize..50, 0..20),
        ) {
            a.sort_unstable();
            b.sort_unstable();
            let mut want: Vec<usize> = a.iter().chain(&b).copied().collect();
            want.sort_unstable();
            prop_assert_eq!(merged(&a, &b).collect::<Vec<_>>(), want);
        }

        /// Over small address spaces (so prefixes nest and overlap often, host bits set
        /// included), the lookup by length answers as the scan of every prefix.
        #[test]
        fn lpm_answers_as_a_scan(
            prefixes in proptest::collection::vec((0u32..64, 24u8..=32, 3u32..50), 0..40),
            probes in proptest::collection::vec(0u32..64, 1..20),
        ) {
            let base = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0));
            let ipcache: BTreeMap<Prefix, u32> = prefixes
                .iter()
                .map(|(low, len, id)| {
                    let addr = IpAddr::V4((base + low).into());
                    (Prefix { addr, len: *len }, *id)
                })
                .collect();
            let lpm = Lpm::of(&ipcache);
            for low in probes {
                let ip = IpAddr::V4((base + low).into());
                prop_assert_eq!(lpm.identity_of(ip), scanned(&ipcache, ip), "{}", ip);
            }
        }
    }
}
