//! Benchmark of the compile session (issue 12): `Session::load` through every stage (plan
//! and both artifacts included), then pod add, pod label change and pod delete events,
//! each from the event to every target's operations, against the baseline a
//! non-incremental tool has (a full load of the new state per event).
//!
//! `cargo run --release -p pipec-cli --example session_bench -- [--full] [--pods N] [--events N]
//! [--kinds add,relabel,delete,endpoint,policy,fresh,baseline]`
//! (`--full`: gencluster's full scale, 150,000 pods; `--events 0` measures the load only;
//! `--kinds` picks what is measured, see [`wants`])
//! (default: gencluster's small cluster, 1,500 pods, and 100 events of each kind: the node's pod CIDR has 135 free addresses).

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use anyhow as _;
use clap as _;
use clap_complete as _;
use insta as _;
use ipnet as _;
use pipec_cpt as _;
use pipec_proto as _;
use policy_lang as _;
use proptest as _;
use serde as _;
use serde_json as _;
use serde_yaml as _;
use tempfile as _;
use tokio as _;
use tonic as _;

use pipec::model::Pod;
use pipec::session::{Changes, Event, Hardware, ObjectKey, Session, SessionOptions, StageTimes};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn backends(hw: Option<&pipec::backend::Profile>) -> Vec<Box<dyn pipec::backend::Backend>> {
    let mut out: Vec<Box<dyn pipec::backend::Backend>> =
        vec![Box::new(pipec_ebpf::EbpfBackend::default())];
    if let Some(p) = hw {
        out.push(Box::new(pipec_rte_flow::RteFlowBackend::new(p.clone())));
    }
    out
}

fn options() -> SessionOptions {
    SessionOptions {
        hardware: Some(Hardware::Named("octeon-cn10k".into())),
        ..SessionOptions::default()
    }
}

/// Loads and forces every stage (the MAG, the plan, both artifacts).
fn load_all(texts: &[(&str, &str)]) -> Session {
    load_stages(texts, false)
}

/// [`load_all`], printing each stage's time and the peak RSS after it when `verbose`.
fn load_stages(texts: &[(&str, &str)], verbose: bool) -> Session {
    let clock = Instant::now();
    let say = |stage: &str, clock: &Instant| {
        if verbose {
            println!(
                "  {stage}: {:.1} ms, peak RSS {} MiB",
                clock.elapsed().as_secs_f64() * 1e3,
                peak_rss_mib()
            );
        }
    };
    let s = Session::load_texts(texts, options(), &backends).expect("the generated cluster loads");
    say("model", &clock);
    let clock = Instant::now();
    let _ = s.mag();
    say("lowering", &clock);
    let clock = Instant::now();
    let _ = s.info();
    say("validation", &clock);
    let clock = Instant::now();
    let _ = s.plan();
    say("plan", &clock);
    for t in ["ebpf", "octeon-cn10k"] {
        let clock = Instant::now();
        if let Err(e) = s.artifact(t).expect("target") {
            println!("  {t} cannot hold the node: {e}");
        }
        say(t, &clock);
    }
    s
}

