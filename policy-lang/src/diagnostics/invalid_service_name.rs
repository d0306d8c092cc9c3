//! Diagnostic: invalid-service-name
//!
//! Fires when a service is not written `"namespace/name"`, or when either part is not a
//! DNS label (at most 63 lowercase letters, digits and `-`, beginning and ending with a
//! letter or digit).
//!
//! Fix: write the service as `"namespace/name"`.

use super::{Code, Diagnostic};
use crate::ast::Str;

/// Makes the diagnostic for `name`, with what is wrong.
pub(crate) fn new(name: &Str, reason: &str) -> Diagnostic {
    Diagnostic::new(
        Code::InvalidServiceName,
        format!("`{}` is not a service name", name.value),
        name.span,
        reason,
    )
    .hint("write services as \"namespace/name\"")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_without_namespace() {
        expect(
            "policy \"p\" priority 1 { subject namespaces {}; egress allow to service \"dns\"; }\n",
            Code::InvalidServiceName,
        );
    }
}
