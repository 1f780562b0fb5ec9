//! Evaluating rules for a window: each result row is an alert instance,
//! identified by the rule's name and the row's columns other than `value`.
//! The evaluator remembers, per rule and model version, which instances
//! held at the last evaluated window and since when, so that `for` can be
//! counted across windows (and across restarts: the state is checkpointed).

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
    /// End of the first window of the current run of windows where the instance held.
    pub active_since: i64,
    /// Consecutive evaluated windows where it held (this one included).
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

    /// Whether the condition has held for the rule's `for`.
    pub fn held_long_enough(&self) -> bool {
        match self.hold_for {
            Hold::Windows(n) => self.windows >= n,
            Hold::Duration(d) => self.window.end - self.active_since >= d.as_millis() as i64,
        }
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

/// Where an instance stands: since when it held, in how many windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Active {
    since: i64,
    last: i64,
    windows: u32,
}

/// (rule, model, version).
type StateKey = (String, String, Option<String>);

/// Instances holding per (rule, model, version), by identity.
type State = BTreeMap<StateKey, BTreeMap<String, Active>>;

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

fn identity(instance: &AlertInstance) -> String {
    instance.identity()
}

/// Rules evaluated over an engine's tables.
#[derive(Debug)]
pub struct Evaluator {
    engine: Engine,
    rules: Vec<LoadedRule>,
    /// Each rule's plan optimised once, where it can be.
    prepared: Vec<Option<Prepared>>,
    state: State,
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
            state: State::new(),
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
                    let key = (
                        rule.name.clone(),
                        window.model_id.clone(),
                        window.model_version.clone(),
                    );
                    let held = self.state.entry(key).or_default();
                    out.instances.extend(track(held, window, found));
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

    /// The evaluation state to checkpoint.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        // JSON objects need string keys: the state goes as a list of entries
        let entries: Vec<_> = self.state.iter().collect();
        serde_json::to_vec(&(entries, &self.stats)).map_err(data("rule state"))
    }

    /// Continues from a [`snapshot`](Self::snapshot).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        type Entries = Vec<(StateKey, BTreeMap<String, Active>)>;
        let (state, stats): (Entries, RuleStats) =
            serde_json::from_slice(bytes).map_err(data("rule state"))?;
        self.state = state.into_iter().collect();
        self.stats = stats;
        Ok(())
    }
}

/// Updates the instances holding for one rule and model version with an
/// evaluation at `window`; returns `found` with `active_since` and `windows`
/// filled in. An instance missing from a later window stops holding; an
/// evaluation of an earlier window (metrics revised by late labels) only
/// reports, it does not move the state back.
fn track(
    held: &mut BTreeMap<String, Active>,
    window: &WindowRef,
    mut found: Vec<AlertInstance>,
) -> Vec<AlertInstance> {
    let latest = held.values().map(|a| a.last).max().unwrap_or(i64::MIN);
    if window.end < latest {
        for i in &mut found {
            if let Some(a) = held.get(&identity(i)) {
                i.active_since = a.since.min(window.end);
            }
        }
        return found;
    }
    let mut next = BTreeMap::new();
    for i in &mut found {
        let id = identity(i);
        let active = match held.get(&id) {
            Some(a) if a.last == window.end => a.clone(),
            Some(a) => Active {
                since: a.since,
                last: window.end,
                windows: a.windows.saturating_add(1),
            },
            None => Active {
                since: window.end,
                last: window.end,
                windows: 1,
            },
        };
        i.active_since = active.since;
        i.windows = active.windows;
        next.insert(id, active);
    }
    *held = next;
    found
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
        let mut held = BTreeMap::new();
        let with_psi = |end: i64, psi: f64| {
            let mut i = instance(&at(end), "x");
            i.columns.insert("psi".into(), serde_json::json!(psi));
            i
        };
        track(&mut held, &at(10), vec![with_psi(10, 0.31)]);
        let a = track(&mut held, &at(20), vec![with_psi(20, 0.47)]);
        assert_eq!(a[0].windows, 2, "the same alert with another PSI");
        assert_eq!(a[0].identity(), "{\"feature\":\"x\"}");
    }

    #[test]
    fn an_instance_counts_consecutive_windows_and_restarts_after_a_gap() {
        let mut held = BTreeMap::new();
        let a = track(&mut held, &at(10), vec![instance(&at(10), "x")]);
        assert_eq!((a[0].windows, a[0].active_since), (1, 10));
        assert!(!a[0].held_long_enough());
        // the same window evaluated again (a metrics revision) does not count twice
        let a = track(&mut held, &at(10), vec![instance(&at(10), "x")]);
        assert_eq!(a[0].windows, 1);
        let a = track(
            &mut held,
            &at(20),
            vec![instance(&at(20), "x"), instance(&at(20), "y")],
        );
        assert_eq!((a[0].windows, a[0].active_since), (2, 10));
        assert!(a[0].held_long_enough());
        assert_eq!(a[1].windows, 1);
        // a late revision of window 10 reports without moving the state back
        let a = track(&mut held, &at(10), vec![instance(&at(10), "y")]);
        assert_eq!(a[0].windows, 1);
        assert_eq!(held["{\"feature\":\"x\"}"].windows, 2);
        // x gone at window 30: it starts over when it comes back
        track(&mut held, &at(30), vec![instance(&at(30), "y")]);
        let a = track(&mut held, &at(40), vec![instance(&at(40), "x")]);
        assert_eq!((a[0].windows, a[0].active_since), (1, 40));
    }
}
