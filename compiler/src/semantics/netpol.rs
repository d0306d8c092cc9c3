//! Kubernetes NetworkPolicy (networking.k8s.io/v1).
//!
//! Spec: the NetworkPolicy API reference and the concept page
//! <https://kubernetes.io/docs/concepts/services-networking/network-policies/>, checked
//! against the upstream e2e suite (`test/e2e/network/netpol`).
//!
//! - **Isolation**: a pod is isolated for a direction when some policy of its namespace
//!   selects it (`podSelector`) and lists that direction in `policyTypes` (the model has
//!   already applied the API server's `SetDefaults_NetworkPolicy`, kubernetes
//!   `pkg/apis/networking/v1/defaults.go`: an omitted or empty `policyTypes` means Ingress,
//!   plus Egress when `egress` holds at least one rule; `egress: []` adds nothing). An
//!   isolated pod accepts only what some rule of such a policy allows; rules are a union.
//!   A rule of a direction the policy's `policyTypes` leaves out is ignored.
//! - **Peers**: `podSelector` alone = pods of the policy's namespace; `namespaceSelector`
//!   alone = every pod of the matching namespaces; both in one peer = AND; several peers =
//!   OR; no peers (`from`/`to` omitted or empty) = every source/destination, inside the
//!   cluster or not. `ipBlock` matches the address with its `except` blocks left out, and
//!   it matches pod addresses too (the API says ipBlock is meant for cluster-external IPs,
//!   but implementations and the e2e test "should allow egress access to server in CIDR
//!   block" match pod IPs; for egress through a Service it is the backend IP after DNAT).
//!   Host-network pods are not pods for selectors (behaviour the API leaves undefined);
//!   an ipBlock still matches their address.
//! - **Ports**: see [`super::ports`]: number, named (resolved on the destination pod),
//!   `endPort` range, protocol only (port omitted = every port of it). A rule with ports
//!   never matches ICMP; a rule without ports matches every protocol, ICMP included.

use super::{ports, Conn, Context, PolicyDirection};
use crate::model::{NetworkPolicy, NpPeer, NpRule, RuleRef};
use crate::source::FieldPath;

/// What the NetworkPolicies say about one direction of one connection.
#[derive(Debug, Default)]
pub struct NpResult {
    /// The policies that isolate the local pod (as `podSelector` references).
    pub isolating: Vec<RuleRef>,
    /// The rules that allow the connection.
    pub allowing: Vec<RuleRef>,
}

/// Evaluates every NetworkPolicy for one direction of `conn`.
pub(crate) fn evaluate(ctx: &Context, conn: &Conn) -> NpResult {
    let cluster = ctx.cluster;
    let local = cluster.pod(conn.local);
    let mut out = NpResult::default();
    for np in &cluster.network_policies {
        if np.namespace != local.namespace || !np.pod_selector.matches(&local.labels) {
            continue;
        }
        let (applies, rules) = match conn.dir {
            PolicyDirection::Ingress => (np.policy_types.ingress, &np.ingress),
            PolicyDirection::Egress => (np.policy_types.egress, &np.egress),
        };
        if !applies {
            continue;
        }
        out.isolating.push(isolation_ref(np));
        for rule in rules {
            if rule_matches(ctx, np, rule, conn) {
                out.allowing.push(rule.rule.clone());
            }
        }
    }
    out
}

/// The reference that names a policy as the reason a pod is isolated.
pub fn isolation_ref(np: &NetworkPolicy) -> RuleRef {
    RuleRef {
        origin: np.origin.clone(),
        section: "podSelector".to_string(),
        index: 0,
        name: None,
        path: FieldPath::parse("spec.podSelector"),
        span: None,
    }
}

fn rule_matches(ctx: &Context, np: &NetworkPolicy, rule: &NpRule, conn: &Conn) -> bool {
    let peer_ok =
        rule.peers.is_empty() || rule.peers.iter().any(|p| peer_matches(ctx, np, p, conn));
    let ports_ok = rule.ports.is_empty()
        || rule.ports.iter().any(|p| {
            ports::port_matches(
                ctx.cluster,
                conn.dst_pod,
                conn.protocol,
                conn.port,
                p.protocol,
                p.port.as_ref(),
                p.end_port,
            )
        });
    peer_ok && ports_ok
}

