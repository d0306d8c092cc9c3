//! pipec
