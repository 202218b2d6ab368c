//! Hostile peer modes, for testing the coordinator's defences (issue 18). A hostile peer is a
//! validly signed member that sends a bad update: it follows rounds, applies aggregates and
//! stays in sync like an honest peer, so only what it submits differs.
//!
//! Every transform re-compresses through the run's codec (fresh zero error feedback), so a lie
//! is a well-formed update of the run's shapes and codec and reaches the checks that judge its
//! content. Error feedback follows the honest update: the peer compresses its honest
//! pseudo-gradient as usual and only then replaces what it sends, so its buffer is an honest
//! peer's (an update left out of the aggregate returns to it as the honest values). The lie
//! never enters it, except for `other-data`, whose training is itself the lie.
//!
//! Collusion (`copy` with `colluder-origin`) goes through a shared directory. A colluding pair
//! has no peer-to-peer rating signal to exploit in our design: the coordinator's validators
//! score updates and peers never rate each other, so all a pair can do is pass one update off
//! as two, which is what the coordinator's copy detection looks for.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::warn;
use tributary_codec::{
    Contribution, ErrorFeedback, compress, compress_contribution, decode_aggregate, encode,
};
use tributary_crds::TensorPlan;

use super::failure::Permanent;
use super::state::{PeerState, Trained};

/// `scaled` multiplies the honest update by this.
const SCALED: f32 = 100.0;
/// `free-rider` multiplies the honest update by this.
const FREE_RIDER: f32 = 1e-3;
/// Largest |value| of a `lazy` update before quantization (honest values are ~1e-3).
const LAZY_AMPLITUDE: f32 = 1e-4;
/// `replay` re-sends the honest payload of this many submissions earlier.
const REPLAY_DISTANCE: usize = 2;
/// How long a `copy` peer waits for its colluder's payload before sending its own.
const COPY_WAIT: Duration = Duration::from_secs(5);
const COPY_POLL: Duration = Duration::from_millis(100);
/// Mixed into the data seed by `other-data`.
const OTHER_DATA_SALT: u64 = 0x6f74_6865_722d_6461;

/// What a hostile peer sends instead of its honest update. For testing the coordinator's
/// defences only: never set on a run you want to train.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum HostileKind {
    /// Random positions and values, at the honest update's norm (tensor by tensor).
    Noise,
    /// The honest update with every value ×100.
    Scaled,
    /// The honest update negated.
    SignFlip,
    /// The negated last published aggregate, top-k compressed like an update (honest until it
    /// has applied one).
    FlipAggregate,
    /// The exact payload of its honest update from two submissions earlier (honest until it
    /// has one).
    Replay,
    /// A colluder's payload of the round, read from --collude-dir, under its own signature
    /// (its own update when none arrives within 5 s).
    Copy,
    /// Honest, but also writes each payload to --collude-dir for a `copy` peer.
    ColluderOrigin,
    /// Trains honestly, but on data other than its assignment (another data seed).
    OtherData,
    /// Its honest update, signed with a model version one lower than the round's.
    Stale,
    /// The honest update ×1e-3.
    FreeRider,
    /// No training at all: random positions and small random values, sent at once.
    Lazy,
}

impl HostileKind {
    /// The name on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Noise => "noise",
            Self::Scaled => "scaled",
            Self::SignFlip => "sign-flip",
            Self::FlipAggregate => "flip-aggregate",
            Self::Replay => "replay",
            Self::Copy => "copy",
            Self::ColluderOrigin => "colluder-origin",
            Self::OtherData => "other-data",
            Self::Stale => "stale",
            Self::FreeRider => "free-rider",
            Self::Lazy => "lazy",
        }
    }

    pub(crate) fn colludes(self) -> bool {
        matches!(self, Self::Copy | Self::ColluderOrigin)
    }
}

impl std::fmt::Display for HostileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A hostile peer's memory across rounds (it outlives re-syncs of the training state).
pub(crate) struct Hostile {
    kind: HostileKind,
    collude_dir: Option<PathBuf>,
    /// Seeds this peer's random updates, so two hostile peers send different noise.
    seed: u64,
    replay: Replay,
    /// Dense values of the last applied aggregate (`flip-aggregate` only).
    last_aggregate: Option<Vec<Vec<f32>>>,
    /// The last published mean inner loss: what a `lazy` peer claims as its own.
    last_mean_loss: Option<f64>,
}

