//! The tables a query sees. Each is one logical table made of two parts: the
//! live rows (closed windows not yet flushed to the history, in memory) and
//! the history (Parquet files). A scan reads both; filters on `model_id`
//! and on the table's time column skip other models' and other days'
//! history directories without opening them, and the live batches that
//! cannot hold a matching row.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::coop::cooperative;
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions, SchedulingType,
};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

use crate::cache::FileCache;
use crate::error::{Error, Result};
use crate::history::{History, Staged, WriteJob, decode_partition};

/// A table's name, schema and the columns the history partitions it by.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Table name.
    pub name: String,
    /// Columns, as queries see them.
    pub schema: SchemaRef,
    /// Index of the `model_id` column.
    pub model_column: usize,
    /// Index of the timestamp column that dates a row for the history's
    /// `date=` partitions (`window_end`, `detected_at`, …).
    pub time_column: usize,
    /// Raw rows (`events`): many and large, read by ad-hoc queries now and
    /// then rather than by the rules at every window close, and expired by
    /// whole days. The history does not put them in the file cache when it
    /// writes them (they would push the window tables out), and compacts
    /// their days only once they hold [`COMPACT_FILES`](crate::history::COMPACT_FILES)
    /// files, the newest day or not (a day is mostly expired before it is
    /// read).
    pub raw: bool,
    /// How the live rows and history files hold the rows.
    pub layout: Layout,
}

/// How a table's rows are held in memory and in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// In the table's schema.
    Table,
    /// As [`EventRows`](crate::events::EventRows) stores events: a batch per
    /// model and version, a column per feature; a scan turns them into the
    /// table's schema ([`as_queried`](crate::events::as_queried)).
    Events,
}

impl TableDef {
    /// A table with `schema`: it needs a `model_id` string column and a
    /// millisecond timestamp column, the first of `window_end`,
    /// `detected_at`, `event_time`, `time` that exists. Rules compare that
    /// column with the window evaluated, and the history prunes its date
    /// directories with those comparisons.
    pub fn new(name: &str, schema: SchemaRef) -> Result<Self> {
        let bad = |message: String| Error::Data {
            context: format!("table {name}"),
            message,
        };
        let model_column = schema
            .index_of("model_id")
            .map_err(|_| bad("no model_id column".into()))?;
        let time_column = ["window_end", "detected_at", "event_time", "time"]
            .iter()
            .find_map(|c| schema.index_of(c).ok())
            .ok_or_else(|| bad("no window_end, detected_at, event_time or time column".into()))?;
        if !matches!(
            schema.field(time_column).data_type(),
            DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, _)
        ) {
            return Err(bad(format!(
                "column {} is not a millisecond timestamp",
                schema.field(time_column).name()
            )));
        }
        Ok(TableDef {
            name: name.to_owned(),
            schema,
            model_column,
            time_column,
            raw: name == "events",
            layout: if name == "events" {
                Layout::Events
            } else {
                Layout::Table
            },
        })
    }
}

/// One logical table: live rows and history.
pub struct WindowTable {
    def: TableDef,
    live: RwLock<Vec<LiveBatch>>,
    /// The number of the next live batch.
    next_id: std::sync::atomic::AtomicU64,
    /// `history/<table>`, when the table has a history.
    history: Option<PathBuf>,
    cache: Arc<FileCache>,
    /// Tables of other sessions whose live rows are part of this one's
    /// (the process-wide tables over every pipeline: [`Tables::join`]).
    members: RwLock<Vec<Weak<WindowTable>>>,
    /// Held for reading by a scan of a table with members, for writing
    /// while a member's flush moves rows from memory to the history: a scan
    /// sees each row once, live or in a file.
    gate: Option<Gate>,
    /// The table itself, for the scans it plans ([`LiveScan`]).
    me: Weak<WindowTable>,
}

/// Held while rows move between memory and the history files; see
/// [`Tables::join`].
type Gate = Arc<RwLock<()>>;

impl fmt::Debug for WindowTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowTable")
            .field("name", &self.def.name)
            .field("history", &self.history)
            .finish()
    }
}

impl WindowTable {
    /// A table with live rows only, or live rows and the history under
    /// `history_dir/<name>`.
    pub fn new(def: TableDef, history_dir: Option<&Path>) -> Result<Arc<Self>> {
        Self::with_gate(def, history_dir, None)
    }

