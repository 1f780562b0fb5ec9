//! Figures that need no label: a classifier's performance estimated from
//! its calibrated scores (CBPE, [`crate::performance::estimate`]; binary,
//! and multi-class one class against the rest) and
//! the multivariate drift of its features (PCA reconstruction error,
//! [`crate::multivariate`]), per window, for the model versions that have
//! a [`LabelFreeReference`] (built with their reference profile from a
//! labelled training or validation set).
//!
//! ```text
//! reference files ─► calibration, components ─► LabelFreeReference (data dir)
//!                                                   │ looked up once per window
//! prediction ─► calibrated score ─► expected confusion counts ─┐
//!           └─► encoded row ─► reconstruction error ───────────┴─► estimated_metrics, multivariate_drift
//! ```
//!
//! Per prediction of such a model: one calibration lookup (binary search
//! over the fitted points), a few additions, and for the multivariate
//! figure one pass over the features and 2·d·k multiply-adds (d features,
//! k components). Models without one cost a branch.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use driftwatch_ingest::{FeatureValue, PredictionEvent};
use serde::{Deserialize, Serialize};

use crate::component::Component;
use crate::error::{Error, Result};
use crate::multivariate::{ErrorSums, Reconstruction, mean_sd};
use crate::performance::estimate::{
    Estimated, Expected, Isotonic, Multiclass, MulticlassExpected, MulticlassFigures,
    ReferenceFigures,
};
use crate::windows::WindowKey;

/// A classifier's calibration and what its reference said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Calibration {
    /// Two classes, a score.
    Binary(BinaryCalibration),
    /// More classes, a probability each (one vs the rest).
    Multiclass {
        /// The classes' calibrations.
        calibration: Multiclass,
        /// The reference's realised figures.
        reference: MulticlassFigures,
    },
}

/// A binary classifier's calibration and what its reference said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryCalibration {
    /// The positive class.
    pub positive: String,
    /// The score from which positive is predicted when an event has no class.
    pub threshold: f64,
    /// Scores to probabilities of the positive class.
    pub isotonic: Isotonic,
    /// The reference's realised figures.
    pub reference: ReferenceFigures,
}

impl BinaryCalibration {
    /// Whether a prediction said positive: its class, else its score
    /// against the threshold.
    pub fn predicted_positive(&self, class: Option<&str>, score: f64) -> bool {
        match class {
            Some(c) => c == self.positive,
            None => score >= self.threshold,
        }
    }
}

/// What a calibration's reference said, for people.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationFigures {
    /// Labelled predictions.
    pub labelled: u64,
    /// Classes.
    pub classes: usize,
    /// The realised metrics (macro averages for more than two classes).
    pub realised: Estimated,
    /// A binary model's scores' expected calibration error.
    pub calibration_error: Option<f64>,
}

impl Calibration {
    /// What its reference said.
    pub fn figures(&self) -> CalibrationFigures {
        match self {
            Calibration::Binary(b) => CalibrationFigures {
                labelled: b.reference.n,
                classes: 2,
                realised: b.reference.realised,
                calibration_error: Some(b.reference.calibration_error),
            },
            Calibration::Multiclass {
                calibration,
                reference,
            } => CalibrationFigures {
                labelled: reference.per_class.first().map_or(0, |f| f.n),
                classes: calibration.classes.len(),
                realised: reference.realised,
                calibration_error: None,
            },
        }
    }

    /// The sampling errors of a window of `n` predictions, in the order
    /// of [`Estimated::named`].
    pub fn sampling_errors(&self, n: u64) -> [Option<f64>; 5] {
        match self {
            Calibration::Binary(b) => b.reference.sampling_errors(n),
            Calibration::Multiclass { reference, .. } => reference.sampling_errors(n),
        }
    }
}

/// How a feature enters a row of the reconstruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Encoding {
    /// Its value.
    Numeric,
    /// The share of the reference's values in its category (0 for a
    /// category the reference never saw): NannyML's frequency encoding.
    Frequency(HashMap<String, f64>),
}

