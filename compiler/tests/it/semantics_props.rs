//! Properties of the reference semantics over small random clusters.
//!
//! Each property states a consequence of the specifications that holds for every
//! cluster: allow rules only add, deny rules only remove, unselected pods are not isolated,
//! a Pass with nothing below it changes nothing, and replies follow their connection.

use pipec::model::{
    AdminAction, AdminPeer, AdminPolicy, AdminRule, AdminSubject, AdminTier, CiliumPolicy,
    CiliumRule, CiliumSpec, Cluster, ContainerPort, DefaultDeny, Labels, Namespace, NetworkPolicy,
    NpPeer, NpPort, NpRule, Origin, Pod, PolicyTypes, PortRef, Protocol, RuleRef, Selector,
};
use pipec::semantics::{evaluate, evaluate_reply, Context, Destination, Peer, Probe, Tier};
use pipec::source::FieldPath;
use proptest::prelude::*;

const NAMESPACES: [&str; 2] = ["x", "y"];
const APPS: [&str; 2] = ["a", "b"];

#[derive(Clone, Debug)]
enum PeerSpec {
    Pods(usize),
    Namespace(usize),
    Both(usize, usize),
    Block(u8),
}

#[derive(Clone, Debug)]
enum PortSpec {
    Any,
    Tcp80,
    Named,
    Udp,
    Range,
}

#[derive(Clone, Debug)]
struct RuleSpec {
    peers: Vec<PeerSpec>,
    ports: PortSpec,
}

#[derive(Clone, Debug)]
struct NpSpec {
    ns: usize,
    app: Option<usize>,
    ingress: Option<Vec<RuleSpec>>,
    egress: Option<Vec<RuleSpec>>,
}

#[derive(Clone, Debug)]
struct World {
    pods: Vec<(usize, usize)>,
    policies: Vec<NpSpec>,
    probes: Vec<(usize, usize, usize)>,
}

fn peer() -> impl Strategy<Value = PeerSpec> {
    prop_oneof![
        (0..2usize).prop_map(PeerSpec::Pods),
        (0..2usize).prop_map(PeerSpec::Namespace),
        (0..2usize, 0..2usize).prop_map(|(n, a)| PeerSpec::Both(n, a)),
        (0..6u8).prop_map(PeerSpec::Block),
    ]
}

fn port() -> impl Strategy<Value = PortSpec> {
    prop_oneof![
        Just(PortSpec::Any),
        Just(PortSpec::Tcp80),
        Just(PortSpec::Named),
        Just(PortSpec::Udp),
        Just(PortSpec::Range),
    ]
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    (prop::collection::vec(peer(), 0..3), port())
        .prop_map(|(peers, ports)| RuleSpec { peers, ports })
}

fn rules() -> impl Strategy<Value = Option<Vec<RuleSpec>>> {
    prop::option::of(prop::collection::vec(rule(), 0..3))
}

fn np() -> impl Strategy<Value = NpSpec> {
    (0..2usize, prop::option::of(0..2usize), rules(), rules()).prop_map(
        |(ns, app, ingress, egress)| NpSpec {
            ns,
            app,
            ingress: if ingress.is_none() && egress.is_none() {
                Some(Vec::new())
            } else {
                ingress
            },
            egress,
        },
    )
}

fn world(max_policies: usize) -> impl Strategy<Value = World> {
    (
        prop::collection::vec((0..2usize, 0..2usize), 2..5),
        prop::collection::vec(np(), 0..max_policies + 1),
        prop::collection::vec((0..5usize, 0..5usize, 0..5usize), 1..8),
    )
        .prop_map(|(pods, policies, probes)| World {
            pods,
            policies,
            probes,
        })
}

fn origin(kind: &str, ns: Option<&str>, name: &str) -> Origin {
    Origin {
        kind: kind.into(),
        namespace: ns.map(str::to_string),
        name: name.into(),
        span: None,
    }
}

