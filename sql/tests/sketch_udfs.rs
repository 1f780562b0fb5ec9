//! The sketch functions against numpy on the raw samples (fixtures made by
//! `fixtures/make_sketch_fixtures.py`, committed).
//!
//! Each window's values go through a real drift sketch into the
//! `feature_sketches` table; SQL then asks for quantiles, CDF values, PSI and
//! JS, and quantiles of merged windows. Tolerances are the detector's: a
//! t-digest quantile within 0.01 in rank (between numpy's quantiles at
//! q ± 0.01), PSI and JS within 0.01 of the exact binned value; exact
//! counts (few distinct values) give numpy's figures exactly.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt64Array,
};
use arrow::datatypes::Float64Type;
use driftwatch_detectors::DriftConfig;
use driftwatch_detectors::drift::FeatureSketches;
use driftwatch_ingest::FeatureValue;
use driftwatch_sql::{Engine, Limits, Tables, standard_tables};
use serde_json::Value;

const HOUR: i64 = 3_600_000;

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sketch_oracle.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// An engine whose `feature_sketches` holds one row per window: feature
/// `x` of model `m`, window i from hour i to hour i + 1.
fn engine_with(windows: &[Vec<FeatureValue>]) -> Engine {
    let tables = Tables::new(standard_tables().unwrap(), None).unwrap();
    let engine = Engine::new(tables, Limits::default()).unwrap();
    let schema = Arc::clone(
        &engine
            .tables()
            .get("feature_sketches")
            .unwrap()
            .def()
            .schema,
    );
    let n = windows.len();
    let sketches: Vec<FeatureSketches> = windows
        .iter()
        .map(|values| {
            let mut s = FeatureSketches::new(&DriftConfig::default());
            values.iter().for_each(|v| s.add(v));
            s
        })
        .collect();
    let time = |offset: i64| {
        Arc::new(
            TimestampMillisecondArray::from(
                (0..n as i64)
                    .map(|i| (i + offset) * HOUR)
                    .collect::<Vec<_>>(),
            )
            .with_timezone(driftwatch_ingest::event::ARROW_TIMEZONE),
        ) as ArrayRef
    };
    let kind = match windows[0][0] {
        FeatureValue::Categorical(_) => "categorical",
        _ => "numeric",
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["m"; n])),
        Arc::new(StringArray::from(vec![None::<&str>; n])),
        time(0),
        time(1),
        Arc::new(StringArray::from(vec!["x"; n])),
        Arc::new(StringArray::from(vec![kind; n])),
        Arc::new(UInt64Array::from(
            sketches
                .iter()
                .map(FeatureSketches::count)
                .collect::<Vec<_>>(),
        )),
        Arc::new(UInt64Array::from(vec![0; n])),
        Arc::new(BinaryArray::from_iter_values(
            sketches.iter().map(|s| s.to_bytes().unwrap()),
        )),
    ];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    engine.tables().push("feature_sketches", &batch).unwrap();
    engine
}

/// The single float a query answers, NULL as `None`.
fn one(engine: &Engine, sql: &str) -> Option<f64> {
    let (_, batches) = engine.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows: Vec<Option<f64>> = batches
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_primitive::<Float64Type>();
            (0..c.len())
                .map(|i| c.is_valid(i).then(|| c.value(i)))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0]
}

