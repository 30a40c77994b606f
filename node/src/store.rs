//! The node's embedded store: SQLite in WAL mode, one file.
//!
//! Every effect of an accepted submission or of a consumed Kafka record is one
//! transaction here. For consumed records the same transaction records the
//! message id (so a duplicate is a no-op) and the next offset to read (so a
//! restart resumes exactly where the effects end).

use crate::error::{Error, Result};
use crate::group_commit::Writer;
use ecointegra_broker::envelope::Sealer;
use ecointegra_proto::v1::{
    Direction, FilingStatus, MessageType, Party, TrackingEvent, TransferKind,
};
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
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
    origin_registry_number TEXT NOT NULL DEFAULT '',
    kind INTEGER NOT NULL,
    related_transfer_id TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    hop INTEGER NOT NULL,
    filing_type TEXT NOT NULL DEFAULT '',
    due_date TEXT NOT NULL DEFAULT '',
    internal_registry_number TEXT NOT NULL DEFAULT '',
    office TEXT NOT NULL DEFAULT '',
    filed_at TEXT NOT NULL,
    previous_receipt_sha256 BLOB NOT NULL DEFAULT x''
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
    topic TEXT NOT NULL DEFAULT '',
    record_key TEXT NOT NULL,
    envelope BLOB,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS receipts (
    transfer_id TEXT PRIMARY KEY,
    tracking_code TEXT NOT NULL,
    hop INTEGER NOT NULL,
    signer TEXT NOT NULL,
    envelope BLOB NOT NULL,
    sha256 BLOB NOT NULL,
    received_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS receipts_by_tracking ON receipts(tracking_code, hop);
CREATE TABLE IF NOT EXISTS actions (
    action_id TEXT PRIMARY KEY,
    response BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tracking_events (
    event_id TEXT PRIMARY KEY,
    tracking_code TEXT NOT NULL,
    seq INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    institution TEXT NOT NULL,
    event BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tracking_by_code ON tracking_events(tracking_code, seq);
CREATE TABLE IF NOT EXISTS directory_entries (
    institution_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    signed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tracking_clocks (
    tracking_code TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
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

/// A filing as stored; [`FilingRow`] adds what the store assigns.
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
    pub kind: TransferKind,
    pub related_transfer_id: String,
    pub note: String,
    pub hop: u32,
    pub filing_type: String,
    pub due_date: String,
    /// The institution where the citizen filed.
    pub filed_at: String,
    pub previous_receipt_sha256: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct FilingRow {
    pub id: i64,
    pub registry_number: String,
    pub internal_registry_number: String,
    pub office: String,
    pub data: NewFiling,
}

impl std::ops::Deref for FilingRow {
    type Target = NewFiling;
    fn deref(&self) -> &NewFiling {
        &self.data
    }
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
    /// Where an envelope entry goes.
    pub topic: String,
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

/// A signed receipt (cargo) this node issued or holds.
#[derive(Debug, Clone)]
pub struct ReceiptRow {
    pub transfer_id: String,
    pub tracking_code: String,
    pub hop: u32,
    pub signer: String,
    /// The signed envelope, exactly as sent.
    pub envelope: Vec<u8>,
    pub received_at_ms: i64,
}

/// A status change to publish on the tracking topic, in the transaction that
/// makes it.
#[derive(Debug, Clone)]
pub struct Step<'a> {
    pub tracking_code: &'a str,
    /// Unique per step at this institution (e.g. `<transfer id>/DELIVERED`).
    pub key: String,
    pub status: FilingStatus,
    pub hop: u32,
    pub actor_role: &'a str,
    pub holder: &'a str,
    pub verifier: Vec<u8>,
    pub due_date: &'a str,
    pub kind: TransferKind,
    pub counterpart: &'a str,
    /// The logical clock of what caused this step elsewhere (0 if nothing).
    pub after_seq: u64,
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
    writer: Arc<Writer>,
    reader: Arc<Mutex<Connection>>,
    institution: String,
    /// Signs the tracking events queued with each status change.
    sealer: Sealer,
    tracking_topic: String,
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

impl Store {
    pub fn open(path: &Path, sealer: Sealer, tracking_topic: String) -> Result<Self> {
        let institution = sealer.institution().to_owned();
        let writer = open_connection(path)
            .map_err(Error::store(format!("cannot open {}", path.display())))?;
        writer
            .execute_batch(SCHEMA)
            .map_err(Error::store("cannot create the schema"))?;
        crate::ops::create_schema(&writer)?;
        let reader = open_connection(path).map_err(Error::store("cannot open a reader"))?;
        Ok(Self {
            writer: Arc::new(Writer::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            institution,
            sealer,
            tracking_topic,
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

    /// Runs `f` as one atomic effect and returns once it is durable. Effects
    /// of concurrent writers share one commit (see [`crate::group_commit`]).
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.writer.write(f)
    }

    /// Transactions committed and the effects they held, since the start.
    pub fn commits(&self) -> (u64, u64) {
        self.writer.commits()
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
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
                    .query_row(
                        "SELECT response FROM idempotency WHERE key = ?1",
                        [key],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(Error::store("cannot read idempotency keys"))?;
                if let Some(existing) = existing {
                    return Ok(Submitted::Existing(existing));
                }
            }
            let (filing_id, registry_number) = self.insert_outbound(tx, filing, "system")?;
            if let Some(key) = idempotency_key {
                exec(
                    tx,
                    "INSERT INTO idempotency (key, filing_id, response) VALUES (?1, ?2, ?3)",
                    params![key, filing_id, response(&registry_number)],
                )
                .map_err(Error::store("cannot record the idempotency key"))?;
            }
            Ok(Submitted::New {
                filing_id,
                registry_number,
            })
        })
    }

    /// Stores an outbound filing with its outbox entry and its REGISTERED step.
    pub(crate) fn insert_outbound(
        &self,
        tx: &Connection,
        filing: &NewFiling,
        actor_role: &str,
    ) -> Result<(i64, String)> {
        let (filing_id, registry_number) = insert_filing(tx, &self.institution, filing)?;
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
                crate::ids::verifier(&filing.tracking_code, &filing.verification_code)
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
                    actor_role,
                    holder: &self.institution,
                    verifier,
                    due_date: "",
                    kind: filing.kind,
                    counterpart: &filing.destination,
                    after_seq: 0,
                },
            )?;
        }
        Ok((filing_id, registry_number))
    }

    /// Records a step in this node's own timeline and queues its signed
    /// tracking event for the sector. Returns the step's logical clock.
    pub(crate) fn emit(&self, tx: &Connection, step: Step<'_>) -> Result<u64> {
        let known = clock(tx, step.tracking_code)?;
        let seq = known.max(step.after_seq) + 1;
        let event = TrackingEvent {
            event_id: format!("{}/{}", self.institution, step.key),
            tracking_code: step.tracking_code.to_owned(),
            institution: self.institution.clone(),
            status: step.status as i32,
            timestamp_ms: ecointegra_broker::now_ms(),
            hop: step.hop,
            actor_role: step.actor_role.to_owned(),
            holder: step.holder.to_owned(),
            seq,
            verifier: step.verifier,
            due_date: step.due_date.to_owned(),
            transfer_kind: step.kind as i32,
            counterpart: step.counterpart.to_owned(),
        };
        insert_event(tx, &event)?;
        let sealed = self.sealer.seal(
            event.event_id.clone(),
            MessageType::TrackingEvent,
            crate::tracking::BROADCAST,
            event.encode_to_vec(),
        );
        queue_envelope(
            tx,
            &self.tracking_topic,
            "*",
            step.tracking_code,
            &sealed.encode_to_vec(),
        )?;
        Ok(seq)
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
            "tracking_code = ?1 ORDER BY hop, received_at_ms",
            tracking_code,
        )
    }

    pub fn institution(&self) -> &str {
        &self.institution
    }

    /// The newest record of a filing in one direction.
    pub fn latest(&self, tracking_code: &str, direction: Direction) -> Result<Option<FilingRow>> {
        self.read(|c| {
            Ok(query_filings(
                c,
                "tracking_code = ?1 AND direction = ?2 ORDER BY id DESC LIMIT 1",
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
                "tracking_code = ?1 AND direction = ?2 AND kind = ?3 ORDER BY id DESC LIMIT 1",
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

    /// The timeline of a filing as this node knows it, in order.
    pub fn timeline(&self, tracking_code: &str) -> Result<Vec<TrackingEvent>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT event FROM tracking_events WHERE tracking_code = ?1
                     ORDER BY seq, timestamp_ms, institution, event_id",
                )
                .map_err(Error::store("cannot read the timeline"))?;
            let events = stmt
                .query_map([tracking_code], |r| r.get::<_, Vec<u8>>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(Error::store("cannot read the timeline"))?;
            Ok(events
                .iter()
                .filter_map(|bytes| TrackingEvent::decode(bytes.as_slice()).ok())
                .collect())
        })
    }

    /// The logical clock of a filing's timeline here.
    pub fn tracking_seq(&self, tracking_code: &str) -> Result<u64> {
        self.read(|c| clock(c, tracking_code))
    }

    // ---- outbox ------------------------------------------------------------

    /// Outbox entries whose time has come.
    pub fn due_outbox(&self, now_ms: i64, limit: u32) -> Result<Vec<OutboxRow>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, kind, filing_id, recipient, record_key, envelope, attempts, topic FROM outbox
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
                        topic: r.get(7)?,
                    })
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(Error::store("cannot read the outbox"))?;
            Ok(rows)
        })
    }

    /// A transfer went out whole: wait for its receipt until `next_attempt_at_ms`.
    pub fn transfer_published(&self, row: &OutboxRow, next_attempt_at_ms: i64) -> Result<()> {
        self.write(|tx| {
            exec(
                tx,
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at_ms = ?2 WHERE id = ?1",
                params![row.id, next_attempt_at_ms],
            )
            .map_err(Error::store("cannot update the outbox"))?;
            if let Some(filing_id) = row.filing_id {
                let changed = tx
                    .execute(
                        "UPDATE filings SET status = ?2 WHERE id = ?1 AND status = ?3",
                        params![
                            filing_id,
                            FilingStatus::Sent as i64,
                            FilingStatus::Registered as i64
                        ],
                    )
                    .map_err(Error::store("cannot update the filing"))?;
                let filing = query_filings(tx, "id = ?1", [filing_id])?
                    .into_iter()
                    .next();
                if let Some(f) = filing.filter(|f| changed == 1 && f.kind != TransferKind::Answer) {
                    self.emit(
                        tx,
                        Step {
                            tracking_code: &f.tracking_code,
                            key: format!("{}/SENT", f.transfer_id),
                            status: FilingStatus::Sent,
                            hop: f.hop,
                            actor_role: "node",
                            holder: &self.institution,
                            verifier: Vec::new(),
                            due_date: "",
                            kind: f.kind,
                            counterpart: &f.destination,
                            after_seq: 0,
                        },
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Publications that failed: retry them at `next_attempt_at_ms`.
    pub fn outbox_retry_at(&self, ids: &[i64], next_attempt_at_ms: i64) -> Result<()> {
        self.envelopes_published(&[], ids, next_attempt_at_ms)
    }

    /// Envelopes Kafka acknowledged leave the outbox; those it did not are
    /// retried at `retry_at_ms`. One write for a whole batch.
    pub fn envelopes_published(
        &self,
        published: &[i64],
        failed: &[i64],
        retry_at_ms: i64,
    ) -> Result<()> {
        if published.is_empty() && failed.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            for id in published {
                exec(tx, "DELETE FROM outbox WHERE id = ?1", [id])
                    .map_err(Error::store("cannot update the outbox"))?;
            }
            for id in failed {
                exec(
                    tx,
                    "UPDATE outbox SET next_attempt_at_ms = ?2 WHERE id = ?1",
                    params![id, retry_at_ms],
                )
                .map_err(Error::store("cannot update the outbox"))?;
            }
            Ok(())
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
        self.read(|c| is_processed(c, message_id))
    }

    pub fn partial(&self, transfer_id: &str, index: u32) -> Result<Option<Partial>> {
        self.read(|c| partial(c, transfer_id, index))
    }

    /// Records a consumed record's position (and message id) with an effect,
    /// as one atomic step of the caller's transaction `c`. The effect runs
    /// only if the message id is new.
    fn apply(
        &self,
        c: &Connection,
        position: Position<'_>,
        message_id: Option<&str>,
        effect: impl FnOnce(&Connection) -> Result<()>,
    ) -> Result<bool> {
        let fresh = match message_id {
            Some(id) => {
                exec(
                    c,
                    "INSERT OR IGNORE INTO processed_messages (message_id) VALUES (?1)",
                    [id],
                )
                .map_err(Error::store("cannot record the message id"))?
                    == 1
            }
            None => true,
        };
        if fresh {
            effect(c)?;
        }
        exec(
            c,
            "INSERT INTO inbox_offsets (topic, partition, next_offset) VALUES (?1, ?2, ?3)
             ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
            params![position.topic, position.partition, position.offset + 1],
        )
        .map_err(Error::store("cannot record the offset"))?;
        Ok(fresh)
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
            exec(tx, "INSERT INTO partial_documents (transfer_id, idx, sender, next_seq, bytes) VALUES (?1, ?2, ?3, ?4, ?5)
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
            exec(
                tx,
                "DELETE FROM partial_documents WHERE transfer_id = ?1",
                [transfer_id],
            )
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
            let (filing_id, registry_number) = insert_filing(tx, &self.institution, filing)?;
            for prior in &delivery.prior_receipts {
                insert_receipt(tx, prior)?;
            }
            let receipt = (delivery.receipt)(&registry_number);
            insert_receipt(tx, &receipt)?;
            queue_envelope(tx, &delivery.reply_topic, &filing.origin, &filing.transfer_id, &receipt.envelope)?;
            exec(tx, "DELETE FROM partial_documents WHERE transfer_id = ?1", [&filing.transfer_id])
                .map_err(Error::store("cannot discard partial documents"))?;
            if filing.kind == TransferKind::Answer {
                // The answer reached the institution where the citizen filed.
                exec(tx,
                    "UPDATE filings SET status = ?3, note = ?4 WHERE id = (SELECT id FROM filings
                     WHERE tracking_code = ?1 AND direction = ?2 AND kind != ?5 ORDER BY id DESC LIMIT 1)",
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
                    holder: &self.institution,
                    verifier: Vec::new(),
                    due_date: &filing.due_date,
                    kind: filing.kind,
                    counterpart: &filing.origin,
                    after_seq: delivery.after_seq,
                },
            )?;
            inserted = Some(filing_id);
            Ok(())
        })?;
        Ok(inserted)
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
            let envelope: Vec<u8> = tx
                .query_row(
                    "SELECT envelope FROM receipts WHERE transfer_id = ?1",
                    [transfer_id],
                    |r| r.get(0),
                )
                .map_err(Error::store("cannot read the receipt"))?;
            queue_envelope(tx, topic, recipient, transfer_id, &envelope)
        })
        .map(drop)
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
                "DELETE FROM outbox WHERE kind = ?1 AND filing_id = ?2",
                params![OutboxKind::Transfer as i64, filing_id],
            )
            .map_err(Error::store("cannot update the outbox"))?;
            Ok(())
        })
        .map(drop)
    }

    /// What the destination did with one of our transfers (observed,
    /// rejected): `(status, reason)`, and the clock `(tracking code, seq)`.
    pub fn apply_notice(
        &self,
        c: &Connection,
        position: Position<'_>,
        message_id: &str,
        filing_id: i64,
        (status, reason): (FilingStatus, &str),
        tracking: (&str, u64),
    ) -> Result<()> {
        self.apply(c, position, Some(message_id), |tx| {
            exec(
                tx,
                "UPDATE filings SET status = ?2, note = ?3 WHERE id = ?1",
                params![filing_id, status as i64, reason],
            )
            .map_err(Error::store("cannot update the filing"))?;
            advance_clock(tx, tracking.0, tracking.1)
        })
        .map(drop)
    }

    /// A tracking event (another institution's, or this node's own coming
    /// back), into this node's copy of the sector timeline. The event id is
    /// unique, so a replayed event changes nothing by itself: no message id
    /// is recorded for it (six rows a filing less across two nodes).
    pub fn apply_tracking_event(
        &self,
        c: &Connection,
        position: Position<'_>,
        event: &TrackingEvent,
    ) -> Result<()> {
        self.apply(c, position, None, |tx| insert_event(tx, event).map(drop))
            .map(drop)
    }

    /// Signed directory entries learnt from the directory topic.
    pub fn directory_entries(&self) -> Result<Vec<ecointegra_proto::v1::SignedDirectoryEntry>> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT signed FROM directory_entries")
                .map_err(Error::store("cannot read directory entries"))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, Vec<u8>>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(Error::store("cannot read directory entries"))?;
            Ok(rows
                .iter()
                .filter_map(|b| {
                    ecointegra_proto::v1::SignedDirectoryEntry::decode(b.as_slice()).ok()
                })
                .collect())
        })
    }

    /// Keeps a verified, newer directory entry.
    pub fn apply_directory_entry(
        &self,
        c: &Connection,
        position: Position<'_>,
        institution_id: &str,
        version: u64,
        signed: &ecointegra_proto::v1::SignedDirectoryEntry,
    ) -> Result<()> {
        self.apply(c, position, None, |tx| {
            exec(tx,
                "INSERT INTO directory_entries (institution_id, version, signed) VALUES (?1, ?2, ?3)
                 ON CONFLICT (institution_id) DO UPDATE SET version = excluded.version, signed = excluded.signed
                 WHERE excluded.version > directory_entries.version",
                params![institution_id, version as i64, signed.encode_to_vec()],
            )
            .map(drop)
            .map_err(Error::store("cannot store a directory entry"))
        })
        .map(drop)
    }

    /// Runs a clerk action once per action id: a repeated id returns the
    /// first answer and changes nothing.
    pub fn perform_action(
        &self,
        action_id: &str,
        action: impl FnOnce(&Connection) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        self.write(|tx| {
            let done: Option<Vec<u8>> = tx
                .query_row(
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

/// Everything a verified transfer turns into at its destination.
pub struct Delivery {
    pub filing: NewFiling,
    /// Earlier receipts of the filing that came with the transfer.
    pub prior_receipts: Vec<ReceiptRow>,
    /// Builds this node's signed receipt from the registry number it assigns.
    pub receipt: Box<dyn Fn(&str) -> ReceiptRow + Send>,
    /// The sender's inbox, where the receipt goes.
    pub reply_topic: String,
    pub after_seq: u64,
}

pub(crate) fn is_processed(c: &Connection, message_id: &str) -> Result<bool> {
    c.prepare_cached("SELECT 1 FROM processed_messages WHERE message_id = ?1")
        .and_then(|mut s| s.query_row([message_id], |_| Ok(())).optional())
        .map(|r| r.is_some())
        .map_err(Error::store("cannot read processed messages"))
}

pub(crate) fn partial(c: &Connection, transfer_id: &str, index: u32) -> Result<Option<Partial>> {
    c.prepare_cached(
        "SELECT sender, next_seq, bytes FROM partial_documents WHERE transfer_id = ?1 AND idx = ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![transfer_id, index], |r| {
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

/// Stores a receipt unless one for the same transfer is there. True if new.
fn insert_receipt(tx: &Connection, receipt: &ReceiptRow) -> Result<bool> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&receipt.envelope).to_vec();
    exec(tx,
        "INSERT OR IGNORE INTO receipts (transfer_id, tracking_code, hop, signer, envelope, sha256, received_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            receipt.transfer_id,
            receipt.tracking_code,
            receipt.hop,
            receipt.signer,
            receipt.envelope,
            digest,
            receipt.received_at_ms
        ],
    )
    .map(|n| n == 1)
    .map_err(Error::store("cannot store a receipt"))
}

/// The highest step number known for a filing, from its timeline or from a
/// transfer or notice that carried another node's clock.
fn clock(c: &Connection, tracking_code: &str) -> Result<u64> {
    c.query_row(
        "SELECT MAX(COALESCE((SELECT MAX(seq) FROM tracking_events WHERE tracking_code = ?1), 0),
                    COALESCE((SELECT seq FROM tracking_clocks WHERE tracking_code = ?1), 0))",
        [tracking_code],
        |r| r.get::<_, i64>(0),
    )
    .map(|v| v as u64)
    .map_err(Error::store("cannot read the timeline"))
}

/// Learns that another node has reached step `seq` of a filing.
fn advance_clock(tx: &Connection, tracking_code: &str, seq: u64) -> Result<()> {
    exec(
        tx,
        "INSERT INTO tracking_clocks (tracking_code, seq) VALUES (?1, ?2)
         ON CONFLICT (tracking_code) DO UPDATE SET seq = MAX(seq, excluded.seq)",
        params![tracking_code, seq as i64],
    )
    .map(drop)
    .map_err(Error::store("cannot advance the timeline clock"))
}

fn insert_event(tx: &Connection, event: &TrackingEvent) -> Result<bool> {
    exec(tx,
        "INSERT OR IGNORE INTO tracking_events (event_id, tracking_code, seq, timestamp_ms, institution, event)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            event.event_id,
            event.tracking_code,
            event.seq as i64,
            event.timestamp_ms,
            event.institution,
            event.encode_to_vec()
        ],
    )
    .map(|n| n == 1)
    .map_err(Error::store("cannot store a tracking event"))
}

fn query_receipts(c: &Connection, condition: &str, value: &str) -> Result<Vec<ReceiptRow>> {
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

pub(crate) fn insert_filing(
    tx: &Connection,
    institution: &str,
    filing: &NewFiling,
) -> Result<(i64, String)> {
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
    exec(tx,
        "INSERT INTO filings (tracking_code, verification_code, transfer_id, direction, status, origin,
            destination, subject, sender_party, folio_count, registered_at_ms, delivered_at_ms,
            registry_number, origin_registry_number, kind, related_transfer_id, note, hop, filing_type,
            due_date, filed_at, previous_receipt_sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
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

const FILING_COLUMNS: &str = "id, tracking_code, verification_code, transfer_id, direction, status, origin,
    destination, subject, sender_party, folio_count, registered_at_ms, delivered_at_ms, registry_number,
    origin_registry_number, kind, related_transfer_id, note, hop, filing_type, due_date, internal_registry_number,
    office, filed_at, previous_receipt_sha256";

fn query_filing(c: &Connection, condition: &str, value: &str) -> Result<Option<FilingRow>> {
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

/// Executes a statement through the connection's statement cache: the hot
/// paths run the same few statements thousands of times a second.
pub(crate) fn exec(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}
