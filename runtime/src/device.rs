//! Where the session's operations go: the node's datapath.
//!
//! - `model` ([`Device::model`]): an in-memory mirror of the eBPF maps, the hardware flow
//!   table and the CPT's SAs; runs without root.
//! - `kernel` ([`Device::kernel`]): the real eBPF programs and maps, pinned in bpffs so that
//!   they (and the traffic they carry) outlive the daemon; the hardware flow table and the
//!   SAs stay models, as there is no OCTEON here.
//! - With feature `dpdk` and `--hw-port` ([`Device::with_hw_port`]), either datapath sends
//!   the flow table's operations to a real DPDK ethdev port through `rte_flow` instead of the
//!   model. A rule the port refuses (ENOSPC, EINVAL, ENOSYS, ...) is recorded as refused and
//!   is not in the flow table: its packets are decided by the eBPF pipeline, which always
//!   holds the whole pipeline, so a refusal opens no window. The rest of the batch is
//!   applied, and the flow table lists exactly the rules the port holds a handle for.
//!
//! On start the device is reconciled: what it holds (nothing for the model, the pinned maps
//! for the kernel) is diffed against the session's artifacts and only the difference is
//! applied. Nothing is ever flushed.

use crate::offload::{Batch, Entry};
use crate::state::PendingRemoval;
use pipec::session::{Changes, Session};
use pipec_cpt::{IpsecArtifact, SaOp, SaOps};
use pipec_ebpf::artifact::{diff_entries, MapEntries, MapName, MapOp};
use pipec_ebpf::{Attachment, Datapath, EbpfArtifact, MapOps, MapSizes, Program};
use pipec_rte_flow::{FlowOp, FlowOps, RteFlowArtifact};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
#[cfg(feature = "dpdk")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How many operations an apply carried out, per target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// eBPF map upserts and deletes.
    pub map_ops: usize,
    /// Flow-table creates and destroys.
    pub flow_ops: usize,
    /// SA operations.
    pub sa_ops: usize,
}

/// A flow rule the hardware port refused; its packets are decided in eBPF.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// The plan rule's id (`pipec explain` names rules by it).
    pub rule: u32,
    /// Where the rule came from.
    pub origin: String,
    /// The device port it was to be created on (none: its pod has no VF yet).
    pub device_port: Option<u16>,
    /// The errno's symbolic name (`ENOSPC`), the stable code of the refusal.
    pub errno: String,
    /// The driver's message.
    pub message: String,
}

/// The node's datapath.
pub struct Device {
    /// The kernel datapath, for `--datapath kernel`.
    kernel: Option<Datapath>,
    /// Keeps the wire attachments alive (dropping one detaches it).
    _attachments: Vec<Attachment>,
    /// The programs attached to each pod's port, by interface name.
    ports: BTreeMap<String, Vec<Attachment>>,
    /// The eBPF maps, for `--datapath model`.
    maps: MapEntries,
    /// The flow table: the keys of the rules it holds (with a real port, exactly those the
    /// port holds a handle for).
    flows: BTreeSet<String>,
    /// The real flow table (`--hw-port`), when there is one.
    #[cfg(feature = "dpdk")]
    hw: Option<crate::hw::HwPort>,
    /// The plan rules the port refused, by rule key: not in `flows`, decided in eBPF.
    refused: BTreeMap<String, Refusal>,
    /// Refusals (and failed destroys) since the start, by errno name, for the metrics.
    refusals: BTreeMap<String, u64>,
    /// Rules the state no longer has but whose destroy the port refused: the port still
    /// holds them (they are in `flows`), and each later flow batch tries again, as no
    /// later operation of the session names them.
    undestroyed: BTreeSet<String>,
    /// Where the plan's logical ports are on the device: a local pod's endpoint number (the
    /// port the plan puts its egress rules on) → the ethdev port of the pod's VF. The
    /// uplink (0) and the SDP PF (1) are the same in both numberings.
    port_map: BTreeMap<u16, u16>,
    /// The plan rules the table holds or refused, by key: what a remap creates again on a
    /// pod's new port.
    specs: BTreeMap<String, pipec_rte_flow::EmittedRule>,
    /// The flow table's connection-offload entries (exact 5-tuples at level 0, kept apart
    /// from the policy plan's rules, which a reconciliation replaces as a whole), each with
    /// its rule key.
    offload: BTreeMap<Entry, String>,
    /// The CPT's SAs: (direction, peer, spi).
    sas: BTreeSet<(String, String, u32)>,
    /// Inbound SAs to remove once their rotation window has passed: when (monotonic, for
    /// this process), when (wall-clock milliseconds, for the state file and the next
    /// process), and which.
    pending: Vec<(Instant, u64, (String, String, u32))>,
    /// The sizes of the eBPF maps: what the kernel created them with, or for the model
    /// the ones asked for.
    sizes: MapSizes,
    /// Whether the kernel's maps are known to hold the session's eBPF artifact: set by a
    /// reconcile, kept by each change applied in full, lost by a failed apply.
    ebpf_synced: bool,
    /// The eBPF maps not created yet, to be sized for the first state ([`Device::size_for`]).
    unsized_maps: Option<Unsized>,
}

/// A datapath whose eBPF maps are created with the first state, sized for it: no size
/// was asked for, and no earlier run pinned maps (which keep their sizes).
#[derive(Clone, Debug)]
enum Unsized {
    /// The model's.
    Model,
    /// The kernel's, pinned in `pin_dir`, with the wire programs attached to `wire`.
    Kernel {
        pin_dir: PathBuf,
        wire: Option<String>,
    },
}

