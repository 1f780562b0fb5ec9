//! The DataFusion session: tables, functions, and the limits every query
//! runs under. Only single read-only `SELECT` statements are planned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Statement, Visit};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::tables::Tables;

/// Limits every query runs under.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Memory the engine's operators may hold (joins, sorts, aggregates).
    pub memory: usize,
    /// Wall-clock time one query may take.
    pub timeout: Duration,
    /// Rows one query may return.
    pub max_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 256 << 20,
            timeout: Duration::from_secs(5),
            max_rows: 10_000,
        }
    }
}

/// A query's answer: its columns and rows.
pub type Rows = (SchemaRef, Vec<RecordBatch>);

/// A query analysed and optimised once, its placeholders left unbound
/// ([`Engine::prepare`]). Its physical plan is made at its first run and
/// kept: each later run sets the placeholders' values
/// ([`crate::params`]) and runs the same plan again, its scans reading the
/// rows the tables hold then. A rule evaluated at every window close is run
/// this way; planning was most of an evaluation's time.
#[derive(Debug, Clone)]
pub struct Prepared {
    kept: Arc<Kept>,
}

#[derive(Debug)]
struct Kept {
    plan: LogicalPlan,
    schema: SchemaRef,
    /// The type of each placeholder (`$window_end`) the plan expects.
    types: HashMap<String, DataType>,
    /// Physical plans not running now (one per query running at once).
    idle: Mutex<Vec<Compiled>>,
}

/// A physical plan of a [`Prepared`] query and the placeholders it reads.
#[derive(Debug)]
struct Compiled {
    plan: Arc<dyn ExecutionPlan>,
    params: Vec<Arc<crate::params::Param>>,
}

impl Kept {
    /// A physical plan not running now: a kept one, or one made now.
    async fn take(&self, state: &SessionState) -> Result<Compiled> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(c) = idle {
            return Ok(c);
        }
        let (plan, params) = crate::params::bind_late(self.plan.clone())?;
        let plan = state
            .query_planner()
            .create_physical_plan(&plan, state)
            .await?;
        Ok(Compiled { plan, params })
    }

    fn put_back(&self, compiled: Compiled) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(compiled);
    }
}

impl Prepared {
    /// The values of `params` for this query's placeholders, each cast to
    /// the type its placeholder was planned with.
    fn values(&self, params: &ParamValues) -> Result<HashMap<String, ScalarValue>> {
        let mut values = HashMap::with_capacity(self.kept.types.len());
        for (id, data_type) in &self.kept.types {
            let value = params.get_placeholders_with_values(id)?.value;
            let value = if value.data_type() == *data_type {
                value
            } else {
                value.cast_to(data_type)?
            };
            values.insert(id.trim_start_matches('$').to_owned(), value);
        }
        Ok(values)
    }
}

/// A query for [`Engine::execute_all`].
#[derive(Debug, Clone, Copy)]
pub enum Query<'a> {
    /// As planned by [`Engine::plan`], with the values of its placeholders.
    Plan(&'a LogicalPlan, Option<&'a ParamValues>),
    /// As prepared by [`Engine::prepare`], with the values of its placeholders.
    Prepared(&'a Prepared, &'a ParamValues),
}

/// Queries of one evaluation that run at once, each on a lane of its own:
/// a runtime with one worker (these machines have two cores).
pub const LANES: usize = 2;

/// The lanes, shared by every session of the process. A query that computes
/// for long without yielding holds up only its own lane.
struct Lanes {
    runtimes: Vec<tokio::runtime::Runtime>,
    /// For each lane, a query that ran out of time and was aborted: its
    /// task stops at its next yield, and until then the lane is not given
    /// new queries.
    stuck: std::sync::Mutex<Vec<Option<tokio::task::AbortHandle>>>,
}

impl Lanes {
    /// The lanes free of aborted queries still running (all of them when
    /// none is), in the order to use them.
    fn free(&self) -> Vec<usize> {
        let mut stuck = self.stuck.lock().unwrap_or_else(|e| e.into_inner());
        for s in stuck.iter_mut() {
            if s.as_ref().is_some_and(|h| h.is_finished()) {
                *s = None;
            }
        }
        let free: Vec<usize> = (0..LANES).rev().filter(|&l| stuck[l].is_none()).collect();
        if free.is_empty() {
            (0..LANES).rev().collect()
        } else {
            free
        }
    }

