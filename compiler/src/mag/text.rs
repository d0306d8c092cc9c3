//! The stable text form of a MAG (`pipec compile --emit mag`), and its parser.
//!
//! The printer writes ids exactly as their `Debug` form (`t3`, `a7`, `e41`), so a trace or
//! an error message can be looked up in the dump. Format:
//!
//! ```text
//! mag node <name>
//! start t0
//! action a1 from_endpoint(ep: meta.endpoint) { meta.endpoint = $ep }
//! table t0 classify
//!   key in_port:exact
//!   actions a1
//!   default a0()
//!   size 16
//!   edge a1 -> t1
//!   e0 p0 in_port=2 -> a1(ep=2) @ Pod/default/tiefighter
//! ```
//!
//! A field matching anything is left out of an entry. Ternary masks that are prefixes are
//! written `value/len`; other masks `value&&&mask`. Provenance follows `@`, records
//! separated by ` | `. [`text_to_mag`] reads this form back; printing what it reads gives
//! the same text (the round-trip tests check it).

use super::*;
use crate::model::{Origin, RuleRef};
use crate::source::FieldPath;
use std::fmt::Write;

fn fmt_match(k: KeyField, m: &FieldMatch) -> Option<String> {
    let f = k.field;
    let w = f.width();
    Some(match *m {
        FieldMatch::Any => return None,
        FieldMatch::Exact(v) => format!("{f}={}", f.fmt_value(v)),
        FieldMatch::Prefix { value, len } => format!("{f}={}/{len}", f.fmt_value(value)),
        FieldMatch::Ternary { value, mask } => {
            let len = mask.count_ones();
            if mask == f.max() {
                format!("{f}={}", f.fmt_value(value))
            } else if mask == prefix_mask(len, w) {
                format!("{f}={}/{len}", f.fmt_value(value))
            } else {
                format!("{f}={}&&&{mask:#x}", f.fmt_value(value))
            }
        }
        FieldMatch::Range { lo, hi } => {
            format!("{f}={}..={}", f.fmt_value(lo), f.fmt_value(hi))
        }
    })
}

fn fmt_operand(o: &Operand, def: &ActionDef, field: Field) -> String {
    match o {
        Operand::Param(p) => format!(
            "${}",
            def.params
                .get(*p as usize)
                .map(|p| p.name.as_str())
                .unwrap_or("?")
        ),
        Operand::Const(c) => field.fmt_value(*c),
    }
}

fn fmt_op(op: &Op, def: &ActionDef) -> String {
    match op {
        Op::Set { field, value } => format!("{field} = {}", fmt_operand(value, def, *field)),
        Op::Hash {
            fields,
            modulo,
            into,
        } => format!(
            "{into} = hash({}) % {}",
            fields
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(", "),
            fmt_operand(modulo, def, Field::Hash)
        ),
        Op::CtLookup => "ct_lookup".into(),
        Op::CtCommit => "ct_commit".into(),
        Op::Affinity { timeout } => format!("affinity({})", fmt_operand(timeout, def, Field::Hash)),
        Op::Drop => "drop".into(),
    }
}

/// Writes an action call: `a3(port=80, addr=10.0.0.1)`.
pub fn fmt_call(mag: &Mag, call: &ActionCall) -> String {
    let Some(def) = mag.action(call.action) else {
        return format!("{}(?)", call.action);
    };
    let args: Vec<String> = def
        .params
        .iter()
        .zip(call.args.iter())
        .map(|(p, a)| format!("{}={}", p.name, p.ty.fmt_value(*a)))
        .collect();
    format!("{}({})", call.action, args.join(", "))
}

/// Writes one entry's line (without the leading indent and id).
pub fn fmt_entry(mag: &Mag, t: &Table, e: &Entry) -> String {
    let mut s = format!("p{}", e.priority);
    for (k, m) in t.key.iter().zip(e.matches.iter()) {
        if let Some(m) = fmt_match(*k, m) {
            s.push(' ');
            s.push_str(&m);
        }
    }
    s.push_str(" -> ");
    s.push_str(&fmt_call(mag, &e.action));
    if !e.provenance.is_empty() {
        let provs: Vec<String> = e
            .provenance
            .iter()
            .map(|p| {
                mag.provenance
                    .get_index(p.0 as usize)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "?".into())
            })
            .collect();
        s.push_str(" @ ");
        s.push_str(&provs.join(" | "));
    }
    s
}

