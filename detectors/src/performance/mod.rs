//! Model performance under delayed labels: metrics of labelled predictions
//! per window ([`metrics`]), ROC AUC from score counts ([`auc`]), and
//! online change detectors over error streams and metric series
//! ([`change`]), and the label join that feeds them ([`tracker`], with its
//! pending store [`store`]).

pub mod auc;
pub mod change;
pub mod estimate;
pub mod metrics;
pub mod store;
pub mod tracker;

pub use auc::ScoreCounts;
pub use change::{Adwin, AdwinConfig, Ddm, DdmConfig, Direction, PageHinkley, PageHinkleyConfig};
pub use metrics::{MetricValue, Metrics, Outcome, Task, Unscorable, predicted_class};
pub use store::{PendingStore, StoreConfig};
pub use tracker::{
    ChangePoint, LabelCounts, MetricsRevision, PerformanceConfig, PerformanceOutput,
    PerformanceStats, PerformanceTracker, change_points_batch, label_stats_batch,
};
