//! Each model's latest figures, read from the process-wide SQL engine (the
//! live rows of every pipeline and the history): what the service reports
//! in `DATA_DIR/metrics.json` (and the HTTP API's metrics will serve).

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType, UInt64Type};
use driftwatch_sql::Engine;
use serde::Serialize;

use crate::error::context;
use crate::{Error, Result};

/// One model's figures, over all its versions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelFigures {
    /// Windows closed (live and in the history).
    pub windows: u64,
    /// Predictions in those windows.
    pub predictions: u64,
    /// End of its latest closed window (RFC 3339).
    pub latest_window_end: Option<String>,
    /// Features compared with the reference in the latest window with drift figures.
    pub features_compared: Option<u64>,
    /// Of those, drifted.
    pub features_drifted: Option<u64>,
    /// Accuracy of its latest window with at least [`MIN_REPORTED_COVERAGE`]
    /// of its predictions labelled (latest revision): a window's first
    /// labels are too few to judge it by.
    pub accuracy: Option<f64>,
    /// Share of that window's predictions labelled.
    pub label_coverage: Option<f64>,
    /// End of that window (RFC 3339).
    pub accuracy_window_end: Option<String>,
    /// Accuracy estimated before the labels in its latest window with an
    /// estimate (versions with a label-free reference).
    pub estimated_accuracy: Option<f64>,
}

/// Share of a window's predictions labelled from which its accuracy is
/// reported as the model's latest (as the bundled rules judge a window).
pub const MIN_REPORTED_COVERAGE: f64 = 0.5;

const QUERY: &str = "\
WITH w AS (
  SELECT model_id, count(*) AS windows, sum(events) AS predictions, max(window_end) AS latest
  FROM window_summary GROUP BY model_id),
d AS (
  SELECT model_id, features_compared, features_drifted FROM (
    SELECT model_id, features_compared, features_drifted,
      row_number() OVER (PARTITION BY model_id ORDER BY window_end DESC) AS r
    FROM drift_summary WHERE NOT is_reference) WHERE r = 1),
a AS (
  SELECT model_id, value AS accuracy, label_coverage, window_end FROM (
    SELECT model_id, value, label_coverage, window_end,
      row_number() OVER (PARTITION BY model_id ORDER BY window_end DESC, revision DESC) AS r
    FROM model_metrics WHERE metric = 'accuracy' AND class IS NULL
      AND label_coverage >= 0.5) WHERE r = 1),
e AS (
  SELECT model_id, value AS estimated FROM (
    SELECT model_id, value,
      row_number() OVER (PARTITION BY model_id ORDER BY window_end DESC) AS r
    FROM estimated_metrics WHERE metric = 'accuracy') WHERE r = 1)
SELECT w.model_id, w.windows, w.predictions, w.latest,
  d.features_compared, d.features_drifted, a.accuracy, a.label_coverage, e.estimated,
  a.window_end
FROM w LEFT JOIN d ON w.model_id = d.model_id LEFT JOIN a ON w.model_id = a.model_id
  LEFT JOIN e ON w.model_id = e.model_id
ORDER BY w.model_id";

/// The figures of every model the engine's tables hold.
pub fn model_figures(engine: &Engine) -> Result<BTreeMap<String, ModelFigures>> {
    let (_, batches) = engine
        .query(QUERY)
        .map_err(context("reading the models' figures"))?;
    let mut out = BTreeMap::new();
    for b in &batches {
        for row in 0..b.num_rows() {
            let Some(model) = text(b, 0, row) else {
                continue;
            };
            out.insert(
                model,
                ModelFigures {
                    windows: int(b, 1, row)?.unwrap_or(0),
                    predictions: int(b, 2, row)?.unwrap_or(0),
                    latest_window_end: time(b, 3, row)?.map(driftwatch_ingest::format_time),
                    features_compared: int(b, 4, row)?,
                    features_drifted: int(b, 5, row)?,
                    accuracy: float(b, 6, row),
                    label_coverage: float(b, 7, row),
                    estimated_accuracy: float(b, 8, row),
                    accuracy_window_end: time(b, 9, row)?.map(driftwatch_ingest::format_time),
                },
            );
        }
    }
    Ok(out)
}

const WINDOWS: &str = "\
SELECT w.model_version, w.window_start, w.window_end, w.events, w.score_mean,
  d.features_compared, d.features_drifted, a.value AS accuracy, a.label_coverage
