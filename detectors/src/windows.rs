//! The set of open windows of every model: assigns predictions to windows,
//! advances the watermark, refuses late events, and closes windows.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use driftwatch_ingest::{EventTime, PredictionEvent, Reject};

use crate::component::Components;
use crate::error::{Error, Result};
use crate::window::{Watermark, WindowSpec};

/// Identifies one window of one model version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    /// Model id.
    pub model_id: Arc<str>,
    /// Model version; windows of different versions are kept apart.
    pub model_version: Option<Arc<str>>,
    /// Window start (inclusive, ms).
    pub start: EventTime,
    /// Window end (exclusive, ms).
    pub end: EventTime,
}

/// A window whose results are final.
#[derive(Debug, Clone)]
pub struct ClosedWindow {
    /// Which window.
    pub key: WindowKey,
    /// Predictions the window holds.
    pub events: u64,
    /// One batch per component, in component order, with the key columns first.
    pub tables: Vec<(String, RecordBatch)>,
}

struct OpenWindow {
    events: u64,
    states: Vec<Box<dyn Any + Send>>,
}

/// Counters of the window set.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowStats {
    /// Predictions assigned to at least one window.
    pub accepted: u64,
    /// Predictions refused as late.
    pub late: u64,
    /// Windows closed so far.
    pub closed: u64,
}

/// Bounds on the state the window set keeps, so that no input can exhaust
/// memory: a prediction past one of them is refused with
/// [`Reject::TooMany`], and the run goes on. They bound the live state:
/// a model, version or feature counts while a window of it is open. An
/// open window holds about 40 KiB of sketches per feature (estimated from
/// the peak RSS of `scripts/bench-hostile.sh`'s 10,000-model run, default
/// drift settings): the default of 1,000 models took 368 MiB there; raise
/// the limits with the memory the service has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Models with open windows.
    pub max_models: usize,
    /// Versions of one model with open windows.
    pub max_versions_per_model: usize,
    /// Open windows, all models together.
    pub max_open_windows: usize,
    /// Distinct feature names of one model version while it has open windows.
    pub max_features: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_models: 1_000,
            max_versions_per_model: 16,
            max_open_windows: 5_000,
            max_features: 1_000,
        }
    }
}

/// A model version with open windows: how many, and its feature names.
#[derive(Default)]
struct LiveSeries {
    windows: usize,
    features: ahash::HashSet<Arc<str>>,
    /// the feature names of its last prediction, in order: a prediction
    /// with the same (interned) names needs no look-up
    layout: Vec<Arc<str>>,
}

impl LiveSeries {
    /// Whether `event` has the (interned) feature names of the last
    /// prediction, in order: then none of them needs a look-up.
    fn same_layout(&self, event: &PredictionEvent) -> bool {
        self.layout.len() == event.features.len()
            && self
                .layout
                .iter()
                .zip(&event.features)
                .all(|(a, f)| Arc::ptr_eq(a, &f.name))
    }
}

type SeriesKey = (Arc<str>, Option<Arc<str>>);

/// All open windows, and the watermark that closes them.
pub struct WindowSet {
    spec: WindowSpec,
    watermark: Watermark,
    components: Components,
    open: HashMap<WindowKey, OpenWindow, ahash::RandomState>,
    limits: Limits,
    /// model versions with open windows
    live: HashMap<SeriesKey, LiveSeries, ahash::RandomState>,
    /// models with open windows, and how many of their versions have some
    live_models: HashMap<Arc<str>, usize, ahash::RandomState>,
    /// smallest end among open windows
    next_close: EventTime,
    stats: WindowStats,
}

impl std::fmt::Debug for WindowSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowSet")
            .field("spec", &self.spec)
            .field("watermark", &self.watermark)
            .field("open", &self.open.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Format of [`WindowSet::snapshot`].
const SNAPSHOT_FORMAT: u32 = 1;

/// The serialised form of a [`WindowSet`]'s state.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    format: u32,
    /// window spec and lateness, to refuse a checkpoint written with others
    setup: String,
    /// output tables of each component, to refuse a checkpoint written
    /// with other components
    tables: Vec<Vec<String>>,
    watermark: Watermark,
    stats: WindowStats,
    /// open windows, by key
    open: Vec<SnapshotWindow>,
    /// per component, what it learned across windows
    learned: Vec<Vec<u8>>,
}

/// One open window in a [`Snapshot`].
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotWindow {
    model_id: String,
    model_version: Option<String>,
    start: EventTime,
    end: EventTime,
    events: u64,
    /// one state per component
    states: Vec<Vec<u8>>,
}

