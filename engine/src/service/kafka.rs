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
//!
//! Two threads: `kafka-poll` polls the consumer and decodes and validates
//! each message, handing the records over in batches; the engine thread
//! (`kafka`) applies them to the partitions' pipelines, checkpoints and
//! commits. librdkafka's rebalance callbacks run on the polling thread and
//! only hand the rebalance over, after the records polled before it: a
//! revocation waits until the engine has checkpointed the partitions and
//! answered with the offsets to commit.
//! - Closed windows are written one file per window, so re-emitting a window
//!   after a restart replaces its file with the same content.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use driftwatch_ingest::kafka::{DeadLetterTopic, record_from_message};
use driftwatch_ingest::source::Record;
use driftwatch_ingest::{Assignment, DeadLetterFile, DeadLetterSink, Decoder, Rejected};
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
/// come from a query, which the engine thread does not wait for.
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

/// Records decoded on the polling thread, handed over at most this many at a time.
const POLL_BATCH: usize = 256;

/// Batches the polling thread may be ahead of the engine.
const POLL_QUEUE: usize = 2;

/// A record polled and decoded, with where it came from.
struct Polled {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    record: Record,
}

/// What the polling thread hands the engine thread, in the order polled.
enum Handover {
    Records(Vec<Polled>),
    /// Partitions revoked: the engine checkpoints and releases them and
    /// answers with the offsets to commit before they go.
    Revoke(Vec<(String, i32)>, SyncSender<TopicPartitionList>),
    Assign(Vec<(String, i32)>),
}

/// The consumer's context: the rebalance callbacks (run on the polling
/// thread, inside `poll`) hand each rebalance over to the engine thread,
/// after the records polled before it.
struct Rebalancer {
    to_engine: SyncSender<Handover>,
    /// records polled, not yet handed over
    pending: Mutex<Vec<Polled>>,
    /// vectors the engine thread is done with: their records are dropped
    /// here, on the thread that made them
    spare: Mutex<Receiver<Vec<Polled>>>,
}

impl Rebalancer {
    /// Hands the records polled so far over; false once the engine is gone.
    fn flush(&self) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_empty() {
            return true;
        }
        let mut next = self
            .spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_recv()
            .unwrap_or_default();
        next.clear();
        let batch = std::mem::replace(&mut *pending, next);
        drop(pending);
        self.to_engine.send(Handover::Records(batch)).is_ok()
    }

    /// Keeps a polled record; hands the batch over once full. False once
    /// the engine is gone.
    fn push(&self, polled: Polled) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.push(polled);
        let full = pending.len() >= POLL_BATCH;
        drop(pending);
        !full || self.flush()
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

