//! Decoded API objects → [`Cluster`]: validation, workload expansion, IP assignment,
//! Service backends and policy normalisation.
//!
//! Each check reports a [`Diagnostic`] at the offending field and goes on, so one run lists
//! every problem. An object with an error is left out of the model; the caller stops
//! before any later stage when the sink holds an error, so nothing half-built is used.

use super::*;
use crate::diag::{Code, Diagnostic, Sink};
use crate::frontend::crd::{self, IntOrString};
use crate::frontend::{Body, Object};
use crate::source::{FieldPath, FileId, Sources, Span};
use crate::util::FxHashMap;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString as K8sIntOrString;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

/// Cilium's limit on the ports of one `toPorts` entry (the CRD's `maxItems`).
const MAX_CILIUM_PORTS: usize = 40;

/// Settings of the model stage.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Where pods without an IP get one (expanded workloads, pods without status).
    pub pod_cidr: IpNet,
    /// Where services without a cluster IP get one.
    pub service_cidr: IpNet,
    /// Cilium's cluster name label.
    pub cluster_name: String,
    /// Whether pods without an IP get one from `pod_cidr` (the compiler's convenience for
    /// manifests that are not `kubectl get` output). A daemon turns it off: there a pod
    /// without an IP is one whose network is not set up yet, and its address comes from
    /// the CNI ([`crate::session::Event::PodAddresses`]).
    pub assign_pod_ips: bool,
    /// Whether objects of policy kinds pipec does not enforce (E0124: Calico policies, an
    /// unknown version of a policy kind) are skipped with a warning instead of failing
    /// the run. Off by default: skipping a policy makes every verdict more permissive.
    pub allow_ignored_policies: bool,
    /// The namespace of namespaced objects that name none (`kubectl apply -n`); `None`
    /// is `default`.
    pub default_namespace: Option<String>,
    /// Where Services that ask for an IPv6 cluster IP (`ipFamilies`, dual-stack policies)
    /// get one when `service_cidr` is IPv4; without it such a Service is an error (or, under
    /// `PreferDualStack`, single-stack).
    pub service_cidr_v6: Option<IpNet>,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions {
            pod_cidr: "10.244.0.0/16".parse().expect("constant CIDR"),
            service_cidr: "10.96.0.0/12".parse().expect("constant CIDR"),
            cluster_name: "default".to_string(),
            assign_pod_ips: true,
            allow_ignored_policies: false,
            default_namespace: None,
            service_cidr_v6: None,
        }
    }
}

/// Builds the cluster model from decoded objects.
pub fn objects_to_cluster(
    sources: &Sources,
    objects: &[Object],
    options: &BuildOptions,
    sink: &mut Sink,
) -> Cluster {
    let mut b = Builder::new(sources, options, sink);
    b.run(objects);
    b.cluster
}

/// Builds the cluster model from objects handed over one at a time, as the frontend decodes
/// them ([`crate::frontend::for_each_object`]). The result and the diagnostics are those of
/// [`objects_to_cluster`] on the same objects; the difference is memory: an object whose
/// kind is modelled on its own (pods, policies, ...) is dropped as soon as it is modelled,
/// and only Services, endpoints and workloads are kept until [`ClusterBuilder::finish`].
pub struct ClusterBuilder<'a> {
    builder: Builder<'a>,
    deferred: Vec<Object>,
}

impl<'a> ClusterBuilder<'a> {
    /// A builder that reports into `sink`.
    pub fn new(
        sources: &'a Sources,
        options: &'a BuildOptions,
        sink: &'a mut Sink,
    ) -> ClusterBuilder<'a> {
        ClusterBuilder {
            builder: Builder::new(sources, options, sink),
            deferred: Vec::new(),
        }
    }

    /// Checks and models one object (or keeps it for [`ClusterBuilder::finish`]).
    pub fn add(&mut self, mut obj: Object) {
        // Grow the pod list in steps of 1/8 rather than doubling it: at 150k pods, doubling
        // leaves up to 40 MB of unused capacity at the peak of the run.
        let pods = &mut self.builder.cluster.pods;
        if matches!(obj.body, Body::Pod(_)) && pods.len() == pods.capacity() {
            pods.reserve_exact((pods.len() / 8).max(1024));
        }
        if self.builder.take(&obj) {
            // Kept objects wait for every other: give back what decoding over-allocated.
            if let Body::EndpointSlice(s) = &mut obj.body {
                s.endpoints.shrink_to_fit();
            }
            self.deferred.push(obj);
        }
    }

    /// Resolves what needs every object (workloads, Service backends, ...) and returns the
    /// model.
    pub fn finish(self) -> Cluster {
        let ClusterBuilder {
            mut builder,
            deferred,
        } = self;
        let refs: Vec<&Object> = deferred.iter().collect();
        builder.finish(&refs);
        builder.cluster
    }
}

pub(super) struct Builder<'a> {
    pub(super) sources: &'a Sources,
    pub(super) sink: &'a mut Sink,
    pub(super) options: &'a BuildOptions,
    pub(super) cluster: Cluster,
    /// Kind and `namespace/name` (or `name`) of every object so far: one string per object,
    /// as this map holds every object of a 180k-object dump.
    seen: FxHashMap<(&'static str, Box<str>), Span>,
    headless: BTreeSet<(String, String)>,
    /// Each node's host IPs as the kubelet reports them for host-network pods: per family,
    /// the first InternalIP, else the first ExternalIP (`GetNodeHostIPs`).
    node_host_ips: BTreeMap<String, Vec<IpAddr>>,
    /// Services' `ipFamilies`/`ipFamilyPolicy` requests (IPv6 flags, policy) and where they
    /// were written, by namespace and name, for [`Builder::assign_service_ips`].
    families: BTreeMap<(String, String), FamilyRequest>,
    /// LoadBalancer Services with `allocateLoadBalancerNodePorts: false`.
    no_lb_node_ports: BTreeSet<(String, String)>,
}

/// A Service's families (IPv6 flags, in order), its policy, and where they were written
/// (the object and the field).
type FamilyRequest = (Vec<bool>, FamilyPolicy, Span, &'static str);

/// `spec.ipFamilyPolicy` of a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FamilyPolicy {
    Single,
    PreferDual,
    RequireDual,
}