impl Device {
    /// Attaches the pod programs to a pod's port (kernel datapath; the model has no ports).
    /// Until the pod's endpoint is in the maps, both programs drop its packets, so a pod
    /// is attached before its policy is applied and is never reachable without it.
    pub fn attach_port(&mut self, iface: &str) -> anyhow::Result<()> {
        if let Some(Unsized::Kernel { .. }) = self.unsized_maps {
            anyhow::bail!(
                "the eBPF maps are created with the first full state, which is not applied yet"
            );
        }
        let Some(dp) = self.kernel.as_mut() else {
            return Ok(());
        };
        if self.ports.contains_key(iface) {
            return Ok(());
        }
        let mut links = Vec::new();
        for program in [Program::FromPod, Program::ToPod] {
            links.push(attach_replacing(dp, program, iface)?);
        }
        self.ports.insert(iface.to_string(), links);
        Ok(())
    }

    /// The flow events the datapath recorded since the last call (none for the model).
    pub fn drain_events(&mut self) -> anyhow::Result<Vec<pipec_ebpf_common::FlowEvent>> {
        match self.kernel.as_mut() {
            // Bounded, so that a flood of events never holds the daemon here.
            Some(dp) => Ok(dp.events_up_to(crate::observe::BACKLOG)?),
            None => Ok(Vec::new()),
        }
    }

    /// Whether this is the kernel datapath (its maps created, or to be created with the
    /// first state).
    pub fn is_kernel(&self) -> bool {
        self.kernel.is_some() || matches!(self.unsized_maps, Some(Unsized::Kernel { .. }))
    }

    /// Detaches the pod programs from a port (nothing when none are attached).
    pub fn detach_port(&mut self, iface: &str) {
        for link in self.ports.remove(iface).unwrap_or_default() {
            link.detach();
        }
    }

    /// The in-memory device.
    pub fn model() -> Device {
        Device {
            kernel: None,
            _attachments: Vec::new(),
            ports: BTreeMap::new(),
            maps: MapEntries::new(),
            flows: BTreeSet::new(),
            #[cfg(feature = "dpdk")]
            hw: None,
            refused: BTreeMap::new(),
            refusals: BTreeMap::new(),
            undestroyed: BTreeSet::new(),
            port_map: BTreeMap::new(),
            specs: BTreeMap::new(),
            offload: BTreeMap::new(),
            sas: BTreeSet::new(),
            pending: Vec::new(),
            sizes: MapSizes::default(),
            ebpf_synced: false,
            unsized_maps: None,
        }
    }

    /// The model with eBPF maps sized for the first state ([`Device::size_for`]).
    pub fn model_sized_by_state() -> Device {
        Device {
            unsized_maps: Some(Unsized::Model),
            sizes: MapSizes::ceilings(),
            ..Device::model()
        }
    }

    /// The kernel datapath of [`Device::kernel`] with the maps sized for the first state
    /// ([`Device::size_for`]) when `pin_dir` holds none yet; maps an earlier run pinned are
    /// reused, with their sizes.
    pub fn kernel_sized_by_state(pin_dir: &Path, wire: Option<&str>) -> anyhow::Result<Device> {
        if Datapath::pinned_in(pin_dir) {
            return Device::kernel(pin_dir, wire, &MapSizes::default());
        }
        Ok(Device {
            unsized_maps: Some(Unsized::Kernel {
                pin_dir: pin_dir.to_path_buf(),
                wire: wire.map(str::to_string),
            }),
            sizes: MapSizes::ceilings(),
            ..Device::model()
        })
    }

    /// Creates the eBPF maps not created yet, sized for `artifact` (the first state): each
    /// map's default, or a quarter more than the state needs rounded up to a power of two
    /// ([`MapSizes::to_hold`]). Returns the sizes when it created them; `None` when the
    /// maps existed already.
    pub fn size_for(&mut self, artifact: &EbpfArtifact) -> anyhow::Result<Option<MapSizes>> {
        let Some(how) = self.unsized_maps.take() else {
            return Ok(None);
        };
        let sizes = MapSizes::to_hold(artifact);
        match &how {
            Unsized::Model => self.sizes = sizes.clone(),
            Unsized::Kernel { pin_dir, wire } => {
                let made = Device::kernel(pin_dir, wire.as_deref(), &sizes).inspect_err(|_| {
                    self.unsized_maps = Some(how.clone());
                })?;
                self.kernel = made.kernel;
                self._attachments = made._attachments;
                self.sizes = made.sizes;
            }
        }
        Ok(Some(self.sizes.clone()))
    }

    /// The model with eBPF maps of `sizes` (a state that overfills one is refused).
    pub fn with_model_sizes(self, sizes: MapSizes) -> Device {
        Device { sizes, ..self }
    }

    /// The sizes of the eBPF maps the state must fit.
    pub fn map_sizes(&self) -> &MapSizes {
        &self.sizes
    }

    /// The kernel datapath with maps pinned in `pin_dir` (reused when already pinned there,
    /// with the sizes they have; else created with `sizes`), and `from_wire`/`to_wire`
    /// attached to `wire` when given.
    pub fn kernel(pin_dir: &Path, wire: Option<&str>, sizes: &MapSizes) -> anyhow::Result<Device> {
        let mut dp = Datapath::load_sized(Some(pin_dir), sizes)?;
        let held = dp.sizes()?;
        if held != *sizes {
            tracing::warn!(
                asked = %sizes,
                held = %held,
                "the pinned eBPF maps keep the sizes they were created with; remove the pins to resize them (this drops the datapath's state)"
            );
        }
        let mut attachments = Vec::new();
        if let Some(iface) = wire {
            attachments.push(attach_replacing(&mut dp, Program::FromWire, iface)?);
            attachments.push(attach_replacing(&mut dp, Program::ToWire, iface)?);
        }
        Ok(Device {
            kernel: Some(dp),
            _attachments: attachments,
            sizes: held,
            ..Device::model()
        })
    }

