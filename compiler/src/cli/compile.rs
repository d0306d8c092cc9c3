//! `pipec compile --emit STAGE`: the stable text of one stage.

use super::{output, Format, InputArgs};
use crate::driver;
use crate::identity;
use crate::model::text as model_text;
use clap::{Args, ValueEnum};
use std::process::ExitCode;

/// The stages `compile` can print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The validated cluster model.
    Model,
    /// Security identities and the ipcache.
    Identities,
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
    }
    Ok(ExitCode::SUCCESS)
}
