//! Policy classes: the remote side of a decision-table key.
//!
//! The remote side of a key is a *policy class*, not a bare Cilium identity. A class is the
//! set of addresses that every rule treats alike:
//!
//! - pods with one identity, one set of containing policy CIDRs, and one container-port
//!   list. A Kubernetes `ipBlock` (and an ANP `networks` peer) also matches pod IPs after
//!   DNAT, so two pods of one identity inside and outside a policy CIDR must differ; and a
//!   named port on egress resolves on the destination pod, so pods of one identity that map
//!   a name to different numbers must differ too;
//! - node addresses (host, remote-node) with their labels (ANP `nodes` peers);
//! - kube-apiserver addresses;
//! - each policy CIDR identity, and world (per family, `world-ipv4`/`world-ipv6`).
//!
//! A class keeps its identity's number when the identity has one class; otherwise its
//! classes are numbered from [`SPLIT_BASE`] in sorted order. Cilium identities keep every
//! label key a policy selects on (see [`crate::identity`]), so pods of one identity look
//! alike to every label selector, Kubernetes NetworkPolicy selectors included.

use crate::identity::{reserved, Identities, IdentityId};
use crate::model::*;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

/// First number of split classes (local flag and a split bit).
pub const SPLIT_BASE: u32 = reserved::LOCAL_FLAG | (1 << 23);

/// What a class stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClassKey {
    /// Pods.
    Pod {
        /// Identity.
        identity: IdentityId,
        /// Policy CIDRs containing the address.
        members: Vec<IpNet>,
        /// Container ports (for named ports on egress).
        ports: Vec<ContainerPort>,
    },
    /// Node addresses.
    Node {
        /// Identity (host or remote-node).
        identity: IdentityId,
        /// Policy CIDRs containing the address.
        members: Vec<IpNet>,
        /// Node labels.
        labels: Labels,
    },
    /// kube-apiserver addresses.
    Apiserver {
        /// Policy CIDRs containing the address.
        members: Vec<IpNet>,
    },
    /// A policy CIDR's identity.
    Cidr {
        /// Identity.
        identity: IdentityId,
        /// The CIDR.
        net: IpNet,
        /// Policy CIDRs containing it.
        members: Vec<IpNet>,
    },
    /// Everything else of one family.
    World {
        /// IPv6.
        v6: bool,
        /// Policy CIDRs containing it (only `/0` ones).
        members: Vec<IpNet>,
    },
}

impl ClassKey {
    pub(super) fn identity(&self) -> IdentityId {
        match self {
            ClassKey::Pod { identity, .. }
            | ClassKey::Node { identity, .. }
            | ClassKey::Cidr { identity, .. } => *identity,
            ClassKey::Apiserver { .. } => reserved::KUBE_APISERVER,
            ClassKey::World { v6: false, .. } => reserved::WORLD_IPV4,
            ClassKey::World { v6: true, .. } => reserved::WORLD_IPV6,
        }
    }

    pub(super) fn members(&self) -> &[IpNet] {
        match self {
            ClassKey::Pod { members, .. }
            | ClassKey::Node { members, .. }
            | ClassKey::Apiserver { members }
            | ClassKey::Cidr { members, .. }
            | ClassKey::World { members, .. } => members,
        }
    }
}

/// One class.
#[derive(Clone, Debug)]
pub struct Class {
    /// The number in `meta.src_identity` / `meta.dst_identity`.
    pub id: u32,
    /// What it stands for.
    pub key: ClassKey,
    /// A pod of the class (pod classes), for selectors and named ports.
    pub pod: Option<PodId>,
    /// A node of the class (node classes).
    pub node: Option<usize>,
}

/// Every class, and which prefix maps to which.
#[derive(Clone, Debug, Default)]
pub struct Classes {
    /// Classes, sorted by key.
    pub list: Vec<Class>,
    /// Key → index in `list`.
    pub by_key: HashMap<ClassKey, usize>,
    /// ipcache prefix → index in `list`.
    pub by_net: BTreeMap<IpNet, usize>,
    /// Policy CIDRs used for membership, and their prefix lengths per family.
    pub policy_cidrs: HashSet<IpNet>,
    lens: BTreeSet<(bool, u8)>,
}

