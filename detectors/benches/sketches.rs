//! Sketch update and merge throughput.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use driftwatch_detectors::sketch::{CategoricalSketch, NumericSketch};
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal};

fn sketches(c: &mut Criterion) {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
    let continuous: Vec<f64> = LogNormal::new(3.0, 1.0)
        .expect("valid")
        .sample_iter(&mut rng)
        .take(1_000_000)
        .collect();
    let counts: Vec<f64> = (0..1_000_000)
        .map(|_| f64::from(rng.random_range(0..20u32)))
        .collect();
    let categories: Vec<String> = (0..1_000_000)
        .map(|_| format!("c{}", rng.random_range(0..12u32)))
        .collect();

    let mut group = c.benchmark_group("sketch");
    group.throughput(Throughput::Elements(1_000_000));
    group.sample_size(20);
    group.bench_function("numeric_add_continuous", |b| {
        b.iter(|| {
            let mut s = NumericSketch::default();
            continuous.iter().for_each(|x| s.add(*x));
            s.count()
        })
    });
    group.bench_function("numeric_add_discrete", |b| {
        b.iter(|| {
            let mut s = NumericSketch::default();
            counts.iter().for_each(|x| s.add(*x));
            s.count()
        })
    });
    group.bench_function("categorical_add", |b| {
        b.iter(|| {
            let mut s = CategoricalSketch::default();
            categories.iter().for_each(|x| s.add(x));
            s.total()
        })
    });
    let ids: Vec<String> = (0..1_000_000)
        .map(|_| format!("u{}", rng.random_range(0..200_000u32)))
        .collect();
    group.bench_function("categorical_add_high_cardinality", |b| {
        b.iter(|| {
            let mut s = CategoricalSketch::default();
            ids.iter().for_each(|x| s.add(x));
            s.total()
        })
    });
    group.finish();

    let parts: Vec<NumericSketch> = continuous
        .chunks(10_000)
        .map(|chunk| {
            let mut s = NumericSketch::default();
            chunk.iter().for_each(|x| s.add(*x));
            s
        })
        .collect();
    let mut group = c.benchmark_group("sketch_merge");
    group.throughput(Throughput::Elements(parts.len() as u64));
    group.bench_function("numeric_merge_100", |b| {
        b.iter(|| {
            let mut all = NumericSketch::default();
            parts.iter().for_each(|p| all.merge(p));
            all.count()
        })
    });
    group.finish();
}

criterion_group!(benches, sketches);
criterion_main!(benches);
