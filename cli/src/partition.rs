//! `pipec explain`, `pipec targets`, and the partition outputs of `pipec compile`
//! (`--emit plan|rte_flow|testpmd`).

use crate::live::{self, LiveArgs};
use crate::session::{self, SessionArgs};
use crate::{output, Format, InputArgs};
use clap::Args;
use pipec::backend::{builtin_profiles, targets_text, Profile};
use pipec::driver;
use pipec::engine::offload;
use pipec::partition::explain;
use policy_lang::resolved::Program;
use std::process::ExitCode;

/// Arguments of `pipec explain`.
#[derive(Args, Debug)]
pub(crate) struct ExplainArgs {
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    session: SessionArgs,
    /// Show one rule's chain of reasons (an entry id such as `t9.e2`, or part of a rule's
    /// name).
    #[arg(long = "rule", value_name = "ID", conflicts_with = "summary")]
    rule: Option<String>,
    /// Print only the summary: rules per target, the hardware budget, what was left out.
    #[arg(long)]
    summary: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    pub live: LiveArgs,
}

/// Arguments of `pipec targets`.
#[derive(Args, Debug)]
pub(crate) struct TargetsArgs {
    /// Inputs whose `.pipe` files define more targets (`target "x" extends ... { }`).
    inputs: Vec<std::path::PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Every profile: the built-ins, then the `.pipe` targets that are not built-in.
pub(crate) fn all_profiles(program: Option<&Program>) -> Vec<Profile> {
    let mut out = builtin_profiles();
    if let Some(program) = program {
        for tp in program.targets.values() {
            if !out.iter().any(|p| p.name == tp.name) {
                out.push(pipec::model::pipe::target_profile(tp, &program.targets));
            }
        }
    }
    out
}

/// Runs `pipec explain`.
pub(crate) fn run_explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    if args.live.live {
        args.live.refuse_inputs(&args.input)?;
        return live::explain(&args.live, args.rule.as_deref(), args.format);
    }
    let Some(session) = session::load(&args.input, &args.session)? else {
        return Ok(ExitCode::from(1));
    };
    let plan = session::plan(&session)?;
    let report = explain::report(plan, session.mag(), session.sources());
    let offload = offload::session_summary(&session, &report.usage);
    let offload_text = offload.as_ref().map(|o| o.text()).unwrap_or_default();
    match &args.rule {
        Some(id) => {
            let rows = explain::select(&report, id);
            if rows.is_empty() {
                anyhow::bail!("no rule {id} in the plan");
            }
            output::print(args.format, &rows, || explain::chain_text(&rows))?;
        }
        None if args.summary => output::print(args.format, &report.usage, || {
            explain::summary_text(&report)
                + &offload_text
                + &pipec_cpt::explain_line(&session)
                + &pipec_ebpf::backend::explain_line(&session)
        })?,
        None => {
            let json = offload::ExplainJson {
                report: &report,
                offload: offload.clone(),
            };
            output::print(args.format, &json, || {
                explain::to_text(&report)
                    + &offload_text
                    + &pipec_cpt::explain_line(&session)
                    + &pipec_ebpf::backend::explain_line(&session)
            })?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `pipec targets`.
pub(crate) fn run_targets(args: &TargetsArgs) -> anyhow::Result<ExitCode> {
    let profiles = if args.inputs.is_empty() {
        builtin_profiles()
    } else {
        let loaded = driver::load(&args.inputs, &Default::default());
        loaded.emit_to_stderr();
        if loaded.has_errors() {
            return Ok(ExitCode::from(1));
        }
        all_profiles(loaded.pipe.program.as_ref())
    };
    output::print(args.format, &profiles, || targets_text(&profiles))?;
    Ok(ExitCode::SUCCESS)
}

impl ExplainArgs {
    /// The inputs.
    pub(crate) fn input(&self) -> &InputArgs {
        &self.input
    }

    /// The inputs, to normalise them.
    pub(crate) fn input_mut(&mut self) -> &mut InputArgs {
        &mut self.input
    }
}
