//! Benchmark of pipecd under a sustained rate of pod events (issue 13): the daemon (model
//! datapath) watches a manifests directory holding a gencluster cluster; a writer rewrites
//! pod files at a fixed rate (each rewrite moves one pod between two label sets that always
//! have an identity, as a relabel of a replica does) while the daemon steps as fast as it
//! can. Reported: startup to the first full apply (time, peak RSS), each event's time from
//! its file written to the end of the step that applied it, events per step, and whether
//! the backlog grows.
//!
//! `cargo run --release -p pipec-runtime --example pipecd_bench -- [--full] [--pods N]
//! [--rate R] [--seconds S] [--ebpf-map-entries MAP=N,...]` (default: gencluster's small
//! cluster, 1,500 pods, 1,000 events/s for 60 s; `--full`: gencluster's full scale). As
//! pipecd's flag of that name, `--ebpf-map-entries` sizes the maps; without it the first
//! state sizes them (one node of the full scale gets backends 262,144, maglev 2,097,152 and
//! policy 16,777,216).

use pipec_ebpf::sizes::MapSizes;
use pipec_runtime::daemon::{hardware_profile, Daemon, Sources, DEFAULT_HW_PROFILE};
use pipec_runtime::device::Device;
use pipec_runtime::source::ManifestDir;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use anyhow as _;
use aya as _;
use base64 as _;
use clap as _;
use futures as _;
use kube as _;
use notify as _;
use pipec as _;
use pipec_cpt as _;
use pipec_ebpf_common as _;
use pipec_netns as _;
use pipec_proto as _;
use pipec_rte_flow as _;
use proptest as _;
use serde as _;
use serde_yaml as _;
use tokio as _;
use tokio_stream as _;
use tonic as _;
use tracing as _;
use tracing_subscriber as _;

/// The allocator pipecd runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Pods the writer moves between the two label sets: one file each.
const MOVERS: usize = 100;

/// The value after `name` on the command line.
fn arg_text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

