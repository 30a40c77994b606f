//! The ecointegra institution node.
//!
//! # Layout
//! The code follows the data: a filing accepted at the desk ([`submit`]) is
//! written with its outbox row to the store; the [`relay`] publishes it to
//! Kafka; the destination's consumers ([`consume`]) open, verify, assemble and
//! apply what arrives, writing it to its [`store`], which queues the signed
//! receipt that the destination's relay sends back:
//!
//! ```text
//! submit → store (outbox) → relay → Kafka → consume → store → relay → receipt
//! ```
//!
//! Around the path: [`lifecycle`] (clerk actions, deadlines, custody, the
//! sector timeline), the interfaces [`grpc`] and [`web`], [`telemetry`]
//! (metrics, traces, lag, health, the HTTP endpoints), and [`app`], which
//! starts and stops a node and hands each part the narrow handles it needs.
//! At the bottom are the leaves: [`config`] (the config tree and its
//! validation), [`trust`] (the signed directory in force and this
//! institution's keys), [`kafka`] (the producer and topic names),
//! [`verification`] (citizens' verification codes and their Argon2id
//! verifiers), [`error`], [`ids`] and [`retry`] (the backoff of every retry
//! loop).
//!
//! [`pide`] speaks PIDE's `IOTramite` SOAP contract with the institution's
//! document-management system, and [`notify`] sends what the node tells
//! outside (mail, webhooks, deliveries to that system) through [`outcall`].
//!
//! No module imports one above it in this order (the test `layers` below
//! checks it): app; web, notify; grpc, pide; submit; relay; consume;
//! lifecycle; telemetry; store; trust, kafka; verification, error; ids,
//! config, retry; clients, outcall.
//!
//! The command-line tool lives behind the binary (`src/cli`), and the
//! benchmark in its own crate (`tests/bench`).

pub mod app;
pub mod audit;
pub mod clients;
pub mod config;
pub mod consume;
pub mod error;
pub mod evidence;
pub mod grpc;
pub mod ids;
pub mod kafka;
pub mod lifecycle;
pub mod malloc;
pub mod notify;
pub mod outcall;
pub mod pide;
pub mod relay;
pub mod retry;
pub mod store;
pub mod submit;
pub mod telemetry;
pub mod trust;
pub mod verification;
pub mod web;

pub use app::Node;
pub use config::Config;
pub use error::Error;

#[cfg(test)]
mod layers;
