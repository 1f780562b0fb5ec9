//! Exact per-window summaries: how many predictions, what the model output
//! looked like (`window_summary`), and per feature the count, missing values,
//! mean, min and max (`feature_summary`).

use std::sync::Arc;

use arrow::array::{
    Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use driftwatch_ingest::{EventTime, FeatureValue, PredictionEvent};
use serde::{Deserialize, Serialize};

use crate::component::Component;
use crate::slots::FeatureSlots;
use crate::windows::WindowKey;

/// Count, sum, min and max of a stream of numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// How many numbers.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest (`+inf` when empty).
    pub min: f64,
    /// The largest (`-inf` when empty).
    pub max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Moments {
    /// Adds one number.
    #[inline]
    pub fn add(&mut self, x: f64) {
        self.count += 1;
        self.sum += x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// Adds everything `other` saw.
    pub fn merge(&mut self, other: &Moments) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The mean, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    fn min_opt(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    fn max_opt(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }
}

fn ts_field(name: &str, nullable: bool) -> Field {
    Field::new(name, driftwatch_ingest::event::arrow_time_type(), nullable)
}

fn window_summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("events", DataType::UInt64, false),
        ts_field("first_event_time", true),
        ts_field("last_event_time", true),
        Field::new("score_count", DataType::UInt64, false),
        Field::new("score_mean", DataType::Float64, true),
        Field::new("score_min", DataType::Float64, true),
        Field::new("score_max", DataType::Float64, true),
        Field::new("value_count", DataType::UInt64, false),
        Field::new("value_mean", DataType::Float64, true),
    ]))
}

/// `window_summary`: one row per window.
///
/// | column | meaning |
/// | --- | --- |
/// | `events` | predictions in the window |
/// | `first_event_time`, `last_event_time` | earliest and latest event time |
/// | `score_count`, `score_mean`, `score_min`, `score_max` | `prediction.score` |
/// | `value_count`, `value_mean` | `prediction.value` |
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowSummary;

/// State of [`WindowSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSummaryState {
    events: u64,
    first: EventTime,
    last: EventTime,
    score: Moments,
    value: Moments,
}

impl Component for WindowSummary {
    type State = WindowSummaryState;

    fn tables(&self) -> Vec<(String, SchemaRef)> {
        vec![("window_summary".into(), window_summary_schema())]
    }

    fn new_state(&self) -> Self::State {
        WindowSummaryState {
            events: 0,
            first: EventTime::MAX,
            last: EventTime::MIN,
            score: Moments::default(),
            value: Moments::default(),
        }
    }

    fn update(&self, s: &mut Self::State, event: &PredictionEvent) {
        s.events += 1;
        s.first = s.first.min(event.timestamp);
        s.last = s.last.max(event.timestamp);
        if let Some(score) = event.prediction.score {
            s.score.add(score);
        }
        if let Some(value) = event.prediction.value {
            s.value.add(value);
        }
    }

    fn merge(&self, into: &mut Self::State, other: Self::State) {
        into.events += other.events;
        into.first = into.first.min(other.first);
        into.last = into.last.max(other.last);
        into.score.merge(&other.score);
        into.value.merge(&other.value);
    }

    fn finish(&self, _key: &WindowKey, s: Self::State) -> Result<Vec<RecordBatch>, ArrowError> {
        let seen = s.events > 0;
        RecordBatch::try_new(
            window_summary_schema(),
            vec![
                Arc::new(UInt64Array::from(vec![s.events])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![seen.then_some(s.first)])
                        .with_timezone(driftwatch_ingest::event::ARROW_TIMEZONE),
                ),
                Arc::new(
                    TimestampMillisecondArray::from(vec![seen.then_some(s.last)])
                        .with_timezone(driftwatch_ingest::event::ARROW_TIMEZONE),
                ),
                Arc::new(UInt64Array::from(vec![s.score.count])),
                Arc::new(Float64Array::from(vec![s.score.mean()])),
                Arc::new(Float64Array::from(vec![s.score.min_opt()])),
                Arc::new(Float64Array::from(vec![s.score.max_opt()])),
                Arc::new(UInt64Array::from(vec![s.value.count])),
                Arc::new(Float64Array::from(vec![s.value.mean()])),
            ],
        )
        .map(|b| vec![b])
    }
}

