//! Diagnostic: conflicting-placement
//!
//! Fires when two placement hints about the same thing contradict each other: it is
//! pinned to two targets, or pinned (or preferred, or given a reservation) on hardware and
//! also excluded from hardware.
//!
//! Fix: keep one of the two hints.

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for the hint at `span` contradicting the one at `first`.
pub(crate) fn new(what: &str, span: Span, first: Span) -> Diagnostic {
    Diagnostic::new(
        Code::ConflictingPlacement,
        format!("conflicting placement hints for {what}"),
        span,
        "this hint",
    )
    .also(first, "contradicts this one")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_pin_and_exclude() {
        expect(
            "placement { pin table \"ct\" on \"octeon-cn10k\"; exclude table \"ct\" from hardware; }\n",
            Code::ConflictingPlacement,
        );
    }
}
