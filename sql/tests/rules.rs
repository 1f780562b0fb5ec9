//! Rule checking, rule evaluation under limits, and the history.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use arrow::array::RecordBatch;
use driftwatch_sql::rules::{RuleFiles, check_all};
use driftwatch_sql::{
    Engine, Error, Evaluator, History, Limits, Tables, WindowRef, standard_tables,
};

fn engine_with(limits: Limits, history: Option<&Path>) -> Engine {
    let tables = Tables::new(standard_tables().expect("tables"), history).expect("tables");
    Engine::new(tables, limits).expect("engine")
}

fn engine() -> Engine {
    engine_with(Limits::default(), None)
}

/// An engine over a history in a new directory, and the history's writer
/// `p0`: the directory, the history's path, the engine, the writer.
fn with_history() -> (tempfile::TempDir, std::path::PathBuf, Engine, History) {
    let dir = tempfile::tempdir().expect("dir");
    let history_dir = dir.path().join("history");
    let engine = engine_with(Limits::default(), Some(&history_dir));
    let history = History::open(&history_dir, "p0").expect("history");
    (dir, history_dir, engine, history)
}

/// The SQL lanes are shared by every engine of the process, and a test
/// below blocks them on purpose: the tests of this file run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn actions() -> BTreeSet<String> {
    ["retrain".to_owned()].into()
}

fn rule(name: &str, sql: &str, extra: &str) -> String {
    format!("[[rule]]\nname = \"{name}\"\nsql = \"\"\"{sql}\"\"\"\n{extra}\n")
}

/// Checks one file's text; returns each error as printed.
fn check(text: &str) -> Vec<String> {
    let mut files = RuleFiles::default();
    files.add("rules/test.toml".into(), text);
    let (_, errors) = check_all(&engine(), &files, &actions());
    errors.iter().map(ToString::to_string).collect()
}