impl Classes {
    /// Policy CIDRs containing `net`.
    pub fn members_of(&self, net: IpNet) -> Vec<IpNet> {
        let v6 = net.addr().is_ipv6();
        let mut out: Vec<IpNet> = self
            .lens
            .iter()
            .filter(|(f, l)| *f == v6 && *l <= net.prefix_len())
            .filter_map(|(_, l)| IpNet::new(net.addr(), *l).ok().map(|n| n.trunc()))
            .filter(|n| self.policy_cidrs.contains(n))
            .collect();
        out.sort();
        out
    }

    /// The class key of a pod address.
    pub fn pod_key(&self, ids: &Identities, cluster: &Cluster, pod: PodId, ip: IpAddr) -> ClassKey {
        let mut ports = cluster.pod(pod).ports.clone();
        ports.sort();
        ClassKey::Pod {
            identity: ids.of_pod(pod),
            members: self.members_of(IpNet::from(ip)),
            ports,
        }
    }
}

/// CIDRs whose membership splits classes: `ipBlock` and ANP `networks`, with exceptions.
pub fn policy_cidrs(cluster: &Cluster) -> HashSet<IpNet> {
    let mut out = HashSet::new();
    for np in &cluster.network_policies {
        for r in np.ingress.iter().chain(&np.egress) {
            for p in &r.peers {
                if let NpPeer::IpBlock { cidr, except } = p {
                    out.insert(cidr.trunc());
                    out.extend(except.iter().map(|e| e.trunc()));
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
                    out.insert(c.cidr.trunc());
                    out.extend(c.except.iter().map(|e| e.trunc()));
                }
            }
        }
    }
    for ap in &cluster.admin_policies {
        for r in ap.ingress.iter().chain(&ap.egress) {
            for p in &r.peers {
                if let AdminPeer::Networks(nets) = p {
                    for c in nets {
                        out.insert(c.cidr.trunc());
                        out.extend(c.except.iter().map(|e| e.trunc()));
                    }
                }
                // A Service peer (from `.pipe`) matches the service's backends, so each
                // backend address splits classes the way a host-length CIDR does.
                if let AdminPeer::Service { namespace, name } = p {
                    if let Some(s) = cluster.find_service(namespace, name) {
                        out.extend(
                            cluster
                                .service(s)
                                .backends
                                .iter()
                                .map(|b| IpNet::from(b.ip)),
                        );
                    }
                }
            }
        }
    }
    out
}

/// Computes the classes of every ipcache prefix.
pub fn classes(cluster: &Cluster, ids: &Identities, local_node: &str) -> Classes {
    let mut c = Classes {
        policy_cidrs: policy_cidrs(cluster),
        ..Classes::default()
    };
    c.lens = c
        .policy_cidrs
        .iter()
        .map(|n| (n.addr().is_ipv6(), n.prefix_len()))
        .collect();
    let pod_by_ip: HashMap<IpAddr, PodId> = cluster
        .pod_ids()
        .filter(|p| !cluster.pod(*p).host_network)
        .flat_map(|p| cluster.pod(p).ips.iter().map(move |ip| (*ip, p)))
        .collect();
    let node_by_ip: HashMap<IpAddr, usize> = cluster
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.addresses.iter().map(move |a| (*a, i)))
        .collect();
    let mut keys: BTreeMap<ClassKey, Members> = BTreeMap::new();
    for (net, id) in &ids.ipcache.entries {
        let host = net.prefix_len() == net.max_prefix_len();
        let members = c.members_of(*net);
        let (key, pod, node) = if *id == reserved::WORLD && net.prefix_len() == 0 {
            (
                ClassKey::World {
                    v6: net.addr().is_ipv6(),
                    members,
                },
                None,
                None,
            )
        } else if *id == reserved::KUBE_APISERVER {
            (ClassKey::Apiserver { members }, None, None)
        } else if host && (*id == reserved::HOST || *id == reserved::REMOTE_NODE) {
            let node = node_by_ip.get(&net.addr()).copied();
            let labels = node
                .map(|n| cluster.nodes[n].labels.clone())
                .unwrap_or_default();
            let _ = local_node;
            (
                ClassKey::Node {
                    identity: *id,
                    members,
                    labels,
                },
                None,
                node,
            )
        } else if let Some(pod) = host
            .then(|| pod_by_ip.get(&net.addr()).copied())
            .flatten()
            .filter(|p| ids.of_pod(*p) == *id)
        {
            (c.pod_key(ids, cluster, pod, net.addr()), Some(pod), None)
        } else {
            (
                ClassKey::Cidr {
                    identity: *id,
                    net: *net,
                    members,
                },
                None,
                None,
            )
        };
        let slot = keys.entry(key).or_insert((pod, node, Vec::new()));
        slot.2.push(*net);
    }
    number(&mut c, keys);
    c
}

