//! Kafka (feature `kafka`): client settings, records from consumed messages,
//! the dead-letter topic, and publishing event files.
//!
//! The message key must be the event's `model_id`: it is what puts a model's
//! predictions and labels on the same partition, so that one consumer holds
//! the model's whole state. A message without a key, or with another key, is
//! refused like any other bad event.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use crate::dead_letter::DeadLetterSink;
use crate::decode::Decoder;
use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::event::Event;
pub use crate::kafka_config::KafkaConfig;
use crate::reject::Reject;
use crate::source::{FileFormat, Position, Record, Rejected, detect_format};

impl KafkaConfig {
    fn base(&self, own: &std::collections::BTreeMap<String, String>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in self.properties.iter().chain(own) {
            config.set(k, v);
        }
        config
    }

    /// Consumer settings: offsets are committed by driftwatch after its
    /// checkpoint is durable, never automatically; a group with no committed
    /// offset starts at the beginning; the end of a partition is reported.
    /// Pass-through properties win over these defaults, except those of
    /// [`FORCED_CONSUMER_PROPERTIES`](crate::kafka_config::FORCED_CONSUMER_PROPERTIES),
    /// which are set last (settings refuse them at load).
    pub fn consumer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true");
        for (k, v) in self.base(&self.consumer_properties).config_map() {
            config.set(k, v);
        }
        for (name, value, _) in crate::kafka_config::FORCED_CONSUMER_PROPERTIES {
            config.set(name, value);
        }
        config
            .set("group.id", &self.group_id)
            .set("bootstrap.servers", &self.brokers);
        config
    }

    /// Settings of a plain client (no group) for metadata and watermark
    /// queries on a connection of its own, so that they are never queued
    /// behind the consumer's long-polling fetches.
    pub fn probe_config(&self) -> ClientConfig {
        self.base(&BTreeMap::new())
    }

    /// Producer settings: idempotent, acknowledged by all replicas, and
    /// retried without a deadline (a dead-letter event is never dropped:
    /// the consumer waits instead).
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "0")
            .set("linger.ms", "5");
        for (k, v) in self.base(&self.producer_properties).config_map() {
            config.set(k, v);
        }
        config.set("bootstrap.servers", &self.brokers);
        config
    }
}

/// Decodes one consumed message into a record: the payload as an event,
/// checked against the message key; anything wrong becomes a refusal that
/// keeps the payload and names topic, partition and offset.
pub fn record_from_message(
    decoder: &mut Decoder,
    topic: &Arc<str>,
    message: &BorrowedMessage<'_>,
) -> Record {
    let position = Position::Kafka {
        topic: Arc::clone(topic),
        partition: message.partition(),
        offset: message.offset(),
    };
    let payload = message.payload().unwrap_or_default();
    let refuse = |reason: Reject| {
        Record::Rejected(Rejected::new(
            reason,
            position.clone(),
            payload,
            payload.len() as u64,
        ))
    };
    let event = match decoder.decode_json(payload) {
        Ok(event) => event,
        Err(reason) => return refuse(reason),
    };
    let model_id = match &event {
        Event::Prediction(p) => &p.model_id,
        Event::Label(l) => &l.model_id,
    };
    match message.key() {
        None => refuse(Reject::MissingKey),
        Some(key) if key != model_id.as_bytes() => refuse(Reject::KeyMismatch {
            key: String::from_utf8_lossy(key).into_owned(),
            model_id: model_id.to_string(),
        }),
        Some(_) => Record::Event(event, position),
    }
}

/// Counts deliveries that failed for good.
#[derive(Debug, Default)]
pub struct DeliveryCounter {
    failed: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_error.lock() {
                *last = Some(e.to_string());
            }
        }
    }
}

/// Refused events produced to a dead-letter topic: the original payload
/// (up to [`MAX_KEPT_ORIGINAL`](crate::source::MAX_KEPT_ORIGINAL) bytes), the
/// source message's key, and headers `driftwatch.reason` (stable code),
/// `driftwatch.detail`, `driftwatch.source` (topic, or file), and for Kafka
/// sources `driftwatch.partition` and `driftwatch.offset`, plus
/// `driftwatch.original_len`.
pub struct DeadLetterTopic {
    producer: ThreadedProducer<DeliveryCounter>,
    topic: String,
}

impl std::fmt::Debug for DeadLetterTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterTopic")
            .field("topic", &self.topic)
            .finish()
    }
}

