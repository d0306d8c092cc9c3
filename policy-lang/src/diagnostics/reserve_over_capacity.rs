//! Diagnostic: reserve-over-capacity
//!
//! Fires when `reserve N RESOURCE on "target" ...` (summed over all reservations of that
//! resource on that target) asks for more than the target's resolved profile has.
//!
//! Fix: reserve less, or raise the capacity in the target's profile.

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for a reservation at `span` bringing the total to `total`.
pub(crate) fn new(span: Span, total: u64, resource: &str, target: &str, capacity: u32) -> Diagnostic {
    Diagnostic::new(
        Code::ReserveOverCapacity,
        format!("{total} {resource} reserved on `{target}`, which has {capacity}"),
        span,
        "reservation over capacity",
    )
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_when_too_many_entries() {
        expect(
            "placement { reserve 9000 entries on \"octeon-cn10k\" for table \"ct\"; }\n",
            Code::ReserveOverCapacity,
        );
    }
}
