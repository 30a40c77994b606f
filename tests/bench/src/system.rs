//! The system arm: two real nodes, origin and destination, each an
//! `ecointegra node run` child process of this one (so each node's CPU time,
//! peak memory and disk writes can be read from `/proc/<pid>`), with their
//! own keys, directory, config and data directory, on this run's topic prefix.
//!
//! A filing goes client → gRPC streaming upload (`SubmitFiling`) → origin
//! durable (the answer: *accepted*) → Kafka → destination verifies and stores
//! it (its `StreamInbox` shows it: *delivered*) → signed receipt → origin
//! verifies and stores the receipt and marks the filing DELIVERED
//! (*receipted*, seen by polling the origin's store read-only, which is
//! cheaper than a `GetFiling` per filing and changes in the same transaction).
//!
//! Correctness is checked on the way: the SHA-256 the origin answers must be
//! the one of the bytes sent, the destination's copy must carry the same
//! digest, and no filing may show up twice.

use super::load::Outcome;
use super::payload::Payload;
use ecointegra_broker::directory::{Authority, entry_for};
use ecointegra_broker::keys::SigningIdentity;
use ecointegra_proto::v1::filing_service_client::FilingServiceClient;
use ecointegra_proto::v1::{
    DocumentHeader, FilingHeader, IdentityDocumentType, Party, StreamInboxRequest,
    SubmitFilingRequest, submit_filing_request::Part,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const ORIGIN: &str = "senamhi";
pub const DESTINATION: &str = "oefa";
/// Bytes per upload message, as the `ecointegra filing submit` tool sends.
const UPLOAD_PIECE: u64 = 256 * 1024;

/// A node running as a child process; stopped when dropped.
pub struct NodeProcess {
    pub name: &'static str,
    pub pid: u32,
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    child: Mutex<Option<Child>>,
}

impl NodeProcess {
    fn spawn(
        binary: &Path,
        name: &'static str,
        config: &Path,
        data_dir: PathBuf,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let addr_file = data_dir.join("grpc.addr");
        let log = std::fs::File::create(log)?;
        let mut command = Command::new(binary);
        command
            .args(["node", "run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The node layers ECOINTEGRA_* variables over its file: keep this
        // process's own settings from leaking into the nodes' configuration.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ECOINTEGRA_") {
                command.env_remove(key);
            }
        }
        // The nodes log warnings only, unless ECOINTEGRA_BENCH_NODE_LOG gives
        // their filter (e.g. `info`, to see when each transfer was published).
        let filter = std::env::var("ECOINTEGRA_BENCH_NODE_LOG")
            .unwrap_or_else(|_| "warn,rdkafka=warn".into());
        command.env("ECOINTEGRA_LOG", filter);
        let child = command.spawn()?;
        let pid = child.id();
        let mut process = NodeProcess {
            name,
            pid,
            data_dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: Mutex::new(Some(child)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                process.addr = addr;
                return Ok(process);
            }
            if Instant::now() > deadline || process.exited() {
                anyhow::bail!("the {name} node did not start; see its log");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exited(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child
            .as_mut()
            .is_none_or(|c| c.try_wait().map(|s| s.is_some()).unwrap_or(true))
    }

    /// SIGTERM, then up to 30 s for a clean exit, then SIGKILL.
    pub fn terminate(&self) {
        let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(
            node = self.name,
            "Node did not stop within 30 s; killing it."
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What has been seen of each transfer, in whatever order it is seen.
#[derive(Default)]
struct Entry {
    expected_sha256: Option<String>,
    destination_sha256: Option<Vec<String>>,
    delivered: Option<Instant>,
    receipted: Option<Instant>,
    waiter: Option<oneshot::Sender<()>>,
}

impl Entry {
    fn fire_if_done(&mut self) {
        if self.delivered.is_some()
            && self.receipted.is_some()
            && let Some(waiter) = self.waiter.take()
        {
            let _ = waiter.send(());
        }
    }

    fn check(&self, tracker: &Tracker) {
        if let (Some(expected), Some(got)) = (&self.expected_sha256, &self.destination_sha256)
            && (got.len() != 1 || &got[0] != expected)
        {
            tracker.mismatches.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Tracker {
    entries: Mutex<HashMap<String, Entry>>,
    duplicates: AtomicU64,
    mismatches: AtomicU64,
}

impl Tracker {
    fn with<T>(&self, transfer_id: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        f(entries.entry(transfer_id.to_owned()).or_default())
    }

    fn expect(&self, transfer_id: &str, sha256: String) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.with(transfer_id, |e| {
            e.expected_sha256 = Some(sha256);
            e.check(self);
            e.waiter = Some(tx);
            e.fire_if_done();
        });
        rx
    }

    fn delivered(&self, transfer_id: &str, digests: Vec<String>) {
        let now = Instant::now();
        self.with(transfer_id, |e| {
            if e.delivered.is_some() {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            e.delivered = Some(now);
            e.destination_sha256 = Some(digests);
            e.check(self);
            e.fire_if_done();
        });
    }

    fn receipted(&self, transfer_id: &str) {
        let now = Instant::now();
        self.with(transfer_id, |e| {
            if e.receipted.is_some() {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            e.receipted = Some(now);
            e.fire_if_done();
        });
    }

    fn times(&self, transfer_id: &str) -> (Option<Instant>, Option<Instant>) {
        self.with(transfer_id, |e| (e.delivered, e.receipted))
    }
}

pub struct System {
    pub origin: NodeProcess,
    pub destination: NodeProcess,
    client: FilingServiceClient<Channel>,
    payload: Arc<Payload>,
    tracker: Arc<Tracker>,
    /// Filings the origin accepted with the right digest, warm-up included.
    accepted_total: AtomicU64,
    cancel: CancellationToken,
    stop_poller: Arc<AtomicBool>,
    poller: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl System {
    /// Writes keys, directory and configs under `root`, starts both nodes and
    /// the watchers.
    pub async fn start(
        binary: &Path,
        root: &Path,
        bootstrap: &str,
        prefix: &str,
        payload: Arc<Payload>,
    ) -> anyhow::Result<Arc<System>> {
        std::fs::create_dir_all(root)?;
        // The sector authority signs every institution's directory entry.
        let authority = SigningIdentity::generate();
        let signer = Authority::new(authority.clone());
        let mut entries = Vec::new();
        for id in [ORIGIN, DESTINATION] {
            let identity = SigningIdentity::generate();
            identity.save(&root.join(format!("{id}.key")))?;
            entries.push(signer.sign(&entry_for(id, &id.to_uppercase(), &identity, 1)));
        }
        ecointegra_broker::directory::write_file(&root.join("directory.toml"), &entries)?;
        let quote = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
        let mut nodes = Vec::new();
        for (name, id) in [("origin", ORIGIN), ("destination", DESTINATION)] {
            let data_dir = root.join(format!("{id}-data"));
            let config = root.join(format!("{id}.toml"));
            let text = format!(
                "institution = \"{id}\"\ndata_dir = {}\ndevelopment = true\n\n\
                 [grpc]\nlisten = \"127.0.0.1:0\"\n\n\
                 [kafka]\nbootstrap_servers = {}\ntopic_prefix = \"{prefix}\"\n\
                 replication_factor = 1\n\n\
                 [keys]\nsigning_key_file = {}\ndirectory_file = {}\n\
                 authority_public_key = \"{}\"\n\n\
                 # The benchmark's own nodes, on loopback: its client acts as the\n\
                 # institution's system without a token.\n\
                 [auth]\nanonymous_role = \"system\"\n",
                quote(&data_dir),
                toml::Value::String(bootstrap.to_owned()),
                quote(&root.join(format!("{id}.key"))),
                quote(&root.join("directory.toml")),
                authority.public_key_hex(),
            );
            std::fs::write(&config, text)?;
            let log = root.join(format!("{id}.log"));
            let binary = binary.to_owned();
            nodes.push(tokio::task::spawn_blocking(move || {
                NodeProcess::spawn(&binary, name, &config, data_dir, &log)
            }));
        }
        let origin = nodes.remove(0).await??;
        let destination = nodes.remove(0).await??;
        let client = connect(origin.addr).await?;
        let tracker = Arc::new(Tracker::default());
        let cancel = CancellationToken::new();
        tokio::spawn(watch_inbox(
            connect(destination.addr).await?,
            tracker.clone(),
            cancel.clone(),
        ));
        let stop_poller = Arc::new(AtomicBool::new(false));
        let poller = {
            let db = origin.data_dir.join("node.sqlite3");
            let tracker = tracker.clone();
            let stop = stop_poller.clone();
            std::thread::Builder::new()
                .name("bench-receipts".into())
                .spawn(move || watch_receipts(&db, &tracker, &stop))?
        };
        Ok(Arc::new(System {
            origin,
            destination,
            client,
            payload,
            tracker,
            accepted_total: AtomicU64::new(0),
            cancel,
            stop_poller,
            poller: Mutex::new(Some(poller)),
        }))
    }

    pub fn duplicates(&self) -> u64 {
        self.tracker.duplicates.load(Ordering::Relaxed)
    }

    pub fn mismatches(&self) -> u64 {
        self.tracker.mismatches.load(Ordering::Relaxed)
    }

    pub fn accepted_total(&self) -> u64 {
        self.accepted_total.load(Ordering::Relaxed)
    }

    /// Submits one filing with one document and waits for its receipt.
    pub async fn transfer(&self, seq: u64, size: u64, intended: Instant) -> Outcome {
        let mut outcome = Outcome::default();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let payload = self.payload.clone();
        // Generates and hashes the document while it streams.
        let producer = tokio::spawn(async move {
            let part = |p| SubmitFilingRequest { part: Some(p) };
            let header = FilingHeader {
                destination: DESTINATION.into(),
                subject: format!("Benchmark filing {seq}"),
                sender_party: Some(Party {
                    name: "María Quispe Mamani".into(),
                    document_type: IdentityDocumentType::Dni as i32,
                    document_number: "45781236".into(),
                    email: "maria.quispe@example.pe".into(),
                }),
                folio_count: 1,
                ..Default::default()
            };
            let document = DocumentHeader {
                name: format!("bench-{seq}.pdf"),
                media_type: "application/pdf".into(),
                declared_size: size,
            };
            let mut hasher = Sha256::new();
            if tx.send(part(Part::Header(header))).await.is_err()
                || tx.send(part(Part::Document(document))).await.is_err()
            {
                return None;
            }
            let mut offset = 0;
            while offset < size {
                let len = UPLOAD_PIECE.min(size - offset);
                let piece = payload.piece(seq, offset, len as usize);
                hasher.update(&piece);
                if tx.send(part(Part::Chunk(piece.into()))).await.is_err() {
                    return None;
                }
                offset += len;
            }
            Some(hex::encode(hasher.finalize()))
        });
        let answer = self
            .client
            .clone()
            .submit_filing(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let sent_sha256 = producer.await.ok().flatten();
        let answer = match answer {
            Ok(a) => a.into_inner(),
            Err(status) => {
                outcome.error = Some(format!(
                    "filing {seq}: SubmitFiling failed: {:?}: {}",
                    status.code(),
                    status.message()
                ));
                return outcome;
            }
        };
        let Some(sent_sha256) = sent_sha256 else {
            outcome.error = Some(format!("filing {seq}: the upload stream ended early"));
            return outcome;
        };
        let answered = answer.documents.first().map(|d| d.sha256.as_str());
        if answer.documents.len() != 1 || answered != Some(sent_sha256.as_str()) {
            self.tracker.mismatches.fetch_add(1, Ordering::Relaxed);
            outcome.error = Some(format!(
                "filing {seq}: the origin answered SHA-256 {answered:?}, the bytes sent hash to {sent_sha256}"
            ));
            return outcome;
        }
        outcome.accepted = Some(intended.elapsed());
        self.accepted_total.fetch_add(1, Ordering::Relaxed);
        let done = self.tracker.expect(&answer.transfer_id, sent_sha256);
        let timeout = super::completion_timeout(size);
        if tokio::time::timeout(timeout, done).await.is_err() {
            outcome.error = Some(format!(
                "filing {} ({}): not delivered and receipted within {timeout:?}",
                answer.tracking_code, answer.transfer_id
            ));
        }
        let (delivered, receipted) = self.tracker.times(&answer.transfer_id);
        outcome.delivered = delivered.map(|t| t.saturating_duration_since(intended));
        outcome.receipted = receipted.map(|t| t.saturating_duration_since(intended));
        outcome
    }

    /// Checks both stores: every accepted filing DELIVERED at the origin with
    /// one receipt, and present exactly once at the destination. Returns the
    /// problems found.
    pub fn verify_stores(&self) -> Vec<String> {
        let accepted = self.accepted_total() as i64;
        let mut problems = Vec::new();
        let query = |dir: &Path, sql: &str| -> anyhow::Result<i64> {
            let conn = rusqlite::Connection::open_with_flags(
                dir.join("node.sqlite3"),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            conn.busy_timeout(Duration::from_secs(5))?;
            Ok(conn.query_row(sql, [], |r| r.get(0))?)
        };
        let checks = [
            (
                &self.origin,
                "receipts held by the origin",
                "SELECT count(*) FROM receipts",
            ),
            (
                &self.destination,
                "filings stored by the destination",
                "SELECT count(*) FROM filings",
            ),
            (
                &self.destination,
                "distinct transfers stored by the destination",
                "SELECT count(DISTINCT transfer_id) FROM filings",
            ),
        ];
        for (node, what, sql) in checks {
            match query(&node.data_dir, sql) {
                Ok(n) if n == accepted => {}
                Ok(n) => problems.push(format!("{n} {what}, but {accepted} filings were accepted")),
                Err(e) => problems.push(format!("cannot count {what}: {e}")),
            }
        }
        problems
    }

    /// Stops the watchers and both nodes.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.stop_poller.store(true, Ordering::Relaxed);
        let poller = self.poller.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(p) = poller {
                let _ = p.join();
            }
        })
        .await;
        tokio::task::block_in_place(|| {
            std::thread::scope(|s| {
                s.spawn(|| self.origin.terminate());
                s.spawn(|| self.destination.terminate());
            })
        });
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<FilingServiceClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(FilingServiceClient::new(channel).max_decoding_message_size(8 << 20))
}

/// Follows the destination's inbox: each filing shown there is delivered.
async fn watch_inbox(
    mut client: FilingServiceClient<Channel>,
    tracker: Arc<Tracker>,
    cancel: CancellationToken,
) {
    let mut cursor = String::new();
    loop {
        let request = StreamInboxRequest {
            cursor: cursor.clone(),
        };
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            opened = client.stream_inbox(request) => opened,
        };
        match opened {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    let event = tokio::select! {
                        _ = cancel.cancelled() => return,
                        event = stream.message() => event,
                    };
                    match event {
                        Ok(Some(event)) => {
                            cursor = event.cursor;
                            if let Some(filing) = event.filing {
                                let digests =
                                    filing.documents.into_iter().map(|d| d.sha256).collect();
                                tracker.delivered(&filing.transfer_id, digests);
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(%status, "Destination inbox stream failed; resuming.");
                            break;
                        }
                    }
                }
            }
            Err(status) => tracing::warn!(%status, "Cannot open the destination's inbox stream."),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Polls the origin's store, read-only, for receipts it has verified and
/// stored (the filing turns DELIVERED in the same transaction).
fn watch_receipts(db: &Path, tracker: &Tracker, stop: &AtomicBool) {
    let open = || -> rusqlite::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(1))?;
        Ok(conn)
    };
    let mut conn = None;
    let mut last_rowid = 0i64;
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = open().ok();
        }
        if let Some(c) = &conn {
            let rows = c
                .prepare_cached(
                    "SELECT rowid, transfer_id FROM receipts WHERE rowid > ?1 ORDER BY rowid",
                )
                .and_then(|mut s| {
                    s.query_map([last_rowid], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                });
            match rows {
                Ok(rows) => {
                    for (rowid, transfer_id) in rows {
                        last_rowid = rowid;
                        tracker.receipted(&transfer_id);
                    }
                }
                Err(error) if !warned => {
                    warned = true;
                    tracing::warn!(%error, "Cannot read the origin's receipts; retrying.");
                }
                Err(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
