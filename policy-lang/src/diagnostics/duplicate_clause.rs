//! Diagnostic: duplicate-clause
//!
//! Fires when something that may appear once appears twice: two `subject` statements in
//! a policy, two `from`/`to` or two `ports` clauses in a rule, or a capacity (`entries`,
//! `counters`, `sa limit`, `priority levels`, `cost per entry`) given twice in a target.
//!
//! Fix: merge the two (peers and ports are lists: `from A, B`, `ports tcp 80, udp 53`).

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for a second `what` at `span`, the first being at `first`.
pub(crate) fn new(what: &str, span: Span, first: Span) -> Diagnostic {
    Diagnostic::new(
        Code::DuplicateClause,
        format!("{what} is given more than once"),
        span,
        "given again here",
    )
    .also(first, "first given here")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_two_subjects() {
        expect(
            "policy \"p\" priority 1 { subject namespaces {}; subject namespaces {}; ingress allow from entity all; }\n",
            Code::DuplicateClause,
        );
    }

    #[test]
    fn fires_on_two_port_clauses() {
        expect(
            "policy \"p\" priority 1 { subject namespaces {}; ingress allow from entity all ports tcp 1 ports tcp 2; }\n",
            Code::DuplicateClause,
        );
    }
}
