//! Engine `hw`: each node's hardware slice (the [`super::hwmodel`] flow table) sees every
//! packet first; what hardware does not finish runs through the node's MAG.
//!
//! The plan numbers ports as the MAG does (the wire, the host, a pod's endpoint number);
//! the engine puts the slice on the device's ports ([`Layout::renumber`]) and looks each
//! packet up on the device port of its `in_port`, as the NPC does: a packet from the wire
//! on the uplink (where ingress policy sits), a packet a local pod sends on the pod's VF
//! (where its egress policy sits), the pod's replies included.
//!
//! Marks never decide (the software pipeline runs in full for marked packets), so the
//! engine's answer differs from the MAG's only where hardware drops: exactly where the
//! partitioner's soundness rules must hold.
//!
//! Once a connection's first packet and reply are allowed, the engine does what pipecd
//! does with an established connection: when [`later_packets`] says the hardware can finish
//! it, it installs the connection's exact entries on the nodes they name and sends a later
//! packet of each direction through the flow tables alone. The entries stay installed, as
//! pipecd's stay while the connection is active, so every later probe's packets meet them
//! too. What happened is in the reason and in [`Probed::offload`]; it never turns an allowed
//! connection into a denied one.

use super::hwmodel::{Fate, FiveTuple, ForwardSemantics, HwPacket, Lookup, Tcam};
use super::mag::{self, conn_of_probe, finished_in_hardware, HwVerdict, Outcome};
use super::offload::{later_packets, semantics_of, Later, Layout, OffloadEntry, UPLINK_PORT};
use super::{Engine, EngineVerdict, Evaluator};
use crate::backend::{octeon_cn10k_profile, PacketField, PortDirection, Profile};
use crate::mag::interp::{Packet, Verdict};
use crate::mag::{eth, Field};
use crate::model::Cluster;
use crate::semantics::{self, PathVerdict, Probe};
use crate::session::Session;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// Engine `hw` over a hardware profile (`octeon-cn10k` by default).
pub struct HwEngine {
    /// The hardware profile.
    pub profile: Profile,
}

impl Default for HwEngine {
    fn default() -> Self {
        HwEngine {
            profile: octeon_cn10k_profile(),
        }
    }
}

/// The header fields hardware sees in a MAG packet (IPv4 only; the default key has no
/// IPv6 addresses).
pub fn hw_packet(p: &Packet) -> Option<HwPacket> {
    if p.get(Field::EthType) != eth::IPV4 {
        return None;
    }
    let mut h = HwPacket::new();
    h.insert(PacketField::EthType, eth::IPV4);
    h.insert(PacketField::Ipv4Src, p.get(Field::Ipv4Src));
    h.insert(PacketField::Ipv4Dst, p.get(Field::Ipv4Dst));
    let proto = p.get(Field::IpProto);
    h.insert(PacketField::IpProto, proto);
    if matches!(proto, 6 | 17 | 132) {
        h.insert(PacketField::L4Sport, p.get(Field::L4Sport));
        h.insert(PacketField::L4Dport, p.get(Field::L4Dport));
    }
    Some(h)
}

/// One node's hardware: its plan slice on the device's ports in the flow-table model, and
/// the connection-offload entries added since.
#[derive(Clone, Debug)]
pub struct NodeHw {
    /// The flow table.
    pub tcam: Tcam,
    /// The node's device, which numbers the table's ports.
    pub layout: Layout,
    /// The ids of the connection-offload entries in the table.
    entries: BTreeSet<u32>,
}

impl NodeHw {
    /// Loads a session's plan slice, renumbered onto its node's device ports, into a table
    /// of `levels` levels.
    pub fn load(session: &Session, levels: u32) -> Result<NodeHw, String> {
        let plan = session.plan().ok_or("the session has no hardware plan")?;
        let layout = Layout::of_session(session);
        let slice = layout
            .renumber(&plan.slice)
            .map_err(|p| format!("a rule is on plan port {p}, which has no device port"))?;
        let tcam = Tcam::load(&slice, levels, None).map_err(|e| e.to_string())?;
        Ok(NodeHw {
            tcam,
            layout,
            entries: BTreeSet::new(),
        })
    }

    /// The device port a MAG packet arrives on: the device port of its `in_port`.
    pub fn in_port(&self, p: &Packet) -> Option<u16> {
        let port = u16::try_from(p.get(Field::InPort)).ok()?;
        self.layout.device_port(port)
    }

    /// The rule a packet arriving on device port `port` meets.
    pub fn hit(&self, port: u16, packet: &HwPacket) -> Hit {
        match self.tcam.lookup(port, PortDirection::Ingress, packet) {
            Lookup::Hit(r) if self.entries.contains(&r.id) => Hit::Entry { id: r.id },
            Lookup::Hit(r) => Hit::Plan {
                id: r.id,
                level: r.level,
            },
            Lookup::Default => Hit::Nothing,
        }
    }