fn rule_ref(origin: &Origin, section: &str, index: usize) -> RuleRef {
    RuleRef {
        origin: origin.clone(),
        section: section.into(),
        index,
        name: None,
        path: FieldPath::parse(&format!("spec.{section}[{index}]")),
        span: None,
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn app(a: usize) -> Selector {
    Selector::from_labels(labels(&[("app", APPS[a])]))
}

fn pod_ip(i: usize) -> std::net::IpAddr {
    format!("10.244.0.{}", i + 10).parse().expect("constant IP")
}

fn np_rule(o: &Origin, section: &str, i: usize, r: &RuleSpec) -> NpRule {
    let peers = r
        .peers
        .iter()
        .map(|p| match p {
            PeerSpec::Pods(a) => NpPeer::Pods {
                namespaces: None,
                pods: Some(app(*a)),
            },
            PeerSpec::Namespace(n) => NpPeer::Pods {
                namespaces: Some(Selector::from_labels(labels(&[(
                    "kubernetes.io/metadata.name",
                    NAMESPACES[*n],
                )]))),
                pods: None,
            },
            PeerSpec::Both(n, a) => NpPeer::Pods {
                namespaces: Some(Selector::from_labels(labels(&[(
                    "kubernetes.io/metadata.name",
                    NAMESPACES[*n],
                )]))),
                pods: Some(app(*a)),
            },
            PeerSpec::Block(h) => NpPeer::IpBlock {
                cidr: ipnet::IpNet::new(pod_ip(*h as usize), 31)
                    .expect("valid prefix")
                    .trunc(),
                except: Vec::new(),
            },
        })
        .collect();
    let ports = match r.ports {
        PortSpec::Any => Vec::new(),
        PortSpec::Tcp80 => vec![NpPort {
            protocol: Protocol::Tcp,
            port: Some(PortRef::Number(80)),
            end_port: None,
        }],
        PortSpec::Named => vec![NpPort {
            protocol: Protocol::Tcp,
            port: Some(PortRef::Name("web".into())),
            end_port: None,
        }],
        PortSpec::Udp => vec![NpPort {
            protocol: Protocol::Udp,
            port: None,
            end_port: None,
        }],
        PortSpec::Range => vec![NpPort {
            protocol: Protocol::Tcp,
            port: Some(PortRef::Number(79)),
            end_port: Some(81),
        }],
    };
    NpRule {
        peers,
        ports,
        rule: rule_ref(o, section, i),
    }
}

fn network_policy(i: usize, p: &NpSpec) -> NetworkPolicy {
    let ns = NAMESPACES[p.ns];
    let name = format!("np{i}");
    let o = origin("NetworkPolicy", Some(ns), &name);
    let list = |section: &str, rules: &Option<Vec<RuleSpec>>| -> Vec<NpRule> {
        rules
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, r)| np_rule(&o, section, j, r))
            .collect()
    };
    NetworkPolicy {
        namespace: ns.into(),
        name,
        pod_selector: p.app.map(app).unwrap_or_default(),
        policy_types: PolicyTypes {
            ingress: p.ingress.is_some(),
            egress: p.egress.is_some(),
        },
        ingress: list("ingress", &p.ingress),
        egress: list("egress", &p.egress),
        origin: o.clone(),
    }
}

fn cluster(w: &World) -> Cluster {
    let mut c = Cluster {
        name: "default".into(),
        ..Cluster::default()
    };
    for ns in NAMESPACES {
        c.namespaces.insert(
            ns.into(),
            Namespace {
                name: ns.into(),
                labels: labels(&[("kubernetes.io/metadata.name", ns)]),
                origin: None,
            },
        );
    }
    for (i, (ns, a)) in w.pods.iter().enumerate() {
        let name = format!("p{i}");
        c.pods.push(Pod {
            namespace: NAMESPACES[*ns].into(),
            name: name.clone(),
            labels: labels(&[("app", APPS[*a])]),
            ips: vec![pod_ip(i)],
            node: None,
            ports: vec![ContainerPort {
                name: Some("web".into()),
                port: 80 + *a as u16,
                protocol: Protocol::Tcp,
            }],
            extra_ports: Vec::new(),
            service_account: "default".into(),
            host_network: false,
            cilium_labels: Labels::new(),
            owner: None,
            origin: origin("Pod", Some(NAMESPACES[*ns]), &name),
        });
    }
    c.pods
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    c.network_policies = w
        .policies
        .iter()
        .enumerate()
        .map(|(i, p)| network_policy(i, p))
        .collect();
    c.network_policies
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    c
}

