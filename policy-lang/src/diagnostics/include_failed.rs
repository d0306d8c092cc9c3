//! Diagnostic: include-failed
//!
//! Fires when the file named by `include "path";` cannot be read. The path is taken
//! relative to the directory of the including file.
//!
//! Fix: correct the path.

use super::{Code, Diagnostic};
use crate::ast::Str;

/// Makes the diagnostic for `include` statement string `name`, resolved to `path`.
pub(crate) fn new(name: &Str, path: &str, reason: &str) -> Diagnostic {
    Diagnostic::new(
        Code::IncludeFailed,
        format!("cannot include `{path}`: {reason}"),
        name.span,
        "included here",
    )
    .note("include paths are relative to the including file")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_missing_file() {
        let d = expect("include \"nope.pipe\";\n", Code::IncludeFailed);
        assert!(d[0].message.contains("nope.pipe"));
    }
}
