//! Conformance cases: clusters, policies and expected verdicts, run through every engine.
//!
//! The case format is `shared/conformance/README.md`: a cluster (namespaces, pods with
//! IPs, labels and ports, services), policies as YAML strings, probes with the expected
//! verdict, and optional expectations on service backends. A case is turned into
//! Kubernetes objects (a `List` of Namespaces, Pods and Services, added to the sources as
//! `<case file>#cluster`) plus one source per policy string (`<case file>#policies[i]`),
//! and goes through the normal frontend and [`crate::model::build::objects_to_cluster`],
//! so policies get full validation. The case-only pod details (extra listening ports,
//! Cilium's implicit labels) are then set on the model pods.
//!
//! A case whose input has an error fails with the rendered diagnostic, with one
//! exception: when its `semantics_notes` say a compiler may reject the policy (such as
//! `knp-04`, whose `endPort: 65537` the API server would refuse), pipec **rejects** it, as
//! the API server would, and the case's probes are reported as skipped, not run.
//!
//! Every probe is run through every selected [`Engine`]; the reference engine evaluates with
//! [`Options::check_listening`] on, since cases list the ports their servers listen on.

// The engines moved to `crate::engine`; the harness keeps their names here because a backend
// crate implements `Engine` next to the `check_engine` call that runs it.
pub use crate::engine::{
    available_engines, engine_by_name, Engine, EngineVerdict, Evaluator, Reference, PLANNED_ENGINES,
};

use crate::diag::{self, Diagnostic, Sink};
use crate::driver;
use crate::model::build::BuildOptions;
use crate::model::{Cluster, PodId, Protocol};
use crate::semantics::{self, Context, Destination, Peer, Probe};
use crate::source::Sources;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// One conformance case, as the file says it.
#[derive(Clone, Debug, Deserialize)]
pub struct Case {
    /// Unique id (also the file name).
    pub id: String,
    /// What the case checks.
    #[serde(default)]
    pub title: Option<String>,
    /// Free-text notes; a string or a list of strings.
    #[serde(default)]
    pub semantics_notes: Option<serde_yaml::Value>,
    /// The cluster.
    #[serde(default)]
    pub cluster: CaseCluster,
    /// Policies: YAML strings, each one document or a `---` stream.
    #[serde(default)]
    pub policies: Vec<String>,
    /// pipec's extension of the format: `.pipe` policy texts, loaded beside `policies`
    /// (they join the admin tier, as AdminNetworkPolicies do).
    #[serde(default)]
    pub pipe_policies: Vec<String>,
    /// Probes.
    #[serde(default)]
    pub probes: Vec<CaseProbe>,
    /// Expected service backends.
    #[serde(default)]
    pub service_expectations: Vec<ServiceExpectation>,
}

/// The cluster of a case.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CaseCluster {
    /// Namespaces.
    #[serde(default)]
    pub namespaces: Vec<CaseNamespace>,
    /// Pods.
    #[serde(default)]
    pub pods: Vec<CasePod>,
    /// Services.
    #[serde(default)]
    pub services: Vec<CaseService>,
}

/// A namespace of a case.
#[derive(Clone, Debug, Deserialize)]
pub struct CaseNamespace {
    /// Name.
    pub name: String,
    /// Labels (scalars of any YAML type are taken as strings).
    #[serde(default)]
    pub labels: BTreeMap<String, serde_yaml::Value>,
}

/// A pod of a case.
#[derive(Clone, Debug, Deserialize)]
pub struct CasePod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, serde_yaml::Value>,
    /// Pod IP; assigned by the model when absent.
    #[serde(default)]
    pub ip: Option<String>,
    /// Declared container ports.
    #[serde(default)]
    pub ports: Vec<CasePort>,
    /// Ports a server listens on without declaring them.
    #[serde(default)]
    pub extra_listening_ports: Vec<CaseListenPort>,
    /// Labels Cilium adds to the endpoint.
    #[serde(default)]
    pub cilium_implicit_labels: BTreeMap<String, serde_yaml::Value>,
}

/// A declared container port.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CasePort {
    /// Port name.
    #[serde(default)]
    pub name: Option<String>,
    /// Port number.
    pub container_port: i64,
    /// Protocol (TCP when absent).
    #[serde(default)]
    pub protocol: Option<String>,
}

/// An undeclared listening port.
#[derive(Clone, Debug, Deserialize)]
pub struct CaseListenPort {
    /// Port number.
    pub port: u16,
    /// Protocol (TCP when absent).
    #[serde(default)]
    pub protocol: Option<String>,
}