    /// Sends the flow table's operations to the DPDK ethdev ports `names` (comma-separated,
    /// in device order: uplink, SDP PF, then the VFs; one name stands for the whole device)
    /// with EAL started with `eal_args`, instead of the model.
    #[cfg(feature = "dpdk")]
    pub fn with_hw_port(mut self, names: &str, eal_args: &[String]) -> anyhow::Result<Device> {
        static OPENED: AtomicBool = AtomicBool::new(false);
        // EAL starts once per process and keeps its first arguments: a second port would
        // silently get the first one's, so it is an error instead.
        if OPENED.swap(true, Ordering::SeqCst) {
            anyhow::bail!("a hardware port is already open in this process");
        }
        let names: Vec<String> = names.split(',').map(str::to_string).collect();
        self.hw = Some(crate::hw::HwPort::open(&names, eal_args)?);
        Ok(self)
    }

    /// The real ports' names, when the flow table is a device's.
    pub fn hw_port(&self) -> Option<String> {
        #[cfg(feature = "dpdk")]
        if let Some(hw) = &self.hw {
            return Some(hw.name());
        }
        None
    }

    /// The device port of the plan's logical port `logical`: the same for the uplink and
    /// the SDP PF, the pod's VF for a pod's endpoint number, none for a pod without a VF.
    pub fn device_port(&self, logical: u16) -> Option<u16> {
        if u128::from(logical) < pipec::mag::ports::FIRST_ENDPOINT {
            return Some(logical);
        }
        self.port_map.get(&logical).copied()
    }

    /// The logical → device port map in force.
    pub fn port_map(&self) -> &BTreeMap<u16, u16> {
        &self.port_map
    }

    /// The part of `new` that can be in force while a change is applied: the ports whose
    /// device port stays, and the new logical ports no rule uses yet. A logical port that
    /// moves (an endpoint number taken over by another pod) has no device port meanwhile,
    /// so the old pod's rules, about to be destroyed, never sit on the new pod's VF; the
    /// eBPF pipeline decides its packets until [`Device::set_port_map`] of `new`.
    pub fn port_map_during(&self, new: &BTreeMap<u16, u16>) -> BTreeMap<u16, u16> {
        let used: BTreeSet<u16> = self.specs.values().map(|r| r.rule.port).collect();
        new.iter()
            .filter(|(l, d)| match self.port_map.get(l) {
                Some(old) => old == *d,
                None => !used.contains(l),
            })
            .map(|(l, d)| (*l, *d))
            .collect()
    }

    /// Moves to a new logical → device port map: every plan rule on a logical port whose
    /// device port changed is destroyed where it was and created where it is now (a pod
    /// that got its VF, a pod's endpoint number taken over by another pod). Returns how
    /// many rules moved.
    pub fn set_port_map(&mut self, map: BTreeMap<u16, u16>) -> usize {
        if map == self.port_map {
            return 0;
        }
        let changed: BTreeSet<u16> = map
            .keys()
            .chain(self.port_map.keys())
            .filter(|p| map.get(p) != self.port_map.get(p))
            .copied()
            .collect();
        self.port_map = map;
        let moved: Vec<(String, pipec_rte_flow::EmittedRule)> = self
            .specs
            .iter()
            .filter(|(_, r)| changed.contains(&r.rule.port))
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        for (key, rule) in &moved {
            self.destroy_flow(key);
            self.create_flow(key, rule);
        }
        moved.len()
    }

    /// Creates a plan rule on the flow table, on the device port of its logical port. With
    /// a real port, a refusal is recorded (and logged and counted) and the rule stays out
    /// of the table; the model holds any rule.
    fn create_flow(&mut self, key: &str, rule: &pipec_rte_flow::EmittedRule) {
        self.specs.insert(key.to_string(), rule.clone());
        #[cfg(feature = "dpdk")]
        if self.hw.is_some() {
            let device = self.device_port(rule.rule.port);
            let placed = self
                .hw
                .as_mut()
                .map_or(Ok(()), |hw| hw.create(key, &rule.rule, device));
            if let Err(e) = placed {
                self.refuse(key, rule, device, &e);
                return;
            }
        }
        self.refused.remove(key);
        self.undestroyed.remove(key);
        self.flows.insert(key.to_string());
    }

    /// Destroys a plan rule. A rule the port refused to destroy stays in the table (the
    /// port still holds it), and the failure is logged and counted; the caller goes on
    /// with the batch.
    fn destroy_flow(&mut self, key: &str) {
        self.refused.remove(key);
        #[cfg(feature = "dpdk")]
        if let Some(hw) = &mut self.hw {
            if let Err(e) = hw.destroy(key) {
                let errno = pipec_rte_flow::ffi::errno_name(e.errno);
                *self.refusals.entry(errno.to_string()).or_insert(0) += 1;
                tracing::error!(
                    code = "device",
                    errno,
                    key,
                    "the port refused to destroy a flow rule; it stays in the flow table: {}",
                    e.message
                );
                self.undestroyed.insert(key.to_string());
                return;
            }
        }
        self.undestroyed.remove(key);
        self.flows.remove(key);
        self.specs.remove(key);
    }

    #[cfg(feature = "dpdk")]
    fn refuse(
        &mut self,
        key: &str,
        rule: &pipec_rte_flow::EmittedRule,
        device: Option<u16>,
        e: &pipec_rte_flow::ffi::DeviceError,
    ) {
        let errno = pipec_rte_flow::ffi::errno_name(e.errno).to_string();
        tracing::warn!(
            code = "device",
            errno = %errno,
            rule = rule.id,
            origin = %rule.origin,
            "the port refused a flow rule; its packets are decided in eBPF: {}",
            e.message
        );
        *self.refusals.entry(errno.clone()).or_insert(0) += 1;
        self.flows.remove(key);
        self.refused.insert(
            key.to_string(),
            Refusal {
                rule: rule.id,
                origin: rule.origin.clone(),
                device_port: device,
                errno,
                message: e.message.clone(),
            },
        );
    }

    /// The plan rules the port refused now, by rule key.
    pub fn refused(&self) -> &BTreeMap<String, Refusal> {
        &self.refused
    }

    /// Refusals since the start, by errno name.
    pub fn refusal_counts(&self) -> &BTreeMap<String, u64> {
        &self.refusals
    }

