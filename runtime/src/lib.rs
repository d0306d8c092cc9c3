//! `pipecd`, the runtime daemon on the DPU: it keeps one node's datapath equal to the
//! cluster's state. Sources (a manifests directory, the Kubernetes API) feed a compile session
//! ([`pipec::session::Session`]); each change's operations go to the device (the eBPF maps
//! first, then the hardware flow table and the CPT's SAs), make-before-break; a change the
//! session refuses is reported and the last good state stays applied.
//!
//! - [`source`]: the manifests directory as per-file session events;
//! - [`api`]: the Kubernetes API's watchers, folded into per-object changes;
//! - [`device`]: the model and kernel datapaths, reconciliation on start;
//! - `hw` (feature `dpdk`): the hardware flow table as a real DPDK ethdev port;
//! - [`daemon`]: one step of the loop;
//! - [`metrics`], [`http`]: status, Prometheus text, health and readiness;
//! - [`cni`]: the pods the CNI plugin wired (attachments kept across restarts);
//! - [`offload`]: connection offload, exact 5-tuple entries for established pod-to-pod
//!   connections, driven from a scan of the eBPF conntrack ([`offload::driver`]);
//! - [`observe`]: flow events from the ring buffer, named by their rule, for `pipec observe`;
//! - [`control`]: the control API (gRPC on a unix socket): status, live explain and trace;
//! - [`state`]: identity numbers kept across restarts;
//! - [`shutdown`]: stopping on SIGTERM within a bound, the datapath left in place.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use clap as _;
use mimalloc as _;
use notify as _;
use tracing_subscriber as _;
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
use serde_yaml as _;

pub mod api;
pub mod cni;
pub mod control;
pub mod daemon;
pub mod device;
pub mod http;
#[cfg(feature = "dpdk")]
pub mod hw;
pub mod metrics;
pub mod observe;
pub mod offload;
pub mod shutdown;
pub mod source;
pub mod state;
