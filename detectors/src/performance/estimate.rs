//! Performance estimated without labels, confidence-based (CBPE, as NannyML
//! does it): a binary classifier's scores, calibrated on a labelled
//! reference, are the probabilities that each prediction is right, so their
//! sums are the expected confusion matrix of a window and its metrics the
//! expected ones. The estimate is right as long as the scores stay
//! calibrated: under covariate shift (the mix of inputs moves, P(y|x)
//! does not) it follows the realised figures; a change of P(y|x) itself
//! (concept drift) is invisible to it.
//!
//! - [`Isotonic`]: the calibration, isotonic regression of the reference's
//!   labels on its scores (pool adjacent violators; ties averaged; read
//!   between its points linearly and clipped at its ends, as
//!   scikit-learn's `IsotonicRegression(out_of_bounds="clip")`).
//! - [`Expected`]: one window's running sums — per prediction O(1), and a
//!   sparse histogram of the scores for ROC AUC.
//!
//! Checked against NannyML 0.13's `CBPE` on the same data and chunks
//! (`tests/cbpe_oracle.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Score bins of the ROC AUC estimate (`[0, 1]` cut in equal parts).
pub const BINS: usize = 4096;

/// An increasing calibration map fitted on labelled scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Isotonic {
    /// The fitted points, by score (ascending): (score, probability).
    points: Vec<(f64, f64)>,
}

impl Isotonic {
    /// Fits the map to `(score, label)` pairs; `None` without any pair
    /// with a finite score.
    pub fn fit(pairs: impl IntoIterator<Item = (f64, bool)>) -> Option<Self> {
        let mut pairs: Vec<(f64, f64)> = pairs
            .into_iter()
            .filter(|(s, _)| s.is_finite())
            .map(|(s, y)| (s, f64::from(u8::from(y))))
            .collect();
        if pairs.is_empty() {
            return None;
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        // equal scores become one point: the mean label, weighted by count
        let mut xs: Vec<f64> = Vec::new();
        let mut blocks: Vec<(f64, f64)> = Vec::new(); // (sum of labels, weight)
        for (s, y) in pairs {
            if xs.last() == Some(&s) {
                let b = blocks
                    .last_mut()
                    .unwrap_or_else(|| unreachable!("one per x"));
                b.0 += y;
                b.1 += 1.0;
            } else {
                xs.push(s);
                blocks.push((y, 1.0));
            }
        }
        // pool adjacent violators over the points, keeping where each pool starts
        let mut pools: Vec<(f64, f64, usize)> = Vec::with_capacity(blocks.len());
        for (i, (sum, weight)) in blocks.iter().enumerate() {
            pools.push((*sum, *weight, i));
            while pools.len() > 1 {
                let (s1, w1, _) = pools[pools.len() - 1];
                let (s0, w0, start) = pools[pools.len() - 2];
                if s0 / w0 <= s1 / w1 {
                    break;
                }
                pools.pop();
                let last = pools.len() - 1;
                pools[last] = (s0 + s1, w0 + w1, start);
            }
        }
        let mut fitted = vec![0.0; xs.len()];
        for (k, (sum, weight, start)) in pools.iter().enumerate() {
            let end = pools.get(k + 1).map_or(xs.len(), |p| p.2);
            for f in &mut fitted[*start..end] {
                *f = sum / weight;
            }
        }
        // the inner points of a flat run add nothing to the linear reading
        let mut points = Vec::new();
        for i in 0..xs.len() {
            let inner = i > 0
                && i + 1 < xs.len()
                && fitted[i] == fitted[i - 1]
                && fitted[i] == fitted[i + 1];
            if !inner {
                points.push((xs[i], fitted[i]));
            }
        }
        Some(Isotonic { points })
    }

    /// The calibrated probability of `score`: linear between the fitted
    /// points, the end values beyond them.
    pub fn calibrate(&self, score: f64) -> f64 {
        let p = &self.points;
        let (first, last) = (p[0], p[p.len() - 1]);
        // below the first point, or not a number
        if score.is_nan() || score <= first.0 {
            return first.1;
        }
        if score >= last.0 {
            return last.1;
        }
        let i = p.partition_point(|(x, _)| *x <= score);
        let ((x0, y0), (x1, y1)) = (p[i - 1], p[i]);
        y0 + (score - x0) / (x1 - x0) * (y1 - y0)
    }

    /// The fitted points kept (after dropping the inner points of flat runs).
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no point was kept (never: [`fit`](Self::fit) needs one).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// The expected confusion matrix of a window and what its ROC AUC
/// estimate needs, from calibrated probabilities.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    /// Predictions.
    pub n: u64,
    /// Expected true positives: Σ p over positive predictions.
    pub tp: f64,
    /// Expected false positives: Σ (1 − p) over positive predictions.
    pub fp: f64,
    /// Expected false negatives: Σ p over negative predictions.
    pub fn_: f64,
    /// Expected true negatives: Σ (1 − p) over negative predictions.
    pub tn: f64,
    /// Per bin of the uncalibrated score: (predictions, Σ p).
    bins: BTreeMap<u16, (u64, f64)>,
}

/// A window's estimated metrics (`None` where the expected counts leave one
/// undefined, as a division by zero).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimated {
    /// Expected share of right predictions.
    pub accuracy: Option<f64>,
    /// TP / (TP + FP).
    pub precision: Option<f64>,
    /// TP / (TP + FN).
    pub recall: Option<f64>,
    /// TP / (TP + (FP + FN) / 2).
    pub f1: Option<f64>,
    /// The ROC curve expected from the probabilities, ranked by score.
    pub roc_auc: Option<f64>,
}

