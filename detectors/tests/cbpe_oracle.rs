//! Label-free performance estimation against NannyML's CBPE on the same
//! data and chunks (`fixtures/make_cbpe_fixtures.py`, NannyML 0.13.1): the
//! reference's isotonic calibration, then each chunk's estimated accuracy,
//! precision, recall, F1 and ROC AUC within 0.01 of NannyML's, and the
//! accuracy's sampling error as NannyML computes it.

mod common;

use common::SplitMix;
use driftwatch_detectors::performance::estimate::{Expected, Isotonic, accuracy_sampling_error};
use serde_json::Value;

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cbpe_oracle.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// (score, label) pairs, as the fixture script draws them.
fn draw(rng: &mut SplitMix, case: &Value, n: u64, mu: f64) -> Vec<(f64, bool)> {
    let (a, b, k) = (
        case["a"].as_f64().expect("a"),
        case["b"].as_f64().expect("b"),
        case["k"].as_f64().expect("k"),
    );
    (0..n)
        .map(|_| {
            let x = rng.normal(mu, 1.0);
            let p = sigmoid(a + b * x);
            let label = rng.uniform() < p;
            let logit = (p / (1.0 - p)).ln();
            (sigmoid(k * logit), label)
        })
        .collect()
}

#[test]
fn estimates_match_nannyml_cbpe() {
    let fixtures = fixtures();
    for case in fixtures["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let threshold = case["threshold"].as_f64().expect("threshold");
        let mut rng = SplitMix(case["seed"].as_u64().expect("seed"));
        let reference = draw(&mut rng, case, case["reference"].as_u64().expect("n"), 0.0);
        let calibration = Isotonic::fit(reference.iter().copied()).expect("calibration");
        let reference_accuracy = reference
            .iter()
            .filter(|(s, y)| (*s >= threshold) == *y)
            .count() as f64
            / reference.len() as f64;
        let chunk = case["chunk"].as_u64().expect("chunk");
        let shifts = case["shifts"].as_array().expect("shifts");
        let expected = case["chunks"].as_array().expect("chunks");
        let mut realised_gap: f64 = 0.0;
        let mut nannyml_gap: f64 = 0.0;
        for (i, mu) in shifts.iter().enumerate() {
            let rows = draw(&mut rng, case, chunk, mu.as_f64().expect("shift"));
            let mut e = Expected::default();
            for (score, _) in &rows {
                e.add(*score, calibration.calibrate(*score), *score >= threshold);
            }
            let have = e.estimate();
            let want = &expected[i];
            for (metric, value) in [
                ("accuracy", have.accuracy),
                ("precision", have.precision),
                ("recall", have.recall),
                ("f1", have.f1),
                ("roc_auc", have.roc_auc),
            ] {
                let want = want[metric].as_f64().expect("figure");
                let value = value.expect("defined");
                nannyml_gap = nannyml_gap.max((value - want).abs());
                assert!(
                    (value - want).abs() <= 0.01,
                    "{name} chunk {i} {metric}: {value} vs NannyML {want}"
                );
            }
            let error = accuracy_sampling_error(reference_accuracy, chunk).expect("error");
            let want_error = want["accuracy_sampling_error"].as_f64().expect("error");
            assert!(
                (error - want_error).abs() <= 1e-9,
                "{name} chunk {i} sampling error: {error} vs {want_error}"
            );
            // and the estimate follows what the labels later say
            let realised = rows.iter().filter(|(s, y)| (*s >= threshold) == *y).count() as f64
                / rows.len() as f64;
            realised_gap = realised_gap.max((have.accuracy.expect("accuracy") - realised).abs());
            assert!(
                (have.accuracy.expect("accuracy") - realised).abs() <= 3.0 * error,
                "{name} chunk {i}: estimate {:?} vs realised {realised} (band ± {})",
                have.accuracy,
                3.0 * error
            );
        }
        eprintln!(
            "{name}: largest difference from NannyML {nannyml_gap:.2e}; \
             between estimated and realised accuracy {realised_gap:.4}"
        );
    }
}
