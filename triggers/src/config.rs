//! `[actions.<name>]`: what a rule can start, as written in the configuration,
//! and the validated [`Action`] the rest of the crate trusts. Secrets (tokens,
//! passwords, signing keys, chat webhook URLs) are named by environment
//! variable and read once here; they never appear in the file, the logs or
//! the audit log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use driftwatch_ingest::settings::duration_ms;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::silence::Matcher;

/// Kinds of action.
pub const ACTION_KINDS: &[&str] = &["webhook", "email", "chat"];

/// Webhook presets.
pub const PRESETS: &[&str] = &[
    "generic",
    "github_repository_dispatch",
    "github_workflow_dispatch",
    "airflow",
    "kubeflow",
    "argo",
];

/// One `[actions.<name>]` table as written. Which keys apply depends on
/// `kind`; a key that does not apply is refused.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ActionConfig {
    /// `webhook`, `email` or `chat`.
    pub kind: String,

    // routing
    /// Take the alerts of every rule, not only of rules naming this action
    /// (severities and matchers still apply).
    pub every_rule: bool,
    /// Severities this action takes (empty: all).
    pub severities: Vec<String>,
    /// Label matchers every alert must satisfy: `team=ml`, `feature=~age|plan`,
    /// `model_id!=test`, `rule!~.*_info`.
    pub matchers: Vec<String>,
    /// Whether a group's resolved alerts are announced. Default: yes, except
    /// for the presets that start retraining pipelines.
    pub send_resolved: Option<bool>,

    // grouping (event time)
    /// Labels whose values make a group: one notification carries a group's alerts.
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification.
    pub group_wait: String,
    /// How long a group waits after a notification before announcing changes.
    pub group_interval: String,
    /// How long before a group still firing is announced again.
    pub repeat_interval: String,

    // delivery (clock time)
    /// Attempts before a notification is reported as failed.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each next one, with jitter.
    pub backoff: String,
    /// Longest wait between attempts.
    pub max_backoff: String,
    /// Time limit of one attempt.
    pub timeout: String,

    // webhook and chat
    /// `generic`, `github_repository_dispatch`, `github_workflow_dispatch`,
    /// `airflow`, `kubeflow`, `argo` (webhook only).
    pub preset: String,
    /// The URL: the full URL for `generic` and `chat`, the system's base URL
    /// for the other presets.
    pub url: String,
    /// Environment variable holding the URL instead (chat webhook URLs are secrets).
    pub url_env: String,
    /// HTTP method (generic only).
    pub method: String,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// Headers whose values come from environment variables: header → variable.
    pub headers_env: BTreeMap<String, String>,
    /// Environment variable holding a bearer token (`Authorization: Bearer …`).
    pub token_env: String,
    /// Environment variables holding a user and password for basic auth (webhook),
    /// or the SMTP login (email).
    pub username_env: String,
    /// See `username_env`.
    pub password_env: String,
    /// Environment variable holding the HMAC-SHA256 signing secret.
    pub hmac_secret_env: String,
    /// Body template (minijinja) over the notification (generic webhook).
    pub body: Option<String>,
    /// Preset inputs: name → template over the notification (GitHub workflow
    /// inputs or client payload, Airflow `conf`, Kubeflow and Argo parameters).
    pub inputs: BTreeMap<String, String>,
    /// GitHub: `owner/repo`.
    pub repository: String,
    /// GitHub workflow_dispatch: workflow file name or id.
    pub workflow: String,
    /// GitHub workflow_dispatch: the git ref to run on.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// GitHub repository_dispatch: the event type.
    pub event_type: String,
    /// Airflow: the DAG.
    pub dag_id: String,
    /// Airflow: `v1` (Airflow 2) or `v2` (Airflow 3).
    pub api_version: String,
    /// Kubeflow: the pipeline.
    pub pipeline_id: String,
    /// Kubeflow: the pipeline version.
    pub pipeline_version_id: String,
    /// Kubeflow: the experiment (optional).
    pub experiment_id: String,
    /// Argo: the namespace.
    pub namespace: String,
    /// Argo: the WorkflowTemplate to submit.
    pub workflow_template: String,

    // email
    /// SMTP server.
    pub smtp_host: String,
    /// SMTP port (default by `tls`: 587, 465, 25).
    pub smtp_port: Option<u16>,
    /// `starttls`, `tls` (implicit) or `none` (plain, local relays only).
    pub tls: String,
    /// PEM file of CA certificates to trust besides the public roots (a
    /// private CA of an internal relay).
    pub tls_ca_file: String,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Subject template.
    pub subject: Option<String>,
    /// Plain-text body template (email), or the message template (chat).
    pub text: Option<String>,
    /// HTML body template (email).
    pub html: Option<String>,
}

