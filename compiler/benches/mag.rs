//! MAG benchmarks at cluster scale: full lowering of one node, and one pod add → entry-level
//! diff. The cluster is generated in memory (150k pods over 200 nodes, 10k services, 10k
//! NetworkPolicies) until `tools/gencluster` inputs are on main.
//!
//! `cargo bench -p pipec --bench mag` runs criterion; before it, the binary prints the
//! median and p99 of 1000 pod-add and pod-remove events, and the diff sizes.

#![allow(
    missing_docs,
    reason = "criterion_group! makes an undocumented function"
)]

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use codespan_reporting as _;
use gencluster as _;
use indexmap as _;
use insta as _;
use k8s_openapi as _;
use petgraph as _;
use pipec_source as _;
use policy_lang as _;
use proptest as _;
use rustc_hash as _;
use serde as _;
use serde_json as _;
use serde_path_to_error as _;
use serde_yaml as _;
use thiserror as _;

use criterion::{criterion_group, Criterion};
use ipnet::IpNet;
use pipec::lower::incremental::{update, Change};
use pipec::lower::{self, Lowered};
use pipec::model::*;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The allocator the `pipec` binary uses (see `cli/src/main.rs`), so that the figures are the
/// binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Scale of the generated cluster.
struct Scale {
    nodes: usize,
    namespaces: usize,
    apps: usize,
    replicas: usize,
}

const FULL: Scale = Scale {
    nodes: 200,
    namespaces: 100,
    apps: 10_000,
    replicas: 15,
};

fn origin(kind: &str, ns: Option<&str>, name: &str) -> Origin {
    Origin {
        kind: kind.into(),
        namespace: ns.map(str::to_string),
        name: name.into(),
        span: None,
    }
}

fn pod_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(10, 0, 0, 0)) + 1 + i as u32,
    ))
}

fn make_pod(s: &Scale, app: usize, r: usize, index: usize) -> Pod {
    let ns = format!("ns-{}", app % s.namespaces);
    let labels = Labels::from([
        ("app".to_string(), format!("app-{app}")),
        ("tier".to_string(), format!("t{}", app % 3)),
        ("pod-template-hash".to_string(), format!("h{app}")),
    ]);
    Pod {
        namespace: ns.clone(),
        name: format!("app-{app}-{r}"),
        labels,
        ips: vec![pod_ip(index)],
        node: Some(format!("node-{}", index % s.nodes)),
        ports: vec![ContainerPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Protocol::Tcp,
        }],
        extra_ports: vec![],
        service_account: "default".into(),
        host_network: false,
        cilium_labels: Labels::new(),
        owner: None,
        origin: origin("Pod", Some(&ns), &format!("app-{app}-{r}")),
    }
}

fn backends_of(c: &Cluster, ns: &str, app: &str) -> Vec<ServiceEndpoint> {
    let mut v: Vec<ServiceEndpoint> = c
        .pods
        .iter()
        .enumerate()
        .filter(|(_, p)| p.namespace == ns && p.labels.get("app").map(String::as_str) == Some(app))
        .map(|(i, p)| ServiceEndpoint {
            ip: p.ips[0],
            pod: Some(PodId(i as u32)),
            node: p.node.clone(),
            ready: true,
            serving: true,
            terminating: false,
            ports: vec![EndpointPort {
                name: Some("web".into()),
                port: 8080,
                protocol: Protocol::Tcp,
            }],
        })
        .collect();
    v.sort_by_key(|b| b.ip);
    v
}

