//! `ecointegra sector provision` against a 3-broker secure cluster (TLS,
//! SASL/SCRAM-SHA-512, ACLs, `allow.everyone.if.no.acl.found=false`), and the
//! ACLs it makes holding for a plain Kafka client with an institution's
//! credentials.
//!
//! `tests/run.sh` starts the cluster (`kafka.sh start --brokers 3 --secure`)
//! once and runs this file alone, with `ECOINTEGRA_SECURE_KAFKA` (the
//! cluster's bootstrap servers), `KAFKA_OPERATOR_LIBRDKAFKA` and
//! `KAFKA_SECURE_CA` set; its other passes skip these tests (`--skip secure_`).
//! Run by hand without those variables, each test fails saying so.
//!
//! SCRAM users are cluster-wide, so every test names its institutions with a
//! random tag: tests never share users, topics or ACLs.

use ecointegra_broker::admin::{
    self, AclBinding, Operation, Permission, ResourceType, ScramMechanism,
};
use ecointegra_broker::directory::Directory;
use ecointegra_broker::kafka::KafkaSettings;
use ecointegra_broker::sector;
use ecointegra_broker::topics::{self, TopicSpec, Topics};
use ecointegra_tests::{Federation, binary, eventually};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Topics as the provisioning in these tests makes them (the cluster has
/// three brokers).
const SPEC: TopicSpec = TopicSpec {
    partitions: 2,
    replication_factor: 3,
    max_message_bytes: 1_000_000,
};

/// The secure cluster `tests/run.sh` started.
struct Cluster {
    bootstrap: String,
    operator_config: PathBuf,
    ca: PathBuf,
}

fn cluster() -> Cluster {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: these tests need the 3-broker secure cluster that \
                 tests/run.sh starts for them (see the top of tests/tests/secure_cluster.rs)"
            )
        })
    };
    Cluster {
        bootstrap: var("ECOINTEGRA_SECURE_KAFKA"),
        operator_config: var("KAFKA_OPERATOR_LIBRDKAFKA").into(),
        ca: var("KAFKA_SECURE_CA").into(),
    }
}

impl Cluster {
    /// The sector operator's admin client (a super user).
    fn operator(&self) -> AdminClient<DefaultClientContext> {
        let text = std::fs::read_to_string(&self.operator_config).unwrap();
        let options = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        KafkaSettings {
            bootstrap_servers: self.bootstrap.clone(),
            options,
            ..Default::default()
        }
        .admin()
        .unwrap()
    }

    /// A plain librdkafka client config with an institution's credentials.
    fn client(&self, user: &str, password: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanisms", "SCRAM-SHA-512")
            .set("sasl.username", user)
            .set("sasl.password", password)
            .set("ssl.ca.location", self.ca.to_str().unwrap())
            .set("log_level", "3");
        config
    }
}

/// A sector of three institutions `a-<tag>`, `b-<tag>`, `c-<tag>` with its
/// own topic prefix, and a credentials file for b and c (a gets a random
/// password).
struct Sector {
    federation: Federation,
    ids: [String; 3],
    credentials: PathBuf,
}

const PASSWORD_B: &str = "b-password-for-the-test";
const PASSWORD_C: &str = "c-password-for-the-test";

impl Sector {
    fn new(test: &str) -> Self {
        let mut tag = [0u8; 3];
        getrandom::fill(&mut tag).unwrap();
        let tag = hex::encode(tag);
        let ids = ["a", "b", "c"].map(|x| format!("{x}-{tag}"));
        let federation = Federation::new(test, &ids.each_ref().map(String::as_str));
        let credentials = federation.root.join("credentials");
        std::fs::write(
            &credentials,
            format!(
                "# institution=password\n{}={PASSWORD_B}\n{}={PASSWORD_C}\n",
                ids[1], ids[2]
            ),
        )
        .unwrap();
        Self {
            federation,
            ids,
            credentials,
        }
    }

    fn topics(&self) -> Topics {
        Topics::new(&self.federation.prefix)
    }

    fn directory(&self) -> Directory {
        let anchor =
            ecointegra_broker::keys::parse_public_key(&self.federation.authority_public_key)
                .unwrap();
        Directory::load(&self.federation.root.join("directory.toml"), &anchor).unwrap()
    }

