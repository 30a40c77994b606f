//! Opening a record: decode it, verify its signature against the directory
//! in force, and decrypt its payload, before the store is touched. Blocking
//! (signatures, hashing) but with no effect: nothing here writes.

use super::Feed;
use crate::ids;
use crate::lifecycle::validate::{
    self, MAX_DOCUMENT_BYTES, MAX_DOCUMENTS, MAX_HOPS, MAX_NOTE_CHARS, MAX_SUBJECT_CHARS,
    MAX_TRACKING_SEQ,
};
use crate::trust::Trust;
use ecointegra_broker::directory::is_institution_id;
use ecointegra_broker::envelope::{self, CHUNKS_UNDIGESTED, Rejection};
use ecointegra_proto::v1::{
    Chunk, DirectoryEntry, Envelope, FilingStatus, Manifest, MessageType, Notice, Receipt,
    SignedDirectoryEntry, TrackingEvent,
};
use prost::Message as _;
use prost::bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// A record verified and decrypted, before the store is touched. A batch
/// holds a few hundred at most, briefly: boxing the large variants would buy
/// nothing.
#[allow(clippy::large_enum_variant)]
pub enum Opened {
    Chunk {
        envelope: Envelope,
        chunk: Chunk,
        /// Whether the chunk's own digest holds: the SHA-256 of its data when
        /// it carries one; from schema [`CHUNKS_UNDIGESTED`] on it need not.
        hash_ok: bool,
    },
    Manifest {
        envelope: Envelope,
        manifest: Manifest,
        /// Digests of complete partial documents, computed beforehand for a
        /// large transfer: document index to (SHA-256, size).
        digests: HashMap<u32, ([u8; 32], u64)>,
    },
    Receipt {
        envelope: Envelope,
        receipt: Receipt,
        raw: Vec<u8>,
    },
    Notice {
        envelope: Envelope,
        notice: Notice,
    },
    Tracking {
        event: TrackingEvent,
        /// The record's value: the envelope exactly as its sender signed it.
        signed: Vec<u8>,
    },
    /// A tracking event that names this institution as its sender, not yet
    /// verified: if the timeline holds these very bytes under its id, this
    /// node signed them and there is nothing to check or do; if not, it is
    /// verified like any other ([`tracking`]) inside the batch.
    OwnTracking {
        tracking_code: String,
        event_id: String,
        value: Vec<u8>,
    },
    Directory {
        signed: SignedDirectoryEntry,
        entry: DirectoryEntry,
    },
}

/// Decodes, verifies and decrypts one record's value read from `feed`.
/// Blocking (signatures, hashing), and pure but for one thing: what a signed
/// record says of the envelope schemas its sender reads is noted in the
/// sealer's negotiation. It reads the directory in force and this
/// institution's keys, and writes nothing. A large manifest's
/// documents are hashed later, by [`super::assemble::large_digests`].
///
/// `value` as `Bytes`: an envelope's payload decodes as a slice of it.
pub fn open_record(trust: &Trust, feed: Feed, value: &Bytes) -> Result<Opened, Rejection> {
    let opened = decode(trust, feed, value)?;
    check(&opened)?;
    Ok(opened)
}

/// [`open_record`] of a value held elsewhere (copied once).
#[cfg(test)]
pub fn open(trust: &Trust, feed: Feed, value: &[u8]) -> Result<Opened, Rejection> {
    open_record(trust, feed, &Bytes::copy_from_slice(value))
}

