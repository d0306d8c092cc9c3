//! `.pipe` policies → admin-tier policies of the model.
//!
//! policy-lang resolves `.pipe` files on its own (names, selectors, CIDRs, ports); this
//! module only translates its resolved form into [`AdminPolicy`] values, so that `.pipe`
//! policies rank with AdminNetworkPolicies by priority and go through the same semantics
//! and lowering. Provenance points at the `.pipe` text itself: each rule keeps its span.
//!
//! The other `.pipe` statements that reach a later stage are converted here as well, so
//! that the backend API and the partitioner know nothing of policy-lang: `target` blocks
//! become backend [`Profile`]s ([`target_profile`]) and placement statements become the
//! partitioner's [`PlacementHint`]s ([`placement_hints`]).

use super::*;
use crate::backend::{builtin_profiles, ActionKind, FieldCap, MaskCap, Profile};
use crate::partition::hints::{self, PlacementHint};
use crate::source::{FieldPath, Sources};
use policy_lang::resolved as pl;
use std::collections::BTreeMap;

/// Translates every policy of a resolved program. The program's spans point into the run's
/// [`Sources`], which policy-lang resolved it from, so rules keep them as they are.
pub fn program_to_admin_policies(program: &pl::Program) -> Vec<AdminPolicy> {
    program.policies.iter().map(policy).collect()
}

fn policy(p: &pl::Policy) -> AdminPolicy {
    let origin = Origin {
        kind: "PipePolicy".into(),
        namespace: None,
        name: p.name.clone(),
        span: Some(p.span),
    };
    let mut ingress = Vec::new();
    let mut egress = Vec::new();
    for r in &p.rules {
        let (list, section) = match r.direction {
            pl::Direction::Ingress => (&mut ingress, "ingress"),
            pl::Direction::Egress => (&mut egress, "egress"),
        };
        let rule = RuleRef {
            origin: origin.clone(),
            section: section.to_string(),
            index: list.len(),
            name: (!r.name.is_empty()).then(|| r.name.clone()),
            path: FieldPath::default(),
            span: Some(r.span),
        };
        list.push(AdminRule {
            action: action(r.action),
            peers: r.peers.iter().filter_map(peer).collect(),
            ports: ports(&r.ports),
            rule,
        });
    }
    AdminPolicy {
        name: p.name.clone(),
        tier: AdminTier::Admin,
        priority: p.priority,
        subject: subject(&p.subject),
        ingress,
        egress,
        origin,
    }
}

fn action(a: pl::Action) -> AdminAction {
    match a {
        pl::Action::Allow => AdminAction::Allow,
        pl::Action::Deny => AdminAction::Deny,
        pl::Action::Pass => AdminAction::Pass,
        pl::Action::Log => AdminAction::Log,
        pl::Action::Redirect => AdminAction::Redirect,
    }
}

fn selector(s: &pl::Selector) -> Selector {
    Selector {
        match_labels: s.match_labels.clone(),
        expressions: s
            .expressions
            .iter()
            .map(|r| Requirement {
                key: r.key.clone(),
                operator: match r.op {
                    pl::SelectorOp::In => Operator::In,
                    pl::SelectorOp::NotIn => Operator::NotIn,
                    pl::SelectorOp::Exists => Operator::Exists,
                    pl::SelectorOp::DoesNotExist => Operator::DoesNotExist,
                },
                values: r.values.iter().cloned().collect(),
            })
            .collect(),
    }
}

fn subject(s: &pl::Subject) -> AdminSubject {
    match &s.pods {
        None => AdminSubject::Namespaces(selector(&s.namespaces)),
        Some(pods) => AdminSubject::Pods {
            namespaces: selector(&s.namespaces),
            pods: selector(pods),
        },
    }
}

