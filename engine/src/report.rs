//! What a model's report shows, read from the SQL engine (the history, and
//! in the service the live rows of every pipeline): accuracy and label
//! coverage over time, the alerts' firing spans, drift per feature over
//! time, current against reference distributions of the most drifted
//! features, data-quality trends, and the alert → retraining → new version
//! timeline. The binary draws it ([`Report`] is plain data).
//!
//! Every series is cut into at most [`MAX_COLUMNS`] time buckets (one per
//! window while the windows fit), so a report of a long span stays small
//! and each query returns at most a few thousand rows.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use driftwatch_detectors::drift::FeatureSketches;
use driftwatch_detectors::sketch::{CategoricalSketch, NumericSketch};
use driftwatch_sql::{Engine, WindowRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::context;
use crate::figures::{RetrainLoop, window_query};
use crate::{DataDir, Error, Result};

/// Time buckets (heatmap columns, chart points) at most.
pub const MAX_COLUMNS: i64 = 240;
/// Features in the drift heatmap at most (the most drifted first).
pub const MAX_HEATMAP_FEATURES: usize = 30;
/// Features whose distributions are drawn.
pub const DISTRIBUTIONS: usize = 6;
/// Features in each data-quality chart at most.
pub const QUALITY_FEATURES: usize = 5;
/// Bins of a numeric feature's histogram.
pub const HISTOGRAM_BINS: usize = 24;
/// Categories of a categorical feature's bars (the rest together as "other").
pub const CATEGORY_BARS: usize = 12;

/// The span asked for: `[from, to)` in ms since the epoch, either end open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// Windows ending after this.
    pub from: Option<i64>,
    /// Windows starting before this.
    pub to: Option<i64>,
}

/// A model's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The model.
    pub model_id: String,
    /// Start of the first window shown (ms).
    pub from: i64,
    /// End of the last window shown (ms).
    pub to: i64,
    /// Width of one time bucket (ms): a window's length, or several.
    pub bucket_ms: i64,
    /// Windows in the span (all versions).
    pub windows: u64,
    /// Predictions in them.
    pub predictions: u64,
    /// The performance figure shown: `accuracy` (classifiers), `mae`
    /// (regression), or empty when the model has neither.
    pub metric: String,
    /// Per bucket and version: predictions, the metric and label coverage.
    pub performance: Vec<PerformancePoint>,
    /// Firing spans of the model's alerts.
    pub alerts: Vec<AlertSpan>,
    /// Features of the heatmap, the most drifted first.
    pub drift_features: Vec<String>,
    /// Features compared but left out of the heatmap (the least drifted).
    pub drift_features_left_out: usize,
    /// Heatmap cells.
    pub drift: Vec<DriftCell>,
    /// Distributions of the most drifted features in the window of the
    /// span with the most drifted features (the latest of those).
    pub distributions: Vec<Distribution>,
    /// Missing rate of the features that miss the most.
    pub missing: Vec<QualityPoint>,
    /// Share outside the reference's range of the features with the most.
    pub out_of_range: Vec<QualityPoint>,
    /// Per bucket, the largest missing rate and out-of-range share of any
    /// feature, and the type mismatches of all.
    pub quality: Vec<QualityOverall>,
    /// The model's versions (`model_versions` rows).
    pub versions: Vec<VersionRow>,
    /// The turns of the retraining loop.
    pub loops: Vec<RetrainLoop>,
}

/// Performance of one version in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformancePoint {
    /// Bucket start (ms).
    pub start: i64,
    /// The version.
    pub model_version: Option<String>,
    /// Predictions.
    pub predictions: u64,
    /// The report's metric over the labelled predictions (latest
    /// revisions; a labelled-weighted mean of the windows').
    pub value: Option<f64>,
    /// Labelled share of the predictions.
    pub label_coverage: Option<f64>,
    /// The accuracy estimated before the labels (`estimated_metrics`,
    /// versions with a label-free reference; a prediction-weighted mean of
    /// the windows').
    #[serde(default)]
    pub estimated: Option<f64>,
}

/// An alert of the model from its first firing to its end (or still firing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertSpan {
    /// The rule.
    pub rule: String,
    /// Its severity.
    pub severity: String,
    /// The version it was about.
    pub model_version: Option<String>,
    /// The instance's columns (JSON text).
    pub instance: String,
    /// When it started firing (ms, event time).
    pub start: i64,
    /// When it resolved (`None`: still firing).
    pub end: Option<i64>,
}

