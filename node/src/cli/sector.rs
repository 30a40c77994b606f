//! `ecointegra sector`: the sector operator's tools. `provision` makes the
//! Kafka cluster match the verified directory: every institution's topics and
//! the shared ones, a SCRAM user per institution, least-privilege ACLs
//! (`ecointegra_broker::sector` says which).

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ecointegra_broker::directory::Directory;
use ecointegra_broker::kafka::KafkaSettings;
use ecointegra_broker::sector::{self, Changes, Sector};
use ecointegra_broker::topics::{TopicSpec, Topics};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How long one request to the cluster may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster may take to show what provisioning did.
const SETTLE: Duration = Duration::from_secs(60);

#[derive(Subcommand)]
pub(crate) enum SectorCommand {
    /// Make the Kafka cluster match the signed directory, idempotently:
    /// create missing topics and raise settings that fall short, create a
    /// SCRAM-SHA-512 user per institution, add the ACLs each institution
    /// needs and remove any other ACL of its user. A suspended or expired
    /// institution keeps reading but loses every WRITE. Prints each change;
    /// exits 1 if something is wrong that provisioning cannot fix.
    Provision(ProvisionArgs),
}

#[derive(Args)]
pub(crate) struct ProvisionArgs {
    /// The signed directory (bootstrap file), verified against
    /// --authority-public-key.
    #[arg(long)]
    directory: PathBuf,
    /// The sector authority's public key (64 hex).
    #[arg(long)]
    authority_public_key: String,
    #[arg(long)]
    bootstrap_servers: String,
    /// The sector operator's librdkafka client settings, KEY=VALUE lines
    /// (security.protocol, sasl.mechanism, sasl.username, sasl.password,
    /// ssl.ca.location).
    #[arg(long)]
    admin_config: PathBuf,
    #[arg(long, default_value = "ecointegra")]
    topic_prefix: String,
    #[arg(long, default_value_t = node_defaults().partitions)]
    partitions: i32,
    #[arg(long, default_value_t = node_defaults().replication_factor)]
    replication_factor: i32,
    /// The topics' max.message.bytes: the nodes' kafka.max_record_bytes.
    #[arg(long, default_value_t = node_defaults().max_record_bytes)]
    max_record_bytes: u32,
    /// INSTITUTION=PASSWORD lines: the password each new user gets. A new
    /// user not listed gets a random one, printed once. Existing users keep
    /// theirs.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Print what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// The node's own defaults for its topics.
fn node_defaults() -> ecointegra_node::config::KafkaConfig {
    ecointegra_node::Config::default().kafka
}

pub(crate) async fn run(command: SectorCommand) -> anyhow::Result<ExitCode> {
    match command {
        SectorCommand::Provision(args) => provision(args).await,
    }
}

async fn provision(args: ProvisionArgs) -> anyhow::Result<ExitCode> {
    use ecointegra_node::config::{MAX_RECORD_BYTES, MIN_RECORD_BYTES};
    if args.partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    if args.replication_factor < 1 {
        bail!("--replication-factor must be at least 1");
    }
    if !(MIN_RECORD_BYTES..=MAX_RECORD_BYTES).contains(&args.max_record_bytes) {
        bail!("--max-record-bytes must be between {MIN_RECORD_BYTES} and {MAX_RECORD_BYTES}");
    }
    if args.topic_prefix.is_empty()
        || !args
            .topic_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        bail!("--topic-prefix must be letters, digits, '.', '_' or '-'");
    }
    let anchor = ecointegra_broker::keys::parse_public_key(&args.authority_public_key)
        .map_err(anyhow::Error::msg)
        .context("--authority-public-key")?;
    let directory = Directory::load(&args.directory, &anchor)?;
    if directory.institutions().next().is_none() {
        bail!("{} lists no institution", args.directory.display());
    }
    let given = match &args.credentials {
        Some(path) => read_credentials(path, &directory)?,
        None => BTreeMap::new(),
    };
    let settings = KafkaSettings {
        bootstrap_servers: args.bootstrap_servers.clone(),
        options: read_properties(&args.admin_config)?,
        max_record_bytes: args.max_record_bytes,
    };
    let admin = Arc::new(settings.admin()?);
    let topics = Topics::new(&args.topic_prefix);
    let sector = Sector {
        topics: &topics,
        spec: TopicSpec {
            partitions: args.partitions,
            replication_factor: args.replication_factor,
            max_message_bytes: args.max_record_bytes,
        },
        directory: &directory,
        now_ms: ecointegra_broker::now_ms(),
    };
    let changes = sector::survey(&admin, &sector, TIMEOUT).await?;