/// Prints the whole graph.
pub fn mag_to_text(mag: &Mag) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "mag node {}", mag.node);
    if let Some(s) = mag.start {
        let _ = writeln!(out, "start {s}");
    }
    for (i, a) in mag.actions.iter().enumerate() {
        let params: Vec<String> = a
            .params
            .iter()
            .map(|p| format!("{}: {}", p.name, p.ty))
            .collect();
        let ops: Vec<String> = a.ops.iter().map(|o| fmt_op(o, a)).collect();
        let body = if ops.is_empty() {
            "{}".to_string()
        } else {
            format!("{{ {} }}", ops.join("; "))
        };
        let _ = writeln!(
            out,
            "action {} {}({}) {body}",
            ActionId(i as u32),
            a.name,
            params.join(", ")
        );
    }
    for tid in mag.table_ids() {
        let t = &mag.graph[tid.0];
        let _ = writeln!(out, "table {tid} {}", t.name);
        let key: Vec<String> = t
            .key
            .iter()
            .map(|k| format!("{}:{}", k.field, k.kind.name()))
            .collect();
        if key.is_empty() {
            out.push_str("  key\n");
        } else {
            let _ = writeln!(out, "  key {}", key.join(" "));
        }
        let acts: Vec<String> = t.actions.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(out, "  actions {}", acts.join(" "));
        let _ = writeln!(out, "  default {}", fmt_call(mag, &t.default_action));
        let _ = writeln!(out, "  size {}", t.size_hint);
        for (on, to) in mag.edges_from(tid) {
            let on = on.map(|a| a.to_string()).unwrap_or_else(|| "*".into());
            let _ = writeln!(out, "  edge {on} -> {to}");
        }
        for (i, e) in t.entries.iter().enumerate() {
            let _ = writeln!(out, "  {} {}", EntryId(i as u32), fmt_entry(mag, t, e));
        }
    }
    out
}

/// A parse error: line number (1-based) and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// Line.
    pub line: usize,
    /// Message.
    pub message: String,
}

fn parse_id(s: &str, prefix: char) -> Option<u32> {
    s.strip_prefix(prefix)?.parse().ok()
}

fn parse_origin(s: &str) -> Option<Origin> {
    let parts: Vec<&str> = s.split('/').collect();
    let (kind, namespace, name) = match parts.as_slice() {
        [k, n] => (*k, None, *n),
        [k, ns, n] => (*k, Some(ns.to_string()), *n),
        _ => return None,
    };
    Some(Origin {
        kind: kind.into(),
        namespace,
        name: name.into(),
        span: None,
    })
}

fn parse_prov(s: &str) -> Option<Provenance> {
    if let Some(b) = s.strip_prefix("builtin:") {
        return Some(Provenance::Builtin(b.into()));
    }
    match s.split_once(' ') {
        None => parse_origin(s).map(Provenance::Object),
        Some((obj, rule)) => {
            let (section, idx) = rule.strip_suffix(']')?.split_once('[')?;
            Some(Provenance::Rule(RuleRef {
                origin: parse_origin(obj)?,
                section: section.into(),
                index: idx.parse().ok()?,
                name: None,
                path: FieldPath::default(),
                span: None,
            }))
        }
    }
}

fn parse_match(kind: MatchKind, field: Field, v: &str) -> Option<FieldMatch> {
    let w = field.width();
    if let Some((lo, hi)) = v.split_once("..=") {
        return Some(FieldMatch::Range {
            lo: field.parse_value(lo)?,
            hi: field.parse_value(hi)?,
        });
    }
    if let Some((val, mask)) = v.split_once("&&&") {
        return Some(FieldMatch::Ternary {
            value: field.parse_value(val)?,
            mask: field.parse_value(mask)?,
        });
    }
    if let Some((val, len)) = v.rsplit_once('/') {
        let len: u8 = len.parse().ok()?;
        let value = field.parse_value(val)?;
        return Some(match kind {
            MatchKind::Lpm => FieldMatch::Prefix { value, len },
            _ => FieldMatch::prefix_mask(value, u32::from(len), w),
        });
    }
    let v = field.parse_value(v)?;
    Some(match kind {
        MatchKind::Ternary => FieldMatch::Ternary {
            value: v,
            mask: field.max(),
        },
        _ => FieldMatch::Exact(v),
    })
}

