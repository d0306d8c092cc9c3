//! Policy resolution: every NetworkPolicy, Cilium policy and admin policy folded into one
//! decision table per direction, keyed by (local endpoint, remote class, protocol, port
//! prefix), the way Cilium's policy map is a resolved result.
//!
//! The remote side of a key is a *policy class*, not a bare Cilium identity: the set of
//! addresses that every rule treats alike (`class.rs` computes and numbers them).
//!
//! # Decisions
//!
//! For a local endpoint, a direction, a remote class, a protocol and a port, the decision
//! is: the first admin-tier rule that matches (Allow / Deny; Pass skips to the next tier);
//! then NetworkPolicy and Cilium policy (a Cilium deny wins over any allow; an allow with L7
//! rules redirects to the proxy; an endpoint selected for the direction by any policy and
//! allowed by none is denied); then the baseline tier in order; then allow. CiliumNetwork-
//! Policy CIDR rules match only world addresses; Kubernetes `ipBlock` matches any address.

use crate::identity::{cilium_matches, reserved, Identities};
use crate::mag::algebra::port_prefixes;
use crate::mag::{ProvId, Provenance};
use crate::model::*;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

mod class;

pub use class::{
    classes, policy_cidrs, renumbered_classes_to_text, Class, ClassKey, Classes, SPLIT_BASE,
};

/// The protocols the decision table distinguishes.
pub const PROTOS: [u8; 5] = [6, 17, 132, 1, 58];

/// A verdict of the decision table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// Allowed and redirected to the L7 proxy.
    Redirect,
}

/// Traffic direction, seen from the local endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dir {
    /// Into the endpoint.
    Ingress,
    /// Out of the endpoint.
    Egress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    Admin,
    Np,
    Baseline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Allow,
    Deny,
    Pass,
}

/// One rule's say on one class: its place, action, ports and provenance.
#[derive(Clone, Debug)]
struct Contribution {
    tier: Tier,
    order: (usize, usize),
    act: Act,
    l7: bool,
    ports: Rc<Vec<(u8, u16, u16)>>,
    prov: ProvId,
}

/// One resolved decision-table row for an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Priority: 0 endpoint default, 1 every class, 2 one class.
    pub priority: u32,
    /// The remote class number; `None` for every class.
    pub class: Option<u32>,
    /// Protocol; `None` for every protocol.
    pub proto: Option<u8>,
    /// Destination port prefix (value, length); length 0 for every port.
    pub port: (u16, u8),
    /// The decision.
    pub decision: Decision,
    /// The deciding rules.
    pub prov: Vec<ProvId>,
}

/// A rule's place in the model, the key under which the classes its peers match are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleKey {
    /// The kind of policy the rule is in, and for a Cilium rule which of its peers.
    pub kind: RuleKind,
    /// The policy's index in its list of the model.
    pub policy: u32,
    /// The spec's index in a Cilium policy (0 for the other kinds, which have one spec).
    pub spec: u32,
    /// The direction of the rule's section.
    pub dir: Dir,
    /// Whether the rule's section denies (`ingressDeny`, `egressDeny`); only Cilium
    /// policies have such sections, so it is false for the other kinds.
    pub deny: bool,
    /// The rule's index in its section.
    pub rule: u32,
}

/// The kind of rule a [`RuleKey`] names. A Cilium rule whose selecting rule objects carry
/// `requires` is matched in two halves, each kept under its own kind, so that the requirement
/// can be applied to the endpoint peers alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// A rule of an admin-tier policy.
    Admin,
    /// A rule of a Kubernetes NetworkPolicy.
    NetworkPolicy,
    /// A rule of a Cilium policy, all its peers.
    Cilium,
    /// A Cilium rule's endpoint peers.
    CiliumEndpoints,
    /// A Cilium rule's entity and CIDR peers.
    CiliumOthers,
}

/// The classes each rule's peers match, kept between compiles.
///
/// Valid as long as the policies, namespaces and the class list (with each class's
/// representative pod) are unchanged, which holds on the incremental fast paths; a full
/// lowering starts a new one. Rules whose match depends on service backends (admin
/// `services` peers) are never kept.
pub type MatchCache = HashMap<RuleKey, Arc<Vec<usize>>>;

/// What resolution reads: the model, identities and classes, and caches of rule matches.
pub struct Resolver<'a> {
    cluster: &'a Cluster,
    ids: &'a Identities,
    classes: &'a Classes,
    matched: MatchCache,
    volatile: HashMap<RuleKey, Arc<Vec<usize>>>,
    all: Arc<Vec<usize>>,
    index: Option<ClassIndex<'a>>,
}

