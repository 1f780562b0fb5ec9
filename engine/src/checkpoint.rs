//! Checkpoints: a partition's whole state (window state, counters, and the
//! source offsets it reflects) in one file, written atomically.
//!
//! A checkpoint is the unit of exactly-once: its state counts exactly the
//! records before its offsets. The service commits those offsets to Kafka
//! only after the file is durable, and on start skips records before them.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The checkpointed state of one partition number (the same partition of
/// every consumed topic: a model's predictions and labels meet there).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionCheckpoint<S> {
    /// Format of the file (the state's: see [`CheckpointDir::new`]).
    pub format: u32,
    /// Partition number.
    pub partition: i32,
    /// Per topic, the offset of the next record to read.
    pub offsets: BTreeMap<String, i64>,
    /// The pipeline's state after every record before `offsets`.
    pub state: S,
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or
/// the new one ([`driftwatch_ingest::durable`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    driftwatch_ingest::durable::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// The checkpoint files of one consumer group, holding states of type `S`.
#[derive(Debug, Clone)]
pub struct CheckpointDir<S> {
    dir: PathBuf,
    format: u32,
    state: PhantomData<fn() -> S>,
}

impl<S: Serialize + DeserializeOwned> CheckpointDir<S> {
    /// The checkpoints in `dir` ([`DataDir::checkpoints`](crate::DataDir::checkpoints)
    /// of a group), of `format`: a number that changes whenever the
    /// encoding of `S` does, so that a checkpoint of another build is named
    /// as such instead of being taken for a damaged file.
    pub fn new(dir: PathBuf, format: u32) -> Self {
        CheckpointDir {
            dir,
            format,
            state: PhantomData,
        }
    }

    fn path(&self, partition: i32) -> PathBuf {
        self.dir.join(format!("partition-{partition}.ckpt"))
    }

    /// The directory of a partition's predictions awaiting labels that
    /// spilled to disk; the partition's checkpoints name the files they need.
    pub fn pending_store(&self, partition: i32) -> PathBuf {
        self.dir.join(format!("partition-{partition}.pending"))
    }

    /// Makes a partition's state durable.
    pub fn save(&self, partition: i32, offsets: &BTreeMap<String, i64>, state: S) -> Result<()> {
        let checkpoint = PartitionCheckpoint {
            format: self.format,
            partition,
            offsets: offsets.clone(),
            state,
        };
        let bytes = postcard::to_stdvec(&checkpoint).map_err(|e| Error::Encode {
            what: "a checkpoint",
            message: e.to_string(),
        })?;
        write_atomically(&self.path(partition), &bytes)
    }

    /// A partition's last checkpoint, if it has one.
    pub fn load(&self, partition: i32) -> Result<Option<PartitionCheckpoint<S>>> {
        let path = self.path(partition);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        let damaged = |message: String| Error::Damaged {
            path: path.clone(),
            message,
        };
        let unreadable = |e: postcard::Error| damaged(format!("not a driftwatch checkpoint: {e}"));
        // the format comes first: a checkpoint of another format is named
        // as such, not taken for a damaged file
        let (format, _): (u32, _) = postcard::take_from_bytes(&bytes).map_err(unreadable)?;
        if format != self.format {
            return Err(damaged(format!(
                "checkpoint format {format}, this build reads format {}",
                self.format
            )));
        }
        let checkpoint: PartitionCheckpoint<S> =
            postcard::from_bytes(&bytes).map_err(unreadable)?;
        if checkpoint.partition != partition {
            return Err(damaged(format!(
                "checkpoint of partition {}, expected partition {partition}",
                checkpoint.partition
            )));
        }
        Ok(Some(checkpoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type State = (u64, String);

    fn dir(root: &Path) -> CheckpointDir<State> {
        CheckpointDir::new(root.join("checkpoints").join("g"), 7)
    }

    #[test]
    fn a_saved_state_comes_back_with_its_offsets() -> Result<()> {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let d = dir(tmp.path());
        assert!(d.load(0)?.is_none(), "no checkpoint yet");
        let offsets = BTreeMap::from([("predictions".to_owned(), 42), ("labels".to_owned(), 7)]);
        d.save(0, &offsets, (3, "three".into()))?;
        d.save(0, &offsets, (4, "four".into()))?;
        let c = d.load(0)?.expect("a checkpoint");
        assert_eq!((c.format, c.partition), (7, 0));
        assert_eq!(c.offsets, offsets);
        assert_eq!(c.state, (4, "four".to_owned()), "the last one saved");
        assert!(d.load(1)?.is_none(), "another partition has none");
        Ok(())
    }

    #[test]
    fn a_checkpoint_of_another_format_is_named_as_such() -> Result<()> {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let old: CheckpointDir<State> = CheckpointDir::new(tmp.path().to_owned(), 6);
        old.save(2, &BTreeMap::new(), (1, "x".into()))?;
        let now: CheckpointDir<State> = CheckpointDir::new(tmp.path().to_owned(), 7);
        let err = now.load(2).expect_err("format 6 is refused").to_string();
        assert!(
            err.contains("partition-2.ckpt")
                && err.contains("checkpoint format 6, this build reads format 7"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn a_damaged_or_misplaced_checkpoint_is_refused_naming_the_file() -> Result<()> {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let d = dir(tmp.path());
        d.save(0, &BTreeMap::new(), (1, "x".into()))?;
        let path = tmp.path().join("checkpoints/g/partition-0.ckpt");
        // partition 0's file copied to partition 1's name
        std::fs::copy(&path, path.with_file_name("partition-1.ckpt")).expect("copy");
        let err = d.load(1).expect_err("another partition's").to_string();
        assert!(
            err.contains("checkpoint of partition 0, expected partition 1"),
            "{err}"
        );
        // cut short
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("write");
        let err = d.load(0).expect_err("damaged").to_string();
        assert!(
            err.contains("partition-0.ckpt: not a driftwatch checkpoint"),
            "{err}"
        );
        Ok(())
    }
}