/// A service of a case.
#[derive(Clone, Debug, Deserialize)]
pub struct CaseService {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Cluster IP; assigned by the model when absent.
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// Pod selector.
    #[serde(default)]
    pub selector: Option<BTreeMap<String, serde_yaml::Value>>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<CaseServicePort>,
}

/// A service port.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseServicePort {
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Protocol (TCP when absent).
    #[serde(default)]
    pub protocol: Option<String>,
    /// Service port.
    pub port: i64,
    /// Target port: a number or a container port name.
    #[serde(default)]
    pub target_port: Option<serde_yaml::Value>,
}

/// A probe of a case.
#[derive(Clone, Debug, Deserialize)]
pub struct CaseProbe {
    /// `ns/pod` or `ip:ADDR`.
    pub from: String,
    /// `ns/pod` or `ip:ADDR`.
    #[serde(default)]
    pub to: Option<String>,
    /// `ns/service`: the service's cluster IP at service port `port`.
    #[serde(default)]
    pub to_service: Option<String>,
    /// Destination port; `null` for ICMP.
    #[serde(default)]
    pub port: Option<u16>,
    /// TCP, UDP, SCTP or ICMP.
    pub protocol: String,
    /// `allow` or `deny`.
    pub expect: String,
    /// The sub-test of the source that asserted it.
    #[serde(default)]
    pub source_test: Option<String>,
}

/// Expected backends of one service port.
#[derive(Clone, Debug, Deserialize)]
pub struct ServiceExpectation {
    /// `ns/name`.
    pub service: String,
    /// Service port.
    pub port: u16,
    /// Protocol (TCP when absent).
    #[serde(default)]
    pub protocol: Option<String>,
    /// `ns/pod:targetPort`, in any order.
    pub backends: Vec<String>,
}

/// The result of running cases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Checks that passed (probes × engines, plus service expectations).
    pub passed: usize,
    /// Checks that failed.
    pub failed: usize,
    /// Checks not run (cases whose policy is rejected where the case allows it).
    pub skipped: usize,
    /// One line per failure (`FAIL ...`) or skipped case (`SKIP ...`), in case order.
    pub lines: Vec<String>,
}

impl Report {
    /// The summary line: `N passed, M failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }

    fn merge(&mut self, other: Report) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.lines.extend(other.lines);
    }
}

/// The case files under `paths`: files as given, directories searched recursively for
/// `.yaml`/`.yml` files, in name order.
pub fn case_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                walk(&e, out)?;
            } else if e.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(e);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or directory", p.display()));
        }
    }
    Ok(out)
}

/// The conformance harness of a backend crate: runs the cases under `cases` (the shared
/// cases are `shared/conformance` beside pipec's repository) through the reference semantics
/// and the backend's `engine`, and fails with every failing line when any check fails.
/// Skipped checks (a case pipec rejects, a probe the engine cannot judge) are listed in
/// the report, which the caller should print.
pub fn check_engine(cases: &[PathBuf], engine: Box<dyn Engine>) -> Result<Report, String> {
    let report = run_paths(cases, &[Box::new(Reference), engine])?;
    if report.failed > 0 {
        let fails: Vec<&str> = report
            .lines
            .iter()
            .filter(|l| l.starts_with("FAIL"))
            .map(String::as_str)
            .collect();
        return Err(format!("{}\n{}", report.summary(), fails.join("\n")));
    }
    Ok(report)
}

/// Runs every case under `paths` through `engines`.
pub fn run_paths(paths: &[PathBuf], engines: &[Box<dyn Engine>]) -> Result<Report, String> {
    let mut report = Report::default();
    for file in case_files(paths)? {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        report.merge(run_case_text(&file.display().to_string(), &text, engines));
    }
    Ok(report)
}

/// Runs one case, given as text, through `engines`.
pub fn run_case_text(file: &str, text: &str, engines: &[Box<dyn Engine>]) -> Report {
    let case: Case = match serde_yaml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            return Report {
                failed: 1,
                lines: vec![format!("FAIL {file}: not a conformance case: {e}")],
                ..Report::default()
            }
        }
    };
    run_case(file, &case, engines)
}

/// The number of checks a case holds for `engines`.
fn checks(case: &Case, engines: usize) -> usize {
    case.probes.len() * engines + case.service_expectations.len()
}

