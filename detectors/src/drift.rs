//! The drift and data-quality detector: per window, a sketch of every feature
//! and of the model's output, compared with the model version's reference.
//!
//! Until a reference profile is loaded, the first closed window of each model
//! version becomes its reference ("the first window after deploy"); its rows
//! say `reference`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use driftwatch_ingest::event::{ARROW_TIMEZONE, arrow_time_type};
use driftwatch_ingest::{EventTime, FeatureKind, FeatureValue, PredictionEvent};

use crate::component::Component;
use crate::error::{Error, Result};
use crate::sketch::{
    CategoricalSketch, NumericSketch, SketchView, categorical_drift, numeric_drift,
    stats::PSI_EPSILON,
};
use crate::slots::FeatureSlots;
use crate::windows::WindowKey;

/// How far above its chance level a statistic must be before it counts: the
/// chance level is sqrt(1/n_ref + 1/n_cur) for the normalised Wasserstein
/// distance (its mean under no drift is about 1.2 times that, its 99th
/// percentile about 2.7 times), (bins − 1)(1/n_ref + 1/n_cur) for PSI, and
/// sqrt((k − 1)(1/n_ref + 1/n_cur) / (8 ln 2)) for the JS distance of k categories.
pub const NOISE_FACTOR: f64 = 4.0;

/// Effect-size thresholds of the drift decision. A feature is at `drift`
/// when any statistic reaches its drift threshold, at `warning` when any
/// reaches its warning threshold. Thresholds never go below [`NOISE_FACTOR`] times the
/// value the statistic takes by chance alone at the window's sample sizes,
/// so small windows do not raise alarms on noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Wasserstein distance / reference sd: warning.
    pub wasserstein_warning: f64,
    /// Wasserstein distance / reference sd: drift.
    pub wasserstein_drift: f64,
    /// PSI: warning.
    pub psi_warning: f64,
    /// PSI: drift.
    pub psi_drift: f64,
    /// Jensen–Shannon distance (categorical): warning.
    pub js_warning: f64,
    /// Jensen–Shannon distance (categorical): drift.
    pub js_drift: f64,
    /// Share of values in categories the reference never saw: warning.
    pub unseen_warning: f64,
    /// Share of values in categories the reference never saw: drift.
    pub unseen_drift: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            wasserstein_warning: 0.05,
            wasserstein_drift: 0.1,
            psi_warning: 0.1,
            psi_drift: 0.2,
            js_warning: 0.05,
            js_drift: 0.1,
            unseen_warning: 0.01,
            unseen_drift: 0.05,
        }
    }
}

impl Thresholds {
    /// Refuses negative thresholds and a warning above its drift level.
    pub fn validate(&self, key: &'static str) -> Result<()> {
        let pairs = [
            (
                "wasserstein",
                self.wasserstein_warning,
                self.wasserstein_drift,
            ),
            ("psi", self.psi_warning, self.psi_drift),
            ("js", self.js_warning, self.js_drift),
            ("unseen", self.unseen_warning, self.unseen_drift),
        ];
        for (name, warning, drift) in pairs {
            if !(warning >= 0.0 && drift >= 0.0) {
                return Err(Error::Config {
                    key,
                    message: format!(
                        "{name} thresholds must be non-negative numbers, got {warning} and {drift}"
                    ),
                });
            }
            if warning > drift {
                return Err(Error::Config {
                    key,
                    message: format!("{name}_warning ({warning}) is above {name}_drift ({drift})"),
                });
            }
        }
        Ok(())
    }
}

/// How the drift level is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decision {
    /// Effect sizes against thresholds (the default: p-values become tiny
    /// in large windows whatever the effect).
    #[default]
    EffectSize,
    /// p-values (KS for numeric, chi-squared for categorical features):
    /// for small windows, where effect sizes are noisy.
    PValue,
}

/// Settings of the drift detector.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    /// Effect sizes or p-values.
    pub decision: Decision,
    /// p-value below which a feature is at `warning` (p-value decision).
    pub p_value_warning: f64,
    /// p-value below which a feature is at `drift` (p-value decision).
    pub p_value_drift: f64,
    /// Reference-quantile bins for PSI and JS of numeric features.
    pub bins: usize,
    /// t-digest compression.
    pub compression: usize,
    /// Distinct numeric values counted exactly.
    pub max_exact: usize,
    /// Categories counted per feature.
    pub max_categories: usize,
    /// Default thresholds.
    pub thresholds: Thresholds,
    /// Per-model thresholds, by model id.
    pub model_thresholds: HashMap<String, Thresholds>,
    /// Per-feature thresholds, by (model id, feature name); the model's
    /// outputs are the features `prediction.score`, `prediction.value`,
    /// `prediction.class`.
    pub feature_thresholds: HashMap<(String, String), Thresholds>,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            decision: Decision::EffectSize,
            p_value_warning: 0.05,
            p_value_drift: 0.01,
            bins: 10,
            compression: crate::sketch::numeric::DEFAULT_COMPRESSION,
            max_exact: crate::sketch::numeric::DEFAULT_MAX_EXACT,
            max_categories: crate::sketch::categorical::DEFAULT_MAX_CATEGORIES,
            thresholds: Thresholds::default(),
            model_thresholds: HashMap::new(),
            feature_thresholds: HashMap::new(),
        }
    }
}

