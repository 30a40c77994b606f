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
    pub stalls: Arc<Stalls>,
}

/// Consumers held at a record they cannot get past yet (a local fault, or
/// Kafka not taking a dead letter), by topic, with why and since when. A
/// node with a stalled consumer is not ready.
#[derive(Default)]
pub struct Stalls(std::sync::Mutex<std::collections::BTreeMap<String, Stall>>);

#[derive(Debug, Clone)]
pub struct Stall {
    pub reason: String,
    pub since_ms: i64,
}

impl Stalls {
    /// The consumer of `topic` is stalled, for `reason` (kept since the
    /// stall began).
    pub fn set(&self, topic: &str, reason: String) {
        let mut stalls = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let since_ms = stalls
            .get(topic)
            .map_or_else(ecointegra_broker::now_ms, |s| s.since_ms);
        stalls.insert(topic.to_owned(), Stall { reason, since_ms });
    }

    /// The consumer of `topic` moved on.
    pub fn clear(&self, topic: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(topic);
    }

    /// Every stalled consumer's topic and stall.
    pub fn current(&self) -> Vec<(String, Stall)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(t, s)| (t.clone(), s.clone()))
            .collect()
    }
}
