//! The canonical formatter: [`crate::ast::File`] → text.
//!
//! The layout is fixed: two-space indentation, one blank line between top-level items
//! (but none between consecutive includes),
//! one statement per line, a rule on one line when it fits in 100 columns and otherwise
//! each clause on its own continuation line, selectors on one line. Comments are kept where the parser attached them: whole-line comments
//! before a statement, a trailing comment after its end, comments before a closing brace.
//! Formatting is idempotent: formatting the parse of the output gives the output again.

use crate::ast::*;
use std::fmt::Write as _;

/// Formats a whole file.
pub fn format(file: &File) -> String {
    let mut out = String::new();
    for (i, item) in file.items.iter().enumerate() {
        // Items are separated by a blank line, except consecutive includes.
        let both_includes = i > 0
            && matches!(item.node, Item::Include(_))
            && matches!(file.items[i - 1].node, Item::Include(_));
        if i > 0 && !both_includes {
            out.push('\n');
        }
        leading(&mut out, &item.comments, 0);
        match &item.node {
            Item::Include(s) => {
                let _ = write!(out, "include {};", quote(&s.value));
            }
            Item::Policy(p) => policy(&mut out, p),
            Item::Target(t) => target(&mut out, t),
            Item::Placement(p) => placement(&mut out, p),
        }
        trailing(&mut out, &item.comments);
    }
    if !file.end_comments.is_empty() {
        if !file.items.is_empty() {
            out.push('\n');
        }
        for c in &file.end_comments {
            let _ = writeln!(out, "//{c}");
        }
    }
    out
}

/// Quotes a string, escaping what must be escaped.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push_str("  ");
    }
}

fn leading(out: &mut String, c: &Comments, level: usize) {
    for line in &c.detached {
        indent(out, level);
        let _ = writeln!(out, "//{line}");
    }
    if !c.detached.is_empty() {
        out.push('\n');
    }
    for line in &c.leading {
        indent(out, level);
        let _ = writeln!(out, "//{line}");
    }
    indent(out, level);
}

fn trailing(out: &mut String, c: &Comments) {
    if let Some(t) = &c.trailing {
        let _ = write!(out, " //{t}");
    }
    out.push('\n');
}

fn end_comments(out: &mut String, comments: &[String]) {
    for c in comments {
        let _ = writeln!(out, "  //{c}");
    }
}

fn policy(out: &mut String, p: &Policy) {
    let _ = writeln!(
        out,
        "policy {} priority {} {{",
        quote(&p.name.value),
        p.priority.text
    );
    for stmt in &p.body {
        leading(out, &stmt.comments, 1);
        match &stmt.node {
            PolicyStmt::Subject(peer_) => {
                out.push_str("subject ");
                peer(out, peer_);
                out.push(';');
            }
            PolicyStmt::Rule(r) => rule(out, r),
        }
        trailing(out, &stmt.comments);
    }
    end_comments(out, &p.end_comments);
    out.push('}');
}

/// The widest a rule may be on one line (with its indentation) before its clauses break.
const MAX_WIDTH: usize = 100;

fn rule(out: &mut String, r: &Rule) {
    let mut head = String::from(match r.direction.0 {
        Direction::Ingress => "ingress ",
        Direction::Egress => "egress ",
    });
    head.push_str(&r.action.text);
    if let Some(n) = &r.name {
        head.push(' ');
        head.push_str(&quote(&n.value));
    }
    let clauses: Vec<String> = r.clauses.iter().map(clause).collect();
    let one_line = format!("{head} {};", clauses.join(" "));
    if clauses.is_empty() {
        let _ = write!(out, "{head};");
    } else if 2 + one_line.chars().count() <= MAX_WIDTH && !one_line.contains('\n') {
        out.push_str(&one_line);
    } else {
        out.push_str(&head);
        for c in &clauses {
            out.push('\n');
            indent(out, 2);
            out.push_str(c);
        }
        out.push(';');
    }
}

fn clause(c: &Clause) -> String {
    let mut out = String::new();
    match c {
        Clause::Peers { keyword, peers, .. } => {
            out.push_str(match keyword.0 {
                PeerKeyword::From => "from ",
                PeerKeyword::To => "to ",
            });
            for (i, p) in peers.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                peer(&mut out, p);
            }
        }
        Clause::Ports { ports, .. } => {
            out.push_str("ports ");
            for (i, p) in ports.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&p.protocol.text);
                match &p.port {
                    None => {}
                    Some(PortValue::Number(n)) => {
                        let _ = write!(out, " {}", n.text);
                    }
                    Some(PortValue::Range(a, b)) => {
                        let _ = write!(out, " {}-{}", a.text, b.text);
                    }
                    Some(PortValue::Named(n)) => {
                        let _ = write!(out, " {}", n.text);
                    }
                }
            }
        }
    }
    out
}

fn peer(out: &mut String, p: &Peer) {
    match p {
        Peer::Pods {
            pods, namespaces, ..
        } => {
            out.push_str("pods ");
            selector(out, pods);
            if let Some(ns) = namespaces {
                out.push_str(" in namespaces ");
                selector(out, ns);
            }
        }
        Peer::Namespaces { namespaces, .. } => {
            out.push_str("namespaces ");
            selector(out, namespaces);
        }
        Peer::Cidr { cidr, except, .. } => {
            let _ = write!(out, "cidr {}", cidr.text);
            if !except.is_empty() {
                let list: Vec<&str> = except.iter().map(|e| e.text.as_str()).collect();
                let _ = write!(out, " except [{}]", list.join(", "));
            }
        }
        Peer::Entity(w) => {
            let _ = write!(out, "entity {}", w.text);
        }
        Peer::Service(s) => {
            let _ = write!(out, "service {}", quote(&s.value));
        }
    }
}

