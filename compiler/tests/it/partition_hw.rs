//! Engine `hw` (the hardware flow table first, the MAG for what it passes) against the
//! reference: the shared conformance suite, and random clusters where every packet a
//! hardware rule matches, on the port it arrives on, is decided as the reference decides
//! it: a dropped first packet is one the reference denies, no reply of a connection the
//! reference allows is dropped, and a packet marked allowed by a policy rule is one the
//! MAG's policy stage of that port's direction allows.

use crate::mag_gen;
use pipec::backend::{octeon_cn10k_profile, HwAction, PortDirection};
use pipec::conformance::{run_paths, Engine, Reference};
use pipec::engine::hw::{hw_packet, HwEngine, NodeHw};
use pipec::engine::hwmodel::{Lookup, Tcam};
use pipec::engine::mag::{conn_of_probe, HwVerdict, Outcome, Prober};
use pipec::lower;
use pipec::mag;
use pipec::mag::interp::{Packet, Verdict as MagVerdict};
use pipec::mag::Op;
use pipec::model::Cluster;
use pipec::model::{PodId, Protocol};
use pipec::partition::hints::{Hint, PlacementHint, Resource, Subject};
use pipec::partition::mag_to_plan;
use pipec::semantics::{self, Verdict};
use pipec::semantics::{Destination, Peer, Probe};
use pipec::session::Session;
use proptest::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

