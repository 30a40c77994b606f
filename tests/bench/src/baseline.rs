//! The baseline arm: raw Kafka with the nodes' own clients and settings, and
//! nothing else. One producer plays the origin and sends each document as
//! records of `transfer.chunk_size` bytes (keyed by the filing, so they stay
//! in order on one partition); one consumer plays the destination and, once
//! it has read a document's last record, answers with a small reply record
//! from a second producer, which a second consumer reads back: the same two
//! Kafka hops as a transfer and its receipt, without storing, hashing,
//! signing or fsyncing anything.
//!
//! The producers are [`Publisher`]s and the consumers [`InboxConsumer`]s, the
//! very types the nodes use (`enable.idempotence=true`, `acks=all`,
//! `linger.ms=2`, no compression; the same fetch bounds), so the comparison is
//! with the nodes' exact client configuration.
//!
//! Every record starts with a 32-byte header: the filing's sequence number,
//! the chunk index, the chunk count, the document size and the send offset.
//! The consumer checks order, lengths and repeats.

use super::load::Outcome;
use super::payload::Payload;
use ecointegra_broker::kafka::{
    Fetch, InboxConsumer, KafkaSettings, Pending, Publisher, RecordMeta,
};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::message::Message;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Records of one document awaiting acknowledgement at once, as in the relay.
const WINDOW: usize = 16;
const HEADER: usize = 32;
/// About the size of a signed receipt envelope.
const REPLY_SIZE: usize = 512;

/// Where one filing stands on the consumer side.
struct Entry {
    chunks: u32,
    size: u64,
    next_chunk: u32,
    delivered: Option<Instant>,
    replied: bool,
    waiter: Option<oneshot::Sender<Instant>>,
}

/// Shared between the sending side and the two consumer loops.
#[derive(Default)]
struct State {
    entries: Mutex<HashMap<u64, Entry>>,
    duplicates: AtomicU64,
    mismatches: AtomicU64,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Baseline {
    origin: Publisher,
    data_topic: String,
    chunk_size: u64,
    payload: Arc<Payload>,
    state: Arc<State>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    destination: Publisher,
}

impl Baseline {
    /// Creates the two topics and starts both consumers.
    pub async fn start(
        settings: &KafkaSettings,
        prefix: &str,
        partitions: i32,
        chunk_size: u64,
        message_timeout: Duration,
        payload: Arc<Payload>,
    ) -> anyhow::Result<Arc<Baseline>> {
        let data_topic = format!("{prefix}.bench.data");
        let reply_topic = format!("{prefix}.bench.reply");
        let admin = settings.admin()?;
        let topics = [
            NewTopic::new(&data_topic, partitions, TopicReplication::Fixed(1)),
            NewTopic::new(&reply_topic, partitions, TopicReplication::Fixed(1)),
        ];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(topics.iter(), &options).await? {
            if let Err((topic, code)) = result {
                anyhow::bail!("cannot create topic {topic}: {code}");
            }
        }
        let origin = Publisher::new(settings, message_timeout)?;
        let destination = Publisher::new(settings, message_timeout)?;
        let data = consumer(
            settings,
            &format!("{prefix}.bench.destination"),
            &data_topic,
        )
        .await?;
        let replies = consumer(settings, &format!("{prefix}.bench.origin"), &reply_topic).await?;
        let state = Arc::new(State::default());
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(consume_data(
            data,
            state.clone(),
            destination.clone(),
            reply_topic,
            cancel.clone(),
        ));
        tasks.spawn(consume_replies(replies, state.clone(), cancel.clone()));
        tasks.close();
        Ok(Arc::new(Baseline {
            origin,
            data_topic,
            chunk_size,
            payload,
            state,
            cancel,
            tasks,
            destination,
        }))
    }

    pub fn duplicates(&self) -> u64 {
        self.state.duplicates.load(Ordering::Relaxed)
    }

    pub fn mismatches(&self) -> u64 {
        self.state.mismatches.load(Ordering::Relaxed)
    }

    /// Sends one document and waits for its reply.
    pub async fn transfer(&self, seq: u64, size: u64, intended: Instant) -> Outcome {
        let mut outcome = Outcome::default();
        let chunks = size.div_ceil(self.chunk_size).max(1) as u32;
        let (tx, rx) = oneshot::channel();
        self.state.lock().insert(
            seq,
            Entry {
                chunks,
                size,
                next_chunk: 0,
                delivered: None,
                replied: false,
                waiter: Some(tx),
            },
        );
        if let Err(error) = self.send(seq, size, chunks).await {
            outcome.error = Some(format!("baseline filing {seq}: {error}"));
            return outcome;
        }
        outcome.accepted = Some(intended.elapsed());
        match tokio::time::timeout(super::completion_timeout(size), rx).await {
            Ok(Ok(replied_at)) => {
                let delivered = self.state.lock().get(&seq).and_then(|e| e.delivered);
                outcome.delivered = delivered.map(|d| d.saturating_duration_since(intended));
                outcome.receipted = Some(replied_at.saturating_duration_since(intended));
            }
            _ => {
                outcome.error = Some(format!(
                    "baseline filing {seq}: no reply within {:?}",
                    super::completion_timeout(size)
                ));
            }
        }
        outcome
    }

