//! The eBPF backend's object and kernel tests, in one test binary.
//!
//! - `object`: the committed object is current and its BTF matches the Rust layouts;
//! - `test_run`: real packets through the loaded programs with `BPF_PROG_TEST_RUN`;
//! - `netns`: pods as network namespaces joined by veth pairs, real TCP and UDP;
//! - `codegen`: `mag_to_ebpf` on the Star Wars example (snapshot, no kernel needed);
//! - `conformance`: the shared conformance suite through the `ebpf` engine;
//! - `differential`: random clusters, eBPF == MAG == reference;
//! - `e2e_mag`: maps compiled from the MAG, real connections between pod namespaces;
//! - `traffic_policy`: node-local service tables of traffic policies, from each node's MAG;
//! - `wire`: services from the wire (node port, load-balancer, external and cluster IPs)
//!   through `from_wire`, reverse NAT of the replies in `from_pod`, affinity, policy;
//! - `sizes`: maps created with the sizes asked for, kept by their pins;
//! - `conflict`: a named allow that outranks a deny for every remote, on real packets.
//!
//! The kernel tests need root (CI runs as root) and fail loudly without it: a skipped
//! kernel test would look like a passing one.

mod affinity;
mod codegen;
mod common;
mod conflict;
mod conformance;
mod differential;
mod e2e_mag;
mod netns;
mod object;
mod sizes;
mod test_run;
mod traffic_policy;
mod wire;
