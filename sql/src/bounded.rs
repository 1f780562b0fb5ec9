//! Built-in functions whose result can be far larger than their arguments
//! (`replace`, `regexp_replace`, `concat`, `concat_ws`), or whose work grows
//! with the product of their arguments (`levenshtein`), bounded before they
//! run. (`repeat`, `lpad` and `rpad` are not offered at all:
//! [`crate::engine::REFUSED_FUNCTIONS`].)
//!
//! DataFusion's memory pool counts what operators hold (joins, sorts,
//! aggregates), not the arrays a function returns, and a function computing
//! one huge value never yields to the query's deadline: `replace` of a
//! 30,000-byte string by itself made 900 MB before anything could stop it.
//! Each function here is the built-in one, wrapped: from its arguments'
//! sizes the wrapper works out the most its result could hold (or the work
//! it could take) and refuses the call past the bound, naming the function
//! and the limit; under it the built-in runs as it is.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// The most cells of `levenshtein`'s table one call may fill, over its rows
/// (about a second of work).
pub const MAX_EDIT_CELLS: u128 = 50_000_000;

/// How a function's result grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `replace(s, from, to)`
    Replace,
    /// `regexp_replace(s, pattern, replacement [, flags])`
    RegexpReplace,
    /// `concat(a, …)`, `concat_ws(sep, a, …)`
    Concat,
    /// `levenshtein(a, b)`: work, not size
    Edit,
}

const BOUNDED: [(&str, Growth); 5] = [
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
    ("concat", Growth::Concat),
    ("concat_ws", Growth::Concat),
    ("levenshtein", Growth::Edit),
];

/// Replaces the built-in functions that can grow their results with
/// bounded ones: a call whose result could pass `max_result_bytes` (over
/// the rows of one batch) is refused.
pub fn register(ctx: &SessionContext, max_result_bytes: usize) {
    for (name, growth) in BOUNDED {
        let Ok(inner) = ctx.udf(name) else { continue };
        ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
            inner: inner.as_ref().clone(),
            growth,
            max_bytes: max_result_bytes as u128,
        }));
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    growth: Growth,
    max_bytes: u128,
}

/// Per row, the byte length of a text or binary argument (0 for NULL or
/// another type).
fn lengths(arg: &ColumnarValue, rows: usize) -> Vec<u128> {
    let array = match arg {
        ColumnarValue::Scalar(s) => {
            let n = match s {
                ScalarValue::Utf8(Some(v))
                | ScalarValue::LargeUtf8(Some(v))
                | ScalarValue::Utf8View(Some(v)) => v.len(),
                ScalarValue::Binary(Some(v))
                | ScalarValue::LargeBinary(Some(v))
                | ScalarValue::BinaryView(Some(v)) => v.len(),
                _ => 0,
            };
            return vec![n as u128; rows];
        }
        ColumnarValue::Array(a) => a,
    };
    // arrow's own kernel: byte lengths of any string or binary array
    let Ok(lengths) = arrow::compute::kernels::length::length(array)
        .and_then(|l| arrow::compute::cast(&l, &DataType::Int64))
    else {
        return vec![0; array.len()];
    };
    let lengths = lengths.as_primitive::<Int64Type>();
    (0..lengths.len())
        .map(|i| {
            if lengths.is_null(i) {
                0
            } else {
                lengths.value(i).max(0) as u128
            }
        })
        .collect()
}

impl Bounded {
    /// The most bytes (or, for `levenshtein`, table cells) the call could
    /// take, over its rows.
    fn worst(&self, args: &[ColumnarValue], rows: usize) -> u128 {
        let len = |i: usize| {
            args.get(i)
                .map_or_else(|| vec![0; rows], |a| lengths(a, rows))
        };
        let s = len(0);
        match self.growth {
            Growth::Replace => {
                let (from, to) = (len(1), len(2));
                (0..rows)
                    .map(|r| s[r] + (s[r] / from[r].max(1) + 1) * to[r])
                    .sum()
            }
            Growth::RegexpReplace => {
                // a pattern may match at every position (and an empty
                // match between characters), and a replacement that refers
                // to groups (`$1`, `\1`) may repeat the whole input
                let replacement = len(2);
                let refers = match args.get(2) {
                    Some(ColumnarValue::Scalar(ScalarValue::Utf8(Some(t))))
                    | Some(ColumnarValue::Scalar(ScalarValue::LargeUtf8(Some(t))))
                    | Some(ColumnarValue::Scalar(ScalarValue::Utf8View(Some(t)))) => {
                        t.contains(['$', '\\'])
                    }
                    _ => true,
                };
                (0..rows)
                    .map(|r| {
                        let per_match = if refers {
                            replacement[r] * (s[r] + 1)
                        } else {
                            replacement[r]
                        };
                        s[r] + (s[r] + 1) * per_match
                    })
                    .sum()
            }
            Growth::Concat => {
                let all: Vec<Vec<u128>> = (0..args.len()).map(len).collect();
                // concat_ws repeats its separator between the others
                let copies = args.len().max(1) as u128;
                (0..rows)
                    .map(|r| {
                        let sum: u128 = all.iter().map(|a| a[r]).sum();
                        sum + if self.inner.name() == "concat_ws" {
                            all[0][r] * copies
                        } else {
                            0
                        }
                    })
                    .sum()
            }
            Growth::Edit => {
                let t = len(1);
                (0..rows).map(|r| s[r] * t[r]).sum()
            }
        }
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<arrow::datatypes::FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let worst = self.worst(&args.args, args.number_rows.max(1));
        let (limit, what) = match self.growth {
            Growth::Edit => (MAX_EDIT_CELLS, "cells of work"),
            _ => (self.max_bytes, "bytes"),
        };
        if worst > limit {
            return exec_err!(
                "{}() could make {worst} {what} here, past the limit of {limit} per call \
                 (a quarter of sql.memory_limit for text; shorten its arguments)",
                self.inner.name()
            );
        }
        self.inner.invoke_with_args(args)
    }
}

/// For tests: the bound of one call of `name` on scalar arguments.
#[cfg(test)]
fn worst_of(name: &str, args: &[ScalarValue]) -> u128 {
    let growth = BOUNDED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, g)| *g)
        .unwrap_or(Growth::Concat);
    let ctx = SessionContext::new();
    let b = Bounded {
        inner: ctx.udf(name).map(|u| u.as_ref().clone()).expect("built in"),
        growth,
        max_bytes: 0,
    };
    let args: Vec<ColumnarValue> = args.iter().cloned().map(ColumnarValue::Scalar).collect();
    b.worst(&args, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> ScalarValue {
        ScalarValue::Utf8(Some(s.into()))
    }

    #[test]
    fn the_bound_covers_what_each_function_can_make() {
        let a = "a".repeat(30_000);
        // the review's query: every `a` replaced by the whole string
        let worst = worst_of("replace", &[text(&a), text("a"), text(&a)]);
        assert!(worst >= 900_000_000, "{worst}");
        assert_eq!(worst_of("concat", &[text("ab"), text("cde")]), 5);
        assert_eq!(worst_of("levenshtein", &[text(&a), text(&a)]), 900_000_000);
        let g = worst_of(
            "regexp_replace",
            &[text("abc"), text("x*"), text("$0$0"), text("g")],
        );
        assert!(g >= 4 * 4 * 4, "{g}");
    }
}
