//! File sources: JSON Lines (plain or gzip) and Parquet. The format is told by
//! the file's first bytes, not its name.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use crate::decode::Decoder;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::reject::Reject;

/// Where a record came from, precise enough to find it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Line `line` (1-based) of a JSON Lines file.
    Line {
        /// File path as given.
        file: Arc<str>,
        /// 1-based line number.
        line: u64,
    },
    /// Row `row` (0-based) of a Parquet file.
    Row {
        /// File path as given.
        file: Arc<str>,
        /// 0-based row number.
        row: u64,
    },
    /// Produced in memory (the demo's generator).
    Generated {
        /// Sequence number, 0-based.
        seq: u64,
    },
    /// A Kafka message.
    Kafka {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: i32,
        /// Offset in the partition.
        offset: i64,
    },
    /// A line posted to the HTTP API, numbered in the service's ingest log.
    Http {
        /// Position in the ingest log, 0-based.
        offset: u64,
    },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line { file, line } => write!(f, "{file}:{line}"),
            Position::Row { file, row } => write!(f, "{file} row {row}"),
            Position::Generated { seq } => write!(f, "generated #{seq}"),
            Position::Http { offset } => write!(f, "http #{offset}"),
            Position::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}/{partition}@{offset}"),
        }
    }
}

impl Position {
    /// The source a position is in: a file, a topic's partition, or the
    /// generator.
    pub fn source(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Position::Line { file, .. } | Position::Row { file, .. } => {
                std::borrow::Cow::Borrowed(file)
            }
            Position::Generated { .. } => std::borrow::Cow::Borrowed("generated"),
            Position::Http { .. } => std::borrow::Cow::Borrowed("http"),
            Position::Kafka {
                topic, partition, ..
            } => std::borrow::Cow::Owned(format!("{topic}/{partition}")),
        }
    }
}

/// An event that was refused, with everything needed to find and replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Why.
    pub reason: Reject,
    /// Where it came from.
    pub position: Position,
    /// The original bytes (for a Parquet row: the row as JSON), cut at
    /// [`MAX_KEPT_ORIGINAL`] bytes.
    pub original: Vec<u8>,
    /// Length of the original payload before any cut.
    pub original_len: u64,
}

/// How much of a rejected payload is kept in its dead-letter record. The
/// position still finds the whole payload in its file.
pub const MAX_KEPT_ORIGINAL: usize = 64 * 1024;

impl Rejected {
    /// A rejection keeping (at most [`MAX_KEPT_ORIGINAL`] bytes of) `original`.
    pub fn new(reason: Reject, position: Position, original: &[u8], original_len: u64) -> Self {
        let keep = original.len().min(MAX_KEPT_ORIGINAL);
        Rejected {
            reason,
            position,
            original: original[..keep].to_vec(),
            original_len,
        }
    }
}

/// One record read from a source.
#[derive(Debug)]
pub enum Record {
    /// A valid event.
    Event(Event, Position),
    /// A refused one.
    Rejected(Rejected),
}

impl Record {
    /// Says where the record was found (a source that decodes before it
    /// knows the position: HTTP ingest numbers a post's lines once they
    /// are in its log).
    pub fn set_position(&mut self, at: Position) {
        match self {
            Record::Event(_, position) | Record::Rejected(Rejected { position, .. }) => {
                *position = at;
            }
        }
    }

    /// The JSON event `bytes` found at `position`, or its refusal keeping
    /// the payload.
    pub fn from_json(decoder: &mut Decoder, position: Position, bytes: &[u8]) -> Self {
        match decoder.decode_json(bytes) {
            Ok(event) => Record::Event(event, position),
            Err(reason) => {
                Record::Rejected(Rejected::new(reason, position, bytes, bytes.len() as u64))
            }
        }
    }
}

/// A finite source of records. Sources are `Send`: a pipeline reads and
/// decodes them on a thread of their own, ahead of the event thread.
pub trait Source: Send {
    /// The next record, or `None` at the end.
    fn next_record(&mut self, decoder: &mut Decoder) -> Result<Option<Record>>;
    /// Progress as (done, total) in source-specific units (bytes or rows).
    fn progress(&self) -> (u64, u64);
    /// Name for logs and positions.
    fn name(&self) -> &str;
}

/// File formats a source can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// JSON Lines, uncompressed.
    Jsonl,
    /// JSON Lines, gzip-compressed.
    JsonlGzip,
    /// Apache Parquet.
    Parquet,
}

/// Tells a file's format from its first bytes.
pub fn detect_format(path: &Path) -> Result<FileFormat> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut n = 0;
    while n < magic.len() {
        match file.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => FileFormat::JsonlGzip,
        b"PAR1" => FileFormat::Parquet,
        _ => FileFormat::Jsonl,
    })
}

