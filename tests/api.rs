//! The HTTP API of `driftwatch run` without Kafka: events posted over HTTP
//! with per-line results, the Prometheus exposition, queries over the live
//! rows, the bearer token, and an acknowledged event counted once across a
//! SIGKILL (the ingest log is applied again after the restart).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

mod service;

use service::*;

/// Fires for every window with events, notifying `notify`.
const EVERY_WINDOW_RULE: &str = r#"[[rule]]
name = "every_window"
sql = """
SELECT model_id, model_version, events AS value FROM window_summary
WHERE model_id = $model_id AND (model_version IS NOT DISTINCT FROM $model_version)
  AND window_end = $window_end AND events > 0
"""
severity = "info"
actions = ["notify"]
"#;

/// A port nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

/// A working directory with a config and `events` generated events.
fn setup(events: u64) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("driftwatch.toml"),
        format!(
            r#"data_dir = "data"
[window]
size = "1h"
allowed_lateness = "10m"
[sql]
rules_dir = "rules"
[checkpoint]
interval = "1h"
events = 1000000
[api]
max_body = "1MiB"
[shutdown]
drain = "1s"
# a receiver that is never there: notifications wait in the outbox, retried
[actions.notify]
kind = "webhook"
url = "http://127.0.0.1:{closed}/hook"
backoff = "100ms"
max_backoff = "500ms"
max_attempts = 1000
timeout = "5s"
"#,
            closed = closed_port()
        ),
    )
    .unwrap();
    std::fs::create_dir(d.join("rules")).unwrap();
    std::fs::write(d.join("rules/every_window.toml"), EVERY_WINDOW_RULE).unwrap();
    let out = command(
        d,
        &[
            "gen",
            "--events",
            &events.to_string(),
            "--out",
            "events.jsonl",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines = std::fs::read_to_string(d.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    (dir, lines)
}

/// Posts `lines` in bodies of `per` lines: (accepted, rejected) in all.
fn post_all(port: u16, lines: &[String], per: usize) -> (u64, u64) {
    let (mut accepted, mut rejected) = (0, 0);
    for chunk in lines.chunks(per) {
        let (status, body) = post(
            port,
            "/v1/events",
            "application/x-ndjson",
            chunk.join("\n").as_bytes(),
        );
        assert_eq!(status, 200, "{body}");
        let reply = json(&body);
        accepted += reply["accepted"].as_u64().unwrap();
        rejected += reply["rejected"].as_u64().unwrap();
    }
    (accepted, rejected)
}

/// The metrics of docs/api.md's table, but those exposed only when
/// something else is there (another source, a label-free reference).
fn documented_metrics(except_when: &[&str]) -> Vec<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md")).unwrap();
    doc.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells
                .get(1)?
                .strip_prefix("`driftwatch_")?
                .strip_suffix('`')?;
            (!except_when.contains(cells.get(4)?)).then(|| format!("driftwatch_{name}"))
        })
        .collect()
}