/// The NetworkPolicies of namespace `ns`, with their indices. Policies are sorted by
/// namespace and name (a model invariant), so they are one run found by binary search,
/// instead of a string comparison per policy of the cluster for every local endpoint.
fn namespace_policies<'c>(
    nps: &'c [NetworkPolicy],
    ns: &str,
) -> impl Iterator<Item = (usize, &'c NetworkPolicy)> {
    debug_assert!(nps.is_sorted_by(|a, b| a.namespace <= b.namespace));
    let lo = nps.partition_point(|np| np.namespace.as_str() < ns);
    let len = nps[lo..].partition_point(|np| np.namespace == ns);
    nps[lo..lo + len]
        .iter()
        .enumerate()
        .map(move |(i, np)| (lo + i, np))
}

/// Classes by a label of their pod and by policy CIDR, to find the candidates of a
/// NetworkPolicy peer without scanning every class.
#[derive(Default)]
struct ClassIndex<'a> {
    by_label: HashMap<(&'a str, &'a str), Vec<usize>>,
    by_member: HashMap<IpNet, Vec<usize>>,
}

type Ports = Rc<Vec<(u8, u16, u16)>>;

const ALL_PORTS: (u16, u16) = (0, u16::MAX);

fn all_protocols() -> Vec<(u8, u16, u16)> {
    PROTOS
        .iter()
        .map(|p| (*p, ALL_PORTS.0, ALL_PORTS.1))
        .collect()
}

fn proto_numbers(p: Protocol) -> Vec<u8> {
    match p {
        Protocol::Icmp => vec![1, 58],
        p => vec![p.number()],
    }
}

fn net_matches(members: &[IpNet], cidr: &IpNet, except: &[IpNet]) -> bool {
    let has = |n: &IpNet| members.binary_search(&n.trunc()).is_ok();
    has(cidr) && !except.iter().any(has)
}

impl<'a> Resolver<'a> {
    /// A resolver over one model.
    pub fn new(cluster: &'a Cluster, ids: &'a Identities, classes: &'a Classes) -> Resolver<'a> {
        Resolver {
            cluster,
            ids,
            classes,
            matched: HashMap::new(),
            volatile: HashMap::new(),
            all: Arc::new((0..classes.list.len()).collect()),
            index: None,
        }
    }

    /// A superset of the classes some NetworkPolicy peer of `peers` matches, in class
    /// order; `None` when a peer needs a scan of every class.
    fn np_candidates(&mut self, peers: &'a [NpPeer]) -> Option<Vec<usize>> {
        let (cluster, classes) = (self.cluster, self.classes);
        let index = self.index.get_or_insert_with(|| {
            let mut ix = ClassIndex::default();
            for (i, c) in classes.list.iter().enumerate() {
                if let Some(p) = c.pod {
                    for (k, v) in &cluster.pod(p).labels {
                        ix.by_label
                            .entry((k.as_str(), v.as_str()))
                            .or_default()
                            .push(i);
                    }
                }
                for m in c.key.members() {
                    ix.by_member.entry(*m).or_default().push(i);
                }
            }
            ix
        });
        let mut out = Vec::new();
        for p in peers {
            let hits = match p {
                NpPeer::Pods {
                    pods: Some(sel), ..
                } => {
                    // A class matches only if its pod has every `matchLabels` pair.
                    let (k, v) = sel.match_labels.iter().next()?;
                    index.by_label.get(&(k.as_str(), v.as_str()))
                }
                NpPeer::Pods { pods: None, .. } => return None,
                // `net_matches` needs the CIDR itself among the class's members.
                NpPeer::IpBlock { cidr, .. } => index.by_member.get(&cidr.trunc()),
            };
            out.extend(hits.into_iter().flatten());
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// A resolver that starts from the rule matches an earlier one kept (see
    /// [`MatchCache`]).
    pub fn with_cache(
        cluster: &'a Cluster,
        ids: &'a Identities,
        classes: &'a Classes,
        cache: MatchCache,
    ) -> Resolver<'a> {
        Resolver {
            matched: cache,
            ..Resolver::new(cluster, ids, classes)
        }
    }

    /// The rule matches to keep for the next resolver over the same classes.
    pub fn into_cache(self) -> MatchCache {
        self.matched
    }

    fn class_pod(&self, c: &Class) -> Option<&'a Pod> {
        c.pod.map(|p| self.cluster.pod(p))
    }

    fn entity_matches(&self, e: Entity, c: &Class) -> bool {
        let world_v6 = match &c.key {
            ClassKey::World { v6, .. } => Some(*v6),
            ClassKey::Cidr { net, .. } => Some(net.addr().is_ipv6()),
            _ => None,
        };
        let id = c.key.identity();
        match e {
            Entity::All => true,
            Entity::World => world_v6.is_some(),
            Entity::WorldIpv4 => world_v6 == Some(false),
            Entity::WorldIpv6 => world_v6 == Some(true),
            Entity::Cluster => world_v6.is_none(),
            Entity::Host => id == reserved::HOST,
            Entity::RemoteNode => id == reserved::REMOTE_NODE,
            Entity::KubeApiserver => id == reserved::KUBE_APISERVER,
            Entity::Init => id == reserved::INIT,
            Entity::Health => id == reserved::HEALTH,
            Entity::Unmanaged => id == reserved::UNMANAGED,
            Entity::Ingress => id == reserved::INGRESS,
        }
    }

    fn identity_labels(&self, c: &Class) -> Option<&'a Labels> {
        self.ids.labels(c.key.identity())
    }

