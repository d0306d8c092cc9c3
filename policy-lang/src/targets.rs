//! Target profiles: the built-in presets and the resolved profile a `target` block gives.
//!
//! A profile says what a target can do: which fields it matches and with which masks,
//! its match kinds and actions, its priority levels and capacities, and a cost per entry
//! the partitioner weighs. The presets are plain data tables ([`PRESETS`]); a `target`
//! block starts from its preset (or from an empty profile) and applies its statements in
//! order.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

/// How a field may be masked in a match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaskKind {
    /// Only the whole field.
    Exact,
    /// A prefix (addresses only).
    Prefix,
    /// Any bit mask.
    Any,
}

impl MaskKind {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            MaskKind::Exact => "exact",
            MaskKind::Prefix => "prefix",
            MaskKind::Any => "any",
        }
    }

    /// Parses a keyword.
    pub fn from_name(s: &str) -> Option<MaskKind> {
        match s {
            "exact" => Some(MaskKind::Exact),
            "prefix" => Some(MaskKind::Prefix),
            "any" => Some(MaskKind::Any),
            _ => None,
        }
    }
}

/// A match kind of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchKind {
    /// Exact match.
    Exact,
    /// Longest-prefix match.
    Lpm,
    /// Value and mask, with priorities.
    Ternary,
    /// Ranges.
    Range,
}

impl MatchKind {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKind::Exact => "exact",
            MatchKind::Lpm => "lpm",
            MatchKind::Ternary => "ternary",
            MatchKind::Range => "range",
        }
    }

    /// Parses a keyword.
    pub fn from_name(s: &str) -> Option<MatchKind> {
        match s {
            "exact" => Some(MatchKind::Exact),
            "lpm" => Some(MatchKind::Lpm),
            "ternary" => Some(MatchKind::Ternary),
            "range" => Some(MatchKind::Range),
            _ => None,
        }
    }
}

/// A capacity: a number, or no bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Limit {
    /// At most this many.
    Finite(u32),
    /// No bound worth counting.
    Unlimited,
}

impl Limit {
    /// Whether `n` fits.
    pub fn allows(self, n: u64) -> bool {
        match self {
            Limit::Finite(max) => n <= u64::from(max),
            Limit::Unlimited => true,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Finite(n) => write!(f, "{n}"),
            Limit::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// A built-in target profile, as a plain data table.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// Its name, used by `extends`.
    pub name: &'static str,
    /// What it models.
    pub description: &'static str,
    /// Matchable fields and their masks.
    pub fields: &'static [(&'static str, MaskKind)],
    /// Match kinds.
    pub kinds: &'static [MatchKind],
    /// Actions.
    pub actions: &'static [&'static str],
    /// Priority levels used by default.
    pub priority_levels: Limit,
    /// Priority levels the hardware can have.
    pub max_priority_levels: Limit,
    /// Table entries.
    pub entries: Limit,
    /// Counters.
    pub counters: Limit,
    /// Security associations (inline IPsec).
    pub sa_limit: Limit,
    /// The relative cost of one entry.
    pub cost_per_entry: u32,
}

/// The built-in presets.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "octeon-cn10k",
        description: "OCTEON 10 NPC flow table, default MKEX profile",
        fields: &[
            ("in_port", MaskKind::Exact),
            ("eth.type", MaskKind::Exact),
            ("ipv4.src", MaskKind::Any),
            ("ipv4.dst", MaskKind::Any),
            ("ip.proto", MaskKind::Exact),
            ("l4.sport", MaskKind::Exact),
            ("l4.dport", MaskKind::Exact),
        ],
        kinds: &[MatchKind::Exact, MatchKind::Lpm, MatchKind::Ternary],
        actions: &[
            "allow",
            "drop",
            "count",
            "mark",
            "queue",
            "rss",
            "vlan_push",
            "vlan_pop",
        ],
        priority_levels: Limit::Finite(3),
        max_priority_levels: Limit::Finite(32),
        entries: Limit::Finite(8192),
        counters: Limit::Finite(512),
        sa_limit: Limit::Finite(0),
        cost_per_entry: 1,
    },
    Preset {
        name: "ebpf",
        description: "the software pipeline on the DPU cores (tc eBPF); matches everything",
        fields: &[
            ("in_port", MaskKind::Any),
            ("eth.type", MaskKind::Any),
            ("ipv4.src", MaskKind::Any),
            ("ipv4.dst", MaskKind::Any),
            ("ipv6.src", MaskKind::Any),
            ("ipv6.dst", MaskKind::Any),
            ("ip.proto", MaskKind::Any),
            ("l4.sport", MaskKind::Any),
            ("l4.dport", MaskKind::Any),
            ("tcp.flags", MaskKind::Any),
            ("esp.spi", MaskKind::Any),
            ("vxlan.vni", MaskKind::Any),
            ("src_identity", MaskKind::Any),
            ("dst_identity", MaskKind::Any),
            ("endpoint", MaskKind::Any),
            ("service", MaskKind::Any),
            ("backend", MaskKind::Any),
            ("ct_state", MaskKind::Any),
            ("mark", MaskKind::Any),
            ("verdict", MaskKind::Any),
        ],
        kinds: &[
            MatchKind::Exact,
            MatchKind::Lpm,
            MatchKind::Ternary,
            MatchKind::Range,
        ],
        actions: crate::vocab::ACTIONS,
        priority_levels: Limit::Unlimited,
        max_priority_levels: Limit::Unlimited,
        entries: Limit::Unlimited,
        counters: Limit::Unlimited,
        sa_limit: Limit::Unlimited,
        cost_per_entry: 10,
    },
];

