//! `pipec conformance DIR`: conformance cases through every engine.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `pipec conformance`.
#[derive(Args, Debug)]
pub struct ConformanceArgs {
    /// Directory of case files (or single case files).
    dirs: Vec<PathBuf>,
}

/// Runs `pipec conformance`.
pub fn run(_args: &ConformanceArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("conformance is being built")
}
