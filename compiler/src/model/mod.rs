//! The cluster model: typed, validated Kubernetes and Cilium state for one run.
//!
//! The frontend decodes manifests into Kubernetes API types; [`build`] turns those into a
//! [`Cluster`]: names checked, workloads expanded into pods, IPs assigned where the input has
//! none, Service backends resolved, policies validated. Everything later (identities, the
//! reference semantics, lowering) reads only this model.
//!
//! Ordering: every collection is sorted by its natural key (namespace, then name) so that
//! anything derived from the model is deterministic. Pods, services and policies are
//! addressed by their index in these vectors ([`PodId`], [`ServiceId`]).
//!
//! Provenance: every object keeps the [`Span`] of its text. A rule inside a policy keeps a
//! [`FieldPath`] relative to that object; [`crate::source::Sources::locate`] turns the two
//! into a `file:line` when one is shown.

pub mod backends;
pub mod build;
pub mod pipe;
pub mod selector;
pub mod text;
pub mod workload;

#[cfg(test)]
mod tests;

pub use selector::{Labels, Operator, Requirement, Selector};

use crate::source::{FieldPath, Span};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

/// The transport protocols policies can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
    /// ICMP or ICMPv6 (probes only: no Kubernetes port rule names it).
    Icmp,
}

impl Protocol {
    /// Parses the upper-case API spelling.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            "ICMP" | "ICMPv6" | "ICMPV6" => Some(Protocol::Icmp),
            _ => None,
        }
    }

    /// The IP protocol number (ICMP for IPv4).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Icmp => 1,
        }
    }

    /// Whether the protocol has ports.
    pub fn has_ports(self) -> bool {
        self != Protocol::Icmp
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmp => "ICMP",
        })
    }
}

/// A port given by number or by the name of a container port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PortRef {
    /// A port number.
    Number(u16),
    /// A container port name, resolved on the destination pod.
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// Where an object came from: its kind and name, and the text that defined it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Origin {
    /// Kubernetes kind, such as `NetworkPolicy`.
    pub kind: String,
    /// Namespace, for namespaced objects.
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
    /// The object's text; `None` for objects pipec made itself (expanded pods).
    #[serde(skip)]
    pub span: Option<Span>,
}

impl Origin {
    /// `Kind/ns/name` or `Kind/name`.
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{}/{}", self.kind, ns, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

/// A pointer to one rule of a policy object, for provenance.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RuleRef {
    /// The policy object.
    pub origin: Origin,
    /// Which rule list (`ingress`, `egress`, `ingressDeny`, ...).
    pub section: String,
    /// Index of the rule in that list.
    pub index: usize,
    /// The rule's name where the API has one (AdminNetworkPolicy).
    pub name: Option<String>,
    /// Path of the rule inside the object, such as `spec.ingress[1]`.
    #[serde(skip)]
    pub path: FieldPath,
    /// The rule's own text, for sources that are not YAML (`.pipe` files); when set it is
    /// used instead of locating `path` in the object.
    #[serde(skip)]
    pub span: Option<Span>,
}

impl RuleRef {
    /// Where the rule is written: its own span, or its path located in its object.
    pub fn location(&self, sources: &crate::source::Sources) -> Option<Span> {
        self.span.or_else(|| {
            self.origin
                .span
                .map(|object| sources.locate(object, &self.path))
        })
    }
}

/// Index of a pod in [`Cluster::pods`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PodId(pub u32);

/// Index of a service in [`Cluster::services`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceId(pub u32);

/// A namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Labels, including `kubernetes.io/metadata.name` (set by pipec as the API server does).
    pub labels: Labels,
    /// Source; `None` for namespaces pipec created because objects referred to them.
    pub origin: Option<Origin>,
}

/// A container port of a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ContainerPort {
    /// Port name, unique within the pod.
    pub name: Option<String>,
    /// Port number.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// A pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Pod IPs (IPv4 first when both families are present); empty when the pod has none.
    pub ips: Vec<IpAddr>,
    /// The node the pod runs on.
    pub node: Option<String>,
    /// Declared container ports of all containers, in declaration order.
    pub ports: Vec<ContainerPort>,
    /// Ports a server listens on without declaring them (conformance cases use this).
    pub extra_ports: Vec<(u16, Protocol)>,
    /// Service account name.
    pub service_account: String,
    /// Whether the pod uses the node's network namespace (then it has the node's identity
    /// and the node's host IPs as `ips`).
    pub host_network: bool,
    /// Extra labels Cilium would add to the endpoint (conformance cases use this).
    pub cilium_labels: Labels,
    /// The workload that made this pod when pipec expanded it, such as `Deployment/web`.
    pub owner: Option<String>,
    /// Where the pod (or its workload) was defined.
    pub origin: Origin,
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The first IP, if any.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ips.first().copied()
    }

    /// Resolves a named port for `protocol`; `None` when the pod has no such port.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name) && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// A node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Internal and external addresses.
    pub addresses: Vec<IpAddr>,
    /// Pod CIDRs allocated to the node.
    pub pod_cidrs: Vec<IpNet>,
    /// `status.nodeInfo.bootID`, which per-node-pair IPsec keys are derived from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Source.
    pub origin: Option<Origin>,
}

