//! Parquet event files. The columns mirror the JSON event: `event_id`,
//! `model_id`, `model_version`, `timestamp` (Arrow timestamp of any unit,
//! Int64 epoch milliseconds, or RFC 3339 text), `features` / `segments` (structs
//! of scalars), `prediction` (struct of `score`, `class`, `value`,
//! `probabilities`) and `label` (a class or a number; a file that mixes both
//! keeps numeric labels in a Float64 `label_value` column). This is the layout `pyarrow.Table.from_pylist`
//! gives for a list of JSON events. Other columns are ignored, as unknown JSON
//! fields are. A null feature or segment is treated as absent: in a columnar
//! file the two cannot be told apart (both count as missing in a window).

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StructArray};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::decode::Decoder;
use crate::error::{Error, Result};
use crate::raw::{RawEvent, RawPrediction, RawTime, Scalar, ScalarMap, Str};
use crate::reject::Reject;
use crate::source::{Position, Record, Rejected, Source};

/// A Parquet file of events.
pub struct ParquetSource {
    name: Arc<str>,
    /// `Some((model, version))`: a plain feature table read as that model's predictions
    table: Option<(String, Option<String>)>,
    /// the current batch as one struct column (feature tables)
    rows: Option<StructArray>,
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    row_in_batch: usize,
    rows_done: u64,
    total_rows: u64,
}

impl std::fmt::Debug for ParquetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSource")
            .field("name", &self.name)
            .finish()
    }
}

impl ParquetSource {
    /// Opens a Parquet file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
        let total_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let reader = builder
            .with_batch_size(8192)
            .build()
            .map_err(|e| Error::parquet(path, e))?;
        Ok(ParquetSource {
            name: Arc::from(path.display().to_string()),
            table: None,
            rows: None,
            path: path.to_owned(),
            reader,
            batch: None,
            row_in_batch: 0,
            rows_done: 0,
            total_rows,
        })
    }
}

impl ParquetSource {
    /// Reads the file as a plain feature table of `model` (see
    /// [`crate::source::open_table_file`]).
    pub(crate) fn set_table(&mut self, table: Option<(String, Option<String>)>) {
        self.table = table;
    }
}

impl Source for ParquetSource {
    fn next_record(&mut self, decoder: &mut Decoder) -> Result<Option<Record>> {
        loop {
            if let Some(batch) = &self.batch
                && self.row_in_batch < batch.num_rows()
            {
                let row = self.row_in_batch;
                self.row_in_batch += 1;
                let position = Position::Row {
                    file: Arc::clone(&self.name),
                    row: self.rows_done,
                };
                self.rows_done += 1;
                // a row is held to the same limit as a JSON line; its
                // original is not rendered (the position finds it)
                let len = row_bytes(batch, row);
                if len > decoder.max_event_bytes() {
                    let reason = Reject::Oversized {
                        len,
                        limit: decoder.max_event_bytes(),
                    };
                    return Ok(Some(Record::Rejected(Rejected::new(
                        reason, position, b"", len,
                    ))));
                }
                let result = match (&self.table, &self.rows) {
                    (Some((model, version)), Some(rows)) => scalar_map(rows, row, "features")
                        .and_then(|f| {
                            decoder.table_row(
                                f.unwrap_or_default(),
                                model,
                                version.as_deref(),
                                position_row(&position),
                            )
                        }),
                    _ => raw_row(batch, row).and_then(|raw| decoder.validate(raw)),
                };
                return Ok(Some(match result {
                    Ok(event) => Record::Event(event, position),
                    Err(reason) => {
                        let original = row_as_json(batch, row);
                        let len = original.len() as u64;
                        Record::Rejected(Rejected::new(reason, position, &original, len))
                    }
                }));
            }
            match self.reader.next() {
                None => return Ok(None),
                Some(Err(e)) => return Err(Error::arrow(&self.path, e)),
                Some(Ok(batch)) => {
                    let batch = normalise(batch).map_err(|e| Error::arrow(&self.path, e))?;
                    if self.table.is_some() {
                        self.rows = Some(StructArray::from(batch.clone()));
                    }
                    self.batch = Some(batch);
                    self.row_in_batch = 0;
                }
            }
        }
    }

