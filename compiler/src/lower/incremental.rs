//! Incremental lowering: one model change → the new MAG and its entry-level diff.
//!
//! Entries live in groups ([`Group`]); a change recomputes the groups it touches and
//! splices their entries into the canonical tables. Fast paths:
//!
//! - **pod added, removed or relabelled**, when its label set already has an identity (and
//!   a removal leaves the identity and the pod's class non-empty; a class whose
//!   representative pod leaves gets another member as its representative), and its class
//!   exists:
//!   the pod's endpoint group, its ipcache prefixes, and the services of its namespace
//!   whose backends changed;
//! - **service added, changed or removed** (not `default/kubernetes`, whose backends are
//!   ipcache entries, and not the first or last `internalTrafficPolicy: Local` service,
//!   which changes the key of `service_lb`): that service's group.
//!
//! A service group holds the node-local Maglev tables of its traffic policies too, so a pod
//! added or removed on any node recomputes the services that select it, here or elsewhere.
//!
//! Anything else (a new identity, policy changes, namespace labels, id collisions) falls
//! back to a full lowering, still reported as an entry-level diff of the groups that differ.
//! Either way the result equals a full lowering of the new model, which the property tests
//! check by comparing the canonical text forms.
//!
//! The fast paths do not touch the canonical tables: the diff is recorded in the
//! [`Lowered`] and applied by [`Lowered::mag`] on first use ([`apply_diff`]), so a consumer
//! that programs a target from the diff never pays for moving entries in the large sorted
//! tables. The classes each policy rule matches are kept in [`LowerState::matched`] between
//! updates, so resolving the new endpoint's rows does not rescan every class.

use super::*;
use crate::mag::canonical_order;
use std::collections::HashSet;

/// The change that turned the previous model into the new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A pod (`namespace/name`) was added, removed or relabelled.
    Pod(String),
    /// A service (`namespace/name`) or its endpoints were added, changed or removed.
    Service(String),
    /// A Kubernetes NetworkPolicy (`namespace/name`) was added, changed or removed.
    NetworkPolicy(String),
    /// A CiliumNetworkPolicy (`namespace/name`, not the clusterwide kind) was added,
    /// changed or removed.
    CiliumNetworkPolicy(String),
    /// Any other policy was added, changed or removed.
    Policy,
    /// A namespace was added or relabelled.
    Namespace(String),
}

/// Entry-level difference between two MAGs.
#[derive(Clone, Debug, Default)]
pub struct Diff {
    /// Entries removed, by table.
    pub removed: Vec<(TableId, Entry)>,
    /// Entries added, by table.
    pub added: Vec<(TableId, Entry)>,
    /// Whether the change needed a full lowering.
    pub full: bool,
}

