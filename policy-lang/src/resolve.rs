//! The resolver: parsed files → [`crate::resolved::Program`].
//!
//! It reads includes through the caller's [`Loader`], then checks every name, selector,
//! CIDR, port, target profile and placement hint, collecting all diagnostics of all files
//! before it gives up, so one run reports every error.

use crate::ast::{self, Item, Stmt};
use crate::diagnostics::{self, *};
use crate::resolved::*;
use crate::source::{join_include, Loader, SourceSet};
use crate::span::{FileId, Span};
use crate::targets::{self, Limit, MaskKind, MatchKind, TargetProfile};
use crate::vocab;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Parses the root files and everything they include, and resolves the whole program.
///
/// The roots must already be in `files`; included files are added to it as they are read,
/// so that the caller can render the diagnostics afterwards. An include is taken from
/// `files` only when a root or an earlier include of this call has its path: the set may
/// hold other files (a caller's manifests, or an older text of a file that a session read
/// again), and those must not stand in for what the loader reads now. On success the program carries
/// its warnings; on failure every diagnostic (errors and warnings) is returned, sorted by
/// file and position.
pub fn resolve(
    files: &mut SourceSet,
    roots: &[FileId],
    loader: &mut dyn Loader,
) -> Result<Program, Vec<Diagnostic>> {
    let mut loaded = Loaded::default();
    for &root in roots {
        if let Some(source) = files.get(root) {
            loaded.by_name.entry(source.name.clone()).or_insert(root);
        }
    }
    for &root in roots {
        let mut stack = Vec::new();
        load(files, root, loader, &mut stack, &mut loaded);
    }
    let mut r = Resolver {
        files,
        diags: loaded.diags,
        partial_items: loaded.partial_items,
        lost_names: loaded.lost_names,
        policies: Vec::new(),
        targets: BTreeMap::new(),
        damaged_targets: BTreeSet::new(),
        unknown_capacities: BTreeSet::new(),
        placements: Vec::new(),
    };
    r.program(&loaded.items);
    let Resolver {
        mut diags,
        mut policies,
        targets,
        placements,
        ..
    } = r;
    diagnostics::sort(&mut diags);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    policies.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    Ok(Program {
        policies,
        targets,
        placements,
        warnings: diags,
    })
}

/// What the files of a program hold, read by [`load`].
#[derive(Default)]
struct Loaded {
    /// The files already read.
    done: BTreeSet<FileId>,
    /// The roots and the included files of this call, by name: where includes are found.
    by_name: BTreeMap<String, FileId>,
    /// Their items, but includes.
    items: Vec<Stmt<Item>>,
    /// The diagnostics found while reading them.
    diags: Vec<Diagnostic>,
    /// The spans of the items that a syntax error cut short.
    partial_items: BTreeSet<Span>,
    /// The names that items lost to syntax errors may have defined.
    lost_names: BTreeSet<String>,
}

/// Parses `file`, then the files it includes (depth first), appending their items.
///
/// After a syntax error the items that did parse are kept, so that their own errors are
/// reported in the same run; [`Loaded`] records what was lost, so that the resolver does
/// not report its consequences as errors of their own.
fn load(
    files: &mut SourceSet,
    file: FileId,
    loader: &mut dyn Loader,
    stack: &mut Vec<String>,
    out: &mut Loaded,
) {
    if !out.done.insert(file) {
        return;
    }
    let Some(source) = files.get(file) else {
        return;
    };
    let name = source.name.clone();
    let parsed = crate::parser::parse_recovering(file, &source.text);
    out.diags.extend(parsed.diags);
    out.partial_items.extend(parsed.partial_items);
    out.lost_names.extend(parsed.lost_names);
    stack.push(name.clone());
    for item in parsed.file.items {
        let Item::Include(inc) = &item.node else {
            out.items.push(item);
            continue;
        };
        if inc.value.is_empty() {
            out.diags.push(empty_name::new("include path", inc.span));
            continue;
        }
        let path = join_include(&name, &inc.value);
        if let Some(pos) = stack.iter().position(|s| *s == path) {
            let mut chain = stack[pos..].to_vec();
            chain.push(path);
            out.diags.push(include_cycle::new(inc, &chain));
            continue;
        }
        let id = match out.by_name.get(&path) {
            Some(&id) => id,
            None => match loader.load(&path) {
                Ok(text) => {
                    let id = files.add(path.clone(), text);
                    out.by_name.insert(path.clone(), id);
                    id
                }
                Err(reason) => {
                    out.diags.push(include_failed::new(inc, &path, &reason));
                    continue;
                }
            },
        };
        load(files, id, loader, stack, out);
    }
    stack.pop();
}

