//! Lowering: `Cluster` → `Mag`, the default node pipeline of one node.
//!
//! ```text
//!  in_port ─► classify ─► anti_spoof ─► service_lb ─► lb_backend ─► conntrack
//!                 └──(wire)──────────────────┘   └──(no service)──────┘  │
//!  ┌───────────────────────────────────────────────────────────────────────┘
//!  └► src_ipcache ─► dst_ipcache ─► egress_policy ─► route ─(to_endpoint)─► ingress_policy
//! ```
//!
//! Packets from a local pod are checked against its addresses, translated when they go to
//! a service (Maglev slot per connection, or per client with ClientIP affinity), looked up
//! in connection tracking (replies are reverse-translated there), classified by source and
//! destination policy class, checked against the egress decisions of the source endpoint,
//! routed (to a local endpoint, the host, another node or the wire), and checked against
//! the ingress decisions of a local destination. Packets from the wire skip the anti-spoof
//! and egress checks. Replies and later packets of committed connections match the
//! conntrack rows of the policy tables and are always allowed.
//!
//! Traffic policies (`externalTrafficPolicy` / `internalTrafficPolicy: Local`) give a
//! frontend a second, node-local Maglev table of the endpoints on this node, under its own
//! service id in `lb_backend`: a node port of a service with `externalTrafficPolicy: Local`
//! balances over it for every sender, and a cluster IP of a service with
//! `internalTrafficPolicy: Local` for the pods of this node, while a packet from the wire
//! keeps the cluster-wide table (the reference does not know an outside client's node).
//! Telling the two apart needs the sending endpoint in the key of `service_lb`, which is
//! added only when some service needs it ([`source_keyed_lb`]). No local endpoint: the
//! frontend drops (`lb_no_backend`), as the reference rejects the connection.
//!
//! Entries are built in *groups* ([`Group`]): one per local endpoint, per ipcache prefix,
//! per service, plus a static group. A change to the model recomputes only the groups it
//! touches ([`incremental`]); the canonical MAG is the union of the groups.

pub mod incremental;
pub mod maglev;
pub mod policy;

use crate::identity::{cluster_to_identities_and_sets, Identities};
use crate::mag::{
    ct, eth, mark, ports, verdict, ActionCall, ActionId, Entry, Field, FieldMatch, KeyField, Mag,
    MatchKind, Op, Operand, ProvId, Provenance, Table, TableId,
};
use crate::model::{Cluster, Origin, PodId, Protocol, Service, ServiceType};
use ipnet::IpNet;
use policy::{Classes, Decision, Dir, Resolver};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// The name of the node pipec makes up when the input has no nodes: it holds every pod.
pub const SYNTHETIC_NODE: &str = "local";

/// A unit of recomputation: the entries one object (or the skeleton) contributes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// Entries that depend on nothing in the model.
    Static,
    /// A local endpoint: classification, anti-spoofing, local route, policy rows.
    Endpoint(String),
    /// An ipcache prefix: its class in both ipcache tables, and its route if remote.
    Prefix(IpNet),
    /// A service: frontends and its Maglev table.
    Service(String),
}

/// The ids of the fixed tables and actions of the node pipeline.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs, reason = "each field is named after its table or action")]
pub struct Skeleton {
    pub classify: TableId,
    pub anti_spoof: TableId,
    pub service_lb: TableId,
    pub lb_backend: TableId,
    pub conntrack: TableId,
    pub src_ipcache: TableId,
    pub dst_ipcache: TableId,
    pub egress_policy: TableId,
    pub route: TableId,
    pub ingress_policy: TableId,
    pub from_endpoint: ActionId,
    pub pass: ActionId,
    pub lb_select: ActionId,
    pub lb_select_affinity: ActionId,
    pub lb_no_backend: ActionId,
    pub dnat4: ActionId,
    pub dnat6: ActionId,
    pub set_src_identity: ActionId,
    pub set_dst_identity: ActionId,
    pub allow: ActionId,
    pub deny: ActionId,
    pub redirect: ActionId,
    pub allow_ct: ActionId,
    pub to_endpoint: ActionId,
    pub to_node: ActionId,
    pub to_host: ActionId,
    pub allow_commit: ActionId,
    pub redirect_commit: ActionId,
}

fn call(action: ActionId, args: &[u128]) -> ActionCall {
    ActionCall {
        action,
        args: args.into(),
    }
}

fn set(field: Field, p: u8) -> Op {
    Op::Set {
        field,
        value: Operand::Param(p),
    }
}

fn set_const(field: Field, v: u128) -> Op {
    Op::Set {
        field,
        value: Operand::Const(v),
    }
}

fn key(fields: &[(Field, MatchKind)]) -> Vec<KeyField> {
    fields
        .iter()
        .map(|(field, kind)| KeyField {
            field: *field,
            kind: *kind,
        })
        .collect()
}

