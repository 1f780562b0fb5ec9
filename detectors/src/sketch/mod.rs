//! Mergeable, serialisable sketches of feature distributions, and the drift
//! statistics computed from them.

pub mod categorical;
pub mod numeric;
pub mod stats;

pub use categorical::{CategoricalSketch, Counter};
pub use numeric::{NumericSketch, NumericSnapshot, SketchView};
pub use stats::{CategoricalDrift, NumericDrift, categorical_drift, numeric_drift};