struct Resolver<'f> {
    files: &'f SourceSet,
    diags: Vec<Diagnostic>,
    /// Items cut short by a syntax error: what they lack is not reported again.
    partial_items: BTreeSet<Span>,
    /// Names that items lost to a syntax error may have defined: references to them are
    /// not reported as unknown.
    lost_names: BTreeSet<String>,
    policies: Vec<Policy>,
    targets: BTreeMap<String, TargetProfile>,
    /// The user targets cut short by a syntax error.
    damaged_targets: BTreeSet<String>,
    /// The capacities of those targets that no statement of theirs that parsed states:
    /// the statement lost may have stated them.
    unknown_capacities: BTreeSet<(String, Resource)>,
    placements: Vec<Placement>,
}

impl Resolver<'_> {
    fn origin(&self, span: Span) -> Origin {
        Origin {
            file: self.files.name(span.file).to_string(),
            line: self.files.line_col(span).line,
        }
    }

    fn program(&mut self, items: &[Stmt<Item>]) {
        for p in targets::PRESETS {
            self.targets
                .insert(p.name.to_string(), TargetProfile::from_preset(p));
        }
        let user_targets: BTreeSet<String> = items
            .iter()
            .filter_map(|i| match &i.node {
                Item::Target(t) => Some(t.name.value.clone()),
                _ => None,
            })
            .collect();
        let mut target_spans: BTreeMap<String, Span> = BTreeMap::new();
        for item in items {
            if let Item::Target(t) = &item.node {
                if t.name.value.is_empty() {
                    self.diags.push(empty_name::new("target", t.name.span));
                    continue;
                }
                if targets::preset(&t.name.value).is_some() {
                    self.diags.push(duplicate_definition::shadows_preset(
                        &t.name.value,
                        t.name.span,
                    ));
                    continue;
                }
                if let Some(first) = target_spans.get(&t.name.value) {
                    self.diags.push(duplicate_definition::new(
                        "target",
                        &t.name.value,
                        t.name.span,
                        *first,
                    ));
                    continue;
                }
                target_spans.insert(t.name.value.clone(), t.name.span);
                if self.partial_items.contains(&item.span) {
                    self.note_damaged_target(t);
                }
                let profile = self.target(t, &user_targets);
                self.targets.insert(t.name.value.clone(), profile);
            }
        }
        let mut policy_spans: BTreeMap<String, Span> = BTreeMap::new();
        let mut priorities: BTreeMap<u32, (String, Span)> = BTreeMap::new();
        for item in items {
            if let Item::Policy(p) = &item.node {
                let Some(policy) = self.policy(p, item.span) else {
                    continue;
                };
                if let Some(first) = policy_spans.get(&policy.name) {
                    self.diags.push(duplicate_definition::new(
                        "policy",
                        &policy.name,
                        p.name.span,
                        *first,
                    ));
                    continue;
                }
                policy_spans.insert(policy.name.clone(), p.name.span);
                if let Some((other, other_span)) = priorities.get(&policy.priority) {
                    self.diags.push(shared_priority::new(
                        policy.priority,
                        &policy.name,
                        p.priority.span,
                        other,
                        *other_span,
                    ));
                } else {
                    priorities.insert(policy.priority, (policy.name.clone(), p.priority.span));
                }
                self.policies.push(policy);
            }
        }
        // Placement hints may name any policy of the program, even one with errors of its
        // own: those errors are reported already.
        let policy_names: BTreeSet<String> = items
            .iter()
            .filter_map(|i| match &i.node {
                Item::Policy(p) => Some(p.name.value.clone()),
                _ => None,
            })
            .collect();
        let mut state = PlacementState::default();
        for item in items {
            if let Item::Placement(pl) = &item.node {
                for stmt in &pl.body {
                    self.placement(stmt, &policy_names, &mut state);
                }
            }
        }
    }

    /// Records a target cut short by a syntax error, and the capacities it may have lost.
    fn note_damaged_target(&mut self, t: &ast::Target) {
        self.damaged_targets.insert(t.name.value.clone());
        for res in [Resource::Entries, Resource::Counters, Resource::Sas] {
            let stated = t.body.iter().any(|s| {
                matches!(
                    (&s.node, res),
                    (ast::TargetStmt::Entries(_), Resource::Entries)
                        | (ast::TargetStmt::Counters(_), Resource::Counters)
                        | (ast::TargetStmt::SaLimit(_), Resource::Sas)
                )
            });
            if !stated {
                self.unknown_capacities.insert((t.name.value.clone(), res));
            }
        }
    }

    // ---- Numbers ----

    fn u32_of(&mut self, word: &ast::Word, what: &str) -> Option<u32> {
        match word.text.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.diags
                    .push(invalid_number::new(word, what, u64::from(u32::MAX)));
                None
            }
        }
    }

    fn limit(&mut self, l: &ast::Limit, what: &str) -> Option<Limit> {
        match &l.value {
            None => Some(Limit::Unlimited),
            Some(w) => self.u32_of(w, what).map(Limit::Finite),
        }
    }

    // ---- Policies ----

    fn policy(&mut self, p: &ast::Policy, span: Span) -> Option<Policy> {
        if p.name.value.is_empty() {
            self.diags.push(empty_name::new("policy", p.name.span));
        }
        let priority = match self.u32_of(&p.priority, "priority") {
            Some(n) if n > priority_out_of_range::MAX_PRIORITY => {
                self.diags.push(priority_out_of_range::new(&p.priority));
                n
            }
            Some(n) => n,
            None => 0,
        };
        let mut subject: Option<(Subject, Span)> = None;
        let mut rules = Vec::new();
        let mut rule_names: BTreeMap<String, Span> = BTreeMap::new();
        for stmt in &p.body {
            match &stmt.node {
                ast::PolicyStmt::Subject(peer) => {
                    let s = self.subject(peer);
                    if let Some((_, first)) = &subject {
                        self.diags
                            .push(duplicate_clause::new("`subject`", stmt.span, *first));
                    } else {
                        subject = Some((s, stmt.span));
                    }
                }
                ast::PolicyStmt::Rule(rule) => {
                    let index = rules.len() + 1;
                    if let Some(r) = self.rule(rule, stmt.span, index) {
                        if let Some(first) = rule_names.get(&r.name) {
                            self.diags
                                .push(duplicate_rule_name::new(&r.name, stmt.span, *first));
                        } else {
                            rule_names.insert(r.name.clone(), stmt.span);
                        }
                        rules.push(r);
                    }
                }
            }
        }
        let Some((subject, _)) = subject else {
            // In a policy cut short by a syntax error, the subject may be what was lost.
            if !self.partial_items.contains(&span) {
                self.diags
                    .push(missing_subject::new(&p.name.value, p.name.span));
            }
            return None;
        };
        Some(Policy {
            name: p.name.value.clone(),
            priority,
            span,
            origin: self.origin(span),
            subject,
            rules,
        })
    }

    fn subject(&mut self, peer: &ast::Peer) -> Subject {
        match peer {
            ast::Peer::Pods {
                pods, namespaces, ..
            } => Subject {
                namespaces: namespaces
                    .as_ref()
                    .map(|n| self.selector(n))
                    .unwrap_or_default(),
                pods: Some(self.selector(pods)),
            },
            ast::Peer::Namespaces { namespaces, .. } => Subject {
                namespaces: self.selector(namespaces),
                pods: None,
            },
            // The grammar only allows the two forms above in a subject.
            _ => Subject {
                namespaces: Selector::default(),
                pods: None,
            },
        }
    }

    fn rule(&mut self, rule: &ast::Rule, span: Span, index: usize) -> Option<Rule> {
        let (dir, dir_span) = rule.direction;
        let direction = dir;
        let dir_name = match dir {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        let action = match rule.action.text.as_str() {
            "allow" => Some(Action::Allow),
            "deny" => Some(Action::Deny),
            "pass" => Some(Action::Pass),
            "log" => Some(Action::Log),
            "redirect-to-proxy" => Some(Action::Redirect),
            _ => {
                self.diags.push(unknown_rule_action::new(&rule.action));
                None
            }
        };
        let name = match &rule.name {
            Some(n) if n.value.is_empty() => {
                self.diags.push(empty_name::new("rule", n.span));
                format!("rule-{index}")
            }
            Some(n) => n.value.clone(),
            None => format!("rule-{index}"),
        };
        let mut peers_clause: Option<Span> = None;
        let mut ports_clause: Option<Span> = None;
        let mut peers = Vec::new();
        let mut ports = Vec::new();
        for clause in &rule.clauses {
            match clause {
                ast::Clause::Peers {
                    keyword: (kw, kw_span),
                    peers: list,
                    span,
                } => {
                    if let Some(first) = peers_clause {
                        let what = if dir == ast::Direction::Ingress {
                            "`from`"
                        } else {
                            "`to`"
                        };
                        self.diags.push(duplicate_clause::new(what, *span, first));
                    }
                    peers_clause.get_or_insert(*span);
                    let right = match dir {
                        ast::Direction::Ingress => ast::PeerKeyword::From,
                        ast::Direction::Egress => ast::PeerKeyword::To,
                    };
                    if *kw != right {
                        let used = if *kw == ast::PeerKeyword::From {
                            "from"
                        } else {
                            "to"
                        };
                        self.diags.push(wrong_peer_direction::new(
                            used, *kw_span, dir_name, dir_span,
                        ));
                    }
                    for p in list {
                        if let Some(p) = self.peer(p) {
                            peers.push(p);
                        }
                    }
                }
                ast::Clause::Ports { ports: list, span } => {
                    if let Some(first) = ports_clause {
                        self.diags
                            .push(duplicate_clause::new("`ports`", *span, first));
                    }
                    ports_clause.get_or_insert(*span);
                    for p in list {
                        if let Some(p) = self.port(p) {
                            ports.push(p);
                        }
                    }
                }
            }
        }
        if peers_clause.is_none() {
            self.diags.push(rule_without_peers::new(dir_name, span));
        }
        Some(Rule {
            name,
            direction,
            action: action?,
            peers,
            ports,
            span,
            origin: self.origin(span),
        })
    }

    fn peer(&mut self, peer: &ast::Peer) -> Option<Peer> {
        Some(match peer {
            ast::Peer::Pods {
                pods, namespaces, ..
            } => Peer::Pods {
                namespaces: namespaces
                    .as_ref()
                    .map(|n| self.selector(n))
                    .unwrap_or_default(),
                pods: self.selector(pods),
            },
            ast::Peer::Namespaces { namespaces, .. } => Peer::Namespaces(self.selector(namespaces)),
            ast::Peer::Cidr { cidr, except, .. } => {
                let net = self.cidr(cidr)?;
                let mut out = Vec::new();
                for e in except {
                    let Some(en) = self.cidr(e) else { continue };
                    if en == net {
                        self.diags.push(except_covers_cidr::new(e, cidr));
                    } else if net.contains(&en) {
                        out.push(en);
                    } else {
                        self.diags.push(except_outside_cidr::new(e, cidr));
                    }
                }
                Peer::Cidr {
                    cidr: net,
                    except: out,
                }
            }
            ast::Peer::Entity(w) => {
                if !vocab::ENTITIES.contains(&w.text.as_str()) {
                    self.diags.push(unknown_entity::new(w));
                    return None;
                }
                Peer::Entity(w.text.clone())
            }
            ast::Peer::Service(s) => {
                let (namespace, name) = self.service_name(s)?;
                Peer::Service { namespace, name }
            }
        })
    }

    fn cidr(&mut self, w: &ast::Word) -> Option<IpNet> {
        let parsed = if w.text.contains('/') {
            w.text.parse::<IpNet>().ok()
        } else {
            w.text.parse::<IpAddr>().ok().map(IpNet::from)
        };
        let Some(net) = parsed else {
            self.diags.push(invalid_cidr::new(w));
            return None;
        };
        let trunc = net.trunc();
        if trunc != net {
            self.diags.push(cidr_host_bits::new(w, &trunc.to_string()));
        }
        Some(trunc)
    }

    fn service_name(&mut self, s: &ast::Str) -> Option<(String, String)> {
        let Some((ns, name)) = s.value.split_once('/') else {
            self.diags
                .push(invalid_service_name::new(s, "expected `namespace/name`"));
            return None;
        };
        for part in [ns, name] {
            if let Err(reason) = dns_label(part) {
                self.diags.push(invalid_service_name::new(s, &reason));
                return None;
            }
        }
        Some((ns.to_string(), name.to_string()))
    }

    fn port(&mut self, p: &ast::PortItem) -> Option<PortSpec> {
        let protocol = match p.protocol.text.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            "any" => Protocol::Any,
            _ => {
                self.diags.push(unknown_protocol::new(&p.protocol));
                return None;
            }
        };
        let ports = match &p.port {
            None => Ports::All,
            Some(ast::PortValue::Number(n)) => Ports::Number(self.port_number(n)?),
            Some(ast::PortValue::Range(a, b)) => {
                let (a_n, b_n) = (self.port_number(a), self.port_number(b));
                let (a_n, b_n) = (a_n?, b_n?);
                if a_n > b_n {
                    self.diags.push(invalid_port::new(
                        a.span.to(b.span),
                        format!("port range {a_n}-{b_n} is reversed"),
                        "the first port must not be above the last",
                    ));
                    return None;
                }
                Ports::Range(a_n, b_n)
            }
            Some(ast::PortValue::Named(w)) => {
                if vocab::PROTOCOLS.contains(&w.text.as_str()) {
                    self.diags.push(protocol_as_port_name::new(&p.protocol, w));
                    return None;
                }
                if let Err(reason) = port_name(&w.text) {
                    self.diags.push(invalid_named_port::new(w, reason));
                    return None;
                }
                Ports::Named(w.text.clone())
            }
        };
        Some(PortSpec { protocol, ports })
    }

    fn port_number(&mut self, w: &ast::Word) -> Option<u16> {
        match w.text.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.diags.push(invalid_port::new(
                    w.span,
                    format!("port {} is out of range", w.text),
                    "not a port number",
                ));
                None
            }
        }
    }

    fn selector(&mut self, sel: &ast::Selector) -> Selector {
        self.contradictions(sel);
        let mut out = Selector::default();
        let mut eq_spans: BTreeMap<String, Span> = BTreeMap::new();
        for e in &sel.exprs {
            if let Err(reason) = label_key(&e.key.text) {
                self.diags.push(invalid_label::new(
                    e.key.span,
                    format!("`{}` is not a valid label key", e.key.text),
                    &reason,
                ));
                continue;
            }
            let key = e.key.text.clone();
            let values = |r: &mut Self, list: &[ast::Str], op: &str| -> Vec<String> {
                if list.is_empty() {
                    r.diags.push(invalid_label::new(
                        e.span,
                        format!("`{op}` needs at least one value"),
                        "empty set of values",
                    ));
                }
                list.iter()
                    .filter(|v| r.check_value(v))
                    .map(|v| v.value.clone())
                    .collect()
            };
            match &e.op {
                ast::SelOp::Eq(v) => {
                    if let Some(first) = eq_spans.get(&key) {
                        self.diags.push(
                            invalid_label::new(
                                e.span,
                                format!("label `{key}` is matched twice"),
                                "second match of this label",
                            )
                            .also(*first, "first match")
                            .hint("to accept several values, write `key in [\"a\", \"b\"]`"),
                        );
                        continue;
                    }
                    eq_spans.insert(key.clone(), e.span);
                    if self.check_value(v) {
                        out.match_labels.insert(key, v.value.clone());
                    }
                }
                ast::SelOp::In(list) => {
                    let values = values(self, list, "in");
                    out.expressions.push(Requirement {
                        key,
                        op: SelectorOp::In,
                        values,
                    });
                }
                ast::SelOp::NotIn(list) => {
                    let values = values(self, list, "not in");
                    out.expressions.push(Requirement {
                        key,
                        op: SelectorOp::NotIn,
                        values,
                    });
                }
                ast::SelOp::Exists => out.expressions.push(Requirement {
                    key,
                    op: SelectorOp::Exists,
                    values: Vec::new(),
                }),
                ast::SelOp::NotExists => out.expressions.push(Requirement {
                    key,
                    op: SelectorOp::DoesNotExist,
                    values: Vec::new(),
                }),
            }
        }
        out
    }

    /// Reports each requirement that contradicts an earlier one on the same key. Keys that
    /// are not valid label keys are reported (and dropped) on their own.
    fn contradictions(&mut self, sel: &ast::Selector) {
        let valid: Vec<&ast::SelExpr> = sel
            .exprs
            .iter()
            .filter(|e| label_key(&e.key.text).is_ok())
            .collect();
        for (j, second) in valid.iter().enumerate() {
            let first = valid[..j]
                .iter()
                .find(|f| f.key.text == second.key.text && contradict(&f.op, &second.op));
            if let Some(first) = first {
                self.diags.push(contradictory_selector::new(first, second));
            }
        }
    }

    fn check_value(&mut self, v: &ast::Str) -> bool {
        match label_value(&v.value) {
            Ok(()) => true,
            Err(reason) => {
                self.diags.push(invalid_label::new(
                    v.span,
                    format!("{:?} is not a valid label value", v.value),
                    &reason,
                ));
                false
            }
        }
    }

    // ---- Targets ----

    fn target(&mut self, t: &ast::Target, user_targets: &BTreeSet<String>) -> TargetProfile {
        let mut profile = TargetProfile::empty(&t.name.value);
        if let Some(ext) = &t.extends {
            match targets::preset(&ext.value) {
                Some(p) => {
                    profile = TargetProfile::from_preset(p);
                    profile.builtin = false;
                    profile.name = t.name.value.clone();
                    profile.extends = Some(p.name.to_string());
                }
                None => self
                    .diags
                    .push(unknown_preset::new(ext, user_targets.contains(&ext.value))),
            }
        }
        let mut seen: BTreeMap<&'static str, Span> = BTreeMap::new();
        let mut levels_span = t.name.span;
        for stmt in &t.body {
            let mut once = |r: &mut Self, what: &'static str| {
                if let Some(first) = seen.get(what) {
                    r.diags.push(duplicate_clause::new(what, stmt.span, *first));
                } else {
                    seen.insert(what, stmt.span);
                }
            };
            match &stmt.node {
                ast::TargetStmt::Match(specs) => {
                    for s in specs {
                        if let Some((f, m)) = self.field_spec(s) {
                            profile.fields.insert(f, m);
                        }
                    }
                }
                ast::TargetStmt::Kinds(words) => {
                    for w in words {
                        if let Some(k) = self.match_kind(w) {
                            profile.kinds.insert(k);
                        }
                    }
                }
                ast::TargetStmt::Actions(words) => {
                    for w in words {
                        if self.action(w) {
                            profile.actions.insert(w.text.clone());
                        }
                    }
                }
                ast::TargetStmt::PriorityLevels { levels, max } => {
                    once(self, "`priority levels`");
                    levels_span = stmt.span;
                    if let Some(l) = self.limit(levels, "priority level count") {
                        profile.priority_levels = l;
                    }
                    if let Some(m) = max
                        .as_ref()
                        .and_then(|m| self.limit(m, "priority level count"))
                    {
                        profile.max_priority_levels = m;
                    } else if max.is_none() && t.extends.is_none() {
                        profile.max_priority_levels = profile.priority_levels;
                    }
                }
                ast::TargetStmt::Entries(l) => {
                    once(self, "`entries`");
                    if let Some(l) = self.limit(l, "entry count") {
                        profile.entries = l;
                    }
                }
                ast::TargetStmt::Counters(l) => {
                    once(self, "`counters`");
                    if let Some(l) = self.limit(l, "counter count") {
                        profile.counters = l;
                    }
                }
                ast::TargetStmt::SaLimit(l) => {
                    once(self, "`sa limit`");
                    if let Some(l) = self.limit(l, "SA count") {
                        profile.sa_limit = l;
                    }
                }
                ast::TargetStmt::CostPerEntry(w) => {
                    once(self, "`cost per entry`");
                    if let Some(n) = self.u32_of(w, "cost") {
                        profile.cost_per_entry = n;
                    }
                }
                ast::TargetStmt::Remove { what, names } => {
                    for w in names {
                        self.remove(&mut profile, *what, w);
                    }
                }
            }
        }
        let bad_levels = match (profile.priority_levels, profile.max_priority_levels) {
            (Limit::Finite(0), _) => Some("a target needs at least one priority level".to_string()),
            (Limit::Finite(l), Limit::Finite(m)) if l > m => {
                Some(format!("{l} priority levels, but the maximum is {m}"))
            }
            (Limit::Unlimited, Limit::Finite(m)) => {
                Some(format!("unlimited priority levels, but the maximum is {m}"))
            }
            _ => None,
        };
        if let Some(msg) = bad_levels {
            self.diags
                .push(invalid_priority_levels::new(levels_span, msg));
        }
        profile
    }

    fn field_spec(&mut self, s: &ast::FieldSpec) -> Option<(String, MaskKind)> {
        let field_ok = vocab::FIELDS.contains(&s.field.text.as_str());
        if !field_ok {
            self.diags.push(unknown_field::new(&s.field));
        }
        let mask = match &s.mask {
            None => MaskKind::Exact,
            Some(m) => match MaskKind::from_name(&m.text) {
                Some(MaskKind::Prefix)
                    if field_ok && !vocab::ADDRESS_FIELDS.contains(&s.field.text.as_str()) =>
                {
                    self.diags
                        .push(invalid_mask::prefix_on_non_address(m, &s.field));
                    return None;
                }
                Some(k) => k,
                None => {
                    self.diags.push(invalid_mask::unknown(m));
                    return None;
                }
            },
        };
        field_ok.then(|| (s.field.text.clone(), mask))
    }

    fn match_kind(&mut self, w: &ast::Word) -> Option<MatchKind> {
        let k = MatchKind::from_name(&w.text);
        if k.is_none() {
            self.diags.push(unknown_match_kind::new(w));
        }
        k
    }

    fn action(&mut self, w: &ast::Word) -> bool {
        let ok = vocab::ACTIONS.contains(&w.text.as_str());
        if !ok {
            self.diags.push(unknown_action::new(w));
        }
        ok
    }

    fn remove(&mut self, profile: &mut TargetProfile, what: ast::RemoveWhat, w: &ast::Word) {
        let removed = match what {
            ast::RemoveWhat::Match => {
                if !vocab::FIELDS.contains(&w.text.as_str()) {
                    self.diags.push(unknown_field::new(w));
                    return;
                }
                profile.fields.remove(&w.text).is_some()
            }
            ast::RemoveWhat::Kinds => match self.match_kind(w) {
                Some(k) => profile.kinds.remove(&k),
                None => return,
            },
            ast::RemoveWhat::Actions => {
                if !self.action(w) {
                    return;
                }
                profile.actions.remove(&w.text)
            }
        };
        // In a target cut short by a syntax error, the statement that would have added the
        // name may be the one lost.
        if !removed && !self.damaged_targets.contains(&profile.name) {
            let list = match what {
                ast::RemoveWhat::Match => "fields",
                ast::RemoveWhat::Kinds => "match kinds",
                ast::RemoveWhat::Actions => "actions",
            };
            self.diags.push(remove_absent::new(w, list));
        }
    }

    // ---- Placement ----

    fn place_subject(
        &mut self,
        s: &ast::PlaceSubject,
        policies: &BTreeSet<String>,
    ) -> Option<PlaceSubject> {
        if s.name.value.is_empty() {
            self.diags
                .push(empty_name::new("placement subject", s.name.span));
            return None;
        }
        match s.kind {
            ast::PlaceKind::Policy => {
                if !policies.contains(&s.name.value) {
                    if !self.lost_names.contains(&s.name.value) {
                        self.diags.push(unknown_policy::new(
                            &s.name,
                            policies.iter().map(String::as_str),
                        ));
                    }
                    return None;
                }
                Some(PlaceSubject::Policy(s.name.value.clone()))
            }
            ast::PlaceKind::Service => {
                let (namespace, name) = self.service_name(&s.name)?;
                Some(PlaceSubject::Service { namespace, name })
            }
            ast::PlaceKind::Table => Some(PlaceSubject::Table(s.name.value.clone())),
        }
    }

    fn target_name(&mut self, t: &ast::Str) -> Option<String> {
        if self.targets.contains_key(&t.value) {
            Some(t.value.clone())
        } else if self.lost_names.contains(&t.value) {
            None
        } else {
            let known: Vec<String> = self.targets.keys().cloned().collect();
            self.diags
                .push(unknown_target::new(t, known.iter().map(String::as_str)));
            None
        }
    }

    fn is_software(&self, target: &str) -> bool {
        self.targets
            .get(target)
            .is_some_and(|p| p.name == "ebpf" || p.extends.as_deref() == Some("ebpf"))
    }

    fn placement(
        &mut self,
        stmt: &Stmt<ast::PlacementStmt>,
        policies: &BTreeSet<String>,
        state: &mut PlacementState,
    ) {
        let span = stmt.span;
        let (subject, hint) = match &stmt.node {
            ast::PlacementStmt::Pin { subject, target } => {
                let s = self.place_subject(subject, policies);
                let t = self.target_name(target);
                let (Some(s), Some(t)) = (s, t) else { return };
                (s, Hint::Pin { target: t })
            }
            ast::PlacementStmt::Prefer { subject, target } => {
                let s = self.place_subject(subject, policies);
                let t = self.target_name(target);
                let (Some(s), Some(t)) = (s, t) else { return };
                (s, Hint::Prefer { target: t })
            }
            ast::PlacementStmt::Reserve {
                amount,
                resource,
                target,
                subject,
            } => {
                let s = self.place_subject(subject, policies);
                let t = self.target_name(target);
                let res = match resource.text.as_str() {
                    "entries" => Some(Resource::Entries),
                    "counters" => Some(Resource::Counters),
                    "sas" => Some(Resource::Sas),
                    _ => {
                        self.diags.push(unknown_resource::new(resource));
                        None
                    }
                };
                let n = self.u32_of(amount, "amount");
                let (Some(s), Some(t), Some(res), Some(n)) = (s, t, res, n) else {
                    return;
                };
                let total = state.reserved.entry((t.clone(), res)).or_insert(0);
                *total += u64::from(n);
                let total = *total;
                let unknown = self.unknown_capacities.contains(&(t.clone(), res));
                if let Some(profile) = self.targets.get(&t).filter(|_| !unknown) {
                    let cap = match res {
                        Resource::Entries => profile.entries,
                        Resource::Counters => profile.counters,
                        Resource::Sas => profile.sa_limit,
                    };
                    if let Limit::Finite(c) = cap {
                        if total > u64::from(c) {
                            let name = resource.text.clone();
                            self.diags.push(reserve_over_capacity::new(
                                amount.span,
                                total,
                                &name,
                                &t,
                                c,
                            ));
                        }
                    }
                }
                (
                    s,
                    Hint::Reserve {
                        target: t,
                        resource: res,
                        amount: n,
                    },
                )
            }
            ast::PlacementStmt::Exclude { subject } => {
                let Some(s) = self.place_subject(subject, policies) else {
                    return;
                };
                (s, Hint::ExcludeFromHardware)
            }
        };
        let what = describe_subject(&subject);
        let entry = state.by_subject.entry(subject.clone()).or_default();
        match &hint {
            Hint::Pin { target } => {
                if let Some((other, first)) = &entry.pinned {
                    if other != target {
                        self.diags
                            .push(conflicting_placement::new(&what, span, *first));
                    }
                } else {
                    entry.pinned = Some((target.clone(), span));
                }
            }
            Hint::ExcludeFromHardware => {
                if let Some(first) = entry.on_hardware {
                    self.diags
                        .push(conflicting_placement::new(&what, span, first));
                }
                entry.excluded.get_or_insert(span);
            }
            Hint::Prefer { .. } | Hint::Reserve { .. } => {}
        }
        let hw_target = match &hint {
            Hint::Pin { target } | Hint::Prefer { target } | Hint::Reserve { target, .. } => {
                Some(target.clone())
            }
            Hint::ExcludeFromHardware => None,
        };
        if let Some(t) = hw_target {
            if !self.is_software(&t) {
                let entry = state.by_subject.entry(subject.clone()).or_default();
                if let Some(first) = entry.excluded {
                    self.diags
                        .push(conflicting_placement::new(&what, span, first));
                }
                entry.on_hardware.get_or_insert(span);
            }
        }
        self.placements.push(Placement {
            subject,
            hint,
            span,
        });
    }
}