    /// What `/status` says of the flow table: the port (null for the model), how many
    /// rules it holds, the refused rules with why, and the refusals since the start.
    pub fn hardware_status(&self) -> serde_json::Value {
        let refused: BTreeMap<&String, &Refusal> = self.refused.iter().collect();
        serde_json::json!({
            "port": self.hw_port(),
            "pod_ports": self.port_map,
            "held": self.flows.len(),
            "refused": refused,
            "undestroyed": self.undestroyed,
            "refusals_total": self.refusals,
        })
    }

    /// What the eBPF maps hold now.
    fn map_entries(&self) -> anyhow::Result<MapEntries> {
        match &self.kernel {
            Some(dp) => Ok(dp.read_entries()?),
            None => Ok(self.maps.clone()),
        }
    }

    fn apply_map_ops(&mut self, ops: &[MapOp]) -> anyhow::Result<()> {
        match &mut self.kernel {
            Some(dp) => {
                dp.apply(ops)?;
            }
            None => MapOps { ops: ops.to_vec() }.apply_to(&mut self.maps),
        }
        Ok(())
    }

    /// Brings the device to the session's artifacts, applying only the difference.
    pub fn reconcile(&mut self, session: &Session) -> anyhow::Result<Applied> {
        let mut applied = Applied::default();
        if let Some(Ok(a)) = session.artifact(pipec_ebpf::codegen::TARGET) {
            if let Some(a) = a.as_any().downcast_ref::<EbpfArtifact>() {
                let ops = diff_entries(&self.map_entries()?, &a.entries());
                applied.map_ops = ops.len();
                self.ebpf_synced = false;
                self.apply_map_ops(&ops)?;
                self.ebpf_synced = true;
            }
        }
        if let Some(hw) = session.profile().map(|p| p.name.clone()) {
            if let Some(Ok(a)) = session.artifact(&hw) {
                if let Some(a) = a.as_any().downcast_ref::<RteFlowArtifact>() {
                    let want: BTreeMap<String, &pipec_rte_flow::EmittedRule> = a
                        .rules
                        .iter()
                        .map(|r| (pipec_rte_flow::rule_key(&r.rule), r))
                        .collect();
                    // Destroys first, as in the session's operations. A rule refused before
                    // is tried again: the port may have room now.
                    let stale: Vec<String> = self
                        .flows
                        .iter()
                        .chain(self.refused.keys())
                        .filter(|k| !want.contains_key(*k))
                        .cloned()
                        .collect();
                    for key in &stale {
                        self.destroy_flow(key);
                    }
                    let missing: Vec<(&String, &&pipec_rte_flow::EmittedRule)> = want
                        .iter()
                        .filter(|(k, _)| !self.flows.contains(*k))
                        .collect();
                    applied.flow_ops = stale.len() + missing.len();
                    for (key, rule) in missing {
                        self.create_flow(key, rule);
                    }
                }
            }
        }
        if let Some(Ok(a)) = session.artifact(pipec_cpt::TARGET) {
            if let Some(a) = a.as_any().downcast_ref::<IpsecArtifact>() {
                let mut want: BTreeSet<(String, String, u32)> = a
                    .sa_set
                    .iter()
                    .flat_map(|s| &s.sas)
                    .map(|s| {
                        (
                            format!("{:?}", s.direction).to_lowercase(),
                            s.peer.clone(),
                            s.spi,
                        )
                    })
                    .collect();
                // An old inbound SA within its rotation window is not in the artifact any
                // more, but its peer may still send with it: it stays until it is due. A
                // peer that left meanwhile cannot send any more, so its SAs go at once (as
                // the CPT target's diff does).
                let peers: BTreeSet<String> = want.iter().map(|(_, p, _)| p.clone()).collect();
                self.pending.retain(|(_, _, sa)| peers.contains(&sa.1));
                want.extend(self.pending.iter().map(|(_, _, sa)| sa.clone()));
                applied.sa_ops = want.symmetric_difference(&self.sas).count();
                self.sas = want;
            }
        }
        Ok(applied)
    }

    /// Applies one change's operations in the session's target order (eBPF first).
    pub fn apply(&mut self, changes: &Changes) -> anyhow::Result<Applied> {
        let mut applied = Applied::default();
        for t in &changes.targets {
            let any = t.ops.as_any();
            if let Some(ops) = any.downcast_ref::<MapOps>() {
                applied.map_ops += ops.ops.len();
                // The operations take maps holding the old artifact to the new one.
                let synced = std::mem::replace(&mut self.ebpf_synced, false);
                self.apply_map_ops(&ops.ops)?;
                self.ebpf_synced = synced;
            } else if let Some(ops) = any.downcast_ref::<FlowOps>() {
                applied.flow_ops += ops.ops.len();
                // Each operation stands alone: a refusal is recorded and the rest of the
                // batch is applied, so the table is what the port holds, never half of it.
                // Destroys the port refused before are tried first, with the batch's own.
                for key in self.undestroyed.clone() {
                    self.destroy_flow(&key);
                }
                for op in &ops.ops {
                    match op {
                        FlowOp::Destroy { key } => self.destroy_flow(key),
                        FlowOp::Create { key, rule } => self.create_flow(key, rule),
                    }
                }
            } else if let Some(ops) = any.downcast_ref::<SaOps>() {
                applied.sa_ops += ops.ops.len();
                for op in &ops.ops {
                    self.apply_sa(op);
                }
            } else {
                anyhow::bail!("pipecd cannot apply operations of target {}", t.target);
            }
        }
        Ok(applied)
    }