impl DriftConfig {
    /// Checks the settings; errors name the key.
    pub fn validate(&self) -> Result<()> {
        if self.bins < 2 {
            return Err(Error::Config {
                key: "drift.bins",
                message: format!("must be at least 2, got {}", self.bins),
            });
        }
        if self.compression < 10 {
            return Err(Error::Config {
                key: "drift.compression",
                message: format!("must be at least 10, got {}", self.compression),
            });
        }
        if self.max_categories == 0 {
            return Err(Error::Config {
                key: "drift.max_categories",
                message: "must be at least 1".into(),
            });
        }
        if !(0.0 < self.p_value_drift
            && self.p_value_drift <= self.p_value_warning
            && self.p_value_warning < 1.0)
        {
            return Err(Error::Config {
                key: "drift.p_value_drift",
                message: format!(
                    "need 0 < p_value_drift <= p_value_warning < 1, got {} and {}",
                    self.p_value_drift, self.p_value_warning
                ),
            });
        }
        self.thresholds.validate("drift.thresholds")?;
        for t in self.model_thresholds.values() {
            t.validate("models.<id>.drift.thresholds")?;
        }
        for t in self.feature_thresholds.values() {
            t.validate("models.<id>.drift.features.<name>")?;
        }
        Ok(())
    }
}

/// Drift level of a feature in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Within thresholds.
    Ok,
    /// Past a warning threshold.
    Warning,
    /// Past a drift threshold.
    Drift,
}

impl Level {
    /// The name in output rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Drift => "drift",
        }
    }
}

fn level(value: f64, warning: f64, drift: f64, floor: f64) -> Level {
    if value >= drift.max(floor) {
        Level::Drift
    } else if value >= warning.max(floor) {
        Level::Warning
    } else {
        Level::Ok
    }
}

/// Sketches of one feature in one window.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FeatureSketches {
    /// Numeric values.
    pub numeric: NumericSketch,
    /// Categorical values.
    pub categorical: CategoricalSketch,
    /// `null` values.
    pub nulls: u64,
    /// The numeric query view, computed once for a reference (which never
    /// changes) instead of at every window it is compared with.
    #[serde(skip)]
    view: Option<SketchView>,
}

impl FeatureSketches {
    /// Empty sketches with the detector's settings.
    pub fn new(config: &DriftConfig) -> Self {
        FeatureSketches {
            numeric: NumericSketch::new(config.compression, config.max_exact),
            categorical: CategoricalSketch::new(config.max_categories),
            nulls: 0,
            view: None,
        }
    }

    /// The kind with more values (numeric on a tie).
    pub fn majority_kind(&self) -> Option<FeatureKind> {
        match (self.numeric.count(), self.categorical.total()) {
            (0, 0) => None,
            (n, c) if n >= c => Some(FeatureKind::Numeric),
            _ => Some(FeatureKind::Categorical),
        }
    }

    /// Adds one value.
    pub fn add(&mut self, value: &FeatureValue) {
        match value {
            FeatureValue::Numeric(x) => self.numeric.add(*x),
            FeatureValue::Categorical(c) => self.categorical.add(c),
            FeatureValue::Missing => self.nulls += 1,
        }
    }

    /// Merges `other` in, as if these sketches had seen its values too.
    pub fn merge(&mut self, other: &FeatureSketches) {
        self.numeric.merge(&other.numeric);
        self.categorical.merge(&other.categorical);
        self.nulls += other.nulls;
        self.view = None;
    }

    /// Values seen (numeric and categorical; nulls not counted).
    pub fn count(&self) -> u64 {
        self.numeric.count() + self.categorical.total()
    }

    /// The sketches as bytes (the `sketch` column of `feature_sketches`):
    /// postcard, led by [`SKETCH_FORMAT`]. Exact: decoding gives back the
    /// same sketches.
    pub fn to_bytes(&self) -> std::result::Result<Vec<u8>, String> {
        postcard::to_stdvec(&(SKETCH_FORMAT, self)).map_err(|e| e.to_string())
    }

