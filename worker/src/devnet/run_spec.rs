//! The TrainingRun a devnet runs when no manifest is given: the settings the strategy
//! comparison tuned (docs/benchmarks.md), on the embedded language.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tributary_crds::{
    CompressionSpec, DataSource, EmbeddedData, InnerOptimizer, ModelPreset, ModelSpec,
    OuterOptimizer, Quantizer, StopCondition, TrainingRunSpec,
};

use super::DevnetArgs;
use crate::simulate::{INNER_LR, SPARSE_H, SPARSE_OUTER_LR};

/// Name of the generated run.
pub(super) const DEVNET_RUN: &str = "devnet";

pub(crate) fn devnet_run(args: &DevnetArgs) -> Result<(String, TrainingRunSpec)> {
    let preset = ModelPreset::ALL
        .into_iter()
        .find(|p| p.name() == args.model)
        .with_context(|| {
            let names: Vec<&str> = ModelPreset::ALL.iter().map(|p| p.name()).collect();
            format!(
                "unknown model {:?}; one of {}",
                args.model,
                names.join(", ")
            )
        })?;
    if !(args.density > 0.0 && args.density <= 1.0) {
        bail!("--density must be in (0, 1], not {}", args.density);
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let mut spec = TrainingRunSpec::new(ModelSpec::preset(preset));
    spec.seed = 42;
    spec.data.source = DataSource::Embedded(EmbeddedData {
        seed: Some(7),
        ..EmbeddedData::default()
    });
    spec.data.batch_size = 16;
    spec.inner_optimizer = InnerOptimizer {
        lr: INNER_LR,
        warmup_steps: 50,
        inner_steps: args.inner_steps.unwrap_or(SPARSE_H),
        ..InnerOptimizer::default()
    };
    spec.outer_optimizer = OuterOptimizer {
        lr: Some(SPARSE_OUTER_LR),
        ..OuterOptimizer::default()
    };
    spec.compression = CompressionSpec {
        density: Some(args.density),
        quantizer: Quantizer::Balanced,
        ..CompressionSpec::default()
    };
    let p = &mut spec.participation;
    // Every peer trains every round; one that dies is dropped at its heartbeat timeout and
    // the round aggregates what arrived.
    p.min_peers = args.peers;
    p.max_peers = args.peers;
    p.reserve_peers = 0;
    p.round_deadline_seconds = 120;
    p.submission_window_seconds = 20;
    p.heartbeat_timeout_seconds = 10;
    spec.stop = StopCondition {
        total_rounds: Some(args.rounds),
        total_tokens: None,
    };
    spec.checkpoints.every_rounds = 10;
    spec.checkpoints.keep = 2;
    spec.check().context("the generated devnet run")?;
    Ok((DEVNET_RUN.to_owned(), spec))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: Metadata<'a>,
    spec: &'a TrainingRunSpec,
}

#[derive(Serialize)]
struct Metadata<'a> {
    name: &'a str,
}

/// The run as a TrainingRun manifest (what `kubectl apply` would take).
pub(super) fn manifest_yaml(name: &str, spec: &TrainingRunSpec) -> Result<String> {
    Ok(serde_yaml::to_string(&Manifest {
        api_version: "tributary.dev/v1alpha1",
        kind: "TrainingRun",
        metadata: Metadata { name },
        spec,
    })?)
}
