//! The outbox relay: publishes what the store queued, with the idempotent
//! producer, keyed by transfer id.
//!
//! A transfer goes out as its documents' chunks, in order, then its manifest;
//! a small one, to an institution that reads it, as its manifest alone with
//! the documents inside.
//! Its outbox entry stays until the signed receipt arrives. If none comes
//! within `transfer.receipt_timeout_secs`, the manifest goes again alone (a
//! probe, with a new attempt number: a destination that holds the filing, or
//! every chunk of it, answers with its receipt); if that brings no receipt
//! either, the whole transfer goes again (chunk ids repeat, so the
//! destination skips what it has). Each full send waits twice as long as the
//! one before, up to `transfer.max_resend_interval_secs`; after
//! `transfer.max_sends` of them the relay gives up and the filing shows in
//! trouble until an operator re-sends it. Kafka being down only delays this.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::kafka::Kafka;
use crate::retry::Policy;
use crate::store::Store;
use crate::store::batched::Batched;
use crate::store::blobs::Blobs;
use crate::store::outbox::Publication;
use crate::store::{DocumentRow, FilingRow, OutboxKind, OutboxRow};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::otlp::Otlp;
use crate::trust::Trust;
use ecointegra_broker::envelope::{CHUNKS_UNDIGESTED, SIGNED_BY_DIGEST};
use ecointegra_broker::kafka::{Pending, RecordMeta};
use ecointegra_proto::v1::{Chunk, DocumentDigest, Envelope, Manifest, MessageType, Transfer};
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Records of one transfer awaiting acknowledgement at once: bounds memory.
const WINDOW: usize = 16;
/// A filing of at most this many bytes (and at most one chunk, and one
/// record with its chain of custody) travels inside its manifest to an
/// institution that reads envelope schema 3: one record, one seal, one
/// signature instead of a chunk per document and a manifest.
const INLINE_MAX: u64 = 256 * 1024;
/// Waits before publishing an outbox entry again after Kafka did not take
/// it, by how many times in a row it failed: 2 s, doubling up to 30 s.
const RETRY: Policy = Policy::new(Duration::from_secs(2), Duration::from_secs(30));
/// Envelopes published together, their bookkeeping in one store write.
const ENVELOPE_BATCH: usize = 256;
/// Envelope batches in flight at once.
const ENVELOPE_BATCHES: usize = 2;

/// What a publishing task held, handed back when it ends, and what of it
/// Kafka did not take.
enum Done {
    Transfer { id: i64, failed: bool },
    Envelopes { ids: Vec<i64>, failed: Vec<i64> },
}

/// What the relay works with.
pub struct Relay {
    pub config: Arc<Config>,
    pub store: Store,
    pub blobs: Blobs,
    pub trust: Arc<Trust>,
    pub kafka: Arc<Kafka>,
    pub metrics: Arc<Metrics>,
    pub otlp: Option<Arc<Otlp>>,
    /// Rung when something was queued in the outbox.
    pub relay_wake: Arc<Notify>,
}

/// Records what became of each publication (a transfer's, or a batch of
/// envelopes'), in one hop and one write for all that end at once.
type Record = Batched<Publication, ()>;

/// What the relay found to publish in one read of the outbox, with what
/// publishing it reads, in the same hop to a blocking thread.
struct Due {
    /// Transfers not being published, each with its [`Source`].
    transfers: Vec<(OutboxRow, Result<Source>)>,
    /// Envelopes not being published, each with its `traceparent`.
    envelopes: Vec<(OutboxRow, String)>,
}

impl Due {
    /// Blocking. Up to `room` transfers and `envelope_room` envelopes that
    /// are due at `now_ms` and not in `busy`.
    fn read(
        s: &Store,
        (blobs, small_max): (&Blobs, u64),
        now_ms: i64,
        busy: &Publishing,
        (room, envelope_room): (usize, usize),
    ) -> Result<Self> {
        let taken = std::cell::Cell::new((0, 0));
        let rows = s.due_outbox(now_ms, 512, |id, kind| {
            let (transfers, envelopes) = taken.get();
            let take = match kind {
                OutboxKind::Transfer => transfers < room && !busy.transfers.contains(&id),
                OutboxKind::Envelope => envelopes < envelope_room && !busy.envelopes.contains(&id),
            };
            if take {
                taken.set(match kind {
                    OutboxKind::Transfer => (transfers + 1, envelopes),
                    OutboxKind::Envelope => (transfers, envelopes + 1),
                });
            }
            !take
        })?;
        let mut due = Self {
            transfers: Vec::new(),
            envelopes: Vec::new(),
        };
        for row in rows {
            match row.kind {
                OutboxKind::Transfer => {
                    let source = Source::read(s, blobs, small_max, &row.record_key);
                    due.transfers.push((row, source));
                }
                OutboxKind::Envelope => {
                    let traceparent = crate::telemetry::trace::outgoing(s, &row.record_key);
                    due.envelopes.push((row, traceparent));
                }
            }
        }
        Ok(due)
    }
}

