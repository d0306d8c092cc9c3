//! Integration tests of the CPT target: compile, rotation, bad input, key leaks, and the
#![allow(missing_docs, reason = "test crate")]
//! ESP oracles (tshark and scapy).

mod common;
mod compile;
#[cfg(feature = "dpdk")]
mod ffi;
mod input;
mod leak;
mod oracle;
mod secgw;
mod session;
