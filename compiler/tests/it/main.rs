//! The single integration-test binary of `pipec`; each module tests one area.

mod mag_starwars;
