//! One entry of the pending store in 40 bytes, and what does not fit in them.
//!
//! A record holds a 96-bit hash of the event id (not the id: 12 bytes
//! whatever its length), the event time, the sweep count when it was
//! written (its stamp, see the store's lazy expiry), and the entry inline:
//! a binary classifier's score and class, a regression's value, a waiting
//! label's model and value. Class and model names are numbered in a
//! bounded dictionary ([`Strings`]). An entry that does not fit — a
//! multi-class prediction's probabilities, a prediction with both a score
//! and a value, a name past the dictionary's bound — keeps the rest in an
//! [`Extra`] that the record points to.

use compact_str::CompactString;
use driftwatch_ingest::EventTime;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use super::{Entry, StoredLabel, WaitingLabel};
use crate::performance::metrics::Outcome;

/// What the store keys an entry by: 96 bits of the event id's XXH3-128 hash
/// (a collision among a billion ids has a chance of about 10⁻¹¹).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(super) struct Key {
    pub hi: u64,
    pub lo: u32,
}

impl Key {
    pub fn of(id: &str) -> Key {
        let h = twox_hash::XxHash3_128::oneshot(id.as_bytes());
        Key {
            hi: (h >> 64) as u64,
            lo: h as u32,
        }
    }
}

/// One entry, 40 bytes in memory and on disk.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub(super) struct Record {
    pub hi: u64,
    pub lo: u32,
    /// sweeps done when the record was written
    pub stamp: u32,
    pub time: EventTime,
    /// a score or value (`f64` bits), or where the [`Extra`] is
    pub x: u64,
    /// the tracker's series (predictions), or the model's name (labels)
    pub series: u32,
    /// kind, flags and class name: see the constants below
    pub meta: u32,
}

pub(super) const RECORD_BYTES: usize = 40;
const _: () = assert!(std::mem::size_of::<Record>() == RECORD_BYTES);

pub(super) const PREDICTION: u32 = 0;
pub(super) const LABELED: u32 = 1;
pub(super) const LABEL: u32 = 2;
pub(super) const EXPIRED: u32 = 3;
const KIND: u32 = 0b11;
/// an expired prediction that had been labelled
const EXPIRED_LABELED: u32 = 1 << 2;
const SCORE: u32 = 1 << 3;
const VALUE: u32 = 1 << 4;
const CLASS: u32 = 1 << 5;
const EXTRA: u32 = 1 << 6;
/// kept only to hide an older version of its key on disk: its entry is gone
const GONE: u32 = 1 << 7;
/// the class name's number sits in the top 24 bits
const CLASS_SHIFT: u32 = 8;

impl Record {
    pub fn key(&self) -> Key {
        Key {
            hi: self.hi,
            lo: self.lo,
        }
    }

    pub fn kind(&self) -> u32 {
        self.meta & KIND
    }

    pub fn has_extra(&self) -> bool {
        self.meta & EXTRA != 0
    }

    pub fn is_gone(&self) -> bool {
        self.meta & GONE != 0
    }

    /// The record as a marker of its entry being gone (no extra).
    pub fn gone(&self) -> Record {
        Record {
            meta: (self.meta & KIND) | GONE,
            x: 0,
            ..*self
        }
    }

    /// The same record as an expired prediction (labelled or not).
    pub fn expired(&self, labeled: bool) -> Record {
        Record {
            meta: EXPIRED | if labeled { EXPIRED_LABELED } else { 0 },
            x: 0,
            ..*self
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hi.to_le_bytes());
        out.extend_from_slice(&self.lo.to_le_bytes());
        out.extend_from_slice(&self.stamp.to_le_bytes());
        out.extend_from_slice(&self.time.to_le_bytes());
        out.extend_from_slice(&self.x.to_le_bytes());
        out.extend_from_slice(&self.series.to_le_bytes());
        out.extend_from_slice(&self.meta.to_le_bytes());
    }

