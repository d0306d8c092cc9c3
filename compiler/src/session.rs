//! The compile session of one node: the one owner of every stage, applied incrementally.
//!
//! A [`Session`] holds what one node's pipeline is compiled from and everything compiled
//! from it: the objects keyed by kind, namespace and name ([`ObjectKey`]), the `.pipe`
//! files, the model ([`Cluster`]), the lowered MAG with its [`MagInfo`], the partition
//! [`Plan`] for the hardware profile, and one artifact per target ([`Backend`]). It has the
//! shape of rust-analyzer's `AnalysisHost::apply_change`:
//!
//! ```text
//!  Session::load(inputs) ──▶ Session ──apply(events)──▶ Changes (per target, typed, ordered)
//!                               │                         or Rejected (state unchanged)
//!                               └─ mag() / plan() / artifact(target): computed on first use
//! ```
//!
//! An [`Event`] is what a watcher sees: an object added or updated (its YAML or JSON
//! text), an object deleted (its key), a `.pipe` file written or removed. The session
//! works out the lowering [`Change`] of each object itself, lowers the batch incrementally
//! ([`lower::incremental::update_many`]), re-plans, compiles every target and diffs each
//! target's old and new artifact into that target's typed [`Operations`]. A rejected
//! batch (a manifest the model refuses, a pipeline a target cannot hold) changes nothing:
//! the session stays at its last good state and [`Rejected`] says why.
//!
//! Stages after lowering are computed on first use, so `pipec compile --emit mag` never
//! partitions and `pipec trace` never compiles a target.
//!
//! Identity numbers are stable for the session's life: after every load and apply the
//! session pins the number of each label set in use ([`IdentityPins`]); a number whose
//! label set is gone is retired and not handed out again while the session lives (so an
//! address that is still in flight in a peer's or the datapath's state is never read as
//! another workload). A restarted daemon starts from the pins it persisted.

use crate::backend::{
    builtin_profiles, Artifact, Backend, CompileInput, Operations, Profile, Unsupported,
};
use crate::diag::{self, Sink};
use crate::driver::{self, Loaded};
use crate::frontend::{self, Body, Object};
use crate::lower::{self, incremental, incremental::Change, Lowered};
use crate::mag::{self, Mag, MagInfo};
use crate::model::build::{BuildOptions, Modelled};
use crate::model::{Cluster, IdentityPins, PodId};
use crate::partition::{self, Plan};
use crate::source::{FileId, Sources};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

mod dropper;

/// What a session compiles for.
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// Model options (address ranges, cluster name).
    pub build: BuildOptions,
    /// The node (`None`: the first node, or the synthetic node that holds every pod).
    pub node: Option<String>,
    /// The hardware target the plan is for; `None` compiles no plan and gives hardware
    /// backends an empty slice.
    pub hardware: Option<Hardware>,
    /// Identity numbers to keep (what a restarted daemon persisted; empty otherwise).
    pub pins: IdentityPins,
}

/// The hardware target of a session.
#[derive(Clone, Debug)]
pub enum Hardware {
    /// A built-in profile or a `target` block of the session's `.pipe` files, by name.
    Named(String),
    /// A profile given as it is.
    Profile(Box<Profile>),
}

/// Makes a session's backends once its hardware profile is known (a `.pipe` file may
/// define it): the eBPF backend, and a hardware backend for the profile. Backends are
/// applied in the order given.
pub type BackendFactory<'a> = &'a dyn Fn(Option<&Profile>) -> Vec<Box<dyn Backend>>;

/// A factory for sessions that compile no target (the MAG and the plan only).
pub fn no_backends(_: Option<&Profile>) -> Vec<Box<dyn Backend>> {
    Vec::new()
}

/// The key of an object, as a watcher names it. Namespaced kinds without a namespace are
/// in `default`, as the API server puts them; cluster-scoped kinds have an empty one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    /// The kind (`Pod`).
    pub kind: String,
    /// The namespace, empty for cluster-scoped kinds.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// The key of a decoded object.
    pub fn of(body: &Body) -> ObjectKey {
        let meta = body.metadata();
        let kind = body.kind();
        let namespace = if cluster_scoped(kind) {
            String::new()
        } else {
            meta.namespace
                .clone()
                .unwrap_or_else(|| "default".to_string())
        };
        ObjectKey {
            kind: kind.to_string(),
            namespace,
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// A key from its parts (`namespace` is ignored for cluster-scoped kinds).
    pub fn new(kind: &str, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            kind: kind.to_string(),
            namespace: if cluster_scoped(kind) {
                String::new()
            } else {
                namespace.to_string()
            },
            name: name.to_string(),
        }
    }

    fn qualified(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Kinds without a namespace.
fn cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "Node"
            | "CiliumClusterwideNetworkPolicy"
            | "CiliumIdentity"
            | "AdminNetworkPolicy"
            | "BaselineAdminNetworkPolicy"
            | "ClusterNetworkPolicy"
    )
}

/// One change a watcher saw.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Objects added or updated: YAML or JSON text of one or more objects (a watch
    /// event's object, or a manifest file), named `source` in diagnostics.
    Upsert {
        /// A name for diagnostics (a path, or `watch:Pod/ns/name`).
        source: String,
        /// The text.
        text: String,
    },
    /// An object was deleted (deleting an object the session does not hold does nothing).
    Delete(ObjectKey),
    /// A `.pipe` file was written.
    PipeUpsert {
        /// Its path (includes are resolved relative to it).
        path: String,
        /// Its text.
        text: String,
    },
    /// A `.pipe` file was removed.
    PipeDelete {
        /// Its path.
        path: String,
    },
    /// The CNI set up (or, with no addresses, tore down) a pod's network on this node: the
    /// pod has these addresses whatever its object's status says, until the next such
    /// event. The API server learns a pod's IP only after the CNI's ADD has returned, so a
    /// daemon that must have the pod's policy in place before ADD returns takes the
    /// address from the CNI. The event may come before the pod's object; it applies when
    /// the object arrives.
    PodAddresses {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
        /// Its addresses; empty to forget them.
        ips: Vec<std::net::IpAddr>,
    },
}

