//! The rule runner on a thread of its own: the event thread hands it closed
//! windows, metric revisions and the `events` table's rows, in order,
//! through a bounded channel, and goes on with the next event while the
//! rows go into the SQL tables, the history is written and the rules are
//! evaluated.
//!
//! ```text
//! event thread ── Events, Window, Performance, Settle ──► rules thread
//!      │              (bounded: the event thread waits when it is full)
//!      └── Snapshot, Flush, Restore ─► waits for the answer (checkpoints)
//! ```
//!
//! The runner sees the messages in the order the event thread made the
//! calls, so every table holds at each evaluation exactly what it held when
//! the runner was called in place: the same alerts, the same history. A
//! snapshot answers once everything sent before it is done, so a checkpoint
//! covers exactly what was written.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

use arrow::array::RecordBatch;
use driftwatch_detectors::{About, Emitted};
use driftwatch_ingest::event::PredictionEvent;
use driftwatch_sql::RuleStats;

use crate::error::{Error, Result};
use crate::rules::{EventBatcher, IDLE_TICK, RuleRunner, RulesState};

/// Messages waiting for the rules thread at most (the event thread waits
/// beyond): a message holds at most a window's rows or 8,192 events. Rules
/// run in bursts (every rule of every model at a window close); 16 lets the
/// event thread go on through one (a replay with the bundled rules took 16 %
/// less wall time with 16 than with 4, for about 10 MiB more at its peak).
const QUEUE: usize = 16;

enum Message {
    /// Rows of the `events` table and the latest event time among them.
    Events(Vec<RecordBatch>, i64),
    /// A closed window's rows, or the label join's.
    Emit(Emitted),
    /// Evaluate the windows that changed; answer when done, if asked.
    Settle(Option<SyncSender<()>>),
    Snapshot(SyncSender<Result<(RulesState, RuleStats)>>),
    CheckpointSaved,
    Restore(Box<RulesState>, SyncSender<Result<()>>),
    Flush(SyncSender<Result<RuleStats>>),
    RecordDeliveries(SyncSender<Result<()>>),
}

/// A [`RuleRunner`] running on a thread of its own (see the module's
/// documentation). Dropping it lets the thread finish what it was sent.
#[derive(Debug)]
pub struct RuleWorker {
    sender: Option<SyncSender<Message>>,
    thread: Option<JoinHandle<Result<()>>>,
    /// Prediction events not sent yet, as rows (when the runner keeps them).
    events: Option<EventBatcher>,
    /// A window changed since the last settle.
    dirty: bool,
    last_settle: Instant,
    /// Wait for each evaluation (alerts are printed as they are found, in
    /// order with what the event thread prints).
    in_step: bool,
    stats: RuleStats,
    rule_count: usize,
    outbox: Option<PathBuf>,
    live: Arc<LiveRuleStats>,
}

impl RuleWorker {
    /// Starts `runner` on a thread of its own.
    pub fn start(runner: RuleRunner) -> Result<Self> {
        let (sender, inbox) = sync_channel(QUEUE);
        let events = runner.keeps_events().then(EventBatcher::default);
        let in_step = runner.on_alert.is_some();
        let stats = runner.stats().clone();
        let rule_count = runner.rule_count();
        let outbox = runner.triggers().map(|t| t.outbox().path().to_owned());
        let live = Arc::new(LiveRuleStats::default());
        let on_thread = Arc::clone(&live);
        let thread = std::thread::Builder::new()
            .name("driftwatch-rules".into())
            .spawn(move || work(runner, inbox, &on_thread))
            .map_err(|e| Error::Stopped(format!("starting the rules thread: {e}")))?;
        Ok(RuleWorker {
            sender: Some(sender),
            thread: Some(thread),
            events,
            dirty: false,
            last_settle: Instant::now(),
            in_step,
            stats,
            rule_count,
            outbox,
            live,
        })
    }

    /// What the rules thread has done so far, as it runs.
    pub fn live(&self) -> &LiveRuleStats {
        &self.live
    }

    /// Rules loaded.
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// The outbox the runner's notifications go to (when rules run).
    pub fn outbox(&self) -> Option<&std::path::Path> {
        self.outbox.as_deref()
    }

    /// Evaluation counters as of the last [`snapshot`](Self::snapshot) or
    /// [`flush`](Self::flush).
    pub fn stats(&self) -> &RuleStats {
        &self.stats
    }