impl Hostile {
    /// `seed` should differ between peers (e.g. from the peer's key).
    pub(crate) fn new(
        kind: HostileKind,
        collude_dir: Option<PathBuf>,
        seed: u64,
    ) -> Result<Self, Permanent> {
        if kind.colludes() && collude_dir.is_none() {
            return Err(Permanent {
                what: format!("--hostile {kind} needs --collude-dir"),
                fix: "give the colluding pair the same --collude-dir DIR",
            });
        }
        Ok(Self {
            kind,
            collude_dir,
            seed,
            replay: Replay::default(),
            last_aggregate: None,
            last_mean_loss: None,
        })
    }

    /// A hostile peer inside one process (the simulator): a `copy` peer is handed its
    /// colluder's payload directly, so no directory is needed.
    pub(crate) fn in_process(kind: HostileKind, seed: u64) -> Self {
        Self {
            kind,
            collude_dir: None,
            seed,
            replay: Replay::default(),
            last_aggregate: None,
            last_mean_loss: None,
        }
    }

    pub(crate) fn kind(&self) -> HostileKind {
        self.kind
    }

    /// Whether it trains at all (`lazy` does not).
    pub(crate) fn trains(&self) -> bool {
        self.kind != HostileKind::Lazy
    }

    /// The data seed it trains on: the run's, or another one (`other-data`).
    pub(crate) fn data_seed(&self, run_seed: u64) -> u64 {
        match self.kind {
            HostileKind::OtherData => other_data_seed(run_seed),
            _ => run_seed,
        }
    }

    /// `lazy`'s update of `round`: random positions and small values, no training.
    pub(crate) fn lazy_update(&self, plan: &TensorPlan, round: u64) -> Result<Contribution> {
        lazy(plan, mix(self.seed, round))
    }

    /// Remembers what a later lie needs from a published aggregate (`blob`, already applied).
    pub(crate) fn observe(&mut self, plan: &TensorPlan, blob: &[u8], mean_loss: f64) -> Result<()> {
        self.last_mean_loss = Some(mean_loss);
        if self.kind == HostileKind::FlipAggregate {
            let aggregate = decode_aggregate(blob, &plan.aggregate_limits())?;
            self.last_aggregate = Some(aggregate.tensors.iter().map(|t| t.to_dense()).collect());
        }
        Ok(())
    }

    /// [`Hostile::observe`] of an aggregate already dense (the simulator's).
    pub(crate) fn observe_dense(&mut self, aggregate: &[Vec<f32>]) {
        if self.kind == HostileKind::FlipAggregate {
            self.last_aggregate = Some(aggregate.to_vec());
        }
    }

    /// The round's local work: honest training, training on other data, or none (`lazy`).
    pub(crate) fn train(&self, state: &mut PeerState, round: u64, slot: u32) -> Result<Trained> {
        match self.kind {
            HostileKind::Lazy => {
                let plan = state.plan();
                let update = self.lazy_update(plan.tensors(), round)?;
                let vocab = f64::from(plan.tensors().model().vocab);
                Ok(Trained {
                    payload: encode(&update)?,
                    mean_loss: self.last_mean_loss.unwrap_or_else(|| vocab.ln()),
                    tokens: plan.data().tokens_per_round(),
                })
            }
            HostileKind::OtherData => {
                let seed = self.data_seed(state.plan().data().seed);
                state.train_on(round, slot, seed)
            }
            _ => state.train(round, slot),
        }
    }