/// Entities were checked by the resolver against the same names, so an unknown one cannot
/// reach here; it is dropped rather than trusted if it ever does.
fn peer(p: &pl::Peer) -> Option<AdminPeer> {
    Some(match p {
        pl::Peer::Pods { namespaces, pods } => AdminPeer::Pods {
            namespaces: selector(namespaces),
            pods: selector(pods),
        },
        pl::Peer::Namespaces(ns) => AdminPeer::Namespaces(selector(ns)),
        pl::Peer::Cidr { cidr, except } => AdminPeer::Networks(vec![CidrPeer {
            cidr: *cidr,
            except: except.clone(),
        }]),
        pl::Peer::Entity(name) => AdminPeer::Entity(Entity::parse(name)?),
        pl::Peer::Service { namespace, name } => AdminPeer::Service {
            namespace: namespace.clone(),
            name: name.clone(),
        },
    })
}

/// An empty list means every port and protocol. `any` protocol stands for TCP, UDP and
/// SCTP, and "all ports" of a protocol for its whole range, so neither matches ICMP, just
/// as a port rule of an AdminNetworkPolicy does not.
fn ports(specs: &[pl::PortSpec]) -> Option<Vec<AdminPort>> {
    if specs.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for spec in specs {
        let protocols: &[Protocol] = match spec.protocol {
            pl::Protocol::Tcp => &[Protocol::Tcp],
            pl::Protocol::Udp => &[Protocol::Udp],
            pl::Protocol::Sctp => &[Protocol::Sctp],
            pl::Protocol::Any => &[Protocol::Tcp, Protocol::Udp, Protocol::Sctp],
        };
        match &spec.ports {
            pl::Ports::Named(name) => out.push(AdminPort::Named(name.clone())),
            pl::Ports::Number(n) => out.extend(
                protocols
                    .iter()
                    .map(|&protocol| AdminPort::Number { protocol, port: *n }),
            ),
            pl::Ports::Range(a, b) => {
                out.extend(protocols.iter().map(|&protocol| AdminPort::Range {
                    protocol,
                    start: *a,
                    end: *b,
                }))
            }
            pl::Ports::All => out.extend(protocols.iter().map(|&protocol| AdminPort::Range {
                protocol,
                start: 1,
                end: 65535,
            })),
        }
    }
    Some(out)
}

/// Diagnostics for admin-tier policies that share a priority. The AdminNetworkPolicy API
/// leaves the order of two policies at one priority undefined (the API server accepts
/// them), so pipec would decide by name: a warning for two AdminNetworkPolicies, and an
/// error when a `.pipe` policy is one of the two, since `.pipe` is pipec's own language and
/// can demand an order. `policies` must be sorted by (tier, priority, name).
pub fn priority_clashes(
    policies: &[AdminPolicy],
    sources: &Sources,
) -> Vec<crate::diag::Diagnostic> {
    use crate::diag::{Code, Diagnostic};
    let admin: Vec<&AdminPolicy> = policies
        .iter()
        .filter(|p| p.tier == AdminTier::Admin)
        .collect();
    let mut out = Vec::new();
    for pair in admin.windows(2) {
        let (first, second) = (pair[0], pair[1]);
        if first.priority != second.priority {
            continue;
        }
        let pipe = first.origin.kind == "PipePolicy" || second.origin.kind == "PipePolicy";
        let message = format!(
            "{} and {} both have priority {}",
            first.origin.display_name(),
            second.origin.display_name(),
            second.priority
        );
        let mut d = if pipe {
            Diagnostic::error(Code::PipePriorityClash, message)
                .hint("give the `.pipe` policy a priority no other admin policy has")
        } else {
            Diagnostic::warning(Code::SamePriority, message)
                .hint("the API leaves their order undefined; pipec evaluates them in name order. Give each policy its own priority")
        };
        if let Some(span) = priority_span(second, sources) {
            d = d.at(span, "this priority");
        }
        if let Some(span) = priority_span(first, sources) {
            d = d.also(span, "the same priority");
        }
        out.push(d);
    }
    out
}

/// The place of a policy's priority: the `spec.priority` field of an object, the whole
/// policy of a `.pipe` file.
fn priority_span(p: &AdminPolicy, sources: &Sources) -> Option<Span> {
    let span = p.origin.span?;
    if p.origin.kind == "PipePolicy" {
        return Some(span);
    }
    Some(sources.locate(span, &FieldPath::parse("spec.priority")))
}

