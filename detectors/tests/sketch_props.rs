//! Properties of the sketches: merging partial sketches gives the figures of
//! one sketch over all values, whatever the split and order; snapshots
//! round-trip exactly.

#![allow(clippy::unwrap_used)]

use driftwatch_detectors::sketch::{CategoricalSketch, NumericSketch, NumericSnapshot};
use proptest::prelude::*;

fn sketch(values: &[f64]) -> NumericSketch {
    let mut s = NumericSketch::default();
    values.iter().for_each(|x| s.add(*x));
    s
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn numeric_merge_is_order_independent(
        values in prop::collection::vec(-1e6f64..1e6, 1..3000),
        cuts in prop::collection::vec(0usize..3000, 3),
        discrete in any::<bool>(),
    ) {
        let values: Vec<f64> = if discrete { values.iter().map(|x| (x / 1e5).round()).collect() } else { values };
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % values.len()).collect();
        cuts.sort();
        let parts = [&values[..cuts[0]], &values[cuts[0]..cuts[1]], &values[cuts[1]..cuts[2]], &values[cuts[2]..]];
        let whole = sketch(&values);
        // ((a + b) + c) + d   and   d + (c + (b + a))
        let mut left = sketch(parts[0]);
        for p in &parts[1..] { left.merge(&sketch(p)); }
        let mut right = sketch(parts[3]);
        let mut inner = sketch(parts[2]);
        let mut innermost = sketch(parts[1]);
        innermost.merge(&sketch(parts[0]));
        inner.merge(&innermost);
        right.merge(&inner);
        for merged in [&left, &right] {
            prop_assert_eq!(merged.count(), whole.count());
            prop_assert_eq!(merged.min(), whole.min());
            prop_assert_eq!(merged.max(), whole.max());
            prop_assert!(close(merged.mean().unwrap(), whole.mean().unwrap(), 1e-9));
            prop_assert!(close(merged.variance().unwrap(), whole.variance().unwrap(), 1e-6));
            prop_assert_eq!(merged.exact_counts().is_some(), whole.exact_counts().is_some());
            let (m, w) = (merged.view(), whole.view());
            for q in [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99] {
                // rank error of the merged digest within 2 % of the data
                let x = m.quantile(q).unwrap();
                prop_assert!((w.cdf(x) - q).abs() <= 0.02 + 1.0 / values.len() as f64 + discrete_step(&w, x),
                    "q {} -> {} has rank {}", q, x, w.cdf(x));
            }
        }
    }

    #[test]
    fn numeric_snapshot_round_trips(values in prop::collection::vec(-1e3f64..1e3, 0..2000)) {
        let s = sketch(&values);
        let snapshot = s.snapshot();
        // a binary format keeps every bit of every float
        let bytes = postcard::to_stdvec(&snapshot).unwrap();
        let back: NumericSnapshot = postcard::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &snapshot);
        let restored = NumericSketch::restore(&back);
        prop_assert_eq!(restored.snapshot(), snapshot);
        prop_assert!(restored == s);
    }

    #[test]
    fn a_restored_sketch_goes_on_exactly_like_the_original(
        values in prop::collection::vec(-1e3f64..1e3, 1..5000),
        cut in 0.0f64..1.0,
    ) {
        // continuous values: past the exact counts, with a part-filled buffer
        let cut = (values.len() as f64 * cut) as usize;
        let whole = sketch(&values);
        let bytes = postcard::to_stdvec(&sketch(&values[..cut])).unwrap();
        let mut resumed: NumericSketch = postcard::from_bytes(&bytes).unwrap();
        for &x in &values[cut..] {
            resumed.add(x);
        }
        prop_assert_eq!(resumed.snapshot(), whole.snapshot());
    }

    #[test]
    fn categorical_merge_is_exact_below_capacity(
        values in prop::collection::vec(0u8..40, 0..2000),
        cut in 0usize..2000,
    ) {
        let cut = cut.min(values.len());
        let add = |vs: &[u8]| {
            let mut s = CategoricalSketch::new(64);
            vs.iter().for_each(|v| s.add(&format!("c{v}")));
            s
        };
        let whole = add(&values);
        let mut merged = add(&values[cut..]);
        merged.merge(&add(&values[..cut]));
        prop_assert_eq!(merged.frequencies(), whole.frequencies());
        prop_assert!(merged.is_exact());
        let bytes = postcard::to_stdvec(&whole).unwrap();
        let back: CategoricalSketch = postcard::from_bytes(&bytes).unwrap();
        prop_assert_eq!(back, whole);
    }

    /// Past capacity, frequent categories keep guaranteed counts that never
    /// exceed the truth, and the guaranteed counts plus `other` add up.
    #[test]
    fn categorical_heavy_hitters_are_bounded(
        values in prop::collection::vec(0u32..500, 1..3000),
        cut in 0usize..3000,
    ) {
        let cut = cut.min(values.len());
        // a skewed stream: small numbers are frequent
        let values: Vec<u32> = values.iter().map(|v| v * v / 500).collect();
        let add = |vs: &[u32]| {
            let mut s = CategoricalSketch::new(16);
            vs.iter().for_each(|v| s.add(&v.to_string()));
            s
        };
        let mut merged = add(&values[cut..]);
        merged.merge(&add(&values[..cut]));
        for s in [add(&values), merged] {
            let (counts, other) = s.frequencies();
            let vouched: u64 = counts.iter().map(|(_, c)| c).sum();
            prop_assert_eq!(vouched + other, values.len() as u64);
            for (k, c) in counts {
                let truth = values.iter().filter(|v| v.to_string() == k).count() as u64;
                prop_assert!(c <= truth, "{} guaranteed {} > true {}", k, c, truth);
            }
        }
    }
}