    /// Reads a record from the first 40 bytes of `b` (at least that long).
    pub fn read(b: &[u8]) -> Record {
        let u64_at = |i: usize| {
            let mut a = [0; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |i: usize| {
            let mut a = [0; 4];
            a.copy_from_slice(&b[i..i + 4]);
            u32::from_le_bytes(a)
        };
        Record {
            hi: u64_at(0),
            lo: u32_at(8),
            stamp: u32_at(12),
            time: u64_at(16) as i64,
            x: u64_at(24),
            series: u32_at(32),
            meta: u32_at(36),
        }
    }
}

/// What an entry holds beyond its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum Extra {
    Outcome(Outcome),
    Label(WaitingLabel),
}

impl Extra {
    /// Approximate heap bytes it takes.
    pub fn bytes(&self) -> usize {
        let s = |c: &CompactString| {
            if c.is_heap_allocated() {
                c.capacity()
            } else {
                0
            }
        };
        // an allocation costs about 16 bytes of the allocator's
        std::mem::size_of::<Extra>()
            + 16
            + match self {
                Extra::Outcome(o) => {
                    o.class.as_ref().map_or(0, s)
                        + o.probabilities.capacity() * std::mem::size_of::<(CompactString, f64)>()
                        + o.probabilities.iter().map(|(c, _)| s(c)).sum::<usize>()
                }
                Extra::Label(w) => {
                    s(&w.model)
                        + match &w.label {
                            StoredLabel::Class(c) => s(c),
                            StoredLabel::Value(_) => 0,
                        }
                }
            }
    }
}

/// Class and model names, numbered in order of first use, at most
/// [`Strings::MAX`] of them (names past it go to an [`Extra`]). Numbers
/// are never reused, so a record on disk names the same string forever.
#[derive(Debug, Default)]
pub(super) struct Strings {
    list: Vec<CompactString>,
    index: HashMap<CompactString, u32, ahash::RandomState>,
    bytes: usize,
}

impl Strings {
    pub const MAX: usize = 1 << 16;

    pub fn from_list(list: Vec<CompactString>) -> Strings {
        let mut s = Strings::default();
        for name in list {
            s.intern(&name);
        }
        s
    }

    pub fn list(&self) -> &[CompactString] {
        &self.list
    }

    fn intern(&mut self, name: &str) -> Option<u32> {
        if let Some(&i) = self.index.get(name) {
            return Some(i);
        }
        if self.list.len() >= Self::MAX {
            return None;
        }
        let i = self.list.len() as u32;
        let name = CompactString::from(name);
        // the name twice (list and index), the index's bucket
        self.bytes += 2 * std::mem::size_of::<CompactString>() + 8 + 2 * name.len();
        self.list.push(name.clone());
        self.index.insert(name, i);
        Some(i)
    }

