//! The history: every row of every table once its window has closed, as
//! Parquet under `DATA_DIR/history`, partitioned by date:
//!
//! ```text
//! history/<table>/date=<YYYY-MM-DD>/<writer>-<seq>.parquet
//! ```
//!
//! A writer (the replay, or one Kafka partition of the service) appends one
//! file per table and date at each flush, numbered by a flush sequence. A
//! file holds every model's rows, sorted by `model_id`, so the number of
//! files does not grow with the number of models, and a scan for one model
//! takes its rows as a slice found by binary search. (Histories written
//! before this layout, under `<table>/model_id=<model>/date=…/`, are still
//! read.) A checkpoint records the sequence it has flushed; a restart
//! removes the writer's files numbered after it, so rows that the restarted
//! service will produce again are not in the history twice.
//!
//! Flushes that a checkpoint has recorded are compacted: a directory's files
//! become one `<writer>-<first>-<last>.parquet`, so a query opens about one
//! file per table and day however often the service checkpoints.
//!
//! Writing and compacting can happen away from queries: [`History::begin_write`]
//! and [`History::begin_compact`] make jobs that any thread runs, writing
//! files under temporary names no scan lists, and [`History::publish`] puts
//! them in place (and removes what a compaction merged) when the caller
//! chooses — between two queries, with the flushed live rows dropped at the
//! same moment ([`crate::Tables::publish_flush`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::cache::FileCache;
use crate::error::{Error, Result, data, io};
use crate::tables::TableDef;

/// Appends rows to the history as one writer, and compacts what it wrote.
#[derive(Debug)]
pub struct History {
    dir: PathBuf,
    writer: String,
    /// The last flush published.
    seq: u64,
    /// The last flush handed to a [`WriteJob`] (published or not).
    reserved: u64,
    /// This writer's files: for each directory, the flush ranges
    /// (`first` → `last`) of its files.
    files: BTreeMap<PathBuf, BTreeMap<u64, u64>>,
    /// Decoded files: a merge of files that were there is kept there.
    cache: Arc<FileCache>,
    /// Directories of tables of raw rows (see [`TableDef::raw`]) written so far.
    raw: BTreeSet<PathBuf>,
}

/// What one [`History::compact`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Directories compacted.
    pub directories: usize,
    /// Files merged (and removed).
    pub files: usize,
}

/// A directory holding this many of a writer's flushes is compacted even
/// while its date is the newest one the writer has for the model.
pub const COMPACT_FILES: usize = 8;

/// Partition values are path components made the way every file name
/// derived from an id is (escaped, never `.` or `..`).
pub(crate) use driftwatch_ingest::names::{
    from_path_component as decode_partition, path_component as encode_partition,
};

const DAY_MS: i64 = 86_400_000;

pub(crate) fn date_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "invalid".to_owned())
}

