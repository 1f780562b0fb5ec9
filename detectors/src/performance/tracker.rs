//! The label join and the per-window performance metrics it feeds.
//!
//! ```text
//! prediction ─► pending store (event_id → outcome) ◄─ label (either order)
//!                     │ joined
//!                     ▼
//!   metrics of the prediction's window(s) ─► revisions (model_metrics)
//!   error stream of (model, version)      ─► ADWIN / Page-Hinkley / DDM ─► change_points
//!   every label's fate                    ─► label_stats
//! ```
//!
//! Time is the stream's: the clock is the largest event time seen
//! (predictions and labels) minus the allowed lateness. A prediction window's
//! metrics are first reported when the window closes (revision 0, with the
//! labels that have arrived by then), then again at 1, 2, 4, 8, …
//! `revision_interval`s after its end when new labels arrived, and a last
//! time (`final`) once the clock passes the window's end plus
//! `label_horizon`. Its pending predictions then
//! expire: they are counted as `expired_unlabeled`, and a small tombstone
//! stays for another horizon so that a label arriving after it is counted as
//! `after_horizon`, not as a label without a prediction.
//!
//! Every label ends in exactly one bucket of `label_stats`: `joined`,
//! `duplicate`, `without_prediction` (waited a horizon for a prediction that
//! never came), `after_horizon`, or `unscorable` (a class label for a
//! regression model, or a number for a classifier).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use driftwatch_ingest::event::{ARROW_TIMEZONE, arrow_time_type};
use driftwatch_ingest::{EventTime, Label, LabelEvent, PredictionEvent};
use serde::{Deserialize, Serialize};

use super::change::{Adwin, AdwinConfig, Ddm, DdmConfig, PageHinkley, PageHinkleyConfig};
use super::metrics::{Metrics, Outcome, Task, Unscorable};
use super::store::{Entry, Expiry, PendingStore, StoreConfig, StoredLabel, WaitingLabel};
use crate::error::{Error, Result};
use crate::window::{Watermark, WindowSpec};
use crate::windows::{WindowKey, key_fields};

/// Settings of the label join and the performance metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct PerformanceConfig {
    /// How long after a window's end its metrics are still revised by labels (ms).
    pub label_horizon_ms: i64,
    /// A window's first revision after it closed is due this long after its
    /// end, each later one twice as long after the end as the one before (ms).
    pub revision_interval_ms: i64,
    /// Task per model id; models not listed take the task their first
    /// prediction's shape suggests ([`Task::infer`]).
    pub tasks: HashMap<String, Task>,
    /// ADWIN over each (model, version)'s error stream; `None`: off.
    pub adwin: Option<AdwinConfig>,
    /// Page-Hinkley over classifiers' 0/1 error streams; `None`: off.
    pub page_hinkley: Option<PageHinkleyConfig>,
    /// DDM over classifiers' 0/1 error streams; `None`: off.
    pub ddm: Option<DdmConfig>,
    /// ADWIN over the series of final per-window accuracy (classifiers) or
    /// MAE (regression); `None`: off.
    pub window_adwin: Option<AdwinConfig>,
    /// Where pending predictions are kept.
    pub store: StoreConfig,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        PerformanceConfig {
            label_horizon_ms: 7 * 24 * 3_600_000,
            revision_interval_ms: 3_600_000,
            tasks: HashMap::new(),
            adwin: Some(AdwinConfig::default()),
            page_hinkley: Some(PageHinkleyConfig::default()),
            ddm: Some(DdmConfig::default()),
            window_adwin: Some(AdwinConfig::default()),
            store: StoreConfig::default(),
        }
    }
}

/// Where each label ended up, per model, counted in the window of the clock
/// when it was resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelCounts {
    /// Labels that arrived.
    pub received: u64,
    /// Joined to their prediction and scored.
    pub joined: u64,
    /// Of those, labels that arrived before their prediction.
    pub joined_before_prediction: u64,
    /// A second (or later) label for the same prediction; ignored.
    pub duplicate: u64,
    /// No prediction arrived within the label horizon.
    pub without_prediction: u64,
    /// The prediction's window had passed its label horizon.
    pub after_horizon: u64,
    /// The label's kind does not fit the model's task.
    pub unscorable: u64,
}

impl LabelCounts {
    fn is_empty(&self) -> bool {
        *self == LabelCounts::default()
    }

    /// Adds `other`'s counts (of another partition).
    pub fn add(&mut self, other: &LabelCounts) {
        self.received += other.received;
        self.joined += other.joined;
        self.joined_before_prediction += other.joined_before_prediction;
        self.duplicate += other.duplicate;
        self.without_prediction += other.without_prediction;
        self.after_horizon += other.after_horizon;
        self.unscorable += other.unscorable;
    }
}

impl PerformanceStats {
    /// Adds `other`'s counts (of another partition).
    pub fn add(&mut self, other: &PerformanceStats) {
        self.labels.add(&other.labels);
        self.expired_unlabeled += other.expired_unlabeled;
        self.duplicate_predictions += other.duplicate_predictions;
        self.revisions += other.revisions;
        self.change_points += other.change_points;
    }
}

