//! The trace report: one connection through the reference semantics, as a structure and
//! as text.
//!
//! `pipec trace` prints it: the verdict, the service translation (frontend, candidates,
//! affinity) and, for every candidate path, the egress and ingress result with each deciding
//! rule as `Kind/ns/name section[i] "name" at file:line`. This module only builds and
//! renders; the command line reads the inputs and prints.

use crate::model::{Cluster, PodId, Protocol, RuleRef};
use crate::semantics::{
    Destination, DirectionResult, Outcome, PathVerdict, Peer, Probe, ServiceResolution,
};
use crate::source::Sources;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

/// Parses `--from`, `--to` and `--port` into a probe.
pub fn parse_probe(cluster: &Cluster, from: &str, to: &str, port: &str) -> Result<Probe, String> {
    let (protocol, port) = parse_port(port)?;
    let from = match from.strip_prefix("ip:") {
        Some(ip) => Peer::External(parse_ip(ip)?),
        None => Peer::Pod(find_pod(cluster, from)?),
    };
    let to = if let Some(ip) = to.strip_prefix("ip:") {
        Destination::Ip(parse_ip(ip)?)
    } else if let Some(svc) = to.strip_prefix("svc:") {
        let (ns, name) = svc
            .split_once('/')
            .ok_or_else(|| format!("`{svc}` is not NS/NAME"))?;
        let service = cluster
            .find_service(ns, name)
            .ok_or_else(|| format!("no service {svc} in the input"))?;
        let port = port.ok_or_else(|| "a service destination needs a port".to_string())?;
        Destination::Service { service, port }
    } else {
        Destination::Pod(find_pod(cluster, to)?)
    };
    Ok(Probe {
        from,
        to,
        protocol,
        port,
    })
}

/// Parses `PORT/PROTO`, `PORT` (TCP) or `ICMP`.
pub fn parse_port(text: &str) -> Result<(Protocol, Option<u16>), String> {
    let (num, proto) = match text.split_once('/') {
        Some((n, p)) => (Some(n), p.to_uppercase()),
        None if text.parse::<u16>().is_ok() => (Some(text), "TCP".to_string()),
        None => (None, text.to_uppercase()),
    };
    let protocol = Protocol::parse(&proto)
        .ok_or_else(|| format!("unknown protocol `{proto}`: use TCP, UDP, SCTP or ICMP"))?;
    if !protocol.has_ports() {
        return Ok((protocol, None));
    }
    let num = num.ok_or_else(|| format!("{protocol} needs a port, such as 80/{protocol}"))?;
    let port = num
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`{num}` is not a port number (1-65535)"))?;
    Ok((protocol, Some(port)))
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an IP address"))
}

