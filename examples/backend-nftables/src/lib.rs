//! An out-of-tree pipec backend: a node's policy as one nftables table.
//!
//! This crate stands for a vendor's backend: it depends on the `pipec` library alone and
//! implements [`pipec::backend::Backend`] as `docs/backends.md` describes. It renders the
//! policy part of the node's match-action graph, for a node that routes between its pods
//! (the `forward` hook):
//!
//! - the ipcache as two interval maps per family (`src4`, `dst4`, `src6`, `dst6`), address
//!   to security identity, flattened from longest-prefix-match into disjoint ranges
//!   ([`ranges`]), since an nftables interval map refuses overlapping elements;
//! - per local endpoint an egress and an ingress chain, reached through verdict maps keyed by
//!   the pod's address; each chain first loads the remote identity into the packet mark,
//!   then holds the endpoint's policy entries in the MAG's order (priority, then entry
//!   order: the first match decides, as the MAG's interpreter does) and ends in a drop,
//!   the tables' default; adjacent entries with one verdict that differ in one match are
//!   one rule over an anonymous set (ports, identities), which decides the same;
//! - `ct state established,related accept` first, which is the MAG's conntrack entries:
//!   replies and later packets of a connection the policy let through.
//!
//! An egress allow returns to `forward` so that the destination's ingress chain still
//! runs, as the MAG runs the ingress table after the egress one.
//!
//! Services are the MAG's `service_lb` and `lb_backend` tables as they are: a `nat`
//! prerouting chain looks the frontend (address, protocol, port) up in a verdict map and
//! jumps to the frontend's chain, which DNATs to the Maglev slot that a `jhash` of the
//! MAG's hash fields picks (`lb_backend`'s slots as an anonymous map), and drops when the
//! slot or the frontend has no backend (`lb_no_backend`). Prerouting runs before `forward`,
//! so policy sees the backend, as the MAG evaluates policy after DNAT; conntrack reverses
//! the translation on replies. ClientIP affinity hashes the client address alone, so a
//! client keeps its backend while the backends stay the same (stateless, where the MAG
//! remembers the choice for the timeout).
//!
//! Not rendered (the compile refuses with a reason): the L7 proxy redirect, and Service
//! traffic policies that tell pods and the wire apart (`meta.endpoint` in `service_lb`).
//! Anti-spoofing is left to the node's routing (a pod's traffic is matched by its source
//! address). Services apply to packets the node forwards (pods and the wire), not to the
//! node's own processes (no `output` hook).
//!
//! Operations: the whole table is replaced by one `nft -f` transaction (add, delete and
//! define the table in one batch), which the kernel applies atomically: packets see the old
//! table or the new one, never a mix, so the replace is make-before-break at packet
//! granularity. [`NftOps`] says so per change.

// Dev-dependencies that the unit tests do not use; the package's integration tests,
// benches or examples do.
#[cfg(test)]
use insta as _;
#[cfg(test)]
use libc as _;
#[cfg(test)]
use serde_yaml as _;

pub mod ranges;

use pipec::backend::{
    Artifact, Backend, Budget, Capabilities, CompileInput, Operations, Profile, Reason, Unsupported,
};
use pipec::mag::pipeline::table as pt;
use pipec::mag::{verdict, ActionCall, FieldMatch, Mag, Op, Operand, Table};
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The target's name.
pub const TARGET: &str = "nftables";
/// The nftables table it owns.
pub const TABLE: &str = "pipec";

/// The nftables backend.
#[derive(Clone, Debug)]
pub struct NftBackend {
    profile: Profile,
}

impl Default for NftBackend {
    fn default() -> Self {
        NftBackend {
            profile: Profile {
                name: TARGET.into(),
                description: "nftables in the node's forward hook: the policy tables of the node pipeline as one table".into(),
                // It takes no hardware rules: like eBPF, it compiles the MAG itself.
                caps: Capabilities::default(),
                budget: Budget::default(),
            },
        }
    }
}

/// One node's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftArtifact {
    /// The `nft -f` script that replaces the table atomically.
    pub script: String,
    /// Local endpoints by id, with their addresses.
    pub endpoints: BTreeMap<u32, Vec<String>>,
}

