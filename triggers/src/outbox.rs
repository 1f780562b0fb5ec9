//! The durable outbox: every notification is written here (and the write
//! made durable) before any attempt to deliver it; attempts are recorded;
//! an entry leaves the pending table only once it is delivered, or given up
//! after its action's `max_attempts`. After a crash the pending entries are
//! taken up again — a delivery cut off between the receiver's answer and
//! the record of it is repeated with the same idempotency key.
//!
//! The store is one redb file per pipeline (`DATA_DIR/outbox/…`). Finished
//! entries stay a while so that a notification made again after a restart
//! (the pipeline resumes from its checkpoint and evaluates the same windows
//! again) is recognised by its key and not sent twice.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::group::Notification;

const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
const FINISHED: TableDefinition<&str, &[u8]> = TableDefinition::new("finished");
/// Keys of finished entries whose outcome the pipeline has not taken yet.
const UNREPORTED: TableDefinition<&str, ()> = TableDefinition::new("unreported");

/// How long opening waits for another holder of the file to close it.
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often finished entries past [`KEEP_FINISHED_MS`] are looked for.
const PRUNE_EVERY_MS: i64 = 3_600_000;

/// Finished entries are kept this long (clock time) for recognising repeats.
pub const KEEP_FINISHED_MS: i64 = 30 * 86_400_000;

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Not yet.
    Pending,
    /// The receiver took it.
    Delivered,
    /// Given up.
    Failed,
}

/// One notification in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The notification (its key is the entry's).
    pub notification: Notification,
    /// Where it stands.
    pub outcome: Outcome,
    /// Attempts made.
    pub attempts: u32,
    /// Clock time of the next attempt.
    pub next_attempt: i64,
    /// Clock time it was written.
    pub enqueued_at: i64,
    /// Clock time it finished.
    pub finished_at: Option<i64>,
    /// The last error, or what the receiver answered.
    pub detail: Option<String>,
    /// The job or run the receiver started, when the preset knows where to find it.
    pub job_id: Option<String>,
    /// The model version the receiver said that job delivers.
    #[serde(default)]
    pub model_version: Option<String>,
    /// Whether the pipeline has written the outcome to the `alerts` table.
    pub reported: bool,
}

/// The outbox of one pipeline.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    db: Database,
    /// Clock time of the last prune.
    pruned: std::sync::atomic::AtomicI64,
}

