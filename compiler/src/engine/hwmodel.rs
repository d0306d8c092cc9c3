//! An executable model of the cnxk NPC flow table: the hardware half of engine `hw`.
//!
//! # What the model says
//!
//! The NPC is one flat TCAM per SoC, shared by every port: each rule belongs to the port it
//! was created on (the uplink for ingress policy, a pod's VF for its egress policy), and
//! all ports draw on the one entry budget. Rules sit in priority levels (0 is the highest);
//! a packet is looked up against the rules of its port and direction, level by level, and
//! the first level with a matching rule decides. A packet that no rule matches takes the
//! port's default path (normal receive, into the software pipeline): [`Lookup::Default`].
//!
//! Within one level the device orders rules by the MCAM index it happened to allocate, and
//! the rte_flow specification leaves the outcome of overlapping same-level rules
//! undefined. The model therefore refuses ([`TcamError::Ambiguous`]) any slice where two
//! rules of the same level overlap and do different things: if it loads, every lookup has
//! one answer, whatever order the device chose.

use crate::backend::{HwAction, HwMatch, HwRule, PacketField, PlanSlice, PortDirection};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// A packet as the hardware sees it: header field values; a missing field is a missing
/// header (a packet without a TCP header has no `l4.dport` for a TCP rule).
pub type HwPacket = BTreeMap<PacketField, u128>;

/// Why a slice cannot be loaded into the model.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TcamError {
    /// A rule asks for a level the table does not have.
    #[error("rule {rule} is at level {level}, but the table has {levels} levels")]
    LevelOutOfRange {
        /// The rule id.
        rule: u32,
        /// Its level.
        level: u32,
        /// The levels configured.
        levels: u32,
    },
    /// Two overlapping rules of one level have different actions: the device's order
    /// between them is undefined.
    #[error("rules {a} and {b} overlap at level {level} with different actions (order undefined on the device)")]
    Ambiguous {
        /// The level.
        level: u32,
        /// The first rule id.
        a: u32,
        /// The second rule id.
        b: u32,
    },
    /// An exact entry with the same port and key is already in the table: pipecd never
    /// installs one connection twice, so a second one is a bug of its caller.
    #[error("port {port} already holds rule {rule} with the same exact key")]
    Duplicate {
        /// The port.
        port: u16,
        /// The rule already there.
        rule: u32,
    },
    /// More rules than entries.
    #[error("{rules} rules do not fit in {entries} entries")]
    Full {
        /// The rules asked for.
        rules: usize,
        /// The entries available.
        entries: u64,
    },
}

/// The outcome of one lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A rule matched.
    Hit(&'a HwRule),
    /// Nothing matched: the port's default path.
    Default,
}

impl Lookup<'_> {
    /// Whether the hardware dropped the packet.
    pub fn drops(&self) -> bool {
        matches!(self, Lookup::Hit(r) if r.actions.contains(&HwAction::Drop))
    }
}

/// Which DPDK release's forwarding semantics the model follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardSemantics {
    /// DPDK 22.11 cnxk: `VF` and `PORT_ID` both resolve to a function of the rule port's own
    /// PF (`npc_parse_actions`: `pf_func & 0xfc00` OR the VF number + 1).
    SamePf,
    /// DPDK 23.07 and later: `PORT_ID` uses the destination port's own pf_func.
    AnyPort,
}

/// The ports of the device by ethdev port id, each with its RVU pf_func (PF number in bits
/// 15..10, function in bits 9..0: 0 is the PF itself, n is VF n-1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ports {
    /// pf_func by ethdev port id.
    pub pf_func: BTreeMap<u16, u16>,
}

impl Ports {
    /// The ethdev port whose pf_func is `pf_func`.
    pub fn port_of(&self, pf_func: u16) -> Option<u16> {
        self.pf_func
            .iter()
            .find(|(_, f)| **f == pf_func)
            .map(|(p, _)| *p)
    }

    /// The pf_func a forwarding action on a rule of port `from` sends to, under `sem`.
    pub fn target(&self, from: u16, action: &HwAction, sem: ForwardSemantics) -> Option<u16> {
        let own = *self.pf_func.get(&from)?;
        match (action, sem) {
            (HwAction::Vf { vf }, _) => Some((own & 0xfc00) | (vf + 1)),
            (HwAction::PortId { port }, ForwardSemantics::SamePf) => {
                let dst = *self.pf_func.get(port)?;
                Some((own & 0xfc00) | (dst & 0x3ff))
            }
            (HwAction::PortId { port }, ForwardSemantics::AnyPort) => {
                self.pf_func.get(port).copied()
            }
            _ => None,
        }
    }
}