/// One target's part of a change.
#[derive(Debug)]
pub struct TargetChanges {
    /// The target's name.
    pub target: String,
    /// Its operations, in order.
    pub ops: Box<dyn Operations>,
}

/// What one [`Session::apply`] changed: the MAG's entry diff and, per target in the
/// order of the session's backends (apply them in this order: the eBPF pipeline first,
/// so that hardware, a cache in front of it, never decides by a policy software does not
/// have yet), the operations that take the device from the old artifact to the new one.
#[derive(Debug)]
pub struct Changes {
    /// The session's generation after the change (load is generation 0).
    pub generation: u64,
    /// MAG entries added.
    pub mag_added: usize,
    /// MAG entries removed.
    pub mag_removed: usize,
    /// Whether lowering had to redo the whole node.
    pub full_lowering: bool,
    /// Per target, in apply order.
    pub targets: Vec<TargetChanges>,
    /// Where the time went.
    pub times: StageTimes,
}

/// The time one apply spent in each stage (for benchmarks and the daemon's metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// Decoding the events and modelling the object set.
    pub model: std::time::Duration,
    /// Incremental lowering.
    pub lower: std::time::Duration,
    /// Materialising and validating the graph.
    pub validate: std::time::Duration,
    /// Partitioning.
    pub plan: std::time::Duration,
    /// Why the partition was planned from scratch rather than from the last plan (see
    /// [`partition::incremental`] for when it must be); `None` when it was not, or when
    /// the session has no hardware target.
    pub full_plan: Option<partition::incremental::FromScratch>,
    /// Compiling every target.
    pub codegen: std::time::Duration,
    /// Diffing every target's artifacts into operations.
    pub diff: std::time::Duration,
}

impl Changes {
    /// The operations of `target`, if the session has it.
    pub fn ops(&self, target: &str) -> Option<&dyn Operations> {
        self.targets
            .iter()
            .find(|t| t.target == target)
            .map(|t| t.ops.as_ref())
    }

    /// The stable text of the change: a header per target, one operation per line.
    pub fn text(&self) -> String {
        let mut out = format!(
            "generation {}: mag +{} -{}{}\n",
            self.generation,
            self.mag_added,
            self.mag_removed,
            if self.full_lowering {
                " (full lowering)"
            } else {
                ""
            }
        );
        for t in &self.targets {
            out.push_str(&format!("target {}: {} ops\n", t.target, t.ops.len()));
            out.push_str(&t.ops.text());
        }
        out
    }
}

/// Why a batch of events was refused; the session is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The diagnostics, rendered without colour (stable codes, file:line:column).
    pub rendered: String,
    /// How many errors.
    pub errors: usize,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} error(s); the last good state stays:\n{}",
            self.errors, self.rendered
        )
    }
}

impl std::error::Error for Rejected {}

/// Why a session could not be made.
pub enum LoadError {
    /// The inputs have errors: render them with [`Loaded::emit_to_stderr`].
    Input(Box<Loaded>),
    /// Something that is not the input's fault (an unknown hardware target, a pipeline a
    /// target cannot hold).
    Other(String),
}

impl fmt::Debug for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Input(l) => write!(f, "{}", l.render()),
            LoadError::Other(e) => write!(f, "{e}"),
        }
    }
}

/// A target's compiled artifact, or why it has none.
type Compiled = Result<Box<dyn Artifact>, Unsupported>;

/// The compile session of one node (see the module documentation).
pub struct Session {
    options: SessionOptions,
    backends: Vec<Box<dyn Backend>>,
    /// Every object, by key; `None` for a session made from a model alone.
    objects: Option<BTreeMap<ObjectKey, Object>>,
    /// Pod addresses the CNI gave ([`Event::PodAddresses`]), laid over the pods' objects.
    addresses: BTreeMap<ObjectKey, Vec<std::net::IpAddr>>,
    /// The `.pipe` files, by path.
    pipe_files: BTreeMap<String, FileId>,
    loaded: Loaded,
    /// The lowered node, computed on first use (a model-only command never lowers).
    lowered: OnceLock<Lowered>,
    /// What validation proved of it, or the internal error it found.
    info: OnceLock<Result<MagInfo, String>>,
    profile: Option<Profile>,
    plan: OnceLock<Planned>,
    artifacts: Vec<OnceLock<Compiled>>,
    generation: u64,
    /// The pods whose policy rows are lowered, when not every pod's (a trace's session).
    only_pods: Option<BTreeSet<PodId>>,
    /// What modelling each unchanged pod gave, replayed by the next event's model stage
    /// instead of modelling the pod again; an event forgets the memos of what it touches.
    models: BTreeMap<ObjectKey, Modelled>,
    /// Frees what an event replaced after its operations are returned.
    dropper: dropper::Dropper,
}

/// The plan with what the next incremental plan starts from.
struct Planned {
    plan: Plan,
    basis: partition::incremental::Basis,
    /// Why it was made from scratch, or `None` when it was made from the previous plan.
    from_scratch: Option<partition::incremental::FromScratch>,
    /// Whether it is the previous plan, kept as it was ([`partition::incremental::carry`]).
    carried: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("node", &self.node())
            .field("generation", &self.generation)
            .field("targets", &self.target_names())
            .finish_non_exhaustive()
    }
}