/// A pod of the node like `template` (its service account and container ports, which are
/// part of its identity and its address class), with `labels`.
fn pod_yaml(name: &str, ns: &str, labels: &str, ip: &str, node: &str, template: &Pod) -> String {
    let sa = &template.service_account;
    let ports: String = template
        .ports
        .iter()
        .map(|p| {
            let name = p
                .name
                .as_ref()
                .map(|n| format!(", name: {n}"))
                .unwrap_or_default();
            let proto = format!("{:?}", p.protocol).to_uppercase();
            format!(
                "\n    - {{containerPort: {}, protocol: {proto}{name}}}",
                p.port
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\nspec:\n  nodeName: {node}\n  serviceAccountName: {sa}\n  containers:\n  - name: c\n    ports:{ports}\nstatus:\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n"
    )
}

/// Each eBPF map's entries in the node's artifact against its default size, and the
/// `--ebpf-map-entries` pipecd needs for the node when a default is too small.
fn map_fill(session: &Session) {
    let Ok(artifact) = session.artifact("ebpf").expect("target") else {
        return;
    };
    let artifact = artifact
        .as_any()
        .downcast_ref::<pipec_ebpf::EbpfArtifact>()
        .expect("eBPF");
    let fill: Vec<String> = artifact
        .map_sizes()
        .iter()
        .map(|(map, n)| format!("{} {n}/{}", map.as_str(), map.capacity()))
        .collect();
    println!("eBPF map entries / default size: {}", fill.join(", "));
    let sizes = pipec_ebpf::MapSizes::to_hold(artifact);
    if sizes != pipec_ebpf::MapSizes::default() {
        println!("pipecd needs --ebpf-map-entries {sizes}");
    }
}

/// A NetworkPolicy letting the pods of `app` in `ns` take TCP `port` from the same app.
fn np_yaml(name: &str, ns: &str, app: &str, port: u16) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  podSelector:\n    matchLabels: {{app: {app}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {{app: {app}}}\n    ports:\n    - {{port: {port}, protocol: TCP}}\n"
    )
}

/// A CiliumNetworkPolicy letting the pods of `app` in `ns` take TCP `port` from the same
/// app.
fn cnp_yaml(name: &str, ns: &str, app: &str, port: u16) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  endpointSelector:\n    matchLabels: {{app: {app}}}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{app: {app}}}\n    toPorts:\n    - ports:\n      - {{port: \"{port}\", protocol: TCP}}\n"
    )
}

/// Operations and stage times summed over events.
#[derive(Default)]
struct Stats {
    ops: usize,
    times: StageTimes,
    /// Events planned from scratch, by reason.
    scratch: std::collections::BTreeMap<&'static str, usize>,
    /// Events whose lowering was a full one.
    full_lowerings: usize,
    /// Events whose plan stayed as it was (they changed no table a plan reads).
    carried: usize,
    /// Events whose plan kept held entries it built anew (step 1b of the incremental
    /// plan), and those entries and their new rules summed.
    rebuilt_plans: usize,
    rebuilt: pipec::partition::incremental::Rebuilds,
    /// Operations by target.
    by_target: std::collections::BTreeMap<String, usize>,
}

impl Stats {
    fn add(&mut self, c: &Changes, session: &Session) {
        self.ops += c.targets.iter().map(|t| t.ops.len()).sum::<usize>();
        for t in &c.targets {
            *self.by_target.entry(t.target.clone()).or_default() += t.ops.len();
        }
        let (t, d) = (&mut self.times, &c.times);
        t.model += d.model;
        t.lower += d.lower;
        t.validate += d.validate;
        t.plan += d.plan;
        t.codegen += d.codegen;
        t.diff += d.diff;
        if let Some(why) = d.full_plan {
            *self.scratch.entry(why.text()).or_default() += 1;
        }
        self.full_lowerings += usize::from(c.full_lowering);
        self.carried += usize::from(session.plan_kept());
        let rebuilt = session.plan_rebuilt();
        if rebuilt.entries > 0 {
            self.rebuilt_plans += 1;
            self.rebuilt.entries += rebuilt.entries;
            self.rebuilt.new_rules += rebuilt.new_rules;
            self.rebuilt.displaced += rebuilt.displaced;
        }
    }
}

fn n_events(samples: &[Duration]) -> f64 {
    samples.len().max(1) as f64
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Whether `--kinds` (a comma-separated list of `add`, `relabel`, `delete`, `endpoint`,
/// `policy`, `fresh` and `baseline`; all when not given) names `kind`. At full scale the
/// comparison with a fresh plan (`fresh`) and the baseline each load the node a second
/// time beside the session, which does not fit in 24 GiB. Deletes remove the added pods.
fn wants(kind: &str) -> bool {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--kinds") {
        Some(i) => args
            .get(i + 1)
            .is_some_and(|list| list.split(',').any(|k| k == kind)),
        None => true,
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's peak resident set (VmHWM), in MiB.
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn main() {
    let full = std::env::args().any(|a| a == "--full");
    let mut spec = if full {
        gencluster::Spec::full()
    } else {
        gencluster::Spec::small()
    };
    spec.pods = arg("--pods", spec.pods);
    let events = arg("--events", 100);
    let clock = Instant::now();
    let json = gencluster::generate(&spec);
    if full {
        println!(
            "  generated {} MB of JSON: {:.1} ms",
            json.len() >> 20,
            clock.elapsed().as_secs_f64() * 1e3
        );
    }
    let texts = [("cluster.json", json.as_str())];
    let t = Instant::now();
    let mut session = load_stages(&texts, full);
    let load = t.elapsed();
    println!(
        "load: {} pods, {} MAG entries, {} hardware rules: {:.1} ms",
        session.cluster().pods.len(),
        session
            .mag()
            .table_ids()
            .iter()
            .filter_map(|t| session.mag().table(*t))
            .map(|t| t.entries.len())
            .sum::<usize>(),
        session.plan().map_or(0, |p| p.slice.rules.len()),
        load.as_secs_f64() * 1e3
    );
    println!("peak RSS after the load: {} MiB", peak_rss_mib());
    map_fill(&session);
    if events == 0 {
        return;
    }
    // Each new pod copies the namespace and labels of an existing pod on the session's
    // node (the first node), so its label set has an identity already (the common case:
    // a replica scaled up).
    let node = session.node().to_string();
    let template = session
        .cluster()
        .pods
        .iter()
        .find(|p| p.node.as_deref() == Some(node.as_str()))
        .expect("a pod on the node")
        .clone();
    let ns = template.namespace.clone();
    let template_app = template
        .labels
        .get("app")
        .cloned()
        .expect("generated pods have an app label");
    let labels: Vec<String> = template
        .labels
        .iter()
        .map(|(k, v)| format!("\"{k}\": \"{v}\""))
        .collect();
    let labels = labels.join(", ");
    let other: Vec<String> = template
        .labels
        .iter()
        .map(|(k, v)| format!("\"{k}\": \"{v}\""))
        .chain(["\"bench\": \"relabelled\"".to_string()])
        .collect();
    let other = other.join(", ");
    let report = |kind: &str, samples: &mut Vec<Duration>, stats: &Stats| {
        let n = samples.len() as f64;
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / n;
        let t = &stats.times;
        println!(
            "{kind}: p50 {:.3} ms, p99 {:.3} ms over {} events, {:.1} operations per event \
             (mean ms: model {:.3}, lower {:.3}, validate {:.3}, plan {:.3}, codegen {:.3}, diff {:.3})",
            percentile(samples, 0.5).as_secs_f64() * 1e3,
            percentile(samples, 0.99).as_secs_f64() * 1e3,
            samples.len(),
            stats.ops as f64 / n,
            ms(t.model),
            ms(t.lower),
            ms(t.validate),
            ms(t.plan),
            ms(t.codegen),
            ms(t.diff),
        );
        let per_target: Vec<String> = stats
            .by_target
            .iter()
            .map(|(t, n)| format!("{t} {:.1}", *n as f64 / n_events(samples)))
            .collect();
        println!(
            "  operations per event by target: {}",
            per_target.join(", ")
        );
        if !stats.scratch.is_empty() {
            println!("  planned from scratch: {:?}", stats.scratch);
        }
        if stats.full_lowerings > 0 {
            println!("  full lowerings: {}", stats.full_lowerings);
        }
        if stats.carried > 0 {
            println!("  plans kept as they were: {}", stats.carried);
        }
        let plans = stats.rebuilt_plans;
        if plans > 0 {
            println!(
                "  plans that kept rebuilt entries: {plans} (per such plan {:.1} entries, {:.1} new rules); kept entries displaced for their rules: {}",
                stats.rebuilt.entries as f64 / plans as f64,
                stats.rebuilt.new_rules as f64 / plans as f64,
                stats.rebuilt.displaced
            );
        }
    };
    // Addresses a new pod of the node really gets: free ones of the node's pod CIDR (an
    // address outside every pod CIDR is a new address class, which makes lowering redo the
    // whole node).
    let used: std::collections::BTreeSet<std::net::IpAddr> = session
        .cluster()
        .pods
        .iter()
        .flat_map(|p| p.ips.iter().copied())
        .collect();
    let cidr = session
        .cluster()
        .nodes
        .iter()
        .find(|n| n.name == node)
        .and_then(|n| n.pod_cidrs.first().copied())
        .expect("the node has a pod CIDR");
    let free: Vec<String> = cidr
        .hosts()
        .filter(|a| !used.contains(a))
        .take(events)
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        free.len(),
        events,
        "the node's pod CIDR has {events} free addresses"
    );
    let ip = |i: usize| free[i].clone();
    // The plan after a run of events against a plan from scratch of the same state: the
    // incremental plan's value bound, measured.
    let versus_fresh = |session: &Session, kind: &str, pods: &[(String, String)]| {
        let mut all: Vec<(&str, &str)> = texts.to_vec();
        all.extend(pods.iter().map(|(n, t)| (n.as_str(), t.as_str())));
        let options = SessionOptions {
            pins: session.pins().clone(),
            ..options()
        };
        let t = Instant::now();
        let fresh = Session::load_texts(&all, options, &backends).expect("loads");
        let (mine, theirs) = (session.plan().expect("plan"), fresh.plan().expect("plan"));
        let placed = |p: &pipec::partition::Plan| {
            let hw: Vec<_> = p
                .placements
                .iter()
                .filter(|x| x.target == pipec::partition::Target::Hardware)
                .collect();
            (
                hw.len(),
                hw.iter().map(|x| u128::from(x.value)).sum::<u128>(),
            )
        };
        let ((n1, v1), (n2, v2)) = (placed(mine), placed(theirs));
        println!(
            "  after the {kind}s: incremental plan {} flow entries for {n1} MAG entries \
             ({} uncompressed); from scratch {} flow entries for {n2} ({} uncompressed, \
             planned in {:.0} ms); value ratio {:.4}",
            mine.usage.entries,
            mine.usage.uncompressed,
            theirs.usage.entries,
            theirs.usage.uncompressed,
            t.elapsed().as_secs_f64() * 1e3,
            v1 as f64 / v2.max(1) as f64,
        );
    };
    let mut alive: Vec<(String, String)> = Vec::new();
    for (kind, text, short) in [
        ("pod add", &labels, "add"),
        ("pod label change", &other, "relabel"),
    ] {
        if !wants(short) {
            continue;
        }
        let mut samples = Vec::new();
        let mut stats = Stats::default();
        for i in 0..events {
            let ev = Event::Upsert {
                source: format!("watch:bench-{i}"),
                text: pod_yaml(&format!("bench-{i}"), &ns, text, &ip(i), &node, &template),
            };
            let t = Instant::now();
            let c = session.apply(&[ev]).expect("applies");
            samples.push(t.elapsed());
            stats.add(&c, &session);
            let name = format!("bench-{i}.yaml");
            let pod = pod_yaml(&format!("bench-{i}"), &ns, text, &ip(i), &node, &template);
            match alive.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = pod,
                None => alive.push((name, pod)),
            }
        }
        report(kind, &mut samples, &stats);
        // Before the fresh plan below, which is not the session's.
        println!("  peak RSS after the {kind}s: {} MiB", peak_rss_mib());
        if wants("fresh") {
            versus_fresh(&session, kind, &alive);
        }
    }
    let mut samples = Vec::new();
    let mut stats = Stats::default();
    for i in (0..events).filter(|_| wants("delete") && wants("add")) {
        let ev = Event::Delete(ObjectKey::new("Pod", &ns, &format!("bench-{i}")));
        let t = Instant::now();
        let c = session.apply(&[ev]).expect("applies");
        samples.push(t.elapsed());
        stats.add(&c, &session);
    }
    if !samples.is_empty() {
        report("pod delete", &mut samples, &stats);
    }
    // Service endpoint changes: one endpoint of a Service's EndpointSlice turns not ready,
    // and back on the next round, as a rolling restart does.
    let value: serde_json::Value = serde_json::from_str(&json).expect("the generated JSON");
    let mut slices: Vec<serde_json::Value> = value["items"]
        .as_array()
        .expect("a List")
        .iter()
        .filter(|o| {
            o["kind"] == "EndpointSlice" && o["endpoints"][0]["conditions"]["ready"] == true
        })
        .cloned()
        .collect();
    assert!(!slices.is_empty(), "the cluster has EndpointSlices");
    let mut samples = Vec::new();
    let mut stats = Stats::default();
    let (mut added, mut removed) = (0usize, 0usize);
    for i in (0..events).filter(|_| wants("endpoint")) {
        let n = slices.len();
        let slice = &mut slices[i % n];
        let ready = &mut slice["endpoints"][0]["conditions"]["ready"];
        *ready = serde_json::Value::Bool(ready != true);
        let ev = Event::Upsert {
            source: format!("watch:eps-{}", i % n),
            text: slice.to_string(),
        };
        let t = Instant::now();
        let c = session.apply(&[ev]).expect("applies");
        samples.push(t.elapsed());
        stats.add(&c, &session);
        added += c.mag_added;
        removed += c.mag_removed;
    }
    if !samples.is_empty() {
        report("Service endpoint change", &mut samples, &stats);
        println!(
            "  MAG entries per event: {:.1} added, {:.1} removed",
            added as f64 / events as f64,
            removed as f64 / events as f64
        );
    }
    // NetworkPolicy events: a policy of the template's namespace selecting its app, added,
    // then its rule changed (another port), then deleted. Selectors on `app` (which the
    // generated policies use already) keep every identity.
    let app = template_app.as_str();
    // The same for CiliumNetworkPolicies, which the generated cluster has none of: the
    // first one brings the namespace label key to identities (a full lowering).
    for (kind, port) in [
        ("NetworkPolicy add", Some(8080)),
        ("NetworkPolicy update", Some(9090)),
        ("NetworkPolicy delete", None),
        ("CiliumNetworkPolicy add", Some(8080)),
        ("CiliumNetworkPolicy update", Some(9090)),
        ("CiliumNetworkPolicy delete", None),
    ] {
        if !wants("policy") {
            break;
        }
        let mut samples = Vec::new();
        let mut stats = Stats::default();
        let cilium = kind.starts_with("Cilium");
        let object = if cilium {
            "CiliumNetworkPolicy"
        } else {
            "NetworkPolicy"
        };
        for i in 0..events {
            let name = format!("bench-np-{i}");
            let ev = match port {
                Some(port) => Event::Upsert {
                    source: format!("watch:{object}-{name}"),
                    text: if cilium {
                        cnp_yaml(&name, &ns, app, port)
                    } else {
                        np_yaml(&name, &ns, app, port)
                    },
                },
                None => Event::Delete(ObjectKey::new(object, &ns, &name)),
            };
            let t = Instant::now();
            let c = session.apply(&[ev]).expect("applies");
            samples.push(t.elapsed());
            stats.add(&c, &session);
        }
        report(kind, &mut samples, &stats);
    }
    // The baseline: a full load of the whole state for each event.
    if !wants("baseline") {
        return;
    }
    let runs = 5;
    let mut full = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let _ = load_all(&texts);
        full.push(t.elapsed());
    }
    let full_p50 = percentile(&mut full, 0.5);
    println!(
        "baseline (full load per event): p50 {:.1} ms over {runs} runs",
        full_p50.as_secs_f64() * 1e3
    );
}
