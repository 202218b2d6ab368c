//! The embedded synthetic language: a seeded hidden Markov model with Zipf-shaped transitions and
//! emissions whose true next-token probabilities are computable (forward algorithm).
//!
//! A model only sees tokens, so it must infer the hidden state from context; the Bayes-optimal
//! predictor given a sequence's prefix is the forward filter started at the stationary
//! distribution. [`Language::log_probs`] gives that predictor's per-token log-probabilities: the
//! *floor* on any held-out batch (paired: same tokens). [`Language::entropy_rate`] estimates the
//! asymptotic rate with a confidence interval; with one-to-one emissions the language is a plain
//! Markov chain and [`Language::markov_entropy_rate`] gives its rate in closed form.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Batch, Error, Result, StreamId, TokenSource};

/// Shape of the language. Defaults are calibrated for the `tiny` preset (docs/data.md).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LanguageConfig {
    /// Seed of the language itself (transition and emission tables).
    pub seed: u64,
    pub vocab: u32,
    /// Hidden states.
    pub states: u32,
    /// Successor states per state (transition support).
    pub fanout: u32,
    /// Tokens each state can emit (emission support).
    pub emissions: u32,
    /// Zipf exponent of transition and emission probabilities (rank r has weight (r+1)^-s).
    pub zipf_exponent: f64,
}

impl LanguageConfig {
    /// The calibrated default for a vocabulary (docs/data.md records the calibration).
    pub fn calibrated(seed: u64, vocab: u32) -> Self {
        Self {
            seed,
            vocab,
            states: 64,
            fanout: 3,
            emissions: 8.min(vocab),
            zipf_exponent: 1.2,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.vocab < 2 {
            return bad(format!("vocab must be at least 2, not {}", self.vocab));
        }
        if self.states == 0 || self.states > 4096 {
            return bad(format!("states must be in 1..=4096, not {}", self.states));
        }
        if self.fanout == 0 || self.fanout > self.states {
            return bad(format!(
                "fanout must be in 1..=states ({}), not {}",
                self.states, self.fanout
            ));
        }
        if self.emissions == 0 || self.emissions > self.vocab {
            return bad(format!(
                "emissions must be in 1..=vocab ({}), not {}",
                self.vocab, self.emissions
            ));
        }
        if !(self.zipf_exponent.is_finite() && self.zipf_exponent >= 0.0) {
            return bad(format!(
                "zipfExponent must be finite and ≥ 0, not {}",
                self.zipf_exponent
            ));
        }
        Ok(())
    }
}

/// A sparse categorical distribution: outcomes with probabilities and their running sums.
#[derive(Debug, Clone)]
struct Categorical {
    outcomes: Vec<u32>,
    probs: Vec<f64>,
    cdf: Vec<f64>,
}

impl Categorical {
    fn zipf(outcomes: Vec<u32>, exponent: f64) -> Self {
        let weights: Vec<f64> = (0..outcomes.len())
            .map(|r| ((r + 1) as f64).powf(-exponent))
            .collect();
        Self::from_weights(outcomes, &weights)
    }

    fn from_weights(outcomes: Vec<u32>, weights: &[f64]) -> Self {
        let total: f64 = weights.iter().sum();
        let probs: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let mut acc = 0.0;
        let cdf = probs
            .iter()
            .map(|p| {
                acc += p;
                acc
            })
            .collect();
        Self {
            outcomes,
            probs,
            cdf,
        }
    }

    fn sample(&self, rng: &mut impl Rng) -> u32 {
        let u: f64 = rng.r#gen::<f64>() * self.cdf.last().copied().unwrap_or(1.0);
        let i = self
            .cdf
            .partition_point(|c| *c <= u)
            .min(self.outcomes.len() - 1);
        self.outcomes[i]
    }

    fn entropy(&self) -> f64 {
        self.probs
            .iter()
            .filter(|p| **p > 0.0)
            .map(|p| -p * p.ln())
            .sum()
    }
}

/// A generated language: tables fixed by its config.
#[derive(Debug, Clone)]
pub struct Language {
    config: LanguageConfig,
    transitions: Vec<Categorical>,
    emissions: Vec<Categorical>,
    /// `emit[s * vocab + x]` = P(x | s), dense for the forward filter.
    emit: Vec<f64>,
    stationary: Vec<f64>,
}

/// An estimate with its 95% confidence half-width.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub half_width_95: f64,
}