    /// Runs `ecointegra sector provision`; returns its stdout, having
    /// checked it succeeded.
    fn provision(&self, cluster: &Cluster, extra: &[&str]) -> String {
        let output = std::process::Command::new(binary())
            .args(["sector", "provision", "--directory"])
            .arg(self.federation.root.join("directory.toml"))
            .args([
                "--authority-public-key",
                &self.federation.authority_public_key,
            ])
            .args(["--bootstrap-servers", &cluster.bootstrap])
            .arg("--admin-config")
            .arg(&cluster.operator_config)
            .args(["--topic-prefix", &self.federation.prefix])
            .args(["--partitions", &SPEC.partitions.to_string()])
            .args(["--replication-factor", &SPEC.replication_factor.to_string()])
            .arg("--credentials")
            .arg(&self.credentials)
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            output.status.success(),
            "provision {extra:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Signs a new version of institution `id`'s entry with `status`.
    fn sign(&self, id: &str, status: &str, version: u64) {
        let root = &self.federation.root;
        let output = std::process::Command::new(binary())
            .args(["directory", "sign", "--authority"])
            .arg(root.join("authority.key"))
            .arg("--institution-key")
            .arg(self.federation.key_path(id))
            .args(["--id", id, "--name", id, "--status", status])
            .args(["--version", &version.to_string(), "--file"])
            .arg(root.join("directory.toml"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    }
}

/// What the cluster holds of a sector: its topics' shortfalls, which of its
/// users exist, and its users' ACLs.
struct Held {
    shortfalls: Vec<topics::Shortfall>,
    users: Vec<String>,
    acls: BTreeSet<AclBinding>,
}

async fn held(cluster: &Cluster, sector: &Sector) -> Held {
    let admin = cluster.operator();
    let ids: Vec<&str> = sector.ids.iter().map(String::as_str).collect();
    let plans = topics::sector_plans(&sector.topics(), &ids, SPEC);
    let shortfalls = topics::shortfalls(&admin, &plans, TIMEOUT).await.unwrap();
    let users = admin::describe_scram_users(&admin, &ids, TIMEOUT)
        .unwrap()
        .into_iter()
        .filter(|(_, m)| m.contains(&ScramMechanism::Sha512))
        .map(|(u, _)| u)
        .collect();
    let mut acls = BTreeSet::new();
    for id in &ids {
        acls.extend(admin::describe_acls(&admin, Some(&sector::principal(id)), TIMEOUT).unwrap());
    }
    Held {
        shortfalls,
        users,
        acls,
    }
}

/// Sends one record, as an idempotent producer (as a node does) or a plain
/// one (whose refusal is the topic's own authorisation error, not the
/// idempotent producer's failure to get a producer id).
async fn produce(config: &ClientConfig, idempotent: bool, topic: &str) -> Result<(), KafkaError> {
    let producer: FutureProducer = config
        .clone()
        .set("enable.idempotence", idempotent.to_string())
        .set("acks", "all")
        .set("message.timeout.ms", "15000")
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(topic)
                .key("k")
                .payload("secure-cluster test"),
            Duration::from_secs(0),
        )
        .await
        .map(drop)
        .map_err(|(e, _)| e)
}

fn code(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    match error {
        // rdkafka_error_code() does not look inside these two.
        KafkaError::AdminOp(code) | KafkaError::MessageProduction(code) => Some(*code),
        other => other.rdkafka_error_code(),
    }
}

/// Reads `topic` from the beginning with `group`, committing what it read:
/// the first record, or the first error.
fn consume_one(config: &ClientConfig, group: &str, topic: &str) -> Result<Vec<u8>, KafkaError> {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                consumer.commit_message(&message, CommitMode::Sync)?;
                return Ok(message.payload().unwrap_or_default().to_vec());
            }
            Some(Err(error)) => return Err(error),
            None => {}
        }
    }
    Err(KafkaError::Canceled)
}

/// Commits offset 0 of `topic`'s partition 0 for `group`, without joining
/// it. A refusal shows in the commit, or as the error of the coordinator
/// look-up before it (the commit then only says it is waiting for one).
fn commit_for(config: &ClientConfig, group: &str, topic: &str) -> Result<(), KafkaError> {
    let consumer: BaseConsumer = config.clone().set("group.id", group).create().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, 0, Offset::Offset(0))
        .unwrap();
    let committed = consumer.commit(&offsets, CommitMode::Sync);
    if committed.is_err()
        && let Some(Err(error)) = consumer.poll(Duration::from_millis(500))
    {
        return Err(error);
    }
    committed
}