/// A Secret a target reads (the IPsec keys), its values redacted when printed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Secret {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Values by key, with `stringData` merged over `data`.
    pub data: BTreeMap<String, crate::secret::SecretBytes>,
    /// Where the object is, as `file:line:column`, for the diagnostics of the target that
    /// reads it (they must point at the Secret without quoting it).
    pub location: String,
    /// Where each value is (its `stringData` or `data` entry), as `file:line:column`.
    pub value_locations: BTreeMap<String, String>,
    /// Source.
    pub origin: Option<Origin>,
}

/// The `type` of a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ServiceType {
    /// Cluster-internal virtual IP.
    ClusterIp,
    /// ClusterIP plus a port on every node.
    NodePort,
    /// NodePort plus external load-balancer IPs.
    LoadBalancer,
    /// A DNS name only; no datapath.
    ExternalName,
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ExternalName => "ExternalName",
        })
    }
}

/// The target port of a service port.
pub type TargetPort = PortRef;

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    /// Port name (required when there is more than one port).
    pub name: Option<String>,
    /// Protocol.
    pub protocol: Protocol,
    /// The service port.
    pub port: u16,
    /// The port on the backend, by number or container-port name.
    pub target: TargetPort,
    /// The node port, for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
}

/// A port of an endpoint, as an EndpointSlice lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointPort {
    /// The service port name it serves (empty name for single-port services).
    pub name: Option<String>,
    /// Port number on the backend.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// One endpoint of a Service, a backend that serves its ports (named apart from the targets'
/// [`crate::backend::Backend`] trait).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceEndpoint {
    /// The backend's address.
    pub ip: IpAddr,
    /// The pod, when the address belongs to a known pod.
    pub pod: Option<PodId>,
    /// The node the backend runs on.
    pub node: Option<String>,
    /// Ready to receive new connections.
    pub ready: bool,
    /// Serving (ready, regardless of terminating).
    pub serving: bool,
    /// Terminating.
    pub terminating: bool,
    /// The ports it serves.
    pub ports: Vec<EndpointPort>,
}

/// Where a service's backends came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum BackendSource {
    /// EndpointSlice objects labelled with the service name.
    EndpointSlices,
    /// A legacy Endpoints object.
    Endpoints,
    /// The service selector, matched against the model's pods.
    Selector,
    /// No selector and no endpoints: the service has no backends.
    None,
}

/// A Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Type.
    pub service_type: ServiceType,
    /// Cluster IPs; empty for headless services.
    pub cluster_ips: Vec<IpAddr>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// The pod selector, if any.
    pub selector: Option<Labels>,
    /// ClientIP session affinity timeout in seconds, when affinity is on.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// Backends, sorted by IP.
    pub backends: Vec<ServiceEndpoint>,
    /// Where the backends came from.
    pub backend_source: BackendSource,
    /// Source.
    pub origin: Origin,
}

impl Service {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Policy types of a NetworkPolicy after defaulting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyTypes {
    /// Isolates selected pods for ingress.
    pub ingress: bool,
    /// Isolates selected pods for egress.
    pub egress: bool,
}

/// A NetworkPolicy peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum NpPeer {
    /// Pods chosen by selectors. `namespaces: None` means the policy's own namespace;
    /// `pods: None` means every pod of the chosen namespaces.
    Pods {
        /// namespaceSelector.
        namespaces: Option<Selector>,
        /// podSelector.
        pods: Option<Selector>,
    },
    /// An IP block, which also matches pod IPs.
    IpBlock {
        /// The block.
        cidr: IpNet,
        /// Sub-blocks left out.
        except: Vec<IpNet>,
    },
}

