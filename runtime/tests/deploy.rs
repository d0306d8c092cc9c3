//! `deploy/pipecd.yaml` grants exactly what pipecd reads: list and watch of the kinds its
//! watchers ask for, and of the one IPsec Secret by name; and it runs pipecd with arguments
//! pipecd takes.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use anyhow as _;
use aya as _;
use base64 as _;
use clap as _;
use futures as _;
use gencluster as _;
use ipnet as _;
use kube as _;
use mimalloc as _;
use notify as _;
use pipec as _;
use pipec_cpt as _;
use pipec_ebpf as _;
use pipec_ebpf_common as _;
use pipec_netns as _;
use pipec_proto as _;
use pipec_rte_flow as _;
use serde_json as _;
use tokio as _;
use tokio_stream as _;
use tonic as _;
use tracing as _;
use tracing_subscriber as _;
// The offload unit tests' and the offload benchmark's dev-dependencies.
use gencluster as _;
use proptest as _;

use pipec_runtime::api::{IPSEC_SECRET, KINDS};
use serde::Deserialize as _;
use serde_yaml::Value;

fn documents() -> Vec<Value> {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/pipecd.yaml"
    ))
    .expect("deploy/pipecd.yaml");
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).expect("yaml"))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// (group, resource) pairs a role's rules grant, with their resource names; every rule must
/// grant list and watch only.
fn grants(role: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        assert_eq!(strings(&rule["verbs"]), ["list", "watch"], "{rule:?}");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                out.push((group.clone(), resource, strings(&rule["resourceNames"])));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_cluster_role_grants_list_and_watch_of_exactly_the_watched_kinds() {
    let docs = documents();
    let role = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ClusterRole"))
        .expect("a ClusterRole");
    let mut expected: Vec<(String, String, Vec<String>)> = KINDS
        .iter()
        .map(|k| (k.group.to_string(), k.plural.to_string(), Vec::new()))
        .collect();
    expected.sort();
    assert_eq!(grants(role), expected);
}

#[test]
fn only_the_ipsec_secret_is_readable_and_only_in_its_namespace() {
    let docs = documents();
    let roles: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("Role"))
        .collect();
    assert_eq!(roles.len(), 1);
    let (ns, name) = IPSEC_SECRET;
    assert_eq!(roles[0]["metadata"]["namespace"].as_str(), Some(ns));
    assert_eq!(
        grants(roles[0]),
        [(String::new(), "secrets".to_string(), vec![name.to_string()])]
    );
    let binding = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("RoleBinding"))
        .expect("a RoleBinding");
    assert_eq!(binding["roleRef"]["name"], roles[0]["metadata"]["name"]);
}

#[test]
fn the_daemon_set_runs_pipecd_with_arguments_it_takes() {
    let docs = documents();
    let ds = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .expect("a DaemonSet");
    let args = strings(&ds["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(args.contains(&"--in-cluster".to_string()), "{args:?}");
    // pipecd parses them (it then stops at the missing service account, not at a flag); the
    // host paths and the kernel datapath are swapped for harmless ones.
    let scratch = std::env::temp_dir().join(format!("pipecd-deploy-{}", std::process::id()));
    let local = |a: &String| {
        a.replace("$(NODE_NAME)", "node-a")
            .replace("--datapath=kernel", "--datapath=model")
            .replace("/var/lib/pipecd", &scratch.display().to_string())
            .replace("127.0.0.1:9964", "127.0.0.1:0")
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipecd"))
        .args(args.iter().map(local))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run pipecd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--in-cluster"), "{err}");
}