/// One heatmap cell: a feature in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftCell {
    /// The feature.
    pub feature: String,
    /// Bucket start (ms).
    pub start: i64,
    /// The largest PSI of its windows.
    pub psi: Option<f64>,
    /// The worst level: `drift`, `warning`, `ok` (or `reference`, …).
    pub level: String,
    /// Windows in the bucket.
    pub windows: u64,
}

/// One feature's distribution, current against reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// The feature.
    pub feature: String,
    /// `numeric` or `categorical`.
    pub kind: String,
    /// Its level and PSI in the window.
    pub level: String,
    /// PSI.
    pub psi: Option<f64>,
    /// The version.
    pub model_version: Option<String>,
    /// The window (ms).
    pub window_start: i64,
    /// Its end.
    pub window_end: i64,
    /// Start of the reference window; `None`: a stored profile.
    pub reference_start: Option<i64>,
    /// Values in the window and in the reference.
    pub count: u64,
    /// Values in the reference.
    pub reference_count: u64,
    /// Shares per bin, each side summing to 1.
    pub bins: Vec<Bin>,
}

/// One bin of a [`Distribution`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    /// A category, or the numeric bin's range.
    pub label: String,
    /// Numeric bins: lower edge (`None`: open below).
    pub lo: Option<f64>,
    /// Numeric bins: upper edge (`None`: open above).
    pub hi: Option<f64>,
    /// Share of the reference's values.
    pub reference: f64,
    /// Share of the window's values.
    pub current: f64,
}

/// A data-quality figure of one feature in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityPoint {
    /// The feature.
    pub feature: String,
    /// Bucket start (ms).
    pub start: i64,
    /// The largest value of its windows.
    pub value: f64,
}

/// Data quality over every feature in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityOverall {
    /// Bucket start (ms).
    pub start: i64,
    /// The largest missing rate of any feature.
    pub missing_rate: f64,
    /// The largest out-of-range share of any feature.
    pub out_of_range_share: f64,
    /// Values of the other kind than the reference's, all features.
    pub type_mismatches: u64,
}

/// A model version as `model_versions` has it (times in ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRow {
    /// The version.
    pub model_version: Option<String>,
    /// Start of its first window.
    pub first_seen: Option<i64>,
    /// End of its latest window.
    pub last_seen: Option<i64>,
    /// Its windows.
    pub windows: Option<u64>,
    /// The version before it.
    pub previous_version: Option<String>,
    /// The rule whose alert asked for its retraining.
    pub alert_rule: Option<String>,
    /// The retraining job.
    pub retrain_job: Option<String>,
    /// When the retraining request was delivered.
    pub retrain_delivered_at: Option<i64>,
    /// The version that replaced it.
    pub superseded_by: Option<String>,
    /// When.
    pub superseded_at: Option<i64>,
    /// End of its first healthy window.
    pub first_healthy_window_end: Option<i64>,
}

/// The rows of the model's windows overlapping the span (the placeholders
/// bound to the model and the span).
const IN_SPAN: &str =
    "model_id = $model_id AND window_end > $window_start AND window_start < $window_end";

/// The far ends of time a span left open stands for.
const EARLIEST: i64 = 0;
const LATEST: i64 = 253_402_300_799_999;