    fn progress(&self) -> (u64, u64) {
        (self.rows_done, self.total_rows)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

fn position_row(position: &Position) -> u64 {
    match position {
        Position::Row { row, .. } => *row,
        _ => 0,
    }
}

/// Casts dictionary-encoded columns (pandas categoricals), at any depth of
/// structs, to their value type so rows can be read uniformly.
fn normalise(batch: RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    fn plain(dt: &DataType) -> DataType {
        match dt {
            DataType::Dictionary(_, value) => plain(value),
            DataType::Struct(fields) => DataType::Struct(
                fields
                    .iter()
                    .map(|f| Arc::new(f.as_ref().clone().with_data_type(plain(f.data_type()))))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    let schema = batch.schema();
    if schema
        .fields()
        .iter()
        .all(|f| plain(f.data_type()) == *f.data_type())
    {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let target = plain(field.data_type());
        columns.push(arrow::compute::cast(column, &target)?);
        fields.push(field.as_ref().clone().with_data_type(target));
    }
    RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)
}

fn wrong_type(path: &str, dt: &DataType, expected: &str) -> Reject {
    Reject::WrongType {
        path: path.to_owned(),
        detail: format!("column of type {dt}, expected {expected}"),
    }
}

/// The value at `row` of a scalar column.
fn scalar_at<'b>(array: &'b dyn Array, row: usize, path: &str) -> Result<Scalar<'b>, Reject> {
    if array.is_null(row) {
        return Ok(Scalar::Null);
    }
    let dt = array.data_type();
    Ok(match dt {
        DataType::Boolean => Scalar::Bool(array.as_boolean().value(row)),
        DataType::Int8 => Scalar::Int(array.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => Scalar::Int(array.as_primitive::<Int16Type>().value(row).into()),
        DataType::Int32 => Scalar::Int(array.as_primitive::<Int32Type>().value(row).into()),
        DataType::Int64 => Scalar::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Scalar::Int(array.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => Scalar::Int(array.as_primitive::<UInt16Type>().value(row).into()),
        DataType::UInt32 => Scalar::Int(array.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => {
            let v = array.as_primitive::<UInt64Type>().value(row);
            i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int)
        }
        DataType::Float32 => Scalar::Float(array.as_primitive::<Float32Type>().value(row).into()),
        DataType::Float64 => Scalar::Float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Scalar::Str(Cow::Borrowed(array.as_string::<i32>().value(row))),
        DataType::LargeUtf8 => Scalar::Str(Cow::Borrowed(array.as_string::<i64>().value(row))),
        DataType::Utf8View => Scalar::Str(Cow::Borrowed(array.as_string_view().value(row))),
        other => return Err(wrong_type(path, other, "a number, string or boolean")),
    })
}

fn str_at<'b>(
    batch: &'b RecordBatch,
    name: &'static str,
    row: usize,
) -> Result<Option<Str<'b>>, Reject> {
    let Some(column) = batch.column_by_name(name) else {
        return Ok(None);
    };
    match scalar_at(column.as_ref(), row, name)? {
        Scalar::Null => Ok(None),
        Scalar::Str(s) => Ok(Some(Str(s))),
        _ => Err(wrong_type(name, column.data_type(), "a string")),
    }
}

fn f64_at(array: Option<&dyn Array>, row: usize, path: &str) -> Result<Option<f64>, Reject> {
    let Some(array) = array else {
        return Ok(None);
    };
    match scalar_at(array, row, path)? {
        Scalar::Null => Ok(None),
        Scalar::Int(i) => Ok(Some(i as f64)),
        Scalar::Float(x) => Ok(Some(x)),
        _ => Err(wrong_type(path, array.data_type(), "a number")),
    }
}

fn struct_at<'b>(
    batch: &'b RecordBatch,
    name: &'static str,
) -> Result<Option<&'b StructArray>, Reject> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(column) => match column.as_struct_opt() {
            Some(s) => Ok(Some(s)),
            None => Err(wrong_type(name, column.data_type(), "a struct")),
        },
    }
}

