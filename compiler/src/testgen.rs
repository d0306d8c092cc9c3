//! Random clusters for property tests (behind the `testgen` feature): a small [`Spec`]
//! that proptest generates and shrinks, rendered to manifests and loaded through the real
//! frontend, so every generated case is also valid input to `pipec`.
//!
//! Shared by the MAG property tests (`compiler/tests/it/mag_gen.rs`) and other crates'
//! tests (the eBPF differential test); the fields of the spec types are the generator's
//! knobs and documented on their types.
#![allow(
    missing_docs,
    reason = "spec fields are generator knobs, described on their types"
)]

use crate::driver;
use crate::model::build::BuildOptions;
use crate::model::Cluster;
use proptest::prelude::*;
use std::fmt::Write;

/// A pod: namespace index, app label, tier label, ports (http number, dns), IPv6 too, and
/// its node (an index taken modulo the number of nodes; unused without nodes).
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub ns: usize,
    pub app: usize,
    pub tier: Option<usize>,
    pub http: Option<u16>,
    pub dns: bool,
    pub node: usize,
}

/// A service selecting an app, with a named or numbered target port, optionally of type
/// NodePort (node port [`node_port`]), with `externalTrafficPolicy: Local` (NodePort
/// services only, as the API server requires) and `internalTrafficPolicy: Local`.
#[derive(Clone, Debug)]
pub struct SvcSpec {
    pub ns: usize,
    pub app: usize,
    pub named_target: bool,
    pub affinity: bool,
    pub node_port: bool,
    pub external_local: bool,
    pub internal_local: bool,
}

/// A peer of a generated rule.
#[derive(Clone, Debug)]
pub enum PeerSpec {
    Pods(usize),
    Namespace(usize),
    NsAndPods(usize, usize),
    IpBlock(u8),
    World,
}

/// A port of a generated rule.
#[derive(Clone, Debug)]
pub enum PortSpec {
    Http,
    Named,
    Dns,
    Range,
}

/// A generated rule.
#[derive(Clone, Debug)]
pub struct RuleSpec {
    pub peers: Vec<PeerSpec>,
    pub ports: Vec<PortSpec>,
}

/// A generated policy of one of the supported kinds.
#[derive(Clone, Debug)]
pub enum PolicySpec {
    Np {
        ns: usize,
        app: Option<usize>,
        ingress: Option<Vec<RuleSpec>>,
        egress: Option<Vec<RuleSpec>>,
    },
    Cnp {
        ns: usize,
        app: usize,
        ingress: Vec<RuleSpec>,
        deny: Vec<RuleSpec>,
        l7: bool,
    },
    Anp {
        priority: u8,
        ns: usize,
        rules: Vec<(u8, RuleSpec)>,
        baseline: bool,
    },
}

/// A whole generated cluster: without nodes every pod is on the synthetic node; with nodes
/// the pods are spread over them.
#[derive(Clone, Debug)]
pub struct Spec {
    pub nodes: usize,
    pub ns_team: Vec<usize>,
    pub pods: Vec<PodSpec>,
    pub services: Vec<SvcSpec>,
    pub policies: Vec<PolicySpec>,
}

const APPS: [&str; 3] = ["x", "y", "z"];
const TEAMS: [&str; 2] = ["a", "b"];

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    (
        0..3usize,
        0..3usize,
        proptest::option::of(0..2usize),
        proptest::option::of(prop_oneof![Just(80u16), Just(8080u16)]),
        any::<bool>(),
        0..2usize,
    )
        .prop_map(|(ns, app, tier, http, dns, node)| PodSpec {
            ns,
            app,
            tier,
            http,
            dns,
            node,
        })
}

fn peer() -> impl Strategy<Value = PeerSpec> {
    prop_oneof![
        (0..3usize).prop_map(PeerSpec::Pods),
        (0..2usize).prop_map(PeerSpec::Namespace),
        (0..2usize, 0..3usize).prop_map(|(a, b)| PeerSpec::NsAndPods(a, b)),
        (0..4u8).prop_map(PeerSpec::IpBlock),
        Just(PeerSpec::World),
    ]
}

