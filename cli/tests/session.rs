//! The compile session: random clusters and random event sequences. After every step,
//! `Session::apply` gives the same MAG, plan and artifacts as `Session::load` of the same
//! objects (with the session's identity numbers), and replaying every step's operations
//! on empty device models reproduces the final artifacts exactly.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use anyhow as _;
use clap as _;
use clap_complete as _;
use gencluster as _;
use insta as _;
use ipnet as _;
use mimalloc as _;
use pipec_cpt as _;
use pipec_proto as _;
use policy_lang as _;
use serde as _;
use serde_json as _;
use tempfile as _;
use tokio as _;
use tonic as _;

use pipec::backend::Operations;
use pipec::session::{Changes, Event, Hardware, ObjectKey, Session, SessionOptions};
use pipec::testgen::{self, PodSpec, Spec, SvcSpec};
use pipec_ebpf::artifact::MapEntries;
use pipec_ebpf::{EbpfArtifact, MapOps};
use pipec_rte_flow::{rule_key, FlowOp, FlowOps, RteFlowArtifact};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// The backends the CLI gives a session (`cli/src/session.rs`).
fn backends(hardware: Option<&pipec::backend::Profile>) -> Vec<Box<dyn pipec::backend::Backend>> {
    let mut out: Vec<Box<dyn pipec::backend::Backend>> =
        vec![Box::new(pipec_ebpf::EbpfBackend::default())];
    if let Some(p) = hardware {
        out.push(Box::new(pipec_rte_flow::RteFlowBackend::new(p.clone())));
    }
    out
}

/// One edit of a generated cluster.
#[derive(Clone, Debug)]
enum Edit {
    AddPod(PodSpec),
    /// Another pod like pod `i` (modulo the pods there are): the same labels, so the same
    /// identity, which gains an address. Entries that name the identity are built anew
    /// (step 1b of the incremental plan) rather than lowered and placed anew.
    Replica(usize),
    RemovePod(usize),
    Relabel(usize, usize),
    AddService(usize, usize, bool),
    RemoveService,
    AddPolicy(testgen::PolicySpec),
    RemovePolicy(usize),
    RelabelNamespace(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (0..3usize, 0..3usize, any::<bool>(), 0..2usize).prop_map(|(ns, app, dns, node)| {
            Edit::AddPod(PodSpec { ns, app, tier: None, http: Some(80), dns, node })
        }),
        4 => (0..8usize).prop_map(Edit::Replica),
        2 => (0..8usize).prop_map(Edit::RemovePod),
        2 => (0..8usize, 0..3usize).prop_map(|(i, a)| Edit::Relabel(i, a)),
        1 => (0..3usize, 0..3usize, any::<bool>()).prop_map(|(ns, app, a)| Edit::AddService(ns, app, a)),
        1 => Just(Edit::RemoveService),
        1 => testgen::policy().prop_map(Edit::AddPolicy),
        1 => (0..4usize).prop_map(Edit::RemovePolicy),
        1 => (0..3usize).prop_map(Edit::RelabelNamespace),
    ]
}

/// One step of the property test's event sequences: an edit of the spec, or the
/// readiness of one endpoint flipped (Service, pod), which only an EndpointSlice says.
#[derive(Clone, Debug)]
enum Step {
    Edit(Edit),
    Ready(usize, usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => edit().prop_map(Step::Edit),
        1 => (0..4usize, 0..10usize).prop_map(|(s, p)| Step::Ready(s, p)),
    ]
}

/// The endpoints (Service, pod) that are not ready.
type NotReady = BTreeSet<(usize, usize)>;

/// The EndpointSlices of the even-numbered Services (the odd ones keep their selector's
/// pods): one per target port, one endpoint per live pod the Service selects, ready
/// unless `not_ready` says otherwise; by key.
fn slices(spec: &Spec, alive: &[bool], not_ready: &NotReady) -> BTreeMap<ObjectKey, String> {
    let mut out = BTreeMap::new();
    for (si, svc) in spec.services.iter().enumerate().step_by(2) {
        let mut by_port: BTreeMap<u16, String> = BTreeMap::new();
        for (pi, pod) in spec.pods.iter().enumerate() {
            if !alive.get(pi).copied().unwrap_or(true) || pod.ns != svc.ns || pod.app != svc.app {
                continue;
            }
            let port = match (svc.named_target, pod.http) {
                (true, Some(http)) => http,
                (true, None) => continue,
                (false, _) => 8080,
            };
            let node = if spec.nodes > 0 {
                format!(", nodeName: {}", testgen::node_name(pod.node % spec.nodes))
            } else {
                String::new()
            };
            let ready = !not_ready.contains(&(si, pi));
            by_port.entry(port).or_default().push_str(&format!(
                "- {{addresses: [\"{}\"], conditions: {{ready: {ready}}}, targetRef: {{kind: Pod, name: p{pi}, namespace: ns{}}}{node}}}\n",
                testgen::pod_ip(pi),
                svc.ns
            ));
        }
        for (port, endpoints) in by_port {
            let name = format!("s{si}-p{port}");
            let ns = format!("ns{}", svc.ns);
            let text = format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: s{si}}}\naddressType: IPv4\nports:\n- {{name: web, port: {port}, protocol: TCP}}\nendpoints:\n{endpoints}");
            out.insert(ObjectKey::new("EndpointSlice", &ns, &name), text);
        }
    }
    out
}

/// Applies an edit to the spec; pods keep their index (so their name and address), and
/// removed pods are left out of the manifests.
fn apply_edit(spec: &mut Spec, alive: &mut Vec<bool>, e: &Edit) {
    match e {
        Edit::AddPod(p) => {
            spec.pods.push(p.clone());
            alive.push(true);
        }
        Edit::Replica(i) if !spec.pods.is_empty() => {
            let like = spec.pods[*i % spec.pods.len()].clone();
            spec.pods.push(like);
            alive.push(true);
        }
        Edit::RemovePod(i) if *i < alive.len() => alive[*i] = false,
        Edit::Relabel(i, a) if *i < spec.pods.len() => spec.pods[*i].app = *a,
        Edit::AddService(ns, app, affinity) => spec.services.push(SvcSpec {
            ns: *ns,
            app: *app,
            named_target: true,
            affinity: *affinity,
            node_port: false,
            external_local: false,
            internal_local: false,
        }),
        Edit::RemoveService => {
            spec.services.pop();
        }
        Edit::AddPolicy(p) => spec.policies.push(p.clone()),
        Edit::RemovePolicy(i) if *i < spec.policies.len() => {
            spec.policies.remove(*i);
        }
        Edit::RelabelNamespace(i) => spec.ns_team[*i] = 1 - spec.ns_team[*i],
        _ => {}
    }
}

/// The manifests of the live objects, one document per object, by key.
fn documents(spec: &Spec, alive: &[bool]) -> BTreeMap<ObjectKey, String> {
    let mut out = BTreeMap::new();
    for doc in testgen::to_yaml(spec).split("---\n") {
        let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(doc) else {
            continue;
        };
        let get = |k: &str| {
            v.get("metadata")
                .and_then(|m| m.get(k))
                .and_then(|x| x.as_str())
        };
        let (Some(kind), Some(name)) = (v.get("kind").and_then(|k| k.as_str()), get("name")) else {
            continue;
        };
        let dead = kind == "Pod"
            && name
                .strip_prefix('p')
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|i| i < alive.len() && !alive[i]);
        if !dead {
            let key = ObjectKey::new(kind, get("namespace").unwrap_or("default"), name);
            out.insert(key, doc.to_string());
        }
    }
    out
}

/// The events that take the objects `old` to `new`.
fn events(old: &BTreeMap<ObjectKey, String>, new: &BTreeMap<ObjectKey, String>) -> Vec<Event> {
    let mut out: Vec<Event> = new
        .iter()
        .filter(|(k, t)| old.get(*k) != Some(*t))
        .map(|(k, t)| Event::Upsert {
            source: format!("watch:{k}"),
            text: t.clone(),
        })
        .collect();
    out.extend(
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .map(Event::Delete),
    );
    out
}

fn options() -> SessionOptions {
    SessionOptions {
        hardware: Some(Hardware::Named("octeon-cn10k".into())),
        ..SessionOptions::default()
    }
}

fn load(docs: &BTreeMap<ObjectKey, String>, options: SessionOptions) -> Session {
    load_with(docs, options, &backends)
}

/// [`load`] with the backends `make` gives.
fn load_with(
    docs: &BTreeMap<ObjectKey, String>,
    options: SessionOptions,
    make: pipec::session::BackendFactory<'_>,
) -> Session {
    let texts: Vec<(String, &str)> = docs
        .iter()
        .map(|(k, t)| (format!("{k}.yaml"), t.as_str()))
        .collect();
    let texts: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    Session::load_texts(&texts, options, make).expect("generated input loads")
}

fn ebpf(s: &Session) -> EbpfArtifact {
    s.artifact("ebpf")
        .expect("target")
        .expect("compiles")
        .as_any()
        .downcast_ref::<EbpfArtifact>()
        .expect("eBPF")
        .clone()
}

