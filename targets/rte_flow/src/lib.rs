//! pipec's rte_flow backend: the OCTEON 10 (cnxk) NPC flow table through DPDK rte_flow.
//!
//! ```text
//!  PlanSlice ──lower::lower_rule──▶ FlowRule (typed: attr, items with spec/mask, actions)
//!     (HwRule)                         │ cnxk::check_rule (driver + default MKEX limits)
//!                                      ├──serde──▶ JSON            (--emit rte_flow)
//!                                      ├──testpmd::flow_create──▶ text  (--emit testpmd)
//!                                      └──ffi (feature `dpdk`)──▶ rte_flow_attr/item/action
//!                                            arrays → rte_flow_conv / validate / create
//! ```
//!
//! The backend is [`RteFlowBackend`] (target `octeon-cn10k`); its artifact is
//! [`RteFlowArtifact`]. Every rule the backend emits passed [`cnxk::check_rule`]: no item
//! the driver would skip, no field outside the default key, no action the driver lacks.
//! With the `dpdk` feature, [`ffi`] builds the C structures and applies rules to a port,
//! turning a device refusal into an [`Unsupported`] (the rule goes back to eBPF).

#![cfg_attr(
    not(test),
    warn(clippy::panic, clippy::print_stdout, clippy::todo, clippy::dbg_macro)
)]

pub mod cnxk;
#[cfg(feature = "dpdk")]
pub mod ffi;
pub mod fixtures;
pub mod lower;
pub mod oracle;
pub mod rule;
pub mod testpmd;

use pipec::backend::{
    octeon_cn10k_profile, plan_slice, Artifact, Backend, CompileInput, HwAction, HwRule,
    Operations, PlanSlice, Profile, Reason, Unsupported,
};
use rule::{Action, FlowRule};
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::any::Any;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The `octeon-cn10k` backend.
#[derive(Clone, Debug)]
pub struct RteFlowBackend {
    profile: Profile,
    levels: u32,
    /// The rules and keys of the last two compiles (see [`Memo`]).
    memo: Arc<Mutex<Memo>>,
}

/// The flow rules of the last two compiles, by the plan rule they were lowered from, and
/// their keys. An event changes a few of a node's thousands of rules, so a compile lowers
/// and checks only the rules it has not seen, and the diff formats only their keys (which
/// was most of an event's diff: both artifacts' keys, every time). Entries the last two
/// compiles did not use are dropped: the diff after a compile reads the previous one's.
#[derive(Default)]
struct Memo {
    /// Compiles so far.
    generation: u64,
    /// Each plan rule's flow rule, with the compile that last used it, by the hash of the
    /// rule's content ([`HwRule::content_hash`], computed in place: looking up thousands of
    /// rules per compile by an owned copy of each one's matches and actions was most of
    /// the compile). The plan rule is kept, its id and origin cleared, to tell two
    /// contents with one hash apart; of two such, only the first is kept.
    flows: FxHashMap<u64, (HwRule, FlowRule, u64)>,
    /// Each flow rule's [`rule_key`], with the compile that last used it.
    keys: FxHashMap<FlowRule, (String, u64)>,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("flows", &self.flows.len())
            .finish_non_exhaustive()
    }
}

impl Memo {
    /// Drops what neither this compile nor the one before used.
    fn prune(&mut self) {
        let oldest = self.generation.saturating_sub(1);
        self.flows.retain(|_, (_, _, g)| *g >= oldest);
        self.keys.retain(|_, (_, g)| *g >= oldest);
    }

    /// The key of `rule`, formatted when no compile has.
    fn key(&self, rule: &FlowRule) -> Cow<'_, str> {
        match self.keys.get(rule) {
            Some((k, _)) => Cow::Borrowed(k),
            None => Cow::Owned(rule_key(rule)),
        }
    }

    /// The rules of `a` by key, by reference: only the rules created are cloned into
    /// operations. A hash map: the few operations are put in key order after, where a
    /// tree of thousands of keys compared long strings at every insertion.
    fn keyed<'a>(&'a self, a: &'a RteFlowArtifact) -> FxHashMap<Cow<'a, str>, &'a EmittedRule> {
        a.rules.iter().map(|r| (self.key(&r.rule), r)).collect()
    }
}

