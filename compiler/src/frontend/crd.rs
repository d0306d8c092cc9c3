//! Serde types for the kinds k8s-openapi does not have: Cilium's CRDs (cilium.io/v2) and
//! the Network Policy API (policy.networking.k8s.io/v1alpha1).
//!
//! Unknown fields are rejected, as `kubectl apply` does with its default strict field
//! validation: a misspelt `fromEndpoint` must not silently become "no peers".

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Deserialize;
use std::collections::BTreeMap;

/// A number or a string, as YAML authors write ports either way.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// A string.
    String(String),
}

/// CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumNetworkPolicy {
    /// `cilium.io/v2`.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// One rule object.
    pub spec: Option<CiliumSpec>,
    /// Several rule objects.
    pub specs: Option<Vec<CiliumSpec>>,
    /// Status, ignored.
    pub status: Option<serde_json::Value>,
}

/// `enableDefaultDeny`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnableDefaultDeny {
    /// Ingress.
    pub ingress: Option<bool>,
    /// Egress.
    pub egress: Option<bool>,
}

/// One Cilium rule object.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumSpec {
    /// Endpoints the rule applies to.
    pub endpoint_selector: Option<LabelSelector>,
    /// Nodes the rule applies to (host policies).
    pub node_selector: Option<LabelSelector>,
    /// Ingress allow rules.
    pub ingress: Option<Vec<CiliumRule>>,
    /// Ingress deny rules.
    pub ingress_deny: Option<Vec<CiliumRule>>,
    /// Egress allow rules.
    pub egress: Option<Vec<CiliumRule>>,
    /// Egress deny rules.
    pub egress_deny: Option<Vec<CiliumRule>>,
    /// Default deny per direction.
    pub enable_default_deny: Option<EnableDefaultDeny>,
    /// Rule labels, informational.
    pub labels: Option<Vec<serde_json::Value>>,
    /// Description, informational.
    pub description: Option<String>,
}

/// An ingress or egress rule; the `from*` fields are ingress, the `to*` fields egress.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumRule {
    /// Ingress peers by endpoint labels.
    pub from_endpoints: Option<Vec<LabelSelector>>,
    /// Ingress peers that must also match.
    pub from_requires: Option<Vec<LabelSelector>>,
    /// Ingress peers by CIDR.
    #[serde(rename = "fromCIDR")]
    pub from_cidr: Option<Vec<String>>,
    /// Ingress peers by CIDR with exceptions.
    #[serde(rename = "fromCIDRSet")]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    /// Ingress peers by entity.
    pub from_entities: Option<Vec<String>>,
    /// Ingress peers by cloud group (not modelled).
    pub from_groups: Option<Vec<serde_json::Value>>,
    /// Ingress peers by node labels (not modelled).
    pub from_nodes: Option<Vec<LabelSelector>>,
    /// Egress peers by endpoint labels.
    pub to_endpoints: Option<Vec<LabelSelector>>,
    /// Egress peers that must also match.
    pub to_requires: Option<Vec<LabelSelector>>,
    /// Egress peers by CIDR.
    #[serde(rename = "toCIDR")]
    pub to_cidr: Option<Vec<String>>,
    /// Egress peers by CIDR with exceptions.
    #[serde(rename = "toCIDRSet")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    /// Egress peers by entity.
    pub to_entities: Option<Vec<String>>,
    /// Egress peers by Service (not modelled).
    pub to_services: Option<Vec<serde_json::Value>>,
    /// Egress peers by DNS name (not modelled).
    #[serde(rename = "toFQDNs")]
    pub to_fqdns: Option<Vec<serde_json::Value>>,
    /// Egress peers by cloud group (not modelled).
    pub to_groups: Option<Vec<serde_json::Value>>,
    /// Egress peers by node labels (not modelled).
    pub to_nodes: Option<Vec<LabelSelector>>,
    /// Ports and L7 rules.
    pub to_ports: Option<Vec<PortRule>>,
    /// ICMP rules.
    pub icmps: Option<Vec<serde_json::Value>>,
    /// Mutual authentication (not modelled).
    pub authentication: Option<serde_json::Value>,
}

