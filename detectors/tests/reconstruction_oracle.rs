//! Multivariate drift against NannyML's DataReconstructionDriftCalculator
//! on the same data and chunks (`fixtures/make_reconstruction_fixtures.py`,
//! NannyML 0.13.1): the components kept, each chunk's mean reconstruction
//! error and its sampling error within 2 %, the band from the reference's
//! own chunks, and which chunks fall outside it.

mod common;

use common::SplitMix;
use driftwatch_detectors::multivariate::{
    DEFAULT_VARIANCE_SHARE, ErrorSums, Moments, Reconstruction, band,
};
use serde_json::Value;

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reconstruction_oracle.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

/// One row, drawn as the fixture script draws it.
fn row(rng: &mut SplitMix, kind: &str) -> [f64; 5] {
    let (f, g) = (rng.normal(0.0, 1.0), rng.normal(0.0, 1.0));
    let e: Vec<f64> = (0..5).map(|_| rng.normal(0.0, 1.0)).collect();
    let x1 = 10.0 + 2.0 * if kind == "x1_follows_g" { g } else { f } + 0.3 * e[0];
    let x2 = -3.0 + f + 0.5 * g + 0.3 * e[1];
    let x3 = 100.0
        + if kind == "x3_independent" {
            20.0 * rng.normal(0.0, 1.0)
        } else {
            20.0 * g
        }
        + 3.0 * e[2];
    let x4 = f - g + 0.4 * e[3];
    let x5 = e[4];
    let mut values = [x1, x2, x3, x4, x5];
    if kind == "shifted" {
        for (v, s) in values.iter_mut().zip([1.0, 0.5, 10.0, 0.5, 0.5]) {
            *v += s;
        }
    }
    values
}

fn close(have: f64, want: f64, what: &str) {
    assert!(
        (have - want).abs() <= 0.02 * want.abs(),
        "{what}: {have} vs NannyML {want}"
    );
}

#[test]
fn reconstruction_error_matches_nannyml() {
    let fx = fixtures();
    let mut rng = SplitMix(fx["seed"].as_u64().expect("seed"));
    let (n_reference, chunk) = (
        fx["reference"].as_u64().expect("n") as usize,
        fx["chunk"].as_u64().expect("chunk") as usize,
    );
    let reference: Vec<[f64; 5]> = (0..n_reference).map(|_| row(&mut rng, "same")).collect();
    let mut moments = Moments::new(5);
    for r in &reference {
        moments.add(r);
    }
    let fit = Reconstruction::fit(&moments, DEFAULT_VARIANCE_SHARE).expect("fitted");
    assert_eq!(
        fit.components() as u64,
        fx["components"].as_u64().expect("k")
    );
    for (have, want) in fit
        .explained()
        .iter()
        .zip(fx["explained"].as_array().expect("explained"))
    {
        close(*have, want.as_f64().expect("share"), "explained variance");
    }
    // the reference's own chunks set the band
    let reference_chunks: Vec<f64> = reference
        .chunks(chunk)
        .map(|rows| {
            let mut e = ErrorSums::default();
            for r in rows {
                e.add(fit.error(r));
            }
            e.mean().expect("rows")
        })
        .collect();
    for (have, want) in reference_chunks
        .iter()
        .zip(fx["reference_chunks"].as_array().expect("chunks"))
    {
        close(*have, want.as_f64().expect("value"), "reference chunk");
    }
    let (lower, upper) = band(&reference_chunks).expect("band");
    close(
        lower,
        fx["lower_threshold"].as_f64().expect("lower"),
        "lower threshold",
    );
    close(
        upper,
        fx["upper_threshold"].as_f64().expect("upper"),
        "upper threshold",
    );
    for c in fx["chunks"].as_array().expect("chunks") {
        let kind = c["kind"].as_str().expect("kind");
        let mut e = ErrorSums::default();
        for _ in 0..chunk {
            e.add(fit.error(&row(&mut rng, kind)));
        }
        let mean = e.mean().expect("rows");
        close(mean, c["value"].as_f64().expect("value"), kind);
        close(
            e.sampling_error().expect("error"),
            c["sampling_error"].as_f64().expect("error"),
            kind,
        );
        let outside = mean < lower || mean > upper;
        assert_eq!(
            outside,
            c["alert"].as_bool().expect("alert"),
            "{kind}: {mean} vs [{lower}, {upper}]"
        );
    }
}
