//! Where closed windows go: JSON Lines and Parquet files per output table, and
//! a readable line per window on the terminal.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, SchemaRef, UInt64Type};
use arrow::json::LineDelimitedWriter;
use driftwatch_detectors::ClosedWindow;
use driftwatch_ingest::format_time;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// Receives each closed window.
pub trait WindowSink {
    /// One closed window.
    fn window(&mut self, window: &ClosedWindow) -> Result<()>;
    /// No more windows.
    fn finish(&mut self) -> Result<()> {
        Ok(())
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

impl TableWriters {
    /// Creates (truncating) the files of `tables` in `dir`.
    pub fn create(dir: &Path, tables: &[(String, SchemaRef)]) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating output directory {}", dir.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let mut files = BTreeMap::new();
        for (name, schema) in tables {
            let jsonl_path = dir.join(format!("{name}.jsonl"));
            let parquet_path = dir.join(format!("{name}.parquet"));
            let jsonl = File::create(&jsonl_path)
                .with_context(|| format!("creating {}", jsonl_path.display()))?;
            let parquet_file = File::create(&parquet_path)
                .with_context(|| format!("creating {}", parquet_path.display()))?;
            let parquet = ArrowWriter::try_new(parquet_file, schema.clone(), Some(props.clone()))
                .with_context(|| format!("starting {}", parquet_path.display()))?;
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
}

impl WindowSink for TableWriters {
    fn window(&mut self, window: &ClosedWindow) -> Result<()> {
        for (name, batch) in &window.tables {
            let files = self
                .tables
                .get_mut(name)
                .with_context(|| format!("internal: no output files for table {name}"))?;
            files
                .jsonl
                .write(batch)
                .with_context(|| format!("writing {}/{name}.jsonl", self.dir.display()))?;
            files
                .parquet
                .write(batch)
                .with_context(|| format!("writing {}/{name}.parquet", self.dir.display()))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        for (name, files) in std::mem::take(&mut self.tables) {
            let TableFiles { mut jsonl, parquet } = files;
            jsonl.finish()?;
            let mut inner = jsonl.into_inner();
            inner.flush()?;
            parquet
                .close()
                .with_context(|| format!("closing {}/{name}.parquet", self.dir.display()))?;
        }
        Ok(())
    }
}

/// Prints one readable line per closed window.
#[derive(Debug, Default)]
pub struct ConsoleSummary {
    /// Also list each window's features with the largest share of missing values.
    pub verbose: bool,
}

fn table<'a>(window: &'a ClosedWindow, name: &str) -> Option<&'a RecordBatch> {
    window
        .tables
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| b)
}

fn u64_at(batch: &RecordBatch, column: &str, row: usize) -> Option<u64> {
    let c = batch
        .column_by_name(column)?
        .as_primitive_opt::<UInt64Type>()?;
    (!c.is_null(row)).then(|| c.value(row))
}

fn f64_at(batch: &RecordBatch, column: &str, row: usize) -> Option<f64> {
    let c = batch
        .column_by_name(column)?
        .as_primitive_opt::<Float64Type>()?;
    (!c.is_null(row)).then(|| c.value(row))
}

impl WindowSink for ConsoleSummary {
    fn window(&mut self, w: &ClosedWindow) -> Result<()> {
        let start = format_time(w.key.start);
        let end = format_time(w.key.end);
        let mut line = format!(
            "{:<6} {:<4} {} → {}  events {:>7}",
            w.key.model_id,
            w.key.model_version.as_deref().unwrap_or("-"),
            &start[..16],
            &end[11..16],
            w.events
        );
        if let Some(s) = table(w, "window_summary") {
            if let Some(mean) = f64_at(s, "score_mean", 0) {
                line.push_str(&format!("  score μ {mean:.3}"));
            }
            if let Some(mean) = f64_at(s, "value_mean", 0) {
                line.push_str(&format!("  value μ {mean:.2}"));
            }
        }
        if let Some(f) = table(w, "feature_summary") {
            let (mut present, mut missing) = (0, 0);
            for row in 0..f.num_rows() {
                present += u64_at(f, "count", row).unwrap_or(0);
                missing += u64_at(f, "missing", row).unwrap_or(0);
            }
            if present + missing > 0 {
                line.push_str(&format!(
                    "  features {}  missing {:.2}%",
                    f.num_rows(),
                    100.0 * missing as f64 / (present + missing) as f64
                ));
            }
        }
        if let Some(d) = table(w, "drift_summary") {
            let reference = d
                .column_by_name("is_reference")
                .and_then(|c| c.as_boolean_opt())
                .is_some_and(|c| c.value(0));
            if reference {
                line.push_str("  [reference]");
            } else if let (Some(n), Some(k)) = (
                u64_at(d, "features_compared", 0),
                u64_at(d, "features_drifted", 0),
            ) {
                line.push_str(&format!("  drifted {k}/{n}"));
            }
        }
        println!("{line}");
        if let Some(f) = table(w, "feature_drift") {
            let names = f.column_by_name("feature").map(|c| c.as_string::<i32>());
            let levels = f.column_by_name("level").map(|c| c.as_string::<i32>());
            if let (Some(names), Some(levels)) = (names, levels) {
                let mut drifted = Vec::new();
                for row in 0..f.num_rows() {
                    if levels.value(row) != "drift" {
                        continue;
                    }
                    let stat = match (
                        f64_at(f, "wasserstein_norm", row),
                        f64_at(f, "unseen_share", row),
                        f64_at(f, "js", row),
                    ) {
                        (Some(w), _, _) => format!("W/sd {w:.2}"),
                        (None, Some(u), _) if u > 0.0 => format!("unseen {:.0}%", 100.0 * u),
                        (None, _, Some(js)) => format!("JS {js:.2}"),
                        _ => String::new(),
                    };
                    drifted.push(format!("{} ({stat})", names.value(row)));
                }
                if !drifted.is_empty() {
                    println!("    drift: {}", drifted.join(", "));
                }
            }
        }
        if self.verbose
            && let Some(f) = table(w, "feature_summary")
        {
            let names = f.column_by_name("feature").map(|c| c.as_string::<i32>());
            for row in 0..f.num_rows() {
                let name = names.map(|n| n.value(row)).unwrap_or("?");
                let count = u64_at(f, "count", row).unwrap_or(0);
                let missing = u64_at(f, "missing", row).unwrap_or(0);
                let stats = match (
                    f64_at(f, "mean", row),
                    f64_at(f, "min", row),
                    f64_at(f, "max", row),
                ) {
                    (Some(mean), Some(min), Some(max)) => format!("μ {mean:>10.3}  [{min}, {max}]"),
                    _ => format!("categorical {}", u64_at(f, "categorical", row).unwrap_or(0)),
                };
                println!("    {name:<22} n {count:>7}  missing {missing:>5}  {stats}");
            }
        }
        Ok(())
    }
}

/// One JSON file per closed window, `DIR/<model>/<start>_<end>[_<version>].json`,
/// written atomically (temporary file, fsync, rename). Writing a window again
/// — the service re-reading events after a restart — replaces its file with
/// the same content, so the directory holds every window exactly once.
#[derive(Debug)]
pub struct WindowFiles {
    dir: PathBuf,
}

impl WindowFiles {
    /// Window files under `dir`.
    pub fn new(dir: &Path) -> Self {
        WindowFiles {
            dir: dir.to_owned(),
        }
    }