/// Builds the tables, actions and edges of the node pipeline, with no entries.
///
/// `source_keyed` adds the sending endpoint to the key of `service_lb` (see
/// [`source_keyed_lb`]): only then can a frontend balance pods and outside clients
/// differently.
pub fn skeleton(mag: &mut Mag, source_keyed: bool) -> Skeleton {
    use crate::mag::pipeline::table as pt;
    use Field::*;
    use MatchKind::*;
    let from_wire = mag.add_action("from_wire", &[], vec![set_const(Endpoint, 0)]);
    let from_endpoint =
        mag.add_action("from_endpoint", &[("ep", Endpoint)], vec![set(Endpoint, 0)]);
    let pass = mag.add_action("pass", &[], vec![]);
    let drop_spoofed = mag.add_action("drop_spoofed", &[], vec![Op::Drop]);
    let hash = |fields: Vec<Field>| Op::Hash {
        fields,
        modulo: Operand::Param(1),
        into: Hash,
    };
    let lb_select = mag.add_action(
        "lb_select",
        &[("svc", Service), ("m", Hash)],
        vec![
            set(Service, 0),
            hash(vec![Ipv4Src, Ipv6Src, L4Sport, IpProto]),
        ],
    );
    // The timeout is a number of seconds; a parameter takes the width of a field, and the
    // hash's 32 bits hold every timeout the API server accepts (at most 86400).
    let lb_select_affinity = mag.add_action(
        "lb_select_affinity",
        &[("svc", Service), ("m", Hash), ("timeout", Hash)],
        vec![
            set(Service, 0),
            hash(vec![Ipv4Src, Ipv6Src]),
            Op::Affinity {
                timeout: Operand::Param(2),
            },
        ],
    );
    let lb_no_backend = mag.add_action("lb_no_backend", &[], vec![Op::Drop]);
    let no_service = mag.add_action("no_service", &[], vec![]);
    let dnat4 = mag.add_action(
        "dnat4",
        &[("backend", Backend), ("addr", Ipv4Dst), ("port", L4Dport)],
        vec![set(Backend, 0), set(Ipv4Dst, 1), set(L4Dport, 2)],
    );
    let dnat6 = mag.add_action(
        "dnat6",
        &[("backend", Backend), ("addr", Ipv6Dst), ("port", L4Dport)],
        vec![set(Backend, 0), set(Ipv6Dst, 1), set(L4Dport, 2)],
    );
    let ct_lookup = mag.add_action("ct_lookup", &[], vec![Op::CtLookup]);
    let set_src_identity = mag.add_action(
        "set_src_identity",
        &[("id", SrcIdentity)],
        vec![set(SrcIdentity, 0)],
    );
    let set_dst_identity = mag.add_action(
        "set_dst_identity",
        &[("id", DstIdentity)],
        vec![set(DstIdentity, 0)],
    );
    let allow = mag.add_action("allow", &[], vec![set_const(Verdict, verdict::ALLOW)]);
    let deny = mag.add_action("deny", &[], vec![Op::Drop]);
    let redirect = mag.add_action(
        "redirect",
        &[],
        vec![
            set_const(Verdict, verdict::REDIRECT),
            set_const(Mark, mark::L7_REDIRECT),
        ],
    );
    let allow_ct = mag.add_action("allow_ct", &[], vec![set_const(Verdict, verdict::ALLOW)]);
    let to_endpoint = mag.add_action(
        "to_endpoint",
        &[("ep", Endpoint)],
        vec![set(Endpoint, 0), set(OutPort, 0)],
    );
    let to_node = mag.add_action(
        "to_node",
        &[("addr", NextHop)],
        vec![
            set_const(OutPort, ports::WIRE),
            set(NextHop, 0),
            Op::CtCommit,
        ],
    );
    let to_host = mag.add_action(
        "to_host",
        &[],
        vec![set_const(OutPort, ports::HOST), Op::CtCommit],
    );
    let to_wire = mag.add_action(
        "to_wire",
        &[],
        vec![set_const(OutPort, ports::WIRE), Op::CtCommit],
    );
    let allow_commit = mag.add_action(
        "allow_commit",
        &[],
        vec![set_const(Verdict, verdict::ALLOW), Op::CtCommit],
    );
    let redirect_commit = mag.add_action(
        "redirect_commit",
        &[],
        vec![
            set_const(Verdict, verdict::REDIRECT),
            set_const(Mark, mark::L7_REDIRECT),
            Op::CtCommit,
        ],
    );
    let table =
        |name: &str, k: Vec<KeyField>, actions: Vec<ActionId>, default: ActionId, size: u32| {
            Table {
                name: name.into(),
                key: k,
                actions,
                default_action: call(default, &[]),
                size_hint: size,
                entries: Vec::new(),
            }
        };
    let classify = mag.add_table(table(
        pt::CLASSIFY,
        key(&[(InPort, Exact)]),
        vec![from_endpoint],
        from_wire,
        256,
    ));
    let anti_spoof = mag.add_table(table(
        pt::ANTI_SPOOF,
        key(&[
            (Endpoint, Exact),
            (EthType, Exact),
            (Ipv4Src, Ternary),
            (Ipv6Src, Ternary),
        ]),
        vec![pass],
        drop_spoofed,
        512,
    ));
    let mut lb_key = vec![
        (EthType, Exact),
        (Ipv4Dst, Ternary),
        (Ipv6Dst, Ternary),
        (IpProto, Exact),
        (L4Dport, Exact),
    ];
    if source_keyed {
        lb_key.push((Endpoint, Ternary));
    }
    let service_lb = mag.add_table(table(
        pt::SERVICE_LB,
        key(&lb_key),
        vec![lb_select, lb_select_affinity, lb_no_backend],
        no_service,
        65536,
    ));
    let lb_backend = mag.add_table(table(
        pt::LB_BACKEND,
        key(&[(Service, Exact), (Hash, Exact)]),
        vec![dnat4, dnat6],
        lb_no_backend,
        1 << 20,
    ));
    let conntrack = mag.add_table(table(pt::CONNTRACK, vec![], vec![], ct_lookup, 1 << 18));
    let ipcache_key = |a: Field, b: Field| key(&[(EthType, Exact), (a, Ternary), (b, Ternary)]);
    let src_ipcache = mag.add_table(Table {
        default_action: call(
            set_src_identity,
            &[crate::identity::reserved::WORLD.0.into()],
        ),
        ..table(
            pt::SRC_IPCACHE,
            ipcache_key(Ipv4Src, Ipv6Src),
            vec![set_src_identity],
            set_src_identity,
            1 << 18,
        )
    });
    let dst_ipcache = mag.add_table(Table {
        default_action: call(
            set_dst_identity,
            &[crate::identity::reserved::WORLD.0.into()],
        ),
        ..table(
            pt::DST_IPCACHE,
            ipcache_key(Ipv4Dst, Ipv6Dst),
            vec![set_dst_identity],
            set_dst_identity,
            1 << 18,
        )
    });
    let policy_key = |remote: Field| {
        key(&[
            (CtState, Ternary),
            (Endpoint, Ternary),
            (remote, Ternary),
            (IpProto, Ternary),
            (L4Dport, Ternary),
        ])
    };
    let egress_policy = mag.add_table(table(
        pt::EGRESS_POLICY,
        policy_key(DstIdentity),
        vec![allow_ct, pass, allow, deny, redirect],
        deny,
        1 << 16,
    ));
    let route = mag.add_table(table(
        pt::ROUTE,
        key(&[(EthType, Exact), (Ipv4Dst, Ternary), (Ipv6Dst, Ternary)]),
        vec![to_endpoint, to_node, to_host],
        to_wire,
        1 << 18,
    ));
    let ingress_policy = mag.add_table(table(
        pt::INGRESS_POLICY,
        policy_key(SrcIdentity),
        vec![allow_ct, allow_commit, deny, redirect_commit],
        deny,
        1 << 16,
    ));
    mag.add_edge(classify, Some(from_endpoint), anti_spoof);
    mag.add_edge(classify, None, service_lb);
    mag.add_edge(anti_spoof, None, service_lb);
    mag.add_edge(service_lb, Some(lb_select), lb_backend);
    mag.add_edge(service_lb, Some(lb_select_affinity), lb_backend);
    mag.add_edge(service_lb, None, conntrack);
    mag.add_edge(lb_backend, None, conntrack);
    mag.add_edge(conntrack, None, src_ipcache);
    mag.add_edge(src_ipcache, None, dst_ipcache);
    mag.add_edge(dst_ipcache, None, egress_policy);
    mag.add_edge(egress_policy, None, route);
    mag.add_edge(route, Some(to_endpoint), ingress_policy);
    mag.start = Some(classify);
    Skeleton {
        classify,
        anti_spoof,
        service_lb,
        lb_backend,
        conntrack,
        src_ipcache,
        dst_ipcache,
        egress_policy,
        route,
        ingress_policy,
        from_endpoint,
        pass,
        lb_select,
        lb_select_affinity,
        lb_no_backend,
        dnat4,
        dnat6,
        set_src_identity,
        set_dst_identity,
        allow,
        deny,
        redirect,
        allow_ct,
        to_endpoint,
        to_node,
        to_host,
        allow_commit,
        redirect_commit,
    }
}