/// Counters of the whole tracker (all models, all windows so far).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerformanceStats {
    /// Label fates.
    pub labels: LabelCounts,
    /// Predictions whose window passed its horizon without a label.
    pub expired_unlabeled: u64,
    /// Predictions with an `event_id` already seen (not joined again).
    pub duplicate_predictions: u64,
    /// Revisions of window metrics reported.
    pub revisions: u64,
    /// Change points reported.
    pub change_points: u64,
}

/// One window's labelled-prediction state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PerfWindow {
    predictions: u64,
    labeled: u64,
    duplicate_labels: u64,
    duplicate_predictions: u64,
    unscorable_labels: u64,
    metrics: Metrics,
    /// next revision number; 0 until the window closed
    revision: u32,
    /// revision 0 was reported (the prediction window closed)
    closed: bool,
    /// labels joined since the last revision
    dirty: bool,
}

/// Change detectors of one (model, version).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Detectors {
    adwin: Option<Adwin>,
    page_hinkley: Option<PageHinkley>,
    ddm: Option<Ddm>,
    window_adwin: Option<Adwin>,
    /// observations since each detector last started: ADWIN, Page-Hinkley, DDM
    observed: [u64; 3],
    windows_observed: u64,
}

/// A change found by an online detector.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePoint {
    /// Model id.
    pub model_id: Arc<str>,
    /// Model version.
    pub model_version: Option<Arc<str>>,
    /// The stream: `error_rate`, `absolute_error`, `window_accuracy`, `window_mae`.
    pub metric: &'static str,
    /// `adwin`, `page_hinkley` or `ddm`.
    pub detector: &'static str,
    /// Event time of the observation that triggered it (the prediction's,
    /// or the window end for window series).
    pub event_time: EventTime,
    /// The stream's clock when it was found.
    pub detected_at: EventTime,
    /// The detector's statistic (ADWIN: difference of the two sub-window
    /// means; Page-Hinkley: cumulative deviation; DDM: standard deviations
    /// above the best error rate).
    pub statistic: f64,
    /// Observations the detector had seen since it last started.
    pub observations: u64,
}

/// One revision of a window's metrics, as `model_metrics` rows.
#[derive(Debug, Clone)]
pub struct MetricsRevision {
    /// The prediction window.
    pub key: WindowKey,
    /// 0 when the window closed, then 1, 2, …
    pub revision: u32,
    /// The last revision: the label horizon has passed (or the input ended).
    pub is_final: bool,
    /// Predictions in the window, and how many of them are labelled.
    pub predictions: u64,
    /// Labelled predictions.
    pub labeled: u64,
    /// The rows (schema [`model_metrics_schema`]).
    pub batch: RecordBatch,
}

/// What the tracker reported since it was last drained.
#[derive(Debug, Clone, Default)]
pub struct PerformanceOutput {
    /// Metric revisions, in the order they were made.
    pub revisions: Vec<MetricsRevision>,
    /// Change points found.
    pub change_points: Vec<ChangePoint>,
    /// `label_stats` rows of label windows that ended.
    pub label_stats: Vec<(Arc<str>, EventTime, EventTime, LabelCounts, u64)>,
}

impl PerformanceOutput {
    /// Whether there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.revisions.is_empty() && self.change_points.is_empty() && self.label_stats.is_empty()
    }
}

/// The schema of the `model_metrics` table (key columns first).
pub fn model_metrics_schema() -> SchemaRef {
    let mut fields = key_fields();
    fields.extend([
        Field::new("revision", DataType::UInt32, false),
        Field::new("final", DataType::Boolean, false),
        Field::new("as_of", arrow_time_type(), false),
        Field::new("task", DataType::Utf8, false),
        Field::new("predictions", DataType::UInt64, false),
        Field::new("labeled", DataType::UInt64, false),
        Field::new("label_coverage", DataType::Float64, false),
        Field::new("duplicate_labels", DataType::UInt64, false),
        Field::new("duplicate_predictions", DataType::UInt64, false),
        Field::new("unscorable_labels", DataType::UInt64, false),
        Field::new("expired_unlabeled", DataType::UInt64, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("class", DataType::Utf8, true),
        Field::new("predicted_class", DataType::Utf8, true),
        Field::new("value", DataType::Float64, true),
    ]);
    Arc::new(Schema::new(fields))
}

/// The schema of the `change_points` table.
pub fn change_points_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("model_id", DataType::Utf8, false),
        Field::new("model_version", DataType::Utf8, true),
        Field::new("metric", DataType::Utf8, false),
        Field::new("detector", DataType::Utf8, false),
        Field::new("event_time", arrow_time_type(), false),
        Field::new("detected_at", arrow_time_type(), false),
        Field::new("statistic", DataType::Float64, false),
        Field::new("observations", DataType::UInt64, false),
    ]))
}