fn one_error(text: &str) -> String {
    let errors = check(text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors[0].clone()
}

#[test]
fn a_valid_rule_set_has_no_errors() {
    let _serial = serial();
    let text = rule(
        "low_accuracy",
        "SELECT model_id, value FROM model_metrics WHERE model_id = $model_id AND window_end = $window_end AND metric = 'accuracy' AND value < 0.8",
        "for = 2\nseverity = \"critical\"\nactions = [\"retrain\"]\nannotations = { summary = \"{{ model_id }} at {{ value }}\" }",
    ) + &rule(
        "drifted",
        "SELECT model_id, feature FROM feature_drift WHERE model_id = $model_id AND level = 'drift'",
        "",
    );
    assert_eq!(check(&text), Vec::<String>::new());
}

#[test]
fn rules_check_names_file_and_rule_for_each_kind_of_error() {
    let _serial = serial();
    // syntax error
    let e = one_error(&rule("syntax", "SELEC model_id FROM model_metrics", ""));
    assert!(e.starts_with("rules/test.toml: rule syntax: "), "{e}");
    assert!(e.contains("SELEC"), "{e}");
    // unknown column
    let e = one_error(&rule(
        "unknown_column",
        "SELECT model_id, accuracy FROM model_metrics",
        "",
    ));
    assert!(
        e.starts_with("rules/test.toml: rule unknown_column: "),
        "{e}"
    );
    assert!(e.contains("accuracy"), "{e}");
    // unknown table
    let e = one_error(&rule("unknown_table", "SELECT * FROM metrics", ""));
    assert!(
        e.contains("rule unknown_table") && e.contains("metrics"),
        "{e}"
    );
    // type error: a string compared with a timestamp that cannot be one, a non-numeric value
    let e = one_error(&rule(
        "type_error",
        "SELECT model_id FROM model_metrics WHERE value + metric > 1",
        "",
    ));
    assert!(e.contains("rule type_error"), "{e}");
    let e = one_error(&rule(
        "text_value",
        "SELECT model_id, metric AS value FROM model_metrics",
        "",
    ));
    assert!(
        e.contains("rule text_value") && e.contains("value column must be numeric"),
        "{e}"
    );
    // DML and DDL
    let e = one_error(&rule("dml", "INSERT INTO alerts SELECT * FROM alerts", ""));
    assert!(
        e.contains("rule dml") && e.contains("only read-only SELECT"),
        "{e}"
    );
    let e = one_error(&rule("ddl", "CREATE TABLE x AS SELECT 1", ""));
    assert!(
        e.contains("rule ddl") && e.contains("only read-only SELECT"),
        "{e}"
    );
    let e = one_error(&rule("copy", "COPY model_metrics TO '/tmp/x.csv'", ""));
    assert!(
        e.contains("rule copy") && e.contains("only read-only SELECT"),
        "{e}"
    );
    // a second statement
    let e = one_error(&rule("two", "SELECT 1 AS a; SELECT 2 AS a", ""));
    assert!(
        e.contains("rule two") && e.contains("one statement, found 2"),
        "{e}"
    );
    // an unknown action
    let e = one_error(&rule(
        "paging",
        "SELECT model_id FROM drift_summary",
        "actions = [\"pager\"]",
    ));
    assert!(
        e.contains("rule paging") && e.contains("unknown action \"pager\""),
        "{e}"
    );
    // an unknown placeholder, a bad severity, a bad template
    let e = one_error(&rule(
        "placeholder",
        "SELECT model_id FROM drift_summary WHERE model_id = $model",
        "",
    ));
    assert!(e.contains("rule placeholder") && e.contains("model"), "{e}");
    let e = one_error(&rule("loud", "SELECT 1 AS a", "severity = \"page\""));
    assert!(e.contains("rule loud") && e.contains("severity"), "{e}");
    let e = one_error(&rule(
        "template",
        "SELECT 1 AS a",
        "annotations = { summary = \"{{ a \" }",
    ));
    assert!(
        e.contains("rule template") && e.contains("annotation summary"),
        "{e}"
    );
    // issue 17: an unknown filter or column in an annotation is refused
    // when the rules are checked, not when the alert first renders it
    let e = one_error(&rule(
        "filter",
        "SELECT model_id, psi AS value FROM feature_drift",
        "annotations = { summary = \"{{ model_id }} at {{ value | pct }}\" }",
    ));
    assert!(
        e.starts_with("rules/test.toml: rule filter: annotation summary: unknown filter")
            && e.contains("pct"),
        "{e}"
    );
    let e = one_error(&rule(
        "column",
        "SELECT model_id, psi AS value FROM feature_drift",
        "annotations = { summary = \"{{ feature }} drifted\" }",
    ));
    assert!(
        e.contains(
            "rule column: annotation summary: unknown variable feature (known: model_id, value)"
        ),
        "{e}"
    );
    // the same name twice
    let errors = check(&(rule("twice", "SELECT 1 AS a", "") + &rule("twice", "SELECT 2 AS a", "")));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("rule twice") && errors[0].contains("already"),
        "{errors:?}"
    );
}

#[test]
fn a_file_that_is_not_toml_is_reported_with_its_line() {
    let _serial = serial();
    let errors = check("[[rule]]\nname = \"x\"\nsql = \n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("rules/test.toml: "), "{errors:?}");
    assert!(errors[0].contains("line 3"), "{errors:?}");
    let errors = check("[[rule]]\nname = \"x\"\nsql = \"SELECT 1\"\nsevrity = \"info\"\n");
    assert!(errors[0].contains("sevrity"), "{errors:?}");
}

fn feature_drift_rows(n: usize) -> RecordBatch {
    drift_rows_at(n, "2026-11-26T10:00:00Z", "2026-11-26T11:00:00Z")
}

fn drift_rows_at(n: usize, start: &str, end: &str) -> RecordBatch {
    let rows: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "model_id": "churn", "model_version": "v1",
                "window_start": start, "window_end": end,
                "feature": format!("f{i}"), "kind": "numeric", "count": 10, "reference_count": 10,
                "psi": (i % 10) as f64 / 10.0, "level": if i % 10 == 9 { "drift" } else { "ok" },
            })
        })
        .collect();
    driftwatch_sql::testing::table_rows("feature_drift", &rows).expect("rows")
}

fn window() -> WindowRef {
    WindowRef {
        model_id: "churn".into(),
        model_version: Some("v1".into()),
        start: 1_795_687_200_000,
        end: 1_795_690_800_000,
    }
}