/// Turns a prediction's features into a row of numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowEncoder {
    /// Feature names and encodings, in row order.
    columns: Vec<(String, Encoding)>,
    /// What a missing value (or one of the other kind) is taken as: the
    /// reference's mean, or its most frequent category's share (NannyML's
    /// imputation).
    fill: Vec<f64>,
    index: HashMap<String, usize>,
}

impl RowEncoder {
    /// An encoder of `columns`, each with its fill value.
    pub fn new(columns: Vec<(String, Encoding, f64)>) -> Self {
        let index = columns
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| (name.clone(), i))
            .collect();
        let fill = columns.iter().map(|c| c.2).collect();
        RowEncoder {
            columns: columns.into_iter().map(|(n, e, _)| (n, e)).collect(),
            fill,
            index,
        }
    }

    /// Columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Fills `row` with the encoded features of `event`. `positions`
    /// caches which column each of the event's features goes to (a model's
    /// events send their features in the same order, names interned).
    pub fn encode(&self, event: &PredictionEvent, positions: &mut Positions, row: &mut Vec<f64>) {
        row.clear();
        row.extend_from_slice(&self.fill);
        for (p, f) in event.features.iter().enumerate() {
            if positions.0.len() <= p {
                positions.0.resize(p + 1, (None, None));
            }
            let slot = &mut positions.0[p];
            let column = match &slot.0 {
                Some(name) if Arc::ptr_eq(name, &f.name) => slot.1,
                _ => {
                    let c = self.index.get(&*f.name).copied();
                    *slot = (Some(Arc::clone(&f.name)), c);
                    c
                }
            };
            let Some(c) = column else { continue };
            match (&f.value, &self.columns[c].1) {
                (FeatureValue::Numeric(x), Encoding::Numeric) if x.is_finite() => row[c] = *x,
                (FeatureValue::Categorical(v), Encoding::Frequency(shares)) => {
                    row[c] = shares.get(v.as_str()).copied().unwrap_or(0.0);
                }
                _ => {}
            }
        }
    }
}

/// Where each feature of an event goes in a row, by its position.
#[derive(Debug, Clone, Default)]
pub struct Positions(Vec<(Option<Arc<str>>, Option<usize>)>);

/// The multivariate drift reference: the features, their encoding, the
/// fitted components and the reference's own errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Multivariate {
    /// The features as rows.
    pub encoder: RowEncoder,
    /// The fit.
    pub reconstruction: Reconstruction,
    /// The reference rows' errors.
    pub reference: ErrorSums,
    /// Mean error of each window of the reference (by event time, the
    /// service's window size), when it spans more than one.
    pub reference_windows: Vec<f64>,
}

impl Multivariate {
    /// The band a window of `n` rows is expected in: the reference
    /// windows' mean error (the reference rows' mean without two reference
    /// windows) ± 3 standard deviations — of the reference windows' means
    /// (NannyML's thresholds), but never less than the sampling error of a
    /// mean of `n` rows of the reference's spread: a few reference windows
    /// can agree more closely than windows of `n` rows can.
    pub fn band(&self, n: u64) -> Option<(f64, f64)> {
        let sampling = self.reference.sd()? / (n.max(1) as f64).sqrt();
        let (mean, spread) = if self.reference_windows.len() >= 2 {
            let (mean, sd) = mean_sd(&self.reference_windows)?;
            (mean, sd.max(sampling))
        } else {
            (self.reference.mean()?, sampling)
        };
        Some(((mean - 3.0 * spread).max(0.0), mean + 3.0 * spread))
    }
}

/// What a model version has for label-free figures, as stored beside its
/// reference profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelFreeReference {
    /// Format version.
    pub format: u32,
    /// Model id.
    pub model_id: String,
    /// Model version, if it is for one.
    pub model_version: Option<String>,
    /// SHA-256 of the profile file it was built with: a label-free
    /// reference is only used beside that profile (a build killed between
    /// the two files leaves them apart).
    pub profile_sha256: [u8; 32],
    /// Binary classifiers with labelled reference scores.
    pub calibration: Option<Calibration>,
    /// Two or more features.
    pub multivariate: Option<Multivariate>,
}

/// Format of [`LabelFreeReference`] this build writes and reads.
pub const LABEL_FREE_FORMAT: u32 = 1;

