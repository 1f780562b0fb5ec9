//! Drift statistics between a reference sketch and a current one.
//!
//! Definitions (the oracle fixtures compute the same ones from raw samples):
//!
//! - **KS distance** D = sup |F_ref(x) − F_cur(x)| over right-continuous CDFs.
//! - **Wasserstein-1** W = ∫ |F_ref(x) − F_cur(x)| dx; *normalised* W / sd_ref
//!   (population standard deviation of the reference).
//! - **PSI** on `bins` reference-quantile bins: edges are the reference's
//!   `i/bins` quantiles (i = 1 … bins−1, duplicates dropped), bins are
//!   right-closed `(e_{i-1}, e_i]`; PSI = Σ (c − r) ln(c / r) with both shares
//!   floored at [`PSI_EPSILON`] so that an empty bin gives a large but finite value.
//! - **Jensen–Shannon distance** on the same bins (or categories): the square
//!   root of the JS divergence with base-2 logarithms, so it lies in [0, 1].
//! - **Chi-squared** (categories): the 2 × k contingency test of homogeneity
//!   between reference and current counts (no continuity correction), with its
//!   p-value from the χ² distribution with k − 1 degrees of freedom.

use std::borrow::Cow;
use std::collections::BTreeMap;

use statrs::distribution::{ChiSquared, ContinuousCDF};

use super::categorical::CategoricalSketch;
use super::numeric::SketchView;

/// Floor for bin shares in PSI (documented smoothing of empty bins).
pub const PSI_EPSILON: f64 = 1e-4;

/// Asymptotic p-value of the two-sample Kolmogorov–Smirnov test for distance
/// `d` between samples of sizes `n` and `m` (Kolmogorov distribution with
/// Stephens' small-sample correction).
pub fn ks_p_value(d: f64, n: f64, m: f64) -> f64 {
    if n <= 0.0 || m <= 0.0 {
        return 1.0;
    }
    let en = (n * m / (n + m)).sqrt();
    let lambda = (en + 0.12 + 0.11 / en) * d;
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for j in 1..=100 {
        let term = sign * 2.0 * (-2.0 * f64::from(j * j) * lambda * lambda).exp();
        sum += term;
        if term.abs() < 1e-12 * sum.abs().max(1e-300) {
            break;
        }
        sign = -sign;
    }
    sum.clamp(0.0, 1.0)
}

/// Drift of a numeric feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumericDrift {
    /// Kolmogorov–Smirnov distance.
    pub ks: f64,
    /// Asymptotic p-value of the KS test on the distance less the
    /// sketches' error bound ([`honest_ks_p_value`]).
    pub ks_p_value: f64,
    /// Wasserstein-1 distance in the feature's units.
    pub wasserstein: f64,
    /// Wasserstein-1 divided by the reference standard deviation (`None` when it is 0).
    pub wasserstein_norm: Option<f64>,
    /// Population stability index on reference-quantile bins.
    pub psi: f64,
    /// Jensen–Shannon distance on the same bins.
    pub js: f64,
}

/// Drift of a categorical feature.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoricalDrift {
    /// Chi-squared statistic of the 2 × k contingency table.
    pub chi2: f64,
    /// Its degrees of freedom (k − 1).
    pub dof: u64,
    /// Its p-value.
    pub p_value: f64,
    /// Population stability index over categories.
    pub psi: f64,
    /// Jensen–Shannon distance over categories.
    pub js: f64,
    /// Share of current values in categories the reference never saw.
    pub unseen_share: f64,
    /// Reference categories absent from the current window.
    pub vanished: u64,
}

/// Points where either CDF steps or changes slope, sorted and unique.
/// Between two consecutive points both CDFs are constant (exact counts) or
/// linear (t-digest), so KS and Wasserstein computed on them are exact for
/// the sketched CDFs.
fn knots(reference: &SketchView, current: &SketchView) -> Vec<f64> {
    let mut points = reference.support();
    points.extend(current.support());
    points.retain(|x| x.is_finite());
    points.sort_by(f64::total_cmp);
    points.dedup();
    points
}

/// ∫ |d| over an interval of width `h` where d goes linearly from `d0` to `d1`.
fn abs_integral(d0: f64, d1: f64, h: f64) -> f64 {
    if d0 * d1 >= 0.0 {
        h * (d0.abs() + d1.abs()) / 2.0
    } else {
        // the difference crosses zero: two triangles
        h * (d0 * d0 + d1 * d1) / (2.0 * (d0.abs() + d1.abs()))
    }
}

