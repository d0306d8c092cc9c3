//! Port matching shared by the policy kinds.
//!
//! Every kind resolves a named port on the *destination* pod of the connection, for
//! ingress and egress alike (Kubernetes NetworkPolicy API: "a named port on a pod";
//! kubernetes/kubernetes e2e "should allow egress access on one named port"; Cilium
//! "Named ports"; network-policy-api `namedPort`). A name the destination pod does not
//! declare for the connection's protocol matches nothing, and so does any name when the
//! destination is not a pod. ICMP has no ports: a port rule never matches it.

use crate::model::{Cluster, PodId, PortRef, Protocol};

/// Whether `port`/`protocol` of a connection to `dst_pod` is `rule_port` (with an optional
/// inclusive range end) of protocol `rule_protocol`.
///
/// `rule_port: None` means every port of the protocol. A connection without a port (ICMP,
/// or a probe that gives none) matches only that.
pub fn port_matches(
    cluster: &Cluster,
    dst_pod: Option<PodId>,
    protocol: Protocol,
    port: Option<u16>,
    rule_protocol: Protocol,
    rule_port: Option<&PortRef>,
    end_port: Option<u16>,
) -> bool {
    if protocol != rule_protocol || !protocol.has_ports() {
        return false;
    }
    let Some(rule_port) = rule_port else {
        return true;
    };
    let Some(port) = port else {
        return false;
    };
    match rule_port {
        PortRef::Number(start) => match end_port {
            Some(end) => (*start..=end).contains(&port),
            None => *start == port,
        },
        PortRef::Name(name) => named(cluster, dst_pod, name, protocol) == Some(port),
    }
}

/// Resolves a named port on the destination pod; `None` when there is no pod or no port
/// of that name and protocol.
pub fn named(
    cluster: &Cluster,
    dst_pod: Option<PodId>,
    name: &str,
    protocol: Protocol,
) -> Option<u16> {
    cluster.pod(dst_pod?).named_port(name, protocol)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContainerPort, Origin, Pod};

    fn cluster() -> Cluster {
        Cluster {
            pods: vec![Pod {
                namespace: "x".into(),
                name: "a".into(),
                labels: Default::default(),
                ips: vec!["10.0.0.1".parse().expect("constant IP")],
                node: None,
                ports: vec![ContainerPort {
                    name: Some("web".into()),
                    port: 80,
                    protocol: Protocol::Tcp,
                }],
                extra_ports: Vec::new(),
                service_account: "default".into(),
                host_network: false,
                cilium_labels: Default::default(),
                owner: None,
                origin: Origin {
                    kind: "Pod".into(),
                    namespace: Some("x".into()),
                    name: "a".into(),
                    span: None,
                },
            }],
            ..Cluster::default()
        }
    }

    #[test]
    fn numbers_ranges_names_and_icmp() {
        let c = cluster();
        let pod = Some(PodId(0));
        let tcp = Protocol::Tcp;
        let n = |p| PortRef::Number(p);
        assert!(port_matches(
            &c,
            pod,
            tcp,
            Some(80),
            tcp,
            Some(&n(80)),
            None
        ));
        assert!(!port_matches(
            &c,
            pod,
            tcp,
            Some(81),
            tcp,
            Some(&n(80)),
            None
        ));
        assert!(port_matches(
            &c,
            pod,
            tcp,
            Some(90),
            tcp,
            Some(&n(80)),
            Some(90)
        ));
        assert!(!port_matches(
            &c,
            pod,
            tcp,
            Some(91),
            tcp,
            Some(&n(80)),
            Some(90)
        ));
        assert!(port_matches(&c, pod, tcp, Some(1), tcp, None, None));
        assert!(!port_matches(
            &c,
            pod,
            Protocol::Udp,
            Some(80),
            tcp,
            None,
            None
        ));
        let web = PortRef::Name("web".into());
        assert!(port_matches(&c, pod, tcp, Some(80), tcp, Some(&web), None));
        assert!(!port_matches(
            &c,
            None,
            tcp,
            Some(80),
            tcp,
            Some(&web),
            None
        ));
        let udp = Protocol::Udp;
        assert!(!port_matches(&c, pod, udp, Some(80), udp, Some(&web), None));
        let icmp = Protocol::Icmp;
        assert!(!port_matches(&c, pod, icmp, None, icmp, None, None));
    }
}
