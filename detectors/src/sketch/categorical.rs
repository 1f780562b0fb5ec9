//! [`CategoricalSketch`]: category frequencies in bounded memory.

use std::collections::HashMap;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Default number of categories counted per feature.
pub const DEFAULT_MAX_CATEGORIES: usize = 1000;

/// A category counter. `count` occurrences were seen while the category was
/// tracked; before that it may have had up to `error` more that were pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Occurrences counted (a lower bound of the true count).
    pub count: u64,
    /// Largest number of occurrences that may have been pruned earlier.
    pub error: u64,
}

/// Frequencies of the categories of one feature in one window.
///
/// Exact while the feature has at most `capacity` distinct categories. Past
/// that it prunes in batches (lossy counting): when `2 × capacity` categories
/// are tracked, only the `capacity` most frequent are kept, and a category
/// seen afterwards may have lost up to the largest pruned count. The frequent
/// categories stay accurate; what the counters cannot vouch for is reported
/// as an `other` bucket. Each value costs O(1) amortised, however many
/// distinct categories a feature has (ids, free text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalSketch {
    /// written in category order, so that equal sketches serialise to
    /// equal bytes (the `feature_sketches.sketch` column, checkpoints)
    #[serde(serialize_with = "in_order")]
    counts: HashMap<CompactString, Counter>,
    total: u64,
    capacity: usize,
    /// largest count ever pruned; 0 while the sketch is exact
    pruned: u64,
    saturated: bool,
}

fn in_order<S: serde::Serializer>(
    counts: &HashMap<CompactString, Counter>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let ordered: std::collections::BTreeMap<&CompactString, &Counter> = counts.iter().collect();
    ordered.serialize(serializer)
}

impl Default for CategoricalSketch {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_CATEGORIES)
    }
}

impl CategoricalSketch {
    /// An empty sketch counting up to `capacity` categories exactly.
    pub fn new(capacity: usize) -> Self {
        CategoricalSketch {
            counts: HashMap::new(),
            total: 0,
            capacity: capacity.max(1),
            pruned: 0,
            saturated: false,
        }
    }

    /// Counts one occurrence of `value`.
    pub fn add(&mut self, value: &str) {
        self.total += 1;
        if let Some(c) = self.counts.get_mut(value) {
            c.count += 1;
            return;
        }
        if self.counts.len() >= 2 * self.capacity {
            self.prune();
        }
        self.counts.insert(
            value.into(),
            Counter {
                count: 1,
                error: self.pruned,
            },
        );
    }

    /// Keeps the `capacity` most frequent categories.
    fn prune(&mut self) {
        if self.counts.len() <= self.capacity {
            return;
        }
        let mut all: Vec<(CompactString, Counter)> = self.counts.drain().collect();
        all.sort_unstable_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        let largest_dropped = all[self.capacity..]
            .iter()
            .map(|(_, c)| c.count + c.error)
            .max()
            .unwrap_or(0);
        self.pruned = self.pruned.max(largest_dropped);
        all.truncate(self.capacity);
        self.counts = all.into_iter().collect();
        self.saturated = true;
    }

    /// Adds everything `other` saw.
    pub fn merge(&mut self, other: &CategoricalSketch) {
        // a category one side does not track may have had up to that side's
        // largest pruned count there
        for (k, c) in self.counts.iter_mut() {
            if !other.counts.contains_key(k) {
                c.error += other.pruned;
            }
        }
        for (k, c) in &other.counts {
            match self.counts.get_mut(k) {
                Some(mine) => {
                    mine.count += c.count;
                    mine.error += c.error;
                }
                None => {
                    self.counts.insert(
                        k.clone(),
                        Counter {
                            count: c.count,
                            error: c.error + self.pruned,
                        },
                    );
                }
            }
        }
        self.total += other.total;
        self.pruned += other.pruned;
        self.saturated |= other.saturated;
        if self.counts.len() > 2 * self.capacity
            || (self.saturated && self.counts.len() > self.capacity)
        {
            self.prune();
        }
    }

    /// Number of values counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether counts are exact (the feature never exceeded the capacity).
    pub fn is_exact(&self) -> bool {
        !self.saturated
    }

    /// Distinct categories tracked (at most twice the capacity).
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The counter of one category, if tracked.
    pub fn get(&self, value: &str) -> Option<Counter> {
        self.counts.get(value).copied()
    }

    /// Guaranteed counts per category, sorted by category, and the `other`
    /// bucket: the values the counters cannot vouch for. The counts and
    /// `other` add up to [`total`](Self::total).
    pub fn frequencies(&self) -> (Vec<(&str, u64)>, u64) {
        let mut out: Vec<(&str, u64)> = self
            .counts
            .iter()
            .map(|(k, c)| (k.as_str(), c.count))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let vouched: u64 = out.iter().map(|(_, c)| c).sum();
        (out, self.total - vouched)
    }
}
