//! Where the detectors' rows go — closed windows and the label join's
//! reports, both as [`Emitted`] tables: JSON Lines and Parquet files per
//! output table ([`TableWriters`], a replay's `--out`), and one JSON file
//! per window in the data directory ([`WindowFiles`], the service, run off
//! the event thread by [`Background`]). All are [`WindowSink`]s, as is the
//! rule runner; the binary adds one that prints.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::json::LineDelimitedWriter;
use driftwatch_detectors::output::{CHANGE_POINTS, LABEL_STATS, cell};
use driftwatch_detectors::{About, Emitted, WindowKey};
use driftwatch_ingest::format_time;
use driftwatch_ingest::names::{bounded_file_name, path_component};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::join_worker;
use crate::{DataDir, Error, Result};

/// Receives the detectors' rows: each closed window, and each report of
/// the label join (metric revisions, change points, label counts).
pub trait WindowSink {
    /// Rows of named tables, and what they are about.
    fn emit(&mut self, rows: &Emitted) -> Result<()>;
    /// Everything handed over so far is written (before a checkpoint,
    /// which must cover it).
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
    /// No more windows.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Windows and reports waiting for a [`Background`] sink's thread at most
/// (the event thread waits beyond).
const BACKGROUND_QUEUE: usize = 256;

enum Job {
    Emit(Emitted),
    Sync(SyncSender<()>),
}

/// A sink run on a thread of its own, so that its writes (files made
/// durable one by one) stay off the event thread: each window and report
/// is handed over (its batches are shared, not copied) in order, through a
/// bounded queue. [`sync`](WindowSink::sync) waits until everything handed
/// over is written — a checkpoint calls it, so it covers what it says — and
/// the sink's first error is returned by the next call.
pub struct Background {
    name: String,
    sender: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background")
            .field("name", &self.name)
            .finish()
    }
}

impl Background {
    /// Starts `sink` on a thread named `name`.
    pub fn start(name: &str, mut sink: Box<dyn WindowSink + Send>) -> Result<Self> {
        let (sender, inbox) = sync_channel::<Job>(BACKGROUND_QUEUE);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Ok(job) = inbox.recv() {
                    match job {
                        Job::Emit(rows) => sink.emit(&rows)?,
                        Job::Sync(done) => {
                            sink.sync()?;
                            let _ = done.send(());
                        }
                    }
                }
                sink.finish()
            })
            .map_err(|e| Error::Stopped(format!("starting the {name} thread: {e}")))?;
        Ok(Background {
            name: name.to_owned(),
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// The thread has stopped: its error (or why it is gone).
    fn stopped(&mut self) -> Error {
        self.sender = None;
        match join_worker(self.thread.take()) {
            Err(e) => e,
            Ok(()) => Error::Stopped(format!("the {} thread has stopped", self.name)),
        }
    }

    fn send(&mut self, job: Job) -> Result<()> {
        match &self.sender {
            Some(s) if s.send(job).is_ok() => Ok(()),
            _ => Err(self.stopped()),
        }
    }
}

impl WindowSink for Background {
    fn emit(&mut self, rows: &Emitted) -> Result<()> {
        self.send(Job::Emit(rows.clone()))
    }

    fn sync(&mut self) -> Result<()> {
        let (done, written) = sync_channel(1);
        self.send(Job::Sync(done))?;
        written.recv().map_err(|_| self.stopped())
    }

    fn finish(&mut self) -> Result<()> {
        self.sender = None;
        join_worker(self.thread.take())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // what was handed over is written, as it would have been in place
        if let Err(e) = self.finish() {
            tracing::warn!(sink = %self.name, "{e}");
        }
    }
}

struct TableFiles {
    jsonl: LineDelimitedWriter<BufWriter<File>>,
    parquet: ArrowWriter<File>,
}

/// Writes every output table as `<dir>/<table>.jsonl` and `<dir>/<table>.parquet`.
pub struct TableWriters {
    dir: PathBuf,
    tables: BTreeMap<String, TableFiles>,
}

impl std::fmt::Debug for TableWriters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriters")
            .field("dir", &self.dir)
            .field("tables", &self.tables.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn output_error(path: PathBuf) -> impl FnOnce(String) -> Error {
    move |message| Error::Output { path, message }
}

impl TableWriters {
    /// Creates (truncating) the files of `tables` in `dir`.
    pub fn create(dir: &Path, tables: &[(String, SchemaRef)]) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let create = |path: &Path| {
            File::create(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })
        };
        let mut files = BTreeMap::new();
        for (name, schema) in tables {
            let jsonl_path = dir.join(format!("{name}.jsonl"));
            let parquet_path = dir.join(format!("{name}.parquet"));
            let jsonl = create(&jsonl_path)?;
            let parquet =
                ArrowWriter::try_new(create(&parquet_path)?, schema.clone(), Some(props.clone()))
                    .map_err(|e| output_error(parquet_path)(e.to_string()))?;
            files.insert(
                name.clone(),
                TableFiles {
                    jsonl: LineDelimitedWriter::new(BufWriter::new(jsonl)),
                    parquet,
                },
            );
        }
        Ok(TableWriters {
            dir: dir.to_owned(),
            tables: files,
        })
    }

    fn write(&mut self, name: &str, batch: &RecordBatch) -> Result<()> {
        let path = |ext: &str| self.dir.join(format!("{name}.{ext}"));
        let Some(files) = self.tables.get_mut(name) else {
            return Err(Error::Stopped(format!(
                "internal: no output files for table {name}"
            )));
        };
        files
            .jsonl
            .write(&without_binary(batch)?)
            .map_err(|e| output_error(path("jsonl"))(e.to_string()))?;
        files
            .parquet
            .write(batch)
            .map_err(|e| output_error(path("parquet"))(e.to_string()))
    }
}

