//! The stable-Rust stand-in for the fuzzer: every input of the kept corpus
//! (`fuzz/corpus/parse_resolve/`), and a few thousand random and mutated inputs, go through
//! parse, resolve and format without a panic, and formatting is idempotent whenever the
//! input parses. A crash the fuzzer finds is added to the corpus, and so becomes a test here.

use policy_lang::{format, parse, resolve, FileId, MemoryLoader, SourceSet};
use proptest::prelude::*;
use std::path::Path;

/// What the `parse_resolve` fuzz target does, as a function both can share in spirit.
fn exercise(text: &str) {
    let (ast, _) = parse(FileId(0), text);
    if let Some(ast) = ast {
        let once = format(&ast);
        let (again, diags) = parse(FileId(0), &once);
        let again =
            again.unwrap_or_else(|| panic!("formatted output does not parse: {diags:?}\n{once}"));
        assert_eq!(format(&again), once, "format is not idempotent");
    }
    let mut files = SourceSet::new();
    let id = files.add("fuzz.pipe", text);
    // The input may include itself or a few fixed files; both paths are exercised.
    let mut loader = MemoryLoader::new([(
        "other.pipe",
        "policy \"o\" priority 9 { subject namespaces {}; ingress allow from entity all; }\n",
    )]);
    let result = resolve(&mut files, &[id], &mut loader);
    let diags = match &result {
        Ok(p) => p.warnings.clone(),
        Err(d) => d.clone(),
    };
    let _ = policy_lang::render(&diags, &files);
}

fn corpus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/parse_resolve")
}

#[test]
fn corpus_inputs_do_not_panic() {
    let mut entries: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("the corpus is kept in fuzz/corpus/parse_resolve")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    assert!(entries.len() >= 10, "the corpus looks empty");
    for path in entries {
        let bytes = std::fs::read(&path).expect("readable");
        // The fuzz target only sees valid UTF-8, as `pipec` does after reading a file.
        if let Ok(text) = std::str::from_utf8(&bytes) {
            exercise(text);
        }
    }
}

fn seeds() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(corpus_dir()).expect("corpus").flatten() {
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            out.push(text);
        }
    }
    out.sort();
    out
}

/// A mutation of a seed: delete, duplicate or replace a slice, or insert a token.
fn mutated() -> impl Strategy<Value = String> {
    let seeds = seeds();
    let tokens = prop::sample::select(vec![
        "{",
        "}",
        ";",
        ",",
        "[",
        "]",
        "\"",
        "\\",
        "//",
        "=",
        "-",
        "policy",
        "target",
        "placement",
        "include",
        "from",
        "to",
        "ports",
        "pods",
        "in",
        "namespaces",
        "not",
        "exists",
        "cidr",
        "except",
        "0",
        "99999999999",
        "::",
        "/",
        "\n",
        " ",
        "é",
        "\u{0}",
    ]);
    (
        prop::sample::select(seeds),
        prop::collection::vec(
            (any::<prop::sample::Index>(), 0usize..4, tokens, 0usize..8),
            1..6,
        ),
    )
        .prop_map(|(seed, edits)| {
            let mut text = seed.into_bytes();
            for (at, kind, token, len) in edits {
                let i = at.index(text.len() + 1);
                let j = (i + len).min(text.len());
                match kind {
                    0 => {
                        text.drain(i..j);
                    }
                    1 => {
                        let dup: Vec<u8> = text[i..j].to_vec();
                        text.splice(i..i, dup);
                    }
                    2 => {
                        text.splice(i..j, token.bytes());
                    }
                    _ => {
                        text.splice(i..i, token.bytes());
                    }
                }
            }
            String::from_utf8_lossy(&text).into_owned()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_do_not_panic(text in "\\PC{0,200}") {
        exercise(&text);
    }

    #[test]
    fn grammar_soup_does_not_panic(
        text in "((policy|target|placement|include|subject|ingress|egress|allow|from|to|ports|tcp|udp|pods|namespaces|in|not|exists|cidr|except|entity|service|match|kinds|actions|priority|levels|max|entries|unlimited|pin|on|for|reserve|exclude|hardware|table|\"[a-z/]{0,6}\"|[0-9]{1,6}|10\\.0\\.0\\.0/8|[{}\\[\\];,=-]|//[a-z ]{0,5}\n)[ \n]?){0,40}"
    ) {
        exercise(&text);
    }

    #[test]
    fn mutated_examples_do_not_panic(text in mutated()) {
        exercise(&text);
    }
}
