//! Documents' bytes, content-addressed.
//!
//! A small document that arrives whole (an upload, or a small filing inside
//! its manifest) is kept in the store itself, in `document_contents`, written
//! in the transaction that references it: no file to create, fsync, rename
//! and fsync the directory of, for a few KiB (at 1 KiB filings, creating
//! files took a quarter of the nodes' CPU). Any other document lives at
//! `blobs/<2 hex>/<64 hex>`, named by its SHA-256; files are written under
//! `tmp/` (uploads) or `partial/` (transfers being assembled), fsynced, then
//! renamed into place, so a file under `blobs/` is always whole. Readers ask
//! [`Store::locate`] or [`Store::open_document`], which know both places.

use super::direct::DirectReader;
use super::{DocumentRow, Store, exec, row};
use crate::error::{Error, Result};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Options to create a file under the data directory: readable and
/// writable by the node's user only.
pub fn private_file() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.mode(0o600);
    options
}

/// Creates a directory under the data directory (and its parents): the
/// node's user only.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes a small file (an address file) under the data directory, for the
/// node's user only.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?
        .write_all(contents)
}

#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
    /// Documents just uploaded whole, for the relay ([`Blobs::recall`]).
    recent: Arc<Mutex<Recent>>,
}

/// Bytes of just-uploaded documents [`Recent`] holds at most.
const RECENT_MAX: usize = 8 << 20;

/// Documents an upload held whole in memory and wrote to a file (above
/// [`KEPT_MAX`], under the upload's write size), by SHA-256, until the relay
/// takes them or newer ones push them out: a small filing's relay reads them
/// here instead of from the file, which was written around the page cache,
/// so reading it back went to the device (at 100 KiB, 8.7% of the two nodes'
/// CPU, perf). Content-addressed, so what it holds is right whatever became
/// of the upload; bounded by [`RECENT_MAX`] bytes, oldest out first.
#[derive(Debug, Default)]
struct Recent {
    bytes: HashMap<Vec<u8>, Vec<u8>>,
    order: VecDeque<Vec<u8>>,
    held: usize,
}

/// The sender, transfer id and document index of a partial document.
pub type PartialKey = (String, String, u32);

impl Blobs {
    pub fn open(data_dir: &Path) -> Result<Self> {
        let blobs = Self {
            root: data_dir.to_owned(),
            recent: Default::default(),
        };
        for dir in ["blobs", "tmp", "partial"] {
            private_dir(&data_dir.join(dir)).map_err(Error::io(format!(
                "cannot create {}",
                data_dir.join(dir).display()
            )))?;
        }
        // Uploads interrupted by a crash left nothing referenced in the store.
        if let Ok(entries) = std::fs::read_dir(data_dir.join("tmp")) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(blobs)
    }

    /// Holds an uploaded document's bytes, just written to its file or
    /// about to be kept in the store, for [`Blobs::recall`]; the oldest held
    /// go if they would exceed [`RECENT_MAX`].
    pub fn remember(&self, sha256: &[u8], bytes: Vec<u8>) {
        if bytes.len() > RECENT_MAX {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let recent = &mut *recent;
        while recent.held + bytes.len() > RECENT_MAX {
            let Some(oldest) = recent.order.pop_front() else {
                break;
            };
            if let Some(gone) = recent.bytes.remove(&oldest) {
                recent.held -= gone.len();
            }
        }
        recent.held += bytes.len();
        if let Some(before) = recent.bytes.insert(sha256.to_vec(), bytes) {
            recent.held -= before.len();
        } else {
            recent.order.push_back(sha256.to_vec());
        }
        // Recalled documents leave their place in the order behind (taking
        // it out at each recall was a walk through the whole order, up to
        // thousands of small documents), and one remembered again after it
        // was taken gets a second place: once the places outnumber the held
        // documents, keep one place per held document.
        if recent.order.len() > 2 * recent.bytes.len() + 64 {
            let Recent { bytes, order, .. } = recent;
            let mut placed = std::collections::HashSet::with_capacity(bytes.len());
            order.retain(|held| bytes.contains_key(held) && placed.insert(held.clone()));
        }
    }

    /// Takes a document's bytes if [`Blobs::remember`] still holds them.
    pub fn recall(&self, sha256: &[u8]) -> Option<Vec<u8>> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = recent.bytes.remove(sha256)?;
        recent.held -= bytes.len();
        Some(bytes)
    }

    pub fn path(&self, sha256: &[u8]) -> PathBuf {
        let hex = hex::encode(sha256);
        self.root.join("blobs").join(&hex[..2]).join(hex)
    }