    fn np_peer(&self, np_ns: &str, peer: &NpPeer, c: &Class) -> bool {
        match peer {
            NpPeer::Pods { namespaces, pods } => {
                let Some(pod) = self.class_pod(c) else {
                    return false;
                };
                // Pod selectors first: they are usually the more selective test and need
                // no namespace lookup.
                pods.as_ref().is_none_or(|s| s.matches(&pod.labels))
                    && match namespaces {
                        None => pod.namespace == np_ns,
                        Some(s) => s.matches(self.cluster.namespace_labels(&pod.namespace)),
                    }
            }
            NpPeer::IpBlock { cidr, except } => net_matches(c.key.members(), cidr, except),
        }
    }

    /// The part of a Cilium rule's peers that requirements constrain: its endpoint
    /// selectors, or every peer for a rule without L3 fields.
    fn cilium_endpoint_peer(&self, r: &CiliumRule, c: &Class) -> bool {
        if r.any_peer {
            return true;
        }
        let world = matches!(c.key, ClassKey::World { .. } | ClassKey::Cidr { .. });
        let labels = self.identity_labels(c);
        !world
            && r.endpoints
                .iter()
                .any(|s| labels.is_some_and(|l| cilium_matches(s, l)))
    }

    /// The part of a Cilium rule's peers that requirements leave alone: entities and CIDRs.
    fn cilium_other_peer(&self, r: &CiliumRule, c: &Class) -> bool {
        let world = matches!(c.key, ClassKey::World { .. } | ClassKey::Cidr { .. });
        r.entities.iter().any(|e| self.entity_matches(*e, c))
            || (world
                && r.cidrs
                    .iter()
                    .any(|p| net_matches(c.key.members(), &p.cidr, &p.except)))
    }

