//! Windowing throughput: decoded predictions into tumbling and hopping
//! windows with the default components, closing windows as the watermark
//! passes them.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use driftwatch_detectors::{WindowSet, WindowSpec, default_components};
use driftwatch_ingest::PredictionEvent;
use driftwatch_ingest::synth::{Synth, SynthConfig};

fn predictions(n: usize) -> Vec<PredictionEvent> {
    Synth::new(SynthConfig {
        late_fraction: 0.0,
        ..SynthConfig::default()
    })
    .predictions()
    .take(n)
    .collect()
}

fn windows(c: &mut Criterion) {
    let events = predictions(50_000);
    let mut group = c.benchmark_group("windows");
    group.throughput(Throughput::Elements(events.len() as u64));
    for (name, spec) in [
        ("tumbling_1h", WindowSpec::tumbling(3_600_000)),
        ("hopping_1h_15m", WindowSpec::hopping(3_600_000, 900_000)),
    ] {
        let spec = spec.expect("valid window");
        group.bench_function(name, |b| {
            b.iter_batched(
                || WindowSet::new(spec, 300_000, default_components()),
                |mut set| {
                    let mut closed = 0;
                    for e in &events {
                        if set.push(e).is_ok() {
                            closed += set.close_ready().expect("rows").len();
                        }
                    }
                    closed + set.close_all().expect("rows").len()
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, windows);
criterion_main!(benches);