/// The outbox entries being published.
#[derive(Default, Clone)]
struct Publishing {
    transfers: HashSet<i64>,
    envelopes: HashSet<i64>,
}

/// What the relay has in flight, and each entry's failed publications in a
/// row this run (the step of its next wait; an entry that leaves the outbox
/// another way, its receipt arriving, keeps its few bytes there until the
/// relay restarts).
#[derive(Default)]
struct Busy {
    publishing: Publishing,
    envelope_batches: usize,
    failures: HashMap<i64, u32>,
}

impl Busy {
    fn failures(&self, id: i64) -> u32 {
        self.failures.get(&id).copied().unwrap_or(0)
    }

    /// Takes back what a publishing task held.
    fn settle(&mut self, done: std::result::Result<Done, tokio::task::JoinError>) {
        match done {
            Ok(Done::Transfer { id, failed }) => {
                self.publishing.transfers.remove(&id);
                count_failure(&mut self.failures, id, failed);
            }
            Ok(Done::Envelopes { ids, failed }) => {
                self.envelope_batches -= 1;
                for id in ids {
                    self.publishing.envelopes.remove(&id);
                    count_failure(&mut self.failures, id, failed.contains(&id));
                }
            }
            // Only on abort or panic; what it held is republished on the
            // next start at the latest.
            Err(_) => {}
        }
    }
}

/// What the relay may have in flight at once: `transfer.relay_concurrency`
/// transfers' windows of records ([`WINDOW`] each), counted in records. A
/// transfer takes one unit per record it can hold in flight: a small filing
/// one, a large one up to a window. Counting transfers instead held the
/// relay to eight 1 KiB filings in flight at once, for eight windows' worth
/// of memory.
struct Slots {
    used: AtomicUsize,
    capacity: usize,
    /// The relay left a transfer for want of room: a slot given back wakes it.
    waiting: std::sync::atomic::AtomicBool,
    wake: Arc<Notify>,
}

impl Slots {
    fn new(concurrency: usize, wake: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            capacity: concurrency.saturating_mul(WINDOW),
            waiting: Default::default(),
            wake,
        })
    }

    fn room(&self) -> usize {
        self.capacity
            .saturating_sub(self.used.load(Ordering::SeqCst))
    }

    /// `units` of room for a transfer, if there are; if not, the next slot
    /// given back wakes the relay.
    fn take(self: &Arc<Self>, units: usize) -> Option<Slot> {
        if units > self.room() {
            // Said before looking again: room given back in between either
            // shows here or wakes the relay.
            self.waiting.store(true, Ordering::SeqCst);
            if units > self.room() {
                return None;
            }
        }
        self.used.fetch_add(units, Ordering::SeqCst);
        Some(Slot {
            slots: self.clone(),
            units,
        })
    }
}

/// A transfer's room among the [`Slots`], held until Kafka has acknowledged
/// (or refused) its records: all it holds in memory (its window of records)
/// is gone then. Its record in the store comes after, without the room:
/// holding it through that commit too kept each in flight about twice as
/// long.
struct Slot {
    slots: Arc<Slots>,
    units: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.used.fetch_sub(self.units, Ordering::SeqCst);
        if self.slots.waiting.swap(false, Ordering::SeqCst) {
            self.slots.wake.notify_one();
        }
    }
}