/// The artifact with each policy cookie replaced by the rule it names. Cookie numbers are
/// provenance ids, which a long session interns in its own order (an id is never reused
/// while the session lives); what a cookie means is its rule, and that must be the same.
fn named_cookies(mut a: EbpfArtifact) -> EbpfArtifact {
    let names: Vec<String> = a
        .cookies
        .values()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rank = |c: u64, cookies: &BTreeMap<u64, String>| {
        cookies
            .get(&c)
            .and_then(|n| names.iter().position(|x| x == n))
            .map_or(0, |i| i as u64 + 1)
    };
    let cookies = a.cookies.clone();
    for d in a.policy.values_mut() {
        d.cookie = rank(d.cookie, &cookies);
    }
    a.cookies = names
        .into_iter()
        .enumerate()
        .map(|(i, n)| (i as u64 + 1, n))
        .collect();
    a
}

fn hw(s: &Session) -> BTreeSet<String> {
    let a = s
        .artifact("octeon-cn10k")
        .expect("target")
        .expect("compiles");
    let a = a
        .as_any()
        .downcast_ref::<RteFlowArtifact>()
        .expect("rte_flow");
    a.rules.iter().map(|r| rule_key(&r.rule)).collect()
}

/// What a plan says of each entry (where it goes and why, its cost, its chain of reasons)
/// and what it leaves out: everything but the compressed rules, which an incremental
/// plan may compress differently (`disagreement` compares what they decide).
fn placements(plan: &pipec::partition::Plan) -> Vec<String> {
    let mut out: Vec<String> = plan
        .placements
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} {:?}",
                p.entry_name(),
                plan.target_name(p),
                p.why,
                p.hw_rules,
                p.chain
            )
        })
        .collect();
    out.extend(
        plan.left_out
            .iter()
            .map(|(t, e)| format!("left-out {}", pipec::partition::entry_name(*t, *e))),
    );
    out
}

/// What a flow table does with a packet received on `port`: the actions of the matching
/// rule of that port of the highest priority (all rules of one level that match a packet
/// do the same).
fn decide(
    rules: &[pipec::backend::HwRule],
    port: u16,
    packet: &BTreeMap<pipec::backend::PacketField, u128>,
) -> Option<Vec<pipec::backend::HwAction>> {
    rules
        .iter()
        .filter(|r| r.port == port && r.matches_packet(packet))
        .min_by_key(|r| r.level)
        .map(|r| {
            let mut a = r.actions.clone();
            a.retain(|x| *x != pipec::backend::HwAction::Count);
            a
        })
}

/// A packet two slices decide differently, if one is found. The packets probed are made
/// from every rule of both slices: each rule's matched bits, with the bits it leaves
/// open (and the fields it does not match) drawn at random, several times per rule, an
/// IPv4 packet received on the rule's port.
fn disagreement(
    a: &[pipec::backend::HwRule],
    b: &[pipec::backend::HwRule],
) -> Option<BTreeMap<pipec::backend::PacketField, u128>> {
    use pipec::backend::PacketField as F;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        u128::from(seed)
    };
    for r in a.iter().chain(b) {
        for _ in 0..4 {
            let mut packet = BTreeMap::new();
            packet.insert(F::EthType, 0x0800);
            for f in [F::Ipv4Src, F::Ipv4Dst, F::IpProto, F::L4Dport] {
                let full = f.full_mask();
                let (value, mask) = r.get(f).map_or((0, 0), |m| (m.value, m.mask));
                packet.insert(f, (value & mask) | (next() & !mask & full));
            }
            if decide(a, r.port, &packet) != decide(b, r.port, &packet) {
                return Some(packet);
            }
        }
    }
    None
}

/// The device models: eBPF maps and the flow table's rules.
#[derive(Default)]
struct Devices {
    maps: MapEntries,
    flows: BTreeSet<String>,
}

impl Devices {
    fn apply(&mut self, ebpf: &dyn Operations, hw: &dyn Operations) {
        ebpf.as_any()
            .downcast_ref::<MapOps>()
            .expect("eBPF ops")
            .apply_to(&mut self.maps);
        for op in &hw.as_any().downcast_ref::<FlowOps>().expect("flow ops").ops {
            match op {
                FlowOp::Destroy { key } => assert!(
                    self.flows.remove(key),
                    "destroy of a rule the device lacks: {key}"
                ),
                FlowOp::Create { key, .. } => assert!(
                    self.flows.insert(key.clone()),
                    "create of a rule the device has: {key}"
                ),
            }
        }
    }

