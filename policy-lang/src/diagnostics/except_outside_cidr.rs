//! Diagnostic: except-outside-cidr
//!
//! Fires when an `except` network of `cidr A except [B]` is not inside `A` (including
//! when the two are of different IP versions). Such an exception removes nothing, so it is
//! almost always a typo; Kubernetes rejects it in an `ipBlock` too.
//!
//! Fix: correct the exception, or remove it.

use super::{Code, Diagnostic};
use crate::ast::Word;

/// Makes the diagnostic for exception `except` of `cidr`.
pub(crate) fn new(except: &Word, cidr: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::ExceptOutsideCidr,
        format!("`{}` is not inside `{}`", except.text, cidr.text),
        except.span,
        "this exception is outside the network",
    )
    .also(cidr.span, "the network")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_disjoint_exception() {
        expect(
            "policy \"p\" priority 1 { subject namespaces {}; egress allow to cidr 10.0.0.0/8 except [192.168.0.0/16]; }\n",
            Code::ExceptOutsideCidr,
        );
    }
}