impl LabelFreeReference {
    /// Writes it (postcard) atomically and durably.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let bytes = postcard::to_stdvec(self).map_err(|e| Error::Decode {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        driftwatch_ingest::durable::write(path, &bytes).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads what [`save`](Self::save) wrote.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let bad = |e: postcard::Error| Error::Decode {
            path: path.to_owned(),
            message: format!("not a driftwatch label-free reference: {e}"),
        };
        let (format, _) = postcard::take_from_bytes::<u32>(&bytes).map_err(bad)?;
        if format != LABEL_FREE_FORMAT {
            return Err(Error::Decode {
                path: path.to_owned(),
                message: format!(
                    "label-free reference format {format}, this build reads format \
                     {LABEL_FREE_FORMAT}: build the reference again with `driftwatch reference build`"
                ),
            });
        }
        postcard::from_bytes(&bytes).map_err(bad)
    }
}

type ModelKey = (Arc<str>, Option<Arc<str>>);

/// The label-free references of the process, shared by every pipeline:
/// loaded from the data directory at start and stored while it runs.
#[derive(Debug, Default)]
pub struct LabelFreeReferences(RwLock<HashMap<ModelKey, Arc<LabelFreeReference>>>);

impl LabelFreeReferences {
    /// Makes `reference` its model version's from the next window on.
    pub fn set(&self, reference: LabelFreeReference) {
        let key = (
            Arc::from(reference.model_id.as_str()),
            reference.model_version.as_deref().map(Arc::from),
        );
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, Arc::new(reference));
    }

    /// Its model version has none from now on.
    pub fn remove(&self, model: &str, version: Option<&str>) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(Arc::from(model), version.map(Arc::from)));
    }

    /// A model version's reference, else its model's version-less one.
    fn get(&self, model: &Arc<str>, version: Option<&Arc<str>>) -> Option<Arc<LabelFreeReference>> {
        let map = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&(Arc::clone(model), version.cloned()))
            .or_else(|| map.get(&(Arc::clone(model), None)))
            .cloned()
    }

    /// Model versions that have one.
    pub fn len(&self) -> usize {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether none has one.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-window state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LabelFreeState {
    expected: Expected,
    multiclass: MulticlassExpected,
    /// predictions of a calibrated model without a score
    unscored: u64,
    errors: ErrorSums,
    /// the window's reference, looked up at its first prediction
    #[serde(skip)]
    reference: Option<Option<Arc<LabelFreeReference>>>,
    #[serde(skip)]
    positions: Positions,
    #[serde(skip)]
    row: Vec<f64>,
    /// a multi-class prediction's probabilities, as sent and calibrated
    #[serde(skip)]
    probabilities: (Vec<f64>, Vec<f64>),
}

/// The label-free component (tables `estimated_metrics`,
/// `multivariate_drift`).
#[derive(Debug, Default)]
pub struct LabelFree {
    references: Arc<LabelFreeReferences>,
}

impl LabelFree {
    /// A component reading `references`.
    pub fn new(references: Arc<LabelFreeReferences>) -> Self {
        LabelFree { references }
    }
}

/// A multi-class prediction's probabilities in the order of `classes`
/// (a class it does not name is 0) into `raw`, and the index of its
/// predicted class: its `class`, else the most probable (the first of
/// equal maxima); `None` without probabilities or with a class the
/// reference never had.
fn class_probabilities(
    prediction: &driftwatch_ingest::Prediction,
    classes: &[String],
    raw: &mut Vec<f64>,
) -> Option<usize> {
    if prediction.probabilities.is_empty() {
        return None;
    }
    raw.clear();
    raw.extend(classes.iter().map(|c| {
        prediction
            .probabilities
            .iter()
            .find(|(name, _)| name == c)
            .map_or(0.0, |(_, p)| *p)
    }));
    match &prediction.class {
        Some(class) => classes.iter().position(|c| c == class),
        None => raw
            .iter()
            .enumerate()
            .fold(None::<(usize, f64)>, |best, (i, p)| match best {
                Some((_, b)) if b >= *p => best,
                _ => Some((i, *p)),
            })
            .map(|(i, _)| i),
    }
}

fn f64_field(name: &str) -> Field {
    Field::new(name, DataType::Float64, true)
}

/// Schema of `estimated_metrics` (after the window key).
fn estimated_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("predictions", DataType::UInt64, false),
        Field::new("metric", DataType::Utf8, false),
        f64_field("value"),
        f64_field("sampling_error"),
        f64_field("lower"),
        f64_field("upper"),
        f64_field("reference_value"),
        f64_field("lower_threshold"),
        Field::new("alert", DataType::Boolean, false),
        Field::new("unscored", DataType::UInt64, false),
    ]))
}