/// The schema of the `label_stats` table.
pub fn label_stats_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("model_id", DataType::Utf8, false),
        Field::new("window_start", arrow_time_type(), false),
        Field::new("window_end", arrow_time_type(), false),
        Field::new("received", DataType::UInt64, false),
        Field::new("joined", DataType::UInt64, false),
        Field::new("joined_before_prediction", DataType::UInt64, false),
        Field::new("duplicate", DataType::UInt64, false),
        Field::new("without_prediction", DataType::UInt64, false),
        Field::new("after_horizon", DataType::UInt64, false),
        Field::new("unscorable", DataType::UInt64, false),
        Field::new("waiting", DataType::UInt64, false),
    ]))
}

fn times(v: Vec<EventTime>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(v).with_timezone(ARROW_TIMEZONE))
}

/// `change_points` rows.
pub fn change_points_batch(points: &[ChangePoint]) -> Result<RecordBatch, ArrowError> {
    RecordBatch::try_new(
        change_points_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                points.iter().map(|p| p.model_id.as_ref()),
            )),
            Arc::new(StringArray::from_iter(
                points.iter().map(|p| p.model_version.as_deref()),
            )),
            Arc::new(StringArray::from_iter_values(
                points.iter().map(|p| p.metric),
            )),
            Arc::new(StringArray::from_iter_values(
                points.iter().map(|p| p.detector),
            )),
            times(points.iter().map(|p| p.event_time).collect()),
            times(points.iter().map(|p| p.detected_at).collect()),
            Arc::new(Float64Array::from_iter_values(
                points.iter().map(|p| p.statistic),
            )),
            Arc::new(UInt64Array::from_iter_values(
                points.iter().map(|p| p.observations),
            )),
        ],
    )
}

/// `label_stats` rows.
pub fn label_stats_batch(
    rows: &[(Arc<str>, EventTime, EventTime, LabelCounts, u64)],
) -> Result<RecordBatch, ArrowError> {
    let col = |f: fn(&LabelCounts) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| f(&r.3))))
    };
    RecordBatch::try_new(
        label_stats_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.as_ref()),
            )),
            times(rows.iter().map(|r| r.1).collect()),
            times(rows.iter().map(|r| r.2).collect()),
            col(|c| c.received),
            col(|c| c.joined),
            col(|c| c.joined_before_prediction),
            col(|c| c.duplicate),
            col(|c| c.without_prediction),
            col(|c| c.after_horizon),
            col(|c| c.unscorable),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.4))),
        ],
    )
}

/// Key of a (model, version) series in the tracker's tables.
type SeriesKey = (Arc<str>, Option<Arc<str>>);

/// A prediction window in the tracker's tables: (series index, start, end).
type Wk = (u32, EventTime, EventTime);

/// The label join, per-window performance metrics and change detectors of
/// every model.
pub struct PerformanceTracker {
    config: PerformanceConfig,
    spec: WindowSpec,
    clock: Watermark,
    /// the window set's watermark (predictions only), to skip windows it closed
    predictions_clock: Watermark,
    tasks: HashMap<Arc<str>, Task>,
    /// (model, version) of each series index stored in pending entries
    series: Vec<SeriesKey>,
    series_index: HashMap<SeriesKey, u32>,
    detectors: Vec<Detectors>,
    /// by (series, start, end): integer keys, cheap to compare on every event
    windows: BTreeMap<Wk, PerfWindow>,
    /// per model and label window start: counts
    label_windows: HashMap<(Arc<str>, EventTime), LabelCounts, ahash::RandomState>,
    /// labels waiting for their prediction, per model
    waiting: HashMap<Arc<str>, u64>,
    store: PendingStore,
    /// clock of the next sweep of the store
    next_sweep: EventTime,
    /// clock before which [`advance`](Self::advance) has nothing to do
    next_due: EventTime,
    stats: PerformanceStats,
    out: PerformanceOutput,
    /// models whose labels of an unknown class were logged (once each)
    unknown_class_told: std::collections::HashSet<Arc<str>>,
}

impl std::fmt::Debug for PerformanceTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerformanceTracker")
            .field("clock", &self.clock)
            .field("windows", &self.windows.len())
            .field("pending", &self.store.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Format of [`PerformanceTracker::snapshot`].
const SNAPSHOT_FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    setup: String,
    clock: Watermark,
    predictions_clock: Watermark,
    tasks: Vec<(String, Task)>,
    series: Vec<(String, Option<String>)>,
    detectors: Vec<Detectors>,
    windows: Vec<(String, Option<String>, EventTime, EventTime, PerfWindow)>,
    label_windows: Vec<(String, EventTime, LabelCounts)>,
    waiting: Vec<(String, u64)>,
    next_sweep: EventTime,
    next_due: EventTime,
    stats: PerformanceStats,
    store: Vec<u8>,
}

