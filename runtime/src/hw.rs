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

/// An ethdev port and the flow rules pipecd created on it.
pub struct HwPort {
    /// The port's device name (`net_null0`), for the status.
    name: String,
    port: Port,
    /// The policy plan's rules, by rule key.
    rules: BTreeMap<String, FlowHandle>,
    /// The connection-offload entries.
    offload: BTreeMap<Entry, FlowHandle>,
}

impl HwPort {
    /// Starts DPDK's EAL with `eal_args` (without `argv[0]`) and opens the ethdev port
    /// named `name`. EAL starts once per process, so a second port would share the first
    /// one's arguments; pipecd opens one.
    pub fn open(name: &str, eal_args: &[String]) -> anyhow::Result<HwPort> {
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
        let port = eal
            .port(name)
            .map_err(|e| anyhow::anyhow!("--hw-port {name}: {e}"))?;
        Ok(HwPort {
            name: name.to_string(),
            port,
            rules: BTreeMap::new(),
            offload: BTreeMap::new(),
        })
    }

    /// The port's device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `rte_flow_create` of a plan rule. A key the port already holds is left as it is, so
    /// that a repeated create never leaves a second rule behind with no handle kept.
    pub fn create(&mut self, key: &str, rule: &FlowRule) -> Result<(), DeviceError> {
        if self.rules.contains_key(key) {
            return Ok(());
        }
        let handle = self.port.create(&CRule::new(rule))?;
        self.rules.insert(key.to_string(), handle);
        Ok(())
    }

    /// `rte_flow_destroy` of a plan rule (nothing when the port holds none for `key`). On a
    /// failure the handle is kept, as the port still holds the rule.
    pub fn destroy(&mut self, key: &str) -> Result<(), DeviceError> {
        let Some(handle) = self.rules.remove(key) else {
            return Ok(());
        };
        self.port.destroy(handle).map_err(|(e, handle)| {
            self.rules.insert(key.to_string(), handle);
            e
        })
    }

    /// `rte_flow_create` of a connection-offload entry.
    pub fn create_offload(&mut self, entry: &Entry, rule: &FlowRule) -> Result<(), DeviceError> {
        if self.offload.contains_key(entry) {
            return Ok(());
        }
        let handle = self.port.create(&CRule::new(rule))?;
        self.offload.insert(entry.clone(), handle);
        Ok(())
    }

    /// `rte_flow_destroy` of a connection-offload entry; whether the port held one.
    pub fn destroy_offload(&mut self, entry: &Entry) -> Result<bool, DeviceError> {
        let Some(handle) = self.offload.remove(entry) else {
            return Ok(false);
        };
        match self.port.destroy(handle) {
            Ok(()) => Ok(true),
            Err((e, handle)) => {
                self.offload.insert(entry.clone(), handle);
                Err(e)
            }
        }
    }

    /// The keys of the plan rules the port holds a handle for.
    pub fn held(&self) -> impl Iterator<Item = &String> {
        self.rules.keys()
    }
}