    fn apply_changes(&mut self, c: &Changes) {
        self.apply(
            c.ops("ebpf").expect("ebpf ops"),
            c.ops("octeon-cn10k").expect("hw ops"),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn apply_equals_load(s in testgen::spec(6), steps in proptest::collection::vec(proptest::collection::vec(step(), 1..3), 1..6)) {
        let mut spec = s;
        let mut alive = vec![true; spec.pods.len()];
        let mut not_ready = NotReady::new();
        let mut docs = documents(&spec, &alive);
        docs.extend(slices(&spec, &alive, &not_ready));
        let mut session = load(&docs, options());
        // The devices start empty and take the load's artifacts as operations.
        let mut devices = Devices::default();
        let ebpf_backend = session.backend("ebpf").expect("ebpf");
        let hw_backend = session.backend("octeon-cn10k").expect("hw");
        let first_ebpf = ebpf_backend.diff(None, session.artifact("ebpf").unwrap().unwrap());
        let first_hw = hw_backend.diff(None, session.artifact("octeon-cn10k").unwrap().unwrap());
        devices.apply(first_ebpf.as_ref(), first_hw.as_ref());
        for batch in &steps {
            for s in batch {
                match s {
                    Step::Edit(e) => apply_edit(&mut spec, &mut alive, e),
                    Step::Ready(svc, pod) => {
                        if !not_ready.remove(&(*svc, *pod)) {
                            not_ready.insert((*svc, *pod));
                        }
                    }
                }
            }
            let mut next = documents(&spec, &alive);
            next.extend(slices(&spec, &alive, &not_ready));
            let evs = events(&docs, &next);
            docs = next;
            let changes = session.apply(&evs).map_err(|r| TestCaseError::fail(r.to_string()))?;
            devices.apply_changes(&changes);
            let fresh = load(&docs, SessionOptions { pins: session.pins().clone(), ..options() });
            prop_assert_eq!(pipec::mag::text::mag_to_text(session.mag()), pipec::mag::text::mag_to_text(fresh.mag()));
            let (mine, theirs) = (session.plan().unwrap(), fresh.plan().unwrap());
            prop_assert_eq!(placements(mine), placements(theirs));
            prop_assert_eq!(
                (mine.usage.uncompressed, mine.usage.naive, mine.usage.levels),
                (theirs.usage.uncompressed, theirs.usage.naive, theirs.usage.levels)
            );
            prop_assert!(mine.usage.entries <= mine.usage.entries_limit);
            if let Some(p) = disagreement(&mine.slice.rules, &theirs.slice.rules) {
                return Err(TestCaseError::fail(format!(
                    "the incremental slice decides {p:?} otherwise than a fresh one\nincremental:\n{}\nfresh:\n{}",
                    pipec::partition::plan_to_text(mine),
                    pipec::partition::plan_to_text(theirs)
                )));
            }
            prop_assert_eq!(named_cookies(ebpf(&session)), named_cookies(ebpf(&fresh)));
        }
        prop_assert!(devices.maps == ebpf(&session).entries(), "replayed eBPF maps differ from the final artifact");
        prop_assert_eq!(&devices.flows, &hw(&session));
    }
}

/// The entries of a graph as the identity of what they say: priority, matches, action and
/// provenance as text (its indices are the graph's own).
type EntryText = (
    u32,
    std::sync::Arc<[pipec::mag::FieldMatch]>,
    pipec::mag::ActionCall,
    Vec<String>,
);

/// The entry-level difference from graph `a` to graph `b` (of one pipeline), as an
/// incremental lowering reports one: per table, the entries of each that the other lacks.
fn entry_diff(a: &pipec::mag::Mag, b: &pipec::mag::Mag) -> pipec::lower::incremental::Diff {
    let texts = |m: &pipec::mag::Mag, t| {
        let mut out: BTreeMap<EntryText, Vec<pipec::mag::Entry>> = BTreeMap::new();
        for e in &m.table(t).expect("the table").entries {
            let prov = e
                .provenance
                .iter()
                .map(|p| m.provenance[p.0 as usize].to_string())
                .collect();
            let key = (e.priority, e.matches.clone(), e.action.clone(), prov);
            out.entry(key).or_default().push(e.clone());
        }
        out
    };
    let mut diff = pipec::lower::incremental::Diff::default();
    for t in b.table_ids() {
        assert_eq!(
            a.table(t).map(|x| &x.name),
            b.table(t).map(|x| &x.name),
            "one pipeline"
        );
        let (old, new) = (texts(a, t), texts(b, t));
        for (key, es) in &old {
            let keep = new.get(key).map_or(0, Vec::len);
            diff.removed
                .extend(es.iter().skip(keep).map(|e| (t, e.clone())));
        }
        for (key, es) in &new {
            let had = old.get(key).map_or(0, Vec::len);
            diff.added
                .extend(es.iter().skip(had).map(|e| (t, e.clone())));
        }
    }
    diff
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The eBPF maps compiled from the last artifact and the graph's changed entries
    /// equal the maps compiled from scratch, for any edits: the endpoints whose policy
    /// entries are kept, the maps taken as they were, and the whole-map fallback when the
    /// identities change. The two graphs are lowered apart (the identities pinned), so
    /// this does not rest on what the incremental lowering changes.
    #[test]
    fn recompiling_from_the_last_artifact_equals_compiling(s in testgen::spec(6), edits in proptest::collection::vec(edit(), 1..4)) {
        let mut spec = s;
        let mut alive = vec![true; spec.pods.len()];
        let first = load(&documents(&spec, &alive), SessionOptions::default());
        for e in &edits {
            apply_edit(&mut spec, &mut alive, e);
        }
        let pins = first.pins().clone();
        let second = load(&documents(&spec, &alive), SessionOptions { pins, ..SessionOptions::default() });
        for warm in [true, false] {
            let (got, want) = recompiled(first.mag(), second.mag(), warm);
            prop_assert_eq!(got, want);
        }
    }
}

/// The eBPF maps of graph `b` compiled from those of `a` and the entries that differ
/// ([`pipec_ebpf::incremental::mag_to_ebpf_after`]), and compiled from scratch. `warm`:
/// the policy cache has seen `a`, as a session's backend has; else it has seen neither.
type Compiled = Result<EbpfArtifact, pipec::backend::Unsupported>;
fn recompiled(a: &pipec::mag::Mag, b: &pipec::mag::Mag, warm: bool) -> (Compiled, Compiled) {
    let (info_a, info_b) = (
        pipec::mag::validate(a).unwrap(),
        pipec::mag::validate(b).unwrap(),
    );
    let mut cache = pipec_ebpf::PolicyCache::default();
    let old = pipec_ebpf::mag_to_ebpf_cached(a, &info_a, &mut cache).unwrap();
    if !warm {
        cache = pipec_ebpf::PolicyCache::default();
    }
    let diff = entry_diff(a, b);
    let got = pipec_ebpf::incremental::mag_to_ebpf_after(b, &info_b, &mut cache, &old, &diff);
    (got, pipec_ebpf::mag_to_ebpf(b, &info_b))
}

/// The cn10k profile with a flow table of `entries` entries (`None`: unlimited).
fn budget(entries: Option<u64>) -> SessionOptions {
    let mut profile = pipec::backend::octeon_cn10k_profile();
    profile.budget.entries = entries;
    profile.budget.reserved_entries = 0;
    profile.budget.offload_entries = 0;
    SessionOptions {
        hardware: Some(Hardware::Profile(Box::new(profile))),
        ..SessionOptions::default()
    }
}

/// A session of `docs` on a flow table exactly as large as the entries its plan takes with
/// no limit, and that size.
fn at_full_table(docs: &BTreeMap<ObjectKey, String>) -> (Session, u64) {
    let full = load(docs, budget(None)).plan().unwrap().usage.entries;
    (load(docs, budget(Some(full))), full)
}

/// The rules of a plan's text that contain `what`.
fn rules(text: &str, what: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with("rule ") && l.contains(what))
        .count()
}

/// A packet the partial slice decides otherwise than the complete one (every entry
/// hardware can take), among the packets the partial slice decides at all, on the port
/// of the rule it is made from.
fn unsound(
    partial: &[pipec::backend::HwRule],
    complete: &[pipec::backend::HwRule],
) -> Option<BTreeMap<pipec::backend::PacketField, u128>> {
    use pipec::backend::PacketField as F;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        u128::from(seed)
    };
    for r in partial.iter().chain(complete) {
        for _ in 0..4 {
            let mut packet = BTreeMap::new();
            packet.insert(F::EthType, 0x0800);
            for f in [F::Ipv4Src, F::Ipv4Dst, F::IpProto, F::L4Dport] {
                let (value, mask) = r.get(f).map_or((0, 0), |m| (m.value, m.mask));
                packet.insert(f, (value & mask) | (next() & !mask & f.full_mask()));
            }
            let mine = decide(partial, r.port, &packet);
            if mine.is_some() && mine != decide(complete, r.port, &packet) {
                return Some(packet);
            }
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// At the budget's edge the incremental plan keeps what it held, fills what is free
    /// and displaces what ranks lowest, or plans from scratch: either way every packet its
    /// slice decides is decided as a table of every entry hardware can take decides it,
    /// and the budget holds.
    #[test]
    fn a_small_budget_stays_sound(s in testgen::spec(8), entries in 1..12u64, steps in proptest::collection::vec(proptest::collection::vec(edit(), 1..3), 1..6)) {
        let mut spec = s;
        let mut alive = vec![true; spec.pods.len()];
        let mut docs = documents(&spec, &alive);
        let mut session = load(&docs, budget(Some(entries)));
        let mut devices = Devices::default();
        let first_ebpf = session.backend("ebpf").unwrap().diff(None, session.artifact("ebpf").unwrap().unwrap());
        let first_hw = session.backend("octeon-cn10k").unwrap().diff(None, session.artifact("octeon-cn10k").unwrap().unwrap());
        devices.apply(first_ebpf.as_ref(), first_hw.as_ref());
        for step in &steps {
            for e in step {
                apply_edit(&mut spec, &mut alive, e);
            }
            let next = documents(&spec, &alive);
            let evs = events(&docs, &next);
            docs = next;
            let changes = session.apply(&evs).map_err(|r| TestCaseError::fail(r.to_string()))?;
            devices.apply_changes(&changes);
            let complete = load(&docs, SessionOptions { pins: session.pins().clone(), ..budget(None) });
            let mine = session.plan().unwrap();
            prop_assert!(mine.usage.entries <= entries, "{} entries over a budget of {entries}", mine.usage.entries);
            if let Some(p) = unsound(&mine.slice.rules, &complete.plan().unwrap().slice.rules) {
                return Err(TestCaseError::fail(format!(
                    "the slice decides {p:?} otherwise than every capable entry would\n{}",
                    pipec::partition::plan_to_text(mine)
                )));
            }
        }
        prop_assert_eq!(&devices.flows, &hw(&session));
    }
}

/// A pod of `app` in namespace `ns` on the first node, serving HTTP on port 80.
fn http_pod(ns: usize, app: usize) -> PodSpec {
    PodSpec {
        ns,
        app,
        tier: None,
        http: Some(80),
        dns: false,
        node: 0,
    }
}

/// A NetworkPolicy of namespace `ns`: pods of `app` may send nowhere and accept nothing.
/// Their drops rank above every mark and are sound (they have no connections at all).
fn isolated(ns: usize, app: usize) -> testgen::PolicySpec {
    testgen::PolicySpec::Np {
        ns,
        app: Some(app),
        ingress: Some(Vec::new()),
        egress: Some(Vec::new()),
    }
}

/// A NetworkPolicy of namespace 0: pods of `app` admit pods of app 1 on HTTP.
fn admits_app1_on_http(app: usize) -> testgen::PolicySpec {
    testgen::PolicySpec::Np {
        ns: 0,
        app: Some(app),
        ingress: Some(vec![testgen::RuleSpec {
            peers: vec![testgen::PeerSpec::Pods(1)],
            ports: vec![testgen::PortSpec::Http],
        }]),
        egress: None,
    }
}

/// A pod event is planned incrementally, and the plan places what a fresh one places. A
/// pod add that only gives an identity an address keeps every hardware rule of the
/// entries naming it: their compressed rules stay, and only the new address's rule is
/// compressed and created; its delete takes out only the rules that matched it. The new
/// pod of app 1 (10.244.0.13) completes the pair 10.244.0.12/31 with the pod before it, so
/// compressing the entries' rules again (as every such event did) replaces the rule of
/// 10.244.0.12 with one of the pair: a rule destroyed on the device, for nothing.
#[test]
fn a_pod_add_keeps_the_hardware_rules_it_grows() {
    let pod = |app| http_pod(0, app);
    let mut spec = Spec {
        nodes: 0,
        ns_team: vec![0, 1, 0],
        pods: vec![pod(0), pod(1), pod(1)],
        services: Vec::new(),
        // Pods of app 0 admit pods of app 1 on HTTP: the added pod of app 1 changes the
        // prefixes of the rules hardware holds.
        policies: vec![admits_app1_on_http(0)],
    };
    let docs = documents(&spec, &[true; 3]);
    let mut session = load(&docs, options());
    let before = hw(&session);
    assert!(!before.is_empty(), "the mark of app 1 is in hardware");
    spec.pods.push(pod(1));
    let next = documents(&spec, &[true; 4]);
    let changes = session
        .apply(&events(&docs, &next))
        .expect("a pod add applies");
    assert_eq!(changes.times.full_plan, None, "planned from scratch");
    let ops = changes.ops("octeon-cn10k").expect("hw ops").text();
    assert!(
        ops.contains("create "),
        "the new address has no rule:\n{ops}"
    );
    assert!(!ops.contains("destroy "), "a rule left hardware:\n{ops}");
    let after = hw(&session);
    assert!(before.is_subset(&after), "{before:#?}\n{after:#?}");
    // It decides every packet as a fresh plan does, with the same entries in hardware.
    assert_places_as_loaded(&session, &next);
    // Deleted again, the pod's address leaves every rule that matched it: the rule of the
    // pair goes, the rules that match only other pods stay, and the device holds what it
    // held before the add.
    let changes = session
        .apply(&events(&next, &docs))
        .expect("a pod delete applies");
    assert_eq!(changes.times.full_plan, None, "planned from scratch");
    let ops = changes.ops("octeon-cn10k").expect("hw ops").text();
    assert!(!ops.contains("create "), "a rule was created again:\n{ops}");
    assert_eq!(hw(&session), before, "{ops}");
    assert_as_loaded(&session, &docs);
}

/// On a full table a pod add that grows the rules of placed entries is still planned
/// incrementally and fits its budget: the mark that grows stays whole, as a fresh plan
/// ranks it above the pods' default marks, which are displaced or, the new pods' own,
/// left out; the entries of higher rank stay in hardware. (Before step 1b made room by
/// displacing, the growing mark competed again as a touched entry and was evicted, and
/// the plan placed less than a fresh one.)
#[test]
fn a_full_table_keeps_a_growing_entry_as_a_fresh_plan_does() {
    let pod = http_pod;
    let mut spec = Spec {
        nodes: 0,
        ns_team: vec![0, 1],
        pods: vec![pod(0, 0), pod(0, 1), pod(1, 2)],
        services: Vec::new(),
        policies: vec![
            // Pods of app 0 admit pods of app 1 on HTTP: marks whose prefixes an added
            // pod of app 1 grows.
            admits_app1_on_http(0),
            // The pod of app 2 may send nowhere and accept nothing: drops, which rank
            // above every mark (and are sound: it has no connections at all).
            isolated(1, 2),
        ],
    };
    let docs = documents(&spec, &[true; 3]);
    let (mut session, full) = at_full_table(&docs);
    let before = session.plan().unwrap().clone();
    assert_eq!(
        session.plan().unwrap().usage.entries,
        full,
        "the table is full before the event:\n{}",
        pipec::partition::plan_to_text(session.plan().unwrap())
    );
    // Far from the other pods' addresses, so that its prefix merges with none of theirs.
    spec.pods.push(pod(0, 1));
    spec.pods.push(pod(0, 1));
    let next = documents(&spec, &[true; 5]);
    let changes = session
        .apply(&events(&docs, &next))
        .expect("a pod add applies");
    let plan = session.plan().unwrap();
    let text = pipec::partition::plan_to_text(plan);
    assert_eq!(
        changes.times.full_plan, None,
        "the event was planned from scratch:\n{text}"
    );
    assert!(plan.usage.entries <= full, "over the budget:\n{text}");
    // The mark admitting app 1 on HTTP (the only rules matching port 80) was in hardware
    // and is evicted; both drops stay.
    // The mark admitting app 1 on HTTP (the only rules matching port 80) gains a rule
    // for each new pod of app 1 and stays; both drops stay.
    let before_text = pipec::partition::plan_to_text(&before);
    let grown = rules(&before_text, "l4.dport=80") + 2;
    assert_eq!(
        rules(&text, "l4.dport=80"),
        grown,
        "the mark did not grow:\n{text}"
    );
    assert_eq!(rules(&before_text, "drop"), 2, "{before_text}");
    assert_eq!(rules(&text, "drop"), 2, "a drop left hardware:\n{text}");
    assert!(
        text.contains("over-budget"),
        "nothing was left out for budget:\n{text}"
    );
    let fresh = load(
        &next,
        SessionOptions {
            pins: session.pins().clone(),
            ..budget(Some(full))
        },
    );
    assert_eq!(
        hardware_value(plan),
        hardware_value(fresh.plan().unwrap()),
        "a fresh plan places more:\n{text}"
    );
}

/// The value of the entries a plan places in hardware.
fn hardware_value(plan: &pipec::partition::Plan) -> u128 {
    plan.placements
        .iter()
        .filter(|p| p.target == pipec::partition::Target::Hardware)
        .map(|p| u128::from(p.value))
        .sum()
}

/// On a table full of marks, a pod add whose drops outrank them is still planned
/// incrementally: the lowest-ranked kept marks are displaced to eBPF to make room for the
/// drops, as a fresh plan would rank them, instead of the event declining to a plan from
/// scratch (which on a full-scale node takes minutes).
#[test]
fn a_full_table_displaces_kept_marks_for_new_drops() {
    let pod = http_pod;
    let mut spec = Spec {
        nodes: 0,
        ns_team: vec![0, 1],
        pods: vec![pod(0, 0), pod(0, 1), pod(0, 1), pod(0, 1)],
        services: Vec::new(),
        policies: vec![
            // Marks, and no sound drop: the pod of app 0 opens connections anywhere, so
            // its ingress drop would drop their replies.
            admits_app1_on_http(0),
            // Pods of app 2 may send nowhere and accept nothing: sound drops, ranked above
            // every mark. No such pod exists before the event.
            isolated(1, 2),
        ],
    };
    let docs = documents(&spec, &[true; 4]);
    let (mut session, full) = at_full_table(&docs);
    let before = pipec::partition::plan_to_text(session.plan().unwrap());
    assert_eq!(session.plan().unwrap().usage.entries, full, "{before}");
    assert_eq!(rules(&before, "drop"), 0, "{before}");
    spec.pods.push(pod(1, 2));
    let next = documents(&spec, &[true; 5]);
    let changes = session
        .apply(&events(&docs, &next))
        .expect("a pod add applies");
    let plan = session.plan().unwrap();
    let text = pipec::partition::plan_to_text(plan);
    assert_eq!(
        changes.times.full_plan, None,
        "the event was planned from scratch:\n{text}"
    );
    assert!(plan.usage.entries <= full, "over the budget:\n{text}");
    assert_eq!(
        rules(&text, "drop"),
        2,
        "the drops are not in hardware:\n{text}"
    );
    assert!(
        rules(&text, "mark") < rules(&before, "mark"),
        "no mark made room:\n{text}"
    );
    assert!(
        text.contains("over-budget"),
        "nothing was displaced:\n{text}"
    );
    // Within the stated bound of a fresh plan's value.
    let fresh = load(
        &next,
        SessionOptions {
            pins: session.pins().clone(),
            ..budget(Some(full))
        },
    );
    let (mine, theirs) = (hardware_value(plan), hardware_value(fresh.plan().unwrap()));
    let owed = u128::from(pipec::partition::incremental::MAX_OWED_PERCENT);
    assert!(
        mine * 100 >= theirs * (100 - owed),
        "value {mine} against a fresh plan's {theirs}:\n{text}"
    );
}

/// A NetworkPolicy of namespace 0: the pod of app 0 admits app 1 on HTTP and opens no
/// connection, so its ingress drop is sound and sits below the HTTP mark, which it
/// depends on.
fn admits_app1_opens_nothing() -> testgen::PolicySpec {
    match admits_app1_on_http(0) {
        testgen::PolicySpec::Np {
            ns, app, ingress, ..
        } => testgen::PolicySpec::Np {
            ns,
            app,
            ingress,
            egress: Some(Vec::new()),
        },
        other => other,
    }
}

/// Every packet the session's slice decides is decided as a table of every capable
/// entry of `docs` decides it.
fn assert_decides_as_every_capable_entry(session: &Session, docs: &BTreeMap<ObjectKey, String>) {
    let plan = session.plan().unwrap();
    let complete = load(
        docs,
        SessionOptions {
            pins: session.pins().clone(),
            ..budget(None)
        },
    );
    if let Some(p) = unsound(&plan.slice.rules, &complete.plan().unwrap().slice.rules) {
        let text = pipec::partition::plan_to_text(plan);
        panic!("the slice decides {p:?} otherwise than every capable entry would\n{text}");
    }
}

/// Displacing never breaks priority closure: a mark that a placed drop depends on (the
/// drop below it would decide its packets) is not displaced, though it ranks lowest. Every
/// packet the slice decides after the event is decided as a table of every capable entry
/// decides it. (Displacing the mark fails this: its drop then decides HTTP from app 1.)
#[test]
fn displacing_keeps_the_marks_a_placed_drop_depends_on() {
    let pod = http_pod;
    let mut spec = Spec {
        nodes: 0,
        ns_team: vec![0, 1],
        pods: vec![pod(0, 0), pod(0, 1), pod(0, 1)],
        services: Vec::new(),
        policies: vec![
            // That mark is the only one: the lowest-ranked entry placed.
            admits_app1_opens_nothing(),
            // Pods of app 1 send nowhere and accept nothing: sound drops and no default
            // marks, which would rank lower still.
            isolated(0, 1),
            // Pods of app 2 may send nowhere and accept nothing; none exists yet.
            isolated(1, 2),
        ],
    };
    let docs = documents(&spec, &[true; 3]);
    let (mut session, full) = at_full_table(&docs);
    let before = pipec::partition::plan_to_text(session.plan().unwrap());
    assert!(before.contains("l4.dport=80"), "{before}");
    spec.pods.push(pod(1, 2));
    let next = documents(&spec, &[true; 4]);
    let changes = session
        .apply(&events(&docs, &next))
        .expect("a pod add applies");
    let plan = session.plan().unwrap();
    let text = pipec::partition::plan_to_text(plan);
    assert!(plan.usage.entries <= full, "over the budget:\n{text}");
    // The only mark may not be displaced, so the plan is made from scratch, which keeps
    // it with its drop.
    assert_eq!(
        changes.times.full_plan,
        Some(pipec::partition::incremental::FromScratch::Ranking),
        "{text}"
    );
    assert!(text.contains("l4.dport=80"), "the mark left:\n{text}");
    assert_decides_as_every_capable_entry(&session, &next);
}

/// Making room on a full table never breaks priority closure either: a mark that grows
/// (it admits app 1, and pods of app 1 are added) ranks lowest, but a placed drop depends
/// on it, so step 1b does not displace it to make room for its own new rules; it
/// displaces drops that nothing depends on. Every packet the slice decides is decided as a
/// table of every capable entry decides it. (Displacing the mark fails a debug check in
/// step 2; in a release build the drop below it would leave too.)
#[test]
fn making_room_keeps_the_marks_a_placed_drop_depends_on() {
    let pod = http_pod;
    let mut spec = Spec {
        nodes: 0,
        ns_team: vec![0, 1],
        pods: vec![pod(0, 0), pod(0, 1), pod(0, 1)],
        services: Vec::new(),
        policies: vec![
            admits_app1_opens_nothing(),
            // Pods of app 1 send nowhere and accept nothing: sound drops and no default
            // marks, which would rank lower still.
            isolated(0, 1),
        ],
    };
    let docs = documents(&spec, &[true; 3]);
    let (mut session, full) = at_full_table(&docs);
    let before = pipec::partition::plan_to_text(session.plan().unwrap());
    assert!(before.contains("l4.dport=80"), "{before}");
    // Two pods, so that the mark's new rules (10.244.0.12/31 and 10.244.0.14) need two
    // entries where one is free.
    spec.pods.push(pod(0, 1));
    spec.pods.push(pod(0, 1));
    let next = documents(&spec, &[true; 5]);
    let changes = session
        .apply(&events(&docs, &next))
        .expect("a pod add applies");
    let plan = session.plan().unwrap();
    let text = pipec::partition::plan_to_text(plan);
    assert_eq!(changes.times.full_plan, None, "{text}");
    assert!(
        session.plan_rebuilt().displaced > 0,
        "no room was made:\n{text}"
    );
    assert!(plan.usage.entries <= full, "over the budget:\n{text}");
    assert_decides_as_every_capable_entry(&session, &next);
}

/// A rejected event leaves the session as it was, and the next good event applies.
#[test]
fn a_rejected_event_changes_nothing() {
    let spec = Spec {
        nodes: 0,
        ns_team: vec![0, 1, 0],
        pods: vec![PodSpec {
            ns: 0,
            app: 0,
            tier: None,
            http: Some(80),
            dns: false,
            node: 0,
        }],
        services: Vec::new(),
        policies: Vec::new(),
    };
    let docs = documents(&spec, &[true]);
    let mut session = load(&docs, options());
    let before = pipec::mag::text::mag_to_text(session.mag());
    let bad = Event::Upsert {
        source: "watch:bad".into(),
        text: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: q\n  namespace: ns0\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: 70000\n".into(),
    };
    let err = session
        .apply(&[bad])
        .expect_err("a port above 65535 is rejected");
    assert!(err.rendered.contains("watch:bad"), "{}", err.rendered);
    assert_eq!(pipec::mag::text::mag_to_text(session.mag()), before);
    assert_eq!(session.generation(), 0);
    let good = Event::Delete(ObjectKey::new("Pod", "ns0", "p0"));
    let changes = session.apply(&[good]).expect("a delete applies");
    assert_eq!(changes.generation, 1);
    assert!(!changes.ops("ebpf").expect("ebpf").is_empty());
}

/// The model stage replays what modelling each unchanged pod gave before. A refused event
/// leaves no such memo of what it brought: a pod relabelled in a batch the model refuses is
/// modelled, at the next event, with the labels it has, not the ones the refused batch
/// gave it. And a pod that changes is modelled anew.
#[test]
fn a_refused_event_leaves_nothing_for_the_model_to_replay() {
    let pod = |name: &str, app: &str, ip: &str| {
        Event::Upsert {
        source: format!("watch:{name}"),
        text: format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{app: {app}}}\nspec:\n  containers:\n  - name: c\nstatus:\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n"),
    }
    };
    let app_of = |s: &Session, name: &str| -> Option<String> {
        let p = s.cluster().pods.iter().find(|p| p.name == name)?;
        p.labels.get("app").cloned()
    };
    let Event::Upsert { text, .. } = pod("p0", "old", "10.244.0.10") else {
        unreachable!("an upsert");
    };
    let mut session =
        Session::load_texts(&[("p0.yaml", &text)], options(), &backends).expect("loads");
    // The first event models every pod and remembers each.
    session
        .apply(&[pod("p1", "x", "10.244.0.11")])
        .expect("a pod add applies");
    let bad = Event::Upsert {
        source: "watch:bad".into(),
        text: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: q\n  namespace: default\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: 70000\n".into(),
    };
    session
        .apply(&[pod("p0", "new", "10.244.0.10"), bad])
        .expect_err("a port above 65535 is refused");
    assert_eq!(app_of(&session, "p0").as_deref(), Some("old"));
    session
        .apply(&[pod("p2", "x", "10.244.0.12")])
        .expect("a pod add applies");
    assert_eq!(
        app_of(&session, "p0").as_deref(),
        Some("old"),
        "a memo of the refused batch"
    );
    session
        .apply(&[pod("p0", "new", "10.244.0.10")])
        .expect("a relabel applies");
    session
        .apply(&[pod("p3", "x", "10.244.0.13")])
        .expect("a pod add applies");
    assert_eq!(
        app_of(&session, "p0").as_deref(),
        Some("new"),
        "a memo of the pod before"
    );
    assert_eq!(session.cluster().pods.len(), 4);
}

/// One Service's endpoint change rewrites only that Service's own Maglev slots and the
/// backend that left: backend and frontend ids stay with what they name, so another
/// Service's slots, which name other backends, are not written again. (With ids numbered
/// densely, every backend after the one that left was renumbered, and every slot naming
/// one of them rewritten.)
#[test]
fn a_service_endpoint_change_writes_only_its_own_slots() {
    use pipec_ebpf::artifact::{MapName, MapOp};
    let pod = |name: &str, app: &str, ip: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{app: {app}}}\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: 80\nstatus:\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n")
    };
    let svc = |name: &str, app: &str, ip: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  clusterIP: {ip}\n  selector: {{app: {app}}}\n  ports:\n  - {{port: 80, targetPort: 80, protocol: TCP}}\n")
    };
    let mut docs = vec![svc("s-a", "a", "10.96.0.10"), svc("s-b", "b", "10.96.0.20")];
    for i in 0..3 {
        docs.push(pod(&format!("a-{i}"), "a", &format!("10.244.0.{}", 10 + i)));
        docs.push(pod(&format!("b-{i}"), "b", &format!("10.244.0.{}", 20 + i)));
    }
    let names: Vec<String> = (0..docs.len()).map(|i| format!("doc-{i}.yaml")).collect();
    let texts: Vec<(&str, &str)> = names
        .iter()
        .map(String::as_str)
        .zip(docs.iter().map(String::as_str))
        .collect();
    let mut session = Session::load_texts(&texts, options(), &backends).expect("loads");
    let service_id = |s: &Session, ip: &str| {
        let a = ebpf(s);
        let ip: std::net::IpAddr = ip.parse().expect("an address");
        a.services
            .iter()
            .find(|(fe, _)| fe.addr == ip)
            .map(|(_, s)| s.id)
            .expect("the Service's frontend")
    };
    let b_before = service_id(&session, "10.96.0.20");
    let changes = session
        .apply(&[Event::Delete(ObjectKey::new("Pod", "default", "a-0"))])
        .expect("a delete applies");
    assert_eq!(
        service_id(&session, "10.96.0.20"),
        b_before,
        "s-b's frontend id"
    );
    let ops = &changes
        .targets
        .iter()
        .find(|t| t.target == "ebpf")
        .expect("eBPF operations")
        .ops
        .as_any()
        .downcast_ref::<MapOps>()
        .expect("map operations")
        .ops;
    let on = |map: MapName| {
        ops.iter().filter(move |op| match op {
            MapOp::Upsert { map: m, .. } | MapOp::Delete { map: m, .. } => *m == map,
        })
    };
    let key_of = |op: &MapOp| match op {
        MapOp::Upsert { key, .. } | MapOp::Delete { key, .. } => key.clone(),
    };
    let b_slots = on(MapName::Maglev)
        .filter(|op| key_of(op)[..4] == b_before.to_ne_bytes())
        .count();
    assert_eq!(
        b_slots,
        0,
        "s-b's Maglev slots were written again: {}",
        changes.targets[0].ops.text()
    );
    assert!(
        on(MapName::Maglev).count() > 0,
        "s-a's slots moved off the backend that left"
    );
    assert_eq!(
        on(MapName::Backends).count(),
        1,
        "only the backend that left: {}",
        changes.targets[0].ops.text()
    );
}