fn bin(score: f64) -> u16 {
    ((score.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1) as u16
}

impl Expected {
    /// Adds one prediction: its uncalibrated `score`, its calibrated
    /// probability `p` of the positive class, and whether it was
    /// predicted positive.
    pub fn add(&mut self, score: f64, p: f64, predicted_positive: bool) {
        let p = p.clamp(0.0, 1.0);
        self.n += 1;
        if predicted_positive {
            self.tp += p;
            self.fp += 1.0 - p;
        } else {
            self.fn_ += p;
            self.tn += 1.0 - p;
        }
        let b = self.bins.entry(bin(score)).or_default();
        b.0 += 1;
        b.1 += p;
    }

    /// Merges another window's sums in (partial windows of partitions).
    pub fn merge(&mut self, other: &Expected) {
        self.n += other.n;
        self.tp += other.tp;
        self.fp += other.fp;
        self.fn_ += other.fn_;
        self.tn += other.tn;
        for (k, (c, s)) in &other.bins {
            let b = self.bins.entry(*k).or_default();
            b.0 += c;
            b.1 += s;
        }
    }

    /// The estimated metrics.
    pub fn estimate(&self) -> Estimated {
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        Estimated {
            accuracy: ratio(self.tp + self.tn, self.n as f64),
            precision: ratio(self.tp, self.tp + self.fp),
            recall: ratio(self.tp, self.tp + self.fn_),
            f1: ratio(self.tp, self.tp + 0.5 * (self.fp + self.fn_)),
            roc_auc: self.roc_auc(),
        }
    }

    /// Trapezoids under the curve of expected true and false positives,
    /// the highest scores first; each bin is one step (its predictions'
    /// order inside it unknown).
    fn roc_auc(&self) -> Option<f64> {
        let positives: f64 = self.bins.values().map(|b| b.1).sum();
        let negatives = self.n as f64 - positives;
        if positives <= 0.0 || negatives <= 0.0 {
            return None;
        }
        let (mut tp, mut fp, mut area) = (0.0, 0.0, 0.0);
        for (count, sum) in self.bins.values().rev() {
            let (tp1, fp1) = (tp + sum, fp + (*count as f64 - sum));
            area += (fp1 - fp) * (tp + tp1) / 2.0;
            (tp, fp) = (tp1, fp1);
        }
        Some(area / (positives * negatives))
    }
}

impl Estimated {
    /// The metrics by name, in the order of the `estimated_metrics` rows.
    pub fn named(&self) -> [(&'static str, Option<f64>); 5] {
        [
            ("accuracy", self.accuracy),
            ("precision", self.precision),
            ("recall", self.recall),
            ("f1", self.f1),
            ("roc_auc", self.roc_auc),
        ]
    }
}

/// What a labelled reference says about the model: its realised metrics
/// and class shares, from which each window's sampling errors follow.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReferenceFigures {
    /// Labelled predictions.
    pub n: u64,
    /// The realised metrics (the expected counts of 0/1 labels are the counts).
    pub realised: Estimated,
    /// Share of predictions that said positive.
    pub predicted_positive_share: f64,
    /// Share of labels that were positive.
    pub positive_share: f64,
    /// Expected calibration error of the model's own scores on the
    /// reference (10 equal-width score bins): how far a score is, on
    /// average, from the share of positives among predictions with that
    /// score. 0 for calibrated scores; the calibration corrects it.
    pub calibration_error: f64,
}

impl ReferenceFigures {
    /// The figures of labelled `(score, label, predicted positive)` triples.
    pub fn of(rows: &[(f64, bool, bool)]) -> Option<Self> {
        if rows.is_empty() {
            return None;
        }
        let mut counts = Expected::default();
        let mut bins = [(0u64, 0.0f64, 0.0f64); 10]; // (n, Σ score, Σ label)
        let (mut predicted, mut positive) = (0u64, 0u64);
        for &(score, label, predicted_positive) in rows {
            let y = f64::from(u8::from(label));
            counts.add(score, y, predicted_positive);
            predicted += u64::from(predicted_positive);
            positive += u64::from(label);
            let b = &mut bins[((score.clamp(0.0, 1.0) * 10.0) as usize).min(9)];
            b.0 += 1;
            b.1 += score.clamp(0.0, 1.0);
            b.2 += y;
        }
        let n = rows.len() as f64;
        Some(ReferenceFigures {
            n: rows.len() as u64,
            realised: counts.estimate(),
            predicted_positive_share: predicted as f64 / n,
            positive_share: positive as f64 / n,
            calibration_error: bins.iter().map(|(_, s, y)| (s - y).abs()).sum::<f64>() / n,
        })
    }

    /// The sampling error of each estimated metric over a window of `n`
    /// predictions, in the order of [`Estimated::named`]: accuracy as
    /// NannyML computes it; precision, recall and F1 as binomial shares of
    /// the predictions they count (predicted positives, positives, their
    /// mean); ROC AUC by Hanley and McNeil's formula — all from the
    /// reference's figures.
    pub fn sampling_errors(&self, n: u64) -> [Option<f64>; 5] {
        let share = |v: Option<f64>, of: f64| -> Option<f64> {
            let v = v?.clamp(0.0, 1.0);
            let count = n as f64 * of;
            (count > 0.0).then(|| (v * (1.0 - v) / count).sqrt())
        };
        let r = &self.realised;
        let auc = r.roc_auc.and_then(|a| {
            let (n1, n0) = (
                n as f64 * self.positive_share,
                n as f64 * (1.0 - self.positive_share),
            );
            if n1 < 1.0 || n0 < 1.0 {
                return None;
            }
            let (q1, q2) = (a / (2.0 - a), 2.0 * a * a / (1.0 + a));
            let var =
                (a * (1.0 - a) + (n1 - 1.0) * (q1 - a * a) + (n0 - 1.0) * (q2 - a * a)) / (n1 * n0);
            Some(var.max(0.0).sqrt())
        });
        [
            r.accuracy.and_then(|a| accuracy_sampling_error(a, n)),
            share(r.precision, self.predicted_positive_share),
            share(r.recall, self.positive_share),
            share(
                r.f1,
                (self.predicted_positive_share + self.positive_share) / 2.0,
            ),
            auc,
        ]
    }
}

/// A multi-class model's calibrations, one vs the rest: each class's
/// probability calibrated on whether the label was that class, then the
/// calibrated probabilities of a prediction scaled to sum to 1 (uniform
/// when they are all 0), as NannyML does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Multiclass {
    /// The classes, sorted.
    pub classes: Vec<String>,
    isotonic: Vec<Isotonic>,
}

