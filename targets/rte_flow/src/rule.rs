//! rte_flow rules as typed data: attributes, pattern items with spec and mask, actions.
//!
//! The types mirror DPDK 22.11's `lib/ethdev/rte_flow.h` for the items and actions pipec
//! emits; each item field is optional (absent = not matched, mask zero) and carries its
//! spec and mask. Only items the cnxk driver really parses exist here, so no rule can
//! carry an item the driver would silently skip (see the `cnxk` module).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A value of an item field: how it converts to bits and how testpmd writes it.
pub trait FieldValue: Copy + PartialEq {
    /// The value as an integer (network bit order: the first byte is the most significant).
    fn to_bits(self) -> u128;
    /// The value from an integer.
    fn from_bits(bits: u128) -> Self;
    /// testpmd's text for a spec value.
    fn spec_text(self) -> String;
    /// testpmd's text for a mask value.
    fn mask_text(self) -> String;
}

macro_rules! int_value {
    ($t:ty) => {
        impl FieldValue for $t {
            fn to_bits(self) -> u128 {
                u128::from(self)
            }
            fn from_bits(bits: u128) -> Self {
                bits as $t
            }
            fn spec_text(self) -> String {
                self.to_string()
            }
            fn mask_text(self) -> String {
                format!("{:#x}", self)
            }
        }
    };
}
int_value!(u8);
int_value!(u16);
int_value!(u32);

impl FieldValue for Ipv4Addr {
    fn to_bits(self) -> u128 {
        u128::from(u32::from(self))
    }
    fn from_bits(bits: u128) -> Self {
        Ipv4Addr::from(bits as u32)
    }
    fn spec_text(self) -> String {
        self.to_string()
    }
    fn mask_text(self) -> String {
        self.to_string()
    }
}

impl FieldValue for Ipv6Addr {
    fn to_bits(self) -> u128 {
        u128::from(self)
    }
    fn from_bits(bits: u128) -> Self {
        Ipv6Addr::from(bits)
    }
    fn spec_text(self) -> String {
        self.to_string()
    }
    fn mask_text(self) -> String {
        self.to_string()
    }
}

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(serde::de::Error::custom("a MAC address has 6 bytes"));
        }
        for (o, p) in out.iter_mut().zip(parts) {
            *o = u8::from_str_radix(p, 16).map_err(serde::de::Error::custom)?;
        }
        Ok(Mac(out))
    }
}

impl FieldValue for Mac {
    fn to_bits(self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |acc, b| acc << 8 | u128::from(*b))
    }
    fn from_bits(bits: u128) -> Self {
        let mut out = [0u8; 6];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (bits >> (8 * (5 - i))) as u8;
        }
        Mac(out)
    }
    fn spec_text(self) -> String {
        self.to_string()
    }
    fn mask_text(self) -> String {
        self.to_string()
    }
}

/// A matched item field: `packet & mask == spec` (spec has no bits outside the mask).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Masked<T> {
    /// The value.
    pub spec: T,
    /// The mask.
    pub mask: T,
}

impl<T: FieldValue> Masked<T> {
    /// An exact match of a field `width` bits wide.
    pub fn exact(spec: T, width: u32) -> Masked<T> {
        Masked {
            spec,
            mask: T::from_bits(ones(width)),
        }
    }

    /// A value and mask; the value is masked.
    pub fn new(spec: T, mask: T) -> Masked<T> {
        Masked {
            spec: T::from_bits(spec.to_bits() & mask.to_bits()),
            mask,
        }
    }
}

/// The all-ones value of `width` bits.
pub fn ones(width: u32) -> u128 {
    if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

/// A pattern item (`struct rte_flow_item`), with the fields pipec emits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    /// `RTE_FLOW_ITEM_TYPE_ETH`.
    Eth {
        /// Destination MAC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dst: Option<Masked<Mac>>,
        /// Ethertype.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ether_type: Option<Masked<u16>>,
    },
    /// `RTE_FLOW_ITEM_TYPE_VLAN`.
    Vlan {
        /// Tag control information.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tci: Option<Masked<u16>>,
    },
    /// `RTE_FLOW_ITEM_TYPE_IPV4`.
    Ipv4 {
        /// Source address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        src: Option<Masked<Ipv4Addr>>,
        /// Destination address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dst: Option<Masked<Ipv4Addr>>,
        /// Type of service.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tos: Option<Masked<u8>>,
        /// Protocol byte (not in the cnxk default key: use the L4 item instead).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proto: Option<Masked<u8>>,
    },
    /// `RTE_FLOW_ITEM_TYPE_IPV6`.
    Ipv6 {
        /// Source address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        src: Option<Masked<Ipv6Addr>>,
        /// Destination address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dst: Option<Masked<Ipv6Addr>>,
        /// Next header.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proto: Option<Masked<u8>>,
    },
    /// `RTE_FLOW_ITEM_TYPE_TCP`.
    Tcp {
        /// Source port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        src: Option<Masked<u16>>,
        /// Destination port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dst: Option<Masked<u16>>,
        /// Flags.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flags: Option<Masked<u8>>,
    },
    /// `RTE_FLOW_ITEM_TYPE_UDP`.
    Udp {
        /// Source port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        src: Option<Masked<u16>>,
        /// Destination port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dst: Option<Masked<u16>>,
    },
    /// `RTE_FLOW_ITEM_TYPE_SCTP`.
    Sctp {
        /// Source port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        src: Option<Masked<u16>>,
        /// Destination port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dst: Option<Masked<u16>>,
    },
    /// `RTE_FLOW_ITEM_TYPE_ICMP`.
    Icmp {
        /// ICMP type.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        icmp_type: Option<Masked<u8>>,
        /// ICMP code.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<Masked<u8>>,
    },
    /// `RTE_FLOW_ITEM_TYPE_ESP`.
    Esp {
        /// Security parameter index.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spi: Option<Masked<u32>>,
    },
    /// `RTE_FLOW_ITEM_TYPE_VXLAN`.
    Vxlan {
        /// VXLAN network identifier (24 bits).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vni: Option<Masked<u32>>,
    },
    /// `RTE_FLOW_ITEM_TYPE_MARK`: the mark of a second-pass packet (after inline IPsec).
    Mark {
        /// The mark id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Masked<u32>>,
    },
}

