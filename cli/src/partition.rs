//! `pipec explain`, `pipec targets`, and the partition outputs of `pipec compile`
//! (`--emit plan|rte_flow|testpmd`).

use crate::{output, Format, InputArgs};
use clap::Args;
use pipec::backend::{builtin_profiles, targets_text, Profile};
use pipec::partition::{self, explain, Plan};
use pipec::{driver, lower, mag};
use pipec_rte_flow::RteFlowBackend;
use policy_lang::resolved::Program;
use std::process::ExitCode;

/// Arguments of `pipec explain`.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The hardware target.
    #[arg(long, default_value = "octeon-cn10k")]
    target: String,
    /// The node to compile for.
    #[arg(long)]
    node: Option<String>,
    /// Show one rule's chain of reasons (an entry id such as `t9.e2`, or part of a rule's
    /// name).
    #[arg(long = "rule", value_name = "ID")]
    rule: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Arguments of `pipec targets`.
#[derive(Args, Debug)]
pub struct TargetsArgs {
    /// Inputs whose `.pipe` files define more targets (`target "x" extends ... { }`).
    inputs: Vec<std::path::PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// The profile called `name`: a built-in, or a `target` block of the run's `.pipe` files.
pub fn profile(name: &str, program: Option<&Program>) -> anyhow::Result<Profile> {
    if let Some(p) = builtin_profiles().into_iter().find(|p| p.name == name) {
        return Ok(p);
    }
    if let Some(tp) = program.and_then(|p| p.targets.get(name)) {
        return Ok(Profile::from_pipe(
            tp,
            &program.expect("found in it").targets,
        ));
    }
    anyhow::bail!("unknown target {name}; `pipec targets [INPUT...]` lists them")
}

/// Every profile: the built-ins, then the `.pipe` targets that are not built-in.
pub fn all_profiles(program: Option<&Program>) -> Vec<Profile> {
    let mut out = builtin_profiles();
    if let Some(program) = program {
        for tp in program.targets.values() {
            if !out.iter().any(|p| p.name == tp.name) {
                out.push(Profile::from_pipe(tp, &program.targets));
            }
        }
    }
    out
}

/// Lowers the node's MAG and partitions it for `target` (a built-in or a `.pipe` target),
/// honouring the `.pipe` placement hints.
pub fn plan(
    loaded: &driver::Loaded,
    node: Option<&str>,
    target: &str,
) -> anyhow::Result<(Plan, mag::Mag, Profile)> {
    let program = loaded.pipe.program.as_ref();
    let profile = profile(target, program)?;
    let hints = program.map_or(&[][..], |p| p.placements.as_slice());
    // The graph is taken out of the lowered node, whose incremental state is freed here,
    // so that a large cluster's graph is neither copied nor held twice.
    let mag = lower::cluster_to_mag(&loaded.cluster, node).into_mag();
    let info = mag::validate(&mag)
        .map_err(|e| anyhow::anyhow!("internal compiler error: invalid graph: {e}"))?;
    let plan =
        partition::mag_to_plan_with_hints(&mag, &info, std::slice::from_ref(&profile), hints);
    Ok((plan, mag, profile))
}

/// The rte_flow artifact of a plan.
pub fn rte_flow(plan: &Plan, profile: &Profile) -> anyhow::Result<pipec_rte_flow::RteFlowArtifact> {
    let backend = RteFlowBackend::new(profile.clone());
    backend
        .lower_slice(&plan.slice)
        .map_err(|e| anyhow::anyhow!("internal compiler error: the plan does not lower: {e}"))
}

/// Runs `pipec explain`.
pub fn run_explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let loaded = driver::load(&args.input.inputs, &args.input.build_options());
    loaded.emit_to_stderr();
    if loaded.has_errors() {
        return Ok(ExitCode::from(1));
    }
    let (plan, mag, _) = plan(&loaded, args.node.as_deref(), &args.target)?;
    let report = explain::report(&plan, &mag, &loaded.sources);
    match &args.rule {
        Some(id) => {
            let rows = explain::select(&report, id);
            if rows.is_empty() {
                anyhow::bail!("no rule {id} in the plan");
            }
            output::print(args.format, &rows, || explain::chain_text(&rows))?;
        }
        None => output::print(args.format, &report, || explain::to_text(&report))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `pipec targets`.
pub fn run_targets(args: &TargetsArgs) -> anyhow::Result<ExitCode> {
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