#[derive(Default)]
struct PlacementState {
    by_subject: BTreeMap<PlaceSubject, SubjectHints>,
    reserved: BTreeMap<(String, Resource), u64>,
}

#[derive(Default)]
struct SubjectHints {
    pinned: Option<(String, Span)>,
    excluded: Option<Span>,
    on_hardware: Option<Span>,
}

fn describe_subject(s: &PlaceSubject) -> String {
    match s {
        PlaceSubject::Policy(n) => format!("policy `{n}`"),
        PlaceSubject::Service { namespace, name } => format!("service `{namespace}/{name}`"),
        PlaceSubject::Table(n) => format!("table `{n}`"),
    }
}

/// Whether two requirements on one label key can never hold together.
fn contradict(a: &ast::SelOp, b: &ast::SelOp) -> bool {
    excludes(a, b) || excludes(b, a)
}

/// One direction of [`contradict`]. Empty value lists are reported as invalid on their
/// own, so they contradict nothing here.
fn excludes(a: &ast::SelOp, b: &ast::SelOp) -> bool {
    use ast::SelOp::{Eq, Exists, In, NotExists, NotIn};
    let has = |list: &[ast::Str], v: &ast::Str| list.iter().any(|x| x.value == v.value);
    match (a, b) {
        (NotExists, Exists | Eq(_)) => true,
        (NotExists, In(l)) => !l.is_empty(),
        (Eq(v), In(l)) => !l.is_empty() && !has(l, v),
        (Eq(v), NotIn(l)) => has(l, v),
        (In(l), In(m)) => !l.is_empty() && !m.is_empty() && l.iter().all(|x| !has(m, x)),
        (In(l), NotIn(m)) => !l.is_empty() && l.iter().all(|x| has(m, x)),
        _ => false,
    }
}