fn feature_summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("feature", DataType::Utf8, false),
        Field::new("count", DataType::UInt64, false),
        Field::new("missing", DataType::UInt64, false),
        Field::new("numeric", DataType::UInt64, false),
        Field::new("categorical", DataType::UInt64, false),
        Field::new("mean", DataType::Float64, true),
        Field::new("min", DataType::Float64, true),
        Field::new("max", DataType::Float64, true),
    ]))
}

/// `feature_summary`: one row per (window, feature).
///
/// | column | meaning |
/// | --- | --- |
/// | `feature` | feature name |
/// | `count` | predictions with a value for the feature |
/// | `missing` | predictions where it was `null` or absent |
/// | `numeric`, `categorical` | values of each kind (both non-zero means mixed types) |
/// | `mean`, `min`, `max` | over the numeric values |
#[derive(Debug, Clone, Copy, Default)]
pub struct FeatureSummary;

/// Accumulator of one feature in one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FeatureAcc {
    categorical: u64,
    nulls: u64,
    numeric: Moments,
}

/// State of [`FeatureSummary`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureSummaryState {
    events: u64,
    features: FeatureSlots<FeatureAcc>,
}

impl Component for FeatureSummary {
    type State = FeatureSummaryState;

    fn tables(&self) -> Vec<(String, SchemaRef)> {
        vec![("feature_summary".into(), feature_summary_schema())]
    }

    fn new_state(&self) -> Self::State {
        FeatureSummaryState::default()
    }

    fn update(&self, s: &mut Self::State, event: &PredictionEvent) {
        s.events += 1;
        for (position, feature) in event.features.iter().enumerate() {
            let acc = s
                .features
                .get_or_insert_with(position, &feature.name, FeatureAcc::default);
            match &feature.value {
                FeatureValue::Numeric(x) => acc.numeric.add(*x),
                FeatureValue::Categorical(_) => acc.categorical += 1,
                FeatureValue::Missing => acc.nulls += 1,
            }
        }
    }

    fn merge(&self, into: &mut Self::State, other: Self::State) {
        into.events += other.events;
        for (name, acc) in other.features {
            let mine = into
                .features
                .get_or_insert_with(usize::MAX, &name, FeatureAcc::default);
            mine.categorical += acc.categorical;
            mine.nulls += acc.nulls;
            mine.numeric.merge(&acc.numeric);
        }
    }

    fn finish(&self, _key: &WindowKey, s: Self::State) -> Result<Vec<RecordBatch>, ArrowError> {
        let mut f: Vec<(Arc<str>, FeatureAcc)> = s.features.into_iter().collect();
        f.sort_by(|a, b| a.0.cmp(&b.0));
        let count = |a: &FeatureAcc| a.numeric.count + a.categorical;
        RecordBatch::try_new(
            feature_summary_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    f.iter().map(|(n, _)| n.as_ref()),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    f.iter().map(|(_, a)| count(a)),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    f.iter().map(|(_, a)| s.events - count(a)),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    f.iter().map(|(_, a)| a.numeric.count),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    f.iter().map(|(_, a)| a.categorical),
                )),
                Arc::new(Float64Array::from_iter(
                    f.iter().map(|(_, a)| a.numeric.mean()),
                )),
                Arc::new(Float64Array::from_iter(
                    f.iter().map(|(_, a)| a.numeric.min_opt()),
                )),
                Arc::new(Float64Array::from_iter(
                    f.iter().map(|(_, a)| a.numeric.max_opt()),
                )),
            ],
        )
        .map(|b| vec![b])
    }
}
