//! The one integration test binary of pipec: each module is one suite.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use codespan_reporting as _;
use criterion as _;
use gencluster as _;
use indexmap as _;
use k8s_openapi as _;
use mimalloc as _;
use petgraph as _;
use pipec_source as _;
use policy_lang as _;
use rustc_hash as _;
use serde as _;
use serde_json as _;
use serde_path_to_error as _;
use thiserror as _;

mod bad_error_messages;
mod conformance;
mod diagnostics;
mod fuzz_manifests;
mod hw_offload;
mod mag_differential;
mod mag_gen;
mod mag_incremental;
mod mag_starwars;
mod offload;
mod partition_hw;
mod pipe_policies;
mod semantics_props;
mod snapshots;
mod trace;
mod traffic_policy;