/// The placement statements of `program` (`exclude`, `pin`, `prefer`, `reserve`), in
/// their order, as the partitioner's hints.
pub fn placement_hints(program: &pl::Program) -> Vec<PlacementHint> {
    program
        .placements
        .iter()
        .map(|p| PlacementHint {
            subject: match &p.subject {
                pl::PlaceSubject::Policy(name) => hints::Subject::Policy(name.clone()),
                pl::PlaceSubject::Service { namespace, name } => hints::Subject::Service {
                    namespace: namespace.clone(),
                    name: name.clone(),
                },
                pl::PlaceSubject::Table(name) => hints::Subject::Table(name.clone()),
            },
            hint: match &p.hint {
                pl::Hint::Pin { target } => hints::Hint::Pin {
                    target: target.clone(),
                },
                pl::Hint::Prefer { target } => hints::Hint::Prefer {
                    target: target.clone(),
                },
                pl::Hint::Reserve {
                    target,
                    resource,
                    amount,
                } => hints::Hint::Reserve {
                    target: target.clone(),
                    resource: match resource {
                        pl::Resource::Entries => hints::Resource::Entries,
                        pl::Resource::Counters => hints::Resource::Counters,
                        pl::Resource::Sas => hints::Resource::Sas,
                    },
                    amount: *amount,
                },
                pl::Hint::ExcludeFromHardware => hints::Hint::ExcludeFromHardware,
            },
        })
        .collect()
}

/// The hardware action class of a `.pipe` action name (`None`: no action class of its own,
/// as `allow`, which is the absence of a drop).
fn pipe_action(name: &str) -> Option<ActionKind> {
    Some(match name {
        "drop" => ActionKind::Drop,
        "count" => ActionKind::Count,
        "mark" => ActionKind::Mark,
        "queue" => ActionKind::Queue,
        "rss" => ActionKind::Rss,
        "encrypt" | "decrypt" => ActionKind::Security,
        "vlan_push" => ActionKind::PushVlan,
        "vlan_pop" => ActionKind::PopVlan,
        "jump" => ActionKind::Jump,
        "dnat" | "snat" => ActionKind::Rewrite,
        "redirect" => ActionKind::Queue,
        _ => return None,
    })
}

fn pipe_mask(m: policy_lang::targets::MaskKind) -> MaskCap {
    match m {
        policy_lang::targets::MaskKind::Exact => MaskCap::Exact,
        policy_lang::targets::MaskKind::Prefix => MaskCap::Prefix,
        policy_lang::targets::MaskKind::Any => MaskCap::Any,
    }
}

fn pipe_limit(l: policy_lang::targets::Limit) -> Option<u64> {
    match l {
        policy_lang::targets::Limit::Finite(n) => Some(u64::from(n)),
        policy_lang::targets::Limit::Unlimited => None,
    }
}

fn pipe_levels(l: policy_lang::targets::Limit) -> u32 {
    match l {
        policy_lang::targets::Limit::Finite(n) => n,
        policy_lang::targets::Limit::Unlimited => u32::MAX,
    }
}

/// The backend profile of a `.pipe` `target` block. `targets` is every target the program
/// knows (`resolved::Program::targets`: presets and blocks), used to follow `extends`.
///
/// A block that extends a preset pipec has built in (`octeon-cn10k`, `ebpf`) starts
/// from pipec's profile, which knows the device better than the preset table does
/// (protocol values, reserved entries, MARK width), and applies only what the block
/// changed relative to the preset: fields added, removed or re-masked, actions added
/// or removed, levels, entries and counters. A block from scratch starts from
/// [`Profile::default`], which can do nothing, and gets exactly what it declares (a
/// 16-bit MARK when it declares `mark`). `range` among its match kinds makes every
/// field range-capable; without `ternary`, masks shrink to what `lpm`/`exact` allow.
pub fn target_profile(
    tp: &policy_lang::targets::TargetProfile,
    targets: &BTreeMap<String, policy_lang::targets::TargetProfile>,
) -> Profile {
    target_profile_depth(tp, targets, 0)
}

