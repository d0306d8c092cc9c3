//! Diagnostic: rule-without-peers
//!
//! Fires when a rule has no `from` (ingress) or `to` (egress) clause. A rule must say
//! which peers it is about; matching every peer is written explicitly.
//!
//! Fix: add `from PEER` / `to PEER`, or `from entity all` for every peer.

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for a rule of `direction` at `span`.
pub(crate) fn new(direction: &str, span: Span) -> Diagnostic {
    let kw = if direction == "ingress" { "from" } else { "to" };
    Diagnostic::new(
        Code::RuleWithoutPeers,
        format!("{direction} rule has no `{kw}` clause"),
        span,
        "this rule names no peers",
    )
    .hint(format!("to match every peer, write `{kw} entity all`"))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_rule_without_from() {
        expect(
            "policy \"p\" priority 1 { subject namespaces {}; ingress deny ports tcp 80; }\n",
            Code::RuleWithoutPeers,
        );
    }
}
