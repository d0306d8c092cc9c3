//! `pipecd`: see the crate documentation of `pipec_runtime`.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use aya as _;
use futures as _;
use kube as _;
use pipec as _;
use pipec_cpt as _;
use pipec_ebpf_common as _;
use pipec_rte_flow as _;
use serde as _;
use serde_json as _;
use tokio_stream as _;
use tonic as _;
// Dev-dependencies that the unit tests do not use; the package's integration tests,
// benches or examples do.
#[cfg(test)]
use base64 as _;
#[cfg(test)]
use gencluster as _;
#[cfg(test)]
use ipnet as _;
#[cfg(test)]
use pipec_netns as _;
#[cfg(test)]
use proptest as _;
#[cfg(test)]
use serde_yaml as _;

use clap::{Parser, ValueEnum};
use pipec_ebpf::MapSizes;
use pipec_runtime::api::{ApiConfig, ApiSource};
use pipec_runtime::daemon::{hardware_profile, Daemon, Sources};
use pipec_runtime::device::Device;
use pipec_runtime::offload::driver::Settings;
use pipec_runtime::shutdown::Stop;
use pipec_runtime::source::ManifestDir;
use pipec_runtime::state::StateDir;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps one node's datapath equal to the cluster's state.
#[derive(Parser, Debug)]
#[command(name = "pipecd", version, about, long_about = None)]
struct Args {
    /// The manifests directory (YAML, JSON and `.pipe` files), watched for changes. Write
    /// files atomically (a rename), so that a half-written file is never read. With
    /// `--kubeconfig` or `--in-cluster` it adds to what the API holds (`.pipe` programs).
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,
    /// The node this daemon runs the datapath of.
    #[arg(long, value_name = "NAME")]
    node: String,
    /// Where identity numbers are kept across restarts (created with mode 0700).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Where `/healthz`, `/readyz`, `/metrics`, `/status` and `/debug/state` are served.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9964")]
    metrics_addr: SocketAddr,
    /// `kernel`: real eBPF maps pinned in bpffs (needs root); `model`: in-memory mirrors.
    #[arg(long, value_enum, default_value_t = DatapathKind::Kernel)]
    datapath: DatapathKind,
    /// The uplink, where `from_wire` and `to_wire` are attached (kernel datapath).
    #[arg(long, value_name = "IFACE")]
    wire: Option<String>,
    /// The bpffs directory the kernel datapath pins its maps in (default
    /// `/sys/fs/bpf/pipec/NODE`); maps pinned there by an earlier run are reused.
    #[arg(long, value_name = "DIR")]
    bpffs: Option<PathBuf>,
    /// The entries of eBPF maps larger (or smaller) than the defaults, as
    /// `MAP=ENTRIES,...` (`policy=16777216,backends=262144`), at most 16777216 each. A
    /// state that overfills a map is refused and the last good state stays; maps already
    /// pinned keep the sizes they were created with. Not given, new maps are created with
    /// the first full state and sized for it: each map's default, or a quarter more than
    /// the state needs, rounded up to a power of two.
    #[arg(long, value_name = "MAP=ENTRIES,...", value_parser = parse_map_sizes)]
    ebpf_map_entries: Option<MapSizes>,
    /// The control API socket (`unix:PATH`, made with mode 0600) for `pipec status`,
    /// `pipec explain --live` and `pipec trace --live`.
    #[arg(long, value_name = "unix:PATH")]
    control: Option<String>,
    /// Serve the CNI channel (ADD, DEL, CHECK from pipec-cni on the host) on TCP with
    /// mutual TLS; needs --tls-cert, --tls-key and --tls-client-ca.
    #[arg(long, value_name = "ADDR:PORT", requires_all = ["tls_cert", "tls_key", "tls_client_ca"])]
    cni_listen: Option<SocketAddr>,
    /// pipecd's certificate for --cni-listen (PEM).
    #[arg(long, value_name = "FILE", requires = "cni_listen")]
    tls_cert: Option<PathBuf>,
    /// pipecd's key for --cni-listen (PEM).
    #[arg(long, value_name = "FILE", requires = "cni_listen")]
    tls_key: Option<PathBuf>,
    /// The CA whose client certificates --cni-listen accepts (PEM).
    #[arg(long, value_name = "FILE", requires = "cni_listen")]
    tls_client_ca: Option<PathBuf>,
    /// Watch the Kubernetes API with this kubeconfig (its current context).
    #[arg(long, value_name = "FILE", conflicts_with = "in_cluster")]
    kubeconfig: Option<PathBuf>,
    /// Watch the Kubernetes API with the in-cluster configuration (the pod's service
    /// account).
    #[arg(long)]
    in_cluster: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// How often connection offload reads a page of the eBPF conntrack, in milliseconds
    /// (kernel datapath). A full pass over the conntrack is one tick of the offload logic.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    offload_interval_ms: u64,
    /// Conntrack entries read per page.
    #[arg(long, value_name = "N", default_value_t = Settings::default().scan_budget)]
    offload_scan_budget: usize,
    /// Passes without a counter increase after which an offloaded connection goes back to
    /// software.
    #[arg(long, value_name = "N", default_value_t = Settings::default().idle_passes)]
    offload_idle_passes: u64,
    /// Passes after which a connection offloaded without a counter goes back to software.
    #[arg(long, value_name = "N", default_value_t = Settings::default().lifetime_passes)]
    offload_lifetime_passes: u64,
    /// Bytes a connection carries in software before it may be offloaded.
    #[arg(long, value_name = "BYTES", default_value_t = Settings::default().min_bytes)]
    offload_min_bytes: u64,
    /// The built-in hardware profile (`pipec targets`) the node's plan and connection
    /// offload are compiled for: `octeon-cn10k` (DPDK 22.11) or `octeon-cn10k-dpdk23.07`
    /// (PORT_ID crosses PFs, so connections to other nodes can be offloaded too). An unknown
    /// name stops pipecd at start with the list's hint.
    #[arg(long, value_name = "NAME", default_value = pipec_runtime::daemon::DEFAULT_HW_PROFILE)]
    hw_profile: String,
    /// Flow entries the node's plan leaves to connection offload, with priority level 0
    /// above every policy rule (the profile's own number, 1024 for the cnxk profiles, when
    /// not given; 0 gives the plan the whole table and every level).
    #[arg(long, value_name = "ENTRIES")]
    offload_reserve: Option<u64>,
    /// The DPDK ethdev port (its device name, `net_null0`) that the hardware flow table's
    /// rte_flow rules and the connection-offload entries are created on, instead of the
    /// model. Needs a pipecd built with the `dpdk` feature.
    #[arg(long, value_name = "NAME")]
    hw_port: Option<String>,
    /// The DPDK EAL arguments for --hw-port, split at whitespace (`-l 0 --no-huge --no-pci
    /// --vdev net_null0`).
    #[arg(
        long,
        value_name = "ARGS",
        requires = "hw_port",
        allow_hyphen_values = true
    )]
    dpdk_args: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DatapathKind {
    Kernel,
    Model,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let sub = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match args.log_format {
        LogFormat::Text => sub.init(),
        LogFormat::Json => sub.json().init(),
    }
    // The signals are taken first, so that a SIGTERM during start-up is a clean stop too.
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    let stop =
        match pipec_runtime::shutdown::on_signals(move || flag.store(true, Ordering::Relaxed)) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("taking SIGTERM and SIGINT: {e:#}");
                return ExitCode::from(1);
            }
        };
    match run(args, stop, stopping) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

