//! The ingest crate's error type. Bad *events* are not errors: they are
//! [`crate::Reject`]ions that go to the dead-letter sink. Errors here stop a
//! source: a file that cannot be read, a dead-letter sink that cannot be written.

use std::io;
use std::path::{Path, PathBuf};

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a source or sink failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed (external: disk, permissions, missing file).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A Parquet file could not be opened or decoded (user: not a valid file).
    #[error("{}: parquet: {source}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: parquet::errors::ParquetError,
    },
    /// An Arrow batch could not be read or converted (user: unexpected column types).
    #[error("{}: arrow: {source}", path.display())]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: arrow::error::ArrowError,
    },
    /// Talking to Kafka failed (external: broker, network, settings).
    #[error("kafka: {0}")]
    Kafka(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn parquet(path: &Path, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn arrow(path: &Path, source: arrow::error::ArrowError) -> Self {
        Error::Arrow {
            path: path.to_owned(),
            source,
        }
    }
}
