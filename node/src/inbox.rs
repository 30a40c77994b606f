//! The inbox consumer: reads this institution's inbox topic from the offsets
//! kept in the store, verifies every record before acting on it, and applies
//! records' effects together with their offsets in local transactions.
//!
//! - Group commit: the consumer takes whatever records librdkafka has already
//!   fetched (up to [`BATCH_RECORDS`] and [`BATCH_BYTES`]; it never waits for
//!   more) and applies them in one store transaction, each record in a
//!   savepoint of its own, together with its offset: one fsync per batch, and
//!   a crash anywhere leaves either a record's effect and its offset, or
//!   neither. A record that fails rolls back only itself; the records before
//!   it commit, it is dead-lettered (or retried, if the failure was local),
//!   and the batch goes on after it.
//! - Signatures, decryption and chunk digests are checked before the store is
//!   touched, outside the writer's lock.
//! - Chunks are written to partial files, which are fsynced once per batch
//!   before its transaction commits, so memory stays bounded whatever the
//!   document size.
//! - A manifest whose documents all arrived and hash right becomes an inbound
//!   filing, and its signed receipt is queued for the origin.
//! - A receipt for one of our transfers marks the filing DELIVERED.
//! - Anything that cannot be decoded, verified or assembled goes to the DLQ with
//!   its reason, and the partition moves on.

use crate::deadlines::{Calendar, Day};
use crate::error::{Error, Result};
use crate::node::Shared;
use crate::store::{self, Delivery, DocumentRow, NewFiling, Partial, Position, ReceiptRow};
use crate::trace::Incoming;
use ecointegra_broker::directory::Directory;
use ecointegra_broker::envelope::{self, Rejection};
use ecointegra_broker::kafka::InboxConsumer;
use ecointegra_proto::v1::{
    Chunk, Direction, DirectoryEntry, DocumentDigest, Envelope, FilingStatus, Manifest,
    MessageType, Notice, Receipt, SignedDirectoryEntry, TrackingEvent, Transfer, TransferKind,
};
use prost::Message as _;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a record was not applied.
pub enum Fault {
    /// The record itself is bad: dead-letter it and move on.
    Reject(Rejection),
    /// The transfer's data is corrupt: forget its partial documents (so a
    /// re-send starts afresh), then dead-letter the record.
    Corrupt(Box<Corrupt>),
    /// Something local failed (disk, store): retry the same record.
    Local(Error),
}

impl From<Rejection> for Fault {
    fn from(r: Rejection) -> Self {
        Fault::Reject(r)
    }
}

impl From<Error> for Fault {
    fn from(e: Error) -> Self {
        Fault::Local(e)
    }
}

/// A transfer whose data is corrupt, and the record that found it out.
pub struct Corrupt {
    pub rejection: Rejection,
    pub transfer_id: String,
    pub documents: Vec<DocumentDigest>,
}

/// Why a batch stopped before its end.
enum Stop {
    Fault(Box<Fault>),
    /// The record is a large transfer's manifest: commit what precedes it, so
    /// its documents can be hashed outside the writer's lock.
    Later,
}

impl<T: Into<Fault>> From<T> for Stop {
    fn from(f: T) -> Self {
        Stop::Fault(Box::new(f.into()))
    }
}

/// Local failures of one record tolerated before it is dead-lettered instead.
const LOCAL_RETRIES: u32 = 5;
/// Records applied in one transaction at most.
pub const BATCH_RECORDS: usize = 256;
/// Bytes of records applied in one transaction at most (four 512 KiB
/// chunks). A batch is held twice while it is applied (as read, and
/// decrypted), and the allocator keeps what each store thread used: with 8 MiB
/// the destination's peak RSS tripled; with 2 MiB large transfers still pay
/// one fsync per four chunks.
pub const BATCH_BYTES: usize = 2 << 20;
/// A transfer larger than this is hashed outside the writer's lock, where
/// its reading does not hold up other writers.
const LARGE_TRANSFER: u64 = 8 << 20;

/// Which topic a consumer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// This institution's inbox: transfers, receipts, notices.
    Inbox,
    /// The sector's tracking events.
    Tracking,
    /// Signed directory entries.
    Directory,
}

/// Consumes this institution's inbox.
pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    consume(shared, Feed::Inbox, cancel).await
}

/// Follows the directory topic: new institutions, key rotations, suspensions.
pub async fn run_directory(shared: Arc<Shared>, cancel: CancellationToken) {
    consume(shared, Feed::Directory, cancel).await
}

/// Consumes the sector's tracking topic into the local timeline.
pub async fn run_tracking(shared: Arc<Shared>, cancel: CancellationToken) {
    consume(shared, Feed::Tracking, cancel).await
}

async fn consume(shared: Arc<Shared>, feed: Feed, cancel: CancellationToken) {
    let consumer = loop {
        match connect(&shared, feed).await {
            Ok(consumer) => break consumer,
            Err(error) => {
                tracing::warn!(%error, "Inbox not ready; retrying.");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    let what = match feed {
        Feed::Inbox => "inbox",
        Feed::Tracking => "tracking topic",
        Feed::Directory => "directory topic",
    };
    tracing::info!(topic = %consumer.topic(), "Consuming the {what}.");
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => break,
            batch = gather(&consumer) => batch,
        };
        handle_batch(&shared, feed, &consumer, batch, &cancel).await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(error) = consumer.commit() {
            tracing::warn!(%error, "Offsets not committed at shutdown; the store has them.");
        }
    })
    .await;
}

