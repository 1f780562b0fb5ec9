//! Layered configuration: defaults in code → TOML file → `DRIFTWATCH__SECTION__KEY`
//! environment variables (environment wins). Each library crate owns its
//! sections as written and their validation (`driftwatch_ingest::settings`,
//! `driftwatch_detectors::settings`, the engine's `[sql]` and
//! `[checkpoint]`, the triggers' actions and audit log); this module layers
//! the sources, holds the binary's own sections (`[log]`, `[api]`,
//! `[shutdown]`) and composes the validated parts into [`Settings`], which
//! the rest of the program trusts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use driftwatch_detectors::settings::{
    RawDrift, RawLimits, RawModel, RawPerformance, RawWindow, feature_schema,
};
use driftwatch_engine::{Config, DataDir, RawCheckpoint, RawSql};
use driftwatch_ingest::KafkaConfig;
use driftwatch_ingest::settings::{Invalid, RawIngest, duration_ms, size_bytes};
use serde::Deserialize;

/// A configuration that could not be loaded, naming the key and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file or environment could not be read or parsed.
    #[error("configuration{}: {message}", source_hint(file))]
    Load {
        /// The file, if one was given.
        file: Option<PathBuf>,
        /// What the loader said.
        message: String,
    },
    /// A key has a value of the wrong form.
    #[error(
        "configuration{}: `{key}` = {value:?}: expected {expected}",
        source_hint(file)
    )]
    Invalid {
        /// The file, if one was given.
        file: Option<PathBuf>,
        /// Dotted key, e.g. `window.size`.
        key: String,
        /// The value found.
        value: String,
        /// What form is expected.
        expected: String,
    },
    /// An action that is wrong (the message names its key).
    #[error("configuration{}: {message}", source_hint(file))]
    Action {
        /// The file, if one was given.
        file: Option<PathBuf>,
        /// What is wrong, with the key.
        message: String,
    },
}

fn source_hint(file: &Option<PathBuf>) -> String {
    match file {
        Some(f) => format!(" ({} or DRIFTWATCH__* environment)", f.display()),
        None => " (DRIFTWATCH__* environment)".to_owned(),
    }
}

/// `[api]`: the HTTP API of `driftwatch run`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    /// Address and port to listen on, e.g. `"127.0.0.1:9797"`; off the
    /// loopback only with `DRIFTWATCH_API_TOKEN` set.
    pub listen: String,
    /// The largest request body taken, e.g. `"16MiB"` (larger: `413`).
    pub max_body: String,
    /// Whether `POST /v1/events` takes events (default: only without `[kafka]`).
    pub ingest: Option<bool>,
    /// The API's address as notification receivers reach it, e.g.
    /// `"https://driftwatch.example.com"`: the evidence of an alert links
    /// there (default: the listen address, when it is not a wildcard).
    pub public_url: Option<String>,
    /// Connections open at once (past them new ones wait).
    pub max_connections: usize,
    /// Time a client has to send a request's headers, e.g. `"30s"` (an
    /// idle kept-alive connection is closed after it too).
    pub header_timeout: String,
    /// Time a request has to send its body and be answered (`408` past
    /// it); longer than `sql.timeout`.
    pub request_timeout: String,
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            listen: "127.0.0.1:9797".into(),
            max_body: "16MiB".into(),
            ingest: None,
            public_url: None,
            max_connections: 512,
            header_timeout: "30s".into(),
            request_timeout: "60s".into(),
        }
    }
}

/// `[shutdown]`: how `driftwatch run` stops.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawShutdown {
    /// After the last checkpoint, how long notifications still in the
    /// outboxes are given to be delivered (the next start delivers the rest).
    pub drain: String,
}