/// Where one packet ends after the flow table, the whole path through the DPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The table dropped it.
    Dropped,
    /// The table finished it: it left on this ethdev port without reaching the cores.
    Delivered {
        /// The ethdev port it left on.
        port: u16,
    },
    /// It went to the port's kernel netdev and the tc programs; `skb_mark` is the
    /// hardware MARK as the octeontx2 driver copies it into `skb->mark` (0: no mark).
    Software {
        /// The value the tc programs read from `skb->mark`.
        skb_mark: u32,
    },
    /// A forwarding action named a function that is no port of the device: the NIX drops it.
    NoSuchPort {
        /// The pf_func the action resolved to.
        pf_func: u16,
    },
}

/// The level of pipecd's connection-offload entries: the highest priority, ahead of the policy
/// plan's marks, because the connection was already judged allowed.
pub const OFFLOAD_LEVEL: u32 = 0;

/// One direction of an IPv4 connection as the conntrack keys it: the exact key of a
/// connection-offload entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FiveTuple {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl FiveTuple {
    /// The 5-tuple of a packet with both L4 ports; `None` without them (ICMP, IPv6).
    pub fn of_packet(p: &HwPacket) -> Option<FiveTuple> {
        let get = |f: PacketField| p.get(&f).copied();
        Some(FiveTuple {
            src: Ipv4Addr::from(u32::try_from(get(PacketField::Ipv4Src)?).ok()?),
            dst: Ipv4Addr::from(u32::try_from(get(PacketField::Ipv4Dst)?).ok()?),
            proto: u8::try_from(get(PacketField::IpProto)?).ok()?,
            sport: u16::try_from(get(PacketField::L4Sport)?).ok()?,
            dport: u16::try_from(get(PacketField::L4Dport)?).ok()?,
        })
    }

    /// The tuple of the reply direction.
    pub fn reverse(self) -> FiveTuple {
        FiveTuple {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            sport: self.dport,
            dport: self.sport,
        }
    }

    /// The exact matches of an entry keyed on this tuple, sorted by field as a rule's are.
    pub fn matches(&self) -> Vec<HwMatch> {
        let mut m = vec![
            HwMatch::exact(PacketField::Ipv4Src, u32::from(self.src).into()),
            HwMatch::exact(PacketField::Ipv4Dst, u32::from(self.dst).into()),
            HwMatch::exact(PacketField::IpProto, self.proto.into()),
            HwMatch::exact(PacketField::L4Sport, self.sport.into()),
            HwMatch::exact(PacketField::L4Dport, self.dport.into()),
        ];
        m.sort_by_key(|m| m.field);
        m
    }
}

/// A loaded flow table.
#[derive(Clone, Debug)]
pub struct Tcam {
    levels: u32,
    /// Rules sorted by (level, id).
    rules: Vec<HwRule>,
}

impl Tcam {
    /// Loads a slice into a table with `levels` priority levels and `entries` entries.
    pub fn load(slice: &PlanSlice, levels: u32, entries: Option<u64>) -> Result<Tcam, TcamError> {
        if let Some(entries) = entries {
            if slice.rules.len() as u64 > entries {
                return Err(TcamError::Full {
                    rules: slice.rules.len(),
                    entries,
                });
            }
        }
        for r in &slice.rules {
            if r.level >= levels {
                return Err(TcamError::LevelOutOfRange {
                    rule: r.id,
                    level: r.level,
                    levels,
                });
            }
        }
        let mut rules = slice.rules.clone();
        rules.sort_by_key(|r| (r.level, r.id));
        if let Some((level, a, b)) = first_conflict(&rules) {
            return Err(TcamError::Ambiguous { level, a, b });
        }
        Ok(Tcam { levels, rules })
    }

    /// The levels configured.
    pub fn levels(&self) -> u32 {
        self.levels
    }

    /// The rules, by level then id.
    pub fn rules(&self) -> &[HwRule] {
        &self.rules
    }

