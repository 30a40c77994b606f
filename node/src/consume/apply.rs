//! Applying an opened record inside its batch's transaction: receipts for
//! this institution's transfers, notices from destinations, tracking events
//! and directory entries (chunks and manifests are in [`super::assemble`]).

use super::open::Opened;
use super::{Consumers, Stop};
use crate::error::Result;
use crate::store::{self, DocumentRow, NewFiling, Position, ReceiptRow};
use ecointegra_broker::directory::Directory;
use ecointegra_broker::envelope::Rejection;
use ecointegra_proto::v1::{Direction, DocumentDigest, Envelope, FilingStatus, Notice, Receipt};
use rusqlite::Connection;
use std::collections::HashSet;
use std::path::PathBuf;

/// What a committed record still does outside the store.
pub enum Applied {
    Nothing,
    Delivered {
        filing_id: i64,
        bytes: u64,
        tracking_code: String,
        origin: String,
    },
    ReceiptQueued,
    Receipted {
        registered_at_ms: i64,
        tracking_code: String,
        destination: String,
        registry_number: String,
    },
    Notice {
        tracking_code: String,
        by: String,
        status: FilingStatus,
    },
    DirectoryEntry {
        institution: String,
        version: u64,
    },
}

/// One batch's work in progress, inside its transaction.
pub struct Batch<'a> {
    pub cx: &'a Consumers,
    /// Partial files written in this batch: made durable before it commits.
    pub dirty: HashSet<PathBuf>,
    /// The directory as the entries applied in this batch leave it.
    pub directory: Option<Directory>,
    /// Partial files adopted into the blob store by this batch's filings:
    /// removed once it has committed.
    pub adopted: Vec<PathBuf>,
}