/// Reads `model`'s report over `span` from `engine`; stored reference
/// profiles are read from `data`. A model without windows in the span is
/// [`Error::Input`].
pub fn gather(engine: &Engine, data: &DataDir, model: &str, span: Span) -> Result<Report> {
    let asked = WindowRef {
        model_id: model.to_owned(),
        model_version: None,
        start: span.from.unwrap_or(EARLIEST),
        end: span.to.unwrap_or(LATEST),
    };
    let in_span = IN_SPAN;
    let extent = rows(
        engine,
        &format!(
            "SELECT CAST(min(window_start) AS BIGINT) AS first, \
               CAST(max(window_end) AS BIGINT) AS last, \
               CAST(min(window_end - window_start) AS BIGINT) AS shortest, \
               count(*) AS windows, sum(events) AS predictions \
             FROM window_summary WHERE {in_span}"
        ),
        &asked,
        "a report's windows",
    )?;
    let extent = extent.first().cloned().unwrap_or_default();
    let (Some(from), Some(to)) = (int(&extent, "first"), int(&extent, "last")) else {
        return Err(Error::Input(format!(
            "no closed windows of model {model:?}{}",
            match span {
                Span {
                    from: None,
                    to: None,
                } => String::new(),
                _ => " in that span".into(),
            }
        )));
    };
    let bucket_ms = bucket_width(from, to, int(&extent, "shortest").unwrap_or(1));
    let window = WindowRef {
        start: from,
        end: to,
        ..asked
    };
    let bucket = format!("CAST((CAST(window_start AS BIGINT) - {from}) / {bucket_ms} AS BIGINT)");
    let start_of = |bucket_number: i64| from + bucket_number * bucket_ms;

    let metric = rows(
        engine,
        &format!(
            "SELECT min(metric) AS metric FROM model_metrics_latest \
             WHERE {in_span} AND metric IN ('accuracy', 'mae') AND class IS NULL"
        ),
        &window,
        "a report's metric",
    )?
    .first()
    .and_then(|r| text(r, "metric"))
    .unwrap_or_default();
    let performance = rows(
        engine,
        &format!(
            "WITH w AS (SELECT model_version, {bucket} AS b, events FROM window_summary WHERE {in_span}), \
             a AS (SELECT model_version, {bucket} AS b, value, labeled, predictions FROM model_metrics_latest \
               WHERE {in_span} AND metric = '{metric}' AND class IS NULL AND predicted_class IS NULL), \
             wp AS (SELECT model_version, b, sum(events) AS predictions FROM w GROUP BY model_version, b), \
             ap AS (SELECT model_version, b, sum(value * labeled) / sum(labeled) AS value, \
               CAST(sum(labeled) AS DOUBLE) / sum(predictions) AS label_coverage \
               FROM a GROUP BY model_version, b), \
             ep AS (SELECT model_version, {bucket} AS b, \
               sum(value * predictions) / sum(predictions) AS estimated FROM estimated_metrics \
               WHERE {in_span} AND metric = 'accuracy' AND '{metric}' = 'accuracy' GROUP BY model_version, b) \
             SELECT wp.model_version, wp.b, wp.predictions, ap.value, ap.label_coverage, ep.estimated \
             FROM wp LEFT JOIN ap ON (wp.model_version IS NOT DISTINCT FROM ap.model_version) AND wp.b = ap.b \
             LEFT JOIN ep ON (wp.model_version IS NOT DISTINCT FROM ep.model_version) AND wp.b = ep.b \
             ORDER BY wp.b, wp.model_version"
        ),
        &window,
        "a report's performance",
    )?
    .into_iter()
    .map(|r| PerformancePoint {
        start: start_of(int(&r, "b").unwrap_or(0)),
        model_version: text(&r, "model_version"),
        predictions: int(&r, "predictions").unwrap_or(0).max(0) as u64,
        value: float(&r, "value").filter(|v| v.is_finite()),
        label_coverage: float(&r, "label_coverage").filter(|v| v.is_finite()),
        estimated: float(&r, "estimated").filter(|v| v.is_finite()),
    })
    .collect();

    let alerts = alert_spans(engine, &window)?;

    // the heatmap: the most drifted features, worst level per bucket
    let ranked = rows(
        engine,
        &format!(
            "SELECT feature, sum(CASE WHEN level = 'drift' THEN 1 ELSE 0 END) AS drifted, \
               sum(CASE WHEN level = 'warning' THEN 1 ELSE 0 END) AS warned, max(psi) AS psi \
             FROM feature_drift WHERE {in_span} GROUP BY feature \
             ORDER BY drifted DESC, warned DESC, psi DESC NULLS LAST, feature"
        ),
        &window,
        "a report's features",
    )?;
    let drift_features: Vec<String> = ranked
        .iter()
        .filter_map(|r| text(r, "feature"))
        .take(MAX_HEATMAP_FEATURES)
        .collect();
    let drift_features_left_out = ranked.len().saturating_sub(drift_features.len());
    let drift = if drift_features.is_empty() {
        Vec::new()
    } else {
        rows(
            engine,
            &format!(
                "SELECT feature, {bucket} AS b, max(psi) AS psi, count(*) AS windows, \
                   max(CASE level WHEN 'drift' THEN 3 WHEN 'warning' THEN 2 WHEN 'ok' THEN 1 ELSE 0 END) AS worst, \
                   max(level) AS any_level \
                 FROM feature_drift WHERE {in_span} AND feature IN ({}) GROUP BY feature, b",
                sql_list(&drift_features)
            ),
            &window,
            "a report's drift",
        )?
        .into_iter()
        .map(|r| DriftCell {
            feature: text(&r, "feature").unwrap_or_default(),
            start: start_of(int(&r, "b").unwrap_or(0)),
            psi: float(&r, "psi").filter(|v| v.is_finite()),
            level: match int(&r, "worst") {
                Some(3) => "drift".into(),
                Some(2) => "warning".into(),
                Some(1) => "ok".into(),
                _ => text(&r, "any_level").unwrap_or_default(),
            },
            windows: int(&r, "windows").unwrap_or(0).max(0) as u64,
        })
        .collect()
    };

    let distributions = distributions(engine, data, &window)?;
    let missing = quality(engine, &window, &bucket, "missing_rate", from, bucket_ms)?;
    let out_of_range = quality(
        engine,
        &window,
        &bucket,
        "out_of_range_share",
        from,
        bucket_ms,
    )?;

    let quality = rows(
        engine,
        &format!(
            "SELECT {bucket} AS b, max(missing_rate) AS missing_rate, \
               max(out_of_range_share) AS out_of_range_share, sum(type_mismatches) AS type_mismatches \
             FROM data_quality WHERE {in_span} GROUP BY b ORDER BY b"
        ),
        &window,
        "a report's data quality",
    )?
    .into_iter()
    .map(|r| QualityOverall {
        start: start_of(int(&r, "b").unwrap_or(0)),
        missing_rate: float(&r, "missing_rate").filter(|v| v.is_finite()).unwrap_or(0.0),
        out_of_range_share: float(&r, "out_of_range_share")
            .filter(|v| v.is_finite())
            .unwrap_or(0.0),
        type_mismatches: int(&r, "type_mismatches").unwrap_or(0).max(0) as u64,
    })
    .collect();

    let versions = rows(
        engine,
        "SELECT model_version, CAST(first_seen AS BIGINT) AS first_seen, \
           CAST(last_seen AS BIGINT) AS last_seen, windows, previous_version, alert_rule, \
           retrain_job, CAST(retrain_delivered_at AS BIGINT) AS retrain_delivered_at, superseded_by, \
           CAST(superseded_at AS BIGINT) AS superseded_at, \
           CAST(first_healthy_window_end AS BIGINT) AS first_healthy_window_end \
         FROM model_versions WHERE model_id = $model_id ORDER BY first_seen, model_version",
        &window,
        "a report's versions",
    )?
    .into_iter()
    .map(|r| VersionRow {
        model_version: text(&r, "model_version"),
        first_seen: int(&r, "first_seen"),
        last_seen: int(&r, "last_seen"),
        windows: int(&r, "windows").map(|v| v.max(0) as u64),
        previous_version: text(&r, "previous_version"),
        alert_rule: text(&r, "alert_rule"),
        retrain_job: text(&r, "retrain_job"),
        retrain_delivered_at: int(&r, "retrain_delivered_at"),
        superseded_by: text(&r, "superseded_by"),
        superseded_at: int(&r, "superseded_at"),
        first_healthy_window_end: int(&r, "first_healthy_window_end"),
    })
    .collect();
    let loops = crate::figures::retraining_loops(engine)?
        .into_iter()
        .filter(|l| l.model_id == model)
        .collect();

    Ok(Report {
        model_id: model.to_owned(),
        from,
        to,
        bucket_ms,
        metric,
        windows: int(&extent, "windows").unwrap_or(0).max(0) as u64,
        predictions: int(&extent, "predictions").unwrap_or(0).max(0) as u64,
        performance,
        alerts,
        drift_features,
        drift_features_left_out,
        drift,
        distributions,
        missing,
        out_of_range,
        quality,
        versions,
        loops,
    })
}

