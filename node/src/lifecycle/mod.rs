//! A filing's life after intake: clerk actions and the state machine that
//! allows them ([`workflow`]), business-day response periods ([`deadlines`]),
//! the chain of signed receipts ([`custody`]) and the sector timeline a
//! citizen follows ([`tracking`]), and the rules a filing's header and
//! documents must meet wherever it comes from ([`validate`]).
//!
//! May use: telemetry, store and the leaves (trust, kafka, config, error, ids).

pub mod custody;
pub mod deadlines;
pub mod registration;
pub mod tracking;
pub mod validate;
pub mod workflow;

use crate::config::Config;
use crate::store::Store;
use crate::store::blobs::Blobs;
use crate::telemetry::metrics::Metrics;
use crate::trust::Trust;
use std::sync::Arc;
use tokio::sync::Notify;

/// What the desk (intake, clerk actions, citizen look-ups) works with.
#[derive(Clone)]
pub struct Desk {
    pub config: Arc<Config>,
    pub store: Store,
    pub blobs: Blobs,
    pub trust: Arc<Trust>,
    /// The sector's topics, and the producer that large uploads publish
    /// their chunks with as they arrive.
    pub kafka: Arc<crate::kafka::Kafka>,
    /// Wakes the outbox relay when something was queued.
    pub relay_wake: Arc<Notify>,
    /// Counts submissions.
    pub metrics: Arc<Metrics>,
    /// Failed tracking look-ups per client.
    pub limiter: Arc<tracking::Limiter>,
    /// Stores accepted submissions.
    pub registrations: Arc<registration::Registrations>,
}

impl Desk {
    /// This institution's id.
    pub fn institution(&self) -> &str {
        self.trust.institution()
    }
}
