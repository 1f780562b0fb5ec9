//! Deterministic synthetic model traffic: the demo's stream, and the data of
//! tests and benchmarks.
//!
//! Three models, each with 22 numeric and 6 categorical features of varied
//! distributions, publish predictions; 80 % of predictions get a label,
//! delayed by minutes to days. Part-way through (`drift_after`), drift is
//! injected:
//!
//! | model | kind | what changes |
//! | --- | --- | --- |
//! | `churn` | binary classifier | `tenure_months` mean +0.5 sd, `monthly_spend` variance ×1.5, `plan` mix, new `country` "br", accuracy degrades |
//! | `fraud` | binary classifier | fraud rate ×3: prediction drift, `amount` shifts up |
//! | `eta` | regression | nothing: the control model |
//!
//! Events come out in arrival order: prediction times jitter by up to two
//! seconds, a configurable share of predictions arrives hours late, and
//! labels arrive when their delay has passed. The same seed gives the same
//! stream, event for event.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, LogNormal, Normal, Poisson};
use rand_pcg::Pcg64;

use crate::event::{
    Event, EventTime, Feature, FeatureKind, FeatureValue, Label, LabelEvent, Prediction,
    PredictionEvent,
};

/// Settings of the synthetic stream.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// Seed; the same seed gives the same stream.
    pub seed: u64,
    /// Event time of the first prediction (ms since the epoch).
    pub start: EventTime,
    /// Mean time between two predictions, over all models (ms).
    pub mean_interval_ms: f64,
    /// Share of predictions that get a label.
    pub label_fraction: f64,
    /// Drift starts this long after `start` (ms); `None`: no drift at all.
    pub drift_after_ms: Option<i64>,
    /// Share of predictions that arrive `late_by_ms` after their event time.
    pub late_fraction: f64,
    /// How late the late predictions arrive (ms).
    pub late_by_ms: i64,
    /// Only this model's traffic (at the same overall rate); `None`: all three.
    pub model: Option<String>,
    /// At most this many numeric features per model (the first ones).
    pub numeric_features: Option<usize>,
    /// At most this many categorical features per model (the first ones).
    pub categorical_features: Option<usize>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 42,
            // 2026-11-01T00:00:00Z
            start: 1_793_491_200_000,
            mean_interval_ms: 1000.0,
            label_fraction: 0.8,
            drift_after_ms: Some(3 * 24 * 3600 * 1000),
            late_fraction: 0.0005,
            late_by_ms: 2 * 3600 * 1000,
            model: None,
            numeric_features: None,
            categorical_features: None,
        }
    }
}

impl SynthConfig {
    /// A config whose drift starts in the middle of a stream of `events` events
    /// (predictions and labels together).
    pub fn for_events(events: u64, seed: u64) -> Self {
        let mut config = SynthConfig {
            seed,
            ..SynthConfig::default()
        };
        let predictions = events as f64 / (1.0 + config.label_fraction);
        config.drift_after_ms = Some((predictions * config.mean_interval_ms / 2.0) as i64);
        config
    }

    /// A config whose drift starts half-way through `predictions` predictions.
    pub fn for_predictions(predictions: u64, seed: u64) -> Self {
        let config = SynthConfig::default();
        SynthConfig::for_events(
            (predictions as f64 * (1.0 + config.label_fraction)) as u64,
            seed,
        )
    }

    /// The model specs this config generates.
    fn models(&self) -> Result<Vec<ModelSpec>, String> {
        let mut all = models();
        if let Some(id) = &self.model {
            let known: Vec<String> = all.iter().map(|m| m.id.to_string()).collect();
            all.retain(|m| &*m.id == id.as_str());
            if all.is_empty() {
                return Err(format!(
                    "no synthetic model {id:?} (there are {})",
                    known.join(", ")
                ));
            }
            all[0].share = 1.0;
        }
        for m in &mut all {
            let (mut numeric, mut categorical) = (0, 0);
            m.features.retain(|f| match f.kind {
                Kind::Numeric { .. } => {
                    numeric += 1;
                    self.numeric_features.is_none_or(|n| numeric <= n)
                }
                Kind::Categorical { .. } => {
                    categorical += 1;
                    self.categorical_features.is_none_or(|n| categorical <= n)
                }
            });
        }
        Ok(all)
    }
}

