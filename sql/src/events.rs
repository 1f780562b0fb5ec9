//! The `events` table: raw prediction events of recent windows, for ad-hoc
//! slicing (`WHERE segments['region'] = 'eu'`, `numeric['age'] > 60`).
//!
//! Queries see features in maps by kind, so that one schema holds every
//! model's events: `numeric` (name → number), `categorical` (name →
//! category), `missing` (names sent as `null`) and `segments`.
//!
//! The rows are not kept that way. A map repeats every feature's name in
//! every row, and building, sorting and writing those names was most of
//! what the table cost. [`EventRows`] keeps one batch per model and
//! version instead, with a typed column per feature — `numeric.age`
//! (float), `categorical.plan` (string), `segments.region` (string), null
//! where an event did not send it — and that is how the live rows and the
//! history files hold them. [`as_queried`] builds the maps of the rows a
//! query reads, when it reads them.
//!
//! ```text
//! PredictionEvent ─► EventRows: per model and version, a column per feature ─► live rows, Parquet
//!                                                                  scan ─► as_queried ─► maps
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, Float64Builder, ListBuilder, MapArray, MapBuilder,
    MapFieldNames, RecordBatch, RecordBatchOptions, StringArray, StringBuilder,
    TimestampMillisecondBuilder, new_null_array,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit};
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

fn missing_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, false)))
}

/// The columns both forms begin with, in this order: `model_id` is first
/// and `event_time` fourth in each (the table's model and time columns).
fn leading_fields() -> Vec<Field> {
    vec![
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
    ]
}

/// The `events` table's columns, as queries see them.
pub fn events_schema() -> SchemaRef {
    let mut fields = leading_fields();
    fields.extend([
        Field::new("numeric", map_type(DataType::Float64), false),
        Field::new("categorical", map_type(DataType::Utf8), false),
        Field::new("missing", missing_type(), false),
        Field::new("segments", map_type(DataType::Utf8), false),
    ]);
    Arc::new(Schema::new(fields))
}

/// Whether `schema` is one of a stored batch of events (as [`EventRows`]
/// makes them): the leading columns, then `missing`, then feature and
/// segment columns.
pub fn is_stored(schema: &Schema) -> bool {
    let leading = leading_fields().len();
    has_leading(schema)
        && schema.fields().len() > leading
        && schema.field(leading).name() == "missing"
}

/// Whether `schema` begins with the columns both forms begin with: stored
/// events, or rows in the table's form (history files written before the
/// stored form, or compacted from files of both).
pub fn has_leading(schema: &Schema) -> bool {
    let leading = leading_fields();
    schema.fields().len() >= leading.len()
        && schema
            .fields()
            .iter()
            .zip(&leading)
            .all(|(f, l)| f.name() == l.name() && f.data_type() == l.data_type())
}

/// Which map of the table a stored column belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Numeric,
    Categorical,
    Segment,
}

impl Kind {
    /// The type of its values.
    fn value_type(self) -> DataType {
        match self {
            Kind::Numeric => DataType::Float64,
            Kind::Categorical | Kind::Segment => DataType::Utf8,
        }
    }

    /// The table's column (and the stored columns' prefix).
    fn column(self) -> &'static str {
        match self {
            Kind::Numeric => "numeric",
            Kind::Categorical => "categorical",
            Kind::Segment => "segments",
        }
    }
}

enum Values {
    Numbers(Float64Builder),
    Strings(StringBuilder),
}

/// A feature's (or segment's) column in a [`Group`].
struct Column {
    kind: Kind,
    name: Arc<str>,
    values: Values,
}

impl Column {
    fn len(&self) -> usize {
        match &self.values {
            Values::Numbers(b) => b.len(),
            Values::Strings(b) => b.len(),
        }
    }

    /// Nulls up to `row` (the events that did not send it).
    fn pad(&mut self, row: usize) {
        let n = row.saturating_sub(self.len());
        match &mut self.values {
            Values::Numbers(b) => b.append_nulls(n),
            Values::Strings(b) => b.append_nulls(n),
        }
    }

    /// Whether row `row` has no value yet (a name sent twice in one event
    /// keeps its first value).
    fn open(&mut self, row: usize) -> bool {
        self.pad(row);
        self.len() == row
    }

