//! Namespaces, nodes and pods: their checks, and the pod IPs the model assigns or takes
//! from the pod's node.

use super::*;

impl Builder<'_> {
    pub(super) fn namespace(&mut self, ns: &core::Namespace, at: At) {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let mut labels: Labels = ns.metadata.labels.clone().unwrap_or_default();
        // The API server sets this label on every namespace; selectors rely on it.
        labels.insert("kubernetes.io/metadata.name".into(), name.clone());
        let origin = Some(self.origin("Namespace", &ns.metadata, false, at.span));
        self.cluster.namespaces.insert(
            name.clone(),
            Namespace {
                name,
                labels,
                origin,
            },
        );
    }

    pub(super) fn node(&mut self, n: &core::Node, at: At) -> Node {
        let mut addresses = Vec::new();
        let status_addrs = n.status.as_ref().and_then(|s| s.addresses.as_ref());
        let mut host_ips: Vec<IpAddr> = Vec::new();
        for kind in ["InternalIP", "ExternalIP"] {
            for a in status_addrs
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == kind)
            {
                if let Ok(ip) = a.address.parse::<IpAddr>() {
                    if !host_ips.iter().any(|h| h.is_ipv6() == ip.is_ipv6()) {
                        host_ips.push(ip);
                    }
                }
            }
        }
        host_ips.sort_by_key(|ip| ip.is_ipv6());
        if let Some(name) = &n.metadata.name {
            self.node_host_ips.insert(name.clone(), host_ips);
        }
        for (i, a) in status_addrs.into_iter().flatten().enumerate() {
            if a.type_ == "InternalIP" || a.type_ == "ExternalIP" {
                match a.address.parse::<IpAddr>() {
                    Ok(ip) => addresses.push(ip),
                    Err(_) => {
                        let span = at.field(&format!("status.addresses[{i}].address"));
                        let d = self.err(
                            Code::InvalidCidr,
                            span,
                            format!("node address `{}` is not an IP address", a.address),
                            "not an IP",
                        );
                        d.hints.push(format!(
                            "an address of type {} is an IP address; a DNS name has type Hostname",
                            a.type_
                        ));
                    }
                }
            }
        }
        let mut pod_cidrs = Vec::new();
        let spec = n.spec.as_ref();
        let plural = spec.and_then(|s| s.pod_cidrs.clone());
        let listed = plural.is_some();
        let cidrs = plural.or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]));
        for (i, c) in cidrs.into_iter().flatten().enumerate() {
            match c.parse::<IpNet>() {
                Ok(net) => pod_cidrs.push(net.trunc()),
                Err(_) => {
                    let path = if listed {
                        format!("spec.podCIDRs[{i}]")
                    } else {
                        "spec.podCIDR".to_string()
                    };
                    let span = at.field(&path);
                    let d = self.err(
                        Code::InvalidCidr,
                        span,
                        format!("pod CIDR `{c}` is invalid"),
                        "not a CIDR",
                    );
                    d.hints
                        .push("write an address and a prefix length, such as 10.244.1.0/24".into());
                }
            }
        }
        Node {
            name: n.metadata.name.clone().unwrap_or_default(),
            labels: n.metadata.labels.clone().unwrap_or_default(),
            addresses,
            pod_cidrs,
            boot_id: n
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.boot_id.clone())
                .filter(|b| !b.is_empty()),
            origin: Some(self.origin("Node", &n.metadata, false, at.span)),
        }
    }

    pub(super) fn pod(&mut self, p: &core::Pod, at: At) -> Option<Pod> {
        let origin = self.origin("Pod", &p.metadata, true, at.span);
        let default_spec;
        let spec = match &p.spec {
            Some(spec) => spec,
            None => {
                default_spec = core::PodSpec::default();
                &default_spec
            }
        };
        let has_containers = self.require_containers(p.spec.as_ref(), at, "spec");
        // Checked before the early returns below, so that every problem of the pod is listed.
        let ports = self.container_ports(spec, at, "spec");
        let mut bad_ip = false;
        let mut ips = Vec::new();
        let status = p.status.as_ref();
        // (address, index in status.podIPs); the field path is only made for a diagnostic.
        let listed: Vec<(&str, Option<usize>)> = match status.and_then(|s| s.pod_ips.as_ref()) {
            Some(list) if !list.is_empty() => list
                .iter()
                .enumerate()
                .map(|(i, ip)| (ip.ip.as_str(), Some(i)))
                .collect(),
            _ => status
                .and_then(|s| s.pod_ip.as_deref())
                .map(|ip| vec![(ip, None)])
                .unwrap_or_default(),
        };
        for (text, index) in listed {
            match text.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => {
                    let path = match index {
                        Some(i) => format!("status.podIPs[{i}].ip"),
                        None => "status.podIP".to_string(),
                    };
                    let span = at.field(&path);
                    let d = self.err(
                        Code::InvalidCidr,
                        span,
                        format!("pod IP `{text}` is not an IP address"),
                        "not an IP",
                    );
                    d.hints.push("write an IPv4 address such as 10.244.1.5 or an IPv6 address such as fd00::5".into());
                    bad_ip = true;
                }
            }
        }
        // ValidatePodStatusUpdate: when both are given, podIPs[0] is podIP.
        if let Some(status) = status {
            if let (Some(ip), Some(first)) = (
                status.pod_ip.as_deref().filter(|s| !s.is_empty()),
                status.pod_ips.as_ref().and_then(|l| l.first()),
            ) {
                if ip != first.ip {
                    let d = self.err(
                        Code::InvalidCidr,
                        at.field("status.podIPs[0].ip"),
                        format!("podIPs[0] is {} but podIP is {ip}", first.ip),
                        "differs from podIP",
                    );
                    d.hints
                        .push("the first entry of podIPs must be podIP".into());
                    bad_ip = true;
                }
            }
        }
        // ValidatePodSpec: a nodeName is a node's name, a DNS-1123 subdomain.
        if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
            if !is_dns_subdomain(node) {
                let d = self.err(
                    Code::InvalidName,
                    at.field("spec.nodeName"),
                    format!("nodeName `{node}` is not a valid node name"),
                    "invalid node name",
                );
                d.hints.push(
                    "a node name is a DNS-1123 subdomain: lower-case letters, digits, '-' and '.'"
                        .into(),
                );
                bad_ip = true;
            }
        }
        let ports = ports.filter(|_| has_containers && !bad_ip)?;
        // A pod that has finished (phase Succeeded or Failed) has had its sandbox torn
        // down and its address released: the address may already belong to a running pod
        // (normal in `kubectl get pods -A`). It takes no part in the datapath, as kube-proxy
        // and Cilium ignore terminated pods, so it is not modelled.
        if status
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed")
        {
            return None;
        }
        ips.sort_by_key(|ip| ip.is_ipv6());
        Some(Pod {
            namespace: origin.namespace.clone().unwrap_or_default(),
            name: origin.name.clone(),
            labels: p.metadata.labels.clone().unwrap_or_default(),
            ips,
            node: spec.node_name.clone(),
            ports,
            extra_ports: Vec::new(),
            service_account: spec
                .service_account_name
                .clone()
                .unwrap_or_else(|| "default".into()),
            host_network: spec.host_network.unwrap_or(false),
            cilium_labels: Labels::new(),
            owner: p
                .metadata
                .owner_references
                .as_ref()
                .and_then(|o| o.first())
                .map(|o| format!("{}/{}", o.kind, o.name)),
            origin,
        })
    }

    /// Checks that a pod spec at `base` has a container, as the API requires. A missing spec
    /// is accepted: hand-written test inputs often give pods only labels and an IP.
    pub(in crate::model) fn require_containers(
        &mut self,
        spec: Option<&core::PodSpec>,
        at: At,
        base: &str,
    ) -> bool {
        // ValidatePodSpec (pkg/apis/core/validation) requires `containers` and a name for
        // each container; a Pod or pod template without `spec` has no containers either.
        let Some(spec) = spec else {
            let at_kind = at.key(base.rsplit_once('.').map_or("kind", |(parent, _)| parent));
            let d = self.err(
                Code::MissingField,
                at_kind,
                format!("`{base}` is missing; a pod needs a spec with containers"),
                "no spec",
            );
            d.hints.push(format!(
                "add `{base}:` with `containers:` and at least one `- name: ...` and `image: ...`"
            ));
            return false;
        };
        let mut named = true;
        let mut seen = BTreeSet::new();
        for (i, c) in spec.containers.iter().enumerate() {
            // ValidatePodSpec: each container name is a DNS-1123 label, unique in the pod.
            if !c.name.is_empty() && !is_dns_label(&c.name) {
                let path = format!("{base}.containers[{i}].name");
                let d = self.err(
                    Code::InvalidName,
                    at.field(&path),
                    format!("container name `{}` is invalid", c.name),
                    "invalid name",
                );
                d.hints.push("a container name is a DNS-1123 label: at most 63 lower-case letters, digits or '-', starting and ending with a letter or digit".into());
                named = false;
            } else if !c.name.is_empty() && !seen.insert(c.name.as_str()) {
                let path = format!("{base}.containers[{i}].name");
                let d = self.err(
                    Code::InvalidName,
                    at.field(&path),
                    format!("container name `{}` is used twice", c.name),
                    "used again here",
                );
                d.hints
                    .push("the containers of a pod need distinct names; rename one".into());
                named = false;
            }
            if c.name.is_empty() {
                let path = format!("{base}.containers[{i}]");
                let d = self.err(
                    Code::MissingField,
                    at.field(&path),
                    format!("`{path}` has no name"),
                    "no name",
                );
                d.hints
                    .push("add `name:` (a DNS label, unique in the pod) to the container".into());
                named = false;
            }
        }
        if !spec.containers.is_empty() {
            return named;
        }
        let d = self.err(
            Code::MissingField,
            at.key(base),
            format!("`{base}` has no containers; a pod needs at least one"),
            "no `containers` here",
        );
        d.hints.push(format!(
            "add `containers:` with at least one `- name: ...` and `image: ...` under `{base}`"
        ));
        false
    }

    /// Reads and checks the container ports of a pod spec at `base` (`spec` or `spec.template.spec`).
    pub(in crate::model) fn container_ports(
        &mut self,
        spec: &core::PodSpec,
        at: At,
        base: &str,
    ) -> Option<Vec<ContainerPort>> {
        let mut out = Vec::new();
        let mut ok = true;
        let mut names = BTreeSet::new();
        for (ci, c) in spec.containers.iter().enumerate() {
            for (pi, p) in c.ports.iter().flatten().enumerate() {
                // Made only for a diagnostic: this runs for every port of every pod.
                let path = || format!("{base}.containers[{ci}].ports[{pi}]");
                let port = match u16::try_from(p.container_port) {
                    Ok(n) if n > 0 => n,
                    Ok(0)
                        if !self.sources.exists(
                            at.span,
                            &FieldPath::parse(&format!("{}.containerPort", path())),
                        ) =>
                    {
                        self.missing_port(at, &format!("{}.containerPort", path()));
                        ok = false;
                        continue;
                    }
                    _ => {
                        let path = path();
                        let span = at.field(&format!("{path}.containerPort"));
                        let d = self.err(
                            Code::PortRange,
                            span,
                            format!("containerPort {} is out of range", p.container_port),
                            "out of range",
                        );
                        d.hints.push("a port is a number from 1 to 65535".into());
                        ok = false;
                        continue;
                    }
                };
                let valid = p
                    .protocol
                    .as_deref()
                    .map_or(Some(Protocol::Tcp), Protocol::parse)
                    .filter(|pr| *pr != Protocol::Icmp);
                let protocol = match valid.map(Some).or_else(|| {
                    self.protocol(
                        p.protocol.as_deref(),
                        at,
                        &format!("{}.protocol", path()),
                        false,
                    )
                }) {
                    Some(Some(pr)) => pr,
                    _ => {
                        ok = false;
                        continue;
                    }
                };
                if let Some(name) = &p.name {
                    if let Err(why) = check_port_name(name) {
                        let span = at.field(&format!("{}.name", path()));
                        let d = self.err(
                            Code::InvalidPortName,
                            span,
                            format!("port name `{name}` is invalid: {why}"),
                            "invalid port name",
                        );
                        d.hints.push("a port name is an IANA service name: at most 15 lower-case letters, digits or '-', with at least one letter".into());
                        ok = false;
                        continue;
                    }
                    if !names.insert(name.clone()) {
                        let span = at.field(&format!("{}.name", path()));
                        let d = self.err(
                            Code::InvalidPortName,
                            span,
                            format!("port name `{name}` is used twice in this pod"),
                            "duplicate name",
                        );
                        d.hints.push(
                            "port names must be unique across the containers of a pod; rename one"
                                .into(),
                        );
                        ok = false;
                        continue;
                    }
                }
                out.push(ContainerPort {
                    name: p.name.clone(),
                    port,
                    protocol,
                });
            }
        }
        ok.then_some(out)
    }

    /// Parses a protocol; `Some(None)` is ANY (only where `allow_any`), `None` an error.
    pub(super) fn protocol(
        &mut self,
        text: Option<&str>,
        at: At,
        path: &str,
        allow_any: bool,
    ) -> Option<Option<Protocol>> {
        let text = text.unwrap_or("TCP");
        if allow_any && (text == "ANY" || text.is_empty()) {
            return Some(None);
        }
        match Protocol::parse(text) {
            Some(Protocol::Icmp) | None => {
                let span = at.field(path);
                let expected = if allow_any {
                    "TCP, UDP, SCTP or ANY"
                } else {
                    "TCP, UDP or SCTP"
                };
                let d = self.err(
                    Code::UnknownProtocol,
                    span,
                    format!("unknown protocol `{text}`"),
                    format!("expected {expected}"),
                );
                let upper = text.to_ascii_uppercase();
                if Protocol::parse(&upper).is_some_and(|p| p != Protocol::Icmp) {
                    d.hints.push(format!("protocols are upper case: `{upper}`"));
                } else {
                    d.hints.push(format!("use one of {expected}"));
                }
                None
            }
            Some(p) => Some(Some(p)),
        }
    }

    /// A host-network pod shares its node's network namespace: its `status.podIPs` are the
    /// node's host IPs as the kubelet reports them (Kubernetes API reference, PodStatus
    /// `podIP`: "for pods with hostNetwork, this is the host IP"). A pod that lists no IP
    /// gets them from its node here; without a known node it has none.
    pub(super) fn host_network_ips(&mut self) {
        for pod in self
            .cluster
            .pods
            .iter_mut()
            .filter(|p| p.host_network && p.ips.is_empty())
        {
            if let Some(ips) = pod.node.as_ref().and_then(|n| self.node_host_ips.get(n)) {
                pod.ips = ips.clone();
            }
        }
    }

    pub(super) fn assign_pod_ips(&mut self) {
        if !self.options.assign_pod_ips
            || !self
                .cluster
                .pods
                .iter()
                .any(|p| p.ips.is_empty() && !p.host_network)
        {
            return;
        }
        let taken: HashSet<IpAddr> = self
            .cluster
            .pods
            .iter()
            .flat_map(|p| p.ips.iter().copied())
            .collect();
        let node_cidrs: BTreeMap<String, Vec<IpNet>> = self
            .cluster
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.pod_cidrs.clone()))
            .collect();
        let mut cursors: BTreeMap<IpNet, u128> = BTreeMap::new();
        let fallback = self.options.pod_cidr;
        let mut exhausted: Option<(Span, usize)> = None;
        for pod in self
            .cluster
            .pods
            .iter_mut()
            .filter(|p| p.ips.is_empty() && !p.host_network)
        {
            let net = pod
                .node
                .as_ref()
                .and_then(|n| node_cidrs.get(n))
                .and_then(|c| {
                    c.iter()
                        .find(|n| n.addr().is_ipv4() == fallback.addr().is_ipv4())
                        .copied()
                })
                .unwrap_or(fallback);
            let cursor = cursors.entry(net).or_insert(1);
            match next_free(net, cursor, &taken) {
                Some(ip) => pod.ips.push(ip),
                None => match (&mut exhausted, pod.origin.span) {
                    (Some((_, n)), _) => *n += 1,
                    (None, Some(span)) => exhausted = Some((span, 1)),
                    (None, None) => {}
                },
            }
        }
        if let Some((span, n)) = exhausted {
            let at = self
                .sources
                .locate_key(span, &FieldPath::parse("metadata.name"));
            self.sink.push(
                Diagnostic::error(
                    Code::PodCidrExhausted,
                    format!("the pod CIDR {fallback} has no free address for {n} pod(s)"),
                )
                .at(at, "the first pod without an address comes from here")
                .hint("give a larger range with --pod-cidr, or pod IPs in the manifests"),
            );
        }
    }

    pub(super) fn check_pod_ips(&mut self) {
        let mut owner: FxHashMap<IpAddr, usize> = FxHashMap::default();
        let mut conflicts = Vec::new();
        for (i, pod) in self
            .cluster
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.host_network)
        {
            for ip in &pod.ips {
                if let Some(&first) = owner.get(ip) {
                    conflicts.push((first, i, *ip));
                } else {
                    owner.insert(*ip, i);
                }
            }
        }
        for (first, second, ip) in conflicts {
            let (a, b) = (&self.cluster.pods[first], &self.cluster.pods[second]);
            let d = Diagnostic::error(
                Code::AddressConflict,
                format!("pods {} and {} both have IP {ip}", a.key(), b.key()),
            )
            .hint("every pod needs its own IP; remove or change one");
            let d = self.two_uses(d, (&b.origin, "status.podIP"), (&a.origin, "status.podIP"));
            self.sink.push(d);
        }
    }
}