/// Waits for one record, then takes every record already fetched, up to the
/// batch limits. It never waits for more: under load batches grow by
/// themselves while the previous one commits.
async fn gather(consumer: &InboxConsumer) -> Vec<OwnedMessage> {
    let first = loop {
        match consumer.recv().await {
            Ok(message) => break message.detach(),
            Err(error) => {
                tracing::warn!(%error, "Inbox read failed.");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let size = |m: &OwnedMessage| m.payload().map_or(0, <[u8]>::len);
    let mut bytes = size(&first);
    let mut batch = vec![first];
    while batch.len() < BATCH_RECORDS && bytes < BATCH_BYTES {
        match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
            Ok(Ok(message)) => {
                let message = message.detach();
                bytes += size(&message);
                batch.push(message);
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "Inbox read failed.");
                break;
            }
            Err(_) => break,
        }
    }
    batch
}

/// Creates the node's topics, then the consumer, assigned from stored offsets.
async fn connect(shared: &Arc<Shared>, feed: Feed) -> Result<Arc<InboxConsumer>> {
    let settings = shared.config.kafka_settings();
    let admin = settings.admin()?;
    let directory = shared.directory();
    let peers: Vec<&str> = directory.institutions().map(|i| i.id.as_str()).collect();
    ecointegra_broker::topics::ensure_node_topics(
        &admin,
        &shared.topics,
        shared.institution(),
        &peers,
        shared.topic_spec(),
    )
    .await?;
    let (topic, group) = match feed {
        Feed::Inbox => (shared.inbox_topic(), shared.group_id()),
        Feed::Tracking => (
            shared.topics.tracking(),
            format!("{}.tracking", shared.group_id()),
        ),
        Feed::Directory => (
            shared.topics.directory(),
            format!("{}.directory", shared.group_id()),
        ),
    };
    let consumer = Arc::new(InboxConsumer::new(&settings, &group, &topic)?);
    let c = consumer.clone();
    let partitions = tokio::task::spawn_blocking(move || c.partitions(Duration::from_secs(5)))
        .await
        .map_err(|e| Error::Io {
            context: "metadata task failed".into(),
            source: std::io::Error::other(e),
        })??;
    let topic_for_store = topic.clone();
    let stored = shared
        .store
        .run(move |s| s.inbox_positions(&topic_for_store))
        .await?;
    let positions: Vec<(i32, Option<i64>)> = partitions
        .iter()
        .map(|p| (*p, stored.iter().find(|(sp, _)| sp == p).map(|(_, o)| *o)))
        .collect();
    consumer.assign(&positions)?;
    Ok(consumer)
}

/// A batch's records with their trace contexts; shared with store threads.
type Records = Arc<Vec<(OwnedMessage, Incoming)>>;

fn position(record: &OwnedMessage) -> Position<'_> {
    Position {
        topic: record.topic(),
        partition: record.partition(),
        offset: record.offset(),
    }
}

/// Applies a batch: as many records per transaction as apply cleanly, each
/// failing record handled on its own, in order.
async fn handle_batch(
    shared: &Arc<Shared>,
    feed: Feed,
    consumer: &InboxConsumer,
    batch: Vec<OwnedMessage>,
    cancel: &CancellationToken,
) {
    let started = std::time::SystemTime::now();
    let records: Records = Arc::new(
        batch
            .into_iter()
            .map(|record| {
                shared.metrics.consumed(
                    record.topic(),
                    record.payload().map_or(0, <[u8]>::len),
                    feed == Feed::Inbox,
                );
                let incoming = crate::trace::on_record(&record, feed == Feed::Inbox);
                (record, incoming)
            })
            .collect(),
    );
    let mut next = 0;
    while next < records.len() {
        let (applied, stop) = match apply_batch(shared, feed, records.clone(), next, None).await {
            Ok(outcome) => outcome,
            Err(error) => (Vec::new(), Some(Stop::from(error))),
        };
        for effect in applied {
            finish(shared, consumer, &records[next], effect, started);
            next += 1;
        }
        if let Some(Stop::Fault(fault)) = stop {
            handle_fault(
                shared, feed, consumer, &records, next, *fault, cancel, started,
            )
            .await;
            next += 1;
        }
    }
}

/// A record that failed on its own: retried while the failure is local,
/// otherwise dead-lettered, so it neither stalls its partition nor is lost.
#[allow(clippy::too_many_arguments)]
async fn handle_fault(
    shared: &Arc<Shared>,
    feed: Feed,
    consumer: &InboxConsumer,
    records: &Records,
    index: usize,
    mut fault: Fault,
    cancel: &CancellationToken,
    started: std::time::SystemTime,
) {
    let (record, _) = &records[index];
    let position = position(record);
    let mut failures = 0;
    let rejection = loop {
        match fault {
            Fault::Reject(rejection) => break rejection,
            Fault::Corrupt(corrupt) => {
                let Corrupt {
                    rejection,
                    transfer_id,
                    documents,
                } = *corrupt;
                if let Err(error) = discard_partials(shared, &transfer_id, &documents).await {
                    tracing::error!(%error, %transfer_id, "Cannot discard corrupt partial documents.");
                }
                break rejection;
            }
            Fault::Local(error) if failures < LOCAL_RETRIES => {
                failures += 1;
                tracing::error!(%error, offset = position.offset, "Cannot apply an inbox record; retrying.");
                tokio::time::sleep(Duration::from_millis(200 << failures)).await;
                fault = match apply_batch(shared, feed, records.clone(), index, Some(1)).await {
                    Ok((mut applied, None)) if applied.len() == 1 => {
                        let effect = applied.remove(0);
                        finish(shared, consumer, &records[index], effect, started);
                        return;
                    }
                    Ok((_, Some(Stop::Fault(fault)))) => *fault,
                    Ok(_) => Fault::Local(Error::FailedPrecondition(
                        "a record alone in its batch was not applied".into(),
                    )),
                    Err(error) => Fault::Local(error),
                };
            }
            Fault::Local(error) => {
                break Rejection::new("local", format!("could not be stored here: {error}"));
            }
        }
    };
    dead_letter(shared, record, position, &rejection, cancel).await;
    finish(shared, consumer, &records[index], Applied::Nothing, started);
}