/// The flush range in a history file name of `writer`, if it is one:
/// `<writer>-<seq>.parquet` holds one flush, `<writer>-<first>-<last>.parquet`
/// the compacted flushes `first..=last` (sequences written with 12 digits).
fn range_of(name: &str, writer: &str) -> Option<(u64, u64)> {
    let rest = name
        .strip_prefix(writer)?
        .strip_prefix('-')?
        .strip_suffix(".parquet")?;
    let number = |s: &str| {
        (s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match rest.split_once('-') {
        None => number(rest).map(|n| (n, n)),
        Some((first, last)) => {
            let (first, last) = (number(first)?, number(last)?);
            (first <= last).then_some((first, last))
        }
    }
}

fn file_name(writer: &str, first: u64, last: u64) -> String {
    if first == last {
        format!("{writer}-{first:012}.parquet")
    } else {
        format!("{writer}-{first:012}-{last:012}.parquet")
    }
}

/// Every file below `dir` (recursively).
fn files_below(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("listing {}", dir.display()))(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
        let path = entry.path();
        if entry
            .file_type()
            .map_err(io(format!("reading {}", path.display())))?
            .is_dir()
        {
            files_below(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(io(format!("removing {}", path.display())))
}

impl History {
    /// The history under `dir` (created if missing), written as `writer`
    /// (letters, digits, `-`, `_`); continues after the writer's last flush.
    /// Files left behind by a compaction that stopped half-way, and the
    /// temporaries of writes a crash cut off, are removed.
    pub fn open(dir: &Path, writer: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let writer = encode_partition(writer);
        let mut paths = Vec::new();
        files_below(dir, &mut paths)?;
        let mut files: BTreeMap<PathBuf, BTreeMap<u64, u64>> = BTreeMap::new();
        for path in paths {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            let Some(name) = name.to_str() else {
                continue;
            };
            // a write cut off by a crash
            if driftwatch_ingest::durable::temporary_target(name)
                .is_some_and(|target| range_of(target, &writer).is_some())
            {
                remove(&path)?;
                continue;
            }
            if let Some((first, last)) = range_of(name, &writer) {
                files
                    .entry(parent.to_owned())
                    .or_default()
                    .insert(first, last);
            }
        }
        // a compacted file is renamed into place before its inputs are
        // removed: inputs it covers are leftovers of an interrupted compaction
        for (dir, ranges) in &mut files {
            let covered: Vec<u64> = ranges
                .iter()
                .filter(|&(&f, &l)| {
                    ranges
                        .iter()
                        .any(|(&a, &b)| (a, b) != (f, l) && a <= f && l <= b)
                })
                .map(|(&f, _)| f)
                .collect();
            for first in covered {
                let last = ranges.remove(&first).unwrap_or(first);
                remove(&dir.join(file_name(&writer, first, last)))?;
            }
        }
        let seq = files
            .values()
            .flat_map(|r| r.values())
            .copied()
            .max()
            .unwrap_or(0);
        Ok(History {
            dir: dir.to_owned(),
            writer,
            seq,
            reserved: seq,
            files,
            cache: FileCache::shared(),
            raw: BTreeSet::new(),
        })
    }

    /// The history's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last flush written.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// This writer's files (for tests and diagnostics).
    pub fn file_count(&self) -> usize {
        self.files.values().map(BTreeMap::len).sum()
    }

    /// Removes this writer's files written after flush `seq` (a checkpoint
    /// that recorded `seq` is being restored) and continues from there.
    /// Returns how many files were removed. Fails, removing nothing, when a
    /// compacted file holds flushes on both sides of `seq`: compaction only
    /// merges checkpointed flushes, so that checkpoint is older than one
    /// already restored or written.
    pub fn rewind(&mut self, seq: u64) -> Result<usize> {
        if let Some((dir, first, last)) = self.files.iter().find_map(|(dir, r)| {
            r.iter()
                .find(|&(&f, &l)| f <= seq && seq < l)
                .map(|(&f, &l)| (dir, f, l))
        }) {
            return Err(Error::Data {
                context: format!("rewinding the history of {} to flush {seq}", self.writer),
                message: format!(
                    "{} holds flushes {first} to {last}, compacted after a later checkpoint",
                    dir.display()
                ),
            });
        }
        let mut removed = 0;
        for (dir, ranges) in &mut self.files {
            let after: Vec<(u64, u64)> = ranges.range(seq + 1..).map(|(&f, &l)| (f, l)).collect();
            for (first, last) in after {
                remove(&dir.join(file_name(&self.writer, first, last)))?;
                ranges.remove(&first);
                removed += 1;
            }
        }
        self.files.retain(|_, r| !r.is_empty());
        self.seq = seq;
        self.reserved = seq;
        Ok(removed)
    }

    /// Writes one flush: `rows` of each table, split by date, sorted by model.
    /// Returns the flush's sequence number (unchanged when there was nothing
    /// to write). [`begin_write`](Self::begin_write), [`WriteJob::run`] and
    /// [`publish`](Self::publish) in one.
    pub fn write(&mut self, rows: &[(&TableDef, Vec<RecordBatch>)]) -> Result<u64> {
        if let Some(job) = self.begin_write(rows) {
            self.publish(job.run()?)?;
        }
        Ok(self.seq)
    }

    /// The next flush of `rows`, to be written by [`WriteJob::run`] on any
    /// thread and put in place by [`publish`](Self::publish); `None` when
    /// there is nothing to write. Until it is published, no query sees its
    /// files, and each further job gets the next sequence.
    pub fn begin_write(&mut self, rows: &[(&TableDef, Vec<RecordBatch>)]) -> Option<WriteJob> {
        if rows
            .iter()
            .all(|(_, b)| b.iter().all(|b| b.num_rows() == 0))
        {
            return None;
        }
        for (def, _) in rows {
            if def.raw {
                self.raw.insert(self.dir.join(&def.name));
            }
        }
        self.reserved = self.reserved.max(self.seq) + 1;
        Some(WriteJob {
            dir: self.dir.clone(),
            writer: self.writer.clone(),
            seq: self.reserved,
            rows: rows
                .iter()
                .map(|(def, batches)| ((*def).clone(), batches.clone()))
                .collect(),
        })
    }

    /// Puts the files of a finished job in place (renamed from their
    /// temporaries), keeps a merge's rows in the cache when its inputs were
    /// there, and removes the files a compaction merged. Returns what a
    /// compaction did.
    pub fn publish(&mut self, staged: Staged) -> Result<Compaction> {
        let mut done = Compaction::default();
        for out in staged.outputs {
            let path = out.file.target().to_owned();
            out.file
                .commit()
                .map_err(io(format!("writing {}", path.display())))?;
            if let Some(rows) = out.cached {
                self.cache.insert(&path, rows)?;
            }
            for &(f, l) in &out.inputs {
                remove(&out.dir.join(file_name(&self.writer, f, l)))?;
            }
            let ranges = self.files.entry(out.dir).or_default();
            for (f, _) in &out.inputs {
                ranges.remove(f);
            }
            ranges.insert(out.range.0, out.range.1);
            if !out.inputs.is_empty() {
                done.directories += 1;
                done.files += out.inputs.len();
            }
        }
        if let Some(seq) = staged.seq {
            self.seq = self.seq.max(seq);
        }
        Ok(done)
    }

    /// Removes this writer's files of `table` whose day ended before
    /// `before` (epoch ms): the retention of raw events. Returns how many
    /// files went.
    pub fn expire(&mut self, table: &str, before: i64) -> Result<usize> {
        let date = date_of(before);
        let date = date.as_str();
        let table_dir = self.dir.join(table);
        let old: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|d| {
                // a day of the table (or, in the older layout, of one of its models)
                (d.parent() == Some(table_dir.as_path())
                    || d.parent().and_then(Path::parent) == Some(table_dir.as_path()))
                    && d.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_prefix("date="))
                        .is_some_and(|d| d < date)
            })
            .cloned()
            .collect();
        let mut removed = 0;
        for dir in old {
            for (first, last) in self.files.remove(&dir).unwrap_or_default() {
                remove(&dir.join(file_name(&self.writer, first, last)))?;
                removed += 1;
            }
            // the day's directory goes too once no writer has files in it
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(removed)
    }

    /// Merges this writer's files of flushes up to `upto` (flushes a
    /// checkpoint has recorded, so no restart rewinds into them) into one
    /// file per directory: a directory of an earlier date than the newest the
    /// writer has for that table as soon as it holds two files, the
    /// newest one once it holds [`COMPACT_FILES`]. Queries then open a file or
    /// a few per model and day, however often the history is flushed. Days of
    /// raw rows ([`TableDef::raw`]) wait for [`COMPACT_FILES`] files
    /// whatever their date: most are expired before anyone reads them.
    ///
    /// The merged file is renamed into place before its inputs are removed; a
    /// query running meanwhile may see those rows twice, a restart does not
    /// (see [`History::open`]).
    pub fn compact(&mut self, upto: u64) -> Result<Compaction> {
        match self.begin_compact(upto) {
            Some(job) => self.publish(job.run()?),
            None => Ok(Compaction::default()),
        }
    }

    /// The merges [`compact`](Self::compact) would do, to be written by
    /// [`CompactJob::run`] on any thread and put in place by
    /// [`publish`](Self::publish) (which removes the inputs then); `None`
    /// when there is nothing to merge. Until then the inputs must stay: no
    /// [`expire`](Self::expire) or [`rewind`](Self::rewind) in between.
    pub fn begin_compact(&self, upto: u64) -> Option<CompactJob> {
        let newest: BTreeMap<&Path, &PathBuf> = self
            .files
            .keys()
            .filter_map(|d| Some((d.parent()?, d)))
            .collect();
        let mut work: Vec<(PathBuf, Vec<(u64, u64)>)> = Vec::new();
        for (dir, ranges) in &self.files {
            let inputs: Vec<(u64, u64)> = ranges
                .iter()
                .filter(|&(_, &l)| l <= upto)
                .map(|(&f, &l)| (f, l))
                .collect();
            let latest = dir.parent().and_then(|p| newest.get(p)) == Some(&dir);
            let raw = self.raw.iter().any(|table| dir.starts_with(table));
            let limit = if latest || raw { COMPACT_FILES } else { 2 };
            if inputs.len() >= limit {
                work.push((dir.clone(), inputs));
            }
        }
        (!work.is_empty()).then(|| CompactJob {
            writer: self.writer.clone(),
            work,
            cache: Arc::clone(&self.cache),
        })
    }
}

/// One flush of rows for the history, prepared by [`History::begin_write`].
#[derive(Debug)]
pub struct WriteJob {
    dir: PathBuf,
    writer: String,
    seq: u64,
    rows: Vec<(TableDef, Vec<RecordBatch>)>,
}

/// Merges of history files, prepared by [`History::begin_compact`].
#[derive(Debug)]
pub struct CompactJob {
    writer: String,
    /// Directories and the ranges of their files to merge.
    work: Vec<(PathBuf, Vec<(u64, u64)>)>,
    cache: Arc<FileCache>,
}

/// Files a job wrote under temporary names, for [`History::publish`]; dropped
/// unpublished, they are removed.
#[derive(Debug)]
pub struct Staged {
    /// The flush a [`WriteJob`] wrote.
    seq: Option<u64>,
    outputs: Vec<Output>,
}

/// One file of a [`Staged`] job.
#[derive(Debug)]
struct Output {
    dir: PathBuf,
    file: driftwatch_ingest::durable::StagedFile,
    /// The flushes the file holds.
    range: (u64, u64),
    /// The writer's files it replaces (a merge).
    inputs: Vec<(u64, u64)>,
    /// Its rows, for the cache of decoded files (a merge of files that
    /// were there).
    cached: Option<Vec<RecordBatch>>,
}

impl WriteJob {
    /// Writes the rows, a file per table and date, sorted by model.
    pub fn run(self) -> Result<Staged> {
        let mut outputs = Vec::new();
        for (def, batches) in &self.rows {
            let mut groups: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
            for batch in batches {
                split(def, batch, &mut groups)?;
            }
            for (date, rows) in groups {
                let dir = self.dir.join(&def.name).join(format!("date={date}"));
                // stored events: a schema per model, one for the file
                let (schema, rows) = unified(&rows)?;
                let rows = sorted_by_model(&schema, def.model_column, &rows)?;
                let name = file_name(&self.writer, self.seq, self.seq);
                let file = stage_file(&dir, &name, &schema, |w| {
                    rows.iter().try_for_each(|b| w.write(b).map_err(Into::into))
                })?;
                outputs.push(Output {
                    dir,
                    file,
                    range: (self.seq, self.seq),
                    inputs: Vec::new(),
                    // not kept in the cache: most flushed rows are never
                    // read again (a replay without rules reads none), and
                    // kept they filled the cache's whole budget; a query
                    // that reads the file puts it there
                    cached: None,
                });
            }
        }
        Ok(Staged {
            seq: Some(self.seq),
            outputs,
        })
    }
}

impl CompactJob {
    /// Writes each directory's merged file. The inputs are read a batch at a
    /// time and merged as they are written (each is sorted by model), so a
    /// compaction holds a few batches of each input, not the directory's
    /// rows.
    pub fn run(self) -> Result<Staged> {
        let mut outputs = Vec::new();
        for (dir, inputs) in self.work {
            let paths: Vec<PathBuf> = inputs
                .iter()
                .map(|&(f, l)| dir.join(file_name(&self.writer, f, l)))
                .collect();
            // the inputs' rows in memory (as queries see them), when every
            // one of them is: the merged file's rows, in its order
            let cached: Option<Vec<RecordBatch>> = paths
                .iter()
                .map(|p| self.cache.peek(p))
                .collect::<Option<Vec<_>>>()
                .map(|all| all.iter().flat_map(|b| b.iter().cloned()).collect());
            let cached = match cached {
                Some(rows) if !rows.is_empty() => {
                    let (row_schema, rows) = unified(&rows)?;
                    match row_schema.index_of("model_id") {
                        Ok(column) => Some(sorted_by_model(&row_schema, column, &rows)?),
                        Err(_) => None,
                    }
                }
                _ => None,
            };
            let first = inputs[0].0;
            let last = inputs.iter().map(|&(_, l)| l).max().unwrap_or(first);
            let mut merge = Merge::open(&paths)?;
            let schema = Arc::clone(&merge.schema);
            let file = stage_file(&dir, &file_name(&self.writer, first, last), &schema, |w| {
                merge.write_to(w)
            })?;
            outputs.push(Output {
                dir,
                file,
                range: (first, last),
                inputs,
                cached,
            });
        }
        Ok(Staged { seq: None, outputs })
    }
}

/// Rows read a batch at a time from history files, each sorted by model,
/// and handed on in one order: by model, a model's rows file after file in
/// the order given (what a stable sort of the files' rows, one file after
/// the other, gives); without a model column, file after file.
struct Merge {
    /// The union of the files' schemas ([`union_schema`]).
    schema: SchemaRef,
    /// The model column in `schema`.
    model: Option<usize>,
    inputs: Vec<MergeInput>,
}

/// One file of a [`Merge`].
struct MergeInput {
    path: PathBuf,
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    /// The batch being taken, in the merge's schema, and the next row of it.
    batch: Option<(RecordBatch, usize)>,
    /// The model of the rows last taken, to check the file's order.
    last: Option<String>,
}

impl Merge {
    fn open(paths: &[PathBuf]) -> Result<Merge> {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let mut builders = Vec::with_capacity(paths.len());
        for path in paths {
            let context = || format!("compacting {}", path.display());
            let file = std::fs::File::open(path).map_err(io(context()))?;
            builders.push(ParquetRecordBatchReaderBuilder::try_new(file).map_err(data(context()))?);
        }
        let schemas: Vec<SchemaRef> = builders.iter().map(|b| Arc::clone(b.schema())).collect();
        let schema = union_schema(&schemas).map_err(|e| Error::Data {
            context: format!(
                "compacting {}",
                paths
                    .first()
                    .map_or(String::new(), |p| p.display().to_string())
            ),
            message: format!("{e}; the directory cannot be compacted"),
        })?;
        let inputs = builders
            .into_iter()
            .zip(paths)
            .map(|(b, path)| {
                Ok(MergeInput {
                    path: path.clone(),
                    reader: b
                        .build()
                        .map_err(data(format!("compacting {}", path.display())))?,
                    batch: None,
                    last: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Merge {
            model: schema.index_of("model_id").ok(),
            schema,
            inputs,
        })
    }

    /// Writes every row to `writer`, in the merge's order.
    fn write_to(&mut self, writer: &mut ArrowWriter<&mut std::fs::File>) -> std::io::Result<()> {
        let invalid =
            |e: Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
        while let Some(rows) = self.next_rows().map_err(invalid)? {
            writer.write(&rows)?;
        }
        Ok(())
    }

    /// The next rows of the merge: a run of one model's rows from one
    /// batch of one file; `None` at the end.
    fn next_rows(&mut self) -> Result<Option<RecordBatch>> {
        for input in &mut self.inputs {
            input.fill(&self.schema)?;
        }
        let Some(model) = self.model else {
            // file after file, a batch at a time
            let Some(input) = self.inputs.iter_mut().find(|i| i.batch.is_some()) else {
                return Ok(None);
            };
            return Ok(input.batch.take().map(|(b, _)| b));
        };
        // the smallest model; the first file among those holding it
        let mut next: Option<(usize, &str)> = None;
        for (i, input) in self.inputs.iter().enumerate() {
            if let Some((batch, row)) = &input.batch {
                let id = batch.column(model).as_string::<i32>().value(*row);
                if next.is_none_or(|(_, n)| id < n) {
                    next = Some((i, id));
                }
            }
        }
        let Some((i, _)) = next else {
            return Ok(None);
        };
        let input = &mut self.inputs[i];
        let Some((batch, row)) = input.batch.take() else {
            return Ok(None);
        };
        let ids = batch.column(model).as_string::<i32>();
        let id = ids.value(row);
        if input.last.as_deref().is_some_and(|last| id < last) {
            return Err(input.unsorted());
        }
        let mut end = row + 1;
        while end < ids.len() && ids.value(end) == id {
            end += 1;
        }
        if end < ids.len() && ids.value(end) < id {
            return Err(input.unsorted());
        }
        input.last = Some(id.to_owned());
        let rows = batch.slice(row, end - row);
        if end < batch.num_rows() {
            input.batch = Some((batch, end));
        }
        Ok(Some(rows))
    }
}

impl MergeInput {
    /// Reads the file's next batch with rows, when the last one is taken.
    fn fill(&mut self, schema: &SchemaRef) -> Result<()> {
        while self.batch.is_none() {
            let Some(read) = self.reader.next() else {
                return Ok(());
            };
            let read = read.map_err(data(format!("compacting {}", self.path.display())))?;
            if read.num_rows() > 0 {
                self.batch = Some((conform(&read, schema)?, 0));
            }
        }
        Ok(())
    }

    fn unsorted(&self) -> Error {
        Error::Data {
            context: format!("compacting {}", self.path.display()),
            message: "its rows are not sorted by model_id; the directory cannot be compacted"
                .into(),
        }
    }
}

/// `batches` in one schema: the union of theirs ([`union_schema`]), each
/// batch [`conform`]ed to it. (Stored events have a column per feature and a
/// batch per model; the other tables' batches have one schema already,
/// returned as it is.)
fn unified(batches: &[RecordBatch]) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let schemas: Vec<SchemaRef> = batches.iter().map(RecordBatch::schema).collect();
    let schema = union_schema(&schemas)?;
    let batches = batches
        .iter()
        .map(|b| conform(b, &schema))
        .collect::<Result<Vec<_>>>()?;
    Ok((schema, batches))
}

/// The union of `schemas`: the first one when they all have its columns,
/// else columns in the order they first come, a column some schema lacks
/// nullable.
fn union_schema(schemas: &[SchemaRef]) -> Result<SchemaRef> {
    let Some(first) = schemas.first() else {
        return Err(Error::Data {
            context: "history rows".into(),
            message: "no batches".into(),
        });
    };
    if schemas.iter().all(|s| s.fields() == first.fields()) {
        return Ok(Arc::clone(first));
    }
    let mut fields: Vec<arrow::datatypes::Field> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for s in schemas {
        for f in s.fields() {
            match index.get(f.name()) {
                Some(&i) if fields[i].data_type() != f.data_type() => {
                    return Err(Error::Data {
                        context: "history rows".into(),
                        message: format!(
                            "column {} is {} in one batch and {} in another",
                            f.name(),
                            fields[i].data_type(),
                            f.data_type()
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    index.insert(f.name().clone(), fields.len());
                    fields.push(f.as_ref().clone());
                }
            }
        }
    }
    // a column some schema lacks holds nulls there
    for f in &mut fields {
        if schemas.iter().any(|s| s.index_of(f.name()).is_err()) {
            *f = f.clone().with_nullable(true);
        }
    }
    Ok(Arc::new(arrow::datatypes::Schema::new(fields)))
}

/// `batch` in `schema` (a union of its own): columns matched by name, a
/// column it lacks null.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.schema().index_of(f.name()) {
            Ok(i) => Arc::clone(batch.column(i)),
            Err(_) => arrow::array::new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(data("history rows in one schema"))
}

/// `batches` (of `schema`) sorted by the model column, rows of one model in
/// their order. When each batch holds one model (stored events), the
/// batches are put in order as they are; otherwise the rows are gathered
/// from them in that order into one batch at once, without concatenating
/// them first.
fn sorted_by_model(
    schema: &SchemaRef,
    model: usize,
    batches: &[RecordBatch],
) -> Result<Vec<RecordBatch>> {
    let context = || "sorting history rows by model".to_owned();
    if batches.is_empty() {
        return Ok(vec![RecordBatch::new_empty(Arc::clone(schema))]);
    }
    let ids: Vec<_> = batches
        .iter()
        .map(|b| b.column(model).as_string::<i32>())
        .collect();
    let one_model = |a: &&arrow::array::StringArray| {
        a.null_count() == 0 && (1..a.len()).all(|r| a.value(r) == a.value(0))
    };
    if ids.iter().all(one_model) {
        let mut order: Vec<usize> = (0..batches.len())
            .filter(|&b| batches[b].num_rows() > 0)
            .collect();
        order.sort_by(|&b1, &b2| ids[b1].value(0).cmp(ids[b2].value(0)));
        return Ok(order.into_iter().map(|b| batches[b].clone()).collect());
    }
    let mut order: Vec<(usize, usize)> = ids
        .iter()
        .enumerate()
        .flat_map(|(b, a)| (0..a.len()).map(move |r| (b, r)))
        .collect();
    // stable: rows of one model keep their order
    order.sort_by(|&(b1, r1), &(b2, r2)| ids[b1].value(r1).cmp(ids[b2].value(r2)));
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    arrow::compute::interleave_record_batch(&refs, &order)
        .map(|b| vec![b])
        .map_err(data(context()))
}

/// Splits `batch` by date into `groups`.
fn split(
    def: &TableDef,
    batch: &RecordBatch,
    groups: &mut BTreeMap<String, Vec<RecordBatch>>,
) -> Result<()> {
    let times = batch
        .column(def.time_column)
        .as_primitive::<TimestampMillisecondType>();
    // days since the epoch: one date string per day, not per row
    let days: Vec<i64> = times
        .values()
        .iter()
        .map(|ms| ms.div_euclid(DAY_MS))
        .collect();
    let distinct: BTreeSet<i64> = days.iter().copied().collect();
    if distinct.len() == 1 {
        let day = days[0];
        groups
            .entry(date_of(day * DAY_MS))
            .or_default()
            .push(batch.clone());
        return Ok(());
    }
    for day in distinct {
        let mask: BooleanArray = days.iter().map(|d| Some(*d == day)).collect();
        let part =
            filter_record_batch(batch, &mask).map_err(data(format!("history of {}", def.name)))?;
        groups.entry(date_of(day * DAY_MS)).or_default().push(part);
    }
    Ok(())
}

/// Writes the rows that `fill` gives a writer of `schema` for `dir/name`
/// under a temporary name, synced: in place once committed (see
/// [`driftwatch_ingest::durable::stage_with`]).
fn stage_file(
    dir: &Path,
    name: &str,
    schema: &SchemaRef,
    fill: impl FnOnce(&mut ArrowWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> Result<driftwatch_ingest::durable::StagedFile> {
    let path = dir.join(name);
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        // unique per row: a dictionary only costs time
        .set_column_dictionary_enabled("event_id".into(), false);
    if crate::events::is_stored(schema) {
        // the numbers of raw events (scores, measured features) seldom
        // repeat either: hashing each into a dictionary that is then
        // given up was a fifth of what writing them cost
        for f in schema.fields() {
            if f.data_type() == &arrow::datatypes::DataType::Float64 {
                props = props.set_column_dictionary_enabled(f.name().as_str().into(), false);
            }
        }
    }
    let props = props.build();
    let context = format!("writing {}", path.display());
    driftwatch_ingest::durable::stage_with(&path, |file| {
        let mut writer = ArrowWriter::try_new(file, Arc::clone(schema), Some(props))?;
        fill(&mut writer)?;
        writer.close()?;
        Ok(())
    })
    .map_err(io(context))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table `name` with one row dated `ms` for model `m`.
    fn one_row(name: &str, ms: i64) -> (TableDef, Vec<RecordBatch>) {
        use arrow::array::{StringArray, TimestampMillisecondArray};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let schema = Arc::new(Schema::new(vec![
            Field::new("model_id", DataType::Utf8, false),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec!["m"])),
                Arc::new(TimestampMillisecondArray::from(vec![ms])),
            ],
        )
        .unwrap();
        (TableDef::new(name, schema).unwrap(), vec![batch])
    }

    #[test]
    fn earlier_days_of_raw_rows_wait_for_compact_files_flushes() {
        const DAY: i64 = 86_400_000;
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open(dir.path(), "w").unwrap();
        let flush = |history: &mut History, day: i64| {
            let tables = [one_row("events", day * DAY), one_row("windows", day * DAY)];
            let rows: Vec<(&TableDef, Vec<RecordBatch>)> =
                tables.iter().map(|(d, b)| (d, b.clone())).collect();
            history.write(&rows).unwrap()
        };
        assert!(one_row("events", 0).0.raw && !one_row("windows", 0).0.raw);
        // two flushes on day 1, one on day 2: day 1 is an earlier day
        flush(&mut history, 1);
        flush(&mut history, 1);
        let seq = flush(&mut history, 2);
        let done = history.compact(seq).unwrap();
        // only the window table's day 1 is merged
        assert_eq!((done.directories, done.files), (1, 2));
        let files = |table: &str, date: &str| {
            std::fs::read_dir(dir.path().join(format!("{table}/date={date}")))
                .unwrap()
                .count()
        };
        assert_eq!(files("windows", "1970-01-02"), 1);
        assert_eq!(files("events", "1970-01-02"), 2);
        // once the raw day holds COMPACT_FILES files, it is merged too
        for _ in 2..COMPACT_FILES {
            flush(&mut history, 1);
        }
        let done = history.compact(history.seq()).unwrap();
        assert_eq!(done.files, COMPACT_FILES + (COMPACT_FILES - 1), "{done:?}");
        assert_eq!(files("events", "1970-01-02"), 1);
        assert_eq!(files("windows", "1970-01-02"), 1);
    }

    #[test]
    fn a_flush_writes_one_file_per_table_and_day_sorted_by_model() {
        use arrow::array::{StringArray, TimestampMillisecondArray};
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open(dir.path(), "w").unwrap();
        let (def, _) = one_row("windows", 0);
        let models: Vec<String> = (0..1000)
            .map(|i| format!("m{}", (i * 7919) % 1000))
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&def.schema),
            vec![
                Arc::new(StringArray::from(models.clone())),
                Arc::new(TimestampMillisecondArray::from(vec![0; 1000])),
            ],
        )
        .unwrap();
        history.write(&[(&def, vec![batch])]).unwrap();
        assert_eq!(history.file_count(), 1);
        let (_, rows) = crate::cache::read_parquet(
            &dir.path()
                .join("windows/date=1970-01-01/w-000000000001.parquet"),
        )
        .unwrap();
        let read = model_ids(&rows);
        let mut expected = models;
        expected.sort();
        assert_eq!(read, expected);
    }

    /// A batch of the `windows` table of [`one_row`]: `(model, ms)` rows.
    fn window_rows(rows: &[(String, i64)]) -> RecordBatch {
        use arrow::array::{StringArray, TimestampMillisecondArray};
        let (def, _) = one_row("windows", 0);
        RecordBatch::try_new(
            Arc::clone(&def.schema),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                )),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_compaction_merges_the_files_model_by_model_in_flush_order() {
        use arrow::datatypes::TimestampMillisecondType;
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open(dir.path(), "w").unwrap();
        let (def, _) = one_row("windows", 0);
        // each flush holds every model, more rows than a batch read at once
        let mut written: Vec<(String, i64)> = Vec::new();
        for flush in 0..COMPACT_FILES as i64 {
            let rows: Vec<(String, i64)> = (0..1500)
                .map(|i| (format!("m{}", (i * 7 + flush) % 5), flush * 1500 + i))
                .collect();
            history.write(&[(&def, vec![window_rows(&rows)])]).unwrap();
            written.extend(rows);
        }
        let seq = history.seq();
        let done = history.compact(seq).unwrap();
        assert_eq!((done.directories, done.files), (1, COMPACT_FILES));
        let (_, rows) = crate::cache::read_parquet(
            &dir.path()
                .join("windows/date=1970-01-01")
                .join(file_name("w", 1, seq)),
        )
        .unwrap();
        let read: Vec<(String, i64)> = rows
            .iter()
            .flat_map(|b| {
                let ids = b.column(0).as_string::<i32>();
                let times = b.column(1).as_primitive::<TimestampMillisecondType>();
                (0..b.num_rows())
                    .map(|r| (ids.value(r).to_owned(), times.value(r)))
                    .collect::<Vec<_>>()
            })
            .collect();
        // by model; a model's rows flush after flush, each in its order
        written.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(read, written);
    }

    #[test]
    fn a_file_not_sorted_by_model_is_not_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open(dir.path(), "w").unwrap();
        let (def, _) = one_row("windows", 0);
        for i in 0..COMPACT_FILES as i64 {
            let rows = [("a".to_owned(), i), ("b".to_owned(), i)];
            history.write(&[(&def, vec![window_rows(&rows)])]).unwrap();
        }
        // a file written otherwise, its models out of order
        let day = dir.path().join("windows/date=1970-01-01");
        let third = day.join(file_name("w", 3, 3));
        let unsorted = window_rows(&[("b".to_owned(), 0), ("a".to_owned(), 1)]);
        let mut writer = ArrowWriter::try_new(
            std::fs::File::create(&third).unwrap(),
            unsorted.schema(),
            None,
        )
        .unwrap();
        writer.write(&unsorted).unwrap();
        writer.close().unwrap();
        let e = history.compact(history.seq()).unwrap_err().to_string();
        assert!(e.contains("not sorted by model_id"), "{e}");
        assert!(e.contains(&third.display().to_string()), "{e}");
        // the inputs stay, and nothing else is left in the directory
        assert_eq!(std::fs::read_dir(&day).unwrap().count(), COMPACT_FILES);
    }

    /// The model ids (first column) of `rows`, in their order.
    fn model_ids(rows: &[RecordBatch]) -> Vec<String> {
        rows.iter()
            .flat_map(|b| {
                let ids = b.column(0).as_string::<i32>();
                ids.iter().flatten().map(str::to_owned).collect::<Vec<_>>()
            })
            .collect()
    }

    /// A batch of stored events of `model` at `ms`, with a numeric column
    /// per name of `features`.
    fn stored_events(model: &str, ms: i64, features: &[&str]) -> RecordBatch {
        use driftwatch_ingest::event::{Feature, FeatureValue, Prediction, PredictionEvent};
        let mut rows = crate::events::EventRows::default();
        for i in 0..3 {
            rows.push(&PredictionEvent {
                event_id: format!("{model}-{i}"),
                model_id: Arc::from(model),
                model_version: None,
                timestamp: ms + i,
                features: features
                    .iter()
                    .map(|f| Feature {
                        name: Arc::from(*f),
                        value: FeatureValue::Numeric(i as f64),
                    })
                    .collect(),
                prediction: Prediction {
                    score: Some(0.5),
                    ..Prediction::default()
                },
                segments: Vec::new(),
                label: None,
            });
        }
        rows.take().unwrap().remove(0)
    }

    #[test]
    fn stored_events_of_models_with_other_features_share_a_file_and_compact() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open(dir.path(), "w").unwrap();
        let def = TableDef::new("events", crate::events::events_schema()).unwrap();
        // flush after flush, models with other features, in no model order
        let flushes = [
            vec![
                stored_events("z", 0, &["a", "b"]),
                stored_events("m", 10, &["c"]),
            ],
            vec![stored_events("m", 20, &["c", "d"])],
        ];
        for _ in 0..COMPACT_FILES / flushes.len() {
            for batches in &flushes {
                history.write(&[(&def, batches.clone())]).unwrap();
            }
        }
        let day = dir.path().join("events/date=1970-01-01");
        let (schema, _) = crate::cache::read_parquet(&day.join(file_name("w", 1, 1))).unwrap();
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(&columns[8..], ["numeric.a", "numeric.b", "numeric.c"]);
        let seq = history.seq();
        let done = history.compact(seq).unwrap();
        assert_eq!((done.directories, done.files), (1, COMPACT_FILES));
        let (schema, rows) = crate::cache::read_parquet(&day.join(file_name("w", 1, seq))).unwrap();
        assert!(crate::events::is_stored(&schema));
        let models = model_ids(&rows);
        let mut expected = vec!["m".to_owned(); 6 * COMPACT_FILES / 2];
        expected.extend(vec!["z".to_owned(); 3 * COMPACT_FILES / 2]);
        assert_eq!(models, expected);
        // every feature column of every input, null where a model lacks it
        let queried: Vec<RecordBatch> = rows
            .iter()
            .map(|b| crate::events::as_queried(b, &def.schema).unwrap())
            .collect();
        let numeric = def.schema.index_of("numeric").unwrap();
        let sizes: Vec<usize> = queried
            .iter()
            .flat_map(|b| {
                let m = b.column(numeric).as_map();
                (0..m.len()).map(|r| m.value(r).len()).collect::<Vec<_>>()
            })
            .collect();
        // model m: flush by flush, rows with c, then rows with c and d;
        // then model z's rows with a and b
        let mut expected = [1, 1, 1, 2, 2, 2].repeat(COMPACT_FILES / 2);
        expected.extend([2; 3 * COMPACT_FILES / 2]);
        assert_eq!(sizes, expected);
    }

    #[test]
    fn a_file_of_rows_in_both_forms_reads_back_with_every_rows_features() {
        // a day written before the stored form and after it, compacted
        // into one file: old rows carry maps, new ones feature columns
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open(dir.path(), "w").unwrap();
        let def = TableDef::new("events", crate::events::events_schema()).unwrap();
        let old = crate::events::as_queried(&stored_events("a", 0, &["x"]), &def.schema).unwrap();
        let new = stored_events("b", 10, &["y", "z"]);
        history.write(&[(&def, vec![old, new])]).unwrap();
        let (_, rows) = crate::cache::read_parquet(
            &dir.path()
                .join("events/date=1970-01-01")
                .join(file_name("w", 1, 1)),
        )
        .unwrap();
        let numeric = def.schema.index_of("numeric").unwrap();
        let sizes: Vec<usize> = rows
            .iter()
            .flat_map(|b| {
                let b = crate::events::as_queried(b, &def.schema).unwrap();
                let m = b.column(numeric).as_map().clone();
                (0..m.len()).map(move |r| m.value(r).len())
            })
            .collect();
        assert_eq!(sizes, [1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn partition_values_are_one_safe_path_component() {
        assert_eq!(encode_partition("churn-v2.1_x"), "churn-v2.1_x");
        assert_eq!(encode_partition("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_partition("é"), "%C3%A9");
        for v in ["churn-v2.1_x", "a/b c", "é", "100%", ""] {
            assert_eq!(decode_partition(&encode_partition(v)), v);
        }
    }

    #[test]
    fn flush_ranges_are_read_back_from_names() {
        assert_eq!(range_of("p3-000000000012.parquet", "p3"), Some((12, 12)));
        assert_eq!(
            range_of("p3-000000000002-000000000012.parquet", "p3"),
            Some((2, 12))
        );
        assert_eq!(range_of("p31-000000000012.parquet", "p3"), None);
        assert_eq!(range_of(".p3-000000000012.parquet.tmp", "p3"), None);
        assert_eq!(range_of("p3-12.parquet", "p3"), None);
        assert_eq!(range_of("p3-000000000012-000000000002.parquet", "p3"), None);
        for (f, l) in [(1, 1), (3, 40)] {
            assert_eq!(range_of(&file_name("g-p0", f, l), "g-p0"), Some((f, l)));
        }
    }
}