    /// Sketches written by [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let not_sketch = |e: postcard::Error| format!("not a driftwatch sketch: {e}");
        let (format, _) = postcard::take_from_bytes::<u32>(bytes).map_err(not_sketch)?;
        if format != SKETCH_FORMAT {
            return Err(format!(
                "sketch format {format}, this build reads format {SKETCH_FORMAT}"
            ));
        }
        let (_, sketches): (u32, FeatureSketches) =
            postcard::from_bytes(bytes).map_err(not_sketch)?;
        Ok(sketches)
    }

    /// PSI and Jensen–Shannon distance from `reference` to `current`, as
    /// `feature_drift` computes them: on `bins` reference-quantile bins for
    /// a numeric feature, on the categories for a categorical one (the
    /// reference's majority kind). `None` when either side has no values of
    /// that kind.
    pub fn psi_js(
        reference: &FeatureSketches,
        current: &FeatureSketches,
        bins: usize,
    ) -> Option<(f64, f64)> {
        match reference.majority_kind()? {
            FeatureKind::Numeric => {
                let sd = reference.numeric.std_dev().unwrap_or(0.0);
                let d =
                    numeric_drift(&reference.numeric.view(), sd, &current.numeric.view(), bins)?;
                Some((d.psi, d.js))
            }
            FeatureKind::Categorical => {
                let d = categorical_drift(&reference.categorical, &current.categorical)?;
                Some((d.psi, d.js))
            }
        }
    }
}

/// Format of serialised [`FeatureSketches`] this build writes and reads.
pub const SKETCH_FORMAT: u32 = 1;

/// Per-window state: a sketch per feature and per model output.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DriftState {
    events: u64,
    features: FeatureSlots<FeatureSketches>,
}

/// The reference of a model version: its features' sketches and kinds.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Window (or file) the profile was built from: start, end.
    pub span: (EventTime, EventTime),
    /// Events it holds.
    pub events: u64,
    /// Per feature: its kind and sketches.
    pub features: BTreeMap<String, (FeatureKind, FeatureSketches)>,
}

impl Profile {
    /// The profile of everything a window state (or a training file folded
    /// into one) has seen.
    pub fn from_state(state: &DriftState, span: (EventTime, EventTime)) -> Self {
        Profile {
            span,
            events: state.events,
            features: state
                .features
                .iter()
                .filter_map(|(n, s)| {
                    s.majority_kind().map(|k| {
                        let mut sketches = s.clone();
                        sketches.view = Some(s.numeric.view());
                        (n.to_string(), (k, sketches))
                    })
                })
                .collect(),
        }
    }

    /// The serialisable form.
    pub fn to_stored(
        &self,
        model_id: &str,
        model_version: Option<&str>,
        source: &str,
    ) -> StoredProfile {
        StoredProfile {
            format: PROFILE_FORMAT,
            model_id: model_id.to_owned(),
            model_version: model_version.map(str::to_owned),
            source: source.to_owned(),
            span: self.span,
            events: self.events,
            features: self
                .features
                .iter()
                .map(|(name, (kind, s))| StoredFeature {
                    name: name.clone(),
                    kind: *kind,
                    numeric: s.numeric.snapshot(),
                    categorical: s.categorical.clone(),
                    nulls: s.nulls,
                })
                .collect(),
        }
    }

    /// Rebuilds a profile from its stored form.
    pub fn from_stored(stored: &StoredProfile) -> Self {
        Profile {
            span: stored.span,
            events: stored.events,
            features: stored
                .features
                .iter()
                .map(|f| {
                    let numeric = NumericSketch::restore(&f.numeric);
                    let sketches = FeatureSketches {
                        view: Some(numeric.view()),
                        numeric,
                        categorical: f.categorical.clone(),
                        nulls: f.nulls,
                    };
                    (f.name.clone(), (f.kind, sketches))
                })
                .collect(),
        }
    }
}

/// Format of [`StoredProfile`] this build writes and reads (2: exact
/// numeric sketch state).
pub const PROFILE_FORMAT: u32 = 2;

/// A reference profile as stored in the data directory.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredProfile {
    /// Format version of this structure.
    pub format: u32,
    /// Model id.
    pub model_id: String,
    /// Model version, if the profile is for one.
    pub model_version: Option<String>,
    /// Where it was built from (file names, or a window).
    pub source: String,
    /// Earliest and latest event time it covers.
    pub span: (EventTime, EventTime),
    /// Predictions it holds.
    pub events: u64,
    /// Per feature.
    pub features: Vec<StoredFeature>,
}

/// One feature of a [`StoredProfile`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredFeature {
    /// Feature name.
    pub name: String,
    /// Its kind in the reference.
    pub kind: FeatureKind,
    /// Numeric values.
    pub numeric: crate::sketch::NumericSnapshot,
    /// Categorical values.
    pub categorical: CategoricalSketch,
    /// Nulls.
    pub nulls: u64,
}

