//! The replay pipeline: records from sources → windows → sinks; refusals →
//! dead-letter sink. Every record read ends up counted exactly once, as
//! accepted or as rejected with its reason.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use driftwatch_detectors::performance::{PerformanceStats, PerformanceTracker};
use driftwatch_detectors::{
    ClosedWindow, DriftDetector, Emitted, LabelFree, SharedReferences, WindowSet, components,
    summary_components,
};
use driftwatch_ingest::{
    Admit, DeadLetterBudget, DeadLetterSink, Decoder, Event, LabelEvent, Position, Record, Reject,
    Rejected, Source, encode_json,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::sinks::WindowSink;
use crate::{Config, Error, Result, RuleRunner, RuleWorker, RulesState};
use driftwatch_sql::RuleStats;

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken into the windows (or the label join).
    Accepted,
    /// Refused and sent to the dead letters.
    Rejected {
        /// The reason's code (`late_event`, `invalid_json`, …).
        reason: &'static str,
        /// What was wrong, for a person.
        message: String,
    },
}

impl Outcome {
    fn rejected(rejected: &Rejected) -> Self {
        Outcome::Rejected {
            reason: rejected.reason.code(),
            message: rejected.reason.to_string(),
        }
    }
}

/// Counts per model.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelCounts {
    /// Predictions accepted into windows.
    pub predictions: u64,
    /// Labels accepted.
    pub labels: u64,
    /// Predictions refused as late.
    pub late: u64,
}

/// What a run did; `read == accepted + rejected` always holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunSummary {
    /// Records read from the sources.
    pub read: u64,
    /// Records accepted (predictions and labels).
    pub accepted: u64,
    /// Records refused, all reasons.
    pub rejected: u64,
    /// Refusals by reason code.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Accepted predictions.
    pub predictions: u64,
    /// Accepted labels.
    pub labels: u64,
    /// Windows closed.
    pub windows_closed: u64,
    /// Per model.
    pub models: BTreeMap<String, ModelCounts>,
    /// Where the refused records went.
    pub dead_letter: String,
    /// Refusals counted but not written to the dead-letter sink, by reason:
    /// blank lines, and refusals of a source past
    /// `ingest.dead_letter_max_bytes`. (Always written: checkpoints store
    /// the summary in a format without field names.)
    #[serde(default)]
    pub dead_letter_unwritten: BTreeMap<String, u64>,
    /// Label join and performance metrics (when enabled).
    pub performance: Option<PerformanceStats>,
    /// Rule evaluations (when rules run).
    #[serde(default)]
    pub rules: Option<RuleStats>,
}

/// The run summary's entry for the counts of models past the bound on
/// listed models.
const OTHER_MODELS: &str = "(other models)";

/// Decoder, windows, dead-letter sink and window sinks, wired together.
#[allow(missing_debug_implementations)] // sinks and the dead-letter sink are trait objects
pub struct Pipeline {
    decoder: Decoder,
    windows: WindowSet,
    performance: Option<PerformanceTracker>,
    dead_letter: Box<dyn DeadLetterSink + Send>,
    dead_letter_budget: DeadLetterBudget,
    sinks: Vec<Box<dyn WindowSink + Send>>,
    rules: Option<RuleWorker>,
    summary: RunSummary,
    /// models listed one by one in the summary
    max_listed_models: usize,
    scratch: Vec<u8>,
    /// wall-clock ms at the latest window close minus that window's end
    close_delay_ms: Option<i64>,
}

