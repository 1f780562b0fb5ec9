//! The detectors' sections as written — `[window]`, `[limits]`, `[drift]`,
//! `[performance]` and the models' `[models.<id>]` — and their validation
//! into the settings the detectors trust. A refused value is an
//! [`Invalid`] naming its key (the shape every crate's settings use).
//!
//! ```
//! use driftwatch_detectors::WindowSpec;
//! use driftwatch_detectors::settings::{RawWindow, WindowKind};
//!
//! let w = RawWindow { kind: WindowKind::Hopping, slide: Some("15m".into()), ..RawWindow::default() };
//! let (spec, lateness_ms) = w.validate().unwrap();
//! assert_eq!(spec, WindowSpec::hopping(3_600_000, 900_000).unwrap());
//! assert_eq!(lateness_ms, 300_000);
//! let bad = RawWindow { slide: Some("15m".into()), ..RawWindow::default() };
//! assert_eq!(bad.validate().unwrap_err().key, "window.slide");
//! ```

use std::collections::{BTreeMap, HashMap};

use driftwatch_ingest::FeatureKind;
use driftwatch_ingest::FeatureSchema;
use driftwatch_ingest::settings::{Invalid, duration_ms, positive_duration_ms, size_bytes};
use serde::Deserialize;

use crate::drift::{Decision, DriftConfig, Thresholds};
use crate::performance::{
    AdwinConfig, DdmConfig, PageHinkleyConfig, PerformanceConfig, StoreConfig, Task,
};
use crate::window::WindowSpec;
use crate::windows::Limits;

/// `[window]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawWindow {
    /// `"tumbling"` or `"hopping"`.
    pub kind: WindowKind,
    /// Window length, e.g. `"1h"`.
    pub size: String,
    /// Distance between window starts (hopping only), e.g. `"15m"`.
    pub slide: Option<String>,
    /// How far behind the largest event time the watermark trails.
    pub allowed_lateness: String,
}

impl Default for RawWindow {
    fn default() -> Self {
        RawWindow {
            kind: WindowKind::Tumbling,
            size: "1h".into(),
            slide: None,
            allowed_lateness: "5m".into(),
        }
    }
}

/// Window kinds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Back-to-back windows.
    Tumbling,
    /// Overlapping windows, one every `slide`.
    Hopping,
}

impl RawWindow {
    /// The window shape and the allowed lateness in ms.
    pub fn validate(&self) -> Result<(WindowSpec, i64), Invalid> {
        let size = positive_duration_ms("window.size", &self.size)?;
        let window = match (self.kind, &self.slide) {
            (WindowKind::Tumbling, None) => WindowSpec::tumbling(size),
            (WindowKind::Tumbling, Some(slide)) => {
                return Err(Invalid::new(
                    "window.slide",
                    slide,
                    "no slide for tumbling windows (set window.kind = \"hopping\")",
                ));
            }
            (WindowKind::Hopping, None) => {
                return Err(Invalid::new(
                    "window.slide",
                    "",
                    "a slide for hopping windows, e.g. \"15m\"",
                ));
            }
            (WindowKind::Hopping, Some(slide)) => {
                let slide_ms = duration_ms("window.slide", slide)?;
                if slide_ms == 0 || slide_ms > size {
                    return Err(Invalid::new(
                        "window.slide",
                        slide,
                        "a positive duration no longer than window.size",
                    ));
                }
                WindowSpec::hopping(size, slide_ms)
            }
        }
        .map_err(|e| Invalid::new("window", &self.size, e.to_string()))?;
        let lateness = duration_ms("window.allowed_lateness", &self.allowed_lateness)?;
        Ok((window, lateness))
    }
}

/// `[limits]` as written: bounds on the live state of a stream (a replay,
/// a Kafka partition); a prediction past one is refused with its reason.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Models with open windows.
    pub max_models: usize,
    /// Versions of one model with open windows.
    pub max_versions_per_model: usize,
    /// Open windows of all models.
    pub max_open_windows: usize,
    /// Distinct feature names of one model version with open windows.
    pub max_features: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        let d = Limits::default();
        RawLimits {
            max_models: d.max_models,
            max_versions_per_model: d.max_versions_per_model,
            max_open_windows: d.max_open_windows,
            max_features: d.max_features,
        }
    }
}

