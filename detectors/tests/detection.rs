//! Detection quality with the default thresholds: every drift the demo
//! generator injects is flagged in the first window after it starts, and a
//! stream without drift raises (almost) no flags.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::AsArray;
use driftwatch_detectors::drift::FeatureSketches;
use driftwatch_detectors::{DriftConfig, DriftDetector, Level, WindowSet, WindowSpec, components};
use driftwatch_ingest::synth::{Synth, SynthConfig};
use driftwatch_ingest::{FeatureKind, FeatureValue};
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal, Poisson};

const HOUR: i64 = 3_600_000;

/// The demo's stream at 10 predictions per second: each model has thousands
/// of predictions per hour. Drift starts at 03:00; the window 03:00–04:00 is
/// the first after it starts.
#[test]
fn injected_drift_is_flagged_in_the_first_window_after_it_starts() {
    let config = SynthConfig {
        mean_interval_ms: 100.0,
        drift_after_ms: Some(3 * HOUR),
        late_fraction: 0.0,
        ..SynthConfig::default()
    };
    let start = config.start;
    let drift = DriftDetector::new(DriftConfig::default()).unwrap();
    let mut windows = WindowSet::new(
        WindowSpec::tumbling(HOUR).unwrap(),
        60_000,
        components(drift, driftwatch_detectors::LabelFree::default()),
    );
    let mut closed = Vec::new();
    for p in Synth::new(config)
        .predictions()
        .take_while(|p| p.timestamp < start + 5 * HOUR)
    {
        windows.push(&p).unwrap();
        closed.extend(windows.close_ready().unwrap());
    }
    closed.extend(windows.close_all().unwrap());

    // (model, window start) -> features at level drift
    let mut flagged: BTreeMap<(String, i64), BTreeSet<String>> = BTreeMap::new();
    let mut compared = 0usize;
    for w in &closed {
        let (_, batch) = w.tables.iter().find(|(n, _)| n == "feature_drift").unwrap();
        let names = batch.column_by_name("feature").unwrap().as_string::<i32>();
        let levels = batch.column_by_name("level").unwrap().as_string::<i32>();
        let entry = flagged
            .entry((w.key.model_id.to_string(), w.key.start - start))
            .or_default();
        for i in 0..batch.num_rows() {
            if matches!(levels.value(i), "ok" | "warning" | "drift") {
                compared += 1;
            }
            if levels.value(i) == "drift" {
                entry.insert(names.value(i).to_owned());
            }
        }
    }
    let at = |model: &str, hour: i64| {
        flagged
            .get(&(model.to_owned(), hour * HOUR))
            .cloned()
            .unwrap_or_default()
    };
    let churn = at("churn", 3);
    for feature in [
        "tenure_months",
        "monthly_spend",
        "plan",
        "country",
        "prediction.score",
    ] {
        assert!(
            churn.contains(feature),
            "churn {feature} not flagged at 03:00: {churn:?}"
        );
    }
    let fraud = at("fraud", 3);
    for feature in ["amount", "prediction.score"] {
        assert!(
            fraud.contains(feature),
            "fraud {feature} not flagged at 03:00: {fraud:?}"
        );
    }
    // before the drift, and for the control model, flags are rare
    let false_flags: usize = flagged
        .iter()
        .filter(|((model, t), _)| model == "eta" || *t < 3 * HOUR)
        .map(|(_, f)| f.len())
        .sum();
    assert!(
        false_flags * 100 <= compared,
        "{false_flags} false flags: {flagged:?}"
    );
}

