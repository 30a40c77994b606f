//! Sealing payloads into signed envelopes, and opening them again.
//!
//! The signature covers the canonical bytes of the envelope: a domain tag and
//! every field but the signature, each length-prefixed, in a fixed order. It
//! therefore does not depend on how a protobuf encoder lays out the message.
//!
//! Envelope schemas: 1; 2, which also signs the newest schema its sender
//! reads and the id of the key that signed; and 3, which signs the payload's
//! SHA-256 instead of the payload itself (Ed25519 hashes what it signs twice
//! with SHA-512, and once more to verify: for a 512 KiB chunk that was most of
//! a node's work, where one SHA-256 now does); and 4, whose envelopes are signed
//! as 3's but whose chunks carry no digest of their own (the chunk is
//! authenticated by its AEAD and its envelope's signature, and its document by
//! the SHA-256 its manifest names, so a digest per chunk was two passes of
//! SHA-256 over every byte for nothing); and 5, whose chunk envelopes sign
//! their encrypted payload by its encapsulated key, its AEAD tag and its
//! length instead of its SHA-256 (see [`CHUNKS_TAG_SIGNED`]); and 6, whose
//! encrypted payloads are sealed in the sender's session to the recipient's
//! key, with a salt of their own (see [`SESSION_SEALED`]). A node reads all
//! six and writes to each institution the newest that institution has said
//! it reads ([`Negotiation`]), so nodes of this release and of the ones before
//! work side by side during a rolling upgrade.

use crate::directory::Directory;
use crate::keys::SigningIdentity;
use ecointegra_proto::v1::{Envelope, MessageType};
use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The newest envelope schema this code writes and reads.
pub const SCHEMA_VERSION: u32 = 6;
/// The first schema that signs a payload by its SHA-256 (and whose
/// manifests may carry small documents inside them).
pub const SIGNED_BY_DIGEST: u32 = 3;
/// The first schema whose chunks may travel without a digest of their own.
pub const CHUNKS_UNDIGESTED: u32 = 4;
/// The first schema whose chunk envelopes sign the payload's encapsulated key,
/// AEAD tag and length, not its SHA-256: two passes of SHA-256 over every
/// byte of a document (one to sign, one to verify) for nothing the AEAD does
/// not already do. Whoever lacks the key the sender encapsulated cannot make
/// another ciphertext with the same tag, so what the signature names is what
/// decrypts, and a chunk is decrypted (its tag checked) before it is used.
/// Only the sender and the recipient hold that key, and a chunk is evidence
/// to no one else: what a sender vouches for is its manifest's document
/// digests, which every schema signs by SHA-256 with the rest of the
/// manifest.
pub const CHUNKS_TAG_SIGNED: u32 = 5;
/// The first schema whose encrypted payloads are sealed in a session
/// ([`crate::crypto::Sessions`]): one X25519 agreement per recipient a
/// minute, not two per record at the sender and one at the recipient (at
/// 1 KiB filings those were 13% of the two nodes' CPU). The payload is the
/// session's encapsulated key, the record's salt, the ciphertext and the
/// tag; a chunk's signature names the first two and the tag.
pub const SESSION_SEALED: u32 = 6;
/// The oldest it reads (and writes to an institution not known to read newer).
pub const OLDEST_READ: u32 = 1;
/// The recipient of records every node reads (the tracking topic).
pub const BROADCAST: &str = "*";

const DOMAIN_V1: &[u8] = b"ecointegra.v1.Envelope\0";
const DOMAIN_V2: &[u8] = b"ecointegra.v2.Envelope\0";
const DOMAIN_V3: &[u8] = b"ecointegra.v3.Envelope\0";

