//! `driftwatch run` and `driftwatch produce` against a real Kafka-protocol
//! broker (Tansu, SQLite storage) over TCP: exact counts, crashes, poison
//! messages.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "../triggers/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, python};
use serde_json::Value;

fn driftwatch(args: &[&str], config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftwatch"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .env("DRIFTWATCH__LOG__LEVEL", "warn")
        // tests run side by side: each service's API on a port of its own
        .env("DRIFTWATCH__API__LISTEN", "127.0.0.1:0");
    cmd
}

fn ok(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    if !out.status.success() {
        eprintln!("stdout:\n{}", String::from_utf8_lossy(&out.stdout));
        eprintln!("stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        panic!("{cmd:?} failed: {}", out.status);
    }
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A configuration for one service instance: its data directory, group and
/// topics on `broker`; 30 min windows so that there are many.
/// A service configuration for a test. `assignment`: `"all"` for a single
/// instance (no group membership: Tansu 0.6's coordinator can leave a
/// restarted or timed-out member with part of the partitions for minutes),
/// `"group"` where instances share the partitions.
fn config(dir: &Path, broker: &Broker, group: &str, topics: &[&str], assignment: &str) -> PathBuf {
    let data = dir.join(format!("data-{group}"));
    let path = dir.join(format!("{group}.toml"));
    let topics: Vec<String> = topics.iter().map(|t| format!("\"{t}\"")).collect();
    std::fs::write(
        &path,
        format!(
            r#"data_dir = "{data}"

[window]
size = "30m"
allowed_lateness = "10m"

[kafka]
brokers = "{brokers}"
group_id = "{group}"
assignment = "{assignment}"
topics = [{topics}]
dead_letter_topic = "dead-letters"

[kafka.consumer_properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
# a killed member's partitions are reassigned once this passes (the
# coordinator waits this long for members to rejoin a rebalance)
"max.poll.interval.ms" = "10000"

[checkpoint]
events = 20000
interval = "2s"
"#,
            data = data.display(),
            brokers = broker.addr,
            topics = topics.join(", "),
        ),
    )
    .unwrap();
    path
}

fn generate(dir: &Path, events: u64) -> PathBuf {
    let file = dir.join(format!("events-{events}.jsonl"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftwatch"));
    cmd.args(["gen", "--events", &events.to_string(), "--out", p(&file)]);
    ok(cmd);
    file
}

/// Predictions and labels in an event file.
fn count_kinds(file: &Path) -> (u64, u64) {
    let (mut predictions, mut labels) = (0, 0);
    for line in BufReader::new(std::fs::File::open(file).unwrap()).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v.get("label").is_some() {
            labels += 1;
        } else {
            predictions += 1;
        }
    }
    (predictions, labels)
}

/// Every window file under `DATA/windows`, by relative path, parsed.
fn windows(config: &Path) -> BTreeMap<String, Value> {
    results(config, "windows")
}

/// Every result file under `DATA/<table>`, by relative path, parsed.
fn results(config: &Path, table: &str) -> BTreeMap<String, Value> {
    let data = data_dir(config);
    let root = data.join(table);
    let mut out = BTreeMap::new();
    for model in std::fs::read_dir(&root).unwrap() {
        let model = model.unwrap().path();
        for file in std::fs::read_dir(&model).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "json") {
                let rel = file.strip_prefix(&root).unwrap().display().to_string();
                let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                out.insert(rel, v);
            }
        }
    }
    out
}

fn run_summary(config: &Path) -> Value {
    let data = data_dir(config);
    serde_json::from_str(&std::fs::read_to_string(data.join("run-summary.json")).unwrap()).unwrap()
}

/// The `data_dir` a test configuration names.
fn data_dir(config: &Path) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap();
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data_dir = \""))
        .unwrap()
        .trim_end_matches('"');
    PathBuf::from(data)
}

