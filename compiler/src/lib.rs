#![doc = include_str!("../../ARCHITECTURE.md")]
#![cfg_attr(
    not(test),
    warn(clippy::panic, clippy::print_stdout, clippy::todo, clippy::dbg_macro)
)]

// Dev-dependencies that the unit tests do not use; the package's integration tests,
// benches or examples do.
#[cfg(test)]
use criterion as _;
#[cfg(test)]
use gencluster as _;
#[cfg(test)]
use mimalloc as _;
#[cfg(test)]
use pipec as _;

pub mod backend;
pub mod conformance;
pub mod diag;
pub mod driver;
pub mod engine;
pub mod frontend;
pub mod identity;
pub mod lower;
pub mod mag;
pub mod model;
pub mod partition;
pub mod secret;
pub mod semantics;
pub mod session;
pub mod source;
#[cfg(feature = "testgen")]
pub mod testgen;
pub mod trace;
pub mod util;