impl Batch<'_> {
    /// Fsyncs the partial files this batch wrote, so their bytes are durable
    /// before the rows and offsets that count them.
    pub fn sync(&mut self) -> Result<()> {
        for path in self.dirty.drain() {
            super::assemble::sync_file(&path)?;
        }
        Ok(())
    }

    /// The batch committed: the partial files its filings adopted go.
    pub fn committed(&mut self) {
        for path in self.adopted.drain(..) {
            self.cx.blobs.forget_partial(&path);
        }
    }

    pub fn apply(
        &mut self,
        c: &Connection,
        opened: Opened,
        position: Position<'_>,
        first: bool,
    ) -> Result<Applied, Stop> {
        match opened {
            Opened::Chunk {
                envelope,
                chunk,
                hash_ok,
            } => self.chunk(c, envelope, chunk, hash_ok, position),
            Opened::Manifest {
                envelope,
                manifest,
                digests,
            } => self.manifest(c, envelope, manifest, digests, position, first),
            Opened::Receipt {
                envelope,
                receipt,
                raw,
            } => self.receipt(c, envelope, receipt, raw, position),
            Opened::Notice { envelope, notice } => self.notice(c, envelope, notice, position),
            Opened::Tracking { event, signed } => {
                self.cx
                    .store
                    .apply_tracking_event(c, position, &event, &signed)?;
                Ok(Applied::Nothing)
            }
            Opened::OwnTracking {
                tracking_code,
                event_id,
                value,
            } => {
                if store::tracking::signed_here(c, &tracking_code, &event_id, &value)? {
                    // Its own step coming back, byte for byte as it signed
                    // and stored it: already in the timeline.
                    self.cx.store.apply_nothing(c, position, None)?;
                    return Ok(Applied::Nothing);
                }
                let opened = super::open::tracking(&self.cx.trust, &value)?;
                self.apply(c, opened, position, first)
            }
            Opened::Directory { signed, entry } => self.directory_entry(c, signed, entry, position),
        }
    }

    fn receipt(
        &mut self,
        c: &Connection,
        envelope: Envelope,
        receipt: Receipt,
        raw: Vec<u8>,
        position: Position<'_>,
    ) -> Result<Applied, Stop> {
        let reject =
            |code, reason: String| Stop::from(Rejection::new(code, reason).about(&envelope));
        let store = &self.cx.store;
        let key = super::processed_key(&envelope);
        if store::is_processed(c, &key)? {
            store.apply_nothing(c, position, None)?;
            return Ok(Applied::Nothing);
        }
        let filing = store::filing_by_transfer(c, &receipt.transfer_id)?;
        let Some(filing) = filing.filter(|f| f.direction == Direction::Outbound) else {
            return Err(reject(
                "receipt",
                format!(
                    "receipt for transfer {}, which this institution did not send",
                    receipt.transfer_id
                ),
            ));
        };
        // Anything else leaves the filing as it was, awaiting its receipt.
        if let Err(problem) = receipt_fits(
            &receipt,
            &filing,
            &envelope.sender,
            self.cx.trust.institution(),
        ) {
            return Err(reject(
                "receipt",
                format!("receipt for transfer {}: {problem}", receipt.transfer_id),
            ));
        }
        if let Err(problem) = digests_match(&receipt.documents, &filing.documents) {
            return Err(reject(
                "receipt-digest",
                format!("receipt for transfer {}: {problem}", receipt.transfer_id),
            ));
        }
        let stored = ReceiptRow {
            transfer_id: receipt.transfer_id.clone(),
            tracking_code: filing.tracking_code.clone(),
            hop: filing.hop,
            signer: envelope.sender.clone(),
            envelope: raw,
            received_at_ms: receipt.received_at_ms,
        };
        store.apply_receipt(c, position, &key, filing.id, &stored)?;
        Ok(Applied::Receipted {
            registered_at_ms: filing.registered_at_ms,
            tracking_code: filing.tracking_code.clone(),
            destination: filing.destination.clone(),
            registry_number: receipt.registry_number,
        })
    }

    fn notice(
        &mut self,
        c: &Connection,
        envelope: Envelope,
        notice: Notice,
        position: Position<'_>,
    ) -> Result<Applied, Stop> {
        let reject =
            |code, reason: String| Stop::from(Rejection::new(code, reason).about(&envelope));
        let status = FilingStatus::try_from(notice.status).unwrap_or_default();
        let carries_cargo = notice.cargo.is_some() && status == FilingStatus::Received;
        if !matches!(status, FilingStatus::Observed | FilingStatus::Rejected) && !carries_cargo {
            return Err(reject(
                "notice",
                format!("a notice cannot set status {}", notice.status),
            ));
        }
        let filing = store::filing_by_transfer(c, &notice.transfer_id)?;
        let Some(filing) = filing
            .filter(|f| f.direction == Direction::Outbound && f.destination == envelope.sender)
        else {
            return Err(reject(
                "notice",
                format!(
                    "notice for transfer {}, which this institution did not send to {}",
                    notice.transfer_id, envelope.sender
                ),
            ));
        };
        // A cargo (and so a RECEIVED notice) only for a filing this
        // institution's SGD handed in: its SGD awaits it.
        if notice.cargo.is_some() && filing.sgd.is_none() {
            return Err(reject(
                "notice",
                format!(
                    "a cargo for transfer {}, which no SGD of this institution handed in",
                    notice.transfer_id
                ),
            ));
        }
        let clock = (notice.tracking_code.as_str(), notice.tracking_seq);
        self.cx.store.apply_notice(
            c,
            position,
            &super::processed_key(&envelope),
            (filing.id, &filing.transfer_id),
            (status, &notice.reason, &envelope.sender),
            notice.cargo.as_ref(),
            clock,
        )?;
        Ok(Applied::Notice {
            tracking_code: filing.tracking_code.clone(),
            by: envelope.sender.clone(),
            status,
        })
    }
}

/// Is `receipt`, signed by `signer`, the receipt of the transfer this
/// institution (`me`) sent as `filing`? Each check names what differs. (That
/// the transfer is one this institution sent, and the documents' digests,
/// are checked beside it.)
pub fn receipt_fits(
    receipt: &Receipt,
    filing: &NewFiling,
    signer: &str,
    me: &str,
) -> Result<(), String> {
    signed_by_destination(receipt, filing, signer)?;
    from_us(receipt, me)?;
    same_tracking_code(receipt, filing)?;
    same_hop(receipt, filing)?;
    same_previous_receipt(receipt, filing)
}

/// Only the transfer's destination signs its receipt, as its receiver.
fn signed_by_destination(
    receipt: &Receipt,
    filing: &NewFiling,
    signer: &str,
) -> Result<(), String> {
    if signer != filing.destination {
        return Err(format!(
            "signed by {signer}, but the transfer was sent to {}",
            filing.destination
        ));
    }
    if receipt.receiving_institution != signer {
        return Err(format!(
            "names {} as receiver, but {signer} signed it",
            receipt.receiving_institution
        ));
    }
    Ok(())
}

fn from_us(receipt: &Receipt, me: &str) -> Result<(), String> {
    if receipt.origin != me {
        return Err(format!(
            "names {} as origin, but {me} sent the transfer",
            receipt.origin
        ));
    }
    Ok(())
}