    /// The classes a Cilium rule matches for an endpoint whose selecting rule objects
    /// require `requires` of every endpoint peer (see `semantics::cilium`).
    fn cilium_classes(
        &mut self,
        key: RuleKey,
        r: &CiliumRule,
        requires: &[&Selector],
    ) -> Arc<Vec<usize>> {
        if requires.is_empty() {
            return self.matched(key, true, |s, c| {
                s.cilium_endpoint_peer(r, c) || s.cilium_other_peer(r, c)
            });
        }
        debug_assert_eq!(key.kind, RuleKind::Cilium);
        let endpoints_key = RuleKey {
            kind: RuleKind::CiliumEndpoints,
            ..key
        };
        let by_endpoint = self.matched(endpoints_key, true, |s, c| s.cilium_endpoint_peer(r, c));
        let others_key = RuleKey {
            kind: RuleKind::CiliumOthers,
            ..key
        };
        let other = self.matched(others_key, true, |s, c| s.cilium_other_peer(r, c));
        let mut v: Vec<usize> = by_endpoint
            .iter()
            .copied()
            .filter(|i| {
                let labels = self.identity_labels(&self.classes.list[*i]);
                labels.is_some_and(|l| requires.iter().all(|q| cilium_matches(q, l)))
            })
            .chain(other.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        if v.len() == self.classes.list.len() {
            self.all.clone()
        } else {
            Arc::new(v)
        }
    }

    fn admin_peer(&self, p: &AdminPeer, c: &Class) -> bool {
        match p {
            AdminPeer::Namespaces(s) => self
                .class_pod(c)
                .is_some_and(|pod| s.matches(self.cluster.namespace_labels(&pod.namespace))),
            AdminPeer::Pods { namespaces, pods } => self.class_pod(c).is_some_and(|pod| {
                namespaces.matches(self.cluster.namespace_labels(&pod.namespace))
                    && pods.matches(&pod.labels)
            }),
            AdminPeer::Nodes(s) => c
                .node
                .is_some_and(|n| s.matches(&self.cluster.nodes[n].labels)),
            AdminPeer::Networks(nets) => nets
                .iter()
                .any(|p| net_matches(c.key.members(), &p.cidr, &p.except)),
            AdminPeer::Entity(e) => self.entity_matches(*e, c),
            AdminPeer::Service { namespace, name } => {
                self.cluster.find_service(namespace, name).is_some_and(|s| {
                    self.cluster
                        .service(s)
                        .backends
                        .iter()
                        .any(|b| net_matches(c.key.members(), &IpNet::from(b.ip), &[]))
                })
            }
        }
    }

    /// The classes a rule's peers match, cached by the rule's place in the model; `keep`
    /// says whether the result may outlive this resolver (see [`MatchCache`]).
    fn matched(
        &mut self,
        key: RuleKey,
        keep: bool,
        f: impl Fn(&Self, &Class) -> bool,
    ) -> Arc<Vec<usize>> {
        self.matched_among(key, keep, None, f)
    }

    /// [`Resolver::matched`], testing only `candidates` when given (a superset of the
    /// matching classes, in class order).
    fn matched_among(
        &mut self,
        key: RuleKey,
        keep: bool,
        candidates: Option<Vec<usize>>,
        f: impl Fn(&Self, &Class) -> bool,
    ) -> Arc<Vec<usize>> {
        let cached = if keep {
            self.matched.get(&key)
        } else {
            self.volatile.get(&key)
        };
        if let Some(v) = cached {
            return v.clone();
        }
        let v: Vec<usize> = match candidates {
            Some(c) => c
                .into_iter()
                .filter(|i| f(self, &self.classes.list[*i]))
                .collect(),
            None => (0..self.classes.list.len())
                .filter(|i| f(self, &self.classes.list[*i]))
                .collect(),
        };
        let v = if v.len() == self.classes.list.len() {
            self.all.clone()
        } else {
            Arc::new(v)
        };
        if keep {
            self.matched.insert(key, v.clone());
        } else {
            self.volatile.insert(key, v.clone());
        }
        v
    }

    /// Resolves the decision rows of one endpoint in one direction.
    pub fn endpoint_rows(
        &mut self,
        pod_id: PodId,
        dir: Dir,
        provs: &mut crate::mag::ProvSet,
    ) -> Vec<Row> {
        let cluster = self.cluster;
        let pod = cluster.pod(pod_id);
        let ns_labels = cluster.namespace_labels(&pod.namespace);
        let pod_identity = self.ids.labels(self.ids.of_pod(pod_id));
        let mut prov = |p: Provenance| ProvId(provs.insert_full(p).0 as u32);
        // (class set, contribution, named ports needing the remote pod).
        let mut contribs: Vec<(Arc<Vec<usize>>, Contribution, Option<NamedPorts<'a>>)> = Vec::new();
        let mut isolating: Vec<ProvId> = Vec::new();
        let dst_pod = |c: Option<&Class>| -> Option<&'a Pod> {
            match dir {
                Dir::Ingress => Some(pod),
                Dir::Egress => c.and_then(|c| c.pod.map(|p| cluster.pod(p))),
            }
        };
        let _ = dst_pod;
        // Admin tiers.
        for (pi, ap) in cluster.admin_policies.iter().enumerate() {
            let selected = match &ap.subject {
                AdminSubject::Namespaces(s) => s.matches(ns_labels),
                AdminSubject::Pods { namespaces, pods } => {
                    namespaces.matches(ns_labels) && pods.matches(&pod.labels)
                }
            };
            if !selected {
                continue;
            }
            let rules = match dir {
                Dir::Ingress => &ap.ingress,
                Dir::Egress => &ap.egress,
            };
            let tier = match ap.tier {
                AdminTier::Admin => Tier::Admin,
                AdminTier::Baseline => Tier::Baseline,
            };
            for (ri, r) in rules.iter().enumerate() {
                // A `Log` rule never decides (see semantics::admin); it adds no row.
                if r.action == AdminAction::Log {
                    continue;
                }
                let keep = !r
                    .peers
                    .iter()
                    .any(|p| matches!(p, AdminPeer::Service { .. }));
                let key = RuleKey {
                    kind: RuleKind::Admin,
                    policy: pi as u32,
                    spec: 0,
                    dir,
                    deny: false,
                    rule: ri as u32,
                };
                let classes =
                    self.matched(key, keep, |s, c| r.peers.iter().any(|p| s.admin_peer(p, c)));
                let (ports, named) = admin_ports(r.ports.as_deref());
                contribs.push((
                    classes,
                    Contribution {
                        tier,
                        order: (pi, ri),
                        act: match r.action {
                            AdminAction::Allow | AdminAction::Redirect | AdminAction::Log => {
                                Act::Allow
                            }
                            AdminAction::Deny => Act::Deny,
                            AdminAction::Pass => Act::Pass,
                        },
                        l7: r.action == AdminAction::Redirect,
                        ports,
                        prov: prov(Provenance::Rule(r.rule.clone())),
                    },
                    named,
                ));
            }
        }
        // NetworkPolicy.
        for (pi, np) in namespace_policies(&cluster.network_policies, &pod.namespace) {
            if !np.pod_selector.matches(&pod.labels) {
                continue;
            }
            let (isolates, rules) = match dir {
                Dir::Ingress => (np.policy_types.ingress, &np.ingress),
                Dir::Egress => (np.policy_types.egress, &np.egress),
            };
            if !isolates {
                continue;
            }
            isolating.push(prov(Provenance::Object(np.origin.clone())));
            for (ri, r) in rules.iter().enumerate() {
                let classes = if r.peers.is_empty() {
                    self.all.clone()
                } else {
                    let ns = np.namespace.as_str();
                    let key = RuleKey {
                        kind: RuleKind::NetworkPolicy,
                        policy: pi as u32,
                        spec: 0,
                        dir,
                        deny: false,
                        rule: ri as u32,
                    };
                    let candidates = if self.matched.contains_key(&key) {
                        None
                    } else {
                        self.np_candidates(&r.peers)
                    };
                    self.matched_among(key, true, candidates, |s, c| {
                        r.peers.iter().any(|p| s.np_peer(ns, p, c))
                    })
                };
                let (ports, named) = np_ports(&r.ports);
                contribs.push((
                    classes,
                    Contribution {
                        tier: Tier::Np,
                        order: (pi, ri),
                        act: Act::Allow,
                        l7: false,
                        ports,
                        prov: prov(Provenance::Rule(r.rule.clone())),
                    },
                    named,
                ));
            }
        }
        // Cilium policies. The requirements (`from/toRequires`) of every rule object that
        // selects this endpoint constrain every endpoint peer of the direction and kind.
        let mut requires: [Vec<&Selector>; 2] = [Vec::new(), Vec::new()];
        for cp in &cluster.cilium_policies {
            for spec in &cp.specs {
                if !pod_identity.is_some_and(|l| cilium_matches(&spec.endpoint_selector, l)) {
                    continue;
                }
                let (allow, deny) = match dir {
                    Dir::Ingress => (&spec.ingress, &spec.ingress_deny),
                    Dir::Egress => (&spec.egress, &spec.egress_deny),
                };
                requires[0].extend(allow.iter().flat_map(|r| &r.requires));
                requires[1].extend(deny.iter().flat_map(|r| &r.requires));
            }
        }
        for (pi, cp) in cluster.cilium_policies.iter().enumerate() {
            for (si, spec) in cp.specs.iter().enumerate() {
                if !pod_identity.is_some_and(|l| cilium_matches(&spec.endpoint_selector, l)) {
                    continue;
                }
                let (has, default_deny, allow, deny) = match dir {
                    Dir::Ingress => (
                        spec.has_ingress,
                        spec.default_deny.ingress,
                        &spec.ingress,
                        &spec.ingress_deny,
                    ),
                    Dir::Egress => (
                        spec.has_egress,
                        spec.default_deny.egress,
                        &spec.egress,
                        &spec.egress_deny,
                    ),
                };
                if has && default_deny != Some(false) {
                    isolating.push(prov(Provenance::Object(cp.origin.clone())));
                }
                for (is_deny, rules) in [(false, allow), (true, deny)] {
                    for (ri, r) in rules.iter().enumerate() {
                        let key = RuleKey {
                            kind: RuleKind::Cilium,
                            policy: pi as u32,
                            spec: si as u32,
                            dir,
                            deny: is_deny,
                            rule: ri as u32,
                        };
                        let classes = self.cilium_classes(key, r, &requires[usize::from(is_deny)]);
                        for (ports, named, l7) in cilium_ports(r) {
                            contribs.push((
                                classes.clone(),
                                Contribution {
                                    tier: Tier::Np,
                                    order: (pi, ri),
                                    act: if is_deny { Act::Deny } else { Act::Allow },
                                    l7: l7 && !is_deny,
                                    ports,
                                    prov: prov(Provenance::Rule(r.rule.clone())),
                                },
                                named,
                            ));
                        }
                    }
                }
            }
        }
        let default_allow = prov(Provenance::Builtin("default allow".into()));
        // An entry lists its objects in the order of what they name, not of when each was
        // first interned: an incremental lowering interns a new policy last, and must list
        // an entry's policies as a full lowering does.
        let order = prov_order(
            provs,
            contribs
                .iter()
                .map(|c| c.1.prov)
                .chain(isolating.iter().copied()),
        );
        isolating.sort_unstable_by_key(|p| order[p]);
        isolating.dedup();
        let ctx = Decide {
            isolated: !isolating.is_empty(),
            isolating,
            default_allow,
            order,
        };
        // Split contributions into every-class ones and per-class ones, resolving named
        // ports on the destination pod.
        let all_len = self.classes.list.len();
        let mut common: Vec<Contribution> = Vec::new();
        let mut per_class: BTreeMap<usize, Vec<Contribution>> = BTreeMap::new();
        for (classes, mut c, named) in contribs {
            let every = classes.len() == all_len;
            let needs_class = named.is_some() && dir == Dir::Egress;
            if let (Some(n), Dir::Ingress) = (&named, dir) {
                c.ports = n.resolve(&c.ports, Some(pod));
            }
            if every && !needs_class {
                common.push(c);
                continue;
            }
            for ci in classes.iter() {
                let mut c = c.clone();
                if needs_class {
                    let remote = self.classes.list[*ci].pod.map(|p| cluster.pod(p));
                    c.ports = named
                        .as_ref()
                        .map(|n| n.resolve(&c.ports, remote))
                        .unwrap_or(c.ports);
                }
                per_class.entry(*ci).or_default().push(c);
            }
        }
        let mut rows = Vec::new();
        let base = ctx.decide(&[], 0, 0);
        rows.push(Row {
            priority: 0,
            class: None,
            proto: None,
            port: (0, 0),
            decision: base.0,
            prov: base.1.clone(),
        });
        let common_ivs = intervals(&ctx, &common);
        let full = vec![(0u16, u16::MAX, base.clone())];
        emit_rows(&mut rows, 1, None, &common_ivs, |_| full.clone());
        for (ci, cs) in per_class {
            let mut all: Vec<Contribution> = common.clone();
            all.extend(cs);
            let ivs = intervals(&ctx, &all);
            let class_id = self.classes.list[ci].id;
            emit_rows(&mut rows, 2, Some(class_id), &ivs, |proto| {
                common_ivs
                    .iter()
                    .find(|(p, _)| *p == proto)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| full.clone())
            });
        }
        rows
    }
}