fn peer_matches(ctx: &Context, np: &NetworkPolicy, peer: &NpPeer, conn: &Conn) -> bool {
    match peer {
        NpPeer::IpBlock { cidr, except } => {
            let ip = conn.remote.ip;
            cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
        }
        NpPeer::Pods { namespaces, pods } => {
            let Some(remote) = conn.remote.pod else {
                return false;
            };
            let pod = ctx.cluster.pod(remote);
            let ns_ok = match namespaces {
                None => pod.namespace == np.namespace,
                Some(sel) => sel.matches(ctx.cluster.namespace_labels(&pod.namespace)),
            };
            let pod_ok = pods.as_ref().is_none_or(|sel| sel.matches(&pod.labels));
            ns_ok && pod_ok
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::semantics::testutil::{allowed, base, describe, eval};

    const DENY_X: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
---
";

    #[test]
    fn default_deny_and_podselector_peer_is_namespace_local() {
        let c = base(&format!(
            "{DENY_X}apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: from-b, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: a}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: b}}}}}}]
"
        ));
        assert!(allowed(&c, "x/b", "x/a", "80/TCP"));
        assert!(
            !allowed(&c, "y/b", "x/a", "80/TCP"),
            "podSelector alone is x only"
        );
        assert!(!allowed(&c, "x/a", "x/b", "80/TCP"));
        assert!(
            allowed(&c, "x/a", "y/b", "80/TCP"),
            "egress is not isolated"
        );
        insta::assert_snapshot!(describe(&c, &eval(&c, "y/b", "x/a", "80/TCP")), @r"
        deny: ingress denied: isolated for ingress and no rule allows it
          egress allow [default] no policy isolates the pod for egress
          ingress deny [network-policy] isolated for ingress and no rule allows it: NetworkPolicy/x/deny-all podSelector[0], NetworkPolicy/x/from-b podSelector[0]
        ");
    }

    #[test]
    fn namespace_and_pod_selector_in_one_peer_is_and() {
        let c = base(&format!(
            "{DENY_X}apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: and, namespace: x}}
spec:
  podSelector: {{}}
  ingress:
  - from:
    - namespaceSelector: {{matchLabels: {{team: ty}}}}
      podSelector: {{matchLabels: {{app: b}}}}
"
        ));
        assert!(allowed(&c, "y/b", "x/a", "80/TCP"));
        assert!(!allowed(&c, "y/a", "x/a", "80/TCP"));
        assert!(!allowed(&c, "x/b", "x/a", "80/TCP"));
    }

    #[test]
    fn ipblock_with_except_matches_pod_ips_and_outside_addresses() {
        let c = base(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cidr, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 10.244.2.0/24, except: [10.244.2.11/32]}
    - ipBlock: {cidr: 192.0.2.0/24}
",
        );
        assert!(allowed(&c, "x/a", "y/a", "80/TCP"));
        assert!(!allowed(&c, "x/a", "y/b", "80/TCP"), "except");
        assert!(allowed(&c, "x/a", "ip:192.0.2.7", "443/TCP"));
        assert!(!allowed(&c, "x/a", "ip:198.51.100.1", "443/TCP"));
        assert!(!allowed(&c, "x/a", "x/b", "80/TCP"));
    }

    #[test]
    fn named_ports_resolve_on_the_destination_for_egress_too() {
        let c = base(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: web}, {port: nope}, {port: dns, protocol: UDP}]
",
        );
        assert!(allowed(&c, "x/a", "y/a", "80/TCP"));
        assert!(allowed(&c, "x/a", "y/a", "53/UDP"));
        assert!(!allowed(&c, "x/a", "y/a", "81/TCP"));
        assert!(
            !allowed(&c, "x/a", "ip:192.0.2.1", "80/TCP"),
            "no pod, no name"
        );
        assert!(
            !allowed(&c, "x/a", "y/a", "ICMP"),
            "a port rule never matches ICMP"
        );
    }

    #[test]
    fn ranges_protocol_only_rules_and_icmp() {
        let c = base(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ports, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - ports: [{port: 8000, endPort: 8100}, {protocol: SCTP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: all, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from: [{namespaceSelector: {}}]
",
        );
        assert!(allowed(&c, "y/a", "x/a", "8000/TCP"));
        assert!(allowed(&c, "y/a", "x/a", "8100/TCP"));
        assert!(!allowed(&c, "y/a", "x/a", "8101/TCP"));
        assert!(allowed(&c, "y/a", "x/a", "9/SCTP"));
        assert!(!allowed(&c, "y/a", "x/a", "9/UDP"));
        assert!(!allowed(&c, "y/a", "x/a", "ICMP"));
        assert!(
            allowed(&c, "y/a", "x/b", "ICMP"),
            "no ports: every protocol"
        );
        assert!(!allowed(&c, "ip:192.0.2.1", "x/b", "80/TCP"), "pods only");
    }
}
