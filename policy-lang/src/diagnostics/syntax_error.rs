//! Diagnostic: syntax-error
//!
//! Fires when the text does not follow the grammar: a missing `;` or `}`, a misspelt
//! keyword, a token in the wrong place. The message lists the tokens that would have been
//! accepted at that point, the label shows what was found, and a misspelt keyword gets a
//! "did you mean" hint. After an error the parser skips to the next line that starts with
//! `policy`, `target`, `placement` or `include`, so each broken item is reported once.
//!
//! Fix: write one of the expected tokens at the marked place.

use super::{Code, Diagnostic};
use crate::parser::Rule;
use crate::span::{FileId, Span};
use crate::suggest::best_match;
use std::collections::BTreeSet;

/// Makes the diagnostic for a pest error found at byte `at` of `src`.
pub(crate) fn from_pest(file: FileId, src: &str, at: usize, err: &pest::error::Error<Rule>) -> Diagnostic {
    let mut expected: BTreeSet<String> = BTreeSet::new();
    if let pest::error::ErrorVariant::ParsingError { positives, .. } = &err.variant {
        for r in positives {
            if let Some(d) = describe(*r) {
                expected.insert(d.to_string());
            }
        }
    }
    if let Some(attempts) = err.parse_attempts() {
        for t in attempts.expected_tokens() {
            let token = t.to_string();
            if is_punctuation(&token) {
                expected.insert(format!("`{token}`"));
            }
        }
    }
    let found = found_at(src, at);
    let end = (at + found.len().max(1)).min(src.len()).max(at);
    let span = Span::new(file, at, end);
    let found_text = if found.is_empty() {
        "end of file".to_string()
    } else {
        format!("`{found}`")
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
        .filter(|k| k.chars().all(|c| c.is_ascii_alphabetic()));
    let suggestion = if found.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        best_match(found, keywords)
    } else {
        None
    };
    Diagnostic::new(Code::SyntaxError, message, span, format!("unexpected {found_text}"))
        .with_suggestion(suggestion)
}

fn is_punctuation(token: &str) -> bool {
    matches!(token, ";" | "{" | "}" | "[" | "]" | "," | "=" | "-" | "\"")
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
    if rest.starts_with('"') {
        if let Some(close) = rest[1..].find(['"', '\n']) {
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
fn describe(rule: Rule) -> Option<&'static str> {
    use Rule::*;
    Some(match rule {
        EOI => "end of file",
        include | kw_include => "`include`",
        policy | kw_policy => "`policy`",
        target | kw_target => "`target`",
        placement | kw_placement => "`placement`",
        subject | kw_subject => "`subject`",
        rule_stmt | direction | kw_ingress | kw_egress => "`ingress` or `egress`",
        peers_clause | kw_from | kw_to => "`from` or `to`",
        ports_clause | kw_ports => "`ports`",
        pods_sel | kw_pods => "`pods`",
        namespaces_sel | kw_namespaces => "`namespaces`",
        cidr_peer | kw_cidr => "`cidr`",
        entity_peer | kw_entity => "`entity`",
        service_peer | kw_service => "`service`",
        kw_in => "`in`",
        kw_not => "`not`",
        kw_exists | sel_exists => "`exists`",
        kw_except => "`except`",
        kw_extends => "`extends`",
        kw_priority => "`priority`",
        t_priority => "`priority`",
        kw_match | t_match => "`match`",
        kw_kinds | t_kinds => "`kinds`",
        kw_actions | t_actions => "`actions`",
        kw_levels => "`levels`",
        kw_max => "`max`",
        kw_entries | t_entries => "`entries`",
        kw_counters | t_counters => "`counters`",
        kw_sa | t_sa => "`sa`",
        kw_limit => "`limit`",
        kw_cost | t_cost => "`cost`",
        kw_per => "`per`",
        kw_entry => "`entry`",
        kw_remove | t_remove => "`remove`",
        kw_unlimited => "`unlimited`",
        kw_pin | p_pin => "`pin`",
        kw_prefer | p_prefer => "`prefer`",
        kw_reserve | p_reserve => "`reserve`",
        kw_exclude | p_exclude => "`exclude`",
        kw_on => "`on`",
        kw_for => "`for`",
        kw_hardware => "`hardware`",
        kw_table => "`table`",
        p_subject => "`policy`, `service` or `table`",
        block_end => "`}`",
        string | string_inner => "a string",
        number => "a number",
        port_range => "a port range",
        limit => "a number or `unlimited`",
        cidr | cidr_list => "a CIDR",
        word | rule_action | port_name | field_mask => "a name",
        dotted | word_list | field_spec => "a name",
        port_item => "a protocol",
        selector => "`{`",
        sel_expr | label_key | label_key_bare => "a label key",
        sel_eq => "`=`",
        sel_in => "`in`",
        sel_not_in | sel_not_exists => "`not`",
        string_list => "`[`",
        _ => return None,
    })
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
        assert_eq!(d[0].help, vec!["did you mean `policy`?".to_string()]);
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
