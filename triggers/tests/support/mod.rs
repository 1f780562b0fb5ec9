//! Real receivers for the trigger tests: an HTTP server (axum) that records
//! every request and answers from a script, and an SMTP server (aiosmtpd,
//! through `smtp_sink.py`) that writes every message to a directory.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Lowercase names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
    /// A `Location` header (a redirect).
    pub location: Option<String>,
    /// Answer with the request's headers and path as the body.
    pub echo: bool,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            body: String::new(),
            delay: Duration::ZERO,
            location: None,
            echo: false,
        }
    }

    /// Echoes the request (a careless receiver's error page).
    pub fn echo(mut self) -> Self {
        self.echo = true;
        self
    }

    pub fn location(mut self, url: &str) -> Self {
        self.location = Some(url.to_owned());
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<Received>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
}

/// An HTTP server on 127.0.0.1 that records requests.
pub struct Receiver {
    pub url: String,
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn handle(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, String) {
    let echoed = serde_json::json!({
        "path": uri.to_string(),
        "headers": headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect::<BTreeMap<_, _>>(),
    })
    .to_string();
    let reply = {
        let mut s = shared.lock().expect("receiver state");
        s.requests.push(Received {
            method: method.to_string(),
            path: uri.path_and_query().map_or("/".into(), |p| p.to_string()),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body: body.to_vec(),
            at: Instant::now(),
        });
        s.script
            .pop_front()
            .or_else(|| s.default.clone())
            .unwrap_or(Reply::status(200))
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut headers = HeaderMap::new();
    if let Some(location) = &reply.location {
        headers.insert("location", location.parse().expect("a header value"));
    }
    (
        StatusCode::from_u16(reply.status).expect("a status"),
        headers,
        if reply.echo { echoed } else { reply.body },
    )
}

impl Receiver {
    /// Starts on a free port.
    pub fn start() -> Self {
        Self::start_on(0)
    }

    /// Starts on `port` (0: any free one).
    pub fn start_on(port: u16) -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind a port");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                // stopping drops the server with any request still hanging
                tokio::select! {
                    served = axum::serve(listener, app) => served.expect("serve"),
                    _ = stopped => {}
                }
            });
            // requests still hanging (a delayed reply) are dropped with the runtime
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}"),
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Answers the next requests with `replies`, then with the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().expect("state").script.extend(replies);
    }

    /// Answers every request not scripted with `reply`.
    pub fn default_reply(&self, reply: Reply) {
        self.shared.lock().expect("state").default = Some(reply);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.shared.lock().expect("state").requests.clone()
    }

    /// Waits until `n` requests came (at most `limit`); returns them all.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.requests();
            if r.len() >= n || Instant::now() >= deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").port()
}

/// The Python with aiosmtpd that `scripts/test.sh` sets up.
pub fn python() -> String {
    match std::env::var("DRIFTWATCH_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "DRIFTWATCH_PYTHON is not set: the email tests need a Python with aiosmtpd \
             (run the tests with scripts/test.sh, which installs it, or set DRIFTWATCH_PYTHON \
             to a python where `pip install -r tests/requirements.txt` was run)"
        ),
    }
}

/// A file of the test-only TLS certificates (`ca.pem`, `server.pem`, `server.key`).
pub fn tls_fixture(name: &str) -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let local = here.join("tests/fixtures/tls").join(name);
    if local.exists() {
        local
    } else {
        here.join("triggers/tests/fixtures/tls").join(name)
    }
}

/// A real SMTP server writing each message it accepts to a directory.
pub struct SmtpSink {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
    _tmp: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts one without TLS; with `login`, it requires AUTH with that user and password.
    pub fn start(login: Option<(&str, &str)>) -> Self {
        Self::start_with("plain", login)
    }

    /// Starts one in `mode` (`plain`, `starttls`, `tls`) with the test
    /// certificate of 127.0.0.1 ([`tls_fixture`]`("server.pem")`).
    pub fn start_with(mode: &str, login: Option<(&str, &str)>) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let port = closed_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let script = if script.exists() {
            script
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("triggers/tests/support/smtp_sink.py")
        };
        let mut cmd = Command::new(python());
        cmd.arg(&script).arg(&dir).arg(port.to_string()).arg(mode);
        cmd.arg(tls_fixture("server.pem"))
            .arg(tls_fixture("server.key"));
        if let Some((u, p)) = login {
            cmd.arg(u).arg(p);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SMTP sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the SMTP sink starts");
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
        SmtpSink {
            port,
            dir,
            child,
            _tmp: tmp,
        }
    }

    /// The messages received so far (raw), in order.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .expect("read the sink")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("a message"))
            .collect()
    }

    /// Waits until `n` messages came (at most `limit`).
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let m = self.messages();
            if m.len() >= n || Instant::now() >= deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rule file: one critical rule that fires while a window's mean score is
/// above 0.7, starting action `retrain`.
pub const HIGH_SCORES_RULE: &str = r#"[[rule]]
name = "high_scores"
sql = """
SELECT model_id, score_mean AS value FROM window_summary
WHERE model_id = $model_id AND window_end = $window_end AND score_mean > 0.7
"""
severity = "critical"
actions = ["retrain"]
annotations = { summary = "mean score of {{ model_id }} is {{ value }}" }
"#;

/// Predictions of model `churn` scored 0.9 (so that [`HIGH_SCORES_RULE`]
/// fires), from 2026-11-20 10:00 UTC, `per_hour` an hour for `hours` hours,
/// as JSON Lines.
pub fn high_score_events(hours: u32, per_hour: u32) -> String {
    let mut lines = String::new();
    for hour in 0..hours {
        for i in 0..per_hour {
            let minute = i * 60 / per_hour;
            lines.push_str(&format!(
                "{{\"event_id\": \"e{hour}-{i}\", \"model_id\": \"churn\", \"timestamp\": \"2026-11-20T{:02}:{minute:02}:00Z\", \"features\": {{\"x\": {i}}}, \"prediction\": {{\"score\": 0.9}}}}\n",
                10 + hour
            ));
        }
    }
    lines
}
