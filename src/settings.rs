//! Layered configuration: defaults in code → TOML file → `DRIFTWATCH__SECTION__KEY`
//! environment variables (environment wins). The raw, string-typed form is
//! validated once into [`Settings`], which the rest of the program trusts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::collections::HashMap;

use driftwatch_detectors::performance::{
    AdwinConfig, DdmConfig, PageHinkleyConfig, PerformanceConfig, StoreConfig, Task,
};
use driftwatch_detectors::{Decision, DriftConfig, Limits, Thresholds, WindowSpec};
use driftwatch_engine::{Config, DataDir, SqlConfig};
use driftwatch_ingest::KafkaConfig;
use driftwatch_ingest::{DecoderConfig, FeatureKind, FeatureSchema};
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

/// `[window]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawWindow {
    /// `"tumbling"` or `"hopping"`.
    pub kind: WindowKind,
    /// Window length, e.g. `"1h"`.
    pub size: String,
    /// Distance between window starts (hopping only), e.g. `"15m"`.
    pub slide: Option<String>,
    /// How far behind the largest event time the watermark trails.
    pub allowed_lateness: String,
}

impl Default for RawWindow {
    fn default() -> Self {
        RawWindow {
            kind: WindowKind::Tumbling,
            size: "1h".into(),
            slide: None,
            allowed_lateness: "5m".into(),
        }
    }
}

/// Window kinds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Back-to-back windows.
    Tumbling,
    /// Overlapping windows, one every `slide`.
    Hopping,
}

/// `[limits]`: bounds on the live state of a stream (a replay, a Kafka
/// partition); a prediction past one is refused with its reason.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Models with open windows.
    pub max_models: usize,
    /// Versions of one model with open windows.
    pub max_versions_per_model: usize,
    /// Open windows of all models.
    pub max_open_windows: usize,
    /// Distinct feature names of one model version with open windows.
    pub max_features: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        let d = Limits::default();
        RawLimits {
            max_models: d.max_models,
            max_versions_per_model: d.max_versions_per_model,
            max_open_windows: d.max_open_windows,
            max_features: d.max_features,
        }
    }
}

/// `[ingest]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawIngest {
    /// Largest accepted event, e.g. `"1MiB"`.
    pub max_event_bytes: String,
    /// How far ahead of the wall clock an event time may be, e.g. `"5m"`;
    /// `"off"` takes any time.
    pub max_future_skew: String,
    /// Dead-letter bytes one source (a file, a topic partition) may write
    /// in a run, e.g. `"256MiB"`; past it refusals are counted, not written.
    pub dead_letter_max_bytes: String,
}

impl Default for RawIngest {
    fn default() -> Self {
        RawIngest {
            max_event_bytes: "1MiB".into(),
            max_future_skew: "5m".into(),
            dead_letter_max_bytes: "256MiB".into(),
        }
    }
}

/// `[checkpoint]`: how often the service makes its state durable.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawCheckpoint {
    /// At most this long between checkpoints, e.g. `"10s"`.
    pub interval: String,
    /// At most this many records (per partition) between checkpoints.
    pub events: u64,
}

impl Default for RawCheckpoint {
    fn default() -> Self {
        RawCheckpoint {
            interval: "10s".into(),
            events: 100_000,
        }
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
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            listen: "127.0.0.1:9797".into(),
            max_body: "16MiB".into(),
            ingest: None,
            public_url: None,
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

/// Drift thresholds as written; a missing key takes the value of the level above.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawThresholds {
    /// See [`Thresholds`].
    pub wasserstein_warning: Option<f64>,
    /// See [`Thresholds`].
    pub wasserstein_drift: Option<f64>,
    /// See [`Thresholds`].
    pub psi_warning: Option<f64>,
    /// See [`Thresholds`].
    pub psi_drift: Option<f64>,
    /// See [`Thresholds`].
    pub js_warning: Option<f64>,
    /// See [`Thresholds`].
    pub js_drift: Option<f64>,
    /// See [`Thresholds`].
    pub unseen_warning: Option<f64>,
    /// See [`Thresholds`].
    pub unseen_drift: Option<f64>,
}

impl RawThresholds {
    fn over(&self, base: Thresholds) -> Thresholds {
        Thresholds {
            wasserstein_warning: self.wasserstein_warning.unwrap_or(base.wasserstein_warning),
            wasserstein_drift: self.wasserstein_drift.unwrap_or(base.wasserstein_drift),
            psi_warning: self.psi_warning.unwrap_or(base.psi_warning),
            psi_drift: self.psi_drift.unwrap_or(base.psi_drift),
            js_warning: self.js_warning.unwrap_or(base.js_warning),
            js_drift: self.js_drift.unwrap_or(base.js_drift),
            unseen_warning: self.unseen_warning.unwrap_or(base.unseen_warning),
            unseen_drift: self.unseen_drift.unwrap_or(base.unseen_drift),
        }
    }
}

/// Drift decision modes as written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawDecision {
    /// Effect sizes against thresholds.
    EffectSize,
    /// p-values (small windows).
    PValue,
}

