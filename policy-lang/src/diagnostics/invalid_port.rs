//! Diagnostic: invalid-port
//!
//! Fires when a port number is 0 or above 65535, or when a range `A-B` has `A > B`.
//!
//! Fix: use ports from 1 to 65535, the smaller one first in a range.

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for a port or range at `span`.
pub(crate) fn new(span: Span, message: String, label: &str) -> Diagnostic {
    Diagnostic::new(Code::InvalidPort, message, span, label)
        .note("ports are numbers from 1 to 65535")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_port_out_of_range() {
        expect(
            "policy \"p\" priority 1 { subject namespaces {}; ingress allow from entity all ports tcp 70000; }\n",
            Code::InvalidPort,
        );
    }

    #[test]
    fn fires_on_reversed_range() {
        let d = expect(
            "policy \"p\" priority 1 { subject namespaces {}; ingress allow from entity all ports tcp 90-80; }\n",
            Code::InvalidPort,
        );
        assert!(d[0].message.contains("reversed"), "{}", d[0].message);
    }
}
