//! Label selectors, with Kubernetes matching rules.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A set of labels: key → value, ordered for stable output.
pub type Labels = BTreeMap<String, String>;

/// The operator of a set-based requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Operator {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: Operator,
    /// Values (empty for Exists and DoesNotExist).
    pub values: BTreeSet<String>,
}

/// A Kubernetes label selector. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Selector {
    /// `matchLabels`: every pair must be present.
    pub match_labels: Labels,
    /// `matchExpressions`: every requirement must hold.
    pub expressions: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every label set.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// A selector of exactly these labels.
    pub fn from_labels(labels: Labels) -> Selector {
        Selector {
            match_labels: labels,
            expressions: Vec::new(),
        }
    }

    /// True when the selector has no terms and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.expressions.is_empty()
    }

    /// Whether `labels` satisfy every term, with `get` looking a key up.
    ///
    /// The lookup is a closure so that Cilium's prefixed keys (`k8s:app`) can be matched
    /// against an endpoint's labels without building a second map.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| get(k) == Some(v.as_str()))
            && self.expressions.iter().all(|r| {
                let value = get(&r.key);
                match r.operator {
                    Operator::In => value.is_some_and(|v| r.values.contains(v)),
                    Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// Whether a plain Kubernetes label set matches.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }
}

impl std::fmt::Display for Selector {
    /// Prints the selector the way `kubectl get -l` accepts it; `{}` when empty.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return write!(f, "{{}}");
        }
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.expressions {
            let values = r.values.iter().cloned().collect::<Vec<_>>().join(",");
            parts.push(match r.operator {
                Operator::In => format!("{} in ({values})", r.key),
                Operator::NotIn => format!("{} notin ({values})", r.key),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        write!(f, "{}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_selects_everything_and_not_in_accepts_absent_keys() {
        assert!(Selector::everything().matches(&Labels::new()));
        let s = Selector {
            match_labels: Labels::new(),
            expressions: vec![Requirement {
                key: "ns".into(),
                operator: Operator::NotIn,
                values: ["y".to_string()].into(),
            }],
        };
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("ns", "x")])));
        assert!(!s.matches(&labels(&[("ns", "y")])));
        assert_eq!(s.to_string(), "ns notin (y)");
    }
}
