//! The engine's one error type.

use std::path::PathBuf;

/// What went wrong in the engine, and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the data directory could not be read or written
    /// (external: a full or read-only disk, permissions).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A file of the data directory is not what it should be: damaged, of
    /// another format, or another partition's (the user's to move away).
    #[error("{}: {message}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Something asked for is not in the data directory (the user's).
    #[error("no {what} ({})", path.display())]
    NotFound {
        /// What was looked for.
        what: String,
        /// Where it would be.
        path: PathBuf,
    },
    /// The input given cannot do what was asked (the user's).
    #[error("{0}")]
    Input(String),
    /// Reading or decoding events.
    #[error(transparent)]
    Ingest(#[from] driftwatch_ingest::Error),
    /// A detector, its settings or a stored profile.
    #[error(transparent)]
    Detector(#[from] driftwatch_detectors::Error),
    /// State that could not be encoded (internal: a bug).
    #[error("encoding {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// What the encoder said.
        message: String,
    },
}

/// The engine's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
