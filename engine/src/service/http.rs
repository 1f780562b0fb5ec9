//! HTTP ingest: events posted to the API, made durable before they are
//! acknowledged and applied by a pipeline of their own.
//!
//! ```text
//! POST /v1/events ─► submit ─► (queue) ─► http-decode thread: decode and
//!                                          validate each line (same decoding,
//!                                          same refusals)
//!                                            │ (queue)
//!                                            ▼
//!                                          http-ingest thread:
//!                                          append to the log, fsync
//!                                          apply each record (same dead letters)
//!                                          reply: each line's outcome
//!                                          checkpoint when due, roll the log
//! ```
//!
//! The decoding thread works on the next posts while the ingest thread
//! writes and applies the ones before; both keep the order of the posts.
//!
//! The log (`DATA_DIR/ingest/http/log/`) plays the part a Kafka partition
//! plays for the Kafka source: its lines are numbered from 0, the
//! checkpoint records the number of the next line to apply, and after a
//! crash the lines past it (acknowledged, not yet checkpointed) are applied
//! again from the log, so an acknowledged event counts once. The log is cut
//! at every checkpoint: segments wholly before it are deleted, so it holds
//! at most what arrived between two checkpoints.
//!
//! A model's events come through one source: windows of the same model fed
//! by Kafka and by HTTP would be two sets of windows under the same name.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use driftwatch_ingest::durable::sync_dir;
use driftwatch_ingest::{DeadLetterFile, Decoder, Position, Record};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{IngestMetrics, Opened, Shared, SourceStatus, Status};
use crate::pipeline::{CHECKPOINT_FORMAT, Outcome, Pipeline, PipelineState, RunSummary};
use crate::{CheckpointDir, Config, Error, Result};

/// The source's name in the service's status and its checkpoint.
pub const SOURCE: &str = "http";
/// The one partition of the source.
const PARTITION: i32 = 0;
/// Requests waiting to be decoded; past them a post is told to retry.
/// As many decoded ones may wait for the ingest thread, which writes those
/// waiting together with one fsync.
const QUEUE: usize = 64;
/// How often the thread looks at the clock (checkpoint interval, status).
const TICK: Duration = Duration::from_millis(200);

/// What became of one line of a posted body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineResult {
    /// Its line in the body, from 1.
    pub line: usize,
    /// Accepted, or refused and why.
    pub outcome: Outcome,
}

/// A post, handed over; the outcome of each event arrives when applied.
pub type Submitted = tokio::sync::oneshot::Receiver<Result<Vec<LineResult>, String>>;

/// Why a post was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotTaken {
    /// More posts are waiting than the pipeline is allowed to queue.
    #[error("the ingest queue is full; retry shortly")]
    Busy,
    /// The service is stopping (or its ingest failed).
    #[error("the service is stopping")]
    Stopped,
    /// Nothing in the body.
    #[error("the body holds no event")]
    Empty,
}

struct Request {
    /// (line in the body, the event on one line)
    events: Vec<(usize, Vec<u8>)>,
    /// The events decoded, in their order (filled by the decoding thread;
    /// the position is set when they are in the log).
    records: Vec<Record>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<LineResult>, String>>,
}

/// The HTTP source of `driftwatch run`.
#[allow(missing_debug_implementations)]
pub struct HttpIngest {
    tx: Mutex<Option<SyncSender<Request>>>,
    decoding: Mutex<Option<std::thread::JoinHandle<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<Result<RunSummary>>>>,
}

