//! Diagnostic: syntax-error
//!
//! Fires when the text does not follow the grammar: a missing `;` or `}`, a misspelt
//! keyword, a token in the wrong place. The message lists the tokens that would have been
//! accepted at that point, the label shows what was found, and a misspelt keyword gets a
//! "did you mean" hint. After an error the parser skips the broken statement (up to its
//! `;`, the next line that starts a statement, or the block's `}`), or the broken item when
//! even its first line does not parse (up to the next line that starts with `policy`,
//! `target`, `placement` or `include`), so each broken statement is reported once and the
//! rest of the file is still resolved. What the skipped text defined is not reported as
//! missing or unknown elsewhere.
//!
//! Fix: write one of the expected tokens at the marked place.

use super::{Code, Diagnostic};
use crate::parser::Rule;
use crate::span::{FileId, Span};
use crate::suggest::best_match;
use std::collections::BTreeSet;

/// Makes the diagnostic for a pest error from parsing `src[base..]`.
pub(crate) fn from_pest(
    file: FileId,
    src: &str,
    base: usize,
    err: &pest::error::Error<Rule>,
) -> Diagnostic {
    let err_pos = location(err);
    let mut expected: BTreeSet<String> = BTreeSet::new();
    let mut at = err_pos;
    match err.parse_attempts() {
        // The attempts also know the literal tokens (`;`, `{`, keywords), which the rule
        // positives do not; they are the better guide when they got at least as far.
        Some(attempts) if attempts.max_position >= err_pos => {
            at = attempts.max_position;
            for t in attempts.expected_tokens() {
                let token = t.to_string();
                if is_punctuation(&token) || is_keyword(&token) {
                    expected.insert(format!("`{token}`"));
                }
            }
            for stack in attempts.call_stacks() {
                if let Some(d) = stack.deepest.get_rule().and_then(|r| token_class(*r)) {
                    expected.insert(d.to_string());
                }
            }
        }
        _ => {
            if let pest::error::ErrorVariant::ParsingError { positives, .. } = &err.variant {
                for r in positives {
                    for d in describe(*r) {
                        expected.insert(d.to_string());
                    }
                }
            }
        }
    }
    let at = (base + at).min(src.len());
    let found = found_at(src, at);
    let end = (at + found.len()).min(src.len());
    let found_text = if found.is_empty() {
        "end of file".to_string()
    } else if found.starts_with(['\n', '\r']) {
        "end of line".to_string()
    } else {
        format!("`{found}`")
    };
    let span = if found.starts_with(['\n', '\r']) {
        Span::new(file, at, at)
    } else {
        Span::new(file, at, end)
    };
    let list: Vec<String> = expected.into_iter().collect();
    let message = if list.is_empty() {
        format!("syntax error: unexpected {found_text}")
    } else {
        format!("syntax error: expected {}, found {found_text}", join_or(&list))
    };
    let keywords = list
        .iter()
        .filter_map(|e| e.strip_prefix('`').and_then(|e| e.strip_suffix('`')))
        .filter(|k| is_keyword(k));
    let suggestion = if is_keyword(found) {
        best_match(found, keywords)
    } else {
        None
    };
    // When only punctuation would do (a missing `;` or `}`), point just after the previous
    // token, where it is missing, rather than at the next line.
    let only_punct = !list.is_empty()
        && list
            .iter()
            .all(|e| e.len() == 3 && e.starts_with('`') && is_punctuation(&e[1..2]));
    let before = src[..at].trim_end();
    if found_text == "end of line" && list.iter().any(|e| e.starts_with("the closing")) {
        return Diagnostic::new(
            Code::SyntaxError,
            "syntax error: unterminated string",
            span,
            "the string ends here without its closing `\"`",
        )
        .hint("strings cannot span lines; write `\\n` for a line break");
    }
    if only_punct && before.len() < at && !before.is_empty() {
        let last = before.chars().next_back().map_or(1, char::len_utf8);
        let prev = Span::new(file, before.len() - last, before.len());
        return Diagnostic::new(
            Code::SyntaxError,
            message,
            prev,
            format!("expected {} after this", join_or(&list)),
        )
        .also(span, format!("unexpected {found_text}"));
    }
    Diagnostic::new(
        Code::SyntaxError,
        message,
        span,
        format!("unexpected {found_text}"),
    )
    .suggest(suggestion)
}

fn location(err: &pest::error::Error<Rule>) -> usize {
    match err.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    }
}

/// The farthest offset (from the start of the parsed text) that the parser reached before
/// `err`: where the input stops following the grammar.
pub(crate) fn farthest(err: &pest::error::Error<Rule>) -> usize {
    let attempts = err.parse_attempts().map_or(0, |a| a.max_position);
    location(err).max(attempts)
}

fn is_keyword(token: &str) -> bool {
    !token.is_empty() && token.chars().all(|c| c.is_ascii_lowercase() || c == '-')
}

