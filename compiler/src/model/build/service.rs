//! Services: their checks, the cluster IPs and node ports the API server would allocate,
//! and the ClientIP affinity.

use super::*;

impl Builder<'_> {
    /// Two Services may not share a cluster IP (the API server's IP allocator refuses the
    /// second: "provided IP is already allocated"), and no address, port and protocol may
    /// lead to two Services, such as an external IP equal to another Service's cluster IP.
    /// The API server accepts the latter, but kube-proxy then matches whichever rule it
    /// happened to write first, so pipec refuses it rather than pick one (its own rule).
    pub(super) fn check_service_ips(&mut self) {
        let mut cluster_ip_owner: FxHashMap<IpAddr, usize> = FxHashMap::default();
        let mut frontends: FxHashMap<(IpAddr, u16, String), (usize, &'static str)> =
            FxHashMap::default();
        let mut conflicts = Vec::new();
        for (i, svc) in self.cluster.services.iter().enumerate() {
            for ip in &svc.cluster_ips {
                if let Some(&first) = cluster_ip_owner.get(ip) {
                    conflicts.push((first, i, *ip, "cluster IP", "spec.clusterIP"));
                } else {
                    cluster_ip_owner.insert(*ip, i);
                }
            }
            let addresses = svc
                .cluster_ips
                .iter()
                .map(|ip| (*ip, "cluster IP", "spec.clusterIP"))
                .chain(
                    svc.external_ips
                        .iter()
                        .map(|ip| (*ip, "external IP", "spec.externalIPs")),
                )
                .chain(
                    svc.load_balancer_ips
                        .iter()
                        .map(|ip| (*ip, "load balancer IP", "status.loadBalancer")),
                );
            for (ip, what, path) in addresses {
                for port in &svc.ports {
                    let key = (ip, port.port, format!("{:?}", port.protocol));
                    match frontends.get(&key) {
                        Some(&(first, _)) if first != i => {
                            conflicts.push((first, i, ip, what, path));
                        }
                        Some(_) => {}
                        None => {
                            frontends.insert(key, (i, what));
                        }
                    }
                }
            }
        }
        self.check_node_ports();
        conflicts.sort_by_key(|c| (c.0, c.1, c.2));
        conflicts.dedup_by_key(|c| (c.0, c.1, c.2));
        for (first, second, ip, what, path) in conflicts {
            let (a, b) = (
                &self.cluster.services[first],
                &self.cluster.services[second],
            );
            let d = Diagnostic::error(
                Code::AddressConflict,
                format!(
                    "Services {} and {} both take {ip} (the {what} of {})",
                    a.key(),
                    b.key(),
                    b.key()
                ),
            )
            .hint("give each Service its own cluster IP, and no external IP that another Service uses for the same port");
            let d = self.two_uses(d, (&b.origin, path), (&a.origin, "spec"));
            self.sink.push(d);
        }
    }

    /// Two Services may not take one nodePort and protocol: the API server's node-port
    /// allocator refuses the second ("provided port is already allocated").
    fn check_node_ports(&mut self) {
        let mut owner: FxHashMap<(u16, String), usize> = FxHashMap::default();
        let mut conflicts = Vec::new();
        for (i, svc) in self.cluster.services.iter().enumerate() {
            for p in &svc.ports {
                let Some(np) = p.node_port else { continue };
                let key = (np, format!("{:?}", p.protocol));
                match owner.get(&key) {
                    Some(&first) if first != i => conflicts.push((first, i, np)),
                    Some(_) => {}
                    None => {
                        owner.insert(key, i);
                    }
                }
            }
        }
        for (first, second, np) in conflicts {
            let (a, b) = (
                &self.cluster.services[first],
                &self.cluster.services[second],
            );
            let d = Diagnostic::error(
                Code::InvalidService,
                format!("Services {} and {} both take nodePort {np}", a.key(), b.key()),
            )
            .hint("a nodePort belongs to one Service; change one, or leave it out to have one allocated");
            let d = self.two_uses(d, (&b.origin, "spec.ports"), (&a.origin, "spec.ports"));
            self.sink.push(d);
        }
    }

    /// Points a conflict at the field of its second use and, as a secondary label, at the
    /// field of its first use; objects pipec made itself have no text and get no label.
    pub(super) fn two_uses(
        &self,
        mut d: Diagnostic,
        second: (&Origin, &str),
        first: (&Origin, &str),
    ) -> Diagnostic {
        if let Some(span) = second.0.span {
            d = d.at(
                self.sources.locate(span, &FieldPath::parse(second.1)),
                "second use",
            );
        }
        if let Some(span) = first.0.span {
            d = d.also(
                self.sources.locate(span, &FieldPath::parse(first.1)),
                "first use",
            );
        }
        d
    }

    pub(super) fn service(&mut self, s: &core::Service, at: At) {
        let origin = self.origin("Service", &s.metadata, true, at.span);
        let spec = s.spec.clone().unwrap_or_default();
        let service_type = match spec.type_.as_deref().unwrap_or("ClusterIP") {
            "ClusterIP" => ServiceType::ClusterIp,
            "NodePort" => ServiceType::NodePort,
            "LoadBalancer" => ServiceType::LoadBalancer,
            "ExternalName" => ServiceType::ExternalName,
            other => {
                let span = at.field("spec.type");
                let d = self.err(
                    Code::InvalidService,
                    span,
                    format!("unknown Service type `{other}`"),
                    "unknown type",
                );
                d.hints
                    .push("use ClusterIP, NodePort, LoadBalancer or ExternalName".into());
                return;
            }
        };
        let mut ok = true;
        let mut cluster_ips = Vec::new();
        let listed = spec
            .cluster_ips
            .clone()
            .filter(|l| !l.is_empty())
            .or_else(|| spec.cluster_ip.clone().map(|c| vec![c]));
        for (i, text) in listed.into_iter().flatten().enumerate() {
            if text == "None" || text.is_empty() {
                continue;
            }
            match text.parse::<IpAddr>() {
                Ok(ip) => cluster_ips.push(ip),
                Err(_) => {
                    let path = if spec.cluster_ips.is_some() {
                        format!("spec.clusterIPs[{i}]")
                    } else {
                        "spec.clusterIP".into()
                    };
                    let span = at.field(&path);
                    let d = self.err(
                        Code::InvalidCidr,
                        span,
                        format!("cluster IP `{text}` is not an IP address"),
                        "not an IP",
                    );
                    d.hints.push(
                        "write an IP address, `None` for a headless Service, or leave it out"
                            .into(),
                    );
                    ok = false;
                }
            }
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        let key = (
            origin.namespace.clone().unwrap_or_default(),
            origin.name.clone(),
        );
        let mut families = Vec::new();
        for (i, f) in spec.ip_families.iter().flatten().enumerate() {
            match f.as_str() {
                "IPv4" => families.push(false),
                "IPv6" => families.push(true),
                other => {
                    let d = self.err(
                        Code::InvalidService,
                        at.field(&format!("spec.ipFamilies[{i}]")),
                        format!("unknown IP family `{other}`"),
                        "expected IPv4 or IPv6",
                    );
                    d.hints.push("write `IPv4` or `IPv6`".into());
                    ok = false;
                }
            }
        }
        if families.len() > 2 || (families.len() == 2 && families[0] == families[1]) {
            let d = self.err(
                Code::InvalidService,
                at.field("spec.ipFamilies"),
                "ipFamilies lists a family twice or more than two families",
                "invalid families",
            );
            d.hints
                .push("list one family, or IPv4 and IPv6 once each (the first is primary)".into());
            ok = false;
        }
        let policy = match spec.ip_family_policy.as_deref() {
            None | Some("SingleStack") => FamilyPolicy::Single,
            Some("PreferDualStack") => FamilyPolicy::PreferDual,
            Some("RequireDualStack") => FamilyPolicy::RequireDual,
            Some(other) => {
                let d = self.err(
                    Code::InvalidService,
                    at.field("spec.ipFamilyPolicy"),
                    format!("unknown ipFamilyPolicy `{other}`"),
                    "unknown policy",
                );
                d.hints
                    .push("use SingleStack, PreferDualStack or RequireDualStack".into());
                ok = false;
                FamilyPolicy::Single
            }
        };
        if families.len() == 2
            && spec
                .ip_family_policy
                .as_deref()
                .is_none_or(|p| p == "SingleStack")
        {
            // The API server refuses two families under SingleStack (and defaults the policy
            // to SingleStack only when one family is given).
            if spec.ip_family_policy.is_some() {
                let d = self.err(
                    Code::InvalidService,
                    at.field("spec.ipFamilies"),
                    "two ipFamilies with ipFamilyPolicy SingleStack",
                    "two families",
                );
                d.hints.push(
                    "use ipFamilyPolicy PreferDualStack or RequireDualStack, or list one family"
                        .into(),
                );
                ok = false;
            }
        }
        // ValidateService: when both are given, clusterIPs[0] is clusterIP.
        if let (Some(ip), Some(first)) = (
            spec.cluster_ip.as_deref().filter(|s| !s.is_empty()),
            spec.cluster_ips.as_ref().and_then(|l| l.first()),
        ) {
            if ip != first {
                let d = self.err(
                    Code::InvalidService,
                    at.field("spec.clusterIPs[0]"),
                    format!("clusterIPs[0] is {first} but clusterIP is {ip}"),
                    "differs from clusterIP",
                );
                d.hints
                    .push("the first entry of clusterIPs must be clusterIP".into());
                ok = false;
            }
        }
        for (field, value) in [
            ("spec.externalTrafficPolicy", &spec.external_traffic_policy),
            ("spec.internalTrafficPolicy", &spec.internal_traffic_policy),
        ] {
            if let Some(v) = value
                .as_deref()
                .filter(|v| !matches!(*v, "Cluster" | "Local"))
            {
                let d = self.err(
                    Code::WrongType,
                    at.field(field),
                    format!("unknown traffic policy `{v}`"),
                    "expected Cluster or Local",
                );
                d.hints.push(
                    crate::util::closest(v, ["Cluster", "Local"])
                        .map_or("use Cluster or Local".into(), |s| {
                            format!("did you mean `{s}`?")
                        }),
                );
                ok = false;
            }
        }
        ok &= self.check_labels(spec.selector.as_ref(), at, "spec.selector");
        let policy = if families.len() == 2 && spec.ip_family_policy.is_none() {
            FamilyPolicy::RequireDual
        } else {
            policy
        };
        let field = if spec.ip_families.is_some() {
            "spec.ipFamilies"
        } else if spec.ip_family_policy.is_some() {
            "spec.ipFamilyPolicy"
        } else {
            "spec"
        };
        self.families
            .insert(key.clone(), (families, policy, at.span, field));
        if service_type == ServiceType::LoadBalancer
            && spec.allocate_load_balancer_node_ports == Some(false)
        {
            self.no_lb_node_ports.insert(key);
        }
        let mut ports = Vec::new();
        let all_ports = spec.ports.clone().unwrap_or_default();
        // ValidateService: a Service needs a port unless it is headless or ExternalName.
        if all_ports.is_empty() && !headless && service_type != ServiceType::ExternalName {
            let span = at.key(if spec.ports.is_some() {
                "spec.ports"
            } else {
                "spec"
            });
            let d = self.err(
                Code::MissingField,
                span,
                "the Service has no ports",
                "no `ports`",
            );
            d.hints.push("add `ports:` with at least one `- port: N`; only a headless (clusterIP: None) or ExternalName Service may have none".into());
            ok = false;
        }
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        let mut node_ports = BTreeSet::new();
        for (i, p) in all_ports.iter().enumerate() {
            let path = format!("spec.ports[{i}]");
            let Some(port) = self.port_number(i64::from(p.port), at, &format!("{path}.port"))
            else {
                ok = false;
                continue;
            };
            let Some(Some(protocol)) = self.protocol(
                p.protocol.as_deref(),
                at,
                &format!("{path}.protocol"),
                false,
            ) else {
                ok = false;
                continue;
            };
            if all_ports.len() > 1 && p.name.as_deref().is_none_or(str::is_empty) {
                let span = at.field(&path);
                let d = self.err(
                    Code::InvalidService,
                    span,
                    "every port of a multi-port Service needs a name",
                    "unnamed port",
                );
                d.hints.push("add `name:` to each port".into());
                ok = false;
            }
            // ValidateService (pkg/apis/core/validation) refuses two ports with one port
            // number and protocol, and two with one nodePort and protocol.
            if !numbers.insert((port, format!("{protocol:?}"))) {
                let span = at.field(&format!("{path}.port"));
                let d = self.err(
                    Code::InvalidService,
                    span,
                    format!("port {port}/{protocol} is listed twice"),
                    "duplicate port",
                );
                d.hints.push(
                    "each port and protocol may appear once in a Service; remove or change one"
                        .into(),
                );
                ok = false;
            }
            if let Some(np) = p
                .node_port
                .filter(|_| service_type != ServiceType::ClusterIp)
            {
                if !node_ports.insert((np, format!("{protocol:?}"))) {
                    let span = at.field(&format!("{path}.nodePort"));
                    let d = self.err(
                        Code::InvalidService,
                        span,
                        format!("nodePort {np}/{protocol} is listed twice"),
                        "duplicate nodePort",
                    );
                    d.hints
                        .push("each nodePort and protocol may appear once; change one".into());
                    ok = false;
                }
            }
            if let Some(name) = p.name.as_ref().filter(|n| !n.is_empty()) {
                // ValidateServicePort: a port name is a DNS-1123 label.
                if !is_dns_label(name) {
                    let span = at.field(&format!("{path}.name"));
                    let d = self.err(
                        Code::InvalidName,
                        span,
                        format!("port name `{name}` is invalid"),
                        "invalid name",
                    );
                    d.hints.push("a Service port name is a DNS-1123 label: at most 63 lower-case letters, digits or '-', starting and ending with a letter or digit".into());
                    ok = false;
                }
                if !names.insert(name.clone()) {
                    let span = at.field(&format!("{path}.name"));
                    let d = self.err(
                        Code::InvalidService,
                        span,
                        format!("port name `{name}` is used twice"),
                        "duplicate name",
                    );
                    d.hints
                        .push("the ports of a Service need distinct names; rename one".into());
                    ok = false;
                }
            }
            let target = match &p.target_port {
                // SetDefaults_Service: a targetPort of 0 or "" is the port itself.
                None | Some(K8sIntOrString::Int(0)) => PortRef::Number(port),
                Some(K8sIntOrString::String(name)) if name.is_empty() => PortRef::Number(port),
                Some(K8sIntOrString::Int(n)) => {
                    match self.port_number(i64::from(*n), at, &format!("{path}.targetPort")) {
                        Some(n) => PortRef::Number(n),
                        None => {
                            ok = false;
                            continue;
                        }
                    }
                }
                Some(K8sIntOrString::String(name)) => match name.parse::<i64>() {
                    Ok(n) => match self.port_number(n, at, &format!("{path}.targetPort")) {
                        Some(n) => PortRef::Number(n),
                        None => {
                            ok = false;
                            continue;
                        }
                    },
                    Err(_) => {
                        if let Err(why) = check_port_name(name) {
                            let span = at.field(&format!("{path}.targetPort"));
                            let d = self.err(
                                Code::InvalidPortName,
                                span,
                                format!("targetPort `{name}` is not a valid port name: {why}"),
                                "invalid name",
                            );
                            d.hints.push("a targetPort is a number, or the name of a container port: at most 15 lower-case letters, digits or '-'".into());
                            ok = false;
                            continue;
                        }
                        PortRef::Name(name.clone())
                    }
                },
            };
            let node_port = match p.node_port {
                Some(np) if service_type == ServiceType::ClusterIp => {
                    let span = at.field(&format!("{path}.nodePort"));
                    let d = self.err(
                        Code::InvalidService,
                        span,
                        format!("nodePort {np} on a ClusterIP Service"),
                        "not allowed here",
                    );
                    d.hints
                        .push("set `type: NodePort` or `LoadBalancer`, or remove nodePort".into());
                    ok = false;
                    None
                }
                Some(np) => self.port_number(i64::from(np), at, &format!("{path}.nodePort")),
                None => None,
            };
            ports.push(ServicePort {
                name: p.name.clone(),
                protocol,
                port,
                target,
                node_port,
            });
        }
        let mut external_ips = Vec::new();
        for (i, text) in spec.external_ips.iter().flatten().enumerate() {
            match text.parse::<IpAddr>() {
                Ok(ip) => external_ips.push(ip),
                Err(_) => {
                    let span = at.field(&format!("spec.externalIPs[{i}]"));
                    let d = self.err(
                        Code::InvalidCidr,
                        span,
                        format!("external IP `{text}` is not an IP address"),
                        "not an IP",
                    );
                    d.hints
                        .push("write an IP address such as 203.0.113.10".into());
                    ok = false;
                }
            }
        }
        if service_type == ServiceType::ExternalName
            && spec.external_name.as_deref().is_none_or(str::is_empty)
        {
            let span = at.key("spec.type");
            let d = self.err(
                Code::InvalidService,
                span,
                "a Service of type ExternalName needs `externalName`",
                "no externalName",
            );
            d.hints
                .push("add `externalName: <DNS name>` to spec, or use another type".into());
            ok = false;
        }
        if let Some(text) = spec.load_balancer_ip.as_deref().filter(|t| !t.is_empty()) {
            if text.parse::<IpAddr>().is_err() {
                let span = at.field("spec.loadBalancerIP");
                let d = self.err(
                    Code::InvalidCidr,
                    span,
                    format!("loadBalancerIP `{text}` is not an IP address"),
                    "not an IP",
                );
                d.hints
                    .push("write an IPv4 address such as 203.0.113.10, or remove the field".into());
                ok = false;
            }
        }
        let lb = s
            .status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        let mut load_balancer_ips = Vec::new();
        for (i, ingress) in lb.into_iter().flatten().enumerate() {
            let Some(text) = ingress.ip.as_deref() else {
                continue;
            };
            match text.parse::<IpAddr>() {
                Ok(ip) => load_balancer_ips.push(ip),
                Err(_) => {
                    let span = at.field(&format!("status.loadBalancer.ingress[{i}].ip"));
                    let d = self.err(
                        Code::InvalidCidr,
                        span,
                        format!("load-balancer ingress IP `{text}` is not an IP address"),
                        "not an IP",
                    );
                    d.hints.push(
                        "write an IP address; a DNS name belongs in `hostname`, not `ip`".into(),
                    );
                    ok = false;
                }
            }
        }
        let affinity_timeout = self.affinity(&spec, at);
        ok &= affinity_timeout.is_ok();
        if !ok {
            return;
        }
        let affinity_timeout = affinity_timeout.unwrap_or_default();
        self.cluster.services.push(Service {
            namespace: origin.namespace.clone().unwrap_or_default(),
            name: origin.name.clone(),
            service_type,
            cluster_ips: if headless { Vec::new() } else { cluster_ips },
            ports,
            selector: spec.selector.clone().filter(|s| !s.is_empty()),
            affinity_timeout,
            external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_ips,
            load_balancer_ips,
            backends: Vec::new(),
            backend_source: BackendSource::None,
            origin: origin.clone(),
        });
        if headless {
            self.headless.insert((
                origin.namespace.clone().unwrap_or_default(),
                origin.name.clone(),
            ));
        }
    }

    /// Gives Services without cluster IPs theirs, as the API server's allocator does:
    /// the families of `ipFamilies` (default: the family of `--service-cidr`), plus the other
    /// family under `PreferDualStack` (when a range of it is configured) or
    /// `RequireDualStack` (an error without one), each from its range in service order.
    pub(super) fn assign_service_ips(&mut self) {
        let taken: HashSet<IpAddr> = self
            .cluster
            .services
            .iter()
            .flat_map(|s| s.cluster_ips.iter().copied())
            .collect();
        let primary = self.options.service_cidr;
        let ranges: [Option<IpNet>; 2] = match primary {
            IpNet::V4(_) => [Some(primary), self.options.service_cidr_v6],
            IpNet::V6(_) => [None, Some(primary)],
        };
        let mut cursors = [1u128, 1u128];
        let mut errors: Vec<(Span, &str, String, String)> = Vec::new();
        for s in self.cluster.services.iter_mut() {
            let key = (s.namespace.clone(), s.name.clone());
            let is_headless = self.headless.contains(&key);
            if !s.cluster_ips.is_empty()
                || is_headless
                || s.service_type == ServiceType::ExternalName
            {
                continue;
            }
            let (mut wanted, policy, span, field) = self.families.get(&key).cloned().unwrap_or((
                Vec::new(),
                FamilyPolicy::Single,
                Span::from_range(FileId(0), 0..0),
                "spec",
            ));
            if wanted.is_empty() {
                wanted.push(primary.addr().is_ipv6());
            }
            if policy != FamilyPolicy::Single && wanted.len() == 1 {
                wanted.push(!wanted[0]);
            }
            for (i, v6) in wanted.iter().enumerate() {
                let slot = usize::from(*v6);
                let Some(net) = ranges[slot] else {
                    if i == 0 || policy == FamilyPolicy::RequireDual {
                        let family = if *v6 { "IPv6" } else { "IPv4" };
                        let flag = if *v6 {
                            "--service-cidr-v6"
                        } else {
                            "--service-cidr with an IPv4 range"
                        };
                        errors.push((
                            span,
                            field,
                            format!("Service {}/{} needs an {family} cluster IP, but no {family} service range is configured", s.namespace, s.name),
                            format!("give an {family} range with {flag} (as kube-apiserver's --service-cluster-ip-range has one per family), or change ipFamilies/ipFamilyPolicy"),
                        ));
                    }
                    continue;
                };
                if let Some(ip) = next_free(net, &mut cursors[slot], &taken) {
                    s.cluster_ips.push(ip);
                }
            }
        }
        for (span, field, message, hint) in errors {
            let at = self.sources.locate_key(span, &FieldPath::parse(field));
            self.sink.push(
                Diagnostic::error(Code::InvalidService, message)
                    .at(at, "this family")
                    .hint(hint),
            );
        }
    }

    /// Gives NodePort and LoadBalancer Service ports without a `nodePort` one from
    /// 30000-32767, as the API server's allocator does, but deterministically: the lowest
    /// free port, in service and port order. A port of the same number and another
    /// protocol in the same Service shares its node port (as the API server's
    /// `findRequestedNodePort`). LoadBalancers with `allocateLoadBalancerNodePorts: false`
    /// get none.
    pub(super) fn assign_node_ports(&mut self) {
        let mut taken: BTreeSet<u16> = self
            .cluster
            .services
            .iter()
            .flat_map(|s| s.ports.iter().filter_map(|p| p.node_port))
            .collect();
        let mut next = 30000u16;
        for s in self.cluster.services.iter_mut() {
            let allocates = match s.service_type {
                ServiceType::NodePort => true,
                ServiceType::LoadBalancer => !self
                    .no_lb_node_ports
                    .contains(&(s.namespace.clone(), s.name.clone())),
                _ => false,
            };
            if !allocates {
                continue;
            }
            for i in 0..s.ports.len() {
                if s.ports[i].node_port.is_some() {
                    continue;
                }
                let number = s.ports[i].port;
                if let Some(shared) = s
                    .ports
                    .iter()
                    .find(|p| p.port == number && p.node_port.is_some())
                    .and_then(|p| p.node_port)
                {
                    s.ports[i].node_port = Some(shared);
                    continue;
                }
                while next <= 32767 && taken.contains(&next) {
                    next += 1;
                }
                if next > 32767 {
                    break;
                }
                s.ports[i].node_port = Some(next);
                taken.insert(next);
            }
        }
    }

    /// The ClientIP affinity timeout of a Service (`None`: no affinity), as the API server
    /// stores and checks it: `SetDefaults_Service` fills 10800 s when `sessionAffinity` is
    /// ClientIP and no timeout is given; `ValidateService` refuses an affinity other than
    /// None and ClientIP, a timeout outside 1..=86400 (`validateClientIPAffinityConfig`),
    /// and a `sessionAffinityConfig` beside affinity None.
    fn affinity(&mut self, spec: &core::ServiceSpec, at: At) -> Result<Option<u32>, ()> {
        let config = spec.session_affinity_config.as_ref();
        match spec.session_affinity.as_deref().unwrap_or("None") {
            "None" => {
                if config.is_some_and(|c| c.client_ip.is_some()) {
                    let span = at.field("spec.sessionAffinityConfig");
                    let d = self.err(
                        Code::InvalidService,
                        span,
                        "sessionAffinityConfig is set but sessionAffinity is None",
                        "has no effect without ClientIP affinity",
                    );
                    d.hints.push(
                        "set `sessionAffinity: ClientIP`, or remove `sessionAffinityConfig`".into(),
                    );
                    return Err(());
                }
                Ok(None)
            }
            "ClientIP" => {
                let timeout = config
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds)
                    .unwrap_or(10800);
                if (1..=86400).contains(&timeout) {
                    return Ok(Some(timeout as u32));
                }
                let span = at.field("spec.sessionAffinityConfig.clientIP.timeoutSeconds");
                let d = self.err(
                    Code::InvalidService,
                    span,
                    format!("affinity timeout {timeout} s is out of range"),
                    "not within 1..=86400",
                );
                d.hints.push(
                    "the timeout is 1 to 86400 seconds (one day); 10800 is the default".into(),
                );
                Err(())
            }
            other => {
                let span = at.field("spec.sessionAffinity");
                let d = self.err(
                    Code::WrongType,
                    span,
                    format!("unknown session affinity `{other}`"),
                    "expected None or ClientIP",
                );
                if let Some(s) = crate::util::closest(other, ["None", "ClientIP"]) {
                    d.hints.push(format!("did you mean `{s}`?"));
                } else {
                    d.hints.push("sessionAffinity is None or ClientIP".into());
                }
                Err(())
            }
        }
    }
}
