//! File-driven and property tests of the `.pipe` language: error snapshots, the examples,
//! the round trip through the formatter, and a tidy check of the crate's own sources.

use policy_lang::{ast, format, parse, render, resolve, Code, FileId, MemoryLoader, SourceSet};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in the workspace")
        .to_path_buf()
}

/// A loader that reads files relative to the workspace root.
fn fs_loader(path: &str) -> Result<String, String> {
    std::fs::read_to_string(workspace_root().join(path)).map_err(|_| "no such file".to_string())
}

/// Resolves a file of the workspace and renders every diagnostic.
fn check_file(
    rel: &str,
) -> (
    SourceSet,
    Result<policy_lang::resolved::Program, Vec<policy_lang::Diagnostic>>,
) {
    let text = fs_loader(rel).expect("test input exists");
    let mut files = SourceSet::new();
    let id = files.add(rel, text);
    let mut loader = fs_loader;
    let result = resolve(&mut files, &[id], &mut loader);
    (files, result)
}

fn rel_path(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .expect("inside the workspace")
        .to_string_lossy()
        .replace('\\', "/")
}

// ---- Error snapshots ----

#[test]
fn bad_inputs() {
    // The bad inputs stay in `tests/bad/`, so that their paths in the snapshots are short.
    insta::glob!("../bad", "*.pipe", |path| {
        let rel = rel_path(path);
        let (files, result) = check_file(&rel);
        let diags = match result {
            Ok(p) => p.warnings,
            Err(d) => d,
        };
        assert!(!diags.is_empty(), "{rel} has no diagnostic");
        insta::assert_snapshot!(render(&diags, &files));
    });
}

// ---- Examples ----

#[test]
fn examples_resolve() {
    insta::glob!("../../../examples", "*.pipe", |path| {
        let rel = rel_path(path);
        let (files, result) = check_file(&rel);
        let program = match result {
            Ok(p) => p,
            Err(d) => panic!("{}", render(&d, &files)),
        };
        assert!(
            program.warnings.is_empty(),
            "{}",
            render(&program.warnings, &files)
        );
        let mut program = program;
        // The presets are the same in every example; keep the snapshots to the file's own.
        program.targets.retain(|_, t| !t.builtin);
        insta::assert_snapshot!(serde_json::to_string_pretty(&program).expect("serializable"));
    });
}

#[test]
fn examples_are_formatted() {
    let dir = workspace_root().join("examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pipe"))
        .collect();
    paths.push(dir.join("shared/dns.pipe"));
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("readable");
        let formatted = policy_lang::format_source(FileId(0), &text).expect("parses");
        assert_eq!(
            formatted,
            text,
            "{} is not canonically formatted",
            path.display()
        );
    }
}

#[test]
fn anp_01_means_the_conformance_policy() {
    use policy_lang::resolved::*;
    let (_, result) = check_file("examples/anp-01.pipe");
    let program = result.expect("anp-01 resolves");
    let [policy] = program.policies.as_slice() else {
        panic!("one policy expected");
    };
    assert_eq!(policy.name, "ingress-tcp");
    assert_eq!(policy.priority, 3);
    assert_eq!(policy.origin.line, 5);
    let ns = |house: &str| Selector {
        match_labels: [(
            "kubernetes.io/metadata.name".to_string(),
            format!("network-policy-conformance-{house}"),
        )]
        .into(),
        expressions: vec![],
    };
    assert_eq!(
        policy.subject,
        Subject {
            namespaces: ns("gryffindor"),
            pods: None
        }
    );
    let tcp80 = vec![PortSpec {
        protocol: Protocol::Tcp,
        ports: Ports::Number(80),
    }];
    let expected = [
        (
            "allow-from-ravenclaw-everything",
            Action::Allow,
            "ravenclaw",
            vec![],
        ),
        (
            "deny-from-ravenclaw-everything",
            Action::Deny,
            "ravenclaw",
            vec![],
        ),
        (
            "pass-from-ravenclaw-everything",
            Action::Pass,
            "ravenclaw",
            vec![],
        ),
        (
            "deny-from-slytherin-at-port-80",
            Action::Deny,
            "slytherin",
            tcp80.clone(),
        ),
        (
            "pass-from-slytherin-at-port-80",
            Action::Pass,
            "slytherin",
            tcp80.clone(),
        ),
        (
            "allow-from-hufflepuff-at-port-80",
            Action::Allow,
            "hufflepuff",
            tcp80.clone(),
        ),
        (
            "deny-from-hufflepuff-everything-else",
            Action::Deny,
            "hufflepuff",
            vec![],
        ),
    ];
    assert_eq!(policy.rules.len(), expected.len());
    for (rule, (name, action, house, ports)) in policy.rules.iter().zip(expected) {
        assert_eq!(rule.name, name);
        assert_eq!(rule.direction, Direction::Ingress);
        assert_eq!(rule.action, action);
        assert_eq!(rule.peers, vec![Peer::Namespaces(ns(house))]);
        assert_eq!(rule.ports, ports);
    }
}

