//! The triggers against real receivers: an HTTP server and an SMTP server
//! started by the test. Event time is driven by the test (window ends);
//! deliveries run on the real delivery worker.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use driftwatch_sql::rules::Hold;
use driftwatch_sql::{AlertInstance, WindowRef};
use driftwatch_triggers::{
    ActionConfig, Actions, Audit, AuditSync, Clock, Dispatcher, Matcher, Outbox, Silences,
    Triggers, system_clock,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::{Receiver, Reply, SmtpSink, closed_port};

const HOUR: i64 = 3_600_000;
/// Event time of the first window's end.
const T0: i64 = 1_780_000_000_000;
const WAIT: Duration = Duration::from_secs(20);

/// Triggers with their outbox, audit log and delivery worker.
struct Harness {
    triggers: Triggers,
    dispatcher: Dispatcher,
    audit: PathBuf,
    wall: Arc<AtomicI64>,
    /// Every `alerts` row so far.
    all_rows: Vec<driftwatch_triggers::AlertRow>,
    dir: tempfile::TempDir,
}

impl Harness {
    /// With the delivery worker on a thread of its own.
    fn new(config: &str, env: &[(&str, &str)]) -> Self {
        Harness::with_worker(config, env, |actions, audit| {
            Dispatcher::start(actions, audit, system_clock()).expect("dispatcher")
        })
    }

    /// With the delivery worker `start` makes.
    fn with_worker(
        config: &str,
        env: &[(&str, &str)],
        start: impl FnOnce(Actions, Arc<Audit>) -> Dispatcher,
    ) -> Self {
        let raw: BTreeMap<String, ActionConfig> = toml::from_str(config).expect("config");
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let actions = Actions::from_config(&raw, &|k| env.get(k).cloned()).expect("valid actions");
        let dir = tempfile::tempdir().expect("tempdir");
        let audit_path = dir.path().join("audit.jsonl");
        let audit = Arc::new(Audit::open(&audit_path, AuditSync::Line).expect("audit"));
        let outbox = Arc::new(Outbox::open(&dir.path().join("outbox.redb")).expect("outbox"));
        let wall = Arc::new(AtomicI64::new(T0));
        let w = wall.clone();
        // silences are checked against this hand-moved clock
        let clock: Clock = Arc::new(move || w.load(Ordering::SeqCst));
        let silences = Silences::open(&dir.path().join("silences.json")).expect("silences");
        let dispatcher = start(actions.clone(), audit.clone());
        dispatcher.add(outbox.clone());
        let mut triggers = Triggers::new(actions, outbox, silences, audit, clock);
        triggers.set_waker(dispatcher.waker());
        Harness {
            triggers,
            dispatcher,
            audit: audit_path,
            wall,
            all_rows: Vec::new(),
            dir,
        }
    }

    /// Rule `r` evaluated for the window ending at `end`: `held` lists the
    /// features holding.
    fn window(
        &mut self,
        end: i64,
        held: &[&str],
        hold_for: Hold,
        keep: Hold,
    ) -> Vec<driftwatch_triggers::AlertRow> {
        let w = window(end);
        let mut found: Vec<AlertInstance> = held
            .iter()
            .map(|f| instance(&w, f, hold_for, keep))
            .collect();
        self.triggers
            .observe(&w, &["r".to_owned()], &mut found, &mut |_| None);
        self.tick(end)
    }

    fn tick(&mut self, now: i64) -> Vec<driftwatch_triggers::AlertRow> {
        let rows = self.triggers.tick(now).expect("tick");
        self.all_rows.extend(rows.iter().cloned());
        assert_eq!(
            self.dispatcher.drain(WAIT).expect("drain"),
            0,
            "deliveries pending"
        );
        rows
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .expect("audit log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    fn audit_events(&self, event: &str) -> Vec<serde_json::Value> {
        self.audit()
            .into_iter()
            .filter(|e| e["event"] == event)
            .collect()
    }
}

fn window(end: i64) -> WindowRef {
    WindowRef {
        model_id: "churn".into(),
        model_version: Some("v7".into()),
        start: end - HOUR,
        end,
    }
}

/// An instance of rule `r` for `feature` as the SQL evaluator hands it over.
fn instance(w: &WindowRef, feature: &str, hold_for: Hold, keep: Hold) -> AlertInstance {
    AlertInstance {
        rule: "r".into(),
        severity: "critical".into(),
        columns: [
            ("model_id".to_owned(), serde_json::json!("churn")),
            ("feature".to_owned(), serde_json::json!(feature)),
        ]
        .into(),
        labels: [
            ("model_id".to_owned(), "churn".to_owned()),
            ("feature".to_owned(), feature.to_owned()),
            ("team".to_owned(), "ml".to_owned()),
        ]
        .into(),
        value: Some(0.31),
        annotations: [("summary".to_owned(), format!("{feature} drifted"))].into(),
        actions: vec!["hook".into(), "mail".into(), "preset".into()],
        window: w.clone(),
        active_since: w.end,
        windows: 1,
        hold_for,
        keep_firing_for: keep,
    }
}

fn statuses(json: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = json["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            format!(
                "{}:{}",
                a["labels"]["feature"].as_str().unwrap_or("?"),
                a["status"].as_str().unwrap_or("?")
            )
        })
        .collect();
    v.sort();
    v
}

