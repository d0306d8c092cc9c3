//! `pipec check`: every diagnostic of a run, and a summary.

use crate::{Format, InputArgs};
use clap::Args;
use pipec::driver;
use std::process::ExitCode;

/// Arguments of `pipec check`.
#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Output format: `text` renders diagnostics for people on stderr; `json` and `yaml`
    /// print `{ok, errors, warnings, diagnostics: [{code, severity, message, file, line,
    /// column, hints}]}` on stdout for tools (the exit code is the same).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    output: Format,
}

/// Runs `pipec check`: manifests and `.pipe` files alike. The target profiles that `.pipe`
/// files define are printed resolved (merged with the preset they extend), so that a
/// profile can be checked before anything is compiled for it.
pub(crate) fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let loaded = driver::load(&args.input.inputs, &args.input.build_options());
    let (errors, warnings) = loaded.diagnostic_count();
    if args.output != Format::Text {
        let report = Report {
            ok: errors == 0,
            errors,
            warnings,
            diagnostics: loaded.diagnostic_records(),
        };
        crate::output::print(args.output, &report, String::new)?;
        return Ok(if errors > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    loaded.emit_to_stderr_with(if args.input.quiet {
        pipec::diag::WarningDisplay::Quiet
    } else {
        pipec::diag::WarningDisplay::All
    });
    if errors > 0 {
        eprintln!("check failed: {errors} error(s), {warnings} warning(s)");
        return Ok(ExitCode::from(1));
    }
    let c = &loaded.cluster;
    crate::output::outln(&format!(
        "ok: {} namespaces, {} pods, {} services, {} network policies, {} cilium policies, {} admin policies; {warnings} warning(s)",
        c.namespaces.len(),
        c.pods.len(),
        c.services.len(),
        c.network_policies.len(),
        c.cilium_policies.len(),
        c.admin_policies.len()
    ))?;
    if let Some(program) = &loaded.pipe.program {
        for profile in program.targets.values() {
            crate::output::outln(&format!("\n{}", profile.to_pipe().trim_end()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `check -o json|yaml` prints.
#[derive(serde::Serialize)]
struct Report {
    ok: bool,
    errors: usize,
    warnings: usize,
    diagnostics: Vec<driver::DiagnosticRecord>,
}

impl CheckArgs {
    /// The inputs.
    pub(crate) fn input(&self) -> &InputArgs {
        &self.input
    }

    /// The inputs, to normalise them.
    pub(crate) fn input_mut(&mut self) -> &mut InputArgs {
        &mut self.input
    }
}