    fn path(&self, window: &ClosedWindow) -> PathBuf {
        let k = &window.key;
        let mut name = format!("{}_{}", k.start, k.end);
        if let Some(v) = &k.model_version {
            name.push('_');
            name.push_str(&sanitise(v));
        }
        name.push_str(".json");
        self.dir.join(sanitise(&k.model_id)).join(name)
    }
}

/// A name safe as one path component.
fn sanitise(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' => c,
            _ => '_',
        })
        .collect()
}

impl WindowSink for WindowFiles {
    fn window(&mut self, window: &ClosedWindow) -> Result<()> {
        let k = &window.key;
        let mut tables = serde_json::Map::new();
        for (name, batch) in &window.tables {
            let mut rows = arrow::json::ArrayWriter::new(Vec::new());
            rows.write(batch)?;
            rows.finish()?;
            let rows: serde_json::Value = serde_json::from_slice(&rows.into_inner())
                .unwrap_or(serde_json::Value::Array(Vec::new()));
            tables.insert(name.clone(), rows);
        }
        let doc = serde_json::json!({
            "model_id": k.model_id.as_ref(),
            "model_version": k.model_version.as_deref(),
            "window_start": format_time(k.start),
            "window_end": format_time(k.end),
            "events": window.events,
            "tables": tables,
        });
        let path = self.path(window);
        let bytes = serde_json::to_vec_pretty(&doc)?;
        crate::checkpoint::write_atomically(&path, &bytes)
    }
}