impl Pipeline {
    /// A pipeline with the default components over `settings`; predictions
    /// awaiting labels spill past their memory budget to the directory
    /// `pending`; `references`: profiles stored while the process runs,
    /// which its drift detector looks up first.
    pub fn new(
        settings: &Config,
        dead_letter: Box<dyn DeadLetterSink + Send>,
        dead_letter_name: String,
        sinks: Vec<Box<dyn WindowSink + Send>>,
        pending: Option<&Path>,
        references: Option<Arc<SharedReferences>>,
    ) -> Result<Self> {
        let parts = match &settings.drift {
            Some(config) => {
                let mut detector = DriftDetector::new(config.clone())?;
                crate::reference::load_into(&settings.data_dir, &detector)?;
                let label_free = references
                    .as_ref()
                    .map(|r| Arc::clone(&r.label_free))
                    .unwrap_or_default();
                crate::reference::load_label_free(&settings.data_dir, &label_free)?;
                if let Some(r) = references {
                    detector.share_references(r);
                }
                components(detector, LabelFree::new(label_free))
            }
            None => summary_components(),
        };
        let performance = match &settings.performance {
            Some(config) => {
                let mut config = config.clone();
                config.store.spill_dir = pending.map(Path::to_owned);
                Some(PerformanceTracker::new(
                    config,
                    settings.window,
                    settings.allowed_lateness_ms,
                )?)
            }
            None => None,
        };
        Ok(Pipeline {
            decoder: Decoder::new(settings.decoder.clone()),
            windows: WindowSet::new(settings.window, settings.allowed_lateness_ms, parts)
                .with_limits(settings.limits),
            performance,
            dead_letter,
            dead_letter_budget: DeadLetterBudget::new(settings.dead_letter_max_bytes),
            sinks,
            rules: None,
            summary: RunSummary {
                dead_letter: dead_letter_name,
                ..RunSummary::default()
            },
            max_listed_models: 2 * settings.limits.max_models,
            scratch: Vec::new(),
            close_delay_ms: None,
        })
    }

    /// The output tables and their schemas.
    pub fn tables(&self) -> Vec<(String, arrow::datatypes::SchemaRef)> {
        let mut tables = self.windows.tables();
        if self.performance.is_some() {
            tables.extend(PerformanceTracker::tables());
        }
        tables
    }

    /// Evaluates alert rules and writes the history (before the first window closes).
    /// The runner goes to a thread of its own.
    pub fn set_rules(&mut self, rules: RuleRunner) -> Result<()> {
        self.rules = Some(RuleWorker::start(rules)?);
        Ok(())
    }

    /// The rule runner, when rules run.
    pub fn rules_mut(&mut self) -> Option<&mut RuleWorker> {
        self.rules.as_mut()
    }

    /// Seconds between the end of the latest window closed (event time)
    /// and when it closed (wall clock): how far behind real time the
    /// results are (a backfill's is large).
    pub fn window_close_delay(&self) -> Option<f64> {
        self.close_delay_ms.map(|ms| ms as f64 / 1000.0)
    }

    /// The rules thread, when rules run.
    pub fn rules(&self) -> Option<&RuleWorker> {
        self.rules.as_ref()
    }

    /// Adds window sinks (they must exist before the first window closes).
    pub fn add_sink(&mut self, sink: Box<dyn WindowSink + Send>) {
        self.sinks.push(sink);
    }

    fn reject(&mut self, rejected: &Rejected) -> Result<()> {
        self.summary.read += 1;
        self.summary.rejected += 1;
        *self
            .summary
            .rejected_by_reason
            .entry(rejected.reason.code().to_owned())
            .or_default() += 1;
        match self.dead_letter_budget.admit(rejected) {
            Admit::Write => self.dead_letter.send(rejected).map_err(Error::DeadLetter)?,
            Admit::Blank => self.unwritten(rejected),
            Admit::OverCap { first } => {
                if first {
                    warn!(
                        source = %rejected.position.source(),
                        max_bytes = self.dead_letter_budget.max_bytes_per_source(),
                        "dead letters of this source reached ingest.dead_letter_max_bytes; further refusals are counted by reason, not written"
                    );
                }
                self.unwritten(rejected)
            }
        }
        Ok(())
    }

    fn unwritten(&mut self, rejected: &Rejected) {
        *self
            .summary
            .dead_letter_unwritten
            .entry(rejected.reason.code().to_owned())
            .or_default() += 1;
    }

    /// Handles one record and says whether it was accepted.
    pub fn handle(&mut self, record: Record) -> Result<Outcome> {
        self.handle_ref(&record)
    }

    /// [`handle`](Self::handle) for a record the caller keeps (and drops
    /// on the thread that made it: see [`run_source`](Self::run_source)).
    pub fn handle_ref(&mut self, record: &Record) -> Result<Outcome> {
        let outcome = self.handle_record(record)?;
        if let Some(r) = &mut self.rules {
            r.settle()?;
        }
        Ok(outcome)
    }