impl RawLimits {
    /// Every bound positive.
    pub fn validate(&self) -> Result<Limits, Invalid> {
        for (key, value) in [
            ("limits.max_models", self.max_models),
            ("limits.max_versions_per_model", self.max_versions_per_model),
            ("limits.max_open_windows", self.max_open_windows),
            ("limits.max_features", self.max_features),
        ] {
            if value == 0 {
                return Err(Invalid::new(key, "0", "a positive number"));
            }
        }
        Ok(Limits {
            max_models: self.max_models,
            max_versions_per_model: self.max_versions_per_model,
            max_open_windows: self.max_open_windows,
            max_features: self.max_features,
        })
    }
}

/// Drift thresholds as written; a missing key takes the value of the level above.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawThresholds {
    /// See [`Thresholds`].
    pub wasserstein_warning: Option<f64>,
    /// See [`Thresholds`].
    pub wasserstein_drift: Option<f64>,
    /// See [`Thresholds`].
    pub psi_warning: Option<f64>,
    /// See [`Thresholds`].
    pub psi_drift: Option<f64>,
    /// See [`Thresholds`].
    pub js_warning: Option<f64>,
    /// See [`Thresholds`].
    pub js_drift: Option<f64>,
    /// See [`Thresholds`].
    pub unseen_warning: Option<f64>,
    /// See [`Thresholds`].
    pub unseen_drift: Option<f64>,
}

impl RawThresholds {
    /// These thresholds, each missing one taken from `base`.
    pub fn over(&self, base: Thresholds) -> Thresholds {
        Thresholds {
            wasserstein_warning: self.wasserstein_warning.unwrap_or(base.wasserstein_warning),
            wasserstein_drift: self.wasserstein_drift.unwrap_or(base.wasserstein_drift),
            psi_warning: self.psi_warning.unwrap_or(base.psi_warning),
            psi_drift: self.psi_drift.unwrap_or(base.psi_drift),
            js_warning: self.js_warning.unwrap_or(base.js_warning),
            js_drift: self.js_drift.unwrap_or(base.js_drift),
            unseen_warning: self.unseen_warning.unwrap_or(base.unseen_warning),
            unseen_drift: self.unseen_drift.unwrap_or(base.unseen_drift),
        }
    }
}

/// Drift decision modes as written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawDecision {
    /// Effect sizes against thresholds.
    EffectSize,
    /// p-values (small windows).
    PValue,
}

/// `[drift]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawDrift {
    /// Run the drift and data-quality detector.
    pub enabled: bool,
    /// `"effect_size"` or `"p_value"`.
    pub decision: RawDecision,
    /// p-value decision: warning below this.
    pub p_value_warning: f64,
    /// p-value decision: drift below this.
    pub p_value_drift: f64,
    /// Reference-quantile bins for PSI and JS.
    pub bins: usize,
    /// t-digest compression.
    pub compression: usize,
    /// Distinct numeric values counted exactly.
    pub max_exact_values: usize,
    /// Categories counted per feature.
    pub max_categories: usize,
    /// Default thresholds.
    pub thresholds: RawThresholds,
}

impl Default for RawDrift {
    fn default() -> Self {
        let d = DriftConfig::default();
        RawDrift {
            enabled: true,
            decision: RawDecision::EffectSize,
            p_value_warning: d.p_value_warning,
            p_value_drift: d.p_value_drift,
            bins: d.bins,
            compression: d.compression,
            max_exact_values: d.max_exact,
            max_categories: d.max_categories,
            thresholds: RawThresholds::default(),
        }
    }
}