    /// What it sends for `round` instead of its honest update (`honest`, encoded as
    /// `payload`). A `copy` peer then calls [`Hostile::copy`].
    pub(crate) fn disguise(
        &mut self,
        plan: &TensorPlan,
        honest: &Contribution,
        round: u64,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let lie = match self.kind {
            HostileKind::Noise => noise(honest, plan, mix(self.seed, round))?,
            HostileKind::Scaled => scaled(honest, plan, SCALED)?,
            HostileKind::SignFlip => scaled(honest, plan, -1.0)?,
            HostileKind::FreeRider => scaled(honest, plan, FREE_RIDER)?,
            HostileKind::FlipAggregate => match &self.last_aggregate {
                Some(aggregate) => negated(aggregate, plan)?,
                None => return Ok(payload),
            },
            HostileKind::Replay => return Ok(self.replay.next(payload)),
            HostileKind::ColluderOrigin => {
                if let Some(dir) = &self.collude_dir {
                    publish_for_copier(dir, round, &payload)?;
                }
                return Ok(payload);
            }
            HostileKind::Copy | HostileKind::OtherData | HostileKind::Stale | HostileKind::Lazy => {
                return Ok(payload);
            }
        };
        Ok(encode(&lie)?)
    }

    /// `copy`: the colluder's payload of `round` (exactly `len` bytes), or `own` when none
    /// arrives in time. Other kinds return `own`.
    pub(crate) async fn copy(&self, round: u64, len: u64, own: Vec<u8>) -> Vec<u8> {
        match (&self.collude_dir, self.kind) {
            (Some(dir), HostileKind::Copy) => {
                match await_colluder(dir, round, len, COPY_WAIT).await {
                    Some(theirs) => theirs,
                    None => {
                        warn!(round, dir = %dir.display(), "no colluder payload; sending this peer's own update");
                        own
                    }
                }
            }
            _ => own,
        }
    }

    /// The model version it signs its update with.
    pub(crate) fn model_version(&self, round_version: u64) -> u64 {
        match self.kind {
            HostileKind::Stale => stale_version(round_version),
            _ => round_version,
        }
    }
}

/// A peer's seed from its public key.
pub(crate) fn seed_of(public_key: &[u8]) -> u64 {
    public_key
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| mix(h, u64::from(*b)))
}

/// splitmix64 of `a` and `b`: seeds that differ per round.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Compresses dense per-tensor values through the run's codec with fresh (zero) error
/// feedback: whatever the values, a well-formed update of `plan`.
fn compress_dense(dense: &[Vec<f32>], plan: &TensorPlan) -> Result<Contribution> {
    let mut efs: Vec<ErrorFeedback> = dense
        .iter()
        .map(|d| ErrorFeedback::zeros(d.len()))
        .collect();
    let slices: Vec<&[f32]> = dense.iter().map(Vec::as_slice).collect();
    Ok(compress_contribution(
        &mut efs,
        &slices,
        plan.shapes(),
        plan.codec(),
    )?)
}

/// Fails unless `c` has `plan`'s tensors.
fn check_fits(c: &Contribution, plan: &TensorPlan) -> Result<()> {
    let shapes = plan.shapes();
    if c.tensors.len() != shapes.len() || c.tensors.iter().zip(shapes).any(|(t, s)| t.shape() != s)
    {
        bail!("the honest update does not have the run's shapes");
    }
    Ok(())
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

/// `honest` with every value × `factor` (the same positions, re-quantized).
fn scaled(honest: &Contribution, plan: &TensorPlan, factor: f32) -> Result<Contribution> {
    check_fits(honest, plan)?;
    let dense: Vec<Vec<f32>> = honest
        .tensors
        .iter()
        .map(|t| t.to_dense().into_iter().map(|x| x * factor).collect())
        .collect();
    compress_dense(&dense, plan)
}

/// Uniform random values, top-k selected and quantized, scaled to the norm of `honest`'s
/// tensor (an all-zero honest tensor stays zero).
fn noise(honest: &Contribution, plan: &TensorPlan, seed: u64) -> Result<Contribution> {
    check_fits(honest, plan)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = plan.codec();
    let mut tensors = Vec::with_capacity(honest.tensors.len());
    for (t, shape) in honest.tensors.iter().zip(plan.shapes()) {
        let target = norm(&t.to_dense());
        let mut r: Vec<f32> = (0..t.numel())
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect();
        let got =
            norm(&compress(&mut ErrorFeedback::zeros(r.len()), &r, shape, params)?.to_dense());
        // Top-k and quantization commute with a positive scale, so one rescale hits the norm.
        let factor = if got > 0.0 { target / got } else { 0.0 };
        r.iter_mut().for_each(|x| *x *= factor as f32);
        tensors.push(compress(
            &mut ErrorFeedback::zeros(r.len()),
            &r,
            shape,
            params,
        )?);
    }
    Ok(Contribution {
        params: *params,
        tensors,
    })
}

/// Small uniform random values at random positions: an update that cost nothing.
fn lazy(plan: &TensorPlan, seed: u64) -> Result<Contribution> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dense: Vec<Vec<f32>> = plan
        .shapes()
        .iter()
        .map(|s| {
            (0..s.numel())
                .map(|_| rng.gen_range(-LAZY_AMPLITUDE..LAZY_AMPLITUDE))
                .collect()
        })
        .collect();
    compress_dense(&dense, plan)
}

