//! Window set behaviour: assignment, lateness, closing, and summaries checked
//! against a direct computation over the same events.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, UInt64Type};
use driftwatch_detectors::{
    Component, FeatureSummary, WindowSet, WindowSpec, WindowSummary, default_components,
};
use driftwatch_ingest::synth::{Synth, SynthConfig};
use driftwatch_ingest::{FeatureValue, PredictionEvent, Reject};
use proptest::prelude::*;

const HOUR: i64 = 3_600_000;

fn predictions(n: usize, seed: u64) -> Vec<PredictionEvent> {
    Synth::new(SynthConfig {
        seed,
        ..SynthConfig::default()
    })
    .predictions()
    .take(n)
    .collect()
}

fn u64_col(batch: &RecordBatch, name: &str) -> Vec<u64> {
    let col = batch.column_by_name(name).expect(name);
    col.as_primitive::<UInt64Type>().values().to_vec()
}

fn f64_col(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let col = batch
        .column_by_name(name)
        .expect(name)
        .as_primitive::<Float64Type>();
    (0..col.len())
        .map(|i| (!col.is_null(i)).then(|| col.value(i)))
        .collect()
}

#[test]
fn late_events_are_refused_and_counted() {
    let mut windows = WindowSet::new(
        WindowSpec::tumbling(HOUR).unwrap(),
        60_000,
        default_components(),
    );
    let mut events = predictions(3, 1);
    let base = 1_793_491_200_000; // an hour boundary
    events[0].timestamp = base + 10;
    events[1].timestamp = base + HOUR + 2 * 60_000; // watermark passes the first window's end
    events[2].timestamp = base + 20; // belongs to the closed window
    windows.push(&events[0]).unwrap();
    windows.push(&events[1]).unwrap();
    let closed = windows.close_ready().unwrap();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].key.start, base);
    assert_eq!(closed[0].events, 1);
    match windows.push(&events[2]) {
        Err(Reject::Late {
            event_time,
            watermark,
            window_end,
        }) => {
            assert_eq!(event_time, base + 20);
            assert_eq!(watermark, base + HOUR + 60_000);
            assert_eq!(window_end, base + HOUR);
        }
        other => panic!("expected a late refusal, got {other:?}"),
    }
    assert_eq!(windows.stats().late, 1);
    assert_eq!(windows.stats().accepted, 2);
}

#[test]
fn an_event_within_lateness_still_counts() {
    let mut windows = WindowSet::new(
        WindowSpec::tumbling(HOUR).unwrap(),
        10 * 60_000,
        default_components(),
    );
    let mut events = predictions(2, 2);
    let base = 1_793_491_200_000;
    events[0].timestamp = base + HOUR + 5 * 60_000;
    events[1].timestamp = base + HOUR - 1; // 5 min 1 ms behind, lateness 10 min
    windows.push(&events[0]).unwrap();
    windows.push(&events[1]).unwrap();
    let closed = windows.close_all().unwrap();
    assert_eq!(
        closed.iter().map(|w| w.events).collect::<Vec<_>>(),
        vec![1, 1]
    );
}

#[test]
fn hopping_windows_count_each_event_in_every_window_it_belongs_to() {
    let events = predictions(20_000, 3);
    let mut windows = WindowSet::new(
        WindowSpec::hopping(HOUR, HOUR / 4).unwrap(),
        0,
        default_components(),
    );
    let mut late = 0;
    for e in &events {
        if windows.push(e).is_err() {
            late += 1;
        }
    }
    let mut closed = windows.close_ready().unwrap();
    closed.extend(windows.close_all().unwrap());
    // with no lateness, jitter makes some events late; everything else is counted 4 times,
    // except events whose earliest windows had already closed
    let total: u64 = closed.iter().map(|w| w.events).sum();
    let accepted = (events.len() - late) as u64;
    assert!(
        total <= 4 * accepted && total > 4 * accepted - 4 * late as u64 - 200,
        "{total} vs {accepted}"
    );
    // windows close in order of their end
    let ends: Vec<i64> = closed.iter().map(|w| w.key.end).collect();
    let mut sorted = ends.clone();
    sorted.sort();
    assert_eq!(ends, sorted);
}