#[test]
fn extended_target_profile_prints() {
    let (_, result) = check_file("examples/targets.pipe");
    let program = result.expect("targets.pipe resolves");
    let esp = &program.targets["cn106-esp"];
    assert_eq!(esp.extends.as_deref(), Some("octeon-cn10k"));
    let printed = esp.to_pipe();
    insta::assert_snapshot!(printed);
    // The printed profile is itself `.pipe` and resolves to the same profile.
    let (_, again) = policy_lang::check_source("printed.pipe", &printed);
    let again = again.expect("the printed profile resolves");
    let mut copy = again.targets["cn106-esp"].clone();
    copy.extends = esp.extends.clone();
    assert_eq!(&copy, esp);
}

#[test]
fn wrong_field_in_extended_target_gets_did_you_mean() {
    let (files, result) = policy_lang::check_source(
        "t.pipe",
        "target \"cn106-esp\" extends \"octeon-cn10k\" { match esp.sip; }\n",
    );
    let diags = result.expect_err("rejected");
    assert_eq!(diags[0].code, Code::UnknownField);
    assert!(render(&diags, &files).contains("help: did you mean `esp.spi`?"));
}

#[test]
fn include_is_relative_and_read_once() {
    let mut files = SourceSet::new();
    let a = files.add(
        "dir/a.pipe",
        "include \"lib/b.pipe\";\ninclude \"c.pipe\";\n",
    );
    let mut loader = MemoryLoader::new([
        ("dir/lib/b.pipe", "include \"../c.pipe\";\n"),
        (
            "dir/c.pipe",
            "policy \"c\" priority 1 { subject namespaces {}; ingress allow from entity all; }\n",
        ),
    ]);
    let program = resolve(&mut files, &[a], &mut loader).expect("resolves");
    assert_eq!(program.policies.len(), 1);
    assert_eq!(program.policies[0].origin.file, "dir/c.pipe");
}

#[test]
fn all_errors_of_a_file_in_one_run() {
    let (_, result) = check_file("policy-lang/tests/bad/20-placement-unknown-names.pipe");
    let codes: Vec<Code> = result
        .expect_err("rejected")
        .iter()
        .map(|d| d.code)
        .collect();
    assert_eq!(
        codes,
        vec![
            Code::UnknownPolicy,
            Code::UnknownTarget,
            Code::UnknownResource
        ]
    );
}

/// The codes of the diagnostics of one file, in order.
fn codes_of(src: &str) -> Vec<Code> {
    let (_, result) = policy_lang::check_source("test.pipe", src);
    match result {
        Ok(p) => p.warnings,
        Err(d) => d,
    }
    .iter()
    .map(|d| d.code)
    .collect()
}

/// A syntax error once hid every semantic error of its file; now the statements and items
/// that parse are still resolved (this was `syntax_error_hides_semantic_errors` of the
/// poor messages).
#[test]
fn syntax_error_does_not_hide_semantic_errors() {
    assert_eq!(
        codes_of("policy \"a\" priority 1 {\n  subject namespaces {}\n  ingress allow from entity wrold;\n}\n"),
        vec![Code::SyntaxError, Code::UnknownEntity]
    );
}