/// Parses `/metrics` with the Prometheus project's own parser (Python
/// `prometheus_client`, OpenMetrics) and checks that every metric the docs
/// list for this source is there with at least one sample.
fn every_documented_metric_is_exposed(port: u16) {
    // the rule fires as windows close; the webhook is retried meanwhile
    let deadline = Instant::now() + Duration::from_secs(30);
    // the estimate's gauge is checked where a labelled reference is uploaded;
    // this stream's windows are not half labelled before it ends (the
    // accuracy gauges' rendering is src/api/metrics.rs's unit test)
    let documented =
        documented_metrics(&["Kafka", "a label-free reference", "a window half labelled"]);
    assert!(documented.len() >= 15, "{documented:?}");
    loop {
        let (_, exposition) = get(port, "/metrics", Some(TOKEN)).unwrap();
        let mut parser = common::python()
            .args(["-c", PARSE_OPENMETRICS])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(parser.stdin.as_mut().unwrap(), exposition.as_bytes()).unwrap();
        let out = parser.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the exposition does not parse: {}\n{exposition}",
            String::from_utf8_lossy(&out.stderr)
        );
        let samples: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
        let missing: Vec<&String> = documented.iter().filter(|m| !samples.contains(m)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "documented but not exposed: {missing:?}\n{exposition}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Reads an exposition on stdin; prints the names of its samples.
const PARSE_OPENMETRICS: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
names = set()
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        names.add(sample.name)
print(json.dumps(sorted(names)))
"#;

#[test]
fn events_posted_over_http_are_answered_per_line_and_seen_by_queries_and_metrics() {
    let (dir, lines) = setup(20_000);
    let port = free_port();
    let service = Service::start(dir.path(), port, "run");

    // health answers without the token; everything else asks for it
    assert_eq!(get(port, "/healthz", None).unwrap().0, 200);
    let (status, body) = get(port, "/v1/models", None).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(json(&body)["error"].as_str().unwrap().contains("Bearer"));
    assert_eq!(get(port, "/v1/models", Some("wrong")).unwrap().0, 401);

    // bad lines are refused one by one, with their line and reason
    let (status, body) = post(
        port,
        "/v1/events",
        "application/x-ndjson",
        format!("{}\nnot json\n\n{{\"model_id\": \"m\"}}\n", lines[0]).as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let reply = json(&body);
    assert_eq!(reply["accepted"], 1, "{body}");
    assert_eq!(reply["rejected"], 2, "{body}");
    assert_eq!(reply["errors"][0]["line"], 2, "{body}");
    assert_eq!(reply["errors"][0]["reason"], "invalid_json", "{body}");
    assert_eq!(reply["errors"][1]["line"], 4, "{body}");
    assert_eq!(reply["errors"][1]["reason"], "missing_field", "{body}");
    assert_eq!(reply["rejected_by_reason"]["invalid_json"], 1, "{body}");
    assert_eq!(reply["errors_not_listed"], 0, "{body}");
    // regression (issue 41, item 14): a route asked with another method
    // answered 405 with an empty body
    let (status, body) = get(port, "/v1/events", Some(TOKEN)).unwrap();
    assert_eq!(status, 405, "{body}");
    assert!(json(&body)["error"].is_string(), "{body}");
    // one JSON event spanning lines
    let pretty = serde_json::to_string_pretty(&json(&lines[1])).unwrap();
    let (status, body) = post(port, "/v1/events", "application/json", pretty.as_bytes());
    assert_eq!((status, json(&body)["accepted"].as_u64()), (200, Some(1)));
    // a body past api.max_body
    let (status, body) = post(
        port,
        "/v1/events",
        "application/x-ndjson",
        &vec![b' '; 2 << 20],
    );
    assert_eq!(status, 413, "{body}");
    assert!(
        json(&body)["error"].as_str().unwrap().contains("limit"),
        "{body}"
    );

    let (accepted, rejected) = post_all(port, &lines[2..], 1_000);
    let (accepted, rejected) = (accepted + 2, rejected + 2);
    assert_eq!(accepted + rejected, lines.len() as u64 + 2);

    // the exposition counts every line once, and has each model's figures
    let (status, exposition) = get(port, "/metrics", Some(TOKEN)).unwrap();
    assert_eq!(status, 200, "{exposition}");
    let events = |outcome: &str| {
        sample(
            &exposition,
            &format!("driftwatch_events_total{{source=\"http\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(events("accepted"), Some(accepted as f64), "{exposition}");
    assert_eq!(events("rejected"), Some(rejected as f64), "{exposition}");
    assert_eq!(
        sample(&exposition, "driftwatch_source_ready{source=\"http\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&exposition, "driftwatch_figures_up"), Some(1.0));
    assert!(exposition.ends_with("# EOF\n"), "{exposition}");
    every_documented_metric_is_exposed(port);

    // the models' figures and a query read the same live windows
    let (status, body) = get(port, "/v1/models", Some(TOKEN)).unwrap();
    assert_eq!(status, 200, "{body}");
    let models = json(&body)["models"].clone();
    let windows: u64 = models
        .as_object()
        .unwrap()
        .values()
        .map(|m| m["windows"].as_u64().unwrap())
        .sum();
    assert!(windows > 0, "{body}");
    let (status, body) = post(
        port,
        "/v1/query",
        "application/json",
        br#"{"sql": "SELECT count(*) AS n FROM window_summary"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["rows"][0]["n"], windows, "{body}");
    for (model, m) in models.as_object().unwrap() {
        let exposed = sample(
            &exposition,
            &format!("driftwatch_model_windows_total{{model_id=\"{model}\"}}"),
        );
        assert!(exposed.is_some(), "{model} not in\n{exposition}");
        let (status, body) = get(port, &format!("/v1/models/{model}"), Some(TOKEN)).unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["figures"]["predictions"], m["predictions"]);
    }
    assert_eq!(get(port, "/v1/models/nope", Some(TOKEN)).unwrap().0, 404);
    let (status, csv) = post(
        port,
        "/v1/query",
        "application/json",
        br#"{"sql": "SELECT model_id FROM window_summary ORDER BY model_id LIMIT 1", "format": "csv"}"#,
    );
    assert_eq!(status, 200, "{csv}");
    assert_eq!(csv.lines().next(), Some("model_id"));
    // DDL, DML and a second statement are refused, with the reason
    for sql in [
        "DROP TABLE alerts",
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO alerts SELECT * FROM alerts",
        "SELECT 1; SELECT 2",
    ] {
        let (status, body) = post(port, "/v1/query", "text/plain", sql.as_bytes());
        assert_eq!(status, 400, "{sql}: {body}");
        let message = json(&body)["error"].as_str().unwrap().to_owned();
        assert!(!message.is_empty(), "{sql}: {body}");
        eprintln!("{sql} -> {message}");
    }
    let (status, body) = get(port, "/v1/alerts", Some(TOKEN)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(json(&body)["current"].is_array());

    // a model's windows, by span
    let model = models.as_object().unwrap().keys().next().unwrap().clone();
    let (status, body) = get(port, &format!("/v1/models/{model}/windows"), Some(TOKEN)).unwrap();
    assert_eq!(status, 200, "{body}");
    let all = json(&body)["windows"].as_array().unwrap().clone();
    assert_eq!(
        all.len() as u64,
        models[&model]["windows"].as_u64().unwrap()
    );
    let first_end = all[0]["window_end"].as_str().unwrap().to_owned();
    let (status, body) = get(
        port,
        &format!("/v1/models/{model}/windows?to={first_end}"),
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body)["windows"].as_array().unwrap().len(),
        1,
        "{body}"
    );
    let (status, body) = get(
        port,
        &format!("/v1/models/{model}/windows?from=yesterday"),
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");

    // silences: added, listed, ended
    let (status, body) = post(
        port,
        "/v1/silences",
        "application/json",
        format!(
            r#"{{"matchers": ["model_id={model}"], "duration": "2h", "comment": "deploying"}}"#
        )
        .as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    let silence = json(&body);
    assert_eq!(silence["state"], "active", "{body}");
    let id = silence["id"].as_str().unwrap().to_owned();
    let (_, body) = get(port, "/v1/silences", Some(TOKEN)).unwrap();
    assert_eq!(json(&body)["silences"][0]["id"], id.as_str(), "{body}");
    let (status, body) = post(
        port,
        "/v1/silences",
        "application/json",
        br#"{"matchers": ["model_id~x"], "duration": "2h"}"#,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = request(
        port,
        reqwest::Method::DELETE,
        &format!("/v1/silences/{}", &id[..8]),
        Some(TOKEN),
        "text/plain",
        Vec::new(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["state"], "ended", "{body}");
    let (_, body) = get(port, "/v1/silences", Some(TOKEN)).unwrap();
    assert_eq!(json(&body)["silences"], serde_json::json!([]), "{body}");
    let (status, _) = request(
        port,
        reqwest::Method::DELETE,
        "/v1/silences/nope",
        Some(TOKEN),
        "text/plain",
        Vec::new(),
    )
    .unwrap();
    assert_eq!(status, 404);

    // SIGTERM: a final checkpoint, the summary of what was applied
    let status = service.stop();
    assert!(status.success());
    let summary = run_summary(dir.path());
    assert_eq!(summary["accepted"], accepted, "{summary}");
    assert_eq!(summary["rejected"], rejected, "{summary}");
    // the refused lines of the first post are dead letters at their place
    // in the ingest log (its lines 2 and 4: the log's events 1 and 2)
    let dead =
        std::fs::read_to_string(dir.path().join("data/ingest/http/dead-letter.jsonl")).unwrap();
    let first: Vec<(String, i64)> = dead
        .lines()
        .take(2)
        .map(|l| {
            let d = json(l);
            (
                d["reason"].as_str().unwrap().to_owned(),
                d["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        first,
        [
            ("invalid_json".to_owned(), 1),
            ("missing_field".to_owned(), 2)
        ],
        "{dead}"
    );
}

#[test]
fn an_acknowledged_event_counts_once_across_a_sigkill() {
    let (dir, lines) = setup(30_000);
    let port = free_port();
    // a run that is never interrupted: what every count must be
    let whole = Service::start(dir.path(), port, "whole");
    let expected = post_all(port, &lines, 1_000);
    assert!(whole.stop().success());
    let expected_summary = run_summary(dir.path());
    std::fs::rename(dir.path().join("data"), dir.path().join("data-whole")).unwrap();

    // the same posts, killed twice between checkpoints (there are none:
    // checkpoint.interval is an hour)
    let third = lines.len() / 3;
    let mut got = (0, 0);
    for (i, part) in [&lines[..third], &lines[third..2 * third]]
        .into_iter()
        .enumerate()
    {
        let service = Service::start(dir.path(), port, &format!("killed-{i}"));
        let (a, r) = post_all(port, part, 1_000);
        got = (got.0 + a, got.1 + r);
        service.kill();
    }
    let service = Service::start(dir.path(), port, "last");
    assert!(
        service.log_text().contains("applied again from the log"),
        "{}",
        service.log_text()
    );
    let (a, r) = post_all(port, &lines[2 * third..], 1_000);
    got = (got.0 + a, got.1 + r);
    assert!(service.stop().success());
    assert_eq!(got, expected);
    assert_same_counts(&run_summary(dir.path()), &expected_summary);
}

/// `DATA_DIR/run-summary.json` of the service run in `dir`.
fn run_summary(dir: &Path) -> Value {
    json(&std::fs::read_to_string(dir.join("data/run-summary.json")).unwrap())
}

/// Every count of two run summaries is the same.
fn assert_same_counts(got: &Value, expected: &Value) {
    for key in [
        "read",
        "accepted",
        "rejected",
        "rejected_by_reason",
        "predictions",
        "labels",
        "windows_closed",
    ] {
        assert_eq!(got[key], expected[key], "{key}: {got}");
    }
}

#[test]
fn sigterm_under_load_checkpoints_and_a_restart_ends_as_an_uninterrupted_run() {
    let (dir, lines) = setup(30_000);
    let port = free_port();
    let whole = Service::start(dir.path(), port, "whole");
    post_all(port, &lines, 500);
    assert!(whole.stop().success());
    let expected = run_summary(dir.path());
    std::fs::rename(dir.path().join("data"), dir.path().join("data-whole")).unwrap();

    // a client posts batches in order while the service is told to stop
    let service = Service::start(dir.path(), port, "loaded");
    let batches: Vec<String> = lines.chunks(100).map(|c| c.join("\n")).collect();
    let total = batches.len();
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let posted = std::sync::Arc::clone(&progress);
    let poster = std::thread::spawn(move || {
        let mut answered = 0;
        for b in batches {
            match request(
                port,
                reqwest::Method::POST,
                "/v1/events",
                Some(TOKEN),
                "application/x-ndjson",
                b.into_bytes(),
            ) {
                Ok((200, _)) => {
                    answered += 1;
                    posted.store(answered, std::sync::atomic::Ordering::Relaxed);
                }
                // stopping: this batch and the next ones are sent again later
                _ => break,
            }
        }
        answered
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.load(std::sync::atomic::Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "no batch answered in 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stopping = Instant::now();
    assert!(service.stop().success());
    // shutdown.drain is 1 s; applying the queue and checkpointing add little
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "{:?}",
        stopping.elapsed()
    );
    let answered = poster.join().unwrap();
    assert!(answered > 0 && answered < total, "{answered} of {total}");
    assert!(
        dir.path()
            .join("data/ingest/http/checkpoint/partition-0.ckpt")
            .is_file()
    );

    // the client sends what was not answered; the end is the same
    let service = Service::start(dir.path(), port, "resumed");
    post_all(port, &lines[answered * 100..], 500);
    assert!(service.stop().success());
    assert_same_counts(&run_summary(dir.path()), &expected);
    // every window file, byte for byte
    let windows = |data: &str| {
        let root = dir.path().join(data).join("windows");
        let mut files: Vec<(String, String)> = walk(&root)
            .into_iter()
            .map(|name| {
                let text = std::fs::read_to_string(root.join(&name)).unwrap();
                (name, text)
            })
            .collect();
        files.sort();
        files
    };
    let expected_windows = windows("data-whole");
    assert!(!expected_windows.is_empty());
    assert_eq!(windows("data"), expected_windows);
}

/// The files under `dir`, relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

#[test]
fn an_uploaded_reference_is_the_new_versions_baseline() {
    let (dir, lines) = setup(20_000);
    let port = free_port();
    let service = Service::start_with(
        dir.path(),
        port,
        "run",
        &[("DRIFTWATCH__API__MAX_BODY", "8MiB")],
    );
    // the training file of churn v12: its first 2,000 predictions, with
    // the labels of theirs that the stream holds
    let training: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"model_id\":\"churn\"") && l.contains("\"prediction\""))
        .take(2_000)
        .collect();
    let ids: std::collections::HashSet<String> = training
        .iter()
        .map(|l| json(l)["event_id"].as_str().unwrap().to_owned())
        .collect();
    let labels: Vec<&String> = lines
        .iter()
        .filter(|l| !l.contains("\"prediction\""))
        .filter(|l| ids.contains(json(l)["event_id"].as_str().unwrap_or("")))
        .collect();
    assert!(labels.len() > 500, "{} labels", labels.len());
    let body: String = training
        .iter()
        .chain(&labels)
        .map(|l| format!("{l}\n"))
        .collect();
    let put = |path: &str, body: &[u8]| {
        request(
            port,
            reqwest::Method::PUT,
            path,
            Some(TOKEN),
            "application/x-ndjson",
            body.to_vec(),
        )
        .unwrap()
    };
    let (status, answer) = put("/v1/models/churn/versions/v12/reference", body.as_bytes());
    assert_eq!(status, 201, "{answer}");
    assert_eq!(json(&answer)["predictions"], 2_000, "{answer}");
    // its labels make it a label-free reference too
    assert_eq!(json(&answer)["labelled"], labels.len(), "{answer}");
    assert_eq!(json(&answer)["performance_estimation"], true, "{answer}");
    assert!(json(&answer)["multivariate_components"].as_u64().unwrap() >= 1);
    assert!(
        dir.path()
            .join("data/references/churn/v12.profile")
            .is_file(),
        "stored for the next start"
    );
    // no prediction of that version in the body: refused, saying why
    let (status, answer) = put("/v1/models/churn/versions/v99/reference", body.as_bytes());
    assert_eq!(status, 400, "{answer}");
    assert!(json(&answer)["error"].is_string());
    // gzip is taken, and a gzip bomb refused at once (issue 41, M2: 2 MB of
    // gzip holding 2 GB of newlines took 160 CPU-seconds before its 400)
    let gzip = |bytes: &[u8]| {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut z, bytes).unwrap();
        z.finish().unwrap()
    };
    let (status, answer) = put(
        "/v1/models/churn/versions/v12/reference",
        &gzip(body.as_bytes()),
    );
    assert_eq!(status, 201, "{answer}");
    let bomb = gzip(&vec![b'\n'; 256 << 20]);
    let started = Instant::now();
    let (status, answer) = put("/v1/models/churn/versions/v12/reference", &bomb);
    assert_eq!(status, 400, "{answer}");
    assert!(
        json(&answer)["error"]
            .as_str()
            .unwrap()
            .contains("decompresses to more than"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    post_all(port, &lines, 1_000);
    // churn v12's first window is compared with the upload; the other
    // models' first windows became their references
    let (status, answer) = post(
        port,
        "/v1/query",
        "text/plain",
        b"SELECT model_id, count(*) AS n FROM drift_summary WHERE is_reference GROUP BY model_id ORDER BY model_id",
    );
    assert_eq!(status, 200, "{answer}");
    let rows = json(&answer)["rows"].clone();
    let models: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["model_id"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["eta", "fraud"], "{answer}");
    // churn v12's windows carry the estimate and the multivariate drift,
    // the others none; /metrics has the latest estimate
    let (status, answer) = post(
        port,
        "/v1/query",
        "text/plain",
        b"SELECT e.model_id, count(*) AS n, min(e.value) AS low, max(e.value) AS high, \
          (SELECT count(*) FROM multivariate_drift) AS multivariate \
          FROM estimated_metrics e WHERE e.metric = 'accuracy' GROUP BY e.model_id",
    );
    assert_eq!(status, 200, "{answer}");
    let rows = json(&answer)["rows"].clone();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(rows[0]["model_id"], "churn", "{answer}");
    assert!(rows[0]["n"].as_u64().unwrap() >= 2, "{answer}");
    assert!(rows[0]["low"].as_f64().unwrap() > 0.5, "{answer}");
    assert!(rows[0]["high"].as_f64().unwrap() <= 1.0, "{answer}");
    assert_eq!(rows[0]["multivariate"], rows[0]["n"], "{answer}");
    let (_, exposition) = get(port, "/metrics", Some(TOKEN)).unwrap();
    let estimate = sample(
        &exposition,
        "driftwatch_model_estimated_accuracy{model_id=\"churn\"}",
    );
    assert!(
        estimate.is_some_and(|e| e > 0.5 && e <= 1.0),
        "{exposition}"
    );
    assert!(service.stop().success());
}

/// The routes held the last reference to the SQL engine, whose runtimes
/// were then dropped on the API's runtime: a panic at every stop without
/// HTTP ingest (and so at the end of every Kafka run).
#[test]
fn a_service_without_ingest_stops_cleanly() {
    let (dir, _) = setup(10);
    let port = free_port();
    let service = Service::start_with(
        dir.path(),
        port,
        "no-ingest",
        &[("DRIFTWATCH__API__INGEST", "false")],
    );
    let (status, _) = post(port, "/v1/events", "application/x-ndjson", b"{}");
    assert_eq!(status, 404);
    assert_eq!(get(port, "/v1/models", Some(TOKEN)).unwrap().0, 200);
    let log = service.log_text();
    let status = service.stop();
    assert!(status.success(), "{status}\n{log}");
}

/// Issue 41, M1: half-open connections were never timed out; about 20,000
/// of them exhausted the file descriptors and `/healthz` stopped
/// answering. Silent connections are closed after `api.header_timeout`, and
/// at most `api.max_connections` are open at once.
#[test]
fn silent_connections_are_closed_and_health_still_answers() {
    use std::io::Read;
    let (dir, _) = setup(10);
    let port = free_port();
    let service = Service::start_with(
        dir.path(),
        port,
        "bounded-connections",
        &[
            ("DRIFTWATCH__API__HEADER_TIMEOUT", "1s"),
            ("DRIFTWATCH__API__MAX_CONNECTIONS", "8"),
        ],
    );
    // more silent connections than the limit, and one that sends half a request
    let mut silent: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::io::Write::write_all(&mut silent[0], b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let (status, body) = get(port, "/healthz", None).unwrap();
    assert_eq!((status, body.trim()), (200, "ok"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // the server closed the first ones: a read ends (EOF, or a 408 then EOF)
    silent[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let read = silent[0].read_to_end(&mut rest);
    assert!(read.is_ok(), "not closed by the server: {read:?}");
    let log = service.log_text();
    let status = service.stop();
    assert!(status.success(), "{status}\n{log}");
}

#[test]
fn listening_off_the_loopback_without_a_token_is_refused() {
    let (dir, _) = setup(10);
    let out = command(dir.path(), &["run"])
        .env("DRIFTWATCH__API__LISTEN", "0.0.0.0:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("DRIFTWATCH_API_TOKEN"),
        "{stderr}"
    );
}
