//! driftwatch-detectors: event-time windows, the watermark, and the
//! per-window components (summaries now; drift, data quality and performance
//! detectors plug in the same way).
//!
//! ```text
//! ingest ─► predictions ─► [ WindowSet: assign ─► component states ─► close at watermark ] ─► ClosedWindow ─┐
//!    │            └─► late ones refused with Reject::Late ─► dead-letter sink                                ├─► Emitted ─► sinks, sql
//!    └─► labels ─► [ PerformanceTracker: label join ─► metric revisions, change points ] ─► its report ───────┘  (named Arrow tables)
//! ```
//!
//! A window `[start, end)` of a model version closes when the watermark
//! (largest event time seen minus the allowed lateness) reaches `end`; its
//! rows are then final. Each [`Component`] owns its per-window state and its
//! output table; the window code knows none of them by name.
//!
//! ```
//! use std::sync::Arc;
//! use driftwatch_detectors::{default_components, WindowSet, WindowSpec};
//! use driftwatch_ingest::{Decoder, DecoderConfig, Event};
//!
//! let mut windows = WindowSet::new(WindowSpec::tumbling(3_600_000).unwrap(), 60_000, default_components());
//! let mut decoder = Decoder::new(DecoderConfig::default());
//! let Ok(Event::Prediction(p)) = decoder.decode_json(
//!     br#"{"event_id":"a","model_id":"churn","timestamp":"2026-11-26T12:00:00Z","features":{"age":42},"prediction":{"score":0.9}}"#)
//! else { panic!() };
//! windows.push(&p).unwrap();
//! let closed = windows.close_all().unwrap();
//! assert_eq!(closed.len(), 1);
//! assert_eq!(closed[0].tables[1].0, "feature_summary");
//! ```

pub mod component;
pub mod drift;
pub mod error;
pub mod labelfree;
pub mod multivariate;
pub mod output;
pub mod performance;
pub mod settings;
pub mod sketch;
pub mod slots;
pub mod summary;
pub mod window;
pub mod windows;

use std::sync::Arc;

pub use component::{Component, Components, DynComponent};
pub use drift::{Decision, DriftConfig, DriftDetector, Level, SharedReferences, Thresholds};
pub use error::{Error, Result};
pub use labelfree::{LabelFree, LabelFreeReference, LabelFreeReferences};
pub use output::{About, Emitted, Revision};
pub use slots::FeatureSlots;
pub use summary::{FeatureSummary, WindowSummary};
pub use window::{Watermark, WindowSpec};
pub use windows::{ClosedWindow, Limits, WindowKey, WindowSet, WindowStats, key_fields};

/// The components every window runs by default: the summaries, the drift
/// detector with default settings and the label-free figures (of no model
/// until references are given).
pub fn default_components() -> Components {
    let drift = DriftDetector::new(DriftConfig::default())
        .unwrap_or_else(|_| unreachable!("the default drift settings are valid"));
    components(drift, LabelFree::default())
}

/// Only the summaries (drift detection switched off).
pub fn summary_components() -> Components {
    Arc::new([
        Arc::new(WindowSummary) as Arc<dyn DynComponent>,
        Arc::new(FeatureSummary),
    ])
}

/// The summaries, the given drift detector and label-free figures.
pub fn components(drift: DriftDetector, label_free: LabelFree) -> Components {
    Arc::new([
        Arc::new(WindowSummary) as Arc<dyn DynComponent>,
        Arc::new(FeatureSummary),
        Arc::new(drift),
        Arc::new(label_free),
    ])
}
