//! `pipec check`: every diagnostic of a run, and a summary.

use crate::InputArgs;
use clap::Args;
use pipec::driver;
use std::process::ExitCode;

/// Arguments of `pipec check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    input: InputArgs,
}

/// Runs `pipec check`: manifests and `.pipe` files alike. The target profiles that `.pipe`
/// files define are printed resolved (merged with the preset they extend), so that a
/// profile can be checked before anything is compiled for it.
pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let loaded = driver::load(&args.input.inputs, &args.input.build_options());
    loaded.emit_to_stderr_with(if args.input.quiet {
        pipec::diag::WarningDisplay::Quiet
    } else {
        pipec::diag::WarningDisplay::All
    });
    let (errors, warnings) = loaded.diagnostic_count();
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
    if let Some(program) = &loaded.pipe.program {
        for profile in program.targets.values() {
            println!("\n{}", profile.to_pipe().trim_end());
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl CheckArgs {
    /// The inputs.
    pub fn input(&self) -> &InputArgs {
        &self.input
    }
}
