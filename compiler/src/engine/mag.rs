//! Running connections through lowered MAGs: the "mag" engine of trace, conformance and
//! the differential tests.
//!
//! A connection starts on the node of its source (a pod's node, or for an outside client
//! the node that owns the destination), runs through that node's MAG, and when the MAG
//! tunnels it to another node, through that node's MAG from the wire. Each node keeps its
//! own connection tracker, so replies and later packets see what the first packet
//! committed.

use crate::backend::Profile;
use crate::lower::{pick_node, Lowered};
use crate::mag::interp::{Conntrack, Interp, Packet, Trace, Verdict};
use crate::mag::{ports, value_ip, Field};
use crate::model::{Cluster, PodId, Protocol, ServiceId};
use crate::session::{no_backends, Hardware, Session, SessionOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Where a connection comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum From {
    /// A pod.
    Pod(PodId),
    /// A client outside the cluster.
    External(IpAddr),
}

/// Where a connection goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum To {
    /// A pod, by its address.
    Pod(PodId),
    /// An address.
    Ip(IpAddr),
    /// A service port (by the service port number), through its first frontend.
    Service(ServiceId, u16),
}

/// One connection's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// Source.
    pub from: From,
    /// Destination.
    pub to: To,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination port (`None` for ICMP).
    pub port: Option<u16>,
}

/// What the MAGs did with a packet.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The decision over every node the packet crossed.
    pub verdict: Verdict,
    /// The translated destination, when a service translated it.
    pub dnat: Option<(IpAddr, u16)>,
    /// Each node's trace, in order.
    pub traces: Vec<(String, Trace)>,
    /// The packet as sent (for replies).
    pub first: Option<(String, Packet)>,
}

struct NodeMag {
    session: Session,
    ct: Conntrack,
}

/// Lowered MAGs of the nodes a run needs, with their connection trackers.
pub struct Prober<'c> {
    cluster: &'c Cluster,
    nodes: BTreeMap<String, NodeMag>,
    next_sport: u16,
    hardware: Option<(Profile, HardwareHook<'c>)>,
    only_pods: Option<BTreeSet<PodId>>,
}

/// A hardware model in front of each node's MAG (engine `hw`): called with the node, its
/// compile session (whose plan is for the hardware profile) and the packet; it says whether
/// the MAG sees the packet at all.
pub type HardwareHook<'c> = Box<dyn FnMut(&str, &Session, &Packet) -> HwVerdict + 'c>;

/// What the hardware in front of a node's MAG did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwVerdict {
    /// Not finished: the packet goes on through the MAG (with its mark, if any).
    Software,
    /// Dropped: the MAG never sees it.
    Dropped,
    /// Finished by a forwarding entry: it left by `out_port`, in the MAG's numbering (a
    /// local pod's endpoint, the wire or the host), and the MAG never sees it.
    Delivered {
        /// The port it left by.
        out_port: u128,
    },
}