#[test]
fn a_runaway_rule_is_stopped_and_the_other_rules_still_run() {
    let _serial = serial();
    for limits in [
        // the cross join's build side does not fit
        Limits {
            memory: 4 << 20,
            timeout: Duration::from_secs(60),
            max_rows: 10_000,
        },
        // it fits, but the join runs past the time limit
        Limits {
            memory: 1 << 30,
            timeout: Duration::from_millis(300),
            max_rows: usize::MAX,
        },
    ] {
        let engine = engine_with(limits.clone(), None);
        engine
            .tables()
            .push("feature_drift", &feature_drift_rows(20_000))
            .expect("rows");
        let runaway = if limits.memory < 1 << 30 {
            // sorting the cross join needs all of it in memory
            "SELECT a.feature, b.feature AS other, a.psi + b.psi AS value FROM feature_drift a CROSS JOIN feature_drift b ORDER BY a.psi + b.psi"
        } else {
            "SELECT a.model_id, count(*) AS value FROM feature_drift a CROSS JOIN feature_drift b GROUP BY a.model_id"
        };
        let text = rule("runaway", runaway, "")
            + &rule(
                "drifted",
                "SELECT model_id, feature, psi AS value FROM feature_drift WHERE model_id = $model_id AND window_end = $window_end AND level = 'drift'",
                "",
            );
        let mut files = RuleFiles::default();
        files.add("rules/test.toml".into(), &text);
        let (loaded, errors) = check_all(&engine, &files, &actions());
        assert!(errors.is_empty(), "{errors:?}");
        let mut evaluator = Evaluator::new(engine, loaded).expect("evaluator");
        let started = std::time::Instant::now();
        let evaluation = evaluator.evaluate(&window()).expect("evaluation");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            evaluation.failures.len(),
            1,
            "{limits:?}: {:?}",
            evaluation.failures
        );
        let failure = &evaluation.failures[0];
        assert_eq!(failure.rule, "runaway");
        assert!(
            failure.message.contains("Resources exhausted")
                || failure.message.contains("time limit"),
            "{limits:?}: {}",
            failure.message
        );
        // the other rule ran: every tenth feature drifted
        assert_eq!(evaluation.instances.len(), 2_000);
        assert!(evaluation.instances.iter().all(|i| i.rule == "drifted"));
        assert_eq!(evaluator.stats().errors["runaway"], 1);
        // the failure is queryable
        let (_, rows) = evaluator
            .engine()
            .query("SELECT rule, error FROM rule_errors")
            .expect("query");
        assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    }
    // the aborted queries stop at their next yield: wait for the lanes
    // before the next test takes them
    let free = (0..24).any(|_| engine().query("SELECT 1 AS x").is_ok());
    assert!(free, "the SQL lanes stayed busy after the runaway queries");
}

#[test]
fn ad_hoc_queries_are_read_only() {
    let _serial = serial();
    let engine = engine();
    for sql in [
        "DROP TABLE model_metrics",
        "DELETE FROM model_metrics",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "SET datafusion.execution.batch_size = 1",
        "SELECT 1; SELECT 2",
    ] {
        match engine.query(sql) {
            Err(Error::Refused(_)) => {}
            other => panic!("{sql}: {other:?}"),
        }
    }
    for sql in [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
    ] {
        assert!(engine.query(sql).is_err(), "{sql}");
    }
}

/// Rows a rule sees through its placeholders (pushed down as literals).
fn evaluator_counting(engine: &Engine) -> i64 {
    let plan = engine
        .plan("SELECT count(*) FROM feature_drift WHERE model_id = $model_id AND window_end = $window_end")
        .expect("plan");
    let (_, batches) = engine.execute(&plan, Some(window().params())).expect("run");
    arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(batches[0].column(0))
        .value(0)
}

fn count(engine: &Engine, sql: &str) -> i64 {
    let (_, batches) = engine.query(sql).expect("query");
    let c = batches[0].column(0);
    arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(c).value(0)
}