pub async fn run(relay: Arc<Relay>, cancel: CancellationToken) {
    let slots = Slots::new(
        relay.config.transfer.relay_concurrency,
        relay.relay_wake.clone(),
    );
    let chunk_size = relay.config.transfer.chunk_size as u64;
    let small_max = INLINE_MAX.min(relay.config.transfer.chunk_size as u64);
    let record: Arc<Record> = Arc::new(Batched::new(relay.store.clone(), |s, publications| {
        s.record_publications(publications)
    }));
    let mut in_flight: JoinSet<Done> = JoinSet::new();
    let mut busy = Busy::default();
    loop {
        let room = slots.room();
        let envelope_room = if busy.envelope_batches < ENVELOPE_BATCHES {
            ENVELOPE_BATCH
        } else {
            0
        };
        if room > 0 || envelope_room > 0 {
            let now = ecointegra_broker::now_ms();
            let (blobs, seen) = (relay.blobs.clone(), busy.publishing.clone());
            let read = relay
                .store
                .run(move |s| Due::read(s, (&blobs, small_max), now, &seen, (room, envelope_room)));
            match read.await {
                Ok(due) => {
                    for (row, source) in due.transfers {
                        let units = source
                            .as_ref()
                            .map_or(1, |s| s.records_in_flight(chunk_size));
                        // In order: one that does not fit yet goes first
                        // once room is given back; those after it wait too.
                        let Some(slot) = slots.take(units) else {
                            break;
                        };
                        busy.publishing.transfers.insert(row.id);
                        let failed = busy.failures(row.id);
                        let (relay, record) = (relay.clone(), record.clone());
                        in_flight.spawn(publish_row(relay, record, slot, row, source, failed));
                    }
                    if !due.envelopes.is_empty() {
                        let batch = due
                            .envelopes
                            .into_iter()
                            .map(|(row, traceparent)| {
                                busy.publishing.envelopes.insert(row.id);
                                let failed = busy.failures(row.id);
                                (row, traceparent, failed)
                            })
                            .collect();
                        busy.envelope_batches += 1;
                        in_flight.spawn(publish_envelopes(relay.clone(), record.clone(), batch));
                    }
                }
                Err(error) => tracing::error!(%error, "Cannot read the outbox."),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = relay.relay_wake.notified() => {}
            Some(done) = in_flight.join_next() => busy.settle(done),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        // Everything else that ended meanwhile, before the next read: one
        // read for all of it.
        while let Some(done) = in_flight.try_join_next() {
            busy.settle(done);
        }
    }
    // Whatever was not acknowledged stays in the outbox for the next start.
    in_flight.abort_all();
    while in_flight.join_next().await.is_some() {}
}

/// Counts an entry's failed publications in a row; a success ends the count.
fn count_failure(failures: &mut HashMap<i64, u32>, id: i64, failed: bool) {
    if failed {
        *failures.entry(id).or_default() += 1;
    } else {
        failures.remove(&id);
    }
}

/// When to publish again an entry that failed after `failures` failures in a row.
fn retry_at(now_ms: i64, failures: u32) -> i64 {
    now_ms + RETRY.delay(failures).as_millis() as i64
}

/// What the relay does with a transfer whose receipt is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Every chunk, then the manifest.
    Full,
    /// The manifest alone.
    Probe,
    /// Nothing more by itself: an operator decides.
    GiveUp,
}

/// The next publication of a transfer sent whole `full_sends` times so far,
/// whose last publication was a probe or not: a probe after each full send,
/// a full send after each probe, until `max_sends` full sends.
fn next_send(full_sends: u32, probed: bool, max_sends: u32) -> Next {
    if full_sends > 0 && !probed {
        Next::Probe
    } else if full_sends >= max_sends {
        Next::GiveUp
    } else {
        Next::Full
    }
}

/// How long to wait for the receipt after a publication, in ms: after a
/// probe the receipt timeout; after the `n`th full send the receipt timeout
/// doubled `n - 1` times, at most `cap_secs`.
fn receipt_wait_ms(timeout_secs: u64, cap_secs: u64, send: Next, full_sends: u32) -> i64 {
    let doublings = match send {
        Next::Full => full_sends.min(32),
        _ => 0,
    };
    let secs = timeout_secs
        .saturating_mul(1u64 << doublings)
        .min(cap_secs.max(timeout_secs));
    secs.saturating_mul(1000).min(i64::MAX as u64) as i64
}

/// Publishes a transfer that had failed `failures` times in a row before.
async fn publish_row(
    relay: Arc<Relay>,
    record: Arc<Record>,
    slot: Slot,
    row: OutboxRow,
    source: Result<Source>,
    failures: u32,
) -> Done {
    let id = row.id;
    let transfer = &relay.config.transfer;
    let send = next_send(row.full_sends, row.probed, transfer.max_sends);
    if send == Next::GiveUp {
        tracing::warn!(
            transfer_id = %row.record_key,
            destination = %row.recipient,
            full_sends = row.full_sends,
            "No receipt after every automatic send; the transfer waits for an operator."
        );
        let now_ms = ecointegra_broker::now_ms();
        let given_up = Publication::GaveUp { id, now_ms };
        if let Err(error) = record.call(given_up).await {
            tracing::error!(%error, outbox_id = id, "Cannot record a publication.");
        }
        return Done::Transfer { id, failed: false };
    }
    let wait = receipt_wait_ms(
        transfer.receipt_timeout_secs,
        transfer.max_resend_interval_secs,
        send,
        row.full_sends,
    );
    // A first send whose chunks all went out during the upload is its
    // manifest alone on the wire, and still counts as a full send: every
    // record of the transfer is on Kafka.
    let probe = send == Next::Probe;
    let mut manifest_seq = None;
    let result = publish_transfer(&relay, source, &row, probe, &mut manifest_seq).await;
    drop(slot);
    let failed = result.is_err();
    let now = ecointegra_broker::now_ms();
    let publication = match result {
        Ok(tracking_seq) => Publication::Published {
            row,
            probe,
            tracking_seq,
            next_attempt_at_ms: now.saturating_add(wait),
        },
        Err(error) => {
            tracing::warn!(%error, outbox_id = id, "Publication failed; will retry.");
            relay.metrics.publish_failed();
            Publication::Failed {
                row,
                manifest_seq,
                next_attempt_at_ms: retry_at(now, failures),
            }
        }
    };
    if let Err(error) = record.call(publication).await {
        tracing::error!(%error, outbox_id = id, "Cannot record a publication.");
    }
    Done::Transfer { id, failed }
}

/// Publishes a batch of sealed envelopes (receipts, tracking events) at once,
/// then records what Kafka acknowledged (in one store write with whatever
/// else the relay records at that moment). Each row comes with its
/// `traceparent` and its failed publications in a row before.
async fn publish_envelopes(
    relay: Arc<Relay>,
    record: Arc<Record>,
    batch: Vec<(OutboxRow, String, u32)>,
) -> Done {
    let ids: Vec<i64> = batch.iter().map(|(row, ..)| row.id).collect();
    let mut queued = Vec::with_capacity(batch.len());
    for (row, traceparent, failures) in &batch {
        queued.push((
            row,
            enqueue_envelope(&relay, row, traceparent).await,
            *failures,
        ));
    }
    let (mut published, mut failed) = (Vec::new(), Vec::new());
    for (row, pending, failures) in queued {
        let delivered = match pending {
            Ok(pending) => pending.delivered().await.map_err(Error::from),
            Err(error) => Err(error),
        };
        match delivered {
            Ok((partition, offset)) => {
                // Where Kafka says it wrote it: what to look for in the log
                // if a step is ever missing there.
                tracing::debug!(outbox_id = row.id, topic = %row.topic, partition, offset, "Envelope acknowledged.");
                published.push(row.id)
            }
            Err(error) => {
                tracing::warn!(%error, outbox_id = row.id, "Publication failed; will retry.");
                relay.metrics.publish_failed();
                failed.push((row.id, failures));
            }
        }
    }
    let now = ecointegra_broker::now_ms();
    let retries: Vec<(i64, i64)> = failed
        .iter()
        .map(|&(id, failures)| (id, retry_at(now, failures)))
        .collect();
    if !(published.is_empty() && retries.is_empty()) {
        let recorded = record.call(Publication::Envelopes { published, retries });
        if let Err(error) = recorded.await {
            tracing::error!(%error, "Cannot record a publication.");
        }
    }
    let failed = failed.into_iter().map(|(id, _)| id).collect();
    Done::Envelopes { ids, failed }
}

async fn enqueue_envelope(relay: &Relay, row: &OutboxRow, traceparent: &str) -> Result<Pending> {
    let stored = row.envelope.as_deref().unwrap_or_default();
    let envelope = Envelope::decode(stored).map_err(|e| Error::Io {
        context: "an outbox envelope is unreadable".into(),
        source: std::io::Error::other(e),
    })?;
    let envelope = on_the_wire(relay, envelope, stored)?;
    let bytes = envelope.encode_to_vec();
    let pending = relay
        .kafka
        .publisher
        .enqueue(
            &row.topic,
            &row.record_key,
            &bytes,
            &meta_of(&envelope),
            &[(crate::telemetry::trace::HEADER, traceparent)],
        )
        .await?;
    relay.metrics.produced(&row.topic, bytes.len());
    tracing::debug!(message_id = %envelope.message_id, topic = %row.topic, "Envelope published.");
    Ok(pending)
}

/// What goes on Kafka for a stored envelope. A receipt is kept signed in
/// the clear, so anyone who holds it can verify it, but it names documents
/// and a registry number: it travels encrypted for its recipient, byte for
/// byte the payload of a SEALED_RECEIPT envelope (the first time, and every
/// time it is sent again from the store). Everything else is stored as it
/// travels: encrypted for a peer's inbox, or a tracking event every node reads.
fn on_the_wire(relay: &Relay, envelope: Envelope, stored: &[u8]) -> Result<Envelope> {
    if envelope.message_type != MessageType::Receipt as i32 {
        return Ok(envelope);
    }
    let recipient = &envelope.recipient;
    let key = relay
        .trust
        .directory()
        .get(recipient)
        .map(|i| i.encryption_key)
        .ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "{recipient} is not in the directory; its receipt waits"
            ))
        })?;
    relay
        .trust
        .sealer
        .seal_encrypted(
            envelope.message_id.clone(),
            MessageType::SealedReceipt,
            recipient,
            &key,
            stored,
        )
        .map_err(|e| Error::FailedPrecondition(format!("cannot encrypt for {recipient}: {e}")))
}