fn subject(message: &str) -> String {
    message
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn for_keep_firing_for_and_resolution_make_one_request_and_one_email_per_group() {
    let hook = Receiver::start();
    let smtp = SmtpSink::start(Some(("alerts", "s3cret-pw")));
    let config = format!(
        r#"
[hook]
kind = "webhook"
url = "{url}/hooks/driftwatch"
hmac_secret_env = "HOOK_SECRET"
group_by = ["model_id"]

[mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
tls = "none"
username_env = "SMTP_USER"
password_env = "SMTP_PASSWORD"
from = "driftwatch <driftwatch@example.com>"
to = ["oncall@example.com", "ml@example.com"]
group_by = ["model_id"]
"#,
        url = hook.url,
        port = smtp.port
    );
    let secret = "hmac-secret-value-1234";
    let mut h = Harness::new(
        &config,
        &[
            ("HOOK_SECRET", secret),
            ("SMTP_USER", "alerts"),
            ("SMTP_PASSWORD", "s3cret-pw"),
        ],
    );
    let (two, one) = (Hold::Windows(2), Hold::Windows(1));

    // window 1: a and b hold for the first time: pending, nothing sent
    let rows = h.window(T0, &["a", "b"], two, one);
    assert_eq!(rows.iter().filter(|r| r.state == "pending").count(), 2);
    assert!(hook.requests().is_empty());
    assert!(smtp.messages().is_empty());

    // window 2: `for = 2` reached: both fire, in one request and one email
    let rows = h.window(T0 + HOUR, &["a", "b"], two, one);
    assert_eq!(rows.iter().filter(|r| r.state == "firing").count(), 2);
    let requests = hook.wait_for(1, WAIT);
    assert_eq!(requests.len(), 1);
    let first = &requests[0];
    assert_eq!(
        (first.method.as_str(), first.path.as_str()),
        ("POST", "/hooks/driftwatch")
    );
    assert_eq!(first.json()["status"], "firing");
    assert_eq!(statuses(&first.json()), ["a:firing", "b:firing"]);
    assert_eq!(first.json()["group"]["model_id"], "churn");
    // the signature, computed here from the documented recipe
    let ts = first.header("x-driftwatch-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&first.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(first.header("x-driftwatch-signature"), expected);
    let now = chrono::Utc::now().timestamp();
    let ts: i64 = ts.parse().expect("a unix timestamp");
    assert!((now - ts).abs() < 60, "the timestamp is the sending time");
    assert_eq!(
        first.header("idempotency-key"),
        first.json()["key"].as_str().expect("key")
    );
    let mails = smtp.wait_for(1, WAIT);
    assert_eq!(mails.len(), 1);
    assert!(
        subject(&mails[0]).contains("FIRING (2)"),
        "{}",
        subject(&mails[0])
    );
    assert!(mails[0].contains("X-Envelope-To: oncall@example.com,ml@example.com"));
    assert!(mails[0].contains("text/plain") && mails[0].contains("text/html"));
    assert!(mails[0].contains("a drifted") && mails[0].contains("b drifted"));
    let key = first.json()["key"].as_str().expect("key").to_owned();
    // each action's notification is its own delivery, with its own key
    let mail_key = h
        .audit_events("notification")
        .into_iter()
        .find(|e| e["action"] == "mail")
        .expect("the email notification")["key"]
        .as_str()
        .expect("key")
        .to_owned();
    assert_ne!(mail_key, key);
    assert!(
        mails[0].contains(&format!("Message-ID: <{mail_key}@driftwatch>")),
        "the email carries its key {mail_key}:\n{}",
        mails[0]
    );

    // window 3: b is gone once: `keep_firing_for = 1` keeps it firing, nothing new
    let rows = h.window(T0 + 2 * HOUR, &["a"], two, one);
    assert!(
        rows.iter().all(|r| r.state == "delivered"),
        "no transition: {rows:?}"
    );
    assert_eq!(hook.requests().len(), 1);

    // window 4: b gone twice: resolved, announced with a still firing
    let rows = h.window(T0 + 3 * HOUR, &["a"], two, one);
    assert!(
        rows.iter()
            .any(|r| r.state == "resolved" && r.alert.labels["feature"] == "b")
    );
    let requests = hook.wait_for(2, WAIT);
    assert_eq!(requests.len(), 2);
    assert_eq!(statuses(&requests[1].json()), ["a:firing", "b:resolved"]);
    assert_ne!(requests[1].header("idempotency-key"), key);
    assert_eq!(smtp.wait_for(2, WAIT).len(), 2);

    // windows 5 and 6: a goes; it resolves one window later: the resolved notice
    h.window(T0 + 4 * HOUR, &[], two, one);
    assert_eq!(hook.requests().len(), 2);
    h.window(T0 + 5 * HOUR, &[], two, one);
    let requests = hook.wait_for(3, WAIT);
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2].json()["status"], "resolved");
    assert_eq!(statuses(&requests[2].json()), ["a:resolved"]);
    let mails = smtp.wait_for(3, WAIT);
    assert_eq!(mails.len(), 3);
    assert!(
        subject(&mails[2]).contains("RESOLVED"),
        "{}",
        subject(&mails[2])
    );

    // deliveries reach the alerts table at the next tick, one row per alert
    h.tick(T0 + 5 * HOUR);
    let delivered = h.all_rows.iter().filter(|r| r.state == "delivered");
    assert_eq!(delivered.count(), 2 * (2 + 2 + 1), "{:?}", h.all_rows);
    assert_eq!(h.dispatcher.stats().delivered, 6);
    assert_eq!(h.dispatcher.stats().failed, 0);

    // no secret in the audit log, nor in the actions' debug output
    let audit = std::fs::read_to_string(&h.audit).expect("audit");
    for s in [secret, "s3cret-pw"] {
        assert!(!audit.contains(s), "the audit log holds a secret");
    }
    assert_eq!(h.audit_events("delivered").len(), 6);
    assert_eq!(h.audit_events("transition").len(), 2 + 2 + 1 + 1);
    drop(h.dir);
}

#[test]
fn group_wait_gathers_alerts_and_repeat_interval_reminds() {
    let hook = Receiver::start();
    let config = format!(
        "[hook]\nkind = \"webhook\"\nurl = \"{}/\"\ngroup_by = [\"model_id\"]\ngroup_wait = \"90m\"\nrepeat_interval = \"3h\"\n",
        hook.url
    );
    let mut h = Harness::new(&config, &[]);
    let (none, keep) = (Hold::default(), Hold::Windows(10));
    // a fires at T0; the group waits 90 minutes (event time) for more
    h.window(T0, &["a"], none, keep);
    assert!(hook.requests().is_empty());
    h.window(T0 + HOUR, &["a", "b"], none, keep);
    assert!(hook.requests().is_empty(), "group_wait not over at +1h");
    h.tick(T0 + HOUR + HOUR / 2);
    let r = hook.wait_for(1, WAIT);
    assert_eq!(r.len(), 1);
    assert_eq!(statuses(&r[0].json()), ["a:firing", "b:firing"]);
    assert_eq!(r[0].json()["repeat"], false);
    // still firing, nothing new: a reminder 3h after the last notification
    h.window(T0 + 2 * HOUR, &["a", "b"], none, keep);
    h.window(T0 + 4 * HOUR, &["a", "b"], none, keep);
    assert_eq!(
        hook.requests().len(),
        1,
        "repeat_interval not over at +2h30"
    );
    h.tick(T0 + 4 * HOUR + HOUR / 2);
    let r = hook.wait_for(2, WAIT);
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].json()["repeat"], true);
    assert_eq!(statuses(&r[1].json()), ["a:firing", "b:firing"]);
}