impl Default for ActionConfig {
    fn default() -> Self {
        ActionConfig {
            kind: String::new(),
            every_rule: false,
            severities: Vec::new(),
            matchers: Vec::new(),
            send_resolved: None,
            group_by: vec!["rule".into(), "model_id".into()],
            group_wait: "0s".into(),
            group_interval: "5m".into(),
            repeat_interval: "4h".into(),
            max_attempts: 8,
            backoff: "1s".into(),
            max_backoff: "5m".into(),
            timeout: "10s".into(),
            preset: "generic".into(),
            url: String::new(),
            url_env: String::new(),
            method: "POST".into(),
            headers: BTreeMap::new(),
            headers_env: BTreeMap::new(),
            token_env: String::new(),
            username_env: String::new(),
            password_env: String::new(),
            hmac_secret_env: String::new(),
            body: None,
            inputs: BTreeMap::new(),
            repository: String::new(),
            workflow: String::new(),
            git_ref: "main".into(),
            event_type: "driftwatch-retrain".into(),
            dag_id: String::new(),
            api_version: "v1".into(),
            pipeline_id: String::new(),
            pipeline_version_id: String::new(),
            experiment_id: String::new(),
            namespace: String::new(),
            workflow_template: String::new(),
            smtp_host: String::new(),
            smtp_port: None,
            tls: "starttls".into(),
            tls_ca_file: String::new(),
            from: String::new(),
            to: Vec::new(),
            subject: None,
            text: None,
            html: None,
        }
    }
}

/// A value read from an environment variable: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A secret with this value (tests).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Which alerts an action takes.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// Alerts of every rule, named or not.
    pub every_rule: bool,
    /// Severities taken (empty: all).
    pub severities: Vec<String>,
    /// Matchers every alert must satisfy.
    pub matchers: Vec<Matcher>,
    /// Whether resolved alerts are announced.
    pub send_resolved: bool,
}

impl Route {
    /// Whether an alert with this severity and these labels goes to the action.
    pub fn takes(&self, severity: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.severities.is_empty() || self.severities.iter().any(|s| s == severity))
            && self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// How alerts are grouped into notifications (event time, ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// Labels whose values make a group.
    pub group_by: Vec<String>,
    /// Wait of a new group.
    pub group_wait: i64,
    /// Wait between notifications of a group that changed.
    pub group_interval: i64,
    /// Wait before a group still firing is announced again.
    pub repeat_interval: i64,
}

/// How deliveries are retried (clock time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// First wait.
    pub backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
    /// Time limit of one attempt.
    pub timeout: Duration,
}

impl Retry {
    /// The wait after attempt `attempt` (1-based) failed: doubling from
    /// `backoff`, at most `max_backoff`, then a random share between half and
    /// all of it (so that many notifications failing together spread out).
    pub fn wait_after(&self, attempt: u32, jitter: f64) -> Duration {
        let doubling = 1u32 << attempt.saturating_sub(1).min(30);
        let full = self.backoff.saturating_mul(doubling).min(self.max_backoff);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// What a webhook preset builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preset {
    /// The notification as JSON, or the `body` template.
    Generic,
    /// `POST /repos/{owner}/{repo}/dispatches`.
    GithubRepositoryDispatch {
        /// `owner/repo`.
        repository: String,
        /// `event_type`.
        event_type: String,
    },
    /// `POST /repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches`.
    GithubWorkflowDispatch {
        /// `owner/repo`.
        repository: String,
        /// Workflow file or id.
        workflow: String,
        /// Git ref.
        git_ref: String,
    },
    /// `POST /api/{v1|v2}/dags/{dag_id}/dagRuns`.
    Airflow {
        /// The DAG.
        dag_id: String,
        /// `v1` or `v2`.
        api_version: String,
    },
    /// `POST /apis/v2beta1/runs`.
    Kubeflow {
        /// Pipeline.
        pipeline_id: String,
        /// Pipeline version.
        pipeline_version_id: String,
        /// Experiment, if any.
        experiment_id: Option<String>,
    },
    /// `POST /api/v1/workflows/{namespace}/submit`.
    Argo {
        /// Namespace.
        namespace: String,
        /// WorkflowTemplate.
        workflow_template: String,
    },
    /// A Slack-compatible incoming webhook: `{"text": …}`.
    Chat,
}

impl Preset {
    /// Whether this preset starts a pipeline (then resolved notices are off by default).
    pub fn starts_pipeline(&self) -> bool {
        !matches!(self, Preset::Generic | Preset::Chat)
    }
}

/// A validated webhook (or chat) action.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// What it builds.
    pub preset: Preset,
    /// The URL (full for generic and chat, the base for the others).
    pub url: Secret,
    /// Whether the URL came from the environment (then it is never shown).
    pub url_is_secret: bool,
    /// Method.
    pub method: String,
    /// Plain headers.
    pub headers: Vec<(String, String)>,
    /// Headers from the environment.
    pub secret_headers: Vec<(String, Secret)>,
    /// Bearer token.
    pub token: Option<Secret>,
    /// Basic auth.
    pub basic: Option<(Secret, Secret)>,
    /// Signing secret.
    pub hmac_secret: Option<Secret>,
}

