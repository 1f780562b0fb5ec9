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
use driftwatch_detectors::performance::{
    MetricsRevision, PerformanceOutput, change_points_batch, label_stats_batch,
};
use driftwatch_detectors::{ClosedWindow, WindowKey};
use driftwatch_engine::DataDir;
use driftwatch_ingest::format_time;
use driftwatch_ingest::names::path_component;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// `text` safe to show on a terminal or in a text log: control characters
/// (C0, DEL, C1: escape sequences, newlines, bells) and the bidirectional
/// overrides that reorder what a reader sees are written as escapes
/// (`\n`, `\u{1b}`). Values from events (categories, rule columns) and
/// from receivers reach the console and the logs.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let hostile = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(hostile) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hostile(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

/// `batches` as a table for people: string cells shown with
/// [`printable`], and anything nested that still holds a control character
/// escaped in the rendered text.
pub fn table_text(batches: &[RecordBatch]) -> Result<String> {
    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::DataType;
    let shown: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let columns: Vec<ArrayRef> = b
                .columns()
                .iter()
                .map(|c| -> Result<ArrayRef> {
                    if !matches!(
                        c.data_type(),
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                    ) {
                        return Ok(c.clone());
                    }
                    let text = arrow::compute::cast(c, &DataType::Utf8)?;
                    let text = text.as_string::<i32>();
                    let escaped: StringArray = text.iter().map(|v| v.map(printable)).collect();
                    Ok(std::sync::Arc::new(escaped))
                })
                .collect::<Result<_>>()?;
            // the shown columns are all Utf8 where they were text
            let fields: Vec<arrow::datatypes::Field> = b
                .schema()
                .fields()
                .iter()
                .zip(&columns)
                .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
                .collect();
            Ok(RecordBatch::try_new(
                std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
                columns,
            )?)
        })
        .collect::<Result<_>>()?;
    let table = arrow::util::pretty::pretty_format_batches(&shown)?.to_string();
    Ok(table.lines().map(printable).collect::<Vec<_>>().join("\n"))
}

/// Receives each closed window.
pub trait WindowSink {
    /// One closed window.
    fn window(&mut self, window: &ClosedWindow) -> Result<()>;
    /// Metric revisions, change points and label counts reported by the
    /// label join.
    fn performance(&mut self, output: &PerformanceOutput) -> Result<()> {
        let _ = output;
        Ok(())
    }
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

impl TableWriters {
    fn write(&mut self, name: &str, batch: &RecordBatch) -> Result<()> {
        let files = self
            .tables
            .get_mut(name)
            .with_context(|| format!("internal: no output files for table {name}"))?;
        files
            .jsonl
            .write(&without_binary(batch)?)
            .with_context(|| format!("writing {}/{name}.jsonl", self.dir.display()))?;
        files
            .parquet
            .write(batch)
            .with_context(|| format!("writing {}/{name}.parquet", self.dir.display()))
    }
}

impl WindowSink for TableWriters {
    fn window(&mut self, window: &ClosedWindow) -> Result<()> {
        for (name, batch) in &window.tables {
            self.write(name, batch)?;
        }
        Ok(())
    }