#[test]
fn history_and_live_rows_are_one_table_and_a_restart_rewinds_to_its_checkpoint() {
    let _serial = serial();
    let (_dir, history_dir, engine, mut history) = with_history();
    let rows = feature_drift_rows(100);
    engine.tables().push("feature_drift", &rows).expect("push");
    assert_eq!(count(&engine, "SELECT count(*) FROM feature_drift"), 100);
    // checkpoint 1: the rows go to Parquet and leave memory
    let seq = engine.tables().flush(&mut history).expect("flush");
    assert_eq!(seq, 1);
    assert_eq!(engine.tables().live_rows(), 0);
    assert_eq!(count(&engine, "SELECT count(*) FROM feature_drift"), 100);
    let file = history_dir.join("feature_drift/date=2026-11-26/p0-000000000001.parquet");
    assert!(file.is_file(), "{}", file.display());
    // more rows, live and flushed again, past the checkpoint
    engine.tables().push("feature_drift", &rows).expect("push");
    assert_eq!(count(&engine, "SELECT count(*) FROM feature_drift"), 200);
    assert_eq!(
        count(
            &engine,
            "SELECT count(*) FROM feature_drift WHERE model_id = 'churn'"
        ),
        200
    );
    assert_eq!(
        count(
            &engine,
            "SELECT count(*) FROM feature_drift WHERE model_id = 'fraud'"
        ),
        0
    );
    // comparisons with the time column prune date directories, never rows
    for (filter, n) in [
        ("window_end = TIMESTAMP '2026-11-26T11:00:00Z'", 200),
        ("window_end >= TIMESTAMP '2026-11-26T11:00:00Z'", 200),
        ("window_end > TIMESTAMP '2026-11-26T11:00:00Z'", 0),
        ("window_end < TIMESTAMP '2026-11-27T00:00:00Z'", 200),
        ("window_end <= TIMESTAMP '2026-11-25T23:00:00Z'", 0),
        ("TIMESTAMP '2026-11-26T00:00:00Z' < window_end", 200),
    ] {
        let sql = format!("SELECT count(*) FROM feature_drift WHERE {filter}");
        assert_eq!(count(&engine, &sql), n, "{filter}");
    }
    assert_eq!(evaluator_counting(&engine), 200);
    engine.tables().flush(&mut history).expect("flush");
    // a crash, and a restart from checkpoint 1: the second flush goes, a new session sees checkpoint 1
    drop(history);
    let mut history = History::open(&history_dir, "p0").expect("history");
    assert_eq!(history.seq(), 2);
    assert_eq!(history.rewind(seq).expect("rewind"), 1);
    let restarted = engine_with(Limits::default(), Some(&history_dir));
    assert_eq!(count(&restarted, "SELECT count(*) FROM feature_drift"), 100);
    // another writer's files are left alone
    let mut other = History::open(&history_dir, "p1").expect("history");
    restarted
        .tables()
        .push("feature_drift", &rows)
        .expect("push");
    restarted.tables().flush(&mut other).expect("flush");
    history.rewind(0).expect("rewind");
    assert_eq!(count(&restarted, "SELECT count(*) FROM feature_drift"), 100);
}