/// A time bucket's width: the shortest window's, or as many of them as
/// `[from, to)` needs to take at most [`MAX_COLUMNS`] buckets.
fn bucket_width(from: i64, to: i64, shortest: i64) -> i64 {
    let window = shortest.max(1);
    // whole windows per bucket, so that buckets start where windows do
    let per_bucket = ((to - from).max(1) as u64).div_ceil((window * MAX_COLUMNS) as u64);
    window * per_bucket.max(1) as i64
}

/// The alerts of the window's model that fired in its span, each from its
/// firing to its end (resolved or back to inactive), in order of start.
fn alert_spans(engine: &Engine, window: &WindowRef) -> Result<Vec<AlertSpan>> {
    let transitions = rows(
        engine,
        "SELECT rule, severity, model_version, instance, state, CAST(time AS BIGINT) AS t \
         FROM alerts WHERE model_id = $model_id AND state IN ('firing', 'resolved', 'inactive') \
           AND time < $window_end \
         ORDER BY time, rule, instance, state",
        window,
        "a report's alerts",
    )?;
    let transitions = transitions.into_iter().filter_map(|r| {
        Some(Transition {
            rule: text(&r, "rule")?,
            severity: text(&r, "severity").unwrap_or_default(),
            model_version: text(&r, "model_version"),
            instance: text(&r, "instance")?,
            state: text(&r, "state")?,
            time: int(&r, "t")?,
        })
    });
    Ok(spans_of(transitions, window.start))
}

