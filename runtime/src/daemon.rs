//! The daemon's state and its one loop step: look at the sources, apply what changed to the
//! session, apply the session's operations to the device, record what happened.

use crate::api::{ApiChange, ApiSource};
use crate::cni::Attachment;
use crate::device::{Applied, Device};
use crate::metrics::Metrics;
use crate::offload::driver::{Driver, LazyVerdicts, PodPort, Settings};
use crate::source::{FileChange, ManifestDir};
use crate::state::StateDir;
use pipec::backend::{Backend, Profile};
use pipec::engine::hwmodel::ForwardSemantics;
use pipec::model::IdentityPins;
use pipec::session::{Event, Hardware, Session, SessionOptions};
use pipec_ebpf::{Interfaces, SharedSizes};
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The backends pipecd compiles for, in apply order: the eBPF pipeline first, then the
/// hardware flow table, then the CPT's SAs (the same set as `pipec compile`).
pub fn backends(hardware: Option<&Profile>) -> Vec<Box<dyn Backend>> {
    backends_with(hardware, None, None)
}

/// [`backends`], with the eBPF endpoints bound to the pods' ports from `interfaces`, and
/// a state that overfills the eBPF maps of `sizes` refused.
pub fn backends_with(
    hardware: Option<&Profile>,
    interfaces: Option<&Interfaces>,
    sizes: Option<&SharedSizes>,
) -> Vec<Box<dyn Backend>> {
    let mut ebpf = match interfaces {
        Some(i) => pipec_ebpf::EbpfBackend::with_interfaces(i.clone()),
        None => pipec_ebpf::EbpfBackend::default(),
    };
    if let Some(sizes) = sizes {
        ebpf = ebpf.with_shared_sizes(sizes.clone());
    }
    let mut out: Vec<Box<dyn Backend>> = vec![Box::new(ebpf)];
    if let Some(p) = hardware {
        out.push(Box::new(pipec_rte_flow::RteFlowBackend::new(p.clone())));
    }
    out.push(Box::new(pipec_cpt::CptBackend::default()));
    out
}

/// Where the cluster's state comes from: a manifests directory, the Kubernetes API, or both
/// (a directory beside the API holds `.pipe` programs and objects the API does not have).
#[derive(Default)]
pub struct Sources {
    /// The manifests directory.
    pub dir: Option<ManifestDir>,
    /// The Kubernetes API's watchers.
    pub api: Option<ApiSource>,
}

/// One source's change: a file's or an object's.
#[derive(Clone, Debug)]
enum Change {
    File(FileChange),
    Object(ApiChange),
}

impl Change {
    fn events(&self) -> Vec<Event> {
        match self {
            Change::File(c) => c.events.clone(),
            Change::Object(c) => c.events(),
        }
    }

    /// The name status and logs give the change's source.
    fn label(&self) -> String {
        match self {
            Change::File(c) => c.path.display().to_string(),
            Change::Object(c) => c.label(),
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Change::File(c) => c.text(),
            Change::Object(c) => c.text.as_deref(),
        }
    }
}

/// What a step did.
#[derive(Clone, Debug, Default)]
pub struct Step {
    /// Files applied.
    pub applied_files: usize,
    /// Files refused (bad text, or a change the session rejected).
    pub refused_files: usize,
    /// Device operations.
    pub ops: Applied,
    /// Where the step's time went.
    pub times: StepTimes,
}

/// Where one step's time went (the benchmark's breakdown).
#[derive(Clone, Debug, Default)]
pub struct StepTimes {
    /// Looking at the sources (the directory scan reads and decodes changed files).
    pub collect: Duration,
    /// `Session::apply` of the changes, every stage included.
    pub session: Duration,
    /// Writing the state and applying the operations to the device (offload included).
    pub device: Duration,
    /// Reading the device's sizes for the metrics.
    pub sizes: Duration,
}

