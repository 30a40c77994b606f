//! The consumers: each reads one topic from the offsets kept in the store,
//! verifies every record before acting on it, and applies records' effects
//! together with their offsets in local transactions.
//!
//! - [`inbox`]: this institution's inbox (transfers, receipts, notices);
//!   [`tracking`]: the sector's timeline; [`directory`]: signed directory
//!   entries. They share the loop in this module.
//! - Pure stages: [`open`] (decode, verify, decrypt: no store),
//!   [`assemble`] (chunks into partial files, manifests into filings) and
//!   [`apply`] (each opened record's effect, inside a batch's transaction).
//! - [`dead_letters`]: what could not be applied, published to the DLQ and
//!   replayed on request.
//!
//! - Group commit: a consumer takes whatever records librdkafka has already
//!   fetched (up to [`BATCH_RECORDS`] and [`BATCH_BYTES`]; it never waits for
//!   more) and applies them in one store transaction, each record in a
//!   savepoint of its own, together with its offset: one fsync per batch, and
//!   a crash anywhere leaves either a record's effect and its offset, or
//!   neither. A record that fails rolls back only itself; the records before
//!   it commit, it is dead-lettered (or retried, if the failure was local),
//!   and the batch goes on after it.
//! - Signatures, decryption and chunk digests are checked before the store is
//!   touched, outside the writer's lock.
//! - Anything that cannot be decoded, verified or assembled goes to the DLQ with
//!   its reason, and the partition moves on.
//!
//! May use: lifecycle, telemetry, store and the leaves.

pub mod apply;
pub mod assemble;
pub mod dead_letters;
pub mod directory;
pub mod inbox;
pub mod open;
mod stuck;
pub mod tracking;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
pub(crate) use open::checks as check_for_fuzzing;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::kafka::Kafka;
use crate::retry::Policy;
use crate::store::Store;
use crate::store::blobs::Blobs;
use crate::store::{self, Position};
use crate::telemetry::Stalls;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::otlp::Otlp;
use crate::telemetry::trace::Incoming;
use crate::trust::Trust;
use apply::{Applied, Batch};
use ecointegra_broker::envelope::Rejection;
use ecointegra_broker::kafka::{Fetch, InboxConsumer};
use ecointegra_proto::v1::DocumentDigest;
use open::{Opened, open_record};
use prost::bytes::Bytes;
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// What the consumers work with.
pub struct Consumers {
    pub config: Arc<Config>,
    pub store: Store,
    pub blobs: Blobs,
    pub trust: Arc<Trust>,
    pub kafka: Arc<Kafka>,
    pub metrics: Arc<Metrics>,
    pub otlp: Option<Arc<Otlp>>,
    /// Rung when a receipt was queued in the outbox.
    pub relay_wake: Arc<Notify>,
    /// The id of the newest inbound filing, for inbox streams.
    pub inbox_head: Arc<watch::Sender<i64>>,
    /// Consumers held at a record they cannot get past yet, and why.
    pub stalls: Arc<Stalls>,
    /// The running digests of partial documents.
    pub running: assemble::Running,
}

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
    pub sender: String,
    pub documents: Vec<DocumentDigest>,
}

