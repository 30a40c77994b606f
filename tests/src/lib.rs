//! Harness for the integration tests: a federation of institutions with their
//! keys, directory and configs in a temporary directory, whose nodes run
//! in-process or as real `ecointegra` processes against the Kafka broker that
//! `tests/run.sh` started (`KAFKA_BOOTSTRAP`). Each federation has its own
//! topic prefix, so tests never see each other's messages.
//!
//! # Layout
//!
//! - [`Federation`]: institutions, keys, directory and configs;
//!   [`Federation::start_all`] starts every node in-process, each a
//!   [`Running`] node with a connected client ([`Federation::spawn`] runs one
//!   as a real process instead).
//! - Filings: [`header`], [`Doc`], [`submit`], [`submit_sample`] and
//!   [`deliver_sample`] for a test that needs a filing but not a particular one.
//! - Waiting: [`eventually`] is the one way to wait for something; the other
//!   waits ([`wait_for_status`], [`wait_for_filing`], [`caught_up`],
//!   [`settled`]) are conditions over it. A test never sleeps to let something
//!   happen: before asserting that something did *not* happen, it waits for a
//!   positive condition that proves it would have by then ([`settled`]).
//! - Kafka and the store, read as an operator would: [`read_topic`],
//!   [`produce_raw`], [`committed_offsets`], [`count_rows`].

use ecointegra_broker::directory::{Authority, entry_for};
use ecointegra_broker::keys::SigningIdentity;
use ecointegra_node::Config;
use ecointegra_proto::v1::filing_service_client::FilingServiceClient;
use ecointegra_proto::v1::{DirectoryEntry, SignedDirectoryEntry};
use ecointegra_proto::v1::{
    DocumentHeader, DownloadDocumentRequest, Filing, FilingHeader, FilingStatus, GetFilingRequest,
    IdentityDocumentType, Party, SubmitFilingRequest, SubmitFilingResponse,
    download_document_response, submit_filing_request::Part,
};
use sha2::{Digest, Sha256};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub type Client = FilingServiceClient<Channel>;

/// How long a test waits for anything: long enough for a loaded two-core
/// machine, and spent only when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(300);

/// Time between two polls of [`eventually`].
const POLL: Duration = Duration::from_millis(10);

pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn unique(name: &str) -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).unwrap();
    format!("{name}-{}-{}", std::process::id(), hex::encode(bytes))
}

/// Institutions with keys, a directory and a config each, under one prefix.
pub struct Federation {
    pub root: PathBuf,
    pub authority_public_key: String,
    pub prefix: String,
    institutions: Vec<String>,
}

impl Federation {
    pub fn new(test: &str, institutions: &[&str]) -> Self {
        Self::with_settings(test, institutions, "")
    }

    /// `extra` is TOML appended to every node's config (e.g. a `[transfer]` table).
    pub fn with_settings(test: &str, institutions: &[&str], extra: &str) -> Self {
        let prefix = unique(&format!("t-{test}"));
        let root = std::env::temp_dir().join("ecointegra-tests").join(&prefix);
        std::fs::create_dir_all(&root).unwrap();
        // The sector authority signs every institution's directory entry.
        let authority = SigningIdentity::generate();
        authority.save(&root.join("authority.key")).unwrap();
        let signer = Authority::new(authority.clone());
        let mut entries = Vec::new();
        for id in institutions {
            let identity = SigningIdentity::generate();
            identity.save(&root.join(format!("{id}.key"))).unwrap();
            entries.push(signer.sign(&entry_for(id, &id.to_uppercase(), &identity, 1)));
        }
        ecointegra_broker::directory::write_file(&root.join("directory.toml"), &entries).unwrap();
        let federation = Self {
            authority_public_key: authority.public_key_hex(),
            root,
            prefix,
            institutions: institutions.iter().map(|s| s.to_string()).collect(),
        };
        for id in institutions {
            federation.write_config(id, &bootstrap(), extra);
        }
        federation
    }

    pub fn write_config(&self, id: &str, bootstrap: &str, extra: &str) {
        let text = format!(
            "institution = \"{id}\"\ndata_dir = \"{id}-data\"\n\
             # One local broker: the node creates its topics, with one replica.\n\
             development = true\n\n[grpc]\nlisten = \"127.0.0.1:0\"\n\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic_prefix = \"{}\"\npartitions = 2\n\
             replication_factor = 1\n\
             message_timeout_ms = 5000\n\n[keys]\nsigning_key_file = \"{id}.key\"\n\
             directory_file = \"directory.toml\"\nauthority_public_key = \"{}\"\n\n\
             [health]\nprobe_interval_ms = 500\n{auth}{extra}",
            self.prefix,
            self.authority_public_key,
            // Functional tests call as an institutional system; the security
            // tests configure roles themselves.
            auth = if extra.contains("[auth]") {
                ""
            } else {
                "\n[auth]\nanonymous_role = \"system\"\n"
            },
        );
        std::fs::write(self.config_path(id), text).unwrap();
    }