/// Shares of `view` in the right-closed bins defined by `edges`.
fn bin_shares(view: &SketchView, edges: &[f64]) -> Vec<f64> {
    let mut shares = Vec::with_capacity(edges.len() + 1);
    let mut below = 0.0;
    for e in edges {
        let f = view.cdf(*e);
        shares.push((f - below).max(0.0));
        below = f.max(below);
    }
    shares.push((1.0 - below).max(0.0));
    shares
}

/// PSI between two share vectors, shares floored at [`PSI_EPSILON`].
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| {
            let (r, c) = (r.max(PSI_EPSILON), c.max(PSI_EPSILON));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// Jensen–Shannon distance (base 2) between two share vectors.
pub fn js_distance(reference: &[f64], current: &[f64]) -> f64 {
    let (sr, sc): (f64, f64) = (reference.iter().sum(), current.iter().sum());
    if sr <= 0.0 || sc <= 0.0 {
        return 0.0;
    }
    let mut divergence = 0.0;
    for (r, c) in reference.iter().zip(current) {
        let (p, q) = (r / sr, c / sc);
        let m = (p + q) / 2.0;
        if p > 0.0 {
            divergence += 0.5 * p * (p / m).log2();
        }
        if q > 0.0 {
            divergence += 0.5 * q * (q / m).log2();
        }
    }
    divergence.max(0.0).sqrt()
}

/// Drift of a numeric feature from `reference` to `current`, with PSI and JS
/// on `bins` reference-quantile bins. `None` when either side is empty.
pub fn numeric_drift(
    reference: &SketchView,
    reference_sd: f64,
    current: &SketchView,
    bins: usize,
) -> Option<NumericDrift> {
    if reference.count() == 0 || current.count() == 0 {
        return None;
    }
    // a step CDF (exact counts) against a t-digest's is read the way the
    // digest reads its centroids, through the middle of each step: read
    // at the top of its steps it would differ from the digest by half a
    // value's share wherever values are tied (0.01 in KS and JS on a
    // feature recorded to one decimal), whatever the two samples
    let (r, c) = if reference.is_step() == current.is_step() {
        (Cow::Borrowed(reference), Cow::Borrowed(current))
    } else {
        (reference.through_midpoints(), current.through_midpoints())
    };
    let points = knots(&r, &c);
    let (a, b) = (r.cdf_sorted(&points), c.cdf_sorted(&points));
    let mut ks: f64 = 0.0;
    let mut wasserstein = 0.0;
    for i in 0..points.len() {
        let (a0, b0) = (a[i], b[i]);
        ks = ks.max((a0 - b0).abs());
        if i + 1 < points.len() {
            // values just below the next knot: a step CDF keeps its value,
            // a linear one reaches the next knot's (it is continuous)
            let a1 = if r.is_step() { a0 } else { a[i + 1] };
            let b1 = if c.is_step() { b0 } else { b[i + 1] };
            ks = ks.max((a1 - b1).abs());
            wasserstein += abs_integral(a0 - b0, a1 - b1, points[i + 1] - points[i]);
        }
    }
    let mut edges: Vec<f64> = (1..bins.max(2))
        .filter_map(|i| reference.quantile(i as f64 / bins.max(2) as f64))
        .collect();
    edges.dedup();
    if reference.is_step() && !current.is_step() {
        // the edges are values of the reference, and a digest puts half
        // of a tied value's share on either side of it: move each edge
        // half-way to the next reference value, where the reference's
        // CDF is the same and the digest's reads the whole tie
        let values = reference.support();
        for e in &mut edges {
            let next = values.partition_point(|v| *v <= *e);
            if let Some(v) = values.get(next) {
                *e = *e + (*v - *e) / 2.0;
            }
        }
    }
    let (r2, c2) = (bin_shares(reference, &edges), bin_shares(current, &edges));
    Some(NumericDrift {
        ks,
        ks_p_value: honest_ks_p_value(ks, &r, &c),
        wasserstein,
        wasserstein_norm: (reference_sd > 0.0).then(|| wasserstein / reference_sd),
        psi: psi(&r2, &c2),
        js: js_distance(&r2, &c2),
    })
}

/// The KS test's p-value for distance `d` measured between two sketched
/// CDFs, claiming no more than the sketches know: the distance less what
/// the sketches' errors could have added ([`SketchView::cdf_error`] of
/// each). Exact counts on both sides give the plain asymptotic p-value.
pub fn honest_ks_p_value(d: f64, reference: &SketchView, current: &SketchView) -> f64 {
    let error = reference.cdf_error() + current.cdf_error();
    ks_p_value(
        (d - error).max(0.0),
        reference.count() as f64,
        current.count() as f64,
    )
}

/// Drift of a categorical feature from `reference` to `current`. A saturated
/// sketch's `other` bucket is compared as one more category.
pub fn categorical_drift(
    reference: &CategoricalSketch,
    current: &CategoricalSketch,
) -> Option<CategoricalDrift> {
    if reference.is_empty() || current.is_empty() {
        return None;
    }
    const OTHER: &str = "\u{0}other";
    let (ref_counts, ref_other) = reference.frequencies();
    let (cur_counts, cur_other) = current.frequencies();
    let mut table: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (k, c) in &ref_counts {
        table.entry(k).or_default().0 += c;
    }
    for (k, c) in &cur_counts {
        table.entry(k).or_default().1 += c;
    }
    if ref_other + cur_other > 0 {
        let e = table.entry(OTHER).or_default();
        e.0 += ref_other;
        e.1 += cur_other;
    }
    let (n_ref, n_cur) = (reference.total() as f64, current.total() as f64);
    let n = n_ref + n_cur;
    let mut chi2 = 0.0;
    let (mut r_shares, mut c_shares) = (Vec::new(), Vec::new());
    let (mut unseen, mut vanished) = (0u64, 0u64);
    for (k, (r, c)) in &table {
        let column = (r + c) as f64;
        for (observed, row) in [(*r as f64, n_ref), (*c as f64, n_cur)] {
            let expected = row * column / n;
            if expected > 0.0 {
                chi2 += (observed - expected).powi(2) / expected;
            }
        }
        r_shares.push(*r as f64 / n_ref);
        c_shares.push(*c as f64 / n_cur);
        if *r == 0 && *k != OTHER {
            unseen += c;
        }
        if *c == 0 && *k != OTHER {
            vanished += 1;
        }
    }
    let dof = table.len().saturating_sub(1) as u64;
    let p_value = if dof == 0 {
        1.0
    } else {
        ChiSquared::new(dof as f64)
            .map(|d| d.sf(chi2))
            .unwrap_or(f64::NAN)
    };
    Some(CategoricalDrift {
        chi2,
        dof,
        p_value,
        psi: psi(&r_shares, &c_shares),
        js: js_distance(&r_shares, &c_shares),
        unseen_share: unseen as f64 / n_cur,
        vanished,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against scipy.special.kolmogorov at the same corrected λ.
    #[test]
    fn ks_p_value_matches_the_kolmogorov_distribution() {
        let cases = [
            (0.05, 1000.0, 1000.0, 0.15955408974378785),
            (0.1, 500.0, 800.0, 0.003888952500765795),
            (0.02, 100_000.0, 50_000.0, 5.0645219497292084e-12),
            (0.2, 50.0, 60.0, 0.20006037914110894),
        ];
        for (d, n, m, want) in cases {
            let have = ks_p_value(d, n, m);
            assert!(
                (have - want).abs() <= 1e-9 * want.max(1e-12),
                "D {d}: {have} vs {want}"
            );
        }
        assert_eq!(ks_p_value(0.0, 100.0, 100.0), 1.0);
    }

    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    use crate::sketch::NumericSketch;

    fn sketch(values: impl Iterator<Item = f64>) -> NumericSketch {
        let mut s = NumericSketch::default();
        for v in values {
            s.add(v);
        }
        s
    }

    /// Windows of stationary data against a 200,000-value reference: the
    /// share of p-values below 0.01 is at most 1 % at every window size
    /// (the uncorrected p-value flagged most large windows: a t-digest's
    /// CDF error is as large as the KS statistic's spread there); a shift of
    /// a tenth of a standard deviation still gives p < 0.01 from 10,000
    /// values on.
    #[test]
    fn p_values_on_sketches_do_not_flag_sketch_error() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(11);
        let normal = Normal::new(0.0, 1.0).expect("normal");
        let reference = sketch((0..200_000).map(|_| normal.sample(&mut rng))).view();
        for (size, windows) in [(1_000, 200), (10_000, 100), (100_000, 30), (1_000_000, 6)] {
            let mut low = 0;
            let mut raw_low = 0;
            for _ in 0..windows {
                let w = sketch((0..size).map(|_| normal.sample(&mut rng))).view();
                let d = numeric_drift(&reference, 1.0, &w, 10).expect("drift");
                low += usize::from(d.ks_p_value < 0.01);
                raw_low += usize::from(
                    ks_p_value(d.ks, reference.count() as f64, w.count() as f64) < 0.01,
                );
            }
            eprintln!("{size}: {low} of {windows} below 0.01 ({raw_low} uncorrected)");
            assert!(
                low as f64 <= 0.01 * windows as f64,
                "{size} values: {low} of {windows} windows below 0.01"
            );
            if size >= 10_000 {
                let shifted = Normal::new(0.1, 1.0).expect("normal");
                let w = sketch((0..size).map(|_| shifted.sample(&mut rng))).view();
                let d = numeric_drift(&reference, 1.0, &w, 10).expect("drift");
                assert!(
                    d.ks_p_value < 0.01,
                    "{size}: a real shift, p {}",
                    d.ks_p_value
                );
            }
        }
    }

    /// The digest's CDF against the exact CDF of the values it saw, at
    /// every value: never further apart than [`SketchView::cdf_error`].
    #[test]
    fn the_digest_cdf_error_bound_holds() {
        use rand_distr::{Exp, LogNormal, Uniform};
        let mut rng = rand_pcg::Pcg64::seed_from_u64(5);
        let normal = Normal::new(0.0, 1.0).expect("normal");
        let mut worst_ratio: f64 = 0.0;
        for size in [1_000usize, 10_000, 100_000, 1_000_000] {
            for name in [
                "normal",
                "lognormal",
                "uniform",
                "exp",
                "bimodal",
                "rounded",
            ] {
                let mut v: Vec<f64> = (0..size)
                    .map(|i| match name {
                        "normal" => normal.sample(&mut rng),
                        "lognormal" => LogNormal::new(0.0, 1.0)
                            .expect("lognormal")
                            .sample(&mut rng),
                        "uniform" => Uniform::new(0.0, 1.0).expect("uniform").sample(&mut rng),
                        "exp" => Exp::new(1.0).expect("exp").sample(&mut rng),
                        "bimodal" => normal.sample(&mut rng) + if i % 2 == 0 { 0.0 } else { 6.0 },
                        // more distinct values than exact counts keep, each repeated
                        _ => (30.0_f64 * normal.sample(&mut rng)).round(),
                    })
                    .collect();
                let view = sketch(v.iter().copied()).view();
                if view.is_step() {
                    continue;
                }
                v.sort_by(f64::total_cmp);
                let n = v.len() as f64;
                let mut worst: f64 = 0.0;
                let mut i = 0;
                while i < v.len() {
                    let j = i + v[i..].partition_point(|x| *x == v[i]);
                    // just below the value, and at it
                    let below = view.cdf(v[i] - 1e-9 * v[i].abs().max(1.0));
                    worst = worst
                        .max((below - i as f64 / n).abs())
                        .max((view.cdf(v[i]) - j as f64 / n).abs());
                    i = j;
                }
                let bound = view.cdf_error();
                worst_ratio = worst_ratio.max(worst / bound * CDF_ERROR_PER_RISE_OF_TEST);
                assert!(
                    worst <= bound,
                    "{size} {name}: error {worst} past the bound {bound}"
                );
            }
        }
        eprintln!("largest error per unit of rise: {worst_ratio:.2}");
    }

    const CDF_ERROR_PER_RISE_OF_TEST: f64 = crate::sketch::numeric::CDF_ERROR_PER_RISE;

    #[test]
    fn exact_counts_have_no_sketch_error() {
        let a = sketch((0..1000).map(|i| f64::from(i % 7))).view();
        assert_eq!(a.cdf_error(), 0.0);
        let b = sketch((0..5000).map(f64::from)).view();
        assert!(
            b.cdf_error() > 0.0 && b.cdf_error() < 0.02,
            "{}",
            b.cdf_error()
        );
        let d = numeric_drift(&a, 2.0, &a, 10).expect("drift");
        assert_eq!(d.ks_p_value, 1.0);
    }

    #[test]
    fn js_and_psi_of_identical_shares_are_zero() {
        let shares = [0.1, 0.2, 0.3, 0.4];
        assert_eq!(psi(&shares, &shares), 0.0);
        assert_eq!(js_distance(&shares, &shares), 0.0);
        assert!((js_distance(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-12);
    }
}
