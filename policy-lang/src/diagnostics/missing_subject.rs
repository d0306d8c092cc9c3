//! Diagnostic: missing-subject
//!
//! Fires when a policy has no `subject` statement. The subject says which pods the
//! policy applies to; there is no default, because "every pod in the cluster" should be
//! written on purpose.
//!
//! Fix: add `subject namespaces { ... };` or `subject pods { ... } in namespaces { ... };`
//! (`subject namespaces {};` selects every pod).

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for policy `name` whose name is at `span`.
pub(crate) fn new(name: &str, span: Span) -> Diagnostic {
    Diagnostic::new(
        Code::MissingSubject,
        format!("policy `{name}` has no subject"),
        span,
        "this policy selects no pods",
    )
    .hint("add `subject namespaces { ... };` (an empty selector `{}` selects all)")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_without_subject() {
        expect(
            "policy \"p\" priority 1 { ingress allow from entity all; }\n",
            Code::MissingSubject,
        );
    }
}
