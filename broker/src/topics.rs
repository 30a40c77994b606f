//! Topic names and their creation.

use crate::Error;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Topic names under one prefix (default `ecointegra`).
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Everything addressed to one institution.
    pub fn inbox(&self, institution: &str) -> String {
        format!("{}.inbox.{institution}", self.prefix)
    }

    /// What one institution could not accept.
    pub fn dlq(&self, institution: &str) -> String {
        format!("{}.dlq.{institution}", self.prefix)
    }

    /// Sector-wide status events.
    pub fn tracking(&self) -> String {
        format!("{}.tracking", self.prefix)
    }

    /// Signed directory entries (compacted).
    pub fn directory(&self) -> String {
        format!("{}.directory", self.prefix)
    }
}

/// How topics are created.
#[derive(Debug, Clone, Copy)]
pub struct TopicSpec {
    pub partitions: i32,
    pub replication_factor: i32,
    /// The topics' `max.message.bytes` (see `KafkaSettings::max_record_bytes`).
    pub max_message_bytes: u32,
}

/// Creates the topics an institution's node needs, where missing: its inbox and
/// DLQ, the shared tracking and directory topics, and the inboxes of `peers`
/// (so a filing for an institution whose node has never run can already wait
/// in its inbox).
pub async fn ensure_node_topics(
    admin: &AdminClient<DefaultClientContext>,
    topics: &Topics,
    institution: &str,
    peers: &[&str],
    spec: TopicSpec,
) -> Result<(), Error> {
    let inbox = topics.inbox(institution);
    let dlq = topics.dlq(institution);
    let tracking = topics.tracking();
    let directory = topics.directory();
    let replication = || TopicReplication::Fixed(spec.replication_factor);
    let max_bytes = spec.max_message_bytes.to_string();
    let peer_inboxes: Vec<String> = peers
        .iter()
        .filter(|p| **p != institution)
        .map(|p| topics.inbox(p))
        .collect();
    let inbox_topic = |name| {
        // Two weeks: a destination may be down for days and still catch up.
        NewTopic::new(name, spec.partitions, replication())
            .set("retention.ms", "1209600000")
            .set("max.message.bytes", &max_bytes)
    };
    let mut new_topics = vec![
        inbox_topic(&inbox),
        NewTopic::new(&dlq, 1, replication())
            .set("retention.ms", "-1")
            .set("max.message.bytes", &max_bytes),
        NewTopic::new(&tracking, spec.partitions, replication())
            .set("retention.ms", "-1")
            .set("max.message.bytes", &max_bytes),
        NewTopic::new(&directory, 1, replication())
            .set("cleanup.policy", "compact")
            .set("max.message.bytes", &max_bytes),
    ];
    new_topics.extend(peer_inboxes.iter().map(|t| inbox_topic(t)));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(new_topics.iter(), &options)
        .await
        .map_err(|e| Error::kafka("could not create topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::kafka(
                    format!("could not create topic {topic}"),
                    rdkafka::error::KafkaError::AdminOp(code),
                ));
            }
        }
    }
    Ok(())
}
