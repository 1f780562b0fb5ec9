//! ROC AUC from score counts: exact (every distinct score kept) up to a
//! bound, then from a fixed histogram of the scores.
//!
//! The exact form gives what `sklearn.metrics.roc_auc_score` gives (ties
//! count one half). Once a window has seen more than [`EXACT_SCORES`]
//! distinct scores, the counts fold into [`BINS`] equal bins over `[0, 1]`
//! and every bin is treated as one tie group. The error this adds is at most
//! half the share of (positive, negative) pairs that fall into the same bin,
//! `0.5 · Σ_b pos_b · neg_b / (P · N)`; [`ScoreCounts::auc_error_bound`]
//! reports it. For scores spread over `[0, 1]` it is of the order of `1/BINS`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Distinct scores kept exactly before the counts fold into bins.
pub const EXACT_SCORES: usize = 4096;
/// Bins of the folded form.
pub const BINS: usize = 4096;

/// Counts of positive and negative labels per score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ScoreCounts {
    /// Per distinct score (by [`order_key`]): (positives, negatives).
    Exact(BTreeMap<u64, (u64, u64)>),
    /// Per bin of width `1 / BINS`: (positives, negatives).
    Binned(Vec<(u64, u64)>),
}

impl Default for ScoreCounts {
    fn default() -> Self {
        ScoreCounts::Exact(BTreeMap::new())
    }
}

