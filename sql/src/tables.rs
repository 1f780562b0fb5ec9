//! The tables a query sees. Each is one logical table made of two parts: the
//! live rows (closed windows not yet flushed to the history, in memory) and
//! the history (Parquet files). A scan reads both; filters on `model_id`
//! skip other models' history directories without opening them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;

use crate::error::{Error, Result};

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
        })
    }

    /// The columns stored in a history file (all but `model_id`, which the
    /// directory holds).
    pub fn file_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.model_column)
            .map(|(_, f)| f.as_ref().clone())
            .collect();
        Arc::new(Schema::new(fields))
    }
}

/// One logical table: live rows and history.
pub struct WindowTable {
    def: TableDef,
    live: RwLock<Vec<RecordBatch>>,
    history: Option<Arc<ListingTable>>,
    /// For each logical column, its index in the history scan's schema
    /// (file columns, then the partition columns `model_id`, `date`).
    history_index: Vec<usize>,
}

impl fmt::Debug for WindowTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowTable")
            .field("name", &self.def.name)
            .field("history", &self.history.is_some())
            .finish()
    }
}

impl WindowTable {
    /// A table with live rows only, or live rows and the history under
    /// `history_dir/<name>`.
    pub fn new(def: TableDef, history_dir: Option<&std::path::Path>) -> Result<Self> {
        let n = def.schema.fields().len();
        // history scan schema: file columns in order, then model_id, date
        let history_index: Vec<usize> = (0..n)
            .map(|i| match i.cmp(&def.model_column) {
                std::cmp::Ordering::Less => i,
                std::cmp::Ordering::Equal => n - 1,
                std::cmp::Ordering::Greater => i - 1,
            })
            .collect();
        let history = match history_dir {
            Some(dir) => {
                let dir = dir.join(&def.name);
                std::fs::create_dir_all(&dir)
                    .map_err(crate::error::io(format!("creating {}", dir.display())))?;
                let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
                let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                    .with_file_extension(".parquet")
                    .with_table_partition_cols(vec![
                        ("model_id".to_owned(), DataType::Utf8),
                        ("date".to_owned(), DataType::Utf8),
                    ]);
                let config = ListingTableConfig::new(url)
                    .with_listing_options(options)
                    .with_schema(def.file_schema());
                Some(Arc::new(ListingTable::try_new(config)?))
            }
            None => None,
        };
        Ok(WindowTable {
            def,
            live: RwLock::new(Vec::new()),
            history,
            history_index,
        })
    }

    /// The table's definition.
    pub fn def(&self) -> &TableDef {
        &self.def
    }

    /// Adds rows (of the table's schema) to the live part.
    pub fn push(&self, batch: RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.def.schema.fields() {
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
            self.live
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(batch);
        }
        Ok(())
    }

    /// A copy of the live rows.
    pub fn live(&self) -> Vec<RecordBatch> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Drops the first `n` live batches (they are in the history now).
    fn drop_live(&self, n: usize) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        let n = n.min(live.len());
        live.drain(..n);
    }

    /// Live rows held.
    pub fn live_rows(&self) -> usize {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(RecordBatch::num_rows)
            .sum()
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
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner()).clone();
        let columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.def.schema.fields().len()).collect(),
        };
        let live_exec = MemorySourceConfig::try_new_exec(
            &[live],
            Arc::clone(&self.def.schema),
            Some(columns.clone()),
        )?;
        let Some(history) = &self.history else {
            return Ok(live_exec);
        };
        let mapped: Vec<usize> = columns.iter().map(|&i| self.history_index[i]).collect();
        let mut filters = filters.to_vec();
        let time = self.def.schema.field(self.def.time_column).name();
        filters.extend(
            filters
                .iter()
                .filter_map(|f| date_filter(f, time))
                .collect::<Vec<_>>(),
        );
        let history_exec = history.scan(state, Some(&mapped), &filters, None).await?;
        UnionExec::try_new(vec![live_exec, history_exec])
    }
}

/// A filter on the `date` partition implied by a comparison of the time
/// column with a timestamp (`window_end = …`, `detected_at >= …`), so that
/// the history lists only the days that can hold matching rows.
fn date_filter(filter: &Expr, time: &str) -> Option<Expr> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{BinaryExpr, Operator};
    use datafusion::prelude::{col, lit};
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
    let day = crate::history::date_of(value);
    let date = col("date");
    match op {
        Operator::Eq => Some(date.eq(lit(day))),
        Operator::Lt | Operator::LtEq => Some(date.lt_eq(lit(day))),
        Operator::Gt | Operator::GtEq => Some(date.gt_eq(lit(day))),
        _ => None,
    }
}

/// Every table of a session, by name.
#[derive(Debug, Default, Clone)]
pub struct Tables {
    tables: BTreeMap<String, Arc<WindowTable>>,
}

impl Tables {
    /// Tables of `defs`, with their history under `history_dir` when given.
    pub fn new(defs: Vec<TableDef>, history_dir: Option<&std::path::Path>) -> Result<Self> {
        let mut tables = BTreeMap::new();
        for def in defs {
            let name = def.name.clone();
            tables.insert(name, Arc::new(WindowTable::new(def, history_dir)?));
        }
        Ok(Tables { tables })
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
    pub fn flush(&self, history: &mut crate::history::History) -> Result<u64> {
        let rows: Vec<(&TableDef, Vec<RecordBatch>)> =
            self.tables.values().map(|t| (t.def(), t.live())).collect();
        let seq = history.write(&rows)?;
        for ((_, batches), table) in rows.iter().zip(self.tables.values()) {
            table.drop_live(batches.len());
        }
        Ok(seq)
    }

    /// Rows held in memory across the tables.
    pub fn live_rows(&self) -> usize {
        self.tables.values().map(|t| t.live_rows()).sum()
    }
}

/// Every table of driftwatch with its schema: the window components'
/// (`window_summary`, `feature_summary`, `feature_drift`, `data_quality`,
/// `drift_summary`), the label join's (`model_metrics`, `change_points`,
/// `label_stats`), `rule_errors` and `alerts`.
pub fn standard_schemas() -> Vec<(String, SchemaRef)> {
    use driftwatch_detectors::performance::PerformanceTracker;
    use driftwatch_detectors::{WindowSet, WindowSpec, default_components};
    let spec = WindowSpec::tumbling(3_600_000)
        .unwrap_or_else(|_| unreachable!("one hour is a valid window"));
    let mut tables = WindowSet::new(spec, 0, default_components()).tables();
    tables.extend(PerformanceTracker::tables());
    tables.push(("rule_errors".into(), crate::eval::rule_errors_schema()));
    tables.push(("alerts".into(), crate::eval::alerts_schema()));
    tables
}

/// [`standard_schemas`] as table definitions.
pub fn standard_tables() -> Result<Vec<TableDef>> {
    standard_schemas()
        .into_iter()
        .map(|(name, schema)| TableDef::new(&name, schema))
        .collect()
}
