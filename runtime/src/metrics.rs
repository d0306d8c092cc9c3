//! The daemon's status and its Prometheus text.

use crate::device::Applied;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// A Prometheus label value: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Upper bounds (seconds) of the event → applied latency histogram.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// Status and counters.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Whether the first full state is applied (`/readyz`).
    pub ready: bool,
    /// The session's generation.
    pub generation: u64,
    /// Source events handed to the session.
    pub events: u64,
    /// Applies that reached the device.
    pub applies: u64,
    /// Files or changes refused.
    pub errors: u64,
    /// Sources (files, or API objects as `watch:Kind/ns/name`) that do not apply now, with
    /// why.
    pub bad_files: BTreeMap<String, String>,
    /// Errors the API watchers met (they retry with back-off).
    pub watch_errors: u64,
    /// Latency histogram counts per bucket, then the +Inf count.
    latency: [u64; BUCKETS.len() + 1],
    latency_sum: f64,
    /// Entries per target and table.
    pub sizes: BTreeMap<String, usize>,
    /// The entries each eBPF map was created with, by map.
    pub map_capacity: BTreeMap<String, u64>,
    /// What the start-up reconciliation applied.
    pub reconciled: Option<Applied>,
}

impl Metrics {
    /// Records a refused source.
    pub fn bad_source(&mut self, label: &str, why: &str) {
        self.errors += 1;
        self.bad_files.insert(label.to_string(), why.to_string());
    }

    /// Records a source that applies.
    pub fn good_source(&mut self, label: &str) {
        self.bad_files.remove(label);
    }

    /// Records one apply's event → applied latency.
    pub fn observe_apply(&mut self, d: Duration) {
        self.applies += 1;
        let s = d.as_secs_f64();
        self.latency_sum += s;
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.latency[i] += 1;
    }

    /// The Prometheus text exposition.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let mut gauge = |name: &str, help: &str, v: String| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "pipecd_ready",
            "1 once the first full state is applied.",
            u8::from(self.ready).to_string(),
        );
        gauge(
            "pipecd_generation",
            "The compile session's generation.",
            self.generation.to_string(),
        );
        gauge(
            "pipecd_bad_sources",
            "Source files that do not apply now; the last good state of their objects stays.",
            self.bad_files.len().to_string(),
        );
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "pipecd_events_total",
            "Source events handed to the session.",
            self.events,
        );
        counter(
            "pipecd_applies_total",
            "Changes applied to the device.",
            self.applies,
        );
        counter(
            "pipecd_apply_errors_total",
            "Source files or changes refused.",
            self.errors,
        );
        counter(
            "pipecd_watch_errors_total",
            "Errors of the Kubernetes API watchers (each retried with back-off).",
            self.watch_errors,
        );
        let name = "pipecd_event_to_applied_seconds";
        let _ = writeln!(o, "# HELP {name} From a source change seen to its operations applied.\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.latency[i];
            let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.latency[BUCKETS.len()];
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(o, "{name}_sum {}", self.latency_sum);
        let _ = writeln!(o, "{name}_count {cumulative}");
        let name = "pipecd_entries";
        let _ = writeln!(
            o,
            "# HELP {name} Entries the device holds, per target and table.\n# TYPE {name} gauge"
        );
        for (k, v) in &self.sizes {
            let (target, table) = k.split_once('/').unwrap_or((k, ""));
            let _ = writeln!(o, "{name}{{target=\"{target}\",table=\"{table}\"}} {v}");
        }
        let name = "pipecd_ebpf_map_capacity";
        let _ = writeln!(
            o,
            "# HELP {name} The entries each eBPF map was created with.\n# TYPE {name} gauge"
        );
        for (map, n) in &self.map_capacity {
            let _ = writeln!(o, "{name}{{map=\"{map}\"}} {n}");
        }
        o
    }

    /// The per-rule counters as Prometheus counters, labelled by the rule's provenance
    /// (`rule`: the object, its rule list and index; `at`: file:line, empty when not known)
    /// and its cookie. A cookie the running state does not name (a rule removed since it
    /// counted, as the pinned counters outlive rules; cookie 0, a denial on a left-out
    /// conflict cell) has an empty `rule`. Lines are sorted by their labels, so two scrapes
    /// of one state list the rules in one order.
    pub fn rule_counters_text(
        counters: &BTreeMap<u64, pipec_ebpf_common::CounterValue>,
        provenance: &BTreeMap<u64, (String, Option<String>)>,
    ) -> String {
        let mut rows: Vec<(String, u64, u64)> = counters
            .iter()
            .map(|(cookie, v)| {
                let (rule, at) = provenance
                    .get(cookie)
                    .map(|(r, a)| (r.as_str(), a.as_deref().unwrap_or("")))
                    .unwrap_or(("", ""));
                let labels = format!(
                    "rule=\"{}\",at=\"{}\",cookie=\"{cookie:#018x}\"",
                    escape(rule),
                    escape(at)
                );
                (labels, v.packets, v.bytes)
            })
            .collect();
        rows.sort();
        let mut o = String::new();
        for (name, help, pick) in [
            (
                "pipecd_rule_packets_total",
                "Packets the eBPF datapath decided by each rule.",
                0,
            ),
            (
                "pipecd_rule_bytes_total",
                "Bytes of the packets the eBPF datapath decided by each rule.",
                1,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, packets, bytes) in &rows {
                let v = if pick == 0 { packets } else { bytes };
                let _ = writeln!(o, "{name}{{{labels}}} {v}");
            }
        }
        o
    }

    /// The status as JSON (`/status`).
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "ready": self.ready,
            "generation": self.generation,
            "events": self.events,
            "applies": self.applies,
            "errors": self.errors,
            "bad_files": self.bad_files,
            "reconciled": self.reconciled.as_ref().map(|a| serde_json::json!({
                "map_ops": a.map_ops, "flow_ops": a.flow_ops, "sa_ops": a.sa_ops
            })),
        })
    }
}

