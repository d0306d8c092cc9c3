//! Generates a large, valid Kubernetes cluster dump for pipec's scale benchmark.
//!
//! The output is one JSON document, `{"apiVersion":"v1","kind":"List","items":[...]}`, shaped
//! like `kubectl get namespaces,nodes,pods,services,endpointslices,networkpolicies -A -o json`:
//! items grouped by kind, each kind sorted by namespace and name (the API server's order),
//! keys sorted and indented by four spaces as kubectl prints them (or compact with
//! [`Spec::pretty`] off). `managedFields` are left out, as kubectl does by default.
//!
//! Everything is a pure function of [`Spec`]: each object draws from its own
//! [xorshift](https://en.wikipedia.org/wiki/Xorshift) stream seeded by the run seed, its kind
//! and its index, so the same spec always gives the same bytes.
//!
//! Shape of the cluster:
//! - `namespaces` application namespaces (`<team>-<env>[-n]`) plus `default` and `kube-system`;
//! - `nodes` nodes, each with a podCIDR cut from 10.0.0.0/8 just large enough for its pods;
//! - pods grouped into Deployment-style workloads (one ReplicaSet each, ownerReferences,
//!   `pod-template-hash`), unique IPs inside their node's podCIDR, 1–2 containers with
//!   named ports;
//! - one Service per workload (extra Services re-select a workload under another name), with
//!   unique ClusterIPs from 10.96.0.0/12, a few NodePort and headless ones;
//! - EndpointSlices of at most 100 endpoints pointing at real pods (IP, node, targetRef),
//!   `endpoints` endpoints in total, spread over the Services in proportion to their size;
//! - NetworkPolicies with a realistic mix: per-namespace default deny, ingress from pods /
//!   namespaces / ipBlocks with except, ports by number, by name and endPort ranges,
//!   matchExpressions, and egress rules (DNS, databases, the internet minus RFC 1918).

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use clap as _;
// Dev-dependencies that the unit tests do not use; the package's integration tests,
// benches or examples do.
#[cfg(test)]
use pipec as _;

use serde::Serialize;
use serde_json::{json, Map, Value};
use std::io::{self, Write};

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of pods.
    pub pods: usize,
    /// Number of Services.
    pub services: usize,
    /// Number of endpoints over all EndpointSlices (at most the number of selected pods).
    pub endpoints: usize,
    /// Number of NetworkPolicies.
    pub policies: usize,
    /// Number of application namespaces (`default` and `kube-system` come on top).
    pub namespaces: usize,
    /// Number of nodes.
    pub nodes: usize,
    /// Indent like kubectl (four spaces); compact JSON otherwise.
    pub pretty: bool,
}

impl Spec {
    /// The scale of the benchmark: 150k pods, 10k Services, 100k endpoints, 10k policies.
    pub fn full() -> Spec {
        Spec {
            seed: 1,
            pods: 150_000,
            services: 10_000,
            endpoints: 100_000,
            policies: 10_000,
            namespaces: 500,
            nodes: 200,
            pretty: true,
        }
    }

    /// A small cluster with the same shape, for tests (1% of [`Spec::full`]).
    pub fn small() -> Spec {
        Spec {
            pods: 1_500,
            services: 100,
            endpoints: 1_000,
            policies: 100,
            namespaces: 10,
            nodes: 4,
            ..Spec::full()
        }
    }
}

impl Default for Spec {
    fn default() -> Spec {
        Spec::full()
    }
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of JSON.
    pub bytes: u64,
    /// Namespace objects.
    pub namespaces: usize,
    /// Node objects.
    pub nodes: usize,
    /// Pod objects.
    pub pods: usize,
    /// Workloads (ReplicaSets the pods point at; not in the output).
    pub workloads: usize,
    /// Service objects.
    pub services: usize,
    /// EndpointSlice objects.
    pub endpoint_slices: usize,
    /// Endpoints over all slices.
    pub endpoints: usize,
    /// NetworkPolicy objects.
    pub policies: usize,
}

impl Stats {
    /// Every object of the List.
    pub fn objects(&self) -> usize {
        self.namespaces
            + self.nodes
            + self.pods
            + self.services
            + self.endpoint_slices
            + self.policies
    }
}