/// Opens a plain feature table (JSON Lines objects of feature values, or a
/// Parquet file whose columns are features) as predictions of `model`:
/// training data for a reference profile.
pub fn open_table_file(path: &Path, model: &str, version: Option<&str>) -> Result<Box<dyn Source>> {
    let table = Some((model.to_owned(), version.map(str::to_owned)));
    Ok(match detect_format(path)? {
        FileFormat::Jsonl | FileFormat::JsonlGzip => {
            let mut source = JsonlSource::open(path)?;
            source.table = table;
            Box::new(source)
        }
        FileFormat::Parquet => {
            let mut source = crate::parquet_source::ParquetSource::open(path)?;
            source.set_table(table);
            Box::new(source)
        }
    })
}

/// Opens a file source of whichever format the file has.
pub fn open_file(path: &Path) -> Result<Box<dyn Source>> {
    Ok(match detect_format(path)? {
        FileFormat::Jsonl | FileFormat::JsonlGzip => Box::new(JsonlSource::open(path)?),
        FileFormat::Parquet => Box::new(crate::parquet_source::ParquetSource::open(path)?),
    })
}

/// Counts bytes read from the underlying file (before decompression), for progress.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, AtomicOrdering::Relaxed);
        Ok(n)
    }
}

const CHUNK: usize = 1 << 20;

/// Reads (and decompresses) on a thread of its own, handing over 1 MiB
/// chunks through a bounded channel, so that the thread that decodes and
/// windows events spends no time in `read` system calls or in gzip.
struct ReadAhead {
    chunks: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    fn spawn(mut inner: Box<dyn Read + Send>, name: &str) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::Builder::new()
            .name(format!("read {name}"))
            .spawn(move || {
                loop {
                    let mut chunk = vec![0u8; CHUNK];
                    let mut filled = 0;
                    let result = loop {
                        if filled == CHUNK {
                            break Ok(());
                        }
                        match inner.read(&mut chunk[filled..]) {
                            Ok(0) => break Ok(()),
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    };
                    chunk.truncate(filled);
                    let last = filled < CHUNK || result.is_err();
                    // a closed channel means the reader was dropped: stop
                    if filled > 0 && tx.send(Ok(chunk)).is_err() {
                        return;
                    }
                    if let Err(e) = result {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    if last {
                        return;
                    }
                }
            })?;
        Ok(ReadAhead {
            chunks: rx,
            current: Vec::new(),
            pos: 0,
            done: false,
        })
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ReadAhead {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.current.len() && !self.done {
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => self.done = true,
            }
        }
        Ok(&self.current[self.pos.min(self.current.len())..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt;
    }
}

/// One line, without its line terminator.
#[derive(Debug)]
pub struct Line<'a> {
    /// 1-based line number.
    pub number: u64,
    /// The line's bytes, cut at the reader's limit.
    pub bytes: &'a [u8],
    /// The full length of the line.
    pub len: u64,
}

/// Reads lines while holding at most `limit + 1` bytes of any line in memory,
/// so a runaway line (10 MB, or a file with no newline) cannot exhaust memory.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    limit: usize,
    line: u64,
    /// bytes of the line lent out by the fast path, consumed on the next call
    pending: usize,
}

impl<R: BufRead> LineReader<R> {
    /// Reads lines from `inner`, keeping at most `limit + 1` bytes of each.
    pub fn new(inner: R, limit: u64) -> Self {
        LineReader {
            inner,
            buf: Vec::with_capacity(4096),
            limit: usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .min(usize::MAX - 1),
            line: 0,
            pending: 0,
        }
    }

    /// The next line, or `None` at the end of input.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        if self.pending > 0 {
            self.inner.consume(self.pending);
            self.pending = 0;
        }
        // fast path: the whole line is in the reader's buffer; lend it from
        // there and consume it on the next call
        let found = loop {
            match self.inner.fill_buf() {
                Ok(available) => break memchr::memchr(b'\n', available),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if let Some(i) = found
            && i <= self.limit
        {
            self.pending = i + 1;
            self.line += 1;
            let available = self.inner.fill_buf()?;
            let mut bytes = &available[..i];
            if let [rest @ .., b'\r'] = bytes {
                bytes = rest;
            }
            return Ok(Some(Line {
                number: self.line,
                bytes,
                len: bytes.len() as u64,
            }));
        }
        self.buf.clear();
        let mut len: u64 = 0;
        let mut any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (chunk, used, done) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            len += chunk.len() as u64;
            let room = (self.limit + 1).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.inner.consume(used);
            if done {
                break;
            }
        }
        if self.buf.last() == Some(&b'\r') && len == self.buf.len() as u64 {
            self.buf.pop();
            len -= 1;
        }
        self.line += 1;
        Ok(Some(Line {
            number: self.line,
            bytes: &self.buf,
            len,
        }))
    }
}