/// How the email action talks to its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plain connection upgraded with STARTTLS (required).
    StartTls,
    /// TLS from the first byte.
    Implicit,
    /// No TLS (a local relay).
    None,
}

/// A validated email action.
#[derive(Debug, Clone)]
pub struct Email {
    /// Server.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: Tls,
    /// Login.
    pub credentials: Option<(Secret, Secret)>,
    /// Extra trusted CA certificates (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Sender.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
}

/// What an action does.
#[derive(Debug, Clone)]
pub enum ActionKind {
    /// An HTTP request (webhook or chat).
    Webhook(Webhook),
    /// An email.
    Email(Email),
}

/// A validated action.
#[derive(Debug, Clone)]
pub struct Action {
    /// Its name.
    pub name: String,
    /// `webhook`, `email` or `chat`.
    pub kind_name: String,
    /// What it does.
    pub kind: ActionKind,
    /// Which alerts it takes.
    pub route: Route,
    /// How they are grouped.
    pub grouping: Grouping,
    /// How deliveries are retried.
    pub retry: Retry,
    /// Its templates (`body`, `subject`, `text`, `html`, `input.<name>`).
    pub templates: Arc<minijinja::Environment<'static>>,
    /// Names of the preset inputs, in order.
    pub inputs: Vec<String>,
}

/// Every configured action, by name.
#[derive(Debug, Clone, Default)]
pub struct Actions {
    actions: BTreeMap<String, Arc<Action>>,
}

impl Action {
    /// Whether it asks for retraining: a webhook of any preset but `chat`.
    /// Its delivered requests are what a new model version is traced back
    /// to (`model_versions`).
    pub fn requests_retraining(&self) -> bool {
        matches!(&self.kind, ActionKind::Webhook(w) if w.preset != Preset::Chat)
    }
}

impl Actions {
    /// Validates every `[actions.<name>]`, reading secrets from `env`.
    pub fn from_config(
        raw: &BTreeMap<String, ActionConfig>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let mut actions = BTreeMap::new();
        for (name, config) in raw {
            let action = validate(name, config, env)?;
            actions.insert(name.clone(), Arc::new(action));
        }
        Ok(Actions { actions })
    }

    /// Reads secrets from the process environment.
    pub fn from_config_env(raw: &BTreeMap<String, ActionConfig>) -> Result<Self> {
        Self::from_config(raw, &|k| std::env::var(k).ok())
    }