fn device(args: &Args) -> anyhow::Result<Device> {
    let device = datapath(args)?;
    match &args.hw_port {
        None => Ok(device),
        Some(name) => hw_port(device, name, args.dpdk_args.as_deref().unwrap_or("")),
    }
}

#[cfg(feature = "dpdk")]
fn hw_port(device: Device, name: &str, eal: &str) -> anyhow::Result<Device> {
    let eal: Vec<String> = eal.split_whitespace().map(str::to_string).collect();
    let device = device.with_hw_port(name, &eal)?;
    tracing::info!(port = name, "the hardware flow table is the DPDK port");
    Ok(device)
}

#[cfg(not(feature = "dpdk"))]
fn hw_port(_: Device, name: &str, _: &str) -> anyhow::Result<Device> {
    anyhow::bail!("--hw-port {name}: this pipecd is built without the dpdk feature")
}

fn datapath(args: &Args) -> anyhow::Result<Device> {
    match args.datapath {
        DatapathKind::Model => {
            if args.wire.is_some() {
                anyhow::bail!("--wire needs --datapath kernel");
            }
            Ok(match &args.ebpf_map_entries {
                Some(sizes) => Device::model().with_model_sizes(sizes.clone()),
                None => Device::model_sized_by_state(),
            })
        }
        DatapathKind::Kernel => {
            let dir = args
                .bpffs
                .clone()
                .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/pipec").join(&args.node));
            match &args.ebpf_map_entries {
                Some(sizes) => Device::kernel(&dir, args.wire.as_deref(), sizes),
                None => Device::kernel_sized_by_state(&dir, args.wire.as_deref()),
            }
        }
    }
}