    /// The sector authority, to sign new directory entries in a test.
    pub fn authority(&self) -> Authority {
        Authority::new(SigningIdentity::load(&self.root.join("authority.key")).unwrap())
    }

    pub fn identity(&self, id: &str) -> SigningIdentity {
        SigningIdentity::load(&self.key_path(id)).unwrap()
    }

    /// Gives an institution a key and a config, without listing it in the
    /// bootstrap directory.
    pub fn add_unlisted(&mut self, id: &str) -> SigningIdentity {
        let identity = SigningIdentity::generate();
        identity.save(&self.key_path(id)).unwrap();
        self.institutions.push(id.to_owned());
        self.write_config(id, &bootstrap(), "");
        identity
    }

    /// Publishes a signed entry on the federation's directory topic.
    pub async fn publish_entry(&self, signed: &SignedDirectoryEntry) {
        use prost::Message;
        let entry = DirectoryEntry::decode(signed.entry.as_slice()).unwrap();
        produce_raw(
            &format!("{}.directory", self.prefix),
            &entry.institution_id,
            &signed.encode_to_vec(),
        )
        .await;
    }

    /// Rotates an institution's signing (and so encryption) key as the
    /// sector does it with `ecointegra directory sign --retire-key OLD` and
    /// `directory publish`: a new key in its key file; the old one kept as
    /// `<id>-retired-v<version>.key` and added to its config's
    /// `previous_signing_key_files` (what is in flight to it stays readable);
    /// and its entry of `version`, listing the old key as retired at
    /// `retired_at_ms`, signed by the authority, written to the bootstrap
    /// directory and published on the directory topic. Stop its node first;
    /// it signs with the new key once started again. Returns the old key.
    pub async fn rotate_key(&self, id: &str, version: u64, retired_at_ms: i64) -> SigningIdentity {
        let old = self.identity(id);
        let kept = format!("{id}-retired-v{version}.key");
        std::fs::rename(self.key_path(id), self.root.join(&kept)).unwrap();
        let new = SigningIdentity::generate();
        new.save(&self.key_path(id)).unwrap();
        let config = std::fs::read_to_string(self.config_path(id)).unwrap();
        let config = if config.contains("previous_signing_key_files = [") {
            config.replace(
                "previous_signing_key_files = [",
                &format!("previous_signing_key_files = [\"{kept}\", "),
            )
        } else {
            config.replace(
                "[keys]\n",
                &format!("[keys]\nprevious_signing_key_files = [\"{kept}\"]\n"),
            )
        };
        std::fs::write(self.config_path(id), config).unwrap();
        let mut entry = entry_for(id, &id.to_uppercase(), &new, version);
        entry
            .retired_signing_keys
            .push(ecointegra_proto::v1::RetiredKey {
                signing_key: old.public_key().as_bytes().to_vec(),
                accept_until_ms: retired_at_ms,
            });
        let signed = self.authority().sign(&entry);
        let path = self.root.join("directory.toml");
        let file: ecointegra_broker::directory::DirectoryFile =
            toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut entries: Vec<SignedDirectoryEntry> = file
            .entry
            .iter()
            .filter(|e| e.institution_id != id)
            .map(|e| e.to_signed().unwrap())
            .collect();
        entries.push(signed.clone());
        ecointegra_broker::directory::write_file(&path, &entries).unwrap();
        self.publish_entry(&signed).await;
        old
    }

    /// Changes an institution's entry in the bootstrap directory (before its
    /// nodes start), signed again by the authority: e.g. its RUC and CUO
    /// prefix for the PIDE adapter, or its status.
    pub fn edit_entry(&self, id: &str, change: impl FnOnce(&mut DirectoryEntry)) {
        use prost::Message;
        let path = self.root.join("directory.toml");
        let file: ecointegra_broker::directory::DirectoryFile =
            toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut change = Some(change);
        let entries: Vec<SignedDirectoryEntry> = file
            .entry
            .iter()
            .map(|e| {
                let signed = e.to_signed().unwrap();
                match change.take_if(|_| e.institution_id == id) {
                    Some(change) => {
                        let mut entry = DirectoryEntry::decode(signed.entry.as_slice()).unwrap();
                        change(&mut entry);
                        self.authority().sign(&entry)
                    }
                    None => signed,
                }
            })
            .collect();
        ecointegra_broker::directory::write_file(&path, &entries).unwrap();
    }