/// The context of one object while it is checked: where it is, for diagnostics.
#[derive(Clone, Copy)]
pub(super) struct At<'s> {
    pub(super) sources: &'s Sources,
    pub(super) span: Span,
}

impl At<'_> {
    pub(super) fn field(&self, path: &str) -> Span {
        self.sources.locate(self.span, &FieldPath::parse(path))
    }

    /// The key of the field at `path` (or its value when the path ends in an index).
    pub(super) fn key(&self, path: &str) -> Span {
        self.sources.locate_key(self.span, &FieldPath::parse(path))
    }

    /// The key and the value of the map entry `key` under `path`; the key may contain dots
    /// (label keys such as `app.kubernetes.io/name`).
    pub(super) fn entry(&self, path: &str, key: &str) -> (Span, Span) {
        let p = FieldPath::parse(path).key(key);
        (
            self.sources.locate_key(self.span, &p),
            self.sources.locate(self.span, &p),
        )
    }
}

impl<'a> Builder<'a> {
    fn new(sources: &'a Sources, options: &'a BuildOptions, sink: &'a mut Sink) -> Builder<'a> {
        Builder {
            sources,
            sink,
            options,
            cluster: Cluster {
                name: options.cluster_name.clone(),
                ..Cluster::default()
            },
            seen: FxHashMap::default(),
            headless: BTreeSet::new(),
            node_host_ips: BTreeMap::new(),
            families: BTreeMap::new(),
            no_lb_node_ports: BTreeSet::new(),
        }
    }
}

impl Builder<'_> {
    fn run(&mut self, objects: &[Object]) {
        let deferred: Vec<&Object> = objects.iter().filter(|obj| self.take(obj)).collect();
        self.finish(&deferred);
    }

    /// Checks one object and models it, unless its kind needs every object first: then it
    /// returns true and the caller hands it to [`Builder::finish`].
    fn take(&mut self, obj: &Object) -> bool {
        let at = At {
            sources: self.sources,
            span: obj.span,
        };
        // An object with bad metadata (an invalid name, labels, a duplicate) is still
        // checked, so that all its problems are reported at once, and then left out.
        let Some(keep) = self.check_meta(obj, at) else {
            return false;
        };
        let lens = self.lens();
        let defer = match &obj.body {
            Body::Namespace(ns) => {
                if keep {
                    self.namespace(ns, at);
                }
                false
            }
            Body::Node(n) => {
                self.node(n, at);
                false
            }
            Body::Pod(p) => {
                self.pod(p, at);
                false
            }
            Body::Deployment(_)
            | Body::ReplicaSet(_)
            | Body::StatefulSet(_)
            | Body::DaemonSet(_)
            | Body::Job(_)
            | Body::ReplicationController(_)
            | Body::CronJob(_) => self.check_workload(&obj.body, at) && keep,
            // A Service left out is still checked now; one kept waits for the pods.
            Body::Service(s) => {
                if !keep {
                    let before = self.cluster.services.len();
                    self.service(s, at);
                    self.cluster.services.truncate(before);
                }
                keep
            }
            Body::EndpointSlice(s) => self.check_slice(s, at) && keep,
            Body::Endpoints(_) => keep,
            Body::NetworkPolicy(np) => {
                self.network_policy(np, at);
                false
            }
            Body::CiliumNetworkPolicy(p) => {
                self.cilium_policy(p, false, at);
                false
            }
            Body::CiliumClusterwideNetworkPolicy(p) => {
                self.cilium_policy(p, true, at);
                false
            }
            Body::AdminNetworkPolicy(p) => {
                self.admin_policy(p, AdminTier::Admin, at);
                false
            }
            Body::BaselineAdminNetworkPolicy(p) => {
                self.admin_policy(p, AdminTier::Baseline, at);
                false
            }
            Body::ClusterNetworkPolicy(p) => {
                self.cluster_network_policy(p, at);
                false
            }
            Body::CiliumIdentity(i) => {
                self.cilium_identity(i, at);
                false
            }
            Body::CiliumEndpoint(e) => {
                self.cilium_endpoint(e, at);
                false
            }
            Body::Secret(secret) => {
                self.secret(secret, at);
                false
            }
        };
        if !keep {
            self.truncate(lens);
        }
        defer
    }

    /// Models the objects [`Builder::take`] kept, then everything that needs all objects.
    fn finish(&mut self, deferred: &[&Object]) {
        let mut workloads = Vec::new();
        let mut slices = Vec::new();
        let mut endpoints = Vec::new();
        let mut services = Vec::new();
        for &obj in deferred {
            let at = At {
                sources: self.sources,
                span: obj.span,
            };
            match &obj.body {
                Body::Service(s) => services.push((s, at, true)),
                Body::EndpointSlice(s) => slices.push((s, at)),
                Body::Endpoints(e) => endpoints.push((e, at)),
                _ => workloads.push(obj),
            }
        }
        self.cluster.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        super::workload::expand(self, &workloads);
        // Dumps from the API server list pods in this order already; a stable sort of sorted
        // input changes nothing, and skipping it saves its scratch copy of every pod.
        self.cluster.pods.shrink_to_fit();
        if !self
            .cluster
            .pods
            .is_sorted_by(|a, b| (&a.namespace, &a.name) <= (&b.namespace, &b.name))
        {
            self.cluster
                .pods
                .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        }
        self.host_network_ips();
        self.assign_pod_ips();
        self.check_pod_ips();
        for (s, at, keep) in services {
            let before = self.cluster.services.len();
            self.service(s, at);
            if !keep {
                self.cluster.services.truncate(before);
            }
        }
        self.cluster
            .services
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        self.assign_service_ips();
        self.assign_node_ports();
        self.check_service_ips();
        super::backends::resolve(
            self.sources,
            &mut self.cluster,
            &slices,
            &endpoints,
            self.sink,
        );
        self.finish_namespaces();
        self.sort_policies();
    }

    pub(super) fn err(
        &mut self,
        code: Code,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        self.sink
            .push(Diagnostic::error(code, message).at(span, label));
        self.sink.diags.last_mut().expect("just pushed")
    }