#[test]
fn a_worker_spawned_on_the_process_runtime_delivers_and_ends_when_stopped() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let hook = Receiver::start();
    let config = format!("[hook]\nkind = \"webhook\"\nurl = \"{}/\"\n", hook.url);
    let mut h = Harness::with_worker(&config, &[], |actions, audit| {
        Dispatcher::spawn(actions, audit, system_clock(), runtime.handle())
    });
    assert_eq!(runtime.metrics().num_alive_tasks(), 1, "the worker's task");
    h.window(T0, &["a"], Hold::default(), Hold::default());
    assert_eq!(hook.wait_for(1, WAIT).len(), 1);
    assert_eq!(h.dispatcher.stats().delivered, 1);
    // stopped: the task has ended when stop returns, and what is written
    // to the outbox after it stays there
    h.dispatcher.stop().expect("stop");
    // the HTTP client's connection tasks close once the worker has dropped it
    let deadline = std::time::Instant::now() + WAIT;
    while runtime.metrics().num_alive_tasks() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(runtime.metrics().num_alive_tasks(), 0);
    let w = window(T0 + HOUR);
    h.triggers
        .observe(&w, &["r".to_owned()], &mut [], &mut |_| None);
    h.triggers.tick(T0 + HOUR).expect("tick");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hook.requests().len(), 1);
    assert_eq!(
        h.dispatcher.pending().expect("pending"),
        1,
        "the resolved notice waits"
    );
}

