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
pub(crate) enum Emit {
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
    /// The node's IPsec SAs on the CPT: rte_security session configurations and inbound
    /// steering, keys redacted.
    Cpt,
    /// The same SAs as `ip xfrm` commands for a node without a CPT. They carry the keys,
    /// so they go only to `--secret-file` (created with mode 0600), never to the terminal.
    Xfrm,
}

/// Arguments of `pipec compile`.
#[derive(Args, Debug)]
pub(crate) struct CompileArgs {
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
    /// Where `--emit xfrm` writes its key-bearing commands (a new file of mode 0600).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<std::path::PathBuf>,
}

/// Runs `pipec compile`.
pub(crate) fn run(args: &CompileArgs) -> anyhow::Result<ExitCode> {
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
                // The MAG's policy tables match class numbers: an identity's own number,
                // or, for the classes listed here, another one (issue 20).
                let state = &session.lowered().state;
                let classes =
                    pipec::lower::policy::renumbered_classes_to_text(&state.classes, &state.ids);
                let mut text = identity::text::identities_to_text(cluster, &ids);
                if !classes.is_empty() {
                    text.push_str(&format!(
                        "\n# policy classes of node {} numbered apart from their identity (the MAG's src/dst_identity)\n{classes}",
                        state.node
                    ));
                }
                text
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
        Emit::Cpt => {
            let art = session::artifact(&session, pipec_cpt::TARGET)?;
            let json = art.json();
            output::print(args.format, &json, || art.text())?
        }
        Emit::Xfrm => return write_xfrm(&session, args.secret_file.as_deref()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the node's XFRM commands to `path` (mode 0600) and says on stdout what it wrote,
/// without a key.
fn write_xfrm(
    session: &pipec::session::Session,
    path: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let Some(path) = path else {
        anyhow::bail!("--emit xfrm writes keys, so it needs --secret-file PATH (created with mode 0600); it never prints them");
    };
    let Some(sa_set) = session::ipsec(session)? else {
        anyhow::bail!("the cluster has no kube-system/cilium-ipsec-keys Secret: IPsec is off, there are no XFRM states to write");
    };
    let text = sa_set.xfrm_text();
    pipec_cpt::write_secret_file(path, &text)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    crate::output::outln(&format!(
        "wrote {} XFRM states for node {} to {} (mode 0600)",
        sa_set.sas.len(),
        sa_set.node,
        path.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

impl CompileArgs {
    /// The inputs.
    pub(crate) fn input(&self) -> &InputArgs {
        &self.input
    }

    /// The inputs, to normalise them.
    pub(crate) fn input_mut(&mut self) -> &mut InputArgs {
        &mut self.input
    }
}
