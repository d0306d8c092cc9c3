//! What the cnxk driver (DPDK 22.11 `net_cnxk`, default MKEX) accepts, checked on a rule.
//!
//! The checks follow `drivers/net/cnxk/cnxk_flow.c` and `drivers/common/cnxk/roc_npc*.c`
//! as summarised in `shared/reference/octeon-cnxk.md`:
//!
//! - **Items.** Only items in the driver's translation table are emitted. Items missing
//!   from that table (META, TAG, ICMP6, ...) become VOID and are *silently skipped*, so such
//!   a rule would match more than asked; [`Item`] has no variant for them, and
//!   [`item_is_parsed`] is the whitelist that keeps it so. The MARK item must come first.
//! - **Fields.** A mask must lie within the bits the key extracts: IPv4 source,
//!   destination and TOS, TCP/UDP ports, destination MAC, ethertype, VLAN TCI. No IPv6
//!   address, protocol byte, TCP flags, SCTP or ICMP field, ESP SPI or VXLAN VNI; those
//!   items work only without a spec (layer type).
//! - **Attributes.** Group 0 only (the driver ignores groups), no transfer, one direction,
//!   priority below the configured `flow_max_priority`.
//! - **Actions.** At most one fate (DROP, QUEUE, RSS, SECURITY); DROP only with COUNT;
//!   MARK and FLAG exclusive; MARK ids below 0xFFFE; egress only DROP, COUNT and VLAN
//!   insertion; no PASSTHRU, JUMP or VLAN pop on egress.

use crate::rule::{ones, Action, FieldValue, FlowRule, Item, Masked};
use pipec::backend::{ActionKind, PortDirection, Profile, Reason, Unsupported};

/// Whether the driver parses this item (rather than skipping it as VOID).
pub fn item_is_parsed(item: &Item) -> bool {
    // Every variant of `Item` is in `cnxk_flow.c`'s `term[]` table; the match is written
    // out so that adding a variant forces a decision here.
    match item {
        Item::Eth { .. }
        | Item::Vlan { .. }
        | Item::Ipv4 { .. }
        | Item::Ipv6 { .. }
        | Item::Tcp { .. }
        | Item::Udp { .. }
        | Item::Sctp { .. }
        | Item::Icmp { .. }
        | Item::Esp { .. }
        | Item::Vxlan { .. }
        | Item::Mark { .. } => true,
    }
}

fn present<T: FieldValue>(m: &Option<Masked<T>>, width: u32) -> Option<u128> {
    m.as_ref()
        .map(|m| m.mask.to_bits() & ones(width))
        .filter(|mask| *mask != 0)
}

/// Checks one item field against the profile's field capabilities.
fn check_field<T: FieldValue>(
    profile: &Profile,
    name: &str,
    m: &Option<Masked<T>>,
    width: u32,
) -> Result<(), Reason> {
    let Some(mask) = present(m, width) else {
        return Ok(());
    };
    let Some(cap) = profile.caps.fields.get(name) else {
        return Err(Reason::FieldNotMatchable {
            field: name.to_string(),
        });
    };
    if cap.values.is_some() {
        // The field is matched through the parser's layer type only, never as key bits.
        return Err(Reason::FieldNotMatchable {
            field: format!("{name} (as key bits)"),
        });
    }
    let ok = match cap.masks {
        pipec::backend::MaskCap::Any => true,
        pipec::backend::MaskCap::Prefix => {
            let len = mask.count_ones();
            mask == ones(width) & !(ones(width) >> len)
        }
        pipec::backend::MaskCap::Exact => mask == ones(width),
    };
    if ok {
        Ok(())
    } else {
        Err(Reason::MaskNotSupported {
            field: name.to_string(),
            mask: format!("{mask:#x}"),
        })
    }
}

fn check_item(profile: &Profile, item: &Item) -> Result<(), Reason> {
    if !item_is_parsed(item) {
        return Err(Reason::Feature {
            feature: format!("{} item (the driver would skip it)", item.keyword()),
        });
    }
    match item {
        Item::Eth { dst, ether_type } => {
            check_field(profile, "eth.dst", dst, 48)?;
            check_field(profile, "eth.type", ether_type, 16)
        }
        Item::Vlan { tci } => check_field(profile, "vlan.tci", tci, 16),
        Item::Ipv4 {
            src,
            dst,
            tos,
            proto,
        } => {
            check_field(profile, "ipv4.src", src, 32)?;
            check_field(profile, "ipv4.dst", dst, 32)?;
            check_field(profile, "ipv4.tos", tos, 8)?;
            check_field(profile, "ip.proto", proto, 8)
        }
        Item::Ipv6 { src, dst, proto } => {
            check_field(profile, "ipv6.src", src, 128)?;
            check_field(profile, "ipv6.dst", dst, 128)?;
            check_field(profile, "ip.proto", proto, 8)
        }
        Item::Tcp { src, dst, flags } => {
            check_field(profile, "l4.sport", src, 16)?;
            check_field(profile, "l4.dport", dst, 16)?;
            check_field(profile, "tcp.flags", flags, 8)
        }
        Item::Udp { src, dst } => {
            check_field(profile, "l4.sport", src, 16)?;
            check_field(profile, "l4.dport", dst, 16)
        }
        Item::Sctp { src, dst } => {
            // The default key extracts TCP and UDP ports only.
            check_field(profile, "sctp.sport", src, 16)?;
            check_field(profile, "sctp.dport", dst, 16)
        }
        Item::Icmp { icmp_type, code } => {
            check_field(profile, "icmp.type", icmp_type, 8)?;
            check_field(profile, "icmp.code", code, 8)
        }
        Item::Esp { spi } => check_field(profile, "esp.spi", spi, 32),
        Item::Vxlan { vni } => check_field(profile, "vxlan.vni", vni, 24),
        Item::Mark { .. } => Ok(()),
    }
}