impl Multiclass {
    /// Fits each class's calibration to rows of (probabilities in the
    /// order of `classes`, index of the label's class); `None` without
    /// two classes or rows.
    pub fn fit(classes: Vec<String>, rows: &[(Vec<f64>, usize)]) -> Option<Self> {
        if classes.len() < 2 || rows.is_empty() {
            return None;
        }
        let isotonic = (0..classes.len())
            .map(|c| Isotonic::fit(rows.iter().map(|(p, y)| (p[c], *y == c))))
            .collect::<Option<Vec<_>>>()?;
        Some(Multiclass { classes, isotonic })
    }

    /// The calibrated probabilities of `raw` (in the order of the classes) into `out`.
    pub fn calibrate(&self, raw: &[f64], out: &mut Vec<f64>) {
        out.clear();
        out.extend(self.isotonic.iter().zip(raw).map(|(i, p)| i.calibrate(*p)));
        let sum: f64 = out.iter().sum();
        let k = out.len() as f64;
        for p in out.iter_mut() {
            *p = if sum > 0.0 { *p / sum } else { 1.0 / k };
        }
    }
}

/// A multi-class window's expected figures: each class's one-vs-rest
/// sums, and the expected number of right predictions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MulticlassExpected {
    /// Predictions.
    pub n: u64,
    /// Σ the calibrated probability of the predicted class.
    right: f64,
    per_class: Vec<Expected>,
}