/// A CIDR with exceptions.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CidrRule {
    /// The block.
    pub cidr: Option<String>,
    /// A CiliumCIDRGroup reference (not modelled).
    pub cidr_group_ref: Option<String>,
    /// A CiliumCIDRGroup selector (not modelled).
    pub cidr_group_selector: Option<LabelSelector>,
    /// Exceptions.
    pub except: Option<Vec<String>>,
}

/// A `toPorts` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRule {
    /// Ports.
    pub ports: Option<Vec<PortProtocol>>,
    /// L7 rules.
    pub rules: Option<L7Rules>,
    /// TLS termination (not modelled).
    #[serde(rename = "terminatingTLS")]
    pub terminating_tls: Option<serde_json::Value>,
    /// TLS origination (not modelled).
    #[serde(rename = "originatingTLS")]
    pub originating_tls: Option<serde_json::Value>,
    /// SNI match (not modelled).
    pub server_names: Option<Vec<String>>,
    /// Envoy listener (not modelled).
    pub listener: Option<serde_json::Value>,
}

/// One port of a `toPorts` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortProtocol {
    /// Port number or name; `0` or absent means all ports.
    pub port: Option<IntOrString>,
    /// Last port of a range.
    pub end_port: Option<i64>,
    /// TCP, UDP, SCTP or ANY.
    pub protocol: Option<String>,
}

/// L7 rules of a port rule.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L7Rules {
    /// HTTP rules.
    pub http: Option<Vec<serde_json::Value>>,
    /// Kafka rules.
    pub kafka: Option<Vec<serde_json::Value>>,
    /// DNS rules.
    pub dns: Option<Vec<serde_json::Value>>,
    /// Generic L7 protocol name.
    pub l7proto: Option<String>,
    /// Generic L7 rules.
    pub l7: Option<Vec<serde_json::Value>>,
}

/// CiliumIdentity.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumIdentity {
    /// `cilium.io/v2`.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// Metadata; the name is the identity number.
    pub metadata: ObjectMeta,
    /// The labels that make up the identity.
    #[serde(rename = "security-labels")]
    pub security_labels: Option<BTreeMap<String, String>>,
}

/// CiliumEndpoint (only the fields pipec reads; the status is large and versioned).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumEndpoint {
    /// `cilium.io/v2`.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Status.
    pub status: Option<CiliumEndpointStatus>,
}

/// The parts of a CiliumEndpoint's status pipec reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumEndpointStatus {
    /// The security identity.
    pub identity: Option<CiliumEndpointIdentity>,
    /// Addresses.
    pub networking: Option<CiliumEndpointNetworking>,
}

/// `status.identity`.
#[derive(Clone, Debug, Deserialize)]
pub struct CiliumEndpointIdentity {
    /// Number.
    pub id: Option<i64>,
}

/// `status.networking`.
#[derive(Clone, Debug, Deserialize)]
pub struct CiliumEndpointNetworking {
    /// Address pairs.
    pub addressing: Option<Vec<CiliumAddressPair>>,
}

/// One address pair.
#[derive(Clone, Debug, Deserialize)]
pub struct CiliumAddressPair {
    /// IPv4.
    pub ipv4: Option<String>,
    /// IPv6.
    pub ipv6: Option<String>,
}

/// AdminNetworkPolicy and BaselineAdminNetworkPolicy (v1alpha1).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminNetworkPolicy {
    /// `policy.networking.k8s.io/v1alpha1`.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: AdminSpec,
    /// Status, ignored.
    pub status: Option<serde_json::Value>,
}

/// The spec of an admin policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminSpec {
    /// Priority, 0..=1000 (AdminNetworkPolicy only).
    pub priority: Option<i64>,
    /// Subject.
    pub subject: AdminSubject,
    /// Ingress rules.
    pub ingress: Option<Vec<AdminRule>>,
    /// Egress rules.
    pub egress: Option<Vec<AdminRule>>,
}

/// The subject: namespaces or pods.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminSubject {
    /// Namespaces.
    pub namespaces: Option<LabelSelector>,
    /// Pods.
    pub pods: Option<NamespacedPod>,
}

