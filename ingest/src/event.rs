//! The typed events that flow from the sources into the detectors.

use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Event time in milliseconds since the Unix epoch (UTC).
pub type EventTime = i64;

/// One decoded, validated event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A model's prediction for one input.
    Prediction(PredictionEvent),
    /// The ground truth for an earlier (or later) prediction with the same `event_id`.
    Label(LabelEvent),
}

impl Event {
    /// The event time, whichever kind the event is.
    pub fn timestamp(&self) -> EventTime {
        match self {
            Event::Prediction(p) => p.timestamp,
            Event::Label(l) => l.timestamp,
        }
    }

    /// The model the event belongs to.
    pub fn model_id(&self) -> &Arc<str> {
        match self {
            Event::Prediction(p) => &p.model_id,
            Event::Label(l) => &l.model_id,
        }
    }
}

/// A prediction event: the model's inputs and its output at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionEvent {
    /// Unique id; the label for this prediction carries the same id.
    pub event_id: String,
    /// Model id (interned: events of one model share the allocation).
    pub model_id: Arc<str>,
    /// Model version, when the producer sends one (interned).
    pub model_version: Option<Arc<str>>,
    /// Event time (ms since the epoch, UTC).
    pub timestamp: EventTime,
    /// Input features in the order they were sent; names are interned.
    pub features: Vec<Feature>,
    /// The model's output.
    pub prediction: Prediction,
    /// Segment dimensions (`region = "eu"`); names are interned.
    pub segments: Vec<(Arc<str>, String)>,
    /// The ground truth, when the event carries it (training or validation
    /// data: features, output and label on one row). It counts as a label
    /// event with the prediction's id and time.
    pub label: Option<Label>,
}

impl PredictionEvent {
    /// The label this prediction carries, as a label event of its own.
    pub fn carried_label(&self) -> Option<LabelEvent> {
        self.label.as_ref().map(|label| LabelEvent {
            event_id: self.event_id.clone(),
            model_id: Arc::clone(&self.model_id),
            timestamp: self.timestamp,
            label: label.clone(),
        })
    }
}

/// One named feature value.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// Feature name (interned).
    pub name: Arc<str>,
    /// Its value.
    pub value: FeatureValue,
}

/// A feature value: JSON numbers are numeric, strings (and booleans) categorical,
/// `null` missing.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue {
    /// A finite number.
    Numeric(f64),
    /// A category. JSON booleans become `"true"` / `"false"`. Categories of
    /// up to 24 bytes are stored inline, without an allocation.
    Categorical(CompactString),
    /// `null`: the producer sent the feature without a value.
    Missing,
}

impl FeatureValue {
    /// The kind of the value, or `None` for a missing value.
    pub fn kind(&self) -> Option<FeatureKind> {
        match self {
            FeatureValue::Numeric(_) => Some(FeatureKind::Numeric),
            FeatureValue::Categorical(_) => Some(FeatureKind::Categorical),
            FeatureValue::Missing => None,
        }
    }
}

/// Whether a feature is numeric or categorical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// Numbers.
    Numeric,
    /// Strings (categories).
    Categorical,
}

impl FeatureKind {
    /// The name used in configuration, errors and output.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::Numeric => "numeric",
            FeatureKind::Categorical => "categorical",
        }
    }
}

impl fmt::Display for FeatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The model's output. At least one field is present.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prediction {
    /// Probability of the positive class (binary classifiers), in `[0, 1]`.
    pub score: Option<f64>,
    /// Predicted class.
    pub class: Option<String>,
    /// Predicted value (regression).
    pub value: Option<f64>,
    /// Class probabilities (multi-class), each in `[0, 1]`.
    pub probabilities: Vec<(String, f64)>,
}

/// A ground-truth label for the prediction with the same `event_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelEvent {
    /// Id of the prediction this label belongs to.
    pub event_id: String,
    /// Model id (interned).
    pub model_id: Arc<str>,
    /// When the label was observed (ms since the epoch, UTC).
    pub timestamp: EventTime,
    /// The true class or value.
    pub label: Label,
}

/// A true class (classification) or value (regression).
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    /// A class. JSON booleans become `"true"` / `"false"`.
    Class(String),
    /// A number.
    Value(f64),
}

/// Formats an event time as RFC 3339 with milliseconds, e.g. `2026-11-26T12:00:00.123Z`.
pub fn format_time(t: EventTime) -> String {
    match chrono::DateTime::from_timestamp_millis(t) {
        Some(dt) => dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => format!("{t}ms"),
    }
}

/// Time zone of every Arrow timestamp column driftwatch writes: UTC, spelled
/// as an offset so that readers need no time-zone database.
pub const ARROW_TIMEZONE: &str = "+00:00";

/// The Arrow type of event-time columns: milliseconds, UTC.
pub fn arrow_time_type() -> arrow::datatypes::DataType {
    arrow::datatypes::DataType::Timestamp(
        arrow::datatypes::TimeUnit::Millisecond,
        Some(ARROW_TIMEZONE.into()),
    )
}
