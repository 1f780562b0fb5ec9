//! [`CategoricalSketch`]: category frequencies in bounded memory.

use std::collections::HashMap;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Default number of categories counted per feature.
pub const DEFAULT_MAX_CATEGORIES: usize = 1000;

/// A category counter: `count` over-estimates the true count by at most `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Counted occurrences (an upper bound once the sketch is saturated).
    pub count: u64,
    /// Largest possible over-count.
    pub error: u64,
}

/// Frequencies of the categories of one feature in one window.
///
/// Exact while the feature has at most `capacity` distinct categories. Past
/// that it becomes a space-saving heavy-hitters sketch: a new category takes
/// the place of the least frequent one, inheriting its count as error. The
/// frequent categories stay accurate; what the counters cannot vouch for is
/// reported as an `other` bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalSketch {
    counts: HashMap<CompactString, Counter>,
    total: u64,
    capacity: usize,
    saturated: bool,
}

impl Default for CategoricalSketch {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_CATEGORIES)
    }
}

impl CategoricalSketch {
    /// An empty sketch counting up to `capacity` categories.
    pub fn new(capacity: usize) -> Self {
        CategoricalSketch {
            counts: HashMap::new(),
            total: 0,
            capacity: capacity.max(1),
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
        if self.counts.len() < self.capacity {
            self.counts
                .insert(value.into(), Counter { count: 1, error: 0 });
            return;
        }
        self.saturated = true;
        if let Some((victim, min)) = self.min_counter() {
            self.counts.remove(&victim);
            self.counts.insert(
                value.into(),
                Counter {
                    count: min + 1,
                    error: min,
                },
            );
        }
    }

    fn min_counter(&self) -> Option<(CompactString, u64)> {
        self.counts
            .iter()
            .min_by(|a, b| a.1.count.cmp(&b.1.count).then_with(|| b.0.cmp(a.0)))
            .map(|(k, c)| (k.clone(), c.count))
    }

    /// Adds everything `other` saw.
    pub fn merge(&mut self, other: &CategoricalSketch) {
        // a category one side does not track may have up to that side's
        // smallest count (zero when that side is exact)
        let floor = |s: &CategoricalSketch| {
            if s.saturated {
                s.counts.values().map(|c| c.count).min().unwrap_or(0)
            } else {
                0
            }
        };
        let (mine_floor, their_floor) = (floor(self), floor(other));
        for (k, c) in self.counts.iter_mut() {
            if !other.counts.contains_key(k) {
                c.count += their_floor;
                c.error += their_floor;
            }
        }
        for (k, c) in &other.counts {
            let entry = self.counts.entry(k.clone()).or_insert(Counter {
                count: mine_floor,
                error: mine_floor,
            });
            entry.count += c.count;
            entry.error += c.error;
        }
        self.total += other.total;
        self.saturated |= other.saturated;
        if self.counts.len() > self.capacity {
            let mut all: Vec<(CompactString, Counter)> = self.counts.drain().collect();
            all.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
            all.truncate(self.capacity);
            self.counts = all.into_iter().collect();
            self.saturated = true;
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

    /// Distinct categories tracked.
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

    /// Guaranteed counts per category (`count - error`), sorted by category,
    /// and the `other` bucket: the values the counters cannot vouch for.
    /// The counts and `other` add up to [`total`](Self::total).
    pub fn frequencies(&self) -> (Vec<(&str, u64)>, u64) {
        let mut out: Vec<(&str, u64)> = self
            .counts
            .iter()
            .map(|(k, c)| (k.as_str(), c.count - c.error))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let vouched: u64 = out.iter().map(|(_, c)| c).sum();
        (out, self.total - vouched)
    }
}