/// Runs one parsed case through `engines`.
pub fn run_case(file: &str, case: &Case, engines: &[Box<dyn Engine>]) -> Report {
    let mut report = Report::default();
    let built = match build_cluster(file, case) {
        Ok(b) => b,
        Err(BuildError::Rejected(why)) => {
            let n = checks(case, engines.len());
            report.skipped = n;
            report.lines.push(format!(
                "SKIP {}: {n} check(s) not run: pipec rejects a policy, which the case allows: {why}",
                case.id
            ));
            return report;
        }
        Err(BuildError::Failed(why)) => {
            report.failed = checks(case, engines.len()).max(1);
            report
                .lines
                .push(format!("FAIL {}: the case does not load:\n{why}", case.id));
            return report;
        }
    };
    let cluster = &built.cluster;
    let probes: Vec<Result<Probe, String>> = case
        .probes
        .iter()
        .map(|p| parse_probe(cluster, p))
        .collect();
    for engine in engines {
        let evaluator = match engine.prepare(cluster) {
            Ok(e) => e,
            Err(why) => {
                report.failed += case.probes.len();
                report.lines.push(format!(
                    "FAIL {}: engine {} cannot prepare the cluster: {why}",
                    case.id,
                    engine.name()
                ));
                continue;
            }
        };
        for (p, parsed) in case.probes.iter().zip(&probes) {
            let desc = describe_probe(p);
            let probe = match parsed {
                Ok(probe) => probe,
                Err(why) => {
                    report.failed += 1;
                    report
                        .lines
                        .push(format!("FAIL {}: {desc}: bad probe: {why}", case.id));
                    continue;
                }
            };
            let expected = match p.expect.as_str() {
                "allow" => true,
                "deny" => false,
                other => {
                    report.failed += 1;
                    report.lines.push(format!(
                        "FAIL {}: {desc}: bad expectation `{other}` (allow or deny)",
                        case.id
                    ));
                    continue;
                }
            };
            if let Some(why) = evaluator.cannot_judge(probe) {
                report.skipped += 1;
                report.lines.push(format!(
                    "SKIP {}: {desc}: engine {} cannot judge it: {why}",
                    case.id,
                    engine.name()
                ));
                continue;
            }
            let got = if engine.name() == "reference" {
                evaluator.evaluate(probe)
            } else {
                evaluate_headless_aware(cluster, evaluator.as_ref(), probe)
            };
            if got.allowed == Some(expected) {
                report.passed += 1;
            } else {
                report.failed += 1;
                let got_word = match got.allowed {
                    Some(true) => "allow",
                    Some(false) => "deny",
                    None => "mixed",
                };
                report.lines.push(format!(
                    "FAIL {}: {desc}: expected {}, got {got_word} (engine {}): {}",
                    case.id,
                    p.expect,
                    engine.name(),
                    got.reason
                ));
            }
        }
    }
    let ctx = Context::new(cluster);
    for exp in &case.service_expectations {
        match check_service(&ctx, exp) {
            Ok(()) => report.passed += 1,
            Err(why) => {
                report.failed += 1;
                report.lines.push(format!(
                    "FAIL {}: service {} port {}: {why}",
                    case.id, exp.service, exp.port
                ));
            }
        }
    }
    report
}

