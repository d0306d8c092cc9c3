//! `pipec check`: every diagnostic of a run, and a summary.

use super::InputArgs;
use crate::diag;
use crate::driver;
use clap::Args;
use std::process::ExitCode;

/// Arguments of `pipec check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    input: InputArgs,
}

/// Runs `pipec check`.
#[allow(clippy::print_stdout, reason = "the summary is the command's output")]
pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let loaded = driver::load(&args.input.inputs, &args.input.build_options());
    diag::emit_to_stderr(&loaded.sources, &loaded.diags);
    let errors = loaded.diags.iter().filter(|d| d.is_error()).count();
    let warnings = loaded.diags.len() - errors;
    if errors > 0 {
        eprintln!("check failed: {errors} error(s), {warnings} warning(s)");
        return Ok(ExitCode::from(1));
    }
    let c = &loaded.cluster;
    println!(
        "ok: {} namespaces, {} pods, {} services, {} network policies, {} cilium policies, {} admin policies; {warnings} warning(s)",
        c.namespaces.len(),
        c.pods.len(),
        c.services.len(),
        c.network_policies.len(),
        c.cilium_policies.len(),
        c.admin_policies.len()
    );
    Ok(ExitCode::SUCCESS)
}