/// A class's representative pod or node, and its ipcache prefixes.
type Members = (Option<PodId>, Option<usize>, Vec<IpNet>);

fn number(c: &mut Classes, keys: BTreeMap<ClassKey, Members>) {
    let mut per_identity: HashMap<IdentityId, usize> = HashMap::new();
    for k in keys.keys() {
        *per_identity.entry(k.identity()).or_default() += 1;
    }
    let mut next = SPLIT_BASE;
    for (key, (pod, node, nets)) in keys {
        let id = if per_identity[&key.identity()] == 1 {
            key.identity().0
        } else {
            next += 1;
            next - 1
        };
        let idx = c.list.len();
        for n in nets {
            c.by_net.insert(n, idx);
        }
        c.by_key.insert(key.clone(), idx);
        c.list.push(Class { id, key, pod, node });
    }
}

/// The classes whose number is not the number of their identity in the identity table
/// (split classes, numbered from [`SPLIT_BASE`], and `world` per family), as a table for
/// `pipec compile --emit identities`: with it every number the MAG's policy tables match
/// is found there, under one numbering.
pub fn renumbered_classes_to_text(classes: &Classes, ids: &Identities) -> String {
    let mut by_class: BTreeMap<usize, Vec<IpNet>> = BTreeMap::new();
    for (net, i) in &classes.by_net {
        by_class.entry(*i).or_default().push(*net);
    }
    let mut t = crate::util::Table::new(&["CLASS", "IDENTITY", "WHAT", "PREFIXES"]);
    let mut rows = 0;
    for (i, c) in classes.list.iter().enumerate() {
        let (identity, what) = match &c.key {
            // The ipcache maps /0 to `world` (2); the MAG tells the families apart.
            ClassKey::World { v6, .. } => (
                reserved::WORLD,
                if *v6 { "world-ipv6" } else { "world-ipv4" }.to_string(),
            ),
            ClassKey::Pod { identity, .. } => (*identity, "pods".to_string()),
            ClassKey::Node { identity, .. } => (*identity, "node addresses".to_string()),
            ClassKey::Apiserver { .. } => (reserved::KUBE_APISERVER, "kube-apiserver".into()),
            ClassKey::Cidr { identity, .. } => (*identity, "CIDR".to_string()),
        };
        if c.id == identity.0 {
            continue;
        }
        let nets = by_class.get(&i).map(Vec::as_slice).unwrap_or_default();
        let shown: Vec<String> = nets.iter().take(3).map(IpNet::to_string).collect();
        let prefixes = if nets.len() > 3 {
            format!("{},... ({} prefixes)", shown.join(","), nets.len())
        } else {
            shown.join(",")
        };
        let identity_text = match ids.by_id.get(&identity) {
            Some(_) => identity.to_string(),
            None => format!("{identity} (none)"),
        };
        t.row(vec![c.id.to_string(), identity_text, what, prefixes]);
        rows += 1;
    }
    if rows == 0 {
        return String::new();
    }
    t.render()
}