    async fn send(&self, seq: u64, size: u64, chunks: u32) -> anyhow::Result<()> {
        let key = seq.to_string();
        let mut pending: VecDeque<Pending> = VecDeque::with_capacity(WINDOW);
        for chunk in 0..chunks {
            let offset = chunk as u64 * self.chunk_size;
            let len = self.chunk_size.min(size - offset) as usize;
            let mut value = Vec::with_capacity(HEADER + len);
            value.extend_from_slice(&seq.to_le_bytes());
            value.extend_from_slice(&chunk.to_le_bytes());
            value.extend_from_slice(&chunks.to_le_bytes());
            value.extend_from_slice(&size.to_le_bytes());
            value.extend_from_slice(&offset.to_le_bytes());
            value.extend_from_slice(&self.payload.piece(seq, offset, len));
            let message_id = format!("{seq}/{chunk}");
            let meta = RecordMeta {
                message_type: "BENCH_CHUNK",
                sender: "bench-origin",
                message_id: &message_id,
            };
            pending.push_back(
                self.origin
                    .enqueue(&self.data_topic, &key, &value, &meta, &[])
                    .await?,
            );
            if pending.len() >= WINDOW
                && let Some(oldest) = pending.pop_front()
            {
                oldest.delivered().await?;
            }
        }
        while let Some(p) = pending.pop_front() {
            p.delivered().await?;
        }
        Ok(())
    }

    /// Stops the consumers and flushes both producers.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
        for publisher in [self.origin.clone(), self.destination.clone()] {
            let flushed =
                tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(10))).await;
            if let Ok(Err(error)) = flushed {
                tracing::warn!(%error, "Baseline producer did not flush.");
            }
        }
    }
}

/// An [`InboxConsumer`] reading every partition of `topic` from the start.
async fn consumer(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
) -> anyhow::Result<Arc<InboxConsumer>> {
    let consumer = Arc::new(InboxConsumer::new(settings, group, topic, Fetch::Eager)?);
    let deadline = Instant::now() + Duration::from_secs(30);
    let partitions = loop {
        let c = consumer.clone();
        match tokio::task::spawn_blocking(move || c.partitions(Duration::from_secs(5))).await? {
            Ok(p) => break p,
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let positions: Vec<(i32, Option<i64>)> = partitions.into_iter().map(|p| (p, None)).collect();
    consumer.assign(&positions)?;
    Ok(consumer)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

/// The destination: checks each record, and answers a complete document.
async fn consume_data(
    consumer: Arc<InboxConsumer>,
    state: Arc<State>,
    replier: Publisher,
    reply_topic: String,
    cancel: CancellationToken,
) {
    let replies = TaskTracker::new();
    loop {
        let record = tokio::select! {
            _ = cancel.cancelled() => break,
            record = consumer.recv() => record,
        };
        let message = match record {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "Baseline read failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let value = message.payload().unwrap_or_default();
        if value.len() < HEADER {
            state.mismatches.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let seq = read_u64(value, 0);
        let chunk = read_u32(value, 8);
        let complete = {
            let mut entries = state.lock();
            match entries.get_mut(&seq) {
                None => {
                    state.mismatches.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Some(e) if chunk < e.next_chunk => {
                    state.duplicates.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Some(e) => {
                    let offset = read_u64(value, 24);
                    let len = (value.len() - HEADER) as u64;
                    let last = chunk + 1 == e.chunks;
                    let fits = chunk == e.next_chunk
                        && read_u32(value, 12) == e.chunks
                        && read_u64(value, 16) == e.size
                        && offset + len <= e.size
                        && (!last || offset + len == e.size);
                    if !fits {
                        state.mismatches.fetch_add(1, Ordering::Relaxed);
                    }
                    e.next_chunk = chunk + 1;
                    if e.next_chunk == e.chunks {
                        e.delivered = Some(Instant::now());
                        true
                    } else {
                        false
                    }
                }
            }
        };
        if complete {
            let mut reply = vec![0u8; REPLY_SIZE];
            reply[..8].copy_from_slice(&seq.to_le_bytes());
            let key = seq.to_string();
            let meta = RecordMeta {
                message_type: "BENCH_REPLY",
                sender: "bench-destination",
                message_id: &key,
            };
            match replier
                .enqueue(&reply_topic, &key, &reply, &meta, &[])
                .await
            {
                Ok(pending) => {
                    replies.spawn(async move {
                        if let Err(error) = pending.delivered().await {
                            tracing::warn!(%error, "Baseline reply not acknowledged.");
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, "Baseline reply not queued."),
            }
        }
    }
    replies.close();
    replies.wait().await;
}

/// The origin's side of the reply: completes the waiting sender.
async fn consume_replies(
    consumer: Arc<InboxConsumer>,
    state: Arc<State>,
    cancel: CancellationToken,
) {
    loop {
        let record = tokio::select! {
            _ = cancel.cancelled() => break,
            record = consumer.recv() => record,
        };
        let message = match record {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "Baseline reply read failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let now = Instant::now();
        let value = message.payload().unwrap_or_default();
        if value.len() < 8 {
            state.mismatches.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let seq = read_u64(value, 0);
        let mut entries = state.lock();
        match entries.get_mut(&seq) {
            Some(e) if !e.replied => {
                e.replied = true;
                if let Some(waiter) = e.waiter.take() {
                    let _ = waiter.send(now);
                }
            }
            Some(_) => {
                state.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                state.mismatches.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
