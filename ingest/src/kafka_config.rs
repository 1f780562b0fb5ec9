//! [`KafkaConfig`]: the `[kafka]` settings (plain data; the client code is
//! in the `kafka` module, behind the feature of that name).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Connection and topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// Consumer group; instances with the same group split the partitions.
    pub group_id: String,
    /// How partitions come to this instance: `group` (the consumer group
    /// shares them among its instances and moves them on failures) or `all`
    /// (this instance reads every partition of the topics itself, no group
    /// membership; offsets are still committed under `group_id`).
    pub assignment: Assignment,
    /// Topics to consume: predictions and labels, or one topic with both.
    /// Topics consumed together must have the same number of partitions.
    pub topics: Vec<String>,
    /// Where refused events go (original bytes, reason in the headers);
    /// empty: the dead-letter file in the data directory.
    pub dead_letter_topic: String,
    /// Further librdkafka properties, passed through as they are
    /// (`security.protocol`, `sasl.mechanism`, `ssl.ca.location`, …).
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only (`session.timeout.ms`, …).
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for producers only (`compression.type`, …).
    pub producer_properties: BTreeMap<String, String>,
}

/// See [`KafkaConfig::assignment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assignment {
    /// Partitions shared by the consumer group.
    #[default]
    Group,
    /// Every partition read by this instance.
    All,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "driftwatch".into(),
            assignment: Assignment::Group,
            topics: vec!["predictions".into(), "labels".into()],
            dead_letter_topic: "driftwatch-dead-letter".into(),
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
        }
    }
}