impl Default for RteFlowBackend {
    fn default() -> Self {
        RteFlowBackend::new(octeon_cn10k_profile())
    }
}

impl RteFlowBackend {
    /// A backend for `profile`, with the profile's default number of priority levels.
    pub fn new(profile: Profile) -> RteFlowBackend {
        let levels = profile.caps.priority_levels;
        RteFlowBackend {
            profile,
            levels,
            memo: Arc::default(),
        }
    }

    /// The same backend with `flow_max_priority` set to `levels` (at most the profile's
    /// maximum).
    pub fn with_levels(mut self, levels: u32) -> RteFlowBackend {
        self.levels = levels.min(self.profile.caps.max_priority_levels);
        // Rules checked against other levels are not these levels' rules.
        self.memo = Arc::default();
        self
    }

    /// The configured priority levels.
    pub fn levels(&self) -> u32 {
        self.levels
    }

    /// Lowers and checks one rule.
    pub fn lower_rule(&self, rule: &HwRule) -> Result<FlowRule, Unsupported> {
        let fail = |r| Unsupported::new(self.profile.name.clone(), r);
        self.profile.check_rule(rule)?;
        let flow = lower::lower_rule(rule).map_err(fail)?;
        cnxk::check_rule(&self.profile, self.levels, &flow)?;
        Ok(flow)
    }

    /// [`RteFlowBackend::lower_rule`] of a rule the memo may hold; a new flow rule's key is
    /// formatted here, once.
    fn lower_memo(&self, memo: &mut Memo, r: &HwRule) -> Result<FlowRule, Unsupported> {
        let generation = memo.generation;
        let hash = r.content_hash();
        let flow = match memo.flows.get_mut(&hash) {
            Some((seen, flow, g)) if seen.content() == r.content() => {
                *g = generation;
                flow.clone()
            }
            // Another content with the same hash: lowered every time, which is rare and
            // still exact.
            Some(_) => self.lower_rule(r)?,
            None => {
                let flow = self.lower_rule(r)?;
                let seen = HwRule {
                    id: 0,
                    origin: String::new(),
                    matches: r.matches.clone(),
                    actions: r.actions.clone(),
                    ..*r
                };
                memo.flows.insert(hash, (seen, flow.clone(), generation));
                flow
            }
        };
        match memo.keys.get_mut(&flow) {
            Some((_, g)) => *g = generation,
            None => {
                let key = rule_key(&flow);
                memo.keys.insert(flow.clone(), (key, generation));
            }
        }
        Ok(flow)
    }

    /// Lowers a whole slice into the concrete artifact.
    pub fn lower_slice(&self, slice: &PlanSlice) -> Result<RteFlowArtifact, Unsupported> {
        let fail = |r| Unsupported::new(self.profile.name.clone(), r);
        let budget = &self.profile.budget;
        // The plan's rules fit the entries the platform and connection offload leave it.
        if let Some(usable) = self.profile.plan_entries() {
            if slice.rules.len() as u64 > usable {
                return Err(fail(Reason::Capacity {
                    resource: "flow entries".to_string(),
                    limit: usable,
                }));
            }
        }
        let count = |f: fn(&HwAction) -> bool| {
            slice
                .rules
                .iter()
                .filter(|r| r.actions.iter().any(f))
                .count() as u64
        };
        if let Some(counters) = budget.counters {
            if count(|a| matches!(a, HwAction::Count)) > counters {
                return Err(fail(Reason::Capacity {
                    resource: "counters".to_string(),
                    limit: counters,
                }));
            }
        }
        if let Some(rss) = budget.rss_rules_per_port {
            let mut per_port: BTreeMap<u16, u64> = BTreeMap::new();
            for r in &slice.rules {
                if r.actions.iter().any(|a| matches!(a, HwAction::Rss { .. })) {
                    *per_port.entry(r.port).or_default() += 1;
                }
            }
            if per_port.values().any(|n| *n > rss) {
                return Err(fail(Reason::Capacity {
                    resource: "RSS rules per port".to_string(),
                    limit: rss,
                }));
            }
        }
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        memo.generation += 1;
        let mut rules = Vec::with_capacity(slice.rules.len());
        for r in &slice.rules {
            rules.push(EmittedRule {
                id: r.id,
                origin: r.origin.clone(),
                rule: self.lower_memo(&mut memo, r)?,
            });
        }
        memo.prune();
        drop(memo);
        rules.sort_by_key(|r| (r.rule.port, r.rule.attr.priority, r.id));
        Ok(RteFlowArtifact {
            target: self.profile.name.clone(),
            rules,
        })
    }
}

