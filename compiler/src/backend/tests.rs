//! Unit tests of the backend contract: lookup, profiles, capability checks, diff order.

use super::*;

struct Dummy(Profile);

#[derive(Debug)]
struct DummyArtifact(Vec<(String, String)>);

impl Artifact for DummyArtifact {
    fn target(&self) -> &str {
        "dummy"
    }
    fn text(&self) -> String {
        self.0.iter().map(|(_, t)| format!("{t}\n")).collect()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!(self.0)
    }
    fn items(&self) -> Vec<(String, String)> {
        self.0.clone()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Backend for Dummy {
    fn name(&self) -> &str {
        "dummy"
    }
    fn profile(&self) -> &Profile {
        &self.0
    }
    fn compile(&self, input: &CompileInput<'_>) -> Result<Box<dyn Artifact>, Unsupported> {
        let slice = plan_slice(input);
        for r in &slice.rules {
            self.0.check_rule(r)?;
        }
        Ok(Box::new(DummyArtifact(
            slice
                .rules
                .iter()
                .map(|r| (format!("r{}", r.id), format!("{:?}", r.actions)))
                .collect(),
        )))
    }
}

fn rule(id: u32, matches: Vec<HwMatch>, actions: Vec<HwAction>) -> HwRule {
    HwRule {
        id,
        port: 0,
        direction: PortDirection::Ingress,
        level: 0,
        matches,
        actions,
        origin: String::new(),
    }
}

#[test]
fn lookup_distinguishes_disabled_and_unknown() {
    let available: Vec<Box<dyn Backend>> = vec![Box::new(Dummy(Profile::default()))];
    assert_eq!(lookup(&available, "dummy").unwrap().name(), "dummy");
    assert_eq!(
        lookup(&available, "octeon-cn10k").err().unwrap(),
        LookupError::Disabled {
            name: "octeon-cn10k".into(),
            feature: "rte_flow".into()
        }
    );
    let err = lookup(&available, "octeon-cn10").err().unwrap();
    assert_eq!(
        err.to_string(),
        "unknown target octeon-cn10 (did you mean octeon-cn10k?)"
    );
}

#[test]
fn default_capabilities_can_do_nothing() {
    let p = Profile {
        name: "empty".into(),
        ..Profile::default()
    };
    let r = rule(
        1,
        vec![HwMatch::exact(PacketField::Ipv4Dst, 1)],
        vec![HwAction::Drop],
    );
    let err = p.check_rule(&r).unwrap_err();
    assert_eq!(err.reason.code(), "field-not-matchable");
    let r = rule(2, vec![], vec![HwAction::Drop]);
    assert_eq!(
        p.check_rule(&r).unwrap_err().reason.code(),
        "action-not-supported"
    );
    let r = rule(3, vec![], vec![]);
    assert_eq!(
        p.check_rule(&r).unwrap_err().reason.code(),
        "priority-level"
    );
}

#[test]
fn cn10k_profile_matches_the_default_mkex() {
    let p = octeon_cn10k_profile();
    let ok = |m: HwMatch| p.check_match(&m).is_ok();
    assert!(ok(HwMatch::ternary(
        PacketField::Ipv4Src,
        0x0a00_00ff,
        0xff00_00ff
    )));
    assert!(ok(HwMatch::ternary(PacketField::L4Dport, 30000, 0xfff0)));
    assert!(ok(HwMatch::exact(PacketField::IpProto, 6)));
    assert!(!ok(HwMatch::exact(PacketField::IpProto, 47)));
    assert!(!ok(HwMatch::prefix(PacketField::Ipv6Src, 1, 64)));
    assert!(!ok(HwMatch::exact(PacketField::EspSpi, 5)));
    assert!(!ok(HwMatch::exact(PacketField::VxlanVni, 5)));
    assert!(!ok(HwMatch::exact(PacketField::TcpFlags, 2)));
    assert!(!ok(HwMatch::exact(PacketField::IcmpType, 8)));
    let egress_mark = HwRule {
        direction: PortDirection::Egress,
        ..rule(1, vec![], vec![HwAction::Mark { id: 1 }])
    };
    assert_eq!(
        p.check_rule(&egress_mark).unwrap_err().to_string(),
        "target octeon-cn10k cannot take this: action mark is not supported on egress"
    );
    let big_mark = rule(1, vec![], vec![HwAction::Mark { id: 0xFFFE }]);
    assert_eq!(
        p.check_rule(&big_mark).unwrap_err().reason.code(),
        "argument-out-of-range"
    );
}

#[test]
fn diff_is_make_before_break() {
    let b = Dummy(Profile::default());
    let old = DummyArtifact(vec![
        ("r1".into(), "a".into()),
        ("r2".into(), "b".into()),
        ("r3".into(), "c".into()),
    ]);
    let new = DummyArtifact(vec![
        ("r2".into(), "b2".into()),
        ("r3".into(), "c".into()),
        ("r4".into(), "d".into()),
    ]);
    let ops = b.diff(Some(&old), &new);
    let deltas = &ops.as_any().downcast_ref::<Deltas>().unwrap().deltas;
    let ops: Vec<(DeltaOp, String)> = deltas.iter().map(|d| (d.op, d.key.clone())).collect();
    assert_eq!(
        ops,
        vec![
            (DeltaOp::Add, "r4".to_string()),
            (DeltaOp::Modify, "r2".to_string()),
            (DeltaOp::Remove, "r1".to_string()),
        ]
    );
}

#[test]
fn targets_text_lists_profiles() {
    insta::assert_snapshot!(targets_text(&builtin_profiles()));
}

/// The code of one line, comments dropped: as written (for declarations) and with the
/// contents of string and character literals blanked (for counting braces). `state`
/// carries an open block comment (its nesting) or an open (raw) string literal over to the
/// next line.
fn code_of(line: &str, state: &mut Lexed) -> (String, String) {
    let c: Vec<char> = line.chars().collect();
    let (mut kept, mut blank) = (String::new(), String::new());
    let mut i = 0;
    while i < c.len() {
        match *state {
            Lexed::Block(n) => {
                if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    *state = if n == 1 {
                        Lexed::Code
                    } else {
                        Lexed::Block(n - 1)
                    };
                    i += 2;
                } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    *state = Lexed::Block(n + 1);
                    i += 2;
                } else {
                    i += 1;
                }
            }
            Lexed::Str => {
                kept.push(c[i]);
                if c[i] == '\\' {
                    kept.extend(c.get(i + 1));
                    i += 2;
                } else {
                    if c[i] == '"' {
                        blank.push('"');
                        *state = Lexed::Code;
                    }
                    i += 1;
                }
            }
            Lexed::Raw(hashes) => {
                let closes = c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#'));
                if closes {
                    kept.extend(&c[i..=i + hashes]);
                    blank.push('"');
                    *state = Lexed::Code;
                    i += 1 + hashes;
                } else {
                    kept.push(c[i]);
                    i += 1;
                }
            }
            Lexed::Code => {
                let prev_ident = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
                if c[i] == '/' && c.get(i + 1) == Some(&'/') {
                    break;
                } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    *state = Lexed::Block(1);
                    i += 2;
                } else if c[i] == '"' {
                    kept.push('"');
                    blank.push('"');
                    *state = Lexed::Str;
                    i += 1;
                } else if c[i] == 'r' && !prev_ident && matches!(c.get(i + 1), Some('"' | '#')) {
                    let hashes = c[i + 1..].iter().take_while(|&&x| x == '#').count();
                    if c.get(i + 1 + hashes) == Some(&'"') {
                        kept.extend(&c[i..i + 2 + hashes]);
                        blank.push('"');
                        *state = Lexed::Raw(hashes);
                        i += 2 + hashes;
                    } else {
                        kept.push(c[i]);
                        blank.push(c[i]);
                        i += 1;
                    }
                } else if c[i] == '\'' && c.get(i + 1) == Some(&'\\') {
                    // An escaped character literal: skip to its closing quote.
                    let end = c[i + 2..]
                        .iter()
                        .position(|&x| x == '\'')
                        .map_or(c.len(), |e| i + e + 3);
                    kept.extend(&c[i..end.min(c.len())]);
                    blank.push_str("' '");
                    i = end;
                } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
                    kept.extend(&c[i..i + 3]);
                    blank.push_str("' '");
                    i += 3;
                } else {
                    // Anything else, lifetimes included.
                    kept.push(c[i]);
                    blank.push(c[i]);
                    i += 1;
                }
            }
        }
    }
    (kept, blank)
}