/// One row of `alerts` that starts or ends a firing span.
#[derive(Debug, Clone, PartialEq)]
struct Transition {
    rule: String,
    severity: String,
    model_version: Option<String>,
    instance: String,
    state: String,
    time: i64,
}

/// Firing spans from transitions in time order: a span opens at `firing`
/// (a repeated `firing` keeps it) and ends at `resolved` or `inactive`;
/// spans ended by `from` are left out.
fn spans_of(transitions: impl Iterator<Item = Transition>, from: i64) -> Vec<AlertSpan> {
    let mut open: BTreeMap<(String, Option<String>, String), AlertSpan> = BTreeMap::new();
    let mut spans = Vec::new();
    for t in transitions {
        let key = (t.rule.clone(), t.model_version.clone(), t.instance.clone());
        if t.state == "firing" {
            open.entry(key).or_insert(AlertSpan {
                rule: t.rule,
                severity: t.severity,
                model_version: t.model_version,
                instance: t.instance,
                start: t.time,
                end: None,
            });
        } else if let Some(mut span) = open.remove(&key) {
            span.end = Some(t.time);
            spans.push(span);
        }
    }
    spans.extend(open.into_values());
    spans.retain(|s| s.end.is_none_or(|e| e > from));
    spans.sort_by(|a, b| (a.start, &a.rule).cmp(&(b.start, &b.rule)));
    spans
}

/// The largest `column` of `data_quality` per bucket, for the
/// [`QUALITY_FEATURES`] features where it is largest (those where it is
/// ever above zero).
fn quality(
    engine: &Engine,
    window: &WindowRef,
    bucket: &str,
    column: &str,
    from: i64,
    bucket_ms: i64,
) -> Result<Vec<QualityPoint>> {
    let in_span = IN_SPAN;
    let sql = format!(
        "WITH top AS (SELECT feature FROM data_quality WHERE {in_span} GROUP BY feature \
           HAVING max({column}) > 0 ORDER BY max({column}) DESC, feature LIMIT {QUALITY_FEATURES}) \
         SELECT feature, {bucket} AS b, max({column}) AS value FROM data_quality \
         WHERE {in_span} AND feature IN (SELECT feature FROM top) GROUP BY feature, b \
         ORDER BY feature, b"
    );
    Ok(rows(engine, &sql, window, "a report's data quality")?
        .into_iter()
        .filter_map(|r| {
            Some(QualityPoint {
                feature: text(&r, "feature")?,
                start: from + int(&r, "b")? * bucket_ms,
                value: float(&r, "value").filter(|v| v.is_finite())?,
            })
        })
        .collect())
}

