//! Dead letters: records an institution could not accept, kept with the reason
//! and the original bytes on its DLQ topic, so that nothing is silently dropped
//! and no partition is ever blocked.

use crate::Error;
use crate::envelope::Rejection;
use crate::kafka::{Publisher, RecordMeta};
use ecointegra_proto::v1::DeadLetter;
use prost::Message;

/// Where the rejected record was read.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

pub fn dead_letter(rejection: &Rejection, source: Source<'_>) -> DeadLetter {
    DeadLetter {
        reason: rejection.reason.clone(),
        reason_code: rejection.code.to_owned(),
        claimed_sender: rejection.claimed_sender.clone(),
        source_topic: source.topic.to_owned(),
        source_partition: source.partition,
        source_offset: source.offset,
        dead_at_ms: crate::now_ms(),
        original_value: source.value.unwrap_or_default().to_vec(),
        original_key: source.key.unwrap_or_default().to_vec(),
        message_id: rejection.message_id.clone(),
    }
}

/// Publishes a dead letter to `dlq_topic`, keyed by the original key, and waits
/// for the broker's acknowledgement.
pub async fn publish(
    publisher: &Publisher,
    dlq_topic: &str,
    institution: &str,
    letter: &DeadLetter,
) -> Result<(i32, i64), Error> {
    let key = String::from_utf8_lossy(&letter.original_key).into_owned();
    let meta = RecordMeta {
        message_type: "DEAD_LETTER",
        sender: institution,
        message_id: &letter.message_id,
    };
    publisher
        .publish(
            dlq_topic,
            &key,
            &letter.encode_to_vec(),
            &meta,
            &[(crate::kafka::headers::REASON, letter.reason_code.as_str())],
        )
        .await
}