/// Generates the whole document in memory.
pub fn generate(spec: &Spec) -> String {
    let mut out = Vec::new();
    write_to(spec, &mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Writes the document to `w` (buffer it: objects are written one by one).
pub fn write_to<W: Write>(spec: &Spec, w: W) -> io::Result<Stats> {
    let plan = Plan::new(spec);
    let mut out = ListWriter::new(w, spec.pretty)?;
    let mut stats = Stats {
        workloads: plan.workloads.len(),
        ..Stats::default()
    };
    for ns in plan.namespace_objects() {
        out.item(&ns)?;
        stats.namespaces += 1;
    }
    for n in 0..spec.nodes {
        out.item(&plan.node(n))?;
        stats.nodes += 1;
    }
    for &(w, j) in &plan.pod_order() {
        out.item(&plan.pod(w, j))?;
        stats.pods += 1;
    }
    for &s in &plan.service_order() {
        out.item(&plan.service(s))?;
        stats.services += 1;
    }
    for &s in &plan.service_order() {
        for slice in plan.slices(s) {
            stats.endpoints += slice["endpoints"].as_array().map_or(0, Vec::len);
            out.item(&slice)?;
            stats.endpoint_slices += 1;
        }
    }
    for &p in &plan.policy_order() {
        out.item(&plan.policy(p))?;
        stats.policies += 1;
    }
    stats.bytes = out.finish()?;
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------
// Randomness

/// xorshift64* seeded through splitmix64: small, fast and good enough for test data.
struct Rng(u64);

impl Rng {
    /// An independent stream for object `index` of kind `tag`.
    fn for_item(seed: u64, tag: &str, index: u64) -> Rng {
        let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
        for b in tag.bytes() {
            h = splitmix(h ^ u64::from(b));
        }
        Rng(splitmix(h ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn uid(&mut self) -> String {
        let a = self.next();
        let b = self.next();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    /// A timestamp in March 2025, as the API server writes them.
    fn timestamp(&mut self) -> String {
        format!(
            "2025-03-{:02}T{:02}:{:02}:{:02}Z",
            1 + self.below(28),
            self.below(24),
            self.below(60),
            self.below(60)
        )
    }

    fn resource_version(&mut self) -> String {
        (1_000_000 + self.below(90_000_000)).to_string()
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The alphabet of Kubernetes' generated name suffixes (no vowels, no look-alikes).
const ALNUM: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn suffix(mut n: u64, len: usize) -> String {
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        s.push(ALNUM[(n % ALNUM.len() as u64) as usize] as char);
        n /= ALNUM.len() as u64;
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Vocabulary

const TEAMS: &[&str] = &[
    "payments",
    "checkout",
    "catalog",
    "search",
    "identity",
    "platform",
    "data",
    "growth",
    "mobile",
    "ads",
    "logistics",
    "support",
    "risk",
    "media",
    "infra",
    "billing",
    "messaging",
    "analytics",
    "partners",
    "security",
];
const ENVS: &[&str] = &["prod", "staging", "dev"];
const APPS: &[&str] = &[
    "api",
    "web",
    "frontend",
    "backend",
    "worker",
    "cache",
    "auth",
    "gateway",
    "cart",
    "orders",
    "inventory",
    "pricing",
    "ledger",
    "notifier",
    "ingest",
    "indexer",
    "scheduler",
    "reporting",
    "session",
    "profile",
    "recommend",
    "shipping",
    "invoice",
    "fraud-check",
    "media-proxy",
    "thumbnailer",
    "event-router",
    "audit",
    "export",
    "webhooks",
    "graphql",
    "admin",
];
const TIERS: &[&str] = &["frontend", "backend", "data", "cache", "worker", "edge"];
const ZONES: &[&str] = &["us-east-1a", "us-east-1b", "us-east-1c"];
const INSTANCE_TYPES: &[&str] = &["m6i.2xlarge", "m6i.4xlarge", "c6i.4xlarge", "r6i.2xlarge"];

/// Container port profiles: (name, port, protocol).
const PORT_PROFILES: &[&[(&str, u16, &str)]] = &[
    &[("http", 8080, "TCP")],
    &[("http", 8080, "TCP"), ("metrics", 9090, "TCP")],
    &[("grpc", 50051, "TCP"), ("metrics", 9090, "TCP")],
    &[("http", 80, "TCP")],
    &[("https", 8443, "TCP"), ("http", 8080, "TCP")],
    &[("redis", 6379, "TCP")],
    &[("postgres", 5432, "TCP")],
    &[("dns", 5353, "UDP"), ("dns-tcp", 5353, "TCP")],
];

// ---------------------------------------------------------------------------------------------
// The plan: every object as a function of its index

struct Workload {
    ns: usize,
    app: String,
    tier: &'static str,
    version: String,
    hash: String,
    rs_uid: String,
    profile: usize,
    sidecar: bool,
    /// Index of the first pod in the flat pod numbering, and the number of pods.
    first: usize,
    size: usize,
    /// Scrambles pod suffixes so they look random yet stay unique.
    scramble: u64,
}

struct Plan<'s> {
    spec: &'s Spec,
    workloads: Vec<Workload>,
    /// Workload of each application namespace, in order.
    by_ns: Vec<Vec<usize>>,
    /// Endpoints per Service.
    endpoints: Vec<usize>,
    /// Prefix length of each node's podCIDR.
    node_prefix: u32,
}

impl<'s> Plan<'s> {
    fn new(spec: &'s Spec) -> Plan<'s> {
        assert!(spec.namespaces > 0, "at least one namespace is needed");
        assert!(spec.nodes > 0 || spec.pods == 0, "pods need nodes");
        let namespaces = spec.namespaces;
        let n_workloads = if spec.pods == 0 {
            0
        } else if spec.services > 0 {
            spec.services.min(spec.pods)
        } else {
            (spec.pods / 15).clamp(1, spec.pods)
        };
        // Sizes: one pod each, the rest by skewed weights with cumulative rounding.
        let weights: Vec<u64> = (0..n_workloads)
            .map(|w| {
                let mut r = Rng::for_item(spec.seed, "size", w as u64);
                [1, 1, 2, 2, 3, 4, 6, 10, 20][r.below(9)]
            })
            .collect();
        let total_weight: u128 = weights.iter().map(|&w| u128::from(w)).sum();
        let rest = (spec.pods - n_workloads) as u128;
        let mut cum = 0u128;
        let mut given = 0usize;
        let mut first = 0usize;
        let mut workloads = Vec::with_capacity(n_workloads);
        let mut by_ns = vec![Vec::new(); namespaces];
        for (w, weight) in weights.iter().enumerate() {
            cum += u128::from(*weight);
            let upto = (rest * cum / total_weight.max(1)) as usize;
            let size = 1 + upto - given;
            given = upto;
            let mut r = Rng::for_item(spec.seed, "workload", w as u64);
            let ns = w % namespaces;
            let k = w / namespaces;
            let app = if k < APPS.len() {
                APPS[k].to_string()
            } else {
                format!("{}-{}", APPS[k % APPS.len()], k / APPS.len() + 1)
            };
            let version = if r.chance(3) {
                "canary".to_string()
            } else {
                format!("v{}.{}.{}", 1 + r.below(4), r.below(20), r.below(10))
            };
            let hash = suffix(r.next(), 10);
            workloads.push(Workload {
                ns,
                app,
                tier: TIERS[r.below(TIERS.len())],
                version,
                hash,
                rs_uid: r.uid(),
                profile: r.below(PORT_PROFILES.len()),
                sidecar: r.chance(30),
                first,
                size,
                scramble: 1 + 3 * (r.next() % 4_000_000),
            });
            by_ns[ns].push(w);
            first += size;
        }
        debug_assert_eq!(first, spec.pods);
        // Endpoints: in proportion to the selected workload's size, capped by it.
        let sizes: Vec<usize> = (0..spec.services)
            .map(|s| workload_of_service(s, n_workloads).map_or(0, |w| workloads[w].size))
            .collect();
        let total: u128 = sizes.iter().map(|&s| s as u128).sum();
        let wanted = (spec.endpoints as u128).min(total);
        let mut cum = 0u128;
        let mut given = 0usize;
        let endpoints = sizes
            .iter()
            .map(|&size| {
                cum += size as u128;
                let upto = (wanted * cum / total.max(1)) as usize;
                let n = upto - given;
                given = upto;
                n.min(size)
            })
            .collect();
        let per_node = spec.pods.div_ceil(spec.nodes.max(1)) + 2;
        let host_bits = usize::BITS - (per_node - 1).leading_zeros();
        let node_prefix = 32 - host_bits.max(2);
        assert!(
            (spec.nodes as u64) << host_bits <= 1 << 24,
            "10.0.0.0/8 cannot hold {} nodes of {} pods",
            spec.nodes,
            per_node
        );
        Plan {
            spec,
            workloads,
            by_ns,
            endpoints,
            node_prefix,
        }
    }

    fn seed(&self) -> u64 {
        self.spec.seed
    }

    fn namespace_name(&self, ns: usize) -> String {
        let base = format!(
            "{}-{}",
            TEAMS[ns % TEAMS.len()],
            ENVS[(ns / TEAMS.len()) % ENVS.len()]
        );
        let round = ns / (TEAMS.len() * ENVS.len());
        if round == 0 {
            base
        } else {
            format!("{base}-{}", round + 1)
        }
    }

    fn team(&self, ns: usize) -> &'static str {
        TEAMS[ns % TEAMS.len()]
    }

    fn namespace_objects(&self) -> Vec<Value> {
        let mut list: Vec<(String, Value)> = Vec::new();
        for (i, name) in ["default", "kube-system"].iter().enumerate() {
            let mut r = Rng::for_item(self.seed(), "system-ns", i as u64);
            list.push((name.to_string(), namespace(&mut r, name, Map::new())));
        }
        for ns in 0..self.spec.namespaces {
            let mut r = Rng::for_item(self.seed(), "namespace", ns as u64);
            let name = self.namespace_name(ns);
            let mut labels = Map::new();
            labels.insert("team".into(), json!(self.team(ns)));
            labels.insert("env".into(), json!(ENVS[(ns / TEAMS.len()) % ENVS.len()]));
            if r.chance(40) {
                labels.insert("istio-injection".into(), json!("enabled"));
            }
            if r.chance(20) {
                labels.insert(
                    "pod-security.kubernetes.io/enforce".into(),
                    json!("baseline"),
                );
            }
            list.push((name.clone(), namespace(&mut r, &name, labels)));
        }
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list.into_iter().map(|(_, v)| v).collect()
    }

    fn node_name(&self, n: usize) -> String {
        format!("ip-172-16-{}-{}.ec2.internal", n / 250, 10 + n % 250)
    }

    fn node_cidr_base(&self, n: usize) -> u32 {
        (10 << 24) + ((n as u32) << (32 - self.node_prefix))
    }

    fn node(&self, n: usize) -> Value {
        let mut r = Rng::for_item(self.seed(), "node", n as u64);
        let name = self.node_name(n);
        let ip = format!("172.16.{}.{}", n / 250, 10 + n % 250);
        let cidr = format!("{}/{}", ipv4(self.node_cidr_base(n)), self.node_prefix);
        let zone = ZONES[n % ZONES.len()];
        let created = r.timestamp();
        let ready_since = r.timestamp();
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true"
                },
                "creationTimestamp": created,
                "labels": {
                    "beta.kubernetes.io/arch": "amd64",
                    "beta.kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "node.kubernetes.io/instance-type": r.pick(INSTANCE_TYPES),
                    "topology.kubernetes.io/region": "us-east-1",
                    "topology.kubernetes.io/zone": zone
                },
                "name": name,
                "resourceVersion": r.resource_version(),
                "uid": r.uid()
            },
            "spec": {
                "podCIDR": cidr,
                "podCIDRs": [cidr],
                "providerID": format!("aws:///{zone}/i-0{:016x}", r.next())
            },
            "status": {
                "addresses": [
                    {"address": ip, "type": "InternalIP"},
                    {"address": name, "type": "Hostname"},
                    {"address": name, "type": "InternalDNS"}
                ],
                "allocatable": {"cpu": "7910m", "ephemeral-storage": "95491281146", "memory": "31236224Ki", "pods": "1000"},
                "capacity": {"cpu": "8", "ephemeral-storage": "104845292Ki", "memory": "32329920Ki", "pods": "1000"},
                "conditions": [
                    {"lastHeartbeatTime": ready_since, "lastTransitionTime": created, "message": "kubelet has sufficient memory available", "reason": "KubeletHasSufficientMemory", "status": "False", "type": "MemoryPressure"},
                    {"lastHeartbeatTime": ready_since, "lastTransitionTime": created, "message": "kubelet is posting ready status", "reason": "KubeletReady", "status": "True", "type": "Ready"}
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": r.uid(),
                    "containerRuntimeVersion": "containerd://1.7.27",
                    "kernelVersion": "6.1.128-136.201.amzn2023.x86_64",
                    "kubeProxyVersion": "",
                    "kubeletVersion": "v1.32.3",
                    "machineID": format!("ec2{:029x}", r.next()),
                    "operatingSystem": "linux",
                    "osImage": "Amazon Linux 2023.6.20250303",
                    "systemUUID": format!("ec2{:029x}", r.next())
                }
            }
        })
    }

    /// Every pod as (workload, index in workload), sorted by namespace and name.
    fn pod_order(&self) -> Vec<(usize, usize)> {
        let mut keys: Vec<(String, String, usize, usize)> = Vec::with_capacity(self.spec.pods);
        for (w, wl) in self.workloads.iter().enumerate() {
            let ns = self.namespace_name(wl.ns);
            for j in 0..wl.size {
                keys.push((ns.clone(), self.pod_name(w, j), w, j));
            }
        }
        keys.sort_unstable();
        keys.into_iter().map(|(_, _, w, j)| (w, j)).collect()
    }

    fn pod_name(&self, w: usize, j: usize) -> String {
        let wl = &self.workloads[w];
        let n = (j as u64 * wl.scramble + w as u64) % 14_348_907; // 27^5, prime to scramble
        format!("{}-{}-{}", wl.app, wl.hash, suffix(n, 5))
    }

    fn pod_ip(&self, w: usize, j: usize) -> (String, usize) {
        let g = self.workloads[w].first + j;
        let node = g % self.spec.nodes;
        let slot = g / self.spec.nodes;
        (ipv4(self.node_cidr_base(node) + 2 + slot as u32), node)
    }

    fn pod_uid(&self, w: usize, j: usize) -> String {
        Rng::for_item(self.seed(), "pod-uid", (self.workloads[w].first + j) as u64).uid()
    }

    fn ports(&self, w: usize) -> &'static [(&'static str, u16, &'static str)] {
        PORT_PROFILES[self.workloads[w].profile]
    }

    fn pod(&self, w: usize, j: usize) -> Value {
        let wl = &self.workloads[w];
        let mut r = Rng::for_item(self.seed(), "pod", (wl.first + j) as u64);
        let ns = self.namespace_name(wl.ns);
        let name = self.pod_name(w, j);
        let (ip, node) = self.pod_ip(w, j);
        let node_ip = format!("172.16.{}.{}", node / 250, 10 + node % 250);
        let team = self.team(wl.ns);
        let created = r.timestamp();
        let started = r.timestamp();
        let image = format!("registry.example.com/{team}/{}:{}", wl.app, wl.version);
        let ports: Vec<Value> = self
            .ports(w)
            .iter()
            .map(|(n, p, proto)| json!({"containerPort": p, "name": n, "protocol": proto}))
            .collect();
        let mut containers = vec![json!({
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "name": wl.app,
            "ports": ports,
            "resources": {
                "limits": {"memory": "512Mi"},
                "requests": {"cpu": "100m", "memory": "256Mi"}
            },
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "volumeMounts": [{
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "name": format!("kube-api-access-{}", suffix(r.next(), 5)),
                "readOnly": true
            }]
        })];
        let mut statuses = vec![container_status(&mut r, &wl.app, &image, &started)];
        if wl.sidecar {
            let proxy = "docker.io/istio/proxyv2:1.24.3";
            containers.push(json!({
                "image": proxy,
                "imagePullPolicy": "IfNotPresent",
                "name": "istio-proxy",
                "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File"
            }));
            statuses.push(container_status(&mut r, "istio-proxy", proxy, &started));
        }
        let mut labels = Map::new();
        labels.insert("app".into(), json!(wl.app));
        labels.insert("app.kubernetes.io/name".into(), json!(wl.app));
        labels.insert("app.kubernetes.io/part-of".into(), json!(team));
        labels.insert("pod-template-hash".into(), json!(wl.hash));
        labels.insert("team".into(), json!(team));
        labels.insert("tier".into(), json!(wl.tier));
        labels.insert("version".into(), json!(wl.version));
        if wl.sidecar {
            labels.insert("security.istio.io/tlsMode".into(), json!("istio"));
        }
        let rs = format!("{}-{}", wl.app, wl.hash);
        let conditions: Vec<Value> = ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
            .iter()
            .map(|t| {
                json!({"lastProbeTime": null, "lastTransitionTime": started, "status": "True", "type": t})
            })
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "creationTimestamp": created,
                "generateName": format!("{rs}-"),
                "labels": labels,
                "name": name,
                "namespace": ns,
                "ownerReferences": [{
                    "apiVersion": "apps/v1",
                    "blockOwnerDeletion": true,
                    "controller": true,
                    "kind": "ReplicaSet",
                    "name": rs,
                    "uid": wl.rs_uid
                }],
                "resourceVersion": r.resource_version(),
                "uid": self.pod_uid(w, j)
            },
            "spec": {
                "containers": containers,
                "dnsPolicy": "ClusterFirst",
                "enableServiceLinks": true,
                "nodeName": self.node_name(node),
                "preemptionPolicy": "PreemptLowerPriority",
                "priority": 0,
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "securityContext": {},
                "serviceAccount": wl.app,
                "serviceAccountName": wl.app,
                "terminationGracePeriodSeconds": 30,
                "tolerations": [
                    {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                    {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300}
                ]
            },
            "status": {
                "conditions": conditions,
                "containerStatuses": statuses,
                "hostIP": node_ip,
                "hostIPs": [{"ip": node_ip}],
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "qosClass": "Burstable",
                "startTime": created
            }
        })
    }

    fn service_name(&self, s: usize) -> Option<(usize, String)> {
        let w = workload_of_service(s, self.workloads.len())?;
        let round = s / self.workloads.len();
        let app = &self.workloads[w].app;
        Some((
            w,
            if round == 0 {
                app.clone()
            } else {
                format!("{app}-alt{round}")
            },
        ))
    }

    /// Namespace and name of a Service; selectorless services when there are no pods.
    fn service_key(&self, s: usize) -> (String, String, Option<usize>) {
        match self.service_name(s) {
            Some((w, name)) => (self.namespace_name(self.workloads[w].ns), name, Some(w)),
            None => (
                self.namespace_name(s % self.spec.namespaces),
                format!("external-{s}"),
                None,
            ),
        }
    }

    fn service_order(&self) -> Vec<usize> {
        let mut keys: Vec<(String, String, usize)> = (0..self.spec.services)
            .map(|s| {
                let (ns, name, _) = self.service_key(s);
                (ns, name, s)
            })
            .collect();
        keys.sort_unstable();
        keys.into_iter().map(|k| k.2).collect()
    }

    fn service_uid(&self, s: usize) -> String {
        Rng::for_item(self.seed(), "service-uid", s as u64).uid()
    }

    fn cluster_ip(&self, s: usize) -> String {
        // 10.96.0.1 is the kubernetes Service and 10.96.0.10 kube-dns in real clusters.
        ipv4((10 << 24) + (96 << 16) + 16 + s as u32)
    }

    fn headless(&self, s: usize) -> bool {
        s % 50 == 7
    }

    /// (name, port, targetPort by name?, container port, protocol) of each Service port.
    fn service_ports(
        &self,
        s: usize,
        w: usize,
    ) -> Vec<(Option<&'static str>, u16, bool, u16, &'static str)> {
        let ports = self.ports(w);
        let by_name = !s.is_multiple_of(3);
        ports
            .iter()
            .map(|&(name, cport, proto)| {
                let port = match cport {
                    8080 => 80,
                    8443 => 443,
                    p => p,
                };
                let name = (ports.len() > 1 || s.is_multiple_of(2)).then_some(name);
                (name, port, by_name, cport, proto)
            })
            .collect()
    }

    fn service(&self, s: usize) -> Value {
        let mut r = Rng::for_item(self.seed(), "service", s as u64);
        let (ns, name, w) = self.service_key(s);
        let headless = self.headless(s);
        let node_port = !headless && s % 20 == 3;
        let ip = if headless {
            "None".to_string()
        } else {
            self.cluster_ip(s)
        };
        let mut spec = Map::new();
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        spec.insert("internalTrafficPolicy".into(), json!("Cluster"));
        spec.insert("ipFamilies".into(), json!(["IPv4"]));
        spec.insert("ipFamilyPolicy".into(), json!("SingleStack"));
        spec.insert("sessionAffinity".into(), json!("None"));
        spec.insert(
            "type".into(),
            json!(if node_port { "NodePort" } else { "ClusterIP" }),
        );
        let mut labels = Map::new();
        if let Some(w) = w {
            let wl = &self.workloads[w];
            labels.insert("app".into(), json!(wl.app));
            labels.insert("team".into(), json!(self.team(wl.ns)));
            spec.insert("selector".into(), json!({"app": wl.app}));
            let ports: Vec<Value> = self
                .service_ports(s, w)
                .into_iter()
                .enumerate()
                .map(|(i, (pname, port, by_name, cport, proto))| {
                    let mut p = Map::new();
                    if let Some(n) = pname {
                        p.insert("name".into(), json!(n));
                    }
                    p.insert("port".into(), json!(port));
                    p.insert("protocol".into(), json!(proto));
                    let target = match (by_name, pname) {
                        (true, Some(n)) => json!(n),
                        _ => json!(cport),
                    };
                    p.insert("targetPort".into(), target);
                    if node_port {
                        let n = 30000 + (s / 20 * 2 + i) % 2768;
                        p.insert("nodePort".into(), json!(n));
                        spec.insert("externalTrafficPolicy".into(), json!("Cluster"));
                    }
                    Value::Object(p)
                })
                .collect();
            spec.insert("ports".into(), json!(ports));
        } else {
            spec.insert(
                "ports".into(),
                json!([{"port": 443, "protocol": "TCP", "targetPort": 443}]),
            );
        }
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "annotations": {"meta.helm.sh/release-name": name, "meta.helm.sh/release-namespace": ns},
                "creationTimestamp": r.timestamp(),
                "labels": labels,
                "name": name,
                "namespace": ns,
                "resourceVersion": r.resource_version(),
                "uid": self.service_uid(s)
            },
            "spec": spec,
            "status": {"loadBalancer": {}}
        })
    }

    fn slices(&self, s: usize) -> Vec<Value> {
        let (ns, name, w) = self.service_key(s);
        let Some(w) = w else {
            return Vec::new();
        };
        let count = self.endpoints[s];
        if count == 0 {
            return Vec::new();
        }
        let mut r = Rng::for_item(self.seed(), "slice", s as u64);
        let svc_uid = self.service_uid(s);
        let ports: Vec<Value> = self
            .service_ports(s, w)
            .into_iter()
            .map(|(pname, _, _, cport, proto)| {
                json!({"name": pname.unwrap_or(""), "port": cport, "protocol": proto})
            })
            .collect();
        let mut out = Vec::new();
        let mut j = 0;
        while j < count {
            let end = (j + 100).min(count);
            let endpoints: Vec<Value> = (j..end)
                .map(|k| {
                    let (ip, node) = self.pod_ip(w, k);
                    let ready = !r.chance(1);
                    json!({
                        "addresses": [ip],
                        "conditions": {"ready": ready, "serving": ready, "terminating": false},
                        "nodeName": self.node_name(node),
                        "targetRef": {
                            "kind": "Pod",
                            "name": self.pod_name(w, k),
                            "namespace": ns,
                            "uid": self.pod_uid(w, k)
                        },
                        "zone": ZONES[node % ZONES.len()]
                    })
                })
                .collect();
            out.push(json!({
                "addressType": "IPv4",
                "apiVersion": "discovery.k8s.io/v1",
                "endpoints": endpoints,
                "kind": "EndpointSlice",
                "metadata": {
                    "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": r.timestamp()},
                    "creationTimestamp": r.timestamp(),
                    "generateName": format!("{name}-"),
                    "generation": 1 + r.below(40),
                    "labels": {
                        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                        "kubernetes.io/service-name": name
                    },
                    "name": format!("{name}-{}", suffix(r.next(), 5)),
                    "namespace": ns,
                    "ownerReferences": [{
                        "apiVersion": "v1",
                        "blockOwnerDeletion": true,
                        "controller": true,
                        "kind": "Service",
                        "name": name,
                        "uid": svc_uid
                    }],
                    "resourceVersion": r.resource_version(),
                    "uid": r.uid()
                },
                "ports": ports
            }));
            j = end;
        }
        out.sort_by(|a, b| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        });
        out
    }

    /// (namespace index, workload) of a policy; `None` workload for default deny.
    fn policy_target(&self, p: usize) -> (usize, Option<usize>) {
        let ns = p % self.spec.namespaces;
        let k = p / self.spec.namespaces;
        let in_ns = &self.by_ns[ns];
        if k == 0 || in_ns.is_empty() {
            (ns, None)
        } else {
            (ns, Some(in_ns[(k - 1) % in_ns.len()]))
        }
    }

    fn policy_name(&self, p: usize) -> String {
        let k = p / self.spec.namespaces;
        match self.policy_target(p) {
            (_, None) if k == 0 => "default-deny-ingress".to_string(),
            (_, None) => format!("deny-all-{k}"),
            (_, Some(w)) => format!("{}-netpol-{k}", self.workloads[w].app),
        }
    }

    fn policy_order(&self) -> Vec<usize> {
        let mut keys: Vec<(String, String, usize)> = (0..self.spec.policies)
            .map(|p| {
                let (ns, _) = self.policy_target(p);
                (self.namespace_name(ns), self.policy_name(p), p)
            })
            .collect();
        keys.sort_unstable();
        keys.into_iter().map(|k| k.2).collect()
    }

    /// A workload of namespace `ns` other than `w`, else `w`.
    fn peer(&self, r: &mut Rng, ns: usize, w: usize) -> usize {
        let in_ns = &self.by_ns[ns];
        let other = *r.pick(in_ns);
        if other == w && in_ns.len() > 1 {
            in_ns[(in_ns.iter().position(|&x| x == w).unwrap_or(0) + 1) % in_ns.len()]
        } else {
            other
        }
    }

    fn policy(&self, p: usize) -> Value {
        let mut r = Rng::for_item(self.seed(), "policy", p as u64);
        let (ns, target) = self.policy_target(p);
        let ns_name = self.namespace_name(ns);
        let name = self.policy_name(p);
        let meta = json!({
            "creationTimestamp": r.timestamp(),
            "generation": 1,
            "name": name,
            "namespace": ns_name,
            "resourceVersion": r.resource_version(),
            "uid": r.uid()
        });
        let Some(w) = target else {
            return json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": meta,
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
            });
        };
        let wl = &self.workloads[w];
        let app_sel = json!({"matchLabels": {"app": wl.app}});
        let (cname, cport, cproto) = self.ports(w)[0];
        let by_number = json!({"port": cport, "protocol": cproto});
        let by_name = json!({"port": cname, "protocol": cproto});
        let spec = match r.below(100) {
            // Ingress from another app of the namespace, port by number.
            0..=29 => {
                let peer = &self.workloads[self.peer(&mut r, ns, w)].app;
                json!({
                    "ingress": [{
                        "from": [{"podSelector": {"matchLabels": {"app": peer}}}],
                        "ports": [by_number]
                    }],
                    "podSelector": app_sel,
                    "policyTypes": ["Ingress"]
                })
            }
            // Ingress from a tier of another team's namespaces, port by name.
            30..=44 => {
                let team = r.pick(TEAMS);
                json!({
                    "ingress": [{
                        "from": [{
                            "namespaceSelector": {"matchLabels": {"team": team}},
                            "podSelector": {"matchLabels": {"tier": "frontend"}}
                        }],
                        "ports": [by_name]
                    }],
                    "podSelector": app_sel,
                    "policyTypes": ["Ingress"]
                })
            }
            // Ingress from an external block with a hole.
            45..=54 => {
                let k = 4 * r.below(64);
                json!({
                    "ingress": [{
                        "from": [
                            {"ipBlock": {"cidr": format!("100.64.{k}.0/22"), "except": [format!("100.64.{}.0/24", k + 1 + r.below(3))]}},
                            {"ipBlock": {"cidr": format!("198.51.100.{}/32", r.below(256))}}
                        ],
                        "ports": [{"port": 443, "protocol": "TCP"}, by_number]
                    }],
                    "podSelector": app_sel,
                    "policyTypes": ["Ingress"]
                })
            }
            // Egress: DNS, a database of the namespace, the internet but not private ranges.
            55..=74 => {
                let db = &self.workloads[self.peer(&mut r, ns, w)].app;
                json!({
                    "egress": [
                        {
                            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                            "to": [{
                                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
                            }]
                        },
                        {
                            "ports": [{"port": 5432, "protocol": "TCP"}, {"port": "redis", "protocol": "TCP"}],
                            "to": [{"podSelector": {"matchLabels": {"app": db}}}]
                        },
                        {
                            "ports": [{"port": 443, "protocol": "TCP"}],
                            "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}]
                        }
                    ],
                    "podSelector": app_sel,
                    "policyTypes": ["Egress"]
                })
            }
            // Port ranges and set-based selectors.
            75..=89 => {
                let other = r.pick(TEAMS);
                json!({
                    "ingress": [{
                        "from": [
                            {"podSelector": {"matchExpressions": [
                                {"key": "team", "operator": "In", "values": [self.team(ns), other]},
                                {"key": "version", "operator": "NotIn", "values": ["canary"]}
                            ]}},
                            {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "Exists"}]}}
                        ],
                        "ports": [
                            {"endPort": 30100, "port": 30000, "protocol": "TCP"},
                            {"endPort": 5010 + r.below(50), "port": 5000, "protocol": "UDP"}
                        ]
                    }],
                    "podSelector": {"matchExpressions": [
                        {"key": "app", "operator": "In", "values": [wl.app]},
                        {"key": "tier", "operator": "Exists"}
                    ]},
                    "policyTypes": ["Ingress"]
                })
            }
            // Both directions, several rules.
            _ => {
                let a = &self.workloads[self.peer(&mut r, ns, w)].app;
                let b = &self.workloads[self.peer(&mut r, ns, w)].app;
                json!({
                    "egress": [{
                        "ports": [{"port": "grpc", "protocol": "TCP"}, {"port": 9090, "protocol": "TCP"}],
                        "to": [{"podSelector": {"matchLabels": {"app": b}}}]
                    }],
                    "ingress": [
                        {"from": [{"podSelector": {"matchLabels": {"app": a}}}], "ports": [by_name]},
                        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}], "ports": [{"port": "metrics", "protocol": "TCP"}]}
                    ],
                    "podSelector": app_sel,
                    "policyTypes": ["Ingress", "Egress"]
                })
            }
        };
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta,
            "spec": spec
        })
    }
}