/// Named ports of a rule: (protocol or any, name), resolved later on the destination pod.
#[derive(Clone, Debug)]
struct NamedPorts<'a> {
    names: Vec<(Option<Protocol>, &'a str)>,
}

impl NamedPorts<'_> {
    fn resolve(&self, fixed: &Ports, pod: Option<&Pod>) -> Ports {
        let mut v: Vec<(u8, u16, u16)> = fixed.as_ref().clone();
        if let Some(pod) = pod {
            for (proto, name) in &self.names {
                for cp in &pod.ports {
                    if cp.name.as_deref() == Some(*name) && proto.is_none_or(|p| p == cp.protocol) {
                        v.push((cp.protocol.number(), cp.port, cp.port));
                    }
                }
            }
        }
        Rc::new(v)
    }
}

fn np_ports(ports: &[NpPort]) -> (Ports, Option<NamedPorts<'_>>) {
    if ports.is_empty() {
        return (Rc::new(all_protocols()), None);
    }
    let mut v = Vec::new();
    let mut names = Vec::new();
    for p in ports {
        for proto in proto_numbers(p.protocol) {
            match &p.port {
                None => v.push((proto, 0, u16::MAX)),
                Some(PortRef::Number(n)) => {
                    let end = p.end_port.unwrap_or(*n).max(*n);
                    v.push((proto, *n, end));
                }
                Some(PortRef::Name(s)) => names.push((Some(p.protocol), s.as_str())),
            }
        }
    }
    let named = (!names.is_empty()).then_some(NamedPorts { names });
    (Rc::new(v), named)
}

