//! Step 1, capability: every MAG entry gets a first placement, and the ingress policy
//! entries that hardware could take are written as ternary [`HwRule`]s and checked
//! against the profile.
//!
//! Stages other than ingress policy stay in eBPF with a reason a network engineer
//! recognises (the flow table has no header rewrite, no connection state, no metadata).
//! Egress policy stays too: its entries apply to packets a pod sends, and one flow table
//! for every packet cannot tell a pod's own packets from packets that carry its address.

use super::prefixes::{port_range_to_ternary, IdentitySets};
use super::{entry_name, Placement, Why, MARK_ALLOW, MARK_REDIRECT};
use crate::backend::{Direction, HwAction, HwMatch, HwRule, PacketField, Profile};
use crate::mag::{ct, ActionId, EntryId, Field, FieldMatch, Mag, Op, TableId};
use std::collections::BTreeMap;

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
    /// The MAG key and matches, for overlap checks.
    pub key: Vec<(Field, FieldMatch)>,
    /// Candidates above it (higher priority, overlapping, another action).
    pub deps: Vec<usize>,
    /// Its priority level once placed.
    pub level: u32,
}

impl Candidate {
    /// The match on `f`, if the key has it.
    pub fn get(&self, f: Field) -> FieldMatch {
        self.key
            .iter()
            .find(|(k, _)| *k == f)
            .map_or(FieldMatch::Any, |(_, m)| *m)
    }

    fn fail(&mut self, why: Why) {
        self.ok = false;
        self.placement.target = "ebpf".to_string();
        self.placement.why = why;
    }

    /// Leaves the entry to eBPF for `why`, keeping the reasoning so far in the chain.
    pub fn leave(&mut self, why: Why) {
        self.fail(why);
    }
}

/// The reason a whole stage stays in eBPF.
fn stage_reason(table: &str) -> String {
    match table {
        "classify" => "needs the receiving port as metadata (no metadata match in hardware)",
        "anti_spoof" => "needs the sending pod as metadata (no metadata match in hardware)",
        "service_lb" | "lb_backend" => {
            "service load balancing rewrites headers (no NAT in hardware)"
        }
        "conntrack" => "connection tracking (no conntrack in hardware)",
        "src_ipcache" | "dst_ipcache" => {
            "identity lookup; hardware rules carry the addresses instead"
        }
        "egress_policy" => "egress rule: hardware cannot tell which pod sent a packet",
        "route" => "forwarding to pods and nodes stays in software",
        _ => "this stage is not offloaded",
    }
    .to_string()
}

