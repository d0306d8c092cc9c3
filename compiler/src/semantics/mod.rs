//! The reference semantics: "the judge".
//!
//! Given a validated [`Cluster`] and one [`Probe`] (a new connection: source, destination,
//! protocol, port), [`evaluate`] says whether Kubernetes and Cilium would let the first
//! packet through, and names every rule that decided it. It is written straight from the
//! specifications and shares nothing with lowering but the model types: every other engine
//! (the MAG interpreter, the hardware model, eBPF in the kernel) is tested against it, so
//! it favours obviousness over speed.
//!
//! # The connection model
//!
//! A probe is the first packet of a new connection. It is allowed when the **egress**
//! policy of its source AND the **ingress** policy of its destination both allow it.
//! Policies are stateful: the replies of an allowed connection are always delivered and
//! never consult the reverse direction's policy ([`evaluate_reply`]).
//!
//! A destination that is a Service address (ClusterIP, NodePort on a node address,
//! LoadBalancer ingress IP, externalIP) is first translated to a backend (DNAT, see
//! [`service`]); policy is evaluated on the backend, after DNAT, for both directions. The
//! load balancer may choose any candidate backend, so [`Outcome::paths`] holds one
//! [`PathVerdict`] per candidate; an engine under test picks one and must agree with that
//! candidate's verdict.
//!
//! # Tiers, per direction
//!
//! For the pod whose policy is evaluated (the source for egress, the destination for
//! ingress), in order (network-policy-api, "AdminNetworkPolicy API", the tier model of
//! <https://network-policy-api.sigs.k8s.io/api-overview/>):
//!
//! 1. **Admin** ([`admin`]): AdminNetworkPolicies whose subject selects the pod, lower
//!    priority number first (ties by name, the order of [`Cluster::admin_policies`]);
//!    within a policy, rules in order; the first rule whose peers and ports match decides.
//!    `Allow` and `Deny` end the evaluation; `Pass` skips the rest of the admin tier.
//! 2. **NetworkPolicy** ([`netpol`], [`cilium`]): Kubernetes NetworkPolicies and Cilium
//!    policies together, as Cilium enforces them together. A Cilium deny rule that matches
//!    denies, whatever allows (Cilium "Deny policies": deny takes precedence). Otherwise, if
//!    any policy *isolates* the pod for the direction, the connection is allowed iff some
//!    allow rule matches (allow rules are a union), and an allow rule carrying L7 rules
//!    makes the verdict [`Verdict::Redirect`]; with no matching allow rule it is denied and
//!    the isolating policies are named.
//! 3. **Baseline** ([`admin`]): the BaselineAdminNetworkPolicy, only when no policy of the
//!    NetworkPolicy tier isolated the pod for this direction; first matching rule decides.
//! 4. **Default**: allow.
//!
//! A peer outside the cluster (or a host-network pod, whose host policy pipec does not
//! model) enforces nothing: its direction is [`Tier::NotEnforced`] and allows.
//!
//! **Host-network pods are their node** (Cilium's model, not a pod of their own): their
//! addresses are the node's host IPs (the model gives a pod without `status.podIPs` its
//! node's first InternalIP, else ExternalIP, per family, as the kubelet reports them); no
//! policy selects them; as a peer they are the `host` entity for pods of their own node and
//! `remote-node` for the others, and never match a pod selector; a Service selecting them
//! has endpoints at node IP:targetPort.
//!
//! # Deliberate simplifications (documented, not accidental)
//!
//! - Cilium's "allow from the local host" default (`allow-localhost`) is not modelled: a
//!   node address is an ordinary `host`/`remote-node` peer.
//! - Source NAT of NodePort / LoadBalancer traffic with `externalTrafficPolicy: Cluster` is
//!   not modelled: ingress policy sees the original client address.
//! - An L7 redirect is reported when a matching allow rule for this peer and port carries
//!   L7 rules. Cilium's datapath also proxies L3-only-allowed peers on a port that another
//!   rule redirects (its "wildcard L3/L4 into L7" merge); the connectivity verdict is the
//!   same (both allow), only the redirect flag differs.