impl Artifact for NftArtifact {
    fn target(&self) -> &str {
        TARGET
    }
    fn text(&self) -> String {
        self.script.clone()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "table": TABLE, "script": self.script, "endpoints": self.endpoints })
    }
    fn items(&self) -> Vec<(String, String)> {
        vec![(format!("table inet {TABLE}"), self.script.clone())]
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One change of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NftOp {
    /// Replace the whole table with this script, in one atomic transaction.
    ReplaceTable {
        /// The `nft -f` script.
        script: String,
    },
}

/// The operations of one change: nothing, or one atomic replace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NftOps {
    /// The operations.
    pub ops: Vec<NftOp>,
}

impl Operations for NftOps {
    fn target(&self) -> &str {
        TARGET
    }
    fn len(&self) -> usize {
        self.ops.len()
    }
    fn text(&self) -> String {
        self.ops
            .iter()
            .map(|NftOp::ReplaceTable { script }| {
                format!(
                    "replace table inet {TABLE} ({} lines, atomic)\n",
                    script.lines().count()
                )
            })
            .collect()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Backend for NftBackend {
    fn name(&self) -> &str {
        TARGET
    }
    fn profile(&self) -> &Profile {
        &self.profile
    }
    fn compile(&self, input: &CompileInput<'_>) -> Result<Box<dyn Artifact>, Unsupported> {
        Ok(Box::new(render(input.mag)?))
    }
    fn diff(&self, old: Option<&dyn Artifact>, new: &dyn Artifact) -> Box<dyn Operations> {
        let script = |a: &dyn Artifact| {
            a.as_any()
                .downcast_ref::<NftArtifact>()
                .map(|a| a.script.clone())
        };
        let new = script(new);
        let old = old.and_then(script);
        let ops = match new {
            Some(n) if Some(&n) != old.as_ref() => vec![NftOp::ReplaceTable { script: n }],
            _ => Vec::new(),
        };
        Box::new(NftOps { ops })
    }
}

fn refuse(site: &str, detail: impl Into<String>) -> Unsupported {
    Unsupported::new(
        TARGET,
        Reason::NotImplemented {
            site: site.into(),
            detail: detail.into(),
        },
    )
}

fn table<'m>(mag: &'m Mag, name: &str) -> Result<&'m Table, Unsupported> {
    mag.table_by_name(name)
        .and_then(|t| mag.table(t))
        .ok_or_else(|| refuse(name, "the table is missing (not the default node pipeline)"))
}

/// The value an action call sets `field` (by name) to, if any.
fn sets(mag: &Mag, call: &ActionCall, field: &str) -> Option<u128> {
    mag.action(call.action)?
        .ops
        .iter()
        .rev()
        .find_map(|op| match op {
            Op::Set { field: f, value } if f.name() == field => match value {
                Operand::Param(i) => call.args.get(usize::from(*i)).copied(),
                Operand::Const(v) => Some(*v),
            },
            _ => None,
        })
}

fn drops(mag: &Mag, call: &ActionCall) -> bool {
    mag.action(call.action)
        .is_some_and(|d| d.ops.iter().any(|o| matches!(o, Op::Drop)))
}

/// What a policy entry does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Allow,
    Deny,
    /// No decision: the table is done with the packet.
    Pass,
}

fn decision(mag: &Mag, call: &ActionCall, site: &str) -> Result<Decision, Unsupported> {
    if drops(mag, call) {
        return Ok(Decision::Deny);
    }
    match sets(mag, call, "meta.verdict") {
        Some(verdict::ALLOW) => Ok(Decision::Allow),
        Some(verdict::REDIRECT) => Err(Unsupported::new(
            TARGET,
            Reason::Feature {
                feature: format!("L7 proxy redirect ({site})"),
            },
        )),
        None => Ok(Decision::Pass),
        Some(other) => Err(refuse(site, format!("verdict {other}"))),
    }
}

/// The (family width, value, prefix length) an address match covers.
fn prefix_of(m: &FieldMatch, width: u8) -> Option<(u128, u8)> {
    match *m {
        FieldMatch::Any => Some((0, 0)),
        FieldMatch::Exact(v) => Some((v, width)),
        FieldMatch::Prefix { value, len } => Some((value, len)),
        FieldMatch::Ternary { value, mask } => {
            let len = mask.count_ones() as u8;
            let (lo, _) = ranges::bounds(width, u128::MAX, len);
            // Only contiguous (prefix) masks are addresses the ipcache can hold.
            (mask
                == lo
                    & (if width == 128 {
                        u128::MAX
                    } else {
                        (1u128 << width) - 1
                    }))
            .then_some((value, len))
        }
        FieldMatch::Range { .. } => None,
    }
}

