//! Loads one input once and prints wall time per stage and the peak resident set size.
//!
//! ```text
//! cargo build --release -p gencluster -p pipec --example load_peak
//! target/release/gencluster --compact -o /tmp/cluster.json
//! taskset -c 0 target/release/examples/load_peak /tmp/cluster.json
//! ```
//!
//! Stages are those of `driver::load` (read, then parse and model, which run interleaved:
//! each object is modelled as soon as it is decoded) followed by
//! `identity::cluster_to_identities`. With `--staged`, parse and model run one after the
//! other instead (`frontend::files_to_objects`, then `model::build::objects_to_cluster`),
//! which splits their times but holds every decoded object at once, so its peak is not the
//! driver's. Peak RSS is `VmHWM` from `/proc/self/status`, read after each stage (it never
//! decreases, so the last value is the peak of the whole run).

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use codespan_reporting as _;
use criterion as _;
use gencluster as _;
use indexmap as _;
use insta as _;
use ipnet as _;
use k8s_openapi as _;
use petgraph as _;
use pipec_source as _;
use policy_lang as _;
use proptest as _;
use rustc_hash as _;
use serde as _;
use serde_json as _;
use serde_path_to_error as _;
use serde_yaml as _;
use thiserror as _;

use pipec::diag::Sink;
use pipec::model::build::{objects_to_cluster, BuildOptions};
use pipec::source::Sources;
use pipec::{driver, frontend, identity};
use std::path::PathBuf;
use std::time::Instant;

/// The allocator the `pipec` binary uses (see `cli/src/main.rs`), so that the figures are the
/// binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time of this process in ms (`/proc/self/schedstat`): unlike wall time, it does not
/// count time spent waiting for a core that other processes hold.
fn cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e6)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let mut staged = false;
    let paths: Vec<PathBuf> = std::env::args_os()
        .skip(1)
        .filter(|a| {
            let flag = a == "--staged";
            staged |= flag;
            !flag
        })
        .map(PathBuf::from)
        .collect();
    if paths.is_empty() {
        eprintln!("usage: load_peak [--staged] FILE...");
        std::process::exit(2);
    }
    let bytes: u64 = paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "input: {} ({} bytes, {:.1} MiB)",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        bytes,
        bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "{:<12} {:>10} {:>10} {:>12} {:>12}",
        "stage", "wall ms", "cpu ms", "VmRSS MiB", "VmHWM MiB"
    );
    let mut cpu_mark = cpu_ms();
    let cpu_start = cpu_mark;
    let mut report = |stage: &str, ms: f64| {
        let now = cpu_ms();
        let cpu = if stage == "total" {
            now - cpu_start
        } else {
            now - cpu_mark
        };
        cpu_mark = now;
        println!(
            "{:<12} {:>10.1} {:>10.1} {:>12.1} {:>12.1}",
            stage,
            ms,
            cpu,
            mib(status_kib("VmRSS:")),
            mib(status_kib("VmHWM:"))
        );
    };
    let options = BuildOptions::default();
    let total = Instant::now();

    let t = Instant::now();
    let mut sources = Sources::new();
    let mut sink = Sink::default();
    let files = frontend::read_inputs(&paths, &mut sources, &mut sink);
    let read_ms = t.elapsed().as_secs_f64() * 1e3;
    report("read", read_ms);

    let mut kept_sources = None;
    let cluster = if staged {
        let t = Instant::now();
        let objects = frontend::files_to_objects(&sources, &files, &mut sink);
        report("parse", t.elapsed().as_secs_f64() * 1e3);

        let t = Instant::now();
        let cluster = objects_to_cluster(&sources, &objects, &options, &mut sink);
        drop(objects);
        report("model", t.elapsed().as_secs_f64() * 1e3);
        cluster
    } else {
        let t = Instant::now();
        let loaded = driver::load_sources(sources, &files, &options, sink);
        report("parse+model", t.elapsed().as_secs_f64() * 1e3);
        // The sources stay alive to the end, as they do for every command.
        kept_sources = Some(loaded.sources);
        sink = Sink {
            diags: loaded.diags,
        };
        loaded.cluster
    };

    let t = Instant::now();
    let ids = identity::cluster_to_identities(&cluster, None);
    report("identities", t.elapsed().as_secs_f64() * 1e3);

    let all = total.elapsed().as_secs_f64() * 1e3;
    report("total", all);
    let errors = sink.diags.iter().filter(|d| d.is_error()).count();
    println!(
        "model: {} pods, {} services ({} backends), {} nodes, {} namespaces, {} network policies; {} identities, {} ipcache entries; {} diagnostics ({} errors)",
        cluster.pods.len(),
        cluster.services.len(),
        cluster.services.iter().map(|s| s.backends.len()).sum::<usize>(),
        cluster.nodes.len(),
        cluster.namespaces.len(),
        cluster.network_policies.len(),
        ids.by_id.len(),
        ids.ipcache.entries.len(),
        sink.diags.len(),
        errors
    );
    println!(
        "peak RSS (VmHWM): {:.1} MiB; wall: {:.0} ms with read, {:.0} ms parse+model+identities",
        mib(status_kib("VmHWM:")),
        all,
        all - read_ms
    );
    drop(kept_sources);
    if errors > 0 {
        std::process::exit(1);
    }
}
