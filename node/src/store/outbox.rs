//! The transactional outbox: what the relay must still publish.

use super::*;

/// The entries due at `?1`, at most `?2`, soonest first (by the index
/// `outbox_due`, not a scan of the outbox).
pub(super) const DUE: &str =
    "SELECT id, kind, filing_id, recipient, record_key, envelope, attempts, topic,
        full_sends, probed, chunks_out, chunks_out_size FROM outbox
     WHERE next_attempt_at_ms <= ?1 ORDER BY next_attempt_at_ms, id LIMIT ?2";

impl Store {
    /// Outbox entries due at `now_ms`, at most `limit`, leaving out those `skip`
    /// names (already being published) before their envelopes are read.
    pub fn due_outbox(
        &self,
        now_ms: i64,
        limit: u32,
        skip: impl Fn(i64, OutboxKind) -> bool,
    ) -> Result<Vec<OutboxRow>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(DUE)
                .map_err(Error::store("cannot read the outbox"))?;
            let mut rows = stmt
                .query(params![now_ms, limit])
                .map_err(Error::store("cannot read the outbox"))?;
            let mut due = Vec::new();
            while let Some(r) = rows
                .next()
                .map_err(Error::store("cannot read the outbox"))?
            {
                let row = || -> rusqlite::Result<Option<OutboxRow>> {
                    let id = r.get(0)?;
                    let kind = if r.get::<_, i64>(1)? == OutboxKind::Transfer as i64 {
                        OutboxKind::Transfer
                    } else {
                        OutboxKind::Envelope
                    };
                    if skip(id, kind) {
                        return Ok(None);
                    }
                    Ok(Some(OutboxRow {
                        id,
                        kind,
                        filing_id: r.get(2)?,
                        recipient: r.get(3)?,
                        record_key: r.get(4)?,
                        envelope: r.get(5)?,
                        attempts: r.get(6)?,
                        topic: r.get(7)?,
                        full_sends: r.get(8)?,
                        probed: r.get(9)?,
                        chunks_out: ChunksOut {
                            documents: parse_indexes(&r.get::<_, String>(10)?),
                            chunk_size: r.get(11)?,
                        },
                    }))
                };
                if let Some(row) = row().map_err(Error::store("cannot read the outbox"))? {
                    due.push(row);
                }
            }
            Ok(due)
        })
    }

    /// Records what became of transfers and envelopes the relay published
    /// (or gave up on), all in one write: one answer each, in their order.
    /// Each is recorded or not by itself; if the write's commit fails, none
    /// is.
    pub fn record_publications(&self, publications: Vec<Publication>) -> Vec<Result<()>> {
        self.write_each(publications, "record a publication", |tx, publication| {
            self.record_publication(tx, &publication)
        })
    }

    fn record_publication(&self, tx: &Connection, publication: &Publication) -> Result<()> {
        match publication {
            Publication::Published {
                row,
                probe,
                tracking_seq,
                next_attempt_at_ms,
            } => self.transfer_published(tx, row, *probe, *tracking_seq, *next_attempt_at_ms),
            Publication::Failed {
                row,
                manifest_seq,
                next_attempt_at_ms,
            } => self.transfer_failed(tx, row, *manifest_seq, *next_attempt_at_ms),
            Publication::GaveUp { id, now_ms } => exec(
                tx,
                "UPDATE outbox SET gave_up_at_ms = ?2, next_attempt_at_ms = ?3 WHERE id = ?1",
                params![id, now_ms, i64::MAX],
            )
            .map(drop)
            .map_err(Error::store("cannot update the outbox")),
            Publication::Envelopes { published, retries } => {
                for id in published {
                    exec(tx, "DELETE FROM outbox WHERE id = ?1", [id])
                        .map_err(Error::store("cannot update the outbox"))?;
                }
                for (id, retry_at_ms) in retries {
                    exec(
                        tx,
                        "UPDATE outbox SET next_attempt_at_ms = ?2 WHERE id = ?1",
                        params![id, retry_at_ms],
                    )
                    .map_err(Error::store("cannot update the outbox"))?;
                }
                Ok(())
            }
        }
    }

    /// A transfer went out, whole or (`probe`) as its manifest alone: wait
    /// for its receipt until `next_attempt_at_ms`. Its first publication is
    /// the filing's SENT step, numbered right after `tracking_seq`, the step
    /// its manifest carried (the destination's DELIVERED counts on it), even
    /// when the receipt came back before Kafka's acknowledgement did.
    fn transfer_published(
        &self,
        tx: &Connection,
        row: &OutboxRow,
        probe: bool,
        tracking_seq: u64,
        next_attempt_at_ms: i64,
    ) -> Result<()> {
        exec(
            tx,
            "UPDATE outbox SET attempts = attempts + 1, full_sends = full_sends + ?3,
                probed = ?4, next_attempt_at_ms = ?2, chunks_out = '', chunks_out_size = 0
                WHERE id = ?1",
            params![row.id, next_attempt_at_ms, !probe as i64, probe],
        )
        .map_err(Error::store("cannot update the outbox"))?;
        if let Some(filing_id) = row.filing_id {
            let first = row.attempts == 0 && !probe;
            exec(
                tx,
                "UPDATE filings SET status = ?2 WHERE id = ?1 AND status = ?3",
                params![
                    filing_id,
                    FilingStatus::Sent as i64,
                    FilingStatus::Registered as i64
                ],
            )
            .map_err(Error::store("cannot update the filing"))?;
            if first {
                sent_step(self, tx, filing_id, tracking_seq)?;
            }
        }
        Ok(())
    }

    /// A transfer's publication failed (Kafka did not acknowledge it): retry
    /// at `next_attempt_at_ms`. If its first manifest went out carrying
    /// timeline step `manifest_seq`, remember it: the records may have
    /// arrived all the same, and then the receipt brings the SENT step. If the
    /// receipt already came (the entry is gone), that step is taken now.
    fn transfer_failed(
        &self,
        tx: &Connection,
        row: &OutboxRow,
        manifest_seq: Option<u64>,
        next_attempt_at_ms: i64,
    ) -> Result<()> {
        let first = row.attempts == 0;
        let seq = manifest_seq.filter(|_| first).unwrap_or(0) as i64;
        let kept = exec(
            tx,
            "UPDATE outbox SET next_attempt_at_ms = ?2,
                manifest_seq = CASE WHEN manifest_seq = 0 THEN ?3 ELSE manifest_seq END
             WHERE id = ?1",
            params![row.id, next_attempt_at_ms, seq],
        )
        .map_err(Error::store("cannot update the outbox"))?;
        if kept == 0
            && seq > 0
            && let Some(filing_id) = row.filing_id
        {
            sent_step(self, tx, filing_id, seq as u64)?;
        }
        Ok(())
    }

    /// An operator re-sends a transfer still awaiting its receipt: whole,
    /// now, with a fresh round of automatic re-sends after it. Returns the
    /// filing's tracking code and destination.
    pub fn resend_transfer(&self, transfer_id: &str) -> Result<(String, String)> {
        let transfer_id = transfer_id.to_owned();
        self.write(move |tx| {
            let filing = query_filings(
                tx,
                "transfer_id = ?1 AND direction = ?2",
                params![transfer_id, Direction::Outbound as i64],
            )?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::NotFound(format!("no transfer {transfer_id} was sent from here"))
            })?;
            let changed = exec(
                tx,
                "UPDATE outbox SET full_sends = 0, probed = 0, gave_up_at_ms = 0,
                    next_attempt_at_ms = 0, chunks_out = '', chunks_out_size = 0
                    WHERE kind = ?1 AND filing_id = ?2",
                params![OutboxKind::Transfer as i64, filing.id],
            )
            .map_err(Error::store("cannot update the outbox"))?;
            if changed == 0 {
                return Err(Error::FailedPrecondition(format!(
                    "transfer {transfer_id} is not awaiting a receipt: {} has receipted it",
                    filing.destination
                )));
            }
            Ok((filing.tracking_code.clone(), filing.destination.clone()))
        })
    }
}