/// What a committed record still does outside the store.
enum Applied {
    Nothing,
    Delivered {
        filing_id: i64,
        bytes: u64,
        tracking_code: String,
        origin: String,
    },
    ReceiptQueued,
    Receipted {
        registered_at_ms: i64,
        tracking_code: String,
        destination: String,
        registry_number: String,
    },
    Notice {
        tracking_code: String,
        by: String,
        status: FilingStatus,
    },
    DirectoryEntry {
        institution: String,
        version: u64,
    },
}

/// After a record's transaction committed: notify, count, log, trace, and
/// tell Kafka the offset may be committed.
fn finish(
    shared: &Arc<Shared>,
    consumer: &InboxConsumer,
    (record, incoming): &(OwnedMessage, Incoming),
    applied: Applied,
    started: std::time::SystemTime,
) {
    let _span = incoming.span.enter();
    match applied {
        Applied::Nothing => {}
        Applied::Delivered {
            filing_id,
            bytes,
            tracking_code,
            origin,
        } => {
            shared.metrics.filing_received(bytes);
            tracing::info!(%tracking_code, %origin, "Filing delivered.");
            shared.inbox_head.send_replace(filing_id);
            shared.relay_wake.notify_one();
        }
        Applied::ReceiptQueued => shared.relay_wake.notify_one(),
        Applied::Receipted {
            registered_at_ms,
            tracking_code,
            destination,
            registry_number,
        } => {
            shared.metrics.receipted(Duration::from_millis(
                (ecointegra_broker::now_ms() - registered_at_ms).max(0) as u64,
            ));
            tracing::info!(
                %tracking_code,
                %destination,
                %registry_number,
                "Receipt stored; filing delivered."
            );
        }
        Applied::Notice {
            tracking_code,
            by,
            status,
        } => tracing::info!(%tracking_code, %by, status = ?status, "Notice stored."),
        Applied::DirectoryEntry {
            institution,
            version,
        } => tracing::info!(%institution, version, "Directory entry in force."),
    }
    let position = position(record);
    if let Some(trace) = incoming.trace {
        let attributes = vec![
            ("messaging.destination.name", position.topic.to_owned()),
            ("messaging.kafka.offset", position.offset.to_string()),
            (
                "ecointegra.message_type",
                record
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|h| h.key == ecointegra_broker::kafka::headers::MESSAGE_TYPE)
                    })
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
            ),
        ];
        crate::trace::export(
            shared,
            trace,
            "process record",
            crate::otlp::Kind::Consumer,
            started,
            attributes,
        );
    }
    if let Err(error) = consumer.store_offset(position.partition, position.offset) {
        tracing::warn!(%error, "Offset not stored for commit; the store has it.");
    }
}

/// Applies records `from..` (at most `limit` of them) in one transaction.
/// Returns the effects of those applied, in order, and why it stopped early.
/// An error means nothing was applied.
async fn apply_batch(
    shared: &Arc<Shared>,
    feed: Feed,
    records: Records,
    from: usize,
    limit: Option<usize>,
) -> Result<(Vec<Applied>, Option<Stop>)> {
    let shared = shared.clone();
    shared
        .clone()
        .store
        .run(move |store| {
            let end = limit.map_or(records.len(), |n| (from + n).min(records.len()));
            // Verify and decrypt before taking the writer's lock.
            let opened: Vec<Result<Opened, Fault>> = records[from..end]
                .iter()
                .map(|(record, incoming)| {
                    let _span = incoming.span.enter();
                    open(&shared, feed, record)
                })
                .collect();
            let mut batch = Batch {
                shared: &shared,
                dirty: HashSet::new(),
                directory: None,
            };
            let mut applied = Vec::with_capacity(opened.len());
            let mut stop = None;
            store.write(|c| {
                for (i, opened) in opened.into_iter().enumerate() {
                    let (record, incoming) = &records[from + i];
                    let _span = incoming.span.enter();
                    if let Some((key, context)) = &incoming.keep {
                        crate::trace::keep(c, key, context)?;
                    }
                    let opened = match opened {
                        Ok(opened) => opened,
                        Err(fault) => {
                            stop = Some(Stop::from(fault));
                            break;
                        }
                    };
                    c.execute_batch("SAVEPOINT record")
                        .map_err(Error::store("cannot begin a record"))?;
                    match batch.apply(c, opened, position(record), i == 0) {
                        Ok(effect) => {
                            c.execute_batch("RELEASE record")
                                .map_err(Error::store("cannot end a record"))?;
                            applied.push(effect);
                        }
                        Err(why) => {
                            c.execute_batch("ROLLBACK TO record; RELEASE record")
                                .map_err(Error::store("cannot roll a record back"))?;
                            stop = Some(why);
                            break;
                        }
                    }
                }
                batch.sync()
            })?;
            if let Some(directory) = batch.directory {
                shared.set_directory(directory);
            }
            Ok((applied, stop))
        })
        .await
}

