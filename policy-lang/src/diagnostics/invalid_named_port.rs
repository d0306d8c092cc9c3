//! Diagnostic: invalid-named-port
//!
//! Fires when a named port (`ports tcp web`) is not a valid IANA service name: 1 to 15
//! characters, lowercase letters, digits and `-`, at least one letter, no `-` at either
//! end and no `--`. Kubernetes only lets containers declare such names, so any other
//! name could never match.
//!
//! Fix: use the name declared in the pod's `containerPort`.

use super::{Code, Diagnostic};
use crate::ast::Word;

/// Makes the diagnostic for `word`, with the rule it breaks.
pub(crate) fn new(word: &Word, reason: &str) -> Diagnostic {
    Diagnostic::new(
        Code::InvalidNamedPort,
        format!("`{}` is not a valid port name", word.text),
        word.span,
        reason,
    )
    .note("a port name has 1 to 15 lowercase letters, digits or `-`, with at least one letter")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_uppercase_name() {
        expect(
            "policy \"p\" priority 1 { subject namespaces {}; ingress allow from entity all ports tcp Web; }\n",
            Code::InvalidNamedPort,
        );
    }
}
