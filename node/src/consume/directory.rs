//! The directory consumer: follows `<prefix>.directory`, the signed entries
//! of the sector directory. A new institution, a key rotation or a
//! suspension takes effect without a restart, once its batch commits.

use super::apply::{Applied, Batch};
use super::{Consumers, Feed, Stop};
use crate::store::Position;
use ecointegra_broker::envelope::Rejection;
use ecointegra_proto::v1::{DirectoryEntry, SignedDirectoryEntry};
use rusqlite::Connection;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Follows the directory topic: new institutions, key rotations, suspensions.
pub async fn run(cx: Arc<Consumers>, cancel: CancellationToken) {
    super::consume(cx, Feed::Directory, cancel).await
}

impl Batch<'_> {
    /// A signed directory entry from the topic: verified against the trust
    /// anchor, kept, and in force once its batch commits.
    pub(super) fn directory_entry(
        &mut self,
        c: &Connection,
        signed: SignedDirectoryEntry,
        entry: DirectoryEntry,
        position: Position<'_>,
    ) -> Result<Applied, Stop> {
        let mut directory = self
            .directory
            .clone()
            .unwrap_or_else(|| (*self.cx.trust.directory()).clone());
        let changed = directory
            .insert(&entry)
            .map_err(|reason| Rejection::new("directory", reason))?;
        self.cx.store.apply_directory_entry(
            c,
            position,
            &entry.institution_id,
            entry.version,
            &signed,
        )?;
        if !changed {
            return Ok(Applied::Nothing);
        }
        self.directory = Some(directory);
        Ok(Applied::DirectoryEntry {
            institution: entry.institution_id,
            version: entry.version,
        })
    }
}
