//! The crate's error type.

use std::path::PathBuf;

/// What went wrong, and whose it is: a user's rule or query, or the files
/// and engine underneath.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule file that cannot be read as rules (user).
    #[error("{file}: {message}")]
    RuleFile {
        /// The file.
        file: PathBuf,
        /// What is wrong, with line and column when known.
        message: String,
    },
    /// One rule that is wrong (user).
    #[error("{file}: rule {rule}: {message}")]
    Rule {
        /// The file holding it.
        file: PathBuf,
        /// The rule's name.
        rule: String,
        /// What is wrong.
        message: String,
    },
    /// A query refused before it ran (user): not a single read-only SELECT.
    #[error("query refused: {0}")]
    Refused(String),
    /// A query that failed while planning or running (user or engine).
    #[error("{0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// A query that ran past its time limit.
    #[error("stopped after {limit_ms} ms: the query ran past its time limit (sql.timeout)")]
    Timeout {
        /// The limit.
        limit_ms: u64,
    },
    /// A query that returned more rows than allowed.
    #[error("stopped at {limit} rows: more than sql.max_rows")]
    TooManyRows {
        /// The limit.
        limit: usize,
    },
    /// Reading or writing the history (external: disk).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Arrow or Parquet failed on data the crate built (internal).
    #[error("{context}: {message}")]
    Data {
        /// What was being done.
        context: String,
        /// The cause.
        message: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

pub(crate) fn data<E: std::fmt::Display>(context: impl Into<String>) -> impl FnOnce(E) -> Error {
    let context = context.into();
    move |e| Error::Data {
        context,
        message: e.to_string(),
    }
}