    /// What the hardware does with a MAG packet, in the MAG's terms: a drop (or a forward
    /// to no port, which the NIX drops), a delivery out of a port the MAG knows, or
    /// software.
    pub fn verdict(&self, p: &Packet, sem: ForwardSemantics) -> HwVerdict {
        let (Some(port), Some(h)) = (self.in_port(p), hw_packet(p)) else {
            return HwVerdict::Software;
        };
        match self.tcam.fate(port, &h, &self.layout.ports, sem) {
            Fate::Dropped | Fate::NoSuchPort { .. } => HwVerdict::Dropped,
            Fate::Delivered { port } => match self.layout.plan_port(port) {
                Some(out) => HwVerdict::Delivered {
                    out_port: out.into(),
                },
                // A port the MAG does not number (a VF without a pod): nothing receives it.
                None => HwVerdict::Dropped,
            },
            Fate::Software { .. } => HwVerdict::Software,
        }
    }

    /// Installs one offload entry for the packets keyed by `tuple`.
    fn install(&mut self, e: &OffloadEntry, tuple: FiveTuple) -> Result<u32, String> {
        let id = self
            .tcam
            .add_exact(e.port, tuple, e.action.clone())
            .map_err(|err| format!("{}: {err}", e.text()))?;
        self.entries.insert(id);
        Ok(id)
    }
}

/// The rule a packet met in a node's flow table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    /// A connection-offload entry.
    Entry {
        /// Its id.
        id: u32,
    },
    /// A rule of the policy plan.
    Plan {
        /// Its id.
        id: u32,
        /// Its level.
        level: u32,
    },
    /// No rule: the port's default path, to software.
    Nothing,
}

/// One later packet of an offloaded connection on one node it crosses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaterPacket {
    /// The node.
    pub node: String,
    /// `original` or `reply`, as the entries name the directions.
    pub direction: &'static str,
    /// The device port it arrived on.
    pub port: u16,
    /// The port the node's entry of this direction sends it out of (`None`: no entry).
    pub wanted: Option<u16>,
    /// The rule it met.
    pub hit: Hit,
    /// What the hardware did with it.
    pub fate: Fate,
}

impl LaterPacket {
    /// Whether the hardware finished it where the entry says.
    pub fn finished(&self) -> bool {
        self.wanted
            .is_some_and(|port| self.fate == Fate::Delivered { port })
    }
}

/// One direction of a connection as its later packets take it: the packet its first one
/// was (on the node it started on) and the nodes it crosses, in order.
#[derive(Clone, Debug)]
struct Leg {
    direction: &'static str,
    packet: Packet,
    nodes: Vec<String>,
}

impl Leg {
    fn of(direction: &'static str, o: &Outcome) -> Option<Leg> {
        let (_, packet) = o.first.as_ref()?;
        Some(Leg {
            direction,
            packet: *packet,
            nodes: o.traces.iter().map(|(n, _)| n.clone()).collect(),
        })
    }
}

/// What connection offload did with one allowed connection.
#[derive(Clone, Debug)]
pub struct OffloadRun {
    /// pipecd's answer under the engine's profile: the entries, or why the connection
    /// stays in software.
    pub later: Later,
    /// Entries that could not be installed, and why (a duplicate key, a node without a
    /// flow table); empty when every entry was.
    pub refused: Vec<String>,
    /// The later packets sent once the entries were installed, per direction and node.
    pub packets: Vec<LaterPacket>,
    legs: Vec<Leg>,
}

impl OffloadRun {
    /// Whether the connection's later packets were finished in hardware in both directions,
    /// on every node, where the entries say.
    pub fn finished(&self) -> bool {
        self.later.in_hardware
            && self.refused.is_empty()
            && !self.packets.is_empty()
            && self.packets.iter().all(LaterPacket::finished)
    }

    /// The run in a few words, for the engine's reason.
    fn text(&self) -> String {
        if !self.later.in_hardware {
            return "later packets stay in software".into();
        }
        let done = self.packets.iter().filter(|p| p.finished()).count();
        format!(
            "later packets finished in hardware on {done} of {} node crossings by {} exact entries",
            self.packets.len(),
            self.later.entries.len()
        )
    }
}

/// Everything the engine did with one probe.
#[derive(Clone, Debug)]
pub struct Probed {
    /// The verdict, as conformance reads it.
    pub verdict: EngineVerdict,
    /// The first packet's outcome (`None` when it could not be sent).
    pub first: Option<Outcome>,
    /// The reply's outcome (`None` when the first packet was denied).
    pub reply: Option<Outcome>,
    /// Connection offload, for a connection whose first packet and reply were allowed.
    pub offload: Option<OffloadRun>,
}

