//! Integration tests of the CPT target: compile, rotation, bad input, key leaks, and the
#![allow(missing_docs, reason = "test crate")]
//! ESP oracles (tshark and scapy).

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use aes_gcm as _;
use base64 as _;
use pipec_dpdk_sys as _;
use serde as _;
use serde_yaml as _;
use sha2 as _;

mod common;
mod compile;
#[cfg(feature = "dpdk")]
mod ffi;
mod input;
mod leak;
mod oracle;
mod secgw;
mod session;