/// A JSON Lines file, plain or gzip.
pub struct JsonlSource {
    name: Arc<str>,
    /// `Some((model, version))`: a plain feature table read as that model's predictions
    table: Option<(String, Option<String>)>,
    lines: Option<LineReader<Box<dyn BufRead + Send>>>,
    read: Arc<AtomicU64>,
    total: u64,
    path: PathBuf,
}

impl fmt::Debug for JsonlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonlSource")
            .field("name", &self.name)
            .finish()
    }
}

/// Opens a JSON Lines file (gzip told by its first bytes) for reading
/// ahead on a thread of its own; `read` counts the file's bytes consumed.
fn open_lines(path: &Path, read: &Arc<AtomicU64>) -> Result<Box<dyn BufRead + Send>> {
    let format = detect_format(path)?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let counting = Counting {
        inner: file,
        count: Arc::clone(read),
    };
    let inner: Box<dyn Read + Send> = match format {
        FileFormat::JsonlGzip => Box::new(flate2::read::MultiGzDecoder::new(
            BufReader::with_capacity(256 * 1024, counting),
        )),
        _ => Box::new(counting),
    };
    Ok(Box::new(
        ReadAhead::spawn(inner, &path.display().to_string()).map_err(|e| Error::io(path, e))?,
    ))
}

/// The lines of a JSON Lines file (plain or gzip) as bytes, for tools that
/// pass events on without decoding them.
pub fn raw_lines(path: &Path) -> Result<LineReader<Box<dyn BufRead + Send>>> {
    let read = Arc::new(AtomicU64::new(0));
    Ok(LineReader::new(open_lines(path, &read)?, u64::MAX))
}

impl JsonlSource {
    /// Opens a JSON Lines file; gzip is detected from the first bytes.
    pub fn open(path: &Path) -> Result<Self> {
        let total = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let read = Arc::new(AtomicU64::new(0));
        let reader = open_lines(path, &read)?;
        Ok(JsonlSource {
            name: Arc::from(path.display().to_string()),
            table: None,
            lines: Some(LineReader::new(reader, u64::MAX)),
            read,
            total,
            path: path.to_owned(),
        })
    }
}

impl Source for JsonlSource {
    fn next_record(&mut self, decoder: &mut Decoder) -> Result<Option<Record>> {
        let Some(lines) = self.lines.as_mut() else {
            return Ok(None);
        };
        // the line limit follows the decoder's event limit
        lines.limit = usize::try_from(decoder.max_event_bytes()).unwrap_or(usize::MAX - 1);
        let line = match lines.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
                self.lines = None;
                return Ok(None);
            }
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let position = Position::Line {
            file: Arc::clone(&self.name),
            line: line.number,
        };
        let result = if line.len > decoder.max_event_bytes() {
            Err(Reject::Oversized {
                len: line.len,
                limit: decoder.max_event_bytes(),
            })
        } else if let Some((model, version)) = &self.table {
            decoder.decode_table_json(line.bytes, model, version.as_deref(), line.number)
        } else {
            decoder.decode_json(line.bytes)
        };
        Ok(Some(match result {
            Ok(event) => Record::Event(event, position),
            Err(reason) => Record::Rejected(Rejected::new(reason, position, line.bytes, line.len)),
        }))
    }

    fn progress(&self) -> (u64, u64) {
        (self.read.load(AtomicOrdering::Relaxed), self.total)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], limit: u64) -> Vec<(u64, Vec<u8>, u64)> {
        let mut r = LineReader::new(io::BufReader::with_capacity(3, input), limit);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().expect("in-memory read") {
            out.push((l.number, l.bytes.to_vec(), l.len));
        }
        out
    }

    #[test]
    fn splits_lines_and_strips_crlf() {
        let got = lines(b"ab\r\ncd\n\nlast", 100);
        assert_eq!(
            got,
            vec![
                (1, b"ab".to_vec(), 2),
                (2, b"cd".to_vec(), 2),
                (3, b"".to_vec(), 0),
                (4, b"last".to_vec(), 4)
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_but_measured() {
        let got = lines(b"0123456789\nok\n", 4);
        assert_eq!(got[0], (1, b"01234".to_vec(), 10));
        assert_eq!(got[1], (2, b"ok".to_vec(), 2));
    }
}