    /// The action called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Action>> {
        self.actions.get(name)
    }

    /// Every action.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Action>> {
        self.actions.values()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Adds (or replaces) an action built in code (the demo's local receivers).
    pub fn insert(&mut self, action: Action) {
        self.actions.insert(action.name.clone(), Arc::new(action));
    }

    /// Validates one action as [`from_config`](Self::from_config) does.
    pub fn build(
        name: &str,
        config: &ActionConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Action> {
        validate(name, config, env)
    }

    /// The actions an alert goes to: those its rule names, and those taking every rule.
    pub fn for_rule<'a>(&'a self, named: &'a [String]) -> impl Iterator<Item = &'a Arc<Action>> {
        self.actions
            .values()
            .filter(move |a| a.route.every_rule || named.contains(&a.name))
    }
}

fn bad(name: &str, key: &str, message: impl Into<String>) -> Error {
    Error::Config {
        key: format!("actions.{name}.{key}"),
        message: message.into(),
    }
}

fn duration(name: &str, key: &str, text: &str) -> Result<Duration> {
    Ok(Duration::from_millis(millis(name, key, text)? as u64))
}

fn millis(name: &str, key: &str, text: &str) -> Result<i64> {
    duration_ms(&format!("actions.{name}.{key}"), text).map_err(Error::from)
}

fn secret(
    name: &str,
    key: &str,
    var: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>> {
    if var.is_empty() {
        return Ok(None);
    }
    match env(var) {
        Some(v) if !v.is_empty() => Ok(Some(Secret(v))),
        _ => Err(bad(
            name,
            key,
            format!("environment variable {var} is not set (it must hold the secret)"),
        )),
    }
}

/// A user and password from `username_env` and `password_env` (both or neither).
fn login(
    name: &str,
    c: &ActionConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(Secret, Secret)>> {
    match (
        secret(name, "username_env", &c.username_env, env)?,
        secret(name, "password_env", &c.password_env, env)?,
    ) {
        (Some(u), Some(p)) => Ok(Some((u, p))),
        (None, None) => Ok(None),
        _ => Err(bad(
            name,
            "password_env",
            "username_env and password_env go together",
        )),
    }
}

/// The keys of `config` that differ from the defaults, for refusing those
/// that do not apply to its kind.
fn set_keys(c: &ActionConfig) -> Vec<&'static str> {
    let d = ActionConfig::default();
    let mut keys = Vec::new();
    let mut check = |set: bool, key: &'static str| {
        if set {
            keys.push(key);
        }
    };
    check(c.preset != d.preset, "preset");
    check(!c.url.is_empty(), "url");
    check(!c.url_env.is_empty(), "url_env");
    check(c.method != d.method, "method");
    check(!c.headers.is_empty(), "headers");
    check(!c.headers_env.is_empty(), "headers_env");
    check(!c.token_env.is_empty(), "token_env");
    check(!c.username_env.is_empty(), "username_env");
    check(!c.password_env.is_empty(), "password_env");
    check(!c.hmac_secret_env.is_empty(), "hmac_secret_env");
    check(c.body.is_some(), "body");
    check(!c.inputs.is_empty(), "inputs");
    check(!c.repository.is_empty(), "repository");
    check(!c.workflow.is_empty(), "workflow");
    check(c.git_ref != d.git_ref, "ref");
    check(c.event_type != d.event_type, "event_type");
    check(!c.dag_id.is_empty(), "dag_id");
    check(c.api_version != d.api_version, "api_version");
    check(!c.pipeline_id.is_empty(), "pipeline_id");
    check(!c.pipeline_version_id.is_empty(), "pipeline_version_id");
    check(!c.experiment_id.is_empty(), "experiment_id");
    check(!c.namespace.is_empty(), "namespace");
    check(!c.workflow_template.is_empty(), "workflow_template");
    check(!c.smtp_host.is_empty(), "smtp_host");
    check(c.smtp_port.is_some(), "smtp_port");
    check(c.tls != d.tls, "tls");
    check(!c.tls_ca_file.is_empty(), "tls_ca_file");
    check(!c.from.is_empty(), "from");
    check(!c.to.is_empty(), "to");
    check(c.subject.is_some(), "subject");
    check(c.text.is_some(), "text");
    check(c.html.is_some(), "html");
    keys
}

/// Keys each kind may set (besides routing, grouping and delivery).
fn allowed(kind: &str) -> &'static [&'static str] {
    match kind {
        "webhook" => &[
            "preset",
            "url",
            "url_env",
            "method",
            "headers",
            "headers_env",
            "token_env",
            "username_env",
            "password_env",
            "hmac_secret_env",
            "body",
            "inputs",
            "repository",
            "workflow",
            "ref",
            "event_type",
            "dag_id",
            "api_version",
            "pipeline_id",
            "pipeline_version_id",
            "experiment_id",
            "namespace",
            "workflow_template",
        ],
        "chat" => &["url", "url_env", "headers", "hmac_secret_env", "text"],
        _ => &[
            "smtp_host",
            "smtp_port",
            "tls",
            "tls_ca_file",
            "from",
            "to",
            "subject",
            "text",
            "html",
            "username_env",
            "password_env",
        ],
    }
}