/// A `.pipe` policy that lets one namespace reach SSH and denies it to every remote makes
/// the eBPF policy write a deny for every identity the rules do not name (the wildcard
/// cannot deny there, or it would overrule the named allow). An event that brings a new
/// identity gives it those denies too (from the template the endpoints' cached entries
/// keep), and the artifact is the one a fresh load gives.
#[test]
fn a_new_identity_gets_the_denies_every_unnamed_identity_has() {
    let ns = |name: &str| {
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{team: {name}}}\n")
    };
    let pod = |name: &str, ns: &str, app: &str, ip: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{app: {app}}}\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: 22\nstatus:\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n")
    };
    let pipe = "policy \"ssh\" priority 10 {\n  subject namespaces { team = \"prod\" };\n  ingress allow \"ops-ssh\" from namespaces { team = \"ops\" } ports tcp 22;\n  ingress deny \"no-ssh\" from entity all ports tcp 22;\n}\n";
    let docs = [
        ns("prod"),
        ns("ops"),
        ns("dev"),
        pod("web", "prod", "web", "10.244.0.10"),
        pod("db", "prod", "db", "10.244.0.11"),
        pod("admin", "ops", "admin", "10.244.0.20"),
        pod("tool", "dev", "tool", "10.244.0.30"),
    ];
    let names: Vec<String> = (0..docs.len()).map(|i| format!("doc-{i}.yaml")).collect();
    let mut texts: Vec<(&str, &str)> = names
        .iter()
        .map(String::as_str)
        .zip(docs.iter().map(String::as_str))
        .collect();
    texts.push(("ssh.pipe", pipe));
    let mut session = Session::load_texts(&texts, options(), &backends).expect("loads");
    let denies_for = |a: &EbpfArtifact, identity: u32| {
        a.policy
            .iter()
            .filter(|(m, d)| {
                m.identity == identity && d.action == pipec_ebpf::artifact::Action::Deny
            })
            .count()
    };
    let identity_of = |a: &EbpfArtifact, ip: &str| {
        let ip: std::net::IpAddr = ip.parse().expect("an address");
        a.endpoints.get(&ip).expect("a local endpoint").identity
    };
    let before = ebpf(&session);
    let dev = identity_of(&before, "10.244.0.30");
    assert!(
        denies_for(&before, dev) > 0,
        "the dev pod's identity is denied SSH to prod explicitly"
    );
    // A pod with a new label set in dev: a new identity, named by no rule.
    let text = pod("probe", "dev", "probe", "10.244.0.31");
    session
        .apply(&[Event::Upsert {
            source: "probe.yaml".into(),
            text,
        }])
        .expect("applies");
    let after = ebpf(&session);
    let probe = identity_of(&after, "10.244.0.31");
    assert_ne!(probe, dev, "the new pod has an identity of its own");
    assert_eq!(
        denies_for(&after, probe),
        denies_for(&before, dev),
        "the new identity gets the denies every unnamed identity has"
    );
    let mut all = texts.clone();
    let probe_text = pod("probe", "dev", "probe", "10.244.0.31");
    all.push(("probe.yaml", &probe_text));
    let opts = SessionOptions {
        pins: session.pins_now(),
        ..options()
    };
    let fresh = Session::load_texts(&all, opts, &backends).expect("loads");
    assert_eq!(named_cookies(after), named_cookies(ebpf(&fresh)));
    // Compiled from the last artifact, the new identity gets its denies too: a new identity
    // writes every endpoint's entries again (the session lowered this event in full, so
    // it compiled from scratch; the graphs are compared here instead).
    let first = Session::load_texts(&texts, options(), &backends).expect("loads");
    let (got, want) = recompiled(first.mag(), fresh.mag(), true);
    assert_eq!(got.expect("compiles"), want.expect("compiles"));
}