fn meta_of(envelope: &Envelope) -> RecordMeta<'_> {
    RecordMeta {
        message_type: MessageType::try_from(envelope.message_type)
            .map(|t| t.as_str_name())
            .unwrap_or("UNKNOWN"),
        sender: &envelope.sender,
        message_id: &envelope.message_id,
    }
}

/// Publishes a transfer (its chunks, then its manifest, or a probe) and
/// waits until Kafka has acknowledged every record. Returns the timeline
/// step its manifest carried, which is also left in `manifest_seq` as soon
/// as the manifest is handed to Kafka (so a failed publication still knows
/// it).
async fn publish_transfer(
    relay: &Relay,
    source: Result<Source>,
    row: &OutboxRow,
    probe: bool,
    manifest_seq: &mut Option<u64>,
) -> Result<u64> {
    let mut source = source?;
    let filing = &source.filing;
    let submitted = source.submitted.take();
    let (span, trace) =
        crate::telemetry::trace::start_span(relay.otlp.as_deref(), submitted, || {
            tracing::info_span!(
                "publish transfer",
                otel.kind = "producer",
                otel.status_code = tracing::field::Empty,
                ecointegra.tracking_code = %filing.tracking_code,
                ecointegra.destination = %filing.destination,
            )
        });
    let traceparent = trace.to_string();
    let published =
        publish_records(relay, row, &mut source, &traceparent, probe, manifest_seq).await;
    if published.is_err() {
        span.record("otel.status_code", "error");
    }
    drop(span);
    let (attempt, tracking_seq) = published?;
    tracing::info!(
        tracking_code = %source.filing.tracking_code,
        destination = %source.filing.destination,
        attempt,
        probe,
        "Transfer published."
    );
    Ok(tracking_seq)
}