/// The negation of dense `aggregate`, top-k selected and quantized like any update.
fn negated(aggregate: &[Vec<f32>], plan: &TensorPlan) -> Result<Contribution> {
    let dense: Vec<Vec<f32>> = aggregate
        .iter()
        .map(|t| t.iter().map(|x| -x).collect())
        .collect();
    compress_dense(&dense, plan)
}

/// The data seed an `other-data` peer trains on instead of the run's.
fn other_data_seed(seed: u64) -> u64 {
    mix(seed, OTHER_DATA_SALT)
}

/// The version a `stale` peer claims: one lower (at version 0 it wraps, still not the round's).
fn stale_version(version: u64) -> u64 {
    version.wrapping_sub(1)
}

/// The honest payloads of the last submissions.
#[derive(Default)]
struct Replay {
    honest: VecDeque<Vec<u8>>,
}

impl Replay {
    /// What to send with this submission's honest payload: the honest payload of
    /// [`REPLAY_DISTANCE`] submissions earlier, or `honest` until there is one.
    fn next(&mut self, honest: Vec<u8>) -> Vec<u8> {
        let old = (self.honest.len() >= REPLAY_DISTANCE)
            .then(|| self.honest.pop_front())
            .flatten();
        self.honest.push_back(honest.clone());
        old.unwrap_or(honest)
    }
}

fn collusion_file(dir: &Path, round: u64) -> PathBuf {
    dir.join(format!("round-{round}.bin"))
}

/// Writes `payload` as the round's file in `dir`, atomically (a temporary file, then a rename),
/// so a copier never reads half of it.
fn publish_for_copier(dir: &Path, round: u64, payload: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".round-{round}.bin.{}.tmp", std::process::id()));
    std::fs::write(&tmp, payload).with_context(|| format!("writing {}", tmp.display()))?;
    let path = collusion_file(dir, round);
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
}