/// The daemon.
pub struct Daemon {
    node: String,
    session: Session,
    options: SessionOptions,
    sources: Sources,
    device: Device,
    state: Option<StateDir>,
    /// The pods the CNI wired, by (container id, interface).
    attachments: BTreeMap<(String, String), Attachment>,
    /// Each attached pod address's port, read by the eBPF backend.
    interfaces: Interfaces,
    /// The sizes of the device's eBPF maps, which the eBPF backend checks each state
    /// against (set when the maps are created for the first state).
    sizes: SharedSizes,
    /// Connection offload: the conntrack scan, the pods' VFs and the offload logic.
    offload: Driver,
    /// Flow events for `pipec observe` subscribers.
    pub events: crate::observe::Events,
    /// Metrics and status, read by the HTTP endpoints.
    pub metrics: Metrics,
    /// The pins last written to the state directory: an apply that hands out no new number
    /// writes nothing (each write is flushed to disk, which costs more than an apply).
    written_pins: Option<IdentityPins>,
    /// The SA removals last written to the state directory.
    written_pending: Vec<crate::state::PendingRemoval>,
    /// Set when the daemon is asked to stop: a step then takes no further change, so that
    /// the stop is not held up by a long batch applied change by change.
    stopping: Arc<AtomicBool>,
    /// Set once the first full state is applied ([`Metrics::ready`]), readable without the
    /// daemon's lock: `/readyz` must answer while an apply holds the lock.
    ready: Arc<AtomicBool>,
}

/// The hardware profile pipecd compiles for unless `--hw-profile` names another.
pub const DEFAULT_HW_PROFILE: &str = "octeon-cn10k";

/// The built-in hardware profile `name` (`pipec targets`; it is resolved before any source
/// is read, so a `.pipe` target cannot be named), keeping `offload_reserve` flow entries
/// from the plan for connection offload instead of the profile's own number.
pub fn hardware_profile(name: &str, offload_reserve: Option<u64>) -> anyhow::Result<Profile> {
    let mut profile = pipec::session::resolve_profile(name, None)
        .map_err(|e| anyhow::anyhow!("starting the session: {e}"))?;
    if let Some(n) = offload_reserve {
        let b = &profile.budget;
        let room = b
            .entries
            .map_or(0, |e| e.saturating_sub(b.reserved_entries));
        if n > room {
            anyhow::bail!(
                "--offload-reserve {n} is more than the {room} entries profile {name} has beside the platform's reservation"
            );
        }
        profile.budget.offload_entries = n;
    }
    Ok(profile)
}

impl Daemon {
    /// A daemon for `node` over `sources`, with identity numbers from `state` (if any),
    /// compiling for the `octeon-cn10k` profile. Nothing is loaded yet: the first
    /// [`Daemon::step`] loads the sources.
    pub fn new(
        node: &str,
        sources: Sources,
        device: Device,
        state: Option<StateDir>,
    ) -> anyhow::Result<Daemon> {
        let profile = hardware_profile(DEFAULT_HW_PROFILE, None)?;
        Daemon::for_profile(node, sources, device, state, profile)
    }