#[test]
fn statements_after_a_broken_one_are_checked() {
    let src = "target \"t\" {\n  entries x;\n  kinds exact, lmp;\n}\n\
               policy \"p\" priority 1 {\n  subject namespaces {};\n  ingress allow from entity all ports tcp 1 2;\n  ingress allow from entity wrold;\n}\n";
    assert_eq!(
        codes_of(src),
        vec![
            Code::SyntaxError,
            Code::UnknownMatchKind,
            Code::SyntaxError,
            Code::UnknownEntity
        ]
    );
}

#[test]
fn lost_item_names_are_not_unknown() {
    // `polcy` loses the policy whole; the placement that names it is not an error too, but
    // the one that names a policy nobody wrote is.
    let src = "polcy \"lost\" priority 1 {}\n\
               placement {\n  exclude policy \"lost\" from hardware;\n  exclude policy \"nope\" from hardware;\n}\n";
    assert_eq!(codes_of(src), vec![Code::SyntaxError, Code::UnknownPolicy]);
}

#[test]
fn a_policy_cut_short_does_not_lack_its_subject() {
    let src = "policy \"p\" priority 1 {\n  subject pods { app = };\n  ingress allow from entity all;\n}\n";
    assert_eq!(codes_of(src), vec![Code::SyntaxError]);
    // Without the syntax error the missing subject is reported, so the test above can fail.
    let src = "policy \"p\" priority 1 {\n  ingress allow from entity all;\n}\n";
    assert_eq!(codes_of(src), vec![Code::MissingSubject]);
}

#[test]
fn an_include_without_its_semicolon_is_still_read() {
    let mut files = SourceSet::new();
    let a = files.add(
        "a.pipe",
        "include \"b.pipe\"\nplacement {\n  exclude policy \"b\" from hardware;\n}\n",
    );
    let mut loader = MemoryLoader::new([(
        "b.pipe",
        "policy \"b\" priority 1 { subject namespaces {}; ingress allow from entity wrold; }\n",
    )]);
    let diags = resolve(&mut files, &[a], &mut loader).expect_err("rejected");
    let codes: Vec<Code> = diags.iter().map(|d| d.code).collect();
    assert_eq!(codes, vec![Code::SyntaxError, Code::UnknownEntity]);
}

#[test]
fn parse_gives_no_tree_after_a_syntax_error() {
    // `parse` is what the formatter and the fuzz target call: a tree that lacks a broken
    // statement must not be formatted back over the file.
    let (tree, diags) = parse(FileId(0), "policy \"p\" priority 1 {\n  oops;\n}\n");
    assert!(tree.is_none());
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].code, Code::SyntaxError);
}

// ---- Round trip: AST -> format -> parse gives the same AST ----

