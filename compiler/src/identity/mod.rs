//! Security identities, numbered the way Cilium numbers them, and the ipcache.
//!
//! An identity is the set of identity-relevant labels of an endpoint: its pod labels (less
//! the ones Cilium's default label filter drops, such as `pod-template-hash`), its namespace,
//! its namespace's labels, its service account and the cluster name, each in Cilium's
//! `source:key=value` form. Pods with equal label sets share an identity.
//!
//! Numbers: reserved identities 1..=10 as in Cilium; cluster identities from 256 in the
//! sorted order of their label sets, unless a CiliumIdentity object gives the number for the
//! same labels, in which case that number is used so that pipec and a live Cilium agree;
//! CIDR identities are local identities (bit 24 set) numbered in CIDR order.
//!
//! The ipcache maps every pod IP, node IP and policy CIDR to an identity; a lookup takes the
//! longest matching prefix, and anything else is `world`.
//!
//! One deliberate difference from Cilium: a label key that some policy selector names is
//! always identity-relevant, even if the default filter would drop it. Otherwise two pods a
//! NetworkPolicy tells apart would share an identity, and an identity-keyed datapath could
//! not enforce that policy.

pub mod text;

use crate::model::{AdminPeer, AdminSubject, Cluster, Labels, NpPeer, PodId, Selector};
use crate::util::FxHashMap;
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A security identity number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct IdentityId(pub u32);

impl fmt::Display for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Cilium's reserved identities.
pub mod reserved {
    use super::IdentityId;
    /// The local host.
    pub const HOST: IdentityId = IdentityId(1);
    /// Anything outside the cluster.
    pub const WORLD: IdentityId = IdentityId(2);
    /// Pods not managed by Cilium.
    pub const UNMANAGED: IdentityId = IdentityId(3);
    /// Health-check endpoints.
    pub const HEALTH: IdentityId = IdentityId(4);
    /// Endpoints whose identity is not known yet.
    pub const INIT: IdentityId = IdentityId(5);
    /// Other nodes of the cluster.
    pub const REMOTE_NODE: IdentityId = IdentityId(6);
    /// The Kubernetes API server.
    pub const KUBE_APISERVER: IdentityId = IdentityId(7);
    /// Cilium's ingress proxy.
    pub const INGRESS: IdentityId = IdentityId(8);
    /// IPv4 addresses outside the cluster (dual-stack mode).
    pub const WORLD_IPV4: IdentityId = IdentityId(9);
    /// IPv6 addresses outside the cluster (dual-stack mode).
    pub const WORLD_IPV6: IdentityId = IdentityId(10);
    /// The first number of cluster identities.
    pub const FIRST_CLUSTER: u32 = 256;
    /// The bit that marks node-local identities (CIDR identities).
    pub const LOCAL_FLAG: u32 = 1 << 24;

    /// Name and labels of each reserved identity.
    pub const ALL: [(IdentityId, &str); 10] = [
        (HOST, "host"),
        (WORLD, "world"),
        (UNMANAGED, "unmanaged"),
        (HEALTH, "health"),
        (INIT, "init"),
        (REMOTE_NODE, "remote-node"),
        (KUBE_APISERVER, "kube-apiserver"),
        (INGRESS, "ingress"),
        (WORLD_IPV4, "world-ipv4"),
        (WORLD_IPV6, "world-ipv6"),
    ];
}

/// What kind of identity a number is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum IdentityKind {
    /// One of Cilium's reserved numbers.
    Reserved,
    /// A set of endpoint labels.
    Cluster,
    /// A CIDR used by a policy.
    Cidr,
}

/// One identity: its number, kind and labels (`source:key=value`, sorted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Number.
    pub id: IdentityId,
    /// Kind.
    pub kind: IdentityKind,
    /// Labels, as a sorted map of `source:key` → value.
    pub labels: Labels,
    /// Whether the number came from a CiliumIdentity object.
    pub from_object: bool,
}

/// The ipcache: prefixes → identities, looked up by longest prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IpCache {
    /// Every prefix, ordered.
    pub entries: BTreeMap<IpNet, IdentityId>,
    /// Prefix lengths present, longest first, so a lookup tries only lengths in use.
    #[serde(skip)]
    lengths: Vec<(bool, u8)>,
}

