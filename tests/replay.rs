//! End-to-end tests of the `driftwatch` binary: generate, replay, demo, and
//! what happens to bad input.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn driftwatch(args: &[&str], cwd: &Path) -> Output {
    driftwatch_env(args, cwd, &[])
}

/// `driftwatch ARGS` in `cwd` with extra environment.
fn driftwatch_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .env_remove("DRIFTWATCH_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("run driftwatch");
    if !out.status.success() {
        eprintln!("stdout:\n{}", String::from_utf8_lossy(&out.stdout));
        eprintln!("stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    out
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let out = driftwatch(args, cwd);
    assert!(out.status.success(), "driftwatch {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn malformed_lines_go_to_the_dead_letter_file_and_good_lines_all_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    ok(
        &[
            "gen",
            "--events",
            "2000",
            "--out",
            p(&events),
            "--late-fraction",
            "0",
        ],
        dir.path(),
    );
    let good: Vec<String> = std::fs::read_to_string(&events)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect();
    let huge = format!(
        r#"{{"event_id":"big","model_id":"churn","timestamp":"2026-11-01T01:00:00Z","features":{{"blob":"{}"}},"prediction":{{"score":0.5}}}}"#,
        "x".repeat(10 * 1024 * 1024)
    );
    // (line content, expected reason)
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (br#"{"event_id":"t1","model_id":"churn","timestamp":"2026-11-01T01:00:00Z","features":{"#.to_vec(), "invalid_json"),
        (br#"{"event_id":"w1","model_id":"churn","timestamp":"2026-11-01T01:00:00Z","features":{"age":[1]},"prediction":{"score":0.5}}"#.to_vec(), "wrong_type"),
        (br#"{"event_id":"w2","model_id":"churn","timestamp":"2026-11-01T01:00:00Z","prediction":{"score":"high"}}"#.to_vec(), "wrong_type"),
        (br#"{"model_id":"churn","timestamp":"2026-11-01T01:00:00Z","prediction":{"score":0.5}}"#.to_vec(), "missing_field"),
        (br#"{"event_id":"b1","model_id":"churn","timestamp":"01/11/2026 01:00","prediction":{"score":0.5}}"#.to_vec(), "bad_timestamp"),
        (br#"{"event_id":"b2","model_id":"churn","timestamp":1793494800,"label":"1"}"#.to_vec(), "bad_timestamp"),
        (huge.into_bytes(), "oversized"),
        (b"".to_vec(), "empty"),
        (b"[1,2,3]".to_vec(), "not_an_object"),
        (b"{\"event_id\":\"\xff\xfe\",\"model_id\":\"churn\"}".to_vec(), "invalid_json"),
    ];
    // interleave: a bad line after every 150 good ones
    let mut file = std::fs::File::create(&events).expect("create");
    let mut expected_bad_lines = BTreeMap::new();
    let mut line = 0u64;
    let mut bad_iter = bad.iter();
    for (i, g) in good.iter().enumerate() {
        if i % 150 == 75
            && let Some((content, reason)) = bad_iter.next()
        {
            file.write_all(content).expect("write");
            file.write_all(b"\n").expect("write");
            line += 1;
            expected_bad_lines.insert(line, *reason);
        }
        file.write_all(g.as_bytes()).expect("write");
        file.write_all(b"\n").expect("write");
        line += 1;
    }
    assert!(bad_iter.next().is_none(), "every bad line written");
    drop(file);

    let out = dir.path().join("out");
    ok(&["replay", p(&events), "--out", p(&out), "-q"], dir.path());
    let summary = read_json(&out.join("run-summary.json"));
    assert_eq!(summary["read"], line);
    assert_eq!(summary["accepted"], good.len() as u64);
    assert_eq!(summary["rejected"], bad.len() as u64);
    // every refusal is in the dead-letter file but the blank line, which
    // is counted only
    let dead = jsonl(&out.join("dead-letter.jsonl"));
    assert_eq!(dead.len(), bad.len() - 1);
    assert_eq!(
        summary["dead_letter_unwritten"],
        serde_json::json!({"empty": 1})
    );
    for record in &dead {
        let n = record["line"].as_u64().expect("line number");
        assert_eq!(
            record["reason"], expected_bad_lines[&n],
            "line {n}: {record}"
        );
        assert!(
            record["source"]
                .as_str()
                .expect("source")
                .ends_with("events.jsonl")
        );
        assert!(!record["detail"].as_str().expect("detail").is_empty());
    }
    let oversized = dead
        .iter()
        .find(|r| r["reason"] == "oversized")
        .expect("oversized record");
    assert!(oversized["original_len"].as_u64().expect("len") > 10 * 1024 * 1024);
    assert_eq!(oversized["original_truncated"], true);
    let typed = dead
        .iter()
        .find(|r| {
            r["original"]
                .as_str()
                .is_some_and(|o| o.contains("\"age\":[1]"))
        })
        .expect("array feature record");
    assert!(
        typed["detail"]
            .as_str()
            .expect("detail")
            .contains("features.age"),
        "{typed}"
    );
    // the accepted events' windows hold every accepted prediction
    let windows = jsonl(&out.join("window_summary.jsonl"));
    let in_windows: u64 = windows
        .iter()
        .map(|w| w["events"].as_u64().expect("events"))
        .sum();
    assert_eq!(
        in_windows,
        summary["predictions"].as_u64().expect("predictions")
    );
}

/// Replays `input` into the data directory of `cwd` again (an earlier
/// replay's history replaced) and reads its tables.
fn replay_tables(input: &Path, out: &Path, cwd: &Path) -> (Value, String, String) {
    ok(
        &["replay", p(input), "--out", p(out), "-q", "--replace"],
        cwd,
    );
    (
        read_json(&out.join("run-summary.json")),
        std::fs::read_to_string(out.join("window_summary.jsonl")).expect("windows"),
        std::fs::read_to_string(out.join("feature_summary.jsonl")).expect("features"),
    )
}

/// The same stream as JSONL, gzip JSONL and Parquet gives identical results.
#[test]
fn jsonl_gzip_and_parquet_replay_to_the_same_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut results = Vec::new();
    for name in ["e.jsonl", "e.jsonl.gz", "e.parquet"] {
        let file = dir.path().join(name);
        ok(
            &["gen", "--events", "30000", "--seed", "7", "--out", p(&file)],
            dir.path(),
        );
        let out = dir.path().join(format!("out-{name}"));
        results.push(replay_tables(&file, &out, dir.path()));
    }
    let (summary, windows, features) = &results[0];
    assert_eq!(summary["read"], 30000);
    assert!(summary["labels"].as_u64().expect("labels") > 5000);
    for (s, w, f) in &results[1..] {
        let mut s = s.clone();
        s["dead_letter"] = summary["dead_letter"].clone();
        assert_eq!(&s, summary);
        assert_eq!(w, windows);
        assert_eq!(f, features);
    }
    // and the Parquet output holds the same rows as the JSONL output
    let parquet = dir
        .path()
        .join("out-e.jsonl")
        .join("feature_summary.parquet");
    let rows: usize = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(parquet).expect("open"),
    )
    .expect("parquet")
    .build()
    .expect("reader")
    .map(|b| b.expect("batch").num_rows())
    .sum();
    assert_eq!(rows, features.lines().count());
}

/// Done-when of the foundation: a 1,000,000-event file replays with
/// accepted + rejected = lines, and every late prediction is in the dead letters.
#[test]
fn a_million_events_are_all_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("1m.jsonl.gz");
    ok(
        &["gen", "--events", "1000000", "--out", p(&file)],
        dir.path(),
    );
    let out = dir.path().join("out");
    ok(&["replay", p(&file), "--out", p(&out), "-q"], dir.path());
    let summary = read_json(&out.join("run-summary.json"));
    let num = |k: &str| summary[k].as_u64().unwrap_or_else(|| panic!("{k}"));
    assert_eq!(num("read"), 1_000_000);
    assert_eq!(num("accepted") + num("rejected"), 1_000_000);
    assert_eq!(num("predictions") + num("labels"), num("accepted"));
    let late = summary["rejected_by_reason"]["late_event"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(
        late,
        num("rejected"),
        "only late events are refused in a generated file"
    );
    assert!(late > 0, "the generator sends some predictions late");
    let dead = std::fs::read_to_string(out.join("dead-letter.jsonl")).expect("dead letters");
    assert_eq!(dead.lines().count() as u64, late);
    let windows = jsonl(&out.join("window_summary.jsonl"));
    let in_windows: u64 = windows
        .iter()
        .map(|w| w["events"].as_u64().expect("events"))
        .sum();
    assert_eq!(in_windows, num("predictions"));
}

#[test]
fn demo_prints_windows_for_every_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stdout = ok(&["demo", "--events", "30000"], dir.path());
    for model in ["churn", "fraud", "eta"] {
        let lines = stdout.lines().filter(|l| l.starts_with(model)).count();
        assert!(lines >= 5, "{model}: {lines} window lines in\n{stdout}");
    }
    assert!(stdout.contains("read 30000 records"), "{stdout}");
}

/// Issue 4: accuracy per window with its label coverage; the churn model's
/// degraded phase shows in its metrics once labels for it have arrived, and
/// no metric is reported for a window before any of its labels.
#[test]
fn demo_shows_the_accuracy_drop_once_labels_arrive_and_its_recovery_with_the_retrained_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let stdout = ok(&["demo", "--out", p(&out)], dir.path());
    let drift_start = stdout
        .lines()
        .next()
        .and_then(|l| l.split("drift starts at ").nth(1))
        .expect("drift start in the first line");
    let drift_start = chrono::DateTime::parse_from_rfc3339(drift_start.trim())
        .expect("time")
        .timestamp_millis();
    let rows = jsonl(&out.join("model_metrics.jsonl"));
    let churn_accuracy: Vec<&Value> = rows
        .iter()
        .filter(|r| r["model_id"] == "churn" && r["metric"] == "accuracy")
        .collect();
    assert!(!churn_accuracy.is_empty());
    for r in &churn_accuracy {
        assert!(
            r["labeled"].as_u64().expect("labeled") > 0,
            "an accuracy without labels: {r}"
        );
        assert!(chrono_ms(&r["as_of"]) >= chrono_ms(&r["window_end"]), "{r}");
    }
    let (mut before, mut after, mut retrained) = (Vec::new(), Vec::new(), Vec::new());
    for r in churn_accuracy.iter().filter(|r| r["final"] == true) {
        let start = chrono_ms(&r["window_start"]);
        let accuracy = r["value"].as_f64().expect("value");
        let coverage = r["label_coverage"].as_f64().expect("coverage");
        if coverage < 0.3 {
            continue;
        }
        if r["model_version"] != "v12" {
            // the version the demo's retraining run delivered
            retrained.push(accuracy);
        } else if chrono_ms(&r["window_end"]) <= drift_start {
            before.push(accuracy);
        } else if start >= drift_start {
            after.push(accuracy);
        }
    }
    assert!(
        before.len() >= 5 && after.len() >= 2 && retrained.len() >= 2,
        "{before:?} {after:?} {retrained:?}"
    );
    assert!(
        retrained.iter().all(|a| *a > 0.85),
        "the retrained version: {retrained:?}"
    );
    assert!(
        stdout.contains("churn: v12 -> v13"),
        "the loop's story ends the demo:\n{stdout}"
    );
    assert!(
        before.iter().all(|a| *a > 0.85),
        "before the drift: {before:?}"
    );
    assert!(
        after.iter().all(|a| *a < 0.75),
        "after the drift: {after:?}"
    );
    // every label is accounted for
    let summary = read_json(&out.join("run-summary.json"));
    let l = &summary["performance"]["labels"];
    let n = |k: &str| l[k].as_u64().unwrap_or_else(|| panic!("{k}"));
    assert_eq!(n("received"), summary["labels"].as_u64().expect("labels"));
    assert_eq!(
        n("received"),
        n("joined")
            + n("duplicate")
            + n("without_prediction")
            + n("after_horizon")
            + n("unscorable")
    );
    let stats = jsonl(&out.join("label_stats.jsonl"));
    let received: u64 = stats
        .iter()
        .map(|r| r["received"].as_u64().expect("received"))
        .sum();
    assert_eq!(received, n("received"));
    // the drop is found by the online detectors too
    let changes = jsonl(&out.join("change_points.jsonl"));
    assert!(
        changes
            .iter()
            .any(|c| c["model_id"] == "churn" && chrono_ms(&c["event_time"]) >= drift_start),
        "{changes:?}"
    );
    assert!(stdout.contains("metrics rev 0"), "{stdout}");
}

#[test]
fn hopping_windows_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("e.jsonl");
    ok(
        &[
            "gen",
            "--events",
            "20000",
            "--out",
            p(&file),
            "--late-fraction",
            "0",
        ],
        dir.path(),
    );
    let out = dir.path().join("out");
    let status = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["replay", p(&file), "--out", p(&out), "-q", "--replace"])
        .env("DRIFTWATCH__WINDOW__KIND", "hopping")
        .env("DRIFTWATCH__WINDOW__SIZE", "2h")
        .env("DRIFTWATCH__WINDOW__SLIDE", "30m")
        .env("DRIFTWATCH__WINDOW__ALLOWED_LATENESS", "10m")
        .output()
        .expect("run");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let summary = read_json(&out.join("run-summary.json"));
    let windows = jsonl(&out.join("window_summary.jsonl"));
    let in_windows: u64 = windows
        .iter()
        .map(|w| w["events"].as_u64().expect("events"))
        .sum();
    // every prediction is in 4 windows, less those whose earliest windows had closed
    let predictions = summary["predictions"].as_u64().expect("predictions");
    assert!(
        in_windows <= 4 * predictions && in_windows >= 4 * predictions - 100,
        "{in_windows} vs {predictions}"
    );
    let first = &windows[0];
    assert_eq!(
        chrono_ms(&first["window_end"]) - chrono_ms(&first["window_start"]),
        2 * 3_600_000
    );
}

fn chrono_ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("timestamp text"))
        .expect("RFC 3339")
        .timestamp_millis()
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[window]\nsize = \"soon\"\n").expect("write");
    let out = driftwatch(
        &["--config", p(&config), "demo", "--events", "10"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("window.size") && err.contains("bad.toml"),
        "{err}"
    );

    std::fs::write(&config, "[windows]\nsize = \"1h\"\n").expect("write");
    let out = driftwatch(
        &["--config", p(&config), "demo", "--events", "10"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("windows"));
}

#[test]
fn a_missing_input_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing: PathBuf = dir.path().join("nope.jsonl");
    let out = driftwatch(&["replay", p(&missing)], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.jsonl"));
}

/// A reference built from training data replaces the first-window reference:
/// the first window is compared with it, and the injected drift is found.
#[test]
fn reference_profile_from_training_data_is_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let train = dir.path().join("train.jsonl");
    let live = dir.path().join("live.jsonl");
    ok(
        &[
            "gen",
            "--events",
            "40000",
            "--no-drift",
            "--seed",
            "3",
            "--out",
            p(&train),
        ],
        dir.path(),
    );
    ok(
        &["gen", "--events", "60000", "--seed", "4", "--out", p(&live)],
        dir.path(),
    );
    let built = ok(
        &[
            "reference",
            "build",
            p(&train),
            "--model",
            "churn",
            "--version",
            "v12",
        ],
        dir.path(),
    );
    assert!(built.contains("reference for churn v12"), "{built}");
    let listed = ok(&["reference", "list"], dir.path());
    assert!(
        listed.contains("churn") && listed.contains("v12"),
        "{listed}"
    );
    let shown = ok(
        &["reference", "show", "--model", "churn", "--version", "v12"],
        dir.path(),
    );
    assert!(
        shown.contains("tenure_months") && shown.contains("plan"),
        "{shown}"
    );

    let out = dir.path().join("out");
    ok(&["replay", p(&live), "--out", p(&out), "-q"], dir.path());
    let summaries = jsonl(&out.join("drift_summary.jsonl"));
    let first_churn = summaries
        .iter()
        .find(|r| r["model_id"] == "churn")
        .expect("churn windows");
    assert_eq!(
        first_churn["is_reference"], false,
        "churn compared with the stored profile"
    );
    let first_fraud = summaries
        .iter()
        .find(|r| r["model_id"] == "fraud")
        .expect("fraud windows");
    assert_eq!(
        first_fraud["is_reference"], true,
        "fraud has no stored profile"
    );
    let drift = jsonl(&out.join("feature_drift.jsonl"));
    let tenure_drifted = drift.iter().any(|r| {
        r["model_id"] == "churn" && r["feature"] == "tenure_months" && r["level"] == "drift"
    });
    assert!(
        tenure_drifted,
        "the injected shift of tenure_months is flagged"
    );

    // a chosen production window: the first 500 predictions of fraud after 01:00
    let window = ok(
        &[
            "reference",
            "build",
            p(&live),
            "--model",
            "fraud",
            "--version",
            "v3",
            "--from",
            "2026-11-01T01:00:00Z",
            "--until",
            "2026-11-01T05:00:00Z",
            "--first",
            "500",
        ],
        dir.path(),
    );
    assert!(
        window.contains("reference for fraud v3: 500 predictions"),
        "{window}"
    );
    let listed = ok(&["reference", "list"], dir.path());
    assert!(
        listed.contains("from 2026-11-01T01:00:00.000Z, until 2026-11-01T05:00:00.000Z, first 500"),
        "{listed}"
    );
    let bad = driftwatch(
        &[
            "reference",
            "build",
            p(&live),
            "--model",
            "fraud",
            "--from",
            "yesterday",
        ],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--from \"yesterday\""));

    let err = driftwatch(
        &["reference", "build", p(&train), "--model", "nosuch"],
        dir.path(),
    );
    assert_eq!(err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&err.stderr).contains("no prediction of model nosuch"));
}

