//! Cilium policies (namespaced and clusterwide), CiliumIdentities and CiliumEndpoints.

use super::*;

impl Builder<'_> {
    pub(super) fn cilium_policy(
        &mut self,
        p: &crd::CiliumNetworkPolicy,
        clusterwide: bool,
        at: At,
    ) -> Option<CiliumPolicy> {
        let kind = if clusterwide {
            "CiliumClusterwideNetworkPolicy"
        } else {
            "CiliumNetworkPolicy"
        };
        let origin = self.origin(kind, &p.metadata, !clusterwide, at.span);
        let mut specs_in: Vec<(String, &crd::CiliumSpec)> = Vec::new();
        if let Some(s) = &p.spec {
            specs_in.push(("spec".into(), s));
        }
        for (i, s) in p.specs.iter().flatten().enumerate() {
            specs_in.push((format!("specs[{i}]"), s));
        }
        if specs_in.is_empty() {
            let d = self.err(
                Code::MissingField,
                at.key("kind"),
                format!("{kind} has neither `spec` nor `specs`"),
                "no rules",
            );
            d.hints
                .push("add `spec:` with an endpointSelector and rules".into());
            return None;
        }
        let mut specs = Vec::new();
        let mut ok = true;
        for (base, s) in specs_in {
            match self.cilium_spec(s, &origin, at, &base) {
                Some(spec) => specs.push(spec),
                None => ok = false,
            }
        }
        ok.then(|| CiliumPolicy {
            namespace: origin.namespace.clone(),
            name: origin.name.clone(),
            specs,
            origin,
        })
    }

    fn cilium_spec(
        &mut self,
        s: &crd::CiliumSpec,
        origin: &Origin,
        at: At,
        base: &str,
    ) -> Option<CiliumSpec> {
        if s.node_selector.is_some() {
            let span = at.key(&format!("{base}.nodeSelector"));
            let d = self.warn(
                Code::IgnoredField,
                span,
                "host policies (nodeSelector) are not modelled; this rule object is skipped",
                "ignored",
            );
            d.hints.push(
                "pipec compiles pod traffic; enforce host policies with Cilium itself".into(),
            );
            return Some(CiliumSpec {
                endpoint_selector: impossible_selector(),
                ingress: Vec::new(),
                ingress_deny: Vec::new(),
                egress: Vec::new(),
                egress_deny: Vec::new(),
                default_deny: DefaultDeny::default(),
                has_ingress: false,
                has_egress: false,
            });
        }
        let Some(sel) = &s.endpoint_selector else {
            let span = at.field(base);
            let d = self.err(
                Code::MissingField,
                span,
                "a Cilium rule needs an endpointSelector",
                "no endpointSelector",
            );
            d.hints
                .push("use `endpointSelector: {}` to select every endpoint".into());
            return None;
        };
        let mut endpoint_selector =
            self.selector(Some(sel), at, &format!("{base}.endpointSelector"))?;
        if let Some(ns) = &origin.namespace {
            scope_to_namespace(&mut endpoint_selector, ns);
        }
        let mut ok = true;
        let mut sections = BTreeMap::new();
        for (name, rules, side, effect) in [
            ("ingress", &s.ingress, Side::Ingress, Effect::Allow),
            ("ingressDeny", &s.ingress_deny, Side::Ingress, Effect::Deny),
            ("egress", &s.egress, Side::Egress, Effect::Allow),
            ("egressDeny", &s.egress_deny, Side::Egress, Effect::Deny),
        ] {
            let mut out = Vec::new();
            for (i, r) in rules.iter().flatten().enumerate() {
                let path = format!("{base}.{name}[{i}]");
                match self.cilium_rule(r, side, effect, origin, at, &path, name, i) {
                    Some(rule) => out.push(rule),
                    None => ok = false,
                }
            }
            sections.insert(name, out);
        }
        let default_deny = s
            .enable_default_deny
            .clone()
            .map(|d| DefaultDeny {
                ingress: d.ingress,
                egress: d.egress,
            })
            .unwrap_or_default();
        let mut take = |k: &str| sections.remove(k).unwrap_or_default();
        let spec = CiliumSpec {
            endpoint_selector,
            ingress: take("ingress"),
            ingress_deny: take("ingressDeny"),
            egress: take("egress"),
            egress_deny: take("egressDeny"),
            default_deny,
            has_ingress: s.ingress.is_some() || s.ingress_deny.is_some(),
            has_egress: s.egress.is_some() || s.egress_deny.is_some(),
        };
        ok.then_some(spec)
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the rule's place in its object is several coordinates"
    )]
    fn cilium_rule(
        &mut self,
        r: &crd::CiliumRule,
        side: Side,
        effect: Effect,
        origin: &Origin,
        at: At,
        path: &str,
        section: &str,
        index: usize,
    ) -> Option<CiliumRule> {
        let (dir, endpoints, requires, cidr, cidr_set, entities) = if side == Side::Ingress {
            (
                "from",
                &r.from_endpoints,
                &r.from_requires,
                &r.from_cidr,
                &r.from_cidr_set,
                &r.from_entities,
            )
        } else {
            (
                "to",
                &r.to_endpoints,
                &r.to_requires,
                &r.to_cidr,
                &r.to_cidr_set,
                &r.to_entities,
            )
        };
        let wrong_side = if side == Side::Ingress {
            r.to_endpoints.is_some()
                || r.to_cidr.is_some()
                || r.to_cidr_set.is_some()
                || r.to_entities.is_some()
                || r.to_requires.is_some()
        } else {
            r.from_endpoints.is_some()
                || r.from_cidr.is_some()
                || r.from_cidr_set.is_some()
                || r.from_entities.is_some()
                || r.from_requires.is_some()
        };
        if wrong_side {
            let fields = if side == Side::Ingress {
                [
                    ("toEndpoints", r.to_endpoints.is_some()),
                    ("toCIDR", r.to_cidr.is_some()),
                    ("toCIDRSet", r.to_cidr_set.is_some()),
                    ("toEntities", r.to_entities.is_some()),
                    ("toRequires", r.to_requires.is_some()),
                ]
            } else {
                [
                    ("fromEndpoints", r.from_endpoints.is_some()),
                    ("fromCIDR", r.from_cidr.is_some()),
                    ("fromCIDRSet", r.from_cidr_set.is_some()),
                    ("fromEntities", r.from_entities.is_some()),
                    ("fromRequires", r.from_requires.is_some()),
                ]
            };
            let first = fields.iter().find(|(_, set)| *set).map(|(f, _)| *f);
            let span = match first {
                Some(f) => at.key(&format!("{path}.{f}")),
                None => at.field(path),
            };
            let (other, this) = if side == Side::Ingress {
                ("to", "from")
            } else {
                ("from", "to")
            };
            let d = self.err(
                Code::WrongType,
                span,
                format!(
                    "an {} rule uses `{other}*` fields",
                    if side == Side::Ingress {
                        "ingress"
                    } else {
                        "egress"
                    }
                ),
                "wrong direction",
            );
            d.hints.push(format!(
                "use `{this}Endpoints`, `{this}CIDR`, `{this}Entities` here"
            ));
            return None;
        }
        let mut ok = true;
        let mut out_endpoints = Vec::new();
        for (i, sel) in endpoints.iter().flatten().enumerate() {
            match self.selector(Some(sel), at, &format!("{path}.{dir}Endpoints[{i}]")) {
                Some(mut s) => {
                    scope_peer_selector(&mut s, origin.namespace.as_deref(), true);
                    out_endpoints.push(s);
                }
                None => ok = false,
            }
        }
        let mut out_requires = Vec::new();
        for (i, sel) in requires.iter().flatten().enumerate() {
            match self.selector(Some(sel), at, &format!("{path}.{dir}Requires[{i}]")) {
                Some(mut s) => {
                    scope_peer_selector(&mut s, origin.namespace.as_deref(), false);
                    out_requires.push(s);
                }
                None => ok = false,
            }
        }
        let mut cidrs = Vec::new();
        for (i, c) in cidr.iter().flatten().enumerate() {
            match self.cidr_with_except(c, &[], at, &format!("{path}.{dir}CIDR[{i}]")) {
                Some(c) => cidrs.push(c),
                None => ok = false,
            }
        }
        for (i, c) in cidr_set.iter().flatten().enumerate() {
            let cpath = format!("{path}.{dir}CIDRSet[{i}]");
            match &c.cidr {
                Some(text) => match self.cidr_with_except(
                    text,
                    c.except.as_deref().unwrap_or(&[]),
                    at,
                    &cpath,
                ) {
                    Some(c) => cidrs.push(c),
                    None => ok = false,
                },
                None => {
                    let span = at.field(&cpath);
                    self.warn(
                        Code::IgnoredField,
                        span,
                        "CIDR groups are not modelled; this CIDR set matches nothing",
                        "ignored",
                    );
                }
            }
        }
        let mut out_entities = Vec::new();
        for (i, e) in entities.iter().flatten().enumerate() {
            match Entity::parse(e) {
                Some(en) => out_entities.push(en),
                None => {
                    let span = at.field(&format!("{path}.{dir}Entities[{i}]"));
                    let d = self.err(
                        Code::InvalidEntity,
                        span,
                        format!("unknown entity `{e}`"),
                        "unknown entity",
                    );
                    match crate::util::closest(e, Entity::NAMES.iter().copied()) {
                        Some(s) => d.hints.push(format!("did you mean `{s}`?")),
                        None => d
                            .hints
                            .push(format!("entities are: {}", Entity::NAMES.join(", "))),
                    }
                    ok = false;
                }
            }
        }
        for (field, present) in [
            ("toServices", r.to_services.is_some()),
            ("toFQDNs", r.to_fqdns.is_some()),
            ("toGroups", r.to_groups.is_some() || r.from_groups.is_some()),
            ("toNodes", r.to_nodes.is_some() || r.from_nodes.is_some()),
        ] {
            if present {
                let span = at.key(&format!("{path}.{field}"));
                let d = self.warn(
                    Code::IgnoredField,
                    span,
                    format!("`{field}`-style peers are not modelled; they match nothing"),
                    "ignored peer",
                );
                d.hints.push(
                    "the rule allows less than in Cilium; use toCIDR or toEndpoints peers where possible".into(),
                );
            }
        }
        // A requirement grants nothing by itself (Cilium's policy language, "Additional
        // Label Requirements"): a rule whose only L3 field is `from/toRequires` allows no
        // peer, while it still isolates its endpoints.
        let any_peer = endpoints.is_none()
            && requires.is_none()
            && cidr.is_none()
            && cidr_set.is_none()
            && entities.is_none()
            && r.to_services.is_none()
            && r.to_fqdns.is_none()
            && r.to_groups.is_none()
            && r.from_groups.is_none()
            && r.to_nodes.is_none()
            && r.from_nodes.is_none();
        let mut to_ports = Vec::new();
        for (i, pr) in r.to_ports.iter().flatten().enumerate() {
            let ppath = format!("{path}.toPorts[{i}]");
            let mut ports = Vec::new();
            let count = pr.ports.as_ref().map_or(0, Vec::len);
            if count > MAX_CILIUM_PORTS {
                let span = at.key(&format!("{ppath}.ports"));
                let d = self.err(
                    Code::PortRange,
                    span,
                    format!("{count} ports in one toPorts entry; Cilium allows at most {MAX_CILIUM_PORTS}"),
                    "too many ports",
                );
                d.hints.push(
                    "split the ports over several `toPorts` entries, or use `endPort` ranges"
                        .into(),
                );
                ok = false;
            }
            for (j, pp) in pr.ports.iter().flatten().enumerate() {
                let pppath = format!("{ppath}.ports[{j}]");
                let Some(protocol) = self.protocol(
                    pp.protocol.as_deref(),
                    at,
                    &format!("{pppath}.protocol"),
                    true,
                ) else {
                    ok = false;
                    continue;
                };
                let port = match &pp.port {
                    None => None,
                    Some(IntOrString::Int(0)) => None,
                    Some(IntOrString::Int(n)) => {
                        match self.port_number(*n, at, &format!("{pppath}.port")) {
                            Some(n) => Some(PortRef::Number(n)),
                            None => {
                                ok = false;
                                continue;
                            }
                        }
                    }
                    Some(IntOrString::String(t)) => match t.parse::<i64>() {
                        Ok(0) => None,
                        Ok(n) => match self.port_number(n, at, &format!("{pppath}.port")) {
                            Some(n) => Some(PortRef::Number(n)),
                            None => {
                                ok = false;
                                continue;
                            }
                        },
                        Err(_) => match self.port_name(t, at, &format!("{pppath}.port")) {
                            Some(r) => Some(r),
                            None => {
                                ok = false;
                                continue;
                            }
                        },
                    },
                };
                let end_port = match (pp.end_port, &port) {
                    (None | Some(0), _) => None,
                    (Some(end), Some(PortRef::Number(start)))
                        if end >= i64::from(*start) && end <= 65535 =>
                    {
                        Some(end as u16)
                    }
                    (Some(end), _) => {
                        let span = at.field(&format!("{pppath}.endPort"));
                        let d = self.err(
                            Code::EndPort,
                            span,
                            format!("endPort {end} is invalid here"),
                            "invalid endPort",
                        );
                        d.hints.push(
                            "endPort needs a numeric port and must be between it and 65535".into(),
                        );
                        ok = false;
                        continue;
                    }
                };
                ports.push(CiliumPort {
                    port,
                    end_port,
                    protocol,
                });
            }
            let l7 = pr.rules.as_ref().and_then(|rules| {
                if rules.http.as_ref().is_some_and(|v| !v.is_empty()) {
                    Some(L7::Http)
                } else if rules.kafka.as_ref().is_some_and(|v| !v.is_empty()) {
                    Some(L7::Kafka)
                } else if rules.dns.as_ref().is_some_and(|v| !v.is_empty()) {
                    Some(L7::Dns)
                } else if rules.l7proto.is_some() {
                    Some(L7::Other)
                } else {
                    None
                }
            });
            if l7.is_some() && effect == Effect::Deny {
                let span = at.field(&format!("{ppath}.rules"));
                let d = self.err(
                    Code::WrongType,
                    span,
                    "deny rules cannot have L7 rules",
                    "L7 rules in a deny rule",
                );
                d.hints.push(
                    "Cilium rejects L7 rules under ingressDeny/egressDeny; remove `rules`".into(),
                );
                ok = false;
            }
            to_ports.push(CiliumPortRule { ports, l7 });
        }
        let rule = rule_ref(origin, section, index, None, path);
        ok.then_some(CiliumRule {
            endpoints: out_endpoints,
            requires: out_requires,
            entities: out_entities,
            cidrs,
            any_peer,
            to_ports,
            icmp: r.icmps.as_ref().is_some_and(|v| !v.is_empty()),
            rule,
        })
    }

    pub(super) fn cilium_identity(
        &mut self,
        i: &crd::CiliumIdentity,
        at: At,
    ) -> Option<CiliumIdentityObject> {
        let name = i.metadata.name.clone().unwrap_or_default();
        let id = match name.parse::<u32>() {
            Ok(n) if n >= 256 => n,
            Ok(n) => {
                let span = at.field("metadata.name");
                let d = self.err(
                    Code::InvalidIdentity,
                    span,
                    format!("CiliumIdentity {n} is a reserved identity"),
                    "reserved (below 256)",
                );
                d.hints.push("identities below 256 are Cilium's reserved identities (host, world, ...), which Cilium never stores as CiliumIdentity objects; use a number of 256 or above".into());
                return None;
            }
            _ => {
                let span = at.field("metadata.name");
                let d = self.err(
                    Code::InvalidIdentity,
                    span,
                    format!("CiliumIdentity name `{name}` is not an identity number"),
                    "expected a number",
                );
                d.hints.push("a CiliumIdentity is named by its number, 256 or above (lower numbers are reserved)".into());
                return None;
            }
        };
        let labels = i.security_labels.clone().unwrap_or_default();
        if labels.is_empty() {
            let span = at.field("metadata.name");
            let d = self.err(
                Code::InvalidIdentity,
                span,
                format!("CiliumIdentity {id} has no security-labels"),
                "no labels",
            );
            d.hints
                .push("add `security-labels:` with the labels the identity stands for".into());
            return None;
        }
        let origin = self.origin("CiliumIdentity", &i.metadata, false, at.span);
        Some(CiliumIdentityObject { id, labels, origin })
    }

    pub(super) fn cilium_endpoint(
        &mut self,
        e: &crd::CiliumEndpoint,
        at: At,
    ) -> CiliumEndpointObject {
        let origin = self.origin("CiliumEndpoint", &e.metadata, true, at.span);
        let status = e.status.as_ref();
        let identity = status
            .and_then(|s| s.identity.as_ref())
            .and_then(|i| i.id)
            .and_then(|i| u32::try_from(i).ok());
        let ips = status
            .and_then(|s| s.networking.as_ref())
            .and_then(|n| n.addressing.as_ref())
            .into_iter()
            .flatten()
            .flat_map(|a| [a.ipv4.as_deref(), a.ipv6.as_deref()])
            .flatten()
            .filter_map(|t| t.parse().ok())
            .collect();
        CiliumEndpointObject {
            namespace: origin.namespace.clone().unwrap_or_default(),
            name: origin.name.clone(),
            identity,
            ips,
            origin,
        }
    }
}