impl StoredProfile {
    /// Writes the profile (postcard, exact) to `path`, atomically and durably.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let io = |e: std::io::Error| Error::Io {
            path: path.to_owned(),
            source: e,
        };
        let bytes = postcard::to_stdvec(self).map_err(|e| Error::Decode {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        driftwatch_ingest::durable::write(path, &bytes).map_err(io)
    }

    /// Reads a profile written by [`save`](Self::save).
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e,
        })?;
        let not_profile = |e: postcard::Error| Error::Decode {
            path: path.to_owned(),
            message: format!("not a driftwatch reference profile: {e}"),
        };
        // the format number comes first: an older profile is named as such
        let (format, _) = postcard::take_from_bytes::<u32>(&bytes).map_err(not_profile)?;
        if format != PROFILE_FORMAT {
            return Err(Error::Decode {
                path: path.to_owned(),
                message: format!(
                    "reference profile format {format}, this build reads format {PROFILE_FORMAT}: \
                     build it again with `driftwatch reference build`"
                ),
            });
        }
        postcard::from_bytes(&bytes).map_err(not_profile)
    }
}

type ModelKey = (Arc<str>, Option<Arc<str>>);

/// Reference profiles of model versions stored while the service runs (a
/// training file uploaded through the API), shared by every detector of
/// the process: a window's own version is looked up here first, so a
/// profile stored now is the reference of every later window of that
/// version, in whichever pipeline its events are.
/// Their label-free references ([`crate::labelfree`]) are shared the same way.
#[derive(Debug, Default)]
pub struct SharedReferences {
    profiles: std::sync::RwLock<HashMap<ModelKey, Arc<Profile>>>,
    /// The label-free references of every pipeline.
    pub label_free: Arc<crate::labelfree::LabelFreeReferences>,
}

impl SharedReferences {
    /// Makes `profile` the reference of a model version from now on.
    pub fn set(&self, model: &str, version: Option<&str>, profile: Profile) {
        let key = (Arc::from(model), version.map(Arc::from));
        self.profiles
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, Arc::new(profile));
    }

    fn get(&self, key: &WindowKey) -> Option<Arc<Profile>> {
        self.profiles
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(Arc::clone(&key.model_id), key.model_version.clone()))
            .cloned()
    }
}

/// The drift and data-quality detector (tables `feature_drift`,
/// `data_quality`, `drift_summary`).
#[derive(Debug)]
pub struct DriftDetector {
    config: DriftConfig,
    references: Mutex<HashMap<ModelKey, Arc<Profile>>>,
    /// profiles stored while the process runs, which take precedence
    shared: Option<Arc<SharedReferences>>,
    /// model versions whose reference was taken from their first window
    /// (checkpointed; the others come from files)
    learned: Mutex<Vec<ModelKey>>,
    score: Arc<str>,
    value: Arc<str>,
    class: Arc<str>,
}

impl DriftDetector {
    /// A detector with validated settings.
    pub fn new(config: DriftConfig) -> Result<Self> {
        config.validate()?;
        Ok(DriftDetector {
            config,
            references: Mutex::new(HashMap::new()),
            shared: None,
            learned: Mutex::new(Vec::new()),
            score: Arc::from("prediction.score"),
            value: Arc::from("prediction.value"),
            class: Arc::from("prediction.class"),
        })
    }

    /// Sets the reference of a model version.
    pub fn set_reference(&self, model: &str, version: Option<&str>, profile: Profile) {
        let key = (Arc::from(model), version.map(Arc::from));
        if let Ok(mut refs) = self.references.lock() {
            refs.insert(key, Arc::new(profile));
        }
    }

    /// Looks up references in `shared` too, before its own (see
    /// [`SharedReferences`]).
    pub fn share_references(&mut self, shared: Arc<SharedReferences>) {
        self.shared = Some(shared);
    }

    /// The reference of a window: its model version's (one stored while the
    /// process runs first), else its model's version-less profile.
    fn reference(&self, key: &WindowKey) -> Option<Arc<Profile>> {
        if let Some(p) = self.shared.as_ref().and_then(|s| s.get(key)) {
            return Some(p);
        }
        let refs = self.references.lock().ok()?;
        refs.get(&(Arc::clone(&key.model_id), key.model_version.clone()))
            .or_else(|| refs.get(&(Arc::clone(&key.model_id), None)))
            .cloned()
    }

    /// Thresholds of a feature: its own, else its model's, else the defaults.
    pub fn thresholds(&self, model: &str, feature: &str) -> Thresholds {
        let c = &self.config;
        c.feature_thresholds
            .get(&(model.to_owned(), feature.to_owned()))
            .or_else(|| c.model_thresholds.get(model))
            .copied()
            .unwrap_or(c.thresholds)
    }

    /// The level under the configured decision: the effect-size level, or
    /// the level the p-value gives.
    fn decide(&self, by_effect: Level, p_value: f64) -> Level {
        match self.config.decision {
            Decision::EffectSize => by_effect,
            Decision::PValue if p_value < self.config.p_value_drift => Level::Drift,
            Decision::PValue if p_value < self.config.p_value_warning => Level::Warning,
            Decision::PValue => Level::Ok,
        }
    }

