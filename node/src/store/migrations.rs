//! The store's schema, as numbered migrations (`rusqlite_migration`): the
//! version a store is at is SQLite's `user_version`, and every migration
//! it lacks is applied when the node starts, all in one transaction.
//!
//! Migration 1 is the schema of the releases that had no numbered migrations;
//! a store they created (version 0, every table present) is adopted as
//! version 1 without a change. A later schema change is a new file
//! `migrations/NNNN_what.sql`, appended to [`MIGRATIONS`]; an applied one is
//! never edited.

use crate::error::{Error, Result};
use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};
use std::path::Path;

/// Every migration, in order: the `n`th (from 1) takes a store to version `n`.
const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/0001_initial.sql")),
    M::up(include_str!("migrations/0002_partials_per_sender.sql")),
    M::up(include_str!("migrations/0003_resend_rounds.sql")),
    M::up(include_str!("migrations/0004_outbox_manifest_seq.sql")),
    M::up(include_str!("migrations/0005_web_sessions.sql")),
    M::up(include_str!("migrations/0006_audit_log.sql")),
    M::up(include_str!("migrations/0007_tracking_envelopes.sql")),
    M::up(include_str!("migrations/0008_notifications.sql")),
    M::up(include_str!("migrations/0009_pide.sql")),
    M::up(include_str!("migrations/0010_document_contents.sql")),
    M::up(include_str!("migrations/0011_cut_through.sql")),
    M::up(include_str!("migrations/0012_tracking_keyed_by_filing.sql")),
    M::up(include_str!("migrations/0013_cut_through_chunk_size.sql")),
    M::up(include_str!("migrations/0014_outbox_indexes.sql")),
    M::up(include_str!(
        "migrations/0015_document_contents_by_rowid.sql"
    )),
    M::up(include_str!("migrations/0016_timelines.sql")),
    M::up(include_str!(
        "migrations/0017_tracking_traces_in_timelines.sql"
    )),
];

/// The newest schema version this release knows.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// The schema version a store is at (0: created before numbered migrations,
/// or new).
pub fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Brings the store at `path` to [`LATEST`], refusing one that a newer
/// release has migrated further.
pub(crate) fn apply(conn: &mut Connection, path: &Path) -> Result<()> {
    let found = version(conn).map_err(Error::store("cannot read the schema version"))?;
    if found > LATEST {
        return Err(Error::StoreTooNew {
            path: path.to_owned(),
            found,
            known: LATEST,
        });
    }
    if found < LATEST {
        let tables: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(Error::store("cannot read the schema"))?;
        if tables > 0 {
            let copy = keep_copy(conn, path, found)?;
            tracing::info!(store = %path.display(), copy = %copy.display(), version = found,
                "Store copied before its migration.");
        }
        Migrations::from_slice(MIGRATIONS)
            .to_latest(conn)
            .map_err(|source| Error::Migration {
                path: path.to_owned(),
                from: found,
                to: LATEST,
                source,
            })?;
        tracing::info!(store = %path.display(), from = found, to = LATEST, "Store schema migrated.");
    }
    Ok(())
}

