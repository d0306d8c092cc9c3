//! Diagnostic: duplicate-rule-name (warning)
//!
//! Fires when two rules of one policy have the same name. `trace` and `explain` name the
//! rule that decided; with two of one name the output is ambiguous (it also shows the
//! file and line, so nothing breaks).
//!
//! Fix: rename one of the rules.

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for a second rule `name` at `span`.
pub(crate) fn new(name: &str, span: Span, first: Span) -> Diagnostic {
    Diagnostic::new(
        Code::DuplicateRuleName,
        format!("two rules are called `{name}`"),
        span,
        "second rule of this name",
    )
    .also(first, "first rule of this name")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn warns_on_two_names() {
        expect(
            "policy \"p\" priority 1 { subject namespaces {}; ingress allow \"r\" from entity all; ingress deny \"r\" from entity all; }\n",
            Code::DuplicateRuleName,
        );
    }
}