/// The lexer's state between lines.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lexed {
    Code,
    Block(u32),
    Str,
    Raw(usize),
}

/// What a block holds, for deciding which of its lines are API.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Block {
    /// A module (the file, or a `pub mod`): its `pub` items and the impls of its public types.
    Module,
    /// A public struct: its `pub` fields.
    Struct,
    /// A public enum: every variant.
    Enum,
    /// A struct-like variant: every field.
    Variant,
    /// A public trait: every item.
    Trait,
    /// An inherent impl of a public type: its `pub` items.
    Impl,
    /// Anything else (bodies, private items, trait impls): nothing.
    Opaque,
}

/// `decl` with every character inside a string literal replaced by a space, so that byte
/// offsets still match: where a header's own brace is.
fn outside_strings(decl: &str) -> String {
    let mut in_str = false;
    let mut escaped = false;
    decl.chars()
        .map(|ch| {
            let inside = in_str;
            if in_str && !escaped && ch == '"' {
                in_str = false;
            } else if !in_str && ch == '"' {
                in_str = true;
            }
            escaped = in_str && !escaped && ch == '\\';
            if inside && in_str {
                " ".repeat(ch.len_utf8())
            } else {
                ch.to_string()
            }
        })
        .collect()
}

/// Joins a wrapped declaration into one line the way it reads unwrapped.
fn normalize(decl: &str) -> String {
    let mut d = decl.split_whitespace().collect::<Vec<_>>().join(" ");
    for (from, to) in [
        ("( ", "("),
        (" )", ")"),
        (",)", ")"),
        ("{ ", "{"),
        ("[ ", "["),
        (" ]", "]"),
        (",]", "]"),
        (" }", "}"),
        (",}", "}"),
        ("< ", "<"),
        (",>", ">"),
        (" >", ">"),
    ] {
        d = d.replace(from, to);
    }
    d.replace("->", " -> ").replace("  ", " ")
}