/// feature_summary rows equal a direct computation per (model, version, window).
#[test]
fn feature_summary_matches_direct_computation() {
    let events = predictions(30_000, 4);
    let spec = WindowSpec::tumbling(2 * HOUR).unwrap();
    let mut windows = WindowSet::new(spec, 3 * HOUR, default_components());
    type Key = (String, i64, String);
    type Acc = (u64, u64, u64, u64, f64, f64, f64);
    let mut expected: BTreeMap<Key, Acc> = BTreeMap::new();
    let mut per_window: HashMap<(String, i64), u64> = HashMap::new();
    for e in &events {
        windows.push(e).expect("no event is 3 h late");
        let start = e.timestamp.div_euclid(2 * HOUR) * 2 * HOUR;
        *per_window
            .entry((e.model_id.to_string(), start))
            .or_default() += 1;
        for f in &e.features {
            let acc = expected
                .entry((e.model_id.to_string(), start, f.name.to_string()))
                .or_insert((0, 0, 0, 0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
            match &f.value {
                FeatureValue::Numeric(x) => {
                    acc.0 += 1;
                    acc.2 += 1;
                    acc.4 += x;
                    acc.5 = acc.5.min(*x);
                    acc.6 = acc.6.max(*x);
                }
                FeatureValue::Categorical(_) => {
                    acc.0 += 1;
                    acc.3 += 1;
                }
                FeatureValue::Missing => {}
            }
        }
    }
    for ((model, start, _), acc) in expected.iter_mut() {
        acc.1 = per_window[&(model.clone(), *start)] - acc.0;
    }
    let mut got = BTreeMap::new();
    for w in windows.close_all().unwrap() {
        let (name, batch) = &w.tables[1];
        assert_eq!(name, "feature_summary");
        let features = batch.column_by_name("feature").unwrap().as_string::<i32>();
        let (count, missing, numeric, categorical) = (
            u64_col(batch, "count"),
            u64_col(batch, "missing"),
            u64_col(batch, "numeric"),
            u64_col(batch, "categorical"),
        );
        let (mean, min, max) = (
            f64_col(batch, "mean"),
            f64_col(batch, "min"),
            f64_col(batch, "max"),
        );
        for i in 0..batch.num_rows() {
            got.insert(
                (
                    w.key.model_id.to_string(),
                    w.key.start,
                    features.value(i).to_owned(),
                ),
                (
                    count[i],
                    missing[i],
                    numeric[i],
                    categorical[i],
                    mean[i],
                    min[i],
                    max[i],
                ),
            );
        }
    }
    assert_eq!(got.len(), expected.len());
    for (key, want) in &expected {
        let have = got[key];
        assert_eq!(
            (have.0, have.1, have.2, have.3),
            (want.0, want.1, want.2, want.3),
            "{key:?}"
        );
        if want.2 > 0 {
            let mean = want.4 / want.2 as f64;
            assert!(
                (have.4.unwrap() - mean).abs() <= 1e-9 * mean.abs().max(1.0),
                "{key:?}"
            );
            assert_eq!((have.5, have.6), (Some(want.5), Some(want.6)), "{key:?}");
        } else {
            assert_eq!((have.4, have.5, have.6), (None, None, None), "{key:?}");
        }
    }
}

fn finish_rows<C: Component>(c: &C, state: C::State) -> RecordBatch {
    let key = driftwatch_detectors::WindowKey {
        model_id: Arc::from("m"),
        model_version: None,
        start: 0,
        end: 1,
    };
    c.finish(&key, state).expect("rows").remove(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Merging states of two halves gives the rows of one state over all events.
    #[test]
    fn summaries_merge_like_one_pass(seed in any::<u64>(), split in 0usize..300) {
        let events = predictions(300, seed);
        let (a, b) = events.split_at(split);
        let fs = FeatureSummary;
        let (mut whole, mut left, mut right) = (fs.new_state(), fs.new_state(), fs.new_state());
        events.iter().for_each(|e| fs.update(&mut whole, e));
        a.iter().for_each(|e| fs.update(&mut left, e));
        b.iter().for_each(|e| fs.update(&mut right, e));
        fs.merge(&mut right, left);
        let (one, merged) = (finish_rows(&fs, whole), finish_rows(&fs, right));
        prop_assert_eq!(one.num_rows(), merged.num_rows());
        for name in ["count", "missing", "numeric", "categorical"] {
            prop_assert_eq!(u64_col(&one, name), u64_col(&merged, name));
        }
        for name in ["mean", "min", "max"] {
            for (x, y) in f64_col(&one, name).into_iter().zip(f64_col(&merged, name)) {
                let close = match (x, y) {
                    (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                    (None, None) => true,
                    _ => false,
                };
                prop_assert!(close, "{} differs: {:?} vs {:?}", name, x, y);
            }
        }
        let ws = WindowSummary;
        let (mut whole, mut left, mut right) = (ws.new_state(), ws.new_state(), ws.new_state());
        events.iter().for_each(|e| ws.update(&mut whole, e));
        a.iter().for_each(|e| ws.update(&mut left, e));
        b.iter().for_each(|e| ws.update(&mut right, e));
        ws.merge(&mut left, right);
        let (one, merged) = (finish_rows(&ws, whole), finish_rows(&ws, left));
        prop_assert_eq!(u64_col(&one, "events"), u64_col(&merged, "events"));
        prop_assert_eq!(u64_col(&one, "score_count"), u64_col(&merged, "score_count"));
    }
}

#[test]
fn model_versions_get_their_own_windows() {
    let mut events = predictions(2, 5);
    events[1].model_id = Arc::clone(&events[0].model_id);
    events[1].timestamp = events[0].timestamp;
    events[1].model_version = Some(Arc::from("v-next"));
    let mut windows = WindowSet::new(WindowSpec::tumbling(HOUR).unwrap(), 0, default_components());
    windows.push(&events[0]).unwrap();
    windows.push(&events[1]).unwrap();
    assert_eq!(windows.close_all().unwrap().len(), 2);
}

/// A prediction of `model` (version `version`) at `t` with the features `names`.
fn event(model: &str, version: Option<&str>, t: i64, names: &[&str]) -> PredictionEvent {
    let mut e = predictions(1, 9).remove(0);
    e.model_id = Arc::from(model);
    e.model_version = version.map(Arc::from);
    e.timestamp = t;
    e.features = names
        .iter()
        .map(|n| driftwatch_ingest::Feature {
            name: Arc::from(*n),
            value: FeatureValue::Numeric(1.0),
        })
        .collect();
    e
}

#[test]
fn the_live_state_is_bounded_and_refusals_name_the_limit() {
    use driftwatch_detectors::Limits;
    let base = 1_793_491_200_000;
    let limits = Limits {
        max_models: 3,
        max_versions_per_model: 2,
        max_open_windows: 5,
        max_features: 4,
    };
    let mut windows = WindowSet::new(WindowSpec::tumbling(HOUR).unwrap(), 0, default_components())
        .with_limits(limits);
    let code = |r: Result<(), Reject>| r.map_or_else(|e| e.code(), |()| "ok");
    assert_eq!(code(windows.push(&event("a", None, base, &["x"]))), "ok");
    assert_eq!(code(windows.push(&event("b", None, base, &["x"]))), "ok");
    assert_eq!(
        code(windows.push(&event("c", Some("1"), base, &["x"]))),
        "ok"
    );
    let err = windows.push(&event("d", None, base, &["x"])).unwrap_err();
    assert_eq!(err.code(), "too_many_models");
    assert!(err.to_string().contains("limits.max_models = 3"), "{err}");
    assert_eq!(
        code(windows.push(&event("c", Some("2"), base, &["x"]))),
        "ok"
    );
    assert_eq!(
        code(windows.push(&event("c", Some("3"), base, &["x"]))),
        "too_many_versions"
    );
    // feature names: 4 per model version; the same names again are free
    assert_eq!(
        code(windows.push(&event("a", None, base + 1, &["x", "y", "z", "w"]))),
        "ok"
    );
    assert_eq!(
        code(windows.push(&event("a", None, base + 2, &["x", "y", "z", "w"]))),
        "ok"
    );
    assert_eq!(
        code(windows.push(&event("a", None, base + 3, &["v"]))),
        "too_many_features"
    );
    // five windows are open: a sixth is refused, an open one takes events
    assert_eq!(
        code(windows.push(&event("b", None, base + HOUR / 2, &["x"]))),
        "ok"
    );
    assert_eq!(windows.open_windows(), 4);
    assert_eq!(
        code(windows.push(&event("a", None, base + HOUR / 2 + 1, &["x"]))),
        "ok"
    );
    // b's second window is the fifth open one; c's would be the sixth
    assert_eq!(
        code(windows.push(&event("b", None, base + HOUR + 1, &["x"]))),
        "ok"
    );
    let err = windows
        .push(&event("c", Some("1"), base + HOUR + 1, &["x"]))
        .unwrap_err();
    assert_eq!(err.code(), "too_many_windows");
    assert!(
        err.to_string().contains("limits.max_open_windows = 5"),
        "{err}"
    );
    assert_eq!(windows.close_ready().unwrap().len(), 4);
    assert_eq!(windows.open_windows(), 1);
    // once their windows closed, models, versions and features are free again
    for (model, version) in [("d", None), ("c", Some("3"))] {
        assert_eq!(
            code(windows.push(&event(model, version, base + HOUR + 2, &["v"]))),
            "ok",
            "{model}"
        );
    }
    assert_eq!(windows.stats().accepted, 11);
}
