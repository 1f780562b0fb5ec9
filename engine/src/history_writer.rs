//! The history writer: a thread that writes history flushes and compactions
//! while the rule runner goes on evaluating.
//!
//! ```text
//! rule runner ──FlushJob / CompactJob──▶ history-writer thread
//!      ▲                                    │ Parquet under temporary names
//!      └──────────── Staged files ◀─────────┘
//!   publish: files renamed into place, live rows dropped, between queries
//! ```
//!
//! The runner publishes what the thread wrote between two evaluations, so a
//! query sees a row either live or in a file, never both and never neither;
//! a checkpoint waits for the thread and records only published flushes.

use std::sync::mpsc;

use driftwatch_sql::{CompactJob, FlushJob, Staged, StagedFlush};

use crate::error::{Error, Result, context};

/// Work for the thread.
#[derive(Debug)]
enum Job {
    Flush(FlushJob),
    Compact(CompactJob),
}

/// What the thread finished, in the order the jobs came.
#[derive(Debug)]
pub(crate) enum Done {
    Flush(StagedFlush),
    Compact(Staged),
}

/// The history writer thread and the jobs it has not returned yet.
#[derive(Debug)]
pub(crate) struct HistoryWriter {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Result<Done>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Bytes of live rows of the flush on the thread, if one is.
    flushing: Option<usize>,
    /// Whether a compaction is on the thread.
    compacting: bool,
}

impl HistoryWriter {
    /// Starts the thread, named `history-<writer>`.
    pub(crate) fn start(writer: &str) -> Result<Self> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (outbox, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("history-{writer}"))
            .spawn(move || {
                for job in inbox {
                    let result = match job {
                        Job::Flush(j) => j
                            .run()
                            .map(Done::Flush)
                            .map_err(context("writing the history")),
                        Job::Compact(j) => j
                            .run()
                            .map(Done::Compact)
                            .map_err(context("compacting the history")),
                    };
                    if outbox.send(result).is_err() {
                        // the runner is gone; what was written is dropped
                        // with its temporaries
                        break;
                    }
                }
            })
            .map_err(|e| Error::Stopped(format!("starting the history writer thread: {e}")))?;
        Ok(HistoryWriter {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            flushing: None,
            compacting: false,
        })
    }

    fn send(&self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .and_then(|j| j.send(job).ok())
            .ok_or_else(|| Error::Stopped("the history writer thread stopped".into()))
    }

    /// Hands a flush to the thread. One at a time: see [`flushing`](Self::flushing).
    pub(crate) fn flush(&mut self, job: FlushJob) -> Result<()> {
        debug_assert!(self.flushing.is_none(), "one flush at a time");
        let bytes = job.bytes();
        self.send(Job::Flush(job))?;
        self.flushing = Some(bytes);
        Ok(())
    }

    /// Hands a compaction to the thread. One at a time: see
    /// [`compacting`](Self::compacting).
    pub(crate) fn compact(&mut self, job: CompactJob) -> Result<()> {
        debug_assert!(!self.compacting, "one compaction at a time");
        self.send(Job::Compact(job))?;
        self.compacting = true;
        Ok(())
    }

    /// Bytes of live rows of the flush on the thread, if one is.
    pub(crate) fn flushing(&self) -> Option<usize> {
        self.flushing
    }

    /// Whether a compaction is on the thread.
    pub(crate) fn compacting(&self) -> bool {
        self.compacting
    }

    /// Whether the thread has work it has not returned.
    pub(crate) fn busy(&self) -> bool {
        self.flushing.is_some() || self.compacting
    }

    /// The next job the thread finished: waits for it when `wait`, `None`
    /// when it has none (or, not waiting, none finished yet).
    pub(crate) fn finished(&mut self, wait: bool) -> Result<Option<Done>> {
        if !self.busy() {
            return Ok(None);
        }
        let result = if wait {
            self.done.recv().map_err(|_| ())
        } else {
            match self.done.try_recv() {
                Ok(r) => Ok(r),
                Err(mpsc::TryRecvError::Empty) => return Ok(None),
                Err(mpsc::TryRecvError::Disconnected) => Err(()),
            }
        };
        let result =
            result.map_err(|()| Error::Stopped("the history writer thread stopped".into()))?;
        // jobs come back in the order they went, and there is at most one
        // of each kind: the one that came back is known by its kind
        match &result {
            Ok(Done::Flush(_)) => self.flushing = None,
            Ok(Done::Compact(_)) => self.compacting = false,
            // a failed job fails the runner; nothing more is waited for
            Err(_) => {
                self.flushing = None;
                self.compacting = false;
            }
        }
        result.map(Some)
    }
}

impl Drop for HistoryWriter {
    fn drop(&mut self) {
        // the thread ends once the channel closes, after its current job
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
