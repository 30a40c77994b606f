//! What the PIDE adapter keeps: the requests this institution's SGD handed
//! in (by CUO), the CUOs this node issues, the cargos of filings that came
//! from or went to an SGD, and the expiring links from which the SGD
//! downloads a delivered filing's annexes.

use super::*;
use ecointegra_proto::v1::{SgdCargo, SgdDocument};

/// A request an SGD handed in, as first accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgdRequest {
    pub request_sha256: Vec<u8>,
    pub tracking_code: String,
    pub transfer_id: String,
}

impl Store {
    /// The request first accepted under `cuo`, if any.
    pub fn sgd_request(&self, cuo: &str) -> Result<Option<SgdRequest>> {
        self.read(|c| {
            row(c,
                "SELECT request_sha256, tracking_code, transfer_id FROM sgd_requests WHERE cuo = ?1",
                [cuo],
                |r| {
                    Ok(SgdRequest {
                        request_sha256: r.get(0)?,
                        tracking_code: r.get(1)?,
                        transfer_id: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(Error::store("cannot read SGD requests"))
        })
    }

    /// Records the request accepted under `cuo`; the one recorded first
    /// stays (a concurrent twin finds it) and is returned.
    pub fn record_sgd_request(&self, cuo: &str, request: &SgdRequest) -> Result<SgdRequest> {
        self.write(|tx| {
            exec(
                tx,
                "INSERT OR IGNORE INTO sgd_requests (cuo, request_sha256, tracking_code, transfer_id, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    cuo,
                    request.request_sha256,
                    request.tracking_code,
                    request.transfer_id,
                    ecointegra_broker::now_ms()
                ],
            )
            .map_err(Error::store("cannot record the SGD request"))?;
            Ok(())
        })?;
        self.sgd_request(cuo)?.ok_or_else(|| Error::Io {
            context: "the SGD request just recorded is missing".into(),
            source: std::io::Error::other("sgd_requests"),
        })
    }

    /// Issues the next CUO of this node: its two-digit prefix from the
    /// directory and eight digits of its own counter, which never repeats.
    pub fn next_cuo(&self, prefix: u32) -> Result<String> {
        self.write(|tx| next_cuo(tx, prefix))
    }

    /// The copy of a filing with this CUO in `direction`, newest first.
    pub fn filing_by_cuo(&self, cuo: &str, direction: Direction) -> Result<Option<FilingRow>> {
        self.read(|c| {
            Ok(query_filings(
                c,
                "cuo = ?1 AND direction = ?2 ORDER BY id DESC LIMIT 1",
                params![cuo, direction as i64],
            )?
            .into_iter()
            .next())
        })
    }

    /// Gives an inbound filing that came without PIDE's fields a CUO of this
    /// node (it is about to be delivered to the SGD); returns the fields it
    /// has then. A filing that has them keeps them.
    pub fn ensure_sgd(
        &self,
        filing_id: i64,
        prefix: u32,
        fields: impl FnOnce(String) -> SgdDocument,
    ) -> Result<SgdDocument> {
        self.write(|tx| {
            let held = query_filings(tx, "id = ?1", [filing_id])?
                .into_iter()
                .next()
                .ok_or_else(|| Error::NotFound(format!("filing #{filing_id}")))?;
            if let Some(sgd) = held.data.sgd.filter(|s| !s.cuo.is_empty()) {
                return Ok(sgd);
            }
            let sgd = fields(next_cuo(tx, prefix)?);
            exec(
                tx,
                "UPDATE filings SET sgd = ?2, cuo = ?3 WHERE id = ?1",
                params![filing_id, sgd.encode_to_vec(), sgd.cuo],
            )
            .map_err(Error::store("cannot record the filing's CUO"))?;
            Ok(sgd)
        })
    }

    /// The cargo of a transfer, if one arrived.
    pub fn sgd_cargo(&self, transfer_id: &str) -> Result<Option<SgdCargo>> {
        self.read(|c| {
            let bytes: Option<Vec<u8>> = row(
                c,
                "SELECT cargo FROM sgd_cargos WHERE transfer_id = ?1",
                [transfer_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(Error::store("cannot read cargos"))?;
            Ok(bytes.and_then(|b| SgdCargo::decode(b.as_slice()).ok()))
        })
    }

    /// A link for the SGD to download `transfer_id`'s annexes until
    /// `expires_at_ms`: its random token.
    pub fn sgd_link(&self, transfer_id: &str, expires_at_ms: i64) -> Result<String> {
        let token = crate::ids::random_code(32);
        self.write(|tx| {
            exec(
                tx,
                "DELETE FROM sgd_links WHERE expires_at_ms < ?1",
                [ecointegra_broker::now_ms()],
            )
            .map_err(Error::store("cannot expire links"))?;
            exec(
                tx,
                "INSERT INTO sgd_links (token, transfer_id, expires_at_ms) VALUES (?1, ?2, ?3)",
                params![token, transfer_id, expires_at_ms],
            )
            .map_err(Error::store("cannot record the link"))?;
            Ok(())
        })?;
        Ok(token)
    }

    /// The transfer a link's token opens, while it has not expired.
    pub fn sgd_link_transfer(&self, token: &str) -> Result<Option<String>> {
        self.read(|c| {
            row(
                c,
                "SELECT transfer_id FROM sgd_links WHERE token = ?1 AND expires_at_ms >= ?2",
                params![token, ecointegra_broker::now_ms()],
                |r| r.get(0),
            )
            .optional()
            .map_err(Error::store("cannot read links"))
        })
    }
}

/// Stores a transfer's cargo (the newest one stays), in the caller's
/// transaction.
pub(crate) fn store_cargo(tx: &Connection, transfer_id: &str, cargo: &SgdCargo) -> Result<()> {
    exec(
        tx,
        "INSERT INTO sgd_cargos (transfer_id, cargo, at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (transfer_id) DO UPDATE SET cargo = excluded.cargo, at_ms = excluded.at_ms",
        params![
            transfer_id,
            cargo.encode_to_vec(),
            ecointegra_broker::now_ms()
        ],
    )
    .map(drop)
    .map_err(Error::store("cannot store the cargo"))
}

fn next_cuo(tx: &Connection, prefix: u32) -> Result<String> {
    let n: i64 = row(
        tx,
        "INSERT INTO counters (name, value) VALUES ('cuo', 1)
             ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
        [],
        |r| r.get(0),
    )
    .map_err(Error::store("cannot issue a CUO"))?;
    if n >= 100_000_000 {
        return Err(Error::FailedPrecondition(
            "this node has issued all 100,000,000 CUOs of its prefix".into(),
        ));
    }
    Ok(format!("{prefix:02}{n:08}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Store, std::path::PathBuf) {
        crate::store::scratch("sgd")
    }

    #[test]
    fn annex_links_open_their_transfer_until_they_expire() {
        let (store, dir) = store();
        let now = ecointegra_broker::now_ms();
        let live = store.sgd_link("transfer-1", now + 60_000).unwrap();
        let dead = store.sgd_link("transfer-2", now - 1).unwrap();
        assert_eq!(live.len(), 32);
        assert_ne!(live, dead);
        assert_eq!(
            store.sgd_link_transfer(&live).unwrap().as_deref(),
            Some("transfer-1")
        );
        assert_eq!(store.sgd_link_transfer(&dead).unwrap(), None, "expired");
        assert_eq!(store.sgd_link_transfer("guess").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cuos_carry_the_prefix_and_never_repeat() {
        let (store, dir) = store();
        let first = store.next_cuo(12).unwrap();
        let second = store.next_cuo(12).unwrap();
        assert_eq!(first, "1200000001");
        assert_eq!(second, "1200000002");
        // The first request under a CUO stays; a twin finds it.
        let request = |digest: u8| SgdRequest {
            request_sha256: vec![digest; 32],
            tracking_code: "OEFA-2027-ABCDEFGH".into(),
            transfer_id: "t".into(),
        };
        assert_eq!(
            store.record_sgd_request(&first, &request(1)).unwrap(),
            request(1)
        );
        assert_eq!(
            store.record_sgd_request(&first, &request(2)).unwrap(),
            request(1)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