/// Why a batch stopped before its end.
pub enum Stop {
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

/// Waits while a consumer is held at a record (a local fault, the DLQ out of
/// reach): 0.2 s doubling to 30 s, without limit.
const STALL_RETRY: Policy = Policy::new(Duration::from_millis(200), Duration::from_secs(30));
/// Waits before setting up a consumer again (topics, metadata, assignment).
const CONNECT_RETRY: Policy = Policy::new(Duration::from_secs(2), Duration::from_secs(30));
/// Waits before reading the topic again after librdkafka reported an error.
const READ_RETRY: Policy = Policy::new(Duration::from_millis(500), Duration::from_secs(10));
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
pub(crate) const LARGE_TRANSFER: u64 = 8 << 20;

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

/// What the consumer loop does next.
enum Next {
    Batch(Vec<Record>),
    /// Nothing arrived for [`stuck::QUIET`].
    Quiet,
    Stop,
}

pub(crate) async fn consume(cx: Arc<Consumers>, feed: Feed, cancel: CancellationToken) {
    let topic = match feed {
        Feed::Inbox => cx.kafka.inbox_topic(),
        Feed::Tracking => cx.kafka.topics.tracking(),
        Feed::Directory => cx.kafka.topics.directory(),
    };
    let Some((mut consumer, mut seen)) = connected(&cx, feed, &topic, &cancel).await else {
        return;
    };
    let what = match feed {
        Feed::Inbox => "inbox",
        Feed::Tracking => "tracking topic",
        Feed::Directory => "directory topic",
    };
    tracing::info!(topic = %consumer.topic(), "Consuming the {what}.");
    // A batch and the expiry of partial documents take turns: never one
    // beside the other that may be extending them.
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    if feed == Feed::Inbox {
        tokio::spawn(expire_partials_now_and_then(
            cx.clone(),
            turn.clone(),
            cancel.clone(),
        ));
    }
    // The directory is compacted: its high watermark may stand beyond its
    // last record for good, so it is not watched.
    let watched = feed != Feed::Directory;
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => Next::Stop,
            batch = gather(&consumer) => Next::Batch(batch),
            _ = tokio::time::sleep(stuck::QUIET), if watched => Next::Quiet,
        };
        match next {
            Next::Batch(batch) => {
                seen.received();
                let _turn = turn.lock().await;
                handle_batch(&cx, feed, &consumer, batch, &cancel).await;
            }
            Next::Quiet => {
                let Some(marks) = stuck::marks(&consumer).await else {
                    continue;
                };
                let Some(why) = seen.check(std::time::Instant::now(), &marks) else {
                    continue;
                };
                tracing::warn!(%topic, reason = %why, "Consumer receives nothing while records wait; building it again.");
                cx.metrics.consumer_rebuilt();
                cx.stalls.set(&topic, format!("consumer stuck: {why}"));
                // Dropped apart: a stuck client may take its time to close.
                let old = consumer;
                tokio::task::spawn_blocking(move || drop(old));
                match connected(&cx, feed, &topic, &cancel).await {
                    Some((fresh, assigned)) => (consumer, seen) = (fresh, assigned),
                    None => return,
                }
            }
            Next::Stop => break,
        }
    }
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(error) = consumer.commit() {
            tracing::warn!(%error, "Offsets not committed at shutdown; the store has them.");
        }
    })
    .await;
}

/// Sets a consumer up, retrying until it is (readiness, queues and the log
/// say why meanwhile); `None` if the node stops first.
async fn connected(
    cx: &Arc<Consumers>,
    feed: Feed,
    topic: &str,
    cancel: &CancellationToken,
) -> Option<(Arc<InboxConsumer>, stuck::Watch)> {
    let mut backoff = CONNECT_RETRY.backoff();
    loop {
        match connect(cx, feed).await {
            Ok(connected) => {
                cx.stalls.clear(topic);
                return Some(connected);
            }
            Err(error) => {
                let why = format!("cannot start consuming: {}", error.with_causes());
                tracing::warn!(%topic, reason = %why, "Consumer not ready; retrying.");
                cx.stalls.set(topic, why);
                if !backoff.wait(cancel).await {
                    return None;
                }
            }
        }
    }
}