/// Endpoint number → its IPv4 addresses, from the `route` table.
fn endpoint_addrs(mag: &Mag) -> BTreeMap<u128, Vec<u32>> {
    let mut out: BTreeMap<u128, Vec<u32>> = BTreeMap::new();
    let Some(t) = mag.table_by_name("route").and_then(|t| mag.table(t)) else {
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

/// Placements for every entry, and hardware rules for the ingress policy entries.
pub fn candidates(mag: &Mag, profile: &Profile) -> Vec<Candidate> {
    let ids = IdentitySets::from_mag(mag);
    let eps = endpoint_addrs(mag);
    let mut out = Vec::new();
    for t in mag.table_ids() {
        let Some(table) = mag.table(t) else { continue };
        for (i, e) in table.entries.iter().enumerate() {
            let eid = EntryId(i as u32);
            let prov = e.provenance.first().map(|p| p.0 as usize);
            let origin = prov
                .and_then(|p| mag.provenance.get_index(p))
                .map_or_else(String::new, |p| p.to_string());
            let key: Vec<(Field, FieldMatch)> = table
                .key
                .iter()
                .zip(e.matches.iter())
                .map(|(k, m)| (k.field, *m))
                .collect();
            let mut c = Candidate {
                placement: Placement {
                    entry: entry_name(t, eid),
                    table: table.name.clone(),
                    target: "ebpf".to_string(),
                    why: Why::Stage {
                        detail: stage_reason(&table.name),
                    },
                    chain: Vec::new(),
                    hw_rules: 0,
                    naive_rules: 0,
                    value: 0,
                    origin,
                    prov,
                },
                table: t,
                entry: eid,
                ok: false,
                rules: Vec::new(),
                kind: Kind::of(mag, e.action.action),
                priority: e.priority,
                key,
                deps: Vec::new(),
                level: 0,
            };
            if table.name == "ingress_policy" {
                c.ok = true;
                ingress_rules(&mut c, &ids, &eps, profile);
            }
            out.push(c);
        }
    }
    out
}

fn ingress_rules(
    c: &mut Candidate,
    ids: &IdentitySets,
    eps: &BTreeMap<u128, Vec<u32>>,
    profile: &Profile,
) {
    if !admits(&c.get(Field::CtState), ct::NEW, 8) {
        c.fail(Why::Stage {
            detail: "matches packets of known connections (no conntrack in hardware)".into(),
        });
        return;
    }
    let ep = match c.get(Field::Endpoint) {
        FieldMatch::Exact(v) => v,
        FieldMatch::Ternary { value, mask } if mask == u128::from(u32::MAX) => value,
        _ => {
            c.fail(Why::NotCapable {
                detail: "it applies to every local pod".into(),
            });
            return;
        }
    };
    let Some(dsts) = eps.get(&ep) else {
        c.fail(Why::NothingToMatch {
            detail: "the pod has no IPv4 address (IPv6 is not in the hardware key)".into(),
        });
        return;
    };
    let (srcs, naive_src): (Vec<Option<(u32, u8)>>, u64) = match c.get(Field::SrcIdentity) {
        FieldMatch::Any => (vec![None], 1),
        FieldMatch::Exact(id)
        | FieldMatch::Ternary {
            value: id,
            mask: 0xffff_ffff,
        } => match ids.v4.get(&id) {
            Some(p) if !p.is_empty() => (
                p.iter().map(|p| Some(*p)).collect(),
                ids.naive.get(&id).copied().unwrap_or(1),
            ),
            _ => {
                c.fail(Why::NothingToMatch {
                    detail: format!("identity {id} has no IPv4 address"),
                });
                return;
            }
        },
        _ => {
            c.fail(Why::NotCapable {
                detail: "a partial identity match".into(),
            });
            return;
        }
    };
    let proto = match c.get(Field::IpProto) {
        FieldMatch::Any => None,
        FieldMatch::Exact(p) => Some(p),
        FieldMatch::Ternary { value, mask: 0xff } => Some(value),
        _ => {
            c.fail(Why::NotCapable {
                detail: "a partial protocol match".into(),
            });
            return;
        }
    };
    let ports: Vec<Option<(u16, u16)>> = match c.get(Field::L4Dport) {
        FieldMatch::Any => vec![None],
        FieldMatch::Exact(p) => vec![Some((p as u16, 0xffff))],
        FieldMatch::Ternary { value, mask } => vec![Some((value as u16, mask as u16))],
        FieldMatch::Prefix { value, len } => {
            vec![Some((
                value as u16,
                (0xffffu32 << (16 - u32::from(len))) as u16,
            ))]
        }
        FieldMatch::Range { lo, hi } => port_range_to_ternary(lo as u16, hi as u16)
            .into_iter()
            .map(Some)
            .collect(),
    };
    let has_ports = matches!(proto, Some(6 | 17 | 132));
    if ports.iter().any(Option::is_some) && !has_ports {
        // For other protocols the MAG's port is 0 and the packet has no port header, so
        // a hardware port match would mean something else.
        c.fail(Why::NotCapable {
            detail: "a port match without TCP, UDP or SCTP".into(),
        });
        return;
    }
    let mut rules = Vec::new();
    for d in dsts {
        for s in &srcs {
            for p in &ports {
                let mut matches = Vec::new();
                if let Some((v, len)) = s {
                    matches.push(HwMatch::prefix(
                        PacketField::Ipv4Src,
                        u128::from(*v),
                        u32::from(*len),
                    ));
                }
                matches.push(HwMatch::exact(PacketField::Ipv4Dst, u128::from(*d)));
                if let Some(proto) = proto {
                    matches.push(HwMatch::exact(PacketField::IpProto, proto));
                }
                if let Some((v, m)) = p {
                    matches.push(HwMatch::ternary(
                        PacketField::L4Dport,
                        u128::from(*v),
                        u128::from(*m),
                    ));
                }
                matches.retain(|m| m.mask != 0);
                matches.sort();
                rules.push(HwRule {
                    id: 0,
                    port: 0,
                    direction: Direction::Ingress,
                    level: 0,
                    matches,
                    actions: c.kind.actions(),
                    origin: c.placement.entry.clone(),
                });
            }
        }
    }
    for r in &rules {
        if let Err(e) = profile.check_rule(r) {
            c.fail(Why::NotCapable {
                detail: e.reason.to_string(),
            });
            return;
        }
    }
    c.placement.naive_rules = naive_src * dsts.len() as u64 * ports.len() as u64;
    c.placement.hw_rules = rules.len() as u64;
    // Value: drops decide in hardware and come first; then the address space covered per
    // hardware rule (bits of wildcard, summed).
    let covered: u64 = rules
        .iter()
        .map(|r| {
            r.matches
                .iter()
                .map(|m| u64::from(m.field.width() - m.mask.count_ones()))
                .sum::<u64>()
                + 1
        })
        .sum();
    let drop_bonus = if c.kind == Kind::Drop { 1 << 40 } else { 0 };
    c.placement.value = drop_bonus + covered * 1000 / rules.len().max(1) as u64;
    c.placement
        .chain
        .push(format!("capable: {} hardware rule(s)", rules.len()));
    c.rules = rules;
}
