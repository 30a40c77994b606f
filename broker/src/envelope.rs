//! Sealing payloads into signed envelopes, and opening them again.
//!
//! The signature covers the canonical bytes of the envelope: a domain tag and
//! every field but the signature, each length-prefixed, in a fixed order. It
//! therefore does not depend on how a protobuf encoder lays out the message.

use crate::directory::Directory;
use crate::keys::SigningIdentity;
use ecointegra_proto::v1::{Envelope, MessageType};
use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;

/// The envelope schema this code writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

const DOMAIN: &[u8] = b"ecointegra.v1.Envelope\0";

/// The bytes the sender signs.
pub fn canonical_bytes(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        DOMAIN.len()
            + 64
            + envelope.message_id.len()
            + envelope.sender.len()
            + envelope.recipient.len()
            + envelope.payload.len(),
    );
    out.extend_from_slice(DOMAIN);
    put_bytes(&mut out, envelope.message_id.as_bytes());
    out.extend_from_slice(&(envelope.message_type as u32).to_be_bytes());
    put_bytes(&mut out, envelope.sender.as_bytes());
    put_bytes(&mut out, envelope.recipient.as_bytes());
    out.extend_from_slice(&envelope.created_at_ms.to_be_bytes());
    out.extend_from_slice(&envelope.schema_version.to_be_bytes());
    put_bytes(&mut out, &envelope.payload);
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Seals payloads as one institution.
#[derive(Debug, Clone)]
pub struct Sealer {
    institution: String,
    identity: SigningIdentity,
}

impl Sealer {
    pub fn new(institution: impl Into<String>, identity: SigningIdentity) -> Self {
        Self {
            institution: institution.into(),
            identity,
        }
    }

    pub fn institution(&self) -> &str {
        &self.institution
    }

    pub fn identity(&self) -> &SigningIdentity {
        &self.identity
    }

    /// A signed envelope carrying `payload` to `recipient`.
    pub fn seal(
        &self,
        message_id: String,
        message_type: MessageType,
        recipient: &str,
        payload: Vec<u8>,
    ) -> Envelope {
        let mut envelope = Envelope {
            message_id,
            message_type: message_type as i32,
            sender: self.institution.clone(),
            recipient: recipient.to_owned(),
            created_at_ms: crate::now_ms(),
            schema_version: SCHEMA_VERSION,
            payload,
            signature: Vec::new(),
        };
        envelope.signature = self.identity.sign(&canonical_bytes(&envelope)).to_vec();
        envelope
    }
}

impl Sealer {
    /// Encrypts `payload` for the recipient's X25519 key, then seals it.
    pub fn seal_encrypted(
        &self,
        message_id: String,
        message_type: MessageType,
        recipient: &str,
        recipient_key: &[u8; 32],
        payload: &[u8],
    ) -> Result<Envelope, String> {
        let context = context(&message_id, &self.institution, recipient);
        let sealed = crate::crypto::encrypt(recipient_key, &context, payload)?;
        Ok(self.seal(message_id, message_type, recipient, sealed))
    }
}

/// Why a record was not accepted. Goes to the DLQ as its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    /// Short class of the reason, e.g. `decode`, `signature`, `unknown-sender`.
    pub code: &'static str,
    pub reason: String,
    /// The sender the record claims, once known.
    pub claimed_sender: String,
    pub message_id: String,
}

impl Rejection {
    pub fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            claimed_sender: String::new(),
            message_id: String::new(),
        }
    }

    /// The same rejection, naming the envelope it concerns.
    pub fn about(mut self, envelope: &Envelope) -> Self {
        self.claimed_sender = envelope.sender.clone();
        self.message_id = envelope.message_id.clone();
        self
    }
}

/// Decodes a record and checks that it is a well-formed envelope for
/// `recipient`, signed by the sender the directory knows. Nothing in a record
/// is acted on before this returns `Ok`.
pub fn open(bytes: &[u8], directory: &Directory, recipient: &str) -> Result<Envelope, Rejection> {
    let envelope = Envelope::decode(bytes)
        .map_err(|e| Rejection::new("decode", format!("not an ecointegra envelope: {e}")))?;
    let reject = |code, reason: String| Err(Rejection::new(code, reason).about(&envelope));
    if envelope.schema_version != SCHEMA_VERSION {
        return reject(
            "schema",
            format!(
                "schema version {} is not supported (expected {SCHEMA_VERSION})",
                envelope.schema_version
            ),
        );
    }
    if envelope.recipient != recipient {
        return reject(
            "recipient",
            format!(
                "addressed to {:?}, but this is {recipient:?}'s inbox",
                envelope.recipient
            ),
        );
    }
    let Some(sender) = directory.get(&envelope.sender) else {
        return reject(
            "unknown-sender",
            format!(
                "sender {:?} is not in the sector directory",
                envelope.sender
            ),
        );
    };
    let now = crate::now_ms();
    if let Some(reason) = sender.inactive_reason(now) {
        return reject("sender-inactive", reason);
    }
    let Err(reason) = verify_signature(&envelope, &sender.signing_key) else {
        return Ok(envelope);
    };
    // Signed before a key rotation: accepted while the retired key is.
    for (key, accept_until_ms) in &sender.retired_keys {
        if verify_signature(&envelope, key).is_ok() {
            if now <= *accept_until_ms {
                return Ok(envelope);
            }
            return reject(
                "key-retired",
                format!(
                    "{} is signed with a key {} retired and no longer accepts",
                    envelope.message_id, envelope.sender
                ),
            );
        }
    }
    reject("signature", reason)
}

