//! Messages known to be poor. Each test asserts today's output, so that a fix shows up as
//! a failing test here: then move the case to `bad_input/` with its better snapshot.

use pipec::diag;
use pipec::driver;
use pipec::model::build::BuildOptions;

fn check(name: &str, text: &str) -> String {
    let loaded = driver::load_texts(&[(name, text)], &BuildOptions::default());
    diag::emit_to_string(&loaded.sources, &loaded.diags)
}

/// An unclosed flow sequence is reported where the scanner gives up (the end of the
/// file), not at the `[` that was never closed.
#[test]
fn unclosed_flow_sequence_points_at_the_end() {
    let out = check(
        "a.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: [web\nspec: {}\n",
    );
    assert!(out.contains("expected ',' or ']'"), "{out}");
    assert!(out.contains("a.yaml:7:1"), "{out}");
}

/// serde_json says "key must be a string" for a trailing comma; only the hint names the
/// comma, and the caret is on the character after it.
#[test]
fn json_trailing_comma_is_described_as_a_key_problem() {
    let out = check(
        "a.json",
        "{\"apiVersion\": \"v1\", \"kind\": \"Namespace\",\n \"metadata\": {\"name\": \"prod\",},\n}\n",
    );
    assert!(out.contains("invalid JSON: key must be a string"), "{out}");
    assert!(out.contains("no comma after the last member"), "{out}");
}

/// An invalid name makes pipec skip the rest of the object, so its other problems (here a
/// port out of range) are only reported once the name is fixed.
#[test]
fn an_invalid_name_hides_the_objects_other_errors() {
    let out = check(
        "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: Web\nspec:\n  ports:\n    - port: 99999\n",
    );
    assert!(out.contains("E0103"), "{out}");
    assert!(!out.contains("E0109"), "{out}");
}

/// A Pod without `spec` is accepted (the API requires `spec.containers`), because
/// hand-written inputs often give pods only labels and an IP.
#[test]
fn a_pod_without_spec_is_accepted() {
    let out = check(
        "a.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nstatus:\n  podIP: 10.244.0.5\n",
    );
    assert_eq!(out, "");
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
