//! Windowing throughput: decoded predictions into tumbling and hopping
//! windows with the summaries (and, once, with every detector), closing
//! windows as the watermark passes them.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use driftwatch_detectors::{WindowSet, WindowSpec, default_components, summary_components};
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
    for (name, spec, all) in [
        ("tumbling_1h", WindowSpec::tumbling(3_600_000), false),
        (
            "hopping_1h_15m",
            WindowSpec::hopping(3_600_000, 900_000),
            false,
        ),
        (
            "tumbling_1h_all_detectors",
            WindowSpec::tumbling(3_600_000),
            true,
        ),
    ] {
        let spec = spec.expect("valid window");
        let components = if all {
            default_components()
        } else {
            summary_components()
        };
        group.bench_function(name, |b| {
            b.iter_batched(
                || WindowSet::new(spec, 300_000, components.clone()),
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
