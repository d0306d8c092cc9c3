//! `pipec trace`: one connection through the reference semantics.
//!
//! Prints the verdict, the service translation (frontend, candidates, affinity) and, for
//! every candidate path, the egress and ingress result with each deciding rule as
//! `Kind/ns/name section[i] "name" at file:line`. The exit status is 0 whenever the trace
//! ran, whatever the verdict, and 1 when the input or the arguments are wrong.

use crate::{output, Format, InputArgs};
use clap::Args;
use pipec::driver;
use pipec::semantics::{self, Context, Options};
use pipec::trace::{parse_probe, report_to_text, trace_report};
use std::process::ExitCode;

/// Arguments of `pipec trace`.
#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The client: `NS/POD` or `ip:ADDR`.
    #[arg(long)]
    from: String,
    /// The destination: `NS/POD`, `svc:NS/NAME` (at service port `--port`) or `ip:ADDR`
    /// (a Service frontend address is translated).
    #[arg(long)]
    to: String,
    /// `PORT/PROTO` (`80/TCP`, `53/UDP`), `PORT` (TCP), or `ICMP`.
    #[arg(long)]
    port: String,
    /// Refuse connections to ports a destination pod does not list (when it lists any).
    #[arg(long)]
    check_listening: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Runs `pipec trace`.
pub fn run(args: &TraceArgs) -> anyhow::Result<ExitCode> {
    let loaded = driver::load(&args.input.inputs, &args.input.build_options());
    loaded.emit_to_stderr();
    if loaded.has_errors() {
        return Ok(ExitCode::from(1));
    }
    let cluster = &loaded.cluster;
    let probe =
        parse_probe(cluster, &args.from, &args.to, &args.port).map_err(anyhow::Error::msg)?;
    let ctx = Context::with_options(
        cluster,
        Options {
            check_listening: args.check_listening,
        },
    );
    let outcome = semantics::evaluate(&ctx, &probe);
    let report = trace_report(&loaded.sources, cluster, &probe, &outcome);
    output::print(args.format, &report, || report_to_text(&report))?;
    Ok(ExitCode::SUCCESS)
}