impl WindowSink for TableWriters {
    fn emit(&mut self, rows: &Emitted) -> Result<()> {
        for (name, batch) in &rows.tables {
            self.write(name, batch)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        for (name, files) in std::mem::take(&mut self.tables) {
            let TableFiles { mut jsonl, parquet } = files;
            let jsonl_path = self.dir.join(format!("{name}.jsonl"));
            jsonl
                .finish()
                .map_err(|e| output_error(jsonl_path.clone())(e.to_string()))?;
            jsonl.into_inner().flush().map_err(|source| Error::Io {
                path: jsonl_path,
                source,
            })?;
            parquet.close().map_err(|e| {
                output_error(self.dir.join(format!("{name}.parquet")))(e.to_string())
            })?;
        }
        Ok(())
    }
}

/// One JSON file per closed window, `DATA_DIR/windows/<model>/<start>_<end>[_<version>].json`,
/// and per prediction window its latest metrics revision,
/// `DATA_DIR/metrics/<model>/<start>_<end>[_<version>].json`; change points go
/// to `DATA_DIR/change_points/<model>/…json` and label counts to
/// `DATA_DIR/label_stats/<model>/<start>_<end>.json`. Each file is written
/// atomically (temporary file, fsync, rename). Writing a window again — the
/// service re-reading events after a restart — replaces its file with the
/// same content, so `windows/` holds every window exactly once.
///
/// Metric revisions, label counts and change points depend on the order in
/// which predictions and labels arrive, and two topics interleave
/// differently on every run: after a restart the intermediate revisions may
/// differ from those of an uninterrupted run, while each window's final
/// metrics (`"final": true`) are the same (up to floating-point summation
/// order) and the counters in the state count every label once.
///
/// File names are bounded ([`bounded_file_name`]), and a file that cannot
/// be written is logged with its model and path and counted
/// ([`failed`](Self::failed)): these files are a view of the state, which
/// the checkpoint and the history hold, so one model's file never stops the
/// pipeline for the others.
#[derive(Debug)]
pub struct WindowFiles {
    data: DataDir,
    failed: u64,
}

impl WindowFiles {
    /// Result files in the data directory `data`.
    pub fn new(data: DataDir) -> Self {
        WindowFiles { data, failed: 0 }
    }

    /// How many files could not be written.
    pub fn failed(&self) -> u64 {
        self.failed
    }

