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
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

mod admin;
mod cilium;
mod deferred;
mod fields;
mod netpol;
mod pod;
mod service;

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
pub struct ClusterBuilder<'a, 'o> {
    builder: Builder<'a>,
    /// The objects kept for [`ClusterBuilder::finish`]; those the caller holds are
    /// borrowed (a compile session models its Services and endpoints after every event).
    deferred: Vec<Cow<'o, Object>>,
}

impl<'a, 'o> ClusterBuilder<'a, 'o> {
    /// A builder that reports into `sink`.
    pub fn new(
        sources: &'a Sources,
        options: &'a BuildOptions,
        sink: &'a mut Sink,
    ) -> ClusterBuilder<'a, 'o> {
        ClusterBuilder {
            builder: Builder::new(sources, options, sink),
            deferred: Vec::new(),
        }
    }

    /// Checks and models one object (or keeps it for [`ClusterBuilder::finish`]).
    pub fn add(&mut self, obj: Object) {
        self.reserve_for(&obj);
        if self.builder.take(&obj) {
            self.keep(Cow::Owned(obj));
        }
    }

    /// [`ClusterBuilder::add`] of an object the caller keeps, which is borrowed, not
    /// cloned, until [`ClusterBuilder::finish`].
    pub fn add_borrowed(&mut self, obj: &'o Object) {
        self.reserve_for(obj);
        if self.builder.take(obj) {
            self.keep(Cow::Borrowed(obj));
        }
    }

    /// [`ClusterBuilder::add`] of an owned object, or [`ClusterBuilder::add_borrowed`] of
    /// a borrowed one: the builder clones only the kinds it keeps.
    pub fn add_cow(&mut self, obj: Cow<'o, Object>) {
        match obj {
            Cow::Owned(o) => self.add(o),
            Cow::Borrowed(o) => self.add_borrowed(o),
        }
    }

    /// [`ClusterBuilder::add_borrowed`] for a caller that models the same objects again
    /// after each change (a compile session): `memo`, what modelling this object gave
    /// before, is replayed instead when given, and the object is modelled again only when
    /// the replay cannot stand for it. Returns what to remember of the object when it was
    /// modelled now: for a pod that modelled without an error, its value and diagnostics.
    /// The caller must forget a memo once its object changes; a pod's model depends on
    /// nothing else (the cross-object checks run in [`ClusterBuilder::finish`]).
    pub fn add_remembered(
        &mut self,
        obj: Cow<'o, Object>,
        memo: Option<&Modelled>,
    ) -> Option<Modelled> {
        self.reserve_for(&obj);
        if let Some(memo) = memo {
            if self.builder.replay(&obj, memo) {
                return None;
            }
        }
        let Body::Pod(pod) = &obj.body else {
            self.add_cow(obj);
            return None;
        };
        let diags = self.builder.sink.diags.len();
        let pods = self.builder.cluster.pods.len();
        let deferred = self.builder.take(&obj);
        debug_assert!(!deferred, "a pod is modelled on its own");
        let new = &self.builder.sink.diags[diags..];
        if new.iter().any(Diagnostic::is_error) {
            return None;
        }
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        Some(Modelled {
            key: object_key(object_namespace(&obj), name),
            pod: self.builder.cluster.pods.get(pods).cloned(),
            diags: new.to_vec(),
        })
    }

    /// Grows the pod list in steps of 1/8 rather than doubling it: at 150k pods, doubling
    /// leaves up to 40 MB of unused capacity at the peak of the run.
    fn reserve_for(&mut self, obj: &Object) {
        let pods = &mut self.builder.cluster.pods;
        if matches!(obj.body, Body::Pod(_)) && pods.len() == pods.capacity() {
            pods.reserve_exact((pods.len() / 8).max(1024));
        }
    }

    /// Keeps an object for [`ClusterBuilder::finish`], giving back what decoding
    /// over-allocated.
    fn keep(&mut self, mut obj: Cow<'o, Object>) {
        if let Cow::Owned(Object {
            body: Body::EndpointSlice(s),
            ..
        }) = &mut obj
        {
            s.endpoints.shrink_to_fit();
        }
        self.deferred.push(obj);
    }

    /// Resolves what needs every object (workloads, Service backends, ...) and returns the
    /// model.
    pub fn finish(self) -> Cluster {
        let ClusterBuilder {
            mut builder,
            deferred,
        } = self;
        let refs: Vec<&Object> = deferred.iter().map(|o| &**o).collect();
        builder.finish(&refs);
        builder.cluster
    }
}

/// What modelling one pod gave ([`ClusterBuilder::add_remembered`]): the key the duplicate
/// check knows it by, the pod (`None` for one the model leaves out, a finished pod), and
/// its diagnostics, which are warnings only. Modelling every pod of a node again after
/// each event was most of a compile session's model stage (checking names and labels,
/// building each pod); replaying one is a copy.
#[derive(Clone, Debug)]
pub struct Modelled {
    key: Box<str>,
    pod: Option<Pod>,
    diags: Vec<Diagnostic>,
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

/// The side of a policy a rule is written in: its peers are the sources of connections into
/// the selected pods (ingress) or the destinations of connections out of them (egress). The
/// rule checks take it as an enum rather than a bool so that every call says which it means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Ingress,
    Egress,
}

