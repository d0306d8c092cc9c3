//! Hand-built rule sets for tests and oracles: a cnxk-capable plan slice, and rte_flow
//! rules that use every item, field form and action the code generator can write.

use crate::rule::{Action, Attr, FlowRule, Item, Mac, Masked};
use pipec::backend::{HwAction, HwMatch, HwRule, PacketField, PlanSlice, PortDirection};
use std::net::{Ipv4Addr, Ipv6Addr};

fn hw(
    id: u32,
    direction: PortDirection,
    level: u32,
    matches: Vec<HwMatch>,
    actions: Vec<HwAction>,
    origin: &str,
) -> HwRule {
    let mut matches = matches;
    matches.sort();
    HwRule {
        id,
        port: 0,
        direction,
        level,
        matches,
        actions,
        origin: origin.to_string(),
    }
}

/// A plan slice the `octeon-cn10k` target accepts, in the shape the partitioner makes:
/// allows carry a MARK, denies drop (and count), one egress drop, ESP to inline IPsec.
pub fn cnxk_slice() -> PlanSlice {
    use PacketField::*;
    let v4 = |f, a: [u8; 4], len| HwMatch::prefix(f, u128::from(u32::from_be_bytes(a)), len);
    let rules = vec![
        hw(
            1,
            PortDirection::Ingress,
            0,
            vec![
                v4(Ipv4Src, [10, 0, 1, 0], 24),
                v4(Ipv4Dst, [10, 0, 2, 7], 32),
                HwMatch::exact(IpProto, 6),
                HwMatch::exact(L4Dport, 80),
            ],
            vec![HwAction::Mark { id: 1 }],
            "NetworkPolicy default/allow-web ingress[0]",
        ),
        hw(
            2,
            PortDirection::Ingress,
            1,
            vec![
                v4(Ipv4Dst, [10, 0, 2, 7], 32),
                HwMatch::exact(IpProto, 6),
                HwMatch::ternary(L4Dport, 30000, 0xfff0),
            ],
            vec![HwAction::Count, HwAction::Drop],
            "CiliumNetworkPolicy default/deny-nodeports ingressDeny[0]",
        ),
        hw(
            3,
            PortDirection::Ingress,
            0,
            vec![
                HwMatch::ternary(Ipv4Src, 0x0a00_0005, 0xff00_00ff),
                HwMatch::exact(IpProto, 17),
                HwMatch::exact(L4Dport, 53),
            ],
            vec![HwAction::Mark { id: 2 }, HwAction::Queue { index: 1 }],
            "NetworkPolicy kube-system/dns ingress[0]",
        ),
        hw(
            4,
            PortDirection::Ingress,
            2,
            vec![HwMatch::exact(EthType, 0x0800)],
            vec![HwAction::Drop],
            "builtin:default-deny",
        ),
        hw(
            5,
            PortDirection::Egress,
            0,
            vec![
                v4(Ipv4Dst, [192, 168, 0, 0], 16),
                HwMatch::exact(IpProto, 6),
                HwMatch::exact(L4Dport, 22),
            ],
            vec![HwAction::Drop],
            "AdminNetworkPolicy no-ssh egress[0]",
        ),
        hw(
            6,
            PortDirection::Ingress,
            0,
            vec![v4(Ipv4Dst, [10, 0, 0, 1], 32), HwMatch::exact(IpProto, 50)],
            vec![HwAction::Security { sa: None }],
            "builtin:ipsec-inbound",
        ),
        hw(
            7,
            PortDirection::Ingress,
            0,
            vec![
                HwMatch::exact(EthType, 0x86dd),
                HwMatch::exact(IpProto, 17),
                HwMatch::exact(L4Sport, 4789),
            ],
            vec![HwAction::Rss {
                queues: vec![0, 1, 2, 3],
            }],
            "builtin:vxlan-spread",
        ),
        hw(
            8,
            PortDirection::Ingress,
            1,
            vec![v4(Ipv4Src, [10, 0, 0, 0], 8), HwMatch::exact(IpProto, 1)],
            vec![HwAction::Flag],
            "builtin:icmp",
        ),
        hw(
            9,
            PortDirection::Egress,
            1,
            vec![v4(Ipv4Src, [10, 0, 3, 0], 24)],
            vec![HwAction::PushVlan { vid: 100 }, HwAction::Count],
            "builtin:vlan",
        ),
    ];
    PlanSlice {
        target: "octeon-cn10k".to_string(),
        rules,
    }
}

fn attr(priority: u32, ingress: bool) -> Attr {
    Attr {
        group: 0,
        priority,
        ingress,
        egress: !ingress,
        transfer: false,
    }
}

fn eth() -> Item {
    Item::Eth {
        dst: None,
        ether_type: None,
    }
}

fn ipv4() -> Item {
    Item::Ipv4 {
        src: None,
        dst: None,
        tos: None,
        proto: None,
    }
}