/// The public surface of one source file, one declaration a line, indented by nesting:
/// `pub` items with their whole signature (bodies cut), the derives on them, the fields of
/// public structs, every variant of a public enum with its fields, every item of a public
/// trait, and the impls of the file's public types (trait impls by header only). Private
/// items and `#[cfg(test)]` items are left out.
fn public_surface(text: &str) -> Vec<String> {
    let mut state = Lexed::Code;
    let code: Vec<(String, String)> = text.lines().map(|l| code_of(l, &mut state)).collect();
    // The file's public type names, so that their impls (a `Default`, a `Display`, the
    // inherent methods) count as API and the impls of private types do not.
    let public_types: Vec<String> = code
        .iter()
        .filter_map(|(_, l)| {
            let t = l.trim();
            ["pub struct ", "pub enum ", "pub trait ", "pub type "]
                .iter()
                .find_map(|k| t.strip_prefix(k))
                .map(|rest| {
                    rest.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect()
                })
        })
        .collect();
    let self_type = |header: &str| -> Option<String> {
        let after = header.rsplit(" for ").next()?;
        let after = if header.contains(" for ") {
            after
        } else {
            // `impl<T: X> Type<T>`: skip the generics of the impl itself.
            let rest = header.strip_prefix("impl")?;
            let rest = rest.trim_start();
            if rest.starts_with('<') {
                let mut n = 0;
                let end = rest.char_indices().find_map(|(i, ch)| {
                    match ch {
                        '<' => n += 1,
                        '>' => n -= 1,
                        _ => {}
                    }
                    (n == 0).then_some(i + 1)
                })?;
                &rest[end..]
            } else {
                rest
            }
        };
        let name: String = after
            .trim_start()
            .trim_start_matches("crate::")
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        Some(name.rsplit("::").next()?.to_string())
    };

    let mut out = Vec::new();
    // Open blocks: (depth inside the block, what it holds).
    let mut blocks: Vec<(usize, Block)> = vec![(0, Block::Module)];
    let mut depth = 0usize;
    let mut derives: Vec<String> = Vec::new();
    // A `#[cfg(test)]` item being skipped: the depth it started at and whether its body
    // has opened.
    let mut skip: Option<(usize, bool)> = None;
    let mut pending: Option<(String, Block)> = None;
    for (kept, blank) in &code {
        let t = kept.trim();
        let opens = blank.matches('{').count();
        let closes = blank.matches('}').count();
        let after = (depth + opens).saturating_sub(closes);
        if let Some((at, opened)) = skip {
            let opened = opened || after > at;
            skip = if (opened && after <= at) || (!opened && t.ends_with(';')) {
                None
            } else {
                Some((at, opened))
            };
            depth = after;
            continue;
        }
        while blocks.last().is_some_and(|b| b.0 > depth) {
            blocks.pop();
        }
        let inside = blocks
            .last()
            .filter(|b| b.0 == depth)
            .map_or(Block::Opaque, |b| b.1);
        let mut decl: Option<(String, Block)> = pending.take();
        if let Some((text, _)) = decl.as_mut() {
            text.push(' ');
            text.push_str(t);
        } else if t.starts_with("#[cfg(test)]") {
            skip = Some((depth, false));
            depth = after;
            continue;
        } else if t.starts_with("#[derive(") || t.starts_with("#[non_exhaustive") {
            derives.push(t.to_string());
        } else if t.is_empty() || t.starts_with("#[") || t.starts_with("#![") {
        } else {
            let is_pub = t.starts_with("pub ");
            let kind_of = |t: &str| {
                let t = t.trim_start_matches("pub ");
                if t.starts_with("struct ") {
                    Block::Struct
                } else if t.starts_with("enum ") {
                    Block::Enum
                } else if t.starts_with("trait ") {
                    Block::Trait
                } else if t.starts_with("mod ") {
                    Block::Module
                } else {
                    Block::Opaque
                }
            };
            decl = match inside {
                Block::Module if is_pub => Some((t.to_string(), kind_of(t))),
                Block::Module if t.starts_with("impl") => {
                    let ty = self_type(t).unwrap_or_default();
                    public_types.contains(&ty).then(|| {
                        let kind = if t.contains(" for ") {
                            Block::Opaque
                        } else {
                            Block::Impl
                        };
                        (t.to_string(), kind)
                    })
                }
                Block::Impl | Block::Struct if is_pub => Some((t.to_string(), Block::Opaque)),
                Block::Trait if !t.starts_with('}') => Some((t.to_string(), Block::Opaque)),
                Block::Enum | Block::Variant if !t.starts_with('}') => {
                    let kind = if inside == Block::Enum {
                        Block::Variant
                    } else {
                        Block::Opaque
                    };
                    Some((t.to_string(), kind))
                }
                _ => None,
            };
            if decl.is_none() {
                derives.clear();
            }
        }
        if let Some((text, kind)) = decl {
            let field_like = matches!(inside, Block::Struct | Block::Enum | Block::Variant)
                || (inside == Block::Trait && !text.contains('('));
            let t = text.trim_end();
            let is_use = t.trim_start().starts_with("pub use");
            let complete = (is_use && t.ends_with(';'))
                || (!is_use && (t.ends_with('{') || t.ends_with(';')))
                || t.ends_with('}')
                || (field_like && t.ends_with(','))
                || (field_like && !t.ends_with('(') && !t.ends_with('<') && !t.ends_with('='));
            if complete {
                // A body on the same line is not API: cut a function's or a type's header
                // at its brace. The braces of a `use` list or of a struct-like variant are
                // the API itself.
                let bare = text.trim_start().trim_start_matches("pub ");
                let header = [
                    "fn ",
                    "const fn ",
                    "unsafe fn ",
                    "impl",
                    "trait ",
                    "mod ",
                    "struct ",
                    "enum ",
                ]
                .iter()
                .any(|k| bare.starts_with(k));
                let head = match outside_strings(&text).find('{') {
                    Some(i) if header => text[..i].to_string(),
                    _ => text.clone(),
                };
                let head = normalize(&head);
                let head = head.trim_end_matches(',').trim_end_matches('{').trim_end();
                let indent = "  ".repeat(blocks.iter().filter(|b| b.0 <= depth).count() - 1);
                for d in derives.drain(..) {
                    out.push(format!("{indent}{d}"));
                }
                out.push(format!("{indent}{head}"));
                if after > depth {
                    blocks.push((depth + 1, kind));
                }
            } else {
                pending = Some((text, kind));
            }
        }
        depth = after;
    }
    out
}

