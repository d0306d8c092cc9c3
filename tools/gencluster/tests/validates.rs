//! The generated cluster must pass pipec's validation: no error, no warning.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use clap as _;
use serde as _;
use serde_json as _;

use gencluster::{generate, Spec};
use pipec::driver::load_texts;
use pipec::identity::cluster_to_identities;
use pipec::model::build::BuildOptions;

#[test]
fn small_preset_loads_without_diagnostics() {
    let spec = Spec::small();
    let text = generate(&spec);
    let loaded = load_texts(&[("small.json", &text)], &BuildOptions::default());
    let rendered = pipec::diag::emit_to_string(&loaded.sources, &loaded.diags);
    assert!(loaded.diags.is_empty(), "diagnostics:\n{rendered}");
    let c = &loaded.cluster;
    assert_eq!(c.pods.len(), spec.pods);
    assert_eq!(c.services.len(), spec.services);
    assert_eq!(c.network_policies.len(), spec.policies);
    assert_eq!(c.nodes.len(), spec.nodes);
    assert_eq!(c.namespaces.len(), spec.namespaces + 2);
    let backends: usize = c.services.iter().map(|s| s.backends.len()).sum();
    assert_eq!(backends, spec.endpoints);
    // Every backend is a known pod on the node the slice names.
    for s in &c.services {
        for b in &s.backends {
            let pod = c.pod(b.pod.expect("endpoint points at a pod"));
            assert_eq!(pod.node, b.node);
        }
    }
    let ids = cluster_to_identities(c, None);
    assert_eq!(ids.pods.len(), spec.pods);
    // Workloads share identities: far fewer identities than pods.
    assert!(ids.by_id.len() < spec.pods / 2);
}

#[test]
fn compact_and_pretty_give_the_same_model() {
    let spec = Spec {
        pods: 300,
        services: 30,
        endpoints: 200,
        policies: 40,
        namespaces: 4,
        nodes: 3,
        ..Spec::small()
    };
    let pretty = generate(&spec);
    let compact = generate(&Spec {
        pretty: false,
        ..spec
    });
    let a = load_texts(&[("a.json", &pretty)], &BuildOptions::default());
    let b = load_texts(&[("b.json", &compact)], &BuildOptions::default());
    assert!(a.diags.is_empty() && b.diags.is_empty());
    assert_eq!(
        pipec::model::text::cluster_to_text(&a.cluster),
        pipec::model::text::cluster_to_text(&b.cluster)
    );
}