fn required(name: &str, key: &str, value: &str, why: &str) -> Result<String> {
    if value.is_empty() {
        return Err(bad(name, key, format!("required {why}")));
    }
    Ok(value.to_owned())
}

fn validate(name: &str, c: &ActionConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Action> {
    if !ACTION_KINDS.contains(&c.kind.as_str()) {
        return Err(bad(
            name,
            "kind",
            format!("expected webhook, email or chat, got {:?}", c.kind),
        ));
    }
    let allowed = allowed(&c.kind);
    for key in set_keys(c) {
        if !allowed.contains(&key) {
            return Err(bad(
                name,
                key,
                format!("does not apply to a {} action", c.kind),
            ));
        }
    }
    for s in &c.severities {
        if !["info", "warning", "critical"].contains(&s.as_str()) {
            return Err(bad(
                name,
                "severities",
                format!("{s:?} is not one of info, warning, critical"),
            ));
        }
    }
    let matchers = c
        .matchers
        .iter()
        .map(|m| Matcher::parse(m).map_err(|e| bad(name, "matchers", e)))
        .collect::<Result<Vec<_>>>()?;
    let grouping = Grouping {
        group_by: c.group_by.clone(),
        group_wait: millis(name, "group_wait", &c.group_wait)?,
        group_interval: millis(name, "group_interval", &c.group_interval)?,
        repeat_interval: millis(name, "repeat_interval", &c.repeat_interval)?,
    };
    if grouping.repeat_interval <= 0 {
        return Err(bad(name, "repeat_interval", "must be positive"));
    }
    if c.max_attempts == 0 {
        return Err(bad(name, "max_attempts", "must be at least 1"));
    }
    let retry = Retry {
        max_attempts: c.max_attempts,
        backoff: duration(name, "backoff", &c.backoff)?,
        max_backoff: duration(name, "max_backoff", &c.max_backoff)?,
        timeout: duration(name, "timeout", &c.timeout)?,
    };
    if retry.timeout.is_zero() {
        return Err(bad(name, "timeout", "must be positive"));
    }
    // a body is JSON unless a configured Content-Type says otherwise
    let json_body = c
        .headers
        .iter()
        .find(|(h, _)| h.eq_ignore_ascii_case("content-type"))
        .is_none_or(|(_, v)| v.to_ascii_lowercase().contains("json"));
    let mut templates = crate::render::environment(crate::render::Escaping {
        json_body,
        chat_text: c.kind == "chat",
    });
    let mut add = |key: &str, text: &str| -> Result<()> {
        templates
            .add_template_owned(key.to_owned(), text.to_owned())
            .map_err(|e| bad(name, key, format!("template: {e}")))
    };
    let mut inputs = Vec::new();
    let (kind, starts_pipeline) = match c.kind.as_str() {
        "email" => {
            let tls = match c.tls.as_str() {
                "starttls" => Tls::StartTls,
                "tls" => Tls::Implicit,
                "none" => Tls::None,
                other => {
                    return Err(bad(
                        name,
                        "tls",
                        format!("expected starttls, tls or none, got {other:?}"),
                    ));
                }
            };
            let port = c.smtp_port.unwrap_or(match tls {
                Tls::StartTls => 587,
                Tls::Implicit => 465,
                Tls::None => 25,
            });
            let credentials = login(name, c, env)?;
            let from = required(name, "from", &c.from, "(the sender address)")?;
            if c.to.is_empty() {
                return Err(bad(name, "to", "required (at least one recipient)"));
            }
            for (key, address) in
                std::iter::once(("from", &from)).chain(c.to.iter().map(|t| ("to", t)))
            {
                address
                    .parse::<lettre::message::Mailbox>()
                    .map_err(|e| bad(name, key, format!("{address:?} is not an address: {e}")))?;
            }
            add(
                "subject",
                c.subject
                    .as_deref()
                    .unwrap_or(crate::render::DEFAULT_SUBJECT),
            )?;
            add(
                "text",
                c.text.as_deref().unwrap_or(crate::render::DEFAULT_TEXT),
            )?;
            add(
                "html",
                c.html.as_deref().unwrap_or(crate::render::DEFAULT_HTML),
            )?;
            let ca_pem = if c.tls_ca_file.is_empty() {
                None
            } else {
                if tls == Tls::None {
                    return Err(bad(
                        name,
                        "tls_ca_file",
                        "applies with tls = starttls or tls",
                    ));
                }
                let pem = std::fs::read(&c.tls_ca_file).map_err(|e| {
                    bad(
                        name,
                        "tls_ca_file",
                        format!("cannot read {:?}: {e}", c.tls_ca_file),
                    )
                })?;
                lettre::transport::smtp::client::Certificate::from_pem(&pem).map_err(|e| {
                    bad(
                        name,
                        "tls_ca_file",
                        format!("{:?} is not a PEM certificate: {e}", c.tls_ca_file),
                    )
                })?;
                Some(pem)
            };
            let email = Email {
                host: required(name, "smtp_host", &c.smtp_host, "(the SMTP server)")?,
                port,
                tls,
                credentials,
                ca_pem,
                from,
                to: c.to.clone(),
            };
            (ActionKind::Email(email), false)
        }
        kind => {
            let chat = kind == "chat";
            let preset = if chat { Preset::Chat } else { preset(name, c)? };
            let (url, url_is_secret) = match (c.url.is_empty(), c.url_env.is_empty()) {
                (false, true) => (Secret(c.url.clone()), false),
                (true, false) => (
                    secret(name, "url_env", &c.url_env, env)?.unwrap_or(Secret(String::new())),
                    true,
                ),
                (false, false) => return Err(bad(name, "url", "give url or url_env, not both")),
                (true, true) => return Err(bad(name, "url", "required (or url_env)")),
            };
            let parsed = reqwest::Url::parse(url.expose()).map_err(|e| {
                let shown = if url_is_secret {
                    format!("the URL in ${}", c.url_env)
                } else {
                    format!("{:?}", c.url)
                };
                bad(name, "url", format!("{shown} is not a URL: {e}"))
            })?;
            if !["http", "https"].contains(&parsed.scheme()) {
                return Err(bad(name, "url", "must be an http or https URL"));
            }
            let method = c.method.to_ascii_uppercase();
            if !["POST", "PUT", "PATCH", "GET"].contains(&method.as_str()) {
                return Err(bad(
                    name,
                    "method",
                    format!("expected POST, PUT, PATCH or GET, got {:?}", c.method),
                ));
            }
            if method != "POST" && preset != Preset::Generic {
                return Err(bad(name, "method", "presets use the method of their API"));
            }
            let mut secret_headers = Vec::new();
            for (header, var) in &c.headers_env {
                let value = secret(name, &format!("headers_env.{header}"), var, env)?
                    .unwrap_or(Secret(String::new()));
                secret_headers.push((header.clone(), value));
            }
            let basic = login(name, c, env)?;
            for header in c.headers.keys().chain(c.headers_env.keys()) {
                reqwest::header::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    bad(name, "headers", format!("{header:?} is not a header name"))
                })?;
            }
            if let Some(body) = &c.body {
                if preset != Preset::Generic {
                    return Err(bad(
                        name,
                        "body",
                        "presets build their own body; use inputs to add to it",
                    ));
                }
                add("body", body)?;
            }
            if chat {
                add(
                    "text",
                    c.text.as_deref().unwrap_or(crate::render::DEFAULT_TEXT),
                )?;
            }
            if !c.inputs.is_empty() && !preset.starts_pipeline() {
                return Err(bad(name, "inputs", "applies to the pipeline presets only"));
            }
            let default_inputs = crate::render::default_inputs();
            let given: Vec<(String, String)> = if c.inputs.is_empty() {
                default_inputs
            } else {
                c.inputs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            if preset.starts_pipeline() {
                if matches!(preset, Preset::GithubRepositoryDispatch { .. }) && given.len() > 9 {
                    // client_payload takes at most 10 top-level keys; driftwatch adds one
                    return Err(bad(name, "inputs", "GitHub takes at most 9 inputs here"));
                }
                if matches!(preset, Preset::GithubWorkflowDispatch { .. }) && given.len() > 10 {
                    return Err(bad(
                        name,
                        "inputs",
                        "GitHub takes at most 10 workflow inputs",
                    ));
                }
                for (input, text) in &given {
                    add(&format!("input.{input}"), text)?;
                    inputs.push(input.clone());
                }
            }
            let starts = preset.starts_pipeline();
            let hook = Webhook {
                preset,
                url,
                url_is_secret,
                method,
                headers: c
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                secret_headers,
                token: secret(name, "token_env", &c.token_env, env)?,
                basic,
                hmac_secret: secret(name, "hmac_secret_env", &c.hmac_secret_env, env)?,
            };
            (ActionKind::Webhook(hook), starts)
        }
    };
    let action = Action {
        name: name.to_owned(),
        kind_name: c.kind.clone(),
        kind,
        route: Route {
            every_rule: c.every_rule,
            severities: c.severities.clone(),
            matchers,
            send_resolved: c.send_resolved.unwrap_or(!starts_pipeline),
        },
        grouping,
        retry,
        templates: Arc::new(templates),
        inputs,
    };
    crate::render::check(&action).map_err(|(key, e)| bad(name, &key, format!("template: {e}")))?;
    Ok(action)
}