/// A stream without drift: 100 windows of 100,000 values per feature,
/// each compared with a reference window from the same distributions.
/// Fewer than 1 % of (window, feature) pairs may be flagged.
#[test]
fn no_drift_stream_raises_fewer_than_one_percent_flags() {
    let config = DriftConfig::default();
    let detector = DriftDetector::new(config.clone()).unwrap();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(2026);
    let normal = Normal::new(50.0, 10.0).unwrap();
    let lognormal = LogNormal::new(3.0, 1.0).unwrap();
    let poisson = Poisson::new(4.0).unwrap();
    let categories = ["a", "b", "c", "d", "e", "f"];
    let weights = [0.3, 0.25, 0.2, 0.15, 0.07, 0.03];
    let features: Vec<(&str, FeatureKind)> = vec![
        ("normal", FeatureKind::Numeric),
        ("lognormal", FeatureKind::Numeric),
        ("uniform", FeatureKind::Numeric),
        ("counts", FeatureKind::Numeric),
        ("bimodal", FeatureKind::Numeric),
        ("category", FeatureKind::Categorical),
    ];
    let window = |rng: &mut rand_pcg::Pcg64| -> Vec<FeatureSketches> {
        let mut sketches: Vec<FeatureSketches> = features
            .iter()
            .map(|_| FeatureSketches::new(&config))
            .collect();
        for _ in 0..100_000 {
            let values = [
                normal.sample(rng),
                lognormal.sample(rng),
                rng.random_range(0.0..1.0),
                poisson.sample(rng),
                if rng.random_bool(0.3) {
                    normal.sample(rng)
                } else {
                    normal.sample(rng) + 60.0
                },
            ];
            for (s, x) in sketches.iter_mut().zip(values) {
                s.add(&FeatureValue::Numeric(x));
            }
            let mut u = rng.random::<f64>();
            let mut k = 0;
            while k < weights.len() - 1 && u >= weights[k] {
                u -= weights[k];
                k += 1;
            }
            sketches[5].add(&FeatureValue::Categorical(categories[k].into()));
        }
        sketches
    };
    let reference = window(&mut rng);
    let (mut pairs, mut flagged) = (0, Vec::new());
    for w in 0..100 {
        let current = window(&mut rng);
        for (i, (name, kind)) in features.iter().enumerate() {
            let verdict = detector.compare("m", name, *kind, &reference[i], &current[i]);
            pairs += 1;
            if verdict.level == Some(Level::Drift) {
                flagged.push((w, *name, verdict));
            }
        }
    }
    assert_eq!(pairs, 600);
    assert!(
        flagged.len() * 100 < pairs,
        "{} of {pairs} flagged: {flagged:?}",
        flagged.len()
    );
}

#[test]
fn invalid_drift_settings_name_the_key() {
    let bad_bins = DriftConfig {
        bins: 1,
        ..DriftConfig::default()
    };
    assert!(
        DriftDetector::new(bad_bins)
            .unwrap_err()
            .to_string()
            .contains("drift.bins")
    );
    let mut negative = DriftConfig::default();
    negative.thresholds.psi_drift = -0.1;
    assert!(
        DriftDetector::new(negative)
            .unwrap_err()
            .to_string()
            .contains("drift.thresholds")
    );
    let mut inverted = DriftConfig::default();
    inverted.thresholds.js_warning = 0.5;
    assert!(
        DriftDetector::new(inverted)
            .unwrap_err()
            .to_string()
            .contains("js_warning")
    );
}

/// The p-value decision flags a 0.5 sd shift in windows of 300 values, and
/// is quiet on same-distribution windows most of the time.
#[test]
fn p_value_decision_for_small_windows() {
    use driftwatch_detectors::Decision;
    let config = DriftConfig {
        decision: Decision::PValue,
        ..DriftConfig::default()
    };
    let detector = DriftDetector::new(config.clone()).unwrap();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(11);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let sketch = |shift: f64, rng: &mut rand_pcg::Pcg64| {
        let mut s = FeatureSketches::new(&config);
        for _ in 0..300 {
            s.add(&FeatureValue::Numeric(normal.sample(rng) + shift));
        }
        s
    };
    let reference = sketch(0.0, &mut rng);
    let (mut shifted_flags, mut quiet_flags) = (0, 0);
    for _ in 0..50 {
        let shifted = detector.compare(
            "m",
            "x",
            FeatureKind::Numeric,
            &reference,
            &sketch(0.5, &mut rng),
        );
        shifted_flags += usize::from(shifted.level == Some(Level::Drift));
        let same = detector.compare(
            "m",
            "x",
            FeatureKind::Numeric,
            &reference,
            &sketch(0.0, &mut rng),
        );
        quiet_flags += usize::from(same.level == Some(Level::Drift));
        assert!(same.p_value.is_some());
    }
    assert!(
        shifted_flags >= 45,
        "shift flagged in {shifted_flags} of 50"
    );
    assert!(quiet_flags <= 5, "no shift flagged in {quiet_flags} of 50");
}