    fn with_gate(
        def: TableDef,
        history_dir: Option<&Path>,
        gate: Option<Gate>,
    ) -> Result<Arc<Self>> {
        let history = match history_dir {
            Some(dir) => {
                let dir = dir.join(&def.name);
                std::fs::create_dir_all(&dir)
                    .map_err(crate::error::io(format!("creating {}", dir.display())))?;
                Some(dir)
            }
            None => None,
        };
        Ok(Arc::new_cyclic(|me| WindowTable {
            def,
            live: RwLock::new(Vec::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
            history,
            cache: FileCache::shared(),
            members: RwLock::new(Vec::new()),
            gate,
            me: me.clone(),
        }))
    }

    /// The table's definition.
    pub fn def(&self) -> &TableDef {
        &self.def
    }

    /// Adds rows (of the table's schema, or stored events of an
    /// [`Layout::Events`] table) to the live part.
    pub fn push(&self, batch: RecordBatch) -> Result<()> {
        let fits = match self.def.layout {
            Layout::Table => batch.schema().fields() == self.def.schema.fields(),
            Layout::Events => crate::events::is_stored(&batch.schema()),
        };
        if !fits {
            return Err(Error::Data {
                context: format!("rows for table {}", self.def.name),
                message: format!(
                    "schema {:?} is not the table's {:?}",
                    batch.schema(),
                    self.def.schema
                ),
            });
        }
        if batch.num_rows() > 0 {
            let id = self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let live = LiveBatch::new(&self.def, batch, id);
            self.live
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(live);
        }
        Ok(())
    }

    /// A copy of the live rows, the number of the last batch among them,
    /// and the bytes they hold.
    fn live_through(&self) -> (Vec<RecordBatch>, Option<u64>, usize) {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        (
            live.iter().map(|l| l.batch.clone()).collect(),
            live.last().map(|l| l.id),
            live.iter().map(|l| l.bytes).sum(),
        )
    }

    /// Drops the live batches numbered up to `id` (they are in the history
    /// now); those pushed since stay.
    fn drop_live_through(&self, id: u64) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        live.retain(|l| l.id > id);
    }

    /// Drops the live rows whose time is before `ms` (or null): rows past
    /// their retention, not worth writing to the history. Returns how many
    /// went.
    pub fn drop_live_before(&self, ms: i64) -> Result<usize> {
        use arrow::array::BooleanArray;
        use arrow::datatypes::TimestampMillisecondType;
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        let mut dropped = 0;
        let mut kept = Vec::with_capacity(live.len());
        // the live rows are replaced only once every batch is done: an
        // error leaves them as they were
        for l in live.iter() {
            match l.span {
                Some((min, _)) if min >= ms => kept.push(l.clone()),
                Some((_, max)) if max >= ms => {
                    let time = l
                        .batch
                        .column(self.def.time_column)
                        .as_primitive::<TimestampMillisecondType>();
                    let keep: BooleanArray = time
                        .iter()
                        .map(|t| Some(t.is_some_and(|t| t >= ms)))
                        .collect();
                    let batch =
                        arrow::compute::filter_record_batch(&l.batch, &keep).map_err(|e| {
                            Error::Data {
                                context: format!("dropping old rows of table {}", self.def.name),
                                message: e.to_string(),
                            }
                        })?;
                    dropped += l.batch.num_rows() - batch.num_rows();
                    kept.push(LiveBatch::new(&self.def, batch, l.id));
                }
                _ => dropped += l.batch.num_rows(),
            }
        }
        *live = kept;
        Ok(dropped)
    }

    /// Live rows held.
    pub fn live_rows(&self) -> usize {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| l.batch.num_rows())
            .sum()
    }

    /// Bytes the live rows hold.
    pub fn live_bytes(&self) -> usize {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| l.bytes)
            .sum()
    }
}

/// A live batch with what pruning needs: its models and the span of its
/// time column.
#[derive(Debug, Clone)]
struct LiveBatch {
    batch: RecordBatch,
    /// Numbers the table's batches in the order they came; a batch cut down
    /// by [`WindowTable::drop_live_before`] keeps its number.
    id: u64,
    /// The distinct models of the batch; `None` when there are more than
    /// [`LIVE_MODELS`] (or the column is not a plain string column).
    models: Option<Vec<String>>,
    /// The smallest and largest time; `None` when every time is null.
    span: Option<(i64, i64)>,
    /// Bytes the batch's arrays hold.
    bytes: usize,
}

/// Models a [`LiveBatch`] lists before it stops counting.
const LIVE_MODELS: usize = 16;

