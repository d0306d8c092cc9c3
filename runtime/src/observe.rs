//! Flow events for `pipec observe`: drained from the eBPF ring buffer, named by the rule
//! that decided them (its provenance: the object, the rule and file:line), and fanned out to
//! every subscriber. The fan-out is bounded: a subscriber that falls behind loses the oldest
//! events and is told how many, and nobody listening costs only the draining.

use pipec_ebpf_common as c;
use pipec_proto::v1::FlowEvent;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Events kept for a slow subscriber before the oldest are dropped.
pub const BACKLOG: usize = 4096;

/// The sender subscribers are made from.
pub type Events = tokio::sync::broadcast::Sender<FlowEvent>;

/// A fresh fan-out.
pub fn events() -> Events {
    tokio::sync::broadcast::channel(BACKLOG).0
}

fn address(bytes: &[u8; 16], family: u8) -> IpAddr {
    if family == c::AF_INET {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        IpAddr::from(*bytes)
    }
}

fn protocol(p: u8) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        1 | 58 => "ICMP".into(),
        other => other.to_string(),
    }
}

/// The wire form of a ring-buffer record; `names` are the eBPF artifact's cookie names.
pub fn to_wire(e: &c::FlowEvent, names: &BTreeMap<u64, String>) -> FlowEvent {
    FlowEvent {
        time_ns: e.timestamp,
        direction: match e.direction {
            c::DIR_EGRESS => "egress",
            c::DIR_INGRESS => "ingress",
            _ => "service",
        }
        .into(),
        verdict: match e.verdict {
            c::VERDICT_ALLOWED => "allowed",
            c::VERDICT_DENIED => "denied",
            c::VERDICT_REDIRECTED => "redirected",
            _ => "unknown",
        }
        .into(),
        reason: match e.reason {
            c::REASON_POLICY => "policy",
            c::REASON_NO_ENTRY => "no-entry",
            c::REASON_SPOOF => "spoof",
            c::REASON_NO_BACKEND => "no-backend",
            _ => "",
        }
        .into(),
        protocol: protocol(e.protocol),
        source: address(&e.saddr, e.family).to_string(),
        source_port: u32::from(u16::from_be(e.sport)),
        destination: address(&e.daddr, e.family).to_string(),
        destination_port: u32::from(u16::from_be(e.dport)),
        rule: names.get(&e.cookie).cloned().unwrap_or_default(),
        endpoint_id: e.endpoint_id,
        remote_identity: e.remote_identity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_as_its_flow_and_rule() {
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let e = c::FlowEvent {
            timestamp: 1_500_000_000,
            cookie: 7,
            saddr,
            daddr,
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            protocol: 6,
            family: c::AF_INET,
            direction: c::DIR_INGRESS,
            verdict: c::VERDICT_DENIED,
            endpoint_id: 3,
            remote_identity: 9,
            reason: c::REASON_NO_ENTRY,
            pad: 0,
        };
        let names = BTreeMap::from([(7, "NetworkPolicy shop/deny at a.yaml:3:1".to_string())]);
        let w = to_wire(&e, &names);
        assert_eq!(
            pipec_proto::flow_line(&w),
            "        1.500000 ingress DENIED     TCP  10.0.0.1:40000 -> 10.0.0.2:80 (no-entry) by NetworkPolicy shop/deny at a.yaml:3:1"
        );
    }
}