/// Pods of some namespaces.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacedPod {
    /// Namespace selector.
    pub namespace_selector: LabelSelector,
    /// Pod selector.
    pub pod_selector: LabelSelector,
}

/// A rule; `from` for ingress, `to` for egress.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminRule {
    /// Rule name.
    pub name: Option<String>,
    /// Allow, Deny or Pass.
    pub action: String,
    /// Ingress peers.
    pub from: Option<Vec<AdminPeer>>,
    /// Egress peers.
    pub to: Option<Vec<AdminPeer>>,
    /// Ports.
    pub ports: Option<Vec<AdminPort>>,
}

/// A peer: exactly one field is set.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminPeer {
    /// Namespaces.
    pub namespaces: Option<LabelSelector>,
    /// Pods.
    pub pods: Option<NamespacedPod>,
    /// Nodes (egress).
    pub nodes: Option<LabelSelector>,
    /// CIDRs (egress).
    pub networks: Option<Vec<String>>,
}

/// A port: exactly one field is set.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminPort {
    /// A port number.
    pub port_number: Option<AdminPortNumber>,
    /// A named port.
    pub named_port: Option<String>,
    /// A range.
    pub port_range: Option<AdminPortRange>,
}

/// `portNumber`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminPortNumber {
    /// Protocol, TCP when absent.
    pub protocol: Option<String>,
    /// Port.
    pub port: i64,
}

/// `portRange`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminPortRange {
    /// Protocol, TCP when absent.
    pub protocol: Option<String>,
    /// First port.
    pub start: i64,
    /// Last port.
    pub end: i64,
}

/// A ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`): the network-policy-api's
/// successor of AdminNetworkPolicy and BaselineAdminNetworkPolicy, one kind with a `tier`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterNetworkPolicy {
    /// `policy.networking.k8s.io/v1alpha2`.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: CnpSpec,
    /// Status, ignored.
    pub status: Option<serde_json::Value>,
}

/// The spec of a ClusterNetworkPolicy.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpSpec {
    /// `Admin` or `Baseline`.
    pub tier: Option<String>,
    /// Priority within the tier, 0..=1000.
    pub priority: Option<i64>,
    /// Subject (the v1alpha1 shape).
    pub subject: AdminSubject,
    /// Ingress rules.
    pub ingress: Option<Vec<CnpRule>>,
    /// Egress rules.
    pub egress: Option<Vec<CnpRule>>,
}

/// A rule; `from` for ingress, `to` for egress.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpRule {
    /// Rule name.
    pub name: Option<String>,
    /// Accept, Deny or Pass.
    pub action: String,
    /// Ingress peers.
    pub from: Option<Vec<CnpPeer>>,
    /// Egress peers.
    pub to: Option<Vec<CnpPeer>>,
    /// Protocol matches; absent = every protocol and port.
    pub protocols: Option<Vec<CnpProtocol>>,
}

/// A peer: exactly one field is set.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpPeer {
    /// Namespaces.
    pub namespaces: Option<LabelSelector>,
    /// Pods.
    pub pods: Option<NamespacedPod>,
    /// Nodes (egress).
    pub nodes: Option<LabelSelector>,
    /// CIDRs (egress).
    pub networks: Option<Vec<String>>,
    /// Domain names (egress, Accept only).
    pub domain_names: Option<Vec<String>>,
}

/// A protocol match: exactly one field is set.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpProtocol {
    /// TCP.
    pub tcp: Option<CnpL4>,
    /// UDP.
    pub udp: Option<CnpL4>,
    /// SCTP.
    pub sctp: Option<CnpL4>,
    /// A container port name of the destination pod.
    pub destination_named_port: Option<String>,
}

/// The attributes of one L4 protocol.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpL4 {
    /// The destination port; absent = every port of the protocol.
    pub destination_port: Option<CnpPort>,
}

/// A port number or a range.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpPort {
    /// A port.
    pub number: Option<i64>,
    /// A range.
    pub range: Option<CnpRange>,
}

/// An inclusive port range.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpRange {
    /// First port.
    pub start: i64,
    /// Last port.
    pub end: i64,
}
