//! The control API (gRPC on a unix socket of mode 0600): status, and `explain` and `trace`
//! against the running state, rendered exactly as the command line renders them from files.
//!
//! Every call reads the daemon under its lock on the blocking pool, so an answer describes
//! one generation of the state (it says which) and never a half-applied change.

use crate::daemon::Daemon;
use pipec_proto::v1::cni_server::{Cni, CniServer};
use pipec_proto::v1::control_server::{Control, ControlServer};
use pipec_proto::v1::{
    AddReply, AddRequest, CheckReply, CheckRequest, DelReply, DelRequest, ExplainReply,
    ExplainRequest, FlowEvent, Format, ObserveRequest, StatusReply, StatusRequest, TraceReply,
    TraceRequest,
};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// The services over the daemon's state (control, and the CNI plugin's reports).
#[derive(Clone)]
pub struct ControlApi {
    daemon: Arc<Mutex<Daemon>>,
}

/// The longest an ADD may wait for the pod's object, whatever the plugin asks.
const MAX_ADD_WAIT: Duration = Duration::from_secs(60);

/// Binds the control socket at `path` (mode 0600).
pub fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    let listener = pipec_proto::bind_private(path)
        .map_err(|e| anyhow::anyhow!("binding --control unix:{}: {e}", path.display()))?;
    tracing::info!(socket = %path.display(), "serving the control API");
    Ok(listener)
}

/// Serves the control API on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::UnixListener,
    daemon: Arc<Mutex<Daemon>>,
) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(ControlServer::new(ControlApi {
            daemon: daemon.clone(),
        }))
        .add_service(CniServer::new(ControlApi { daemon }))
        .serve_with_incoming(pipec_proto::incoming(listener))
        .await
        .map_err(|e| anyhow::anyhow!("control API: {e}"))
}

/// Serves the CNI service alone (never the control API) on a TCP listener with mutual
/// TLS: the host↔DPU channel. A client without a certificate of the CA is refused in the
/// handshake.
pub async fn serve_cni_tls(
    listener: tokio::net::TcpListener,
    tls: tonic::transport::ServerTlsConfig,
    daemon: Arc<Mutex<Daemon>>,
) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .tls_config(tls)
        .map_err(|e| anyhow::anyhow!("--cni-listen TLS: {e}"))?
        .add_service(CniServer::new(ControlApi { daemon }))
        .serve_with_incoming(pipec_proto::incoming_tcp(listener))
        .await
        .map_err(|e| anyhow::anyhow!("CNI channel: {e}"))
}

impl ControlApi {
    /// Runs `f` on the daemon, for changing it, on the blocking pool.
    async fn with_mut<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Daemon) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let daemon = self.daemon.clone();
        tokio::task::spawn_blocking(move || {
            let mut d = daemon
                .lock()
                .map_err(|_| Status::internal("daemon state poisoned"))?;
            f(&mut d)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    /// Runs `f` on the daemon on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Daemon) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        self.with_mut(move |d| f(d)).await
    }
}

fn not_ready(d: &Daemon) -> Result<(), Status> {
    if d.metrics.ready {
        Ok(())
    } else {
        Err(Status::unavailable(
            "the first full state is not applied yet",
        ))
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, Status> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| Status::internal(e.to_string()))
}

/// `pipec explain`'s output for the daemon's state.
pub fn explain(d: &Daemon, rule: &str, format: Format) -> Result<String, Status> {
    use pipec::partition::explain;
    let session = d.session();
    let plan = session
        .plan()
        .ok_or_else(|| Status::failed_precondition("no hardware target to partition for"))?;
    let mut report = explain::report(plan, session.mag(), session.sources());
    let refused = mark_refusals(&mut report, d.device().refused());
    if !rule.is_empty() {
        let rows = explain::select(&report, rule);
        if rows.is_empty() {
            return Err(Status::not_found(format!("no rule {rule} in the plan")));
        }
        return match format {
            Format::Json => json(&rows),
            Format::Text => Ok(explain::chain_text(&rows)),
        };
    }
    let offload = pipec::engine::offload::session_summary(session, &report.usage);
    match format {
        Format::Json => json(&pipec::engine::offload::ExplainJson {
            report: &report,
            offload,
        }),
        Format::Text => Ok(explain::to_text(&report)
            + &refused
            + &offload.map(|o| o.text()).unwrap_or_default()
            + &pipec_cpt::explain_line(session)
            + &pipec_ebpf::backend::explain_line(session)),
    }
}

/// Shows the rules the hardware port refused where they run: the plan placed them in
/// hardware, but the port holds no handle for them, so their packets are decided by the
/// eBPF pipeline (which holds the whole pipeline). Each refused rule's row is moved to
/// `ebpf` with the code `device` and the port's errno and message; the text summary line
/// is returned (empty when the port refused nothing, so that a model device's explain is
/// the offline one).
fn mark_refusals(
    report: &mut pipec::partition::explain::Report,
    refused: &std::collections::BTreeMap<String, crate::device::Refusal>,
) -> String {
    if refused.is_empty() {
        return String::new();
    }
    // A rule's origin is its MAG entry, then (for the plan's rules) its source rule.
    let of_row = |id: &str| {
        refused
            .values()
            .filter(|r| r.origin == id || r.origin.starts_with(&format!("{id} ")))
            .collect::<Vec<_>>()
    };
    for row in &mut report.rows {
        let hits = of_row(&row.id);
        let Some(first) = hits.first() else { continue };
        row.target = "ebpf".into();
        row.code = "device".into();
        row.reason = format!("device refused ({}): {}", first.errno, first.message);
        for r in &hits {
            row.chain.push(format!(
                "the hardware port refused rule r{} ({}: {}); its packets are decided in eBPF",
                r.rule, r.errno, r.message
            ));
        }
    }
    let mut by_errno: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in refused.values() {
        *by_errno.entry(r.errno.as_str()).or_insert(0) += 1;
    }
    let counts: Vec<String> = by_errno.iter().map(|(e, n)| format!("{e} {n}")).collect();
    format!(
        "device refusals: {} hardware rules decided in eBPF ({})\n",
        refused.len(),
        counts.join(", ")
    )
}