/// A record verified and decrypted, before the store is touched. A batch
/// holds a few hundred at most, briefly: boxing the large variants would buy
/// nothing.
#[allow(clippy::large_enum_variant)]
enum Opened {
    Chunk {
        envelope: Envelope,
        chunk: Chunk,
        hash_ok: bool,
    },
    Manifest {
        envelope: Envelope,
        manifest: Manifest,
        /// Digests of complete partial documents, computed beforehand for a
        /// large transfer: document index to (SHA-256, size).
        digests: HashMap<u32, ([u8; 32], u64)>,
    },
    Receipt {
        envelope: Envelope,
        receipt: Receipt,
        raw: Vec<u8>,
    },
    Notice {
        envelope: Envelope,
        notice: Notice,
    },
    Tracking(TrackingEvent),
    Directory {
        signed: SignedDirectoryEntry,
        entry: DirectoryEntry,
    },
}

/// Decodes, verifies and decrypts one record. Blocking (signatures, hashing).
fn open(shared: &Arc<Shared>, feed: Feed, record: &OwnedMessage) -> Result<Opened, Fault> {
    let value = record.payload().unwrap_or_default();
    let directory = shared.directory();
    match feed {
        Feed::Tracking => {
            let envelope = envelope::open(value, &directory, crate::tracking::BROADCAST)?;
            return Ok(Opened::Tracking(crate::tracking::event_of(&envelope)?));
        }
        Feed::Directory => {
            let signed = SignedDirectoryEntry::decode(value).map_err(|e| {
                Rejection::new("directory", format!("not a signed directory entry: {e}"))
            })?;
            let entry = ecointegra_broker::directory::verify_entry(&signed, &shared.anchor)
                .map_err(|reason| Rejection::new("directory", reason))?;
            return Ok(Opened::Directory { signed, entry });
        }
        Feed::Inbox => {}
    }
    let envelope = envelope::open(value, &directory, shared.institution())?;
    match MessageType::try_from(envelope.message_type) {
        Ok(MessageType::Chunk) => {
            let chunk: Chunk = envelope::open_payload(&envelope, &shared.keyring)?;
            let hash_ok = Sha256::digest(&chunk.data).as_slice() == chunk.sha256.as_slice();
            Ok(Opened::Chunk {
                envelope,
                chunk,
                hash_ok,
            })
        }
        Ok(MessageType::Manifest) => {
            let manifest: Manifest = envelope::open_payload(&envelope, &shared.keyring)?;
            let digests = large_digests(shared, &envelope.sender, &manifest);
            Ok(Opened::Manifest {
                envelope,
                manifest,
                digests,
            })
        }
        Ok(MessageType::Receipt) => {
            let receipt: Receipt = envelope::payload(&envelope)?;
            Ok(Opened::Receipt {
                envelope,
                receipt,
                raw: value.to_vec(),
            })
        }
        Ok(MessageType::Notice) => {
            let notice: Notice = envelope::open_payload(&envelope, &shared.keyring)?;
            Ok(Opened::Notice { envelope, notice })
        }
        _ => Err(Rejection::new(
            "type",
            format!(
                "message type {} does not belong in an inbox",
                envelope.message_type
            ),
        )
        .about(&envelope)
        .into()),
    }
}

/// For a large transfer, the digests of the documents whose chunks have all
/// been stored already (committed earlier), computed without the writer's
/// lock. What this cannot settle is checked again under the lock.
fn large_digests(
    shared: &Shared,
    sender: &str,
    manifest: &Manifest,
) -> HashMap<u32, ([u8; 32], u64)> {
    let mut digests = HashMap::new();
    let total: u64 = manifest.documents.iter().map(|d| d.size).sum();
    let Some(transfer) = manifest
        .transfer
        .as_ref()
        .filter(|_| total > LARGE_TRANSFER)
    else {
        return digests;
    };
    for doc in &manifest.documents {
        let complete = shared
            .store
            .partial(&transfer.transfer_id, doc.index)
            .ok()
            .flatten()
            .is_some_and(|p| {
                p.sender == sender && p.next_seq == doc.chunk_count && p.bytes == doc.size
            });
        if complete {
            let path = shared.blobs.partial_path(&transfer.transfer_id, doc.index);
            if let Ok(digest) = crate::blobs::digest_file(&path) {
                digests.insert(doc.index, digest);
            }
        }
    }
    digests
}

/// One batch's work in progress, inside its transaction.
struct Batch<'a> {
    shared: &'a Arc<Shared>,
    /// Partial files written in this batch: made durable before it commits.
    dirty: HashSet<PathBuf>,
    /// The directory as the entries applied in this batch leave it.
    directory: Option<Directory>,
}