/// `[drift]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawDrift {
    /// Run the drift and data-quality detector.
    pub enabled: bool,
    /// `"effect_size"` or `"p_value"`.
    pub decision: RawDecision,
    /// p-value decision: warning below this.
    pub p_value_warning: f64,
    /// p-value decision: drift below this.
    pub p_value_drift: f64,
    /// Reference-quantile bins for PSI and JS.
    pub bins: usize,
    /// t-digest compression.
    pub compression: usize,
    /// Distinct numeric values counted exactly.
    pub max_exact_values: usize,
    /// Categories counted per feature.
    pub max_categories: usize,
    /// Default thresholds.
    pub thresholds: RawThresholds,
}

impl Default for RawDrift {
    fn default() -> Self {
        let d = DriftConfig::default();
        RawDrift {
            enabled: true,
            decision: RawDecision::EffectSize,
            p_value_warning: d.p_value_warning,
            p_value_drift: d.p_value_drift,
            bins: d.bins,
            compression: d.compression,
            max_exact_values: d.max_exact,
            max_categories: d.max_categories,
            thresholds: RawThresholds::default(),
        }
    }
}

/// `[models.<id>.drift]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawModelDrift {
    /// Thresholds of this model's features.
    pub thresholds: RawThresholds,
    /// Thresholds of single features (`prediction.score` for the output).
    pub features: BTreeMap<String, RawThresholds>,
}

/// Model tasks as written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawTask {
    /// Two classes, `score` the probability of `positive_class`.
    Binary,
    /// More classes.
    Multiclass,
    /// A number.
    Regression,
}

/// `[models.<id>]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawModel {
    /// Declared feature kinds: `age = "numeric"`, `plan = "categorical"`.
    pub features: BTreeMap<String, FeatureKind>,
    /// Drift thresholds of this model.
    pub drift: RawModelDrift,
    /// What the model predicts; unset: taken from its first prediction's
    /// shape (`value` → regression, `probabilities` → multiclass, else binary).
    pub task: Option<RawTask>,
    /// Binary: the positive class (default `"1"`).
    pub positive_class: Option<String>,
    /// Binary: the class predicted below `threshold` when no class is sent (default `"0"`).
    pub negative_class: Option<String>,
    /// Binary: score from which the positive class is predicted (default 0.5).
    pub threshold: Option<f64>,
}

/// Change detectors by name, for `performance.detectors`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawDetector {
    /// ADWIN over the per-event error stream.
    Adwin,
    /// Page-Hinkley over classifiers' 0/1 error stream.
    PageHinkley,
    /// DDM over classifiers' 0/1 error stream.
    Ddm,
    /// ADWIN over the per-window accuracy (or MAE) series.
    WindowAdwin,
}

/// `[performance]`: the label join and performance metrics.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawPerformance {
    /// Join labels and report performance metrics.
    pub enabled: bool,
    /// How long after a window's end labels still revise its metrics.
    pub label_horizon: String,
    /// Revisions are due 1, 2, 4, … times this after a window's end.
    pub revision_interval: String,
    /// Memory for predictions awaiting labels; past it the oldest spill to
    /// disk (`DATA_DIR/pending/`).
    pub memory_budget: String,
    /// Online change detectors to run.
    pub detectors: Vec<RawDetector>,
    /// ADWIN settings (both ADWIN detectors).
    pub adwin: AdwinConfig,
    /// Page-Hinkley settings.
    pub page_hinkley: PageHinkleyConfig,
    /// DDM settings.
    pub ddm: DdmConfig,
}

