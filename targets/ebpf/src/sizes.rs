//! How many entries each datapath map is created with.
//!
//! `bpf/pipec.h` gives every map a default size ([`MapName::capacity`]). Those fit a node
//! of a few thousand pods; one node of the full generated cluster (150,000 pods) needs
//! 9.6 million policy entries, 134,073 backends and 1,054,985 Maglev slots. So the sizes
//! are a setting, as Cilium's `--bpf-policy-map-max` and `--bpf-lb-map-max` are: pipecd
//! takes `--ebpf-map-entries policy=16777216,backends=262144`, creates the maps with those
//! sizes, and its eBPF backend refuses a state that overfills them, so a change that does
//! not fit is rejected whole instead of failing halfway through an apply.
//!
//! The kernel fixes a map's size when it creates the map, and a pinned map outlives the
//! daemon: a restarted pipecd reuses the pinned maps with the sizes they were made with,
//! and reads those back ([`crate::Datapath::sizes`]) as the ones its backend checks
//! against. Resizing means removing the pins, which drops the state.
//!
//! [`MapSizes::to_hold`] gives the sizes an artifact needs, with room to grow, for a
//! tool that compiles without a device (`pipec compile` checks against
//! [`MapSizes::ceilings`] only).

use crate::artifact::{EbpfArtifact, MapName};
use std::collections::BTreeMap;
use std::fmt;

/// The most entries any map may be given: backend and frontend ids are 24-bit
/// (`codegen::natural_id`), and a larger map is more kernel memory than a DPU spares.
pub const CEILING: u64 = 1 << 24;

/// The entries each map is created with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSizes(BTreeMap<MapName, u64>);

impl Default for MapSizes {
    /// The sizes `bpf/pipec.h` declares.
    fn default() -> Self {
        MapSizes(MapName::ALL.iter().map(|m| (*m, m.capacity())).collect())
    }
}

impl MapSizes {
    /// The largest sizes a map may have: what a compile without a device checks against.
    pub fn ceilings() -> MapSizes {
        MapSizes(
            MapName::ALL
                .iter()
                .map(|m| (*m, if *m == MapName::Config { 1 } else { CEILING }))
                .collect(),
        )
    }

    /// The size of `map`.
    pub fn get(&self, map: MapName) -> u64 {
        self.0.get(&map).copied().unwrap_or_else(|| map.capacity())
    }

    /// Sets the size of `map`; it must be between 1 and [`CEILING`], and `config` holds
    /// one entry only.
    pub fn set(&mut self, map: MapName, entries: u64) -> Result<(), String> {
        if map == MapName::Config {
            return Err("`config` holds exactly one entry and cannot be resized".into());
        }
        if entries == 0 || entries > CEILING {
            return Err(format!(
                "`{}`: {entries} entries; expected 1 to {CEILING}",
                map.as_str()
            ));
        }
        self.0.insert(map, entries);
        Ok(())
    }

    /// The sizes `artifact` needs: each map's default, or more where the artifact holds
    /// more, with a quarter more room rounded up to a power of two (so the events that
    /// follow have space to grow into), within [`CEILING`].
    pub fn to_hold(artifact: &EbpfArtifact) -> MapSizes {
        let mut out = MapSizes::default();
        for (map, needed) in artifact.map_sizes() {
            if needed > map.capacity() && map != MapName::Config {
                let roomy = (needed + needed / 4).next_power_of_two().min(CEILING);
                out.0.insert(map, roomy.max(needed));
            }
        }
        out
    }

    /// The first map (in map order) that `artifact` overfills, with the entries it needs.
    pub fn overfilled(&self, artifact: &EbpfArtifact) -> Option<(MapName, u64)> {
        artifact
            .map_sizes()
            .into_iter()
            .find(|(map, needed)| *needed > self.get(*map))
    }

