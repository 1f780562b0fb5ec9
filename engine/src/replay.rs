//! Bounded runs — a replay of files, the demo: one pipeline with its rules
//! and deliveries, started and finished the same way.

use std::path::{Path, PathBuf};

use driftwatch_ingest::DeadLetterFile;
use driftwatch_sql::AlertInstance;
use driftwatch_triggers::Dispatcher;
use tracing::info;

use crate::alerting::{self, Delivered, RuleSource};
use crate::pipeline::{Pipeline, RunSummary};
use crate::sinks::{Background, TableWriters, WindowSink};
use crate::{Config, Error, Flushing, Result};

/// How a bounded run is set up.
#[allow(missing_debug_implementations)] // sinks are trait objects
pub struct ReplayOptions {
    /// Every output table written as JSON Lines and Parquet to this
    /// directory, with `run-summary.json`.
    pub out: Option<PathBuf>,
    /// Where refused records go.
    pub dead_letter: PathBuf,
    /// More window sinks (the binary's printing one).
    pub sinks: Vec<Box<dyn WindowSink + Send>>,
    /// The alert rules (none when `None`).
    pub rules: Option<RuleSource>,
    /// The name the history is written under (`replay`, `demo`).
    pub writer: String,
    /// What becomes of the history an earlier run of the same name left.
    pub history: HistoryMode,
    /// Called with each alert instance the rules find.
    pub on_alert: Option<fn(&AlertInstance)>,
}

/// What a bounded run does with the history an earlier run under the same
/// name left in the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryMode {
    /// Refuse to start while there is one ([`Error::Input`] saying so):
    /// neither losing it nor counting the same file twice unasked.
    Refuse,
    /// Add this run's rows to it (daily files building one history).
    Append,
    /// Remove it first (the demo, a replay done again).
    Replace,
}

/// A pipeline fed to its end by the caller, then [`finish`](Self::finish)ed.
#[allow(missing_debug_implementations)] // the pipeline holds trait objects
pub struct Replay {
    pipeline: Pipeline,
    dispatcher: Option<Dispatcher>,
    pending: PathBuf,
    out: Option<PathBuf>,
}

/// What a bounded run did.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Its counts.
    pub summary: RunSummary,
    /// Its notifications, when actions are configured and rules fired.
    pub delivered: Option<Delivered>,
}

impl Replay {
    /// A pipeline over `config` set up as `options` say; the history an
    /// earlier run of the same name left is kept, added to or replaced as
    /// `options.history` says.
    pub fn start(config: &Config, options: ReplayOptions) -> Result<Self> {
        let dlq = DeadLetterFile::open(&options.dead_letter)?;
        let pending = config.data_dir.replay_pending();
        let mut pipeline = Pipeline::new(
            config,
            Box::new(dlq),
            options.dead_letter.display().to_string(),
            Vec::new(),
            Some(&pending),
            None,
        )?;
        if let Some(dir) = &options.out {
            // JSON Lines and Parquet encoded off the event thread
            let writers = TableWriters::create(dir, &pipeline.tables())?;
            pipeline.add_sink(Box::new(Background::start(
                "driftwatch-out",
                Box::new(writers),
            )?));
        }
        for sink in options.sinks {
            pipeline.add_sink(sink);
        }
        let mut runner = alerting::runner(config, options.rules.as_ref(), &options.writer, None)?;
        let earlier = runner.history_files();
        match options.history {
            HistoryMode::Replace => runner.clear_history()?,
            HistoryMode::Refuse if earlier > 0 => {
                return Err(Error::Input(format!(
                    "{} holds {earlier} files of an earlier {} run: add this run's rows to \
                     them (--append) or start the history over (--replace)",
                    config.data_dir.history().display(),
                    options.writer
                )));
            }
            HistoryMode::Refuse | HistoryMode::Append => {
                if earlier > 0 {
                    info!(files = earlier, "adding to the history of earlier runs");
                }
            }
        }
        runner.on_alert = options.on_alert;
        runner.flushing = Flushing::Bytes(crate::rules::FLUSH_BYTES);
        if runner.rule_count() > 0 {
            info!(rules = runner.rule_count(), "alert rules loaded");
        }
        let dispatcher = match runner.triggers() {
            // a replay has no runtime: the worker's thread brings one
            Some(_) => alerting::dispatcher(config, None)?,
            None => None,
        };
        if let Some(d) = &dispatcher {
            alerting::attach(d, &mut runner);
        }
        pipeline.set_rules(runner)?;
        Ok(Replay {
            pipeline,
            dispatcher,
            pending,
            out: options.out,
        })
    }