/// Evaluates `probe` on a compiled engine. A probe to a headless Service (no cluster IP)
/// is what a client does with the Service's DNS name: a connection to one of the
/// addresses it resolves to, the Service's endpoints at the target port. The engines
/// that compile the datapath have no frontend to balance such a name, so each endpoint
/// the reference semantics resolve is probed directly: allow when every one is allowed,
/// deny when every one is denied, mixed otherwise (as the reference answers).
fn evaluate_headless_aware(
    cluster: &Cluster,
    evaluator: &dyn Evaluator,
    probe: &Probe,
) -> EngineVerdict {
    let Destination::Service { service, .. } = probe.to else {
        return evaluator.evaluate(probe);
    };
    if !cluster.service(service).cluster_ips.is_empty() {
        return evaluator.evaluate(probe);
    }
    let outcome = semantics::evaluate(&Context::new(cluster), probe);
    if outcome.paths.is_empty() {
        return EngineVerdict {
            allowed: Some(false),
            reason: format!("headless service without endpoints: {}", outcome.reason),
        };
    }
    let verdicts: Vec<EngineVerdict> = outcome
        .paths
        .iter()
        .map(|path| {
            evaluator.evaluate(&Probe {
                to: Destination::Ip(path.dst_ip),
                port: path.dst_port,
                ..*probe
            })
        })
        .collect();
    let first = verdicts[0].allowed;
    let allowed = verdicts
        .iter()
        .all(|v| v.allowed == first)
        .then_some(first)
        .flatten();
    EngineVerdict {
        allowed,
        reason: verdicts
            .iter()
            .zip(&outcome.paths)
            .map(|(v, p)| format!("{}: {}", p.dst_ip, v.reason))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// A case turned into a model.
pub struct BuiltCase {
    /// The sources: the generated cluster objects and every policy string.
    pub sources: Sources,
    /// The model, with the case-only pod details set.
    pub cluster: Cluster,
    /// Warnings.
    pub warnings: Vec<Diagnostic>,
}

/// Why a case could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// A policy was rejected and the case says a compiler may reject it.
    Rejected(String),
    /// Any other error, rendered.
    Failed(String),
}

/// Builds the model of a case through the normal frontend and model stages.
pub fn build_cluster(file: &str, case: &Case) -> Result<BuiltCase, BuildError> {
    let mut sources = Sources::new();
    let objects = cluster_objects(&case.cluster).map_err(BuildError::Failed)?;
    let text = serde_json::to_string_pretty(&objects)
        .map_err(|e| BuildError::Failed(format!("cannot render the cluster: {e}")))?;
    let mut files = vec![sources.add(format!("{file}#cluster"), text)];
    let first_policy = files.len();
    for (i, p) in case.policies.iter().enumerate() {
        files.push(sources.add(format!("{file}#policies[{i}]"), p.clone()));
    }
    for (i, p) in case.pipe_policies.iter().enumerate() {
        files.push(sources.add(format!("{file}#pipe_policies[{i}].pipe"), p.clone()));
    }
    let policy_files = files[first_policy..].to_vec();
    let loaded = driver::load_sources(sources, &files, &BuildOptions::default(), Sink::default());
    if loaded
        .pipe
        .diags
        .iter()
        .any(policy_lang::Diagnostic::is_error)
    {
        return Err(BuildError::Failed(policy_lang::render(
            &loaded.pipe.diags,
            loaded.sources.files(),
        )));
    }
    let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) =
        loaded.diags.into_iter().partition(Diagnostic::is_error);
    if !errors.is_empty() {
        let rendered = diag::emit_to_string(&loaded.sources, &errors);
        let only_policies = errors.iter().all(|d| {
            d.primary
                .as_ref()
                .is_some_and(|l| policy_files.contains(&l.span.file))
        });
        if only_policies && allows_rejection(case) {
            let first = errors
                .first()
                .map(|d| format!("[{}] {}", d.code.as_str(), d.message))
                .unwrap_or_default();
            return Err(BuildError::Rejected(first));
        }
        return Err(BuildError::Failed(rendered));
    }
    let mut cluster = loaded.cluster;
    for pod in &case.cluster.pods {
        let Some(id) = cluster.find_pod(&pod.namespace, &pod.name) else {
            return Err(BuildError::Failed(format!(
                "pod {}/{} is missing from the model",
                pod.namespace, pod.name
            )));
        };
        let mut extra = Vec::new();
        for l in &pod.extra_listening_ports {
            extra.push((
                l.port,
                protocol(l.protocol.as_deref()).map_err(BuildError::Failed)?,
            ));
        }
        let model_pod = &mut cluster.pods[id.0 as usize];
        model_pod.extra_ports = extra;
        model_pod.cilium_labels = pod
            .cilium_implicit_labels
            .iter()
            .map(|(k, v)| (k.clone(), scalar(v)))
            .collect();
    }
    Ok(BuiltCase {
        sources: loaded.sources,
        cluster,
        warnings,
    })
}

/// Whether the case's notes say a compiler may reject its policy.
fn allows_rejection(case: &Case) -> bool {
    let notes = case
        .semantics_notes
        .as_ref()
        .map(|v| serde_yaml::to_string(v).unwrap_or_default())
        .unwrap_or_default()
        .to_lowercase();
    notes.contains("may either reject") || notes.contains("may reject")
}