fn decode(trust: &Trust, feed: Feed, value: &Bytes) -> Result<Opened, Rejection> {
    let directory = trust.directory();
    match feed {
        Feed::Tracking => {
            // Every node reads the whole topic, its own steps included.
            return Ok(match own_event(trust, value) {
                Some((tracking_code, event_id)) => Opened::OwnTracking {
                    tracking_code,
                    event_id,
                    value: value.to_vec(),
                },
                None => tracking(trust, value)?,
            });
        }
        Feed::Directory => {
            let signed = SignedDirectoryEntry::decode(&value[..]).map_err(|e| {
                Rejection::new("directory", format!("not a signed directory entry: {e}"))
            })?;
            let entry = ecointegra_broker::directory::verify_entry(&signed, &trust.anchor)
                .map_err(|reason| Rejection::new("directory", reason))?;
            return Ok(Opened::Directory { signed, entry });
        }
        Feed::Inbox => {}
    }
    let envelope = envelope::open_bytes(value.clone(), &directory, trust.institution())?;
    if envelope.schema_version >= 2 {
        trust.sealer.negotiation().learn(
            &envelope.sender,
            envelope.reads_up_to,
            envelope.created_at_ms,
        );
    }
    match MessageType::try_from(envelope.message_type) {
        Ok(MessageType::Chunk) => {
            let chunk: Chunk = envelope::open_payload(&envelope, &trust.keyring)?;
            let hash_ok = if chunk.sha256.is_empty() {
                envelope.schema_version >= CHUNKS_UNDIGESTED
            } else {
                Sha256::digest(&chunk.data).as_slice() == chunk.sha256.as_slice()
            };
            Ok(Opened::Chunk {
                envelope,
                chunk,
                hash_ok,
            })
        }
        Ok(MessageType::Manifest) => {
            let manifest: Manifest = envelope::open_payload(&envelope, &trust.keyring)?;
            Ok(Opened::Manifest {
                envelope,
                manifest,
                digests: HashMap::new(),
            })
        }
        Ok(MessageType::SealedReceipt) => {
            // The signed receipt itself, byte for byte: what is stored and
            // chained by its SHA-256.
            let raw = envelope::decrypt_payload(&envelope, &trust.keyring)?;
            let receipt = receipt_inside(&envelope, &raw, &directory)
                .map_err(|p| Rejection::new("receipt", p).about(&envelope))?;
            Ok(Opened::Receipt {
                envelope,
                receipt,
                raw,
            })
        }
        Ok(MessageType::Receipt) => Err(Rejection::new(
            "type",
            format!(
                "receipt {} arrived in clear: receipts travel encrypted for their origin (SEALED_RECEIPT)",
                envelope.message_id
            ),
        )
        .about(&envelope)),
        Ok(MessageType::Notice) => {
            let notice: Notice = envelope::open_payload(&envelope, &trust.keyring)?;
            Ok(Opened::Notice { envelope, notice })
        }
        _ => Err(Rejection::new(
            "type",
            format!(
                "message type {} does not belong in an inbox",
                envelope.message_type
            ),
        )
        .about(&envelope)),
    }
}

/// A tracking event, verified against the directory in force and checked.
pub(crate) fn tracking(trust: &Trust, value: &[u8]) -> Result<Opened, Rejection> {
    let directory = trust.directory();
    let envelope = envelope::open(value, &directory, crate::lifecycle::tracking::BROADCAST)?;
    let event = crate::lifecycle::tracking::event_of(&envelope)?;
    check_event(&event).map_err(|p| Rejection::new("identifier", p).about(&envelope))?;
    // Signed by its sender: the newest schema its node reads (0 from a node
    // of the release before: schema 1).
    trust.sealer.negotiation().learn(
        &envelope.sender,
        event.sender_reads_up_to.max(envelope.reads_up_to),
        envelope.created_at_ms,
    );
    Ok(Opened::Tracking {
        event,
        signed: value.to_vec(),
    })
}

/// The filing (tracking code) and id (message id) of a tracking event that
/// says it comes from this institution, read without verifying anything:
/// what they are for is only to find what this node stored when it signed
/// it, to be compared byte for byte.
fn own_event(trust: &Trust, value: &[u8]) -> Option<(String, String)> {
    let envelope = Envelope::decode(value).ok()?;
    if envelope.sender != trust.institution() || envelope.message_id.is_empty() {
        return None;
    }
    let event: TrackingEvent = envelope::payload(&envelope).ok()?;
    Some((event.tracking_code, envelope.message_id))
}

/// The signed receipt a sealed receipt carries, verified as anyone holding
/// it would verify it ([`crate::lifecycle::custody::verify_receipt`]: signed
/// by its receiver with a key in force when it signed), and the same message
/// as the envelope that carried it: same signer, same recipient, same id.
pub(crate) fn receipt_inside(
    outer: &Envelope,
    inner: &[u8],
    directory: &ecointegra_broker::directory::Directory,
) -> Result<Receipt, String> {
    let signed = crate::lifecycle::custody::verify_receipt(inner, directory)
        .map_err(|e| format!("the receipt {} carries: {e}", outer.message_id))?;
    same_message(outer, &signed.envelope)?;
    Ok(signed.receipt)
}