    if args.dry_run {
        println!("dry run: nothing is changed; provisioning would:");
    }
    print_changes(&changes, &given);
    if changes.is_empty() {
        println!("nothing to do: the cluster matches the directory");
    } else if args.dry_run {
        println!("dry run: {}", summary(&changes, "would "));
    } else {
        let mut passwords = given.clone();
        let mut random = Vec::new();
        for user in &changes.create_users {
            passwords.entry(user.clone()).or_insert_with(|| {
                random.push(user.clone());
                ecointegra_node::ids::random_code(32)
            });
        }
        let applied = sector::apply(&admin, &changes, &passwords, TIMEOUT).await;
        if let Err(error) = applied {
            // Users may have been made before the failure, and their
            // passwords exist nowhere else.
            for user in random {
                println!(
                    "password of user {user}, if it was created: {}",
                    passwords[&user]
                );
            }
            return Err(error.into());
        }
        println!("done: {}", summary(&changes, ""));
        for user in random {
            println!(
                "password of user {user}: {} (shown once: hand it to the institution)",
                passwords[&user]
            );
        }
        // Brokers learn of new users and ACLs from the metadata log, a moment
        // later under load: say "done" only once the cluster shows them.
        let deadline = std::time::Instant::now() + SETTLE;
        loop {
            let left = sector::survey(&admin, &sector, TIMEOUT).await?;
            if left.is_empty() {
                println!("checked: the cluster matches the directory");
                break;
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "after {SETTLE:?} the cluster still shows changes to make ({}); run again",
                    summary(&left, "")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    for problem in &changes.problems {
        println!("problem: {problem}");
    }
    if changes.problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} problem(s) that provisioning cannot fix",
            changes.problems.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

fn print_changes(changes: &Changes, given: &BTreeMap<String, String>) {
    for plan in &changes.create_topics {
        let settings: Vec<String> = plan
            .configs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "create topic {}: {} partition(s), replication factor {}, {}",
            plan.name,
            plan.partitions,
            plan.replication_factor,
            settings.join(", ")
        );
    }
    for (topic, settings) in &changes.alter_topics {
        for setting in settings {
            let have = match setting.have.as_str() {
                "" => "(unset)",
                have => have,
            };
            println!(
                "set topic {topic}: {} {have} -> {}",
                setting.key, setting.want
            );
        }
    }
    for user in &changes.create_users {
        let password = if given.contains_key(user) {
            "password from --credentials"
        } else {
            "random password"
        };
        println!("create user {user}: SCRAM-SHA-512, {password}");
    }
    for acl in &changes.remove_acls {
        println!("remove ACL {acl}");
    }
    for acl in &changes.add_acls {
        println!("add ACL {acl}");
    }
}

fn summary(changes: &Changes, would: &str) -> String {
    format!(
        "{would}create {} topic(s), set {} topic setting(s), create {} user(s), \
         remove {} ACL(s), add {} ACL(s)",
        changes.create_topics.len(),
        changes
            .alter_topics
            .iter()
            .map(|(_, s)| s.len())
            .sum::<usize>(),
        changes.create_users.len(),
        changes.remove_acls.len(),
        changes.add_acls.len()
    )
}

/// Non-empty lines that are not comments (`#`, `!`), as `KEY=VALUE`.
fn key_values(path: &Path, what: &str) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("{} line {}: expected {what}", path.display(), n + 1);
        };
        pairs.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(pairs)
}

/// A librdkafka properties file (`KEY=VALUE` lines): a client's settings
/// for a secure cluster, such as the sector operator's.
pub(super) fn read_properties(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut options = BTreeMap::new();
    for (key, value) in key_values(path, "KEY=VALUE")? {
        if key == "bootstrap.servers" {
            bail!(
                "{}: give the brokers with --bootstrap-servers, not bootstrap.servers",
                path.display()
            );
        }
        options.insert(key, value);
    }
    Ok(options)
}

/// `INSTITUTION=PASSWORD` lines, each institution in the directory, once.
fn read_credentials(
    path: &Path,
    directory: &Directory,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut credentials = BTreeMap::new();
    for (id, password) in key_values(path, "INSTITUTION=PASSWORD")? {
        if directory.get(&id).is_none() {
            bail!("{}: {id} is not in the directory", path.display());
        }
        if password.is_empty() {
            bail!("{}: the password of {id} is empty", path.display());
        }
        if credentials.insert(id.clone(), password).is_some() {
            bail!("{}: {id} is listed twice", path.display());
        }
    }
    Ok(credentials)
}