    /// Adds an exact connection-offload entry on `port` at [`OFFLOAD_LEVEL`]: COUNT, then
    /// the forwarding action `forward`; returns its id. It refuses a second entry with the
    /// same port and key. It does not refuse an overlap with a plan rule of the same level
    /// (the device's order between them is undefined, a cost in offload share, not a wrong
    /// verdict): the entry takes an id above every rule's, so the model lets the plan rule
    /// win, the pessimistic of the device's two choices.
    pub fn add_exact(
        &mut self,
        port: u16,
        tuple: FiveTuple,
        forward: HwAction,
    ) -> Result<u32, TcamError> {
        let matches = tuple.matches();
        let same = |r: &&HwRule| {
            r.port == port
                && r.direction == PortDirection::Ingress
                && r.level == OFFLOAD_LEVEL
                && r.matches == matches
        };
        if let Some(r) = self.rules.iter().find(same) {
            return Err(TcamError::Duplicate { port, rule: r.id });
        }
        let id = self.rules.iter().map(|r| r.id + 1).max().unwrap_or(0);
        let rule = HwRule {
            id,
            port,
            direction: PortDirection::Ingress,
            level: OFFLOAD_LEVEL,
            matches,
            actions: vec![HwAction::Count, forward],
            origin: format!(
                "connection offload {}:{} -> {}:{}",
                tuple.src, tuple.sport, tuple.dst, tuple.dport
            ),
        };
        let at = self
            .rules
            .partition_point(|r| (r.level, r.id) < (rule.level, id));
        self.rules.insert(at, rule);
        Ok(id)
    }

    /// Looks a packet up: the first matching rule by level, or the default path.
    pub fn lookup(&self, port: u16, direction: PortDirection, packet: &HwPacket) -> Lookup<'_> {
        self.rules
            .iter()
            .find(|r| r.port == port && r.direction == direction && r.matches_packet(packet))
            .map_or(Lookup::Default, Lookup::Hit)
    }
}

impl Tcam {
    /// The whole hardware path of a packet received on `port`: the lookup, then the fate the
    /// matching rule gives it. A rule without a drop or forward action leaves the packet to
    /// software, carrying its MARK (16 bits on cnxk) into `skb->mark`.
    pub fn fate(&self, port: u16, packet: &HwPacket, ports: &Ports, sem: ForwardSemantics) -> Fate {
        let Lookup::Hit(rule) = self.lookup(port, PortDirection::Ingress, packet) else {
            return Fate::Software { skb_mark: 0 };
        };
        if rule.actions.contains(&HwAction::Drop) {
            return Fate::Dropped;
        }
        if let Some(fwd) = rule.actions.iter().find(|a| a.forwards()) {
            return match ports.target(port, fwd, sem) {
                Some(f) => match ports.port_of(f) {
                    Some(p) => Fate::Delivered { port: p },
                    None => Fate::NoSuchPort { pf_func: f },
                },
                None => Fate::NoSuchPort { pf_func: 0 },
            };
        }
        let skb_mark = rule
            .actions
            .iter()
            .find_map(|a| match a {
                HwAction::Mark { id } => Some(id & 0xffff),
                _ => None,
            })
            .unwrap_or(0);
        Fate::Software { skb_mark }
    }
}

/// The first pair of same-level rules that overlap with different actions, as
/// `(level, a, b)`; `rules` must be sorted by level.
pub fn first_conflict(rules: &[HwRule]) -> Option<(u32, u32, u32)> {
    let mut start = 0;
    while start < rules.len() {
        let level = rules[start].level;
        let end = start + rules[start..].partition_point(|r| r.level == level);
        let group = &rules[start..end];
        for (i, a) in group.iter().enumerate() {
            for b in &group[i + 1..] {
                if a.actions != b.actions && a.overlaps(b) {
                    return Some((level, a.id.min(b.id), a.id.max(b.id)));
                }
            }
        }
        start = end;
    }
    None
}

