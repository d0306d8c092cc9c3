//! Target profiles as data: what a target can match and do, and its budget.
//!
//! The built-in `octeon-cn10k` profile is the cnxk NPC with the default MKEX key profile
//! as `shared/reference/octeon-cnxk.md` describes it (DPDK 22.11 `net_cnxk`); `ebpf` is the
//! software pipeline, which can do everything the MAG expresses within its map sizes.

use super::slice::{HwAction, HwMatch, HwRule, PacketField, PortDirection};
use super::{Reason, Unsupported};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The capability field that says rules are created per port (see
/// [`octeon_cn10k_profile`]); the MAG's name of the receiving port.
const IN_PORT: &str = "in_port";

/// Which masks a target accepts on a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskCap {
    /// Only the full mask (exact match).
    Exact,
    /// Prefix masks (including exact).
    Prefix,
    /// Any bit mask.
    Any,
}

/// How a target matches one field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldCap {
    /// The masks accepted.
    pub masks: MaskCap,
    /// When set, only these exact values are matchable (a protocol matched through the
    /// parser's layer type, not through key bits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<BTreeSet<u128>>,
    /// Whether range matches (`lo..=hi`) work without expansion.
    pub ranges: bool,
}

/// A class of action a target may perform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Drop.
    Drop,
    /// Count packets.
    Count,
    /// Tag with an id.
    Mark,
    /// Tag with a flag.
    Flag,
    /// Deliver to a queue.
    Queue,
    /// Spread over queues.
    Rss,
    /// Inline IPsec.
    Security,
    /// Insert a VLAN tag.
    PushVlan,
    /// Remove a VLAN tag.
    PopVlan,
    /// Go on to another table (JUMP / groups).
    Jump,
    /// Rewrite header fields (NAT).
    Rewrite,
    /// Connection tracking.
    Conntrack,
    /// Write metadata that later tables match.
    SetMetadata,
    /// Choose among values by a hash (load balancing to backends).
    Hash,
    /// Tunnel encapsulation or decapsulation.
    Encap,
    /// Send the packet out of a sibling VF of the rule port's PF (`VF`, or `PORT_ID` where
    /// the driver resolves it within the PF, as cnxk in DPDK 22.11 does).
    ForwardSamePf,
    /// Send the packet out of any port of the device, across PFs (`PORT_ID` on cnxk from
    /// DPDK 23.07).
    ForwardAnyPort,
}