/// The profile called `name`: a built-in, or a `target` block of the run's `.pipe` files.
pub fn resolve_profile(
    name: &str,
    program: Option<&policy_lang::resolved::Program>,
) -> Result<Profile, String> {
    if let Some(p) = builtin_profiles().into_iter().find(|p| p.name == name) {
        return Ok(p);
    }
    if let Some(program) = program {
        if let Some(tp) = program.targets.get(name) {
            return Ok(crate::model::pipe::target_profile(tp, &program.targets));
        }
    }
    Err(format!(
        "unknown target {name}; `pipec targets [INPUT...]` lists them"
    ))
}

impl Session {
    /// Reads files and directories and compiles them for one node. Warnings are in
    /// [`Session::loaded`]; errors fail the load.
    pub fn load(
        inputs: &[PathBuf],
        options: SessionOptions,
        backends: BackendFactory<'_>,
    ) -> Result<Session, LoadError> {
        let mut sources = Sources::new();
        let mut sink = Sink::default();
        let files = frontend::read_inputs(inputs, &mut sources, &mut sink);
        Session::load_files(sources, &files, sink, options, backends, true)
    }

    /// [`Session::load`] from in-memory text, one `(name, text)` per file.
    pub fn load_texts(
        texts: &[(&str, &str)],
        options: SessionOptions,
        backends: BackendFactory<'_>,
    ) -> Result<Session, LoadError> {
        let mut sources = Sources::new();
        let files: Vec<FileId> = texts.iter().map(|(n, t)| sources.add(*n, *t)).collect();
        Session::load_files(sources, &files, Sink::default(), options, backends, false)
    }

    fn load_files(
        sources: Sources,
        files: &[FileId],
        sink: Sink,
        options: SessionOptions,
        backends: BackendFactory<'_>,
        from_paths: bool,
    ) -> Result<Session, LoadError> {
        let mut objects = BTreeMap::new();
        let mut count = 0usize;
        let mut loaded = driver::load_sources_with(sources, files, &options.build, sink, |o| {
            count += 1;
            objects.insert(ObjectKey::of(&o.body), o.clone());
        });
        if from_paths {
            driver::require_something(&mut loaded, files, count);
        }
        if loaded.has_errors() {
            return Err(LoadError::Input(Box::new(loaded)));
        }
        let pipe_files = files
            .iter()
            .filter(|f| loaded.sources.name(**f).ends_with(".pipe"))
            .map(|f| (loaded.sources.name(*f).to_string(), *f))
            .collect();
        let mut session = Session::from_loaded(loaded, options, backends)?;
        session.objects = Some(objects);
        session.pipe_files = pipe_files;
        Ok(session)
    }

    /// A session over a model that is already built (conformance cases, tests, benches).
    /// It compiles every stage, but cannot take object events ([`Session::apply`] rejects
    /// them), since it does not hold the objects.
    pub fn from_loaded(
        mut loaded: Loaded,
        options: SessionOptions,
        backends: BackendFactory<'_>,
    ) -> Result<Session, LoadError> {
        let profile = match &options.hardware {
            Some(Hardware::Named(name)) => Some(
                resolve_profile(name, loaded.pipe.program.as_ref()).map_err(LoadError::Other)?,
            ),
            Some(Hardware::Profile(p)) => Some(p.as_ref().clone()),
            None => None,
        };
        let backends = backends(profile.as_ref());
        loaded.cluster.identity_pins = options.pins.clone();
        let artifacts = backends.iter().map(|_| OnceLock::new()).collect();
        Ok(Session {
            options,
            backends,
            objects: None,
            addresses: BTreeMap::new(),
            pipe_files: BTreeMap::new(),
            loaded,
            lowered: OnceLock::new(),
            info: OnceLock::new(),
            profile,
            plan: OnceLock::new(),
            artifacts,
            generation: 0,
            only_pods: None,
            models: BTreeMap::new(),
            dropper: Default::default(),
        })
    }

    /// A session over a model that lowers the policy rows of `pods` (of `cluster`) only,
    /// with every shared table whole ([`lower::cluster_to_mag_of_pods`]): what a trace of a
    /// connection between them reads, at a fraction of a large node's cost. It has no plan
    /// and no targets, and takes no events.
    pub fn from_cluster_of_pods(
        cluster: &Cluster,
        node: Option<String>,
        pods: BTreeSet<PodId>,
    ) -> Result<Session, LoadError> {
        let options = SessionOptions {
            node,
            ..SessionOptions::default()
        };
        let mut session = Session::from_cluster(cluster, options, &no_backends)?;
        session.only_pods = Some(pods);
        Ok(session)
    }

    /// A session over a model alone (see [`Session::from_loaded`]).
    pub fn from_cluster(
        cluster: &Cluster,
        options: SessionOptions,
        backends: BackendFactory<'_>,
    ) -> Result<Session, LoadError> {
        let loaded = Loaded {
            sources: Sources::new(),
            cluster: cluster.clone(),
            diags: Vec::new(),
            pipe: Default::default(),
        };
        Session::from_loaded(loaded, options, backends)
    }

    /// The inputs as read: sources, model, diagnostics (warnings) and the `.pipe` program.
    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// The model.
    pub fn cluster(&self) -> &Cluster {
        &self.loaded.cluster
    }

    /// Every file read so far (diagnostics and provenance point into these).
    pub fn sources(&self) -> &Sources {
        &self.loaded.sources
    }

    /// The node compiled for.
    pub fn node(&self) -> &str {
        match &self.options.node {
            Some(n) if self.lowered.get().is_none() => n,
            _ => &self.lowered().state.node,
        }
    }