impl Default for RawPerformance {
    fn default() -> Self {
        RawPerformance {
            enabled: true,
            label_horizon: "7d".into(),
            revision_interval: "1h".into(),
            memory_budget: "256MiB".into(),
            detectors: vec![
                RawDetector::Adwin,
                RawDetector::PageHinkley,
                RawDetector::Ddm,
                RawDetector::WindowAdwin,
            ],
            adwin: AdwinConfig::default(),
            page_hinkley: PageHinkleyConfig::default(),
            ddm: DdmConfig::default(),
        }
    }
}

/// `[sql]`: alert rules, queries and the history.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawSql {
    /// Directory of rule files (`*.toml`); a missing directory means no rules.
    pub rules_dir: PathBuf,
    /// Memory one query may hold (joins, sorts, aggregates).
    pub memory_limit: String,
    /// Time one query may take.
    pub timeout: String,
    /// Rows one query may return.
    pub max_rows: usize,
    /// Keep every closed window's rows as Parquet under `DATA_DIR/history`.
    pub history: bool,
    /// How long raw prediction events stay in the `events` table ("0s": not
    /// kept).
    pub events_retention: String,
    /// Memory for decoded history files kept across queries, shared by the
    /// process ("0B": none kept).
    pub history_cache: String,
}

impl Default for RawSql {
    fn default() -> Self {
        RawSql {
            rules_dir: PathBuf::from("rules"),
            memory_limit: "256MiB".into(),
            timeout: "5s".into(),
            max_rows: 10_000,
            history: true,
            events_retention: "1d".into(),
            history_cache: "256MiB".into(),
        }
    }
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

/// A size such as `"64MiB"` in bytes, at least `min`; the error names the
/// key and shows the form expected with `example`.
fn size_bytes(
    file: Option<&Path>,
    key: &str,
    value: &str,
    min: u64,
    example: &str,
) -> Result<u64, SettingsError> {
    value
        .parse::<bytesize::ByteSize>()
        .ok()
        .map(|b| b.as_u64())
        .filter(|b| *b >= min)
        .ok_or_else(|| SettingsError::Invalid {
            file: file.map(Path::to_owned),
            key: key.to_owned(),
            value: value.to_owned(),
            expected: if min > 0 {
                format!(
                    "a size of at least {} such as {example}",
                    bytesize::ByteSize::b(min).display().iec()
                )
            } else {
                format!("a size such as {example}")
            },
        })
}

fn duration_ms(file: Option<&Path>, key: &str, value: &str) -> Result<i64, SettingsError> {
    humantime::parse_duration(value)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| SettingsError::Invalid {
            file: file.map(Path::to_owned),
            key: key.to_owned(),
            value: value.to_owned(),
            expected: "a duration such as \"30s\", \"5m\" or \"1h 30m\"".into(),
        })
}

