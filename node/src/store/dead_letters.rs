//! Dead letters as the store keeps them: every record this institution could
//! not accept, with its DLQ position, its reason and its original bytes, and
//! whether it was replayed or discarded (by whom, why).

use super::Store;
use super::{exec, row};
use crate::error::{Error, Result};
use ecointegra_proto::v1::{
    DeadLetter, DeadLetterDetail, DeadLetterEntry, DeadLetterState, Envelope, MessageType,
};
use prost::Message;
use rusqlite::{Connection, OptionalExtension, Row, params};

const COLUMNS: &str = "id, dlq_topic, dlq_partition, dlq_offset, source_topic, source_partition,
    source_offset, reason_code, reason, claimed_sender, message_id, record_key, dead_at_ms, size,
    replayed_at_ms, discarded_at_ms, discarded_by, discard_reason";

fn entry(r: &Row<'_>) -> rusqlite::Result<DeadLetterEntry> {
    let replayed_at_ms: i64 = r.get(14)?;
    let discarded_at_ms: i64 = r.get(15)?;
    let state = if discarded_at_ms > 0 {
        DeadLetterState::Discarded
    } else if replayed_at_ms > 0 {
        DeadLetterState::Replayed
    } else {
        DeadLetterState::Open
    };
    Ok(DeadLetterEntry {
        id: r.get(0)?,
        state: state as i32,
        dlq_topic: r.get(1)?,
        dlq_partition: r.get(2)?,
        dlq_offset: r.get(3)?,
        source_topic: r.get(4)?,
        source_partition: r.get(5)?,
        source_offset: r.get(6)?,
        reason_code: r.get(7)?,
        reason: r.get(8)?,
        claimed_sender: r.get(9)?,
        message_id: r.get(10)?,
        record_key: r.get(11)?,
        dead_at_ms: r.get(12)?,
        size: r.get::<_, i64>(13)? as u64,
        replayed_at_ms,
        discarded_at_ms,
        discarded_by: r.get(16)?,
        discard_reason: r.get(17)?,
    })
}

fn get_entry(c: &Connection, id: i64) -> Result<Option<DeadLetterEntry>> {
    row(
        c,
        &format!("SELECT {COLUMNS} FROM dead_letters WHERE id = ?1"),
        [id],
        entry,
    )
    .optional()
    .map_err(Error::store("cannot read dead letters"))
}

/// Records a dead letter published at `(dlq_partition, dlq_offset)` of
/// `dlq_topic`. A record dead-lettered twice (a crash before its offset was
/// stored) is recorded once.
/// Dead letters, newest first.
/// (open, total) dead letters.
/// One dead letter with its original bytes.
/// Open dead letters, oldest first.
/// Marks a dead letter dealt with. Discarding it again changes nothing.
/// What a value says about itself if it decodes as an envelope.
fn summary(value: &[u8]) -> String {
    match Envelope::decode(value) {
        Ok(e) if !e.message_id.is_empty() => format!(
            "envelope {} from {} to {}, message id {}, created {} (signature not checked here)",
            MessageType::try_from(e.message_type)
                .map(|t| t.as_str_name())
                .unwrap_or("of unknown type"),
            e.sender,
            e.recipient,
            e.message_id,
            crate::ids::format_utc(e.created_at_ms)
        ),
        _ => format!("{} bytes that do not decode as an envelope", value.len()),
    }
}