impl Language {
    pub fn new(config: LanguageConfig) -> Result<Self> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x6c61_6e67_7561_6765);
        let s = config.states as usize;
        // A global Zipf popularity over tokens, so frequent tokens are shared by many states and
        // the state is ambiguous from one token: the model has to use context.
        let popularity = Categorical::zipf((0..config.vocab).collect(), 1.0);
        let transitions = (0..s)
            .map(|_| {
                let succ = distinct(&mut rng, config.fanout as usize, |r| {
                    r.gen_range(0..config.states)
                });
                Categorical::zipf(succ, config.zipf_exponent)
            })
            .collect::<Vec<_>>();
        let emissions = (0..s)
            .map(|_| {
                let toks = distinct(&mut rng, config.emissions as usize, |r| {
                    popularity.sample(r)
                });
                Categorical::zipf(toks, config.zipf_exponent)
            })
            .collect::<Vec<_>>();
        Ok(Self::from_tables(config, transitions, emissions))
    }

    fn from_tables(
        config: LanguageConfig,
        transitions: Vec<Categorical>,
        emissions: Vec<Categorical>,
    ) -> Self {
        let (s, v) = (config.states as usize, config.vocab as usize);
        let mut emit = vec![0.0; s * v];
        for (state, e) in emissions.iter().enumerate() {
            for (x, p) in e.outcomes.iter().zip(&e.probs) {
                emit[state * v + *x as usize] = *p;
            }
        }
        let stationary = stationary(&transitions, s);
        Self {
            config,
            transitions,
            emissions,
            emit,
            stationary,
        }
    }

    pub fn config(&self) -> &LanguageConfig {
        &self.config
    }

    /// One sequence of `len` tokens from the stationary start.
    pub fn sample_sequence(&self, rng: &mut impl Rng, out: &mut Vec<u32>, len: usize) {
        let mut state = sample_dense(&self.stationary, rng);
        for _ in 0..len {
            out.push(self.emissions[state].sample(rng));
            state = self.transitions[state].sample(rng) as usize;
        }
    }

    /// True next-token log-probabilities `ln p(x_t | x_<t)` of one sequence under the language,
    /// given only that sequence's prefix (what a model with this context can at best know).
    pub fn log_probs(&self, tokens: &[u32]) -> Result<Vec<f64>> {
        let (s, v) = (self.config.states as usize, self.config.vocab as usize);
        let mut belief = self.stationary.clone();
        let mut next = vec![0.0; s];
        let mut out = Vec::with_capacity(tokens.len());
        for &x in tokens {
            let x = x as usize;
            if x >= v {
                return Err(Error::Config(format!(
                    "token {x} is outside the vocabulary of {v}"
                )));
            }
            let mut p = 0.0;
            for (state, b) in belief.iter_mut().enumerate() {
                *b *= self.emit[state * v + x];
                p += *b;
            }
            if p <= 0.0 {
                out.push(f64::NEG_INFINITY);
                belief.copy_from_slice(&self.stationary);
                continue;
            }
            out.push(p.ln());
            next.iter_mut().for_each(|n| *n = 0.0);
            for (state, b) in belief.iter().enumerate() {
                if *b == 0.0 {
                    continue;
                }
                let t = &self.transitions[state];
                for (succ, q) in t.outcomes.iter().zip(&t.probs) {
                    next[*succ as usize] += b / p * q;
                }
            }
            std::mem::swap(&mut belief, &mut next);
        }
        Ok(out)
    }

    /// Mean true cross-entropy (nats/token) of every next-token target in `batch`: the paired
    /// floor for a model evaluated on the same batch (targets are positions 1..=len of a row,
    /// predicted from the row's own prefix).
    pub fn floor_nats(&self, batch: &Batch) -> Result<f64> {
        let mut total = 0.0;
        for i in 0..batch.sequences {
            let lp = self.log_probs(batch.row(i))?;
            total -= lp[1..].iter().sum::<f64>();
        }
        Ok(total / (batch.sequences * batch.len).max(1) as f64)
    }

    /// Monte-Carlo estimate of the asymptotic entropy rate (nats/token): `sequences` independent
    /// sequences of `burn_in + len` tokens, averaging `-ln p` over the last `len` of each.
    pub fn entropy_rate(
        &self,
        seed: u64,
        sequences: usize,
        burn_in: usize,
        len: usize,
    ) -> Estimate {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut per_seq = Vec::with_capacity(sequences);
        let mut buf = Vec::with_capacity(burn_in + len);
        for _ in 0..sequences {
            buf.clear();
            self.sample_sequence(&mut rng, &mut buf, burn_in + len);
            // Sampled tokens always have positive probability under their own language.
            let lp = self.log_probs(&buf).unwrap_or_default();
            per_seq.push(-lp.iter().skip(burn_in).sum::<f64>() / len.max(1) as f64);
        }
        mean_ci(&per_seq)
    }

    /// Exact entropy rate Σ_s π(s)·H(T_s) when emissions are one token per state and no two
    /// states share a token (then the tokens are a Markov chain); `None` otherwise.
    pub fn markov_entropy_rate(&self) -> Option<f64> {
        let mut seen = std::collections::HashSet::new();
        let one_to_one = self
            .emissions
            .iter()
            .all(|e| e.outcomes.len() == 1 && seen.insert(e.outcomes[0]));
        one_to_one.then(|| {
            self.transitions
                .iter()
                .zip(&self.stationary)
                .map(|(t, pi)| pi * t.entropy())
                .sum()
        })
    }
}