    /// [`Daemon::new`] for the hardware profile `profile` ([`hardware_profile`]). The
    /// profile decides the plan, the entries it keeps for connection offload, and the
    /// forwarding reach of connection offload (`octeon-cn10k-dpdk23.07` lets an entry on a
    /// pod's VF forward to the uplink).
    pub fn for_profile(
        node: &str,
        sources: Sources,
        device: Device,
        state: Option<StateDir>,
        profile: Profile,
    ) -> anyhow::Result<Daemon> {
        let pins = match &state {
            Some(s) => s.read_pins()?,
            None => IdentityPins::default(),
        };
        let options = SessionOptions {
            // A pod without an address is one whose network is not set up yet: it gets its
            // address from the CNI, never from the compiler's allocator.
            build: pipec::model::build::BuildOptions {
                assign_pod_ips: false,
                ..Default::default()
            },
            node: Some(node.to_string()),
            hardware: Some(Hardware::Profile(Box::new(profile))),
            pins,
        };
        let attachments = match &state {
            Some(s) => s.read_attachments()?,
            None => Vec::new(),
        };
        let mut device = device;
        let pending = match &state {
            Some(s) => s.read_pending()?,
            None => Vec::new(),
        };
        device.restore_pending(&pending);
        let interfaces = Interfaces::default();
        let sizes = SharedSizes::new(std::sync::RwLock::new(device.map_sizes().clone()));
        let session = Session::load_texts(&[], options.clone(), &|p| {
            backends_with(p, Some(&interfaces), Some(&sizes))
        })
        .map_err(|e| anyhow::anyhow!("starting the session: {e}"))?;
        let semantics = session.profile().map_or(
            ForwardSemantics::SamePf,
            crate::offload::driver::semantics_of,
        );
        Ok(Daemon {
            node: node.to_string(),
            session,
            options,
            sources: sources_checked(sources)?,
            device,
            state,
            attachments: attachments.into_iter().map(|a| (a.key(), a)).collect(),
            interfaces,
            sizes,
            offload: Driver::new(semantics, Settings::default()),
            events: crate::observe::events(),
            metrics: Metrics::default(),
            written_pins: None,
            written_pending: pending,
            stopping: Arc::new(AtomicBool::new(false)),
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The flag set once the first full state is applied, for readers that must not wait
    /// for the daemon's lock.
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// Loads the first full state from the files that load, with the identity numbers of
    /// the last run (a load, not an apply onto an empty session, so that numbers pinned by
    /// the last run are given to their label sets again rather than retired). When the files
    /// do not load together, they are taken one by one and the ones that break the load are
    /// refused.
    fn first_load(&mut self, changes: Vec<Change>, step: &mut Step) -> anyhow::Result<()> {
        let options = self.options.clone();
        let interfaces = self.interfaces.clone();
        let sizes = self.sizes.clone();
        let load = |changes: &[&Change]| {
            let texts: Vec<(String, &str)> = changes
                .iter()
                .filter_map(|c| Some((c.label(), c.text()?)))
                .collect();
            let refs: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (n.as_str(), *t)).collect();
            Session::load_texts(&refs, options.clone(), &|p| {
                backends_with(p, Some(&interfaces), Some(&sizes))
            })
        };
        let all: Vec<&Change> = changes.iter().collect();
        let mut refused = BTreeSet::new();
        let session = match load(&all) {
            Ok(s) => s,
            Err(_) => {
                let mut kept: Vec<&Change> = Vec::new();
                for (i, c) in changes.iter().enumerate() {
                    kept.push(c);
                    if let Err(e) = load(&kept) {
                        kept.pop();
                        refused.insert(i);
                        self.refuse(c, &e.to_string(), step);
                    }
                }
                load(&kept).map_err(|e| anyhow::anyhow!("{e}"))?
            }
        };
        self.session = session;
        self.metrics.events += changes.len() as u64;
        for (i, change) in changes.into_iter().enumerate() {
            if !refused.contains(&i) {
                self.taken(change, step);
            }
        }
        Ok(())
    }

    /// Records that the session holds `change`.
    fn taken(&mut self, change: Change, step: &mut Step) {
        self.metrics.good_source(&change.label());
        match change {
            Change::File(c) => {
                if let Some(dir) = &mut self.sources.dir {
                    dir.applied(c);
                }
            }
            Change::Object(c) => {
                if let Some(api) = &self.sources.api {
                    api.with(|f| f.applied(c));
                }
            }
        }
        step.applied_files += 1;
    }

    /// Every change of the sources since the last look; `None` while the API's initial lists
    /// are not complete and nothing is loaded yet (the first load waits for them).
    fn collect(&mut self, step: &mut Step) -> anyhow::Result<Option<Vec<Change>>> {
        if let Some(api) = &self.sources.api {
            self.metrics.watch_errors = api.with(|f| f.error_count());
            if !self.metrics.ready && !api.synced() {
                return Ok(None);
            }
        }
        let mut changes = Vec::new();
        if let Some(dir) = &mut self.sources.dir {
            let scan = dir.scan()?;
            for bad in &scan.bad {
                tracing::warn!(file = %bad.path.display(), "not applied, the last good state stays:\n{}", bad.message);
                self.metrics
                    .bad_source(&bad.path.display().to_string(), &bad.message);
                step.refused_files += 1;
            }
            changes.extend(scan.changes.into_iter().map(Change::File));
        }
        if let Some(api) = &self.sources.api {
            changes.extend(api.with(|f| f.take()).into_iter().map(Change::Object));
        }
        Ok(Some(changes))
    }

    /// The session (for the tests and the control endpoints).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// One step: applies every change of the sources, then, the first time, checks the node
    /// and reconciles the device with the loaded state. `since` is when the step's trigger
    /// was seen (for the event → applied latency).
    pub fn step(&mut self, since: Instant) -> anyhow::Result<Step> {
        let mut step = Step::default();
        let clock = Instant::now();
        let collected = self.collect(&mut step)?;
        step.times.collect = clock.elapsed();
        let Some(changes) = collected else {
            return Ok(step);
        };
        if !self.metrics.ready {
            self.first_load(changes, &mut step)?;
            self.first_apply(&mut step)?;
        } else if !changes.is_empty() {
            self.apply_changes(changes, &mut step)?;
        }
        let expired = self.device.expire(Instant::now());
        if expired > 0 {
            tracing::info!(expired, "removed inbound SAs after the rotation window");
            self.write_pending()?;
        }
        if step.applied_files > 0 {
            self.metrics.observe_apply(since.elapsed());
        }
        let clock = Instant::now();
        self.metrics.sizes = self.device.sizes(&self.session)?;
        let capacity = self.device.map_sizes();
        self.metrics.map_capacity = pipec_ebpf::artifact::MapName::ALL
            .iter()
            .map(|m| (m.as_str().to_string(), capacity.get(*m)))
            .collect();
        step.times.sizes = clock.elapsed();
        self.metrics.generation = self.session.generation();
        Ok(step)
    }

    /// The Prometheus text (`/metrics`): the daemon's metrics, then the eBPF datapath's
    /// per-rule counters, read from the device at each scrape.
    pub fn metrics_text(&self) -> String {
        let mut o = self.metrics.text();
        match self.device.counters() {
            Ok(c) => {
                let cookies: BTreeSet<u64> = c.keys().copied().collect();
                let names = crate::device::rule_provenance(&self.session, &cookies);
                o.push_str(&Metrics::rule_counters_text(&c, &names));
            }
            Err(e) => tracing::warn!("reading the per-rule counters: {e:#}"),
        }
        o.push_str(&self.offload.metrics_text());
        o.push_str(&crate::metrics::refusals_text(self.device.refusal_counts()));
        o
    }

    /// The status (`/status`): the metrics' and the API source's.
    pub fn status(&self) -> serde_json::Value {
        let mut s = self.metrics.status();
        if let Some(api) = &self.sources.api {
            s["api"] = api.status();
        }
        s["offload"] = self.offload.status();
        s["offload"]["forwarding"] = match self.offload.semantics() {
            ForwardSemantics::SamePf => "same_pf",
            ForwardSemantics::AnyPort => "any_port",
        }
        .into();
        s["hardware"] = self.device.hardware_status();
        if let Some(p) = self.session.profile() {
            s["hardware"]["profile"] = p.name.clone().into();
            s["offload"]["kept_from_the_plan"] = p.budget.offload_entries.into();
        }
        s
    }

    /// Applies the changes as one batch; when the session refuses the batch, change by
    /// change, so that one bad file or object does not hold back the others.
    fn apply_changes(&mut self, changes: Vec<Change>, step: &mut Step) -> anyhow::Result<()> {
        let events: Vec<Event> = changes.iter().flat_map(Change::events).collect();
        self.metrics.events += events.len() as u64;
        let clock = Instant::now();
        let applied = self.session.apply(&events);
        step.times.session += clock.elapsed();
        match applied {
            Ok(c) => {
                let clock = Instant::now();
                self.after_apply(&c, step)?;
                step.times.device += clock.elapsed();
                for change in changes {
                    self.taken(change, step);
                }
                return Ok(());
            }
            Err(e) if changes.len() == 1 => {
                self.refuse(&changes[0], &e.to_string(), step);
                return Ok(());
            }
            Err(_) => {}
        }
        for change in changes {
            if self.stopping() {
                // The changes not taken stay pending in their source and are applied by
                // the next run, which looks at every source in full.
                break;
            }
            match self.session.apply(&change.events()) {
                Ok(c) => {
                    self.after_apply(&c, step)?;
                    self.taken(change, step);
                }
                Err(e) => self.refuse(&change, &e.to_string(), step),
            }
        }
        Ok(())
    }

    fn refuse(&mut self, change: &Change, why: &str, step: &mut Step) {
        tracing::warn!(source = %change.label(), "change refused, the last good state stays:\n{why}");
        self.metrics.bad_source(&change.label(), why);
        match change {
            Change::File(c) => {
                if let Some(dir) = &mut self.sources.dir {
                    dir.refused(c);
                }
            }
            // The API source keeps the change in flight until it hears how it ended.
            Change::Object(c) => {
                if let Some(api) = &self.sources.api {
                    api.with(|f| f.refused(c));
                }
            }
        }
        step.refused_files += 1;
    }

    fn after_apply(
        &mut self,
        changes: &pipec::session::Changes,
        step: &mut Step,
    ) -> anyhow::Result<()> {
        // What the next run needs is written before the device acts on the change (write
        // ahead): a kill in between then leaves a state directory that already knows the
        // new identity numbers and the delayed SA removals, and the restart reconciles the
        // device to them. Written after, a kill in between would let the restart number a
        // live identity anew, or remove an old SA before its window ends.
        self.write_pins()?;
        self.device.schedule(changes);
        self.write_pending()?;
        // The offload's removals come before anything of the change reaches the device:
        // an entry the new policy denies, an entry of a pod that is gone, or one the grown
        // plan needs the room of would otherwise forward packets the new state does not
        // allow, for as long as the change takes to apply.
        self.offload_before_change();
        // The plan names pods' ports by endpoint number; the device needs their VFs. A
        // port that moves has none while the change applies (`port_map_during`).
        let ports = self.port_map();
        let during = self.device.port_map_during(&ports);
        self.device.set_port_map(during);
        let applied = self.device.apply(changes)?;
        self.device.set_port_map(ports);
        tracing::info!(
            generation = changes.generation,
            map_ops = applied.map_ops,
            flow_ops = applied.flow_ops,
            sa_ops = applied.sa_ops,
            "applied"
        );
        add(&mut step.ops, &applied);
        Ok(())
    }

    /// Writes the SA removals that wait for their window when they changed, so that a
    /// restart carries them out on time rather than at once (or never).
    fn write_pending(&mut self) -> anyhow::Result<()> {
        if let Some(s) = &self.state {
            let list = self.device.pending_removals();
            if list != self.written_pending {
                s.write_pending(&list)?;
                self.written_pending = list;
            }
        }
        Ok(())
    }

    fn write_pins(&mut self) -> anyhow::Result<()> {
        if let Some(s) = &self.state {
            let pins = self.session.pins_now();
            if self.written_pins.as_ref() != Some(&pins) {
                s.write_pins(&pins)?;
                self.written_pins = Some(pins);
            }
        }
        Ok(())
    }

    /// Uses `flag` as the request to stop: once it is set (on SIGTERM), a running step
    /// takes no further change.
    pub fn stop_on(&mut self, flag: Arc<AtomicBool>) {
        self.stopping = flag;
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Writes everything the next run needs to the state directory (identity pins, the SA
    /// removals that wait for their window, the CNI's attachments), whether or not it changed
    /// since the last write (the pins only once the first full state is loaded). The
    /// datapath is left as it is: maps pinned and programs attached.
    pub fn persist(&mut self) -> anyhow::Result<()> {
        // Before the first load the session is empty: its pins would retire every number
        // the last run handed out. The file still holds the last run's pins; it stays.
        if self.metrics.ready {
            self.written_pins = None;
            self.write_pins()?;
        }
        if let Some(s) = &self.state {
            self.written_pending = self.device.pending_removals();
            s.write_pending(&self.written_pending)?;
        }
        self.write_attachments()
    }

    fn first_apply(&mut self, step: &mut Step) -> anyhow::Result<()> {
        let names: Vec<&str> = self
            .session
            .cluster()
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        if !names.contains(&self.node.as_str()) {
            let hint = pipec::util::closest(&self.node, names.iter().copied())
                .map(|c| format!(" (did you mean {c}?)"))
                .unwrap_or_default();
            let known = if names.is_empty() {
                "the sources hold no Node object".to_string()
            } else {
                format!("nodes: {}", names.join(", "))
            };
            anyhow::bail!("node {} is not in the cluster{hint}; {known}", self.node);
        }
        for t in self.session.target_names() {
            if let Some(Err(e)) = self.session.artifact(t) {
                anyhow::bail!("target {t} cannot hold the node's pipeline: {e}");
            }
        }
        self.create_maps()?;
        self.restore_attachments()?;
        // Written ahead of the device, as in `after_apply`.
        self.write_pins()?;
        let ports = self.port_map();
        self.device.set_port_map(ports);
        let applied = self.device.reconcile(&self.session)?;
        // Nothing is offloaded yet: this gives the offload the room the plan leaves.
        self.offload_before_change();
        tracing::info!(
            map_ops = applied.map_ops,
            flow_ops = applied.flow_ops,
            sa_ops = applied.sa_ops,
            "reconciled the device with the first full state (only the difference applied)"
        );
        self.metrics.reconciled = Some(applied.clone());
        self.write_pending()?;
        add(&mut step.ops, &applied);
        self.metrics.ready = true;
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

impl Daemon {
    /// Gives the session the addresses of the pods the last run had wired and attaches
    /// their ports, before the first reconciliation (which then applies the difference).
    /// Creates the eBPF maps when the device left them for the first state to size
    /// ([`Device::size_for`]), and from then on holds every state to those sizes.
    fn create_maps(&mut self) -> anyhow::Result<()> {
        let artifact = self
            .session
            .artifact(pipec_ebpf::codegen::TARGET)
            .and_then(Result::ok)
            .and_then(|a| a.as_any().downcast_ref::<pipec_ebpf::EbpfArtifact>());
        let Some(artifact) = artifact else {
            return Ok(());
        };
        if let Some(sizes) = self.device.size_for(artifact)? {
            tracing::info!(
                larger_than_defaults = %sizes,
                "created the eBPF maps, sized for the first state"
            );
            *self.sizes.write().unwrap_or_else(|p| p.into_inner()) = sizes;
        }
        Ok(())
    }

    fn restore_attachments(&mut self) -> anyhow::Result<()> {
        let mut list: Vec<Attachment> = Vec::new();
        for a in self.attachments.values().cloned().collect::<Vec<_>>() {
            // A port that went away while the daemon was down belongs to a pod the CNI
            // deleted meanwhile (its DEL reaches the daemon later, or never): the pod
            // gets no address, so no packet can claim its identity.
            if let Err(e) = self.bind(&a) {
                tracing::warn!(pod = %format!("{}/{}", a.pod_namespace, a.pod_name), "dropping a stale CNI attachment: {e:#}");
                self.attachments.remove(&a.key());
                continue;
            }
            list.push(a);
        }
        self.write_attachments()?;
        let events: Vec<Event> = list.iter().map(|a| a.event(false)).collect();
        if !events.is_empty() {
            self.session
                .apply(&events)
                .map_err(|e| anyhow::anyhow!("restoring the CNI's attachments: {e}"))?;
        }
        Ok(())
    }

    /// Records the port of `a`'s addresses and attaches the pod programs to it.
    fn bind(&mut self, a: &Attachment) -> anyhow::Result<()> {
        let ifindex = match crate::cni::ifindex(&a.host_ifname) {
            Some(i) => i,
            None if !self.device.is_kernel() => 0,
            None => anyhow::bail!("no interface {} on this side", a.host_ifname),
        };
        self.device.attach_port(&a.host_ifname)?;
        if self.offload.attach(&a.host_ifname).is_none() {
            // Only the offload needs the VF number: the pod is wired and gets its policy
            // all the same, and its connections stay in software.
            tracing::warn!(
                port = %a.host_ifname,
                "no free VF number on the SDP PF (all {} are taken): the pod's connections stay in software",
                crate::offload::driver::SDP_VFS
            );
        }
        let mut by_addr = self.interfaces.write().unwrap_or_else(|p| p.into_inner());
        for ip in &a.ips {
            by_addr.insert(*ip, ifindex);
        }
        Ok(())
    }

    fn unbind(&mut self, a: &Attachment) {
        self.device.detach_port(&a.host_ifname);
        self.offload.detach(&a.host_ifname);
        let mut by_addr = self.interfaces.write().unwrap_or_else(|p| p.into_inner());
        for ip in &a.ips {
            by_addr.remove(ip);
        }
    }

    fn write_attachments(&self) -> anyhow::Result<()> {
        if let Some(s) = &self.state {
            let list: Vec<Attachment> = self.attachments.values().cloned().collect();
            s.write_attachments(&list)?;
        }
        Ok(())
    }

    /// A pod the CNI wired: `Ok(None)` while it cannot be applied yet (the first state is
    /// not loaded, or the pod's object has not arrived), then the generation in which its
    /// policy is in the datapath. A refusal leaves nothing behind.
    pub fn cni_add(&mut self, a: Attachment) -> anyhow::Result<Option<u64>> {
        if !self.metrics.ready {
            return Ok(None);
        }
        let key = pipec::session::ObjectKey::new("Pod", &a.pod_namespace, &a.pod_name);
        if !self.session.holds(&key) {
            return Ok(None);
        }
        if let Some(old) = self.attachments.get(&a.key()).cloned() {
            if old == a {
                return Ok(Some(self.session.generation()));
            }
            self.unbind(&old);
        }
        self.bind(&a)?;
        let seen = Instant::now();
        match self.session.apply(&[a.event(false)]) {
            Ok(c) => {
                // Known before the device applies the change, so that the pod's rules go
                // to its VF at once (`port_map`).
                self.attachments.insert(a.key(), a.clone());
                let mut step = Step::default();
                if let Err(e) = self.after_apply(&c, &mut step) {
                    self.attachments.remove(&a.key());
                    return Err(e);
                }
                self.metrics.observe_apply(seen.elapsed());
                self.write_attachments()?;
                Ok(Some(self.session.generation()))
            }
            Err(e) => {
                self.unbind(&a);
                anyhow::bail!("pod {}/{}: {e}", a.pod_namespace, a.pod_name)
            }
        }
    }

    /// A pod the CNI tore down: its endpoint and policy leave the datapath, then its port is
    /// detached. `false` when the attachment was not known (a DEL is idempotent).
    pub fn cni_del(&mut self, container_id: &str, ifname: &str) -> anyhow::Result<bool> {
        let key = (container_id.to_string(), ifname.to_string());
        let Some(a) = self.attachments.get(&key).cloned() else {
            return Ok(false);
        };
        if !self.metrics.ready {
            // Nothing is loaded yet: forgetting the attachment keeps the first load from
            // giving the pod its address.
            self.unbind(&a);
            self.attachments.remove(&key);
            self.write_attachments()?;
            return Ok(true);
        }
        // The pod's offload entries go first, before its endpoint and policy leave the
        // maps: an entry that outlived them would forward to a VF the next pod may get.
        let pod = format!("{}/{}", a.pod_namespace, a.pod_name);
        let batch = self.offload.pod_deleted(&pod);
        let removed = self.device.remove_offload(&batch.remove);
        if removed > 0 {
            tracing::info!(
                pod,
                removed,
                "removed the deleted pod's offload entries first"
            );
        }
        self.note_offload_size();
        let c = self
            .session
            .apply(&[a.event(true)])
            .map_err(|e| anyhow::anyhow!("pod {}/{}: {e}", a.pod_namespace, a.pod_name))?;
        let mut step = Step::default();
        self.after_apply(&c, &mut step)?;
        self.unbind(&a);
        self.attachments.remove(&key);
        self.write_attachments()?;
        Ok(true)
    }

    /// Drains the datapath's flow events and hands them to the `pipec observe` subscribers;
    /// the number drained. With nobody observing nothing is drained: the ring buffer fills
    /// and the kernel drops further events (the datapath never waits for it), and the
    /// daemon spends no time on them (draining under the daemon's lock slowed applies to
    /// seconds under traffic).
    pub fn publish_events(&mut self) -> anyhow::Result<usize> {
        if self.events.receiver_count() == 0 {
            return Ok(0);
        }
        let raw = self.device.drain_events()?;
        if raw.is_empty() {
            return Ok(0);
        }
        let names = crate::device::cookie_names(&self.session);
        for e in &raw {
            let _ = self.events.send(crate::observe::to_wire(e, &names));
        }
        Ok(raw.len())
    }

    /// Whether flow events can be observed (the kernel datapath).
    pub fn observable(&self) -> bool {
        self.device.is_kernel()
    }

    /// The attachment under (container id, interface), if known.
    pub fn cni_attachment(&self, container_id: &str, ifname: &str) -> Option<&Attachment> {
        self.attachments
            .get(&(container_id.to_string(), ifname.to_string()))
    }
}

impl Daemon {
    /// Sets the connection offload's settings (before the first step).
    pub fn set_offload(&mut self, settings: Settings) {
        let semantics = self.session.profile().map_or(
            ForwardSemantics::SamePf,
            crate::offload::driver::semantics_of,
        );
        self.offload = Driver::new(semantics, settings);
    }

    /// The connection offload's driver.
    pub fn offload(&self) -> &Driver {
        &self.offload
    }

    /// The local pods' IPv4 addresses with their pod and port: every attached pod whose
    /// object the session holds.
    fn pod_ports(&self) -> BTreeMap<Ipv4Addr, PodPort> {
        let held = self.attachments.values().filter(|a| {
            self.session.holds(&pipec::session::ObjectKey::new(
                "Pod",
                &a.pod_namespace,
                &a.pod_name,
            ))
        });
        crate::offload::driver::pod_ports(
            &self.offload,
            held.map(|a| {
                (
                    format!("{}/{}", a.pod_namespace, a.pod_name),
                    a.host_ifname.as_str(),
                    a.ips.as_slice(),
                )
            }),
        )
    }

    /// Where each attached pod's logical port (its endpoint number in the session's MAG)
    /// is on the device: its VF's ethdev port.
    fn port_map(&self) -> BTreeMap<u16, u16> {
        let endpoints = &self.session.lowered().state.endpoints;
        self.attachments
            .values()
            .filter_map(|a| {
                let pod = format!("{}/{}", a.pod_namespace, a.pod_name);
                let logical = u16::try_from(*endpoints.get(&pod)?).ok()?;
                Some((logical, self.offload.port_of(&a.host_ifname)?))
            })
            .collect()
    }

    /// Records the flow table's offload entries in the metrics' sizes at once (the other
    /// sizes are read at the end of each step, which reads every map; the offload changes
    /// between steps).
    fn note_offload_size(&mut self) {
        self.metrics
            .sizes
            .insert("hardware/offload".into(), self.device.offload_len());
    }

    /// The flow-table entries and counters the session's policy plan leaves free. The
    /// plan's usage counts them (its rules are the hardware artifact's, one for one); a
    /// target whose artifact does not compile holds none of them.
    fn plan_free(&self) -> (u64, u64) {
        let Some(profile) = self.session.profile() else {
            return (0, 0);
        };
        let held = matches!(self.session.artifact(&profile.name), Some(Ok(_)));
        let (entries, counters) = match (held, self.session.plan()) {
            (true, Some(plan)) => (plan.usage.entries, plan.usage.counters),
            _ => (0, 0),
        };
        crate::offload::driver::free_of(profile, entries, counters)
    }

    /// Removes the offload entries the session's new state does not allow (see
    /// [`Driver::before_change`]), before the device applies the state.
    fn offload_before_change(&mut self) {
        let free = self.plan_free();
        let pods = self.pod_ports();
        let verdicts = LazyVerdicts::new(self.session.cluster());
        let batch = self
            .offload
            .before_change(&verdicts, self.session.generation(), free, &pods);
        let removed = self.device.remove_offload(&batch.remove);
        if removed > 0 {
            tracing::info!(
                removed,
                "removed offload entries before the change reaches the device"
            );
        }
        self.note_offload_size();
    }

    /// One conntrack scan of the connection offload (one page; a tick at the end of a full
    /// pass), and its batch applied to the flow table, removals first. Nothing before the
    /// first full state, nor on the model datapath, which has no conntrack. Returns the
    /// flow-table operations made.
    pub fn offload_scan(&mut self) -> anyhow::Result<usize> {
        if !self.metrics.ready {
            return Ok(0);
        }
        let Some(profile) = self.session.profile().cloned() else {
            return Ok(0);
        };
        let pods = self.pod_ports();
        let Some(dp) = self.device.datapath() else {
            return Ok(0);
        };
        let verdicts = LazyVerdicts::new(self.session.cluster());
        let batch = self.offload.scan(
            dp,
            &pods,
            &verdicts,
            self.session.generation(),
            pipec_ebpf::sys::monotonic_ns(),
        )?;
        if batch.remove.is_empty() && batch.install.is_empty() {
            return Ok(0);
        }
        let (mut n, refused) = self.device.apply_offload(&batch, &profile);
        tracing::info!(
            removed = batch.remove.len(),
            installed = batch.install.len() - refused.len(),
            "connection offload"
        );
        for (entry, why) in &refused {
            // The connection goes back to software as a whole: its other entry, if it was
            // installed, is removed too, so no connection is half in hardware.
            tracing::warn!(origin = %entry.rule(0).origin, "the flow table refused an offload entry: {why}");
            let back = self.offload.refused(entry.tuple);
            n += self.device.remove_offload(&back.remove);
        }
        self.note_offload_size();
        Ok(n)
    }
}

fn add(total: &mut Applied, a: &Applied) {
    total.map_ops += a.map_ops;
    total.flow_ops += a.flow_ops;
    total.sa_ops += a.sa_ops;
}

fn sources_checked(sources: Sources) -> anyhow::Result<Sources> {
    if let Some(dir) = &sources.dir {
        if !dir.dir().is_dir() {
            anyhow::bail!("--manifests {} is not a directory", dir.dir().display());
        }
    }
    if sources.dir.is_none() && sources.api.is_none() {
        anyhow::bail!("no source: give --manifests DIR, --kubeconfig FILE or --in-cluster");
    }
    Ok(sources)
}
