//! The DataFusion session: tables, functions, and the limits every query
//! runs under. Only single read-only `SELECT` statements are planned.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
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

/// The runtime every session's queries run on (two workers: this machine
/// class has two cores, and queries run one at a time per pipeline).
fn shared_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("driftwatch-sql")
        .enable_time()
        .build()
        .map_err(crate::error::io("starting the SQL runtime"))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Runs `plan` in `state`, stopping at `limits`' deadline and row limit
/// between batches.
async fn run(
    state: Arc<SessionState>,
    plan: LogicalPlan,
    limits: Limits,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let deadline = Instant::now() + limits.timeout;
    let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
    let physical = state.create_physical_plan(&plan).await?;
    let mut stream = execute_stream(physical, state.task_ctx())?;
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

/// A DataFusion session over [`Tables`].
pub struct Engine {
    ctx: SessionContext,
    /// The session's state once every table, function and view is in it:
    /// queries run in it without copying it.
    state: Arc<SessionState>,
    runtime: &'static tokio::runtime::Runtime,
    tables: Tables,
    limits: Limits,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("tables", &self.tables)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Views defined over the tables, registered with every session.
const VIEWS: &[(&str, &str)] = &[(
    "model_metrics_latest",
    "SELECT * EXCLUDE (latest_rank) FROM (SELECT *, rank() OVER (\
     PARTITION BY model_id, model_version, window_start, window_end \
     ORDER BY revision DESC) AS latest_rank FROM model_metrics) \
     WHERE latest_rank = 1",
)];

/// The table a view reads, for views defined here.
pub fn view_base(view: &str) -> Option<&'static str> {
    (view == "model_metrics_latest").then_some("model_metrics")
}

impl Engine {
    /// A session over `tables` with `limits`.
    pub fn new(tables: Tables, limits: Limits) -> Result<Self> {
        let runtime = shared_runtime()?;
        // no spilling to disk: past the memory limit a query fails
        let env = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory, 1.0)
            .with_disk_manager_builder(
                datafusion::execution::disk_manager::DiskManagerBuilder::default()
                    .with_mode(datafusion::execution::disk_manager::DiskManagerMode::Disabled),
            )
            // the history changes under the session (flushes, compactions,
            // other partitions' writers): list its files at every scan
            .with_object_list_cache_limit(0)
            .build_arc()?;
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .with_information_schema(false)
            // no footer reads while planning: a rule touches a few small
            // files, and the reader prunes them with the filters anyway
            .with_collect_statistics(false);
        let ctx = SessionContext::new_with_config_rt(config, env);
        for (name, table) in tables.iter() {
            ctx.register_table(name.as_str(), Arc::clone(table) as _)?;
        }
        crate::udf::register(&ctx);
        let state = Arc::new(ctx.state());
        let mut engine = Engine {
            ctx,
            state,
            runtime,
            tables,
            limits,
        };
        for (name, sql) in VIEWS {
            if engine.tables.get("model_metrics").is_none() {
                continue;
            }
            let plan = engine.plan(sql)?;
            let view = datafusion::catalog::view::ViewTable::new(plan, Some((*sql).to_owned()));
            engine.ctx.register_table(*name, Arc::new(view))?;
        }
        engine.state = Arc::new(engine.ctx.state());
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
                .filter(|_| self.tables.get("model_metrics").is_some())
                .map(|(n, _)| (*n).to_owned()),
        );
        names
    }

    /// Plans `sql` without running it: it must be one read-only query
    /// (`SELECT`, `WITH … SELECT`, `VALUES`). Placeholders (`$model_id`, …)
    /// stay in the plan until [`execute`](Self::execute) fills them.
    pub fn plan(&self, sql: &str) -> Result<LogicalPlan> {
        let mut statements = DFParser::parse_sql(sql)?;
        if statements.len() != 1 {
            return Err(Error::Refused(format!(
                "expected one statement, found {}",
                statements.len()
            )));
        }
        let statement = statements.pop_front().unwrap_or_else(|| unreachable!());
        match &statement {
            DfStatement::Statement(s) if matches!(**s, Statement::Query(_)) => {}
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
        let plan = self.runtime.block_on(state.statement_to_plan(statement))?;
        datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)?;
        Ok(plan)
    }

    /// Plans `plan` with `params` and optimises it, without running it.
    pub fn check(&self, plan: &LogicalPlan, params: Option<ParamValues>) -> Result<()> {
        let plan = match params {
            Some(p) => plan.clone().with_param_values(p)?,
            None => plan.clone(),
        };
        let state = self.ctx.state();
        let optimized = state.optimize(&plan)?;
        self.runtime
            .block_on(state.create_physical_plan(&optimized))?;
        Ok(())
    }

    /// Runs a planned query with `params`, under the limits.
    pub fn execute(
        &self,
        plan: &LogicalPlan,
        params: Option<ParamValues>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let plan = match params {
            Some(p) => plan.clone().with_param_values(p)?,
            None => plan.clone(),
        };
        let limit = self.limits.timeout;
        // the query runs as a task of its own: the caller gets its answer
        // (or the timeout) on time even when an operator computes for long
        // stretches without yielding; the task is aborted at its next yield
        let task = self
            .runtime
            .spawn(run(Arc::clone(&self.state), plan, self.limits.clone()));
        let abort = task.abort_handle();
        match self
            .runtime
            .block_on(async move { tokio::time::timeout(limit, task).await })
        {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(Error::Data {
                context: "running a query".into(),
                message: e.to_string(),
            }),
            Err(_) => {
                abort.abort();
                Err(Error::Timeout {
                    limit_ms: limit.as_millis() as u64,
                })
            }
        }
    }

    /// Plans and runs one ad-hoc query.
    pub fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let plan = self.plan(sql)?;
        self.execute(&plan, None)
    }
}
