//! The plan slice: what the partitioner hands one hardware target.
//!
//! A [`PlanSlice`] is a flat list of ternary rules ([`HwRule`]) over packet header fields,
//! each with a priority level (0 is the highest), a direction and a short action list.
//! Ranges are already prefix-expanded and identities already expanded to addresses, so a
//! backend maps each rule to one device entry. A field a rule does not name is a wildcard;
//! a rule that names a field also requires the packet to have that header (a TCP port
//! match implies "is TCP"), which is how the NPC's layer-type match behaves.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// A packet header field a hardware rule can name. Names equal the MAG's field names where
/// the MAG has the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PacketField {
    /// Ethernet destination MAC (48 bits).
    EthDst,
    /// Ethertype.
    EthType,
    /// VLAN tag control information.
    VlanTci,
    /// IPv4 source address.
    Ipv4Src,
    /// IPv4 destination address.
    Ipv4Dst,
    /// IPv4 type of service.
    Ipv4Tos,
    /// IPv6 source address.
    Ipv6Src,
    /// IPv6 destination address.
    Ipv6Dst,
    /// IP protocol (IPv4 protocol / IPv6 next header).
    IpProto,
    /// TCP, UDP or SCTP source port.
    L4Sport,
    /// TCP, UDP or SCTP destination port.
    L4Dport,
    /// TCP flags.
    TcpFlags,
    /// ICMP type.
    IcmpType,
    /// ICMP code.
    IcmpCode,
    /// ESP security parameter index.
    EspSpi,
    /// VXLAN network identifier.
    VxlanVni,
    /// The mark of a packet coming back from inline IPsec (second pass).
    Mark,
}

impl PacketField {
    /// Every field, in order.
    pub const ALL: [PacketField; 17] = [
        PacketField::EthDst,
        PacketField::EthType,
        PacketField::VlanTci,
        PacketField::Ipv4Src,
        PacketField::Ipv4Dst,
        PacketField::Ipv4Tos,
        PacketField::Ipv6Src,
        PacketField::Ipv6Dst,
        PacketField::IpProto,
        PacketField::L4Sport,
        PacketField::L4Dport,
        PacketField::TcpFlags,
        PacketField::IcmpType,
        PacketField::IcmpCode,
        PacketField::EspSpi,
        PacketField::VxlanVni,
        PacketField::Mark,
    ];