/// Entries of one group, by table.
pub type GroupEntries = Vec<(TableId, Entry)>;

/// Everything lowering keeps between compiles so that a change can be applied
/// incrementally.
#[derive(Clone, Debug)]
pub struct LowerState {
    /// The node.
    pub node: String,
    /// Whether the node is the synthetic one that holds every pod.
    pub synthetic: bool,
    /// Fixed tables and actions.
    pub sk: Skeleton,
    /// Entries of every group.
    pub groups: BTreeMap<Group, GroupEntries>,
    /// Identities of the model the state was built from.
    pub ids: Identities,
    /// Policy classes.
    pub classes: Classes,
    /// Endpoint number of every local pod, by `namespace/name`.
    pub endpoints: BTreeMap<String, u32>,
    /// Load-balancer id base of every service, by `namespace/name`.
    pub lb_ids: BTreeMap<String, u32>,
    /// Label keys some policy selects on (identities keep them).
    pub relevant: BTreeSet<String>,
    /// Cluster identities by label set, and how many pods have each.
    pub label_index:
        std::collections::HashMap<crate::model::Labels, (crate::identity::IdentityId, usize)>,
    /// How many ipcache prefixes each class has.
    pub class_size: Vec<usize>,
    /// Whether `service_lb` is keyed on the sending endpoint too ([`source_keyed_lb`]).
    pub source_keyed: bool,
    /// Whether an endpoint or load-balancer id was moved off its natural value by a
    /// collision (then incremental updates fall back to full lowering).
    pub probed: bool,
    /// The classes each policy rule matches, kept for incremental updates.
    pub matched: policy::MatchCache,
}

/// A lowered node: the graph and the state for incremental updates.
///
/// The canonical graph (entries sorted) is materialised lazily: an incremental update
/// recomputes the groups it touches and returns the entry-level diff, and only records the
/// diff against the graph it last materialised. [`Lowered::mag`] applies the pending diffs
/// (or, after many changes, reassembles the tables from the groups) on first use.
#[derive(Debug)]
pub struct Lowered {
    /// The canonical graph, when it is up to date.
    canon: std::sync::OnceLock<Mag>,
    /// Otherwise the last graph with the diffs not applied to it yet.
    pending: std::sync::Mutex<Option<Pending>>,
    /// State for [`incremental`].
    pub state: LowerState,
}

/// A graph whose tables lag behind the groups.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The graph; its provenance records are current, its tables are not.
    pub(crate) mag: Mag,
    /// Diffs to apply in order.
    pub(crate) diffs: Vec<incremental::Diff>,
    /// Whether to reassemble the tables from the groups instead.
    pub(crate) rebuild: bool,
}

/// Pending diffs beyond this many are dropped for one reassembly.
const MAX_PENDING: usize = 8;

impl Lowered {
    /// A lowered node from its canonical graph and state.
    pub fn new(mag: Mag, state: LowerState) -> Lowered {
        Lowered {
            canon: std::sync::OnceLock::from(mag),
            pending: std::sync::Mutex::new(None),
            state,
        }
    }