/// How a numeric feature is distributed.
#[derive(Debug, Clone, Copy)]
enum Numeric {
    Normal(f64, f64),
    LogNormal(f64, f64),
    Uniform(f64, f64),
    Exponential(f64),
    Poisson(f64),
    Bimodal(f64, f64, f64, f64, f64),
    Beta(f64, f64),
}

impl Numeric {
    fn sample(self, rng: &mut Pcg64) -> f64 {
        match self {
            Numeric::Normal(mu, sd) => normal(mu, sd).sample(rng),
            Numeric::LogNormal(mu, sigma) => LogNormal::new(mu, sigma)
                .map(|d| d.sample(rng))
                .unwrap_or(mu.exp()),
            Numeric::Uniform(a, b) => rng.random_range(a..b),
            Numeric::Exponential(lambda) => Exp::new(lambda).map(|d| d.sample(rng)).unwrap_or(0.0),
            Numeric::Poisson(l) => Poisson::new(l).map(|d| d.sample(rng)).unwrap_or(l),
            Numeric::Bimodal(m1, s1, m2, s2, w) => {
                if rng.random_bool(w) {
                    normal(m1, s1).sample(rng)
                } else {
                    normal(m2, s2).sample(rng)
                }
            }
            Numeric::Beta(a, b) => Beta::new(a, b).map(|d| d.sample(rng)).unwrap_or(0.5),
        }
    }
}

fn normal(mu: f64, sd: f64) -> Normal<f64> {
    // parameters are constants of this module, all valid
    Normal::new(mu, sd.abs())
        .unwrap_or_else(|_| Normal::new(0.0, 1.0).unwrap_or_else(|_| unreachable!()))
}

