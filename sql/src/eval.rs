//! Evaluating rules for a window: each result row is an alert instance,
//! identified by the rule's name and the row's columns other than `value`.
//! What happens to an instance across windows (`for`, `keep_firing_for`)
//! is the alert lifecycle's, in `driftwatch-triggers`; the evaluator keeps
//! only its counters.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringBuilder, TimestampMillisecondBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use driftwatch_ingest::event::ARROW_TIMEZONE;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::engine::{Engine, Prepared, Query};
use crate::error::{Error, Result, data};
use crate::rules::{Hold, LoadedRule, WindowRef};

/// One row of a rule's result: the alert instance, handed to the triggers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertInstance {
    /// The rule.
    pub rule: String,
    /// Its severity.
    pub severity: String,
    /// The row's columns other than `value`, as JSON values (see [`identity`](Self::identity)).
    pub columns: BTreeMap<String, serde_json::Value>,
    /// The rule's labels and the row's columns as text (rule labels win).
    pub labels: BTreeMap<String, String>,
    /// The `value` column, when the rule has one.
    pub value: Option<f64>,
    /// The rule's annotations rendered with the row.
    pub annotations: BTreeMap<String, String>,
    /// Actions to run.
    pub actions: Vec<String>,
    /// The window evaluated.
    pub window: WindowRef,
    /// End of the first window of the current run of windows where the
    /// instance held (the evaluator says this window; the alert lifecycle
    /// counts the run).
    pub active_since: i64,
    /// Consecutive evaluated windows where it held, this one included (the
    /// evaluator says 1; the alert lifecycle counts the run).
    pub windows: u32,
    /// The rule's `for`.
    pub hold_for: Hold,
    /// The rule's `keep_firing_for`.
    pub keep_firing_for: Hold,
}

impl AlertInstance {
    /// The instance's identity within its rule: its columns other than
    /// `value` that are not numbers (text, booleans, times, nulls), as JSON.
    /// Numeric columns are measurements that change from window to window
    /// (a PSI, a label coverage); an alert that holds in the next window
    /// with other figures is the same alert. Cast a numeric key to text to
    /// make it part of the identity.
    pub fn identity(&self) -> String {
        let key: BTreeMap<&String, &serde_json::Value> = self
            .columns
            .iter()
            .filter(|(_, v)| !v.is_number())
            .collect();
        serde_json::to_string(&key).unwrap_or_default()
    }
}

/// A rule that failed for a window.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleFailure {
    /// The rule.
    pub rule: String,
    /// Its file.
    pub file: PathBuf,
    /// The window.
    pub window: WindowRef,
    /// What went wrong.
    pub message: String,
}

/// The result of evaluating every rule for one window.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Instances, rule by rule.
    pub instances: Vec<AlertInstance>,
    /// Rules that ran without failing (with or without instances).
    pub evaluated: Vec<String>,
    /// Rules that failed (the others still ran).
    pub failures: Vec<RuleFailure>,
    /// Microseconds the whole evaluation took.
    pub micros: u64,
}

/// Counters of the evaluations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    /// Windows evaluated.
    pub evaluations: u64,
    /// Instances returned, per rule.
    pub instances: BTreeMap<String, u64>,
    /// Failures, per rule.
    pub errors: BTreeMap<String, u64>,
}