fn arg(name: &str, default: usize) -> usize {
    arg_text(name)
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

/// Peak resident set of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A node of the generated cluster, its pod CIDR, and the namespace and labels of one of
/// its pods (so a bench pod's label set already has an identity).
struct Template {
    node: String,
    cidr: ipnet::IpNet,
    namespace: String,
    labels: serde_json::Map<String, serde_json::Value>,
    used: std::collections::BTreeSet<std::net::IpAddr>,
}

fn template(json: &str) -> Template {
    let list: serde_json::Value = serde_json::from_str(json).expect("gencluster writes JSON");
    let items = list["items"].as_array().expect("a List");
    let node = items.iter().find(|o| o["kind"] == "Node").expect("a node");
    let name = node["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_string();
    let cidr = node["spec"]["podCIDR"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .expect("a pod CIDR");
    let pods: Vec<&serde_json::Value> = items.iter().filter(|o| o["kind"] == "Pod").collect();
    let pod = pods
        .iter()
        .find(|p| p["spec"]["nodeName"] == name.as_str())
        .expect("a pod on the node");
    let used = pods
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    Template {
        node: name,
        cidr,
        namespace: pod["metadata"]["namespace"]
            .as_str()
            .expect("ns")
            .to_string(),
        labels: pod["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
        used,
    }
}

impl Template {
    fn pod(&self, name: &str, ip: &std::net::IpAddr, side: &str) -> String {
        let mut labels = self.labels.clone();
        labels.insert("bench".into(), side.into());
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {"nodeName": self.node, "containers": [{"name": "c"}]},
            "status": {"podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]},
        })
        .to_string()
    }

    fn free(&self, n: usize) -> Vec<std::net::IpAddr> {
        let free: Vec<_> = self
            .cidr
            .hosts()
            .filter(|a| !self.used.contains(a))
            .take(n)
            .collect();
        assert_eq!(free.len(), n, "the node's pod CIDR has {n} free addresses");
        free
    }
}

/// Writes `text` to `path` as one rename, as a tool writing manifests would.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn percentile(v: &mut [Duration], q: f64) -> Duration {
    v.sort_unstable();
    v.get(((v.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or_default()
}

fn main() {
    let full = std::env::args().any(|a| a == "--full");
    let mut spec = if full {
        gencluster::Spec::full()
    } else {
        gencluster::Spec::small()
    };
    spec.pods = arg("--pods", spec.pods);
    let device = match arg_text("--ebpf-map-entries") {
        Some(text) => Device::model()
            .with_model_sizes(MapSizes::parse(&text).expect("--ebpf-map-entries MAP=N,...")),
        None => Device::model_sized_by_state(),
    };
    let rate = arg("--rate", 1000);
    let seconds = arg("--seconds", 60);
    let dir = std::env::temp_dir().join(format!("pipecd-bench-{}", std::process::id()));
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).expect("a scratch directory");
    let json = gencluster::generate(&spec);
    let t = template(&json);
    std::fs::write(manifests.join("cluster.json"), &json).expect("write the cluster");
    let ips = t.free(MOVERS + 2);
    // One pod stays in each label set, so neither loses its identity while pods move.
    write(
        &manifests.join("keep-a.json"),
        &t.pod("keep-a", &ips[0], "a"),
    );
    write(
        &manifests.join("keep-b.json"),
        &t.pod("keep-b", &ips[1], "b"),
    );
    let movers: Vec<(PathBuf, String, String)> = (0..MOVERS)
        .map(|i| {
            let name = format!("bench-{i}");
            let ip = &ips[i + 2];
            let path = manifests.join(format!("{name}.json"));
            write(&path, &t.pod(&name, ip, "a"));
            (path, t.pod(&name, ip, "a"), t.pod(&name, ip, "b"))
        })
        .collect();

    let sources = Sources {
        dir: Some(ManifestDir::new(&manifests)),
        api: None,
    };
    let start = Instant::now();
    // `--offload-reserve N`: the entries the plan leaves to connection offload (the
    // profile's 1,024 by default), as pipecd's flag of that name.
    let reserve = std::env::args()
        .any(|a| a == "--offload-reserve")
        .then(|| arg("--offload-reserve", 0) as u64);
    let profile = hardware_profile(DEFAULT_HW_PROFILE, reserve).expect("the profile");
    let mut daemon =
        Daemon::for_profile(&t.node, sources, device, None, profile).expect("a daemon");
    daemon.step(start).expect("the first load");
    assert!(daemon.metrics.ready, "the first full state is applied");
    println!(
        "first full apply: {} pods, {:.1} ms, peak RSS {:.0} MiB",
        daemon.session().cluster().pods.len(),
        start.elapsed().as_secs_f64() * 1e3,
        peak_rss_mib()
    );

    // The writer: one rewrite every 1/rate s, on schedule (a late write does not shift
    // the ones after it), each recorded with the time it was written.
    let written: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let total = rate * seconds;
    let writer = {
        let written = written.clone();
        std::thread::spawn(move || {
            let begin = Instant::now();
            for k in 0..total {
                let due = begin + Duration::from_secs_f64(k as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let (path, a, b) = &movers[k % MOVERS];
                let side_b = (k / MOVERS).is_multiple_of(2);
                write(path, if side_b { b } else { a });
                written.lock().expect("written").push(Instant::now());
            }
        })
    };

    // The daemon steps as fast as it can; every write recorded before a step's scan is in
    // the files that scan reads, so the step applies it (or a later version of its file).
    let mut latencies = Vec::with_capacity(total);
    let mut per_step = Vec::new();
    // Time in each phase of the steps: collect, session, device, sizes.
    let mut phases = [Duration::ZERO; 4];
    // Steps whose incremental plan kept the held entries it built anew (step 1b).
    let mut rebuilt = 0;
    let mut applied = 0;
    let deadline = Instant::now() + Duration::from_secs(seconds as u64 * 4 + 60);
    while applied < total && Instant::now() < deadline {
        let (seen, stamps) = {
            let w = written.lock().expect("written");
            (w.len(), w[applied..].to_vec())
        };
        if seen == applied {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let step = daemon.step(Instant::now()).expect("a step");
        let done = Instant::now();
        let t = &step.times;
        for (sum, part) in phases
            .iter_mut()
            .zip([t.collect, t.session, t.device, t.sizes])
        {
            *sum += part;
        }
        rebuilt += usize::from(daemon.session().plan_rebuilt().entries > 0);
        latencies.extend(stamps.iter().map(|s| done - *s));
        per_step.push((seen - applied, done));
        applied = seen;
    }
    writer.join().expect("the writer");
    let elapsed = per_step.last().map_or(Duration::ZERO, |(_, d)| *d - start);
    let n = latencies.len();
    let steps = per_step.len();
    let batch: Vec<usize> = per_step.iter().map(|(b, _)| *b).collect();
    // The backlog each step found, over the first and the last tenth of the steps: a
    // growing queue shows as a larger batch at the end.
    let tenth = (steps / 10).max(1);
    let mean = |s: &[usize]| s.iter().sum::<usize>() as f64 / s.len().max(1) as f64;
    println!(
        "{total} events at {rate}/s for {seconds} s: {n} applied in {steps} steps \
         ({:.1} events per step, max {}; first tenth {:.1}, last tenth {:.1}); \
         event to applied p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; peak RSS {:.0} MiB; \
         applied by {:.1} s after the start",
        mean(&batch),
        batch.iter().max().copied().unwrap_or(0),
        mean(&batch[..tenth.min(steps)]),
        mean(&batch[steps.saturating_sub(tenth)..]),
        percentile(&mut latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&mut latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&mut latencies, 1.0).as_secs_f64() * 1e3,
        peak_rss_mib(),
        elapsed.as_secs_f64(),
    );
    let per = |d: Duration| d.as_secs_f64() * 1e3 / steps.max(1) as f64;
    println!(
        "mean ms per step: collect (directory scan) {:.1}, session {:.1}, device {:.1}, sizes {:.1}; \
         plans that kept rebuilt entries: {rebuilt} of {steps}",
        per(phases[0]),
        per(phases[1]),
        per(phases[2]),
        per(phases[3]),
    );
    if applied < total {
        println!(
            "NOT DRAINED: {} events still queued at the deadline",
            total - applied
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