impl IpCache {
    fn insert(&mut self, net: IpNet, id: IdentityId) {
        self.entries.entry(net.trunc()).or_insert(id);
    }

    fn finish(&mut self) {
        let set: BTreeSet<(bool, u8)> = self
            .entries
            .keys()
            .map(|n| (n.addr().is_ipv6(), n.prefix_len()))
            .collect();
        self.lengths = set.into_iter().rev().collect();
    }

    /// The identity of `ip`: the longest prefix that contains it, else `world`.
    pub fn lookup(&self, ip: IpAddr) -> IdentityId {
        self.lookup_entry(ip)
            .map(|(_, id)| id)
            .unwrap_or(reserved::WORLD)
    }

    /// The longest prefix containing `ip` and its identity, if any.
    pub fn lookup_entry(&self, ip: IpAddr) -> Option<(IpNet, IdentityId)> {
        for &(v6, len) in self.lengths.iter().filter(|(v6, _)| *v6 == ip.is_ipv6()) {
            let _ = v6;
            let Ok(net) = IpNet::new(ip, len) else {
                continue;
            };
            if let Some(id) = self.entries.get(&net.trunc()) {
                return Some((net.trunc(), *id));
            }
        }
        None
    }
}

/// Identities and the ipcache of one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Identities {
    /// Every identity by number.
    pub by_id: BTreeMap<IdentityId, Identity>,
    /// The identity of each pod, by pod index.
    pub pods: Vec<IdentityId>,
    /// The ipcache.
    pub ipcache: IpCache,
}

impl Identities {
    /// The identity of a pod.
    pub fn of_pod(&self, pod: PodId) -> IdentityId {
        self.pods[pod.0 as usize]
    }

    /// The labels of an identity.
    pub fn labels(&self, id: IdentityId) -> Option<&Labels> {
        self.by_id.get(&id).map(|i| &i.labels)
    }
}

/// Label keys that Cilium's default filter leaves out of identities.
fn filtered_by_default(key: &str) -> bool {
    const EXACT_PREFIXES: [&str; 5] = [
        "pod-template-generation",
        "pod-template-hash",
        "controller-revision-hash",
        "annotation.",
        "etcd_node",
    ];
    if EXACT_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return true;
    }
    let domain = key.split_once('/').map(|(d, _)| d).unwrap_or("");
    if domain == "app.kubernetes.io" {
        return false;
    }
    key.starts_with("io.kubernetes")
        || domain == "kubernetes.io"
        || domain.ends_with(".kubernetes.io")
        || domain == "k8s.io"
        || domain.ends_with(".k8s.io")
}

/// The Cilium label set of a pod: `source:key` → value.
///
/// `relevant` holds label keys some policy selects on, which are kept even when Cilium's
/// default filter would drop them.
pub fn pod_labels(cluster: &Cluster, pod: PodId, relevant: &BTreeSet<String>) -> Labels {
    let p = cluster.pod(pod);
    let mut out = Labels::new();
    for (k, v) in &p.labels {
        if !filtered_by_default(k) || relevant.contains(k) {
            out.insert(format!("k8s:{k}"), v.clone());
        }
    }
    out.insert(
        "k8s:io.kubernetes.pod.namespace".into(),
        p.namespace.clone(),
    );
    for (k, v) in cluster.namespace_labels(&p.namespace) {
        out.insert(format!("k8s:io.cilium.k8s.namespace.labels.{k}"), v.clone());
    }
    out.insert(
        "k8s:io.cilium.k8s.policy.serviceaccount".into(),
        p.service_account.clone(),
    );
    out.insert(
        "k8s:io.cilium.k8s.policy.cluster".into(),
        cluster.name.clone(),
    );
    for (k, v) in &p.cilium_labels {
        let key = if has_source(k) {
            k.clone()
        } else {
            format!("k8s:{k}")
        };
        out.insert(key, v.clone());
    }
    out
}