/// Tries `attempt` until Kafka refuses it with `expected` (another error, a
/// broker not ready or an ACL not yet applied, is tried again); panics at
/// once if it is allowed.
async fn refused<T: std::fmt::Debug>(
    what: &str,
    expected: RDKafkaErrorCode,
    mut attempt: impl AsyncFnMut() -> Result<T, KafkaError>,
) {
    eventually(
        &format!("{what} to be refused with {expected:?}"),
        async || match attempt().await {
            Ok(value) => panic!("{what} was allowed: {value:?}"),
            Err(e) if code(&e) == Some(expected) => Ok(()),
            Err(e) => Err(e.to_string()),
        },
    )
    .await
}

/// `Ok` if a client operation was refused with `expected`, else `Err(what
/// happened)` for [`eventually`] to report.
fn refused_with<T: std::fmt::Debug>(
    result: Result<T, KafkaError>,
    expected: RDKafkaErrorCode,
) -> Result<(), String> {
    match result {
        Err(e) if code(&e) == Some(expected) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_provisioning_is_planned_then_applied_then_idempotent() {
    let cluster = cluster();
    let sector = Sector::new("secure-provision");
    let [a, b, c] = &sector.ids;
    let topics = sector.topics();

    // The dry run prints the plan and changes nothing.
    let plan = sector.provision(&cluster, &["--dry-run"]);
    assert!(plan.starts_with("dry run: nothing is changed"), "{plan}");
    for id in [a, b, c] {
        assert!(
            plan.contains(&format!("create topic {}:", topics.inbox(id))),
            "{plan}"
        );
        assert!(
            plan.contains(&format!("create topic {}:", topics.dlq(id))),
            "{plan}"
        );
    }
    assert!(plan.contains(&format!("create topic {}:", topics.tracking())));
    assert!(plan.contains(&format!("create topic {}:", topics.directory())));
    assert!(plan.contains(&format!("create user {a}: SCRAM-SHA-512, random password")));
    assert!(plan.contains(&format!(
        "create user {b}: SCRAM-SHA-512, password from --credentials"
    )));
    // 25 ACLs per institution in a sector of three (broker::sector's unit
    // test lists them).
    assert_eq!(plan.matches("\nadd ACL User:").count(), 3 * 25, "{plan}");
    assert!(!plan.contains("password of user"), "{plan}");
    let before = held(&cluster, &sector).await;
    assert_eq!(before.shortfalls.len(), 8, "{:?}", before.shortfalls);
    assert!(
        before
            .shortfalls
            .iter()
            .all(|s| matches!(s, topics::Shortfall::Missing { .. }))
    );
    assert!(before.users.is_empty(), "{:?}", before.users);
    assert!(before.acls.is_empty(), "{:?}", before.acls);

    // For real: everything planned is there.
    let done = sector.provision(&cluster, &[]);
    assert!(done.contains("\ndone: create 8 topic(s)"), "{done}");
    assert!(
        done.contains("checked: the cluster matches the directory"),
        "{done}"
    );
    let after = held(&cluster, &sector).await;
    assert!(after.shortfalls.is_empty(), "{:?}", after.shortfalls);
    assert_eq!(after.users, [a.clone(), b.clone(), c.clone()]);
    let planned = sector::sector_acls(&topics, &sector.directory(), ecointegra_broker::now_ms());
    assert_eq!(after.acls, planned);
    assert_eq!(after.acls.len(), 3 * 25);

    // a's random password, printed once, is a's password.
    let password = done
        .lines()
        .find_map(|l| l.strip_prefix(&format!("password of user {a}: ")))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no password for {a} in:\n{done}"));
    assert!(!done.contains(&format!("password of user {b}")), "{done}");
    let as_a = cluster.client(a, password);
    eventually("a writes b's inbox with its printed password", async || {
        produce(&as_a, true, &topics.inbox(b)).await
    })
    .await;

    // Again: nothing to do.
    let again = sector.provision(&cluster, &[]);
    assert_eq!(again, "nothing to do: the cluster matches the directory\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_an_institution_may_do_its_own_work_and_nothing_else() {
    let cluster = cluster();
    let sector = Sector::new("secure-acls");
    let [_, b, c] = &sector.ids;
    let topics = sector.topics();
    sector.provision(&cluster, &[]);
    let as_b = cluster.client(b, PASSWORD_B);
    let as_c = cluster.client(c, PASSWORD_C);

    // b writes c's inbox, as its node's idempotent producer does.
    eventually("b writes c's inbox", async || {
        produce(&as_b, true, &topics.inbox(c)).await
    })
    .await;
    // b reads its own inbox with its own group, and commits.
    eventually("c writes b's inbox", async || {
        produce(&as_c, true, &topics.inbox(b)).await
    })
    .await;
    let [_, _, b_group] = sector::consumer_groups(&topics, b);
    let [_, _, c_group] = sector::consumer_groups(&topics, c);
    let read = eventually("b reads its own inbox", async || {
        tokio::task::block_in_place(|| consume_one(&as_b, &b_group, &topics.inbox(b)))
    })
    .await;
    assert_eq!(read, b"secure-cluster test");

    // Everything else is refused with the authorisation error.
    refused(
        "b reading c's inbox",
        RDKafkaErrorCode::TopicAuthorizationFailed,
        async || tokio::task::block_in_place(|| consume_one(&as_b, &b_group, &topics.inbox(c))),
    )
    .await;
    refused(
        "b writing the directory",
        RDKafkaErrorCode::TopicAuthorizationFailed,
        async || produce(&as_b, false, &topics.directory()).await,
    )
    .await;
    refused(
        "b committing offsets for c's group",
        RDKafkaErrorCode::GroupAuthorizationFailed,
        async || tokio::task::block_in_place(|| commit_for(&as_b, &c_group, &topics.inbox(b))),
    )
    .await;

    let b_admin: AdminClient<DefaultClientContext> = as_b.create().unwrap();
    let options = AdminOptions::new().request_timeout(Some(TIMEOUT));
    let new_topic = format!("{}.made-by-b", sector.federation.prefix);
    let created = b_admin
        .create_topics(
            [&NewTopic::new(&new_topic, 1, TopicReplication::Fixed(3))],
            &options,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            &created[..],
            [Err((_, RDKafkaErrorCode::TopicAuthorizationFailed))]
        ),
        "b creating a topic: {created:?}"
    );
    let deleted = b_admin
        .delete_topics(&[&topics.inbox(b)], &options)
        .await
        .unwrap();
    assert!(
        matches!(
            &deleted[..],
            [Err((_, RDKafkaErrorCode::TopicAuthorizationFailed))]
        ),
        "b deleting its inbox: {deleted:?}"
    );
    let grab = AclBinding::allow(
        &sector::principal(b),
        Operation::Write,
        ResourceType::Topic,
        &topics.directory(),
    );
    let own: Vec<AclBinding> = held(&cluster, &sector).await.acls.into_iter().collect();
    for (what, result) in [
        (
            "creating",
            admin::create_acls(&b_admin, std::slice::from_ref(&grab), TIMEOUT).map(drop),
        ),
        (
            "deleting",
            admin::delete_acls(&b_admin, &own, TIMEOUT).map(drop),
        ),
    ] {
        let code = match &result {
            Err(ecointegra_broker::Error::Kafka { source, .. }) => code(source),
            _ => None,
        };
        assert_eq!(
            code,
            Some(RDKafkaErrorCode::ClusterAuthorizationFailed),
            "b {what} an ACL: {result:?}"
        );
    }
    // Nothing b tried changed the cluster.
    let after = held(&cluster, &sector).await;
    assert!(after.shortfalls.is_empty(), "{:?}", after.shortfalls);
    let planned = sector::sector_acls(&topics, &sector.directory(), ecointegra_broker::now_ms());
    assert_eq!(after.acls, planned);
    let metadata = cluster
        .operator()
        .inner()
        .fetch_metadata(Some(&new_topic), TIMEOUT)
        .unwrap();
    assert!(
        metadata.topics().iter().all(|t| t.error().is_some()),
        "b's topic exists"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_a_suspended_institution_writes_no_peer_inbox() {
    let cluster = cluster();
    let sector = Sector::new("secure-suspend");
    let [a, b, c] = &sector.ids;
    let topics = sector.topics();
    sector.provision(&cluster, &[]);
    let as_b = cluster.client(b, PASSWORD_B);
    eventually("b writes c's inbox while active", async || {
        produce(&as_b, false, &topics.inbox(c)).await
    })
    .await;

    sector.sign(b, "suspended", 2);
    let out = sector.provision(&cluster, &[]);
    let removed: BTreeSet<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("remove ACL "))
        .collect();
    let expected: BTreeSet<String> = [
        topics.inbox(a),
        topics.inbox(c),
        topics.tracking(),
        topics.dlq(b),
    ]
    .iter()
    .map(|t| format!("User:{b} ALLOW WRITE topic {t}"))
    .collect();
    assert_eq!(
        removed,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "{out}"
    );
    assert!(!out.contains("add ACL"), "{out}");

    // Refused from now on, to a node's idempotent producer as to any other.
    eventually("b refused writing c's inbox", async || {
        refused_with(
            produce(&as_b, false, &topics.inbox(c)).await,
            RDKafkaErrorCode::TopicAuthorizationFailed,
        )
    })
    .await;
    assert!(
        produce(&as_b, true, &topics.inbox(a)).await.is_err(),
        "b's idempotent producer wrote a's inbox"
    );
    // b still reads its own inbox.
    let as_c = cluster.client(c, PASSWORD_C);
    eventually("c writes b's inbox", async || {
        produce(&as_c, true, &topics.inbox(b)).await
    })
    .await;
    let [_, _, b_group] = sector::consumer_groups(&topics, b);
    eventually("b, suspended, reads its own inbox", async || {
        tokio::task::block_in_place(|| consume_one(&as_b, &b_group, &topics.inbox(b)))
    })
    .await;
}

impl Sector {
    /// A sector provisioned on the cluster, b's and c's nodes configured as
    /// production runs them, each with its own credentials.
    fn provisioned(test: &str, cluster: &Cluster) -> Self {
        let sector = Sector::new(test);
        sector.provision(cluster, &[]);
        let [_, b, c] = &sector.ids;
        sector.production_config(cluster, c, PASSWORD_C);
        sector.production_config(cluster, b, PASSWORD_B);
        sector
    }

    /// Writes institution `id`'s node config for this cluster, as production
    /// runs it: topics provisioned (the node only checks them), three
    /// replicas, SASL_SSL with `password`.
    fn production_config(&self, cluster: &Cluster, id: &str, password: &str) {
        let options = format!(
            "\n[kafka.options]\n\"security.protocol\" = \"SASL_SSL\"\n\
             \"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"{id}\"\n\
             \"sasl.password\" = \"{password}\"\n\"ssl.ca.location\" = \"{}\"\n",
            cluster.ca.display()
        );
        self.federation
            .write_config(id, &cluster.bootstrap, &options);
        let path = self.federation.config_path(id);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("development = true", "development = false")
            .replace("replication_factor = 1", "replication_factor = 3");
        std::fs::write(&path, text).unwrap();
    }
}

/// Nodes run as production runs them, on the provisioned topics and ACLs
/// with their own institutions' credentials: a filing travels and is
/// receipted. A node with a wrong password is not ready and says why (an
/// authentication failure), accepts filings meanwhile, and delivers them
/// once its credentials are fixed.
#[tokio::test(flavor = "multi_thread")]
async fn secure_nodes_deliver_with_their_own_credentials_and_a_wrong_password_says_why() {
    use ecointegra_proto::v1::FilingStatus;
    let cluster = cluster();
    let sector = Sector::new("secure-nodes");
    sector.provision(&cluster, &[]);
    let [_, b, c] = &sector.ids;
    sector.production_config(&cluster, c, PASSWORD_C);
    sector.production_config(&cluster, b, "not-the-password");
    let dest = sector.federation.start(c).await;

    // b with a wrong password: not ready, and saying why.
    let origin = sector.federation.start(b).await;
    let kafka = origin.node().services().watch.kafka.clone();
    let why = eventually("b to say why it is not ready", async || {
        let problems = kafka.problems.borrow().clone();
        match problems
            .iter()
            .find(|p| p.contains("Authentication failed"))
        {
            Some(p) => Ok(p.clone()),
            None => Err(problems),
        }
    })
    .await;
    assert!(why.contains("not reachable"), "{why}");
    let mut client = origin.client.clone();
    let accepted = ecointegra_tests::submit_sample(&mut client, c).await;
    origin.shutdown().await;

    // Its credentials fixed, b delivers what it had accepted.
    sector.production_config(&cluster, b, PASSWORD_B);
    let origin = sector.federation.start(b).await;
    let mut client = origin.client.clone();
    let delivered = ecointegra_tests::wait_for_status(
        &mut client,
        &accepted.tracking_code,
        FilingStatus::Delivered,
        ecointegra_tests::PATIENCE,
    )
    .await;
    assert_eq!(
        delivered.documents[0].sha256,
        ecointegra_tests::sample_doc().sha256_hex()
    );
    let mut at_c = dest.client.clone();
    let (sha, _) = ecointegra_tests::download_sha256(&mut at_c, &accepted.tracking_code, 0).await;
    assert_eq!(sha, ecointegra_tests::sample_doc().sha256_hex());
    // Health is probed on its own schedule, and a probe may have run while
    // the earlier tests' brokers were still settling: wait for b's report
    // to come clean rather than read it once.
    let kafka = origin.node().services().watch.kafka.clone();
    eventually("b to report no Kafka problems", async || {
        let problems = kafka.problems.borrow().clone();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    })
    .await;
    assert_eq!(ecointegra_tests::inbound_count(&sector.federation, c), 1);

    // b's operators see how far c has read b's records: b may describe c's
    // inbox group (not commit for it; the ACL test checks that).
    let watch = origin.node().services().watch.clone();
    let lag = eventually("b's queue report to know c's lag", async || {
        let watch = watch.clone();
        let report =
            tokio::task::spawn_blocking(move || ecointegra_node::telemetry::queues::queues(&watch))
                .await
                .unwrap()
                .unwrap();
        match report.institutions.iter().find(|r| r.institution == *c) {
            Some(row) if row.lag_known => Ok(row.inbox_lag_records),
            other => Err(other.cloned()),
        }
    })
    .await;
    assert_eq!(lag, 0, "c has applied everything b sent");
    origin.shutdown().await;
    dest.shutdown().await;
}

// ---- brokers failing under the nodes --------------------------------------

/// The pid of broker `n` of the secure cluster (`kafka.sh` keeps it under
/// its data directory, which tests/run.sh exports for these tests).
fn broker_pid(n: i32) -> String {
    let dir = std::env::var("KAFKA_DATA_DIR").expect("KAFKA_DATA_DIR is set by tests/run.sh");
    std::fs::read_to_string(format!("{dir}/broker-{n}/kafka.pid"))
        .unwrap()
        .trim()
        .to_owned()
}

fn signal_broker(n: i32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &broker_pid(n)])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} broker {n}");
}