    /// The canonical graph, giving up the state for incremental updates: a caller done
    /// with updates frees that state and needs no copy of the graph.
    pub fn into_mag(self) -> Mag {
        self.mag();
        self.canon
            .into_inner()
            .expect("Lowered::mag has just materialised the graph")
    }

    /// The canonical graph (entries sorted), materialised on first use after a change.
    pub fn mag(&self) -> &Mag {
        self.canon.get_or_init(|| {
            let p = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .expect("a lowered node holds its graph in one of its two cells");
            let mut mag = p.mag;
            if p.rebuild {
                assemble(&mut mag, &self.state);
            } else {
                for d in &p.diffs {
                    incremental::apply_diff(&mut mag, d);
                }
            }
            mag
        })
    }

    /// The graph as a pending one, for an update to record its diff against.
    pub(crate) fn pending_mut(&mut self) -> &mut Pending {
        let slot = self
            .pending
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mag) = self.canon.take() {
            *slot = Some(Pending {
                mag,
                diffs: Vec::new(),
                rebuild: false,
            });
        }
        slot.as_mut()
            .expect("a lowered node holds its graph in one of its two cells")
    }

    /// Records a diff (already reflected in the groups) for the next [`Lowered::mag`].
    pub(crate) fn record(&mut self, diff: &incremental::Diff) {
        let p = self.pending_mut();
        if p.rebuild || diff.is_empty() {
            return;
        }
        if p.diffs.len() >= MAX_PENDING {
            p.diffs.clear();
            p.rebuild = true;
        } else {
            p.diffs.push(diff.clone());
        }
    }
}

impl Clone for Lowered {
    fn clone(&self) -> Lowered {
        Lowered::new(self.mag().clone(), self.state.clone())
    }
}

/// The node a compile is for: `--node`, else the first node, else the synthetic node.
pub fn pick_node(cluster: &Cluster, node: Option<&str>) -> (String, bool) {
    match node {
        Some(n) => (
            n.to_string(),
            cluster.nodes.is_empty() && n == SYNTHETIC_NODE,
        ),
        None => match cluster.nodes.first() {
            Some(n) => (n.name.clone(), false),
            None => (SYNTHETIC_NODE.to_string(), true),
        },
    }
}

/// Whether a pod runs on the node (every pod does on the synthetic node).
pub fn is_local(cluster: &Cluster, pod: PodId, node: &str, synthetic: bool) -> bool {
    let p = cluster.pod(pod);
    !p.host_network && !p.ips.is_empty() && (synthetic || p.node.as_deref() == Some(node))
}

pub(crate) fn natural_endpoint(ip: IpAddr) -> u32 {
    let low = match ip {
        IpAddr::V4(a) => u32::from(a) & 0xffff,
        IpAddr::V6(a) => (u128::from(a) & 0xffff) as u32,
    };
    ports::FIRST_ENDPOINT as u32 + low % (65536 - ports::FIRST_ENDPOINT as u32)
}

/// The address the service is known by, which gives its load-balancer id.
pub(crate) fn primary_frontend(s: &Service) -> Option<IpAddr> {
    s.cluster_ips
        .first()
        .or(s.load_balancer_ips.first())
        .or(s.external_ips.first())
        .copied()
}

pub(crate) fn natural_lb(ip: IpAddr) -> u32 {
    let low = match ip {
        IpAddr::V4(a) => u32::from(a) & 0x00ff_ffff,
        IpAddr::V6(a) => (u128::from(a) & 0x00ff_ffff) as u32,
    };
    low.max(1) << 8
}

/// Allocates ids in order, probing on a collision; returns the map and whether any id
/// was probed.
fn allocate(
    items: impl Iterator<Item = (String, u32)>,
    step: u32,
    max: u32,
    min: u32,
) -> (BTreeMap<String, u32>, bool) {
    let mut used = BTreeSet::new();
    let mut out = BTreeMap::new();
    let mut probed = false;
    for (k, mut id) in items {
        while used.contains(&id) {
            probed = true;
            id = if id + step > max { min } else { id + step };
        }
        used.insert(id);
        out.insert(k, id);
    }
    (out, probed)
}

/// Lowers the model for one node (see [`pick_node`]).
pub fn cluster_to_mag(cluster: &Cluster, node: Option<&str>) -> Lowered {
    lower_node(cluster, node, None)
}

/// Lowers the model for one node with the endpoint rows of `pods` only: every shared table
/// (the ipcache, the services, the fixed tables) whole, and no other pod's policy rows.
///
/// A connection between these pods runs through it as through the whole node, at the cost
/// of their rows instead of every local pod's (a trace on a node of thousands of pods). It
/// is not the node's pipeline: it is never planned, compiled or updated incrementally.
pub fn cluster_to_mag_of_pods(
    cluster: &Cluster,
    node: Option<&str>,
    pods: &BTreeSet<PodId>,
) -> Lowered {
    lower_node(cluster, node, Some(pods))
}

