//! `pipec compile --emit STAGE`: the stable text of one stage.

use crate::{output, Format, InputArgs};
use clap::{Args, ValueEnum};
use pipec::driver;
use pipec::identity;
use pipec::lower;
use pipec::mag;
use pipec::model::text as model_text;
use std::process::ExitCode;

/// The stages `compile` can print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The validated cluster model.
    Model,
    /// Security identities and the ipcache.
    Identities,
    /// The match-action graph of one node (`--node`).
    Mag,
    /// The match-action graph as Graphviz DOT.
    Dot,
    /// The eBPF datapath's map contents for one node (`--node`).
    Ebpf,
    /// The partition plan: every entry's placement and the hardware rules.
    Plan,
    /// The hardware rules as rte_flow rules (JSON).
    #[value(name = "rte_flow")]
    RteFlow,
    /// The hardware rules as `dpdk-testpmd` `flow create` lines.
    Testpmd,
}

/// Arguments of `pipec compile`.
#[derive(Args, Debug)]
pub struct CompileArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Which stage to print.
    #[arg(long, value_enum)]
    emit: Emit,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The node to compile for (its addresses are `host` in the ipcache).
    #[arg(long)]
    node: Option<String>,
    /// The hardware target (`--emit plan|rte_flow|testpmd`).
    #[arg(long, default_value = "octeon-cn10k")]
    target: String,
}

/// Runs `pipec compile`.
pub fn run(args: &CompileArgs) -> anyhow::Result<ExitCode> {
    let loaded = driver::load(&args.input.inputs, &args.input.build_options());
    loaded.emit_to_stderr();
    if loaded.has_errors() {
        return Ok(ExitCode::from(1));
    }
    match args.emit {
        Emit::Model => output::print(args.format, &loaded.cluster, || {
            model_text::cluster_to_text(&loaded.cluster)
        })?,
        Emit::Identities => {
            let ids = identity::cluster_to_identities(&loaded.cluster, args.node.as_deref());
            output::print(args.format, &ids, || {
                identity::text::identities_to_text(&loaded.cluster, &ids)
            })?
        }
        Emit::Mag | Emit::Dot => {
            let lowered = lower::cluster_to_mag(&loaded.cluster, args.node.as_deref());
            if let Err(e) = mag::validate(lowered.mag()) {
                anyhow::bail!("internal compiler error: lowering made an invalid graph: {e}");
            }
            let text = if args.emit == Emit::Mag {
                mag::text::mag_to_text(lowered.mag())
            } else {
                mag::dot::mag_to_dot(lowered.mag())
            };
            output::print(args.format, &text, || text.clone())?
        }
        Emit::Ebpf => {
            let lowered = lower::cluster_to_mag(&loaded.cluster, args.node.as_deref());
            let info = mag::validate(lowered.mag()).map_err(|e| {
                anyhow::anyhow!("internal compiler error: lowering made an invalid graph: {e}")
            })?;
            let artifact = pipec_ebpf::mag_to_ebpf(lowered.mag(), &info)?;
            let text = artifact.to_string();
            output::print(args.format, &text, || text.clone())?
        }
        Emit::Plan | Emit::RteFlow | Emit::Testpmd => {
            let (plan, _, profile) =
                crate::partition::plan(&loaded, args.node.as_deref(), &args.target)?;
            match args.emit {
                Emit::Plan => {
                    output::print(args.format, &plan, || pipec::partition::plan_to_text(&plan))?
                }
                Emit::RteFlow => {
                    let art = crate::partition::rte_flow(&plan, &profile)?;
                    let json = pipec::backend::Artifact::json(&art);
                    let text = serde_json::to_string_pretty(&json)? + "\n";
                    output::print(args.format, &json, || text)?
                }
                _ => {
                    let art = crate::partition::rte_flow(&plan, &profile)?;
                    let text = art.testpmd_text();
                    output::print(args.format, &text, || text.clone())?
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