impl Batch<'_> {
    /// Fsyncs the partial files this batch wrote, so their bytes are durable
    /// before the rows and offsets that count them.
    fn sync(&mut self) -> Result<()> {
        for path in self.dirty.drain() {
            sync_file(&path)?;
        }
        Ok(())
    }

    fn apply(
        &mut self,
        c: &Connection,
        opened: Opened,
        position: Position<'_>,
        first: bool,
    ) -> Result<Applied, Stop> {
        match opened {
            Opened::Chunk {
                envelope,
                chunk,
                hash_ok,
            } => self.chunk(c, envelope, chunk, hash_ok, position),
            Opened::Manifest {
                envelope,
                manifest,
                digests,
            } => self.manifest(c, envelope, manifest, digests, position, first),
            Opened::Receipt {
                envelope,
                receipt,
                raw,
            } => self.receipt(c, envelope, receipt, raw, position),
            Opened::Notice { envelope, notice } => self.notice(c, envelope, notice, position),
            Opened::Tracking(event) => {
                self.shared
                    .store
                    .apply_tracking_event(c, position, &event)?;
                Ok(Applied::Nothing)
            }
            Opened::Directory { signed, entry } => self.directory_entry(c, signed, entry, position),
        }
    }

    /// A signed directory entry from the topic: verified against the trust
    /// anchor, kept, and in force once its batch commits.
    fn directory_entry(
        &mut self,
        c: &Connection,
        signed: SignedDirectoryEntry,
        entry: DirectoryEntry,
        position: Position<'_>,
    ) -> Result<Applied, Stop> {
        let mut directory = self
            .directory
            .clone()
            .unwrap_or_else(|| (*self.shared.directory()).clone());
        let changed = directory
            .insert(&entry)
            .map_err(|reason| Rejection::new("directory", reason))?;
        self.shared.store.apply_directory_entry(
            c,
            position,
            &entry.institution_id,
            entry.version,
            &signed,
        )?;
        if !changed {
            return Ok(Applied::Nothing);
        }
        self.directory = Some(directory);
        Ok(Applied::DirectoryEntry {
            institution: entry.institution_id,
            version: entry.version,
        })
    }

    fn chunk(
        &mut self,
        c: &Connection,
        envelope: Envelope,
        chunk: Chunk,
        hash_ok: bool,
        position: Position<'_>,
    ) -> Result<Applied, Stop> {
        let reject =
            |code, reason: String| Stop::from(Rejection::new(code, reason).about(&envelope));
        let store = &self.shared.store;
        let seen = store::is_processed(c, &envelope.message_id)?;
        let delivered = store::transfer_known(c, &chunk.transfer_id)?;
        if seen || delivered {
            // Already applied, or the whole transfer is stored: nothing to do.
            store.apply_nothing(c, position, Some(&envelope.message_id))?;
            return Ok(Applied::Nothing);
        }
        if !hash_ok {
            return Err(reject(
                "chunk-hash",
                format!(
                    "chunk {} of document {} of transfer {}: the SHA-256 of its data does not match the chunk's digest",
                    chunk.seq, chunk.document_index, chunk.transfer_id
                ),
            ));
        }
        let partial =
            store::partial(c, &chunk.transfer_id, chunk.document_index)?.unwrap_or(Partial {
                sender: envelope.sender.clone(),
                next_seq: 0,
                bytes: 0,
            });
        if partial.sender != envelope.sender {
            return Err(reject(
                "sender",
                format!(
                    "transfer {} belongs to {}, not to {}",
                    chunk.transfer_id, partial.sender, envelope.sender
                ),
            ));
        }
        if chunk.seq < partial.next_seq {
            store.apply_nothing(c, position, Some(&envelope.message_id))?;
            return Ok(Applied::Nothing);
        }
        if chunk.seq != partial.next_seq || chunk.offset != partial.bytes {
            return Err(reject(
                "chunk-order",
                format!(
                    "transfer {} document {}: expected chunk {} at byte {}, got chunk {} at byte {}",
                    chunk.transfer_id,
                    chunk.document_index,
                    partial.next_seq,
                    partial.bytes,
                    chunk.seq,
                    chunk.offset
                ),
            ));
        }
        let path = self
            .shared
            .blobs
            .partial_path(&chunk.transfer_id, chunk.document_index);
        write_at(&path, partial.bytes, &chunk.data)
            .map_err(Error::io(format!("cannot write {}", path.display())))?;
        self.dirty.insert(path);
        let next = Partial {
            sender: partial.sender,
            next_seq: partial.next_seq + 1,
            bytes: partial.bytes + chunk.data.len() as u64,
        };
        store.apply_chunk(
            c,
            position,
            &envelope.message_id,
            &chunk.transfer_id,
            chunk.document_index,
            &next,
        )?;
        Ok(Applied::Nothing)
    }

    fn manifest(
        &mut self,
        c: &Connection,
        envelope: Envelope,
        manifest: Manifest,
        digests: HashMap<u32, ([u8; 32], u64)>,
        position: Position<'_>,
        first: bool,
    ) -> Result<Applied, Stop> {
        let shared = self.shared;
        let reject =
            |code, reason: String| Stop::from(Rejection::new(code, reason).about(&envelope));
        let Some(transfer) = manifest.transfer.clone() else {
            return Err(reject("manifest", "the manifest names no transfer".into()));
        };
        if transfer.origin != envelope.sender || transfer.destination != shared.institution() {
            return Err(reject(
                "manifest",
                format!(
                    "transfer {} claims to go from {} to {}, but {} sent it here",
                    transfer.transfer_id, transfer.origin, transfer.destination, envelope.sender
                ),
            ));
        }
        if store::is_processed(c, &envelope.message_id)? {
            shared.store.apply_nothing(c, position, None)?;
            return Ok(Applied::Nothing);
        }
        if store::transfer_known(c, &transfer.transfer_id)? {
            // Sent again: the origin has not seen our receipt. Send it again.
            let origin = envelope.sender.clone();
            shared.store.apply_receipt_resend(
                c,
                position,
                &envelope.message_id,
                &transfer.transfer_id,
                &origin,
                &shared.topics.inbox(&origin),
            )?;
            return Ok(Applied::ReceiptQueued);
        }
        if manifest.documents.is_empty() {
            return Err(reject(
                "manifest",
                format!("transfer {} has no documents", transfer.transfer_id),
            ));
        }
        for (i, doc) in manifest.documents.iter().enumerate() {
            if doc.index as usize != i || doc.sha256.len() != 32 {
                return Err(reject(
                    "manifest",
                    format!(
                        "transfer {}: document entry {i} is malformed",
                        transfer.transfer_id
                    ),
                ));
            }
            let violations = crate::validate::document_header(
                &ecointegra_proto::v1::DocumentHeader {
                    name: doc.name.clone(),
                    media_type: doc.media_type.clone(),
                    declared_size: doc.size,
                },
                i,
                u64::MAX,
            );
            if let Some(v) = violations.first() {
                return Err(reject(
                    "manifest",
                    format!(
                        "transfer {}: {}: {}",
                        transfer.transfer_id, v.field, v.description
                    ),
                ));
            }
        }

        // Verify every document against the manifest, then adopt it.
        let total: u64 = manifest.documents.iter().map(|d| d.size).sum();
        let mut problems = Vec::new();
        for doc in &manifest.documents {
            let path = shared.blobs.partial_path(&transfer.transfer_id, doc.index);
            let partial = store::partial(c, &transfer.transfer_id, doc.index)?;
            if doc.size == 0 && partial.is_none() {
                std::fs::File::create(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(Error::io(format!("cannot create {}", path.display())))?;
            } else {
                let (chunks, bytes) = partial
                    .filter(|p| p.sender == envelope.sender)
                    .map_or((0, 0), |p| (p.next_seq, p.bytes));
                if chunks != doc.chunk_count || bytes != doc.size {
                    problems.push(format!(
                        "document {} ({}): {bytes} of {} bytes in {chunks} of {} chunks arrived",
                        doc.index, doc.name, doc.size, doc.chunk_count
                    ));
                    continue;
                }
            }
            let (digest, size) = match digests.get(&doc.index) {
                Some(known) => *known,
                // Hashing it here would hold every other writer up.
                None if total > LARGE_TRANSFER && !first => return Err(Stop::Later),
                None => digest_partial(&shared.blobs, &path, &doc.sha256)
                    .map_err(Error::io(format!("cannot read {}", path.display())))?,
            };
            if size != doc.size || digest.as_slice() != doc.sha256.as_slice() {
                problems.push(format!(
                    "document {} ({}): SHA-256 {} of {size} bytes differs from the manifest's {} of {} bytes",
                    doc.index,
                    doc.name,
                    hex::encode(digest),
                    hex::encode(&doc.sha256),
                    doc.size
                ));
            }
        }
        if !problems.is_empty() {
            let incomplete = problems.iter().all(|p| p.contains("arrived"));
            let rejection = Rejection::new(
                if incomplete { "incomplete" } else { "digest" },
                format!("transfer {}: {}", transfer.transfer_id, problems.join("; ")),
            )
            .about(&envelope);
            return Err(Stop::from(if incomplete {
                Fault::Reject(rejection)
            } else {
                // Corrupt data: forget it, so a re-send starts afresh.
                Fault::Corrupt(Box::new(Corrupt {
                    rejection,
                    transfer_id: transfer.transfer_id.clone(),
                    documents: manifest.documents.clone(),
                }))
            }));
        }

        let prior_receipts =
            verify_prior_receipts(&transfer, &shared.directory()).map_err(|reason| {
                reject(
                    "chain",
                    format!("transfer {}: {reason}", transfer.transfer_id),
                )
            })?;

        let now = ecointegra_broker::now_ms();
        let me = shared.institution().to_owned();
        let kind = TransferKind::try_from(transfer.kind).unwrap_or(TransferKind::Original);
        let due_date = if kind == TransferKind::Answer {
            String::new()
        } else {
            let calendar = Calendar::new(&shared.config.deadlines);
            let period =
                crate::deadlines::period_for(&shared.config.deadlines, &transfer.filing_type);
            calendar
                .add_business_days(Day::of_ms(now, calendar.utc_offset_minutes), period)
                .to_string()
        };
        let filing = NewFiling {
            tracking_code: transfer.tracking_code.clone(),
            verification_code: String::new(),
            transfer_id: transfer.transfer_id.clone(),
            direction: Direction::Inbound,
            status: FilingStatus::Delivered,
            origin: transfer.origin.clone(),
            destination: me.clone(),
            subject: transfer.subject.clone(),
            sender_party: transfer.sender_party.clone().unwrap_or_default(),
            folio_count: transfer.folio_count,
            registered_at_ms: transfer.registered_at_ms,
            delivered_at_ms: now,
            origin_registry_number: transfer.origin_registry_number.clone(),
            documents: manifest
                .documents
                .iter()
                .map(|d| DocumentRow {
                    index: d.index,
                    name: d.name.clone(),
                    media_type: d.media_type.clone(),
                    size: d.size,
                    sha256: d.sha256.clone(),
                })
                .collect(),
            kind,
            related_transfer_id: transfer.related_transfer_id.clone(),
            note: transfer.note.clone(),
            hop: transfer.hop.max(1),
            filing_type: transfer.filing_type.clone(),
            due_date,
            filed_at: if transfer.filed_at.is_empty() {
                transfer.origin.clone()
            } else {
                transfer.filed_at.clone()
            },
            previous_receipt_sha256: transfer.previous_receipt_sha256.clone(),
        };
        let sealer = shared.sealer.clone();
        let origin = envelope.sender.clone();
        let documents = manifest.documents.clone();
        let (transfer_id, tracking_code, hop, previous) = (
            filing.transfer_id.clone(),
            filing.tracking_code.clone(),
            filing.hop,
            filing.previous_receipt_sha256.clone(),
        );
        let receipt_for = move |registry_number: &str| {
            let receipt = Receipt {
                transfer_id: transfer_id.clone(),
                tracking_code: tracking_code.clone(),
                receiving_institution: me.clone(),
                registry_number: registry_number.to_owned(),
                received_at_ms: now,
                documents: documents.clone(),
                origin: origin.clone(),
                previous_receipt_sha256: previous.clone(),
                hop,
            };
            let sealed = sealer.seal(
                format!("{transfer_id}/receipt"),
                MessageType::Receipt,
                &origin,
                receipt.encode_to_vec(),
            );
            ReceiptRow {
                transfer_id: transfer_id.clone(),
                tracking_code: tracking_code.clone(),
                hop,
                signer: me.clone(),
                envelope: sealed.encode_to_vec(),
                received_at_ms: now,
            }
        };
        let delivery = Delivery {
            filing,
            prior_receipts,
            receipt: Box::new(receipt_for),
            reply_topic: shared.topics.inbox(&envelope.sender),
            // The sender's SENT step follows what it knew when it published.
            after_seq: transfer.tracking_seq + 1,
        };
        for doc in &delivery.filing.documents {
            let path = shared
                .blobs
                .partial_path(&delivery.filing.transfer_id, doc.index);
            // Adopted files must be whole and durable before they are renamed.
            if self.dirty.remove(&path) {
                sync_file(&path)?;
            }
            shared.blobs.adopt(&path, &doc.sha256)?;
        }
        let filing_id =
            shared
                .store
                .apply_delivery(c, position, &envelope.message_id, &delivery)?;
        Ok(match filing_id {
            Some(filing_id) => Applied::Delivered {
                filing_id,
                bytes: total,
                tracking_code: transfer.tracking_code.clone(),
                origin: envelope.sender.clone(),
            },
            None => Applied::Nothing,
        })
    }

    fn receipt(
        &mut self,
        c: &Connection,
        envelope: Envelope,
        receipt: Receipt,
        raw: Vec<u8>,
        position: Position<'_>,
    ) -> Result<Applied, Stop> {
        let reject =
            |code, reason: String| Stop::from(Rejection::new(code, reason).about(&envelope));
        let store = &self.shared.store;
        if store::is_processed(c, &envelope.message_id)? {
            store.apply_nothing(c, position, None)?;
            return Ok(Applied::Nothing);
        }
        let filing = store::filing_by_transfer(c, &receipt.transfer_id)?;
        let Some(filing) = filing.filter(|f| f.direction == Direction::Outbound) else {
            return Err(reject(
                "receipt",
                format!(
                    "receipt for transfer {}, which this institution did not send",
                    receipt.transfer_id
                ),
            ));
        };
        if filing.destination != envelope.sender || receipt.receiving_institution != envelope.sender
        {
            return Err(reject(
                "receipt",
                format!(
                    "receipt for transfer {} signed by {}, but it was sent to {}",
                    receipt.transfer_id, envelope.sender, filing.destination
                ),
            ));
        }
        if let Err(problem) = digests_match(&receipt.documents, &filing.documents) {
            return Err(reject(
                "receipt-digest",
                format!("receipt for transfer {}: {problem}", receipt.transfer_id),
            ));
        }
        let stored = ReceiptRow {
            transfer_id: receipt.transfer_id.clone(),
            tracking_code: filing.tracking_code.clone(),
            hop: filing.hop,
            signer: envelope.sender.clone(),
            envelope: raw,
            received_at_ms: receipt.received_at_ms,
        };
        store.apply_receipt(c, position, &envelope.message_id, filing.id, &stored)?;
        Ok(Applied::Receipted {
            registered_at_ms: filing.registered_at_ms,
            tracking_code: filing.tracking_code.clone(),
            destination: filing.destination.clone(),
            registry_number: receipt.registry_number,
        })
    }

    fn notice(
        &mut self,
        c: &Connection,
        envelope: Envelope,
        notice: Notice,
        position: Position<'_>,
    ) -> Result<Applied, Stop> {
        let reject =
            |code, reason: String| Stop::from(Rejection::new(code, reason).about(&envelope));
        let status = FilingStatus::try_from(notice.status).unwrap_or_default();
        if !matches!(status, FilingStatus::Observed | FilingStatus::Rejected) {
            return Err(reject(
                "notice",
                format!("a notice cannot set status {}", notice.status),
            ));
        }
        let filing = store::filing_by_transfer(c, &notice.transfer_id)?;
        let Some(filing) = filing
            .filter(|f| f.direction == Direction::Outbound && f.destination == envelope.sender)
        else {
            return Err(reject(
                "notice",
                format!(
                    "notice for transfer {}, which this institution did not send to {}",
                    notice.transfer_id, envelope.sender
                ),
            ));
        };
        let clock = (notice.tracking_code.as_str(), notice.tracking_seq);
        self.shared.store.apply_notice(
            c,
            position,
            &envelope.message_id,
            filing.id,
            (status, &notice.reason),
            clock,
        )?;
        Ok(Applied::Notice {
            tracking_code: filing.tracking_code.clone(),
            by: envelope.sender.clone(),
            status,
        })
    }
}