fn lower_node(cluster: &Cluster, node: Option<&str>, only: Option<&BTreeSet<PodId>>) -> Lowered {
    let (node, synthetic) = pick_node(cluster, node);
    let mut mag = Mag::new(node.clone());
    let source_keyed = source_keyed_lb(cluster, synthetic);
    let sk = skeleton(&mut mag, source_keyed);
    let (ids, label_sets) = cluster_to_identities_and_sets(cluster, Some(&node));
    let classes = policy::classes(cluster, &ids, &node);
    let (endpoints, probed_eps) = allocate(
        cluster
            .pod_ids()
            .filter(|p| is_local(cluster, *p, &node, synthetic))
            .filter_map(|p| {
                let pod = cluster.pod(p);
                Some((pod.key(), natural_endpoint(pod.ip()?)))
            }),
        1,
        65535,
        ports::FIRST_ENDPOINT as u32,
    );
    let (lb_ids, probed_lbs) = allocate(
        cluster
            .services
            .iter()
            .filter_map(|s| Some((s.key(), natural_lb(primary_frontend(s)?)))),
        256,
        u32::MAX - 255,
        256,
    );
    let relevant = crate::identity::selected_keys(cluster);
    let label_index = label_sets
        .into_iter()
        .map(|(labels, id, n)| (labels, (id, n)))
        .collect();
    let mut class_size = vec![0; classes.list.len()];
    for c in classes.by_net.values() {
        class_size[*c] += 1;
    }
    let mut state = LowerState {
        node,
        synthetic,
        sk,
        groups: BTreeMap::new(),
        ids,
        classes,
        endpoints,
        lb_ids,
        relevant,
        label_index,
        class_size,
        source_keyed,
        probed: probed_eps || probed_lbs,
        matched: policy::MatchCache::new(),
    };
    let mut provs = std::mem::take(&mut mag.provenance);
    state
        .groups
        .insert(Group::Static, static_group(&state, &mut provs));
    {
        let mut resolver = Resolver::new(cluster, &state.ids, &state.classes);
        let mut endpoints = Vec::new();
        for p in cluster
            .pod_ids()
            .filter(|p| only.is_none_or(|o| o.contains(p)))
        {
            if let Some(g) = endpoint_group(cluster, &state, &mut resolver, p, &mut provs) {
                endpoints.push((Group::Endpoint(cluster.pod(p).key()), g));
            }
        }
        state.matched = resolver.into_cache();
        state.groups.extend(endpoints);
    }
    let pod_by_ip: crate::util::FxHashMap<IpAddr, PodId> = cluster
        .pod_ids()
        .filter(|p| !cluster.pod(*p).host_network)
        .flat_map(|p| cluster.pod(p).ips.iter().map(move |ip| (*ip, p)))
        .collect();
    for net in state.ids.ipcache.entries.keys() {
        let owner = pod_by_ip.get(&net.addr()).copied();
        let g = prefix_group(cluster, &state, *net, owner, &mut provs);
        state.groups.insert(Group::Prefix(*net), g);
    }
    for s in &cluster.services {
        let g = service_group(cluster, &state, s, &mut provs);
        if !g.is_empty() {
            state.groups.insert(Group::Service(s.key()), g);
        }
    }
    mag.provenance = provs;
    assemble(&mut mag, &state);
    Lowered::new(mag, state)
}

/// Fills the tables from the groups and puts them in canonical order.
///
/// The tables are sized before they are filled, because growing a 600k-entry `Vec` by
/// doubling copies it several times; cloning an entry only bumps reference counts.
pub fn assemble(mag: &mut Mag, state: &LowerState) {
    let mut sizes = vec![0usize; petgraph::visit::NodeIndexable::node_bound(&mag.graph)];
    for (t, _) in state.groups.values().flatten() {
        if let Some(n) = sizes.get_mut(t.0.index()) {
            *n += 1;
        }
    }
    for t in mag.table_ids() {
        if let Some(table) = mag.table_mut(t) {
            table.entries.clear();
            table.entries.reserve_exact(sizes[t.0.index()]);
        }
    }
    for (t, e) in state.groups.values().flatten() {
        if let Some(table) = mag.table_mut(*t) {
            table.entries.push(e.clone());
        }
    }
    mag.canonicalize();
}

/// An entry. Callers pass arrays where they can: an array becomes the entry's shared
/// slice in one allocation, a `Vec` in two.
fn entry(
    priority: u32,
    matches: impl Into<Arc<[FieldMatch]>>,
    action: ActionCall,
    prov: impl Into<Arc<[ProvId]>>,
) -> Entry {
    Entry {
        priority,
        matches: matches.into(),
        action,
        provenance: prov.into(),
    }
}

/// A one-record provenance list, made once per group and shared by its entries (a
/// service's 61+ Maglev rows, a prefix's two ipcache rows and route) instead of one
/// allocation per entry.
fn shared_prov(p: ProvId) -> Arc<[ProvId]> {
    Arc::new([p])
}

fn intern(provs: &mut crate::mag::ProvSet, p: Provenance) -> ProvId {
    ProvId(provs.insert_full(p).0 as u32)
}

fn tern_exact(v: u128, f: Field) -> FieldMatch {
    FieldMatch::Ternary {
        value: v,
        mask: f.max(),
    }
}

/// (eth.type, v4 match, v6 match) of a prefix, for tables keyed on both families.
fn addr_matches(net: IpNet) -> (u128, FieldMatch, FieldMatch) {
    match net {
        IpNet::V4(n) => (
            eth::IPV4,
            FieldMatch::prefix_mask(
                u128::from(u32::from(n.network())),
                u32::from(n.prefix_len()),
                32,
            ),
            FieldMatch::Any,
        ),
        IpNet::V6(n) => (
            eth::IPV6,
            FieldMatch::Any,
            FieldMatch::prefix_mask(u128::from(n.network()), u32::from(n.prefix_len()), 128),
        ),
    }
}

pub(crate) fn static_group(state: &LowerState, provs: &mut crate::mag::ProvSet) -> GroupEntries {
    let sk = &state.sk;
    let ct_prov = intern(
        provs,
        Provenance::Builtin("conntrack: packets of allowed connections".into()),
    );
    let wire_prov = intern(
        provs,
        Provenance::Builtin("no local source: egress policy does not apply".into()),
    );
    let mut out = Vec::new();
    for t in [sk.egress_policy, sk.ingress_policy] {
        for st in [ct::ESTABLISHED, ct::REPLY] {
            let mut m = [FieldMatch::Any; 5];
            m[0] = tern_exact(st, Field::CtState);
            out.push((t, entry(3, m, call(sk.allow_ct, &[]), [ct_prov])));
        }
    }
    let mut m = [FieldMatch::Any; 5];
    m[1] = tern_exact(0, Field::Endpoint);
    out.push((
        sk.egress_policy,
        entry(3, m, call(sk.pass, &[]), [wire_prov]),
    ));
    out
}