fn find_pod(cluster: &Cluster, key: &str) -> Result<PodId, String> {
    let (ns, name) = key
        .split_once('/')
        .ok_or_else(|| format!("`{key}` is not NS/POD (or ip:ADDR)"))?;
    cluster.find_pod(ns, name).ok_or_else(|| {
        let mut msg = format!("no pod {key} in the input");
        // `kubectl` users name the workload; pipec names its pods as the controllers do
        // (`web-<hash>-<suffix>`), so list the pods that workload made.
        let made: Vec<String> = cluster
            .pods
            .iter()
            .filter(|p| {
                p.namespace == ns
                    && p.owner
                        .as_deref()
                        .and_then(|o| o.split_once('/'))
                        .is_some_and(|(_, w)| w == name)
            })
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        if !made.is_empty() {
            let shown: Vec<&str> = made.iter().take(5).map(String::as_str).collect();
            let more = made.len().saturating_sub(shown.len());
            msg.push_str(&format!(
                "; workload `{name}` made {}{}",
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        } else if let Some(close) = crate::util::closest(
            name,
            cluster
                .pods
                .iter()
                .filter(|p| p.namespace == ns)
                .map(|p| p.name.as_str()),
        ) {
            msg.push_str(&format!("; did you mean {ns}/{close}?"));
        }
        msg
    })
}

/// A trace, with names and source locations resolved, for people and machines.
#[derive(Clone, Debug, Serialize)]
pub struct TraceReport {
    /// The client.
    pub from: String,
    /// The destination as given.
    pub to: String,
    /// `80/TCP` or `ICMP`.
    pub port: String,
    /// `allow`, `deny`, `redirect (L7 HTTP)`, or `mixed` when candidates disagree.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// The service translation.
    pub service: Option<ServiceReport>,
    /// One path per candidate.
    pub paths: Vec<PathReport>,
}

/// The service translation of a trace.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceReport {
    /// `ns/name`.
    pub name: String,
    /// The frontend reached, such as `ClusterIP 10.96.0.50`.
    pub frontend: String,
    /// `80/TCP`.
    pub port: String,
    /// The service port name.
    pub port_name: Option<String>,
    /// The target port as declared.
    pub target_port: String,
    /// The candidates.
    pub candidates: Vec<CandidateReport>,
    /// ClientIP affinity timeout, seconds.
    pub affinity_timeout: Option<u32>,
    /// What shaped the candidate set.
    pub notes: Vec<String>,
    /// Why there is no candidate.
    pub empty_reason: Option<String>,
}

/// One candidate backend.
#[derive(Clone, Debug, Serialize)]
pub struct CandidateReport {
    /// `ns/pod`, when the address is a pod's.
    pub pod: Option<String>,
    /// `ip:port`.
    pub address: String,
    /// The node.
    pub node: Option<String>,
    /// Ready (else serving and terminating).
    pub ready: bool,
}

/// One candidate path of a trace.
#[derive(Clone, Debug, Serialize)]
pub struct PathReport {
    /// `ns/pod` of the destination, when it is a pod.
    pub backend: Option<String>,
    /// Destination `ip:port` (or the IP for ICMP) after DNAT.
    pub destination: String,
    /// The source address.
    pub source_ip: IpAddr,
    /// The verdict.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// The source's egress.
    pub egress: DirectionReport,
    /// The destination's ingress.
    pub ingress: DirectionReport,
    /// Whether the connection's later packets are finished in hardware once pipecd
    /// offloads it, under each built-in hardware profile (DPDK 22.11 and 23.07).
    pub later: Vec<crate::engine::offload::Later>,
}

/// One direction of one path.
#[derive(Clone, Debug, Serialize)]
pub struct DirectionReport {
    /// The pod whose policy was evaluated, or `-`.
    pub endpoint: String,
    /// The verdict.
    pub verdict: String,
    /// The tier that decided.
    pub tier: String,
    /// Why.
    pub reason: String,
    /// The deciding rules.
    pub rules: Vec<RuleReport>,
    /// The AdminNetworkPolicy Pass rule that handed the decision down, if any.
    pub passed_by: Option<RuleReport>,
}

/// A rule, located.
#[derive(Clone, Debug, Serialize)]
pub struct RuleReport {
    /// `Kind/ns/name`.
    pub policy: String,
    /// `ingress[0]`, `podSelector`, `endpointSelector[1]`.
    pub rule: String,
    /// The rule's name, where the API has one.
    pub name: Option<String>,
    /// `file:line`, when the policy came from a file.
    pub at: Option<String>,
}

impl RuleReport {
    fn text(&self) -> String {
        let mut s = format!("{} {}", self.policy, self.rule);
        if let Some(n) = &self.name {
            let _ = write!(s, " \"{n}\"");
        }
        if let Some(at) = &self.at {
            let _ = write!(s, " at {at}");
        }
        s
    }
}

fn rule_report(sources: &Sources, r: &RuleRef) -> RuleReport {
    let rule = match r.section.as_str() {
        "podSelector" => "podSelector".to_string(),
        "endpointSelector" if r.index == 0 => "endpointSelector".to_string(),
        s => format!("{s}[{}]", r.index),
    };
    RuleReport {
        policy: r.origin.display_name(),
        rule,
        name: r.name.clone(),
        at: r.location(sources).map(|span| sources.file_line(span)),
    }
}

fn port_text(protocol: Protocol, port: Option<u16>) -> String {
    match port {
        Some(p) if protocol.has_ports() => format!("{p}/{protocol}"),
        _ => protocol.to_string(),
    }
}

fn verdict_text(outcome: &Outcome) -> String {
    match outcome.verdict {
        Some(v) => v.to_string(),
        None => "mixed".to_string(),
    }
}

/// Builds the report of a trace.
pub fn trace_report(
    sources: &Sources,
    cluster: &Cluster,
    probe: &Probe,
    outcome: &Outcome,
) -> TraceReport {
    let from = match probe.from {
        Peer::Pod(p) => format!("{} ({})", cluster.pod(p).key(), ips(cluster, p)),
        Peer::External(ip) => format!("{ip} (outside the cluster)"),
    };
    let to = match probe.to {
        Destination::Pod(p) => format!("{} ({})", cluster.pod(p).key(), ips(cluster, p)),
        Destination::Ip(ip) => ip.to_string(),
        Destination::Service { service, .. } => {
            format!("service {}", cluster.service(service).key())
        }
    };
    TraceReport {
        from,
        to,
        port: port_text(probe.protocol, probe.port),
        verdict: verdict_text(outcome),
        reason: outcome.reason.clone(),
        service: outcome.service.as_ref().map(|s| service_report(cluster, s)),
        paths: outcome
            .paths
            .iter()
            .map(|p| path_report(sources, cluster, probe, dnat(cluster, outcome), p))
            .collect(),
    }
}

/// Whether the datapath rewrites the connection's destination: a Service frontend, except
/// a headless Service, whose name leads the client straight to a pod's address.
fn dnat(cluster: &Cluster, outcome: &Outcome) -> bool {
    outcome
        .service
        .as_ref()
        .is_some_and(|s| !cluster.service(s.service).cluster_ips.is_empty())
}

/// The profiles `trace` reports connection offload for: the cnxk NPC under DPDK 22.11 and
/// under 23.07, whose forwarding reach differs.
fn offload_profiles() -> [crate::backend::Profile; 2] {
    use crate::backend::{octeon_cn10k_2307_profile, octeon_cn10k_profile};
    [octeon_cn10k_profile(), octeon_cn10k_2307_profile()]
}

fn ips(cluster: &Cluster, pod: PodId) -> String {
    let ips: Vec<String> = cluster.pod(pod).ips.iter().map(|i| i.to_string()).collect();
    if ips.is_empty() {
        "no IP".to_string()
    } else {
        ips.join(", ")
    }
}

fn service_report(cluster: &Cluster, s: &ServiceResolution) -> ServiceReport {
    ServiceReport {
        name: cluster.service(s.service).key(),
        frontend: s.frontend.to_string(),
        port: format!("{}/{}", s.frontend_port, s.protocol),
        port_name: s.port_name.clone(),
        target_port: s.target.to_string(),
        candidates: s
            .candidates
            .iter()
            .map(|c| CandidateReport {
                pod: c.pod.map(|p| cluster.pod(p).key()),
                address: format!("{}:{}", c.ip, c.port),
                node: c.node.clone(),
                ready: c.ready,
            })
            .collect(),
        affinity_timeout: s.affinity_timeout,
        notes: s.notes.clone(),
        empty_reason: s.empty_reason.clone(),
    }
}

fn path_report(
    sources: &Sources,
    cluster: &Cluster,
    probe: &Probe,
    dnat: bool,
    p: &PathVerdict,
) -> PathReport {
    let source = match probe.from {
        Peer::Pod(pod) => cluster.pod(pod).key(),
        Peer::External(ip) => ip.to_string(),
    };
    let backend = p.backend.map(|b| cluster.pod(b).key());
    let destination = match p.dst_port {
        Some(port) => format!("{}:{port}/{}", p.dst_ip, probe.protocol),
        None => format!("{} {}", p.dst_ip, probe.protocol),
    };
    let dir = |d: &DirectionResult, endpoint: String| DirectionReport {
        endpoint,
        verdict: d.verdict.to_string(),
        tier: d.tier.to_string(),
        reason: d.reason.clone(),
        rules: d.deciding.iter().map(|r| rule_report(sources, r)).collect(),
        passed_by: d.passed_by.as_ref().map(|r| rule_report(sources, r)),
    };
    PathReport {
        egress: dir(&p.egress, source),
        ingress: dir(
            &p.ingress,
            backend.clone().unwrap_or_else(|| p.dst_ip.to_string()),
        ),
        backend,
        destination,
        source_ip: p.src_ip,
        verdict: p.verdict.to_string(),
        reason: p.reason.clone(),
        later: offload_profiles()
            .iter()
            .map(|prof| crate::engine::offload::later_packets(cluster, prof, probe, dnat, p))
            .collect(),
    }
}

/// Renders a trace for people.
pub fn report_to_text(r: &TraceReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "from     {}", r.from);
    let _ = writeln!(out, "to       {} {}", r.to, r.port);
    let _ = writeln!(out, "verdict  {}: {}", r.verdict.to_uppercase(), r.reason);
    if let Some(s) = &r.service {
        let _ = writeln!(out);
        let name = match &s.port_name {
            Some(n) => format!(" \"{n}\""),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "service  {}: {} port {}{name} -> targetPort {}",
            s.name, s.frontend, s.port, s.target_port
        );
        let affinity = match s.affinity_timeout {
            Some(t) => format!("ClientIP, {t}s"),
            None => "none".to_string(),
        };
        let _ = writeln!(out, "  affinity    {affinity}");
        for n in &s.notes {
            let _ = writeln!(out, "  note        {n}");
        }
        if s.candidates.is_empty() {
            let _ = writeln!(
                out,
                "  candidates  none: {}",
                s.empty_reason.as_deref().unwrap_or("no endpoints")
            );
        }
        for (i, c) in s.candidates.iter().enumerate() {
            let label = if i == 0 { "candidates" } else { "" };
            let _ = writeln!(
                out,
                "  {label:<10}  {} {}{}{}",
                c.address,
                c.pod.as_deref().unwrap_or("(not a pod)"),
                c.node
                    .as_deref()
                    .map(|n| format!(" on {n}"))
                    .unwrap_or_default(),
                if c.ready { "" } else { " (terminating)" }
            );
        }
    }
    let total = r.paths.len();
    for (i, p) in r.paths.iter().enumerate() {
        let _ = writeln!(out);
        let target = match &p.backend {
            Some(b) => format!("{b} {}", p.destination),
            None => p.destination.clone(),
        };
        let _ = writeln!(
            out,
            "path {}/{total}  {} -> {target}: {}",
            i + 1,
            p.source_ip,
            p.verdict.to_uppercase()
        );
        for (name, d) in [("egress", &p.egress), ("ingress", &p.ingress)] {
            let _ = writeln!(
                out,
                "  {name:<8} {}: {} [{}] {}",
                d.endpoint, d.verdict, d.tier, d.reason
            );
            if let Some(pass) = &d.passed_by {
                let _ = writeln!(out, "           passed by {}", pass.text());
            }
            for rule in &d.rules {
                let _ = writeln!(out, "           {}", rule.text());
            }
        }
        if p.verdict == "deny" && !p.egress.verdict.eq("deny") && !p.ingress.verdict.eq("deny") {
            let _ = writeln!(out, "  refused  {}", p.reason);
        }
        later_text(&mut out, &p.later);
    }
    out
}

