//! The `ebpf` conformance engine: every probe as a real packet through the loaded
//! programs, with `BPF_PROG_TEST_RUN`.
//!
//! Per case, [`EbpfEngine::prepare`] lowers the cluster to the MAG of its node, compiles
//! it with [`mag_to_ebpf`], loads the datapath (unpinned, so its maps go away with it) and
//! writes the maps. Every endpoint is bound to the loopback device, the device test runs
//! use, so anti-spoofing holds for every probe.
//!
//! Per probe, conntrack and affinity are flushed (probes do not see each other's state),
//! then:
//! 1. the first packet of a local pod runs through `from_pod` (service DNAT and egress
//!    policy), then, when its translated destination is a local endpoint, through
//!    `to_pod` (ingress policy);
//! 2. the first packet of any other source comes from the wire: it runs through
//!    `from_wire`, which balances it on a service frontend (cluster IP, node port,
//!    load-balancer or external IP) and checks the ingress policy of a local destination
//!    with the original client as the source;
//! 3. if it was allowed, the server's reply runs back: `from_pod` of a local server, then
//!    `to_pod` of a local client, which must undo the DNAT. Whenever the reply passed a
//!    program that holds the connection (the client's `to_pod`, or the local server's
//!    `from_pod` for a client on the wire) it must come from the address and port the
//!    client sent to. A reply from a backend on another node never passes this node (the
//!    datapath does not source-NAT, as the reference does not), so it is not checked.
//!
//! A packet to a port the destination pod does not list is refused, as the reference
//! does with `check_listening`: that is the server's answer, not the datapath's.
//!
//! Needs root: without it, or without BPF, preparing fails loudly, so a case never passes
//! on an engine that did not run.

use std::cell::Cell;
use std::net::IpAddr;

use pipec::conformance::{Engine, EngineVerdict, Evaluator};
use pipec::model::{Cluster, PodId, Protocol};
use pipec::semantics::{Destination, Peer, Probe};
use pipec_ebpf_common as c;

use crate::backend::EbpfBackend;
use crate::codegen::TARGET;
use crate::datapath::{Datapath, Program, TC_ACT_SHOT};
use crate::packet::{self, L4};
use crate::EbpfArtifact;
use pipec::session::{Session, SessionOptions};

/// The `ebpf` engine.
pub struct EbpfEngine;

/// The loopback device's ifindex, which `BPF_PROG_TEST_RUN` runs packets on.
const LOOPBACK: u32 = 1;

/// Whether the process runs as root (BPF needs it here).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code, reason = "geteuid(2) has no safe wrapper in std")]
    let uid = unsafe { libc::geteuid() };
    uid == 0
}

/// Compiles a cluster for the engine: the artifact of its node, endpoints on loopback.
pub fn compile(cluster: &Cluster) -> Result<EbpfArtifact, String> {
    let backends = |_: Option<&_>| -> Vec<Box<dyn pipec::backend::Backend>> {
        vec![Box::new(EbpfBackend::default())]
    };
    let session = Session::from_cluster(cluster, SessionOptions::default(), &backends)
        .map_err(|e| e.to_string())?;
    let mut art = match session.artifact(TARGET) {
        Some(Ok(a)) => a
            .as_any()
            .downcast_ref::<EbpfArtifact>()
            .cloned()
            .ok_or("the ebpf target made another artifact")?,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("the session has no ebpf target".into()),
    };
    art.bind_interfaces(|_| Some(LOOPBACK));
    art.config.flags |= c::CONFIG_NO_EVENTS;
    Ok(art)
}

impl Engine for EbpfEngine {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn prepare<'c>(&self, cluster: &'c Cluster) -> Result<Box<dyn Evaluator + 'c>, String> {
        Ok(Box::new(EbpfEvaluator::new(cluster, true)?))
    }
}

/// The engine prepared for one cluster: a loaded datapath with its maps written.
pub struct EbpfEvaluator<'c> {
    cluster: &'c Cluster,
    art: EbpfArtifact,
    dp: Datapath,
    next_sport: Cell<u16>,
    check_listening: bool,
}

impl<'c> EbpfEvaluator<'c> {
    /// Compiles `cluster`, loads the datapath and writes its maps. With `check_listening`,
    /// a connection to a port the destination pod does not list is refused.
    pub fn new(cluster: &'c Cluster, check_listening: bool) -> Result<Self, String> {
        if !is_root() {
            return Err(
                "engine ebpf needs root (BPF, BPF_PROG_TEST_RUN); run as root or \
                        choose other engines with --engine"
                    .into(),
            );
        }
        if cluster.nodes.len() > 1 {
            return Err(format!(
                "engine ebpf runs one node's datapath; the cluster has {} nodes",
                cluster.nodes.len()
            ));
        }
        let art = compile(cluster)?;
        let mut dp = Datapath::load(None).map_err(|e| format!("loading the datapath: {e}"))?;
        dp.write(&art)
            .map_err(|e| format!("writing the maps: {e}"))?;
        Ok(EbpfEvaluator {
            cluster,
            art,
            dp,
            next_sport: Cell::new(40000),
            check_listening,
        })
    }

