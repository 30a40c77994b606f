//! The node's embedded store: SQLite in WAL mode, one file.
//!
//! Every effect of an accepted submission or of a consumed Kafka record is one
//! transaction here. For consumed records the same transaction records the
//! message id (so a duplicate is a no-op) and the next offset to read (so a
//! restart resumes exactly where the effects end).

use crate::error::{Error, Result};
use ecointegra_proto::v1::{Direction, FilingStatus, Party};
use prost::Message;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS filings (
    id INTEGER PRIMARY KEY,
    tracking_code TEXT NOT NULL,
    verification_code TEXT NOT NULL,
    transfer_id TEXT NOT NULL UNIQUE,
    direction INTEGER NOT NULL,
    status INTEGER NOT NULL,
    origin TEXT NOT NULL,
    destination TEXT NOT NULL,
    subject TEXT NOT NULL,
    sender_party BLOB NOT NULL,
    folio_count INTEGER NOT NULL,
    registered_at_ms INTEGER NOT NULL,
    delivered_at_ms INTEGER NOT NULL DEFAULT 0,
    registry_number TEXT NOT NULL,
    origin_registry_number TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS filings_by_tracking ON filings(tracking_code);
CREATE INDEX IF NOT EXISTS filings_by_direction ON filings(direction, id);
CREATE TABLE IF NOT EXISTS documents (
    filing_id INTEGER NOT NULL REFERENCES filings(id),
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 BLOB NOT NULL,
    PRIMARY KEY (filing_id, idx)
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    filing_id INTEGER NOT NULL,
    response BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    filing_id INTEGER,
    recipient TEXT NOT NULL,
    record_key TEXT NOT NULL,
    envelope BLOB,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS receipts (
    transfer_id TEXT PRIMARY KEY,
    filing_id INTEGER NOT NULL,
    signer TEXT NOT NULL,
    envelope BLOB NOT NULL,
    received_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS processed_messages (
    message_id TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox_offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS partial_documents (
    transfer_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    sender TEXT NOT NULL,
    next_seq INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (transfer_id, idx)
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// What an outbox entry publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// A whole transfer of a filing: chunks, then the manifest. Stays until the
    /// receipt arrives, and is re-sent when none comes in time.
    Transfer = 1,
    /// One sealed envelope (a receipt). Removed once Kafka acknowledges it.
    Envelope = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRow {
    pub index: u32,
    pub name: String,
    pub media_type: String,
    pub size: u64,
    pub sha256: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct FilingRow {
    pub id: i64,
    pub tracking_code: String,
    pub verification_code: String,
    pub transfer_id: String,
    pub direction: Direction,
    pub status: FilingStatus,
    pub origin: String,
    pub destination: String,
    pub subject: String,
    pub sender_party: Party,
    pub folio_count: u32,
    pub registered_at_ms: i64,
    pub delivered_at_ms: i64,
    pub registry_number: String,
    pub origin_registry_number: String,
    pub documents: Vec<DocumentRow>,
}

/// A filing about to be stored; the store assigns its id and registry number.
#[derive(Debug, Clone)]
pub struct NewFiling {
    pub tracking_code: String,
    pub verification_code: String,
    pub transfer_id: String,
    pub direction: Direction,
    pub status: FilingStatus,
    pub origin: String,
    pub destination: String,
    pub subject: String,
    pub sender_party: Party,
    pub folio_count: u32,
    pub registered_at_ms: i64,
    pub delivered_at_ms: i64,
    pub origin_registry_number: String,
    pub documents: Vec<DocumentRow>,
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub kind: OutboxKind,
    pub filing_id: Option<i64>,
    pub recipient: String,
    pub record_key: String,
    pub envelope: Option<Vec<u8>>,
    pub attempts: u32,
}

/// Where a consumed record was read; stored with its effect.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone)]
pub struct Partial {
    pub sender: String,
    pub next_seq: u32,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct StoredReceipt {
    pub transfer_id: String,
    pub signer: String,
    pub envelope: Vec<u8>,
    pub received_at_ms: i64,
}

/// A receipt to send in the same transaction that stores a delivery.
#[derive(Debug, Clone)]
pub struct OutgoingReceipt {
    pub recipient: String,
    pub envelope: Vec<u8>,
    pub received_at_ms: i64,
    pub signer: String,
}

/// Outcome of storing a submission.
pub enum Submitted {
    New {
        filing_id: i64,
        registry_number: String,
    },
    /// The idempotency key was used before: the first answer, encoded.
    Existing(Vec<u8>),
}

/// Handle to the store; cheap to clone. Calls block: use [`Store::run`] from async code.
#[derive(Clone)]
pub struct Store {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    institution: String,
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

impl Store {
    pub fn open(path: &Path, institution: &str) -> Result<Self> {
        let writer = open_connection(path)
            .map_err(Error::store(format!("cannot open {}", path.display())))?;
        writer
            .execute_batch(SCHEMA)
            .map_err(Error::store("cannot create the schema"))?;
        let reader = open_connection(path).map_err(Error::store("cannot open a reader"))?;
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            institution: institution.to_owned(),
        })
    }

    /// Runs blocking store work off the async runtime.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Error::Io {
                context: "a store task failed".into(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction().map_err(Error::store("cannot begin"))?;
        let out = f(&tx)?;
        tx.commit().map_err(Error::store("cannot commit"))?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn)
    }

    // ---- submissions -------------------------------------------------------

    pub fn idempotent_response(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.read(|c| {
            c.query_row(
                "SELECT response FROM idempotency WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(Error::store("cannot read idempotency keys"))
        })
    }

    /// Stores an accepted submission and its outbox entry in one transaction.
    /// `response` builds the client's answer from the registry number.
    pub fn insert_submission(
        &self,
        filing: &NewFiling,
        idempotency_key: Option<&str>,
        response: impl FnOnce(&str) -> Vec<u8>,
    ) -> Result<Submitted> {
        self.write(|tx| {
            if let Some(key) = idempotency_key {
                let existing: Option<Vec<u8>> = tx
                    .query_row("SELECT response FROM idempotency WHERE key = ?1", [key], |r| r.get(0))
                    .optional()
                    .map_err(Error::store("cannot read idempotency keys"))?;
                if let Some(existing) = existing {
                    return Ok(Submitted::Existing(existing));
                }
            }
            let (filing_id, registry_number) = insert_filing(tx, &self.institution, filing)?;
            tx.execute(
                "INSERT INTO outbox (kind, filing_id, recipient, record_key) VALUES (?1, ?2, ?3, ?4)",
                params![OutboxKind::Transfer as i64, filing_id, filing.destination, filing.transfer_id],
            )
            .map_err(Error::store("cannot insert the outbox entry"))?;
            if let Some(key) = idempotency_key {
                tx.execute(
                    "INSERT INTO idempotency (key, filing_id, response) VALUES (?1, ?2, ?3)",
                    params![key, filing_id, response(&registry_number)],
                )
                .map_err(Error::store("cannot record the idempotency key"))?;
            }
            Ok(Submitted::New { filing_id, registry_number })
        })
    }

    // ---- queries -----------------------------------------------------------

    pub fn filing_by_tracking_code(&self, code: &str) -> Result<Option<FilingRow>> {
        self.read(|c| query_filing(c, "tracking_code = ?1 ORDER BY id DESC LIMIT 1", code))
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

    pub fn receipt(&self, transfer_id: &str) -> Result<Option<StoredReceipt>> {
        self.read(|c| {
            c.query_row(
                "SELECT transfer_id, signer, envelope, received_at_ms FROM receipts WHERE transfer_id = ?1",
                [transfer_id],
                |r| {
                    Ok(StoredReceipt {
                        transfer_id: r.get(0)?,
                        signer: r.get(1)?,
                        envelope: r.get(2)?,
                        received_at_ms: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(Error::store("cannot read receipts"))
        })
    }

    pub fn count_filings(&self, direction: Direction) -> Result<i64> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM filings WHERE direction = ?1",
                [direction as i64],
                |r| r.get(0),
            )
            .map_err(Error::store("cannot count filings"))
        })
    }

    // ---- outbox ------------------------------------------------------------

    /// Outbox entries whose time has come.
    pub fn due_outbox(&self, now_ms: i64, limit: u32) -> Result<Vec<OutboxRow>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, kind, filing_id, recipient, record_key, envelope, attempts FROM outbox
                     WHERE next_attempt_at_ms <= ?1 ORDER BY next_attempt_at_ms, id LIMIT ?2",
                )
                .map_err(Error::store("cannot read the outbox"))?;
            let rows = stmt
                .query_map(params![now_ms, limit], |r| {
                    Ok(OutboxRow {
                        id: r.get(0)?,
                        kind: if r.get::<_, i64>(1)? == OutboxKind::Transfer as i64 {
                            OutboxKind::Transfer
                        } else {
                            OutboxKind::Envelope
                        },
                        filing_id: r.get(2)?,
                        recipient: r.get(3)?,
                        record_key: r.get(4)?,
                        envelope: r.get(5)?,
                        attempts: r.get(6)?,
                    })
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(Error::store("cannot read the outbox"))?;
            Ok(rows)
        })
    }

    pub fn outbox_len(&self) -> Result<i64> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
                .map_err(Error::store("cannot count the outbox"))
        })
    }

    /// A transfer went out whole: wait for its receipt until `next_attempt_at_ms`.
    pub fn transfer_published(&self, row: &OutboxRow, next_attempt_at_ms: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at_ms = ?2 WHERE id = ?1",
                params![row.id, next_attempt_at_ms],
            )
            .map_err(Error::store("cannot update the outbox"))?;
            if let Some(filing_id) = row.filing_id {
                tx.execute(
                    "UPDATE filings SET status = ?2 WHERE id = ?1 AND status = ?3",
                    params![
                        filing_id,
                        FilingStatus::Sent as i64,
                        FilingStatus::Registered as i64
                    ],
                )
                .map_err(Error::store("cannot update the filing"))?;
            }
            Ok(())
        })
    }

    pub fn outbox_retry_at(&self, id: i64, next_attempt_at_ms: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE outbox SET next_attempt_at_ms = ?2 WHERE id = ?1",
                params![id, next_attempt_at_ms],
            )
            .map(drop)
            .map_err(Error::store("cannot update the outbox"))
        })
    }

    pub fn outbox_remove(&self, id: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM outbox WHERE id = ?1", [id])
                .map(drop)
                .map_err(Error::store("cannot update the outbox"))
        })
    }

    // ---- inbox -------------------------------------------------------------

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
        self.read(|c| {
            c.query_row(
                "SELECT 1 FROM processed_messages WHERE message_id = ?1",
                [message_id],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(Error::store("cannot read processed messages"))
        })
    }

    pub fn partial(&self, transfer_id: &str, index: u32) -> Result<Option<Partial>> {
        self.read(|c| {
            c.query_row(
                "SELECT sender, next_seq, bytes FROM partial_documents WHERE transfer_id = ?1 AND idx = ?2",
                params![transfer_id, index],
                |r| Ok(Partial { sender: r.get(0)?, next_seq: r.get(1)?, bytes: r.get(2)? }),
            )
            .optional()
            .map_err(Error::store("cannot read partial documents"))
        })
    }

    /// Records a consumed record's position (and message id) with an effect,
    /// in one transaction. The effect runs only if the message id is new.
    fn apply(
        &self,
        position: Position<'_>,
        message_id: Option<&str>,
        effect: impl FnOnce(&Transaction) -> Result<()>,
    ) -> Result<bool> {
        self.write(|tx| {
            let fresh = match message_id {
                Some(id) => {
                    tx.execute(
                        "INSERT OR IGNORE INTO processed_messages (message_id) VALUES (?1)",
                        [id],
                    )
                    .map_err(Error::store("cannot record the message id"))?
                        == 1
                }
                None => true,
            };
            if fresh {
                effect(tx)?;
            }
            tx.execute(
                "INSERT INTO inbox_offsets (topic, partition, next_offset) VALUES (?1, ?2, ?3)
                 ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                params![position.topic, position.partition, position.offset + 1],
            )
            .map_err(Error::store("cannot record the offset"))?;
            Ok(fresh)
        })
    }

    /// A record with no effect of its own (duplicate, or dead-lettered).
    pub fn apply_nothing(&self, position: Position<'_>, message_id: Option<&str>) -> Result<()> {
        self.apply(position, message_id, |_| Ok(())).map(drop)
    }

    /// A chunk was written durably to its partial file.
    pub fn apply_chunk(
        &self,
        position: Position<'_>,
        message_id: &str,
        transfer_id: &str,
        index: u32,
        partial: &Partial,
    ) -> Result<()> {
        self.apply(position, Some(message_id), |tx| {
            tx.execute(
                "INSERT INTO partial_documents (transfer_id, idx, sender, next_seq, bytes) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (transfer_id, idx) DO UPDATE SET next_seq = excluded.next_seq, bytes = excluded.bytes",
                params![transfer_id, index, partial.sender, partial.next_seq, partial.bytes],
            )
            .map(drop)
            .map_err(Error::store("cannot record a chunk"))
        })
        .map(drop)
    }

    /// Forgets a transfer's partial documents, so a re-send starts afresh.
    pub fn discard_partials(&self, transfer_id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM partial_documents WHERE transfer_id = ?1",
                [transfer_id],
            )
            .map(drop)
            .map_err(Error::store("cannot discard partial documents"))
        })
    }

    /// A verified transfer becomes an inbound filing, with its receipt queued
    /// for the origin, in one transaction. Returns the new filing's id.
    pub fn apply_delivery(
        &self,
        position: Position<'_>,
        message_id: &str,
        filing: &NewFiling,
        receipt: impl FnOnce(&str) -> OutgoingReceipt,
    ) -> Result<Option<i64>> {
        let mut inserted = None;
        self.apply(position, Some(message_id), |tx| {
            let (filing_id, registry_number) = insert_filing(tx, &self.institution, filing)?;
            let receipt = receipt(&registry_number);
            tx.execute(
                "INSERT INTO receipts (transfer_id, filing_id, signer, envelope, received_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![filing.transfer_id, filing_id, receipt.signer, receipt.envelope, receipt.received_at_ms],
            )
            .map_err(Error::store("cannot store the receipt"))?;
            queue_envelope(tx, &receipt.recipient, &filing.transfer_id, &receipt.envelope)?;
            tx.execute("DELETE FROM partial_documents WHERE transfer_id = ?1", [&filing.transfer_id])
                .map_err(Error::store("cannot discard partial documents"))?;
            inserted = Some(filing_id);
            Ok(())
        })?;
        Ok(inserted)
    }

    /// A transfer this node already holds was sent again: its sender has not
    /// seen the receipt, so queue the stored one once more.
    pub fn apply_receipt_resend(
        &self,
        position: Position<'_>,
        message_id: &str,
        transfer_id: &str,
        recipient: &str,
    ) -> Result<()> {
        self.apply(position, Some(message_id), |tx| {
            let envelope: Vec<u8> = tx
                .query_row(
                    "SELECT envelope FROM receipts WHERE transfer_id = ?1",
                    [transfer_id],
                    |r| r.get(0),
                )
                .map_err(Error::store("cannot read the receipt"))?;
            queue_envelope(tx, recipient, transfer_id, &envelope)
        })
        .map(drop)
    }

    /// A verified receipt for one of our transfers: store it, mark the filing
    /// DELIVERED and end its outbox entry.
    pub fn apply_receipt(
        &self,
        position: Position<'_>,
        message_id: &str,
        filing_id: i64,
        receipt: &StoredReceipt,
    ) -> Result<()> {
        self.apply(position, Some(message_id), |tx| {
            let stored = tx
                .execute(
                    "INSERT OR IGNORE INTO receipts (transfer_id, filing_id, signer, envelope, received_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![receipt.transfer_id, filing_id, receipt.signer, receipt.envelope, receipt.received_at_ms],
                )
                .map_err(Error::store("cannot store the receipt"))?;
            if stored == 1 {
                tx.execute(
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
            tx.execute(
                "DELETE FROM outbox WHERE kind = ?1 AND filing_id = ?2",
                params![OutboxKind::Transfer as i64, filing_id],
            )
            .map_err(Error::store("cannot update the outbox"))?;
            Ok(())
        })
        .map(drop)
    }
}

fn queue_envelope(tx: &Transaction, recipient: &str, key: &str, envelope: &[u8]) -> Result<()> {
    tx.execute(
        "INSERT INTO outbox (kind, recipient, record_key, envelope) VALUES (?1, ?2, ?3, ?4)",
        params![OutboxKind::Envelope as i64, recipient, key, envelope],
    )
    .map(drop)
    .map_err(Error::store("cannot queue an envelope"))
}

fn insert_filing(tx: &Transaction, institution: &str, filing: &NewFiling) -> Result<(i64, String)> {
    let year = crate::ids::year_of(filing.registered_at_ms.max(ecointegra_broker::now_ms()));
    let counter = format!("registry-{year}");
    let sequence: i64 = tx
        .query_row(
            "INSERT INTO counters (name, value) VALUES (?1, 1)
             ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
            [&counter],
            |r| r.get(0),
        )
        .map_err(Error::store("cannot number the filing"))?;
    let registry_number = crate::ids::registry_number(institution, year, sequence);
    tx.execute(
        "INSERT INTO filings (tracking_code, verification_code, transfer_id, direction, status, origin,
            destination, subject, sender_party, folio_count, registered_at_ms, delivered_at_ms,
            registry_number, origin_registry_number)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
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
        ],
    )
    .map_err(Error::store("cannot insert the filing"))?;
    let filing_id = tx.last_insert_rowid();
    for doc in &filing.documents {
        tx.execute(
            "INSERT INTO documents (filing_id, idx, name, media_type, size, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![filing_id, doc.index, doc.name, doc.media_type, doc.size as i64, doc.sha256],
        )
        .map_err(Error::store("cannot insert a document"))?;
    }
    Ok((filing_id, registry_number))
}

const FILING_COLUMNS: &str = "id, tracking_code, verification_code, transfer_id, direction, status, origin,
    destination, subject, sender_party, folio_count, registered_at_ms, delivered_at_ms, registry_number,
    origin_registry_number";

fn query_filing(c: &Connection, condition: &str, value: &str) -> Result<Option<FilingRow>> {
    Ok(query_filings(c, condition, [value])?.into_iter().next())
}

fn query_filings(
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
                registry_number: r.get(13)?,
                origin_registry_number: r.get(14)?,
                documents: Vec::new(),
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(Error::store("cannot read filings"))?;
    let mut docs = c
        .prepare_cached("SELECT idx, name, media_type, size, sha256 FROM documents WHERE filing_id = ?1 ORDER BY idx")
        .map_err(Error::store("cannot read documents"))?;
    for filing in &mut filings {
        filing.documents = docs
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