/// The hardware port's refusals since the start as a Prometheus counter, by errno name
/// (the refusal's stable code). Only the errnos seen are listed, in name order; the help
/// and type lines are always there, so that a scrape shows the metric exists.
pub fn refusals_text(counts: &BTreeMap<String, u64>) -> String {
    let name = "pipecd_device_refusals_total";
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# HELP {name} Flow-table operations the hardware port refused (their rules are decided in eBPF), by errno.\n# TYPE {name} counter"
    );
    for (errno, n) in counts {
        let _ = writeln!(o, "{name}{{errno=\"{}\"}} {n}", escape(errno));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipec_ebpf_common::CounterValue;

    #[test]
    fn rule_counters_are_sorted_by_provenance_and_escaped() {
        let v = |packets, bytes| CounterValue { packets, bytes };
        let counters = BTreeMap::from([(1, v(5, 500)), (2, v(7, 700)), (3, v(1, 60))]);
        let provenance = BTreeMap::from([
            (
                1,
                (
                    "NetworkPolicy/b/x ingress[0]".to_string(),
                    Some("b.yaml:4".to_string()),
                ),
            ),
            (
                2,
                ("CiliumNetworkPolicy/a/\"q\" egress[1]".to_string(), None),
            ),
        ]);
        let text = Metrics::rule_counters_text(&counters, &provenance);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                // Cookie 3 names no rule of the running state: an empty rule sorts first.
                "pipecd_rule_packets_total{rule=\"\",at=\"\",cookie=\"0x0000000000000003\"} 1",
                "pipecd_rule_packets_total{rule=\"CiliumNetworkPolicy/a/\\\"q\\\" egress[1]\",at=\"\",cookie=\"0x0000000000000002\"} 7",
                "pipecd_rule_packets_total{rule=\"NetworkPolicy/b/x ingress[0]\",at=\"b.yaml:4\",cookie=\"0x0000000000000001\"} 5",
                "pipecd_rule_bytes_total{rule=\"\",at=\"\",cookie=\"0x0000000000000003\"} 60",
                "pipecd_rule_bytes_total{rule=\"CiliumNetworkPolicy/a/\\\"q\\\" egress[1]\",at=\"\",cookie=\"0x0000000000000002\"} 700",
                "pipecd_rule_bytes_total{rule=\"NetworkPolicy/b/x ingress[0]\",at=\"b.yaml:4\",cookie=\"0x0000000000000001\"} 500",
            ]
        );
        assert!(text.contains("# TYPE pipecd_rule_packets_total counter\n"));
    }
}
