//! The `pipec` command line: one subcommand per job, kubectl's output habits.
//!
//! Exit codes: 0 success; 1 the input has errors or a check failed (conformance, trace
//! disagreement); 2 the command line itself is wrong (clap's own code).

#![allow(
    clippy::print_stdout,
    reason = "printing results is the command line's job"
)]

/// glibc's malloc spent about a quarter of a full-scale load (150k pods) merging and
/// splitting free chunks (`malloc_consolidate`, `unlink_chunk`); mimalloc's size-class pages
/// avoid that work at the same peak memory (BENCHMARKS.md, issue 2).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod check;
mod compile;
mod conformance;
mod fmt;
mod live;
mod output;
mod partition;
mod session;
mod trace;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use pipec::model::build::BuildOptions;
use std::path::PathBuf;
use std::process::ExitCode;

/// pipec compiles Kubernetes networking intent into a DPU packet pipeline.
#[derive(Parser, Debug)]
#[command(name = "pipec", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Checks inputs and reports every problem found.
    Check(check::CheckArgs),
    /// Compiles inputs and prints one stage's representation.
    Compile(compile::CompileArgs),
    /// Shows the verdict for one connection and the rules that decided it.
    Trace(trace::TraceArgs),
    /// Runs a directory of conformance cases through every engine.
    Conformance(conformance::ConformanceArgs),
    /// Formats `.pipe` policy files canonically.
    Fmt(fmt::FmtArgs),
    /// Shows where every rule runs (hardware or eBPF), why, and the hardware budget.
    Explain(partition::ExplainArgs),
    /// Lists the target profiles: built-ins, and the `.pipe` targets of the inputs.
    Targets(partition::TargetsArgs),
    /// Shows the running pipecd's status (sources synced, last apply, errors).
    Status(live::StatusArgs),
    /// Streams the running datapath's flow events with the rule that decided each.
    Observe(live::ObserveArgs),
}

impl Command {
    /// The inputs a command needs and was not given: clap cannot say "required unless
    /// `--live`" across the commands that share [`InputArgs`], so this check does.
    fn missing_inputs(&self) -> bool {
        match self {
            Command::Check(a) => a.input().inputs.is_empty(),
            Command::Compile(a) => a.input().inputs.is_empty(),
            Command::Trace(a) => a.input().inputs.is_empty() && !a.live.live,
            Command::Explain(a) => a.input().inputs.is_empty() && !a.live.live,
            Command::Conformance(_)
            | Command::Fmt(_)
            | Command::Targets(_)
            | Command::Status(_)
            | Command::Observe(_) => false,
        }
    }
}

/// Output format, as kubectl's `-o`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable tables.
    #[default]
    Text,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Options shared by every command that reads manifests.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Manifest files or directories (YAML or JSON; `kubectl get -o yaml|json` output works).
    /// Required, except with `--live`, which asks the running pipecd instead.
    pub inputs: Vec<PathBuf>,
    /// Where pods without an IP get one.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub pod_cidr: IpNet,
    /// Where services without a cluster IP get one.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: IpNet,
    /// Where Services that ask for an IPv6 cluster IP (`ipFamilies`, dual-stack) get one.
    #[arg(long, value_name = "CIDR")]
    pub service_cidr_v6: Option<IpNet>,
    /// Cluster name, for Cilium's cluster label.
    #[arg(long, default_value = "default")]
    pub cluster_name: String,
    /// The namespace of namespaced objects that name none, as `kubectl apply -n`.
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespace: Option<String>,
    /// Skip objects of policy kinds pipec does not enforce (Calico policies, an unknown
    /// version of a policy kind) with a warning and a summary, instead of failing (E0124).
    /// Verdicts then allow more than the cluster does.
    #[arg(long)]
    pub allow_ignored_policies: bool,
    /// Hide warnings (errors are still shown). Without it, each kind of warning is shown
    /// a few times and the rest counted; `pipec check` shows every one.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

impl InputArgs {
    /// The model-stage options these arguments give.
    pub fn build_options(&self) -> BuildOptions {
        BuildOptions {
            pod_cidr: self.pod_cidr,
            service_cidr: self.service_cidr,
            cluster_name: self.cluster_name.clone(),
            assign_pod_ips: true,
            allow_ignored_policies: self.allow_ignored_policies,
            default_namespace: self.namespace.clone(),
            service_cidr_v6: self.service_cidr_v6,
        }
    }

    /// How warnings are shown: summarised per code, or hidden with `-q`.
    pub fn warnings(&self) -> pipec::diag::WarningDisplay {
        if self.quiet {
            pipec::diag::WarningDisplay::Quiet
        } else {
            pipec::diag::WarningDisplay::Summary
        }
    }
}

/// Runs the command line.
fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.missing_inputs() {
        use clap::CommandFactory as _;
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "the following required arguments were not provided:\n  <INPUTS>...",
            )
            .exit();
    }
    let result = match cli.command {
        Command::Check(a) => check::run(&a),
        Command::Compile(a) => compile::run(&a),
        Command::Trace(a) => trace::run(&a),
        Command::Conformance(a) => conformance::run(&a),
        Command::Fmt(a) => fmt::run(&a),
        Command::Explain(a) => partition::run_explain(&a),
        Command::Targets(a) => partition::run_targets(&a),
        Command::Status(a) => live::status(&a),
        Command::Observe(a) => live::observe(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