/// Whether a Cilium label key carries a source prefix (`k8s:`, `reserved:`, ...).
pub fn has_source(key: &str) -> bool {
    matches!(key.split_once(':'), Some((src, _)) if ["k8s", "reserved", "any", "cidr", "unspec", "container", "cilium", "fqdn", "kvstore", "cni"].contains(&src))
}

/// Looks a selector key up in a Cilium label set: `any:` or no source matches any source.
pub fn cilium_get<'a>(labels: &'a Labels, key: &str) -> Option<&'a str> {
    let (source, bare) = match key.split_once(':') {
        Some((src, rest)) if has_source(key) => (Some(src), rest),
        _ => (None, key),
    };
    match source {
        Some(src) if src != "any" => labels.get(key).map(String::as_str),
        _ => labels
            .iter()
            .find(|(k, _)| k.split_once(':').map(|(_, b)| b) == Some(bare))
            .map(|(_, v)| v.as_str()),
    }
}

/// Whether a Cilium endpoint selector matches a Cilium label set.
pub fn cilium_matches(selector: &Selector, labels: &Labels) -> bool {
    selector.matches_with(|k| cilium_get(labels, k))
}

/// Label keys named by any selector of any policy (without Cilium source prefixes).
pub fn selected_keys(cluster: &Cluster) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut add = |s: &Selector| {
        for k in s
            .match_labels
            .keys()
            .chain(s.expressions.iter().map(|r| &r.key))
        {
            let bare = if has_source(k) {
                k.split_once(':').map(|(_, b)| b).unwrap_or(k)
            } else {
                k
            };
            keys.insert(bare.to_string());
        }
    };
    for np in &cluster.network_policies {
        add(&np.pod_selector);
        for r in np.ingress.iter().chain(&np.egress) {
            for p in &r.peers {
                if let NpPeer::Pods { pods: Some(s), .. } = p {
                    add(s);
                }
            }
        }
    }
    for cp in &cluster.cilium_policies {
        for spec in &cp.specs {
            add(&spec.endpoint_selector);
            for r in spec
                .ingress
                .iter()
                .chain(&spec.ingress_deny)
                .chain(&spec.egress)
                .chain(&spec.egress_deny)
            {
                r.endpoints.iter().chain(&r.requires).for_each(&mut add);
            }
        }
    }
    for ap in &cluster.admin_policies {
        if let AdminSubject::Pods { pods, .. } = &ap.subject {
            add(pods);
        }
        for r in ap.ingress.iter().chain(&ap.egress) {
            for p in &r.peers {
                if let AdminPeer::Pods { pods, .. } = p {
                    add(pods);
                }
            }
        }
    }
    keys
}

/// Computes identities and the ipcache of a cluster. `local_node` names the node pipec
/// compiles for: its addresses map to `host`, other nodes' to `remote-node`.
pub fn cluster_to_identities(cluster: &Cluster, local_node: Option<&str>) -> Identities {
    cluster_to_identities_and_sets(cluster, local_node).0
}

/// A distinct pod label set ([`pod_labels`]), its identity, and how many pods have it.
pub type LabelSet = (Labels, IdentityId, usize);

