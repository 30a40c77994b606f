//! The messaging layer of ecointegra over Apache Kafka.
//!
//! # Layout
//! - [`admin`]: ACLs, SCRAM users and topic settings through librdkafka's own
//!   admin API (the crate's only `unsafe` code).
//! - [`envelope`]: sealing payloads into signed envelopes and opening them again.
//! - [`keys`]: an institution's Ed25519 signing key and its key file.
//! - [`directory`]: the institutions of the sector and their public keys.
//! - [`topics`]: topic names and their creation.
//! - [`kafka`]: client configuration, the idempotent publisher and the inbox consumer.
//! - [`dlq`]: dead letters for records that cannot be accepted.
//! - [`sector`]: the sector operator's provisioning of topics, users and ACLs.
//!
//! This crate knows nothing of gRPC or of the node's storage engine.

pub mod admin;
pub mod crypto;
pub mod directory;
pub mod dlq;
pub mod envelope;
mod error;
pub mod kafka;
pub mod keys;
pub mod sector;
pub mod topics;

pub use error::Error;

/// Milliseconds since the Unix epoch, as every timestamp on the wire.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Lowercase hex of a SHA-256 digest.
pub fn sha256_hex(digest: &[u8]) -> String {
    hex::encode(digest)
}