    fn performance(&mut self, out: &PerformanceOutput) -> Result<()> {
        for r in &out.revisions {
            self.write("model_metrics", &r.batch)?;
        }
        if !out.change_points.is_empty() {
            self.write("change_points", &change_points_batch(&out.change_points)?)?;
        }
        if !out.label_stats.is_empty() {
            self.write("label_stats", &label_stats_batch(&out.label_stats)?)?;
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

/// The value of `metric` (whole model) in a `model_metrics` batch.
fn metric(batch: &RecordBatch, name: &str) -> Option<f64> {
    let metrics = batch.column_by_name("metric")?.as_string_opt::<i32>()?;
    let classes = batch.column_by_name("class")?;
    (0..batch.num_rows())
        .find(|&i| metrics.value(i) == name && classes.is_null(i))
        .and_then(|i| f64_at(batch, "value", i))
}

impl ConsoleSummary {
    fn revision(&self, r: &MetricsRevision) {
        // the first figures (window closed) and the last (all labels in); every one when verbose
        if !(self.verbose || r.revision == 0 || r.is_final) {
            return;
        }
        let k = &r.key;
        let start = format_time(k.start);
        let end = format_time(k.end);
        let coverage = if r.predictions > 0 {
            100.0 * r.labeled as f64 / r.predictions as f64
        } else {
            0.0
        };
        let mut line = format!(
            "{:<6} {:<4} {} → {}  metrics rev {}{}  labelled {:>6}/{:<6} ({coverage:>3.0}%)",
            k.model_id,
            k.model_version.as_deref().unwrap_or("-"),
            &start[..16],
            &end[11..16],
            r.revision,
            if r.is_final { " final" } else { "" },
            r.labeled,
            r.predictions,
        );
        for (name, label) in [
            ("accuracy", "accuracy"),
            ("roc_auc", "auc"),
            ("f1", "f1"),
            ("mae", "mae"),
            ("rmse", "rmse"),
        ] {
            if let Some(v) = metric(&r.batch, name) {
                line.push_str(&format!("  {label} {v:.3}"));
            }
        }
        println!("{}", printable(&line));
    }
}

impl WindowSink for ConsoleSummary {
    fn performance(&mut self, out: &PerformanceOutput) -> Result<()> {
        for r in &out.revisions {
            self.revision(r);
        }
        for p in &out.change_points {
            println!(
                "    change: {} {} {} by {} at {} (seen {}), statistic {:.3}",
                printable(&p.model_id),
                printable(p.model_version.as_deref().unwrap_or("-")),
                p.metric,
                p.detector,
                &format_time(p.event_time)[..16],
                &format_time(p.detected_at)[..16],
                p.statistic
            );
        }
        Ok(())
    }

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
        println!("{}", printable(&line));
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
                    println!("    drift: {}", printable(&drifted.join(", ")));
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
                let name = printable(name);
                println!("    {name:<22} n {count:>7}  missing {missing:>5}  {stats}");
            }
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
#[derive(Debug)]
pub struct WindowFiles {
    data: DataDir,
}

impl WindowFiles {
    /// Result files in the data directory `data`.
    pub fn new(data: DataDir) -> Self {
        WindowFiles { data }
    }

    fn path(&self, table: &str, model: &str, mut name: String) -> PathBuf {
        name.push_str(".json");
        self.data.window_results(table, model).join(name)
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
    Ok(batch.project(&keep)?)
}

/// The rows of a batch as JSON objects (binary columns left out).
fn rows_json(batch: &RecordBatch) -> Result<serde_json::Value> {
    let mut rows = arrow::json::ArrayWriter::new(Vec::new());
    rows.write(&without_binary(batch)?)?;
    rows.finish()?;
    Ok(serde_json::from_slice(&rows.into_inner()).unwrap_or(serde_json::Value::Array(Vec::new())))
}

impl WindowSink for WindowFiles {
    fn window(&mut self, window: &ClosedWindow) -> Result<()> {
        let k = &window.key;
        let mut tables = serde_json::Map::new();
        for (name, batch) in &window.tables {
            tables.insert(name.clone(), rows_json(batch)?);
        }
        let doc = serde_json::json!({
            "model_id": k.model_id.as_ref(),
            "model_version": k.model_version.as_deref(),
            "window_start": format_time(k.start),
            "window_end": format_time(k.end),
            "events": window.events,
            "tables": tables,
        });
        let path = self.path("windows", &k.model_id, window_name(k));
        let bytes = serde_json::to_vec_pretty(&doc)?;
        Ok(driftwatch_engine::checkpoint::write_atomically(
            &path, &bytes,
        )?)
    }

    fn performance(&mut self, out: &PerformanceOutput) -> Result<()> {
        for r in &out.revisions {
            let k = &r.key;
            let path = self.path("metrics", &k.model_id, window_name(k));
            let bytes = serde_json::to_vec_pretty(&rows_json(&r.batch)?)?;
            driftwatch_engine::checkpoint::write_atomically(&path, &bytes)?;
        }
        for p in &out.change_points {
            let batch = change_points_batch(std::slice::from_ref(p))?;
            let mut name = format!(
                "{}_{}_{}_{}",
                p.event_time, p.metric, p.detector, p.detected_at
            );
            if let Some(v) = &p.model_version {
                name.push('_');
                name.push_str(&path_component(v));
            }
            let path = self.path("change_points", &p.model_id, name);
            let bytes = serde_json::to_vec_pretty(&rows_json(&batch)?)?;
            driftwatch_engine::checkpoint::write_atomically(&path, &bytes)?;
        }
        for row in &out.label_stats {
            let batch = label_stats_batch(std::slice::from_ref(row))?;
            let path = self.path("label_stats", &row.0, format!("{}_{}", row.1, row.2));
            let bytes = serde_json::to_vec_pretty(&rows_json(&batch)?)?;
            driftwatch_engine::checkpoint::write_atomically(&path, &bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
