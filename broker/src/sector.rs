//! The sector operator's provisioning: from the verified directory, what the
//! cluster must hold, compared with what it holds ([`survey`]), and the
//! difference made good ([`apply`]).
//!
//! What the cluster must hold:
//! - every topic of [`topics::sector_plans`] with its settings;
//! - a SCRAM-SHA-512 user per institution, named by its id;
//! - each institution's ACLs ([`institution_acls`]), least privilege, and no
//!   other ACL for an institution's user.
//!
//! Nothing else is granted: no institution may create, alter or delete
//! topics, ACLs or users, and only the sector operator (a super user, which
//! needs no ACLs) writes the directory topic.

use crate::Error;
use crate::admin::{self, AclBinding, Operation, Permission, ResourceType, ScramMechanism};
use crate::directory::Directory;
use crate::topics::{self, Shortfall, TopicPlan, TopicSpec, Topics};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// The Kafka principal of an institution's SCRAM user.
pub fn principal(institution: &str) -> String {
    format!("User:{institution}")
}

/// The consumer groups of an institution's node: its inbox, and its copies of
/// the tracking and directory topics.
pub fn consumer_groups(topics: &Topics, institution: &str) -> [String; 3] {
    let group = format!("{}.node.{institution}", topics.prefix());
    [
        format!("{group}.tracking"),
        format!("{group}.directory"),
        group,
    ]
}

/// The ACLs of institution `id` in a sector of `institutions`, all on
/// literal names:
/// - READ its own inbox and DLQ, the tracking and directory topics, and its
///   node's three consumer groups;
/// - DESCRIBE and DESCRIBE_CONFIGS every topic its node uses (a node checks
///   its topics' settings): its inbox and DLQ, the shared topics, every
///   other institution's inbox;
/// - DESCRIBE every other institution's inbox group (`<prefix>.node.<peer>`):
///   its operators see how far each destination has read what it sent (the
///   lag in `queues`). DESCRIBE reads a group's offsets and members; it
///   neither joins nor commits (that takes READ);
/// - with `may_write` only: WRITE every other institution's inbox, the
///   tracking topic and its own DLQ. A suspended or expired institution keeps
///   reading but writes nothing.
///
/// No IDEMPOTENT_WRITE on the cluster: since Kafka 3.0 (KIP-679) WRITE on a
/// topic is enough for an idempotent producer.
pub fn institution_acls(
    topics: &Topics,
    id: &str,
    institutions: &[&str],
    may_write: bool,
) -> BTreeSet<AclBinding> {
    let user = principal(id);
    let allow = |operation, resource_type, name: &str| {
        AclBinding::allow(&user, operation, resource_type, name)
    };
    let peer_ids = institutions.iter().filter(|p| **p != id);
    let peers: Vec<String> = peer_ids.clone().map(|p| topics.inbox(p)).collect();
    let mut acls = BTreeSet::new();
    let readable = [
        topics.inbox(id),
        topics.dlq(id),
        topics.tracking(),
        topics.directory(),
    ];
    for topic in &readable {
        acls.insert(allow(Operation::Read, ResourceType::Topic, topic));
    }
    for group in consumer_groups(topics, id) {
        acls.insert(allow(Operation::Read, ResourceType::Group, &group));
    }
    for peer in peer_ids {
        let [.., inbox_group] = consumer_groups(topics, peer);
        acls.insert(allow(
            Operation::Describe,
            ResourceType::Group,
            &inbox_group,
        ));
    }
    for topic in readable.iter().chain(&peers) {
        acls.insert(allow(Operation::Describe, ResourceType::Topic, topic));
        acls.insert(allow(
            Operation::DescribeConfigs,
            ResourceType::Topic,
            topic,
        ));
    }
    if may_write {
        for topic in peers.iter().chain([&topics.tracking(), &topics.dlq(id)]) {
            acls.insert(allow(Operation::Write, ResourceType::Topic, topic));
        }
    }
    acls
}

/// Every institution's ACLs, as the directory stands at `now_ms`.
pub fn sector_acls(topics: &Topics, directory: &Directory, now_ms: i64) -> BTreeSet<AclBinding> {
    let ids: Vec<&str> = directory.institutions().map(|i| i.id.as_str()).collect();
    directory
        .institutions()
        .flat_map(|i| {
            let may_write = i.inactive_reason(now_ms).is_none();
            institution_acls(topics, &i.id, &ids, may_write)
        })
        .collect()
}

