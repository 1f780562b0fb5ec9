//! Functions analysts need in rules, beyond DataFusion's own
//! (see `docs/sql.md` for each with an example).
//!
//! - `rel_change(new, old)`: `(new - old) / |old|`, NULL when `old` is 0 or
//!   either is NULL — the window-over-window change of a figure, used with
//!   `LAG(...) OVER (...)` or a self-join on the previous window.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;

fn rel_change(args: &[ColumnarValue]) -> datafusion::error::Result<ColumnarValue> {
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

/// Registers the functions with a session.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(create_udf(
        "rel_change",
        vec![DataType::Float64, DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(rel_change),
    ));
}
