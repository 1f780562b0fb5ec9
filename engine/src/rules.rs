//! The rule runner: closed windows and metric revisions go into the SQL
//! tables, the rules are evaluated for each window that changed, alert
//! instances go to the triggers, and the rows go to the history.

use arrow::array::RecordBatch;
use driftwatch_detectors::{About, Emitted};
use driftwatch_ingest::event::PredictionEvent;
use driftwatch_sql::{
    AlertInstance, Engine, Evaluator, EventRows, History, LoadedRule, RuleStats, WindowRef,
};
use driftwatch_triggers::{
    Audit, AuditSync, Outbox, Silences, Triggers, alerts_batch, system_clock,
};
use serde::{Deserialize, Serialize};

use crate::DataDir;
use crate::error::{Result, context};
use crate::history_writer::{Done, HistoryWriter};
use crate::versions::{Versions, WindowSeen};

/// What a [`RuleRunner`] needs to know of the settings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Where the history, outboxes, silences and the audit log are.
    pub data_dir: DataDir,
    /// Whether live rows are written to the history (`sql.history`).
    pub history: bool,
    /// How long the `events` table keeps raw events (`None`: no table).
    pub events_retention_ms: Option<i64>,
    /// The notification actions.
    pub actions: driftwatch_triggers::Actions,
    /// How the audit log is synced.
    pub audit_sync: AuditSync,
    /// The API's address as the receivers of notifications reach it
    /// (`api.public_url`): the evidence of an alert links there.
    pub public_url: Option<String>,
}

/// The tables the label join writes to after a window closed.
const PERFORMANCE_TABLES: &[&str] = &["model_metrics", "change_points", "label_stats"];

/// Bytes of live rows held in memory before a replay flushes them to the
/// history.
pub const FLUSH_BYTES: usize = 16 << 20;

/// The rule evaluator and the history writer of one pipeline.
#[derive(Debug)]
pub struct RuleRunner {
    evaluator: Evaluator,
    history: Option<History>,
    /// Writes the history's flushes and compactions (when there is one).
    writer: Option<HistoryWriter>,
    /// Windows to evaluate: closed (every rule), or only revised by the
    /// label join (the rules that read what it writes).
    dirty: std::collections::BTreeMap<WindowRef, bool>,
    /// Called with each alert instance (the binary prints them).
    pub on_alert: Option<fn(&AlertInstance)>,
    /// When the history is flushed and compacted.
    pub flushing: Flushing,
    /// The history flush of the last snapshot.
    snapshot_seq: u64,
    /// Whether the `events` table is kept.
    keeps_events: bool,
    /// How long the history keeps `events`.
    events_retention_ms: i64,
    /// The latest event time seen.
    latest_event: i64,
    /// The alert lifecycle and notifications (when rules run).
    triggers: Option<Triggers>,
    /// When the triggers last looked for due notifications and ended deliveries.
    last_tick: Option<std::time::Instant>,
    /// Each model version's life.
    versions: Versions,
    /// Windows closed since the last evaluation, as their versions see them.
    seen: Vec<WindowSeen>,
    /// Label coverage of windows revised since the last evaluation.
    coverage: std::collections::BTreeMap<WindowRef, f64>,
    /// Where the evidence of an alert links to.
    public_url: Option<String>,
}

/// How often a pipeline with no window to evaluate still looks for due
/// notifications (a silence ended) and ended deliveries.
pub(crate) const IDLE_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Events gathered before they go to the `events` table in one batch.
const EVENT_BATCH: usize = 8192;

/// Gathers prediction events into rows of the `events` table, where the
/// events are (the event thread), a batch at a time for the runner.
#[derive(Debug, Default)]
pub struct EventBatcher {
    rows: EventRows,
    latest: i64,
}

impl EventBatcher {
    /// Adds an event; returns the full batches (one per model and version)
    /// and the latest event time in them.
    pub fn push(&mut self, event: &PredictionEvent) -> Result<Option<(Vec<RecordBatch>, i64)>> {
        self.rows.push(event);
        self.latest = if self.rows.len() == 1 {
            event.timestamp
        } else {
            self.latest.max(event.timestamp)
        };
        if self.rows.len() >= EVENT_BATCH {
            self.take()
        } else {
            Ok(None)
        }
    }

