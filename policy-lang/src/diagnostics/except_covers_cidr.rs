//! Diagnostic: except-covers-cidr
//!
//! Fires when an `except` network of `cidr A except [B]` is all of `A` (`cidr 10.0.0.0/8
//! except [10.0.0.0/8]`, or `10.0.0.0/8` written with host bits set). Such a peer matches
//! no address at all, so the rule means nothing; Kubernetes likewise requires an
//! `ipBlock` exception to be a strict subset of its network. An exception that is not
//! inside the network, a broader one included, is `except-outside-cidr` instead (that code
//! fired for them before this one existed, and codes keep their meaning).
//!
//! Fix: correct the exception or the network, or remove the peer.

use super::{Code, Diagnostic};
use crate::ast::Word;

/// Makes the diagnostic for exception `except`, which covers all of `cidr`.
pub(crate) fn new(except: &Word, cidr: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::ExceptCoversCidr,
        format!("`{}` excepts all of `{}`", except.text, cidr.text),
        except.span,
        "this exception is the whole network",
    )
    .also(cidr.span, "the network")
    .note("a peer whose exceptions cover its network matches no address")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::{check, expect};
    use crate::diagnostics::Code;

    fn peer(cidr: &str) -> String {
        format!("policy \"p\" priority 1 {{ subject namespaces {{}}; egress allow to cidr {cidr}; }}\n")
    }

    #[test]
    fn fires_on_an_exception_equal_to_the_network() {
        expect(&peer("10.0.0.0/8 except [10.0.0.0/8]"), Code::ExceptCoversCidr);
        expect(&peer("fd00::/8 except [fd00::/8]"), Code::ExceptCoversCidr);
    }

    #[test]
    fn a_strict_subnet_is_fine() {
        assert_eq!(check(&peer("10.0.0.0/8 except [10.1.0.0/16]")), vec![]);
    }
}