    fn path(&self, table: &str, model: &str, name: String) -> PathBuf {
        let mut name = bounded_file_name(name);
        name.push_str(".json");
        self.data.window_results(table, model).join(name)
    }

    /// Writes one file; an error is logged and counted, not returned.
    fn put(&mut self, model: &str, path: &Path, bytes: Result<Vec<u8>>) {
        if let Err(e) = bytes.and_then(|b| crate::checkpoint::write_atomically(path, &b)) {
            self.failed += 1;
            tracing::warn!(model, path = %path.display(), error = %e, "result file not written");
        }
    }
}

fn window_name(k: &WindowKey) -> String {
    let mut name = format!("{}_{}", k.start, k.end);
    if let Some(v) = &k.model_version {
        name.push('_');
        name.push_str(&path_component(v));
    }
    name
}

/// The batch without its binary columns (sketches), which JSON output
/// leaves to the Parquet files and the history.
fn without_binary(batch: &RecordBatch) -> Result<RecordBatch> {
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| batch.schema().field(i).data_type() != &arrow::datatypes::DataType::Binary)
        .collect();
    batch.project(&keep).map_err(|e| Error::Encode {
        what: "a window's rows",
        message: e.to_string(),
    })
}

/// The rows of a batch as JSON objects (binary columns left out).
fn rows_json(batch: &RecordBatch) -> Result<serde_json::Value> {
    let encode = |e: arrow::error::ArrowError| Error::Encode {
        what: "a window's rows as JSON",
        message: e.to_string(),
    };
    let mut rows = arrow::json::ArrayWriter::new(Vec::new());
    rows.write(&without_binary(batch)?).map_err(encode)?;
    rows.finish().map_err(encode)?;
    Ok(serde_json::from_slice(&rows.into_inner()).unwrap_or(serde_json::Value::Array(Vec::new())))
}

fn json_bytes(value: &serde_json::Value) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Encode {
        what: "a window file",
        message: e.to_string(),
    })
}

/// Time column `column` of `batch` at `row`, milliseconds, for a file name.
fn time_at(batch: &RecordBatch, column: &str, row: usize) -> Result<i64> {
    cell::time(batch, column, row).ok_or_else(|| Error::Encode {
        what: "a result file's name",
        message: format!("no time in column {column}"),
    })
}

impl WindowFiles {
    fn write(&mut self, table: &str, model: &str, name: String, rows: &RecordBatch) {
        let path = self.path(table, model, name);
        self.put(model, &path, rows_json(rows).and_then(|j| json_bytes(&j)));
    }

    /// One file per row of `batch`, named by `name` from the row.
    fn each_row(
        &mut self,
        table: &str,
        batch: &RecordBatch,
        name: impl Fn(&RecordBatch, usize) -> Result<String>,
    ) -> Result<()> {
        for row in 0..batch.num_rows() {
            let model = cell::text(batch, "model_id", row).unwrap_or_default();
            self.write(table, model, name(batch, row)?, &batch.slice(row, 1));
        }
        Ok(())
    }
}

