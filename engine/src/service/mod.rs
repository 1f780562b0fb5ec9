//! `driftwatch run`: the long-running service and its sources.
//!
//! ```text
//!   Kafka partitions ─► kafka::run ─┐  one Pipeline per partition,
//!   POST /v1/events ──► HttpIngest ─┤  each with its checkpoint
//!                                   ├─► Shared: the process SQL engine,
//!                                   │   the delivery worker, the Status
//!   HTTP API (binary) ◄─────────────┘   the API reads
//! ```
//!
//! Both sources build a partition's pipeline the same way
//! ([`open_pipeline`]): window files, the rule runner joined to the
//! process-wide SQL engine, its outbox attached to the one delivery worker,
//! its state restored from its checkpoint. Each reports its figures and
//! whether it is ready to the [`Status`].

pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use driftwatch_detectors::SharedReferences;
use driftwatch_ingest::DeadLetterSink;
use driftwatch_sql::Engine;
use driftwatch_triggers::Dispatcher;
use tracing::info;

use crate::alerting;
use crate::figures::ModelFigures;
use crate::pipeline::{Pipeline, PipelineState, RunSummary};
use crate::sinks::{Background, WindowFiles};
use crate::{CheckpointDir, Config, Result};

pub use http::{Answer, HttpIngest, LineResult, Submitted};

/// Figures of one source of the service, written to `DATA_DIR/metrics.json`
/// every few seconds and served by the HTTP API.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IngestMetrics {
    /// Records consumed (and applied) by the partitions held now, since
    /// their state began.
    pub consumed: u64,
    /// Of those, accepted.
    pub accepted: u64,
    /// Of those, refused.
    pub rejected: u64,
    /// Refusals by reason code.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Partitions held by this instance.
    pub partitions: Vec<i32>,
    /// Records not yet applied, per `topic/partition` (empty while the
    /// broker does not answer).
    pub lag: BTreeMap<String, i64>,
    /// Seconds since the last checkpoint.
    pub checkpoint_age_seconds: f64,
    /// Seconds the broker has not answered, while it does not.
    pub broker_unreachable_seconds: Option<f64>,
    /// Notification deliveries since the service started (when actions are configured).
    pub deliveries: Option<driftwatch_triggers::DeliveryStats>,
    /// Rule evaluations of the pipelines held now, since they started here.
    pub rule_evaluations: u64,
    /// Of those, failed.
    pub rule_errors: u64,
    /// Seconds between the end of the latest window closed and when it
    /// closed (the largest over the partitions held).
    pub window_close_delay_seconds: Option<f64>,
    /// Seconds spent evaluating rules.
    pub rule_seconds: f64,
    /// Each model's latest figures, from the rows of every partition this
    /// process holds and the history.
    pub models: BTreeMap<String, ModelFigures>,
}

impl IngestMetrics {
    /// The counts of `summary`, the rest left empty.
    pub fn from_summary(summary: &RunSummary) -> Self {
        IngestMetrics {
            consumed: summary.read,
            accepted: summary.accepted,
            rejected: summary.rejected,
            rejected_by_reason: summary.rejected_by_reason.clone(),
            ..IngestMetrics::default()
        }
    }

    /// Adds what `pipeline` reports: its rules thread's figures, its window delay.
    pub(crate) fn add_pipeline(&mut self, pipeline: &Pipeline) {
        if let Some(d) = pipeline.window_close_delay() {
            self.window_close_delay_seconds =
                Some(self.window_close_delay_seconds.map_or(d, |m| m.max(d)));
        }
        if let Some(r) = pipeline.rules() {
            let live = r.live();
            self.rule_evaluations += live.evaluations();
            self.rule_errors += live.errors();
            self.rule_seconds += live.seconds();
        }
    }
}

/// What one source last reported.
#[derive(Debug, Clone, Default)]
pub struct SourceStatus {
    /// State restored and input assigned: the source takes events.
    pub ready: bool,
    /// Its figures.
    pub metrics: IngestMetrics,
}

/// Readiness and figures of every source of the service, for the API.
#[derive(Debug, Default)]
pub struct Status {
    sources: Mutex<BTreeMap<&'static str, SourceStatus>>,
}

