//! Feeds every `flow` line of the given files to `dpdk-testpmd` (net_null0, no hugepages)
//! and fails unless each one parsed and reached the PMD.
//!
//! Usage: `cargo run -p pipec-rte-flow --example testpmd-oracle -- FILE...` (for example
//! the output of `pipec compile --emit testpmd`). Prints `N passed, N failed`.

#![allow(clippy::print_stdout, reason = "a command-line tool prints its result")]

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use insta as _;
use pipec as _;
use rustc_hash as _;
use serde as _;
use serde_json as _;
use thiserror as _;
// With the `dpdk` feature the package links the DPDK bindings too; this target uses none.
#[cfg(feature = "dpdk")]
use pipec_dpdk_sys as _;

use pipec_rte_flow::oracle::{self, Verdict};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut lines = Vec::new();
    for path in std::env::args().skip(1) {
        match std::fs::read_to_string(&path) {
            Ok(text) => lines.extend(
                text.lines()
                    .filter(|l| l.starts_with("flow "))
                    .map(str::to_string),
            ),
            Err(e) => {
                eprintln!("error: {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let answers = match oracle::run(&lines) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = 0;
    for a in &answers {
        if !matches!(a.verdict, Verdict::ReachedPmd(_)) {
            failed += 1;
            println!("{:?}: {}", a.verdict, a.command);
        }
    }
    println!("{} passed, {} failed", answers.len() - failed, failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