fn cluster(s: &Scale) -> Cluster {
    let mut c = Cluster {
        name: "default".into(),
        ..Cluster::default()
    };
    for n in 0..s.namespaces {
        let name = format!("ns-{n}");
        c.namespaces.insert(
            name.clone(),
            Namespace {
                name: name.clone(),
                labels: Labels::from([
                    ("kubernetes.io/metadata.name".to_string(), name.clone()),
                    ("team".to_string(), format!("team-{}", n % 10)),
                ]),
                origin: None,
            },
        );
    }
    for n in 0..s.nodes {
        c.nodes.push(Node {
            name: format!("node-{n}"),
            labels: Labels::from([("zone".to_string(), format!("z{}", n % 4))]),
            addresses: vec![IpAddr::V4(Ipv4Addr::new(
                192,
                168,
                (n / 256) as u8,
                (n % 256) as u8,
            ))],
            pod_cidrs: vec![],
            boot_id: None,
            origin: None,
        });
    }
    c.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut index = 0;
    for app in 0..s.apps {
        for r in 0..s.replicas {
            c.pods.push(make_pod(s, app, r, index));
            index += 1;
        }
    }
    c.pods
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    // Backends by (namespace, app), in one pass.
    let mut by_app: BTreeMap<(String, String), Vec<ServiceEndpoint>> = BTreeMap::new();
    for (i, p) in c.pods.iter().enumerate() {
        by_app
            .entry((p.namespace.clone(), p.labels["app"].clone()))
            .or_default()
            .push(ServiceEndpoint {
                ip: p.ips[0],
                pod: Some(PodId(i as u32)),
                node: p.node.clone(),
                ready: true,
                serving: true,
                terminating: false,
                ports: vec![EndpointPort {
                    name: Some("web".into()),
                    port: 8080,
                    protocol: Protocol::Tcp,
                }],
            });
    }
    for app in 0..s.apps {
        let ns = format!("ns-{}", app % s.namespaces);
        let name = format!("app-{app}");
        let mut backends = by_app
            .remove(&(ns.clone(), name.clone()))
            .unwrap_or_default();
        backends.sort_by_key(|b| b.ip);
        c.services.push(Service {
            namespace: ns.clone(),
            name: name.clone(),
            service_type: ServiceType::ClusterIp,
            cluster_ips: vec![IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 1 + app as u32,
            ))],
            ports: vec![ServicePort {
                name: Some("web".into()),
                protocol: Protocol::Tcp,
                port: 80,
                target: PortRef::Name("http".into()),
                node_port: None,
            }],
            selector: Some(Labels::from([("app".to_string(), name.clone())])),
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
            external_ips: vec![],
            load_balancer_ips: vec![],
            backends,
            backend_source: BackendSource::Selector,
            origin: origin("Service", Some(&ns), &name),
        });
        let np_origin = origin("NetworkPolicy", Some(&ns), &name);
        let rule = |section: &str, index: usize| RuleRef {
            origin: np_origin.clone(),
            section: section.into(),
            index,
            name: None,
            path: Default::default(),
            span: None,
        };
        let mut peers = vec![NpPeer::Pods {
            namespaces: Some(Selector::from_labels(Labels::from([(
                "team".to_string(),
                format!("team-{}", (app + 1) % 10),
            )]))),
            pods: Some(Selector::from_labels(Labels::from([(
                "app".to_string(),
                format!("app-{}", (app + 1) % s.apps),
            )]))),
        }];
        if app % 2 == 0 {
            peers.push(NpPeer::IpBlock {
                cidr: IpNet::new(
                    IpAddr::V4(Ipv4Addr::new(
                        172,
                        16,
                        (app / 256 % 256) as u8,
                        (app % 256) as u8,
                    )),
                    32,
                )
                .unwrap(),
                except: vec![],
            });
        }
        c.network_policies.push(NetworkPolicy {
            namespace: ns.clone(),
            name: name.clone(),
            pod_selector: Selector::from_labels(Labels::from([("app".to_string(), name.clone())])),
            policy_types: PolicyTypes {
                ingress: true,
                egress: false,
            },
            ingress: vec![NpRule {
                peers,
                ports: vec![NpPort {
                    protocol: Protocol::Tcp,
                    port: Some(PortRef::Name("http".into())),
                    end_port: None,
                }],
                rule: rule("ingress", 0),
            }],
            egress: vec![],
            origin: np_origin.clone(),
        });
    }
    c.services
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    c.network_policies
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    fix_backend_ids(&mut c);
    c
}

/// Backends point at pods by index; recompute after the pod list changed.
fn fix_backend_ids(c: &mut Cluster) {
    let by_ip: BTreeMap<IpAddr, PodId> = c
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| (p.ips[0], PodId(i as u32)))
        .collect();
    for s in &mut c.services {
        for b in &mut s.backends {
            b.pod = by_ip.get(&b.ip).copied();
        }
    }
}

