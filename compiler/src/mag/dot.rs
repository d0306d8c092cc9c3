//! The DOT view of a MAG (`pipec compile --emit dot`): one box per table with its key,
//! actions and entry count, one arrow per edge labelled with its action.

use super::*;
use std::fmt::Write;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Renders the graph for Graphviz.
pub fn mag_to_dot(mag: &Mag) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph mag {{");
    let _ = writeln!(out, "  label=\"pipec MAG, node {}\";", escape(&mag.node));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(
        out,
        "  node [shape=box, style=rounded, fontname=\"monospace\", fontsize=10];"
    );
    let _ = writeln!(out, "  edge [fontname=\"monospace\", fontsize=9];");
    for tid in mag.table_ids() {
        let t = &mag.graph[tid.0];
        let key: Vec<String> = t
            .key
            .iter()
            .map(|k| format!("{}:{}", k.field, k.kind.name()))
            .collect();
        let acts: Vec<String> = t
            .actions
            .iter()
            .filter_map(|a| mag.action(*a).map(|d| format!("{a} {}", d.name)))
            .collect();
        let default = mag
            .action(t.default_action.action)
            .map(|d| d.name.as_str())
            .unwrap_or("?");
        let label = format!(
            "{tid} {}\\l{} entries\\lkey: {}\\lactions: {}\\ldefault: {}\\l",
            escape(&t.name),
            t.entries.len(),
            escape(&key.join(" ")),
            escape(&acts.join(", ")),
            escape(default)
        );
        let style = if Some(tid) == mag.start {
            ", penwidth=2"
        } else {
            ""
        };
        let _ = writeln!(out, "  {tid} [label=\"{label}\"{style}];");
    }
    for tid in mag.table_ids() {
        for (on, to) in mag.edges_from(tid) {
            let label = match on.and_then(|a| mag.action(a).map(|d| (a, d))) {
                Some((a, d)) => format!("{a} {}", d.name),
                None => "*".into(),
            };
            let _ = writeln!(out, "  {tid} -> {to} [label=\"{}\"];", escape(&label));
        }
    }
    out.push_str("}\n");
    out
}