/// Schema of `multivariate_drift` (after the window key).
fn multivariate_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("rows", DataType::UInt64, false),
        Field::new("features", DataType::UInt64, false),
        Field::new("components", DataType::UInt64, false),
        f64_field("reconstruction_error"),
        f64_field("sampling_error"),
        f64_field("reference_error"),
        f64_field("lower_threshold"),
        f64_field("upper_threshold"),
        Field::new("alert", DataType::Boolean, false),
    ]))
}

impl Component for LabelFree {
    type State = LabelFreeState;

    fn tables(&self) -> Vec<(String, SchemaRef)> {
        vec![
            ("estimated_metrics".into(), estimated_schema()),
            ("multivariate_drift".into(), multivariate_schema()),
        ]
    }

    fn new_state(&self) -> Self::State {
        LabelFreeState::default()
    }

    fn update(&self, state: &mut Self::State, event: &PredictionEvent) {
        let LabelFreeState {
            expected,
            multiclass,
            unscored,
            errors,
            reference,
            positions,
            row,
            probabilities: (raw, calibrated),
        } = state;
        let loaded = reference.get_or_insert_with(|| {
            self.references
                .get(&event.model_id, event.model_version.as_ref())
        });
        let Some(loaded) = loaded else { return };
        match &loaded.calibration {
            Some(Calibration::Binary(c)) => match event.prediction.score {
                Some(score) if score.is_finite() => {
                    let positive = c.predicted_positive(event.prediction.class.as_deref(), score);
                    expected.add(score, c.isotonic.calibrate(score), positive);
                }
                _ => *unscored += 1,
            },
            Some(Calibration::Multiclass { calibration, .. }) => {
                match class_probabilities(&event.prediction, &calibration.classes, raw) {
                    Some(predicted) => {
                        calibration.calibrate(raw, calibrated);
                        multiclass.add(raw, calibrated, predicted);
                    }
                    None => *unscored += 1,
                }
            }
            None => {}
        }
        if let Some(m) = &loaded.multivariate {
            m.encoder.encode(event, positions, row);
            errors.add(m.reconstruction.error_in_place(row));
        }
    }

    fn merge(&self, into: &mut Self::State, other: Self::State) {
        into.expected.merge(&other.expected);
        into.multiclass.merge(&other.multiclass);
        into.unscored += other.unscored;
        into.errors.merge(&other.errors);
        if into.reference.is_none() {
            into.reference = other.reference;
        }
    }

    fn finish(&self, key: &WindowKey, state: Self::State) -> Result<Vec<RecordBatch>, ArrowError> {
        let loaded = match state.reference {
            Some(r) => r,
            None => self
                .references
                .get(&key.model_id, key.model_version.as_ref()),
        };
        let reference = loaded.as_deref();
        let calibration = reference.and_then(|r| r.calibration.as_ref());
        let multivariate = reference.and_then(|r| r.multivariate.as_ref());

        let mut e = EstimatedRows::default();
        if let Some(c) = calibration {
            let (n, estimate) = match c {
                Calibration::Binary(_) => (state.expected.n, state.expected.estimate()),
                Calibration::Multiclass { .. } => (state.multiclass.n, state.multiclass.estimate()),
            };
            if n + state.unscored > 0 {
                for (((metric, value), se), (_, reference)) in estimate
                    .named()
                    .into_iter()
                    .zip(c.sampling_errors(n))
                    .zip(c.figures().realised.named())
                {
                    e.push(n, metric, value, se, reference, state.unscored);
                }
            }
        }
        let mut m = MultivariateRows::default();
        if let Some(mv) = multivariate
            && state.errors.n > 0
        {
            m.push(mv, &state.errors);
        }
        Ok(vec![e.batch()?, m.batch()?])
    }
}