/// Plain feature tables (no event fields), JSON Lines and Parquet, build
/// reference profiles; a bad row is counted, not fatal.
#[test]
fn reference_profile_from_a_plain_feature_table() {
    use std::sync::Arc;

    use arrow::array::{Float64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    let dir = tempfile::tempdir().expect("tempdir");
    let jsonl = dir.path().join("train.jsonl");
    let mut text = String::new();
    for i in 0..1000 {
        let plan = ["free", "pro", "team"][i % 3];
        text.push_str(&format!(
            "{{\"tenure_months\": {}, \"plan\": \"{plan}\"}}\n",
            10 + i % 40
        ));
    }
    text.push_str("{\"tenure_months\": [1, 2]}\n");
    std::fs::write(&jsonl, text).expect("write");
    let built = ok(
        &[
            "reference",
            "build",
            p(&jsonl),
            "--table",
            "--model",
            "churn",
            "--version",
            "v12",
        ],
        dir.path(),
    );
    assert!(
        built.contains("1000 predictions of 1001 records (1 rejected: "),
        "{built}"
    );
    let shown = ok(
        &["reference", "show", "--model", "churn", "--version", "v12"],
        dir.path(),
    );
    assert!(
        shown.contains("tenure_months") && shown.contains("numeric"),
        "{shown}"
    );
    assert!(
        shown.contains("plan") && shown.contains("3 categories"),
        "{shown}"
    );

    let parquet = dir.path().join("train.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("amount", DataType::Float64, true),
        Field::new("mcc", DataType::Utf8, true),
    ]));
    let amounts: Vec<f64> = (0..500).map(|i| f64::from(i) * 1.5).collect();
    let mccs: Vec<&str> = (0..500)
        .map(|i| if i % 2 == 0 { "5411" } else { "5812" })
        .collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Float64Array::from(amounts)),
            Arc::new(StringArray::from(mccs)),
        ],
    )
    .expect("batch");
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&parquet).expect("create"),
        schema,
        None,
    )
    .expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    let built = ok(
        &[
            "reference",
            "build",
            p(&parquet),
            "--table",
            "--model",
            "fraud",
        ],
        dir.path(),
    );
    assert!(
        built.contains("500 predictions of 500 records (0 rejected), 2 features"),
        "{built}"
    );
    let listed = ok(&["reference", "list"], dir.path());
    assert!(
        listed.contains("fraud") && listed.contains("feature table"),
        "{listed}"
    );
}