    /// The map contents the datapath holds.
    pub fn artifact(&self) -> &EbpfArtifact {
        &self.art
    }
}

/// What happened to one probe in the datapath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRun {
    /// `Some(true)` allowed, `Some(false)` denied, `None` when the datapath misbehaved or
    /// the probe cannot be run.
    pub allowed: Option<bool>,
    /// Where the connection was delivered (after DNAT), when it was allowed.
    pub delivered: Option<(IpAddr, u16)>,
    /// Why.
    pub reason: String,
}

fn verdict(allowed: Option<bool>, reason: impl Into<String>) -> ProbeRun {
    ProbeRun {
        allowed,
        delivered: None,
        reason: reason.into(),
    }
}

fn l4(proto: u8, sport: u16, dport: u16, reply: bool) -> L4 {
    match proto {
        6 => L4::Tcp {
            sport,
            dport,
            flags: if reply {
                packet::TCP_SYN | packet::TCP_ACK
            } else {
                packet::TCP_SYN
            },
        },
        17 => L4::Udp { sport, dport },
        132 => L4::Sctp { sport, dport },
        _ => L4::Echo { id: sport, reply },
    }
}

impl EbpfEvaluator<'_> {
    fn pick(ips: &[IpAddr], v6: Option<bool>) -> Option<IpAddr> {
        ips.iter()
            .find(|ip| v6.is_none_or(|v| ip.is_ipv6() == v))
            .or(ips.first())
            .copied()
    }

    /// The destination address and port a probe's first packet is sent to.
    fn destination(&self, probe: &Probe, v6: Option<bool>) -> Option<(IpAddr, u16)> {
        let port = probe.port.unwrap_or(0);
        match probe.to {
            Destination::Pod(p) => Some((Self::pick(&self.cluster.pod(p).ips, v6)?, port)),
            Destination::Ip(ip) => Some((ip, port)),
            Destination::Service { service, port } => {
                let s = self.cluster.service(service);
                let mut ips = s.cluster_ips.clone();
                ips.extend(&s.load_balancer_ips);
                ips.extend(&s.external_ips);
                Some((Self::pick(&ips, v6)?, port))
            }
        }
    }

    fn is_endpoint(&self, ip: IpAddr) -> bool {
        self.art.endpoints.contains_key(&ip)
    }

    fn run(&self, prog: Program, frame: &[u8], mark: u32) -> Result<(bool, Vec<u8>, u32), String> {
        let r = self
            .dp
            .run(prog, frame, LOOPBACK, mark)
            .map_err(|e| e.to_string())?;
        Ok((r.verdict != TC_ACT_SHOT, r.packet, r.mark))
    }

    /// Runs a first packet through the programs it meets on this node: `from_pod` of a
    /// local source, then `to_pod` of a local destination; or `from_wire` alone for a
    /// source outside the node (it runs the ingress checks of a local destination itself
    /// and marks the packet so that `to_pod` passes it). Returns the packet as delivered
    /// and its mark, or which program dropped it.
    fn first_packet(
        &self,
        frame: Vec<u8>,
        from_endpoint: bool,
    ) -> Result<Result<(Vec<u8>, u32), &'static str>, String> {
        if !from_endpoint {
            let (ok, out, mark) = self.run(Program::FromWire, &frame, 0)?;
            return Ok(if ok {
                Ok((out, mark))
            } else {
                Err("dropped by from_wire (service or ingress)")
            });
        }
        let (ok, frame, mark) = self.run(Program::FromPod, &frame, 0)?;
        if !ok {
            return Ok(Err("dropped by from_pod (egress)"));
        }
        let sent = packet::parse(&frame).ok_or("from_pod left an unparsable packet")?;
        if !self.is_endpoint(sent.dst) {
            return Ok(Ok((frame, mark)));
        }
        let (ok, out, mark) = self.run(Program::ToPod, &frame, mark)?;
        Ok(if ok {
            Ok((out, mark))
        } else {
            Err("dropped by to_pod (ingress)")
        })
    }

    /// Runs one probe: the first packet, and its reply when it was allowed.
    pub fn run_probe(&self, probe: &Probe) -> ProbeRun {
        match self.try_run(probe) {
            Ok(r) => r,
            Err(e) => verdict(None, format!("the datapath failed: {e}")),
        }
    }

    fn try_run(&self, probe: &Probe) -> Result<ProbeRun, String> {
        self.dp.flush_state().map_err(|e| e.to_string())?;
        let cluster = self.cluster;
        let src_pod: Option<PodId> = match probe.from {
            Peer::Pod(p) => Some(p),
            Peer::External(ip) => cluster.pod_by_ip(ip),
        };
        let src_hint = match probe.from {
            Peer::Pod(p) => cluster.pod(p).ips.first().map(|ip| ip.is_ipv6()),
            Peer::External(ip) => Some(ip.is_ipv6()),
        };
        let Some((dst, dport)) = self.destination(probe, src_hint) else {
            return Ok(verdict(None, "the destination has no address"));
        };
        let src = match (probe.from, src_pod) {
            (Peer::External(ip), _) => ip,
            (Peer::Pod(p), _) => match Self::pick(&cluster.pod(p).ips, Some(dst.is_ipv6())) {
                Some(ip) => ip,
                None => return Ok(verdict(None, "the source pod has no address")),
            },
        };
        if src.is_ipv6() != dst.is_ipv6() {
            return Ok(verdict(
                None,
                "source and destination are of different families",
            ));
        }
        let proto = match (probe.protocol, dst) {
            (Protocol::Icmp, IpAddr::V6(_)) => 58,
            (p, _) => p.number(),
        };
        let sport = self.next_sport.get();
        self.next_sport.set(sport.wrapping_add(1).max(1024));
        let (sport, dport) = if probe.protocol.has_ports() {
            (sport, dport)
        } else {
            (sport, 0)
        };
        let frame = packet::build(src, dst, l4(proto, sport, dport, false));

        // The first packet.
        let from_endpoint = self.is_endpoint(src);
        let (frame, mark) = match self.first_packet(frame, from_endpoint)? {
            Ok(delivered) => delivered,
            Err(why) => return Ok(verdict(Some(false), why)),
        };
        let delivered = packet::parse(&frame).ok_or("the first packet became unparsable")?;
        let redirected = mark & c::MARK_MAGIC_MASK == c::MARK_TO_PROXY;
        let dst_pod = cluster.pod_by_ip(delivered.dst);
        if self.check_listening {
            if let Some(why) = refused(cluster, dst_pod, probe.protocol, delivered.dport) {
                return Ok(verdict(Some(false), why));
            }
        }

        // The reply, from where the first packet was delivered.
        let reply = packet::build(
            delivered.dst,
            delivered.src,
            if probe.protocol.has_ports() {
                l4(proto, delivered.dport, delivered.sport, true)
            } else {
                // An echo reply keeps the request's identifier.
                l4(proto, sport, sport, true)
            },
        );
        let mut reply = reply;
        let local_server = self.is_endpoint(delivered.dst);
        if local_server {
            let (ok, out, _) = self.run(Program::FromPod, &reply, 0)?;
            if !ok {
                return Ok(verdict(
                    None,
                    "the first packet passed but from_pod dropped the reply",
                ));
            }
            reply = out;
        }
        if from_endpoint {
            let (ok, out, _) = self.run(Program::ToPod, &reply, 0)?;
            if !ok {
                return Ok(verdict(
                    None,
                    "the first packet passed but to_pod dropped the reply",
                ));
            }
            reply = out;
        }
        let back = packet::parse(&reply).ok_or("the reply became unparsable")?;
        let want_port = if probe.protocol.has_ports() {
            dport
        } else {
            back.sport
        };
        if (from_endpoint || local_server) && (back.src, back.sport) != (dst, want_port) {
            return Ok(verdict(
                None,
                format!(
                    "the reply comes from {}:{}, not from {dst}:{dport} (reverse NAT)",
                    back.src, back.sport
                ),
            ));
        }
        Ok(ProbeRun {
            allowed: Some(true),
            delivered: Some((delivered.dst, delivered.dport)),
            reason: format!(
                "{} to {}:{}; the reply came back",
                if redirected {
                    "allowed and redirected to the proxy"
                } else {
                    "allowed"
                },
                delivered.dst,
                delivered.dport
            ),
        })
    }
}

/// The reason a connection is refused because the destination pod lists its ports and
/// none is `port`/`protocol` (the reference's `check_listening`).
fn refused(cluster: &Cluster, pod: Option<PodId>, protocol: Protocol, port: u16) -> Option<String> {
    if !protocol.has_ports() {
        return None;
    }
    let pod = cluster.pod(pod?);
    if pod.ports.is_empty() && pod.extra_ports.is_empty() {
        return None;
    }
    let listens = pod
        .ports
        .iter()
        .any(|p| p.port == port && p.protocol == protocol)
        || pod.extra_ports.contains(&(port, protocol));
    (!listens).then(|| format!("delivered, but nothing listens on port {port}/{protocol}"))
}

impl Evaluator for EbpfEvaluator<'_> {
    fn evaluate(&self, probe: &Probe) -> EngineVerdict {
        let r = self.run_probe(probe);
        EngineVerdict {
            allowed: r.allowed,
            reason: r.reason,
        }
    }
}
