//! `.pipe` policies → admin-tier policies of the model.
//!
//! policy-lang resolves `.pipe` files on its own (names, selectors, CIDRs, ports); this
//! module only translates its resolved form into [`AdminPolicy`] values, so that `.pipe`
//! policies rank with AdminNetworkPolicies by priority and go through the same semantics
//! and lowering. Provenance points at the `.pipe` text itself: each rule keeps its span.

use super::*;
use crate::source::{FieldPath, Sources};
use policy_lang::resolved as pl;

/// Translates every policy of a resolved program. `files` is the program's source set, and
/// `sources` must hold the same files under the same names (the driver adds them).
pub fn program_to_admin_policies(
    program: &pl::Program,
    files: &policy_lang::SourceSet,
    sources: &Sources,
) -> Vec<AdminPolicy> {
    program
        .policies
        .iter()
        .map(|p| policy(p, files, sources))
        .collect()
}

fn span(s: policy_lang::Span, files: &policy_lang::SourceSet, sources: &Sources) -> Option<Span> {
    let file = sources.find(files.name(s.file))?;
    Some(Span::new(file, s.range()))
}

fn policy(p: &pl::Policy, files: &policy_lang::SourceSet, sources: &Sources) -> AdminPolicy {
    let origin = Origin {
        kind: "PipePolicy".into(),
        namespace: None,
        name: p.name.clone(),
        span: span(p.span, files, sources),
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
            span: span(r.span, files, sources),
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
