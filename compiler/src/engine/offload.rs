//! Whether the hardware can finish a connection's later packets once pipecd offloads it
//! (issue 15), and the device layout that answer assumes: what `pipec trace` and
//! `pipec explain` say about connection offload.
//!
//! pipecd offloads an allowed connection that the eBPF conntrack saw established by
//! installing two exact 5-tuple entries per node it crosses, one per direction, each on the
//! port that direction arrives on and forwarding to the port it leaves by
//! (`runtime/src/offload.rs`; ARCHITECTURE.md, "The packet path on the DPU"). The first
//! packets always run in software. Whether those entries can exist at all is a property of
//! the connection and of the DPDK release's forwarding reach, and this module answers it
//! from the same port model the hardware engine uses ([`Ports::target`]), so the answer
//! cannot drift from what the model would do with the entries.

use super::hwmodel::{ForwardSemantics, Ports};
use crate::backend::HwAction;
use crate::backend::{ActionKind, PlanSlice, Profile};
use crate::lower::{is_local, pick_node};
use crate::mag::ports as plan_ports;
use crate::model::{Cluster, PodId, Protocol};
use crate::semantics::{PathVerdict, Peer, Probe, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The ethdev port of the network uplink (PF 1).
pub const UPLINK_PORT: u16 = 0;
/// The ethdev port of the SDP PF that faces the host (PF 2); its VFs are the pods' ports.
pub const SDP_PORT: u16 = 1;
/// The ethdev port of the SDP PF's VF 0; VF `n` is port `FIRST_VF_PORT + n`.
pub const FIRST_VF_PORT: u16 = 2;
const UPLINK_PF: u16 = 1;
const SDP_PF: u16 = 2;

/// The ports of a device whose SDP PF has `vfs` VFs, with their pf_func: the uplink, the
/// SDP PF, and VF `n` on port `FIRST_VF_PORT + n` (function `n + 1` of the SDP PF).
pub fn device_ports(vfs: u16) -> Ports {
    let mut pf_func = BTreeMap::new();
    pf_func.insert(UPLINK_PORT, UPLINK_PF << 10);
    pf_func.insert(SDP_PORT, SDP_PF << 10);
    for vf in 0..vfs {
        pf_func.insert(FIRST_VF_PORT + vf, (SDP_PF << 10) | (vf + 1));
    }
    Ports { pf_func }
}

/// One node's device: the uplink, the SDP PF, and one SDP VF per pod with its own network
/// namespace, numbered in pod order (VF `i` is ethdev port `2 + i`). Host-network pods share
/// the node's stack and have no VF.
///
/// The compiler's plan and the MAG number ports otherwise (the plan's ports): 0 is the wire,
/// 1 the host, and a local pod has its endpoint number, which the lowering derives from the
/// pod's address. A layout built from a session ([`Layout::of_session`]) knows both, so a
/// plan's rules and a MAG packet's port can be put on the device's ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The ports and their pf_func.
    pub ports: Ports,
    /// Each local pod's port.
    pods: BTreeMap<PodId, u16>,
    /// The device port of each plan port.
    device: BTreeMap<u16, u16>,
}

impl Layout {
    /// The device of `node` with its pods: those the lowering counts as local to it (every
    /// pod, on the synthetic node of a cluster without Node objects). It knows no endpoint
    /// numbers: of the plan's ports it maps only the wire and the host.
    pub fn of_node(cluster: &Cluster, node: &str) -> Layout {
        let (_, synthetic) = pick_node(cluster, Some(node));
        let pods = cluster
            .pod_ids()
            .filter(|id| is_local(cluster, *id, node, synthetic))
            .collect::<Vec<_>>();
        Layout::with_pods(&pods)
    }

    /// The device of a session's node, with the endpoint number the session's lowering gave
    /// each local pod: the plan's ports map onto the device's.
    pub fn of_session(session: &crate::session::Session) -> Layout {
        let cluster = session.cluster();
        let layout = Layout::of_node(cluster, session.node());
        let endpoints = &session.lowered().state.endpoints;
        let by_pod = |pod: PodId| endpoints.get(&cluster.pod(pod).key()).copied();
        layout.with_endpoints(by_pod)
    }

    /// The same device with each pod's endpoint number as `endpoint` gives it (a pod without
    /// one, or with one beyond the plan's 16-bit ports, has no plan port).
    pub fn with_endpoints(mut self, endpoint: impl Fn(PodId) -> Option<u32>) -> Layout {
        for (pod, port) in &self.pods {
            if let Some(ep) = endpoint(*pod).and_then(|e| u16::try_from(e).ok()) {
                self.device.insert(ep, *port);
            }
        }
        self
    }

