//! `driftwatch run`: the pipeline fed from Kafka, with exactly-once state.
//!
//! State is kept per partition number: the same partition of every consumed
//! topic (predictions and labels are keyed by `model_id` and have the same
//! partition count, so a model's events meet there). Each partition has its
//! own pipeline — decoder, windows and watermark, counters — and its own
//! checkpoint file holding that state together with the offsets it reflects.
//!
//! - A record is applied only if its offset is at or past the partition's
//!   checkpointed offset for its topic; records before it are already in
//!   the state (re-read after a crash between checkpoint and commit).
//! - Checkpoints are written every `checkpoint.events` records or
//!   `checkpoint.interval`, after the dead letters are durable; the offsets
//!   are committed to Kafka only after the checkpoint is.
//! - On revocation a partition is checkpointed, committed and released; on
//!   assignment its checkpoint (written by this or another instance sharing
//!   the data directory) is loaded.
//! - Closed windows are written one file per window, so re-emitting a window
//!   after a restart replaces its file with the same content.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use driftwatch_ingest::kafka::{DeadLetterTopic, record_from_message};
use driftwatch_ingest::{Assignment, DeadLetterFile, DeadLetterSink, Rejected};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{IngestMetrics, Opened, Shared, SourceStatus};
use crate::pipeline::{CHECKPOINT_FORMAT, Pipeline, PipelineState, RunSummary};
use crate::{CheckpointDir, Config, Error, Result};
use driftwatch_sql::Engine;

/// The source's name in the service's status.
pub const SOURCE: &str = "kafka";

fn kafka_error(what: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
    move |e| Error::Kafka {
        what: what.into(),
        message: e.to_string(),
    }
}

fn partition_error(partition: i32, what: &'static str) -> impl FnOnce(Error) -> Error {
    move |source| Error::Partition {
        partition,
        what,
        source: Box::new(source),
    }
}

/// Writes `metrics.json` on a thread of its own: the figures of the models
/// come from a query, which the poll loop does not wait for.
struct Reporter {
    tx: Option<std::sync::mpsc::SyncSender<IngestMetrics>>,
    thread: Option<std::thread::JoinHandle<()>>,
    queries: Arc<Engine>,
    path: std::path::PathBuf,
}

impl Reporter {
    fn start(queries: Arc<Engine>, path: std::path::PathBuf) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<IngestMetrics>(1);
        let (q, p) = (Arc::clone(&queries), path.clone());
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                // a failure is said when it first happens, not every few seconds
                let mut failing = String::new();
                for metrics in rx {
                    match write_metrics(&q, metrics, &p) {
                        Ok(()) => failing.clear(),
                        Err(e) if e.to_string() != failing => {
                            failing = e.to_string();
                            warn!(error = %e, "metrics.json");
                        }
                        Err(_) => {}
                    }
                }
            })
            .map_err(|e| Error::Stopped(format!("starting the metrics thread: {e}")))?;
        Ok(Reporter {
            tx: Some(tx),
            thread: Some(thread),
            queries,
            path,
        })
    }

    /// Hands figures over, unless the last ones are still being written.
    fn report(&self, metrics: IngestMetrics) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(metrics);
        }
    }

    /// Stops the thread, then writes `metrics` here and now.
    fn finish(mut self, metrics: IngestMetrics) -> Result<()> {
        self.stop();
        write_metrics(&self.queries, metrics, &self.path)
    }

    fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_metrics(
    queries: &Engine,
    mut metrics: IngestMetrics,
    path: &std::path::Path,
) -> Result<()> {
    // the ingest figures are written even when the models' cannot be read
    let failed = match crate::figures::model_figures(queries) {
        Ok(models) => {
            metrics.models = models;
            None
        }
        Err(e) => Some(e),
    };
    let json = serde_json::to_vec_pretty(&metrics).map_err(|e| Error::Encode {
        what: "metrics.json",
        message: e.to_string(),
    })?;
    crate::checkpoint::write_atomically(path, &json)?;
    failed.map_or(Ok(()), Err)
}

