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

/// How the sector's topics are made.
#[derive(Debug, Clone, Copy)]
pub struct TopicSpec {
    pub partitions: i32,
    pub replication_factor: i32,
    /// The topics' `max.message.bytes` (see `KafkaSettings::max_record_bytes`).
    pub max_message_bytes: u32,
}

impl TopicSpec {
    /// In-sync replicas a write needs: one fewer than the replicas, so a
    /// topic with three keeps taking writes with one broker down and never
    /// acknowledges a write held by one broker alone.
    pub fn min_insync_replicas(&self) -> i32 {
        (self.replication_factor - 1).max(1)
    }
}

/// One topic as the sector runs it: what a node checks and what the sector
/// operator's provisioning creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPlan {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Topic-level settings, e.g. `retention.ms`.
    pub configs: Vec<(&'static str, String)>,
}

impl TopicPlan {
    fn new(
        name: String,
        partitions: i32,
        spec: TopicSpec,
        configs: &[(&'static str, &str)],
    ) -> Self {
        let mut all: Vec<(&'static str, String)> = vec![
            ("max.message.bytes", spec.max_message_bytes.to_string()),
            (
                "min.insync.replicas",
                spec.min_insync_replicas().to_string(),
            ),
        ];
        all.extend(configs.iter().map(|(k, v)| (*k, v.to_string())));
        TopicPlan {
            name,
            partitions,
            replication_factor: spec.replication_factor,
            configs: all,
        }
    }

    fn new_topic(&self) -> NewTopic<'_> {
        self.configs.iter().fold(
            NewTopic::new(
                &self.name,
                self.partitions,
                TopicReplication::Fixed(self.replication_factor),
            ),
            |topic, (key, value)| topic.set(key, value),
        )
    }
}

/// An institution's inbox: two weeks of retention, so a destination may be
/// down for days and still catch up.
pub fn inbox_plan(topics: &Topics, institution: &str, spec: TopicSpec) -> TopicPlan {
    TopicPlan::new(
        topics.inbox(institution),
        spec.partitions,
        spec,
        &[("retention.ms", "1209600000")],
    )
}

/// An institution's dead letters, kept until dealt with.
pub fn dlq_plan(topics: &Topics, institution: &str, spec: TopicSpec) -> TopicPlan {
    TopicPlan::new(topics.dlq(institution), 1, spec, &[("retention.ms", "-1")])
}

/// The shared topics: tracking events, kept for good, and the signed
/// directory, compacted.
pub fn shared_plans(topics: &Topics, spec: TopicSpec) -> [TopicPlan; 2] {
    [
        TopicPlan::new(
            topics.tracking(),
            spec.partitions,
            spec,
            &[("retention.ms", "-1")],
        ),
        TopicPlan::new(
            topics.directory(),
            1,
            spec,
            &[("cleanup.policy", "compact")],
        ),
    ]
}

/// Every topic of a sector: each institution's inbox and DLQ, and the
/// shared ones.
pub fn sector_plans(topics: &Topics, institutions: &[&str], spec: TopicSpec) -> Vec<TopicPlan> {
    let mut plans: Vec<TopicPlan> = institutions
        .iter()
        .flat_map(|id| [inbox_plan(topics, id, spec), dlq_plan(topics, id, spec)])
        .collect();
    plans.extend(shared_plans(topics, spec));
    plans
}

/// The topics an institution's node uses: its inbox and DLQ, the shared
/// ones, and the inboxes of `peers` it sends to.
pub fn node_plans(
    topics: &Topics,
    institution: &str,
    peers: &[&str],
    spec: TopicSpec,
) -> Vec<TopicPlan> {
    let mut plans = vec![
        inbox_plan(topics, institution, spec),
        dlq_plan(topics, institution, spec),
    ];
    plans.extend(shared_plans(topics, spec));
    plans.extend(
        peers
            .iter()
            .filter(|p| **p != institution)
            .map(|p| inbox_plan(topics, p, spec)),
    );
    plans
}

/// Creates the topics of `plans` that are missing (development: in
/// production the sector operator provisions them).
pub async fn create_missing(
    admin: &AdminClient<DefaultClientContext>,
    plans: &[TopicPlan],
) -> Result<(), Error> {
    if plans.is_empty() {
        // librdkafka refuses a request for no topics.
        return Ok(());
    }
    let new_topics: Vec<NewTopic<'_>> = plans.iter().map(TopicPlan::new_topic).collect();
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

/// One way a cluster's topic falls short of its plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortfall {
    Missing {
        topic: String,
    },
    /// The cluster's metadata names an error for the topic (e.g. not
    /// authorised to describe it).
    Unreadable {
        topic: String,
        reason: String,
    },
    SettingsUnreadable {
        topic: String,
        reason: String,
    },
    NoPartitions {
        topic: String,
    },
    FewReplicas {
        topic: String,
        have: i32,
        want: i32,
    },
    /// A setting lower than planned (`max.message.bytes`,
    /// `min.insync.replicas`, `retention.ms`) or, for any other, different.
    Setting {
        topic: String,
        key: &'static str,
        have: String,
        want: String,
    },
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shortfall::Missing { topic } => write!(f, "topic {topic} does not exist"),
            Shortfall::Unreadable { topic, reason } => {
                write!(f, "topic {topic} cannot be read: {reason}")
            }
            Shortfall::SettingsUnreadable { topic, reason } => {
                write!(f, "the settings of topic {topic} cannot be read: {reason}")
            }
            Shortfall::NoPartitions { topic } => write!(f, "topic {topic} has no partitions"),
            Shortfall::FewReplicas { topic, have, want } => write!(
                f,
                "topic {topic} has {have} replica(s) per partition; the sector runs {want}"
            ),
            Shortfall::Setting {
                topic,
                key,
                have,
                want,
            } => write!(f, "topic {topic} has {key}={have}; the sector runs {want}"),
        }
    }
}

