//! The eBPF target as a [`Backend`]: the whole MAG compiles into map contents
//! ([`mag_to_ebpf`](crate::codegen::mag_to_ebpf)), and a change is the [`MapOp`]s between two of them ([`MapOps`]).
//!
//! The eBPF pipeline always holds every rule, so it ignores the plan: whatever the
//! hardware takes is still decided here too.

use crate::artifact::MapName;
use crate::artifact::Prefix;
use crate::artifact::{diff_entries, EbpfArtifact, MapEntries, MapOp};
use crate::codegen::{mag_to_ebpf_cached, PolicyCache, TARGET};
use crate::incremental::mag_to_ebpf_after;
use crate::sizes::MapSizes;
use pipec::backend::{
    ebpf_profile, Artifact, Backend, CompileInput, Operations, Profile, Unsupported,
};
use pipec::lower::incremental::Diff;
use pipec::model::Cluster;
use std::any::Any;
use std::collections::BTreeMap;

/// The interface (ifindex) of each local pod address, as the node's runtime attached them:
/// shared between the runtime, which fills it when the CNI wires a pod, and the backend,
/// which writes it into the `endpoints` map (the anti-spoofing check compares it with the
/// device a packet came in on).
pub type Interfaces = std::sync::Arc<std::sync::RwLock<BTreeMap<std::net::IpAddr, u32>>>;

/// The eBPF backend (target `ebpf`).
#[derive(Clone, Debug)]
pub struct EbpfBackend {
    profile: Profile,
    interfaces: Option<Interfaces>,
    /// The policy entries of the last compile, per endpoint (see [`PolicyCache`]).
    cache: std::sync::Arc<std::sync::Mutex<PolicyCache>>,
    /// The sizes of the maps the artifacts are written to: a compile that overfills one
    /// is refused. Without a device, the ceilings.
    sizes: SharedSizes,
}

/// The sizes of a datapath's maps, shared between the runtime, which sets them when it
/// creates the maps (sized for the first state when no size is asked for), and the
/// backend, which refuses a state that overfills them.
pub type SharedSizes = std::sync::Arc<std::sync::RwLock<MapSizes>>;

impl Default for EbpfBackend {
    fn default() -> Self {
        EbpfBackend {
            profile: ebpf_profile(),
            interfaces: None,
            cache: Default::default(),
            sizes: std::sync::Arc::new(std::sync::RwLock::new(MapSizes::ceilings())),
        }
    }
}

impl EbpfBackend {
    /// A backend that binds each local endpoint to its pod's interface from `interfaces`
    /// (endpoints without one keep ifindex 0, which no packet comes in on).
    pub fn with_interfaces(interfaces: Interfaces) -> EbpfBackend {
        EbpfBackend {
            interfaces: Some(interfaces),
            ..EbpfBackend::default()
        }
    }

    /// The backend for a datapath whose maps have `sizes`: it refuses a state that
    /// overfills one.
    pub fn with_sizes(self, sizes: MapSizes) -> EbpfBackend {
        self.with_shared_sizes(std::sync::Arc::new(std::sync::RwLock::new(sizes)))
    }

    /// The parts of an artifact that are not the graph's: the IPsec routes of the
    /// cluster, and each local endpoint's interface; then the check that it fits the maps.
    fn finish(
        &self,
        input: &CompileInput<'_>,
        mut artifact: EbpfArtifact,
    ) -> Result<Box<dyn Artifact>, Unsupported> {
        artifact.ipsec = ipsec_routes(input.cluster, input.node);
        check_capacity(
            &artifact,
            &self.sizes.read().unwrap_or_else(|p| p.into_inner()),
        )?;
        if let Some(interfaces) = &self.interfaces {
            let by_addr = interfaces.read().unwrap_or_else(|p| p.into_inner());
            for (addr, e) in artifact.endpoints.iter_mut() {
                if let Some(i) = by_addr.get(addr) {
                    e.ifindex = *i;
                }
            }
        }
        Ok(Box::new(artifact))
    }

