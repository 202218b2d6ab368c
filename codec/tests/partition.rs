//! Partitioned aggregation: any plan, any thread count, decoded or straight from the bytes,
//! gives the bits of the one-shot aggregate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use tributary_codec::*;

fn peers(p: &CodecParams, shapes: &[TensorShape], n: usize, seed: u64) -> Vec<Contribution> {
    (0..n)
        .map(|r| {
            let s = seed * 131 + r as u64 * 17;
            if r % 3 == 1 {
                contribution(p, shapes, s)
            } else {
                gaussian_contribution(p, shapes, s)
            }
        })
        .collect()
}

/// Every range of `plan` aggregated separately (in reverse order, to show order does not
/// matter), then assembled.
fn by_ranges(
    agg: &Aggregator,
    views: &[ContributionView<'_>],
    scales: &PeerScales,
    plan: &AggregationPlan,
    shapes: &[TensorShape],
) -> SparseAggregate {
    let mut segments = vec![];
    for r in plan.ranges().iter().rev() {
        let mut s = AggregateSegment::default();
        agg.aggregate_range(views, scales, r, &mut s).unwrap();
        assert_eq!((s.tensor(), s.elements()), (r.tensor, r.elements.clone()));
        segments.push(s);
    }
    SparseAggregate::from_segments(shapes, segments).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_plan_any_threads_same_bits(
        p in params_strategy(true),
        dims in shapes_strategy(48, 70),
        n in 1usize..7,
        seed in 0u64..1_000_000,
        zero_mask in 0u32..128,
        mean in any::<bool>(),
        target in 1u64..3000,
        threads in 1usize..4,
    ) {
        let shapes: Vec<TensorShape> = dims.iter().map(|d| shape(d)).collect();
        let cs = peers(&p, &shapes, n, seed);
        let bytes: Vec<Vec<u8>> = cs.iter().map(|c| encode(c).unwrap()).collect();
        let refs: Vec<&Contribution> = cs.iter().collect();
        let weights: Vec<f32> = (0..n)
            .map(|i| if zero_mask >> i & 1 == 1 { 0.0 } else { 1.0 + (i % 3) as f32 * 0.5 })
            .collect();
        let agg = Aggregator::new(if mean { AggregationRule::Mean } else { AggregationRule::MedianClipMean });
        let dense = agg.aggregate(&refs, Some(&weights)).unwrap();
        let whole = agg.aggregate_sparse(&refs, Some(&weights)).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let decoded: Vec<ContributionView> = cs.iter().map(ContributionView::from).collect();
            let encoded: Vec<ContributionView> = bytes
                .iter()
                .map(|b| ContributionView::from_bytes(b, &DecodeLimits::default()).unwrap())
                .collect();
            let s_dec = agg.peer_scales(&decoded, Some(&weights)).unwrap();
            let s_enc = agg.peer_scales(&encoded, Some(&weights)).unwrap();
            prop_assert_eq!(&s_dec, &s_enc);
            let plan = AggregationPlan::new(&shapes, &p, target).unwrap();
            for views in [&decoded, &encoded] {
                let parts = by_ranges(&agg, views, &s_dec, &plan, &shapes);
                prop_assert_eq!(&parts, &whole);
                prop_assert_eq!(agg.aggregate_views(views, Some(&weights)).unwrap(), whole.clone());
                for r in plan.ranges() {
                    let (a, b) = (r.elements.start as usize, r.elements.end as usize);
                    let mut out = vec![f32::NAN; b - a];
                    agg.aggregate_range_dense(views, &s_dec, r, &mut out).unwrap();
                    let got: Vec<u32> = out.iter().map(|x| x.to_bits()).collect();
                    let want: Vec<u32> = dense[r.tensor][a..b].iter().map(|x| x.to_bits()).collect();
                    prop_assert_eq!(got, want);
                }
            }
            prop_assert_eq!(encode_aggregate(&whole), encode_aggregate(&by_ranges(&agg, &encoded, &s_enc, &plan, &shapes)));
            Ok(())
        })?;
    }
}

/// The plan: whole bands, about the target, never across tensors, covering everything.
#[test]
fn plan_cuts_whole_bands() {
    let p = CodecParams::default();
    let shapes = vec![shape(&[256, 128]), shape(&[100]), shape(&[64, 64, 2])];
    let plan = AggregationPlan::new(&shapes, &p, 20_000).unwrap();
    let r: Vec<(usize, u64, u64)> = plan
        .ranges()
        .iter()
        .map(|r| (r.tensor, r.elements.start, r.elements.end))
        .collect();
    // [256, 128]: bands of 64·128 = 8192, three per range; [100] dense: one block;
    // [64, 64, 2] is a [4096, 2] matrix: bands of 64·2 = 128 elements.
    assert_eq!(
        r,
        vec![(0, 0, 24576), (0, 24576, 32768), (1, 0, 100), (2, 0, 8192)]
    );
}