    /// Drift level and statistics of one feature of kind `kind`, from its
    /// reference sketches to its current ones.
    pub fn compare(
        &self,
        model: &str,
        name: &str,
        kind: FeatureKind,
        reference: &FeatureSketches,
        current: &FeatureSketches,
    ) -> Compared {
        let t = self.thresholds(model, name);
        match kind {
            FeatureKind::Numeric => {
                let (nr, nc) = (
                    reference.numeric.count() as f64,
                    current.numeric.count() as f64,
                );
                let sd = reference.numeric.std_dev().unwrap_or(0.0);
                let owned;
                let reference_view = match &reference.view {
                    Some(v) => v,
                    None => {
                        owned = reference.numeric.view();
                        &owned
                    }
                };
                let Some(d) = numeric_drift(
                    reference_view,
                    sd,
                    &current.numeric.view(),
                    self.config.bins,
                ) else {
                    return Compared::default();
                };
                let noise = (1.0 / nr + 1.0 / nc).sqrt();
                let bins = self.config.bins as f64;
                let w = d.wasserstein_norm.map_or(Level::Ok, |w| {
                    level(
                        w,
                        t.wasserstein_warning,
                        t.wasserstein_drift,
                        NOISE_FACTOR * noise,
                    )
                });
                let p = level(
                    d.psi,
                    t.psi_warning,
                    t.psi_drift,
                    NOISE_FACTOR * (bins - 1.0) * noise * noise + PSI_EPSILON,
                );
                let by_effect = w.max(p);
                Compared {
                    level: Some(self.decide(by_effect, d.ks_p_value)),
                    ks: Some(d.ks),
                    p_value: Some(d.ks_p_value),
                    wasserstein: Some(d.wasserstein),
                    wasserstein_norm: d.wasserstein_norm,
                    psi: Some(d.psi),
                    js: Some(d.js),
                    ..Compared::default()
                }
            }
            FeatureKind::Categorical => {
                let Some(d) = categorical_drift(&reference.categorical, &current.categorical)
                else {
                    return Compared::default();
                };
                let (nr, nc) = (
                    reference.categorical.total() as f64,
                    current.categorical.total() as f64,
                );
                let var = 1.0 / nr + 1.0 / nc;
                let k = (d.dof as f64).max(1.0);
                let js_floor = NOISE_FACTOR * (k * var / (8.0 * std::f64::consts::LN_2)).sqrt();
                let psi_floor = NOISE_FACTOR * k * var;
                let l = level(d.js, t.js_warning, t.js_drift, js_floor)
                    .max(level(d.psi, t.psi_warning, t.psi_drift, psi_floor))
                    .max(level(d.unseen_share, t.unseen_warning, t.unseen_drift, 0.0));
                Compared {
                    level: Some(self.decide(l, d.p_value)),
                    psi: Some(d.psi),
                    js: Some(d.js),
                    chi2: Some(d.chi2),
                    p_value: Some(d.p_value),
                    unseen_share: Some(d.unseen_share),
                    vanished: Some(d.vanished),
                    ..Compared::default()
                }
            }
        }
    }
}

/// The outcome of comparing a feature with its reference.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Compared {
    /// The decision; `None` when either side had no values.
    pub level: Option<Level>,
    /// KS distance (numeric).
    pub ks: Option<f64>,
    /// Wasserstein-1 distance (numeric).
    pub wasserstein: Option<f64>,
    /// Wasserstein-1 / reference sd (numeric).
    pub wasserstein_norm: Option<f64>,
    /// PSI.
    pub psi: Option<f64>,
    /// Jensen–Shannon distance.
    pub js: Option<f64>,
    /// Chi-squared statistic (categorical).
    pub chi2: Option<f64>,
    /// Its p-value.
    pub p_value: Option<f64>,
    /// Share of current values in unseen categories.
    pub unseen_share: Option<f64>,
    /// Reference categories absent now.
    pub vanished: Option<u64>,
}

fn f64_field(name: &str) -> Field {
    Field::new(name, DataType::Float64, true)
}

fn feature_drift_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("feature", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, true),
        Field::new("count", DataType::UInt64, false),
        Field::new("reference_count", DataType::UInt64, false),
        f64_field("ks"),
        f64_field("wasserstein"),
        f64_field("wasserstein_norm"),
        f64_field("psi"),
        f64_field("js"),
        f64_field("chi2"),
        f64_field("p_value"),
        f64_field("unseen_share"),
        Field::new("vanished_categories", DataType::UInt64, true),
        Field::new("level", DataType::Utf8, false),
        Field::new("reference_start", arrow_time_type(), true),
    ]))
}

