//! Error-feedback lookahead: where a peer starts its inner steps.
//!
//! A SparseLoCo peer's error feedback `e` holds the part of its past pseudo-gradients that it
//! has not yet sent; the outer step will apply it as `θ ← θ − α·e` once it is selected. Starting
//! the inner steps from θ would make the peer rediscover that progress every round and compute
//! its gradients where the model lags behind its own updates. Starting from `θ − α·e`, the point
//! its pending updates lead to, it trains from where the model is heading (docs/training.md).
//! The pseudo-gradient is then measured from that start, so nothing is counted twice: the
//! pending mass stays in `e`, the new progress is added to it.

use tributary_codec::ErrorFeedback;

/// `θ − α·e`, per tensor; each product is rounded to f32 before the difference.
pub fn lookahead_start(theta: &[Vec<f32>], pending: &[ErrorFeedback], alpha: f32) -> Vec<Vec<f32>> {
    theta
        .iter()
        .zip(pending)
        .map(|(t, e)| {
            t.iter()
                .zip(e.as_slice())
                .map(|(t, e)| {
                    let step = alpha * *e;
                    t - step
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_where_the_pending_updates_lead() {
        let theta = vec![vec![1.0, -2.0, 0.5], vec![3.0]];
        let pending = vec![
            ErrorFeedback::from_vec(vec![0.5, 0.0, -1.0]),
            ErrorFeedback::from_vec(vec![2.0]),
        ];
        assert_eq!(
            lookahead_start(&theta, &pending, 0.5),
            vec![vec![0.75, -2.0, 1.0], vec![2.0]]
        );
        let empty: Vec<ErrorFeedback> = theta
            .iter()
            .map(|t| ErrorFeedback::zeros(t.len()))
            .collect();
        assert_eq!(lookahead_start(&theta, &empty, 0.85), theta);
    }
}