/// The preset with this name.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// A resolved target profile: a preset merged with a block's statements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetProfile {
    /// The name.
    pub name: String,
    /// The preset it extends, if any.
    pub extends: Option<String>,
    /// Whether it is a built-in preset itself.
    pub builtin: bool,
    /// Matchable fields and their masks.
    pub fields: BTreeMap<String, MaskKind>,
    /// Match kinds.
    pub kinds: BTreeSet<MatchKind>,
    /// Actions.
    pub actions: BTreeSet<String>,
    /// Priority levels used.
    pub priority_levels: Limit,
    /// Priority levels the hardware can have.
    pub max_priority_levels: Limit,
    /// Table entries.
    pub entries: Limit,
    /// Counters.
    pub counters: Limit,
    /// Security associations.
    pub sa_limit: Limit,
    /// The relative cost of one entry.
    pub cost_per_entry: u32,
}

impl TargetProfile {
    /// An empty profile: nothing matchable, one priority level, no capacity.
    pub fn empty(name: &str) -> TargetProfile {
        TargetProfile {
            name: name.to_string(),
            extends: None,
            builtin: false,
            fields: BTreeMap::new(),
            kinds: BTreeSet::new(),
            actions: BTreeSet::new(),
            priority_levels: Limit::Finite(1),
            max_priority_levels: Limit::Finite(1),
            entries: Limit::Finite(0),
            counters: Limit::Finite(0),
            sa_limit: Limit::Finite(0),
            cost_per_entry: 1,
        }
    }

    /// The profile of a preset.
    pub fn from_preset(p: &Preset) -> TargetProfile {
        TargetProfile {
            name: p.name.to_string(),
            extends: None,
            builtin: true,
            fields: p.fields.iter().map(|(f, m)| (f.to_string(), *m)).collect(),
            kinds: p.kinds.iter().copied().collect(),
            actions: p.actions.iter().map(|a| a.to_string()).collect(),
            priority_levels: p.priority_levels,
            max_priority_levels: p.max_priority_levels,
            entries: p.entries,
            counters: p.counters,
            sa_limit: p.sa_limit,
            cost_per_entry: p.cost_per_entry,
        }
    }

    /// Prints the profile as a self-contained `.pipe` target block (no `extends`), in the
    /// vocabulary's order. The output parses and resolves to the same profile.
    pub fn to_pipe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "target {} {{", crate::format::quote(&self.name));
        let fields: Vec<String> = crate::vocab::FIELDS
            .iter()
            .filter_map(|f| self.fields.get(*f).map(|m| format!("{f} {}", m.as_str())))
            .collect();
        if !fields.is_empty() {
            let _ = writeln!(out, "  match {};", fields.join(", "));
        }
        if !self.kinds.is_empty() {
            let kinds: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
            let _ = writeln!(out, "  kinds {};", kinds.join(", "));
        }
        let actions: Vec<&str> = crate::vocab::ACTIONS
            .iter()
            .filter(|a| self.actions.contains(**a))
            .copied()
            .collect();
        if !actions.is_empty() {
            let _ = writeln!(out, "  actions {};", actions.join(", "));
        }
        let _ = writeln!(
            out,
            "  priority levels {} max {};",
            self.priority_levels, self.max_priority_levels
        );
        let _ = writeln!(out, "  entries {};", self.entries);
        let _ = writeln!(out, "  counters {};", self.counters);
        let _ = writeln!(out, "  sa limit {};", self.sa_limit);
        let _ = writeln!(out, "  cost per entry {};", self.cost_per_entry);
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_fields_are_in_the_vocabulary() {
        for p in PRESETS {
            for (f, _) in p.fields {
                assert!(crate::vocab::FIELDS.contains(f), "{f}");
            }
            for a in p.actions {
                assert!(crate::vocab::ACTIONS.contains(a), "{a}");
            }
        }
    }

    #[test]
    fn cn10k_profile_prints() {
        let p = TargetProfile::from_preset(preset("octeon-cn10k").expect("preset"));
        let text = p.to_pipe();
        assert!(text.contains("match in_port exact, eth.type exact, ipv4.src any"));
        assert!(text.contains("entries 8192;"));
    }
}
