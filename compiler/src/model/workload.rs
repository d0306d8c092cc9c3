//! Workloads (Deployment, ReplicaSet, ReplicationController, StatefulSet, DaemonSet, Job,
//! CronJob) → pods.
//!
//! A ReplicationController expands as a ReplicaSet does (`<name>-<suffix>`). A CronJob
//! expands into the pods of one run of its Job (the one a running cluster has while the
//! job runs; none when `suspend: true`): the Job is named as the CronJob controller names
//! it, `<cronjob>-<scheduled time in minutes>`, with a time made from a hash of the
//! CronJob's name, and its pods as a Job's.
//!
//! Offline inputs often describe workloads and no pods. Each workload is expanded into the
//! pods its controller would make, with names in the controller's style made deterministic
//! (hashes of the template and the index instead of random suffixes), so that snapshots and
//! diffs are stable. A workload whose pods are already in the input is not expanded again.

use super::build::{At, Builder};
use super::*;
use crate::diag::Code;
use crate::frontend::{Body, Object};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

struct Workload<'a> {
    kind: &'static str,
    meta: &'a ObjectMeta,
    template: &'a PodTemplateSpec,
    replicas: usize,
}

fn workload_of(body: &Body) -> Option<Workload<'_>> {
    Some(match body {
        Body::Deployment(d) => {
            let spec = d.spec.as_ref()?;
            Workload {
                kind: "Deployment",
                meta: &d.metadata,
                template: &spec.template,
                replicas: spec.replicas.unwrap_or(1).max(0) as usize,
            }
        }
        Body::ReplicaSet(r) => {
            let spec = r.spec.as_ref()?;
            Workload {
                kind: "ReplicaSet",
                meta: &r.metadata,
                template: spec.template.as_ref()?,
                replicas: spec.replicas.unwrap_or(1).max(0) as usize,
            }
        }
        Body::StatefulSet(s) => {
            let spec = s.spec.as_ref()?;
            Workload {
                kind: "StatefulSet",
                meta: &s.metadata,
                template: &spec.template,
                replicas: spec.replicas.unwrap_or(1).max(0) as usize,
            }
        }
        Body::DaemonSet(d) => {
            let spec = d.spec.as_ref()?;
            Workload {
                kind: "DaemonSet",
                meta: &d.metadata,
                template: &spec.template,
                replicas: 0,
            }
        }
        Body::Job(j) => {
            let spec = j.spec.as_ref()?;
            Workload {
                kind: "Job",
                meta: &j.metadata,
                template: &spec.template,
                replicas: job_pods(spec),
            }
        }
        Body::ReplicationController(r) => {
            let spec = r.spec.as_ref()?;
            Workload {
                kind: "ReplicationController",
                meta: &r.metadata,
                template: spec.template.as_ref()?,
                replicas: spec.replicas.unwrap_or(1).max(0) as usize,
            }
        }
        Body::CronJob(c) => {
            let spec = c.spec.as_ref()?;
            let job = spec.job_template.spec.as_ref()?;
            Workload {
                kind: "CronJob",
                meta: &c.metadata,
                template: &job.template,
                replicas: if spec.suspend == Some(true) {
                    0
                } else {
                    job_pods(job)
                },
            }
        }
        _ => return None,
    })
}

/// The pods a Job runs at once: `parallelism` (default 1), at most `completions`.
fn job_pods(spec: &k8s_openapi::api::batch::v1::JobSpec) -> usize {
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let completions = spec.completions.unwrap_or(parallelism).max(0);
    parallelism.min(completions) as usize
}

/// The number of pod addresses the pod CIDRs hold (the `--pod-cidr` range and every node's
/// podCIDRs), less the pods already present, and never more than a hard limit that keeps
/// the model in memory.
fn pod_room(b: &Builder<'_>) -> u128 {
    const MAX_PODS: u128 = 4_000_000;
    let size = |net: &ipnet::IpNet| {
        let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
        1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
    };
    let total = b
        .cluster
        .nodes
        .iter()
        .flat_map(|n| n.pod_cidrs.iter())
        .map(size)
        .fold(size(&b.options.pod_cidr), u128::saturating_add);
    total
        .min(MAX_PODS)
        .saturating_sub(b.cluster.pods.len() as u128)
}