impl ActionKind {
    /// The text name.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Drop => "drop",
            ActionKind::Count => "count",
            ActionKind::Mark => "mark",
            ActionKind::Flag => "flag",
            ActionKind::Queue => "queue",
            ActionKind::Rss => "rss",
            ActionKind::Security => "security",
            ActionKind::PushVlan => "push_vlan",
            ActionKind::PopVlan => "pop_vlan",
            ActionKind::Jump => "jump",
            ActionKind::Rewrite => "rewrite",
            ActionKind::Conntrack => "conntrack",
            ActionKind::SetMetadata => "set_metadata",
            ActionKind::Hash => "hash",
            ActionKind::Encap => "encap",
            ActionKind::ForwardSamePf => "forward_same_pf",
            ActionKind::ForwardAnyPort => "forward_any_port",
        }
    }

    /// The class of a hardware action.
    pub fn of(action: &HwAction) -> ActionKind {
        match action {
            HwAction::Drop => ActionKind::Drop,
            HwAction::Count => ActionKind::Count,
            HwAction::Mark { .. } => ActionKind::Mark,
            HwAction::Flag => ActionKind::Flag,
            HwAction::Queue { .. } => ActionKind::Queue,
            HwAction::Rss { .. } => ActionKind::Rss,
            HwAction::Security { .. } => ActionKind::Security,
            HwAction::PushVlan { .. } => ActionKind::PushVlan,
            HwAction::Vf { .. } => ActionKind::ForwardSamePf,
            HwAction::PortId { .. } => ActionKind::ForwardAnyPort,
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a target can match and do. The default can do nothing: every capability must be
/// declared.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Matchable fields by name (MAG field names; metadata fields start with `meta.`).
    pub fields: BTreeMap<String, FieldCap>,
    /// Actions on ingress rules.
    pub ingress_actions: BTreeSet<ActionKind>,
    /// Actions on egress rules.
    pub egress_actions: BTreeSet<ActionKind>,
    /// Priority levels available without reconfiguration (0 means none).
    pub priority_levels: u32,
    /// Priority levels available when the target is configured for the most.
    pub max_priority_levels: u32,
    /// Number of tables (groups) a rule can be placed in; 1 is a single flat table.
    pub tables: u32,
    /// Width of the MARK id in bits (0: no MARK).
    pub mark_bits: u32,
    /// Largest MARK id the target accepts.
    pub max_mark: u32,
    /// Whether counters count bytes as well as packets.
    pub counter_bytes: bool,
}

/// How much of a target there is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Rule entries (after expansion); `None` is "limited by maps" (see `maps`).
    pub entries: Option<u64>,
    /// Entries the platform reserves out of `entries`.
    pub reserved_entries: u64,
    /// Entries the plan leaves to pipecd's connection offload, out of `entries`. When there
    /// are any, the plan also leaves them priority level 0, so that an offloaded
    /// connection's exact entry wins over every policy rule it overlaps.
    pub offload_entries: u64,
    /// Key width of one entry in bits.
    pub key_bits: u32,
    /// Counters.
    pub counters: Option<u64>,
    /// Rules with an RSS action per port.
    pub rss_rules_per_port: Option<u64>,
    /// Map (table) sizes by map name, for software targets.
    pub maps: BTreeMap<String, u64>,
}

/// A target profile: name, capabilities, budget.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// The target name.
    pub name: String,
    /// One line on what it is.
    pub description: String,
    /// What it can do.
    pub caps: Capabilities,
    /// How much of it.
    pub budget: Budget,
}

/// The entries the built-in cnxk profiles leave to connection offload (see
/// [`Budget::offload_entries`]).
pub const OFFLOAD_ENTRIES: u64 = 1024;

impl Profile {
    /// The entries the plan may fill: the table less what the platform reserves and what
    /// is left to connection offload; `None` when maps limit the target instead.
    pub fn plan_entries(&self) -> Option<u64> {
        let b = &self.budget;
        b.entries.map(|e| {
            e.saturating_sub(b.reserved_entries)
                .saturating_sub(b.offload_entries)
        })
    }

    /// The priority levels the plan may use, `first..limit`: every level, or every level
    /// but 0 when entries are left to connection offload, whose exact entries must win
    /// over every policy rule they overlap (a same-level overlap leaves the choice to the
    /// device, and a policy mark would send an offloaded connection back to software).
    pub fn plan_levels(&self) -> std::ops::Range<u32> {
        let limit = self.caps.priority_levels.max(1);
        let first = u32::from(self.budget.offload_entries > 0 && limit > 1);
        first..limit
    }

    /// Whether the target can match `field` with `mask` (a full mask for exact).
    pub fn check_match(&self, m: &HwMatch) -> Result<(), Reason> {
        let name = m.field.name();
        let Some(cap) = self.caps.fields.get(name) else {
            return Err(Reason::FieldNotMatchable {
                field: name.to_string(),
            });
        };
        let mask_ok = match cap.masks {
            MaskCap::Any => true,
            MaskCap::Prefix => m.prefix_len().is_some(),
            MaskCap::Exact => m.mask == m.field.full_mask(),
        };
        if !mask_ok {
            return Err(Reason::MaskNotSupported {
                field: name.to_string(),
                mask: format!("{:#x}", m.mask),
            });
        }
        if let Some(values) = &cap.values {
            if m.mask != m.field.full_mask() || !values.contains(&m.value) {
                return Err(Reason::ValueNotSupported {
                    field: name.to_string(),
                    value: m.field.fmt_value(m.value),
                });
            }
        }
        Ok(())
    }