/// `a` against `b`, windows given by their start hour.
fn distance(engine: &Engine, f: &str, a: i64, b: i64) -> f64 {
    one(
        engine,
        &format!(
            "SELECT {f}(r.sketch, c.sketch) FROM feature_sketches r
             JOIN feature_sketches c ON c.model_id = r.model_id AND c.feature = r.feature
             WHERE r.window_start = to_timestamp_millis({}) AND c.window_start = to_timestamp_millis({})",
            a * HOUR,
            b * HOUR
        ),
    )
    .unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn numeric_sketch_functions_match_numpy() {
    let fixtures = fixtures();
    let mut failures = Vec::new();
    for case in fixtures["numeric"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let windows: Vec<Vec<FeatureValue>> = case["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| floats(w).into_iter().map(FeatureValue::Numeric).collect())
            .collect();
        let exact = name.contains("exact");
        let engine = engine_with(&windows);
        let mut check = |what: String, have: f64, low: f64, high: f64| {
            println!("{name:<24} {what:<32} {have:.5} in [{low:.5}, {high:.5}]");
            if !(low..=high).contains(&have) {
                failures.push(format!("{name}: {what} = {have}, expected [{low}, {high}]"));
            }
        };
        let quantile_checks = [
            (
                "quantiles",
                "sketch_quantile(sketch, {q}) FROM feature_sketches WHERE window_start = to_timestamp_millis(0)",
            ),
            (
                "merged_a_c_quantiles",
                "sketch_quantile(sketch_merge(sketch), {q}) FROM feature_sketches WHERE window_start IN (to_timestamp_millis(0), to_timestamp_millis(7200000))",
            ),
        ];
        for (key, sql) in quantile_checks {
            for q in case[key].as_array().unwrap() {
                let qv = q["q"].as_f64().unwrap();
                let have = one(
                    &engine,
                    &format!("SELECT {}", sql.replace("{q}", &qv.to_string())),
                )
                .unwrap();
                let (low, high) = if exact {
                    let v = q["value"].as_f64().unwrap();
                    (v, v)
                } else {
                    (q["low"].as_f64().unwrap(), q["high"].as_f64().unwrap())
                };
                check(format!("{key} q={qv}"), have, low, high);
            }
        }
        for p in case["cdf"].as_array().unwrap() {
            let x = p["x"].as_f64().unwrap();
            let want = p["share"].as_f64().unwrap();
            let have = one(
                &engine,
                &format!("SELECT sketch_cdf(sketch, {x:?}) FROM feature_sketches WHERE window_start = to_timestamp_millis(0)"),
            )
            .unwrap();
            let tolerance = if exact { 1e-12 } else { 0.01 };
            check(
                format!("cdf({x})"),
                have,
                want - tolerance,
                want + tolerance,
            );
        }
        for (key, other) in [("a_to_b", 1), ("a_to_c", 2)] {
            for stat in ["psi", "js"] {
                let want = case[key][stat].as_f64().unwrap();
                let have = distance(&engine, &format!("sketch_{stat}"), 0, other);
                check(format!("{stat} {key}"), have, want - 0.01, want + 0.01);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "outside tolerance:\n{}",
        failures.join("\n")
    );
}

#[test]
fn categorical_psi_and_js_match_numpy_exactly() {
    let fixtures = fixtures();
    for case in fixtures["categorical"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let windows: Vec<Vec<FeatureValue>> = case["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                w.as_array()
                    .unwrap()
                    .iter()
                    .map(|k| {
                        FeatureValue::Categorical(format!("cat{}", k.as_u64().unwrap()).into())
                    })
                    .collect()
            })
            .collect();
        let engine = engine_with(&windows);
        for stat in ["psi", "js"] {
            let want = case["a_to_b"][stat].as_f64().unwrap();
            let have = distance(&engine, &format!("sketch_{stat}"), 0, 1);
            assert!(
                (have - want).abs() <= 1e-9,
                "{name}: {stat} {have} vs numpy {want}"
            );
        }
    }
}

#[test]
fn sketch_functions_of_null_or_foreign_values() {
    let engine = engine_with(&[vec![FeatureValue::Numeric(1.0)]]);
    assert_eq!(one(&engine, "SELECT sketch_quantile(NULL, 0.5)"), None);
    assert_eq!(
        one(
            &engine,
            "SELECT sketch_psi(sketch, NULL) FROM feature_sketches"
        ),
        None
    );
    let err = engine
        .query("SELECT sketch_cdf(CAST('hello' AS BYTEA), 1.0)")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sketch_cdf") && err.contains("not a sketch"),
        "{err}"
    );
    // a categorical-only sketch has no quantiles
    let engine = engine_with(&[vec![FeatureValue::Categorical("a".into())]]);
    assert_eq!(
        one(
            &engine,
            "SELECT sketch_quantile(sketch, 0.5) FROM feature_sketches"
        ),
        None
    );
}