pub mod admin;
pub mod cilium;
pub mod netpol;
pub mod ports;
pub mod service;
#[cfg(test)]
pub(crate) mod testutil;

use crate::identity;
use crate::model::{Cluster, Labels, PodId, Protocol, RuleRef, ServiceId, L7};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

pub use service::{Candidate, Frontend, ServiceResolution};

/// The source of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Peer {
    /// A pod of the cluster.
    Pod(PodId),
    /// An address; a pod's address is treated as that pod, anything else as outside the
    /// cluster (a node address is the node).
    External(IpAddr),
}

/// The destination of a connection, before service translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Destination {
    /// A pod, addressed by its own IP.
    Pod(PodId),
    /// An address: a Service frontend (ClusterIP, NodePort on a node address,
    /// LoadBalancer ingress IP, externalIP) is resolved as that Service, a pod IP as that
    /// pod, anything else is outside the cluster.
    Ip(IpAddr),
    /// A Service by name, reached on its cluster IP at service port `port`.
    Service {
        /// The service.
        service: ServiceId,
        /// The service port (not the target port).
        port: u16,
    },
}

/// One new connection to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Probe {
    /// Who opens the connection.
    pub from: Peer,
    /// Where it goes.
    pub to: Destination,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port; `None` for ICMP.
    pub port: Option<u16>,
}

/// What happens to a connection in one direction, or overall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Delivered.
    Allow,
    /// Dropped (or refused).
    Deny,
    /// Allowed at L4 and redirected to the L7 proxy, which applies the L7 rules.
    Redirect(L7),
}

impl Verdict {
    /// Whether the connection is established (allow or redirect).
    pub fn is_allowed(self) -> bool {
        !matches!(self, Verdict::Deny)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Allow => f.write_str("allow"),
            Verdict::Deny => f.write_str("deny"),
            Verdict::Redirect(l7) => write!(f, "redirect (L7 {})", l7_name(*l7)),
        }
    }
}

/// The display name of an L7 protocol.
pub fn l7_name(l7: L7) -> &'static str {
    match l7 {
        L7::Http => "HTTP",
        L7::Kafka => "Kafka",
        L7::Dns => "DNS",
        L7::Other => "proxy",
    }
}

/// The tier that decided one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Tier {
    /// An AdminNetworkPolicy rule (Allow or Deny).
    Admin,
    /// NetworkPolicy and Cilium policies.
    NetworkPolicy,
    /// The BaselineAdminNetworkPolicy.
    Baseline,
    /// No policy decided: default allow.
    Default,
    /// Nothing to enforce on this side (a peer outside the cluster, a host-network pod).
    NotEnforced,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Admin => "admin",
            Tier::NetworkPolicy => "network-policy",
            Tier::Baseline => "baseline",
            Tier::Default => "default",
            Tier::NotEnforced => "not-enforced",
        })
    }
}

/// Which policy direction is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PolicyDirection {
    /// Connections into the pod.
    Ingress,
    /// Connections out of the pod.
    Egress,
}

impl fmt::Display for PolicyDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyDirection::Ingress => "ingress",
            PolicyDirection::Egress => "egress",
        })
    }
}

/// The verdict of one direction, with the tier and the rules that decided it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DirectionResult {
    /// Allow, deny or redirect.
    pub verdict: Verdict,
    /// The tier that decided.
    pub tier: Tier,
    /// The deciding rules: the matching rule(s), or for a deny by isolation the policies
    /// that isolated the pod (section `podSelector` / `endpointSelector`). Sorted.
    pub deciding: Vec<RuleRef>,
    /// The AdminNetworkPolicy `Pass` rule that sent the decision to lower tiers, if any.
    pub passed_by: Option<RuleRef>,
    /// A few words on why.
    pub reason: String,
}