impl RawDrift {
    /// The detector's settings with the thresholds layered default → model
    /// → feature; `None` when it is off.
    pub fn validate(
        &self,
        models: &BTreeMap<String, RawModel>,
    ) -> Result<Option<DriftConfig>, Invalid> {
        if !self.enabled {
            return Ok(None);
        }
        let defaults = self.thresholds.over(Thresholds::default());
        let check = |key: String, t: Thresholds| {
            t.validate("thresholds").map_err(|e| {
                Invalid::new(
                    key,
                    e.to_string(),
                    "non-negative thresholds, each warning at most its drift level",
                )
            })
        };
        check("drift.thresholds".into(), defaults)?;
        let mut config = DriftConfig {
            decision: match self.decision {
                RawDecision::EffectSize => Decision::EffectSize,
                RawDecision::PValue => Decision::PValue,
            },
            p_value_warning: self.p_value_warning,
            p_value_drift: self.p_value_drift,
            bins: self.bins,
            compression: self.compression,
            max_exact: self.max_exact_values,
            max_categories: self.max_categories,
            thresholds: defaults,
            ..DriftConfig::default()
        };
        for (model, m) in models {
            let model_t = m.drift.thresholds.over(defaults);
            if m.drift.thresholds != RawThresholds::default() {
                check(format!("models.{model}.drift.thresholds"), model_t)?;
                config.model_thresholds.insert(model.clone(), model_t);
            }
            for (feature, raw) in &m.drift.features {
                let t = raw.over(model_t);
                check(format!("models.{model}.drift.features.{feature}"), t)?;
                config
                    .feature_thresholds
                    .insert((model.clone(), feature.clone()), t);
            }
        }
        config.validate().map_err(|e| {
            let key = match &e {
                crate::Error::Config { key, .. } => (*key).to_owned(),
                _ => "drift".into(),
            };
            Invalid::new(key, e.to_string(), "see driftwatch.example.toml")
        })?;
        Ok(Some(config))
    }
}

/// `[models.<id>.drift]` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawModelDrift {
    /// Thresholds of this model's features.
    pub thresholds: RawThresholds,
    /// Thresholds of single features (`prediction.score` for the output).
    pub features: BTreeMap<String, RawThresholds>,
}

/// Model tasks as written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawTask {
    /// Two classes, `score` the probability of `positive_class`.
    Binary,
    /// More classes.
    Multiclass,
    /// A number.
    Regression,
}

/// `[models.<id>]` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawModel {
    /// Declared feature kinds: `age = "numeric"`, `plan = "categorical"`.
    pub features: BTreeMap<String, FeatureKind>,
    /// Drift thresholds of this model.
    pub drift: RawModelDrift,
    /// What the model predicts; unset: taken from its first prediction's
    /// shape (`value` → regression, `probabilities` → multiclass, else binary).
    pub task: Option<RawTask>,
    /// Binary: the positive class (default `"1"`).
    pub positive_class: Option<String>,
    /// Binary: the class predicted below `threshold` when no class is sent (default `"0"`).
    pub negative_class: Option<String>,
    /// Binary: score from which the positive class is predicted (default 0.5).
    pub threshold: Option<f64>,
}

/// The feature kinds the models' sections declare, for the decoder.
pub fn feature_schema(models: &BTreeMap<String, RawModel>) -> FeatureSchema {
    let mut schema = FeatureSchema::default();
    for (model, m) in models {
        for (feature, kind) in &m.features {
            schema.declare(model, feature, *kind);
        }
    }
    schema
}

impl RawModel {
    /// The declared task, `None` when it is taken from the predictions.
    fn task(&self, model: &str) -> Result<Option<Task>, Invalid> {
        let binary_keys = self.positive_class.is_some()
            || self.negative_class.is_some()
            || self.threshold.is_some();
        let task = match self.task {
            None if binary_keys => {
                return Err(Invalid::new(
                    format!("models.{model}.task"),
                    "",
                    "task = \"binary\" with positive_class, negative_class or threshold",
                ));
            }
            None => return Ok(None),
            Some(RawTask::Binary) => {
                let threshold = self.threshold.unwrap_or(0.5);
                if !(0.0..=1.0).contains(&threshold) {
                    return Err(Invalid::new(
                        format!("models.{model}.threshold"),
                        threshold.to_string(),
                        "a score between 0 and 1",
                    ));
                }
                Task::Binary {
                    positive: self.positive_class.as_deref().unwrap_or("1").into(),
                    negative: self.negative_class.as_deref().unwrap_or("0").into(),
                    threshold,
                }
            }
            Some(other) if binary_keys => {
                return Err(Invalid::new(
                    format!("models.{model}.task"),
                    format!("{other:?}").to_lowercase(),
                    "\"binary\" when positive_class, negative_class or threshold is set",
                ));
            }
            Some(RawTask::Multiclass) => Task::Multiclass,
            Some(RawTask::Regression) => Task::Regression,
        };
        Ok(Some(task))
    }
}