impl TokenSource for Language {
    fn vocab(&self) -> u32 {
        self.config.vocab
    }

    fn batch(&self, id: StreamId, sequences: usize, len: usize) -> Result<Batch> {
        let mut rng = ChaCha8Rng::seed_from_u64(id.key());
        let mut tokens = Vec::with_capacity(sequences * (len + 1));
        for _ in 0..sequences {
            self.sample_sequence(&mut rng, &mut tokens, len + 1);
        }
        Ok(Batch {
            tokens,
            sequences,
            len,
        })
    }
}

fn distinct(
    rng: &mut ChaCha8Rng,
    n: usize,
    mut draw: impl FnMut(&mut ChaCha8Rng) -> u32,
) -> Vec<u32> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let x = draw(rng);
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

fn sample_dense(probs: &[f64], rng: &mut impl Rng) -> usize {
    let mut u: f64 = rng.r#gen();
    for (i, p) in probs.iter().enumerate() {
        if u < *p {
            return i;
        }
        u -= p;
    }
    probs.len() - 1
}

/// Stationary distribution by power iteration from uniform (averaged over two steps so that a
/// periodic chain still converges to its stationary mean).
fn stationary(transitions: &[Categorical], s: usize) -> Vec<f64> {
    let mut pi = vec![1.0 / s as f64; s];
    let mut next = vec![0.0; s];
    for _ in 0..10_000 {
        next.iter_mut().for_each(|n| *n = 0.0);
        for (state, t) in transitions.iter().enumerate() {
            for (succ, q) in t.outcomes.iter().zip(&t.probs) {
                next[*succ as usize] += pi[state] * q;
            }
        }
        let mut delta = 0.0;
        for (p, n) in pi.iter_mut().zip(&next) {
            let avg = 0.5 * (*p + n);
            delta += (avg - *p).abs();
            *p = avg;
        }
        if delta < 1e-13 {
            break;
        }
    }
    pi
}

