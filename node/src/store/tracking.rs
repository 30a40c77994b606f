//! The sector timeline: tracking events and each filing's logical clock.

use super::*;

/// A filing's timeline number here, by its tracking code.
pub(super) const TIMELINE_OF: &str = "SELECT id FROM timelines WHERE tracking_code = ?1";

/// A filing's clock here (none before its timeline starts).
pub(super) const CLOCK: &str = "SELECT seq FROM timelines WHERE tracking_code = ?1";

/// Stores a step unless its timeline knows its id.
pub(super) const STORE_EVENT: &str = "INSERT INTO tracking_events
     (event_id, tracking_code, timeline, seq, timestamp_ms, institution, envelope)
     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
     WHERE NOT EXISTS (SELECT 1 FROM tracking_events WHERE timeline = ?3 AND event_id = ?1)";

/// Whether a filing's timeline holds a step signed in exactly these bytes.
pub(super) const SIGNED_HERE: &str = "SELECT envelope = ?3 FROM tracking_events
     WHERE timeline = (SELECT id FROM timelines WHERE tracking_code = ?1) AND event_id = ?2";

impl Store {
    /// Records a step in this node's own timeline and queues its signed
    /// tracking event for the sector. Returns the step's logical clock.
    pub(crate) fn emit(&self, tx: &Connection, step: Step<'_>) -> Result<u64> {
        let known = clock(tx, step.tracking_code)?;
        let seq = known.max(step.after_seq) + 1;
        self.emit_at(tx, step, seq)
    }

    /// Queues this node's step `step` of a filing's timeline as step number
    /// `seq` exactly: for a step others already counted on (the SENT step the
    /// destination's DELIVERED follows), even if later steps arrived first.
    pub(crate) fn emit_at(&self, tx: &Connection, step: Step<'_>, seq: u64) -> Result<u64> {
        let event = TrackingEvent {
            event_id: format!("{}/{}", self.institution, step.key),
            tracking_code: step.tracking_code.to_owned(),
            institution: self.institution.clone(),
            status: step.status as i32,
            timestamp_ms: ecointegra_broker::now_ms(),
            hop: step.hop,
            actor_role: step.actor_role.to_owned(),
            holder: step.holder.to_owned(),
            seq,
            verifier: step.verifier,
            due_date: step.due_date.to_owned(),
            transfer_kind: step.kind as i32,
            counterpart: step.counterpart.to_owned(),
            actor: step.actor.to_owned(),
            sender_reads_up_to: ecointegra_broker::envelope::SCHEMA_VERSION,
            cuo: step.cuo.to_owned(),
        };
        let sealed = sealed_event(&self.sealer, &event);
        if !insert_event(tx, &event, &sealed)? {
            // This step was taken before (its id is known): once is enough.
            return Ok(seq);
        }
        self.queue_step(tx, &event)?;
        queue_envelope(tx, &self.tracking_topic, "*", step.tracking_code, &sealed)?;
        Ok(seq)
    }

    /// The timeline of a filing as this node knows it, in order.
    pub fn timeline(&self, tracking_code: &str) -> Result<Vec<TrackingEvent>> {
        Ok(self
            .signed_timeline(tracking_code)?
            .into_iter()
            .map(|(event, _)| event)
            .collect())
    }

    /// The timeline of a filing with the envelope each step was signed in
    /// (None for a step stored before envelopes were kept), in order.
    pub fn signed_timeline(
        &self,
        tracking_code: &str,
    ) -> Result<Vec<(TrackingEvent, Option<Vec<u8>>)>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT event, envelope FROM tracking_events
                     WHERE timeline = (SELECT id FROM timelines WHERE tracking_code = ?1)
                     ORDER BY seq, timestamp_ms, institution, event_id",
                )
                .map_err(Error::store("cannot read the timeline"))?;
            let rows = stmt
                .query_map([tracking_code], |r| {
                    Ok((
                        r.get::<_, Option<Vec<u8>>>(0)?,
                        r.get::<_, Option<Vec<u8>>>(1)?,
                    ))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(Error::store("cannot read the timeline"))?;
            Ok(rows
                .into_iter()
                .filter_map(|(event, signed)| {
                    Some((stored_event(event, signed.as_deref())?, signed))
                })
                .collect())
        })
    }

    /// The logical clock of a filing's timeline here.
    pub fn tracking_seq(&self, tracking_code: &str) -> Result<u64> {
        self.read(|c| clock(c, tracking_code))
    }

    /// A tracking event (another institution's, or this node's own coming
    /// back), into this node's copy of the sector timeline. The event id is
    /// unique in its filing's timeline, so a replayed event changes nothing
    /// by itself: no message id is recorded for it (six rows a filing less
    /// across two nodes).
    pub fn apply_tracking_event(
        &self,
        c: &Connection,
        position: Position<'_>,
        event: &TrackingEvent,
        signed: &[u8],
    ) -> Result<()> {
        self.apply(c, position, None, |tx| {
            if insert_event(tx, event, signed)? {
                self.queue_step(tx, event)?;
            }
            Ok(())
        })
        .map(drop)
    }
}