    /// [`EbpfBackend::with_sizes`] with sizes that may change after: those of maps not
    /// created yet, which the runtime sizes for the first state.
    pub fn with_shared_sizes(self, sizes: SharedSizes) -> EbpfBackend {
        EbpfBackend { sizes, ..self }
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
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let artifact = mag_to_ebpf_cached(input.mag, input.info, &mut cache)?;
        drop(cache);
        self.finish(input, artifact)
    }

    fn recompile(
        &self,
        input: &CompileInput<'_>,
        before: &dyn Artifact,
        diff: &Diff,
    ) -> Result<Box<dyn Artifact>, Unsupported> {
        let Some(before) = before.as_any().downcast_ref::<EbpfArtifact>() else {
            return self.compile(input);
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let artifact = mag_to_ebpf_after(input.mag, input.info, &mut cache, before, diff)?;
        drop(cache);
        self.finish(input, artifact)
    }

    fn diff(&self, old: Option<&dyn Artifact>, new: &dyn Artifact) -> Box<dyn Operations> {
        fn ebpf(a: &dyn Artifact) -> Option<&EbpfArtifact> {
            a.as_any().downcast_ref::<EbpfArtifact>()
        }
        let ops = match (old.and_then(ebpf), ebpf(new)) {
            (Some(old), Some(new)) => new.diff(old),
            (None, Some(new)) => diff_entries(&Default::default(), &new.entries()),
            (Some(old), None) => diff_entries(&old.entries(), &Default::default()),
            (None, None) => Vec::new(),
        };
        Box::new(MapOps { ops })
    }
}

/// The `ipsec` map of `node`: when the cluster has Cilium's IPsec key Secret, every remote
/// node's pod CIDRs and the addresses of its pods (not host-network ones, whose address is
/// the node's) map to the node's peer id: its 1-based position among `node`'s peers in
/// name order, the order in which the CPT target numbers its SA slots. Without the Secret
/// the map is empty and `to_wire` hands nothing to the CPT.
pub fn ipsec_routes(cluster: &Cluster, node: &str) -> BTreeMap<Prefix, u32> {
    let mut out = BTreeMap::new();
    let on = cluster
        .secrets
        .iter()
        .any(|s| s.namespace == "kube-system" && s.name == "cilium-ipsec-keys");
    if !on {
        return out;
    }
    let peers: BTreeMap<&str, u32> = cluster
        .nodes
        .iter()
        .filter(|n| n.name != node)
        .zip(1u32..)
        .map(|(n, id)| (n.name.as_str(), id))
        .collect();
    for n in &cluster.nodes {
        if let Some(&id) = peers.get(n.name.as_str()) {
            for net in &n.pod_cidrs {
                let prefix = Prefix {
                    addr: net.network(),
                    len: net.prefix_len(),
                };
                out.insert(prefix, id);
            }
        }
    }
    let cidrs: BTreeMap<&str, &[ipnet::IpNet]> = cluster
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.pod_cidrs.as_slice()))
        .collect();
    for pod in cluster.pods.iter().filter(|p| !p.host_network) {
        let Some((name, &id)) = pod.node.as_deref().and_then(|n| peers.get_key_value(n)) else {
            continue;
        };
        let covered = cidrs.get(name).copied().unwrap_or_default();
        // An address inside its node's pod CIDR is already covered by the CIDR's entry.
        for &addr in pod
            .ips
            .iter()
            .filter(|a| !covered.iter().any(|c| c.contains(*a)))
        {
            let len = if addr.is_ipv4() { 32 } else { 128 };
            out.insert(Prefix { addr, len }, id);
        }
    }
    out
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

/// Refuses an artifact that overfills a map: the kernel cannot hold more than a map was
/// created with, and a map it cannot fill would leave the pipeline half-applied. The first
/// overfilled map, in map order, is the reason; it names the setting that sizes the map.
fn check_capacity(artifact: &EbpfArtifact, sizes: &MapSizes) -> Result<(), Unsupported> {
    match sizes.overfilled(artifact) {
        None => Ok(()),
        Some((map, n)) => Err(Unsupported::new(
            TARGET,
            pipec::backend::Reason::Capacity {
                resource: format!(
                    "`{}` map entries ({n} needed; pipecd --ebpf-map-entries {}=N sizes it)",
                    map.as_str(),
                    map.as_str()
                ),
                limit: sizes.get(map),
            },
        )),
    }
}