/// Every window file of `got` equals the one of `expected`, and no more;
/// so does every window's final metrics revision (its figures within 1e-9:
/// labels from their own topic arrive in another order on every run, which
/// changes the order of floating-point sums).
fn assert_same_windows(expected: &Path, got: &Path) {
    let (expected_windows, got_windows) = (windows(expected), windows(got));
    assert_eq!(got_windows.len(), expected_windows.len());
    for (name, window) in &expected_windows {
        assert_eq!(got_windows.get(name), Some(window), "window {name} differs");
    }
    let (expected, got) = (results(expected, "metrics"), results(got, "metrics"));
    assert_eq!(got.len(), expected.len());
    assert!(!expected.is_empty(), "no metrics files");
    for (name, rows) in &expected {
        let other = got
            .get(name)
            .unwrap_or_else(|| panic!("metrics {name} missing"));
        let (a, b) = (rows.as_array().unwrap(), other.as_array().unwrap());
        assert_eq!(a.len(), b.len(), "metrics {name}: rows");
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x["final"], true, "metrics {name} not final: {x}");
            for (key, v) in x.as_object().unwrap() {
                match key.as_str() {
                    // which revision, and when: order-dependent
                    "revision" | "as_of" => {}
                    "value" | "label_coverage" if v.is_f64() => {
                        let (v, w) = (v.as_f64().unwrap(), y[key].as_f64().unwrap());
                        assert!((v - w).abs() <= 1e-9, "metrics {name}: {key} {v} vs {w}");
                    }
                    _ => assert_eq!(v, &y[key], "metrics {name}: {key}"),
                }
            }
        }
    }
}