/// Two Services' worth of pods, an EndpointSlice of Service `s-a` with `ready` as each of
/// its three endpoints' readiness, and a policy that lets app `b` reach app `a` on HTTP
/// (so the plan holds rules in hardware), by key.
fn sliced_service(ready: [bool; 3]) -> BTreeMap<ObjectKey, String> {
    let mut docs = BTreeMap::new();
    let mut put = |kind: &str, name: &str, text: String| {
        docs.insert(ObjectKey::new(kind, "default", name), text);
    };
    for (app, base) in [("a", 10), ("b", 20)] {
        for i in 0..3 {
            let name = format!("{app}-{i}");
            let ip = format!("10.244.0.{}", base + i);
            put("Pod", &name, format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{app: {app}}}\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: 80\nstatus:\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n"));
        }
    }
    put("Service", "s-a", "apiVersion: v1\nkind: Service\nmetadata:\n  name: s-a\n  namespace: default\nspec:\n  clusterIP: 10.96.0.10\n  selector: {app: a}\n  ports:\n  - {port: 80, targetPort: 80, protocol: TCP}\n".into());
    let endpoints: String = (0..3)
        .map(|i| format!("- addresses: [\"10.244.0.{}\"]\n  conditions: {{ready: {}}}\n  targetRef: {{kind: Pod, name: a-{i}, namespace: default}}\n", 10 + i, ready[i]))
        .collect();
    put("EndpointSlice", "s-a-x1", format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s-a-x1\n  namespace: default\n  labels: {{kubernetes.io/service-name: s-a}}\naddressType: IPv4\nports:\n- {{port: 80, protocol: TCP}}\nendpoints:\n{endpoints}"));
    put("NetworkPolicy", "b-to-a", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: b-to-a\n  namespace: default\nspec:\n  podSelector: {matchLabels: {app: a}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: b}}\n    ports:\n    - {port: 80, protocol: TCP}\n".into());
    docs
}

/// Each placement's entry and the provenance text it names (which `placements` leaves
/// out: a placement left from an older graph names the old entry's provenance).
fn provenances(plan: &pipec::partition::Plan) -> Vec<(String, Option<String>)> {
    plan.placements
        .iter()
        .map(|p| (p.entry_name(), p.prov.map(|i| plan.origins[&i].clone())))
        .collect()
}

/// `docs` of [`sliced_service`] with one more pod of app `b`, `b-9`, a replica of `b-0`.
fn with_replica(docs: &BTreeMap<ObjectKey, String>) -> BTreeMap<ObjectKey, String> {
    let mut out = docs.clone();
    let pod = docs[&ObjectKey::new("Pod", "default", "b-0")]
        .replace("b-0", "b-9")
        .replace("10.244.0.20", "10.244.0.29");
    out.insert(ObjectKey::new("Pod", "default", "b-9"), pod);
    out
}

/// The session and a fresh load agree on the MAG, the plan's placements and both
/// artifacts.
/// The session's plan places the entries a fresh load of `docs` places, and its rules
/// decide every packet as the fresh plan's do (its compressed rules may differ).
fn assert_places_as_loaded(session: &Session, docs: &BTreeMap<ObjectKey, String>) {
    let fresh = load(
        docs,
        SessionOptions {
            pins: session.pins().clone(),
            ..options()
        },
    );
    let (mine, theirs) = (session.plan().unwrap(), fresh.plan().unwrap());
    assert_eq!(placements(mine), placements(theirs));
    assert_eq!(unsound(&mine.slice.rules, &theirs.slice.rules), None);
    assert_eq!(unsound(&theirs.slice.rules, &mine.slice.rules), None);
}

fn assert_as_loaded(session: &Session, docs: &BTreeMap<ObjectKey, String>) {
    let fresh = load(
        docs,
        SessionOptions {
            pins: session.pins().clone(),
            ..options()
        },
    );
    assert_eq!(
        pipec::mag::text::mag_to_text(session.mag()),
        pipec::mag::text::mag_to_text(fresh.mag())
    );
    let (mine, theirs) = (session.plan().unwrap(), fresh.plan().unwrap());
    assert_eq!(placements(mine), placements(theirs));
    // Provenance numbers are interned in the order a session met them; their texts agree.
    let texts = |p: &pipec::partition::Plan| p.origins.values().cloned().collect::<BTreeSet<_>>();
    assert_eq!(texts(mine), texts(theirs));
    assert_eq!(provenances(mine), provenances(theirs));
    assert_eq!(hw(session), hw(&fresh));
    assert_eq!(named_cookies(ebpf(session)), named_cookies(ebpf(&fresh)));
}

/// An endpoint of a Service turning not ready, and back, changes only the Service's
/// backend tables, which no plan reads: the plan stays as it was (no pass over the
/// candidates), and the state is the one a fresh load gives. A pod event after it still
/// re-plans from that plan's basis.
#[test]
fn a_service_endpoint_change_keeps_the_plan() {
    let docs = sliced_service([true; 3]);
    let mut session = load(&docs, options());
    assert!(
        session.plan().unwrap().usage.entries > 0,
        "the policy is in hardware"
    );
    let mut now = docs;
    for ready in [[true, false, true], [true; 3]] {
        let next = sliced_service(ready);
        let changes = session.apply(&events(&now, &next)).expect("applies");
        now = next;
        assert!(session.plan_kept(), "the plan was kept as it was");
        assert!(
            !changes.ops("ebpf").unwrap().is_empty(),
            "the backends changed"
        );
        assert_eq!(changes.ops("octeon-cn10k").unwrap().len(), 0);
        assert_as_loaded(&session, &now);
    }
    let next = with_replica(&now);
    let changes = session.apply(&events(&now, &next)).expect("applies");
    assert!(!session.plan_kept(), "a pod's address is read by plans");
    assert_eq!(
        changes.times.full_plan, None,
        "planned from the kept plan's basis"
    );
    assert!(
        !changes.ops("octeon-cn10k").unwrap().is_empty(),
        "the new pod of app b reaches a"
    );
    assert_as_loaded(&session, &next);
}

/// Carrying a plan to a graph whose changes lie in tables no plan reads gives a fresh
/// plan's placements, and undoing it gives the plan back exactly; a change in a table
/// plans read is refused, with the plan untouched.
#[test]
fn a_carried_plan_undoes_exactly() {
    use pipec::partition::incremental::carry;
    let before = load(&sliced_service([true; 3]), options());
    let after = load(
        &sliced_service([false, true, true]),
        SessionOptions {
            pins: before.pins().clone(),
            ..options()
        },
    );
    let (old, new) = (before.mag(), after.mag());
    let changed: Vec<_> = old
        .table_ids()
        .into_iter()
        .filter(|t| old.table(*t).map(|x| &x.entries) != new.table(*t).map(|x| &x.entries))
        .collect();
    assert!(!changed.is_empty(), "the readiness changed some table");
    let original = before.plan().unwrap().clone();
    let mut plan = original.clone();
    let carried = carry(&mut plan, new, &changed).expect("no changed table is read by plans");
    assert_eq!(placements(&plan), placements(after.plan().unwrap()));
    assert_eq!(provenances(&plan), provenances(after.plan().unwrap()));
    carried.undo(&mut plan);
    assert_eq!(plan, original);
    // A readiness change leaves the Maglev table its size; one that grows or shrinks a
    // table moves the placements of every table after it.
    let mut shrunk = new.clone();
    let anti_spoof = shrunk
        .table_by_name(pipec::mag::pipeline::table::ANTI_SPOOF)
        .expect("an anti-spoofing table");
    shrunk
        .table_mut(anti_spoof)
        .expect("the table")
        .entries
        .remove(0);
    let mut tables = changed.clone();
    tables.push(anti_spoof);
    let mut plan = original.clone();
    let carried = carry(&mut plan, &shrunk, &tables).expect("no changed table is read by plans");
    assert_eq!(plan.placements.len() + 1, original.placements.len());
    let fresh = pipec::partition::plan_to_text(&pipec::partition::mag_to_plan(
        &shrunk,
        &pipec::mag::validate(&shrunk).expect("valid"),
        before.profile().expect("a profile"),
        &[],
    ));
    assert_eq!(pipec::partition::plan_to_text(&plan), fresh);
    carried.undo(&mut plan);
    assert_eq!(plan, original);
    let ingress = new
        .table_by_name(pipec::mag::pipeline::table::INGRESS_POLICY)
        .expect("an ingress policy table");
    let mut read = changed.clone();
    read.push(ingress);
    assert!(carry(&mut plan, new, &read).is_none());
    assert_eq!(plan, original);
    // A Maglev row that names a record no other entry names: carried to it, the plan's
    // origins gain the record; carried back, they lose it again.
    let mut named = new.clone();
    let lb = named
        .table_by_name(pipec::mag::pipeline::table::LB_BACKEND)
        .expect("a Maglev table");
    let (record, _) = named
        .provenance
        .insert_full(pipec::mag::Provenance::Builtin("only-this-row".into()));
    named.table_mut(lb).expect("the table").entries[0].provenance =
        vec![pipec::mag::ProvId(record as u32)].into();
    let text = |plan: &pipec::partition::Plan| plan.origins.get(&(record as u32)).cloned();
    let mut plan = original.clone();
    let there = carry(&mut plan, &named, &[lb]).expect("no changed table is read by plans");
    assert_eq!(text(&plan).as_deref(), Some("builtin:only-this-row"));
    let mut back = plan.clone();
    carry(&mut back, new, &[lb]).expect("no changed table is read by plans");
    assert_eq!(text(&back), None, "the record left with its only row");
    assert_eq!(back.origins, original.origins);
    there.undo(&mut plan);
    assert_eq!(plan, original);
}

/// The rte_flow backend, counting its compiles.
struct Counting {
    inner: pipec_rte_flow::RteFlowBackend,
    compiles: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl pipec::backend::Backend for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn profile(&self) -> &pipec::backend::Profile {
        self.inner.profile()
    }

    fn check_rule(&self, rule: &pipec::backend::HwRule) -> Result<(), pipec::backend::Unsupported> {
        self.inner.check_rule(rule)
    }

    fn compile(
        &self,
        input: &pipec::backend::CompileInput<'_>,
    ) -> Result<Box<dyn pipec::backend::Artifact>, pipec::backend::Unsupported> {
        self.compiles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.compile(input)
    }

    fn diff(
        &self,
        old: Option<&dyn pipec::backend::Artifact>,
        new: &dyn pipec::backend::Artifact,
    ) -> Box<dyn Operations> {
        self.inner.diff(old, new)
    }

    fn reads_only_the_plan(&self) -> bool {
        self.inner.reads_only_the_plan()
    }
}

/// A target that reads nothing but the plan is not compiled again when an event keeps the
/// plan (an endpoint turning not ready), and has no operations; it is compiled again when
/// the plan changes (a pod added), and its rules are a fresh load's either way.
#[test]
fn a_kept_plan_keeps_the_artifacts_that_read_only_the_plan() {
    use std::sync::atomic::Ordering;
    let compiles = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = compiles.clone();
    let make = move |hardware: Option<&pipec::backend::Profile>| {
        let mut out: Vec<Box<dyn pipec::backend::Backend>> =
            vec![Box::new(pipec_ebpf::EbpfBackend::default())];
        if let Some(p) = hardware {
            out.push(Box::new(Counting {
                inner: pipec_rte_flow::RteFlowBackend::new(p.clone()),
                compiles: counter.clone(),
            }));
        }
        out
    };
    let docs = sliced_service([true; 3]);
    let mut session = load_with(&docs, options(), &make);
    let _ = hw(&session);
    let before = compiles.load(Ordering::Relaxed);
    let next = sliced_service([true, false, true]);
    let changes = session.apply(&events(&docs, &next)).expect("applies");
    assert!(session.plan_kept());
    assert_eq!(
        compiles.load(Ordering::Relaxed),
        before,
        "not compiled again"
    );
    assert!(changes.ops("octeon-cn10k").unwrap().is_empty());
    assert_as_loaded(&session, &next);
    let more = with_replica(&next);
    let before = compiles.load(Ordering::Relaxed);
    let changes = session.apply(&events(&next, &more)).expect("applies");
    assert!(!session.plan_kept());
    assert_eq!(
        compiles.load(Ordering::Relaxed),
        before + 1,
        "compiled again"
    );
    assert!(!changes.ops("octeon-cn10k").unwrap().is_empty());
    assert_as_loaded(&session, &more);
}

/// A pod event moves the entries after the pod's own in their tables, so every rule of
/// those entries names another entry than before (its origin text): the rules are the
/// same on the device all the same. The entries that name the pod's identity are built
/// anew and keep their rules, and only the rules of the address itself are new: none
/// when the pod is deleted, one per entry when it comes back.
#[test]
fn entries_that_move_keep_their_rules() {
    let pod = |app| http_pod(0, app);
    // The first pod (of app 1, 10.244.0.10) has entries of its own before every other
    // pod's: its delete moves them.
    let spec = Spec {
        nodes: 0,
        ns_team: vec![0, 1, 0],
        pods: vec![pod(1), pod(0), pod(1), pod(1)],
        services: Vec::new(),
        policies: vec![admits_app1_on_http(0), admits_app1_on_http(1)],
    };
    let all = documents(&spec, &[true; 4]);
    let mut session = load(&all, options());
    let without = documents(&spec, &[false, true, true, true]);
    // The admissions of app 1 by app 0's pod and by app 1's two other pods.
    apply_rebuilding(&mut session, &all, &without, (3, 0));
    assert_as_loaded(&session, &without);
    // Each entry admits the new address: src 10.244.0.10 to its pod.
    let changes = apply_rebuilding(&mut session, &without, &all, (3, 3));
    let ops = changes.ops("octeon-cn10k").expect("hw ops").text();
    assert!(!ops.contains("destroy "), "a rule left hardware:\n{ops}");
}

/// Applies the events from `from` to `to` and checks that they were planned incrementally
/// and that step 1b kept `entries` held entries built anew, with `new_rules` new rules.
fn apply_rebuilding(
    session: &mut Session,
    from: &BTreeMap<ObjectKey, String>,
    to: &BTreeMap<ObjectKey, String>,
    (entries, new_rules): (usize, usize),
) -> Changes {
    let changes = session.apply(&events(from, to)).expect("the events apply");
    assert_eq!(changes.times.full_plan, None, "planned from scratch");
    let expected = pipec::partition::incremental::Rebuilds {
        entries,
        new_rules,
        displaced: 0,
    };
    assert_eq!(session.plan_rebuilt(), expected);
    changes
}

/// A NetworkPolicy of namespace 0: pods of `app` admit pods of app 1 on HTTP and send
/// nowhere. Their egress drop of every destination would drop their replies to app 1, so
/// hardware holds it narrowed to the addresses of every other identity.
fn admits_app1_sends_nowhere(app: usize) -> testgen::PolicySpec {
    match admits_app1_on_http(app) {
        testgen::PolicySpec::Np {
            ns, app, ingress, ..
        } => testgen::PolicySpec::Np {
            ns,
            app,
            ingress,
            egress: Some(Vec::new()),
        },
        other => other,
    }
}

/// A narrowed egress drop is built again from its runs (its rules by remote prefix) when
/// identities' prefixes change: a pod of app 2 added next to the one there is makes that
/// identity's /32 a /31, and the drop gets one new rule for it while the rules of every
/// other prefix are copied; the delete takes it back. Each plan places what a fresh plan
/// places, and in a debug build every such rebuild is also checked against building all
/// of the drop's rules again.
#[test]
fn a_narrowed_drop_is_built_again_from_its_runs() {
    let pod = |app| http_pod(0, app);
    let mut spec = Spec {
        nodes: 0,
        ns_team: vec![0, 1, 0],
        pods: vec![pod(0), pod(1), pod(2)],
        services: Vec::new(),
        policies: vec![admits_app1_sends_nowhere(0)],
    };
    let docs = documents(&spec, &[true; 3]);
    let mut session = load(&docs, options());
    let narrowed = |s: &Session| {
        s.plan()
            .unwrap()
            .placements
            .iter()
            .filter(|p| p.target == pipec::partition::Target::Hardware)
            .filter(|p| p.chain.iter().any(|c| c.starts_with("sound for ")))
            .count()
    };
    assert_eq!(narrowed(&session), 1, "app 0's egress drop is narrowed");
    spec.pods.push(pod(2));
    let next = documents(&spec, &[true; 4]);
    apply_rebuilding(&mut session, &docs, &next, (1, 1));
    assert_eq!(narrowed(&session), 1);
    // The pods' own marks keep the compressed rules they had, so the slice is not the one
    // a fresh plan compresses; it places the same entries and decides the same packets.
    assert_places_as_loaded(&session, &next);
    // Deleted again, the /31 goes back to app 2's 10.244.0.12 and the unnamed addresses'
    // 10.244.0.13: two new runs of one rule each.
    apply_rebuilding(&mut session, &next, &docs, (1, 2));
    assert_as_loaded(&session, &docs);
}

/// Step 1b counts the new rules of the entries it keeps as they compress, not one flow
/// entry each: with one free entry, a third pod of app 1 gives each of the two admissions
/// a rule (from 10.244.0.12 to 10.244.0.10, and to 10.244.0.11), which compress into one
/// (to 10.244.0.10/31). Counted one each, they did not fit, and both admissions were
/// placed again as touched entries, their rules all compressed anew.
#[test]
fn new_rules_are_counted_compressed_against_the_free_entries() {
    let pod = |app| http_pod(0, app);
    let mut spec = Spec {
        nodes: 0,
        ns_team: vec![0, 1, 0],
        pods: vec![pod(1), pod(1)],
        services: Vec::new(),
        policies: vec![admits_app1_on_http(1)],
    };
    let docs = documents(&spec, &[true; 2]);
    let full = load(&docs, budget(None)).plan().unwrap().usage.entries;
    let mut session = load(&docs, budget(Some(full + 1)));
    let before = hw(&session);
    spec.pods.push(pod(1));
    let next = documents(&spec, &[true; 3]);
    apply_rebuilding(&mut session, &docs, &next, (2, 2));
    // The admissions' rule stays on the device (the pods' own marks rank lowest and make
    // room for the new pod's admission), the plan keeps its budget, and every packet it
    // decides is decided as by a table of every entry hardware can take.
    let admissions: Vec<&String> = before.iter().filter(|r| r.contains("tcp")).collect();
    assert_eq!(admissions.len(), 1, "{before:#?}");
    assert!(hw(&session).contains(admissions[0]));
    assert!(session.plan().unwrap().usage.entries <= full + 1);
    assert_decides_as_every_capable_entry(&session, &next);
}

/// On a full table, step 1b makes room for the new rules of the entries it rebuilds by
/// displacing the lowest-ranked kept entry, as a fresh plan leaves the lowest out first;
/// before, the rebuilt entries all competed again as touched ones, their rules compressed
/// anew. Pods of app 2 join app 0's narrowed egress drop's prefixes one by one: the first
/// new rules fit the one free entry; the next need room, and a pod's egress mark (the
/// lowest value of the plan) leaves while the drop stays whole.
#[test]
fn a_full_table_makes_room_for_rebuilt_rules_by_displacing_the_lowest_entry() {
    let pod = |app| http_pod(0, app);
    let mut spec = Spec {
        nodes: 0,
        ns_team: vec![0, 1, 0],
        pods: vec![pod(0), pod(1), pod(2), pod(1)],
        services: Vec::new(),
        policies: vec![admits_app1_sends_nowhere(0)],
    };
    let docs = documents(&spec, &[true; 4]);
    let (mut session, full) = at_full_table(&docs);
    let narrowed_drop = |s: &Session| {
        let plan = s.plan().unwrap();
        let held = plan.placements.iter().filter(|p| {
            p.target == pipec::partition::Target::Hardware
                && p.chain.iter().any(|c| c.starts_with("sound for "))
        });
        held.map(|p| p.hw_rules).next()
    };
    assert!(narrowed_drop(&session).is_some(), "app 0's drop is held");
    spec.pods.push(pod(2));
    let one = documents(&spec, &[true; 5]);
    apply_rebuilding(&mut session, &docs, &one, (1, 2));
    spec.pods.push(pod(2));
    let two = documents(&spec, &[true; 6]);
    let changes = session
        .apply(&events(&one, &two))
        .expect("the events apply");
    assert_eq!(changes.times.full_plan, None, "planned from scratch");
    let rebuilt = session.plan_rebuilt();
    let expected = pipec::partition::incremental::Rebuilds {
        entries: 1,
        new_rules: 1,
        displaced: 1,
    };
    assert_eq!(rebuilt, expected);
    // The entry that left is a pod's egress mark, and the drop is still held.
    let ops = changes.ops("octeon-cn10k").expect("hw ops").text();
    let destroyed: Vec<&str> = ops.lines().filter(|l| l.starts_with("destroy ")).collect();
    assert!(!destroyed.is_empty(), "{ops}");
    assert!(destroyed.iter().all(|l| l.contains("mark")), "{ops}");
    assert!(narrowed_drop(&session).is_some(), "the drop left:\n{ops}");
    assert!(session.plan().unwrap().usage.entries <= full);
    assert_decides_as_every_capable_entry(&session, &two);
}

/// A plan's usage counts what the hardware artifact holds, rule for rule: its flow
/// entries, and its counters (pipecd's connection offload reads the plan's usage for the
/// entries and counters the plan leaves free), after a load and after an event.
#[test]
fn the_plan_counts_what_the_hardware_artifact_holds() {
    let pod = |app| http_pod(0, app);
    let mut spec = Spec {
        nodes: 0,
        ns_team: vec![0, 1, 0],
        pods: vec![pod(0), pod(1), pod(2)],
        services: Vec::new(),
        policies: vec![admits_app1_sends_nowhere(0), isolated(0, 2)],
    };
    let docs = documents(&spec, &[true; 3]);
    let mut session = load(&docs, options());
    let held = |s: &Session| {
        let a = s
            .artifact("octeon-cn10k")
            .expect("target")
            .expect("compiles");
        let a = a
            .as_any()
            .downcast_ref::<RteFlowArtifact>()
            .expect("rte_flow");
        let counted = a.rules.iter().filter(|r| {
            let count = |x: &pipec_rte_flow::rule::Action| {
                matches!(x, pipec_rte_flow::rule::Action::Count { .. })
            };
            r.rule.actions.iter().any(count)
        });
        (a.rules.len() as u64, counted.count() as u64)
    };
    let usage = |s: &Session| {
        let u = &s.plan().expect("a plan").usage;
        (u.entries, u.counters)
    };
    assert!(
        usage(&session).1 > 0,
        "no counter is used: nothing checks them"
    );
    assert_eq!(usage(&session), held(&session));
    spec.pods.push(pod(2));
    let next = documents(&spec, &[true; 4]);
    session.apply(&events(&docs, &next)).expect("applies");
    assert_eq!(usage(&session), held(&session));
}