fn partitions_of(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ConsumerContext for Rebalancer {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        // the engine gone (stopping), the last checkpoint stands
        let (reply, answer) = sync_channel(1);
        if !self.flush()
            || self
                .to_engine
                .send(Handover::Revoke(partitions_of(revoked), reply))
                .is_err()
        {
            return;
        }
        let Ok(tpl) = answer.recv() else {
            return;
        };
        if tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
        {
            // the checkpoint is durable: the next owner skips what it holds
            warn!(error = %e, "committing offsets of revoked partitions failed");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                // the records of these partitions follow it
                let _ = self.flush()
                    && self
                        .to_engine
                        .send(Handover::Assign(partitions_of(assigned)))
                        .is_ok();
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

impl State {
    /// Revoked partitions: checkpointed (once the dead letters are
    /// durable) and released; returns the offsets to commit.
    fn revoke(&mut self, revoked: &[(String, i32)]) -> Result<TopicPartitionList> {
        let partitions: BTreeSet<i32> = revoked.iter().map(|(_, p)| *p).collect();
        let mut tpl = TopicPartitionList::new();
        let durable = self.dead_letters_durable(Some(DEAD_LETTER_WAIT))?;
        if !durable {
            // exact all the same: the next owner resumes from the last
            // checkpoint; only dead letters may be written twice
            warn!(
                ?partitions,
                "dead letters not acknowledged; partitions released without a new checkpoint"
            );
        }
        for p in &partitions {
            if durable {
                self.checkpoint(*p, &mut tpl)
                    .map_err(partition_error(*p, "checkpointing revoked"))?;
            }
            self.release(*p);
        }
        for tp in revoked {
            self.assigned.remove(tp);
        }
        info!(?partitions, "partitions revoked, checkpointed and released");
        Ok(tpl)
    }

    /// Assigned partitions: their state restored from their checkpoints.
    fn assign(&mut self, assigned: Vec<(String, i32)>) -> Result<()> {
        for (topic, p) in assigned {
            self.open_partition(p)
                .map_err(partition_error(p, "opening"))?;
            self.assigned.insert((topic, p));
        }
        self.rebalanced = true;
        info!(assigned = ?self.assigned, "partitions assigned");
        Ok(())
    }

    /// Applies polled records to their partitions' pipelines (those before
    /// a partition's checkpointed offsets are already in its state).
    fn apply(&mut self, batch: &[Polled]) -> Result<()> {
        for polled in batch {
            let Some(p) = self.partitions.get_mut(&polled.partition) else {
                warn!(topic = %polled.topic, partition = polled.partition, "message of a partition not assigned here; skipped");
                continue;
            };
            let next = p.offsets.get(polled.topic.as_ref()).copied().unwrap_or(0);
            if polled.offset >= next {
                p.pipeline.handle_ref(&polled.record)?;
                p.offsets
                    .insert(polled.topic.to_string(), polled.offset + 1);
                p.since_checkpoint += 1;
            }
        }
        Ok(())
    }
}

/// The polling thread: polls the consumer, decodes each message (the
/// rebalance callbacks hand rebalances over in between), until `stop` is
/// set or the engine thread is gone.
fn poll(
    consumer: &BaseConsumer<Rebalancer>,
    mut decoder: Decoder,
    names: &HashMap<String, Arc<str>>,
    stop: &AtomicBool,
) {
    let context = consumer.context();
    while !stop.load(Ordering::Relaxed) {
        let handed = match consumer.poll(Duration::from_millis(100)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => context.flush(),
            // transport errors: librdkafka reconnects by itself (the outage
            // is reported by the lag probe); poll waits, no spinning
            Some(Err(e)) => {
                tracing::debug!(error = %e, "Kafka error");
                true
            }
            Some(Ok(message)) => {
                let topic = names
                    .get(message.topic())
                    .cloned()
                    .unwrap_or_else(|| Arc::from(message.topic()));
                let record = record_from_message(&mut decoder, &topic, &message);
                context.push(Polled {
                    partition: message.partition(),
                    offset: message.offset(),
                    topic,
                    record,
                })
            }
        };
        if !handed {
            return;
        }
    }
}

/// The polling thread, stopped and joined when dropped (after the engine
/// thread let go of what it hands over).
struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(
        consumer: Arc<BaseConsumer<Rebalancer>>,
        decoder: Decoder,
        names: HashMap<String, Arc<str>>,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("kafka-poll".into())
            .spawn(move || poll(&consumer, decoder, &names, &flag))
            .map_err(|e| Error::Stopped(format!("starting the kafka-poll thread: {e}")))?;
        Ok(Poller {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop();
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
    let mut state = State {
        settings: settings.clone(),
        checkpoints: CheckpointDir::new(
            settings.data_dir.checkpoints(&kafka.group_id),
            CHECKPOINT_FORMAT,
        ),
        dead_letter: SharedDeadLetter(Arc::new(Mutex::new(dead_letter))),
        dead_letter_name,
        partitions: BTreeMap::new(),
        assigned: BTreeSet::new(),
        rebalanced: false,
        last_checkpoint: Instant::now(),
        shared,
    };
    let (to_engine, handed) = sync_channel(POLL_QUEUE);
    let (recycle, spare) = std::sync::mpsc::channel();
    let context = Rebalancer {
        to_engine,
        pending: Mutex::new(Vec::with_capacity(POLL_BATCH)),
        spare: Mutex::new(spare),
    };
    let consumer: Arc<BaseConsumer<Rebalancer>> = Arc::new(
        kafka
            .consumer_config()
            .create_with_context(context)
            .map_err(kafka_error("creating the Kafka consumer"))?,
    );
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
            assign_all(&consumer, &mut state, &partitions)?
        }
    }
    info!(brokers = %kafka.brokers, group = %kafka.group_id, assignment = ?kafka.assignment, ?topics, "consuming");
    let names: HashMap<String, Arc<str>> = kafka
        .topics
        .iter()
        .map(|t| (t.clone(), Arc::from(t.as_str())))
        .collect();
    let mut poller = Poller::start(
        Arc::clone(&consumer),
        Decoder::new(settings.decoder.clone()),
        names,
    )?;
    let engine = Consuming {
        consumer: &consumer,
        probe,
        handed,
        recycle,
    };
    let outcome = engine.run(&mut state, settings, options, stop);
    // what the polling thread hands over is let go first (it may be waiting
    // to hand over more), then it stops
    poller.stop();
    outcome
}

/// The engine thread's side of [`run`].
struct Consuming<'a> {
    consumer: &'a BaseConsumer<Rebalancer>,
    probe: BaseConsumer<Quiet>,
    handed: Receiver<Handover>,
    recycle: Sender<Vec<Polled>>,
}

impl Consuming<'_> {
    fn run(
        self,
        state: &mut State,
        settings: &Config,
        options: &RunOptions,
        stop: &CancellationToken,
    ) -> Result<RunSummary> {
        let Consuming {
            consumer,
            probe,
            handed,
            recycle,
        } = self;
        let status = Arc::clone(&state.shared.status);
        let queries = Arc::clone(&state.shared.queries);
        let mut check_end = false;
        let mut said_ready = false;
        let mut outage: Option<Instant> = None;
        let mut last_probe = Instant::now();
        let mut last_report = Instant::now();
        let reporter = Reporter::start(queries, settings.data_dir.metrics())?;
        loop {
            // stopped (SIGTERM / SIGINT): checkpoint, commit and leave the group
            if stop.is_cancelled() {
                let tpl = state.checkpoint_all(Some(Duration::from_secs(10)))?;
                match tpl {
                    Some(tpl) => {
                        commit(consumer, &tpl, CommitMode::Sync);
                        info!("stopped by a signal; state checkpointed");
                    }
                    None => warn!(
                        "stopped by a signal; the dead-letter topic is not reachable, so the last checkpoint stands"
                    ),
                }
                return Ok(state.summary());
            }
            match handed.recv_timeout(Duration::from_millis(250)) {
                Err(RecvTimeoutError::Timeout) => check_end = true,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Stopped("the kafka-poll thread has stopped".into()));
                }
                Ok(Handover::Records(batch)) => {
                    state.apply(&batch)?;
                    // the records are dropped on the thread that made them
                    let _ = recycle.send(batch);
                }
                Ok(Handover::Revoke(revoked, reply)) => {
                    let _ = reply.send(state.revoke(&revoked)?);
                }
                Ok(Handover::Assign(assigned)) => state.assign(assigned)?,
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
                if let Some(tpl) = state.checkpoint_all(Some(DEAD_LETTER_WAIT))? {
                    commit(consumer, &tpl, CommitMode::Async);
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
                probe_lag(&probe, state)
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
            let at_end = !state.assigned.is_empty()
                && lag.as_ref().is_some_and(|l| l.values().all(|n| *n <= 0));
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
                commit(consumer, &tpl, CommitMode::Sync);
                info!("every assigned partition read to its end");
                return Ok(state.summary());
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
