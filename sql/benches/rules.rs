//! Rule evaluation at a window close over a large history: 30 days of hourly
//! windows × 10 models × 25 features in Parquet (flushed once per window, as
//! the service does at its checkpoints), 20 rules, the window just closed
//! in memory.
//!
//! `cargo bench -p driftwatch-sql --bench rules` prints criterion's figures
//! and, for the target, the p50/p99 latency of one window close (20
//! rules) and the time of a query over the whole history.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use criterion::{Criterion, criterion_group, criterion_main};
use driftwatch_sql::rules::{RuleFiles, check_all};
use driftwatch_sql::{Engine, Evaluator, History, Limits, Tables, WindowRef, standard_tables};
use serde_json::{Value, json};

const DAYS: i64 = 30;
const MODELS: usize = 10;
const FEATURES: usize = 25;
const HOUR: i64 = 3_600_000;
const START: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn batch(engine: &Engine, table: &str, rows: &[Value]) -> RecordBatch {
    let schema = engine
        .tables()
        .get(table)
        .expect("table")
        .def()
        .schema
        .clone();
    let mut decoder = arrow::json::ReaderBuilder::new(schema)
        .with_batch_size(rows.len().max(1))
        .build_decoder()
        .expect("decoder");
    decoder.serialize(rows).expect("rows");
    decoder.flush().expect("flush").expect("batch")
}

/// A closed window's rows of every table the rules read.
fn window_rows(engine: &Engine, model: usize, start: i64) -> Vec<(&'static str, RecordBatch)> {
    let end = start + HOUR;
    let key = |extra: Value| {
        let mut v = json!({"model_id": format!("model{model}"), "model_version": "v1",
            "window_start": iso(start), "window_end": iso(end)});
        v.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        v
    };
    let hour = (start - START) / HOUR;
    let wobble = |f: usize| ((hour as usize * 7 + f * 13 + model) % 100) as f64 / 100.0;
    let drift: Vec<Value> = (0..FEATURES)
        .map(|f| {
            let x = wobble(f);
            key(json!({"feature": format!("f{f}"), "kind": "numeric", "count": 1000,
                "reference_count": 5000, "ks": x / 4.0, "wasserstein": x, "wasserstein_norm": x / 3.0,
                "psi": x / 2.0, "js": x / 5.0, "level": if x > 0.9 { "drift" } else if x > 0.7 { "warning" } else { "ok" }}))
        })
        .collect();
    let quality: Vec<Value> = (0..FEATURES)
        .map(|f| {
            key(json!({"feature": format!("f{f}"), "events": 1000, "missing": 10,
                "missing_rate": wobble(f) / 10.0, "type_mismatches": 0, "out_of_range_share": 0.0, "status": "ok"}))
        })
        .collect();
    let drifted = drift.iter().filter(|r| r["level"] == "drift").count();
    let summary = vec![key(
        json!({"features_compared": FEATURES, "features_warning": 0,
        "features_drifted": drifted, "drift_share": drifted as f64 / FEATURES as f64, "is_reference": false}),
    )];
    let metrics: Vec<Value> = (0..3)
        .flat_map(|revision| {
            ["accuracy", "f1", "precision", "recall", "roc_auc", "log_loss"]
                .into_iter()
                .map(move |metric| (revision, metric))
        })
        .map(|(revision, metric)| {
            key(json!({"revision": revision, "final": revision == 2, "as_of": iso(end + revision * HOUR),
                "task": "binary", "predictions": 1000, "labeled": 300 * (revision + 1),
                "label_coverage": 0.3 * (revision + 1) as f64, "duplicate_labels": 0, "duplicate_predictions": 0,
                "unscorable_labels": 0, "expired_unlabeled": 0, "metric": metric, "value": 0.7 + wobble(0) / 4.0}))
        })
        .collect();
    vec![
        ("feature_drift", batch(engine, "feature_drift", &drift)),
        ("data_quality", batch(engine, "data_quality", &quality)),
        ("drift_summary", batch(engine, "drift_summary", &summary)),
        ("model_metrics", batch(engine, "model_metrics", &metrics)),
    ]
}

/// 20 rules: the six kinds of the bundled ones, at several thresholds.
fn rules() -> String {
    let mut text = String::new();
    let mut add = |name: String, sql: String| {
        text.push_str(&format!(
            "[[rule]]\nname = \"{name}\"\nsql = \"\"\"{sql}\"\"\"\n\n"
        ));
    };
    let this = "model_id = $model_id AND (model_version IS NOT DISTINCT FROM $model_version) AND window_end = $window_end";
    for (i, limit) in [0.8, 0.75, 0.7, 0.9].iter().enumerate() {
        add(
            format!("accuracy_{i}"),
            format!(
                "SELECT model_id, model_version, label_coverage, value FROM model_metrics_latest WHERE {this} AND metric = 'accuracy' AND class IS NULL AND label_coverage >= 0.5 AND value < {limit}"
            ),
        );
    }
    for (i, limit) in [0.25, 0.1, 0.5, 0.05].iter().enumerate() {
        add(
            format!("drift_share_{i}"),
            format!(
                "SELECT model_id, model_version, drift_share AS value FROM drift_summary WHERE {this} AND NOT is_reference AND drift_share > {limit}"
            ),
        );
    }
    for (i, features) in ["'f1', 'f2'", "'f3'", "'f4', 'f5', 'f6'", "'f7'"]
        .iter()
        .enumerate()
    {
        add(
            format!("critical_{i}"),
            format!(
                "SELECT model_id, model_version, feature, psi AS value FROM feature_drift WHERE {this} AND level = 'drift' AND feature IN ({features})"
            ),
        );
    }
    for (i, limit) in [0.3, 0.4, 0.45].iter().enumerate() {
        add(
            format!("psi_{i}"),
            format!(
                "SELECT model_id, model_version, feature, psi AS value FROM feature_drift WHERE {this} AND psi > {limit}"
            ),
        );
    }
    for (i, jump) in [0.01, 0.05, 0.02].iter().enumerate() {
        add(
            format!("missing_jump_{i}"),
            format!(
                "SELECT c.model_id, c.model_version, c.feature, c.missing_rate AS value FROM data_quality c JOIN data_quality p ON p.model_id = c.model_id AND p.feature = c.feature AND p.window_end = c.window_start WHERE c.model_id = $model_id AND c.window_end = $window_end AND p.window_end = $window_start AND c.missing_rate - p.missing_rate > {jump}"
            ),
        );
    }
    for (i, days) in [7, 1].iter().enumerate() {
        add(
            format!("accuracy_vs_week_{i}"),
            format!(
                "SELECT model_id, avg(value) AS value FROM model_metrics WHERE model_id = $model_id AND metric = 'accuracy' AND final AND window_end > $window_end - INTERVAL '{days} days' GROUP BY model_id HAVING avg(value) < 0.75"
            ),
        );
    }
    text
}