/// What happens to a feature once drift starts.
#[derive(Debug, Clone)]
enum Change {
    None,
    /// Add this many standard deviations to the value.
    Shift(f64),
    /// Multiply the variance around the mean by this factor.
    Variance(f64),
    /// Replace the category weights.
    Mix(Vec<f64>),
    /// A new category takes this share.
    NewCategory(&'static str, f64),
}

#[derive(Debug, Clone)]
enum Kind {
    Numeric {
        dist: Numeric,
        /// approximate mean and sd, for shifts and variance changes
        mean: f64,
        sd: f64,
        decimals: i32,
    },
    Categorical {
        categories: Vec<&'static str>,
        weights: Vec<f64>,
    },
}

#[derive(Debug, Clone)]
struct FeatureSpec {
    name: Arc<str>,
    kind: Kind,
    missing: f64,
    change: Change,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Task {
    Churn,
    Fraud,
    Eta,
}

#[derive(Debug, Clone)]
struct ModelSpec {
    id: Arc<str>,
    version: Arc<str>,
    task: Task,
    share: f64,
    features: Vec<FeatureSpec>,
    regions: Vec<&'static str>,
    /// Versions deployed later ([`Synth::deploy`]), by the event time from
    /// which they serve: trained on the drifted data, drift no longer costs
    /// them accuracy.
    deployed: Vec<(EventTime, Arc<str>)>,
}

impl ModelSpec {
    /// The version serving at event time `t`, and whether it was retrained.
    fn serving(&self, t: EventTime) -> (&Arc<str>, bool) {
        match self.deployed.iter().rev().find(|(from, _)| *from <= t) {
            Some((_, v)) => (v, true),
            None => (&self.version, false),
        }
    }
}

fn numeric(
    name: &str,
    dist: Numeric,
    mean: f64,
    sd: f64,
    decimals: i32,
    missing: f64,
) -> FeatureSpec {
    FeatureSpec {
        name: Arc::from(name),
        kind: Kind::Numeric {
            dist,
            mean,
            sd,
            decimals,
        },
        missing,
        change: Change::None,
    }
}

fn categorical(
    name: &str,
    categories: &[&'static str],
    weights: &[f64],
    missing: f64,
) -> FeatureSpec {
    FeatureSpec {
        name: Arc::from(name),
        kind: Kind::Categorical {
            categories: categories.to_vec(),
            weights: weights.to_vec(),
        },
        missing,
        change: Change::None,
    }
}

/// 22 numeric features shared in shape by all models (names prefixed per
/// model), with means and sds stated for the drift arithmetic.
fn generic_numeric(prefix: &str) -> Vec<FeatureSpec> {
    let n = |s: &str| format!("{prefix}_{s}");
    vec![
        numeric(
            &n("n_sessions_7d"),
            Numeric::Poisson(6.0),
            6.0,
            2.45,
            0,
            0.0,
        ),
        numeric(
            &n("n_sessions_30d"),
            Numeric::Poisson(24.0),
            24.0,
            4.9,
            0,
            0.0,
        ),
        numeric(
            &n("avg_session_min"),
            Numeric::LogNormal(2.3, 0.6),
            12.0,
            8.0,
            2,
            0.01,
        ),
        numeric(
            &n("days_since_login"),
            Numeric::Exponential(0.2),
            5.0,
            5.0,
            1,
            0.0,
        ),
        numeric(
            &n("support_tickets"),
            Numeric::Poisson(0.4),
            0.4,
            0.63,
            0,
            0.0,
        ),
        numeric(
            &n("page_views"),
            Numeric::LogNormal(4.0, 0.9),
            82.0,
            90.0,
            0,
            0.02,
        ),
        numeric(
            &n("cart_value"),
            Numeric::LogNormal(3.5, 1.1),
            60.0,
            90.0,
            2,
            0.05,
        ),
        numeric(
            &n("discount_rate"),
            Numeric::Beta(2.0, 8.0),
            0.2,
            0.12,
            4,
            0.0,
        ),
        numeric(
            &n("latency_ms"),
            Numeric::Bimodal(80.0, 10.0, 250.0, 40.0, 0.8),
            114.0,
            70.0,
            1,
            0.0,
        ),
        numeric(
            &n("temperature"),
            Numeric::Normal(18.0, 7.0),
            18.0,
            7.0,
            2,
            0.03,
        ),
        numeric(&n("lat"), Numeric::Uniform(-60.0, 70.0), 5.0, 37.5, 4, 0.0),
        numeric(
            &n("lon"),
            Numeric::Uniform(-180.0, 180.0),
            0.0,
            104.0,
            4,
            0.0,
        ),
        numeric(
            &n("credit_score"),
            Numeric::Normal(680.0, 60.0),
            680.0,
            60.0,
            0,
            0.01,
        ),
        numeric(
            &n("income_k"),
            Numeric::LogNormal(4.0, 0.5),
            62.0,
            33.0,
            1,
            0.08,
        ),
        numeric(&n("clicks_1h"), Numeric::Poisson(2.0), 2.0, 1.41, 0, 0.0),
        numeric(
            &n("ratio_mobile"),
            Numeric::Beta(5.0, 3.0),
            0.625,
            0.16,
            4,
            0.0,
        ),
        numeric(
            &n("items_in_cart"),
            Numeric::Poisson(3.0),
            3.0,
            1.73,
            0,
            0.0,
        ),
        numeric(
            &n("account_age_d"),
            Numeric::Uniform(0.0, 3650.0),
            1825.0,
            1054.0,
            0,
            0.0,
        ),
        numeric(
            &n("score_ext"),
            Numeric::Normal(0.0, 1.0),
            0.0,
            1.0,
            4,
            0.02,
        ),
        numeric(
            &n("balance"),
            Numeric::Bimodal(0.0, 50.0, 2000.0, 600.0, 0.4),
            1200.0,
            1050.0,
            2,
            0.0,
        ),
    ]
}

fn models() -> Vec<ModelSpec> {
    let regions = vec!["eu", "us", "apac"];
    let mut churn = vec![
        numeric(
            "tenure_months",
            Numeric::Normal(30.0, 12.0),
            30.0,
            12.0,
            1,
            0.0,
        ),
        numeric(
            "monthly_spend",
            Numeric::Normal(70.0, 20.0),
            70.0,
            20.0,
            2,
            0.01,
        ),
    ];
    churn[0].change = Change::Shift(0.5);
    churn[1].change = Change::Variance(1.5);
    churn.extend(generic_numeric("c"));
    churn.push(categorical(
        "plan",
        &["free", "basic", "pro", "team"],
        &[0.4, 0.3, 0.2, 0.1],
        0.0,
    ));
    churn.push(categorical(
        "country",
        &["us", "de", "fr", "uk", "jp", "in"],
        &[0.35, 0.15, 0.12, 0.15, 0.1, 0.13],
        0.01,
    ));
    churn.push(categorical(
        "device",
        &["ios", "android", "web"],
        &[0.4, 0.4, 0.2],
        0.0,
    ));
    churn.push(categorical(
        "channel",
        &["organic", "ads", "referral", "partner"],
        &[0.5, 0.3, 0.15, 0.05],
        0.02,
    ));
    churn.push(categorical(
        "payment",
        &["card", "paypal", "invoice"],
        &[0.7, 0.2, 0.1],
        0.0,
    ));
    churn.push(categorical(
        "is_promo",
        &["true", "false"],
        &[0.15, 0.85],
        0.0,
    ));
    let len = churn.len();
    churn[len - 6].change = Change::Mix(vec![0.2, 0.3, 0.3, 0.2]);
    churn[len - 5].change = Change::NewCategory("br", 0.15);

    let mut fraud = vec![
        numeric("amount", Numeric::LogNormal(3.8, 1.0), 74.0, 97.0, 2, 0.0),
        numeric("merchant_risk", Numeric::Beta(2.0, 5.0), 0.29, 0.16, 4, 0.0),
    ];
    fraud[0].change = Change::Shift(0.5);
    fraud.extend(generic_numeric("f"));
    fraud.push(categorical(
        "mcc",
        &["5411", "5812", "5999", "4111", "7995"],
        &[0.3, 0.25, 0.25, 0.15, 0.05],
        0.0,
    ));
    fraud.push(categorical(
        "card_type",
        &["debit", "credit", "prepaid"],
        &[0.55, 0.4, 0.05],
        0.0,
    ));
    fraud.push(categorical(
        "entry_mode",
        &["chip", "swipe", "online", "contactless"],
        &[0.3, 0.1, 0.4, 0.2],
        0.0,
    ));
    fraud.push(categorical(
        "currency",
        &["usd", "eur", "gbp"],
        &[0.6, 0.3, 0.1],
        0.0,
    ));
    fraud.push(categorical(
        "device_seen",
        &["true", "false"],
        &[0.8, 0.2],
        0.01,
    ));
    fraud.push(categorical(
        "hour_bucket",
        &["night", "morning", "afternoon", "evening"],
        &[0.1, 0.3, 0.35, 0.25],
        0.0,
    ));

    let mut eta = vec![
        numeric(
            "distance_km",
            Numeric::LogNormal(1.5, 0.7),
            5.7,
            4.5,
            3,
            0.0,
        ),
        numeric("traffic_index", Numeric::Beta(3.0, 3.0), 0.5, 0.19, 4, 0.0),
    ];
    eta.extend(generic_numeric("e"));
    eta.push(categorical(
        "vehicle",
        &["bike", "car", "scooter"],
        &[0.3, 0.5, 0.2],
        0.0,
    ));
    eta.push(categorical(
        "city",
        &["berlin", "paris", "nyc", "tokyo"],
        &[0.25, 0.25, 0.3, 0.2],
        0.0,
    ));
    eta.push(categorical(
        "weather",
        &["clear", "rain", "snow"],
        &[0.7, 0.25, 0.05],
        0.02,
    ));
    eta.push(categorical(
        "weekday",
        &["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        &[1.0; 7],
        0.0,
    ));
    eta.push(categorical(
        "restaurant_tier",
        &["a", "b", "c"],
        &[0.2, 0.5, 0.3],
        0.0,
    ));
    eta.push(categorical(
        "courier_new",
        &["true", "false"],
        &[0.1, 0.9],
        0.0,
    ));

    vec![
        ModelSpec {
            id: Arc::from("churn"),
            version: Arc::from("v12"),
            task: Task::Churn,
            share: 0.5,
            features: churn,
            regions: regions.clone(),
            deployed: Vec::new(),
        },
        ModelSpec {
            id: Arc::from("fraud"),
            version: Arc::from("v3"),
            task: Task::Fraud,
            share: 0.3,
            features: fraud,
            regions: regions.clone(),
            deployed: Vec::new(),
        },
        ModelSpec {
            id: Arc::from("eta"),
            version: Arc::from("v7"),
            task: Task::Eta,
            share: 0.2,
            features: eta,
            regions,
            deployed: Vec::new(),
        },
    ]
}

/// A label waiting for its arrival time, ordered so the heap pops the earliest.
#[derive(Debug)]
struct Pending {
    arrival: EventTime,
    seq: u64,
    event: LabelEvent,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.arrival, self.seq) == (other.arrival, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.arrival, other.seq).cmp(&(self.arrival, self.seq))
    }
}

/// The endless synthetic stream; take as many events as needed.
#[derive(Debug)]
pub struct Synth {
    config: SynthConfig,
    rng: Pcg64,
    models: Vec<ModelSpec>,
    /// arrival time of the next prediction
    clock: f64,
    seq: u64,
    labels: BinaryHeap<Pending>,
    gap: Exp<f64>,
    delay: LogNormal<f64>,
}

/// splitmix64: a bijection on u64, so distinct sequence numbers give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn round(x: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (x * p).round() / p
}

fn pick(rng: &mut Pcg64, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

impl Synth {
    /// A stream with the given settings, which name no model (`model: None`)
    /// or one that exists.
    ///
    /// # Panics
    /// When `config.model` names no synthetic model: use
    /// [`try_new`](Self::try_new) for a name from outside.
    pub fn new(config: SynthConfig) -> Self {
        Self::try_new(config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A stream with the given settings; an error names a model that does
    /// not exist.
    pub fn try_new(config: SynthConfig) -> Result<Self, String> {
        let rng = Pcg64::seed_from_u64(config.seed);
        let gap =
            Exp::new(1.0 / config.mean_interval_ms.max(1e-3)).unwrap_or_else(|_| unreachable!());
        // median delay two hours, 5 % under ten minutes, 5 % over a day
        let delay =
            LogNormal::new((2.0f64 * 3600.0 * 1000.0).ln(), 1.5).unwrap_or_else(|_| unreachable!());
        let models = config.models()?;
        Ok(Synth {
            // predictions jitter up to two seconds back: start the clock past it
            clock: (config.start + 2000) as f64,
            config,
            rng,
            models,
            seq: 0,
            labels: BinaryHeap::new(),
            gap,
            delay,
        })
    }

    /// Only the predictions of the stream (tests and benchmarks that drive
    /// the detectors directly).
    pub fn predictions(self) -> impl Iterator<Item = PredictionEvent> {
        self.filter_map(|e| match e {
            Event::Prediction(p) => Some(p),
            Event::Label(_) => None,
        })
    }

    /// Ids of the generated models.
    pub fn model_ids(&self) -> Vec<Arc<str>> {
        self.models.iter().map(|m| Arc::clone(&m.id)).collect()
    }

    /// Every feature of every model with its kind, in a stable order (for
    /// writing columnar files).
    pub fn feature_columns(&self) -> Vec<(Arc<str>, FeatureKind)> {
        let mut out: Vec<(Arc<str>, FeatureKind)> = Vec::new();
        for spec in self.models.iter().flat_map(|m| &m.features) {
            let kind = match spec.kind {
                Kind::Numeric { .. } => FeatureKind::Numeric,
                Kind::Categorical { .. } => FeatureKind::Categorical,
            };
            if !out.iter().any(|(n, _)| *n == spec.name) {
                out.push((Arc::clone(&spec.name), kind));
            }
        }
        out
    }

    /// The version of `model` serving at event time `t`.
    pub fn version(&self, model: &str, t: EventTime) -> Option<Arc<str>> {
        self.models
            .iter()
            .find(|m| &*m.id == model)
            .map(|m| Arc::clone(m.serving(t).0))
    }

    /// Deploys version `version` of `model`, trained on the data as it is
    /// now: predictions from event time `from` on carry the new version, and
    /// drift no longer costs it accuracy (the features drift as before;
    /// against the new version's own reference they do not). The retraining
    /// loop of the demo and of the tests.
    pub fn deploy(&mut self, model: &str, version: &str, from: EventTime) -> Result<(), String> {
        let m = self
            .models
            .iter_mut()
            .find(|m| &*m.id == model)
            .ok_or_else(|| format!("no synthetic model {model:?}"))?;
        m.deployed.push((from, Arc::from(version)));
        m.deployed.sort_by_key(|(t, _)| *t);
        Ok(())
    }

    /// Event time of the next prediction (before its jitter).
    pub fn clock(&self) -> EventTime {
        self.clock as EventTime
    }

    /// When drift starts (event time), if it does.
    pub fn drift_start(&self) -> Option<EventTime> {
        self.config.drift_after_ms.map(|d| self.config.start + d)
    }

    fn prediction(&mut self, arrival: EventTime) -> PredictionEvent {
        let rng = &mut self.rng;
        let seq = self.seq;
        self.seq += 1;
        let late = rng.random_bool(self.config.late_fraction);
        let jitter = rng.random_range(0..2000);
        let timestamp = arrival - jitter - if late { self.config.late_by_ms } else { 0 };
        let drifted = self
            .config
            .drift_after_ms
            .is_some_and(|d| timestamp >= self.config.start + d);
        let shares: Vec<f64> = self.models.iter().map(|m| m.share).collect();
        let model = &self.models[pick(rng, &shares)];

        let mut features = Vec::with_capacity(model.features.len());
        for spec in &model.features {
            let value = if rng.random_bool(spec.missing) {
                FeatureValue::Missing
            } else {
                let change = if drifted { &spec.change } else { &Change::None };
                match &spec.kind {
                    Kind::Numeric {
                        dist,
                        mean,
                        sd,
                        decimals,
                    } => {
                        let x = dist.sample(rng);
                        let x = match change {
                            Change::Shift(k) => x + k * sd,
                            Change::Variance(f) => mean + (x - mean) * f.sqrt(),
                            _ => x,
                        };
                        FeatureValue::Numeric(round(x, *decimals))
                    }
                    Kind::Categorical {
                        categories,
                        weights,
                    } => {
                        let category = match change {
                            Change::Mix(w) => categories[pick(rng, w)],
                            Change::NewCategory(name, share) if rng.random_bool(*share) => name,
                            _ => categories[pick(rng, weights)],
                        };
                        FeatureValue::Categorical(category.into())
                    }
                }
            };
            features.push(Feature {
                name: Arc::clone(&spec.name),
                value,
            });
        }

        let (prediction, label) = match model.task {
            Task::Churn | Task::Fraud => {
                let rate = match (model.task, drifted) {
                    (Task::Churn, _) => 0.3,
                    (_, false) => 0.05,
                    (_, true) => 0.15,
                };
                let positive = rng.random_bool(rate);
                // separation of the score between classes: lower after drift
                // for churn, until a version trained on the drifted data
                let (a, b) = match (model.task, drifted && !model.serving(timestamp).1) {
                    (Task::Churn, true) => (2.2, 1.6),
                    _ => (5.0, 1.6),
                };
                let (a, b) = if positive { (a, b) } else { (b, a) };
                let score = round(Beta::new(a, b).map(|d| d.sample(rng)).unwrap_or(0.5), 4);
                let class = if score >= 0.5 { "1" } else { "0" };
                (
                    Prediction {
                        score: Some(score),
                        class: Some(class.to_owned()),
                        ..Prediction::default()
                    },
                    Label::Class(if positive { "1" } else { "0" }.to_owned()),
                )
            }
            Task::Eta => {
                let distance = match features.first().map(|f| &f.value) {
                    Some(FeatureValue::Numeric(d)) => *d,
                    _ => 5.0,
                };
                let truth = 8.0 + 3.2 * distance + normal(0.0, 4.0).sample(rng);
                let predicted = truth + normal(0.0, 3.0).sample(rng);
                (
                    Prediction {
                        value: Some(round(predicted, 2)),
                        ..Prediction::default()
                    },
                    Label::Value(round(truth.max(1.0), 2)),
                )
            }
        };
        let region = model.regions[pick(rng, &[0.4, 0.4, 0.2])];
        let event_id = format!("{:016x}", mix(seq ^ self.config.seed.rotate_left(32)));
        if rng.random_bool(self.config.label_fraction) {
            let delay = (self.delay.sample(rng) as i64).clamp(60_000, 7 * 24 * 3600 * 1000);
            let label_time = timestamp + delay;
            self.labels.push(Pending {
                arrival: label_time,
                seq,
                event: LabelEvent {
                    event_id: event_id.clone(),
                    model_id: Arc::clone(&model.id),
                    timestamp: label_time,
                    label,
                },
            });
        }
        PredictionEvent {
            event_id,
            model_id: Arc::clone(&model.id),
            model_version: Some(Arc::clone(model.serving(timestamp).0)),
            timestamp,
            features,
            prediction,
            segments: vec![(Arc::from("region"), region.to_owned())],
            label: None,
        }
    }
}

impl Iterator for Synth {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let now = self.clock as EventTime;
        if self.labels.peek().is_some_and(|p| p.arrival <= now) {
            return self.labels.pop().map(|p| Event::Label(p.event));
        }
        let prediction = self.prediction(now);
        self.clock += self.gap.sample(&mut self.rng);
        Some(Event::Prediction(prediction))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<Event> = Synth::new(SynthConfig::default()).take(2000).collect();
        let b: Vec<Event> = Synth::new(SynthConfig::default()).take(2000).collect();
        assert_eq!(a, b);
        let c: Vec<Event> = Synth::new(SynthConfig {
            seed: 7,
            ..SynthConfig::default()
        })
        .take(2000)
        .collect();
        assert_ne!(a, c);
    }

    /// Accuracy of churn predictions (score ≥ 0.5 against the label).
    fn churn_accuracy(events: &[Event]) -> (f64, Vec<String>) {
        let mut predicted = std::collections::HashMap::new();
        let mut versions = Vec::new();
        let (mut right, mut all) = (0u32, 0u32);
        for e in events {
            match e {
                Event::Prediction(p) if &*p.model_id == "churn" => {
                    let v = p.model_version.as_deref().unwrap_or("").to_owned();
                    if versions.last() != Some(&v) {
                        versions.push(v);
                    }
                    predicted.insert(p.event_id.clone(), p.prediction.class.clone());
                }
                Event::Label(l) => {
                    if let (Some(Some(class)), Label::Class(truth)) =
                        (predicted.get(&l.event_id), &l.label)
                    {
                        all += 1;
                        right += u32::from(class == truth);
                    }
                }
                _ => {}
            }
        }
        (f64::from(right) / f64::from(all.max(1)), versions)
    }

    #[test]
    fn a_version_deployed_after_drift_is_accurate_again_and_carries_its_name() {
        // no late predictions: a prediction from before the deploy, late,
        // rightly carries the old version
        let config = SynthConfig {
            drift_after_ms: Some(0),
            label_fraction: 1.0,
            late_fraction: 0.0,
            ..SynthConfig::default()
        };
        let drifted: Vec<Event> = Synth::new(config.clone()).take(20_000).collect();
        let mut synth = Synth::new(config);
        let now = synth.clock();
        assert_eq!(synth.version("churn", now).as_deref(), Some("v12"));
        // from before the first prediction's time, jitter included
        synth
            .deploy("churn", "v13", now - 5_000)
            .expect("churn exists");
        assert_eq!(synth.version("churn", now).as_deref(), Some("v13"));
        assert_eq!(synth.version("churn", now - 10_000).as_deref(), Some("v12"));
        let retrained: Vec<Event> = synth.take(20_000).collect();
        let (before, old) = churn_accuracy(&drifted);
        let (after, new) = churn_accuracy(&retrained);
        assert_eq!(old, ["v12"]);
        assert_eq!(new, ["v13"]);
        assert!(
            before < 0.75,
            "drift costs the old version accuracy: {before}"
        );
        assert!(after > 0.85, "the retrained version recovers: {after}");
        assert!(
            Synth::new(SynthConfig::default())
                .deploy("nope", "v1", 0)
                .is_err()
        );
    }

    #[test]
    fn every_model_has_enough_features_of_both_kinds() {
        for model in models() {
            let numeric = model
                .features
                .iter()
                .filter(|f| matches!(f.kind, Kind::Numeric { .. }))
                .count();
            let categorical = model.features.len() - numeric;
            assert!(numeric >= 20, "{} has {numeric} numeric features", model.id);
            assert!(
                categorical >= 5,
                "{} has {categorical} categorical features",
                model.id
            );
        }
    }

    #[test]
    fn labels_follow_their_predictions_and_ids_are_unique() {
        let mut seen = std::collections::HashMap::new();
        let mut labels = 0;
        for event in Synth::new(SynthConfig::default()).take(50_000) {
            match event {
                Event::Prediction(p) => {
                    assert!(seen.insert(p.event_id.clone(), p.timestamp).is_none());
                }
                Event::Label(l) => {
                    labels += 1;
                    let t = seen.get(&l.event_id).expect("label after its prediction");
                    assert!(l.timestamp - t >= 60_000);
                }
            }
        }
        assert!(labels > 10_000, "{labels} labels");
    }
}