#[test]
fn a_receiver_failing_five_times_gets_one_delivery_after_backed_off_retries() {
    let hook = Receiver::start();
    hook.script((0..5).map(|_| Reply::status(500).body("try later")));
    let config = format!(
        "[hook]\nkind = \"webhook\"\nurl = \"{}/\"\nbackoff = \"100ms\"\nmax_backoff = \"10s\"\nmax_attempts = 8\n",
        hook.url
    );
    let mut h = Harness::new(&config, &[]);
    h.window(T0, &["a"], Hold::default(), Hold::default());
    let r = hook.wait_for(6, WAIT);
    assert_eq!(r.len(), 6, "5 failures, then the delivery");
    let key = r[0].header("idempotency-key").to_owned();
    assert!(
        r.iter().all(|q| q.header("idempotency-key") == key),
        "one key for every attempt"
    );
    // wait n follows failure n: 100 ms · 2^(n-1), jittered down to half at most
    for n in 1..6 {
        let gap = r[n].at - r[n - 1].at;
        let nominal = Duration::from_millis(100 << (n - 1));
        assert!(
            gap >= nominal / 2,
            "attempt {} came {gap:?} after the one before (backoff {nominal:?})",
            n + 1
        );
        assert!(
            gap < nominal + Duration::from_secs(2),
            "attempt {} came late: {gap:?}",
            n + 1
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(hook.requests().len(), 6, "nothing after the delivery");
    let stats = h.dispatcher.stats();
    assert_eq!(
        (stats.attempts, stats.retried, stats.delivered, stats.failed),
        (6, 5, 1, 0)
    );
    assert_eq!(h.audit_events("attempt_failed").len(), 5);
    assert_eq!(h.audit_events("delivered").len(), 1);
    h.tick(T0);
    let delivered = h.all_rows.iter().filter(|r| r.state == "delivered");
    assert_eq!(delivered.count(), 1);
}

#[test]
fn a_receiver_down_past_the_retry_limit_is_reported_failed() {
    let config = format!(
        "[hook]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{}/\"\nbackoff = \"50ms\"\nmax_attempts = 3\ntimeout = \"2s\"\n",
        closed_port()
    );
    let mut h = Harness::new(&config, &[]);
    h.window(T0, &["a"], Hold::default(), Hold::default());
    let stats = h.dispatcher.stats();
    assert_eq!((stats.attempts, stats.failed, stats.delivered), (3, 1, 0));
    let failed = h.audit_events("failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["error"]
            .as_str()
            .expect("error")
            .starts_with("gave up after 3 attempts"),
        "{failed:?}"
    );
    h.tick(T0);
    let rows: Vec<_> = h.all_rows.iter().filter(|r| r.state == "failed").collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].action.as_deref(), Some("hook"));
    assert!(
        rows[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("gave up"))
    );
}