struct Setup {
    _dir: tempfile::TempDir,
    evaluator: Evaluator,
    history: History,
    next: i64,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("dir");
    let history_dir = dir.path().join("history");
    let tables =
        Tables::new(standard_tables().expect("tables"), Some(&history_dir)).expect("tables");
    let engine = Engine::new(tables, Limits::default()).expect("engine");
    let mut history = History::open(&history_dir, "bench").expect("history");
    let started = Instant::now();
    for hour in 0..DAYS * 24 {
        let start = START + hour * HOUR;
        for model in 0..MODELS {
            for (table, b) in window_rows(&engine, model, start) {
                engine.tables().push(table, &b).expect("push");
            }
        }
        // one flush per hour: every model's window of that hour, compacted
        // as the service does once its checkpoint is saved
        let seq = engine.tables().flush(&mut history).expect("flush");
        history.compact(seq).expect("compact");
    }
    eprintln!(
        "history: {DAYS} days × {MODELS} models × {FEATURES} features, {} flushes in {} files, written in {:.1}s",
        history.seq(),
        history.file_count(),
        started.elapsed().as_secs_f64()
    );
    let mut files = RuleFiles::default();
    files.add("bench.toml".into(), &rules());
    let (loaded, errors) = check_all(&engine, &files, &BTreeSet::new());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(loaded.len(), 20);
    Setup {
        _dir: dir,
        evaluator: Evaluator::new(engine, loaded).expect("evaluator"),
        history,
        next: START + DAYS * 24 * HOUR,
    }
}

impl Setup {
    /// One window close: the model's rows arrive, 20 rules run.
    fn close(&mut self, model: usize) -> Duration {
        let start = self.next;
        for (table, b) in window_rows(self.evaluator.engine(), model, start) {
            self.evaluator
                .engine()
                .tables()
                .push(table, &b)
                .expect("push");
        }
        let window = WindowRef {
            model_id: format!("model{model}"),
            model_version: Some("v1".into()),
            start,
            end: start + HOUR,
        };
        let t = Instant::now();
        let evaluation = self.evaluator.evaluate(&window).expect("evaluate");
        let took = t.elapsed();
        assert!(evaluation.failures.is_empty(), "{:?}", evaluation.failures);
        if model == MODELS - 1 {
            self.next += HOUR;
            let seq = self
                .evaluator
                .engine()
                .tables()
                .flush(&mut self.history)
                .expect("flush");
            self.history.compact(seq).expect("compact");
        }
        took
    }
}

fn bench(c: &mut Criterion) {
    let mut s = setup();
    // the figure: latency of one window close with 20 rules
    let mut samples: Vec<Duration> = (0..200).map(|i| s.close(i % MODELS)).collect();
    samples.sort();
    let q = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    eprintln!(
        "window close, 20 rules: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} closes)",
        q(0.5).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        samples.len()
    );
    // where the time goes: each rule alone, median of 20 evaluations
    let window = WindowRef {
        model_id: "model3".into(),
        model_version: Some("v1".into()),
        start: s.next - HOUR,
        end: s.next,
    };
    let names: Vec<String> = s.evaluator.rules().map(|r| r.rule.name.clone()).collect();
    for name in &names {
        let mut t: Vec<Duration> = (0..20)
            .map(|_| {
                let started = Instant::now();
                s.evaluator
                    .evaluate_some(&window, |r| &r.rule.name == name)
                    .expect("evaluate");
                started.elapsed()
            })
            .collect();
        t.sort();
        eprintln!("  {name}: {:.2} ms", t[10].as_secs_f64() * 1e3);
    }
    let history_query = "SELECT model_id, feature, count(*) AS windows, avg(psi) AS psi \
        FROM feature_drift GROUP BY model_id, feature ORDER BY psi DESC LIMIT 10";
    let t = Instant::now();
    let (_, rows) = s.evaluator.engine().query(history_query).expect("query");
    eprintln!(
        "history query (all {} feature_drift rows): {:.1} ms, {} rows",
        DAYS as usize * 24 * MODELS * FEATURES,
        t.elapsed().as_secs_f64() * 1e3,
        rows.iter().map(RecordBatch::num_rows).sum::<usize>()
    );
    let mut model = 0;
    c.bench_function("rules/window_close_20_rules", |b| {
        b.iter(|| {
            model = (model + 1) % MODELS;
            s.close(model)
        })
    });
    c.bench_function("sql/history_query_feature_drift", |b| {
        b.iter(|| s.evaluator.engine().query(history_query).expect("query"))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(10));
    targets = bench
}
criterion_main!(benches);