    /// The events gathered, if any, and the latest event time among them.
    pub fn take(&mut self) -> Result<Option<(Vec<RecordBatch>, i64)>> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        let batches = self.rows.take().map_err(context("building events rows"))?;
        Ok(Some((batches, self.latest)))
    }
}

/// When a [`RuleRunner`] writes its live rows to the history, and which
/// flushes it may compact (only those no restart will rewind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flushing {
    /// At each checkpoint (the service); flushes are compacted once the
    /// checkpoint that records them is saved.
    #[default]
    Checkpoints,
    /// Whenever the live rows hold this many bytes, and at the end (a
    /// replay, which starts over rather than resuming): every flush is
    /// compacted at once.
    Bytes(usize),
}

/// What the window of a firing alert showed ([`crate::figures::evidence`]);
/// a failure to read it is logged and the notification goes without.
fn evidence(
    engine: &Engine,
    alert: &driftwatch_triggers::AlertView,
    public_url: Option<&str>,
) -> Option<serde_json::Value> {
    crate::figures::evidence(engine, alert, public_url)
        .inspect_err(|e| {
            tracing::warn!(rule = %alert.rule, model_id = %alert.model_id, "the evidence of a firing alert was not read: {e}");
        })
        .ok()
}

/// Whether a closed window is its version's reference, and where the
/// reference starts, from its `drift_summary` row (`None` without one).
fn reference_of(window: &Emitted) -> Option<(bool, Option<i64>)> {
    use driftwatch_detectors::output::cell;
    let b = window.table("drift_summary").filter(|b| b.num_rows() > 0)?;
    Some((
        cell::bool(b, "is_reference", 0)?,
        cell::time(b, "reference_start", 0),
    ))
}

/// The runner's checkpointed state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RulesState {
    /// The evaluator's state.
    pub evaluator: Vec<u8>,
    /// The history flush this state includes.
    pub history_seq: u64,
    /// The alert lifecycle and groups.
    pub triggers: Option<Vec<u8>>,
    /// The model versions seen.
    pub versions: Versions,
}

/// The triggers of pipeline `writer`: its outbox, the data directory's
/// silences and audit log.
fn open_triggers(config: &RunnerConfig, writer: &str) -> Result<Triggers> {
    let outbox = Outbox::open(&config.data_dir.outbox(writer))?;
    let audit = Audit::open(&config.data_dir.audit(), config.audit_sync)?;
    let silences = Silences::open(&config.data_dir.silences())?;
    Ok(Triggers::new(
        config.actions.clone(),
        std::sync::Arc::new(outbox),
        silences,
        std::sync::Arc::new(audit),
        system_clock(),
    ))
}

impl RuleRunner {
    /// `rules` (checked on `engine`, whose tables receive the rows), the
    /// history written as `writer` under `DATA_DIR/history` when
    /// `config.history`.
    pub fn new(
        config: &RunnerConfig,
        engine: Engine,
        rules: Vec<LoadedRule>,
        writer: &str,
    ) -> Result<Self> {
        let history = if config.history {
            Some(History::open(&config.data_dir.history(), writer)?)
        } else {
            None
        };
        let triggers = if rules.is_empty() {
            None
        } else {
            Some(open_triggers(config, writer)?)
        };
        let writer = history
            .is_some()
            .then(|| HistoryWriter::start(writer))
            .transpose()?;
        Ok(RuleRunner {
            triggers,
            last_tick: None,
            evaluator: Evaluator::new(engine, rules)?,
            history,
            writer,
            dirty: std::collections::BTreeMap::new(),
            on_alert: None,
            flushing: Flushing::default(),
            snapshot_seq: 0,
            keeps_events: config.events_retention_ms.is_some(),
            events_retention_ms: config.events_retention_ms.unwrap_or(0),
            latest_event: i64::MIN,
            versions: Versions::default(),
            seen: Vec::new(),
            coverage: std::collections::BTreeMap::new(),
            public_url: config.public_url.clone(),
        })
    }

