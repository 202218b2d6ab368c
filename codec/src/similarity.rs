//! How alike two contributions of one run are: the published copy measure (top-k position
//! overlap weighted by tensor size) and, on the shared positions, whether the signs agree, so a
//! replay (same positions, same signs) and a negated replay (same positions, flipped signs)
//! are told apart from an honest update that merely shares some positions.

use crate::error::{Error, Result};
use crate::tensor::{CompressedTensor, Contribution, Payload, SparseTensor};
use std::cmp::Ordering;

/// Similarity of two contributions over their sparse tensors (dense tensors carry every
/// position and say nothing about copying). For each sparse tensor `t` with kept position sets
/// `A_t`, `B_t`, `n_t = max(|A_t|, |B_t|)` and the published weight `w_t = numel_t`:
///
/// - `overlap  = Σ_t w_t·|A_t ∩ B_t| / n_t / Σ_t w_t`
/// - `agreeing = Σ_t w_t·|{x ∈ A_t ∩ B_t : sign a_x = sign b_x}| / n_t / Σ_t w_t`
/// - `opposing = Σ_t w_t·|{x ∈ A_t ∩ B_t : sign a_x = −sign b_x ≠ 0}| / n_t / Σ_t w_t`
///
/// where the sign of a dequantized value is −1, 0 or +1. All three lie in `[0, 1]`, are
/// symmetric in the two contributions, and `agreeing + opposing ≤ overlap`; identical
/// contributions give `overlap = agreeing = 1`, disjoint ones give 0 everywhere, and a
/// contribution without sparse tensors gives 0 everywhere. Within one run every contribution
/// keeps the same number of positions per tensor, so `n_t = |A_t| = |B_t|` and `overlap` is the
/// published copy measure ([`crate::position_overlap`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Similarity {
    pub overlap: f64,
    pub agreeing: f64,
    pub opposing: f64,
}

impl Similarity {
    /// Share of the shared positions whose signs agree (0 when nothing is shared).
    pub fn sign_agreement(&self) -> f64 {
        if self.overlap > 0.0 {
            (self.agreeing / self.overlap).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// The [`Similarity`] of `a` and `b`. Contributions whose codec parameters, tensor count,
/// shapes or layouts differ are not comparable: an error, never a panic.
pub fn similarity(a: &Contribution, b: &Contribution) -> Result<Similarity> {
    let incompatible = Error::IncompatibleContribution { index: 1 };
    if a.params != b.params || a.tensors.len() != b.tensors.len() {
        return Err(incompatible);
    }
    let (mut shared, mut agree, mut oppose, mut total) = (0f64, 0f64, 0f64, 0f64);
    for (ta, tb) in a.tensors.iter().zip(&b.tensors) {
        if ta.shape != tb.shape {
            return Err(incompatible);
        }
        let (sa, sb) = match (&ta.payload, &tb.payload) {
            (Payload::Sparse(sa), Payload::Sparse(sb)) if sa.chunking == sb.chunking => (sa, sb),
            (Payload::Dense(_), Payload::Dense(_)) => continue,
            _ => return Err(incompatible),
        };
        let counts = shared_counts(sa, sb);
        let n = sa.positions.len().max(sb.positions.len());
        let w = weight(ta);
        if n > 0 {
            shared += w * counts.shared as f64 / n as f64;
            agree += w * counts.agreeing as f64 / n as f64;
            oppose += w * counts.opposing as f64 / n as f64;
        }
        total += w;
    }
    if total <= 0.0 {
        return Ok(Similarity::default());
    }
    let unit = |x: f64| (x / total).clamp(0.0, 1.0);
    Ok(Similarity {
        overlap: unit(shared),
        agreeing: unit(agree),
        opposing: unit(oppose),
    })
}

/// The published weight of a tensor: its number of elements.
fn weight(t: &CompressedTensor) -> f64 {
    t.shape.numel() as f64
}

#[derive(Debug, Default)]
struct SharedCounts {
    shared: usize,
    agreeing: usize,
    opposing: usize,
}

/// Positions both tensors keep, chunk by chunk (positions are sorted inside each chunk), and
/// how many of them carry the same or the opposite sign.
fn shared_counts(a: &SparseTensor, b: &SparseTensor) -> SharedCounts {
    let mut out = SharedCounts::default();
    let k = a.k();
    if k == 0 || b.k() != k {
        return out;
    }
    let chunks = a
        .positions
        .chunks(k)
        .zip(a.codes.chunks(k))
        .zip(b.positions.chunks(k).zip(b.codes.chunks(k)))
        .enumerate();
    for (c, ((pa, ca), (pb, cb))) in chunks {
        let (mut i, mut j) = (0, 0);
        while let (Some(x), Some(y)) = (pa.get(i), pb.get(j)) {
            match x.cmp(y) {
                Ordering::Less => i += 1,
                Ordering::Greater => j += 1,
                Ordering::Equal => {
                    let va = ca.get(i).map(|&q| a.quant.value(c, q, a.bits));
                    let vb = cb.get(j).map(|&q| b.quant.value(c, q, b.bits));
                    out.shared += 1;
                    match (va.map(sign), vb.map(sign)) {
                        (Some(s), Some(t)) if s == t => out.agreeing += 1,
                        (Some(s), Some(t)) if s == -t => out.opposing += 1,
                        _ => {}
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
    }
    out
}

/// −1, 0 or +1 (NaN counts as 0: it agrees with nothing but another 0 or NaN).
fn sign(v: f32) -> i8 {
    if v > 0.0 {
        1
    } else if v < 0.0 {
        -1
    } else {
        0
    }
}