    /// Destroys connection-offload entries (the first half of every offload batch, and
    /// the only half of the batches that come before a change). The model has no mailbox
    /// to wait on; on the device each destroy returns once the AF has written the entry
    /// invalid, and the next step starts only after the last one returns.
    pub fn remove_offload(&mut self, entries: &[Entry]) -> usize {
        let mut n = 0;
        for e in entries {
            #[cfg(feature = "dpdk")]
            if let Some(hw) = &mut self.hw {
                if let Err(err) = hw.destroy_offload(e) {
                    // The port still holds the entry, so it stays recorded (and is
                    // destroyed with the next batch that names it).
                    let errno = pipec_rte_flow::ffi::errno_name(err.errno);
                    *self.refusals.entry(errno.to_string()).or_insert(0) += 1;
                    tracing::error!(
                        code = "device",
                        errno,
                        "the port refused to destroy a connection-offload entry: {}",
                        err.message
                    );
                    continue;
                }
            }
            if self.offload.remove(e).is_some() {
                n += 1;
            }
        }
        n
    }

    /// Applies an offload batch: every removal, then every install. An install is lowered
    /// by the rte_flow backend of `profile` first, as the device would need it. The
    /// installs the backend refuses are not made and are returned with why, so that the
    /// caller can put their connections back in software; the rest of the batch is
    /// applied. Returns the operations made and the refusals.
    pub fn apply_offload(
        &mut self,
        batch: &Batch,
        profile: &pipec::backend::Profile,
    ) -> (usize, Vec<(Entry, String)>) {
        let mut n = self.remove_offload(&batch.remove);
        let backend = pipec_rte_flow::RteFlowBackend::new(profile.clone());
        let mut refused = Vec::new();
        for e in &batch.install {
            match backend.lower_rule(&e.rule(0)) {
                Ok(flow) => {
                    #[cfg(feature = "dpdk")]
                    if let Some(hw) = &mut self.hw {
                        if let Err(err) = hw.create_offload(e, &flow) {
                            // The connection stays in software, where the whole
                            // pipeline decides it; the caller puts it back there.
                            let errno = pipec_rte_flow::ffi::errno_name(err.errno);
                            tracing::warn!(
                                code = "device",
                                errno,
                                "the port refused a connection-offload entry; the connection stays in software: {}",
                                err.message
                            );
                            *self.refusals.entry(errno.to_string()).or_insert(0) += 1;
                            refused
                                .push((e.clone(), err.to_unsupported(&profile.name).to_string()));
                            continue;
                        }
                    }
                    self.offload
                        .insert(e.clone(), pipec_rte_flow::rule_key(&flow));
                    n += 1;
                }
                Err(err) => refused.push((e.clone(), err.to_string())),
            }
        }
        (n, refused)
    }

    /// How many connection-offload entries the flow table holds.
    pub fn offload_len(&self) -> usize {
        self.offload.len()
    }

    /// The kernel datapath, whose conntrack the offload scans (`None` for the model, which
    /// has no conntrack).
    pub fn datapath(&self) -> Option<&Datapath> {
        self.kernel.as_ref()
    }

    fn apply_sa(&mut self, op: &SaOp) {
        let sa = |dir: &str, peer: &str, spi: u32| (dir.to_string(), peer.to_string(), spi);
        match op {
            SaOp::AddInbound { peer, spi, .. } => {
                self.sas.insert(sa("inbound", peer, *spi));
            }
            SaOp::AddOutbound { peer, spi, .. } => {
                self.sas.insert(sa("outbound", peer, *spi));
            }
            SaOp::SwitchOutbound { peer, from, to } => {
                // The model switches at once; the device waits for the peer's advertisement.
                self.sas.remove(&sa("outbound", peer, *from));
                self.sas.insert(sa("outbound", peer, *to));
            }
            SaOp::RemoveOutbound { peer, spi } => {
                self.sas.remove(&sa("outbound", peer, *spi));
            }
            SaOp::RemoveInbound { peer, spi, after } => {
                if after.is_zero() {
                    self.sas.remove(&sa("inbound", peer, *spi));
                } else {
                    self.schedule_removal(peer, *spi, *after);
                }
            }
            SaOp::Replace { .. } | SaOp::AdvertiseSpi { .. } => {}
        }
    }

    /// Records that an inbound SA goes once `after` has passed; an SA already waiting keeps
    /// its first deadline.
    fn schedule_removal(&mut self, peer: &str, spi: u32, after: Duration) {
        let sa = ("inbound".to_string(), peer.to_string(), spi);
        if self.pending.iter().any(|(_, _, s)| *s == sa) {
            return;
        }
        let due_unix_ms = unix_ms(SystemTime::now() + after);
        self.pending.push((Instant::now() + after, due_unix_ms, sa));
    }

    /// Records the delayed SA removals of `changes` without applying anything, so that they
    /// can be persisted before the device acts on the change: a kill between the apply and
    /// the write then cannot forget one (the restart would remove the SA at once).
    /// [`Device::apply`] finds them recorded and leaves them as they are.
    pub fn schedule(&mut self, changes: &Changes) {
        for t in &changes.targets {
            if let Some(ops) = t.ops.as_any().downcast_ref::<SaOps>() {
                for op in &ops.ops {
                    if let SaOp::RemoveInbound { peer, spi, after } = op {
                        if !after.is_zero() {
                            self.schedule_removal(peer, *spi, *after);
                        }
                    }
                }
            }
        }
    }