/// What differs between the topics of `plans` and the cluster, in words an
/// operator can act on: a topic missing, fewer replicas or partitions than
/// planned, or a setting that falls short (`max.message.bytes` or
/// `min.insync.replicas` lower; any other setting different). Empty when
/// every topic is as planned.
pub async fn check(
    admin: &AdminClient<DefaultClientContext>,
    plans: &[TopicPlan],
    timeout: Duration,
) -> Result<Vec<String>, Error> {
    Ok(shortfalls(admin, plans, timeout)
        .await?
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// What [`check`] reports, one [`Shortfall`] each.
pub async fn shortfalls(
    admin: &AdminClient<DefaultClientContext>,
    plans: &[TopicPlan],
    timeout: Duration,
) -> Result<Vec<Shortfall>, Error> {
    use rdkafka::admin::{ConfigSource, ResourceSpecifier};
    let metadata = admin
        .inner()
        .fetch_metadata(None, timeout)
        .map_err(|e| Error::kafka("could not read the cluster's topics", e))?;
    let mut problems = Vec::new();
    let mut present = Vec::new();
    for plan in plans {
        let topic_name = || plan.name.clone();
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == plan.name) else {
            problems.push(Shortfall::Missing {
                topic: topic_name(),
            });
            continue;
        };
        if let Some(error) = topic.error() {
            problems.push(Shortfall::Unreadable {
                topic: topic_name(),
                reason: format!("{:?}", RDKafkaErrorCode::from(error)),
            });
            continue;
        }
        let partitions = topic.partitions();
        if partitions.is_empty() || (partitions.len() as i32) < plan.partitions.min(1) {
            problems.push(Shortfall::NoPartitions {
                topic: topic_name(),
            });
        }
        let replicas = partitions
            .iter()
            .map(|p| p.replicas().len() as i32)
            .min()
            .unwrap_or(0);
        if replicas < plan.replication_factor {
            problems.push(Shortfall::FewReplicas {
                topic: topic_name(),
                have: replicas,
                want: plan.replication_factor,
            });
        }
        present.push(plan);
    }
    let resources: Vec<ResourceSpecifier<'_>> = present
        .iter()
        .map(|p| ResourceSpecifier::Topic(&p.name))
        .collect();
    if resources.is_empty() {
        return Ok(problems);
    }
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let described = admin
        .describe_configs(resources.iter(), &options)
        .await
        .map_err(|e| Error::kafka("could not read the topics' settings", e))?;
    for (plan, result) in present.iter().zip(described) {
        let resource = match result {
            Ok(resource) => resource,
            Err(code) => {
                problems.push(Shortfall::SettingsUnreadable {
                    topic: plan.name.clone(),
                    reason: format!("{code:?}"),
                });
                continue;
            }
        };
        for (key, want) in &plan.configs {
            let have = resource
                .get(key)
                .filter(|e| e.source != ConfigSource::Unknown)
                .and_then(|e| e.value.clone())
                .unwrap_or_default();
            let numeric = |v: &str| v.parse::<i64>().ok();
            let short = match *key {
                // At least as large is fine.
                "max.message.bytes" | "min.insync.replicas" => {
                    match (numeric(&have), numeric(want)) {
                        (Some(h), Some(w)) => h < w,
                        _ => true,
                    }
                }
                // -1 (forever) or at least as long.
                "retention.ms" => match (numeric(&have), numeric(want)) {
                    (Some(-1), _) => false,
                    (Some(_), Some(-1)) => true,
                    (Some(h), Some(w)) => h < w,
                    _ => true,
                },
                _ => have != *want,
            };
            if short {
                problems.push(Shortfall::Setting {
                    topic: plan.name.clone(),
                    key,
                    have,
                    want: want.clone(),
                });
            }
        }
    }
    Ok(problems)
}

/// Creates the topics an institution's node needs, where missing: its inbox and
/// DLQ, the shared tracking and directory topics, and the inboxes of `peers`
/// (so a filing for an institution whose node has never run can already wait
/// in its inbox). Development only: in production the sector operator
/// provisions them.
pub async fn ensure_node_topics(
    admin: &AdminClient<DefaultClientContext>,
    topics: &Topics,
    institution: &str,
    peers: &[&str],
    spec: TopicSpec,
) -> Result<(), Error> {
    create_missing(admin, &node_plans(topics, institution, peers, spec)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sector_has_an_inbox_and_a_dlq_per_institution_and_two_shared_topics() {
        let spec = TopicSpec {
            partitions: 3,
            replication_factor: 3,
            max_message_bytes: 1_000_000,
        };
        let plans = sector_plans(&Topics::new("eco"), &["oefa", "minam"], spec);
        let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "eco.inbox.oefa",
                "eco.dlq.oefa",
                "eco.inbox.minam",
                "eco.dlq.minam",
                "eco.tracking",
                "eco.directory"
            ]
        );
        assert!(plans.iter().all(|p| p.replication_factor == 3));
        assert!(
            plans[0]
                .configs
                .contains(&("min.insync.replicas", "2".into()))
        );
        assert!(
            plans[5]
                .configs
                .contains(&("cleanup.policy", "compact".into()))
        );
        let dev = TopicSpec {
            replication_factor: 1,
            ..spec
        };
        assert_eq!(dev.min_insync_replicas(), 1);
    }
}