/// The public surface a backend crate relies on, one declaration a line: the backend
/// contract, the session that drives backends, the conformance harness, and the types those
/// signatures name and a backend reads (the MAG, the plan, the cluster model, probes).
fn backend_api() -> String {
    let files = [
        ("backend/mod.rs", include_str!("mod.rs")),
        ("backend/profile.rs", include_str!("profile.rs")),
        ("backend/slice.rs", include_str!("slice.rs")),
        // A backend crate also drives a session in its tests and runs the conformance
        // harness; their surfaces are part of what a backend relies on.
        ("session.rs", include_str!("../session.rs")),
        ("conformance.rs", include_str!("../conformance.rs")),
        // The engine trait a backend implements to run the conformance cases, and the
        // reference engine it is compared with.
        ("engine/mod.rs", include_str!("../engine/mod.rs")),
        (
            "engine/reference.rs",
            include_str!("../engine/reference.rs"),
        ),
        // What `CompileInput`, `Engine` and `Evaluator` hand a backend, and what it reads
        // there (the nftables example walks the MAG's tables and entries).
        ("mag/mod.rs", include_str!("../mag/mod.rs")),
        ("mag/pipeline.rs", include_str!("../mag/pipeline.rs")),
        ("partition/mod.rs", include_str!("../partition/mod.rs")),
        ("model/mod.rs", include_str!("../model/mod.rs")),
        ("semantics/mod.rs", include_str!("../semantics/mod.rs")),
    ];
    let mut api = String::new();
    for (name, text) in files {
        api.push_str(&format!("# {name}\n"));
        for decl in public_surface(text) {
            api.push_str(&decl);
            api.push('\n');
        }
    }
    api
}

