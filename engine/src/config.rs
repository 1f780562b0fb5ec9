//! The engine's settings: validated once by the binary (which layers the
//! defaults, the TOML file and the environment) and trusted here.

use std::collections::BTreeSet;
use std::path::PathBuf;

use driftwatch_detectors::performance::PerformanceConfig;
use driftwatch_detectors::{DriftConfig, Limits, WindowSpec};
use driftwatch_ingest::{DecoderConfig, KafkaConfig};

use crate::DataDir;

/// What the pipeline, the rule runner and the service run with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Local state directory.
    pub data_dir: DataDir,
    /// Window shape.
    pub window: WindowSpec,
    /// Allowed lateness in ms.
    pub allowed_lateness_ms: i64,
    /// Decoder settings.
    pub decoder: DecoderConfig,
    /// Dead-letter bytes one source may write in a run.
    pub dead_letter_max_bytes: u64,
    /// Bounds on the live state.
    pub limits: Limits,
    /// Drift detector settings; `None` when disabled.
    pub drift: Option<DriftConfig>,
    /// Kafka settings (`driftwatch run`).
    pub kafka: KafkaConfig,
    /// Largest time between checkpoints (ms).
    pub checkpoint_interval_ms: i64,
    /// Largest number of records per partition between checkpoints.
    pub checkpoint_events: u64,
    /// Label join and performance metrics; `None` when disabled. Its store
    /// has no spill path: each pipeline sets its own.
    pub performance: Option<PerformanceConfig>,
    /// Rules, queries, history.
    pub sql: SqlConfig,
    /// Names of the configured actions.
    pub actions: BTreeSet<String>,
    /// The actions, validated (with their secrets when the binary read them).
    pub action_set: driftwatch_triggers::Actions,
    /// When the audit log's lines reach the disk.
    pub audit_sync: driftwatch_triggers::AuditSync,
    /// The HTTP API's address as notification receivers reach it: the
    /// evidence of an alert links there (`None`: no links).
    pub public_url: Option<String>,
}

/// `[sql]`, validated.
#[derive(Debug, Clone)]
pub struct SqlConfig {
    /// Rule files.
    pub rules_dir: PathBuf,
    /// Query limits.
    pub limits: driftwatch_sql::Limits,
    /// Write the history.
    pub history: bool,
    /// Bytes of decoded history files kept in memory, for the process.
    pub history_cache_bytes: usize,
    /// Keep raw prediction events this long in the `events` table (`None`:
    /// not kept).
    pub events_retention_ms: Option<i64>,
}