impl HttpIngest {
    /// Starts the ingest thread: it restores the pipeline's checkpoint,
    /// applies what the log holds past it, reports itself ready to the
    /// status, then takes posts until `stop` is cancelled (a failure
    /// cancels `stop` too, and [`finish`](Self::finish) returns it).
    pub fn start(settings: &Config, shared: &Shared, stop: &CancellationToken) -> Result<Self> {
        let lock = take_directory(&settings.data_dir.http_ingest())?;
        shared.status.register(SOURCE);
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let (decoded_tx, decoded) = std::sync::mpsc::sync_channel(QUEUE);
        let decoder = Decoder::new(settings.decoder.clone());
        let until = stop.clone();
        let decoding = std::thread::Builder::new()
            .name("http-decode".into())
            .spawn(move || decode_posts(decoder, &until, &rx, &decoded_tx))
            .map_err(|e| Error::Stopped(format!("starting the HTTP decoding thread: {e}")))?;
        let (settings, shared, stop) = (settings.clone(), shared.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("http-ingest".into())
            .spawn(move || {
                // held while the log is written
                let _lock = lock;
                let result = serve(&settings, &shared, &stop, &decoded);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "HTTP ingest stopped");
                    stop.cancel();
                }
                result
            })
            .map_err(|e| Error::Stopped(format!("starting the HTTP ingest thread: {e}")))?;
        Ok(HttpIngest {
            tx: Mutex::new(Some(tx)),
            decoding: Mutex::new(Some(decoding)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Hands a body over: JSON Lines (one event per line, blank lines
    /// skipped), or with `single` one JSON event that may span lines.
    pub fn submit(&self, body: &[u8], single: bool) -> Result<Submitted, NotTaken> {
        let events = split_events(body, single);
        if events.is_empty() {
            return Err(NotTaken::Empty);
        }
        let (reply, submitted) = tokio::sync::oneshot::channel();
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(tx) = tx.as_ref() else {
            return Err(NotTaken::Stopped);
        };
        let request = Request {
            events,
            records: Vec::new(),
            reply,
        };
        match tx.try_send(request) {
            Ok(()) => Ok(submitted),
            Err(TrySendError::Full(_)) => Err(NotTaken::Busy),
            Err(TrySendError::Disconnected(_)) => Err(NotTaken::Stopped),
        }
    }

    /// Waits for the ingest thread to end (after `stop`): what it applied,
    /// or why it failed.
    pub fn finish(&self) -> Result<RunSummary> {
        self.tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let summary = match thread {
            Some(t) => t
                .join()
                .map_err(|_| Error::Stopped("the HTTP ingest thread panicked".into()))?,
            None => Err(Error::Stopped("HTTP ingest already finished".into())),
        };
        // the queue is closed and the ingest thread gone: the decoding
        // thread has ended or is about to
        let decoding = self
            .decoding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(d) = decoding
            && d.join().is_err()
        {
            return Err(Error::Stopped("the HTTP decoding thread panicked".into()));
        }
        summary
    }
}

/// Locks `dir` for this process: two processes appending to one log would
/// number their lines over each other.
fn take_directory(dir: &Path) -> Result<File> {
    let path = dir.join("lock");
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = File::create(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Config(format!(
            "{} is in use by another driftwatch process: HTTP ingest runs on one process per \
             data directory (set api.ingest = false on the others)",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// The events of a body, each on one line, with their line numbers.
fn split_events(body: &[u8], single: bool) -> Vec<(usize, Vec<u8>)> {
    if single {
        // newlines in JSON are whitespace (inside strings they are escaped)
        let event: Vec<u8> = body
            .iter()
            .map(|b| if matches!(b, b'\n' | b'\r') { b' ' } else { *b })
            .collect();
        return if event.trim_ascii().is_empty() {
            Vec::new()
        } else {
            vec![(1, event)]
        };
    }
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line).to_vec()))
        .collect()
}

/// The decoding thread's whole life: each post's lines decoded, in the
/// order the posts came, until the posts stop (`stop`: those queued are
/// still decoded) or the ingest thread has gone.
fn decode_posts(
    mut decoder: Decoder,
    stop: &CancellationToken,
    rx: &Receiver<Request>,
    decoded: &SyncSender<Request>,
) {
    loop {
        let mut request = if stop.is_cancelled() {
            match rx.try_recv() {
                Ok(r) => r,
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(TICK) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        // numbered by the ingest thread, once in the log
        let unplaced = Position::Http { offset: 0 };
        request.records = request
            .events
            .iter()
            .map(|(_, event)| Record::from_json(&mut decoder, unplaced.clone(), event))
            .collect();
        if decoded.send(request).is_err() {
            return;
        }
    }
}

/// The ingest thread's whole life.
fn serve(
    settings: &Config,
    shared: &Shared,
    stop: &CancellationToken,
    rx: &Receiver<Request>,
) -> Result<RunSummary> {
    let root = settings.data_dir.http_ingest();
    let checkpoints: CheckpointDir<PipelineState> =
        CheckpointDir::new(root.join("checkpoint"), CHECKPOINT_FORMAT);
    let dead_letter_path = root.join("dead-letter.jsonl");
    let dead_letter = DeadLetterFile::open(&dead_letter_path)?;
    let Opened {
        mut pipeline,
        offsets,
    } = super::open_pipeline(
        settings,
        shared,
        &checkpoints,
        PARTITION,
        SOURCE,
        (
            Box::new(dead_letter),
            dead_letter_path.display().to_string(),
        ),
    )?;
    let from = offsets.get(SOURCE).map_or(0, |o| (*o).max(0) as u64);
    let mut log = Log::open(root.join("log"), from, |offset, line| {
        pipeline
            .handle_at(Position::Http { offset }, line)
            .map(|_| ())
    })?;
    if log.next > from {
        info!(
            from,
            to = log.next,
            "events acknowledged after the last checkpoint applied again from the log"
        );
    }
    let mut ingest = Ingest {
        settings,
        status: &shared.status,
        dispatcher: shared.dispatcher.as_deref(),
        checkpoints,
        since_checkpoint: log.next - from,
        last_checkpoint: Instant::now(),
    };
    ingest.report(&pipeline, true);
    let mut last_report = Instant::now();
    loop {
        let first = if stop.is_cancelled() {
            // stop taking posts; those already queued are applied: the
            // decoding thread hands them on, then ends
            match rx.recv() {
                Ok(r) => Some(r),
                Err(_) => break,
            }
        } else {
            match rx.recv_timeout(TICK) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        if let Some(first) = first {
            // posts queued meanwhile share one write and one fsync
            let mut batch = vec![first];
            while batch.len() < QUEUE
                && let Ok(r) = rx.try_recv()
            {
                batch.push(r);
            }
            ingest.apply(&mut pipeline, &mut log, batch)?;
        }
        if ingest.due() {
            ingest.checkpoint(&mut pipeline, &mut log)?;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            ingest.report(&pipeline, true);
        }
    }
    if ingest.since_checkpoint > 0 {
        ingest.checkpoint(&mut pipeline, &mut log)?;
    }
    ingest.report(&pipeline, false);
    info!("HTTP ingest stopped; state checkpointed");
    super::detach(shared, &mut pipeline);
    // windows stay open: the checkpoint holds them for the next run
    Ok(pipeline.summary().clone())
}

struct Ingest<'a> {
    settings: &'a Config,
    status: &'a Status,
    dispatcher: Option<&'a driftwatch_triggers::Dispatcher>,
    checkpoints: CheckpointDir<PipelineState>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
}

impl Ingest<'_> {
    /// Makes the posts durable, applies them and answers each.
    fn apply(&mut self, pipeline: &mut Pipeline, log: &mut Log, batch: Vec<Request>) -> Result<()> {
        let first = log.next;
        if let Err(e) = log.append(batch.iter().flat_map(|r| r.events.iter().map(|e| &e.1))) {
            for r in batch {
                let _ = r
                    .reply
                    .send(Err(format!("the ingest log could not be written: {e}")));
            }
            return Err(e);
        }
        let mut offset = first;
        let mut answers = Vec::with_capacity(batch.len());
        for request in batch {
            let mut results = Vec::with_capacity(request.events.len());
            for ((line, _), mut record) in request.events.iter().zip(request.records) {
                record.set_position(Position::Http { offset });
                let outcome = pipeline.handle(record)?;
                offset += 1;
                results.push(LineResult {
                    line: *line,
                    outcome,
                });
            }
            self.since_checkpoint += request.events.len() as u64;
            answers.push((request.reply, results));
        }
        // a poster that reads /metrics next sees its events counted
        self.report(pipeline, true);
        for (reply, results) in answers {
            // the poster may have gone: its events are in all the same
            let _ = reply.send(Ok(results));
        }
        Ok(())
    }

    fn due(&self) -> bool {
        self.since_checkpoint >= self.settings.checkpoint_events
            || (self.since_checkpoint > 0
                && self.last_checkpoint.elapsed().as_millis() as i64
                    >= self.settings.checkpoint_interval_ms)
    }

    /// Checkpoints the pipeline at the log's end, then cuts the log there.
    fn checkpoint(&mut self, pipeline: &mut Pipeline, log: &mut Log) -> Result<()> {
        pipeline.flush_dead_letters()?;
        let offsets = [(SOURCE.to_owned(), log.next as i64)].into();
        self.checkpoints
            .save(PARTITION, &offsets, pipeline.snapshot()?)?;
        pipeline.checkpoint_saved()?;
        log.cut()?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    fn report(&self, pipeline: &Pipeline, ready: bool) {
        let mut metrics = IngestMetrics {
            partitions: vec![PARTITION],
            checkpoint_age_seconds: self.last_checkpoint.elapsed().as_secs_f64(),
            deliveries: self.dispatcher.map(|d| d.stats()),
            ..IngestMetrics::from_summary(pipeline.summary())
        };
        metrics.add_pipeline(pipeline);
        self.status.set(SOURCE, SourceStatus { ready, metrics });
    }
}

/// The ingest log: segments of one event per line, named by the number of
/// their first line.
struct Log {
    dir: PathBuf,
    out: BufWriter<File>,
    /// the first line of the segment written now
    first: u64,
    /// the number the next line gets
    next: u64,
}

impl Log {
    /// Opens the log in `dir`, handing `apply` every line from number
    /// `from` on (those after the last checkpoint), and starts a new
    /// segment after them. A line cut short by a crash (no newline) was
    /// never acknowledged; it is dropped.
    fn open(
        dir: PathBuf,
        from: u64,
        mut apply: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut next = from;
        for (first, path) in segments(&dir)? {
            if first > next {
                return Err(Error::Damaged {
                    path,
                    message: format!(
                        "the ingest log misses lines {next} to {}: a segment was removed",
                        first - 1
                    ),
                });
            }
            let mut reader = BufReader::new(File::open(&path).map_err(io(&path))?);
            let mut line = Vec::new();
            let mut number = first;
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line).map_err(io(&path))?;
                if n == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                if number >= next {
                    apply(number, &line[..line.len() - 1])?;
                    next = number + 1;
                }
                number += 1;
            }
        }
        let out = Self::segment(&dir, next)?;
        Ok(Log {
            dir,
            out,
            first: next,
            next,
        })
    }

    fn segment(dir: &Path, first: u64) -> Result<BufWriter<File>> {
        let path = dir.join(format!("{first:020}.jsonl"));
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = File::create(&path).map_err(io)?;
        sync_dir(dir).map_err(io)?;
        Ok(BufWriter::new(file))
    }

    /// Appends `events` and makes them durable.
    fn append<'a>(&mut self, events: impl Iterator<Item = &'a Vec<u8>>) -> Result<()> {
        let path = self.dir.join(format!("{:020}.jsonl", self.first));
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let mut n = 0;
        for event in events {
            self.out.write_all(event).map_err(io)?;
            self.out.write_all(b"\n").map_err(io)?;
            n += 1;
        }
        self.out.flush().map_err(io)?;
        self.out.get_ref().sync_data().map_err(io)?;
        self.next += n;
        Ok(())
    }

    /// Everything so far is checkpointed: starts a new segment and deletes
    /// the others.
    fn cut(&mut self) -> Result<()> {
        if self.next == self.first {
            return Ok(());
        }
        self.out = Self::segment(&self.dir, self.next)?;
        self.first = self.next;
        for (first, path) in segments(&self.dir)? {
            if first < self.first {
                std::fs::remove_file(&path).map_err(|source| Error::Io { path, source })?;
            }
        }
        Ok(())
    }
}

/// The segments in `dir`, by their first line.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let io = |source| Error::Io {
        path: dir.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        match first {
            Some(first) => found.push((first, path)),
            None => warn!(path = %path.display(), "not an ingest log segment; left alone"),
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_splits_into_events_with_their_lines() {
        let body = b"{\"a\":1}\n\n  \r\n{\"b\":2}\r\n{\"c\":3}";
        let events = split_events(body, false);
        assert_eq!(
            events,
            vec![
                (1, b"{\"a\":1}".to_vec()),
                (4, b"{\"b\":2}".to_vec()),
                (5, b"{\"c\":3}".to_vec())
            ]
        );
        let single = split_events(b"{\n  \"a\": \"x\\ny\"\r\n}\n", true);
        assert_eq!(single, vec![(1, b"{   \"a\": \"x\\ny\"  } ".to_vec())]);
        assert!(split_events(b" \n\n", false).is_empty());
        assert!(split_events(b"\n", true).is_empty());
    }

    fn replayed(dir: &Path, from: u64) -> (Log, Vec<(u64, String)>) {
        let mut seen = Vec::new();
        let log = Log::open(dir.to_owned(), from, |n, line| {
            seen.push((n, String::from_utf8_lossy(line).into_owned()));
            Ok(())
        })
        .expect("opens");
        (log, seen)
    }

    fn lines(events: &[&str]) -> Vec<Vec<u8>> {
        events.iter().map(|e| e.as_bytes().to_vec()).collect()
    }

    #[test]
    fn the_log_replays_what_follows_the_checkpoint_and_is_cut_at_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("log");
        let (mut log, seen) = replayed(&dir, 0);
        assert!(seen.is_empty());
        log.append(lines(&["a", "b", "c"]).iter()).expect("append");
        assert_eq!(log.next, 3);
        // a crash: everything past the checkpoint (0) comes back
        drop(log);
        let (mut log, seen) = replayed(&dir, 0);
        assert_eq!(
            seen,
            vec![(0, "a".into()), (1, "b".into()), (2, "c".into())]
        );
        // checkpointed at 3: the next open replays only what follows
        log.append(lines(&["d"]).iter()).expect("append");
        log.cut().expect("cut");
        log.append(lines(&["e"]).iter()).expect("append");
        assert_eq!(segments(&dir).expect("list").len(), 1, "older segments go");
        drop(log);
        let (log, seen) = replayed(&dir, 4);
        assert_eq!(seen, vec![(4, "e".into())]);
        assert_eq!(log.next, 5);
    }

    #[test]
    fn a_line_cut_short_by_a_crash_is_dropped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("log");
        let (mut log, _) = replayed(&dir, 0);
        log.append(lines(&["a"]).iter()).expect("append");
        let path = dir.join(format!("{:020}.jsonl", 0));
        drop(log);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"half"))
            .expect("torn write");
        let (log, seen) = replayed(&dir, 0);
        assert_eq!(seen, vec![(0, "a".into())]);
        assert_eq!(log.next, 1, "the torn line gets no number");
    }

    #[test]
    fn one_process_takes_the_ingest_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let held = take_directory(tmp.path()).expect("first");
        let err = take_directory(tmp.path()).expect_err("second refused");
        assert!(err.to_string().contains("api.ingest = false"), "{err}");
        drop(held);
        take_directory(tmp.path()).expect("free again");
    }

    #[test]
    fn a_missing_segment_is_refused_by_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("log");
        let (mut log, _) = replayed(&dir, 0);
        log.append(lines(&["a", "b"]).iter()).expect("append");
        log.cut().expect("cut");
        log.append(lines(&["c"]).iter()).expect("append");
        drop(log);
        // the checkpoint says 0, but lines 0 and 1 are gone
        let err = Log::open(dir.clone(), 0, |_, _| Ok(()))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("misses lines 0 to 1"), "{err}");
    }
}