/// Starts whatever brokers of the secure cluster are down, and waits until
/// all three answer.
fn restart_missing_brokers() {
    ecointegra_tests::kafka_script(&["start", "--brokers", "3", "--secure"]);
}

/// The broker leading `partition` of `topic`.
fn leader(cluster: &Cluster, topic: &str, partition: i32) -> i32 {
    let metadata = cluster
        .operator()
        .inner()
        .fetch_metadata(Some(topic), TIMEOUT)
        .unwrap();
    metadata.topics()[0].partitions()[partition as usize].leader()
}

/// Two institutions' nodes (b sends, c receives), in production mode with
/// their own credentials, on a freshly provisioned sector.
struct Pair {
    sector: Sector,
    origin: ecointegra_tests::Running,
    dest: ecointegra_tests::Running,
    filed: Vec<String>,
}

impl Pair {
    async fn start(test: &str, cluster: &Cluster) -> Self {
        let sector = Sector::provisioned(test, cluster);
        let [_, b, c] = &sector.ids;
        let dest = sector.federation.start(c).await;
        let origin = sector.federation.start(b).await;
        Pair {
            sector,
            origin,
            dest,
            filed: Vec::new(),
        }
    }

    fn inbox(&self) -> String {
        self.sector.topics().inbox(&self.sector.ids[2])
    }