/// What a token-class rule (a rule that matches one token) looks like to a user.
fn token_class(rule: Rule) -> Option<&'static str> {
    use Rule::*;
    Some(match rule {
        string => "a string",
        string_inner => "the closing `\"` of the string",
        number => "a number",
        cidr | cidr_list => "a CIDR",
        word | rule_action | port_name | field_mask | dotted | word_list | field_spec => "a name",
        label_key | label_key_bare | sel_expr => "a label key",
        port_item => "a protocol",
        EOI => "end of file",
        _ => return None,
    })
}

fn is_punctuation(token: &str) -> bool {
    matches!(token, ";" | "{" | "}" | "[" | "]" | "," | "=" | "-")
}

/// The token at `at`: a word, a string, one character, or empty at the end.
fn found_at(src: &str, at: usize) -> &str {
    let Some(rest) = src.get(at..) else {
        return "";
    };
    let word_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || "_-./:".contains(c)))
        .unwrap_or(rest.len());
    if word_len > 0 {
        return &rest[..word_len];
    }
    if let Some(body) = rest.strip_prefix('"') {
        if let Some(close) = body.find(['"', '\n']) {
            return &rest[..close + 2];
        }
    }
    rest.chars().next().map_or("", |c| &rest[..c.len_utf8()])
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// What a grammar rule looks like to a user, or `None` for rules not worth naming.
fn describe(rule: Rule) -> &'static [&'static str] {
    use Rule::*;
    match rule {
        file | item_at_start => &["`include`", "`policy`", "`target`", "`placement`"],
        EOI => &["end of file"],
        include | kw_include => &["`include`"],
        policy | kw_policy => &["`policy`"],
        target | kw_target => &["`target`"],
        placement | kw_placement => &["`placement`"],
        subject | kw_subject => &["`subject`"],
        rule_stmt | direction | kw_ingress | kw_egress => &["`ingress` or `egress`"],
        peers_clause | kw_from | kw_to => &["`from` or `to`"],
        ports_clause | kw_ports => &["`ports`"],
        pods_sel | kw_pods => &["`pods`"],
        namespaces_sel | kw_namespaces => &["`namespaces`"],
        cidr_peer | kw_cidr => &["`cidr`"],
        entity_peer | kw_entity => &["`entity`"],
        service_peer | kw_service => &["`service`"],
        kw_in => &["`in`"],
        kw_not => &["`not`"],
        kw_exists | sel_exists => &["`exists`"],
        kw_except => &["`except`"],
        kw_extends => &["`extends`"],
        kw_priority => &["`priority`"],
        t_priority => &["`priority`"],
        kw_match | t_match => &["`match`"],
        kw_kinds | t_kinds => &["`kinds`"],
        kw_actions | t_actions => &["`actions`"],
        kw_levels => &["`levels`"],
        kw_max => &["`max`"],
        kw_entries | t_entries => &["`entries`"],
        kw_counters | t_counters => &["`counters`"],
        kw_sa | t_sa => &["`sa`"],
        kw_limit => &["`limit`"],
        kw_cost | t_cost => &["`cost`"],
        kw_per => &["`per`"],
        kw_entry => &["`entry`"],
        kw_remove | t_remove => &["`remove`"],
        kw_unlimited => &["`unlimited`"],
        kw_pin | p_pin => &["`pin`"],
        kw_prefer | p_prefer => &["`prefer`"],
        kw_reserve | p_reserve => &["`reserve`"],
        kw_exclude | p_exclude => &["`exclude`"],
        kw_on => &["`on`"],
        kw_for => &["`for`"],
        kw_hardware => &["`hardware`"],
        kw_table => &["`table`"],
        p_subject => &["`policy`, `service` or `table`"],
        block_end => &["`}`"],
        string | string_inner => &["a string"],
        number => &["a number"],
        port_range => &["a port range"],
        limit => &["a number or `unlimited`"],
        cidr | cidr_list => &["a CIDR"],
        word | rule_action | port_name | field_mask => &["a name"],
        dotted | word_list | field_spec => &["a name"],
        port_item => &["a protocol"],
        selector => &["`{`"],
        sel_expr | label_key | label_key_bare => &["a label key"],
        sel_eq => &["`=`"],
        sel_in => &["`in`"],
        sel_not_in | sel_not_exists => &["`not`"],
        string_list => &["`[`"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn missing_semicolon_names_the_expected_token() {
        let d = expect(
            "policy \"p\" priority 1 {\n  subject namespaces {}\n}\n",
            Code::SyntaxError,
        );
        assert!(d[0].message.contains("`;`"), "{}", d[0].message);
    }

    #[test]
    fn misspelt_keyword_gets_a_hint() {
        let d = expect("polciy \"p\" priority 1 {}\n", Code::SyntaxError);
        assert_eq!(d[0].hints, vec!["did you mean `policy`?".to_string()]);
    }

    #[test]
    fn every_broken_item_is_reported() {
        let d = expect(
            "policy \"a\" priority 1 { subject }\npolicy \"b\" priority 2 { oops }\n",
            Code::SyntaxError,
        );
        assert_eq!(d.len(), 2);
    }
}
