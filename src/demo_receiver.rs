//! The demo's stand-ins for a retraining system and a chat channel: an HTTP
//! server on 127.0.0.1 that prints each request it gets, keeps it in a
//! JSON Lines file, and answers the retraining requests with a run id.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use driftwatch_triggers::ActionConfig;
use serde_json::{Value, json};

struct Shared {
    file: Mutex<std::fs::File>,
    received: AtomicU64,
    /// Retraining runs started and not yet handed to the demo.
    started: Mutex<Vec<RetrainRun>>,
}

/// A retraining run the receiver started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrainRun {
    /// The job id it answered.
    pub job: String,
    /// The model.
    pub model_id: String,
    /// The version the alert was about.
    pub model_version: Option<String>,
    /// The version the run delivers (the answer names it).
    pub next_version: String,
    /// The alert's rule.
    pub rule: String,
}

/// The running receiver.
pub struct DemoReceiver {
    url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (axum::http::StatusCode, String) {
    let n = shared.received.fetch_add(1, Ordering::Relaxed) + 1;
    let notification: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let retrain = uri.path() == "/retrain";
    let job = format!("demo-run-{n}");
    let first = &notification["alerts"][0];
    let next = next_version(first["model_version"].as_str().unwrap_or("v0"));
    let what = if retrain {
        let alerts = notification["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let first = alerts.first().cloned().unwrap_or(Value::Null);
        format!(
            "retraining requested: {} {} {} ({} alert(s), key {}) -> started {job}",
            notification["status"].as_str().unwrap_or("?"),
            first["rule"].as_str().unwrap_or("?"),
            first["model_id"].as_str().unwrap_or("?"),
            alerts.len(),
            &key[..key.len().min(8)],
        )
    } else {
        let text = notification["text"].as_str().unwrap_or("");
        format!("chat message: {}", text.lines().next().unwrap_or("").trim())
    };
    println!("  >> {what}");
    if retrain
        && notification["status"] == "firing"
        && let (Some(model), Ok(mut started)) = (first["model_id"].as_str(), shared.started.lock())
    {
        started.push(RetrainRun {
            job: job.clone(),
            model_id: model.to_owned(),
            model_version: first["model_version"].as_str().map(str::to_owned),
            next_version: next.clone(),
            rule: first["rule"].as_str().unwrap_or("").to_owned(),
        });
    }
    let line = json!({ "path": uri.path(), "idempotency_key": key, "body": notification });
    if let Ok(mut f) = shared.file.lock() {
        let _ = writeln!(f, "{line}");
    }
    if retrain {
        (
            axum::http::StatusCode::OK,
            json!({ "job_id": job, "model_version": next }).to_string(),
        )
    } else {
        (axum::http::StatusCode::OK, "ok".into())
    }
}

/// The version after `v`: its trailing number plus one (`v12` → `v13`),
/// else `v` with `.1` added.
pub fn next_version(v: &str) -> String {
    let digits = v.len() - v.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, number) = v.split_at(v.len() - digits);
    match number.parse::<u64>() {
        Ok(n) => format!("{stem}{}", n + 1),
        Err(_) => format!("{v}.1"),
    }
}

impl DemoReceiver {
    /// Starts on a free loopback port, writing what it receives to `log`.
    pub fn start(log: &Path) -> Result<Self> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let shared = Arc::new(Shared {
            file: Mutex::new(file),
            received: AtomicU64::new(0),
            started: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("a loopback port for the demo receiver")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(shared.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("demo-receiver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(DemoReceiver {
            url,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The demo's actions: every critical alert starts a retraining run (one
    /// request per rule and model), and every alert goes to the chat,
    /// grouped by model.
    pub fn actions(&self) -> Result<driftwatch_triggers::Actions> {
        let retrain = ActionConfig {
            kind: "webhook".into(),
            every_rule: true,
            severities: vec!["critical".into()],
            send_resolved: Some(false),
            url: format!("{}/retrain", self.url),
            group_by: vec!["rule".into(), "model_id".into()],
            repeat_interval: "7d".into(),
            ..ActionConfig::default()
        };
        let chat = ActionConfig {
            kind: "chat".into(),
            every_rule: true,
            url: format!("{}/chat", self.url),
            group_by: vec!["model_id".into()],
            group_interval: "6h".into(),
            repeat_interval: "7d".into(),
            text: Some("{{ status | upper }} {{ common_labels.model_id }}: {{ firing }} firing, {{ resolved }} resolved ({% for a in alerts %}{{ a.rule }}{% if a.labels.feature %} {{ a.labels.feature }}{% endif %}{% if not loop.last %}, {% endif %}{% endfor %})".into()),
            ..ActionConfig::default()
        };
        let mut actions = driftwatch_triggers::Actions::default();
        for (name, config) in [("demo-retrain", retrain), ("demo-chat", chat)] {
            actions.insert(driftwatch_triggers::Actions::build(name, &config, &|_| {
                None
            })?);
        }
        Ok(actions)
    }

    /// The retraining runs started since the last call.
    pub fn take_started(&self) -> Vec<RetrainRun> {
        self.shared
            .started
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    /// Stops; returns how many requests it received.
    pub fn stop(mut self) -> u64 {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.received.load(Ordering::Relaxed)
    }
}
