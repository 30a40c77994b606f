//! The web console's sessions: who signed in, with which role, until when.
//! Kept in the store so a restart signs nobody out; looked up by the SHA-256
//! of the cookie's value.

use super::{Store, exec, row};
use crate::error::{Error, Result};
use rusqlite::{OptionalExtension, params};

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub role: String,
    /// The token's configured name; never the token.
    pub name: String,
    pub csrf: String,
    pub expires_at_ms: i64,
}

fn key(id: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(id.as_bytes()).to_vec()
}

impl Store {
    /// Records session `id`; forgets every session expired at `now_ms`.
    pub fn open_session(&self, id: &str, row: &SessionRow, now_ms: i64) -> Result<()> {
        self.write(|c| {
            exec(
                c,
                "DELETE FROM web_sessions WHERE expires_at_ms <= ?1",
                params![now_ms],
            )
            .and_then(|_| {
                exec(
                    c,
                    "INSERT OR REPLACE INTO web_sessions
                     (id_sha256, role, name, csrf, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![key(id), row.role, row.name, row.csrf, row.expires_at_ms],
                )
            })
            .map(drop)
            .map_err(Error::store("cannot record a console session"))
        })
    }

    /// Session `id`, unless it is unknown or expired at `now_ms`.
    pub fn session(&self, id: &str, now_ms: i64) -> Result<Option<SessionRow>> {
        self.read(|c| {
            row(
                c,
                "SELECT role, name, csrf, expires_at_ms FROM web_sessions
                 WHERE id_sha256 = ?1 AND expires_at_ms > ?2",
                params![key(id), now_ms],
                |r| {
                    Ok(SessionRow {
                        role: r.get(0)?,
                        name: r.get(1)?,
                        csrf: r.get(2)?,
                        expires_at_ms: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(Error::store("cannot read a console session"))
        })
    }

    /// Ends session `id`.
    pub fn close_session(&self, id: &str) -> Result<()> {
        self.write(|c| {
            exec(
                c,
                "DELETE FROM web_sessions WHERE id_sha256 = ?1",
                params![key(id)],
            )
            .map(drop)
            .map_err(Error::store("cannot end a console session"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecointegra_broker::envelope::Sealer;
    use ecointegra_broker::keys::SigningIdentity;

    #[test]
    fn a_session_lasts_until_it_expires_or_ends_and_its_cookie_is_not_stored() {
        let dir = std::env::temp_dir().join(format!(
            "ecointegra-sessions-{}-{}",
            std::process::id(),
            crate::ids::random_code(8)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.sqlite3");
        let sealer = Sealer::new("oefa", SigningIdentity::generate());
        let store = Store::open(&path, sealer, "eco.tracking".into()).unwrap();
        let row = |expires_at_ms| SessionRow {
            role: "clerk".into(),
            name: "mesa-1".into(),
            csrf: "c".repeat(64),
            expires_at_ms,
        };
        let id = "a".repeat(64);
        store.open_session(&id, &row(2_000), 1_000).unwrap();
        store.open_session("old", &row(1_500), 1_000).unwrap();
        assert_eq!(store.session(&id, 1_999).unwrap(), Some(row(2_000)));
        assert_eq!(store.session(&id, 2_000).unwrap(), None, "expired");
        assert_eq!(store.session("b", 1_000).unwrap(), None, "unknown");
        // Opening another forgets the expired ones.
        store.open_session("new", &row(9_000), 1_600).unwrap();
        let count = |s: &Store| {
            s.read(|c| {
                c.query_row("SELECT COUNT(*) FROM web_sessions", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(Error::store("count"))
            })
            .unwrap()
        };
        assert_eq!(count(&store), 2);
        store.close_session(&id).unwrap();
        assert_eq!(store.session(&id, 1_000).unwrap(), None, "ended");
        drop(store);
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(3).any(|w| w == b"new"),
            "a cookie value is in the store file"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