struct Parser<'a> {
    mag: Mag,
    line: usize,
    names: BTreeMap<&'a str, ActionId>,
}

impl<'a> Parser<'a> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            message: message.into(),
        })
    }

    fn call(&self, s: &str) -> Result<ActionCall, ParseError> {
        let Some((id, rest)) = s.split_once('(') else {
            return self.err(format!("expected an action call, got `{s}`"));
        };
        let Some(action) = parse_id(id.trim(), 'a').map(ActionId) else {
            return self.err(format!("bad action id `{id}`"));
        };
        let Some(def) = self.mag.action(action) else {
            return self.err(format!("unknown action {action}"));
        };
        let inner = rest.trim_end().strip_suffix(')').unwrap_or(rest);
        let mut args = Vec::new();
        for (i, part) in inner.split(", ").filter(|p| !p.is_empty()).enumerate() {
            let value = part.split_once('=').map(|(_, v)| v).unwrap_or(part);
            let ty = def.params.get(i).map(|p| p.ty).unwrap_or(Field::Mark);
            match ty.parse_value(value) {
                Some(v) => args.push(v),
                None => return self.err(format!("bad argument `{part}`")),
            }
        }
        Ok(ActionCall {
            action,
            args: args.into(),
        })
    }

    fn operand(&self, s: &str, params: &[Param], field: Field) -> Result<Operand, ParseError> {
        if let Some(name) = s.strip_prefix('$') {
            match params.iter().position(|p| p.name == name) {
                Some(i) => Ok(Operand::Param(i as u8)),
                None => self.err(format!("unknown parameter `{name}`")),
            }
        } else {
            match field.parse_value(s) {
                Some(v) => Ok(Operand::Const(v)),
                None => self.err(format!("bad constant `{s}`")),
            }
        }
    }

    fn op(&self, s: &str, params: &[Param]) -> Result<Op, ParseError> {
        match s {
            "ct_lookup" => return Ok(Op::CtLookup),
            "ct_commit" => return Ok(Op::CtCommit),
            "drop" => return Ok(Op::Drop),
            _ => {}
        }
        if let Some(t) = s
            .strip_prefix("affinity(")
            .and_then(|t| t.strip_suffix(')'))
        {
            return Ok(Op::Affinity {
                timeout: self.operand(t, params, Field::Hash)?,
            });
        }
        let Some((lhs, rhs)) = s.split_once(" = ") else {
            return self.err(format!("bad operation `{s}`"));
        };
        let Some(field) = Field::parse(lhs) else {
            return self.err(format!("unknown field `{lhs}`"));
        };
        if let Some(h) = rhs.strip_prefix("hash(") {
            let Some((fields, modulo)) = h.split_once(") % ") else {
                return self.err("bad hash");
            };
            let mut fs = Vec::new();
            for f in fields.split(", ") {
                match Field::parse(f) {
                    Some(f) => fs.push(f),
                    None => return self.err(format!("unknown field `{f}`")),
                }
            }
            return Ok(Op::Hash {
                fields: fs,
                modulo: self.operand(modulo, params, Field::Hash)?,
                into: field,
            });
        }
        Ok(Op::Set {
            field,
            value: self.operand(rhs, params, field)?,
        })
    }

    fn action(&mut self, rest: &'a str) -> Result<(), ParseError> {
        let Some((id, rest)) = rest.split_once(' ') else {
            return self.err("bad action line");
        };
        if parse_id(id, 'a') != Some(self.mag.actions.len() as u32) {
            return self.err(format!("actions must be numbered in order, got `{id}`"));
        }
        let Some((name, rest)) = rest.split_once('(') else {
            return self.err("expected `(`");
        };
        let Some((params_s, body)) = rest.split_once(") ") else {
            return self.err("expected `) {`");
        };
        let mut params = Vec::new();
        for p in params_s.split(", ").filter(|p| !p.is_empty()) {
            let Some((n, ty)) = p.split_once(": ") else {
                return self.err(format!("bad parameter `{p}`"));
            };
            let Some(ty) = Field::parse(ty) else {
                return self.err(format!("unknown field `{ty}`"));
            };
            params.push(Param { name: n.into(), ty });
        }
        let body = body
            .trim()
            .strip_prefix('{')
            .and_then(|b| b.strip_suffix('}'))
            .unwrap_or("")
            .trim();
        let mut ops = Vec::new();
        for o in body.split("; ").filter(|o| !o.is_empty()) {
            ops.push(self.op(o.trim(), &params)?);
        }
        self.names
            .insert(name, ActionId(self.mag.actions.len() as u32));
        self.mag.actions.push(ActionDef {
            name: name.into(),
            params,
            ops,
        });
        Ok(())
    }

    fn entry(&mut self, table: TableId, line: &str) -> Result<(), ParseError> {
        let (line, prov) = match line.split_once(" @ ") {
            Some((l, p)) => (l, Some(p)),
            None => (line, None),
        };
        let Some((lhs, call)) = line.split_once(" -> ") else {
            return self.err("expected `->`");
        };
        let action = self.call(call)?;
        let mut words = lhs.split(' ');
        let _id = words.next();
        let Some(priority) = words
            .next()
            .and_then(|p| p.strip_prefix('p'))
            .and_then(|p| p.parse().ok())
        else {
            return self.err("expected a priority `pN`");
        };
        let key = self.mag.graph[table.0].key.clone();
        let mut matches = vec![FieldMatch::Any; key.len()];
        for w in words {
            let Some((f, v)) = w.split_once('=') else {
                return self.err(format!("bad match `{w}`"));
            };
            let Some(pos) = key.iter().position(|k| k.field.name() == f) else {
                return self.err(format!("`{f}` is not in the key"));
            };
            let k = key[pos];
            match parse_match(k.kind, k.field, v) {
                Some(m) => matches[pos] = m,
                None => return self.err(format!("bad value `{v}`")),
            }
        }
        let mut provenance = Vec::new();
        for p in prov.into_iter().flat_map(|p| p.split(" | ")) {
            match parse_prov(p) {
                Some(p) => provenance.push(self.mag.prov(p)),
                None => return self.err(format!("bad provenance `{p}`")),
            }
        }
        self.mag.graph[table.0].entries.push(Entry {
            priority,
            matches: matches.into(),
            action,
            provenance: provenance.into(),
        });
        Ok(())
    }
}

