#![doc = include_str!("../../ARCHITECTURE.md")]
#![cfg_attr(
    not(test),
    warn(clippy::panic, clippy::print_stdout, clippy::todo, clippy::dbg_macro)
)]

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