/// [`cluster_to_identities`], and the distinct pod label sets it computed on the way.
///
/// Incremental lowering indexes pods by label set; taking the sets from here spares it a
/// second [`pod_labels`] pass over every pod of the cluster.
pub fn cluster_to_identities_and_sets(
    cluster: &Cluster,
    local_node: Option<&str>,
) -> (Identities, Vec<LabelSet>) {
    let mut ids = Identities::default();
    for (id, name) in reserved::ALL {
        let labels = Labels::from([(format!("reserved:{name}"), String::new())]);
        ids.by_id.insert(
            id,
            Identity {
                id,
                kind: IdentityKind::Reserved,
                labels,
                from_object: false,
            },
        );
    }
    let relevant = selected_keys(cluster);
    // Label sets are interned first, then numbered in sorted order for determinism.
    let mut interned: FxHashMap<Labels, usize> = FxHashMap::default();
    let mut sets: Vec<Labels> = Vec::new();
    let mut pod_set = Vec::with_capacity(cluster.pods.len());
    // Pods with the same inputs to `pod_labels` (replicas of one workload, mostly) get the
    // same label set; it is built once per distinct input, not once per pod.
    // Replicas are mostly adjacent (pods are sorted by name), so the previous pod is tried
    // before the map.
    let mut by_input: FxHashMap<(&str, &str, &Labels, &Labels), usize> = FxHashMap::default();
    let mut last = None;
    for pod in cluster.pod_ids() {
        let p = cluster.pod(pod);
        let input = (
            p.namespace.as_str(),
            p.service_account.as_str(),
            &p.labels,
            &p.cilium_labels,
        );
        let idx = match last.filter(|(i, _)| *i == input).map(|(_, idx)| idx) {
            Some(idx) => idx,
            None => match by_input.get(&input) {
                Some(&idx) => idx,
                None => {
                    let labels = pod_labels(cluster, pod, &relevant);
                    let next = sets.len();
                    let idx = *interned.entry(labels.clone()).or_insert_with(|| {
                        sets.push(labels);
                        next
                    });
                    by_input.insert(input, idx);
                    idx
                }
            },
        };
        last = Some((input, idx));
        pod_set.push(idx);
    }
    let given: HashMap<&Labels, u32> = cluster
        .cilium_identities
        .iter()
        .map(|i| (&i.labels, i.id))
        .collect();
    // A session's pinned numbers come after the objects' (an object for the same labels
    // wins), and its retired numbers are never handed out again.
    let pins = &cluster.identity_pins;
    let objects: BTreeSet<u32> = given.values().copied().collect();
    let pinned = |labels: &Labels| {
        pins.numbers
            .get(labels)
            .copied()
            .filter(|n| !objects.contains(n))
    };
    let mut used = objects.clone();
    used.extend(pins.numbers.values().copied());
    used.extend(pins.retired.iter().copied());
    let mut order: Vec<usize> = (0..sets.len()).collect();
    order.sort_by(|a, b| sets[*a].cmp(&sets[*b]));
    let mut number_of = vec![IdentityId(0); sets.len()];
    let mut next = reserved::FIRST_CLUSTER;
    for idx in order {
        let (num, from_object) = match (given.get(&sets[idx]), pinned(&sets[idx])) {
            (Some(n), _) => (*n, true),
            (None, Some(n)) => (n, false),
            (None, None) => {
                while used.contains(&next) {
                    next += 1;
                }
                next += 1;
                (next - 1, false)
            }
        };
        number_of[idx] = IdentityId(num);
        ids.by_id.insert(
            IdentityId(num),
            Identity {
                id: IdentityId(num),
                kind: IdentityKind::Cluster,
                labels: sets[idx].clone(),
                from_object,
            },
        );
    }
    // CiliumIdentity objects for label sets no pod has are still known numbers.
    for obj in &cluster.cilium_identities {
        ids.by_id
            .entry(IdentityId(obj.id))
            .or_insert_with(|| Identity {
                id: IdentityId(obj.id),
                kind: IdentityKind::Cluster,
                labels: obj.labels.clone(),
                from_object: true,
            });
    }
    ids.pods = pod_set.iter().map(|i| number_of[*i]).collect();
    fill_ipcache(cluster, local_node, &mut ids);
    let mut counts = vec![0; sets.len()];
    for idx in &pod_set {
        counts[*idx] += 1;
    }
    let label_sets = sets
        .into_iter()
        .zip(number_of)
        .zip(counts)
        .map(|((labels, id), n)| (labels, id, n))
        .collect();
    (ids, label_sets)
}

