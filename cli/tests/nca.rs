//! The judge checked against an implementation nobody here wrote (issue 18, item 3): IBM's
//! network-config-analyzer (`nca`, PyPI `network-config-analyzer`, pinned in `.ci/run`)
//! computes the pod-to-pod connectivity of random clusters of NetworkPolicies, and pipec's
//! reference semantics must give the same verdict for every ordered pod pair and probe.
//!
//! The clusters stay within what nca models, and avoid its known deviations from the API
//! server (each checked by hand with nca 2.1.0):
//! - nca refuses a policy with an `egress` (or `ingress`) field whose `policyTypes` omits
//!   that direction ("A NetworkPolicy with egress field but no Egress in its policyTypes");
//!   the API server accepts it and ignores the rules. Not generated.
//! - nca does not resolve named ports (`port: http` allowed nothing on a pod whose port
//!   `http` is 8080). Only numeric ports and ranges are generated.
//! - nca reads `egress: []` without `policyTypes` as egress isolation; the API server's
//!   `SetDefaults_NetworkPolicy` adds Egress only when `egress` has a rule. Not generated
//!   (an empty `egress` list is generated beside an explicit `policyTypes` only).
//! - ipBlock peers: nca matches them against addresses outside the cluster only, pipec (as
//!   Kubernetes' e2e tests) against pod addresses too. Not generated; the pairs compared are
//!   pod to pod.
//!
//! The defaulting of `policyTypes` was wrong in pipec before issue 18 (an empty list isolated
//! nothing): `policyTypes: []`, with and without rules, is generated on purpose, and this
//! test fails if that defaulting is undone.
//!
//! `PIPEC_NCA` names the `nca` program (else `nca` on PATH). Without it the test fails in CI
//! and says so elsewhere. `PIPEC_NCA_KEEP=1` keeps the generated clusters in the temporary
//! directory.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use anyhow as _;
use clap as _;
use clap_complete as _;
use gencluster as _;
use insta as _;
use ipnet as _;
use mimalloc as _;
use pipec_cpt as _;
use pipec_ebpf as _;
use pipec_proto as _;
use pipec_rte_flow as _;
use policy_lang as _;
use proptest as _;
use serde as _;
use serde_json as _;
use serde_yaml as _;
use tempfile as _;
use tokio as _;
use tonic as _;

use pipec::driver;
use pipec::model::build::BuildOptions;
use pipec::model::{PodId, Protocol};
use pipec::semantics::{evaluate, Context, Destination, Peer, Probe};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

/// Clusters compared; each costs one nca run (about 1.5 s, mostly Python start-up).
const CLUSTERS: usize = 30;

/// The probes of every pod pair: ports inside and outside the generated rules.
const PROBES: &[(Protocol, u16)] = &[
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 443),
    (Protocol::Tcp, 8050),
    (Protocol::Tcp, 8100),
    (Protocol::Tcp, 8101),
    (Protocol::Udp, 53),
    (Protocol::Udp, 80),
];

fn nca() -> Option<String> {
    let program = std::env::var("PIPEC_NCA").unwrap_or_else(|_| "nca".into());
    Command::new(&program)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| program)
}

/// A deterministic generator (xorshift), so that a failure reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const APPS: &[&str] = &["x", "y", "z"];
const TEAMS: &[&str] = &["a", "b"];

fn peer(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => format!("{{podSelector: {{matchLabels: {{app: {}}}}}}}", rng.pick(APPS)),
        1 => format!(
            "{{namespaceSelector: {{matchLabels: {{team: {}}}}}}}",
            rng.pick(TEAMS)
        ),
        2 => format!(
            "{{namespaceSelector: {{matchLabels: {{team: {}}}}}, podSelector: {{matchLabels: {{app: {}}}}}}}",
            rng.pick(TEAMS),
            rng.pick(APPS)
        ),
        _ => format!(
            "{{podSelector: {{matchExpressions: [{{key: app, operator: NotIn, values: [{}]}}]}}}}",
            rng.pick(APPS)
        ),
    }
}

fn port(rng: &mut Rng) -> &'static str {
    [
        "{port: 80}",
        "{protocol: TCP, port: 443}",
        "{protocol: UDP, port: 53}",
        "{port: 8000, endPort: 8100}",
        "{protocol: UDP}",
    ][rng.below(5)]
}

