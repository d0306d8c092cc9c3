//! AdminNetworkPolicy and BaselineAdminNetworkPolicy (policy.networking.k8s.io/v1alpha1),
//! and ClusterNetworkPolicy (v1alpha2), which the model turns into the same admin-tier
//! policies: `tier: Admin` or `Baseline`, `priority` orders policies within each tier,
//! `Accept` is `Allow`, and `Pass` ends the tier it is in (Admin: on to NetworkPolicies;
//! Baseline: on to the default allow; `apis/v1alpha2/clusternetworkpolicy_types.go`).
//! `protocols` become ports (a protocol without `destinationPort` is all its ports);
//! `domainNames` peers match nothing (Accept rules only, so this allows less).
//!
//! Spec: network-policy-api, "API overview" and the API reference
//! (<https://network-policy-api.sigs.k8s.io/api-overview/>, `apis/v1alpha1`), and its
//! conformance suite (`conformance/tests`).
//!
//! - **Subject**: `namespaces` (every pod of the matching namespaces) or `pods` (matching
//!   pods of matching namespaces). Host-network pods are never subjects (the caller does
//!   not evaluate policy for them).
//! - **Order**: AdminNetworkPolicies by `priority`, lower number first, ties by name (the
//!   API leaves ties undefined; [`crate::model::Cluster::admin_policies`] is sorted so);
//!   within a policy the rules of the direction in list order. The first rule whose peers
//!   and ports both match decides: `Allow` and `Deny` end the evaluation, `Pass` skips the
//!   rest of the admin tier. The baseline tier is evaluated the same way (one
//!   BaselineAdminNetworkPolicy, or Baseline ClusterNetworkPolicies by priority); a `Pass`
//!   there skips the rest of the baseline tier.
//! - **Peers**: `namespaces`, `pods` (namespace AND pod selector) match pods on the pod
//!   network; `nodes` (egress) matches the addresses of the matching nodes; `networks`
//!   (egress) matches any address in the CIDRs, pod addresses included; a Cilium entity
//!   (from `.pipe`) as in [`super::cilium`]; a Service (from `.pipe`) matches its backends,
//!   since policy sees the connection after DNAT.
//! - **Actions from `.pipe`**: `Log` never decides (evaluation goes on with the next rule);
//!   `Redirect` allows at L4, redirects to the proxy, and ends the evaluation like `Allow`.
//! - **Ports**: absent = every port and protocol (ICMP too); `portNumber`, `portRange`
//!   (inclusive), `namedPort` (resolved on the destination pod for the connection's
//!   protocol). A rule with ports never matches ICMP.

use super::{cilium, ports, Conn, Context, PolicyDirection};
use crate::model::{
    AdminAction, AdminPeer, AdminPolicy, AdminPort, AdminRule, AdminSubject, AdminTier, RuleRef,
};

/// The decision of one admin tier for one direction of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A rule allows it.
    Allow(RuleRef),
    /// A rule denies it.
    Deny(RuleRef),
    /// A rule passes it to the NetworkPolicy tier.
    Pass(RuleRef),
    /// A rule allows it and redirects it to the L7 proxy (`.pipe` only).
    Redirect(RuleRef),
    /// No rule of the tier matches.
    NoMatch,
}

/// Evaluates the policies of `tier` for one direction of `conn`.
pub(crate) fn evaluate(ctx: &Context, conn: &Conn, tier: AdminTier) -> Decision {
    for policy in ctx.cluster.admin_policies.iter().filter(|p| p.tier == tier) {
        if !subject_matches(ctx, policy, conn) {
            continue;
        }
        let rules = match conn.dir {
            PolicyDirection::Ingress => &policy.ingress,
            PolicyDirection::Egress => &policy.egress,
        };
        // A `Log` rule records the connection and never decides, so the first matching rule
        // of any other action is the one that counts.
        let deciding = rules
            .iter()
            .filter(|r| r.action != AdminAction::Log)
            .find(|r| rule_matches(ctx, r, conn));
        if let Some(rule) = deciding {
            let r = rule.rule.clone();
            return match rule.action {
                AdminAction::Allow => Decision::Allow(r),
                AdminAction::Deny => Decision::Deny(r),
                AdminAction::Pass => Decision::Pass(r),
                AdminAction::Redirect => Decision::Redirect(r),
                AdminAction::Log => Decision::NoMatch,
            };
        }
    }
    Decision::NoMatch
}

fn subject_matches(ctx: &Context, policy: &AdminPolicy, conn: &Conn) -> bool {
    let pod = ctx.cluster.pod(conn.local);
    let ns_labels = ctx.cluster.namespace_labels(&pod.namespace);
    match &policy.subject {
        AdminSubject::Namespaces(ns) => ns.matches(ns_labels),
        AdminSubject::Pods { namespaces, pods } => {
            namespaces.matches(ns_labels) && pods.matches(&pod.labels)
        }
    }
}