    /// Submits `n` filings from b to c; each is accepted whatever Kafka is
    /// doing.
    async fn submit(&mut self, n: usize) {
        let mut client = self.origin.client.clone();
        for _ in 0..n {
            let filed = ecointegra_tests::submit_sample(&mut client, &self.sector.ids[2]).await;
            self.filed.push(filed.tracking_code);
        }
    }

    /// Every accepted filing delivered with its receipt, exactly one copy of
    /// each at c, and its timeline complete at b.
    async fn assert_each_delivered_once(self) {
        use ecointegra_proto::v1::FilingStatus;
        let mut client = self.origin.client.clone();
        for code in &self.filed {
            ecointegra_tests::wait_for_status(
                &mut client,
                code,
                FilingStatus::Delivered,
                ecointegra_tests::PATIENCE,
            )
            .await;
        }
        let [_, b, c] = &self.sector.ids;
        let count = |id: &str, sql: &str| {
            ecointegra_tests::count_rows(&self.sector.federation.store_path(id), sql)
        };
        assert_eq!(
            ecointegra_tests::inbound_count(&self.sector.federation, c),
            self.filed.len() as i64,
            "one copy of each filing at the destination"
        );
        assert_eq!(
            count(b, "SELECT COUNT(*) FROM receipts"),
            self.filed.len() as i64,
            "one receipt per filing at the origin"
        );
        // REGISTERED, SENT and DELIVERED of each, at the origin too.
        let steps = format!(
            "SELECT COUNT(*) FROM tracking_events WHERE tracking_code IN ({})",
            self.filed
                .iter()
                .map(|c| format!("'{c}'"))
                .collect::<Vec<_>>()
                .join(",")
        );
        eventually(
            "every filing's timeline at the origin",
            async || match count(b, &steps) {
                n if n >= 3 * self.filed.len() as i64 => Ok(n),
                n => Err(n),
            },
        )
        .await;
        assert_eq!(count(c, "SELECT COUNT(*) FROM dead_letters"), 0);
        self.origin.shutdown().await;
        self.dest.shutdown().await;
    }
}