fn data_quality_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("feature", DataType::Utf8, false),
        Field::new("events", DataType::UInt64, false),
        Field::new("missing", DataType::UInt64, false),
        f64_field("missing_rate"),
        Field::new("type_mismatches", DataType::UInt64, false),
        f64_field("out_of_range_share"),
        Field::new("status", DataType::Utf8, false),
    ]))
}

fn feature_sketches_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("feature", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, true),
        Field::new("count", DataType::UInt64, false),
        Field::new("nulls", DataType::UInt64, false),
        Field::new("sketch", DataType::Binary, false),
    ]))
}

fn drift_summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("features_compared", DataType::UInt64, false),
        Field::new("features_warning", DataType::UInt64, false),
        Field::new("features_drifted", DataType::UInt64, false),
        f64_field("drift_share"),
        Field::new("is_reference", DataType::Boolean, false),
        Field::new("reference_start", arrow_time_type(), true),
    ]))
}

impl Component for DriftDetector {
    type State = DriftState;

    fn tables(&self) -> Vec<(String, SchemaRef)> {
        vec![
            ("feature_drift".into(), feature_drift_schema()),
            ("data_quality".into(), data_quality_schema()),
            ("drift_summary".into(), drift_summary_schema()),
            ("feature_sketches".into(), feature_sketches_schema()),
        ]
    }

    fn new_state(&self) -> Self::State {
        DriftState::default()
    }

    fn update(&self, state: &mut Self::State, event: &PredictionEvent) {
        let new = || FeatureSketches::new(&self.config);
        state.events += 1;
        for (position, feature) in event.features.iter().enumerate() {
            state
                .features
                .get_or_insert_with(position, &feature.name, new)
                .add(&feature.value);
        }
        let n = event.features.len();
        let p = &event.prediction;
        if let Some(score) = p.score {
            state
                .features
                .get_or_insert_with(n, &self.score, new)
                .numeric
                .add(score);
        }
        if let Some(value) = p.value {
            state
                .features
                .get_or_insert_with(n + 1, &self.value, new)
                .numeric
                .add(value);
        }
        if let Some(class) = &p.class {
            state
                .features
                .get_or_insert_with(n + 2, &self.class, new)
                .categorical
                .add(class);
        }
    }

    fn merge(&self, into: &mut Self::State, other: Self::State) {
        into.events += other.events;
        for (name, sketches) in other.features {
            let s = into
                .features
                .get_or_insert_with(usize::MAX, &name, || FeatureSketches::new(&self.config));
            s.merge(&sketches);
        }
    }

    fn save_learned(&self) -> std::result::Result<Vec<u8>, String> {
        let learned = self.learned.lock().map_err(|e| e.to_string())?;
        let refs = self.references.lock().map_err(|e| e.to_string())?;
        let profiles: Vec<StoredProfile> = learned
            .iter()
            .filter_map(|k| {
                let p = refs.get(k)?;
                Some(p.to_stored(&k.0, k.1.as_deref(), "first window"))
            })
            .collect();
        postcard::to_stdvec(&profiles).map_err(|e| e.to_string())
    }

    fn load_learned(&self, bytes: &[u8]) -> std::result::Result<(), String> {
        let profiles: Vec<StoredProfile> =
            postcard::from_bytes(bytes).map_err(|e| format!("learned references: {e}"))?;
        for p in profiles {
            let key = (
                Arc::from(p.model_id.as_str()),
                p.model_version.as_deref().map(Arc::from),
            );
            if self
                .references
                .lock()
                .map_err(|e| e.to_string())?
                .contains_key(&key)
            {
                // a profile loaded from the data directory takes precedence
                continue;
            }
            self.set_reference(
                &p.model_id,
                p.model_version.as_deref(),
                Profile::from_stored(&p),
            );
            if let Ok(mut learned) = self.learned.lock() {
                learned.push(key);
            }
        }
        Ok(())
    }

