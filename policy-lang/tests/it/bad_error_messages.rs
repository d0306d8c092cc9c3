//! Error messages known to be poor. Each test pins today's output so that an improvement
//! shows up as a snapshot change; when a message becomes good, move the case to
//! `tests/bad/` (the real error snapshots) and delete it here.

use policy_lang::{check_source, render};

fn rendered(src: &str) -> String {
    let (files, result) = check_source("test.pipe", src);
    match result {
        Ok(p) => render(&p.warnings, &files),
        Err(d) => render(&d, &files),
    }
}

/// A block left open is reported where the next item starts; the message does not point
/// at the `{` that was never closed.
#[test]
fn unclosed_block_does_not_point_at_its_brace() {
    insta::assert_snapshot!(rendered("policy \"a\" priority 1 {\n  subject namespaces {};\n\npolicy \"b\" priority 2 { subject namespaces {}; }\n"), @r###"
    error[P0001]: syntax error: expected `egress`, `ingress`, `subject` or `}`, found `policy`
      ┌─ test.pipe:4:1
      │
    4 │ policy "b" priority 2 { subject namespaces {}; }
      │ ^^^^^^ unexpected `policy`
    "###);
}
