//! Performance metrics against scikit-learn, change detectors against
//! River, on the samples and streams of `fixtures/make_performance_fixtures.py`
//! (outputs committed in `fixtures/performance_oracle.json`).
//!
//! Tolerances: every metric within 1e-9 of sklearn; ROC AUC exact (1e-12)
//! while the score counts are exact and within 0.005 once folded into bins;
//! change detections at the same positions as River's, give or take
//! [`POSITION_TOLERANCE`] values (floating-point sums in another order can move
//! a threshold crossing by a step).

#![allow(clippy::unwrap_used)]

use driftwatch_detectors::performance::{
    Adwin, AdwinConfig, Ddm, DdmConfig, MetricValue, Metrics, Outcome, PageHinkley,
    PageHinkleyConfig, Task,
};
use driftwatch_ingest::Label;
use serde_json::Value;

mod common;
use common::SplitMix;

const POSITION_TOLERANCE: i64 = 2;

fn fixture() -> Value {
    let text = include_str!("fixtures/performance_oracle.json");
    serde_json::from_str(text).unwrap()
}

fn find<'a>(
    values: &'a [MetricValue],
    metric: &str,
    class: Option<&str>,
) -> Option<&'a MetricValue> {
    values
        .iter()
        .find(|v| v.metric == metric && v.class.as_deref() == class && v.predicted.is_none())
}

fn close(case: &str, what: &str, got: Option<f64>, want: &Value, tol: f64) {
    match want.as_f64() {
        Some(w) => {
            let g = got.unwrap_or_else(|| panic!("{case}: {what} missing, sklearn {w}"));
            assert!((g - w).abs() <= tol, "{case}: {what} {g} vs sklearn {w}");
        }
        None => assert_eq!(got, None, "{case}: {what} should be undefined"),
    }
}

/// The fixture's binary sample: the same draws as `binary_sample` in the script.
fn binary_sample(seed: u64, n: usize) -> Vec<(f64, &'static str)> {
    let mut g = SplitMix(seed);
    (0..n)
        .map(|_| {
            let positive = g.uniform() < 0.3;
            let u = g.uniform();
            let s = if positive { u.powf(0.6) } else { u.powf(1.8) };
            (s, if positive { "1" } else { "0" })
        })
        .collect()
}

fn check_classification(case: &str, task: &Task, m: &Metrics, expected: &Value) {
    let values = m.values(task);
    for name in ["accuracy", "precision", "recall", "f1", "log_loss", "brier"] {
        if let Some(want) = expected.get(name) {
            close(
                case,
                name,
                find(&values, name, None).and_then(|v| v.value),
                want,
                1e-9,
            );
        }
    }
    for (class, figures) in expected["per_class"].as_object().unwrap() {
        for (name, want) in figures.as_object().unwrap() {
            let got = find(&values, name, Some(class)).map(|v| v.value).unwrap();
            close(case, &format!("{name} of {class}"), got, want, 1e-9);
        }
    }
    let classes: Vec<&String> = expected["per_class"].as_object().unwrap().keys().collect();
    for (t, row) in expected["confusion"].as_array().unwrap().iter().enumerate() {
        for (p, n) in row.as_array().unwrap().iter().enumerate() {
            let got = values
                .iter()
                .find(|v| {
                    v.metric == "confusion"
                        && v.class.as_deref() == Some(classes[t].as_str())
                        && v.predicted.as_deref() == Some(classes[p].as_str())
                })
                .and_then(|v| v.value)
                .unwrap_or(0.0);
            assert_eq!(
                got,
                n.as_f64().unwrap(),
                "{case}: confusion {} → {}",
                classes[t],
                classes[p]
            );
        }
    }
    if let Some(want) = expected.get("positive_rate") {
        close(
            case,
            "positive_rate",
            find(&values, "positive_rate", None).and_then(|v| v.value),
            want,
            1e-9,
        );
    }
}