    fn handle_record(&mut self, record: &Record) -> Result<Outcome> {
        match record {
            Record::Rejected(rejected) => {
                if self.summary.rejected < 20 {
                    warn!(position = %rejected.position, reason = rejected.reason.code(), "event rejected: {}", rejected.reason);
                }
                self.reject(rejected)?;
                Ok(Outcome::rejected(rejected))
            }
            Record::Event(Event::Label(label), _) => {
                self.summary.read += 1;
                self.summary.accepted += 1;
                self.label(label)?;
                self.advance_performance()?;
                Ok(Outcome::Accepted)
            }
            Record::Event(event @ Event::Prediction(prediction), position) => {
                match self.windows.push(prediction) {
                    Ok(()) => {
                        self.summary.read += 1;
                        self.summary.accepted += 1;
                        self.summary.predictions += 1;
                        self.model(&prediction.model_id).predictions += 1;
                        if let Some(t) = &mut self.performance {
                            t.prediction(prediction)?;
                        }
                        // a label the prediction carries (training data)
                        // arrives with it
                        if let Some(label) = prediction.carried_label() {
                            self.label(&label)?;
                        }
                        if let Some(r) = &mut self.rules {
                            r.prediction(prediction)?;
                        }
                        let closed = self.windows.close_ready()?;
                        self.emit(closed)?;
                        self.advance_performance()?;
                        Ok(Outcome::Accepted)
                    }
                    Err(reason) => {
                        if matches!(reason, Reject::Late { .. }) {
                            self.model(&prediction.model_id).late += 1;
                        }
                        self.scratch.clear();
                        encode_json(event, &mut self.scratch);
                        let len = self.scratch.len() as u64;
                        let rejected = Rejected::new(reason, position.clone(), &self.scratch, len);
                        self.reject(&rejected)?;
                        Ok(Outcome::rejected(&rejected))
                    }
                }
            }
        }
    }

    /// Counts an accepted label and joins it.
    fn label(&mut self, label: &LabelEvent) -> Result<()> {
        self.summary.labels += 1;
        self.model(&label.model_id).labels += 1;
        if let Some(t) = &mut self.performance {
            t.label(label)?;
        }
        Ok(())
    }

    fn model(&mut self, id: &str) -> &mut ModelCounts {
        // look up by &str first: allocating the key on every event would cost more than the count
        if !self.summary.models.contains_key(id) {
            // labels name any model: past the bound on models, the counts
            // of models not yet listed go to one entry
            let id = if self.summary.models.len() < self.max_listed_models {
                id
            } else {
                OTHER_MODELS
            };
            self.summary.models.entry(id.to_owned()).or_default();
            return self.summary.models.get_mut(id).expect("inserted above");
        }
        self.summary.models.get_mut(id).expect("inserted above")
    }

    fn emit(&mut self, closed: Vec<ClosedWindow>) -> Result<()> {
        if closed.is_empty() {
            return Ok(());
        }
        self.summary.windows_closed += closed.len() as u64;
        if let Some(end) = closed.iter().map(|w| w.key.end).max() {
            self.close_delay_ms = Some(self.decoder.now() - end);
        }
        if let Some(t) = &mut self.performance {
            t.windows_closed(closed.iter().map(|w| &w.key))?;
        }
        for window in closed {
            self.emit_rows(Emitted::from(window))?;
        }
        Ok(())
    }

    /// Hands rows on to every sink and the rules.
    fn emit_rows(&mut self, rows: Emitted) -> Result<()> {
        for sink in &mut self.sinks {
            sink.emit(&rows)?;
        }
        if let Some(r) = &mut self.rules {
            r.emit(rows)?;
        }
        Ok(())
    }

    /// Lets the label join catch up with the clock and hands what it
    /// reported to the sinks.
    fn advance_performance(&mut self) -> Result<()> {
        let Some(t) = &mut self.performance else {
            return Ok(());
        };
        t.advance()?;
        self.emit_performance()
    }

    fn emit_performance(&mut self) -> Result<()> {
        let Some(t) = &mut self.performance else {
            return Ok(());
        };
        let out = t.drain();
        self.summary.performance = Some(t.stats().clone());
        if out.is_empty() {
            return Ok(());
        }
        self.emit_rows(Emitted::try_from(out)?)
    }