#[test]
fn rows_flushed_or_compacted_after_a_query_are_still_seen() {
    let _serial = serial();
    // DataFusion's list-files cache kept the file list of a session's first
    // scan: flushed rows vanished from later queries, compacted files were
    // read after they were removed
    let (_dir, history_dir, engine, mut history) = with_history();
    let today = "SELECT count(*) FROM feature_drift WHERE model_id = 'churn' \
        AND window_end = TIMESTAMP '2026-11-26T11:00:00Z'";
    let all = "SELECT count(*) FROM feature_drift WHERE model_id = 'churn'";
    // one flush on 2026-11-25, then ten on 2026-11-26
    let yesterday = drift_rows_at(100, "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z");
    engine
        .tables()
        .push("feature_drift", &yesterday)
        .expect("push");
    engine.tables().flush(&mut history).expect("flush");
    for i in 1..=10 {
        engine
            .tables()
            .push("feature_drift", &feature_drift_rows(100))
            .expect("push");
        assert_eq!(count(&engine, today), 100 * i);
        engine.tables().flush(&mut history).expect("flush");
        assert_eq!(count(&engine, today), 100 * i);
    }
    // a late revision of yesterday's window: a second file there
    engine
        .tables()
        .push("feature_drift", &yesterday)
        .expect("push");
    engine.tables().flush(&mut history).expect("flush");
    assert_eq!(history.seq(), 12);
    assert_eq!(history.file_count(), 12);
    assert_eq!(count(&engine, all), 1200);
    // flushes up to 9 are checkpointed: yesterday's two files merge (an
    // earlier day), today's eight of them too (COMPACT_FILES); the rest wait
    let done = history.compact(9).expect("compact");
    assert_eq!((done.directories, done.files), (1, 8), "{done:?}");
    assert_eq!(count(&engine, all), 1200);
    let done = history.compact(12).expect("compact");
    assert_eq!((done.directories, done.files), (1, 2), "{done:?}");
    let day = |d: &str| history_dir.join(format!("feature_drift/date={d}"));
    let names = |d: &str| {
        let mut names: Vec<String> = std::fs::read_dir(day(d))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names("2026-11-25"),
        ["p0-000000000001-000000000012.parquet"]
    );
    assert_eq!(
        names("2026-11-26"),
        [
            "p0-000000000002-000000000009.parquet",
            "p0-000000000010.parquet",
            "p0-000000000011.parquet"
        ]
    );
    assert_eq!(count(&engine, all), 1200);
    assert_eq!(count(&engine, today), 1000);
    // a checkpoint older than a compaction cannot be restored: refused, nothing removed
    let err = history.rewind(5).expect_err("rewind into a compacted file");
    assert!(err.to_string().contains("compacted"), "{err}");
    assert_eq!(count(&engine, all), 1200);
    drop(history);
    // a compaction stopped between its rename and removing its inputs: the
    // inputs are leftovers, and a restart removes them
    let merged = day("2026-11-26").join("p0-000000000002-000000000009.parquet");
    for seq in [3, 9] {
        std::fs::copy(
            &merged,
            day("2026-11-26").join(format!("p0-{seq:012}.parquet")),
        )
        .expect("copy");
    }
    assert_eq!(count(&engine, today), 2600);
    let history = History::open(&history_dir, "p0").expect("history");
    assert_eq!(history.file_count(), 4);
    assert_eq!(count(&engine, today), 1000);
    assert_eq!(count(&engine, all), 1200);
}

#[test]
fn the_counters_of_the_evaluations_survive_a_restart() {
    let _serial = serial();
    let text = rule(
        "drifted",
        "SELECT model_id, feature FROM feature_drift WHERE model_id = $model_id AND window_end = $window_end AND level = 'drift'",
        "for = 3",
    );
    let load = |engine: Engine| {
        let mut files = RuleFiles::default();
        files.add("rules/test.toml".into(), &text);
        let (loaded, errors) = check_all(&engine, &files, &actions());
        assert!(errors.is_empty(), "{errors:?}");
        Evaluator::new(engine, loaded).expect("evaluator")
    };
    let hour = |h: i64| WindowRef {
        model_id: "churn".into(),
        model_version: Some("v1".into()),
        start: 1_795_687_200_000 + (h - 1) * 3_600_000,
        end: 1_795_687_200_000 + h * 3_600_000,
    };
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("time")
            .to_rfc3339()
    };
    let push = |e: &Evaluator, h: i64| {
        let w = hour(h);
        e.engine()
            .tables()
            .push(
                "feature_drift",
                &drift_rows_at(20, &iso(w.start), &iso(w.end)),
            )
            .expect("push");
    };
    let mut first = load(engine());
    for h in 1..=2 {
        push(&first, h);
        let e = first.evaluate(&hour(h)).expect("evaluate");
        assert_eq!(e.instances.len(), 2);
    }
    let state = first.snapshot().expect("snapshot");
    drop(first);
    let mut second = load(engine());
    second.restore(&state).expect("restore");
    push(&second, 3);
    let e = second.evaluate(&hour(3)).expect("evaluate");
    assert_eq!(e.instances.len(), 2);
    // `for` is counted by the alert lifecycle (driftwatch-triggers), which
    // checkpoints its runs; the evaluator keeps its counters
    assert_eq!(second.stats().evaluations, 3);
    assert_eq!(second.stats().instances["drifted"], 6);
}