#[test]
fn misuse_is_an_error() {
    let p = CodecParams::default();
    let shapes = vec![shape(&[128, 128]), shape(&[10])];
    let cs = peers(&p, &shapes, 3, 1);
    let views: Vec<ContributionView> = cs.iter().map(ContributionView::from).collect();
    let agg = Aggregator::default();
    let scales = agg.peer_scales(&views, None).unwrap();
    let mut seg = AggregateSegment::default();
    let label = |r: AggregateRange, seg: &mut AggregateSegment| {
        agg.aggregate_range(&views, &scales, &r, seg)
            .map_or_else(|e| e.label(), |_| "ok")
    };
    let r = |tensor, a, b| AggregateRange {
        tensor,
        elements: a..b,
    };
    assert_eq!(label(r(0, 0, 8192), &mut seg), "ok");
    assert_eq!(label(r(0, 8192, 16384), &mut seg), "ok");
    assert_eq!(label(r(0, 1, 8192), &mut seg), "invalid_range");
    assert_eq!(label(r(0, 0, 100), &mut seg), "invalid_range");
    assert_eq!(label(r(0, 0, 16385), &mut seg), "invalid_range");
    assert_eq!(label(r(0, 5, 5), &mut seg), "invalid_range");
    assert_eq!(label(r(1, 0, 10), &mut seg), "ok");
    assert_eq!(label(r(2, 0, 10), &mut seg), "invalid_range");
    // Scales of another rule or another peer set.
    let mean = Aggregator::new(AggregationRule::Mean);
    assert!(
        mean.aggregate_range(&views, &scales, &r(1, 0, 10), &mut seg)
            .is_err()
    );
    assert!(
        agg.aggregate_range(&views[..2], &scales, &r(1, 0, 10), &mut seg)
            .is_err()
    );
    let others = peers(&p, &[shape(&[128, 128]), shape(&[12])], 3, 1);
    let other_views: Vec<ContributionView> = others.iter().map(ContributionView::from).collect();
    assert_eq!(
        agg.aggregate_range(&other_views, &scales, &r(1, 0, 10), &mut seg)
            .unwrap_err()
            .label(),
        "incompatible_contribution"
    );
    let mut out = vec![0f32; 9];
    assert_eq!(
        agg.aggregate_range_dense(&views, &scales, &r(1, 0, 10), &mut out)
            .unwrap_err()
            .label(),
        "length_mismatch"
    );
    // Segments that leave a gap or overlap.
    let seg_of = |tensor, a, b| {
        let mut s = AggregateSegment::default();
        agg.aggregate_range(&views, &scales, &r(tensor, a, b), &mut s)
            .unwrap();
        s
    };
    let gap = vec![seg_of(0, 0, 8192), seg_of(1, 0, 10)];
    assert_eq!(
        SparseAggregate::from_segments(&shapes, gap)
            .unwrap_err()
            .label(),
        "invalid_range"
    );
    let twice = vec![seg_of(0, 0, 16384), seg_of(0, 0, 16384), seg_of(1, 0, 10)];
    assert_eq!(
        SparseAggregate::from_segments(&shapes, twice)
            .unwrap_err()
            .label(),
        "invalid_range"
    );
    let full = vec![seg_of(1, 0, 10), seg_of(0, 8192, 16384), seg_of(0, 0, 8192)];
    assert_eq!(
        SparseAggregate::from_segments(&shapes, full).unwrap(),
        agg.aggregate_sparse(&[&cs[0], &cs[1], &cs[2]], None)
            .unwrap()
    );
}

/// Corrupted encodings: whatever `decode` accepts aggregates to the same bits from the bytes;
/// whatever it rejects for its positions fails from the bytes too; nothing panics.
#[test]
fn views_of_corrupted_bytes() {
    let p = CodecParams {
        chunk_side: 8,
        k_per_chunk: 3,
        ..CodecParams::default()
    };
    let shapes = vec![shape(&[16, 24]), shape(&[5])];
    let cs = peers(&p, &shapes, 2, 9);
    let good = encode(&cs[1]).unwrap();
    let agg = Aggregator::default();
    let (mut same, mut failed) = (0, 0);
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut b = good.clone();
            b[i] ^= 1 << bit;
            let decoded = decode(&b, &DecodeLimits::default());
            let from_bytes = ContributionView::from_bytes(&b, &DecodeLimits::default())
                .and_then(|v| agg.aggregate_views(&[ContributionView::from(&cs[0]), v], None));
            match decoded {
                Ok(c) => {
                    // An accepted flip may change the parameters: then both refuse the pair.
                    let want = agg.aggregate_sparse(&[&cs[0], &c], None);
                    assert_eq!(from_bytes, want, "byte {i} bit {bit}");
                    same += 1;
                }
                Err(e)
                    if matches!(
                        e.label(),
                        "wrong_count" | "position_out_of_range" | "duplicate_position"
                    ) =>
                {
                    assert!(from_bytes.is_err(), "byte {i} bit {bit}: {e}");
                    failed += 1;
                }
                Err(_) => {}
            }
        }
    }
    assert!(same > 100 && failed > 10, "{same} {failed}");
}
