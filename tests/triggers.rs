//! Notifications across crashes: the `driftwatch` binary is SIGKILLed
//! between writing a notification to its outbox and delivering it, and
//! between the receiver taking it and the outbox recording that; after a
//! restart each notification reaches the receiver, every attempt with the
//! same idempotency key. Also the `silence` and `alerts` commands.

#![allow(clippy::unwrap_used)]

#[path = "../triggers/tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use support::{Receiver, Reply, closed_port};

const SECRET: &str = "retrain-signing-secret-42";
const WAIT: Duration = Duration::from_secs(60);

/// A working directory with a config (an action to `port`), a rule that
/// fires while the mean score is above 0.7, and an event file.
fn setup(port: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("driftwatch.toml"),
        format!(
            r#"data_dir = "data"
[window]
size = "1h"
allowed_lateness = "0s"
[sql]
rules_dir = "rules"
events_retention = "0s"
[actions.retrain]
kind = "webhook"
url = "http://127.0.0.1:{port}/retrain"
hmac_secret_env = "RETRAIN_SECRET"
backoff = "100ms"
max_backoff = "500ms"
max_attempts = 1000
timeout = "30s"
"#
        ),
    )
    .unwrap();
    std::fs::create_dir(d.join("rules")).unwrap();
    std::fs::write(d.join("rules/scores.toml"), support::HIGH_SCORES_RULE).unwrap();
    std::fs::write(d.join("events.jsonl"), support::high_score_events(3, 10)).unwrap();
    dir
}

fn command(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_driftwatch"));
    c.args(["--config", "driftwatch.toml"])
        .args(args)
        .current_dir(cwd)
        .env("RETRAIN_SECRET", SECRET)
        .env("RUST_LOG", "debug")
        .env_remove("DRIFTWATCH_CONFIG");
    c
}

fn run(cwd: &Path, args: &[&str]) -> Output {
    let out = command(cwd, args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(SECRET), "a secret in the logs");
    if !out.status.success() {
        eprintln!("stdout:\n{}", String::from_utf8_lossy(&out.stdout));
        eprintln!("stderr:\n{stderr}");
    }
    assert!(out.status.success(), "driftwatch {args:?} failed");
    out
}

/// Starts a replay that the test kills.
fn spawn_replay(cwd: &Path) -> Child {
    command(cwd, &["replay", "events.jsonl", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(cwd.join("killed.log")).unwrap(),
        ))
        .spawn()
        .unwrap()
}