    fn aborted(&self, lane: usize, handle: tokio::task::AbortHandle) {
        self.stuck.lock().unwrap_or_else(|e| e.into_inner())[lane] = Some(handle);
    }
}

fn lanes() -> Result<&'static Lanes> {
    static LANES_RT: std::sync::OnceLock<Lanes> = std::sync::OnceLock::new();
    if let Some(lanes) = LANES_RT.get() {
        return Ok(lanes);
    }
    let runtimes = (0..LANES)
        .map(|i| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_stack_size(LANE_STACK)
                .thread_name(format!("driftwatch-sql-{i}"))
                .enable_time()
                .build()
                .map_err(crate::error::io("starting the SQL runtime"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(LANES_RT.get_or_init(|| Lanes {
        runtimes,
        stuck: std::sync::Mutex::new(vec![None; LANES]),
    }))
}

/// A plan ready to run: as planned (analysed and optimised when it runs),
/// or a [`Prepared`] plan with the values of its placeholders.
enum Bound {
    Planned(LogicalPlan),
    Prepared(Arc<Kept>, HashMap<String, ScalarValue>),
}

/// Where a lane's queries are planned and run.
#[derive(Clone)]
struct Lane {
    state: Arc<SessionState>,
    /// What a plan runs with, made once from `state` (making it copies the
    /// session's configuration and function registries).
    task: Arc<TaskContext>,
}

/// Runs `plan` in `lane`, stopping at `limits`' deadline and row limit
/// between batches.
async fn run(lane: Lane, plan: Bound, limits: Limits) -> Result<Rows> {
    let Lane { state, task } = lane;
    let deadline = Instant::now() + limits.timeout;
    match plan {
        Bound::Planned(plan) => {
            let physical = state.create_physical_plan(&plan).await?;
            let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
            collect(physical, schema, task, &limits, deadline).await
        }
        Bound::Prepared(kept, values) => {
            let compiled = kept.take(&state).await?;
            for p in &compiled.params {
                match values.get(p.id()) {
                    Some(v) => p.set(v.clone()),
                    None => {
                        return Err(Error::Refused(format!("${} has no value", p.id())));
                    }
                }
            }
            // operators that keep what they built (a join's build side)
            // start afresh
            let physical = reset_plan_states(Arc::clone(&compiled.plan))?;
            let rows = collect(physical, Arc::clone(&kept.schema), task, &limits, deadline).await;
            kept.put_back(compiled);
            rows
        }
    }
}

/// Runs `physical` to the end under `limits`.
async fn collect(
    physical: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    task: Arc<TaskContext>,
    limits: &Limits,
    deadline: Instant,
) -> Result<Rows> {
    let mut stream = execute_stream(physical, task)?;
    let mut batches = Vec::new();
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        if rows > limits.max_rows {
            return Err(Error::TooManyRows {
                limit: limits.max_rows,
            });
        }
        batches.push(batch);
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                limit_ms: limits.timeout.as_millis() as u64,
            });
        }
    }
    Ok((schema, batches))
}

/// Longest query text accepted, in bytes (rules and ad-hoc queries).
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// Deepest nesting of expressions (`a + b + …` is one level a term) or of
/// plan nodes (subqueries, unions, joins) a query may have. Evaluation
/// walks these trees recursively; past this depth a query is refused when
/// it is planned (`rules check` included), not when it runs.
pub const MAX_NESTING: usize = 256;

/// Stack of the thread that parses and plans a query: a query of
/// [`MAX_QUERY_BYTES`] nested as deep as its text allows is planned, found
/// too deep and dropped within it. Only the pages used are committed.
const PLANNING_STACK: usize = 256 << 20;

/// Stack of the threads that run queries (their plans are at most
/// [`MAX_NESTING`] deep; DataFusion's recursion protection grows it further
/// where it recurses).
const LANE_STACK: usize = 16 << 20;