/// For discrete data a quantile sits on a step of the CDF: allow the step.
fn discrete_step(view: &driftwatch_detectors::sketch::SketchView, x: f64) -> f64 {
    match view.exact() {
        Some(counts) => counts
            .iter()
            .find(|(v, _)| *v == x)
            .map_or(0.0, |(_, c)| *c as f64 / view.count() as f64),
        None => 0.0,
    }
}

/// Memory is bounded by the sketch, not the data: the state after 10 million
/// values is no larger than after 100,000.
#[test]
fn sketch_state_does_not_grow_with_the_number_of_values() {
    use rand::SeedableRng;
    use rand_distr::{Distribution, LogNormal};
    let mut rng = rand_pcg::Pcg64::seed_from_u64(5);
    let dist = LogNormal::new(2.0, 1.0).unwrap();
    let names: Vec<String> = (0..5000).map(|i| format!("c{i}")).collect();
    let size = |n: usize, rng: &mut rand_pcg::Pcg64| {
        let mut numeric = NumericSketch::default();
        let mut categorical = CategoricalSketch::new(100);
        for _ in 0..n {
            numeric.add(dist.sample(rng));
        }
        for i in 0..n {
            categorical.add(&names[i % names.len()]);
        }
        assert!(
            categorical.len() <= 200,
            "categories tracked stay within twice the capacity"
        );
        (
            postcard::to_stdvec(&numeric.snapshot()).unwrap().len(),
            postcard::to_stdvec(&categorical).unwrap().len(),
        )
    };
    let small = size(100_000, &mut rng);
    let large = size(10_000_000, &mut rng);
    assert!(
        large.0 <= small.0 + small.0 / 10,
        "numeric state {} bytes for 10M vs {} for 100k",
        large.0,
        small.0
    );
    // (counts are varints: 100 times larger counts take a few more bytes each)
    assert!(
        large.1 <= small.1 * 3 / 2,
        "categorical state {} bytes for 10M vs {} for 100k",
        large.1,
        small.1
    );
    // and the bound is small: a few KiB per (window, feature)
    assert!(large.0 < 16 * 1024 && large.1 < 16 * 1024, "{large:?}");
}