/// Issue 17: a receiver that redirects to another origin gets neither the
/// secret headers nor the signature there.
#[test]
fn a_redirecting_receiver_is_not_followed_with_the_secrets() {
    let hook = Receiver::start();
    let elsewhere = Receiver::start();
    hook.default_reply(Reply::status(307).location(&format!("{}/steal", elsewhere.url)));
    let config = format!(
        r#"
[hook]
kind = "webhook"
url = "{}/"
hmac_secret_env = "HOOK_SECRET"
backoff = "50ms"
max_attempts = 3
[hook.headers_env]
X-Api-Key = "HOOK_KEY"
"#,
        hook.url
    );
    let mut h = Harness::new(
        &config,
        &[("HOOK_SECRET", "hmac-s3cret"), ("HOOK_KEY", "key-s3cret")],
    );
    h.window(T0, &["a"], Hold::default(), Hold::default());
    let sent = hook.wait_for(1, WAIT);
    assert_eq!(sent[0].header("x-api-key"), "key-s3cret");
    assert!(!sent[0].header("x-driftwatch-signature").is_empty());
    // a 3xx is an answer, not a failure to retry: one request, refused
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(hook.requests().len(), 1);
    assert!(elsewhere.requests().is_empty(), "the redirect was followed");
    let stats = h.dispatcher.stats();
    assert_eq!((stats.attempts, stats.failed, stats.delivered), (1, 1, 0));
    let failed = h.audit_events("failed");
    assert!(
        failed[0]["error"]
            .as_str()
            .expect("error")
            .contains("redirects are not followed"),
        "{failed:?}"
    );
}

/// Issue 17: a hostile `model_id` reaches a JSON body template and a chat
/// message; the body parses to exactly the template's keys, and the chat
/// gets no mention or markup from the value.
#[test]
fn values_from_events_cannot_add_json_keys_or_chat_mentions() {
    let hook = Receiver::start();
    let chat = Receiver::start();
    let config = format!(
        r#"
[hook]
kind = "webhook"
url = "{}/"
body = '{{"model": "{{{{ common_labels.model_id }}}}", "summary": "{{{{ alerts[0].annotations.summary }}}}", "alerts": {{{{ alerts | length }}}}}}'
[chat]
kind = "chat"
url_env = "CHAT_URL"
every_rule = true
"#,
        hook.url
    );
    let mut h = Harness::new(&config, &[("CHAT_URL", &format!("{}/chat", chat.url))]);
    let hostile = "x\", \"injected\": \"yes <!channel> @here";
    let w = WindowRef {
        model_id: hostile.into(),
        ..window(T0)
    };
    let mut alert = instance(&w, "a", Hold::default(), Hold::default());
    alert.actions = vec!["hook".into()];
    alert.labels.insert("model_id".into(), hostile.into());
    alert
        .annotations
        .insert("summary".into(), format!("{hostile} drifted"));
    h.triggers
        .observe(&w, &["r".to_owned()], &mut [alert], &mut |_| None);
    h.tick(T0);
    let body = hook.wait_for(1, WAIT)[0].json();
    let keys: Vec<&str> = body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["alerts", "model", "summary"], "{body}");
    assert_eq!(body["model"], hostile);
    assert_eq!(body["summary"], format!("{hostile} drifted"));
    let text = chat.wait_for(1, WAIT)[0].json()["text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert!(
        !text.contains("<!channel>") && !text.contains("@here"),
        "{text}"
    );
    assert!(text.contains("&lt;!channel&gt; @\u{2060}here"), "{text}");
}

