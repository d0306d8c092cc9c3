//! Incremental lowering equals full lowering: random clusters, random change sequences.

use crate::mag_gen::{self, PodSpec, Spec};
use pipec::lower::incremental::{update, update_many, Change};
use pipec::lower::{self};
use pipec::mag::{self, text::mag_to_text};
use proptest::prelude::*;

/// One edit of a generated cluster.
#[derive(Clone, Debug)]
enum Edit {
    AddPod(PodSpec),
    RemovePod(usize),
    Relabel(usize, usize),
    AddService(usize, usize, bool, bool),
    RemoveService(usize),
    RemovePolicy(usize),
    AddPolicy(mag_gen::PolicySpec),
    ReselectPolicy(usize, Option<usize>),
    DropLastPolicy,
    RelabelNamespace(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (0..3usize, 0..3usize, any::<bool>(), 0..2usize).prop_map(|(ns, app, dns, node)| Edit::AddPod(PodSpec {
            ns,
            app,
            tier: None,
            http: Some(80),
            dns,
            node,
        })),
        2 => (0..8usize).prop_map(Edit::RemovePod),
        2 => (0..8usize, 0..3usize).prop_map(|(i, a)| Edit::Relabel(i, a)),
        1 => (0..3usize, 0..3usize, any::<bool>(), any::<bool>())
            .prop_map(|(ns, app, ext, int)| Edit::AddService(ns, app, ext, int)),
        1 => (0..3usize).prop_map(Edit::RemoveService),
        1 => (0..4usize).prop_map(Edit::RemovePolicy),
        1 => mag_gen::policy().prop_map(Edit::AddPolicy),
        1 => (0..4usize, proptest::option::of(0..3usize)).prop_map(|(i, a)| Edit::ReselectPolicy(i, a)),
        1 => Just(Edit::DropLastPolicy),
        1 => (0..3usize).prop_map(Edit::RelabelNamespace),
    ]
}

/// Applies an edit; returns the change, or `None` when it does not apply. Pods keep their
/// index (and so their name and address); removed pods are left out by name.
fn apply(spec: &mut Spec, alive: &mut Vec<bool>, e: &Edit) -> Option<Change> {
    match e {
        Edit::AddPod(p) => {
            spec.pods.push(p.clone());
            alive.push(true);
            let i = spec.pods.len() - 1;
            Some(Change::Pod(format!("ns{}/p{i}", p.ns)))
        }
        Edit::RemovePod(i) | Edit::Relabel(i, _) => {
            if *i >= spec.pods.len() || !alive[*i] {
                return None;
            }
            match e {
                Edit::RemovePod(_) => alive[*i] = false,
                Edit::Relabel(_, a) => spec.pods[*i].app = *a,
                _ => {}
            }
            Some(Change::Pod(format!("ns{}/p{i}", spec.pods[*i].ns)))
        }
        Edit::AddService(ns, app, external_local, internal_local) => {
            spec.services.push(mag_gen::SvcSpec {
                ns: *ns,
                app: *app,
                named_target: true,
                affinity: false,
                node_port: *external_local,
                external_local: *external_local,
                internal_local: *internal_local,
            });
            Some(Change::Service(format!(
                "ns{ns}/s{}",
                spec.services.len() - 1
            )))
        }
        Edit::RemoveService(i) => {
            if *i + 1 != spec.services.len() {
                return None;
            }
            let s = spec.services.pop()?;
            Some(Change::Service(format!("ns{}/s{i}", s.ns)))
        }
        Edit::RemovePolicy(i) => {
            if *i >= spec.policies.len() {
                return None;
            }
            // Policies are named by position: removing one renames the ones after it.
            spec.policies.remove(*i);
            Some(Change::Policy)
        }
        Edit::AddPolicy(p) => {
            spec.policies.push(p.clone());
            Some(policy_change(spec, spec.policies.len() - 1))
        }
        Edit::ReselectPolicy(i, a) => match spec.policies.get_mut(*i) {
            Some(mag_gen::PolicySpec::Np { app, .. }) => {
                *app = *a;
                Some(policy_change(spec, *i))
            }
            Some(mag_gen::PolicySpec::Cnp { app, .. }) => {
                *app = a.unwrap_or(0);
                Some(policy_change(spec, *i))
            }
            _ => None,
        },
        Edit::DropLastPolicy => {
            let i = spec.policies.len().checked_sub(1)?;
            let change = policy_change(spec, i);
            spec.policies.pop();
            Some(change)
        }
        Edit::RelabelNamespace(i) => {
            spec.ns_team[*i] = 1 - spec.ns_team[*i];
            Some(Change::Namespace(format!("ns{i}")))
        }
    }
}