impl RawSettings {
    /// Checks every value and builds the settings the program uses.
    pub fn validate(self, file: Option<&Path>) -> Result<Settings, SettingsError> {
        let invalid = |key: &str, value: &str, expected: &str| SettingsError::Invalid {
            file: file.map(Path::to_owned),
            key: key.to_owned(),
            value: value.to_owned(),
            expected: expected.to_owned(),
        };
        let size = duration_ms(file, "window.size", &self.window.size)?;
        if size == 0 {
            return Err(invalid(
                "window.size",
                &self.window.size,
                "a positive duration",
            ));
        }
        let window = match (self.window.kind, &self.window.slide) {
            (WindowKind::Tumbling, None) => WindowSpec::tumbling(size),
            (WindowKind::Tumbling, Some(slide)) => {
                return Err(invalid(
                    "window.slide",
                    slide,
                    "no slide for tumbling windows (set window.kind = \"hopping\")",
                ));
            }
            (WindowKind::Hopping, None) => {
                return Err(invalid(
                    "window.slide",
                    "",
                    "a slide for hopping windows, e.g. \"15m\"",
                ));
            }
            (WindowKind::Hopping, Some(slide)) => {
                let slide_ms = duration_ms(file, "window.slide", slide)?;
                if slide_ms == 0 || slide_ms > size {
                    return Err(invalid(
                        "window.slide",
                        slide,
                        "a positive duration no longer than window.size",
                    ));
                }
                WindowSpec::hopping(size, slide_ms)
            }
        }
        .map_err(|e| invalid("window", &self.window.size, &e.to_string()))?;
        let allowed_lateness_ms = duration_ms(
            file,
            "window.allowed_lateness",
            &self.window.allowed_lateness,
        )?;
        let max_event_bytes = size_bytes(
            file,
            "ingest.max_event_bytes",
            &self.ingest.max_event_bytes,
            64,
            "\"512KiB\" or \"1MiB\"",
        )?;
        let dead_letter_max_bytes = size_bytes(
            file,
            "ingest.dead_letter_max_bytes",
            &self.ingest.dead_letter_max_bytes,
            0,
            "\"64MiB\" or \"1GiB\"",
        )?;
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_models", l.max_models),
            ("limits.max_versions_per_model", l.max_versions_per_model),
            ("limits.max_open_windows", l.max_open_windows),
            ("limits.max_features", l.max_features),
        ] {
            if value == 0 {
                return Err(invalid(key, "0", "a positive number"));
            }
        }
        let limits = Limits {
            max_models: l.max_models,
            max_versions_per_model: l.max_versions_per_model,
            max_open_windows: l.max_open_windows,
            max_features: l.max_features,
        };
        let max_future_skew_ms = match self.ingest.max_future_skew.trim() {
            "off" => None,
            skew => Some(duration_ms(file, "ingest.max_future_skew", skew)?),
        };
        let mut schema = FeatureSchema::default();
        for (model, m) in &self.models {
            for (feature, kind) in &m.features {
                schema.declare(model, feature, *kind);
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                &self.log.level,
                "a level (error, warn, info, debug, trace) or a tracing filter",
            ));
        }
        let drift = if self.drift.enabled {
            let defaults = self.drift.thresholds.over(Thresholds::default());
            let check = |key: String, t: Thresholds| {
                t.validate("thresholds")
                    .map_err(|e| SettingsError::Invalid {
                        file: file.map(Path::to_owned),
                        key,
                        value: e.to_string(),
                        expected: "non-negative thresholds, each warning at most its drift level"
                            .into(),
                    })
            };
            check("drift.thresholds".into(), defaults)?;
            let mut config = DriftConfig {
                decision: match self.drift.decision {
                    RawDecision::EffectSize => Decision::EffectSize,
                    RawDecision::PValue => Decision::PValue,
                },
                p_value_warning: self.drift.p_value_warning,
                p_value_drift: self.drift.p_value_drift,
                bins: self.drift.bins,
                compression: self.drift.compression,
                max_exact: self.drift.max_exact_values,
                max_categories: self.drift.max_categories,
                thresholds: defaults,
                ..DriftConfig::default()
            };
            for (model, m) in &self.models {
                let model_t = m.drift.thresholds.over(defaults);
                if m.drift.thresholds != RawThresholds::default() {
                    check(format!("models.{model}.drift.thresholds"), model_t)?;
                    config.model_thresholds.insert(model.clone(), model_t);
                }
                for (feature, raw) in &m.drift.features {
                    let t = raw.over(model_t);
                    check(format!("models.{model}.drift.features.{feature}"), t)?;
                    config
                        .feature_thresholds
                        .insert((model.clone(), feature.clone()), t);
                }
            }
            config.validate().map_err(|e| SettingsError::Invalid {
                file: file.map(Path::to_owned),
                key: match &e {
                    driftwatch_detectors::Error::Config { key, .. } => (*key).to_owned(),
                    _ => "drift".into(),
                },
                value: e.to_string(),
                expected: "see driftwatch.example.toml".into(),
            })?;
            Some(config)
        } else {
            None
        };
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid(
                "kafka.brokers",
                "",
                "a comma-separated host:port list",
            ));
        }
        if self.kafka.group_id.trim().is_empty()
            || driftwatch_ingest::names::check_name(
                String::new,
                &self.kafka.group_id,
                driftwatch_ingest::names::MAX_ID_BYTES,
            )
            .is_err()
        {
            return Err(invalid(
                "kafka.group_id",
                &self.kafka.group_id,
                "a consumer group name of at most 64 bytes without control characters",
            ));
        }
        if self.kafka.topics.is_empty() || self.kafka.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(
                "kafka.topics",
                &format!("{:?}", self.kafka.topics),
                "one or more topic names, e.g. [\"predictions\", \"labels\"]",
            ));
        }
        if let Some((key, value, why)) = self.kafka.forced_property() {
            return Err(invalid(&key, &value, &format!("no value: {why}")));
        }
        if self.kafka.topics.contains(&self.kafka.dead_letter_topic) {
            return Err(invalid(
                "kafka.dead_letter_topic",
                &self.kafka.dead_letter_topic,
                "a topic that is not consumed (kafka.topics)",
            ));
        }
        let checkpoint_interval_ms =
            duration_ms(file, "checkpoint.interval", &self.checkpoint.interval)?;
        if checkpoint_interval_ms == 0 {
            return Err(invalid(
                "checkpoint.interval",
                &self.checkpoint.interval,
                "a positive duration",
            ));
        }
        if self.checkpoint.events == 0 {
            return Err(invalid(
                "checkpoint.events",
                "0",
                "a positive number of records",
            ));
        }
        let performance = self.performance_config(file)?;
        let sql = self.sql_settings(file)?;
        let api = ApiSettings {
            listen: self.api.listen.parse().map_err(|_| {
                invalid(
                    "api.listen",
                    &self.api.listen,
                    "an address and port, e.g. \"127.0.0.1:9797\"",
                )
            })?,
            max_body: size_bytes(file, "api.max_body", &self.api.max_body, 1024, "16MiB")? as usize,
            // instances of one consumer group share the data directory,
            // and HTTP ingest runs on one process per data directory
            ingest: self.api.ingest.unwrap_or(!self.kafka_configured),
            shutdown_drain: std::time::Duration::from_millis(duration_ms(
                file,
                "shutdown.drain",
                &self.shutdown.drain,
            )? as u64),
        };
        // every key is checked now; the secrets are read by the commands
        // that deliver (`with_secrets`), so that `sql` or `silence` run
        // where they are not set
        let public_url = match &self.api.public_url {
            Some(url)
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.contains(char::is_whitespace) =>
            {
                return Err(invalid(
                    "api.public_url",
                    url,
                    "an http:// or https:// address, e.g. \"https://driftwatch.example.com\"",
                ));
            }
            url => url.clone(),
        };
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
                public_url,
                kafka: self.kafka,
                checkpoint_interval_ms,
                checkpoint_events: self.checkpoint.events,
                drift,
                data_dir: DataDir::new(self.data_dir),
                window,
                allowed_lateness_ms,
                dead_letter_max_bytes,
                limits,
                decoder: DecoderConfig {
                    max_event_bytes,
                    schema,
                    max_future_skew_ms,
                    clock: None,
                },
            },
            actions_raw: self.actions,
            file: file.map(Path::to_path_buf),
            log_format: self.log.format,
            log_level: self.log.level,
            api,
            kafka_configured: self.kafka_configured,
        })
    }
}