/// What became of what the relay published.
pub enum Publication {
    /// Kafka acknowledged it, whole or (`probe`) its manifest alone: its
    /// receipt is awaited until `next_attempt_at_ms`.
    Published {
        row: OutboxRow,
        probe: bool,
        tracking_seq: u64,
        next_attempt_at_ms: i64,
    },
    /// Kafka did not: it goes again at `next_attempt_at_ms`.
    Failed {
        row: OutboxRow,
        manifest_seq: Option<u64>,
        next_attempt_at_ms: i64,
    },
    /// No receipt came after every send the relay makes by itself: the
    /// transfer waits for an operator ([`Store::resend_transfer`]) or for a
    /// late receipt.
    GaveUp { id: i64, now_ms: i64 },
    /// A batch of envelopes: those `published` leave the outbox, those
    /// that failed go again at the time beside each.
    Envelopes {
        published: Vec<i64>,
        retries: Vec<(i64, i64)>,
    },
}

/// Queues one sealed envelope for `topic`, keyed by `key`.
pub(crate) fn queue_envelope(
    tx: &Connection,
    topic: &str,
    recipient: &str,
    key: &str,
    envelope: &[u8],
) -> Result<()> {
    exec(tx,
        "INSERT INTO outbox (kind, recipient, topic, record_key, envelope) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![OutboxKind::Envelope as i64, recipient, topic, key, envelope],
    )
    .map(drop)
    .map_err(Error::store("cannot queue an envelope"))
}

