//! Diagnostic: invalid-cidr
//!
//! Fires when `cidr ADDR/LEN` (or an `except` entry) is not an IPv4 or IPv6 network: a
//! malformed address or a prefix length beyond 32 (IPv4) or 128 (IPv6). An address
//! without `/LEN` means a single host.
//!
//! Fix: write the network as `10.0.0.0/8` or `fd00::/8`.

use super::{Code, Diagnostic};
use crate::ast::Word;

/// Makes the diagnostic for `word`.
pub(crate) fn new(word: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::InvalidCidr,
        format!("`{}` is not a valid CIDR", word.text),
        word.span,
        "expected an address and prefix length, such as `10.0.0.0/8`",
    )
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_long_prefix() {
        expect(
            "policy \"p\" priority 1 { subject namespaces {}; egress allow to cidr 10.0.0.0/33; }\n",
            Code::InvalidCidr,
        );
    }
}