    /// Whether the target can perform `action` in `direction`.
    pub fn check_action(&self, action: &HwAction, direction: PortDirection) -> Result<(), Reason> {
        let kind = ActionKind::of(action);
        let set = match direction {
            PortDirection::Ingress => &self.caps.ingress_actions,
            PortDirection::Egress => &self.caps.egress_actions,
        };
        if !set.contains(&kind) {
            return Err(Reason::ActionNotSupported {
                action: kind,
                direction,
            });
        }
        if let HwAction::Mark { id } = action {
            if *id > self.caps.max_mark {
                return Err(Reason::ArgumentOutOfRange {
                    detail: format!("mark id {id} > {}", self.caps.max_mark),
                });
            }
        }
        Ok(())
    }

    /// The generic capability check of a rule: fields, masks, actions and priority level
    /// against this profile. Targets add their own device rules on top.
    pub fn check_rule(&self, rule: &HwRule) -> Result<(), Unsupported> {
        let fail = |reason| Unsupported::new(self.name.clone(), reason);
        for m in &rule.matches {
            self.check_match(m).map_err(fail)?;
        }
        for a in &rule.actions {
            self.check_action(a, rule.direction).map_err(fail)?;
        }
        // A profile without per-port rules has one table, on the uplink.
        if rule.port != 0 && !self.caps.fields.contains_key(IN_PORT) {
            return Err(fail(Reason::FieldNotMatchable {
                field: IN_PORT.to_string(),
            }));
        }
        let levels = self.caps.max_priority_levels.max(self.caps.priority_levels);
        if rule.level >= levels {
            return Err(fail(Reason::PriorityLevel {
                level: rule.level,
                levels,
            }));
        }
        Ok(())
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.name, self.description)?;
        writeln!(f, "  match:")?;
        for (name, cap) in &self.caps.fields {
            let masks = match cap.masks {
                MaskCap::Exact => "exact",
                MaskCap::Prefix => "prefix",
                MaskCap::Any => "any mask",
            };
            write!(f, "    {name:<18} {masks}")?;
            if cap.ranges {
                write!(f, ", ranges")?;
            }
            if let Some(values) = &cap.values {
                let v: Vec<String> = values.iter().map(u128::to_string).collect();
                write!(f, ", values {{{}}}", v.join(", "))?;
            }
            writeln!(f)?;
        }
        let names =
            |s: &BTreeSet<ActionKind>| s.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ");
        writeln!(
            f,
            "  ingress actions:  {}",
            names(&self.caps.ingress_actions)
        )?;
        writeln!(
            f,
            "  egress actions:   {}",
            names(&self.caps.egress_actions)
        )?;
        let n = |v: u32| {
            if v == u32::MAX {
                "unlimited".to_string()
            } else {
                v.to_string()
            }
        };
        writeln!(
            f,
            "  priority levels:  {} (up to {})",
            n(self.caps.priority_levels),
            n(self.caps.max_priority_levels)
        )?;
        writeln!(f, "  tables:           {}", n(self.caps.tables))?;
        writeln!(
            f,
            "  mark:             {} bits (max id {:#x})",
            self.caps.mark_bits, self.caps.max_mark
        )?;
        let opt = |v: Option<u64>| v.map_or("maps".to_string(), |v| v.to_string());
        match self.budget.entries {
            Some(e) => writeln!(
                f,
                "  entries:          {e} at {} bits ({} reserved, {} left to connection offload)",
                self.budget.key_bits, self.budget.reserved_entries, self.budget.offload_entries
            )?,
            None => writeln!(f, "  entries:          limited by maps")?,
        }
        writeln!(
            f,
            "  counters:         {} ({})",
            opt(self.budget.counters),
            if self.caps.counter_bytes {
                "packets and bytes"
            } else {
                "packets only"
            }
        )?;
        if let Some(rss) = self.budget.rss_rules_per_port {
            writeln!(f, "  rss rules/port:   {rss}")?;
        }
        for (map, size) in &self.budget.maps {
            writeln!(f, "  map {map:<14} {size}")?;
        }
        Ok(())
    }
}

