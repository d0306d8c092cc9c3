//! Diagnostic: include-cycle
//!
//! Fires when a file includes itself, directly or through other files. (Including one
//! file twice from different places is fine: it is read once.)
//!
//! Fix: remove one `include` of the cycle; move what both files need into a third file.

use super::{Code, Diagnostic};
use crate::ast::Str;

/// Makes the diagnostic for `include` string `name` closing the cycle `chain`.
pub(crate) fn new(name: &Str, chain: &[String]) -> Diagnostic {
    Diagnostic::new(
        Code::IncludeCycle,
        "include cycle",
        name.span,
        "this include closes a cycle",
    )
    .note(format!("the cycle is {}", chain.join(" -> ")))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_self_include() {
        let d = expect("include \"test.pipe\";\n", Code::IncludeCycle);
        assert_eq!(d[0].notes, vec!["the cycle is test.pipe -> test.pipe".to_string()]);
    }
}
