//! CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (cilium.io/v2).
//!
//! Spec: Cilium's "Policy Language" and "Deny Policies" documentation
//! (<https://docs.cilium.io/en/stable/security/policy/>), and `pkg/policy/api` for the
//! meaning of each field.
//!
//! - **Selection**: a rule object (a `spec` or an element of `specs`) applies to the
//!   endpoints its `endpointSelector` matches; selectors are matched against the Cilium
//!   label set of the pod ([`crate::identity::pod_labels`], with
//!   [`crate::identity::cilium_matches`]). Selectors of a namespaced policy already carry
//!   its namespace in the model.
//! - **Default deny**: a rule object puts its endpoints into default deny for a direction
//!   when it has that direction (`ingress`/`ingressDeny`, even empty) unless
//!   `enableDefaultDeny` for the direction is `false`. Isolated endpoints accept only what
//!   an allow rule of any selecting policy (Cilium or Kubernetes) allows.
//! - **Deny rules** (`ingressDeny`/`egressDeny`) of selecting rule objects deny what they
//!   match, whatever any allow rule says, isolated or not.
//! - **Peers**: `from/toEndpoints` match pod label sets. The model scopes them as Cilium's
//!   `getEndpointSelector` does: in a CiliumNetworkPolicy a selector is limited to the
//!   policy's namespace unless it names the namespace or namespace labels; in a
//!   CiliumClusterwideNetworkPolicy every selector, the empty `{}` included, requires the
//!   pod namespace label, so it matches every Cilium-managed pod and never `world`, `host`
//!   or another reserved identity; a selector on `reserved:` labels is left as written.
//!   `from/toRequires` of every selecting rule object of the same direction and kind
//!   (allow or deny) are ANDed into every endpoint selector of that kind (Cilium's
//!   `resolveIngressPolicy` and `GetSourceEndpointSelectorsWithRequirements`); a
//!   requirement grants nothing by itself, so a rule whose only L3 field is `fromRequires`
//!   allows nothing (it still isolates); a rule without any L3 field matches every peer,
//!   subject to those requirements, which never constrain entity or CIDR peers.
//!   `from/toEntities`: `world` = addresses that are no pod, node or
//!   API server; `cluster` = pods, nodes and the API server; `host` = the local pod's own
//!   node; `remote-node` = other nodes; `kube-apiserver` = backends of
//!   `default/kubernetes`; `all` = everything; `init`, `health`, `unmanaged`, `ingress`
//!   match nothing here. `from/toCIDR` and `CIDRSet` (with `except`) match only `world`
//!   addresses: **unlike a Kubernetes ipBlock, a CIDR rule never matches a pod or a node
//!   address**, since Cilium gives those their own identities (select pods with endpoint
//!   selectors, nodes with entities).
//! - **Ports**: `toPorts` entries match by port (number, named on the destination pod,
//!   `endPort` range, `0`/absent = every port) and protocol (`ANY` = TCP, UDP and SCTP);
//!   `icmps` matches ICMP only; a rule with neither matches every protocol. An allow rule
//!   whose matching `toPorts` entry has L7 rules (HTTP, Kafka, DNS, `l7proto`) redirects the
//!   connection to the proxy.

use super::{ports, Conn, Context, PeerClass, PolicyDirection, Remote};
use crate::model::{
    CiliumPolicy, CiliumPort, CiliumRule, CiliumSpec, Entity, Protocol, RuleRef, Selector, L7,
};
use crate::source::{FieldPath, PathSeg};

/// What the Cilium policies say about one direction of one connection.
#[derive(Debug, Default)]
pub struct CiliumResult {
    /// The rule objects that put the local endpoint into default deny.
    pub isolating: Vec<RuleRef>,
    /// The allow rules that match, each with the L7 protocol of its matching port entry.
    pub allowing: Vec<(RuleRef, Option<L7>)>,
    /// The deny rules that match.
    pub denying: Vec<RuleRef>,
}