    fn finish(&mut self, rows: usize) -> (Field, ArrayRef) {
        self.pad(rows);
        let name = format!("{}.{}", self.kind.column(), self.name);
        match &mut self.values {
            Values::Numbers(b) => (
                Field::new(name, DataType::Float64, true),
                Arc::new(b.finish()) as ArrayRef,
            ),
            Values::Strings(b) => (
                Field::new(name, DataType::Utf8, true),
                Arc::new(b.finish()) as ArrayRef,
            ),
        }
    }
}

/// The events of one model and version gathered since the last take.
struct Group {
    model_id: Arc<str>,
    model_version: Option<Arc<str>>,
    rows: usize,
    event_id: StringBuilder,
    event_time: TimestampMillisecondBuilder,
    score: Float64Builder,
    class: StringBuilder,
    value: Float64Builder,
    missing: ListBuilder<StringBuilder>,
    columns: Vec<Column>,
    by_name: HashMap<(Kind, Arc<str>), usize>,
    /// The column of each place in the last event (features, then
    /// segments): events of one model send the same names in the same
    /// order, so the next one mostly finds its columns here.
    hint: Vec<usize>,
}

impl Group {
    fn new(e: &PredictionEvent) -> Self {
        let item = Arc::new(Field::new("item", DataType::Utf8, false));
        Group {
            model_id: Arc::clone(&e.model_id),
            model_version: e.model_version.clone(),
            rows: 0,
            event_id: StringBuilder::new(),
            event_time: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            score: Float64Builder::new(),
            class: StringBuilder::new(),
            value: Float64Builder::new(),
            missing: ListBuilder::new(StringBuilder::new()).with_field(item),
            columns: Vec::new(),
            by_name: HashMap::new(),
            hint: Vec::new(),
        }
    }

    fn holds(&self, e: &PredictionEvent) -> bool {
        let same = |a: &Arc<str>, b: &Arc<str>| Arc::ptr_eq(a, b) || a == b;
        same(&self.model_id, &e.model_id)
            && match (&self.model_version, &e.model_version) {
                (Some(a), Some(b)) => same(a, b),
                (None, None) => true,
                _ => false,
            }
    }

    /// The column of `name` of `kind`, at place `place` of the event.
    fn column(&mut self, place: usize, kind: Kind, name: &Arc<str>) -> &mut Column {
        if let Some(&c) = self.hint.get(place)
            && let Some(col) = self.columns.get(c)
            && col.kind == kind
            && (Arc::ptr_eq(&col.name, name) || col.name == *name)
        {
            return &mut self.columns[c];
        }
        let c = match self.by_name.get(&(kind, Arc::clone(name))) {
            Some(&c) => c,
            None => {
                let values = match kind {
                    Kind::Numeric => Values::Numbers(Float64Builder::new()),
                    Kind::Categorical | Kind::Segment => Values::Strings(StringBuilder::new()),
                };
                self.columns.push(Column {
                    kind,
                    name: Arc::clone(name),
                    values,
                });
                self.by_name
                    .insert((kind, Arc::clone(name)), self.columns.len() - 1);
                self.columns.len() - 1
            }
        };
        if self.hint.len() <= place {
            self.hint.resize(place + 1, usize::MAX);
        }
        self.hint[place] = c;
        &mut self.columns[c]
    }

    fn push(&mut self, e: &PredictionEvent) {
        let row = self.rows;
        self.event_id.append_value(&e.event_id);
        self.event_time.append_value(e.timestamp);
        self.score.append_option(e.prediction.score);
        self.class.append_option(e.prediction.class.as_deref());
        self.value.append_option(e.prediction.value);
        for (place, f) in e.features.iter().enumerate() {
            let kind = match &f.value {
                FeatureValue::Numeric(_) => Kind::Numeric,
                FeatureValue::Categorical(_) => Kind::Categorical,
                FeatureValue::Missing => {
                    self.missing.values().append_value(&f.name);
                    continue;
                }
            };
            let column = self.column(place, kind, &f.name);
            if !column.open(row) {
                continue;
            }
            match (&mut column.values, &f.value) {
                (Values::Numbers(b), FeatureValue::Numeric(v)) => b.append_value(*v),
                (Values::Strings(b), FeatureValue::Categorical(c)) => b.append_value(c.as_str()),
                _ => unreachable!("a column's kind is its values'"),
            }
        }
        self.missing.append(true);
        let features = e.features.len();
        for (i, (name, v)) in e.segments.iter().enumerate() {
            let column = self.column(features + i, Kind::Segment, name);
            if column.open(row)
                && let Values::Strings(b) = &mut column.values
            {
                b.append_value(v);
            }
        }
        self.rows += 1;
    }

