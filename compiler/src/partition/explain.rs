//! The report of `pipec explain`: every rule's placement, in words a network engineer
//! reads, then the budget and what it left out.

use super::{Placement, Plan, Why};
use crate::mag::{Mag, Provenance};
use crate::source::Sources;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One row of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The MAG entry (`t9.e2`), or the table for a summarised stage.
    pub id: String,
    /// The source object and rule.
    pub source: String,
    /// `file:line`, when the rule was read from a file.
    pub location: Option<String>,
    /// Where it runs: the hardware target or `ebpf`.
    pub target: String,
    /// The reason code.
    pub code: String,
    /// The reason, in a few words.
    pub reason: String,
    /// Hardware entries it costs (before compression).
    pub hw_entries: u64,
    /// The reasoning, step by step.
    pub chain: Vec<String>,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The node.
    pub node: String,
    /// The hardware target.
    pub target: String,
    /// Policy entries one by one, other stages one row per table.
    pub rows: Vec<Row>,
    /// Budget use.
    pub usage: super::Usage,
    /// Entries left out for budget, most valuable first.
    pub left_out: Vec<String>,
}

/// Builds the report of a plan.
pub fn report(plan: &Plan, mag: &Mag, sources: &Sources) -> Report {
    let mut rows = Vec::new();
    let mut stages: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for p in &plan.placements {
        let table = plan.table_name(p);
        if !table.ends_with("_policy") {
            if let Why::Stage { detail } = &p.why {
                stages.entry(table).or_insert((0, detail)).0 += 1;
                continue;
            }
        }
        rows.push(row(plan, p, mag, sources));
    }
    for (table, (n, detail)) in stages {
        rows.push(Row {
            id: table.to_string(),
            source: format!("{n} entries of stage {table}"),
            location: None,
            target: "ebpf".into(),
            code: "stage-not-offloadable".into(),
            reason: detail.to_string(),
            hw_entries: 0,
            chain: vec![detail.to_string()],
        });
    }
    Report {
        node: plan.node.clone(),
        target: plan.target.clone(),
        rows,
        usage: plan.usage.clone(),
        left_out: plan
            .left_out
            .iter()
            .map(|(t, e)| super::entry_name(*t, *e))
            .collect(),
    }
}

/// The row of one placement.
fn row(plan: &Plan, p: &Placement, mag: &Mag, sources: &Sources) -> Row {
    let location = p
        .prov
        .and_then(|i| mag.provenance.get_index(i as usize))
        .and_then(|prov| match prov {
            Provenance::Rule(r) => r.location(sources).map(|s| sources.file_line(s)),
            Provenance::Object(o) => o.span.map(|s| sources.file_line(s)),
            Provenance::Builtin(_) => None,
        });
    let mut chain = p.chain.clone();
    chain.push(p.why.to_string());
    Row {
        id: p.entry_name(),
        source: plan.origin(p).to_string(),
        location,
        target: plan.target_name(p).to_string(),
        code: p.why.code().to_string(),
        reason: p.why.to_string(),
        hw_entries: p.hw_rules,
        chain,
    }
}

/// The rows for `--rule ID`: the entry with that id, or every row whose source contains it.
pub fn select<'r>(report: &'r Report, id: &str) -> Vec<&'r Row> {
    let exact: Vec<&Row> = report.rows.iter().filter(|r| r.id == id).collect();
    if !exact.is_empty() {
        return exact;
    }
    report
        .rows
        .iter()
        .filter(|r| r.source.contains(id))
        .collect()
}

/// Renders the report as a table.
pub fn to_text(report: &Report) -> String {
    // The summary comes first: on a large node the table runs to millions of lines, and
    // the budget is what a reader looks for first.
    let mut out = summary_listing(report, None);
    let _ = writeln!(out);
    let w_id = report
        .rows
        .iter()
        .map(|r| r.id.len())
        .max()
        .unwrap_or(2)
        .max(4);
    let src = |r: &Row| match &r.location {
        Some(l) => format!("{} ({l})", r.source),
        None => r.source.clone(),
    };
    let w_src = report
        .rows
        .iter()
        .map(|r| src(r).len())
        .max()
        .unwrap_or(6)
        .max(6);
    let w_t = report
        .rows
        .iter()
        .map(|r| r.target.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "{:<w_id$}  {:<w_src$}  {:<w_t$}  {:>7}  REASON",
        "RULE", "SOURCE", "TARGET", "ENTRIES"
    );
    for r in &report.rows {
        let _ = writeln!(
            out,
            "{:<w_id$}  {:<w_src$}  {:<w_t$}  {:>7}  {}",
            r.id,
            src(r),
            r.target,
            r.hw_entries,
            r.reason
        );
    }
    out
}

