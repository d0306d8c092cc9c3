//! Diagnostic: contradictory-selector
//!
//! Fires when two requirements of one label selector on the same key cannot both hold:
//! `team not exists` with `team exists`, `team = "a"` or `team in [...]`; `team = "a"`
//! with `team in ["b"]` or `team not in ["a"]`; `team in ["a"]` with `team in ["b"]` or
//! `team not in ["a"]`. The requirements of a selector are ANDed, so such a selector
//! selects nothing and the subject or peer that holds it means nothing.
//!
//! Fix: keep the requirement that was meant; to accept either of two values, write
//! `team in ["a", "b"]`.

use super::{Code, Diagnostic};
use crate::ast::SelExpr;

/// Makes the diagnostic for `second`, which contradicts `first` (on the same key).
pub(crate) fn new(first: &SelExpr, second: &SelExpr) -> Diagnostic {
    Diagnostic::new(
        Code::ContradictorySelector,
        format!(
            "two requirements on label `{}` contradict each other, so the selector selects nothing",
            first.key.text
        ),
        second.span,
        "this requirement",
    )
    .also(first.span, "contradicts this one")
    .note("the requirements of a selector must all hold")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::{check, expect};
    use crate::diagnostics::Code;

    fn subject(selector: &str) -> String {
        format!(
            "policy \"p\" priority 1 {{ subject namespaces {{ {selector} }}; ingress allow from entity all; }}\n"
        )
    }

    #[test]
    fn fires_on_each_kind_of_contradiction() {
        for selector in [
            "team exists, team not exists",
            "team = \"a\", team not exists",
            "team not exists, team in [\"a\"]",
            "team = \"a\", team in [\"b\", \"c\"]",
            "team not in [\"a\"], team = \"a\"",
            "team in [\"a\"], team in [\"b\"]",
            "team in [\"a\", \"b\"], team not in [\"b\", \"a\", \"c\"]",
        ] {
            expect(&subject(selector), Code::ContradictorySelector);
        }
    }

    #[test]
    fn requirements_that_can_hold_together_are_fine() {
        for selector in [
            "team exists, team = \"a\"",
            "team = \"a\", team in [\"a\", \"b\"]",
            "team in [\"a\", \"b\"], team not in [\"b\"]",
            "team not exists, app not exists",
            "team not in [\"a\"], team not exists",
        ] {
            assert_eq!(check(&subject(selector)), vec![], "{selector}");
        }
    }
}
