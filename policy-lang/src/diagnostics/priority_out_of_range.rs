//! Diagnostic: priority-out-of-range
//!
//! Fires when a policy's priority is above 1000. `.pipe` policies rank with
//! AdminNetworkPolicies, whose priorities go from 0 (first) to 1000.
//!
//! Fix: use a priority from 0 to 1000.

use super::{Code, Diagnostic};
use crate::ast::Word;

/// The largest priority.
pub(crate) const MAX_PRIORITY: u32 = 1000;

/// Makes the diagnostic for priority `word`.
pub(crate) fn new(word: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::PriorityOutOfRange,
        format!("priority {} is out of range", word.text),
        word.span,
        format!("priorities go from 0 to {MAX_PRIORITY}"),
    )
    .note("`.pipe` policies rank with AdminNetworkPolicies (lower number first)")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_above_1000() {
        expect(
            "policy \"p\" priority 1001 { subject namespaces {}; ingress allow from entity all; }\n",
            Code::PriorityOutOfRange,
        );
    }
}