fn selector(out: &mut String, s: &Selector) {
    if s.exprs.is_empty() {
        out.push_str("{}");
        return;
    }
    out.push_str("{ ");
    for (i, e) in s.exprs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&label_key(&e.key.text));
        match &e.op {
            SelOp::Eq(v) => {
                let _ = write!(out, " = {}", quote(&v.value));
            }
            SelOp::In(vs) => {
                let _ = write!(out, " in {}", string_list(vs));
            }
            SelOp::NotIn(vs) => {
                let _ = write!(out, " not in {}", string_list(vs));
            }
            SelOp::Exists => out.push_str(" exists"),
            SelOp::NotExists => out.push_str(" not exists"),
        }
    }
    out.push_str(" }");
}

fn string_list(vs: &[Str]) -> String {
    let items: Vec<String> = vs.iter().map(|v| quote(&v.value)).collect();
    format!("[{}]", items.join(", "))
}

/// A label key, bare when the grammar accepts it bare, else quoted.
fn label_key(key: &str) -> String {
    let name_ok = |s: &str, extra: &str| {
        s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    let bare = match key.split_once('/') {
        Some((prefix, name)) => name_ok(prefix, "-.") && name_ok(name, "-_."),
        None => name_ok(key, "-_."),
    };
    if bare {
        key.to_string()
    } else {
        quote(key)
    }
}

fn limit(l: &Limit) -> &str {
    l.value.as_ref().map_or("unlimited", |w| w.text.as_str())
}

fn words(ws: &[Word]) -> String {
    let v: Vec<&str> = ws.iter().map(|w| w.text.as_str()).collect();
    v.join(", ")
}

fn target(out: &mut String, t: &Target) {
    let _ = write!(out, "target {}", quote(&t.name.value));
    if let Some(e) = &t.extends {
        let _ = write!(out, " extends {}", quote(&e.value));
    }
    out.push_str(" {\n");
    for stmt in &t.body {
        leading(out, &stmt.comments, 1);
        match &stmt.node {
            TargetStmt::Match(specs) => {
                let v: Vec<String> = specs
                    .iter()
                    .map(|s| match &s.mask {
                        Some(m) => format!("{} {}", s.field.text, m.text),
                        None => s.field.text.clone(),
                    })
                    .collect();
                let _ = write!(out, "match {};", v.join(", "));
            }
            TargetStmt::Kinds(ws) => {
                let _ = write!(out, "kinds {};", words(ws));
            }
            TargetStmt::Actions(ws) => {
                let _ = write!(out, "actions {};", words(ws));
            }
            TargetStmt::PriorityLevels { levels, max } => {
                let _ = write!(out, "priority levels {}", limit(levels));
                if let Some(m) = max {
                    let _ = write!(out, " max {}", limit(m));
                }
                out.push(';');
            }
            TargetStmt::Entries(l) => {
                let _ = write!(out, "entries {};", limit(l));
            }
            TargetStmt::Counters(l) => {
                let _ = write!(out, "counters {};", limit(l));
            }
            TargetStmt::SaLimit(l) => {
                let _ = write!(out, "sa limit {};", limit(l));
            }
            TargetStmt::CostPerEntry(w) => {
                let _ = write!(out, "cost per entry {};", w.text);
            }
            TargetStmt::Remove { what, names } => {
                let what = match what {
                    RemoveWhat::Match => "match",
                    RemoveWhat::Kinds => "kinds",
                    RemoveWhat::Actions => "actions",
                };
                let _ = write!(out, "remove {what} {};", words(names));
            }
        }
        trailing(out, &stmt.comments);
    }
    end_comments(out, &t.end_comments);
    out.push('}');
}

fn place_subject(s: &PlaceSubject) -> String {
    let kind = match s.kind {
        PlaceKind::Policy => "policy",
        PlaceKind::Service => "service",
        PlaceKind::Table => "table",
    };
    format!("{kind} {}", quote(&s.name.value))
}

fn placement(out: &mut String, p: &Placement) {
    out.push_str("placement {\n");
    for stmt in &p.body {
        leading(out, &stmt.comments, 1);
        match &stmt.node {
            PlacementStmt::Pin { subject, target } => {
                let _ = write!(
                    out,
                    "pin {} on {};",
                    place_subject(subject),
                    quote(&target.value)
                );
            }
            PlacementStmt::Prefer { subject, target } => {
                let _ = write!(
                    out,
                    "prefer {} on {};",
                    place_subject(subject),
                    quote(&target.value)
                );
            }
            PlacementStmt::Reserve {
                amount,
                resource,
                target,
                subject,
            } => {
                let _ = write!(
                    out,
                    "reserve {} {} on {} for {};",
                    amount.text,
                    resource.text,
                    quote(&target.value),
                    place_subject(subject)
                );
            }
            PlacementStmt::Exclude { subject } => {
                let _ = write!(out, "exclude {} from hardware;", place_subject(subject));
            }
        }
        trailing(out, &stmt.comments);
    }
    end_comments(out, &p.end_comments);
    out.push('}');
}
