//! The commands that ask a running pipecd over its control socket instead of reading files:
//! `pipec status`, `pipec explain --live` and `pipec trace --live`. The daemon renders the
//! answer from its running state exactly as the file-based commands do; YAML is made here
//! from the JSON answer.

use crate::{Format, InputArgs};
use clap::Args;
use pipec_proto::v1::control_client::ControlClient;
use pipec_proto::v1::{ExplainRequest, ObserveRequest, StatusRequest, TraceRequest};
use std::process::ExitCode;

/// Where the running pipecd is.
#[derive(Args, Debug, Clone)]
pub(crate) struct LiveArgs {
    /// Ask the running pipecd (its control socket) instead of reading inputs.
    #[arg(long)]
    pub live: bool,
    /// pipecd's control socket.
    #[arg(long, value_name = "unix:PATH", default_value = pipec_proto::DEFAULT_ADDRESS)]
    pub control: String,
}

impl LiveArgs {
    /// `--live` reads no inputs: giving some is a mistake worth saying.
    pub(crate) fn refuse_inputs(&self, input: &InputArgs) -> anyhow::Result<()> {
        if !input.inputs.is_empty() {
            anyhow::bail!("--live asks the running pipecd; give no inputs with it");
        }
        Ok(())
    }
}

/// Arguments of `pipec status`.
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// pipecd's control socket.
    #[arg(long, value_name = "unix:PATH", default_value = pipec_proto::DEFAULT_ADDRESS)]
    control: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Runs `f` with a client of the control socket at `address`, on a runtime of its own.
fn call<T>(
    address: &str,
    f: impl AsyncFnOnce(ControlClient<tonic::transport::Channel>) -> Result<T, tonic::Status>,
) -> anyhow::Result<T> {
    let path = pipec_proto::socket_path(address).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let channel = pipec_proto::connect(path).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach pipecd at unix:{}: {e} (is it running with --control?)",
                path.display()
            )
        })?;
        f(ControlClient::new(channel))
            .await
            .map_err(|s| anyhow::anyhow!("pipecd: {}", s.message()))
    })
}

fn wire_format(format: Format) -> i32 {
    match format {
        Format::Text => pipec_proto::v1::Format::Text as i32,
        Format::Json | Format::Yaml => pipec_proto::v1::Format::Json as i32,
    }
}

/// Prints an answer rendered by the daemon (YAML is converted from its JSON).
fn print(format: Format, output: &str) -> anyhow::Result<()> {
    let out = match format {
        Format::Yaml => {
            // JSON is YAML, and serde_yaml's mapping keeps the order of the keys (which
            // serde_json's map would sort).
            let v: serde_yaml::Value = serde_yaml::from_str(output)?;
            serde_yaml::to_string(&v)?
        }
        Format::Text | Format::Json => output.to_string(),
    };
    crate::output::out(&out)?;
    Ok(())
}

/// Runs `pipec status`.
pub(crate) fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let reply = call(&args.control, async |mut c| {
        Ok(c.status(StatusRequest {}).await?.into_inner())
    })?;
    let status: serde_json::Value = serde_json::from_str(&reply.json)?;
    let text = || status_text(&status);
    crate::output::print(args.format, &status, text)?;
    Ok(if reply.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The status for people: readiness, generation, sources, errors.
fn status_text(s: &serde_json::Value) -> String {
    let mut out = format!(
        "ready:       {}\ngeneration:  {}\nevents:      {}\napplies:     {}\nerrors:      {}\n",
        s["ready"], s["generation"], s["events"], s["applies"], s["errors"]
    );
    if let Some(api) = s.get("api") {
        out.push_str(&format!(
            "api:         synced {}, {} objects, {} watch errors, kinds not served: {}\n",
            api["synced"],
            api["objects"],
            api["watch_errors"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum::<u64>()),
            api["kinds_not_served"]
        ));
    }
    if let Some(bad) = s["bad_files"].as_object() {
        for (source, why) in bad {
            out.push_str(&format!(
                "not applied: {source}: {}\n",
                why.as_str().unwrap_or("").lines().next().unwrap_or("")
            ));
        }
    }
    out
}

/// Runs `pipec explain --live`.
pub(crate) fn explain(
    args: &LiveArgs,
    rule: Option<&str>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let request = ExplainRequest {
        rule: rule.unwrap_or("").to_string(),
        format: wire_format(format),
    };
    let reply = call(&args.control, async |mut c| {
        Ok(c.explain(request).await?.into_inner())
    })?;
    print(format, &reply.output)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `pipec trace --live`.
pub(crate) fn trace(
    args: &LiveArgs,
    q: &pipec::trace::Query<'_>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let request = TraceRequest {
        from: q.from.to_string(),
        to: q.to.to_string(),
        port: q.port.to_string(),
        check_listening: q.check_listening,
        format: wire_format(format),
    };
    let reply = call(&args.control, async |mut c| {
        Ok(c.trace(request).await?.into_inner())
    })?;
    print(format, &reply.output)?;
    Ok(if reply.agrees {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Arguments of `pipec observe`.
#[derive(Args, Debug)]
pub(crate) struct ObserveArgs {
    /// pipecd's control socket.
    #[arg(long, value_name = "unix:PATH", default_value = pipec_proto::DEFAULT_ADDRESS)]
    control: String,
    /// Only flows from or to this address.
    #[arg(long, value_name = "IP")]
    address: Option<std::net::IpAddr>,
    /// Stop after this many flows (default: until interrupted).
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// Output format: a line per flow, or a JSON object per line.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Runs `pipec observe`: the running datapath's flow events, each with the rule that
/// decided it, as they happen.
pub(crate) fn observe(args: &ObserveArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    if args.format == Format::Yaml {
        anyhow::bail!("observe prints text or JSON lines (-o text|json)");
    }
    let request = ObserveRequest {
        address: args.address.map(|a| a.to_string()).unwrap_or_default(),
    };
    let max = args.max;
    let format = args.format;
    call(&args.control, async move |mut c| {
        let mut stream = c.observe(request).await?.into_inner();
        let mut seen = 0u64;
        let mut out = std::io::stdout().lock();
        while max.is_none_or(|m| seen < m) {
            let Some(e) = stream.message().await? else {
                break;
            };
            let text = match format {
                Format::Json => serde_json::json!({
                    "time_ns": e.time_ns, "direction": e.direction, "verdict": e.verdict,
                    "reason": e.reason, "protocol": e.protocol, "source": e.source,
                    "source_port": e.source_port, "destination": e.destination,
                    "destination_port": e.destination_port, "rule": e.rule,
                    "endpoint_id": e.endpoint_id, "remote_identity": e.remote_identity,
                })
                .to_string(),
                Format::Text | Format::Yaml => pipec_proto::flow_line(&e),
            };
            // A closed stdout (`| head`) ends the command quietly.
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                break;
            }
            seen += 1;
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