/// Change detectors by name, for `performance.detectors`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawDetector {
    /// ADWIN over the per-event error stream.
    Adwin,
    /// Page-Hinkley over classifiers' 0/1 error stream.
    PageHinkley,
    /// DDM over classifiers' 0/1 error stream.
    Ddm,
    /// ADWIN over the per-window accuracy (or MAE) series.
    WindowAdwin,
}

/// `[performance]` as written: the label join and performance metrics.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawPerformance {
    /// Join labels and report performance metrics.
    pub enabled: bool,
    /// How long after a window's end labels still revise its metrics.
    pub label_horizon: String,
    /// Revisions are due 1, 2, 4, … times this after a window's end.
    pub revision_interval: String,
    /// Memory for predictions awaiting labels; past it the oldest spill to
    /// disk (`DATA_DIR/pending/`).
    pub memory_budget: String,
    /// Online change detectors to run.
    pub detectors: Vec<RawDetector>,
    /// ADWIN settings (both ADWIN detectors).
    pub adwin: AdwinConfig,
    /// Page-Hinkley settings.
    pub page_hinkley: PageHinkleyConfig,
    /// DDM settings.
    pub ddm: DdmConfig,
}

impl Default for RawPerformance {
    fn default() -> Self {
        RawPerformance {
            enabled: true,
            label_horizon: "7d".into(),
            revision_interval: "1h".into(),
            memory_budget: "256MiB".into(),
            detectors: vec![
                RawDetector::Adwin,
                RawDetector::PageHinkley,
                RawDetector::Ddm,
                RawDetector::WindowAdwin,
            ],
            adwin: AdwinConfig::default(),
            page_hinkley: PageHinkleyConfig::default(),
            ddm: DdmConfig::default(),
        }
    }
}