/// A NetworkPolicy port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NpPort {
    /// Protocol (TCP when omitted).
    pub protocol: Protocol,
    /// Port; `None` means every port of the protocol.
    pub port: Option<PortRef>,
    /// Last port of a range, inclusive.
    pub end_port: Option<u16>,
}

/// One ingress or egress rule of a NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NpRule {
    /// Peers; empty means every peer.
    pub peers: Vec<NpPeer>,
    /// Ports; empty means every port and protocol.
    pub ports: Vec<NpPort>,
    /// Provenance.
    pub rule: RuleRef,
}

/// A Kubernetes NetworkPolicy (networking.k8s.io/v1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkPolicy {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pods the policy applies to, within its namespace.
    pub pod_selector: Selector,
    /// Policy types after defaulting.
    pub policy_types: PolicyTypes,
    /// Ingress rules.
    pub ingress: Vec<NpRule>,
    /// Egress rules.
    pub egress: Vec<NpRule>,
    /// Source.
    pub origin: Origin,
}

/// A Cilium entity (a reserved group of endpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Entity {
    /// Everything outside the cluster.
    World,
    /// IPv4 destinations outside the cluster.
    WorldIpv4,
    /// IPv6 destinations outside the cluster.
    WorldIpv6,
    /// Every endpoint inside the cluster, including hosts and remote nodes.
    Cluster,
    /// The local host.
    Host,
    /// Other nodes of the cluster.
    RemoteNode,
    /// The Kubernetes API server.
    KubeApiserver,
    /// Endpoints whose identity is not resolved yet.
    Init,
    /// Health-check endpoints.
    Health,
    /// Pods not managed by Cilium.
    Unmanaged,
    /// Cilium's ingress proxy.
    Ingress,
    /// Everything.
    All,
}

impl Entity {
    /// Parses a Cilium entity name.
    pub fn parse(s: &str) -> Option<Entity> {
        Some(match s {
            "world" => Entity::World,
            "world-ipv4" => Entity::WorldIpv4,
            "world-ipv6" => Entity::WorldIpv6,
            "cluster" => Entity::Cluster,
            "host" => Entity::Host,
            "remote-node" => Entity::RemoteNode,
            "kube-apiserver" => Entity::KubeApiserver,
            "init" => Entity::Init,
            "health" => Entity::Health,
            "unmanaged" => Entity::Unmanaged,
            "ingress" => Entity::Ingress,
            "all" => Entity::All,
            _ => return None,
        })
    }

    /// Every entity name, for hints.
    pub const NAMES: &'static [&'static str] = &[
        "world",
        "world-ipv4",
        "world-ipv6",
        "cluster",
        "host",
        "remote-node",
        "kube-apiserver",
        "init",
        "health",
        "unmanaged",
        "ingress",
        "all",
    ];
}

/// A CIDR peer of a Cilium rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CidrPeer {
    /// The block.
    pub cidr: IpNet,
    /// Sub-blocks left out.
    pub except: Vec<IpNet>,
}

/// The application protocol of an L7 rule; any L7 rule redirects the connection to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum L7 {
    /// HTTP rules.
    Http,
    /// Kafka rules.
    Kafka,
    /// DNS rules.
    Dns,
    /// Another L7 parser (`l7proto`).
    Other,
}

/// One `ports` entry of a Cilium `toPorts` rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CiliumPort {
    /// Port; `None` (or `0` in the API) means every port.
    pub port: Option<PortRef>,
    /// Last port of a range, inclusive.
    pub end_port: Option<u16>,
    /// Protocol; `None` is `ANY` (TCP, UDP and SCTP).
    pub protocol: Option<Protocol>,
}

/// One `toPorts` entry: ports, and optional L7 rules on them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CiliumPortRule {
    /// Ports; empty means every port.
    pub ports: Vec<CiliumPort>,
    /// L7 rules, if any.
    pub l7: Option<L7>,
}

/// One ingress, ingressDeny, egress or egressDeny rule of a Cilium policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CiliumRule {
    /// `from/toEndpoints`; selectors already carry the implicit namespace of a CNP.
    pub endpoints: Vec<Selector>,
    /// `from/toRequires`: every selector must also match the peer.
    pub requires: Vec<Selector>,
    /// `from/toEntities`.
    pub entities: Vec<Entity>,
    /// `from/toCIDR` and `from/toCIDRSet`.
    pub cidrs: Vec<CidrPeer>,
    /// True when no L3 field was given: the rule applies to every peer.
    pub any_peer: bool,
    /// `toPorts`; empty means every port.
    pub to_ports: Vec<CiliumPortRule>,
    /// `icmps` given: the rule matches ICMP (of the given types) only.
    pub icmp: bool,
    /// Provenance.
    pub rule: RuleRef,
}