/// Issue 17: a receiver that echoes the request in its error answer does not
/// get the credentials into the audit log or the `alerts` table.
#[test]
fn an_echoing_receiver_leaves_no_credential_in_what_is_stored() {
    let hook = Receiver::start();
    hook.default_reply(Reply::status(400).echo());
    let config = format!(
        r#"
[hook]
kind = "webhook"
url = "{}/hook?token=tok-s3cret"
username_env = "HOOK_USER"
password_env = "HOOK_PASSWORD"
hmac_secret_env = "HOOK_SECRET"
[hook.headers_env]
X-Custom = "HOOK_KEY"
"#,
        hook.url
    );
    let mut h = Harness::new(
        &config,
        &[
            ("HOOK_USER", "robot"),
            ("HOOK_PASSWORD", "pw-s3cret"),
            ("HOOK_SECRET", "hmac-s3cret"),
            ("HOOK_KEY", "key-s3cret"),
        ],
    );
    h.window(T0, &["a"], Hold::default(), Hold::default());
    let sent = hook.wait_for(1, WAIT);
    assert!(sent[0].header("authorization").starts_with("Basic "));
    h.tick(T0);
    let failed = h.audit_events("failed");
    let error = failed[0]["error"].as_str().expect("error");
    assert!(error.contains("HTTP 400: {\"headers\""), "{error}");
    let basic = sent[0].header("authorization").trim_start_matches("Basic ");
    let stored = std::fs::read_to_string(&h.audit).expect("audit")
        + &h.all_rows
            .iter()
            .filter_map(|r| r.detail.clone())
            .collect::<String>();
    assert!(
        h.all_rows.iter().any(|r| r.state == "failed"),
        "no failed row: {:?}",
        h.all_rows
    );
    for secret in ["pw-s3cret", basic, "key-s3cret", "tok-s3cret"] {
        assert!(!stored.contains(secret), "{secret} stored: {stored}");
    }
}

#[test]
fn a_silence_holds_back_matching_alerts_until_it_ends() {
    let hook = Receiver::start();
    let config = format!(
        "[hook]\nkind = \"webhook\"\nurl = \"{}/\"\ngroup_interval = \"0s\"\n",
        hook.url
    );
    let mut h = Harness::new(&config, &[]);
    let mut silences = Silences::open(&h.dir.path().join("silences.json")).expect("silences");
    let s = silences
        .add(
            vec![Matcher::parse("feature=b").expect("matcher")],
            T0,
            T0 + 60_000,
            "test",
            "known",
        )
        .expect("silence");
    let keep = Hold::Windows(10);
    h.window(T0, &["a", "b"], Hold::default(), keep);
    let r = hook.wait_for(1, WAIT);
    assert_eq!(statuses(&r[0].json()), ["a:firing"], "b is silenced");
    let silenced = h.audit_events("silenced");
    assert_eq!(silenced.len(), 1);
    assert_eq!(silenced[0]["silence"], s.id.as_str());
    // still silenced a minute (clock) minus a millisecond later
    h.wall.store(T0 + 59_999, Ordering::SeqCst);
    h.tick(T0 + HOUR);
    assert_eq!(hook.requests().len(), 1);
    // the silence ended: b is announced at the next tick
    h.wall.store(T0 + 60_000, Ordering::SeqCst);
    h.tick(T0 + HOUR);
    let r = hook.wait_for(2, WAIT);
    assert_eq!(r.len(), 2);
    assert_eq!(statuses(&r[1].json()), ["a:firing", "b:firing"]);
}