fn preset(name: &str, c: &ActionConfig) -> Result<Preset> {
    let need =
        |key: &str, value: &str| required(name, key, value, &format!("by preset {}", c.preset));
    Ok(match c.preset.as_str() {
        "generic" => Preset::Generic,
        "github_repository_dispatch" => {
            let repository = need("repository", &c.repository)?;
            check_repository(name, &repository)?;
            Preset::GithubRepositoryDispatch {
                repository,
                event_type: need("event_type", &c.event_type)?,
            }
        }
        "github_workflow_dispatch" => {
            let repository = need("repository", &c.repository)?;
            check_repository(name, &repository)?;
            Preset::GithubWorkflowDispatch {
                repository,
                workflow: need("workflow", &c.workflow)?,
                git_ref: need("ref", &c.git_ref)?,
            }
        }
        "airflow" => {
            if !["v1", "v2"].contains(&c.api_version.as_str()) {
                return Err(bad(
                    name,
                    "api_version",
                    format!(
                        "expected v1 (Airflow 2) or v2 (Airflow 3), got {:?}",
                        c.api_version
                    ),
                ));
            }
            Preset::Airflow {
                dag_id: need("dag_id", &c.dag_id)?,
                api_version: c.api_version.clone(),
            }
        }
        "kubeflow" => Preset::Kubeflow {
            pipeline_id: need("pipeline_id", &c.pipeline_id)?,
            pipeline_version_id: need("pipeline_version_id", &c.pipeline_version_id)?,
            experiment_id: (!c.experiment_id.is_empty()).then(|| c.experiment_id.clone()),
        },
        "argo" => Preset::Argo {
            namespace: need("namespace", &c.namespace)?,
            workflow_template: need("workflow_template", &c.workflow_template)?,
        },
        other => {
            return Err(bad(
                name,
                "preset",
                format!("expected one of {}, got {other:?}", PRESETS.join(", ")),
            ));
        }
    })
}

