//! Diagnostic: cidr-host-bits (warning)
//!
//! Fires when a CIDR has bits set after its prefix, such as `10.1.2.3/8`. The network
//! meant is almost always the truncated one (`10.0.0.0/8`), which is what pipec uses, but
//! a typo in the prefix length looks the same.
//!
//! Fix: write the network address, or correct the prefix length.

use super::{Code, Diagnostic};
use crate::ast::Word;

/// Makes the diagnostic for `word`, which means `network`.
pub(crate) fn new(word: &Word, network: &str) -> Diagnostic {
    Diagnostic::new(
        Code::CidrHostBits,
        format!("`{}` has host bits set", word.text),
        word.span,
        format!("this is taken as `{network}`"),
    )
    .hint(format!("write `{network}`"))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn warns_and_truncates() {
        let d = expect(
            "policy \"p\" priority 1 { subject namespaces {}; egress allow to cidr 10.1.2.3/8; }\n",
            Code::CidrHostBits,
        );
        assert_eq!(d[0].hints, vec!["write `10.0.0.0/8`".to_string()]);
    }
}
