//! The one shape in which the detectors hand their rows on: named Arrow
//! tables (key columns first) and what they are about. A closed window's
//! drift, quality and summaries and the label join's metric revisions,
//! change points and label counts arrive the same way, so every sink (the
//! SQL tables, the files, the rule runner, the console) reads one thing.
//!
//! ```text
//!  WindowSet::close_ready ─► ClosedWindow ──────┐
//!                                               ├─► Emitted { about, tables } ─► sinks
//!  PerformanceTracker::drain ─► PerformanceOutput┘
//! ```

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{ArrowPrimitiveType, Float64Type, TimestampMillisecondType, UInt64Type};

use crate::error::{Error, Result};
use crate::performance::tracker::model_metrics_schema;
use crate::performance::{PerformanceOutput, change_points_batch, label_stats_batch};
use crate::windows::{ClosedWindow, WindowKey};

/// Rows a stage hands on.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// What the rows are about.
    pub about: About,
    /// Named tables, in the order their rows were made.
    pub tables: Vec<(String, RecordBatch)>,
}

/// What an [`Emitted`]'s rows are about.
#[derive(Debug, Clone)]
pub enum About {
    /// A prediction window closed: its rows are final.
    Closed {
        /// Which window.
        key: WindowKey,
        /// Predictions the window holds.
        events: u64,
    },
    /// The label join's report: the windows whose metrics were revised
    /// (their rows follow one another in `model_metrics`, in this order),
    /// with the change points and label counts found since the last one.
    Revised(Vec<Revision>),
}

/// One window's metrics revised by the label join.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// The prediction window.
    pub key: WindowKey,
    /// 0 when the window closed, then 1, 2, …
    pub revision: u32,
    /// The last revision: the label horizon has passed (or the input ended).
    pub is_final: bool,
    /// Predictions in the window.
    pub predictions: u64,
    /// Labelled predictions.
    pub labeled: u64,
    /// Its rows in `model_metrics`.
    pub rows: usize,
}

impl Emitted {
    /// The table named `name`, if the rows have one.
    pub fn table(&self, name: &str) -> Option<&RecordBatch> {
        self.tables.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }

    /// The revisions reported with their `model_metrics` rows (none for a
    /// closed window).
    pub fn revisions(&self) -> impl Iterator<Item = (&Revision, RecordBatch)> {
        let (revisions, metrics) = match (&self.about, self.table(MODEL_METRICS)) {
            (About::Revised(r), Some(m)) => (r.as_slice(), Some(m)),
            _ => (&[][..], None),
        };
        let mut offset = 0;
        revisions.iter().filter_map(move |r| {
            let rows = metrics?.slice(offset, r.rows);
            offset += r.rows;
            Some((r, rows))
        })
    }
}

/// The table of metric revisions.
pub const MODEL_METRICS: &str = "model_metrics";
/// The table of change points.
pub const CHANGE_POINTS: &str = "change_points";
/// The table of label counts.
pub const LABEL_STATS: &str = "label_stats";

impl From<ClosedWindow> for Emitted {
    fn from(w: ClosedWindow) -> Self {
        Emitted {
            about: About::Closed {
                key: w.key,
                events: w.events,
            },
            tables: w.tables,
        }
    }
}

impl TryFrom<PerformanceOutput> for Emitted {
    type Error = Error;

    /// The report as tables: each revision's rows one after the other in
    /// `model_metrics`, then `change_points` and `label_stats` (a table
    /// with no rows is left out).
    fn try_from(out: PerformanceOutput) -> Result<Self> {
        let arrow = |table: &'static str| {
            move |source| Error::Output {
                table: table.to_owned(),
                source,
            }
        };
        let mut tables = Vec::new();
        if !out.revisions.is_empty() {
            let batches: Vec<&RecordBatch> = out.revisions.iter().map(|r| &r.batch).collect();
            let metrics =
                concat_batches(&model_metrics_schema(), batches).map_err(arrow(MODEL_METRICS))?;
            tables.push((MODEL_METRICS.to_owned(), metrics));
        }
        if !out.change_points.is_empty() {
            let batch = change_points_batch(&out.change_points).map_err(arrow(CHANGE_POINTS))?;
            tables.push((CHANGE_POINTS.to_owned(), batch));
        }
        if !out.label_stats.is_empty() {
            let batch = label_stats_batch(&out.label_stats).map_err(arrow(LABEL_STATS))?;
            tables.push((LABEL_STATS.to_owned(), batch));
        }
        let revisions = out
            .revisions
            .into_iter()
            .map(|r| Revision {
                rows: r.batch.num_rows(),
                key: r.key,
                revision: r.revision,
                is_final: r.is_final,
                predictions: r.predictions,
                labeled: r.labeled,
            })
            .collect();
        Ok(Emitted {
            about: About::Revised(revisions),
            tables,
        })
    }
}

/// Cells of an emitted table, by column name and row; `None` for a null,
/// a missing column or another type.
pub mod cell {
    use super::*;

