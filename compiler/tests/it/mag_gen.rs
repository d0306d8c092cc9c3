//! Random clusters for the MAG property tests: `pipec::testgen`, with pods spread over up to
//! two nodes (the MAG, unlike the eBPF datapath, runs several nodes).

use proptest::prelude::*;

// Everything but `spec`, which this module defines for more nodes (a local item shadows the
// glob).
pub(crate) use pipec::testgen::*;

/// Clusters of up to `max_pods` pods on no nodes (the synthetic one), one node or two.
pub(crate) fn spec(max_pods: usize) -> impl Strategy<Value = Spec> {
    pipec::testgen::spec_on_nodes(max_pods, 2)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn generated_clusters_load(s in spec(6)) {
        let c = load(&s);
        prop_assert_eq!(c.pods.len(), s.pods.len());
    }
}