// ---- Kubernetes name rules ----

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// A label name: at most 63 characters, `[A-Za-z0-9]` at both ends, `-_.` inside.
fn label_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the name part is empty".into());
    }
    if s.len() > 63 {
        return Err(format!(
            "the name part has {} characters; at most 63",
            s.len()
        ));
    }
    if !s.starts_with(is_alnum) || !s.ends_with(is_alnum) {
        return Err("must begin and end with a letter or digit".into());
    }
    if let Some(c) = s.chars().find(|c| !(is_alnum(*c) || "-_.".contains(*c))) {
        return Err(format!("`{c}` is not allowed"));
    }
    Ok(())
}

fn label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 {
            return Err("the prefix must be a DNS subdomain of 1 to 253 characters".into());
        }
        for label in p.split('.') {
            dns_label(label).map_err(|e| format!("in the prefix: {e}"))?;
        }
    }
    label_name(name)
}

fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    label_name(s).map_err(|e| e.replace("the name part", "the value"))
}

/// A DNS-1123 label: 1 to 63 lowercase letters, digits and `-`, alphanumeric at both ends.
fn dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("a DNS label has 1 to 63 characters".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("`{c}` is not allowed in a DNS label"));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("a DNS label cannot begin or end with `-`".into());
    }
    Ok(())
}

/// An IANA service name, the only names a container port can have.
fn port_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 15 {
        return Err("port names have 1 to 15 characters");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("only lowercase letters, digits and `-`");
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        return Err("a port name needs at least one letter");
    }
    if s.starts_with('-') || s.ends_with('-') || s.contains("--") {
        return Err("`-` cannot be at either end or doubled");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_rules() {
        assert!(label_key("kubernetes.io/metadata.name").is_ok());
        assert!(label_key("app").is_ok());
        assert!(label_key("-app").is_err());
        assert!(label_key("Bad_Prefix/app").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("a b").is_err());
    }

    #[test]
    fn port_name_rules() {
        assert!(port_name("http-alt").is_ok());
        assert!(port_name("80").is_err());
        assert!(port_name("a--b").is_err());
    }
}
