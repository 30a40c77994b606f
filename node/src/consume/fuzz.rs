//! Property-based fuzzing of every decoder of what arrives from the wire
//! (envelope, chunk, manifest, receipt, sealed receipt, notice, tracking
//! event, directory entry), on stable Rust, bounded: 100,000 inputs each,
//! mutated from valid encodings (bytes flipped, cut, inserted, repeated) and
//! plain noise, each decoded and, when it decodes, checked as a consumer
//! checks it. The property: no input makes a decoder or a check panic.

use super::open::{Opened, open};
use super::{Feed, check_for_fuzzing};
use crate::trust::Trust;
use ecointegra_broker::directory::{Authority, Directory, entry_for, verify_entry};
use ecointegra_broker::envelope::Sealer;
use ecointegra_broker::keys::SigningIdentity;
use ecointegra_proto::v1::{
    Chunk, DirectoryEntry, DocumentDigest, Envelope, Manifest, MessageType, Notice, Receipt,
    SignedDirectoryEntry, TrackingEvent, Transfer,
};
use prost::Message;

const INPUTS: usize = 100_000;

/// A small, seeded generator: the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One input mutated from `seed`, or noise.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    match rng.below(6) {
        0 => {
            let n = rng.below(64);
            return (0..n).map(|_| rng.next() as u8).collect();
        }
        1 => bytes.truncate(rng.below(seed.len() + 1)),
        2 => {
            let at = rng.below(bytes.len() + 1);
            let n = 1 + rng.below(16);
            let noise: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            bytes.splice(at..at, noise);
        }
        3 => {
            let from = rng.below(bytes.len() + 1);
            let to = (from + rng.below(32)).min(bytes.len());
            let piece = bytes[from..to].to_vec();
            let at = rng.below(bytes.len() + 1);
            bytes.splice(at..at, piece);
        }
        _ => {}
    }
    for _ in 0..1 + rng.below(4) {
        if !bytes.is_empty() {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
    }
    bytes
}

fn run<F: FnMut(&[u8])>(seeds: &[Vec<u8>], salt: u64, mut each: F) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ salt);
    for i in 0..INPUTS {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        each(&input);
    }
}

fn transfer() -> Transfer {
    Transfer {
        transfer_id: "ab".repeat(16),
        tracking_code: "SENAMHI-2026-0123ABCD".into(),
        origin: "senamhi".into(),
        destination: "oefa".into(),
        subject: "Solicitud".into(),
        hop: 2,
        kind: 3,
        related_transfer_id: "cd".repeat(16),
        filed_at: "senamhi".into(),
        prior_receipts: vec![vec![1, 2, 3]],
        ..Default::default()
    }
}

fn digest() -> DocumentDigest {
    DocumentDigest {
        index: 0,
        name: "carta.pdf".into(),
        media_type: "application/pdf".into(),
        size: 10,
        sha256: vec![7; 32],
        chunk_count: 1,
        data: Vec::new(),
    }
}

#[test]
fn payload_decoders_and_their_checks_never_panic() {
    let chunk = Chunk {
        transfer_id: "ab".repeat(16),
        document_index: 1,
        seq: 2,
        offset: 1024,
        sha256: vec![1; 32],
        data: b"%PDF-1.7".to_vec().into(),
    }
    .encode_to_vec();
    run(&[chunk], 1, |b| {
        if let Ok(c) = Chunk::decode(b) {
            let _ = check_for_fuzzing::chunk("x", &c);
        }
    });
    let manifest = Manifest {
        transfer: Some(transfer()),
        documents: vec![digest(), digest()],
        attempt: 1,
        chunk_size: 1024,
        probe: false,
    }
    .encode_to_vec();
    run(&[manifest], 2, |b| {
        if let Ok(m) = Manifest::decode(b) {
            let _ = check_for_fuzzing::manifest("x", &m);
            if let Some(t) = &m.transfer {
                let _ = crate::lifecycle::custody::may_send(t, &[], "senamhi");
            }
        }
    });
    let receipt = Receipt {
        transfer_id: "ab".repeat(16),
        tracking_code: "SENAMHI-2026-0123ABCD".into(),
        receiving_institution: "oefa".into(),
        documents: vec![digest()],
        origin: "senamhi".into(),
        hop: 1,
        ..Default::default()
    }
    .encode_to_vec();
    run(&[receipt], 3, |b| {
        if let Ok(r) = Receipt::decode(b) {
            let _ = check_for_fuzzing::receipt("x", &r);
        }
    });
    let notice = Notice {
        transfer_id: "ab".repeat(16),
        tracking_code: "SENAMHI-2026-0123ABCD".into(),
        status: 5,
        reason: "Falta la firma".into(),
        tracking_seq: 4,
        at_ms: 1,
        cargo: Some(ecointegra_proto::v1::SgdCargo {
            flag: "O".into(),
            registry_number: "2027-000123".into(),
            pdf: b"%PDF-1.4".to_vec(),
            ..Default::default()
        }),
    }
    .encode_to_vec();
    run(&[notice], 4, |b| {
        if let Ok(n) = Notice::decode(b) {
            let _ = check_for_fuzzing::notice("x", &n);
        }
    });
    let event = TrackingEvent {
        event_id: "senamhi/1".into(),
        tracking_code: "SENAMHI-2026-0123ABCD".into(),
        institution: "senamhi".into(),
        status: 1,
        seq: 3,
        verifier: vec![9; 32],
        holder: "senamhi".into(),
        counterpart: "oefa".into(),
        ..Default::default()
    }
    .encode_to_vec();
    run(&[event], 5, |b| {
        if let Ok(e) = TrackingEvent::decode(b) {
            let _ = check_for_fuzzing::event(&e);
            let _ = crate::lifecycle::tracking::on_chain(&e.tracking_code, vec![e.clone()]);
        }
    });
}

