//! Placeholders bound at execution, so that a rule's physical plan is made
//! once and run at every window with that window's values.
//!
//! ```text
//! optimised plan ── $window_end ──► param('window_end') ──► physical plan (kept)
//!                                        │ reads its cell
//! each evaluation: cell ◄── the window's value; the plan runs again
//! ```
//!
//! A placeholder becomes a call of a [`Param`] function holding a cell with
//! the current value. Expressions read it when they run; a table scan reads
//! it when it executes, to skip the days and models the filters exclude
//! ([`resolve`]).

use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;

/// The value of one placeholder for the run under way.
#[derive(Debug)]
pub struct Param {
    /// The placeholder's id without its `$`.
    id: String,
    name: String,
    data_type: DataType,
    signature: Signature,
    value: RwLock<ScalarValue>,
}

impl Param {
    fn new(id: &str, data_type: DataType) -> Result<Self, datafusion::error::DataFusionError> {
        let value = ScalarValue::try_from(&data_type)?;
        Ok(Param {
            id: id.to_owned(),
            name: format!("param_{id}"),
            data_type,
            // volatile: never folded into a constant while planning
            signature: Signature::nullary(Volatility::Volatile),
            value: RwLock::new(value),
        })
    }

    /// The placeholder's id without its `$`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sets the value the next run reads (of the type it was planned with).
    pub fn set(&self, value: ScalarValue) {
        *self.value.write().unwrap_or_else(|e| e.into_inner()) = value;
    }

    fn get(&self) -> ScalarValue {
        self.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

// one function per placeholder of one plan: equal only to itself
impl PartialEq for Param {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Param {}

impl Hash for Param {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as *const Param).hash(state);
    }
}

impl ScalarUDFImpl for Param {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.data_type.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.get()))
    }
}

/// `plan` with each typed placeholder replaced by a [`Param`] call (one
/// per id, shared by its uses), subqueries included; returns them too.
pub fn bind_late(plan: LogicalPlan) -> DfResult<(LogicalPlan, Vec<Arc<Param>>)> {
    let mut params: Vec<Arc<Param>> = Vec::new();
    let plan = plan
        .transform_up_with_subqueries(|node| {
            node.map_expressions(|expr| {
                expr.transform(|e| match e {
                    Expr::Placeholder(p) => {
                        let id = p.id.trim_start_matches('$');
                        let Some(field) = p.field.as_ref() else {
                            return Err(datafusion::error::DataFusionError::Plan(format!(
                                "{} has no type",
                                p.id
                            )));
                        };
                        let param = match params.iter().find(|q| q.id == id) {
                            Some(q) => Arc::clone(q),
                            None => {
                                let q = Arc::new(Param::new(id, field.data_type().clone())?);
                                params.push(Arc::clone(&q));
                                q
                            }
                        };
                        let udf = Arc::new(ScalarUDF::new_from_shared_impl(param));
                        Ok(Transformed::yes(Expr::ScalarFunction(
                            ScalarFunction::new_udf(udf, Vec::new()),
                        )))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })?
        .data;
    Ok((plan, params))
}

/// What [`resolve`] folds the filters of a table of `schema` with.
pub fn context(schema: Arc<DFSchema>) -> SimplifyContext {
    SimplifyContext::builder().with_schema(schema).build()
}

/// `filter` with every [`Param`] call replaced by its current value and
/// what that makes constant folded (`param('window_end') - INTERVAL '7
/// days'` becomes a timestamp), so that a scan can prune with it; `None`
/// when it holds no such call. `context` is [`context`]'s for the table.
pub fn resolve(filter: &Expr, context: &SimplifyContext) -> Option<Expr> {
    let mut found = false;
    let replaced = filter
        .clone()
        .transform(|e| match e {
            Expr::ScalarFunction(f) => {
                let inner: &dyn std::any::Any = f.func.inner().as_ref();
                match inner.downcast_ref::<Param>() {
                    Some(p) => {
                        found = true;
                        Ok(Transformed::yes(Expr::Literal(p.get(), None)))
                    }
                    None => Ok(Transformed::no(Expr::ScalarFunction(f))),
                }
            }
            other => Ok(Transformed::no(other)),
        })
        .ok()?
        .data;
    if !found {
        return None;
    }
    // `window_end = <value>` as most rules have it: nothing to fold
    let leaf = |e: &Expr| matches!(e, Expr::Column(_) | Expr::Literal(..));
    if let Expr::BinaryExpr(b) = &replaced
        && leaf(&b.left)
        && leaf(&b.right)
    {
        return Some(replaced);
    }
    // a filter that does not fold is still a filter: it only prunes less
    Some(
        ExprSimplifier::new(context.clone())
            .simplify(replaced.clone())
            .unwrap_or(replaced),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn a_filter_on_a_param_resolves_to_the_value_set_last() {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let param = Arc::new(Param::new("window_end", ts.clone()).unwrap());
        let call_of = |param: &Arc<Param>| {
            Expr::ScalarFunction(ScalarFunction::new_udf(
                Arc::new(ScalarUDF::new_from_shared_impl(Arc::clone(param) as _)),
                Vec::new(),
            ))
        };
        let call = call_of(&param);
        let schema = context(Arc::new(
            DFSchema::try_from(Schema::new(vec![Field::new("window_end", ts, false)])).unwrap(),
        ));
        let filter = col("window_end").gt_eq(call);
        param.set(ScalarValue::TimestampMillisecond(
            Some(1_000),
            Some("UTC".into()),
        ));
        let resolved = resolve(&filter, &schema).unwrap();
        assert_eq!(
            resolved,
            col("window_end").gt_eq(lit(ScalarValue::TimestampMillisecond(
                Some(1_000),
                Some("UTC".into())
            )))
        );
        param.set(ScalarValue::TimestampMillisecond(
            Some(2_000),
            Some("UTC".into()),
        ));
        assert!(format!("{}", resolve(&filter, &schema).unwrap()).contains("2000"));
        assert_eq!(resolve(&col("window_end").is_null(), &schema), None);
        // what the value makes constant is folded
        let week = ScalarValue::new_interval_dt(7, 0);
        let since =
            col("window_end").gt(Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                Box::new(call_of(&param)),
                datafusion::logical_expr::Operator::Minus,
                Box::new(lit(week)),
            )));
        assert_eq!(
            resolve(&since, &schema).unwrap(),
            col("window_end").gt(lit(ScalarValue::TimestampMillisecond(
                Some(2_000 - 7 * 86_400_000),
                Some("UTC".into())
            )))
        );
    }
}