fn fill_ipcache(cluster: &Cluster, local_node: Option<&str>, ids: &mut Identities) {
    let mut cache = IpCache::default();
    cache.insert(
        IpNet::from(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).supernet_or_self(0),
        reserved::WORLD,
    );
    cache.insert(
        IpNet::from(IpAddr::V6(Ipv6Addr::UNSPECIFIED)).supernet_or_self(0),
        reserved::WORLD,
    );
    // Pod addresses are inserted in address order (the first pod wins a duplicate, as
    // before): in-order inserts into the B-tree are much cheaper than random ones.
    let mut pod_entries: Vec<(IpNet, IdentityId)> = Vec::with_capacity(cluster.pods.len());
    for (i, pod) in cluster.pods.iter().enumerate() {
        let id = if pod.host_network {
            continue;
        } else {
            ids.pods[i]
        };
        for ip in &pod.ips {
            pod_entries.push((IpNet::from(*ip), id));
        }
    }
    pod_entries.sort_by_key(|(net, _)| *net);
    for (net, id) in pod_entries {
        cache.insert(net, id);
    }
    for node in &cluster.nodes {
        let id = if Some(node.name.as_str()) == local_node {
            reserved::HOST
        } else {
            reserved::REMOTE_NODE
        };
        for ip in &node.addresses {
            cache.insert(IpNet::from(*ip), id);
        }
    }
    if let Some(api) = cluster.find_service("default", "kubernetes") {
        for b in &cluster.service(api).backends {
            cache
                .entries
                .insert(IpNet::from(b.ip), reserved::KUBE_APISERVER);
        }
    }
    let mut cidrs: BTreeSet<IpNet> = BTreeSet::new();
    for np in &cluster.network_policies {
        for r in np.ingress.iter().chain(&np.egress) {
            for p in &r.peers {
                if let NpPeer::IpBlock { cidr, except } = p {
                    cidrs.insert(*cidr);
                    cidrs.extend(except.iter().copied());
                }
            }
        }
    }
    for cp in &cluster.cilium_policies {
        for spec in &cp.specs {
            for r in spec
                .ingress
                .iter()
                .chain(&spec.ingress_deny)
                .chain(&spec.egress)
                .chain(&spec.egress_deny)
            {
                for c in &r.cidrs {
                    cidrs.insert(c.cidr);
                    cidrs.extend(c.except.iter().copied());
                }
            }
        }
    }
    for ap in &cluster.admin_policies {
        for r in ap.ingress.iter().chain(&ap.egress) {
            for p in &r.peers {
                if let AdminPeer::Networks(nets) = p {
                    for c in nets {
                        cidrs.insert(c.cidr);
                        cidrs.extend(c.except.iter().copied());
                    }
                }
            }
        }
    }
    let mut n = 1;
    for cidr in cidrs {
        let cidr = cidr.trunc();
        if cache.entries.contains_key(&cidr) || cidr.prefix_len() == 0 {
            continue;
        }
        let id = IdentityId(reserved::LOCAL_FLAG | n);
        n += 1;
        let mut labels = Labels::from([(format!("cidr:{cidr}"), String::new())]);
        labels.insert("reserved:world".into(), String::new());
        ids.by_id.insert(
            id,
            Identity {
                id,
                kind: IdentityKind::Cidr,
                labels,
                from_object: false,
            },
        );
        cache.insert(cidr, id);
    }
    cache.finish();
    ids.ipcache = cache;
}

trait SupernetOrSelf {
    fn supernet_or_self(self, len: u8) -> IpNet;
}

impl SupernetOrSelf for IpNet {
    fn supernet_or_self(self, len: u8) -> IpNet {
        IpNet::new(self.addr(), len)
            .map(|n| n.trunc())
            .unwrap_or(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_matches_ciliums_list() {
        assert!(filtered_by_default("pod-template-hash"));
        assert!(filtered_by_default("controller-revision-hash"));
        assert!(filtered_by_default("statefulset.kubernetes.io/pod-name"));
        assert!(filtered_by_default("kubernetes.io/hostname"));
        assert!(!filtered_by_default("app.kubernetes.io/name"));
        assert!(!filtered_by_default("app"));
    }

    #[test]
    fn any_source_and_explicit_source_lookups() {
        let labels = Labels::from([
            ("k8s:app".to_string(), "web".to_string()),
            ("reserved:host".to_string(), String::new()),
        ]);
        assert_eq!(cilium_get(&labels, "app"), Some("web"));
        assert_eq!(cilium_get(&labels, "k8s:app"), Some("web"));
        assert_eq!(cilium_get(&labels, "any:app"), Some("web"));
        assert_eq!(cilium_get(&labels, "reserved:app"), None);
        assert_eq!(cilium_get(&labels, "reserved:host"), Some(""));
    }
}