    /// The thread stopped: its error.
    fn stopped(&mut self) -> Error {
        self.sender = None;
        match crate::error::join_worker(self.thread.take()) {
            Err(e) => e,
            Ok(()) => Error::Stopped("the rules thread has stopped".into()),
        }
    }

    /// Sends the events gathered so far.
    fn send_events(&mut self) -> Result<()> {
        match self
            .events
            .as_mut()
            .map(EventBatcher::take)
            .transpose()?
            .flatten()
        {
            Some((batch, latest)) => self.send(Message::Events(batch, latest)),
            None => Ok(()),
        }
    }

    fn send(&mut self, message: Message) -> Result<()> {
        let sent = match &self.sender {
            Some(s) => s.send(message).is_ok(),
            None => false,
        };
        if sent { Ok(()) } else { Err(self.stopped()) }
    }

    /// Sends `message` made with a reply channel and waits for the answer.
    fn ask<T>(&mut self, message: impl FnOnce(SyncSender<T>) -> Message) -> Result<T> {
        let (reply, answer) = sync_channel(1);
        self.send(message(reply))?;
        answer.recv().map_err(|_| self.stopped())
    }

    /// A prediction event accepted into its window: a row of the `events`
    /// table, built here (the event is dropped where it was made).
    pub fn prediction(&mut self, event: &PredictionEvent) -> Result<()> {
        if let Some(events) = &mut self.events
            && let Some((batch, latest)) = events.push(event)?
        {
            self.send(Message::Events(batch, latest))?;
        }
        Ok(())
    }

    /// A closed window's rows, or the label join's (metric revisions,
    /// change points, label counts).
    pub fn emit(&mut self, rows: Emitted) -> Result<()> {
        self.dirty |= match &rows.about {
            About::Closed { .. } => true,
            About::Revised(revisions) => !revisions.is_empty(),
        };
        self.send(Message::Emit(rows))
    }

    /// Has the rules evaluated for every window that changed since the
    /// last call (and, at most once a second otherwise, due notifications
    /// written).
    pub fn settle(&mut self) -> Result<()> {
        if !self.dirty && self.last_settle.elapsed() < IDLE_TICK {
            return Ok(());
        }
        self.before_settle()?;
        if self.in_step {
            self.ask(|done| Message::Settle(Some(done)))
        } else {
            self.send(Message::Settle(None))
        }
    }

    /// Has the rules evaluated for every window that changed and waits
    /// until everything sent is done (the end of a bounded run: the outbox
    /// then holds every notification).
    pub fn settle_and_wait(&mut self) -> Result<()> {
        self.before_settle()?;
        self.ask(|done| Message::Settle(Some(done)))
    }

    fn before_settle(&mut self) -> Result<()> {
        if self.dirty {
            // the rules of a window see its events
            self.send_events()?;
        }
        self.dirty = false;
        self.last_settle = Instant::now();
        Ok(())
    }

    /// Once everything sent is done: the history flushed and the state to
    /// checkpoint with it.
    pub fn snapshot(&mut self) -> Result<RulesState> {
        self.send_events()?;
        let (state, stats) = self.ask(Message::Snapshot)??;
        self.stats = stats;
        Ok(state)
    }

    /// The checkpoint of the last [`snapshot`](Self::snapshot) is saved.
    pub fn checkpoint_saved(&mut self) -> Result<()> {
        self.send(Message::CheckpointSaved)
    }

    /// Continues from a snapshot.
    pub fn restore(&mut self, state: &RulesState) -> Result<()> {
        self.ask(|r| Message::Restore(Box::new(state.clone()), r))?
    }

    /// Once everything sent is done, writes the live rows to the history.
    pub fn flush(&mut self) -> Result<()> {
        self.send_events()?;
        self.stats = self.ask(Message::Flush)??;
        Ok(())
    }

    /// Once everything sent is done, writes how ended deliveries went to
    /// the `alerts` table.
    pub fn record_deliveries(&mut self) -> Result<()> {
        self.ask(Message::RecordDeliveries)?
    }
}

impl Drop for RuleWorker {
    fn drop(&mut self) {
        // what was sent is done, as it would have been in place (events
        // not sent yet were not in the table either)
        self.sender = None;
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("rules thread: {e}"),
                Err(_) => tracing::error!("the rules thread panicked"),
            }
        }
    }
}

/// What the rules thread has done, readable while it runs (the service's
/// metrics): evaluations, failures and the time spent evaluating.
#[derive(Debug, Default)]
pub struct LiveRuleStats {
    evaluations: AtomicU64,
    errors: AtomicU64,
    evaluating_nanos: AtomicU64,
}