/// The summary of a plan (`explain --summary`): the node and target, how many rules each
/// target decides, the hardware budget and what was left out for it.
pub fn summary_text(report: &Report) -> String {
    summary_listing(report, Some(SUMMARY_LEFT_OUT))
}

/// The entries left out for budget that the summary lists; the full text lists every one
/// (on one node of the full generated cluster they are 9.5 million lines).
const SUMMARY_LEFT_OUT: usize = 20;

/// The summary, listing at most `limit` of the entries left out for budget.
fn summary_listing(report: &Report, limit: Option<usize>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}, hardware target {}",
        report.node, report.target
    );
    let in_hw = report
        .rows
        .iter()
        .filter(|r| r.target == report.target)
        .count();
    let _ = writeln!(
        out,
        "rules: {} decided in hardware, {} in eBPF only",
        in_hw,
        report.rows.len() - in_hw
    );
    let u = &report.usage;
    let _ = writeln!(out, "budget of {}:", report.target);
    let _ = writeln!(
        out,
        "  flow entries     {} used, {} free ({} before compression, {} by naive expansion)",
        u.entries,
        u.entries_limit.saturating_sub(u.entries),
        u.uncompressed,
        u.naive
    );
    let _ = writeln!(
        out,
        "  counters         {} used, {} free",
        u.counters,
        u.counters_limit.saturating_sub(u.counters)
    );
    let _ = writeln!(
        out,
        "  priority levels  {} used, {} free",
        u.levels,
        u.levels_limit.saturating_sub(u.levels)
    );
    for r in &u.reserved {
        let _ = writeln!(
            out,
            "  reserved         {} used of {} set aside ({})",
            r.used, r.entries, r.hint
        );
    }
    if report.left_out.is_empty() {
        let _ = writeln!(out, "left out for budget: nothing");
    } else {
        let _ = writeln!(out, "left out for budget, most valuable first:");
        let shown = limit.unwrap_or(usize::MAX).min(report.left_out.len());
        for e in &report.left_out[..shown] {
            let _ = writeln!(out, "  {e}");
        }
        let more = report.left_out.len() - shown;
        if more > 0 {
            let _ = writeln!(
                out,
                "  ... and {more} more (`pipec explain` without --summary lists every one)"
            );
        }
    }
    out
}

/// Renders one rule's chain of reasons.
pub fn chain_text(rows: &[&Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let _ = writeln!(out, "{} {}", r.id, r.source);
        if let Some(l) = &r.location {
            let _ = writeln!(out, "  at {l}");
        }
        for (i, step) in r.chain.iter().enumerate() {
            let _ = writeln!(out, "  {}. {step}", i + 1);
        }
        let _ = writeln!(
            out,
            "  => {} [{}], {} hardware entries",
            r.target, r.code, r.hw_entries
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(left_out: usize) -> Report {
        Report {
            node: "n1".into(),
            target: "octeon-cn10k".into(),
            rows: Vec::new(),
            usage: super::super::Usage::default(),
            left_out: (0..left_out).map(|i| format!("t7.e{i}")).collect(),
        }
    }

    /// The summary lists the first entries left out and counts the rest; the full text
    /// lists every one.
    #[test]
    fn the_summary_lists_the_most_valuable_left_out_entries_only() {
        let r = report(SUMMARY_LEFT_OUT + 5);
        let summary = summary_text(&r);
        assert!(summary.contains("  t7.e19\n"), "{summary}");
        assert!(!summary.contains("  t7.e20\n"), "{summary}");
        assert!(
            summary
                .contains("  ... and 5 more (`pipec explain` without --summary lists every one)\n"),
            "{summary}"
        );
        let full = to_text(&r);
        assert!(full.contains("  t7.e24\n") && !full.contains("more (`pipec explain`"));
        let short = summary_text(&report(3));
        assert!(
            short.contains("  t7.e2\n") && !short.contains("more ("),
            "{short}"
        );
    }
}
