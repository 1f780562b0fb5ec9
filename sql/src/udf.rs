//! Functions analysts need in rules, beyond DataFusion's own
//! (see `docs/sql.md` for each with an example).
//!
//! - `rel_change(new, old)`: `(new - old) / |old|`, NULL when `old` is 0 or
//!   either is NULL — the window-over-window change of a figure, used with
//!   `LAG(...) OVER (...)` or a self-join on the previous window.
//! - Over the `sketch` column of `feature_sketches` (a feature's sketches in
//!   one window): `sketch_quantile(sketch, q)`, `sketch_cdf(sketch, x)`,
//!   `sketch_psi(reference, current)`, `sketch_js(reference, current)`, and
//!   the aggregate `sketch_merge(sketch)`, which merges many windows'
//!   sketches into one (a day, a week, a baseline of several windows).

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Accumulator, ColumnarValue, Volatility, create_udaf, create_udf};
use datafusion::prelude::SessionContext;
use driftwatch_detectors::drift::FeatureSketches;

/// Reference-quantile bins of `sketch_psi` / `sketch_js` on numeric
/// features: the drift detector's default (`drift.bins`).
pub const SKETCH_BINS: usize = 10;

fn rel_change(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let new = arrays[0].as_primitive::<Float64Type>();
    let old = arrays[1].as_primitive::<Float64Type>();
    let out: Float64Array = new
        .iter()
        .zip(old.iter())
        .map(|(n, o)| match (n, o) {
            (Some(n), Some(o)) if o != 0.0 => Some((n - o) / o.abs()),
            _ => None,
        })
        .collect();
    Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
}

fn decode(function: &str, bytes: &[u8]) -> Result<FeatureSketches> {
    FeatureSketches::from_bytes(bytes).map_err(|e| {
        DataFusionError::Execution(format!(
            "{function}: the argument is not a sketch column value ({e})"
        ))
    })
}