impl DirectionResult {
    fn not_enforced(reason: &str) -> DirectionResult {
        DirectionResult {
            verdict: Verdict::Allow,
            tier: Tier::NotEnforced,
            deciding: Vec::new(),
            passed_by: None,
            reason: reason.to_string(),
        }
    }
}

/// The verdict of the connection to one candidate destination (after DNAT).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathVerdict {
    /// The destination pod, if the destination is a pod.
    pub backend: Option<PodId>,
    /// The destination address after DNAT.
    pub dst_ip: IpAddr,
    /// The destination port after DNAT; `None` for ICMP.
    pub dst_port: Option<u16>,
    /// The source address the policies see.
    pub src_ip: IpAddr,
    /// Egress policy of the source.
    pub egress: DirectionResult,
    /// Ingress policy of the destination.
    pub ingress: DirectionResult,
    /// The combined verdict.
    pub verdict: Verdict,
    /// A few words on why.
    pub reason: String,
}

/// The judgement of one probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The service translation, when the destination was a Service.
    pub service: Option<ServiceResolution>,
    /// One path per candidate destination (one for a direct connection; none when the
    /// connection could not be routed, such as a service without endpoints).
    pub paths: Vec<PathVerdict>,
    /// The common verdict of every path; `None` when candidates disagree.
    pub verdict: Option<Verdict>,
    /// A few words on why.
    pub reason: String,
}

impl Outcome {
    /// `Some(true)` when every candidate is allowed, `Some(false)` when every one is
    /// denied, `None` when candidates disagree.
    pub fn allowed(&self) -> Option<bool> {
        if self.paths.is_empty() {
            return self.verdict.map(Verdict::is_allowed);
        }
        let first = self.paths[0].verdict.is_allowed();
        self.paths
            .iter()
            .all(|p| p.verdict.is_allowed() == first)
            .then_some(first)
    }
}

/// Settings of the reference semantics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// When a destination pod lists its ports (declared container ports or extra listening
    /// ports), a connection to a port nobody listens on is refused (a deny). Conformance
    /// cases turn this on; `trace` leaves it off, since manifests often omit ports.
    pub check_listening: bool,
}

/// What the reference semantics precomputes about a cluster.
pub struct Context<'c> {
    /// The cluster.
    pub cluster: &'c Cluster,
    /// Settings.
    pub options: Options,
    /// Cilium label set of every pod (`identity::pod_labels`), by pod index.
    cilium_labels: Vec<Labels>,
    /// Pod (not host-network) by address.
    pod_by_ip: BTreeMap<IpAddr, PodId>,
    /// Node name by address.
    node_by_ip: BTreeMap<IpAddr, String>,
    /// Backend addresses of `default/kubernetes` (the `kube-apiserver` entity).
    apiserver_ips: BTreeSet<IpAddr>,
}

