//! Dead letters: records an institution could not accept, kept with the reason
//! and the original bytes on its DLQ topic, so that nothing is silently dropped
//! and no partition is ever blocked.

use crate::Error;
use crate::envelope::Rejection;
use crate::kafka::{Publisher, RecordMeta};
use ecointegra_proto::v1::DeadLetter;
use prost::Message;
use sha2::{Digest, Sha256};

/// Where the rejected record was read.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// What a dead letter keeps of a record too large to be carried whole.
pub const TRUNCATED_VALUE_BYTES: usize = 64 * 1024;
/// Room kept in a dead letter for everything but the original value.
const LETTER_OVERHEAD: usize = 16 * 1024;

/// The dead letter of a record: its value whole if the letter still fits in
/// `max_record_bytes`, otherwise the value's SHA-256, size and first 64 KiB.
pub fn dead_letter(rejection: &Rejection, source: Source<'_>, max_record_bytes: u32) -> DeadLetter {
    let value = source.value.unwrap_or_default();
    let fits = value.len() + source.key.map_or(0, <[u8]>::len) + LETTER_OVERHEAD
        <= max_record_bytes as usize;
    let kept = if fits {
        value
    } else {
        &value[..value.len().min(TRUNCATED_VALUE_BYTES)]
    };
    let key = source.key.unwrap_or_default();
    DeadLetter {
        reason: rejection.reason.clone(),
        reason_code: rejection.code.to_owned(),
        claimed_sender: rejection.claimed_sender.clone(),
        source_topic: source.topic.to_owned(),
        source_partition: source.partition,
        source_offset: source.offset,
        dead_at_ms: crate::now_ms(),
        original_value: kept.to_vec(),
        // A key is the sender's choice of bytes too: keep at most 1 KiB.
        original_key: key[..key.len().min(1024)].to_vec(),
        message_id: rejection.message_id.chars().take(512).collect(),
        original_size: value.len() as u64,
        original_sha256: Sha256::digest(value).to_vec(),
        truncated: !fits,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(value: &[u8], limit: u32) -> DeadLetter {
        dead_letter(
            &Rejection::new("too-large", "too large"),
            Source {
                topic: "t",
                partition: 0,
                offset: 7,
                key: Some(b"k"),
                value: Some(value),
            },
            limit,
        )
    }

    #[test]
    fn a_record_that_fits_is_kept_whole() {
        let l = letter(b"abc", 1_000_000);
        assert_eq!(l.original_value, b"abc");
        assert!(!l.truncated);
        assert_eq!(l.original_size, 3);
        assert_eq!(l.original_sha256, Sha256::digest(b"abc").to_vec());
    }

    #[test]
    fn a_record_too_large_keeps_its_digest_size_and_first_64_kib() {
        let value: Vec<u8> = (0..1_045_000u32).map(|i| i as u8).collect();
        let l = letter(&value, 1_000_000);
        assert!(l.truncated);
        assert_eq!(l.original_size, 1_045_000);
        assert_eq!(l.original_value, &value[..TRUNCATED_VALUE_BYTES]);
        assert_eq!(l.original_sha256, Sha256::digest(&value).to_vec());
        assert!(l.encoded_len() < 1_000_000 - 1024);
    }
}