impl fmt::Display for Tcam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.rules {
            write!(f, "L{} r{} port {} {}", r.level, r.id, r.port, r.direction)?;
            for m in &r.matches {
                write!(
                    f,
                    " {}={}/{:#x}",
                    m.field,
                    m.field.fmt_value(m.value),
                    m.mask
                )?;
            }
            writeln!(f, " -> {:?}", r.actions)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Port 0 is the uplink (PF 1), port 1 the SDP PF toward the host (PF 2), ports 2 and 3
    /// its VFs 0 and 1 (two pods).
    fn ports() -> Ports {
        Ports {
            pf_func: [
                (0, 1 << 10),
                (1, 2 << 10),
                (2, (2 << 10) | 1),
                (3, (2 << 10) | 2),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn table(actions: Vec<HwAction>) -> Tcam {
        let mut r = rule(1, 0, vec![], actions);
        r.port = 2;
        let slice = PlanSlice {
            target: "octeon-cn10k".into(),
            rules: vec![r],
        };
        Tcam::load(&slice, 3, Some(8192)).unwrap()
    }

    #[test]
    fn a_vf_rule_on_a_pod_port_delivers_to_the_sibling_pod() {
        let t = table(vec![HwAction::Count, HwAction::Vf { vf: 1 }]);
        let fate = t.fate(2, &HwPacket::new(), &ports(), ForwardSemantics::SamePf);
        assert_eq!(fate, Fate::Delivered { port: 3 });
    }

    #[test]
    fn port_id_to_the_uplink_stays_in_the_pf_on_22_11_and_crosses_on_23_07() {
        let t = table(vec![HwAction::PortId { port: 0 }]);
        // 22.11: the uplink's function bits (0: a PF) are ORed onto the pod's PF: the packet
        // goes to the SDP PF (the host), not to the network.
        let old = t.fate(2, &HwPacket::new(), &ports(), ForwardSemantics::SamePf);
        assert_eq!(old, Fate::Delivered { port: 1 });
        let new = t.fate(2, &HwPacket::new(), &ports(), ForwardSemantics::AnyPort);
        assert_eq!(new, Fate::Delivered { port: 0 });
    }

    #[test]
    fn a_mark_rule_hands_the_packet_to_software_with_the_mark_in_skb_mark() {
        let t = table(vec![HwAction::Mark { id: 0x1_0007 }]);
        let fate = t.fate(2, &HwPacket::new(), &ports(), ForwardSemantics::SamePf);
        assert_eq!(fate, Fate::Software { skb_mark: 7 });
        let miss = t.fate(3, &HwPacket::new(), &ports(), ForwardSemantics::SamePf);
        assert_eq!(miss, Fate::Software { skb_mark: 0 });
    }

    #[test]
    fn a_vf_beyond_the_device_is_no_port() {
        let t = table(vec![HwAction::Vf { vf: 9 }]);
        let fate = t.fate(2, &HwPacket::new(), &ports(), ForwardSemantics::SamePf);
        assert_eq!(
            fate,
            Fate::NoSuchPort {
                pf_func: (2 << 10) | 10
            }
        );
    }
    use crate::backend::HwMatch;

    fn tuple() -> FiveTuple {
        FiveTuple {
            src: Ipv4Addr::new(10, 244, 1, 10),
            dst: Ipv4Addr::new(10, 244, 1, 11),
            proto: 6,
            sport: 40000,
            dport: 80,
        }
    }

    fn packet_of(t: FiveTuple) -> HwPacket {
        t.matches()
            .into_iter()
            .map(|m| (m.field, m.value))
            .collect()
    }

    #[test]
    fn an_exact_entry_counts_and_forwards_and_is_refused_twice() {
        // Port 2 drops everything; the entry sits on port 3 (VF 1) and sends to VF 0.
        let mut t = table(vec![HwAction::Drop]);
        let vf = HwAction::Vf { vf: 0 };
        let id = t.add_exact(3, tuple(), vf.clone()).unwrap();
        assert_eq!(id, 2, "above every plan rule's id");
        let entry = t.rules().iter().find(|r| r.id == id).unwrap();
        assert_eq!(entry.actions, vec![HwAction::Count, vf.clone()]);
        assert_eq!(entry.level, OFFLOAD_LEVEL);
        let p = packet_of(tuple());
        assert_eq!(FiveTuple::of_packet(&p), Some(tuple()));
        let fate = t.fate(3, &p, &ports(), ForwardSemantics::SamePf);
        assert_eq!(fate, Fate::Delivered { port: 2 });
        assert_eq!(
            t.add_exact(3, tuple(), vf.clone()),
            Err(TcamError::Duplicate { port: 3, rule: id })
        );
        // The same key on another port is another entry.
        assert!(t.add_exact(2, tuple(), vf).is_ok());
    }

    #[test]
    fn a_plan_rule_of_the_entrys_level_takes_its_packets_and_a_lower_level_does_not() {
        for (level, wins) in [(OFFLOAD_LEVEL, true), (OFFLOAD_LEVEL + 1, false)] {
            let mut r = rule(1, level, vec![], vec![HwAction::Mark { id: 5 }]);
            r.port = 2;
            let slice = PlanSlice {
                target: "t".into(),
                rules: vec![r],
            };
            let mut t = Tcam::load(&slice, 3, None).unwrap();
            let entry = t.add_exact(2, tuple(), HwAction::Vf { vf: 1 }).unwrap();
            let hit = match t.lookup(2, PortDirection::Ingress, &packet_of(tuple())) {
                Lookup::Hit(r) => r.id,
                Lookup::Default => panic!("no rule"),
            };
            assert_eq!(hit == 1, wins, "level {level}: hit {hit}, entry {entry}");
        }
    }

    fn rule(id: u32, level: u32, matches: Vec<HwMatch>, actions: Vec<HwAction>) -> HwRule {
        HwRule {
            id,
            port: 0,
            direction: PortDirection::Ingress,
            level,
            matches,
            actions,
            origin: String::new(),
        }
    }

    fn pkt(src: [u8; 4], proto: u128, dport: u128) -> HwPacket {
        let mut p = HwPacket::new();
        p.insert(PacketField::Ipv4Src, u32::from_be_bytes(src) as u128);
        p.insert(PacketField::IpProto, proto);
        p.insert(PacketField::L4Dport, dport);
        p
    }

    #[test]
    fn first_level_wins_and_unmatched_goes_default() {
        let allow = rule(
            1,
            0,
            vec![HwMatch::prefix(PacketField::Ipv4Src, 0x0a00_0100, 24)],
            vec![HwAction::Mark { id: 7 }],
        );
        let deny = rule(
            2,
            1,
            vec![HwMatch::prefix(PacketField::Ipv4Src, 0x0a00_0000, 8)],
            vec![HwAction::Drop],
        );
        let slice = PlanSlice {
            target: "octeon-cn10k".into(),
            rules: vec![deny, allow],
        };
        let t = Tcam::load(&slice, 3, Some(8192)).unwrap();
        let hit = t.lookup(0, PortDirection::Ingress, &pkt([10, 0, 1, 9], 6, 80));
        assert!(matches!(hit, Lookup::Hit(r) if r.id == 1));
        assert!(t
            .lookup(0, PortDirection::Ingress, &pkt([10, 9, 1, 9], 6, 80))
            .drops());
        assert_eq!(
            t.lookup(0, PortDirection::Ingress, &pkt([11, 0, 0, 1], 6, 80)),
            Lookup::Default
        );
        assert_eq!(
            t.lookup(1, PortDirection::Ingress, &pkt([10, 0, 1, 9], 6, 80)),
            Lookup::Default
        );
    }

    #[test]
    fn overlapping_same_level_different_actions_is_rejected() {
        let a = rule(
            1,
            0,
            vec![HwMatch::prefix(PacketField::Ipv4Src, 0x0a00_0000, 8)],
            vec![HwAction::Drop],
        );
        let b = rule(
            2,
            0,
            vec![HwMatch::exact(PacketField::L4Dport, 80)],
            vec![HwAction::Mark { id: 1 }],
        );
        let slice = PlanSlice {
            target: "t".into(),
            rules: vec![a.clone(), b.clone()],
        };
        assert_eq!(
            Tcam::load(&slice, 3, None).unwrap_err(),
            TcamError::Ambiguous {
                level: 0,
                a: 1,
                b: 2
            }
        );
        // Disjoint values on a shared field do not overlap.
        let mut c = b.clone();
        c.matches = vec![HwMatch::prefix(PacketField::Ipv4Src, 0x0b00_0000, 8)];
        let ok = PlanSlice {
            target: "t".into(),
            rules: vec![a.clone(), c],
        };
        assert!(Tcam::load(&ok, 3, None).is_ok());
        // The same action may overlap freely.
        let mut d = b;
        d.actions = vec![HwAction::Drop];
        let same = PlanSlice {
            target: "t".into(),
            rules: vec![a, d],
        };
        assert!(Tcam::load(&same, 1, None).is_ok());
    }

    #[test]
    fn levels_and_capacity_are_enforced() {
        let a = rule(1, 3, vec![], vec![HwAction::Drop]);
        let slice = PlanSlice {
            target: "t".into(),
            rules: vec![a],
        };
        assert!(matches!(
            Tcam::load(&slice, 3, None),
            Err(TcamError::LevelOutOfRange { level: 3, .. })
        ));
        assert!(matches!(
            Tcam::load(&slice, 32, Some(0)),
            Err(TcamError::Full { .. })
        ));
    }
}
