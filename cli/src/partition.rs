//! `pipec explain`, `pipec targets`, and the partition outputs of `pipec compile`
//! (`--emit plan|rte_flow|testpmd`).

use crate::{output, Format, InputArgs};
use clap::Args;
use pipec::backend::{builtin_profiles, targets_text, Profile};
use pipec::partition::{self, explain, Plan};
use pipec::{driver, lower, mag};
use pipec_rte_flow::RteFlowBackend;
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
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// The built-in profile called `name`.
pub fn profile(name: &str) -> anyhow::Result<Profile> {
    builtin_profiles()
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| anyhow::anyhow!("unknown target {name}; `pipec targets` lists them"))
}

/// Lowers the node's MAG and partitions it for `target`.
pub fn plan(
    cluster: &pipec::model::Cluster,
    node: Option<&str>,
    target: &str,
) -> anyhow::Result<(Plan, mag::Mag)> {
    let lowered = lower::cluster_to_mag(cluster, node);
    let info = mag::validate(lowered.mag())
        .map_err(|e| anyhow::anyhow!("internal compiler error: invalid graph: {e}"))?;
    let plan = partition::mag_to_plan(lowered.mag(), &info, &[profile(target)?]);
    Ok((plan, lowered.mag().clone()))
}

/// The rte_flow artifact of a plan.
pub fn rte_flow(plan: &Plan) -> anyhow::Result<pipec_rte_flow::RteFlowArtifact> {
    let backend = RteFlowBackend::new(profile(&plan.target)?);
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
    let (plan, mag) = plan(&loaded.cluster, args.node.as_deref(), &args.target)?;
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
    let profiles = builtin_profiles();
    output::print(args.format, &profiles, || targets_text(&profiles))?;
    Ok(ExitCode::SUCCESS)
}