/// How `run` behaves.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop once every assigned partition has been read to its end: close
    /// all windows, checkpoint, commit, exit (backfills, tests).
    pub exit_at_end: bool,
}

/// One dead-letter sink shared by the partitions' pipelines.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
struct SharedDeadLetter(Arc<Mutex<Box<dyn DeadLetterSink + Send>>>);

impl SharedDeadLetter {
    fn lock(&self) -> driftwatch_ingest::Result<MutexGuard<'_, Box<dyn DeadLetterSink + Send>>> {
        self.0
            .lock()
            .map_err(|_| driftwatch_ingest::Error::Kafka("dead-letter sink poisoned".into()))
    }
}

impl DeadLetterSink for SharedDeadLetter {
    fn send(&mut self, rejected: &Rejected) -> driftwatch_ingest::Result<()> {
        self.lock()?.send(rejected)
    }

    fn flush(&mut self) -> driftwatch_ingest::Result<()> {
        self.lock()?.flush()
    }

    fn try_flush(&mut self, timeout: Duration) -> driftwatch_ingest::Result<bool> {
        self.lock()?.try_flush(timeout)
    }
}

/// How long a checkpoint waits for the dead letters to be acknowledged before
/// it is put off (polling must go on: the group's liveness depends on it).
const DEAD_LETTER_WAIT: Duration = Duration::from_secs(2);

struct Partition {
    pipeline: Pipeline,
    /// per topic, the offset of the next record to apply
    offsets: BTreeMap<String, i64>,
    since_checkpoint: u64,
}

struct State {
    settings: Config,
    checkpoints: CheckpointDir<PipelineState>,
    dead_letter: SharedDeadLetter,
    dead_letter_name: String,
    partitions: BTreeMap<i32, Partition>,
    assigned: BTreeSet<(String, i32)>,
    /// an error inside a rebalance callback, for the poll loop to report
    error: Option<Error>,
    /// partitions assigned (and their state restored) at least once
    rebalanced: bool,
    last_checkpoint: Instant,
    /// the process engine, the delivery worker, the status the API reads
    shared: Shared,
}

impl State {
    fn open_partition(&mut self, partition: i32) -> Result<()> {
        if self.partitions.contains_key(&partition) {
            return Ok(());
        }
        // the history of a partition is written under one name whichever
        // instance holds it; a checkpoint names the last flush it includes
        let writer = format!("{}-p{partition}", self.settings.kafka.group_id);
        let Opened { pipeline, offsets } = super::open_pipeline(
            &self.settings,
            &self.shared,
            &self.checkpoints,
            partition,
            &writer,
            (
                Box::new(self.dead_letter.clone()),
                self.dead_letter_name.clone(),
            ),
        )?;
        self.partitions.insert(
            partition,
            Partition {
                pipeline,
                offsets,
                since_checkpoint: 0,
            },
        );
        Ok(())
    }

    /// Drops a partition's state (it was checkpointed, or goes back to its last checkpoint).
    fn release(&mut self, partition: i32) {
        if let Some(mut p) = self.partitions.remove(&partition) {
            super::detach(&self.shared, &mut p.pipeline);
        }
    }

    /// Whether every dead letter sent so far is durable, waiting at most
    /// `wait` (`None`: as long as it takes).
    fn dead_letters_durable(&mut self, wait: Option<Duration>) -> Result<bool> {
        match wait {
            None => self.dead_letter.flush().map(|()| true),
            Some(t) => self.dead_letter.try_flush(t),
        }
        .map_err(Error::DeadLetter)
    }

    /// Checkpoints `partition` (its dead letters must be durable) and adds
    /// the offsets to commit to `tpl`.
    fn checkpoint(&mut self, partition: i32, tpl: &mut TopicPartitionList) -> Result<()> {
        let Some(p) = self.partitions.get_mut(&partition) else {
            return Ok(());
        };
        self.checkpoints
            .save(partition, &p.offsets, p.pipeline.snapshot()?)?;
        p.pipeline.checkpoint_saved()?;
        p.since_checkpoint = 0;
        for (topic, offset) in &p.offsets {
            tpl.add_partition_offset(topic, partition, Offset::Offset(*offset))
                .map_err(kafka_error("listing offsets to commit"))?;
        }
        Ok(())
    }