#[test]
fn envelopes_directory_entries_and_receipt_chains_never_panic() {
    let authority = Authority::new(SigningIdentity::generate());
    let senamhi = SigningIdentity::generate();
    let oefa = SigningIdentity::generate();
    let mut directory = Directory::default();
    let mut signed_entries = Vec::new();
    for (id, identity) in [("senamhi", &senamhi), ("oefa", &oefa)] {
        let signed = authority.sign(&entry_for(id, &id.to_uppercase(), identity, 1));
        directory
            .insert(&verify_entry(&signed, &authority.public_key()).unwrap())
            .unwrap();
        signed_entries.push(signed.encode_to_vec());
    }
    run(&signed_entries, 6, |b| {
        if let Ok(s) = SignedDirectoryEntry::decode(b) {
            let _ = verify_entry(&s, &authority.public_key());
            let _ = DirectoryEntry::decode(s.entry.as_slice());
        }
    });

    let trust = Trust::new(
        Sealer::new("oefa", oefa.clone()),
        authority.public_key(),
        vec![oefa.clone()],
        directory.clone(),
    );
    let sealer = Sealer::new("senamhi", senamhi);
    let key = oefa.encryption_public_key();
    let payload = Chunk {
        transfer_id: "ab".repeat(16),
        sha256: vec![0; 32],
        data: vec![1, 2, 3].into(),
        ..Default::default()
    }
    .encode_to_vec();
    let sealed = |message_type| {
        sealer
            .seal_encrypted(
                format!("{}/chunk/0/0", "ab".repeat(16)),
                message_type,
                "oefa",
                &key,
                &payload,
            )
            .unwrap()
            .encode_to_vec()
    };
    let seeds = [
        sealed(MessageType::Chunk),
        sealed(MessageType::Manifest),
        sealed(MessageType::Notice),
    ];
    let mut opened = 0;
    run(&seeds, 7, |b| {
        if let Ok(envelope) = Envelope::decode(b) {
            let _ = crate::lifecycle::tracking::event_of(&envelope);
        }
        for feed in [Feed::Inbox, Feed::Tracking] {
            if let Ok(Opened::Chunk { .. }) = open(&trust, feed, b) {
                opened += 1;
            }
        }
    });
    // Mutations of a signed envelope open only where they did not touch it.
    assert!(opened < INPUTS);
    let chain = vec![seeds[0].clone(), seeds[1].clone()];
    run(&chain, 8, |b| {
        let _ = crate::lifecycle::custody::verify_chain(&[b.to_vec()], &directory);
    });

    // A sealed receipt: the signed receipt it carries, mutated once opened.
    let receipt = Receipt {
        transfer_id: "ab".repeat(16),
        tracking_code: "OEFA-2026-0123ABCD".into(),
        receiving_institution: "senamhi".into(),
        documents: vec![digest()],
        origin: "oefa".into(),
        hop: 1,
        ..Default::default()
    };
    let id = format!("{}/receipt", "ab".repeat(16));
    let inner = sealer
        .seal(
            id.clone(),
            MessageType::Receipt,
            "oefa",
            receipt.encode_to_vec(),
        )
        .encode_to_vec();
    let outer = sealer
        .seal_encrypted(id, MessageType::SealedReceipt, "oefa", &key, &inner)
        .unwrap();
    assert!(matches!(
        open(&trust, Feed::Inbox, &outer.encode_to_vec()),
        Ok(Opened::Receipt { .. })
    ));
    let mut opened = 0;
    run(&[inner], 9, |b| {
        if check_for_fuzzing::receipt_inside(&outer, b, &directory).is_ok() {
            opened += 1;
        }
    });
    assert!(opened < INPUTS);
}