/// The highest step number known for a filing, from its timeline or from a
/// transfer or notice that carried another node's clock.
pub(crate) fn clock(c: &Connection, tracking_code: &str) -> Result<u64> {
    row(c, CLOCK, [tracking_code], |r| r.get::<_, i64>(0))
        .optional()
        .map(|seq| seq.unwrap_or(0) as u64)
        .map_err(Error::store("cannot read the timeline"))
}

/// Whether the timeline of `tracking_code` holds tracking event `event_id`
/// signed in exactly the envelope `value` (as this node stores each step it
/// signs).
pub(crate) fn signed_here(
    c: &Connection,
    tracking_code: &str,
    event_id: &str,
    value: &[u8],
) -> Result<bool> {
    row(
        c,
        SIGNED_HERE,
        params![tracking_code, event_id, value],
        |r| r.get::<_, Option<bool>>(0),
    )
    .optional()
    .map(|same| same.flatten().unwrap_or(false))
    .map_err(Error::store("cannot read the timeline"))
}

/// Learns that another node has reached step `seq` of a filing.
pub(crate) fn advance_clock(tx: &Connection, tracking_code: &str, seq: u64) -> Result<()> {
    exec(
        tx,
        "INSERT INTO timelines (tracking_code, seq) VALUES (?1, ?2)
         ON CONFLICT (tracking_code) DO UPDATE SET seq = MAX(seq, excluded.seq)",
        params![tracking_code, seq as i64],
    )
    .map(drop)
    .map_err(Error::store("cannot advance the timeline clock"))
}

/// The number of a filing's timeline here, given the first time its
/// tracking code is seen (a step, a copy of the filing or a receipt): what
/// its steps, copies and receipts are found by.
pub(super) fn timeline_number(tx: &Connection, tracking_code: &str) -> Result<i64> {
    let known = row(tx, TIMELINE_OF, [tracking_code], |r| r.get::<_, i64>(0))
        .optional()
        .map_err(Error::store("cannot read the timeline"))?;
    if let Some(id) = known {
        return Ok(id);
    }
    exec(
        tx,
        "INSERT INTO timelines (tracking_code, seq) VALUES (?1, 0)",
        [tracking_code],
    )
    .map(|_| tx.last_insert_rowid())
    .map_err(Error::store("cannot start a timeline"))
}

/// A tracking event signed for the whole sector, as it is published and
/// stored.
pub(crate) fn sealed_event(sealer: &Sealer, event: &TrackingEvent) -> Vec<u8> {
    sealer
        .seal(
            event.event_id.clone(),
            MessageType::TrackingEvent,
            crate::ids::BROADCAST,
            event.encode_to_vec(),
        )
        .encode_to_vec()
}

/// A stored step: from the envelope it was signed in, whose payload it is
/// (stored once, not a second time beside it), or as it was stored before
/// envelopes were kept.
fn stored_event(event: Option<Vec<u8>>, signed: Option<&[u8]>) -> Option<TrackingEvent> {
    match (event, signed) {
        (Some(event), _) => TrackingEvent::decode(event.as_slice()).ok(),
        (None, Some(signed)) => {
            let envelope = ecointegra_proto::v1::Envelope::decode(signed).ok()?;
            ecointegra_broker::envelope::payload(&envelope).ok()
        }
        (None, None) => None,
    }
}

/// Stores a tracking event with the envelope its institution signed it in,
/// and moves its timeline's clock up to it; false if its filing's timeline
/// knew its id (looked for in the statement that stores it, on the store's
/// one writer connection).
pub(crate) fn insert_event(tx: &Connection, event: &TrackingEvent, signed: &[u8]) -> Result<bool> {
    let timeline = timeline_number(tx, &event.tracking_code)?;
    let seq = event.seq as i64;
    let stored = exec(
        tx,
        STORE_EVENT,
        params![
            event.event_id,
            event.tracking_code,
            timeline,
            seq,
            event.timestamp_ms,
            event.institution,
            signed
        ],
    )
    .map(|n| n == 1)
    .map_err(Error::store("cannot store a tracking event"))?;
    if stored {
        exec(
            tx,
            "UPDATE timelines SET seq = ?2 WHERE id = ?1 AND seq < ?2",
            params![timeline, seq],
        )
        .map_err(Error::store("cannot advance the timeline clock"))?;
    }
    Ok(stored)
}