impl LiveBatch {
    fn new(def: &TableDef, batch: RecordBatch, id: u64) -> Self {
        use arrow::datatypes::TimestampMillisecondType;
        let models = batch
            .column(def.model_column)
            .as_string_opt::<i32>()
            .and_then(|column| {
                let mut models: Vec<String> = Vec::new();
                for m in column.iter().flatten() {
                    if !models.iter().any(|known| known == m) {
                        if models.len() == LIVE_MODELS {
                            return None;
                        }
                        models.push(m.to_owned());
                    }
                }
                Some(models)
            });
        // the definition checked that the time column is in milliseconds
        let span = batch
            .column(def.time_column)
            .as_primitive_opt::<TimestampMillisecondType>()
            .and_then(|t| Some((arrow::compute::min(t)?, arrow::compute::max(t)?)));
        LiveBatch {
            bytes: batch.get_array_memory_size(),
            id,
            batch,
            models,
            span,
        }
    }
}

/// What a scan's filters allow: some models, a span of the time column
/// (inclusive bounds). Rows outside cannot match, so the parts that hold
/// only such rows are skipped; the filters still run over what is read.
#[derive(Debug, Default, PartialEq)]
struct ScanBounds {
    models: Option<Vec<String>>,
    from: Option<i64>,
    to: Option<i64>,
    /// The days of `from` and `to` (`YYYY-MM-DD`), for the history's directories.
    days: (Option<String>, Option<String>),
}

impl ScanBounds {
    fn new(filters: &[Expr], time: &str) -> Self {
        let mut bounds = ScanBounds {
            models: filters.iter().find_map(model_filter),
            ..ScanBounds::default()
        };
        for (lo, hi) in filters.iter().filter_map(|f| time_range(f, time)) {
            if let Some(lo) = lo {
                bounds.from = Some(bounds.from.map_or(lo, |f| f.max(lo)));
            }
            if let Some(hi) = hi {
                bounds.to = Some(bounds.to.map_or(hi, |t| t.min(hi)));
            }
        }
        bounds.days = (
            bounds.from.map(crate::history::date_of),
            bounds.to.map(crate::history::date_of),
        );
        bounds
    }

    /// Whether a history day directory (`YYYY-MM-DD`) can hold matching rows.
    fn allows_day(&self, date: &str) -> bool {
        let (from, to) = &self.days;
        !(from.as_deref().is_some_and(|f| date < f) || to.as_deref().is_some_and(|t| date > t))
    }

    /// Whether a live batch can hold matching rows.
    fn allows(&self, live: &LiveBatch) -> bool {
        if let (Some(wanted), Some(held)) = (&self.models, &live.models)
            && !held.iter().any(|m| wanted.contains(m))
        {
            return false;
        }
        if self.from.is_none() && self.to.is_none() {
            return true;
        }
        // a null time matches no comparison
        live.span.is_some_and(|(min, max)| {
            self.from.is_none_or(|f| max >= f) && self.to.is_none_or(|t| min <= t)
        })
    }
}

#[async_trait::async_trait]
impl TableProvider for WindowTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.def.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // the history prunes with them; rows are filtered again above the scan
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let table = self.me.upgrade().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal(format!(
                "table {} dropped while planned",
                self.def.name
            ))
        })?;
        Ok(Arc::new(LiveScan::new(table, projection, filters)?))
    }
}

impl WindowTable {
    /// The rows a scan within `bounds` reads now: live rows (this table's
    /// and its members') and history files. What it holds of the history
    /// is checked against `pool` (the query's memory limit): a query that
    /// would load more fails instead of growing the process.
    fn read(
        &self,
        bounds: &ScanBounds,
        pool: &Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
    ) -> datafusion::error::Result<Vec<RecordBatch>> {
        // no member moves rows to the history while they are read
        let _gate = self
            .gate
            .as_ref()
            .map(|g| g.read().unwrap_or_else(|e| e.into_inner()));
        let mut batches: Vec<RecordBatch> = Vec::new();
        let members: Vec<Arc<WindowTable>> = self
            .members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for table in std::iter::once(self).chain(members.iter().map(Arc::as_ref)) {
            batches.extend(
                table
                    .live
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .filter(|l| bounds.allows(l))
                    .map(|l| l.batch.clone()),
            );
        }
        if let Some(dir) = &self.history {
            // the history is read on the query runtime's workers: a few
            // small files, most of them from the cache
            let external = |e: Error| datafusion::error::DataFusionError::External(Box::new(e));
            let reservation = datafusion::execution::memory_pool::MemoryConsumer::new(format!(
                "{} history",
                self.def.name
            ))
            .register(pool);
            for file in self.history_files(dir, bounds).map_err(external)? {
                let rows = self
                    .cache
                    .get(&file, |p| self.read_file(p))
                    .map_err(external)?;
                let before = batches.len();
                match &bounds.models {
                    // a file's rows are sorted by model: the models asked
                    // for are slices of it, found by binary search
                    Some(models) => {
                        for batch in rows.iter() {
                            batches.extend(model_slices(batch, self.def.model_column, models));
                        }
                    }
                    None => batches.extend(rows.iter().cloned()),
                }
                if batches.len() > before {
                    // a slice holds its whole file in memory
                    reservation.try_grow(rows.iter().map(|b| b.get_array_memory_size()).sum())?;
                }
            }
        }
        Ok(batches)
    }
}