#[test]
fn metrics_equal_sklearn() {
    let fixture = fixture();
    let mut checked = 0;
    for case in fixture["metrics"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let expected = &case["expected"];
        let mut m = Metrics::default();
        match case["task"].as_str().unwrap() {
            "binary" => {
                let task = Task::binary();
                let rows: Vec<(f64, String)> = match case.get("rows") {
                    Some(rows) => rows
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| (r[0].as_f64().unwrap(), r[1].as_str().unwrap().to_owned()))
                        .collect(),
                    None => {
                        let g = &case["generated"];
                        binary_sample(
                            g["seed"].as_u64().unwrap(),
                            g["n"].as_u64().unwrap() as usize,
                        )
                        .into_iter()
                        .map(|(s, y)| (s, y.to_owned()))
                        .collect()
                    }
                };
                for (score, label) in &rows {
                    let outcome = Outcome {
                        score: Some(*score),
                        ..Outcome::default()
                    };
                    m.add(&task, &outcome, &Label::Class(label.clone()))
                        .unwrap();
                }
                check_classification(name, &task, &m, expected);
                let values = m.values(&task);
                let auc = find(&values, "roc_auc", None).and_then(|v| v.value);
                let bound = find(&values, "roc_auc_error_bound", None)
                    .and_then(|v| v.value)
                    .unwrap();
                let want = &expected["roc_auc"];
                if case.get("rows").is_some() {
                    assert_eq!(bound, 0.0, "{name}: exact counts expected");
                    close(name, "roc_auc", auc, want, 1e-12);
                } else {
                    assert!(bound > 0.0, "{name}: folded counts expected");
                    close(name, "roc_auc", auc, want, 0.005);
                    let err = (auc.unwrap() - want.as_f64().unwrap()).abs();
                    assert!(err <= bound, "{name}: error {err} above its bound {bound}");
                }
            }
            "multiclass" => {
                let task = Task::Multiclass;
                let classes: Option<Vec<String>> = case.get("classes").map(|c| {
                    c.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_str().unwrap().to_owned())
                        .collect()
                });
                for r in case["rows"].as_array().unwrap() {
                    let truth = r[0].as_str().unwrap().to_owned();
                    let outcome = match &classes {
                        Some(classes) => Outcome {
                            probabilities: classes
                                .iter()
                                .enumerate()
                                .map(|(i, c)| (c.as_str().into(), r[i + 1].as_f64().unwrap()))
                                .collect(),
                            ..Outcome::default()
                        },
                        None => Outcome {
                            class: Some(r[1].as_str().unwrap().into()),
                            ..Outcome::default()
                        },
                    };
                    m.add(&task, &outcome, &Label::Class(truth)).unwrap();
                }
                check_classification(name, &task, &m, expected);
            }
            "regression" => {
                for r in case["rows"].as_array().unwrap() {
                    let outcome = Outcome {
                        value: Some(r[0].as_f64().unwrap()),
                        ..Outcome::default()
                    };
                    m.add(
                        &Task::Regression,
                        &outcome,
                        &Label::Value(r[1].as_f64().unwrap()),
                    )
                    .unwrap();
                }
                let values = m.values(&Task::Regression);
                for (metric, want) in expected.as_object().unwrap() {
                    let got = values
                        .iter()
                        .find(|v| v.metric == metric.as_str())
                        .and_then(|v| v.value);
                    close(name, metric, got, want, 1e-9);
                }
            }
            other => panic!("unknown task {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn merged_halves_equal_the_whole() {
    let task = Task::binary();
    let rows = binary_sample(8, 50_000);
    let (mut a, mut b, mut whole) = (Metrics::default(), Metrics::default(), Metrics::default());
    for (i, (s, y)) in rows.iter().enumerate() {
        let o = Outcome {
            score: Some(*s),
            ..Outcome::default()
        };
        let label = Label::Class((*y).to_owned());
        whole.add(&task, &o, &label).unwrap();
        if i % 3 == 0 { &mut a } else { &mut b }
            .add(&task, &o, &label)
            .unwrap();
    }
    a.merge(b);
    for (x, y) in a.values(&task).iter().zip(whole.values(&task)) {
        assert_eq!(x.metric, y.metric);
        let (p, q) = (x.value.unwrap_or(0.0), y.value.unwrap_or(0.0));
        assert!((p - q).abs() < 1e-9, "{} {p} vs {q}", x.metric);
    }
}

/// The fixture's stream, drawn as `stream` in the script does.
fn stream(segments: &Value, seed: u64) -> Vec<f64> {
    let mut g = SplitMix(seed);
    let mut out = Vec::new();
    for seg in segments.as_array().unwrap() {
        let n = seg[1].as_u64().unwrap();
        for _ in 0..n {
            out.push(match seg[0].as_str().unwrap() {
                "bernoulli" => f64::from(u8::from(g.uniform() < seg[2].as_f64().unwrap())),
                _ => g.normal(seg[2].as_f64().unwrap(), seg[3].as_f64().unwrap()),
            });
        }
    }
    out
}

fn detect(detector: &str, params: &Value, xs: &[f64]) -> Vec<i64> {
    let mut hits = Vec::new();
    match detector {
        "adwin" => {
            let config: AdwinConfig = serde_json::from_value(params.clone()).unwrap();
            let mut a = Adwin::new(config);
            for (i, x) in xs.iter().enumerate() {
                if a.update(*x) {
                    hits.push(i as i64);
                }
            }
        }
        "page_hinkley" => {
            let config: PageHinkleyConfig = serde_json::from_value(params.clone()).unwrap();
            let mut ph = PageHinkley::new(config);
            for (i, x) in xs.iter().enumerate() {
                if ph.update(*x) {
                    hits.push(i as i64);
                }
            }
        }
        "ddm" => {
            let config: DdmConfig = serde_json::from_value(params.clone()).unwrap();
            let mut d = Ddm::new(config);
            for (i, x) in xs.iter().enumerate() {
                if d.update(*x != 0.0) {
                    hits.push(i as i64);
                }
            }
        }
        other => panic!("unknown detector {other}"),
    }
    hits
}

#[test]
fn change_detectors_agree_with_river() {
    let fixture = fixture();
    let cases = fixture["change"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let xs = stream(&case["segments"], case["seed"].as_u64().unwrap());
        let detector = case["detector"].as_str().unwrap();
        let got = detect(detector, &case["params"], &xs);
        let want: Vec<i64> = case["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let what = format!("{} on {} {}", detector, case["stream"], case["params"]);
        assert_eq!(got.len(), want.len(), "{what}: {got:?} vs River {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= POSITION_TOLERANCE,
                "{what}: {got:?} vs River {want:?}"
            );
        }
    }
}

#[test]
fn no_detection_on_a_million_stationary_values_with_defaults() {
    for (seed, p) in [(21u64, 0.05), (22, 0.2), (23, 0.5)] {
        let mut g = SplitMix(seed);
        let mut adwin = Adwin::new(AdwinConfig::default());
        let mut ph = PageHinkley::new(PageHinkleyConfig::default());
        let mut ddm = Ddm::new(DdmConfig::default());
        for i in 0..1_000_000 {
            let error = g.uniform() < p;
            let x = f64::from(u8::from(error));
            assert!(!adwin.update(x), "ADWIN fired at {i} (error rate {p})");
            assert!(!ph.update(x), "Page-Hinkley fired at {i} (error rate {p})");
            assert!(!ddm.update(error), "DDM fired at {i} (error rate {p})");
        }
    }
}
