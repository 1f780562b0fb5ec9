//! Model performance under delayed labels: metrics of labelled predictions
//! per window ([`metrics`]), ROC AUC from score counts ([`auc`]), and
//! online change detectors over error streams and metric series
//! ([`change`]).

pub mod auc;
pub mod change;
pub mod metrics;

pub use auc::ScoreCounts;
pub use change::{Adwin, AdwinConfig, Ddm, DdmConfig, Direction, PageHinkley, PageHinkleyConfig};
pub use metrics::{MetricValue, Metrics, Outcome, Task, Unscorable, predicted_class};
