//! The history: every row of every table once its window has closed, as
//! Parquet under `DATA_DIR/history`, partitioned by model and date:
//!
//! ```text
//! history/<table>/model_id=<model>/date=<YYYY-MM-DD>/<writer>-<seq>.parquet
//! ```
//!
//! A writer (the replay, or one Kafka partition of the service) appends one
//! file per table, model and date at each flush, numbered by a flush
//! sequence. A checkpoint records the sequence it has flushed; a restart
//! removes the writer's files numbered after it, so rows that the restarted
//! service will produce again are not in the history twice.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Result, data, io};
use crate::tables::TableDef;

/// Appends rows to the history as one writer.
#[derive(Debug)]
pub struct History {
    dir: PathBuf,
    writer: String,
    seq: u64,
}

/// Percent-encodes a partition value so that it is one safe path component
/// (DataFusion decodes it when it reads the partition back).
pub(crate) fn encode_partition(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub(crate) fn date_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "invalid".to_owned())
}

/// The sequence number in a history file name of `writer`, if it is one.
fn seq_of(name: &str, writer: &str) -> Option<u64> {
    name.strip_prefix(writer)?
        .strip_prefix('-')?
        .strip_suffix(".parquet")?
        .parse()
        .ok()
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

impl History {
    /// The history under `dir` (created if missing), written as `writer`
    /// (letters, digits, `-`, `_`); continues after the writer's last flush.
    pub fn open(dir: &Path, writer: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let mut history = History {
            dir: dir.to_owned(),
            writer: encode_partition(writer),
            seq: 0,
        };
        history.seq = history
            .own_files()?
            .iter()
            .map(|(_, seq)| *seq)
            .max()
            .unwrap_or(0);
        Ok(history)
    }

    /// The history's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last flush written.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn own_files(&self) -> Result<Vec<(PathBuf, u64)>> {
        let mut files = Vec::new();
        files_below(&self.dir, &mut files)?;
        Ok(files
            .into_iter()
            .filter_map(|p| {
                let seq = seq_of(p.file_name()?.to_str()?, &self.writer)?;
                Some((p, seq))
            })
            .collect())
    }

    /// Removes this writer's files written after flush `seq` (a checkpoint
    /// that recorded `seq` is being restored) and continues from there.
    /// Returns how many files were removed.
    pub fn rewind(&mut self, seq: u64) -> Result<usize> {
        let mut removed = 0;
        for (path, n) in self.own_files()? {
            if n > seq {
                std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
                removed += 1;
            }
        }
        self.seq = seq;
        Ok(removed)
    }

    /// Writes one flush: `rows` of each table, split by model and date.
    /// Returns the flush's sequence number (unchanged when there was nothing
    /// to write).
    pub fn write(&mut self, rows: &[(&TableDef, Vec<RecordBatch>)]) -> Result<u64> {
        if rows
            .iter()
            .all(|(_, b)| b.iter().all(|b| b.num_rows() == 0))
        {
            return Ok(self.seq);
        }
        let seq = self.seq + 1;
        for (def, batches) in rows {
            let mut groups: BTreeMap<(String, String), Vec<RecordBatch>> = BTreeMap::new();
            for batch in batches {
                split(def, batch, &mut groups)?;
            }
            for ((model, date), parts) in groups {
                let dir = self
                    .dir
                    .join(&def.name)
                    .join(format!("model_id={}", encode_partition(&model)))
                    .join(format!("date={date}"));
                let name = format!("{}-{seq:012}.parquet", self.writer);
                write_file(&dir, &name, &def.file_schema(), &parts)?;
            }
        }
        self.seq = seq;
        Ok(seq)
    }
}

/// Splits `batch` by (model, date) into `groups`, dropping the model column
/// (the partition directory holds it).
fn split(
    def: &TableDef,
    batch: &RecordBatch,
    groups: &mut BTreeMap<(String, String), Vec<RecordBatch>>,
) -> Result<()> {
    let models = batch.column(def.model_column).as_string::<i32>();
    let times = batch
        .column(def.time_column)
        .as_primitive::<TimestampMillisecondType>();
    let keys: Vec<(String, String)> = (0..batch.num_rows())
        .map(|i| (models.value(i).to_owned(), date_of(times.value(i))))
        .collect();
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|&c| c != def.model_column)
        .collect();
    let projected = batch
        .project(&keep)
        .map_err(data(format!("history of {}", def.name)))?;
    let distinct: std::collections::BTreeSet<&(String, String)> = keys.iter().collect();
    if distinct.len() == 1 {
        let key = keys[0].clone();
        groups.entry(key).or_default().push(projected);
        return Ok(());
    }
    for key in distinct {
        let mask: BooleanArray = keys.iter().map(|k| Some(k == key)).collect();
        let part = filter_record_batch(&projected, &mask)
            .map_err(data(format!("history of {}", def.name)))?;
        groups.entry(key.clone()).or_default().push(part);
    }
    Ok(())
}

/// Writes `batches` as `dir/name` through a temporary file and a rename, so
/// that a reader never sees half a file.
fn write_file(dir: &Path, name: &str, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let file = File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let context = format!("writing {}", path.display());
    let mut writer = ArrowWriter::try_new(file, Arc::clone(schema), Some(props))
        .map_err(data(context.clone()))?;
    for b in batches {
        writer.write(b).map_err(data(context.clone()))?;
    }
    let file = writer.into_inner().map_err(data(context.clone()))?;
    file.sync_all().map_err(io(context.clone()))?;
    std::fs::rename(&tmp, &path).map_err(io(context))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_are_one_safe_path_component() {
        assert_eq!(encode_partition("churn-v2.1_x"), "churn-v2.1_x");
        assert_eq!(encode_partition("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_partition("é"), "%C3%A9");
    }

    #[test]
    fn sequence_numbers_are_read_back_from_names() {
        assert_eq!(seq_of("p3-000000000012.parquet", "p3"), Some(12));
        assert_eq!(seq_of("p31-000000000012.parquet", "p3"), None);
        assert_eq!(seq_of(".p3-000000000012.parquet.tmp", "p3"), None);
    }
}