fn scalar(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Null => String::new(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn labels(map: &BTreeMap<String, serde_yaml::Value>) -> serde_json::Value {
    map.iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(scalar(v))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn protocol(text: Option<&str>) -> Result<Protocol, String> {
    let t = text.unwrap_or("TCP");
    Protocol::parse(&t.to_uppercase()).ok_or_else(|| format!("unknown protocol `{t}`"))
}

/// The case's namespaces, pods and services as a Kubernetes `List`.
fn cluster_objects(c: &CaseCluster) -> Result<serde_json::Value, String> {
    let mut items = Vec::new();
    for ns in &c.namespaces {
        items.push(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns.name, "labels": labels(&ns.labels)},
        }));
    }
    for pod in &c.pods {
        let ports: Vec<serde_json::Value> = pod
            .ports
            .iter()
            .map(|p| {
                let mut port = json!({
                    "containerPort": p.container_port,
                    "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                });
                if let Some(name) = &p.name {
                    port["name"] = json!(name);
                }
                port
            })
            .collect();
        let mut obj = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": labels(&pod.labels)},
            "spec": {"containers": [{"name": "server", "image": "conformance", "ports": ports}]},
        });
        if let Some(ip) = &pod.ip {
            obj["status"] = json!({"podIP": ip, "podIPs": [{"ip": ip}]});
        }
        items.push(obj);
    }
    for svc in &c.services {
        let ports: Vec<serde_json::Value> = svc
            .ports
            .iter()
            .map(|p| {
                let mut port = json!({
                    "port": p.port,
                    "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                });
                if let Some(name) = &p.name {
                    port["name"] = json!(name);
                }
                match &p.target_port {
                    Some(serde_yaml::Value::Number(n)) => {
                        port["targetPort"] = json!(n.as_i64().unwrap_or(0))
                    }
                    Some(serde_yaml::Value::String(s)) => port["targetPort"] = json!(s),
                    Some(serde_yaml::Value::Null) | None => {}
                    Some(other) => {
                        return Err(format!(
                            "service {}/{}: targetPort {other:?} is neither a number nor a name",
                            svc.namespace, svc.name
                        ))
                    }
                }
                Ok(port)
            })
            .collect::<Result<_, String>>()?;
        let mut spec = json!({"ports": ports});
        if let Some(ip) = &svc.cluster_ip {
            spec["clusterIP"] = json!(ip);
        }
        if let Some(sel) = &svc.selector {
            spec["selector"] = labels(sel);
        }
        items.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": svc.name, "namespace": svc.namespace},
            "spec": spec,
        }));
    }
    Ok(json!({"apiVersion": "v1", "kind": "List", "items": items}))
}

fn find_pod(cluster: &Cluster, key: &str) -> Result<PodId, String> {
    let (ns, name) = key
        .split_once('/')
        .ok_or_else(|| format!("`{key}` is not ns/pod"))?;
    cluster
        .find_pod(ns, name)
        .ok_or_else(|| format!("no pod {key}"))
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an IP address"))
}

/// Turns a case probe into a [`Probe`].
pub fn parse_probe(cluster: &Cluster, p: &CaseProbe) -> Result<Probe, String> {
    let from = match p.from.strip_prefix("ip:") {
        Some(ip) => Peer::External(parse_ip(ip)?),
        None => Peer::Pod(find_pod(cluster, &p.from)?),
    };
    let protocol = protocol(Some(&p.protocol))?;
    let to = match (&p.to, &p.to_service) {
        (Some(to), None) => match to.strip_prefix("ip:") {
            Some(ip) => Destination::Ip(parse_ip(ip)?),
            None => Destination::Pod(find_pod(cluster, to)?),
        },
        (None, Some(svc)) => {
            let (ns, name) = svc
                .split_once('/')
                .ok_or_else(|| format!("`{svc}` is not ns/service"))?;
            let service = cluster
                .find_service(ns, name)
                .ok_or_else(|| format!("no service {svc}"))?;
            let port = p
                .port
                .ok_or_else(|| "a probe to a service needs a port".to_string())?;
            Destination::Service { service, port }
        }
        _ => return Err("a probe needs exactly one of `to` and `to_service`".into()),
    };
    if protocol.has_ports() && p.port.is_none() {
        return Err(format!("a {protocol} probe needs a port"));
    }
    Ok(Probe {
        from,
        to,
        protocol,
        port: if protocol.has_ports() { p.port } else { None },
    })
}

fn describe_probe(p: &CaseProbe) -> String {
    let to = match (&p.to, &p.to_service) {
        (Some(t), _) => t.clone(),
        (None, Some(s)) => format!("service {s}"),
        (None, None) => "?".into(),
    };
    let port = match p.port {
        Some(n) if p.protocol != "ICMP" => format!("{n}/{}", p.protocol),
        _ => p.protocol.clone(),
    };
    format!("{} -> {to} {port}", p.from)
}