    /// The gathered events as one batch; starts over.
    fn take(&mut self) -> Result<RecordBatch> {
        let rows = std::mem::take(&mut self.rows);
        let context = format!("events rows of model {}", self.model_id);
        let repeated = |v: &str| {
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, rows))) as ArrayRef
        };
        let mut fields = leading_fields();
        fields.push(Field::new("missing", missing_type(), false));
        let mut columns: Vec<ArrayRef> = vec![
            repeated(&self.model_id),
            match &self.model_version {
                Some(v) => repeated(v),
                None => new_null_array(&DataType::Utf8, rows),
            },
            Arc::new(self.event_id.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.score.finish()),
            Arc::new(self.class.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.missing.finish()),
        ];
        for c in &mut self.columns {
            let (field, array) = c.finish(rows);
            fields.push(field);
            columns.push(array);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(data(context))
    }
}

/// Prediction events gathered into stored `events` rows: a batch per model
/// and version, a column per feature (see the module's documentation).
#[derive(Default)]
pub struct EventRows {
    groups: Vec<Group>,
    /// The group of the last event.
    last: usize,
    rows: usize,
}

impl std::fmt::Debug for EventRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRows")
            .field("rows", &self.rows)
            .field("groups", &self.groups.len())
            .finish()
    }
}

impl EventRows {
    /// Adds one event.
    pub fn push(&mut self, e: &PredictionEvent) {
        let g = match self.groups.get(self.last) {
            Some(g) if g.holds(e) => self.last,
            _ => match self.groups.iter().position(|g| g.holds(e)) {
                Some(g) => g,
                None => {
                    self.groups.push(Group::new(e));
                    self.groups.len() - 1
                }
            },
        };
        self.last = g;
        self.groups[g].push(e);
        self.rows += 1;
    }

    /// Events gathered.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The gathered events, a batch per model and version in the order
    /// each first came; starts over. A model that sends nothing until the
    /// next take is forgotten.
    pub fn take(&mut self) -> Result<Vec<RecordBatch>> {
        self.groups.retain(|g| g.rows > 0);
        self.last = 0;
        self.rows = 0;
        self.groups.iter_mut().map(Group::take).collect()
    }
}