type Tables = Rc<RefCell<BTreeMap<String, Result<NodeHw, String>>>>;

impl HwEngine {
    /// The engine prepared for one cluster, with the engine-specific calls
    /// ([`HwEvaluator::probe`], [`HwEvaluator::send_later`]) that [`Engine::prepare`]'s
    /// boxed evaluator hides.
    pub fn evaluator<'c>(&self, cluster: &'c Cluster) -> HwEvaluator<'c> {
        let levels = self.profile.caps.priority_levels;
        let sem = semantics_of(&self.profile).unwrap_or(ForwardSemantics::SamePf);
        let tables: Tables = Rc::default();
        let shared = tables.clone();
        let hook = Box::new(move |node: &str, session: &Session, p: &Packet| {
            let mut tables = shared.borrow_mut();
            let hw = tables
                .entry(node.to_string())
                .or_insert_with(|| NodeHw::load(session, levels));
            match hw {
                Ok(hw) => hw.verdict(p, sem),
                Err(_) => HwVerdict::Software,
            }
        });
        HwEvaluator {
            cluster,
            ctx: semantics::Context::new(cluster),
            profile: self.profile.clone(),
            sem,
            levels,
            tables,
            prober: RefCell::new(
                mag::Prober::new(cluster).with_hardware(self.profile.clone(), hook),
            ),
        }
    }
}

impl Engine for HwEngine {
    fn name(&self) -> &'static str {
        "hw"
    }

    fn prepare<'c>(&self, cluster: &'c Cluster) -> Result<Box<dyn Evaluator + 'c>, String> {
        Ok(Box::new(self.evaluator(cluster)))
    }
}

/// Engine `hw` prepared for one cluster: the nodes' flow tables (with the offload entries
/// installed so far) in front of their MAGs.
pub struct HwEvaluator<'c> {
    cluster: &'c Cluster,
    ctx: semantics::Context<'c>,
    profile: Profile,
    sem: ForwardSemantics,
    levels: u32,
    tables: Tables,
    prober: RefCell<mag::Prober<'c>>,
}

impl Evaluator for HwEvaluator<'_> {
    fn evaluate(&self, probe: &Probe) -> EngineVerdict {
        self.probe(probe).verdict
    }
}

/// The reason for a packet the hardware or the MAG denied.
fn denied(o: &Outcome, what: &str) -> String {
    let by_hw = o
        .traces
        .iter()
        .any(|(_, t)| t.verdict == Verdict::Deny && finished_in_hardware(t));
    let by = if by_hw {
        "dropped by the hardware flow table"
    } else {
        "denied by the MAG"
    };
    format!("{what}{by}")
}

/// The nodes where an offload entry, not the MAG, finished a packet of an outcome.
pub fn captured(o: &Outcome) -> Vec<&str> {
    o.traces
        .iter()
        .filter(|(_, t)| t.verdict != Verdict::Deny && finished_in_hardware(t))
        .map(|(n, _)| n.as_str())
        .collect()
}