impl DeadLetterTopic {
    /// A producer for `config.dead_letter_topic`.
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        let producer = config
            .producer_config()
            .create_with_context(DeliveryCounter::default())
            .map_err(|e| Error::Kafka(format!("creating the dead-letter producer: {e}")))?;
        Ok(DeadLetterTopic {
            producer,
            topic: config.dead_letter_topic.clone(),
        })
    }
}

impl DeadLetterSink for DeadLetterTopic {
    fn send(&mut self, rejected: &Rejected) -> Result<()> {
        let detail = rejected.reason.to_string();
        let len = rejected.original_len.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "driftwatch.reason",
                value: Some(rejected.reason.code()),
            })
            .insert(Header {
                key: "driftwatch.detail",
                value: Some(&detail),
            })
            .insert(Header {
                key: "driftwatch.original_len",
                value: Some(&len),
            });
        let key = match &rejected.position {
            Position::Kafka {
                topic,
                partition,
                offset,
            } => {
                headers = headers
                    .insert(Header {
                        key: "driftwatch.source",
                        value: Some(topic.as_ref()),
                    })
                    .insert(Header {
                        key: "driftwatch.partition",
                        value: Some(&partition.to_string()),
                    })
                    .insert(Header {
                        key: "driftwatch.offset",
                        value: Some(&offset.to_string()),
                    });
                format!("{topic}/{partition}")
            }
            other => {
                let source = other.to_string();
                headers = headers.insert(Header {
                    key: "driftwatch.source",
                    value: Some(&source),
                });
                source
            }
        };
        let mut record = BaseRecord::to(&self.topic)
            .payload(&rejected.original[..])
            .key(&key)
            .headers(headers);
        // a full queue means the broker is slow or away: wait, never drop
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((e, _)) => {
                    return Err(Error::Kafka(format!(
                        "producing to the dead-letter topic {}: {e}",
                        self.topic
                    )));
                }
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        // no deadline: until the broker has every dead letter, offsets past
        // them must not be committed
        self.producer
            .flush(None)
            .map_err(|e| Error::Kafka(format!("flushing the dead-letter topic: {e}")))?;
        self.failures()
    }

    fn try_flush(&mut self, timeout: Duration) -> Result<bool> {
        match self.producer.flush(timeout) {
            Ok(()) => self.failures().map(|()| true),
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => Ok(false),
            Err(e) => Err(Error::Kafka(format!("flushing the dead-letter topic: {e}"))),
        }
    }
}

impl DeadLetterTopic {
    /// An error if any dead letter could not be delivered for good.
    fn failures(&self) -> Result<()> {
        let context = self.producer.context();
        let failed = context.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let last = context
                .last_error
                .lock()
                .ok()
                .and_then(|l| l.clone())
                .unwrap_or_default();
            return Err(Error::Kafka(format!(
                "{failed} dead letters could not be written to {}: {last}",
                self.topic
            )));
        }
        Ok(())
    }
}

/// How [`produce_file`] went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Produced {
    /// Messages produced.
    pub messages: u64,
    /// Of those, lines that did not decode (produced as they are, without key).
    pub undecodable: u64,
}

/// How long [`produce_file`] waits for the brokers to answer at first, and
/// for a message to be delivered.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(15);

