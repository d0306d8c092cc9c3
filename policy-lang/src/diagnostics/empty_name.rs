//! Diagnostic: empty-name
//!
//! Fires when a policy, rule, target, placement subject or include path is the empty
//! string `""`. Such a name could not be referred to or shown.
//!
//! Fix: give it a name.

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for an empty `what` name at `span`.
pub(crate) fn new(what: &str, span: Span) -> Diagnostic {
    Diagnostic::new(
        Code::EmptyName,
        format!("empty {what} name"),
        span,
        "a name cannot be empty",
    )
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_empty_policy_name() {
        expect(
            "policy \"\" priority 1 { subject namespaces {}; ingress allow from entity all; }\n",
            Code::EmptyName,
        );
    }
}