fn mean_ci(xs: &[f64]) -> Estimate {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Estimate {
        mean,
        half_width_95: 1.96 * (var / n).sqrt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(states: u32, fanout: u32, emissions: u32, vocab: u32) -> Language {
        Language::new(LanguageConfig {
            seed: 7,
            vocab,
            states,
            fanout,
            emissions,
            zipf_exponent: 1.0,
        })
        .unwrap()
    }

    #[test]
    fn one_state_is_iid_with_the_emission_entropy() {
        let l = lang(1, 1, 16, 32);
        let exact = l.emissions[0].entropy();
        let est = l.entropy_rate(1, 200, 0, 200);
        assert!(
            (est.mean - exact).abs() < 3.0 * est.half_width_95 + 1e-9,
            "{est:?} vs {exact}"
        );
    }

    #[test]
    fn forward_filter_matches_the_closed_form_markov_rate() {
        // 8 states, one private token each: the tokens are a Markov chain.
        let config = LanguageConfig {
            seed: 3,
            vocab: 8,
            states: 8,
            fanout: 3,
            emissions: 1,
            zipf_exponent: 0.7,
        };
        let transitions = (0..8u32)
            .map(|i| Categorical::zipf(vec![(i + 1) % 8, (i + 3) % 8, i], 0.7))
            .collect();
        let emissions = (0..8u32)
            .map(|i| Categorical::zipf(vec![7 - i], 1.0))
            .collect();
        let l = Language::from_tables(config, transitions, emissions);
        let exact = l.markov_entropy_rate().unwrap();
        // The generated language has shared tokens, so it is not a plain Markov chain.
        assert!(lang(8, 3, 2, 16).markov_entropy_rate().is_none());
        let est = l.entropy_rate(5, 400, 20, 200);
        assert!(
            (est.mean - exact).abs() < 3.0 * est.half_width_95.max(1e-3),
            "estimate {est:?} vs exact {exact}"
        );
        assert!(est.half_width_95 < 0.02);
    }

    #[test]
    fn stationary_is_a_fixed_point() {
        let l = lang(32, 4, 8, 64);
        let s = l.stationary.len();
        let mut next = vec![0.0; s];
        for (state, t) in l.transitions.iter().enumerate() {
            for (succ, q) in t.outcomes.iter().zip(&t.probs) {
                next[*succ as usize] += l.stationary[state] * q;
            }
        }
        let err: f64 = next
            .iter()
            .zip(&l.stationary)
            .map(|(a, b)| (a - b).abs())
            .sum();
        assert!(err < 1e-9, "{err}");
        assert!((l.stationary.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn batches_are_deterministic_and_streams_differ() {
        let l = lang(16, 4, 8, 64);
        let id = StreamId {
            seed: 1,
            peer: 2,
            round: 3,
            step: 4,
        };
        let a = l.batch(id, 4, 32).unwrap();
        assert_eq!(a, l.batch(id, 4, 32).unwrap());
        assert_eq!(a.tokens.len(), 4 * 33);
        for other in [
            StreamId { peer: 3, ..id },
            StreamId { round: 4, ..id },
            StreamId { step: 5, ..id },
            StreamId { seed: 2, ..id },
            StreamId::held_out(1, 4),
        ] {
            assert_ne!(a, l.batch(other, 4, 32).unwrap(), "{other:?}");
        }
        assert!(a.tokens.iter().all(|t| *t < 64));
    }

    #[test]
    fn floor_is_below_unigram_entropy_and_above_the_rate() {
        let l = Language::new(LanguageConfig::calibrated(11, 256)).unwrap();
        let b = l.batch(StreamId::held_out(11, 0), 64, 128).unwrap();
        let floor = l.floor_nats(&b).unwrap();
        let rate = l.entropy_rate(2, 64, 256, 256);
        // Early positions know less than the asymptotic filter, so the floor sits above the rate.
        assert!(
            floor > rate.mean - 3.0 * rate.half_width_95,
            "{floor} vs {rate:?}"
        );
        assert!(floor < (256f64).ln(), "{floor}");
    }

    #[test]
    fn bad_configs_are_rejected() {
        let ok = LanguageConfig::calibrated(1, 256);
        for bad in [
            LanguageConfig { vocab: 1, ..ok },
            LanguageConfig { states: 0, ..ok },
            LanguageConfig { fanout: 65, ..ok },
            LanguageConfig {
                emissions: 300,
                ..ok
            },
            LanguageConfig {
                zipf_exponent: f64::NAN,
                ..ok
            },
        ] {
            assert!(Language::new(bad).is_err(), "{bad:?}");
        }
        let l = Language::new(ok).unwrap();
        assert!(l.log_probs(&[256]).is_err());
    }
}
