//! Writes events as a Parquet file in the layout [`crate::parquet_source`]
//! reads: the JSON event's shape as Arrow columns. Features and segments are
//! struct columns whose children are given up front; class labels go in
//! `label` (text) and numeric labels in `label_value`. Multi-class
//! `probabilities` are not written.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, StructArray, TimestampMillisecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::event::{Event, FeatureKind, FeatureValue, Label};

const BATCH: usize = 8192;

/// Buffers events and writes them in batches.
pub struct EventParquetWriter {
    path: PathBuf,
    writer: ArrowWriter<File>,
    schema: SchemaRef,
    features: Vec<(Arc<str>, FeatureKind)>,
    feature_index: HashMap<Arc<str>, usize>,
    segments: Vec<Arc<str>>,
    buffer: Vec<Event>,
}

impl std::fmt::Debug for EventParquetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventParquetWriter")
            .field("path", &self.path)
            .finish()
    }
}

fn struct_fields(names: impl Iterator<Item = (Arc<str>, DataType)>) -> Fields {
    names
        .map(|(n, dt)| Field::new(n.as_ref(), dt, true))
        .collect()
}

impl EventParquetWriter {
    /// Creates `path` for events with these feature columns and segment names.
    pub fn create(
        path: &Path,
        features: Vec<(Arc<str>, FeatureKind)>,
        segments: Vec<Arc<str>>,
    ) -> Result<Self> {
        let kind_type = |k: FeatureKind| match k {
            FeatureKind::Numeric => DataType::Float64,
            FeatureKind::Categorical => DataType::Utf8,
        };
        let feature_fields =
            struct_fields(features.iter().map(|(n, k)| (Arc::clone(n), kind_type(*k))));
        let segment_fields =
            struct_fields(segments.iter().map(|n| (Arc::clone(n), DataType::Utf8)));
        let prediction_fields = Fields::from(vec![
            Field::new("score", DataType::Float64, true),
            Field::new("class", DataType::Utf8, true),
            Field::new("value", DataType::Float64, true),
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("model_id", DataType::Utf8, false),
            Field::new("model_version", DataType::Utf8, true),
            Field::new("timestamp", crate::event::arrow_time_type(), false),
            Field::new("features", DataType::Struct(feature_fields), true),
            Field::new("prediction", DataType::Struct(prediction_fields), true),
            Field::new("segments", DataType::Struct(segment_fields), true),
            Field::new("label", DataType::Utf8, true),
            Field::new("label_value", DataType::Float64, true),
        ]));
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))
            .map_err(|e| Error::parquet(path, e))?;
        let feature_index = features
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (Arc::clone(n), i))
            .collect();
        Ok(EventParquetWriter {
            path: path.to_owned(),
            writer,
            schema,
            features,
            feature_index,
            segments,
            buffer: Vec::with_capacity(BATCH),
        })
    }

    /// Adds one event.
    pub fn write(&mut self, event: Event) -> Result<()> {
        self.buffer.push(event);
        if self.buffer.len() >= BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    /// Writes what is buffered and closes the file.
    pub fn finish(mut self) -> Result<()> {
        self.flush_batch()?;
        self.writer
            .close()
            .map_err(|e| Error::parquet(&self.path, e))?;
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let batch = self.batch().map_err(|e| Error::arrow(&self.path, e))?;
        self.writer
            .write(&batch)
            .map_err(|e| Error::parquet(&self.path, e))?;
        self.buffer.clear();
        Ok(())
    }

    fn batch(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let n = self.buffer.len();
        let mut ids = Vec::with_capacity(n);
        let mut models = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        let mut is_prediction = Vec::with_capacity(n);
        let mut numeric: Vec<Vec<Option<f64>>> = vec![vec![None; n]; self.features.len()];
        let mut text: Vec<Vec<Option<&str>>> = vec![vec![None; n]; self.features.len()];
        let mut segments: Vec<Vec<Option<&str>>> = vec![vec![None; n]; self.segments.len()];
        let (mut score, mut class, mut value) = (vec![None; n], vec![None; n], vec![None; n]);
        let (mut label, mut label_value) = (vec![None; n], vec![None; n]);
        for (row, event) in self.buffer.iter().enumerate() {
            match event {
                Event::Prediction(p) => {
                    ids.push(p.event_id.as_str());
                    models.push(p.model_id.as_ref());
                    versions.push(p.model_version.as_deref());
                    times.push(p.timestamp);
                    is_prediction.push(true);
                    for f in &p.features {
                        let Some(&i) = self.feature_index.get(&f.name) else {
                            return Err(arrow::error::ArrowError::InvalidArgumentError(format!(
                                "feature `{}` is not among the writer's columns",
                                f.name
                            )));
                        };
                        match (&f.value, self.features[i].1) {
                            (FeatureValue::Numeric(x), FeatureKind::Numeric) => {
                                numeric[i][row] = Some(*x)
                            }
                            (FeatureValue::Categorical(c), FeatureKind::Categorical) => {
                                text[i][row] = Some(c.as_str())
                            }
                            (FeatureValue::Missing, _) => {}
                            (_, kind) => {
                                return Err(arrow::error::ArrowError::InvalidArgumentError(
                                    format!("feature `{}` has a value that is not {kind}", f.name),
                                ));
                            }
                        }
                    }
                    for (name, v) in &p.segments {
                        if let Some(i) = self.segments.iter().position(|s| s == name) {
                            segments[i][row] = Some(v.as_str());
                        }
                    }
                    score[row] = p.prediction.score;
                    class[row] = p.prediction.class.as_deref();
                    value[row] = p.prediction.value;
                }
                Event::Label(l) => {
                    ids.push(l.event_id.as_str());
                    models.push(l.model_id.as_ref());
                    versions.push(None);
                    times.push(l.timestamp);
                    is_prediction.push(false);
                    match &l.label {
                        Label::Class(c) => label[row] = Some(c.as_str()),
                        Label::Value(v) => label_value[row] = Some(*v),
                    }
                }
            }
        }
        let nulls = Some(NullBuffer::from(is_prediction));
        let DataType::Struct(feature_fields) = self.schema.field(4).data_type().clone() else {
            unreachable!("schema built in create")
        };
        let feature_columns: Vec<ArrayRef> = self
            .features
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| -> ArrayRef {
                match kind {
                    FeatureKind::Numeric => Arc::new(Float64Array::from(numeric[i].clone())),
                    FeatureKind::Categorical => Arc::new(StringArray::from(text[i].clone())),
                }
            })
            .collect();
        let DataType::Struct(prediction_fields) = self.schema.field(5).data_type().clone() else {
            unreachable!("schema built in create")
        };
        let DataType::Struct(segment_fields) = self.schema.field(6).data_type().clone() else {
            unreachable!("schema built in create")
        };
        let segment_columns: Vec<ArrayRef> = segments
            .into_iter()
            .map(|s| Arc::new(StringArray::from(s)) as ArrayRef)
            .collect();
        RecordBatch::try_new(
            Arc::clone(&self.schema),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(StringArray::from(models)),
                Arc::new(StringArray::from(versions)),
                Arc::new(
                    TimestampMillisecondArray::from(times)
                        .with_timezone(crate::event::ARROW_TIMEZONE),
                ),
                Arc::new(StructArray::try_new(
                    feature_fields,
                    feature_columns,
                    nulls.clone(),
                )?),
                Arc::new(StructArray::try_new(
                    prediction_fields,
                    vec![
                        Arc::new(Float64Array::from(score)),
                        Arc::new(StringArray::from(class)),
                        Arc::new(Float64Array::from(value)),
                    ],
                    nulls.clone(),
                )?),
                Arc::new(StructArray::try_new(
                    segment_fields,
                    segment_columns,
                    nulls,
                )?),
                Arc::new(StringArray::from(label)),
                Arc::new(Float64Array::from(label_value)),
            ],
        )
    }
}