    /// The field's name, as used in profiles (equal to the MAG field name).
    pub fn name(self) -> &'static str {
        match self {
            PacketField::EthDst => "eth.dst",
            PacketField::EthType => "eth.type",
            PacketField::VlanTci => "vlan.tci",
            PacketField::Ipv4Src => "ipv4.src",
            PacketField::Ipv4Dst => "ipv4.dst",
            PacketField::Ipv4Tos => "ipv4.tos",
            PacketField::Ipv6Src => "ipv6.src",
            PacketField::Ipv6Dst => "ipv6.dst",
            PacketField::IpProto => "ip.proto",
            PacketField::L4Sport => "l4.sport",
            PacketField::L4Dport => "l4.dport",
            PacketField::TcpFlags => "tcp.flags",
            PacketField::IcmpType => "icmp.type",
            PacketField::IcmpCode => "icmp.code",
            PacketField::EspSpi => "esp.spi",
            PacketField::VxlanVni => "vxlan.vni",
            PacketField::Mark => "meta.mark",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<PacketField> {
        PacketField::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Width in bits.
    pub fn width(self) -> u32 {
        match self {
            PacketField::EthDst => 48,
            PacketField::EthType
            | PacketField::VlanTci
            | PacketField::L4Sport
            | PacketField::L4Dport => 16,
            PacketField::Ipv4Src
            | PacketField::Ipv4Dst
            | PacketField::EspSpi
            | PacketField::Mark => 32,
            PacketField::Ipv6Src | PacketField::Ipv6Dst => 128,
            PacketField::VxlanVni => 24,
            PacketField::Ipv4Tos
            | PacketField::IpProto
            | PacketField::TcpFlags
            | PacketField::IcmpType
            | PacketField::IcmpCode => 8,
        }
    }

    /// The all-ones mask of the field.
    pub fn full_mask(self) -> u128 {
        if self.width() == 128 {
            u128::MAX
        } else {
            (1u128 << self.width()) - 1
        }
    }

    /// Writes a value of this field.
    pub fn fmt_value(self, v: u128) -> String {
        match self {
            PacketField::Ipv4Src | PacketField::Ipv4Dst => Ipv4Addr::from(v as u32).to_string(),
            PacketField::Ipv6Src | PacketField::Ipv6Dst => std::net::Ipv6Addr::from(v).to_string(),
            PacketField::EthType | PacketField::TcpFlags | PacketField::VlanTci => {
                format!("{v:#06x}")
            }
            _ => v.to_string(),
        }
    }
}

impl fmt::Display for PacketField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `packet.field & mask == value`; `value` has no bits outside `mask`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HwMatch {
    /// The field.
    pub field: PacketField,
    /// The value (bits outside the mask are zero).
    pub value: u128,
    /// The mask.
    pub mask: u128,
}

impl HwMatch {
    /// An exact match.
    pub fn exact(field: PacketField, value: u128) -> HwMatch {
        HwMatch {
            field,
            value: value & field.full_mask(),
            mask: field.full_mask(),
        }
    }

    /// A match of the top `len` bits.
    pub fn prefix(field: PacketField, value: u128, len: u32) -> HwMatch {
        let full = field.full_mask();
        let mask = if len == 0 {
            0
        } else if len >= field.width() {
            full
        } else {
            full & !(full >> len)
        };
        HwMatch {
            field,
            value: value & mask,
            mask,
        }
    }

    /// A value and mask (the value is masked).
    pub fn ternary(field: PacketField, value: u128, mask: u128) -> HwMatch {
        let mask = mask & field.full_mask();
        HwMatch {
            field,
            value: value & mask,
            mask,
        }
    }

    /// The prefix length, when the mask is a prefix mask.
    pub fn prefix_len(&self) -> Option<u32> {
        let w = self.field.width();
        let full = self.field.full_mask();
        let ones = self.mask.count_ones();
        let expect = if ones == 0 { 0 } else { full & !(full >> ones) };
        (ones <= w && self.mask == expect).then_some(ones)
    }

    /// Whether a value of the field matches.
    pub fn matches(&self, v: u128) -> bool {
        v & self.mask == self.value
    }
}

/// Which way a rule sees traffic, from the DPU port's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortDirection {
    /// Received on the port.
    Ingress,
    /// Sent on the port.
    Egress,
}

impl fmt::Display for PortDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortDirection::Ingress => "ingress",
            PortDirection::Egress => "egress",
        })
    }
}

/// A hardware action, target-neutral.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HwAction {
    /// Drop the packet.
    Drop,
    /// Count matching packets.
    Count,
    /// Tag the packet with an id the software path reads (what hardware learnt).
    Mark {
        /// The id.
        id: u32,
    },
    /// Tag the packet with a flag (no id).
    Flag,
    /// Deliver to one receive queue.
    Queue {
        /// The queue index.
        index: u16,
    },
    /// Spread over receive queues by hash.
    Rss {
        /// The queues.
        queues: Vec<u16>,
    },
    /// Hand ESP to inline IPsec (the SA is found by SPI or by a custom SA action).
    Security {
        /// The SA index the rule selects, if it selects one.
        sa: Option<u32>,
    },
    /// Insert a VLAN tag (egress).
    PushVlan {
        /// The VLAN id.
        vid: u16,
    },
    /// Finish the packet in hardware: send it out of VF `vf` of the PF that owns the
    /// rule's port (rte_flow `vf id N`). In DPDK 22.11 `npc_parse_actions` builds the target
    /// as the rule port's PF bits (`pf_func & 0xfc00`) OR `vf + 1`, so a rule on a pod's VF
    /// reaches a sibling VF (another pod of the node) but never another PF.
    Vf {
        /// The VF index within the rule port's PF.
        vf: u16,
    },
    /// Finish the packet in hardware: send it out of ethdev port `port` (rte_flow
    /// `port_id id N`). In 22.11 cnxk resolves it like `Vf` (same PF only); from 23.07 the
    /// target's own pf_func is used, so it may cross PFs (pod VF to network uplink).
    PortId {
        /// The ethdev port id of the destination.
        port: u16,
    },
}

