//! The audit log's table (see [`crate::audit`]).

use super::Store;
use crate::audit::{Actor, Entry};
use crate::error::{Error, Result};
use rusqlite::{Connection, params};

/// Appends `entry` in the caller's transaction: a call's effect and its
/// line in the log commit together.
pub fn insert(c: &Connection, entry: &Entry) -> Result<()> {
    super::exec(
        c,
        "INSERT INTO audit_log (at_ms, actor, role, address, action, target, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            entry.at_ms,
            entry.actor,
            entry.role,
            entry.address,
            entry.action,
            entry.target,
            entry.outcome
        ],
    )
    .map(drop)
    .map_err(Error::store("cannot write the audit log"))
}

impl Store {
    /// Appends `action` on `target` by `actor`, ending in `outcome`, from
    /// async code. A log that cannot be written is itself logged: the call
    /// it records has already happened.
    pub async fn audit<T, E: std::fmt::Display>(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        outcome: &std::result::Result<T, E>,
    ) {
        let entry = Entry::of(actor, action, target, outcome);
        if let Err(e) = self.run(move |s| s.append_audit(&entry)).await {
            tracing::error!(error = %e, %action, "Cannot write the audit log.");
        }
    }

    /// Appends `entry` (its id is the log's to give).
    pub fn append_audit(&self, entry: &Entry) -> Result<()> {
        self.write(|c| insert(c, entry))
    }

    /// Up to `limit` entries at or after `since_ms` with ids above
    /// `after_id`, oldest first.
    pub fn audit_log(&self, since_ms: i64, after_id: i64, limit: u32) -> Result<Vec<Entry>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, at_ms, actor, role, address, action, target, outcome
                     FROM audit_log WHERE at_ms >= ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                )
                .map_err(Error::store("cannot read the audit log"))?;
            stmt.query_map(params![since_ms, after_id, limit], |r| {
                Ok(Entry {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    actor: r.get(2)?,
                    role: r.get(3)?,
                    address: r.get(4)?,
                    action: r.get(5)?,
                    target: r.get(6)?,
                    outcome: r.get(7)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(Error::store("cannot read the audit log"))
        })
    }
}