/// The key columns every output table starts with.
pub fn key_fields() -> Vec<Field> {
    let ts = driftwatch_ingest::event::arrow_time_type();
    vec![
        Field::new("model_id", DataType::Utf8, false),
        Field::new("model_version", DataType::Utf8, true),
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
    ]
}

impl WindowSet {
    /// Windows of `spec`, closed `lateness_ms` after the largest event time
    /// passes their end, each running `components`.
    pub fn new(spec: WindowSpec, lateness_ms: i64, components: Components) -> Self {
        WindowSet {
            spec,
            watermark: Watermark::new(lateness_ms),
            components,
            open: HashMap::default(),
            limits: Limits::default(),
            live: HashMap::default(),
            live_models: HashMap::default(),
            next_close: EventTime::MAX,
            stats: WindowStats::default(),
        }
    }

    /// The same set with other [`Limits`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The output tables: name and full schema (key columns first).
    pub fn tables(&self) -> Vec<(String, SchemaRef)> {
        self.components
            .iter()
            .flat_map(|c| c.tables())
            .map(|(name, schema)| {
                let mut fields = key_fields();
                fields.extend(schema.fields().iter().map(|f| f.as_ref().clone()));
                (name, Arc::new(Schema::new(fields)))
            })
            .collect()
    }

    /// The current watermark.
    pub fn watermark(&self) -> Option<EventTime> {
        self.watermark.current()
    }

    /// Counters so far.
    pub fn stats(&self) -> &WindowStats {
        &self.stats
    }