/// A scan of a [`WindowTable`] that reads the rows when it runs, not when
/// it is planned: a rule's physical plan is kept and run at every window
/// ([`crate::params`]), each time over the rows the table holds then and
/// pruned with the window's values.
#[derive(Debug)]
struct LiveScan {
    table: Arc<WindowTable>,
    /// Columns read, in the table's schema.
    columns: Vec<usize>,
    /// The filters pushed down (rows are filtered again above the scan).
    filters: Vec<Expr>,
    /// To fold the filters with, over the table's schema.
    simplify: datafusion::logical_expr::simplify::SimplifyContext,
    properties: Arc<PlanProperties>,
}

impl LiveScan {
    fn new(
        table: Arc<WindowTable>,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
    ) -> datafusion::error::Result<Self> {
        let schema = &table.def.schema;
        let columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        let projected = Arc::new(schema.project(&columns)?);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
        .with_scheduling_type(SchedulingType::Cooperative);
        let simplify = crate::params::context(Arc::new(datafusion::common::DFSchema::try_from(
            Arc::clone(schema),
        )?));
        Ok(LiveScan {
            columns,
            filters: filters.to_vec(),
            simplify,
            properties: Arc::new(properties),
            table,
        })
    }
}

impl DisplayAs for LiveScan {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LiveScan: table={}", self.table.def.name)
    }
}

impl ExecutionPlan for LiveScan {
    fn name(&self) -> &'static str {
        "LiveScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(datafusion::error::DataFusionError::Internal(
                "a table scan has no children".into(),
            ))
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "a table scan has one partition, not {}",
                partition + 1
            )));
        }
        let def = &self.table.def;
        let resolved: Vec<Expr> = self
            .filters
            .iter()
            .map(|f| crate::params::resolve(f, &self.simplify).unwrap_or_else(|| f.clone()))
            .collect();
        let bounds = ScanBounds::new(&resolved, def.schema.field(def.time_column).name());
        let batches = self.table.read(&bounds, context.memory_pool())?;
        let stream = match def.layout {
            Layout::Table => {
                MemoryStream::try_new(batches, self.schema(), Some(self.columns.clone()))?
            }
            Layout::Events => {
                // the maps of the rows read, built now
                let schema = self.schema();
                let external = |e: Error| datafusion::error::DataFusionError::External(Box::new(e));
                let rows = batches
                    .iter()
                    .map(|b| crate::events::as_queried(b, &schema))
                    .collect::<Result<Vec<_>>>()
                    .map_err(external)?;
                MemoryStream::try_new(rows, schema, None)?
            }
        };
        Ok(Box::pin(cooperative(stream)))
    }
}

impl WindowTable {
    /// The history files that can hold rows within `bounds`: the files of
    /// the days their time span allows (and, in a history written before
    /// files held every model, `model_id=` directories of the models they
    /// name).
    fn history_files(&self, dir: &Path, bounds: &ScanBounds) -> Result<Vec<PathBuf>> {
        // the table's directory is listed once: its days, and the
        // model_id= directories of the older layout with days of their own
        let top = subdirs(dir)?;
        let mut day_parents = Vec::new();
        for sub in &top {
            let Some(model) = partition(sub, "model_id=") else {
                continue;
            };
            let wanted = bounds
                .models
                .as_ref()
                .is_none_or(|m| m.iter().any(|m| *m == decode_partition(model)));
            if wanted {
                day_parents.push(subdirs(sub)?);
            }
        }
        let mut files = Vec::new();
        for day in std::iter::once(top).chain(day_parents).flatten() {
            let Some(date) = partition(&day, "date=") else {
                continue;
            };
            if !bounds.allows_day(date) {
                continue;
            }
            for entry in read_dir(&day)? {
                let path = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".parquet") && !name.starts_with('.') {
                    files.push(path);
                }
            }
        }
        Ok(files)
    }

    /// A history file's rows in the table's schema: columns matched by
    /// name (a column the file lacks, as in files of an older version, is
    /// null); in a file of the older layout without a `model_id` column,
    /// the model from its directory's name.
    fn read_file(&self, path: &Path) -> Result<Vec<RecordBatch>> {
        let (file_schema, batches) = crate::cache::read_parquet(path)?;
        if self.def.layout == Layout::Events && crate::events::has_leading(&file_schema) {
            // stored events, rows in the table's form, or both: turned
            // into the table's schema when a scan reads them
            return Ok(batches);
        }
        let model = if file_schema.index_of("model_id").is_ok() {
            None
        } else {
            let model = path
                .parent()
                .and_then(Path::parent)
                .and_then(|p| partition(p, "model_id="))
                .map(decode_partition)
                .ok_or_else(|| Error::Data {
                    context: format!("reading {}", path.display()),
                    message: "no model_id column, and not under a model_id= directory".into(),
                })?;
            Some(model)
        };
        let bad = |message: String| Error::Data {
            context: format!("reading {}", path.display()),
            message,
        };
        batches
            .iter()
            .map(|b| {
                let columns =
                    self.def
                        .schema
                        .fields()
                        .iter()
                        .enumerate()
                        .map(|(i, field)| {
                            if let Some(model) = model.as_deref()
                                && i == self.def.model_column
                            {
                                return Ok(Arc::new(StringArray::from(vec![model; b.num_rows()]))
                                    as ArrayRef);
                            }
                            match file_schema.index_of(field.name()) {
                                Ok(c) if b.column(c).data_type() == field.data_type() => {
                                    Ok(Arc::clone(b.column(c)))
                                }
                                Ok(c) => cast(b.column(c), field.data_type())
                                    .map_err(|e| bad(format!("column {}: {e}", field.name()))),
                                Err(_) => Ok(new_null_array(field.data_type(), b.num_rows())),
                            }
                        })
                        .collect::<Result<Vec<_>>>()?;
                RecordBatch::try_new(Arc::clone(&self.def.schema), columns)
                    .map_err(|e| bad(e.to_string()))
            })
            .collect()
    }
}