/// While filings stream to c, the broker leading c's inbox is killed, then
/// (once it is back) the one leading the tracking topic: every accepted
/// filing is delivered once with its receipt and its timeline, and neither
/// node restarts.
#[tokio::test(flavor = "multi_thread")]
async fn secure_losing_a_partition_leader_loses_no_filing() {
    let cluster = cluster();
    let mut pair = Pair::start("secure-leader", &cluster).await;
    pair.submit(3).await;
    let inbox_leader = leader(&cluster, &pair.inbox(), 0);
    signal_broker(inbox_leader, "-KILL");
    pair.submit(3).await;
    restart_missing_brokers();
    let tracking = pair.sector.topics().tracking();
    let tracking_leader = leader(&cluster, &tracking, 0);
    signal_broker(tracking_leader, "-KILL");
    pair.submit(3).await;
    restart_missing_brokers();
    pair.assert_each_delivered_once().await;
}

/// The origin's consumer of the tracking topic receives nothing while the
/// destination's steps wait there (a DENY ACL keeps the origin from reading
/// the topic; describing it, and so its offsets, stays allowed): the
/// consumer is taken for stuck and built again, and the node's log says so,
/// naming the topic. Once the ACL is gone the origin's timeline is whole.
#[tokio::test(flavor = "multi_thread")]
async fn secure_a_consumer_receiving_nothing_while_records_wait_is_built_again() {
    use ecointegra_proto::v1::FilingStatus;
    let cluster = cluster();
    let sector = Sector::provisioned("secure-stuck", &cluster);
    let [_, b, c] = &sector.ids;
    let _dest = sector.federation.start(c).await;
    // A process, for its log.
    let origin = sector.federation.spawn(b).await;
    let tracking = sector.topics().tracking();
    let deny = AclBinding {
        permission: Permission::Deny,
        ..AclBinding::allow(
            &format!("User:{b}"),
            Operation::Read,
            ResourceType::Topic,
            &tracking,
        )
    };
    let operator = cluster.operator();
    admin::create_acls(&operator, std::slice::from_ref(&deny), TIMEOUT).unwrap();

    let mut client = origin.client.clone();
    let filed = ecointegra_tests::submit_sample(&mut client, c).await;
    ecointegra_tests::wait_for_status(
        &mut client,
        &filed.tracking_code,
        FilingStatus::Delivered,
        ecointegra_tests::PATIENCE,
    )
    .await;
    let log = sector.federation.root.join(format!("{b}.log"));
    eventually("b's tracking consumer to be built again", async || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .find(|l| l.contains("building it again") && l.contains(&tracking))
            .map(str::to_owned)
            .ok_or(())
    })
    .await;

    admin::delete_acls(&operator, std::slice::from_ref(&deny), TIMEOUT).unwrap();
    let store = sector.federation.store_path(b);
    let steps = format!(
        "SELECT COUNT(*) FROM tracking_events WHERE tracking_code = '{}'",
        filed.tracking_code
    );
    eventually(
        "b's timeline of the filing, whole",
        async || match ecointegra_tests::count_rows(&store, &steps) {
            3 => Ok(()),
            n => Err(n),
        },
    )
    .await;
}

