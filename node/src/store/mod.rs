//! The node's embedded store: SQLite in WAL mode, one file.
//!
//! Every effect of an accepted submission or of a consumed Kafka record is one
//! transaction here. For consumed records the same transaction records the
//! message id (so a duplicate is a no-op) and the next offset to read (so a
//! restart resumes exactly where the effects end).
//!
//! The schema is a list of numbered [`migrations`], applied when the store opens.

pub mod audit;
pub mod batched;
pub mod blobs;
pub mod dead_letters;
pub mod direct;
pub mod directory;
pub mod filings;
pub mod group_commit;
pub mod inbox;
pub mod migrations;
pub mod notifications;
pub mod ops;
pub mod outbox;
pub mod receipts;
pub mod sessions;
pub mod sgd;
pub mod traces;
pub mod tracking;

pub(crate) use filings::{filing_by_transfer, insert_filing, query_filings, transfer_known};
pub use filings::{held_filing, set_received, set_status};
pub(crate) use inbox::{is_processed, partial};
pub use ops::OutboxEntry;
pub(crate) use outbox::queue_envelope;
pub(crate) use receipts::insert_receipt;
pub(crate) use tracking::advance_clock;

use crate::error::{Error, Result};
use crate::store::group_commit::Writer;
use ecointegra_broker::envelope::Sealer;
use ecointegra_proto::v1::{
    Direction, FilingStatus, MessageType, Party, TrackingEvent, TransferKind,
};
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

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
#[derive(Debug, Clone, Default)]
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
    /// PIDE's fields, for a filing an SGD handed in (or one delivered to
    /// this institution's SGD, once it has a CUO).
    pub sgd: Option<ecointegra_proto::v1::SgdDocument>,
}