/// The value of a history directory named `key…` (`date=2026-11-26`,
/// `model_id=churn`), as written.
fn partition<'a>(dir: &'a Path, key: &str) -> Option<&'a str> {
    dir.file_name()?.to_str()?.strip_prefix(key)
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let context = || format!("listing {}", dir.display());
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(crate::error::io(context())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(crate::error::io(context())(e)),
    }
}

/// The rows of `batch` (sorted by its model column) of each of `models`,
/// as zero-copy slices.
fn model_slices(batch: &RecordBatch, model_column: usize, models: &[String]) -> Vec<RecordBatch> {
    let ids = batch.column(model_column).as_string::<i32>();
    let n = ids.len();
    let first_not_below = |m: &str, strict: bool| {
        // the first row whose model is not below m (after m when strict)
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let v = ids.value(mid);
            if v < m || (strict && v == m) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    };
    models
        .iter()
        .filter_map(|m| {
            let (start, end) = (first_not_below(m, false), first_not_below(m, true));
            (end > start).then(|| batch.slice(start, end - start))
        })
        .collect()
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(read_dir(dir)?
        .into_iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect())
}

/// The models a filter restricts a scan to: `model_id = '…'` or
/// `model_id IN ('…', …)`.
fn model_filter(filter: &Expr) -> Option<Vec<String>> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{BinaryExpr, Operator, expr::InList};
    let is_model = |e: &Expr| matches!(e, Expr::Column(c) if c.name == "model_id");
    let text = |e: &Expr| match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(v))
            | ScalarValue::Utf8View(Some(v))
            | ScalarValue::LargeUtf8(Some(v)),
            _,
        ) => Some(v.clone()),
        _ => None,
    };
    match filter {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            if is_model(left) {
                Some(vec![text(right)?])
            } else if is_model(right) {
                Some(vec![text(left)?])
            } else {
                None
            }
        }
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if is_model(expr) => list.iter().map(text).collect(),
        _ => None,
    }
}

/// The span (inclusive bounds, milliseconds) a comparison of the time
/// column with a timestamp (`window_end = …`, `detected_at >= …`) allows.
fn time_range(filter: &Expr, time: &str) -> Option<(Option<i64>, Option<i64>)> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else {
        return None;
    };
    let ms = |e: &Expr| match e {
        Expr::Literal(ScalarValue::TimestampMillisecond(Some(v), _), _) => Some(*v),
        _ => None,
    };
    let is_time = |e: &Expr| matches!(e, Expr::Column(c) if c.name == time);
    let (op, value) = if is_time(left) {
        (*op, ms(right)?)
    } else if is_time(right) {
        (op.swap()?, ms(left)?)
    } else {
        return None;
    };
    // `<` and `>` keep their bound: a looser span only reads more
    match op {
        Operator::Eq => Some((Some(value), Some(value))),
        Operator::Lt | Operator::LtEq => Some((None, Some(value))),
        Operator::Gt | Operator::GtEq => Some((Some(value), None)),
        _ => None,
    }
}

