//! pipec's eBPF backend: the software pipeline that always holds every rule.
//!
//! ```text
//!   Mag ──mag_to_ebpf──▶ EbpfArtifact ──entries/diff──▶ MapOp* ──Datapath::apply──▶ kernel maps
//!                                                             bpf/pipec.bpf.o (tc programs)
//! ```
//!
//! - `bpf/` holds the C datapath (`pipec.bpf.c`, layouts and maps in `pipec.h`) and its
//!   object, built by `bpf/build.sh` and committed (as cilium/ebpf's bpf2go does), so that
//!   building pipec needs no clang. A test rebuilds it where clang is present and fails when
//!   the committed object is stale; another checks every map layout of
//!   `pipec-ebpf-common` against the object's BTF.
//! - [`codegen`]: [`mag_to_ebpf`], the MAG of one node as map contents; [`incremental`]:
//!   the same after an event, from the last artifact.
//! - [`artifact`]: the typed map contents, their text form and diffs.
//! - [`engine`]: the `ebpf` conformance engine (probes as real packets, `BPF_PROG_TEST_RUN`).
//! - [`datapath`]: loading with aya, pinning, tc attachment, map writing, test runs.
//! - [`maglev`]: Maglev tables; [`packet`]: a packet builder for tests and benchmarks.
//!
//! The programs are fixed; the compiled pipeline is map content.
#![deny(missing_docs)]

pub mod artifact;
pub mod btf;
pub mod codegen;
pub mod datapath;
pub mod engine;
pub mod incremental;
pub mod maglev;
pub mod packet;
pub mod sizes;
pub mod sys;

pub use artifact::EbpfArtifact;
pub mod backend;

pub use backend::{EbpfBackend, Interfaces, MapOps, SharedSizes};
pub use codegen::{mag_to_ebpf, mag_to_ebpf_cached, PolicyCache};
pub use datapath::{Attachment, Datapath, Program};
pub use engine::EbpfEngine;
pub use sizes::MapSizes;