/// Functions analysts' SQL may not call: each allocates as much as its
/// arguments ask for (`repeat('x', 1e9)`, `range(1e10)`), outside the
/// memory limit. They are removed from every session.
pub const REFUSED_FUNCTIONS: &[&str] = &[
    "repeat",
    "lpad",
    "rpad",
    "range",
    "generate_series",
    "array_repeat",
    "array_resize",
];

/// Counts how deep a tree nests, stopping once past [`MAX_NESTING`].
#[derive(Default)]
struct Nesting {
    current: usize,
    deepest: usize,
}

impl Nesting {
    fn down(&mut self) -> datafusion::common::tree_node::TreeNodeRecursion {
        use datafusion::common::tree_node::TreeNodeRecursion;
        self.current += 1;
        self.deepest = self.deepest.max(self.current);
        if self.current > MAX_NESTING {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        }
    }
}

impl<'n> datafusion::common::tree_node::TreeNodeVisitor<'n> for Nesting {
    type Node = datafusion::logical_expr::Expr;

    fn f_down(
        &mut self,
        _: &'n Self::Node,
    ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(self.down())
    }

    fn f_up(
        &mut self,
        _: &'n Self::Node,
    ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
        self.current -= 1;
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }
}

/// Counts how deep expressions nest in a statement's syntax tree, breaking
/// off once past [`MAX_NESTING`].
#[derive(Default)]
struct SyntaxNesting(usize);

impl datafusion::sql::sqlparser::ast::Visitor for SyntaxNesting {
    type Break = ();

    fn pre_visit_expr(
        &mut self,
        _: &datafusion::sql::sqlparser::ast::Expr,
    ) -> std::ops::ControlFlow<()> {
        self.0 += 1;
        if self.0 > MAX_NESTING {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    }

    fn post_visit_expr(
        &mut self,
        _: &datafusion::sql::sqlparser::ast::Expr,
    ) -> std::ops::ControlFlow<()> {
        self.0 -= 1;
        std::ops::ControlFlow::Continue(())
    }
}

/// How deep set operations nest (`SELECT … UNION ALL SELECT … UNION ALL …`
/// is one level a term), counted without recursion, up to just past
/// [`MAX_NESTING`].
fn set_nesting(body: &datafusion::sql::sqlparser::ast::SetExpr) -> usize {
    use datafusion::sql::sqlparser::ast::SetExpr;
    let mut stack = vec![(body, 1)];
    let mut deepest = 0;
    while let Some((expr, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if deepest > MAX_NESTING {
            break;
        }
        match expr {
            SetExpr::SetOperation { left, right, .. } => {
                stack.push((left, depth + 1));
                stack.push((right, depth + 1));
            }
            SetExpr::Query(q) => stack.push((&q.body, depth + 1)),
            _ => {}
        }
    }
    deepest
}

fn too_deep(what: &str) -> Error {
    Error::Refused(format!(
        "the query's {what} nest more than {MAX_NESTING} levels deep; split it up"
    ))
}

/// The plan's nodes, counted the same way.
struct PlanNesting(Nesting);

impl<'n> datafusion::common::tree_node::TreeNodeVisitor<'n> for PlanNesting {
    type Node = LogicalPlan;

    fn f_down(
        &mut self,
        _: &'n Self::Node,
    ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(self.0.down())
    }

    fn f_up(
        &mut self,
        _: &'n Self::Node,
    ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
        self.0.current -= 1;
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }
}

/// Refuses a plan whose nodes or expressions nest deeper than [`MAX_NESTING`].
fn check_nesting(plan: &LogicalPlan) -> Result<()> {
    let mut nodes = PlanNesting(Nesting::default());
    plan.visit_with_subqueries(&mut nodes)?;
    if nodes.0.deepest > MAX_NESTING {
        return Err(too_deep("plan nodes (subqueries, unions, joins)"));
    }
    let mut deepest = 0;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            let mut nesting = Nesting::default();
            expr.visit(&mut nesting)?;
            deepest = deepest.max(nesting.deepest);
            Ok(if deepest > MAX_NESTING {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        })
    })?;
    if deepest > MAX_NESTING {
        return Err(too_deep("expressions"));
    }
    Ok(())
}