/// The [`DISTRIBUTIONS`] most drifted features of the span's window with
/// the most drifted features (the latest of those), against their
/// reference.
fn distributions(engine: &Engine, data: &DataDir, window: &WindowRef) -> Result<Vec<Distribution>> {
    let latest = rows(
        engine,
        "SELECT model_version, CAST(window_start AS BIGINT) AS s, CAST(window_end AS BIGINT) AS e \
         FROM drift_summary WHERE model_id = $model_id AND window_end > $window_start \
           AND window_start < $window_end AND NOT is_reference \
         ORDER BY features_drifted DESC, features_warning DESC, window_end DESC, window_start DESC \
         LIMIT 1",
        window,
        "a report's latest compared window",
    )?;
    let Some(latest) = latest.first() else {
        return Ok(Vec::new());
    };
    let (Some(start), Some(end)) = (int(latest, "s"), int(latest, "e")) else {
        return Ok(Vec::new());
    };
    let version = text(latest, "model_version");
    let the_window = WindowRef {
        model_id: window.model_id.clone(),
        model_version: version.clone(),
        start,
        end,
    };
    let exact = "model_id = $model_id AND (model_version IS NOT DISTINCT FROM $model_version) \
        AND window_start = $window_start AND window_end = $window_end";
    let features = rows(
        engine,
        &format!(
            "SELECT feature, kind, level, psi, count, reference_count, \
               CAST(reference_start AS BIGINT) AS reference_start \
             FROM feature_drift WHERE {exact} AND level IN ('drift', 'warning', 'ok') \
             ORDER BY CASE level WHEN 'drift' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, \
               psi DESC NULLS LAST, feature LIMIT {DISTRIBUTIONS}"
        ),
        &the_window,
        "a report's most drifted features",
    )?;
    if features.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = features.iter().filter_map(|r| text(r, "feature")).collect();
    let current = sketches(engine, &the_window, &names)?;
    // the reference: its window's sketches, or the stored profile
    let reference_start = features.iter().find_map(|r| int(r, "reference_start"));
    let mut reference: BTreeMap<String, Values> = BTreeMap::new();
    let mut reference_window = None;
    if let Some(rs) = reference_start {
        let found = rows(
            engine,
            "SELECT CAST(window_end AS BIGINT) AS e FROM window_summary \
             WHERE model_id = $model_id AND (model_version IS NOT DISTINCT FROM $model_version) \
               AND window_start = $window_start LIMIT 1",
            &WindowRef {
                start: rs,
                ..the_window.clone()
            },
            "a report's reference window",
        )?;
        if let Some(re) = found.first().and_then(|r| int(r, "e")) {
            reference = sketches(
                engine,
                &WindowRef {
                    start: rs,
                    end: re,
                    ..the_window.clone()
                },
                &names,
            )?;
            reference_window = Some(rs);
        }
    }
    if reference.is_empty() {
        let profile = crate::reference::stored_one(data, &window.model_id, version.as_deref())
            .or_else(|_| crate::reference::stored_one(data, &window.model_id, None));
        if let Ok(profile) = profile {
            for f in profile.features {
                reference.insert(
                    f.name,
                    Values {
                        numeric: NumericSketch::restore(&f.numeric),
                        categorical: f.categorical,
                    },
                );
            }
        }
    }
    let mut out = Vec::new();
    for r in &features {
        let Some(feature) = text(r, "feature") else {
            continue;
        };
        let (Some(cur), Some(refr)) = (current.get(&feature), reference.get(&feature)) else {
            continue;
        };
        let kind = text(r, "kind").unwrap_or_default();
        let bins = if kind == "categorical" {
            category_bins(refr, cur)
        } else {
            numeric_bins(refr, cur)
        };
        if bins.is_empty() {
            continue;
        }
        out.push(Distribution {
            feature,
            kind,
            level: text(r, "level").unwrap_or_default(),
            psi: float(r, "psi").filter(|v| v.is_finite()),
            model_version: version.clone(),
            window_start: start,
            window_end: end,
            reference_start: reference_window,
            count: int(r, "count").unwrap_or(0).max(0) as u64,
            reference_count: int(r, "reference_count").unwrap_or(0).max(0) as u64,
            bins,
        });
    }
    Ok(out)
}

/// A feature's values as its sketches hold them.
struct Values {
    numeric: NumericSketch,
    categorical: CategoricalSketch,
}

/// The sketches of `features` in one window, by feature.
fn sketches(
    engine: &Engine,
    window: &WindowRef,
    features: &[String],
) -> Result<BTreeMap<String, Values>> {
    let batches = window_query(
        engine,
        &format!(
            "SELECT feature, sketch FROM feature_sketches \
             WHERE model_id = $model_id AND (model_version IS NOT DISTINCT FROM $model_version) \
               AND window_start = $window_start AND window_end = $window_end AND feature IN ({})",
            sql_list(features)
        ),
        window,
        "a report's sketches",
    )?;
    let mut out = BTreeMap::new();
    for b in &batches {
        let (Some(names), Some(blobs)) = (
            b.column(0).as_string_opt::<i32>(),
            b.column(1).as_binary_opt::<i32>(),
        ) else {
            return Err(Error::Stopped(
                "internal: feature_sketches columns of unexpected types".into(),
            ));
        };
        for row in 0..b.num_rows() {
            if names.is_null(row) || blobs.is_null(row) {
                continue;
            }
            let sketch = FeatureSketches::from_bytes(blobs.value(row)).map_err(|e| {
                Error::Stopped(format!(
                    "a stored sketch of feature {:?} does not decode: {e}",
                    names.value(row)
                ))
            })?;
            out.insert(
                names.value(row).to_owned(),
                Values {
                    numeric: sketch.numeric,
                    categorical: sketch.categorical,
                },
            );
        }
    }
    Ok(out)
}