fn cap(masks: MaskCap) -> FieldCap {
    FieldCap {
        masks,
        values: None,
        ranges: false,
    }
}

/// The `octeon-cn10k` profile: OCTEON 10 NPC through DPDK 22.11 `net_cnxk`, default MKEX.
///
/// Matchable: IPv4 source and destination and TOS with any mask, TCP/UDP ports with any
/// mask, destination MAC, VLAN TCI, and the L4 protocol as a parser layer type only (TCP,
/// UDP, SCTP, ICMP, ESP; no other value and no mask, since the key holds no protocol
/// byte). Not matchable: IPv6 addresses (the default key has only the first 8 bytes of
/// the IPv6 header), ESP SPI, VXLAN VNI, TCP flags, SCTP and ICMP fields, metadata.
/// No ranges, no rewrite, no conntrack, no groups or JUMP. 3 priority levels by default,
/// 32 with `flow_max_priority=32`. 8192 entries at the 224-bit key (221 reserved by the
/// platform), 512 packet counters, 16-bit MARK (ids below 0xFFFE), at most 7 RSS rules per
/// port; egress rules only drop, count and push a VLAN tag.
///
/// A rule is created on one port and matches only what that port receives (`in_port`,
/// exact): ingress policy goes on the network uplink (port 0), egress policy on the
/// sending pod's VF, numbered as the MAG numbers the pod's port (its endpoint). Every port
/// draws on the one SoC-wide MCAM, so the entry budget is one pool for all ports.
pub fn octeon_cn10k_profile() -> Profile {
    let mut fields = BTreeMap::new();
    for f in [
        PacketField::Ipv4Src,
        PacketField::Ipv4Dst,
        PacketField::Ipv4Tos,
        PacketField::L4Sport,
        PacketField::L4Dport,
        PacketField::EthDst,
        PacketField::VlanTci,
    ] {
        fields.insert(f.name().to_string(), cap(MaskCap::Any));
    }
    fields.insert(PacketField::EthType.name().to_string(), cap(MaskCap::Exact));
    // The port a rule is created on: an rte_flow rule belongs to one ethdev port, and the
    // NPC entry matches that port's channel, so "which port" is an exact match and nothing
    // finer.
    fields.insert(IN_PORT.to_string(), cap(MaskCap::Exact));
    fields.insert(
        PacketField::IpProto.name().to_string(),
        FieldCap {
            masks: MaskCap::Exact,
            values: Some([1, 6, 17, 50, 132].into_iter().collect()),
            ranges: false,
        },
    );
    use ActionKind::*;
    Profile {
        name: "octeon-cn10k".to_string(),
        description: "OCTEON 10 NPC flow table (DPDK 22.11 net_cnxk, default MKEX profile)"
            .to_string(),
        caps: Capabilities {
            fields,
            // ForwardSamePf: `VF` and `PORT_ID` on a rule of a pod's VF reach the sibling VFs
            // of the same PF only (DPDK 22.11 roc_npc.c `npc_parse_actions`).
            ingress_actions: [
                Drop,
                Count,
                Mark,
                Flag,
                Queue,
                Rss,
                Security,
                PopVlan,
                ForwardSamePf,
            ]
            .into_iter()
            .collect(),
            egress_actions: [Drop, Count, PushVlan].into_iter().collect(),
            priority_levels: 3,
            max_priority_levels: 32,
            tables: 1,
            mark_bits: 16,
            max_mark: 0xFFFD,
            counter_bytes: false,
        },
        budget: Budget {
            entries: Some(8192),
            reserved_entries: 221,
            // 512 connections of two entries each: as many as the SoC has counters for
            // the original direction, the only activity signal an entry gives (no AGE).
            offload_entries: OFFLOAD_ENTRIES,
            key_bits: 224,
            counters: Some(512),
            rss_rules_per_port: Some(7),
            maps: BTreeMap::new(),
        },
    }
}