    /// A device whose VF `i` is `pods[i]`.
    pub fn with_pods(pods: &[PodId]) -> Layout {
        Layout {
            ports: device_ports(pods.len() as u16),
            pods: pods
                .iter()
                .enumerate()
                .map(|(i, pod)| (*pod, FIRST_VF_PORT + i as u16))
                .collect(),
            device: [
                (plan_ports::WIRE as u16, UPLINK_PORT),
                (plan_ports::HOST as u16, SDP_PORT),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// The port of a local pod.
    pub fn port_of_pod(&self, pod: PodId) -> Option<u16> {
        self.pods.get(&pod).copied()
    }

    /// The device port of a plan port (the MAG's `in_port` and `out_port`, a plan rule's
    /// port): the wire is the uplink, the host the SDP PF, an endpoint its pod's VF.
    pub fn device_port(&self, plan_port: u16) -> Option<u16> {
        self.device.get(&plan_port).copied()
    }

    /// The plan port of a device port: the inverse of [`Layout::device_port`].
    pub fn plan_port(&self, device_port: u16) -> Option<u16> {
        self.device
            .iter()
            .find(|(_, d)| **d == device_port)
            .map(|(p, _)| *p)
    }

    /// The slice with every rule on the device port of its plan port; `Err` names a plan
    /// port this device has not (a rule for an endpoint the layout does not know).
    pub fn renumber(&self, slice: &PlanSlice) -> Result<PlanSlice, u16> {
        let mut out = slice.clone();
        for r in &mut out.rules {
            r.port = self.device_port(r.port).ok_or(r.port)?;
        }
        Ok(out)
    }

    /// How many pods have a VF.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// The forwarding action a rule on port `from` needs to send a packet out of port `to`
    /// under `sem` ([`forward_action`]).
    pub fn action_to(&self, from: u16, to: u16, sem: ForwardSemantics) -> Option<HwAction> {
        forward_action(&self.ports, from, to, sem)
    }
}

/// The forwarding action a rule on port `from` of `ports` needs to send a packet out of
/// port `to` under `sem`: `VF` when the model says it reaches `to`, else `PORT_ID`, else
/// none. pipecd's offload entries and `pipec trace` both choose their actions here.
pub fn forward_action(
    ports: &Ports,
    from: u16,
    to: u16,
    sem: ForwardSemantics,
) -> Option<HwAction> {
    let want = *ports.pf_func.get(&to)?;
    let vf = (want & 0x3ff).checked_sub(1).map(|vf| HwAction::Vf { vf });
    vf.into_iter()
        .chain([HwAction::PortId { port: to }])
        .find(|a| ports.target(from, a, sem) == Some(want))
}

/// The forwarding semantics a profile offers: `None` when it has no forwarding action.
pub fn semantics_of(profile: &Profile) -> Option<ForwardSemantics> {
    let actions = &profile.caps.ingress_actions;
    if actions.contains(&ActionKind::ForwardAnyPort) {
        Some(ForwardSemantics::AnyPort)
    } else if actions.contains(&ActionKind::ForwardSamePf) {
        Some(ForwardSemantics::SamePf)
    } else {
        None
    }
}

/// Why a connection's later packets stay in software.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "code")]
pub enum Stays {
    /// The connection is denied: nothing is ever established.
    Denied,
    /// Allowed at L4 and redirected to the L7 proxy, which terminates it on the cores.
    L7Proxy,
    /// Not TCP, UDP or SCTP: the conntrack key has no ports to make an exact entry of.
    NoPorts,
    /// IPv6: the default MKEX key holds no full IPv6 address.
    Ipv6,
    /// DNATed to a Service backend: the packets need DNAT and the replies reverse NAT, and
    /// cnxk cannot rewrite headers.
    NeedsRewrite,
    /// A node's own address (the kubelet, a host-network pod): host traffic goes through the
    /// node's stack, and a pod of the node's own network has no VF to match or deliver on.
    HostNetwork,
    /// The profile has no forwarding action at all.
    NoForwarding,
    /// Neither end is a pod placed on a node: no DPU of the cluster sees the connection.
    NoNode,
    /// A rule on `from` cannot forward to `to` on this release.
    Unreachable {
        /// The node.
        node: String,
        /// The port the rule would be on.
        from: u16,
        /// The port the packet must leave by.
        to: u16,
    },
}

impl Stays {
    /// A stable code for tools.
    pub fn code(&self) -> &'static str {
        match self {
            Stays::Denied => "denied",
            Stays::L7Proxy => "l7_proxy",
            Stays::NoPorts => "no_ports",
            Stays::Ipv6 => "ipv6",
            Stays::NeedsRewrite => "needs_rewrite",
            Stays::HostNetwork => "host_network",
            Stays::NoForwarding => "no_forwarding",
            Stays::NoNode => "no_node",
            Stays::Unreachable { .. } => "unreachable",
        }
    }

    /// The reason in words.
    pub fn text(&self) -> String {
        match self {
            Stays::Denied => "denied: no connection is established".to_string(),
            Stays::L7Proxy => "redirected to the L7 proxy, which terminates the connection on the cores".to_string(),
            Stays::NoPorts => "not TCP, UDP or SCTP: an exact entry needs the conntrack's ports".to_string(),
            Stays::Ipv6 => "IPv6: the default MKEX key holds no full IPv6 address".to_string(),
            Stays::NeedsRewrite => "DNATed to a Service backend: its packets need DNAT and its replies reverse NAT, and cnxk cannot rewrite headers".to_string(),
            Stays::HostNetwork => "a node's own address (host network): host traffic is not offloaded".to_string(),
            Stays::NoForwarding => "the profile has no forwarding action".to_string(),
            Stays::NoNode => "neither end is a pod of the cluster, so no pod's DPU carries it".to_string(),
            Stays::Unreachable { node, from, to } => format!(
                "on {node}, a rule on port {} cannot forward to port {} (VF and PORT_ID reach only the rule port's own PF before DPDK 23.07)",
                port_name(*from),
                port_name(*to)
            ),
        }
    }
}

/// One exact entry pipecd would install.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OffloadEntry {
    /// The node whose device holds it.
    pub node: String,
    /// `original` or `reply`.
    pub direction: &'static str,
    /// The port it is created on (where that direction arrives).
    pub port: u16,
    /// The port the packet leaves by.
    pub out_port: u16,
    /// The forwarding action.
    pub action: HwAction,
}

impl OffloadEntry {
    /// The entry in one line.
    pub fn text(&self) -> String {
        format!(
            "{}: {} on port {} -> {}, leaves by port {}",
            self.node,
            self.direction,
            port_name(self.port),
            action_text(&self.action),
            port_name(self.out_port)
        )
    }
}

/// What happens to a connection's later packets under one profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Later {
    /// The profile.
    pub profile: String,
    /// Finished in hardware once the entries land (`entries`), or staying in software
    /// (`stays`).
    pub in_hardware: bool,
    /// The entries, per node the connection crosses.
    pub entries: Vec<OffloadEntry>,
    /// Why it stays in software.
    pub stays: Option<Stays>,
}