/// Writes `data` at `offset`, dropping any tail a crash left beyond it. Not
/// durable yet: the batch fsyncs the file before it commits.
fn write_at(path: &std::path::Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    file.set_len(offset)?;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)
}

/// Makes a written partial file durable. One already adopted (renamed into
/// the blob store, fsynced on the way) is gone from here: nothing to do.
fn sync_file(path: &std::path::Path) -> Result<()> {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(Error::io(format!("cannot sync {}", path.display())))
}

/// The digest of a complete partial document. If a crash came after the file
/// was adopted but before its filing committed, the partial file is gone and
/// the blob it became holds the same bytes.
fn digest_partial(
    blobs: &crate::blobs::Blobs,
    path: &std::path::Path,
    sha256: &[u8],
) -> std::io::Result<([u8; 32], u64)> {
    match crate::blobs::digest_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::blobs::digest_file(&blobs.path(sha256))
        }
        other => other,
    }
}

/// Checks the receipts a transfer carries: each signed by its receiver, each
/// naming the previous one, and the last one named by the transfer itself.
fn verify_prior_receipts(
    transfer: &Transfer,
    directory: &ecointegra_broker::directory::Directory,
) -> Result<Vec<ReceiptRow>, String> {
    let receipts = crate::custody::verify_chain(&transfer.prior_receipts, directory)?;
    let expected = transfer
        .prior_receipts
        .last()
        .map(|last| Sha256::digest(last).to_vec())
        .unwrap_or_default();
    if transfer.previous_receipt_sha256 != expected {
        return Err("the transfer does not name the digest of the last receipt it carries".into());
    }
    Ok(receipts
        .into_iter()
        .zip(&transfer.prior_receipts)
        .map(|(r, envelope)| ReceiptRow {
            transfer_id: r.transfer_id,
            tracking_code: r.tracking_code,
            hop: r.hop,
            signer: r.receiving_institution,
            envelope: envelope.clone(),
            received_at_ms: r.received_at_ms,
        })
        .collect())
}

