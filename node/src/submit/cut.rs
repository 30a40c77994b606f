//! Cut-through: a large document's chunks sealed and published while it is
//! still being uploaded, so that its transfer does not wait for the upload
//! to end (a 1 GiB filing took the upload's time and then the transfer's).
//!
//! Nothing is promised before the filing is durable: the chunks travel
//! ahead, encrypted for the destination, which keeps them as partial
//! documents until the manifest comes; the relay publishes the manifest only
//! once the filing committed. The submission lists the documents all of
//! whose chunks Kafka acknowledged, and the relay's first send leaves those
//! out. If Kafka is slow or down, publishing stops and the upload goes on at
//! disk speed: the relay sends those documents whole, as it always did. An
//! upload abandoned half-way leaves chunks without a manifest, which the
//! destination forgets after `transfer.partial_expiry_hours`.

use crate::error::Error;
use crate::kafka::Kafka;
use crate::lifecycle::Desk;
use crate::relay::{InOrder, Route, enqueue};
use crate::store::ChunksOut;
use crate::telemetry::metrics::Metrics;
use crate::trust::Trust;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long the publisher waits for Kafka to take a chunk, or to
/// acknowledge the oldest one in its window, before it stops publishing.
const PATIENCE: Duration = Duration::from_secs(2);
/// Chunks awaiting acknowledgement at once: bounds memory.
const WINDOW: usize = 8;
/// Chunks handed from the upload to its publisher and not yet sealed.
const HANDED: usize = 4;

/// What the upload hands its publisher.
enum Piece {
    /// Chunk `seq` of document `index`: `data`, found at `offset`.
    Chunk {
        index: u32,
        seq: u32,
        offset: u64,
        data: Vec<u8>,
    },
    /// Document `index` ended: every chunk of it was handed over.
    Sent(u32),
}

/// A filing's chunks going out while its documents arrive: the upload hands
/// each chunk to a task of its own, which seals and publishes it while the
/// upload goes on hashing and writing the next.
pub(crate) struct CutThrough {
    pub(super) chunk_size: usize,
    pieces: mpsc::Sender<Piece>,
    publisher: JoinHandle<Vec<u32>>,
    /// False once Kafka did not take a chunk in time: nothing more goes out,
    /// and no document counts as out.
    on: Arc<AtomicBool>,
}

impl CutThrough {
    /// Publishes the chunks of transfer `transfer_id` to `destination`, if
    /// Kafka is up and the destination can be sent to now; otherwise the
    /// relay does it all later (and says why it waits).
    pub(crate) fn start(
        desk: &Desk,
        transfer_id: &str,
        destination: &str,
        traceparent: String,
    ) -> Option<Self> {
        if !*desk.kafka.up.borrow() {
            return None;
        }
        let route = Route::to(&desk.trust, &desk.kafka, destination).ok()?;
        let on = Arc::new(AtomicBool::new(true));
        let publisher = Publisher {
            kafka: desk.kafka.clone(),
            metrics: desk.metrics.clone(),
            trust: desk.trust.clone(),
            route,
            transfer_id: transfer_id.to_owned(),
            traceparent,
            pending: InOrder::new(WINDOW),
            on: on.clone(),
            sent: Vec::new(),
        };
        let (pieces, handed) = mpsc::channel(HANDED);
        Some(Self {
            chunk_size: desk.config.transfer.chunk_size as usize,
            pieces,
            publisher: tokio::spawn(publisher.run(handed)),
            on,
        })
    }

    /// Whether chunks still go out.
    pub(super) fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Hands chunk `seq` of document `index`, `data` found at `offset`, to
    /// the publisher (waiting while it is [`HANDED`] chunks behind).
    pub(super) async fn publish(&mut self, index: u32, seq: u32, offset: u64, data: Vec<u8>) {
        if self.on() {
            let chunk = Piece::Chunk {
                index,
                seq,
                offset,
                data,
            };
            let _ = self.pieces.send(chunk).await;
        }
    }

