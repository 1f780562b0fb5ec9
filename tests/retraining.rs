//! The closed retraining loop end to end, with real parts started by the
//! test: `driftwatch run` takes a drifting stream (over HTTP, or from a
//! Tansu broker), the critical drift rule fires, exactly one retraining
//! request reaches an HTTP receiver (which answers with a job id) and one
//! email an SMTP server; only then does the stream switch to the next model
//! version (the test plays the model service), whose accuracy is back; the
//! old version is retired and its alerts resolve. `/metrics`, `/v1/alerts`,
//! `/v1/models/churn` (its `model_versions` rows) and the audit log show
//! each step.

#![allow(clippy::unwrap_used)]

mod common;
mod service;
#[path = "../triggers/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::Value;
use service::*;
use support::{Receiver, Reply, SmtpSink};

const WAIT: Duration = Duration::from_secs(60);
/// When the stream starts to drift, and when the retrained version serves.
const DRIFT_AT: &str = "2026-11-01T04:00:00Z";
const DEPLOY_AT: &str = "2026-11-01T06:00:00Z";
const JOB: &str = "train-run-1";

/// The answer to a GET of the API, as JSON.
fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = get(port, path, Some(TOKEN)).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    json(&body)
}

/// The exposition (empty when the service does not answer: the waits
/// then end with its log).
fn metrics(port: u16) -> String {
    get(port, "/metrics", Some(TOKEN)).map_or_else(|_| String::new(), |(_, body)| body)
}

/// A working directory: the config (`kafka` adds its section), the
/// stream, split where the retrained version starts.
struct Setup {
    dir: tempfile::TempDir,
    before: Vec<String>,
    after: Vec<String>,
}