impl Item {
    /// The item's testpmd keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Item::Eth { .. } => "eth",
            Item::Vlan { .. } => "vlan",
            Item::Ipv4 { .. } => "ipv4",
            Item::Ipv6 { .. } => "ipv6",
            Item::Tcp { .. } => "tcp",
            Item::Udp { .. } => "udp",
            Item::Sctp { .. } => "sctp",
            Item::Icmp { .. } => "icmp",
            Item::Esp { .. } => "esp",
            Item::Vxlan { .. } => "vxlan",
            Item::Mark { .. } => "mark",
        }
    }
}

/// An action (`struct rte_flow_action`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// `RTE_FLOW_ACTION_TYPE_DROP`.
    Drop,
    /// `RTE_FLOW_ACTION_TYPE_COUNT`, with an optional shared counter id.
    Count {
        /// The counter id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u32>,
    },
    /// `RTE_FLOW_ACTION_TYPE_MARK`.
    Mark {
        /// The mark id.
        id: u32,
    },
    /// `RTE_FLOW_ACTION_TYPE_FLAG`.
    Flag,
    /// `RTE_FLOW_ACTION_TYPE_QUEUE`.
    Queue {
        /// The queue index.
        index: u16,
    },
    /// `RTE_FLOW_ACTION_TYPE_RSS` with the port's default hash.
    Rss {
        /// The queues.
        queues: Vec<u16>,
    },
    /// `RTE_FLOW_ACTION_TYPE_PASSTHRU`.
    Passthru,
    /// `RTE_FLOW_ACTION_TYPE_JUMP`.
    Jump {
        /// The group.
        group: u32,
    },
    /// `RTE_FLOW_ACTION_TYPE_SECURITY` (inline IPsec; the session comes from the runtime).
    Security,
    /// `RTE_FLOW_ACTION_TYPE_OF_PUSH_VLAN`.
    OfPushVlan {
        /// The tag's ethertype.
        ethertype: u16,
    },
    /// `RTE_FLOW_ACTION_TYPE_OF_SET_VLAN_VID`.
    OfSetVlanVid {
        /// The VLAN id.
        vid: u16,
    },
    /// `RTE_FLOW_ACTION_TYPE_OF_POP_VLAN`.
    OfPopVlan,
    /// `RTE_FLOW_ACTION_TYPE_VF`: send out of VF `id` of the rule port's PF.
    Vf {
        /// The VF index.
        id: u16,
    },
    /// `RTE_FLOW_ACTION_TYPE_PORT_ID`: send out of ethdev port `id`.
    PortId {
        /// The ethdev port id.
        id: u16,
    },
}

impl Action {
    /// The action's testpmd keyword (`None`: testpmd has no token for it).
    pub fn keyword(&self) -> Option<&'static str> {
        Some(match self {
            Action::Drop => "drop",
            Action::Count { .. } => "count",
            Action::Mark { .. } => "mark",
            Action::Flag => "flag",
            Action::Queue { .. } => "queue",
            Action::Rss { .. } => "rss",
            Action::Passthru => "passthru",
            Action::Jump { .. } => "jump",
            Action::Security => return None,
            Action::OfPushVlan { .. } => "of_push_vlan",
            Action::OfSetVlanVid { .. } => "of_set_vlan_vid",
            Action::OfPopVlan => "of_pop_vlan",
            Action::Vf { .. } => "vf",
            Action::PortId { .. } => "port_id",
        })
    }
}

/// Flow attributes (`struct rte_flow_attr`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attr {
    /// The group (cnxk ignores it; pipec emits 0 for cnxk).
    pub group: u32,
    /// The priority level; 0 is the highest.
    pub priority: u32,
    /// Applies to received traffic.
    pub ingress: bool,
    /// Applies to sent traffic.
    pub egress: bool,
    /// Applies in the switch domain.
    pub transfer: bool,
}

/// One rte_flow rule on one port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowRule {
    /// The ethdev port id.
    pub port: u16,
    /// Attributes.
    pub attr: Attr,
    /// Pattern items, outermost first (the `END` item is implied).
    pub pattern: Vec<Item>,
    /// Actions, in order (the `END` action is implied).
    pub actions: Vec<Action>,
}