/// Every table of a session, by name.
#[derive(Debug, Default, Clone)]
pub struct Tables {
    tables: BTreeMap<String, Arc<WindowTable>>,
    /// The gate of the process-wide tables this session's live rows are
    /// part of ([`Tables::join`]).
    gate: Option<Gate>,
}

impl Tables {
    /// Tables of `defs`, with their history under `history_dir` when given.
    pub fn new(defs: Vec<TableDef>, history_dir: Option<&std::path::Path>) -> Result<Self> {
        let mut tables = BTreeMap::new();
        for def in defs {
            let name = def.name.clone();
            tables.insert(name, WindowTable::new(def, history_dir)?);
        }
        Ok(Tables { tables, gate: None })
    }

    /// Tables of `defs` over the history under `history_dir` whose live
    /// rows are those of the sessions that [`join`](Self::join) them: one
    /// view of every pipeline of the process.
    pub fn process(defs: Vec<TableDef>, history_dir: Option<&std::path::Path>) -> Result<Self> {
        let gate = Gate::default();
        let mut tables = BTreeMap::new();
        for def in defs {
            let name = def.name.clone();
            let table = WindowTable::with_gate(def, history_dir, Some(Arc::clone(&gate)))?;
            tables.insert(name, table);
        }
        Ok(Tables {
            tables,
            gate: Some(gate),
        })
    }

    /// Makes `member`'s live rows part of these [`process`](Self::process)
    /// tables, table by table (by name), for as long as `member` lives;
    /// its flushes then wait for scans of these tables to read. Fails for
    /// tables that are not a process's.
    pub fn join(&self, member: &mut Tables) -> Result<()> {
        let Some(gate) = &self.gate else {
            return Err(Error::Data {
                context: "joining tables".into(),
                message: "only the process-wide tables take members".into(),
            });
        };
        member.gate = Some(Arc::clone(gate));
        for (name, table) in &self.tables {
            if let Some(m) = member.tables.get(name) {
                let mut members = table.members.write().unwrap_or_else(|e| e.into_inner());
                members.retain(|w| w.strong_count() > 0);
                members.push(Arc::downgrade(m));
            }
        }
        Ok(())
    }

    /// A table by name.
    pub fn get(&self, name: &str) -> Option<&Arc<WindowTable>> {
        self.tables.get(name)
    }

    /// All tables.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<WindowTable>)> {
        self.tables.iter()
    }

    /// Adds rows to table `name`'s live part; rows of tables the session
    /// does not hold are ignored.
    pub fn push(&self, name: &str, batch: &RecordBatch) -> Result<()> {
        match self.tables.get(name) {
            Some(t) => t.push(batch.clone()),
            None => Ok(()),
        }
    }

    /// Moves every live row to the history; returns the flush's sequence.
    /// The rows leave memory only once their files are written.
    /// [`begin_flush`](Self::begin_flush), [`FlushJob::run`] and
    /// [`publish_flush`](Self::publish_flush) in one.
    pub fn flush(&self, history: &mut History) -> Result<u64> {
        match self.begin_flush(history) {
            Some(job) => self.publish_flush(history, job.run()?),
            None => Ok(history.seq()),
        }
    }

    /// The live rows as the next flush of `history`, to be written by
    /// [`FlushJob::run`] on any thread; `None` when there are none. Queries
    /// keep seeing them live until [`publish_flush`](Self::publish_flush)
    /// puts the files in place and drops them from memory at once. One flush
    /// at a time: rows pushed meanwhile go with the next.
    pub fn begin_flush(&self, history: &mut History) -> Option<FlushJob> {
        let mut taken = Vec::new();
        let mut bytes = 0;
        let rows: Vec<(&TableDef, Vec<RecordBatch>)> = self
            .tables
            .iter()
            .map(|(name, t)| {
                let (batches, last, held) = t.live_through();
                if let Some(last) = last {
                    taken.push((name.clone(), last));
                }
                bytes += held;
                (t.def(), batches)
            })
            .collect();
        let job = history.begin_write(&rows)?;
        Some(FlushJob { job, taken, bytes })
    }

    /// Puts a flush's files in place and drops its rows from memory;
    /// returns the flush's sequence.
    pub fn publish_flush(&self, history: &mut History, staged: StagedFlush) -> Result<u64> {
        // scans of the process-wide tables see the rows live or in their
        // files, never both or neither
        let _gate = self
            .gate
            .as_ref()
            .map(|g| g.write().unwrap_or_else(|e| e.into_inner()));
        history.publish(staged.staged)?;
        for (name, last) in staged.taken {
            if let Some(t) = self.tables.get(&name) {
                t.drop_live_through(last);
            }
        }
        Ok(history.seq())
    }

    /// Puts a compaction's merged files in place and removes their inputs
    /// ([`History::publish`]), while no scan of the process-wide tables
    /// reads: none sees the rows twice.
    pub fn publish_compaction(
        &self,
        history: &mut History,
        staged: Staged,
    ) -> Result<crate::history::Compaction> {
        let _gate = self
            .gate
            .as_ref()
            .map(|g| g.write().unwrap_or_else(|e| e.into_inner()));
        history.publish(staged)
    }

    /// Drops the live rows of table `name` dated before `ms`; see
    /// [`WindowTable::drop_live_before`].
    pub fn drop_live_before(&self, name: &str, ms: i64) -> Result<usize> {
        match self.tables.get(name) {
            Some(t) => t.drop_live_before(ms),
            None => Ok(0),
        }
    }

    /// Drops every live row (a session without a history).
    pub fn clear_live(&self) {
        for t in self.tables.values() {
            t.drop_live_through(u64::MAX);
        }
    }

    /// Rows held in memory across the tables.
    pub fn live_rows(&self) -> usize {
        self.tables.values().map(|t| t.live_rows()).sum()
    }

    /// Bytes the live rows hold across the tables.
    pub fn live_bytes(&self) -> usize {
        self.tables.values().map(|t| t.live_bytes()).sum()
    }
}