impl PerformanceTracker {
    /// A tracker for windows of `spec`, with the watermark's lateness.
    pub fn new(config: PerformanceConfig, spec: WindowSpec, lateness_ms: i64) -> Result<Self> {
        if config.label_horizon_ms <= 0 {
            return Err(Error::Config {
                key: "performance.label_horizon",
                message: "must be longer than zero".into(),
            });
        }
        if config.revision_interval_ms <= 0 {
            return Err(Error::Config {
                key: "performance.revision_interval",
                message: "must be longer than zero".into(),
            });
        }
        let store = PendingStore::open(
            config.store.clone(),
            Expiry {
                spec,
                horizon: config.label_horizon_ms,
            },
        )?;
        Ok(PerformanceTracker {
            tasks: config
                .tasks
                .iter()
                .map(|(m, t)| (Arc::from(m.as_str()), t.clone()))
                .collect(),
            config,
            spec,
            clock: Watermark::new(lateness_ms),
            predictions_clock: Watermark::new(lateness_ms),
            series: Vec::new(),
            series_index: HashMap::new(),
            detectors: Vec::new(),
            windows: BTreeMap::new(),
            label_windows: HashMap::default(),
            waiting: HashMap::new(),
            store,
            next_sweep: EventTime::MIN,
            next_due: EventTime::MIN,
            stats: PerformanceStats::default(),
            out: PerformanceOutput::default(),
            unknown_class_told: Default::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> &PerformanceStats {
        &self.stats
    }

    /// Entries in the pending store (predictions awaiting labels, labels
    /// awaiting predictions, markers of labelled and expired predictions).
    pub fn pending(&self) -> usize {
        self.store.len()
    }

    /// The pending store.
    pub fn store(&self) -> &PendingStore {
        &self.store
    }

    /// The output tables: name and schema.
    pub fn tables() -> Vec<(String, SchemaRef)> {
        vec![
            ("model_metrics".into(), model_metrics_schema()),
            ("change_points".into(), change_points_schema()),
            ("label_stats".into(), label_stats_schema()),
        ]
    }

    fn series_of(&mut self, model: &Arc<str>, version: &Option<Arc<str>>) -> u32 {
        if let Some(&i) = self.series_index.get(&(Arc::clone(model), version.clone())) {
            return i;
        }
        let i = self.series.len() as u32;
        let key = (Arc::clone(model), version.clone());
        self.series.push(key.clone());
        self.series_index.insert(key, i);
        let c = &self.config;
        self.detectors.push(Detectors {
            adwin: c.adwin.map(Adwin::new),
            page_hinkley: c.page_hinkley.map(PageHinkley::new),
            ddm: c.ddm.map(Ddm::new),
            window_adwin: c.window_adwin.map(Adwin::new),
            observed: [0; 3],
            windows_observed: 0,
        });
        i
    }

    fn now(&self) -> EventTime {
        self.clock.current().unwrap_or(EventTime::MIN)
    }

    /// A label of `model` no longer waits for its prediction.
    fn stop_waiting(&mut self, model: &Arc<str>) {
        if let Some(n) = self.waiting.get_mut(model) {
            *n = n.saturating_sub(1);
        }
    }

    /// Counts one label of `model` in bucket `bucket`, in its label window
    /// and in the totals.
    fn count_label(&mut self, model: &Arc<str>, bucket: fn(&mut LabelCounts) -> &mut u64) {
        *bucket(self.label_counts(model)) += 1;
        *bucket(&mut self.stats.labels) += 1;
    }

    fn label_counts(&mut self, model: &Arc<str>) -> &mut LabelCounts {
        let size = self.spec.size();
        let start = self.now().max(EventTime::MIN + size).div_euclid(size) * size;
        self.next_due = self.next_due.min(start.saturating_add(size));
        self.label_windows
            .entry((Arc::clone(model), start))
            .or_default()
    }

    /// Takes an accepted prediction: counts it in its windows and keeps it
    /// until its label arrives (or joins the label that came first).
    pub fn prediction(&mut self, p: &PredictionEvent) -> Result<()> {
        self.clock.observe(p.timestamp);
        self.predictions_clock.observe(p.timestamp);
        match self.tasks.get_mut(&p.model_id) {
            None => {
                let mut task = Task::infer(&p.prediction);
                task.learn_classes(&p.prediction);
                self.tasks.insert(Arc::clone(&p.model_id), task);
            }
            // a binary task not configured learns its class names from
            // predictions that carry a class and a score
            Some(task)
                if task.learns_from(&p.prediction)
                    && !self.config.tasks.contains_key(&*p.model_id) =>
            {
                task.learn_classes(&p.prediction);
            }
            Some(_) => {}
        }
        let series = self.series_of(&p.model_id, &p.model_version);
        let keys: Vec<Wk> = self.window_keys(series, p.timestamp).collect();
        let previous = self.store.get(&p.event_id)?;
        let duplicate = previous
            .as_ref()
            .is_some_and(|e| !matches!(e, Entry::Label { .. }));
        let closed_before = self.predictions_clock.current().unwrap_or(EventTime::MIN);
        let horizon = self.config.label_horizon_ms;
        for key in keys.iter().filter(|k| k.2 > closed_before) {
            self.next_due = self.next_due.min(key.2.saturating_add(horizon));
            let w = self.windows.entry(*key).or_default();
            if duplicate {
                w.duplicate_predictions += 1;
            } else {
                w.predictions += 1;
            }
        }
        if duplicate {
            self.stats.duplicate_predictions += 1;
            return Ok(());
        }
        let outcome = Box::new(Outcome::from(&p.prediction));
        if let Some(Entry::Label { waiting, .. }) = previous {
            if *waiting.model == *p.model_id {
                self.stop_waiting(&p.model_id);
                let label = waiting.label.to_label();
                return self.join(series, p.timestamp, &outcome, &label, &p.event_id, true);
            }
            // a label of another model under this id: that label has no prediction
            let model: Arc<str> = Arc::from(waiting.model.as_str());
            self.stop_waiting(&model);
            self.count_label(&model, |c| &mut c.without_prediction);
        }
        self.store.insert(
            &p.event_id,
            Entry::Prediction {
                series,
                time: p.timestamp,
                outcome,
            },
        )?;
        Ok(())
    }

    fn window_keys(&self, series: u32, t: EventTime) -> impl Iterator<Item = Wk> + use<> {
        self.spec
            .windows(t)
            .map(move |(start, end)| (series, start, end))
    }

    /// The window key of the output.
    fn key(&self, (series, start, end): Wk) -> WindowKey {
        let (model, version) = &self.series[series as usize];
        WindowKey {
            model_id: Arc::clone(model),
            model_version: version.clone(),
            start,
            end,
        }
    }

    /// Takes a label: joins it to its prediction, or keeps it until the
    /// prediction arrives.
    pub fn label(&mut self, l: &LabelEvent) -> Result<()> {
        self.clock.observe(l.timestamp);
        self.count_label(&l.model_id, |c| &mut c.received);
        // a joined prediction is replaced by a marker, and anything else is
        // put back
        match self.store.get(&l.event_id)? {
            None => {
                *self.waiting.entry(Arc::clone(&l.model_id)).or_default() += 1;
                self.store.insert(
                    &l.event_id,
                    Entry::Label {
                        time: l.timestamp,
                        waiting: Box::new(WaitingLabel {
                            model: l.model_id.as_ref().into(),
                            label: StoredLabel::from(&l.label),
                        }),
                    },
                )?;
            }
            Some(Entry::Prediction {
                series,
                time,
                outcome,
            }) if self.series[series as usize].0 == l.model_id => {
                self.join(series, time, &outcome, &l.label, &l.event_id, false)?;
            }
            Some(other) => {
                self.not_joined(&other, l);
                self.store.insert(&l.event_id, other)?;
            }
        }
        Ok(())
    }

    /// Counts a label whose id holds something other than its prediction.
    fn not_joined(&mut self, entry: &Entry, l: &LabelEvent) {
        match *entry {
            Entry::Labeled { series, time } => {
                for key in self.window_keys(series, time) {
                    if let Some(w) = self.windows.get_mut(&key) {
                        w.duplicate_labels += 1;
                    }
                }
                self.count_label(&l.model_id, |c| &mut c.duplicate);
            }
            Entry::Label { .. } | Entry::Expired { labeled: true, .. } => {
                self.count_label(&l.model_id, |c| &mut c.duplicate);
            }
            Entry::Expired { labeled: false, .. } => {
                self.count_label(&l.model_id, |c| &mut c.after_horizon);
            }
            Entry::Prediction { .. } => {
                // the id belongs to another model's prediction
                self.count_label(&l.model_id, |c| &mut c.without_prediction);
            }
        }
    }

    fn join(
        &mut self,
        series: u32,
        time: EventTime,
        outcome: &Outcome,
        label: &Label,
        event_id: &str,
        label_first: bool,
    ) -> Result<()> {
        let (model, _) = self.series[series as usize].clone();
        let task = self.tasks.get(&model).cloned().unwrap_or_else(Task::binary);
        let mut scored = None;
        for key in self.window_keys(series, time) {
            let Some(w) = self.windows.get_mut(&key) else {
                continue;
            };
            match w.metrics.add(&task, outcome, label) {
                Ok(()) => {
                    w.labeled += 1;
                    w.dirty = true;
                    if w.closed {
                        let due = revision_due(key.2, w, self.config.revision_interval_ms);
                        self.next_due = self.next_due.min(due);
                    }
                    scored = Some(true);
                }
                Err(why) => {
                    w.unscorable_labels += 1;
                    scored = Some(false);
                    if why == Unscorable::UnknownClass
                        && self.unknown_class_told.len() < 1_000
                        && let (
                            Task::Binary {
                                positive, negative, ..
                            },
                            Some(class),
                        ) = (&task, task.label_class(label))
                        && self.unknown_class_told.insert(Arc::clone(&model))
                    {
                        tracing::warn!(
                            model = %model,
                            class = %class,
                            positive_class = %positive,
                            negative_class = %negative,
                            "labels not scored: the label's class is neither the positive nor \
                             the negative class, and the predictions carry only a score; set \
                             positive_class and negative_class under [models.{model}]"
                        );
                    }
                }
            }
        }
        if scored.is_none() {
            // its windows reported their final metrics (the store's sweep has
            // not yet turned the prediction into a marker)
            self.count_label(&model, |c| &mut c.after_horizon);
            self.store.insert(
                event_id,
                Entry::Expired {
                    time,
                    labeled: true,
                },
            )?;
            return Ok(());
        }
        if scored == Some(true) {
            self.count_label(&model, |c| &mut c.joined);
            if label_first {
                self.count_label(&model, |c| &mut c.joined_before_prediction);
            }
            self.observe_error(series, time, &task, outcome, label);
        } else {
            self.count_label(&model, |c| &mut c.unscorable);
        }
        self.store
            .insert(event_id, Entry::Labeled { series, time })?;
        Ok(())
    }

    fn observe_error(
        &mut self,
        series: u32,
        time: EventTime,
        task: &Task,
        outcome: &Outcome,
        label: &Label,
    ) {
        let now = self.now();
        let d = &mut self.detectors[series as usize];
        let (metric, x, error) =
            match (Metrics::correct(task, outcome, label), label, outcome.value) {
                (Some(correct), _, _) => {
                    ("error_rate", f64::from(u8::from(!correct)), Some(!correct))
                }
                (None, Label::Value(truth), Some(predicted)) => {
                    ("absolute_error", (predicted - truth).abs(), None)
                }
                _ => return,
            };
        let mut found = Vec::new();
        let seen = &mut d.observed;
        if let Some(a) = &mut d.adwin {
            seen[0] += 1;
            if a.update(x) {
                found.push(("adwin", a.last_change(), std::mem::take(&mut seen[0])));
            }
        }
        if let Some(error) = error {
            if let Some(ph) = &mut d.page_hinkley {
                seen[1] += 1;
                if ph.update(x) {
                    found.push(("page_hinkley", ph.statistic(), std::mem::take(&mut seen[1])));
                }
            }
            if let Some(ddm) = &mut d.ddm {
                seen[2] += 1;
                if ddm.update(error) {
                    found.push(("ddm", ddm.statistic(), std::mem::take(&mut seen[2])));
                }
            }
        }
        let (model_id, model_version) = self.series[series as usize].clone();
        for (detector, statistic, observations) in found {
            self.stats.change_points += 1;
            self.out.change_points.push(ChangePoint {
                model_id: Arc::clone(&model_id),
                model_version: model_version.clone(),
                metric,
                detector,
                event_time: time,
                detected_at: now,
                statistic,
                observations,
            });
        }
    }

    /// The prediction windows the window set closed: reports their first
    /// revision.
    pub fn windows_closed<'a>(
        &mut self,
        keys: impl IntoIterator<Item = &'a WindowKey>,
    ) -> Result<()> {
        let now = self.now();
        for key in keys {
            let Some(&series) = self
                .series_index
                .get(&(Arc::clone(&key.model_id), key.model_version.clone()))
            else {
                continue;
            };
            let wk = (series, key.start, key.end);
            if let Some(w) = self.windows.get_mut(&wk)
                && !w.closed
            {
                w.closed = true;
                self.revise(wk, now, false)?;
            }
        }
        Ok(())
    }

    /// Moves the clock's consequences forward: due revisions, windows past
    /// their horizon, expired store entries, ended label windows.
    pub fn advance(&mut self) -> Result<()> {
        let Some(now) = self.clock.current() else {
            return Ok(());
        };
        if now < self.next_due {
            return Ok(());
        }
        let horizon = self.config.label_horizon_ms;
        let interval = self.config.revision_interval_ms;
        let due: Vec<(Wk, bool)> = self
            .windows
            .iter()
            .filter_map(|(k, w)| {
                if k.2.saturating_add(horizon) <= now {
                    Some((*k, true))
                } else if !w.closed {
                    None
                } else if w.dirty && now >= revision_due(k.2, w, interval) {
                    Some((*k, false))
                } else {
                    None
                }
            })
            .collect();
        let finalized = due.iter().any(|(_, last)| *last);
        for (key, last) in due {
            self.revise(key, now, last)?;
        }
        // entries of finalized windows become markers at once
        if finalized || now >= self.next_sweep {
            self.sweep(now)?;
            self.next_sweep = now.saturating_add(self.spec.slide());
        }
        self.emit_label_windows(now, false);
        self.next_due = self.next_work(now);
        Ok(())
    }

    /// The earliest clock at which [`advance`](Self::advance) has work.
    fn next_work(&self, now: EventTime) -> EventTime {
        let horizon = self.config.label_horizon_ms;
        let interval = self.config.revision_interval_ms;
        let windows = self.windows.iter().map(|(k, w)| {
            let last = k.2.saturating_add(horizon);
            if w.closed && w.dirty {
                last.min(revision_due(k.2, w, interval))
            } else {
                last
            }
        });
        let size = self.spec.size();
        let labels = self
            .label_windows
            .keys()
            .map(|(_, start)| start.saturating_add(size));
        windows
            .chain(labels)
            .fold(self.next_sweep, EventTime::min)
            .max(now.saturating_add(1))
    }

    /// End of a finite input: every window's last revision, every waiting
    /// label counted as without prediction, every label window reported.
    pub fn finish_all(&mut self) -> Result<()> {
        let now = self.now();
        let keys: Vec<Wk> = self.windows.keys().copied().collect();
        for key in keys {
            self.revise(key, now, true)?;
        }
        self.sweep(EventTime::MAX)?;
        self.emit_label_windows(EventTime::MAX, true);
        Ok(())
    }

    fn revise(&mut self, wk: Wk, now: EventTime, last: bool) -> Result<()> {
        let key = self.key(wk);
        let task = self
            .tasks
            .get(&key.model_id)
            .cloned()
            .unwrap_or_else(Task::binary);
        let Some(w) = self.windows.get_mut(&wk) else {
            return Ok(());
        };
        let revision = w.revision;
        w.revision += 1;
        w.dirty = false;
        let expired = if last {
            w.predictions - w.labeled.min(w.predictions)
        } else {
            0
        };
        let batch =
            revision_batch(&key, revision, last, now, &task, w, expired).map_err(|source| {
                Error::Output {
                    table: "model_metrics".into(),
                    source,
                }
            })?;
        self.out.revisions.push(MetricsRevision {
            key: key.clone(),
            revision,
            is_final: last,
            predictions: w.predictions,
            labeled: w.labeled,
            batch,
        });
        self.stats.revisions += 1;
        if last {
            self.stats.expired_unlabeled += expired;
            if let Some(w) = self.windows.remove(&wk) {
                self.observe_window(&key, &task, &w);
            }
        }
        Ok(())
    }

    fn observe_window(&mut self, key: &WindowKey, task: &Task, w: &PerfWindow) {
        let (metric, name) = match task {
            Task::Regression => ("mae", "window_mae"),
            _ => ("accuracy", "window_accuracy"),
        };
        let Some(x) = w
            .metrics
            .values(task)
            .into_iter()
            .find(|v| v.metric == metric && v.class.is_none())
            .and_then(|v| v.value)
        else {
            return;
        };
        let series = self.series_of(&key.model_id, &key.model_version);
        let now = self.now();
        let d = &mut self.detectors[series as usize];
        d.windows_observed += 1;
        if let Some(a) = &mut d.window_adwin
            && a.update(x)
        {
            let observations = d.windows_observed;
            d.windows_observed = 0;
            self.stats.change_points += 1;
            self.out.change_points.push(ChangePoint {
                model_id: Arc::clone(&key.model_id),
                model_version: key.model_version.clone(),
                metric: name,
                detector: "adwin",
                event_time: key.end,
                detected_at: now,
                statistic: a.last_change(),
                observations,
            });
        }
    }

    fn sweep(&mut self, now: EventTime) -> Result<()> {
        for model in self.store.expire(now)? {
            let model = match self
                .series
                .iter()
                .find(|(m, _)| m.as_ref() == model.as_str())
            {
                Some((m, _)) => Arc::clone(m),
                None => Arc::from(model.as_str()),
            };
            self.stop_waiting(&model);
            self.count_label(&model, |c| &mut c.without_prediction);
        }
        Ok(())
    }

    fn emit_label_windows(&mut self, now: EventTime, all: bool) {
        let size = self.spec.size();
        let mut ended: Vec<(Arc<str>, EventTime)> = self
            .label_windows
            .keys()
            .filter(|(_, start)| all || start.saturating_add(size) <= now)
            .cloned()
            .collect();
        ended.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        for key in ended {
            if let Some(counts) = self.label_windows.remove(&key)
                && !counts.is_empty()
            {
                let waiting = self.waiting.get(&key.0).copied().unwrap_or(0);
                self.out.label_stats.push((
                    key.0,
                    key.1,
                    key.1.saturating_add(size),
                    counts,
                    waiting,
                ));
            }
        }
    }

    /// Hands out what was reported since the last call.
    pub fn drain(&mut self) -> PerformanceOutput {
        std::mem::take(&mut self.out)
    }

    fn setup(&self) -> String {
        format!(
            "{:?}, lateness {} ms, horizon {} ms",
            self.spec,
            self.clock.lateness(),
            self.config.label_horizon_ms
        )
    }

    /// The whole state, serialised for a checkpoint (undrained output is not
    /// part of it: drain first).
    pub fn snapshot(&mut self) -> Result<Vec<u8>> {
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            setup: self.setup(),
            clock: self.clock,
            predictions_clock: self.predictions_clock,
            tasks: self
                .tasks
                .iter()
                .map(|(m, t)| (m.to_string(), t.clone()))
                .collect(),
            series: self
                .series
                .iter()
                .map(|(m, v)| (m.to_string(), v.as_deref().map(str::to_owned)))
                .collect(),
            detectors: self.detectors.clone(),
            windows: self
                .windows
                .iter()
                .map(|(k, w)| {
                    let k = self.key(*k);
                    (
                        k.model_id.to_string(),
                        k.model_version.as_deref().map(str::to_owned),
                        k.start,
                        k.end,
                        w.clone(),
                    )
                })
                .collect(),
            label_windows: {
                let mut v: Vec<_> = self
                    .label_windows
                    .iter()
                    .map(|((m, s), c)| (m.to_string(), *s, c.clone()))
                    .collect();
                v.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
                v
            },
            waiting: self
                .waiting
                .iter()
                .map(|(m, n)| (m.to_string(), *n))
                .collect(),
            next_sweep: self.next_sweep,
            next_due: self.next_due,
            stats: self.stats.clone(),
            store: self.store.snapshot()?,
        };
        postcard::to_stdvec(&snapshot).map_err(|e| Error::Checkpoint(e.to_string()))
    }

    /// Replaces the state with a [`snapshot`](Self::snapshot).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let s: Snapshot = postcard::from_bytes(bytes)
            .map_err(|e| Error::Checkpoint(format!("performance state unreadable: {e}")))?;
        if s.format != SNAPSHOT_FORMAT {
            return Err(Error::Checkpoint(format!(
                "performance state format {}, this build reads {SNAPSHOT_FORMAT}",
                s.format
            )));
        }
        if s.setup != self.setup() {
            return Err(Error::Checkpoint(format!(
                "performance state written for {}, now configured {}",
                s.setup,
                self.setup()
            )));
        }
        self.store.restore(&s.store)?;
        self.clock = s.clock;
        self.predictions_clock = s.predictions_clock;
        self.tasks = s
            .tasks
            .into_iter()
            .map(|(m, t)| (Arc::from(m), t))
            .collect();
        self.series = s
            .series
            .into_iter()
            .map(|(m, v)| (Arc::from(m), v.map(Arc::from)))
            .collect();
        self.series_index = self
            .series
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as u32))
            .collect();
        self.detectors = s.detectors;
        let mut windows = BTreeMap::new();
        for (m, v, start, end, w) in s.windows {
            let series = self.series_of(&Arc::from(m), &v.map(Arc::from));
            windows.insert((series, start, end), w);
        }
        self.windows = windows;
        self.label_windows = s
            .label_windows
            .into_iter()
            .map(|(m, st, c)| ((Arc::from(m), st), c))
            .collect();
        self.waiting = s
            .waiting
            .into_iter()
            .map(|(m, n)| (Arc::from(m), n))
            .collect();
        self.next_sweep = s.next_sweep;
        self.next_due = s.next_due;
        self.stats = s.stats;
        self.out = PerformanceOutput::default();
        Ok(())
    }
}

