//! The label join: every label in the right bucket, revisions as labels
//! arrive, and a checkpoint that continues exactly.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, UInt64Type};
use driftwatch_detectors::performance::{
    LabelCounts, PerformanceConfig, PerformanceOutput, PerformanceTracker, StoreConfig,
    change_points_batch, label_stats_batch,
};
use driftwatch_detectors::{WindowSet, WindowSpec, summary_components};
use driftwatch_ingest::synth::{Synth, SynthConfig};
use driftwatch_ingest::{Event, Label, LabelEvent, Prediction, PredictionEvent};

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_793_491_200_000;

fn tracker() -> PerformanceTracker {
    let config = PerformanceConfig {
        label_horizon_ms: 24 * HOUR,
        revision_interval_ms: HOUR,
        ..PerformanceConfig::default()
    };
    PerformanceTracker::new(config, WindowSpec::tumbling(HOUR).unwrap(), 0).unwrap()
}

fn prediction(id: &str, t: i64, score: f64) -> PredictionEvent {
    PredictionEvent {
        event_id: id.into(),
        model_id: Arc::from("churn"),
        model_version: None,
        timestamp: t,
        features: Vec::new(),
        prediction: Prediction {
            score: Some(score),
            ..Prediction::default()
        },
        segments: Vec::new(),
        label: None,
    }
}

fn label(id: &str, t: i64, class: &str) -> LabelEvent {
    LabelEvent {
        event_id: id.into(),
        model_id: Arc::from("churn"),
        timestamp: t,
        label: Label::Class(class.into()),
    }
}

/// Moves the clock to `t` with a prediction of an unrelated id.
fn tick(t: &mut PerformanceTracker, at: i64) {
    t.prediction(&prediction(&format!("tick-{at}"), at, 0.1))
        .unwrap();
    t.advance().unwrap();
}

fn value(batch: &RecordBatch, metric: &str) -> Option<f64> {
    let metrics = batch.column_by_name("metric").unwrap().as_string::<i32>();
    let classes = batch.column_by_name("class").unwrap();
    let values = batch
        .column_by_name("value")
        .unwrap()
        .as_primitive::<Float64Type>();
    (0..batch.num_rows())
        .find(|&i| metrics.value(i) == metric && classes.is_null(i))
        .and_then(|i| (!values.is_null(i)).then(|| values.value(i)))
}

fn u64_col(batch: &RecordBatch, name: &str) -> u64 {
    batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<UInt64Type>()
        .value(0)
}

fn totals(out: &PerformanceOutput) -> LabelCounts {
    let mut c = LabelCounts::default();
    for (_, _, _, l, _) in &out.label_stats {
        c.add(l);
    }
    c
}

#[test]
fn labels_join_in_either_order() {
    let mut t = tracker();
    t.prediction(&prediction("a", T0 + 10, 0.9)).unwrap();
    t.label(&label("a", T0 + 20, "1")).unwrap();
    t.label(&label("b", T0 + 30, "0")).unwrap();
    t.prediction(&prediction("b", T0 + 40, 0.8)).unwrap();
    t.finish_all().unwrap();
    let s = t.stats().labels.clone();
    assert_eq!(
        (s.received, s.joined, s.joined_before_prediction),
        (2, 2, 1)
    );
    let out = t.drain();
    let r = &out.revisions[0];
    assert_eq!((r.predictions, r.labeled), (2, 2));
    assert_eq!(value(&r.batch, "accuracy"), Some(0.5));
    assert_eq!(totals(&out), s);
}

#[test]
fn duplicate_labels_are_counted_not_scored() {
    let mut t = tracker();
    t.prediction(&prediction("a", T0, 0.9)).unwrap();
    t.label(&label("a", T0 + 1, "1")).unwrap();
    t.label(&label("a", T0 + 2, "0")).unwrap();
    // two labels before their prediction: the second is the duplicate
    t.label(&label("b", T0 + 3, "1")).unwrap();
    t.label(&label("b", T0 + 4, "1")).unwrap();
    t.prediction(&prediction("b", T0 + 5, 0.2)).unwrap();
    t.finish_all().unwrap();
    let s = &t.stats().labels;
    assert_eq!((s.joined, s.duplicate), (2, 2));
    let out = t.drain();
    let r = &out.revisions[0];
    assert_eq!(r.labeled, 2);
    assert_eq!(u64_col(&r.batch, "duplicate_labels"), 1);
    assert_eq!(value(&r.batch, "accuracy"), Some(0.5));
}

