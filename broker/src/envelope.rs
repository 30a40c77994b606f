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
    if let Err(reason) = verify_signature(&envelope, &sender.signing_key) {
        return reject("signature", reason);
    }
    Ok(envelope)
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
    use crate::directory::{DirectoryFile, EntryFile};

    fn directory_with(entries: &[(&str, &SigningIdentity)]) -> Directory {
        Directory::from_file(DirectoryFile {
            institution: entries
                .iter()
                .map(|(id, key)| EntryFile {
                    id: (*id).into(),
                    name: id.to_uppercase(),
                    signing_key: key.public_key_hex(),
                })
                .collect(),
        })
        .unwrap()
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