/// Payload types that travel encrypted for their recipient.
pub fn is_encrypted(message_type: MessageType) -> bool {
    matches!(
        message_type,
        MessageType::Chunk
            | MessageType::Manifest
            | MessageType::Notice
            | MessageType::SealedReceipt
    )
}

/// What a payload's encryption is bound to.
fn context(message_id: &str, sender: &str, recipient: &str) -> Vec<u8> {
    [message_id, sender, recipient].join("\0").into_bytes()
}

/// Decrypts (where its type is encrypted) and decodes an opened envelope's
/// payload with this institution's keys, current first.
pub fn open_payload<M: Message + Default>(
    envelope: &Envelope,
    keys: &[SigningIdentity],
) -> Result<M, Rejection> {
    let message_type = MessageType::try_from(envelope.message_type).unwrap_or_default();
    if !is_encrypted(message_type) {
        return payload(envelope);
    }
    let plain = decrypt_payload(envelope, keys)?;
    M::decode(plain.as_slice()).map_err(|e| {
        Rejection::new(
            "decode",
            format!(
                "payload of {} is not a valid {}: {e}",
                envelope.message_id,
                message_type.as_str_name()
            ),
        )
        .about(envelope)
    })
}

/// The decrypted bytes of an opened envelope's encrypted payload, exactly as
/// the sender encrypted them (a sealed receipt's signed envelope is kept byte
/// for byte: its SHA-256 is what the chain of custody names).
pub fn decrypt_payload(
    envelope: &Envelope,
    keys: &[SigningIdentity],
) -> Result<Vec<u8>, Rejection> {
    let context = context(&envelope.message_id, &envelope.sender, &envelope.recipient);
    crate::crypto::decrypt(keys, &context, &envelope.payload).map_err(|e| {
        Rejection::new(
            "decrypt",
            format!(
                "payload of {} cannot be decrypted: {e}",
                envelope.message_id
            ),
        )
        .about(envelope)
    })
}

/// Checks an envelope's signature against one public key.
pub fn verify_signature(envelope: &Envelope, key: &VerifyingKey) -> Result<(), String> {
    let signature = Signature::from_slice(&envelope.signature)
        .map_err(|_| format!("signature of {} is not 64 bytes", envelope.message_id))?;
    key.verify_strict(&canonical_bytes(envelope), &signature)
        .map_err(|_| {
            format!(
                "signature of {} does not verify against {}'s key",
                envelope.message_id, envelope.sender
            )
        })
}