    /// The lowered node, with its state for incremental updates.
    pub fn lowered(&self) -> &Lowered {
        self.lowered.get_or_init(|| {
            let cluster = &self.loaded.cluster;
            let node = self.options.node.as_deref();
            match &self.only_pods {
                None => lower::cluster_to_mag(cluster, node),
                Some(pods) => lower::cluster_to_mag_of_pods(cluster, node, pods),
            }
        })
    }

    /// The node's match-action graph.
    pub fn mag(&self) -> &Mag {
        self.lowered().mag()
    }

    /// What validation proved of the graph; an error is an internal compiler error
    /// (lowering made an invalid graph).
    pub fn info(&self) -> Result<&MagInfo, String> {
        self.info
            .get_or_init(|| mag::validate(self.mag()).map_err(invalid_graph))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The hardware profile, when the session has a hardware target.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// The identity numbers the session holds stable.
    pub fn pins(&self) -> &IdentityPins {
        &self.loaded.cluster.identity_pins
    }

    /// The identity numbers to persist now: those of the current state's label sets, plus
    /// the numbers retired so far (what a restarted session is given back).
    pub fn pins_now(&self) -> IdentityPins {
        pins_after(&self.loaded.cluster.identity_pins, self.lowered())
    }

    /// How many changes were applied since load.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The partition plan for the hardware target (computed on first use); `None`
    /// without a hardware target.
    pub fn plan(&self) -> Option<&Plan> {
        let profile = self.profile.as_ref()?;
        let info = self.info().ok()?;
        Some(
            &self
                .plan
                .get_or_init(|| self.make_plan(profile, info, None).0)
                .plan,
        )
    }

    /// What the last apply's incremental plan kept of the held entries it built anew
    /// (step 1b of [`partition::incremental`]); nothing when the plan was made from
    /// scratch (its basis says so) or kept as it was (its basis is the last plan's).
    pub fn plan_rebuilt(&self) -> partition::incremental::Rebuilds {
        match self.plan.get() {
            Some(p) if !p.carried => p.basis.rebuilt(),
            _ => Default::default(),
        }
    }

    /// Whether the last apply kept the plan as it was, having changed no table a plan
    /// reads ([`partition::incremental::carry`]): a Service's endpoints, say.
    pub fn plan_kept(&self) -> bool {
        self.plan.get().is_some_and(|p| p.carried)
    }

    /// The plan of the current graph: from `previous` (the last plan's basis) when the
    /// incremental partition can, else from scratch; and what is left of `previous`, to
    /// free.
    fn make_plan(
        &self,
        profile: &Profile,
        info: &MagInfo,
        previous: Option<partition::incremental::Basis>,
    ) -> (Planned, Option<partition::incremental::Basis>) {
        let hints = self.hints();
        let hints = hints.as_slice();
        // The hardware backend answers for each rule, so the plan holds nothing it refuses,
        // and nothing its profile does not declare (a backend that claims more is refused
        // the rule, with the violation in the reason, which explain shows).
        let backend = self.backends.iter().find(|b| b.name() == profile.name);
        let check = |r: &crate::backend::HwRule| match backend {
            Some(b) => crate::backend::check_declared(b.as_ref(), r).map_err(|e| match e {
                crate::backend::CheckError::Refused(u) => u,
                crate::backend::CheckError::Undeclared(v) => Unsupported::new(
                    b.name(),
                    crate::backend::Reason::NotImplemented {
                        site: format!("rule r{}", v.rule),
                        detail: v.to_string(),
                    },
                ),
            }),
            None => profile.check_rule(r),
        };
        let why = match previous {
            Some(mut previous) => {
                match partition::incremental::replan(
                    &mut previous,
                    self.mag(),
                    profile,
                    hints,
                    Some(&check),
                ) {
                    Ok((plan, basis)) => {
                        let planned = Planned {
                            plan,
                            basis,
                            from_scratch: None,
                            carried: false,
                        };
                        return (planned, Some(previous));
                    }
                    Err(why) => {
                        // Freed before planning from scratch, which needs the memory.
                        drop(previous);
                        why
                    }
                }
            }
            None => partition::incremental::FromScratch::NoBasis,
        };
        let (plan, basis) =
            partition::plan_from_scratch(self.mag(), info, profile, hints, Some(&check));
        let planned = Planned {
            plan,
            basis,
            from_scratch: Some(why),
            carried: false,
        };
        (planned, None)
    }

    /// The names of the session's targets, in apply order.
    pub fn target_names(&self) -> Vec<&str> {
        self.backends.iter().map(|b| b.name()).collect()
    }

    /// The backend of `target`.
    pub fn backend(&self, target: &str) -> Option<&dyn Backend> {
        self.backends
            .iter()
            .find(|b| b.name() == target)
            .map(|b| b.as_ref())
    }

    /// The artifact of `target` (compiled on first use), or why the target cannot hold
    /// this node's pipeline. `None` when the session has no such target.
    pub fn artifact(&self, target: &str) -> Option<Result<&dyn Artifact, &Unsupported>> {
        let i = self.backends.iter().position(|b| b.name() == target)?;
        Some(self.artifact_at(i))
    }

    fn artifact_at(&self, i: usize) -> Result<&dyn Artifact, &Unsupported> {
        self.artifacts[i]
            .get_or_init(|| self.compile_target(i))
            .as_ref()
            .map(|a| a.as_ref())
    }

    /// Compiles target `i` for the new state from its artifact of the previous one, which
    /// the graph left by `diff` ([`Backend::recompile`]); nothing when its artifact is set
    /// already (kept with the plan) or the previous state had none.
    fn recompile_target(&self, i: usize, previous: &Previous, diff: &lower::incremental::Diff) {
        if self.artifacts[i].get().is_some() {
            return;
        }
        let Some(Ok(before)) = previous.artifacts[i].get() else {
            return;
        };
        let compiled = self
            .target_input(i)
            .and_then(|input| self.backends[i].recompile(&input, before.as_ref(), diff));
        let _ = self.artifacts[i].set(compiled);
    }

    fn compile_target(&self, i: usize) -> Compiled {
        let input = self.target_input(i)?;
        self.backends[i].compile(&input)
    }

    /// What target `i` compiles from, or why the graph cannot be compiled.
    fn target_input(&self, i: usize) -> Result<CompileInput<'_>, Unsupported> {
        let info = self.info().map_err(|e| {
            Unsupported::new(
                self.backends[i].name(),
                crate::backend::Reason::NotImplemented {
                    site: "the node's graph".into(),
                    detail: e,
                },
            )
        })?;
        Ok(CompileInput {
            mag: self.mag(),
            info,
            plan: self.plan(),
            cluster: self.cluster(),
            node: self.node(),
        })
    }

