//! The audit log: one JSON line per thing the triggers did — a transition,
//! a notification written to the outbox, an alert left out by a silence, a
//! failed attempt, a delivery (with the job or run it started), a
//! notification given up — in `DATA_DIR/audit.jsonl`. It never holds a
//! secret: no headers, no URLs, no credentials.
//!
//! Every line is one `write` to a file opened for appending, so a crash of
//! the process never loses or tears a line it wrote. What a crash of the
//! machine may lose is set by [`AuditSync`]: `line` (the default) syncs each
//! line to disk before the write returns; `none` leaves it to the operating
//! system (seconds of lines at risk, no disk wait).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Result, io};
use crate::key::{Clock, rfc3339};

/// When the audit log's lines reach the disk.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuditSync {
    /// Each line before its write returns (`fdatasync`).
    #[default]
    Line,
    /// When the operating system writes it back.
    None,
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `"line"` or `"none"`.
    pub sync: AuditSync,
}

/// An append-only audit log.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    sync: AuditSync,
}

impl Audit {
    /// Appends to `path` (created if missing), syncing as `sync` says.
    pub fn open(path: &Path, sync: AuditSync) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(format!("opening {}", path.display())))?;
        Ok(Audit {
            path: path.to_owned(),
            file: Mutex::new(file),
            sync,
        })
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event (`fields` must be a JSON object) at clock time `now`.
    pub fn write(&self, clock: &Clock, event: &str, fields: Value) -> Result<()> {
        let mut line = Map::new();
        line.insert("time".into(), Value::String(rfc3339(clock())));
        line.insert("event".into(), Value::String(event.into()));
        if let Value::Object(f) = fields {
            line.extend(f);
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // one write per line: lines of several writers do not interleave
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(text.as_bytes())
            .and_then(|()| match self.sync {
                AuditSync::Line => file.sync_data(),
                AuditSync::None => Ok(()),
            })
            .map_err(io(format!("writing {}", self.path.display())))
    }
}