fn scalar_map<'b>(
    array: &'b StructArray,
    row: usize,
    path: &str,
) -> Result<Option<ScalarMap<'b>>, Reject> {
    if array.is_null(row) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(array.num_columns());
    for (field, child) in array.fields().iter().zip(array.columns()) {
        // a file holding several models has every model's columns; a null is
        // indistinguishable from a feature the event does not have, so it is
        // left out (it still counts as missing in the window)
        if child.is_null(row) {
            continue;
        }
        let child_path = format!("{path}.{}", field.name());
        out.push((
            Str::borrowed(field.name()),
            scalar_at(child.as_ref(), row, &child_path)?,
        ));
    }
    Ok(Some(ScalarMap(out)))
}

fn raw_row(batch: &RecordBatch, row: usize) -> Result<RawEvent<'_>, Reject> {
    let timestamp = match batch.column_by_name("timestamp") {
        None => None,
        Some(column) if column.is_null(row) => None,
        Some(column) => Some(match column.data_type() {
            DataType::Timestamp(unit, _) => {
                let ms = match unit {
                    TimeUnit::Second => column
                        .as_primitive::<TimestampSecondType>()
                        .value(row)
                        .saturating_mul(1000),
                    TimeUnit::Millisecond => {
                        column.as_primitive::<TimestampMillisecondType>().value(row)
                    }
                    TimeUnit::Microsecond => column
                        .as_primitive::<TimestampMicrosecondType>()
                        .value(row)
                        .div_euclid(1000),
                    TimeUnit::Nanosecond => column
                        .as_primitive::<TimestampNanosecondType>()
                        .value(row)
                        .div_euclid(1_000_000),
                };
                RawTime::Number(Scalar::Int(ms))
            }
            _ => match scalar_at(column.as_ref(), row, "timestamp")? {
                Scalar::Str(s) => RawTime::Text(Str(s)),
                other => RawTime::Number(other),
            },
        }),
    };
    let prediction = match struct_at(batch, "prediction")? {
        Some(p) if !p.is_null(row) => Some(RawPrediction {
            score: f64_at(
                p.column_by_name("score").map(|c| c.as_ref()),
                row,
                "prediction.score",
            )?,
            class: match p.column_by_name("class") {
                Some(c) => match scalar_at(c.as_ref(), row, "prediction.class")? {
                    Scalar::Null => None,
                    other => Some(other),
                },
                None => None,
            },
            value: f64_at(
                p.column_by_name("value").map(|c| c.as_ref()),
                row,
                "prediction.value",
            )?,
            probabilities: match p.column_by_name("probabilities") {
                Some(c) => match c.as_struct_opt() {
                    Some(s) => scalar_map(s, row, "prediction.probabilities")?,
                    None => {
                        return Err(wrong_type(
                            "prediction.probabilities",
                            c.data_type(),
                            "a struct",
                        ));
                    }
                },
                None => None,
            },
        }),
        _ => None,
    };
    // `label` holds a class or a number; a file mixing both kinds keeps the
    // numbers in `label_value`
    let mut label = None;
    for name in ["label", "label_value"] {
        if let Some(c) = batch.column_by_name(name) {
            match scalar_at(c.as_ref(), row, name)? {
                Scalar::Null => {}
                _ if label.is_some() => return Err(Reject::Duplicate("label".into())),
                other => label = Some(other),
            }
        }
    }
    Ok(RawEvent {
        event_id: str_at(batch, "event_id", row)?,
        model_id: str_at(batch, "model_id", row)?,
        model_version: str_at(batch, "model_version", row)?,
        timestamp,
        features: match struct_at(batch, "features")? {
            Some(f) => scalar_map(f, row, "features")?,
            None => None,
        },
        prediction,
        segments: match struct_at(batch, "segments")? {
            Some(s) => scalar_map(s, row, "segments")?,
            None => None,
        },
        label,
    })
}