    /// Applies a batch of events: the new state, and per target the operations from the
    /// old artifact to the new one. A rejected batch leaves the session as it was.
    pub fn apply(&mut self, events: &[Event]) -> Result<Changes, Rejected> {
        if self.only_pods.is_some() {
            return Err(reject_text(
                "this session lowers some pods' rows only and takes no events".into(),
            ));
        }
        // The identity numbers of the current state are pinned before anything changes.
        let pins = pins_after(&self.loaded.cluster.identity_pins, self.lowered());
        self.loaded.cluster.identity_pins = pins;
        // The operations are relative to what the devices hold: the old artifacts, compiled
        // now before the state changes. A target whose current state does not compile (a
        // malformed IPsec Secret at load) holds nothing, so its operations start from empty
        // and a corrected input can still be applied.
        for i in 0..self.backends.len() {
            let _ = self.artifact_at(i);
        }
        let Some(objects) = self.objects.as_mut() else {
            return Err(reject_text(
                "this session was made from a model and holds no objects to change".into(),
            ));
        };
        let mut times = StageTimes::default();
        let clock = std::time::Instant::now();
        let mut sources = std::mem::take(&mut self.loaded.sources);
        let staged = stage(
            &mut sources,
            objects,
            &mut self.addresses,
            &mut self.pipe_files,
            events,
        );
        let (undo, changes) = match staged {
            Ok(s) => s,
            Err(rejected) => {
                self.loaded.sources = sources;
                return Err(rejected);
            }
        };
        let pipe_files: Vec<FileId> = self.pipe_files.values().copied().collect();
        let addresses = &self.addresses;
        for key in undo.touched() {
            self.models.remove(key);
        }
        let models = &self.models;
        // New memos join only once the event is applied: a refused event puts its objects
        // back, and a memo of what it brought would stand for them.
        let mut remembered: Vec<(usize, Modelled)> = Vec::new();
        let mut next = driver::load_remembered(
            sources,
            objects
                .iter()
                .map(|(k, o)| (with_addresses(o, addresses), models.get(k))),
            &pipe_files,
            &self.options.build,
            |i, m| remembered.push((i, m)),
        );
        if next.has_errors() {
            let rejected = Rejected {
                rendered: render_errors(&next),
                errors: next.diagnostic_count().0,
            };
            self.loaded.sources = std::mem::take(&mut next.sources);
            self.undo(undo);
            return Err(rejected);
        }
        next.cluster.identity_pins = self.loaded.cluster.identity_pins.clone();
        times.model = clock.elapsed();
        let clock = std::time::Instant::now();
        let lowered = self
            .lowered
            .get_mut()
            .expect("apply lowered the node before staging");
        let diff = incremental::update_many(lowered, &self.loaded.cluster, &next.cluster, &changes);
        times.lower = clock.elapsed();
        // An incremental lowering changes entries only: the graph's structure, and so its
        // info, stay the last validated one's, and only the added entries are checked.
        let info = match (diff.full, self.info.take()) {
            (false, Some(Ok(info))) => Some((info, diff.added.as_slice())),
            _ => None,
        };
        let (previous, outcome) = self.compile_next(next, info, &diff, &mut times);
        match outcome {
            Ok(()) => {
                self.remember(remembered);
                let clock = std::time::Instant::now();
                let targets = self.diff_targets(&previous.artifacts, &previous.kept);
                times.diff = clock.elapsed();
                self.dropper.free(previous);
                self.generation += 1;
                Ok(Changes {
                    generation: self.generation,
                    mag_added: diff.added.len(),
                    mag_removed: diff.removed.len(),
                    full_lowering: diff.full,
                    targets,
                    times,
                })
            }
            Err(rejected) => {
                self.restore(previous);
                self.undo(undo);
                Err(rejected)
            }
        }
    }

    /// Keeps the memos of the objects modelled anew by an applied event, given by their
    /// positions in the object map (in key order, as the model stage read them).
    fn remember(&mut self, remembered: Vec<(usize, Modelled)>) {
        let Some(objects) = &self.objects else {
            return;
        };
        let mut keys = objects.keys().enumerate();
        for (at, memo) in remembered {
            if let Some((_, key)) = keys.find(|(i, _)| *i == at) {
                self.models.insert(key.clone(), memo);
            }
        }
    }

