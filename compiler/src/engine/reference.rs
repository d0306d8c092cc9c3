//! Engine `reference`: the reference semantics ([`crate::semantics`]) as an engine, the judge
//! every other engine is compared with.

use super::{Engine, EngineVerdict, Evaluator};
use crate::model::Cluster;
use crate::semantics::{self, Context, Options, Probe};

/// The reference semantics ([`crate::semantics`]) as an engine.
pub struct Reference;

impl Engine for Reference {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn prepare<'c>(&self, cluster: &'c Cluster) -> Result<Box<dyn Evaluator + 'c>, String> {
        // Conformance cases list the ports their servers listen on, so the reference checks
        // them, as the compiled engines do after the network's verdict.
        Ok(Box::new(ReferenceEvaluator(Context::with_options(
            cluster,
            Options {
                check_listening: true,
            },
        ))))
    }
}

struct ReferenceEvaluator<'c>(Context<'c>);

impl Evaluator for ReferenceEvaluator<'_> {
    fn evaluate(&self, probe: &Probe) -> EngineVerdict {
        let outcome = semantics::evaluate(&self.0, probe);
        EngineVerdict {
            allowed: outcome.allowed(),
            reason: outcome.reason,
        }
    }
}