#[test]
fn shared_conformance_suite_passes_with_engine_hw() {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance"
    ));
    let engines: Vec<Box<dyn Engine>> = vec![Box::new(Reference), Box::new(HwEngine::default())];
    let report = run_paths(&[dir], &engines).expect("cases are readable");
    assert!(report.passed > 100, "{}", report.summary());
    assert_eq!(report.failed, 0, "{}", report.lines.join("\n"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn hardware_drops_only_what_the_reference_denies(s in mag_gen::spec(6)) {
        let cluster = mag_gen::load(&s);
        let lowered = lower::cluster_to_mag(&cluster, None);
        let info = mag::validate(lowered.mag()).expect("valid");
        let profile = octeon_cn10k_profile();
        let plan = mag_to_plan(lowered.mag(), &info, &profile, &[]);
        prop_assert!(plan.usage.levels <= profile.caps.priority_levels);
        prop_assert!(Tcam::load(&plan.slice, profile.caps.priority_levels, None).is_ok());
        let reference = Reference.prepare(&cluster).expect("reference");
        let hw = HwEngine::default().prepare(&cluster).expect("hw");
        for a in 0..cluster.pods.len() {
            for b in 0..cluster.pods.len() {
                for (protocol, port) in [(Protocol::Tcp, 80), (Protocol::Tcp, 8080), (Protocol::Udp, 53)] {
                    let probe = Probe {
                        from: Peer::Pod(PodId(a as u32)),
                        to: Destination::Pod(PodId(b as u32)),
                        protocol,
                        port: Some(port),
                    };
                    let h = hw.evaluate(&probe);
                    if h.reason.contains("dropped by the hardware") {
                        let r = reference.evaluate(&probe);
                        prop_assert_eq!(r.allowed, Some(false), "hardware dropped {:?}: {}", probe, r.reason);
                    }
                }
            }
        }
    }
}

/// What the hardware did with one packet of a node: the device port it arrived on, and the rule it
/// matched there (`None`: no rule, the port's default path).
#[derive(Clone, Debug)]
struct Seen {
    port: u16,
    drops: Option<bool>,
}

/// Counts of the hardware decisions a check compared.
#[derive(Clone, Copy, Debug, Default)]
struct Compared {
    /// Packets a hardware rule matched.
    matched: usize,
    /// Of those, packets matched on a pod's port (egress policy).
    on_pod_ports: usize,
    /// Of those, packets a rule on a pod's port dropped.
    dropped_on_pod_ports: usize,
}

/// The reference's verdict for a probe whose MAG outcome is `mag` (for a service, the one
/// of the backend the MAG chose).
pub(crate) fn reference_verdict(
    ctx: &semantics::Context<'_>,
    probe: &Probe,
    mag: &Outcome,
) -> Verdict {
    let r = semantics::evaluate(ctx, probe);
    if let Some((ip, port)) = mag.dnat {
        if let Some(p) = r
            .paths
            .iter()
            .find(|p| p.dst_ip == ip && p.dst_port.is_none_or(|d| d == port))
        {
            return p.verdict;
        }
    }
    match (r.verdict, r.paths.first()) {
        (Some(v), _) => v,
        (None, Some(p)) => p.verdict,
        (None, None) => Verdict::Deny,
    }
}

/// Whether the MAG trace of node `node` ran a dropping entry in `table`.
fn policy_dropped(
    prober: &mut Prober<'_>,
    node: &str,
    trace: &pipec::mag::interp::Trace,
    table: &str,
) -> bool {
    let Ok(lowered) = prober.node(node) else {
        return false;
    };
    let mag = lowered.mag();
    let Some(t) = mag.table_by_name(table) else {
        return false;
    };
    trace.hits.iter().any(|h| {
        h.table == t
            && mag
                .action(h.action.action)
                .is_some_and(|a| a.ops.iter().any(|o| matches!(o, Op::Drop)))
    })
}

/// Runs every differential probe of `cluster` and its reply through the MAG, with a
/// hardware model in front of every node that records, and never acts on, what its rules
/// decide; then compares each decision with the reference's.
fn check_hardware_decisions(cluster: &Cluster) -> Result<Compared, String> {
    let profile = octeon_cn10k_profile();
    let levels = profile.caps.priority_levels;
    let seen: Rc<RefCell<Vec<Option<Seen>>>> = Rc::default();
    let load_error: Rc<RefCell<Option<String>>> = Rc::default();
    let mut tables: BTreeMap<String, Option<NodeHw>> = BTreeMap::new();
    let (rec, err) = (seen.clone(), load_error.clone());
    let hook = Box::new(move |node: &str, session: &Session, p: &Packet| {
        let hw =
            tables
                .entry(node.to_string())
                .or_insert_with(|| match NodeHw::load(session, levels) {
                    Ok(hw) => Some(hw),
                    Err(e) => {
                        *err.borrow_mut() = Some(format!("node {node}: {e}"));
                        None
                    }
                });
        let port = hw.as_ref().and_then(|hw| hw.in_port(p));
        let decided = match (hw.as_ref(), hw_packet(p), port) {
            (Some(hw), Some(h), Some(port)) => Some(Seen {
                port,
                drops: match hw.tcam.lookup(port, PortDirection::Ingress, &h) {
                    Lookup::Hit(r) => Some(r.actions.contains(&HwAction::Drop)),
                    Lookup::Default => None,
                },
            }),
            _ => None,
        };
        rec.borrow_mut().push(decided);
        HwVerdict::Software
    });
    let mut prober = Prober::new(cluster).with_hardware(profile, hook);
    let ctx = semantics::Context::new(cluster);
    let mut n = Compared::default();
    for probe in crate::mag_differential::probes(cluster) {
        seen.borrow_mut().clear();
        let first = prober.connect(&conn_of_probe(cluster, &probe))?;
        if let Some(e) = load_error.borrow().as_ref() {
            return Err(format!("the slice does not load: {e}"));
        }
        let expected = reference_verdict(&ctx, &probe, &first);
        let decisions: Vec<Option<Seen>> = seen.borrow_mut().drain(..).collect();
        for (d, (node, trace)) in decisions.iter().zip(&first.traces) {
            let Some(Seen {
                port,
                drops: Some(drops),
            }) = d
            else {
                continue;
            };
            n.matched += 1;
            let pod_port = *port != 0;
            if pod_port {
                n.on_pod_ports += 1;
                n.dropped_on_pod_ports += usize::from(*drops);
            }
            if *drops && expected != Verdict::Deny {
                return Err(format!(
                    "{probe:?}: hardware dropped the first packet on node {node} port {port}, the reference says {expected:?}"
                ));
            }
            // A mark says "this policy stage allows it": the egress stage on a pod's port,
            // the ingress stage on the uplink.
            let table = if pod_port {
                pipec::mag::pipeline::table::EGRESS_POLICY
            } else {
                pipec::mag::pipeline::table::INGRESS_POLICY
            };
            if !*drops && policy_dropped(&mut prober, node, trace, table) {
                return Err(format!(
                    "{probe:?}: hardware marked the first packet allowed on node {node} port {port}, but {table} denies it"
                ));
            }
        }
        if first.verdict == MagVerdict::Deny || expected == Verdict::Deny {
            continue;
        }
        let reply = prober.reply(&first)?;
        let decisions: Vec<Option<Seen>> = seen.borrow_mut().drain(..).collect();
        for (d, (node, _)) in decisions.iter().zip(&reply.traces) {
            let Some(Seen {
                port,
                drops: Some(drops),
            }) = d
            else {
                continue;
            };
            n.matched += 1;
            if *port != 0 {
                n.on_pod_ports += 1;
            }
            if *drops {
                return Err(format!(
                    "{probe:?}: the reference allows it, but hardware dropped the reply on node {node} port {port}"
                ));
            }
        }
    }
    Ok(n)
}

/// A NetworkPolicy that isolates one app's pods for ingress and lets them send only by a few
/// egress rules: the pods whose egress drops are sound, so that the random clusters put
/// drops on pods' ports (a pod that accepts connections replies to them, and a drop on
/// its port of all it sends is rightly left to eBPF).
fn isolating() -> impl Strategy<Value = mag_gen::PolicySpec> {
    use mag_gen::{PeerSpec, PolicySpec, PortSpec, RuleSpec};
    let peer = prop_oneof![
        (0..3usize).prop_map(PeerSpec::Pods),
        (0..2usize).prop_map(PeerSpec::Namespace),
        (0..4u8).prop_map(PeerSpec::IpBlock),
        Just(PeerSpec::World),
    ];
    let port = prop_oneof![
        Just(PortSpec::Http),
        Just(PortSpec::Dns),
        Just(PortSpec::Range)
    ];
    let rule = (
        proptest::collection::vec(peer, 0..3),
        proptest::collection::vec(port, 0..2),
    )
        .prop_map(|(peers, ports)| RuleSpec { peers, ports });
    (0..3usize, 0..3usize, proptest::collection::vec(rule, 0..3)).prop_map(|(ns, app, egress)| {
        PolicySpec::Np {
            ns,
            app: Some(app),
            ingress: Some(Vec::new()),
            egress: Some(egress),
        }
    })
}

/// The random clusters of the hardware tests: pods on up to two nodes, services, node
/// ports, NetworkPolicy egress and ingress, Cilium and admin policies, and one isolating
/// policy.
pub(crate) fn hw_specs() -> impl Strategy<Value = mag_gen::Spec> {
    (mag_gen::spec(6), isolating()).prop_map(|(mut s, p)| {
        s.policies.push(p);
        s
    })
}

/// Random clusters ([`hw_specs`]), every hardware decision compared. The runner is explicit, so the test can fail when the generator
/// stops producing what it must exercise: rules on pods' ports that match, and drop,
/// packets.
#[test]
fn hardware_decisions_equal_the_reference_replies_included() {
    let config = ProptestConfig {
        cases: 48,
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let total = Cell::new(Compared::default());
    let result = runner.run(&hw_specs(), |s| {
        let c = mag_gen::load(&s);
        match check_hardware_decisions(&c) {
            Ok(n) => {
                let t = total.get();
                total.set(Compared {
                    matched: t.matched + n.matched,
                    on_pod_ports: t.on_pod_ports + n.on_pod_ports,
                    dropped_on_pod_ports: t.dropped_on_pod_ports + n.dropped_on_pod_ports,
                });
                Ok(())
            }
            Err(e) => Err(TestCaseError::fail(format!(
                "{e}\n--- input ---\n{}",
                mag_gen::to_yaml(&s)
            ))),
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = total.get();
    eprintln!("hardware decisions compared: {t:?}");
    assert!(t.matched > 1000, "{t:?}");
    assert!(t.on_pod_ports > 100, "{t:?}");
    assert!(t.dropped_on_pod_ports > 10, "{t:?}");
}

/// Pod `a` accepts nothing and may send only TCP 80 to app `b`, which a Service fronts.
const ISOLATED: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default, labels: {app: a}}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.244.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: default, labels: {app: b}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}, {containerPort: 8080}]}]}
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: default}
spec: {selector: {app: b}, ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate-a, namespace: default}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Ingress, Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: b}}}]
    ports: [{port: 80}]
