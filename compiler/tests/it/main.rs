//! The one integration test binary of pipec: each module is one suite.

mod bad_error_messages;
mod conformance;
mod diagnostics;
mod fuzz_manifests;
mod mag_differential;
mod mag_gen;
mod mag_incremental;
mod mag_starwars;
mod partition_hw;
mod pipe_policies;
mod semantics_props;
mod snapshots;
mod trace;
mod traffic_policy;