impl MulticlassExpected {
    /// Adds one prediction: its probabilities as the model gave them and
    /// calibrated (both in the order of the classes), and its predicted class.
    pub fn add(&mut self, raw: &[f64], calibrated: &[f64], predicted: usize) {
        if self.per_class.len() < raw.len() {
            self.per_class.resize_with(raw.len(), Expected::default);
        }
        self.n += 1;
        self.right += calibrated.get(predicted).copied().unwrap_or(0.0);
        for (c, ((e, r), p)) in self
            .per_class
            .iter_mut()
            .zip(raw)
            .zip(calibrated)
            .enumerate()
        {
            e.add(*r, *p, c == predicted);
        }
    }

    /// Merges another window's sums in.
    pub fn merge(&mut self, other: &MulticlassExpected) {
        if self.per_class.len() < other.per_class.len() {
            self.per_class
                .resize_with(other.per_class.len(), Expected::default);
        }
        self.n += other.n;
        self.right += other.right;
        for (e, o) in self.per_class.iter_mut().zip(&other.per_class) {
            e.merge(o);
        }
    }

    /// Accuracy, and the macro averages of the classes' one-vs-rest
    /// precision, recall, F1 and ROC AUC (undefined when a class's is).
    pub fn estimate(&self) -> Estimated {
        let per_class: Vec<Estimated> = self.per_class.iter().map(Expected::estimate).collect();
        let macro_of = |f: fn(&Estimated) -> Option<f64>| -> Option<f64> {
            let values = per_class.iter().map(f).collect::<Option<Vec<f64>>>()?;
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        Estimated {
            accuracy: (self.n > 0).then(|| self.right / self.n as f64),
            precision: macro_of(|e| e.precision),
            recall: macro_of(|e| e.recall),
            f1: macro_of(|e| e.f1),
            roc_auc: macro_of(|e| e.roc_auc),
        }
    }
}

/// What a labelled reference says about a multi-class model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MulticlassFigures {
    /// The realised accuracy and macro averages.
    pub realised: Estimated,
    /// Each class's one-vs-rest figures.
    pub per_class: Vec<ReferenceFigures>,
}