impl RawSettings {
    fn sql_settings(&self, file: Option<&Path>) -> Result<SqlConfig, SettingsError> {
        let q = &self.sql;
        let invalid = |key: &str, value: String, expected: &str| SettingsError::Invalid {
            file: file.map(Path::to_owned),
            key: key.to_owned(),
            value,
            expected: expected.to_owned(),
        };
        let size = |key: &str, value: &str, min: u64| -> Result<usize, SettingsError> {
            let bytes = size_bytes(file, key, value, min, "\"256MiB\"")?;
            usize::try_from(bytes).map_err(|_| invalid(key, value.to_owned(), "a smaller size"))
        };
        let memory = size("sql.memory_limit", &q.memory_limit, 1 << 20)?;
        let history_cache_bytes = size("sql.history_cache", &q.history_cache, 0)?;
        let timeout_ms = duration_ms(file, "sql.timeout", &q.timeout)?;
        if timeout_ms == 0 {
            return Err(invalid(
                "sql.timeout",
                q.timeout.clone(),
                "a positive duration",
            ));
        }
        if q.max_rows == 0 {
            return Err(invalid(
                "sql.max_rows",
                "0".into(),
                "a positive number of rows",
            ));
        }
        Ok(SqlConfig {
            rules_dir: q.rules_dir.clone(),
            limits: driftwatch_sql::Limits {
                memory,
                timeout: std::time::Duration::from_millis(timeout_ms as u64),
                max_rows: q.max_rows,
            },
            history: q.history,
            history_cache_bytes,
            events_retention_ms: Some(duration_ms(
                file,
                "sql.events_retention",
                &q.events_retention,
            )?)
            .filter(|ms| *ms > 0),
        })
    }

