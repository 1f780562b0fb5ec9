//! The `model_version_log` table and the `model_versions` view over it:
//! each model version's life as the engine tracks it (first and last
//! window, reference, the retraining request that led to it, what replaced
//! it, its first healthy window). A row is written whenever a version's
//! record changes (at least once per closed window of it); the view keeps
//! each version's latest row.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use driftwatch_ingest::event::arrow_time_type;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The view's name.
pub const VIEW: &str = "model_versions";

/// The table's name.
pub const TABLE: &str = "model_version_log";

/// The view: each version's latest row.
pub const VIEW_SQL: &str = "SELECT * EXCLUDE (latest_rank) FROM (SELECT *, row_number() OVER (\
     PARTITION BY model_id, model_version ORDER BY revision DESC) AS latest_rank \
     FROM model_version_log) WHERE latest_rank = 1";

/// One model version's record (times are ms since the epoch, event time
/// unless said otherwise).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionRow {
    /// The model.
    pub model_id: String,
    /// The version (`None`: events without one).
    pub model_version: Option<String>,
    /// Event time of this row's change.
    pub time: i64,
    /// What changed: `first seen`, `window`, `retired`, `healthy`, `serving again`.
    pub change: String,
    /// Rows written for this version so far (this one included).
    pub revision: u64,
    /// Start of its first closed window.
    pub first_seen: i64,
    /// End of its latest closed window.
    pub last_seen: i64,
    /// Closed windows.
    pub windows: u64,
    /// Predictions in them.
    pub predictions: u64,
    /// `first window` (its own first window is its reference) or `stored
    /// profile` (a file or an upload); `None` without the drift detector.
    pub reference: Option<String>,
    /// Start of the reference's span.
    pub reference_start: Option<i64>,
    /// The version of the model seen before it.
    pub previous_version: Option<String>,
    /// The rule of the alert whose retraining request led to it.
    pub alert_rule: Option<String>,
    /// That alert's fingerprint.
    pub alert_fingerprint: Option<String>,
    /// The action that sent the request.
    pub retrain_action: Option<String>,
    /// The request's idempotency key.
    pub retrain_key: Option<String>,
    /// The job or run the receiver named.
    pub retrain_job: Option<String>,
    /// How the request was matched: `named` (the receiver's answer named
    /// this version) or `latest` (the model's latest request when the
    /// version appeared, the answer naming none).
    pub retrain_match: Option<String>,
    /// Clock time the receiver took the request.
    pub retrain_delivered_at: Option<i64>,
    /// The version that replaced it.
    pub superseded_by: Option<String>,
    /// End of the first window of that version with none of this one.
    pub superseded_at: Option<i64>,
    /// Its first window with enough labels and no alert pending or firing.
    pub first_healthy_window_start: Option<i64>,
    /// See `first_healthy_window_start`.
    pub first_healthy_window_end: Option<i64>,
}

/// The table's schema.
pub fn schema() -> SchemaRef {
    let text = |name: &str, null: bool| Field::new(name, DataType::Utf8, null);
    let time = |name: &str, null: bool| Field::new(name, arrow_time_type(), null);
    let count = |name: &str| Field::new(name, DataType::UInt64, false);
    Arc::new(Schema::new(vec![
        text("model_id", false),
        text("model_version", true),
        time("time", false),
        text("change", false),
        count("revision"),
        time("first_seen", false),
        time("last_seen", false),
        count("windows"),
        count("predictions"),
        text("reference", true),
        time("reference_start", true),
        text("previous_version", true),
        text("alert_rule", true),
        text("alert_fingerprint", true),
        text("retrain_action", true),
        text("retrain_key", true),
        text("retrain_job", true),
        text("retrain_match", true),
        time("retrain_delivered_at", true),
        text("superseded_by", true),
        time("superseded_at", true),
        time("first_healthy_window_start", true),
        time("first_healthy_window_end", true),
    ]))
}

/// `rows` as one batch of the table.
pub fn batch(rows: &[VersionRow]) -> Result<RecordBatch> {
    let fail = |e: arrow::error::ArrowError| Error::Data {
        context: "model_version_log rows".into(),
        message: e.to_string(),
    };
    let schema = schema();
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
        .build_decoder()
        .map_err(fail)?;
    decoder.serialize(rows).map_err(fail)?;
    Ok(decoder
        .flush()
        .map_err(fail)?
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, StringArray};
    use arrow::datatypes::{TimestampMillisecondType, UInt64Type};

    #[test]
    fn rows_become_a_batch_of_the_schema_with_times_and_nulls() {
        let rows = [
            VersionRow {
                model_id: "churn".into(),
                model_version: Some("v13".into()),
                time: 7_200_000,
                change: "first seen".into(),
                revision: 1,
                first_seen: 3_600_000,
                last_seen: 7_200_000,
                windows: 1,
                predictions: 900,
                reference: Some("first window".into()),
                retrain_job: Some("run-1".into()),
                ..VersionRow::default()
            },
            VersionRow {
                model_id: "eta".into(),
                ..VersionRow::default()
            },
        ];
        let b = batch(&rows).expect("batch");
        assert_eq!(b.schema(), schema());
        assert_eq!(b.num_rows(), 2);
        let versions = b
            .column_by_name("model_version")
            .expect("column")
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("text");
        assert_eq!(versions.value(0), "v13");
        assert!(versions.is_null(1));
        let first = b.column_by_name("first_seen").expect("column");
        assert_eq!(
            first.as_primitive::<TimestampMillisecondType>().value(0),
            3_600_000
        );
        let predictions = b.column_by_name("predictions").expect("column");
        assert_eq!(predictions.as_primitive::<UInt64Type>().value(0), 900);
        assert!(
            b.column_by_name("superseded_at")
                .expect("column")
                .is_null(0)
        );
    }
}