impl HwEvaluator<'_> {
    /// Runs a probe: its first packet, its reply, and for an allowed connection, connection
    /// offload and a later packet of each direction.
    pub fn probe(&self, probe: &Probe) -> Probed {
        let verdict = |allowed: Option<bool>, reason: String| EngineVerdict { allowed, reason };
        let first = self
            .prober
            .borrow_mut()
            .connect(&conn_of_probe(self.cluster, probe));
        let first = match first {
            Ok(o) => o,
            Err(e) => return Probed::without(verdict(None, e)),
        };
        if first.verdict == Verdict::Deny {
            let v = verdict(Some(false), denied(&first, ""));
            return Probed::after(v, first, None, None);
        }
        let reply = match self.prober.borrow_mut().reply(&first) {
            Ok(r) => r,
            Err(e) => return Probed::after(verdict(None, e), first, None, None),
        };
        if reply.verdict == Verdict::Deny {
            let v = verdict(Some(false), denied(&reply, "reply "));
            return Probed::after(v, first, Some(reply), None);
        }
        let run = self.offload(probe, &first, &reply);
        let mut reason = format!("allowed; {}", run.text());
        let caught = [captured(&first), captured(&reply)].concat();
        if !caught.is_empty() {
            reason += &format!(
                "; a packet was finished by another connection's offload entry on {}",
                caught.join(", ")
            );
        }
        Probed::after(verdict(Some(true), reason), first, Some(reply), Some(run))
    }

    /// The reference path of the connection the MAG made: the one to the address (and
    /// port) it delivered to, as pipecd's offload judges the connection the conntrack holds.
    fn path(&self, probe: &Probe, first: &Outcome) -> Option<PathVerdict> {
        let r = semantics::evaluate(&self.ctx, probe);
        let dst = first.traces.last().map(|(_, t)| t.packet.dst());
        let to = |p: &&PathVerdict| Some(p.dst_ip) == dst;
        r.paths.iter().find(to).or(r.paths.first()).cloned()
    }

    /// Connection offload of an allowed connection: installs the entries pipecd would and
    /// sends a later packet of each direction.
    fn offload(&self, probe: &Probe, first: &Outcome, reply: &Outcome) -> OffloadRun {
        let legs: Vec<Leg> = [Leg::of("original", first), Leg::of("reply", reply)]
            .into_iter()
            .flatten()
            .collect();
        let later = match self.path(probe, first) {
            Some(path) => {
                let dnat = first.dnat.is_some();
                later_packets(self.cluster, &self.profile, probe, dnat, &path)
            }
            None => without_path(&self.profile),
        };
        let mut run = OffloadRun {
            later,
            refused: Vec::new(),
            packets: Vec::new(),
            legs,
        };
        if run.later.in_hardware {
            run.refused = self.install(&run);
            run.packets = self.send_later(&run);
        }
        run
    }

    /// Installs a run's entries on their nodes; returns why any could not be.
    fn install(&self, run: &OffloadRun) -> Vec<String> {
        let mut refused = Vec::new();
        for e in &run.later.entries {
            let tuple = run
                .legs
                .iter()
                .find(|l| l.direction == e.direction)
                .and_then(|l| FiveTuple::of_packet(&hw_packet(&l.packet)?));
            let Some(tuple) = tuple else {
                refused.push(format!("{}: no 5-tuple", e.text()));
                continue;
            };
            self.load(&e.node);
            let mut tables = self.tables.borrow_mut();
            match tables.get_mut(&e.node) {
                Some(Ok(hw)) => refused.extend(hw.install(e, tuple).err()),
                Some(Err(err)) => refused.push(format!("{}: {err}", e.text())),
                None => refused.push(format!("{}: no flow table", e.text())),
            }
        }
        refused
    }

    /// Loads a node's flow table if no packet has crossed the node yet.
    fn load(&self, node: &str) {
        if self.tables.borrow().contains_key(node) {
            return;
        }
        let mut prober = self.prober.borrow_mut();
        let hw = match prober.session(node) {
            Ok(s) => NodeHw::load(s, self.levels),
            Err(e) => Err(e),
        };
        self.tables.borrow_mut().insert(node.to_string(), hw);
    }

    /// Sends a later packet of each direction of an offloaded connection through the flow
    /// tables of the nodes it crosses, and never through a MAG: on its first node it
    /// arrives on the device port of the port its first packet came in by, on each further
    /// node on the uplink. Callable again once more entries are installed.
    pub fn send_later(&self, run: &OffloadRun) -> Vec<LaterPacket> {
        let tables = self.tables.borrow();
        let mut out = Vec::new();
        for leg in &run.legs {
            for (i, node) in leg.nodes.iter().enumerate() {
                let Some(Ok(hw)) = tables.get(node) else {
                    continue;
                };
                out.extend(self.later_packet(hw, run, leg, node, i == 0));
            }
        }
        out
    }

    /// One leg's later packet on one node: on the first node it arrives where the first
    /// packet did, on the others from the wire.
    fn later_packet(
        &self,
        hw: &NodeHw,
        run: &OffloadRun,
        leg: &Leg,
        node: &str,
        first: bool,
    ) -> Option<LaterPacket> {
        let h = hw_packet(&leg.packet)?;
        let port = if first {
            hw.in_port(&leg.packet)?
        } else {
            UPLINK_PORT
        };
        let entry = run
            .later
            .entries
            .iter()
            .find(|e| e.node == node && e.direction == leg.direction);
        Some(LaterPacket {
            node: node.to_string(),
            direction: leg.direction,
            port,
            wanted: entry.map(|e| e.out_port),
            hit: hw.hit(port, &h),
            fate: hw.tcam.fate(port, &h, &hw.layout.ports, self.sem),
        })
    }
}

/// pipecd's answer for a connection the reference gives no path (nothing it would judge
/// allowed): it stays in software.
fn without_path(profile: &Profile) -> Later {
    Later {
        profile: profile.name.clone(),
        in_hardware: false,
        entries: Vec::new(),
        stays: Some(super::offload::Stays::Denied),
    }
}

impl Probed {
    fn without(verdict: EngineVerdict) -> Probed {
        Probed {
            verdict,
            first: None,
            reply: None,
            offload: None,
        }
    }

    fn after(
        verdict: EngineVerdict,
        first: Outcome,
        reply: Option<Outcome>,
        offload: Option<OffloadRun>,
    ) -> Probed {
        Probed {
            verdict,
            first: Some(first),
            reply,
            offload,
        }
    }
}