    /// Reads a whole source; `progress` is told after each batch of
    /// records how far the source is (its [`Source::progress`]: done, total).
    ///
    /// The source is read, and its records decoded and validated, on a
    /// thread of their own, a batch at a time, while this thread runs the
    /// windows, the label join and the sinks. The records arrive here in
    /// the order the source gives them, so the results are those of reading
    /// and handling one record after the other.
    pub fn run_source(
        &mut self,
        source: &mut dyn Source,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<()> {
        let started = Instant::now();
        let read_before = self.summary.read;
        // the decoder (its interned names) goes with the reading thread and
        // comes back with it
        let stand_in = Decoder::new(self.decoder.config().clone());
        let mut decoder = std::mem::replace(&mut self.decoder, stand_in);
        let name = source.name().to_owned();
        let handled = std::thread::scope(|scope| {
            let (batches, ready) = std::sync::mpsc::sync_channel(DECODE_QUEUE);
            let (recycle, spare) = std::sync::mpsc::channel();
            let decoder = &mut decoder;
            let reader = std::thread::Builder::new()
                .name("driftwatch-decode".into())
                .spawn_scoped(scope, move || {
                    decode_ahead(source, decoder, &batches, &spare);
                })
                .map_err(|e| Error::Stopped(format!("starting the decoding thread: {e}")))?;
            let mut handled = Ok(());
            // ends once the reader has sent its last batch and hung up
            for batch in &ready {
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        handled = Err(e.into());
                        break;
                    }
                };
                let result = batch
                    .records
                    .iter()
                    .try_for_each(|r| self.handle_ref(r).map(drop));
                if let Err(e) = result {
                    handled = Err(e);
                    break;
                }
                progress(batch.done, batch.total);
                // the records go back to be dropped where they were made:
                // frees from another thread contend for the allocator's
                // locks (once the reader has stopped, they are dropped here)
                let _ = recycle.send(batch.records);
            }
            // a reader still sending stops at its next batch
            drop(ready);
            reader
                .join()
                .map_err(|_| Error::Stopped("the decoding thread panicked".into()))?;
            handled
        });
        self.decoder = decoder;
        handled?;
        let read = self.summary.read - read_before;
        let secs = started.elapsed().as_secs_f64();
        info!(
            source = name,
            read,
            seconds = format!("{secs:.2}"),
            events_per_second = (read as f64 / secs.max(1e-9)) as u64,
            "source done"
        );
        Ok(())
    }

    /// Handles one generated payload as if it had been read from a source.
    pub fn handle_bytes(&mut self, seq: u64, bytes: &[u8]) -> Result<()> {
        self.handle_at(Position::Generated { seq }, bytes)
            .map(|_| ())
    }

    /// Decodes and handles one JSON event found at `position`.
    pub fn handle_at(&mut self, position: Position, bytes: &[u8]) -> Result<Outcome> {
        let record = Record::from_json(&mut self.decoder, position, bytes);
        self.handle(record)
    }

    /// Closes every open window now (the end of a bounded run), keeping the
    /// pipeline usable.
    pub fn close_all(&mut self) -> Result<()> {
        let closed = self.windows.close_all()?;
        self.emit(closed)?;
        if let Some(t) = &mut self.performance {
            t.finish_all()?;
        }
        self.emit_performance()?;
        if let Some(r) = &mut self.rules {
            r.settle_and_wait()?;
        }
        Ok(())
    }

    /// Makes every dead letter sent so far durable (before a checkpoint).
    pub fn flush_dead_letters(&mut self) -> Result<()> {
        self.dead_letter.flush().map_err(Error::DeadLetter)
    }

    /// The decoder, for sources that decode records themselves.
    pub fn decoder(&mut self) -> &mut driftwatch_ingest::Decoder {
        &mut self.decoder
    }

    /// Counters so far.
    pub fn summary(&self) -> &RunSummary {
        &self.summary
    }

    /// The state to checkpoint: window state, the label join, counters.
    pub fn snapshot(&mut self) -> Result<PipelineState> {
        // the checkpoint covers every window the sinks were handed
        for sink in &mut self.sinks {
            sink.sync()?;
        }
        let performance = match &mut self.performance {
            Some(t) => Some(t.snapshot()?),
            None => None,
        };
        let rules = match &mut self.rules {
            Some(r) => Some(r.snapshot()?),
            None => None,
        };
        self.summary.rules = self.rules.as_ref().map(|r| r.stats().clone());
        Ok(PipelineState {
            windows: self.windows.snapshot()?,
            performance,
            rules,
            summary: self.summary.clone(),
        })
    }

    /// The checkpoint of the last [`snapshot`](Self::snapshot) is saved.
    pub fn checkpoint_saved(&mut self) -> Result<()> {
        match &mut self.rules {
            Some(r) => Ok(r.checkpoint_saved()?),
            None => Ok(()),
        }
    }

    /// Continues from a [`snapshot`](Self::snapshot).
    pub fn restore(&mut self, state: PipelineState) -> Result<()> {
        self.windows.restore(&state.windows)?;
        match (&mut self.performance, &state.performance) {
            (Some(t), Some(bytes)) => t.restore(bytes)?,
            (None, None) => {}
            (Some(_), None) => {
                return Err(Error::Config(
                    "the checkpoint was written with performance metrics off; they are on now (performance.enabled)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "the checkpoint was written with performance metrics on; they are off now (performance.enabled)".into(),
                ));
            }
        }
        if let (Some(r), Some(state)) = (&mut self.rules, &state.rules) {
            r.restore(state)?;
        }
        let dead_letter = std::mem::take(&mut self.summary.dead_letter);
        self.summary = RunSummary {
            dead_letter,
            ..state.summary
        };
        Ok(())
    }

    /// End of input: closes every window, flushes the sinks, returns the summary.
    pub fn finish(mut self) -> Result<RunSummary> {
        self.close_all()?;
        for sink in &mut self.sinks {
            sink.finish()?;
        }
        if let Some(r) = &mut self.rules {
            r.flush()?;
            self.summary.rules = Some(r.stats().clone());
        }
        self.dead_letter.flush().map_err(Error::DeadLetter)?;
        debug_assert_eq!(
            self.summary.read,
            self.summary.accepted + self.summary.rejected
        );
        Ok(self.summary)
    }
}