impl WindowSink for WindowFiles {
    fn emit(&mut self, rows: &Emitted) -> Result<()> {
        if let About::Closed { key: k, events } = &rows.about {
            let mut tables = serde_json::Map::new();
            for (name, batch) in &rows.tables {
                tables.insert(name.clone(), rows_json(batch)?);
            }
            let doc = serde_json::json!({
                "model_id": k.model_id.as_ref(),
                "model_version": k.model_version.as_deref(),
                "window_start": format_time(k.start),
                "window_end": format_time(k.end),
                "events": events,
                "tables": tables,
            });
            let path = self.path("windows", &k.model_id, window_name(k));
            self.put(&k.model_id, &path, json_bytes(&doc));
            return Ok(());
        }
        for (r, metrics) in rows.revisions() {
            self.write("metrics", &r.key.model_id, window_name(&r.key), &metrics);
        }
        if let Some(points) = rows.table(CHANGE_POINTS) {
            self.each_row(CHANGE_POINTS, points, |b, row| {
                let mut name = format!(
                    "{}_{}_{}_{}",
                    time_at(b, "event_time", row)?,
                    cell::text(b, "metric", row).unwrap_or_default(),
                    cell::text(b, "detector", row).unwrap_or_default(),
                    time_at(b, "detected_at", row)?
                );
                if let Some(v) = cell::text(b, "model_version", row) {
                    name.push('_');
                    name.push_str(&path_component(v));
                }
                Ok(name)
            })?;
        }
        if let Some(counts) = rows.table(LABEL_STATS) {
            self.each_row(LABEL_STATS, counts, |b, row| {
                Ok(format!(
                    "{}_{}",
                    time_at(b, "window_start", row)?,
                    time_at(b, "window_end", row)?
                ))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use driftwatch_detectors::performance::PerformanceOutput;

    use super::*;

    /// Notes what it is given, slowly (a durable write), and fails at the
    /// window that ends at `fail_at`.
    struct Recorder {
        seen: Arc<Mutex<Vec<String>>>,
        fail_at: Option<i64>,
    }

    impl WindowSink for Recorder {
        fn emit(&mut self, rows: &Emitted) -> Result<()> {
            let About::Closed { key, .. } = &rows.about else {
                let n = rows.table(LABEL_STATS).map_or(0, RecordBatch::num_rows);
                self.seen.lock().expect("lock").push(format!("labels {n}"));
                return Ok(());
            };
            std::thread::sleep(std::time::Duration::from_millis(2));
            if self.fail_at == Some(key.end) {
                return Err(Error::Stopped(format!("disk full at {}", key.end)));
            }
            self.seen
                .lock()
                .expect("lock")
                .push(format!("window {}", key.end));
            Ok(())
        }
        fn finish(&mut self) -> Result<()> {
            self.seen.lock().expect("lock").push("finished".into());
            Ok(())
        }
    }

    fn closed(end: i64) -> Emitted {
        Emitted {
            about: About::Closed {
                key: WindowKey {
                    model_id: "churn".into(),
                    model_version: None,
                    start: end - 10,
                    end,
                },
                events: 1,
            },
            tables: Vec::new(),
        }
    }

    #[test]
    fn a_background_sink_writes_in_order_and_sync_waits_for_everything_handed_over() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            seen: Arc::clone(&seen),
            fail_at: None,
        };
        let mut sink = Background::start("test-files", Box::new(recorder)).expect("thread");
        let mut expected = Vec::new();
        for end in 1..=20 {
            sink.emit(&closed(end * 10)).expect("handed over");
            expected.push(format!("window {}", end * 10));
        }
        let labels = PerformanceOutput {
            label_stats: vec![("churn".into(), 0, 10, Default::default(), 3)],
            ..PerformanceOutput::default()
        };
        sink.emit(&Emitted::try_from(labels).expect("rows"))
            .expect("handed over");
        expected.push("labels 1".into());
        sink.sync().expect("written");
        // sync answered only once all of it was written
        assert_eq!(*seen.lock().expect("lock"), expected);
        sink.emit(&closed(500)).expect("handed over");
        sink.finish().expect("finished");
        expected.extend(["window 500".into(), "finished".into()]);
        assert_eq!(*seen.lock().expect("lock"), expected);
    }

    #[test]
    fn a_background_sinks_failure_is_returned_by_the_next_call() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            seen: Arc::clone(&seen),
            fail_at: Some(30),
        };
        let mut sink = Background::start("test-files", Box::new(recorder)).expect("thread");
        let mut failed = None;
        for end in 1..=1000 {
            if let Err(e) = sink.emit(&closed(end * 10)) {
                failed = Some(e);
                break;
            }
        }
        let failed = match failed {
            Some(e) => e,
            None => sink.sync().expect_err("the failure at 30"),
        };
        assert!(failed.to_string().contains("disk full at 30"), "{failed}");
        assert_eq!(*seen.lock().expect("lock"), ["window 10", "window 20"]);
        // and it stays stopped
        assert!(sink.sync().is_err());
    }