/// What provisioning would change, or changed.
#[derive(Debug, Default)]
pub struct Changes {
    pub create_topics: Vec<TopicPlan>,
    /// Per topic, the settings that fall short.
    pub alter_topics: Vec<(String, Vec<SettingChange>)>,
    /// Institutions without a SCRAM-SHA-512 user.
    pub create_users: Vec<String>,
    pub add_acls: Vec<AclBinding>,
    /// ACLs of institutions' users that the plan does not have.
    pub remove_acls: Vec<AclBinding>,
    /// What provisioning cannot make right, for the operator to deal with.
    pub problems: Vec<String>,
}

impl Changes {
    /// Nothing to create, alter, add or remove.
    pub fn is_empty(&self) -> bool {
        self.create_topics.is_empty()
            && self.alter_topics.is_empty()
            && self.create_users.is_empty()
            && self.add_acls.is_empty()
            && self.remove_acls.is_empty()
    }
}

/// A topic setting that falls short: the value held and the value wanted.
#[derive(Debug, Clone)]
pub struct SettingChange {
    pub key: &'static str,
    pub have: String,
    pub want: String,
}

/// The sector as the directory describes it.
pub struct Sector<'a> {
    pub topics: &'a Topics,
    pub spec: TopicSpec,
    pub directory: &'a Directory,
    pub now_ms: i64,
}

type Admin = Arc<AdminClient<DefaultClientContext>>;

/// Runs a blocking admin call on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    admin: &Admin,
    call: impl FnOnce(&AdminClient<DefaultClientContext>) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let admin = admin.clone();
    tokio::task::spawn_blocking(move || call(&admin))
        .await
        .map_err(|e| Error::Io {
            context: "an admin task failed".into(),
            source: std::io::Error::other(e),
        })?
}

/// Compares the cluster with the sector's plan. Changes nothing.
pub async fn survey(
    admin: &Admin,
    sector: &Sector<'_>,
    timeout: Duration,
) -> Result<Changes, Error> {
    let ids: Vec<&str> = sector
        .directory
        .institutions()
        .map(|i| i.id.as_str())
        .collect();
    let mut changes = Changes::default();

    let plans = topics::sector_plans(sector.topics, &ids, sector.spec);
    let mut alter: BTreeMap<String, Vec<SettingChange>> = BTreeMap::new();
    for shortfall in topics::shortfalls(admin, &plans, timeout).await? {
        match shortfall {
            Shortfall::Missing { topic } => changes
                .create_topics
                .extend(plans.iter().filter(|p| p.name == topic).cloned()),
            Shortfall::Setting {
                topic,
                key,
                have,
                want,
            } => alter
                .entry(topic)
                .or_default()
                .push(SettingChange { key, have, want }),
            other => changes.problems.push(other.to_string()),
        }
    }
    changes.alter_topics = alter.into_iter().collect();

    let users = blocking(admin, {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        move |admin| {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            admin::describe_scram_users(admin, &ids, timeout)
        }
    })
    .await?;
    changes.create_users = users
        .into_iter()
        .filter(|(_, mechanisms)| !mechanisms.contains(&ScramMechanism::Sha512))
        .map(|(user, _)| user)
        .collect();

    let planned = sector_acls(sector.topics, sector.directory, sector.now_ms);
    let held = blocking(admin, move |admin| {
        admin::describe_acls(admin, None, timeout)
    })
    .await?;
    let institution_users: BTreeSet<String> = ids.iter().map(|id| principal(id)).collect();
    let (ours, others): (Vec<AclBinding>, Vec<AclBinding>) = held
        .into_iter()
        .partition(|acl| institution_users.contains(&acl.principal));
    let ours: BTreeSet<AclBinding> = ours.into_iter().collect();
    changes.add_acls = planned.difference(&ours).cloned().collect();
    changes.remove_acls = ours.difference(&planned).cloned().collect();
    // Another principal allowed to write the directory is not this tool's to
    // remove (it may be the operator's own doing), but it breaks the rule.
    let directory_topic = sector.topics.directory();
    for acl in &others {
        let writes = matches!(acl.operation, Operation::Write | Operation::All)
            && acl.permission == Permission::Allow
            && acl.resource_type == ResourceType::Topic;
        let matches = match acl.pattern {
            admin::PatternType::Literal => acl.name == directory_topic || acl.name == "*",
            admin::PatternType::Prefixed => directory_topic.starts_with(&acl.name),
            admin::PatternType::Unknown => false,
        };
        if writes && matches {
            changes.problems.push(format!(
                "ACL {acl} lets someone other than the sector operator write {directory_topic}"
            ));
        }
    }
    Ok(changes)
}

