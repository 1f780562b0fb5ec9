//! The crate's error type.

use std::path::PathBuf;

/// What went wrong, and whose it is: the user's configuration, a receiver
/// (retried by the outbox), or the local store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that is wrong (user): the key and what was expected.
    #[error("{key}: {message}")]
    Config {
        /// The key, e.g. `actions.retrain.url`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A silence that cannot be made (user).
    #[error("silence: {0}")]
    Silence(String),
    /// Reading or writing local state (external: disk).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The outbox store (external: disk).
    #[error("outbox {path}: {message}")]
    Store {
        /// The store's file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Encoding or decoding state (internal).
    #[error("{context}: {message}")]
    State {
        /// What was being encoded or decoded.
        context: String,
        /// The cause.
        message: String,
    },
    /// A template that failed to render for a notification (user).
    #[error("action {action}: template {template}: {message}")]
    Template {
        /// The action.
        action: String,
        /// Which template.
        template: String,
        /// The cause.
        message: String,
    },
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An I/O error with what was being done.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A state encoding error.
pub(crate) fn state<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::State {
        context: context.to_owned(),
        message: e.to_string(),
    }
}

impl From<driftwatch_ingest::settings::Invalid> for Error {
    fn from(e: driftwatch_ingest::settings::Invalid) -> Self {
        Error::Config {
            message: format!("{:?}: expected {}", e.value, e.expected),
            key: e.key,
        }
    }
}
