//! Dead-letter sinks: where refused events go, with their reason and position,
//! so that nothing is dropped silently and every refusal can be replayed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::source::{Position, Rejected};

/// Somewhere refused events are kept.
pub trait DeadLetterSink {
    /// Keeps one refused event. An error here must stop the source: dropping
    /// the event instead would lose it.
    fn send(&mut self, rejected: &Rejected) -> Result<()>;
    /// Makes everything sent so far durable.
    fn flush(&mut self) -> Result<()>;
    /// Like [`flush`](DeadLetterSink::flush), waiting at most `timeout`:
    /// `Ok(false)` when not everything is durable yet (a broker away).
    fn try_flush(&mut self, timeout: std::time::Duration) -> Result<bool> {
        let _ = timeout;
        self.flush().map(|()| true)
    }
}

/// Keeps dead letters from growing past a bound: blank lines of files are
/// counted, not written, and each source may write at most `max_bytes_per_source`
/// bytes of records (counted as the kept original plus a fixed allowance
/// for the reason and position). Past the cap, refusals are only counted.
#[derive(Debug)]
pub struct DeadLetterBudget {
    max_bytes_per_source: u64,
    used: ahash::HashMap<String, u64>,
}

/// What to do with one refused event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write it to the dead-letter sink.
    Write,
    /// A blank line: count it only.
    Blank,
    /// Its source has used up its bytes: count it only. `first` is true for
    /// the first refusal past the cap, for the caller to report once.
    OverCap {
        /// The first refusal of its source past the cap.
        first: bool,
    },
}

/// Bytes counted for a dead-letter record besides its original.
const RECORD_OVERHEAD: u64 = 256;

impl DeadLetterBudget {
    /// A budget of `max_bytes_per_source` bytes for every source.
    pub fn new(max_bytes_per_source: u64) -> Self {
        DeadLetterBudget {
            max_bytes_per_source,
            used: Default::default(),
        }
    }

    /// The cap per source.
    pub fn max_bytes_per_source(&self) -> u64 {
        self.max_bytes_per_source
    }

    /// Decides whether `rejected` is written, and counts it if so.
    pub fn admit(&mut self, rejected: &Rejected) -> Admit {
        // a blank line of a file (a Kafka message, empty or not, is one
        // record at its offset and is kept like any other)
        if rejected.reason == crate::reject::Reject::Empty
            && matches!(rejected.position, Position::Line { .. })
        {
            return Admit::Blank;
        }
        let cost = rejected.original.len() as u64 + RECORD_OVERHEAD;
        let source = rejected.position.source();
        let used = match self.used.get_mut(source.as_ref()) {
            Some(used) => used,
            None => self.used.entry(source.into_owned()).or_default(),
        };
        if *used >= self.max_bytes_per_source {
            return Admit::OverCap { first: false };
        }
        *used += cost;
        if *used > self.max_bytes_per_source {
            // this record would pass the cap: it is the first one left out
            *used = self.max_bytes_per_source;
            return Admit::OverCap { first: true };
        }
        Admit::Write
    }
}

/// One dead-letter record as written to a JSON Lines file.
#[derive(Debug, Serialize)]
struct Entry<'a> {
    reason: &'static str,
    detail: String,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    row: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<i64>,
    original: std::borrow::Cow<'a, str>,
    /// false when `original` is not valid UTF-8 and was written lossily
    original_utf8: bool,
    original_len: u64,
    original_truncated: bool,
}

/// A JSON Lines dead-letter file, appended to: one object per refused event
/// with `reason` (a stable code), `detail`, `source`, `line` or `row`, and the
/// `original` text.
#[derive(Debug)]
pub struct DeadLetterFile {
    path: PathBuf,
    out: BufWriter<File>,
    written: u64,
}

impl DeadLetterFile {
    /// Opens (creating it and its directory if needed) a dead-letter file for appending.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(DeadLetterFile {
            path: path.to_owned(),
            out: BufWriter::new(file),
            written: 0,
        })
    }

    /// Where the records go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many records this sink has written.
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl DeadLetterSink for DeadLetterFile {
    fn send(&mut self, rejected: &Rejected) -> Result<()> {
        let (mut partition, mut offset) = (None, None);
        let (source, line, row) = match &rejected.position {
            Position::Line { file, line } => (file.as_ref(), Some(*line), None),
            Position::Row { file, row } => (file.as_ref(), None, Some(*row)),
            Position::Generated { seq } => ("generated", None, Some(*seq)),
            Position::Http { offset: o } => {
                offset = Some(*o as i64);
                ("http", None, None)
            }
            Position::Kafka {
                topic,
                partition: p,
                offset: o,
            } => {
                (partition, offset) = (Some(*p), Some(*o));
                (topic.as_ref(), None, None)
            }
        };
        let (original, original_utf8) = match std::str::from_utf8(&rejected.original) {
            Ok(s) => (std::borrow::Cow::Borrowed(s), true),
            Err(_) => (String::from_utf8_lossy(&rejected.original), false),
        };
        let entry = Entry {
            reason: rejected.reason.code(),
            detail: rejected.reason.to_string(),
            source,
            line,
            row,
            partition,
            offset,
            original,
            original_utf8,
            original_len: rejected.original_len,
            original_truncated: (rejected.original.len() as u64) < rejected.original_len,
        };
        let io = |e: std::io::Error| Error::io(&self.path, e);
        serde_json::to_writer(&mut self.out, &entry).map_err(|e| io(e.into()))?;
        self.out.write_all(b"\n").map_err(io)?;
        self.written += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reject::Reject;

    fn rejected(file: &str, reason: Reject, len: usize) -> Rejected {
        let position = Position::Line {
            file: file.into(),
            line: 1,
        };
        Rejected::new(reason, position, &vec![b'x'; len], len as u64)
    }

    #[test]
    fn blank_lines_are_counted_and_each_source_stops_at_its_cap() {
        let mut budget = DeadLetterBudget::new(10_000);
        assert_eq!(budget.admit(&rejected("a", Reject::Empty, 0)), Admit::Blank);
        let junk = || Reject::InvalidJson("junk".into());
        let mut written = 0;
        let mut first = 0;
        for _ in 0..100 {
            match budget.admit(&rejected("a", junk(), 1000)) {
                Admit::Write => written += 1,
                Admit::OverCap { first: true } => first += 1,
                Admit::OverCap { first: false } => {}
                Admit::Blank => panic!("not blank"),
            }
        }
        // 1,256 bytes a record: 7 fit in 10,000 bytes
        assert_eq!((written, first), (7, 1));
        // another source has a budget of its own
        assert_eq!(budget.admit(&rejected("b", junk(), 1000)), Admit::Write);
    }
}