fn port() -> impl Strategy<Value = PortSpec> {
    prop_oneof![
        Just(PortSpec::Http),
        Just(PortSpec::Named),
        Just(PortSpec::Dns),
        Just(PortSpec::Range),
    ]
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    (
        proptest::collection::vec(peer(), 0..3),
        proptest::collection::vec(port(), 0..3),
    )
        .prop_map(|(peers, ports)| RuleSpec { peers, ports })
}

/// A random policy.
pub fn policy() -> impl Strategy<Value = PolicySpec> {
    let rules = || proptest::collection::vec(rule(), 0..3);
    prop_oneof![
        (
            0..3usize,
            proptest::option::of(0..3usize),
            proptest::option::of(rules()),
            proptest::option::of(rules())
        )
            .prop_map(|(ns, app, ingress, egress)| PolicySpec::Np {
                ns,
                app,
                ingress,
                egress
            }),
        (0..3usize, 0..3usize, rules(), rules(), any::<bool>()).prop_map(
            |(ns, app, ingress, deny, l7)| PolicySpec::Cnp {
                ns,
                app,
                ingress,
                deny,
                l7
            }
        ),
        (
            0..4u8,
            0..2usize,
            proptest::collection::vec((0..3u8, rule()), 1..3),
            any::<bool>()
        )
            .prop_map(|(priority, ns, rules, baseline)| PolicySpec::Anp {
                priority,
                ns,
                rules,
                baseline
            }),
    ]
}

fn svc_spec() -> impl Strategy<Value = SvcSpec> {
    (
        (0..3usize, 0..3usize, any::<bool>(), any::<bool>()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |((ns, app, named_target, affinity), (node_port, external_local, internal_local))| {
                SvcSpec {
                    ns,
                    app,
                    named_target,
                    affinity,
                    node_port,
                    external_local: external_local && node_port,
                    internal_local,
                }
            },
        )
}

/// Clusters of up to `max_pods` pods on no nodes (the synthetic one) or one node: the
/// eBPF engine runs one node's datapath.
pub fn spec(max_pods: usize) -> impl Strategy<Value = Spec> {
    spec_on_nodes(max_pods, 1)
}

/// Clusters of up to `max_pods` pods on no nodes (the synthetic one) up to `max_nodes`.
pub fn spec_on_nodes(max_pods: usize, max_nodes: usize) -> impl Strategy<Value = Spec> {
    (
        0..max_nodes + 1,
        proptest::collection::vec(0..2usize, 3),
        proptest::collection::vec(pod_spec(), 1..max_pods),
        proptest::collection::vec(svc_spec(), 0..3),
        proptest::collection::vec(policy(), 0..4),
    )
        .prop_map(|(nodes, ns_team, pods, services, policies)| Spec {
            nodes,
            ns_team,
            pods,
            services,
            policies,
        })
}

/// The address of pod `i`.
pub fn pod_ip(i: usize) -> String {
    format!("10.244.0.{}", 10 + i)
}

/// The name of node `k`.
pub fn node_name(k: usize) -> String {
    format!("n{k}")
}

/// The address of node `k`.
pub fn node_ip(k: usize) -> String {
    format!("172.18.0.{}", 1 + k)
}

/// The node port of service `i` (NodePort services only).
pub fn node_port(i: usize) -> u16 {
    30080 + i as u16
}

fn peers_yaml(out: &mut String, indent: &str, peers: &[PeerSpec], kind: &str) {
    for p in peers {
        match (p, kind) {
            (PeerSpec::Pods(a), "np") => {
                let _ = writeln!(
                    out,
                    "{indent}- podSelector: {{matchLabels: {{app: {}}}}}",
                    APPS[*a]
                );
            }
            (PeerSpec::Namespace(t), "np") => {
                let _ = writeln!(
                    out,
                    "{indent}- namespaceSelector: {{matchLabels: {{team: {}}}}}",
                    TEAMS[*t]
                );
            }
            (PeerSpec::NsAndPods(t, a), "np") => {
                let _ = writeln!(
                    out,
                    "{indent}- namespaceSelector: {{matchLabels: {{team: {}}}}}\n{indent}  podSelector: {{matchLabels: {{app: {}}}}}",
                    TEAMS[*t], APPS[*a]
                );
            }
            (PeerSpec::IpBlock(k), "np") => {
                let _ = match k {
                    0 => writeln!(
                        out,
                        "{indent}- ipBlock: {{cidr: 10.244.0.0/24, except: [10.244.0.10/31]}}"
                    ),
                    1 => writeln!(out, "{indent}- ipBlock: {{cidr: {}/32}}", pod_ip(1)),
                    2 => writeln!(out, "{indent}- ipBlock: {{cidr: 192.168.0.0/16}}"),
                    _ => writeln!(
                        out,
                        "{indent}- ipBlock: {{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}"
                    ),
                };
            }
            (PeerSpec::World, "np") => {
                let _ = writeln!(out, "{indent}- ipBlock: {{cidr: 203.0.113.0/24}}");
            }
            _ => {}
        }
    }
}

fn np_ports(out: &mut String, indent: &str, ports: &[PortSpec]) {
    if ports.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}ports:");
    for p in ports {
        let _ = match p {
            PortSpec::Http => writeln!(out, "{indent}- {{protocol: TCP, port: 80}}"),
            PortSpec::Named => writeln!(out, "{indent}- {{protocol: TCP, port: http}}"),
            PortSpec::Dns => writeln!(out, "{indent}- {{protocol: UDP, port: 53}}"),
            PortSpec::Range => writeln!(
                out,
                "{indent}- {{protocol: TCP, port: 8000, endPort: 8100}}"
            ),
        };
    }
}