/// What a Cilium rule does to the connections it matches: its section (`ingressDeny`,
/// `egressDeny` or not) decides, and a deny rule may not carry L7 rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
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
        // Each kind is built into a local value, checked in full whether or not it is kept,
        // and added to the model only when its object is clean: an object left out then
        // adds nothing, and no list has to be cut back to an earlier length.
        match &obj.body {
            Body::Namespace(ns) => {
                if keep {
                    self.namespace(ns, at);
                }
                false
            }
            Body::Node(n) => {
                let value = self.node(n, at);
                if keep {
                    self.cluster.nodes.push(value);
                }
                false
            }
            Body::Pod(p) => {
                if let (true, Some(value)) = (keep, self.pod(p, at)) {
                    self.cluster.pods.push(value);
                }
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
                if let (true, Some(value)) = (keep, self.network_policy(np, at)) {
                    self.cluster.network_policies.push(value);
                }
                false
            }
            Body::CiliumNetworkPolicy(p) => {
                if let (true, Some(value)) = (keep, self.cilium_policy(p, false, at)) {
                    self.cluster.cilium_policies.push(value);
                }
                false
            }
            Body::CiliumClusterwideNetworkPolicy(p) => {
                if let (true, Some(value)) = (keep, self.cilium_policy(p, true, at)) {
                    self.cluster.cilium_policies.push(value);
                }
                false
            }
            Body::AdminNetworkPolicy(p) => {
                if let (true, Some(value)) = (keep, self.admin_policy(p, AdminTier::Admin, at)) {
                    self.cluster.admin_policies.push(value);
                }
                false
            }
            Body::BaselineAdminNetworkPolicy(p) => {
                if let (true, Some(value)) = (keep, self.admin_policy(p, AdminTier::Baseline, at)) {
                    self.cluster.admin_policies.push(value);
                }
                false
            }
            Body::ClusterNetworkPolicy(p) => {
                if let (true, Some(value)) = (keep, self.cluster_network_policy(p, at)) {
                    self.cluster.admin_policies.push(value);
                }
                false
            }
            Body::CiliumIdentity(i) => {
                if let (true, Some(value)) = (keep, self.cilium_identity(i, at)) {
                    self.cluster.cilium_identities.push(value);
                }
                false
            }
            Body::CiliumEndpoint(e) => {
                let value = self.cilium_endpoint(e, at);
                if keep {
                    self.cluster.cilium_endpoints.push(value);
                }
                false
            }
            Body::Secret(secret) => {
                let value = self.secret(secret, at);
                if keep {
                    self.cluster.secrets.push(value);
                }
                false
            }
        }
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

    /// Adds what `memo` remembers of the pod `obj`, as [`Builder::take`] of it would;
    /// false, with nothing added, when another object took its key first (the duplicate
    /// is then reported by modelling it again).
    fn replay(&mut self, obj: &Object, memo: &Modelled) -> bool {
        let key = ("Pod", memo.key.clone());
        if !matches!(obj.body, Body::Pod(_)) || self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key, obj.span);
        self.sink.diags.extend(memo.diags.iter().cloned());
        if let Some(pod) = &memo.pod {
            self.cluster.pods.push(pod.clone());
        }
        true
    }

    /// Checks metadata common to every object: `None` when the object has no name and
    /// cannot be checked further, `Some(false)` when it is checked but left out of the model.
    fn check_meta(&mut self, obj: &Object, at: At) -> Option<bool> {
        let kind = obj.body.kind();
        let meta = obj.body.metadata();
        let Some(name) = meta.name.as_deref().filter(|n| !n.is_empty()) else {
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
        let namespaced = obj.body.namespaced();
        let name_ok = match &obj.body {
            // Identity names are numbers; their own check reports bad ones.
            Body::CiliumIdentity(_) => true,
            // ValidateServiceName is NameIsDNS1035Label: a Service name starts with a letter
            // (it becomes a DNS name and environment variable prefixes).
            Body::Service(_) => {
                is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase())
            }
            Body::Namespace(_) => is_dns_label(name),
            _ => is_dns_subdomain(name),
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
        let namespace = object_namespace(obj);
        if namespaced && !is_dns_label(namespace) {
            let span = at.field("metadata.namespace");
            let d = self.err(
                Code::InvalidName,
                span,
                format!("namespace `{namespace}` is invalid"),
                "invalid namespace name",
            );
            d.hints.push("a namespace name is a DNS-1123 label: at most 63 lower-case letters, digits or '-', starting and ending with a letter or digit".into());
        }
        let namespace_ok = !namespaced || is_dns_label(namespace);
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
        // The key is written once, straight into its box (one allocation per object).
        let key = (kind, object_key(namespace, name));
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

    /// Keeps a Secret for the targets that read one; its values stay redacted.
    fn secret(&mut self, s: &crate::frontend::Secret, at: At) -> Secret {
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
        Secret {
            namespace: origin.namespace.clone().unwrap_or_default(),
            name: origin.name.clone(),
            data: s.data.clone(),
            location: self.sources.position(at.span),
            value_locations,
            origin: Some(origin),
        }
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

/// `namespace/name`, or `name` for an object without a namespace.
/// The namespace an object is in, as the duplicate check keys it: `default` for a
/// namespaced object that names none, empty for a cluster-scoped one.
fn object_namespace(obj: &Object) -> &str {
    match (
        obj.body.namespaced(),
        obj.body.metadata().namespace.as_deref(),
    ) {
        (true, Some(ns)) => ns,
        (true, None) => "default",
        (false, _) => "",
    }
}

fn object_key(namespace: &str, name: &str) -> Box<str> {
    if namespace.is_empty() {
        return name.into();
    }
    let mut out = String::with_capacity(namespace.len() + 1 + name.len());
    out.push_str(namespace);
    out.push('/');
    out.push_str(name);
    out.into_boxed_str()
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
