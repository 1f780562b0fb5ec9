//! The `events` table: raw prediction events of recent windows, for ad-hoc
//! slicing (`WHERE segments['region'] = 'eu'`, `numeric['age'] > 60`).
//!
//! Features go in maps by kind, so that one schema holds every model's
//! events: `numeric` (name → number), `categorical` (name → category), and
//! `missing` (names sent as `null`).

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, Float64Builder, ListBuilder, MapBuilder, MapFieldNames, RecordBatch,
    StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use driftwatch_ingest::event::{FeatureValue, PredictionEvent};

use crate::error::{Result, data};

fn map_type(value: DataType) -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", value, true),
            ]
            .into(),
        ),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

fn map_names() -> MapFieldNames {
    MapFieldNames {
        entry: "entries".into(),
        key: "keys".into(),
        value: "values".into(),
    }
}

/// The `events` table's columns.
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("model_id", DataType::Utf8, false),
        Field::new("model_version", DataType::Utf8, true),
        Field::new("event_id", DataType::Utf8, false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("score", DataType::Float64, true),
        Field::new("class", DataType::Utf8, true),
        Field::new("value", DataType::Float64, true),
        Field::new("numeric", map_type(DataType::Float64), false),
        Field::new("categorical", map_type(DataType::Utf8), false),
        Field::new(
            "missing",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))),
            false,
        ),
        Field::new("segments", map_type(DataType::Utf8), false),
    ]))
}

/// Prediction events gathered into `events` rows.
pub struct EventRows {
    schema: SchemaRef,
    model_id: StringBuilder,
    model_version: StringBuilder,
    event_id: StringBuilder,
    event_time: TimestampMillisecondBuilder,
    score: Float64Builder,
    class: StringBuilder,
    value: Float64Builder,
    numeric: MapBuilder<StringBuilder, Float64Builder>,
    categorical: MapBuilder<StringBuilder, StringBuilder>,
    missing: ListBuilder<StringBuilder>,
    segments: MapBuilder<StringBuilder, StringBuilder>,
}

impl std::fmt::Debug for EventRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRows")
            .field("rows", &self.len())
            .finish()
    }
}

impl Default for EventRows {
    fn default() -> Self {
        let item = Arc::new(Field::new("item", DataType::Utf8, false));
        EventRows {
            schema: events_schema(),
            model_id: StringBuilder::new(),
            model_version: StringBuilder::new(),
            event_id: StringBuilder::new(),
            event_time: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            score: Float64Builder::new(),
            class: StringBuilder::new(),
            value: Float64Builder::new(),
            numeric: MapBuilder::new(
                Some(map_names()),
                StringBuilder::new(),
                Float64Builder::new(),
            ),
            categorical: MapBuilder::new(
                Some(map_names()),
                StringBuilder::new(),
                StringBuilder::new(),
            ),
            missing: ListBuilder::new(StringBuilder::new()).with_field(item),
            segments: MapBuilder::new(
                Some(map_names()),
                StringBuilder::new(),
                StringBuilder::new(),
            ),
        }
    }
}

impl EventRows {
    /// Adds one event.
    pub fn push(&mut self, e: &PredictionEvent) -> Result<()> {
        let context = || format!("events row for {}", e.event_id);
        self.model_id.append_value(&e.model_id);
        self.model_version.append_option(e.model_version.as_deref());
        self.event_id.append_value(&e.event_id);
        self.event_time.append_value(e.timestamp);
        self.score.append_option(e.prediction.score);
        self.class.append_option(e.prediction.class.as_deref());
        self.value.append_option(e.prediction.value);
        for f in &e.features {
            match &f.value {
                FeatureValue::Numeric(v) => {
                    self.numeric.keys().append_value(&f.name);
                    self.numeric.values().append_value(*v);
                }
                FeatureValue::Categorical(c) => {
                    self.categorical.keys().append_value(&f.name);
                    self.categorical.values().append_value(c.as_str());
                }
                FeatureValue::Missing => self.missing.values().append_value(&f.name),
            }
        }
        self.numeric.append(true).map_err(data(context()))?;
        self.categorical.append(true).map_err(data(context()))?;
        self.missing.append(true);
        for (k, v) in &e.segments {
            self.segments.keys().append_value(k);
            self.segments.values().append_value(v);
        }
        self.segments.append(true).map_err(data(context()))?;
        Ok(())
    }

    /// Events gathered.
    pub fn len(&self) -> usize {
        self.event_id.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The gathered events as one batch (none when there are none); starts
    /// over.
    pub fn take(&mut self) -> Result<Option<RecordBatch>> {
        if self.is_empty() {
            return Ok(None);
        }
        let columns = vec![
            Arc::new(self.model_id.finish()) as _,
            Arc::new(self.model_version.finish()) as _,
            Arc::new(self.event_id.finish()) as _,
            Arc::new(self.event_time.finish()) as _,
            Arc::new(self.score.finish()) as _,
            Arc::new(self.class.finish()) as _,
            Arc::new(self.value.finish()) as _,
            Arc::new(self.numeric.finish()) as _,
            Arc::new(self.categorical.finish()) as _,
            Arc::new(self.missing.finish()) as _,
            Arc::new(self.segments.finish()) as _,
        ];
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map(Some)
            .map_err(data("events rows"))
    }
}
