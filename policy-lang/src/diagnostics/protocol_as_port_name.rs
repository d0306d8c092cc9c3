//! Diagnostic: protocol-as-port-name
//!
//! Fires when the port of a port item is a protocol word: `ports tcp udp` reads as TCP to a
//! container port named `udp`, because a protocol may be followed by a port name. Such a
//! list is almost always missing a comma (`ports tcp, udp`: every TCP and every UDP port),
//! and the rule as written matches only pods that happen to name a port `udp`. The words
//! `tcp`, `udp`, `sctp` and `any` are therefore not accepted as port names; it is an error
//! rather than a warning because a policy that silently matches nothing is a security bug.
//!
//! Fix: put a comma between the protocols, or name the port as the pod declares it.

use super::{Code, Diagnostic};
use crate::ast::Word;

/// Makes the diagnostic for the port name `name`, written after the protocol `protocol`.
pub(crate) fn new(protocol: &Word, name: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::ProtocolAsPortName,
        format!(
            "`{} {}` reads `{}` as a port name, not as a protocol",
            protocol.text, name.text, name.text
        ),
        name.span,
        "a port name that is a protocol",
    )
    .also(protocol.span, "the protocol of this port")
    .hint(format!(
        "to match every port of both protocols, write `{}, {}`",
        protocol.text, name.text
    ))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::{check, expect};
    use crate::diagnostics::Code;

    fn rule(ports: &str) -> String {
        format!(
            "policy \"p\" priority 1 {{ subject namespaces {{}}; ingress allow from entity all ports {ports}; }}\n"
        )
    }

    #[test]
    fn fires_on_a_missing_comma_between_protocols() {
        let d = expect(&rule("tcp udp"), Code::ProtocolAsPortName);
        assert_eq!(d[0].hints, vec!["to match every port of both protocols, write `tcp, udp`"]);
    }

    #[test]
    fn fires_on_every_protocol_word() {
        for word in ["tcp", "udp", "sctp", "any"] {
            expect(&rule(&format!("udp {word}")), Code::ProtocolAsPortName);
        }
    }

    #[test]
    fn protocols_with_a_comma_and_other_names_are_fine() {
        assert_eq!(check(&rule("tcp, udp, tcp web, udp dns")), vec![]);
    }
}