fn setup(receiver: &Receiver, smtp: &SmtpSink, kafka: &str) -> Setup {
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
# no rules directory: the bundled rules
rules_dir = "no-rules-here"
[checkpoint]
interval = "2s"
[shutdown]
drain = "5s"
# the critical drift rule starts a retraining run and mails the on-call
[actions.retrain]
kind = "webhook"
url = "{url}/retrain"
every_rule = true
matchers = ["rule=critical_feature_drift"]
group_by = ["model_id"]
send_resolved = false
repeat_interval = "7d"
backoff = "100ms"
[actions.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp}
tls = "none"
from = "driftwatch <driftwatch@example.com>"
to = ["oncall@example.com"]
every_rule = true
matchers = ["rule=critical_feature_drift"]
group_by = ["model_id"]
group_interval = "0s"
repeat_interval = "7d"
backoff = "100ms"
{kafka}"#,
            url = receiver.url,
            smtp = smtp.port,
        ),
    )
    .unwrap();
    let deploy = format!("churn=v13@{DEPLOY_AT}");
    let out = command(
        d,
        &[
            "gen",
            "--events",
            "100000",
            "--model",
            "churn",
            "--drift-at",
            DRIFT_AT,
            "--deploy",
            &deploy,
            "--out",
            "events.jsonl",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = std::fs::read_to_string(d.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let split = lines
        .iter()
        .position(|l| l.contains("\"model_version\":\"v13\""))
        .expect("the stream switches to v13");
    Setup {
        before: lines[..split].to_vec(),
        after: lines[split..].to_vec(),
        dir,
    }
}

/// Everything after the stream's first part: the request and the email
/// came; the rest of the stream (the new version) goes in through `feed`;
/// then every step shows in the API, the metrics, the version table and
/// the audit log.
fn the_loop_closes(
    setup: &Setup,
    port: u16,
    service: &mut Service,
    receiver: &Receiver,
    smtp: &SmtpSink,
    feed: &mut dyn FnMut(&[String]),
) {
    feed(&setup.before);
    // the model service waits for its retraining run
    let requests = receiver.wait_for(1, WAIT);
    assert_eq!(requests.len(), 1, "{}", service.log_text());
    let request = requests[0].json();
    assert_eq!(request["status"], "firing");
    let alert = &request["alerts"][0];
    assert_eq!(alert["rule"], "critical_feature_drift");
    assert_eq!(alert["model_version"], "v12");
    let evidence = &alert["evidence"];
    let drifted: Vec<&str> = evidence["drifted_features"]
        .as_array()
        .expect("drifted features in the evidence")
        .iter()
        .map(|f| f["feature"].as_str().unwrap())
        .collect();
    assert!(
        drifted.contains(&"tenure_months") || drifted.contains(&"plan"),
        "{evidence}"
    );
    assert!(
        evidence["drifted_features"][0]["psi"].is_number(),
        "{evidence}"
    );
    assert!(evidence["drift"]["features_drifted"].as_u64().unwrap() >= 1);
    assert_eq!(
        evidence["links"]["model"],
        format!("http://127.0.0.1:{port}/v1/models/churn"),
        "{evidence}"
    );
    let (status, windows) = get(
        port,
        evidence["links"]["windows"]
            .as_str()
            .unwrap()
            .trim_start_matches(&format!("http://127.0.0.1:{port}")),
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(status, 200, "the link answers: {windows}");
    let mails = smtp.wait_for(1, WAIT);
    assert!(mails[0].contains("FIRING"), "{}", mails[0]);

    // before the switch: the alert fires, accuracy is down
    let alerts = get_json(port, "/v1/alerts");
    let firing: Vec<&Value> = alerts["current"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing" && a["rule"] == "critical_feature_drift")
        .collect();
    assert!(!firing.is_empty(), "{alerts}");
    assert!(firing.iter().all(|a| a["model_version"] == "v12"));
    let exposition = metrics(port);
    assert!(
        sample(
            &exposition,
            "driftwatch_alerts{state=\"firing\",severity=\"critical\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{exposition}"
    );
    // the gauge shows the latest window half labelled or more, and the API
    // says which (the drifted windows' first labels are too few to judge
    // them by: their accuracy is checked once they are in, `old_accuracy`)
    let accuracy_before =
        sample(&exposition, "driftwatch_model_accuracy{model_id=\"churn\"}").expect("accuracy");
    let figures = get_json(port, "/v1/models")["models"]["churn"].clone();
    assert_eq!(
        figures["accuracy"].as_f64(),
        Some(accuracy_before),
        "{figures}"
    );
    assert!(
        figures["label_coverage"].as_f64().unwrap() >= 0.5,
        "{figures}"
    );
    assert!(figures["accuracy_window_end"].is_string(), "{figures}");

    feed(&setup.after);
    // the new version's first healthy window needs its labels in
    let model = service.wait_for("v13 healthy", |_| {
        let m = get_json(port, "/v1/models/churn");
        m["retraining"][0]["healthy_window_end"]
            .is_string()
            .then_some(m)
    });
    let versions = model["versions"].as_array().unwrap();
    let version = |v: &str| {
        versions
            .iter()
            .find(|r| r["model_version"] == v)
            .unwrap_or_else(|| panic!("no {v} in {model}"))
    };
    let (old, new) = (version("v12"), version("v13"));
    assert_eq!(old["superseded_by"], "v13", "{model}");
    assert_eq!(new["previous_version"], "v12");
    assert_eq!(new["alert_rule"], "critical_feature_drift");
    assert_eq!(new["retrain_job"], JOB);
    assert_eq!(new["retrain_match"], "named");
    assert_eq!(new["retrain_action"], "retrain");
    assert_eq!(
        new["retrain_key"],
        requests[0].header("idempotency-key"),
        "the request's key"
    );
    assert_eq!(new["reference"], "first window");
    let turn = &model["retraining"][0];
    assert_eq!(turn["old_version"], "v12");
    assert_eq!(turn["new_version"], "v13");
    assert!(turn["retired_at"].is_string(), "{turn}");
    assert!(turn["resolved_alerts"].as_u64().unwrap() >= 1, "{turn}");
    assert!(
        turn["healthy_accuracy"].as_f64().unwrap() > 0.85,
        "accuracy recovers: {turn}"
    );
    assert!(turn["old_accuracy"].as_f64().unwrap() < 0.8, "{turn}");

    // the alerts resolved: nothing of v12 pending or firing, the resolved
    // notice mailed, still one retraining request
    let alerts = get_json(port, "/v1/alerts");
    assert!(
        !alerts["current"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["model_version"] == "v12"),
        "{alerts}"
    );
    let (status, answer) = post(
        port,
        "/v1/query",
        "text/plain",
        b"SELECT count(*) AS n FROM alerts WHERE state = 'resolved' \
          AND rule = 'critical_feature_drift' AND model_version = 'v12'",
    );
    assert_eq!(status, 200, "{answer}");
    let answer = json(&answer);
    assert!(answer["rows"][0]["n"].as_u64().unwrap() >= 1, "{answer}");
    let mails = smtp.wait_for(2, WAIT);
    assert_eq!(mails.len(), 2, "one firing and one resolved email");
    assert!(mails[1].contains("RESOLVED"), "{}", mails[1]);
    assert_eq!(
        receiver.requests().len(),
        1,
        "exactly one retraining request"
    );
    // the worker counts a delivery once the receiver has answered: the
    // last email may be in the server's hands a moment before
    service.wait_for("three deliveries counted", |_| {
        sample(
            &metrics(port),
            "driftwatch_deliveries_total{outcome=\"delivered\"}",
        )
        .filter(|n| *n >= 3.0)
    });
    let exposition = metrics(port);
    let accuracy_after =
        sample(&exposition, "driftwatch_model_accuracy{model_id=\"churn\"}").expect("accuracy");
    assert!(accuracy_after > 0.85, "recovered: {accuracy_after}");

    // the audit log ties the steps together
    let audit = std::fs::read_to_string(setup.dir.path().join("data/audit.jsonl")).unwrap();
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |name: &str| -> Vec<&Value> { events.iter().filter(|e| e["event"] == name).collect() };
    let first = of("version_first_seen");
    let v13 = first
        .iter()
        .find(|e| e["model_version"] == "v13")
        .expect("v13 first seen");
    assert_eq!(v13["retrain_job"], JOB);
    assert_eq!(of("version_retired").len(), 1);
    assert_eq!(of("version_retired")[0]["superseded_by"], "v13");
    assert!(
        of("version_healthy")
            .iter()
            .any(|e| e["model_version"] == "v13")
    );
}

fn receiver() -> Receiver {
    let r = Receiver::start();
    // the retraining system names the version its run will deliver
    r.default_reply(Reply::status(200).body(&format!(
        "{{\"job_id\": \"{JOB}\", \"model_version\": \"v13\"}}"
    )));
    r
}

#[test]
fn the_retraining_loop_closes_over_http_ingest() {
    let receiver = receiver();
    let smtp = SmtpSink::start(None);
    let setup = setup(&receiver, &smtp, "");
    let port = free_port();
    let mut service = Service::start(setup.dir.path(), port, "run");
    let mut feed = |lines: &[String]| {
        for chunk in lines.chunks(1_000) {
            let (status, body) = post(
                port,
                "/v1/events",
                "application/x-ndjson",
                chunk.join("\n").as_bytes(),
            );
            assert_eq!(status, 200, "{body}");
        }
    };
    the_loop_closes(&setup, port, &mut service, &receiver, &smtp, &mut feed);
    assert!(service.stop().success());
}

#[test]
fn the_retraining_loop_closes_over_kafka() {
    let broker = common::Broker::start();
    broker.create_topic("events", 1);
    // the stream's few late predictions go there
    broker.create_topic("dead-letters", 1);
    let receiver = receiver();
    let smtp = SmtpSink::start(None);
    let kafka = format!(
        r#"[kafka]
brokers = "{}"
group_id = "loop"
assignment = "all"
topics = ["events"]
dead_letter_topic = "dead-letters"
"#,
        broker.addr
    );
    let setup = setup(&receiver, &smtp, &kafka);
    let dir = setup.dir.path().to_owned();
    let port = free_port();
    let mut service = Service::start(&dir, port, "run");
    let mut part = 0;
    let mut feed = |lines: &[String]| {
        part += 1;
        let file = dir.join(format!("part-{part}.jsonl"));
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        let out = command(
            &dir,
            &["produce", file.to_str().unwrap(), "--topic", "events"],
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    the_loop_closes(&setup, port, &mut service, &receiver, &smtp, &mut feed);
    // and the consumer reads the topic to its end
    service.wait_for("no consumer lag", |_| {
        let lag = sample(
            &metrics(port),
            "driftwatch_consumer_lag{topic=\"events\",partition=\"0\"}",
        );
        (lag == Some(0.0)).then_some(())
    });
    // every series the compose setup's Grafana dashboard and Prometheus
    // configuration ask for is exported (this service has Kafka, alerts,
    // deliveries and refusals: every kind of series exists)
    let exposition = metrics(port);
    let exported: Vec<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let wanted = metric_names(&[
        "compose/grafana/dashboards/driftwatch.json",
        "compose/prometheus/prometheus.yml",
    ]);
    assert!(wanted.len() >= 15, "{wanted:?}");
    for name in &wanted {
        assert!(
            exported.contains(&name.as_str()),
            "{name} is not exported:\n{exposition}"
        );
    }
    assert!(service.stop().success());
}

/// The `driftwatch_…` names in the files (paths from the repository).
fn metric_names(files: &[&str]) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for file in files {
        let text =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
                .unwrap();
        for (at, _) in text.match_indices("driftwatch_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}