impl Status {
    /// Names a source that will report; the service is not ready until it is.
    pub fn register(&self, source: &'static str) {
        self.lock().entry(source).or_default();
    }

    /// What `source` reports now.
    pub fn set(&self, source: &'static str, status: SourceStatus) {
        self.lock().insert(source, status);
    }

    /// Whether every registered source is ready (a service without
    /// sources, serving only the history, is ready at once).
    pub fn ready(&self) -> bool {
        self.lock().values().all(|s| s.ready)
    }

    /// Every source's last report, by name.
    pub fn sources(&self) -> BTreeMap<&'static str, SourceStatus> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, SourceStatus>> {
        self.sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the sources of one process share.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Shared {
    /// The process-wide SQL engine over every pipeline's rows and the history.
    pub queries: Arc<Engine>,
    /// The delivery worker of every pipeline's outbox (when actions are configured).
    pub dispatcher: Option<Arc<Dispatcher>>,
    /// What the API reports.
    pub status: Arc<Status>,
    /// The rules every pipeline runs.
    pub rules: Option<alerting::RuleSource>,
    /// Reference profiles stored while the process runs (uploaded), which
    /// every pipeline's drift detector looks up first.
    pub references: Arc<SharedReferences>,
}

impl Shared {
    /// The process SQL engine and the delivery worker `config` asks for,
    /// a task on `runtime` (the process's); every pipeline runs `rules`.
    pub fn new(
        config: &Config,
        rules: Option<alerting::RuleSource>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self> {
        Ok(Shared {
            queries: Arc::new(alerting::process_engine(config)?),
            dispatcher: alerting::dispatcher(config, Some(runtime))?.map(Arc::new),
            status: Arc::new(Status::default()),
            rules,
            references: Arc::new(SharedReferences::default()),
        })
    }
}

/// A partition's pipeline, opened.
pub(crate) struct Opened {
    pub pipeline: Pipeline,
    /// per topic, the offset of the next record to apply
    pub offsets: BTreeMap<String, i64>,
}

/// Builds the pipeline of `partition` (checkpoints in `checkpoints`, history
/// written as `writer`): window files, rules joined to the process engine
/// with their outbox delivered by the shared worker, state restored from
/// the partition's checkpoint when it has one.
pub(crate) fn open_pipeline(
    settings: &Config,
    shared: &Shared,
    checkpoints: &CheckpointDir<PipelineState>,
    partition: i32,
    writer: &str,
    dead_letter: (Box<dyn DeadLetterSink + Send>, String),
) -> Result<Opened> {
    let mut pipeline = Pipeline::new(
        settings,
        dead_letter.0,
        dead_letter.1,
        // one durable file per window and revision: written off the event thread
        vec![Box::new(Background::start(
            &format!("driftwatch-files-p{partition}"),
            Box::new(WindowFiles::new(settings.data_dir.clone())),
        )?)],
        Some(&checkpoints.pending_store(partition)),
        Some(Arc::clone(&shared.references)),
    )?;
    let mut rules = alerting::runner(
        settings,
        shared.rules.as_ref(),
        writer,
        Some(&shared.queries),
    )?;
    let checkpoint = checkpoints.load(partition)?;
    if checkpoint.is_none() {
        // files of an earlier run without a checkpoint would count twice
        rules.clear_history()?;
    }
    if let Some(d) = &shared.dispatcher {
        // the outbox follows the partition: undelivered notifications left
        // by its last owner go out from here
        alerting::attach(d, &mut rules);
    }
    pipeline.set_rules(rules)?;
    let mut offsets = BTreeMap::new();
    if let Some(checkpoint) = checkpoint {
        pipeline.restore(checkpoint.state)?;
        offsets = checkpoint.offsets;
        info!(writer, ?offsets, "resumed from its checkpoint");
    } else {
        info!(writer, "no checkpoint: starting fresh");
    }
    Ok(Opened { pipeline, offsets })
}

/// Stops delivering the outbox of `pipeline` (its partition is released).
pub(crate) fn detach(shared: &Shared, pipeline: &mut Pipeline) {
    if let (Some(d), Some(r)) = (&shared.dispatcher, pipeline.rules_mut())
        && let Some(outbox) = r.outbox()
    {
        d.remove(outbox);
    }
}