/// Does the signed receipt name the sender, recipient and id of the
/// envelope that carried it?
fn same_message(outer: &Envelope, inner: &Envelope) -> Result<(), String> {
    for (what, carried, carrier) in [
        ("signer", &inner.sender, &outer.sender),
        ("recipient", &inner.recipient, &outer.recipient),
        ("message id", &inner.message_id, &outer.message_id),
    ] {
        if carried != carrier {
            return Err(format!(
                "the receipt inside names {what} {:?}, the envelope carrying it {:?}",
                short(carried),
                short(carrier)
            ));
        }
    }
    Ok(())
}

/// Every identifier and bound of an opened record, checked before anything
/// uses it: ids that become file names or keys have their exact formats,
/// indexes, counts and clocks are bounded, and a message id names exactly
/// what its payload carries, so one message cannot pass for another.
fn check(opened: &Opened) -> Result<(), Rejection> {
    let (envelope, problem) = match opened {
        Opened::Chunk {
            envelope, chunk, ..
        } => (envelope, check_chunk(&envelope.message_id, chunk)),
        Opened::Manifest {
            envelope, manifest, ..
        } => (envelope, check_manifest(&envelope.message_id, manifest)),
        Opened::Receipt {
            envelope, receipt, ..
        } => (envelope, check_receipt(&envelope.message_id, receipt)),
        Opened::Notice { envelope, notice } => {
            (envelope, check_notice(&envelope.message_id, notice))
        }
        // Checked as it is opened, where its envelope names the sender.
        Opened::Tracking { .. } | Opened::OwnTracking { .. } | Opened::Directory { .. } => {
            return Ok(());
        }
    };
    problem.map_err(|p| Rejection::new("identifier", p).about(envelope))
}

fn transfer_id(id: &str) -> Result<(), String> {
    if ids::is_transfer_id(id) {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a transfer id (32 hex digits)",
            short(id)
        ))
    }
}

fn tracking_code(code: &str) -> Result<(), String> {
    if ids::is_tracking_code(code) {
        Ok(())
    } else {
        Err(format!("{:?} is not a tracking code", short(code)))
    }
}

fn institution(id: &str, what: &str) -> Result<(), String> {
    if is_institution_id(id) {
        Ok(())
    } else {
        Err(format!("{what} {:?} is not an institution id", short(id)))
    }
}

fn message_id(id: &str, expected: &str) -> Result<(), String> {
    if id == expected {
        Ok(())
    } else {
        Err(format!(
            "message id {:?} does not name what it carries ({expected:?})",
            short(id)
        ))
    }
}

fn at_most(value: u64, max: u64, what: &str) -> Result<(), String> {
    if value <= max {
        Ok(())
    } else {
        Err(format!("{what} {value} is above {max}"))
    }
}

/// At most 64 characters of a hostile string, for a reason.
fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

pub(crate) fn check_chunk(id: &str, chunk: &Chunk) -> Result<(), String> {
    transfer_id(&chunk.transfer_id)?;
    at_most(
        chunk.document_index.into(),
        MAX_DOCUMENTS as u64 - 1,
        "document index",
    )?;
    at_most(chunk.offset, MAX_DOCUMENT_BYTES, "chunk offset")?;
    if !chunk.sha256.is_empty() && chunk.sha256.len() != 32 {
        return Err("the chunk's digest is not a SHA-256".into());
    }
    message_id(
        id,
        &format!(
            "{}/chunk/{}/{}",
            chunk.transfer_id, chunk.document_index, chunk.seq
        ),
    )
}

