//! Signed delivery receipts: the chain of custody of every filing.

use super::*;

/// The SENT step a transfer's manifest carried (`?2`: its filing, `?1`: the
/// transfer kind) while its filing is still `?3`, REGISTERED: Kafka never
/// acknowledged the manifest, yet its receipt came. By the index
/// `outbox_by_filing`.
pub(super) const UNACKNOWLEDGED_SEQ: &str =
    "SELECT o.manifest_seq FROM outbox o JOIN filings f ON f.id = o.filing_id
     WHERE o.kind = ?1 AND o.filing_id = ?2 AND o.manifest_seq > 0 AND f.status = ?3";

/// A receipted transfer's entry leaves the outbox (by `outbox_by_filing`).
pub(super) const FORGET_TRANSFER: &str = "DELETE FROM outbox WHERE kind = ?1 AND filing_id = ?2";

impl Store {
    pub fn receipt(&self, transfer_id: &str) -> Result<Option<ReceiptRow>> {
        self.read(|c| {
            Ok(query_receipts(c, "transfer_id = ?1", transfer_id)?
                .into_iter()
                .next())
        })
    }

    /// Every receipt held for a filing, in hop order: its chain of custody.
    pub fn receipt_chain(&self, tracking_code: &str) -> Result<Vec<ReceiptRow>> {
        self.read(|c| self.receipt_chain_in(c, tracking_code))
    }

    pub(crate) fn receipt_chain_in(
        &self,
        c: &Connection,
        tracking_code: &str,
    ) -> Result<Vec<ReceiptRow>> {
        query_receipts(
            c,
            "timeline = (SELECT id FROM timelines WHERE tracking_code = ?1) ORDER BY hop, received_at_ms",
            tracking_code,
        )
    }

    /// A verified receipt for one of our transfers: store it, mark the filing
    /// DELIVERED and end its outbox entry.
    pub fn apply_receipt(
        &self,
        c: &Connection,
        position: Position<'_>,
        message_id: &str,
        filing_id: i64,
        receipt: &ReceiptRow,
    ) -> Result<()> {
        self.apply(c, position, Some(message_id), |tx| {
            // Kafka never acknowledged the publication, yet it arrived: its
            // SENT step, numbered after the step its manifest carried.
            let unacknowledged: Option<i64> = row(tx,
                    UNACKNOWLEDGED_SEQ,
                    params![
                        OutboxKind::Transfer as i64,
                        filing_id,
                        FilingStatus::Registered as i64
                    ],
                    |r| r.get(0),
                )
                .optional()
                .map_err(Error::store("cannot read the outbox"))?;
            if let Some(seq) = unacknowledged {
                super::outbox::sent_step(self, tx, filing_id, seq as u64)?;
            }
            if insert_receipt(tx, receipt)? {
                exec(tx,
                    "UPDATE filings SET status = ?2, delivered_at_ms = ?3 WHERE id = ?1 AND status IN (?4, ?5)",
                    params![
                        filing_id,
                        FilingStatus::Delivered as i64,
                        receipt.received_at_ms,
                        FilingStatus::Registered as i64,
                        FilingStatus::Sent as i64
                    ],
                )
                .map_err(Error::store("cannot update the filing"))?;
            }
            exec(tx,
                FORGET_TRANSFER,
                params![OutboxKind::Transfer as i64, filing_id],
            )
            .map_err(Error::store("cannot update the outbox"))?;
            Ok(())
        })
        .map(drop)
    }

    /// A transfer this node already holds was sent again: its sender has not
    /// seen the receipt, so queue the stored one once more.
    pub fn apply_receipt_resend(
        &self,
        c: &Connection,
        position: Position<'_>,
        message_id: &str,
        transfer_id: &str,
        recipient: &str,
        topic: &str,
    ) -> Result<()> {
        self.apply(c, position, Some(message_id), |tx| {
            let envelope: Vec<u8> = row(
                tx,
                "SELECT envelope FROM receipts WHERE transfer_id = ?1",
                [transfer_id],
                |r| r.get(0),
            )
            .map_err(Error::store("cannot read the receipt"))?;
            queue_envelope(tx, topic, recipient, transfer_id, &envelope)
        })
        .map(drop)
    }
}

/// Stores a receipt unless one for the same transfer is there. True if new.
pub(crate) fn insert_receipt(tx: &Connection, receipt: &ReceiptRow) -> Result<bool> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&receipt.envelope).to_vec();
    let timeline = super::tracking::timeline_number(tx, &receipt.tracking_code)?;
    exec(tx,
        "INSERT OR IGNORE INTO receipts (transfer_id, tracking_code, hop, signer, envelope, sha256, received_at_ms, timeline)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            receipt.transfer_id,
            receipt.tracking_code,
            receipt.hop,
            receipt.signer,
            receipt.envelope,
            digest,
            receipt.received_at_ms,
            timeline
        ],
    )
    .map(|n| n == 1)
    .map_err(Error::store("cannot store a receipt"))
}

pub(crate) fn query_receipts(
    c: &Connection,
    condition: &str,
    value: &str,
) -> Result<Vec<ReceiptRow>> {
    let sql = format!(
        "SELECT transfer_id, tracking_code, hop, signer, envelope, received_at_ms FROM receipts WHERE {condition}"
    );
    let mut stmt = c
        .prepare_cached(&sql)
        .map_err(Error::store("cannot read receipts"))?;
    stmt.query_map([value], |r| {
        Ok(ReceiptRow {
            transfer_id: r.get(0)?,
            tracking_code: r.get(1)?,
            hop: r.get(2)?,
            signer: r.get(3)?,
            envelope: r.get(4)?,
            received_at_ms: r.get(5)?,
        })
    })
    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
    .map_err(Error::store("cannot read receipts"))
}