/// The round's file in `dir` if one of exactly `len` bytes appears within `wait`.
async fn await_colluder(dir: &Path, round: u64, len: u64, wait: Duration) -> Option<Vec<u8>> {
    let path = collusion_file(dir, round);
    let deadline = Instant::now() + wait;
    loop {
        // A local file of one update's size: read in place rather than on a blocking thread.
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.len() != len {
                warn!(path = %path.display(), bytes = meta.len(), expected = len, "colluder payload has the wrong size");
                return None;
            }
            match std::fs::read(&path) {
                Ok(bytes) if bytes.len() as u64 == len => return Some(bytes),
                Ok(_) => return None,
                Err(e) => warn!(path = %path.display(), "reading the colluder payload: {e}"),
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(COPY_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tributary_codec::{
        AggregationRule, Aggregator, decode, encode_aggregate, position_overlap,
    };
    use tributary_crds::{
        CompressionSpec, DataSource, EmbeddedData, ModelPreset, ModelSpec, Quantizer,
        TrainingRunSpec, codec_params,
    };

    use super::*;

    /// The `tiny` model's plan under the run's default compression with `quantizer`.
    fn plan(quantizer: Quantizer) -> TensorPlan {
        let spec = CompressionSpec {
            quantizer,
            ..CompressionSpec::default()
        };
        TensorPlan::new(ModelPreset::Tiny.config(), codec_params(&spec).unwrap()).unwrap()
    }

    /// An honest update: a random pseudo-gradient (values ~1e-3) through zero error feedback.
    fn honest(plan: &TensorPlan, seed: u64) -> Contribution {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let deltas: Vec<Vec<f32>> = plan
            .shapes()
            .iter()
            .map(|s| (0..s.numel()).map(|_| rng.gen_range(-1e-3..1e-3)).collect())
            .collect();
        compress_dense(&deltas, plan).unwrap()
    }

    /// What the coordinator reads: encoded, then decoded under the run's update limits.
    fn received(plan: &TensorPlan, payload: &[u8]) -> Contribution {
        decode(payload, &plan.update_limits()).unwrap()
    }

    fn sent(plan: &TensorPlan, c: &Contribution) -> Contribution {
        received(plan, &encode(c).unwrap())
    }

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        dot(a, b) / (norm(a) * norm(b))
    }

    fn flat(c: &Contribution) -> Vec<f32> {
        c.tensors.iter().flat_map(|t| t.to_dense()).collect()
    }

    fn hostile(kind: HostileKind) -> Hostile {
        Hostile::new(kind, None, 7).unwrap()
    }

    /// `kind`'s update for a peer whose honest update is `honest`, as the coordinator reads it.
    fn lie(kind: HostileKind, plan: &TensorPlan, honest: &Contribution) -> Contribution {
        let payload = encode(honest).unwrap();
        let out = hostile(kind).disguise(plan, honest, 3, payload).unwrap();
        received(plan, &out)
    }

    /// Per tensor: the same positions as `honest` and values `factor` × honest's.
    fn assert_scaled(lie: &Contribution, honest: &Contribution, factor: f64) {
        for (l, h) in lie.tensors.iter().zip(&honest.tensors) {
            assert_eq!(l.global_positions(), h.global_positions());
            let (ld, hd) = (l.to_dense(), h.to_dense());
            let ratio = norm(&ld) / norm(&hd);
            assert!(
                (ratio / factor.abs() - 1.0).abs() < 0.02,
                "norm ratio {ratio}, expected {factor}"
            );
            let cos = cosine(&ld, &hd);
            assert!(cos * factor.signum() > 0.999, "cosine {cos}");
        }
    }

    #[test]
    fn scaled_is_the_honest_update_times_a_hundred() {
        for q in [Quantizer::Production, Quantizer::Balanced] {
            let plan = plan(q);
            let honest = sent(&plan, &honest(&plan, 1));
            assert_scaled(&lie(HostileKind::Scaled, &plan, &honest), &honest, 100.0);
        }
    }

    #[test]
    fn sign_flip_decodes_to_the_negated_honest_update() {
        for q in [Quantizer::Production, Quantizer::Balanced] {
            let plan = plan(q);
            let honest = sent(&plan, &honest(&plan, 2));
            let flipped = lie(HostileKind::SignFlip, &plan, &honest);
            assert_scaled(&flipped, &honest, -1.0);
            let (f, h) = (flat(&flipped), flat(&honest));
            let sum: Vec<f32> = f.iter().zip(&h).map(|(a, b)| a + b).collect();
            assert!(norm(&sum) < 0.02 * norm(&h), "flipped ≈ −honest");
        }
    }

    #[test]
    fn free_rider_is_a_thousandth_of_the_honest_update() {
        let plan = plan(Quantizer::Production);
        let honest = sent(&plan, &honest(&plan, 3));
        assert_scaled(&lie(HostileKind::FreeRider, &plan, &honest), &honest, 1e-3);
    }

    #[test]
    fn noise_has_the_honest_norm_per_tensor_and_unrelated_content() {
        let plan = plan(Quantizer::Production);
        let honest = sent(&plan, &honest(&plan, 4));
        let noise = lie(HostileKind::Noise, &plan, &honest);
        for (n, h) in noise.tensors.iter().zip(&honest.tensors) {
            let ratio = norm(&n.to_dense()) / norm(&h.to_dense());
            assert!((ratio - 1.0).abs() < 0.01, "norm ratio {ratio}");
            assert_eq!(n.count(), h.count(), "as many values as an honest update");
        }
        assert!(cosine(&flat(&noise), &flat(&honest)).abs() < 0.1);
        let overlap = position_overlap(&noise, &honest).unwrap();
        assert!(overlap < 0.1, "random positions, overlap {overlap}");
        // Another peer (seed) sends other noise.
        let mut other = Hostile::new(HostileKind::Noise, None, 8).unwrap();
        let theirs = other
            .disguise(&plan, &honest, 3, encode(&honest).unwrap())
            .unwrap();
        assert_ne!(received(&plan, &theirs), noise);
    }

    #[test]
    fn lazy_sends_small_random_values_without_an_honest_update() {
        let plan = plan(Quantizer::Production);
        let (a, b) = (lazy(&plan, 1).unwrap(), lazy(&plan, 2).unwrap());
        let (a, b) = (sent(&plan, &a), sent(&plan, &b));
        let honest = sent(&plan, &honest(&plan, 5));
        for (t, h) in a.tensors.iter().zip(&honest.tensors) {
            assert_eq!(t.count(), h.count(), "as many values as an honest update");
        }
        assert!(flat(&a).iter().all(|x| x.abs() <= LAZY_AMPLITUDE * 1.001));
        assert_ne!(a, b, "random per round");
        assert!(position_overlap(&a, &b).unwrap() < 0.1);
    }

    #[test]
    fn flip_aggregate_sends_the_negated_last_aggregate() {
        let plan = plan(Quantizer::Production);
        let peers = [
            sent(&plan, &honest(&plan, 6)),
            sent(&plan, &honest(&plan, 7)),
        ];
        let refs: Vec<&Contribution> = peers.iter().collect();
        let aggregate = Aggregator::new(AggregationRule::MedianClipMean)
            .aggregate_sparse(&refs, None)
            .unwrap();
        let blob = encode_aggregate(&aggregate);
        let mut h = hostile(HostileKind::FlipAggregate);
        let own = encode(&peers[0]).unwrap();
        // Before any aggregate it has nothing to flip: it sends its own update.
        assert_eq!(h.disguise(&plan, &peers[0], 0, own.clone()).unwrap(), own);
        h.observe(&plan, &blob, 5.0).unwrap();
        let flipped = received(&plan, &h.disguise(&plan, &peers[0], 1, own).unwrap());
        for (f, a) in flipped.tensors.iter().zip(&aggregate.tensors) {
            let a = a.to_dense();
            // Its values are the aggregate's at the positions it kept, negated (and quantized).
            let mut at = vec![0.0; a.len()];
            f.for_each(|i, _| at[i] = a[i]);
            let cos = cosine(&f.to_dense(), &at);
            assert!(
                cos < -0.9,
                "cosine {cos} with the aggregate where it is sent"
            );
            assert!(cosine(&f.to_dense(), &a) < -0.5);
        }
    }

    #[test]
    fn replay_re_sends_the_honest_payload_of_two_submissions_earlier() {
        let plan = plan(Quantizer::Production);
        let updates: Vec<Contribution> = (0..5).map(|i| honest(&plan, 10 + i)).collect();
        let payloads: Vec<Vec<u8>> = updates.iter().map(|c| encode(c).unwrap()).collect();
        let mut h = hostile(HostileKind::Replay);
        let out: Vec<Vec<u8>> = (0..5)
            .map(|r| {
                h.disguise(&plan, &updates[r], r as u64, payloads[r].clone())
                    .unwrap()
            })
            .collect();
        assert_eq!(out[0], payloads[0], "honest until it has one");
        assert_eq!(out[1], payloads[1]);
        assert_eq!(out[2], payloads[0]);
        assert_eq!(out[3], payloads[1]);
        assert_eq!(
            out[4], payloads[2],
            "the honest payload, not its own earlier replay"
        );
    }

    #[test]
    fn stale_claims_one_version_lower_and_others_the_round_s() {
        assert_eq!(hostile(HostileKind::Stale).model_version(5), 4);
        assert_ne!(hostile(HostileKind::Stale).model_version(0), 0);
        assert_eq!(hostile(HostileKind::Scaled).model_version(5), 5);
    }

    #[test]
    fn kinds_that_only_change_training_or_the_header_send_the_payload_as_is() {
        let plan = plan(Quantizer::Production);
        let honest = honest(&plan, 20);
        let payload = encode(&honest).unwrap();
        for kind in [
            HostileKind::Stale,
            HostileKind::OtherData,
            HostileKind::Lazy,
        ] {
            let out = hostile(kind).disguise(&plan, &honest, 0, payload.clone());
            assert_eq!(out.unwrap(), payload, "{kind}");
        }
    }

    #[test]
    fn a_transform_of_an_update_of_other_shapes_is_an_error() {
        let plan = plan(Quantizer::Production);
        let other = TensorPlan::new(
            ModelPreset::Small.config(),
            codec_params(&CompressionSpec::default()).unwrap(),
        )
        .unwrap();
        let wrong = Contribution {
            params: *plan.codec(),
            tensors: Vec::new(),
        };
        assert!(scaled(&wrong, &plan, 2.0).is_err());
        assert!(noise(&honest(&plan, 1), &other, 1).is_err());
    }

    #[test]
    fn colluders_need_a_collude_dir() {
        for kind in [HostileKind::Copy, HostileKind::ColluderOrigin] {
            let err = Hostile::new(kind, None, 1).err().unwrap();
            assert!(err.to_string().contains("--collude-dir"), "{err}");
        }
        assert!(Hostile::new(HostileKind::Noise, None, 1).is_ok());
    }

    #[tokio::test]
    async fn a_copier_sends_what_its_origin_wrote_under_its_own_header() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(Quantizer::Production);
        let (theirs, mine) = (honest(&plan, 30), honest(&plan, 31));
        let (theirs_bytes, mine_bytes) = (encode(&theirs).unwrap(), encode(&mine).unwrap());
        let mut origin =
            Hostile::new(HostileKind::ColluderOrigin, Some(dir.path().into()), 1).unwrap();
        let sent = origin
            .disguise(&plan, &theirs, 4, theirs_bytes.clone())
            .unwrap();
        assert_eq!(sent, theirs_bytes, "the origin itself is honest");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        let mut copier = Hostile::new(HostileKind::Copy, Some(dir.path().into()), 2).unwrap();
        let own = copier
            .disguise(&plan, &mine, 4, mine_bytes.clone())
            .unwrap();
        let len = plan.update_bytes();
        assert_eq!(copier.copy(4, len, own).await, theirs_bytes);
        assert_eq!(copier.model_version(9), 9, "its own header");
    }

    #[tokio::test]
    async fn a_copier_without_a_whole_colluder_payload_sends_nothing_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let len = plan(Quantizer::Production).update_bytes();
        assert_eq!(
            await_colluder(dir.path(), 5, len, Duration::ZERO).await,
            None
        );
        std::fs::write(collusion_file(dir.path(), 5), b"short").unwrap();
        assert_eq!(
            await_colluder(dir.path(), 5, len, Duration::ZERO).await,
            None,
            "a payload of the wrong size is not sent"
        );
    }

    fn peer() -> PeerState {
        let mut spec = TrainingRunSpec::new(ModelSpec::preset(ModelPreset::Tiny));
        spec.data.source = DataSource::Embedded(EmbeddedData::default());
        spec.data.batch_size = 2;
        spec.inner_optimizer.inner_steps = 2;
        spec.stop.total_rounds = Some(10);
        PeerState::new(spec).unwrap()
    }

    #[test]
    fn other_data_trains_on_streams_other_than_its_assignment() {
        let (mut a, mut b, mut other) = (peer(), peer(), peer());
        let trainer = hostile(HostileKind::Scaled);
        let a = trainer.train(&mut a, 0, 0).unwrap();
        let b = trainer.train(&mut b, 0, 0).unwrap();
        assert_eq!(a.payload, b.payload, "honest training is deterministic");
        let other = hostile(HostileKind::OtherData)
            .train(&mut other, 0, 0)
            .unwrap();
        assert_ne!(other.payload, a.payload);
        assert_eq!(other.tokens, a.tokens, "it claims the same work");
    }

    #[test]
    fn lazy_does_not_train_and_leaves_the_state_alone() {
        let mut state = peer();
        let plan = state.plan().tensors().clone();
        let trained = hostile(HostileKind::Lazy).train(&mut state, 0, 0).unwrap();
        let _decodes = received(&plan, &trained.payload);
        assert!(state.sent().tensors.is_empty(), "no honest update was made");
        assert!(trained.mean_loss.is_finite() && trained.mean_loss > 0.0);
    }
}