impl MulticlassFigures {
    /// The figures of labelled rows: (probabilities in the order of the
    /// classes, the label's class, the predicted class).
    pub fn of(rows: &[(Vec<f64>, usize, usize)], classes: usize) -> Option<Self> {
        if rows.is_empty() || classes < 2 {
            return None;
        }
        let mut counts = MulticlassExpected::default();
        let mut one_hot = vec![0.0; classes];
        for (p, y, predicted) in rows {
            one_hot.iter_mut().for_each(|v| *v = 0.0);
            one_hot[*y] = 1.0;
            counts.add(p, &one_hot, *predicted);
        }
        let per_class = (0..classes)
            .map(|c| {
                let ovr: Vec<(f64, bool, bool)> = rows
                    .iter()
                    .map(|(p, y, predicted)| (p[c], *y == c, *predicted == c))
                    .collect();
                ReferenceFigures::of(&ovr)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(MulticlassFigures {
            realised: counts.estimate(),
            per_class,
        })
    }

    /// The sampling errors over a window of `n` predictions, in the order
    /// of [`Estimated::named`]: accuracy as for a binary model; a macro
    /// average's as the mean of independent one-vs-rest estimates,
    /// √(Σ se²) / k.
    pub fn sampling_errors(&self, n: u64) -> [Option<f64>; 5] {
        let k = self.per_class.len() as f64;
        let mut out = [None; 5];
        out[0] = self
            .realised
            .accuracy
            .and_then(|a| accuracy_sampling_error(a, n));
        for (m, slot) in out.iter_mut().enumerate().skip(1) {
            let squares = self
                .per_class
                .iter()
                .map(|f| f.sampling_errors(n)[m].map(|e| e * e))
                .collect::<Option<Vec<f64>>>();
            *slot = squares.map(|s| s.iter().sum::<f64>().sqrt() / k);
        }
        out
    }
}

/// The sampling error of an accuracy estimate over `n` predictions: the
/// standard deviation of right (1) and wrong (0) in the labelled reference
/// over √n, as NannyML computes it; a band of ± 3 of it holds the realised
/// accuracy of a window of n as often as the reference's chance of being
/// right does not move.
pub fn accuracy_sampling_error(reference_accuracy: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| {
        let a = reference_accuracy.clamp(0.0, 1.0);
        (a * (1.0 - a)).sqrt() / (n as f64).sqrt()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isotonic_pools_violators_and_reads_linearly_between_points() {
        // labels 0 1 0 1 1 at scores .1 .2 .3 .4 .5: (.2, .3) pool to 0.5
        let iso = Isotonic::fit([
            (0.1, false),
            (0.2, true),
            (0.3, false),
            (0.4, true),
            (0.5, true),
        ])
        .expect("fitted");
        assert_eq!(iso.calibrate(0.1), 0.0);
        assert_eq!(iso.calibrate(0.25), 0.5);
        assert!((iso.calibrate(0.35) - 0.75).abs() < 1e-12);
        assert_eq!(iso.calibrate(0.5), 1.0);
        // clipped beyond the reference's scores
        assert_eq!(iso.calibrate(-3.0), 0.0);
        assert_eq!(iso.calibrate(7.0), 1.0);
        assert_eq!(iso.calibrate(f64::NAN), 0.0);
        // equal scores are one point
        let tied = Isotonic::fit([(0.5, true), (0.5, false), (0.5, true)]).expect("fitted");
        assert!((tied.calibrate(0.5) - 2.0 / 3.0).abs() < 1e-12);
        assert!(Isotonic::fit([(f64::NAN, true)]).is_none());
    }

    /// Windows of 2,000 predictions of a calibrated-on-reference model
    /// under two covariate shifts: customers crowding near the decision
    /// boundary (the model's accuracy falls — the estimate follows it) and a
    /// feature the model ignores moving (alarms for that feature's drift,
    /// but the estimate stays inside the band around the reference's
    /// accuracy). In every window the realised accuracy is within three
    /// sampling errors of the estimate.
    #[test]
    fn the_estimate_follows_a_harmful_shift_and_ignores_a_harmless_one() {
        use rand::{RngExt, SeedableRng};
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_pcg::Pcg64::seed_from_u64(3);
        let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
        // truth: P(y = 1 | x) = sigmoid(2 x); the model's score is
        // miscalibrated, sigmoid(4 x), and x2 plays no part
        let mut draw = |spread: f64, x2_mean: f64, n: usize| -> Vec<(f64, bool, f64)> {
            let (x, x2) = (
                Normal::new(0.0, spread).expect("normal"),
                Normal::new(x2_mean, 1.0).expect("normal"),
            );
            (0..n)
                .map(|_| {
                    let v = x.sample(&mut rng);
                    let label = rng.random::<f64>() < sigmoid(2.0 * v);
                    (sigmoid(4.0 * v), label, x2.sample(&mut rng))
                })
                .collect()
        };
        let reference = draw(1.5, 0.0, 20_000);
        let calibration =
            Isotonic::fit(reference.iter().map(|(s, y, _)| (*s, *y))).expect("calibration");
        let right = |rows: &[(f64, bool, f64)]| {
            rows.iter().filter(|(s, y, _)| (*s >= 0.5) == *y).count() as f64 / rows.len() as f64
        };
        let reference_accuracy = right(&reference);
        let window = |rows: &[(f64, bool, f64)]| {
            let mut e = Expected::default();
            for (s, _, _) in rows {
                e.add(*s, calibration.calibrate(*s), *s >= 0.5);
            }
            e.estimate().accuracy.expect("accuracy")
        };
        let error = accuracy_sampling_error(reference_accuracy, 2_000).expect("error");
        for (name, spread, x2_mean) in [
            ("same", 1.5, 0.0),
            ("harmful", 0.4, 0.0),
            ("harmless", 1.5, 3.0),
        ] {
            for _ in 0..10 {
                let rows = draw(spread, x2_mean, 2_000);
                let (estimate, realised) = (window(&rows), right(&rows));
                assert!(
                    (estimate - realised).abs() <= 3.0 * error,
                    "{name}: estimate {estimate} vs realised {realised} (band ± {})",
                    3.0 * error
                );
                let moved = (estimate - reference_accuracy).abs() > 3.0 * error;
                match name {
                    "harmful" => assert!(
                        estimate < reference_accuracy - 0.1,
                        "the estimate follows the fall: {estimate} vs {reference_accuracy}"
                    ),
                    _ => assert!(!moved, "{name}: {estimate} vs {reference_accuracy}"),
                }
                // the ignored feature did move
                if name == "harmless" {
                    let mean = rows.iter().map(|r| r.2).sum::<f64>() / rows.len() as f64;
                    assert!(mean > 2.5);
                }
            }
        }
    }

    #[test]
    fn expected_counts_give_the_metrics_of_perfectly_confident_scores() {
        let mut e = Expected::default();
        // p = 1 predicted positive (TP), p = 0 predicted negative (TN),
        // p = 1 predicted negative (FN)
        e.add(0.9, 1.0, true);
        e.add(0.1, 0.0, false);
        e.add(0.4, 1.0, false);
        let m = e.estimate();
        assert_eq!(m.accuracy, Some(2.0 / 3.0));
        assert_eq!(m.precision, Some(1.0));
        assert_eq!(m.recall, Some(0.5));
        assert_eq!(m.f1, Some(1.0 / 1.5));
        // positives at 0.9 and 0.4, the negative at 0.1: ranked perfectly
        assert_eq!(m.roc_auc, Some(1.0));
        let mut other = Expected::default();
        other.add(0.95, 0.0, true); // a negative above both positives
        e.merge(&other);
        assert_eq!(e.n, 4);
        assert_eq!(e.estimate().roc_auc, Some(0.5));
        assert_eq!(Expected::default().estimate().accuracy, None);
    }
}