/// The schema of the `rule_errors` table.
pub fn rule_errors_schema() -> SchemaRef {
    let mut fields = driftwatch_detectors::key_fields();
    fields.extend([
        Field::new("rule", DataType::Utf8, false),
        Field::new("file", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
    ]);
    Arc::new(Schema::new(fields))
}

/// The schema of the `alerts` table: the alert history, one row per
/// transition of an alert instance and one per alert of a notification
/// whose delivery ended (written by the triggers).
pub fn alerts_schema() -> SchemaRef {
    let mut fields = driftwatch_detectors::key_fields();
    fields.extend([
        Field::new(
            "time",
            DataType::Timestamp(
                arrow::datatypes::TimeUnit::Millisecond,
                Some(ARROW_TIMEZONE.into()),
            ),
            false,
        ),
        Field::new("rule", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("instance", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("annotations", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, true),
        Field::new("detail", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(fields))
}

fn rule_errors_batch(failures: &[RuleFailure]) -> Result<RecordBatch> {
    let mut models = StringBuilder::new();
    let mut versions = StringBuilder::new();
    let tz = ARROW_TIMEZONE;
    let mut starts = TimestampMillisecondBuilder::new().with_timezone(tz);
    let mut ends = TimestampMillisecondBuilder::new().with_timezone(tz);
    let mut rules = StringBuilder::new();
    let mut files = StringBuilder::new();
    let mut errors = StringBuilder::new();
    for f in failures {
        models.append_value(&f.window.model_id);
        versions.append_option(f.window.model_version.as_deref());
        starts.append_value(f.window.start);
        ends.append_value(f.window.end);
        rules.append_value(&f.rule);
        files.append_value(f.file.display().to_string());
        errors.append_value(&f.message);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(models.finish()),
        Arc::new(versions.finish()),
        Arc::new(starts.finish()),
        Arc::new(ends.finish()),
        Arc::new(rules.finish()),
        Arc::new(files.finish()),
        Arc::new(errors.finish()),
    ];
    RecordBatch::try_new(rule_errors_schema(), columns).map_err(data("rule_errors rows"))
}

/// Rows of `batches` as JSON objects, nulls included.
pub fn rows_json(
    batches: &[RecordBatch],
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(Vec::new());
    for b in batches {
        writer.write(b).map_err(data("rule result rows"))?;
    }
    writer.finish().map_err(data("rule result rows"))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&bytes).map_err(data("rule result rows"))?;
    Ok(rows)
}

/// The rows of a rule's result as instances (before their state is known).
fn instances(
    loaded: &LoadedRule,
    window: &WindowRef,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<AlertInstance>> {
    let rule = &loaded.rule;
    let rows = rows_json(batches)?;
    let mut values: Vec<Option<f64>> = Vec::with_capacity(rows.len());
    if let Ok(i) = schema.index_of("value") {
        for b in batches {
            let v = cast(b.column(i), &DataType::Float64).map_err(data("the value column"))?;
            let v = v.as_primitive::<Float64Type>();
            values.extend(v.iter());
        }
    } else {
        values.resize(rows.len(), None);
    }
    let mut out = Vec::with_capacity(rows.len());
    for (mut row, value) in rows.into_iter().zip(values) {
        let full = serde_json::Value::Object(row.clone());
        row.remove("value");
        let mut labels: BTreeMap<String, String> = row
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect();
        for (k, v) in &rule.labels {
            labels.insert(k.clone(), v.clone());
        }
        let mut annotations = BTreeMap::new();
        for key in rule.annotations.keys() {
            let text = loaded
                .annotations
                .get_template(key)
                .and_then(|t| t.render(&full))
                .map_err(|e| Error::Rule {
                    file: loaded.file.clone(),
                    rule: rule.name.clone(),
                    message: format!("annotation {key}: {e}"),
                })?;
            annotations.insert(key.clone(), text);
        }
        out.push(AlertInstance {
            rule: rule.name.clone(),
            severity: rule.severity.clone(),
            columns: row.into_iter().collect(),
            labels,
            value,
            annotations,
            actions: rule.actions.clone(),
            window: window.clone(),
            active_since: window.end,
            windows: 1,
            hold_for: rule.hold_for,
            keep_firing_for: rule.keep_firing_for,
        });
    }
    Ok(out)
}

/// Rules evaluated over an engine's tables.
#[derive(Debug)]
pub struct Evaluator {
    engine: Engine,
    rules: Vec<LoadedRule>,
    /// Each rule's plan optimised once, where it can be.
    prepared: Vec<Option<Prepared>>,
    stats: RuleStats,
}

impl Evaluator {
    /// Evaluates `rules` (checked by [`crate::rules::check_all`] on `engine`).
    pub fn new(engine: Engine, rules: Vec<LoadedRule>) -> Result<Self> {
        let types = WindowRef::param_types();
        let prepared = rules
            .iter()
            .map(|r| match engine.prepare(&r.plan, &types) {
                Ok(p) => Some(p),
                Err(e) => {
                    // planned again at each evaluation: slower, same rows
                    debug!(rule = %r.rule.name, "rule not prepared: {e}");
                    None
                }
            })
            .collect();
        Ok(Evaluator {
            engine,
            rules,
            prepared,
            stats: RuleStats::default(),
        })
    }

    /// The engine (its tables receive the window rows).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The rules.
    pub fn rules(&self) -> impl Iterator<Item = &LoadedRule> {
        self.rules.iter()
    }

    /// Counters so far.
    pub fn stats(&self) -> &RuleStats {
        &self.stats
    }

    /// Evaluates every rule for `window`. A failing rule is reported (log,
    /// counter, a row in `rule_errors`) and the others still run.
    pub fn evaluate(&mut self, window: &WindowRef) -> Result<Evaluation> {
        self.evaluate_some(window, |_| true)
    }

    /// Evaluates the rules `which` selects for `window`.
    pub fn evaluate_some(
        &mut self,
        window: &WindowRef,
        which: impl Fn(&LoadedRule) -> bool,
    ) -> Result<Evaluation> {
        let started = Instant::now();
        let mut out = Evaluation::default();
        let params = window.params();
        let (chosen, queries): (Vec<&LoadedRule>, Vec<Query>) = self
            .rules
            .iter()
            .zip(&self.prepared)
            .filter(|(r, _)| which(r))
            .map(|(r, prepared)| match prepared {
                Some(p) => (r, Query::Prepared(p, &params)),
                None => (r, Query::Plan(&r.plan, Some(&params))),
            })
            .unzip();
        let results = self.engine.execute_all(&queries);
        for (loaded, result) in chosen.into_iter().zip(results) {
            let rule = &loaded.rule;
            let result =
                result.and_then(|(schema, batches)| instances(loaded, window, &schema, &batches));
            match result {
                Ok(found) => {
                    out.evaluated.push(rule.name.clone());
                    *self.stats.instances.entry(rule.name.clone()).or_default() +=
                        found.len() as u64;
                    out.instances.extend(found);
                }
                Err(e) => {
                    // the failure names the rule and its file already
                    let message = match e {
                        Error::Query(q) => q.to_string(),
                        Error::Rule { message, .. } => message,
                        other => other.to_string(),
                    };
                    warn!(rule = %rule.name, model = %window.model_id, window_end = window.end, "rule failed: {message}");
                    *self.stats.errors.entry(rule.name.clone()).or_default() += 1;
                    out.failures.push(RuleFailure {
                        rule: rule.name.clone(),
                        file: loaded.file.clone(),
                        window: window.clone(),
                        message,
                    });
                }
            }
        }
        if !out.failures.is_empty() {
            let batch = rule_errors_batch(&out.failures)?;
            self.engine.tables().push("rule_errors", &batch)?;
        }
        self.stats.evaluations += 1;
        out.micros = started.elapsed().as_micros() as u64;
        Ok(out)
    }

    /// The evaluation state to checkpoint: the counters.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.stats).map_err(data("rule state"))
    }

    /// Continues from a [`snapshot`](Self::snapshot).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        self.stats = saved_stats(bytes)?;
        Ok(())
    }
}

/// The counters of a [`Evaluator::snapshot`]. A snapshot of an earlier
/// build also holds the runs `for` counted, which the alert lifecycle
/// keeps now: they are left, and such runs start again.
fn saved_stats(bytes: &[u8]) -> Result<RuleStats> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Saved {
        Stats(RuleStats),
        WithRuns(serde::de::IgnoredAny, RuleStats),
    }
    match serde_json::from_slice(bytes).map_err(data("rule state"))? {
        Saved::Stats(stats) | Saved::WithRuns(_, stats) => Ok(stats),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(window: &WindowRef, feature: &str) -> AlertInstance {
        AlertInstance {
            rule: "r".into(),
            severity: "warning".into(),
            columns: [("feature".to_owned(), serde_json::json!(feature))].into(),
            labels: BTreeMap::new(),
            value: None,
            annotations: BTreeMap::new(),
            actions: Vec::new(),
            window: window.clone(),
            active_since: window.end,
            windows: 1,
            hold_for: Hold::Windows(2),
            keep_firing_for: Hold::default(),
        }
    }

    fn at(end: i64) -> WindowRef {
        WindowRef {
            model_id: "m".into(),
            model_version: None,
            start: end - 10,
            end,
        }
    }

    #[test]
    fn numeric_columns_are_figures_not_part_of_the_identity() {
        let with_psi = |end: i64, psi: f64| {
            let mut i = instance(&at(end), "x");
            i.columns.insert("psi".into(), serde_json::json!(psi));
            i
        };
        let (a, b) = (with_psi(10, 0.31), with_psi(20, 0.47));
        assert_eq!(a.identity(), "{\"feature\":\"x\"}");
        assert_eq!(
            a.identity(),
            b.identity(),
            "the same alert with another PSI"
        );
        assert_ne!(a.identity(), instance(&at(10), "y").identity());
    }

    #[test]
    fn a_snapshot_of_an_earlier_build_with_its_runs_restores_the_counters() {
        let stats = RuleStats {
            evaluations: 3,
            instances: [("r".to_owned(), 2)].into(),
            errors: BTreeMap::new(),
        };
        let now = serde_json::to_vec(&stats).expect("encode");
        assert_eq!(saved_stats(&now).expect("this build's"), stats);
        let earlier = r#"[[[["r","m",null],{"{\"feature\":\"x\"}":{"since":10,"last":20,"windows":2}}]],{"evaluations":3,"instances":{"r":2},"errors":{}}]"#;
        assert_eq!(saved_stats(earlier.as_bytes()).expect("earlier"), stats);
        assert!(saved_stats(b"[1]").is_err());
    }
}
