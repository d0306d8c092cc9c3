//! The fixed vocabulary of the language: entities, fields, actions and other names that
//! the resolver checks words against.

/// Cilium's entity names, usable as `entity NAME` peers.
pub const ENTITIES: &[&str] = &[
    "world",
    "cluster",
    "host",
    "remote-node",
    "kube-apiserver",
    "all",
    "health",
    "init",
    "unmanaged",
    "ingress",
    "world-ipv4",
    "world-ipv6",
];

/// Packet fields a target may match on.
pub const PACKET_FIELDS: &[&str] = &[
    "in_port",
    "eth.type",
    "ipv4.src",
    "ipv4.dst",
    "ipv6.src",
    "ipv6.dst",
    "ip.proto",
    "l4.sport",
    "l4.dport",
    "tcp.flags",
    "esp.spi",
    "vxlan.vni",
];

/// Metadata fields (set by earlier tables or the runtime) a target may match on.
pub const METADATA_FIELDS: &[&str] = &[
    "src_identity",
    "dst_identity",
    "endpoint",
    "service",
    "backend",
    "ct_state",
    "mark",
    "verdict",
];

/// Every matchable field: packet fields, then metadata fields.
pub const FIELDS: &[&str] = &[
    "in_port",
    "eth.type",
    "ipv4.src",
    "ipv4.dst",
    "ipv6.src",
    "ipv6.dst",
    "ip.proto",
    "l4.sport",
    "l4.dport",
    "tcp.flags",
    "esp.spi",
    "vxlan.vni",
    "src_identity",
    "dst_identity",
    "endpoint",
    "service",
    "backend",
    "ct_state",
    "mark",
    "verdict",
];

/// The address fields, the only ones that may have a `prefix` mask.
pub const ADDRESS_FIELDS: &[&str] = &["ipv4.src", "ipv4.dst", "ipv6.src", "ipv6.dst"];

/// Actions a target may perform.
pub const ACTIONS: &[&str] = &[
    "allow",
    "drop",
    "count",
    "mark",
    "redirect",
    "dnat",
    "snat",
    "encrypt",
    "decrypt",
    "vlan_push",
    "vlan_pop",
    "queue",
    "rss",
    "jump",
];

/// The actions of a policy rule.
pub const RULE_ACTIONS: &[&str] = &["allow", "deny", "pass", "log", "redirect-to-proxy"];

/// The protocols of a port item.
pub const PROTOCOLS: &[&str] = &["tcp", "udp", "sctp", "any"];

/// The match kinds a target may support.
pub const MATCH_KINDS: &[&str] = &["exact", "lpm", "ternary", "range"];

/// The mask kinds of a matchable field.
pub const MASKS: &[&str] = &["exact", "prefix", "any"];

/// The resources a placement hint can reserve.
pub const RESOURCES: &[&str] = &["entries", "counters", "sas"];

/// Formats names as "`a`, `b` and `c`".
pub fn list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_packet_then_metadata() {
        let joined: Vec<&str> = PACKET_FIELDS
            .iter()
            .chain(METADATA_FIELDS)
            .copied()
            .collect();
        assert_eq!(joined, FIELDS);
    }
}
