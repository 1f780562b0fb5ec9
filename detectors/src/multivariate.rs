//! Multivariate drift: how well the reference's principal components still
//! describe the numeric features together (PCA reconstruction error, as
//! NannyML's `DataReconstructionDriftCalculator` does it). Univariate
//! statistics miss a change in how features move together; a row that
//! breaks the reference's correlations is far from its reconstruction.
//!
//! - [`Moments`]: running means and co-moments of the reference rows
//!   (Welford's update; mergeable), from which [`Reconstruction::fit`]
//!   standardises the features (the reference's mean and population
//!   standard deviation) and keeps the components of the correlation matrix
//!   that explain more than a share of the variance (0.65 by default:
//!   scikit-learn's `PCA(n_components=0.65)` rule).
//! - [`Reconstruction::error`]: one row's distance from its reconstruction,
//!   in standard units; a window's figure is the mean over its rows
//!   ([`ErrorSums`]), its band the reference windows' mean ± 3 standard
//!   deviations ([`band`]).
//!
//! Checked against NannyML 0.13 on the same data and chunks
//! (`tests/reconstruction_oracle.rs`).

use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

/// The share of the variance the kept components explain by default.
pub const DEFAULT_VARIANCE_SHARE: f64 = 0.65;

/// Means and co-moments of rows of `d` numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    n: u64,
    mean: Vec<f64>,
    /// Σ (x − mean)(x − mean)ᵀ, row-major d × d.
    comoment: Vec<f64>,
}

impl Moments {
    /// No rows yet, of `d` features.
    pub fn new(d: usize) -> Self {
        Moments {
            n: 0,
            mean: vec![0.0; d],
            comoment: vec![0.0; d * d],
        }
    }

    /// Rows seen.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Adds one row (as many numbers as features; finite).
    pub fn add(&mut self, row: &[f64]) {
        let d = self.mean.len();
        debug_assert_eq!(row.len(), d);
        self.n += 1;
        let n = self.n as f64;
        let before: Vec<f64> = row.iter().zip(&self.mean).map(|(x, m)| x - m).collect();
        for (m, delta) in self.mean.iter_mut().zip(&before) {
            *m += delta / n;
        }
        for ((x, m), line) in row
            .iter()
            .zip(&self.mean)
            .zip(self.comoment.chunks_exact_mut(d))
        {
            let after = x - m;
            for (c, b) in line.iter_mut().zip(&before) {
                *c += after * b;
            }
        }
    }

    /// Merges another set of rows in (Chan's formula).
    pub fn merge(&mut self, other: &Moments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other.clone();
            return;
        }
        let d = self.mean.len();
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let delta: Vec<f64> = other
            .mean
            .iter()
            .zip(&self.mean)
            .map(|(b, a)| b - a)
            .collect();
        for ((line, theirs), di) in self
            .comoment
            .chunks_exact_mut(d)
            .zip(other.comoment.chunks_exact(d))
            .zip(&delta)
        {
            for ((c, o), dj) in line.iter_mut().zip(theirs).zip(&delta) {
                *c += o + di * dj * na * nb / n;
            }
        }
        for (m, dl) in self.mean.iter_mut().zip(&delta) {
            *m += dl * nb / n;
        }
        self.n += other.n;
    }
}

/// The reference's standardisation and kept principal components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reconstruction {
    mean: Vec<f64>,
    /// Population standard deviations (1 where a feature is constant).
    scale: Vec<f64>,
    /// Kept components, one unit vector of `d` per row (k × d, row-major).
    components: Vec<f64>,
    /// Share of the variance each kept component explains.
    explained: Vec<f64>,
}

impl Reconstruction {
    /// The components of the reference's correlation matrix that explain
    /// more than `share` of the variance (the fewest that do); `None`
    /// with fewer than two rows or no feature.
    pub fn fit(moments: &Moments, share: f64) -> Option<Self> {
        let d = moments.mean.len();
        if moments.n < 2 || d == 0 {
            return None;
        }
        let n = moments.n as f64;
        let scale: Vec<f64> = (0..d)
            .map(|i| {
                let sd = (moments.comoment[i * d + i] / n).sqrt();
                if sd > 0.0 && sd.is_finite() { sd } else { 1.0 }
            })
            .collect();
        let correlation = DMatrix::from_fn(d, d, |i, j| {
            moments.comoment[i * d + j] / n / (scale[i] * scale[j])
        });
        let eigen = SymmetricEigen::new(correlation);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|a, b| eigen.eigenvalues[*b].total_cmp(&eigen.eigenvalues[*a]));
        let total: f64 = eigen.eigenvalues.iter().map(|v| v.max(0.0)).sum();
        if total <= 0.0 {
            return None;
        }
        // scikit-learn's rule: 1 + the number of components whose
        // cumulative share is at most `share`
        let mut cumulative = 0.0;
        let mut keep = 0;
        for &i in &order {
            cumulative += eigen.eigenvalues[i].max(0.0) / total;
            keep += 1;
            if cumulative > share {
                break;
            }
        }
        let mut components = Vec::with_capacity(keep * d);
        let mut explained = Vec::with_capacity(keep);
        for &i in order.iter().take(keep) {
            components.extend(eigen.eigenvectors.column(i).iter());
            explained.push(eigen.eigenvalues[i].max(0.0) / total);
        }
        Some(Reconstruction {
            mean: moments.mean.clone(),
            scale,
            components,
            explained,
        })
    }

    /// Components kept.
    pub fn components(&self) -> usize {
        self.explained.len()
    }

    /// The share of the variance each kept component explains.
    pub fn explained(&self) -> &[f64] {
        &self.explained
    }

    /// Features (the length of a row).
    pub fn features(&self) -> usize {
        self.mean.len()
    }

    /// The reference's mean of each feature (what a missing value is
    /// taken as: it adds nothing to the error).
    pub fn means(&self) -> &[f64] {
        &self.mean
    }

    /// The distance between `row` (standardised) and its reconstruction
    /// from the kept components.
    pub fn error(&self, row: &[f64]) -> f64 {
        self.error_in_place(&mut row.to_vec())
    }

    /// [`error`](Self::error) without an allocation: `row` is standardised
    /// in place, then each component's projection taken out of it in turn
    /// (the components are orthonormal, so taking one out leaves the
    /// others' projections as they were); what is left is the residual.
    pub fn error_in_place(&self, row: &mut [f64]) -> f64 {
        let d = self.mean.len();
        debug_assert_eq!(row.len(), d);
        for (x, (m, s)) in row.iter_mut().zip(self.mean.iter().zip(&self.scale)) {
            *x = (*x - m) / s;
        }
        for c in self.components.chunks_exact(d) {
            let t: f64 = c.iter().zip(row.iter()).map(|(a, b)| a * b).sum();
            for (x, a) in row.iter_mut().zip(c) {
                *x -= t * a;
            }
        }
        row.iter().map(|x| x * x).sum::<f64>().sqrt()
    }
}