    /// The SQL session whose tables receive the rows.
    pub fn engine(&self) -> &Engine {
        self.evaluator.engine()
    }

    /// Whether prediction events go to the `events` table.
    pub fn keeps_events(&self) -> bool {
        self.keeps_events
    }

    /// Rules loaded.
    pub fn rule_count(&self) -> usize {
        self.evaluator.rules().count()
    }

    /// How many history files this writer has (an earlier run's).
    pub fn history_files(&self) -> usize {
        self.history.as_ref().map_or(0, History::file_count)
    }

    /// Removes every history file of this writer (a replay starts over).
    pub fn clear_history(&mut self) -> Result<()> {
        self.idle()?;
        if let Some(h) = &mut self.history {
            h.rewind(0)?;
        }
        Ok(())
    }

    fn push(&self, name: &str, batch: &RecordBatch) -> Result<()> {
        Ok(self.evaluator.engine().tables().push(name, batch)?)
    }

    /// Rows of a closed window, or of the label join (metric revisions,
    /// change points, label counts): into the tables, and the windows they
    /// are about marked for evaluation.
    pub fn emit(&mut self, rows: &Emitted) -> Result<()> {
        for (name, batch) in &rows.tables {
            self.push(name, batch)?;
        }
        match &rows.about {
            About::Closed { key, events } => {
                let w = WindowRef::from(key);
                self.seen.push(WindowSeen {
                    window: w.clone(),
                    predictions: *events,
                    reference: reference_of(rows),
                });
                self.dirty.insert(w, true);
            }
            About::Revised(revisions) => {
                for r in revisions {
                    let w = WindowRef::from(&r.key);
                    if r.predictions > 0 {
                        self.coverage
                            .insert(w.clone(), r.labeled as f64 / r.predictions as f64);
                    }
                    self.dirty.entry(w).or_insert(false);
                }
            }
        }
        Ok(())
    }

    /// Prediction events for the `events` table (gathered by an
    /// [`EventBatcher`]), the latest event time among them.
    pub fn events(&mut self, batches: &[RecordBatch], latest: i64) -> Result<()> {
        if self.keeps_events {
            for batch in batches {
                self.push("events", batch)?;
            }
            self.latest_event = self.latest_event.max(latest);
        }
        Ok(())
    }

    /// The triggers (when rules run).
    pub fn triggers(&self) -> Option<&Triggers> {
        self.triggers.as_ref()
    }

    /// See [`triggers`](Self::triggers).
    pub fn triggers_mut(&mut self) -> Option<&mut Triggers> {
        self.triggers.as_mut()
    }

    /// Writes how ended deliveries went to the `alerts` table now.
    pub fn record_deliveries(&mut self) -> Result<()> {
        self.tick(i64::MIN)
    }

    /// Writes due notifications to the outbox; the `alerts` rows go to the table.
    fn tick(&mut self, now: i64) -> Result<()> {
        let Some(t) = &mut self.triggers else {
            return Ok(());
        };
        self.last_tick = Some(std::time::Instant::now());
        let rows = t.tick(now).map_err(context("alert notifications"))?;
        if !rows.is_empty() {
            self.push("alerts", &alerts_batch(&rows)?)?;
        }
        Ok(())
    }