fn cnp_rule(out: &mut String, r: &RuleSpec, dir: &str, l7: bool) {
    let start = out.len();
    let line = |out: &mut String, s: String| {
        let first = out.len() == start;
        let _ = writeln!(out, "    {} {s}", if first { "-" } else { " " });
    };
    let eps: Vec<String> = r
        .peers
        .iter()
        .filter_map(|p| match p {
            PeerSpec::Pods(a) => Some(format!("{{matchLabels: {{app: {}}}}}", APPS[*a])),
            PeerSpec::NsAndPods(_, a) => {
                Some(format!("{{matchLabels: {{app: {}, tier: fe}}}}", APPS[*a]))
            }
            _ => None,
        })
        .collect();
    if !eps.is_empty() {
        line(out, format!("{dir}Endpoints: [{}]", eps.join(", ")));
    }
    // Entities go in one list: a key may appear only once in a YAML mapping.
    let mut entities = Vec::new();
    if r.peers.iter().any(|p| matches!(p, PeerSpec::World)) {
        entities.push("world");
    }
    if r.peers.iter().any(|p| matches!(p, PeerSpec::Namespace(_))) {
        entities.push("cluster");
    }
    if !entities.is_empty() {
        line(out, format!("{dir}Entities: [{}]", entities.join(", ")));
    }
    if let Some(PeerSpec::IpBlock(k)) = r.peers.iter().find(|p| matches!(p, PeerSpec::IpBlock(_))) {
        let cidr = if *k % 2 == 0 {
            "10.244.0.0/24"
        } else {
            "192.168.0.0/16"
        };
        line(out, format!("{dir}CIDR: [{cidr}]"));
    }
    if !r.ports.is_empty() {
        let ports: Vec<String> = r
            .ports
            .iter()
            .map(|p| match p {
                PortSpec::Http => "{port: \"80\", protocol: TCP}".to_string(),
                PortSpec::Named => "{port: http, protocol: TCP}".to_string(),
                PortSpec::Dns => "{port: \"53\", protocol: UDP}".to_string(),
                PortSpec::Range => "{port: \"8000\", endPort: 8100, protocol: ANY}".to_string(),
            })
            .collect();
        let rules = if l7 {
            ", rules: {http: [{method: GET}]}"
        } else {
            ""
        };
        line(
            out,
            format!("toPorts: [{{ports: [{}]{rules}}}]", ports.join(", ")),
        );
    }
    if out.len() == start {
        line(out, format!("{dir}Entities: [all]"));
    }
}

