//! Golden test: the bundled rules (`rules/*.toml`) over the demo's recorded
//! window results yield exactly the alert rows that
//! `fixtures/make_golden.py` computed without SQL.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use driftwatch_sql::rules::{check_all, read_rule_files};
use driftwatch_sql::testing::{alert_row, matches};
use driftwatch_sql::{Engine, Evaluator, Limits, Tables, WindowRef, standard_tables};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(engine: &Engine, table: &str) {
    let path = fixtures().join("demo").join(format!("{table}.parquet"));
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    for batch in reader {
        engine
            .tables()
            .push(table, &batch.expect("batch"))
            .expect("push");
    }
}

#[test]
fn bundled_rules_over_recorded_windows_give_the_oracles_alert_rows() {
    let tables = Tables::new(standard_tables().expect("tables"), None).expect("tables");
    let engine = Engine::new(tables, Limits::default()).expect("engine");
    for t in [
        "model_metrics",
        "feature_drift",
        "data_quality",
        "drift_summary",
        "change_points",
        "window_summary",
    ] {
        load(&engine, t);
    }
    let rules_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let files = read_rule_files(&rules_dir).expect("rules");
    let actions = BTreeSet::new();
    let (loaded, errors) = check_all(&engine, &files, &actions);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(loaded.len(), 8);
    // the optional rules (not read with rules/) are checked the same way
    let optional = read_rule_files(&rules_dir.join("optional")).expect("optional rules");
    let (optional_loaded, errors) = check_all(&engine, &optional, &actions);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(optional_loaded.len(), 1);
    // and every example the files carry holds
    let defs = standard_tables().expect("tables");
    let outcomes: Vec<_> = [&files, &optional]
        .into_iter()
        .flat_map(|f| driftwatch_sql::testing::run_tests(&defs, f, &actions))
        .collect();
    assert!(outcomes.len() >= 11, "{outcomes:?}");
    for o in &outcomes {
        assert!(
            o.problems.is_empty(),
            "{}: {}: {:?}",
            o.file.display(),
            o.name,
            o.problems
        );
    }

    let expected: Vec<(WindowRef, serde_json::Map<String, Value>)> =
        std::fs::read_to_string(fixtures().join("golden_alerts.jsonl"))
            .expect("golden file")
            .lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).expect("json");
                let w = &v["window"];
                let window = WindowRef {
                    model_id: w["model_id"].as_str().expect("model").to_owned(),
                    model_version: w["model_version"].as_str().map(str::to_owned),
                    start: w["window_start"].as_i64().expect("start"),
                    end: w["window_end"].as_i64().expect("end"),
                };
                let Value::Object(row) = v["row"].clone() else {
                    panic!("row")
                };
                (window, row)
            })
            .collect();
    let windows: BTreeSet<(i64, i64, String, Option<String>)> = {
        let (_, batches) = engine
            .query("SELECT window_end, window_start, model_id, model_version FROM window_summary")
            .expect("windows");
        let rows = driftwatch_sql::eval::rows_json(&batches).expect("rows");
        rows.iter()
            .map(|r| {
                let t = |k: &str| {
                    chrono::DateTime::parse_from_rfc3339(r[k].as_str().expect("time"))
                        .expect("time")
                        .timestamp_millis()
                };
                (
                    t("window_end"),
                    t("window_start"),
                    r["model_id"].as_str().expect("model").to_owned(),
                    r["model_version"].as_str().map(str::to_owned),
                )
            })
            .collect()
    };
    assert_eq!(windows.len(), 63);

    let mut evaluator = Evaluator::new(engine, loaded).expect("evaluator");
    let mut unmatched = expected.clone();
    let mut unexpected = Vec::new();
    let mut per_rule = std::collections::BTreeMap::<String, usize>::new();
    for (end, start, model_id, model_version) in windows {
        let window = WindowRef {
            model_id,
            model_version,
            start,
            end,
        };
        let evaluation = evaluator.evaluate(&window).expect("evaluate");
        assert!(evaluation.failures.is_empty(), "{:?}", evaluation.failures);
        for instance in &evaluation.instances {
            *per_rule.entry(instance.rule.clone()).or_default() += 1;
            let row = alert_row(instance);
            match unmatched
                .iter()
                .position(|(w, e)| *w == window && matches(&row, e))
            {
                Some(i) => {
                    unmatched.remove(i);
                }
                None => unexpected.push((window.clone(), row)),
            }
        }
    }
    assert!(
        unmatched.is_empty(),
        "expected rows not produced: {unmatched:#?}"
    );
    assert!(
        unexpected.is_empty(),
        "rows the oracle did not expect: {unexpected:#?}"
    );
    // the fixture exercises the rules that fire on the demo's drift
    assert_eq!(per_rule["accuracy_drop"], 8);
    assert_eq!(per_rule["prediction_drift"], 38);
    assert_eq!(per_rule["critical_feature_drift"], 36);
    assert_eq!(per_rule["error_rate_change"], 3);
}
