//! Kubernetes NetworkPolicies.

use super::*;

impl Builder<'_> {
    pub(super) fn network_policy(
        &mut self,
        np: &k8s_openapi::api::networking::v1::NetworkPolicy,
        at: At,
    ) -> Option<NetworkPolicy> {
        let origin = self.origin("NetworkPolicy", &np.metadata, true, at.span);
        let namespace = origin.namespace.clone().unwrap_or_default();
        let spec = np.spec.clone().unwrap_or_default();
        // A bad selector does not stop the check: the rules' problems are reported too.
        let pod_selector = self.selector(spec.pod_selector.as_ref(), at, "spec.podSelector");
        let mut ok = pod_selector.is_some();
        // SetDefaults_NetworkPolicy (kubernetes `pkg/apis/networking/v1/defaults.go`): an
        // omitted *or empty* `policyTypes` becomes [Ingress], plus Egress when `egress` has
        // at least one rule; an empty `egress: []` adds nothing.
        let mut types = PolicyTypes {
            ingress: true,
            egress: spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
        };
        if let Some(list) = spec.policy_types.as_ref().filter(|l| !l.is_empty()) {
            types = PolicyTypes {
                ingress: false,
                egress: false,
            };
            // ValidateNetworkPolicySpec refuses more than two entries ("may not specify
            // more than two policyTypes"), even if they repeat one type.
            if list.len() > 2 {
                let span = at.field("spec.policyTypes[2]");
                let d = self.err(
                    Code::WrongType,
                    span,
                    format!("{} policy types; at most two are allowed", list.len()),
                    "a third entry",
                );
                d.hints
                    .push("list each of Ingress and Egress at most once".into());
                ok = false;
            }
            for (i, t) in list.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => types.ingress = true,
                    "Egress" => types.egress = true,
                    other => {
                        let span = at.field(&format!("spec.policyTypes[{i}]"));
                        let d = self.err(
                            Code::WrongType,
                            span,
                            format!("unknown policy type `{other}`"),
                            "expected Ingress or Egress",
                        );
                        if let Some(s) = crate::util::closest(other, ["Ingress", "Egress"]) {
                            d.hints.push(format!("did you mean `{s}`?"));
                        }
                        ok = false;
                    }
                }
            }
        }
        let mut ingress = Vec::new();
        for (i, r) in spec.ingress.iter().flatten().enumerate() {
            let path = format!("spec.ingress[{i}]");
            let peers = self.np_peers(r.from.as_deref(), at, &format!("{path}.from"));
            let ports = self.np_ports(r.ports.as_deref(), at, &path);
            match (peers, ports) {
                (Some(peers), Some(ports)) => ingress.push(NpRule {
                    peers,
                    ports,
                    rule: rule_ref(&origin, "ingress", i, None, &path),
                }),
                _ => ok = false,
            }
        }
        let mut egress = Vec::new();
        for (i, r) in spec.egress.iter().flatten().enumerate() {
            let path = format!("spec.egress[{i}]");
            let peers = self.np_peers(r.to.as_deref(), at, &format!("{path}.to"));
            let ports = self.np_ports(r.ports.as_deref(), at, &path);
            match (peers, ports) {
                (Some(peers), Some(ports)) => egress.push(NpRule {
                    peers,
                    ports,
                    rule: rule_ref(&origin, "egress", i, None, &path),
                }),
                _ => ok = false,
            }
        }
        match (ok, pod_selector) {
            (true, Some(pod_selector)) => Some(NetworkPolicy {
                namespace,
                name: origin.name.clone(),
                pod_selector,
                policy_types: types,
                ingress,
                egress,
                origin,
            }),
            _ => None,
        }
    }

    fn np_peers(
        &mut self,
        peers: Option<&[k8s_openapi::api::networking::v1::NetworkPolicyPeer]>,
        at: At,
        path: &str,
    ) -> Option<Vec<NpPeer>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, p) in peers.into_iter().flatten().enumerate() {
            let ppath = format!("{path}[{i}]");
            if let Some(block) = &p.ip_block {
                if p.pod_selector.is_some() || p.namespace_selector.is_some() {
                    let span = at.field(&ppath);
                    let d = self.err(
                        Code::WrongType,
                        span,
                        "a peer with ipBlock may not also have selectors",
                        "ipBlock and a selector",
                    );
                    d.hints
                        .push("split it into two peers: one ipBlock, one selector".into());
                    ok = false;
                    continue;
                }
                if block.cidr.is_empty() {
                    let span = at.key(&format!("{ppath}.ipBlock"));
                    let d = self.err(
                        Code::MissingField,
                        span,
                        "an ipBlock needs a `cidr`",
                        "no cidr",
                    );
                    d.hints
                        .push("add `cidr:` such as `10.0.0.0/8` (and `except:` inside it)".into());
                    ok = false;
                    continue;
                }
                match self.cidr_with_except(
                    &block.cidr,
                    block.except.as_deref().unwrap_or(&[]),
                    at,
                    &format!("{ppath}.ipBlock"),
                ) {
                    Some(c) => out.push(NpPeer::IpBlock {
                        cidr: c.cidr,
                        except: c.except,
                    }),
                    None => ok = false,
                }
                continue;
            }
            if p.pod_selector.is_none() && p.namespace_selector.is_none() {
                let span = at.field(&ppath);
                let d = self.err(
                    Code::MissingField,
                    span,
                    "a peer needs podSelector, namespaceSelector or ipBlock",
                    "empty peer",
                );
                d.hints.push(
                    "to allow every pod of every namespace, write `namespaceSelector: {}`".into(),
                );
                ok = false;
                continue;
            }
            let namespaces = match &p.namespace_selector {
                Some(s) => self
                    .selector(Some(s), at, &format!("{ppath}.namespaceSelector"))
                    .map(Some),
                None => Some(None),
            };
            let pods = match &p.pod_selector {
                Some(s) => self
                    .selector(Some(s), at, &format!("{ppath}.podSelector"))
                    .map(Some),
                None => Some(None),
            };
            match (namespaces, pods) {
                (Some(namespaces), Some(pods)) => out.push(NpPeer::Pods { namespaces, pods }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn np_ports(
        &mut self,
        ports: Option<&[k8s_openapi::api::networking::v1::NetworkPolicyPort]>,
        at: At,
        rule_path: &str,
    ) -> Option<Vec<NpPort>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, p) in ports.into_iter().flatten().enumerate() {
            let path = format!("{rule_path}.ports[{i}]");
            let Some(Some(protocol)) = self.protocol(
                p.protocol.as_deref(),
                at,
                &format!("{path}.protocol"),
                false,
            ) else {
                ok = false;
                continue;
            };
            let port = match &p.port {
                None => None,
                Some(K8sIntOrString::Int(n)) => {
                    match self.port_number(i64::from(*n), at, &format!("{path}.port")) {
                        Some(n) => Some(PortRef::Number(n)),
                        None => {
                            ok = false;
                            continue;
                        }
                    }
                }
                Some(K8sIntOrString::String(name)) => {
                    match self.port_name(name, at, &format!("{path}.port")) {
                        Some(r) => Some(r),
                        None => {
                            ok = false;
                            continue;
                        }
                    }
                }
            };
            let end_port = match (p.end_port, &port) {
                (None, _) => None,
                (Some(end), Some(PortRef::Number(start))) => {
                    if end < i32::from(*start) || end > 65535 {
                        let span = at.field(&format!("{path}.endPort"));
                        let why = if end > 65535 {
                            "is above 65535"
                        } else {
                            "is smaller than port"
                        };
                        let d = self.err(
                            Code::EndPort,
                            span,
                            format!("endPort {end} {why}"),
                            "invalid endPort",
                        );
                        d.hints
                            .push(format!("endPort must be between port ({start}) and 65535"));
                        ok = false;
                        continue;
                    }
                    Some(end as u16)
                }
                (Some(_), _) => {
                    let span = at.field(&format!("{path}.endPort"));
                    let d = self.err(
                        Code::EndPort,
                        span,
                        "endPort needs a numeric port",
                        "endPort without a port number",
                    );
                    d.hints
                        .push("give `port` as a number; a named port cannot start a range".into());
                    ok = false;
                    continue;
                }
            };
            out.push(NpPort {
                protocol,
                port,
                end_port,
            });
        }
        ok.then_some(out)
    }
}