fn admin_ports(ports: Option<&[AdminPort]>) -> (Ports, Option<NamedPorts<'_>>) {
    let Some(ports) = ports else {
        return (Rc::new(all_protocols()), None);
    };
    let mut v = Vec::new();
    let mut names = Vec::new();
    for p in ports {
        match p {
            AdminPort::Number { protocol, port } => {
                for proto in proto_numbers(*protocol) {
                    v.push((proto, *port, *port));
                }
            }
            AdminPort::Range {
                protocol,
                start,
                end,
            } => {
                for proto in proto_numbers(*protocol) {
                    v.push((proto, *start, (*end).max(*start)));
                }
            }
            AdminPort::Named(s) => names.push((None, s.as_str())),
        }
    }
    let named = (!names.is_empty()).then_some(NamedPorts { names });
    (Rc::new(v), named)
}

fn cilium_ports(r: &CiliumRule) -> Vec<(Ports, Option<NamedPorts<'_>>, bool)> {
    if r.icmp {
        return vec![(
            Rc::new(vec![(1, 0, u16::MAX), (58, 0, u16::MAX)]),
            None,
            false,
        )];
    }
    if r.to_ports.is_empty() {
        return vec![(Rc::new(all_protocols()), None, false)];
    }
    let mut out = Vec::new();
    for pr in &r.to_ports {
        let l7 = pr.l7.is_some();
        let mut v = Vec::new();
        let mut names = Vec::new();
        let protos = |p: Option<Protocol>| match p {
            None => vec![6, 17, 132],
            Some(p) => proto_numbers(p),
        };
        if pr.ports.is_empty() {
            v.extend([6, 17, 132].map(|p| (p, 0, u16::MAX)));
        }
        for p in &pr.ports {
            match &p.port {
                None | Some(PortRef::Number(0)) => {
                    v.extend(protos(p.protocol).into_iter().map(|x| (x, 0, u16::MAX)))
                }
                Some(PortRef::Number(n)) => {
                    let end = p.end_port.unwrap_or(*n).max(*n);
                    v.extend(protos(p.protocol).into_iter().map(|x| (x, *n, end)));
                }
                Some(PortRef::Name(s)) => match p.protocol {
                    None => {
                        for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                            names.push((Some(proto), s.as_str()));
                        }
                    }
                    Some(proto) => names.push((Some(proto), s.as_str())),
                },
            }
        }
        let named = (!names.is_empty()).then_some(NamedPorts { names });
        out.push((Rc::new(v), named, l7));
    }
    out
}