impl Later {
    /// The answer in one line.
    pub fn text(&self) -> String {
        match &self.stays {
            Some(s) => format!("{}: stay in software: {}", self.profile, s.text()),
            None => format!(
                "{}: finished in hardware by {} exact entries",
                self.profile,
                self.entries.len()
            ),
        }
    }
}

/// A port's name in the layout: `uplink`, `sdp` or `vf N`.
pub fn port_name(port: u16) -> String {
    match port {
        UPLINK_PORT => "0 (uplink)".to_string(),
        SDP_PORT => "1 (sdp pf)".to_string(),
        p => format!("{p} (vf {})", p - FIRST_VF_PORT),
    }
}

/// One end of a connection as a node's device sees it.
enum End {
    /// A pod with a VF on this node.
    Local(u16),
    /// Anything reached through the uplink.
    Remote,
}

/// What happens to the later packets of one path of `probe` under `profile`.
pub fn later_packets(
    cluster: &Cluster,
    profile: &Profile,
    probe: &Probe,
    dnat: bool,
    path: &PathVerdict,
) -> Later {
    let answer = |stays: Stays| Later {
        profile: profile.name.clone(),
        in_hardware: false,
        entries: Vec::new(),
        stays: Some(stays),
    };
    match path.verdict {
        Verdict::Deny => return answer(Stays::Denied),
        Verdict::Redirect(_) => return answer(Stays::L7Proxy),
        Verdict::Allow => {}
    }
    if !matches!(
        probe.protocol,
        Protocol::Tcp | Protocol::Udp | Protocol::Sctp
    ) {
        return answer(Stays::NoPorts);
    }
    if path.dst_ip.is_ipv6() || path.src_ip.is_ipv6() {
        return answer(Stays::Ipv6);
    }
    if dnat {
        return answer(Stays::NeedsRewrite);
    }
    let Some(sem) = semantics_of(profile) else {
        return answer(Stays::NoForwarding);
    };
    let client = match probe.from {
        Peer::Pod(p) => Some(p),
        Peer::External(ip) => cluster.pod_by_ip(ip),
    };
    let server = path.backend.or_else(|| cluster.pod_by_ip(path.dst_ip));
    let pods = [client, server].into_iter().flatten().collect::<Vec<_>>();
    let node_address = |ip: IpAddr| cluster.nodes.iter().any(|n| n.addresses.contains(&ip));
    if pods.iter().any(|p| cluster.pod(*p).host_network)
        || node_address(path.src_ip)
        || node_address(path.dst_ip)
    {
        return answer(Stays::HostNetwork);
    }
    let mut nodes = pods
        .iter()
        .map(|p| super::mag::node_of_pod(cluster, *p))
        .collect::<Vec<_>>();
    nodes.sort();
    nodes.dedup();
    if nodes.is_empty() {
        return answer(Stays::NoNode);
    }
    let mut entries = Vec::new();
    for node in &nodes {
        let layout = Layout::of_node(cluster, node);
        let end = |pod: Option<PodId>| match pod.and_then(|p| layout.port_of_pod(p)) {
            Some(port) => End::Local(port),
            None => End::Remote,
        };
        let port = |e: &End| match e {
            End::Local(p) => *p,
            End::Remote => UPLINK_PORT,
        };
        let (c, s) = (end(client), end(server));
        for (direction, from, to) in [
            ("original", port(&c), port(&s)),
            ("reply", port(&s), port(&c)),
        ] {
            let Some(action) = layout.action_to(from, to, sem) else {
                return answer(Stays::Unreachable {
                    node: node.clone(),
                    from,
                    to,
                });
            };
            entries.push(OffloadEntry {
                node: node.clone(),
                direction,
                port: from,
                out_port: to,
                action,
            });
        }
    }
    Later {
        profile: profile.name.clone(),
        in_hardware: true,
        stays: None,
        entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{HwRule, PortDirection};

    /// Pods 4 and 7 on VFs 0 and 1 (ports 2 and 3), with endpoints 300 and 9.
    fn layout() -> Layout {
        let endpoint = |p: PodId| match p.0 {
            4 => Some(300),
            7 => Some(9),
            _ => None,
        };
        Layout::with_pods(&[PodId(4), PodId(7)]).with_endpoints(endpoint)
    }

    #[test]
    fn plan_ports_map_onto_device_ports_and_back() {
        let l = layout();
        let pairs = [(0, UPLINK_PORT), (1, SDP_PORT), (300, 2), (9, 3)];
        for (plan, device) in pairs {
            assert_eq!(l.device_port(plan), Some(device), "plan port {plan}");
            assert_eq!(l.plan_port(device), Some(plan), "device port {device}");
        }
        assert_eq!(l.device_port(2), None, "no pod has endpoint 2");
        assert_eq!(l.plan_port(4), None, "the device has no port 4");
    }

    #[test]
    fn a_slice_is_renumbered_rule_by_rule_or_not_at_all() {
        let rule = |id: u32, port: u16| HwRule {
            id,
            port,
            direction: PortDirection::Ingress,
            level: 0,
            matches: Vec::new(),
            actions: vec![HwAction::Drop],
            origin: String::new(),
        };
        let slice = PlanSlice {
            target: "t".into(),
            rules: vec![rule(1, 0), rule(2, 300), rule(3, 9)],
        };
        let ports: Vec<u16> = layout()
            .renumber(&slice)
            .unwrap()
            .rules
            .iter()
            .map(|r| r.port)
            .collect();
        assert_eq!(ports, [0, 2, 3]);
        let mut stray = slice;
        stray.rules.push(rule(4, 55));
        assert_eq!(layout().renumber(&stray), Err(55));
    }
}

/// A forwarding action as testpmd writes it (`vf id 3`, `port_id id 0`).
fn action_text(a: &HwAction) -> String {
    match a {
        HwAction::Vf { vf } => format!("vf id {vf}"),
        HwAction::PortId { port } => format!("port_id id {port}"),
        other => format!("{other:?}"),
    }
}

/// What connection offload can do on one node under one profile, beside the policy plan
/// (`pipec explain`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The node.
    pub node: String,
    /// The hardware profile.
    pub profile: String,
    /// Pods of the node with a VF of their own.
    pub pods_on_vfs: usize,
    /// Flow entries the policy plan leaves free (each offloaded connection takes two).
    pub free_entries: u64,
    /// Of those, the entries the profile keeps from the plan for connection offload.
    pub kept_for_offload: u64,
    /// Counters the policy plan leaves free (a counted connection takes one).
    pub free_counters: u64,
    /// Whether connections between two pods of the node can be finished in hardware.
    pub pod_to_pod: bool,
    /// Whether connections between a pod and anything beyond the uplink can be.
    pub pod_to_remote: bool,
    /// Services with a virtual address (cluster IP): their connections are DNATed and stay
    /// in software.
    pub services_rewritten: usize,
}

