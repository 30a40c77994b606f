//! Consumed records: stored positions, processed message ids, partial documents, and the effects of transfers, receipts and notices.

use super::*;

impl Store {
    /// The next offset to read per partition of `topic`, as the store has it.
    pub fn inbox_positions(&self, topic: &str) -> Result<Vec<(i32, i64)>> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT partition, next_offset FROM inbox_offsets WHERE topic = ?1")
                .map_err(Error::store("cannot read offsets"))?;
            let rows = stmt
                .query_map([topic], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(Error::store("cannot read offsets"))?;
            Ok(rows)
        })
    }

    pub fn is_processed(&self, message_id: &str) -> Result<bool> {
        self.read(|c| is_processed(c, message_id))
    }

    pub fn partial(&self, sender: &str, transfer_id: &str, index: u32) -> Result<Option<Partial>> {
        self.read(|c| partial(c, sender, transfer_id, index))
    }

    /// A record with no effect of its own (duplicate, or dead-lettered).
    pub fn apply_nothing(
        &self,
        c: &Connection,
        position: Position<'_>,
        message_id: Option<&str>,
    ) -> Result<()> {
        self.apply(c, position, message_id, |_| Ok(())).map(drop)
    }

    /// A chunk was written to its partial file (made durable before `c` commits).
    pub fn apply_chunk(
        &self,
        c: &Connection,
        position: Position<'_>,
        message_id: &str,
        transfer_id: &str,
        index: u32,
        partial: &Partial,
    ) -> Result<()> {
        self.apply(c, position, Some(message_id), |tx| {
            exec(
                tx,
                "INSERT INTO partials (transfer_id, idx, sender, next_seq, bytes, touched_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (sender, transfer_id, idx) DO UPDATE SET next_seq = excluded.next_seq,
                     bytes = excluded.bytes, touched_at_ms = excluded.touched_at_ms",
                params![
                    transfer_id,
                    index,
                    partial.sender,
                    partial.next_seq,
                    partial.bytes,
                    ecointegra_broker::now_ms()
                ],
            )
            .map(drop)
            .map_err(Error::store("cannot record a chunk"))
        })
        .map(drop)
    }

    /// The transfers (sender, transfer id, document indexes) whose partial
    /// documents last took a chunk before `before_ms`.
    pub fn stale_partials(&self, before_ms: i64) -> Result<Vec<(String, String, Vec<u32>)>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT sender, transfer_id, group_concat(idx) FROM partials
                     GROUP BY sender, transfer_id HAVING max(touched_at_ms) < ?1",
                )
                .map_err(Error::store("cannot read partial documents"))?;
            stmt.query_map([before_ms], |r| {
                let indexes: String = r.get(2)?;
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    indexes.split(',').filter_map(|i| i.parse().ok()).collect(),
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(Error::store("cannot read partial documents"))
        })
    }

    /// Forgets `sender`'s partial documents of a transfer and that their
    /// chunks were applied, so the transfer can be sent again from scratch.
    pub fn discard_partials(&self, sender: &str, transfer_id: &str) -> Result<()> {
        let chunks = format!("{sender} {transfer_id}/chunk/");
        self.write(|tx| {
            exec(
                tx,
                "DELETE FROM partials WHERE sender = ?1 AND transfer_id = ?2",
                [sender, transfer_id],
            )
            .and_then(|_| {
                exec(
                    tx,
                    "DELETE FROM processed_messages WHERE substr(message_id, 1, length(?1)) = ?1",
                    [chunks.as_str()],
                )
            })
            .map(drop)
            .map_err(Error::store("cannot discard partial documents"))
        })
    }

    /// A verified transfer becomes an inbound filing, with its receipt queued
    /// for the sender and its DELIVERED step for the sector, in one
    /// transaction. Returns the new filing's id.
    pub fn apply_delivery(
        &self,
        c: &Connection,
        position: Position<'_>,
        message_id: &str,
        delivery: &Delivery,
    ) -> Result<Option<i64>> {
        let mut inserted = None;
        self.apply(c, position, Some(message_id), |tx| {
            let filing = &delivery.filing;
            let (filing_id, registry_number) = insert_filing(tx, &self.institution, self.utc_offset_minutes, filing)?;
            for prior in &delivery.prior_receipts {
                insert_receipt(tx, prior)?;
            }
            let receipt = (delivery.receipt)(&registry_number);
            insert_receipt(tx, &receipt)?;
            queue_envelope(tx, &delivery.reply_topic, &filing.origin, &filing.transfer_id, &receipt.envelope)?;
            exec(tx, "DELETE FROM partials WHERE sender = ?1 AND transfer_id = ?2", [&filing.origin, &filing.transfer_id])
                .map_err(Error::store("cannot discard partial documents"))?;
            if filing.kind == TransferKind::Answer {
                // The answer reached the institution where the citizen filed.
                exec(tx,
                    "UPDATE filings SET status = ?3, note = ?4 WHERE id = (SELECT id FROM filings
                     WHERE timeline = (SELECT id FROM timelines WHERE tracking_code = ?1) AND direction = ?2 AND kind != ?5 ORDER BY id DESC LIMIT 1)",
                    params![
                        filing.tracking_code,
                        Direction::Outbound as i64,
                        FilingStatus::Answered as i64,
                        filing.note,
                        TransferKind::Answer as i64
                    ],
                )
                .map_err(Error::store("cannot update the answered filing"))?;
            }
            self.emit(
                tx,
                Step {
                    tracking_code: &filing.tracking_code,
                    key: format!("{}/DELIVERED", filing.transfer_id),
                    status: FilingStatus::Delivered,
                    hop: filing.hop,
                    actor_role: "node",
                    actor: "",
                    holder: &self.institution,
                    verifier: Vec::new(),
                    due_date: &filing.due_date,
                    kind: filing.kind,
                    counterpart: &filing.origin,
                    after_seq: delivery.after_seq,
                    cuo: "",
                },
            )?;
            self.queue_sgd(
                tx,
                (&filing.tracking_code, &filing.transfer_id),
                FilingStatus::Delivered,
                &filing.origin,
            )?;
            inserted = Some(filing_id);
            Ok(())
        })?;
        Ok(inserted)
    }

    /// What the destination did with one of our transfers (observed,
    /// rejected; received, for a filing our SGD handed in):
    /// `(status, reason, by whom)`, the destination's cargo if it sent one,
    /// and the clock `(tracking code, seq)`.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_notice(
        &self,
        c: &Connection,
        position: Position<'_>,
        message_id: &str,
        (filing_id, transfer_id): (i64, &str),
        (status, reason, by): (FilingStatus, &str, &str),
        cargo: Option<&ecointegra_proto::v1::SgdCargo>,
        tracking: (&str, u64),
    ) -> Result<()> {
        self.apply(c, position, Some(message_id), |tx| {
            exec(
                tx,
                "UPDATE filings SET status = ?2, note = ?3 WHERE id = ?1",
                params![filing_id, status as i64, reason],
            )
            .map_err(Error::store("cannot update the filing"))?;
            if status != FilingStatus::Received {
                self.queue_notice_mail(tx, message_id, tracking.0, (status, reason), by)?;
            }
            if let Some(cargo) = cargo {
                super::sgd::store_cargo(tx, transfer_id, cargo)?;
                self.queue_sgd(tx, (tracking.0, transfer_id), status, by)?;
            }
            advance_clock(tx, tracking.0, tracking.1)
        })
        .map(drop)
    }
}

pub(crate) fn is_processed(c: &Connection, message_id: &str) -> Result<bool> {
    c.prepare_cached("SELECT 1 FROM processed_messages WHERE message_id = ?1")
        .and_then(|mut s| s.query_row([message_id], |_| Ok(())).optional())
        .map(|r| r.is_some())
        .map_err(Error::store("cannot read processed messages"))
}

pub(crate) fn partial(
    c: &Connection,
    sender: &str,
    transfer_id: &str,
    index: u32,
) -> Result<Option<Partial>> {
    c.prepare_cached(
        "SELECT sender, next_seq, bytes FROM partials WHERE sender = ?1 AND transfer_id = ?2 AND idx = ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![sender, transfer_id, index], |r| {
            Ok(Partial {
                sender: r.get(0)?,
                next_seq: r.get(1)?,
                bytes: r.get(2)?,
            })
        })
        .optional()
    })
    .map_err(Error::store("cannot read partial documents"))
}