/// Per-direction override of default deny (`enableDefaultDeny`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DefaultDeny {
    /// `enableDefaultDeny.ingress`, when given.
    pub ingress: Option<bool>,
    /// `enableDefaultDeny.egress`, when given.
    pub egress: Option<bool>,
}

/// One rule object (`spec` or an element of `specs`) of a Cilium policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CiliumSpec {
    /// The endpoints the rule applies to; selectors of a CNP carry its namespace.
    pub endpoint_selector: Selector,
    /// Allow rules, ingress.
    pub ingress: Vec<CiliumRule>,
    /// Deny rules, ingress.
    pub ingress_deny: Vec<CiliumRule>,
    /// Allow rules, egress.
    pub egress: Vec<CiliumRule>,
    /// Deny rules, egress.
    pub egress_deny: Vec<CiliumRule>,
    /// Whether the rules put the endpoints into default deny, per direction.
    pub default_deny: DefaultDeny,
    /// Which ingress/egress sections the spec had, even if empty (`ingress: []` counts).
    pub has_ingress: bool,
    /// Likewise for egress.
    pub has_egress: bool,
}

/// A CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CiliumPolicy {
    /// Namespace; `None` for the clusterwide kind.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Rule objects.
    pub specs: Vec<CiliumSpec>,
    /// Source.
    pub origin: Origin,
}

/// The tier of an admin policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum AdminTier {
    /// AdminNetworkPolicy and `.pipe` policies: before NetworkPolicy.
    Admin,
    /// BaselineAdminNetworkPolicy: after NetworkPolicy.
    Baseline,
}

/// The action of an admin rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AdminAction {
    /// Allow, and skip the lower tiers.
    Allow,
    /// Deny, and skip the lower tiers.
    Deny,
    /// Skip the rest of the admin tier; NetworkPolicy decides.
    Pass,
    /// Record the connection and go on with the next rule (`.pipe` only): never decides.
    Log,
    /// Allow at L4 and redirect to the L7 proxy, skipping the lower tiers (`.pipe` only).
    Redirect,
}

/// The subject of an admin policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum AdminSubject {
    /// Every pod of the matching namespaces.
    Namespaces(Selector),
    /// Matching pods of matching namespaces.
    Pods {
        /// Namespace selector.
        namespaces: Selector,
        /// Pod selector.
        pods: Selector,
    },
}

/// A peer of an admin rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum AdminPeer {
    /// Every pod of the matching namespaces.
    Namespaces(Selector),
    /// Matching pods of matching namespaces.
    Pods {
        /// Namespace selector.
        namespaces: Selector,
        /// Pod selector.
        pods: Selector,
    },
    /// Nodes (egress only), by label.
    Nodes(Selector),
    /// CIDR blocks (egress only), with optional exceptions (from `.pipe`).
    Networks(Vec<CidrPeer>),
    /// A Cilium entity (from `.pipe`).
    Entity(Entity),
    /// The backends of a Service (from `.pipe`); policy sees the backend after DNAT.
    Service {
        /// Namespace of the Service.
        namespace: String,
        /// Name of the Service.
        name: String,
    },
}

/// A port of an admin rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum AdminPort {
    /// `portNumber`.
    Number {
        /// Protocol.
        protocol: Protocol,
        /// Port.
        port: u16,
    },
    /// `namedPort`, resolved on the destination pod.
    Named(String),
    /// `portRange`, inclusive.
    Range {
        /// Protocol.
        protocol: Protocol,
        /// First port.
        start: u16,
        /// Last port.
        end: u16,
    },
}

/// One rule of an admin policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdminRule {
    /// Action.
    pub action: AdminAction,
    /// Peers (at least one).
    pub peers: Vec<AdminPeer>,
    /// Ports; `None` means every port.
    pub ports: Option<Vec<AdminPort>>,
    /// Provenance.
    pub rule: RuleRef,
}

/// An AdminNetworkPolicy, BaselineAdminNetworkPolicy, or `.pipe` policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdminPolicy {
    /// Name.
    pub name: String,
    /// Tier.
    pub tier: AdminTier,
    /// Priority (lower first); 0 for the baseline.
    pub priority: u32,
    /// Subject.
    pub subject: AdminSubject,
    /// Ingress rules, in order.
    pub ingress: Vec<AdminRule>,
    /// Egress rules, in order.
    pub egress: Vec<AdminRule>,
    /// Source.
    pub origin: Origin,
}

