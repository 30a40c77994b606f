//! Directory entries learnt from the directory topic.

use super::*;

impl Store {
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
}