/// `SELECT 1 + 1 + … + 1 AS x FROM model_metrics` with `terms` terms.
fn chain(terms: usize) -> String {
    format!(
        "SELECT model_id, {} AS x FROM model_metrics",
        vec!["1"; terms].join(" + ")
    )
}

#[test]
fn a_rule_nested_too_deep_is_refused_by_rules_check_not_at_evaluation() {
    let _serial = serial();
    // these used to pass the check and overflow a SQL thread's stack when
    // evaluated (1,000 terms), or abort `rules check` itself (3,000); the
    // test runs on a 2 MiB test thread
    for terms in [1_000, 3_000, 15_000] {
        let error = one_error(&rule("deep", &chain(terms), ""));
        assert!(
            error.contains("rules/test.toml") && error.contains("deep"),
            "{error}"
        );
        assert!(error.contains("nest more than 256 levels"), "{error}");
    }
    // so is a long chain of set operations
    let union = vec!["SELECT model_id FROM model_metrics"; 1_000].join(" UNION ALL ");
    let error = one_error(&rule("unions", &union, ""));
    assert!(error.contains("set operations"), "{error}");
    // a long query is refused for its length before it is parsed
    let error = one_error(&rule("long", &chain(40_000), ""));
    assert!(error.contains("the limit is 65536 bytes"), "{error}");
    // below the limit, the query is checked and runs on the SQL threads
    assert!(check(&rule("fine", &chain(200), "")).is_empty());
    let engine = engine();
    let sum = format!("SELECT {} AS x", vec!["1"; 200].join(" + "));
    let (_, batches) = engine.query(&sum).expect("a 200-term sum runs");
    let x = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>();
    assert_eq!(x.map(|a| a.value(0)), Some(200));
}

#[test]
fn functions_that_allocate_without_bound_are_refused() {
    let _serial = serial();
    let engine = engine();
    for sql in [
        "SELECT length(repeat('x', 300000000)) AS n",
        "SELECT lpad('x', 300000000) AS n",
        "SELECT * FROM range(10000000000)",
        "SELECT generate_series(1, 10000000000) AS n",
        "SELECT array_repeat(1, 1000000000) AS n",
    ] {
        let err = engine.query(sql).expect_err(sql).to_string();
        assert!(err.contains("is not allowed"), "{sql}: {err}");
    }
    let error = one_error(&rule(
        "big",
        "SELECT model_id, repeat('x', 300000000) AS s FROM model_metrics",
        "",
    ));
    assert!(
        error.contains("function `repeat` is not allowed"),
        "{error}"
    );
}

#[test]
fn history_a_query_loads_counts_against_its_memory_limit() {
    let _serial = serial();
    let (_dir, history_dir, writer, mut history) = with_history();
    writer
        .tables()
        .push("feature_drift", &feature_drift_rows(20_000))
        .expect("push");
    writer.tables().flush(&mut history).expect("flush");
    // the rows are only in the history now: loading them needs more than 64 KiB
    let small = engine_with(
        Limits {
            memory: 64 << 10,
            ..Limits::default()
        },
        Some(&history_dir),
    );
    let err = small
        .query("SELECT count(*) FROM feature_drift")
        .expect_err("past the memory limit")
        .to_string();
    assert!(err.contains("Resources exhausted"), "{err}");
    assert!(err.contains("feature_drift history"), "{err}");
    // with room, the same query reads every row
    assert_eq!(count(&writer, "SELECT count(*) FROM feature_drift"), 20_000);
}

/// Milliseconds of an RFC 3339 time.
fn ms(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .expect("time")
        .timestamp_millis()
}

/// Every row of a query's answer, as text, in order.
fn printed(rows: &driftwatch_sql::engine::Rows) -> String {
    arrow::util::pretty::pretty_format_batches(&rows.1)
        .expect("format")
        .to_string()
}