    /// Moves the session to `next` (whose MAG is already in `self.lowered`): validates,
    /// plans and compiles every target. `diff`: what the lowering changed in the graph.
    /// Returns the previous model, artifacts and plan (to diff against, or to restore when
    /// the outcome is a rejection).
    fn compile_next(
        &mut self,
        next: Loaded,
        info: Option<(MagInfo, &[(mag::TableId, mag::Entry)])>,
        diff: &lower::incremental::Diff,
        times: &mut StageTimes,
    ) -> (Previous, Result<(), Rejected>) {
        // The tables whose entries changed, when the lowering was incremental.
        let changed: Option<Vec<mag::TableId>> = (!diff.full).then(|| {
            let tables = diff.added.iter().chain(&diff.removed).map(|(t, _)| *t);
            tables.collect()
        });
        let changed = changed.as_deref();
        let fresh = self.backends.iter().map(|_| OnceLock::new()).collect();
        let mut previous = Previous {
            loaded: std::mem::replace(&mut self.loaded, next),
            artifacts: std::mem::replace(&mut self.artifacts, fresh),
            plan: std::mem::take(&mut self.plan),
            carried: None,
            kept: vec![false; self.backends.len()],
        };
        self.info = OnceLock::new();
        let clock = std::time::Instant::now();
        if let Some((info, added)) = info {
            let checked = mag::validate_added(self.mag(), added)
                .map(|()| info)
                .map_err(invalid_graph);
            let _ = self.info.set(checked);
        }
        if let Err(e) = self.info() {
            return (previous, Err(reject_text(e)));
        }
        times.validate = clock.elapsed();
        let clock = std::time::Instant::now();
        if let Some(carried) = self.carry_plan(&mut previous, changed) {
            previous.carried = Some(carried);
        } else if let (Some(profile), Ok(info)) = (self.profile.as_ref(), self.info()) {
            // The basis moves to the new plan; the old plan stays, to be restored if a
            // target refuses the new state (a restored plan has no basis, so the next one
            // is planned from scratch).
            let basis = previous.plan.take().map(|p| {
                let _ = previous.plan.set(Planned {
                    plan: p.plan,
                    basis: Default::default(),
                    from_scratch: p.from_scratch,
                    carried: p.carried,
                });
                p.basis
            });
            let (planned, spent) = self.make_plan(profile, info, basis);
            times.full_plan = planned.from_scratch;
            let _ = self.plan.set(planned);
            // The last basis, spent by the re-plan, was a twentieth of a pod event's plan
            // to free in line.
            if let Some(spent) = spent {
                self.dropper.free(spent);
            }
        }
        times.plan = clock.elapsed();
        let clock = std::time::Instant::now();
        if previous.carried.is_some() {
            self.keep_plan_artifacts(&mut previous);
        }
        for i in 0..self.backends.len() {
            if !diff.full {
                self.recompile_target(i, &previous, diff);
            }
            if let Err(e) = self.artifact_at(i) {
                let text = format!(
                    "target {} cannot hold the new pipeline: {}",
                    self.backends[i].name(),
                    e.reason
                );
                return (previous, Err(reject_text(text)));
            }
        }
        times.codegen = clock.elapsed();
        self.loaded.cluster.identity_pins =
            pins_after(&self.loaded.cluster.identity_pins, self.lowered());
        (previous, Ok(()))
    }

    /// Keeps the previous plan for the new graph when the event changed no table a plan
    /// reads ([`partition::incremental::carry`]); returns what to put back on a rejection.
    fn carry_plan(
        &mut self,
        previous: &mut Previous,
        changed: Option<&[mag::TableId]>,
    ) -> Option<partition::incremental::Carried> {
        let changed = changed?;
        if self.profile.is_none() || self.info().is_err() || !self.hints().is_empty() {
            return None;
        }
        let mut planned = previous.plan.take()?;
        match partition::incremental::carry(&mut planned.plan, self.mag(), changed) {
            Some(carried) => {
                planned.from_scratch = None;
                planned.carried = true;
                let _ = self.plan.set(planned);
                Some(carried)
            }
            None => {
                let _ = previous.plan.set(planned);
                None
            }
        }
    }

    /// With the plan kept, the artifacts of the targets that read nothing but the plan
    /// ([`crate::backend::Backend::reads_only_the_plan`]) stay as they are: they move to the new state,
    /// and their operations are none. (On a rejection their slots are compiled again from
    /// the restored plan, which gives the same artifacts.)
    fn keep_plan_artifacts(&mut self, previous: &mut Previous) {
        for (i, b) in self.backends.iter().enumerate() {
            if b.reads_only_the_plan() && previous.artifacts[i].get().is_some() {
                self.artifacts[i] = std::mem::take(&mut previous.artifacts[i]);
                previous.kept[i] = true;
            }
        }
    }

    /// The placement hints of the node's `.pipe` program.
    fn hints(&self) -> Vec<partition::PlacementHint> {
        self.loaded
            .pipe
            .program
            .as_ref()
            .map(crate::model::pipe::placement_hints)
            .unwrap_or_default()
    }

