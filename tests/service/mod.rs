//! The `driftwatch run` process of the HTTP API tests: started in a
//! working directory, waited for until ready, stopped with a signal; and
//! requests to its API.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The bearer token the services of the tests ask for.
pub const TOKEN: &str = "api-token-for-tests";

pub struct Service {
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `driftwatch run` in `dir` and waits (bounded) until it is ready.
    pub fn start(dir: &Path, port: u16, name: &str) -> Self {
        Self::start_with(dir, port, name, &[])
    }

    pub fn start_with(dir: &Path, port: u16, name: &str, env: &[(&str, &str)]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let child = command(dir, &["run"])
            .envs(env.iter().copied())
            .env("DRIFTWATCH_API_TOKEN", TOKEN)
            .env("DRIFTWATCH__API__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut service = Service { child, log };
        service.wait_for("ready", |s| {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("service ended: {status}\n{}", s.log_text());
            }
            matches!(get(port, "/readyz", None), Ok((200, _))).then_some(())
        });
        service
    }

    /// Calls `done` every 100 ms until it gives a value, at most 60 s.
    pub fn wait_for<T>(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = done(self) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "not {what} in 60 s\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&mut self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, and the exit status (bounded wait).
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        self.wait_for("stopped after SIGTERM", |s| s.child.try_wait().unwrap())
    }

    pub fn kill(mut self) {
        self.signal("-KILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_driftwatch"));
    c.args(["--config", "driftwatch.toml"])
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("DRIFTWATCH_API_TOKEN")
        .env("DRIFTWATCH__LOG__LEVEL", "info");
    c
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One request: (status, body).
pub fn request(
    port: u16,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Result<(u16, String)> {
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let mut r = client
            .request(method, format!("http://127.0.0.1:{port}{path}"))
            .timeout(Duration::from_secs(60))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let response = r.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    })
}

pub fn get(port: u16, path: &str, token: Option<&str>) -> reqwest::Result<(u16, String)> {
    request(
        port,
        reqwest::Method::GET,
        path,
        token,
        "text/plain",
        Vec::new(),
    )
}

pub fn post(port: u16, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    request(
        port,
        reqwest::Method::POST,
        path,
        Some(TOKEN),
        content_type,
        body.to_vec(),
    )
    .unwrap()
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The value of the exposition's line for `series`.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