impl<'c> Context<'c> {
    /// Prepares a cluster for evaluation with default options.
    pub fn new(cluster: &'c Cluster) -> Context<'c> {
        Context::with_options(cluster, Options::default())
    }

    /// Prepares a cluster for evaluation.
    pub fn with_options(cluster: &'c Cluster, options: Options) -> Context<'c> {
        let relevant = identity::selected_keys(cluster);
        let cilium_labels = cluster
            .pod_ids()
            .map(|p| identity::pod_labels(cluster, p, &relevant))
            .collect();
        let mut pod_by_ip = BTreeMap::new();
        for id in cluster.pod_ids() {
            let pod = cluster.pod(id);
            if !pod.host_network {
                for ip in &pod.ips {
                    pod_by_ip.entry(*ip).or_insert(id);
                }
            }
        }
        let mut node_by_ip = BTreeMap::new();
        for node in &cluster.nodes {
            for ip in &node.addresses {
                node_by_ip.entry(*ip).or_insert_with(|| node.name.clone());
            }
        }
        let apiserver_ips = cluster
            .find_service("default", "kubernetes")
            .map(|s| cluster.service(s).backends.iter().map(|b| b.ip).collect())
            .unwrap_or_default();
        Context {
            cluster,
            options,
            cilium_labels,
            pod_by_ip,
            node_by_ip,
            apiserver_ips,
        }
    }

    /// The pod (not host-network) that has this address.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<PodId> {
        self.pod_by_ip.get(&ip).copied()
    }

    /// The node that has this address.
    pub fn node_by_ip(&self, ip: IpAddr) -> Option<&str> {
        self.node_by_ip.get(&ip).map(String::as_str)
    }

    /// The Cilium label set of a pod.
    pub fn cilium_labels(&self, pod: PodId) -> &Labels {
        &self.cilium_labels[pod.0 as usize]
    }

    /// Whether policy is enforced on a pod: pods with an address on the pod network.
    fn enforced(&self, pod: PodId) -> bool {
        !self.cluster.pod(pod).host_network
    }
}

/// How the remote end of a connection looks to the policy of the local pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerClass {
    /// A pod on the pod network.
    Pod,
    /// An address of the local pod's own node (Cilium `host`).
    Host,
    /// An address of another node (Cilium `remote-node`).
    RemoteNode,
    /// Outside the cluster (Cilium `world`); includes an API server outside the nodes.
    World,
}

/// The remote end of a connection, as one direction's policy sees it.
pub(crate) struct Remote {
    /// The pod, for pods on the pod network (host-network pods are node addresses).
    pub pod: Option<PodId>,
    /// The address.
    pub ip: IpAddr,
    /// Class.
    pub class: PeerClass,
    /// Whether the address is a backend of `default/kubernetes`.
    pub apiserver: bool,
    /// The Cilium labels of the remote identity (pod labels, or `reserved:*` labels).
    pub labels: Labels,
}

/// One direction of one connection, as the policy of the local pod sees it.
pub(crate) struct Conn<'a> {
    /// Which policy direction.
    pub dir: PolicyDirection,
    /// The pod whose policy is evaluated.
    pub local: PodId,
    /// The other end.
    pub remote: &'a Remote,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination port after DNAT.
    pub port: Option<u16>,
    /// The destination pod, on which named ports are resolved (for both directions).
    pub dst_pod: Option<PodId>,
}

impl Context<'_> {
    /// Describes `ip` (and `pod`, when the address is a pod's) as seen by `local`.
    fn remote(&self, local: PodId, pod: Option<PodId>, ip: IpAddr) -> Remote {
        let apiserver = self.apiserver_ips.contains(&ip);
        let local_node = self.cluster.pod(local).node.as_deref();
        let on_pod_network = pod.filter(|p| self.enforced(*p));
        let class = if on_pod_network.is_some() {
            PeerClass::Pod
        } else {
            let node = self
                .node_by_ip(ip)
                .or_else(|| pod.and_then(|p| self.cluster.pod(p).node.as_deref()));
            match node {
                Some(n) if Some(n) == local_node => PeerClass::Host,
                Some(_) => PeerClass::RemoteNode,
                None if pod.is_some() => PeerClass::RemoteNode,
                None => PeerClass::World,
            }
        };
        let labels = match on_pod_network {
            Some(p) => self.cilium_labels(p).clone(),
            None => {
                let mut l = Labels::new();
                let reserved = match class {
                    PeerClass::Host => Some("reserved:host"),
                    PeerClass::RemoteNode => Some("reserved:remote-node"),
                    PeerClass::World if !apiserver => Some("reserved:world"),
                    _ => None,
                };
                if let Some(r) = reserved {
                    l.insert(r.to_string(), String::new());
                }
                if apiserver {
                    l.insert("reserved:kube-apiserver".to_string(), String::new());
                }
                l
            }
        };
        Remote {
            pod: on_pod_network,
            ip,
            class,
            apiserver,
            labels,
        }
    }
}

