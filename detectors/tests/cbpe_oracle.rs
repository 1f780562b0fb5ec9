//! Label-free performance estimation against NannyML's CBPE on the same
//! data and chunks (`fixtures/make_cbpe_fixtures.py`, NannyML 0.13.1): the
//! reference's isotonic calibration, then each chunk's estimated accuracy,
//! precision, recall, F1 and ROC AUC within 0.01 of NannyML's, and the
//! accuracy's sampling error as NannyML computes it — for binary models,
//! and for a multi-class one (one class against the rest, macro averages).

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

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// (probabilities, label index) pairs, as the fixture script draws them.
fn draw_multiclass(rng: &mut SplitMix, case: &Value, n: u64, mu: f64) -> Vec<(Vec<f64>, usize)> {
    let numbers = |key: &str| -> Vec<f64> {
        case[key]
            .as_array()
            .expect("numbers")
            .iter()
            .map(|v| v.as_f64().expect("number"))
            .collect()
    };
    let (w, c, k) = (numbers("w"), numbers("c"), case["k"].as_f64().expect("k"));
    (0..n)
        .map(|_| {
            let x = rng.normal(mu, 1.0);
            let z: Vec<f64> = w.iter().zip(&c).map(|(w, c)| w * x + c).collect();
            let truth = softmax(&z);
            let u = rng.uniform();
            let mut label = truth.len() - 1;
            let mut acc = 0.0;
            for (i, p) in truth.iter().enumerate() {
                acc += p;
                if u < acc {
                    label = i;
                    break;
                }
            }
            let scaled: Vec<f64> = z.iter().map(|v| k * v).collect();
            (softmax(&scaled), label)
        })
        .collect()
}

/// numpy's argmax: the first of equal maxima.
fn argmax(p: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = i;
        }
    }
    best
}

/// Multi-class models, one class against the rest: NannyML calibrates each
/// class's probability and scales them to sum to 1; accuracy is the mean
/// calibrated probability of the predicted class, the other metrics macro
/// averages of the classes' estimates.
#[test]
fn multiclass_estimates_match_nannyml_cbpe() {
    use driftwatch_detectors::performance::estimate::{
        Multiclass, MulticlassExpected, MulticlassFigures,
    };
    let fixtures = fixtures();
    for case in fixtures["multiclass_cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let classes: Vec<String> = case["classes"]
            .as_array()
            .expect("classes")
            .iter()
            .map(|c| c.as_str().expect("class").to_owned())
            .collect();
        let mut rng = SplitMix(case["seed"].as_u64().expect("seed"));
        let reference =
            draw_multiclass(&mut rng, case, case["reference"].as_u64().expect("n"), 0.0);
        let calibration = Multiclass::fit(classes.clone(), &reference).expect("calibration");
        let figures = MulticlassFigures::of(
            &reference
                .iter()
                .map(|(p, y)| (p.clone(), *y, argmax(p)))
                .collect::<Vec<_>>(),
            classes.len(),
        )
        .expect("figures");
        let chunk = case["chunk"].as_u64().expect("chunk");
        let shifts = case["shifts"].as_array().expect("shifts");
        let expected = case["chunks"].as_array().expect("chunks");
        let (mut nannyml_gap, mut realised_gap): (f64, f64) = (0.0, 0.0);
        let mut calibrated = Vec::new();
        for (i, mu) in shifts.iter().enumerate() {
            let rows = draw_multiclass(&mut rng, case, chunk, mu.as_f64().expect("shift"));
            let mut e = MulticlassExpected::default();
            for (p, _) in &rows {
                calibration.calibrate(p, &mut calibrated);
                e.add(p, &calibrated, argmax(p));
            }
            let have = e.estimate();
            let want = &expected[i];
            let errors = figures.sampling_errors(chunk);
            for ((metric, value), error) in have.named().into_iter().zip(errors) {
                let nannyml = want[metric].as_f64().expect("figure");
                let value = value.expect("defined");
                nannyml_gap = nannyml_gap.max((value - nannyml).abs());
                assert!(
                    (value - nannyml).abs() <= 0.01,
                    "{name} chunk {i} {metric}: {value} vs NannyML {nannyml}"
                );
                // the macro averages' sampling errors are driftwatch's own
                // approximation (independent classes): the same size
                let error = error.expect("sampling error");
                let nannyml_error = want[format!("{metric}_sampling_error")]
                    .as_f64()
                    .expect("error");
                let ratio = error / nannyml_error;
                eprintln!(
                    "{name} chunk {i} {metric}: sampling error {error:.5} vs NannyML {nannyml_error:.5}"
                );
                if metric == "accuracy" {
                    assert!((ratio - 1.0).abs() < 1e-6, "{name} {metric}: {ratio}");
                } else {
                    assert!((0.5..2.0).contains(&ratio), "{name} {metric}: {ratio}");
                }
            }
            let realised =
                rows.iter().filter(|(p, y)| argmax(p) == *y).count() as f64 / rows.len() as f64;
            let accuracy = have.accuracy.expect("accuracy");
            realised_gap = realised_gap.max((accuracy - realised).abs());
            let band = 3.0 * errors[0].expect("error");
            assert!(
                (accuracy - realised).abs() <= band,
                "{name} chunk {i}: estimate {accuracy} vs realised {realised} (band ± {band})"
            );
        }
        eprintln!(
            "{name}: largest difference from NannyML {nannyml_gap:.2e}; \
             between estimated and realised accuracy {realised_gap:.4}"
        );
    }
}