/// Out-of-tree backends build against [`backend_api`], so any change to it shows up in
/// review as a snapshot diff; `breaking_changes_are_announced` decides whether the change
/// needs a new version.
#[test]
fn public_api() {
    insta::assert_snapshot!(backend_api());
}

/// One fact of an API surface: an item with the chain of items it sits in, or one trait an
/// item derives (so that dropping a derive is a removal and adding one is not).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Fact {
    /// The enclosing items, outermost first (the file first).
    parents: Vec<String>,
    /// The declaration, or `derives Trait`.
    item: String,
}

fn facts(api: &str) -> Vec<Fact> {
    let mut out = Vec::new();
    let mut parents: Vec<String> = Vec::new();
    let mut derives: Vec<String> = Vec::new();
    for line in api.lines() {
        if let Some(file) = line.strip_prefix("# ") {
            parents = vec![file.to_string()];
            continue;
        }
        let level = (line.len() - line.trim_start().len()) / 2 + 1;
        let item = line.trim().to_string();
        if let Some(list) = item
            .strip_prefix("#[derive(")
            .and_then(|l| l.strip_suffix(")]"))
        {
            derives.extend(list.split(',').map(|d| format!("derives {}", d.trim())));
            continue;
        }
        if item.starts_with("#[") {
            derives.push(item);
            continue;
        }
        parents.truncate(level);
        for d in derives.drain(..) {
            let mut p = parents.clone();
            p.push(item.clone());
            out.push(Fact {
                parents: p,
                item: d,
            });
        }
        out.push(Fact {
            parents: parents.clone(),
            item: item.clone(),
        });
        parents.push(item);
    }
    out
}

/// What in `now` breaks a backend built against `released`: every released fact that is
/// gone (an item removed, renamed or with another signature; a derive dropped), and the
/// additions that break code using the old surface: a trait method without a default, an
/// enum variant, a variant's field, a public struct field (a struct literal no longer
/// compiles; conservative when the struct has private fields too). A `#[non_exhaustive]`
/// enum or struct may gain variants or fields: backends cannot match it exhaustively or
/// build it.
fn breaking(released: &str, now: &str) -> Vec<String> {
    let old = facts(released);
    let new = facts(now);
    let mut out = Vec::new();
    for f in &old {
        if !new.contains(f) {
            out.push(format!("removed: {} > {}", f.parents.join(" > "), f.item));
        }
    }
    let non_exhaustive = |parents: &[String]| {
        new.iter()
            .any(|g| g.item == "#[non_exhaustive]" && g.parents.as_slice() == parents)
    };
    for f in &new {
        if old.contains(f) || f.item.starts_with("derives ") || f.item.starts_with("#[") {
            continue;
        }
        let Some(parent) = f.parents.last() else {
            continue;
        };
        let parent = parent.as_str();
        let breaks = (parent.starts_with("pub trait ") && f.item.ends_with(';'))
            || (parent.starts_with("pub enum ") && !non_exhaustive(&f.parents))
            || (f.parents.len() >= 2
                && f.parents[f.parents.len() - 2].starts_with("pub enum ")
                && !parent.starts_with("pub "))
            || (parent.starts_with("pub struct ")
                && f.item.starts_with("pub ")
                && !non_exhaustive(&f.parents));
        if breaks {
            out.push(format!("added: {} > {}", f.parents.join(" > "), f.item));
        }
    }
    out
}