fn check_service(ctx: &Context, exp: &ServiceExpectation) -> Result<(), String> {
    let cluster = ctx.cluster;
    let (ns, name) = exp
        .service
        .split_once('/')
        .ok_or_else(|| format!("`{}` is not ns/service", exp.service))?;
    let id = cluster
        .find_service(ns, name)
        .ok_or_else(|| format!("no service {}", exp.service))?;
    let res = semantics::service::resolve_service_port(
        ctx,
        id,
        exp.port,
        protocol(exp.protocol.as_deref())?,
    )?;
    let mut got: Vec<String> = res
        .candidates
        .iter()
        .map(|c| match c.pod {
            Some(p) => format!("{}:{}", cluster.pod(p).key(), c.port),
            None => format!("{}:{}", c.ip, c.port),
        })
        .collect();
    got.sort();
    let mut want = exp.backends.clone();
    want.sort();
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "expected backends [{}], got [{}]",
            want.join(", "),
            got.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_by_name() {
        assert_eq!(
            engine_by_name("reference").map(|e| e.name()),
            Ok("reference")
        );
        assert_eq!(engine_by_name("mag").map(|e| e.name()), Ok("mag"));
        let available = "reference, mag, hw";
        assert_eq!(
            engine_by_name("ebpf").err(),
            Some(format!(
                "engine `ebpf` is not built yet; available: {available}"
            ))
        );
        assert_eq!(
            engine_by_name("nope").err(),
            Some(format!("unknown engine `nope`; available: {available}"))
        );
    }

    #[test]
    fn a_rejection_the_case_allows_is_a_skip() {
        let case = r#"
id: r-01
semantics_notes: ['A compiler may either reject the policy or clamp it.']
cluster:
  namespaces: [{name: x}]
  pods: [{namespace: x, name: a, ip: 10.0.0.1}]
policies:
- |
  apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: p, namespace: x}
  spec:
    podSelector: {}
    egress: [{ports: [{port: 1, endPort: 65537}]}]
probes:
- {from: x/a, to: x/a, port: 1, protocol: TCP, expect: deny}
"#;
        let report = run_case_text("r-01.yaml", case, &[engine_by_name("reference").unwrap()]);
        assert_eq!((report.passed, report.failed, report.skipped), (0, 0, 1));
        insta::assert_snapshot!(report.lines.join("\n"), @"SKIP r-01: 1 check(s) not run: pipec rejects a policy, which the case allows: [E0110] endPort 65537 is above 65535");
    }
}

#[cfg(test)]
mod harness_tests {
    use super::*;

    /// An engine that judges nothing but UDP probes, and gets those wrong on purpose, to
    /// show that the harness skips what an engine cannot judge and fails what it gets wrong.
    struct UdpOnly(bool);

    impl Engine for UdpOnly {
        fn name(&self) -> &'static str {
            "udp-only"
        }
        fn prepare<'c>(&self, cluster: &'c Cluster) -> Result<Box<dyn Evaluator + 'c>, String> {
            Ok(Box::new(UdpOnlyEval(Context::new(cluster), self.0)))
        }
    }

    struct UdpOnlyEval<'c>(Context<'c>, bool);

    impl Evaluator for UdpOnlyEval<'_> {
        fn evaluate(&self, probe: &Probe) -> EngineVerdict {
            let right = semantics::evaluate(&self.0, probe).allowed();
            EngineVerdict {
                allowed: if self.1 { right } else { right.map(|a| !a) },
                reason: "reference, maybe inverted".into(),
            }
        }
        fn cannot_judge(&self, probe: &Probe) -> Option<String> {
            (probe.protocol != Protocol::Udp).then(|| "this engine judges UDP only".into())
        }
    }

    fn cases() -> Vec<PathBuf> {
        vec![PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/conformance"
        ))]
    }

    #[test]
    fn the_harness_skips_what_an_engine_cannot_judge_and_fails_what_it_gets_wrong() {
        let report = check_engine(&cases(), Box::new(UdpOnly(true))).expect("passes");
        assert!(report.skipped > 0, "{report:?}");
        assert!(report
            .lines
            .iter()
            .any(|l| l.contains("engine udp-only cannot judge it: this engine judges UDP only")));
        let err = check_engine(&cases(), Box::new(UdpOnly(false)));
        assert!(err.is_err_and(|e| e.contains("(engine udp-only)")));
    }
}