fn pod_origin(cluster: &Cluster, p: PodId) -> Origin {
    let pod = cluster.pod(p);
    Origin {
        kind: "Pod".into(),
        namespace: Some(pod.namespace.clone()),
        name: pod.name.clone(),
        span: pod.origin.span,
    }
}

pub(crate) fn endpoint_group(
    cluster: &Cluster,
    state: &LowerState,
    resolver: &mut Resolver<'_>,
    p: PodId,
    provs: &mut crate::mag::ProvSet,
) -> Option<GroupEntries> {
    if !is_local(cluster, p, &state.node, state.synthetic) {
        return None;
    }
    let sk = &state.sk;
    let pod = cluster.pod(p);
    let ep = u128::from(*state.endpoints.get(&pod.key())?);
    let prov = shared_prov(intern(provs, Provenance::Object(pod_origin(cluster, p))));
    let mut out = Vec::new();
    out.push((
        sk.classify,
        entry(
            0,
            [FieldMatch::Exact(ep)],
            call(sk.from_endpoint, &[ep]),
            prov.clone(),
        ),
    ));
    for ip in &pod.ips {
        let (et, v4, v6) = addr_matches(IpNet::from(*ip));
        out.push((
            sk.anti_spoof,
            entry(
                0,
                [FieldMatch::Exact(ep), FieldMatch::Exact(et), v4, v6],
                call(sk.pass, &[]),
                prov.clone(),
            ),
        ));
        out.push((
            sk.route,
            entry(
                net_len(*ip),
                [FieldMatch::Exact(et), v4, v6],
                call(sk.to_endpoint, &[ep]),
                prov.clone(),
            ),
        ));
    }
    for dir in [Dir::Egress, Dir::Ingress] {
        let (table, allow, redirect) = match dir {
            Dir::Egress => (sk.egress_policy, sk.allow, sk.redirect),
            Dir::Ingress => (sk.ingress_policy, sk.allow_commit, sk.redirect_commit),
        };
        for row in resolver.endpoint_rows(p, dir, provs) {
            let action = match row.decision {
                Decision::Allow => allow,
                Decision::Deny => sk.deny,
                Decision::Redirect => redirect,
            };
            let remote = match dir {
                Dir::Egress => Field::DstIdentity,
                Dir::Ingress => Field::SrcIdentity,
            };
            let m = [
                FieldMatch::Any,
                tern_exact(ep, Field::Endpoint),
                row.class
                    .map(|c| tern_exact(u128::from(c), remote))
                    .unwrap_or(FieldMatch::Any),
                row.proto
                    .map(|p| tern_exact(u128::from(p), Field::IpProto))
                    .unwrap_or(FieldMatch::Any),
                if row.port.1 == 0 {
                    FieldMatch::Any
                } else {
                    FieldMatch::prefix_mask(u128::from(row.port.0), u32::from(row.port.1), 16)
                },
            ];
            out.push((table, entry(row.priority, m, call(action, &[]), row.prov)));
        }
    }
    Some(out)
}

fn net_len(ip: IpAddr) -> u32 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

pub(crate) fn prefix_group(
    cluster: &Cluster,
    state: &LowerState,
    net: IpNet,
    owner: Option<PodId>,
    provs: &mut crate::mag::ProvSet,
) -> GroupEntries {
    let sk = &state.sk;
    let owner = owner.filter(|_| net.prefix_len() == net.max_prefix_len());
    let mut out = Vec::new();
    let Some(class) = state
        .classes
        .by_net
        .get(&net)
        .and_then(|i| state.classes.list.get(*i))
    else {
        return out;
    };
    let prov = match (class.pod, class.node) {
        (Some(_), _) => owner.map(|p| Provenance::Object(pod_origin(cluster, p))),
        (_, Some(n)) => Some(Provenance::Object(Origin {
            kind: "Node".into(),
            namespace: None,
            name: cluster.nodes[n].name.clone(),
            span: None,
        })),
        _ => None,
    }
    .unwrap_or_else(|| Provenance::Builtin(format!("ipcache {net}")));
    let prov = shared_prov(intern(provs, prov));
    let (et, v4, v6) = addr_matches(net);
    let prio = u32::from(net.prefix_len());
    let id = u128::from(class.id);
    out.push((
        sk.src_ipcache,
        entry(
            prio,
            [FieldMatch::Exact(et), v4, v6],
            call(sk.set_src_identity, &[id]),
            prov.clone(),
        ),
    ));
    let (et, d4, d6) = addr_matches(net);
    out.push((
        sk.dst_ipcache,
        entry(
            prio,
            [FieldMatch::Exact(et), d4, d6],
            call(sk.set_dst_identity, &[id]),
            prov.clone(),
        ),
    ));
    // Routes: remote pods go to their node, the node's own addresses to the host.
    let host = net.prefix_len() == net.max_prefix_len();
    if host {
        if let Some(pod) = class.pod.and(owner) {
            if !is_local(cluster, pod, &state.node, state.synthetic) {
                let next_hop = cluster
                    .pod(pod)
                    .node
                    .as_deref()
                    .and_then(|n| find_node(cluster, n))
                    .and_then(|n| n.addresses.first().copied());
                if let Some(nh) = next_hop {
                    out.push((
                        sk.route,
                        entry(
                            prio,
                            [FieldMatch::Exact(et), d4, d6],
                            call(sk.to_node, &[crate::mag::ip_value(nh)]),
                            prov.clone(),
                        ),
                    ));
                }
            }
        } else if class
            .node
            .is_some_and(|n| cluster.nodes[n].name == state.node)
        {
            out.push((
                sk.route,
                entry(
                    prio,
                    [FieldMatch::Exact(et), d4, d6],
                    call(sk.to_host, &[]),
                    prov.clone(),
                ),
            ));
        }
    }
    out
}