impl Default for RawShutdown {
    fn default() -> Self {
        RawShutdown {
            drain: "30s".into(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `"text"` or `"json"`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `"info"` or `"driftwatch=debug,info"`.
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log output formats.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole configuration as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawSettings {
    /// Directory for local state (dead letters by default; checkpoints and history later).
    pub data_dir: PathBuf,
    /// Event-time windows.
    pub window: RawWindow,
    /// Decoding and validation.
    pub ingest: RawIngest,
    /// Bounds on the live state.
    pub limits: RawLimits,
    /// Logging.
    pub log: RawLog,
    /// Drift and data-quality detector.
    pub drift: RawDrift,
    /// Per-model settings.
    pub models: BTreeMap<String, RawModel>,
    /// Kafka source and dead-letter topic (`driftwatch run`, `produce`).
    pub kafka: KafkaConfig,
    /// Checkpoints of the service.
    pub checkpoint: RawCheckpoint,
    /// Label join and performance metrics.
    pub performance: RawPerformance,
    /// Rules, queries, history.
    pub sql: RawSql,
    /// Actions rules can name.
    pub actions: BTreeMap<String, driftwatch_triggers::ActionConfig>,
    /// The audit log.
    pub audit: driftwatch_triggers::AuditConfig,
    /// The HTTP API.
    pub api: RawApi,
    /// How the service stops.
    pub shutdown: RawShutdown,
    /// Whether the sources name a `[kafka]` section (`driftwatch run`
    /// consumes Kafka only then).
    #[serde(skip)]
    pub kafka_configured: bool,
}

impl Default for RawSettings {
    fn default() -> Self {
        RawSettings {
            data_dir: PathBuf::from("driftwatch-data"),
            window: RawWindow::default(),
            ingest: RawIngest::default(),
            limits: RawLimits::default(),
            log: RawLog::default(),
            drift: RawDrift::default(),
            models: BTreeMap::new(),
            kafka: KafkaConfig::default(),
            checkpoint: RawCheckpoint::default(),
            performance: RawPerformance::default(),
            sql: RawSql::default(),
            actions: BTreeMap::new(),
            audit: driftwatch_triggers::AuditConfig::default(),
            api: RawApi::default(),
            shutdown: RawShutdown::default(),
            kafka_configured: false,
        }
    }
}

/// Validated `[api]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    /// Where to listen.
    pub listen: std::net::SocketAddr,
    /// The largest request body, in bytes.
    pub max_body: usize,
    /// Whether `POST /v1/events` takes events.
    pub ingest: bool,
    /// How long deliveries are waited for at shutdown.
    pub shutdown_drain: std::time::Duration,
    /// Bounds on the API's connections.
    pub connections: crate::api::ConnectionLimits,
}

/// Validated settings: the engine's, and the binary's own (logging, where
/// they came from).
#[derive(Debug, Clone)]
pub struct Settings {
    /// What the engine runs with.
    pub engine: Config,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// The actions as written.
    pub actions_raw: BTreeMap<String, driftwatch_triggers::ActionConfig>,
    /// The configuration file, if one was given.
    pub file: Option<PathBuf>,
    /// The HTTP API.
    pub api: ApiSettings,
    /// Whether `[kafka]` was configured.
    pub kafka_configured: bool,
}

impl Settings {
    /// These settings with the actions' secrets read from the environment:
    /// for the commands that deliver notifications. A variable that is not
    /// set refuses the configuration, naming the key.
    pub fn with_secrets(&self) -> Result<Settings, SettingsError> {
        let mut s = self.clone();
        s.engine.action_set = driftwatch_triggers::Actions::from_config_env(&self.actions_raw)
            .map_err(|e| SettingsError::Action {
                file: self.file.clone(),
                message: e.to_string(),
            })?;
        Ok(s)
    }
}

/// Reads the layers: defaults, then `file` if given, then the environment.
pub fn load_raw(file: Option<&Path>) -> Result<RawSettings, SettingsError> {
    load_raw_from(file, std::env::vars())
}

fn load_raw_from(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RawSettings, SettingsError> {
    let load_err = |e: config::ConfigError| SettingsError::Load {
        file: file.map(Path::to_owned),
        message: e.to_string(),
    };
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.is_file() {
            return Err(SettingsError::Load {
                file: Some(path.to_owned()),
                message: "file not found".into(),
            });
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    let env: std::collections::HashMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("DRIFTWATCH__"))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("DRIFTWATCH")
            .prefix_separator("__")
            .separator("__")
            .source(Some(env)),
    );
    let built = builder.build().map_err(load_err)?;
    let kafka_configured = built.get_table("kafka").is_ok();
    let mut raw = built.try_deserialize::<RawSettings>().map_err(load_err)?;
    raw.kafka_configured = kafka_configured;
    Ok(raw)
}

impl RawSettings {
    /// Checks every value and builds the settings the program uses: each
    /// crate validates its own sections, this composes them.
    pub fn validate(self, file: Option<&Path>) -> Result<Settings, SettingsError> {
        let invalid = |e: Invalid| SettingsError::Invalid {
            file: file.map(Path::to_owned),
            key: e.key,
            value: e.value,
            expected: e.expected,
        };
        let (window, allowed_lateness_ms) = self.window.validate().map_err(invalid)?;
        let ingest = self
            .ingest
            .validate(feature_schema(&self.models))
            .map_err(invalid)?;
        let limits = self.limits.validate().map_err(invalid)?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(Invalid::new(
                "log.level",
                &self.log.level,
                "a level (error, warn, info, debug, trace) or a tracing filter",
            )));
        }
        let drift = self.drift.validate(&self.models).map_err(invalid)?;
        self.kafka.validate().map_err(invalid)?;
        let checkpoint = self.checkpoint.validate().map_err(invalid)?;
        let performance = self.performance.validate(&self.models).map_err(invalid)?;
        let sql = self.sql.validate().map_err(invalid)?;
        let api = self.api_settings().map_err(invalid)?;
        // every key is checked now; the secrets are read by the commands
        // that deliver (`with_secrets`), so that `sql` or `silence` run
        // where they are not set
        let action_set = driftwatch_triggers::Actions::from_config(&self.actions, &|var| {
            Some(format!("http://{var}.placeholder.invalid/"))
        })
        .map_err(|e| SettingsError::Action {
            file: file.map(Path::to_path_buf),
            message: e.to_string(),
        })?;
        Ok(Settings {
            engine: Config {
                performance,
                sql,
                actions: self.actions.keys().cloned().collect(),
                action_set,
                audit_sync: self.audit.sync,
                public_url: self.api.public_url.clone(),
                kafka: self.kafka,
                checkpoint_interval_ms: checkpoint.interval_ms,
                checkpoint_events: checkpoint.events,
                drift,
                data_dir: DataDir::new(self.data_dir),
                window,
                allowed_lateness_ms,
                dead_letter_max_bytes: ingest.dead_letter_max_bytes,
                limits,
                decoder: ingest.decoder,
            },
            actions_raw: self.actions,
            file: file.map(Path::to_path_buf),
            log_format: self.log.format,
            log_level: self.log.level,
            api,
            kafka_configured: self.kafka_configured,
        })
    }

    /// `api.max_connections`, `api.header_timeout`, `api.request_timeout`.
    fn connection_limits(&self) -> Result<crate::api::ConnectionLimits, Invalid> {
        let ms = |key, value: &str| -> Result<std::time::Duration, Invalid> {
            let ms = duration_ms(key, value)?;
            if ms <= 0 {
                return Err(Invalid::new(
                    key,
                    value,
                    "a duration longer than zero, e.g. \"30s\"",
                ));
            }
            Ok(std::time::Duration::from_millis(ms as u64))
        };
        if self.api.max_connections == 0 {
            return Err(Invalid::new(
                "api.max_connections",
                "0",
                "one connection or more, e.g. 512",
            ));
        }
        let request_timeout = ms("api.request_timeout", &self.api.request_timeout)?;
        let query_timeout = ms("sql.timeout", &self.sql.timeout)?;
        if request_timeout <= query_timeout {
            return Err(Invalid::new(
                "api.request_timeout",
                &self.api.request_timeout,
                format!(
                    "longer than sql.timeout ({}): a query's answer must have time to be sent",
                    self.sql.timeout
                ),
            ));
        }
        Ok(crate::api::ConnectionLimits {
            max_connections: self.api.max_connections,
            header_timeout: ms("api.header_timeout", &self.api.header_timeout)?,
            request_timeout,
        })
    }

    /// `[api]` and `[shutdown]`, the binary's own sections.
    fn api_settings(&self) -> Result<ApiSettings, Invalid> {
        if let Some(url) = &self.api.public_url
            && (!(url.starts_with("http://") || url.starts_with("https://"))
                || url.contains(char::is_whitespace))
        {
            return Err(Invalid::new(
                "api.public_url",
                url,
                "an http:// or https:// address, e.g. \"https://driftwatch.example.com\"",
            ));
        }
        Ok(ApiSettings {
            listen: self.api.listen.parse().map_err(|_| {
                Invalid::new(
                    "api.listen",
                    &self.api.listen,
                    "an address and port, e.g. \"127.0.0.1:9797\"",
                )
            })?,
            max_body: size_bytes("api.max_body", &self.api.max_body, 1024, "16MiB")? as usize,
            // instances of one consumer group share the data directory,
            // and HTTP ingest runs on one process per data directory
            ingest: self.api.ingest.unwrap_or(!self.kafka_configured),
            shutdown_drain: std::time::Duration::from_millis(duration_ms(
                "shutdown.drain",
                &self.shutdown.drain,
            )? as u64),
            connections: self.connection_limits()?,
        })
    }
}

/// Loads and validates the settings.
pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
    load_raw(file)?.validate(file)
}

