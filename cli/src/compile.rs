//! `pipec compile --emit STAGE`: the stable text of one stage.

use crate::session::{self, SessionArgs};
use crate::{output, Format, InputArgs};
use clap::{Args, ValueEnum};
use pipec::identity;
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
    #[command(flatten)]
    session: SessionArgs,
}

/// Runs `pipec compile`.
pub fn run(args: &CompileArgs) -> anyhow::Result<ExitCode> {
    let Some(session) = session::load(&args.input, &args.session)? else {
        return Ok(ExitCode::from(1));
    };
    let cluster = session.cluster();
    match args.emit {
        Emit::Model => output::print(args.format, cluster, || {
            model_text::cluster_to_text(cluster)
        })?,
        Emit::Identities => {
            // Without `--node`, no node's addresses are `host`: the identities of the
            // cluster as a whole, with the session's numbers.
            let ids = identity::cluster_to_identities(cluster, args.session.node.as_deref());
            output::print(args.format, &ids, || {
                identity::text::identities_to_text(cluster, &ids)
            })?
        }
        Emit::Mag | Emit::Dot => {
            let text = if args.emit == Emit::Mag {
                mag::text::mag_to_text(session.mag())
            } else {
                mag::dot::mag_to_dot(session.mag())
            };
            output::print(args.format, &text, || text.clone())?
        }
        Emit::Ebpf => {
            let text = session::artifact(&session, pipec_ebpf::codegen::TARGET)?.text();
            output::print(args.format, &text, || text.clone())?
        }
        Emit::Plan => {
            let plan = session::plan(&session)?;
            output::print(args.format, plan, || pipec::partition::plan_to_text(plan))?
        }
        Emit::RteFlow => {
            let art = session::rte_flow(&session)?;
            let json = pipec::backend::Artifact::json(art);
            let text = serde_json::to_string_pretty(&json)? + "\n";
            output::print(args.format, &json, || text)?
        }
        Emit::Testpmd => {
            let text = session::rte_flow(&session)?.testpmd_text();
            output::print(args.format, &text, || text.clone())?
        }
    }
    Ok(ExitCode::SUCCESS)
}