/// The version whose backend API is stable: `MAJOR`, or `0.MINOR` before 1.0 (Cargo's rule
/// for caret requirements, so a backend's `pipec = "0.1"` never gets a breaking change).
fn api_version(version: &str) -> String {
    let mut parts = version.split('.');
    let major = parts.next().unwrap_or("0");
    if major == "0" {
        format!("0.{}", parts.next().unwrap_or("0"))
    } else {
        major.to_string()
    }
}

/// The versioning rule of `docs/backends.md`, enforced: within one API version the surface
/// may only grow in ways that break no backend. A breaking change fails this test until
/// pipec's version moves to the next API version, `docs/backends.md` announces it under
/// that version, and the new version's surface is recorded with `PIPEC_BLESS=1`.
#[test]
fn breaking_changes_are_announced() {
    let version = api_version(env!("CARGO_PKG_VERSION"));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join(format!("api/backend-{version}.txt"));
    let now = backend_api();
    if std::env::var_os("PIPEC_BLESS").is_some() {
        std::fs::write(&path, &now).expect("write the API baseline");
        return;
    }
    let released = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no recorded backend API for pipec {version} at {}: record it with \
             PIPEC_BLESS=1 cargo test -p pipec --lib backend::tests::breaking",
            path.display()
        )
    });
    let docs = std::fs::read_to_string(root.join("../docs/backends.md")).expect("the docs");
    assert!(
        docs.contains(&format!("\n- {version}: ")),
        "docs/backends.md announces no changes for API version {version} (a `- {version}: ` line under Changes)"
    );
    let broken = breaking(&released, &now);
    assert!(
        broken.is_empty(),
        "breaking changes to the backend API within version {version}; keep the old items, \
         or move pipec to the next API version, announce the change in docs/backends.md and \
         record the new surface (PIPEC_BLESS=1):\n{}",
        broken.join("\n")
    );
}