    fn finish(&self, key: &WindowKey, state: Self::State) -> Result<Vec<RecordBatch>, ArrowError> {
        let reference = match self.reference(key) {
            Some(r) => Some(r),
            None => {
                // the first window of a model version becomes its reference
                let profile = Profile::from_state(&state, (key.start, key.end));
                self.set_reference(&key.model_id, key.model_version.as_deref(), profile);
                if let Ok(mut learned) = self.learned.lock() {
                    learned.push((Arc::clone(&key.model_id), key.model_version.clone()));
                }
                None
            }
        };
        let reference_start = reference.as_ref().map(|r| r.span.0);
        let mut window: BTreeMap<&str, &FeatureSketches> = state
            .features
            .iter()
            .map(|(n, s)| (n.as_ref(), s))
            .collect();
        let empty = FeatureSketches::new(&self.config);
        if let Some(r) = &reference {
            for name in r.features.keys() {
                window.entry(name.as_str()).or_insert(&empty);
            }
        }

        let mut fd = FeatureDriftRows::default();
        let mut dq = QualityRows::default();
        let mut sk = SketchRows::default();
        let (mut compared, mut warned, mut drifted) = (0u64, 0u64, 0u64);
        for (name, current) in &window {
            let is_output = name.starts_with("prediction.");
            let in_reference = reference.as_ref().and_then(|r| r.features.get(*name));
            let kind = in_reference
                .map(|(k, _)| *k)
                .or_else(|| current.majority_kind());
            let count = current.numeric.count() + current.categorical.total();
            let (compared_row, status) = match (&reference, in_reference, kind) {
                (None, _, _) => (Compared::default(), "reference"),
                (Some(_), None, _) => (Compared::default(), "new_feature"),
                (Some(_), Some(_), _) if count == 0 => (Compared::default(), "vanished_feature"),
                (Some(_), Some((k, r)), _) => {
                    (self.compare(&key.model_id, name, *k, r, current), "ok")
                }
            };
            let level = compared_row.level;
            if let Some(l) = level {
                compared += 1;
                warned += u64::from(l == Level::Warning);
                drifted += u64::from(l == Level::Drift);
            }
            let label = level.map_or(status, Level::as_str);
            if count + current.nulls > 0 {
                sk.push(name, kind, current)?;
            }
            fd.push(
                name,
                kind,
                count,
                in_reference.map_or(0, |(_, r)| r.numeric.count() + r.categorical.total()),
                &compared_row,
                label,
                reference_start,
            );

            let mismatches = match kind {
                Some(FeatureKind::Numeric) => current.categorical.total(),
                Some(FeatureKind::Categorical) => current.numeric.count(),
                None => 0,
            };
            let out_of_range = match (in_reference, kind) {
                (Some((_, r)), Some(FeatureKind::Numeric)) if current.numeric.count() > 0 => {
                    match (r.numeric.min(), r.numeric.max()) {
                        (Some(lo), Some(hi)) => {
                            let v = current.numeric.view();
                            Some(v.cdf(lo.next_down()) + (1.0 - v.cdf(hi)))
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            // model outputs are not sent as features: their absence is not "missing"
            let missing = if is_output {
                0
            } else {
                state.events.saturating_sub(count)
            };
            dq.push(
                name,
                state.events,
                missing,
                mismatches,
                out_of_range,
                status,
            );
        }
        let share = (compared > 0).then(|| drifted as f64 / compared as f64);
        let summary = RecordBatch::try_new(
            drift_summary_schema(),
            vec![
                Arc::new(UInt64Array::from(vec![compared])),
                Arc::new(UInt64Array::from(vec![warned])),
                Arc::new(UInt64Array::from(vec![drifted])),
                Arc::new(Float64Array::from(vec![share])),
                Arc::new(arrow::array::BooleanArray::from(vec![reference.is_none()])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![reference_start])
                        .with_timezone(ARROW_TIMEZONE),
                ),
            ],
        )?;
        Ok(vec![fd.finish()?, dq.finish()?, summary, sk.finish()?])
    }
}

/// Rows of `feature_sketches`.
#[derive(Default)]
struct SketchRows {
    feature: Vec<String>,
    kind: Vec<Option<&'static str>>,
    count: Vec<u64>,
    nulls: Vec<u64>,
    sketch: Vec<Vec<u8>>,
}

impl SketchRows {
    fn push(
        &mut self,
        name: &str,
        kind: Option<FeatureKind>,
        s: &FeatureSketches,
    ) -> Result<(), ArrowError> {
        let bytes = s
            .to_bytes()
            .map_err(|e| ArrowError::ComputeError(format!("sketch of {name}: {e}")))?;
        self.sketch.push(bytes);
        self.feature.push(name.to_owned());
        self.kind.push(kind.map(FeatureKind::as_str));
        self.count.push(s.count());
        self.nulls.push(s.nulls);
        Ok(())
    }

    fn finish(self) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            feature_sketches_schema(),
            vec![
                Arc::new(StringArray::from(self.feature)),
                Arc::new(StringArray::from(self.kind)),
                Arc::new(UInt64Array::from(self.count)),
                Arc::new(UInt64Array::from(self.nulls)),
                Arc::new(arrow::array::BinaryArray::from_iter_values(self.sketch)),
            ],
        )
    }
}

#[derive(Default)]
struct FeatureDriftRows {
    feature: Vec<String>,
    kind: Vec<Option<&'static str>>,
    count: Vec<u64>,
    reference_count: Vec<u64>,
    ks: Vec<Option<f64>>,
    wasserstein: Vec<Option<f64>>,
    wasserstein_norm: Vec<Option<f64>>,
    psi: Vec<Option<f64>>,
    js: Vec<Option<f64>>,
    chi2: Vec<Option<f64>>,
    p_value: Vec<Option<f64>>,
    unseen: Vec<Option<f64>>,
    vanished: Vec<Option<u64>>,
    level: Vec<&'static str>,
    reference_start: Vec<Option<EventTime>>,
}

impl FeatureDriftRows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        name: &str,
        kind: Option<FeatureKind>,
        count: u64,
        reference_count: u64,
        c: &Compared,
        level: &'static str,
        reference_start: Option<EventTime>,
    ) {
        self.feature.push(name.to_owned());
        self.kind.push(kind.map(FeatureKind::as_str));
        self.count.push(count);
        self.reference_count.push(reference_count);
        self.ks.push(c.ks);
        self.wasserstein.push(c.wasserstein);
        self.wasserstein_norm.push(c.wasserstein_norm);
        self.psi.push(c.psi);
        self.js.push(c.js);
        self.chi2.push(c.chi2);
        self.p_value.push(c.p_value);
        self.unseen.push(c.unseen_share);
        self.vanished.push(c.vanished);
        self.level.push(level);
        self.reference_start.push(reference_start);
    }

    fn finish(self) -> Result<RecordBatch, ArrowError> {
        let f = |v: Vec<Option<f64>>| Arc::new(Float64Array::from(v)) as ArrayRef;
        RecordBatch::try_new(
            feature_drift_schema(),
            vec![
                Arc::new(StringArray::from(self.feature)),
                Arc::new(StringArray::from(self.kind)),
                Arc::new(UInt64Array::from(self.count)),
                Arc::new(UInt64Array::from(self.reference_count)),
                f(self.ks),
                f(self.wasserstein),
                f(self.wasserstein_norm),
                f(self.psi),
                f(self.js),
                f(self.chi2),
                f(self.p_value),
                f(self.unseen),
                Arc::new(UInt64Array::from(self.vanished)),
                Arc::new(StringArray::from(self.level)),
                Arc::new(
                    TimestampMillisecondArray::from(self.reference_start)
                        .with_timezone(ARROW_TIMEZONE),
                ),
            ],
        )
    }
}

