//! Decode throughput: generated events (predictions and labels, as on the
//! wire) through `Decoder::decode_json`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use driftwatch_ingest::synth::{Synth, SynthConfig};
use driftwatch_ingest::{Decoder, DecoderConfig, encode_json};

fn lines(n: usize) -> Vec<Vec<u8>> {
    Synth::new(SynthConfig::default())
        .take(n)
        .map(|e| {
            let mut buf = Vec::new();
            encode_json(&e, &mut buf);
            buf
        })
        .collect()
}

fn decode(c: &mut Criterion) {
    let lines = lines(20_000);
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("json_events", |b| {
        let mut decoder = Decoder::new(DecoderConfig::default());
        b.iter(|| {
            let mut ok = 0;
            for line in &lines {
                ok += usize::from(decoder.decode_json(line).is_ok());
            }
            assert_eq!(ok, lines.len());
        })
    });
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("json_bytes", |b| {
        let mut decoder = Decoder::new(DecoderConfig::default());
        b.iter(|| {
            lines
                .iter()
                .filter(|l| decoder.decode_json(l).is_ok())
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