/// Waits for one record, then takes every record already fetched, up to the
/// batch limits. It never waits for more: under load batches grow by
/// themselves while the previous one commits.
async fn gather(consumer: &InboxConsumer) -> Vec<Record> {
    let mut backoff = READ_RETRY.backoff();
    let first = loop {
        match consumer.recv().await {
            Ok(message) => break Record::read(&message),
            Err(error) => {
                tracing::warn!(%error, "Inbox read failed.");
                backoff.sleep().await;
            }
        }
    };
    let size = |r: &Record| r.value().len();
    let mut bytes = size(&first);
    let mut batch = vec![first];
    while batch.len() < BATCH_RECORDS && bytes < BATCH_BYTES {
        match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
            Ok(Ok(message)) => {
                let record = Record::read(&message);
                bytes += size(&record);
                batch.push(record);
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
async fn connect(cx: &Arc<Consumers>, feed: Feed) -> Result<(Arc<InboxConsumer>, stuck::Watch)> {
    let settings = cx.kafka.settings.clone();
    if cx.config.manage_topics() {
        let admin = settings.admin()?;
        let directory = cx.trust.directory();
        let peers: Vec<&str> = directory.institutions().map(|i| i.id.as_str()).collect();
        ecointegra_broker::topics::ensure_node_topics(
            &admin,
            &cx.kafka.topics,
            cx.trust.institution(),
            &peers,
            cx.kafka.spec,
        )
        .await?;
    } else {
        let problems = crate::telemetry::health::check_topics(&cx.config, &cx.kafka).await;
        if !problems.is_empty() {
            return Err(Error::FailedPrecondition(problems.join("; ")));
        }
    }
    let (topic, group, fetch) = match feed {
        Feed::Inbox => (cx.kafka.inbox_topic(), cx.kafka.group_id(), Fetch::Eager),
        Feed::Tracking => (
            cx.kafka.topics.tracking(),
            format!("{}.tracking", cx.kafka.group_id()),
            Fetch::Patient,
        ),
        Feed::Directory => (
            cx.kafka.topics.directory(),
            format!("{}.directory", cx.kafka.group_id()),
            Fetch::Patient,
        ),
    };
    if feed == Feed::Inbox {
        let cx = cx.clone();
        tokio::task::spawn_blocking(move || assemble::sweep_partials(&cx))
            .await
            .map_err(Error::task("partial sweep failed"))??;
    }
    let consumer = Arc::new(InboxConsumer::new(&settings, &group, &topic, fetch)?);
    let c = consumer.clone();
    let partitions = tokio::task::spawn_blocking(move || c.partitions(Duration::from_secs(5)))
        .await
        .map_err(Error::task("metadata task failed"))??;
    let topic_for_store = topic.clone();
    let stored = cx
        .store
        .run(move |s| s.inbox_positions(&topic_for_store))
        .await?;
    let positions: Vec<(i32, Option<i64>)> = partitions
        .iter()
        .map(|p| (*p, stored.iter().find(|(sp, _)| sp == p).map(|(_, o)| *o)))
        .collect();
    consumer.assign(&positions)?;
    Ok((consumer, stuck::Watch::new(&positions)))
}

/// A batch's records with their trace contexts; cx with store threads.
type Records = Arc<Vec<(Record, Incoming)>>;

/// A record read from Kafka: its value as `Bytes`, so that an envelope
/// decodes its payload as a slice of it (`OwnedMessage` lends its value only
/// by reference, and decoding from that copies the payload once more), and
/// the rest of it as librdkafka gave it.
pub(crate) struct Record {
    value: Bytes,
    /// Topic, partition, offset, key and headers; no value.
    meta: OwnedMessage,
}

impl Record {
    fn read(message: &BorrowedMessage<'_>) -> Self {
        Self {
            value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
            meta: OwnedMessage::new(
                None,
                message.key().map(<[u8]>::to_vec),
                message.topic().to_owned(),
                message.timestamp(),
                message.partition(),
                message.offset(),
                message.headers().map(|h| h.detach()),
            ),
        }
    }

    /// The record's value (empty for a null value).
    pub(crate) fn value(&self) -> &Bytes {
        &self.value
    }

    /// Everything but the value.
    pub(crate) fn meta(&self) -> &OwnedMessage {
        &self.meta
    }

    fn topic(&self) -> &str {
        self.meta.topic()
    }

    fn partition(&self) -> i32 {
        self.meta.partition()
    }

    fn offset(&self) -> i64 {
        self.meta.offset()
    }
}

fn position(record: &Record) -> Position<'_> {
    Position {
        topic: record.topic(),
        partition: record.partition(),
        offset: record.offset(),
    }
}

/// Applies a batch: as many records per transaction as apply cleanly, each
/// failing record handled on its own, in order.
async fn handle_batch(
    cx: &Arc<Consumers>,
    feed: Feed,
    consumer: &InboxConsumer,
    batch: Vec<Record>,
    cancel: &CancellationToken,
) {
    let records: Records = Arc::new(
        batch
            .into_iter()
            .map(|record| {
                cx.metrics
                    .consumed(record.topic(), record.value().len(), feed == Feed::Inbox);
                let incoming = crate::telemetry::trace::on_record(
                    cx.otlp.as_deref(),
                    record.meta(),
                    feed == Feed::Inbox,
                );
                (record, incoming)
            })
            .collect(),
    );
    let mut next = 0;
    while next < records.len() {
        let (applied, stop) = match apply_batch(cx, feed, records.clone(), next, None).await {
            Ok(outcome) => outcome,
            Err(error) => (Vec::new(), Some(Stop::from(error))),
        };
        for effect in applied {
            finish(cx, consumer, &records[next], effect);
            next += 1;
        }
        if let Some(Stop::Fault(fault)) = stop {
            let handled = handle_fault(cx, feed, consumer, &records, next, *fault, cancel).await;
            if !handled {
                // Stopping while the record could not be got past: its offset
                // is not stored, so the next start reads it again.
                return;
            }
            next += 1;
        }
    }
}

/// A record that failed on its own. A bad record is dead-lettered, so it
/// neither stalls its partition nor is lost. A local fault (disk full, store
/// busy) is no fault of the record: the consumer stays at it and retries
/// with backoff, without limit, reporting the stall (`/readyz`, `queues`,
/// metrics) until it is applied. Returns false if the node stops first.
#[allow(clippy::too_many_arguments)]
async fn handle_fault(
    cx: &Arc<Consumers>,
    feed: Feed,
    consumer: &InboxConsumer,
    records: &Records,
    index: usize,
    mut fault: Fault,
    cancel: &CancellationToken,
) -> bool {
    let (record, _) = &records[index];
    let position = position(record);
    let mut attempt = 0;
    let mut backoff = STALL_RETRY.backoff();
    let rejection = loop {
        match fault {
            Fault::Reject(rejection) => break rejection,
            Fault::Corrupt(corrupt) => {
                let Corrupt {
                    rejection,
                    transfer_id,
                    sender,
                    documents,
                } = *corrupt;
                if let Err(error) =
                    discard_partials(cx, &sender, &transfer_id, documents.iter().map(|d| d.index))
                        .await
                {
                    tracing::error!(%error, %transfer_id, "Cannot discard corrupt partial documents.");
                }
                break rejection;
            }
            Fault::Local(error) => {
                attempt += 1;
                let why = format!(
                    "cannot apply the record at partition {} offset {} here: {}",
                    position.partition,
                    position.offset,
                    error.with_causes()
                );
                if attempt == 1 {
                    tracing::error!(topic = position.topic, reason = %why, "Consumer stalled; retrying until the record applies.");
                    cx.metrics.consumer_stalled();
                }
                cx.stalls.set(position.topic, why);
                if !backoff.wait(cancel).await {
                    return false;
                }
                fault = match apply_batch(cx, feed, records.clone(), index, Some(1)).await {
                    Ok((mut applied, None)) if applied.len() == 1 => {
                        let effect = applied.remove(0);
                        finish(cx, consumer, &records[index], effect);
                        cx.stalls.clear(position.topic);
                        tracing::info!(
                            topic = position.topic,
                            attempts = attempt + 1,
                            "Consumer resumed."
                        );
                        return true;
                    }
                    Ok((_, Some(Stop::Fault(fault)))) => *fault,
                    Ok(_) => Fault::Local(Error::FailedPrecondition(
                        "a record alone in its batch was not applied".into(),
                    )),
                    Err(error) => Fault::Local(error),
                };
            }
        }
    };
    if !dead_letter(cx, record, position, &rejection, cancel).await {
        return false;
    }
    finish(cx, consumer, &records[index], Applied::Nothing);
    true
}

/// After a record's transaction committed: notify, count, log, and tell
/// Kafka the offset may be committed. (The record's exported span ends with
/// its batch.)
fn finish(
    cx: &Arc<Consumers>,
    consumer: &InboxConsumer,
    (record, incoming): &(Record, Incoming),
    applied: Applied,
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
            cx.metrics.filing_received(bytes);
            tracing::info!(%tracking_code, %origin, "Filing delivered.");
            cx.inbox_head.send_replace(filing_id);
            cx.relay_wake.notify_one();
        }
        Applied::ReceiptQueued => cx.relay_wake.notify_one(),
        Applied::Receipted {
            registered_at_ms,
            tracking_code,
            destination,
            registry_number,
        } => {
            cx.metrics.receipted(Duration::from_millis(
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
    if let Err(error) = consumer.store_offset(position.partition, position.offset) {
        tracing::warn!(%error, "Offset not stored for commit; the store has it.");
    }
}

/// Applies records `from..` (at most `limit` of them) in one transaction.
/// Returns the effects of those applied, in order, and why it stopped early.
/// An error means nothing was applied.
async fn apply_batch(
    cx: &Arc<Consumers>,
    feed: Feed,
    records: Records,
    from: usize,
    limit: Option<usize>,
) -> Result<(Vec<Applied>, Option<Stop>)> {
    let cx = cx.clone();
    cx.clone()
        .store
        .run(move |store| {
            let end = limit.map_or(records.len(), |n| (from + n).min(records.len()));
            // Verify and decrypt before taking the writer's lock.
            let opened: Vec<Result<Opened, Fault>> = records[from..end]
                .iter()
                .map(|(record, incoming)| {
                    let _span = incoming.span.enter();
                    let value = record.value();
                    let limit = cx.kafka.settings.max_record_bytes as usize;
                    if value.len() > limit {
                        // Not decoded: its size alone is reason enough.
                        return Err(Fault::Reject(Rejection::new(
                            "too-large",
                            format!(
                                "a record of {} bytes is larger than kafka.max_record_bytes ({limit})",
                                value.len()
                            ),
                        )));
                    }
                    let mut opened = open_record(&cx.trust, feed, value)?;
                    if let Opened::Manifest {
                        envelope,
                        manifest,
                        digests,
                    } = &mut opened
                    {
                        *digests = assemble::large_digests(&cx, &envelope.sender, manifest);
                    }
                    Ok(opened)
                })
                .collect();
            let mut batch = Batch {
                cx: &cx,
                dirty: HashSet::new(),
                directory: None,
                adopted: Vec::new(),
            };
            let mut applied = Vec::with_capacity(opened.len());
            let mut stop = None;
            store.write(|c| {
                for (i, opened) in opened.into_iter().enumerate() {
                    let (record, incoming) = &records[from + i];
                    let _span = incoming.span.enter();
                    if let Some((key, context)) = &incoming.keep {
                        crate::telemetry::trace::keep(c, key, context)?;
                    }
                    let opened = match opened {
                        Ok(opened) => opened,
                        Err(fault) => {
                            stop = Some(Stop::from(fault));
                            break;
                        }
                    };
                    store::begin_record(c)?;
                    match batch.apply(c, opened, position(record), i == 0) {
                        Ok(effect) => {
                            store::end_record(c)?;
                            applied.push(effect);
                        }
                        Err(why) => {
                            store::undo_record(c)?;
                            stop = Some(why);
                            break;
                        }
                    }
                }
                batch.sync()
            })?;
            batch.committed();
            if let Some(directory) = batch.directory {
                cx.trust.set_directory(directory);
            }
            Ok((applied, stop))
        })
        .await
}

async fn discard_partials(
    cx: &Arc<Consumers>,
    sender: &str,
    transfer_id: &str,
    indexes: impl IntoIterator<Item = u32>,
) -> Result<()> {
    for index in indexes {
        let path = cx.blobs.partial_path(sender, transfer_id, index)?;
        let _ = std::fs::remove_file(&path);
        cx.running.forget(&path);
    }
    let (sender, transfer_id) = (sender.to_owned(), transfer_id.to_owned());
    cx.store
        .run(move |s| s.discard_partials(&sender, &transfer_id))
        .await
}

/// Runs [`expire_partials`] at start, then every
/// `transfer.partial_expiry_secs` (at most hourly), in `turn`.
async fn expire_partials_now_and_then(
    cx: Arc<Consumers>,
    turn: Arc<tokio::sync::Mutex<()>>,
    cancel: CancellationToken,
) {
    let every = Duration::from_secs(cx.config.transfer.partial_expiry_secs.min(3600));
    loop {
        {
            let _turn = turn.lock().await;
            if let Err(error) = expire_partials(&cx).await {
                tracing::warn!(%error, "Cannot forget expired partial documents.");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Forgets the partial documents whose manifest did not come within
/// `transfer.partial_expiry_secs` of their last chunk: chunks an abandoned
/// upload sent ahead (a re-send would bring them again).
async fn expire_partials(cx: &Arc<Consumers>) -> Result<()> {
    let expiry = cx.config.transfer.partial_expiry_secs;
    let before = ecointegra_broker::now_ms()
        .saturating_sub(expiry.saturating_mul(1000).min(i64::MAX as u64) as i64);
    let stale = cx.store.run(move |s| s.stale_partials(before)).await?;
    for (sender, transfer_id, indexes) in stale {
        tracing::info!(
            %sender,
            %transfer_id,
            "Chunks of a transfer came but its manifest did not; forgotten."
        );
        discard_partials(cx, &sender, &transfer_id, indexes).await?;
    }
    Ok(())
}

/// Publishes a dead letter, records it and the offset, so the record is
/// neither lost nor blocking. Kafka being unreachable is waited out (the
/// consumer reports the stall meanwhile); a dead letter Kafka can never take
/// (not authorised to write the DLQ) is kept in the store alone, counted and
/// logged as an error, and the partition moves on. Returns false if the node
/// stops first.
async fn dead_letter(
    cx: &Arc<Consumers>,
    record: &Record,
    position: Position<'_>,
    rejection: &Rejection,
    cancel: &CancellationToken,
) -> bool {
    tracing::warn!(
        reason = %rejection.reason,
        code = rejection.code,
        sender = %rejection.claimed_sender,
        topic = position.topic,
        offset = position.offset,
        "Record dead-lettered."
    );
    let letter = ecointegra_broker::dlq::dead_letter(
        rejection,
        ecointegra_broker::dlq::Source {
            topic: position.topic,
            partition: position.partition,
            offset: position.offset,
            key: record.meta().key(),
            value: Some(&record.value()[..]),
        },
        cx.kafka.settings.max_record_bytes,
    );
    let dlq = cx.kafka.dlq_topic();
    let mut attempt = 0;
    let mut backoff = STALL_RETRY.backoff();
    let at = loop {
        match ecointegra_broker::dlq::publish(
            &cx.kafka.publisher,
            &dlq,
            cx.trust.institution(),
            &letter,
        )
        .await
        {
            Ok(at) => break at,
            Err(error) if error.is_permanent() => {
                tracing::error!(%error, %dlq, "Kafka refuses this dead letter for good; it is kept in the store only.");
                cx.metrics.dead_letter_unpublished();
                break UNPUBLISHED;
            }
            Err(error) => {
                attempt += 1;
                let why = format!("cannot publish a dead letter to {dlq}: {error}");
                if attempt == 1 {
                    tracing::warn!(reason = %why, "Consumer stalled; retrying the dead letter.");
                }
                cx.stalls.set(position.topic, why);
                if !backoff.wait(cancel).await {
                    return false;
                }
            }
        }
    };
    cx.stalls.clear(position.topic);
    crate::consume::dead_letters::recorded(cx, at, &letter).await;
    let recorded = skip(cx, position, None).await;
    if let Err(error) = recorded {
        tracing::error!(%error, "Cannot record a dead-lettered offset.");
    }
    true
}

/// The key a consumed message is known by: its sender's, so one institution
/// can neither pre-empt nor replay away another's message ids.
pub fn processed_key(envelope: &ecointegra_proto::v1::Envelope) -> String {
    format!("{} {}", envelope.sender, envelope.message_id)
}

/// The DLQ position of a dead letter Kafka would not take.
pub const UNPUBLISHED: (i32, i64) = (-1, -1);

/// Records a consumed record that has no effect of its own (a duplicate, or
/// one dead-lettered), with its message id when it was applied before.
async fn skip(cx: &Arc<Consumers>, position: Position<'_>, message_id: Option<&str>) -> Result<()> {
    let (topic, partition, offset) = owned(position);
    let id = message_id.map(str::to_owned);
    cx.store
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
