//! Partition benchmark (issue 5): `partition::mag_to_plan` on one node's MAG of the
//! `gencluster` input (150k pods, 10k Services, 10k NetworkPolicies; `PIPEC_BENCH_SMALL=1`
//! for the 1% preset), for the built-in `octeon-cn10k` profile.
//!
//! ```text
//! cargo bench -p pipec --bench partition                       # full scale
//! PIPEC_BENCH_SMALL=1 cargo bench -p pipec --bench partition   # 1% of it
//! ```
//!
//! Before criterion runs, the binary prints one line with the figures of
//! BENCHMARKS.md (partitioner section): hardware entries after compression, before it, naive
//! direct expansion, levels used and allowed, and the median partition time of 5 runs.
//! The MAG is lowered once, outside the timed region (the node is the first one, as
//! `pipec compile` picks it; `PIPEC_BENCH_NODE` chooses another).

#![allow(
    missing_docs,
    reason = "criterion_group! makes an undocumented function"
)]

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use codespan_reporting as _;
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

use criterion::{criterion_main, Criterion, SamplingMode};
use gencluster::Spec;
use pipec::backend::octeon_cn10k_profile;
use pipec::diag::Sink;
use pipec::model::build::BuildOptions;
use pipec::source::Sources;
use pipec::{driver, lower, mag, partition};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The allocator the `pipec` binary uses (see `cli/src/main.rs`), so that the figures are the
/// binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn partition(c: &mut Criterion) {
    let small = std::env::var_os("PIPEC_BENCH_SMALL").is_some();
    let spec = Spec {
        pretty: false,
        ..if small { Spec::small() } else { Spec::full() }
    };
    let text = gencluster::generate(&spec);
    let mut sources = Sources::new();
    sources.add("cluster.json", &text);
    drop(text);
    let files = [pipec::source::FileId(0)];
    let loaded = driver::load_sources(sources, &files, &BuildOptions::default(), Sink::default());
    assert!(!loaded.has_errors(), "{:?}", loaded.diags.first());
    let node = std::env::var("PIPEC_BENCH_NODE").ok();
    let t = Instant::now();
    let lowered = lower::cluster_to_mag(&loaded.cluster, node.as_deref());
    let lower_time = t.elapsed();
    let info = mag::validate(lowered.mag()).expect("valid MAG");
    let profile = octeon_cn10k_profile();

    let mut times = Vec::new();
    let mut plan = None;
    for _ in 0..5 {
        let t = Instant::now();
        plan = Some(partition::mag_to_plan(lowered.mag(), &info, &profile, &[]));
        times.push(t.elapsed());
    }
    times.sort();
    let plan = plan.expect("ran");
    let u = &plan.usage;
    let ingress = plan
        .placements
        .iter()
        .filter(|p| plan.table_name(p) == "ingress_policy")
        .count();
    assert!(u.levels <= profile.caps.priority_levels);
    println!(
        "partition {} node {}: mag entries {} (ingress {ingress}), lowering {:.2?}; \
         hw entries {} uncompressed {} naive {} ({:.1}x fewer) levels {}/{}; \
         partition median {:.2?} (min {:.2?}, max {:.2?})",
        if small { "small" } else { "full" },
        plan.node,
        plan.placements.len(),
        lower_time,
        u.entries,
        u.uncompressed,
        u.naive,
        u.naive as f64 / u.entries.max(1) as f64,
        u.levels,
        u.levels_limit,
        times[2],
        times[0],
        times[4],
    );

    let mut g = c.benchmark_group(if small {
        "partition-small"
    } else {
        "partition"
    });
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(if small { 3 } else { 10 }));
    g.bench_function("mag_to_plan", |b| {
        b.iter(|| black_box(partition::mag_to_plan(lowered.mag(), &info, &profile, &[])))
    });
    g.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    partition(&mut c);
}

criterion_main!(benches);