/// The connection-offload lines of a path: the first packets always run in software (the
/// eBPF conntrack must see the connection established first); the later ones per profile.
fn later_text(out: &mut String, later: &[crate::engine::offload::Later]) {
    if later
        .iter()
        .all(|l| l.stays == Some(crate::engine::offload::Stays::Denied))
    {
        return;
    }
    let _ = writeln!(
        out,
        "  later packets, once pipecd offloads the established connection:"
    );
    for l in later {
        let _ = writeln!(out, "    {}", l.text());
        for e in &l.entries {
            let _ = writeln!(out, "      {}", e.text());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forms() {
        assert_eq!(parse_port("80/TCP"), Ok((Protocol::Tcp, Some(80))));
        assert_eq!(parse_port("53/udp"), Ok((Protocol::Udp, Some(53))));
        assert_eq!(parse_port("8080"), Ok((Protocol::Tcp, Some(8080))));
        assert_eq!(parse_port("ICMP"), Ok((Protocol::Icmp, None)));
        insta::assert_snapshot!(
            [parse_port("TCP"), parse_port("0/TCP"), parse_port("80/GRE")]
                .into_iter()
                .map(|r| r.err().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n"),
            @r"
        TCP needs a port, such as 80/TCP
        `0` is not a port number (1-65535)
        unknown protocol `GRE`: use TCP, UDP, SCTP or ICMP
        "
        );
    }
}

/// A connection to trace, as the command line names it.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The client: `NS/POD` or `ip:ADDR`.
    pub from: &'a str,
    /// The destination: `NS/POD`, `svc:NS/NAME` or `ip:ADDR`.
    pub to: &'a str,
    /// `PORT/PROTO`, `PORT` or `ICMP`.
    pub port: &'a str,
    /// Refuse connections to ports a destination pod does not list.
    pub check_listening: bool,
}

/// A trace: the reference's report and the MAG's column beside it.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The reference semantics' report.
    pub report: TraceReport,
    /// The same connection through the MAG, as text.
    pub mag_text: String,
    /// Whether the MAG agrees with the reference.
    pub agrees: bool,
}

impl Trace {
    /// The text `pipec trace` prints.
    pub fn text(&self) -> String {
        format!("{}\n{}", report_to_text(&self.report), self.mag_text)
    }
}

/// Traces one connection through the reference semantics and through the MAG (`pipec trace`,
/// and pipecd's live trace on its running state).
pub fn trace(sources: &Sources, cluster: &Cluster, q: &Query<'_>) -> Result<Trace, String> {
    let probe = parse_probe(cluster, q.from, q.to, q.port)?;
    let ctx = crate::semantics::Context::with_options(
        cluster,
        crate::semantics::Options {
            check_listening: q.check_listening,
        },
    );
    let outcome = crate::semantics::evaluate(&ctx, &probe);
    let report = trace_report(sources, cluster, &probe, &outcome);
    let (mag_text, agrees) = mag_column(cluster, &probe, &outcome, q.check_listening);
    Ok(Trace {
        report,
        mag_text,
        agrees,
    })
}

/// The pods whose policy rows a connection can meet: the client, the destination pod, and
/// every backend the reference found for it (the MAG picks one of them). A trace lowers
/// these rows only, not every pod of the nodes it crosses.
pub fn connection_pods(cluster: &Cluster, probe: &Probe, reference: &Outcome) -> BTreeSet<PodId> {
    let client = match probe.from {
        Peer::Pod(p) => Some(p),
        Peer::External(ip) => cluster.pod_by_ip(ip),
    };
    let server = match probe.to {
        Destination::Pod(p) => Some(p),
        Destination::Ip(ip) => cluster.pod_by_ip(ip),
        Destination::Service { .. } => None,
    };
    let backends = reference
        .paths
        .iter()
        .flat_map(|p| [p.backend, cluster.pod_by_ip(p.dst_ip)]);
    [client, server]
        .into_iter()
        .chain(backends)
        .flatten()
        .collect()
}

/// The MAG side of a trace: the same connection through the lowered pipeline, table by
/// table, and whether it agrees with the reference (for the backend the MAG chose).
fn mag_column(
    cluster: &Cluster,
    probe: &Probe,
    reference: &Outcome,
    check_listening: bool,
) -> (String, bool) {
    use crate::engine::mag::{conn_of_probe, refused, Prober};
    use crate::mag::interp::Verdict as MagVerdict;
    use crate::semantics::Destination;
    // A headless Service has no virtual IP: its name resolves to the pods' addresses, and
    // the client connects to one of them. The MAG runs each candidate as that connection.
    if let Destination::Service { service, .. } = probe.to {
        if cluster.service(service).cluster_ips.is_empty() {
            let mut out = String::new();
            let mut agrees = true;
            if reference.paths.is_empty() {
                out.push_str("MAG: headless service without endpoints: nothing to connect to\n");
            }
            for (i, path) in reference.paths.iter().enumerate() {
                let direct = Probe {
                    to: Destination::Ip(path.dst_ip),
                    port: path.dst_port,
                    ..*probe
                };
                let one = Outcome {
                    paths: vec![path.clone()],
                    verdict: Some(path.verdict),
                    ..reference.clone()
                };
                let (text, ok) = mag_column(cluster, &direct, &one, check_listening);
                out.push_str(&format!(
                    "candidate {}/{} (headless: the client connects to {}):\n{text}",
                    i + 1,
                    reference.paths.len(),
                    path.dst_ip
                ));
                agrees &= ok;
            }
            return (out, agrees);
        }
    }
    let mut engine = Prober::of_pods(cluster, connection_pods(cluster, probe, reference));
    let outcome = match engine.connect(&conn_of_probe(cluster, probe)) {
        Ok(o) => o,
        Err(e) => return (format!("MAG: cannot run: {e}\n"), false),
    };
    let mut out =
        String::from("MAG (match-action graph interpreter, with the policy rows of these pods):\n");
    for (node, t) in &outcome.traces {
        out.push_str(&format!("  node {node}:\n"));
        if let Ok(l) = engine.node(node) {
            for line in t.to_text_by_table(l.mag()).lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    let mut mag_allowed = outcome.verdict != MagVerdict::Deny;
    if check_listening && mag_allowed {
        if let Some(r) = refused(cluster, &outcome, probe) {
            out.push_str(&format!("  refused: {r}\n"));
            mag_allowed = false;
        }
    }
    if let Some((ip, port)) = outcome.dnat {
        out.push_str(&format!("  translated to {ip}:{port}\n"));
    }
    out.push_str(&format!("  verdict: {:?}\n", outcome.verdict));
    let expected = match outcome.dnat {
        Some((ip, port)) => reference
            .paths
            .iter()
            .find(|p| p.dst_ip == ip && p.dst_port.is_none_or(|d| d == port))
            .map(|p| p.verdict.is_allowed()),
        None => reference.allowed(),
    };
    let agrees = expected.is_none_or(|e| e == mag_allowed);
    if !agrees {
        out.push_str(&format!(
            "!!! DISAGREEMENT: the reference says {}, the MAG says {} !!!\n",
            if expected == Some(true) {
                "allow"
            } else {
                "deny"
            },
            if mag_allowed { "allow" } else { "deny" }
        ));
    }
    (out, agrees)
}
