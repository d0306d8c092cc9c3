//! The text form of the model (`pipec compile --emit model`): kubectl-style tables, one
//! section per kind, then one line per policy rule. Stable: snapshot tests compare it.

use super::*;
use crate::util::{labels_text, Table};

/// Renders the whole model.
pub fn cluster_to_text(c: &Cluster) -> String {
    let mut out = String::new();
    let mut section = |title: &str, body: String| {
        out.push_str(&format!("# {title}\n{body}\n"));
    };
    let mut t = Table::new(&["NAME", "LABELS"]);
    for ns in c.namespaces.values() {
        t.row(vec![ns.name.clone(), labels_text(&ns.labels)]);
    }
    section("namespaces", t.render());
    if !c.nodes.is_empty() {
        let mut t = Table::new(&["NAME", "ADDRESSES", "POD-CIDRS", "LABELS"]);
        for n in &c.nodes {
            t.row(vec![
                n.name.clone(),
                join(&n.addresses),
                join(&n.pod_cidrs),
                labels_text(&n.labels),
            ]);
        }
        section("nodes", t.render());
    }
    let mut t = Table::new(&[
        "NAMESPACE",
        "NAME",
        "IP",
        "NODE",
        "PORTS",
        "OWNER",
        "LABELS",
    ]);
    for p in &c.pods {
        let mut ports: Vec<String> = p
            .ports
            .iter()
            .map(|cp| match &cp.name {
                Some(n) => format!("{n}:{}/{}", cp.port, cp.protocol),
                None => format!("{}/{}", cp.port, cp.protocol),
            })
            .collect();
        ports.extend(
            p.extra_ports
                .iter()
                .map(|(port, proto)| format!("+{port}/{proto}")),
        );
        let ip = if p.host_network {
            if p.ips.is_empty() {
                "<host>".to_string()
            } else {
                format!("<host> {}", join(&p.ips))
            }
        } else if p.ips.is_empty() {
            "<none>".into()
        } else {
            join(&p.ips)
        };
        t.row(vec![
            p.namespace.clone(),
            p.name.clone(),
            ip,
            p.node.clone().unwrap_or_else(|| "<none>".into()),
            if ports.is_empty() {
                "<none>".into()
            } else {
                ports.join(",")
            },
            p.owner.clone().unwrap_or_else(|| "-".into()),
            labels_text(&p.labels),
        ]);
    }
    section("pods", t.render());
    let mut t = Table::new(&[
        "NAMESPACE",
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL",
        "PORTS",
        "AFFINITY",
        "TRAFFIC",
        "BACKENDS",
    ]);
    for s in &c.services {
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| {
                let np = p.node_port.map(|n| format!(":{n}")).unwrap_or_default();
                format!("{}{np}/{}->{}", p.port, p.protocol, p.target)
            })
            .collect();
        let mut external: Vec<String> = s.external_ips.iter().map(|i| i.to_string()).collect();
        external.extend(s.load_balancer_ips.iter().map(|i| format!("lb:{i}")));
        let traffic = format!(
            "ext={},int={}",
            if s.external_local { "Local" } else { "Cluster" },
            if s.internal_local { "Local" } else { "Cluster" }
        );
        let backends: Vec<String> = s
            .backends
            .iter()
            .map(|b| {
                let state = if b.ready {
                    ""
                } else if b.serving && b.terminating {
                    "(terminating)"
                } else {
                    "(not-ready)"
                };
                format!("{}{state}", b.ip)
            })
            .collect();
        t.row(vec![
            s.namespace.clone(),
            s.name.clone(),
            s.service_type.to_string(),
            if s.cluster_ips.is_empty() {
                "None".into()
            } else {
                join(&s.cluster_ips)
            },
            if external.is_empty() {
                "<none>".into()
            } else {
                external.join(",")
            },
            ports.join(","),
            s.affinity_timeout
                .map(|t| format!("ClientIP({t}s)"))
                .unwrap_or_else(|| "None".into()),
            traffic,
            format!(
                "{:?}: {}",
                s.backend_source,
                if backends.is_empty() {
                    "<none>".into()
                } else {
                    backends.join(",")
                }
            ),
        ]);
    }
    section("services", t.render());
    let mut lines = String::new();
    for np in &c.network_policies {
        let types = [
            (np.policy_types.ingress, "Ingress"),
            (np.policy_types.egress, "Egress"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",");
        lines.push_str(&format!(
            "NetworkPolicy {}/{} podSelector={} policyTypes={types}\n",
            np.namespace, np.name, np.pod_selector
        ));
        for r in np.ingress.iter().chain(&np.egress) {
            lines.push_str(&format!(
                "  {}[{}]: {}\n",
                r.rule.section,
                r.rule.index,
                describe_np_rule(r)
            ));
        }
    }
    for cp in &c.cilium_policies {
        lines.push_str(&format!("{}\n", cp.origin.display_name()));
        for spec in &cp.specs {
            lines.push_str(&format!("  endpointSelector={}\n", spec.endpoint_selector));
            for r in spec
                .ingress
                .iter()
                .chain(&spec.ingress_deny)
                .chain(&spec.egress)
                .chain(&spec.egress_deny)
            {
                lines.push_str(&format!(
                    "  {}[{}]: {}\n",
                    r.rule.section,
                    r.rule.index,
                    describe_cilium_rule(r)
                ));
            }
        }
    }
    for ap in &c.admin_policies {
        lines.push_str(&format!(
            "{} priority={} subject={}\n",
            ap.origin.display_name(),
            ap.priority,
            describe_subject(&ap.subject)
        ));
        for r in ap.ingress.iter().chain(&ap.egress) {
            lines.push_str(&format!(
                "  {}[{}]{}: {}\n",
                r.rule.section,
                r.rule.index,
                r.rule
                    .name
                    .as_ref()
                    .map(|n| format!(" {n:?}"))
                    .unwrap_or_default(),
                describe_admin_rule(r)
            ));
        }
    }
    section(
        "policies",
        if lines.is_empty() {
            "<none>\n".into()
        } else {
            lines
        },
    );
    if !c.cilium_identities.is_empty() {
        let mut t = Table::new(&["IDENTITY", "LABELS"]);
        for i in &c.cilium_identities {
            t.row(vec![i.id.to_string(), labels_text(&i.labels)]);
        }
        section("cilium identities", t.render());
    }
    out
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// One NetworkPolicy rule in words: `from <peers> ports <ports>`.
pub fn describe_np_rule(r: &NpRule) -> String {
    let peers = if r.peers.is_empty() {
        "any peer".to_string()
    } else {
        r.peers
            .iter()
            .map(|p| match p {
                NpPeer::Pods {
                    namespaces: None,
                    pods,
                } => format!(
                    "pods({}) in own namespace",
                    pods.as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "{}".into())
                ),
                NpPeer::Pods {
                    namespaces: Some(ns),
                    pods,
                } => format!(
                    "pods({}) in namespaces({ns})",
                    pods.as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "{}".into())
                ),
                NpPeer::IpBlock { cidr, except } if except.is_empty() => format!("ipBlock {cidr}"),
                NpPeer::IpBlock { cidr, except } => {
                    format!("ipBlock {cidr} except {}", join(except))
                }
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let ports = if r.ports.is_empty() {
        "any port".to_string()
    } else {
        r.ports
            .iter()
            .map(|p| match (&p.port, p.end_port) {
                (None, _) => format!("{}/*", p.protocol),
                (Some(port), None) => format!("{}/{port}", p.protocol),
                (Some(port), Some(end)) => format!("{}/{port}-{end}", p.protocol),
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("{peers}; {ports}")
}

/// One Cilium rule in words.
pub fn describe_cilium_rule(r: &CiliumRule) -> String {
    let mut peers: Vec<String> = r
        .endpoints
        .iter()
        .map(|s| format!("endpoints({s})"))
        .collect();
    peers.extend(r.entities.iter().map(|e| format!("entity {e:?}")));
    peers.extend(r.cidrs.iter().map(|c| {
        if c.except.is_empty() {
            format!("cidr {}", c.cidr)
        } else {
            format!("cidr {} except {}", c.cidr, join(&c.except))
        }
    }));
    if r.any_peer {
        peers.push("any peer".into());
    }
    if peers.is_empty() {
        peers.push("no peer".into());
    }
    let ports = if r.to_ports.is_empty() {
        "any port".to_string()
    } else {
        r.to_ports
            .iter()
            .map(|pr| {
                let ps = if pr.ports.is_empty() {
                    "*".to_string()
                } else {
                    pr.ports
                        .iter()
                        .map(|p| {
                            let proto = p
                                .protocol
                                .map(|p| p.to_string())
                                .unwrap_or_else(|| "ANY".into());
                            match (&p.port, p.end_port) {
                                (None, _) => format!("{proto}/*"),
                                (Some(port), None) => format!("{proto}/{port}"),
                                (Some(port), Some(end)) => format!("{proto}/{port}-{end}"),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                };
                match pr.l7 {
                    Some(l7) => format!("{ps} (L7 {l7:?} → proxy)"),
                    None => ps,
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{}; {ports}{}",
        peers.join(" | "),
        if r.icmp { "; icmp" } else { "" }
    )
}

/// An admin policy's subject in words.
pub fn describe_subject(s: &AdminSubject) -> String {
    match s {
        AdminSubject::Namespaces(ns) => format!("namespaces({ns})"),
        AdminSubject::Pods { namespaces, pods } => {
            format!("pods({pods}) in namespaces({namespaces})")
        }
    }
}

/// One admin rule in words.
pub fn describe_admin_rule(r: &AdminRule) -> String {
    let peers = r
        .peers
        .iter()
        .map(|p| match p {
            AdminPeer::Namespaces(s) => format!("namespaces({s})"),
            AdminPeer::Pods { namespaces, pods } => {
                format!("pods({pods}) in namespaces({namespaces})")
            }
            AdminPeer::Nodes(s) => format!("nodes({s})"),
            AdminPeer::Networks(n) => format!(
                "networks {}",
                n.iter()
                    .map(|c| c.cidr.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            AdminPeer::Entity(e) => format!("entity {e:?}"),
            AdminPeer::Service { namespace, name } => format!("service {namespace}/{name}"),
        })
        .collect::<Vec<_>>()
        .join(" | ");
    let ports = match &r.ports {
        None => "any port".to_string(),
        Some(ps) => ps
            .iter()
            .map(|p| match p {
                AdminPort::Number { protocol, port } => format!("{protocol}/{port}"),
                AdminPort::Named(n) => format!("named {n}"),
                AdminPort::Range {
                    protocol,
                    start,
                    end,
                } => format!("{protocol}/{start}-{end}"),
            })
            .collect::<Vec<_>>()
            .join(","),
    };
    format!("{:?} {peers}; {ports}", r.action)
}
