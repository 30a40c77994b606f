//! Filing rows a clerk works on: the held copy of a filing, its status and
//! registry data, and the inbox as the console filters it.

use super::*;
use crate::error::{Error, Result};
use ecointegra_proto::v1::{Direction, FilingStatus};
use rusqlite::{Connection, params};

/// The copy of a filing this institution holds (the newest inbound row
/// under its tracking code), in the caller's transaction.
pub fn held_filing(c: &Connection, tracking_code: &str) -> Result<Option<FilingRow>> {
    Ok(query_filings(
        c,
        "timeline = (SELECT id FROM timelines WHERE tracking_code = ?1) AND direction = ?2 ORDER BY id DESC LIMIT 1",
        params![tracking_code, Direction::Inbound as i64],
    )?
    .into_iter()
    .next())
}

/// Sets a filing's status, and its note unless `note` is empty.
pub fn set_status(c: &Connection, filing_id: i64, status: FilingStatus, note: &str) -> Result<()> {
    exec(c,
        "UPDATE filings SET status = ?2, note = CASE WHEN ?3 = '' THEN note ELSE ?3 END WHERE id = ?1",
        params![filing_id, status as i64, note],
    )
    .map(drop)
    .map_err(Error::store("cannot update the filing"))
}

/// Records the registry number and office a clerk received a filing under.
pub fn set_received(
    c: &Connection,
    filing_id: i64,
    registry_number: &str,
    office: &str,
) -> Result<()> {
    exec(
        c,
        "UPDATE filings SET internal_registry_number = ?2, office = ?3 WHERE id = ?1",
        params![filing_id, registry_number, office],
    )
    .map(drop)
    .map_err(Error::store("cannot update the filing"))
}

impl Store {
    /// Inbound filings, newest first, optionally only in one status and from
    /// one origin.
    pub fn inbox_filtered(
        &self,
        status: Option<FilingStatus>,
        origin: &str,
        limit: u32,
    ) -> Result<Vec<FilingRow>> {
        self.read(|c| {
            query_filings(
                c,
                "direction = ?1 AND (?2 < 0 OR status = ?2) AND (?3 = '' OR origin = ?3)
                 ORDER BY id DESC LIMIT ?4",
                params![
                    Direction::Inbound as i64,
                    status.map_or(-1, |s| s as i64),
                    origin,
                    limit
                ],
            )
        })
    }

    /// (direction, registered, delivered) of every filing delivered since
    /// `since_ms`.
    pub fn deliveries_since(&self, since_ms: i64) -> Result<Vec<(i64, i64, i64)>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT direction, registered_at_ms, delivered_at_ms FROM filings
                     WHERE delivered_at_ms >= ?1",
                )
                .map_err(Error::store("cannot read deliveries"))?;
            stmt.query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(Error::store("cannot read deliveries"))
        })
    }
}

impl Store {
    pub fn idempotent_response(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.read(|c| stored_response(c, key))
    }

    /// Stores an accepted submission and its outbox entry in the caller's
    /// transaction `tx`.
    /// `verifier` is its verification code's, for the registration event
    /// ([`crate::verification::verifier`]; empty for a correction).
    /// `response` is the client's answer, encoded, kept under the
    /// idempotency key. What else commits with a new filing (its trace
    /// context and audit line) the caller writes in `tx` after it.
    pub fn insert_submission(
        &self,
        tx: &Connection,
        filing: &NewFiling,
        actor: &crate::audit::Actor,
        verifier: Vec<u8>,
        idempotency_key: Option<&str>,
        response: &[u8],
    ) -> Result<Submitted> {
        if let Some(key) = idempotency_key
            && let Some(existing) = stored_response(tx, key)?
        {
            return Ok(Submitted::Existing(existing));
        }
        let (filing_id, registry_number) = self.insert_outbound(tx, filing, actor, verifier)?;
        if let Some(key) = idempotency_key {
            exec(
                tx,
                "INSERT INTO idempotency (key, filing_id, response) VALUES (?1, ?2, ?3)",
                params![key, filing_id, response],
            )
            .map_err(Error::store("cannot record the idempotency key"))?;
        }
        Ok(Submitted::New {
            filing_id,
            registry_number,
        })
    }