/// The closed loop's part in the triggers: the request carries the
/// evidence handed over when the alert fired, the delivered request (with
/// the job the receiver named) is the model's latest retraining request,
/// and retiring the version resolves its alerts (a resolved notice goes
/// out) and keeps its late evaluations from raising new ones.
#[test]
fn a_retired_version_resolves_its_alerts_and_the_request_carries_the_evidence() {
    let hook = Receiver::start();
    hook.default_reply(Reply::status(200).body(r#"{"job_id": "train-42"}"#));
    let config = format!(
        "[hook]\nkind = \"webhook\"\nurl = \"{}/\"\ngroup_interval = \"0s\"\n",
        hook.url
    );
    let mut h = Harness::new(&config, &[]);
    let keep = Hold::Windows(10);
    let w = window(T0);
    let mut found = [instance(&w, "a", Hold::default(), keep)];
    let mut asked = Vec::new();
    h.triggers
        .observe(&w, &["r".to_owned()], &mut found, &mut |a| {
            asked.push(a.fingerprint.clone());
            Some(serde_json::json!({ "drifted_features": [{ "feature": "a", "psi": 0.4 }] }))
        });
    assert_eq!(
        asked.len(),
        1,
        "evidence is asked for once, when the alert fires"
    );
    h.tick(T0);
    let r = hook.wait_for(1, WAIT);
    let alert = &r[0].json()["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["evidence"]["drifted_features"][0]["psi"], 0.4);
    // the delivery is recorded at the next tick: the latest request
    h.tick(T0);
    let req = h.triggers.latest_retrain("churn").expect("a request");
    assert_eq!(req.job_id.as_deref(), Some("train-42"));
    assert_eq!(req.model_version.as_deref(), Some("v7"));
    assert_eq!(req.rule, "r");
    assert!(h.triggers.has_alerts("churn", Some("v7")));

    // the next window still holds: no new evidence is asked for
    let w2 = window(T0 + HOUR);
    let mut found = [instance(&w2, "a", Hold::default(), keep)];
    h.triggers
        .observe(&w2, &["r".to_owned()], &mut found, &mut |_| {
            panic!("asked again for a firing alert")
        });
    h.triggers.retire("churn", Some("v7"), "v8", T0 + 2 * HOUR);
    assert!(!h.triggers.has_alerts("churn", Some("v7")));
    assert!(h.triggers.is_retired("churn", Some("v7")));
    let rows = h.tick(T0 + 2 * HOUR);
    assert!(rows.iter().any(|r| r.state == "resolved"), "{rows:?}");
    let r = hook.wait_for(2, WAIT);
    assert_eq!(r[1].json()["status"], "resolved");
    assert_eq!(
        r[1].json()["alerts"][0]["evidence"]["drifted_features"][0]["feature"],
        "a",
        "the resolved notice still carries the evidence"
    );
    assert_eq!(h.audit_events("version_retired").len(), 1);
    // a late revision of the retired version raises nothing
    let late = window(T0 + HOUR);
    let mut found = [instance(&late, "a", Hold::default(), keep)];
    h.triggers
        .observe(&late, &["r".to_owned()], &mut found, &mut |_| None);
    assert!(!h.triggers.has_alerts("churn", Some("v7")));
    // serving again (a rollback), it alerts again
    h.triggers.unretire("churn", Some("v7"));
    let again = window(T0 + 3 * HOUR);
    let mut found = [instance(&again, "a", Hold::default(), keep)];
    h.triggers
        .observe(&again, &["r".to_owned()], &mut found, &mut |_| None);
    assert!(h.triggers.has_alerts("churn", Some("v7")));
    // the state survives a checkpoint
    let snapshot = h.triggers.snapshot().expect("snapshot");
    let mut fresh = Harness::new(&config, &[]);
    fresh.triggers.restore(&snapshot).expect("restore");
    assert_eq!(
        fresh
            .triggers
            .latest_retrain("churn")
            .and_then(|r| r.job_id.clone())
            .as_deref(),
        Some("train-42")
    );
}

/// The expected requests of each preset, written from each system's API
/// reference (see the fixture's `source` fields).
#[test]
fn presets_send_the_documented_request_shapes() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/presets.json")).expect("fixture");
    for case in fixture["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let receiver = Receiver::start();
        receiver.default_reply(
            Reply::status(case["reply_status"].as_u64().unwrap_or(200) as u16)
                .body(case["reply_body"].as_str().unwrap_or("")),
        );
        let config = case["config"]
            .as_str()
            .expect("config")
            .replace("{url}", &receiver.url);
        let kind = case["kind"].as_str().unwrap_or("webhook");
        let config = format!("[preset]\nkind = \"{kind}\"\n{config}");
        let mut h = Harness::new(
            &config,
            &[
                ("TOKEN", "tok-123"),
                ("AF_USER", "admin"),
                ("AF_PASSWORD", "pw"),
            ],
        );
        h.window(T0, &["a"], Hold::default(), Hold::default());
        let r = receiver.wait_for(1, WAIT);
        assert_eq!(r.len(), 1, "{name}: one request");
        let got = &r[0];
        let key = got.header("idempotency-key").to_owned();
        assert_eq!(key.len(), 32, "{name}: the key");
        let expect = &case["request"];
        assert_eq!(
            got.method,
            expect["method"].as_str().expect("method"),
            "{name}: method"
        );
        assert_eq!(
            got.path,
            expect["path"].as_str().expect("path"),
            "{name}: path"
        );
        for (header, value) in expect["headers"].as_object().expect("headers") {
            let value = value.as_str().expect("value").replace("{key}", &key);
            assert_eq!(got.header(header), value, "{name}: header {header}");
        }
        let body = serde_json::to_string(&expect["body"])
            .expect("body")
            .replace("{key}", &key)
            .replace("{key8}", &key[..8]);
        let body: serde_json::Value = serde_json::from_str(&body).expect("body");
        assert_eq!(got.json(), body, "{name}: body");
        let delivered = h.audit_events("delivered");
        assert_eq!(delivered.len(), 1, "{name}: delivered");
        let job = case["job_id"].as_str().map(|j| j.replace("{key}", &key));
        assert_eq!(
            delivered[0]["job_id"].as_str().map(str::to_owned),
            job,
            "{name}: job id in the audit log"
        );
    }
}

/// STARTTLS and implicit TLS against servers whose certificate a private CA
/// signed: trusted with `tls_ca_file`, refused without it.
#[test]
fn email_goes_over_starttls_and_implicit_tls_and_checks_the_server_certificate() {
    let starttls = SmtpSink::start_with("starttls", Some(("alerts", "pw")));
    let implicit = SmtpSink::start_with("tls", None);
    let untrusted = SmtpSink::start_with("starttls", None);
    let ca = support::tls_fixture("ca.pem");
    let mail = |name: &str, port: u16, tls: &str, ca: Option<&std::path::Path>, login: bool| {
        format!(
            "[{name}]\nkind = \"email\"\nevery_rule = true\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\ntls = \"{tls}\"\n{}{}from = \"d@example.com\"\nto = [\"o@example.com\"]\nmax_attempts = 1\ntimeout = \"5s\"\n",
            ca.map(|c| format!("tls_ca_file = \"{}\"\n", c.display()))
                .unwrap_or_default(),
            if login {
                "username_env = \"U\"\npassword_env = \"P\"\n"
            } else {
                ""
            },
        )
    };
    let config = [
        mail("starttls", starttls.port, "starttls", Some(&ca), true),
        mail("implicit", implicit.port, "tls", Some(&ca), false),
        mail("untrusted", untrusted.port, "starttls", None, false),
    ]
    .join("\n");
    let mut h = Harness::new(&config, &[("U", "alerts"), ("P", "pw")]);
    h.window(T0, &["a"], Hold::default(), Hold::default());
    assert_eq!(
        starttls.wait_for(1, WAIT).len(),
        1,
        "over STARTTLS, with login"
    );
    assert_eq!(implicit.wait_for(1, WAIT).len(), 1, "over implicit TLS");
    assert!(
        untrusted.messages().is_empty(),
        "an unknown certificate is refused"
    );
    let failed = h.audit_events("failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["action"], "untrusted");
    let stats = h.dispatcher.stats();
    assert_eq!((stats.delivered, stats.failed), (2, 1));
}
