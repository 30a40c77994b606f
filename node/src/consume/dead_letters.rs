//! Dead letters as operators handle them: every record this institution could
//! not accept is published to its DLQ topic (the durable, sector-visible
//! copy) and recorded here with its DLQ position, so operators can list,
//! inspect, replay it once the cause is fixed, or discard it with a reason.
//!
//! Replay publishes the original value again, with its original key, to the
//! topic it came from. It is idempotent twice over: a dead letter is replayed
//! at most once (a second call changes nothing), and the inbox ignores a
//! message id it has already applied. A replayed record that fails again
//! becomes a new dead letter.

use super::Consumers;
use crate::audit::Actor;
use crate::error::{Error, Result};
use crate::store::Store;
use ecointegra_broker::kafka::RecordMeta;
use ecointegra_proto::v1::{DeadLetter, DeadLetterEntry, Envelope, MessageType, ReplayOutcome};
use prost::Message;

/// Header on a replayed record naming the dead letter it replays.
pub const REPLAY_HEADER: &str = "ecointegra-replay-of";

/// Records a dead letter and counts it, from async code. Failing to record it
/// locally loses nothing: the DLQ topic has it.
pub async fn recorded(cx: &Consumers, position: (i32, i64), letter: &DeadLetter) {
    cx.metrics.dead_lettered(&letter.reason_code);
    let store = cx.store.clone();
    let topic = cx.kafka.dlq_topic();
    let letter = letter.clone();
    let result = store
        .run(move |s| s.record_dead_letter(&topic, position, &letter))
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "Cannot record a dead letter locally; it is on the DLQ topic.");
    }
}

/// [`replay`] for `actor`, in the audit log.
pub async fn replay_for(cx: &Consumers, actor: &Actor, id: i64) -> Result<ReplayOutcome> {
    let outcome = replay(cx, id).await;
    cx.store
        .audit(actor, "replay dead letter", &id.to_string(), &outcome)
        .await;
    outcome
}

/// Marks dead letter `id` as dealt with by `actor` (its authenticated
/// identity, with `note` after it when given: who the operator says
/// decided), for `reason`; in the audit log. Returns the entry and whether
/// this call discarded it (false: it was discarded before).
pub async fn discard_for(
    store: &Store,
    actor: &Actor,
    id: i64,
    note: &str,
    reason: &str,
) -> Result<(DeadLetterEntry, bool)> {
    let by = match note.trim() {
        "" => actor.name.clone(),
        note if note == actor.name => actor.name.clone(),
        note => format!("{} ({note})", actor.name),
    };
    let reason = reason.to_owned();
    let result = store
        .run(move |s| s.discard_dead_letter(id, &by, &reason))
        .await;
    store
        .audit(actor, "discard dead letter", &id.to_string(), &result)
        .await;
    result
}

/// Replays one dead letter, unless it was replayed before. The dead letter is
/// claimed first (so two concurrent calls publish it once) and released again
/// if Kafka does not take it.
pub async fn replay(cx: &Consumers, id: i64) -> Result<ReplayOutcome> {
    let now = ecointegra_broker::now_ms();
    let claimed = cx.store.run(move |s| s.claim_dead_letter(id, now)).await?;
    let bytes = match claimed {
        Ok(bytes) => bytes,
        Err(replayed_at_ms) => {
            return Ok(ReplayOutcome {
                id,
                replayed: false,
                replayed_at_ms,
                ..Default::default()
            });
        }
    };
    let published = publish(cx, id, &bytes).await;
    match published {
        Ok((topic, partition, offset)) => {
            cx.metrics.dead_letter_replayed();
            tracing::info!(dead_letter = id, %topic, partition, offset, "Dead letter replayed.");
            Ok(ReplayOutcome {
                id,
                replayed: true,
                replayed_at_ms: now,
                topic,
                partition,
                offset,
            })
        }
        Err(error) => {
            let released = cx.store.run(move |s| s.release_dead_letter(id)).await;
            if let Err(e) = released {
                tracing::error!(error = %e, dead_letter = id, "Cannot release a dead letter whose replay failed.");
            }
            Err(error)
        }
    }
}

async fn publish(cx: &Consumers, id: i64, bytes: &[u8]) -> Result<(String, i32, i64)> {
    let letter = DeadLetter::decode(bytes).map_err(|e| Error::Io {
        context: "a stored dead letter is unreadable".into(),
        source: std::io::Error::other(e),
    })?;
    let envelope = Envelope::decode(letter.original_value.as_slice()).ok();
    let meta = RecordMeta {
        message_type: envelope
            .as_ref()
            .and_then(|e| MessageType::try_from(e.message_type).ok())
            .map_or("UNKNOWN", |t| t.as_str_name()),
        sender: envelope.as_ref().map_or("", |e| e.sender.as_str()),
        message_id: envelope.as_ref().map_or("", |e| e.message_id.as_str()),
    };
    let key = String::from_utf8_lossy(&letter.original_key).into_owned();
    let replay_of = id.to_string();
    let (partition, offset) = cx
        .kafka
        .publisher
        .publish(
            &letter.source_topic,
            &key,
            &letter.original_value,
            &meta,
            &[(REPLAY_HEADER, replay_of.as_str())],
        )
        .await?;
    Ok((letter.source_topic, partition, offset))
}