const PORTS: [(Protocol, Option<u16>); 5] = [
    (Protocol::Tcp, Some(80)),
    (Protocol::Tcp, Some(81)),
    (Protocol::Tcp, Some(443)),
    (Protocol::Udp, Some(53)),
    (Protocol::Icmp, None),
];

fn probes(c: &Cluster, w: &World) -> Vec<Probe> {
    let n = c.pods.len();
    w.probes
        .iter()
        .map(|(f, t, p)| {
            let (protocol, port) = PORTS[*p];
            Probe {
                from: Peer::Pod(pipec::model::PodId((*f % n) as u32)),
                to: Destination::Pod(pipec::model::PodId((*t % n) as u32)),
                protocol,
                port,
            }
        })
        .collect()
}

fn verdicts(c: &Cluster, probes: &[Probe]) -> Vec<bool> {
    let ctx = Context::new(c);
    probes
        .iter()
        .map(|p| {
            evaluate(&ctx, p)
                .allowed()
                .expect("direct probes have one path")
        })
        .collect()
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Adding an allow rule to a policy, or a policy that allows everything, never turns an
    /// allowed connection into a denied one.
    #[test]
    fn allow_rules_and_allow_all_policies_only_add(w in world(3), extra in rule(), which in 0..3usize) {
        let before = cluster(&w);
        let probes = probes(&before, &w);
        let old = verdicts(&before, &probes);
        let mut w2 = w.clone();
        if let Some(p) = w2.policies.get_mut(which) {
            if let Some(list) = p.ingress.as_mut() {
                list.push(extra.clone());
            }
            if let Some(list) = p.egress.as_mut() {
                list.push(extra);
            }
        }
        w2.policies.push(NpSpec {
            ns: which % 2,
            app: None,
            ingress: Some(vec![RuleSpec { peers: Vec::new(), ports: PortSpec::Any }]),
            egress: Some(vec![RuleSpec { peers: Vec::new(), ports: PortSpec::Any }]),
        });
        let after = cluster(&w2);
        let new = verdicts(&after, &probes);
        for (i, (o, n)) in old.iter().zip(&new).enumerate() {
            prop_assert!(!o || *n, "probe {i} {:?} was allowed and is now denied", probes[i]);
        }
    }

    /// A pod that no policy selects for a direction is not isolated in that direction.
    #[test]
    fn unselected_pods_are_not_isolated(w in world(3)) {
        let c = cluster(&w);
        let ctx = Context::new(&c);
        for probe in probes(&c, &w) {
            let (Peer::Pod(src), Destination::Pod(dst)) = (probe.from, probe.to) else { continue };
            let outcome = evaluate(&ctx, &probe);
            let path = &outcome.paths[0];
            let selects = |pod: pipec::model::PodId, ingress: bool| {
                let p = c.pod(pod);
                c.network_policies.iter().any(|np| {
                    np.namespace == p.namespace
                        && np.pod_selector.matches(&p.labels)
                        && if ingress { np.policy_types.ingress } else { np.policy_types.egress }
                })
            };
            if !selects(src, false) {
                prop_assert_eq!(path.egress.tier, Tier::Default);
                prop_assert!(path.egress.verdict.is_allowed());
            }
            if !selects(dst, true) {
                prop_assert_eq!(path.ingress.tier, Tier::Default);
                prop_assert!(path.ingress.verdict.is_allowed());
            }
        }
    }

    /// Adding a Cilium deny rule never turns a denied connection into an allowed one.
    #[test]
    fn deny_rules_only_remove(w in world(3), ns in 0..2usize, a in 0..2usize, ingress in any::<bool>(), ports in port()) {
        let before = cluster(&w);
        let probes = probes(&before, &w);
        let old = verdicts(&before, &probes);
        let mut after = before.clone();
        let o = origin("CiliumNetworkPolicy", Some(NAMESPACES[ns]), "deny");
        let mut sel = app(a);
        sel.match_labels.insert("k8s:io.kubernetes.pod.namespace".into(), NAMESPACES[ns].into());
        let np = np_rule(&o, "x", 0, &RuleSpec { peers: Vec::new(), ports });
        let to_ports = if np.ports.is_empty() {
            Vec::new()
        } else {
            vec![pipec::model::CiliumPortRule {
                ports: np.ports.iter().map(|p| pipec::model::CiliumPort {
                    port: p.port.clone(),
                    end_port: p.end_port,
                    protocol: Some(p.protocol),
                }).collect(),
                l7: None,
            }]
        };
        let deny = CiliumRule {
            endpoints: Vec::new(),
            requires: Vec::new(),
            entities: Vec::new(),
            cidrs: Vec::new(),
            any_peer: true,
            to_ports,
            icmp: false,
            rule: rule_ref(&o, if ingress { "ingressDeny" } else { "egressDeny" }, 0),
        };
        let spec = CiliumSpec {
            endpoint_selector: sel,
            ingress: Vec::new(),
            ingress_deny: if ingress { vec![deny.clone()] } else { Vec::new() },
            egress: Vec::new(),
            egress_deny: if ingress { Vec::new() } else { vec![deny] },
            default_deny: DefaultDeny { ingress: Some(false), egress: Some(false) },
            has_ingress: ingress,
            has_egress: !ingress,
        };
        after.cilium_policies.push(CiliumPolicy {
            namespace: Some(NAMESPACES[ns].into()),
            name: "deny".into(),
            specs: vec![spec],
            origin: o,
        });
        let new = verdicts(&after, &probes);
        for (i, (o, n)) in old.iter().zip(&new).enumerate() {
            prop_assert!(*o || !n, "probe {i} {:?} was denied and is now allowed", probes[i]);
        }
    }

    /// With no NetworkPolicy and no baseline, an AdminNetworkPolicy of Pass rules changes
    /// no verdict.
    #[test]
    fn pass_with_nothing_below_changes_nothing(w in world(0), ns in prop::option::of(0..2usize), prio in 0..1000u32) {
        let before = cluster(&w);
        let probes = probes(&before, &w);
        let old = verdicts(&before, &probes);
        let mut after = before.clone();
        let o = origin("AdminNetworkPolicy", None, "pass");
        let subject = match ns {
            Some(n) => Selector::from_labels(labels(&[("kubernetes.io/metadata.name", NAMESPACES[n])])),
            None => Selector::everything(),
        };
        let pass = |section: &str| AdminRule {
            action: AdminAction::Pass,
            peers: vec![AdminPeer::Namespaces(Selector::everything())],
            ports: None,
            rule: rule_ref(&o, section, 0),
        };
        after.admin_policies.push(AdminPolicy {
            name: "pass".into(),
            tier: AdminTier::Admin,
            priority: prio,
            subject: AdminSubject::Namespaces(subject),
            ingress: vec![pass("ingress")],
            egress: vec![pass("egress")],
            origin: o.clone(),
        });
        prop_assert_eq!(old, verdicts(&after, &probes));
    }

    /// Replies are delivered exactly when their connection is allowed, whatever the
    /// reverse direction's policy says.
    #[test]
    fn replies_follow_their_connection(w in world(3)) {
        let c = cluster(&w);
        let ctx = Context::new(&c);
        for probe in probes(&c, &w) {
            let forward = evaluate(&ctx, &probe).allowed();
            prop_assert_eq!(evaluate_reply(&ctx, &probe), forward);
        }
    }
}