#[derive(Default)]
struct EstimatedRows {
    predictions: Vec<u64>,
    metric: Vec<&'static str>,
    value: Vec<Option<f64>>,
    sampling_error: Vec<Option<f64>>,
    lower: Vec<Option<f64>>,
    upper: Vec<Option<f64>>,
    reference: Vec<Option<f64>>,
    lower_threshold: Vec<Option<f64>>,
    alert: Vec<bool>,
    unscored: Vec<u64>,
}

impl EstimatedRows {
    fn push(
        &mut self,
        n: u64,
        metric: &'static str,
        value: Option<f64>,
        se: Option<f64>,
        reference: Option<f64>,
        unscored: u64,
    ) {
        let band = |sign: f64| match (value, se) {
            (Some(v), Some(s)) => Some((v + sign * 3.0 * s).clamp(0.0, 1.0)),
            _ => None,
        };
        let threshold = match (reference, se) {
            (Some(r), Some(s)) => Some((r - 3.0 * s).max(0.0)),
            _ => None,
        };
        self.predictions.push(n);
        self.metric.push(metric);
        self.value.push(value);
        self.sampling_error.push(se);
        self.lower.push(band(-1.0));
        self.upper.push(band(1.0));
        self.reference.push(reference);
        self.lower_threshold.push(threshold);
        self.alert
            .push(matches!((value, threshold), (Some(v), Some(t)) if v < t));
        self.unscored.push(unscored);
    }

    fn batch(self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(self.predictions)),
            Arc::new(StringArray::from(self.metric)),
            Arc::new(Float64Array::from(self.value)),
            Arc::new(Float64Array::from(self.sampling_error)),
            Arc::new(Float64Array::from(self.lower)),
            Arc::new(Float64Array::from(self.upper)),
            Arc::new(Float64Array::from(self.reference)),
            Arc::new(Float64Array::from(self.lower_threshold)),
            Arc::new(BooleanArray::from(self.alert)),
            Arc::new(UInt64Array::from(self.unscored)),
        ];
        RecordBatch::try_new(estimated_schema(), columns)
    }
}

#[derive(Default)]
struct MultivariateRows {
    rows: Vec<u64>,
    features: Vec<u64>,
    components: Vec<u64>,
    error: Vec<Option<f64>>,
    sampling_error: Vec<Option<f64>>,
    reference: Vec<Option<f64>>,
    lower: Vec<Option<f64>>,
    upper: Vec<Option<f64>>,
    alert: Vec<bool>,
}

impl MultivariateRows {
    fn push(&mut self, m: &Multivariate, sums: &ErrorSums) {
        let error = sums.mean();
        let band = m.band(sums.n);
        self.rows.push(sums.n);
        self.features.push(m.encoder.len() as u64);
        self.components.push(m.reconstruction.components() as u64);
        self.error.push(error);
        self.sampling_error.push(sums.sampling_error());
        self.reference.push(m.reference.mean());
        self.lower.push(band.map(|b| b.0));
        self.upper.push(band.map(|b| b.1));
        self.alert
            .push(matches!((error, band), (Some(e), Some((lo, hi))) if e < lo || e > hi));
    }

