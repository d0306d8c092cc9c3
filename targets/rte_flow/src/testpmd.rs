//! `dpdk-testpmd` `flow create` text, per DPDK 22.11's `app/test-pmd/cmdline_flow.c`.
//!
//! Grammar: `flow create PORT [group G] priority P ingress|egress|transfer pattern ITEM
//! [/ ITEM]... / end actions ACTION [/ ACTION]... / end`. A field is written `F is V`
//! (full mask), `F spec V F prefix N` (address prefixes) or `F spec V F mask M`. Checked
//! against Debian's testpmd 22.11.11 by the oracle test: every line pipec emits must parse
//! and reach the PMD.
//!
//! Two limits of testpmd itself: a command line holds at most 511 characters (the
//! cmdline library's `RDLINE_BUF_SIZE` of 512, newline included), and there is no token
//! for the SECURITY action, so inline-IPsec steering rules go through the C API only.

use crate::rule::{ones, Action, Attr, FieldValue, FlowRule, Item, Masked};
use std::fmt::Write as _;

/// The longest command line testpmd reads.
pub const MAX_LINE: usize = 511;

/// The most RSS queues a testpmd `rss queues` list holds (`ACTION_RSS_QUEUE_NUM`).
pub const MAX_RSS_QUEUES: usize = 128;

/// Why a rule has no testpmd text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TestpmdError {
    /// testpmd has no token for this action.
    #[error("testpmd has no token for the {0} action")]
    NoToken(&'static str),
    /// The line would be longer than testpmd reads.
    #[error("the command is {0} characters, more than testpmd's {MAX_LINE}")]
    LineTooLong(usize),
    /// Too many RSS queues for testpmd's list.
    #[error("{0} RSS queues, more than testpmd's {MAX_RSS_QUEUES}")]
    TooManyRssQueues(usize),
}

fn field<T: FieldValue>(
    out: &mut String,
    name: &str,
    m: &Option<Masked<T>>,
    width: u32,
    prefix: bool,
) {
    let Some(m) = m else { return };
    let mask = m.mask.to_bits() & ones(width);
    if mask == 0 {
        return;
    }
    if mask == ones(width) {
        let _ = write!(out, " {name} is {}", m.spec.spec_text());
        return;
    }
    let len = mask.count_ones();
    let is_prefix = mask == ones(width) & !(ones(width) >> len);
    if prefix && is_prefix {
        let _ = write!(
            out,
            " {name} spec {} {name} prefix {len}",
            m.spec.spec_text()
        );
    } else {
        let _ = write!(
            out,
            " {name} spec {} {name} mask {}",
            m.spec.spec_text(),
            m.mask.mask_text()
        );
    }
}

/// The text of one item.
pub fn item_text(item: &Item) -> String {
    let mut s = item.keyword().to_string();
    match item {
        Item::Eth { dst, ether_type } => {
            field(&mut s, "dst", dst, 48, false);
            field(&mut s, "type", ether_type, 16, false);
        }
        Item::Vlan { tci } => field(&mut s, "tci", tci, 16, false),
        Item::Ipv4 {
            src,
            dst,
            tos,
            proto,
        } => {
            field(&mut s, "src", src, 32, true);
            field(&mut s, "dst", dst, 32, true);
            field(&mut s, "tos", tos, 8, false);
            field(&mut s, "proto", proto, 8, false);
        }
        Item::Ipv6 { src, dst, proto } => {
            field(&mut s, "src", src, 128, true);
            field(&mut s, "dst", dst, 128, true);
            field(&mut s, "proto", proto, 8, false);
        }
        Item::Tcp { src, dst, flags } => {
            field(&mut s, "src", src, 16, false);
            field(&mut s, "dst", dst, 16, false);
            field(&mut s, "flags", flags, 8, false);
        }
        Item::Udp { src, dst } | Item::Sctp { src, dst } => {
            field(&mut s, "src", src, 16, false);
            field(&mut s, "dst", dst, 16, false);
        }
        Item::Icmp { icmp_type, code } => {
            field(&mut s, "type", icmp_type, 8, false);
            field(&mut s, "code", code, 8, false);
        }
        Item::Esp { spi } => field(&mut s, "spi", spi, 32, false),
        Item::Vxlan { vni } => field(&mut s, "vni", vni, 24, false),
        Item::Mark { id } => field(&mut s, "id", id, 32, false),
    }
    s
}

