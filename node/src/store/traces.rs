//! Trace contexts kept under record keys, so what a node sends later for a
//! transfer continues the trace that brought it: under a transfer id here,
//! under a tracking code in its timeline's row ([`keep_for_steps`]).

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

/// Keeps the `traceparent` a filing's tracking steps continue (first one
/// wins), in the caller's transaction.
pub fn keep_for_steps(c: &Connection, tracking_code: &str, traceparent: &str) -> Result<()> {
    super::exec(
        c,
        "INSERT INTO timelines (tracking_code, seq, traceparent) VALUES (?1, 0, ?2)
         ON CONFLICT (tracking_code) DO UPDATE SET traceparent = excluded.traceparent
         WHERE traceparent = ''",
        params![tracking_code, traceparent],
    )
    .map(drop)
    .map_err(Error::store("cannot keep a trace context"))
}

impl Store {
    /// The `traceparent` kept under a record key (a transfer id, or a
    /// tracking code for its filing's steps).
    pub fn trace_of(&self, key: &str) -> Result<Option<String>> {
        self.read(|c| {
            row(
                c,
                "SELECT traceparent FROM trace_contexts WHERE record_key = ?1
                 UNION ALL
                 SELECT traceparent FROM timelines WHERE tracking_code = ?1 AND traceparent <> ''
                 LIMIT 1",
                [key],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(Error::store("cannot read trace contexts"))
        })
    }
}