/// The bytes the sender signs, laid out as the envelope's schema says: from
/// schema 3 on, the payload is there as its SHA-256.
pub fn canonical_bytes(envelope: &Envelope) -> Vec<u8> {
    let schema = envelope.schema_version;
    let by_digest = schema >= SIGNED_BY_DIGEST;
    let payload_bytes = if by_digest {
        // The longer of the two forms: a length, then the encapsulated key
        // (and salt) and the tag, each length-prefixed (a digest takes 8 + 32).
        8 + (8 + 48) + (8 + 16)
    } else {
        envelope.payload.len()
    };
    let mut out = Vec::with_capacity(
        DOMAIN_V3.len()
            + 80
            + envelope.message_id.len()
            + envelope.sender.len()
            + envelope.recipient.len()
            + payload_bytes,
    );
    out.extend_from_slice(match schema {
        ..=1 => DOMAIN_V1,
        2 => DOMAIN_V2,
        // Schemas 3 on (which differ in payloads and in how a chunk's
        // payload is signed): the schema number itself is signed below.
        _ => DOMAIN_V3,
    });
    put_bytes(&mut out, envelope.message_id.as_bytes());
    out.extend_from_slice(&(envelope.message_type as u32).to_be_bytes());
    put_bytes(&mut out, envelope.sender.as_bytes());
    put_bytes(&mut out, envelope.recipient.as_bytes());
    out.extend_from_slice(&envelope.created_at_ms.to_be_bytes());
    out.extend_from_slice(&schema.to_be_bytes());
    if schema >= 2 {
        out.extend_from_slice(&envelope.reads_up_to.to_be_bytes());
        put_bytes(&mut out, &envelope.key_id);
    }
    match tag_signed(envelope) {
        Some((encapped, tag)) => {
            out.extend_from_slice(&(envelope.payload.len() as u64).to_be_bytes());
            put_bytes(&mut out, encapped);
            put_bytes(&mut out, tag);
        }
        None if by_digest => put_bytes(&mut out, &Sha256::digest(&envelope.payload)),
        None => put_bytes(&mut out, &envelope.payload),
    }
    out
}

/// The encapsulated key (and from [`SESSION_SEALED`] on the salt) and AEAD
/// tag a chunk envelope signs in place of its payload's digest
/// ([`CHUNKS_TAG_SIGNED`]); `None` for every other envelope, and for a
/// payload too short to hold them (signed by its digest, as no sender writes
/// one: it cannot be decrypted either).
fn tag_signed(envelope: &Envelope) -> Option<(&[u8], &[u8])> {
    use crate::crypto::{ENCAPPED, SALT, TAG};
    let payload = &envelope.payload;
    let head = if envelope.schema_version >= SESSION_SEALED {
        ENCAPPED + SALT
    } else {
        ENCAPPED
    };
    (envelope.schema_version >= CHUNKS_TAG_SIGNED
        && envelope.message_type == MessageType::Chunk as i32
        && payload.len() >= head + TAG)
        .then(|| (&payload[..head], &payload[payload.len() - TAG..]))
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The id of a signing key: the first 8 bytes of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> [u8; 8] {
    let digest = Sha256::digest(key.as_bytes());
    digest[..8].try_into().expect("a SHA-256 has 8 bytes")
}

/// Which envelope schema to write to whom, learnt from what the other
/// institutions sign: the schema-2 field `reads_up_to`, and the tracking
/// events every node publishes (`sender_reads_up_to`). An institution not
/// heard from yet gets [`OLDEST_READ`]; the broadcast topic gets the oldest
/// any institution of the directory reads. Only a signed record newer than
/// the last one learnt from changes what is known of an institution, so an
/// institution that goes back to an older release is written to as such
/// after its first tracking event.
#[derive(Debug, Default)]
pub struct Negotiation {
    book: RwLock<Book>,
}

#[derive(Debug, Default)]
struct Book {
    /// Institution -> (newest schema it reads, when it said so).
    peers: HashMap<String, (u32, i64)>,
    /// The other institutions of the directory: who reads broadcasts.
    members: Vec<String>,
}

impl Book {
    fn reads(&self, institution: &str) -> u32 {
        self.peers
            .get(institution)
            .map_or(OLDEST_READ, |(reads, _)| {
                (*reads).clamp(OLDEST_READ, SCHEMA_VERSION)
            })
    }
}

impl Negotiation {
    /// The schema to write to `recipient` ([`BROADCAST`]: to every member).
    pub fn version_for(&self, recipient: &str) -> u32 {
        let book = self.book.read().unwrap_or_else(|e| e.into_inner());
        if recipient == BROADCAST {
            return book
                .members
                .iter()
                .map(|m| book.reads(m))
                .min()
                .unwrap_or(SCHEMA_VERSION);
        }
        book.reads(recipient)
    }

    /// `institution` said, in a record it signed at `at_ms`, that it reads
    /// schemas up to `reads_up_to` (0: an older node, schema 1). Returns
    /// whether what is known of it changed.
    pub fn learn(&self, institution: &str, reads_up_to: u32, at_ms: i64) -> bool {
        let reads_up_to = reads_up_to.max(OLDEST_READ);
        let mut book = self.book.write().unwrap_or_else(|e| e.into_inner());
        match book.peers.get_mut(institution) {
            Some((known, since)) if *since <= at_ms => {
                *since = at_ms;
                std::mem::replace(known, reads_up_to) != reads_up_to
            }
            Some(_) => false,
            None => {
                book.peers
                    .insert(institution.to_owned(), (reads_up_to, at_ms));
                reads_up_to != OLDEST_READ
            }
        }
    }

    /// The other institutions of the directory (they all read broadcasts).
    pub fn set_members(&self, members: impl IntoIterator<Item = String>) {
        let mut book = self.book.write().unwrap_or_else(|e| e.into_inner());
        book.members = members.into_iter().collect();
    }
}

/// Seals payloads as one institution.
#[derive(Debug, Clone)]
pub struct Sealer {
    institution: String,
    identity: SigningIdentity,
    negotiation: Arc<Negotiation>,
    /// Its sessions to recipients' keys ([`SESSION_SEALED`]).
    sessions: Arc<crate::crypto::Sessions>,
}

impl Sealer {
    pub fn new(institution: impl Into<String>, identity: SigningIdentity) -> Self {
        Self {
            institution: institution.into(),
            identity,
            negotiation: Arc::default(),
            sessions: Arc::default(),
        }
    }

    /// What this sealer knows of which schema each institution reads.
    pub fn negotiation(&self) -> &Negotiation {
        &self.negotiation
    }

    pub fn institution(&self) -> &str {
        &self.institution
    }

    pub fn identity(&self) -> &SigningIdentity {
        &self.identity
    }

    /// A signed envelope carrying `payload` to `recipient`, in the newest
    /// schema the recipient reads.
    pub fn seal(
        &self,
        message_id: String,
        message_type: MessageType,
        recipient: &str,
        payload: Vec<u8>,
    ) -> Envelope {
        let version = self.negotiation.version_for(recipient);
        self.seal_as(version, message_id, message_type, recipient, payload)
    }

    /// A signed envelope in schema `version`.
    pub fn seal_as(
        &self,
        version: u32,
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
            schema_version: version,
            payload: payload.into(),
            ..Default::default()
        };
        if version >= 2 {
            envelope.reads_up_to = SCHEMA_VERSION;
            envelope.key_id = key_id(&self.identity.public_key()).to_vec();
        }
        envelope.signature = self.identity.sign(&canonical_bytes(&envelope)).to_vec();
        envelope
    }
}

