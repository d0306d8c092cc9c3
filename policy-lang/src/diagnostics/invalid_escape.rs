//! Diagnostic: invalid-escape
//!
//! Fires when a string literal holds a backslash escape the language does not know.
//! The escapes are `\\`, `\"`, `\n`, `\t`, `\r` and `\u{1F600}` (one to six hex digits
//! naming a Unicode scalar value).
//!
//! Fix: double the backslash (`\\`) to mean a backslash, or use one of the escapes above.

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for the escape `escape` at `span`.
pub(crate) fn new(span: Span, escape: &str) -> Diagnostic {
    Diagnostic::new(
        Code::InvalidEscape,
        format!("unknown escape `{escape}` in string"),
        span,
        "unknown escape",
    )
    .hint("the escapes are `\\\\`, `\\\"`, `\\n`, `\\t`, `\\r` and `\\u{...}`")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_unknown_escape() {
        let d = expect("include \"a\\qb.pipe\";\n", Code::InvalidEscape);
        assert_eq!(d[0].message, "unknown escape `\\q` in string");
    }

    #[test]
    fn fires_on_bad_unicode_escape() {
        expect("include \"\\u{110000}\";\n", Code::InvalidEscape);
    }
}