/// A DataFusion session over [`Tables`].
pub struct Engine {
    ctx: SessionContext,
    /// For each lane, the session's state once every table, function and
    /// view is in it, with a memory pool of its own: queries run in it
    /// without copying it, and one query's memory limit is its own.
    states: Vec<Lane>,
    lanes: &'static Lanes,
    /// Where the caller waits for its queries: its timers fire even while
    /// every lane is busy.
    waiter: tokio::runtime::Runtime,
    tables: Tables,
    limits: Limits,
    /// The queries of [`prepared`](Self::prepared), by their text and
    /// placeholder types: at most [`KEPT_QUERIES`].
    kept: Mutex<HashMap<String, Prepared>>,
}

/// Queries [`Engine::prepared`] keeps; past it the kept ones are dropped and
/// prepared again as they are asked for.
const KEPT_QUERIES: usize = 64;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("tables", &self.tables)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Views defined over the tables, registered with every session that has
/// their table: (view, the table it reads, its query).
const VIEWS: &[(&str, &str, &str)] = &[
    (
        "model_metrics_latest",
        "model_metrics",
        "SELECT * EXCLUDE (latest_rank) FROM (SELECT *, rank() OVER (\
         PARTITION BY model_id, model_version, window_start, window_end \
         ORDER BY revision DESC) AS latest_rank FROM model_metrics) \
         WHERE latest_rank = 1",
    ),
    (
        crate::versions::VIEW,
        crate::versions::TABLE,
        crate::versions::VIEW_SQL,
    ),
];

/// The table a view reads, for views defined here.
pub fn view_base(view: &str) -> Option<&'static str> {
    VIEWS
        .iter()
        .find(|(name, _, _)| *name == view)
        .map(|(_, base, _)| *base)
}

impl Engine {
    /// A session over `tables` with `limits`.
    pub fn new(tables: Tables, limits: Limits) -> Result<Self> {
        let lanes = lanes()?;
        let waiter = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(crate::error::io("starting the SQL runtime"))?;
        // no spilling to disk: past the memory limit a query fails
        let memory = limits.memory;
        let env = move || {
            RuntimeEnvBuilder::new()
                .with_memory_limit(memory, 1.0)
                .with_disk_manager_builder(
                    datafusion::execution::disk_manager::DiskManagerBuilder::default()
                        .with_mode(datafusion::execution::disk_manager::DiskManagerMode::Disabled),
                )
                // the history changes under the session (flushes,
                // compactions, other partitions' writers): list its files
                // at every scan
                .with_object_list_cache_limit(0)
                .build_arc()
        };
        // one partition: a rule reads a few thousand rows, and splitting
        // them across tasks costs more than it saves
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(false)
            // no footer reads while planning: a rule touches a few small
            // files, and the reader prunes them with the filters anyway
            .with_collect_statistics(false)
            // a prepared rule's physical plan runs again at every window:
            // no filter an earlier run built may stay in it
            .set_bool("datafusion.optimizer.enable_dynamic_filter_pushdown", false);
        let ctx = SessionContext::new_with_config_rt(config, env()?);
        for (name, table) in tables.iter() {
            ctx.register_table(name.as_str(), Arc::clone(table) as _)?;
        }
        for name in REFUSED_FUNCTIONS {
            ctx.deregister_udf(name);
            ctx.deregister_udtf(name);
        }
        crate::udf::register(&ctx);
        // text a function makes is not counted by the memory pool
        crate::bounded::register(&ctx, (limits.memory / 4).max(1 << 20));
        let mut engine = Engine {
            ctx,
            states: Vec::new(),
            lanes,
            waiter,
            tables,
            limits,
            kept: Mutex::new(HashMap::new()),
        };
        for (name, base, sql) in VIEWS {
            if engine.tables.get(base).is_none() {
                continue;
            }
            let plan = engine.plan(sql)?;
            let view = datafusion::catalog::view::ViewTable::new(plan, Some((*sql).to_owned()));
            engine.ctx.register_table(*name, Arc::new(view))?;
        }
        for _ in 0..LANES {
            let state = SessionStateBuilder::new_from_existing(engine.ctx.state())
                .with_runtime_env(env()?)
                .build();
            engine.states.push(Lane {
                task: Arc::new(TaskContext::from(&state)),
                state: Arc::new(state),
            });
        }
        Ok(engine)
    }