/// Rows of one query over the history of a run in `cwd` (`driftwatch sql`).
fn sql(query: &str, cwd: &Path) -> Vec<Value> {
    ok(&["sql", "--format", "json", query], cwd)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json row"))
        .collect()
}

/// `driftwatch gen --events 20000 --seed 3 --out FILE`.
fn gen_20000_seed_3(file: &Path, cwd: &Path) {
    ok(
        &["gen", "--events", "20000", "--seed", "3", "--out", p(file)],
        cwd,
    );
}

/// Issue 6: the `events` table holds every accepted prediction once, with
/// its features and segments sliceable by name.
#[test]
fn the_events_table_holds_every_accepted_prediction_sliceable_by_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    gen_20000_seed_3(&events, dir.path());
    let out = dir.path().join("out");
    ok(&["replay", p(&events), "--out", p(&out), "-q"], dir.path());
    let summary = read_json(&out.join("run-summary.json"));
    // what the input holds, less the late predictions refused into the dead letters
    let late: std::collections::BTreeSet<String> = jsonl(&out.join("dead-letter.jsonl"))
        .iter()
        .map(|d| {
            let original: Value =
                serde_json::from_str(d["original"].as_str().expect("original")).expect("json");
            original["event_id"].as_str().expect("event_id").to_owned()
        })
        .collect();
    let mut by_region: BTreeMap<String, u64> = BTreeMap::new();
    let mut missing = 0;
    let mut numeric: Option<(String, f64)> = None;
    for e in jsonl(&events) {
        if e.get("prediction").is_none() || late.contains(e["event_id"].as_str().expect("id")) {
            continue;
        }
        *by_region
            .entry(e["segments"]["region"].as_str().expect("region").to_owned())
            .or_default() += 1;
        let features = e["features"].as_object().expect("features");
        missing += features.values().filter(|v| v.is_null()).count();
        // the first numeric feature seen, summed over the events that have it
        let (name, sum) = numeric.get_or_insert_with(|| {
            let name = features
                .iter()
                .find(|(_, v)| v.is_number())
                .map(|(k, _)| k.clone())
                .expect("a numeric feature");
            (name, 0.0)
        });
        *sum += features
            .get(name.as_str())
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
    }
    let rows = sql(
        "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events",
        dir.path(),
    );
    assert_eq!(rows[0]["n"], summary["predictions"], "{rows:?}");
    assert_eq!(rows[0]["ids"], summary["predictions"], "{rows:?}");
    let rows = sql(
        "SELECT segments['region'] AS region, count(*) AS n FROM events \
         GROUP BY region ORDER BY region",
        dir.path(),
    );
    let got: BTreeMap<String, u64> = rows
        .iter()
        .map(|r| {
            (
                r["region"].as_str().expect("region").to_owned(),
                r["n"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(got, by_region);
    let rows = sql(
        "SELECT sum(cardinality(missing)) AS n FROM events",
        dir.path(),
    );
    assert_eq!(rows[0]["n"].as_u64(), Some(missing as u64), "{rows:?}");
    let (name, sum) = numeric.expect("predictions");
    let rows = sql(
        &format!("SELECT sum(numeric['{name}']) AS s FROM events"),
        dir.path(),
    );
    let got = rows[0]["s"].as_f64().expect("sum");
    assert!(
        (got - sum).abs() <= 1e-9 * sum.abs().max(1.0),
        "{name}: {got} vs {sum}"
    );
}

/// Runs `driftwatch replay FILE --out OUT -q` in `cwd` with extra
/// environment; returns the run summary.
fn replay_with_env(file: &Path, out: &Path, cwd: &Path, env: &[(&str, &str)]) -> Value {
    let output = driftwatch_env(&["replay", p(file), "--out", p(out), "-q"], cwd, env);
    assert!(output.status.success(), "replay failed");
    read_json(&out.join("run-summary.json"))
}

/// A prediction of `model` at `time` (RFC 3339).
fn prediction_line(id: &str, model: &str, time: &str) -> String {
    serde_json::json!({
        "event_id": id, "model_id": model, "timestamp": time,
        "features": {"x": 1.5}, "prediction": {"score": 0.5}
    })
    .to_string()
}

/// `n` predictions of `model`, one a minute from 2026-11-01T00:00:00Z.
fn minute_predictions(model: &str, n: usize) -> Vec<String> {
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap();
    (0..n)
        .map(|i| {
            let t = start + chrono::Duration::minutes(i as i64);
            prediction_line(&format!("{model}-{i}"), model, &t.to_rfc3339())
        })
        .collect()
}

#[test]
fn a_far_future_event_is_refused_and_every_other_model_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let mut lines = vec![prediction_line("a", "attacker", "9999-12-31T23:00:00Z")];
    lines.extend(minute_predictions("churn", 200));
    std::fs::write(&events, lines.join("\n")).expect("write");
    let summary = replay_with_env(&events, &dir.path().join("out"), dir.path(), &[]);
    assert_eq!(
        summary["rejected_by_reason"],
        serde_json::json!({"future_event": 1})
    );
    assert_eq!(summary["models"]["churn"]["predictions"], 200);
    assert_eq!(summary["models"]["churn"]["late"], 0);
    // 200 minutes: four one-hour windows
    assert_eq!(summary["windows_closed"], 4);
    let dead = jsonl(&dir.path().join("out/dead-letter.jsonl"));
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]["detail"]
            .as_str()
            .unwrap()
            .contains("ingest.max_future_skew"),
        "{}",
        dead[0]
    );
}