pub(crate) fn check_manifest(id: &str, manifest: &Manifest) -> Result<(), String> {
    let Some(t) = &manifest.transfer else {
        return Err("the manifest names no transfer".into());
    };
    transfer_id(&t.transfer_id)?;
    message_id(
        id,
        &format!("{}/manifest/{}", t.transfer_id, manifest.attempt),
    )?;
    tracking_code(&t.tracking_code)?;
    institution(&t.origin, "origin")?;
    institution(&t.destination, "destination")?;
    if !ids::transfer_id_binds(&t.transfer_id, &t.origin, &t.tracking_code) {
        return Err(format!(
            "transfer id {} was not made by {} for {}",
            t.transfer_id, t.origin, t.tracking_code
        ));
    }
    if !t.filed_at.is_empty() {
        institution(&t.filed_at, "filed_at")?;
    }
    if !t.related_transfer_id.is_empty() {
        transfer_id(&t.related_transfer_id)?;
    }
    if let Some(broken) = t.sgd.as_ref().and_then(|s| validate::sgd_document(s).pop()) {
        return Err(format!("sgd.{}: {}", broken.field, broken.description));
    }
    if t.hop == 0 {
        return Err("hop 0: the first transfer of a filing is hop 1".into());
    }
    at_most(t.hop.into(), MAX_HOPS.into(), "hop")?;
    at_most(
        t.prior_receipts.len() as u64,
        MAX_HOPS.into(),
        "prior receipts",
    )?;
    at_most(t.tracking_seq, MAX_TRACKING_SEQ, "tracking clock")?;
    at_most(
        manifest.documents.len() as u64,
        MAX_DOCUMENTS as u64,
        "documents",
    )?;
    at_most(
        t.note.chars().count() as u64,
        MAX_NOTE_CHARS as u64,
        "note characters",
    )?;
    at_most(
        t.subject.chars().count() as u64,
        MAX_SUBJECT_CHARS as u64,
        "subject characters",
    )?;
    for doc in &manifest.documents {
        at_most(doc.size, MAX_DOCUMENT_BYTES, "document size")?;
        // Each chunk carries at least one byte: no more chunks than bytes.
        at_most(doc.chunk_count.into(), doc.size.max(1), "chunk count")?;
        // A document carried inside the manifest is whole there.
        if !doc.data.is_empty() && (doc.chunk_count != 0 || doc.data.len() as u64 != doc.size) {
            return Err(format!(
                "document {} carries {} bytes in the manifest, but declares {} bytes in {} chunks",
                doc.index,
                doc.data.len(),
                doc.size,
                doc.chunk_count
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_receipt(id: &str, receipt: &Receipt) -> Result<(), String> {
    transfer_id(&receipt.transfer_id)?;
    message_id(id, &format!("{}/receipt", receipt.transfer_id))?;
    institution(&receipt.receiving_institution, "receiving institution")?;
    at_most(
        receipt.documents.len() as u64,
        MAX_DOCUMENTS as u64,
        "documents",
    )?;
    at_most(receipt.hop.into(), MAX_HOPS.into(), "hop")
}

pub(crate) fn check_notice(id: &str, notice: &Notice) -> Result<(), String> {
    transfer_id(&notice.transfer_id)?;
    tracking_code(&notice.tracking_code)?;
    let prefix = format!("{}/notice/", notice.transfer_id);
    if !id.starts_with(&prefix) || id.len() > prefix.len() + 32 {
        return Err(format!(
            "message id {:?} does not name the notice's transfer",
            short(id)
        ));
    }
    at_most(notice.tracking_seq, MAX_TRACKING_SEQ, "tracking clock")?;
    if let Some(broken) = notice
        .cargo
        .as_ref()
        .and_then(|c| validate::sgd_cargo(c).pop())
    {
        return Err(format!("cargo.{}: {}", broken.field, broken.description));
    }
    at_most(
        notice.reason.chars().count() as u64,
        MAX_NOTE_CHARS as u64,
        "reason characters",
    )
}

pub(crate) fn check_event(event: &TrackingEvent) -> Result<(), String> {
    tracking_code(&event.tracking_code)?;
    let registration = crate::lifecycle::tracking::is_registration(&event.tracking_code, event);
    if event.status == FilingStatus::Registered as i32 && !registration {
        return Err(format!(
            "only the institution {} belongs to registers it",
            event.tracking_code
        ));
    }
    if !event.cuo.is_empty() && (!registration || !validate::digits(&event.cuo, 10)) {
        return Err("only a registration carries a CUO, of 10 digits".into());
    }
    if !event.verifier.is_empty() && !registration {
        return Err(
            "only the registration by the filing's own institution carries a verifier".into(),
        );
    }
    at_most(event.seq, MAX_TRACKING_SEQ, "tracking clock")?;
    at_most(event.hop.into(), MAX_HOPS.into(), "hop")?;
    at_most(event.event_id.len() as u64, 256, "event id bytes")?;
    if !event.holder.is_empty() {
        institution(&event.holder, "holder")?;
    }
    if !event.counterpart.is_empty() {
        institution(&event.counterpart, "counterpart")?;
    }
    if event.verifier.is_empty() {
        Ok(())
    } else {
        // Never computed here; refused if it would cost more than a bounded
        // Argon2id evaluation when a citizen's code is checked against it.
        crate::verification::check(&event.verifier)
    }
}

/// The checks, for the fuzzing tests.
#[cfg(test)]
pub(crate) mod checks {
    pub(crate) use super::{
        check_chunk as chunk, check_event as event, check_manifest as manifest,
        check_notice as notice, check_receipt as receipt, receipt_inside,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecointegra_broker::directory::{Authority, Directory, entry_for};
    use ecointegra_broker::envelope::Sealer;
    use ecointegra_broker::keys::SigningIdentity;

    /// A sector of two listed institutions, and this node's trust as one of
    /// them.
    struct Sector {
        authority: Authority,
        senamhi: Sealer,
        oefa: Trust,
        oefa_key: [u8; 32],
    }

    fn sector() -> Sector {
        let authority = Authority::new(SigningIdentity::generate());
        let senamhi = SigningIdentity::generate();
        let oefa = SigningIdentity::generate();
        let mut directory = Directory::default();
        for (id, identity) in [("senamhi", &senamhi), ("oefa", &oefa)] {
            let entry = entry_for(id, &id.to_uppercase(), identity, 1);
            let signed = authority.sign(&entry);
            let verified =
                ecointegra_broker::directory::verify_entry(&signed, &authority.public_key())
                    .unwrap();
            directory.insert(&verified).unwrap();
        }
        Sector {
            oefa_key: oefa.encryption_public_key(),
            oefa: Trust::new(
                Sealer::new("oefa", oefa.clone()),
                authority.public_key(),
                vec![oefa],
                directory,
            ),
            senamhi: Sealer::new("senamhi", senamhi),
            authority,
        }
    }

    fn chunk(data: &[u8], digest_of: &[u8]) -> Chunk {
        Chunk {
            transfer_id: "ab".repeat(16),
            document_index: 0,
            seq: 0,
            offset: 0,
            sha256: Sha256::digest(digest_of).to_vec(),
            data: data.to_vec().into(),
        }
    }

    fn sealed_chunk(s: &Sector, recipient: &str, chunk: &Chunk) -> Vec<u8> {
        s.senamhi
            .seal_encrypted(
                format!("{}/chunk/0/0", chunk.transfer_id),
                MessageType::Chunk,
                recipient,
                &s.oefa_key,
                &chunk.encode_to_vec(),
            )
            .unwrap()
            .encode_to_vec()
    }

    #[test]
    fn a_listed_senders_chunk_opens_decrypted_with_its_digest_checked() {
        let s = sector();
        let good = chunk(b"%PDF-1.7 contenido", b"%PDF-1.7 contenido");
        match open(&s.oefa, Feed::Inbox, &sealed_chunk(&s, "oefa", &good)).unwrap() {
            Opened::Chunk {
                envelope,
                chunk,
                hash_ok,
            } => {
                assert_eq!(envelope.sender, "senamhi");
                assert_eq!(chunk.data, good.data);
                assert!(hash_ok);
            }
            _ => panic!("not a chunk"),
        }
        let bad = chunk(b"%PDF-1.7 contenido", b"otra cosa");
        let Opened::Chunk { hash_ok, .. } =
            open(&s.oefa, Feed::Inbox, &sealed_chunk(&s, "oefa", &bad)).unwrap()
        else {
            panic!("not a chunk")
        };
        assert!(!hash_ok);
    }

    #[test]
    fn a_chunk_needs_no_digest_of_its_own_from_schema_4_only() {
        let s = sector();
        let hash_ok = |schema: u32, chunk: &Chunk| {
            let sealed = s
                .senamhi
                .seal_encrypted_as(
                    schema,
                    format!("{}/chunk/0/0", chunk.transfer_id),
                    MessageType::Chunk,
                    "oefa",
                    &s.oefa_key,
                    &chunk.encode_to_vec(),
                )
                .unwrap()
                .encode_to_vec();
            match open(&s.oefa, Feed::Inbox, &sealed) {
                Ok(Opened::Chunk { hash_ok, .. }) => Ok(hash_ok),
                Ok(_) => panic!("not a chunk"),
                Err(rejection) => Err(rejection.reason),
            }
        };
        let undigested = Chunk {
            sha256: Vec::new(),
            ..chunk(b"%PDF-1.7", b"")
        };
        assert_eq!(hash_ok(3, &undigested), Ok(false));
        assert_eq!(hash_ok(CHUNKS_UNDIGESTED, &undigested), Ok(true));
        // A digest it does carry is checked in every schema.
        let wrong = chunk(b"%PDF-1.7", b"otra cosa");
        assert_eq!(hash_ok(CHUNKS_UNDIGESTED, &wrong), Ok(false));
        let right = chunk(b"%PDF-1.7", b"%PDF-1.7");
        assert_eq!(hash_ok(CHUNKS_UNDIGESTED, &right), Ok(true));
        let truncated = Chunk {
            sha256: vec![1; 31],
            ..right
        };
        let reason = hash_ok(CHUNKS_UNDIGESTED, &truncated).unwrap_err();
        assert!(reason.contains("not a SHA-256"), "{reason}");
    }

    #[test]
    fn garbage_an_unlisted_sender_and_another_recipient_are_refused() {
        let s = sector();
        let refused = |value: &[u8]| match open(&s.oefa, Feed::Inbox, value) {
            Err(rejection) => rejection,
            Ok(_) => panic!("opened"),
        };
        assert_eq!(refused(&[0xff; 64]).code, "decode");
        // An empty record decodes as an envelope of no schema version.
        assert_eq!(refused(&[]).code, "schema");

        let stranger = Sealer::new("senamhi", SigningIdentity::generate());
        let forged = stranger
            .seal(
                "x/chunk/0/0".into(),
                MessageType::Chunk,
                "oefa",
                b"payload".to_vec(),
            )
            .encode_to_vec();
        assert_eq!(refused(&forged).code, "signature");

        let c = chunk(b"data", b"data");
        let elsewhere = sealed_chunk(&s, "minam", &c);
        assert_eq!(refused(&elsewhere).code, "recipient");
    }

    fn receipt() -> Receipt {
        Receipt {
            transfer_id: "ab".repeat(16),
            tracking_code: "OEFA-2026-0123ABCD".into(),
            receiving_institution: "senamhi".into(),
            registry_number: "SENAMHI-2026-000001".into(),
            origin: "oefa".into(),
            hop: 1,
            ..Default::default()
        }
    }

    /// `receipt` signed by `sealer` for oefa, as it is stored.
    fn signed(sealer: &Sealer, receipt: &Receipt) -> Envelope {
        sealer.seal(
            format!("{}/receipt", receipt.transfer_id),
            MessageType::Receipt,
            "oefa",
            receipt.encode_to_vec(),
        )
    }

    /// A signed receipt as senamhi's relay sends it: encrypted for oefa.
    fn sealed(s: &Sector, inner: &[u8], id: &str) -> Vec<u8> {
        s.senamhi
            .seal_encrypted(
                id.into(),
                MessageType::SealedReceipt,
                "oefa",
                &s.oefa_key,
                inner,
            )
            .unwrap()
            .encode_to_vec()
    }

    #[test]
    fn a_sealed_receipt_opens_to_the_signed_receipt_byte_for_byte() {
        let s = sector();
        let inner = signed(&s.senamhi, &receipt()).encode_to_vec();
        let id = format!("{}/receipt", "ab".repeat(16));
        let wire = sealed(&s, &inner, &id);
        assert!(
            !wire.windows(19).any(|w| w == b"SENAMHI-2026-000001"),
            "the registry number travels encrypted"
        );
        let Opened::Receipt {
            envelope,
            receipt: opened,
            raw,
        } = open(&s.oefa, Feed::Inbox, &wire).unwrap()
        else {
            panic!("not a receipt")
        };
        assert_eq!(envelope.sender, "senamhi");
        assert_eq!(
            raw, inner,
            "what is stored and chained is the signed receipt"
        );
        assert_eq!(opened, receipt());
    }

    #[test]
    fn a_receipt_in_clear_or_not_matching_its_carrier_is_refused() {
        let s = sector();
        let refused = |value: &[u8]| match open(&s.oefa, Feed::Inbox, value) {
            Err(rejection) => rejection,
            Ok(_) => panic!("opened"),
        };
        let id = format!("{}/receipt", "ab".repeat(16));
        let clear = signed(&s.senamhi, &receipt()).encode_to_vec();
        let rejection = refused(&clear);
        assert_eq!(rejection.code, "type");
        assert!(
            rejection.reason.contains("arrived in clear"),
            "{rejection:?}"
        );

        // The receipt inside is signed with a key senamhi never had.
        let forged = Sealer::new("senamhi", SigningIdentity::generate());
        let rejection = refused(&sealed(
            &s,
            &signed(&forged, &receipt()).encode_to_vec(),
            &id,
        ));
        assert_eq!(rejection.code, "receipt");
        assert!(
            rejection
                .reason
                .contains("does not verify against any key of senamhi"),
            "{rejection:?}"
        );
        // A receipt not the carrier's own message: signed by another, for
        // another recipient, under another id.
        let by_oefa = {
            let mut r = receipt();
            r.receiving_institution = "oefa".into();
            signed(&s.oefa.sealer, &r).encode_to_vec()
        };
        let elsewhere = s
            .senamhi
            .seal(
                format!("{}/receipt", "ab".repeat(16)),
                MessageType::Receipt,
                "minam",
                receipt().encode_to_vec(),
            )
            .encode_to_vec();
        for (inner, id, differs) in [
            (&by_oefa, id.clone(), "signer \"oefa\""),
            (&elsewhere, id.clone(), "recipient \"minam\""),
            (&clear, format!("{}/receipt", "cd".repeat(16)), "message id"),
        ] {
            let rejection = refused(&sealed(&s, inner, &id));
            assert_eq!(rejection.code, "receipt", "{rejection:?}");
            assert!(
                rejection
                    .reason
                    .contains(&format!("the receipt inside names {differs}")),
                "{rejection:?}"
            );
        }
        // Not a signed receipt at all.
        let rejection = refused(&sealed(&s, b"\xff\xff", &id));
        assert_eq!(rejection.code, "receipt");
    }

    #[test]
    fn a_directory_entry_must_be_the_authoritys() {
        let s = sector();
        let newcomer = entry_for("minam", "MINAM", &SigningIdentity::generate(), 1);
        let signed = s.authority.sign(&newcomer).encode_to_vec();
        let Opened::Directory { entry, .. } = open(&s.oefa, Feed::Directory, &signed).unwrap()
        else {
            panic!("not a directory entry")
        };
        assert_eq!(entry.institution_id, "minam");

        let rogue = Authority::new(SigningIdentity::generate())
            .sign(&newcomer)
            .encode_to_vec();
        assert!(open(&s.oefa, Feed::Directory, &rogue).is_err());
    }

    #[test]
    fn a_tracking_event_must_come_from_the_institution_it_names() {
        let s = sector();
        let event = |institution: &str| TrackingEvent {
            event_id: format!("{institution}/1"),
            tracking_code: "SENAMHI-2026-00000001".into(),
            institution: institution.into(),
            ..Default::default()
        };
        let sealed = |e: &TrackingEvent| crate::store::tracking::sealed_event(&s.senamhi, e);
        assert!(matches!(
            open(&s.oefa, Feed::Tracking, &sealed(&event("senamhi"))),
            Ok(Opened::Tracking { .. })
        ));
        let Err(rejection) = open(&s.oefa, Feed::Tracking, &sealed(&event("oefa"))) else {
            panic!("an event claiming another institution opened")
        };
        assert_eq!(rejection.code, "tracking");
    }

    #[test]
    fn identifiers_from_the_wire_are_checked_before_use() {
        let s = sector();
        let refused = |value: &[u8]| match open(&s.oefa, Feed::Inbox, value) {
            Err(rejection) => rejection,
            Ok(_) => panic!("opened"),
        };
        // A transfer id that would name a file outside the data directory.
        for hostile in ["../../../../tmp/pwned", "/etc/passwd", "t-x", ""] {
            let mut c = chunk(b"data", b"data");
            c.transfer_id = hostile.into();
            let rejection = refused(&sealed_chunk(&s, "oefa", &c));
            assert_eq!(rejection.code, "identifier", "{hostile:?}: {rejection:?}");
        }
        // A message id that does not name what the payload carries: another
        // transfer's chunk id cannot be pre-empted with this payload.
        let c = chunk(b"data", b"data");
        let other = s
            .senamhi
            .seal_encrypted(
                format!("{}/chunk/0/1", "cd".repeat(16)),
                MessageType::Chunk,
                "oefa",
                &s.oefa_key,
                &c.encode_to_vec(),
            )
            .unwrap()
            .encode_to_vec();
        assert_eq!(refused(&other).code, "identifier");
        // A manifest out of bounds.
        let bound = ids::bound_transfer_id("senamhi", "SENAMHI-2026-0123ABCD");
        let manifest = |edit: &dyn Fn(&mut Manifest)| {
            let mut m = Manifest {
                transfer: Some(ecointegra_proto::v1::Transfer {
                    transfer_id: bound.clone(),
                    tracking_code: "SENAMHI-2026-0123ABCD".into(),
                    origin: "senamhi".into(),
                    destination: "oefa".into(),
                    hop: 1,
                    ..Default::default()
                }),
                documents: vec![ecointegra_proto::v1::DocumentDigest {
                    size: 4,
                    chunk_count: 1,
                    sha256: vec![0; 32],
                    ..Default::default()
                }],
                attempt: 1,
                chunk_size: 1024,
                probe: false,
            };
            edit(&mut m);
            let id = format!(
                "{}/manifest/{}",
                m.transfer.as_ref().unwrap().transfer_id,
                m.attempt
            );
            s.senamhi
                .seal_encrypted(
                    id,
                    MessageType::Manifest,
                    "oefa",
                    &s.oefa_key,
                    &m.encode_to_vec(),
                )
                .unwrap()
                .encode_to_vec()
        };
        assert!(open(&s.oefa, Feed::Inbox, &manifest(&|_| {})).is_ok());
        // A document whole inside the manifest.
        let inline = manifest(&|m| {
            m.documents[0].data = b"data".to_vec();
            m.documents[0].chunk_count = 0;
        });
        assert!(open(&s.oefa, Feed::Inbox, &inline).is_ok());
        for edit in [
            &(|m: &mut Manifest| m.transfer.as_mut().unwrap().hop = 0) as &dyn Fn(&mut Manifest),
            &|m: &mut Manifest| m.transfer.as_mut().unwrap().hop = 10_000,
            &|m: &mut Manifest| m.transfer.as_mut().unwrap().tracking_code = "../x".into(),
            &|m: &mut Manifest| m.transfer.as_mut().unwrap().tracking_seq = u64::MAX,
            &|m: &mut Manifest| m.transfer.as_mut().unwrap().origin = "Bad/Id".into(),
            &|m: &mut Manifest| m.transfer.as_mut().unwrap().note = "x".repeat(MAX_NOTE_CHARS + 1),
            &|m: &mut Manifest| m.documents = vec![m.documents[0].clone(); MAX_DOCUMENTS + 1],
            &|m: &mut Manifest| m.documents[0].chunk_count = 1_000_000,
            // Inline bytes that are not the whole document, or with chunks too.
            &|m: &mut Manifest| {
                m.documents[0].data = b"abc".to_vec();
                m.documents[0].chunk_count = 0;
            },
            &|m: &mut Manifest| m.documents[0].data = b"data".to_vec(),
            // An id another institution made, or an unbound one.
            &|m: &mut Manifest| {
                m.transfer.as_mut().unwrap().transfer_id =
                    ids::bound_transfer_id("minam", "SENAMHI-2026-0123ABCD")
            },
            &|m: &mut Manifest| m.transfer.as_mut().unwrap().transfer_id = "ab".repeat(16),
        ] {
            assert_eq!(refused(&manifest(edit)).code, "identifier");
        }
    }
}
