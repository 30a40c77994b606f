//! `ecointegra backup` and `ecointegra restore`: a node's state, copied
//! while it runs, checked, and put back into an empty data directory.
//!
//! A backup set is a directory: one snapshot per backup, named by its time
//! (`2026-12-01T03-10-00Z/`, holding `store.sqlite3` and `manifest.json`),
//! and `blobs/`, the documents every snapshot references, shared: a document
//! already in the set is not copied again. The store is copied with SQLite's
//! online backup, so the snapshot is one consistent state of a store the
//! node keeps writing; the documents it references were complete on disk
//! before the store referenced them (the node writes files first). The
//! manifest, written last, lists the SHA-256 of the store and of every
//! document; a snapshot without one is not a backup.
//!
//! A restored node holds its inbox, tracking and directory positions as the
//! snapshot had them: started, it reads again what arrived since, and
//! applies it once (the processed records and their effects are in the same
//! store as the positions).

use anyhow::{Context, bail};
use ecointegra_node::config::Config;
use ecointegra_node::store::blobs::{digest_file, private_dir, private_file};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const MANIFEST: &str = "manifest.json";
const STORE: &str = "store.sqlite3";
const FORMAT: u32 = 1;

#[derive(clap::Subcommand)]
pub(crate) enum BackupCommand {
    /// Check a backup set (every snapshot) or one snapshot: the store's and
    /// every document's SHA-256, the store's integrity, and that the
    /// manifest lists every document the store references.
    Verify { dir: PathBuf },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BackupArgs {
    #[command(subcommand)]
    command: Option<BackupCommand>,
    /// The node's configuration (its data directory is backed up).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The backup set to add a snapshot to (created if missing).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub(crate) struct RestoreArgs {
    /// A snapshot, or a backup set (its newest snapshot).
    dir: PathBuf,
    /// The node's configuration; its data directory must be empty or absent.
    #[arg(long)]
    config: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    institution: String,
    created_at_ms: i64,
    /// The store's schema version.
    schema_version: u32,
    store: FileEntry,
    documents: Vec<FileEntry>,
    /// Where the node was in each topic it reads: it reads on from there.
    positions: Vec<Position>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct FileEntry {
    sha256: String,
    size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Position {
    topic: String,
    partition: i32,
    next_offset: i64,
}

pub(crate) fn backup(args: BackupArgs) -> anyhow::Result<()> {
    match (args.command, args.config, args.out) {
        (Some(BackupCommand::Verify { dir }), _, _) => {
            for (snapshot, manifest) in verify(&dir)? {
                println!(
                    "ok: {} ({}, {}, store {} bytes)",
                    snapshot.display(),
                    ecointegra_node::ids::format_utc(manifest.created_at_ms),
                    document_files(manifest.documents.len()),
                    manifest.store.size
                );
            }
            Ok(())
        }
        (None, Some(config), Some(out)) => {
            let config = Config::load(Some(&config))?;
            take(&config, &out)
        }
        _ => bail!("give --config and --out (or: ecointegra backup verify DIR)"),
    }
}

/// Takes a snapshot of the node of `config` into the set `out`.
fn take(config: &Config, out: &Path) -> anyhow::Result<()> {
    let live = config.data_dir.join("node.sqlite3");
    if !live.exists() {
        bail!("{} does not exist: no store to back up", live.display());
    }
    private_dir(&out.join("blobs")).with_context(|| format!("cannot create {}", out.display()))?;
    let now = ecointegra_broker::now_ms();
    let snapshot = fresh_snapshot_dir(out, now)?;
    let partial = snapshot.with_extension("partial");
    private_dir(&partial)?;

    // The store, with SQLite's online backup: one consistent state.
    let copy = partial.join(STORE);
    {
        let source = rusqlite::Connection::open(&live)
            .with_context(|| format!("cannot open {}", live.display()))?;
        source.busy_timeout(std::time::Duration::from_secs(30))?;
        let mut target = rusqlite::Connection::open(&copy)?;
        rusqlite::backup::Backup::new(&source, &mut target)?
            // Every page in one step: one read transaction, one state.
            .run_to_completion(i32::MAX, std::time::Duration::ZERO, None)
            .context("the online backup of the store failed")?;
        // One self-contained file: no write-ahead log beside it.
        target.pragma_update(None, "journal_mode", "DELETE")?;
    }
    let (documents, positions, schema_version) = read_snapshot(&copy)?;

    // Its documents, each once in the set.
    let mut copied = 0;
    let mut entries = Vec::with_capacity(documents.len());
    for sha in &documents {
        let target = blob_path(out, sha);
        let size = if target.exists() {
            target.metadata()?.len()
        } else {
            copied += 1;
            copy_checked(&blob_path(&config.data_dir, sha), &target, sha)?
        };
        entries.push(FileEntry {
            sha256: sha.clone(),
            size,
        });
    }
    let (store_sha, store_size) = hash_file(&copy)?;
    let manifest = Manifest {
        format: FORMAT,
        institution: config.institution.clone(),
        created_at_ms: now,
        schema_version,
        store: FileEntry {
            sha256: store_sha,
            size: store_size,
        },
        documents: entries,
        positions,
    };
    write_synced(
        &partial.join(MANIFEST),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    std::fs::rename(&partial, &snapshot)?;
    sync_dir(out)?;
    println!(
        "backup {}: store {} bytes (schema {}), {} ({} copied, {} already in the set)",
        snapshot.display(),
        store_size,
        schema_version,
        document_files(documents.len()),
        copied,
        documents.len() - copied
    );
    Ok(())
}

/// "1 document file", "3 document files": small documents kept inside the
/// store are in its copy, not counted here.
fn document_files(n: usize) -> String {
    format!("{n} document file{}", if n == 1 { "" } else { "s" })
}

fn fresh_snapshot_dir(out: &Path, now_ms: i64) -> anyhow::Result<PathBuf> {
    let name = ecointegra_node::ids::format_utc(now_ms).replace(':', "-");
    for n in 1.. {
        let candidate = match n {
            1 => out.join(&name),
            n => out.join(format!("{name}-{n}")),
        };
        if !candidate.exists() && !candidate.with_extension("partial").exists() {
            return Ok(candidate);
        }
    }
    unreachable!()
}

/// The document files a store references (hex SHA-256, sorted; a small
/// document kept in the store itself travels with it), its positions and
/// its schema version.
fn read_snapshot(store: &Path) -> anyhow::Result<(Vec<String>, Vec<Position>, u32)> {
    let conn =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let keeps: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'document_contents'",
        [],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare(if keeps {
        "SELECT DISTINCT sha256 FROM documents \
         WHERE sha256 NOT IN (SELECT sha256 FROM document_contents) ORDER BY sha256"
    } else {
        "SELECT DISTINCT sha256 FROM documents ORDER BY sha256"
    })?;
    let documents = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .map(|r| r.map(hex::encode))
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT topic, partition, next_offset FROM inbox_offsets ORDER BY topic, partition",
    )?;
    let positions = stmt
        .query_map([], |r| {
            Ok(Position {
                topic: r.get(0)?,
                partition: r.get(1)?,
                next_offset: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok((documents, positions, version))
}

fn blob_path(root: &Path, sha: &str) -> PathBuf {
    root.join("blobs").join(&sha[..2]).join(sha)
}

/// Copies `from` to `to` (for the owner only, through a temporary name,
/// fsynced) checking its SHA-256 is `sha`; returns its size.
fn copy_checked(from: &Path, to: &Path, sha: &str) -> anyhow::Result<u64> {
    let dir = to.parent().expect("a blob path has a parent");
    private_dir(dir)?;
    let temp = dir.join(format!(".{sha}.tmp"));
    std::fs::copy(from, &temp).with_context(|| format!("cannot copy {}", from.display()))?;
    std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::File::open(&temp)?.sync_all()?;
    let (got, size) = hash_file(&temp)?;
    if got != sha {
        let _ = std::fs::remove_file(&temp);
        bail!(
            "{} is damaged: its SHA-256 is {got}, not {sha} as recorded",
            from.display()
        );
    }
    std::fs::rename(&temp, to)?;
    sync_dir(dir)?;
    Ok(size)
}

/// A file's SHA-256 (hex) and size.
fn hash_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let (sha, size) =
        digest_file(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((hex::encode(sha), size))
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The snapshots `dir` names: itself if it is one, else every snapshot of
/// the set, oldest first. Each with the set it belongs to.
fn snapshots(dir: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    if dir.join(MANIFEST).exists() {
        let set = dir
            .parent()
            .context("a snapshot lives in a backup set")?
            .to_owned();
        return Ok(vec![(dir.to_owned(), set)]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(MANIFEST).exists())
        .collect();
    found.sort();
    if found.is_empty() {
        bail!("{} holds no backup (no {MANIFEST})", dir.display());
    }
    Ok(found.into_iter().map(|s| (s, dir.to_owned())).collect())
}

/// Checks every snapshot `dir` names; the first problem is the error.
fn verify(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Manifest)>> {
    let mut checked = Vec::new();
    for (snapshot, set) in snapshots(dir)? {
        let manifest = verify_snapshot(&snapshot, &set)
            .with_context(|| format!("{} does not verify", snapshot.display()))?;
        checked.push((snapshot, manifest));
    }
    Ok(checked)
}

fn verify_snapshot(snapshot: &Path, set: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read(snapshot.join(MANIFEST))?;
    let manifest: Manifest = serde_json::from_slice(&text).context("the manifest is unreadable")?;
    if manifest.format != FORMAT {
        bail!("manifest format {} is not {FORMAT}", manifest.format);
    }
    let store = snapshot.join(STORE);
    let (sha, size) = hash_file(&store)?;
    if (sha.as_str(), size) != (manifest.store.sha256.as_str(), manifest.store.size) {
        bail!("{} is not the store the manifest lists", store.display());
    }
    {
        let conn = rusqlite::Connection::open_with_flags(
            &store,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if check != "ok" {
            bail!("the store fails SQLite's integrity check: {check}");
        }
    }
    let (documents, _, _) = read_snapshot(&store)?;
    let listed: Vec<&str> = manifest
        .documents
        .iter()
        .map(|d| d.sha256.as_str())
        .collect();
    if documents.iter().map(String::as_str).collect::<Vec<_>>() != listed {
        bail!("the manifest does not list exactly the documents the store references");
    }
    for entry in &manifest.documents {
        let path = blob_path(set, &entry.sha256);
        let (sha, size) = hash_file(&path)?;
        if sha != entry.sha256 || size != entry.size {
            bail!(
                "{} is damaged: SHA-256 {sha}, {size} bytes; the manifest says {}, {} bytes",
                path.display(),
                entry.sha256,
                entry.size
            );
        }
    }
    Ok(manifest)
}

pub(crate) fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let config = Config::load(Some(&args.config))?;
    let (snapshot, set) = snapshots(&args.dir)?
        .pop()
        .expect("snapshots() returns at least one");
    let manifest = verify_snapshot(&snapshot, &set)
        .with_context(|| format!("{} does not verify: nothing restored", snapshot.display()))?;
    if manifest.institution != config.institution {
        bail!(
            "{} is a backup of {}, not of {}",
            snapshot.display(),
            manifest.institution,
            config.institution
        );
    }
    let data_dir = &config.data_dir;
    if data_dir.exists()
        && std::fs::read_dir(data_dir)
            .with_context(|| format!("cannot read {}", data_dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: restore only into an empty or absent data directory",
            data_dir.display()
        );
    }
    private_dir(data_dir)?;
    for entry in &manifest.documents {
        copy_checked(
            &blob_path(&set, &entry.sha256),
            &blob_path(data_dir, &entry.sha256),
            &entry.sha256,
        )?;
    }
    // The store last: a data directory with a store is a restored one.
    copy_checked(
        &snapshot.join(STORE),
        &data_dir.join("node.sqlite3"),
        &manifest.store.sha256,
    )?;
    sync_dir(data_dir)?;
    let age_h = (ecointegra_broker::now_ms() - manifest.created_at_ms) as f64 / 3_600_000.0;
    println!(
        "restored {} ({}, {age_h:.1} h old) into {}: {}, store schema {}",
        snapshot.display(),
        ecointegra_node::ids::format_utc(manifest.created_at_ms),
        data_dir.display(),
        document_files(manifest.documents.len()),
        manifest.schema_version
    );
    println!("Started, the node reads on from these positions:");
    for p in &manifest.positions {
        println!(
            "  {} partition {}: offset {}",
            p.topic, p.partition, p.next_offset
        );
    }
    println!(
        "Kafka must still hold those records: a backup older than the inbox's retention \
         (14 days as provisioned by default) has lost what arrived in between (see README, \
         Backup and restore)."
    );
    Ok(())
}