fn parse_map_sizes(text: &str) -> Result<MapSizes, String> {
    MapSizes::parse(text)
}

fn api_config(args: &Args) -> Option<ApiConfig> {
    match (&args.kubeconfig, args.in_cluster) {
        (Some(path), _) => Some(ApiConfig::Kubeconfig(path.clone())),
        (None, true) => Some(ApiConfig::InCluster),
        (None, false) => None,
    }
}

fn run(args: Args, stop: Stop, stopping: Arc<AtomicBool>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // `serve` only returns with an error. The process ends here, before the runtime and the
    // daemon it holds are dropped: dropping the device would detach the programs, and the
    // datapath must keep working while the daemon is down, whatever stopped it.
    if let Err(e) = rt.block_on(serve(args, stop, stopping)) {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// The coalescing window: changes seen within it are applied together.
const WINDOW: Duration = Duration::from_millis(2);
/// How often the flow events are drained from the ring buffer for `pipec observe`.
const EVENTS: Duration = Duration::from_millis(100);
/// A full look at the sources at least this often (a missed notification, SA expiry).
const TICK: Duration = Duration::from_secs(1);

async fn serve(args: Args, mut stop: Stop, stopping: Arc<AtomicBool>) -> anyhow::Result<()> {
    // One slot: notifications that arrive while a step is pending coalesce into it.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let api = match api_config(&args) {
        Some(c) => Some(ApiSource::start(&c, tx.clone()).await?),
        None => None,
    };
    let state = args.state_dir.as_deref().map(StateDir::open).transpose()?;
    let sources = Sources {
        dir: args.manifests.as_deref().map(ManifestDir::new),
        api,
    };
    let profile = hardware_profile(&args.hw_profile, args.offload_reserve)?;
    let mut daemon = Daemon::for_profile(&args.node, sources, device(&args)?, state, profile)?;
    daemon.stop_on(stopping);
    if args.offload_interval_ms == 0 || args.offload_scan_budget == 0 {
        anyhow::bail!("--offload-interval-ms and --offload-scan-budget must be at least 1");
    }
    daemon.set_offload(Settings {
        scan_budget: args.offload_scan_budget,
        idle_passes: args.offload_idle_passes,
        lifetime_passes: args.offload_lifetime_passes,
        min_bytes: args.offload_min_bytes,
    });
    let ready = daemon.ready_flag();
    let daemon = Arc::new(Mutex::new(daemon));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding --metrics-addr {}: {e}", args.metrics_addr))?;
    tracing::info!(addr = %listener.local_addr()?, node = %args.node, "serving /healthz /readyz /metrics /status");
    tokio::spawn(pipec_runtime::http::serve(listener, daemon.clone(), ready));
    if let Some(address) = &args.control {
        let path =
            pipec_proto::socket_path(address).map_err(|e| anyhow::anyhow!("--control {e}"))?;
        let listener = pipec_runtime::control::bind(path)?;
        let d = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = pipec_runtime::control::serve(listener, d).await {
                tracing::error!("{e:#}");
            }
        });
    }
    if let (Some(addr), Some(cert), Some(key), Some(ca)) = (
        args.cni_listen,
        &args.tls_cert,
        &args.tls_key,
        &args.tls_client_ca,
    ) {
        let files = pipec_proto::TlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        };
        let tls =
            pipec_proto::server_tls(&files).map_err(|e| anyhow::anyhow!("--cni-listen: {e}"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding --cni-listen {addr}: {e}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving the CNI channel (mutual TLS)");
        let d = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = pipec_runtime::control::serve_cni_tls(listener, tls, d).await {
                tracing::error!("{e:#}");
            }
        });
    }
    let _watcher = match &args.manifests {
        Some(dir) => Some(watch_dir(dir, tx)?),
        None => None,
    };
    let mut tick = tokio::time::interval(TICK);
    let mut drain = tokio::time::interval(EVENTS);
    // The scan is polled before the drain and, when it falls behind, skips the scans it
    // missed instead of running them back to back: with the select biased, a branch that
    // is always ready (a drain slowed by a busy machine, or scans catching up) would
    // otherwise keep the branches after it from ever running.
    let mut offload = tokio::time::interval(Duration::from_millis(args.offload_interval_ms));
    offload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.requested() {
        tokio::select! {
            // A stop is looked at first: no new step starts once it is asked for.
            biased;
            _ = stop.wait() => break,
            _ = rx.recv() => tokio::time::sleep(WINDOW).await,
            _ = tick.tick() => {}
            _ = offload.tick() => {
                let d = daemon.clone();
                let scanned = tokio::task::spawn_blocking(move || {
                    let mut d = d.lock().map_err(|_| anyhow::anyhow!("daemon state poisoned"))?;
                    d.offload_scan()
                })
                .await?;
                // A failed scan leaves every packet in software, where the complete
                // pipeline decides it: it is logged, and the next scan tries again.
                if let Err(e) = scanned {
                    tracing::warn!("connection offload: {e:#}");
                }
                continue;
            }
            _ = drain.tick() => {
                let d = daemon.clone();
                tokio::task::spawn_blocking(move || {
                    let mut d = d.lock().map_err(|_| anyhow::anyhow!("daemon state poisoned"))?;
                    d.publish_events()
                })
                .await??;
                continue;
            }
        }
        while rx.try_recv().is_ok() {}
        let seen = Instant::now();
        let d = daemon.clone();
        // A stop asked for while the step runs waits for it here (a step stops taking
        // changes once asked); the signal thread bounds the wait.
        let step = tokio::task::spawn_blocking(move || {
            let mut d = d
                .lock()
                .map_err(|_| anyhow::anyhow!("daemon state poisoned"))?;
            d.step(seen)
        })
        .await?;
        step?;
    }
    let d = daemon.clone();
    tokio::task::spawn_blocking(move || {
        let mut d = d
            .lock()
            .map_err(|_| anyhow::anyhow!("daemon state poisoned"))?;
        d.persist()
    })
    .await??;
    // The datapath keeps working without the daemon: the maps stay pinned and the programs
    // attached, so the process ends here without running the attachments' destructors.
    tracing::info!("stopped; the state is persisted and the datapath stays in place");
    std::process::exit(0)
}

/// Wakes the loop on every change in `dir` (the loop then looks at the whole directory).
fn watch_dir(
    dir: &std::path::Path,
    wake: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        // The step that a wake-up starts reads the directory's files, and inotify reports
        // those reads (open, close without writing) as access events: waking on them made
        // every step start the next, a step every few milliseconds for as long as the daemon
        // ran, and kept the loop's later branches (the offload scan) from their turn. Only a
        // change to the directory wakes the loop (a file closed after writing is one).
        use notify::event::{AccessKind, AccessMode};
        if let Ok(e) = &e {
            if let notify::EventKind::Access(a) = e.kind {
                if a != AccessKind::Close(AccessMode::Write) {
                    return;
                }
            }
        }
        let _ = wake.try_send(());
    })?;
    notify::Watcher::watch(&mut watcher, dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| anyhow::anyhow!("watching --manifests {}: {e}", dir.display()))?;
    Ok(watcher)
}