/// Copies the store, as it is before a migration, next to it:
/// `<store>.v<version>-<time>.bak` (SQLite's online backup, one consistent
/// file, for the node's user only). Going back to the release before the
/// upgrade is stopping the node and putting this file in the store's place.
fn keep_copy(conn: &Connection, path: &Path, version: u32) -> Result<std::path::PathBuf> {
    let stamp = crate::ids::format_utc(ecointegra_broker::now_ms()).replace(':', "-");
    let copy = path.with_extension(format!("sqlite3.v{version}-{stamp}.bak"));
    crate::store::blobs::private_file()
        .write(true)
        .create_new(true)
        .open(&copy)
        .map_err(Error::io(format!("cannot create {}", copy.display())))?;
    let mut target =
        Connection::open(&copy).map_err(Error::store(format!("cannot open {}", copy.display())))?;
    rusqlite::backup::Backup::new(conn, &mut target)
        .and_then(|b| b.run_to_completion(i32::MAX, std::time::Duration::ZERO, None))
        .and_then(|()| target.pragma_update(None, "journal_mode", "DELETE"))
        .map_err(Error::store(format!(
            "cannot copy the store to {} before migrating it",
            copy.display()
        )))?;
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use ecointegra_broker::envelope::Sealer;
    use ecointegra_broker::keys::SigningIdentity;
    use ecointegra_proto::v1::{DeadLetterState, Direction, FilingStatus};
    use std::path::PathBuf;

    /// A store written by the release before numbered migrations (76cee89);
    /// testdata/README.md says how, and what it holds.
    const PREVIOUS_RELEASE: &[u8] = include_bytes!("testdata/previous_release.sqlite3");

    /// A fresh directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "ecointegra-store-{name}-{}-{}",
                std::process::id(),
                crate::ids::random_code(8)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open(path: &Path) -> Result<Store> {
        let sealer = Sealer::new("oefa", SigningIdentity::generate());
        Store::open(path, sealer, "eco.tracking".into())
    }

    /// Everything a store holds: its version, its schema, every row.
    #[derive(Debug, PartialEq)]
    struct Dump {
        version: u32,
        schema: Vec<String>,
        rows: Vec<String>,
    }

    fn dump(path: &Path) -> Dump {
        let c = Connection::open(path).unwrap();
        let strings = |sql: &str| -> Vec<String> {
            let mut stmt = c.prepare(sql).unwrap();
            let columns = stmt.column_count();
            let mut out: Vec<String> = stmt
                .query_map([], |r| {
                    (0..columns)
                        .map(|i| r.get::<_, rusqlite::types::Value>(i))
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map(|values| format!("{values:?}"))
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            out.sort();
            out
        };
        let schema = strings("SELECT type, name, tbl_name, sql FROM sqlite_schema");
        let tables: Vec<String> = c
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let mut rows = Vec::new();
        for name in &tables {
            rows.extend(
                strings(&format!("SELECT * FROM \"{name}\""))
                    .into_iter()
                    .map(|row| format!("{name}: {row}")),
            );
        }
        Dump {
            version: version(&c).unwrap(),
            schema,
            rows,
        }
    }

    /// A store at `path` migrated up to `version` only, as an earlier
    /// release left it.
    fn at_version(path: &Path, version: usize) -> Connection {
        let mut conn = Connection::open(path).unwrap();
        Migrations::from_slice(&MIGRATIONS[..version])
            .to_latest(&mut conn)
            .unwrap();
        conn
    }

    #[test]
    fn the_migrations_apply_to_an_empty_store() {
        Migrations::from_slice(MIGRATIONS).validate().unwrap();
    }

    #[test]
    fn the_migrations_are_numbered_files_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/migrations");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), MIGRATIONS.len(), "{names:?}");
        for (i, name) in names.iter().enumerate() {
            assert!(name.starts_with(&format!("{:04}_", i + 1)), "{name}");
        }
    }

    #[test]
    fn steps_stored_twice_before_migration_12_are_read_from_their_envelope_after() {
        use crate::store::tracking::sealed_event;
        use ecointegra_proto::v1::TrackingEvent;
        use prost::Message as _;
        let dir = TempDir::new("steps");
        let path = dir.0.join("node.sqlite3");
        let step = |seq: u64, status: FilingStatus| TrackingEvent {
            event_id: format!("oefa/{seq}"),
            tracking_code: "OEFA-2026-0123ABCD".into(),
            institution: "oefa".into(),
            status: status as i32,
            seq,
            ..Default::default()
        };
        let (first, second) = (
            step(1, FilingStatus::Registered),
            step(2, FilingStatus::Sent),
        );
        let sealer = Sealer::new("oefa", SigningIdentity::generate());
        let signed = sealed_event(&sealer, &second);
        {
            // A store at version 11, as the releases before wrote steps:
            // the event, and (since migration 7) its envelope beside it.
            let conn = at_version(&path, 11);
            let insert = "INSERT INTO tracking_events
                 (event_id, tracking_code, seq, timestamp_ms, institution, event, envelope)
                 VALUES (?1, 'OEFA-2026-0123ABCD', ?2, 0, 'oefa', ?3, ?4)";
            conn.execute(
                insert,
                rusqlite::params![first.event_id, 1, first.encode_to_vec(), None::<Vec<u8>>],
            )
            .unwrap();
            conn.execute(
                insert,
                rusqlite::params![second.event_id, 2, second.encode_to_vec(), signed],
            )
            .unwrap();
        }
        let store = open(&path).unwrap();
        // (event, envelope) of each step, in order.
        type Kept = Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>;
        let kept: Kept = store
            .read(|c| {
                let mut stmt = c
                    .prepare("SELECT event, envelope FROM tracking_events ORDER BY seq")
                    .unwrap();
                Ok(stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap())
            })
            .unwrap();
        // The step with an envelope is kept there alone; the older one as it was.
        assert!(kept[0].0.is_some() && kept[0].1.is_none(), "{kept:?}");
        assert_eq!(kept[1], (None, Some(signed.clone())));
        let timeline = store.signed_timeline("OEFA-2026-0123ABCD").unwrap();
        assert_eq!(timeline, vec![(first, None), (second, Some(signed))]);
    }

    #[test]
    fn documents_kept_before_migration_15_are_found_after() {
        use crate::store::blobs::{Blobs, Stored, keep};
        use sha2::{Digest, Sha256};
        let dir = TempDir::new("contents");
        let path = dir.0.join("node.sqlite3");
        let documents: Vec<Vec<u8>> = vec![b"hola mundo".to_vec(), vec![3u8; 20_000]];
        let digest = |bytes: &[u8]| Sha256::digest(bytes).to_vec();
        {
            // A store at version 14: contents keyed by their digest.
            let conn = at_version(&path, 14);
            for bytes in &documents {
                conn.execute(
                    "INSERT INTO document_contents (sha256, bytes) VALUES (?1, ?2)",
                    rusqlite::params![digest(bytes), bytes],
                )
                .unwrap();
            }
        }
        let store = open(&path).unwrap();
        let blobs = Blobs::open(&dir.0).unwrap();
        for bytes in &documents {
            let located = store
                .locate(&blobs, &digest(bytes), bytes.len() as u64)
                .unwrap();
            assert!(matches!(&located, Stored::Kept(kept) if kept == bytes));
        }
        // The same content again is not a second row; a new one is added.
        let more = b"otro documento".to_vec();
        for bytes in [&documents[1], &more] {
            store.write(|c| keep(c, &digest(bytes), bytes)).unwrap();
        }
        let rows = dump(&path)
            .rows
            .into_iter()
            .filter(|r| r.starts_with("document_contents:"))
            .count();
        assert_eq!(rows, 3);
        let located = store.locate(&blobs, &digest(&more), 14).unwrap();
        assert!(matches!(&located, Stored::Kept(kept) if *kept == more));
    }

    #[test]
    fn steps_and_clocks_before_migration_16_are_kept_in_timelines_after() {
        use crate::store::tracking::{insert_event, sealed_event};
        use ecointegra_proto::v1::TrackingEvent;
        let dir = TempDir::new("timelines");
        let path = dir.0.join("node.sqlite3");
        let (a, b, c) = (
            "OEFA-2026-AAAAAAAA",
            "OEFA-2026-BBBBBBBB",
            "OEFA-2026-CCCCCCCC",
        );
        let sealer = Sealer::new("oefa", SigningIdentity::generate());
        let step = |code: &str, seq: u64| {
            let event = TrackingEvent {
                event_id: format!("oefa/{code}/{seq}"),
                tracking_code: code.into(),
                institution: "oefa".into(),
                seq,
                ..Default::default()
            };
            let signed = sealed_event(&sealer, &event);
            (event, signed)
        };
        let before = [step(a, 1), step(b, 1), step(a, 2)];
        {
            // A store at version 15: steps found by their tracking code, and
            // the clocks other nodes' transfers carried beside them.
            let conn = at_version(&path, 15);
            for (event, signed) in &before {
                conn.execute(
                    "INSERT INTO tracking_events
                     (event_id, tracking_code, seq, timestamp_ms, institution, envelope)
                     VALUES (?1, ?2, ?3, 0, 'oefa', ?4)",
                    rusqlite::params![event.event_id, event.tracking_code, event.seq, signed],
                )
                .unwrap();
            }
            // Ahead of a's steps, behind b's, and c's alone.
            conn.execute(
                "INSERT INTO tracking_clocks (tracking_code, seq) VALUES (?1, 5), (?2, 0), (?3, 3)",
                [a, b, c],
            )
            .unwrap();
        }
        let store = open(&path).unwrap();
        let seqs = |store: &Store| -> Vec<u64> {
            [a, b, c, "OEFA-2026-DDDDDDDD"]
                .iter()
                .map(|code| store.tracking_seq(code).unwrap())
                .collect()
        };
        assert_eq!(seqs(&store), [5, 1, 3, 0]);
        let timeline = store.signed_timeline(a).unwrap();
        let expected =
            [&before[0], &before[2]].map(|(event, signed)| (event.clone(), Some(signed.clone())));
        assert_eq!(timeline, expected);
        assert_eq!(store.timeline(b).unwrap(), [before[1].0.clone()]);

        // A step known before is not stored again; new ones are, and move
        // their clock (c's first step starts its timeline where its clock was).
        let (again, again_signed) = &before[2];
        let (later, later_signed) = step(a, 6);
        let (first, first_signed) = step(c, 4);
        let stored = store
            .write(|tx| {
                Ok([
                    insert_event(tx, again, again_signed)?,
                    insert_event(tx, &later, &later_signed)?,
                    insert_event(tx, &first, &first_signed)?,
                ])
            })
            .unwrap();
        assert_eq!(stored, [false, true, true]);
        assert_eq!(seqs(&store), [6, 1, 4, 0]);
        assert_eq!(store.timeline(a).unwrap().len(), 3);
        assert_eq!(store.timeline(c).unwrap(), [first]);
        let tables = dump(&path).schema.join("\n");
        assert!(!tables.contains("tracking_clocks"), "{tables}");
    }

    #[test]
    fn traces_of_steps_kept_before_migration_17_are_found_after() {
        use crate::store::traces::keep_for_steps;
        let dir = TempDir::new("traces");
        let path = dir.0.join("node.sqlite3");
        let (transfer, code, other) = (
            "5242517d3a3b4705fb8893a7f58b2474",
            "OEFA-2026-AAAAAAAA",
            "OEFA-2026-BBBBBBBB",
        );
        let traces = [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-e58bf3ff54616c1288db6f722ed2f7a3-d8517933def23555-01",
        ];
        {
            // A store at version 16: the submission's trace kept under its
            // transfer id and under its tracking code alike.
            let conn = at_version(&path, 16);
            conn.execute(
                "INSERT INTO timelines (tracking_code, seq) VALUES (?1, 2)",
                [code],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO trace_contexts (record_key, traceparent, created_at_ms)
                 VALUES (?1, ?2, 0), (?3, ?4, 0)",
                [transfer, traces[0], code, traces[1]],
            )
            .unwrap();
        }
        let store = open(&path).unwrap();
        let trace_of = |key: &str| store.trace_of(key).unwrap();
        assert_eq!(trace_of(transfer).as_deref(), Some(traces[0]));
        assert_eq!(trace_of(code).as_deref(), Some(traces[1]));
        assert_eq!(trace_of(other), None);
        let kept = dump(&path)
            .rows
            .into_iter()
            .filter(|r| r.starts_with("trace_contexts: "))
            .count();
        assert_eq!(kept, 1, "the tracking code's is in its timeline's row");

        // The first trace kept for a filing's steps stays; a new filing's
        // starts its timeline with it.
        store
            .write(|c| {
                keep_for_steps(c, code, traces[2])?;
                keep_for_steps(c, other, traces[2])
            })
            .unwrap();
        assert_eq!(trace_of(code).as_deref(), Some(traces[1]));
        assert_eq!(trace_of(other).as_deref(), Some(traces[2]));
        assert_eq!(store.tracking_seq(code).unwrap(), 2);
        assert_eq!(store.tracking_seq(other).unwrap(), 0);
    }

    #[test]
    fn a_new_store_is_at_the_latest_version() {
        let dir = TempDir::new("new");
        let path = dir.0.join("node.sqlite3");
        drop(open(&path).unwrap());
        assert_eq!(dump(&path).version, LATEST);
        let files = std::fs::read_dir(&dir.0).unwrap().count();
        assert!(
            !std::fs::read_dir(&dir.0).unwrap().any(|e| e
                .unwrap()
                .path()
                .to_string_lossy()
                .ends_with(".bak")),
            "a new store needs no copy ({files} files)"
        );
    }

    fn page_size(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_store_has_small_pages_and_an_old_one_keeps_its_own() {
        let dir = TempDir::new("pages");
        let new = dir.0.join("new.sqlite3");
        let store = open(&new).unwrap();
        store.write(|_| Ok(())).unwrap();
        drop(store);
        assert_eq!(page_size(&new), crate::store::PAGE_SIZE);

        // The connections a store runs on checkpoint by its own threshold
        // and trim the WAL file after.
        let conn = crate::store::open_connection(&new).unwrap();
        let setting =
            |name: &str| -> i64 { conn.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
        assert_eq!(
            setting("wal_autocheckpoint"),
            crate::store::WAL_AUTOCHECKPOINT
        );
        assert_eq!(
            setting("journal_size_limit"),
            crate::store::JOURNAL_SIZE_LIMIT
        );
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");

        // A store of 4 KiB pages opens, migrates and stays at 4 KiB: its
        // rows are not rewritten behind the operator's back.
        let old = dir.0.join("old.sqlite3");
        std::fs::write(&old, PREVIOUS_RELEASE).unwrap();
        assert_eq!(page_size(&old), 4096);
        let store = open(&old).unwrap();
        store.write(|_| Ok(())).unwrap();
        drop(store);
        assert_eq!(page_size(&old), 4096);
        assert_eq!(dump(&old).version, LATEST);
    }

    #[test]
    fn a_store_of_the_previous_release_is_adopted_and_stays_readable() {
        let dir = TempDir::new("previous");
        let path = dir.0.join("node.sqlite3");
        std::fs::write(&path, PREVIOUS_RELEASE).unwrap();
        let before = dump(&path);
        assert_eq!(before.version, 0);
        assert!(before.rows.len() > 20, "{:?}", before.rows);

        let store = open(&path).unwrap();

        // Adopted as version 1 and migrated to the latest: every row kept,
        // partial documents now keyed by their sender.
        let upgraded = dump(&path);
        assert_eq!(upgraded.version, LATEST);
        let renamed = |rows: &[String]| -> Vec<String> {
            // Columns added since (the outbox's re-send round, the documents
            // whose chunks went out during their upload and their chunk
            // size) hold their defaults: without them, every row reads as
            // before.
            let added = ", Integer(0), Integer(0), Integer(0), Integer(0), Text(\"\"), Integer(0)]";
            let mut rows: Vec<String> = rows
                .iter()
                .filter(|r| !r.contains("partial") && !r.starts_with("timelines: "))
                .map(|r| {
                    match (r.strip_suffix(added), r.strip_suffix(", Null]")) {
                        (Some(kept), _) if r.starts_with("outbox: ") => format!("{kept}]"),
                        // The signed envelope of a step, not kept before.
                        (_, Some(kept)) if r.starts_with("tracking_events: ") => format!("{kept}]"),
                        // A filing's PIDE fields and CUO: none before.
                        _ if r.starts_with("filings: ") => r
                            .strip_suffix(", Null, Text(\"\")]")
                            .map_or_else(|| r.clone(), |kept| format!("{kept}]")),
                        _ => r.clone(),
                    }
                })
                .collect();
            rows.sort();
            rows
        };
        // Each step, copy and receipt names its filing's timeline, last.
        let untimed: Vec<String> = upgraded
            .rows
            .iter()
            .map(|r| match r.split_once(": ").map(|(table, _)| table) {
                Some("tracking_events" | "filings" | "receipts") => r
                    .rsplit_once(", Integer(")
                    .map_or_else(|| r.clone(), |(kept, _)| format!("{kept}]")),
                _ => r.clone(),
            })
            .collect();
        assert_eq!(renamed(&untimed), renamed(&before.rows));
        // A timeline per filing it held, numbered in the order of their
        // first steps, its clock at their last.
        let timelines: Vec<&String> = upgraded
            .rows
            .iter()
            .filter(|r| r.starts_with("timelines: "))
            .collect();
        assert_eq!(
            timelines,
            [
                "timelines: [Integer(1), Text(\"TC-OUT-0001\"), Integer(1), Text(\"\")]",
                "timelines: [Integer(2), Text(\"TC-IN-0002\"), Integer(1), Text(\"\")]"
            ]
        );

        // The store as it was is kept beside it, whole.
        let copies: Vec<PathBuf> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".bak"))
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert!(
            copies[0].to_string_lossy().contains("node.sqlite3.v0-"),
            "{copies:?}"
        );
        assert_eq!(dump(&copies[0]), before);

        // Every row is still readable through the store.
        let sent = store.filing_copy("TC-OUT-0001", None).unwrap().unwrap();
        assert_eq!(sent.registry_number, "OEFA-2026-000001");
        assert_eq!(sent.direction, Direction::Outbound);
        assert_eq!(sent.status, FilingStatus::Delivered);
        assert_eq!(sent.destination, "senamhi");
        assert_eq!(sent.subject, "Subject of TC-OUT-0001");
        assert_eq!(sent.sender_party.document_number, "40404040");
        assert_eq!(sent.delivered_at_ms, 1_764_000_100_000);
        let documents: Vec<_> = sent
            .documents
            .iter()
            .map(|d| (d.name.as_str(), d.size))
            .collect();
        assert_eq!(documents, [("letter.pdf", 1234), ("annex.txt", 56)]);
        assert_eq!(sent.documents[0].sha256, [0xaa; 32]);
        assert_eq!(
            store.idempotent_response("idem-1").unwrap().unwrap(),
            b"answer OEFA-2026-000001"
        );

        let held = store.filing_copy("TC-IN-0002", None).unwrap().unwrap();
        assert_eq!(held.registry_number, "OEFA-2026-000002");
        assert_eq!(held.direction, Direction::Inbound);
        assert_eq!(held.origin_registry_number, "MINAM-2026-000007");
        assert_eq!(held.hop, 1);

        let chain: Vec<_> = store
            .receipt_chain("TC-IN-0002")
            .unwrap()
            .into_iter()
            .map(|r| (r.transfer_id, r.hop, r.signer, r.envelope))
            .collect();
        assert_eq!(
            chain,
            [
                (
                    "tr-in-2-prev".to_owned(),
                    0,
                    "minam".to_owned(),
                    b"signed receipt of tr-in-2-prev by minam".to_vec()
                ),
                (
                    "tr-in-2".to_owned(),
                    1,
                    "oefa".to_owned(),
                    b"signed receipt of tr-in-2 by oefa".to_vec()
                ),
            ]
        );
        let receipt = store.receipt("tr-out-1").unwrap().unwrap();
        assert_eq!(receipt.signer, "senamhi");
        assert_eq!(receipt.received_at_ms, 1_764_000_100_000);

        // Newest first.
        let letters = store.dead_letters(true, 10).unwrap();
        let states: Vec<_> = letters
            .iter()
            .map(|l| (l.source_offset, l.state, l.discarded_by.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                (3, DeadLetterState::Discarded as i32, "operator-ana"),
                (2, DeadLetterState::Open as i32, ""),
            ]
        );
        let open_letter = store.dead_letter_detail(letters[1].id).unwrap();
        assert_eq!(open_letter.original_value, [2; 10]);
        assert_eq!(open_letter.original_key, b"key-2");
        assert_eq!(store.open_dead_letter_ids().unwrap(), [letters[1].id]);

        assert_eq!(
            store.timeline("TC-OUT-0001").unwrap()[0].status,
            FilingStatus::Registered as i32
        );
        assert!(store.trace_of("tr-out-1").unwrap().is_some());
        drop(store);

        // A second start changes nothing.
        drop(open(&path).unwrap());
        assert_eq!(dump(&path), upgraded);
    }

    #[test]
    fn a_store_of_a_newer_release_is_refused_naming_both_versions() {
        let dir = TempDir::new("newer");
        let path = dir.0.join("node.sqlite3");
        drop(open(&path).unwrap());
        let newer = LATEST + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let before = dump(&path);

        let error = open(&path).err().expect("a newer store is refused");

        assert!(
            matches!(error, Error::StoreTooNew { found, known, .. } if found == newer && known == LATEST),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("schema version is {newer}, newer than {LATEST}")),
            "{message}"
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert_eq!(dump(&path), before, "a refused store is left as it was");
    }
}