impl LiveRuleStats {
    /// Windows evaluated (each against every rule).
    pub fn evaluations(&self) -> u64 {
        self.evaluations.load(Ordering::Relaxed)
    }

    /// Rule evaluations that failed.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Seconds spent evaluating.
    pub fn seconds(&self) -> f64 {
        self.evaluating_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    fn update(&self, stats: &RuleStats, took: std::time::Duration) {
        self.evaluations.store(stats.evaluations, Ordering::Relaxed);
        self.errors
            .store(stats.errors.values().sum(), Ordering::Relaxed);
        self.evaluating_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }
}

fn work(mut runner: RuleRunner, inbox: Receiver<Message>, live: &LiveRuleStats) -> Result<()> {
    while let Ok(message) = inbox.recv() {
        match message {
            Message::Events(batch, latest) => runner.events(&batch, latest)?,
            Message::Emit(rows) => runner.emit(&rows)?,
            Message::Settle(done) => {
                let started = Instant::now();
                runner.settle()?;
                live.update(runner.stats(), started.elapsed());
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Message::Snapshot(reply) => {
                let state = runner.snapshot();
                let _ = reply.send(state.map(|s| (s, runner.stats().clone())));
            }
            Message::CheckpointSaved => runner.checkpoint_saved()?,
            Message::Restore(state, reply) => {
                let _ = reply.send(runner.restore(&state));
            }
            Message::Flush(reply) => {
                let started = Instant::now();
                let done = runner.flush();
                live.update(runner.stats(), started.elapsed());
                let _ = reply.send(done.map(|()| runner.stats().clone()));
            }
            Message::RecordDeliveries(reply) => {
                let _ = reply.send(runner.record_deliveries());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use driftwatch_detectors::WindowKey;
    use driftwatch_sql::rules::{RuleFiles, check_all};
    use driftwatch_sql::{Engine, Limits, Tables, standard_tables};
    use driftwatch_triggers::{Actions, AuditSync};

    use super::*;
    use crate::DataDir;
    use crate::rules::RunnerConfig;

    const HOUR: i64 = 3_600_000;
    const START: i64 = 1_795_651_200_000; // 2026-11-26T00:00:00Z

    const RULES: &str = r#"
[[rule]]
name = "psi_high"
sql = """
SELECT model_id, feature, psi AS value FROM feature_drift
WHERE model_id = $model_id AND window_end = $window_end AND psi > 0.5
"""
for = 2
"#;

    fn runner(dir: &std::path::Path) -> RuleRunner {
        let tables = Tables::new(standard_tables().expect("tables"), None).expect("tables");
        let engine = Engine::new(tables, Limits::default()).expect("engine");
        let mut files = RuleFiles::default();
        files.add("rules/test.toml".into(), RULES);
        let (rules, errors) = check_all(&engine, &files, &BTreeSet::new());
        assert!(errors.is_empty(), "{errors:?}");
        let config = RunnerConfig {
            data_dir: DataDir::new(dir),
            history: true,
            events_retention_ms: None,
            actions: Actions::default(),
            audit_sync: AuditSync::None,
            public_url: None,
        };
        RuleRunner::new(&config, engine, rules, "p0").expect("runner")
    }

    /// Hour `hour`'s window: psi high in hours 2, 3, 4 and 7.
    fn window(hour: i64) -> Emitted {
        version_window(hour, "v1")
    }

    /// Hour `hour`'s window of version `version`.
    fn version_window(hour: i64, version: &str) -> Emitted {
        let (start, end) = (START + hour * HOUR, START + (hour + 1) * HOUR);
        let iso = |ms: i64| driftwatch_ingest::format_time(ms);
        let psi = if matches!(hour, 2..=4 | 7) { 0.9 } else { 0.1 };
        let rows: Vec<serde_json::Value> = (0..3)
            .map(|f| {
                serde_json::json!({"model_id": "churn", "model_version": version,
                    "window_start": iso(start), "window_end": iso(end),
                    "feature": format!("f{f}"), "kind": "numeric", "count": 10,
                    "reference_count": 10, "psi": psi,
                    "level": if psi > 0.5 { "drift" } else { "ok" }})
            })
            .collect();
        let batch = driftwatch_sql::testing::table_rows("feature_drift", &rows).expect("rows");
        Emitted {
            about: About::Closed {
                key: WindowKey {
                    model_id: Arc::from("churn"),
                    model_version: Some(Arc::from(version)),
                    start,
                    end,
                },
                events: 10,
            },
            tables: vec![("feature_drift".to_owned(), batch)],
        }
    }

    #[test]
    fn the_rules_thread_ends_where_the_runner_in_place_ends() {
        let (a, b) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let mut in_place = runner(a.path());
        let mut worker = RuleWorker::start(runner(b.path())).expect("start");
        for hour in 0..10 {
            in_place.emit(&window(hour)).expect("window");
            in_place.settle().expect("settle");
            worker.emit(window(hour)).expect("window");
            worker.settle().expect("settle");
        }
        let expected = in_place.snapshot().expect("snapshot");
        let state = worker.snapshot().expect("snapshot");
        assert_eq!(worker.stats(), in_place.stats());
        assert_eq!(worker.stats().evaluations, 10);
        assert_eq!(worker.stats().instances.get("psi_high"), Some(&12));
        // the alert state (which instances hold, for how many windows) and
        // the history written are the same
        assert_eq!(state.evaluator, expected.evaluator);
        assert_eq!(state.triggers, expected.triggers);
        assert_eq!(state.history_seq, expected.history_seq);
        let files = |dir: &std::path::Path| {
            let mut names: Vec<String> = walk(&dir.join("history"))
                .into_iter()
                .map(|p| p.strip_prefix(dir).expect("inside").display().to_string())
                .collect();
            names.sort();
            names
        };
        assert!(!files(a.path()).is_empty());
        assert_eq!(files(a.path()), files(b.path()));
    }

    /// The versions' records come from the windows: a firing alert keeps
    /// the evidence of its window, the next version retires the old one
    /// (its alert resolves), and `model_versions` shows both.
    #[test]
    fn a_new_version_retires_the_old_one_and_its_alert_resolves() {
        let dir = tempfile::tempdir().expect("dir");
        let mut run = runner(dir.path());
        for hour in 0..4 {
            run.emit(&window(hour)).expect("window");
            run.settle().expect("settle");
        }
        let triggers = run.triggers().expect("rules run");
        let firing: Vec<_> = triggers.current().collect();
        assert_eq!(firing.len(), 3, "f0, f1, f2 fire at hour 3");
        let evidence = firing[0].evidence.as_ref().expect("evidence");
        assert_eq!(
            evidence["drifted_features"].as_array().map(Vec::len),
            Some(3)
        );
        assert_eq!(evidence["drifted_features"][0]["level"], "drift");
        assert_eq!(evidence["metrics"], serde_json::Value::Null, "no labels");
        assert!(evidence.get("links").is_none(), "no public_url");
        // hour 4 is v2's first window, a whole window without v1
        for hour in 4..6 {
            run.emit(&version_window(hour, "v2")).expect("window");
            run.settle().expect("settle");
            let t = run.triggers().expect("rules run");
            assert!(t.is_retired("churn", Some("v1")), "hour {hour}");
        }
        assert_eq!(run.triggers().expect("rules").current().count(), 0);
        let count = |sql: &str| {
            driftwatch_sql::testing::count_rows(run.engine(), &format!("({sql})")).expect("count")
        };
        assert_eq!(
            count("SELECT * FROM alerts WHERE state = 'resolved' AND model_version = 'v1'"),
            3
        );
        assert_eq!(
            count(
                "SELECT * FROM model_versions WHERE model_version = 'v1' AND superseded_by = 'v2' \
                 AND windows = 4 AND change = 'retired'"
            ),
            1
        );
        assert_eq!(
            count(
                "SELECT * FROM model_versions WHERE model_version = 'v2' AND previous_version = 'v1'"
            ),
            1
        );
        // the records survive a checkpoint
        let state = run.snapshot().expect("snapshot");
        let other = tempfile::tempdir().expect("dir");
        let mut again = runner(other.path());
        again.restore(&state).expect("restore");
        assert!(
            again
                .triggers()
                .expect("rules")
                .is_retired("churn", Some("v1"))
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn a_failure_on_the_rules_thread_reaches_the_caller() {
        let dir = tempfile::tempdir().expect("dir");
        let mut worker = RuleWorker::start(runner(dir.path())).expect("start");
        worker.emit(window(0)).expect("window");
        // the history directory becomes a file: the flush cannot write
        let history = dir.path().join("history");
        let _ = std::fs::remove_dir_all(&history);
        std::fs::write(&history, "not a directory").expect("write");
        let e = worker.snapshot().expect_err("the flush fails");
        assert!(e.to_string().contains("flushing the history"), "{e}");
        // it is still answering, and dropping it does not hang
        worker.settle_and_wait().expect("settle");
        drop(worker);
    }
}