/// Adds the implicit namespace of a namespaced Cilium policy to a selector, unless the
/// selector names a namespace itself (as Cilium does).
fn scope_to_namespace(sel: &mut Selector, namespace: &str) {
    const NS_KEYS: [&str; 3] = [
        "io.kubernetes.pod.namespace",
        "k8s:io.kubernetes.pod.namespace",
        "any:io.kubernetes.pod.namespace",
    ];
    let names_namespace = sel
        .match_labels
        .keys()
        .any(|k| NS_KEYS.contains(&k.as_str()))
        || sel
            .expressions
            .iter()
            .any(|r| NS_KEYS.contains(&r.key.as_str()));
    if !names_namespace {
        sel.match_labels.insert(
            "k8s:io.kubernetes.pod.namespace".into(),
            namespace.to_string(),
        );
    }
}

/// Scopes a peer selector of a Cilium rule (`from/toEndpoints` when `endpoints`, else
/// `from/toRequires`) as Cilium's `getEndpointSelector` (`pkg/k8s/apis/cilium.io/utils`)
/// does when it reads a policy from Kubernetes:
///
/// - an endpoint selector on `reserved:` labels is left alone (requirements are not);
/// - a selector that names the pod namespace key is left alone;
/// - in a CiliumNetworkPolicy (`namespace` given), a selector on namespace labels
///   (`io.cilium.k8s.namespace.labels.*`) is left alone, any other is limited to the
///   policy's namespace;
/// - in a clusterwide policy, the selector gets `io.kubernetes.pod.namespace Exists`, so
///   even the empty selector `{}` matches only Cilium-managed pods, never `world`, `host`,
///   `remote-node` or any other reserved identity.
fn scope_peer_selector(sel: &mut Selector, namespace: Option<&str>, endpoints: bool) {
    const NS_KEYS: [&str; 3] = [
        "io.kubernetes.pod.namespace",
        "k8s:io.kubernetes.pod.namespace",
        "any:io.kubernetes.pod.namespace",
    ];
    const NS_LABELS: [&str; 2] = [
        "k8s:io.cilium.k8s.namespace.labels.",
        "any:io.cilium.k8s.namespace.labels.",
    ];
    let keys = || {
        sel.match_labels
            .keys()
            .chain(sel.expressions.iter().map(|r| &r.key))
    };
    if endpoints && keys().any(|k| k.starts_with("reserved:")) {
        return;
    }
    if keys().any(|k| NS_KEYS.contains(&k.as_str())) {
        return;
    }
    match namespace {
        Some(ns) => {
            let on_ns_labels = keys().any(|k| {
                NS_LABELS.iter().any(|p| k.starts_with(p))
                    || k.starts_with("io.cilium.k8s.namespace.labels.")
            });
            if !on_ns_labels {
                sel.match_labels
                    .insert("k8s:io.kubernetes.pod.namespace".into(), ns.to_string());
            }
        }
        None => sel.expressions.push(Requirement {
            key: "k8s:io.kubernetes.pod.namespace".into(),
            operator: Operator::Exists,
            values: BTreeSet::new(),
        }),
    }
}
