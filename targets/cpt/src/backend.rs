//! The CPT target behind pipec's `Backend` seam, so that a compile session compiles a
//! node's SA set with its other targets and reports SA operations in its `Changes`.
//!
//! The target takes no match-action rules (its profile declares no field and no action, so
//! the partitioner never places a rule on it); it compiles cluster state the MAG does not
//! carry: the Nodes, their boot IDs and the `cilium-ipsec-keys` Secret. Without that Secret
//! IPsec is off and the artifact is empty. A malformed Secret is an `invalid-input` refusal
//! carrying the coded diagnostics, which makes a session reject the change and keep its
//! last good state.

use std::any::Any;

use pipec::backend::{
    Artifact, Backend, Budget, Capabilities, CompileInput, Operations, Profile, Reason, Unsupported,
};
use serde::Serialize;

use crate::ops::{diff, SaOp};
use crate::sa::{compile_with, CptArtifact, DeviceLimits};
use crate::secret::keys_from_cluster;

/// The target's name, as `--emit` and the session's `Changes` use it.
pub const TARGET: &str = "cpt";

/// The CPT target.
#[derive(Clone, Debug)]
pub struct CptBackend {
    profile: Profile,
    limits: DeviceLimits,
}

impl Default for CptBackend {
    fn default() -> Self {
        Self::new(DeviceLimits::default())
    }
}

impl CptBackend {
    /// A CPT target for an inline device configured with `limits`.
    pub fn new(limits: DeviceLimits) -> Self {
        let profile = Profile {
            name: TARGET.to_string(),
            description: "OCTEON 10 CPT inline IPsec (rte_security inline protocol, ESP tunnel, AES-GCM-128): node-to-node SAs, no match-action rules".to_string(),
            caps: Capabilities::default(),
            budget: Budget {
                entries: Some(u64::from(limits.out_max_sa)),
                ..Budget::default()
            },
        };
        Self { profile, limits }
    }
}

/// One node's IPsec state: its SA set, or nothing when the cluster has no key Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IpsecArtifact {
    /// The node compiled for.
    pub node: String,
    /// The SA set; `None` when IPsec is off.
    pub sa_set: Option<CptArtifact>,
}

impl IpsecArtifact {
    /// The empty SA set `diff` starts from or ends at (spi 0 is never a key id, so the
    /// first real SPI is advertised).
    fn empty_like(a: &CptArtifact, spi: u32) -> CptArtifact {
        CptArtifact {
            spi,
            sas: Vec::new(),
            steering: Vec::new(),
            skipped: Default::default(),
            ..a.clone()
        }
    }
}

impl Artifact for IpsecArtifact {
    fn target(&self) -> &str {
        TARGET
    }

    fn text(&self) -> String {
        match &self.sa_set {
            Some(a) => a.text(),
            None => format!(
                "# cpt node {}: no kube-system/cilium-ipsec-keys Secret; IPsec is off\n",
                self.node
            ),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    fn items(&self) -> Vec<(String, String)> {
        self.sa_set.as_ref().map(|a| a.items()).unwrap_or_default()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The ordered SA operations of one change (make-before-break; see [`crate::diff`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SaOps {
    /// The operations, in the order the runtime carries them out.
    pub ops: Vec<SaOp>,
}

impl Operations for SaOps {
    fn target(&self) -> &str {
        TARGET
    }

    fn len(&self) -> usize {
        self.ops.len()
    }

    fn text(&self) -> String {
        self.ops.iter().map(|op| format!("{op}\n")).collect()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Backend for CptBackend {
    fn name(&self) -> &str {
        TARGET
    }

    fn profile(&self) -> &Profile {
        &self.profile
    }

    fn compile(&self, input: &CompileInput<'_>) -> Result<Box<dyn Artifact>, Unsupported> {
        let invalid = |diags: Vec<crate::CptDiagnostic>| {
            Unsupported::new(
                TARGET,
                Reason::InvalidInput {
                    diagnostics: diags.iter().map(ToString::to_string).collect(),
                },
            )
        };
        let keys = keys_from_cluster(input.cluster).map_err(invalid)?;
        let sa_set = match keys {
            Some(keys) => {
                Some(compile_with(input.cluster, input.node, &keys, self.limits).map_err(invalid)?)
            }
            None => None,
        };
        Ok(Box::new(IpsecArtifact {
            node: input.node.to_string(),
            sa_set,
        }))
    }

    fn diff(&self, old: Option<&dyn Artifact>, new: &dyn Artifact) -> Box<dyn Operations> {
        let set = |a: &dyn Artifact| {
            a.as_any()
                .downcast_ref::<IpsecArtifact>()
                .and_then(|a| a.sa_set.clone())
        };
        let old = old.and_then(set);
        let new = set(new);
        let ops = match (&old, &new) {
            (None, None) => Vec::new(),
            (None, Some(n)) => diff(&IpsecArtifact::empty_like(n, 0), n),
            (Some(o), None) => diff(o, &IpsecArtifact::empty_like(o, o.spi)),
            (Some(o), Some(n)) => diff(o, n),
        };
        Box::new(SaOps { ops })
    }
}

/// One line on a session's IPsec for `explain`: what the CPT holds, or why it holds nothing.
pub fn explain_line(session: &pipec::session::Session) -> String {
    let art = match session.artifact(TARGET) {
        None => return "\nipsec (cpt): the session has no cpt target\n".to_string(),
        Some(Err(e)) => return format!("\nipsec (cpt): not compiled: {e}\n"),
        Some(Ok(a)) => a.as_any().downcast_ref::<IpsecArtifact>(),
    };
    match art.map(|a| a.sa_set.as_ref()) {
        None => "\nipsec (cpt): the cpt target is not the CPT backend\n".to_string(),
        Some(Some(a)) => format!(
            "\nipsec (cpt): spi {}, {} peers, {} SAs, {} inbound steering rules (pipec compile --emit cpt)\n",
            a.spi,
            a.steering.len(),
            a.sas.len(),
            a.steering.len()
        ),
        Some(None) => "\nipsec (cpt): off (no kube-system/cilium-ipsec-keys Secret)\n".to_string(),
    }
}