";

/// The cluster of one manifest file, its lowered MAG and its plan for `octeon-cn10k`.
fn planned(name: &str, text: &str) -> (Cluster, lower::Lowered, pipec::partition::Plan) {
    let loaded = pipec::driver::load_texts(&[(name, text)], &Default::default());
    assert!(!loaded.has_errors(), "{name} has errors");
    let cluster = loaded.cluster;
    let lowered = lower::cluster_to_mag(&cluster, None);
    let info = mag::validate(lowered.mag()).expect("valid");
    let plan = mag_to_plan(lowered.mag(), &info, &octeon_cn10k_profile(), &[]);
    (cluster, lowered, plan)
}

/// A pod whose policy denies all its ingress and all but one kind of egress: its egress
/// drop is sound (nobody can open a connection to it, so it never replies), goes to
/// hardware on its own port, and engine `hw` drops its packets there, but not its packets
/// to the Service of an allowed backend, which software translates first.
#[test]
fn an_isolated_pods_egress_drop_sits_on_its_port() {
    let (cluster, lowered, plan) = planned("isolate.yaml", ISOLATED);
    let pod = |name: &str| PodId(cluster.pods.iter().position(|p| p.name == name).unwrap() as u32);
    let (a, b) = (pod("a"), pod("b"));
    let ep = lowered.state.endpoints[&cluster.pod(a).key()];
    let on_a: Vec<_> = plan
        .slice
        .rules
        .iter()
        .filter(|r| u32::from(r.port) == ep)
        .collect();
    let text = pipec::partition::plan_to_text(&plan);
    assert!(
        on_a.iter().any(|r| r.actions.contains(&HwAction::Drop)),
        "{text}"
    );
    let hw = HwEngine::default().prepare(&cluster).expect("hw");
    let probe = |from: PodId, to: Destination, port: u16| {
        hw.evaluate(&Probe {
            from: Peer::Pod(from),
            to,
            protocol: Protocol::Tcp,
            port: Some(port),
        })
    };
    let v = probe(a, Destination::Pod(b), 8080);
    assert_eq!(
        (v.allowed, v.reason.as_str()),
        (Some(false), "dropped by the hardware flow table"),
        "{text}"
    );
    let v = probe(a, Destination::Pod(b), 80);
    assert_eq!(v.allowed, Some(true), "{}: {text}", v.reason);
    let svc = Destination::Service {
        service: pipec::model::ServiceId(0),
        port: 80,
    };
    let v = probe(a, svc, 80);
    assert_eq!(v.allowed, Some(true), "{}: {text}", v.reason);
    // b's packets to a arrive on b's port, which holds no rule: the MAG denies them at a's
    // ingress policy.
    let v = probe(b, Destination::Pod(a), 80);
    assert_eq!(
        (v.allowed, v.reason.as_str()),
        (Some(false), "denied by the MAG")
    );
}

