//! Lowering: one plan-slice rule ([`HwRule`]) to one rte_flow rule ([`FlowRule`]).
//!
//! The pattern is built outermost first: `mark` (second-pass packets), `eth`, `vlan`, the
//! L3 item chosen by the address family, then the L4 item chosen by `ip.proto`, then
//! `vxlan` inside UDP. The protocol is expressed by the presence of the L4 item (the
//! parser's layer type), never by the IP protocol byte, which the cnxk key does not hold.

use crate::rule::{Action, Attr, FlowRule, Item, Mac, Masked};
use pipec::backend::{HwAction, HwMatch, HwRule, PacketField, PortDirection, Reason};
use std::net::{Ipv4Addr, Ipv6Addr};

const ETH_IPV4: u128 = 0x0800;
const ETH_IPV6: u128 = 0x86dd;

fn masked<T: crate::rule::FieldValue>(m: Option<&HwMatch>) -> Option<Masked<T>> {
    m.map(|m| Masked {
        spec: T::from_bits(m.value),
        mask: T::from_bits(m.mask),
    })
}

/// Lowers one rule; fails when the rule cannot be written as one rte_flow pattern.
pub fn lower_rule(rule: &HwRule) -> Result<FlowRule, Reason> {
    let get = |f| rule.get(f);
    let bad = |detail: &str| {
        Err(Reason::Shape {
            detail: detail.to_string(),
        })
    };
    let mut pattern = Vec::new();
    if let Some(m) = get(PacketField::Mark) {
        pattern.push(Item::Mark {
            id: masked(Some(m)),
        });
    }
    let ether_type = get(PacketField::EthType);
    let v4 = [
        PacketField::Ipv4Src,
        PacketField::Ipv4Dst,
        PacketField::Ipv4Tos,
    ]
    .iter()
    .any(|f| get(*f).is_some())
        || ether_type.is_some_and(|m| m.value == ETH_IPV4 && m.mask == 0xffff);
    let v6 = [PacketField::Ipv6Src, PacketField::Ipv6Dst]
        .iter()
        .any(|f| get(*f).is_some())
        || ether_type.is_some_and(|m| m.value == ETH_IPV6 && m.mask == 0xffff);
    if v4 && v6 {
        return bad("IPv4 and IPv6 fields in one rule");
    }
    // The ethertype is implied by the L3 item, so it is written only without one.
    pattern.push(Item::Eth {
        dst: masked::<Mac>(get(PacketField::EthDst)),
        ether_type: if v4 || v6 { None } else { masked(ether_type) },
    });
    if let Some(m) = get(PacketField::VlanTci) {
        pattern.push(Item::Vlan {
            tci: masked(Some(m)),
        });
    }
    let proto = get(PacketField::IpProto);
    let l4_fields = [
        PacketField::L4Sport,
        PacketField::L4Dport,
        PacketField::TcpFlags,
        PacketField::IcmpType,
        PacketField::IcmpCode,
        PacketField::EspSpi,
        PacketField::VxlanVni,
    ];
    let needs_l3 = proto.is_some() || l4_fields.iter().any(|f| get(*f).is_some());
    if needs_l3 && !v4 && !v6 {
        return bad("a transport match without an address family (split the rule by family)");
    }
    if v4 {
        pattern.push(Item::Ipv4 {
            src: masked::<Ipv4Addr>(get(PacketField::Ipv4Src)),
            dst: masked::<Ipv4Addr>(get(PacketField::Ipv4Dst)),
            tos: masked(get(PacketField::Ipv4Tos)),
            proto: None,
        });
    } else if v6 {
        pattern.push(Item::Ipv6 {
            src: masked::<Ipv6Addr>(get(PacketField::Ipv6Src)),
            dst: masked::<Ipv6Addr>(get(PacketField::Ipv6Dst)),
            proto: None,
        });
    }
    let proto = match proto {
        Some(m) if m.mask == 0xff => Some(m.value),
        Some(_) => return bad("a masked IP protocol"),
        None if get(PacketField::VxlanVni).is_some() => Some(17),
        None if get(PacketField::EspSpi).is_some() => Some(50),
        None if get(PacketField::TcpFlags).is_some() => Some(6),
        None if get(PacketField::IcmpType).is_some() || get(PacketField::IcmpCode).is_some() => {
            Some(1)
        }
        None if get(PacketField::L4Sport).is_some() || get(PacketField::L4Dport).is_some() => {
            return bad("ports without a protocol (split the rule by protocol)")
        }
        None => None,
    };
    let sport = masked::<u16>(get(PacketField::L4Sport));
    let dport = masked::<u16>(get(PacketField::L4Dport));
    let ports = sport.is_some() || dport.is_some();
    let only = |allowed: &[PacketField]| {
        l4_fields
            .iter()
            .filter(|f| !allowed.contains(f))
            .all(|f| get(*f).is_none())
    };
    match proto {
        None => {}
        Some(6)
            if only(&[
                PacketField::L4Sport,
                PacketField::L4Dport,
                PacketField::TcpFlags,
            ]) =>
        {
            pattern.push(Item::Tcp {
                src: sport,
                dst: dport,
                flags: masked(get(PacketField::TcpFlags)),
            })
        }
        Some(17)
            if only(&[
                PacketField::L4Sport,
                PacketField::L4Dport,
                PacketField::VxlanVni,
            ]) =>
        {
            pattern.push(Item::Udp {
                src: sport,
                dst: dport,
            });
            if let Some(m) = get(PacketField::VxlanVni) {
                pattern.push(Item::Vxlan {
                    vni: masked(Some(m)),
                });
            }
        }
        Some(132) if only(&[PacketField::L4Sport, PacketField::L4Dport]) => {
            pattern.push(Item::Sctp {
                src: sport,
                dst: dport,
            })
        }
        Some(1) if v4 && only(&[PacketField::IcmpType, PacketField::IcmpCode]) => {
            pattern.push(Item::Icmp {
                icmp_type: masked(get(PacketField::IcmpType)),
                code: masked(get(PacketField::IcmpCode)),
            })
        }
        Some(50) if only(&[PacketField::EspSpi]) => pattern.push(Item::Esp {
            spi: masked(get(PacketField::EspSpi)),
        }),
        Some(p) if !ports => {
            // Another protocol: only the protocol byte can say it.
            if v4 {
                if let Some(Item::Ipv4 { proto, .. }) = pattern.last_mut() {
                    *proto = Some(Masked::exact(p as u8, 8));
                }
            } else if let Some(Item::Ipv6 { proto, .. }) = pattern.last_mut() {
                *proto = Some(Masked::exact(p as u8, 8));
            }
        }
        Some(p) => return bad(&format!("fields that protocol {p} does not have")),
    }
    let actions = rule
        .actions
        .iter()
        .flat_map(|a| match a {
            HwAction::Drop => vec![Action::Drop],
            HwAction::Count => vec![Action::Count { id: None }],
            HwAction::Mark { id } => vec![Action::Mark { id: *id }],
            HwAction::Flag => vec![Action::Flag],
            HwAction::Queue { index } => vec![Action::Queue { index: *index }],
            HwAction::Rss { queues } => vec![Action::Rss {
                queues: queues.clone(),
            }],
            HwAction::Security { .. } => vec![Action::Security],
            HwAction::Vf { vf } => vec![Action::Vf { id: *vf }],
            HwAction::PortId { port } => vec![Action::PortId { id: *port }],
            HwAction::PushVlan { vid } => vec![
                Action::OfPushVlan { ethertype: 0x8100 },
                Action::OfSetVlanVid { vid: *vid },
            ],
        })
        .collect();
    Ok(FlowRule {
        port: rule.port,
        attr: Attr {
            group: 0,
            priority: rule.level,
            ingress: rule.direction == PortDirection::Ingress,
            egress: rule.direction == PortDirection::Egress,
            transfer: false,
        },
        pattern,
        actions,
    })
}