fn rule_matches(ctx: &Context, rule: &AdminRule, conn: &Conn) -> bool {
    rule.peers.iter().any(|p| peer_matches(ctx, p, conn)) && ports_match(ctx, rule, conn)
}

fn peer_matches(ctx: &Context, peer: &AdminPeer, conn: &Conn) -> bool {
    let remote = conn.remote;
    let remote_pod = remote.pod.map(|p| ctx.cluster.pod(p));
    match peer {
        AdminPeer::Namespaces(ns) => {
            remote_pod.is_some_and(|p| ns.matches(ctx.cluster.namespace_labels(&p.namespace)))
        }
        AdminPeer::Pods { namespaces, pods } => remote_pod.is_some_and(|p| {
            namespaces.matches(ctx.cluster.namespace_labels(&p.namespace))
                && pods.matches(&p.labels)
        }),
        AdminPeer::Nodes(sel) => ctx
            .cluster
            .nodes
            .iter()
            .any(|n| n.addresses.contains(&remote.ip) && sel.matches(&n.labels)),
        AdminPeer::Networks(nets) => nets.iter().any(|c| {
            c.cidr.contains(&remote.ip) && !c.except.iter().any(|e| e.contains(&remote.ip))
        }),
        AdminPeer::Entity(e) => cilium::entity_matches(*e, remote),
        AdminPeer::Service { namespace, name } => {
            ctx.cluster.find_service(namespace, name).is_some_and(|s| {
                ctx.cluster
                    .service(s)
                    .backends
                    .iter()
                    .any(|b| b.ip == remote.ip)
            })
        }
    }
}

fn ports_match(ctx: &Context, rule: &AdminRule, conn: &Conn) -> bool {
    let Some(list) = &rule.ports else {
        return true;
    };
    let (Some(port), true) = (conn.port, conn.protocol.has_ports()) else {
        return false;
    };
    list.iter().any(|p| match p {
        AdminPort::Number { protocol, port: n } => *protocol == conn.protocol && *n == port,
        AdminPort::Range {
            protocol,
            start,
            end,
        } => *protocol == conn.protocol && (*start..=*end).contains(&port),
        AdminPort::Named(name) => {
            ports::named(ctx.cluster, conn.dst_pod, name, conn.protocol) == Some(port)
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::semantics::testutil::{allowed, base, describe, eval};

    const ANP: &str = "apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: second}
spec:
  priority: 20
  subject: {namespaces: {matchLabels: {team: tx}}}
  ingress:
  - {name: deny-all, action: Deny, from: [{namespaces: {}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: first}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {team: tx}}}
  ingress:
  - name: allow-web-from-y
    action: Allow
    from: [{namespaces: {matchLabels: {team: ty}}}]
    ports: [{namedPort: web}]
  - {name: pass-y, action: Pass, from: [{namespaces: {matchLabels: {team: ty}}}]}
  egress:
  - name: deny-net
    action: Deny
    to: [{networks: [10.244.2.11/32]}]
";

    #[test]
    fn priority_order_first_match_and_pass() {
        let c = base(ANP);
        assert!(
            allowed(&c, "y/a", "x/a", "80/TCP"),
            "priority 10 allows first"
        );
        assert!(
            allowed(&c, "y/a", "x/a", "53/UDP"),
            "Pass skips priority 20's deny"
        );
        assert!(
            !allowed(&c, "x/b", "x/a", "80/TCP"),
            "priority 20 denies the rest"
        );
        assert!(
            !allowed(&c, "x/a", "y/b", "80/TCP"),
            "networks match pod IPs"
        );
        insta::assert_snapshot!(describe(&c, &eval(&c, "y/a", "x/a", "53/UDP")), @r"
        allow: egress and ingress allow
          egress allow [default] no policy isolates the pod for egress
          ingress allow [default] no policy isolates the pod for ingress
        ");
        let o = eval(&c, "y/a", "x/a", "53/UDP");
        assert_eq!(
            o.paths[0]
                .ingress
                .passed_by
                .as_ref()
                .and_then(|r| r.name.as_deref()),
            Some("pass-y")
        );
    }

    #[test]
    fn baseline_applies_only_where_no_networkpolicy_isolates() {
        let c = base(
            "apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - {action: Deny, from: [{namespaces: {}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-b, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: b}}}]
",
        );
        assert!(
            allowed(&c, "x/b", "x/a", "80/TCP"),
            "NP isolates and allows"
        );
        assert!(
            !allowed(&c, "y/b", "x/a", "80/TCP"),
            "NP isolates and denies"
        );
        assert!(!allowed(&c, "x/a", "x/b", "80/TCP"), "baseline denies x/b");
        assert!(
            allowed(&c, "ip:192.0.2.1", "x/b", "80/TCP"),
            "baseline peers are pods"
        );
    }
}
