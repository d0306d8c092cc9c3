//! The single integration-test binary of `pipec`; each module tests one area.

mod mag_gen;
mod mag_incremental;
mod mag_starwars;