/// What publishing a transfer reads, read with its outbox entry (in the
/// hop that finds the entry due: four hops to blocking threads for a
/// one-document filing before, then one for all the transfers being
/// published, none of its own now).
struct Source {
    filing: FilingRow,
    /// The trace its submission left.
    submitted: Option<crate::telemetry::trace::TraceContext>,
    /// The receipts of the hops before this one: the chain of custody.
    prior_receipts: Vec<Vec<u8>>,
    /// The filing's timeline step, which the manifest carries.
    tracking_seq: u64,
    /// Each document's bytes, for a filing small enough to travel inside
    /// its manifest (see [`INLINE_MAX`]).
    small: Option<Vec<Vec<u8>>>,
}

impl Source {
    /// The records this transfer can have in flight at once: one for a
    /// small filing (its documents travel in its manifest, or in one chunk
    /// each, small), otherwise its chunks and manifest, at most [`WINDOW`].
    fn records_in_flight(&self, chunk_size: u64) -> usize {
        if self.small.is_some() {
            return 1;
        }
        let chunks: u64 = (self.filing.documents.iter())
            .map(|d| d.size.div_ceil(chunk_size.max(1)).max(1))
            .sum();
        chunks.saturating_add(1).min(WINDOW as u64) as usize
    }

    /// Blocking.
    fn read(s: &Store, blobs: &Blobs, small_max: u64, transfer_id: &str) -> Result<Self> {
        let filing = s
            .filing_by_transfer(transfer_id)?
            .ok_or_else(|| Error::NotFound(format!("the filing of transfer {transfer_id}")))?;
        let submitted = crate::telemetry::trace::kept(s, transfer_id);
        let prior_receipts = s
            .receipt_chain(&filing.tracking_code)?
            .into_iter()
            .filter(|r| r.hop < filing.hop)
            .map(|r| r.envelope)
            .collect();
        let tracking_seq = s.tracking_seq(&filing.tracking_code)?;
        let total: u64 = filing.documents.iter().map(|d| d.size).sum();
        let small = if total <= small_max {
            let read = |doc: &DocumentRow| {
                if let Some(bytes) = blobs.recall(&doc.sha256) {
                    return Ok(bytes);
                }
                s.locate(blobs, &doc.sha256, doc.size)?
                    .read()
                    .map_err(Error::io(format!(
                        "cannot read document {} of {transfer_id}",
                        doc.index
                    )))
            };
            Some(filing.documents.iter().map(read).collect::<Result<_>>()?)
        } else {
            None
        };
        Ok(Self {
            filing,
            submitted,
            prior_receipts,
            tracking_seq,
            small,
        })
    }
}