/// The rows of one query over a configuration's history (`driftwatch sql`).
fn history(config: &Path, query: &str) -> Vec<Value> {
    let out = ok(driftwatch(&["sql", "--format", "json", query], config));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The history holds every closed window exactly once — the same windows
/// and drift rows as `expected`'s, and every window's final metrics.
fn assert_same_history(expected: &Path, got: &Path) {
    let windows = "SELECT model_id, model_version, window_start, window_end, events \
                   FROM window_summary ORDER BY model_id, window_start";
    let (a, b) = (history(expected, windows), history(got, windows));
    assert!(a.len() > 100, "{} windows in the history", a.len());
    assert_eq!(a.len(), windows_of(expected), "history vs window files");
    assert_eq!(a, b, "window_summary history differs");
    let twice = "SELECT model_id, window_start, count(*) AS n FROM window_summary \
                 GROUP BY model_id, window_start HAVING count(*) > 1";
    assert_eq!(
        history(got, twice),
        Vec::<Value>::new(),
        "windows twice in the history"
    );
    // every accepted prediction once in the events table (of the days its
    // retention keeps)
    let events = "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events";
    let rows = history(got, events);
    assert!(rows[0]["n"].as_u64().unwrap() > 0, "{rows:?}");
    assert_eq!(rows[0]["n"], rows[0]["ids"], "events twice in the history");
    for query in [
        events,
        "SELECT count(*) AS n, sum(count) AS values FROM feature_drift",
        "SELECT count(*) AS n FROM model_metrics WHERE final",
        "SELECT count(DISTINCT window_start) AS n FROM model_metrics",
    ] {
        assert_eq!(history(expected, query), history(got, query), "{query}");
    }
}

fn windows_of(config: &Path) -> usize {
    windows(config).len()
}

fn window_events(windows: &BTreeMap<String, Value>) -> u64 {
    windows
        .values()
        .map(|w| w["events"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_million_events_from_a_python_producer_and_driftwatch_produce_count_exactly() {
    let broker = Broker::start();
    broker.create_topic("events", 4);
    broker.create_topic("dead-letters", 1);
    let dir = tempfile::tempdir().unwrap();
    let file = generate(dir.path(), 1_000_000);
    let (predictions, labels) = count_kinds(&file);

    // first half by the third-party client, second half by driftwatch
    let half = file.with_extension("second-half.jsonl");
    {
        let text = std::fs::read_to_string(&file).unwrap();
        let rest: Vec<&str> = text.lines().skip(500_000).collect();
        std::fs::write(&half, rest.join("\n") + "\n").unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/produce.py");
    let mut py = python();
    py.arg(&script)
        .args([&broker.addr, "events", p(&file), "0", "500000"]);
    let out = ok(py);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "500000");

    let cfg = config(dir.path(), &broker, "g1", &["events"], "all");
    ok(driftwatch(
        &["produce", p(&half), "--topic", "events"],
        &cfg,
    ));
    assert_eq!(broker.count("events"), 1_000_000);

    ok(driftwatch(&["run", "--exit-at-end"], &cfg));
    let summary = run_summary(&cfg);
    let late = summary["rejected_by_reason"]["late_event"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(summary["read"], 1_000_000, "{summary}");
    assert_eq!(summary["labels"], labels, "{summary}");
    assert_eq!(
        summary["predictions"].as_u64().unwrap() + late,
        predictions,
        "{summary}"
    );
    assert_eq!(summary["rejected"].as_u64().unwrap(), late, "{summary}");
    let windows = windows(&cfg);
    assert_eq!(
        window_events(&windows),
        summary["predictions"].as_u64().unwrap()
    );
    assert_eq!(
        windows.len() as u64,
        summary["windows_closed"].as_u64().unwrap()
    );
    // late predictions are on the dead-letter topic
    assert_eq!(broker.count("dead-letters"), late as i64);
    // the process's query engine saw the windows of all four partitions
    // once each, the last ones still live and the others in the history
    let metrics: Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir(&cfg).join("metrics.json")).unwrap(),
    )
    .unwrap();
    let mut per_model: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (name, w) in &windows {
        let model = name.split('/').next().unwrap().to_owned();
        let e = per_model.entry(model).or_default();
        e.0 += 1;
        e.1 += w["events"].as_u64().unwrap();
    }
    let models = metrics["models"].as_object().unwrap();
    assert_eq!(models.len(), per_model.len(), "{metrics}");
    for (model, (n, events)) in &per_model {
        let m = &models[model];
        assert_eq!(m["windows"], *n, "{model}: {m}");
        assert_eq!(m["predictions"], *events, "{model}: {m}");
    }
}

/// Starts the service and, once it has partitions and consumes, SIGKILLs it
/// `after` later; true if it finished first. (Killing a member while the
/// group is forming can leave Tansu's coordinator waiting for it for good;
/// a real Kafka expires it. The kills here fall while consuming.)
fn run_and_kill(cfg: &Path, log: &Path, after: Duration) -> bool {
    let mut child = spawn_logged(cfg, log);
    let assigned = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(status.success(), "service failed: {status}\n{text}");
            return true;
        }
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("partitions assigned")
        {
            break;
        }
        assert!(Instant::now() < assigned, "no partitions assigned");
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(status.success(), "service failed: {status}\n{text}");
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    false
}

#[test]
fn killed_at_random_points_the_service_ends_with_the_results_of_an_uninterrupted_run() {
    let broker = Broker::start();
    broker.create_topic("predictions", 3);
    broker.create_topic("labels", 3);
    broker.create_topic("dead-letters", 1);
    let dir = tempfile::tempdir().unwrap();
    produce_split(dir.path(), &broker, 500_000);
    let topics = ["predictions", "labels"];
    let whole = config(dir.path(), &broker, "whole", &topics, "all");
    ok(driftwatch(&["run", "--exit-at-end"], &whole));
    assert!(windows(&whole).len() > 100);

    let crashed = config(dir.path(), &broker, "crashed", &topics, "all");
    // kill points spread over the run (seconds), from a fixed seed
    let mut kills = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut done = false;
    while !done {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // four kills at random points, then runs that may finish (one that
        // has not after three minutes is killed too, its log shown)
        let after = if kills < 4 {
            Duration::from_millis(500 + seed % 4_000)
        } else {
            Duration::from_secs(180)
        };
        let log = dir.path().join(format!("crashed-{kills}.log"));
        let started = Instant::now();
        done = run_and_kill(&crashed, &log, after);
        eprintln!("run {kills}: {:?}, finished: {done}", started.elapsed());
        if !done && kills >= 4 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().filter(|l| !l.contains("librdkafka")).collect();
            eprintln!(
                "run {kills} did not finish:\n{}",
                tail[tail.len().saturating_sub(30)..].join("\n")
            );
        }
        assert!(kills < 8, "the service does not finish");
        if !done {
            kills += 1;
        }
    }
    assert!(kills >= 3, "only {kills} kills before the run finished");
    assert_same_windows(&whole, &crashed);
    assert_same_history(&whole, &crashed);
    let (a, b) = (run_summary(&whole), run_summary(&crashed));
    for key in [
        "read",
        "accepted",
        "rejected",
        "predictions",
        "labels",
        "windows_closed",
        "models",
    ] {
        assert_eq!(a[key], b[key], "{key}: {a} vs {b}");
    }
    // every label counted once, in the same bucket (which of a prediction
    // and its label came first depends on how the two topics interleave)
    let (la, lb) = (&a["performance"]["labels"], &b["performance"]["labels"]);
    assert!(la["joined"].as_u64().unwrap() > 100_000, "{la}");
    for key in [
        "received",
        "joined",
        "duplicate",
        "without_prediction",
        "after_horizon",
        "unscorable",
    ] {
        assert_eq!(la[key], lb[key], "labels {key}: {la} vs {lb}");
    }
    assert_eq!(
        a["performance"]["expired_unlabeled"],
        b["performance"]["expired_unlabeled"]
    );
}

/// Every message of `topic` (from the start), with its headers.
fn read_topic(
    broker: &Broker,
    topic: &str,
    expected: usize,
) -> Vec<(Vec<u8>, BTreeMap<String, String>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", format!("reader-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for header in h.iter() {
                    let value = header
                        .value
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    headers.insert(header.key.to_owned(), value.unwrap_or_default());
                }
            }
            out.push((m.payload().unwrap_or_default().to_vec(), headers));
        }
    }
    out
}