/// A negative `replicas`, `parallelism` or `completions`, with its path.
fn negative_count(body: &Body) -> Option<(&'static str, i32)> {
    let (path, n) = match body {
        Body::Deployment(d) => ("spec.replicas", d.spec.as_ref()?.replicas?),
        Body::ReplicaSet(r) => ("spec.replicas", r.spec.as_ref()?.replicas?),
        Body::ReplicationController(r) => ("spec.replicas", r.spec.as_ref()?.replicas?),
        Body::StatefulSet(s) => ("spec.replicas", s.spec.as_ref()?.replicas?),
        Body::Job(j) => {
            let spec = j.spec.as_ref()?;
            match (spec.parallelism, spec.completions) {
                (Some(p), _) if p < 0 => ("spec.parallelism", p),
                (_, Some(c)) => ("spec.completions", c),
                _ => return None,
            }
        }
        _ => return None,
    };
    (n < 0).then_some((path, n))
}

/// Expands every workload that has no pods of its own in the input.
pub(super) fn expand(b: &mut Builder<'_>, workloads: &[&Object]) {
    let present: Vec<(String, String)> = workloads
        .iter()
        .filter_map(|o| workload_of(&o.body))
        .map(|w| (w.kind.to_string(), w.meta.name.clone().unwrap_or_default()))
        .collect();
    let owners: Vec<String> = b
        .cluster
        .pods
        .iter()
        .filter_map(|p| p.owner.clone())
        .collect();
    let nodes: Vec<String> = b.cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let mut room = pod_room(b);
    for obj in workloads {
        let Some(w) = workload_of(&obj.body) else {
            continue;
        };
        let at = At {
            sources: b.sources,
            span: obj.span,
        };
        if let Some((path, n)) = negative_count(&obj.body) {
            // ValidateNonnegativeField in the apps and batch validation refuses these.
            let d = b.err(
                Code::WrongType,
                at.field(path),
                format!("{path} is {n}; it cannot be negative"),
                "negative",
            );
            d.hints.push("write 0 or a positive number".into());
            continue;
        }
        // Refuse at once a workload that cannot fit, before its pods are made: a
        // `replicas: 100000000` would otherwise allocate gigabytes first.
        if w.replicas as u128 > room {
            let d = b.err(
                Code::PodCidrExhausted,
                at.field("spec.replicas"),
                format!(
                    "{} {} asks for {} pods, more than the pod CIDRs have room for",
                    w.kind,
                    w.meta.name.as_deref().unwrap_or(""),
                    w.replicas
                ),
                "too many replicas",
            );
            d.hints.push(
                "lower the replicas, or give a larger range with --pod-cidr or the nodes' podCIDRs"
                    .into(),
            );
            continue;
        }
        room -= w.replicas as u128;
        let name = w.meta.name.clone().unwrap_or_default();
        let namespace = w
            .meta
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        // A ReplicaSet owned by a Deployment in the input is expanded through the Deployment.
        let owned_by_present = w
            .meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| present.contains(&(o.kind.clone(), o.name.clone())));
        let has_pods = owners.iter().any(|o| {
            o == &format!("{}/{name}", w.kind)
                || (w.kind == "Deployment" && o.starts_with(&format!("ReplicaSet/{name}-")))
        });
        if owned_by_present || has_pods {
            continue;
        }
        let spec = w.template.spec.clone().unwrap_or_default();
        let base = if w.kind == "CronJob" {
            "spec.jobTemplate.spec.template.spec"
        } else {
            "spec.template.spec"
        };
        let Some(ports) = b.container_ports(&spec, at, base) else {
            continue;
        };
        let template_labels = w
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let template_hash = hash_text(&serde_json::to_string(w.template).unwrap_or_default());
        let origin = b.origin(w.kind, w.meta, true, obj.span);
        let placements: Vec<(String, Labels, Option<String>)> = match w.kind {
            "Deployment" => {
                let rs_hash = safe_encode(template_hash, 10);
                (0..w.replicas)
                    .map(|i| {
                        let mut extra = Labels::new();
                        extra.insert("pod-template-hash".into(), rs_hash.clone());
                        (
                            format!(
                                "{name}-{rs_hash}-{}",
                                safe_encode(hash_text(&format!("{name}/{i}")), 5)
                            ),
                            extra,
                            round_robin(&nodes, i),
                        )
                    })
                    .collect()
            }
            "ReplicaSet" | "ReplicationController" | "Job" | "CronJob" => {
                // The pods' owner name: a CronJob's pods belong to its Job of one run.
                let owner = if w.kind == "CronJob" {
                    // Minutes since the epoch in 2024-2026, from the name: stable output.
                    let minutes = 28_401_120 + hash_text(&name) % 1_576_800;
                    format!("{name}-{minutes}")
                } else {
                    name.clone()
                };
                (0..w.replicas)
                    .map(|i| {
                        let mut extra = Labels::new();
                        if w.kind == "Job" || w.kind == "CronJob" {
                            extra.insert("batch.kubernetes.io/job-name".into(), owner.clone());
                            extra.insert("job-name".into(), owner.clone());
                        }
                        (
                            format!(
                                "{owner}-{}",
                                safe_encode(hash_text(&format!("{owner}/{i}")), 5)
                            ),
                            extra,
                            round_robin(&nodes, i),
                        )
                    })
                    .collect()
            }
            "StatefulSet" => (0..w.replicas)
                .map(|i| {
                    let mut extra = Labels::new();
                    extra.insert(
                        "statefulset.kubernetes.io/pod-name".into(),
                        format!("{name}-{i}"),
                    );
                    extra.insert("apps.kubernetes.io/pod-index".into(), i.to_string());
                    (format!("{name}-{i}"), extra, round_robin(&nodes, i))
                })
                .collect(),
            _ => {
                let targets: Vec<Option<String>> = if nodes.is_empty() {
                    vec![None]
                } else {
                    nodes.iter().cloned().map(Some).collect()
                };
                targets
                    .into_iter()
                    .map(|node| {
                        let seed = format!("{name}/{}", node.as_deref().unwrap_or(""));
                        (
                            format!("{name}-{}", safe_encode(hash_text(&seed), 5)),
                            Labels::new(),
                            node,
                        )
                    })
                    .collect()
            }
        };
        for (pod_name, extra, node) in placements {
            let mut labels = template_labels.clone();
            labels.extend(extra);
            b.cluster.pods.push(Pod {
                namespace: namespace.clone(),
                name: pod_name,
                labels,
                ips: Vec::new(),
                node: spec.node_name.clone().or(node),
                ports: ports.clone(),
                extra_ports: Vec::new(),
                service_account: spec
                    .service_account_name
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                host_network: spec.host_network.unwrap_or(false),
                cilium_labels: Labels::new(),
                owner: Some(format!("{}/{name}", w.kind)),
                origin: origin.clone(),
            });
        }
    }
}

fn round_robin(nodes: &[String], i: usize) -> Option<String> {
    (!nodes.is_empty()).then(|| nodes[i % nodes.len()].clone())
}

/// FNV-1a, 64 bits: a stable hash that does not depend on the Rust version.
pub fn hash_text(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Encodes a hash in the alphabet Kubernetes uses for generated names (no vowels, so no words).
fn safe_encode(mut h: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::with_capacity(len);
    for _ in 0..len {
        out.push(ALPHABET[(h % ALPHABET.len() as u64) as usize] as char);
        h /= ALPHABET.len() as u64;
        if h == 0 {
            h = 0x9e37_79b9_7f4a_7c15;
        }
    }
    out
}
