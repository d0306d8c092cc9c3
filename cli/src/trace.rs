//! `pipec trace`: one connection through the reference semantics and through the MAG.
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

/// The MAG side of a trace: the same connection through the lowered pipeline, table by
/// table, and whether it agrees with the reference (for the backend the MAG chose).
fn mag_column(
    cluster: &pipec::model::Cluster,
    probe: &semantics::Probe,
    reference: &semantics::Outcome,
    check_listening: bool,
) -> (String, bool) {
    use pipec::lower::probe::{conn_of_probe, refused, Engine};
    use pipec::mag::interp::Verdict as MagVerdict;
    let mut engine = Engine::new(cluster);
    let outcome = match engine.connect(&conn_of_probe(cluster, probe)) {
        Ok(o) => o,
        Err(e) => return (format!("MAG: cannot run: {e}\n"), false),
    };
    let mut out = String::from("MAG (match-action graph interpreter):\n");
    for (node, t) in &outcome.traces {
        out.push_str(&format!("  node {node}:\n"));
        if let Ok(l) = engine.node(node) {
            for line in t.to_text(l.mag()).lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    let mut mag_allowed = outcome.verdict != MagVerdict::Deny;
    if check_listening && mag_allowed {
        if let Some(r) = refused(cluster, &outcome, probe) {
            out.push_str(&format!("  refused: {r}\n"));
            mag_allowed = false;
        }
    }
    if let Some((ip, port)) = outcome.dnat {
        out.push_str(&format!("  translated to {ip}:{port}\n"));
    }
    out.push_str(&format!("  verdict: {:?}\n", outcome.verdict));
    let expected = match outcome.dnat {
        Some((ip, port)) => reference
            .paths
            .iter()
            .find(|p| p.dst_ip == ip && p.dst_port.is_none_or(|d| d == port))
            .map(|p| p.verdict.is_allowed()),
        None => reference.allowed(),
    };
    let agrees = expected.is_none_or(|e| e == mag_allowed);
    if !agrees {
        out.push_str(&format!(
            "!!! DISAGREEMENT: the reference says {}, the MAG says {} !!!\n",
            if expected == Some(true) {
                "allow"
            } else {
                "deny"
            },
            if mag_allowed { "allow" } else { "deny" }
        ));
    }
    (out, agrees)
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
    let (mag_text, agrees) = mag_column(cluster, &probe, &outcome, args.check_listening);
    output::print(args.format, &report, || {
        format!("{}\n{mag_text}", report_to_text(&report))
    })?;
    Ok(if agrees {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