#[test]
fn a_prepared_query_returns_what_the_planned_one_returns() {
    let _serial = serial();
    let (_dir, _, engine, mut history) = with_history();
    let hours = [
        ("2026-11-26T08:00:00Z", "2026-11-26T09:00:00Z"),
        ("2026-11-26T09:00:00Z", "2026-11-26T10:00:00Z"),
        ("2026-11-26T10:00:00Z", "2026-11-26T11:00:00Z"),
    ];
    let queries = [
        "SELECT feature, psi FROM feature_drift WHERE model_id = $model_id AND (model_version IS NOT DISTINCT FROM $model_version) AND window_end = $window_end AND level = 'drift' ORDER BY feature",
        "SELECT model_id, avg(psi) AS value, count(*) AS n FROM feature_drift WHERE model_id = $model_id AND window_end > $window_end - INTERVAL '2 hours' AND window_end <= $window_end GROUP BY model_id",
        "SELECT feature FROM feature_drift WHERE window_start >= $window_start AND feature IN (SELECT feature FROM feature_drift WHERE window_end = $window_end AND psi > 0.5) ORDER BY feature, window_end",
        "SELECT model_id, value FROM model_metrics_latest WHERE model_id = $model_id AND window_end = $window_end",
        "SELECT $model_id AS m, $window_end AS t, count(*) AS n FROM feature_drift WHERE window_end = $window_end",
    ];
    let plans: Vec<_> = queries
        .iter()
        .map(|q| engine.plan(q).expect("plan"))
        .collect();
    let types = WindowRef::param_types();
    let prepared: Vec<_> = plans.iter().map(|p| engine.prepare(p, &types)).collect();
    // every one prepares, with the types the window's values have
    for p in &prepared {
        assert!(p.is_ok(), "{:?}", p.as_ref().err());
    }
    for (i, (start, end)) in hours.iter().enumerate() {
        // one hour in the history, the next ones live: a prepared plan
        // sees the rows that arrive after it was prepared
        engine
            .tables()
            .push("feature_drift", &drift_rows_at(20, start, end))
            .expect("push");
        if i == 0 {
            engine.tables().flush(&mut history).expect("flush");
        }
        for version in [Some("v1".to_owned()), None] {
            let window = WindowRef {
                model_id: "churn".into(),
                model_version: version,
                start: ms(start),
                end: ms(end),
            };
            let params = window.params();
            for ((sql, plan), prepared) in queries.iter().zip(&plans).zip(&prepared) {
                let planned = engine.execute(plan, Some(params.clone())).expect("planned");
                let prepared = prepared.as_ref().expect("prepared");
                let mut answer =
                    engine.execute_all(&[driftwatch_sql::Query::Prepared(prepared, &params)]);
                let answer = answer.pop().expect("one").expect("prepared");
                // the same columns and types; a column made of a
                // placeholder is nullable in the prepared plan (its value
                // may be NULL at another window), not in the planned one
                let columns = |s: &arrow::datatypes::SchemaRef| {
                    s.fields()
                        .iter()
                        .map(|f| (f.name().clone(), f.data_type().clone()))
                        .collect::<Vec<_>>()
                };
                assert_eq!(columns(&planned.0), columns(&answer.0), "{sql}");
                assert_eq!(printed(&planned), printed(&answer), "{sql} at {end}");
            }
        }
    }
    // the comparison rests on rows: the two hours before the last window's end
    let (_, rows) = engine
        .execute_all(&[driftwatch_sql::Query::Prepared(
            prepared[1].as_ref().expect("prepared"),
            &window().params(),
        )])
        .pop()
        .expect("one")
        .expect("rows");
    let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(rows[0].column(2));
    assert_eq!(n.value(0), 40);
}