#[test]
fn a_label_without_prediction_waits_a_horizon() {
    let mut t = tracker();
    t.label(&label("ghost", T0, "1")).unwrap();
    tick(&mut t, T0 + 23 * HOUR);
    assert_eq!(t.stats().labels.without_prediction, 0);
    tick(&mut t, T0 + 25 * HOUR);
    assert_eq!(t.stats().labels.without_prediction, 1);
    // the label window of that resolution ends
    tick(&mut t, T0 + 27 * HOUR);
    let out = t.drain();
    let waiting: Vec<u64> = out.label_stats.iter().map(|r| r.4).collect();
    assert_eq!(
        waiting,
        [1, 0],
        "waiting while the first window ends, not after"
    );
    assert_eq!(totals(&out).without_prediction, 1);
}

#[test]
fn a_label_after_the_horizon_is_counted_as_such() {
    let mut t = tracker();
    t.prediction(&prediction("a", T0, 0.9)).unwrap();
    t.prediction(&prediction("b", T0, 0.9)).unwrap();
    t.label(&label("b", T0 + 1, "1")).unwrap();
    tick(&mut t, T0 + 2 * HOUR);
    t.windows_closed(std::iter::empty()).unwrap();
    tick(&mut t, T0 + 26 * HOUR);
    t.label(&label("a", T0 + 26 * HOUR, "1")).unwrap();
    t.label(&label("b", T0 + 26 * HOUR, "1")).unwrap();
    t.label(&label("never-seen", T0 + 26 * HOUR, "1")).unwrap();
    let s = t.stats();
    assert_eq!(s.labels.after_horizon, 1);
    assert_eq!(
        s.labels.duplicate, 1,
        "b was labelled before its window expired"
    );
    assert_eq!(s.expired_unlabeled, 1);
    let out = t.drain();
    let last = out
        .revisions
        .iter()
        .find(|r| r.is_final && r.key.start == T0)
        .unwrap();
    assert_eq!(u64_col(&last.batch, "expired_unlabeled"), 1);
    assert_eq!(t.stats().labels.without_prediction, 0);
}

#[test]
fn labels_of_the_wrong_kind_are_unscorable() {
    let mut t = tracker();
    let mut p = prediction("a", T0, 0.0);
    p.prediction = Prediction {
        value: Some(3.0),
        ..Prediction::default()
    };
    t.prediction(&p).unwrap();
    t.label(&label("a", T0 + 1, "1")).unwrap();
    t.finish_all().unwrap();
    assert_eq!(t.stats().labels.unscorable, 1);
    let out = t.drain();
    assert_eq!(u64_col(&out.revisions[0].batch, "unscorable_labels"), 1);
    assert_eq!(out.revisions[0].labeled, 0);
}

#[test]
fn metrics_are_revised_as_labels_arrive() {
    let mut t = tracker();
    let spec = WindowSpec::tumbling(HOUR).unwrap();
    for i in 0..10 {
        t.prediction(&prediction(&format!("p{i}"), T0 + i * 1000, 0.9))
            .unwrap();
    }
    // labels for half before the window closes
    for i in 0..5 {
        t.label(&label(&format!("p{i}"), T0 + HOUR / 2, "1"))
            .unwrap();
    }
    tick(&mut t, T0 + HOUR);
    let key = driftwatch_detectors::WindowKey {
        model_id: Arc::from("churn"),
        model_version: None,
        start: T0,
        end: T0 + spec.size(),
    };
    assert!(
        t.drain().revisions.is_empty(),
        "nothing before the window closes"
    );
    t.windows_closed([&key]).unwrap();
    let out = t.drain();
    assert_eq!(out.revisions.len(), 1);
    let r0 = &out.revisions[0];
    assert_eq!((r0.revision, r0.is_final, r0.labeled), (0, false, 5));
    assert_eq!(value(&r0.batch, "labeled"), Some(5.0));
    // the rest arrive wrong: accuracy falls once they are in
    for i in 5..10 {
        t.label(&label(&format!("p{i}"), T0 + HOUR + 10, "0"))
            .unwrap();
    }
    t.advance().unwrap();
    assert!(
        t.drain().revisions.is_empty(),
        "a revision waits for the interval"
    );
    tick(&mut t, T0 + 2 * HOUR + 10);
    let out = t.drain();
    let r1 = out.revisions.iter().find(|r| r.key == key).unwrap();
    assert_eq!((r1.revision, r1.labeled), (1, 10));
    assert_eq!(value(&r1.batch, "accuracy"), Some(0.5));
    let coverage = r1
        .batch
        .column_by_name("label_coverage")
        .unwrap()
        .as_primitive::<Float64Type>()
        .value(0);
    assert_eq!(coverage, 1.0);
    tick(&mut t, T0 + 26 * HOUR);
    let out = t.drain();
    let last = out.revisions.iter().find(|r| r.key == key).unwrap();
    assert!(last.is_final);
    assert_eq!(last.revision, 2);
}