/// `batch`, stored `events` rows (or rows already in the table's form, as
/// history files written before the stored form hold them), in the form
/// queries see: `schema` is the table's schema or a projection of it.
pub fn as_queried(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let stored = batch.schema();
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let same = stored
                .index_of(field.name())
                .ok()
                .filter(|&i| stored.field(i).data_type() == field.data_type())
                .map(|i| batch.column(i));
            let kind = match field.name().as_str() {
                "numeric" => Kind::Numeric,
                "categorical" => Kind::Categorical,
                "segments" => Kind::Segment,
                _ => {
                    return Ok(match (same, field.name().as_str()) {
                        (Some(column), _) => Arc::clone(column),
                        (None, "missing") => empty_lists(rows),
                        (None, _) => new_null_array(field.data_type(), rows),
                    });
                }
            };
            let prefix = format!("{}.", kind.column());
            let named: Vec<(&str, &ArrayRef)> = stored
                .fields()
                .iter()
                .zip(batch.columns())
                .filter_map(|(f, a)| Some((f.name().strip_prefix(&prefix)?, a)))
                .collect();
            match same {
                Some(column) if named.is_empty() && column.null_count() == 0 => {
                    Ok(Arc::clone(column))
                }
                // rows of both forms, as a file compacted from files of
                // both holds: a row's map where it has one
                _ => map_of(kind, same.and_then(|c| c.as_map_opt()), &named, rows),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(data("events rows for a query"))
}

fn empty_lists(rows: usize) -> ArrayRef {
    let item = Arc::new(Field::new("item", DataType::Utf8, false));
    let mut b = ListBuilder::new(StringBuilder::new()).with_field(item);
    for _ in 0..rows {
        b.append(true);
    }
    Arc::new(b.finish())
}

/// The map of each row: the row's map in `maps` where it has one, else the
/// stored columns `named` (name, values) that hold a value in it.
fn map_of(
    kind: Kind,
    maps: Option<&MapArray>,
    named: &[(&str, &ArrayRef)],
    rows: usize,
) -> Result<ArrayRef> {
    match kind {
        Kind::Numeric => fill_map(kind, Float64Builder::new(), maps, named, rows, |b, a, i| {
            let a = a.as_primitive::<Float64Type>();
            b.append_option(a.is_valid(i).then(|| a.value(i)));
        }),
        Kind::Categorical | Kind::Segment => {
            fill_map(kind, StringBuilder::new(), maps, named, rows, |b, a, i| {
                let a = a.as_string::<i32>();
                b.append_option(a.is_valid(i).then(|| a.value(i)));
            })
        }
    }
}

/// [`map_of`] with `values` for the map's values, `append` adding value
/// `i` of an array of their type.
fn fill_map<V: ArrayBuilder>(
    kind: Kind,
    values: V,
    maps: Option<&MapArray>,
    named: &[(&str, &ArrayRef)],
    rows: usize,
    append: impl Fn(&mut V, &dyn Array, usize),
) -> Result<ArrayRef> {
    let context = || format!("the {} map of events rows", kind.column());
    let mut map = MapBuilder::new(Some(map_names()), StringBuilder::new(), values);
    let value_type = kind.value_type();
    let columns: Vec<&(&str, &ArrayRef)> = named
        .iter()
        .filter(|(_, a)| a.data_type() == &value_type)
        .collect();
    for row in 0..rows {
        match maps.filter(|m| m.is_valid(row)).map(|m| m.value(row)) {
            Some(entries) => {
                let keys = entries.column(0).as_string::<i32>();
                for i in 0..entries.len() {
                    map.keys().append_value(keys.value(i));
                    append(map.values(), entries.column(1).as_ref(), i);
                }
            }
            None => {
                for (name, column) in &columns {
                    if column.is_valid(row) {
                        map.keys().append_value(name);
                        append(map.values(), column.as_ref(), row);
                    }
                }
            }
        }
        map.append(true).map_err(data(context()))?;
    }
    Ok(Arc::new(map.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwatch_ingest::event::{Feature, Prediction};

    fn name(n: &str) -> Arc<str> {
        Arc::from(n)
    }

    fn event(
        id: usize,
        model: &Arc<str>,
        features: &[(&Arc<str>, FeatureValue)],
        segments: &[(&Arc<str>, &str)],
    ) -> PredictionEvent {
        PredictionEvent {
            event_id: format!("e{id}"),
            model_id: Arc::clone(model),
            model_version: Some(name("v1")),
            timestamp: 1_795_694_400_000 + id as i64,
            features: features
                .iter()
                .map(|(n, v)| Feature {
                    name: Arc::clone(n),
                    value: v.clone(),
                })
                .collect(),
            prediction: Prediction {
                score: Some(id as f64 / 10.0),
                ..Prediction::default()
            },
            segments: segments
                .iter()
                .map(|(k, v)| (Arc::clone(k), (*v).to_owned()))
                .collect(),
            label: None,
        }
    }

    /// Row `row` of a map column as `key=value` strings, in order.
    fn entries(map: &ArrayRef, row: usize) -> Vec<String> {
        let map = map.as_any().downcast_ref::<MapArray>().expect("a map");
        let entries = map.value(row);
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1);
        (0..entries.len())
            .map(|i| {
                let v = match values.as_primitive_opt::<arrow::datatypes::Float64Type>() {
                    Some(n) => n.value(i).to_string(),
                    None => values.as_string::<i32>().value(i).to_owned(),
                };
                format!("{}={v}", keys.value(i))
            })
            .collect()
    }

    #[test]
    fn stored_rows_read_back_as_the_maps_each_event_sent() {
        let (churn, fraud) = (name("churn"), name("fraud"));
        let (age, plan, amount, region) =
            (name("age"), name("plan"), name("amount"), name("region"));
        let num = FeatureValue::Numeric;
        let cat = |c: &str| FeatureValue::Categorical(c.into());
        let mut rows = EventRows::default();
        let sent = [
            event(
                0,
                &churn,
                &[(&age, num(42.0)), (&plan, cat("pro"))],
                &[(&region, "eu")],
            ),
            // a model with other features, between events of the first
            event(1, &fraud, &[(&amount, num(9.5))], &[]),
            // without a feature, in another order, with one sent as null,
            // and a feature of a new name half-way through the batch
            event(
                2,
                &churn,
                &[(&plan, cat("free")), (&age, FeatureValue::Missing)],
                &[],
            ),
            event(
                3,
                &churn,
                &[(&age, num(7.0)), (&amount, num(1.0))],
                &[(&region, "us")],
            ),
            // a name sent with another kind is a column of that kind
            event(4, &churn, &[(&age, cat("old"))], &[]),
        ];
        for e in &sent {
            rows.push(e);
        }
        assert_eq!(rows.len(), 5);
        let batches = rows.take().expect("take");
        assert!(rows.is_empty());
        assert_eq!(batches.len(), 2, "one batch per model and version");
        assert!(batches.iter().all(|b| is_stored(&b.schema())));
        let stored = batches[0].schema();
        let names: Vec<&str> = stored
            .fields()
            .iter()
            .skip(8)
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            [
                "numeric.age",
                "categorical.plan",
                "segments.region",
                "numeric.amount",
                "categorical.age"
            ]
        );
        let schema = events_schema();
        let churn_rows = as_queried(&batches[0], &schema).expect("as queried");
        let fraud_rows = as_queried(&batches[1], &schema).expect("as queried");
        assert_eq!(churn_rows.schema(), schema);
        assert_eq!(churn_rows.num_rows(), 4);
        let column = |b: &RecordBatch, c: &str| Arc::clone(b.column(schema.index_of(c).unwrap()));
        let ids = column(&churn_rows, "event_id");
        let ids: Vec<&str> = ids.as_string::<i32>().iter().flatten().collect();
        assert_eq!(ids, ["e0", "e2", "e3", "e4"]);
        let maps = |b: &RecordBatch, row: usize| {
            (
                entries(&column(b, "numeric"), row),
                entries(&column(b, "categorical"), row),
                entries(&column(b, "segments"), row),
            )
        };
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            maps(&churn_rows, 0),
            (s(&["age=42"]), s(&["plan=pro"]), s(&["region=eu"]))
        );
        assert_eq!(maps(&churn_rows, 1), (s(&[]), s(&["plan=free"]), s(&[])));
        assert_eq!(
            maps(&churn_rows, 2),
            (s(&["age=7", "amount=1"]), s(&[]), s(&["region=us"]))
        );
        assert_eq!(maps(&churn_rows, 3), (s(&[]), s(&["age=old"]), s(&[])));
        assert_eq!(maps(&fraud_rows, 0), (s(&["amount=9.5"]), s(&[]), s(&[])));
        let missing = column(&churn_rows, "missing");
        let missing = missing.as_list::<i32>();
        assert_eq!(missing.value(0).len(), 0);
        assert_eq!(missing.value(1).as_string::<i32>().value(0), "age");
        let models = column(&fraud_rows, "model_id");
        assert_eq!(models.as_string::<i32>().value(0), "fraud");
        let scores = column(&churn_rows, "score");
        let scores = scores.as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(scores.value(2), 0.3);
    }

    #[test]
    fn a_query_gets_the_columns_it_reads_and_every_row() {
        let churn = name("churn");
        let age = name("age");
        let mut rows = EventRows::default();
        for i in 0..3 {
            rows.push(&event(
                i,
                &churn,
                &[(&age, FeatureValue::Numeric(i as f64))],
                &[],
            ));
        }
        let batch = rows.take().expect("take").remove(0);
        let full = events_schema();
        let numeric = Arc::new(full.project(&[7]).unwrap());
        let only = as_queried(&batch, &numeric).expect("projected");
        assert_eq!(only.num_columns(), 1);
        assert_eq!(entries(only.column(0), 2), ["age=2"]);
        // count(*) reads no column at all
        let none = Arc::new(full.project(&[]).unwrap());
        assert_eq!(as_queried(&batch, &none).expect("no columns").num_rows(), 3);
        // rows already in the table's form pass through
        let queried = as_queried(&batch, &full).expect("as queried");
        assert_eq!(as_queried(&queried, &full).expect("again"), queried);
    }

    #[test]
    fn a_model_that_stops_sending_is_forgotten_at_the_next_take() {
        let (a, b) = (name("a"), name("b"));
        let mut rows = EventRows::default();
        rows.push(&event(0, &a, &[], &[]));
        rows.push(&event(1, &b, &[], &[]));
        assert_eq!(rows.take().expect("take").len(), 2);
        rows.push(&event(2, &b, &[], &[]));
        let batches = rows.take().expect("take");
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].column(0).as_string::<i32>().value(0), "b");
        assert!(rows.take().expect("take").is_empty());
    }
}
