//! Engines: the ways pipec judges a probe (a connection attempt in a cluster), and the one
//! trait they share, so that conformance cases, `pipec trace` and the differential tests run
//! the same probes through each of them.
//!
//! - [`reference`]: the reference semantics, the judge;
//! - [`mag`]: the lowered MAG of each node the connection crosses, through the interpreter;
//! - [`hw`]: each node's hardware slice ([`hwmodel`], the flow table) in front of its MAG.
//!
//! [`offload`] is no engine: it answers whether pipecd's connection offload can finish a
//! connection's later packets in hardware, from the same port model.
//!
//! The eBPF engine (`pipec_ebpf::EbpfEngine`) implements the same trait in its crate, and the
//! CLI adds it. This module sits above the stages (it drives them through a
//! [`crate::session::Session`]) and below [`crate::conformance`] and [`crate::trace`], so
//! that `lower` and `partition` stay pure stages that import no engine.

pub mod hw;
pub mod hwmodel;
pub mod mag;
pub mod offload;
pub mod reference;

pub use reference::Reference;

use crate::model::Cluster;
use crate::semantics::Probe;

/// An engine's answer for one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineVerdict {
    /// `Some(true)` allowed, `Some(false)` denied, `None` when the engine cannot give one
    /// answer (the reference, when service candidates disagree).
    pub allowed: Option<bool>,
    /// A few words on why.
    pub reason: String,
}

/// An engine that judges probes: the reference semantics, the MAG interpreter (`mag`), the
/// hardware model (`hw`); eBPF (`ebpf`) plugs in the same way from its crate.
pub trait Engine {
    /// The engine's name, as `--engine` takes it.
    fn name(&self) -> &'static str;
    /// Prepares the engine for one cluster (compiles it, for the engines that compile).
    fn prepare<'c>(&self, cluster: &'c Cluster) -> Result<Box<dyn Evaluator + 'c>, String>;
}

/// An engine prepared for one cluster.
pub trait Evaluator {
    /// Judges one probe.
    fn evaluate(&self, probe: &Probe) -> EngineVerdict;
    /// Why this engine cannot judge `probe` at all (a backend that renders no Services,
    /// say), or `None`. Such a probe is reported as skipped with the reason, never counted
    /// as passed; the default judges every probe.
    fn cannot_judge(&self, probe: &Probe) -> Option<String> {
        let _ = probe;
        None
    }
}

/// Engines that exist in the design but are not built yet.
pub const PLANNED_ENGINES: &[&str] = &["ebpf"];

/// Every engine available in this build.
pub fn available_engines() -> Vec<Box<dyn Engine>> {
    vec![
        Box::new(Reference),
        Box::new(mag::MagEngine),
        Box::new(hw::HwEngine::default()),
    ]
}

/// The engine called `name`.
pub fn engine_by_name(name: &str) -> Result<Box<dyn Engine>, String> {
    if let Some(e) = available_engines().into_iter().find(|e| e.name() == name) {
        return Ok(e);
    }
    let available: Vec<&str> = available_engines().iter().map(|e| e.name()).collect();
    if PLANNED_ENGINES.contains(&name) {
        Err(format!(
            "engine `{name}` is not built yet; available: {}",
            available.join(", ")
        ))
    } else {
        Err(format!(
            "unknown engine `{name}`; available: {}",
            available.join(", ")
        ))
    }
}
