//! driftwatch-sql: the DataFusion session over window results, alert rules
//! written in SQL, and the queryable history.
//!
//! ```text
//! detectors ─► closed windows, metric revisions ─► [ Tables: live rows ∪ Parquet history ]
//!                                                        │ Engine (DataFusion, read-only, limits)
//!                          rules/*.toml ─► RuleSet ──────┴─► evaluation per window ─► AlertInstance ─► triggers
//! ```
//!
//! Every table is one logical table: the rows of windows closed since the
//! last flush, held in memory, and the history, Parquet files under
//! `DATA_DIR/history/<table>/date=…/` (rows sorted by model). Rules are `SELECT`
//! statements planned once against the schemas and evaluated when a model's
//! window closes or its metrics are revised, with `$model_id`,
//! `$model_version`, `$window_start` and `$window_end` bound to that window.

pub mod bounded;
pub mod cache;
pub mod engine;
pub mod error;
pub mod events;
pub mod history;
pub mod params;
pub mod tables;
pub mod template;
pub mod udf;
pub mod versions;

pub use engine::{Engine, Limits, Prepared, Query};
pub use error::{Error, Result};
pub use events::{EventRows, events_schema};
pub use history::{CompactJob, Compaction, History, Staged, WriteJob};
pub use tables::{
    FlushJob, Layout, StagedFlush, TableDef, Tables, WindowTable, standard_schemas, standard_tables,
};
pub mod eval;
pub mod rules;

pub use driftwatch_ingest::event::ARROW_TIMEZONE;
pub use eval::{AlertInstance, Evaluation, Evaluator, RuleFailure, RuleStats, alerts_schema};
pub use rules::{Hold, LoadedRule, Rule, WindowRef};
pub mod testing;