/// rte_flow rules that together use every item, every field and field form (`is`,
/// `prefix`, `mask`), every attribute and every testpmd-expressible action of [`Item`] and
/// [`Action`], whether or not cnxk accepts them: the testpmd oracle parses them all.
pub fn syntax_rules() -> Vec<FlowRule> {
    let a4 = Ipv4Addr::new;
    let a6 = |s: &str| s.parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::UNSPECIFIED);
    vec![
        FlowRule {
            port: 0,
            attr: attr(0, true),
            pattern: vec![
                Item::Eth {
                    dst: Some(Masked::exact(Mac([2, 0, 0, 0, 0, 1]), 48)),
                    ether_type: Some(Masked::exact(0x0800, 16)),
                },
                Item::Vlan {
                    tci: Some(Masked::new(100, 0x0fff)),
                },
                Item::Ipv4 {
                    src: Some(Masked::new(a4(10, 1, 0, 0), a4(255, 255, 0, 0))),
                    dst: Some(Masked::new(a4(10, 0, 0, 5), a4(255, 0, 0, 255))),
                    tos: Some(Masked::exact(4, 8)),
                    proto: Some(Masked::exact(6, 8)),
                },
                Item::Tcp {
                    src: Some(Masked::exact(1000, 16)),
                    dst: Some(Masked::new(30000, 0xfff0)),
                    flags: Some(Masked::new(0x02, 0x12)),
                },
            ],
            actions: vec![Action::Mark { id: 42 }, Action::Queue { index: 1 }],
        },
        FlowRule {
            port: 0,
            attr: attr(2, true),
            pattern: vec![
                eth(),
                Item::Ipv6 {
                    src: Some(Masked::new(a6("fd00::"), a6("ff00::"))),
                    dst: Some(Masked::exact(a6("fd00::1"), 128)),
                    proto: Some(Masked::exact(132, 8)),
                },
                Item::Sctp {
                    src: Some(Masked::exact(9, 16)),
                    dst: Some(Masked::new(36412, 0xfffc)),
                },
            ],
            actions: vec![Action::Count { id: None }, Action::Drop],
        },
        FlowRule {
            port: 0,
            attr: attr(31, true),
            pattern: vec![
                eth(),
                ipv4(),
                Item::Udp {
                    src: Some(Masked::exact(4789, 16)),
                    dst: Some(Masked::new(4789, 0xffff)),
                },
                Item::Vxlan {
                    vni: Some(Masked::exact(42, 24)),
                },
            ],
            actions: vec![Action::Rss {
                queues: vec![0, 1, 2, 3],
            }],
        },
        FlowRule {
            port: 0,
            attr: attr(1, true),
            pattern: vec![
                eth(),
                ipv4(),
                Item::Icmp {
                    icmp_type: Some(Masked::exact(8, 8)),
                    code: Some(Masked::new(0, 0xf0)),
                },
            ],
            actions: vec![Action::Flag, Action::Count { id: Some(7) }],
        },
        FlowRule {
            port: 0,
            attr: attr(0, true),
            pattern: vec![
                eth(),
                ipv4(),
                Item::Esp {
                    spi: Some(Masked::exact(5, 32)),
                },
            ],
            actions: vec![Action::Passthru],
        },
        FlowRule {
            port: 0,
            attr: Attr {
                group: 1,
                ..attr(0, true)
            },
            pattern: vec![eth(), ipv4(), Item::Esp { spi: None }],
            actions: vec![Action::Jump { group: 2 }],
        },
        FlowRule {
            port: 0,
            attr: attr(0, true),
            pattern: vec![Item::Mark {
                id: Some(Masked::exact(1, 32)),
            }],
            actions: vec![Action::Queue { index: 0 }],
        },
        FlowRule {
            port: 0,
            attr: attr(0, true),
            pattern: vec![
                eth(),
                Item::Vlan { tci: None },
                ipv4(),
                Item::Udp {
                    src: None,
                    dst: None,
                },
            ],
            actions: vec![Action::OfPopVlan],
        },
        FlowRule {
            port: 0,
            attr: attr(1, false),
            pattern: vec![
                eth(),
                ipv4(),
                Item::Tcp {
                    src: None,
                    dst: Some(Masked::exact(22, 16)),
                    flags: None,
                },
            ],
            actions: vec![
                Action::OfPushVlan { ethertype: 0x8100 },
                Action::OfSetVlanVid { vid: 100 },
                Action::Count { id: None },
            ],
        },
        FlowRule {
            port: 0,
            attr: Attr {
                transfer: true,
                ingress: false,
                egress: false,
                ..Attr::default()
            },
            pattern: vec![eth()],
            actions: vec![Action::Drop],
        },
        // Connection offload: a pod's VF finishes a connection on a sibling VF (22.11), or
        // on another port (PORT_ID, across PFs from 23.07), counting its packets.
        FlowRule {
            port: 0,
            attr: attr(0, true),
            pattern: vec![eth(), ipv4()],
            actions: vec![Action::Count { id: None }, Action::Vf { id: 1 }],
        },
        FlowRule {
            port: 0,
            attr: attr(0, true),
            pattern: vec![eth(), ipv4()],
            actions: vec![Action::PortId { id: 0 }],
        },
    ]
}