FROM window_summary w
LEFT JOIN (SELECT * FROM drift_summary WHERE NOT is_reference) d
  ON d.model_id = w.model_id AND (d.model_version IS NOT DISTINCT FROM w.model_version)
  AND d.window_start = w.window_start AND d.window_end = w.window_end
LEFT JOIN (SELECT model_id, model_version, window_start, window_end, value, label_coverage
    FROM model_metrics_latest WHERE metric = 'accuracy' AND class IS NULL) a
  ON a.model_id = w.model_id AND (a.model_version IS NOT DISTINCT FROM w.model_version)
  AND a.window_start = w.window_start AND a.window_end = w.window_end
WHERE w.model_id = $model_id AND w.window_end > $window_start AND w.window_start < $window_end
ORDER BY w.window_start, w.model_version";

/// The widest span of event times a query is asked about (ms since the
/// epoch, the years 1685 to 2255): timestamps compared in nanoseconds
/// overflow past it, and `i64::MIN`/`i64::MAX` as bounds matched no row.
pub const ALL_TIME: (i64, i64) = (-9_000_000_000_000, 9_000_000_000_000);

/// The closed windows of `model` that overlap `[from, to)` (ms since the
/// epoch), oldest first, one row each: `model_version`, `window_start`,
/// `window_end`, `events`, `score_mean`, `features_compared`,
/// `features_drifted`, `accuracy` and `label_coverage` (latest revision).
/// At most the engine's `max_rows`.
pub fn model_windows(engine: &Engine, model: &str, from: i64, to: i64) -> Result<Vec<RecordBatch>> {
    let window = driftwatch_sql::WindowRef {
        model_id: model.to_owned(),
        model_version: None,
        start: from.clamp(ALL_TIME.0, ALL_TIME.1),
        end: to.clamp(ALL_TIME.0, ALL_TIME.1),
    };
    window_query(engine, WINDOWS, &window, "the windows of a model")
}

/// The `model_versions` rows of `model` (one per version, in the order
/// they were first seen).
pub fn model_versions(engine: &Engine, model: &str) -> Result<Vec<RecordBatch>> {
    let window = driftwatch_sql::WindowRef {
        model_id: model.to_owned(),
        model_version: None,
        start: 0,
        end: 0,
    };
    window_query(
        engine,
        "SELECT * EXCLUDE (model_id, time, revision) FROM model_versions \
         WHERE model_id = $model_id ORDER BY first_seen, model_version",
        &window,
        "the versions of a model",
    )
}

/// Runs `sql` with `window`'s placeholders bound (`$model_id`,
/// `$model_version`, `$window_start`, `$window_end`), `what` naming it in
/// errors.
pub(crate) fn window_query(
    engine: &Engine,
    sql: &str,
    window: &driftwatch_sql::WindowRef,
    what: &'static str,
) -> Result<Vec<RecordBatch>> {
    // typed as a rule's placeholders are: a placeholder left to guess its
    // type from `w.model_id = $model_id AND …` is not planned
    let plan = engine
        .prepared(sql, &driftwatch_sql::WindowRef::param_types())
        .map_err(context(what))?;
    let params = window.params();
    let (_, batches) = engine
        .execute_all(&[driftwatch_sql::Query::Prepared(&plan, &params)])
        .pop()
        .unwrap_or_else(|| unreachable!("one query, one result"))
        .map_err(context(what))?;
    Ok(batches)
}

const THE_WINDOW: &str = "model_id = $model_id AND (model_version IS NOT DISTINCT FROM $model_version) \
    AND window_start = $window_start AND window_end = $window_end";

/// The drifted features of an alert's evidence: at most this many, the
/// most drifted first.
pub const EVIDENCE_FEATURES: usize = 10;

