//! Memory and throughput of the label join with many predictions awaiting
//! their labels (the figures of `docs/BENCHMARKS.md`).
//!
//! ```text
//! cargo run --release -p driftwatch-detectors --example pending_labels -- \
//!     [--pending 5000000] [--budget-mib 256] [--dir /tmp/pending] [--no-spill]
//! ```
//!
//! Sends `--pending` binary-classifier predictions (16-character ids, 10 ms
//! apart in event time, so that no window reaches its label horizon), then a
//! label for each, in another order. Prints the peak resident memory of the
//! process after each phase (`VmHWM`), how many entries sit in memory and on
//! disk, and the rate of each phase.

use std::sync::Arc;
use std::time::Instant;

use driftwatch_detectors::WindowSpec;
use driftwatch_detectors::performance::{PerformanceConfig, PerformanceTracker, StoreConfig};
use driftwatch_ingest::{Label, LabelEvent, Prediction, PredictionEvent};

const T0: i64 = 1_793_491_200_000;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn id(i: u64) -> String {
    format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut pending: u64 = 5_000_000;
    let mut budget_mib: u64 = 256;
    let mut dir = std::env::temp_dir().join("driftwatch-pending-bench");
    let mut spill = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pending" => pending = args.next().ok_or("--pending N")?.parse()?,
            "--budget-mib" => budget_mib = args.next().ok_or("--budget-mib N")?.parse()?,
            "--dir" => dir = args.next().ok_or("--dir DIR")?.into(),
            "--no-spill" => spill = false,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("pending");
    let _ = std::fs::remove_dir_all(&path);
    let config = PerformanceConfig {
        label_horizon_ms: 30 * 24 * 3_600_000,
        store: StoreConfig {
            memory_budget: budget_mib << 20,
            spill_dir: spill.then(|| path.clone()),
        },
        ..PerformanceConfig::default()
    };
    let mut t = PerformanceTracker::new(config, WindowSpec::tumbling(3_600_000)?, 60_000)?;
    let model: Arc<str> = Arc::from("churn");
    let version: Option<Arc<str>> = Some(Arc::from("v1"));
    println!(
        "pending {pending}, budget {budget_mib} MiB, spill {}",
        if spill {
            path.display().to_string()
        } else {
            "off".into()
        }
    );
    println!("start: peak RSS {:.0} MiB", peak_rss_mib());

    let started = Instant::now();
    for i in 0..pending {
        let score = ((i * 7919) % 10_000) as f64 / 10_000.0;
        t.prediction(&PredictionEvent {
            event_id: id(i),
            model_id: Arc::clone(&model),
            model_version: version.clone(),
            timestamp: T0 + i as i64 * 10,
            features: Vec::new(),
            prediction: Prediction {
                score: Some(score),
                ..Prediction::default()
            },
            segments: Vec::new(),
            label: None,
        })?;
    }
    t.advance()?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "predictions: {:.0}/s; in memory {} entries (~{:.0} MiB), on disk {}; peak RSS {:.0} MiB",
        pending as f64 / secs,
        t.store().len(),
        t.store().memory_bytes() as f64 / 1048576.0,
        t.store().on_disk(),
        peak_rss_mib()
    );

    let started = Instant::now();
    let end = T0 + pending as i64 * 10;
    // labels of the newest predictions first, as a stream with label delays would send them
    for i in (0..pending).rev() {
        t.label(&LabelEvent {
            event_id: id(i),
            model_id: Arc::clone(&model),
            timestamp: end,
            label: Label::Class(if (i * 31) % 7 < 3 { "1" } else { "0" }.into()),
        })?;
    }
    t.advance()?;
    let secs = started.elapsed().as_secs_f64();
    let s = t.stats();
    println!(
        "labels: {:.0}/s, joined {}; in memory {} entries, on disk {}; peak RSS {:.0} MiB",
        pending as f64 / secs,
        s.labels.joined,
        t.store().len(),
        t.store().on_disk(),
        peak_rss_mib()
    );
    if s.labels.joined != pending {
        return Err(format!("joined {} of {pending}", s.labels.joined).into());
    }
    println!("store at the end: {:?}", t.store());
    drop(t);
    let _ = std::fs::remove_dir_all(&path);
    Ok(())
}