impl HwAction {
    /// The port or VF a forwarding action finishes the packet on, if it is one.
    pub fn forwards(&self) -> bool {
        matches!(self, HwAction::Vf { .. } | HwAction::PortId { .. })
    }
}

/// One ternary hardware rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HwRule {
    /// The rule's id, unique in the slice; stable across compilations of equal inputs.
    pub id: u32,
    /// The device port the rule is for.
    pub port: u16,
    /// Which way it sees traffic.
    pub direction: PortDirection,
    /// The priority level: 0 is the highest.
    pub level: u32,
    /// The matches, at most one per field, sorted by field.
    pub matches: Vec<HwMatch>,
    /// The actions, in order.
    pub actions: Vec<HwAction>,
    /// Where the rule came from (MAG entry and source rule), for comments and explain.
    pub origin: String,
}

/// What a device holds of a [`HwRule`]: all but its id and its origin text, borrowed
/// from the rule. Two rules with equal content are one rule to the device.
///
/// The id and the origin are left out because they move while the rule stays: the origin
/// names the MAG entry by its place in its table, which changes whenever an entry before
/// it comes or goes (a pod added or deleted), and ids are numbered in slice order. Code
/// that asks whether a rule is one it has seen (the partitioner's re-plan, a backend's
/// compile memo) compares this. Non-exhaustive: a field the device sees that `HwRule`
/// gains joins it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RuleContent<'r> {
    /// The device port.
    pub port: u16,
    /// Which way it sees traffic.
    pub direction: PortDirection,
    /// The priority level.
    pub level: u32,
    /// The matches.
    pub matches: &'r [HwMatch],
    /// The actions.
    pub actions: &'r [HwAction],
}

impl HwRule {
    /// What the device holds of this rule ([`RuleContent`]).
    pub fn content(&self) -> RuleContent<'_> {
        RuleContent {
            port: self.port,
            direction: self.direction,
            level: self.level,
            matches: &self.matches,
            actions: &self.actions,
        }
    }

    /// A hash of [`HwRule::content`], computed in place: for finding a rule among
    /// thousands by its content without an owned copy of its matches and actions. The
    /// same within one build of pipec; not stable across builds, so never stored.
    pub fn content_hash(&self) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = crate::util::FxHasher::default();
        self.content().hash(&mut h);
        h.finish()
    }

    /// The match on `field`, if any.
    pub fn get(&self, field: PacketField) -> Option<&HwMatch> {
        self.matches.iter().find(|m| m.field == field)
    }

    /// Whether a packet (header field values; a missing field is a missing header)
    /// matches the rule.
    pub fn matches_packet(&self, packet: &BTreeMap<PacketField, u128>) -> bool {
        self.matches
            .iter()
            .all(|m| packet.get(&m.field).is_some_and(|v| m.matches(*v)))
    }

    /// Whether some packet can match both rules: every field named by both has compatible
    /// values under both masks. (A field named by one only is always satisfiable.)
    pub fn overlaps(&self, other: &HwRule) -> bool {
        if self.port != other.port || self.direction != other.direction {
            return false;
        }
        self.matches.iter().all(|a| match other.get(a.field) {
            Some(b) => (a.value ^ b.value) & a.mask & b.mask == 0,
            None => true,
        })
    }
}

/// The rules the partitioner placed on one target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSlice {
    /// The target's name.
    pub target: String,
    /// The rules, in id order.
    pub rules: Vec<HwRule>,
}