/// What the window of alert `a` showed, for its notifications: `window`,
/// `metrics` (the latest revision's overall values, with `predictions`,
/// `labeled`, `label_coverage`, `revision`, `final`), `drift` (features
/// compared, warning and drifted, drift share, whether the window is the
/// reference), `drifted_features` (at most [`EVIDENCE_FEATURES`], drift
/// before warning, largest PSI first, with their statistics) and, when the
/// API's `public_url` is known, `links` to the model, its windows around
/// the alert's and the alerts.
pub fn evidence(
    engine: &Engine,
    a: &driftwatch_triggers::AlertView,
    public_url: Option<&str>,
) -> Result<serde_json::Value> {
    use serde_json::{Map, Value, json};
    let window = driftwatch_sql::WindowRef {
        model_id: a.model_id.clone(),
        model_version: a.model_version.clone(),
        start: a.window_start,
        end: a.window_end,
    };
    let metrics_sql = format!(
        "SELECT metric, value, predictions, labeled, label_coverage, revision, \"final\" \
         FROM model_metrics_latest WHERE {THE_WINDOW} AND class IS NULL AND predicted_class IS NULL \
         ORDER BY metric"
    );
    let mut metrics: Option<Map<String, Value>> = None;
    for row in driftwatch_sql::eval::rows_json(&window_query(
        engine,
        &metrics_sql,
        &window,
        "an alert's metrics",
    )?)? {
        let m = metrics.get_or_insert_with(|| {
            let mut m = Map::new();
            for k in [
                "predictions",
                "labeled",
                "label_coverage",
                "revision",
                "final",
            ] {
                m.insert(k.into(), row.get(k).cloned().unwrap_or(Value::Null));
            }
            m.insert("values".into(), Value::Object(Map::new()));
            m
        });
        if let (Some(Value::String(name)), Some(Value::Object(values))) =
            (row.get("metric"), m.get_mut("values"))
        {
            values.insert(
                name.clone(),
                row.get("value").cloned().unwrap_or(Value::Null),
            );
        }
    }
    let drift_sql = format!(
        "SELECT features_compared, features_warning, features_drifted, drift_share, is_reference \
         FROM drift_summary WHERE {THE_WINDOW}"
    );
    let drift = driftwatch_sql::eval::rows_json(&window_query(
        engine,
        &drift_sql,
        &window,
        "an alert's drift summary",
    )?)?
    .into_iter()
    .next()
    .map(Value::Object);
    let features_sql = format!(
        "SELECT feature, kind, level, count, reference_count, ks, wasserstein_norm, psi, js, chi2, \
           p_value, unseen_share \
         FROM feature_drift WHERE {THE_WINDOW} AND level IN ('drift', 'warning') \
         ORDER BY CASE level WHEN 'drift' THEN 0 ELSE 1 END, psi DESC NULLS LAST, feature \
         LIMIT {EVIDENCE_FEATURES}"
    );
    let features: Vec<Value> = driftwatch_sql::eval::rows_json(&window_query(
        engine,
        &features_sql,
        &window,
        "an alert's drifted features",
    )?)?
    .into_iter()
    .map(|mut row| {
        // statistics that do not apply to the feature's kind are left out
        row.retain(|_, v| !v.is_null());
        Value::Object(row)
    })
    .collect();
    let mut out = json!({
        "window": {
            "start": driftwatch_ingest::format_time(a.window_start),
            "end": driftwatch_ingest::format_time(a.window_end),
        },
        "metrics": metrics.map(Value::Object),
        "drift": drift,
        "drifted_features": features,
    });
    if let Some(base) = public_url {
        let base = base.trim_end_matches('/');
        let model = url_segment(&a.model_id);
        let span = a.window_end - a.window_start;
        out["links"] = json!({
            "model": format!("{base}/v1/models/{model}"),
            "windows": format!(
                "{base}/v1/models/{model}/windows?from={}&to={}",
                driftwatch_ingest::format_time(a.window_start - 6 * span),
                driftwatch_ingest::format_time(a.window_end + 6 * span),
            ),
            "alerts": format!("{base}/v1/alerts"),
        });
    }
    Ok(out)
}

/// `text` as one URL path segment: unreserved characters as they are,
/// every other byte percent-encoded.
fn url_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One turn of the retraining loop, as `model_versions` and the other
/// tables tell it: an alert on the old version asked for retraining, the
/// new version appeared, the old one was retired (its alerts resolved),
/// the new one had its first healthy window. Times are RFC 3339 text as
/// the tables give them.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RetrainLoop {
    /// The model.
    pub model_id: String,
    /// The version the alert was about.
    pub old_version: Option<String>,
    /// The version that followed.
    pub new_version: Option<String>,
    /// The alert's rule.
    pub alert_rule: Option<String>,
    /// The job the receiver named.
    pub retrain_job: Option<String>,
    /// The request's idempotency key.
    pub retrain_key: Option<String>,
    /// Start of the new version's first window.
    pub first_seen: Option<String>,
    /// When the old version was retired.
    pub retired_at: Option<String>,
    /// Alerts of the old version that resolved.
    pub resolved_alerts: Option<u64>,
    /// The new version's first healthy window.
    pub healthy_window_start: Option<String>,
    /// See `healthy_window_start`.
    pub healthy_window_end: Option<String>,
    /// Accuracy in that window (classifiers).
    pub healthy_accuracy: Option<f64>,
    /// The old version's accuracy in its latest window with half its labels in.
    pub old_accuracy: Option<f64>,
}