/// The address of `ips` in the family `v6`, else the first one.
fn ip_of_family(ips: &[IpAddr], v6: bool) -> Option<IpAddr> {
    ips.iter()
        .find(|ip| ip.is_ipv6() == v6)
        .or_else(|| ips.first())
        .copied()
}

/// Judges one new connection.
pub fn evaluate(ctx: &Context, probe: &Probe) -> Outcome {
    let from = match probe.from {
        Peer::External(ip) => match ctx.pod_by_ip(ip) {
            Some(p) => Peer::Pod(p),
            None => Peer::External(ip),
        },
        p => p,
    };
    let routed = service::resolve(ctx, from, &probe.to, probe.protocol, probe.port);
    let (service, targets) = match routed {
        service::Routed::Direct { pod, ip } => (None, vec![(pod, ip, probe.port)]),
        service::Routed::Service(res) => {
            let targets = res
                .candidates
                .iter()
                .map(|c| (c.pod, c.ip, Some(c.port)))
                .collect();
            (Some(res), targets)
        }
        service::Routed::Unreachable(reason) => {
            return Outcome {
                service: None,
                paths: Vec::new(),
                verdict: Some(Verdict::Deny),
                reason,
            }
        }
    };
    if targets.is_empty() {
        let reason = service
            .as_ref()
            .and_then(|s| s.empty_reason.clone())
            .unwrap_or_else(|| "service has no ready endpoints".to_string());
        return Outcome {
            service,
            paths: Vec::new(),
            verdict: Some(Verdict::Deny),
            reason,
        };
    }
    let mut paths = Vec::new();
    for (pod, ip, port) in targets {
        match evaluate_path(ctx, from, pod, ip, probe.protocol, port) {
            Ok(p) => paths.push(p),
            Err(reason) => {
                return Outcome {
                    service,
                    paths: Vec::new(),
                    verdict: Some(Verdict::Deny),
                    reason,
                }
            }
        }
    }
    let first = paths[0].verdict;
    let same = paths.iter().all(|p| p.verdict == first);
    let verdict = same.then_some(first);
    let reason = if paths.len() == 1 {
        paths[0].reason.clone()
    } else if same {
        format!(
            "every one of {} candidates: {}",
            paths.len(),
            paths[0].reason
        )
    } else {
        let allowed = paths.iter().filter(|p| p.verdict.is_allowed()).count();
        format!(
            "candidates disagree: {allowed} of {} allowed; the load balancer decides",
            paths.len()
        )
    };
    Outcome {
        service,
        paths,
        verdict,
        reason,
    }
}

/// Whether the replies of the connection `probe` opens are delivered.
///
/// Policies are stateful (Kubernetes NetworkPolicy: "the response traffic is implicitly
/// allowed"; Cilium and AdminNetworkPolicy likewise): a reply is delivered exactly when the
/// connection was allowed, and the reverse direction's policy is never consulted. `None`
/// when the service candidates disagree (then it depends on the chosen backend).
pub fn evaluate_reply(ctx: &Context, probe: &Probe) -> Option<bool> {
    evaluate(ctx, probe).allowed()
}

