//! Content-addressed document files.
//!
//! A document lives at `blobs/<2 hex>/<64 hex>`, named by its SHA-256. Files are
//! written under `tmp/` (uploads) or `partial/` (transfers being assembled),
//! fsynced, then renamed into place, so a file under `blobs/` is always whole.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
}

impl Blobs {
    pub fn open(data_dir: &Path) -> Result<Self> {
        let blobs = Self {
            root: data_dir.to_owned(),
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

    /// Moves a whole, fsynced file into the store under its digest. Where the
    /// same content is already stored the new copy is simply removed.
    pub fn adopt(&self, file: &Path, sha256: &[u8]) -> Result<PathBuf> {
        let target = self.path(sha256);
        let dir = target.parent().expect("blob paths have a parent");
        private_dir(dir).map_err(Error::io("cannot create a blob directory"))?;
        if target.exists() {
            let _ = std::fs::remove_file(file);
        } else {
            std::fs::rename(file, &target).map_err(Error::io(format!(
                "cannot move {} into the store",
                file.display()
            )))?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(Error::io("cannot sync a blob directory"))?;
        }
        Ok(target)
    }
}

/// SHA-256 and length of a file, read in bounded pieces.
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