    /// A fresh path for an upload in progress.
    pub fn temp_path(&self) -> PathBuf {
        self.root.join("tmp").join(crate::ids::transfer_id())
    }

    /// Where document `index` of `sender`'s transfer `transfer_id` is
    /// assembled. Only an institution id and a transfer id of their exact
    /// formats become a file name: anything else (a `../`, an absolute path)
    /// is refused, so nothing from the wire can name a file outside the data
    /// directory.
    pub fn partial_path(&self, sender: &str, transfer_id: &str, index: u32) -> Result<PathBuf> {
        if !ecointegra_broker::directory::is_institution_id(sender) {
            return Err(Error::invalid("sender", "is not an institution id"));
        }
        if !crate::ids::is_transfer_id(transfer_id) {
            return Err(Error::invalid(
                "transfer_id",
                "is not a transfer id (32 hex digits); no file is named after it",
            ));
        }
        Ok(self
            .root
            .join("partial")
            .join(format!("{sender}.{transfer_id}.{index}")))
    }

    /// Links a whole, fsynced partial document into the store under its
    /// digest, leaving the partial file where it is: the transaction that
    /// adopts it may yet not commit (a crash), and then its last chunks are
    /// written again into that file, which must still hold the first ones.
    /// The partial file goes once that transaction has committed
    /// ([`Blobs::forget_partial`]), or at the next start ([`Blobs::partial_files`]).
    pub fn adopt_partial(&self, partial: &Path, sha256: &[u8]) -> Result<PathBuf> {
        let (target, _) = self.place(sha256, |target| {
            std::fs::hard_link(partial, target).map_err(Error::io(format!(
                "cannot link {} into the store",
                partial.display()
            )))
        })?;
        Ok(target)
    }

    /// Puts the blob `sha256` in place with `put` (given its path), unless
    /// the store holds it already, and makes its directory entry durable.
    /// Returns its path, and whether `put` put it there.
    fn place(
        &self,
        sha256: &[u8],
        put: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<(PathBuf, bool)> {
        let target = self.path(sha256);
        let dir = target.parent().expect("blob paths have a parent");
        private_dir(dir).map_err(Error::io("cannot create a blob directory"))?;
        if target.exists() {
            return Ok((target, false));
        }
        put(&target)?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io("cannot sync a blob directory"))?;
        Ok((target, true))
    }

    /// Removes a partial document its filing no longer needs (adopted, and
    /// committed). A crash before this leaves it to the next start.
    pub fn forget_partial(&self, partial: &Path) {
        let _ = std::fs::remove_file(partial);
    }

    /// Every partial document file: its path, and the sender, transfer id
    /// and document index its name says (None for a name that says none).
    pub fn partial_files(&self) -> Vec<(PathBuf, Option<PartialKey>)> {
        let Ok(entries) = std::fs::read_dir(self.root.join("partial")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let mut parts = name.splitn(3, '.');
                let parsed = match (parts.next(), parts.next(), parts.next()) {
                    (Some(sender), Some(transfer), Some(index)) => index
                        .parse()
                        .ok()
                        .map(|index| (sender.to_owned(), transfer.to_owned(), index)),
                    _ => None,
                };
                (entry.path(), parsed)
            })
            .collect()
    }

    /// Moves a whole, fsynced file into the store under its digest. Where the
    /// same content is already stored the new copy is simply removed.
    pub fn adopt(&self, file: &Path, sha256: &[u8]) -> Result<PathBuf> {
        let (target, moved) = self.place(sha256, |target| {
            std::fs::rename(file, target).map_err(Error::io(format!(
                "cannot move {} into the store",
                file.display()
            )))
        })?;
        if !moved {
            let _ = std::fs::remove_file(file);
        }
        Ok(target)
    }
}