    /// Waits until node `of` holds `id`'s directory entry of `version` (it
    /// records each entry it applies).
    pub async fn directory_version(&self, of: &str, id: &str, version: u64) {
        let query = format!(
            "SELECT COALESCE(MAX(version), 0) FROM directory_entries WHERE institution_id = '{id}'"
        );
        let what = format!("{of} to apply {id}'s directory entry of version {version} (version)");
        eventually(&what, async || {
            let held = count_rows(&self.store_path(of), &query);
            if held >= version as i64 {
                Ok(())
            } else {
                Err(held)
            }
        })
        .await;
    }

    pub fn institutions(&self) -> &[String] {
        &self.institutions
    }

    pub fn config_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.toml"))
    }

    pub fn key_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.key"))
    }

    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}-data"))
    }

    pub fn store_path(&self, id: &str) -> PathBuf {
        self.data_dir(id).join("node.sqlite3")
    }

    /// The node's configuration, as `ecointegra node run --config` reads it.
    pub fn config(&self, id: &str) -> Config {
        Config::load(Some(&self.config_path(id))).unwrap()
    }

    pub fn topic_inbox(&self, id: &str) -> String {
        format!("{}.inbox.{id}", self.prefix)
    }

    pub fn topic_tracking(&self) -> String {
        format!("{}.tracking", self.prefix)
    }

    pub fn topic_dlq(&self, id: &str) -> String {
        format!("{}.dlq.{id}", self.prefix)
    }

    /// Starts a node inside the test process, with a client connected to it.
    /// With `ECOINTEGRA_TEST_LOG` set (a tracing filter), the nodes' logs go
    /// to stderr.
    pub async fn start(&self, id: &str) -> Running {
        if let Ok(filter) = std::env::var("ECOINTEGRA_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let node = ecointegra_node::Node::start(self.config(id))
            .await
            .unwrap_or_else(|e| panic!("{id}'s node did not start: {e}"));
        let client = client(node.grpc_addr()).await;
        self.topics_ready().await;
        Running { client, node }
    }

    /// Waits until the inboxes of the federation and its tracking topic
    /// exist and have a leader on every partition, as provisioned topics
    /// would before a node's first filing (a node creates its topics in the
    /// background as it starts). A filing published while its destination's
    /// inbox was being created lost its first record though librdkafka had
    /// acknowledged it (idempotent producer, Kafka 4.1.1): its chunks after
    /// that one arrived alone and were dead-lettered. With Kafka down on
    /// purpose, or after 30 s, it returns without waiting further.
    pub async fn topics_ready(&self) {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let mut topics: Vec<String> = self
            .institutions
            .iter()
            .map(|id| self.topic_inbox(id))
            .collect();
        topics.push(self.topic_tracking());
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .create()
            .unwrap();
        let consumer = std::sync::Arc::new(consumer);
        // Not ready after 30 s: the test goes on, and says what it misses.
        let waited = poll_within(Duration::from_secs(30), async || {
            let (c, names) = (consumer.clone(), topics.clone());
            tokio::task::spawn_blocking(move || {
                // Kafka is down (on purpose, in some tests): nothing to wait for.
                let Ok(metadata) = c.fetch_metadata(None, Duration::from_secs(2)) else {
                    return Ok(());
                };
                let ready = |name: &String| {
                    metadata.topics().iter().any(|t| {
                        t.name() == name
                            && t.error().is_none()
                            && !t.partitions().is_empty()
                            && t.partitions()
                                .iter()
                                .all(|p| p.leader() >= 0 && p.error().is_none())
                    })
                };
                match names.iter().find(|name| !ready(name)) {
                    None => Ok(()),
                    Some(missing) => Err(format!("{missing} has no leader yet")),
                }
            })
            .await
            .unwrap()
        })
        .await;
        if let Err(missing) = waited {
            eprintln!("topics not ready after 30 s: {missing}");
        }
    }

    /// Starts every institution's node in-process, in the order they were
    /// named: `let [senamhi, oefa] = federation.start_all().await;`.
    pub async fn start_all<const N: usize>(&self) -> [Running; N] {
        let ids = self.every_institution::<N>();
        let mut running = Vec::with_capacity(N);
        for id in &ids {
            running.push(self.start(id).await);
        }
        running.try_into().ok().unwrap()
    }

    /// Starts every institution's node as a real process, in the order they
    /// were named.
    pub async fn spawn_all<const N: usize>(&self) -> [NodeProcess; N] {
        let ids = self.every_institution::<N>();
        let mut running = Vec::with_capacity(N);
        for id in &ids {
            running.push(self.spawn(id).await);
        }
        running.try_into().ok().unwrap()
    }

    fn every_institution<const N: usize>(&self) -> [String; N] {
        self.institutions
            .clone()
            .try_into()
            .unwrap_or_else(|all: Vec<String>| {
                panic!("{N} nodes asked for, but the federation has {all:?}")
            })
    }

    /// Starts a node as a real `ecointegra node run` process, and waits until
    /// it listens.
    pub async fn spawn(&self, id: &str) -> NodeProcess {
        self.spawn_with(id, &binary()).await
    }

    /// [`Federation::spawn`], with another build of the node (the release
    /// before, say).
    pub async fn spawn_with(&self, id: &str, binary: &Path) -> NodeProcess {
        self.spawn_as(id, binary, &[]).await
    }

    /// [`Federation::spawn`], with these environment variables set (`Some`)
    /// or removed (`None`).
    pub async fn spawn_env(&self, id: &str, env: &[(&str, Option<&str>)]) -> NodeProcess {
        self.spawn_as(id, &binary(), env).await
    }

    async fn spawn_as(&self, id: &str, binary: &Path, env: &[(&str, Option<&str>)]) -> NodeProcess {
        let data_dir = self.data_dir(id);
        let addr_file = data_dir.join("grpc.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log_path = self.root.join(format!("{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut command = Command::new(binary);
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let child = command
            .args(["node", "run", "--config"])
            .arg(self.config_path(id))
            .env("ECOINTEGRA_LOG", "info,rdkafka=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the ecointegra binary runs (tests/run.sh builds it)");
        // Killed when dropped, even if it never comes up.
        let mut starting = Starting(Some(child));
        let what = format!("{id}'s process to listen (its log: {})", log_path.display());
        let addr = eventually(&what, async || {
            if let Some(Ok(Some(status))) = starting.0.as_mut().map(Child::try_wait) {
                panic!(
                    "{id}'s process exited ({status}); its log: {}",
                    log_path.display()
                );
            }
            let text = std::fs::read_to_string(&addr_file).map_err(|e| e.to_string())?;
            text.trim()
                .parse::<SocketAddr>()
                .map_err(|e| format!("{text:?}: {e}"))
        })
        .await;
        self.topics_ready().await;
        NodeProcess {
            child: starting.0.take().unwrap(),
            client: client(addr).await,
            addr,
        }
    }
}

/// A process that has not listened yet: killed if dropped before it does.
struct Starting(Option<Child>);

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A node running inside the test process, with a client connected to it.
pub struct Running {
    /// A client of the node's gRPC services, as an institutional system.
    pub client: Client,
    node: ecointegra_node::Node,
}

impl Running {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.node.grpc_addr()
    }

    /// The running node itself, for what only the process can see.
    pub fn node(&self) -> &ecointegra_node::Node {
        &self.node
    }

    /// Stops the node cleanly (gRPC drains, the producer flushes, offsets
    /// are committed).
    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// The `ecointegra` binary: `ECOINTEGRA_BIN`, or beside the test executable.
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("ECOINTEGRA_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .unwrap()
        .join("ecointegra")
}

/// A node running as its own process; killed when dropped.
pub struct NodeProcess {
    child: Child,
    pub addr: SocketAddr,
    /// A client of the node's gRPC services, as an institutional system.
    pub client: Client,
}

impl NodeProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        self.child.wait().unwrap()
    }

    /// The environment the process runs with now (`/proc/PID/environ`):
    /// `NAME=value` each.
    pub fn environment(&self) -> Vec<String> {
        std::fs::read(format!("/proc/{}/environ", self.pid()))
            .unwrap()
            .split(|b| *b == 0)
            .filter(|entry| !entry.is_empty())
            .map(|entry| String::from_utf8_lossy(entry).into_owned())
            .collect()
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub async fn client(addr: SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FilingServiceClient::new(channel).max_decoding_message_size(8 << 20)
}

/// A valid header addressed to `destination`.
pub fn header(destination: &str, subject: &str) -> FilingHeader {
    FilingHeader {
        destination: destination.into(),
        subject: subject.into(),
        sender_party: Some(Party {
            name: "María Quispe Mamani".into(),
            document_type: IdentityDocumentType::Dni as i32,
            document_number: "45781236".into(),
            email: "maria.quispe@example.pe".into(),
        }),
        folio_count: 3,
        ..Default::default()
    }
}

/// Deterministic pseudo-random bytes, generated piece by piece so a test never
/// holds a large document in memory.
#[derive(Clone, Debug)]
pub struct Doc {
    pub name: String,
    pub len: u64,
    pub seed: u64,
}

impl Doc {
    pub fn new(name: &str, len: u64, seed: u64) -> Self {
        Self {
            name: name.into(),
            len,
            seed,
        }
    }

    /// Calls `f` with consecutive pieces of the document.
    pub fn for_each_piece(&self, piece: usize, mut f: impl FnMut(&[u8])) {
        let mut state = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut remaining = self.len;
        let mut buffer = vec![0u8; piece];
        while remaining > 0 {
            let n = (piece as u64).min(remaining) as usize;
            for chunk in buffer[..n].chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            f(&buffer[..n]);
            remaining -= n as u64;
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len as usize);
        self.for_each_piece(64 * 1024, |p| out.extend_from_slice(p));
        out
    }

    pub fn sha256_hex(&self) -> String {
        let mut hasher = Sha256::new();
        self.for_each_piece(256 * 1024, |p| hasher.update(p));
        hex::encode(hasher.finalize())
    }
}

/// The parts of a submission: the header, then each document's header and bytes.
pub fn parts(
    header: FilingHeader,
    docs: &[Doc],
) -> impl tokio_stream::Stream<Item = SubmitFilingRequest> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let docs = docs.to_vec();
    std::thread::spawn(move || {
        let send = |part| {
            tx.blocking_send(SubmitFilingRequest { part: Some(part) })
                .is_ok()
        };
        if !send(Part::Header(header)) {
            return;
        }
        for doc in docs {
            let document = DocumentHeader {
                name: doc.name.clone(),
                media_type: "application/pdf".into(),
                declared_size: doc.len,
            };
            if !send(Part::Document(document)) {
                return;
            }
            let mut open = true;
            doc.for_each_piece(256 * 1024, |piece| {
                if open {
                    open = send(Part::Chunk(piece.to_vec().into()));
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A submission of one document, streamed by the test as it pleases: the
/// header and the document's header go now; `feed` sends bytes of it (or
/// is dropped, ending the stream short of what it declared).
pub fn streamed_submission(
    header: FilingHeader,
    doc: &Doc,
) -> (
    tokio::sync::mpsc::Sender<SubmitFilingRequest>,
    tokio_stream::wrappers::ReceiverStream<SubmitFilingRequest>,
) {
    let (feed, parts) = tokio::sync::mpsc::channel(64);
    let document = DocumentHeader {
        name: doc.name.clone(),
        media_type: "application/pdf".into(),
        declared_size: doc.len,
    };
    for part in [Part::Header(header), Part::Document(document)] {
        feed.try_send(SubmitFilingRequest { part: Some(part) })
            .unwrap();
    }
    (feed, tokio_stream::wrappers::ReceiverStream::new(parts))
}

/// Sends `bytes` as document chunks of 64 KiB.
pub async fn feed_bytes(feed: &tokio::sync::mpsc::Sender<SubmitFilingRequest>, bytes: &[u8]) {
    for piece in bytes.chunks(64 * 1024) {
        let part = Part::Chunk(piece.to_vec().into());
        feed.send(SubmitFilingRequest { part: Some(part) })
            .await
            .unwrap();
    }
}

pub async fn submit(
    client: &mut Client,
    header: FilingHeader,
    docs: &[Doc],
) -> Result<SubmitFilingResponse, tonic::Status> {
    client
        .submit_filing(parts(header, docs))
        .await
        .map(|r| r.into_inner())
}

pub async fn get(client: &mut Client, code: &str) -> Result<Filing, tonic::Status> {
    client
        .get_filing(GetFilingRequest {
            tracking_code: code.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// What one poll of [`eventually`] found: `Some` or `Ok` ends the wait with
/// its value; `None` or `Err` is what was seen instead, reported if the wait
/// times out.
pub trait Probe {
    type Value;
    type Seen: Debug;
    fn ready(self) -> Result<Self::Value, Self::Seen>;
}

impl<T> Probe for Option<T> {
    type Value = T;
    type Seen = Option<()>;
    fn ready(self) -> Result<T, Option<()>> {
        self.ok_or(None)
    }
}

impl<T, E: Debug> Probe for Result<T, E> {
    type Value = T;
    type Seen = E;
    fn ready(self) -> Result<T, E> {
        self
    }
}

/// Polls `probe` until it returns `Some`/`Ok`, and returns that value. After
/// [`PATIENCE`] it panics, naming `what` was awaited and the last value seen
/// (return `Err(what you saw)` rather than `None` to make that useful).
pub async fn eventually<P: Probe>(what: &str, probe: impl AsyncFnMut() -> P) -> P::Value {
    eventually_within(what, PATIENCE, probe).await
}

async fn eventually_within<P: Probe>(
    what: &str,
    within: Duration,
    probe: impl AsyncFnMut() -> P,
) -> P::Value {
    poll_within(within, probe).await.unwrap_or_else(|seen| {
        panic!("gave up after {within:?} waiting for {what}; last seen: {seen:?}")
    })
}

/// Polls `probe` until it returns `Some`/`Ok`, for at most `within`:
/// its value, or what it saw last.
async fn poll_within<P: Probe>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> P,
) -> Result<P::Value, P::Seen> {
    let deadline = Instant::now() + within;
    loop {
        match probe().await.ready() {
            Ok(value) => return Ok(value),
            Err(seen) if Instant::now() >= deadline => return Err(seen),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Polls a node until its record of `code` satisfies `check`; panics naming
/// `what` and the filing last seen.
pub async fn wait_for_filing(
    client: &mut Client,
    code: &str,
    what: &str,
    check: impl Fn(&Filing) -> bool,
) -> Filing {
    eventually(&format!("{code}: {what}"), async || {
        match get(client, code).await {
            Ok(filing) if check(&filing) => Ok(filing),
            other => Err(other),
        }
    })
    .await
}

/// Polls until the filing reaches `status`, or panics after `timeout` with
/// the status last seen.
pub async fn wait_for_status(
    client: &mut Client,
    code: &str,
    status: FilingStatus,
    timeout: Duration,
) -> Filing {
    let what = format!("{code} to be {status:?}");
    eventually_within(&what, timeout, async || match get(client, code).await {
        Ok(filing) if filing.status == status as i32 => Ok(filing),
        Ok(filing) => Err(Ok(FilingStatus::try_from(filing.status))),
        Err(e) => Err(Err(e)),
    })
    .await
}

/// The document of a sample filing: small enough for one chunk.
pub fn sample_doc() -> Doc {
    Doc::new("solicitud.pdf", 1_000, 1)
}

/// Submits a sample filing (one [`sample_doc`]) to `destination`, for a test
/// that needs a filing but not a particular one.
pub async fn submit_sample(client: &mut Client, destination: &str) -> SubmitFilingResponse {
    submit(client, header(destination, "Consulta"), &[sample_doc()])
        .await
        .unwrap_or_else(|status| panic!("a sample filing to {destination} was refused: {status:?}"))
}

/// Submits a sample filing and waits until the origin holds its receipt
/// (DELIVERED): the destination's inbox exists and its node is consuming.
pub async fn deliver_sample(client: &mut Client, destination: &str) -> SubmitFilingResponse {
    let filed = submit_sample(client, destination).await;
    delivered(client, filed).await
}

/// Submits a filing and waits until the origin holds its receipt.
pub async fn deliver(
    client: &mut Client,
    header: FilingHeader,
    docs: &[Doc],
) -> SubmitFilingResponse {
    let filed = submit(client, header, docs)
        .await
        .unwrap_or_else(|status| panic!("a filing was refused: {status:?}"));
    delivered(client, filed).await
}

/// Waits until the origin of `filed` holds its receipt (DELIVERED).
async fn delivered(client: &mut Client, filed: SubmitFilingResponse) -> SubmitFilingResponse {
    wait_for_status(
        client,
        &filed.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    filed
}

/// Writes `bundle` to `path` and checks it as its holder would, with the
/// real `ecointegra evidence verify` and the sector authority's key (hex):
/// whether it passed, and what it printed.
pub fn verify_evidence(path: &Path, bundle: &[u8], authority: &str, lang: &str) -> (bool, String) {
    std::fs::write(path, bundle).unwrap();
    let out = Command::new(binary())
        .args(["evidence", "verify", "--authority-public-key", authority])
        .args(["--lang", lang])
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Downloads a document, returning its SHA-256 (hex) and length.
pub async fn download_sha256(client: &mut Client, code: &str, index: u32) -> (String, u64) {
    let mut stream = client
        .download_document(DownloadDocumentRequest {
            tracking_code: code.into(),
            document_index: index,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(part) = stream.message().await.unwrap() {
        if let Some(download_document_response::Part::Chunk(data)) = part.part {
            hasher.update(&data);
            len += data.len() as u64;
        }
    }
    (hex::encode(hasher.finalize()), len)
}

/// Rows of a node's store matching a query, read directly (read-only).
pub fn count_rows(store: &Path, sql: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The step a node stored in `tracking_events`: the payload of the envelope
/// it keeps for it (column `envelope`).
pub fn stored_step(envelope: &[u8]) -> ecointegra_proto::v1::TrackingEvent {
    use prost::Message as _;
    let envelope = ecointegra_proto::v1::Envelope::decode(envelope).unwrap();
    ecointegra_proto::v1::TrackingEvent::decode(envelope.payload.as_ref()).unwrap()
}

/// Waits until the node whose store is `store` holds the registration of
/// `code`, so a citizen's look-up there can succeed (failed look-ups are
/// rate-limited per client: polling before that would lock the test out).
pub async fn registration_known(store: &Path, code: &str) {
    let sql = format!(
        "SELECT COUNT(*) FROM tracking_events WHERE tracking_code = '{code}' \
         AND event_id LIKE '%/REGISTERED'"
    );
    eventually(
        &format!("{code}'s registration in {}", store.display()),
        async || match count_rows(store, &sql) {
            0 => Err(()),
            _ => Ok(()),
        },
    )
    .await;
}

/// A config entry for an API token of `role`, as `ecointegra keys token`
/// writes it: the token's SHA-256, never the token.
pub fn token_entry(name: &str, role: &str, token: &str) -> String {
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    format!("[[auth.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_sha256 = \"{digest}\"\n")
}

/// Filings delivered to `id` (inbound), as its store holds them.
pub fn inbound_count(federation: &Federation, id: &str) -> i64 {
    count_rows(
        &federation.store_path(id),
        "SELECT COUNT(*) FROM filings WHERE direction = 2",
    )
}

/// Runs `deploy/kafka/kafka.sh` with the given arguments (fault tests only).
pub fn kafka_script(args: &[&str]) {
    let script = std::env::var("ECOINTEGRA_KAFKA_SCRIPT")
        .expect("ECOINTEGRA_KAFKA_SCRIPT is set by tests/run.sh");
    let status = Command::new(script)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "kafka.sh {args:?} failed");
}

/// Reads every record of a topic from the beginning until `count` arrived or
/// `timeout`. It blocks its thread: tests with in-process nodes use the
/// multi-thread runtime so the nodes keep running meanwhile.
pub fn read_topic(
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            out.push(message.detach());
        }
    }
    out
}

/// Every record a topic holds now, from the beginning to its end, in each
/// partition's order.
pub fn read_all(topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(30);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut ends = Vec::new();
    for partition in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), timeout)
            .unwrap();
        if high > low {
            assignment
                .add_partition_offset(topic, partition.id(), Offset::Offset(low))
                .unwrap();
            ends.push((partition.id(), high));
        }
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    let at_end = |consumer: &BaseConsumer| {
        let positions = consumer.position().unwrap();
        ends.iter().all(|(partition, end)| {
            matches!(
                positions.find_partition(topic, *partition).map(|p| p.offset()),
                Some(Offset::Offset(at)) if at >= *end
            )
        })
    };
    while !at_end(&consumer) {
        assert!(Instant::now() < deadline, "{topic} was not read to its end");
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            out.push(message.unwrap().detach());
        }
    }
    out
}

/// The dead letters on a DLQ topic, reading until `count` arrived or 30 s.
pub fn read_dead_letters(topic: &str, count: usize) -> Vec<ecointegra_proto::v1::DeadLetter> {
    use prost::Message as _;
    use rdkafka::Message as _;
    read_topic(topic, count, Duration::from_secs(30))
        .iter()
        .map(|m| ecointegra_proto::v1::DeadLetter::decode(m.payload().unwrap()).unwrap())
        .collect()
}

/// Produces raw bytes to a topic, as an attacker or a broken client would
/// (up to 2 MB: larger than any node's own records, as kcat could).
pub async fn produce_raw(topic: &str, key: &str, value: &[u8]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// A listed institution's own signing key, to sign what its node would not:
/// the tests' hostile but listed institution.
pub fn listed_sealer(federation: &Federation, id: &str) -> ecointegra_broker::envelope::Sealer {
    ecointegra_broker::envelope::Sealer::new(
        id,
        ecointegra_broker::keys::SigningIdentity::load(&federation.key_path(id)).unwrap(),
    )
}

/// The offsets a consumer group has committed for `partitions` of `topic`, as
/// any Kafka admin tool reads them (-1 where none is committed).
pub fn committed_offsets(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::TopicPartitionList;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    (0..partitions)
        .map(|p| {
            committed
                .find_partition(topic, p)
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1)
        })
        .collect()
}

/// The end of each partition of a topic (its high watermark), as Kafka
/// reports it now.
struct Ends {
    consumer: rdkafka::consumer::BaseConsumer,
}

impl Ends {
    fn new() -> Self {
        let consumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .create()
            .unwrap();
        Self { consumer }
    }

    fn of(&self, topic: &str) -> Vec<i64> {
        use rdkafka::consumer::Consumer;
        let timeout = Duration::from_secs(10);
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), timeout)
            .unwrap_or_else(|e| panic!("no metadata for {topic}: {e}"));
        let partitions = metadata.topics()[0].partitions().len() as i32;
        (0..partitions)
            .map(|p| {
                self.consumer
                    .fetch_watermarks(topic, p, timeout)
                    .unwrap_or_else(|e| panic!("no watermarks for {topic}/{p}: {e}"))
                    .1
            })
            .collect()
    }
}

/// Records of `topic` that node `id` has not applied yet: per partition, the
/// topic's end minus the offset the node stored with its last effect.
fn unapplied(federation: &Federation, id: &str, topic: &str, ends: &[i64]) -> Vec<i64> {
    ends.iter()
        .enumerate()
        .map(|(partition, end)| {
            let stored = count_rows(
                &federation.store_path(id),
                &format!(
                    "SELECT COALESCE(MAX(next_offset), 0) FROM inbox_offsets \
                     WHERE topic = '{topic}' AND partition = {partition}"
                ),
            );
            end - stored
        })
        .collect()
}

/// Waits until node `id` has applied every record written to `topic` so far
/// (its stored offsets reach the end Kafka reports).
pub async fn caught_up(federation: &Federation, id: &str, topic: &str) {
    let ends = Ends::new();
    let what = format!("{id} to apply every record of {topic} (records left per partition)");
    eventually(&what, async || {
        let left = unapplied(federation, id, topic, &ends.of(topic));
        if left.iter().all(|&n| n <= 0) {
            Ok(())
        } else {
            Err(left)
        }
    })
    .await
}

/// Waits until the nodes of `ids` are quiet: no envelope (a receipt, a
/// tracking event) waits in any of their outboxes, and then each has applied
/// every record in its inbox and in the tracking topic up to the end Kafka
/// reports. Whatever the test
/// caused before has had its effect at every node by then, so a test waits for
/// this before asserting that something did *not* happen (no second filing, no
/// second receipt, no new dead letter).
pub async fn settled(federation: &Federation, ids: &[&str]) {
    let ends = Ends::new();
    eventually(&format!("{ids:?} to settle"), async || {
        for id in ids {
            let queued = count_rows(
                &federation.store_path(id),
                // Kind 2: one sealed envelope (the node's OutboxKind::Envelope).
                "SELECT COUNT(*) FROM outbox WHERE kind = 2",
            );
            if queued > 0 {
                return Err(format!("{id} has {queued} envelopes to publish"));
            }
        }
        let tracking = federation.topic_tracking();
        for id in ids {
            for topic in [federation.topic_inbox(id), tracking.clone()] {
                let left = unapplied(federation, id, &topic, &ends.of(&topic));
                if left.iter().any(|&n| n > 0) {
                    return Err(format!("{id} has {left:?} records of {topic} to apply"));
                }
            }
        }
        Ok(())
    })
    .await
}

/// Adds `Authorization: Bearer <token>` to every call, when there is one.
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        Ok(request)
    }
}

pub type AuthChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;
pub type AuthClient = ecointegra_proto::v1::filing_service_client::FilingServiceClient<AuthChannel>;

async fn channel_as(addr: SocketAddr, token: Option<&str>) -> AuthChannel {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::service::interceptor::InterceptedService::new(channel, Bearer(token.map(str::to_owned)))
}

/// A filing client of the node at `addr` calling with `token` (None: none).
pub async fn client_as(addr: SocketAddr, token: Option<&str>) -> AuthClient {
    ecointegra_proto::v1::filing_service_client::FilingServiceClient::new(
        channel_as(addr, token).await,
    )
}

/// An operations client of the node at `addr` calling with `token`.
pub async fn operations_as(
    addr: SocketAddr,
    token: Option<&str>,
) -> ecointegra_proto::v1::operations_service_client::OperationsServiceClient<AuthChannel> {
    ecointegra_proto::v1::operations_service_client::OperationsServiceClient::new(
        channel_as(addr, token).await,
    )
}

/// A plain HTTP/1.1 GET of `path` at `addr` (`host:port`): the status and
/// the whole answer, headers included.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// Waits until `sql` (a `SELECT COUNT(*)`) counts `n` rows in `store`.
pub async fn rows_become(what: &str, store: &Path, sql: &str, n: i64) {
    eventually(what, async || match count_rows(store, sql) {
        found if found == n => Ok(()),
        found => Err(found),
    })
    .await;
}

/// A filing's timeline as a citizen sees it at the node on `addr`.
pub async fn track(
    addr: SocketAddr,
    tracking_code: &str,
    verification_code: &str,
) -> Vec<ecointegra_proto::v1::TimelineEntry> {
    let mut tracking =
        ecointegra_proto::v1::tracking_service_client::TrackingServiceClient::connect(format!(
            "http://{addr}"
        ))
        .await
        .unwrap();
    tracking
        .track(ecointegra_proto::v1::TrackRequest {
            tracking_code: tracking_code.into(),
            verification_code: verification_code.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .timeline
}

/// The notification queue of `channel` as the operator sees it at the node
/// on `addr` (the queue report's `notifications`), with an operator's token.
pub async fn notification_queue(
    addr: SocketAddr,
    operator_token: &str,
    channel: &str,
) -> ecointegra_proto::v1::NotificationQueue {
    let mut ops = operations_as(addr, Some(operator_token)).await;
    let report = ops
        .get_queues(ecointegra_proto::v1::GetQueuesRequest {})
        .await
        .unwrap()
        .into_inner();
    report
        .notifications
        .iter()
        .find(|n| n.channel == channel)
        .cloned()
        .unwrap_or_else(|| panic!("no {channel} queue in {report:#?}"))
}