/// A CiliumIdentity object: a number and the labels it stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CiliumIdentityObject {
    /// The identity number (the object's name).
    pub id: u32,
    /// `security-labels`, in Cilium's `source:key` form.
    pub labels: Labels,
    /// Source.
    pub origin: Origin,
}

/// A CiliumEndpoint object: a pod's identity and addresses as Cilium reports them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CiliumEndpointObject {
    /// Namespace.
    pub namespace: String,
    /// Name (the pod's name).
    pub name: String,
    /// Identity number.
    pub identity: Option<u32>,
    /// Addresses.
    pub ips: Vec<IpAddr>,
    /// Source.
    pub origin: Origin,
}

/// The whole validated input of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cluster {
    /// The cluster name, for Cilium's cluster label (`default` unless configured).
    pub name: String,
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods, sorted by namespace and name.
    pub pods: Vec<Pod>,
    /// Nodes, sorted by name.
    pub nodes: Vec<Node>,
    /// Services, sorted by namespace and name.
    pub services: Vec<Service>,
    /// NetworkPolicies, sorted by namespace and name.
    pub network_policies: Vec<NetworkPolicy>,
    /// Cilium policies, namespaced ones first, sorted by namespace and name.
    pub cilium_policies: Vec<CiliumPolicy>,
    /// Admin-tier policies sorted by priority then name, then the baseline.
    pub admin_policies: Vec<AdminPolicy>,
    /// CiliumIdentity objects, sorted by number.
    pub cilium_identities: Vec<CiliumIdentityObject>,
    /// CiliumEndpoint objects, sorted by namespace and name.
    pub cilium_endpoints: Vec<CiliumEndpointObject>,
    /// Secrets, sorted by namespace and name. Only targets read them (the CPT target's
    /// IPsec keys); policy never does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    /// Identity numbers a long-lived compile session has handed out; empty for a one-off
    /// compile. Not an input object: [`crate::session::Session`] sets it.
    #[serde(skip_serializing_if = "IdentityPins::is_empty")]
    pub identity_pins: IdentityPins,
}

/// Identity numbers that must not change: the numbers a compile session has given the
/// label sets in use, and the numbers it freed and keeps from reuse.
///
/// An identity in use keeps its number across every change (a datapath and a peer node
/// may hold it in flight); a CiliumIdentity object for the same labels still wins, as it
/// does for a one-off compile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IdentityPins {
    /// The number of each label set in use.
    pub numbers: BTreeMap<Labels, u32>,
    /// Numbers no label set has any more, kept from reuse.
    pub retired: BTreeSet<u32>,
}

impl IdentityPins {
    /// True when nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty() && self.retired.is_empty()
    }
}

impl Cluster {
    /// The pod with this id.
    pub fn pod(&self, id: PodId) -> &Pod {
        &self.pods[id.0 as usize]
    }

    /// The service with this id.
    pub fn service(&self, id: ServiceId) -> &Service {
        &self.services[id.0 as usize]
    }

    /// Finds a pod by namespace and name.
    pub fn find_pod(&self, namespace: &str, name: &str) -> Option<PodId> {
        self.pods
            .binary_search_by(|p| (p.namespace.as_str(), p.name.as_str()).cmp(&(namespace, name)))
            .ok()
            .map(|i| PodId(i as u32))
    }

    /// Finds a service by namespace and name.
    pub fn find_service(&self, namespace: &str, name: &str) -> Option<ServiceId> {
        self.services
            .binary_search_by(|s| (s.namespace.as_str(), s.name.as_str()).cmp(&(namespace, name)))
            .ok()
            .map(|i| ServiceId(i as u32))
    }

    /// The labels of a namespace (empty when it is unknown).
    pub fn namespace_labels(&self, name: &str) -> &Labels {
        static EMPTY: Labels = Labels::new();
        self.namespaces
            .get(name)
            .map(|n| &n.labels)
            .unwrap_or(&EMPTY)
    }

    /// The pod that has this IP, if any.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<PodId> {
        self.pods
            .iter()
            .position(|p| !p.host_network && p.ips.contains(&ip))
            .map(|i| PodId(i as u32))
    }

    /// Iterates over pod ids.
    pub fn pod_ids(&self) -> impl Iterator<Item = PodId> {
        (0..self.pods.len() as u32).map(PodId)
    }
}