/// Pod `a` may send nothing, and accepts TCP 80 from app `b` only.
const SERVING: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default, labels: {app: a}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
status: {podIP: 10.244.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: default, labels: {app: b}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: default, labels: {app: c}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
status: {podIP: 10.244.0.12}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: serve-b, namespace: default}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: b}}}]
    ports: [{port: 80}]
";

/// A pod that serves some peers and may open nothing: its egress drop of every
/// destination would drop its replies to the peers it serves, so it is narrowed to the
/// other identities' addresses; its packets to them are dropped on its port, and its
/// replies to the peers it serves go on to software.
#[test]
fn a_serving_pods_egress_drop_is_narrowed_to_the_peers_it_does_not_serve() {
    let (cluster, _, plan) = planned("serving.yaml", SERVING);
    let text = pipec::partition::plan_to_text(&plan);
    let narrowed = plan
        .placements
        .iter()
        .find(|p| p.chain.iter().any(|s| s.starts_with("sound for ")));
    assert!(narrowed.is_some(), "{text}");
    let pod = |name: &str| PodId(cluster.pods.iter().position(|p| p.name == name).unwrap() as u32);
    let hw = HwEngine::default().prepare(&cluster).expect("hw");
    let probe = |from: &str, to: &str| {
        hw.evaluate(&Probe {
            from: Peer::Pod(pod(from)),
            to: Destination::Pod(pod(to)),
            protocol: Protocol::Tcp,
            port: Some(80),
        })
    };
    let v = probe("a", "c");
    assert_eq!(
        (v.allowed, v.reason.as_str()),
        (Some(false), "dropped by the hardware flow table"),
        "{text}"
    );
    // b's connection to a is allowed, and a's reply is not dropped on a's port.
    let v = probe("b", "a");
    assert_eq!(v.allowed, Some(true), "{}: {text}", v.reason);
    // a's own connection to b is denied, by software: b's addresses are not in the drop.
    let v = probe("a", "b");
    assert_eq!(
        (v.allowed, v.reason.as_str()),
        (Some(false), "denied by the MAG")
    );
}