/// An ipcache table (src or dst) as identity ranges per family.
#[derive(Default)]
struct Ipcache {
    v4: Vec<(u128, u8, u32)>,
    v6: Vec<(u128, u8, u32)>,
}

fn ipcache(mag: &Mag, name: &str, dir: &str) -> Result<Ipcache, Unsupported> {
    let t = table(mag, name)?;
    let col = |f: &str| t.key.iter().position(|k| k.field.name() == f);
    let (v4, v6) = (col(&format!("ipv4.{dir}")), col(&format!("ipv6.{dir}")));
    let default = t.default_action.args.first().copied().unwrap_or(0) as u32;
    let mut out = Ipcache {
        v4: vec![(0, 0, default)],
        v6: vec![(0, 0, default)],
    };
    for e in &t.entries {
        let id = e.action.args.first().copied().unwrap_or(0) as u32;
        let eth = col("eth.type").and_then(|i| match e.matches[i] {
            FieldMatch::Exact(v) => Some(v),
            _ => None,
        });
        let (list, column, width) = match eth {
            Some(0x0800) => (&mut out.v4, v4, 32),
            Some(0x86dd) => (&mut out.v6, v6, 128),
            _ => return Err(refuse(name, "an entry without an IP ethertype")),
        };
        let m = column.map_or(FieldMatch::Any, |i| e.matches[i]);
        let (value, len) =
            prefix_of(&m, width).ok_or_else(|| refuse(name, "a non-prefix address mask"))?;
        list.push((value, len, id));
    }
    Ok(out)
}

fn addr(width: u8, v: u128) -> String {
    if width == 32 {
        std::net::Ipv4Addr::from(v as u32).to_string()
    } else {
        std::net::Ipv6Addr::from(v).to_string()
    }
}