/// The name of the profile for DPDK 23.07 and later, where PORT_ID crosses PFs.
pub const OCTEON_CN10K_2307: &str = "octeon-cn10k-dpdk23.07";

/// The `octeon-cn10k-dpdk23.07` profile: the same NPC as [`octeon_cn10k_profile`], driven by
/// DPDK 23.07 or later, where cnxk's `PORT_ID` action sets the target to the destination
/// port's own pf_func (`pf_func = dst_pf_func`) instead of a VF of the rule port's PF. A rule
/// on a pod's SDP VF can then finish a packet on the network uplink (another PF), so
/// pod-to-remote traffic can be finished in hardware too. Everything else (no rewrite, no
/// AGE, packet-only counters, 8192 entries, 512 counters) is unchanged.
pub fn octeon_cn10k_2307_profile() -> Profile {
    let mut p = octeon_cn10k_profile();
    p.name = OCTEON_CN10K_2307.to_string();
    p.description =
        "OCTEON 10 NPC flow table (DPDK 23.07+ net_cnxk: PORT_ID crosses PFs)".to_string();
    p.caps.ingress_actions.insert(ActionKind::ForwardAnyPort);
    p
}

/// The `ebpf` profile: the software pipeline runs everything the MAG expresses; its
/// budget is its map sizes.
pub fn ebpf_profile() -> Profile {
    let mut fields = BTreeMap::new();
    let all = FieldCap {
        masks: MaskCap::Any,
        values: None,
        ranges: true,
    };
    for f in PacketField::ALL {
        fields.insert(f.name().to_string(), all.clone());
    }
    for meta in [
        "in_port",
        "meta.src_identity",
        "meta.dst_identity",
        "meta.endpoint",
        "meta.service",
        "meta.backend",
        "meta.ct_state",
        "meta.verdict",
        "meta.hash",
        "meta.out_port",
        "meta.next_hop",
    ] {
        fields.insert(meta.to_string(), all.clone());
    }
    use ActionKind::*;
    let every: BTreeSet<ActionKind> = [
        Drop,
        Count,
        Mark,
        Flag,
        Queue,
        Rss,
        Security,
        PushVlan,
        PopVlan,
        Jump,
        Rewrite,
        Conntrack,
        SetMetadata,
        Hash,
        Encap,
    ]
    .into_iter()
    .collect();
    Profile {
        name: "ebpf".to_string(),
        description: "the complete software pipeline (tc eBPF on the DPU cores)".to_string(),
        caps: Capabilities {
            fields,
            ingress_actions: every.clone(),
            egress_actions: every,
            priority_levels: u32::MAX,
            max_priority_levels: u32::MAX,
            tables: u32::MAX,
            mark_bits: 32,
            max_mark: u32::MAX,
            counter_bytes: true,
        },
        budget: Budget {
            entries: None,
            reserved_entries: 0,
            offload_entries: 0,
            key_bits: 0,
            counters: None,
            rss_rules_per_port: None,
            maps: [
                ("conntrack", 262_144),
                ("ipcache", 512_000),
                ("policy", 16_384),
                ("services", 65_536),
                ("backends", 65_536),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        },
    }
}

/// Every built-in profile, hardware first (the DPDK 22.11 NPC, then the same NPC under
/// 23.07, which `--target octeon-cn10k-dpdk23.07` selects).
pub fn builtin_profiles() -> Vec<Profile> {
    vec![
        octeon_cn10k_profile(),
        octeon_cn10k_2307_profile(),
        ebpf_profile(),
    ]
}