#[test]
fn poison_messages_land_on_the_dead_letter_topic_with_their_reason() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let broker = Broker::start();
    broker.create_topic("events", 2);
    broker.create_topic("dead-letters", 1);
    let dir = tempfile::tempdir().unwrap();
    let file = generate(dir.path(), 2_000);
    let cfg = config(dir.path(), &broker, "g", &["events"], "all");
    ok(driftwatch(
        &["produce", p(&file), "--topic", "events"],
        &cfg,
    ));

    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap();
    let good = r#"{"event_id":"k1","model_id":"churn","timestamp":"2026-11-01T00:00:00Z","features":{"x":1},"prediction":{"score":0.5}}"#;
    let big = format!(
        r#"{{"event_id":"big","model_id":"churn","timestamp":"2026-11-01T00:00:00Z","features":{{"blob":"{}"}},"prediction":{{"score":0.5}}}}"#,
        // 5 MB; Tansu 0.6 does not serve a record of 5 MiB or more (measured)
        "a".repeat(5_000_000 - 120)
    );
    let poison: Vec<(Option<&str>, &[u8], &str)> = vec![
        (Some("churn"), b"not json {", "invalid_json"),
        (
            Some("churn"),
            br#"{"model_id":"churn","timestamp":"2026-11-01T00:00:00Z"}"#,
            "missing_field",
        ),
        (Some("churn"), big.as_bytes(), "oversized"),
        (Some("churn"), b"", "empty"),
        (None, good.as_bytes(), "missing_key"),
        (Some("fraud"), good.as_bytes(), "key_mismatch"),
    ];
    for (key, payload, _) in &poison {
        let mut record = BaseRecord::<str, [u8]>::to("events").payload(*payload);
        if let Some(k) = key {
            record = record.key(*k);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    ok(driftwatch(&["run", "--exit-at-end"], &cfg));
    let summary = run_summary(&cfg);
    let late = summary["rejected_by_reason"]["late_event"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(summary["read"], 2_000 + poison.len() as u64, "{summary}");
    assert_eq!(
        summary["rejected"].as_u64().unwrap(),
        late + poison.len() as u64,
        "{summary}"
    );

    let letters = read_topic(&broker, "dead-letters", poison.len() + late as usize);
    assert_eq!(letters.len(), poison.len() + late as usize);
    let mut reasons: Vec<&str> = letters
        .iter()
        .map(|(_, h)| h["driftwatch.reason"].as_str())
        .filter(|r| *r != "late_event")
        .collect();
    reasons.sort_unstable();
    let mut expected: Vec<&str> = poison.iter().map(|(_, _, r)| *r).collect();
    expected.sort_unstable();
    assert_eq!(reasons, expected);
    for (payload, headers) in &letters {
        assert_eq!(headers["driftwatch.source"], "events");
        assert!(
            headers.contains_key("driftwatch.partition")
                && headers.contains_key("driftwatch.offset")
        );
        assert!(!headers["driftwatch.detail"].is_empty());
        match headers["driftwatch.reason"].as_str() {
            "oversized" => {
                assert_eq!(headers["driftwatch.original_len"], big.len().to_string());
                assert_eq!(payload.len(), 64 * 1024, "kept part of the original");
            }
            "invalid_json" => assert_eq!(payload, b"not json {"),
            _ => {}
        }
    }
}

/// Predictions and labels of a generated file on their own topics.
fn produce_split(dir: &Path, broker: &Broker, events: u64) -> PathBuf {
    let file = generate(dir, events);
    let (pred_file, label_file) = (dir.join("p.jsonl"), dir.join("l.jsonl"));
    let text = std::fs::read_to_string(&file).unwrap();
    let (mut preds, mut labs) = (String::new(), String::new());
    for line in text.lines() {
        let out = if line.contains("\"label\":") {
            &mut labs
        } else {
            &mut preds
        };
        out.push_str(line);
        out.push('\n');
    }
    std::fs::write(&pred_file, preds).unwrap();
    std::fs::write(&label_file, labs).unwrap();
    let cfg = config(dir, broker, "producer", &["predictions", "labels"], "all");
    ok(driftwatch(
        &["produce", p(&pred_file), "--topic", "predictions"],
        &cfg,
    ));
    ok(driftwatch(
        &["produce", p(&label_file), "--topic", "labels"],
        &cfg,
    ));
    file
}

/// A service process, killed if the test ends (or fails) before it does.
struct Service(Child);

impl std::ops::Deref for Service {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Service {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `run --exit-at-end` with info logs going to `log`.
fn spawn_logged(cfg: &Path, log: &Path) -> Service {
    let file = std::fs::File::create(log).unwrap();
    Service(
        driftwatch(&["run", "--exit-at-end"], cfg)
            .env("RETRAIN_SECRET", "retrain-secret")
            .env("DRIFTWATCH__LOG__LEVEL", "info")
            .env("DRIFTWATCH__LOG__FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap(),
    )
}

/// Waits (bounded) until `log` contains `text`.
fn wait_for_log(log: &Path, text: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_success(child: &mut Child, limit: Duration, log: &Path) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            assert!(status.success(), "{status}; log:\n{log}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("service still running after {limit:?}; log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn two_instances_split_the_partitions_and_hand_them_over_exactly() {
    let broker = Broker::start();
    broker.create_topic("predictions", 4);
    broker.create_topic("labels", 4);
    broker.create_topic("dead-letters", 1);
    let dir = tempfile::tempdir().unwrap();
    produce_split(dir.path(), &broker, 300_000);
    let topics = ["predictions", "labels"];
    let solo = config(dir.path(), &broker, "solo", &topics, "group");
    ok(driftwatch(&["run", "--exit-at-end"], &solo));

    // two instances of one group, sharing a data directory
    let pair = config(dir.path(), &broker, "pair", &topics, "group");
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = spawn_logged(&pair, &log_a);
    wait_for_log(&log_a, "partitions assigned", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let mut b = spawn_logged(&pair, &log_b);
    // B joining makes A give up partitions (checkpointed) for B to load
    wait_for_log(&log_b, "partitions assigned", Duration::from_secs(60));
    wait_for_log(&log_a, "partitions revoked", Duration::from_secs(60));
    // A stops: its partitions move to B, which finishes them
    signal(a.id(), "-TERM");
    wait_success(&mut a, Duration::from_secs(60), &log_a);
    wait_success(&mut b, Duration::from_secs(300), &log_b);
    let log = std::fs::read_to_string(&log_b).unwrap();
    assert!(
        log.matches("partitions assigned").count() >= 1,
        "B was assigned partitions"
    );
    // whatever is left (B may have finished its share before A stopped) is
    // finished by a third instance
    ok(driftwatch(&["run", "--exit-at-end"], &pair));

    assert_same_windows(&solo, &pair);
    assert_same_history(&solo, &pair);
    let (s1, s2) = (run_summary(&solo), run_summary(&pair));
    for key in [
        "read",
        "accepted",
        "rejected",
        "predictions",
        "labels",
        "models",
    ] {
        assert_eq!(s1[key], s2[key], "{key}");
    }
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // fields after the command name (which is in parentheses)
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn the_service_waits_out_a_broker_outage_without_spinning_and_ends_exact() {
    let broker = Broker::start();
    broker.create_topic("predictions", 2);
    broker.create_topic("labels", 2);
    broker.create_topic("dead-letters", 1);
    let dir = tempfile::tempdir().unwrap();
    produce_split(dir.path(), &broker, 200_000);
    let topics = ["predictions", "labels"];
    let reference = config(dir.path(), &broker, "reference", &topics, "all");
    ok(driftwatch(&["run", "--exit-at-end"], &reference));

    let cfg = config(dir.path(), &broker, "outage", &topics, "all");
    let log = dir.path().join("outage.log");
    let mut service = spawn_logged(&cfg, &log);
    wait_for_log(&log, "partitions assigned", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    signal(broker.pid(), "-STOP");
    let before = cpu_seconds(service.id());
    std::thread::sleep(Duration::from_secs(30));
    let during = cpu_seconds(service.id()) - before;
    signal(broker.pid(), "-CONT");
    assert!(during < 3.0, "{during} CPU seconds in 30 s of outage");
    wait_success(&mut service, Duration::from_secs(300), &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the broker does not answer"),
        "outage not reported"
    );
    assert!(
        text.contains("the broker answers again"),
        "recovery not reported"
    );

    assert_same_windows(&reference, &cfg);
}

/// The service is killed after the retraining receiver took a notification
/// but before the outbox recorded it; the restarted service (same partition,
/// same outbox) sends it again with the same idempotency key, and no other.
#[test]
fn a_notification_cut_off_by_a_kill_is_sent_again_by_the_restarted_service_with_its_key() {
    let broker = Broker::start();
    broker.create_topic("predictions", 2);
    broker.create_topic("dead-letters", 1);
    let dir = tempfile::tempdir().unwrap();
    let receiver = support::Receiver::start();
    // the first request is taken but not answered before the kill
    receiver.script([support::Reply::status(200).after(Duration::from_secs(30))]);
    let cfg = config(dir.path(), &broker, "alerting", &["predictions"], "all");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("scores.toml"), support::HIGH_SCORES_RULE).unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        r#"
[sql]
rules_dir = "{rules}"

[actions.retrain]
kind = "webhook"
url = "{url}/retrain"
hmac_secret_env = "RETRAIN_SECRET"
backoff = "100ms"
timeout = "60s"
"#,
        rules = rules.display(),
        url = receiver.url
    ));
    std::fs::write(&cfg, text).unwrap();
    let file = dir.path().join("scores.jsonl");
    // two 30 min windows, both firing: one notification
    std::fs::write(&file, support::high_score_events(1, 40)).unwrap();
    ok(driftwatch(
        &["produce", p(&file), "--topic", "predictions"],
        &cfg,
    ));

    let log = dir.path().join("first.log");
    let mut service = spawn_logged(&cfg, &log);
    let first = receiver.wait_for(1, Duration::from_secs(120));
    assert_eq!(first.len(), 1, "the notification reached the receiver");
    service.kill().unwrap(); // SIGKILL
    service.wait().unwrap();

    let log = dir.path().join("second.log");
    let mut service = spawn_logged(&cfg, &log);
    wait_success(&mut service, Duration::from_secs(120), &log);
    let requests = receiver.wait_for(2, Duration::from_secs(10));
    assert_eq!(
        requests.len(),
        2,
        "sent once more after the restart, and only once"
    );
    let keys: std::collections::BTreeSet<&str> = requests
        .iter()
        .map(|r| r.header("idempotency-key"))
        .collect();
    assert_eq!(
        keys.len(),
        1,
        "one key for both attempts: the receiver drops the repeat"
    );
    assert_eq!(requests[0].body, requests[1].body);
    let audit = std::fs::read_to_string(data_dir(&cfg).join("audit.jsonl")).unwrap();
    assert_eq!(audit.matches("\"event\":\"delivered\"").count(), 1);
    assert!(!audit.contains("retrain-secret"));
}