/// The Star Wars example on a flow table of `limit` entries, with `hints`.
fn starwars_plan(limit: u64, hints: &[PlacementHint]) -> pipec::partition::Plan {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/starwars"));
    let loaded = pipec::driver::load(&[dir], &pipec::model::build::BuildOptions::default());
    assert!(!loaded.has_errors());
    let lowered = lower::cluster_to_mag(&loaded.cluster, None);
    let info = mag::validate(lowered.mag()).expect("valid");
    let mut profile = octeon_cn10k_profile();
    let kept = profile.budget.reserved_entries + profile.budget.offload_entries;
    profile.budget.entries = Some(kept + limit);
    mag_to_plan(lowered.mag(), &info, &profile, hints)
}

fn reserve(policy: &str, amount: u32) -> PlacementHint {
    PlacementHint {
        subject: Subject::Policy(policy.into()),
        hint: Hint::Reserve {
            target: "octeon-cn10k".into(),
            resource: Resource::Entries,
            amount,
        },
    }
}

/// The sources of the entries placed in hardware.
fn placed_origins(plan: &pipec::partition::Plan) -> Vec<String> {
    plan.placements
        .iter()
        .filter(|p| p.target == pipec::partition::Target::Hardware)
        .map(|p| plan.origin(p).to_string())
        .collect()
}

#[test]
fn reserved_entries_go_to_their_subject_only() {
    // Without a hint, three entries go to the highest-ranked entries, some of them the
    // built-in default allows.
    let plain = starwars_plan(3, &[]);
    assert!(plain.usage.entries > 0 && plain.usage.entries <= 3);
    assert!(plain.usage.reserved.is_empty());
    // All three reserved for rule1: only rule1's entries are in hardware.
    let plan = starwars_plan(3, &[reserve("rule1", 3)]);
    let origins = placed_origins(&plan);
    assert!(!origins.is_empty());
    assert!(origins.iter().all(|o| o.contains("rule1")), "{origins:?}");
    assert!(plan.usage.entries <= 3);
    let r = &plan.usage.reserved[0];
    assert_eq!((r.entries, r.used), (3, plan.usage.entries));
    assert!(r.hint.contains("rule1"), "{}", r.hint);
    // A reservation nobody uses stays free: the others cannot take it.
    let plan = starwars_plan(3, &[reserve("no-such-policy", 3)]);
    assert_eq!(plan.usage.entries, 0);
    assert_eq!(plan.usage.reserved[0].used, 0);
    assert!(plan.left_out.len() >= plain.left_out.len());
    // One of three reserved: the subject's entries use at most that one, the others at
    // most the two left.
    let plan = starwars_plan(3, &[reserve("rule1", 1)]);
    assert!(plan.usage.reserved[0].used <= 1);
    assert!(plan.usage.entries <= 3);
    let text = pipec::partition::plan_to_text(&plan);
    assert!(text.contains("reserved "), "{text}");
}

/// The entries a plan leaves out for budget are listed most valuable first, equal values
/// in table then entry order, each once.
#[test]
fn left_out_entries_are_listed_by_value_then_place() {
    let plan = starwars_plan(1, &[]);
    assert!(plan.left_out.len() > 1, "{:?}", plan.left_out);
    let value = |t: pipec::mag::TableId, e: pipec::mag::EntryId| {
        let p = plan
            .placements
            .iter()
            .find(|p| p.table == t && p.entry == e);
        let p = p.expect("a left-out entry has a placement");
        assert!(
            matches!(p.why, pipec::partition::Why::Budget { .. }),
            "{p:?}"
        );
        p.value
    };
    let keys: Vec<_> = plan
        .left_out
        .iter()
        .map(|(t, e)| (std::cmp::Reverse(value(*t, *e)), *t, *e))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted);
    let budget = plan
        .placements
        .iter()
        .filter(|p| matches!(p.why, pipec::partition::Why::Budget { .. }))
        .count();
    assert_eq!(plan.left_out.len(), budget);
    // Ties are there to be ordered.
    assert!(keys.windows(2).any(|w| w[0].0 == w[1].0), "{keys:?}");
}