    pub(super) fn warn(
        &mut self,
        code: Code,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        self.sink
            .push(Diagnostic::warning(code, message).at(span, label));
        self.sink.diags.last_mut().expect("just pushed")
    }

    /// The lengths of the model's lists, to undo what one object added.
    fn lens(&self) -> [usize; 8] {
        let c = &self.cluster;
        [
            c.nodes.len(),
            c.pods.len(),
            c.network_policies.len(),
            c.cilium_policies.len(),
            c.admin_policies.len(),
            c.cilium_identities.len(),
            c.cilium_endpoints.len(),
            c.secrets.len(),
        ]
    }

    /// Removes what was added to the model since `lens`.
    fn truncate(&mut self, lens: [usize; 8]) {
        let c = &mut self.cluster;
        c.nodes.truncate(lens[0]);
        c.pods.truncate(lens[1]);
        c.network_policies.truncate(lens[2]);
        c.cilium_policies.truncate(lens[3]);
        c.admin_policies.truncate(lens[4]);
        c.cilium_identities.truncate(lens[5]);
        c.cilium_endpoints.truncate(lens[6]);
        c.secrets.truncate(lens[7]);
    }

    /// Checks metadata common to every object: `None` when the object has no name and
    /// cannot be checked further, `Some(false)` when it is checked but left out of the model.
    fn check_meta(&mut self, obj: &Object, at: At) -> Option<bool> {
        let kind = obj.body.kind();
        let meta = meta_of(&obj.body);
        let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
            let span = at.key("metadata");
            let d = self.err(
                Code::MissingField,
                span,
                format!("{kind} has no metadata.name"),
                "no `name` in this metadata",
            );
            d.hints.push("add `name:` under `metadata:`".into());
            return None;
        };
        let namespaced = !matches!(
            obj.body,
            Body::Namespace(_)
                | Body::Node(_)
                | Body::CiliumClusterwideNetworkPolicy(_)
                | Body::CiliumIdentity(_)
                | Body::AdminNetworkPolicy(_)
                | Body::BaselineAdminNetworkPolicy(_)
                | Body::ClusterNetworkPolicy(_)
        );
        let name_ok = match &obj.body {
            // Identity names are numbers; their own check reports bad ones.
            Body::CiliumIdentity(_) => true,
            // ValidateServiceName is NameIsDNS1035Label: a Service name starts with a letter
            // (it becomes a DNS name and environment variable prefixes).
            Body::Service(_) => {
                is_dns_label(&name) && name.starts_with(|c: char| c.is_ascii_lowercase())
            }
            Body::Namespace(_) => is_dns_label(&name),
            _ => is_dns_subdomain(&name),
        };
        if !name_ok {
            let span = at.field("metadata.name");
            let rule = if matches!(obj.body, Body::Service(_)) {
                "a DNS-1035 label: at most 63 lower-case letters, digits or '-', starting with a letter and ending with a letter or digit"
            } else if matches!(obj.body, Body::Namespace(_)) {
                "a DNS-1123 label: at most 63 lower-case letters, digits or '-', starting and ending with a letter or digit"
            } else {
                "a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', at most 253 characters"
            };
            let d = self.err(
                Code::InvalidName,
                span,
                format!("{kind} name `{name}` is invalid"),
                "invalid name",
            );
            d.hints.push(format!("the name must be {rule}"));
        }
        let namespace = if namespaced {
            meta.namespace
                .clone()
                .unwrap_or_else(|| "default".to_string())
        } else {
            String::new()
        };
        if namespaced && !is_dns_label(&namespace) {
            let span = at.field("metadata.namespace");
            let d = self.err(
                Code::InvalidName,
                span,
                format!("namespace `{namespace}` is invalid"),
                "invalid namespace name",
            );
            d.hints.push("a namespace name is a DNS-1123 label: at most 63 lower-case letters, digits or '-', starting and ending with a letter or digit".into());
        }
        let namespace_ok = !namespaced || is_dns_label(&namespace);
        let mut ok = name_ok && namespace_ok;
        ok &= self.check_labels(meta.labels.as_ref(), at, "metadata.labels");
        // ValidateAnnotations: annotation keys are qualified names, as label keys are (the
        // values are free text).
        for k in meta.annotations.iter().flat_map(|a| a.keys()) {
            if let Err(why) = check_label_key(k) {
                let span = at.entry("metadata.annotations", k).0;
                let d = self.err(
                    Code::InvalidLabel,
                    span,
                    format!("annotation key `{k}` is invalid: {why}"),
                    "invalid key",
                );
                d.hints.push("an annotation key is an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into());
                ok = false;
            }
        }
        let key = (kind, display_key(&(kind, namespace, name)).into_boxed_str());
        if let Some(first) = self.seen.get(&key).copied() {
            let span = at.field("metadata.name");
            // `seen` keeps the first object's span, not its name's: locating a field parses
            // the object's text, which every object would pay for on the happy path.
            let first = self
                .sources
                .locate(first, &FieldPath::parse("metadata.name"));
            let d = self.err(
                Code::DuplicateObject,
                span,
                format!("{kind} `{}` is defined twice", key.1),
                "defined again here",
            );
            d.secondary.push(crate::diag::Label {
                span: first,
                message: "first defined here".into(),
            });
            d.hints.push(if kind == "BaselineAdminNetworkPolicy" {
                "there is one baseline policy per cluster; merge the rules into one object".into()
            } else {
                "remove one of the two definitions, or rename one".into()
            });
            ok = false;
        } else {
            self.seen.insert(key, obj.span);
        }
        Some(ok)
    }