/// Evaluates every Cilium policy for one direction of `conn`.
pub(crate) fn evaluate(ctx: &Context, conn: &Conn) -> CiliumResult {
    let labels = ctx.cilium_labels(conn.local);
    let selecting: Vec<(&CiliumPolicy, usize, &CiliumSpec)> = ctx
        .cluster
        .cilium_policies
        .iter()
        .flat_map(|p| p.specs.iter().enumerate().map(move |(i, s)| (p, i, s)))
        .filter(|(_, _, s)| crate::identity::cilium_matches(&s.endpoint_selector, labels))
        .collect();
    let mut allow_requires: Vec<&Selector> = Vec::new();
    let mut deny_requires: Vec<&Selector> = Vec::new();
    for (_, _, spec) in &selecting {
        let (allow, deny) = match conn.dir {
            PolicyDirection::Ingress => (&spec.ingress, &spec.ingress_deny),
            PolicyDirection::Egress => (&spec.egress, &spec.egress_deny),
        };
        allow_requires.extend(allow.iter().flat_map(|r| &r.requires));
        deny_requires.extend(deny.iter().flat_map(|r| &r.requires));
    }
    let mut out = CiliumResult::default();
    for (policy, index, spec) in &selecting {
        let (has, default_deny, allow, deny) = match conn.dir {
            PolicyDirection::Ingress => (
                spec.has_ingress,
                spec.default_deny.ingress,
                &spec.ingress,
                &spec.ingress_deny,
            ),
            PolicyDirection::Egress => (
                spec.has_egress,
                spec.default_deny.egress,
                &spec.egress,
                &spec.egress_deny,
            ),
        };
        if has && default_deny != Some(false) {
            out.isolating.push(isolation_ref(policy, *index));
        }
        for rule in deny {
            if peer_matches(conn.remote, rule, &deny_requires)
                && l4_matches(ctx, rule, conn).is_some()
            {
                out.denying.push(rule.rule.clone());
            }
        }
        for rule in allow {
            if !peer_matches(conn.remote, rule, &allow_requires) {
                continue;
            }
            if let Some(l7) = l4_matches(ctx, rule, conn) {
                out.allowing.push((rule.rule.clone(), l7));
            }
        }
    }
    out
}

/// The reference that names a rule object as the reason an endpoint is isolated.
///
/// The path of the rule object is taken from one of its rules (`spec` or `specs[i]`);
/// a rule object without rules is assumed to be `spec` when it is the policy's only one.
pub fn isolation_ref(policy: &CiliumPolicy, index: usize) -> RuleRef {
    let spec = &policy.specs[index];
    let base = spec
        .ingress
        .iter()
        .chain(&spec.ingress_deny)
        .chain(&spec.egress)
        .chain(&spec.egress_deny)
        .next()
        .map(|r| {
            let segs: Vec<PathSeg> = r
                .rule
                .path
                .0
                .iter()
                .take_while(|s| !matches!(s, PathSeg::Key(k) if k.starts_with("ingress") || k.starts_with("egress")))
                .cloned()
                .collect();
            FieldPath(segs)
        })
        .unwrap_or_else(|| {
            if policy.specs.len() == 1 {
                FieldPath::parse("spec")
            } else {
                FieldPath::parse(&format!("specs[{index}]"))
            }
        });
    RuleRef {
        origin: policy.origin.clone(),
        section: "endpointSelector".to_string(),
        index,
        name: None,
        path: base.key("endpointSelector"),
        span: None,
    }
}

/// Whether the peer part (L3) of `rule` matches the remote end.
fn peer_matches(remote: &Remote, rule: &CiliumRule, requires: &[&Selector]) -> bool {
    let meets_requires = || {
        requires
            .iter()
            .all(|s| crate::identity::cilium_matches(s, &remote.labels))
    };
    if rule.any_peer {
        return meets_requires();
    }
    let by_endpoint = rule
        .endpoints
        .iter()
        .any(|s| crate::identity::cilium_matches(s, &remote.labels))
        && meets_requires();
    by_endpoint
        || rule.entities.iter().any(|e| entity_matches(*e, remote))
        || (remote.class == PeerClass::World
            && !remote.apiserver
            && rule.cidrs.iter().any(|c| {
                c.cidr.contains(&remote.ip) && !c.except.iter().any(|e| e.contains(&remote.ip))
            }))
}

