//! Messages known to be poor. Each test asserts today's output, so that a fix shows up as
//! a failing test here: then move the case to `bad_input/` with its better snapshot.

use pipec::diag;
use pipec::driver;
use pipec::model::build::BuildOptions;

fn check(name: &str, text: &str) -> String {
    let loaded = driver::load_texts(&[(name, text)], &BuildOptions::default());
    diag::emit_to_string(&loaded.sources, &loaded.diags)
}

/// An unclosed flow sequence is reported in the scanner's words ("flow sequence",
/// "flow construct") with the caret where the scanner gave up (here the end of the file);
/// only a secondary label points at the `[` that was never closed.
#[test]
fn unclosed_flow_sequence_points_at_the_end() {
    let out = check(
        "a.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: [web\nspec: {}\n",
    );
    assert!(
        out.contains("while parsing a flow sequence, expected ',' or ']'"),
        "{out}"
    );
    assert!(out.contains("a.yaml:7:1"), "{out}");
    assert!(out.contains("this `[` is not closed"), "{out}");
}

/// A Pod without `spec` is refused, as the API server refuses it (`ValidatePodSpec`
/// requires `spec.containers`); issue 18 asks pipec to reject what the API server rejects.
/// It was accepted before, for hand-written inputs that give pods only labels and an IP.
#[test]
fn a_pod_without_spec_is_refused() {
    let out = check(
        "a.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nstatus:\n  podIP: 10.244.0.5\n",
    );
    assert!(out.contains("error[E0101]: `spec` is missing"), "{out}");
}

/// Required fields of k8s-openapi types other than ports decode to defaults, so a missing
/// field is reported as a bad value: an ipBlock-less, selector-less NetworkPolicy peer
/// `{}` is an "empty peer" (good), but a `matchExpressions` entry without `key` is
/// accepted with the empty key.
#[test]
fn a_selector_requirement_without_key_is_accepted() {
    let out = check(
        "a.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\nspec:\n  podSelector:\n    matchExpressions:\n      - operator: Exists\n",
    );
    assert!(out.contains("selector key `` is invalid"), "{out}");
}
