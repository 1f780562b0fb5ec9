//! The decoded rows of history files, kept in memory across queries.
//!
//! A history file never changes once renamed into place (a compaction or a
//! rewind removes it, a rewrite under the same name has another size or
//! time), so a file's rows are decoded once and then served from memory,
//! keyed by path, size and modification time. Rules touch the same few
//! recent files at every window close; opening and decoding them each time
//! cost more than the queries themselves. The least recently used files are
//! dropped past a memory budget shared by every session of the process.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Result, data, io};

/// Memory the process-wide cache may hold.
pub const DEFAULT_BUDGET: usize = 256 << 20;

static SHARED: OnceLock<Arc<FileCache>> = OnceLock::new();
static SHARED_BUDGET: AtomicUsize = AtomicUsize::new(DEFAULT_BUDGET);

/// Decoded history files, least recently used dropped first.
#[derive(Debug)]
pub struct FileCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    files: HashMap<PathBuf, Cached>,
    bytes: usize,
    tick: u64,
}

#[derive(Debug)]
struct Cached {
    len: u64,
    modified: Option<SystemTime>,
    batches: Arc<Vec<RecordBatch>>,
    bytes: usize,
    used: u64,
}

/// The rows of one Parquet file, with the schema it was written with.
pub(crate) fn read_parquet(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let context = format!("reading {}", path.display());
    let file = File::open(path).map_err(io(context.clone()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(data(context.clone()))?
        .build()
        .map_err(data(context.clone()))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(data(context))?;
    Ok((schema, batches))
}

impl FileCache {
    /// A cache holding at most `budget` bytes of rows.
    pub fn new(budget: usize) -> Self {
        FileCache {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The cache every session of this process shares, with the budget of
    /// [`set_shared_budget`](Self::set_shared_budget) (else [`DEFAULT_BUDGET`]).
    pub fn shared() -> Arc<FileCache> {
        Arc::clone(
            SHARED.get_or_init(|| Arc::new(FileCache::new(SHARED_BUDGET.load(Ordering::Relaxed)))),
        )
    }

    /// Sets the budget of the [`shared`](Self::shared) cache (the
    /// `sql.history_cache` setting); `false` when the cache is already in
    /// use, whose budget then stays as it was.
    pub fn set_shared_budget(bytes: usize) -> bool {
        SHARED_BUDGET.store(bytes, Ordering::Relaxed);
        SHARED.get().is_none_or(|c| c.budget == bytes)
    }

    /// The rows of the file at `path`, from memory when it is unchanged,
    /// else read with `load` (outside the lock) and kept.
    pub fn get(
        &self,
        path: &Path,
        load: impl FnOnce(&Path) -> Result<Vec<RecordBatch>>,
    ) -> Result<Arc<Vec<RecordBatch>>> {
        let meta = std::fs::metadata(path).map_err(io(format!("reading {}", path.display())))?;
        let (len, modified) = (meta.len(), meta.modified().ok());
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(c) = inner.files.get_mut(path)
                && c.len == len
                && c.modified == modified
            {
                c.used = tick;
                return Ok(Arc::clone(&c.batches));
            }
        }
        let batches = Arc::new(load(path)?);
        self.keep(path, len, modified, Arc::clone(&batches));
        Ok(batches)
    }

    fn keep(
        &self,
        path: &Path,
        len: u64,
        modified: Option<SystemTime>,
        batches: Arc<Vec<RecordBatch>>,
    ) {
        let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(old) = inner.files.insert(
            path.to_owned(),
            Cached {
                len,
                modified,
                batches,
                bytes,
                used: tick,
            },
        ) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        // files removed from disk go when the budget needs their room
        while inner.bytes > self.budget {
            let Some(oldest) = inner
                .files
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            if let Some(c) = inner.files.remove(&oldest) {
                inner.bytes -= c.bytes;
            }
        }
    }

    /// Keeps `batches` as the rows of the file at `path`, just written by
    /// this process: they need not be read back.
    /// They are kept as one batch, as a file read back would give them: a
    /// scan over many small batches costs more than over one.
    pub fn insert(&self, path: &Path, batches: Vec<RecordBatch>) -> Result<()> {
        let meta = std::fs::metadata(path).map_err(io(format!("reading {}", path.display())))?;
        let batches = match batches.first() {
            Some(first) if batches.len() > 1 => {
                vec![
                    concat_batches(&first.schema(), &batches)
                        .map_err(data(format!("keeping {}", path.display())))?,
                ]
            }
            _ => batches,
        };
        self.keep(path, meta.len(), meta.modified().ok(), Arc::new(batches));
        Ok(())
    }

    /// The rows held for the file at `path`, if they are its current rows.
    pub fn peek(&self, path: &Path) -> Option<Arc<Vec<RecordBatch>>> {
        let meta = std::fs::metadata(path).ok()?;
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .files
            .get(path)
            .filter(|c| c.len == meta.len() && c.modified == meta.modified().ok())
            .map(|c| Arc::clone(&c.batches))
    }

    /// Bytes of rows held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn rows(n: i64) -> Vec<RecordBatch> {
        let a = Int64Array::from_iter_values(0..n);
        vec![RecordBatch::try_from_iter([("a", Arc::new(a) as _)]).expect("batch")]
    }

    #[test]
    fn a_file_is_read_once_until_it_changes_and_the_budget_drops_the_oldest() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "1").expect("write");
        std::fs::write(&b, "1").expect("write");
        let size = rows(1000)[0].get_array_memory_size();
        let cache = FileCache::new(size + size / 2);
        let reads = std::cell::Cell::new(0);
        let load = |_: &Path| {
            reads.set(reads.get() + 1);
            Ok(rows(1000))
        };
        cache.get(&a, load).expect("get");
        cache.get(&a, load).expect("get");
        assert_eq!(reads.get(), 1);
        // rewritten with another size: read again
        std::fs::write(&a, "22").expect("write");
        cache.get(&a, load).expect("get");
        assert_eq!(reads.get(), 2);
        // b pushes a out of the budget
        cache.get(&b, load).expect("get");
        assert_eq!(cache.bytes(), size);
        cache.get(&b, load).expect("get");
        assert_eq!(reads.get(), 3);
        cache.get(&a, load).expect("get");
        assert_eq!(reads.get(), 4);
    }
}
