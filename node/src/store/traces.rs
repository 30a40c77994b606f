//! Trace contexts kept under record keys, so what a node sends later for a
//! transfer continues the trace that brought it.

use super::{Store, row};
use crate::error::{Error, Result};
use rusqlite::{Connection, OptionalExtension, params};

/// Keeps a `traceparent` under a record key (first one wins), in the
/// caller's transaction.
pub fn keep(c: &Connection, key: &str, traceparent: &str) -> Result<()> {
    super::exec(
        c,
        "INSERT OR IGNORE INTO trace_contexts (record_key, traceparent, created_at_ms) VALUES (?1, ?2, ?3)",
        params![key, traceparent, ecointegra_broker::now_ms()],
    )
    .map(drop)
    .map_err(Error::store("cannot keep a trace context"))
}

impl Store {
    /// The `traceparent` kept under a record key.
    pub fn trace_of(&self, key: &str) -> Result<Option<String>> {
        self.read(|c| {
            row(
                c,
                "SELECT traceparent FROM trace_contexts WHERE record_key = ?1",
                [key],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(Error::store("cannot read trace contexts"))
        })
    }
}