/// The change of policy `i`: a NetworkPolicy or CiliumNetworkPolicy by its key, any other
/// kind as a policy.
fn policy_change(spec: &Spec, i: usize) -> Change {
    match &spec.policies[i] {
        mag_gen::PolicySpec::Np { ns, .. } => Change::NetworkPolicy(format!("ns{ns}/np{i}")),
        mag_gen::PolicySpec::Cnp { ns, .. } => {
            Change::CiliumNetworkPolicy(format!("ns{ns}/cnp{i}"))
        }
        _ => Change::Policy,
    }
}

fn live(spec: &Spec, alive: &[bool]) -> String {
    // Dead pods are rendered as host-network-free placeholders in no namespace: simply
    // drop them from the YAML by filtering the rendered documents.
    let yaml = mag_gen::to_yaml(spec);
    yaml.split("---\n")
        .filter(|doc| {
            !alive.iter().enumerate().any(|(i, a)| {
                !a && doc.contains("kind: Pod\n") && doc.contains(&format!("\n  name: p{i}\n"))
            })
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn load_live(spec: &Spec, alive: &[bool]) -> pipec::model::Cluster {
    let yaml = live(spec, alive);
    let loaded = pipec::driver::load_texts(&[("gen.yaml", &yaml)], &Default::default());
    assert!(!loaded.has_errors(), "{:?}\n{yaml}", loaded.diags);
    loaded.cluster
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn incremental_equals_full(s in mag_gen::spec(6), edits in proptest::collection::vec(edit(), 1..8)) {
        let mut spec = s;
        let mut alive = vec![true; spec.pods.len()];
        let mut cluster = load_live(&spec, &alive);
        let mut lowered = lower::cluster_to_mag(&cluster, None);
        for e in &edits {
            let Some(change) = apply(&mut spec, &mut alive, e) else { continue };
            let next = load_live(&spec, &alive);
            let diff = update(&mut lowered, &cluster, &next, &change);
            let full = lower::cluster_to_mag(&next, None);
            mag::validate(lowered.mag()).unwrap();
            prop_assert_eq!(mag_to_text(lowered.mag()), mag_to_text(full.mag()), "after {:?} (full: {})", e, diff.full);
            assert_state_like(&lowered, &full, &next);
            cluster = next;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// A batch of changes made together (a watcher's burst) lowers as one step to what a
    /// full lowering of the state after the batch gives.
    #[test]
    fn batched_incremental_equals_full(s in mag_gen::spec(6), batches in proptest::collection::vec(proptest::collection::vec(edit(), 1..5), 1..5)) {
        let mut spec = s;
        let mut alive = vec![true; spec.pods.len()];
        let mut cluster = load_live(&spec, &alive);
        let mut lowered = lower::cluster_to_mag(&cluster, None);
        for batch in &batches {
            let changes: Vec<Change> = batch.iter().filter_map(|e| apply(&mut spec, &mut alive, e)).collect();
            let next = load_live(&spec, &alive);
            let diff = update_many(&mut lowered, &cluster, &next, &changes);
            let full = lower::cluster_to_mag(&next, None);
            mag::validate(lowered.mag()).unwrap();
            prop_assert_eq!(mag_to_text(lowered.mag()), mag_to_text(full.mag()), "after {:?} (full: {})", batch, diff.full);
            assert_state_like(&lowered, &full, &next);
            cluster = next;
        }
    }
}

/// A burst of pod events (two pods in, the class representative and a client out, one
/// relabelled) takes the fast path as one batch and lowers to what a full lowering gives.
#[test]
fn a_batch_of_pod_events_takes_the_fast_path() {
    let pods = |names: &[(&str, &str, &str, Option<u16>)]| -> Vec<String> {
        names
            .iter()
            .map(|(n, app, ip, port)| pod_yaml(n, app, ip, *port))
            .collect()
    };
    let before = pods(&[
        ("web-a", "web", "10.244.0.10", Some(8080)),
        ("web-b", "web", "10.244.0.11", Some(8080)),
        ("web-c", "web", "10.244.0.12", Some(8080)),
        ("client-1", "client", "10.244.0.20", None),
        ("client-2", "client", "10.244.0.21", None),
        ("client-3", "client", "10.244.0.22", None),
        ("db-1", "db", "10.244.0.30", Some(9090)),
        ("db-2", "db", "10.244.0.31", Some(9090)),
    ]);
    let after = pods(&[
        ("web-b", "web", "10.244.0.11", Some(8080)),
        ("web-c", "web", "10.244.0.12", Some(8080)),
        ("web-d", "web", "10.244.0.13", Some(8080)),
        ("client-1", "client", "10.244.0.20", None),
        ("client-3", "client", "10.244.0.22", None),
        ("client-4", "client", "10.244.0.23", None),
        ("db-1", "db", "10.244.0.30", Some(9090)),
        ("db-2", "client", "10.244.0.31", None),
    ]);
    let cluster = cluster_of(&before);
    let next = cluster_of(&after);
    let mut lowered = lower::cluster_to_mag(&cluster, None);
    let changes: Vec<Change> = ["web-a", "web-d", "client-2", "client-4", "db-2"]
        .iter()
        .map(|n| Change::Pod(format!("ns0/{n}")))
        .collect();
    let diff = update_many(&mut lowered, &cluster, &next, &changes);
    assert!(!diff.full, "the batch took a full lowering");
    assert!(!diff.is_empty(), "the batch changed no entry");
    let full = lower::cluster_to_mag(&next, None);
    assert_eq!(mag_to_text(lowered.mag()), mag_to_text(full.mag()));
    assert_state_like(&lowered, &full, &next);
}

/// What the next event reads of the lowering state equals a full lowering's, though no
/// entry shows it yet: each pod's identity, and a representative that is a member of its
/// class.
fn assert_state_like(
    lowered: &lower::Lowered,
    full: &lower::Lowered,
    cluster: &pipec::model::Cluster,
) {
    assert_eq!(
        lowered.state.ids.pods, full.state.ids.pods,
        "pod identities"
    );
    let classes = &lowered.state.classes;
    for (ci, class) in classes.list.iter().enumerate() {
        let Some(p) = class.pod else { continue };
        let pod = cluster.pod(p);
        assert!(
            pod.ips
                .iter()
                .any(|ip| classes.by_net.get(&(*ip).into()) == Some(&ci)),
            "class {ci} stands for {}, not one of its members",
            pod.key()
        );
    }
}

/// A pod of `app` at `ip`, with a container port named `http` on `port` when given.
fn pod_yaml(name: &str, app: &str, ip: &str, port: Option<u16>) -> String {
    let ports = port.map_or(String::new(), |p| {
        format!("    ports:\n    - name: http\n      containerPort: {p}\n")
    });
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: ns0\n  labels: {{app: {app}}}\nspec:\n  containers:\n  - name: c\n{ports}status:\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n"
    )
}

fn cluster_of(pods: &[String]) -> pipec::model::Cluster {
    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: to-web\n  namespace: ns0\nspec:\n  podSelector:\n    matchLabels: {app: client}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector:\n        matchLabels: {app: web}\n    ports:\n    - port: http\n";
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns0\n";
    let mut docs = vec![ns.to_string(), policy.to_string()];
    docs.extend(pods.iter().cloned());
    let yaml = docs.join("---\n");
    let loaded = pipec::driver::load_texts(&[("gen.yaml", &yaml)], &Default::default());
    assert!(!loaded.has_errors(), "{:?}\n{yaml}", loaded.diags);
    loaded.cluster
}

/// Lowers `start`, then each step's model by its change: every step must take a fast path
/// and give what a full lowering of its model gives.
fn assert_fast_steps(start: &pipec::model::Cluster, steps: &[(pipec::model::Cluster, Change)]) {
    let mut cluster = start;
    let mut lowered = lower::cluster_to_mag(cluster, None);
    for (next, change) in steps {
        let diff = update(&mut lowered, cluster, next, change);
        assert!(!diff.full, "{change:?} took a full lowering");
        let full = lower::cluster_to_mag(next, None);
        assert_eq!(
            mag_to_text(lowered.mag()),
            mag_to_text(full.mag()),
            "after {change:?}"
        );
        cluster = next;
    }
}

/// Removing the pod that stands for its class (the member of the lowest address) takes the
/// fast path; the class's next member stands for it, and a later event that resolves a
/// named port on the class (a new client's egress rows) resolves it on a pod of the class.
#[test]
fn a_class_keeps_a_member_when_its_representative_leaves() {
    let web_a = pod_yaml("web-a", "web", "10.244.0.10", Some(8080));
    let web_b = pod_yaml("web-b", "web", "10.244.0.11", Some(8080));
    let client = pod_yaml("client-1", "client", "10.244.0.20", None);
    let other = pod_yaml("aaa-other", "db", "10.244.0.30", Some(9090));
    let client2 = pod_yaml("client-2", "client", "10.244.0.21", None);
    let start = cluster_of(&[web_a, web_b.clone(), client.clone(), other.clone()]);
    let steps = [
        (
            cluster_of(&[web_b.clone(), client.clone(), other.clone()]),
            Change::Pod("ns0/web-a".into()),
        ),
        (
            cluster_of(&[web_b, client, other, client2]),
            Change::Pod("ns0/client-2".into()),
        ),
    ];
    assert_fast_steps(&start, &steps);
}

/// A NetworkPolicy egress from `app` to pods of `to`.
fn np_yaml(name: &str, app: &str, to: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: ns0\nspec:\n  podSelector:\n    matchLabels: {{app: {app}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector:\n        matchLabels: {{app: {to}}}\n"
    )
}

fn load_docs(docs: &[String]) -> pipec::model::Cluster {
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns0\n".to_string();
    let yaml = std::iter::once(ns)
        .chain(docs.iter().cloned())
        .collect::<Vec<_>>()
        .join("---\n");
    let loaded = pipec::driver::load_texts(&[("gen.yaml", &yaml)], &Default::default());
    assert!(!loaded.has_errors(), "{:?}\n{yaml}", loaded.diags);
    loaded.cluster
}

/// NetworkPolicy events take the fast path: adding one, changing one's rules, and removing
/// the first of two (which moves the other one's position in the model, and so its rules'
/// place in the match cache). Each step lowers to what a full lowering gives.
#[test]
fn network_policy_events_take_the_fast_path() {
    let pods = [
        pod_yaml("web-a", "web", "10.244.0.10", Some(8080)),
        pod_yaml("db-a", "db", "10.244.0.30", Some(9090)),
        pod_yaml("client-1", "client", "10.244.0.20", None),
        pod_yaml("client-2", "client", "10.244.0.21", None),
    ];
    // A policy on the same label key from the start: a policy that first selects on a key
    // changes every identity, which takes a full lowering.
    let base = np_yaml("z-base", "db", "web");
    let with = |policies: &[String]| -> Vec<String> {
        pods.iter()
            .chain(policies)
            .chain([&base])
            .cloned()
            .collect()
    };
    let steps = [
        (with(&[np_yaml("b-db", "client", "db")]), "ns0/b-db"),
        (
            with(&[
                np_yaml("a-web", "client", "web"),
                np_yaml("b-db", "client", "db"),
            ]),
            "ns0/a-web",
        ),
        (
            with(&[
                np_yaml("a-web", "client", "db"),
                np_yaml("b-db", "client", "db"),
            ]),
            "ns0/a-web",
        ),
        (
            with(&[
                np_yaml("a-web", "client", "web"),
                np_yaml("b-db", "client", "db"),
            ]),
            "ns0/a-web",
        ),
        (with(&[np_yaml("b-db", "client", "db")]), "ns0/a-web"),
        (with(&[np_yaml("b-db", "client", "web")]), "ns0/b-db"),
    ];
    let steps: Vec<_> = steps
        .iter()
        .map(|(docs, key)| (load_docs(docs), Change::NetworkPolicy(key.to_string())))
        .collect();
    assert_fast_steps(&load_docs(&with(&[])), &steps);
}

/// A CiliumNetworkPolicy egress from `app` to pods of `to` on TCP 8080, with an HTTP rule
/// (an L7 redirect) when `l7`.
fn cnp_yaml(name: &str, app: &str, to: &str, l7: bool) -> String {
    let rules = if l7 {
        "\n      rules:\n        http:\n        - method: GET"
    } else {
        ""
    };
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: {name}\n  namespace: ns0\nspec:\n  endpointSelector:\n    matchLabels: {{app: {app}}}\n  egress:\n  - toEndpoints:\n    - matchLabels: {{app: {to}}}\n    toPorts:\n    - ports:\n      - {{port: \"8080\", protocol: TCP}}{rules}\n"
    )
}

/// CiliumNetworkPolicy events take the fast path too: adding one, making it L7, and
/// removing the first of two (which moves the other's rules in the match cache).
#[test]
fn cilium_network_policy_events_take_the_fast_path() {
    let pods = [
        pod_yaml("web-a", "web", "10.244.0.10", Some(8080)),
        pod_yaml("db-a", "db", "10.244.0.30", Some(9090)),
        pod_yaml("client-1", "client", "10.244.0.20", None),
    ];
    // Policies of both kinds from the start, so no event brings a new selector key.
    let base = [
        np_yaml("z-base", "db", "web"),
        cnp_yaml("z-cnp", "db", "web", false),
    ];
    let with = |policies: &[String]| -> Vec<String> {
        pods.iter().chain(policies).chain(&base).cloned().collect()
    };
    let steps = [
        (
            with(&[cnp_yaml("b-cnp", "client", "db", false)]),
            "ns0/b-cnp",
        ),
        (
            with(&[
                cnp_yaml("a-cnp", "client", "web", false),
                cnp_yaml("b-cnp", "client", "db", false),
            ]),
            "ns0/a-cnp",
        ),
        (
            with(&[
                cnp_yaml("a-cnp", "client", "web", true),
                cnp_yaml("b-cnp", "client", "db", false),
            ]),
            "ns0/a-cnp",
        ),
        (
            with(&[cnp_yaml("b-cnp", "client", "db", false)]),
            "ns0/a-cnp",
        ),
    ];
    let steps: Vec<_> = steps
        .iter()
        .map(|(docs, key)| {
            (
                load_docs(docs),
                Change::CiliumNetworkPolicy(key.to_string()),
            )
        })
        .collect();
    assert_fast_steps(&load_docs(&with(&[])), &steps);
}