/// Whether a Cilium entity contains the remote end.
pub(crate) fn entity_matches(entity: Entity, remote: &Remote) -> bool {
    let world = remote.class == PeerClass::World && !remote.apiserver;
    match entity {
        Entity::All => true,
        Entity::World => world,
        Entity::WorldIpv4 => world && remote.ip.is_ipv4(),
        Entity::WorldIpv6 => world && remote.ip.is_ipv6(),
        Entity::Cluster => !world,
        Entity::Host => remote.class == PeerClass::Host,
        Entity::RemoteNode => remote.class == PeerClass::RemoteNode,
        Entity::KubeApiserver => remote.apiserver,
        Entity::Init | Entity::Health | Entity::Unmanaged | Entity::Ingress => false,
    }
}

/// Whether the L4 part of `rule` matches; `Some(l7)` with the L7 protocol of the matching
/// `toPorts` entry (an entry with L7 rules is preferred when several match).
fn l4_matches(ctx: &Context, rule: &CiliumRule, conn: &Conn) -> Option<Option<L7>> {
    if !rule.icmp && rule.to_ports.is_empty() {
        return Some(None);
    }
    if conn.protocol == Protocol::Icmp {
        return rule.icmp.then_some(None);
    }
    let mut found: Option<Option<L7>> = None;
    for entry in &rule.to_ports {
        let hit = entry.ports.is_empty()
            || entry
                .ports
                .iter()
                .any(|p| cilium_port_matches(ctx, p, conn));
        if hit {
            found = match (found, entry.l7) {
                (Some(Some(l7)), _) => Some(Some(l7)),
                (_, l7) => Some(l7),
            };
        }
    }
    found
}

fn cilium_port_matches(ctx: &Context, p: &CiliumPort, conn: &Conn) -> bool {
    let protocols: &[Protocol] = match &p.protocol {
        Some(proto) => std::slice::from_ref(proto),
        None => &[Protocol::Tcp, Protocol::Udp, Protocol::Sctp],
    };
    protocols.iter().any(|proto| {
        ports::port_matches(
            ctx.cluster,
            conn.dst_pod,
            conn.protocol,
            conn.port,
            *proto,
            p.port.as_ref(),
            p.end_port,
        )
    })
}

#[cfg(test)]
mod tests {
    use crate::semantics::testutil::{allowed, base, describe, eval};
    use crate::semantics::Verdict;

    #[test]
    fn deny_rules_beat_any_allow_of_the_tier() {
        let c = base(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  podSelector: {}
  ingress: [{}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: deny-y, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: y}}]
    toPorts: [{ports: [{port: '80', protocol: TCP}]}]
",
        );
        assert!(!allowed(&c, "y/a", "x/a", "80/TCP"));
        assert!(allowed(&c, "y/a", "x/a", "53/UDP"));
        assert!(allowed(&c, "x/b", "x/a", "80/TCP"));
        insta::assert_snapshot!(describe(&c, &eval(&c, "y/a", "x/a", "80/TCP")), @r"
        deny: ingress denied: denied by a Cilium ingressDeny rule
          egress allow [default] no policy isolates the pod for egress
          ingress deny [network-policy] denied by a Cilium ingressDeny rule: CiliumNetworkPolicy/x/deny-y ingressDeny[0]
        ");
    }

    #[test]
    fn endpoint_selectors_are_namespaced_and_l7_redirects() {
        let c = base(
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l7, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: b}}]
    toPorts:
    - ports: [{port: '80', protocol: TCP}]
      rules: {http: [{method: GET}]}
  - fromEndpoints: [{matchLabels: {app: b}}]
    toPorts:
    - ports: [{port: '0', protocol: ANY}]
