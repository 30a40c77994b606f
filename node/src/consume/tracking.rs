//! The tracking consumer: reads the sector's tracking topic (signed status
//! events of every filing, from every institution) into the local timeline,
//! so this node's portal shows any filing's steps.

use super::{Consumers, Feed};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Consumes the sector's tracking topic into the local timeline.
pub async fn run(cx: Arc<Consumers>, cancel: CancellationToken) {
    super::consume(cx, Feed::Tracking, cancel).await
}