impl Sealer {
    /// Encrypts `payload` for the recipient's X25519 key, then seals it in
    /// the newest schema the recipient reads.
    pub fn seal_encrypted(
        &self,
        message_id: String,
        message_type: MessageType,
        recipient: &str,
        recipient_key: &[u8; 32],
        payload: &[u8],
    ) -> Result<Envelope, String> {
        let version = self.negotiation.version_for(recipient);
        self.seal_encrypted_as(
            version,
            message_id,
            message_type,
            recipient,
            recipient_key,
            payload,
        )
    }

    /// [`Sealer::seal_encrypted`] in schema `version`: for records whose
    /// payload depends on the schema, laid out for the one chosen once.
    pub fn seal_encrypted_as(
        &self,
        version: u32,
        message_id: String,
        message_type: MessageType,
        recipient: &str,
        recipient_key: &[u8; 32],
        payload: &[u8],
    ) -> Result<Envelope, String> {
        let context = context(&message_id, &self.institution, recipient);
        let cipher = crate::crypto::Cipher::of_schema(version);
        let sealed = if version >= SESSION_SEALED {
            crate::crypto::encrypt_in_session(
                cipher,
                &self.sessions,
                recipient_key,
                &context,
                payload,
            )
        } else {
            crate::crypto::encrypt(cipher, recipient_key, &context, payload)
        }?;
        Ok(self.seal_as(version, message_id, message_type, recipient, sealed))
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
    open_from(bytes, directory, recipient)
}

/// [`open`] of a record held as `Bytes`: the payload decodes as a slice of it,
/// not a copy.
pub fn open_bytes(
    bytes: prost::bytes::Bytes,
    directory: &Directory,
    recipient: &str,
) -> Result<Envelope, Rejection> {
    open_from(bytes, directory, recipient)
}

fn open_from(
    bytes: impl prost::bytes::Buf,
    directory: &Directory,
    recipient: &str,
) -> Result<Envelope, Rejection> {
    let envelope = Envelope::decode(bytes)
        .map_err(|e| Rejection::new("decode", format!("not an ecointegra envelope: {e}")))?;
    let reject = |code, reason: String| Err(Rejection::new(code, reason).about(&envelope));
    if !(OLDEST_READ..=SCHEMA_VERSION).contains(&envelope.schema_version) {
        return reject(
            "schema",
            format!(
                "envelope schema {} is not supported: this node reads schemas {OLDEST_READ} to {SCHEMA_VERSION}",
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
    let accept_until_ms = match accepted_until(&envelope, sender) {
        Ok(until) => until,
        Err(reason) => return reject("signature", reason),
    };
    // Signed before a key rotation: accepted while the retired key is.
    if now > accept_until_ms {
        return reject(
            "key-retired",
            format!(
                "{} is signed with a key {} retired and no longer accepts",
                envelope.message_id, envelope.sender
            ),
        );
    }
    Ok(envelope)
}

/// Checks the signature with the key that made it, and returns until when
/// that key is accepted (`i64::MAX` for the current one): the key a schema-2
/// envelope names; for schema 1, the current key, or else a retired one that
/// verifies.
fn accepted_until(
    envelope: &Envelope,
    sender: &crate::directory::Institution,
) -> Result<i64, String> {
    if envelope.schema_version >= 2 {
        let (key, accept_until_ms) = signed_by(envelope, sender)?;
        verify_signature(envelope, key)?;
        return Ok(accept_until_ms);
    }
    let Err(reason) = verify_signature(envelope, &sender.signing_key) else {
        return Ok(i64::MAX);
    };
    sender
        .retired_keys
        .iter()
        .find(|(key, _)| verify_signature(envelope, key).is_ok())
        .map(|(_, accept_until_ms)| *accept_until_ms)
        .ok_or(reason)
}

/// The key a schema-2 envelope names (current or retired) and until when it
/// is accepted.
fn signed_by<'a>(
    envelope: &Envelope,
    sender: &'a crate::directory::Institution,
) -> Result<(&'a VerifyingKey, i64), String> {
    if envelope.key_id.len() != 8 {
        return Err(format!(
            "{} names no signing key (key_id must be 8 bytes, not {})",
            envelope.message_id,
            envelope.key_id.len()
        ));
    }
    let named = |key: &VerifyingKey| key_id(key).as_slice() == envelope.key_id.as_slice();
    if named(&sender.signing_key) {
        return Ok((&sender.signing_key, i64::MAX));
    }
    sender
        .retired_keys
        .iter()
        .find(|(key, _)| named(key))
        .map(|(key, until)| (key, *until))
        .ok_or_else(|| {
            format!(
                "{} is signed with key {}, which the directory does not list for {}",
                envelope.message_id,
                hex::encode(&envelope.key_id),
                envelope.sender
            )
        })
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
    // Decoded from the buffer itself: a chunk's bytes stay where they were
    // decrypted (`Chunk.data` is a slice of it), not copied out.
    M::decode(prost::bytes::Bytes::from(plain)).map_err(|e| {
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
    let cipher = crate::crypto::Cipher::of_schema(envelope.schema_version);
    let decrypt = if envelope.schema_version >= SESSION_SEALED {
        crate::crypto::decrypt_in_session
    } else {
        crate::crypto::decrypt
    };
    decrypt(cipher, keys, &context, &envelope.payload).map_err(|e| {
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
    M::decode(envelope.payload.clone()).map_err(|e| {
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
        tampered.payload = b"hellO".to_vec().into();
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
        // Both schemas: 1 finds the retired key that verifies, 2 names it.
        for version in [1, 2] {
            entry.version = 2;
            entry.retired_signing_keys = vec![RetiredKey {
                signing_key: old.public_key().as_bytes().to_vec(),
                accept_until_ms: crate::now_ms() + 60_000,
            }];
            let mut directory = Directory::default();
            directory.insert(&entry).unwrap();
            let by_old = Sealer::new("senamhi", old.clone()).seal_as(
                version,
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
                "key-retired",
                "schema {version}"
            );
        }

        let mut directory = Directory::default();
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
            data: b"contenido secreto".to_vec().into(),
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
        assert_eq!(&opened.data[..], b"contenido secreto");
        let stranger = SigningIdentity::generate();
        let err = open_payload::<ecointegra_proto::v1::Chunk>(&envelope, &[stranger]).unwrap_err();
        assert_eq!(err.code, "decrypt");
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;
    use crate::directory::entry_for;

    /// `payload` with the byte at `at` flipped by `mask`.
    fn flipped(payload: &[u8], at: usize, mask: u8) -> prost::bytes::Bytes {
        let mut altered = payload.to_vec();
        altered[at] ^= mask;
        altered.into()
    }

    fn sector(senamhi: &SigningIdentity) -> Directory {
        let mut directory = Directory::default();
        directory
            .insert(&entry_for("senamhi", "SENAMHI", senamhi, 1))
            .unwrap();
        directory
    }

    #[test]
    fn every_schema_opens_and_none_can_pass_for_another() {
        let senamhi = SigningIdentity::generate();
        let directory = sector(&senamhi);
        let sealer = Sealer::new("senamhi", senamhi.clone());
        for version in OLDEST_READ..=SCHEMA_VERSION {
            let envelope =
                sealer.seal_as(version, "m".into(), MessageType::Chunk, "oefa", vec![7, 8]);
            assert_eq!(
                open(&envelope.encode_to_vec(), &directory, "oefa").unwrap(),
                envelope
            );
            // Whether signed whole or by its digest, the payload is covered.
            let mut tampered = envelope.clone();
            tampered.payload = flipped(&tampered.payload, 1, 1);
            let err = open(&tampered.encode_to_vec(), &directory, "oefa").unwrap_err();
            assert_eq!(err.code, "signature", "schema {version}: {err}");
        }
        // Schema 1 as an older node writes it: no schema-2 fields on the wire.
        let v1 = sealer.seal_as(1, "m".into(), MessageType::Chunk, "oefa", vec![7]);
        assert_eq!((v1.reads_up_to, v1.key_id.len()), (0, 0));
        // Schema 3 signs the payload's digest, not the payload.
        let v3 = sealer.seal_as(3, "m".into(), MessageType::Chunk, "oefa", vec![7; 4096]);
        assert!(canonical_bytes(&v3).len() < 200);

        for version in 2..=SCHEMA_VERSION {
            let signed = sealer.seal_as(version, "m".into(), MessageType::Chunk, "oefa", vec![7]);
            assert_eq!(signed.reads_up_to, SCHEMA_VERSION);
            // Relabelled as any other schema, or with what it says it reads
            // changed: the signature no longer holds.
            let relabelled = (OLDEST_READ..=SCHEMA_VERSION)
                .filter(|v| *v != version)
                .map(|v| Envelope {
                    schema_version: v,
                    ..signed.clone()
                });
            let reads_less = Envelope {
                reads_up_to: 1,
                ..signed.clone()
            };
            for forged in relabelled.chain([reads_less]) {
                let err = open(&forged.encode_to_vec(), &directory, "oefa").unwrap_err();
                assert_eq!(err.code, "signature", "schema {version}: {err}");
            }
        }
        let future = Envelope {
            schema_version: SCHEMA_VERSION + 1,
            ..v3
        };
        let err = open(&future.encode_to_vec(), &directory, "oefa").unwrap_err();
        assert_eq!(err.code, "schema");
        assert!(
            err.reason
                .contains(&format!("reads schemas 1 to {SCHEMA_VERSION}")),
            "{err}"
        );
    }

    /// From schema 5 a chunk's signature names its encapsulated key (from
    /// schema 6 with the record's salt), tag and length: a byte of
    /// ciphertext changed passes the signature and fails the decryption that
    /// comes before any use; a byte of the tag, the key, the salt or the
    /// length fails the signature. Other envelopes are still signed by their
    /// payload's SHA-256.
    #[test]
    fn a_chunk_is_signed_by_its_tag_and_opened_only_if_it_decrypts() {
        use crate::crypto::{ENCAPPED, SALT, TAG};
        let senamhi = SigningIdentity::generate();
        let oefa = SigningIdentity::generate();
        let directory = sector(&senamhi);
        let sealer = Sealer::new("senamhi", senamhi);
        let chunk = ecointegra_proto::v1::Chunk {
            data: vec![42; 64 * 1024].into(),
            ..Default::default()
        };
        for (version, head) in [
            (CHUNKS_TAG_SIGNED, ENCAPPED),
            (SESSION_SEALED, ENCAPPED + SALT),
        ] {
            let seal = |message_type| {
                sealer
                    .seal_encrypted_as(
                        version,
                        "c-1".into(),
                        message_type,
                        "oefa",
                        &oefa.encryption_public_key(),
                        &chunk.encode_to_vec(),
                    )
                    .unwrap()
            };
            let sealed = seal(MessageType::Chunk);
            // What is signed does not grow with the chunk.
            assert!(canonical_bytes(&sealed).len() < 200);
            let keys = std::slice::from_ref(&oefa);
            let opened = open(&sealed.encode_to_vec(), &directory, "oefa").unwrap();
            let plain: ecointegra_proto::v1::Chunk = open_payload(&opened, keys).unwrap();
            assert_eq!(plain.data, chunk.data);

            let middle = head + 1000;
            let mut altered = sealed.clone();
            altered.payload = flipped(&altered.payload, middle, 1);
            let opened = open(&altered.encode_to_vec(), &directory, "oefa").unwrap();
            let err = open_payload::<ecointegra_proto::v1::Chunk>(&opened, keys).unwrap_err();
            assert_eq!(err.code, "decrypt", "schema {version}: {err}");

            let last = sealed.payload.len() - TAG / 2;
            let mut truncated = sealed.clone();
            let mut payload = truncated.payload.to_vec();
            payload.remove(middle);
            truncated.payload = payload.into();
            for (at, forged) in [0, head - 1, last]
                .into_iter()
                .map(|at| {
                    let mut e = sealed.clone();
                    e.payload = flipped(&e.payload, at, 1);
                    (at, e)
                })
                .chain([(middle, truncated)])
            {
                let code = open(&forged.encode_to_vec(), &directory, "oefa").map_err(|e| e.code);
                assert_eq!(code.err(), Some("signature"), "schema {version}, byte {at}");
            }

            // A manifest of the same schema: its ciphertext is signed by digest.
            let manifest = seal(MessageType::Manifest);
            let mut altered = manifest.clone();
            altered.payload = flipped(&altered.payload, middle, 1);
            let code = open(&altered.encode_to_vec(), &directory, "oefa").map_err(|e| e.code);
            assert_eq!(code.err(), Some("signature"), "schema {version}");
        }
    }

    #[test]
    fn a_schema_2_envelope_is_checked_against_the_key_it_names() {
        let new = SigningIdentity::generate();
        let directory = sector(&new);
        let stranger = Sealer::new("senamhi", SigningIdentity::generate()).seal_as(
            2,
            "m".into(),
            MessageType::Chunk,
            "oefa",
            vec![],
        );
        let err = open(&stranger.encode_to_vec(), &directory, "oefa").unwrap_err();
        assert_eq!(err.code, "signature");
        assert!(err.reason.contains("does not list"), "{err}");
        // Naming the current key does not help a signature by another.
        let mut named = stranger.clone();
        named.key_id = key_id(&new.public_key()).to_vec();
        let err = open(&named.encode_to_vec(), &directory, "oefa").unwrap_err();
        assert_eq!(err.code, "signature");
    }

    #[test]
    fn each_institution_is_written_the_newest_schema_it_said_it_reads() {
        let negotiation = Negotiation::default();
        negotiation.set_members(["senamhi".to_owned(), "oefa".to_owned()]);
        // Not heard from: the schema every release reads.
        assert_eq!(negotiation.version_for("oefa"), 1);
        assert_eq!(negotiation.version_for(BROADCAST), 1);
        assert!(negotiation.learn("oefa", 2, 100));
        assert_eq!(negotiation.version_for("oefa"), 2);
        // The broadcast waits for every member.
        assert_eq!(negotiation.version_for(BROADCAST), 1);
        assert!(!negotiation.learn("senamhi", 0, 100));
        assert!(negotiation.learn("senamhi", 2, 101));
        assert_eq!(negotiation.version_for(BROADCAST), 2);
        // A newer release than this one is written what this one writes.
        negotiation.learn("senamhi", 9, 102);
        assert_eq!(negotiation.version_for("senamhi"), SCHEMA_VERSION);
        // An older record (read again after a restart) changes nothing; a
        // newer one from a node that went back to the older release does.
        assert!(!negotiation.learn("oefa", 0, 50));
        assert_eq!(negotiation.version_for("oefa"), 2);
        assert!(negotiation.learn("oefa", 0, 150));
        assert_eq!(negotiation.version_for("oefa"), 1);
        assert_eq!(negotiation.version_for(BROADCAST), 1);

        let sealer = Sealer::new("minam", SigningIdentity::generate());
        sealer.negotiation().learn("oefa", 2, 1);
        let envelope = sealer.seal("m".into(), MessageType::Chunk, "oefa", vec![]);
        assert_eq!(envelope.schema_version, 2);
        let envelope = sealer.seal("m".into(), MessageType::Chunk, "senamhi", vec![]);
        assert_eq!(envelope.schema_version, 1);
    }
}
