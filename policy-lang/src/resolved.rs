//! The resolved program: what the compiler consumes.
//!
//! Everything here is checked: names exist, selectors are valid label selectors, CIDRs
//! are parsed and normalised, ports are in range, and target profiles are merged with
//! their presets. Policies live in the admin tier beside AdminNetworkPolicies: a lower
//! `priority` goes first, and within a policy the first matching rule decides.
//!
//! All maps are ordered (`BTreeMap`) so that every dump of this form is deterministic.

use crate::diagnostics::Diagnostic;
use crate::span::Span;
use crate::targets::TargetProfile;
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeMap;

/// A resolved program: every policy, target and placement hint of the root files and
/// their includes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Program {
    /// The policies, ordered by priority, then name.
    pub policies: Vec<Policy>,
    /// Every known target (presets first, then `target` blocks by name).
    pub targets: BTreeMap<String, TargetProfile>,
    /// The placement hints, in source order.
    pub placements: Vec<Placement>,
    /// Warnings found while resolving (the program is still valid).
    #[serde(skip)]
    pub warnings: Vec<Diagnostic>,
}

/// Where something was written, for `trace` and `explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The file name, as given to the [`crate::SourceSet`].
    pub file: String,
    /// The line, from 1.
    pub line: u32,
}

/// An admin-tier policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Its name (unique in the program).
    pub name: String,
    /// Its priority, 0 to 1000; lower goes first.
    pub priority: u32,
    /// The whole `policy` block.
    pub span: Span,
    /// Where it was written.
    pub origin: Origin,
    /// The pods it applies to.
    pub subject: Subject,
    /// Its rules, in order (the first match decides).
    pub rules: Vec<Rule>,
}

/// The pods a policy applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subject {
    /// The namespaces (an empty selector selects all).
    pub namespaces: Selector,
    /// The pods in them; `None` means every pod.
    pub pods: Option<Selector>,
}

/// The direction of a rule: the syntax tree's, since resolving does not change what it means.
pub use crate::ast::Direction;

/// What a rule does with the traffic it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Action {
    /// Allow it, skipping lower tiers.
    Allow,
    /// Drop it.
    Deny,
    /// Stop evaluating the admin tier; NetworkPolicies decide.
    Pass,
    /// Log it and go on to the next rule.
    Log,
    /// Allow it at L4 and send it to the L7 proxy.
    Redirect,
}

/// A rule of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Its name (written, or `rule-N` with N counted from 1 in the policy).
    pub name: String,
    /// Ingress or egress.
    pub direction: Direction,
    /// What it does.
    pub action: Action,
    /// Its peers (at least one; any of them matches).
    pub peers: Vec<Peer>,
    /// Its ports (empty means every port and protocol).
    pub ports: Vec<PortSpec>,
    /// The rule statement.
    pub span: Span,
    /// Where it was written.
    pub origin: Origin,
}

/// A peer of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Peer {
    /// Pods matching `pods` in namespaces matching `namespaces`.
    Pods {
        /// The namespaces (an empty selector selects all).
        namespaces: Selector,
        /// The pods.
        pods: Selector,
    },
    /// Every pod in the matching namespaces.
    Namespaces(Selector),
    /// Addresses in a network, minus exceptions (normalised: host bits cleared).
    Cidr {
        /// The network.
        cidr: IpNet,
        /// Sub-networks excluded.
        except: Vec<IpNet>,
    },
    /// A Cilium entity (one of [`crate::vocab::ENTITIES`]).
    Entity(String),
    /// A Kubernetes Service.
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// A protocol of a port spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Protocol {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
    /// Any of them.
    Any,
}

/// Which ports of a protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Ports {
    /// One port.
    Number(u16),
    /// An inclusive range.
    Range(u16, u16),
    /// A named container port of the destination pod.
    Named(String),
    /// Every port.
    All,
}

/// A protocol and ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortSpec {
    /// The protocol.
    pub protocol: Protocol,
    /// The ports.
    pub ports: Ports,
}

/// A Kubernetes label selector. An empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Selector {
    /// `key = "value"` terms.
    pub match_labels: BTreeMap<String, String>,
    /// Set-based terms, in source order.
    pub expressions: Vec<Requirement>,
}

/// A set-based selector term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: SelectorOp,
    /// The values (empty for `Exists` and `DoesNotExist`).
    pub values: Vec<String>,
}

/// The operator of a set-based selector term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum SelectorOp {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// A placement hint for the partitioner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// What it is about.
    pub subject: PlaceSubject,
    /// What it asks for.
    pub hint: Hint,
    /// The statement.
    pub span: Span,
}

/// What a placement hint is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum PlaceSubject {
    /// A policy of the program.
    Policy(String),
    /// A Service, by namespace and name.
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A table of the pipeline, by name (not checked here).
    Table(String),
}

/// A resource a hint can reserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Resource {
    /// Table entries.
    Entries,
    /// Counters.
    Counters,
    /// Security associations.
    Sas,
}

/// What a placement hint asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Hint {
    /// Must be on this target.
    Pin {
        /// The target.
        target: String,
    },
    /// Should be on this target when it fits.
    Prefer {
        /// The target.
        target: String,
    },
    /// Keep this much of a resource on a target for it.
    Reserve {
        /// The target.
        target: String,
        /// The resource.
        resource: Resource,
        /// How much.
        amount: u32,
    },
    /// Never in hardware: software (eBPF) only.
    ExcludeFromHardware,
}