    /// Stores an outbound filing with its outbox entry and its REGISTERED step.
    /// The step of an original filing carries `verifier`, made beforehand
    /// and off the store's thread: it takes tens of milliseconds.
    pub(crate) fn insert_outbound(
        &self,
        tx: &Connection,
        filing: &NewFiling,
        actor: &crate::audit::Actor,
        verifier: Vec<u8>,
    ) -> Result<(i64, String)> {
        let (filing_id, registry_number) =
            insert_filing(tx, &self.institution, self.utc_offset_minutes, filing)?;
        exec(
            tx,
            "INSERT INTO outbox (kind, filing_id, recipient, record_key) VALUES (?1, ?2, ?3, ?4)",
            params![
                OutboxKind::Transfer as i64,
                filing_id,
                filing.destination,
                filing.transfer_id
            ],
        )
        .map_err(Error::store("cannot insert the outbox entry"))?;
        if matches!(
            filing.kind,
            TransferKind::Original | TransferKind::Correction
        ) {
            let verifier = if filing.kind == TransferKind::Original {
                verifier
            } else {
                Vec::new()
            };
            self.emit(
                tx,
                Step {
                    tracking_code: &filing.tracking_code,
                    key: format!("{}/REGISTERED", filing.transfer_id),
                    status: FilingStatus::Registered,
                    hop: filing.hop,
                    actor_role: actor.role.name(),
                    actor: &actor.name,
                    holder: &self.institution,
                    verifier,
                    due_date: "",
                    kind: filing.kind,
                    counterpart: &filing.destination,
                    after_seq: 0,
                    cuo: filing.cuo(),
                },
            )?;
        }
        Ok((filing_id, registry_number))
    }

    /// One copy of a filing at this node: the one `transfer_id` names;
    /// without it, the copy this institution holds (its newest inbound copy),
    /// or, if it never received the filing, the newest record of what it sent.
    pub fn filing_copy(&self, code: &str, transfer_id: Option<&str>) -> Result<Option<FilingRow>> {
        self.read(|c| {
            Ok(match transfer_id {
                Some(id) => query_filings(
                    c,
                    "timeline = (SELECT id FROM timelines WHERE tracking_code = ?1) AND transfer_id = ?2",
                    params![code, id],
                )?
                .into_iter()
                .next(),
                None => query_filings(
                    c,
                    "timeline = (SELECT id FROM timelines WHERE tracking_code = ?1) ORDER BY direction = ?2 DESC, id DESC LIMIT 1",
                    params![code, Direction::Inbound as i64],
                )?
                .into_iter()
                .next(),
            })
        })
    }

    /// Every copy of a filing at this node (inbound copies and outbound
    /// records), by hop.
    pub fn filing_copies(&self, code: &str) -> Result<Vec<FilingRow>> {
        self.read(|c| {
            query_filings(
                c,
                "timeline = (SELECT id FROM timelines WHERE tracking_code = ?1) ORDER BY hop, id",
                [code],
            )
        })
    }

    pub fn filing_by_transfer(&self, transfer_id: &str) -> Result<Option<FilingRow>> {
        self.read(|c| query_filing(c, "transfer_id = ?1", transfer_id))
    }

    /// Inbound filings newest first, below `before_id` when paging.
    pub fn inbox_page(&self, before_id: Option<i64>, limit: u32) -> Result<Vec<FilingRow>> {
        self.read(|c| {
            query_filings(
                c,
                "direction = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
                params![
                    Direction::Inbound as i64,
                    before_id.unwrap_or(i64::MAX),
                    limit
                ],
            )
        })
    }

    /// Inbound filings after `cursor`, oldest first.
    pub fn inbox_after(&self, cursor: i64, limit: u32) -> Result<Vec<FilingRow>> {
        self.read(|c| {
            query_filings(
                c,
                "direction = ?1 AND id > ?2 ORDER BY id ASC LIMIT ?3",
                params![Direction::Inbound as i64, cursor, limit],
            )
        })
    }

    /// The newest record of a filing in one direction.
    pub fn latest(&self, tracking_code: &str, direction: Direction) -> Result<Option<FilingRow>> {
        self.read(|c| {
            Ok(query_filings(
                c,
                "timeline = (SELECT id FROM timelines WHERE tracking_code = ?1) AND direction = ?2 ORDER BY id DESC LIMIT 1",
                params![tracking_code, direction as i64],
            )?
            .into_iter()
            .next())
        })
    }

