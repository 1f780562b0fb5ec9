//! The driftwatch engine: what runs the stages of the other crates as one
//! service. It sits last in the flow, and only the binary depends on it:
//!
//! ```text
//! ingest ─► detectors ─► sql ─► triggers ─► engine ─► driftwatch (binary)
//!                                           │
//!                                           └─ DATA_DIR: history/, references/,
//!                                              checkpoints/, outbox/, silences, audit
//! ```
//!
//! It owns the [`Pipeline`] (decode, windows, label join, dead letters,
//! window sinks, rules on a thread of their own: [`RuleWorker`]), bounded
//! runs over it ([`Replay`]: a replay, the demo), the service and its
//! sources ([`service`]: HTTP ingest, and Kafka with feature `kafka`), the rule runner and where rules come from
//! ([`alerting`]), the process-wide SQL engine over every pipeline's rows
//! ([`alerting::process_engine`], read by [`figures`]), its validated
//! settings ([`Config`]); the layout of the data directory ([`DataDir`]):
//! every directory and top-level file the service keeps between runs is
//! named there (the files inside `checkpoints/<group>/` by
//! [`CheckpointDir`], those inside `history/` by the sql crate's history);
//! the checkpoints ([`CheckpointDir`]), the unit of exactly-once; and the
//! reference profiles stored there ([`reference`]). It returns values; the
//! binary prints them.
//!
//! ```
//! use driftwatch_engine::DataDir;
//!
//! let data = DataDir::new("/var/lib/driftwatch");
//! assert_eq!(
//!     data.reference("churn", Some("v2")),
//!     std::path::Path::new("/var/lib/driftwatch/references/churn/v2.profile")
//! );
//! ```

pub mod alerting;
pub mod checkpoint;
mod config;
mod data_dir;
mod error;
pub mod figures;
mod history_writer;
pub mod pipeline;
pub mod reference;
pub mod replay;
pub mod report;
mod rule_worker;
pub mod rules;
pub mod service;
pub mod sinks;
pub mod versions;

pub use checkpoint::{CheckpointDir, PartitionCheckpoint};
pub use config::{CheckpointEvery, Config, RawCheckpoint, RawSql, SqlConfig};
pub use data_dir::DataDir;
pub use error::{Error, Result};
pub use pipeline::{Pipeline, RunSummary};
pub use replay::{HistoryMode, Replay, ReplayOptions};
pub use rule_worker::{LiveRuleStats, RuleWorker};
pub use rules::{Flushing, RuleRunner, RulesState, RunnerConfig};
pub use sinks::WindowSink;
