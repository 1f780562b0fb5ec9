//! Rows of the `alerts` table: one per transition of an alert, and one per
//! alert of a notification once its delivery ended (`delivered` or `failed`).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use driftwatch_sql::alerts_schema;

use crate::alert::AlertView;
use crate::error::{Result, state};

/// One row.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    /// The alert.
    pub alert: AlertView,
    /// `pending`, `firing`, `resolved`, `inactive`, `delivered`, `failed`.
    pub state: String,
    /// When (event time for transitions, clock time for deliveries).
    pub time: i64,
    /// The action, for deliveries.
    pub action: Option<String>,
    /// What the receiver said or why it failed; the job id when known.
    pub detail: Option<String>,
}

/// The rows as a batch of the `alerts` table.
pub fn alerts_batch(rows: &[AlertRow]) -> Result<RecordBatch> {
    let tz = driftwatch_sql::ARROW_TIMEZONE;
    let mut models = StringBuilder::new();
    let mut versions = StringBuilder::new();
    let mut starts = TimestampMillisecondBuilder::new().with_timezone(tz);
    let mut ends = TimestampMillisecondBuilder::new().with_timezone(tz);
    let mut times = TimestampMillisecondBuilder::new().with_timezone(tz);
    let mut rules = StringBuilder::new();
    let mut severities = StringBuilder::new();
    let mut states = StringBuilder::new();
    let mut instances = StringBuilder::new();
    let mut values = Float64Builder::new();
    let mut annotations = StringBuilder::new();
    let mut actions = StringBuilder::new();
    let mut details = StringBuilder::new();
    for r in rows {
        let a = &r.alert;
        models.append_value(&a.model_id);
        versions.append_option(a.model_version.as_deref());
        starts.append_value(a.window_start);
        ends.append_value(a.window_end);
        times.append_value(r.time);
        rules.append_value(&a.rule);
        severities.append_value(&a.severity);
        states.append_value(&r.state);
        instances.append_value(&a.identity);
        values.append_option(a.value);
        annotations.append_value(serde_json::to_string(&a.annotations).unwrap_or_default());
        actions.append_option(r.action.as_deref());
        details.append_option(r.detail.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(models.finish()),
        Arc::new(versions.finish()),
        Arc::new(starts.finish()),
        Arc::new(ends.finish()),
        Arc::new(times.finish()),
        Arc::new(rules.finish()),
        Arc::new(severities.finish()),
        Arc::new(states.finish()),
        Arc::new(instances.finish()),
        Arc::new(values.finish()),
        Arc::new(annotations.finish()),
        Arc::new(actions.finish()),
        Arc::new(details.finish()),
    ];
    RecordBatch::try_new(alerts_schema(), columns).map_err(state("alerts rows"))
}