impl Outbox {
    /// Opens (or creates) the outbox in `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |e: &dyn std::fmt::Display| Error::Store {
            path: path.to_owned(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        // a partition's outbox moves with the partition: the instance that
        // held it may take a moment to let go of the file
        let deadline = std::time::Instant::now() + OPEN_WAIT;
        let db = loop {
            match Database::create(path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(err(&e)),
            }
        };
        let outbox = Outbox {
            path: path.to_owned(),
            db,
            pruned: std::sync::atomic::AtomicI64::new(i64::MIN),
        };
        let tx = outbox.db.begin_write().map_err(|e| outbox.err(e))?;
        tx.open_table(PENDING).map_err(|e| outbox.err(e))?;
        tx.open_table(FINISHED).map_err(|e| outbox.err(e))?;
        tx.open_table(UNREPORTED).map_err(|e| outbox.err(e))?;
        tx.commit().map_err(|e| outbox.err(e))?;
        Ok(outbox)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Store {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<Entry> {
        serde_json::from_slice(bytes).map_err(|e| self.err(format!("an entry: {e}")))
    }

    fn encode(&self, entry: &Entry) -> Result<Vec<u8>> {
        serde_json::to_vec(entry).map_err(|e| self.err(e))
    }

    /// Writes notifications that are not in the outbox yet (by key), durably;
    /// returns those written.
    pub fn enqueue(&self, notifications: &[Notification], now: i64) -> Result<Vec<Notification>> {
        if notifications.is_empty() {
            return Ok(Vec::new());
        }
        let mut added = Vec::new();
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut pending = tx.open_table(PENDING).map_err(|e| self.err(e))?;
            let finished = tx.open_table(FINISHED).map_err(|e| self.err(e))?;
            for n in notifications {
                let key = n.key.as_str();
                let known = pending.get(key).map_err(|e| self.err(e))?.is_some()
                    || finished.get(key).map_err(|e| self.err(e))?.is_some();
                if known {
                    continue;
                }
                let entry = Entry {
                    notification: n.clone(),
                    outcome: Outcome::Pending,
                    attempts: 0,
                    next_attempt: now,
                    enqueued_at: now,
                    finished_at: None,
                    detail: None,
                    job_id: None,
                    model_version: None,
                    reported: false,
                };
                pending
                    .insert(key, self.encode(&entry)?.as_slice())
                    .map_err(|e| self.err(e))?;
                added.push(n.clone());
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(added)
    }

    /// Pending entries due at `now`, soonest first, at most `limit`.
    pub fn due(&self, now: i64, limit: usize) -> Result<Vec<Entry>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(PENDING).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| self.err(e))? {
            let (_, v) = item.map_err(|e| self.err(e))?;
            let entry = self.decode(v.value())?;
            if entry.next_attempt <= now {
                out.push(entry);
            }
        }
        out.sort_by_key(|e| (e.next_attempt, e.enqueued_at));
        out.truncate(limit);
        Ok(out)
    }

    /// The earliest next attempt among pending entries.
    pub fn next_due(&self) -> Result<Option<i64>> {
        Ok(self.pending()?.iter().map(|e| e.next_attempt).min())
    }

    /// Every pending entry.
    pub fn pending(&self) -> Result<Vec<Entry>> {
        self.all(PENDING)
    }

    /// Every finished entry still kept.
    pub fn finished(&self) -> Result<Vec<Entry>> {
        self.all(FINISHED)
    }

    fn all(&self, def: TableDefinition<&str, &[u8]>) -> Result<Vec<Entry>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(def).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| self.err(e))? {
            let (_, v) = item.map_err(|e| self.err(e))?;
            out.push(self.decode(v.value())?);
        }
        Ok(out)
    }

    /// Pending entries.
    pub fn pending_len(&self) -> Result<u64> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(PENDING).map_err(|e| self.err(e))?;
        table.len().map_err(|e| self.err(e))
    }

    /// Records an attempt: a pending entry stays pending (with its next
    /// attempt), a finished one moves to the finished table. Durable.
    pub fn record(&self, entry: &Entry) -> Result<()> {
        let key = entry.notification.key.as_str();
        let bytes = self.encode(entry)?;
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut pending = tx.open_table(PENDING).map_err(|e| self.err(e))?;
            if entry.outcome == Outcome::Pending {
                pending
                    .insert(key, bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            } else {
                pending.remove(key).map_err(|e| self.err(e))?;
                let mut finished = tx.open_table(FINISHED).map_err(|e| self.err(e))?;
                finished
                    .insert(key, bytes.as_slice())
                    .map_err(|e| self.err(e))?;
                let mut unreported = tx.open_table(UNREPORTED).map_err(|e| self.err(e))?;
                unreported.insert(key, ()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Finished entries not yet written to the `alerts` table; they are
    /// marked written. Now and then, entries finished longer ago than
    /// [`KEEP_FINISHED_MS`] are dropped.
    pub fn take_unreported(&self, now: i64) -> Result<Vec<Entry>> {
        use std::sync::atomic::Ordering;
        let prune = self.pruned.load(Ordering::Relaxed) <= now - PRUNE_EVERY_MS;
        if !prune {
            // most calls find nothing: look before paying for a durable write
            let tx = self.db.begin_read().map_err(|e| self.err(e))?;
            let unreported = tx.open_table(UNREPORTED).map_err(|e| self.err(e))?;
            if unreported.is_empty().map_err(|e| self.err(e))? {
                return Ok(Vec::new());
            }
        }
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        {
            let mut finished = tx.open_table(FINISHED).map_err(|e| self.err(e))?;
            let mut unreported = tx.open_table(UNREPORTED).map_err(|e| self.err(e))?;
            let mut keys = Vec::new();
            for item in unreported.iter().map_err(|e| self.err(e))? {
                let (k, _) = item.map_err(|e| self.err(e))?;
                keys.push(k.value().to_owned());
            }
            for k in &keys {
                unreported.remove(k.as_str()).map_err(|e| self.err(e))?;
                let entry = match finished.get(k.as_str()).map_err(|e| self.err(e))? {
                    Some(v) => self.decode(v.value())?,
                    None => continue,
                };
                let mut entry = entry;
                entry.reported = true;
                finished
                    .insert(k.as_str(), self.encode(&entry)?.as_slice())
                    .map_err(|e| self.err(e))?;
                out.push(entry);
            }
            if prune {
                let mut old = Vec::new();
                for item in finished.iter().map_err(|e| self.err(e))? {
                    let (k, v) = item.map_err(|e| self.err(e))?;
                    let entry = self.decode(v.value())?;
                    if entry.finished_at.unwrap_or(now) + KEEP_FINISHED_MS < now {
                        old.push(k.value().to_owned());
                    }
                }
                for k in old {
                    finished.remove(k.as_str()).map_err(|e| self.err(e))?;
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        if prune {
            self.pruned.store(now, Ordering::Relaxed);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(key: &str) -> Notification {
        Notification {
            key: key.into(),
            action: "hook".into(),
            status: "firing".into(),
            group: Default::default(),
            alerts: Vec::new(),
            time: 0,
            repeat: false,
        }
    }

    #[test]
    fn entries_survive_reopening_and_a_key_is_taken_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.redb");
        {
            let o = Outbox::open(&path).expect("open");
            assert_eq!(o.enqueue(&[n("a"), n("b")], 10).expect("enqueue").len(), 2);
            assert!(o.enqueue(&[n("a")], 11).expect("enqueue").is_empty());
            let mut a = o.due(10, 10).expect("due").remove(0);
            a.outcome = Outcome::Delivered;
            a.finished_at = Some(12);
            o.record(&a).expect("record");
        }
        let o = Outbox::open(&path).expect("reopen");
        let due = o.due(100, 10).expect("due");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].notification.key, "b");
        // a delivered key made again (after a restart) is not taken
        assert!(o.enqueue(&[n("a")], 20).expect("enqueue").is_empty());
        let reported = o.take_unreported(20).expect("unreported");
        assert_eq!(reported.len(), 1);
        assert!(o.take_unreported(21).expect("unreported").is_empty());
        // long after, finished entries are dropped
        o.take_unreported(12 + KEEP_FINISHED_MS + 1).expect("prune");
        assert!(o.finished().expect("finished").is_empty());
    }

    #[test]
    fn an_entry_waits_for_its_next_attempt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(&dir.path().join("o.redb")).expect("open");
        o.enqueue(&[n("a")], 0).expect("enqueue");
        let mut a = o.due(0, 1).expect("due").remove(0);
        a.attempts = 1;
        a.next_attempt = 500;
        o.record(&a).expect("record");
        assert!(o.due(499, 1).expect("due").is_empty());
        assert_eq!(o.due(500, 1).expect("due").len(), 1);
        assert_eq!(o.next_due().expect("next"), Some(500));
        assert_eq!(o.pending_len().expect("len"), 1);
    }
}