/// Rules of one direction: `None` (field omitted), `Some(vec![])` (an empty list) or rules.
fn rules(rng: &mut Rng, key: &str, peers_key: &str) -> Option<String> {
    match rng.below(4) {
        0 => None,
        1 => Some(format!("  {key}: []\n")),
        _ => {
            let mut out = format!("  {key}:\n");
            for _ in 0..1 + rng.below(2) {
                let peers: Vec<String> = (0..rng.below(3)).map(|_| peer(rng)).collect();
                let ports: Vec<&str> = (0..rng.below(3)).map(|_| port(rng)).collect();
                let _ = write!(out, "  - {{");
                let mut fields = Vec::new();
                if !peers.is_empty() {
                    fields.push(format!("{peers_key}: [{}]", peers.join(", ")));
                }
                if !ports.is_empty() {
                    fields.push(format!("ports: [{}]", ports.join(", ")));
                }
                let _ = writeln!(out, "{}}}", fields.join(", "));
            }
            Some(out)
        }
    }
}

/// One random cluster as manifests.
fn cluster(rng: &mut Rng) -> String {
    let mut out = String::new();
    let namespaces = 2 + rng.below(2);
    for n in 0..namespaces {
        let _ = writeln!(
            out,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}, labels: {{team: {}, kubernetes.io/metadata.name: ns{n}}}}}",
            rng.pick(TEAMS)
        );
    }
    for p in 0..3 + rng.below(3) {
        let _ = writeln!(
            out,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{p}, namespace: ns{}, labels: {{app: {}}}}}\nspec: {{containers: [{{name: c, image: i}}]}}\nstatus: {{podIP: 10.244.0.{}, phase: Running}}",
            rng.below(namespaces),
            rng.pick(APPS),
            10 + p
        );
    }
    for i in 0..1 + rng.below(3) {
        let selector = match rng.below(3) {
            0 => "{}".to_string(),
            _ => format!("{{matchLabels: {{app: {}}}}}", rng.pick(APPS)),
        };
        let ingress = rules(rng, "ingress", "from");
        let mut egress = rules(rng, "egress", "to");
        // policyTypes: omitted, empty (both defaulted by the API server), or listing every
        // direction that has a field (nca refuses a field of an unlisted direction), maybe
        // more.
        let types_line = match rng.below(3) {
            mode @ (0 | 1) => {
                // nca isolates egress for `egress: []` without policyTypes, where the API
                // server's default adds Egress only for a non-empty list: not generated.
                if egress.as_deref().is_some_and(|e| e.ends_with("[]\n")) {
                    egress = None;
                }
                if mode == 0 {
                    String::new()
                } else {
                    "  policyTypes: []\n".to_string()
                }
            }
            _ => {
                let mut types: Vec<&str> = Vec::new();
                if ingress.is_some() || rng.below(2) == 0 {
                    types.push("Ingress");
                }
                if egress.is_some() || rng.below(2) == 0 {
                    types.push("Egress");
                }
                format!("  policyTypes: [{}]\n", types.join(", "))
            }
        };
        // Without policyTypes, an `egress` field with rules implies Egress; nca does the
        // same, so it is kept.
        let _ = write!(
            out,
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{i}, namespace: ns{}}}\nspec:\n  podSelector: {selector}\n{types_line}{}{}",
            rng.below(namespaces),
            ingress.unwrap_or_default(),
            egress.unwrap_or_default()
        );
    }
    out
}

/// The connections nca reports from each pod to each pod: `ns/name` pairs to a list of
/// (protocol, ports) where `None` ports means every port, and `ALL` every protocol.
type Allowed = BTreeMap<(String, String), Vec<(String, Option<Vec<(u16, u16)>>)>>;

