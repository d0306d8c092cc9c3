//! Diagnostic: unknown-protocol
//!
//! Fires when a port item does not start with `tcp`, `udp`, `sctp` or `any`.
//!
//! Fix: write the protocol first: `ports tcp 80, udp 53, any 8080`.

use super::{Code, Diagnostic};
use crate::ast::Word;
use crate::suggest::best_match;
use crate::vocab::PROTOCOLS;

/// Makes the diagnostic for `word`.
pub(crate) fn new(word: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::UnknownProtocol,
        format!("unknown protocol `{}`", word.text),
        word.span,
        "expected `tcp`, `udp`, `sctp` or `any`",
    )
    .suggest(best_match(&word.text, PROTOCOLS.iter().copied()))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn suggests_the_closest_protocol() {
        let d = expect(
            "policy \"p\" priority 1 { subject namespaces {}; ingress allow from entity all ports tpc 80; }\n",
            Code::UnknownProtocol,
        );
        assert_eq!(d[0].hints, vec!["did you mean `tcp`?".to_string()]);
    }
}