/// The cluster with one more replica of app 0 on node-0, and its key.
fn with_new_pod(s: &Scale, base: &Cluster) -> (Cluster, String) {
    let mut c = base.clone();
    let index = s.apps * s.replicas + s.nodes * 7; // A free address whose node is node-0.
    let mut pod = make_pod(s, 0, s.replicas, index);
    pod.node = Some("node-0".into());
    let key = pod.key();
    let pos = c
        .pods
        .binary_search_by(|p| (&p.namespace, &p.name).cmp(&(&pod.namespace, &pod.name)))
        .unwrap_err();
    c.pods.insert(pos, pod);
    let svc = c.find_service("ns-0", "app-0").unwrap();
    let backends = backends_of(&c, "ns-0", "app-0");
    c.services[svc.0 as usize].backends = backends;
    fix_backend_ids(&mut c);
    (c, key)
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn pod_events(lowered: &mut Lowered, a: &Cluster, b: &Cluster, key: &str, n: usize) {
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    let mut sizes = (0, 0, false);
    for _ in 0..n {
        let t = Instant::now();
        let d = update(lowered, a, b, &Change::Pod(key.into()));
        adds.push(t.elapsed());
        sizes.0 = d.len();
        sizes.2 |= d.full;
        let t = Instant::now();
        let d = update(lowered, b, a, &Change::Pod(key.into()));
        removes.push(t.elapsed());
        sizes.1 = d.len();
        sizes.2 |= d.full;
    }
    println!(
        "pod add:    median {:?}  p99 {:?}  ({} events, diff {} entries)",
        percentile(&mut adds, 0.5),
        percentile(&mut adds, 0.99),
        n,
        sizes.0
    );
    println!(
        "pod remove: median {:?}  p99 {:?}  ({} events, diff {} entries, any full fallback: {})",
        percentile(&mut removes, 0.5),
        percentile(&mut removes, 0.99),
        n,
        sizes.1,
        sizes.2
    );
    // The same events when every one also materialises the canonical (sorted) tables, as a
    // consumer that prints or validates after each change would.
    let mut both = Vec::new();
    for _ in 0..n / 10 {
        let t = Instant::now();
        update(lowered, a, b, &Change::Pod(key.into()));
        lowered.mag();
        both.push(t.elapsed());
        update(lowered, b, a, &Change::Pod(key.into()));
        lowered.mag();
    }
    println!(
        "pod add + canonical tables: median {:?}  p99 {:?}  ({} events)",
        percentile(&mut both, 0.5),
        percentile(&mut both, 0.99),
        n / 10
    );
}

/// CPU time of this process so far, from `/proc/self/schedstat` (Linux; zero elsewhere).
/// The development machine is shared, so wall time alone overstates the work when other
/// processes hold the core.
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// Lowers `node-0` a few times and prints the wall and CPU time of each run.
fn full_lowerings(base: &Cluster, runs: usize) {
    for run in 0..runs {
        let (t, cpu) = (Instant::now(), cpu_time());
        let lowered = lower::cluster_to_mag(base, Some("node-0"));
        let (wall, cpu) = (t.elapsed(), cpu_time() - cpu);
        println!(
            "full lowering of node-0, run {run}: wall {wall:?}, cpu {cpu:?}, {} entries",
            lowered.mag().entry_count()
        );
    }
}

fn benches(c: &mut Criterion) {
    let t = Instant::now();
    let base = cluster(&FULL);
    println!(
        "generated cluster in {:?}: {} pods, {} services, {} policies",
        t.elapsed(),
        base.pods.len(),
        base.services.len(),
        base.network_policies.len()
    );
    let t = Instant::now();
    let mut lowered = lower::cluster_to_mag(&base, Some("node-0"));
    println!(
        "full lowering of node-0: {:?}, {} entries",
        t.elapsed(),
        lowered.mag().entry_count()
    );
    for tid in lowered.mag().table_ids() {
        let tb = lowered.mag().table(tid).unwrap();
        println!("  {tid} {:<15} {:>8} entries", tb.name, tb.entries.len());
    }
    full_lowerings(&base, 3);
    let (next, key) = with_new_pod(&FULL, &base);
    pod_events(&mut lowered, &base, &next, &key, 1000);
    let mut g = c.benchmark_group("mag");
    g.sample_size(10);
    g.bench_function("full_lowering_node", |b| {
        b.iter(|| lower::cluster_to_mag(&base, Some("node-0")))
    });
    g.bench_function("pod_add_remove", |b| {
        b.iter(|| {
            update(&mut lowered, &base, &next, &Change::Pod(key.clone()));
            update(&mut lowered, &next, &base, &Change::Pod(key.clone()));
        })
    });
    g.finish();
}

criterion_group!(mag, benches);

fn main() {
    mag();
    Criterion::default().configure_from_args().final_summary();
}