const LOOPS: &str = "\
WITH acc AS (
  SELECT model_id, model_version, window_end, value, label_coverage
  FROM model_metrics_latest WHERE metric = 'accuracy' AND class IS NULL),
old_acc AS (
  SELECT model_id, model_version, value FROM (
    SELECT model_id, model_version, value,
      row_number() OVER (PARTITION BY model_id, model_version ORDER BY window_end DESC) AS r
    FROM acc WHERE label_coverage >= 0.5) WHERE r = 1),
resolved AS (
  SELECT model_id, model_version, count(*) AS resolved_alerts
  FROM alerts WHERE state = 'resolved' GROUP BY model_id, model_version)
SELECT n.model_id, n.previous_version AS old_version, n.model_version AS new_version,
  n.alert_rule, n.retrain_job, n.retrain_key, n.first_seen, o.superseded_at AS retired_at,
  r.resolved_alerts, n.first_healthy_window_start AS healthy_window_start,
  n.first_healthy_window_end AS healthy_window_end, h.value AS healthy_accuracy,
  oa.value AS old_accuracy
FROM model_versions n
LEFT JOIN model_versions o
  ON o.model_id = n.model_id AND (o.model_version IS NOT DISTINCT FROM n.previous_version)
LEFT JOIN resolved r
  ON r.model_id = n.model_id AND (r.model_version IS NOT DISTINCT FROM n.previous_version)
LEFT JOIN acc h
  ON h.model_id = n.model_id AND (h.model_version IS NOT DISTINCT FROM n.model_version)
  AND h.window_end = n.first_healthy_window_end
LEFT JOIN old_acc oa
  ON oa.model_id = n.model_id AND (oa.model_version IS NOT DISTINCT FROM n.previous_version)
WHERE n.retrain_key IS NOT NULL
ORDER BY n.model_id, n.first_seen";

/// Every turn of the retraining loop the engine's tables hold (a new
/// version traced back to a retraining request), oldest first per model.
pub fn retraining_loops(engine: &Engine) -> Result<Vec<RetrainLoop>> {
    let (_, batches) = engine
        .query(LOOPS)
        .map_err(context("reading the retraining loops"))?;
    driftwatch_sql::eval::rows_json(&batches)?
        .into_iter()
        .map(|row| {
            serde_json::from_value(serde_json::Value::Object(row))
                .map_err(|e| Error::Stopped(format!("internal: a retraining loop row: {e}")))
        })
        .collect()
}

fn unexpected(column: usize, b: &RecordBatch) -> Error {
    Error::Stopped(format!(
        "internal: the models' figures, column {column}: unexpected type {}",
        b.column(column).data_type()
    ))
}

fn text(b: &RecordBatch, column: usize, row: usize) -> Option<String> {
    let c = b.column(column).as_string_opt::<i32>()?;
    (!c.is_null(row)).then(|| c.value(row).to_owned())
}

fn int(b: &RecordBatch, column: usize, row: usize) -> Result<Option<u64>> {
    let c = b.column(column);
    if c.is_null(row) {
        return Ok(None);
    }
    if let Some(c) = c.as_primitive_opt::<Int64Type>() {
        return Ok(u64::try_from(c.value(row)).ok());
    }
    if let Some(c) = c.as_primitive_opt::<UInt64Type>() {
        return Ok(Some(c.value(row)));
    }
    Err(unexpected(column, b))
}

fn time(b: &RecordBatch, column: usize, row: usize) -> Result<Option<i64>> {
    let c = b.column(column);
    if c.is_null(row) {
        return Ok(None);
    }
    c.as_primitive_opt::<TimestampMillisecondType>()
        .map(|c| Some(c.value(row)))
        .ok_or_else(|| unexpected(column, b))
}

