//! The hardware flow table as a real DPDK ethdev port (feature `dpdk`, `pipecd --hw-port`).
//!
//! Every rule the device creates is kept here with its `rte_flow` handle, by the rule's key
//! ([`pipec_rte_flow::rule_key`]) for the policy plan's rules and by [`Entry`] for the
//! connection-offload entries, so that a destroy names exactly the rule that was created.
//! A create the port refuses leaves no handle: the device records the refusal, and the rule's
//! packets are decided by the eBPF pipeline, which always holds the whole pipeline.

use crate::offload::Entry;
use pipec_rte_flow::ffi::{CRule, DeviceError, Eal, FlowHandle, Port};
use pipec_rte_flow::rule::FlowRule;
use std::collections::BTreeMap;

/// Linux's "no such device" errno, the code of a rule with no port to go to.
const ENODEV: i32 = 19;

/// The device's ethdev ports and the flow rules pipecd created on them.
///
/// `--hw-port` names the ports in device order: the uplink (device port 0), the SDP PF
/// (1), then the SDP PF's VFs (VF `n` is device port `2 + n`), as `engine::offload` numbers
/// them. A single name stands for the whole device: every rule goes to it, whatever its
/// port (a test set-up with one `net_null`).
pub struct HwPort {
    /// The ports' device names (`net_null0`), for the status.
    names: Vec<String>,
    ports: Vec<Port>,
    /// The policy plan's rules, by rule key, with the port each was created on.
    rules: BTreeMap<String, (Port, FlowHandle)>,
    /// The connection-offload entries, with their ports.
    offload: BTreeMap<Entry, (Port, FlowHandle)>,
}

/// The error of a rule whose logical port has no device port: a pod's egress rule before
/// the pod has a VF. Its packets are decided in eBPF until the pod gets one.
fn no_port(logical: u16) -> DeviceError {
    DeviceError {
        errno: ENODEV,
        message: format!("endpoint {logical} has no VF port on this device yet"),
    }
}

impl HwPort {
    /// Starts DPDK's EAL with `eal_args` (without `argv[0]`) and opens the ethdev ports
    /// named `names`, in device order. EAL starts once per process, so a second device
    /// would share the first one's arguments; pipecd opens one.
    pub fn open(names: &[String], eal_args: &[String]) -> anyhow::Result<HwPort> {
        if names.is_empty() {
            anyhow::bail!("--hw-port names no ethdev port");
        }
        let mut argv: Vec<String> = vec!["pipecd".to_string()];
        argv.extend(eal_args.iter().cloned());
        // rte_eal_init pins the thread that calls it to the main lcore (the first core of
        // `-l`), and every thread started later from that thread inherits the pin: called
        // on pipecd's main thread, it put the whole daemon (the runtime's workers and its
        // blocking pool) on one core. It is called on a thread of its own instead, which
        // ends once EAL is up; rte_flow calls need no EAL thread (pipecd makes them from
        // its blocking pool).
        let eal = std::thread::Builder::new()
            .name("pipecd-eal-init".into())
            .spawn(move || {
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                Eal::init(&argv)
            })
            .map_err(|e| anyhow::anyhow!("starting a thread for DPDK's EAL: {e}"))?
            .join()
            .map_err(|_| anyhow::anyhow!("DPDK's EAL start-up panicked"))?
            .map_err(|e| anyhow::anyhow!("starting DPDK's EAL: {e}"))?;
        let ports = names
            .iter()
            .map(|name| {
                eal.port(name)
                    .map_err(|e| anyhow::anyhow!("--hw-port {name}: {e}"))
            })
            .collect::<anyhow::Result<Vec<Port>>>()?;
        Ok(HwPort {
            names: names.to_vec(),
            ports,
            rules: BTreeMap::new(),
            offload: BTreeMap::new(),
        })
    }

    /// The ports' device names, comma-separated in device order.
    pub fn name(&self) -> String {
        self.names.join(",")
    }

    /// The ethdev port of device port `device` (none: the rule's pod has no VF yet): the
    /// one port of a single-port device, or the port at that position.
    fn port(&self, device: Option<u16>, logical: u16) -> Result<Port, DeviceError> {
        let all = self.ports.as_slice();
        if let [one] = all {
            return Ok(*one);
        }
        let device = device.ok_or_else(|| no_port(logical))?;
        all.get(usize::from(device))
            .copied()
            .ok_or_else(|| DeviceError {
                errno: ENODEV,
                message: format!(
                    "device port {device} is not among the {} --hw-port names",
                    all.len()
                ),
            })
    }

    /// `rte_flow_create` of a plan rule on device port `device` ([`HwPort::port`]). A key
    /// the device already holds is left as it is, so that a repeated create never leaves a
    /// second rule behind with no handle kept.
    pub fn create(
        &mut self,
        key: &str,
        rule: &FlowRule,
        device: Option<u16>,
    ) -> Result<(), DeviceError> {
        if self.rules.contains_key(key) {
            return Ok(());
        }
        let port = self.port(device, rule.port)?;
        let handle = port.create(&CRule::new(rule))?;
        self.rules.insert(key.to_string(), (port, handle));
        Ok(())
    }

    /// `rte_flow_destroy` of a plan rule (nothing when the device holds none for `key`).
    /// On a failure the handle is kept, as the port still holds the rule.
    pub fn destroy(&mut self, key: &str) -> Result<(), DeviceError> {
        let Some((port, handle)) = self.rules.remove(key) else {
            return Ok(());
        };
        port.destroy(handle).map_err(|(e, handle)| {
            self.rules.insert(key.to_string(), (port, handle));
            e
        })
    }

    /// `rte_flow_create` of a connection-offload entry, on the port it names.
    pub fn create_offload(&mut self, entry: &Entry, rule: &FlowRule) -> Result<(), DeviceError> {
        if self.offload.contains_key(entry) {
            return Ok(());
        }
        let port = self.port(Some(entry.port), entry.port)?;
        let handle = port.create(&CRule::new(rule))?;
        self.offload.insert(entry.clone(), (port, handle));
        Ok(())
    }

    /// `rte_flow_destroy` of a connection-offload entry; whether the device held one.
    pub fn destroy_offload(&mut self, entry: &Entry) -> Result<bool, DeviceError> {
        let Some((port, handle)) = self.offload.remove(entry) else {
            return Ok(false);
        };
        match port.destroy(handle) {
            Ok(()) => Ok(true),
            Err((e, handle)) => {
                self.offload.insert(entry.clone(), (port, handle));
                Err(e)
            }
        }
    }

    /// The keys of the plan rules the device holds a handle for.
    pub fn held(&self) -> impl Iterator<Item = &String> {
        self.rules.keys()
    }

    /// The ethdev port id a plan rule was created on.
    pub fn port_of(&self, key: &str) -> Option<u16> {
        self.rules.get(key).map(|(p, _)| p.id)
    }
}