/// When revision `w.revision` (≥ 1) of a closed window is due: `interval`
/// after its end, then twice as long after each revision (1, 2, 4, … times
/// the interval), so that a window's revisions stay few however long its
/// horizon.
fn revision_due(end: EventTime, w: &PerfWindow, interval: i64) -> EventTime {
    let doublings = w.revision.saturating_sub(1).min(40);
    end.saturating_add(interval.saturating_mul(1i64 << doublings))
}

fn revision_batch(
    key: &WindowKey,
    revision: u32,
    last: bool,
    now: EventTime,
    task: &Task,
    w: &PerfWindow,
    expired: u64,
) -> Result<RecordBatch, ArrowError> {
    let mut values = vec![super::metrics::MetricValue {
        metric: "labeled",
        class: None,
        predicted: None,
        value: Some(w.labeled as f64),
    }];
    values.extend(w.metrics.values(task));
    let n = values.len();
    let coverage = if w.predictions > 0 {
        w.labeled as f64 / w.predictions as f64
    } else {
        0.0
    };
    let u64s = |x: u64| -> ArrayRef { Arc::new(UInt64Array::from(vec![x; n])) };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![key.model_id.as_ref(); n])),
        Arc::new(StringArray::from(vec![key.model_version.as_deref(); n])),
        times(vec![key.start; n]),
        times(vec![key.end; n]),
        Arc::new(UInt32Array::from(vec![revision; n])),
        Arc::new(BooleanArray::from(vec![last; n])),
        times(vec![now.max(key.end); n]),
        Arc::new(StringArray::from(vec![task.name(); n])),
        u64s(w.predictions),
        u64s(w.labeled),
        Arc::new(Float64Array::from(vec![coverage; n])),
        u64s(w.duplicate_labels),
        u64s(w.duplicate_predictions),
        u64s(w.unscorable_labels),
        u64s(expired),
        Arc::new(StringArray::from_iter_values(
            values.iter().map(|v| v.metric),
        )),
        Arc::new(StringArray::from_iter(
            values.iter().map(|v| v.class.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            values.iter().map(|v| v.predicted.as_deref()),
        )),
        Arc::new(Float64Array::from_iter(values.iter().map(|v| v.value))),
    ];
    RecordBatch::try_new(model_metrics_schema(), columns)
}