    fn name(&self, i: u32) -> Option<&CompactString> {
        self.list.get(i as usize)
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The record of `entry` under `key`, and its [`Extra`] if it needs one
/// (the caller stores it and sets the record's `x` to where it is).
pub(super) fn encode(
    key: Key,
    stamp: u32,
    entry: Entry,
    strings: &mut Strings,
) -> (Record, Option<Extra>) {
    let mut r = Record {
        hi: key.hi,
        lo: key.lo,
        stamp,
        time: entry.time(),
        ..Record::default()
    };
    match entry {
        Entry::Prediction {
            series, outcome, ..
        } => {
            r.series = series;
            r.meta = PREDICTION;
            let simple = outcome.probabilities.is_empty()
                && !(outcome.score.is_some() && outcome.value.is_some());
            let class = match &outcome.class {
                _ if !simple => None,
                None => Some(0),
                Some(c) => strings.intern(c).map(|i| CLASS | i << CLASS_SHIFT),
            };
            let Some(class) = class else {
                r.meta |= EXTRA;
                return (r, Some(Extra::Outcome(*outcome)));
            };
            r.meta |= class;
            if let Some(s) = outcome.score {
                r.meta |= SCORE;
                r.x = s.to_bits();
            } else if let Some(v) = outcome.value {
                r.meta |= VALUE;
                r.x = v.to_bits();
            }
        }
        Entry::Labeled { series, .. } => {
            r.series = series;
            r.meta = LABELED;
        }
        Entry::Label { waiting, .. } => {
            r.meta = LABEL;
            let model = strings.intern(&waiting.model);
            let label = match &waiting.label {
                StoredLabel::Class(c) => strings.intern(c).map(|i| CLASS | i << CLASS_SHIFT),
                StoredLabel::Value(v) => {
                    r.x = v.to_bits();
                    Some(VALUE)
                }
            };
            match (model, label) {
                (Some(model), Some(label)) => {
                    r.series = model;
                    r.meta |= label;
                }
                _ => {
                    r.meta |= EXTRA;
                    r.x = 0;
                    return (r, Some(Extra::Label(*waiting)));
                }
            }
        }
        Entry::Expired { labeled, .. } => r = r.expired(labeled),
    }
    (r, None)
}

/// The entry a record holds; `extra` is its [`Extra`] when it has one.
pub(super) fn decode(r: &Record, strings: &Strings, extra: Option<Extra>) -> Result<Entry, String> {
    let name = |i: u32| {
        strings.name(i).cloned().ok_or_else(|| {
            format!(
                "record names string {i}, the store knows {}",
                strings.list.len()
            )
        })
    };
    let class = |r: &Record| -> Result<Option<CompactString>, String> {
        if r.meta & CLASS != 0 {
            name(r.meta >> CLASS_SHIFT).map(Some)
        } else {
            Ok(None)
        }
    };
    let missing = || "record without its extra".to_string();
    Ok(match r.kind() {
        PREDICTION => {
            let outcome = if r.has_extra() {
                match extra {
                    Some(Extra::Outcome(o)) => o,
                    _ => return Err(missing()),
                }
            } else {
                let x = f64::from_bits(r.x);
                Outcome {
                    class: class(r)?,
                    score: (r.meta & SCORE != 0).then_some(x),
                    value: (r.meta & VALUE != 0).then_some(x),
                    probabilities: Vec::new(),
                }
            };
            Entry::Prediction {
                series: r.series,
                time: r.time,
                outcome: Box::new(outcome),
            }
        }
        LABELED => Entry::Labeled {
            series: r.series,
            time: r.time,
        },
        LABEL => {
            let waiting = if r.has_extra() {
                match extra {
                    Some(Extra::Label(w)) => w,
                    _ => return Err(missing()),
                }
            } else {
                WaitingLabel {
                    model: name(r.series)?,
                    label: match class(r)? {
                        Some(c) => StoredLabel::Class(c),
                        None => StoredLabel::Value(f64::from_bits(r.x)),
                    },
                }
            };
            Entry::Label {
                time: r.time,
                waiting: Box::new(waiting),
            }
        }
        _ => Entry::Expired {
            time: r.time,
            labeled: r.meta & EXPIRED_LABELED != 0,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_comes_back_from_its_record() {
        let mut strings = Strings::default();
        let outcome = |class: Option<&str>, score, value, probabilities: Vec<(&str, f64)>| {
            Box::new(Outcome {
                class: class.map(CompactString::from),
                score,
                value,
                probabilities: probabilities
                    .into_iter()
                    .map(|(c, p)| (CompactString::from(c), p))
                    .collect(),
            })
        };
        let entries = [
            Entry::Prediction {
                series: 3,
                time: -5,
                outcome: outcome(None, Some(0.25), None, vec![]),
            },
            Entry::Prediction {
                series: 3,
                time: 7,
                outcome: outcome(Some("yes"), Some(0.75), None, vec![]),
            },
            Entry::Prediction {
                series: 1,
                time: 7,
                outcome: outcome(None, None, Some(-3.5), vec![]),
            },
            Entry::Prediction {
                series: 1,
                time: 7,
                outcome: outcome(Some("a"), None, None, vec![("a", 0.5), ("b", 0.5)]),
            },
            Entry::Prediction {
                series: 1,
                time: 7,
                outcome: outcome(None, Some(0.1), Some(2.0), vec![]),
            },
            Entry::Labeled { series: 9, time: 1 },
            Entry::Label {
                time: 4,
                waiting: Box::new(WaitingLabel {
                    model: "m".into(),
                    label: StoredLabel::Class("yes".into()),
                }),
            },
            Entry::Label {
                time: 4,
                waiting: Box::new(WaitingLabel {
                    model: "m".into(),
                    label: StoredLabel::Value(1.5),
                }),
            },
            Entry::Expired {
                time: 2,
                labeled: true,
            },
            Entry::Expired {
                time: 2,
                labeled: false,
            },
        ];
        let key = Key::of("event-1");
        for e in entries {
            let (r, extra) = encode(key, 4, e.clone(), &mut strings);
            assert_eq!(r.key(), key);
            assert_eq!(r.has_extra(), extra.is_some());
            let mut bytes = Vec::new();
            r.write(&mut bytes);
            assert_eq!(bytes.len(), RECORD_BYTES);
            assert_eq!(Record::read(&bytes), r);
            assert_eq!(decode(&r, &strings, extra), Ok(e));
        }
        // three names: "yes", "a"... no: "a" came with probabilities
        assert_eq!(strings.list(), ["yes", "m"]);
    }

    #[test]
    fn names_past_the_bound_go_to_an_extra() {
        let mut strings = Strings::default();
        for i in 0..Strings::MAX {
            strings.intern(&format!("c{i}"));
        }
        let e = Entry::Label {
            time: 1,
            waiting: Box::new(WaitingLabel {
                model: "new".into(),
                label: StoredLabel::Value(1.0),
            }),
        };
        let (r, extra) = encode(Key::of("x"), 0, e.clone(), &mut strings);
        assert!(r.has_extra());
        assert_eq!(decode(&r, &strings, extra), Ok(e));
        assert_eq!(strings.list().len(), Strings::MAX);
    }
}