fn audit(cwd: &Path) -> Vec<Value> {
    std::fs::read_to_string(cwd.join("data/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn events(cwd: &Path, event: &str) -> Vec<Value> {
    audit(cwd)
        .into_iter()
        .filter(|e| e["event"] == event)
        .collect()
}

/// Waits (bounded) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(mut child: Child, cwd: &Path) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let log = std::fs::read_to_string(cwd.join("killed.log")).unwrap();
    assert!(!log.contains(SECRET), "a secret in the logs");
}

fn verify_signature(r: &support::Received) {
    let ts = r.header("x-driftwatch-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    let expect = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(r.header("x-driftwatch-signature"), expect, "signature");
}

fn keys(requests: &[support::Received]) -> BTreeSet<String> {
    requests
        .iter()
        .map(|r| r.header("idempotency-key").to_owned())
        .collect()
}

#[test]
fn killed_between_outbox_write_and_delivery_the_notification_goes_out_after_restart() {
    let port = closed_port();
    let dir = setup(port);
    let cwd = dir.path();
    // nothing listens: the notification is written, every attempt fails
    let child = spawn_replay(cwd);
    wait_until(
        "the notification in the outbox and a failed attempt",
        || !events(cwd, "attempt_failed").is_empty(),
    );
    kill(child, cwd);
    let written = events(cwd, "notification");
    assert_eq!(written.len(), 1, "{written:?}");
    let key = written[0]["key"].as_str().unwrap().to_owned();

    // the receiver is up; the run starts over and finds the outbox entry
    let receiver = Receiver::start_on(port);
    let out = run(cwd, &["replay", "events.jsonl", "--quiet"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("notifications: 1 delivered, 0 failed"),
        "{stdout}"
    );
    let requests = receiver.wait_for(1, WAIT);
    assert_eq!(requests.len(), 1, "delivered once");
    assert_eq!(
        keys(&requests),
        BTreeSet::from([key.clone()]),
        "the key written before the crash"
    );
    verify_signature(&requests[0]);
    let body = requests[0].json();
    assert_eq!(body["status"], "firing");
    assert_eq!(body["alerts"][0]["rule"], "high_scores");
    // made again by the second run, recognised by its key: not written twice
    assert_eq!(events(cwd, "notification").len(), 1);
    assert_eq!(events(cwd, "delivered").len(), 1);
    let audit_text = std::fs::read_to_string(cwd.join("data/audit.jsonl")).unwrap();
    assert!(!audit_text.contains(SECRET));

    // the alert history shows the firing and the delivery
    let out = run(cwd, &["alerts"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("current alerts: 1"), "{text}");
    assert!(
        text.contains("firing") && text.contains("delivered"),
        "{text}"
    );
}

#[test]
fn killed_between_delivery_and_its_record_the_repeat_carries_the_same_key() {
    let receiver = Receiver::start();
    // the first request is taken but not answered before the kill
    receiver.script([Reply::status(200).after(Duration::from_secs(20))]);
    let dir = setup(receiver.port);
    let cwd = dir.path();
    let child = spawn_replay(cwd);
    let first = receiver.wait_for(1, WAIT);
    assert_eq!(first.len(), 1);
    kill(child, cwd);
    assert!(
        events(cwd, "delivered").is_empty(),
        "killed before the record"
    );

    run(cwd, &["replay", "events.jsonl", "--quiet"]);
    let requests = receiver.wait_for(2, WAIT);
    assert_eq!(
        requests.len(),
        2,
        "the delivery is repeated after the restart"
    );
    // the receiver drops the repeat by its key: it sees one notification
    assert_eq!(keys(&requests).len(), 1, "one key for both attempts");
    for r in &requests {
        verify_signature(r);
    }
    assert_eq!(requests[0].body, requests[1].body, "the same notification");
    assert_eq!(events(cwd, "delivered").len(), 1);
}

#[test]
fn silences_are_added_listed_and_expired_from_the_cli() {
    let dir = setup(closed_port());
    let cwd = dir.path();
    let out = run(
        cwd,
        &[
            "silence",
            "add",
            "model_id=churn",
            "rule=~high_.*",
            "--duration",
            "1h",
            "--comment",
            "retraining",
            "--author",
            "ana",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("silence "), "{text}");
    let id: String = text
        .split_whitespace()
        .nth(1)
        .unwrap()
        .chars()
        .take(8)
        .collect();
    let list = String::from_utf8_lossy(&run(cwd, &["silence", "list"]).stdout).into_owned();
    assert!(
        list.contains("1 silence(s)")
            && list.contains("active")
            && list.contains("model_id=churn rule=~high_.*"),
        "{list}"
    );
    assert!(list.contains("by ana: retraining"), "{list}");
    run(cwd, &["silence", "expire", &id]);
    let list = String::from_utf8_lossy(&run(cwd, &["silence", "list"]).stdout).into_owned();
    assert!(list.contains("0 silence(s)"), "{list}");
    let all = String::from_utf8_lossy(&run(cwd, &["silence", "list", "--all"]).stdout).into_owned();
    assert!(all.contains("ended"), "{all}");
    // a wrong matcher is refused with what was expected
    let out = command(cwd, &["silence", "add", "model_id"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected name=value"));
}

/// The silences in `cwd`'s data directory, read as the service reads them
/// (a torn or corrupt file fails here).
fn silences_on_disk(cwd: &Path) -> Vec<Value> {
    let path = cwd.join("data/silences.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{} is not valid: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{e}"),
    }
}

fn spawn_silence_add(cwd: &Path, n: usize) -> Child {
    command(
        cwd,
        &[
            "silence",
            "add",
            &format!("feature=f{n}"),
            "--duration",
            "1h",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap()
}

/// Issue 17: twenty `silence add` processes at once keep all twenty
/// silences, in every one of twenty trials.
#[test]
fn twenty_concurrent_silence_adds_all_land_in_every_trial() {
    for trial in 0..20 {
        let dir = setup(closed_port());
        let cwd = dir.path();
        let children: Vec<Child> = (0..20).map(|n| spawn_silence_add(cwd, n)).collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "trial {trial}: an add failed");
        }
        let features: BTreeSet<String> = silences_on_disk(cwd)
            .iter()
            .map(|s| s["matchers"][0].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(features.len(), 20, "trial {trial}: {features:?}");
    }
}

/// Issue 17: `silence add` processes killed at every point of their run
/// leave a whole silences file, holding every add that reported success.
#[test]
fn a_kill_during_silence_writes_leaves_a_whole_file() {
    let dir = setup(closed_port());
    let cwd = dir.path();
    // how long one add takes here, to spread the kills over it
    let started = Instant::now();
    assert!(spawn_silence_add(cwd, 1000).wait().unwrap().success());
    let took = started.elapsed();
    let mut landed = 1;
    for round in 0..40u32 {
        let mut child = spawn_silence_add(cwd, round as usize);
        std::thread::sleep(took * round / 40);
        let _ = child.kill();
        if child.wait().unwrap().success() {
            landed += 1;
        }
        let on_disk = silences_on_disk(cwd);
        assert!(
            on_disk.len() >= landed,
            "round {round}: {} < {landed}",
            on_disk.len()
        );
    }
}

#[test]
fn a_silenced_alert_is_not_sent_by_the_replay() {
    let receiver = Receiver::start();
    let dir = setup(receiver.port);
    let cwd = dir.path();
    run(
        cwd,
        &["silence", "add", "rule=high_scores", "--duration", "1h"],
    );
    let out = run(cwd, &["replay", "events.jsonl", "--quiet"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("notifications: 0 delivered"), "{stdout}");
    assert!(receiver.requests().is_empty());
    assert_eq!(events(cwd, "silenced").len(), 1);
}