#[test]
fn long_model_ids_are_refused_and_path_like_ones_kept_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let long = "m".repeat(250);
    let slashes = "/".repeat(60);
    // the models' events interleaved, one a minute each
    let streams: Vec<Vec<String>> = [long.as_str(), "..", ".", "a/b", "a_b", &slashes]
        .iter()
        .map(|m| minute_predictions(m, if m.len() == 250 { 30 } else { 90 }))
        .collect();
    let lines: Vec<String> = (0..90)
        .flat_map(|i| streams.iter().filter_map(move |s| s.get(i).cloned()))
        .collect();
    std::fs::write(&events, lines.join("\n")).expect("write");
    let summary = replay_with_env(&events, &dir.path().join("out"), dir.path(), &[]);
    assert_eq!(
        summary["rejected_by_reason"],
        serde_json::json!({"invalid_name": 30})
    );
    for model in ["..", ".", "a/b", "a_b", slashes.as_str()] {
        assert_eq!(summary["models"][model]["predictions"], 90, "{model}");
    }
    // the history holds days, not models: one directory, inside the table's
    let table = dir.path().join("driftwatch-data/history/window_summary");
    let days: Vec<String> = std::fs::read_dir(&table)
        .expect("history written")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(days, ["date=2026-11-01"]);
    // and the SQL engine finds every model's rows under its own id
    let out = ok(
        &[
            "sql",
            "SELECT model_id, count(*) AS windows FROM window_summary GROUP BY model_id ORDER BY model_id",
            "--format",
            "json",
        ],
        dir.path(),
    );
    for model in ["..", ".", "a/b", "a_b"] {
        assert!(
            out.contains(&format!("{{\"model_id\":\"{model}\",\"windows\":2}}")),
            "{out}"
        );
    }
    let out = ok(
        &[
            "sql",
            "SELECT count(*) AS windows FROM window_summary WHERE model_id = 'a/b'",
            "--format",
            "json",
        ],
        dir.path(),
    );
    assert!(out.contains("{\"windows\":2}"), "{out}");
}

