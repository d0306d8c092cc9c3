//! The daemon's state and its one loop step: look at the sources, apply what changed to the
//! session, apply the session's operations to the device, record what happened.

use crate::device::{Applied, Device};
use crate::metrics::Metrics;
use crate::source::{FileChange, ManifestDir};
use crate::state::StateDir;
use pipec::backend::{Backend, Profile};
use pipec::model::IdentityPins;
use pipec::session::{Event, Hardware, Session, SessionOptions};
use std::time::Instant;

/// The backends pipecd compiles for, in apply order: the eBPF pipeline first, then the
/// hardware flow table, then the CPT's SAs (the same set as `pipec compile`).
pub fn backends(hardware: Option<&Profile>) -> Vec<Box<dyn Backend>> {
    let mut out: Vec<Box<dyn Backend>> = vec![Box::new(pipec_ebpf::EbpfBackend::default())];
    if let Some(p) = hardware {
        out.push(Box::new(pipec_rte_flow::RteFlowBackend::new(p.clone())));
    }
    out.push(Box::new(pipec_cpt::CptBackend::default()));
    out
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
}

/// The daemon.
pub struct Daemon {
    node: String,
    session: Session,
    options: SessionOptions,
    source: ManifestDir,
    device: Device,
    state: Option<StateDir>,
    /// Metrics and status, read by the HTTP endpoints.
    pub metrics: Metrics,
}

impl Daemon {
    /// A daemon for `node` over `source`, with identity numbers from `state` (if any).
    /// Nothing is loaded yet: the first [`Daemon::step`] loads the sources.
    pub fn new(
        node: &str,
        source: ManifestDir,
        device: Device,
        state: Option<StateDir>,
    ) -> anyhow::Result<Daemon> {
        let pins = match &state {
            Some(s) => s.read_pins()?,
            None => IdentityPins::default(),
        };
        let options = SessionOptions {
            node: Some(node.to_string()),
            hardware: Some(Hardware::Named("octeon-cn10k".into())),
            pins,
            ..SessionOptions::default()
        };
        let session = Session::load_texts(&[], options.clone(), &backends)
            .map_err(|e| anyhow::anyhow!("starting the session: {e}"))?;
        Ok(Daemon {
            node: node.to_string(),
            session,
            options,
            source: source_checked(source)?,
            device,
            state,
            metrics: Metrics::default(),
        })
    }

    /// Loads the first full state from the files that load, with the identity numbers of
    /// the last run (a load, not an apply onto an empty session, so that numbers pinned by
    /// the last run are given to their label sets again rather than retired). When the files
    /// do not load together, they are taken one by one and the ones that break the load are
    /// refused.
    fn first_load(&mut self, changes: Vec<FileChange>, step: &mut Step) -> anyhow::Result<()> {
        let load = |files: &[&FileChange]| {
            let texts: Vec<(String, &str)> = files
                .iter()
                .filter_map(|c| Some((c.path.display().to_string(), c.text()?)))
                .collect();
            let refs: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (n.as_str(), *t)).collect();
            Session::load_texts(&refs, self.options.clone(), &backends)
        };
        let all: Vec<&FileChange> = changes.iter().collect();
        let session = match load(&all) {
            Ok(s) => s,
            Err(_) => {
                let mut kept: Vec<&FileChange> = Vec::new();
                for c in &changes {
                    kept.push(c);
                    if let Err(e) = load(&kept) {
                        kept.pop();
                        let why = e.to_string();
                        tracing::warn!(file = %c.path.display(), "not loaded:\n{why}");
                        self.metrics.bad_file(&c.path, &why);
                        self.source.refused(c);
                        step.refused_files += 1;
                    }
                }
                load(&kept).map_err(|e| anyhow::anyhow!("{e}"))?
            }
        };
        self.session = session;
        self.metrics.events += changes.len() as u64;
        for change in changes {
            if self.metrics.bad_files.contains_key(&change.path) {
                continue;
            }
            self.source.applied(change);
            step.applied_files += 1;
        }
        Ok(())
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
        let scan = self.source.scan()?;
        for bad in &scan.bad {
            tracing::warn!(file = %bad.path.display(), "not applied, the last good state stays:\n{}", bad.message);
            self.metrics.bad_file(&bad.path, &bad.message);
            step.refused_files += 1;
        }
        if !self.metrics.ready {
            self.first_load(scan.changes, &mut step)?;
            self.first_apply(&mut step)?;
        } else if !scan.changes.is_empty() {
            self.apply_changes(scan.changes, &mut step)?;
        }
        let expired = self.device.expire(Instant::now());
        if expired > 0 {
            tracing::info!(expired, "removed inbound SAs after the rotation window");
        }
        if step.applied_files > 0 {
            self.metrics.observe_apply(since.elapsed());
        }
        self.metrics.sizes = self.device.sizes()?;
        self.metrics.generation = self.session.generation();
        Ok(step)
    }

    /// Applies the changes as one batch; when the session refuses the batch, file by file,
    /// so that one bad file does not hold back the others.
    fn apply_changes(&mut self, changes: Vec<FileChange>, step: &mut Step) -> anyhow::Result<()> {
        let events: Vec<Event> = changes.iter().flat_map(|c| c.events.clone()).collect();
        self.metrics.events += events.len() as u64;
        match self.session.apply(&events) {
            Ok(c) => {
                self.after_apply(&c, step)?;
                for change in changes {
                    self.metrics.good_file(&change.path);
                    self.source.applied(change);
                    step.applied_files += 1;
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
            match self.session.apply(&change.events) {
                Ok(c) => {
                    self.after_apply(&c, step)?;
                    self.metrics.good_file(&change.path);
                    self.source.applied(change);
                    step.applied_files += 1;
                }
                Err(e) => self.refuse(&change, &e.to_string(), step),
            }
        }
        Ok(())
    }

    fn refuse(&mut self, change: &FileChange, why: &str, step: &mut Step) {
        tracing::warn!(file = %change.path.display(), "change refused, the last good state stays:\n{why}");
        self.metrics.bad_file(&change.path, why);
        self.source.refused(change);
        step.refused_files += 1;
    }

    fn after_apply(
        &mut self,
        changes: &pipec::session::Changes,
        step: &mut Step,
    ) -> anyhow::Result<()> {
        let applied = self.device.apply(changes)?;
        tracing::info!(
            generation = changes.generation,
            map_ops = applied.map_ops,
            flow_ops = applied.flow_ops,
            sa_ops = applied.sa_ops,
            "applied"
        );
        add(&mut step.ops, &applied);
        self.write_pins()
    }

    fn write_pins(&self) -> anyhow::Result<()> {
        if let Some(s) = &self.state {
            s.write_pins(&self.session.pins_now())?;
        }
        Ok(())
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
        let applied = self.device.reconcile(&self.session)?;
        tracing::info!(
            map_ops = applied.map_ops,
            flow_ops = applied.flow_ops,
            sa_ops = applied.sa_ops,
            "reconciled the device with the first full state (only the difference applied)"
        );
        self.metrics.reconciled = Some(applied.clone());
        self.write_pins()?;
        add(&mut step.ops, &applied);
        self.metrics.ready = true;
        Ok(())
    }
}

fn add(total: &mut Applied, a: &Applied) {
    total.map_ops += a.map_ops;
    total.flow_ops += a.flow_ops;
    total.sa_ops += a.sa_ops;
}

fn source_checked(source: ManifestDir) -> anyhow::Result<ManifestDir> {
    if !source.dir().is_dir() {
        anyhow::bail!("--manifests {} is not a directory", source.dir().display());
    }
    Ok(source)
}
