//! Diagnostic: invalid-priority-levels
//!
//! Fires when a target's `priority levels N max M` has `N` of 0 or `N > M` (after merging
//! with the preset, whose `max` applies when none is given).
//!
//! Fix: use at least one level and no more than the maximum.

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for levels at `span`.
pub(crate) fn new(span: Span, message: String) -> Diagnostic {
    Diagnostic::new(
        Code::InvalidPriorityLevels,
        message,
        span,
        "invalid number of priority levels",
    )
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_above_the_preset_max() {
        expect(
            "target \"t\" extends \"octeon-cn10k\" { priority levels 64; }\n",
            Code::InvalidPriorityLevels,
        );
    }
}
