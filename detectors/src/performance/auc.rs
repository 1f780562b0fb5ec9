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

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Distinct scores kept exactly before the counts fold into bins.
pub const EXACT_SCORES: usize = 4096;
/// Bins of the folded form.
pub const BINS: usize = 4096;

/// Counts of positive and negative labels per score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ScoreCounts {
    /// Per distinct score (by [`order_key`]): (positives, negatives).
    Exact(Exact),
    /// Per bin of width `1 / BINS`: (positives, negatives).
    Binned(Vec<(u64, u64)>),
}

impl Default for ScoreCounts {
    fn default() -> Self {
        ScoreCounts::Exact(Exact::default())
    }
}

/// New scores wait unsorted in a tail of at most this many before they are
/// merged into the sorted ones.
const TAIL: usize = 32;

/// The exact counts: (positives, negatives) per distinct score, by
/// [`order_key`]. A window waiting out its label horizon keeps them for
/// days, so they are kept as flat as they can be: a sorted vector (24 bytes
/// a score, where a B-tree map took about 40), and the scores not seen
/// before in a short unsorted tail, merged in when it fills (an insertion
/// in the middle of the vector for each new score would move half of it).
/// A score is in the vector or the tail, never both. Written and read like
/// the map it replaces (a snapshot of either reads back as the other).
#[derive(Debug, Clone, Default)]
pub struct Exact {
    sorted: Vec<(u64, (u64, u64))>,
    tail: Vec<(u64, (u64, u64))>,
}

impl Exact {
    /// Distinct scores counted.
    fn len(&self) -> usize {
        self.sorted.len() + self.tail.len()
    }

    fn add(&mut self, key: u64, pos: u64, neg: u64) {
        let counts = match self.sorted.binary_search_by_key(&key, |e| e.0) {
            Ok(i) => &mut self.sorted[i].1,
            Err(_) => match self.tail.iter().position(|e| e.0 == key) {
                Some(i) => &mut self.tail[i].1,
                None => {
                    if self.tail.len() == TAIL {
                        self.merge_tail();
                    }
                    self.tail.push((key, (pos, neg)));
                    return;
                }
            },
        };
        counts.0 += pos;
        counts.1 += neg;
    }

    /// Moves the tail into the sorted vector, merging from the back.
    fn merge_tail(&mut self) {
        self.tail.sort_unstable_by_key(|e| e.0);
        let (old, added) = (self.sorted.len(), self.tail.len());
        if self.sorted.capacity() < old + added {
            // about an eighth to spare, not the doubling of a push
            self.sorted.reserve_exact(added + old / 8);
        }
        self.sorted.resize(old + added, (0, (0, 0)));
        let (mut i, mut j) = (old, added);
        for k in (0..old + added).rev() {
            if j > 0 && (i == 0 || self.tail[j - 1].0 > self.sorted[i - 1].0) {
                j -= 1;
                self.sorted[k] = self.tail[j];
            } else {
                i -= 1;
                self.sorted[k] = self.sorted[i];
            }
        }
        self.tail.clear();
    }

    /// Every score's counts, in score order.
    fn iter(&self) -> impl Iterator<Item = (u64, (u64, u64))> + '_ {
        let mut tail = self.tail.clone();
        tail.sort_unstable_by_key(|e| e.0);
        let mut sorted = self.sorted.iter().copied().peekable();
        let mut tail = tail.into_iter().peekable();
        std::iter::from_fn(move || match (sorted.peek(), tail.peek()) {
            (Some(a), Some(b)) if b.0 < a.0 => tail.next(),
            (Some(_), _) => sorted.next(),
            (None, _) => tail.next(),
        })
    }
}

impl PartialEq for Exact {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Serialize for Exact {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // the length first: compact formats (the checkpoint's) need it
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(&k, &v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Exact {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<u64, (u64, u64)>::deserialize(deserializer)?;
        Ok(Exact {
            sorted: map.into_iter().collect(),
            tail: Vec::new(),
        })
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
                scores.add(order_key(score), pos, neg);
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
            for (k, (p, n)) in scores.iter() {
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
                for (k, (p, n)) in scores.iter() {
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
            ScoreCounts::Exact(scores) => Box::new(scores.iter().map(|(_, c)| c)),
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
                v.add(order_key(s), u64::from(positive), u64::from(!positive));
            }
        }
        assert!(!c.is_exact());
        let (a, b) = (c.auc().unwrap_or(0.0), exact.auc().unwrap_or(1.0));
        assert!((a - b).abs() <= c.auc_error_bound(), "{a} vs {b}");
        assert!(c.auc_error_bound() < 0.005);
    }

    #[test]
    fn exact_counts_are_those_of_a_map_across_tail_merges() {
        let mut exact = Exact::default();
        let mut map: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut x: u64 = 7;
        for i in 0..20_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            // about 3,000 distinct keys, each seen several times
            let key = (x >> 33) % 3_000;
            let (p, n) = (i % 3, (i + 1) % 2);
            exact.add(key, p, n);
            let c = map.entry(key).or_default();
            c.0 += p;
            c.1 += n;
            if i % 997 == 0 {
                assert_eq!(exact.len(), map.len());
                assert!(exact.iter().eq(map.iter().map(|(&k, &c)| (k, c))));
            }
        }
        assert!(!exact.tail.is_empty() || exact.sorted.len() == map.len());
        assert!(exact.iter().eq(map.iter().map(|(&k, &c)| (k, c))));
    }

    /// `ScoreCounts` as it was written before its exact counts were a
    /// sorted vector.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Written {
        Exact(BTreeMap<u64, (u64, u64)>),
        Binned(Vec<(u64, u64)>),
    }

    #[test]
    fn exact_counts_are_written_as_the_map_they_replaced() {
        let mut c = ScoreCounts::default();
        let mut map: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        // scores in the sorted vector and in the tail
        for i in 0..(3 * TAIL as u64 + 5) {
            let s = (i * 37 % 101) as f64 / 101.0;
            c.add(s, i % 2 == 0);
            let e = map.entry(order_key(s)).or_default();
            e.0 += u64::from(i % 2 == 0);
            e.1 += u64::from(i % 2 != 0);
        }
        let ScoreCounts::Exact(exact) = &c else {
            panic!("folded")
        };
        assert!(!exact.tail.is_empty() && !exact.sorted.is_empty());
        let old = Written::Exact(map);
        let bytes = postcard::to_allocvec(&c).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&old).unwrap());
        assert_eq!(postcard::from_bytes::<ScoreCounts>(&bytes).unwrap(), c);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, serde_json::to_string(&old).unwrap());
        assert_eq!(serde_json::from_str::<ScoreCounts>(&json).unwrap(), c);
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