fn check_repository(name: &str, repository: &str) -> Result<()> {
    let parts: Vec<&str> = repository.split('/').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad(
            name,
            "repository",
            format!("expected owner/repo, got {repository:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml_text: &str, env: &[(&str, &str)]) -> Result<Actions> {
        let raw: BTreeMap<String, ActionConfig> =
            toml::from_str(toml_text).expect("test config parses");
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Actions::from_config(&raw, &|k| env.get(k).cloned())
    }

    fn err(toml_text: &str, env: &[(&str, &str)]) -> String {
        load(toml_text, env).expect_err("refused").to_string()
    }

    #[test]
    fn a_webhook_takes_its_defaults_and_reads_secrets_from_the_environment() {
        let a = load(
            "[retrain]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nhmac_secret_env = \"S\"\n",
            &[("S", "k3y")],
        )
        .expect("valid");
        let a = a.get("retrain").expect("retrain");
        assert_eq!(a.grouping.group_by, ["rule", "model_id"]);
        assert_eq!(a.retry.max_attempts, 8);
        assert!(a.route.send_resolved);
        let ActionKind::Webhook(w) = &a.kind else {
            panic!("a webhook")
        };
        assert_eq!(w.hmac_secret.as_ref().map(Secret::expose), Some("k3y"));
        // the secret never shows in debug output
        assert!(!format!("{a:?}").contains("k3y"));
    }

    #[test]
    fn wrong_actions_are_refused_with_their_key() {
        let e = err("[r]\nkind = \"pager\"\n", &[]);
        assert!(e.starts_with("actions.r.kind:"), "{e}");
        let e = err("[r]\nkind = \"webhook\"\n", &[]);
        assert!(e.starts_with("actions.r.url: required"), "{e}");
        let e = err(
            "[r]\nkind = \"webhook\"\nurl = \"http://x\"\nhmac_secret_env = \"NOPE\"\n",
            &[],
        );
        assert!(
            e.contains("actions.r.hmac_secret_env: environment variable NOPE is not set"),
            "{e}"
        );
        let e = err(
            "[r]\nkind = \"webhook\"\nurl = \"http://x\"\nsmtp_host = \"m\"\n",
            &[],
        );
        assert!(
            e.starts_with("actions.r.smtp_host: does not apply to a webhook"),
            "{e}"
        );
        let e = err(
            "[r]\nkind = \"webhook\"\nurl = \"http://x\"\ntext = \"hi\"\n",
            &[],
        );
        assert!(
            e.starts_with("actions.r.text: does not apply to a webhook"),
            "{e}"
        );
        let e = err(
            "[r]\nkind = \"chat\"\nurl = \"http://x\"\nusername_env = \"U\"\n",
            &[],
        );
        assert!(
            e.starts_with("actions.r.username_env: does not apply to a chat"),
            "{e}"
        );
        let e = err(
            "[r]\nkind = \"webhook\"\nurl = \"http://x\"\npreset = \"airflow\"\n",
            &[],
        );
        assert!(
            e.starts_with("actions.r.dag_id: required by preset airflow"),
            "{e}"
        );
        let e = err(
            "[r]\nkind = \"webhook\"\nurl = \"http://x\"\npreset = \"github_workflow_dispatch\"\nrepository = \"acme\"\nworkflow = \"w.yml\"\n",
            &[],
        );
        assert!(
            e.starts_with("actions.r.repository: expected owner/repo"),
            "{e}"
        );
        let e = err(
            "[r]\nkind = \"webhook\"\nurl = \"http://x\"\nbody = \"{{ x \"\n",
            &[],
        );
        assert!(e.starts_with("actions.r.body: template"), "{e}");
        let e = err(
            "[r]\nkind = \"email\"\nsmtp_host = \"m\"\nfrom = \"a@b\"\n",
            &[],
        );
        assert!(e.starts_with("actions.r.to: required"), "{e}");
        let e = err(
            "[r]\nkind = \"email\"\nsmtp_host = \"m\"\nfrom = \"a@b\"\nto = [\"not an address\"]\n",
            &[],
        );
        assert!(
            e.starts_with("actions.r.to: \"not an address\" is not an address"),
            "{e}"
        );
        let e = err("[r]\nkind = \"chat\"\nurl_env = \"HOOK\"\n", &[]);
        assert!(
            e.starts_with("actions.r.url_env: environment variable HOOK"),
            "{e}"
        );
        let e = err(
            "[r]\nkind = \"chat\"\nurl_env = \"HOOK\"\n",
            &[("HOOK", "not a url secret-part")],
        );
        // a secret URL is never echoed, not even when it is wrong
        assert!(
            e.contains("the URL in $HOOK") && !e.contains("secret-part"),
            "{e}"
        );
        let e = err(
            "[r]\nkind = \"webhook\"\nurl = \"http://x\"\nmatchers = [\"team\"]\n",
            &[],
        );
        assert!(e.starts_with("actions.r.matchers:"), "{e}");
    }

    #[test]
    fn pipeline_presets_do_not_announce_resolved_alerts_unless_asked() {
        let a = load(
            "[gh]\nkind = \"webhook\"\nurl = \"https://api.github.com\"\npreset = \"github_repository_dispatch\"\nrepository = \"acme/churn\"\n",
            &[],
        )
        .expect("valid");
        let a = a.get("gh").expect("gh");
        assert!(!a.route.send_resolved);
        assert_eq!(a.inputs, ["model_id", "model_version", "rule", "alert_key"]);
    }

    #[test]
    fn the_wait_between_attempts_doubles_up_to_its_limit_with_jitter() {
        let r = Retry {
            max_attempts: 8,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(r.wait_after(1, 1.0), Duration::from_millis(100));
        assert_eq!(r.wait_after(2, 1.0), Duration::from_millis(200));
        assert_eq!(r.wait_after(3, 0.0), Duration::from_millis(200));
        assert_eq!(r.wait_after(4, 1.0), Duration::from_millis(500));
        assert_eq!(r.wait_after(40, 1.0), Duration::from_millis(500));
    }
}