impl Backend for RteFlowBackend {
    fn name(&self) -> &str {
        &self.profile.name
    }

    fn profile(&self) -> &Profile {
        &self.profile
    }

    fn check_rule(&self, rule: &HwRule) -> Result<(), Unsupported> {
        self.lower_rule(rule).map(|_| ())
    }

    fn compile(&self, input: &CompileInput<'_>) -> Result<Box<dyn Artifact>, Unsupported> {
        Ok(Box::new(self.lower_slice(&plan_slice(input))?))
    }

    /// The rules are the plan's slice, lowered: nothing else of the input is read.
    fn reads_only_the_plan(&self) -> bool {
        true
    }

    fn diff(&self, old: Option<&dyn Artifact>, new: &dyn Artifact) -> Box<dyn Operations> {
        let empty = RteFlowArtifact {
            target: self.profile.name.clone(),
            rules: Vec::new(),
        };
        let old = old
            .and_then(|a| a.as_any().downcast_ref::<RteFlowArtifact>())
            .unwrap_or(&empty);
        let memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        match new.as_any().downcast_ref::<RteFlowArtifact>() {
            Some(new) => Box::new(memo_ops(&memo, old, new)),
            None => Box::new(FlowOps {
                target: self.profile.name.clone(),
                ops: Vec::new(),
            }),
        }
    }
}

/// One operation on the device's flow table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FlowOp {
    /// `rte_flow_destroy` of the rule the device holds for this key.
    Destroy {
        /// The rule's [`rule_key`].
        key: String,
    },
    /// `rte_flow_create` of a rule.
    Create {
        /// The rule's [`rule_key`].
        key: String,
        /// The rule.
        rule: EmittedRule,
    },
}

/// The flow-table operations between two artifacts: every stale rule destroyed, then
/// every new rule created, each group in key order.
///
/// Destroying first is the safe order for a table that is a cache in front of the complete
/// eBPF pipeline: a rule the table does not hold only sends its packets to software, which
/// decides them by the same policy, so no intermediate table lets through what the new
/// policy forbids. Creating first could leave, for a moment, two overlapping rules of one
/// priority level with different actions, whose order the device does not define. The
/// runtime applies the eBPF operations of a change before these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowOps {
    /// The target.
    pub target: String,
    /// The operations, in order.
    pub ops: Vec<FlowOp>,
}

