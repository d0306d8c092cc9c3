//! The compile session of the commands that compile (`compile`, `explain`): the options
//! that choose the node and the hardware target, the backends of this binary, and the
//! session's outputs as the commands need them.

use crate::InputArgs;
use clap::Args;
use pipec::backend::{lookup, Artifact, Backend, LookupError, Profile};
use pipec::session::{Hardware, LoadError, Session, SessionOptions};
use pipec_cpt::{CptBackend, IpsecArtifact};
use pipec_ebpf::EbpfBackend;
use pipec_rte_flow::{RteFlowArtifact, RteFlowBackend};

/// Options that choose what a session compiles for.
#[derive(Args, Debug, Clone)]
pub(crate) struct SessionArgs {
    /// The node to compile for (its addresses are `host` in the ipcache).
    #[arg(long)]
    pub node: Option<String>,
    /// The hardware target (a built-in target, or a `target` block of a `.pipe` input).
    #[arg(long, default_value = "octeon-cn10k")]
    pub target: String,
}

/// The backends of this binary: the eBPF pipeline, which always holds every rule, then
/// the hardware target, then the CPT's node-to-node IPsec. A `.pipe` target that extends
/// `octeon-cn10k` is compiled by the rte_flow backend with that profile.
pub(crate) fn backends(hardware: Option<&Profile>) -> Vec<Box<dyn Backend>> {
    let mut out: Vec<Box<dyn Backend>> = vec![Box::new(EbpfBackend::default())];
    if let Some(p) = hardware {
        out.push(Box::new(RteFlowBackend::new(p.clone())));
    }
    out.push(Box::new(CptBackend::default()));
    out
}

/// Loads a session; prints its diagnostics. `None` when the inputs have errors (they are
/// printed).
pub(crate) fn load(input: &InputArgs, args: &SessionArgs) -> anyhow::Result<Option<Session>> {
    let options = SessionOptions {
        build: input.build_options(),
        node: args.node.clone(),
        hardware: Some(Hardware::Named(args.target.clone())),
        ..SessionOptions::default()
    };
    let step = Progress::start("reading and modelling the inputs");
    let loaded = Session::load(&input.inputs, options, &backends);
    step.done();
    match loaded {
        Ok(s) => {
            s.loaded().emit_to_stderr_with(input.warnings());
            if let Some(node) = &args.node {
                check_node(s.cluster(), node)?;
            }
            Ok(Some(s))
        }
        Err(LoadError::Input(loaded)) => {
            loaded.emit_to_stderr_with(input.warnings());
            Ok(None)
        }
        Err(LoadError::Other(e)) => anyhow::bail!(e),
    }
}

/// A `--node` that names no node of the inputs is an error naming the close matches, as
/// kubectl answers `node "x" not found`: compiling for a node nobody runs on would print an
/// empty pipeline that looks like a result. The nodes are the Node objects and the
/// `nodeName`s of pods; without Node objects, the synthetic node stands for the cluster.
fn check_node(cluster: &pipec::model::Cluster, node: &str) -> anyhow::Result<()> {
    let mut names: std::collections::BTreeSet<&str> =
        cluster.nodes.iter().map(|n| n.name.as_str()).collect();
    names.extend(cluster.pods.iter().filter_map(|p| p.node.as_deref()));
    if cluster.nodes.is_empty() {
        names.insert(pipec::lower::SYNTHETIC_NODE);
    }
    if names.contains(node) {
        return Ok(());
    }
    let hint = pipec::util::closest(node, names.iter().copied())
        .map(|c| format!(" (did you mean {c}?)"))
        .unwrap_or_default();
    let known: Vec<&str> = names.into_iter().collect();
    anyhow::bail!(
        "no node {node} in the inputs{hint}; nodes: {}",
        known.join(", ")
    )
}

/// The artifact of `target`, found through [`lookup`] among the session's backends.
pub(crate) fn artifact<'s>(session: &'s Session, target: &str) -> anyhow::Result<&'s dyn Artifact> {
    let found = session.backend(target).map(|b| b.name().to_string());
    let Some(name) = found else {
        let available: Vec<Box<dyn Backend>> = backends(session.profile());
        return Err(match lookup(&available, target) {
            Ok(_) => anyhow::anyhow!("the session has no target {target}"),
            Err(e @ (LookupError::Disabled { .. } | LookupError::Unknown { .. })) => e.into(),
        });
    };
    match session.artifact(&name) {
        Some(Ok(a)) => Ok(a),
        Some(Err(e)) => anyhow::bail!("{e}"),
        None => anyhow::bail!("the session has no target {target}"),
    }
}

/// The partition plan.
pub(crate) fn plan(session: &Session) -> anyhow::Result<&pipec::partition::Plan> {
    let step = Progress::start("lowering and partitioning");
    let plan = session.plan();
    step.done();
    plan.ok_or_else(|| anyhow::anyhow!("no hardware target to partition for"))
}

/// A line on standard error saying which long step runs, shown only when standard error is
/// a terminal (a log or a pipe gets nothing), and only for steps that take longer than a
/// moment: the line appears after half a second and is erased when the step ends, with
/// how long it took.
pub(crate) struct Progress {
    done: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `what` on standard error (when it is a terminal).
    pub(crate) fn start(what: &'static str) -> Progress {
        use std::io::IsTerminal as _;
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let thread = std::io::stderr().is_terminal().then(|| {
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let tick = std::time::Duration::from_millis(500);
                let mut shown = false;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(tick)
                {
                    shown = true;
                    eprint!(
                        "\r\x1b[2Kpipec: {what}… {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                }
                if shown {
                    eprintln!(
                        "\r\x1b[2Kpipec: {what}: {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                }
            })
        });
        Progress { done, thread }
    }

    /// Ends the step.
    pub(crate) fn done(mut self) {
        let _ = self.done.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The hardware target's rte_flow rules.
pub(crate) fn rte_flow(session: &Session) -> anyhow::Result<&RteFlowArtifact> {
    let name = session
        .profile()
        .map(|p| p.name.clone())
        .ok_or_else(|| anyhow::anyhow!("no hardware target"))?;
    artifact(session, &name)?
        .as_any()
        .downcast_ref::<RteFlowArtifact>()
        .ok_or_else(|| anyhow::anyhow!("target {name} is not an rte_flow target"))
}

/// The node's IPsec SA set (`None` when the cluster has no key Secret).
pub(crate) fn ipsec(session: &Session) -> anyhow::Result<Option<&pipec_cpt::CptArtifact>> {
    let art = artifact(session, pipec_cpt::TARGET)?
        .as_any()
        .downcast_ref::<IpsecArtifact>()
        .ok_or_else(|| anyhow::anyhow!("target cpt is not the CPT backend"))?;
    Ok(art.sa_set.as_ref())
}