/// Lets the kernel drop a document file's cached pages: a node is done with
/// them once it has made them durable, sent or hashed them. Written once and
/// read again rarely, they would otherwise fill the page cache (a node moving
/// gigabytes grows it by as much) and push out what is read often; and a
/// write into pages the cache reuses costs a fifth of one into pages it has
/// never held (10 MiB: 4.8 against 25.8 ms of CPU on a bench machine). Dirty
/// pages stay until written back. Only advice: a failure changes nothing.
pub fn drop_cached(file: &impl std::os::fd::AsFd) {
    let _ = nix::fcntl::posix_fadvise(
        file,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

/// SHA-256 and length of a file, read in bounded pieces (its pages then
/// dropped from the cache).
pub fn digest_file(path: &Path) -> std::io::Result<([u8; 32], u64)> {
    use sha2::{Digest, Sha256};
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    drop_cached(&file);
    Ok((hasher.finalize().into(), total))
}

/// Removes a file when dropped, unless kept: an upload that fails half-way
/// leaves nothing behind.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    pub fn new(path: PathBuf) -> Self {
        Self { path, keep: false }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file now belongs elsewhere; do not remove it.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Documents of at most this many bytes are kept in the store when they
/// arrive whole (see the module's doc); larger ones are files.
pub const KEPT_MAX: u64 = 32 * 1024;

/// Adds a small document's bytes, unless the same digest is there already
/// (`document_contents_by_sha256` is unique).
pub(crate) const KEEP: &str =
    "INSERT OR IGNORE INTO document_contents (sha256, bytes) VALUES (?1, ?2)";

/// A small document's bytes, by digest.
pub(crate) const KEPT_BYTES: &str = "SELECT bytes FROM document_contents WHERE sha256 = ?1";

/// Keeps a small document's bytes in the store, in the caller's transaction
/// (once per content: the same bytes again are already there).
pub(crate) fn keep(c: &Connection, sha256: &[u8], bytes: &[u8]) -> Result<()> {
    exec(c, KEEP, params![sha256, bytes])
        .map(drop)
        .map_err(Error::store("cannot keep a document"))
}

/// A document received whole, before it is stored: its bytes, if it is small
/// (kept in the store with the filing), or the fsynced temporary file that
/// becomes its blob.
#[derive(Debug)]
pub enum Received {
    Kept(Vec<u8>),
    /// A fsynced file, and its bytes if the upload held them whole: they
    /// are [`Blobs::remember`]ed when the file is adopted.
    File(TempFile, Option<Vec<u8>>),
}

/// Small documents' bytes (by SHA-256) waiting for the transaction that
/// references them.
#[derive(Debug, Default)]
pub struct ToKeep(Vec<(Vec<u8>, Vec<u8>)>);

impl ToKeep {
    /// Stores received documents for good: each file moved into the blob
    /// store now, before the transaction that references it (a crash leaves
    /// an unreferenced file, never a filing without its bytes); each small
    /// one's bytes held for that transaction ([`ToKeep::keep`]).
    pub fn store(
        blobs: &Blobs,
        documents: Vec<(DocumentRow, Received)>,
    ) -> Result<(Vec<DocumentRow>, Self)> {
        let (mut rows, mut kept) = (Vec::with_capacity(documents.len()), Vec::new());
        for (row, received) in documents {
            match received {
                Received::Kept(bytes) => {
                    // The relay puts a small filing's documents in its
                    // manifest: from memory, not read back from the store.
                    blobs.remember(&row.sha256, bytes.clone());
                    kept.push((row.sha256.clone(), bytes));
                }
                Received::File(temp, whole) => {
                    drop(blobs.adopt(&temp.keep(), &row.sha256)?);
                    if let Some(bytes) = whole {
                        blobs.remember(&row.sha256, bytes);
                    }
                }
            }
            rows.push(row);
        }
        Ok((rows, Self(kept)))
    }

    /// Keeps them, in the caller's transaction.
    pub(crate) fn keep(&self, c: &Connection) -> Result<()> {
        self.0
            .iter()
            .try_for_each(|(sha256, bytes)| keep(c, sha256, bytes))
    }
}

/// Where a stored document's bytes are.
#[derive(Debug)]
pub enum Stored {
    /// Kept in the store: here they are.
    Kept(Vec<u8>),
    /// In the blob store, at this path.
    File(PathBuf),
}

impl Stored {
    /// Its bytes, whole: for a document small enough to hold in memory.
    pub fn read(self) -> std::io::Result<Vec<u8>> {
        match self {
            Stored::Kept(bytes) => Ok(bytes),
            Stored::File(path) => std::fs::read(path),
        }
    }

    /// A blocking reader of its bytes.
    pub fn reader(&self) -> std::io::Result<Box<dyn Read + '_>> {
        Ok(match self {
            Stored::Kept(bytes) => Box::new(bytes.as_slice()),
            Stored::File(path) => Box::new(File::open(path)?),
        })
    }
}

/// A stored document being read, wherever it is kept.
#[derive(Debug)]
pub enum Content {
    Kept(std::io::Cursor<Vec<u8>>),
    File(tokio::fs::File),
}

impl Content {
    /// The reader is done with it: a file's pages may leave the cache.
    pub fn done(&self) {
        if let Content::File(file) = self {
            drop_cached(file);
        }
    }
}

impl tokio::io::AsyncRead for Content {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Content::Kept(bytes) => std::pin::Pin::new(bytes).poll_read(cx, buf),
            Content::File(file) => std::pin::Pin::new(file).poll_read(cx, buf),
        }
    }
}