#[test]
fn one_prepared_query_runs_for_two_windows_at_once_each_with_its_own_values() {
    let _serial = serial();
    let (_dir, _, engine, _history) = with_history();
    let hours = [
        ("2026-11-26T08:00:00Z", "2026-11-26T09:00:00Z", 20),
        ("2026-11-26T09:00:00Z", "2026-11-26T10:00:00Z", 30),
    ];
    for (start, end, n) in hours {
        engine
            .tables()
            .push("feature_drift", &drift_rows_at(n, start, end))
            .expect("push");
    }
    let sql = "SELECT $window_end AS t, count(*) AS n FROM feature_drift \
               WHERE window_end = $window_end AND feature IN \
               (SELECT feature FROM feature_drift WHERE window_end = $window_end)";
    let plan = engine.plan(sql).expect("plan");
    let prepared = engine
        .prepare(&plan, &WindowRef::param_types())
        .expect("prepared");
    let params: Vec<_> = hours
        .iter()
        .map(|(start, end, _)| {
            WindowRef {
                start: ms(start),
                end: ms(end),
                ..window()
            }
            .params()
        })
        .collect();
    let count = |rows: &driftwatch_sql::engine::Rows| {
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(rows.1[0].column(1))
            .value(0)
    };
    // the same query on both lanes at once, then again with the kept plans:
    // each run reads its own window's value, and the join's build side of
    // one run is not the next one's
    for _ in 0..3 {
        let answers = engine.execute_all(&[
            driftwatch_sql::Query::Prepared(&prepared, &params[0]),
            driftwatch_sql::Query::Prepared(&prepared, &params[1]),
        ]);
        let answers: Vec<_> = answers.into_iter().map(|a| a.expect("rows")).collect();
        assert_eq!(
            (count(&answers[0]), count(&answers[1])),
            (20, 30),
            "{}",
            printed(&answers[1])
        );
    }
}

/// A count of `feature_drift` rows by the process-wide engine.
fn drift_rows(engine: &Engine) -> i64 {
    driftwatch_sql::testing::count_rows(engine, "feature_drift").expect("a count")
}

#[test]
fn the_process_engine_sees_every_pipelines_rows_once_live_or_in_the_history() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("dir");
    let history_dir = dir.path().join("history");
    let process = Engine::new(
        Tables::process(standard_tables().expect("tables"), Some(&history_dir)).expect("tables"),
        Limits::default(),
    )
    .expect("engine");
    // two pipelines (Kafka partitions), each with its tables and its writer
    let member = |writer: &str| {
        let mut tables =
            Tables::new(standard_tables().expect("tables"), Some(&history_dir)).expect("tables");
        process.tables().join(&mut tables).expect("joins");
        let history = History::open(&history_dir, writer).expect("history");
        (tables, history)
    };
    let (p0, mut h0) = member("g-p0");
    let (p1, mut h1) = member("g-p1");
    assert!(
        Tables::new(standard_tables().expect("tables"), None)
            .expect("tables")
            .join(&mut Tables::default())
            .is_err(),
        "only process tables take members"
    );
    p0.push("feature_drift", &feature_drift_rows(3))
        .expect("push");
    p1.push("feature_drift", &feature_drift_rows(4))
        .expect("push");
    assert_eq!(drift_rows(&process), 7, "live rows of both");
    p0.flush(&mut h0).expect("flush");
    assert_eq!(
        drift_rows(&process),
        7,
        "p0's rows in the history, p1's live"
    );
    // rows move to files and merge while another thread queries: each
    // query sees every row once
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(drift_rows(&process));
            }
            seen
        });
        let mut expected = 7;
        for round in 0..150 {
            for (tables, history) in [(&p0, &mut h0), (&p1, &mut h1)] {
                tables
                    .push("feature_drift", &feature_drift_rows(2))
                    .expect("push");
                expected += 2;
                let seq = tables.flush(history).expect("flush");
                if round % 3 == 2
                    && let Some(job) = history.begin_compact(seq)
                {
                    tables
                        .publish_compaction(history, job.run().expect("merged"))
                        .expect("published");
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = reader.join().expect("reader");
        assert!(!seen.is_empty());
        // a count only grows, by whole pushes of two rows
        for pair in seen.windows(2) {
            assert!(pair[0] <= pair[1], "{seen:?}");
        }
        assert!(
            seen.iter()
                .all(|n| (7..=expected).contains(n) && (n - 7) % 2 == 0),
            "{seen:?}"
        );
        assert_eq!(drift_rows(&process), expected);
    });
    // a pipeline given up (its partition revoked) takes its live rows with it
    p1.push("feature_drift", &feature_drift_rows(5))
        .expect("push");
    let before = drift_rows(&process);
    drop(p1);
    assert_eq!(drift_rows(&process), before - 5);
}