/// The SENT step of the outbound filing `filing_id`, numbered right after
/// `manifest_seq`, the timeline step its manifest carried (the destination's
/// DELIVERED step counts on it). Taken once, whichever of Kafka's
/// acknowledgement and the receipt comes first; not for an answer, whose
/// steps the answering institution's ANSWERED already tells.
pub(crate) fn sent_step(
    store: &Store,
    tx: &Connection,
    filing_id: i64,
    manifest_seq: u64,
) -> Result<()> {
    let Some(f) = query_filings(tx, "id = ?1", [filing_id])?
        .into_iter()
        .next()
    else {
        return Ok(());
    };
    if f.kind == TransferKind::Answer {
        return Ok(());
    }
    store.emit_at(
        tx,
        Step {
            tracking_code: &f.tracking_code,
            key: format!("{}/SENT", f.transfer_id),
            status: FilingStatus::Sent,
            hop: f.hop,
            actor_role: "node",
            actor: "",
            holder: store.institution(),
            verifier: Vec::new(),
            due_date: "",
            kind: f.kind,
            counterpart: &f.destination,
            after_seq: 0,
            cuo: "",
        },
        manifest_seq + 1,
    )?;
    Ok(())
}

/// Lists (`?3`, cut at `?4`) the documents of filing `?2`'s transfer that
/// went out during the upload (by the index `outbox_by_filing`).
pub(super) const CHUNKS_OUT: &str =
    "UPDATE outbox SET chunks_out = ?3, chunks_out_size = ?4 WHERE kind = ?1 AND filing_id = ?2";

/// Records, in the submission's transaction, the documents of the transfer
/// of filing `filing_id` whose chunks all went out while they were
/// uploaded, and the size they were cut at.
pub(crate) fn chunks_out(tx: &Connection, filing_id: i64, out: &ChunksOut) -> Result<()> {
    let listed: Vec<String> = out.documents.iter().map(u32::to_string).collect();
    exec(
        tx,
        CHUNKS_OUT,
        params![
            OutboxKind::Transfer as i64,
            filing_id,
            listed.join(","),
            out.chunk_size
        ],
    )
    .map(drop)
    .map_err(Error::store("cannot update the outbox"))
}

/// Document indexes as [`chunks_out`] lists them; anything else is left out
/// (the relay then sends that document whole, as it would anyway).
fn parse_indexes(listed: &str) -> Vec<u32> {
    listed.split(',').filter_map(|i| i.parse().ok()).collect()
}