    /// Document `index` ended, every chunk of it handed over.
    pub(super) async fn document_sent(&mut self, index: u32) {
        if self.on() {
            let _ = self.pieces.send(Piece::Sent(index)).await;
        }
    }

    /// Waits for every acknowledgement; returns the documents all of whose
    /// chunks Kafka acknowledged (none if any chunk failed), and the size
    /// they were cut at.
    pub(crate) async fn finish(self) -> ChunksOut {
        drop(self.pieces);
        ChunksOut {
            chunk_size: self.chunk_size as u32,
            documents: self.publisher.await.unwrap_or_default(),
        }
    }
}

/// Seals and publishes what the upload hands over.
struct Publisher {
    kafka: Arc<Kafka>,
    metrics: Arc<Metrics>,
    trust: Arc<Trust>,
    route: Route,
    transfer_id: String,
    traceparent: String,
    /// Chunks handed to Kafka, acknowledged in order.
    pending: InOrder,
    on: Arc<AtomicBool>,
    /// Documents all of whose chunks were handed to Kafka.
    sent: Vec<u32>,
}

impl Publisher {
    async fn run(mut self, mut handed: mpsc::Receiver<Piece>) -> Vec<u32> {
        while let Some(piece) = handed.recv().await {
            if !self.on.load(Ordering::Relaxed) {
                continue;
            }
            match piece {
                Piece::Chunk {
                    index,
                    seq,
                    offset,
                    data,
                } => self.publish(index, seq, offset, data).await,
                Piece::Sent(index) => self.sent.push(index),
            }
        }
        while self.on.load(Ordering::Relaxed) && self.wait_oldest().await {}
        if self.on.load(Ordering::Relaxed) {
            self.sent
        } else {
            Vec::new()
        }
    }

    /// Seals a chunk and hands it to Kafka; waits for the oldest chunk once
    /// the window is full.
    async fn publish(&mut self, index: u32, seq: u32, offset: u64, data: Vec<u8>) {
        let queued =
            match self
                .route
                .chunk(&self.trust, &self.transfer_id, index, seq, offset, data)
            {
                Ok(envelope) => {
                    let enqueued = enqueue(
                        &self.kafka,
                        &self.metrics,
                        &self.route,
                        &self.transfer_id,
                        &envelope,
                        &self.traceparent,
                    );
                    tokio::time::timeout(PATIENCE, enqueued)
                        .await
                        .unwrap_or_else(|_| Err(too_slow("take")))
                }
                Err(error) => Err(error),
            };
        let error = match queued {
            // Waits for the oldest chunk once the window is full.
            Ok(pending) => match tokio::time::timeout(PATIENCE, self.pending.push(pending)).await {
                Ok(Ok(())) => return,
                Ok(Err(error)) => error,
                Err(_) => too_slow("acknowledge"),
            },
            Err(error) => error,
        };
        self.stop(error);
    }

    /// Waits for the oldest chunk queued; false once none is left or the
    /// chunks stopped going out.
    async fn wait_oldest(&mut self) -> bool {
        let error = match tokio::time::timeout(PATIENCE, self.pending.oldest()).await {
            Ok(None) => return false,
            Ok(Some(Ok(()))) => return true,
            Ok(Some(Err(error))) => error,
            Err(_) => too_slow("acknowledge"),
        };
        self.stop(error);
        false
    }

    fn stop(&mut self, error: Error) {
        if self.on.swap(false, Ordering::Relaxed) {
            tracing::info!(
                %error,
                transfer_id = %self.transfer_id,
                "Chunks stop going out during the upload; the relay will send them."
            );
        }
        self.pending.clear();
    }
}

fn too_slow(what: &str) -> Error {
    Error::FailedPrecondition(format!(
        "Kafka did not {what} a chunk within {} s",
        PATIENCE.as_secs()
    ))
}
