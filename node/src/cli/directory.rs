//! `ecointegra directory`: the sector authority's tools. Create the authority
//! key, sign entries into a bootstrap file, publish them to the compacted
//! directory topic, and list the verified directory.

use anyhow::{Context, bail};
use clap::Subcommand;
use ecointegra_broker::directory::{self, Authority, DirectoryFile, EntryToml};
use ecointegra_broker::keys::SigningIdentity;
use ecointegra_proto::v1::{EntryStatus, RetiredKey, SignedDirectoryEntry};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub(crate) enum DirectoryCommand {
    /// Create the sector authority's key; print its public key (the trust
    /// anchor every node is configured with).
    Authority {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign an institution's entry and add it to (or replace it in) a
    /// bootstrap file.
    Sign {
        /// The authority's secret key file.
        #[arg(long)]
        authority: PathBuf,
        /// The institution's key file (its public keys go in the entry).
        #[arg(long)]
        institution_key: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        ruc: String,
        /// The first two digits (10 to 99) of the CUOs its node issues for
        /// the PIDE adapter; each institution its own. 0: none.
        #[arg(long, default_value_t = 0)]
        cuo_prefix: u32,
        /// active or suspended.
        #[arg(long, default_value = "active")]
        status: String,
        /// Must be higher than the version nodes hold.
        #[arg(long)]
        version: u64,
        /// A key file this institution used before: still accepted for
        /// `--grace-secs`, so what it signed before rotating stays deliverable.
        #[arg(long)]
        retire_key: Option<PathBuf>,
        #[arg(long, default_value_t = 86_400)]
        grace_secs: i64,
        /// End of validity, milliseconds since the epoch (0: none).
        #[arg(long, default_value_t = 0)]
        valid_until_ms: i64,
        /// The bootstrap file to write into.
        #[arg(long)]
        file: PathBuf,
    },
    /// Publish every entry of a bootstrap file to `<prefix>.directory`.
    Publish {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_servers: String,
        /// librdkafka client settings, KEY=VALUE lines (TLS, SASL): on a
        /// secure cluster, the sector operator's (only it writes the
        /// directory topic).
        #[arg(long)]
        client_config: Option<PathBuf>,
        #[arg(long, default_value = "ecointegra")]
        topic_prefix: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Verify a bootstrap file, then what the directory topic adds, against
    /// the trust anchor, and list the directory in force.
    List {
        /// The authority's public key (64 hex).
        #[arg(long)]
        authority_public_key: String,
        /// A bootstrap file of signed entries.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Also read `<prefix>.directory` from these brokers.
        #[arg(long)]
        bootstrap_servers: Option<String>,
        /// librdkafka client settings for those brokers, KEY=VALUE lines
        /// (TLS, SASL): any identity that may read the directory topic.
        #[arg(long, requires = "bootstrap_servers")]
        client_config: Option<PathBuf>,
        #[arg(long, default_value = "ecointegra")]
        topic_prefix: String,
    },
}

fn read_file(path: &Path) -> anyhow::Result<DirectoryFile> {
    if !path.exists() {
        return Ok(DirectoryFile::default());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not a directory file", path.display()))
}

pub(crate) async fn run(command: DirectoryCommand) -> anyhow::Result<()> {
    match command {
        DirectoryCommand::Authority { out } => {
            let identity = SigningIdentity::generate();
            identity.save(&out)?;
            println!("{}", identity.public_key_hex());
        }
        DirectoryCommand::Sign {
            authority,
            institution_key,
            id,
            name,
            ruc,
            cuo_prefix,
            status,
            version,
            retire_key,
            grace_secs,
            valid_until_ms,
            file,
        } => {
            let authority = Authority::new(SigningIdentity::load(&authority)?);
            let institution = SigningIdentity::load(&institution_key)?;
            let mut entry = directory::entry_for(&id, &name, &institution, version);
            entry.ruc = ruc;
            entry.cuo_prefix = cuo_prefix;
            entry.valid_until_ms = valid_until_ms;
            entry.status = match status.as_str() {
                "active" => EntryStatus::Active as i32,
                "suspended" => EntryStatus::Suspended as i32,
                other => bail!("--status {other:?}: use active or suspended"),
            };
            if let Some(old) = retire_key {
                let old = SigningIdentity::load(&old)?;
                entry.retired_signing_keys.push(RetiredKey {
                    signing_key: old.public_key().as_bytes().to_vec(),
                    accept_until_ms: ecointegra_broker::now_ms() + grace_secs * 1000,
                });
            }
            let signed = authority.sign(&entry);
            directory::verify_entry(&signed, &authority.public_key())
                .map_err(anyhow::Error::msg)?;
            let others = read_file(&file)?;
            if let Some(taken) = others
                .entry
                .iter()
                .find(|e| cuo_prefix != 0 && e.cuo_prefix == cuo_prefix && e.institution_id != id)
            {
                bail!(
                    "--cuo-prefix {cuo_prefix} is {}'s: each institution needs its own, so CUOs \
                     stay unique across the sector",
                    taken.institution_id
                );
            }
            let mut entries: Vec<SignedDirectoryEntry> = others
                .entry
                .iter()
                .filter(|e| e.institution_id != id)
                .map(EntryToml::to_signed)
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::msg)?;
            entries.push(signed);
            directory::write_file(&file, &entries)?;
            println!("signed {id} version {version} into {}", file.display());
        }
        DirectoryCommand::Publish {
            bootstrap_servers,
            client_config,
            topic_prefix,
            file,
        } => {
            use prost::Message;
            let settings = ecointegra_broker::kafka::KafkaSettings {
                bootstrap_servers,
                options: client_options(client_config.as_deref())?,
                ..Default::default()
            };
            let publisher = ecointegra_broker::kafka::Publisher::new(
                &settings,
                std::time::Duration::from_secs(30),
            )?;
            let topic = ecointegra_broker::topics::Topics::new(topic_prefix).directory();
            for entry in read_file(&file)?.entry {
                let signed = entry.to_signed().map_err(anyhow::Error::msg)?;
                let meta = ecointegra_broker::kafka::RecordMeta {
                    message_type: "DIRECTORY_ENTRY",
                    sender: "authority",
                    message_id: &entry.institution_id,
                };
                publisher
                    .publish(
                        &topic,
                        &entry.institution_id,
                        &signed.encode_to_vec(),
                        &meta,
                        &[],
                    )
                    .await?;
                println!(
                    "published {} version {} to {topic}",
                    entry.institution_id, entry.version
                );
            }
        }
        DirectoryCommand::List {
            authority_public_key,
            file,
            bootstrap_servers,
            client_config,
            topic_prefix,
        } => {
            let anchor = ecointegra_broker::keys::parse_public_key(&authority_public_key)
                .map_err(anyhow::Error::msg)?;
            let mut directory = match &file {
                Some(file) => ecointegra_broker::directory::Directory::load(file, &anchor)?,
                None => ecointegra_broker::directory::Directory::default(),
            };
            if let Some(servers) = bootstrap_servers {
                let topic = ecointegra_broker::topics::Topics::new(topic_prefix).directory();
                let options = client_options(client_config.as_deref())?;
                let entries = tokio::task::spawn_blocking(move || {
                    read_directory_topic(&servers, &options, &topic)
                })
                .await??;
                for (offset, signed) in entries {
                    let applied = ecointegra_broker::directory::verify_entry(&signed, &anchor)
                        .and_then(|entry| directory.insert(&entry).map(drop));
                    if let Err(reason) = applied {
                        eprintln!("refused the entry at offset {offset}: {reason}");
                    }
                }
            }
            let now = ecointegra_broker::now_ms();
            for i in directory.institutions() {
                println!(
                    "{:<10} v{:<3} {:<10} signing {}…  encryption {}…  {}",
                    i.id,
                    i.version,
                    i.inactive_reason(now).map_or("active", |_| "INACTIVE"),
                    &hex::encode(i.signing_key.as_bytes())[..16],
                    &hex::encode(i.encryption_key)[..16],
                    i.name
                );
            }
        }
    }
    Ok(())
}

/// Every record of the directory topic, from the beginning to its end.
/// The client settings in `path`, if given.
fn client_options(path: Option<&Path>) -> anyhow::Result<BTreeMap<String, String>> {
    path.map_or_else(|| Ok(BTreeMap::new()), super::sector::read_properties)
}

/// Every record of the directory topic, read by assignment: no consumer
/// group is joined or committed, so a reader needs READ on the topic alone.
fn read_directory_topic(
    servers: &str,
    options: &BTreeMap<String, String>,
    topic: &str,
) -> anyhow::Result<Vec<(i64, SignedDirectoryEntry)>> {
    use prost::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    use std::time::{Duration, Instant};
    let mut config = rdkafka::ClientConfig::new();
    for (key, value) in options {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config
        .set("bootstrap.servers", servers)
        .set("group.id", "ecointegra-directory-list")
        .set("enable.auto.commit", "false")
        .create()?;
    let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&list)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next = 0;
    while next < high && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message?;
            next = message.offset() + 1;
            match SignedDirectoryEntry::decode(message.payload().unwrap_or_default()) {
                Ok(signed) => out.push((message.offset(), signed)),
                Err(e) => eprintln!("offset {} is not a signed entry: {e}", message.offset()),
            }
        }
    }
    Ok(out)
}