/// Every broker paused (SIGSTOP) for longer than the producer's
/// `message.timeout.ms` (5 s in the tests' configs), then resumed: the
/// filings accepted meanwhile are delivered once each.
#[tokio::test(flavor = "multi_thread")]
async fn secure_brokers_paused_past_the_producer_timeout_lose_nothing() {
    let cluster = cluster();
    let mut pair = Pair::start("secure-pause", &cluster).await;
    pair.submit(2).await;
    for n in 1..=3 {
        signal_broker(n, "-STOP");
    }
    pair.submit(3).await;
    // The partition outlasts the producer's timeout: a transfer's first
    // publication has failed (it waits for a retry, never acknowledged).
    let store = pair.sector.federation.store_path(&pair.sector.ids[1]);
    eventually("a publication to time out while the brokers are paused", async || {
        match ecointegra_tests::count_rows(
            &store,
            "SELECT COUNT(*) FROM outbox WHERE kind = 1 AND attempts = 0 AND next_attempt_at_ms > 0",
        ) {
            0 => Err(0),
            n => Ok(n),
        }
    })
    .await;
    for n in 1..=3 {
        signal_broker(n, "-CONT");
    }
    pair.submit(2).await;
    pair.assert_each_delivered_once().await;
}

/// The three brokers restarted one by one while filings flow: nothing lost,
/// nothing twice.
#[tokio::test(flavor = "multi_thread")]
async fn secure_a_rolling_restart_of_the_brokers_loses_and_duplicates_nothing() {
    let cluster = cluster();
    let mut pair = Pair::start("secure-rolling", &cluster).await;
    for n in 1..=3 {
        pair.submit(2).await;
        let pid = broker_pid(n);
        signal_broker(n, "-TERM");
        // Stopped: its process is gone.
        eventually(
            &format!("broker {n} to stop"),
            async || match std::path::Path::new(&format!("/proc/{pid}")).exists() {
                false => Ok(()),
                true => Err(pid.clone()),
            },
        )
        .await;
        pair.submit(2).await;
        restart_missing_brokers();
    }
    pair.assert_each_delivered_once().await;
}

