//! Label join throughput: labels joined to pending predictions and scored
//! into their window's metrics, with every prediction in memory, and with
//! most of them spilled to the on-disk store.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use driftwatch_detectors::WindowSpec;
use driftwatch_detectors::performance::{PerformanceConfig, PerformanceTracker, StoreConfig};
use driftwatch_ingest::{Label, LabelEvent, Prediction, PredictionEvent};

const N: usize = 100_000;
const T0: i64 = 1_793_491_200_000;

fn events() -> (Vec<PredictionEvent>, Vec<LabelEvent>) {
    let model: Arc<str> = Arc::from("churn");
    let mut predictions = Vec::with_capacity(N);
    let mut labels = Vec::with_capacity(N);
    for i in 0..N {
        let id = format!("{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let score = ((i * 7919) % 10_000) as f64 / 10_000.0;
        predictions.push(PredictionEvent {
            event_id: id.clone(),
            model_id: Arc::clone(&model),
            model_version: Some(Arc::from("v1")),
            timestamp: T0 + i as i64 * 100,
            features: Vec::new(),
            prediction: Prediction {
                score: Some(score),
                ..Prediction::default()
            },
            segments: Vec::new(),
            label: None,
        });
        labels.push(LabelEvent {
            event_id: id,
            model_id: Arc::clone(&model),
            timestamp: T0 + N as i64 * 100 + i as i64,
            label: Label::Class(if (i * 31) % 7 < 3 { "1" } else { "0" }.into()),
        });
    }
    // labels in another order than their predictions
    labels.reverse();
    (predictions, labels)
}

fn tracker(store: StoreConfig) -> PerformanceTracker {
    let config = PerformanceConfig {
        store,
        ..PerformanceConfig::default()
    };
    PerformanceTracker::new(
        config,
        WindowSpec::tumbling(3_600_000).expect("valid"),
        60_000,
    )
    .expect("tracker")
}

fn label_join(c: &mut Criterion) {
    let (predictions, labels) = events();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("label_join");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(10);
    for (name, store) in [
        ("in_memory", StoreConfig::default()),
        (
            // a budget of a few thousand entries: nearly every label is read from disk
            "spilled",
            StoreConfig {
                memory_budget: 256 << 10,
                spill_dir: Some(dir.path().join("pending")),
            },
        ),
    ] {
        let mut run = 0;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    // a directory of its own per run: the last run's store may still be open
                    run += 1;
                    let mut store = store.clone();
                    store.spill_dir = store
                        .spill_dir
                        .map(|p| p.with_file_name(format!("pending-{run}")));
                    let mut t = tracker(store);
                    for p in &predictions {
                        t.prediction(p).expect("prediction");
                    }
                    t
                },
                |mut t| {
                    for l in &labels {
                        t.label(l).expect("label");
                    }
                    t.advance().expect("advance");
                    t
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, label_join);
criterion_main!(benches);
