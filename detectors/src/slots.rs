//! [`FeatureSlots`]: per-feature state of a window, found fast.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Per-feature values of one window, in first-seen order. Events of one
/// model send their features in the same order and the decoder interns the
/// names, so a feature is looked for first at the event's position, by
/// pointer; only then by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: Deserialize<'de>"))]
pub struct FeatureSlots<T> {
    items: Vec<(Arc<str>, T)>,
    /// rebuilt after deserialising
    #[serde(skip)]
    index: HashMap<Arc<str>, usize, ahash::RandomState>,
}

impl<T> Default for FeatureSlots<T> {
    fn default() -> Self {
        FeatureSlots {
            items: Vec::new(),
            index: HashMap::default(),
        }
    }
}

impl<T: PartialEq> PartialEq for FeatureSlots<T> {
    fn eq(&self, other: &Self) -> bool {
        self.items == other.items
    }
}

impl<T> FeatureSlots<T> {
    /// The value of feature `name`, sent at `position` of its event (use
    /// `usize::MAX` when there is no position), made by `make` on first sight.
    #[inline]
    pub fn get_or_insert_with(
        &mut self,
        position: usize,
        name: &Arc<str>,
        make: impl FnOnce() -> T,
    ) -> &mut T {
        let i = match self.items.get(position) {
            Some((n, _)) if Arc::ptr_eq(n, name) => position,
            _ => {
                if self.index.len() != self.items.len() {
                    self.index = self
                        .items
                        .iter()
                        .enumerate()
                        .map(|(i, (n, _))| (Arc::clone(n), i))
                        .collect();
                }
                match self.index.get(name) {
                    Some(&i) => {
                        // take the event's allocation of the name (after a
                        // restore the stored one is a copy), so that the
                        // next lookup at this position is by pointer
                        if !Arc::ptr_eq(&self.items[i].0, name) {
                            self.items[i].0 = Arc::clone(name);
                        }
                        i
                    }
                    None => {
                        self.items.push((Arc::clone(name), make()));
                        self.index.insert(Arc::clone(name), self.items.len() - 1);
                        self.items.len() - 1
                    }
                }
            }
        };
        &mut self.items[i].1
    }

    /// The features and their values, in first-seen order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &T)> {
        self.items.iter().map(|(n, v)| (n, v))
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no feature was seen.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl<T> IntoIterator for FeatureSlots<T> {
    type Item = (Arc<str>, T);
    type IntoIter = std::vec::IntoIter<(Arc<str>, T)>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_position_then_by_name_and_after_a_round_trip() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let mut slots: FeatureSlots<u32> = FeatureSlots::default();
        *slots.get_or_insert_with(0, &a, || 0) += 1;
        *slots.get_or_insert_with(1, &b, || 0) += 1;
        // another position, and a name that is equal but not the same allocation
        *slots.get_or_insert_with(5, &Arc::from("a"), || 100) += 1;
        assert_eq!(slots.len(), 2);
        let bytes = postcard::to_stdvec(&slots).expect("serialise");
        let mut back: FeatureSlots<u32> = postcard::from_bytes(&bytes).expect("deserialise");
        assert_eq!(back, slots);
        *back.get_or_insert_with(usize::MAX, &Arc::from("b"), || 100) += 1;
        let values: Vec<(String, u32)> = back.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        assert_eq!(values, vec![("a".to_owned(), 2), ("b".to_owned(), 2)]);
    }
}
