//! The admin tiers: AdminNetworkPolicy, BaselineAdminNetworkPolicy and ClusterNetworkPolicy.

use super::*;

impl Builder<'_> {
    /// The subject of an admin-tier policy (AdminNetworkPolicy, BaselineAdminNetworkPolicy
    /// and ClusterNetworkPolicy share the CRD shape): exactly one of `namespaces` and `pods`.
    fn admin_subject(&mut self, subject: &crd::AdminSubject, at: At) -> Option<AdminSubject> {
        match (&subject.namespaces, &subject.pods) {
            (Some(ns), None) => self
                .selector(Some(ns), at, "spec.subject.namespaces")
                .map(AdminSubject::Namespaces),
            (None, Some(pods)) => {
                let ns = self.selector(
                    Some(&pods.namespace_selector),
                    at,
                    "spec.subject.pods.namespaceSelector",
                );
                let ps = self.selector(
                    Some(&pods.pod_selector),
                    at,
                    "spec.subject.pods.podSelector",
                );
                ns.zip(ps)
                    .map(|(namespaces, pods)| AdminSubject::Pods { namespaces, pods })
            }
            _ => {
                let d = self.err(
                    Code::WrongType,
                    at.field("spec.subject"),
                    "the subject needs exactly one of `namespaces` and `pods`",
                    "invalid subject",
                );
                d.hints.push("write `namespaces: {matchLabels: ...}` or `pods: {namespaceSelector: ..., podSelector: ...}`".into());
                None
            }
        }
    }

    /// The selector peers that every admin-tier kind shares (`namespaces`, `pods`,
    /// `nodes`, tried in that order); `None` when the peer is none of them, `Some(None)`
    /// when its selector is malformed (reported).
    fn admin_selector_peer(
        &mut self,
        namespaces: Option<&LabelSelector>,
        pods: Option<&crd::NamespacedPod>,
        nodes: Option<&LabelSelector>,
        at: At,
        ppath: &str,
    ) -> Option<Option<AdminPeer>> {
        if let Some(ns) = namespaces {
            return Some(
                self.selector(Some(ns), at, &format!("{ppath}.namespaces"))
                    .map(AdminPeer::Namespaces),
            );
        }
        if let Some(pods) = pods {
            let ns = self.selector(
                Some(&pods.namespace_selector),
                at,
                &format!("{ppath}.pods.namespaceSelector"),
            );
            let ps = self.selector(
                Some(&pods.pod_selector),
                at,
                &format!("{ppath}.pods.podSelector"),
            );
            return Some(
                ns.zip(ps)
                    .map(|(namespaces, pods)| AdminPeer::Pods { namespaces, pods }),
            );
        }
        nodes.map(|n| {
            self.selector(Some(n), at, &format!("{ppath}.nodes"))
                .map(AdminPeer::Nodes)
        })
    }

    pub(super) fn admin_policy(
        &mut self,
        p: &crd::AdminNetworkPolicy,
        tier: AdminTier,
        at: At,
    ) -> Option<AdminPolicy> {
        let kind = if tier == AdminTier::Admin {
            "AdminNetworkPolicy"
        } else {
            "BaselineAdminNetworkPolicy"
        };
        let origin = self.origin(kind, &p.metadata, false, at.span);
        let mut ok = true;
        let priority = match (tier, p.spec.priority) {
            (AdminTier::Admin, Some(pr)) if (0..=1000).contains(&pr) => pr as u32,
            (AdminTier::Admin, Some(pr)) => {
                let span = at.field("spec.priority");
                let d = self.err(
                    Code::InvalidPriority,
                    span,
                    format!("priority {pr} is out of range"),
                    "out of range",
                );
                d.hints
                    .push("an AdminNetworkPolicy priority is from 0 (first) to 1000".into());
                return None;
            }
            (AdminTier::Admin, None) => {
                let span = at.field("spec");
                let d = self.err(
                    Code::MissingField,
                    span,
                    "an AdminNetworkPolicy needs `priority`",
                    "no priority",
                );
                d.hints
                    .push("add `priority:` from 0 (evaluated first) to 1000".into());
                return None;
            }
            (AdminTier::Baseline, Some(_)) => {
                // The BaselineAdminNetworkPolicy schema has no `priority` (there is one
                // baseline): strict field validation refuses it as an unknown field.
                let span = at.key("spec.priority");
                let d = self.err(
                    Code::WrongType,
                    span,
                    "unknown field `priority` in a BaselineAdminNetworkPolicy",
                    "not a field of this kind",
                );
                d.hints.push("a baseline policy has no priority: it is evaluated after every NetworkPolicy; remove the field".into());
                return None;
            }
            (AdminTier::Baseline, None) => {
                if origin.name != "default" {
                    let span = at.field("metadata.name");
                    let d = self.err(
                        Code::BaselineName,
                        span,
                        format!(
                            "a BaselineAdminNetworkPolicy must be named `default`, not `{}`",
                            origin.name
                        ),
                        "wrong name",
                    );
                    d.hints.push("there is one baseline policy per cluster and the API requires the name `default`".into());
                    return None;
                }
                0
            }
        };
        let subject = self.admin_subject(&p.spec.subject, at);
        let mut lists = Vec::new();
        for (section, rules, side) in [
            ("ingress", &p.spec.ingress, Side::Ingress),
            ("egress", &p.spec.egress, Side::Egress),
        ] {
            let mut out = Vec::new();
            if rules.as_ref().is_some_and(|r| r.len() > 100) {
                let span = at.field(&format!("spec.{section}"));
                let d = self.err(
                    Code::WrongType,
                    span,
                    format!("more than 100 {section} rules"),
                    "too many rules",
                );
                d.hints.push(
                    "the API allows at most 100 rules per direction; split the policy".into(),
                );
                ok = false;
            }
            for (i, r) in rules.iter().flatten().enumerate() {
                match self.admin_rule(r, side, tier, &origin, at, section, i) {
                    Some(rule) => out.push(rule),
                    None => ok = false,
                }
            }
            lists.push(out);
        }
        let egress = lists.pop().unwrap_or_default();
        let ingress = lists.pop().unwrap_or_default();
        match subject {
            Some(subject) if ok => Some(AdminPolicy {
                name: origin.name.clone(),
                tier,
                priority,
                subject,
                ingress,
                egress,
                origin,
            }),
            _ => None,
        }
    }

    /// A ClusterNetworkPolicy (network-policy-api `apis/v1alpha2`): one kind for both admin
    /// tiers. It becomes an [`AdminPolicy`] of its `tier`, ordered by `priority` within the
    /// tier like AdminNetworkPolicies; `Accept` is `Allow`; `Pass` in either tier skips the
    /// rest of the tier; `protocols` become ports (a protocol without `destinationPort`
    /// matches all its ports). `domainNames` peers are not modelled: they match nothing
    /// (the API allows them in `Accept` rules only, so this allows less, never more).
    pub(super) fn cluster_network_policy(
        &mut self,
        p: &crd::ClusterNetworkPolicy,
        at: At,
    ) -> Option<AdminPolicy> {
        let origin = self.origin("ClusterNetworkPolicy", &p.metadata, false, at.span);
        let tier = match p.spec.tier.as_deref() {
            Some("Admin") => AdminTier::Admin,
            Some("Baseline") => AdminTier::Baseline,
            other => {
                let (span, what) = match other {
                    Some(t) => (at.field("spec.tier"), format!("unknown tier `{t}`")),
                    None => (
                        at.field("spec"),
                        "a ClusterNetworkPolicy needs `tier`".into(),
                    ),
                };
                let d = self.err(Code::WrongType, span, what, "expected Admin or Baseline");
                d.hints.push(
                    "set `tier: Admin` (before NetworkPolicies) or `tier: Baseline` (after them)"
                        .into(),
                );
                return None;
            }
        };
        let priority = match p.spec.priority {
            Some(pr) if (0..=1000).contains(&pr) => pr as u32,
            Some(pr) => {
                let d = self.err(
                    Code::InvalidPriority,
                    at.field("spec.priority"),
                    format!("priority {pr} is out of range"),
                    "out of range",
                );
                d.hints
                    .push("a ClusterNetworkPolicy priority is from 0 (first) to 1000".into());
                return None;
            }
            None => {
                let d = self.err(
                    Code::MissingField,
                    at.field("spec"),
                    "a ClusterNetworkPolicy needs `priority`",
                    "no priority",
                );
                d.hints
                    .push("add `priority:` from 0 (evaluated first in its tier) to 1000".into());
                return None;
            }
        };
        let subject = self.admin_subject(&p.spec.subject, at);
        let mut ok = true;
        let mut lists = Vec::new();
        for (section, rules, side) in [
            ("ingress", &p.spec.ingress, Side::Ingress),
            ("egress", &p.spec.egress, Side::Egress),
        ] {
            let mut out = Vec::new();
            if rules.as_ref().is_some_and(|r| r.len() > 25) {
                let d = self.err(
                    Code::WrongType,
                    at.field(&format!("spec.{section}")),
                    format!("more than 25 {section} rules"),
                    "too many rules",
                );
                d.hints
                    .push("the API allows at most 25 rules per direction; split the policy".into());
                ok = false;
            }
            for (i, r) in rules.iter().flatten().enumerate() {
                match self.cnp_rule(r, side, &origin, at, section, i) {
                    Some(rule) => out.push(rule),
                    None => ok = false,
                }
            }
            lists.push(out);
        }
        let egress = lists.pop().unwrap_or_default();
        let ingress = lists.pop().unwrap_or_default();
        match subject {
            Some(subject) if ok => Some(AdminPolicy {
                name: origin.name.clone(),
                tier,
                priority,
                subject,
                ingress,
                egress,
                origin,
            }),
            _ => None,
        }
    }

    fn cnp_rule(
        &mut self,
        r: &crd::CnpRule,
        side: Side,
        origin: &Origin,
        at: At,
        section: &str,
        index: usize,
    ) -> Option<AdminRule> {
        let path = format!("spec.{section}[{index}]");
        let mut ok = true;
        let action = match r.action.as_str() {
            "Accept" => AdminAction::Allow,
            "Deny" => AdminAction::Deny,
            "Pass" => AdminAction::Pass,
            other => {
                let allowed = ["Accept", "Deny", "Pass"];
                let d = self.err(
                    Code::InvalidAction,
                    at.field(&format!("{path}.action")),
                    format!("unknown action `{other}`"),
                    "expected Accept, Deny or Pass",
                );
                match crate::util::closest(other, allowed) {
                    Some(s) => d.hints.push(format!("did you mean `{s}`?")),
                    None if other == "Allow" => d.hints.push(
                        "v1alpha2 calls it `Accept` (`Allow` is the v1alpha1 AdminNetworkPolicy word)"
                            .into(),
                    ),
                    None => d.hints.push("use Accept, Deny or Pass".into()),
                }
                ok = false;
                AdminAction::Deny
            }
        };
        let (field, peers_in) = if side == Side::Ingress {
            ("from", &r.from)
        } else {
            ("to", &r.to)
        };
        let peers_in = peers_in.clone().unwrap_or_default();
        if peers_in.is_empty() {
            let d = self.err(
                Code::MissingField,
                at.field(&path),
                format!("the rule has no `{field}` peers"),
                "no peers",
            );
            d.hints
                .push(format!("add at least one peer under `{field}`"));
            return None;
        }
        let mut peers = Vec::new();
        for (i, p) in peers_in.iter().enumerate() {
            let ppath = format!("{path}.{field}[{i}]");
            let set = [
                p.namespaces.is_some(),
                p.pods.is_some(),
                p.nodes.is_some(),
                p.networks.is_some(),
                p.domain_names.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if set != 1 {
                let d = self.err(
                    Code::WrongType,
                    at.field(&ppath),
                    "a peer needs exactly one of namespaces, pods, nodes, networks, domainNames",
                    "invalid peer",
                );
                d.hints
                    .push("write one field per peer; peers of a rule are ORed".into());
                ok = false;
                continue;
            }
            if side == Side::Ingress
                && (p.nodes.is_some() || p.networks.is_some() || p.domain_names.is_some())
            {
                let d = self.err(
                    Code::WrongType,
                    at.field(&ppath),
                    "`nodes`, `networks` and `domainNames` peers are only allowed in egress rules",
                    "egress-only peer",
                );
                d.hints
                    .push("select pods or namespaces here, or move the peer to `egress`".into());
                ok = false;
                continue;
            }
            let selected = self.admin_selector_peer(
                p.namespaces.as_ref(),
                p.pods.as_ref(),
                p.nodes.as_ref(),
                at,
                &ppath,
            );
            let peer = if let Some(peer) = selected {
                peer
            } else if let Some(nets) = &p.networks {
                let mut out = Vec::new();
                for (j, n) in nets.iter().enumerate() {
                    match self.cidr_with_except(n, &[], at, &format!("{ppath}.networks[{j}]")) {
                        Some(c) => out.push(c),
                        None => ok = false,
                    }
                }
                Some(AdminPeer::Networks(out))
            } else {
                if action != AdminAction::Allow {
                    let d = self.err(
                        Code::WrongType,
                        at.field(&format!("{ppath}.domainNames")),
                        "`domainNames` peers are only allowed in Accept rules",
                        "not an Accept rule",
                    );
                    d.hints
                        .push("use `networks` for Deny and Pass rules".into());
                    ok = false;
                } else {
                    let d = self.warn(
                        Code::IgnoredField,
                        at.key(&format!("{ppath}.domainNames")),
                        "`domainNames` peers are not modelled; they match nothing",
                        "ignored peer",
                    );
                    d.hints.push("the rule accepts less than in the cluster; use `networks` with the addresses where possible".into());
                }
                // An empty `networks` list matches no address.
                Some(AdminPeer::Networks(Vec::new()))
            };
            match peer {
                Some(p) => peers.push(p),
                None => ok = false,
            }
        }
        let ports = match &r.protocols {
            None => None,
            Some(list) => {
                let mut out = Vec::new();
                for (i, pr) in list.iter().enumerate() {
                    let ppath = format!("{path}.protocols[{i}]");
                    let l4 = [
                        (Protocol::Tcp, "tcp", &pr.tcp),
                        (Protocol::Udp, "udp", &pr.udp),
                        (Protocol::Sctp, "sctp", &pr.sctp),
                    ];
                    let set = l4.iter().filter(|(_, _, v)| v.is_some()).count()
                        + usize::from(pr.destination_named_port.is_some());
                    if set != 1 {
                        let d = self.err(
                            Code::WrongType,
                            at.field(&ppath),
                            "a protocol entry needs exactly one of tcp, udp, sctp, destinationNamedPort",
                            "invalid protocol",
                        );
                        d.hints
                            .push("write each protocol as its own list item".into());
                        ok = false;
                        continue;
                    }
                    if let Some(name) = &pr.destination_named_port {
                        match self.port_name(name, at, &format!("{ppath}.destinationNamedPort")) {
                            Some(PortRef::Name(n)) => out.push(AdminPort::Named(n)),
                            _ => ok = false,
                        }
                        continue;
                    }
                    for (protocol, key, v) in l4 {
                        let Some(v) = v else { continue };
                        let dpath = format!("{ppath}.{key}.destinationPort");
                        match &v.destination_port {
                            None => out.push(AdminPort::Range {
                                protocol,
                                start: 1,
                                end: 65535,
                            }),
                            Some(dp) => match (dp.number, &dp.range) {
                                (Some(n), None) => {
                                    match self.port_number(n, at, &format!("{dpath}.number")) {
                                        Some(port) => {
                                            out.push(AdminPort::Number { protocol, port })
                                        }
                                        None => ok = false,
                                    }
                                }
                                (None, Some(r)) => {
                                    let s = self.port_number(
                                        r.start,
                                        at,
                                        &format!("{dpath}.range.start"),
                                    );
                                    let e =
                                        self.port_number(r.end, at, &format!("{dpath}.range.end"));
                                    match (s, e) {
                                        (Some(start), Some(end)) if start < end => {
                                            out.push(AdminPort::Range {
                                                protocol,
                                                start,
                                                end,
                                            })
                                        }
                                        (Some(_), Some(_)) => {
                                            let d = self.err(
                                                Code::EndPort,
                                                at.field(&format!("{dpath}.range")),
                                                "the range's start is not below its end",
                                                "empty range",
                                            );
                                            d.hints.push("the API requires start < end; use `number` for one port".into());
                                            ok = false;
                                        }
                                        _ => ok = false,
                                    }
                                }
                                _ => {
                                    let d = self.err(
                                        Code::WrongType,
                                        at.field(&dpath),
                                        "destinationPort needs exactly one of number and range",
                                        "invalid port",
                                    );
                                    d.hints.push(
                                        "write `number: 80` or `range: {start: 8000, end: 9000}`"
                                            .into(),
                                    );
                                    ok = false;
                                }
                            },
                        }
                    }
                }
                Some(out)
            }
        };
        let rule = rule_ref(origin, section, index, r.name.clone(), &path);
        ok.then_some(AdminRule {
            action,
            peers,
            ports,
            rule,
        })
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the rule's place in its object is several coordinates"
    )]
    fn admin_rule(
        &mut self,
        r: &crd::AdminRule,
        side: Side,
        tier: AdminTier,
        origin: &Origin,
        at: At,
        section: &str,
        index: usize,
    ) -> Option<AdminRule> {
        let path = format!("spec.{section}[{index}]");
        let mut ok = true;
        let action = match (r.action.as_str(), tier) {
            ("Allow", _) => AdminAction::Allow,
            ("Deny", _) => AdminAction::Deny,
            ("Pass", AdminTier::Admin) => AdminAction::Pass,
            ("Pass", AdminTier::Baseline) => {
                let span = at.field(&format!("{path}.action"));
                let d = self.err(
                    Code::InvalidAction,
                    span,
                    "`Pass` is not allowed in a BaselineAdminNetworkPolicy",
                    "expected Allow or Deny",
                );
                d.hints.push(
                    "Pass hands the decision to NetworkPolicies, which the baseline tier already comes after; use Allow or Deny".into(),
                );
                ok = false;
                AdminAction::Deny
            }
            (other, _) => {
                let span = at.field(&format!("{path}.action"));
                let allowed: &[&str] = if tier == AdminTier::Admin {
                    &["Allow", "Deny", "Pass"]
                } else {
                    &["Allow", "Deny"]
                };
                let d = self.err(
                    Code::InvalidAction,
                    span,
                    format!("unknown action `{other}`"),
                    format!("expected {}", allowed.join(", ")),
                );
                if let Some(s) = crate::util::closest(other, allowed.iter().copied()) {
                    d.hints.push(format!("did you mean `{s}`?"));
                } else {
                    d.hints.push(format!("use one of {}", allowed.join(", ")));
                }
                ok = false;
                AdminAction::Deny
            }
        };
        let (field, peers_in) = if side == Side::Ingress {
            ("from", &r.from)
        } else {
            ("to", &r.to)
        };
        let peers_in = peers_in.clone().unwrap_or_default();
        if peers_in.is_empty() {
            let span = at.field(&path);
            let d = self.err(
                Code::MissingField,
                span,
                format!("the rule has no `{field}` peers"),
                "no peers",
            );
            d.hints
                .push(format!("add at least one peer under `{field}`"));
            return None;
        }
        let mut peers = Vec::new();
        for (i, p) in peers_in.iter().enumerate() {
            let ppath = format!("{path}.{field}[{i}]");
            let set = [
                p.namespaces.is_some(),
                p.pods.is_some(),
                p.nodes.is_some(),
                p.networks.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if set != 1 {
                let span = at.field(&ppath);
                let d = self.err(
                    Code::WrongType,
                    span,
                    "a peer needs exactly one of namespaces, pods, nodes, networks",
                    "invalid peer",
                );
                d.hints.push(if set == 0 {
                    "add one of `namespaces`, `pods`, `nodes` or `networks`".into()
                } else {
                    "split it into several peers, one field each; peers of a rule are ORed".into()
                });
                ok = false;
                continue;
            }
            if side == Side::Ingress && (p.nodes.is_some() || p.networks.is_some()) {
                let span = at.field(&ppath);
                let d = self.err(
                    Code::WrongType,
                    span,
                    "`nodes` and `networks` peers are only allowed in egress rules",
                    "egress-only peer",
                );
                d.hints.push(
                    "move the peer to an `egress` rule's `to`, or select pods or namespaces here"
                        .into(),
                );
                ok = false;
                continue;
            }
            let selected = self.admin_selector_peer(
                p.namespaces.as_ref(),
                p.pods.as_ref(),
                p.nodes.as_ref(),
                at,
                &ppath,
            );
            let peer = if let Some(peer) = selected {
                peer
            } else {
                let mut nets = Vec::new();
                for (j, n) in p.networks.iter().flatten().enumerate() {
                    match self.cidr_with_except(n, &[], at, &format!("{ppath}.networks[{j}]")) {
                        Some(c) => nets.push(c),
                        None => ok = false,
                    }
                }
                Some(AdminPeer::Networks(nets))
            };
            match peer {
                Some(p) => peers.push(p),
                None => ok = false,
            }
        }
        let ports = match &r.ports {
            None => None,
            Some(list) => {
                let mut out = Vec::new();
                for (i, p) in list.iter().enumerate() {
                    let ppath = format!("{path}.ports[{i}]");
                    let set = [
                        p.port_number.is_some(),
                        p.named_port.is_some(),
                        p.port_range.is_some(),
                    ]
                    .iter()
                    .filter(|b| **b)
                    .count();
                    if set != 1 {
                        let span = at.field(&ppath);
                        let d = self.err(
                            Code::WrongType,
                            span,
                            "a port needs exactly one of portNumber, namedPort, portRange",
                            "invalid port",
                        );
                        d.hints.push(
                            "write each port as its own list item with one of the three fields"
                                .into(),
                        );
                        ok = false;
                        continue;
                    }
                    if let Some(n) = &p.port_number {
                        let proto = self.protocol(
                            n.protocol.as_deref(),
                            at,
                            &format!("{ppath}.portNumber.protocol"),
                            false,
                        );
                        let port =
                            self.port_number(n.port, at, &format!("{ppath}.portNumber.port"));
                        match (proto, port) {
                            (Some(Some(protocol)), Some(port)) => {
                                out.push(AdminPort::Number { protocol, port })
                            }
                            _ => ok = false,
                        }
                    } else if let Some(name) = &p.named_port {
                        match self.port_name(name, at, &format!("{ppath}.namedPort")) {
                            Some(PortRef::Name(n)) => out.push(AdminPort::Named(n)),
                            _ => ok = false,
                        }
                    } else if let Some(range) = &p.port_range {
                        let proto = self.protocol(
                            range.protocol.as_deref(),
                            at,
                            &format!("{ppath}.portRange.protocol"),
                            false,
                        );
                        let start =
                            self.port_number(range.start, at, &format!("{ppath}.portRange.start"));
                        let end =
                            self.port_number(range.end, at, &format!("{ppath}.portRange.end"));
                        match (proto, start, end) {
                            (Some(Some(protocol)), Some(start), Some(end)) if start <= end => out
                                .push(AdminPort::Range {
                                    protocol,
                                    start,
                                    end,
                                }),
                            (Some(Some(_)), Some(start), Some(end)) => {
                                let span = at.field(&format!("{ppath}.portRange.end"));
                                let d = self.err(
                                    Code::EndPort,
                                    span,
                                    format!("port range end {end} is below its start {start}"),
                                    "end < start",
                                );
                                d.hints.push("swap start and end".into());
                                ok = false;
                            }
                            _ => ok = false,
                        }
                    }
                }
                Some(out)
            }
        };
        let rule = rule_ref(origin, section, index, r.name.clone(), &path);
        ok.then_some(AdminRule {
            action,
            peers,
            ports,
            rule,
        })
    }
}