impl Diff {
    /// Number of entries added or removed.
    pub fn len(&self) -> usize {
        self.removed.len() + self.added.len()
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn group_diff(old: &[(TableId, Entry)], new: &[(TableId, Entry)], diff: &mut Diff) {
    let o: HashSet<&(TableId, Entry)> = old.iter().collect();
    let n: HashSet<&(TableId, Entry)> = new.iter().collect();
    diff.removed
        .extend(old.iter().filter(|e| !n.contains(e)).cloned());
    diff.added
        .extend(new.iter().filter(|e| !o.contains(e)).cloned());
}

/// Applies a diff to canonical tables, keeping them canonical. A table that takes more
/// than two changes is rebuilt in one merge pass, so its entries move once.
pub fn apply_diff(mag: &mut Mag, diff: &Diff) {
    let mut per_table: BTreeMap<TableId, (Vec<&Entry>, Vec<&Entry>)> = BTreeMap::new();
    for (t, e) in &diff.removed {
        per_table.entry(*t).or_default().0.push(e);
    }
    for (t, e) in &diff.added {
        per_table.entry(*t).or_default().1.push(e);
    }
    for (t, (removed, mut added)) in per_table {
        let Some(table) = mag.table_mut(t) else {
            continue;
        };
        let mut gone: Vec<usize> = removed
            .iter()
            .filter_map(|e| {
                table
                    .entries
                    .binary_search_by(|x| canonical_order(x, e))
                    .ok()
            })
            .collect();
        gone.sort_unstable();
        gone.dedup();
        if gone.len() + added.len() <= 2 {
            for i in gone.into_iter().rev() {
                table.entries.remove(i);
            }
            for e in added {
                let i = table
                    .entries
                    .binary_search_by(|x| canonical_order(x, e))
                    .unwrap_or_else(|i| i);
                table.entries.insert(i, e.clone());
            }
            continue;
        }
        added.sort_by(|a, b| canonical_order(a, b));
        // Each added entry goes after the old entries not greater than it; the runs of old
        // entries between cut points move without comparisons.
        let at: Vec<usize> = added
            .iter()
            .map(|a| {
                table
                    .entries
                    .partition_point(|x| !canonical_order(a, x).is_lt())
            })
            .collect();
        let old = std::mem::take(&mut table.entries);
        let mut out = Vec::with_capacity(old.len() + added.len() - gone.len().min(old.len()));
        let mut gone = gone.into_iter().peekable();
        let mut adds = added.into_iter().zip(at).peekable();
        let mut old = old.into_iter().enumerate().peekable();
        loop {
            // The next cut: an old entry to drop or a position to insert at.
            let cut = match (gone.peek(), adds.peek()) {
                (Some(g), Some((_, a))) => (*g).min(*a),
                (Some(g), None) => *g,
                (None, Some((_, a))) => *a,
                (None, None) => usize::MAX,
            };
            while let Some((_, e)) = old.next_if(|(i, _)| *i < cut) {
                out.push(e);
            }
            while let Some((a, _)) = adds.next_if(|(_, at)| *at == cut) {
                out.push(a.clone());
            }
            if gone.next_if_eq(&cut).is_some() {
                old.next();
            }
            if cut == usize::MAX {
                break;
            }
        }
        table.entries = out;
    }
}

/// Updates a lowered node for one change; returns the entry-level diff.
///
/// `prev` is the model `lowered` was built from and `cluster` the model after `change`.
pub fn update(lowered: &mut Lowered, prev: &Cluster, cluster: &Cluster, change: &Change) -> Diff {
    update_many(lowered, prev, cluster, std::slice::from_ref(change))
}

/// Updates a lowered node for a batch of changes made together (a watcher's burst);
/// returns the entry-level diff.
///
/// `prev` is the model `lowered` was built from and `cluster` the model after every change
/// of the batch. Pod, Service, NetworkPolicy and CiliumNetworkPolicy changes take the fast
/// paths together, so a burst of pod events costs what its pods touch; any other change
/// takes a full lowering.
pub fn update_many(
    lowered: &mut Lowered,
    prev: &Cluster,
    cluster: &Cluster,
    changes: &[Change],
) -> Diff {
    let touched = if lowered.state.probed {
        None
    } else {
        batch_change(lowered, prev, cluster, changes)
    };
    match touched {
        Some((groups, owners)) => regroup(lowered, cluster, groups, &owners),
        None => full(lowered, cluster),
    }
}

/// The fast path of a batch; `None` when a full lowering is needed. A fast path may have
/// changed the lowering state when it gives up: the full lowering replaces all of it.
fn batch_change(
    lowered: &mut Lowered,
    prev: &Cluster,
    cluster: &Cluster,
    changes: &[Change],
) -> Option<Touched> {
    let mut pods = BTreeSet::new();
    let mut services = BTreeSet::new();
    let mut policies = BTreeSet::new();
    let mut cilium = BTreeSet::new();
    for change in changes {
        match change {
            Change::Pod(key) => pods.insert(key.as_str()),
            Change::Service(key) => services.insert(key.as_str()),
            Change::NetworkPolicy(key) => policies.insert(key.as_str()),
            Change::CiliumNetworkPolicy(key) => cilium.insert(key.as_str()),
            Change::Policy | Change::Namespace(_) => return None,
        };
    }
    let (mut groups, owners) = if pods.is_empty() {
        // Without a pod change the pods must be the same ones, or a pod the batch does not
        // name was added or removed.
        (prev.pods.len() == cluster.pods.len()).then(Touched::default)?
    } else {
        pods_change(lowered, prev, cluster, &pods)?
    };
    if !services.is_empty() {
        groups.extend(services_change(lowered, prev, cluster, &services)?);
    }
    if !policies.is_empty() || !cilium.is_empty() {
        groups.extend(policies_change(lowered, prev, cluster, &policies, &cilium)?);
    }
    Some((groups, owners))
}

fn full(lowered: &mut Lowered, cluster: &Cluster) -> Diff {
    let new = cluster_to_mag(cluster, Some(&lowered.state.node));
    let mut diff = Diff {
        full: true,
        ..Diff::default()
    };
    let keys: BTreeSet<&Group> = lowered
        .state
        .groups
        .keys()
        .chain(new.state.groups.keys())
        .collect();
    for g in keys {
        let old = lowered
            .state
            .groups
            .get(g)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let n = new.state.groups.get(g).map(Vec::as_slice).unwrap_or(&[]);
        if old != n {
            group_diff(old, n, &mut diff);
        }
    }
    *lowered = new;
    diff
}

/// Touched groups, and the pod owning each touched prefix.
type Touched = (BTreeSet<Group>, BTreeMap<IpNet, PodId>);

fn regroup(
    lowered: &mut Lowered,
    cluster: &Cluster,
    groups: BTreeSet<Group>,
    owners: &BTreeMap<IpNet, PodId>,
) -> Diff {
    let mut diff = Diff::default();
    let mut provs = std::mem::take(&mut lowered.pending_mut().mag.provenance);
    let state = &mut lowered.state;
    let mut fresh: Vec<(Group, Option<GroupEntries>)> = Vec::new();
    {
        let cache = std::mem::take(&mut state.matched);
        let mut resolver = Resolver::with_cache(cluster, &state.ids, &state.classes, cache);
        for g in &groups {
            let entries = match g {
                Group::Static => Some(static_group(state, &mut provs)),
                Group::Endpoint(key) => {
                    let (ns, name) = key.split_once('/').unwrap_or(("", key));
                    cluster
                        .find_pod(ns, name)
                        .and_then(|p| endpoint_group(cluster, state, &mut resolver, p, &mut provs))
                }
                Group::Prefix(net) => state.ids.ipcache.entries.contains_key(net).then(|| {
                    let owner = owners
                        .get(net)
                        .copied()
                        .or_else(|| cluster.pod_by_ip(net.addr()));
                    prefix_group(cluster, state, *net, owner, &mut provs)
                }),
                Group::Service(key) => {
                    let (ns, name) = key.split_once('/').unwrap_or(("", key));
                    cluster
                        .find_service(ns, name)
                        .map(|s| service_group(cluster, state, cluster.service(s), &mut provs))
                        .filter(|g| !g.is_empty())
                }
            };
            fresh.push((g.clone(), entries));
        }
        state.matched = resolver.into_cache();
    }
    for (g, entries) in fresh {
        let old = state.groups.remove(&g).unwrap_or_default();
        let new = entries.unwrap_or_default();
        group_diff(&old, &new, &mut diff);
        if !new.is_empty() {
            state.groups.insert(g, new);
        }
    }
    lowered.pending_mut().mag.provenance = provs;
    lowered.record(&diff);
    diff
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// The fast path of a batch's pod changes (`namespace/name` keys); `None` when a full
/// lowering is needed.
///
/// Pod ids are positions in the model's sorted pod list, so the old pods leave from the
/// highest id down (each removal leaves the ids below it as they were) and the new pods
/// arrive from the lowest id up (each insertion lands at its final position).
fn pods_change(
    lowered: &mut Lowered,
    prev: &Cluster,
    cluster: &Cluster,
    keys: &BTreeSet<&str>,
) -> Option<Touched> {
    let mut old = Vec::new();
    let mut new = Vec::new();
    for key in keys {
        let (ns, name) = split(key);
        old.extend(prev.find_pod(ns, name));
        new.extend(cluster.find_pod(ns, name));
    }
    if cluster.pods.len() + old.len() != prev.pods.len() + new.len() {
        return None;
    }
    old.sort_unstable_by_key(|p| std::cmp::Reverse(p.0));
    new.sort_unstable_by_key(|p| p.0);
    let mut groups: BTreeSet<Group> = keys
        .iter()
        .map(|k| Group::Endpoint(k.to_string()))
        .collect();
    let mut owners = BTreeMap::new();
    let state = &mut lowered.state;
    // Classes whose representative pod is one removed: they get another member.
    let mut orphaned = Vec::new();
    for p in old {
        remove_pod(state, prev, p, &mut groups, &mut orphaned)?;
    }
    for p in new {
        add_pod(state, cluster, p, &mut groups, &mut owners)?;
    }
    // Every pod of a class looks alike to every rule (one identity, one set of policy
    // CIDRs, one port list), so any member can stand for it; the member of its lowest
    // address is the one a full lowering picks. The class keeps its number and entries.
    for ci in orphaned {
        let member = state
            .classes
            .by_net
            .iter()
            .find(|(_, c)| **c == ci)
            .and_then(|(net, _)| cluster.pod_by_ip(net.addr()))?;
        state.classes.list[ci].pod = Some(member);
    }
    let namespaces: BTreeSet<&str> = keys.iter().map(|k| split(k).0).collect();
    for ns in namespaces {
        groups.extend(backend_changes(prev, cluster, ns)?);
    }
    Some((groups, owners))
}

/// Takes pod `p` of `prev` out of the lowering state: its identity's count, its classes,
/// its ipcache prefixes and its endpoint. `None` when the pod was the last of its identity
/// or of a class, or is on the host network: those change more than its own rows.
fn remove_pod(
    state: &mut LowerState,
    prev: &Cluster,
    p: PodId,
    groups: &mut BTreeSet<Group>,
    orphaned: &mut Vec<usize>,
) -> Option<()> {
    let pod = prev.pod(p);
    if pod.host_network {
        return None;
    }
    let labels = crate::identity::pod_labels(prev, p, &state.relevant);
    let slot = state.label_index.get_mut(&labels)?;
    if slot.1 <= 1 {
        return None;
    }
    for ip in &pod.ips {
        let net = IpNet::from(*ip);
        let ci = *state.classes.by_net.get(&net)?;
        if state.class_size[ci] <= 1 {
            return None;
        }
        if state.classes.list[ci].pod == Some(p) {
            orphaned.push(ci);
        }
    }
    slot.1 -= 1;
    for ip in &pod.ips {
        let net = IpNet::from(*ip);
        if let Some(ci) = state.classes.by_net.remove(&net) {
            state.class_size[ci] -= 1;
        }
        state.ids.ipcache.entries.remove(&net);
        groups.insert(Group::Prefix(net));
    }
    state.ids.pods.remove(p.0 as usize);
    for c in &mut state.classes.list {
        if let Some(cp) = c.pod.as_mut() {
            if cp.0 > p.0 {
                cp.0 -= 1;
            }
        }
    }
    state.endpoints.remove(&pod.key());
    Some(())
}

/// Puts pod `p` of `cluster` into the lowering state. `None` when the pod needs an identity
/// or a class that does not exist yet, takes an address or endpoint number in use, or is on
/// the host network.
fn add_pod(
    state: &mut LowerState,
    cluster: &Cluster,
    p: PodId,
    groups: &mut BTreeSet<Group>,
    owners: &mut BTreeMap<IpNet, PodId>,
) -> Option<()> {
    let pod = cluster.pod(p);
    if pod.host_network {
        return None;
    }
    let labels = crate::identity::pod_labels(cluster, p, &state.relevant);
    let &(id, _) = state.label_index.get(&labels)?;
    for ip in &pod.ips {
        if state.ids.ipcache.entries.contains_key(&IpNet::from(*ip)) {
            return None;
        }
    }
    if is_local(cluster, p, &state.node, state.synthetic) {
        let ep = natural_endpoint(pod.ip()?);
        if state.endpoints.values().any(|v| *v == ep) {
            return None;
        }
        state.endpoints.insert(pod.key(), ep);
    }
    state.ids.pods.insert(p.0 as usize, id);
    for c in &mut state.classes.list {
        if let Some(cp) = c.pod.as_mut() {
            if cp.0 >= p.0 {
                cp.0 += 1;
            }
        }
    }
    let mut nets = Vec::new();
    for ip in &pod.ips {
        let ck = state.classes.pod_key(&state.ids, cluster, p, *ip);
        let ci = *state.classes.by_key.get(&ck)?;
        nets.push((IpNet::from(*ip), ci));
    }
    if let Some(slot) = state.label_index.get_mut(&labels) {
        slot.1 += 1;
    }
    for (net, ci) in nets {
        state.classes.by_net.insert(net, ci);
        state.class_size[ci] += 1;
        state.ids.ipcache.entries.insert(net, id);
        groups.insert(Group::Prefix(net));
        owners.insert(net, p);
    }
    Some(())
}

/// The service groups of namespace `ns` whose backends changed between the two models;
/// `None` when the API server's own Service changed, which more than its group reads.
///
/// Only services of a pod's namespace select it, and EndpointSlices name it by address.
/// Only what `service_group` reads of a backend counts: pod ids shift when a pod is
/// inserted before them, which changes no entry. The node counts for the node-local
/// tables of traffic policies: a pod added on another node changes the service's
/// cluster-wide table and leaves its local one as it was, which the group diff shows.
fn backend_changes(prev: &Cluster, cluster: &Cluster, ns: &str) -> Option<Vec<Group>> {
    let mut groups = Vec::new();
    // The services are sorted by namespace and name (`Cluster::find_service` searches
    // them so): a namespace's are one run, found without reading every service.
    let from = cluster
        .services
        .partition_point(|s| s.namespace.as_str() < ns);
    let run = cluster.services[from..]
        .iter()
        .take_while(|s| s.namespace == ns);
    for s in run {
        let before = prev
            .find_service(&s.namespace, &s.name)
            .map(|i| &prev.service(i).backends);
        let same = before.is_some_and(|b| {
            b.len() == s.backends.len()
                && b.iter().zip(&s.backends).all(|(x, y)| {
                    (x.ip, &x.node, x.ready, x.serving, x.terminating, &x.ports)
                        == (y.ip, &y.node, y.ready, y.serving, y.terminating, &y.ports)
                })
        });
        if !same {
            if s.key() == "default/kubernetes" {
                return None;
            }
            groups.push(Group::Service(s.key()));
        }
    }
    Some(groups)
}

/// The fast path of a batch's NetworkPolicy and CiliumNetworkPolicy changes
/// (`namespace/name` keys of each kind); the groups to rebuild, or `None` when a full
/// lowering is needed.
///
/// Both kinds decide only for the pods of their own namespace, so their endpoint rows are
/// the ones such a change can change, as long as it changes nothing every row reads: the
/// label keys identities keep (a selector on a new key splits identities) and the policy
/// CIDRs (an `ipBlock` or `toCIDR` adds ipcache prefixes and splits classes). A change that
/// touches either takes a full lowering.
fn policies_change(
    lowered: &mut Lowered,
    prev: &Cluster,
    cluster: &Cluster,
    policies: &BTreeSet<&str>,
    cilium: &BTreeSet<&str>,
) -> Option<BTreeSet<Group>> {
    let np_cidrs = |c: &Cluster, ns: &str, name: &str| {
        c.network_policies
            .iter()
            .any(|np| np.namespace == ns && np.name == name && np_has_cidrs(np))
    };
    let cnp_cidrs = |c: &Cluster, ns: &str, name: &str| {
        c.cilium_policies
            .iter()
            .any(|cp| cp.namespace.as_deref() == Some(ns) && cp.name == name && cnp_has_cidrs(cp))
    };
    // A key names the policy before the change and after it; either may have CIDRs.
    let with_cidrs = |keys: &BTreeSet<&str>, has: &dyn Fn(&Cluster, &str, &str) -> bool| {
        keys.iter().any(|k| {
            let (ns, name) = split(k);
            has(prev, ns, name) || has(cluster, ns, name)
        })
    };
    if with_cidrs(policies, &np_cidrs) || with_cidrs(cilium, &cnp_cidrs) {
        return None;
    }
    let state = &mut lowered.state;
    if crate::identity::selected_keys(cluster) != state.relevant {
        return None;
    }
    // The cache names a policy's rules by the policy's position in the model, which an
    // added or removed policy moves: the changed kinds' entries go, and resolving fills
    // them again.
    let stale = |kind: policy::RuleKind| match kind {
        policy::RuleKind::NetworkPolicy => !policies.is_empty(),
        policy::RuleKind::Cilium
        | policy::RuleKind::CiliumEndpoints
        | policy::RuleKind::CiliumOthers => !cilium.is_empty(),
        policy::RuleKind::Admin => false,
    };
    state.matched.retain(|k, _| !stale(k.kind));
    let namespaces: BTreeSet<&str> = policies.iter().chain(cilium).map(|k| split(k).0).collect();
    let mut groups = BTreeSet::from([Group::Static]);
    for ns in namespaces {
        for p in namespace_pods(cluster, ns) {
            if is_local(cluster, p, &state.node, state.synthetic) {
                groups.insert(Group::Endpoint(cluster.pod(p).key()));
            }
        }
    }
    Some(groups)
}

/// The pods of namespace `ns`: one run of the model's pods, which are sorted by namespace
/// and name (the order `Cluster::find_pod` searches), so a policy event does not visit
/// every pod of the cluster.
fn namespace_pods<'c>(cluster: &'c Cluster, ns: &str) -> impl Iterator<Item = PodId> + 'c {
    let start = cluster.pods.partition_point(|p| p.namespace.as_str() < ns);
    let end = cluster.pods.partition_point(|p| p.namespace.as_str() <= ns);
    (start..end).map(|i| PodId(i as u32))
}

fn np_has_cidrs(np: &crate::model::NetworkPolicy) -> bool {
    np.ingress
        .iter()
        .chain(&np.egress)
        .flat_map(|r| &r.peers)
        .any(|p| matches!(p, crate::model::NpPeer::IpBlock { .. }))
}

fn cnp_has_cidrs(cp: &crate::model::CiliumPolicy) -> bool {
    cp.specs.iter().any(|spec| {
        spec.ingress
            .iter()
            .chain(&spec.ingress_deny)
            .chain(&spec.egress)
            .chain(&spec.egress_deny)
            .any(|r| !r.cidrs.is_empty())
    })
}

/// The fast path of a batch's service changes (`namespace/name` keys, a Service or its
/// endpoints); the groups to rebuild, or `None` when a full lowering is needed.
fn services_change(
    lowered: &mut Lowered,
    prev: &Cluster,
    cluster: &Cluster,
    keys: &BTreeSet<&str>,
) -> Option<BTreeSet<Group>> {
    if keys.contains("default/kubernetes")
        || prev.services.len().abs_diff(cluster.services.len()) > keys.len()
    {
        return None;
    }
    // The first or last service with `internalTrafficPolicy: Local` changes the key of
    // `service_lb`, so every frontend row changes.
    if source_keyed_lb(cluster, lowered.state.synthetic) != lowered.state.source_keyed {
        return None;
    }
    let state = &mut lowered.state;
    // Every changed service gives up its number first, so two services that trade an
    // address in one batch do not look like a collision.
    for key in keys {
        state.lb_ids.remove(*key);
    }
    for key in keys {
        let (ns, name) = split(key);
        let Some(s) = cluster.find_service(ns, name) else {
            continue;
        };
        if let Some(ip) = primary_frontend(cluster.service(s)) {
            let id = natural_lb(ip);
            if state.lb_ids.values().any(|v| *v == id) {
                return None;
            }
            state.lb_ids.insert(key.to_string(), id);
        }
    }
    Some(keys.iter().map(|k| Group::Service(k.to_string())).collect())
}