fn float(b: &RecordBatch, column: usize, row: usize) -> Option<f64> {
    let c = b.column(column).as_primitive_opt::<Float64Type>()?;
    (!c.is_null(row)).then(|| c.value(row))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use driftwatch_detectors::{About, Emitted};
    use driftwatch_ingest::synth::{Synth, SynthConfig};

    use super::*;
    use crate::{Pipeline, WindowSink, alerting};

    /// Windows and predictions per model, as the sinks saw them.
    #[derive(Default, Clone)]
    struct PerModel(Arc<Mutex<BTreeMap<String, (u64, u64)>>>);

    impl WindowSink for PerModel {
        fn emit(&mut self, rows: &Emitted) -> Result<()> {
            if let About::Closed { key, events } = &rows.about {
                let mut m = self.0.lock().expect("not poisoned");
                let e = m.entry(key.model_id.to_string()).or_default();
                e.0 += 1;
                e.1 += events;
            }
            Ok(())
        }
    }

    /// Refusals (the stream's late predictions) are not looked at here.
    #[derive(Clone, Default)]
    struct NoDeadLetters;

    impl driftwatch_ingest::DeadLetterSink for NoDeadLetters {
        fn send(&mut self, _: &driftwatch_ingest::Rejected) -> driftwatch_ingest::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> driftwatch_ingest::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_process_engine_reads_the_rows_of_every_partition_live_and_in_the_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = crate::pipeline::tests::config(dir.path());
        config.sql.history = true;
        let process = alerting::process_engine(&config).expect("engine");
        let seen = PerModel::default();
        // two partitions, each with its own models, its pipeline and its
        // history writer
        let mut partitions: Vec<Pipeline> = (0..2)
            .map(|p| {
                let mut pipeline = Pipeline::new(
                    &config,
                    Box::new(NoDeadLetters),
                    "none".into(),
                    vec![Box::new(seen.clone())],
                    None,
                    None,
                )
                .expect("pipeline");
                let runner = alerting::runner(&config, None, &format!("g-p{p}"), Some(&process))
                    .expect("runner");
                pipeline.set_rules(runner).expect("rules");
                pipeline
            })
            .collect();
        let events: Vec<Vec<u8>> = Synth::new(SynthConfig::for_events(20_000, 3))
            .take(20_000)
            .map(|e| {
                let mut buf = Vec::new();
                driftwatch_ingest::encode_json(&e, &mut buf);
                buf
            })
            .collect();
        for (seq, bytes) in events.iter().enumerate() {
            // models keyed to partitions, as Kafka keys them
            let text = std::str::from_utf8(bytes).expect("utf-8");
            let p = usize::from(text.contains("\"model_id\":\"churn\""));
            partitions[p]
                .handle_bytes(seq as u64, bytes)
                .expect("handled");
            if seq == 12_000 {
                // a checkpoint moves every partition's rows so far to the history
                for pipeline in &mut partitions {
                    pipeline.snapshot().expect("snapshot");
                    pipeline.checkpoint_saved().expect("saved");
                }
            }
        }
        for pipeline in &mut partitions {
            pipeline.close_all().expect("closed");
        }
        let history = dir.path().join("history/window_summary");
        assert!(
            std::fs::read_dir(&history).expect("history").count() > 0,
            "some windows are in the history"
        );
        let figures = model_figures(&process).expect("figures");
        let seen = seen.0.lock().expect("not poisoned").clone();
        // the history alone holds some of the windows, not all
        let in_files: u64 = model_figures(&alerting::sql_engine(&config, true).expect("engine"))
            .expect("figures")
            .values()
            .map(|f| f.windows)
            .sum();
        let all: u64 = seen.values().map(|s| s.0).sum();
        assert!(0 < in_files && in_files < all, "{in_files} of {all}");
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(figures.len(), seen.len(), "{figures:?}");
        for (model, (windows, predictions)) in &seen {
            let f = &figures[model];
            assert_eq!(
                (f.windows, f.predictions),
                (*windows, *predictions),
                "{model}"
            );
            assert!(f.latest_window_end.is_some() && f.features_compared.is_some());
            // regression (issue 41, item 3): without `from` (or `to`) the API
            // asked for i64::MIN..i64::MAX and got no window
            let rows: usize = model_windows(&process, model, i64::MIN, i64::MAX)
                .expect("windows")
                .iter()
                .map(RecordBatch::num_rows)
                .sum();
            assert_eq!(rows as u64, *windows, "{model}");
        }
        // a partition given up takes its live rows with it
        let churn = figures["churn"].windows;
        drop(partitions.remove(1));
        let after = model_figures(&process).expect("figures");
        assert!(
            after.get("churn").is_none_or(|f| f.windows < churn),
            "{after:?}"
        );
        assert_eq!(after["fraud"], figures["fraud"]);
    }
}