#[cfg(test)]
mod capacity_tests {
    use super::*;
    use crate::sizes::tests::with_backends;

    /// An artifact with one backend more than the `backends` map holds is refused, and the
    /// reason names the map, what it needs, what it holds and the setting that sizes it.
    #[test]
    fn an_overfilled_map_is_refused() {
        let room = MapName::Backends.capacity() as u32;
        let defaults = MapSizes::default();
        assert!(
            check_capacity(&with_backends(room), &defaults).is_ok(),
            "a full map is not overfilled"
        );
        let a = with_backends(room + 1);
        let e = check_capacity(&a, &defaults)
            .expect_err("one backend too many")
            .to_string();
        assert!(
            e.contains("`backends` map entries (65537 needed;")
                && e.contains("--ebpf-map-entries backends=N")
                && e.contains("65536"),
            "{e}"
        );
        assert!(check_capacity(&a, &MapSizes::ceilings()).is_ok());
    }
}

/// The `pipec explain` line on the eBPF maps: whether the node's artifact fits the sizes
/// pipecd creates the maps with by default (its fullest map), or the
/// `--ebpf-map-entries` pipecd needs for it. Empty when the session has no eBPF target.
pub fn explain_line(session: &pipec::session::Session) -> String {
    let artifact = match session.artifact(TARGET) {
        None => return String::new(),
        Some(Err(e)) => return format!("\nebpf maps: not compiled: {e}\n"),
        Some(Ok(a)) => a.as_any().downcast_ref::<EbpfArtifact>(),
    };
    match artifact {
        Some(artifact) => maps_line(artifact),
        None => String::new(),
    }
}

/// [`explain_line`] of one artifact.
fn maps_line(artifact: &EbpfArtifact) -> String {
    let defaults = MapSizes::default();
    let fill = artifact.map_sizes();
    let over: Vec<String> = fill
        .iter()
        .filter(|(map, n)| **n > defaults.get(**map))
        .map(|(map, n)| {
            format!(
                "{} {n} entries, default {}",
                map.as_str(),
                defaults.get(*map)
            )
        })
        .collect();
    if !over.is_empty() {
        return format!(
            "\nebpf maps: larger than pipecd's defaults ({}): run pipecd with --ebpf-map-entries {}\n",
            over.join("; "),
            MapSizes::to_hold(artifact)
        );
    }
    // The fullest map by share of its size (ties to the first in map order); `config`
    // always holds its one entry.
    let fullest = fill
        .iter()
        .filter(|(map, _)| **map != MapName::Config)
        .fold(None, |best: Option<(MapName, u64)>, (map, n)| {
            let share = |(m, k): (MapName, u64)| k as f64 / defaults.get(m) as f64;
            match best {
                Some(b) if share(b) >= share((*map, *n)) => Some(b),
                _ => Some((*map, *n)),
            }
        });
    match fullest {
        Some((map, n)) => format!(
            "\nebpf maps: within pipecd's default sizes (fullest: {} {n} of {} entries)\n",
            map.as_str(),
            defaults.get(map)
        ),
        None => "\nebpf maps: empty\n".to_string(),
    }
}

#[cfg(test)]
mod explain_tests {
    use super::*;
    use crate::sizes::tests::with_backends;

    #[test]
    fn the_maps_line_names_the_setting_a_large_node_needs() {
        assert_eq!(maps_line(&EbpfArtifact::default()), "\nebpf maps: empty\n");
        assert_eq!(
            maps_line(&with_backends(65_537)),
            "\nebpf maps: larger than pipecd's defaults (backends 65537 entries, default 65536): \
             run pipecd with --ebpf-map-entries backends=131072\n"
        );
        assert_eq!(
            maps_line(&with_backends(100)),
            "\nebpf maps: within pipecd's default sizes (fullest: backends 100 of 65536 entries)\n"
        );
    }
}