/// Every record of a transfer (only its manifest for a `probe`, and no chunk
/// of a document that went out while it was uploaded), each carrying
/// `traceparent`; returns the attempt published and the timeline step its
/// manifest carried, once Kafka has acknowledged them all.
async fn publish_records(
    relay: &Relay,
    row: &OutboxRow,
    source: &mut Source,
    traceparent: &str,
    probe: bool,
    manifest_seq: &mut Option<u64>,
) -> Result<(u32, u64)> {
    let transfer_id = &row.record_key;
    let filing = &source.filing;
    let route = Route::to(&relay.trust, &relay.kafka, &filing.destination)?;
    let schema = route.schema;
    // Documents that went out during the upload were cut at the size then in
    // force: the manifest announces it, and the rest are cut at it too.
    let chunk_size = row
        .chunks_out
        .chunk_size_or(relay.config.transfer.chunk_size) as u64;
    let mut pending = InOrder::new(WINDOW);
    // A small filing travels inside its manifest (one record, one seal), to
    // an institution that reads schema 3: older ones wait for chunks.
    let small = source.small.take().filter(|_| schema >= SIGNED_BY_DIGEST);
    let mut inline = small.is_some();
    let mut small = small.unwrap_or_default().into_iter();
    let mut digests = Vec::with_capacity(filing.documents.len());
    for doc in &filing.documents {
        let data = small.next().unwrap_or_default();
        digests.push(DocumentDigest {
            index: doc.index,
            name: doc.name.clone(),
            media_type: doc.media_type.clone(),
            size: doc.size,
            sha256: doc.sha256.clone(),
            chunk_count: if inline {
                0
            } else {
                doc.size.div_ceil(chunk_size) as u32
            },
            data,
        });
    }

    let (prior_receipts, tracking_seq) = (
        std::mem::take(&mut source.prior_receipts),
        source.tracking_seq,
    );
    let attempt = row.attempts + 1;
    let mut manifest = Manifest {
        transfer: Some(Transfer {
            transfer_id: transfer_id.clone(),
            tracking_code: filing.tracking_code.clone(),
            origin: filing.origin.clone(),
            destination: filing.destination.clone(),
            subject: filing.subject.clone(),
            sender_party: Some(filing.sender_party.clone()),
            folio_count: filing.folio_count,
            registered_at_ms: filing.registered_at_ms,
            origin_registry_number: filing.registry_number.clone(),
            kind: filing.kind as i32,
            related_transfer_id: filing.related_transfer_id.clone(),
            note: filing.note.clone(),
            hop: filing.hop,
            tracking_seq,
            previous_receipt_sha256: filing.previous_receipt_sha256.clone(),
            prior_receipts,
            filing_type: filing.filing_type.clone(),
            filed_at: filing.filed_at.clone(),
            sgd: filing.sgd.clone(),
        }),
        documents: digests,
        attempt,
        chunk_size: chunk_size as u32,
        probe,
    };
    if inline && manifest.encoded_len() as u64 > chunk_size {
        // Too long with its chain of custody for one record: chunks after all.
        inline = false;
        for doc in &mut manifest.documents {
            doc.data = Vec::new();
            doc.chunk_count = doc.size.div_ceil(chunk_size) as u32;
        }
    }
    if !inline && !probe {
        // A document whose chunks all went out while it was uploaded is not
        // sent again; if that is every one, the manifest goes alone, marked
        // as a probe: a destination missing some chunk (it cannot be, short
        // of a failure there) waits for the next full send instead of
        // dead-lettering it.
        let out = |doc: &&DocumentRow| row.chunks_out.documents.contains(&doc.index);
        for doc in filing.documents.iter().filter(|d| !out(d)) {
            send_document(
                relay,
                &route,
                transfer_id,
                doc,
                chunk_size,
                traceparent,
                &mut pending,
            )
            .await?;
        }
        manifest.probe = filing.documents.iter().all(|d| out(&d));
    }
    let envelope = route.seal(
        &relay.trust,
        format!("{transfer_id}/manifest/{attempt}"),
        MessageType::Manifest,
        &manifest.encode_to_vec(),
    )?;
    *manifest_seq = Some(tracking_seq);
    let queued = enqueue(
        &relay.kafka,
        &relay.metrics,
        &route,
        transfer_id,
        &envelope,
        traceparent,
    )
    .await?;
    pending.push(queued).await?;
    pending.finish().await?;
    Ok((attempt, tracking_seq))
}