impl Store {
    pub fn record_dead_letter(
        &self,
        dlq_topic: &str,
        (dlq_partition, dlq_offset): (i32, i64),
        letter: &DeadLetter,
    ) -> Result<()> {
        self.write(|tx| {
            exec(tx,
            "INSERT OR IGNORE INTO dead_letters (dlq_topic, dlq_partition, dlq_offset, source_topic,
                source_partition, source_offset, reason_code, reason, claimed_sender, message_id,
                record_key, dead_at_ms, size, letter)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                dlq_topic,
                dlq_partition,
                dlq_offset,
                letter.source_topic,
                letter.source_partition,
                letter.source_offset,
                letter.reason_code,
                letter.reason,
                letter.claimed_sender,
                letter.message_id,
                String::from_utf8_lossy(&letter.original_key),
                letter.dead_at_ms,
                letter.original_value.len() as i64,
                letter.encode_to_vec(),
            ],
        )
        .map(drop)
        .map_err(Error::store("cannot record a dead letter"))
        })
    }

    pub fn dead_letters(&self, include_closed: bool, limit: u32) -> Result<Vec<DeadLetterEntry>> {
        self.read(|c| {
            let condition = if include_closed {
                ""
            } else {
                "WHERE replayed_at_ms = 0 AND discarded_at_ms = 0"
            };
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM dead_letters {condition} ORDER BY id DESC LIMIT ?1"
                ))
                .map_err(Error::store("cannot read dead letters"))?;
            stmt.query_map([limit], entry)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(Error::store("cannot read dead letters"))
        })
    }

    pub fn dead_letter_counts(&self) -> Result<(i64, i64)> {
        self.read(|c| {
        row(c,
            "SELECT COALESCE(SUM(replayed_at_ms = 0 AND discarded_at_ms = 0), 0), COUNT(*) FROM dead_letters",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(Error::store("cannot count dead letters"))
    })
    }

    pub fn dead_letter_detail(&self, id: i64) -> Result<DeadLetterDetail> {
        let (entry, letter) = self.read(|c| {
            let Some(entry) = get_entry(c, id)? else {
                return Err(Error::NotFound(format!("dead letter {id}")));
            };
            let bytes: Vec<u8> = row(
                c,
                "SELECT letter FROM dead_letters WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .map_err(Error::store("cannot read dead letters"))?;
            Ok((entry, bytes))
        })?;
        let letter = DeadLetter::decode(letter.as_slice()).map_err(|e| Error::Io {
            context: "a stored dead letter is unreadable".into(),
            source: std::io::Error::other(e),
        })?;
        Ok(DeadLetterDetail {
            entry: Some(entry),
            envelope_summary: summary(&letter.original_value),
            original_value: letter.original_value,
            original_key: letter.original_key,
        })
    }

    pub fn open_dead_letter_ids(&self) -> Result<Vec<i64>> {
        self.read(|c| {
        let mut stmt = c
            .prepare("SELECT id FROM dead_letters WHERE replayed_at_ms = 0 AND discarded_at_ms = 0 ORDER BY id")
            .map_err(Error::store("cannot read dead letters"))?;
        stmt.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(Error::store("cannot read dead letters"))
    })
    }

    pub fn discard_dead_letter(
        &self,
        id: i64,
        by: &str,
        reason: &str,
    ) -> Result<(DeadLetterEntry, bool)> {
        if reason.trim().is_empty() {
            return Err(Error::invalid(
                "reason",
                "is required: say why it is discarded",
            ));
        }
        if by.trim().is_empty() {
            return Err(Error::invalid("by", "is required: say who discards it"));
        }
        let now = ecointegra_broker::now_ms();
        self.write(|tx| {
        let changed = exec(tx,

                "UPDATE dead_letters SET discarded_at_ms = ?2, discarded_by = ?3, discard_reason = ?4
                 WHERE id = ?1 AND discarded_at_ms = 0",
                params![id, now, by.trim(), reason.trim()],
            )
            .map_err(Error::store("cannot update a dead letter"))?;
        match get_entry(tx, id)? {
            Some(entry) => Ok((entry, changed == 1)),
            None => Err(Error::NotFound(format!("dead letter {id}"))),
        }
    })
    }

    /// Claims a dead letter for replay: its original record, or when it was
    /// replayed before. Two concurrent claims get it once.
    pub fn claim_dead_letter(
        &self,
        id: i64,
        now: i64,
    ) -> Result<std::result::Result<Vec<u8>, i64>> {
        self.write(|tx| {
            let Some(entry) = get_entry(tx, id)? else {
                return Err(Error::NotFound(format!("dead letter {id}")));
            };
            if entry.discarded_at_ms > 0 {
                return Err(Error::FailedPrecondition(format!(
                    "dead letter {id} was discarded by {}: {}",
                    entry.discarded_by, entry.discard_reason
                )));
            }
            if entry.replayed_at_ms > 0 {
                return Ok(Err(entry.replayed_at_ms));
            }
            exec(
                tx,
                "UPDATE dead_letters SET replayed_at_ms = ?2 WHERE id = ?1 AND replayed_at_ms = 0",
                params![id, now],
            )
            .map_err(Error::store("cannot update a dead letter"))?;
            let bytes: Vec<u8> = row(
                tx,
                "SELECT letter FROM dead_letters WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .map_err(Error::store("cannot read dead letters"))?;
            Ok(Ok(bytes))
        })
    }

    /// Releases a claim whose replay Kafka did not take.
    pub fn release_dead_letter(&self, id: i64) -> Result<()> {
        self.write(|tx| {
            exec(
                tx,
                "UPDATE dead_letters SET replayed_at_ms = 0 WHERE id = ?1",
                [id],
            )
            .map(drop)
            .map_err(Error::store("cannot update a dead letter"))
        })
    }
}