/// The row as one JSON object, for the dead-letter record.
/// The bytes of one row's values: strings and binaries by length, other
/// values by width, nested values summed.
fn row_bytes(batch: &RecordBatch, row: usize) -> u64 {
    batch.columns().iter().map(|c| value_bytes(c, row)).sum()
}

fn value_bytes(array: &dyn Array, row: usize) -> u64 {
    if array.is_null(row) {
        return 0;
    }
    let range_bytes = |values: &dyn Array, start: usize, end: usize| -> u64 {
        (start..end).map(|i| value_bytes(values, i)).sum()
    };
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value_length(row) as u64,
        DataType::LargeUtf8 => array.as_string::<i64>().value_length(row) as u64,
        DataType::Utf8View => array.as_string_view().value(row).len() as u64,
        DataType::Binary => array.as_binary::<i32>().value_length(row) as u64,
        DataType::LargeBinary => array.as_binary::<i64>().value_length(row) as u64,
        DataType::BinaryView => array.as_binary_view().value(row).len() as u64,
        DataType::Struct(_) => array
            .as_struct()
            .columns()
            .iter()
            .map(|c| value_bytes(c, row))
            .sum(),
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let offsets = list.value_offsets();
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            range_bytes(list.values(), start, end)
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            let offsets = list.value_offsets();
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            range_bytes(list.values(), start, end)
        }
        DataType::Map(_, _) => {
            let map = array.as_map();
            let offsets = map.value_offsets();
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            range_bytes(map.entries(), start, end)
        }
        other => other.primitive_width().unwrap_or(8) as u64,
    }
}

fn row_as_json(batch: &RecordBatch, row: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
    if writer.write(&batch.slice(row, 1)).is_err() || writer.finish().is_err() {
        return format!("{{\"unprintable_row\":{row}}}").into_bytes();
    }
    drop(writer);
    while out.last() == Some(&b'\n') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Float64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    fn prediction_file(dir: &Path, notes: Vec<String>) -> PathBuf {
        let n = notes.len();
        let features = StructArray::from(vec![(
            Arc::new(Field::new("note", DataType::Utf8, false)),
            Arc::new(StringArray::from(notes)) as ArrayRef,
        )]);
        let prediction = StructArray::from(vec![(
            Arc::new(Field::new("score", DataType::Float64, false)),
            Arc::new(Float64Array::from(vec![0.5; n])) as ArrayRef,
        )]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("e{i}")),
            )),
            Arc::new(StringArray::from(vec!["m"; n])),
            Arc::new(StringArray::from(vec!["2026-11-26T12:00:00Z"; n])),
            Arc::new(features),
            Arc::new(prediction),
        ];
        let schema = Schema::new(
            [
                "event_id",
                "model_id",
                "timestamp",
                "features",
                "prediction",
            ]
            .iter()
            .zip(&columns)
            .map(|(name, c)| Field::new(*name, c.data_type().clone(), false))
            .collect::<Vec<_>>(),
        );
        let batch = RecordBatch::try_new(Arc::new(schema), columns).expect("batch");
        let path = dir.join("events.parquet");
        let file = File::create(&path).expect("create");
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
        path
    }

    #[test]
    fn parquet_rows_past_max_event_bytes_are_refused_like_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = "x".repeat(3 * 1024 * 1024);
        let path = prediction_file(dir.path(), vec!["a".into(), big, "b".into()]);
        let mut source = ParquetSource::open(&path).expect("open");
        let mut decoder = Decoder::new(crate::DecoderConfig::default());
        let mut outcomes = Vec::new();
        while let Some(record) = source.next_record(&mut decoder).expect("read") {
            outcomes.push(match record {
                Record::Event(..) => "event".to_owned(),
                Record::Rejected(r) => {
                    assert!(r.original.is_empty(), "the oversized row is not rendered");
                    assert!(r.original_len > 3 * 1024 * 1024);
                    assert_eq!(r.position.to_string(), format!("{} row 1", path.display()));
                    r.reason.code().to_owned()
                }
            });
        }
        assert_eq!(outcomes, ["event", "oversized", "event"]);
    }
}
