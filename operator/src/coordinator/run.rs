//! A run as the coordinator serves it: the run's [`RunPlan`] plus what only the coordinator
//! needs (its id, the spec as handed to joiners, the round policy, the codec as the wire names it).

use tributary_crds::{RunPlan, TrainingRunSpec};
use tributary_proto::{CHUNK_BYTES, v1alpha1};

use super::RoundPolicy;

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub run_id: String,
    pub plan: RunPlan,
    /// The spec as `JoinResponse.run_spec_json` carries it.
    pub spec_json: Vec<u8>,
    pub policy: RoundPolicy,
    /// The codec settings every update header must name.
    pub wire_codec: v1alpha1::CodecParams,
    pub max_chunk_bytes: u32,
}

impl RunConfig {
    pub fn new(run_id: &str, spec: TrainingRunSpec) -> anyhow::Result<Self> {
        if run_id.is_empty() || run_id.len() > 253 {
            anyhow::bail!("run id must be 1 to 253 characters");
        }
        let plan = RunPlan::new(spec)?;
        Ok(Self {
            run_id: run_id.to_owned(),
            spec_json: plan.spec().to_json()?,
            policy: RoundPolicy::try_from(&plan.spec().participation)?,
            wire_codec: v1alpha1::CodecParams::from(plan.tensors().codec()),
            max_chunk_bytes: CHUNK_BYTES as u32,
            plan,
        })
    }

    pub fn spec(&self) -> &TrainingRunSpec {
        self.plan.spec()
    }

    /// Whether a peer with this public key may join (allowlist mode names keys in hex).
    pub fn admits(&self, public_key: &[u8]) -> bool {
        self.spec().participation.admits(&hex::encode(public_key))
    }
}