/// A node's views of the shared topics rebuilt from the beginning: its
/// timeline and directory views and its positions on the tracking and
/// directory topics dropped while it is stopped, it re-reads both topics
/// whole and ends with exactly the views it had.
#[tokio::test(flavor = "multi_thread")]
async fn secure_a_full_replay_of_the_shared_topics_ends_with_identical_views() {
    let cluster = cluster();
    let mut pair = Pair::start("secure-replay", &cluster).await;
    pair.submit(3).await;
    let Pair {
        sector,
        origin,
        dest,
        filed,
    } = pair;
    let b = sector.ids[1].clone();
    let store = sector.federation.store_path(&b);
    let views = || {
        let c = rusqlite::Connection::open(&store).unwrap();
        let rows = |sql: &str| -> Vec<(String, Vec<u8>)> {
            let mut stmt = c.prepare(sql).unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        (
            rows("SELECT event_id, envelope FROM tracking_events ORDER BY event_id"),
            rows("SELECT institution_id, signed FROM directory_entries ORDER BY institution_id"),
        )
    };
    // Every filing's three steps are in b's view first.
    let mut client = origin.client.clone();
    for code in &filed {
        ecointegra_tests::wait_for_status(
            &mut client,
            code,
            ecointegra_proto::v1::FilingStatus::Delivered,
            ecointegra_tests::PATIENCE,
        )
        .await;
    }
    let expected = eventually("b's view of every filing's timeline", async || {
        let (events, directory) = views();
        if events.len() >= 3 * filed.len() {
            Ok((events, directory))
        } else {
            Err(events.len())
        }
    })
    .await;
    origin.shutdown().await;

    let topics = sector.topics();
    let c = rusqlite::Connection::open(&store).unwrap();
    c.execute_batch("DELETE FROM tracking_events; DELETE FROM directory_entries;")
        .unwrap();
    c.execute(
        "DELETE FROM inbox_offsets WHERE topic IN (?1, ?2)",
        [topics.tracking(), topics.directory()],
    )
    .unwrap();
    drop(c);
    assert!(views().0.is_empty());

    let origin = sector.federation.start(&b).await;
    let replayed = eventually("b to re-read the shared topics", async || {
        let now = views();
        if now.0.len() >= expected.0.len() && now.1.len() >= expected.1.len() {
            Ok(now)
        } else {
            Err((now.0.len(), now.1.len()))
        }
    })
    .await;
    assert_eq!(replayed, expected, "the rebuilt views differ");
    origin.shutdown().await;
    dest.shutdown().await;
}