/// The synthetic stream with its real label delays: buckets add up, and a
/// checkpoint taken anywhere continues to the same output.
fn run_synth(cut: Option<usize>, spill: Option<&std::path::Path>) -> (Vec<String>, LabelCounts) {
    let config = SynthConfig {
        label_fraction: 0.8,
        ..SynthConfig::for_events(60_000, 5)
    };
    let make = || {
        PerformanceTracker::new(
            PerformanceConfig {
                label_horizon_ms: 3 * 24 * HOUR,
                store: StoreConfig {
                    // a few thousand entries in memory, the rest on disk
                    memory_budget: if spill.is_some() {
                        256 << 10
                    } else {
                        256 << 20
                    },
                    spill_dir: spill.map(|d| d.join("pending")),
                },
                ..PerformanceConfig::default()
            },
            WindowSpec::tumbling(HOUR).unwrap(),
            60_000,
        )
        .unwrap()
    };
    let mut t = make();
    let mut rendered = Vec::new();
    let mut render = |out: PerformanceOutput| {
        for r in out.revisions {
            let mut w = arrow::json::ArrayWriter::new(Vec::new());
            w.write(&r.batch).unwrap();
            w.finish().unwrap();
            rendered.push(String::from_utf8(w.into_inner()).unwrap());
        }
        for b in [
            change_points_batch(&out.change_points).unwrap(),
            label_stats_batch(&out.label_stats).unwrap(),
        ] {
            let mut w = arrow::json::ArrayWriter::new(Vec::new());
            w.write(&b).unwrap();
            w.finish().unwrap();
            rendered.push(String::from_utf8(w.into_inner()).unwrap());
        }
    };
    let spec = WindowSpec::tumbling(HOUR).unwrap();
    let mut windows = WindowSet::new(spec, 60_000, summary_components());
    for (i, event) in Synth::new(config).take(60_000).enumerate() {
        if Some(i) == cut {
            let bytes = t.snapshot().unwrap();
            // the process ends: the store's file is closed
            drop(t);
            t = make();
            t.restore(&bytes).unwrap();
        }
        match event {
            Event::Prediction(p) => {
                if windows.push(&p).is_ok() {
                    t.prediction(&p).unwrap();
                }
                let closed = windows.close_ready().unwrap();
                t.windows_closed(closed.iter().map(|w| &w.key)).unwrap();
            }
            Event::Label(l) => t.label(&l).unwrap(),
        }
        t.advance().unwrap();
        render(t.drain());
    }
    if spill.is_some() {
        assert!(t.store().spilled() > 10_000, "{:?}", t.store());
    }
    t.finish_all().unwrap();
    let counts = t.stats().labels.clone();
    render(t.drain());
    (rendered, counts)
}

#[test]
fn every_label_lands_in_one_bucket() {
    let (_, c) = run_synth(None, None);
    assert!(c.received > 20_000, "{c:?}");
    assert_eq!(
        c.received,
        c.joined + c.duplicate + c.without_prediction + c.after_horizon + c.unscorable,
        "{c:?}"
    );
    assert!(c.joined > c.received * 9 / 10, "{c:?}");
}

#[test]
fn a_restored_checkpoint_continues_exactly() {
    let (whole, _) = run_synth(None, None);
    for cut in [7_000, 33_333] {
        let (resumed, _) = run_synth(Some(cut), None);
        assert_eq!(resumed.len(), whole.len(), "cut at {cut}");
        assert!(resumed == whole, "output differs after a restore at {cut}");
    }
}

#[test]
fn spilling_to_disk_changes_nothing_but_memory() {
    let (whole, _) = run_synth(None, None);
    let dir = tempfile::tempdir().unwrap();
    let (spilled, _) = run_synth(None, Some(dir.path()));
    assert!(
        spilled == whole,
        "output differs when entries spill to disk"
    );
    // and a checkpoint of a store with entries on disk continues exactly
    let dir = tempfile::tempdir().unwrap();
    let (resumed, _) = run_synth(Some(40_000), Some(dir.path()));
    assert!(
        resumed == whole,
        "output differs after a restore with entries on disk"
    );
}
