//! `driftwatch rules test`: the examples a rule file carries (`[[test]]`),
//! each a set of table rows, a window, and the alert rows expected,
//! evaluated offline on a session of their own.

use std::collections::BTreeSet;
use std::path::PathBuf;

use arrow::datatypes::SchemaRef;
use serde_json::Value;

use crate::engine::{Engine, Limits};
use crate::error::{Error, Result, data};
use crate::eval::{AlertInstance, Evaluator};
use crate::rules::{LoadedRule, RuleFiles, RuleTest, WindowRef, check_rule};
use crate::tables::{TableDef, Tables};

/// The outcome of one example.
#[derive(Debug)]
pub struct TestOutcome {
    /// The file.
    pub file: PathBuf,
    /// The example's name.
    pub name: String,
    /// What did not match (empty: passed).
    pub problems: Vec<String>,
}

fn parse_time(text: &str, what: &str) -> Result<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| Error::Refused(format!("{what}: {text:?} is not an RFC 3339 time: {e}")))
}

fn to_json(table: &toml::Table) -> Value {
    serde_json::to_value(table).unwrap_or(Value::Null)
}

/// Rows of a table given as TOML tables, as Arrow rows of `schema`.
fn batch(schema: &SchemaRef, rows: &[toml::Table]) -> Result<arrow::array::RecordBatch> {
    let values: Vec<Value> = rows.iter().map(to_json).collect();
    json_batch(schema, &values)
}

/// Rows of driftwatch's table `table` given as JSON objects (see
/// [`json_batch`]); an unknown table is refused.
pub fn table_rows(table: &str, rows: &[Value]) -> Result<arrow::array::RecordBatch> {
    let schema = crate::tables::standard_schemas()
        .into_iter()
        .find(|(name, _)| name == table)
        .map(|(_, schema)| schema)
        .ok_or_else(|| Error::Refused(format!("no table {table}")))?;
    json_batch(&schema, rows)
}

/// Rows given as JSON objects (times as RFC 3339 text), as Arrow rows of
/// `schema`; a key the schema does not have is refused.
pub fn json_batch(schema: &SchemaRef, rows: &[Value]) -> Result<arrow::array::RecordBatch> {
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_strict_mode(true)
        .build_decoder()
        .map_err(data("test rows"))?;
    decoder
        .serialize(rows)
        .map_err(|e| Error::Refused(e.to_string()))?;
    decoder
        .flush()
        .map_err(|e| Error::Refused(e.to_string()))?
        .ok_or_else(|| Error::Refused("no rows".into()))
}

/// Whether an actual value matches the expected one: numbers within 1e-9
/// (relative), times as instants, everything else exactly.
fn same(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Number(a), Value::Number(e)) => match (a.as_f64(), e.as_f64()) {
            (Some(a), Some(e)) => (a - e).abs() <= 1e-9 * e.abs().max(1.0),
            _ => false,
        },
        (Value::String(a), Value::String(e)) => {
            a == e
                || matches!(
                    (
                        chrono::DateTime::parse_from_rfc3339(a),
                        chrono::DateTime::parse_from_rfc3339(e)
                    ),
                    (Ok(a), Ok(e)) if a == e
                )
        }
        _ => actual == expected,
    }
}

/// An instance as an alert row: `rule`, the columns, `value`.
pub fn alert_row(i: &AlertInstance) -> serde_json::Map<String, Value> {
    let mut row: serde_json::Map<String, Value> = i.columns.clone().into_iter().collect();
    row.insert("rule".into(), Value::String(i.rule.clone()));
    if let Some(v) = i.value {
        row.insert(
            "value".into(),
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        );
    }
    row
}

/// Whether an alert row is the expected one: every expected column equal,
/// every other column null (TOML has no null: leave such columns out).
pub fn matches(
    actual: &serde_json::Map<String, Value>,
    expected: &serde_json::Map<String, Value>,
) -> bool {
    expected
        .iter()
        .all(|(k, e)| actual.get(k).is_some_and(|a| same(a, e)))
        && actual
            .iter()
            .all(|(k, a)| expected.contains_key(k) || a.is_null())
}

fn run_one(
    defs: &[TableDef],
    file: &std::path::Path,
    rules: &[crate::rules::Rule],
    test: &RuleTest,
    actions: &BTreeSet<String>,
) -> Result<Vec<String>> {
    let tables = Tables::new(defs.to_vec(), None)?;
    let engine = Engine::new(tables, Limits::default())?;
    for (name, rows) in &test.tables {
        let table = engine.tables().get(name).ok_or_else(|| {
            Error::Refused(format!(
                "no table {name} (tables: {})",
                engine.table_names().join(", ")
            ))
        })?;
        if rows.is_empty() {
            continue;
        }
        let b = batch(&table.def().schema, rows)
            .map_err(|e| Error::Refused(format!("rows of {name}: {e}")))?;
        table.push(b)?;
    }
    let chosen: Vec<&crate::rules::Rule> = match &test.rule {
        Some(name) => {
            let r = rules
                .iter()
                .find(|r| &r.name == name)
                .ok_or_else(|| Error::Refused(format!("no rule {name} in this file")))?;
            vec![r]
        }
        None => rules.iter().collect(),
    };
    let mut loaded: Vec<LoadedRule> = Vec::new();
    for r in chosen {
        loaded.push(check_rule(&engine, file, r, actions)?);
    }
    let window = WindowRef {
        model_id: test.window.model_id.clone(),
        model_version: test.window.model_version.clone(),
        start: parse_time(&test.window.window_start, "window.window_start")?,
        end: parse_time(&test.window.window_end, "window.window_end")?,
    };
    let single = test.rule.clone();
    let mut evaluator = Evaluator::new(engine, loaded)?;
    let evaluation = evaluator.evaluate(&window)?;
    let mut problems: Vec<String> = evaluation
        .failures
        .iter()
        .map(|f| format!("rule {} failed: {}", f.rule, f.message))
        .collect();
    let mut actual: Vec<serde_json::Map<String, Value>> =
        evaluation.instances.iter().map(alert_row).collect();
    for expected in &test.expect {
        let mut expected = match to_json(expected) {
            Value::Object(m) => m,
            _ => continue,
        };
        if let (Some(rule), false) = (&single, expected.contains_key("rule")) {
            expected.insert("rule".into(), Value::String(rule.clone()));
        }
        match actual.iter().position(|a| matches(a, &expected)) {
            Some(i) => {
                actual.remove(i);
            }
            None => problems.push(format!(
                "expected alert row not produced: {}",
                Value::Object(expected)
            )),
        }
    }
    for a in actual {
        problems.push(format!("unexpected alert row: {}", Value::Object(a)));
    }
    Ok(problems)
}

/// Runs every example of `files` on tables `defs`.
pub fn run_tests(
    defs: &[TableDef],
    files: &RuleFiles,
    actions: &BTreeSet<String>,
) -> Vec<TestOutcome> {
    let mut out = Vec::new();
    for (file, rules, tests) in &files.files {
        for test in tests {
            let problems =
                run_one(defs, file, rules, test, actions).unwrap_or_else(|e| vec![e.to_string()]);
            out.push(TestOutcome {
                file: file.clone(),
                name: test.name.clone(),
                problems,
            });
        }
    }
    out
}

/// The number of rows of `table` that `engine` sees (live and history).
pub fn count_rows(engine: &Engine, table: &str) -> Result<i64> {
    let (_, batches) = engine.query(&format!("SELECT count(*) AS n FROM {table}"))?;
    batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
        })
        .map(|c| c.value(0))
        .ok_or_else(|| data(format!("counting {table}"))("no count returned"))
}
