//! [`KafkaConfig`]: the `[kafka]` settings (plain data; the client code is
//! in the `kafka` module, behind the feature of that name).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::settings::Invalid;

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

/// Consumer properties driftwatch sets itself, after any the user gives:
/// offsets are stored in the checkpoint and committed only once it is
/// durable, so a property that commits them otherwise would break
/// exactly-once. Each with its value and why.
pub const FORCED_CONSUMER_PROPERTIES: [(&str, &str, &str); 3] = [
    (
        "enable.auto.commit",
        "false",
        "driftwatch commits offsets after its checkpoint is durable (exactly-once)",
    ),
    (
        "enable.auto.offset.store",
        "false",
        "driftwatch stores offsets in its checkpoint (exactly-once)",
    ),
    ("group.id", "", "set the consumer group with kafka.group_id"),
];

impl KafkaConfig {
    /// Checks the section: brokers, a usable group name, topics, no
    /// property driftwatch sets itself, a dead-letter topic not consumed.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.brokers.trim().is_empty() {
            return Err(Invalid::new(
                "kafka.brokers",
                "",
                "a comma-separated host:port list",
            ));
        }
        if self.group_id.trim().is_empty()
            || crate::names::check_name(String::new, &self.group_id, crate::names::MAX_ID_BYTES)
                .is_err()
        {
            return Err(Invalid::new(
                "kafka.group_id",
                &self.group_id,
                "a consumer group name of at most 64 bytes without control characters",
            ));
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(Invalid::new(
                "kafka.topics",
                format!("{:?}", self.topics),
                "one or more topic names, e.g. [\"predictions\", \"labels\"]",
            ));
        }
        if let Some((key, value, why)) = self.forced_property() {
            return Err(Invalid::new(key, value, format!("no value: {why}")));
        }
        if self.topics.contains(&self.dead_letter_topic) {
            return Err(Invalid::new(
                "kafka.dead_letter_topic",
                &self.dead_letter_topic,
                "a topic that is not consumed (kafka.topics)",
            ));
        }
        Ok(())
    }

    /// The first property of `properties` or `consumer_properties` that
    /// driftwatch sets itself ([`FORCED_CONSUMER_PROPERTIES`]): the
    /// config key, the value given and why it cannot be set.
    pub fn forced_property(&self) -> Option<(String, String, &'static str)> {
        [
            ("kafka.properties", &self.properties),
            ("kafka.consumer_properties", &self.consumer_properties),
        ]
        .into_iter()
        .find_map(|(section, map)| {
            FORCED_CONSUMER_PROPERTIES
                .iter()
                .find_map(|(name, _, why)| {
                    map.get(*name)
                        .map(|v| (format!("{section}.\"{name}\""), v.clone(), *why))
                })
        })
    }
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