fn target_profile_depth(
    tp: &policy_lang::targets::TargetProfile,
    targets: &BTreeMap<String, policy_lang::targets::TargetProfile>,
    depth: u32,
) -> Profile {
    use policy_lang::targets::{MatchKind, TargetProfile};
    if tp.builtin {
        if let Some(p) = builtin_profiles().into_iter().find(|p| p.name == tp.name) {
            return p;
        }
    }
    // The parent: a built-in or another block (resolve rejects cycles; the depth
    // bound is a second guard).
    let parent: Option<(TargetProfile, Profile)> = tp.extends.as_ref().and_then(|name| {
        let ptp = targets
            .get(name)
            .cloned()
            .or_else(|| policy_lang::targets::preset(name).map(TargetProfile::from_preset))?;
        (depth < 16).then(|| {
            let p = target_profile_depth(&ptp, targets, depth + 1);
            (ptp, p)
        })
    });
    let (base_tp, mut p) = match parent {
        Some((ptp, p)) => (ptp, p),
        None => (TargetProfile::empty(&tp.name), Profile::default()),
    };
    p.name = tp.name.clone();
    p.description = match &tp.extends {
        Some(e) => format!("`.pipe` target extending {e}"),
        None => "`.pipe` target".to_string(),
    };
    // Fields: removed, added or re-masked relative to the parent.
    for f in base_tp.fields.keys() {
        if !tp.fields.contains_key(f) {
            p.caps.fields.remove(f);
        }
    }
    let ternary = tp.kinds.contains(&MatchKind::Ternary);
    let lpm = tp.kinds.contains(&MatchKind::Lpm);
    for (f, m) in &tp.fields {
        if base_tp.fields.get(f) == Some(m) {
            continue;
        }
        let mut masks = pipe_mask(*m);
        if !ternary && masks == MaskCap::Any {
            masks = if lpm { MaskCap::Prefix } else { MaskCap::Exact };
        }
        if !ternary && !lpm {
            masks = MaskCap::Exact;
        }
        p.caps.fields.insert(
            f.clone(),
            FieldCap {
                masks,
                values: None,
                ranges: tp.kinds.contains(&MatchKind::Range),
            },
        );
    }
    // Actions, on ingress; egress keeps the parent's (a block cannot say).
    for a in base_tp.actions.difference(&tp.actions) {
        if let Some(k) = pipe_action(a) {
            let still = tp.actions.iter().any(|b| pipe_action(b) == Some(k));
            if !still {
                p.caps.ingress_actions.remove(&k);
                p.caps.egress_actions.remove(&k);
            }
        }
    }
    for a in tp.actions.difference(&base_tp.actions) {
        if let Some(k) = pipe_action(a) {
            p.caps.ingress_actions.insert(k);
        }
    }
    if p.caps.ingress_actions.contains(&ActionKind::Mark) && p.caps.mark_bits == 0 {
        p.caps.mark_bits = 16;
        p.caps.max_mark = 0xFFFD;
    }
    if tp.priority_levels != base_tp.priority_levels || tp.extends.is_none() {
        p.caps.priority_levels = pipe_levels(tp.priority_levels);
    }
    if tp.max_priority_levels != base_tp.max_priority_levels || tp.extends.is_none() {
        p.caps.max_priority_levels = pipe_levels(tp.max_priority_levels);
    }
    p.caps.max_priority_levels = p.caps.max_priority_levels.max(p.caps.priority_levels);
    if p.caps.tables == 0 {
        p.caps.tables = 1;
    }
    if tp.entries != base_tp.entries || tp.extends.is_none() {
        p.budget.entries = pipe_limit(tp.entries);
        // Reserved entries stay reserved out of a smaller table, but never all of it.
        if let Some(e) = p.budget.entries {
            p.budget.reserved_entries = p.budget.reserved_entries.min(e / 2);
            // So do the entries left to connection offload, at most half of the rest.
            let rest = e - p.budget.reserved_entries;
            p.budget.offload_entries = p.budget.offload_entries.min(rest / 2);
        }
    }
    if tp.counters != base_tp.counters || tp.extends.is_none() {
        p.budget.counters = pipe_limit(tp.counters);
    }
    p
}