    /// The maps whose size is not the header's, with their sizes, in map order.
    pub fn changed(&self) -> impl Iterator<Item = (MapName, u64)> + '_ {
        self.0
            .iter()
            .filter(|(m, n)| **n != m.capacity())
            .map(|(m, n)| (*m, *n))
    }

    /// Reads `map=entries` pairs separated by commas over the defaults, as pipecd's
    /// `--ebpf-map-entries` takes them. A map named twice is an error, not the last one
    /// winning.
    pub fn parse(text: &str) -> Result<MapSizes, String> {
        let mut out = MapSizes::default();
        let mut seen = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, number) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected MAP=ENTRIES"))?;
            let map = MapName::named(name.trim()).ok_or_else(|| {
                let names: Vec<&str> = MapName::ALL.iter().map(|m| m.as_str()).collect();
                format!(
                    "`{}` is not a datapath map; expected one of {}",
                    name.trim(),
                    names.join(", ")
                )
            })?;
            if seen.contains(&map) {
                return Err(format!("`{}` is named twice", map.as_str()));
            }
            seen.push(map);
            let entries: u64 = number
                .trim()
                .replace('_', "")
                .parse()
                .map_err(|_| format!("`{part}`: `{}` is not a number", number.trim()))?;
            out.set(map, entries)?;
        }
        Ok(out)
    }
}

/// The maps whose size is not the header's, as `--ebpf-map-entries` takes them (empty
/// when every map has its default size).
impl fmt::Display for MapSizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .changed()
            .map(|(m, n)| format!("{}={n}", m.as_str()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::artifact::Backend;

    /// An artifact holding backends 1 to `n` and nothing else.
    pub(crate) fn with_backends(n: u32) -> EbpfArtifact {
        let mut a = EbpfArtifact::default();
        for id in 1..=n {
            let addr = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + id));
            a.backends.insert(id, Backend { addr, port: 80 });
        }
        a
    }

    #[test]
    fn parse_sets_the_maps_named_over_the_defaults() {
        let s = MapSizes::parse("policy=16_777_216, backends=131072").expect("valid");
        assert_eq!(s.get(MapName::Policy), 16_777_216);
        assert_eq!(s.get(MapName::Backends), 131_072);
        assert_eq!(s.get(MapName::Maglev), MapName::Maglev.capacity());
        assert_eq!(s.to_string(), "backends=131072,policy=16777216");
        assert_eq!(MapSizes::parse("").expect("empty"), MapSizes::default());
    }

    #[test]
    fn parse_says_what_is_wrong() {
        let cases = [
            (
                "polcy=10",
                "`polcy` is not a datapath map; expected one of config,",
            ),
            ("policy", "`policy`: expected MAP=ENTRIES"),
            ("policy=lots", "`lots` is not a number"),
            ("policy=0", "expected 1 to 16777216"),
            ("policy=16777217", "expected 1 to 16777216"),
            ("config=2", "`config` holds exactly one entry"),
            ("policy=10,policy=20", "`policy` is named twice"),
        ];
        for (text, expected) in cases {
            let e = MapSizes::parse(text).expect_err(text);
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    /// A map the artifact overfills is named with what it needs; the sizes made to hold
    /// the artifact hold it with room, and leave the other maps at their defaults.
    #[test]
    fn to_hold_makes_room_where_the_artifact_needs_it() {
        let room = MapName::Backends.capacity();
        let a = with_backends(room as u32);
        assert_eq!(MapSizes::default().overfilled(&a), None, "a full map fits");
        let a = with_backends(room as u32 + 1);
        assert_eq!(
            MapSizes::default().overfilled(&a),
            Some((MapName::Backends, room + 1))
        );
        let sizes = MapSizes::to_hold(&a);
        assert_eq!(sizes.overfilled(&a), None);
        assert_eq!(sizes.get(MapName::Backends), 131_072);
        assert_eq!(sizes.to_string(), "backends=131072");
        assert!(MapSizes::ceilings().overfilled(&a).is_none());
    }
}