/// A scalar function of one sketch and one number, NULL when either is.
fn sketch_and_number(
    name: &'static str,
    f: fn(&FeatureSketches, f64) -> Option<f64>,
) -> impl Fn(&[ColumnarValue]) -> Result<ColumnarValue> {
    move |args| {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let sketches = arrays[0].as_binary::<i32>();
        let numbers = arrays[1].as_primitive::<Float64Type>();
        let out = sketches
            .iter()
            .zip(numbers.iter())
            .map(|(s, x)| match (s, x) {
                (Some(s), Some(x)) => Ok(f(&decode(name, s)?, x)),
                _ => Ok(None),
            })
            .collect::<Result<Float64Array>>()?;
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// A scalar function of two sketches, NULL when either is.
fn two_sketches(
    name: &'static str,
    f: fn(&FeatureSketches, &FeatureSketches) -> Option<f64>,
) -> impl Fn(&[ColumnarValue]) -> Result<ColumnarValue> {
    move |args| {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let (a, b) = (arrays[0].as_binary::<i32>(), arrays[1].as_binary::<i32>());
        let out = a
            .iter()
            .zip(b.iter())
            .map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => Ok(f(&decode(name, a)?, &decode(name, b)?)),
                _ => Ok(None),
            })
            .collect::<Result<Float64Array>>()?;
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// The numeric value at quantile `q` (0 to 1); NULL without numeric values
/// or with `q` outside [0, 1].
fn quantile(s: &FeatureSketches, q: f64) -> Option<f64> {
    (0.0..=1.0)
        .contains(&q)
        .then(|| s.numeric.view().quantile(q))
        .flatten()
}

/// The share of numeric values ≤ `x`; NULL without numeric values.
fn cdf(s: &FeatureSketches, x: f64) -> Option<f64> {
    (s.numeric.count() > 0).then(|| s.numeric.view().cdf(x))
}

fn psi(reference: &FeatureSketches, current: &FeatureSketches) -> Option<f64> {
    FeatureSketches::psi_js(reference, current, SKETCH_BINS).map(|(psi, _)| psi)
}

fn js(reference: &FeatureSketches, current: &FeatureSketches) -> Option<f64> {
    FeatureSketches::psi_js(reference, current, SKETCH_BINS).map(|(_, js)| js)
}

/// `sketch_merge`: the sketches of every row of a group merged into one;
/// NULL sketches are skipped, and over no sketch at all it is NULL.
#[derive(Debug, Default)]
struct MergeSketches {
    merged: Option<FeatureSketches>,
}

impl MergeSketches {
    fn add_all(&mut self, values: &ArrayRef) -> Result<()> {
        for bytes in values.as_binary::<i32>().iter().flatten() {
            let s = decode("sketch_merge", bytes)?;
            match &mut self.merged {
                Some(m) => m.merge(&s),
                None => self.merged = Some(s),
            }
        }
        Ok(())
    }

    fn value(&self) -> Result<ScalarValue> {
        let bytes = self
            .merged
            .as_ref()
            .map(|m| {
                m.to_bytes().map_err(|e| {
                    DataFusionError::Execution(format!("sketch_merge: encoding the result: {e}"))
                })
            })
            .transpose()?;
        Ok(ScalarValue::Binary(bytes))
    }
}

impl Accumulator for MergeSketches {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add_all(&values[0])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.add_all(&states[0])
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.value()?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.value()
    }

    fn size(&self) -> usize {
        // called after every batch: an estimate, not an encoding. At the
        // default settings a numeric sketch holds at most 200 centroids,
        // 1,000 buffered values and 256 exact counts (about 20 KiB) however
        // much it saw; a category costs a string and two counters
        const NUMERIC_BOUND: usize = 24 << 10;
        std::mem::size_of::<Self>()
            + self
                .merged
                .as_ref()
                .map_or(0, |m| NUMERIC_BOUND + 64 * m.categorical.len())
    }
}

/// Registers the functions with a session.
pub fn register(ctx: &SessionContext) {
    let number = DataType::Float64;
    ctx.register_udf(create_udf(
        "rel_change",
        vec![number.clone(), number.clone()],
        number.clone(),
        Volatility::Immutable,
        Arc::new(rel_change),
    ));
    for (name, f) in [
        (
            "sketch_quantile",
            quantile as fn(&FeatureSketches, f64) -> _,
        ),
        ("sketch_cdf", cdf),
    ] {
        ctx.register_udf(create_udf(
            name,
            vec![DataType::Binary, number.clone()],
            number.clone(),
            Volatility::Immutable,
            Arc::new(sketch_and_number(name, f)),
        ));
    }
    for (name, f) in [
        (
            "sketch_psi",
            psi as fn(&FeatureSketches, &FeatureSketches) -> _,
        ),
        ("sketch_js", js),
    ] {
        ctx.register_udf(create_udf(
            name,
            vec![DataType::Binary, DataType::Binary],
            number.clone(),
            Volatility::Immutable,
            Arc::new(two_sketches(name, f)),
        ));
    }
    ctx.register_udaf(create_udaf(
        "sketch_merge",
        vec![DataType::Binary],
        Arc::new(DataType::Binary),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::new(MergeSketches::default()))),
        Arc::new(vec![DataType::Binary]),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::BinaryArray;

    fn sketch(values: &[f64]) -> Vec<u8> {
        let mut s = FeatureSketches::new(&Default::default());
        for v in values {
            s.add(&driftwatch_ingest::FeatureValue::Numeric(*v));
        }
        s.to_bytes().unwrap()
    }

    #[test]
    fn merge_skips_nulls_and_is_null_over_nothing() {
        let mut m = MergeSketches::default();
        assert_eq!(m.evaluate().unwrap(), ScalarValue::Binary(None));
        let column: ArrayRef = Arc::new(BinaryArray::from(vec![
            Some(sketch(&[1.0, 2.0]).as_slice()),
            None,
            Some(sketch(&[3.0]).as_slice()),
        ]));
        m.update_batch(&[column]).unwrap();
        let ScalarValue::Binary(Some(bytes)) = m.evaluate().unwrap() else {
            panic!("a merged sketch")
        };
        let merged = FeatureSketches::from_bytes(&bytes).unwrap();
        assert_eq!(merged.count(), 3);
        assert_eq!(merged.numeric.max(), Some(3.0));
    }

    #[test]
    fn bytes_that_are_not_a_sketch_are_an_error_naming_the_function() {
        let column: ArrayRef = Arc::new(BinaryArray::from(vec![Some(&b"nonsense"[..])]));
        let args = [
            ColumnarValue::Array(column),
            ColumnarValue::Scalar(ScalarValue::Float64(Some(0.5))),
        ];
        let err = sketch_and_number("sketch_quantile", quantile)(&args).unwrap_err();
        assert!(err.to_string().contains("sketch_quantile"), "{err}");
    }

    #[test]
    fn quantile_outside_zero_to_one_is_null() {
        let s = FeatureSketches::from_bytes(&sketch(&[1.0, 2.0, 3.0])).unwrap();
        assert_eq!(quantile(&s, 1.5), None);
        assert_eq!(quantile(&s, 0.0), Some(1.0));
        assert_eq!(cdf(&s, 2.0), Some(2.0 / 3.0));
    }
}
