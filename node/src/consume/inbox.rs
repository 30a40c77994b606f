//! The inbox consumer: reads this institution's inbox topic, where peers
//! send it transfers (chunks, then a manifest), receipts for its own
//! transfers, and notices (observed, rejected). Chunks are assembled into
//! partial files ([`super::assemble`]), a manifest whose documents all arrived
//! and hash right becomes an inbound filing whose signed receipt is queued for
//! the origin, and a receipt for one of this institution's transfers marks it
//! DELIVERED ([`super::apply`]).

use super::{Consumers, Feed};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Consumes this institution's inbox.
pub async fn run(cx: Arc<Consumers>, cancel: CancellationToken) {
    super::consume(cx, Feed::Inbox, cancel).await
}