    /// Checkpoints every partition held, once the dead letters are durable
    /// (waiting at most `wait`); `None` when they are not yet and the
    /// checkpoint is put off.
    fn checkpoint_all(&mut self, wait: Option<Duration>) -> Result<Option<TopicPartitionList>> {
        if !self.dead_letters_durable(wait)? {
            self.last_checkpoint = Instant::now();
            warn!("dead letters not acknowledged yet; checkpoint put off");
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        for p in partitions {
            self.checkpoint(p, &mut tpl)?;
        }
        self.last_checkpoint = Instant::now();
        Ok(Some(tpl))
    }

    fn due(&self) -> bool {
        let events = self.settings.checkpoint_events;
        self.partitions
            .values()
            .any(|p| p.since_checkpoint >= events)
            || (self.last_checkpoint.elapsed().as_millis() as i64
                >= self.settings.checkpoint_interval_ms
                && self.partitions.values().any(|p| p.since_checkpoint > 0))
    }

    fn metrics(
        &self,
        lag: Option<&BTreeMap<String, i64>>,
        outage: Option<Instant>,
    ) -> IngestMetrics {
        let summary = self.summary();
        let mut metrics = IngestMetrics {
            partitions: self.partitions.keys().copied().collect(),
            lag: lag.cloned().unwrap_or_default(),
            checkpoint_age_seconds: self.last_checkpoint.elapsed().as_secs_f64(),
            broker_unreachable_seconds: outage.map(|t| t.elapsed().as_secs_f64()),
            deliveries: self.shared.dispatcher.as_ref().map(|d| d.stats()),
            ..IngestMetrics::from_summary(&summary)
        };
        for p in self.partitions.values() {
            metrics.add_pipeline(&p.pipeline);
        }
        metrics
    }

    fn summary(&self) -> RunSummary {
        let mut total = RunSummary {
            dead_letter: self.dead_letter_name.clone(),
            ..RunSummary::default()
        };
        for p in self.partitions.values() {
            total.add(p.pipeline.summary());
        }
        total
    }
}

struct Rebalancer {
    state: Arc<Mutex<State>>,
}

impl Rebalancer {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl ClientContext for Rebalancer {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&error, reason);
    }
}

/// The context of the lag probe: its logs as the consumer's.
struct Quiet;

impl ConsumerContext for Quiet {}

impl ClientContext for Quiet {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&error, reason);
    }
}