#[cfg(test)]
mod tests {
    use driftwatch_detectors::DriftConfig;
    use driftwatch_detectors::performance::{PerformanceConfig, Task};

    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        f
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn example_config_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("driftwatch.example.toml");
        let raw = load_raw_from(Some(&path), no_env()).expect("example parses");
        // the example is the defaults (and spells out the default
        // thresholds, checked after validation); its optional sections
        // ([kafka], [models.*]) are commented out: regression (issue 41,
        // item 16), its [kafka] turned HTTP ingest off for whoever copied it
        let expected = RawSettings {
            drift: RawDrift {
                thresholds: raw.drift.thresholds,
                ..RawDrift::default()
            },
            ..RawSettings::default()
        };
        assert_eq!(raw, expected);
        assert!(raw.models.is_empty() && !raw.kafka_configured);
        assert!(
            !load_raw_from(None, no_env())
                .expect("defaults")
                .kafka_configured
        );
        let from_env = [("DRIFTWATCH__KAFKA__BROKERS".to_owned(), "k:9092".to_owned())];
        assert!(load_raw_from(None, from_env).expect("env").kafka_configured);
        let settings = raw.validate(Some(&path)).expect("example validates");
        assert_eq!(settings.engine.drift, Some(DriftConfig::default()));
        let performance = settings
            .engine
            .performance
            .expect("performance on by default");
        let defaults = PerformanceConfig::default();
        assert_eq!(
            PerformanceConfig {
                tasks: defaults.tasks.clone(),
                ..performance.clone()
            },
            defaults
        );
        assert!(performance.tasks.is_empty());
        // its commented [models.*] sections take effect as written once
        // uncommented
        let text = std::fs::read_to_string(&path).expect("example");
        let models: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "# [models.churn]")
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .collect();
        let f = write(&models.join("\n"));
        let raw = load_raw_from(Some(f.path()), no_env()).expect("models parse");
        let settings = raw.validate(Some(f.path())).expect("models validate");
        let tasks = settings.engine.performance.expect("performance").tasks;
        assert_eq!(tasks.get("eta"), Some(&Task::Regression));
        assert_eq!(tasks.get("churn"), Some(&Task::binary()));
    }

    #[test]
    fn environment_wins_over_the_file() {
        let f = write("[window]\nsize = \"2h\"\nallowed_lateness = \"1m\"\n");
        let env = vec![("DRIFTWATCH__WINDOW__SIZE".to_owned(), "30m".to_owned())];
        let raw = load_raw_from(Some(f.path()), env).expect("loads");
        assert_eq!(raw.window.size, "30m");
        assert_eq!(raw.window.allowed_lateness, "1m");
        let settings = raw.validate(Some(f.path())).expect("valid");
        assert_eq!(settings.engine.window.size(), 30 * 60_000);
    }

    #[test]
    fn actions_are_checked_at_load_and_their_secrets_when_a_command_delivers() {
        let text = "[actions.retrain]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\
                    hmac_secret_env = \"DRIFTWATCH_TEST_UNSET_SECRET\"\nheaders = { \"X-Team\" = \"ml\" }\n";
        let f = write(text);
        let settings = load_raw_from(Some(f.path()), no_env())
            .expect("loads")
            .validate(Some(f.path()))
            .expect("valid without the secret: `sql` and `silence` do not need it");
        let err = settings.with_secrets().expect_err("the secret is not set");
        let msg = err.to_string();
        assert!(
            msg.contains("actions.retrain.hmac_secret_env: environment variable DRIFTWATCH_TEST_UNSET_SECRET is not set"),
            "{msg}"
        );
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");
        // a key that does not apply is refused at load, for every command
        let f = write(
            "[actions.retrain]\nkind = \"webhook\"\nurl = \"http://x/\"\nsmtp_host = \"m\"\n",
        );
        let err = load_raw_from(Some(f.path()), no_env())
            .expect("loads")
            .validate(Some(f.path()))
            .expect_err("refused");
        assert!(
            err.to_string()
                .contains("actions.retrain.smtp_host: does not apply to a webhook"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let f = write("[window]\nsise = \"2h\"\n");
        let err = load_raw_from(Some(f.path()), no_env()).expect_err("typo");
        assert!(err.to_string().contains("sise"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_and_the_expected_form() {
        let cases = [
            ("[window]\nsize = \"soon\"\n", "window.size"),
            ("[window]\nkind = \"hopping\"\n", "window.slide"),
            (
                "[window]\nkind = \"hopping\"\nsize = \"1h\"\nslide = \"2h\"\n",
                "window.slide",
            ),
            ("[window]\nslide = \"5m\"\n", "window.slide"),
            (
                "[window]\nallowed_lateness = \"-5m\"\n",
                "window.allowed_lateness",
            ),
            (
                "[ingest]\nmax_event_bytes = \"lots\"\n",
                "ingest.max_event_bytes",
            ),
            ("[kafka]\ntopics = []\n", "kafka.topics"),
            (
                "[api]\npublic_url = \"driftwatch.example.com\"\n",
                "api.public_url",
            ),
            ("[kafka]\ngroup_id = \"a\\nb\"\n", "kafka.group_id"),
            (
                "[kafka]\ngroup_id = \"ggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggg\"\n",
                "kafka.group_id",
            ),
            (
                "[ingest]\nmax_future_skew = \"tomorrow\"\n",
                "ingest.max_future_skew",
            ),
            (
                "[ingest]\ndead_letter_max_bytes = \"lots\"\n",
                "ingest.dead_letter_max_bytes",
            ),
            ("[limits]\nmax_models = 0\n", "limits.max_models"),
            ("[kafka]\nbrokers = \" \"\n", "kafka.brokers"),
            (
                "[kafka.consumer_properties]\n\"enable.auto.commit\" = \"true\"\n",
                "kafka.consumer_properties.\"enable.auto.commit\"",
            ),
            (
                "[kafka.properties]\n\"group.id\" = \"other\"\n",
                "kafka.properties.\"group.id\"",
            ),
            (
                "[kafka]\ntopics = [\"a\"]\ndead_letter_topic = \"a\"\n",
                "kafka.dead_letter_topic",
            ),
            ("[checkpoint]\ninterval = \"0s\"\n", "checkpoint.interval"),
            ("[sql]\nhistory_cache = \"lots\"\n", "sql.history_cache"),
            ("[sql]\nmemory_limit = \"1KiB\"\n", "sql.memory_limit"),
            ("[checkpoint]\nevents = 0\n", "checkpoint.events"),
            (
                "[performance]\nlabel_horizon = \"0s\"\n",
                "performance.label_horizon",
            ),
            (
                "[performance]\nrevision_interval = \"often\"\n",
                "performance.revision_interval",
            ),
            (
                "[performance]\nmemory_budget = \"10KiB\"\n",
                "performance.memory_budget",
            ),
            ("[performance.adwin]\ndelta = 2.0\n", "performance.adwin"),
            (
                "[performance.page_hinkley]\nalpha = 0.0\n",
                "performance.page_hinkley",
            ),
            (
                "[performance.ddm]\ndrift_threshold = -1.0\n",
                "performance.ddm.drift_threshold",
            ),
            (
                "[models.churn]\npositive_class = \"yes\"\n",
                "models.churn.task",
            ),
            (
                "[models.eta]\ntask = \"regression\"\nthreshold = 0.3\n",
                "models.eta.task",
            ),
            (
                "[models.churn]\ntask = \"binary\"\nthreshold = 1.5\n",
                "models.churn.threshold",
            ),
        ];
        for (text, key) in cases {
            let f = write(text);
            let err = load_raw_from(Some(f.path()), no_env())
                .expect("loads")
                .validate(Some(f.path()))
                .expect_err(text);
            assert!(err.to_string().contains(key), "{text}: {err}");
            assert!(err.to_string().contains("expected"), "{text}: {err}");
        }
    }

    #[test]
    fn thresholds_layer_default_model_feature() {
        let f = write(
            "[drift.thresholds]\npsi_drift = 0.3\n[models.churn.drift.thresholds]\njs_drift = 0.2\n\
             [models.churn.drift.features.age]\nwasserstein_drift = 0.5\n",
        );
        let settings = load_raw_from(Some(f.path()), no_env())
            .expect("loads")
            .validate(Some(f.path()))
            .expect("valid");
        let drift = settings.engine.drift.expect("enabled by default");
        let detector = driftwatch_detectors::DriftDetector::new(drift).expect("valid");
        let age = detector.thresholds("churn", "age");
        assert_eq!(
            (age.psi_drift, age.js_drift, age.wasserstein_drift),
            (0.3, 0.2, 0.5)
        );
        let plan = detector.thresholds("churn", "plan");
        assert_eq!(
            (plan.psi_drift, plan.js_drift, plan.wasserstein_drift),
            (0.3, 0.2, 0.1)
        );
        let other = detector.thresholds("fraud", "age");
        assert_eq!((other.psi_drift, other.js_drift), (0.3, 0.1));
    }

    #[test]
    fn unknown_detector_keys_are_refused() {
        let f = write("[drift]\nks_threshold = 0.1\n");
        let err = load_raw_from(Some(f.path()), no_env()).expect_err("unknown key");
        assert!(err.to_string().contains("ks_threshold"), "{err}");
    }

    #[test]
    fn bad_feature_kind_is_refused() {
        let f = write("[models.churn.features]\nage = \"number\"\n");
        let err = load_raw_from(Some(f.path()), no_env()).expect_err("bad kind");
        assert!(err.to_string().contains("number"), "{err}");
    }
}