/// Publishes `doc` as its chunks of `chunk_size` bytes, in order, read from
/// the store.
async fn send_document(
    relay: &Relay,
    route: &Route,
    transfer_id: &str,
    doc: &DocumentRow,
    chunk_size: u64,
    traceparent: &str,
    pending: &mut InOrder,
) -> Result<()> {
    let mut pieces = relay
        .store
        .open_pieces(&relay.blobs, &doc.sha256, doc.size)
        .await?;
    for seq in 0..doc.size.div_ceil(chunk_size) as u32 {
        let offset = seq as u64 * chunk_size;
        let len = chunk_size.min(doc.size - offset) as usize;
        let data = pieces.read(offset, len).await.map_err(Error::io(format!(
            "cannot read document {} of {transfer_id}",
            doc.index
        )))?;
        let envelope = route.chunk(&relay.trust, transfer_id, doc.index, seq, offset, data)?;
        let queued = enqueue(
            &relay.kafka,
            &relay.metrics,
            route,
            transfer_id,
            &envelope,
            traceparent,
        )
        .await?;
        pending.push(queued).await?;
    }
    Ok(())
}

/// A transfer's way to its destination: the key its records are encrypted
/// for, the one envelope schema they all share (what they carry depends on
/// it) and the topic they go to.
pub(crate) struct Route {
    pub destination: String,
    pub topic: String,
    key: [u8; 32],
    pub schema: u32,
}

impl Route {
    /// The route to `destination`, if it is an active institution of the
    /// directory.
    pub(crate) fn to(trust: &Trust, kafka: &Kafka, destination: &str) -> Result<Self> {
        // Content is encrypted for the destination: Kafka sees only ciphertext.
        let key = trust
            .directory()
            .active(destination, ecointegra_broker::now_ms())
            .map(|i| i.encryption_key)
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "{destination} is not an active institution of the directory; the transfer waits"
                ))
            })?;
        Ok(Self {
            destination: destination.to_owned(),
            topic: kafka.topics.inbox(destination),
            key,
            schema: trust.sealer.negotiation().version_for(destination),
        })
    }

    /// Encrypts `payload` for the destination and signs it.
    pub(crate) fn seal(
        &self,
        trust: &Trust,
        id: String,
        message_type: MessageType,
        payload: &[u8],
    ) -> Result<Envelope> {
        trust
            .sealer
            .seal_encrypted_as(
                self.schema,
                id,
                message_type,
                &self.destination,
                &self.key,
                payload,
            )
            .map_err(|e| {
                Error::FailedPrecondition(format!("cannot encrypt for {}: {e}", self.destination))
            })
    }

    /// Chunk `seq` of document `index` of a transfer: `data`, found at
    /// `offset` of the document, sealed.
    pub(crate) fn chunk(
        &self,
        trust: &Trust,
        transfer_id: &str,
        index: u32,
        seq: u32,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Envelope> {
        let chunk = Chunk {
            transfer_id: transfer_id.to_owned(),
            document_index: index,
            seq,
            offset,
            // A destination that reads only schemas before
            // CHUNKS_UNDIGESTED wants each chunk's own SHA-256.
            sha256: if self.schema < CHUNKS_UNDIGESTED {
                Sha256::digest(&data).to_vec()
            } else {
                Vec::new()
            },
            data: data.into(),
        };
        self.seal(
            trust,
            format!("{transfer_id}/chunk/{index}/{seq}"),
            MessageType::Chunk,
            &chunk.encode_to_vec(),
        )
    }
}

/// Hands a transfer's record to Kafka, keyed by its transfer id.
pub(crate) async fn enqueue(
    kafka: &Kafka,
    metrics: &Metrics,
    route: &Route,
    transfer_id: &str,
    envelope: &Envelope,
    traceparent: &str,
) -> Result<Pending> {
    let bytes = envelope.encode_to_vec();
    let queued = kafka
        .publisher
        .enqueue(
            &route.topic,
            transfer_id,
            &bytes,
            &meta_of(envelope),
            &[(crate::telemetry::trace::HEADER, traceparent)],
        )
        .await?;
    metrics.produced(&route.topic, bytes.len());
    Ok(queued)
}

/// A transfer's records awaiting acknowledgement, at most `window` at
/// once, each acknowledged in the transfer's partition after the one before
/// it. A destination reads a transfer's chunks in that order: one missing
/// from the log, or placed after a later one, would leave the transfer
/// undeliverable until its next full send (one CI run lost a first chunk
/// that Kafka had acknowledged, see `ecointegra_broker::kafka::Pending`).
pub(crate) struct InOrder {
    pending: VecDeque<Pending>,
    window: usize,
    last: Option<(i32, i64)>,
}

