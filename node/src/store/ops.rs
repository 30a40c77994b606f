//! Reads for the operators' queue report: the outbox and recent deliveries.

use super::{OutboxKind, Store, row};
use crate::error::{Error, Result};
use ecointegra_proto::v1::Direction;
use rusqlite::params;

/// One outbox entry as the queue report needs it.
pub struct OutboxEntry {
    pub recipient: String,
    pub transfer: bool,
    pub attempts: u32,
    pub tracking_code: String,
    pub transfer_id: String,
    pub registered_at_ms: i64,
    /// Full sends of a transfer since it was queued or last re-sent by hand.
    pub full_sends: u32,
    /// When the relay stopped re-sending a transfer by itself (0: it has not).
    pub gave_up_at_ms: i64,
}

impl Store {
    /// Every outbox entry, oldest first, as the queue report needs it.
    pub fn outbox_entries(&self) -> Result<Vec<OutboxEntry>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT o.recipient, o.kind, o.attempts, COALESCE(f.tracking_code, ''),
                        COALESCE(f.transfer_id, o.record_key), COALESCE(f.registered_at_ms, 0),
                        o.full_sends, o.gave_up_at_ms
                 FROM outbox o LEFT JOIN filings f ON f.id = o.filing_id ORDER BY o.id",
                )
                .map_err(Error::store("cannot read the outbox"))?;
            stmt.query_map([], |r| {
                Ok(OutboxEntry {
                    recipient: r.get(0)?,
                    transfer: r.get::<_, i64>(1)? == OutboxKind::Transfer as i64,
                    attempts: r.get(2)?,
                    tracking_code: r.get(3)?,
                    transfer_id: r.get(4)?,
                    registered_at_ms: r.get(5)?,
                    full_sends: r.get(6)?,
                    gave_up_at_ms: r.get(7)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(Error::store("cannot read the outbox"))
        })
    }

    /// (last delivery, deliveries in the last minute) of filings in `direction`,
    /// optionally to one destination.
    pub fn deliveries(
        &self,
        direction: Direction,
        destination: Option<&str>,
        now: i64,
    ) -> Result<(i64, i64)> {
        self.read(|c| {
        row(c,
            "SELECT COALESCE(MAX(delivered_at_ms), 0), COALESCE(SUM(delivered_at_ms >= ?3), 0)
             FROM filings WHERE direction = ?1 AND delivered_at_ms > 0 AND (?2 = '' OR destination = ?2)",
            params![direction as i64, destination.unwrap_or(""), now - 60_000],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(Error::store("cannot read deliveries"))
    })
    }
}
