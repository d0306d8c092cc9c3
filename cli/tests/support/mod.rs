//! What more than one of the CLI's test binaries needs.

/// The stages `pipec compile --emit` prints for any input, in pipeline order (`cpt` only has
/// something to print when the input has IPsec, `xfrm` writes keys to a file, `dot` is a
/// view of `mag`).
pub(crate) const STAGES: &[&str] = &[
    "model",
    "identities",
    "mag",
    "plan",
    "rte_flow",
    "testpmd",
    "ebpf",
];