#[test]
fn blank_lines_are_counted_and_dead_letters_stop_at_their_cap() {
    use flate2::write::GzEncoder;

    let dir = tempfile::tempdir().expect("tempdir");
    // 2M blank lines gzip to a few kilobytes
    let blank = dir.path().join("blank.jsonl.gz");
    let mut gz = GzEncoder::new(
        std::fs::File::create(&blank).unwrap(),
        flate2::Compression::best(),
    );
    gz.write_all(&vec![b'\n'; 2_000_000]).unwrap();
    gz.finish().unwrap();
    assert!(std::fs::metadata(&blank).unwrap().len() < 10_000);
    let out = dir.path().join("out-blank");
    let summary = replay_with_env(&blank, &out, dir.path(), &[]);
    assert_eq!(summary["rejected_by_reason"]["empty"], 2_000_000);
    assert_eq!(summary["dead_letter_unwritten"]["empty"], 2_000_000);
    let dead = out.join("dead-letter.jsonl");
    assert!(std::fs::metadata(&dead).map_or(0, |m| m.len()) == 0);

    // 20,000 junk lines of 300 bytes (6 MB) against a cap of 1 MiB
    let junk = dir.path().join("junk.jsonl.gz");
    let mut gz = GzEncoder::new(
        std::fs::File::create(&junk).unwrap(),
        flate2::Compression::best(),
    );
    for _ in 0..20_000 {
        gz.write_all(&[b'x'; 300]).unwrap();
        gz.write_all(b"\n").unwrap();
    }
    gz.finish().unwrap();
    let out = dir.path().join("out-junk");
    let summary = replay_with_env(
        &junk,
        &out,
        dir.path(),
        &[("DRIFTWATCH__INGEST__DEAD_LETTER_MAX_BYTES", "1MiB")],
    );
    assert_eq!(summary["rejected_by_reason"]["invalid_json"], 20_000);
    let written = jsonl(&out.join("dead-letter.jsonl")).len() as u64;
    let unwritten = summary["dead_letter_unwritten"]["invalid_json"]
        .as_u64()
        .unwrap();
    assert_eq!(written + unwritten, 20_000);
    assert!(
        written > 1000 && unwritten > 10_000,
        "{written} {unwritten}"
    );
    let size = std::fs::metadata(out.join("dead-letter.jsonl"))
        .unwrap()
        .len();
    assert!(size <= 1024 * 1024, "{size} bytes of dead letters");
}

