//! The engine's settings: its own sections as written (`[sql]`,
//! `[checkpoint]`) with their validation, and the [`Config`] the binary
//! composes from every crate's validated sections (after layering the
//! defaults, the TOML file and the environment) and the engine trusts.

use std::collections::BTreeSet;
use std::path::PathBuf;

use driftwatch_ingest::settings::{Invalid, duration_ms, positive_duration_ms, size_bytes};
use serde::Deserialize;

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

/// `[sql]` as written: alert rules, queries and the history.
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

impl RawSql {
    /// Checks every value.
    pub fn validate(&self) -> Result<SqlConfig, Invalid> {
        let size = |key: &str, value: &str, min: u64| -> Result<usize, Invalid> {
            let bytes = size_bytes(key, value, min, "\"256MiB\"")?;
            usize::try_from(bytes).map_err(|_| Invalid::new(key, value, "a smaller size"))
        };
        let memory = size("sql.memory_limit", &self.memory_limit, 1 << 20)?;
        let history_cache_bytes = size("sql.history_cache", &self.history_cache, 0)?;
        let timeout_ms = positive_duration_ms("sql.timeout", &self.timeout)?;
        if self.max_rows == 0 {
            return Err(Invalid::new(
                "sql.max_rows",
                "0",
                "a positive number of rows",
            ));
        }
        Ok(SqlConfig {
            rules_dir: self.rules_dir.clone(),
            limits: driftwatch_sql::Limits {
                memory,
                timeout: std::time::Duration::from_millis(timeout_ms as u64),
                max_rows: self.max_rows,
            },
            history: self.history,
            history_cache_bytes,
            events_retention_ms: Some(duration_ms("sql.events_retention", &self.events_retention)?)
                .filter(|ms| *ms > 0),
        })
    }
}

/// `[checkpoint]` as written: how often the service makes its state durable.
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

/// `[checkpoint]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointEvery {
    /// Largest time between checkpoints (ms).
    pub interval_ms: i64,
    /// Largest number of records per partition between checkpoints.
    pub events: u64,
}

impl RawCheckpoint {
    /// Both bounds positive.
    pub fn validate(&self) -> Result<CheckpointEvery, Invalid> {
        let interval_ms = positive_duration_ms("checkpoint.interval", &self.interval)?;
        if self.events == 0 {
            return Err(Invalid::new(
                "checkpoint.events",
                "0",
                "a positive number of records",
            ));
        }
        Ok(CheckpointEvery {
            interval_ms,
            events: self.events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_and_checkpoint_sections_validate_or_name_the_key() {
        let sql = RawSql::default().validate().expect("defaults");
        assert_eq!(sql.limits.memory, 256 << 20);
        assert_eq!(sql.events_retention_ms, Some(86_400_000));
        let off = RawSql {
            events_retention: "0s".into(),
            ..RawSql::default()
        };
        assert_eq!(off.validate().expect("valid").events_retention_ms, None);
        for (bad, key) in [
            (
                RawSql {
                    timeout: "0s".into(),
                    ..RawSql::default()
                },
                "sql.timeout",
            ),
            (
                RawSql {
                    max_rows: 0,
                    ..RawSql::default()
                },
                "sql.max_rows",
            ),
            (
                RawSql {
                    memory_limit: "1KiB".into(),
                    ..RawSql::default()
                },
                "sql.memory_limit",
            ),
        ] {
            assert_eq!(bad.validate().expect_err(key).key, key);
        }
        let every = RawCheckpoint::default().validate().expect("defaults");
        assert_eq!((every.interval_ms, every.events), (10_000, 100_000));
        let never = RawCheckpoint {
            events: 0,
            ..RawCheckpoint::default()
        };
        assert_eq!(never.validate().expect_err("0").key, "checkpoint.events");
    }
}