/// Renders the cluster as manifests.
pub fn to_yaml(s: &Spec) -> String {
    let mut out = String::new();
    for (i, t) in s.ns_team.iter().enumerate() {
        let _ = writeln!(
            out,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns{i}\n  labels: {{team: {}}}",
            TEAMS[*t]
        );
    }
    for k in 0..s.nodes {
        let _ = writeln!(
            out,
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {}\nstatus:\n  addresses: [{{type: InternalIP, address: {}}}]",
            node_name(k),
            node_ip(k)
        );
    }
    for (i, p) in s.pods.iter().enumerate() {
        let tier = p
            .tier
            .map(|t| format!(", tier: {}", ["fe", "be"][t]))
            .unwrap_or_default();
        let node = if s.nodes > 0 {
            format!("\n  nodeName: {}", node_name(p.node % s.nodes))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\n  namespace: ns{}\n  labels: {{app: {}{tier}}}\nspec:{node}\n  containers:\n  - name: c\n    image: i",
            p.ns, APPS[p.app]
        );
        if p.http.is_some() || p.dns {
            let _ = writeln!(out, "    ports:");
            if let Some(h) = p.http {
                let _ = writeln!(
                    out,
                    "    - {{name: http, containerPort: {h}, protocol: TCP}}"
                );
            }
            if p.dns {
                let _ = writeln!(out, "    - {{name: dns, containerPort: 53, protocol: UDP}}");
            }
        }
        let _ = writeln!(out, "status:\n  podIP: {}", pod_ip(i));
    }
    for (i, svc) in s.services.iter().enumerate() {
        let target = if svc.named_target { "http" } else { "8080" };
        let aff = if svc.affinity {
            "\n  sessionAffinity: ClientIP"
        } else {
            ""
        };
        let mut extra = String::new();
        if svc.node_port {
            extra.push_str("\n  type: NodePort");
        }
        if svc.external_local {
            extra.push_str("\n  externalTrafficPolicy: Local");
        }
        if svc.internal_local {
            extra.push_str("\n  internalTrafficPolicy: Local");
        }
        let node_port = if svc.node_port {
            format!(", nodePort: {}", node_port(i))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n  namespace: ns{}\nspec:\n  clusterIP: 10.96.0.{}\n  selector: {{app: {}}}{aff}{extra}\n  ports:\n  - {{name: web, port: 80, protocol: TCP, targetPort: {target}{node_port}}}",
            svc.ns,
            10 + i,
            APPS[svc.app]
        );
    }
    let first_baseline = s
        .policies
        .iter()
        .position(|p| matches!(p, PolicySpec::Anp { baseline: true, .. }));
    for (i, pol) in s.policies.iter().enumerate() {
        match pol {
            PolicySpec::Np {
                ns,
                app,
                ingress,
                egress,
            } => {
                let sel = app
                    .map(|a| format!("{{matchLabels: {{app: {}}}}}", APPS[a]))
                    .unwrap_or_else(|| "{}".into());
                let _ = writeln!(
                    out,
                    "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np{i}\n  namespace: ns{ns}\nspec:\n  podSelector: {sel}"
                );
                let mut types = Vec::new();
                for (dir, rules, peer_key) in
                    [("ingress", ingress, "from"), ("egress", egress, "to")]
                {
                    let Some(rules) = rules else { continue };
                    types.push(if dir == "ingress" {
                        "Ingress"
                    } else {
                        "Egress"
                    });
                    let _ = writeln!(out, "  {dir}:");
                    if rules.is_empty() {
                        out.truncate(out.len() - dir.len() - 4);
                        let _ = writeln!(out, "  {dir}: []");
                    }
                    for r in rules {
                        let _ = writeln!(out, "  - {peer_key}:");
                        if r.peers.is_empty() {
                            out.truncate(out.len() - peer_key.len() - 6);
                            let _ = writeln!(out, "  - {peer_key}: []");
                        }
                        peers_yaml(&mut out, "    ", &r.peers, "np");
                        np_ports(&mut out, "    ", &r.ports);
                    }
                }
                let _ = writeln!(out, "  policyTypes: [{}]", types.join(", "));
            }
            PolicySpec::Cnp {
                ns,
                app,
                ingress,
                deny,
                l7,
            } => {
                let _ = writeln!(
                    out,
                    "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: cnp{i}\n  namespace: ns{ns}\nspec:\n  endpointSelector: {{matchLabels: {{app: {}}}}}",
                    APPS[*app]
                );
                if !ingress.is_empty() {
                    let _ = writeln!(out, "  ingress:");
                    for r in ingress {
                        cnp_rule(&mut out, r, "from", *l7);
                    }
                }
                if !deny.is_empty() {
                    let _ = writeln!(out, "  ingressDeny:");
                    for r in deny {
                        cnp_rule(&mut out, r, "from", false);
                    }
                }
                if ingress.is_empty() && deny.is_empty() {
                    let _ = writeln!(out, "  ingress: []");
                }
            }
            PolicySpec::Anp {
                priority,
                ns,
                rules,
                baseline,
            } => {
                let baseline = &(*baseline && first_baseline == Some(i));
                let (kind, name, prio) = if *baseline {
                    (
                        "BaselineAdminNetworkPolicy",
                        "default".to_string(),
                        String::new(),
                    )
                } else {
                    (
                        "AdminNetworkPolicy",
                        format!("anp{i}"),
                        format!("\n  priority: {priority}"),
                    )
                };
                let _ = writeln!(
                    out,
                    "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:{prio}\n  subject:\n    namespaces: {{matchLabels: {{team: {}}}}}\n  ingress:",
                    TEAMS[*ns]
                );
                for (j, (act, r)) in rules.iter().enumerate() {
                    let act = match (act, baseline) {
                        (0, _) => "Allow",
                        (1, _) => "Deny",
                        (_, true) => "Deny",
                        _ => "Pass",
                    };
                    let _ = writeln!(out, "  - name: r{j}\n    action: {act}\n    from:");
                    let mut any = false;
                    for p in &r.peers {
                        let _ = match p {
                            PeerSpec::Pods(a) | PeerSpec::NsAndPods(_, a) => writeln!(
                                out,
                                "    - pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: {}}}}}}}",
                                APPS[*a]
                            ),
                            PeerSpec::Namespace(t) => writeln!(
                                out,
                                "    - namespaces: {{matchLabels: {{team: {}}}}}",
                                TEAMS[*t]
                            ),
                            _ => continue,
                        };
                        any = true;
                    }
                    if !any {
                        let _ = writeln!(out, "    - namespaces: {{}}");
                    }
                    let ports: Vec<String> = r
                        .ports
                        .iter()
                        .map(|p| match p {
                            PortSpec::Http => "{portNumber: {protocol: TCP, port: 80}}".to_string(),
                            PortSpec::Named => "{namedPort: http}".to_string(),
                            PortSpec::Dns => "{portNumber: {protocol: UDP, port: 53}}".to_string(),
                            PortSpec::Range => {
                                "{portRange: {protocol: TCP, start: 8000, end: 8100}}".to_string()
                            }
                        })
                        .collect();
                    if !ports.is_empty() {
                        let _ = writeln!(out, "    ports: [{}]", ports.join(", "));
                    }
                }
            }
        }
    }
    out
}

/// Loads a generated cluster through the frontend.
pub fn load(spec: &Spec) -> Cluster {
    let yaml = to_yaml(spec);
    let loaded = driver::load_texts(&[("gen.yaml", &yaml)], &BuildOptions::default());
    let errors: Vec<_> = loaded.diags.iter().filter(|d| d.is_error()).collect();
    assert!(
        errors.is_empty(),
        "generated input is invalid: {errors:?}\n{yaml}"
    );
    loaded.cluster
}