    /// The tables.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The limits queries run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Names of the tables and views a query can read.
    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tables.iter().map(|(n, _)| n.clone()).collect();
        names.extend(
            VIEWS
                .iter()
                .filter(|(_, base, _)| self.tables.get(base).is_some())
                .map(|(n, _, _)| (*n).to_owned()),
        );
        names
    }

    /// Plans `sql` without running it: it must be one read-only query
    /// (`SELECT`, `WITH … SELECT`, `VALUES`) of at most [`MAX_QUERY_BYTES`],
    /// nested at most [`MAX_NESTING`] deep, calling none of the
    /// [`REFUSED_FUNCTIONS`]. Placeholders (`$model_id`, …) stay in the
    /// plan until [`execute`](Self::execute) fills them.
    ///
    /// Planning runs on a thread of its own with a large stack: a query of
    /// the allowed size is refused for its depth, never crashes the process.
    pub fn plan(&self, sql: &str) -> Result<LogicalPlan> {
        if sql.len() > MAX_QUERY_BYTES {
            return Err(Error::Refused(format!(
                "the query is {} bytes long; the limit is {MAX_QUERY_BYTES} bytes",
                sql.len()
            )));
        }
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("driftwatch-sql-plan".into())
                .stack_size(PLANNING_STACK)
                .spawn_scoped(scope, || self.plan_here(sql))
                .map_err(crate::error::io("starting the SQL planning thread"))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn plan_here(&self, sql: &str) -> Result<LogicalPlan> {
        let mut statements = DFParser::parse_sql(sql)?;
        if statements.len() != 1 {
            return Err(Error::Refused(format!(
                "expected one statement, found {}",
                statements.len()
            )));
        }
        let statement = statements.pop_front().unwrap_or_else(|| unreachable!());
        match &statement {
            DfStatement::Statement(s) if matches!(**s, Statement::Query(_)) => {
                // planning a deep tree costs time quadratic in its depth:
                // refuse it from the syntax tree, before planning
                let mut depth = SyntaxNesting::default();
                if s.visit(&mut depth).is_break() {
                    return Err(too_deep("expressions"));
                }
                if let Statement::Query(q) = &**s
                    && set_nesting(&q.body) > MAX_NESTING
                {
                    return Err(too_deep("set operations (UNION, INTERSECT, EXCEPT)"));
                }
            }
            other => {
                let text = other.to_string();
                let kind: Vec<&str> = text.split_whitespace().take(2).collect();
                return Err(Error::Refused(format!(
                    "only read-only SELECT queries are allowed, not {}",
                    kind.join(" ")
                )));
            }
        }
        let state = self.ctx.state();
        let plan = self
            .waiter
            .block_on(state.statement_to_plan(statement))
            .map_err(|e| {
                let text = e.to_string();
                match REFUSED_FUNCTIONS
                    .iter()
                    .find(|f| text.contains(&format!("function '{f}'")))
                {
                    Some(f) => Error::Refused(format!(
                        "function `{f}` is not allowed: it allocates as much as its arguments ask, outside the memory limit"
                    )),
                    // a table not found: say which there are
                    None if text.contains("not found") && text.contains("table '") => {
                        Error::Refused(format!(
                            "{}; the tables are: {}",
                            text.trim_start_matches("Error during planning: ")
                                .replace("datafusion.public.", ""),
                            self.table_names().join(", ")
                        ))
                    }
                    None => Error::from(e),
                }
            })?;
        datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)?;
        check_nesting(&plan)?;
        Ok(plan)
    }

    /// Analyses and optimises `plan` (from [`plan`](Self::plan)) once, its
    /// placeholders unbound. `types` gives the type each named placeholder
    /// will be bound with (`window_end` → a timestamp): a placeholder's
    /// type guessed from its place in the query (`$window_end - INTERVAL
    /// '1 day'` guesses an interval) is replaced with it, as the values
    /// bound at each run would replace it. Fails when the optimised plan
    /// holds a placeholder without a type, or one placeholder with two
    /// types: such a query is run as planned instead.
    pub fn prepare(
        &self,
        plan: &LogicalPlan,
        types: &HashMap<String, DataType>,
    ) -> Result<Prepared> {
        let typed = plan
            .clone()
            .transform_up_with_subqueries(|node| {
                node.map_expressions(|expr| {
                    expr.transform(|e| match e {
                        Expr::Placeholder(p) => match types.get(p.id.trim_start_matches('$')) {
                            Some(t) => {
                                let field = Field::new(p.id.clone(), t.clone(), true);
                                Ok(Transformed::yes(Expr::Placeholder(Placeholder {
                                    id: p.id,
                                    field: Some(Arc::new(field)),
                                })))
                            }
                            None => Ok(Transformed::no(Expr::Placeholder(p))),
                        },
                        other => Ok(Transformed::no(other)),
                    })
                })?
                .map_data(LogicalPlan::recompute_schema)
            })?
            .data;
        let optimised = self.ctx.state().optimize(&typed)?;
        let mut types: HashMap<String, DataType> = HashMap::new();
        let mut problem = None;
        optimised.apply_with_subqueries(|node| {
            node.apply_expressions(|expr| {
                expr.apply(|e| {
                    if let Expr::Placeholder(p) = e {
                        match p.field.as_ref().map(|f| f.data_type()) {
                            None => problem = Some(format!("{} has no type", p.id)),
                            Some(t) => {
                                if types
                                    .insert(p.id.clone(), t.clone())
                                    .is_some_and(|u| u != *t)
                                {
                                    problem = Some(format!("{} has two types", p.id));
                                }
                            }
                        }
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
        match problem {
            Some(p) => Err(Error::Refused(format!("the query cannot be prepared: {p}"))),
            None => Ok(Prepared {
                kept: Arc::new(Kept {
                    schema: Arc::new(optimised.schema().as_arrow().clone()),
                    plan: optimised,
                    types,
                    idle: Mutex::new(Vec::new()),
                }),
            }),
        }
    }

    /// `sql` [planned](Self::plan) and [prepared](Self::prepare) with
    /// `types`, once: the queries the service asks itself again and again
    /// with other values (an alert's evidence at every notification, a
    /// model's windows) are kept by their text, and so is the physical plan
    /// their runs leave behind.
    pub fn prepared(&self, sql: &str, types: &HashMap<String, DataType>) -> Result<Prepared> {
        let mut named: Vec<String> = types.iter().map(|(k, t)| format!("{k}: {t}")).collect();
        named.sort_unstable();
        let key = format!("{sql}\n-- {}", named.join(", "));
        if let Some(p) = self
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        // planned outside the lock: two callers may both plan a new query
        let prepared = self.prepare(&self.plan(sql)?, types)?;
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= KEPT_QUERIES {
            kept.clear();
        }
        kept.insert(key, prepared.clone());
        Ok(prepared)
    }

    /// Plans `plan` with `params` and optimises it, without running it.
    pub fn check(&self, plan: &LogicalPlan, params: Option<ParamValues>) -> Result<()> {
        let plan = match params {
            Some(p) => plan.clone().with_param_values(p)?,
            None => plan.clone(),
        };
        let state = self.ctx.state();
        let optimized = state.optimize(&plan)?;
        self.waiter
            .block_on(state.create_physical_plan(&optimized))?;
        Ok(())
    }

    /// Runs a planned query with `params`, under the limits.
    pub fn execute(&self, plan: &LogicalPlan, params: Option<ParamValues>) -> Result<Rows> {
        self.execute_all(&[Query::Plan(plan, params.as_ref())])
            .pop()
            .unwrap_or_else(|| unreachable!("one query, one result"))
    }

    /// Runs planned queries, one per lane at a time, each under the limits
    /// on its own: its memory, its time from its start, its rows. Returns
    /// their results in order.
    ///
    /// A query that runs out of time is aborted; its task stops at its next
    /// yield, so its lane may stay busy a while: the queries left go to the
    /// other lanes.
    pub fn execute_all(&self, queries: &[Query<'_>]) -> Vec<Result<Rows>> {
        let mut results: Vec<Option<Result<Rows>>> = queries.iter().map(|_| None).collect();
        let mut queue = queries
            .iter()
            .enumerate()
            .map(|(i, query)| {
                let plan = match *query {
                    Query::Plan(plan, Some(p)) => plan
                        .clone()
                        .with_param_values(p.clone())
                        .map(Bound::Planned)
                        .map_err(Error::from),
                    Query::Plan(plan, None) => Ok(Bound::Planned(plan.clone())),
                    Query::Prepared(prepared, p) => prepared
                        .values(p)
                        .map(|v| Bound::Prepared(Arc::clone(&prepared.kept), v)),
                };
                (i, plan)
            })
            .peekable();
        let limit = self.limits.timeout;
        self.waiter.block_on(async {
            let mut running = futures::stream::FuturesUnordered::new();
            let mut free = self.lanes.free();
            loop {
                while let Some(&lane) = free.last() {
                    let Some((i, plan)) = queue.next() else {
                        break;
                    };
                    let plan = match plan {
                        Ok(plan) => plan,
                        Err(e) => {
                            results[i] = Some(Err(e));
                            continue;
                        }
                    };
                    free.pop();
                    // the caller gets the answer, or the timeout, on time
                    // even when an operator computes for long stretches
                    // without yielding
                    let task = self.lanes.runtimes[lane].spawn(run(
                        self.states[lane].clone(),
                        plan,
                        self.limits.clone(),
                    ));
                    let abort = task.abort_handle();
                    running.push(async move {
                        let outcome = tokio::time::timeout(limit, task).await;
                        (i, lane, outcome, abort)
                    });
                }
                let Some((i, lane, outcome, abort)) = running.next().await else {
                    break;
                };
                let result = match outcome {
                    Ok(Ok(result)) => {
                        free.push(lane);
                        result
                    }
                    Ok(Err(e)) => {
                        free.push(lane);
                        Err(Error::Data {
                            context: "running a query".into(),
                            message: e.to_string(),
                        })
                    }
                    Err(_) => {
                        abort.abort();
                        self.lanes.aborted(lane, abort);
                        Err(Error::Timeout {
                            limit_ms: limit.as_millis() as u64,
                        })
                    }
                };
                results[i] = Some(result);
                if free.is_empty() && running.is_empty() && queue.peek().is_some() {
                    free = self.lanes.free();
                }
            }
        });
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| unreachable!("every query ran")))
            .collect()
    }

    /// Plans and runs one ad-hoc query.
    pub fn query(&self, sql: &str) -> Result<Rows> {
        let plan = self.plan(sql)?;
        self.execute(&plan, None)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::{Int32Type, Int64Type};

    use super::*;
    use crate::WindowRef;

    fn engine() -> Engine {
        let tables = Tables::new(crate::standard_tables().expect("tables"), None).expect("tables");
        Engine::new(tables, Limits::default()).expect("engine")
    }

    fn count(engine: &Engine, p: &Prepared, window: &WindowRef) -> i64 {
        let params = window.params();
        let (_, batches) = engine
            .execute_all(&[Query::Prepared(p, &params)])
            .pop()
            .expect("one result")
            .expect("runs");
        let n = batches[0].column(0).as_primitive::<Int64Type>();
        assert_eq!(n.len(), 1);
        n.value(0)
    }

    /// Regression (issue 41, item 14): a missing table was named without
    /// the tables there are.
    #[test]
    fn a_missing_table_is_named_with_the_tables_there_are() {
        let err = engine()
            .query("SELECT * FROM windows")
            .expect_err("no such table");
        let text = err.to_string();
        assert!(text.contains("table 'windows' not found"), "{text}");
        assert!(
            text.contains("window_summary") && text.contains("model_metrics_latest"),
            "{text}"
        );
        assert_eq!(text.matches("not found").count(), 1, "{text}");
    }

    /// Issue 41, S3: with `memory_limit = "64MiB"`, `replace` of a
    /// 30,000-byte string by itself reached 1.03 GB, `regexp_replace` 1.86
    /// GB, nested `replace` 6 GB after the timeout's answer, `levenshtein`
    /// computed 30 s past it. Each is refused before it runs.
    #[test]
    fn functions_that_grow_text_are_refused_past_the_bound() {
        let tables = Tables::new(crate::standard_tables().expect("tables"), None).expect("tables");
        let engine = Engine::new(
            tables,
            Limits {
                memory: 64 << 20,
                ..Limits::default()
            },
        )
        .expect("engine");
        let a = "a".repeat(30_000);
        let started = Instant::now();
        for (call, name) in [
            ("length(replace(s, 'a', s))", "replace"),
            ("length(regexp_replace(s, 'a', s, 'g'))", "regexp_replace"),
            ("length(replace(replace(s, 'a', t), 'a', t))", "replace"),
            ("levenshtein(s, s)", "levenshtein"),
            (
                "length(concat(replace(s, 'a', t), replace(s, 'a', t)))",
                "concat",
            ),
        ] {
            let t = "a".repeat(300);
            let sql = format!("SELECT {call} FROM (SELECT '{a}' AS s, '{t}' AS t)");
            let err = engine.query(&sql).expect_err(call);
            assert!(
                err.to_string().contains(&format!("{name}() could make")),
                "{call}: {err}"
            );
        }
        // what stays under the bound runs as the built-in does
        let (_, rows) = engine
            .query(&format!(
                "SELECT length(replace(s, 'a', 'bb')) AS n FROM (SELECT '{a}' AS s)"
            ))
            .expect("under the bound");
        assert_eq!(
            rows[0].column(0).as_primitive::<Int32Type>().value(0),
            60_000
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_query_asked_again_is_prepared_once_and_sees_the_rows_of_each_run() {
        let engine = engine();
        let sql = "SELECT count(*) AS n FROM feature_drift \
                   WHERE model_id = $model_id AND window_end = $window_end";
        let types = WindowRef::param_types();
        let first = engine.prepared(sql, &types).expect("prepared");
        let window = WindowRef {
            model_id: "churn".into(),
            model_version: None,
            start: 1_795_687_200_000, // 2026-11-26T10:00:00Z
            end: 1_795_690_800_000,
        };
        assert_eq!(count(&engine, &first, &window), 0);
        let rows: Vec<serde_json::Value> = (0..3)
            .map(|i| {
                serde_json::json!({
                    "model_id": "churn", "model_version": "v1",
                    "window_start": "2026-11-26T10:00:00Z", "window_end": "2026-11-26T11:00:00Z",
                    "feature": format!("f{i}"), "kind": "numeric", "count": 10,
                    "reference_count": 10, "psi": 0.1, "level": "ok",
                })
            })
            .collect();
        let batch = crate::testing::table_rows("feature_drift", &rows).expect("rows");
        engine.tables().push("feature_drift", &batch).expect("push");
        let again = engine.prepared(sql, &types).expect("prepared");
        assert!(Arc::ptr_eq(&first.kept, &again.kept), "prepared again");
        assert_eq!(count(&engine, &again, &window), 3);
        let other = WindowRef {
            model_id: "fraud".into(),
            ..window
        };
        assert_eq!(count(&engine, &again, &other), 0);
        // other placeholder types: another query
        let mut types_b = types.clone();
        types_b.insert("model_id".into(), DataType::LargeUtf8);
        let typed = engine.prepared(sql, &types_b).expect("prepared");
        assert!(!Arc::ptr_eq(&first.kept, &typed.kept));
    }

    #[test]
    fn the_queries_kept_are_bounded() {
        let engine = engine();
        let types = WindowRef::param_types();
        for i in 0..=KEPT_QUERIES {
            engine
                .prepared(&format!("SELECT {i} AS n"), &types)
                .expect("prepared");
            let kept = engine.kept.lock().expect("lock").len();
            assert!(kept <= KEPT_QUERIES, "{kept} kept");
        }
        assert_eq!(engine.kept.lock().expect("lock").len(), 1);
    }
}