/// Publishes an event file to `topic`, one message per event, keyed by
/// `model_id`. JSON Lines (plain or gzip) are sent byte for byte, bad lines
/// included (without a key) so that a consumer's dead-letter handling can be
/// tried; Parquet rows are sent as JSON events. Brokers that do not answer
/// within [`PRODUCE_TIMEOUT`], or a topic they do not have, are an error
/// before anything is sent.
pub fn produce_file(
    config: &KafkaConfig,
    path: &Path,
    topic: &str,
    mut progress: impl FnMut(u64),
) -> Result<Produced> {
    let producer: ThreadedProducer<DeliveryCounter> = config
        .producer_config()
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.kbytes", "262144")
        // a message not delivered in time is counted failed, not retried forever
        .set(
            "message.timeout.ms",
            PRODUCE_TIMEOUT.as_millis().to_string(),
        )
        .create_with_context(DeliveryCounter::default())
        .map_err(|e| Error::Kafka(format!("creating the producer: {e}")))?;
    let metadata = producer
        .client()
        .fetch_metadata(Some(topic), PRODUCE_TIMEOUT)
        .map_err(|e| {
            Error::Kafka(format!(
                "no broker of {} answered within {}s ({e}): is Kafka running there?",
                config.brokers,
                PRODUCE_TIMEOUT.as_secs()
            ))
        })?;
    if let Some(err) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| t.error())
    {
        return Err(Error::Kafka(format!(
            "topic {topic} on {}: {} (topics are not created automatically)",
            config.brokers,
            RDKafkaErrorCode::from(err)
        )));
    }
    let mut decoder = Decoder::new(crate::DecoderConfig::default());
    let mut produced = Produced::default();
    let mut send = |payload: &[u8], key: Option<&str>| -> Result<()> {
        let mut record = BaseRecord::<str, [u8]>::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(Error::Kafka(format!("producing to {topic}: {e}"))),
            }
        }
        produced.messages += 1;
        if produced.messages.is_multiple_of(65_536) {
            progress(produced.messages);
        }
        Ok(())
    };
    match detect_format(path)? {
        FileFormat::Parquet => {
            let mut source = crate::source::open_file(path)?;
            let mut buf = Vec::new();
            while let Some(record) = source.next_record(&mut decoder)? {
                match record {
                    Record::Event(event, _) => {
                        buf.clear();
                        crate::encode::encode_json(&event, &mut buf);
                        send(&buf, Some(model_of(&event)))?;
                    }
                    Record::Rejected(r) => {
                        produced.undecodable += 1;
                        send(&r.original, None)?;
                    }
                }
            }
        }
        _ => {
            let mut lines = crate::source::raw_lines(path)?;
            while let Some(line) = lines.next_line().map_err(|e| Error::io(path, e))? {
                if line.bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match decoder.decode_json(line.bytes) {
                    Ok(event) => send(line.bytes, Some(model_of(&event)))?,
                    Err(_) => {
                        produced.undecodable += 1;
                        send(line.bytes, None)?;
                    }
                }
            }
        }
    }
    producer
        .flush(None)
        .map_err(|e| Error::Kafka(format!("flushing to {topic}: {e}")))?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(Error::Kafka(format!(
            "{failed} of {} messages were not delivered to {topic}",
            produced.messages
        )));
    }
    Ok(produced)
}

fn model_of(event: &Event) -> &str {
    match event {
        Event::Prediction(p) => &p.model_id,
        Event::Label(l) => &l.model_id,
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::BaseProducer;

    use super::*;

    /// Regression (issue 41, item 8): `driftwatch produce FILE --brokers
    /// 127.0.0.1:9` printed nothing and never ended.
    #[test]
    fn producing_to_brokers_that_do_not_answer_is_an_error_naming_them() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("events.jsonl");
        std::fs::write(
            &file,
            r#"{"event_id":"a","model_id":"m","timestamp":0,"prediction":{"score":0.5}}"#,
        )
        .expect("file");
        let config = KafkaConfig {
            brokers: format!("127.0.0.1:{port}"),
            ..KafkaConfig::default()
        };
        let started = std::time::Instant::now();
        let err = produce_file(&config, &file, "predictions", |_| {}).expect_err("no broker");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
        assert!(
            started.elapsed() < PRODUCE_TIMEOUT * 2,
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn tls_and_sasl_settings_are_accepted() {
        // librdkafka is built with OpenSSL: these are refused at creation otherwise
        let mut config = KafkaConfig::default();
        for (k, v) in [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "driftwatch"),
            ("sasl.password", "secret"),
        ] {
            config.properties.insert(k.into(), v.into());
        }
        let consumer: std::result::Result<BaseConsumer, _> = config.consumer_config().create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
        let producer: std::result::Result<BaseProducer, _> = config.producer_config().create();
        assert!(producer.is_ok(), "{:?}", producer.err());
    }

    #[test]
    fn no_user_property_can_turn_on_automatic_offset_commits() {
        let mut config = KafkaConfig::default();
        for map in [&mut config.properties, &mut config.consumer_properties] {
            map.insert("enable.auto.commit".into(), "true".into());
            map.insert("enable.auto.offset.store".into(), "true".into());
            map.insert("group.id".into(), "someone-else".into());
            map.insert("session.timeout.ms".into(), "12345".into());
        }
        let client = config.consumer_config();
        assert_eq!(client.get("enable.auto.commit"), Some("false"));
        assert_eq!(client.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(client.get("group.id"), Some("driftwatch"));
        // other properties pass through
        assert_eq!(client.get("session.timeout.ms"), Some("12345"));
        assert!(client.create::<BaseConsumer>().is_ok());
    }
}