    /// Per target, the operations from its artifact in `old` to its current one; a target
    /// whose artifact was `kept` has none to do (its diff with itself).
    fn diff_targets(&self, old: &[OnceLock<Compiled>], kept: &[bool]) -> Vec<TargetChanges> {
        self.backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let after = self
                    .artifact_at(i)
                    .expect("compile_next compiled every target");
                let before = match kept[i] {
                    true => Some(after),
                    false => old[i]
                        .get()
                        .and_then(|r| r.as_ref().ok())
                        .map(|a| a.as_ref()),
                };
                TargetChanges {
                    target: b.name().to_string(),
                    ops: b.diff(before, after),
                }
            })
            .collect()
    }

    /// Puts back the previous model and stages after a failed compile; the MAG is
    /// lowered again from the previous model (a rare path: only an internal error or a
    /// target refusing the new pipeline gets here).
    fn restore(&mut self, old: Previous) {
        let sources = std::mem::take(&mut self.loaded.sources);
        self.loaded = old.loaded;
        self.loaded.sources = sources;
        self.artifacts = old.artifacts;
        match old.carried {
            // The plan was carried to the refused state: it is the previous one with some
            // tables' placements replaced, which go back.
            Some(carried) => {
                let mut planned = self.plan.take().expect("a carried plan is set");
                carried.undo(&mut planned.plan);
                self.plan = OnceLock::from(planned);
            }
            None => self.plan = old.plan,
        }
        let node = self.node().to_string();
        self.lowered = OnceLock::from(lower::cluster_to_mag(&self.loaded.cluster, Some(&node)));
        self.info = OnceLock::new();
    }

    fn undo(&mut self, undo: Undo) {
        let objects = self.objects.as_mut().expect("apply checked it has objects");
        undo.revert(objects, &mut self.addresses, &mut self.pipe_files);
    }

    /// The pod addresses the CNI gave, by pod.
    pub fn pod_addresses(&self) -> &BTreeMap<ObjectKey, Vec<std::net::IpAddr>> {
        &self.addresses
    }

    /// Whether the session holds the object `key`.
    pub fn holds(&self, key: &ObjectKey) -> bool {
        self.objects.as_ref().is_some_and(|o| o.contains_key(key))
    }

    /// The objects the session holds, in key order (`None` for a session over a model).
    pub fn objects(&self) -> Option<impl Iterator<Item = &ObjectKey>> {
        self.objects.as_ref().map(|o| o.keys())
    }

    /// The options the session was made with.
    pub fn options(&self) -> &SessionOptions {
        &self.options
    }
}

/// The state a failed apply restores.
struct Previous {
    loaded: Loaded,
    artifacts: Vec<OnceLock<Compiled>>,
    plan: OnceLock<Planned>,
    /// What carrying the plan to the new state replaced in it (the plan itself then moved
    /// to the new state).
    carried: Option<partition::incremental::Carried>,
    /// Per target, whether its artifact moved to the new state as it was (the plan kept;
    /// its slot in `artifacts` is empty).
    kept: Vec<bool>,
}

/// How to take back the object and `.pipe` changes of a batch: each key's previous value,
/// in the order the changes were made.
#[derive(Default)]
struct Undo {
    objects: Vec<(ObjectKey, Option<Object>)>,
    addresses: Vec<(ObjectKey, Option<Vec<std::net::IpAddr>>)>,
    pipe: Vec<(String, Option<FileId>)>,
}

impl Undo {
    /// The keys of the objects and pod addresses changed.
    fn touched(&self) -> impl Iterator<Item = &ObjectKey> {
        let objects = self.objects.iter().map(|(k, _)| k);
        objects.chain(self.addresses.iter().map(|(k, _)| k))
    }

    /// Puts every changed key back, the last change first.
    fn revert(
        self,
        objects: &mut BTreeMap<ObjectKey, Object>,
        addresses: &mut BTreeMap<ObjectKey, Vec<std::net::IpAddr>>,
        pipe_files: &mut BTreeMap<String, FileId>,
    ) {
        for (key, old) in self.addresses.into_iter().rev() {
            match old {
                Some(a) => addresses.insert(key, a),
                None => addresses.remove(&key),
            };
        }
        for (key, old) in self.objects.into_iter().rev() {
            match old {
                Some(o) => objects.insert(key, o),
                None => objects.remove(&key),
            };
        }
        for (path, old) in self.pipe.into_iter().rev() {
            match old {
                Some(f) => pipe_files.insert(path, f),
                None => pipe_files.remove(&path),
            };
        }
    }
}

/// Applies a batch's events to the object and `.pipe` maps (decoding new text into
/// `sources`), and works out the lowering change. Errors in the new text reject the
/// batch, with the maps already put back.
fn stage(
    sources: &mut Sources,
    objects: &mut BTreeMap<ObjectKey, Object>,
    addresses: &mut BTreeMap<ObjectKey, Vec<std::net::IpAddr>>,
    pipe_files: &mut BTreeMap<String, FileId>,
    events: &[Event],
) -> Result<(Undo, Vec<Change>), Rejected> {
    let mut undo = Undo::default();
    let mut sink = Sink::default();
    let mut touched: Vec<(ObjectKey, Option<String>)> = Vec::new();
    for event in events {
        match event {
            Event::Upsert { source, text } => {
                let file = sources.add(source.clone(), text.clone());
                let before = sink.diags.len();
                let mut decoded = Vec::new();
                frontend::for_each_object(sources, &[file], &mut sink, |o| decoded.push(o));
                if sink.diags[before..].iter().any(diag::Diagnostic::is_error) {
                    continue;
                }
                for o in decoded {
                    let key = ObjectKey::of(&o.body);
                    touched.push((key.clone(), service_of(&o.body)));
                    undo.objects.push((key.clone(), objects.insert(key, o)));
                }
            }
            Event::Delete(key) => {
                let old = objects.remove(key);
                touched.push((key.clone(), old.as_ref().and_then(|o| service_of(&o.body))));
                undo.objects.push((key.clone(), old));
            }
            Event::PipeUpsert { path, text } => {
                let file = sources.add(path.clone(), text.clone());
                undo.pipe
                    .push((path.clone(), pipe_files.insert(path.clone(), file)));
                touched.push((ObjectKey::new("pipe", "", path), None));
            }
            Event::PipeDelete { path } => {
                undo.pipe.push((path.clone(), pipe_files.remove(path)));
                touched.push((ObjectKey::new("pipe", "", path), None));
            }
            Event::PodAddresses {
                namespace,
                name,
                ips,
            } => {
                let key = ObjectKey::new("Pod", namespace, name);
                let old = if ips.is_empty() {
                    addresses.remove(&key)
                } else {
                    addresses.insert(key.clone(), ips.clone())
                };
                undo.addresses.push((key.clone(), old));
                touched.push((key, None));
            }
        }
    }
    let errors = sink.diags.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        let rendered = diag::emit_to_string(sources, &sink.diags);
        undo.revert(objects, addresses, pipe_files);
        return Err(Rejected { rendered, errors });
    }
    Ok((undo, change_of(&touched)))
}

