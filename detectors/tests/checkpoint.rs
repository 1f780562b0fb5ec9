//! Checkpoints of the window state: a window set snapshotted at any point,
//! restored into a freshly built one and fed the rest of the stream gives
//! bit-identical window results to a run that was never interrupted — the
//! property that lets the service restart from a checkpoint without an event
//! counted twice or lost.

#![allow(clippy::unwrap_used)]

use driftwatch_detectors::{
    ClosedWindow, Error, WindowSet, WindowSpec, default_components, summary_components,
};
use driftwatch_ingest::PredictionEvent;
use driftwatch_ingest::synth::{Synth, SynthConfig};

const MINUTE: i64 = 60_000;

fn stream(n: usize, seed: u64) -> Vec<PredictionEvent> {
    // drift half-way, a few late events: every code path of the detectors
    Synth::new(SynthConfig {
        late_fraction: 0.01,
        late_by_ms: 40 * MINUTE,
        ..SynthConfig::for_events(n as u64, seed)
    })
    .predictions()
    .take(n)
    .collect()
}

/// Every table of every closed window, as text: `Debug` prints floats in
/// their shortest exact form, so equal text means equal bits.
fn render(closed: &[ClosedWindow]) -> Vec<String> {
    closed
        .iter()
        .flat_map(|w| {
            w.tables
                .iter()
                .map(move |(name, batch)| format!("{:?} {} {name}: {batch:?}", w.key, w.events))
        })
        .collect()
}

fn feed(set: &mut WindowSet, events: &[PredictionEvent], out: &mut Vec<ClosedWindow>) {
    for e in events {
        let _ = set.push(e);
        out.extend(set.close_ready().unwrap());
    }
}

/// Runs `events` through a window set built by `build`, snapshotting and
/// restoring into a new set at each of `cuts`.
fn run(build: &dyn Fn() -> WindowSet, events: &[PredictionEvent], cuts: &[usize]) -> Vec<String> {
    let mut set = build();
    let mut out = Vec::new();
    let mut from = 0;
    for &cut in cuts {
        feed(&mut set, &events[from..cut], &mut out);
        let bytes = set.snapshot().unwrap();
        set = build();
        set.restore(&bytes).unwrap();
        from = cut;
    }
    feed(&mut set, &events[from..], &mut out);
    out.extend(set.close_all().unwrap());
    let stats = set.stats();
    assert_eq!(stats.accepted + stats.late, events.len() as u64);
    render(&out)
}

#[test]
fn restored_tumbling_windows_with_every_detector_match_an_uninterrupted_run() {
    let events = stream(40_000, 7);
    let build = || {
        WindowSet::new(
            WindowSpec::tumbling(30 * MINUTE).unwrap(),
            10 * MINUTE,
            default_components(),
        )
    };
    let whole = run(&build, &events, &[]);
    assert!(whole.len() > 100, "{} rows", whole.len());
    // the first cut falls in the first window, before any reference exists;
    // the others mid-window, after references were learned
    for cuts in [vec![1_000], vec![5_003, 17_777, 31_250], vec![39_999]] {
        assert!(run(&build, &events, &cuts) == whole, "cuts at {cuts:?}");
    }
}

#[test]
fn restored_hopping_windows_match_an_uninterrupted_run() {
    let events = stream(20_000, 11);
    let build = || {
        WindowSet::new(
            WindowSpec::hopping(60 * MINUTE, 15 * MINUTE).unwrap(),
            5 * MINUTE,
            default_components(),
        )
    };
    let whole = run(&build, &events, &[]);
    assert!(run(&build, &events, &[2_500, 12_345]) == whole);
}

#[test]
fn a_snapshot_is_refused_by_a_set_configured_otherwise() {
    let events = stream(2_000, 3);
    let mut set = WindowSet::new(
        WindowSpec::tumbling(30 * MINUTE).unwrap(),
        0,
        default_components(),
    );
    feed(&mut set, &events, &mut Vec::new());
    let bytes = set.snapshot().unwrap();

    let mut other_size = WindowSet::new(
        WindowSpec::tumbling(60 * MINUTE).unwrap(),
        0,
        default_components(),
    );
    let err = other_size.restore(&bytes).unwrap_err();
    assert!(matches!(err, Error::Checkpoint(_)), "{err}");
    assert!(err.to_string().contains("now configured"), "{err}");

    let mut other_components = WindowSet::new(
        WindowSpec::tumbling(30 * MINUTE).unwrap(),
        0,
        summary_components(),
    );
    let err = other_components.restore(&bytes).unwrap_err();
    assert!(err.to_string().contains("components"), "{err}");

    let mut fresh = WindowSet::new(
        WindowSpec::tumbling(30 * MINUTE).unwrap(),
        0,
        default_components(),
    );
    let err = fresh.restore(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(err.to_string().contains("unreadable"), "{err}");
}
