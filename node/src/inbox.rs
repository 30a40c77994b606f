//! The inbox consumer: reads this institution's inbox topic from the offsets
//! kept in the store, verifies every record before acting on it, and applies
//! each record's effect together with its offset in one local transaction.
//!
//! - Chunks are written to partial files and fsynced before their row is stored,
//!   so memory stays bounded whatever the document size.
//! - A manifest whose documents all arrived and hash right becomes an inbound
//!   filing, and its signed receipt is queued for the origin.
//! - A receipt for one of our transfers marks the filing DELIVERED.
//! - Anything that cannot be decoded, verified or assembled goes to the DLQ with
//!   its reason, and the partition moves on.

use crate::deadlines::{Calendar, Day};
use crate::error::{Error, Result};
use crate::node::Shared;
use crate::store::{Delivery, DocumentRow, NewFiling, Partial, Position, ReceiptRow};
use ecointegra_broker::envelope::{self, Rejection};
use ecointegra_broker::kafka::InboxConsumer;
use ecointegra_proto::v1::{
    Chunk, Direction, DocumentDigest, Envelope, FilingStatus, Manifest, MessageType, Notice,
    Receipt, Transfer, TransferKind,
};
use prost::Message as _;
use rdkafka::message::{Headers, Message, OwnedMessage};
use sha2::{Digest, Sha256};
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a record was not applied.
pub enum Fault {
    /// The record itself is bad: dead-letter it and move on.
    Reject(Rejection),
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

/// Local failures of one record tolerated before it is dead-lettered instead.
const LOCAL_RETRIES: u32 = 5;

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
        let record = tokio::select! {
            _ = cancel.cancelled() => break,
            record = consumer.recv() => record,
        };
        match record {
            Ok(message) => {
                let message = message.detach();
                handle(&shared, feed, &consumer, &message, &cancel).await;
            }
            Err(error) => {
                tracing::warn!(%error, "Inbox read failed.");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(error) = consumer.commit() {
            tracing::warn!(%error, "Offsets not committed at shutdown; the store has them.");
        }
    })
    .await;
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

async fn handle(
    shared: &Arc<Shared>,
    feed: Feed,
    consumer: &InboxConsumer,
    record: &OwnedMessage,
    cancel: &CancellationToken,
) {
    let position = Position {
        topic: record.topic(),
        partition: record.partition(),
        offset: record.offset(),
    };
    shared.metrics.consumed(
        position.topic,
        record.payload().map_or(0, <[u8]>::len),
        feed == Feed::Inbox,
    );
    let started = std::time::SystemTime::now();
    let (span, trace) = crate::trace::on_record(shared, record, feed == Feed::Inbox).await;
    let mut failures = 0;
    loop {
        let fault = match tracing::Instrument::instrument(
            process(shared, feed, record, position),
            span.clone(),
        )
        .await
        {
            Ok(()) => break,
            Err(fault) => fault,
        };
        let rejection = match fault {
            Fault::Reject(rejection) => rejection,
            Fault::Local(error) if failures < LOCAL_RETRIES => {
                failures += 1;
                tracing::error!(%error, offset = position.offset, "Cannot apply an inbox record; retrying.");
                tokio::time::sleep(Duration::from_millis(200 << failures)).await;
                continue;
            }
            Fault::Local(error) => {
                Rejection::new("local", format!("could not be stored here: {error}"))
            }
        };
        dead_letter(shared, record, position, &rejection, cancel).await;
        break;
    }
    if let Some(trace) = trace {
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

async fn process(
    shared: &Arc<Shared>,
    feed: Feed,
    record: &OwnedMessage,
    position: Position<'_>,
) -> Result<(), Fault> {
    let value = record.payload().unwrap_or_default();
    let directory = shared.directory();
    match feed {
        Feed::Tracking => {
            let envelope = envelope::open(value, &directory, crate::tracking::BROADCAST)?;
            return crate::tracking::apply(shared, envelope, position).await;
        }
        Feed::Directory => return directory_entry(shared, value, position).await,
        Feed::Inbox => {}
    }
    let envelope = envelope::open(value, &directory, shared.institution())?;
    match MessageType::try_from(envelope.message_type) {
        Ok(MessageType::Chunk) => chunk(shared, envelope, position).await,
        Ok(MessageType::Manifest) => manifest(shared, envelope, position).await,
        Ok(MessageType::Receipt) => receipt(shared, envelope, value.to_vec(), position).await,
        Ok(MessageType::Notice) => notice(shared, envelope, position).await,
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

/// A signed directory entry from the topic: verified against the trust anchor,
/// kept, and in force at once.
async fn directory_entry(
    shared: &Arc<Shared>,
    value: &[u8],
    position: Position<'_>,
) -> Result<(), Fault> {
    let signed = ecointegra_proto::v1::SignedDirectoryEntry::decode(value)
        .map_err(|e| Rejection::new("directory", format!("not a signed directory entry: {e}")))?;
    let entry = ecointegra_broker::directory::verify_entry(&signed, &shared.anchor)
        .map_err(|reason| Rejection::new("directory", reason))?;
    let mut directory = (*shared.directory()).clone();
    let changed = directory
        .insert(&entry)
        .map_err(|reason| Rejection::new("directory", reason))?;
    let (topic, partition, offset) = owned(position);
    let id = entry.institution_id.clone();
    shared
        .store
        .run(move |s| {
            s.apply_directory_entry(
                Position {
                    topic: &topic,
                    partition,
                    offset,
                },
                &id,
                entry.version,
                &signed,
            )
        })
        .await?;
    if changed {
        tracing::info!(institution = %entry.institution_id, version = entry.version, "Directory entry in force.");
        shared.set_directory(directory);
    }
    Ok(())
}

/// Records a consumed record that has no effect of its own (a duplicate, or
/// one dead-lettered), with its message id when it was applied before.
async fn skip(shared: &Shared, position: Position<'_>, message_id: Option<&str>) -> Result<()> {
    let (topic, partition, offset) = owned(position);
    let id = message_id.map(str::to_owned);
    shared
        .store
        .run(move |s| {
            s.apply_nothing(
                Position {
                    topic: &topic,
                    partition,
                    offset,
                },
                id.as_deref(),
            )
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

async fn chunk(
    shared: &Arc<Shared>,
    envelope: Envelope,
    position: Position<'_>,
) -> Result<(), Fault> {
    let chunk: Chunk = envelope::open_payload(&envelope, &shared.keyring)?;
    let reject =
        |code, reason: String| Fault::Reject(Rejection::new(code, reason).about(&envelope));
    let (topic, partition, offset) = owned(position);
    let message_id = envelope.message_id.clone();
    let transfer_id = chunk.transfer_id.clone();
    let index = chunk.document_index;
    let state = shared
        .store
        .run(move |s| {
            Ok((
                s.is_processed(&message_id)?,
                s.filing_by_transfer(&transfer_id)?.is_some(),
                s.partial(&transfer_id, index)?,
            ))
        })
        .await?;
    let (seen, delivered, partial) = state;
    if seen || delivered {
        // Already applied, or the whole transfer is stored: nothing to do.
        skip(shared, position, Some(&envelope.message_id)).await?;
        return Ok(());
    }
    if Sha256::digest(&chunk.data).as_slice() != chunk.sha256.as_slice() {
        return Err(reject(
            "chunk-hash",
            format!(
                "chunk {} of document {} of transfer {}: the SHA-256 of its data does not match the chunk's digest",
                chunk.seq, chunk.document_index, chunk.transfer_id
            ),
        ));
    }
    let partial = partial.unwrap_or(Partial {
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
        skip(shared, position, Some(&envelope.message_id)).await?;
        return Ok(());
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
    let path = shared
        .blobs
        .partial_path(&chunk.transfer_id, chunk.document_index);
    let next = Partial {
        sender: partial.sender,
        next_seq: partial.next_seq + 1,
        bytes: partial.bytes + chunk.data.len() as u64,
    };
    let id = envelope.message_id.clone();
    shared
        .store
        .run(move |s| {
            write_at(&path, partial.bytes, &chunk.data)
                .map_err(Error::io(format!("cannot write {}", path.display())))?;
            s.apply_chunk(
                Position {
                    topic: &topic,
                    partition,
                    offset,
                },
                &id,
                &chunk.transfer_id,
                chunk.document_index,
                &next,
            )
        })
        .await?;
    Ok(())
}

/// Writes `data` at `offset`, dropping any tail a crash left beyond it, and
/// makes it durable.
fn write_at(path: &std::path::Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    file.set_len(offset)?;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)?;
    file.sync_data()
}

async fn manifest(
    shared: &Arc<Shared>,
    envelope: Envelope,
    position: Position<'_>,
) -> Result<(), Fault> {
    let manifest: Manifest = envelope::open_payload(&envelope, &shared.keyring)?;
    let reject =
        |code, reason: String| Fault::Reject(Rejection::new(code, reason).about(&envelope));
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
    let (topic, partition, offset) = owned(position);
    let message_id = envelope.message_id.clone();
    let transfer_id = transfer.transfer_id.clone();
    let (seen, existing) = shared
        .store
        .run(move |s| {
            Ok((
                s.is_processed(&message_id)?,
                s.filing_by_transfer(&transfer_id)?,
            ))
        })
        .await?;
    if seen {
        skip(shared, position, None).await?;
        return Ok(());
    }
    if existing.is_some() {
        // Sent again: the origin has not seen our receipt. Send it again.
        let id = envelope.message_id.clone();
        let origin = envelope.sender.clone();
        let reply = shared.topics.inbox(&origin);
        shared
            .store
            .run(move |s| {
                s.apply_receipt_resend(
                    Position {
                        topic: &topic,
                        partition,
                        offset,
                    },
                    &id,
                    &transfer.transfer_id,
                    &origin,
                    &reply,
                )
            })
            .await?;
        shared.relay_wake.notify_one();
        return Ok(());
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
    let store_shared = shared.clone();
    let sender = envelope.sender.clone();
    let transfer_id = transfer.transfer_id.clone();
    let documents = manifest.documents.clone();
    let verified = shared
        .store
        .run(move |s| {
            let mut problems = Vec::new();
            for doc in &documents {
                let path = store_shared.blobs.partial_path(&transfer_id, doc.index);
                let partial = s.partial(&transfer_id, doc.index)?;
                if doc.size == 0 && partial.is_none() {
                    std::fs::File::create(&path)
                        .and_then(|f| f.sync_all())
                        .map_err(Error::io(format!("cannot create {}", path.display())))?;
                } else {
                    let (chunks, bytes) = partial
                        .filter(|p| p.sender == sender)
                        .map_or((0, 0), |p| (p.next_seq, p.bytes));
                    if chunks != doc.chunk_count || bytes != doc.size {
                        problems.push(format!(
                            "document {} ({}): {bytes} of {} bytes in {chunks} of {} chunks arrived",
                            doc.index, doc.name, doc.size, doc.chunk_count
                        ));
                        continue;
                    }
                }
                let (digest, size) = crate::blobs::digest_file(&path)
                    .map_err(Error::io(format!("cannot read {}", path.display())))?;
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
            Ok(problems)
        })
        .await?;
    if !verified.is_empty() {
        let incomplete = verified.iter().all(|p| p.contains("arrived"));
        if !incomplete {
            // Corrupt data: forget it, so a re-send starts afresh.
            discard_partials(shared, &transfer.transfer_id, &manifest.documents).await?;
        }
        return Err(reject(
            if incomplete { "incomplete" } else { "digest" },
            format!("transfer {}: {}", transfer.transfer_id, verified.join("; ")),
        ));
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
        let period = crate::deadlines::period_for(&shared.config.deadlines, &transfer.filing_type);
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
    let blobs = shared.blobs.clone();
    let id = envelope.message_id.clone();
    let tracking_code = transfer.tracking_code.clone();
    let filing_id = shared
        .store
        .run(move |s| {
            for doc in &delivery.filing.documents {
                blobs.adopt(
                    &blobs.partial_path(&delivery.filing.transfer_id, doc.index),
                    &doc.sha256,
                )?;
            }
            s.apply_delivery(
                Position {
                    topic: &topic,
                    partition,
                    offset,
                },
                &id,
                &delivery,
            )
        })
        .await?;
    if let Some(filing_id) = filing_id {
        shared
            .metrics
            .filing_received(manifest.documents.iter().map(|d| d.size).sum());
        tracing::info!(%tracking_code, origin = %envelope.sender, "Filing delivered.");
        shared.inbox_head.send_replace(filing_id);
        shared.relay_wake.notify_one();
    }
    Ok(())
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

async fn receipt(
    shared: &Arc<Shared>,
    envelope: Envelope,
    raw: Vec<u8>,
    position: Position<'_>,
) -> Result<(), Fault> {
    let receipt: Receipt = envelope::payload(&envelope)?;
    let reject =
        |code, reason: String| Fault::Reject(Rejection::new(code, reason).about(&envelope));
    let (topic, partition, offset) = owned(position);
    let message_id = envelope.message_id.clone();
    let transfer_id = receipt.transfer_id.clone();
    let (seen, filing) = shared
        .store
        .run(move |s| {
            Ok((
                s.is_processed(&message_id)?,
                s.filing_by_transfer(&transfer_id)?,
            ))
        })
        .await?;
    if seen {
        skip(shared, position, None).await?;
        return Ok(());
    }
    let Some(filing) = filing.filter(|f| f.direction == Direction::Outbound) else {
        return Err(reject(
            "receipt",
            format!(
                "receipt for transfer {}, which this institution did not send",
                receipt.transfer_id
            ),
        ));
    };
    if filing.destination != envelope.sender || receipt.receiving_institution != envelope.sender {
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
    let id = envelope.message_id.clone();
    let filing_id = filing.id;
    shared
        .store
        .run(move |s| {
            s.apply_receipt(
                Position {
                    topic: &topic,
                    partition,
                    offset,
                },
                &id,
                filing_id,
                &stored,
            )
        })
        .await?;
    shared.metrics.receipted(Duration::from_millis(
        (ecointegra_broker::now_ms() - filing.registered_at_ms).max(0) as u64,
    ));
    tracing::info!(
        tracking_code = %filing.tracking_code,
        destination = %filing.destination,
        registry_number = %receipt.registry_number,
        "Receipt stored; filing delivered."
    );
    Ok(())
}

async fn notice(
    shared: &Arc<Shared>,
    envelope: Envelope,
    position: Position<'_>,
) -> Result<(), Fault> {
    let notice: Notice = envelope::open_payload(&envelope, &shared.keyring)?;
    let reject =
        |code, reason: String| Fault::Reject(Rejection::new(code, reason).about(&envelope));
    let status = FilingStatus::try_from(notice.status).unwrap_or_default();
    if !matches!(status, FilingStatus::Observed | FilingStatus::Rejected) {
        return Err(reject(
            "notice",
            format!("a notice cannot set status {}", notice.status),
        ));
    }
    let transfer_id = notice.transfer_id.clone();
    let filing = shared
        .store
        .run(move |s| s.filing_by_transfer(&transfer_id))
        .await?;
    let Some(filing) =
        filing.filter(|f| f.direction == Direction::Outbound && f.destination == envelope.sender)
    else {
        return Err(reject(
            "notice",
            format!(
                "notice for transfer {}, which this institution did not send to {}",
                notice.transfer_id, envelope.sender
            ),
        ));
    };
    let (topic, partition, offset) = owned(position);
    let id = envelope.message_id.clone();
    let filing_id = filing.id;
    shared
        .store
        .run(move |s| {
            let clock = (notice.tracking_code.as_str(), notice.tracking_seq);
            s.apply_notice(
                Position {
                    topic: &topic,
                    partition,
                    offset,
                },
                &id,
                filing_id,
                status,
                &notice.reason,
                clock,
            )
        })
        .await?;
    tracing::info!(tracking_code = %filing.tracking_code, by = %envelope.sender, status = ?status, "Notice stored.");
    Ok(())
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