impl NewFiling {
    /// The CUO of a filing that came from or went to an SGD; empty otherwise.
    pub fn cuo(&self) -> &str {
        self.sgd.as_ref().map_or("", |s| s.cuo.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct FilingRow {
    pub id: i64,
    pub registry_number: String,
    pub internal_registry_number: String,
    pub office: String,
    pub data: NewFiling,
}

impl FilingRow {
    /// The filing as the gRPC API and the stored idempotent answers show it.
    pub fn to_proto(&self) -> ecointegra_proto::v1::Filing {
        let row = self;
        ecointegra_proto::v1::Filing {
            tracking_code: row.tracking_code.clone(),
            transfer_id: row.transfer_id.clone(),
            direction: row.direction as i32,
            status: row.status as i32,
            origin: row.origin.clone(),
            destination: row.destination.clone(),
            subject: row.subject.clone(),
            sender_party: Some(row.sender_party.clone()),
            folio_count: row.folio_count,
            documents: row.documents.iter().map(DocumentRow::to_proto).collect(),
            registered_at_ms: row.registered_at_ms,
            delivered_at_ms: row.delivered_at_ms,
            registry_number: row.registry_number.clone(),
            inbox_cursor: if row.direction == ecointegra_proto::v1::Direction::Inbound {
                row.id as u64
            } else {
                0
            },
            kind: row.kind as i32,
            filing_type: row.filing_type.clone(),
            due_date: row.due_date.clone(),
            internal_registry_number: row.internal_registry_number.clone(),
            office: row.office.clone(),
            note: row.note.clone(),
            hop: row.hop,
            filed_at: row.filed_at.clone(),
            copies: Vec::new(),
            sgd: row.sgd.clone(),
        }
    }

    /// This row as one of a filing's copies at this node.
    pub fn to_copy(&self) -> ecointegra_proto::v1::FilingCopy {
        ecointegra_proto::v1::FilingCopy {
            transfer_id: self.transfer_id.clone(),
            direction: self.direction as i32,
            hop: self.hop,
            kind: self.kind as i32,
            status: self.status as i32,
            counterpart: match self.direction {
                Direction::Inbound => self.origin.clone(),
                _ => self.destination.clone(),
            },
        }
    }
}

impl DocumentRow {
    /// The document as the gRPC API shows it.
    pub fn to_proto(&self) -> ecointegra_proto::v1::StoredDocument {
        let row = self;
        ecointegra_proto::v1::StoredDocument {
            index: row.index,
            name: row.name.clone(),
            media_type: row.media_type.clone(),
            size: row.size,
            sha256: hex::encode(&row.sha256),
        }
    }
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
    /// Full sends of a transfer (chunks and manifest) since it was queued or
    /// last re-sent by hand.
    pub full_sends: u32,
    /// Whether a transfer's last publication was a manifest-only probe.
    pub probed: bool,
    /// Documents of a transfer whose chunks all went out while they were
    /// uploaded: its first send leaves them out.
    pub chunks_out: ChunksOut,
}

/// The documents of a transfer all of whose chunks went out while they were
/// uploaded (cut-through), and the chunk size they were cut at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunksOut {
    pub chunk_size: u32,
    pub documents: Vec<u32>,
}

impl ChunksOut {
    /// The chunk size the transfer's first send must use: the one its
    /// documents were cut at, if any went out, whatever `configured` is now.
    pub fn chunk_size_or(&self, configured: u32) -> u32 {
        if self.documents.is_empty() || self.chunk_size == 0 {
            configured
        } else {
            self.chunk_size
        }
    }
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
    /// Who acted (see `TrackingEvent.actor`); empty for the node itself.
    pub actor: &'a str,
    pub holder: &'a str,
    pub verifier: Vec<u8>,
    pub due_date: &'a str,
    pub kind: TransferKind,
    pub counterpart: &'a str,
    /// The logical clock of what caused this step elsewhere (0 if nothing).
    pub after_seq: u64,
    /// On the registration of a filing an SGD handed in: its CUO.
    pub cuo: &'a str,
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
    /// The institution's offset from UTC in minutes: registry numbers take
    /// their year from its clock.
    utc_offset_minutes: i32,
    /// Who is told of which steps ([`notifications`]).
    notify: Arc<notifications::Rules>,
}

/// Page size of a new store. A filing's commit touches one leaf page in each
/// of some twenty tables and indexes, and the WAL takes each of them whole:
/// at SQLite's default 4 KiB a 1 KiB filing wrote 381 KiB to disk, at 1 KiB
/// 226 KiB (bench, 1 KiB filings). A store keeps the page size it was created
/// with; this applies only to one created from now on.
const PAGE_SIZE: i64 = 1024;

/// Pages the WAL may hold before a commit copies them into the database
/// (SQLite's default is 1,000). The same hot index pages are rewritten by
/// every commit; checkpointing less often copies each of them once for many
/// commits. Written per 1 KiB filing with 1 KiB pages: 226 KiB at 1,000,
/// 154 at 10,000, 127 at 40,000 (against 145 in the same runs at 10,000).
/// The WAL file grows to about this many pages (41 MiB) and is reused; a
/// crash's recovery reads it once.
const WAL_AUTOCHECKPOINT: i64 = 40_000;

/// Bytes of WAL file kept after a checkpoint resets it: above the size the
/// checkpoint threshold reaches, so the file is not cut and grown again
/// every time, and a burst that grew it further does not keep the space.
const JOURNAL_SIZE_LIMIT: i64 = 48 << 20;

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    // Before the journal mode: once the file has a header (WAL writes one)
    // the page size is fixed.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Sorts and temporary b-trees in memory: on disk each was a file
    // created and unlinked under /var/tmp, about ten a second per node.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // A statement with a bound LIMIT (the outbox's, the inbox's pages) was
    // otherwise parsed again every time it was bound: SQLite reads a bound
    // limit while planning unless the plan is to stay stable.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

impl Store {
    pub fn open(path: &Path, sealer: Sealer, tracking_topic: String) -> Result<Self> {
        let institution = sealer.institution().to_owned();
        // Created for the node's user only; SQLite gives its WAL and shared
        // memory files the database file's permissions.
        blobs::private_file()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(Error::io(format!("cannot create {}", path.display())))?;
        let mut writer = open_connection(path)
            .map_err(Error::store(format!("cannot open {}", path.display())))?;
        migrations::apply(&mut writer, path)?;
        let reader = open_connection(path).map_err(Error::store("cannot open a reader"))?;
        Ok(Self {
            writer: Arc::new(Writer::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            institution,
            sealer,
            tracking_topic,
            utc_offset_minutes: 0,
            notify: Arc::default(),
        })
    }

    /// Queues notifications by `rules` from now on.
    pub fn with_notifications(mut self, rules: notifications::Rules) -> Self {
        self.notify = Arc::new(rules);
        self
    }

    /// Numbers registries by the year at `minutes` from UTC (the sector's
    /// clock, `deadlines.utc_offset_minutes`; UTC until set).
    pub fn with_utc_offset(mut self, minutes: i32) -> Self {
        self.utc_offset_minutes = minutes;
        self
    }

    /// The institution's offset from UTC in minutes.
    pub fn utc_offset_minutes(&self) -> i32 {
        self.utc_offset_minutes
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
            .map_err(Error::task("a store task failed"))?
    }

    /// Runs `f` as one atomic effect and returns once it is durable. Effects
    /// of concurrent writers share one commit (see [`crate::store::group_commit`]).
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.writer.write(f)
    }

    /// Runs `effect` on each of `items`, each all or nothing in a savepoint
    /// of its own, all in one write: one answer per item, in their order. If
    /// the write's commit fails, every item gets that error (`what` names
    /// it).
    pub(crate) fn write_each<I, T>(
        &self,
        items: Vec<I>,
        what: &str,
        mut effect: impl FnMut(&Connection, I) -> Result<T>,
    ) -> Vec<Result<T>> {
        let count = items.len();
        let written = self.write(|tx| {
            items
                .into_iter()
                .map(|item| {
                    begin_record(tx)?;
                    let done = effect(tx, item);
                    match done {
                        Ok(_) => end_record(tx)?,
                        Err(_) => undo_record(tx)?,
                    }
                    Ok(done)
                })
                .collect::<Result<Vec<_>>>()
        });
        written.unwrap_or_else(|error| {
            let message = error.to_string();
            (0..count)
                .map(|_| {
                    Err(Error::Io {
                        context: format!("store: cannot {what}"),
                        source: std::io::Error::other(message.clone()),
                    })
                })
                .collect()
        })
    }

    /// Transactions committed and the effects they held, since the start.
    pub fn commits(&self) -> (u64, u64) {
        self.writer.commits()
    }

    /// Tells `observer` how long each commit takes from now on.
    pub fn observe_commits(&self, observer: impl Fn(std::time::Duration) + Send + Sync + 'static) {
        self.writer.observe_commits(observer)
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn)
    }

    pub fn institution(&self) -> &str {
        &self.institution
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

/// Executes a statement through the connection's statement cache: the hot
/// paths run the same few statements thousands of times a second.
pub(crate) fn exec(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}

/// One row of a query, on a cached statement: every statement of the store
/// is parsed once per connection (an uncached one was parsed on every call,
/// about 4% of a node's CPU at 1 KiB filings).
pub(crate) fn row<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(params, f)
}

/// Runs a transaction control statement (BEGIN, COMMIT, a savepoint's)
/// on a cached statement: these run several times per filing, and
/// `execute_batch` parsed them every time.
pub(crate) fn control(c: &Connection, sql: &str) -> rusqlite::Result<()> {
    exec(c, sql, []).map(drop)
}

/// Opens a savepoint for one consumed record inside its batch's transaction.
pub fn begin_record(c: &Connection) -> Result<()> {
    control(c, "SAVEPOINT record").map_err(Error::store("cannot begin a record"))
}

/// Keeps the record's effect in the batch.
pub fn end_record(c: &Connection) -> Result<()> {
    control(c, "RELEASE record").map_err(Error::store("cannot end a record"))
}

/// Undoes the record's effect, leaving the rest of the batch.
pub fn undo_record(c: &Connection) -> Result<()> {
    c.execute_batch("ROLLBACK TO record; RELEASE record")
        .map_err(Error::store("cannot roll a record back"))
}

/// A new store of institution `oefa` in a new temporary directory (for unit
/// tests), and that directory.
#[cfg(test)]
pub(crate) fn scratch(name: &str) -> (Store, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "ecointegra-{name}-{}-{}",
        std::process::id(),
        crate::ids::random_code(8)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let sealer = Sealer::new("oefa", ecointegra_broker::keys::SigningIdentity::generate());
    let store = Store::open(&dir.join("node.sqlite3"), sealer, "eco.tracking".into()).unwrap();
    (store, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(target: &str) -> crate::audit::Entry {
        crate::audit::Entry {
            id: 0,
            at_ms: 1,
            actor: "dms".into(),
            role: "dms".into(),
            address: String::new(),
            action: "test".into(),
            target: target.into(),
            outcome: "ok".into(),
        }
    }

    /// The outbox holds every transfer awaiting its receipt (thousands while
    /// a destination is away): what the relay reads at every wake-up and
    /// what each submission and receipt change in it are found by index,
    /// never by going through all of it.
    #[test]
    fn the_outbox_is_read_by_index_on_the_transfer_path() {
        assert_read_by_index(
            "outbox-plans",
            &[
                outbox::DUE,
                outbox::CHUNKS_OUT,
                receipts::UNACKNOWLEDGED_SEQ,
                receipts::FORGET_TRANSFER,
            ],
        );
    }

    #[test]
    fn small_documents_are_found_by_index() {
        assert_read_by_index("kept-plans", &[blobs::KEEP, blobs::KEPT_BYTES]);
    }

    #[test]
    fn a_filings_steps_are_found_by_index() {
        assert_read_by_index(
            "timeline-plans",
            &[
                tracking::TIMELINE_OF,
                tracking::CLOCK,
                tracking::STORE_EVENT,
                tracking::SIGNED_HERE,
            ],
        );
    }

    /// Fails if a statement's query plan scans a table or sorts in a
    /// temporary b-tree: its cost would grow with what the store holds.
    fn assert_read_by_index(name: &str, statements: &[&str]) {
        let (store, dir) = scratch(name);
        store
            .read(|c| {
                for sql in statements {
                    let mut plan = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                    let unbound =
                        std::iter::repeat_n(rusqlite::types::Null, plan.parameter_count());
                    let steps: Vec<String> = plan
                        .query_map(rusqlite::params_from_iter(unbound), |r| r.get(3))
                        .unwrap()
                        .collect::<rusqlite::Result<_>>()
                        .unwrap();
                    assert!(
                        steps
                            .iter()
                            // (`SCAN CONSTANT ROW`: the one row of a SELECT without FROM.)
                            .all(|s| (!s.starts_with("SCAN") || s == "SCAN CONSTANT ROW")
                                && !s.contains("TEMP B-TREE")),
                        "{sql}\n{steps:#?}"
                    );
                }
                Ok(())
            })
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_item_of_a_write_is_kept_or_undone_by_itself() {
        let (store, dir) = scratch("write-each");
        let answers = store.write_each(vec!["a", "b", "c"], "test", |tx, target| {
            audit::insert(tx, &entry(target))?;
            if target == "b" {
                return Err(Error::NotFound("b, on purpose".into()));
            }
            Ok(target.len())
        });
        assert!(matches!(answers[0], Ok(1)));
        assert!(matches!(&answers[1], Err(Error::NotFound(what)) if what == "b, on purpose"));
        assert!(matches!(answers[2], Ok(1)));
        let kept: Vec<String> = store
            .audit_log(0, 0, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.target)
            .collect();
        assert_eq!(
            kept,
            ["a", "c"],
            "the failed item's row is undone, the others' kept"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