/// A stored document read in pieces at their offsets (a transfer's chunks):
/// a file around the page cache where it can be ([`DirectReader`]).
#[derive(Debug)]
pub enum Pieces {
    Kept(Vec<u8>),
    /// Taken while a piece is read on a blocking thread.
    File(Option<DirectReader>),
}

impl Pieces {
    /// The `len` bytes at `offset`.
    pub async fn read(&mut self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        match self {
            Pieces::Kept(bytes) => usize::try_from(offset)
                .ok()
                .and_then(|start| bytes.get(start..start.checked_add(len)?))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            Pieces::File(slot) => {
                let mut reader = slot
                    .take()
                    .ok_or_else(|| std::io::Error::other("a previous read did not finish"))?;
                let (reader, data) = tokio::task::spawn_blocking(move || {
                    let mut data = vec![0u8; len];
                    let read = reader.read_exact_at(offset, &mut data);
                    (reader, read.map(|()| data))
                })
                .await
                .map_err(std::io::Error::other)?;
                *slot = Some(reader);
                data
            }
        }
    }
}

impl Store {
    /// Where the document of `size` bytes and digest `sha256` is: in the
    /// store if it is small and kept there, otherwise its file (a small one
    /// stored before this release, or assembled from chunks, is a file).
    pub fn locate(&self, blobs: &Blobs, sha256: &[u8], size: u64) -> Result<Stored> {
        if size <= KEPT_MAX {
            let kept = self.read(|c| {
                row(c, KEPT_BYTES, [sha256], |r| r.get::<_, Vec<u8>>(0))
                    .optional()
                    .map_err(Error::store("cannot read a document"))
            })?;
            if let Some(bytes) = kept {
                return Ok(Stored::Kept(bytes));
            }
        }
        Ok(Stored::File(blobs.path(sha256)))
    }

    /// Opens a stored document to read in pieces, wherever it is kept; a
    /// large one without a call to the store.
    pub async fn open_pieces(&self, blobs: &Blobs, sha256: &[u8], size: u64) -> Result<Pieces> {
        match self.stored(blobs, sha256, size).await? {
            Stored::Kept(bytes) => Ok(Pieces::Kept(bytes)),
            Stored::File(path) => tokio::task::spawn_blocking(move || {
                DirectReader::open(&path)
                    .map(|reader| Pieces::File(Some(reader)))
                    .map_err(Error::io(format!("cannot open {}", path.display())))
            })
            .await
            .map_err(Error::task("opening a document failed"))?,
        }
    }

    /// Opens a stored document for reading, wherever it is kept; a large one
    /// without a call to the store.
    pub async fn open_document(&self, blobs: &Blobs, sha256: &[u8], size: u64) -> Result<Content> {
        match self.stored(blobs, sha256, size).await? {
            Stored::Kept(bytes) => Ok(Content::Kept(std::io::Cursor::new(bytes))),
            Stored::File(path) => tokio::fs::File::open(&path)
                .await
                .map(Content::File)
                .map_err(Error::io(format!("cannot open {}", path.display()))),
        }
    }

