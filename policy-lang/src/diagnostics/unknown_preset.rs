//! Diagnostic: unknown-preset
//!
//! Fires when `target "x" extends "NAME"` names no built-in preset. The presets are
//! `octeon-cn10k` and `ebpf`. A target cannot extend another `.pipe` target.
//!
//! Fix: extend one of the presets, or describe the target without `extends`.

use super::{Code, Diagnostic};
use crate::ast::Str;
use crate::suggest::best_match;
use crate::targets::PRESETS;

/// Makes the diagnostic for `name`; `is_user_target` says it names a `.pipe` target.
pub(crate) fn new(name: &Str, is_user_target: bool) -> Diagnostic {
    let d = Diagnostic::new(
        Code::UnknownPreset,
        format!("unknown preset `{}`", name.value),
        name.span,
        "not a built-in preset",
    )
    .suggest(best_match(&name.value, PRESETS.iter().map(|p| p.name)));
    let presets: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
    let d = d.note(format!("the presets are {}", crate::vocab::list(&presets)));
    if is_user_target {
        d.note("a target can only extend a built-in preset, not another `.pipe` target")
    } else {
        d
    }
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn suggests_the_closest_preset() {
        let d = expect(
            "target \"t\" extends \"octeon-cn10\" { }\n",
            Code::UnknownPreset,
        );
        assert_eq!(d[0].hints, vec!["did you mean `octeon-cn10k`?".to_string()]);
    }
}