/// Live rows on their way to the history ([`Tables::begin_flush`]).
#[derive(Debug)]
pub struct FlushJob {
    job: WriteJob,
    /// Each table's last batch taken.
    taken: Vec<(String, u64)>,
    bytes: usize,
}

/// A [`FlushJob`] written, for [`Tables::publish_flush`].
#[derive(Debug)]
pub struct StagedFlush {
    staged: Staged,
    taken: Vec<(String, u64)>,
}

impl FlushJob {
    /// Bytes of live rows it takes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Writes the files (not yet in place).
    pub fn run(self) -> Result<StagedFlush> {
        Ok(StagedFlush {
            staged: self.job.run()?,
            taken: self.taken,
        })
    }
}

/// Every table of driftwatch with its schema: the window components'
/// (`window_summary`, `feature_summary`, `feature_drift`, `data_quality`,
/// `drift_summary`), the label join's (`model_metrics`, `change_points`,
/// `label_stats`), `events`, `rule_errors`, `alerts` and `model_version_log`.
pub fn standard_schemas() -> Vec<(String, SchemaRef)> {
    use driftwatch_detectors::performance::PerformanceTracker;
    use driftwatch_detectors::{WindowSet, WindowSpec, default_components};
    let spec = WindowSpec::tumbling(3_600_000)
        .unwrap_or_else(|_| unreachable!("one hour is a valid window"));
    let mut tables = WindowSet::new(spec, 0, default_components()).tables();
    tables.extend(PerformanceTracker::tables());
    tables.push(("events".into(), crate::events::events_schema()));
    tables.push(("rule_errors".into(), crate::eval::rule_errors_schema()));
    tables.push(("alerts".into(), crate::eval::alerts_schema()));
    tables.push((crate::versions::TABLE.into(), crate::versions::schema()));
    tables
}