    /// The pipeline, to feed.
    pub fn pipeline(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    /// Has the rules evaluated for every window closed so far, waits up to
    /// `limit` for the notifications they made to be delivered, and records
    /// how the deliveries went (a retraining request delivered is then what
    /// a new model version is traced back to). Returns the notifications
    /// still pending. A bounded run that reacts to its own notifications
    /// (the demo's simulated model service) calls it between events.
    pub fn catch_up(&mut self, limit: std::time::Duration) -> Result<u64> {
        let Some(rules) = self.pipeline.rules_mut() else {
            return Ok(0);
        };
        rules.settle_and_wait()?;
        let Some(d) = &self.dispatcher else {
            return Ok(0);
        };
        let pending = d
            .drain(limit)
            .map_err(crate::error::context("delivering notifications"))?;
        if let Some(rules) = self.pipeline.rules_mut() {
            rules.record_deliveries()?;
        }
        Ok(pending)
    }

    /// Closes every window, delivers the last notifications (up to
    /// [`alerting::DRAIN_LIMIT`]), writes the history and the summary, and
    /// removes the run's spilled predictions.
    pub fn finish(self) -> Result<Finished> {
        let Replay {
            mut pipeline,
            dispatcher,
            pending,
            out,
        } = self;
        let mut delivered = None;
        if let Some(d) = dispatcher {
            // the last windows' notifications, delivered before the history
            // is written so that it holds how their deliveries ended
            pipeline.close_all()?;
            delivered = Some(alerting::finish_delivery(&d, alerting::DRAIN_LIMIT)?);
            if let Some(r) = pipeline.rules_mut() {
                r.record_deliveries()?;
            }
        }
        let summary = pipeline.finish()?;
        remove_pending(&pending)?;
        if let Some(dir) = &out {
            summary.write_json(&dir.join("run-summary.json"))?;
        }
        Ok(Finished { summary, delivered })
    }
}

fn remove_pending(pending: &Path) -> Result<()> {
    if pending.exists() {
        std::fs::remove_dir_all(pending).map_err(|source| Error::Io {
            path: pending.to_owned(),
            source,
        })?;
    }
    if let Some(dir) = pending.parent() {
        // only when empty: another run may be using it
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::{config, stream};

    /// Rows of a JSON Lines file.
    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .lines()
            .count()
    }

    /// Rows of a Parquet file.
    fn parquet_rows(path: &Path) -> usize {
        let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("a Parquet file")
            .build()
            .expect("a reader")
            .map(|b| b.expect("a batch").num_rows())
            .sum()
    }

    #[test]
    fn a_replay_writes_every_windows_rows_to_its_out_files_and_cleans_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let mut replay = Replay::start(
            &config(dir.path()),
            ReplayOptions {
                out: Some(out.clone()),
                dead_letter: dir.path().join("dead-letter.jsonl"),
                sinks: Vec::new(),
                rules: None,
                writer: "replay".into(),
                history: HistoryMode::Refuse,
                on_alert: None,
            },
        )
        .expect("started");
        for (seq, bytes) in stream(5_000).iter().enumerate() {
            replay
                .pipeline()
                .handle_bytes(seq as u64, bytes)
                .expect("handled");
        }
        replay
            .pipeline()
            .handle_bytes(9_999, b"{not json")
            .expect("refused, not an error");
        let Finished { summary, delivered } = replay.finish().expect("finished");
        assert!(delivered.is_none(), "no rules, no notifications");
        assert_eq!((summary.read, summary.rejected), (5_001, 1));
        let windows = summary.windows_closed as usize;
        assert!(windows > 1, "{summary:?}");
        // written off the event thread, complete once the replay finished:
        // one window_summary row per window, in both formats
        assert_eq!(lines(&out.join("window_summary.jsonl")), windows);
        assert_eq!(parquet_rows(&out.join("window_summary.parquet")), windows);
        let revisions = summary
            .performance
            .as_ref()
            .map_or(0, |p| p.revisions as usize);
        assert!(
            revisions >= windows,
            "{revisions} revisions of {windows} windows"
        );
        let metric_rows = lines(&out.join("model_metrics.jsonl"));
        assert!(metric_rows >= revisions, "{metric_rows} rows");
        assert_eq!(
            parquet_rows(&out.join("model_metrics.parquet")),
            metric_rows
        );
        let written: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join("run-summary.json")).expect("run summary"),
        )
        .expect("json");
        assert_eq!(written["read"], 5_001);
        assert_eq!(lines(&dir.path().join("dead-letter.jsonl")), 1);
        // the predictions that waited for labels on disk are gone
        assert!(!config(dir.path()).data_dir.replay_pending().exists());
    }

    /// Regression (issue 41, item 7): each replay into the same data
    /// directory deleted the previous one's history, so daily files could
    /// not build up a history.
    #[test]
    fn a_replay_into_a_history_refuses_adds_or_replaces_as_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config(dir.path());
        config.sql.history = true;
        let run = |history: HistoryMode| -> Result<usize> {
            let mut replay = Replay::start(
                &config,
                ReplayOptions {
                    out: None,
                    dead_letter: dir.path().join("dead-letter.jsonl"),
                    sinks: Vec::new(),
                    rules: None,
                    writer: "replay".into(),
                    history,
                    on_alert: None,
                },
            )?;
            for (seq, bytes) in stream(3_000).iter().enumerate() {
                replay.pipeline().handle_bytes(seq as u64, bytes)?;
            }
            replay.finish()?;
            let mut files = Vec::new();
            let mut stack = vec![dir.path().join("history")];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).expect("dir").flatten() {
                    if e.path().is_dir() {
                        stack.push(e.path());
                    } else {
                        files.push(e.path());
                    }
                }
            }
            Ok(files.len())
        };
        let first = run(HistoryMode::Refuse).expect("an empty history");
        assert!(first > 0);
        let err = run(HistoryMode::Refuse).expect_err("refused");
        assert!(
            err.to_string().contains("--append") && err.to_string().contains("--replace"),
            "{err}"
        );
        let appended = run(HistoryMode::Append).expect("appended");
        assert!(appended > first, "{appended} files after {first}");
        assert_eq!(run(HistoryMode::Replace).expect("replaced"), first);
    }
}