fn map_elements(width: u8, prefixes: &[(u128, u8, u32)]) -> String {
    ranges::lpm_ranges(width, prefixes)
        .iter()
        .map(|&(lo, hi, id)| {
            if lo == hi {
                format!("{} : {id}", addr(width, lo))
            } else {
                format!("{}-{} : {id}", addr(width, lo), addr(width, hi))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Local endpoints: the `route` table's entries that deliver to an endpoint.
fn endpoints(mag: &Mag) -> Result<BTreeMap<u32, Vec<(u8, u128)>>, Unsupported> {
    let t = table(mag, pt::ROUTE)?;
    let col = |f: &str| t.key.iter().position(|k| k.field.name() == f);
    let mut out: BTreeMap<u32, Vec<(u8, u128)>> = BTreeMap::new();
    for e in &t.entries {
        let Some(ep) = sets(mag, &e.action, "meta.out_port")
            .filter(|_| sets(mag, &e.action, "meta.endpoint").is_some())
        else {
            continue;
        };
        for (f, width) in [("ipv4.dst", 32u8), ("ipv6.dst", 128)] {
            if let Some(i) = col(f) {
                if let Some((v, len)) = prefix_of(&e.matches[i], width) {
                    if len == width {
                        out.entry(ep as u32).or_default().push((width, v));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What one expression of a rule matches: a union of disjoint, sorted value intervals
/// (written as a value, a range or an anonymous set), or a masked value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Val {
    /// Disjoint intervals, sorted.
    Set(Vec<(u128, u128)>),
    /// `& mask == value`: a mask that is no prefix, which a set cannot hold.
    Masked { value: u128, mask: u128 },
}

impl Val {
    fn one(lo: u128, hi: u128) -> Val {
        Val::Set(vec![(lo, hi)])
    }

    /// The union of two sets, or `None` for a masked value.
    fn union(&self, other: &Val) -> Option<Val> {
        let (Val::Set(a), Val::Set(b)) = (self, other) else {
            return None;
        };
        let mut all: Vec<(u128, u128)> = a.iter().chain(b).copied().collect();
        all.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::new();
        for (lo, hi) in all {
            match out.last_mut() {
                // Overlapping intervals become one: nftables refuses overlapping elements
                // in one set. Adjacent ones stay apart, so identities read as a list.
                Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        Some(Val::Set(out))
    }

    fn render(&self, expr: &str) -> String {
        match self {
            Val::Masked { value, mask } => format!("{expr} & {mask:#x} == {value:#x}"),
            Val::Set(ivs) => {
                let items: Vec<String> = ivs
                    .iter()
                    .map(|&(lo, hi)| {
                        if lo == hi {
                            lo.to_string()
                        } else {
                            format!("{lo}-{hi}")
                        }
                    })
                    .collect();
                if items.len() == 1 {
                    format!("{expr} {}", items[0])
                } else {
                    format!("{expr} {{ {} }}", items.join(", "))
                }
            }
        }
    }
}

/// One match of a policy entry as an interval or a masked value of a field `width` bits
/// wide, or `None` for a match on anything.
fn val(m: FieldMatch, width: u32) -> Option<Val> {
    let full = if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    match norm(m) {
        FieldMatch::Any => None,
        FieldMatch::Exact(v) => Some(Val::one(v, v)),
        FieldMatch::Prefix { value, len } => {
            let (lo, hi) = ranges::bounds(width as u8, value, len);
            Some(Val::one(lo, hi))
        }
        FieldMatch::Range { lo, hi } => Some(Val::one(lo, hi)),
        FieldMatch::Ternary { value, mask } => {
            let mask = mask & full;
            let len = mask.count_ones();
            let (prefix, _) = ranges::bounds(width as u8, full, len as u8);
            if mask == prefix & full {
                // A prefix mask: the interval of the values under it.
                let (lo, hi) = ranges::bounds(width as u8, value & mask, len as u8);
                Some(Val::one(lo, hi))
            } else {
                Some(Val::Masked {
                    value: value & mask,
                    mask,
                })
            }
        }
    }
}

/// One policy entry as the expressions of an nft rule, in key order, or `None` when it
/// matches on connection tracking (those are the `ct state` rule of `forward`).
fn matches(t: &Table, e: &pipec::mag::Entry, identity: &str) -> Option<Vec<(&'static str, Val)>> {
    let mut out = Vec::new();
    let mut has_proto = false;
    for (k, m) in t.key.iter().zip(e.matches.iter()) {
        let name = k.field.name();
        let expr = match name {
            "meta.ct_state" => {
                if norm(*m) != FieldMatch::Any {
                    return None;
                }
                continue;
            }
            "meta.endpoint" => continue,
            n if n == identity => "meta mark",
            "ip.proto" => {
                has_proto = norm(*m) != FieldMatch::Any;
                "meta l4proto"
            }
            "l4.dport" => {
                if norm(*m) != FieldMatch::Any && !has_proto {
                    // A port means a protocol with ports.
                    let with_ports = Val::Set(vec![(6, 6), (17, 17), (132, 132)]);
                    out.push(("meta l4proto", with_ports));
                }
                "th dport"
            }
            _ => continue,
        };
        if let Some(v) = val(*m, k.field.width()) {
            out.push((expr, v));
        }
    }
    Some(out)
}

/// A rule comment: the provenance, with quotes, backslashes and control characters
/// replaced, cut to the 128 bytes nftables takes (a Kubernetes name alone may have 253).
fn comment(why: &str) -> String {
    const MAX: usize = 128;
    let clean: String = why
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '\''
            } else {
                c
            }
        })
        .collect();
    if clean.len() <= MAX {
        return clean;
    }
    let mut end = MAX - 3;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &clean[..end])
}

/// A ternary match with an empty mask matches anything.
fn norm(m: FieldMatch) -> FieldMatch {
    match m {
        FieldMatch::Ternary { mask: 0, .. } => FieldMatch::Any,
        other => other,
    }
}

fn entry_endpoint(t: &Table, e: &pipec::mag::Entry) -> Option<Option<u32>> {
    let i = t
        .key
        .iter()
        .position(|k| k.field.name() == "meta.endpoint")?;
    match norm(e.matches[i]) {
        FieldMatch::Any => Some(None),
        FieldMatch::Exact(v) => Some(Some(v as u32)),
        // Endpoint ids are matched whole.
        FieldMatch::Ternary { value, .. } => Some(Some(value as u32)),
        _ => None,
    }
}

/// One rule of an endpoint's chain before rendering.
struct Rule {
    matches: Vec<(&'static str, Val)>,
    verdict: &'static str,
    /// The provenance of every entry the rule stands for, without repeats.
    why: Vec<String>,
}

impl Rule {
    /// Takes `next` into this rule when both have the same verdict and match on the same
    /// expressions, equal in all but one, whose values are sets. The two rules, one after
    /// the other, then decide exactly as one rule over the union: a packet either rule
    /// matches gets the same verdict, whichever matched first.
    fn absorb(&mut self, next: &Rule) -> bool {
        if self.verdict != next.verdict || self.matches.len() != next.matches.len() {
            return false;
        }
        let mut differ = None;
        for (i, ((ea, va), (eb, vb))) in self.matches.iter().zip(&next.matches).enumerate() {
            if ea != eb {
                return false;
            }
            if va != vb {
                if differ.is_some() {
                    return false;
                }
                differ = Some(i);
            }
        }
        if let Some(i) = differ {
            let Some(u) = self.matches[i].1.union(&next.matches[i].1) else {
                return false;
            };
            self.matches[i].1 = u;
        }
        for w in &next.why {
            if !self.why.contains(w) {
                self.why.push(w.clone());
            }
        }
        true
    }

    fn render(&self) -> String {
        let mut parts: Vec<String> = self.matches.iter().map(|(e, v)| v.render(e)).collect();
        parts.push(format!(
            "{} comment \"{}\"",
            self.verdict,
            comment(&self.why.join(", "))
        ));
        parts.join(" ")
    }
}

/// The rules of one endpoint's chain for a policy table, adjacent rules that can be one
/// merged into sets.
fn chain_rules(
    mag: &Mag,
    name: &str,
    ep: u32,
    identity: &str,
    allow: &'static str,
) -> Result<Vec<String>, Unsupported> {
    let t = table(mag, name)?;
    let mut order: Vec<(usize, &pipec::mag::Entry)> = t.entries.iter().enumerate().collect();
    // Highest priority first; at one priority the earlier entry, as the interpreter picks.
    order.sort_by(|(ia, a), (ib, b)| b.priority.cmp(&a.priority).then(ia.cmp(ib)));
    let mut rules: Vec<Rule> = Vec::new();
    for (i, e) in order {
        match entry_endpoint(t, e) {
            Some(Some(x)) if x == ep => {}
            Some(None) => {}
            _ => continue,
        }
        let Some(m) = matches(t, e, identity) else {
            continue;
        };
        let site = format!("{name} entry {i}");
        let verdict = match decision(mag, &e.action, &site)? {
            Decision::Allow => allow,
            Decision::Deny => "drop",
            Decision::Pass => "return",
        };
        let why = e
            .provenance
            .first()
            .and_then(|p| mag.provenance.get_index(p.0 as usize))
            .map(|p| p.to_string())
            .unwrap_or_default();
        let rule = Rule {
            matches: m,
            verdict,
            why: vec![why],
        };
        let absorbed = rules.last_mut().is_some_and(|last| last.absorb(&rule));
        if !absorbed {
            rules.push(rule);
        }
    }
    let mut out: Vec<String> = rules.iter().map(Rule::render).collect();
    out.push(format!("drop comment \"{name}: default deny\""));
    Ok(out)
}

/// What a Service frontend does with a new connection.
#[derive(Debug)]
enum Balance {
    /// No backend at all (`lb_no_backend`): drop.
    Drop,
    /// Pick `slots[jhash(hash) mod modulo]`; an empty slot drops.
    Maglev {
        /// The nft expressions of the MAG's hash fields for this family, concatenated.
        hash: String,
        modulo: u128,
        /// Maglev slot to (backend address, backend port).
        slots: BTreeMap<u128, (u128, u16)>,
    },
}

/// One row of `service_lb`, decoded.
#[derive(Debug)]
struct Frontend {
    /// 32 (IPv4) or 128 (IPv6).
    width: u8,
    addr: u128,
    proto: u8,
    port: u16,
    balance: Balance,
    why: String,
}

fn exact(m: &FieldMatch) -> Option<u128> {
    match norm(*m) {
        FieldMatch::Exact(v) => Some(v),
        FieldMatch::Ternary { value, mask } if mask.count_ones() >= 16 => Some(value & mask),
        _ => None,
    }
}

/// The nft expression of a field the MAG hashes, for one family (`None`: the field is of
/// the other family, and hashes as nothing here).
fn hash_expr(field: &str, width: u8) -> Result<Option<&'static str>, Unsupported> {
    Ok(match (field, width) {
        ("ipv4.src", 32) => Some("ip saddr"),
        ("ipv6.src", 128) => Some("ip6 saddr"),
        ("ipv4.dst", 32) => Some("ip daddr"),
        ("ipv6.dst", 128) => Some("ip6 daddr"),
        ("ipv4.src" | "ipv4.dst", _) | ("ipv6.src" | "ipv6.dst", _) => None,
        ("l4.sport", _) => Some("th sport"),
        ("l4.dport", _) => Some("th dport"),
        ("ip.proto", _) => Some("meta l4proto"),
        (other, _) => return Err(refuse(pt::SERVICE_LB, format!("a hash over {other}"))),
    })
}

/// Decodes the node's Service frontends from `service_lb` and `lb_backend`, sorted by
/// (family, address, protocol, port).
fn frontends(mag: &Mag) -> Result<Vec<Frontend>, Unsupported> {
    let lb = table(mag, pt::SERVICE_LB)?;
    let be = table(mag, pt::LB_BACKEND)?;
    let col = |t: &Table, f: &str| t.key.iter().position(|k| k.field.name() == f);
    if let Some(i) = col(lb, "meta.endpoint") {
        if lb
            .entries
            .iter()
            .any(|e| norm(e.matches[i]) != FieldMatch::Any)
        {
            return Err(Unsupported::new(
                TARGET,
                Reason::Feature {
                    feature: "Service traffic policies Local (frontends that tell pods and the wire apart)".into(),
                },
            ));
        }
    }
    let missing = |f: &str| refuse(pt::SERVICE_LB, format!("no {f} in the key"));
    let (eth, v4, v6, proto, dport) = (
        col(lb, "eth.type").ok_or_else(|| missing("eth.type"))?,
        col(lb, "ipv4.dst").ok_or_else(|| missing("ipv4.dst"))?,
        col(lb, "ipv6.dst").ok_or_else(|| missing("ipv6.dst"))?,
        col(lb, "ip.proto").ok_or_else(|| missing("ip.proto"))?,
        col(lb, "l4.dport").ok_or_else(|| missing("l4.dport"))?,
    );
    let (bsvc, bslot) = (
        col(be, "meta.service").ok_or_else(|| refuse(pt::LB_BACKEND, "no service in the key"))?,
        col(be, "meta.hash").ok_or_else(|| refuse(pt::LB_BACKEND, "no hash in the key"))?,
    );
    // Maglev slots per MAG service id.
    let mut slots: BTreeMap<u128, BTreeMap<u128, (u8, u128, u16)>> = BTreeMap::new();
    for (i, e) in be.entries.iter().enumerate() {
        let site = format!("{} entry {i}", pt::LB_BACKEND);
        let (Some(svc), Some(slot)) = (exact(&e.matches[bsvc]), exact(&e.matches[bslot])) else {
            return Err(refuse(
                &site,
                "a slot that is not one service and one hash value",
            ));
        };
        let (width, addr) = match (
            sets(mag, &e.action, "ipv4.dst"),
            sets(mag, &e.action, "ipv6.dst"),
        ) {
            (Some(a), _) => (32, a),
            (None, Some(a)) => (128, a),
            (None, None) => return Err(refuse(&site, "the action translates no address")),
        };
        let port = sets(mag, &e.action, "l4.dport")
            .ok_or_else(|| refuse(&site, "the action translates no port"))?;
        slots
            .entry(svc)
            .or_default()
            .insert(slot, (width, addr, port as u16));
    }
    let mut out: Vec<Frontend> = Vec::new();
    for (i, e) in lb.entries.iter().enumerate() {
        let site = format!("{} entry {i}", pt::SERVICE_LB);
        let (width, addr) = match exact(&e.matches[eth]) {
            Some(0x0800) => (32, exact(&e.matches[v4])),
            Some(0x86dd) => (128, exact(&e.matches[v6])),
            _ => return Err(refuse(&site, "a frontend without an IP ethertype")),
        };
        let (Some(addr), Some(proto), Some(port)) =
            (addr, exact(&e.matches[proto]), exact(&e.matches[dport]))
        else {
            return Err(refuse(
                &site,
                "a frontend that is not one address, protocol and port",
            ));
        };
        let balance = if drops(mag, &e.action) {
            Balance::Drop
        } else {
            let def = mag
                .action(e.action.action)
                .ok_or_else(|| refuse(&site, "an unknown action"))?;
            let svc = sets(mag, &e.action, "meta.service")
                .ok_or_else(|| refuse(&site, "the action selects no service"))?;
            let (fields, modulo) = def
                .ops
                .iter()
                .find_map(|op| match op {
                    Op::Hash { fields, modulo, .. } => Some((fields, *modulo)),
                    _ => None,
                })
                .ok_or_else(|| refuse(&site, "the action hashes nothing"))?;
            let modulo = match modulo {
                Operand::Param(p) => e.action.args.get(usize::from(p)).copied(),
                Operand::Const(v) => Some(v),
            }
            .filter(|m| (1..=1 << 20).contains(m))
            .ok_or_else(|| refuse(&site, "a Maglev table size out of range"))?;
            let mut hash = Vec::new();
            for f in fields {
                if let Some(x) = hash_expr(f.name(), width)? {
                    hash.push(x);
                }
            }
            let mut own = BTreeMap::new();
            for (slot, (w, a, p)) in slots.get(&svc).into_iter().flatten() {
                if *w != width {
                    return Err(refuse(&site, "a backend of the other family"));
                }
                own.insert(*slot, (*a, *p));
            }
            Balance::Maglev {
                hash: hash.join(" . "),
                modulo,
                slots: own,
            }
        };
        let why = e
            .provenance
            .first()
            .and_then(|p| mag.provenance.get_index(p.0 as usize))
            .map(|p| p.to_string())
            .unwrap_or_default();
        out.push(Frontend {
            width,
            addr,
            proto: proto as u8,
            port: port as u16,
            balance,
            why,
        });
    }
    out.sort_by_key(|f| (f.width, f.addr, f.proto, f.port));
    if let Some(w) = out.windows(2).find(|w| {
        (w[0].width, w[0].addr, w[0].proto, w[0].port)
            == (w[1].width, w[1].addr, w[1].proto, w[1].port)
    }) {
        // The MAG would pick one of two rows by priority; a verdict map has one element
        // per key.
        return Err(refuse(
            pt::SERVICE_LB,
            format!(
                "two rows for the frontend {} {}",
                addr(w[0].width, w[0].addr),
                w[0].port
            ),
        ));
    }
    Ok(out)
}

/// The `nat` part: the frontend maps, the prerouting chain, one chain per frontend.
/// Nothing when the node has no Services.
fn render_services(s: &mut String, frontends: &[Frontend]) {
    if frontends.is_empty() {
        return;
    }
    for (fam, ty, w) in [("4", "ipv4_addr", 32u8), ("6", "ipv6_addr", 128)] {
        let elems: Vec<String> = frontends
            .iter()
            .enumerate()
            .filter(|(_, f)| f.width == w)
            .map(|(i, f)| {
                format!(
                    "{} . {} . {} : jump svc_{i}",
                    addr(w, f.addr),
                    f.proto,
                    f.port
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "\tmap svc{fam} {{\n\t\ttype {ty} . inet_proto . inet_service : verdict"
        );
        if !elems.is_empty() {
            let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(", "));
        }
        let _ = writeln!(s, "\t}}");
    }
    for (i, f) in frontends.iter().enumerate() {
        let _ = writeln!(s, "\tchain svc_{i} {{");
        if let Balance::Maglev {
            hash,
            modulo,
            slots,
        } = &f.balance
        {
            if !slots.is_empty() {
                let family = if f.width == 32 { "ip" } else { "ip6" };
                let elems: Vec<String> = slots
                    .iter()
                    .map(|(slot, (a, p))| format!("{slot} : {} . {p}", addr(f.width, *a)))
                    .collect();
                let _ = writeln!(
                    s,
                    "\t\tmeta l4proto {} dnat {family} addr . port to jhash {hash} mod {modulo} map {{ {} }} comment \"{}\"",
                    f.proto,
                    elems.join(", "),
                    comment(&f.why)
                );
            }
        }
        let _ = writeln!(
            s,
            "\t\tdrop comment \"{}\"",
            comment(&format!("{}: no backend", f.why))
        );
        let _ = writeln!(s, "\t}}");
    }
    let _ = writeln!(
        s,
        "\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tip daddr . meta l4proto . th dport vmap @svc4\n\t\tip6 daddr . meta l4proto . th dport vmap @svc6\n\t}}"
    );
}

/// Renders the node's pipeline (Services and policy) as the `nft -f` script that replaces
/// the table.
pub fn render(mag: &Mag) -> Result<NftArtifact, Unsupported> {
    render_with(mag, true)
}

/// Renders the node's policy alone, whatever its Services: for a node whose Services are
/// translated elsewhere (kube-proxy, say).
pub fn render_policy(mag: &Mag) -> Result<NftArtifact, Unsupported> {
    render_with(mag, false)
}

fn render_with(mag: &Mag, with_services: bool) -> Result<NftArtifact, Unsupported> {
    let frontends = if with_services {
        frontends(mag)?
    } else {
        Vec::new()
    };
    let src = ipcache(mag, pt::SRC_IPCACHE, "src")?;
    let dst = ipcache(mag, pt::DST_IPCACHE, "dst")?;
    let eps = endpoints(mag)?;
    let mut s = String::new();
    // Add, delete and define in one batch: one atomic transaction, whether or not the
    // table existed before.
    let _ = writeln!(
        s,
        "add table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{"
    );
    for (name, fam, ty, ranges) in [
        ("src4", 32u8, "ipv4_addr", &src.v4),
        ("dst4", 32, "ipv4_addr", &dst.v4),
        ("src6", 128, "ipv6_addr", &src.v6),
        ("dst6", 128, "ipv6_addr", &dst.v6),
    ] {
        let _ = writeln!(
            s,
            "\tmap {name} {{\n\t\ttype {ty} : mark\n\t\tflags interval\n\t\telements = {{ {} }}\n\t}}",
            map_elements(fam, ranges)
        );
    }
    for dir in ["egress", "ingress"] {
        for (fam, ty, w) in [("4", "ipv4_addr", 32u8), ("6", "ipv6_addr", 128)] {
            let elems: Vec<String> = eps
                .iter()
                .flat_map(|(ep, addrs)| {
                    addrs
                        .iter()
                        .filter(|(width, _)| *width == w)
                        .map(move |(_, a)| format!("{} : jump {dir}_{ep}", addr(w, *a)))
                })
                .collect();
            let _ = writeln!(s, "\tmap {dir}{fam} {{\n\t\ttype {ty} : verdict");
            if !elems.is_empty() {
                let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(", "));
            }
            let _ = writeln!(s, "\t}}");
        }
    }
    for &ep in eps.keys() {
        for (dir, name, identity, allow, remote) in [
            (
                "egress",
                pt::EGRESS_POLICY,
                "meta.dst_identity",
                "return",
                "daddr",
            ),
            (
                "ingress",
                pt::INGRESS_POLICY,
                "meta.src_identity",
                "accept",
                "saddr",
            ),
        ] {
            let m = if dir == "egress" { "dst" } else { "src" };
            let _ = writeln!(s, "\tchain {dir}_{ep} {{");
            let _ = writeln!(
                s,
                "\t\tmeta nfproto ipv4 meta mark set ip {remote} map @{m}4"
            );
            let _ = writeln!(
                s,
                "\t\tmeta nfproto ipv6 meta mark set ip6 {remote} map @{m}6"
            );
            for r in chain_rules(mag, name, ep, identity, allow)? {
                let _ = writeln!(s, "\t\t{r}");
            }
            let _ = writeln!(s, "\t}}");
        }
    }
    render_services(&mut s, &frontends);
    let _ = writeln!(
        s,
        "\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tct state established,related accept\n\t\tip saddr vmap @egress4\n\t\tip6 saddr vmap @egress6\n\t\tip daddr vmap @ingress4\n\t\tip6 daddr vmap @ingress6\n\t}}\n}}"
    );
    let endpoints = eps
        .into_iter()
        .map(|(ep, addrs)| (ep, addrs.into_iter().map(|(w, a)| addr(w, a)).collect()))
        .collect();
    Ok(NftArtifact {
        script: s,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_fit_nftables() {
        assert_eq!(comment("a \"b\" \\ c\n"), "a 'b' ' c'");
        let long = "é".repeat(100);
        let c = comment(&long);
        assert!(c.len() <= 128 && c.ends_with("..."), "{c}");
    }

    #[test]
    fn unions_merge_only_overlaps() {
        let a = Val::one(80, 80);
        let b = Val::one(81, 90);
        let c = Val::one(85, 100);
        let u = a.union(&b).and_then(|u| u.union(&c)).expect("sets");
        assert_eq!(u, Val::Set(vec![(80, 80), (81, 100)]));
        assert_eq!(u.render("th dport"), "th dport { 80, 81-100 }");
        let masked = Val::Masked { value: 1, mask: 5 };
        assert_eq!(a.union(&masked), None);
    }
}
