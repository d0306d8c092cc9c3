//! Diagnostic: unknown-policy
//!
//! Fires when a placement hint names a policy (`pin policy "x" ...`) that no `policy`
//! block of the program (this file and its includes) defines.
//!
//! Fix: correct the name (the hint gives the closest), or include the file defining it.

use super::{Code, Diagnostic};
use crate::ast::Str;
use crate::suggest::best_match;

/// Makes the diagnostic for `name`, given the names of the defined policies.
pub(crate) fn new<'a>(name: &Str, known: impl IntoIterator<Item = &'a str>) -> Diagnostic {
    Diagnostic::new(
        Code::UnknownPolicy,
        format!("no policy is called `{}`", name.value),
        name.span,
        "unknown policy",
    )
    .suggest(best_match(&name.value, known))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn suggests_a_defined_policy() {
        let src = "policy \"web-allow\" priority 1 { subject namespaces {}; ingress allow from entity all; }\n\
                   placement { pin policy \"web-alow\" on \"ebpf\"; }\n";
        let d = expect(src, Code::UnknownPolicy);
        assert_eq!(d[0].hints, vec!["did you mean `web-allow`?".to_string()]);
    }
}
