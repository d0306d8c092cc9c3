//! `gencluster`: writes a generated `kubectl get -o json` cluster dump.
//!
//! ```text
//! gencluster -o /tmp/cluster.json                      # full scale (150k pods, ...)
//! gencluster --small -o /tmp/small.json                 # 1% of it, for tests
//! gencluster --pods 15000 --services 1000 --endpoints 10000 --policies 1000 -o x.json
//! ```

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use serde as _;
use serde_json as _;
// Dev-dependencies that the unit tests do not use; the package's integration tests,
// benches or examples do.
#[cfg(test)]
use pipec as _;

use clap::Parser;
use gencluster::{write_to, Spec};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// Generates a large, valid Kubernetes cluster dump (one `kind: List` JSON document).
#[derive(Parser)]
#[command(name = "gencluster")]
struct Args {
    /// Start from the small preset (1% of the full scale) instead of the full one.
    #[arg(long)]
    small: bool,
    /// Number of pods.
    #[arg(long)]
    pods: Option<usize>,
    /// Number of Services.
    #[arg(long)]
    services: Option<usize>,
    /// Number of endpoints over all EndpointSlices.
    #[arg(long)]
    endpoints: Option<usize>,
    /// Number of NetworkPolicies.
    #[arg(long)]
    policies: Option<usize>,
    /// Number of application namespaces.
    #[arg(long)]
    namespaces: Option<usize>,
    /// Number of nodes.
    #[arg(long)]
    nodes: Option<usize>,
    /// Seed of every random choice.
    #[arg(long)]
    seed: Option<u64>,
    /// Write compact JSON instead of kubectl's four-space indentation.
    #[arg(long)]
    compact: bool,
    /// Output file; standard output when absent.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut spec = if args.small {
        Spec::small()
    } else {
        Spec::full()
    };
    let set = |field: &mut usize, v: Option<usize>| {
        if let Some(v) = v {
            *field = v;
        }
    };
    set(&mut spec.pods, args.pods);
    set(&mut spec.services, args.services);
    set(&mut spec.endpoints, args.endpoints);
    set(&mut spec.policies, args.policies);
    set(&mut spec.namespaces, args.namespaces);
    set(&mut spec.nodes, args.nodes);
    if let Some(seed) = args.seed {
        spec.seed = seed;
    }
    spec.pretty = !args.compact;
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::fs::File::create(path)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let stats = write_to(&spec, BufWriter::with_capacity(1 << 20, out))?;
    eprintln!(
        "gencluster: {} bytes, {} objects: {} namespaces, {} nodes, {} pods ({} workloads), {} services, {} endpointslices ({} endpoints), {} networkpolicies",
        stats.bytes,
        stats.objects(),
        stats.namespaces,
        stats.nodes,
        stats.pods,
        stats.workloads,
        stats.services,
        stats.endpoint_slices,
        stats.endpoints,
        stats.policies
    );
    Ok(())
}