/// The object with the CNI's addresses laid over its status, when it is a pod that has some;
/// else the object itself, borrowed (cloning every object of the node for each event cost
/// half of the model stage).
fn with_addresses<'o>(
    o: &'o Object,
    addresses: &BTreeMap<ObjectKey, Vec<std::net::IpAddr>>,
) -> Cow<'o, Object> {
    let Body::Pod(pod) = &o.body else {
        return Cow::Borrowed(o);
    };
    if addresses.is_empty() {
        return Cow::Borrowed(o);
    }
    let Some(ips) = addresses.get(&ObjectKey::of(&o.body)) else {
        return Cow::Borrowed(o);
    };
    let mut pod = pod.clone();
    let status = pod.status.get_or_insert_with(Default::default);
    status.pod_ip = ips.first().map(ToString::to_string);
    status.pod_ips = Some(
        ips.iter()
            .map(|ip| k8s_openapi::api::core::v1::PodIP { ip: ip.to_string() })
            .collect(),
    );
    Cow::Owned(Object {
        span: o.span,
        body: Body::Pod(pod),
    })
}

/// The keys of the objects in one manifest text, as the session would store them: what a
/// file source needs to turn "this file now reads so" into deletes of the objects that
/// left it. Errors are rendered diagnostics.
pub fn object_keys(source: &str, text: &str) -> Result<Vec<ObjectKey>, String> {
    let mut sources = Sources::new();
    let file = sources.add(source, text);
    let mut sink = Sink::default();
    let mut keys = Vec::new();
    frontend::for_each_object(&sources, &[file], &mut sink, |o| {
        keys.push(ObjectKey::of(&o.body))
    });
    if sink.diags.iter().any(diag::Diagnostic::is_error) {
        return Err(diag::emit_to_string(&sources, &sink.diags));
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The service an EndpointSlice or Endpoints object belongs to (`namespace/name`).
fn service_of(body: &Body) -> Option<String> {
    let m = body.metadata();
    let ns = m.namespace.clone().unwrap_or_else(|| "default".into());
    match body {
        Body::EndpointSlice(_) => m
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .map(|s| format!("{ns}/{s}")),
        Body::Endpoints(_) => m.name.as_ref().map(|n| format!("{ns}/{n}")),
        _ => None,
    }
}

/// The lowering changes of a batch, one per object: a pod's, a Service's (or its
/// EndpointSlice's), a NetworkPolicy's or a CiliumNetworkPolicy's, which lowering applies
/// to the groups they touch; anything else (other policies, namespaces, nodes, workloads,
/// identities, `.pipe` files) lowers the node again and diffs by group.
fn change_of(touched: &[(ObjectKey, Option<String>)]) -> Vec<Change> {
    touched
        .iter()
        .map(|(key, service)| match key.kind.as_str() {
            "Pod" => Change::Pod(key.qualified()),
            "Service" => Change::Service(key.qualified()),
            "EndpointSlice" | "Endpoints" => match service {
                Some(s) => Change::Service(s.clone()),
                None => Change::Policy,
            },
            "NetworkPolicy" => Change::NetworkPolicy(key.qualified()),
            "CiliumNetworkPolicy" => Change::CiliumNetworkPolicy(key.qualified()),
            "Namespace" => Change::Namespace(key.name.clone()),
            _ => Change::Policy,
        })
        .collect()
}

/// The pins after a lowering: every label set in use keeps (or gets) its number; a pinned
/// number no label set has any more is retired.
fn pins_after(old: &IdentityPins, lowered: &Lowered) -> IdentityPins {
    let numbers: BTreeMap<_, _> = lowered
        .state
        .label_index
        .iter()
        .map(|(labels, (id, _))| (labels.clone(), id.0))
        .collect();
    let mut retired = old.retired.clone();
    let in_use: std::collections::BTreeSet<u32> = numbers.values().copied().collect();
    retired.extend(old.numbers.values().filter(|n| !in_use.contains(n)));
    IdentityPins { numbers, retired }
}

/// The text of a validation failure: lowering made a graph validation refuses, which is a
/// bug in pipec, not in the input.
fn invalid_graph(e: impl fmt::Display) -> String {
    format!("internal compiler error: lowering made an invalid graph: {e}")
}

fn reject_text(text: String) -> Rejected {
    Rejected {
        rendered: format!("error: {text}\n"),
        errors: 1,
    }
}

/// The errors of a failed model, rendered.
fn render_errors(loaded: &Loaded) -> String {
    let errors: Vec<_> = loaded
        .diags
        .iter()
        .filter(|d| d.is_error())
        .cloned()
        .collect();
    let mut out = diag::emit_to_string(&loaded.sources, &errors);
    let pipe: Vec<_> = loaded
        .pipe
        .diags
        .iter()
        .filter(|d| d.is_error())
        .cloned()
        .collect();
    out.push_str(&policy_lang::render(&pipe, loaded.sources.files()));
    out
}
