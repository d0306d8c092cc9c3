//! Engine `hw`: each node's hardware slice (the [`super::hwmodel`] flow table) sees every
//! packet first; what hardware does not drop runs through the node's MAG.
//!
//! The table is looked up on the port the packet arrives on, as the NPC does: a packet
//! from the wire on the uplink (port 0, where ingress policy sits), a packet a local pod
//! sends on the pod's own port (its endpoint number, where its egress policy sits), the
//! pod's replies included.
//!
//! Marks never decide (the software pipeline runs in full for marked packets), so the
//! engine's answer differs from the MAG's only where hardware drops: exactly where the
//! partitioner's soundness rules must hold.

use super::hwmodel::{Fate, ForwardSemantics, HwPacket, Ports, Tcam};
use super::mag::{self, Conn, From, To};
use super::{Engine, EngineVerdict, Evaluator};
use crate::backend::{octeon_cn10k_profile, PacketField, Profile};
use crate::mag::interp::{Packet, Verdict};
use crate::mag::{eth, Field};
use crate::model::Cluster;
use crate::semantics::{Destination, Peer, Probe};
use crate::session::Session;
use std::cell::RefCell;
use std::collections::BTreeMap;

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

impl Engine for HwEngine {
    fn name(&self) -> &'static str {
        "hw"
    }

    fn prepare<'c>(&self, cluster: &'c Cluster) -> Result<Box<dyn Evaluator + 'c>, String> {
        let levels = self.profile.caps.priority_levels;
        let mut tables: BTreeMap<String, Option<Tcam>> = BTreeMap::new();
        let hook = Box::new(move |node: &str, session: &Session, p: &Packet| {
            let tcam = tables.entry(node.to_string()).or_insert_with(|| {
                let plan = session.plan()?;
                Tcam::load(&plan.slice, levels, None).ok()
            });
            let Ok(port) = u16::try_from(p.get(Field::InPort)) else {
                return false;
            };
            // The packet takes the whole hardware path (`Tcam::fate`): dropped, or sent to a
            // function that is no port (the NIX drops it), ends here; handed to software
            // with its mark, it goes on through the MAG, as the tc programs see it. The
            // plan's rules never forward (only pipecd's connection-offload entries do, and
            // the plan does not hold them), so no port table is needed to resolve one.
            match (tcam, hw_packet(p)) {
                (Some(t), Some(h)) => matches!(
                    t.fate(port, &h, &Ports::default(), ForwardSemantics::SamePf),
                    Fate::Dropped | Fate::NoSuchPort { .. }
                ),
                _ => false,
            }
        });
        Ok(Box::new(HwEvaluator {
            cluster,
            engine: RefCell::new(
                mag::Prober::new(cluster).with_hardware(self.profile.clone(), hook),
            ),
        }))
    }
}

struct HwEvaluator<'c> {
    cluster: &'c Cluster,
    engine: RefCell<mag::Prober<'c>>,
}

impl Evaluator for HwEvaluator<'_> {
    fn evaluate(&self, probe: &Probe) -> EngineVerdict {
        let from = match probe.from {
            Peer::Pod(p) => From::Pod(p),
            Peer::External(ip) => match self.cluster.pod_by_ip(ip) {
                Some(p) => From::Pod(p),
                None => From::External(ip),
            },
        };
        let to = match probe.to {
            Destination::Pod(p) => To::Pod(p),
            Destination::Ip(ip) => To::Ip(ip),
            Destination::Service { service, port } => To::Service(service, port),
        };
        let conn = Conn {
            from,
            to,
            protocol: probe.protocol,
            port: probe.port,
        };
        let mut engine = self.engine.borrow_mut();
        let first = match engine.connect(&conn) {
            Ok(o) => o,
            Err(e) => {
                return EngineVerdict {
                    allowed: None,
                    reason: e,
                }
            }
        };
        let hw_dropped = |o: &mag::Outcome| {
            o.traces
                .iter()
                .any(|(_, t)| t.verdict == Verdict::Deny && t.hits.is_empty())
        };
        if first.verdict == Verdict::Deny {
            let who = if hw_dropped(&first) {
                "dropped by the hardware flow table"
            } else {
                "denied by the MAG"
            };
            return EngineVerdict {
                allowed: Some(false),
                reason: who.into(),
            };
        }
        match engine.reply(&first) {
            Ok(r) if r.verdict == Verdict::Deny => EngineVerdict {
                allowed: Some(false),
                reason: if hw_dropped(&r) {
                    "reply dropped by the hardware flow table".into()
                } else {
                    "reply denied by the MAG".into()
                },
            },
            Ok(_) => EngineVerdict {
                allowed: Some(true),
                reason: "allowed".into(),
            },
            Err(e) => EngineVerdict {
                allowed: None,
                reason: e,
            },
        }
    }
}