/// Records read and decoded ahead of the event thread, in the source's order.
struct Decoded {
    records: Vec<Record>,
    /// [`Source::progress`] after the last of them.
    done: u64,
    total: u64,
}

/// Records a [`Decoded`] batch holds at most.
const DECODE_BATCH: usize = 256;
/// Batches decoded ahead at most (the decoding thread waits beyond).
const DECODE_QUEUE: usize = 2;

/// Reads `source` to its end in batches sent on `batches`, reusing the
/// vectors that come back on `spare`; a read error is the last message.
/// Stops early once the event thread has hung up.
fn decode_ahead(
    source: &mut dyn Source,
    decoder: &mut Decoder,
    batches: &std::sync::mpsc::SyncSender<driftwatch_ingest::Result<Decoded>>,
    spare: &std::sync::mpsc::Receiver<Vec<Record>>,
) {
    loop {
        let mut records = match spare.try_recv() {
            Ok(mut handled) => {
                handled.clear();
                handled
            }
            Err(_) => Vec::with_capacity(DECODE_BATCH),
        };
        let mut failed = None;
        while records.len() < DECODE_BATCH {
            match source.next_record(decoder) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let last = failed.is_some() || records.len() < DECODE_BATCH;
        if !records.is_empty() {
            let (done, total) = source.progress();
            if batches
                .send(Ok(Decoded {
                    records,
                    done,
                    total,
                }))
                .is_err()
            {
                return;
            }
        }
        if let Some(e) = failed {
            let _ = batches.send(Err(e));
        }
        if last {
            return;
        }
    }
}

/// Format of checkpoints of [`PipelineState`]: changes whenever its
/// encoding does (4: the run summary counts refusals not written to the
/// dead-letter sink; 5: the rule runner keeps the model versions).
pub const CHECKPOINT_FORMAT: u32 = 5;

/// A pipeline's checkpointed state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineState {
    /// [`WindowSet::snapshot`].
    pub windows: Vec<u8>,
    /// [`PerformanceTracker::snapshot`], when performance metrics are on.
    pub performance: Option<Vec<u8>>,
    /// Rule state and the history flush it includes, when rules run.
    #[serde(default)]
    pub rules: Option<RulesState>,
    /// Counters.
    pub summary: RunSummary,
}