    #[test]
    fn window_files_name_each_change_point_and_label_count_by_its_row() {
        use driftwatch_detectors::performance::ChangePoint;
        let dir = tempfile::tempdir().expect("dir");
        let mut files = WindowFiles::new(DataDir::new(dir.path()));
        let point = |version: Option<&str>| ChangePoint {
            model_id: "churn".into(),
            model_version: version.map(Into::into),
            metric: "error_rate",
            detector: "adwin",
            event_time: 7,
            detected_at: 9,
            statistic: 0.25,
            observations: 40,
        };
        let report = PerformanceOutput {
            change_points: vec![point(Some("v/1")), point(None)],
            label_stats: vec![("fraud".into(), 0, 10, Default::default(), 3)],
            ..PerformanceOutput::default()
        };
        files
            .emit(&Emitted::try_from(report).expect("rows"))
            .expect("written");
        let read = |path: &str| -> serde_json::Value {
            let text = std::fs::read_to_string(dir.path().join(path)).expect(path);
            serde_json::from_str(&text).expect("json")
        };
        let versioned = read(&format!(
            "change_points/churn/7_error_rate_adwin_9_{}.json",
            path_component("v/1")
        ));
        assert_eq!(versioned[0]["model_version"], "v/1");
        assert_eq!(versioned.as_array().map(Vec::len), Some(1));
        let plain = read("change_points/churn/7_error_rate_adwin_9.json");
        assert_eq!(plain[0]["statistic"], 0.25);
        let counts = read("label_stats/fraud/0_10.json");
        assert_eq!(counts[0]["waiting"], 3);
    }

    /// Regression (issue 41, S1): a version of 64 `/` named a change point's
    /// file past 249 bytes, its temporary past 255; the write failed and
    /// stopped the service, and every restart failed the same way.
    #[test]
    fn window_files_of_longest_ids_are_written_and_one_failure_stops_no_other_model() {
        use driftwatch_detectors::performance::ChangePoint;
        let dir = tempfile::tempdir().expect("dir");
        let mut files = WindowFiles::new(DataDir::new(dir.path()));
        let point = |model: &str, version: &str| ChangePoint {
            model_id: model.into(),
            model_version: Some(version.into()),
            metric: "error_rate",
            detector: "page_hinkley",
            event_time: 1_764_547_200_000,
            detected_at: 1_764_550_800_000,
            statistic: 0.25,
            observations: 40,
        };
        // a file where the model `blocked`'s directory would go
        std::fs::create_dir_all(dir.path().join("change_points")).expect("dir");
        std::fs::write(dir.path().join("change_points/blocked"), b"").expect("file");
        let slashes = "/".repeat(64);
        let accents = "\u{e9}".repeat(32);
        let report = PerformanceOutput {
            change_points: vec![
                point("m", &slashes),
                point("blocked", "v1"),
                point("n", &accents),
            ],
            ..PerformanceOutput::default()
        };
        files
            .emit(&Emitted::try_from(report).expect("rows"))
            .expect("one model's failure is not the pipeline's");
        assert_eq!(files.failed(), 1);
        for model in ["m", "n"] {
            let written: Vec<_> = std::fs::read_dir(dir.path().join("change_points").join(model))
                .expect(model)
                .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
                .collect();
            assert_eq!(written.len(), 1, "{written:?}");
            assert!(written[0].len() <= driftwatch_ingest::names::MAX_FILE_NAME_BYTES + 5);
            assert!(written[0].ends_with(".json"), "{written:?}");
        }
    }

    #[test]
    fn window_files_of_path_like_models_stay_in_their_own_directory() {
        let files = WindowFiles::new(DataDir::new("/data"));
        let table = Path::new("/data/window_summary");
        let mut dirs = Vec::new();
        for model in ["..", ".", "a/b", "a_b", "a%2Fb"] {
            let path = files.path("window_summary", model, "1_2".into());
            let dir = path.parent().expect("a model directory");
            assert_eq!(dir.parent(), Some(table), "{model}: {}", path.display());
            let name = dir.file_name().and_then(|n| n.to_str()).expect("utf-8");
            assert!(name != "." && name != "..", "{model}");
            dirs.push(name.to_owned());
        }
        dirs.sort();
        dirs.dedup();
        assert_eq!(dirs.len(), 5, "{dirs:?}");
    }
}
