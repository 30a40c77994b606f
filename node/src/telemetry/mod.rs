//! What operators see of a node: counters and gauges ([`metrics`]), traces
//! across institutions ([`trace`], exported by [`otlp`]), consumer lag from
//! Kafka ([`lag`]), gRPC health against Kafka ([`health`]) and the HTTP
//! endpoints `/metrics`, `/livez` and `/readyz` ([`http`]).
//!
//! May use: store and the leaves (trust, kafka, config, error, ids).

pub mod health;
pub mod http;
pub mod lag;
pub mod metrics;
pub mod otlp;
pub mod queues;
pub mod trace;

use crate::config::Config;
use crate::kafka::Kafka;
use crate::store::Store;
use crate::trust::Trust;
use metrics::Metrics;
use std::sync::Arc;

/// What the operator-facing parts read: the node's counters, its store and
/// its view of Kafka and of the sector.
pub struct Watch {
    pub config: Arc<Config>,
    pub store: Store,
    pub trust: Arc<Trust>,
    pub kafka: Arc<Kafka>,
    pub metrics: Arc<Metrics>,
}