/// The node named `name`. Nodes are sorted by name (a model invariant), so a binary
/// search finds it among thousands without comparing every name for every remote pod; the
/// linear scan only runs for a cluster built by hand out of order.
fn find_node<'c>(cluster: &'c Cluster, name: &str) -> Option<&'c crate::model::Node> {
    match cluster
        .nodes
        .binary_search_by(|x| x.name.as_str().cmp(name))
    {
        Ok(i) => cluster.nodes.get(i),
        Err(_) => cluster.nodes.iter().find(|x| x.name == name),
    }
}

/// Whether `service_lb` needs the sending endpoint in its key: some service has
/// `internalTrafficPolicy: Local` on a cluster IP. Pods of this node then reach that cluster
/// IP through the node's own endpoints, while a packet from the wire (endpoint 0) keeps
/// every endpoint, as the reference does for a client whose node it does not know. The
/// synthetic node stands for every node at once, so it applies no traffic policy and keeps
/// the plain key; so does every node of a cluster without such a service, whose graph
/// therefore does not change.
pub fn source_keyed_lb(cluster: &Cluster, synthetic: bool) -> bool {
    !synthetic
        && cluster.services.iter().any(|s| {
            s.internal_local
                && s.service_type != ServiceType::ExternalName
                && !s.cluster_ips.is_empty()
        })
}

/// How a frontend address is reached, in the order the reference resolves an address
/// (a cluster IP before a load-balancer or external IP, those before a node port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FrontendKind {
    ClusterIp,
    External,
    NodePort,
}

/// Which endpoints a Maglev table holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// Every endpoint of the service.
    Cluster,
    /// The endpoints on this node (a traffic policy `Local`).
    Local,
}

/// Which senders a `service_lb` row is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Senders {
    /// Every sender.
    Any,
    /// Packets from the wire only (endpoint 0); the row outranks the `Any` row.
    Wire,
}

/// The Maglev table id of a service port, address family and scope: the service's base id,
/// two ids per port and one for IPv6. Node-local tables take the upper half of the 256 ids
/// of a service, so a service of up to 64 ports never has two tables on one id.
fn lb_table_id(base: u32, port_index: usize, v6: bool, scope: Scope) -> u32 {
    let local = match scope {
        Scope::Cluster => 0,
        Scope::Local => 128,
    };
    base + local + (port_index as u32) * 2 + u32::from(v6)
}

/// The frontends of one service port on this node, each address once with the kind the
/// reference would resolve it as.
fn port_frontends(
    s: &Service,
    sp: &crate::model::ServicePort,
    local_addrs: &[IpAddr],
) -> Vec<(IpAddr, u16, FrontendKind)> {
    let mut out: Vec<(IpAddr, u16, FrontendKind)> = Vec::new();
    for (ips, kind) in [
        (&s.cluster_ips, FrontendKind::ClusterIp),
        (&s.load_balancer_ips, FrontendKind::External),
        (&s.external_ips, FrontendKind::External),
    ] {
        out.extend(ips.iter().map(|ip| (*ip, sp.port, kind)));
    }
    if let Some(np) = sp.node_port {
        if matches!(
            s.service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        ) {
            out.extend(
                local_addrs
                    .iter()
                    .map(|ip| (*ip, np, FrontendKind::NodePort)),
            );
        }
    }
    out.sort();
    out.dedup_by_key(|(ip, port, _)| (*ip, *port));
    out
}

/// The `service_lb` rows of a frontend: which senders use which table, following the
/// reference. `externalTrafficPolicy: Local` keeps the receiving node's endpoints for a
/// node port (this node's addresses are its only node ports); load-balancer and external
/// IPs keep every endpoint, since the reference does not know which node receives them.
/// `internalTrafficPolicy: Local` keeps, for a pod's connection to a cluster IP, the
/// endpoints of the pod's node, which is this node; a packet from the wire keeps every
/// endpoint.
fn frontend_rows(s: &Service, kind: FrontendKind, state: &LowerState) -> Vec<(Senders, Scope)> {
    match kind {
        FrontendKind::ClusterIp if s.internal_local && state.source_keyed => vec![
            (Senders::Wire, Scope::Cluster),
            (Senders::Any, Scope::Local),
        ],
        FrontendKind::NodePort if s.external_local && !state.synthetic => {
            vec![(Senders::Any, Scope::Local)]
        }
        _ => vec![(Senders::Any, Scope::Cluster)],
    }
}

/// The note a node-local frontend row carries, so a trace says why its endpoints are few.
fn local_note(kind: FrontendKind, node: &str) -> Provenance {
    let policy = match kind {
        FrontendKind::NodePort => "externalTrafficPolicy",
        _ => "internalTrafficPolicy",
    };
    Provenance::Builtin(format!("{policy}: Local: only endpoints on node {node}"))
}

/// The `service_lb` key values of a frontend for some senders.
fn frontend_match(
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
    senders: Senders,
    source_keyed: bool,
) -> Vec<FieldMatch> {
    let (et, _, _) = addr_matches(IpNet::from(ip));
    let (d4, d6) = match ip {
        IpAddr::V4(a) => (
            tern_exact(u128::from(u32::from(a)), Field::Ipv4Dst),
            FieldMatch::Any,
        ),
        IpAddr::V6(a) => (FieldMatch::Any, tern_exact(u128::from(a), Field::Ipv6Dst)),
    };
    let mut m = vec![
        FieldMatch::Exact(et),
        d4,
        d6,
        FieldMatch::Exact(u128::from(protocol.number())),
        FieldMatch::Exact(u128::from(port)),
    ];
    if source_keyed {
        m.push(match senders {
            Senders::Any => FieldMatch::Any,
            Senders::Wire => tern_exact(0, Field::Endpoint),
        });
    }
    m
}