    /// Number of windows open now.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// The whole state (open windows with every component's state, the
    /// watermark, counters, and what components learned), serialised for a
    /// checkpoint. [`restore`](Self::restore) on a set built with the same
    /// spec and components continues exactly where this one stood.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        let mut keys: Vec<&WindowKey> = self.open.keys().collect();
        keys.sort();
        let mut open = Vec::with_capacity(keys.len());
        for key in keys {
            let window = &self.open[key];
            let states = self
                .components
                .iter()
                .zip(&window.states)
                .map(|(c, s)| c.save_state(s.as_ref()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(Error::Checkpoint)?;
            open.push(SnapshotWindow {
                model_id: key.model_id.to_string(),
                model_version: key.model_version.as_deref().map(str::to_owned),
                start: key.start,
                end: key.end,
                events: window.events,
                states,
            });
        }
        let learned = self
            .components
            .iter()
            .map(|c| c.save_learned())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::Checkpoint)?;
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            setup: self.setup(),
            tables: self.component_tables(),
            watermark: self.watermark,
            stats: self.stats.clone(),
            open,
            learned,
        };
        postcard::to_stdvec(&snapshot).map_err(|e| Error::Checkpoint(e.to_string()))
    }

    /// Replaces this set's state with a [`snapshot`](Self::snapshot).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let s: Snapshot = postcard::from_bytes(bytes)
            .map_err(|e| Error::Checkpoint(format!("window state unreadable: {e}")))?;
        if s.format != SNAPSHOT_FORMAT {
            return Err(Error::Checkpoint(format!(
                "window state format {}, this build reads {SNAPSHOT_FORMAT}",
                s.format
            )));
        }
        if s.setup != self.setup() {
            return Err(Error::Checkpoint(format!(
                "window state written for {}, now configured {}",
                s.setup,
                self.setup()
            )));
        }
        if s.tables != self.component_tables() {
            return Err(Error::Checkpoint(format!(
                "window state written with components {:?}, now configured {:?}",
                s.tables,
                self.component_tables()
            )));
        }
        let mut open = HashMap::default();
        for w in s.open {
            let states = self
                .components
                .iter()
                .zip(&w.states)
                .map(|(c, b)| c.load_state(b))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Checkpoint(format!("window state of {}: {e}", w.model_id)))?;
            let key = WindowKey {
                model_id: Arc::from(w.model_id),
                model_version: w.model_version.map(Arc::from),
                start: w.start,
                end: w.end,
            };
            open.insert(
                key,
                OpenWindow {
                    events: w.events,
                    states,
                },
            );
        }
        for (c, bytes) in self.components.iter().zip(&s.learned) {
            c.load_learned(bytes).map_err(Error::Checkpoint)?;
        }
        self.next_close = open.keys().map(|k| k.end).min().unwrap_or(EventTime::MAX);
        self.live.clear();
        self.live_models.clear();
        for key in open.keys() {
            self.window_opened(key);
        }
        self.open = open;
        self.watermark = s.watermark;
        self.stats = s.stats;
        Ok(())
    }

    fn setup(&self) -> String {
        format!("{:?}, lateness {} ms", self.spec, self.watermark.lateness())
    }

    fn component_tables(&self) -> Vec<Vec<String>> {
        self.components
            .iter()
            .map(|c| c.tables().into_iter().map(|(n, _)| n).collect())
            .collect()
    }

    /// Adds a prediction to every window it belongs to, or refuses it as late
    /// when all of those windows have closed.
    pub fn push(&mut self, event: &PredictionEvent) -> Result<(), Reject> {
        let t = event.timestamp;
        if let Some(wm) = self.watermark.current() {
            let window_end = self.spec.last_end(t);
            if window_end <= wm {
                self.stats.late += 1;
                return Err(Reject::Late {
                    event_time: t,
                    watermark: wm,
                    window_end,
                });
            }
        }
        self.check_limits(event)?;
        self.watermark.observe(t);
        let wm = self.watermark.current().unwrap_or(EventTime::MIN);
        for (start, end) in self.spec.windows(t) {
            if end <= wm {
                // this window of a hopping set has closed; the later ones take the event
                continue;
            }
            let key = WindowKey {
                model_id: Arc::clone(&event.model_id),
                model_version: event.model_version.clone(),
                start,
                end,
            };
            let window = match self.open.get_mut(&key) {
                Some(w) => w,
                None => {
                    self.next_close = self.next_close.min(end);
                    self.window_opened(&key);
                    let states = self.components.iter().map(|c| c.new_state()).collect();
                    self.open
                        .entry(key)
                        .or_insert(OpenWindow { events: 0, states })
                }
            };
            window.events += 1;
            for (component, state) in self.components.iter().zip(window.states.iter_mut()) {
                component.update(state.as_mut(), event);
            }
        }
        self.remember_features(event);
        self.stats.accepted += 1;
        Ok(())
    }

    /// Refuses a prediction that would take the live state past a limit:
    /// a new model, a new version of a model, new feature names of a
    /// model version, or new windows. Nothing changes when it is refused.
    fn check_limits(&self, event: &PredictionEvent) -> Result<(), Reject> {
        let limits = &self.limits;
        let key: SeriesKey = (Arc::clone(&event.model_id), event.model_version.clone());
        let live = self.live.get(&key);
        if live.is_none() {
            match self.live_models.get(&event.model_id) {
                None if self.live_models.len() >= limits.max_models => {
                    return Err(Reject::TooMany {
                        code: "too_many_models",
                        what: format!("model {:?} would be one model too many", event.model_id),
                        key: "limits.max_models",
                        limit: limits.max_models as u64,
                    });
                }
                Some(&versions) if versions >= limits.max_versions_per_model => {
                    return Err(Reject::TooMany {
                        code: "too_many_versions",
                        what: format!(
                            "version {:?} of model {:?} would be one version too many",
                            event.model_version.as_deref().unwrap_or(""),
                            event.model_id
                        ),
                        key: "limits.max_versions_per_model",
                        limit: limits.max_versions_per_model as u64,
                    });
                }
                _ => {}
            }
        }
        let same_layout = live.is_some_and(|l| l.same_layout(event));
        if !same_layout {
            let known = live.map_or(0, |l| l.features.len());
            let new = event
                .features
                .iter()
                .filter(|f| live.is_none_or(|l| !l.features.contains(&f.name)))
                .count();
            if known + new > limits.max_features {
                return Err(Reject::TooMany {
                    code: "too_many_features",
                    what: format!(
                        "{new} new feature names for model {:?} version {:?}, which has {known}",
                        event.model_id,
                        event.model_version.as_deref().unwrap_or("")
                    ),
                    key: "limits.max_features",
                    limit: limits.max_features as u64,
                });
            }
        }
        // an event opens at most size / slide windows: far from the limit,
        // they need not be counted
        let per_event = (self.spec.size() / self.spec.slide()) as usize + 1;
        if self.open.len() + per_event <= limits.max_open_windows {
            return Ok(());
        }
        let wm = self
            .watermark
            .current()
            .unwrap_or(EventTime::MIN)
            .max(event.timestamp.saturating_sub(self.watermark.lateness()));
        let new_windows = self
            .spec
            .windows(event.timestamp)
            .filter(|&(start, end)| {
                end > wm
                    && !self.open.contains_key(&WindowKey {
                        model_id: Arc::clone(&event.model_id),
                        model_version: event.model_version.clone(),
                        start,
                        end,
                    })
            })
            .count();
        if new_windows > 0 && self.open.len() + new_windows > limits.max_open_windows {
            return Err(Reject::TooMany {
                code: "too_many_windows",
                what: format!(
                    "{new_windows} new windows for model {:?} while {} are open",
                    event.model_id,
                    self.open.len()
                ),
                key: "limits.max_open_windows",
                limit: limits.max_open_windows as u64,
            });
        }
        Ok(())
    }

    /// Counts a window that opened in its model version's live state.
    fn window_opened(&mut self, key: &WindowKey) {
        let series = (Arc::clone(&key.model_id), key.model_version.clone());
        let live = self.live.entry(series).or_default();
        if live.windows == 0 {
            *self
                .live_models
                .entry(Arc::clone(&key.model_id))
                .or_default() += 1;
        }
        live.windows += 1;
    }

    /// Forgets a closed window; a model version without open windows
    /// leaves the live state.
    fn window_closed(&mut self, key: &WindowKey) {
        let series = (Arc::clone(&key.model_id), key.model_version.clone());
        let Some(live) = self.live.get_mut(&series) else {
            return;
        };
        live.windows = live.windows.saturating_sub(1);
        if live.windows > 0 {
            return;
        }
        self.live.remove(&series);
        if let Some(versions) = self.live_models.get_mut(&key.model_id) {
            *versions = versions.saturating_sub(1);
            if *versions == 0 {
                self.live_models.remove(&key.model_id);
            }
        }
    }

    /// Keeps the feature names of an accepted prediction in its model
    /// version's live state.
    fn remember_features(&mut self, event: &PredictionEvent) {
        let series = (Arc::clone(&event.model_id), event.model_version.clone());
        let Some(live) = self.live.get_mut(&series) else {
            // every window the event belongs to had closed but the latest
            // (hopping): nothing of it is kept
            return;
        };
        if !live.same_layout(event) {
            live.layout.clear();
            for f in &event.features {
                live.layout.push(Arc::clone(&f.name));
                if !live.features.contains(&f.name) {
                    live.features.insert(Arc::clone(&f.name));
                }
            }
        }
    }

    /// Closes every window the watermark has passed, earliest first.
    pub fn close_ready(&mut self) -> Result<Vec<ClosedWindow>> {
        match self.watermark.current() {
            Some(wm) if wm >= self.next_close => self.close_until(wm),
            _ => Ok(Vec::new()),
        }
    }

    /// Closes every open window: the end of a finite input.
    pub fn close_all(&mut self) -> Result<Vec<ClosedWindow>> {
        self.close_until(EventTime::MAX)
    }

    fn close_until(&mut self, wm: EventTime) -> Result<Vec<ClosedWindow>> {
        let mut ready: Vec<WindowKey> = self.open.keys().filter(|k| k.end <= wm).cloned().collect();
        ready.sort_by(|a, b| {
            (a.end, a.start, &a.model_id, &a.model_version).cmp(&(
                b.end,
                b.start,
                &b.model_id,
                &b.model_version,
            ))
        });
        let mut closed = Vec::with_capacity(ready.len());
        for key in ready {
            let Some(window) = self.open.remove(&key) else {
                continue;
            };
            self.window_closed(&key);
            closed.push(self.finish(key, window)?);
        }
        self.next_close = self
            .open
            .keys()
            .map(|k| k.end)
            .min()
            .unwrap_or(EventTime::MAX);
        self.stats.closed += closed.len() as u64;
        Ok(closed)
    }

    fn finish(&self, key: WindowKey, window: OpenWindow) -> Result<ClosedWindow> {
        let mut tables = Vec::with_capacity(self.components.len());
        for (component, state) in self.components.iter().zip(window.states) {
            let names = component.tables();
            let output = |source| Error::Output {
                table: names
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                source,
            };
            let batches = component.finish(&key, state).map_err(output)?;
            if batches.len() != names.len() {
                return Err(output(arrow::error::ArrowError::InvalidArgumentError(
                    format!("{} batches for {} tables", batches.len(), names.len()),
                )));
            }
            for ((name, _), batch) in names.iter().zip(batches) {
                tables.push((name.clone(), prepend_key(&key, &batch).map_err(output)?));
            }
        }
        Ok(ClosedWindow {
            key,
            events: window.events,
            tables,
        })
    }
}

fn prepend_key(
    key: &WindowKey,
    batch: &RecordBatch,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = batch.num_rows();
    let mut fields = key_fields();
    fields.extend(batch.schema().fields().iter().map(|f| f.as_ref().clone()));
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![key.model_id.as_ref(); n])),
        Arc::new(StringArray::from(vec![key.model_version.as_deref(); n])),
        Arc::new(
            TimestampMillisecondArray::from(vec![key.start; n])
                .with_timezone(driftwatch_ingest::event::ARROW_TIMEZONE),
        ),
        Arc::new(
            TimestampMillisecondArray::from(vec![key.end; n])
                .with_timezone(driftwatch_ingest::event::ARROW_TIMEZONE),
        ),
    ];
    columns.extend(batch.columns().iter().cloned());
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