/// Equal-width bins over what both sides hold between their 1st and 99th
/// percentiles; the first and last bins take what lies beyond.
fn numeric_bins(reference: &Values, current: &Values) -> Vec<Bin> {
    let (r, c) = (reference.numeric.view(), current.numeric.view());
    if r.count() == 0 || c.count() == 0 {
        return Vec::new();
    }
    let ends = |q: f64| [r.quantile(q), c.quantile(q)].into_iter().flatten();
    let lo = ends(0.01).fold(f64::INFINITY, f64::min);
    let hi = ends(0.99).fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return Vec::new();
    }
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    let width = (hi - lo) / HISTOGRAM_BINS as f64;
    // inner edges; below the first and above the last are the open ends
    let edges: Vec<f64> = (1..HISTOGRAM_BINS).map(|i| lo + width * i as f64).collect();
    let shares = |cdf: Vec<f64>| {
        let mut out = Vec::with_capacity(HISTOGRAM_BINS);
        let mut below = 0.0;
        for p in cdf.into_iter().chain([1.0]) {
            out.push((p - below).max(0.0));
            below = p.max(below);
        }
        out
    };
    let (rs, cs) = (shares(r.cdf_sorted(&edges)), shares(c.cdf_sorted(&edges)));
    (0..HISTOGRAM_BINS)
        .map(|i| {
            let a = lo + width * i as f64;
            let b = a + width;
            Bin {
                label: format!("{} – {}", short(a), short(b)),
                lo: (i > 0).then_some(a),
                hi: (i + 1 < HISTOGRAM_BINS).then_some(b),
                reference: rs[i],
                current: cs[i],
            }
        })
        .collect()
}

/// The categories with the largest share on either side, then "other".
fn category_bins(reference: &Values, current: &Values) -> Vec<Bin> {
    let shares = |s: &Values| -> (BTreeMap<String, f64>, u64) {
        // what the counters cannot vouch for falls in "other"
        let (counts, _) = s.categorical.frequencies();
        let total = s.categorical.total();
        let n = total.max(1) as f64;
        (
            counts
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v as f64 / n))
                .collect(),
            total,
        )
    };
    let ((r, rn), (c, cn)) = (shares(reference), shares(current));
    if rn == 0 || cn == 0 {
        return Vec::new();
    }
    let mut names: Vec<&String> = r.keys().chain(c.keys()).collect();
    names.sort();
    names.dedup();
    let share = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    names.sort_by(|a, b| {
        let big = |k: &str| share(&r, k).max(share(&c, k));
        big(b).total_cmp(&big(a)).then(a.cmp(b))
    });
    let mut bins: Vec<Bin> = names
        .iter()
        .take(CATEGORY_BARS)
        .map(|k| Bin {
            label: (*k).clone(),
            lo: None,
            hi: None,
            reference: share(&r, k),
            current: share(&c, k),
        })
        .collect();
    let (rr, cr) = bins.iter().fold((1.0, 1.0), |(a, b), bin| {
        (a - bin.reference, b - bin.current)
    });
    if names.len() > CATEGORY_BARS || rr > 1e-9 || cr > 1e-9 {
        bins.push(Bin {
            label: "(other)".into(),
            lo: None,
            hi: None,
            reference: rr.max(0.0),
            current: cr.max(0.0),
        });
    }
    bins
}