/// The profile's class of an rte_flow action (`None`: no class, never supported on cnxk).
fn kind(action: &Action) -> Option<ActionKind> {
    Some(match action {
        Action::Drop => ActionKind::Drop,
        Action::Count { .. } => ActionKind::Count,
        Action::Mark { .. } => ActionKind::Mark,
        Action::Flag => ActionKind::Flag,
        Action::Queue { .. } => ActionKind::Queue,
        Action::Rss { .. } => ActionKind::Rss,
        Action::Security => ActionKind::Security,
        Action::Jump { .. } => ActionKind::Jump,
        Action::OfPushVlan { .. } | Action::OfSetVlanVid { .. } => ActionKind::PushVlan,
        Action::OfPopVlan => ActionKind::PopVlan,
        Action::Vf { .. } => ActionKind::ForwardSamePf,
        Action::PortId { .. } => ActionKind::ForwardAnyPort,
        Action::Passthru => return None,
    })
}

/// Checks a rule against the cnxk driver and `profile`; `levels` is the configured
/// `flow_max_priority`.
pub fn check_rule(profile: &Profile, levels: u32, rule: &FlowRule) -> Result<(), Unsupported> {
    check(profile, levels, rule).map_err(|r| Unsupported::new(profile.name.clone(), r))
}

fn check(profile: &Profile, levels: u32, rule: &FlowRule) -> Result<(), Reason> {
    let a = &rule.attr;
    if a.group != 0 {
        return Err(Reason::Feature {
            feature: "groups (the driver ignores attr.group)".to_string(),
        });
    }
    if a.transfer {
        return Err(Reason::Feature {
            feature: "transfer rules outside port representors".to_string(),
        });
    }
    let direction = match (a.ingress, a.egress) {
        (true, false) => PortDirection::Ingress,
        (false, true) => PortDirection::Egress,
        _ => {
            return Err(Reason::Feature {
                feature: "rules for both or neither direction".to_string(),
            })
        }
    };
    if a.priority >= levels {
        return Err(Reason::PriorityLevel {
            level: a.priority,
            levels,
        });
    }
    for (i, item) in rule.pattern.iter().enumerate() {
        if matches!(item, Item::Mark { .. }) && i != 0 {
            return Err(Reason::Feature {
                feature: "MARK item other than first".to_string(),
            });
        }
        check_item(profile, item)?;
    }
    let set = match direction {
        PortDirection::Ingress => &profile.caps.ingress_actions,
        PortDirection::Egress => &profile.caps.egress_actions,
    };
    let mut fates = 0;
    for action in &rule.actions {
        let Some(k) = kind(action) else {
            return Err(Reason::Feature {
                feature: "PASSTHRU action".to_string(),
            });
        };
        if !set.contains(&k) {
            return Err(Reason::ActionNotSupported {
                action: k,
                direction,
            });
        }
        if matches!(
            action,
            Action::Drop
                | Action::Queue { .. }
                | Action::Rss { .. }
                | Action::Security
                | Action::Vf { .. }
                | Action::PortId { .. }
        ) {
            fates += 1;
        }
        if let Action::Mark { id } = action {
            if *id > profile.caps.max_mark {
                return Err(Reason::ArgumentOutOfRange {
                    detail: format!("mark id {id} > {:#x}", profile.caps.max_mark),
                });
            }
        }
    }
    if fates > 1 {
        return Err(Reason::ActionCombination {
            detail: "more than one fate action (DROP, QUEUE, RSS, SECURITY, VF, PORT_ID)"
                .to_string(),
        });
    }
    let has = |f: fn(&Action) -> bool| rule.actions.iter().any(f);
    if has(|a| matches!(a, Action::Drop))
        && has(|a| !matches!(a, Action::Drop | Action::Count { .. }))
    {
        return Err(Reason::ActionCombination {
            detail: "DROP may only be combined with COUNT".to_string(),
        });
    }
    if has(|a| matches!(a, Action::Mark { .. })) && has(|a| matches!(a, Action::Flag)) {
        return Err(Reason::ActionCombination {
            detail: "MARK and FLAG are mutually exclusive".to_string(),
        });
    }
    Ok(())
}
