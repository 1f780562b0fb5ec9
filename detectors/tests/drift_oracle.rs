//! Drift statistics from sketches against scipy/numpy on the raw samples
//! (fixtures made by `fixtures/make_drift_fixtures.py`, committed).
//!
//! Tolerances (default compression): KS D within 0.01; normalised Wasserstein
//! within 2 % relative or 0.005 absolute; PSI and JS within 0.01 of the exact
//! binned value; the categorical chi-squared statistic exact.

#![allow(clippy::unwrap_used)]

use driftwatch_detectors::sketch::{
    CategoricalSketch, NumericSketch, categorical_drift, numeric_drift,
};
use serde_json::Value;

mod common;
use common::SplitMix;

fn draw(dist: &str, p: &[f64], seed: u64, n: usize) -> Vec<f64> {
    let mut g = SplitMix(seed);
    (0..n)
        .map(|_| match dist {
            "normal" => g.normal(p[0], p[1]),
            "lognormal" => g.normal(p[0], p[1]).exp(),
            "uniform" => p[0] + (p[1] - p[0]) * g.uniform(),
            "bimodal" => {
                if g.uniform() < p[4] {
                    g.normal(p[0], p[1])
                } else {
                    g.normal(p[2], p[3])
                }
            }
            "poisson" => {
                let (limit, mut k, mut prod) = ((-p[0]).exp(), 0u32, 1.0);
                loop {
                    prod *= g.uniform();
                    if prod <= limit {
                        break f64::from(k);
                    }
                    k += 1;
                }
            }
            "pareto" => p[0] * g.uniform().powf(-1.0 / p[1]),
            "exponential" => -p[0] * g.uniform().ln(),
            other => panic!("unknown distribution {other}"),
        })
        .collect()
}

/// Values recorded to `decimals` places (the fixture script's `rounded`).
fn rounded(values: Vec<f64>, decimals: Option<i32>) -> Vec<f64> {
    let Some(d) = decimals else { return values };
    let scale = 10f64.powi(d);
    values
        .into_iter()
        .map(|x| (x * scale + 0.5).floor() / scale)
        .collect()
}

fn draw_categories(weights: &[f64], seed: u64, n: usize) -> Vec<usize> {
    let mut g = SplitMix(seed);
    let total: f64 = weights.iter().sum();
    (0..n)
        .map(|_| {
            let mut u = g.uniform() * total;
            let mut k = 0;
            while k < weights.len() - 1 && u >= weights[k] {
                u -= weights[k];
                k += 1;
            }
            k
        })
        .collect()
}

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/drift_oracle.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn side(case: &Value, which: &str) -> (Vec<f64>, u64, usize) {
    let s = &case[which];
    let params = floats(s.get("params").or_else(|| s.get("weights")).unwrap());
    (
        params,
        s["seed"].as_u64().unwrap(),
        s["n"].as_u64().unwrap() as usize,
    )
}

#[test]
fn numeric_statistics_match_scipy() {
    let fixtures = fixtures();
    let bins = fixtures["bins"].as_u64().unwrap() as usize;
    let mut failures = Vec::new();
    for case in fixtures["numeric"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let dist = case["dist"].as_str().unwrap();
        let (rp, rs, rn) = side(case, "reference");
        let (cp, cs, cn) = side(case, "current");
        let decimals = case["decimals"].as_i64().map(|d| d as i32);
        let reference = rounded(draw(dist, &rp, rs, rn), decimals);
        let current = rounded(draw(dist, &cp, cs, cn), decimals);
        // (serde_json reads floats to within an ulp, so not bit-exact here)
        for (have, want) in reference
            .iter()
            .zip(floats(&case["first_reference_values"]))
        {
            assert!(
                (have - want).abs() <= 1e-12 * want.abs().max(1.0),
                "{name}: generator differs: {have} vs {want}"
            );
        }

        let (mut r, mut c) = (NumericSketch::default(), NumericSketch::default());
        reference.iter().for_each(|x| r.add(*x));
        current.iter().for_each(|x| c.add(*x));
        let e = &case["expected"];
        let num = |k: &str| e[k].as_f64().unwrap();
        // exact moments
        assert!(
            (r.mean().unwrap() - num("reference_mean")).abs()
                <= 1e-9 * num("reference_mean").abs().max(1.0),
            "{name}: mean"
        );
        assert!(
            (r.std_dev().unwrap() - num("reference_sd")).abs()
                <= 1e-9 * num("reference_sd").max(1.0),
            "{name}: sd"
        );

        let drift = numeric_drift(&r.view(), r.std_dev().unwrap(), &c.view(), bins).unwrap();
        let w_want = num("wasserstein_norm");
        let w_have = drift.wasserstein_norm.unwrap();
        let checks = [
            (
                "ks",
                drift.ks,
                num("ks"),
                (drift.ks - num("ks")).abs() <= 0.01,
            ),
            (
                "wasserstein_norm",
                w_have,
                w_want,
                (w_have - w_want).abs() <= (0.02 * w_want).max(0.005),
            ),
            (
                "psi",
                drift.psi,
                num("psi"),
                (drift.psi - num("psi")).abs() <= 0.01,
            ),
            (
                "js",
                drift.js,
                num("js"),
                (drift.js - num("js")).abs() <= 0.01,
            ),
        ];
        for (stat, have, want, ok) in checks {
            println!("{name:<30} {stat:<17} sketch {have:.5}  scipy {want:.5}");
            if !ok {
                failures.push(format!(
                    "{name}: {stat} = {have} from sketches, {want} from scipy"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "outside tolerance:\n{}",
        failures.join("\n")
    );
}

#[test]
fn categorical_statistics_match_scipy() {
    let fixtures = fixtures();
    for case in fixtures["categorical"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (rw, rs, rn) = side(case, "reference");
        let (cw, cs, cn) = side(case, "current");
        let (mut r, mut c) = (CategoricalSketch::default(), CategoricalSketch::default());
        for k in draw_categories(&rw, rs, rn) {
            r.add(&format!("cat{k}"));
        }
        for k in draw_categories(&cw, cs, cn) {
            c.add(&format!("cat{k}"));
        }
        let e = &case["expected"];
        for (i, want) in e["reference_counts"].as_array().unwrap().iter().enumerate() {
            let have = r.get(&format!("cat{i}")).map_or(0, |c| c.count);
            assert_eq!(
                have,
                want.as_u64().unwrap(),
                "{name}: reference count of cat{i}"
            );
        }
        let d = categorical_drift(&r, &c).unwrap();
        let num = |k: &str| e[k].as_f64().unwrap();
        assert!(
            (d.chi2 - num("chi2")).abs() <= 1e-9 * num("chi2").max(1.0),
            "{name}: chi2 {} vs {}",
            d.chi2,
            num("chi2")
        );
        assert_eq!(d.dof, e["dof"].as_u64().unwrap(), "{name}: dof");
        let p = num("p_value");
        assert!(
            (d.p_value - p).abs() <= 1e-9_f64.max(1e-6 * p),
            "{name}: p {} vs {p}",
            d.p_value
        );
        assert!(
            (d.psi - num("psi")).abs() <= 1e-9,
            "{name}: psi {} vs {}",
            d.psi,
            num("psi")
        );
        assert!(
            (d.js - num("js")).abs() <= 1e-9,
            "{name}: js {} vs {}",
            d.js,
            num("js")
        );
        assert!(
            (d.unseen_share - num("unseen_share")).abs() <= 1e-12,
            "{name}: unseen"
        );
        assert_eq!(
            d.vanished,
            e["vanished"].as_u64().unwrap(),
            "{name}: vanished"
        );
    }
}