/// Makes `changes` (from [`survey`]): creates topics, raises settings,
/// creates users with `passwords` (one for each of `changes.create_users`),
/// removes ACLs, then adds ACLs.
pub async fn apply(
    admin: &Admin,
    changes: &Changes,
    passwords: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<(), Error> {
    topics::create_missing(admin, &changes.create_topics).await?;
    for (topic, settings) in &changes.alter_topics {
        let topic = topic.clone();
        let settings: Vec<(&'static str, String)> =
            settings.iter().map(|s| (s.key, s.want.clone())).collect();
        blocking(admin, move |admin| {
            let settings: Vec<(&str, &str)> =
                settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
            admin::set_topic_configs(admin, &topic, &settings, timeout)
        })
        .await?;
    }
    let credentials = changes
        .create_users
        .iter()
        .map(|user| match passwords.get(user) {
            Some(password) => Ok((user.clone(), password.clone())),
            None => Err(Error::Io {
                context: format!("no password for the new user {user}"),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    blocking(admin, move |admin| {
        let credentials: Vec<(&str, &str)> = credentials
            .iter()
            .map(|(u, p)| (u.as_str(), p.as_str()))
            .collect();
        admin::upsert_scram_users(admin, &credentials, timeout)
    })
    .await?;
    let remove = changes.remove_acls.clone();
    blocking(admin, move |admin| {
        admin::delete_acls(admin, &remove, timeout)
    })
    .await?;
    let add = changes.add_acls.clone();
    blocking(admin, move |admin| admin::create_acls(admin, &add, timeout)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(acls: &BTreeSet<AclBinding>, operation: Operation) -> Vec<String> {
        acls.iter()
            .filter(|a| a.operation == operation)
            .map(|a| format!("{:?} {}", a.resource_type, a.name))
            .collect()
    }

    #[test]
    fn an_institution_reads_its_own_writes_its_peers_and_nothing_more() {
        let topics = Topics::new("eco");
        let acls = institution_acls(&topics, "b", &["a", "b", "c"], true);
        assert!(acls.iter().all(|a| a.principal == "User:b"
            && a.permission == Permission::Allow
            && a.pattern == admin::PatternType::Literal
            && a.host == "*"));
        assert_eq!(
            names(&acls, Operation::Read),
            [
                "Topic eco.directory",
                "Topic eco.dlq.b",
                "Topic eco.inbox.b",
                "Topic eco.tracking",
                "Group eco.node.b",
                "Group eco.node.b.directory",
                "Group eco.node.b.tracking",
            ]
        );
        assert_eq!(
            names(&acls, Operation::Write),
            [
                "Topic eco.dlq.b",
                "Topic eco.inbox.a",
                "Topic eco.inbox.c",
                "Topic eco.tracking",
            ]
        );
        let described = [
            "Topic eco.directory",
            "Topic eco.dlq.b",
            "Topic eco.inbox.a",
            "Topic eco.inbox.b",
            "Topic eco.inbox.c",
            "Topic eco.tracking",
            "Group eco.node.a",
            "Group eco.node.c",
        ];
        assert_eq!(names(&acls, Operation::Describe), described);
        assert_eq!(names(&acls, Operation::DescribeConfigs), described[..6]);
        assert_eq!(acls.len(), 7 + 4 + 8 + 6);

        // Suspended: the same, without a single WRITE.
        let suspended = institution_acls(&topics, "b", &["a", "b", "c"], false);
        assert!(names(&suspended, Operation::Write).is_empty());
        assert_eq!(
            suspended,
            acls.into_iter()
                .filter(|a| a.operation != Operation::Write)
                .collect()
        );
    }
}