/// Judges the connection from `from` to one concrete destination (after DNAT).
fn evaluate_path(
    ctx: &Context,
    from: Peer,
    dst_pod: Option<PodId>,
    dst_ip: IpAddr,
    protocol: Protocol,
    port: Option<u16>,
) -> Result<PathVerdict, String> {
    let cluster = ctx.cluster;
    let src_ip = match from {
        Peer::Pod(p) => ip_of_family(&cluster.pod(p).ips, dst_ip.is_ipv6())
            .ok_or_else(|| format!("source pod {} has no IP", cluster.pod(p).key()))?,
        Peer::External(ip) => ip,
    };
    let egress = match from {
        Peer::Pod(src) if ctx.enforced(src) => {
            let remote = ctx.remote(src, dst_pod, dst_ip);
            evaluate_direction(
                ctx,
                &Conn {
                    dir: PolicyDirection::Egress,
                    local: src,
                    remote: &remote,
                    protocol,
                    port,
                    dst_pod,
                },
            )
        }
        Peer::Pod(_) => DirectionResult::not_enforced("source is a host-network pod"),
        Peer::External(_) => DirectionResult::not_enforced("source is outside the cluster"),
    };
    let src_pod = match from {
        Peer::Pod(p) => Some(p),
        Peer::External(_) => None,
    };
    let ingress = match dst_pod {
        Some(dst) if ctx.enforced(dst) => {
            let remote = ctx.remote(dst, src_pod, src_ip);
            evaluate_direction(
                ctx,
                &Conn {
                    dir: PolicyDirection::Ingress,
                    local: dst,
                    remote: &remote,
                    protocol,
                    port,
                    dst_pod,
                },
            )
        }
        Some(_) => DirectionResult::not_enforced("destination is a host-network pod"),
        None => DirectionResult::not_enforced("destination is outside the pod network"),
    };
    let (verdict, reason) = if !egress.verdict.is_allowed() {
        (Verdict::Deny, format!("egress denied: {}", egress.reason))
    } else if !ingress.verdict.is_allowed() {
        (Verdict::Deny, format!("ingress denied: {}", ingress.reason))
    } else if let Some(why) = refused(ctx, dst_pod, protocol, port) {
        (Verdict::Deny, why)
    } else {
        match (egress.verdict, ingress.verdict) {
            (Verdict::Redirect(l7), _) | (_, Verdict::Redirect(l7)) => (
                Verdict::Redirect(l7),
                format!("allowed and redirected to the {} proxy", l7_name(l7)),
            ),
            _ => (Verdict::Allow, "egress and ingress allow".to_string()),
        }
    };
    Ok(PathVerdict {
        backend: dst_pod,
        dst_ip,
        dst_port: port,
        src_ip,
        egress,
        ingress,
        verdict,
        reason,
    })
}

/// With [`Options::check_listening`]: the reason a connection is refused because the
/// destination pod lists its ports and none is `port`/`protocol`.
fn refused(
    ctx: &Context,
    dst_pod: Option<PodId>,
    protocol: Protocol,
    port: Option<u16>,
) -> Option<String> {
    if !ctx.options.check_listening || !protocol.has_ports() {
        return None;
    }
    let pod = ctx.cluster.pod(dst_pod?);
    if pod.ports.is_empty() && pod.extra_ports.is_empty() {
        return None;
    }
    let port = port?;
    let listens = pod
        .ports
        .iter()
        .any(|p| p.port == port && p.protocol == protocol)
        || pod.extra_ports.contains(&(port, protocol));
    (!listens).then(|| format!("nothing listens on port {port}/{protocol}"))
}