#[derive(Default)]
struct QualityRows {
    feature: Vec<String>,
    events: Vec<u64>,
    missing: Vec<u64>,
    missing_rate: Vec<Option<f64>>,
    mismatches: Vec<u64>,
    out_of_range: Vec<Option<f64>>,
    status: Vec<&'static str>,
}

impl QualityRows {
    fn push(
        &mut self,
        name: &str,
        events: u64,
        missing: u64,
        mismatches: u64,
        out_of_range: Option<f64>,
        status: &'static str,
    ) {
        self.feature.push(name.to_owned());
        self.events.push(events);
        self.missing.push(missing);
        self.missing_rate
            .push((events > 0).then(|| missing as f64 / events as f64));
        self.mismatches.push(mismatches);
        self.out_of_range.push(out_of_range);
        self.status.push(status);
    }

    fn finish(self) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            data_quality_schema(),
            vec![
                Arc::new(StringArray::from(self.feature)),
                Arc::new(UInt64Array::from(self.events)),
                Arc::new(UInt64Array::from(self.missing)),
                Arc::new(Float64Array::from(self.missing_rate)),
                Arc::new(UInt64Array::from(self.mismatches)),
                Arc::new(Float64Array::from(self.out_of_range)),
                Arc::new(StringArray::from(self.status)),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketch_bytes_round_trip_and_do_not_depend_on_arrival_order() {
        let values = [
            FeatureValue::Categorical("b".into()),
            FeatureValue::Numeric(2.5),
            FeatureValue::Categorical("a".into()),
            FeatureValue::Missing,
            FeatureValue::Categorical("c".into()),
            FeatureValue::Numeric(-1.0),
        ];
        let config = DriftConfig::default();
        let (mut forward, mut backward) =
            (FeatureSketches::new(&config), FeatureSketches::new(&config));
        values.iter().for_each(|v| forward.add(v));
        values.iter().rev().for_each(|v| backward.add(v));
        let bytes = forward.to_bytes().unwrap();
        let back = FeatureSketches::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_bytes().unwrap(), bytes);
        assert_eq!((back.count(), back.nulls), (5, 1));
        assert_eq!(back.categorical.get("a").map(|c| c.count), Some(1));
        // the numeric sketch keeps arrival order of unfolded values; the
        // categories are written sorted
        let cats = |s: &FeatureSketches| postcard::to_stdvec(&s.categorical).unwrap();
        assert_eq!(cats(&forward), cats(&backward));
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(
            FeatureSketches::from_bytes(&wrong)
                .unwrap_err()
                .contains("format 9")
        );
        assert!(
            FeatureSketches::from_bytes(b"")
                .unwrap_err()
                .contains("not a driftwatch sketch")
        );
    }
}