impl RawPerformance {
    /// The label join's settings with the models' declared tasks; `None`
    /// when it is off. The store has no spill path: each pipeline sets its own.
    pub fn validate(
        &self,
        models: &BTreeMap<String, RawModel>,
    ) -> Result<Option<PerformanceConfig>, Invalid> {
        if !self.enabled {
            return Ok(None);
        }
        let label_horizon_ms =
            positive_duration_ms("performance.label_horizon", &self.label_horizon)?;
        let revision_interval_ms =
            positive_duration_ms("performance.revision_interval", &self.revision_interval)?;
        let memory_budget = size_bytes(
            "performance.memory_budget",
            &self.memory_budget,
            1 << 20,
            "\"256MiB\"",
        )?;
        let a = &self.adwin;
        if !(a.delta > 0.0 && a.delta < 1.0) || a.clock == 0 || a.max_buckets < 2 {
            return Err(Invalid::new(
                "performance.adwin",
                format!("{a:?}"),
                "0 < delta < 1, clock ≥ 1, max_buckets ≥ 2",
            ));
        }
        let ph = &self.page_hinkley;
        if !(ph.delta >= 0.0 && ph.threshold > 0.0 && ph.alpha > 0.0 && ph.alpha <= 1.0) {
            return Err(Invalid::new(
                "performance.page_hinkley",
                format!("{ph:?}"),
                "delta ≥ 0, threshold > 0, 0 < alpha ≤ 1",
            ));
        }
        if self.ddm.drift_threshold <= 0.0 {
            return Err(Invalid::new(
                "performance.ddm.drift_threshold",
                self.ddm.drift_threshold.to_string(),
                "a positive number of standard deviations",
            ));
        }
        let mut tasks = HashMap::new();
        for (model, m) in models {
            if let Some(task) = m.task(model)? {
                tasks.insert(model.clone(), task);
            }
        }
        let on = |d: RawDetector| self.detectors.contains(&d);
        Ok(Some(PerformanceConfig {
            label_horizon_ms,
            revision_interval_ms,
            tasks,
            adwin: on(RawDetector::Adwin).then_some(self.adwin),
            page_hinkley: on(RawDetector::PageHinkley).then_some(self.page_hinkley),
            ddm: on(RawDetector::Ddm).then_some(self.ddm),
            window_adwin: on(RawDetector::WindowAdwin).then_some(self.adwin),
            store: StoreConfig {
                memory_budget,
                spill_dir: None,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `models` of a JSON object, as the configuration layers give them.
    fn models(json: &str) -> BTreeMap<String, RawModel> {
        #[derive(Deserialize)]
        struct Models {
            models: BTreeMap<String, RawModel>,
        }
        serde_json::from_str::<Models>(json)
            .unwrap_or_else(|e| panic!("{e}"))
            .models
    }

    #[test]
    fn windows_limits_and_the_label_join_default_to_valid_settings() {
        let (spec, lateness) = RawWindow::default().validate().unwrap();
        assert_eq!(spec, WindowSpec::tumbling(3_600_000).unwrap());
        assert_eq!(lateness, 300_000);
        assert_eq!(RawLimits::default().validate().unwrap(), Limits::default());
        let p = RawPerformance::default()
            .validate(&BTreeMap::new())
            .unwrap()
            .expect("on");
        assert_eq!(p.label_horizon_ms, 7 * 24 * 3_600_000);
        assert!(p.adwin.is_some() && p.window_adwin.is_some());
        let off = RawPerformance {
            enabled: false,
            ..RawPerformance::default()
        };
        assert!(off.validate(&BTreeMap::new()).unwrap().is_none());
    }

    #[test]
    fn refusals_name_the_key() {
        let zero = RawLimits {
            max_features: 0,
            ..RawLimits::default()
        };
        assert_eq!(zero.validate().unwrap_err().key, "limits.max_features");
        let no_slide = RawWindow {
            kind: WindowKind::Hopping,
            ..RawWindow::default()
        };
        assert_eq!(no_slide.validate().unwrap_err().key, "window.slide");
        let long_slide = RawWindow {
            kind: WindowKind::Hopping,
            slide: Some("2h".into()),
            ..RawWindow::default()
        };
        assert_eq!(long_slide.validate().unwrap_err().value, "2h");
        let m = models(r#"{"models": {"churn": {"threshold": 0.7}}}"#);
        let err = RawPerformance::default().validate(&m).unwrap_err();
        assert_eq!(err.key, "models.churn.task");
        let m = models(r#"{"models": {"churn": {"task": "binary", "threshold": 1.5}}}"#);
        let err = RawPerformance::default().validate(&m).unwrap_err();
        assert_eq!(err.key, "models.churn.threshold");
        let m = models(
            r#"{"models": {"churn": {"drift": {"features": {"age": {"psi_warning": 0.9, "psi_drift": 0.2}}}}}}"#,
        );
        let err = RawDrift::default().validate(&m).unwrap_err();
        assert_eq!(err.key, "models.churn.drift.features.age");
    }

    #[test]
    fn thresholds_layer_default_model_feature_and_tasks_are_declared() {
        let m = models(
            r#"{"models": {"churn": {"task": "binary", "positive_class": "yes",
                "features": {"plan": "categorical"},
                "drift": {"thresholds": {"psi_drift": 0.4},
                          "features": {"age": {"psi_warning": 0.3}}}}}}"#,
        );
        let drift = RawDrift::default().validate(&m).unwrap().expect("on");
        assert_eq!(drift.model_thresholds["churn"].psi_drift, 0.4);
        let age = drift.feature_thresholds[&("churn".to_owned(), "age".to_owned())];
        assert_eq!((age.psi_warning, age.psi_drift), (0.3, 0.4));
        let p = RawPerformance::default().validate(&m).unwrap().expect("on");
        assert!(
            matches!(&p.tasks["churn"], Task::Binary { positive, .. } if positive.as_str() == "yes")
        );
        assert_eq!(
            feature_schema(&m).kind("churn", "plan"),
            Some(FeatureKind::Categorical)
        );
    }
}