#[test]
fn rfc3339_events_from_1950_on_are_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("weather.jsonl");
    let start = chrono::DateTime::parse_from_rfc3339("1950-01-01T00:00:00Z").unwrap();
    let lines: Vec<String> = (0..400)
        .map(|day| {
            let t = start + chrono::Duration::days(day);
            prediction_line(&format!("d{day}"), "rain", &t.to_rfc3339())
        })
        .collect();
    std::fs::write(&events, lines.join("\n")).expect("write");
    let summary = replay_with_env(&events, &dir.path().join("out"), dir.path(), &[]);
    assert_eq!(summary["accepted"], 400);
    assert_eq!(summary["rejected"], 0);
    assert_eq!(summary["windows_closed"], 400);
}

#[test]
fn a_labelled_training_file_builds_a_reference_and_replays_as_prediction_and_label() {
    let dir = tempfile::tempdir().expect("tempdir");
    let train = dir.path().join("train.jsonl");
    let start = chrono::DateTime::parse_from_rfc3339("1960-01-01T00:00:00Z").unwrap();
    let mut lines: Vec<String> = (0..500)
        .map(|i| {
            let t = start + chrono::Duration::days(i);
            let wind = ["n", "s"][i as usize % 2];
            serde_json::json!({
                "event_id": format!("r{i}"), "model_id": "rain", "timestamp": t.to_rfc3339(),
                "features": {"humidity": 40 + i % 50, "wind": wind},
                "prediction": {"score": (i % 10) as f64 / 10.0},
                "label": if i % 3 == 0 { "1" } else { "0" }
            })
            .to_string()
        })
        .collect();
    lines.push(r#"{"event_id":"bad","model_id":"rain","timestamp":"1960-01-01T00:00:00Z","prediction":{"score":2}}"#.to_owned());
    std::fs::write(&train, lines.join("\n")).expect("write");
    let built = ok(
        &["reference", "build", p(&train), "--model", "rain"],
        dir.path(),
    );
    assert!(
        built.contains("500 predictions of 501 records (1 rejected: out_of_range 1; in "),
        "{built}"
    );
    let dead = dir
        .path()
        .join("driftwatch-data/references/rain/_any.dead-letter.jsonl");
    assert_eq!(jsonl(&dead)[0]["reason"], "out_of_range");

    let one = dir.path().join("one.jsonl");
    std::fs::write(&one, &lines[0]).expect("write");
    let summary = replay_with_env(&one, &dir.path().join("out"), dir.path(), &[]);
    assert_eq!(summary["read"], 1);
    assert_eq!(summary["accepted"], 1);
    assert_eq!(summary["predictions"], 1);
    assert_eq!(summary["labels"], 1);
    assert_eq!(summary["performance"]["labels"]["received"], 1);
    assert_eq!(summary["performance"]["labels"]["joined"], 1);
}

#[test]
fn separate_prediction_and_label_files_replay_like_the_merged_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let generated = dir.path().join("gen.jsonl");
    gen_20000_seed_3(&generated, dir.path());
    // the stream in event-time order, and the same records split by kind
    let mut lines: Vec<(String, String)> = std::fs::read_to_string(&generated)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["timestamp"].as_str().unwrap().to_owned(), l.to_owned())
        })
        .collect();
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let write = |name: &str, keep: &dyn Fn(&str) -> bool| {
        let path = dir.path().join(name);
        let text: Vec<&str> = lines
            .iter()
            .map(|(_, l)| l.as_str())
            .filter(|l| keep(l))
            .collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        path
    };
    let merged = write("merged.jsonl", &|_| true);
    let predictions = write("predictions.jsonl", &|l| l.contains("\"prediction\""));
    let labels = write("labels.jsonl", &|l| !l.contains("\"prediction\""));

    let merged_out = dir.path().join("out-merged");
    ok(
        &["replay", p(&merged), "--out", p(&merged_out), "-q"],
        dir.path(),
    );
    let split_out = dir.path().join("out-split");
    ok(
        &[
            "replay",
            p(&predictions),
            p(&labels),
            "--out",
            p(&split_out),
            "-q",
            "--replace",
        ],
        dir.path(),
    );
    let mut a = read_json(&merged_out.join("run-summary.json"));
    let mut b = read_json(&split_out.join("run-summary.json"));
    assert!(a["performance"]["labels"]["joined"].as_u64().unwrap() > 5000);
    assert_eq!(a["performance"]["labels"]["joined_before_prediction"], 0);
    for s in [&mut a, &mut b] {
        s["dead_letter"] = Value::Null;
    }
    assert_eq!(a, b);
    for table in [
        "window_summary.jsonl",
        "model_metrics.jsonl",
        "feature_drift.jsonl",
    ] {
        let read = |d: &Path| std::fs::read_to_string(d.join(table)).unwrap();
        assert!(read(&merged_out) == read(&split_out), "{table} differs");
    }
}

#[test]
fn a_flood_of_feature_names_or_versions_is_refused_past_the_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let mut lines = Vec::new();
    // 20 events of 40,000 new feature names each (800,000 names, 13 MB)
    for e in 0..20 {
        let features: serde_json::Map<String, Value> = (0..40_000)
            .map(|f| (format!("f{e}_{f}"), Value::from(1)))
            .collect();
        lines.push(
            serde_json::json!({
                "event_id": format!("wide{e}"), "model_id": "wide",
                "timestamp": "2026-11-01T00:00:00Z",
                "features": features, "prediction": {"score": 0.5}
            })
            .to_string(),
        );
    }
    // 2,000 versions of one model
    for v in 0..2_000 {
        lines.push(
            serde_json::json!({
                "event_id": format!("v{v}"), "model_id": "versions", "model_version": format!("v{v}"),
                "timestamp": "2026-11-01T00:00:01Z", "prediction": {"score": 0.5}
            })
            .to_string(),
        );
    }
    lines.extend(minute_predictions("churn", 10));
    std::fs::write(&events, lines.join("\n")).expect("write");
    let summary = replay_with_env(&events, &dir.path().join("out"), dir.path(), &[]);
    assert_eq!(
        summary["rejected_by_reason"],
        serde_json::json!({"too_many_features": 20, "too_many_versions": 2_000 - 16})
    );
    assert_eq!(summary["models"]["versions"]["predictions"], 16);
    assert_eq!(summary["models"]["churn"]["predictions"], 10);
    let dead = jsonl(&dir.path().join("out/dead-letter.jsonl"));
    assert!(
        dead[0]["detail"]
            .as_str()
            .unwrap()
            .contains("limits.max_features = 1000"),
        "{}",
        dead[0]
    );
}

