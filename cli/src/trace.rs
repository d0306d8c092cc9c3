//! `pipec trace`: one connection through the reference semantics and through the MAG.
//!
//! Prints the verdict, the service translation (frontend, candidates, affinity) and, for
//! every candidate path, the egress and ingress result with each deciding rule as
//! `Kind/ns/name section[i] "name" at file:line`. The exit status is 0 whenever the trace
//! ran, whatever the verdict, and 1 when the input or the arguments are wrong.

use crate::live::{self, LiveArgs};
use crate::{output, Format, InputArgs};
use clap::Args;
use pipec::driver;
use pipec::trace::{trace, Query};
use std::process::ExitCode;

/// Arguments of `pipec trace`.
#[derive(Args, Debug)]
pub(crate) struct TraceArgs {
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
    #[command(flatten)]
    pub live: LiveArgs,
}

/// Runs `pipec trace`.
pub(crate) fn run(args: &TraceArgs) -> anyhow::Result<ExitCode> {
    let query = Query {
        from: &args.from,
        to: &args.to,
        port: &args.port,
        check_listening: args.check_listening,
    };
    if args.live.live {
        args.live.refuse_inputs(&args.input)?;
        return live::trace(&args.live, &query, args.format);
    }
    let loaded = driver::load(&args.input.inputs, &args.input.build_options());
    loaded.emit_to_stderr_with(args.input.warnings());
    if loaded.has_errors() {
        return Ok(ExitCode::from(1));
    }
    let t = trace(&loaded.sources, &loaded.cluster, &query).map_err(anyhow::Error::msg)?;
    output::print(args.format, &t.report, || t.text())?;
    Ok(if t.agrees {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

impl TraceArgs {
    /// The inputs.
    pub(crate) fn input(&self) -> &InputArgs {
        &self.input
    }

    /// The inputs, to normalise them.
    pub(crate) fn input_mut(&mut self) -> &mut InputArgs {
        &mut self.input
    }
}
