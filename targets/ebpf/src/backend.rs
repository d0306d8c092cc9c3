//! The eBPF target as a [`Backend`]: the whole MAG compiles into map contents
//! ([`mag_to_ebpf`]), and a change is the [`MapOp`]s between two of them ([`MapOps`]).
//!
//! The eBPF pipeline always holds every rule, so it ignores the plan: whatever the
//! hardware takes is still decided here too.

use crate::artifact::{diff_entries, EbpfArtifact, MapEntries, MapOp};
use crate::codegen::{mag_to_ebpf, TARGET};
use pipec::backend::{
    ebpf_profile, Artifact, Backend, CompileInput, Operations, Profile, Unsupported,
};
use std::any::Any;

/// The eBPF backend (target `ebpf`).
#[derive(Clone, Debug)]
pub struct EbpfBackend {
    profile: Profile,
}

impl Default for EbpfBackend {
    fn default() -> Self {
        EbpfBackend {
            profile: ebpf_profile(),
        }
    }
}

impl Backend for EbpfBackend {
    fn name(&self) -> &str {
        TARGET
    }

    fn profile(&self) -> &Profile {
        &self.profile
    }

    fn compile(&self, input: &CompileInput<'_>) -> Result<Box<dyn Artifact>, Unsupported> {
        Ok(Box::new(mag_to_ebpf(input.mag, input.info)?))
    }

    fn diff(&self, old: Option<&dyn Artifact>, new: &dyn Artifact) -> Box<dyn Operations> {
        let entries = |a: Option<&dyn Artifact>| {
            a.and_then(|a| a.as_any().downcast_ref::<EbpfArtifact>())
                .map(EbpfArtifact::entries)
                .unwrap_or_default()
        };
        Box::new(MapOps {
            ops: diff_entries(&entries(old), &entries(Some(new))),
        })
    }
}

/// The map operations of one change, in the order they must be applied: upserts in map
/// order (backends before the services that name them, policy before the endpoints that
/// use it), then deletes in the reverse order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapOps {
    /// The operations.
    pub ops: Vec<MapOp>,
}

impl MapOps {
    /// Applies the operations to an in-memory copy of the maps (the device model the
    /// runtime's `--datapath model` and the session's property test use).
    pub fn apply_to(&self, maps: &mut MapEntries) {
        for op in &self.ops {
            match op {
                MapOp::Upsert { map, key, value } => {
                    maps.insert((*map, key.clone()), value.clone());
                }
                MapOp::Delete { map, key } => {
                    maps.remove(&(*map, key.clone()));
                }
            }
        }
    }
}

impl Operations for MapOps {
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

impl Artifact for EbpfArtifact {
    fn target(&self) -> &str {
        TARGET
    }

    fn text(&self) -> String {
        self.to_string()
    }

    fn json(&self) -> serde_json::Value {
        // The text form is the stable form; JSON carries it line by line, so that a
        // machine reader gets the same content without a second serializer to keep in step.
        serde_json::Value::Array(
            self.to_string()
                .lines()
                .map(|l| serde_json::Value::String(l.to_string()))
                .collect(),
        )
    }

    fn items(&self) -> Vec<(String, String)> {
        self.entries()
            .into_iter()
            .map(|((map, key), value)| (format!("{} {}", map.as_str(), hex(&key)), hex(&value)))
            .collect()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Bytes as lower-case hex, for operation and item text.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