async fn discard_partials(
    shared: &Arc<Shared>,
    transfer_id: &str,
    documents: &[DocumentDigest],
) -> Result<()> {
    for doc in documents {
        let _ = std::fs::remove_file(shared.blobs.partial_path(transfer_id, doc.index));
    }
    let transfer_id = transfer_id.to_owned();
    shared
        .store
        .run(move |s| s.discard_partials(&transfer_id))
        .await
}

/// Publishes a dead letter (retrying until Kafka takes it), then records the
/// offset, so the record is neither lost nor blocking.
async fn dead_letter(
    shared: &Arc<Shared>,
    record: &OwnedMessage,
    position: Position<'_>,
    rejection: &Rejection,
    cancel: &CancellationToken,
) {
    tracing::warn!(
        reason = %rejection.reason,
        code = rejection.code,
        sender = %rejection.claimed_sender,
        offset = position.offset,
        "Inbox record dead-lettered."
    );
    let letter = ecointegra_broker::dlq::dead_letter(
        rejection,
        ecointegra_broker::dlq::Source {
            topic: position.topic,
            partition: position.partition,
            offset: position.offset,
            key: record.key(),
            value: record.payload(),
        },
    );
    let dlq = shared.dlq_topic();
    loop {
        match ecointegra_broker::dlq::publish(
            &shared.publisher,
            &dlq,
            shared.institution(),
            &letter,
        )
        .await
        {
            Ok(at) => {
                crate::dead_letters::recorded(shared, at, &letter).await;
                break;
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot publish a dead letter; retrying.");
                if cancel.is_cancelled() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let recorded = skip(shared, position, None).await;
    if let Err(error) = recorded {
        tracing::error!(%error, "Cannot record a dead-lettered offset.");
    }
}

/// Records a consumed record that has no effect of its own (a duplicate, or
/// one dead-lettered), with its message id when it was applied before.
async fn skip(shared: &Shared, position: Position<'_>, message_id: Option<&str>) -> Result<()> {
    let (topic, partition, offset) = owned(position);
    let id = message_id.map(str::to_owned);
    shared
        .store
        .run(move |s| {
            s.write(|c| {
                s.apply_nothing(
                    c,
                    Position {
                        topic: &topic,
                        partition,
                        offset,
                    },
                    id.as_deref(),
                )
            })
        })
        .await
}

/// Owned copy of a position, for store work on another thread.
fn owned(position: Position<'_>) -> (String, i32, i64) {
    (
        position.topic.to_owned(),
        position.partition,
        position.offset,
    )
}

/// Do the receipt's digests name exactly the documents we hold?
pub fn digests_match(receipt: &[DocumentDigest], ours: &[DocumentRow]) -> Result<(), String> {
    if receipt.len() != ours.len() {
        return Err(format!(
            "names {} documents, {} were sent",
            receipt.len(),
            ours.len()
        ));
    }
    for (r, o) in receipt.iter().zip(ours) {
        if r.index != o.index || r.size != o.size || r.sha256 != o.sha256 {
            return Err(format!(
                "document {} differs: {} bytes with SHA-256 {}, sent {} bytes with SHA-256 {}",
                o.index,
                r.size,
                hex::encode(&r.sha256),
                o.size,
                hex::encode(&o.sha256)
            ));
        }
    }
    Ok(())
}