fn parse_nca(text: &str) -> Allowed {
    let mut out: Allowed = BTreeMap::new();
    for line in text.lines() {
        let Some((pair, conns)) = line.split_once(" : ") else {
            continue;
        };
        let Some((src, dst)) = pair.split_once(" => ") else {
            continue;
        };
        let (Some(src), Some(dst)) = (src.strip_suffix("[Pod]"), dst.strip_suffix("[Pod]")) else {
            continue;
        };
        let entry = out.entry((src.to_string(), dst.to_string())).or_default();
        if conns.trim() == "All connections" {
            entry.push(("ALL".into(), None));
            continue;
        }
        for group in conns.split("},{") {
            let group = group.trim_matches(|c| c == '{' || c == '}' || c == ' ');
            let (protocols, ports) = match group.split_once(",dst_ports:") {
                Some((p, ports)) => (p, Some(ports)),
                None => (group, None),
            };
            let protocols = protocols.trim_start_matches("protocols:");
            let ports = ports.map(|list| {
                list.split(',')
                    .map(|r| match r.split_once('-') {
                        Some((a, b)) => (a.parse().expect("port"), b.parse().expect("port")),
                        None => {
                            let p: u16 = r.parse().expect("port");
                            (p, p)
                        }
                    })
                    .collect()
            });
            for proto in protocols.split(',') {
                entry.push((proto.to_string(), ports.clone()));
            }
        }
    }
    out
}

fn nca_allows(allowed: &Allowed, src: &str, dst: &str, protocol: Protocol, port: u16) -> bool {
    let name = match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        _ => "SCTP",
    };
    allowed
        .get(&(src.to_string(), dst.to_string()))
        .into_iter()
        .flatten()
        .any(|(p, ports)| {
            (p == "ALL" || p == name)
                && ports
                    .as_ref()
                    .is_none_or(|r| r.iter().any(|(a, b)| (*a..=*b).contains(&port)))
        })
}

#[test]
fn the_reference_agrees_with_network_config_analyzer() {
    let Some(nca) = nca() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nca (network-config-analyzer) is missing; .ci/run installs it and sets PIPEC_NCA"
        );
        eprintln!("skipped: nca is not installed (pip install network-config-analyzer)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("pipec-nca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut compared = 0usize;
    let mut allowed_seen = 0usize;
    let mut failures = Vec::new();
    for case in 0..CLUSTERS {
        let text = cluster(&mut rng);
        let path = dir.join(format!("c{case}.yaml"));
        std::fs::write(&path, &text).expect("write case");
        let loaded = driver::load_texts(&[("c.yaml", &text)], &BuildOptions::default());
        assert!(
            !loaded.has_errors(),
            "case {case} does not load:\n{}\n{text}",
            loaded.render()
        );
        let out = Command::new(&nca)
            .arg("--connectivity")
            .arg(&path)
            .arg("--resource_list")
            .arg(&path)
            .args(["--output_format", "txt_no_fw_rules"])
            .output()
            .expect("run nca");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "nca failed on case {case}: {}{}\n{text}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        let allowed = parse_nca(&stdout);
        let cluster = &loaded.cluster;
        let ctx = Context::new(cluster);
        let ids: Vec<PodId> = cluster.pod_ids().collect();
        for &src in &ids {
            for &dst in &ids {
                if src == dst {
                    continue;
                }
                let (s, d) = (cluster.pod(src), cluster.pod(dst));
                let (sk, dk) = (
                    format!("{}/{}", s.namespace, s.name),
                    format!("{}/{}", d.namespace, d.name),
                );
                for &(protocol, port) in PROBES {
                    let probe = Probe {
                        from: Peer::Pod(src),
                        to: Destination::Pod(dst),
                        protocol,
                        port: Some(port),
                    };
                    let ours = evaluate(&ctx, &probe).allowed() == Some(true);
                    let theirs = nca_allows(&allowed, &sk, &dk, protocol, port);
                    compared += 1;
                    allowed_seen += usize::from(theirs);
                    if ours != theirs {
                        failures.push(format!(
                            "case {case}: {sk} -> {dk} {protocol:?}/{port}: pipec says {}, nca says {}\n{text}",
                            if ours { "allow" } else { "deny" },
                            if theirs { "allow" } else { "deny" }
                        ));
                    }
                }
            }
        }
    }
    if std::env::var_os("PIPEC_NCA_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    // Both verdicts must occur often, or the comparison proves little.
    assert!(compared > 1000, "only {compared} probes compared");
    assert!(
        allowed_seen > compared / 10 && allowed_seen < compared * 9 / 10,
        "{allowed_seen} of {compared} probes allowed: the generator is lopsided"
    );
    assert!(
        failures.is_empty(),
        "{} disagreements with nca; the first:\n{}",
        failures.len(),
        failures.first().unwrap()
    );
}