impl Operations for FlowOps {
    fn target(&self) -> &str {
        &self.target
    }
    fn len(&self) -> usize {
        self.ops.len()
    }
    fn text(&self) -> String {
        self.ops
            .iter()
            .map(|op| match op {
                FlowOp::Destroy { key } => format!("destroy {key}\n"),
                FlowOp::Create { key, rule } => format!("create r{} {key}\n", rule.id),
            })
            .collect()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A rule's identity on the device: port, attributes, pattern and actions, without the
/// plan's rule id and origin (a re-plan may renumber a rule the device already holds).
pub fn rule_key(rule: &FlowRule) -> String {
    let actions: Vec<String> = rule
        .actions
        .iter()
        .map(|a| {
            testpmd::action_text(a).unwrap_or_else(|_| serde_json::to_string(a).unwrap_or_default())
        })
        .collect();
    format!(
        "{} actions {}",
        testpmd::match_text(rule),
        actions.join(" / ")
    )
}

/// The operations that turn a device holding `old` into one holding `new` ([`FlowOps`]).
pub fn flow_ops(old: &RteFlowArtifact, new: &RteFlowArtifact) -> FlowOps {
    memo_ops(&Memo::default(), old, new)
}

/// [`flow_ops`], reading the keys `memo` holds instead of formatting them again.
fn memo_ops(memo: &Memo, old: &RteFlowArtifact, new: &RteFlowArtifact) -> FlowOps {
    let target = new.target.clone();
    // A session that kept the plan diffs the kept artifact with itself (every Service
    // endpoint event): nothing to do, known without keying thousands of rules.
    if std::ptr::eq(old, new) {
        return FlowOps {
            target,
            ops: Vec::new(),
        };
    }
    let (old, new) = (memo.keyed(old), memo.keyed(new));
    let mut gone: Vec<&str> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(|k| k.as_ref())
        .collect();
    gone.sort_unstable();
    let mut came: Vec<(&str, &EmittedRule)> = new
        .iter()
        .filter(|(k, _)| !old.contains_key(*k))
        .map(|(k, r)| (k.as_ref(), *r))
        .collect();
    came.sort_unstable_by_key(|(k, _)| *k);
    // Destroys, then creates, each in key order.
    let mut ops: Vec<FlowOp> = gone
        .into_iter()
        .map(|k| FlowOp::Destroy { key: k.to_string() })
        .collect();
    ops.extend(came.into_iter().map(|(k, r)| FlowOp::Create {
        key: k.to_string(),
        rule: r.clone(),
    }));
    FlowOps { target, ops }
}

/// One emitted rule with the plan rule it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EmittedRule {
    /// The plan rule's id.
    pub id: u32,
    /// Where it came from.
    pub origin: String,
    /// The rte_flow rule.
    #[serde(flatten)]
    pub rule: FlowRule,
}

/// The rte_flow rules of one plan slice, by port, priority level, then id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RteFlowArtifact {
    /// The target name.
    pub target: String,
    /// The rules.
    pub rules: Vec<EmittedRule>,
}

impl RteFlowArtifact {
    /// The testpmd script: a `# rN origin` comment and a `flow create` line per rule; a
    /// rule testpmd cannot express (SECURITY) is a comment that says why.
    pub fn testpmd_text(&self) -> String {
        let mut out = String::new();
        for r in &self.rules {
            out.push_str(&format!("# r{} {}\n", r.id, r.origin));
            match testpmd::flow_create(&r.rule) {
                Ok(line) => out.push_str(&line),
                Err(e) => out.push_str(&format!("# not expressible in testpmd: {e}")),
            }
            out.push('\n');
        }
        out
    }

    /// Only the `flow create` lines (for the testpmd oracle).
    pub fn flow_lines(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter_map(|r| testpmd::flow_create(&r.rule).ok())
            .collect()
    }

    /// Rules that used each action class, for budget summaries.
    pub fn count_actions(&self, f: fn(&Action) -> bool) -> usize {
        self.rules
            .iter()
            .filter(|r| r.rule.actions.iter().any(f))
            .count()
    }
}

impl Artifact for RteFlowArtifact {
    fn target(&self) -> &str {
        &self.target
    }

    fn text(&self) -> String {
        self.testpmd_text()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    fn items(&self) -> Vec<(String, String)> {
        // The key is the rule's match (port, attributes, pattern): a changed action list
        // on the same match is a modification (destroy + create on the device).
        self.rules
            .iter()
            .map(|r| {
                let actions: Vec<String> = r
                    .rule
                    .actions
                    .iter()
                    .map(|a| {
                        testpmd::action_text(a)
                            .unwrap_or_else(|_| serde_json::to_string(a).unwrap_or_default())
                    })
                    .collect();
                (testpmd::match_text(&r.rule), actions.join(" / "))
            })
            .collect()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests;