impl<'c> Prober<'c> {
    /// A prober over one model; nodes are lowered when first needed.
    pub fn new(cluster: &'c Cluster) -> Prober<'c> {
        Prober {
            cluster,
            nodes: BTreeMap::new(),
            next_sport: 40000,
            hardware: None,
            only_pods: None,
        }
    }

    /// A prober that lowers the policy rows of `pods` only on each node (see
    /// [`crate::lower::cluster_to_mag_of_pods`]): connections between these pods run as on
    /// the whole node; a connection from or to another pod of the model does not. A hardware
    /// model ([`Prober::with_hardware`]) needs the whole node's plan, so with one every
    /// pod's rows are lowered.
    pub fn of_pods(cluster: &'c Cluster, pods: impl IntoIterator<Item = PodId>) -> Prober<'c> {
        Prober {
            only_pods: Some(pods.into_iter().collect()),
            ..Prober::new(cluster)
        }
    }

    /// The same prober with a hardware model for `profile` in front of every node's MAG.
    pub fn with_hardware(mut self, profile: Profile, hook: HardwareHook<'c>) -> Prober<'c> {
        self.hardware = Some((profile, hook));
        self
    }

    /// The lowered MAG of a node.
    pub fn node(&mut self, name: &str) -> Result<&Lowered, String> {
        self.load(name)?;
        Ok(self.nodes[name].session.lowered())
    }

    /// The compile session of a node (its plan is for the hardware profile, if any).
    pub fn session(&mut self, name: &str) -> Result<&Session, String> {
        self.load(name)?;
        Ok(&self.nodes[name].session)
    }

    fn load(&mut self, name: &str) -> Result<(), String> {
        if !self.nodes.contains_key(name) {
            let session = match (&self.only_pods, &self.hardware) {
                (Some(pods), None) => Session::from_cluster_of_pods(
                    self.cluster,
                    Some(name.to_string()),
                    pods.clone(),
                ),
                _ => {
                    let options = SessionOptions {
                        node: Some(name.to_string()),
                        hardware: self
                            .hardware
                            .as_ref()
                            .map(|(p, _)| Hardware::Profile(Box::new(p.clone()))),
                        ..SessionOptions::default()
                    };
                    Session::from_cluster(self.cluster, options, &no_backends)
                }
            }
            .map_err(|e| e.to_string())?;
            session.info()?;
            self.nodes.insert(
                name.to_string(),
                NodeMag {
                    session,
                    ct: Conntrack::default(),
                },
            );
        }
        Ok(())
    }

    fn node_of_pod(&self, p: PodId) -> String {
        node_of_pod(self.cluster, p)
    }

    fn default_node(&self) -> String {
        pick_node(self.cluster, None).0
    }

    /// The address and port a connection is sent to.
    fn destination(&self, c: &Conn, src_v6: Option<bool>) -> Option<(IpAddr, u16, Option<String>)> {
        let port = c.port.unwrap_or(0);
        let fam = |ips: &[IpAddr]| {
            ips.iter()
                .find(|ip| src_v6.is_none_or(|v6| ip.is_ipv6() == v6))
                .or(ips.first())
                .copied()
        };
        match c.to {
            To::Pod(p) => {
                let ip = fam(&self.cluster.pod(p).ips)?;
                Some((ip, port, Some(self.node_of_pod(p))))
            }
            To::Ip(ip) => {
                let node = self
                    .cluster
                    .pod_by_ip(ip)
                    .map(|p| self.node_of_pod(p))
                    .or_else(|| {
                        self.cluster
                            .nodes
                            .iter()
                            .find(|n| n.addresses.contains(&ip))
                            .map(|n| n.name.clone())
                    });
                Some((ip, port, node))
            }
            To::Service(s, sport) => {
                let svc = self.cluster.service(s);
                let mut ips: Vec<IpAddr> = svc.cluster_ips.clone();
                ips.extend(&svc.load_balancer_ips);
                ips.extend(&svc.external_ips);
                if let Some(ip) = fam(&ips) {
                    return Some((ip, sport, None));
                }
                let np = svc.ports.iter().find(|p| p.port == sport)?.node_port?;
                let node = self.cluster.nodes.first()?;
                Some((fam(&node.addresses)?, np, Some(node.name.clone())))
            }
        }
    }

    fn endpoint_port(&mut self, node: &str, p: PodId) -> Result<u128, String> {
        self.load(node)?;
        let key = self.cluster.pod(p).key();
        Ok(self.nodes[node]
            .session
            .lowered()
            .state
            .endpoints
            .get(&key)
            .map(|e| u128::from(*e))
            .unwrap_or(ports::HOST))
    }

    fn run_on(&mut self, node: &str, p: Packet) -> Result<Trace, String> {
        self.load(node)?;
        let n = self.nodes.get_mut(node).ok_or("no node")?;
        if let Some((_, hw)) = self.hardware.as_mut() {
            if let Some(t) = hardware_trace(hw(node, &n.session, &p), p) {
                return Ok(t);
            }
        }
        let mut interp = Interp::new(n.session.mag(), n.session.info()?);
        interp.ct = std::mem::take(&mut n.ct);
        let t = interp.run(p);
        n.ct = interp.ct;
        Ok(t)
    }

    /// Follows a packet from `node` across the nodes it is tunnelled to.
    fn follow(&mut self, mut node: String, mut p: Packet) -> Result<Outcome, String> {
        let mut traces = Vec::new();
        let first = Some((node.clone(), p));
        let mut dnat = None;
        let mut verdict = Verdict::Allow;
        for _ in 0..4 {
            let t = self.run_on(&node, p)?;
            dnat = dnat.or(t.dnat);
            verdict = match (verdict, t.verdict) {
                (Verdict::Deny, _) | (_, Verdict::Deny) => Verdict::Deny,
                (Verdict::Redirect, _) | (_, Verdict::Redirect) => Verdict::Redirect,
                _ => Verdict::Allow,
            };
            let next = t.packet.get(Field::NextHop);
            let out = t.out_port();
            let leaves = t.verdict != Verdict::Deny && out == ports::WIRE && next != 0;
            let mut onward = t.packet;
            traces.push((node.clone(), t));
            if !leaves {
                break;
            }
            let hop = value_ip(next);
            let Some(n) = self
                .cluster
                .nodes
                .iter()
                .find(|n| n.addresses.contains(&hop))
            else {
                break;
            };
            node = n.name.clone();
            // The packet arrives from the wire with its metadata cleared.
            let mut fresh = Packet::zero();
            for f in Field::ALL.iter().filter(|f| !f.is_metadata()) {
                fresh.set(*f, onward.get(*f));
            }
            fresh.set(Field::InPort, ports::WIRE);
            onward = fresh;
            p = onward;
        }
        Ok(Outcome {
            verdict,
            dnat,
            traces,
            first,
        })
    }

    /// Runs the first packet of a new connection.
    pub fn connect(&mut self, c: &Conn) -> Result<Outcome, String> {
        let (src_ip, src_node, in_port_pod) = match c.from {
            From::Pod(p) => {
                let ip = self.cluster.pod(p).ip().ok_or("the source pod has no IP")?;
                (ip, self.node_of_pod(p), Some(p))
            }
            From::External(ip) => (ip, String::new(), None),
        };
        let src_v6 = Some(src_ip.is_ipv6());
        let (dst_ip, dport, dst_node) = self
            .destination(c, src_v6)
            .ok_or("the destination has no address")?;
        let src_ip = match c.from {
            From::Pod(p) => self
                .cluster
                .pod(p)
                .ips
                .iter()
                .find(|ip| ip.is_ipv6() == dst_ip.is_ipv6())
                .copied()
                .unwrap_or(src_ip),
            From::External(ip) => ip,
        };
        let node = match in_port_pod {
            Some(_) => src_node,
            None => dst_node.unwrap_or_else(|| self.default_node()),
        };
        let in_port = match in_port_pod {
            Some(p) => self.endpoint_port(&node, p)?,
            None => ports::WIRE,
        };
        let sport = self.next_sport;
        self.next_sport = self.next_sport.wrapping_add(1).max(1024);
        // ICMP has no ports: the echo identifier stands in for the source port (so that
        // conntrack tells connections apart, as it does with ICMP ids), and the
        // destination port is 0.
        let (sport, dport) = if c.protocol.has_ports() {
            (sport, dport)
        } else {
            (sport, 0)
        };
        let proto = match (c.protocol, dst_ip) {
            (Protocol::Icmp, IpAddr::V6(_)) => 58,
            (p, _) => p.number(),
        };
        let p = Packet::new(in_port, src_ip, dst_ip, proto, sport, dport);
        self.follow(node, p)
    }

    /// Runs the reply to a connection's first packet, from the side that received it.
    pub fn reply(&mut self, first: &Outcome) -> Result<Outcome, String> {
        let Some((last_node, last)) = first.traces.last() else {
            return Err("no packet to reply to".into());
        };
        let sent = last.packet;
        let out = last.out_port();
        // The server answers from the port the packet was delivered to.
        let in_port = if out >= ports::FIRST_ENDPOINT {
            out
        } else {
            ports::WIRE
        };
        let mut reply = Packet::zero();
        reply.set(Field::InPort, in_port);
        reply.set_addrs(sent.dst(), sent.src());
        reply.set(Field::IpProto, sent.get(Field::IpProto));
        reply.set(Field::L4Sport, sent.get(Field::L4Dport));
        reply.set(Field::L4Dport, sent.get(Field::L4Sport));
        self.follow(last_node.clone(), reply)
    }
}

/// The trace of a packet the hardware finished, with no MAG hit: dropped, or delivered with
/// its out port set; `None` when the MAG must run it.
fn hardware_trace(v: HwVerdict, mut packet: Packet) -> Option<Trace> {
    let verdict = match v {
        HwVerdict::Software => return None,
        HwVerdict::Dropped => Verdict::Deny,
        HwVerdict::Delivered { out_port } => {
            packet.set(Field::OutPort, out_port);
            Verdict::Allow
        }
    };
    Some(Trace {
        hits: Vec::new(),
        verdict,
        dnat: None,
        packet,
    })
}

/// Whether the hardware finished a packet of an outcome (a trace with no MAG hit): dropped
/// it, or delivered it by a forwarding entry.
pub fn finished_in_hardware(t: &Trace) -> bool {
    t.hits.is_empty()
}

/// The connection of a reference-semantics probe. An external source that is a pod's
/// address is that pod, as in the semantics.
pub fn conn_of_probe(cluster: &Cluster, p: &crate::semantics::Probe) -> Conn {
    use crate::semantics::{Destination, Peer};
    Conn {
        from: match p.from {
            Peer::Pod(id) => From::Pod(id),
            Peer::External(ip) => match cluster.pod_by_ip(ip) {
                Some(id) => From::Pod(id),
                None => From::External(ip),
            },
        },
        to: match p.to {
            Destination::Pod(id) => To::Pod(id),
            Destination::Ip(ip) => To::Ip(ip),
            Destination::Service { service, port } => To::Service(service, port),
        },
        protocol: p.protocol,
        port: p.port,
    }
}

/// The pod a (possibly translated) destination address belongs to.
pub fn delivered_pod(cluster: &Cluster, o: &Outcome) -> Option<PodId> {
    let (_, last) = o.traces.last()?;
    cluster.pod_by_ip(last.packet.dst())
}

/// The MAG interpreter as a conformance engine (`--engine mag`).
pub struct MagEngine;

struct MagEvaluator<'c> {
    cluster: &'c Cluster,
    engine: std::cell::RefCell<Prober<'c>>,
}

impl super::Engine for MagEngine {
    fn name(&self) -> &'static str {
        "mag"
    }

    fn prepare<'c>(&self, cluster: &'c Cluster) -> Result<Box<dyn super::Evaluator + 'c>, String> {
        let mut engine = Prober::new(cluster);
        engine.node(&pick_node(cluster, None).0)?;
        Ok(Box::new(MagEvaluator {
            cluster,
            engine: std::cell::RefCell::new(engine),
        }))
    }
}

