//! driftwatch-sql: the DataFusion session over window results, alert rules
//! written in SQL, and the queryable history.
//!
//! ```text
//! ingest ──► detectors ──► [ sql ] ──► triggers
//! ```
//!
//! Nothing lives here yet: the tables, rule loading and evaluation arrive with
//! the SQL issue. The crate exists so that the dependency direction of the
//! workspace (`ingest` ← `detectors` ← `sql` ← `triggers` ← root) is fixed from
//! the start.
