//! Helpers for the semantics unit tests: clusters from YAML, probes from text, and a
//! compact text form of an outcome for snapshots.

use super::{evaluate, Context, Options, Outcome};
use crate::driver;
use crate::model::build::BuildOptions;
use crate::model::Cluster;
use std::fmt::Write as _;

/// Builds a cluster from manifests; panics with the rendered diagnostics on an error.
pub(crate) fn cluster(yaml: &str) -> Cluster {
    let loaded = driver::load_texts(&[("test.yaml", yaml)], &BuildOptions::default());
    if loaded.has_errors() {
        panic!(
            "{}",
            crate::diag::emit_to_string(&loaded.sources, &loaded.diags)
        );
    }
    loaded.cluster
}

/// Evaluates `from` → `to` at `port` (the `pipec trace` argument forms).
pub(crate) fn eval(c: &Cluster, from: &str, to: &str, port: &str) -> Outcome {
    let probe = crate::trace::parse_probe(c, from, to, port).expect("valid probe");
    evaluate(&Context::with_options(c, Options::default()), &probe)
}

/// `Some(true)` allowed, `Some(false)` denied.
pub(crate) fn allowed(c: &Cluster, from: &str, to: &str, port: &str) -> bool {
    eval(c, from, to, port).allowed().expect("candidates agree")
}

/// A compact text form of an outcome: the verdict, then each path's directions and rules.
pub(crate) fn describe(c: &Cluster, o: &Outcome) -> String {
    let mut out = String::new();
    let verdict = o.verdict.map_or("mixed".to_string(), |v| v.to_string());
    let _ = writeln!(out, "{verdict}: {}", o.reason);
    if let Some(s) = &o.service {
        let _ = writeln!(
            out,
            "service {} via {}",
            c.service(s.service).key(),
            s.frontend
        );
        for cand in &s.candidates {
            let pod = cand.pod.map(|p| c.pod(p).key()).unwrap_or_default();
            let _ = writeln!(out, "  candidate {pod} {}:{}", cand.ip, cand.port);
        }
        for n in &s.notes {
            let _ = writeln!(out, "  note {n}");
        }
    }
    for p in &o.paths {
        for (name, d) in [("egress", &p.egress), ("ingress", &p.ingress)] {
            let rules: Vec<String> = d
                .deciding
                .iter()
                .map(|r| format!("{} {}[{}]", r.origin.display_name(), r.section, r.index))
                .collect();
            let _ = writeln!(
                out,
                "  {name} {} [{}] {}{}",
                d.verdict,
                d.tier,
                d.reason,
                if rules.is_empty() {
                    String::new()
                } else {
                    format!(": {}", rules.join(", "))
                }
            );
        }
    }
    out
}

/// Two namespaces `x` and `y` with pods `a` (app=a) and `b` (app=b), ports 80/TCP "web"
/// and 53/UDP "dns", followed by `extra`.
pub(crate) fn base(extra: &str) -> Cluster {
    let mut text = String::new();
    for (ns, net) in [("x", 1), ("y", 2)] {
        let _ = write!(
            text,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{team: t{ns}}}\n---\n"
        );
        for (pod, host) in [("a", 10), ("b", 11)] {
            let _ = write!(
                text,
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {ns}\n  labels: {{app: {pod}}}\nspec:\n  containers:\n  - name: c\n    ports:\n    - {{name: web, containerPort: 80}}\n    - {{name: dns, containerPort: 53, protocol: UDP}}\nstatus:\n  podIP: 10.244.{net}.{host}\n---\n"
            );
        }
    }
    text.push_str(extra);
    cluster(&text)
}