/// [`standard_schemas`] as table definitions.
pub fn standard_tables() -> Result<Vec<TableDef>> {
    standard_schemas()
        .into_iter()
        .map(|(name, schema)| TableDef::new(&name, schema))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMillisecondArray;
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn history_files_of_both_layouts_are_listed_by_day_and_model() {
        let dir = tempfile::tempdir().unwrap();
        let table = WindowTable::new(def(), Some(dir.path())).unwrap();
        let root = dir.path().join("t");
        for file in [
            "date=2026-11-26/w-1-1.parquet",
            "date=2026-11-27/w-2-2.parquet",
            "date=2026-11-26/.w-3-3.parquet.tmp",
            // the older layout: a directory per model, with its days
            "model_id=churn/date=2026-11-26/w-1-1.parquet",
            "model_id=fraud/date=2026-11-26/w-1-1.parquet",
        ] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::File::create(path).unwrap();
        }
        let listed = |bounds: &ScanBounds| {
            let mut files: Vec<String> = table
                .history_files(&root, bounds)
                .unwrap()
                .iter()
                .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
                .collect();
            files.sort();
            files
        };
        let day = Some("2026-11-26".to_owned());
        let churn_that_day = ScanBounds {
            models: Some(vec!["churn".into()]),
            days: (day.clone(), day),
            ..ScanBounds::default()
        };
        assert_eq!(
            listed(&churn_that_day),
            [
                "date=2026-11-26/w-1-1.parquet",
                "model_id=churn/date=2026-11-26/w-1-1.parquet"
            ]
        );
        assert_eq!(listed(&ScanBounds::default()).len(), 4);
    }

    fn def() -> TableDef {
        use arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("model_id", DataType::Utf8, true),
            Field::new(
                "window_end",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        TableDef::new("t", schema).unwrap()
    }

    fn live(models: &[Option<&str>], times: &[Option<i64>]) -> LiveBatch {
        let def = def();
        let batch = RecordBatch::try_new(
            Arc::clone(&def.schema),
            vec![
                Arc::new(StringArray::from(models.to_vec())),
                Arc::new(TimestampMillisecondArray::from(times.to_vec())),
            ],
        )
        .unwrap();
        LiveBatch::new(&def, batch, 0)
    }

    fn at(ms: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(Some(ms), None))
    }

    #[test]
    fn a_live_batch_knows_its_models_and_time_span() {
        let b = live(
            &[Some("a"), None, Some("b"), Some("a")],
            &[Some(30), None, Some(10), Some(20)],
        );
        assert_eq!(b.models, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(b.span, Some((10, 30)));
        let nulls = live(&[None], &[None]);
        assert_eq!(nulls.models, Some(vec![]));
        assert_eq!(nulls.span, None);
        let many: Vec<String> = (0..=LIVE_MODELS).map(|i| format!("m{i}")).collect();
        let many: Vec<Option<&str>> = many.iter().map(|m| Some(m.as_str())).collect();
        assert_eq!(live(&many, &vec![Some(0); many.len()]).models, None);
    }

    #[test]
    fn scan_bounds_keep_every_batch_that_can_hold_a_matching_row() {
        let b = live(&[Some("a"), Some("b")], &[Some(100), Some(200)]);
        let allows = |filters: &[Expr]| ScanBounds::new(filters, "window_end").allows(&b);
        assert!(allows(&[]));
        assert!(allows(&[col("model_id").eq(lit("b"))]));
        assert!(!allows(&[col("model_id").eq(lit("c"))]));
        assert!(allows(&[
            col("model_id").in_list(vec![lit("c"), lit("a")], false)
        ]));
        assert!(allows(&[col("window_end").eq(at(100))]));
        assert!(allows(&[col("window_end").eq(at(150))]));
        assert!(!allows(&[col("window_end").eq(at(99))]));
        assert!(!allows(&[col("window_end").gt(at(201))]));
        assert!(allows(&[col("window_end").gt_eq(at(200))]));
        assert!(!allows(&[at(99).gt_eq(col("window_end"))]));
        assert!(allows(&[col("window_end").lt(at(101))]));
        // both bounds together: the span overlaps, the batch is read
        assert!(allows(&[
            col("window_end").gt(at(120)),
            col("window_end").lt(at(180))
        ]));
        assert!(!allows(&[
            col("window_end").gt(at(201)),
            col("window_end").lt(at(300))
        ]));
        assert!(!allows(&[
            col("window_end").gt(at(300)),
            col("model_id").eq(lit("a"))
        ]));
        // a filter it does not understand prunes nothing
        assert!(allows(&[col("window_end").not_eq(at(100))]));
        // rows with a null time match no time comparison
        let nulls = live(&[Some("a")], &[None]);
        assert!(!ScanBounds::new(&[col("window_end").lt(at(5))], "window_end").allows(&nulls));
        assert!(ScanBounds::new(&[col("model_id").eq(lit("a"))], "window_end").allows(&nulls));
    }

    #[test]
    fn rows_before_a_time_leave_the_live_part() {
        let table = WindowTable::new(def(), None).unwrap();
        for b in [
            live(&[Some("a"), Some("a")], &[Some(1), Some(2)]),
            live(&[Some("a"), Some("b"), None], &[Some(5), Some(15), Some(7)]),
            live(&[Some("b")], &[None]),
            live(&[Some("c")], &[Some(30)]),
        ] {
            table.push(b.batch).unwrap();
        }
        assert_eq!(table.drop_live_before(10).unwrap(), 5);
        assert_eq!(table.live_rows(), 2);
        let live = table.live.read().unwrap();
        assert_eq!(
            live.iter().map(|l| l.span).collect::<Vec<_>>(),
            [Some((15, 15)), Some((30, 30))]
        );
        assert_eq!(live[0].models, Some(vec!["b".to_owned()]));
    }

    #[test]
    fn scan_bounds_pick_history_days() {
        let day = 86_400_000;
        let b = ScanBounds::new(
            &[
                col("window_end").gt_eq(at(day)),
                col("window_end").lt(at(3 * day)),
            ],
            "window_end",
        );
        assert!(!b.allows_day("1970-01-01"));
        assert!(b.allows_day("1970-01-02"));
        assert!(b.allows_day("1970-01-04"));
        assert!(!b.allows_day("1970-01-05"));
    }
}
