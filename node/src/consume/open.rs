//! Opening a record: decode it, verify its signature against the directory
//! in force, and decrypt its payload, before the store is touched. Blocking
//! (signatures, hashing) but with no effect: nothing here writes.

use super::Feed;
use crate::trust::Trust;
use ecointegra_broker::envelope::{self, Rejection};
use ecointegra_proto::v1::{
    Chunk, DirectoryEntry, Envelope, Manifest, MessageType, Notice, Receipt, SignedDirectoryEntry,
    TrackingEvent,
};
use prost::Message as _;
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
    Tracking(TrackingEvent),
    Directory {
        signed: SignedDirectoryEntry,
        entry: DirectoryEntry,
    },
}

/// Decodes, verifies and decrypts one record's value read from `feed`.
/// Blocking (signatures, hashing), and pure: it reads the directory in force
/// and this institution's keys, and writes nothing. A large manifest's
/// documents are hashed later, by [`super::assemble::large_digests`].
pub fn open(trust: &Trust, feed: Feed, value: &[u8]) -> Result<Opened, Rejection> {
    let directory = trust.directory();
    match feed {
        Feed::Tracking => {
            let envelope =
                envelope::open(value, &directory, crate::lifecycle::tracking::BROADCAST)?;
            return Ok(Opened::Tracking(crate::lifecycle::tracking::event_of(
                &envelope,
            )?));
        }
        Feed::Directory => {
            let signed = SignedDirectoryEntry::decode(value).map_err(|e| {
                Rejection::new("directory", format!("not a signed directory entry: {e}"))
            })?;
            let entry = ecointegra_broker::directory::verify_entry(&signed, &trust.anchor)
                .map_err(|reason| Rejection::new("directory", reason))?;
            return Ok(Opened::Directory { signed, entry });
        }
        Feed::Inbox => {}
    }
    let envelope = envelope::open(value, &directory, trust.institution())?;
    match MessageType::try_from(envelope.message_type) {
        Ok(MessageType::Chunk) => {
            let chunk: Chunk = envelope::open_payload(&envelope, &trust.keyring)?;
            let hash_ok = Sha256::digest(&chunk.data).as_slice() == chunk.sha256.as_slice();
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
        Ok(MessageType::Receipt) => {
            let receipt: Receipt = envelope::payload(&envelope)?;
            Ok(Opened::Receipt {
                envelope,
                receipt,
                raw: value.to_vec(),
            })
        }
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
            data: data.to_vec(),
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
        let sealed = |e: &TrackingEvent| {
            s.senamhi
                .seal(
                    e.event_id.clone(),
                    MessageType::TrackingEvent,
                    crate::ids::BROADCAST,
                    e.encode_to_vec(),
                )
                .encode_to_vec()
        };
        assert!(matches!(
            open(&s.oefa, Feed::Tracking, &sealed(&event("senamhi"))),
            Ok(Opened::Tracking(_))
        ));
        let Err(rejection) = open(&s.oefa, Feed::Tracking, &sealed(&event("oefa"))) else {
            panic!("an event claiming another institution opened")
        };
        assert_eq!(rejection.code, "tracking");
    }
}