fn workload_of_service(s: usize, n_workloads: usize) -> Option<usize> {
    (n_workloads > 0).then(|| s % n_workloads)
}

fn namespace(r: &mut Rng, name: &str, mut labels: Map<String, Value>) -> Value {
    labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "creationTimestamp": r.timestamp(),
            "labels": labels,
            "name": name,
            "resourceVersion": r.resource_version(),
            "uid": r.uid()
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

fn container_status(r: &mut Rng, name: &str, image: &str, started: &str) -> Value {
    json!({
        "containerID": format!("containerd://{:016x}{:016x}{:016x}{:016x}", r.next(), r.next(), r.next(), r.next()),
        "image": image,
        "imageID": format!("{}@sha256:{:016x}{:016x}{:016x}{:016x}", image.split(':').next().unwrap_or(image), r.next(), r.next(), r.next(), r.next()),
        "lastState": {},
        "name": name,
        "ready": true,
        "restartCount": 0,
        "started": true,
        "state": {"running": {"startedAt": started}}
    })
}

fn ipv4(n: u32) -> String {
    std::net::Ipv4Addr::from(n).to_string()
}

// ---------------------------------------------------------------------------------------------
// Output

/// Writes the List envelope and its items, indented as kubectl does.
struct ListWriter<W: Write> {
    w: W,
    pretty: bool,
    first: bool,
    bytes: u64,
    buf: Vec<u8>,
}

impl<W: Write> ListWriter<W> {
    fn new(w: W, pretty: bool) -> io::Result<ListWriter<W>> {
        let mut lw = ListWriter {
            w,
            pretty,
            first: true,
            bytes: 0,
            buf: Vec::new(),
        };
        let head: &[u8] = if pretty {
            b"{\n    \"apiVersion\": \"v1\",\n    \"items\": ["
        } else {
            b"{\"apiVersion\":\"v1\",\"items\":["
        };
        lw.put(head)?;
        Ok(lw)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.bytes += bytes.len() as u64;
        self.w.write_all(bytes)
    }

    fn item(&mut self, v: &Value) -> io::Result<()> {
        self.buf.clear();
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        if self.pretty {
            self.buf.extend_from_slice(b"\n        ");
            let mut item = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut item, fmt);
            v.serialize(&mut ser).map_err(io::Error::other)?;
            for &b in &item {
                self.buf.push(b);
                if b == b'\n' {
                    self.buf.extend_from_slice(b"        ");
                }
            }
        } else {
            serde_json::to_writer(&mut self.buf, v).map_err(io::Error::other)?;
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.put(&buf);
        self.buf = buf;
        r
    }

    fn finish(mut self) -> io::Result<u64> {
        let tail: &[u8] = if self.pretty {
            if self.first {
                b"],\n    \"kind\": \"List\",\n    \"metadata\": {\n        \"resourceVersion\": \"\"\n    }\n}\n"
            } else {
                b"\n    ],\n    \"kind\": \"List\",\n    \"metadata\": {\n        \"resourceVersion\": \"\"\n    }\n}\n"
            }
        } else {
            b"],\"kind\":\"List\",\"metadata\":{\"resourceVersion\":\"\"}}\n"
        };
        self.put(tail)?;
        self.w.flush()?;
        Ok(self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_valid_json() {
        let spec = Spec {
            pods: 200,
            services: 20,
            endpoints: 150,
            policies: 30,
            namespaces: 3,
            nodes: 2,
            ..Spec::small()
        };
        let a = generate(&spec);
        assert_eq!(a, generate(&spec));
        let v: Value = serde_json::from_str(&a).expect("valid JSON");
        assert_eq!(v["kind"], "List");
        let items = v["items"].as_array().expect("items");
        let count = |k: &str| items.iter().filter(|i| i["kind"] == k).count();
        assert_eq!(count("Pod"), 200);
        assert_eq!(count("Service"), 20);
        assert_eq!(count("NetworkPolicy"), 30);
        assert_eq!(count("Node"), 2);
        assert_eq!(count("Namespace"), 5);
        let eps: usize = items
            .iter()
            .filter(|i| i["kind"] == "EndpointSlice")
            .map(|i| i["endpoints"].as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(eps, 150);
        let compact = generate(&Spec {
            pretty: false,
            ..spec
        });
        let w: Value = serde_json::from_str(&compact).expect("valid JSON");
        assert_eq!(v, w);
    }

    #[test]
    fn pod_ips_and_names_are_unique() {
        let spec = Spec::small();
        let plan = Plan::new(&spec);
        let mut ips = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for (w, wl) in plan.workloads.iter().enumerate() {
            for j in 0..wl.size {
                assert!(ips.insert(plan.pod_ip(w, j).0));
                assert!(names.insert((wl.ns, plan.pod_name(w, j))));
            }
        }
        assert_eq!(ips.len(), spec.pods);
    }
}