    /// The answer this node received for a filing, if any.
    pub fn answer_for(&self, tracking_code: &str) -> Result<Option<FilingRow>> {
        self.read(|c| {
            Ok(query_filings(
                c,
                "timeline = (SELECT id FROM timelines WHERE tracking_code = ?1) AND direction = ?2 AND kind = ?3 ORDER BY id DESC LIMIT 1",
                params![
                    tracking_code,
                    Direction::Inbound as i64,
                    TransferKind::Answer as i64
                ],
            )?
            .into_iter()
            .next())
        })
    }

    /// Inbound filings still awaiting an answer that have a due date.
    pub fn open_with_due_date(&self) -> Result<Vec<FilingRow>> {
        self.read(|c| {
            query_filings(
                c,
                "direction = ?1 AND due_date != '' AND status IN (?2, ?3) ORDER BY due_date, id",
                params![
                    Direction::Inbound as i64,
                    FilingStatus::Delivered as i64,
                    FilingStatus::Received as i64
                ],
            )
        })
    }

    /// Runs a clerk action once per action id: a repeated id returns the
    /// first answer and changes nothing.
    pub fn perform_action(
        &self,
        action_id: &str,
        action: impl FnOnce(&Connection) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        self.write(|tx| {
            let done: Option<Vec<u8>> = row(
                tx,
                "SELECT response FROM actions WHERE action_id = ?1",
                [action_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(Error::store("cannot read actions"))?;
            if let Some(response) = done {
                return Ok(response);
            }
            let response = action(tx)?;
            exec(
                tx,
                "INSERT INTO actions (action_id, response) VALUES (?1, ?2)",
                params![action_id, response],
            )
            .map_err(Error::store("cannot record the action"))?;
            Ok(response)
        })
    }
}

/// Is there a filing (either direction) for this transfer?
pub(crate) fn transfer_known(c: &Connection, transfer_id: &str) -> Result<bool> {
    c.prepare_cached("SELECT 1 FROM filings WHERE transfer_id = ?1")
        .and_then(|mut s| s.query_row([transfer_id], |_| Ok(())).optional())
        .map(|r| r.is_some())
        .map_err(Error::store("cannot read filings"))
}

pub(crate) fn filing_by_transfer(c: &Connection, transfer_id: &str) -> Result<Option<FilingRow>> {
    query_filing(c, "transfer_id = ?1", transfer_id)
}

/// Inserts a filing and numbers it in this institution's registry, by the
/// year on its clock (`utc_offset_minutes` from UTC).
pub(crate) fn insert_filing(
    tx: &Connection,
    institution: &str,
    utc_offset_minutes: i32,
    filing: &NewFiling,
) -> Result<(i64, String)> {
    let year = crate::ids::year_of(
        filing.registered_at_ms.max(ecointegra_broker::now_ms()),
        utc_offset_minutes,
    );
    let counter = format!("registry-{year}");
    let sequence: i64 = row(
        tx,
        "INSERT INTO counters (name, value) VALUES (?1, 1)
             ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
        [&counter],
        |r| r.get(0),
    )
    .map_err(Error::store("cannot number the filing"))?;
    let registry_number = crate::ids::registry_number(institution, year, sequence);
    let timeline = super::tracking::timeline_number(tx, &filing.tracking_code)?;
    exec(tx,
        "INSERT INTO filings (tracking_code, verification_code, transfer_id, direction, status, origin,
            destination, subject, sender_party, folio_count, registered_at_ms, delivered_at_ms,
            registry_number, origin_registry_number, kind, related_transfer_id, note, hop, filing_type,
            due_date, filed_at, previous_receipt_sha256, sgd, cuo, timeline)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
        params![
            filing.tracking_code,
            filing.verification_code,
            filing.transfer_id,
            filing.direction as i64,
            filing.status as i64,
            filing.origin,
            filing.destination,
            filing.subject,
            filing.sender_party.encode_to_vec(),
            filing.folio_count,
            filing.registered_at_ms,
            filing.delivered_at_ms,
            registry_number,
            filing.origin_registry_number,
            filing.kind as i64,
            filing.related_transfer_id,
            filing.note,
            filing.hop,
            filing.filing_type,
            filing.due_date,
            filing.filed_at,
            filing.previous_receipt_sha256,
            filing.sgd.as_ref().map(Message::encode_to_vec),
            filing.cuo(),
            timeline,
        ],
    )
    .map_err(Error::store("cannot insert the filing"))?;
    let filing_id = tx.last_insert_rowid();
    for doc in &filing.documents {
        exec(tx,
            "INSERT INTO documents (filing_id, idx, name, media_type, size, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![filing_id, doc.index, doc.name, doc.media_type, doc.size as i64, doc.sha256],
        )
        .map_err(Error::store("cannot insert a document"))?;
    }
    Ok((filing_id, registry_number))
}

pub(crate) const FILING_COLUMNS: &str = "id, tracking_code, verification_code, transfer_id, direction, status, origin,
    destination, subject, sender_party, folio_count, registered_at_ms, delivered_at_ms, registry_number,
    origin_registry_number, kind, related_transfer_id, note, hop, filing_type, due_date, internal_registry_number,
    office, filed_at, previous_receipt_sha256, sgd";

pub(crate) fn query_filing(
    c: &Connection,
    condition: &str,
    value: &str,
) -> Result<Option<FilingRow>> {
    Ok(query_filings(c, condition, [value])?.into_iter().next())
}

pub(crate) fn query_filings(
    c: &Connection,
    condition: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<FilingRow>> {
    let sql = format!("SELECT {FILING_COLUMNS} FROM filings WHERE {condition}");
    let mut stmt = c
        .prepare_cached(&sql)
        .map_err(Error::store("cannot read filings"))?;
    let mut filings = stmt
        .query_map(params, |r| {
            let party: Vec<u8> = r.get(9)?;
            Ok(FilingRow {
                id: r.get(0)?,
                registry_number: r.get(13)?,
                internal_registry_number: r.get(21)?,
                office: r.get(22)?,
                data: NewFiling {
                    tracking_code: r.get(1)?,
                    verification_code: r.get(2)?,
                    transfer_id: r.get(3)?,
                    direction: Direction::try_from(r.get::<_, i32>(4)?).unwrap_or_default(),
                    status: FilingStatus::try_from(r.get::<_, i32>(5)?).unwrap_or_default(),
                    origin: r.get(6)?,
                    destination: r.get(7)?,
                    subject: r.get(8)?,
                    sender_party: Party::decode(party.as_slice()).unwrap_or_default(),
                    folio_count: r.get(10)?,
                    registered_at_ms: r.get(11)?,
                    delivered_at_ms: r.get(12)?,
                    origin_registry_number: r.get(14)?,
                    documents: Vec::new(),
                    kind: TransferKind::try_from(r.get::<_, i32>(15)?).unwrap_or_default(),
                    related_transfer_id: r.get(16)?,
                    note: r.get(17)?,
                    hop: r.get(18)?,
                    filing_type: r.get(19)?,
                    due_date: r.get(20)?,
                    filed_at: r.get(23)?,
                    previous_receipt_sha256: r.get(24)?,
                    sgd: r
                        .get::<_, Option<Vec<u8>>>(25)?
                        .and_then(|b| ecointegra_proto::v1::SgdDocument::decode(b.as_slice()).ok()),
                },
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(Error::store("cannot read filings"))?;
    let mut docs = c
        .prepare_cached("SELECT idx, name, media_type, size, sha256 FROM documents WHERE filing_id = ?1 ORDER BY idx")
        .map_err(Error::store("cannot read documents"))?;
    for filing in &mut filings {
        filing.data.documents = docs
            .query_map([filing.id], |r| {
                Ok(DocumentRow {
                    index: r.get(0)?,
                    name: r.get(1)?,
                    media_type: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                    sha256: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(Error::store("cannot read documents"))?;
    }
    Ok(filings)
}

/// The answer stored under an idempotency key, if the key was used.
fn stored_response(c: &Connection, key: &str) -> Result<Option<Vec<u8>>> {
    row(
        c,
        "SELECT response FROM idempotency WHERE key = ?1",
        [key],
        |r| r.get(0),
    )
    .optional()
    .map_err(Error::store("cannot read idempotency keys"))
}
