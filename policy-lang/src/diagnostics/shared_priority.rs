//! Diagnostic: shared-priority (warning)
//!
//! Fires when two policies have the same priority. As with AdminNetworkPolicies, the
//! order between them is then not defined by the language (pipec orders them by name, but
//! a policy author should not rely on it).
//!
//! Fix: give each policy its own priority.

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for `name` at `span` sharing `priority` with `other` at `other_span`.
pub(crate) fn new(priority: u32, name: &str, span: Span, other: &str, other_span: Span) -> Diagnostic {
    Diagnostic::new(
        Code::SharedPriority,
        format!("policies `{other}` and `{name}` have the same priority {priority}"),
        span,
        "same priority here",
    )
    .also(other_span, "as here")
    .note("the order of policies with equal priority is not defined; pipec orders them by name")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn warns_on_equal_priorities() {
        let src = "policy \"a\" priority 1 { subject namespaces {}; ingress allow from entity all; }\n\
                   policy \"b\" priority 1 { subject namespaces {}; ingress allow from entity all; }\n";
        expect(src, Code::SharedPriority);
    }
}