",
        );
        let o = eval(&c, "x/b", "x/a", "80/TCP");
        assert!(matches!(o.verdict, Some(Verdict::Redirect(_))));
        assert_eq!(
            eval(&c, "x/b", "x/a", "53/UDP").verdict,
            Some(Verdict::Allow)
        );
        assert!(allowed(&c, "x/b", "x/a", "7/SCTP"), "ANY includes SCTP");
        assert!(
            !allowed(&c, "x/b", "x/a", "ICMP"),
            "toPorts never match ICMP"
        );
        assert!(
            !allowed(&c, "y/b", "x/a", "80/TCP"),
            "CNP selectors are namespaced"
        );
    }

    #[test]
    fn enable_default_deny_false_does_not_isolate() {
        let c = base(
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: audit, namespace: x}
spec:
  endpointSelector: {}
  enableDefaultDeny: {ingress: false}
  ingress:
  - fromEndpoints: [{matchLabels: {app: b}}]
",
        );
        assert!(allowed(&c, "y/a", "x/a", "80/TCP"));
        assert!(allowed(&c, "x/b", "x/a", "80/TCP"));
    }

    #[test]
    fn entities_and_cidrs() {
        let c = base(
            "apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: out, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
  - toEntities: [remote-node]
    toPorts: [{ports: [{port: '10250'}]}]
",
        );
        assert!(allowed(&c, "x/a", "ip:10.2.3.4", "443/TCP"));
        assert!(!allowed(&c, "x/a", "ip:10.1.3.4", "443/TCP"), "except");
        assert!(
            !allowed(&c, "x/a", "y/a", "80/TCP"),
            "CIDR rules never match pods"
        );
        assert!(allowed(&c, "x/a", "ip:172.18.0.2", "10250/TCP"));
        assert!(!allowed(&c, "x/a", "ip:172.18.0.2", "22/TCP"));
    }

    #[test]
    fn world_and_cluster_entities() {
        let c = base(
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: in, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEntities: [world]
    toPorts: [{ports: [{port: '80', protocol: TCP}]}]
  - fromEntities: [cluster]
    toPorts: [{ports: [{port: '53', protocol: UDP}]}]
",
        );
        assert!(allowed(&c, "ip:203.0.113.9", "x/a", "80/TCP"));
        assert!(!allowed(&c, "y/b", "x/a", "80/TCP"));
        assert!(allowed(&c, "y/b", "x/a", "53/UDP"));
        assert!(!allowed(&c, "ip:203.0.113.9", "x/a", "53/UDP"));
    }

    /// Cilium's getEndpointSelector leaves a CNP selector on namespace labels or on
    /// `reserved:` labels unscoped, and scopes every other one to the policy's namespace.
    #[test]
    fn cnp_selectors_on_namespace_labels_or_reserved_labels_are_not_scoped() {
        let c = base(
            "apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: in, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {k8s:io.cilium.k8s.namespace.labels.team: ty}}]
  - fromEndpoints: [{matchLabels: {reserved:remote-node: ''}}]
    toPorts: [{ports: [{port: '53', protocol: UDP}]}]
",
        );
        assert!(allowed(&c, "y/b", "x/a", "80/TCP"), "namespace labels of y");
        assert!(!allowed(&c, "x/b", "x/a", "80/TCP"), "x has team tx");
        assert!(
            allowed(&c, "ip:172.18.0.2", "x/a", "53/UDP"),
            "reserved:remote-node"
        );
        assert!(!allowed(&c, "ip:172.18.0.2", "x/a", "80/TCP"));
    }

    #[test]
    fn requires_constrain_every_endpoint_selector() {
        let c = base(
            "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: req}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromRequires: [{matchLabels: {k8s:io.kubernetes.pod.namespace: y}}]
  - fromEndpoints: [{matchLabels: {app: b}}]
",
        );
        assert!(allowed(&c, "y/b", "x/a", "80/TCP"));
        assert!(
            !allowed(&c, "x/b", "x/a", "80/TCP"),
            "x/b fails the requirement"
        );
        assert!(
            !allowed(&c, "y/a", "x/a", "80/TCP"),
            "a requires-only rule grants nothing"
        );
        assert!(
            !allowed(&c, "ip:203.0.113.9", "x/a", "80/TCP"),
            "a clusterwide selector never matches world"
        );
    }
}