    fn performance_config(
        &self,
        file: Option<&Path>,
    ) -> Result<Option<PerformanceConfig>, SettingsError> {
        let p = &self.performance;
        if !p.enabled {
            return Ok(None);
        }
        let invalid = |key: &str, value: String, expected: &str| SettingsError::Invalid {
            file: file.map(Path::to_owned),
            key: key.to_owned(),
            value,
            expected: expected.to_owned(),
        };
        let positive = |key: &str, value: &str| -> Result<i64, SettingsError> {
            let ms = duration_ms(file, key, value)?;
            if ms == 0 {
                return Err(invalid(key, value.to_owned(), "a positive duration"));
            }
            Ok(ms)
        };
        let label_horizon_ms = positive("performance.label_horizon", &p.label_horizon)?;
        let revision_interval_ms = positive("performance.revision_interval", &p.revision_interval)?;
        let memory_budget = size_bytes(
            file,
            "performance.memory_budget",
            &p.memory_budget,
            1 << 20,
            "\"256MiB\"",
        )?;
        let a = &p.adwin;
        if !(a.delta > 0.0 && a.delta < 1.0) || a.clock == 0 || a.max_buckets < 2 {
            return Err(invalid(
                "performance.adwin",
                format!("{a:?}"),
                "0 < delta < 1, clock ≥ 1, max_buckets ≥ 2",
            ));
        }
        let ph = &p.page_hinkley;
        if !(ph.delta >= 0.0 && ph.threshold > 0.0 && ph.alpha > 0.0 && ph.alpha <= 1.0) {
            return Err(invalid(
                "performance.page_hinkley",
                format!("{ph:?}"),
                "delta ≥ 0, threshold > 0, 0 < alpha ≤ 1",
            ));
        }
        if p.ddm.drift_threshold <= 0.0 {
            return Err(invalid(
                "performance.ddm.drift_threshold",
                p.ddm.drift_threshold.to_string(),
                "a positive number of standard deviations",
            ));
        }
        let mut tasks = HashMap::new();
        for (model, m) in &self.models {
            let binary_keys =
                m.positive_class.is_some() || m.negative_class.is_some() || m.threshold.is_some();
            let task = match m.task {
                None if binary_keys => {
                    return Err(invalid(
                        &format!("models.{model}.task"),
                        String::new(),
                        "task = \"binary\" with positive_class, negative_class or threshold",
                    ));
                }
                None => continue,
                Some(RawTask::Binary) => {
                    let threshold = m.threshold.unwrap_or(0.5);
                    if !(0.0..=1.0).contains(&threshold) {
                        return Err(invalid(
                            &format!("models.{model}.threshold"),
                            threshold.to_string(),
                            "a score between 0 and 1",
                        ));
                    }
                    Task::Binary {
                        positive: m.positive_class.as_deref().unwrap_or("1").into(),
                        negative: m.negative_class.as_deref().unwrap_or("0").into(),
                        threshold,
                    }
                }
                Some(other) if binary_keys => {
                    return Err(invalid(
                        &format!("models.{model}.task"),
                        format!("{other:?}").to_lowercase(),
                        "\"binary\" when positive_class, negative_class or threshold is set",
                    ));
                }
                Some(RawTask::Multiclass) => Task::Multiclass,
                Some(RawTask::Regression) => Task::Regression,
            };
            tasks.insert(model.clone(), task);
        }
        let on = |d: RawDetector| p.detectors.contains(&d);
        Ok(Some(PerformanceConfig {
            label_horizon_ms,
            revision_interval_ms,
            tasks,
            adwin: on(RawDetector::Adwin).then_some(p.adwin),
            page_hinkley: on(RawDetector::PageHinkley).then_some(p.page_hinkley),
            ddm: on(RawDetector::Ddm).then_some(p.ddm),
            window_adwin: on(RawDetector::WindowAdwin).then_some(p.adwin),
            store: StoreConfig {
                memory_budget,
                spill_dir: None,
            },
        }))
    }
}

/// Loads and validates the settings.
pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
    load_raw(file)?.validate(file)
}

#[cfg(test)]
mod tests {
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
        // the example declares the demo's feature kinds; everything else is default
        // (and spells out the default thresholds, checked after validation)
        let expected = RawSettings {
            models: raw.models.clone(),
            drift: RawDrift {
                thresholds: raw.drift.thresholds,
                ..RawDrift::default()
            },
            // its [kafka] section documents the keys, and turns Kafka on
            kafka_configured: true,
            ..RawSettings::default()
        };
        assert_eq!(raw, expected);
        assert!(!raw.models.is_empty());
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
        assert_eq!(performance.tasks.get("eta"), Some(&Task::Regression));
        assert_eq!(performance.tasks.get("churn"), Some(&Task::binary()));
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