/// The stream `Observe` answers with.
type FlowStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<FlowEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlApi {
    type ObserveStream = FlowStream;

    async fn observe(
        &self,
        request: Request<ObserveRequest>,
    ) -> Result<Response<FlowStream>, Status> {
        let address = request.into_inner().address;
        let mut rx = self
            .with(|d| {
                if !d.observable() {
                    return Err(Status::failed_precondition(
                        "the model datapath records no flow events (run pipecd with --datapath kernel)",
                    ));
                }
                Ok(d.events.subscribe())
            })
            .await?;
        let stream = async_stream(
            move |tx: tokio::sync::mpsc::Sender<Result<FlowEvent, Status>>| async move {
                loop {
                    match rx.recv().await {
                        Ok(e) => {
                            if !address.is_empty()
                                && e.source != address
                                && e.destination != address
                            {
                                continue;
                            }
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::debug!(lost = n, "an observer fell behind");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            },
        );
        Ok(Response::new(stream))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let reply = self
            .with(|d| {
                Ok(StatusReply {
                    ready: d.metrics.ready,
                    generation: d.session().generation(),
                    json: d.status().to_string(),
                })
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<ExplainReply>, Status> {
        let r = request.into_inner();
        let format = r.format();
        let reply = self
            .with(move |d| {
                not_ready(d)?;
                Ok(ExplainReply {
                    generation: d.session().generation(),
                    output: explain(d, &r.rule, format)?,
                })
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn trace(&self, request: Request<TraceRequest>) -> Result<Response<TraceReply>, Status> {
        let r = request.into_inner();
        let format = r.format();
        let reply = self
            .with(move |d| {
                not_ready(d)?;
                let session = d.session();
                let query = pipec::trace::Query {
                    from: &r.from,
                    to: &r.to,
                    port: &r.port,
                    check_listening: r.check_listening,
                };
                let t = pipec::trace::trace(session.sources(), session.cluster(), &query)
                    .map_err(Status::invalid_argument)?;
                let output = match format {
                    Format::Json => json(&t.report)?,
                    Format::Text => t.text(),
                };
                Ok(TraceReply {
                    generation: session.generation(),
                    output,
                    agrees: t.agrees,
                })
            })
            .await?;
        Ok(Response::new(reply))
    }
}

#[tonic::async_trait]
impl Cni for ControlApi {
    async fn add(&self, request: Request<AddRequest>) -> Result<Response<AddReply>, Status> {
        let r = request.into_inner();
        let a = r
            .attachment
            .ok_or_else(|| Status::invalid_argument("no attachment"))
            .and_then(|a| crate::cni::Attachment::from_wire(a).map_err(Status::invalid_argument))?;
        let wait = Duration::from_millis(u64::from(r.timeout_ms)).min(MAX_ADD_WAIT);
        let deadline = Instant::now() + wait;
        // Bounded by the deadline: the pod's object may still be on its way from the API.
        loop {
            let attempt = a.clone();
            let applied = self
                .with_mut(move |d| {
                    d.cni_add(attempt)
                        .map_err(|e| Status::failed_precondition(format!("{e:#}")))
                })
                .await?;
            if let Some(generation) = applied {
                tracing::info!(pod = %format!("{}/{}", a.pod_namespace, a.pod_name), generation, "CNI ADD: the pod's policy is in the datapath");
                return Ok(Response::new(AddReply { generation }));
            }
            if Instant::now() >= deadline {
                return Err(Status::unavailable(format!(
                    "pod {}/{} is not known to pipecd yet (waited {} ms for its object)",
                    a.pod_namespace,
                    a.pod_name,
                    wait.as_millis()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn del(&self, request: Request<DelRequest>) -> Result<Response<DelReply>, Status> {
        let r = request.into_inner();
        let known = self
            .with_mut(move |d| {
                d.cni_del(&r.container_id, &r.ifname)
                    .map_err(|e| Status::internal(format!("{e:#}")))
            })
            .await?;
        Ok(Response::new(DelReply { known }))
    }

    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckReply>, Status> {
        let r = request.into_inner();
        let reply = self
            .with(move |d| {
                Ok(match d.cni_attachment(&r.container_id, &r.ifname) {
                    Some(a) => CheckReply {
                        known: true,
                        ips: a.ips.iter().map(ToString::to_string).collect(),
                    },
                    None => CheckReply {
                        known: false,
                        ips: Vec::new(),
                    },
                })
            })
            .await?;
        Ok(Response::new(reply))
    }
}

/// A stream fed by a task: `f` gets the sending end of a bounded channel and runs until the
/// receiver (the client's call) is gone.
fn async_stream<F, Fut>(f: F) -> FlowStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<FlowEvent, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