#[test]
fn what_breaks_a_backend() {
    let released = "# m.rs
#[derive(Clone, Debug)]
pub struct Input
  pub mag: Mag
pub enum Reason
  Feature
    feature: String
pub trait Backend
  fn name(&self) -> &str;
  fn diff(&self) -> Ops
pub fn old(a: u32) -> u32
";
    // Additions that break nothing: a new free function, a trait method with a default.
    let grown = format!("{released}pub fn new_helper()\n").replace(
        "  fn diff(&self) -> Ops\n",
        "  fn diff(&self) -> Ops\n  fn extra(&self) -> u32\n",
    );
    assert_eq!(breaking(released, &grown), Vec::<String>::new());
    let sealed = released.replace("pub struct Input", "#[non_exhaustive]\npub struct Input");
    let sealed_grown = sealed.replace("  pub mag: Mag\n", "  pub mag: Mag\n  pub node: String\n");
    assert_eq!(breaking(&sealed, &sealed_grown), Vec::<String>::new());
    let changed = released
        .replace("#[derive(Clone, Debug)]", "#[derive(Debug)]")
        .replace("  pub mag: Mag\n", "  pub mag: Mag\n  pub node: String\n")
        .replace("    feature: String\n", "    feature: String\n  Capacity\n")
        .replace(
            "  fn diff(&self) -> Ops\n",
            "  fn diff(&self) -> Ops\n  fn must(&self);\n",
        )
        .replace("pub fn old(a: u32) -> u32", "pub fn old(a: u64) -> u32");
    insta::assert_snapshot!(breaking(released, &changed).join("\n"), @r"
    removed: m.rs > pub struct Input > derives Clone
    removed: m.rs > pub fn old(a: u32) -> u32
    added: m.rs > pub struct Input > pub node: String
    added: m.rs > pub enum Reason > Capacity
    added: m.rs > pub trait Backend > fn must(&self);
    ");
}

#[test]
fn the_api_surface_reads_items_whole() {
    let text = r#"
pub use a::{
    B,
    C,
};
#[derive(Clone, Debug)]
pub enum Reason {
    /// Doc.
    Feature { feature: String },
    Capacity {
        what: String,
    },
    Other(u32),
}
struct Private;
impl Private {
    pub fn hidden(&self) {}
}
impl Default for Reason {
    fn default() -> Self { Reason::Other(0) }
}
pub fn wrapped(
    a: &str, // "}"
    b: u32,
) -> Result<(), String> {
    let s = "{{";
    Ok(())
}
#[cfg(test)]
mod tests {
    pub fn not_api() {}
}
pub trait Engine {
    fn name(&self) -> &'static str;
    fn skip(&self, p: &Probe) -> Option<String> {
        None
    }
}
"#;
    insta::assert_snapshot!(public_surface(text).join("\n"), @r"
    pub use a::{B, C};
    #[derive(Clone, Debug)]
    pub enum Reason
      Feature {feature: String}
      Capacity
        what: String
      Other(u32)
    impl Default for Reason
    pub fn wrapped(a: &str, b: u32) -> Result<(), String>
    pub trait Engine
      fn name(&self) -> &'static str;
      fn skip(&self, p: &Probe) -> Option<String>
    ");
}

/// A backend whose `check_rule` accepts everything while its profile cannot match IPv4
/// destinations: the kind of mistake `check_declared` exists for.
struct Lying(Profile);

impl Backend for Lying {
    fn name(&self) -> &str {
        &self.0.name
    }
    fn profile(&self) -> &Profile {
        &self.0
    }
    fn check_rule(&self, _: &HwRule) -> Result<(), Unsupported> {
        Ok(())
    }
    fn compile(&self, input: &CompileInput<'_>) -> Result<Box<dyn Artifact>, Unsupported> {
        Dummy(self.0.clone()).compile(input)
    }
}

fn lying_profile() -> Profile {
    let mut p = octeon_cn10k_profile();
    p.name = "lying".into();
    p.caps.fields.remove("ipv4.dst");
    p
}

#[test]
fn a_backend_that_takes_more_than_its_profile_declares_is_caught() {
    let b = Lying(lying_profile());
    let rules = vec![
        rule(
            7,
            vec![HwMatch::prefix(PacketField::Ipv4Dst, 0x0a00_0001, 32)],
            vec![HwAction::Drop],
        ),
        rule(
            8,
            vec![HwMatch::prefix(PacketField::Ipv4Src, 0x0a00_0001, 32)],
            vec![HwAction::Drop],
        ),
    ];
    let v = profile_violations(&b, &rules);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        v[0].to_string(),
        "target lying accepts rule r7 (), but its profile does not declare it: field ipv4.dst is not matchable"
    );
    assert!(check_declared(&b, &rules[1]).is_ok());
}

#[test]
fn the_session_never_places_an_undeclared_rule() {
    use crate::session::{Hardware, Session, SessionOptions};
    let dir =
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/starwars"));
    let options = SessionOptions {
        hardware: Some(Hardware::Profile(Box::new(lying_profile()))),
        ..SessionOptions::default()
    };
    let factory = |p: Option<&Profile>| -> Vec<Box<dyn Backend>> {
        vec![Box::new(Lying(p.cloned().unwrap_or_default()))]
    };
    let s = Session::load(&[dir], options, &factory).unwrap_or_else(|e| panic!("{e}"));
    let plan = s.plan().expect("a plan");
    assert!(
        plan.slice
            .rules
            .iter()
            .all(|r| r.get(PacketField::Ipv4Dst).is_none()),
        "no placed rule matches ipv4.dst"
    );
    // The refusals name the violation, so explain shows why those entries stay in eBPF.
    let report = crate::partition::explain::report(plan, s.mag(), s.sources());
    let text = crate::partition::explain::to_text(&report);
    assert!(
        text.contains("its profile does not declare it: field ipv4.dst"),
        "{text}"
    );
}