/// A key whose order is the numeric order of the scores (−0 and 0 are one
/// score).
fn order_key(score: f64) -> u64 {
    let score = if score == 0.0 { 0.0 } else { score };
    let bits = score.to_bits();
    if score.is_sign_negative() {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn from_order_key(key: u64) -> f64 {
    if key >> 63 == 1 {
        f64::from_bits(key & !(1 << 63))
    } else {
        f64::from_bits(!key)
    }
}

fn bin(score: f64) -> usize {
    ((score * BINS as f64) as usize).min(BINS - 1)
}

impl ScoreCounts {
    /// Counts one labelled score (`score` in `[0, 1]`).
    pub fn add(&mut self, score: f64, positive: bool) {
        self.add_n(score, u64::from(positive), u64::from(!positive));
    }

    fn add_n(&mut self, score: f64, pos: u64, neg: u64) {
        match self {
            ScoreCounts::Exact(scores) => {
                let counts = scores.entry(order_key(score)).or_default();
                counts.0 += pos;
                counts.1 += neg;
                if scores.len() > EXACT_SCORES {
                    self.fold();
                }
            }
            ScoreCounts::Binned(bins) => {
                let b = &mut bins[bin(score)];
                b.0 += pos;
                b.1 += neg;
            }
        }
    }

    fn fold(&mut self) {
        if let ScoreCounts::Exact(scores) = self {
            let mut bins = vec![(0, 0); BINS];
            for (&k, &(p, n)) in scores.iter() {
                let b = &mut bins[bin(from_order_key(k))];
                b.0 += p;
                b.1 += n;
            }
            *self = ScoreCounts::Binned(bins);
        }
    }

    /// Adds everything `other` counted.
    pub fn merge(&mut self, other: ScoreCounts) {
        match other {
            ScoreCounts::Exact(scores) => {
                for (k, (p, n)) in scores {
                    self.add_n(from_order_key(k), p, n);
                }
            }
            ScoreCounts::Binned(other) => {
                self.fold();
                if let ScoreCounts::Binned(bins) = self {
                    for (b, o) in bins.iter_mut().zip(other) {
                        b.0 += o.0;
                        b.1 += o.1;
                    }
                }
            }
        }
    }

    /// Whether the counts are exact (not folded into bins).
    pub fn is_exact(&self) -> bool {
        matches!(self, ScoreCounts::Exact(_))
    }

    fn groups(&self) -> Box<dyn Iterator<Item = (u64, u64)> + '_> {
        match self {
            ScoreCounts::Exact(scores) => Box::new(scores.values().copied()),
            ScoreCounts::Binned(bins) => Box::new(bins.iter().copied()),
        }
    }

    /// Area under the ROC curve, or `None` without both a positive and a
    /// negative label.
    pub fn auc(&self) -> Option<f64> {
        let (mut pos_total, mut neg_total) = (0u64, 0u64);
        // pairs (positive above negative) + half the tied pairs, in units of 1/2
        let mut half_pairs: u128 = 0;
        for (p, n) in self.groups() {
            half_pairs += u128::from(p) * (2 * u128::from(neg_total) + u128::from(n));
            pos_total += p;
            neg_total += n;
        }
        (pos_total > 0 && neg_total > 0)
            .then(|| half_pairs as f64 / (2.0 * pos_total as f64 * neg_total as f64))
    }

    /// The largest error [`auc`](Self::auc) can have: 0 when exact.
    pub fn auc_error_bound(&self) -> f64 {
        if self.is_exact() {
            return 0.0;
        }
        let (mut pos, mut neg, mut tied) = (0u64, 0u64, 0u128);
        for (p, n) in self.groups() {
            pos += p;
            neg += n;
            tied += u128::from(p) * u128::from(n);
        }
        if pos == 0 || neg == 0 {
            return 0.0;
        }
        0.5 * tied as f64 / (pos as f64 * neg as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_count_half() {
        let mut c = ScoreCounts::default();
        c.add(0.5, true);
        c.add(0.5, false);
        assert_eq!(c.auc(), Some(0.5));
        c.add(0.9, true);
        c.add(0.1, false);
        // pairs: (0.5+,0.5-)=0.5, (0.5+,0.1-)=1, (0.9+,0.5-)=1, (0.9+,0.1-)=1
        assert_eq!(c.auc(), Some(3.5 / 4.0));
    }

    #[test]
    fn one_class_has_no_auc() {
        let mut c = ScoreCounts::default();
        c.add(0.3, true);
        assert_eq!(c.auc(), None);
    }

    #[test]
    fn folds_past_the_bound_and_stays_close() {
        let mut c = ScoreCounts::default();
        let mut exact = ScoreCounts::default();
        for i in 0..20_000u64 {
            let s = (i as f64 * 0.618_033_988_75).fract();
            let positive = (i * 7919) % 10 < (s * 10.0) as u64;
            c.add(s, positive);
            if let ScoreCounts::Exact(v) = &mut exact {
                // never folded: the exact reference
                let c = v.entry(order_key(s)).or_default();
                c.0 += u64::from(positive);
                c.1 += u64::from(!positive);
            }
        }
        assert!(!c.is_exact());
        let (a, b) = (c.auc().unwrap_or(0.0), exact.auc().unwrap_or(1.0));
        assert!((a - b).abs() <= c.auc_error_bound(), "{a} vs {b}");
        assert!(c.auc_error_bound() < 0.005);
    }

    #[test]
    fn merge_equals_one_pass() {
        let mut a = ScoreCounts::default();
        let mut b = ScoreCounts::default();
        let mut all = ScoreCounts::default();
        for i in 0..6000u64 {
            let s = (i % 5000) as f64 / 5000.0;
            let positive = i % 3 == 0;
            all.add(s, positive);
            if i % 2 == 0 { &mut a } else { &mut b }.add(s, positive);
        }
        a.merge(b);
        assert_eq!(a.auc(), all.auc());
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;

    #[test]
    fn order_keys_sort_like_the_scores() {
        let xs = [-1.5, -0.0, 0.0, 1e-300, 0.25, 0.5, 1.0, 7.0];
        for w in xs.windows(2) {
            assert!(order_key(w[0]) <= order_key(w[1]), "{w:?}");
        }
        for x in xs {
            assert_eq!(from_order_key(order_key(x)), x);
        }
        assert_eq!(order_key(-0.0), order_key(0.0));
    }
}