    /// [`Store::locate`] from async code: a document too large to be kept
    /// in the store is its file, without a call to the store.
    async fn stored(&self, blobs: &Blobs, sha256: &[u8], size: u64) -> Result<Stored> {
        if size > KEPT_MAX {
            return Ok(Stored::File(blobs.path(sha256)));
        }
        let (blobs, sha256) = (blobs.clone(), sha256.to_vec());
        self.run(move |s| s.locate(&blobs, &sha256, size)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncReadExt;

    /// Small documents remembered and taken one after the other, thousands
    /// of them, leave no trail: what the order keeps stays bounded by what
    /// is held.
    #[test]
    fn taken_documents_leave_no_trail() {
        let dir = std::env::temp_dir().join(format!("trail-{}", crate::ids::transfer_id()));
        let blobs = Blobs::open(&dir).unwrap();
        for i in 0u32..10_000 {
            let key = i.to_be_bytes();
            blobs.remember(&key, vec![7u8; 1024]);
            if i % 10 != 0 {
                assert_eq!(blobs.recall(&key).map(|b| b.len()), Some(1024));
            }
        }
        // The same document (a form every filing attaches) remembered and
        // taken over and over, while another is held.
        let form = b"form".to_vec();
        for _ in 0..10_000 {
            blobs.remember(&form, vec![8u8; 1024]);
            assert!(blobs.recall(&form).is_some());
            blobs.remember(&form, vec![8u8; 1024]);
        }
        let recent = blobs.recent.lock().unwrap();
        assert_eq!(recent.bytes.len(), 1001, "the ones not taken are held");
        assert_eq!(recent.held, 1001 * 1024);
        assert!(
            recent.order.len() <= 2 * recent.bytes.len() + 65,
            "{} places for {} held",
            recent.order.len(),
            recent.bytes.len()
        );
        drop(recent);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What an upload held whole is taken once, by its digest; the oldest
    /// held go first when more would exceed the bound.
    #[test]
    fn just_uploaded_documents_are_taken_once_and_bounded() {
        let dir = std::env::temp_dir().join(format!("recent-{}", crate::ids::transfer_id()));
        let blobs = Blobs::open(&dir).unwrap();
        let third = RECENT_MAX / 3;
        let (a, b, c) = (vec![1u8; third], vec![2u8; third], vec![3u8; third]);
        blobs.remember(b"a", a.clone());
        blobs.remember(b"b", b.clone());
        blobs.remember(b"c", c.clone());
        assert_eq!(blobs.recall(b"b"), Some(b), "held, and taken");
        assert_eq!(blobs.recall(b"b"), None, "taken once");
        // Room for one more third: nothing goes; then a fourth pushes out "a".
        blobs.remember(b"d", vec![4u8; third]);
        blobs.remember(b"e", vec![5u8; third]);
        assert_eq!(blobs.recall(b"a"), None, "the oldest went");
        assert_eq!(blobs.recall(b"c"), Some(c));
        assert!(blobs.recall(b"d").is_some() && blobs.recall(b"e").is_some());
        // More than the bound is never held.
        blobs.remember(b"f", vec![6u8; RECENT_MAX + 1]);
        assert_eq!(blobs.recall(b"f"), None);
        let recent = blobs.recent.lock().unwrap();
        assert_eq!((recent.held, recent.bytes.len()), (0, 0), "nothing left");
        drop(recent);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_small_document_is_read_from_the_store_and_any_other_from_its_file() {
        let (store, dir) = crate::store::scratch("blobs");
        let blobs = Blobs::open(&dir).unwrap();
        let small = vec![7u8; 1024];
        let large = vec![9u8; KEPT_MAX as usize + 1];
        let older = vec![5u8; 300];
        let digest = |bytes: &[u8]| Sha256::digest(bytes).to_vec();

        // Kept twice (the same content again): one row.
        for _ in 0..2 {
            store.write(|c| keep(c, &digest(&small), &small)).unwrap();
        }
        // A large one and a small one stored as files (before this release).
        for bytes in [&large, &older] {
            let temp = TempFile::new(blobs.temp_path());
            std::fs::write(temp.path(), bytes).unwrap();
            blobs.adopt(&temp.keep(), &digest(bytes)).unwrap();
        }
        let kept: i64 = store
            .read(|c| {
                c.query_row("SELECT COUNT(*) FROM document_contents", [], |r| r.get(0))
                    .map_err(Error::store("cannot count"))
            })
            .unwrap();
        assert_eq!(kept, 1);

        let located = store.locate(&blobs, &digest(&small), 1024).unwrap();
        assert!(matches!(located, Stored::Kept(_)), "{located:?}");
        assert!(!blobs.path(&digest(&small)).exists(), "no file for it");
        for (bytes, file) in [(&small, false), (&large, true), (&older, true)] {
            let (sha, size) = (digest(bytes), bytes.len() as u64);
            let located = store.locate(&blobs, &sha, size).unwrap();
            assert_eq!(matches!(located, Stored::File(_)), file, "{size} bytes");
            assert_eq!(&located.read().unwrap(), bytes);
            let mut read = Vec::new();
            let mut content = store.open_document(&blobs, &sha, size).await.unwrap();
            content.read_to_end(&mut read).await.unwrap();
            assert_eq!(&read, bytes, "{size} bytes");
            // In pieces, as the relay reads chunks (the last one short).
            let mut pieces = store.open_pieces(&blobs, &sha, size).await.unwrap();
            assert_eq!(matches!(pieces, Pieces::File(_)), file, "{size} bytes");
            let mut joined = Vec::new();
            for offset in (0..bytes.len()).step_by(4096) {
                let len = 4096.min(bytes.len() - offset);
                joined.extend(pieces.read(offset as u64, len).await.unwrap());
            }
            assert_eq!(&joined, bytes, "{size} bytes in pieces");
            let past = pieces.read(size - 1, 2).await.unwrap_err();
            assert_eq!(
                past.kind(),
                std::io::ErrorKind::UnexpectedEof,
                "{size} bytes"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