    /// Evaluates the rules for every window that changed since the last call.
    pub fn settle(&mut self) -> Result<()> {
        self.collect(false)?;
        if self.dirty.is_empty() {
            if self.triggers.is_some() && self.last_tick.is_none_or(|t| t.elapsed() >= IDLE_TICK) {
                self.tick(i64::MIN)?;
            }
            return Ok(());
        }
        let mut dirty: Vec<(WindowRef, bool)> =
            std::mem::take(&mut self.dirty).into_iter().collect();
        dirty.sort_by_key(|(w, _)| (w.end, w.start));
        self.track_versions()?;
        if self.rule_count() > 0 {
            for (w, closed) in &dirty {
                let mut evaluation = self
                    .evaluator
                    .evaluate_some(w, |r| *closed || r.reads_any(PERFORMANCE_TABLES))?;
                if let Some(t) = &mut self.triggers {
                    let engine = self.evaluator.engine();
                    let url = self.public_url.as_deref();
                    t.observe(
                        w,
                        &evaluation.evaluated,
                        &mut evaluation.instances,
                        &mut |a| evidence(engine, a, url),
                    );
                }
                // a retired version's rows raise no alert: not shown as one
                let retired = self
                    .triggers
                    .as_ref()
                    .is_some_and(|t| t.is_retired(&w.model_id, w.model_version.as_deref()));
                if let Some(f) = self.on_alert.filter(|_| !retired) {
                    evaluation.instances.iter().for_each(f);
                }
            }
        }
        self.healthy_versions()?;
        let latest = dirty.iter().map(|(w, _)| w.end).max().unwrap_or(i64::MIN);
        self.tick(latest)?;
        if let Flushing::Bytes(limit) = self.flushing {
            let flushing = self.writer.as_ref().and_then(HistoryWriter::flushing);
            let live = self.evaluator.engine().tables().live_bytes();
            if live.saturating_sub(flushing.unwrap_or(0)) >= limit {
                if self.writer.is_some() {
                    // one flush at a time: the rows past the limit wait
                    // for the one on the writer thread
                    while self.writer.as_ref().is_some_and(|w| w.flushing().is_some()) {
                        self.collect(true)?;
                    }
                    self.flush_in_background()?;
                } else {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    /// The windows closed since the last call, told to the version
    /// records: new versions traced back to the latest retraining request,
    /// retired versions' alerts ended.
    fn track_versions(&mut self) -> Result<()> {
        if self.seen.is_empty() {
            return Ok(());
        }
        // deliveries that ended meanwhile first: a retraining request the
        // receiver took is what a version first seen now is traced to
        if let Some(t) = &mut self.triggers {
            t.record_deliveries()
                .map_err(context("recording ended deliveries"))?;
        }
        let mut seen = std::mem::take(&mut self.seen);
        seen.sort_by_key(|s| (s.window.end, s.window.start));
        for s in &seen {
            let w = &s.window;
            let retrain = self
                .triggers
                .as_ref()
                .and_then(|t| t.latest_retrain(&w.model_id));
            let again = self.versions.window(s, retrain);
            if let Some(t) = &mut self.triggers {
                if again {
                    t.unretire(&w.model_id, w.model_version.as_deref());
                }
                if let Some(r) = self
                    .versions
                    .get(&w.model_id, w.model_version.as_deref())
                    .filter(|r| r.revision == 1)
                {
                    t.audit_event(
                        "version_first_seen",
                        serde_json::json!({
                            "model_id": r.model_id, "model_version": r.model_version,
                            "previous_version": r.previous_version, "first_seen": driftwatch_ingest::format_time(r.first_seen),
                            "reference": r.reference, "alert_rule": r.alert_rule, "alert_fingerprint": r.alert_fingerprint,
                            "retrain_action": r.retrain_action, "retrain_key": r.retrain_key, "retrain_job": r.retrain_job,
                        }),
                    );
                }
            }
        }
        let models = seen.iter().map(|s| s.window.model_id.clone()).collect();
        for (model, version, by, at) in self.versions.retire(&models) {
            tracing::info!(model_id = %model, model_version = version.as_deref().unwrap_or(""), superseded_by = %by, "model version retired");
            if let Some(t) = &mut self.triggers {
                t.retire(&model, version.as_deref(), &by, at);
            }
        }
        Ok(())
    }

    /// Windows revised with labels since the last call: a version's first
    /// with enough labels and no alert is its first healthy one. Writes the
    /// version rows made since the last call.
    fn healthy_versions(&mut self) -> Result<()> {
        for (w, coverage) in std::mem::take(&mut self.coverage) {
            let version = w.model_version.as_deref();
            let alerts = self
                .triggers
                .as_ref()
                .is_some_and(|t| t.has_alerts(&w.model_id, version));
            if self.versions.revised(&w, coverage, alerts)
                && let Some(t) = &self.triggers
                && let Some(r) = self.versions.get(&w.model_id, version)
            {
                t.audit_event(
                    "version_healthy",
                    serde_json::json!({
                        "model_id": r.model_id, "model_version": r.model_version,
                        "window_start": driftwatch_ingest::format_time(w.start),
                        "window_end": driftwatch_ingest::format_time(w.end),
                        "label_coverage": coverage, "retrain_key": r.retrain_key, "retrain_job": r.retrain_job,
                    }),
                );
            }
        }
        let rows = self.versions.take_rows();
        if !rows.is_empty() {
            self.push(
                driftwatch_sql::versions::TABLE,
                &driftwatch_sql::versions::batch(&rows)?,
            )?;
        }
        Ok(())
    }

    /// Publishes what the history writer finished (waiting for the next job
    /// when `wait`): files in place and flushed rows out of memory at once,
    /// between two queries. After a replay's flush, the writer compacts.
    fn collect(&mut self, wait: bool) -> Result<()> {
        let (Some(w), Some(h)) = (&mut self.writer, &mut self.history) else {
            return Ok(());
        };
        match w.finished(wait)? {
            None => {}
            Some(Done::Flush(staged)) => {
                let seq = self
                    .evaluator
                    .engine()
                    .tables()
                    .publish_flush(h, staged)
                    .map_err(context("flushing the history"))?;
                if let Flushing::Bytes(_) = self.flushing {
                    self.compact_in_background(seq)?;
                }
            }
            Some(Done::Compact(staged)) => {
                let done = self
                    .evaluator
                    .engine()
                    .tables()
                    .publish_compaction(h, staged)
                    .map_err(context("compacting the history"))?;
                tracing::debug!(
                    directories = done.directories,
                    files = done.files,
                    "history compacted"
                );
            }
        }
        Ok(())
    }

    /// Waits until the history writer has no work and publishes it all.
    fn idle(&mut self) -> Result<()> {
        while self.writer.as_ref().is_some_and(HistoryWriter::busy) {
            self.collect(true)?;
        }
        Ok(())
    }

    /// Hands the live rows to the history writer (no flush on it).
    fn flush_in_background(&mut self) -> Result<()> {
        self.drop_expired_events()?;
        let (Some(w), Some(h)) = (&mut self.writer, &mut self.history) else {
            return Ok(());
        };
        if let Some(job) = self.evaluator.engine().tables().begin_flush(h) {
            w.flush(job)?;
        }
        Ok(())
    }

    /// Expires old `events` files and hands the merges of flushes up to
    /// `upto` to the history writer (unless it is compacting already: the
    /// next compaction takes these too).
    fn compact_in_background(&mut self, upto: u64) -> Result<()> {
        if self.writer.as_ref().is_none_or(HistoryWriter::compacting) {
            return Ok(());
        }
        self.expire_events()?;
        if let (Some(w), Some(h)) = (&mut self.writer, &self.history)
            && let Some(job) = h.begin_compact(upto)
        {
            w.compact(job)?;
        }
        Ok(())
    }

    /// Evaluation counters.
    pub fn stats(&self) -> &RuleStats {
        self.evaluator.stats()
    }

    /// Writes the live rows to the history (a replay's are compacted too),
    /// once the history writer has finished what it had.
    pub fn flush(&mut self) -> Result<()> {
        self.idle()?;
        self.drop_expired_events()?;
        if let Some(h) = &mut self.history {
            let seq = self
                .evaluator
                .engine()
                .tables()
                .flush(h)
                .map_err(context("flushing the history"))?;
            if let Flushing::Bytes(_) = self.flushing {
                self.compact(seq)?;
            }
        } else {
            // without a history, queries see what closed since the last flush
            self.evaluator.engine().tables().clear_live();
        }
        Ok(())
    }

    /// Drops the live `events` rows of whole days the expiry would remove
    /// right after writing them (most of a long replay's events).
    fn drop_expired_events(&mut self) -> Result<()> {
        if let Some(before) = self.events_expire_before() {
            let day = 86_400_000;
            let dropped = self
                .evaluator
                .engine()
                .tables()
                .drop_live_before("events", before.div_euclid(day) * day)?;
            if dropped > 0 {
                tracing::debug!(dropped, "events past their retention not written");
            }
        }
        Ok(())
    }

    /// Events dated before this (epoch ms) are past their retention: the
    /// history keeps whole days, from the day of this instant on.
    fn events_expire_before(&self) -> Option<i64> {
        (self.keeps_events && self.latest_event > i64::MIN)
            .then(|| self.latest_event.saturating_sub(self.events_retention_ms))
    }

    /// Removes the history's `events` files past their retention.
    fn expire_events(&mut self) -> Result<()> {
        if let (Some(before), Some(h)) = (self.events_expire_before(), &mut self.history) {
            let removed = h
                .expire("events", before)
                .map_err(context("expiring events"))?;
            if removed > 0 {
                tracing::debug!(removed, before, "events past their retention removed");
            }
        }
        Ok(())
    }

    /// Expires and compacts here and now (the history writer is idle).
    fn compact(&mut self, upto: u64) -> Result<()> {
        self.expire_events()?;
        if let Some(h) = &mut self.history {
            let tables = self.evaluator.engine().tables();
            let done = match h.begin_compact(upto) {
                Some(job) => tables
                    .publish_compaction(h, job.run().map_err(context("compacting the history"))?)
                    .map_err(context("compacting the history"))?,
                None => Default::default(),
            };
            if done.files > 0 {
                tracing::debug!(
                    upto,
                    directories = done.directories,
                    files = done.files,
                    "history compacted"
                );
            }
        }
        Ok(())
    }

    /// Flushes the history and returns the state to checkpoint with it.
    pub fn snapshot(&mut self) -> Result<RulesState> {
        self.settle()?;
        self.flush()?;
        self.snapshot_seq = self.history.as_ref().map_or(0, History::seq);
        Ok(RulesState {
            evaluator: self.evaluator.snapshot()?,
            history_seq: self.snapshot_seq,
            triggers: self.triggers.as_ref().map(Triggers::snapshot).transpose()?,
            versions: self.versions.clone(),
        })
    }

    /// The checkpoint of the last [`snapshot`](Self::snapshot) is saved: no
    /// restart rewinds the history before it, so its flushes are compacted.
    pub fn checkpoint_saved(&mut self) -> Result<()> {
        self.compact_in_background(self.snapshot_seq)
    }

    /// Continues from a snapshot: history files written after it are removed.
    pub fn restore(&mut self, state: &RulesState) -> Result<()> {
        self.idle()?;
        self.evaluator.restore(&state.evaluator)?;
        if let (Some(t), Some(bytes)) = (&mut self.triggers, &state.triggers) {
            t.restore(bytes)?;
        }
        self.versions = state.versions.clone();
        self.seen.clear();
        self.coverage.clear();
        if let Some(h) = &mut self.history {
            let removed = h.rewind(state.history_seq)?;
            self.snapshot_seq = state.history_seq;
            if removed > 0 {
                tracing::info!(
                    removed,
                    seq = state.history_seq,
                    "history files after the checkpoint removed"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use driftwatch_ingest::{Decoder, DecoderConfig, Event};

    use super::*;
    use crate::history_writer::HistoryWriter;

    fn prediction(decoder: &mut Decoder, i: usize, second: usize) -> PredictionEvent {
        let json = format!(
            r#"{{"event_id":"e{i}","model_id":"churn","timestamp":"2026-11-26T12:00:{second:02}Z","features":{{"age":42}},"prediction":{{"score":0.9}}}}"#
        );
        match decoder.decode_json(json.as_bytes()) {
            Ok(Event::Prediction(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    /// A runner over `dir` with the history read by its queries, no rules,
    /// flushing whenever a byte is live (a flush at every settle).
    fn replay_runner(dir: &std::path::Path) -> RuleRunner {
        use driftwatch_sql::{Limits, Tables, standard_tables};
        let data_dir = DataDir::new(dir);
        let tables = Tables::new(
            standard_tables().expect("tables"),
            Some(&data_dir.history()),
        )
        .expect("tables");
        let engine = Engine::new(tables, Limits::default()).expect("engine");
        let config = RunnerConfig {
            data_dir,
            history: true,
            events_retention_ms: None,
            actions: driftwatch_triggers::Actions::default(),
            audit_sync: AuditSync::None,
            public_url: None,
        };
        let mut runner = RuleRunner::new(&config, engine, Vec::new(), "replay").expect("runner");
        runner.flushing = Flushing::Bytes(1);
        runner
    }

    /// Hour `hour`'s window of model churn: two `feature_drift` rows.
    fn closed(hour: i64) -> Emitted {
        use std::sync::Arc;
        let start = 1_795_651_200_000 + hour * 3_600_000; // from 2026-11-26T00:00:00Z
        let end = start + 3_600_000;
        let iso = driftwatch_ingest::format_time;
        let rows: Vec<serde_json::Value> = ["f0", "f1"]
            .iter()
            .map(|f| {
                serde_json::json!({"model_id": "churn", "model_version": "v1",
                    "window_start": iso(start), "window_end": iso(end),
                    "feature": f, "kind": "numeric", "count": 10,
                    "reference_count": 10, "psi": 0.1, "level": "ok"})
            })
            .collect();
        driftwatch_detectors::ClosedWindow {
            key: driftwatch_detectors::WindowKey {
                model_id: Arc::from("churn"),
                model_version: None,
                start,
                end,
            },
            events: 20,
            tables: vec![(
                "feature_drift".to_owned(),
                driftwatch_sql::testing::table_rows("feature_drift", &rows).expect("rows"),
            )],
        }
        .into()
    }

    #[test]
    fn a_windows_reference_is_read_from_its_drift_summary() {
        use std::sync::Arc;
        let window = |rows: &[serde_json::Value]| -> Emitted {
            let tables = if rows.is_empty() {
                Vec::new()
            } else {
                vec![(
                    "drift_summary".to_owned(),
                    driftwatch_sql::testing::table_rows("drift_summary", rows).expect("rows"),
                )]
            };
            driftwatch_detectors::ClosedWindow {
                key: driftwatch_detectors::WindowKey {
                    model_id: Arc::from("churn"),
                    model_version: None,
                    start: 0,
                    end: 3_600_000,
                },
                events: 20,
                tables,
            }
            .into()
        };
        let row = |own: bool, start: Option<&str>| {
            serde_json::json!({"model_id": "churn", "model_version": "v1",
                "window_start": "2026-11-26T01:00:00Z", "window_end": "2026-11-26T02:00:00Z",
                "features_compared": 3, "features_warning": 0, "features_drifted": 1,
                "drift_share": 0.33, "is_reference": own, "reference_start": start})
        };
        assert_eq!(
            reference_of(&window(&[row(false, Some("2026-11-20T00:00:00Z"))])),
            Some((false, Some(1_795_132_800_000)))
        );
        assert_eq!(
            reference_of(&window(&[row(true, None)])),
            Some((true, None))
        );
        assert_eq!(reference_of(&window(&[])), None, "no drift summary");
    }

    fn count(runner: &RuleRunner) -> i64 {
        driftwatch_sql::testing::count_rows(runner.evaluator.engine(), "feature_drift")
            .expect("count")
    }

    #[test]
    fn rows_flushed_on_the_writer_thread_are_counted_once_by_every_query() {
        let dir = tempfile::tempdir().expect("dir");
        let mut runner = replay_runner(dir.path());
        let mut in_flight = 0;
        for hour in 0..40 {
            runner.emit(&closed(hour)).expect("window");
            runner.settle().expect("settle");
            // a flush is on the writer thread now, or was just published,
            // and the one before was compacted: live or in a file, each row
            // once
            in_flight += usize::from(runner.writer.as_ref().is_some_and(HistoryWriter::busy));
            assert_eq!(count(&runner), 2 * (hour + 1), "after hour {hour}");
        }
        assert!(in_flight > 0, "no flush was ever on the writer thread");
        runner.flush().expect("flush");
        assert_eq!(runner.evaluator.engine().tables().live_rows(), 0);
        assert_eq!(count(&runner), 80);
        // every flush written and compacted: one file for the day, no
        // temporary left
        let day = dir.path().join("history/feature_drift/date=2026-11-26");
        let names: Vec<String> = std::fs::read_dir(&day)
            .expect("day")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with("replay-000000000001-"), "{names:?}");
    }

    /// Flush sequences of the files under `dir` (recursively), and whether
    /// any temporary is among them.
    fn flushes(dir: &std::path::Path) -> (Vec<String>, bool) {
        let mut names = Vec::new();
        let mut temporary = false;
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("dir").flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() {
                    stack.push(path);
                } else if name.starts_with('.') {
                    temporary = true;
                } else {
                    names.push(name);
                }
            }
        }
        names.sort();
        (names, temporary)
    }

    #[test]
    fn checkpoints_record_what_the_writer_thread_wrote_and_compacts_it_out_of_sight_of_queries() {
        let dir = tempfile::tempdir().expect("dir");
        let history = dir.path().join("history");
        // the service: a flush at each checkpoint, compacted once saved
        let mut runner = replay_runner(dir.path());
        runner.flushing = Flushing::Checkpoints;
        let mut compactions = 0;
        let mut state = None;
        for hour in 0..30 {
            runner.emit(&closed(hour)).expect("window");
            runner.settle().expect("settle");
            // each row once, whether a compaction is on the writer thread,
            // just published, or done
            assert_eq!(count(&runner), 2 * (hour + 1), "after hour {hour}");
            if hour % 4 == 3 {
                let saved = runner.snapshot().expect("snapshot");
                assert_eq!(runner.evaluator.engine().tables().live_rows(), 0);
                let (files, temporary) = flushes(&history);
                assert!(!temporary, "{files:?}");
                assert!(
                    files
                        .iter()
                        .any(|f| f.ends_with(&format!("{:012}.parquet", saved.history_seq))),
                    "{files:?} after a snapshot of flush {}",
                    saved.history_seq
                );
                runner.checkpoint_saved().expect("saved");
                compactions += usize::from(runner.writer.as_ref().is_some_and(HistoryWriter::busy));
                state = Some(saved);
            }
        }
        // the first day's flushes were merged on the writer thread
        assert!(compactions > 0);
        let (files, _) = flushes(&history.join("feature_drift/date=2026-11-26"));
        assert_eq!(files.len(), 1, "{files:?}");
        // the hours after the last checkpoint are written by the next
        // snapshot; restoring the last checkpoint removes them
        let state = state.expect("a checkpoint");
        runner.snapshot().expect("snapshot");
        let (before, _) = flushes(&history);
        runner.restore(&state).expect("restore");
        let (after, temporary) = flushes(&history);
        assert!(!temporary, "{after:?}");
        // every table's file of that one flush goes, nothing else
        let gone: Vec<&String> = before.iter().filter(|f| !after.contains(f)).collect();
        assert!(!gone.is_empty(), "{before:?} → {after:?}");
        assert!(gone.iter().all(|f| *f == gone[0]), "{before:?} → {after:?}");
        assert_eq!(
            after.len() + gone.len(),
            before.len(),
            "{before:?} → {after:?}"
        );
        assert_eq!(count(&runner), 2 * 28);
    }

    #[test]
    fn the_batcher_hands_over_full_batches_with_their_latest_event_time() {
        let mut decoder = Decoder::new(DecoderConfig::default());
        let mut batcher = EventBatcher::default();
        let mut batches = Vec::new();
        for i in 0..EVENT_BATCH + 10 {
            // the latest time of the first batch is in its middle; the rest
            // are earlier
            let second = if i == 100 { 59 } else { i % 50 };
            if let Some(full) = batcher
                .push(&prediction(&mut decoder, i, second))
                .expect("push")
            {
                batches.push(full);
            }
        }
        assert_eq!(batches.len(), 1);
        let rows = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
        assert_eq!(rows(&batches[0].0), EVENT_BATCH);
        let minute = 1_795_694_400_000; // 2026-11-26T12:00:00Z
        assert_eq!(batches[0].1, minute + 59_000);
        // what is left: ten events (seconds 42 to 49, then 0 and 1); the
        // latest among them only, not the first batch's
        let (rest, latest) = batcher.take().expect("take").expect("rows");
        assert_eq!(rows(&rest), 10);
        assert_eq!(latest, minute + 49_000);
        assert!(batcher.take().expect("take").is_none());
    }
}