    /// Carries out the removals whose window has passed; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let (due, later): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|(t, _, _)| *t <= now);
        self.pending = later;
        for (_, _, sa) in &due {
            self.sas.remove(sa);
        }
        due.len()
    }

    /// The SA removals waiting for their window, for the state directory (SAs are named by
    /// peer and SPI; no key material).
    pub fn pending_removals(&self) -> Vec<PendingRemoval> {
        let mut out: Vec<PendingRemoval> = self
            .pending
            .iter()
            .map(|(_, due_unix_ms, (_, peer, spi))| PendingRemoval {
                peer: peer.clone(),
                spi: *spi,
                due_unix_ms: *due_unix_ms,
            })
            .collect();
        out.sort();
        out
    }

    /// Takes over the SA removals an earlier run had not carried out, before the first
    /// reconciliation: their SAs stay on the device until their window has passed (a
    /// restart must not cut a peer's rotation short), and a removal already due is carried
    /// out at the next expiry.
    pub fn restore_pending(&mut self, list: &[PendingRemoval]) {
        let (now, wall) = (Instant::now(), unix_ms(SystemTime::now()));
        for p in list {
            let left = Duration::from_millis(p.due_unix_ms.saturating_sub(wall));
            let sa = ("inbound".to_string(), p.peer.clone(), p.spi);
            if !self.pending.iter().any(|(_, _, s)| *s == sa) {
                self.pending.push((now + left, p.due_unix_ms, sa));
            }
        }
    }

    /// The next pending removal, if any.
    pub fn next_expiry(&self) -> Option<Duration> {
        let now = Instant::now();
        self.pending
            .iter()
            .map(|(t, _, _)| t.saturating_duration_since(now))
            .min()
    }

    /// The device's content, one sorted line per entry: `ebpf MAP KEY VALUE` (hex),
    /// `flow KEY` (the rules the flow table holds), `refused KEY ERRNO` (the rules the port
    /// refused, decided in eBPF), `offload KEY` (connection-offload entries, in the order of
    /// their tuple and port), `sa DIRECTION PEER SPI`. A policy value's rule cookie is printed as the
    /// rule it names (`cookies`): cookies are numbered in the order a session first saw the
    /// rules, so two sessions may number one rule differently. Equal devices dump equal text.
    pub fn dump(&self, cookies: &BTreeMap<u64, String>) -> anyhow::Result<String> {
        let mut out = String::new();
        for ((map, key), value) in self.map_entries()? {
            let value = match (map, value.get(..8)) {
                (MapName::Policy, Some(c)) => {
                    let cookie = u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
                    let name = cookies.get(&cookie).map_or("none", String::as_str);
                    format!("cookie[{name}] {}", hex(&value[8..]))
                }
                _ => hex(&value),
            };
            out.push_str(&format!("ebpf {} {} {value}\n", map.as_str(), hex(&key)));
        }
        for f in &self.flows {
            out.push_str(&format!("flow {f}\n"));
        }
        for (key, r) in &self.refused {
            out.push_str(&format!("refused {key} {}\n", r.errno));
        }
        for key in self.offload.values() {
            out.push_str(&format!("offload {key}\n"));
        }
        for (dir, peer, spi) in &self.sas {
            out.push_str(&format!("sa {dir} {peer} {spi}\n"));
        }
        Ok(out)
    }

    /// The eBPF datapath's per-rule counters (packets and bytes, summed over the CPUs), by
    /// rule cookie; none for the model, which carries no packets.
    pub fn counters(&self) -> anyhow::Result<BTreeMap<u64, pipec_ebpf_common::CounterValue>> {
        match &self.kernel {
            Some(dp) => Ok(dp.counters()?),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Entries per eBPF map, flow rules and SAs, for the metrics.
    pub fn sizes(&self, session: &Session) -> anyhow::Result<BTreeMap<String, usize>> {
        let mut counts: BTreeMap<MapName, usize> = BTreeMap::new();
        let mut count = |entries: &MapEntries| {
            for (map, _) in entries.keys() {
                *counts.entry(*map).or_insert(0) += 1;
            }
        };
        // The model's maps are counted where they are: copying them to count them cost 14
        // ms a step on 1,500 pods. The kernel's are the session's artifact while they are
        // known to hold it (reading every map each step would read millions of entries on
        // a large node), and are read otherwise.
        let artifact = session
            .artifact(pipec_ebpf::codegen::TARGET)
            .and_then(Result::ok)
            .and_then(|a| a.as_any().downcast_ref::<EbpfArtifact>());
        match (&self.kernel, artifact) {
            (Some(_), Some(a)) if self.ebpf_synced => {
                for (map, n) in a.map_sizes() {
                    counts.insert(map, n as usize);
                }
            }
            (Some(dp), _) => count(&dp.read_entries()?),
            (None, _) => count(&self.maps),
        }
        let mut out: BTreeMap<String, usize> = counts
            .into_iter()
            .map(|(map, n)| (format!("ebpf/{}", map.as_str()), n))
            .collect();
        out.insert("hardware/flows".into(), self.flows.len());
        out.insert("hardware/refused".into(), self.refused.len());
        out.insert("hardware/offload".into(), self.offload.len());
        out.insert("cpt/sas".into(), self.sas.len());
        Ok(out)
    }
}

/// Attaches `program` to `iface`, replacing the filters of the same program that an
/// earlier run left there (the daemon exits without detaching, so that the datapath keeps
/// working while it is down): a restart leaves one pipec filter per hook, not one more.
///
/// Make-before-break: the new filter is attached first, then the old ones are removed. The
/// kernel gives a filter attached without a priority a preference one below the lowest in
/// use, so the new filter runs before the old ones from the moment it is attached, and the
/// hook is never without a pipec filter (a pod port without one would pass its traffic
/// unchecked). The cost is that the preference drifts down by one per restart, from 49152;
/// that is tens of thousands of restarts of headroom.
///
/// The filters are found with `tc` (iproute2, which pipecd already needs for `ip`); a
/// filter is pipec's when its BPF name is the program's. When `tc` cannot list them, the new
/// filter is attached anyway and the failure is logged: an old filter left in place runs
/// after the new one and changes no verdict, it only costs memory.
fn attach_replacing(
    dp: &mut Datapath,
    program: Program,
    iface: &str,
) -> anyhow::Result<Attachment> {
    let old = match tc_filters(iface, program) {
        Ok(old) => old,
        Err(e) => {
            tracing::warn!(
                iface,
                program = program.name(),
                "cannot list the earlier pipec filters, so none is replaced: {e:#}"
            );
            Vec::new()
        }
    };
    let new = dp
        .attach(program, iface)
        .map_err(|e| anyhow::anyhow!("attaching {} to {iface}: {e}", program.name()))?;
    for (pref, handle) in &old {
        use aya::programs::Link as _;
        let removed =
            aya::programs::tc::SchedClassifierLink::attached(iface, program.hook(), *pref, *handle)
                .map_err(anyhow::Error::from)
                .and_then(|link| link.detach().map_err(anyhow::Error::from));
        match removed {
            Ok(()) => tracing::info!(
                iface,
                program = program.name(),
                pref,
                "replaced the filter an earlier run left"
            ),
            Err(e) => tracing::warn!(
                iface,
                program = program.name(),
                pref,
                "cannot remove the filter an earlier run left: {e:#}"
            ),
        }
    }
    Ok(new)
}

/// The (preference, handle) of each filter of `program` on `iface`'s hook.
pub fn tc_filters(iface: &str, program: Program) -> anyhow::Result<Vec<(u16, u32)>> {
    let hook = match program.hook() {
        aya::programs::TcAttachType::Ingress => "ingress",
        _ => "egress",
    };
    let out = std::process::Command::new("tc")
        .args(["-j", "filter", "show", "dev", iface, hook])
        .output()
        .map_err(|e| anyhow::anyhow!("running tc: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "tc filter show dev {iface} {hook}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // With no clsact qdisc yet, tc prints nothing at all.
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("reading tc's filter list: {e}"))?;
    let mut found = Vec::new();
    for f in &list {
        let o = &f["options"];
        if o["bpf_name"].as_str() != Some(program.name()) {
            continue;
        }
        let pref = f["pref"].as_u64().and_then(|p| u16::try_from(p).ok());
        let handle = o["handle"]
            .as_str()
            .and_then(|h| u32::from_str_radix(h.trim_start_matches("0x"), 16).ok());
        match (pref, handle) {
            (Some(p), Some(h)) => found.push((p, h)),
            _ => anyhow::bail!(
                "tc listed a {} filter without a preference or handle: {f}",
                program.name()
            ),
        }
    }
    Ok(found)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The dump of what a device holding `session`'s artifacts holds (the expected state the
/// tests compare a running daemon with).
pub fn expected_dump(session: &Session) -> anyhow::Result<String> {
    let mut d = Device::model();
    d.reconcile(session)?;
    d.dump(&cookie_names(session))
}

/// The provenance of the session's rules counted under `cookies` (the eBPF datapath counts
/// each rule under a hash of its provenance): the rule (its object, rule list and index)
/// and, when the session has the text it came from, where it is written (`file:line`).
/// Only the rules asked for are located, as locating one reads its object's text again.
pub fn rule_provenance(
    session: &Session,
    cookies: &BTreeSet<u64>,
) -> BTreeMap<u64, (String, Option<String>)> {
    use pipec::mag::Provenance;
    let sources = session.sources();
    let mut out = BTreeMap::new();
    for p in &session.mag().provenance {
        let name = p.to_string();
        let cookie = pipec_ebpf::codegen::cookie_of(&name);
        if !cookies.contains(&cookie) {
            continue;
        }
        let at = match p {
            Provenance::Rule(r) => r.location(sources),
            Provenance::Object(o) => o.span,
            Provenance::Builtin(_) => None,
        }
        .map(|span| sources.file_line(span));
        out.insert(cookie, (name, at));
    }
    out
}

/// What each rule cookie of the session's eBPF artifact names.
pub fn cookie_names(session: &Session) -> BTreeMap<u64, String> {
    match session.artifact(pipec_ebpf::codegen::TARGET) {
        Some(Ok(a)) => a
            .as_any()
            .downcast_ref::<EbpfArtifact>()
            .map(|a| a.cookies.clone())
            .unwrap_or_default(),
        _ => BTreeMap::new(),
    }
}

/// The connection-offload path on a real DPDK port: net_null in DPDK 22.11 has no flow
/// operations, so every create is refused with ENOSYS, which is the refusal path the device
/// must handle (the policy plan's path is driven end to end by runtime/tests/pipecd.rs).
#[cfg(all(test, feature = "dpdk"))]
mod hw_tests {
    use super::Device;
    use crate::offload::{Batch, Entry, FiveTuple, HwActionKey};
    use std::net::Ipv4Addr;

    #[test]
    fn an_offload_entry_the_port_refuses_stays_in_software_and_is_counted() {
        // A file prefix of its own, so that this EAL shares no runtime files with another
        // process's; without hugepages and PCI, EAL needs no device and no root.
        let prefix = format!("pipecd-unit-{}", std::process::id());
        // Four ports in device order: the uplink, the SDP PF, VF 0 and VF 1.
        let eal: Vec<String> = format!(
            "-l 0 --no-huge --no-pci -m 128 --file-prefix {prefix} --vdev net_null0 --vdev net_null1 --vdev net_null2 --vdev net_null3 --log-level lib.eal:error"
        )
        .split_whitespace()
        .map(str::to_string)
        .collect();
        let names = "net_null0,net_null1,net_null2,net_null3";
        let mut d = Device::model()
            .with_hw_port(names, &eal)
            .expect("the four net_null ports open");
        assert_eq!(d.hw_port().as_deref(), Some(names));
        plan_rules_go_to_the_device_port_of_their_pod(&mut d);
        let entry = Entry {
            tuple: FiveTuple {
                src: Ipv4Addr::new(10, 0, 0, 1),
                dst: Ipv4Addr::new(10, 0, 0, 2),
                proto: 6,
                sport: 40000,
                dport: 80,
            },
            port: 1,
            action: HwActionKey::Vf(1),
            counted: true,
        };
        let batch = Batch {
            remove: Vec::new(),
            install: vec![entry.clone()],
        };
        let profile = pipec::backend::octeon_cn10k_profile();
        let (made, refused) = d.apply_offload(&batch, &profile);
        assert_eq!(made, 0);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, entry);
        assert!(
            refused[0]
                .1
                .ends_with("device refused (ENOSYS): Function not implemented"),
            "{}",
            refused[0].1
        );
        assert_eq!(
            d.offload_len(),
            0,
            "a refused entry is not in the flow table"
        );
        assert_eq!(d.refusal_counts().get("ENOSYS"), Some(&1));
        // Removing it finds nothing to destroy: the port never held it.
        assert_eq!(d.remove_offload(&[entry]), 0);
        assert!(!d.dump(&Default::default()).unwrap().contains("offload "));
        // A second port in one process would get the first one's EAL arguments.
        assert!(Device::model().with_hw_port("net_null0", &eal).is_err());
        // EAL leaves its runtime directory behind when the process ends (DPDK 22.11 puts it
        // under /var/run/dpdk for root, $XDG_RUNTIME_DIR/dpdk or /tmp/dpdk otherwise); its
        // files are mapped already, so removing it now changes nothing for this process.
        for base in [
            Some(std::path::PathBuf::from("/var/run")),
            std::env::var_os("XDG_RUNTIME_DIR").map(std::path::PathBuf::from),
            Some(std::path::PathBuf::from("/tmp")),
        ]
        .into_iter()
        .flatten()
        {
            let _ = std::fs::remove_dir_all(base.join("dpdk").join(&prefix));
        }
    }

    /// A plan rule on a pod's logical port (its endpoint number, 300 here) has no device
    /// port until the pod has a VF: it is refused with ENODEV and decided in eBPF. Once the
    /// map names the pod's VF (device port 3, VF 1), the rule is created there, and moves
    /// when the endpoint's VF changes; a rule on the uplink goes to device port 0. net_null
    /// refuses every create with ENOSYS, and each refusal says which device port it was.
    fn plan_rules_go_to_the_device_port_of_their_pod(d: &mut Device) {
        use pipec::backend::{HwAction, HwMatch, HwRule, PacketField, PortDirection};
        let backend = pipec_rte_flow::RteFlowBackend::new(pipec::backend::octeon_cn10k_profile());
        let rule = |id: u32, port: u16| {
            let hw = HwRule {
                id,
                port,
                direction: PortDirection::Ingress,
                level: 1,
                matches: vec![HwMatch::exact(PacketField::EthType, 0x0800)],
                actions: vec![HwAction::Mark { id: 1 }],
                origin: format!("test rule {id}"),
            };
            let flow = backend.lower_rule(&hw).expect("the rule lowers");
            let key = pipec_rte_flow::rule_key(&flow);
            let emitted = pipec_rte_flow::EmittedRule {
                id,
                origin: hw.origin.clone(),
                rule: flow,
            };
            (key, emitted)
        };
        let (pod_key, pod_rule) = rule(0, 300);
        let (wire_key, wire_rule) = rule(1, 0);
        d.create_flow(&pod_key, &pod_rule);
        d.create_flow(&wire_key, &wire_rule);
        let refusal = |d: &Device, key: &str| {
            let r = &d.refused()[key];
            (r.device_port, r.errno.clone())
        };
        assert_eq!(refusal(d, &pod_key), (None, "ENODEV".to_string()));
        assert_eq!(refusal(d, &wire_key), (Some(0), "ENOSYS".to_string()));
        // The pod gets VF 1 (device port 3): its rule is tried there.
        assert_eq!(d.set_port_map([(300, 3)].into()), 1);
        assert_eq!(refusal(d, &pod_key), (Some(3), "ENOSYS".to_string()));
        // While a change moves endpoint 300 to another VF, it has no port.
        let during = d.port_map_during(&[(300, 2)].into());
        assert!(during.is_empty(), "{during:?}");
        // A map beyond the named ports is refused as having no such port.
        assert_eq!(d.set_port_map([(300, 9)].into()), 1);
        assert_eq!(refusal(d, &pod_key), (Some(9), "ENODEV".to_string()));
        // The same map again moves nothing.
        assert_eq!(d.set_port_map([(300, 9)].into()), 0);
        assert_eq!(d.refusal_counts().get("ENODEV"), Some(&2));
        // Leave the table empty for the offload half of the test.
        d.destroy_flow(&pod_key);
        d.destroy_flow(&wire_key);
        assert!(d.refused().is_empty());
        assert!(d.set_port_map(Default::default()) == 0);
        d.refusals.clear();
    }
}

#[cfg(test)]
mod sizing_tests {
    use super::Device;
    use pipec_ebpf::artifact::{Backend, MapName};
    use pipec_ebpf::{EbpfArtifact, MapSizes};

    /// An artifact with `n` backends.
    fn with_backends(n: u32) -> EbpfArtifact {
        let mut a = EbpfArtifact::default();
        for id in 1..=n {
            let addr = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + id));
            a.backends.insert(id, Backend { addr, port: 80 });
        }
        a
    }

    /// Without a size asked for, the model holds every state to the ceilings until the
    /// first one sizes its maps: a map the state needs more of than its default gets a
    /// quarter more, rounded up to a power of two; the others their defaults. The sizes
    /// are chosen once.
    #[test]
    fn the_first_state_sizes_the_maps_once() {
        let mut d = Device::model_sized_by_state();
        assert_eq!(d.map_sizes(), &MapSizes::ceilings());
        let needed = MapName::Backends.capacity() as u32 + 4_000;
        let sizes = d
            .size_for(&with_backends(needed))
            .expect("the model sizes")
            .expect("the maps were not sized yet");
        let roomy = (u64::from(needed) * 5 / 4).next_power_of_two();
        assert_eq!(sizes.get(MapName::Backends), roomy);
        assert_eq!(sizes.get(MapName::Policy), MapName::Policy.capacity());
        assert_eq!(d.map_sizes(), &sizes);
        assert_eq!(d.size_for(&with_backends(roomy as u32 * 2)).unwrap(), None);
        assert_eq!(d.map_sizes(), &sizes, "sized once");
    }

    /// A model given sizes keeps them.
    #[test]
    fn sizes_asked_for_stay() {
        let asked = MapSizes::parse("backends=10").expect("valid");
        let mut d = Device::model().with_model_sizes(asked.clone());
        assert_eq!(d.size_for(&with_backends(100_000)).unwrap(), None);
        assert_eq!(d.map_sizes(), &asked);
    }
}
