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
    /// A query, a table or the history (what was being done, when said).
    #[error("{}{source}", prefix(what))]
    Sql {
        /// What was being done.
        what: Option<&'static str>,
        /// What the sql crate said.
        source: driftwatch_sql::Error,
    },
    /// The alert lifecycle, the outbox, silences or the audit log.
    #[error("{}{source}", prefix(what))]
    Triggers {
        /// What was being done.
        what: Option<&'static str>,
        /// What the triggers crate said.
        source: driftwatch_triggers::Error,
    },
    /// The dead-letter sink could not take a refused event: the pipeline
    /// stops rather than lose it (external: disk or broker).
    #[error("writing the dead-letter sink; stopping rather than losing the event: {0}")]
    DeadLetter(#[source] driftwatch_ingest::Error),
    /// An output file (window results, tables) could not be written.
    #[error("writing {}: {message}", path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The settings do not fit what is found (the user's): e.g. a
    /// checkpoint written with another configuration.
    #[error("{0}")]
    Config(String),
    /// The Kafka broker or client (external).
    #[error("{what}: {message}")]
    Kafka {
        /// What was being done.
        what: String,
        /// What the client said.
        message: String,
    },
    /// A Kafka partition could not be taken or given back.
    #[error("{what} partition {partition}: {source}")]
    Partition {
        /// The partition number.
        partition: i32,
        /// What was being done.
        what: &'static str,
        /// Why.
        source: Box<Error>,
    },
    /// A stage of the engine stopped (internal: a bug, or it failed earlier).
    #[error("{0}")]
    Stopped(String),
    /// State that could not be encoded (internal: a bug).
    #[error("encoding {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// What the encoder said.
        message: String,
    },
}

fn prefix(what: &Option<&'static str>) -> String {
    what.map(|w| format!("{w}: ")).unwrap_or_default()
}

impl From<driftwatch_sql::Error> for Error {
    fn from(source: driftwatch_sql::Error) -> Self {
        Error::Sql { what: None, source }
    }
}

impl From<driftwatch_triggers::Error> for Error {
    fn from(source: driftwatch_triggers::Error) -> Self {
        Error::Triggers { what: None, source }
    }
}

/// Turns an error of another crate into the engine's, saying what was
/// being done: `.map_err(context("flushing the history"))`.
pub(crate) fn context<E: Into<Error>>(what: &'static str) -> impl FnOnce(E) -> Error {
    move |e| match e.into() {
        Error::Sql { source, .. } => Error::Sql {
            what: Some(what),
            source,
        },
        Error::Triggers { source, .. } => Error::Triggers {
            what: Some(what),
            source,
        },
        other => other,
    }
}

/// The engine's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Waits for a worker thread (the rules thread, a background sink) to end
/// and returns what it returned; a panic there goes on here. `None`: it
/// was joined before.
pub(crate) fn join_worker(thread: Option<std::thread::JoinHandle<Result<()>>>) -> Result<()> {
    match thread.map(std::thread::JoinHandle::join) {
        Some(Ok(result)) => result,
        None => Ok(()),
        Some(Err(panic)) => std::panic::resume_unwind(panic),
    }
}