/// Issue 17: values from events with escape sequences and newlines (a
/// category, shown by a rule's alert line and its annotation, and by
/// `driftwatch sql`) reach the terminal escaped, one line each.
#[test]
fn control_characters_from_events_are_escaped_on_the_console_and_in_sql_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let hostile = "fr\u{1b}]0;owned\u{7}\u{1b}[2J\nFORGED line\u{202e}";
    let events: Vec<String> = (0..90)
        .map(|i| {
            serde_json::json!({
                "event_id": format!("e{i}"), "model_id": "churn",
                "timestamp": format!("2026-11-01T{:02}:{:02}:00Z", i / 60, i % 60),
                "features": {"x": 1.5, "country": hostile},
                "prediction": {"score": 0.5}
            })
            .to_string()
        })
        .collect();
    std::fs::write(d.join("events.jsonl"), events.join("\n")).expect("write");
    std::fs::write(
        d.join("driftwatch.toml"),
        "data_dir = \"data\"\n[sql]\nrules_dir = \"rules\"\n",
    )
    .expect("config");
    std::fs::create_dir(d.join("rules")).expect("rules dir");
    std::fs::write(
        d.join("rules/country.toml"),
        r#"[[rule]]
name = "country_seen"
sql = """SELECT model_id, categorical['country'] AS country, 1.0 AS value FROM events
         WHERE model_id = $model_id AND event_time >= $window_start AND event_time < $window_end LIMIT 1"""
annotations = { summary = "country {{ country }} seen" }
"#,
    )
    .expect("rule");
    let out = driftwatch(
        &[
            "--config",
            "driftwatch.toml",
            "replay",
            "events.jsonl",
            "--out",
            "out",
        ],
        d,
    );
    assert!(out.status.success(), "replay failed");
    let escaped = r"fr\u{1b}]0;owned\u{7}\u{1b}[2J\nFORGED line\u{202e}";
    for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{202e}'),
            "{what}: {text}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("FORGED")),
            "{what}: {text}"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("country={escaped}")), "{stdout}");
    assert!(
        stdout.contains(&format!("country {escaped} seen")),
        "{stdout}"
    );
    let table = ok(
        &[
            "--config",
            "driftwatch.toml",
            "sql",
            "SELECT DISTINCT categorical['country'] AS country, map_keys(categorical) AS k, \
             make_array(categorical['country']) AS nested FROM events",
        ],
        d,
    );
    assert!(
        !table.contains('\u{1b}') && !table.lines().any(|l| l.starts_with("FORGED")),
        "{table}"
    );
    assert!(table.contains(escaped), "{table}");
    assert!(table.contains("1 row(s)"), "{table}");
}

/// Issue 17: `reference build` killed at every point of its run leaves the
/// profile as it was or as the new build writes it, never a torn file.
#[test]
fn a_kill_during_a_profile_write_leaves_the_old_or_the_new_profile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let train = |seed: &str| {
        let file = d.join(format!("train-{seed}.jsonl"));
        ok(
            &[
                "gen",
                "--events",
                "3000",
                "--no-drift",
                "--seed",
                seed,
                "--out",
                p(&file),
            ],
            d,
        );
        file
    };
    let (a, b) = (train("1"), train("2"));
    let build = |file: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_driftwatch"));
        c.args([
            "reference",
            "build",
            p(file),
            "--model",
            "churn",
            "--version",
            "v12",
        ])
        .current_dir(d)
        .env_remove("DRIFTWATCH_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        c
    };
    let profile = d.join("driftwatch-data/references/churn/v12.profile");
    let mut whole = Vec::new();
    let started = std::time::Instant::now();
    for file in [&a, &b] {
        assert!(build(file).status().expect("run").success());
        whole.push(std::fs::read(&profile).expect("profile"));
    }
    let took = started.elapsed() / 2;
    assert_ne!(whole[0], whole[1]);
    for round in 0..30u32 {
        let mut child = build(if round % 2 == 0 { &a } else { &b })
            .spawn()
            .expect("spawn");
        std::thread::sleep(took * round / 30);
        let _ = child.kill();
        child.wait().expect("wait");
        let now = std::fs::read(&profile).expect("profile");
        assert!(whole.contains(&now), "round {round}: a torn profile");
    }
    let leftovers: Vec<_> = std::fs::read_dir(profile.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "v12.profile" && n != "v12.labelfree")
        .collect();
    // a killed write may leave its temporary (hidden, never read as a
    // profile); the label-free file beside it is whole too (and only used
    // with the profile it was built with)
    assert!(
        leftovers.iter().all(|n| {
            let n = n.to_string_lossy();
            n.starts_with(".v12.profile.") || n.starts_with(".v12.labelfree.")
        }),
        "{leftovers:?}"
    );
}