impl InOrder {
    pub(crate) fn new(window: usize) -> Self {
        Self {
            pending: VecDeque::with_capacity(window),
            window,
            last: None,
        }
    }

    /// Queues a record's acknowledgement; waits for the oldest when the
    /// window is full.
    pub(crate) async fn push(&mut self, queued: Pending) -> Result<()> {
        self.pending.push_back(queued);
        if self.pending.len() >= self.window
            && let Some(acknowledged) = self.oldest().await
        {
            acknowledged?;
        }
        Ok(())
    }

    /// Waits for the oldest record queued, if any is.
    pub(crate) async fn oldest(&mut self) -> Option<Result<()>> {
        let oldest = self.pending.pop_front()?;
        Some(match oldest.delivered().await {
            Ok(place) => self.acknowledged(place),
            Err(error) => Err(error.into()),
        })
    }

    /// Waits for every record queued.
    async fn finish(&mut self) -> Result<()> {
        while let Some(acknowledged) = self.oldest().await {
            acknowledged?;
        }
        Ok(())
    }

    /// Forgets the records queued.
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }

    fn acknowledged(&mut self, (partition, offset): (i32, i64)) -> Result<()> {
        if let Some((last_partition, last_offset)) = self.last
            && (partition != last_partition || offset <= last_offset)
        {
            return Err(Error::FailedPrecondition(format!(
                "Kafka placed a record of the transfer at {partition}/{offset}, after one at \
                 {last_partition}/{last_offset}: out of order; the transfer goes again"
            )));
        }
        self.last = Some((partition, offset));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room is taken in records and given back when a transfer's slot is
    /// dropped; a transfer that does not fit wakes the relay once room is
    /// given back, and only then.
    #[tokio::test]
    async fn a_transfer_that_does_not_fit_waits_for_room_given_back() {
        let wake = Arc::new(Notify::new());
        let woken = async || {
            tokio::time::timeout(Duration::ZERO, wake.notified())
                .await
                .is_ok()
        };
        let slots = Slots::new(2, wake.clone());
        assert_eq!(slots.room(), 2 * WINDOW);
        let large = slots.take(WINDOW).expect("room for a large transfer");
        let small = slots.take(1).expect("room for a small one");
        assert_eq!(slots.room(), WINDOW - 1);
        drop(small);
        assert!(!woken().await, "nothing waited for room");
        assert!(slots.take(WINDOW + 1).is_none(), "more than the room left");
        drop(large);
        assert!(woken().await, "a transfer waited for room");
        assert_eq!(slots.room(), 2 * WINDOW);
    }

    /// A transfer's acknowledgements must climb in one partition: a record
    /// placed at or before the one sent ahead of it, or in another
    /// partition, fails the send, so the transfer goes again.
    #[test]
    fn a_transfer_acknowledged_out_of_order_fails() {
        let mut in_order = InOrder::new(WINDOW);
        for place in [(1, 7), (1, 8), (1, 12)] {
            in_order.acknowledged(place).unwrap();
        }
        for place in [(1, 12), (1, 3), (0, 13)] {
            let error = in_order.acknowledged(place).unwrap_err();
            assert!(error.to_string().contains("out of order"), "{error}");
        }
        in_order.acknowledged((1, 13)).unwrap();
    }

    #[test]
    fn a_probe_follows_each_full_send_until_the_last() {
        let mut sends = Vec::new();
        let (mut full, mut probed) = (0, false);
        loop {
            let next = next_send(full, probed, 3);
            sends.push(next);
            match next {
                Next::Full => (full, probed) = (full + 1, false),
                Next::Probe => probed = true,
                Next::GiveUp => break,
            }
        }
        use Next::*;
        assert_eq!(sends, [Full, Probe, Full, Probe, Full, Probe, GiveUp]);
    }

    #[test]
    fn full_sends_wait_twice_as_long_each_time_up_to_the_cap() {
        let waits: Vec<i64> = (0..6)
            .map(|full_sends| receipt_wait_ms(300, 3600, Next::Full, full_sends))
            .collect();
        assert_eq!(
            waits,
            [300_000, 600_000, 1_200_000, 2_400_000, 3_600_000, 3_600_000]
        );
        assert_eq!(receipt_wait_ms(300, 3600, Next::Probe, 5), 300_000);
        // No overflow however many sends were made.
        assert_eq!(receipt_wait_ms(300, 3600, Next::Full, u32::MAX), 3_600_000);
        assert_eq!(
            receipt_wait_ms(u64::MAX, u64::MAX, Next::Full, 40),
            i64::MAX
        );
    }
}