impl Summary {
    /// The summary of `node` under `profile`, with what the plan left free.
    pub fn of(
        cluster: &Cluster,
        node: &str,
        profile: &Profile,
        free_entries: u64,
        free_counters: u64,
    ) -> Summary {
        let layout = Layout::of_node(cluster, node);
        let reach = |from: u16, to: u16| {
            semantics_of(profile).is_some_and(|sem| {
                layout.action_to(from, to, sem).is_some()
                    && layout.action_to(to, from, sem).is_some()
            })
        };
        // Every VF of the layout is alike, so the first two stand for every pair.
        let first = FIRST_VF_PORT;
        Summary {
            node: node.to_string(),
            profile: profile.name.clone(),
            pods_on_vfs: layout.pod_count(),
            free_entries,
            kept_for_offload: profile.budget.offload_entries,
            free_counters,
            pod_to_pod: layout.pod_count() >= 2 && reach(first, first + 1),
            pod_to_remote: layout.pod_count() >= 1 && reach(first, UPLINK_PORT),
            services_rewritten: cluster
                .services
                .iter()
                .filter(|s| !s.cluster_ips.is_empty())
                .count(),
        }
    }

    /// The summary as `pipec explain` prints it.
    pub fn text(&self) -> String {
        let yes_no = |b: bool| {
            if b {
                "finished in hardware once established"
            } else {
                "stay in software"
            }
        };
        let mut out = format!(
            "\nconnection offload (pipecd, {} on {}): the first packets of every connection run in eBPF; later packets:\n",
            self.profile, self.node
        );
        out += &format!(
            "  pod to pod on this node ({} pods on VFs): {}\n",
            self.pods_on_vfs,
            yes_no(self.pod_to_pod)
        );
        let remote_why = if self.pod_to_remote {
            ""
        } else {
            " (a rule on a pod's VF reaches only its own PF before DPDK 23.07)"
        };
        out += &format!(
            "  pod to or from beyond the uplink: {}{remote_why}\n",
            yes_no(self.pod_to_remote)
        );
        out += &format!(
            "  through a Service ({} with a virtual address): stay in software: DNAT and reverse NAT need header rewrites, which cnxk cannot do\n",
            self.services_rewritten
        );
        out += &format!(
            "  room beside the plan: {} entries (up to {} connections, two entries each), {} counters\n",
            self.free_entries,
            self.free_entries / 2,
            self.free_counters
        );
        if self.kept_for_offload > 0 {
            out += &format!(
                "  kept from the plan for it: {} entries, and priority level 0 above every policy rule\n",
                self.kept_for_offload
            );
        }
        out
    }
}