/// The Debug form of a tree with every span removed.
fn without_spans(file: &ast::File) -> String {
    let text = format!("{file:#?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find("Span(") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let close = after.find(')').expect("a span closes");
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

mod gen {
    //! Generators of random syntax trees (with dummy spans) for the round trip.

    use super::*;
    use policy_lang::ast::*;
    use policy_lang::Span;

    const KEYWORDS: &[&str] = &[
        "include",
        "policy",
        "priority",
        "subject",
        "ingress",
        "egress",
        "from",
        "to",
        "ports",
        "pods",
        "namespaces",
        "in",
        "not",
        "exists",
        "cidr",
        "except",
        "entity",
        "service",
        "target",
        "extends",
        "match",
        "kinds",
        "actions",
        "levels",
        "max",
        "entries",
        "counters",
        "sa",
        "limit",
        "cost",
        "per",
        "entry",
        "remove",
        "unlimited",
        "placement",
        "pin",
        "prefer",
        "reserve",
        "exclude",
        "on",
        "for",
        "hardware",
        "table",
    ];

    fn w(text: String) -> Word {
        Word {
            text,
            span: Span::default(),
        }
    }

    fn s(value: String) -> Str {
        Str {
            value,
            span: Span::default(),
        }
    }

    pub(super) fn word() -> impl Strategy<Value = Word> {
        "[a-z_][a-z0-9_-]{0,8}"
            .prop_filter("not a keyword", |t| !KEYWORDS.contains(&t.as_str()))
            .prop_map(w)
    }

    fn dotted() -> impl Strategy<Value = Word> {
        prop::collection::vec("[a-z][a-z0-9_]{0,5}", 1..3).prop_map(|v| w(v.join(".")))
    }

    fn number() -> impl Strategy<Value = Word> {
        any::<u32>().prop_map(|n| w(n.to_string()))
    }

    pub(super) fn string() -> impl Strategy<Value = Str> {
        "(\\PC|[\"\\\\\n\t])*".prop_map(s)
    }

    fn comment() -> impl Strategy<Value = String> {
        "( [a-z .,!?\"/]{0,20})?".prop_map(|c: String| c.trim_end().to_string())
    }

    fn comments() -> impl Strategy<Value = Comments> {
        (
            prop::collection::vec(comment(), 0..2),
            prop::collection::vec(comment(), 0..2),
            prop::option::of(comment()),
        )
            .prop_map(|(detached, leading, trailing)| Comments {
                detached,
                leading,
                trailing,
            })
    }

    fn stmt<T: std::fmt::Debug>(node: impl Strategy<Value = T>) -> impl Strategy<Value = Stmt<T>> {
        (comments(), node).prop_map(|(comments, node)| Stmt {
            comments,
            node,
            span: Span::default(),
        })
    }

    fn label_key() -> impl Strategy<Value = Word> {
        prop_oneof![
            "([a-z0-9]{1,5}\\.)?[a-z0-9]{1,5}/[a-zA-Z0-9][a-zA-Z0-9._-]{0,6}".prop_map(w),
            "[a-zA-Z0-9][a-zA-Z0-9._-]{0,8}".prop_map(w),
            "\\PC{0,8}".prop_map(w),
        ]
    }

    fn selector() -> impl Strategy<Value = Selector> {
        let op = prop_oneof![
            string().prop_map(SelOp::Eq),
            prop::collection::vec(string(), 0..3).prop_map(SelOp::In),
            prop::collection::vec(string(), 0..3).prop_map(SelOp::NotIn),
            Just(SelOp::Exists),
            Just(SelOp::NotExists),
        ];
        prop::collection::vec(
            (label_key(), op).prop_map(|(key, op)| SelExpr {
                key,
                op,
                span: Span::default(),
            }),
            0..3,
        )
        .prop_map(|exprs| Selector {
            exprs,
            span: Span::default(),
        })
    }

    fn cidr() -> impl Strategy<Value = Word> {
        prop_oneof![
            (any::<[u8; 4]>(), 0u8..40)
                .prop_map(|(a, l)| w(format!("{}.{}.{}.{}/{l}", a[0], a[1], a[2], a[3]))),
            any::<u16>().prop_map(|n| w(format!("fd{n:02x}::/16"))),
            any::<u8>().prop_map(|n| w(format!("{n}.0.0.1"))),
        ]
    }

    fn peer() -> impl Strategy<Value = Peer> {
        prop_oneof![
            (selector(), prop::option::of(selector())).prop_map(|(pods, namespaces)| Peer::Pods {
                pods,
                namespaces,
                span: Span::default()
            }),
            selector().prop_map(|namespaces| Peer::Namespaces {
                namespaces,
                span: Span::default()
            }),
            (cidr(), prop::collection::vec(cidr(), 0..3)).prop_map(|(cidr, except)| Peer::Cidr {
                cidr,
                except,
                span: Span::default()
            }),
            word().prop_map(Peer::Entity),
            string().prop_map(Peer::Service),
        ]
    }

    fn subject() -> impl Strategy<Value = Peer> {
        prop_oneof![
            (selector(), prop::option::of(selector())).prop_map(|(pods, namespaces)| Peer::Pods {
                pods,
                namespaces,
                span: Span::default()
            }),
            selector().prop_map(|namespaces| Peer::Namespaces {
                namespaces,
                span: Span::default()
            }),
        ]
    }

    fn port_item() -> impl Strategy<Value = PortItem> {
        let value = prop_oneof![
            number().prop_map(PortValue::Number),
            (number(), number()).prop_map(|(a, b)| PortValue::Range(a, b)),
            word().prop_map(PortValue::Named),
        ];
        (word(), prop::option::of(value)).prop_map(|(protocol, port)| PortItem {
            protocol,
            port,
            span: Span::default(),
        })
    }

    fn clause() -> impl Strategy<Value = Clause> {
        prop_oneof![
            (any::<bool>(), prop::collection::vec(peer(), 1..3)).prop_map(|(from, peers)| {
                Clause::Peers {
                    keyword: (
                        if from {
                            PeerKeyword::From
                        } else {
                            PeerKeyword::To
                        },
                        Span::default(),
                    ),
                    peers,
                    span: Span::default(),
                }
            }),
            prop::collection::vec(port_item(), 1..3).prop_map(|ports| Clause::Ports {
                ports,
                span: Span::default()
            }),
        ]
    }

    fn rule() -> impl Strategy<Value = Rule> {
        (
            any::<bool>(),
            word(),
            prop::option::of(string()),
            prop::collection::vec(clause(), 0..3),
        )
            .prop_map(|(ingress, action, name, clauses)| Rule {
                direction: (
                    if ingress {
                        Direction::Ingress
                    } else {
                        Direction::Egress
                    },
                    Span::default(),
                ),
                action,
                name,
                clauses,
            })
    }

    fn policy() -> impl Strategy<Value = Policy> {
        let body = prop::collection::vec(
            stmt(prop_oneof![
                subject().prop_map(PolicyStmt::Subject),
                rule().prop_map(PolicyStmt::Rule)
            ]),
            0..4,
        );
        (
            string(),
            number(),
            body,
            prop::collection::vec(comment(), 0..2),
        )
            .prop_map(|(name, priority, body, end_comments)| Policy {
                name,
                priority,
                body,
                end_comments,
            })
    }

    fn limit() -> impl Strategy<Value = Limit> {
        prop::option::of(number()).prop_map(|value| Limit {
            value,
            span: Span::default(),
        })
    }

    fn target_stmt() -> impl Strategy<Value = TargetStmt> {
        let words = || prop::collection::vec(dotted(), 1..3);
        prop_oneof![
            prop::collection::vec(
                (dotted(), prop::option::of(word()))
                    .prop_map(|(field, mask)| FieldSpec { field, mask }),
                1..3
            )
            .prop_map(TargetStmt::Match),
            words().prop_map(TargetStmt::Kinds),
            words().prop_map(TargetStmt::Actions),
            (limit(), prop::option::of(limit()))
                .prop_map(|(levels, max)| TargetStmt::PriorityLevels { levels, max }),
            limit().prop_map(TargetStmt::Entries),
            limit().prop_map(TargetStmt::Counters),
            limit().prop_map(TargetStmt::SaLimit),
            number().prop_map(TargetStmt::CostPerEntry),
            (
                prop_oneof![
                    Just(RemoveWhat::Match),
                    Just(RemoveWhat::Kinds),
                    Just(RemoveWhat::Actions)
                ],
                words()
            )
                .prop_map(|(what, names)| TargetStmt::Remove { what, names }),
        ]
    }

    fn target() -> impl Strategy<Value = Target> {
        (
            string(),
            prop::option::of(string()),
            prop::collection::vec(stmt(target_stmt()), 0..4),
            prop::collection::vec(comment(), 0..2),
        )
            .prop_map(|(name, extends, body, end_comments)| Target {
                name,
                extends,
                body,
                end_comments,
            })
    }

    fn place_subject() -> impl Strategy<Value = PlaceSubject> {
        (
            prop_oneof![
                Just(PlaceKind::Policy),
                Just(PlaceKind::Service),
                Just(PlaceKind::Table)
            ],
            string(),
        )
            .prop_map(|(kind, name)| PlaceSubject { kind, name })
    }

    fn placement_stmt() -> impl Strategy<Value = PlacementStmt> {
        prop_oneof![
            (place_subject(), string())
                .prop_map(|(subject, target)| PlacementStmt::Pin { subject, target }),
            (place_subject(), string())
                .prop_map(|(subject, target)| PlacementStmt::Prefer { subject, target }),
            (number(), word(), string(), place_subject()).prop_map(
                |(amount, resource, target, subject)| PlacementStmt::Reserve {
                    amount,
                    resource,
                    target,
                    subject
                }
            ),
            place_subject().prop_map(|subject| PlacementStmt::Exclude { subject }),
        ]
    }

    pub(super) fn file() -> impl Strategy<Value = File> {
        let item = prop_oneof![
            string().prop_map(Item::Include),
            policy().prop_map(Item::Policy),
            target().prop_map(Item::Target),
            (
                prop::collection::vec(stmt(placement_stmt()), 0..3),
                prop::collection::vec(comment(), 0..2)
            )
                .prop_map(|(body, end_comments)| Item::Placement(Placement { body, end_comments })),
        ];
        (
            prop::collection::vec(stmt(item), 0..4),
            prop::collection::vec(comment(), 0..2),
        )
            .prop_map(|(items, end_comments)| File {
                items,
                end_comments,
            })
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn format_then_parse_is_identity(file in gen::file()) {
        let text = format(&file);
        let (parsed, diags) = parse(FileId(0), &text);
        let parsed = parsed.unwrap_or_else(|| panic!("formatted text does not parse: {diags:#?}\n{text}"));
        prop_assert!(diags.is_empty(), "{diags:#?}");
        prop_assert_eq!(without_spans(&parsed), without_spans(&file), "text:\n{}", text);
        prop_assert_eq!(format(&parsed), text);
    }
}

// ---- Tidy: module docs and the diagnostics catalog ----

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable");
        assert!(
            text.starts_with("//!"),
            "{} does not start with `//!`",
            f.display()
        );
    }
}

#[test]
fn every_diagnostic_has_its_module() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/diagnostics");
    let mut codes = std::collections::BTreeSet::new();
    for code in Code::ALL {
        assert!(
            codes.insert(code.as_str()),
            "{} is used twice",
            code.as_str()
        );
        let module = dir.join(format!("{}.rs", code.name().replace('-', "_")));
        let text = std::fs::read_to_string(&module)
            .unwrap_or_else(|_| panic!("{} has no module {}", code.name(), module.display()));
        assert!(
            text.starts_with(&format!("//! Diagnostic: {}", code.name())),
            "{} must start with `//! Diagnostic: {}`",
            module.display(),
            code.name()
        );
        assert!(text.contains("#[test]"), "{} has no test", module.display());
    }
}

// ---- The language reference ----

#[test]
fn every_diagnostic_is_in_the_reference_table() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/pipe-language.md"))
        .expect("docs/pipe-language.md");
    for code in Code::ALL {
        let cell = format!("| {} | {}", code.as_str(), code.name());
        assert!(
            doc.contains(&cell),
            "docs/pipe-language.md does not list `{cell} |` in its table of diagnostics"
        );
    }
}

#[test]
fn reference_examples_resolve() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/pipe-language.md"))
        .expect("docs/pipe-language.md");
    let mut blocks = 0;
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```pipe\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("a closed code block");
        let code = &body[..end];
        rest = &body[end + 3..];
        blocks += 1;
        let mut files = SourceSet::new();
        let id = files.add(format!("docs-example-{blocks}.pipe"), code);
        // Included files are empty here; the examples only show the syntax.
        let mut loader = |_: &str| Ok::<String, String>(String::new());
        if let Err(d) = resolve(&mut files, &[id], &mut loader) {
            panic!(
                "example {blocks} of the reference fails:\n{}",
                render(&d, &files)
            );
        }
        let formatted = policy_lang::format_source(id, code).expect("parses");
        assert_eq!(
            formatted, code,
            "example {blocks} is not canonically formatted"
        );
    }
    assert!(blocks >= 10, "only {blocks} examples found");
}
