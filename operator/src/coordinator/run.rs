//! A run as the coordinator serves it: the run's [`RunPlan`] plus what only the coordinator
//! needs (its id, the spec as handed to joiners, the round policy, the codec as the wire names it).

use anyhow::Context;
use tributary_crds::{RunPlan, TrainingRunSpec};
use tributary_gauntlet::config::GauntletConfig;
use tributary_proto::{CHUNK_BYTES, identity, v1alpha1};

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
    /// The Gauntlet's thresholds; none when `participation.scoring.enabled` is false (every
    /// accepted update is aggregated at equal weight).
    pub gauntlet: Option<GauntletConfig>,
    /// The validators' public keys (`participation.scoring.validators`), with their peer ids.
    pub validators: Vec<([u8; 32], String)>,
}

impl RunConfig {
    pub fn new(run_id: &str, spec: TrainingRunSpec) -> anyhow::Result<Self> {
        if run_id.is_empty() || run_id.len() > 253 {
            anyhow::bail!("run id must be 1 to 253 characters");
        }
        let plan = RunPlan::new(spec)?;
        let participation = &plan.spec().participation;
        let gauntlet = match participation.scoring.enabled {
            true => {
                let cfg = GauntletConfig::from_participation(participation);
                cfg.validate()?;
                Some(cfg)
            }
            false => None,
        };
        let validators = participation
            .scoring
            .validators
            .iter()
            .map(|k| {
                let key: [u8; 32] = hex::decode(k)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .with_context(|| format!("validator key {k:?} is not 32 bytes of hex"))?;
                Ok((key, identity::peer_id(&key)))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            gauntlet,
            validators,
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

impl RunConfig {
    /// The validator (its peer id) whose public key this is, if the run trusts it.
    pub fn validator(&self, public_key: &[u8]) -> Option<&str> {
        self.validators
            .iter()
            .find(|(k, _)| k.as_slice() == public_key)
            .map(|(_, id)| id.as_str())
    }
}
