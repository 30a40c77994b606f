//! The ecointegra institution node and the `ecointegra` command-line tool.
//!
//! # Layout
//! - [`config`]: layered configuration, validated at start-up.
//! - [`node`]: starting and stopping a node and the state its tasks share.
//! - [`store`]: the embedded SQLite store, its writes grouped into shared
//!   commits by [`group_commit`]; [`blobs`]: content-addressed files.
//! - [`submit`] and [`validate`]: accepting a filing at the desk.
//! - [`relay`]: the outbox relay, publishing transfers and receipts.
//! - [`inbox`]: the inbox consumer, assembling, verifying and storing transfers.
//! - [`workflow`]: clerk actions; [`custody`]: the receipt chain;
//!   [`deadlines`]: business-day response periods.
//! - [`tracking`]: the sector timeline and citizen look-ups.
//! - [`service`]: the gRPC server; [`health`]: health checking against Kafka.
//! - [`bench`]: `ecointegra bench`, the transfer measured against raw Kafka.
//! - [`ops`]: `OperationsService`, queues and [`dead_letters`]; [`lag`]: consumer
//!   lag from Kafka; [`metrics`] and [`http`]: Prometheus `/metrics`, `/livez`,
//!   `/readyz`; [`trace`]: `traceparent` across institutions, and the logs.
//! - [`web`]: the web console: citizen tracking, the clerk's desk and the
//!   operator's dashboard, in Spanish and English.
//! - [`cli`]: the command-line tool; [`error`]: errors and their gRPC codes.

pub mod auth;
pub mod bench;
pub mod blobs;
pub mod cli;
mod cli_actions;
mod cli_directory;
mod cli_ops;
pub mod config;
pub mod custody;
pub mod dead_letters;
pub mod deadlines;
pub mod error;
pub mod group_commit;
pub mod health;
pub mod http;
pub mod ids;
pub mod inbox;
pub mod lag;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod otlp;
pub mod relay;
pub mod service;
pub mod store;
pub mod submit;
pub mod trace;
pub mod tracking;
pub mod validate;
pub mod web;
pub mod workflow;

pub use config::Config;
pub use error::Error;
pub use node::Node;
