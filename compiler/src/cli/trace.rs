//! `pipec trace`: one connection through the reference semantics.

use clap::Args;
use std::process::ExitCode;

/// Arguments of `pipec trace`.
#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    input: super::InputArgs,
}

/// Runs `pipec trace`.
pub fn run(_args: &TraceArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("trace is being built")
}