/// A window's reconstruction errors: their mean, and their spread for the
/// sampling error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorSums {
    /// Rows.
    pub n: u64,
    sum: f64,
    sum_sq: f64,
}

impl ErrorSums {
    /// Adds one row's error.
    pub fn add(&mut self, error: f64) {
        self.n += 1;
        self.sum += error;
        self.sum_sq += error * error;
    }

    /// Merges another window's sums in.
    pub fn merge(&mut self, other: &ErrorSums) {
        self.n += other.n;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
    }

    /// The mean error.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// The errors' sample standard deviation.
    pub fn sd(&self) -> Option<f64> {
        (self.n > 1).then(|| {
            let n = self.n as f64;
            ((self.sum_sq - self.sum * self.sum / n) / (n - 1.0))
                .max(0.0)
                .sqrt()
        })
    }

    /// The standard error of the mean (sample standard deviation over √n).
    pub fn sampling_error(&self) -> Option<f64> {
        Some(self.sd()? / (self.n as f64).sqrt())
    }
}

/// The mean and (population) standard deviation of the reference
/// windows' errors; `None` without reference windows.
pub fn mean_sd(reference_windows: &[f64]) -> Option<(f64, f64)> {
    if reference_windows.is_empty() {
        return None;
    }
    let n = reference_windows.len() as f64;
    let mean = reference_windows.iter().sum::<f64>() / n;
    let sd = (reference_windows
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum::<f64>()
        / n)
        .sqrt();
    Some((mean, sd))
}

/// The band a window's mean error is expected in: the mean of the reference
/// windows' errors ± 3 of their (population) standard deviations, never
/// below 0; `None` without reference windows.
pub fn band(reference_windows: &[f64]) -> Option<(f64, f64)> {
    let (mean, sd) = mean_sd(reference_windows)?;
    Some(((mean - 3.0 * sd).max(0.0), mean + 3.0 * sd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_merged_equal_moments_of_all_rows() {
        let rows: Vec<[f64; 3]> = (0..50)
            .map(|i| {
                let x = f64::from(i);
                [x, 2.0 * x + (x * 0.7).sin(), (x * 1.3).cos() * 10.0]
            })
            .collect();
        let mut all = Moments::new(3);
        let (mut a, mut b) = (Moments::new(3), Moments::new(3));
        for (i, r) in rows.iter().enumerate() {
            all.add(r);
            if i < 20 { a.add(r) } else { b.add(r) }
        }
        a.merge(&b);
        assert_eq!(a.n, all.n);
        for (x, y) in a
            .mean
            .iter()
            .zip(&all.mean)
            .chain(a.comoment.iter().zip(&all.comoment))
        {
            assert!((x - y).abs() <= 1e-9 * y.abs().max(1.0), "{x} vs {y}");
        }
    }

    #[test]
    fn perfectly_correlated_features_reconstruct_exactly_until_they_part() {
        let mut m = Moments::new(2);
        for i in 0..100 {
            let x = f64::from(i);
            m.add(&[x, 3.0 * x + 1.0]);
        }
        let r = Reconstruction::fit(&m, DEFAULT_VARIANCE_SHARE).expect("fitted");
        assert_eq!(r.components(), 1);
        assert!((r.explained()[0] - 1.0).abs() < 1e-9);
        assert!(r.error(&[50.0, 151.0]) < 1e-9);
        // the same first feature, the second no longer following it
        assert!(r.error(&[50.0, 0.0]) > 1.0);
        assert!(Reconstruction::fit(&Moments::new(2), 0.65).is_none());
    }

    #[test]
    fn error_sums_and_band() {
        let mut e = ErrorSums::default();
        for v in [1.0, 2.0, 3.0] {
            e.add(v);
        }
        assert_eq!(e.mean(), Some(2.0));
        assert!((e.sampling_error().expect("error") - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let (lo, hi) = band(&[1.0, 1.0, 1.0, 1.0]).expect("band");
        assert_eq!((lo, hi), (1.0, 1.0));
        assert_eq!(band(&[0.1, 5.0]).expect("band").0, 0.0);
    }
}