/// Reads the text form back into a graph (tests and tools; the compiler never needs it).
pub fn text_to_mag(text: &str) -> Result<Mag, ParseError> {
    let mut p = Parser {
        mag: Mag::default(),
        line: 0,
        names: BTreeMap::new(),
    };
    let mut current: Option<TableId> = None;
    let mut edges: Vec<(TableId, Option<ActionId>, u32, usize)> = Vec::new();
    let mut start = None;
    let mut placeholders = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        p.line = i + 1;
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(t) = line.strip_prefix("  ") {
            let Some(tid) = current else {
                return p.err("indented line outside a table");
            };
            let (word, rest) = t.split_once(' ').unwrap_or((t, ""));
            match word {
                "key" => {
                    let mut key = Vec::new();
                    for k in rest.split(' ').filter(|k| !k.is_empty()) {
                        let parsed = k.split_once(':').and_then(|(f, m)| {
                            Some(KeyField {
                                field: Field::parse(f)?,
                                kind: MatchKind::parse(m)?,
                            })
                        });
                        match parsed {
                            Some(kf) => key.push(kf),
                            None => return p.err(format!("bad key field `{k}`")),
                        }
                    }
                    p.mag.graph[tid.0].key = key;
                }
                "actions" => {
                    let mut acts = Vec::new();
                    for a in rest.split(' ').filter(|a| !a.is_empty()) {
                        match parse_id(a, 'a') {
                            Some(n) => acts.push(ActionId(n)),
                            None => return p.err(format!("bad action id `{a}`")),
                        }
                    }
                    p.mag.graph[tid.0].actions = acts;
                }
                "default" => {
                    let call = p.call(rest)?;
                    p.mag.graph[tid.0].default_action = call;
                }
                "size" => match rest.parse() {
                    Ok(n) => p.mag.graph[tid.0].size_hint = n,
                    Err(_) => return p.err("bad size"),
                },
                "edge" => {
                    let Some((on, to)) = rest.split_once(" -> ") else {
                        return p.err("bad edge");
                    };
                    let on = if on == "*" {
                        None
                    } else {
                        match parse_id(on, 'a') {
                            Some(n) => Some(ActionId(n)),
                            None => return p.err("bad edge action"),
                        }
                    };
                    let Some(to) = parse_id(to, 't') else {
                        return p.err("bad edge target");
                    };
                    edges.push((tid, on, to, p.line));
                }
                w if w.starts_with('e') => p.entry(tid, t)?,
                w => return p.err(format!("unexpected `{w}`")),
            }
            continue;
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "mag" => p.mag.node = rest.strip_prefix("node ").unwrap_or(rest).into(),
            "start" => start = parse_id(rest, 't'),
            "action" => p.action(rest)?,
            "table" => {
                let Some((id, name)) = rest.split_once(' ') else {
                    return p.err("bad table line");
                };
                let Some(n) = parse_id(id, 't') else {
                    return p.err(format!("bad table id `{id}`"));
                };
                let empty = Table {
                    name: name.into(),
                    key: vec![],
                    actions: vec![],
                    default_action: ActionCall {
                        action: ActionId(0),
                        args: Arc::new([]),
                    },
                    size_hint: 0,
                    entries: vec![],
                };
                // Ids with gaps (a graph that lost tables) are kept by adding and later
                // removing placeholder tables.
                while (p.mag.graph.node_count() + placeholders.len()) < n as usize {
                    let idx = p.mag.graph.add_node(Table {
                        name: String::new(),
                        ..empty.clone()
                    });
                    placeholders.push(idx);
                }
                let idx = p.mag.graph.add_node(empty);
                if idx.index() != n as usize {
                    return p.err(format!("tables must be numbered in order, got `{id}`"));
                }
                current = Some(TableId(idx));
            }
            w => return p.err(format!("unexpected `{w}`")),
        }
    }
    for idx in placeholders {
        p.mag.graph.remove_node(idx);
    }
    for (from, on, to, line) in edges {
        let to = NodeIndex::new(to as usize);
        if p.mag.graph.node_weight(to).is_none() {
            return Err(ParseError {
                line,
                message: format!("unknown table t{}", to.index()),
            });
        }
        p.mag.graph.add_edge(from.0, to, Edge { on });
    }
    p.mag.start = start.map(|s| TableId(NodeIndex::new(s as usize)));
    let _ = &p.names;
    Ok(p.mag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_a_small_graph() {
        let text = "\
mag node n1
start t0
action a0 pass() {}
action a1 from_endpoint(ep: meta.endpoint, id: meta.src_identity) { meta.endpoint = $ep; meta.src_identity = $id }
action a2 deny() { drop }
action a3 lb(svc: meta.service, m: meta.hash) { meta.service = $svc; meta.hash = hash(ipv4.src, l4.sport) % $m; ct_lookup }
table t0 classify
  key in_port:exact
  actions a1 a0
  default a2()
  size 4
  edge a1 -> t1
  e0 p0 in_port=2 -> a1(ep=2, id=256) @ Pod/default/tiefighter
table t1 policy
  key meta.endpoint:exact ipv4.dst:ternary l4.dport:ternary ip.proto:range
  actions a0 a2 a3
  default a2()
  size 8
  edge * -> t2
  e0 p2 meta.endpoint=2 ipv4.dst=10.0.0.0/8 l4.dport=80 -> a0() @ CiliumNetworkPolicy/default/rule1 ingress[0] | builtin:default deny
  e1 p1 meta.endpoint=2 l4.dport=16&&&0x11 ip.proto=6..=17 -> a3(svc=1, m=7) @ NetworkPolicy/x
table t2 lpm
  key ipv6.dst:lpm
  actions a0
  default a0()
  size 1
  e0 p0 ipv6.dst=fd00::/8 -> a0()
";
        let mag = text_to_mag(text).unwrap();
        validate(&mag).unwrap();
        assert_eq!(mag_to_text(&mag), text);
    }

    #[test]
    fn errors_name_the_line() {
        let err = text_to_mag("mag node x\ntable t0 a\n  key nope:exact\n").unwrap_err();
        insta::assert_snapshot!(err, @"line 3: bad key field `nope:exact`");
    }
}
