//! Scale benchmark (issue 2): a generated cluster of 150k pods, 10k Services, 100k endpoints
//! and 10k NetworkPolicies, as one `kubectl get -o json` List, through parse + model +
//! identities.
//!
//! ```text
//! cargo bench -p pipec --bench load                       # full scale, about 2 minutes
//! PIPEC_BENCH_SMALL=1 cargo bench -p pipec --bench load   # 1% of it, seconds
//! ```
//!
//! The input is generated once, in memory, as compact JSON (what the API server sends;
//! `kubectl get -o json` indents it, which adds about 130% whitespace). Each iteration
//! copies it into a fresh `Sources` outside the timed region, so the timings leave out file
//! I/O. Benchmarks:
//!
//! - `parse+model+identities`: `driver::load_sources` (decode and model, interleaved) and
//!   `identity::cluster_to_identities`: the figure the goal is about;
//! - `parse`: decoding alone (every object decoded, then dropped);
//! - `identities`: `cluster_to_identities` on a model built once.
//!
//! Peak memory is not measured here; see `examples/load_peak.rs`.

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

use criterion::{criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use gencluster::Spec;
use pipec::diag::Sink;
use pipec::driver;
use pipec::frontend;
use pipec::identity::cluster_to_identities;
use pipec::model::build::BuildOptions;
use pipec::source::Sources;
use std::hint::black_box;
use std::time::Duration;

fn sources_of(text: &str) -> Sources {
    let mut sources = Sources::new();
    sources.add("cluster.json", text);
    sources
}

fn load(c: &mut Criterion) {
    let small = std::env::var_os("PIPEC_BENCH_SMALL").is_some();
    let spec = Spec {
        pretty: false,
        ..if small { Spec::small() } else { Spec::full() }
    };
    let text = gencluster::generate(&spec);
    let options = BuildOptions::default();
    let files = [pipec::source::FileId(0)];

    let loaded = driver::load_sources(sources_of(&text), &files, &options, Sink::default());
    assert!(
        !loaded.has_errors(),
        "the generated cluster must be valid: {:?}",
        loaded.diags.first()
    );
    assert_eq!(loaded.cluster.pods.len(), spec.pods);

    let mut g = c.benchmark_group(if small { "load-small" } else { "load" });
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(if small { 5 } else { 30 }))
        .throughput(Throughput::Bytes(text.len() as u64));

    g.bench_function("parse+model+identities", |b| {
        b.iter_batched(
            || sources_of(&text),
            |sources| {
                let loaded = driver::load_sources(sources, &files, &options, Sink::default());
                let ids = cluster_to_identities(&loaded.cluster, None);
                (loaded, ids)
            },
            BatchSize::PerIteration,
        )
    });

    g.bench_function("parse", |b| {
        b.iter_batched(
            || sources_of(&text),
            |sources| {
                let mut sink = Sink::default();
                let mut n = 0usize;
                frontend::for_each_object(&sources, &files, &mut sink, |o| {
                    n += 1;
                    black_box(o);
                });
                (sources, n)
            },
            BatchSize::PerIteration,
        )
    });

    g.measurement_time(Duration::from_secs(if small { 3 } else { 10 }));
    g.bench_function("identities", |b| {
        b.iter_with_large_drop(|| cluster_to_identities(&loaded.cluster, None))
    });
    g.finish();
}

#[allow(
    missing_docs,
    reason = "criterion_group! defines an undocumented function"
)]
mod group {
    criterion::criterion_group!(benches, super::load);
}
use group::benches;

/// The allocator the `pipec` binary uses (see `cli/src/main.rs`), so that the figures are the
/// binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
criterion_main!(benches);