type Outcome = (Decision, Vec<ProvId>);

struct Decide {
    isolated: bool,
    isolating: Vec<ProvId>,
    default_allow: ProvId,
    /// Each contribution's provenance → its rank in the order of what it names.
    order: HashMap<ProvId, u32>,
}

/// The rank of each of `ids` in the order of the provenance it names.
fn prov_order(
    provs: &crate::mag::ProvSet,
    ids: impl Iterator<Item = ProvId>,
) -> HashMap<ProvId, u32> {
    let mut ids: Vec<ProvId> = ids.collect();
    ids.sort_unstable_by(|a, b| {
        provs
            .get_index(a.0 as usize)
            .cmp(&provs.get_index(b.0 as usize))
    });
    ids.dedup();
    ids.into_iter()
        .enumerate()
        .map(|(rank, id)| (id, rank as u32))
        .collect()
}

impl Decide {
    /// The decision for one protocol and port, given every contribution that applies to
    /// the class, in any order.
    fn decide(&self, cs: &[&Contribution], proto: u8, port: u16) -> Outcome {
        let hit = |c: &Contribution| {
            c.ports
                .iter()
                .any(|(p, lo, hi)| *p == proto && *lo <= port && port <= *hi)
        };
        let mut admin: Vec<&Contribution> = cs
            .iter()
            .copied()
            .filter(|c| c.tier == Tier::Admin && hit(c))
            .collect();
        admin.sort_by_key(|c| c.order);
        if let Some(c) = admin.first() {
            match c.act {
                Act::Allow => return (Decision::Allow, vec![c.prov]),
                Act::Deny => return (Decision::Deny, vec![c.prov]),
                Act::Pass => {}
            }
        }
        let np: Vec<&Contribution> = cs
            .iter()
            .copied()
            .filter(|c| c.tier == Tier::Np && hit(c))
            .collect();
        let provs = |act: Act, l7: Option<bool>| {
            let mut v: Vec<ProvId> = np
                .iter()
                .filter(|c| c.act == act && l7.is_none_or(|l| c.l7 == l))
                .map(|c| c.prov)
                .collect();
            v.sort_unstable_by_key(|p| self.order[p]);
            v.dedup();
            v
        };
        let denies = provs(Act::Deny, None);
        if !denies.is_empty() {
            return (Decision::Deny, denies);
        }
        let redirects = provs(Act::Allow, Some(true));
        if !redirects.is_empty() {
            return (Decision::Redirect, redirects);
        }
        let allows = provs(Act::Allow, None);
        if !allows.is_empty() {
            return (Decision::Allow, allows);
        }
        if self.isolated {
            return (Decision::Deny, self.isolating.clone());
        }
        let mut base: Vec<&Contribution> = cs
            .iter()
            .copied()
            .filter(|c| c.tier == Tier::Baseline && hit(c))
            .collect();
        base.sort_by_key(|c| c.order);
        // The first matching baseline rule decides; `Pass` (ClusterNetworkPolicy v1alpha2)
        // skips the rest of the tier, to the default.
        if let Some(c) = base.first() {
            match c.act {
                Act::Allow => return (Decision::Allow, vec![c.prov]),
                Act::Deny => return (Decision::Deny, vec![c.prov]),
                Act::Pass => {}
            }
        }
        (Decision::Allow, vec![self.default_allow])
    }
}