/// The tiers, in order, for one direction of one connection.
fn evaluate_direction(ctx: &Context, conn: &Conn) -> DirectionResult {
    let dir = conn.dir;
    let mut passed_by = None;
    match admin::evaluate(ctx, conn, crate::model::AdminTier::Admin) {
        admin::Decision::Allow(rule) => {
            return DirectionResult {
                verdict: Verdict::Allow,
                tier: Tier::Admin,
                reason: format!("allowed by an AdminNetworkPolicy {dir} rule"),
                deciding: vec![rule],
                passed_by: None,
            }
        }
        admin::Decision::Deny(rule) => {
            return DirectionResult {
                verdict: Verdict::Deny,
                tier: Tier::Admin,
                reason: format!("denied by an AdminNetworkPolicy {dir} rule"),
                deciding: vec![rule],
                passed_by: None,
            }
        }
        admin::Decision::Redirect(rule) => {
            return DirectionResult {
                verdict: Verdict::Redirect(crate::model::L7::Other),
                tier: Tier::Admin,
                reason: format!("redirected to the proxy by an admin {dir} rule"),
                deciding: vec![rule],
                passed_by: None,
            }
        }
        admin::Decision::Pass(rule) => passed_by = Some(rule),
        admin::Decision::NoMatch => {}
    }
    let np = netpol::evaluate(ctx, conn);
    let cil = cilium::evaluate(ctx, conn);
    if !cil.denying.is_empty() {
        return DirectionResult {
            verdict: Verdict::Deny,
            tier: Tier::NetworkPolicy,
            deciding: sorted(cil.denying),
            passed_by,
            reason: format!("denied by a Cilium {dir}Deny rule"),
        };
    }
    let l7 = cil.allowing.iter().find_map(|(_, l7)| *l7);
    let allow_verdict = l7.map_or(Verdict::Allow, Verdict::Redirect);
    let mut allowing: Vec<RuleRef> = np.allowing;
    allowing.extend(cil.allowing.iter().map(|(r, _)| r.clone()));
    let isolated = !np.isolating.is_empty() || !cil.isolating.is_empty();
    if isolated {
        if allowing.is_empty() {
            let mut isolating = np.isolating;
            isolating.extend(cil.isolating);
            return DirectionResult {
                verdict: Verdict::Deny,
                tier: Tier::NetworkPolicy,
                deciding: sorted(isolating),
                passed_by,
                reason: format!("isolated for {dir} and no rule allows it"),
            };
        }
        return DirectionResult {
            verdict: allow_verdict,
            tier: Tier::NetworkPolicy,
            deciding: sorted(allowing),
            passed_by,
            reason: match l7 {
                Some(l7) => format!(
                    "allowed by an {dir} rule with L7 rules: redirected to the {} proxy",
                    l7_name(l7)
                ),
                None => format!("allowed by an {dir} rule"),
            },
        };
    }
    match admin::evaluate(ctx, conn, crate::model::AdminTier::Baseline) {
        admin::Decision::Allow(rule) => DirectionResult {
            verdict: allow_verdict,
            tier: Tier::Baseline,
            deciding: vec![rule],
            passed_by,
            reason: format!("allowed by a BaselineAdminNetworkPolicy {dir} rule"),
        },
        admin::Decision::Deny(rule) => DirectionResult {
            verdict: Verdict::Deny,
            tier: Tier::Baseline,
            deciding: vec![rule],
            passed_by,
            reason: format!("denied by a BaselineAdminNetworkPolicy {dir} rule"),
        },
        admin::Decision::Redirect(rule) => DirectionResult {
            verdict: Verdict::Redirect(crate::model::L7::Other),
            tier: Tier::Baseline,
            deciding: vec![rule],
            passed_by,
            reason: format!("redirected to the proxy by a baseline {dir} rule"),
        },
        admin::Decision::Pass(_) | admin::Decision::NoMatch => match l7 {
            Some(l7) => DirectionResult {
                verdict: Verdict::Redirect(l7),
                tier: Tier::NetworkPolicy,
                deciding: sorted(
                    cil.allowing
                        .into_iter()
                        .filter(|(_, l)| l.is_some())
                        .map(|(r, _)| r)
                        .collect(),
                ),
                passed_by,
                reason: format!(
                    "not isolated for {dir}; an L7 rule redirects it to the {} proxy",
                    l7_name(l7)
                ),
            },
            None => DirectionResult {
                verdict: Verdict::Allow,
                tier: Tier::Default,
                deciding: Vec::new(),
                passed_by,
                reason: format!("no policy isolates the pod for {dir}"),
            },
        },
    }
}

fn sorted(mut rules: Vec<RuleRef>) -> Vec<RuleRef> {
    rules.sort();
    rules.dedup();
    rules
}