impl RunSummary {
    /// Adds another run's counts (of other partitions) to these.
    pub fn add(&mut self, other: &RunSummary) {
        self.read += other.read;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        for (reason, n) in &other.rejected_by_reason {
            *self.rejected_by_reason.entry(reason.clone()).or_default() += n;
        }
        self.predictions += other.predictions;
        self.labels += other.labels;
        self.windows_closed += other.windows_closed;
        if let Some(p) = &other.performance {
            self.performance.get_or_insert_default().add(p);
        }
        if let Some(r) = &other.rules {
            let mine = self.rules.get_or_insert_default();
            mine.evaluations += r.evaluations;
            for (rule, n) in &r.instances {
                *mine.instances.entry(rule.clone()).or_default() += n;
            }
            for (rule, n) in &r.errors {
                *mine.errors.entry(rule.clone()).or_default() += n;
            }
        }
        for (model, c) in &other.models {
            let mine = self.models.entry(model.clone()).or_default();
            mine.predictions += c.predictions;
            mine.labels += c.labels;
            mine.late += c.late;
        }
    }

    /// Writes the summary as JSON (whole or not at all: a reader polling
    /// for it never sees half of one).
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Encode {
            what: "the run summary",
            message: e.to_string(),
        })?;
        crate::checkpoint::write_atomically(path, text.as_bytes())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use driftwatch_detectors::About;
    use driftwatch_detectors::performance::PerformanceConfig;
    use driftwatch_detectors::{DriftConfig, Limits, WindowSpec};
    use driftwatch_ingest::synth::{Synth, SynthConfig};
    use driftwatch_ingest::{DecoderConfig, Event, KafkaConfig};

    use super::*;
    use crate::{DataDir, SqlConfig};

    /// Everything on but rules, with no clock: the synthetic stream's times
    /// are all accepted.
    pub(crate) fn config(dir: &Path) -> Config {
        Config {
            data_dir: DataDir::new(dir),
            window: WindowSpec::tumbling(3_600_000).expect("a valid window"),
            allowed_lateness_ms: 300_000,
            decoder: DecoderConfig {
                max_future_skew_ms: None,
                ..DecoderConfig::default()
            },
            dead_letter_max_bytes: 1 << 20,
            limits: Limits::default(),
            drift: Some(DriftConfig::default()),
            kafka: KafkaConfig::default(),
            checkpoint_interval_ms: 10_000,
            checkpoint_events: 100_000,
            performance: Some(PerformanceConfig::default()),
            sql: SqlConfig {
                rules_dir: dir.join("rules"),
                limits: driftwatch_sql::Limits::default(),
                history: false,
                history_cache_bytes: 0,
                events_retention_ms: None,
            },
            actions: Default::default(),
            action_set: Default::default(),
            audit_sync: driftwatch_triggers::AuditSync::None,
            public_url: None,
        }
    }

    /// What reached the sinks and the dead-letter sink, as text.
    #[derive(Default, Clone)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl Seen {
        fn push(&self, line: String) {
            self.0.lock().expect("not poisoned").push(line);
        }
        fn lines(&self) -> Vec<String> {
            self.0.lock().expect("not poisoned").clone()
        }
    }

    impl WindowSink for Seen {
        fn emit(&mut self, rows: &Emitted) -> Result<()> {
            for (name, batch) in &rows.tables {
                let table = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))
                    .expect("printable");
                let about = match &rows.about {
                    About::Closed { key, .. } => format!("window {key:?}"),
                    About::Revised(r) => format!("revised {r:?}"),
                };
                self.push(format!("{about} {name}\n{table}"));
            }
            Ok(())
        }
    }

    impl DeadLetterSink for Seen {
        fn send(&mut self, rejected: &Rejected) -> driftwatch_ingest::Result<()> {
            self.push(format!("{} {}", rejected.position, rejected.reason.code()));
            Ok(())
        }
        fn flush(&mut self) -> driftwatch_ingest::Result<()> {
            Ok(())
        }
    }

    fn pipeline(config: &Config, seen: &Seen, dead: &Seen) -> Pipeline {
        Pipeline::new(
            config,
            Box::new(dead.clone()),
            "memory".into(),
            vec![Box::new(seen.clone())],
            None,
            None,
        )
        .expect("pipeline")
    }

    /// The synthetic stream of `n` events, as the bytes a source reads.
    pub(crate) fn stream(n: u64) -> Vec<Vec<u8>> {
        Synth::new(SynthConfig::for_events(n, 7))
            .take(n as usize)
            .map(|e: Event| {
                let mut buf = Vec::new();
                driftwatch_ingest::encode_json(&e, &mut buf);
                buf
            })
            .collect()
    }

    #[test]
    fn every_record_read_is_counted_once_as_accepted_or_refused_with_its_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (seen, dead) = (Seen::default(), Seen::default());
        let mut p = pipeline(&config(dir.path()), &seen, &dead);
        let events = stream(3_000);
        for (seq, bytes) in events.iter().enumerate() {
            p.handle_bytes(seq as u64, bytes).expect("handled");
        }
        p.handle_bytes(90_000, b"{not json")
            .expect("refused, not an error");
        p.handle_bytes(90_001, br#"{"model_id":"m"}"#)
            .expect("refused, not an error");
        // a prediction far behind the watermark: late
        let mut late: serde_json::Value = events
            .iter()
            .map(|e| serde_json::from_slice::<serde_json::Value>(e).expect("json"))
            .find(|e| e.get("prediction").is_some())
            .expect("a prediction");
        late["event_id"] = "late".into();
        late["timestamp"] = "2000-01-01T00:00:00Z".into();
        p.handle_bytes(90_002, late.to_string().as_bytes())
            .expect("refused, not an error");
        let summary = p.finish().expect("finished");
        assert_eq!(summary.read, 3_003);
        assert_eq!(summary.read, summary.accepted + summary.rejected);
        assert_eq!(summary.rejected, 3, "{:?}", summary.rejected_by_reason);
        assert_eq!(summary.rejected_by_reason.get("late_event"), Some(&1));
        assert_eq!(summary.predictions + summary.labels, summary.accepted);
        let models_late: u64 = summary.models.values().map(|m| m.late).sum();
        assert_eq!(models_late, 1);
        let dead = dead.lines();
        assert_eq!(dead.len(), 3, "{dead:?}");
        assert!(dead.iter().all(|l| l.contains("generated")), "{dead:?}");
        assert!(summary.windows_closed > 0);
        let windows = seen
            .lines()
            .iter()
            .filter(|l| l.starts_with("window") && l.contains(" window_summary\n"))
            .count() as u64;
        assert_eq!(windows, summary.windows_closed);
        let performance = summary.performance.expect("performance on");
        assert!(performance.labels.joined > 0 && performance.revisions > 0);
    }

    /// Gives the records of `lines`, as a file source would, then fails
    /// at `fail_at` records when set.
    struct Lines {
        lines: Vec<Vec<u8>>,
        next: usize,
        fail_at: Option<usize>,
    }

    impl Source for Lines {
        fn next_record(
            &mut self,
            decoder: &mut Decoder,
        ) -> driftwatch_ingest::Result<Option<Record>> {
            if Some(self.next) == self.fail_at {
                return Err(driftwatch_ingest::Error::Io {
                    path: "lines.jsonl".into(),
                    source: std::io::Error::other("the disk went away"),
                });
            }
            let Some(bytes) = self.lines.get(self.next) else {
                return Ok(None);
            };
            let position = Position::Generated {
                seq: self.next as u64,
            };
            self.next += 1;
            Ok(Some(Record::from_json(decoder, position, bytes)))
        }
        fn progress(&self) -> (u64, u64) {
            (self.next as u64, self.lines.len() as u64)
        }
        fn name(&self) -> &str {
            "lines"
        }
    }

    #[test]
    fn a_source_decoded_on_its_own_thread_gives_what_handling_each_record_in_turn_gives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        let mut lines = stream(3_000);
        lines.insert(1_234, b"{not json".to_vec());
        let (seen, dead) = (Seen::default(), Seen::default());
        let mut p = pipeline(&config, &seen, &dead);
        for (seq, bytes) in lines.iter().enumerate() {
            p.handle_bytes(seq as u64, bytes).expect("handled");
        }
        let expected = (p.finish().expect("finished"), seen.lines(), dead.lines());

        let (seen, dead) = (Seen::default(), Seen::default());
        let mut p = pipeline(&config, &seen, &dead);
        let mut told = Vec::new();
        let mut source = Lines {
            lines,
            next: 0,
            fail_at: None,
        };
        p.run_source(&mut source, &mut |done, total| told.push((done, total)))
            .expect("read to the end");
        let got = (p.finish().expect("finished"), seen.lines(), dead.lines());
        assert_eq!(got.0, expected.0);
        assert_eq!(got.1, expected.1);
        assert_eq!(got.2, expected.2);
        // a batch at a time, the last at the end of the source
        assert_eq!(told.len(), 3_001usize.div_ceil(DECODE_BATCH));
        assert_eq!(told.last(), Some(&(3_001, 3_001)));
    }

    #[test]
    fn a_read_error_ends_the_source_after_the_records_read_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (seen, dead) = (Seen::default(), Seen::default());
        let mut p = pipeline(&config(dir.path()), &seen, &dead);
        let lines = stream(3_000);
        let mut source = Lines {
            lines: lines.clone(),
            next: 0,
            fail_at: Some(1_000),
        };
        let e = p
            .run_source(&mut source, &mut |_, _| {})
            .expect_err("the read fails");
        assert!(e.to_string().contains("the disk went away"), "{e}");
        assert_eq!(p.summary().read, 1_000);
        // the pipeline goes on with the records read again from there
        for (seq, bytes) in lines.iter().enumerate().skip(1_000) {
            p.handle_bytes(seq as u64, bytes).expect("handled");
        }
        assert_eq!(p.finish().expect("finished").read, 3_000);
    }

    #[test]
    fn a_pipeline_restored_from_a_snapshot_goes_on_as_if_never_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        let events = stream(6_000);
        let run = |stop_at: Option<usize>| {
            let (seen, dead) = (Seen::default(), Seen::default());
            let mut p = pipeline(&config, &seen, &dead);
            for (seq, bytes) in events.iter().enumerate() {
                if Some(seq) == stop_at {
                    let state = p.snapshot().expect("snapshot");
                    p.checkpoint_saved().expect("saved");
                    // the state as a checkpoint holds it
                    let bytes = postcard::to_stdvec(&state).expect("encodes");
                    let state: PipelineState = postcard::from_bytes(&bytes).expect("decodes");
                    drop(p);
                    p = pipeline(&config, &seen, &dead);
                    p.restore(state).expect("restored");
                }
                p.handle_bytes(seq as u64, bytes).expect("handled");
            }
            let summary = p.finish().expect("finished");
            (seen.lines(), summary)
        };
        let (whole, whole_summary) = run(None);
        assert!(whole.len() > 20, "{}", whole.len());
        for stop_at in [1, 2_345, 5_999] {
            let (resumed, summary) = run(Some(stop_at));
            assert_eq!(summary, whole_summary, "stopped at {stop_at}");
            assert_eq!(resumed.len(), whole.len(), "stopped at {stop_at}");
            for (i, (a, b)) in resumed.iter().zip(&whole).enumerate() {
                assert_eq!(a, b, "stopped at {stop_at}: output {i} differs");
            }
        }
    }

    #[test]
    fn a_checkpoint_taken_with_performance_metrics_on_is_refused_with_them_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let on = config(dir.path());
        let (seen, dead) = (Seen::default(), Seen::default());
        let mut p = pipeline(&on, &seen, &dead);
        for (seq, bytes) in stream(100).iter().enumerate() {
            p.handle_bytes(seq as u64, bytes).expect("handled");
        }
        let state = p.snapshot().expect("snapshot");
        let off = Config {
            performance: None,
            ..on
        };
        let mut p = pipeline(&off, &seen, &dead);
        let err = p.restore(state).expect_err("refused");
        assert!(err.to_string().contains("performance.enabled"), "{err}");
    }
}
