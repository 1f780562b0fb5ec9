//! Several sources read as one stream, merged by event time: a replay of
//! `predictions.jsonl labels.jsonl` sees the records in the order they
//! happened, as they would have arrived from a broker, not every
//! prediction before the first label.

use crate::decode::Decoder;
use crate::error::Result;
use crate::source::{Record, Source};

/// A k-way merge of sources by event time. Each source is read in its own
/// order (a source that is not sorted stays as it is); of the sources'
/// next records, the earliest goes first, the first source on a tie.
/// Refused records carry no time and go out as soon as they are next in
/// their source. Every source holds one record and its own bounded read-ahead.
pub struct MergedSource {
    sources: Vec<Box<dyn Source>>,
    /// the next record of each source; `None` once it is exhausted
    heads: Vec<Option<Record>>,
    started: bool,
    name: String,
}

impl std::fmt::Debug for MergedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergedSource")
            .field("name", &self.name)
            .finish()
    }
}

impl MergedSource {
    /// Merges `sources` by event time.
    pub fn new(sources: Vec<Box<dyn Source>>) -> Self {
        let name = format!(
            "{} (merged by event time)",
            sources
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        MergedSource {
            heads: sources.iter().map(|_| None).collect(),
            sources,
            started: false,
            name,
        }
    }
}

/// A record's place in the merge: refusals first, then by event time.
fn order(record: &Record) -> i64 {
    match record {
        Record::Event(event, _) => event.timestamp(),
        Record::Rejected(_) => i64::MIN,
    }
}

impl Source for MergedSource {
    fn next_record(&mut self, decoder: &mut Decoder) -> Result<Option<Record>> {
        if !self.started {
            self.started = true;
            for (source, head) in self.sources.iter_mut().zip(&mut self.heads) {
                *head = source.next_record(decoder)?;
            }
        }
        let next = self
            .heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|r| (order(r), i)))
            .min();
        let Some((_, i)) = next else {
            return Ok(None);
        };
        let record = self.heads[i].take();
        self.heads[i] = self.sources[i].next_record(decoder)?;
        Ok(record)
    }

    fn progress(&self) -> (u64, u64) {
        self.sources.iter().fold((0, 0), |(d, t), s| {
            let (done, total) = s.progress();
            (d + done, t + total)
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::JsonlSource;
    use crate::{DecoderConfig, Event};

    #[test]
    fn files_are_merged_by_event_time_with_refusals_kept_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, lines: &[&str]| {
            let path = dir.path().join(name);
            std::fs::write(&path, lines.join("\n")).expect("write");
            Box::new(JsonlSource::open(&path).expect("open")) as Box<dyn Source>
        };
        let p = |id: &str, t: i64| {
            format!(
                r#"{{"event_id":"{id}","model_id":"m","timestamp":{t},"prediction":{{"score":0.5}}}}"#
            )
        };
        let l = |id: &str, t: i64| {
            format!(r#"{{"event_id":"{id}","model_id":"m","timestamp":{t},"label":"1"}}"#)
        };
        let t0 = 1_795_694_400_000;
        let (p1, p2, p3) = (p("a", t0), p("b", t0 + 10), p("c", t0 + 30));
        let (l1, l2) = (l("a", t0 + 5), l("b", t0 + 30));
        let predictions = write("p.jsonl", &[&p1, &p2, "junk", &p3]);
        let labels = write("l.jsonl", &[&l1, &l2]);
        let mut merged = MergedSource::new(vec![predictions, labels]);
        let mut decoder = Decoder::new(DecoderConfig::default());
        let mut seen = Vec::new();
        while let Some(record) = merged.next_record(&mut decoder).expect("read") {
            seen.push(match record {
                Record::Event(Event::Prediction(p), _) => format!("p:{}", p.event_id),
                Record::Event(Event::Label(l), _) => format!("l:{}", l.event_id),
                Record::Rejected(r) => format!("x:{}", r.reason.code()),
            });
        }
        // the junk line goes out once it is next in its file; on a tie the
        // first file goes first
        assert_eq!(seen, ["p:a", "l:a", "p:b", "x:invalid_json", "p:c", "l:b"]);
    }
}