/// Issue 18: the benchmark workload — one model, a given number of
/// predictions, 20 numeric and 5 categorical features.
#[test]
fn gen_writes_one_models_predictions_with_the_features_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("w.jsonl");
    ok(
        &[
            "gen",
            "--predictions",
            "3000",
            "--model",
            "churn",
            "--numeric-features",
            "20",
            "--categorical-features",
            "5",
            "--out",
            p(&file),
        ],
        dir.path(),
    );
    let events = jsonl(&file);
    let predictions: Vec<&Value> = events
        .iter()
        .filter(|e| e.get("prediction").is_some())
        .collect();
    assert_eq!(predictions.len(), 3000);
    assert!(events.len() > 3000, "labels arrive between the predictions");
    for e in &events {
        assert_eq!(e["model_id"], "churn");
    }
    let features = predictions[0]["features"].as_object().expect("features");
    let numeric = features.values().filter(|v| v.is_number()).count();
    let text = features.values().filter(|v| v.is_string()).count();
    assert_eq!((numeric, text), (20, 5), "{features:?}");
    let out = driftwatch(
        &[
            "gen",
            "--predictions",
            "10",
            "--model",
            "nope",
            "--out",
            p(&file),
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no synthetic model \"nope\" (there are churn, fraud, eta)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regression (issue 41, item 9): `driftwatch sql` in a directory with no
/// data answered `0 row(s)` and nothing else.
#[test]
fn a_query_that_finds_nothing_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let query = |sql: &str| {
        let out = driftwatch(&["sql", sql], dir.path());
        assert!(out.status.success(), "{out:?}");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (stdout, stderr) = query("SELECT * FROM window_summary");
    assert!(stdout.contains("0 row(s)"), "{stdout}");
    assert!(stderr.contains("no history in"), "{stderr}");
    let file = dir.path().join("e.jsonl");
    ok(&["gen", "--events", "20000", "--out", p(&file)], dir.path());
    ok(&["replay", p(&file), "-q"], dir.path());
    let (_, stderr) = query("SELECT * FROM window_summary WHERE model_id = 'chrun'");
    assert!(
        stderr.contains("holds the models: churn, eta, fraud"),
        "{stderr}"
    );
    let (stdout, stderr) = query("SELECT count(*) AS n FROM window_summary");
    assert!(
        stdout.contains("1 row(s)") && stderr.is_empty(),
        "{stdout}{stderr}"
    );
}

/// Issue 41, a new user's path: a labelled training file and a label file
/// with integer labels (as pandas and scikit-learn write them) → `reference
/// build` makes an estimator → `replay` → `driftwatch sql` shows realised
/// and estimated accuracy of the user's model, and a bundled rule fires on
/// the drift injected halfway.
#[test]
fn a_new_users_model_with_integer_labels_is_monitored_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    // deterministic draws in [0, 1)
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut event = |id: String, t: chrono::DateTime<chrono::Utc>, shift: f64| {
        let x = uniform() + uniform() + uniform() - 1.5 + shift;
        let score = 1.0 / (1.0 + (-2.0 * x).exp());
        let label = i64::from(uniform() < score);
        let plan = ["basic", "pro", "team"][(uniform() * 3.0) as usize];
        let prediction = serde_json::json!({
            "event_id": id, "model_id": "mymodel", "timestamp": t.to_rfc3339(),
            "features": {"x": x, "plan": plan}, "prediction": {"score": score},
        });
        (prediction, label)
    };
    let train_start = chrono::DateTime::parse_from_rfc3339("2026-10-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let training: Vec<String> = (0..3_000)
        .map(|i| {
            let (mut p, label) = event(
                format!("t{i}"),
                train_start + chrono::Duration::minutes(i),
                0.0,
            );
            p["label"] = label.into();
            p.to_string()
        })
        .collect();
    let train = dir.path().join("training.jsonl");
    std::fs::write(&train, training.join("\n")).expect("write");
    let built = ok(
        &["reference", "build", p(&train), "--model", "mymodel"],
        dir.path(),
    );
    assert!(
        built.contains("performance estimation from 3000 labelled predictions"),
        "{built}"
    );

    // twelve hours of traffic, the feature (and so the score) shifted after six
    let live_start = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let (mut predictions, mut labels) = (Vec::new(), Vec::new());
    for i in 0..2_880 {
        let t = live_start + chrono::Duration::seconds(15 * i);
        let shift = if i >= 1_440 { 1.5 } else { 0.0 };
        let (p, label) = event(format!("p{i}"), t, shift);
        predictions.push(p.to_string());
        labels.push(
            serde_json::json!({
                "event_id": format!("p{i}"), "model_id": "mymodel",
                "timestamp": (t + chrono::Duration::minutes(5)).to_rfc3339(), "label": label,
            })
            .to_string(),
        );
    }
    let (live, truth) = (
        dir.path().join("live.jsonl"),
        dir.path().join("labels.jsonl"),
    );
    std::fs::write(&live, predictions.join("\n")).expect("write");
    std::fs::write(&truth, labels.join("\n")).expect("write");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    ok(
        &["replay", p(&live), p(&truth), "--rules", p(&rules), "-q"],
        dir.path(),
    );
    let count = |sql: &str| -> u64 {
        let out = ok(&["sql", sql, "--format", "json"], dir.path());
        let row: Value = serde_json::from_str(out.lines().next().unwrap_or("{}")).expect("json");
        row["n"].as_u64().unwrap_or_else(|| panic!("{sql}: {out}"))
    };
    let realised = count(
        "SELECT count(*) AS n FROM model_metrics_latest WHERE model_id = 'mymodel' \
         AND metric = 'accuracy' AND class IS NULL AND label_coverage > 0.9 AND value > 0.5",
    );
    assert!(realised >= 10, "{realised} windows with their accuracy");
    let estimated = count(
        "SELECT count(*) AS n FROM estimated_metrics WHERE model_id = 'mymodel' \
         AND metric = 'accuracy' AND value > 0.5",
    );
    assert!(estimated >= 10, "{estimated} windows with an estimate");
    let unscorable = count(
        "SELECT CAST(coalesce(sum(unscorable), 0) AS BIGINT) AS n FROM label_stats \
         WHERE model_id = 'mymodel'",
    );
    assert_eq!(unscorable, 0, "integer labels are scored");
    let fired = count(
        "SELECT count(*) AS n FROM alerts WHERE model_id = 'mymodel' \
         AND rule = 'prediction_drift' AND state = 'firing' \
         AND window_start >= '2026-11-01T06:00:00Z'",
    );
    assert!(
        fired >= 1,
        "the bundled prediction_drift rule fires on the drift"
    );
}