fn same_tracking_code(receipt: &Receipt, filing: &NewFiling) -> Result<(), String> {
    if receipt.tracking_code != filing.tracking_code {
        return Err(format!(
            "names tracking code {}, but the transfer carried {}",
            receipt.tracking_code, filing.tracking_code
        ));
    }
    Ok(())
}

fn same_hop(receipt: &Receipt, filing: &NewFiling) -> Result<(), String> {
    if receipt.hop != filing.hop {
        return Err(format!(
            "names hop {}, but the transfer was hop {}",
            receipt.hop, filing.hop
        ));
    }
    Ok(())
}

/// The receipt chains onto the receipt the transfer named as the previous
/// one (none for a filing's first hop).
fn same_previous_receipt(receipt: &Receipt, filing: &NewFiling) -> Result<(), String> {
    if receipt.previous_receipt_sha256 != filing.previous_receipt_sha256 {
        return Err(format!(
            "names previous receipt {:?}, but the transfer named {:?}",
            hex::encode(&receipt.previous_receipt_sha256),
            hex::encode(&filing.previous_receipt_sha256)
        ));
    }
    Ok(())
}

/// Do the receipt's digests name exactly the documents we hold?
pub fn digests_match(receipt: &[DocumentDigest], ours: &[DocumentRow]) -> Result<(), String> {
    if receipt.len() != ours.len() {
        return Err(format!(
            "names {} documents, {} were sent",
            receipt.len(),
            ours.len()
        ));
    }
    for (r, o) in receipt.iter().zip(ours) {
        if r.index != o.index || r.size != o.size || r.sha256 != o.sha256 {
            return Err(format!(
                "document {} differs: {} bytes with SHA-256 {}, sent {} bytes with SHA-256 {}",
                o.index,
                r.size,
                hex::encode(&r.sha256),
                o.size,
                hex::encode(&o.sha256)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// senamhi's forward of a filing to oefa, as senamhi's store holds it.
    fn sent() -> NewFiling {
        NewFiling {
            tracking_code: "SENAMHI-2026-0123ABCD".into(),
            transfer_id: "ab".repeat(16),
            direction: Direction::Outbound,
            origin: "senamhi".into(),
            destination: "oefa".into(),
            hop: 2,
            previous_receipt_sha256: vec![7; 32],
            ..Default::default()
        }
    }

    fn receipt() -> Receipt {
        Receipt {
            transfer_id: "ab".repeat(16),
            tracking_code: "SENAMHI-2026-0123ABCD".into(),
            receiving_institution: "oefa".into(),
            origin: "senamhi".into(),
            hop: 2,
            previous_receipt_sha256: vec![7; 32],
            ..Default::default()
        }
    }

    fn refused(edit: impl Fn(&mut Receipt), signer: &str) -> String {
        let mut r = receipt();
        edit(&mut r);
        receipt_fits(&r, &sent(), signer, "senamhi").unwrap_err()
    }

    #[test]
    fn the_receipt_of_the_transfer_sent_fits() {
        assert_eq!(receipt_fits(&receipt(), &sent(), "oefa", "senamhi"), Ok(()));
    }

    #[test]
    fn a_receipt_that_differs_from_the_transfer_sent_is_refused_naming_what_differs() {
        let why = refused(|r| r.receiving_institution = "minam".into(), "minam");
        assert_eq!(why, "signed by minam, but the transfer was sent to oefa");
        let why = refused(|r| r.receiving_institution = "minam".into(), "oefa");
        assert_eq!(why, "names minam as receiver, but oefa signed it");
        let why = refused(|r| r.origin = "minam".into(), "oefa");
        assert_eq!(why, "names minam as origin, but senamhi sent the transfer");
        let why = refused(|r| r.tracking_code = "SENAMHI-2026-FFFFFFFF".into(), "oefa");
        assert_eq!(
            why,
            "names tracking code SENAMHI-2026-FFFFFFFF, but the transfer carried SENAMHI-2026-0123ABCD"
        );
        let why = refused(|r| r.hop = 1, "oefa");
        assert_eq!(why, "names hop 1, but the transfer was hop 2");
        let why = refused(|r| r.previous_receipt_sha256 = vec![8; 32], "oefa");
        assert!(
            why.starts_with("names previous receipt \"0808")
                && why.contains("but the transfer named \"0707"),
            "{why}"
        );
        let why = refused(|r| r.previous_receipt_sha256.clear(), "oefa");
        assert!(why.starts_with("names previous receipt \"\""), "{why}");
    }
}