/// The text of one action.
pub fn action_text(action: &Action) -> Result<String, TestpmdError> {
    Ok(match action {
        Action::Drop => "drop".to_string(),
        Action::Count { id: None } => "count".to_string(),
        Action::Count { id: Some(id) } => format!("count identifier {id}"),
        Action::Mark { id } => format!("mark id {id}"),
        Action::Flag => "flag".to_string(),
        Action::Queue { index } => format!("queue index {index}"),
        Action::Rss { queues } => {
            if queues.len() > MAX_RSS_QUEUES {
                return Err(TestpmdError::TooManyRssQueues(queues.len()));
            }
            let q: Vec<String> = queues.iter().map(u16::to_string).collect();
            format!("rss queues {} end", q.join(" "))
        }
        Action::Passthru => "passthru".to_string(),
        Action::Jump { group } => format!("jump group {group}"),
        Action::Security => return Err(TestpmdError::NoToken("security")),
        Action::OfPushVlan { ethertype } => format!("of_push_vlan ethertype {ethertype:#06x}"),
        Action::OfSetVlanVid { vid } => format!("of_set_vlan_vid vlan_vid {vid}"),
        Action::OfPopVlan => "of_pop_vlan".to_string(),
        Action::Vf { id } => format!("vf id {id}"),
        Action::PortId { id } => format!("port_id id {id}"),
    })
}

/// The attribute words: `[group G] priority P ingress|egress|transfer`.
pub fn attr_text(attr: &Attr) -> String {
    let mut s = String::new();
    if attr.group != 0 {
        let _ = write!(s, "group {} ", attr.group);
    }
    let _ = write!(s, "priority {}", attr.priority);
    for (on, word) in [
        (attr.ingress, "ingress"),
        (attr.egress, "egress"),
        (attr.transfer, "transfer"),
    ] {
        if on {
            s.push(' ');
            s.push_str(word);
        }
    }
    s
}

/// The port, attributes and pattern (the rule's match): `0 priority 1 ingress pattern ... / end`.
pub fn match_text(rule: &FlowRule) -> String {
    let mut s = format!("{} {} pattern ", rule.port, attr_text(&rule.attr));
    for item in &rule.pattern {
        s.push_str(&item_text(item));
        s.push_str(" / ");
    }
    s.push_str("end");
    s
}

/// The `flow create` command of a rule.
pub fn flow_create(rule: &FlowRule) -> Result<String, TestpmdError> {
    let mut s = format!("flow create {} actions ", match_text(rule));
    for a in &rule.actions {
        s.push_str(&action_text(a)?);
        s.push_str(" / ");
    }
    s.push_str("end");
    if s.len() > MAX_LINE {
        return Err(TestpmdError::LineTooLong(s.len()));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn fields_use_is_prefix_and_mask() {
        let rule = FlowRule {
            port: 0,
            attr: Attr {
                priority: 1,
                ingress: true,
                ..Attr::default()
            },
            pattern: vec![
                Item::Eth {
                    dst: None,
                    ether_type: None,
                },
                Item::Ipv4 {
                    src: Some(Masked::new(
                        Ipv4Addr::new(10, 1, 2, 3),
                        Ipv4Addr::new(255, 0, 0, 0),
                    )),
                    dst: Some(Masked::exact(Ipv4Addr::new(10, 96, 0, 10), 32)),
                    tos: None,
                    proto: None,
                },
                Item::Tcp {
                    src: None,
                    dst: Some(Masked::new(30000, 0xfff0)),
                    flags: None,
                },
            ],
            actions: vec![Action::Mark { id: 42 }, Action::Queue { index: 1 }],
        };
        insta::assert_snapshot!(flow_create(&rule).unwrap(), @"flow create 0 priority 1 ingress pattern eth / ipv4 src spec 10.0.0.0 src prefix 8 dst is 10.96.0.10 / tcp dst spec 30000 dst mask 0xfff0 / end actions mark id 42 / queue index 1 / end");
    }

    #[test]
    fn forwarding_actions_have_their_testpmd_tokens() {
        assert_eq!(action_text(&Action::Vf { id: 3 }).unwrap(), "vf id 3");
        assert_eq!(
            action_text(&Action::PortId { id: 2 }).unwrap(),
            "port_id id 2"
        );
    }

    #[test]
    fn security_has_no_testpmd_token() {
        assert_eq!(
            action_text(&Action::Security),
            Err(TestpmdError::NoToken("security"))
        );
    }
}
