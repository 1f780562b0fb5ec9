//! Checkpoints: a partition's whole state (window state, counters, and the
//! source offsets it reflects) in one file, written atomically.
//!
//! A checkpoint is the unit of exactly-once: its state counts exactly the
//! records before its offsets. The service commits those offsets to Kafka
//! only after the file is durable, and on start skips records before them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::pipeline::PipelineState;

/// Format of [`PartitionCheckpoint`] files (4: the run summary counts
/// refusals not written to the dead-letter sink).
const FORMAT: u32 = 4;

/// The checkpointed state of one partition number (the same partition of
/// every consumed topic: a model's predictions and labels meet there).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    /// [`FORMAT`].
    pub format: u32,
    /// Partition number.
    pub partition: i32,
    /// Per topic, the offset of the next record to read.
    pub offsets: BTreeMap<String, i64>,
    /// The pipeline's state after every record before `offsets`.
    pub state: PipelineState,
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or
/// the new one ([`driftwatch_ingest::durable`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    driftwatch_ingest::durable::write(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// The checkpoint files of one consumer group.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    dir: PathBuf,
}

impl CheckpointDir {
    /// The checkpoints in `dir` (`DataDir::checkpoints` of a group).
    pub fn new(dir: PathBuf) -> Self {
        CheckpointDir { dir }
    }

    fn path(&self, partition: i32) -> PathBuf {
        self.dir.join(format!("partition-{partition}.ckpt"))
    }

    /// The on-disk store of a partition's predictions awaiting labels; its
    /// savepoints are part of the partition's checkpoints.
    pub fn pending_store(&self, partition: i32) -> PathBuf {
        self.dir.join(format!("partition-{partition}.pending.redb"))
    }

    /// Makes a partition's state durable.
    pub fn save(
        &self,
        partition: i32,
        offsets: &BTreeMap<String, i64>,
        state: PipelineState,
    ) -> Result<()> {
        let checkpoint = PartitionCheckpoint {
            format: FORMAT,
            partition,
            offsets: offsets.clone(),
            state,
        };
        let bytes = postcard::to_stdvec(&checkpoint).context("encoding a checkpoint")?;
        write_atomically(&self.path(partition), &bytes)
    }

    /// A partition's last checkpoint, if it has one.
    pub fn load(&self, partition: i32) -> Result<Option<PartitionCheckpoint>> {
        let path = self.path(partition);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        // the format comes first: a checkpoint of another format is named
        // as such, not taken for a damaged file
        let (format, _): (u32, _) = postcard::take_from_bytes(&bytes)
            .with_context(|| format!("{}: not a driftwatch checkpoint", path.display()))?;
        if format != FORMAT {
            bail!(
                "{}: checkpoint format {format}, this build reads format {FORMAT}",
                path.display()
            );
        }
        let checkpoint: PartitionCheckpoint = postcard::from_bytes(&bytes)
            .with_context(|| format!("{}: not a driftwatch checkpoint", path.display()))?;
        if checkpoint.format != FORMAT || checkpoint.partition != partition {
            bail!(
                "{}: checkpoint format {} of partition {}, expected format {FORMAT} of partition {partition}",
                path.display(),
                checkpoint.format,
                checkpoint.partition
            );
        }
        Ok(Some(checkpoint))
    }
}
