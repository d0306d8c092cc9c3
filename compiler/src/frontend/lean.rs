//! Lean decoding of Pods on the JSON fast path.
//!
//! Pods are most of a cluster dump (150k of 180k objects in the scale benchmark) and most of
//! a pod's text is status and spec detail that the model never reads. A full k8s-openapi
//! decode allocates every string of it. This decoder reads only the fields that
//! [`crate::model::build`] reads and skips the rest without building anything:
//!
//! - `metadata`: `name`, `namespace`, `labels`, `ownerReferences`;
//! - `spec`: `containers[].name`, `containers[].ports`, `nodeName`, `serviceAccountName`,
//!   `hostNetwork`;
//! - `status`: `podIP`, `podIPs`.
//!
//! The result is still a [`core::Pod`] (with the other fields absent), so
//! [`super::Body::Pod`] keeps its type. Fields read here are decoded at least as strictly as
//! k8s-openapi does; when this decoder rejects a pod, the caller decodes it again with
//! k8s-openapi so that the diagnostic is the usual one. Fields skipped here are not
//! type-checked: a malformed `status.conditions` passes on this path.
//!
//! **If the model starts reading another Pod field, add it here** (the test
//! `lean_pod_keeps_every_field_the_model_reads` compares this decoder with k8s-openapi).

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Pod {
    metadata: Option<Meta>,
    spec: Option<Spec>,
    status: Option<Status>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerRef>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OwnerRef {
    api_version: String,
    kind: String,
    name: String,
    uid: String,
    controller: Option<bool>,
    block_owner_deletion: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    containers: Vec<Container>,
    node_name: Option<String>,
    service_account_name: Option<String>,
    host_network: Option<bool>,
}

#[derive(Deserialize)]
struct Container {
    name: String,
    ports: Option<Vec<core::ContainerPort>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pod_ips: Option<Vec<core::PodIP>>,
}

/// Decodes the fields of a pod the model reads; `None` when they do not decode (the caller
/// then decodes the pod fully, for the diagnostic).
pub(super) fn pod(text: &str) -> Option<core::Pod> {
    let p: Pod = serde_json::from_str(text).ok()?;
    let metadata = p
        .metadata
        .map(|m| ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            labels: m.labels,
            owner_references: m.owner_references.map(|refs| {
                refs.into_iter()
                    .map(|r| OwnerReference {
                        api_version: r.api_version,
                        kind: r.kind,
                        name: r.name,
                        uid: r.uid,
                        controller: r.controller,
                        block_owner_deletion: r.block_owner_deletion,
                    })
                    .collect()
            }),
            ..ObjectMeta::default()
        })
        .unwrap_or_default();
    let spec = p.spec.map(|s| core::PodSpec {
        containers: s
            .containers
            .into_iter()
            .map(|c| core::Container {
                name: c.name,
                ports: c.ports,
                ..core::Container::default()
            })
            .collect(),
        node_name: s.node_name,
        service_account_name: s.service_account_name,
        host_network: s.host_network,
        ..core::PodSpec::default()
    });
    let status = p.status.map(|s| core::PodStatus {
        pod_ip: s.pod_ip,
        pod_ips: s.pod_ips,
        ..core::PodStatus::default()
    });
    Some(core::Pod {
        metadata,
        spec,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod with every field the model reads, and many it does not.
    const POD: &str = r#"{
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-7d9f-abcde", "namespace": "shop", "uid": "u1",
            "creationTimestamp": "2025-03-01T00:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "7d9f"},
            "annotations": {"a": "b"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f",
                                 "uid": "u0", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "containers": [
                {"name": "web", "image": "nginx", "ports": [
                    {"containerPort": 8080, "name": "http", "protocol": "TCP"},
                    {"containerPort": 9090, "name": "metrics", "hostPort": 19090}]},
                {"name": "sidecar", "image": "envoy"}
            ],
            "nodeName": "node-1", "serviceAccountName": "web", "hostNetwork": false,
            "tolerations": [{"key": "k", "operator": "Exists"}]
        },
        "status": {
            "phase": "Running", "podIP": "10.0.0.5",
            "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }"#;

    #[test]
    fn lean_pod_keeps_every_field_the_model_reads() {
        let full: core::Pod = serde_json::from_str(POD).expect("full decode");
        let lean = pod(POD).expect("lean decode");
        assert_eq!(lean.metadata.name, full.metadata.name);
        assert_eq!(lean.metadata.namespace, full.metadata.namespace);
        assert_eq!(lean.metadata.labels, full.metadata.labels);
        assert_eq!(
            lean.metadata.owner_references,
            full.metadata.owner_references
        );
        let (ls, fs) = (lean.spec.expect("spec"), full.spec.expect("spec"));
        let names = |s: &core::PodSpec| {
            s.containers
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&ls), names(&fs));
        let ports = |s: &core::PodSpec| {
            s.containers
                .iter()
                .map(|c| c.ports.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(&ls), ports(&fs));
        assert_eq!(ls.node_name, fs.node_name);
        assert_eq!(ls.service_account_name, fs.service_account_name);
        assert_eq!(ls.host_network, fs.host_network);
        let (lst, fst) = (lean.status.expect("status"), full.status.expect("status"));
        assert_eq!(lst.pod_ip, fst.pod_ip);
        assert_eq!(lst.pod_ips, fst.pod_ips);
    }

    #[test]
    fn lean_pod_rejects_what_the_full_decode_rejects_in_fields_it_reads() {
        for bad in [
            r#"{"spec": {"nodeName": "n"}}"#,
            r#"{"spec": {"containers": [{"ports": []}]}}"#,
            r#"{"spec": {"containers": [{"name": "c", "ports": [{"name": "x"}]}]}}"#,
            r#"{"metadata": {"labels": {"a": 1}}}"#,
            r#"{"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "x"}]}}"#,
            r#"{"status": {"podIPs": [{}]}}"#,
            r#"{"status": {"podIP": 5}}"#,
        ] {
            // Where the lean decoder is stricter (k8s-openapi defaults a missing
            // `containers`), the caller falls back to the full decode, so that is harmless.
            if serde_json::from_str::<core::Pod>(bad).is_err() {
                assert!(pod(bad).is_none(), "{bad}");
            }
        }
    }
}