/// The `lb_backend` entries of one Maglev table.
fn maglev_entries(
    sk: &Skeleton,
    id: u32,
    backends: &[(IpAddr, u16)],
    prov: &Arc<[ProvId]>,
    out: &mut GroupEntries,
) {
    let m = crate::lower::maglev::table_size(backends.len());
    let names: Vec<String> = backends.iter().map(|(ip, p)| format!("{ip}:{p}")).collect();
    let slots = crate::lower::maglev::populate(&names, m);
    for (slot, b) in slots.iter().enumerate() {
        let Some((ip, port)) = backends.get(*b as usize) else {
            continue;
        };
        let (action, addr) = match ip {
            IpAddr::V4(a) => (sk.dnat4, u128::from(u32::from(*a))),
            IpAddr::V6(a) => (sk.dnat6, u128::from(*a)),
        };
        out.push((
            sk.lb_backend,
            entry(
                0,
                [
                    FieldMatch::Exact(u128::from(id)),
                    FieldMatch::Exact(slot as u128),
                ],
                call(action, &[u128::from(*b), addr, u128::from(*port)]),
                prov.clone(),
            ),
        ));
    }
}

pub(crate) fn service_group(
    cluster: &Cluster,
    state: &LowerState,
    s: &Service,
    provs: &mut crate::mag::ProvSet,
) -> GroupEntries {
    let sk = &state.sk;
    let mut out = Vec::new();
    if s.service_type == ServiceType::ExternalName {
        return out;
    }
    let Some(&base) = state.lb_ids.get(&s.key()) else {
        return out;
    };
    let prov = intern(provs, Provenance::Object(s.origin.clone()));
    // The Maglev rows of all tables of the service share one provenance slice.
    let shared = shared_prov(prov);
    let local_addrs: Vec<IpAddr> = cluster
        .nodes
        .iter()
        .filter(|n| n.name == state.node)
        .flat_map(|n| n.addresses.iter().copied())
        .collect();
    for (pi, sp) in s.ports.iter().enumerate() {
        let frontends = port_frontends(s, sp, &local_addrs);
        for v6 in [false, true] {
            // The Maglev tables the frontends of this family use, by scope.
            let mut tables: BTreeMap<Scope, Vec<(IpAddr, u16)>> = BTreeMap::new();
            for (ip, port, kind) in frontends.iter().filter(|f| f.0.is_ipv6() == v6) {
                for (senders, scope) in frontend_rows(s, *kind, state) {
                    let backends = tables.entry(scope).or_insert_with(|| {
                        let node = (scope == Scope::Local).then_some(state.node.as_str());
                        eligible_backends_on(s, sp.name.as_deref(), sp.protocol, v6, node)
                    });
                    let id = u128::from(lb_table_id(base, pi, v6, scope));
                    let m = u128::from(crate::lower::maglev::table_size(backends.len()));
                    let action = if backends.is_empty() {
                        call(sk.lb_no_backend, &[])
                    } else if let Some(timeout) = s.affinity_timeout {
                        call(sk.lb_select_affinity, &[id, m, u128::from(timeout)])
                    } else {
                        call(sk.lb_select, &[id, m])
                    };
                    let mut why = vec![prov];
                    if scope == Scope::Local {
                        why.push(intern(provs, local_note(*kind, &state.node)));
                    }
                    let priority = match senders {
                        Senders::Any => 0,
                        Senders::Wire => 1,
                    };
                    let m = frontend_match(*ip, *port, sp.protocol, senders, state.source_keyed);
                    out.push((sk.service_lb, entry(priority, m, action, why)));
                }
            }
            for (scope, backends) in &tables {
                maglev_entries(
                    sk,
                    lb_table_id(base, pi, v6, *scope),
                    backends,
                    &shared,
                    &mut out,
                );
            }
        }
    }
    out
}

/// Backends that take new connections on a service port, as (address, target port):
/// ready ones, or serving-and-terminating ones when none is ready.
pub fn eligible_backends(
    s: &Service,
    port_name: Option<&str>,
    protocol: Protocol,
    v6: bool,
) -> Vec<(IpAddr, u16)> {
    eligible_backends_on(s, port_name, protocol, v6, None)
}

/// [`eligible_backends`] on `node` only, when a node is given. Ready or terminating is
/// chosen over every node first, as the reference does: a node whose endpoints all
/// terminate gets none while another node has a ready one.
pub fn eligible_backends_on(
    s: &Service,
    port_name: Option<&str>,
    protocol: Protocol,
    v6: bool,
    node: Option<&str>,
) -> Vec<(IpAddr, u16)> {
    let with_port = |ready_only: bool| -> Vec<(&crate::model::ServiceEndpoint, u16)> {
        s.backends
            .iter()
            .filter(|b| b.ip.is_ipv6() == v6)
            .filter(|b| {
                if ready_only {
                    b.ready
                } else {
                    b.serving && b.terminating
                }
            })
            .filter_map(|b| {
                b.ports
                    .iter()
                    .find(|p| p.name.as_deref() == port_name && p.protocol == protocol)
                    .map(|p| (b, p.port))
            })
            .collect()
    };
    let ready = with_port(true);
    let pool = if ready.is_empty() {
        with_port(false)
    } else {
        ready
    };
    pool.into_iter()
        .filter(|(b, _)| node.is_none_or(|n| b.node.as_deref() == Some(n)))
        .map(|(b, port)| (b.ip, port))
        .collect()
}