    fn batch(self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(self.rows)),
            Arc::new(UInt64Array::from(self.features)),
            Arc::new(UInt64Array::from(self.components)),
            Arc::new(Float64Array::from(self.error)),
            Arc::new(Float64Array::from(self.sampling_error)),
            Arc::new(Float64Array::from(self.reference)),
            Arc::new(Float64Array::from(self.lower)),
            Arc::new(Float64Array::from(self.upper)),
            Arc::new(BooleanArray::from(self.alert)),
        ];
        RecordBatch::try_new(multivariate_schema(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multivariate::{DEFAULT_VARIANCE_SHARE, Moments};
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, UInt64Type};
    use driftwatch_ingest::{Feature, Prediction};

    fn event(x: f64, y: f64, plan: &str, score: f64, names: &[Arc<str>; 3]) -> PredictionEvent {
        PredictionEvent {
            event_id: "e".into(),
            model_id: Arc::from("m"),
            model_version: Some(Arc::from("v1")),
            timestamp: 0,
            features: vec![
                Feature {
                    name: Arc::clone(&names[0]),
                    value: FeatureValue::Numeric(x),
                },
                Feature {
                    name: Arc::clone(&names[1]),
                    value: FeatureValue::Numeric(y),
                },
                Feature {
                    name: Arc::clone(&names[2]),
                    value: FeatureValue::Categorical(plan.into()),
                },
            ],
            prediction: Prediction {
                score: Some(score),
                ..Prediction::default()
            },
            segments: Vec::new(),
            label: None,
        }
    }

    /// A reference where `y` follows `x` and scores are right as often as
    /// they say.
    fn reference(names: &[Arc<str>; 3]) -> LabelFreeReference {
        let encoder = RowEncoder::new(vec![
            ("x".into(), Encoding::Numeric, 0.0),
            ("y".into(), Encoding::Numeric, 0.0),
            (
                "plan".into(),
                Encoding::Frequency(HashMap::from([("a".into(), 0.75), ("b".into(), 0.25)])),
                0.75,
            ),
        ]);
        let mut moments = Moments::new(3);
        let (mut positions, mut row) = (Positions::default(), Vec::new());
        for i in 0..400 {
            let x = f64::from(i % 40) / 10.0 - 2.0;
            let plan = if i % 4 == 0 { "b" } else { "a" };
            let noise = f64::from(i % 7) / 20.0 - 0.15;
            encoder.encode(
                &event(x, x + noise, plan, 0.5, names),
                &mut positions,
                &mut row,
            );
            moments.add(&row);
        }
        let reconstruction = Reconstruction::fit(&moments, DEFAULT_VARIANCE_SHARE).expect("fit");
        let mut errors = ErrorSums::default();
        for i in 0..400 {
            let x = f64::from(i % 40) / 10.0 - 2.0;
            let noise = f64::from(i % 7) / 20.0 - 0.15;
            encoder.encode(
                &event(x, x + noise, "a", 0.5, names),
                &mut positions,
                &mut row,
            );
            errors.add(reconstruction.error_in_place(&mut row));
        }
        // scores 0.1 and 0.9, right 9 times in 10
        let rows: Vec<(f64, bool, bool)> = (0..100)
            .map(|i| {
                let s = if i % 2 == 0 { 0.9 } else { 0.1 };
                let right = i % 10 != 0;
                (s, (s > 0.5) == right, s > 0.5)
            })
            .collect();
        LabelFreeReference {
            format: LABEL_FREE_FORMAT,
            model_id: "m".into(),
            model_version: None,
            profile_sha256: [0; 32],
            calibration: Some(Calibration::Binary(BinaryCalibration {
                positive: "1".into(),
                threshold: 0.5,
                isotonic: Isotonic::fit(rows.iter().map(|r| (r.0, r.1))).expect("fit"),
                reference: ReferenceFigures::of(&rows).expect("figures"),
            })),
            multivariate: Some(Multivariate {
                encoder,
                reconstruction,
                reference: errors,
                reference_windows: Vec::new(),
            }),
        }
    }

    fn key() -> WindowKey {
        WindowKey {
            model_id: Arc::from("m"),
            model_version: Some(Arc::from("v1")),
            start: 0,
            end: 3_600_000,
        }
    }

    fn column(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
        batch
            .column_by_name(name)
            .expect("column")
            .as_primitive::<Float64Type>()
            .iter()
            .collect()
    }

    #[test]
    fn a_window_of_a_model_with_a_reference_gets_estimates_and_its_reconstruction_error() {
        let names: [Arc<str>; 3] = [Arc::from("x"), Arc::from("y"), Arc::from("plan")];
        let references = Arc::new(LabelFreeReferences::default());
        let component = LabelFree::new(Arc::clone(&references));
        // no reference yet: no rows, and the window never looks again
        let mut before = component.new_state();
        component.update(&mut before, &event(0.0, 0.0, "a", 0.9, &names));
        references.set(reference(&names));
        component.update(&mut before, &event(0.0, 0.0, "a", 0.9, &names));
        let rows = component.finish(&key(), before).expect("rows");
        assert_eq!((rows[0].num_rows(), rows[1].num_rows()), (0, 0));

        let mut state = component.new_state();
        for i in 0..200 {
            let x = f64::from(i % 40) / 10.0 - 2.0;
            let s = if i % 2 == 0 { 0.9 } else { 0.1 };
            component.update(&mut state, &event(x, x, "a", s, &names));
        }
        // a restored state goes on the same way
        let bytes = postcard::to_stdvec(&state).expect("saved");
        let state: LabelFreeState = postcard::from_bytes(&bytes).expect("restored");
        let mut broken = component.new_state();
        for i in 0..200 {
            let x = f64::from(i % 40) / 10.0 - 2.0;
            // y no longer follows x; the same marginal
            let y = f64::from((i * 17) % 40) / 10.0 - 2.0;
            component.update(&mut broken, &event(x, y, "a", 0.9, &names));
        }
        let same = component.finish(&key(), state).expect("rows");
        let estimated = &same[0];
        assert_eq!(estimated.num_rows(), 5);
        let metrics: Vec<&str> = estimated
            .column_by_name("metric")
            .expect("metric")
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(
            metrics,
            ["accuracy", "precision", "recall", "f1", "roc_auc"]
        );
        let value = column(estimated, "value");
        let reference = column(estimated, "reference_value");
        // the calibration maps 0.9 to 0.9 and 0.1 to 0.1: accuracy 0.9
        assert!((value[0].expect("accuracy") - 0.9).abs() < 1e-9);
        assert!((reference[0].expect("reference") - 0.9).abs() < 1e-9);
        let se = column(estimated, "sampling_error")[0].expect("se");
        assert!((se - (0.09f64 / 200.0).sqrt()).abs() < 1e-12);
        let lower = column(estimated, "lower")[0].expect("lower");
        assert!(
            (lower - (0.9 - 3.0 * se)).abs() < 1e-12,
            "the band around the estimate"
        );
        let alerts = estimated
            .column_by_name("alert")
            .expect("alert")
            .as_boolean()
            .iter()
            .collect::<Vec<_>>();
        assert!(alerts.iter().all(|a| *a == Some(false)), "{alerts:?}");

        let mv = &same[1];
        assert_eq!(mv.num_rows(), 1);
        let rows_used = mv
            .column_by_name("rows")
            .expect("rows")
            .as_primitive::<UInt64Type>();
        assert_eq!(rows_used.value(0), 200);
        let low = column(mv, "reconstruction_error")[0].expect("error");
        let upper = column(mv, "upper_threshold")[0].expect("upper");
        assert!(low <= upper, "{low} within {upper}");

        let broken = component.finish(&key(), broken).expect("rows");
        let high = column(&broken[1], "reconstruction_error")[0].expect("error");
        assert!(
            high > upper && high > 1.5 * low,
            "{high} vs {low}, band to {upper}"
        );
        assert!(
            broken[1]
                .column_by_name("alert")
                .expect("alert")
                .as_boolean()
                .value(0),
            "outside the band"
        );
        // all scores 0.9 predicted positive: accuracy 0.9, recall 1
        let value = column(&broken[0], "value");
        assert!((value[2].expect("recall") - 1.0).abs() < 1e-9);

        // another model has none; removing it ends the figures
        let mut other = event(0.0, 0.0, "a", 0.9, &names);
        other.model_id = Arc::from("n");
        let mut state = component.new_state();
        component.update(&mut state, &other);
        let rows = component.finish(&key(), state).expect("rows");
        assert_eq!(rows[0].num_rows() + rows[1].num_rows(), 0);
    }

    #[test]
    fn a_multiclass_window_is_estimated_from_its_calibrated_probabilities() {
        let classes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        // said with 0.8, right 3 times in 5
        let rows: Vec<(Vec<f64>, usize, usize)> = (0..300)
            .map(|i| {
                let said = i % 3;
                let truth = if i % 5 < 3 { said } else { (said + 1) % 3 };
                let mut p = vec![0.1; 3];
                p[said] = 0.8;
                (p, truth, said)
            })
            .collect();
        let fit: Vec<(Vec<f64>, usize)> = rows.iter().map(|r| (r.0.clone(), r.1)).collect();
        let references = Arc::new(LabelFreeReferences::default());
        references.set(LabelFreeReference {
            format: LABEL_FREE_FORMAT,
            model_id: "m".into(),
            model_version: None,
            profile_sha256: [0; 32],
            calibration: Some(Calibration::Multiclass {
                calibration: Multiclass::fit(classes, &fit).expect("fit"),
                reference: MulticlassFigures::of(&rows, 3).expect("figures"),
            }),
            multivariate: None,
        });
        let component = LabelFree::new(references);
        let mut state = component.new_state();
        let names: [Arc<str>; 3] = [Arc::from("x"), Arc::from("y"), Arc::from("plan")];
        for i in 0..100 {
            let mut e = event(0.0, 0.0, "a", 0.5, &names);
            e.prediction = driftwatch_ingest::Prediction {
                // in another order than the reference's classes; the class
                // is left to the largest probability
                probabilities: vec![
                    ("c".into(), if i % 2 == 0 { 0.8 } else { 0.1 }),
                    ("a".into(), if i % 2 == 0 { 0.1 } else { 0.8 }),
                    ("b".into(), 0.1),
                ],
                ..driftwatch_ingest::Prediction::default()
            };
            component.update(&mut state, &e);
        }
        // no probabilities: counted, not estimated
        component.update(&mut state, &event(0.0, 0.0, "a", 0.5, &names));
        let rows = component.finish(&key(), state).expect("rows");
        let estimated = &rows[0];
        assert_eq!(estimated.num_rows(), 5);
        let accuracy = column(estimated, "value")[0].expect("accuracy");
        assert!((accuracy - 0.6).abs() < 1e-9, "{accuracy}");
        let unscored = estimated
            .column_by_name("unscored")
            .expect("unscored")
            .as_primitive::<UInt64Type>()
            .value(0);
        assert_eq!(unscored, 1);
        assert_eq!(rows[1].num_rows(), 0, "no multivariate reference");
    }

    #[test]
    fn a_label_free_reference_round_trips_and_names_another_format() {
        let names: [Arc<str>; 3] = [Arc::from("x"), Arc::from("y"), Arc::from("plan")];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v1.labelfree");
        let r = reference(&names);
        r.save(&path).expect("saved");
        assert_eq!(LabelFreeReference::load(&path).expect("loaded"), r);
        let mut old = r.clone();
        old.format = 0;
        old.save(&path).expect("saved");
        let err = LabelFreeReference::load(&path)
            .expect_err("format 0")
            .to_string();
        assert!(
            err.contains("format 0") && err.contains("reference build"),
            "{err}"
        );
    }

    #[test]
    fn the_band_scales_with_the_window_without_reference_windows() {
        let names: [Arc<str>; 3] = [Arc::from("x"), Arc::from("y"), Arc::from("plan")];
        let m = reference(&names).multivariate.expect("multivariate");
        let (lo1, hi1) = m.band(100).expect("band");
        let (lo2, hi2) = m.band(10_000).expect("band");
        assert!((hi1 - lo1) > 5.0 * (hi2 - lo2) * 0.99, "√100 narrower");
        let mut windows = m.clone();
        windows.reference_windows = vec![1.0, 1.0001, 0.9999];
        let (lo, hi) = windows.band(1 << 40).expect("band");
        let sd = (2e-8f64 / 3.0).sqrt();
        assert!((lo - (1.0 - 3.0 * sd)).abs() < 1e-12 && (hi - (1.0 + 3.0 * sd)).abs() < 1e-12);
        assert_eq!(
            windows.band(1 << 40),
            windows.band(1 << 41),
            "NannyML's: fixed"
        );
        // a window of few rows varies more than the reference windows did
        let (lo, hi) = windows.band(1).expect("band");
        let rows = m.reference.sd().expect("sd");
        assert!((hi - (1.0 + 3.0 * rows)).abs() < 1e-12, "{lo} {hi}");
    }
}