/// A number short enough for an axis label.
fn short(x: f64) -> String {
    let a = x.abs();
    if a != 0.0 && !(0.01..100_000.0).contains(&a) {
        format!("{x:.2e}")
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// `names` as a SQL list of string literals.
fn sql_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("'{}'", n.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ")
}

type Row = serde_json::Map<String, Value>;

fn rows(engine: &Engine, sql: &str, window: &WindowRef, what: &'static str) -> Result<Vec<Row>> {
    let batches: Vec<RecordBatch> = window_query(engine, sql, window, what)?;
    driftwatch_sql::eval::rows_json(&batches).map_err(context(what))
}

fn text(r: &Row, k: &str) -> Option<String> {
    r.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn int(r: &Row, k: &str) -> Option<i64> {
    r.get(k)
        .and_then(|v| v.as_i64().or_else(|| v.as_u64().map(|u| u as i64)))
}

fn float(r: &Row, k: &str) -> Option<f64> {
    r.get(k).and_then(Value::as_f64)
}

#[cfg(test)]
mod tests {
    use driftwatch_ingest::synth::{Synth, SynthConfig};

    use super::*;
    use crate::{Pipeline, alerting};

    #[test]
    fn buckets_are_windows_until_the_span_needs_wider_ones() {
        let h = 3_600_000;
        assert_eq!(bucket_width(0, 24 * h, h), h);
        assert_eq!(bucket_width(0, 240 * h, h), h);
        // 30 days of hours: 720 windows in 240 buckets of 3 h
        assert_eq!(bucket_width(0, 720 * h, h), 3 * h);
        assert_eq!(bucket_width(0, 718 * h, h), 3 * h);
        assert_eq!(bucket_width(0, 721 * h, h), 4 * h);
        assert_eq!(bucket_width(5, 5, 0), 1);
    }

    fn t(rule: &str, instance: &str, state: &str, time: i64) -> Transition {
        Transition {
            rule: rule.into(),
            severity: "critical".into(),
            model_version: Some("v1".into()),
            instance: instance.into(),
            state: state.into(),
            time,
        }
    }

    #[test]
    fn a_span_runs_from_firing_to_resolved_and_stays_open_while_firing() {
        let spans = spans_of(
            [
                t("a", "x", "firing", 10),
                t("a", "y", "firing", 12),
                t("a", "x", "firing", 15), // a reminder: the same span
                t("a", "x", "resolved", 20),
                t("b", "x", "inactive", 21), // never fired
                t("a", "x", "firing", 30),
                t("a", "old", "firing", 1),
                t("a", "old", "resolved", 5),
            ]
            .into_iter(),
            8,
        );
        let got: Vec<(&str, &str, i64, Option<i64>)> = spans
            .iter()
            .map(|s| (s.rule.as_str(), s.instance.as_str(), s.start, s.end))
            .collect();
        // the span ended at 5 is before the report's start (8)
        assert_eq!(
            got,
            vec![
                ("a", "x", 10, Some(20)),
                ("a", "y", 12, None),
                ("a", "x", 30, None)
            ]
        );
    }

    #[test]
    fn a_report_holds_the_models_windows_drift_and_distributions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = crate::pipeline::tests::config(dir.path());
        config.sql.history = true;
        let process = alerting::process_engine(&config).expect("engine");
        let mut pipeline = Pipeline::new(
            &config,
            Box::new(
                driftwatch_ingest::DeadLetterFile::open(&dir.path().join("dl.jsonl"))
                    .expect("dead letters"),
            ),
            "none".into(),
            Vec::new(),
            None,
            None,
        )
        .expect("pipeline");
        let runner = alerting::runner(&config, None, "report", Some(&process)).expect("runner");
        pipeline.set_rules(runner).expect("rules");
        let mut synth = Synth::new(SynthConfig::for_events(30_000, 7));
        let mut buf = Vec::new();
        for seq in 0..30_000 {
            let Some(e) = synth.next() else { break };
            buf.clear();
            driftwatch_ingest::encode_json(&e, &mut buf);
            pipeline.handle_bytes(seq, &buf).expect("handled");
        }
        pipeline.close_all().expect("closed");
        let data = DataDir::new(dir.path());

        let figures = crate::figures::model_figures(&process).expect("figures");
        let churn = &figures["churn"];
        let report = gather(&process, &data, "churn", Span::default()).expect("report");
        assert_eq!(
            (report.windows, report.predictions),
            (churn.windows, churn.predictions)
        );
        assert_eq!(
            report
                .performance
                .iter()
                .map(|p| p.predictions)
                .sum::<u64>(),
            report.predictions
        );
        assert_eq!(report.metric, "accuracy");
        assert!(report.performance.iter().any(|p| p.value.is_some()));
        for p in &report.performance {
            assert!(p.value.is_none_or(|a| (0.0..=1.0).contains(&a)), "{p:?}");
            assert!(
                p.label_coverage.is_none_or(|c| (0.0..=1.0).contains(&c)),
                "{p:?}"
            );
            assert!(report.from <= p.start && p.start < report.to, "{p:?}");
            assert_eq!((p.start - report.from) % report.bucket_ms, 0);
        }
        assert!(!report.drift_features.is_empty());
        assert!(
            report
                .drift
                .iter()
                .all(|c| report.drift_features.contains(&c.feature))
        );
        assert!(report.drift.iter().any(|c| c.level == "reference"));
        assert!(!report.distributions.is_empty());
        for d in &report.distributions {
            let (r, c) = d
                .bins
                .iter()
                .fold((0.0, 0.0), |(r, c), b| (r + b.reference, c + b.current));
            assert!((r - 1.0).abs() < 1e-6 && (c - 1.0).abs() < 1e-6, "{d:?}");
            assert!(
                d.reference_start.is_some(),
                "the first window is the reference"
            );
        }
        assert_eq!(
            report.quality.len(),
            report
                .performance
                .iter()
                .map(|p| p.start)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        );

        // a span narrows it; a model without windows is the user's error
        // a regression model shows its mean absolute error
        let eta = gather(&process, &data, "eta", Span::default()).expect("report");
        assert_eq!(eta.metric, "mae");
        assert!(
            eta.performance
                .iter()
                .any(|p| p.value.is_some_and(|v| v > 1.0))
        );
        let narrow = gather(
            &process,
            &data,
            "churn",
            Span {
                from: Some(report.from),
                to: Some(report.from + report.bucket_ms),
            },
        )
        .expect("report");
        assert!(narrow.windows >= 1 && narrow.windows < report.windows);
        assert!(matches!(
            gather(&process, &data, "nobody", Span::default()),
            Err(Error::Input(m)) if m.contains("nobody")
        ));
    }
}
