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