impl super::Evaluator for MagEvaluator<'_> {
    fn evaluate(&self, probe: &crate::semantics::Probe) -> super::EngineVerdict {
        let conn = conn_of_probe(self.cluster, probe);
        let result = self.engine.borrow_mut().connect(&conn);
        let (allowed, reason) = match result {
            Err(e) => (Some(false), e),
            Ok(o) => match (o.verdict, refused(self.cluster, &o, probe)) {
                (Verdict::Deny, _) => (Some(false), mag_reason(&o)),
                (_, Some(r)) => (Some(false), r),
                (v, None) => (Some(true), format!("{v:?} by the MAG")),
            },
        };
        super::EngineVerdict { allowed, reason }
    }
}

fn mag_reason(o: &Outcome) -> String {
    o.traces
        .iter()
        .flat_map(|(n, t)| t.hits.last().map(move |h| (n, h)))
        .map(|(n, h)| {
            let prov: Vec<String> = h.provenance.iter().map(|p| p.to_string()).collect();
            format!("dropped on {n} at {}: {}", h.table, prov.join(" | "))
        })
        .next_back()
        .unwrap_or_else(|| "dropped".into())
}

/// The semantics' listening check (`check_listening`): a pod that lists its ports refuses
/// connections to other ports. This is the server's answer, not the network's, so it is
/// applied after the MAG.
pub fn refused(cluster: &Cluster, o: &Outcome, probe: &crate::semantics::Probe) -> Option<String> {
    if !probe.protocol.has_ports() {
        return None;
    }
    let pod = cluster.pod(delivered_pod(cluster, o)?);
    if pod.ports.is_empty() && pod.extra_ports.is_empty() {
        return None;
    }
    let port = o.traces.last()?.1.packet.get(Field::L4Dport) as u16;
    let listens = pod
        .ports
        .iter()
        .any(|p| p.port == port && p.protocol == probe.protocol)
        || pod.extra_ports.contains(&(port, probe.protocol));
    (!listens).then(|| format!("nothing listens on port {port}/{}", probe.protocol))
}

/// The node a pod runs on as the engines place it: its own node, or the cluster's first (or
/// synthetic) node when it names none or the cluster lists no nodes.
pub(crate) fn node_of_pod(cluster: &Cluster, pod: PodId) -> String {
    match (&cluster.pod(pod).node, cluster.nodes.is_empty()) {
        (Some(n), false) => n.clone(),
        _ => pick_node(cluster, None).0,
    }
}
