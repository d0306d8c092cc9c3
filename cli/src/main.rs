//! The `pipec` command line: one subcommand per job, kubectl's output habits.
//!
//! Exit codes: 0 success; 1 the input has errors or a check failed (conformance, trace
//! disagreement); 2 the command line itself is wrong (clap's own code).

#![deny(
    clippy::print_stdout,
    reason = "standard output goes through `output::out`, which reports write errors instead of panicking"
)]

// Dev-dependencies that the unit tests do not use; the package's integration tests,
// benches or examples do.
#[cfg(test)]
use gencluster as _;
#[cfg(test)]
use insta as _;
#[cfg(test)]
use proptest as _;

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
    #[command(
        after_help = "Examples:\n  pipec check examples/starwars\n  kubectl get netpol,svc,pods -A -o yaml | pipec check -\n  pipec check -o json manifests/ | jq '.diagnostics[].code'"
    )]
    Check(check::CheckArgs),
    /// Compiles inputs and prints one stage's representation.
    #[command(
        after_help = "Examples:\n  pipec compile --emit mag --node local examples/starwars\n  pipec compile --emit testpmd examples/starwars\n  pipec compile --emit plan -o json examples/starwars"
    )]
    Compile(compile::CompileArgs),
    /// Shows the verdict for one connection and the rules that decided it.
    #[command(
        after_help = "Examples:\n  pipec trace examples/starwars --from default/tiefighter --to svc:default/deathstar --port 80/TCP\n  pipec trace --live --from default/xwing --to ip:10.96.0.10 --port 80/TCP"
    )]
    Trace(trace::TraceArgs),
    /// Runs a directory of conformance cases through every engine.
    #[command(
        after_help = "Examples:\n  pipec conformance ../shared/conformance\n  pipec conformance --engine reference --engine ebpf cases/"
    )]
    Conformance(conformance::ConformanceArgs),
    /// Formats `.pipe` policy files canonically.
    #[command(
        after_help = "Examples:\n  pipec fmt policies/*.pipe\n  pipec fmt --check policies/"
    )]
    Fmt(fmt::FmtArgs),
    /// Shows where every rule runs (hardware or eBPF), why, and the hardware budget.
    #[command(
        after_help = "Examples:\n  pipec explain examples/starwars\n  pipec explain --summary examples/starwars\n  pipec explain --rule t9.e2 examples/starwars\n  pipec explain --live"
    )]
    Explain(partition::ExplainArgs),
    /// Lists the target profiles: built-ins, and the `.pipe` targets of the inputs.
    #[command(after_help = "Examples:\n  pipec targets\n  pipec targets -o json policies/")]
    Targets(partition::TargetsArgs),
    /// Shows the running pipecd's status (sources synced, last apply, errors).
    #[command(
        after_help = "Examples:\n  pipec status\n  pipec status --control unix:/run/pipecd/control.sock -o json"
    )]
    Status(live::StatusArgs),
    /// Streams the running datapath's flow events with the rule that decided each.
    #[command(
        after_help = "Examples:\n  pipec observe\n  pipec observe --address 10.244.0.5 -o json"
    )]
    Observe(live::ObserveArgs),
    /// Prints a shell completion script.
    #[command(
        after_help = "Examples:\n  pipec completion bash > /etc/bash_completion.d/pipec\n  pipec completion zsh > \"${fpath[1]}/_pipec\"\n  pipec completion fish > ~/.config/fish/completions/pipec.fish"
    )]
    Completion(CompletionArgs),
    /// Prints pipec's version, the commit it was built from and its targets.
    #[command(after_help = "Examples:\n  pipec version\n  pipec version -o json")]
    Version(VersionArgs),
}

/// Arguments of `pipec completion`.
#[derive(Args, Debug)]
struct CompletionArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// Arguments of `pipec version`.
#[derive(Args, Debug)]
struct VersionArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// What `pipec version` prints.
#[derive(serde::Serialize)]
struct VersionInfo {
    version: &'static str,
    commit: &'static str,
    targets: Vec<&'static str>,
}

/// Runs `pipec version`.
fn version(args: &VersionArgs) -> anyhow::Result<ExitCode> {
    let info = VersionInfo {
        version: env!("CARGO_PKG_VERSION"),
        commit: option_env!("PIPEC_COMMIT").unwrap_or("unknown"),
        targets: pipec::backend::BUILTIN_TARGETS
            .iter()
            .map(|(name, _, _)| *name)
            .collect(),
    };
    output::print(args.format, &info, || {
        format!(
            "pipec {} (commit {})\ntargets: {}\n",
            info.version,
            info.commit,
            info.targets.join(", ")
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `pipec completion`.
fn completion(args: &CompletionArgs) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory as _;
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "pipec", &mut script);
    output::out(&String::from_utf8_lossy(&script))?;
    Ok(ExitCode::SUCCESS)
}

impl Command {
    /// The manifest arguments of the commands that read manifests.
    fn input_mut(&mut self) -> Option<&mut InputArgs> {
        match self {
            Command::Check(a) => Some(a.input_mut()),
            Command::Compile(a) => Some(a.input_mut()),
            Command::Trace(a) => Some(a.input_mut()),
            Command::Explain(a) => Some(a.input_mut()),
            _ => None,
        }
    }

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
            | Command::Observe(_)
            | Command::Completion(_)
            | Command::Version(_) => false,
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
    /// An input file or directory, as kubectl's `-f` (may be repeated; `-` is standard
    /// input). The same as naming it without `-f`.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: Vec<PathBuf>,
    /// Read directories recursively, as kubectl's `-R` (without it, one level deep).
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

impl InputArgs {
    /// Folds `-f` into the inputs and, with `-R`, replaces each directory by the manifest
    /// files of its whole tree (sorted by path, so that runs are deterministic).
    pub fn normalize(&mut self) {
        self.inputs.append(&mut self.filename);
        if !self.recursive {
            return;
        }
        let mut out = Vec::new();
        for path in std::mem::take(&mut self.inputs) {
            if path.is_dir() {
                let before = out.len();
                walk(&path, &mut out);
                out[before..].sort();
            } else {
                out.push(path);
            }
        }
        self.inputs = out;
    }

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

/// The manifest and `.pipe` files under `dir`, at any depth (symbolic links to directories
/// are not followed, so a link cycle cannot loop).
fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        // Named as is, so that the frontend reports why it cannot be read.
        out.push(dir.to_path_buf());
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json" || e == "pipe")
        {
            out.push(path);
        }
    }
}

/// Runs the command line.
fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(input) = cli.command.input_mut() {
        input.normalize();
    }
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
        Command::Completion(a) => completion(&a),
        Command::Version(a) => version(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) if output::is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
