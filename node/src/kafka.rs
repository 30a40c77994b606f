//! This node's link to Kafka: the idempotent producer, the client settings,
//! the topic names and settings, and whether Kafka answered the last probe.
//!
//! A leaf: uses only the broker crate and [`crate::config`].

use ecointegra_broker::kafka::{KafkaSettings, Publisher};
use ecointegra_broker::topics::{TopicSpec, Topics};
use tokio::sync::watch;

pub struct Kafka {
    institution: String,
    pub publisher: Publisher,
    /// Client settings, for the consumers and admin clients made later.
    pub settings: KafkaSettings,
    pub topics: Topics,
    /// Partitions and replication of the sector's topics.
    pub spec: TopicSpec,
    /// Whether Kafka answered the last probe.
    pub up: watch::Sender<bool>,
    /// Why the node is not ready as far as Kafka goes, in words an operator
    /// can act on: Kafka not answering (and librdkafka's last error, e.g. a
    /// failed authentication), or the sector's topics not as this node needs
    /// them. Empty when all is well.
    pub problems: watch::Sender<Vec<String>>,
}

impl Kafka {
    pub fn new(
        institution: String,
        publisher: Publisher,
        settings: KafkaSettings,
        topics: Topics,
        spec: TopicSpec,
    ) -> Self {
        Self {
            institution,
            publisher,
            settings,
            topics,
            spec,
            up: watch::Sender::new(false),
            problems: watch::Sender::new(Vec::new()),
        }
    }

    pub fn inbox_topic(&self) -> String {
        self.topics.inbox(&self.institution)
    }

    pub fn dlq_topic(&self) -> String {
        self.topics.dlq(&self.institution)
    }

    /// The consumer group under which this institution's offsets are committed.
    pub fn group_id(&self) -> String {
        format!("{}.node.{}", self.topics.prefix(), self.institution)
    }
}
