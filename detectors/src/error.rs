//! The detectors crate's error type.

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the detectors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid (the user's: fix the configuration).
    #[error("invalid configuration `{key}`: {message}")]
    Config {
        /// The configuration key.
        key: &'static str,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A file could not be read or written (external).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A stored file could not be decoded (user: not the expected file).
    #[error("{}: {message}", path.display())]
    Decode {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint of window state could not be written or read (internal,
    /// or a checkpoint from another build or configuration).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The on-disk store of pending predictions failed (external: disk
    /// full, permissions, or a file damaged outside driftwatch).
    #[error("pending-label store {}: {message}", path.display())]
    Store {
        /// The store's file.
        path: std::path::PathBuf,
        /// What failed.
        message: String,
    },
    /// A component could not build its output rows (internal: a bug).
    #[error("internal: building rows of `{table}`: {source}")]
    Output {
        /// The output table.
        table: String,
        /// The cause.
        source: arrow::error::ArrowError,
    },
}