/// The flow-table entries and counters the policy plan of `profile` leaves free, when the
/// plan holds `plan_entries` rules of which `plan_counters` count: the profile's entries
/// less those the platform reserves and the plan's (the entries the profile keeps for
/// connection offload are free), and its counters less the plan's.
pub fn free_of(profile: &Profile, plan_entries: u64, plan_counters: u64) -> (u64, u64) {
    let b = &profile.budget;
    let entries = b
        .entries
        .map_or(0, |e| e.saturating_sub(b.reserved_entries));
    let counters = b.counters.unwrap_or(0);
    (
        entries.saturating_sub(plan_entries),
        counters.saturating_sub(plan_counters),
    )
}

/// The summary for a session's node and hardware profile, with what its plan leaves free;
/// `None` without a hardware profile.
pub fn session_summary(
    session: &crate::session::Session,
    usage: &crate::partition::Usage,
) -> Option<Summary> {
    let profile = session.profile()?;
    let (entries, counters) = free_of(profile, usage.entries, usage.counters);
    Some(Summary::of(
        session.cluster(),
        session.node(),
        profile,
        entries,
        counters,
    ))
}

/// `pipec explain`'s JSON: the plan's report and the connection-offload summary beside it.
#[derive(Serialize)]
pub struct ExplainJson<'a> {
    /// The plan's report.
    #[serde(flatten)]
    pub report: &'a crate::partition::explain::Report,
    /// The connection-offload summary.
    pub offload: Option<Summary>,
}
