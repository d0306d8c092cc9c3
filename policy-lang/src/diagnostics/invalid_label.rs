//! Diagnostic: invalid-label
//!
//! Fires when a selector cannot be a Kubernetes label selector: a key that is not
//! `[prefix/]name` (name of at most 63 characters, beginning and ending with a letter or
//! digit; prefix a DNS subdomain of at most 253), a value that is not a label value (at
//! most 63 characters of the same alphabet, or empty), an `in [...]` or `not in [...]`
//! with no values, or the same key given twice with `=`.
//!
//! Fix: correct the key or value; give `in` at least one value.

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for the selector part at `span`.
pub(crate) fn new(span: Span, message: String, label: &str) -> Diagnostic {
    Diagnostic::new(Code::InvalidLabel, message, span, label)
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_empty_set() {
        expect(
            "policy \"p\" priority 1 { subject namespaces { team in [] }; ingress allow from entity all; }\n",
            Code::InvalidLabel,
        );
    }

    #[test]
    fn fires_on_bad_value() {
        expect(
            "policy \"p\" priority 1 { subject namespaces { team = \"a b\" }; ingress allow from entity all; }\n",
            Code::InvalidLabel,
        );
    }
}