    fn check_labels(
        &mut self,
        labels: Option<&BTreeMap<String, String>>,
        at: At,
        path: &str,
    ) -> bool {
        let mut ok = true;
        for (k, v) in labels.into_iter().flatten() {
            if let Err(why) = check_label_key(k) {
                let span = at.entry(path, k).0;
                let d = self.err(
                    Code::InvalidLabel,
                    span,
                    format!("label key `{k}` is invalid: {why}"),
                    "invalid key",
                );
                d.hints.push("a key is an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into());
                ok = false;
            }
            if let Err(why) = check_label_value(v) {
                let span = at.entry(path, k).1;
                let d = self.err(
                    Code::InvalidLabel,
                    span,
                    format!("label value `{v}` of `{k}` is invalid: {why}"),
                    "invalid value",
                );
                d.hints.push("a value is empty or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into());
                ok = false;
            }
        }
        ok
    }

    pub(super) fn origin(
        &self,
        kind: &str,
        meta: &ObjectMeta,
        namespaced: bool,
        span: Span,
    ) -> Origin {
        Origin {
            kind: kind.to_string(),
            namespace: namespaced.then(|| {
                meta.namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_string())
            }),
            name: meta.name.clone().unwrap_or_default(),
            span: Some(span),
        }
    }

    fn namespace(&mut self, ns: &core::Namespace, at: At) {
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

    fn node(&mut self, n: &core::Node, at: At) {
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
        self.cluster.nodes.push(Node {
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
        });
    }

    fn pod(&mut self, p: &core::Pod, at: At) {
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
        let Some(ports) = ports.filter(|_| has_containers && !bad_ip) else {
            return;
        };
        // A pod that has finished (phase Succeeded or Failed) has had its sandbox torn
        // down and its address released: the address may already belong to a running pod
        // (normal in `kubectl get pods -A`). It takes no part in the datapath, as kube-proxy
        // and Cilium ignore terminated pods, so it is not modelled.
        if status
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed")
        {
            return;
        }
        ips.sort_by_key(|ip| ip.is_ipv6());
        self.cluster.pods.push(Pod {
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
        });
    }

    /// Checks that a pod spec at `base` has a container, as the API requires. A missing spec
    /// is accepted: hand-written test inputs often give pods only labels and an IP.
    pub(super) fn require_containers(
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
    pub(super) fn container_ports(
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
    fn protocol(
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
    fn host_network_ips(&mut self) {
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

    fn assign_pod_ips(&mut self) {
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

    fn check_pod_ips(&mut self) {
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

    /// Two Services may not share a cluster IP (the API server's IP allocator refuses the
    /// second: "provided IP is already allocated"), and no address, port and protocol may
    /// lead to two Services, such as an external IP equal to another Service's cluster IP.
    /// The API server accepts the latter, but kube-proxy then matches whichever rule it
    /// happened to write first, so pipec refuses it rather than pick one (its own rule).
    fn check_service_ips(&mut self) {
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
    fn two_uses(
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

    fn service(&mut self, s: &core::Service, at: At) {
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
    fn assign_service_ips(&mut self) {
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
    fn assign_node_ports(&mut self) {
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
}

// Policies.
impl Builder<'_> {
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

impl Builder<'_> {
    fn network_policy(&mut self, np: &k8s_openapi::api::networking::v1::NetworkPolicy, at: At) {
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
        if let (true, Some(pod_selector)) = (ok, pod_selector) {
            self.cluster.network_policies.push(NetworkPolicy {
                namespace,
                name: origin.name.clone(),
                pod_selector,
                policy_types: types,
                ingress,
                egress,
                origin,
            });
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

    fn cilium_policy(&mut self, p: &crd::CiliumNetworkPolicy, clusterwide: bool, at: At) {
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
            return;
        }
        let mut specs = Vec::new();
        let mut ok = true;
        for (base, s) in specs_in {
            match self.cilium_spec(s, &origin, at, &base) {
                Some(spec) => specs.push(spec),
                None => ok = false,
            }
        }
        if ok {
            self.cluster.cilium_policies.push(CiliumPolicy {
                namespace: origin.namespace.clone(),
                name: origin.name.clone(),
                specs,
                origin,
            });
        }
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
        for (name, rules, ingress) in [
            ("ingress", &s.ingress, true),
            ("ingressDeny", &s.ingress_deny, true),
            ("egress", &s.egress, false),
            ("egressDeny", &s.egress_deny, false),
        ] {
            let mut out = Vec::new();
            for (i, r) in rules.iter().flatten().enumerate() {
                let path = format!("{base}.{name}[{i}]");
                let deny = name.ends_with("Deny");
                match self.cilium_rule(r, ingress, deny, origin, at, &path, name, i) {
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
        ingress: bool,
        deny: bool,
        origin: &Origin,
        at: At,
        path: &str,
        section: &str,
        index: usize,
    ) -> Option<CiliumRule> {
        let (dir, endpoints, requires, cidr, cidr_set, entities) = if ingress {
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
        let wrong_side = if ingress {
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
            let fields = if ingress {
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
            let (other, this) = if ingress {
                ("to", "from")
            } else {
                ("from", "to")
            };
            let d = self.err(
                Code::WrongType,
                span,
                format!(
                    "an {} rule uses `{other}*` fields",
                    if ingress { "ingress" } else { "egress" }
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
            if l7.is_some() && deny {
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

    fn admin_policy(&mut self, p: &crd::AdminNetworkPolicy, tier: AdminTier, at: At) {
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
                return;
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
                return;
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
                return;
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
                    return;
                }
                0
            }
        };
        let subject = self.admin_subject(&p.spec.subject, at);
        let mut lists = Vec::new();
        for (section, rules, ingress) in [
            ("ingress", &p.spec.ingress, true),
            ("egress", &p.spec.egress, false),
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
                match self.admin_rule(r, ingress, tier, &origin, at, section, i) {
                    Some(rule) => out.push(rule),
                    None => ok = false,
                }
            }
            lists.push(out);
        }
        let egress = lists.pop().unwrap_or_default();
        let ingress = lists.pop().unwrap_or_default();
        match subject {
            Some(subject) if ok => self.cluster.admin_policies.push(AdminPolicy {
                name: origin.name.clone(),
                tier,
                priority,
                subject,
                ingress,
                egress,
                origin,
            }),
            _ => {}
        }
    }

    /// A ClusterNetworkPolicy (network-policy-api `apis/v1alpha2`): one kind for both admin
    /// tiers. It becomes an [`AdminPolicy`] of its `tier`, ordered by `priority` within the
    /// tier like AdminNetworkPolicies; `Accept` is `Allow`; `Pass` in either tier skips the
    /// rest of the tier; `protocols` become ports (a protocol without `destinationPort`
    /// matches all its ports). `domainNames` peers are not modelled: they match nothing
    /// (the API allows them in `Accept` rules only, so this allows less, never more).
    fn cluster_network_policy(&mut self, p: &crd::ClusterNetworkPolicy, at: At) {
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
                return;
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
                return;
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
                return;
            }
        };
        let subject = self.admin_subject(&p.spec.subject, at);
        let mut ok = true;
        let mut lists = Vec::new();
        for (section, rules, ingress) in [
            ("ingress", &p.spec.ingress, true),
            ("egress", &p.spec.egress, false),
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
                match self.cnp_rule(r, ingress, &origin, at, section, i) {
                    Some(rule) => out.push(rule),
                    None => ok = false,
                }
            }
            lists.push(out);
        }
        let egress = lists.pop().unwrap_or_default();
        let ingress = lists.pop().unwrap_or_default();
        match subject {
            Some(subject) if ok => self.cluster.admin_policies.push(AdminPolicy {
                name: origin.name.clone(),
                tier,
                priority,
                subject,
                ingress,
                egress,
                origin,
            }),
            _ => {}
        }
    }

    fn cnp_rule(
        &mut self,
        r: &crd::CnpRule,
        ingress: bool,
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
        let (field, peers_in) = if ingress {
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
            if ingress && (p.nodes.is_some() || p.networks.is_some() || p.domain_names.is_some()) {
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
        ingress: bool,
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
        let (field, peers_in) = if ingress {
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
            if ingress && (p.nodes.is_some() || p.networks.is_some()) {
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

    fn cilium_identity(&mut self, i: &crd::CiliumIdentity, at: At) {
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
                return;
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
                return;
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
            return;
        }
        let origin = self.origin("CiliumIdentity", &i.metadata, false, at.span);
        self.cluster
            .cilium_identities
            .push(CiliumIdentityObject { id, labels, origin });
    }

    fn cilium_endpoint(&mut self, e: &crd::CiliumEndpoint, at: At) {
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
        self.cluster.cilium_endpoints.push(CiliumEndpointObject {
            namespace: origin.namespace.clone().unwrap_or_default(),
            name: origin.name.clone(),
            identity,
            ips,
            origin,
        });
    }

    /// Keeps a Secret for the targets that read one; its values stay redacted.
    fn secret(&mut self, s: &crate::frontend::Secret, at: At) {
        let origin = self.origin("Secret", &s.metadata, true, at.span);
        let value_locations = s
            .data
            .keys()
            .map(|k| {
                // stringData wins over data, as the API server merges them.
                let string = FieldPath::parse("stringData").key(k);
                let span = self.sources.locate(at.span, &string);
                let span = if span == at.span
                    || span
                        == self
                            .sources
                            .locate(at.span, &FieldPath::parse("stringData"))
                {
                    self.sources
                        .locate(at.span, &FieldPath::parse("data").key(k))
                } else {
                    span
                };
                (k.clone(), self.sources.position(span))
            })
            .collect();
        self.cluster.secrets.push(Secret {
            namespace: origin.namespace.clone().unwrap_or_default(),
            name: origin.name.clone(),
            data: s.data.clone(),
            location: self.sources.position(at.span),
            value_locations,
            origin: Some(origin),
        });
    }

    /// Adds namespaces that objects use but no manifest defines, with a warning each.
    fn finish_namespaces(&mut self) {
        let mut used: BTreeMap<String, Option<Span>> = BTreeMap::new();
        for p in &self.cluster.pods {
            if !used.contains_key(&p.namespace) {
                used.insert(p.namespace.clone(), p.origin.span);
            }
        }
        for s in &self.cluster.services {
            used.entry(s.namespace.clone()).or_insert(s.origin.span);
        }
        for np in &self.cluster.network_policies {
            used.entry(np.namespace.clone()).or_insert(np.origin.span);
        }
        for cp in &self.cluster.cilium_policies {
            if let Some(ns) = &cp.namespace {
                used.entry(ns.clone()).or_insert(cp.origin.span);
            }
        }
        let defined_any = !self.cluster.namespaces.is_empty();
        for (ns, span) in used {
            if self.cluster.namespaces.contains_key(&ns) {
                continue;
            }
            // Inputs with no Namespace objects at all (a bare set of pods) are common and
            // complete; a warning only helps when some namespaces are defined and one is not.
            if defined_any {
                let mut d = Diagnostic::warning(Code::NoNamespace, format!("namespace `{ns}` is used but not defined; it is assumed to exist with no labels"));
                if let Some(span) = span {
                    d = d.at(
                        self.sources
                            .locate(span, &FieldPath::parse("metadata.namespace")),
                        "used here",
                    );
                }
                self.sink.push(
                    d.hint("add a Namespace object so that namespaceSelectors see its labels"),
                );
            }
            let labels = Labels::from([("kubernetes.io/metadata.name".to_string(), ns.clone())]);
            self.cluster.namespaces.insert(
                ns.clone(),
                Namespace {
                    name: ns,
                    labels,
                    origin: None,
                },
            );
        }
    }

    fn sort_policies(&mut self) {
        let c = &mut self.cluster;
        c.network_policies
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        c.cilium_policies.sort_by(|a, b| {
            (a.namespace.is_none(), &a.namespace, &a.name).cmp(&(
                b.namespace.is_none(),
                &b.namespace,
                &b.name,
            ))
        });
        c.admin_policies
            .sort_by(|a, b| (a.tier, a.priority, &a.name).cmp(&(b.tier, b.priority, &b.name)));
        c.cilium_identities.sort_by_key(|i| i.id);
        c.cilium_endpoints
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        c.secrets
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut baselines = c
            .admin_policies
            .iter()
            .filter(|p| p.tier == AdminTier::Baseline)
            // ClusterNetworkPolicies of the Baseline tier may be many (v1alpha2).
            .filter(|p| p.origin.kind == "BaselineAdminNetworkPolicy");
        if let (Some(_), Some(second)) = (baselines.next(), baselines.next()) {
            let span = second.origin.span;
            let mut d = Diagnostic::error(
                Code::DuplicateObject,
                "more than one BaselineAdminNetworkPolicy",
            );
            if let Some(span) = span {
                d = d.at(span, "second baseline");
            }
            self.sink
                .push(d.hint("merge the rules into the one policy named `default`"));
        }
    }
}

// Checks of kinds that are used later in the run (workloads, EndpointSlices).
impl Builder<'_> {
    /// Checks a workload before it is expanded: a pod template with containers, and a
    /// selector that selects the template's pods (the API server rejects a workload whose
    /// selector "does not match template labels").
    fn check_workload(&mut self, body: &Body, at: At) -> bool {
        let (kind, selector, template) = match body {
            Body::Deployment(d) => match &d.spec {
                Some(s) => ("Deployment", Some(&s.selector), Some(&s.template)),
                None => return true,
            },
            Body::ReplicaSet(r) => match &r.spec {
                Some(s) => ("ReplicaSet", Some(&s.selector), s.template.as_ref()),
                None => return true,
            },
            Body::StatefulSet(s) => match &s.spec {
                Some(s) => ("StatefulSet", Some(&s.selector), Some(&s.template)),
                None => return true,
            },
            Body::DaemonSet(d) => match &d.spec {
                Some(s) => ("DaemonSet", Some(&s.selector), Some(&s.template)),
                None => return true,
            },
            // A Job's selector is generated by the API server unless manualSelector is set.
            Body::Job(j) => match &j.spec {
                Some(s) => ("Job", s.selector.as_ref(), Some(&s.template)),
                None => return true,
            },
            // A ReplicationController's selector is a plain map, defaulted to the template's
            // labels; a CronJob's Jobs get generated selectors.
            Body::ReplicationController(r) => match &r.spec {
                Some(s) => ("ReplicationController", None, s.template.as_ref()),
                None => return true,
            },
            Body::CronJob(c) => match c.spec.as_ref().and_then(|s| s.job_template.spec.as_ref()) {
                Some(s) => ("CronJob", None, Some(&s.template)),
                None => return true,
            },
            _ => return true,
        };
        let Some(template) = template else {
            return true;
        };
        let base = if kind == "CronJob" {
            "spec.jobTemplate.spec.template"
        } else {
            "spec.template"
        };
        let mut ok = self.require_containers(template.spec.as_ref(), at, &format!("{base}.spec"));
        let labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        ok &= self.check_labels(Some(&labels), at, &format!("{base}.metadata.labels"));
        if let Some(sel) = selector {
            let empty = sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                && sel.match_expressions.as_ref().is_none_or(Vec::is_empty);
            match self.selector(Some(sel), at, "spec.selector") {
                None => ok = false,
                Some(_) if empty && kind != "Job" => {
                    let span = at.key("spec.selector");
                    let d = self.err(
                        Code::InvalidSelector,
                        span,
                        format!("{kind} selector is empty"),
                        "selects nothing in particular",
                    );
                    d.hints.push(format!(
                        "a {kind} needs a non-empty selector; copy the template's labels into `spec.selector.matchLabels`"
                    ));
                    ok = false;
                }
                Some(s) if !s.matches(&labels) => {
                    let span = at.key("spec.selector");
                    let d = self.err(
                        Code::InvalidSelector,
                        span,
                        format!("{kind} selector does not match template labels"),
                        "this selector",
                    );
                    d.secondary.push(crate::diag::Label {
                        span: at.key("spec.template.metadata.labels"),
                        message: "does not select these labels".into(),
                    });
                    d.hints.push(
                        "make every `matchLabels` entry of the selector a label of the template"
                            .into(),
                    );
                    ok = false;
                }
                Some(_) => {}
            }
        }
        ok
    }

    /// Checks the fields of an EndpointSlice that backends rely on.
    fn check_slice(&mut self, s: &k8s_openapi::api::discovery::v1::EndpointSlice, at: At) -> bool {
        const TYPES: [&str; 3] = ["IPv4", "IPv6", "FQDN"];
        // ValidateEndpointSlice: each port number is 1..=65535 and each protocol one the
        // API knows; a bad one is refused here rather than dropped when backends are read.
        let mut ok = true;
        for (i, p) in s.ports.iter().flatten().enumerate() {
            if let Some(port) = p.port {
                ok &= self
                    .port_number(i64::from(port), at, &format!("ports[{i}].port"))
                    .is_some();
            }
            ok &= self
                .protocol(
                    p.protocol.as_deref(),
                    at,
                    &format!("ports[{i}].protocol"),
                    false,
                )
                .is_some_and(|p| p.is_some());
        }
        if TYPES.contains(&s.address_type.as_str()) {
            return ok;
        }
        let span = at.field("addressType");
        let d = self.err(
            Code::WrongType,
            span,
            format!("unknown EndpointSlice addressType `{}`", s.address_type),
            "expected IPv4, IPv6 or FQDN",
        );
        match crate::util::closest(&s.address_type, TYPES) {
            Some(t) => d.hints.push(format!("did you mean `{t}`?")),
            None => d.hints.push("use IPv4, IPv6 or FQDN".into()),
        }
        false
    }
}

// Field checks shared by several kinds.
impl Builder<'_> {
    pub(super) fn selector(
        &mut self,
        sel: Option<&LabelSelector>,
        at: At,
        path: &str,
    ) -> Option<Selector> {
        let Some(sel) = sel else {
            return Some(Selector::everything());
        };
        let mut ok = self.check_selector_labels(
            sel.match_labels.as_ref(),
            at,
            &format!("{path}.matchLabels"),
        );
        let mut expressions = Vec::new();
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let epath = format!("{path}.matchExpressions[{i}]");
            let operator = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    let span = at.field(&format!("{epath}.operator"));
                    let d = self.err(
                        Code::InvalidSelector,
                        span,
                        format!("unknown selector operator `{other}`"),
                        "expected In, NotIn, Exists or DoesNotExist",
                    );
                    match crate::util::closest(other, ["In", "NotIn", "Exists", "DoesNotExist"])
                    {
                        Some(s) => d.hints.push(format!("did you mean `{s}`?")),
                        None => d.hints.push(
                            "use `In` or `NotIn` with values, or `Exists` or `DoesNotExist` without; for equality, write `operator: In` and one value".into(),
                        ),
                    }
                    ok = false;
                    continue;
                }
            };
            let bare_key = e.key.split_once(':').map(|(_, k)| k).unwrap_or(&e.key);
            if let Err(why) = check_label_key(bare_key) {
                let span = at.field(&format!("{epath}.key"));
                let d = self.err(
                    Code::InvalidLabel,
                    span,
                    format!("selector key `{}` is invalid: {why}", e.key),
                    "invalid key",
                );
                d.hints.push("a key is an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into());
                ok = false;
            }
            for (vi, v) in e.values.iter().flatten().enumerate() {
                if let Err(why) = check_label_value(v) {
                    let span = at.field(&format!("{epath}.values[{vi}]"));
                    let d = self.err(
                        Code::InvalidLabel,
                        span,
                        format!("selector value `{v}` is invalid: {why}"),
                        "invalid value",
                    );
                    d.hints.push("a label value is empty or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit; a value with any other character matches no label".into());
                    ok = false;
                }
            }
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            let needs_values = matches!(operator, Operator::In | Operator::NotIn);
            if needs_values && values.is_empty() {
                let span = at.field(&format!("{epath}.operator"));
                let d = self.err(
                    Code::InvalidSelector,
                    span,
                    format!("operator `{}` needs at least one value", e.operator),
                    "no values",
                );
                d.hints
                    .push("add `values: [...]`, or use Exists / DoesNotExist".into());
                ok = false;
                continue;
            }
            if !needs_values && !values.is_empty() {
                let span = at.field(&format!("{epath}.values"));
                let d = self.err(
                    Code::InvalidSelector,
                    span,
                    format!("operator `{}` takes no values", e.operator),
                    "unexpected values",
                );
                d.hints.push("remove `values`, or use In / NotIn".into());
                ok = false;
                continue;
            }
            expressions.push(Requirement {
                key: e.key.clone(),
                operator,
                values,
            });
        }
        ok.then(|| Selector {
            match_labels: sel.match_labels.clone().unwrap_or_default(),
            expressions,
        })
    }

    /// Selector keys may carry Cilium's source prefix (`k8s:app`), so only values are
    /// checked strictly.
    fn check_selector_labels(
        &mut self,
        labels: Option<&BTreeMap<String, String>>,
        at: At,
        path: &str,
    ) -> bool {
        let mut ok = true;
        for (k, v) in labels.into_iter().flatten() {
            let bare = k.split_once(':').map(|(_, rest)| rest).unwrap_or(k);
            if let Err(why) = check_label_key(bare).and_then(|_| check_label_value(v)) {
                let (key_span, value_span) = at.entry(path, k);
                let span = if check_label_key(bare).is_err() {
                    key_span
                } else {
                    value_span
                };
                let d = self.err(
                    Code::InvalidLabel,
                    span,
                    format!("selector label `{k}: {v}` is invalid: {why}"),
                    "invalid label",
                );
                d.hints.push("label keys and values are at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit; such a selector could match no pod".into());
                ok = false;
            }
        }
        ok
    }

    fn cidr_with_except(
        &mut self,
        cidr: &str,
        except: &[String],
        at: At,
        path: &str,
    ) -> Option<CidrPeer> {
        let cidr_path =
            if except.is_empty() && !path.ends_with("ipBlock") && !path.contains("CIDRSet") {
                path.to_string()
            } else {
                format!("{path}.cidr")
            };
        let net = self.parse_cidr(cidr, at, &cidr_path)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, e) in except.iter().enumerate() {
            let epath = format!("{path}.except[{i}]");
            let Some(ex) = self.parse_cidr(e, at, &epath) else {
                ok = false;
                continue;
            };
            // ValidateIPBlock: every except entry must be a strict subset of the cidr, so
            // an except equal to the cidr (which would leave an empty peer) is refused too.
            if !net.contains(&ex) || ex.prefix_len() <= net.prefix_len() {
                let span = at.field(&epath);
                let block = at.field(&cidr_path);
                let message = if ex == net {
                    format!("except {ex} equals the cidr; it must be a strict subset")
                } else {
                    format!("except {ex} is not inside cidr {net}")
                };
                let d = self.err(Code::CidrExcept, span, message, "outside the block");
                d.secondary.push(crate::diag::Label {
                    span: block,
                    message: "the block".into(),
                });
                d.hints
                    .push("every except entry must be a sub-range of the cidr".into());
                ok = false;
                continue;
            }
            out.push(ex);
        }
        ok.then_some(CidrPeer {
            cidr: net,
            except: out,
        })
    }

    fn parse_cidr(&mut self, text: &str, at: At, path: &str) -> Option<IpNet> {
        // A NetworkPolicy ipBlock needs a prefix length (ValidateIPBlock parses it as a
        // CIDR); Cilium's CIDR fields take a bare address as a host route.
        let ip_block = path.contains("ipBlock");
        // The AdminNetworkPolicy CRD's CEL rule refuses host bits in `networks`; the API
        // server accepts them in an ipBlock (a legacy field) and Cilium masks them, so
        // there they mean the network, with a warning.
        let masked_only = path.contains(".networks[");
        if let Ok(net) = text.parse::<IpNet>() {
            if net.trunc() != net {
                let span = at.field(path);
                if masked_only {
                    let d = self.err(
                        Code::InvalidCidr,
                        span,
                        format!("CIDR `{text}` has host bits set"),
                        "host bits set",
                    );
                    d.hints.push(format!("did you mean `{}`?", net.trunc()));
                    return None;
                }
                let d = self.warn(
                    Code::CidrHostBits,
                    span,
                    format!("CIDR `{text}` has host bits set; it means {}", net.trunc()),
                    "host bits set",
                );
                d.hints
                    .push(format!("write `{}` to say what it means", net.trunc()));
                return Some(net.trunc());
            }
            return Some(net);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            if ip_block {
                let span = at.field(path);
                let d = self.err(
                    Code::InvalidCidr,
                    span,
                    format!("ipBlock CIDR `{text}` has no prefix length"),
                    "no prefix length",
                );
                let bits = if ip.is_ipv4() { 32 } else { 128 };
                d.hints.push(format!(
                    "an ipBlock is a CIDR; for one address write `{ip}/{bits}`"
                ));
                return None;
            }
            return Some(IpNet::from(ip));
        }
        let span = at.field(path);
        let d = self.err(
            Code::InvalidCidr,
            span,
            format!("`{text}` is not a CIDR"),
            "invalid CIDR",
        );
        d.hints
            .push("write an address and a prefix length, such as 10.0.0.0/8 or fd00::/64".into());
        None
    }

    fn port_number(&mut self, n: i64, at: At, path: &str) -> Option<u16> {
        // Required port fields that are absent decode as 0.
        if n == 0 && !self.sources.exists(at.span, &FieldPath::parse(path)) {
            self.missing_port(at, path);
            return None;
        }
        match u16::try_from(n) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                let span = at.field(path);
                let d = self.err(
                    Code::PortRange,
                    span,
                    format!("port {n} is out of range"),
                    "out of range",
                );
                d.hints.push("a port is a number from 1 to 65535".into());
                None
            }
        }
    }

    fn missing_port(&mut self, at: At, path: &str) {
        let (parent, field) = path.rsplit_once('.').unwrap_or(("", path));
        let span = at.field(parent);
        let d = self.err(
            Code::MissingField,
            span,
            format!("`{path}` is missing"),
            format!("no `{field}` here"),
        );
        d.hints
            .push(format!("add `{field}:` with a number from 1 to 65535"));
    }

    fn port_name(&mut self, name: &str, at: At, path: &str) -> Option<PortRef> {
        if let Ok(n) = name.parse::<i64>() {
            return self.port_number(n, at, path).map(PortRef::Number);
        }
        match check_port_name(name) {
            Ok(()) => Some(PortRef::Name(name.to_string())),
            Err(why) => {
                let span = at.field(path);
                let d = self.err(
                    Code::InvalidPortName,
                    span,
                    format!("`{name}` is neither a port number nor a valid port name: {why}"),
                    "invalid port",
                );
                d.hints.push("a port name is at most 15 lower-case letters, digits or '-', with at least one letter".into());
                None
            }
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

/// A selector that no endpoint matches (for rule objects pipec skips).
fn impossible_selector() -> Selector {
    Selector {
        match_labels: Labels::new(),
        expressions: vec![Requirement {
            key: "reserved:pipec-never".into(),
            operator: Operator::Exists,
            values: BTreeSet::new(),
        }],
    }
}

fn rule_ref(
    origin: &Origin,
    section: &str,
    index: usize,
    name: Option<String>,
    path: &str,
) -> RuleRef {
    RuleRef {
        origin: origin.clone(),
        section: section.to_string(),
        index,
        name,
        path: FieldPath::parse(path),
        span: None,
    }
}

fn meta_of(body: &Body) -> &ObjectMeta {
    match body {
        Body::Namespace(o) => &o.metadata,
        Body::Pod(o) => &o.metadata,
        Body::Node(o) => &o.metadata,
        Body::Service(o) => &o.metadata,
        Body::Endpoints(o) => &o.metadata,
        Body::EndpointSlice(o) => &o.metadata,
        Body::Deployment(o) => &o.metadata,
        Body::ReplicaSet(o) => &o.metadata,
        Body::StatefulSet(o) => &o.metadata,
        Body::DaemonSet(o) => &o.metadata,
        Body::Job(o) => &o.metadata,
        Body::ReplicationController(o) => &o.metadata,
        Body::CronJob(o) => &o.metadata,
        Body::NetworkPolicy(o) => &o.metadata,
        Body::CiliumNetworkPolicy(o) | Body::CiliumClusterwideNetworkPolicy(o) => &o.metadata,
        Body::CiliumIdentity(o) => &o.metadata,
        Body::CiliumEndpoint(o) => &o.metadata,
        Body::Secret(o) => &o.metadata,
        Body::AdminNetworkPolicy(o) | Body::BaselineAdminNetworkPolicy(o) => &o.metadata,
        Body::ClusterNetworkPolicy(o) => &o.metadata,
    }
}

fn display_key(key: &(&str, String, String)) -> String {
    if key.1.is_empty() {
        key.2.clone()
    } else {
        format!("{}/{}", key.1, key.2)
    }
}

/// The next free address of `net` from `cursor` on, skipping the network address and
/// addresses in `taken`.
pub(super) fn next_free(net: IpNet, cursor: &mut u128, taken: &HashSet<IpAddr>) -> Option<IpAddr> {
    let size: u128 = match net {
        IpNet::V4(n) => 1u128 << (32 - n.prefix_len()),
        IpNet::V6(n) => 1u128
            .checked_shl(128 - u32::from(n.prefix_len()))
            .unwrap_or(u128::MAX),
    };
    while *cursor + 1 < size {
        let ip = match net {
            IpNet::V4(n) => IpAddr::from(std::net::Ipv4Addr::from(
                u32::from(n.network()) + *cursor as u32,
            )),
            IpNet::V6(n) => {
                IpAddr::from(std::net::Ipv6Addr::from(u128::from(n.network()) + *cursor))
            }
        };
        *cursor += 1;
        if !taken.contains(&ip) {
            return Some(ip);
        }
    }
    None
}

/// A DNS-1123 label: what namespace and service names must be.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// A DNS-1123 subdomain: what most object names must be.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_label_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the name part is empty".into());
    }
    if s.len() > 63 {
        return Err(format!(
            "the name part has {} characters, more than 63",
            s.len()
        ));
    }
    let b = s.as_bytes();
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err("it must start and end with a letter or digit".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("it contains `{c}`"));
    }
    Ok(())
}

/// Checks a label key: `[prefix/]name`.
pub fn check_label_key(key: &str) -> Result<(), String> {
    match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err(format!("the prefix `{prefix}` is not a DNS subdomain"));
            }
            check_label_name(name)
        }
        None => check_label_name(key),
    }
}

/// Checks a label value.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_label_name(value).map_err(|e| e.replace("the name part", "the value"))
}

/// Checks an IANA service name, which is what a named port must be.
pub fn check_port_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err("it must have 1 to 15 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only lower-case letters, digits and '-' are allowed".into());
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err("it needs at least one letter".into());
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err("'-' may not start or end it, or be doubled".into());
    }
    Ok(())
}