/// librdkafka's own lines. A broker that cannot be reached is said once per
/// outage by the service ("the broker does not answer"); librdkafka says it
/// at every attempt of every connection, so those lines are debug ones.
fn client_log(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    let connection = matches!(fac, "FAIL" | "BROKERFAIL" | "CONNECT" | "ERROR");
    match level {
        _ if connection => tracing::debug!(target: "librdkafka", fac, "{message}"),
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(target: "librdkafka", fac, "{message}")
        }
        L::Warning => warn!(target: "librdkafka", fac, "{message}"),
        L::Notice | L::Info => info!(target: "librdkafka", fac, "{message}"),
        L::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

fn client_error(error: &KafkaError, reason: &str) {
    use rdkafka::types::RDKafkaErrorCode as C;
    match error {
        // the end of a partition is reported as an error; it is not one
        KafkaError::PartitionEOF(_) | KafkaError::Global(C::PartitionEOF) => {
            tracing::debug!(reason, "end of partition");
        }
        // an outage: said once by the lag probe
        KafkaError::Global(C::BrokerTransportFailure | C::AllBrokersDown | C::Resolve) => {
            tracing::debug!(error = %error, reason, "Kafka transport")
        }
        other => warn!(error = %other, reason, "Kafka client error"),
    }
}

impl ConsumerContext for Rebalancer {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let mut state = self.lock();
        let partitions: BTreeSet<i32> = revoked.elements().iter().map(|e| e.partition()).collect();
        let mut tpl = TopicPartitionList::new();
        let durable = match state.dead_letters_durable(Some(DEAD_LETTER_WAIT)) {
            Ok(durable) => durable,
            Err(e) => {
                state.error.get_or_insert(e);
                return;
            }
        };
        if !durable {
            // exact all the same: the next owner resumes from the last
            // checkpoint; only dead letters may be written twice
            warn!(
                ?partitions,
                "dead letters not acknowledged; partitions released without a new checkpoint"
            );
        }
        for p in &partitions {
            if !durable {
                state.release(*p);
                continue;
            }
            if let Err(e) = state.checkpoint(*p, &mut tpl) {
                state
                    .error
                    .get_or_insert(partition_error(*p, "checkpointing revoked")(e));
                return;
            }
            state.release(*p);
        }
        for e in revoked.elements() {
            state
                .assigned
                .remove(&(e.topic().to_owned(), e.partition()));
        }
        if tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
        {
            // the checkpoint is durable: the next owner skips what it holds
            warn!(error = %e, "committing offsets of revoked partitions failed");
        }
        info!(?partitions, "partitions revoked, checkpointed and released");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut state = self.lock();
        match rebalance {
            Rebalance::Assign(assigned) => {
                for e in assigned.elements() {
                    state.assigned.insert((e.topic().to_owned(), e.partition()));
                    if let Err(err) = state.open_partition(e.partition()) {
                        state
                            .error
                            .get_or_insert(partition_error(e.partition(), "opening")(err));
                    }
                }
                state.rebalanced = true;
                info!(assigned = ?state.assigned, "partitions assigned");
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// Consumes the configured topics until `stop` is cancelled (or, with
/// [`RunOptions::exit_at_end`], until every assigned partition is read).
/// The live rows of the partitions held are part of `queries`' tables
/// ([`crate::alerting::process_engine`]).
pub fn run(
    settings: &Config,
    options: &RunOptions,
    stop: &CancellationToken,
    shared: Shared,
) -> Result<RunSummary> {
    shared.status.register(SOURCE);
    let status = Arc::clone(&shared.status);
    let queries = Arc::clone(&shared.queries);
    let kafka = &settings.kafka;
    let (dead_letter, dead_letter_name): (Box<dyn DeadLetterSink + Send>, String) =
        if kafka.dead_letter_topic.is_empty() {
            let path = settings.data_dir.dead_letter();
            (
                Box::new(DeadLetterFile::open(&path)?),
                path.display().to_string(),
            )
        } else {
            (
                Box::new(DeadLetterTopic::new(kafka)?),
                format!("kafka topic {}", kafka.dead_letter_topic),
            )
        };
    let state = Arc::new(Mutex::new(State {
        settings: settings.clone(),
        checkpoints: CheckpointDir::new(
            settings.data_dir.checkpoints(&kafka.group_id),
            CHECKPOINT_FORMAT,
        ),
        dead_letter: SharedDeadLetter(Arc::new(Mutex::new(dead_letter))),
        dead_letter_name,
        partitions: BTreeMap::new(),
        assigned: BTreeSet::new(),
        error: None,
        rebalanced: false,
        last_checkpoint: Instant::now(),
        shared,
    }));
    let context = Rebalancer {
        state: Arc::clone(&state),
    };
    let consumer: BaseConsumer<Rebalancer> = kafka
        .consumer_config()
        .create_with_context(context)
        .map_err(kafka_error("creating the Kafka consumer"))?;
    let probe: BaseConsumer<Quiet> = kafka
        .probe_config()
        .create_with_context(Quiet)
        .map_err(kafka_error("creating the Kafka probe client"))?;
    let topics: Vec<&str> = kafka.topics.iter().map(String::as_str).collect();
    match kafka.assignment {
        Assignment::Group => consumer
            .subscribe(&topics)
            .map_err(kafka_error(format!("subscribing to {topics:?}")))?,
        Assignment::All => {
            let partitions = topic_partitions(&probe, &topics)?;
            assign_all(&consumer, &mut lock(&state), &partitions)?
        }
    }
    info!(brokers = %kafka.brokers, group = %kafka.group_id, assignment = ?kafka.assignment, ?topics, "consuming");
    let names: HashMap<String, Arc<str>> = kafka
        .topics
        .iter()
        .map(|t| (t.clone(), Arc::from(t.as_str())))
        .collect();
    let mut check_end = false;
    let mut said_ready = false;
    let mut outage: Option<Instant> = None;
    let mut last_probe = Instant::now();
    let mut last_report = Instant::now();
    let reporter = Reporter::start(queries, settings.data_dir.metrics())?;
    loop {
        // stopped (SIGTERM / SIGINT): checkpoint, commit and leave the group
        if stop.is_cancelled() {
            let mut state = lock(&state);
            let tpl = state.checkpoint_all(Some(Duration::from_secs(10)))?;
            let summary = state.summary();
            drop(state);
            match tpl {
                Some(tpl) => {
                    commit(&consumer, &tpl, CommitMode::Sync);
                    info!("stopped by a signal; state checkpointed");
                }
                None => warn!(
                    "stopped by a signal; the dead-letter topic is not reachable, so the last checkpoint stands"
                ),
            }
            return Ok(summary);
        }
        match consumer.poll(Duration::from_millis(250)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => check_end = true,
            // transport errors: librdkafka reconnects by itself (the outage
            // is reported by the lag probe below); poll waits, no spinning
            Some(Err(e)) => tracing::debug!(error = %e, "Kafka error"),
            Some(Ok(message)) => {
                let mut state = lock(&state);
                let topic = names
                    .get(message.topic())
                    .cloned()
                    .unwrap_or_else(|| Arc::from(message.topic()));
                let Some(p) = state.partitions.get_mut(&message.partition()) else {
                    warn!(topic = %topic, partition = message.partition(), "message of a partition not assigned here; skipped");
                    continue;
                };
                let next = p.offsets.get(topic.as_ref()).copied().unwrap_or(0);
                if message.offset() >= next {
                    let record = record_from_message(p.pipeline.decoder(), &topic, &message);
                    p.pipeline.handle(record)?;
                    p.offsets.insert(topic.to_string(), message.offset() + 1);
                    p.since_checkpoint += 1;
                }
            }
        }
        let mut state = lock(&state);
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        if state.rebalanced && !said_ready {
            said_ready = true;
            status.set(
                SOURCE,
                SourceStatus {
                    ready: true,
                    metrics: state.metrics(None, outage),
                },
            );
        }
        if state.due() {
            let tpl = state.checkpoint_all(Some(DEAD_LETTER_WAIT))?;
            drop(state);
            if let Some(tpl) = tpl {
                commit(&consumer, &tpl, CommitMode::Async);
            }
            continue;
        }
        // lag of every assigned partition: a metric, the end of a bounded
        // run, and the broker's health
        let probe_every = if options.exit_at_end && check_end {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        if last_probe.elapsed() < probe_every {
            continue;
        }
        last_probe = Instant::now();
        check_end = false;
        let probed = if state.assigned.is_empty() {
            // nothing assigned (yet): whether the broker answers at all
            probe
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|_| BTreeMap::new())
        } else {
            probe_lag(&probe, &state)
        };
        let lag = match probed {
            Ok(lag) => {
                if let Some(since) = outage.take() {
                    info!(
                        seconds = since.elapsed().as_secs(),
                        "the broker answers again"
                    );
                }
                Some(lag)
            }
            Err(e) => {
                if outage.is_none() {
                    warn!(
                        error = %e,
                        brokers = %settings.kafka.brokers,
                        "the broker does not answer; waiting for it (check that it is up and that kafka.brokers names it)"
                    );
                    outage = Some(Instant::now());
                }
                None
            }
        };
        let metrics = state.metrics(lag.as_ref(), outage);
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            info!(
                consumed = metrics.consumed,
                rejected = metrics.rejected,
                lag = lag.as_ref().map(|l| l.values().sum::<i64>()),
                checkpoint_age_s = metrics.checkpoint_age_seconds,
                "progress"
            );
        }
        // in a group, the partitions this instance holds (its share of a
        // backfill); with `assignment = "all"`, every partition
        let at_end =
            !state.assigned.is_empty() && lag.as_ref().is_some_and(|l| l.values().all(|n| *n <= 0));
        if options.exit_at_end && at_end {
            for p in state.partitions.values_mut() {
                p.pipeline.close_all()?;
            }
            // every window closed, the last ones still live (the checkpoint
            // below moves them to the history): the figures read both
            reporter.finish(state.metrics(lag.as_ref(), outage))?;
            let tpl = state
                .checkpoint_all(None)?
                .unwrap_or_else(TopicPartitionList::new);
            let summary = state.summary();
            drop(state);
            commit(&consumer, &tpl, CommitMode::Sync);
            info!("every assigned partition read to its end");
            return Ok(summary);
        }
        status.set(
            SOURCE,
            SourceStatus {
                ready: state.rebalanced,
                metrics: metrics.clone(),
            },
        );
        reporter.report(metrics);
    }
}

/// Every (topic, partition) of `topics`, from the broker's metadata.
fn topic_partitions(
    probe: &BaseConsumer<Quiet>,
    topics: &[&str],
) -> Result<BTreeSet<(String, i32)>> {
    let mut all = BTreeSet::new();
    for topic in topics {
        let metadata = probe
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(kafka_error(format!(
                "reading the metadata of topic {topic}"
            )))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == *topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions == 0 {
            return Err(Error::Config(format!(
                "topic {topic} does not exist (kafka.topics); create it first"
            )));
        }
        for p in 0..partitions {
            all.insert(((*topic).to_owned(), p as i32));
        }
    }
    Ok(all)
}

/// `kafka.assignment = "all"`: takes every partition, each from its
/// checkpoint's offset (or the beginning), without joining the group.
fn assign_all(
    consumer: &BaseConsumer<Rebalancer>,
    state: &mut State,
    partitions: &BTreeSet<(String, i32)>,
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for (topic, p) in partitions {
        state
            .open_partition(*p)
            .map_err(partition_error(*p, "opening"))?;
        let offset = state
            .partitions
            .get(p)
            .and_then(|part| part.offsets.get(topic))
            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
        tpl.add_partition_offset(topic, *p, offset)
            .map_err(kafka_error("listing partitions to assign"))?;
        state.assigned.insert((topic.clone(), *p));
    }
    consumer.assign(&tpl).map_err(kafka_error(
        "assigning every partition (kafka.assignment = \"all\")",
    ))?;
    state.rebalanced = true;
    info!(assigned = ?state.assigned, "partitions assigned (every partition: kafka.assignment = all)");
    Ok(())
}

/// Commits checkpointed offsets; a failure only costs re-reading (the
/// checkpoint holds the offsets), so it is reported, not fatal.
fn commit(consumer: &BaseConsumer<Rebalancer>, tpl: &TopicPartitionList, mode: CommitMode) {
    if tpl.count() > 0
        && let Err(e) = consumer.commit(tpl, mode)
    {
        warn!(error = %e, "committing offsets failed (the checkpoint holds them)");
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // a panic while holding the lock ends the process anyway
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records not yet applied, per assigned `topic/partition`.
/// The whole round takes at most five seconds, so that polling (and the
/// group's heartbeat of liveness, `max.poll.interval.ms`) is never held up
/// long by a slow or absent broker.
fn probe_lag(
    probe: &BaseConsumer<Quiet>,
    state: &State,
) -> Result<BTreeMap<String, i64>, KafkaError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut lag = BTreeMap::new();
    for (topic, partition) in &state.assigned {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(KafkaError::Global(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let (low, high) = probe.fetch_watermarks(topic, *partition, left)?;
        let next = state
            .partitions
            .get(partition)
            .and_then(|p| p.offsets.get(topic))
            .copied()
            .unwrap_or(low);
        lag.insert(format!("{topic}/{partition}"), high - next);
    }
    Ok(lag)
}
