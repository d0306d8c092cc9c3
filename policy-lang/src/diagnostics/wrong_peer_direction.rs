//! Diagnostic: wrong-peer-direction
//!
//! Fires when an `ingress` rule lists its peers with `to`, or an `egress` rule with
//! `from`. Ingress traffic comes from its peers, egress traffic goes to them.
//!
//! Fix: use `from` in ingress rules and `to` in egress rules.

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for keyword `used` at `span` in a rule of `direction`.
pub(crate) fn new(used: &str, span: Span, direction: &str, dir_span: Span) -> Diagnostic {
    let right = if direction == "ingress" { "from" } else { "to" };
    Diagnostic::new(
        Code::WrongPeerDirection,
        format!("`{used}` in an {direction} rule"),
        span,
        format!("{direction} rules take `{right}`"),
    )
    .also(dir_span, "the rule's direction")
    .hint(format!("write `{right}`"))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_to_in_ingress() {
        let d = expect(
            "policy \"p\" priority 1 { subject namespaces {}; ingress allow to entity all; }\n",
            Code::WrongPeerDirection,
        );
        assert_eq!(d[0].hints, vec!["write `from`".to_string()]);
    }
}