/// Per protocol: maximal port intervals with one outcome, covering 0..=65535.
type Intervals = Vec<(u8, Vec<(u16, u16, Outcome)>)>;

fn intervals(ctx: &Decide, cs: &[Contribution]) -> Intervals {
    let refs: Vec<&Contribution> = cs.iter().collect();
    PROTOS
        .iter()
        .map(|&proto| {
            let mut cuts: BTreeSet<u32> = BTreeSet::from([0, 65536]);
            for c in cs {
                for (p, lo, hi) in c.ports.iter() {
                    if *p == proto {
                        cuts.insert(u32::from(*lo));
                        cuts.insert(u32::from(*hi) + 1);
                    }
                }
            }
            let cuts: Vec<u32> = cuts.into_iter().collect();
            let mut ivs: Vec<(u16, u16, Outcome)> = Vec::new();
            for w in cuts.windows(2) {
                let (lo, hi) = (w[0] as u16, (w[1] - 1) as u16);
                let o = ctx.decide(&refs, proto, lo);
                match ivs.last_mut() {
                    Some(last) if last.2 == o && u32::from(last.1) + 1 == u32::from(lo) => {
                        last.1 = hi
                    }
                    _ => ivs.push((lo, hi, o)),
                }
            }
            (proto, ivs)
        })
        .collect()
}

/// Emits rows for the intervals whose outcome differs from what lower-priority rows give
/// (`below`, as intervals per protocol).
fn emit_rows(
    rows: &mut Vec<Row>,
    priority: u32,
    class: Option<u32>,
    ivs: &Intervals,
    below: impl Fn(u8) -> Vec<(u16, u16, Outcome)>,
) {
    // One row for every protocol and port when the outcome is uniform.
    let first = ivs
        .first()
        .and_then(|(_, v)| v.first())
        .map(|x| x.2.clone());
    let uniform = ivs
        .iter()
        .all(|(_, v)| v.len() == 1 && Some(&v[0].2) == first.as_ref());
    if let (true, Some(o)) = (uniform, first) {
        let same = PROTOS.iter().all(|p| {
            let b = below(*p);
            b.len() == 1 && b[0].2 == o
        });
        if !same {
            rows.push(Row {
                priority,
                class,
                proto: None,
                port: (0, 0),
                decision: o.0,
                prov: o.1,
            });
        }
        return;
    }
    for (proto, v) in ivs {
        let b = below(*proto);
        for (lo, hi, o) in v {
            for (blo, bhi, bo) in &b {
                let (s, e) = ((*lo).max(*blo), (*hi).min(*bhi));
                if s > e || bo == o {
                    continue;
                }
                for (value, len) in port_prefixes(s, e) {
                    rows.push(Row {
                        priority,
                        class,
                        proto: Some(*proto),
                        port: (value, len),
                        decision: o.0,
                        prov: o.1.clone(),
                    });
                }
            }
        }
    }
}