    /// A text cell.
    pub fn text<'a>(batch: &'a RecordBatch, column: &str, row: usize) -> Option<&'a str> {
        let c = batch.column_by_name(column)?.as_string_opt::<i32>()?;
        c.is_valid(row).then(|| c.value(row))
    }

    /// A cell of a primitive column of Arrow type `T`.
    fn primitive<T: ArrowPrimitiveType>(
        batch: &RecordBatch,
        column: &str,
        row: usize,
    ) -> Option<T::Native> {
        let c = batch.column_by_name(column)?.as_primitive_opt::<T>()?;
        c.is_valid(row).then(|| c.value(row))
    }

    /// A boolean cell.
    pub fn bool(batch: &RecordBatch, column: &str, row: usize) -> Option<bool> {
        let c = batch.column_by_name(column)?.as_boolean_opt()?;
        c.is_valid(row).then(|| c.value(row))
    }

    /// A time cell, milliseconds.
    pub fn time(batch: &RecordBatch, column: &str, row: usize) -> Option<i64> {
        primitive::<TimestampMillisecondType>(batch, column, row)
    }

    /// An unsigned integer cell.
    pub fn u64(batch: &RecordBatch, column: &str, row: usize) -> Option<u64> {
        primitive::<UInt64Type>(batch, column, row)
    }

    /// A floating-point cell.
    pub fn f64(batch: &RecordBatch, column: &str, row: usize) -> Option<f64> {
        primitive::<Float64Type>(batch, column, row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Float64Array, StringArray, TimestampMillisecondArray, UInt32Array,
        UInt64Array, new_null_array,
    };
    use arrow::datatypes::DataType;
    use driftwatch_ingest::event::ARROW_TIMEZONE;

    use crate::performance::{ChangePoint, LabelCounts, MetricsRevision};

    fn key(end: i64) -> WindowKey {
        WindowKey {
            model_id: "churn".into(),
            model_version: Some("v1".into()),
            start: end - 10,
            end,
        }
    }

    /// `rows` rows of `model_metrics` for the window ending at `end`.
    fn revision(end: i64, rows: usize) -> MetricsRevision {
        let schema = model_metrics_schema();
        let columns = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match (f.data_type(), f.is_nullable()) {
                    (t, true) => new_null_array(t, rows),
                    (DataType::Timestamp(..), _) => Arc::new(
                        TimestampMillisecondArray::from(vec![end; rows])
                            .with_timezone(ARROW_TIMEZONE),
                    ),
                    (DataType::Utf8, _) => Arc::new(StringArray::from(vec!["x"; rows])),
                    (DataType::UInt32, _) => Arc::new(UInt32Array::from(vec![0; rows])),
                    (DataType::UInt64, _) => Arc::new(UInt64Array::from(vec![1; rows])),
                    (DataType::Float64, _) => Arc::new(Float64Array::from(vec![0.5; rows])),
                    (DataType::Boolean, _) => Arc::new(BooleanArray::from(vec![false; rows])),
                    (other, _) => panic!("a model_metrics column of type {other}"),
                }
            })
            .collect();
        MetricsRevision {
            key: key(end),
            revision: 0,
            is_final: false,
            predictions: 4,
            labeled: 3,
            batch: RecordBatch::try_new(schema, columns).expect("rows"),
        }
    }

    #[test]
    fn a_report_becomes_tables_whose_revisions_keep_their_own_rows() {
        let out = PerformanceOutput {
            revisions: vec![revision(10, 2), revision(20, 3)],
            change_points: vec![ChangePoint {
                model_id: "churn".into(),
                model_version: None,
                metric: "error_rate",
                detector: "adwin",
                event_time: 7,
                detected_at: 9,
                statistic: 0.25,
                observations: 40,
            }],
            label_stats: vec![("churn".into(), 0, 10, LabelCounts::default(), 5)],
        };
        let rows = Emitted::try_from(out).expect("tables");
        let names: Vec<&str> = rows.tables.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [MODEL_METRICS, CHANGE_POINTS, LABEL_STATS]);
        assert_eq!(
            rows.table(MODEL_METRICS).map(RecordBatch::num_rows),
            Some(5)
        );
        let revised: Vec<(i64, Vec<Option<i64>>)> = rows
            .revisions()
            .map(|(r, b)| {
                let ends = (0..b.num_rows()).map(|i| cell::time(&b, "window_end", i));
                (r.key.end, ends.collect())
            })
            .collect();
        assert_eq!(
            revised,
            [(10, vec![Some(10); 2]), (20, vec![Some(20); 3])],
            "each revision's rows, in order"
        );
        let metrics = rows.table(MODEL_METRICS).expect("metrics");
        assert_eq!(cell::bool(metrics, "final", 0), Some(false));
        assert_eq!(cell::bool(metrics, "model_id", 0), None, "not a boolean");
        let points = rows.table(CHANGE_POINTS).expect("change points");
        assert_eq!(cell::text(points, "detector", 0), Some("adwin"));
        assert_eq!(cell::text(points, "model_version", 0), None);
        assert_eq!(cell::time(points, "detected_at", 0), Some(9));
        assert_eq!(cell::f64(points, "statistic", 0), Some(0.25));
        let counts = rows.table(LABEL_STATS).expect("label counts");
        assert_eq!(cell::u64(counts, "waiting", 0), Some(5));
        assert_eq!(cell::u64(counts, "no such column", 0), None);
    }

    #[test]
    fn a_closed_window_is_about_itself_and_has_no_revisions() {
        let rows = Emitted::from(ClosedWindow {
            key: key(10),
            events: 3,
            tables: vec![(MODEL_METRICS.to_owned(), revision(10, 1).batch)],
        });
        assert!(matches!(rows.about, About::Closed { events: 3, .. }));
        assert_eq!(rows.revisions().count(), 0);
        let empty = Emitted::try_from(PerformanceOutput::default()).expect("tables");
        assert!(empty.tables.is_empty());
        assert_eq!(empty.revisions().count(), 0);
    }
}