/// Decodes an envelope's payload as the message its type names.
pub fn payload<M: Message + Default>(envelope: &Envelope) -> Result<M, Rejection> {
    M::decode(envelope.payload.as_slice()).map_err(|e| {
        Rejection::new(
            "decode",
            format!(
                "payload of {} is not a valid {}: {e}",
                envelope.message_id,
                MessageType::try_from(envelope.message_type)
                    .map(|t| t.as_str_name())
                    .unwrap_or("message")
            ),
        )
        .about(envelope)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::entry_for;

    fn directory_with(entries: &[(&str, &SigningIdentity)]) -> Directory {
        let mut directory = Directory::default();
        for (id, key) in entries {
            directory
                .insert(&entry_for(id, &id.to_uppercase(), key, 1))
                .unwrap();
        }
        directory
    }

    #[test]
    fn sealed_envelope_opens_and_tampering_is_caught() {
        let senamhi = SigningIdentity::generate();
        let oefa = SigningIdentity::generate();
        let directory = directory_with(&[("senamhi", &senamhi), ("oefa", &oefa)]);
        let sealer = Sealer::new("senamhi", senamhi);
        let envelope = sealer.seal("m-1".into(), MessageType::Chunk, "oefa", b"hello".to_vec());
        let bytes = envelope.encode_to_vec();
        assert_eq!(open(&bytes, &directory, "oefa").unwrap(), envelope);

        let mut tampered = envelope.clone();
        tampered.payload = b"hellO".to_vec();
        let err = open(&tampered.encode_to_vec(), &directory, "oefa").unwrap_err();
        assert_eq!(err.code, "signature");
        assert_eq!(err.claimed_sender, "senamhi");

        let err = open(&bytes, &directory, "minam").unwrap_err();
        assert_eq!(err.code, "recipient");

        let err = open(b"\xff\xffgarbage", &directory, "oefa").unwrap_err();
        assert_eq!(err.code, "decode");
    }

    #[test]
    fn a_message_signed_by_another_institution_is_rejected() {
        let senamhi = SigningIdentity::generate();
        let oefa = SigningIdentity::generate();
        let directory = directory_with(&[("senamhi", &senamhi), ("oefa", &oefa)]);
        // oefa's key, claiming to be senamhi.
        let forger = Sealer::new("senamhi", oefa);
        let envelope = forger.seal("m-2".into(), MessageType::Receipt, "oefa", vec![1, 2, 3]);
        let err = open(&envelope.encode_to_vec(), &directory, "oefa").unwrap_err();
        assert_eq!(err.code, "signature");

        let stranger = Sealer::new("nobody", SigningIdentity::generate());
        let envelope = stranger.seal("m-3".into(), MessageType::Chunk, "oefa", vec![]);
        let err = open(&envelope.encode_to_vec(), &directory, "oefa").unwrap_err();
        assert_eq!(err.code, "unknown-sender");
    }

    #[test]
    fn canonical_bytes_separate_fields() {
        let mut a = Envelope {
            message_id: "ab".into(),
            sender: "c".into(),
            ..Default::default()
        };
        let mut b = a.clone();
        b.message_id = "a".into();
        b.sender = "bc".into();
        assert_ne!(canonical_bytes(&a), canonical_bytes(&b));
        a.signature = vec![9; 64];
        assert_eq!(
            canonical_bytes(&a),
            canonical_bytes(&Envelope {
                signature: vec![],
                ..a.clone()
            })
        );
    }
}

#[cfg(test)]
mod rotation_tests {
    use super::*;
    use crate::directory::entry_for;
    use ecointegra_proto::v1::{EntryStatus, RetiredKey};

    #[test]
    fn retired_keys_are_accepted_until_their_time_and_suspension_refuses() {
        let old = SigningIdentity::generate();
        let new = SigningIdentity::generate();
        let mut entry = entry_for("senamhi", "SENAMHI", &new, 2);
        entry.retired_signing_keys.push(RetiredKey {
            signing_key: old.public_key().as_bytes().to_vec(),
            accept_until_ms: crate::now_ms() + 60_000,
        });
        let mut directory = Directory::default();
        directory.insert(&entry).unwrap();
        let by_old = Sealer::new("senamhi", old.clone()).seal(
            "m".into(),
            MessageType::Chunk,
            "oefa",
            vec![1],
        );
        assert!(open(&by_old.encode_to_vec(), &directory, "oefa").is_ok());

        entry.version = 3;
        entry.retired_signing_keys[0].accept_until_ms = crate::now_ms() - 1;
        directory.insert(&entry).unwrap();
        assert_eq!(
            open(&by_old.encode_to_vec(), &directory, "oefa")
                .unwrap_err()
                .code,
            "key-retired"
        );

        entry.version = 4;
        entry.status = EntryStatus::Suspended as i32;
        directory.insert(&entry).unwrap();
        let by_new =
            Sealer::new("senamhi", new).seal("n".into(), MessageType::Chunk, "oefa", vec![1]);
        assert_eq!(
            open(&by_new.encode_to_vec(), &directory, "oefa")
                .unwrap_err()
                .code,
            "sender-inactive"
        );
    }

    #[test]
    fn encrypted_payloads_open_only_for_the_recipient() {
        let senamhi = SigningIdentity::generate();
        let oefa = SigningIdentity::generate();
        let sealer = Sealer::new("senamhi", senamhi);
        let chunk = ecointegra_proto::v1::Chunk {
            data: b"contenido secreto".to_vec(),
            ..Default::default()
        };
        let envelope = sealer
            .seal_encrypted(
                "c-1".into(),
                MessageType::Chunk,
                "oefa",
                &oefa.encryption_public_key(),
                &chunk.encode_to_vec(),
            )
            .unwrap();
        assert!(!envelope.payload.windows(9).any(|w| w == b"contenido"));
        let opened: ecointegra_proto::v1::Chunk =
            open_payload(&envelope, std::slice::from_ref(&oefa)).unwrap();
        assert_eq!(opened.data, b"contenido secreto");
        let stranger = SigningIdentity::generate();
        let err = open_payload::<ecointegra_proto::v1::Chunk>(&envelope, &[stranger]).unwrap_err();
        assert_eq!(err.code, "decrypt");
    }
}
