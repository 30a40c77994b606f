//! A node holds its ground against hostile records, against the real broker:
//! whatever bytes anyone with write access to a topic writes there, the
//! node dead-letters what it cannot apply, keeps consuming, and a valid
//! filing sent right after still arrives.

use ecointegra_proto::v1::tracking_service_client::TrackingServiceClient;
use ecointegra_proto::v1::{DeadLetter, FilingStatus, TrackRequest};
use ecointegra_tests::*;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use sha2::{Digest, Sha256};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Lets `topic` take records of up to 2 MB, as a topic provisioned with a
/// larger limit than the node's own would.
async fn allow_large_records(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let config =
        AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", "2000000");
    for result in admin
        .alter_configs([&config], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

/// One record of 1,045,000 random bytes and one empty record, on an inbox
/// and on the tracking topic (the attack that stopped a node's deliveries
/// for good): each is dead-lettered, the too-large one as its SHA-256, size
/// and first 64 KiB; deliveries and tracking go on; no consumer is stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_empty_records_are_dead_lettered_and_deliveries_go_on() {
    let federation = Federation::new("hostile-size", &["senamhi", "oefa"]);
    let oefa = federation.start("oefa").await;
    let senamhi = federation.start("senamhi").await;
    let mut origin = senamhi.client.clone();
    let inbox = federation.topic_inbox("oefa");
    let tracking = format!("{}.tracking", federation.prefix);

    // A filing first, so both nodes' consumers are running and assigned.
    deliver_sample(&mut origin, "oefa").await;

    let big = random_bytes(1_045_000);
    for topic in [&inbox, &tracking] {
        allow_large_records(topic).await;
        produce_raw(topic, "big", &big).await;
        produce_raw(topic, "empty", b"").await;
    }

    // A valid filing sent right after the attack arrives, and is tracked.
    let doc = Doc::new("informe.pdf", 300_000, 7);
    let after = submit(
        &mut origin,
        header("oefa", "Después"),
        std::slice::from_ref(&doc),
    )
    .await
    .unwrap();
    let delivered = wait_for_status(
        &mut origin,
        &after.tracking_code,
        FilingStatus::Delivered,
        WAIT,
    )
    .await;
    assert_eq!(delivered.documents[0].sha256, doc.sha256_hex());
    let mut citizen = TrackingServiceClient::connect(format!("http://{}", oefa.grpc_addr()))
        .await
        .unwrap();
    eventually("oefa's portal to show the filing's steps", async || {
        let steps = citizen
            .track(TrackRequest {
                tracking_code: after.tracking_code.clone(),
                verification_code: after.verification_code.clone(),
            })
            .await
            .map_or(0, |a| a.into_inner().timeline.len());
        if steps >= 3 { Ok(steps) } else { Err(steps) }
    })
    .await;

    // oefa dead-lettered all four records (two on its inbox, two on the
    // tracking topic); the large ones by digest, size and first 64 KiB.
    let letters: Vec<DeadLetter> = read_topic(&federation.topic_dlq("oefa"), 4, WAIT)
        .iter()
        .map(|m| DeadLetter::decode(rdkafka::Message::payload(m).unwrap()).unwrap())
        .collect();
    assert_eq!(letters.len(), 4, "{letters:?}");
    let large: Vec<&DeadLetter> = letters
        .iter()
        .filter(|l| l.reason_code == "too-large")
        .collect();
    assert_eq!(large.len(), 2);
    for letter in &large {
        assert!(letter.truncated);
        assert_eq!(letter.original_size, 1_045_000);
        assert_eq!(letter.original_sha256, Sha256::digest(&big).to_vec());
        assert_eq!(letter.original_value, big[..64 * 1024]);
    }
    let sources: Vec<&str> = large.iter().map(|l| l.source_topic.as_str()).collect();
    assert!(sources.contains(&inbox.as_str()) && sources.contains(&tracking.as_str()));
    assert_eq!(
        letters.iter().filter(|l| l.original_size == 0).count(),
        2,
        "the empty records are dead-lettered too"
    );
    for node in [&oefa, &senamhi] {
        assert!(node.node().services().watch.stalls.current().is_empty());
    }
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

/// A listed institution whose node is hostile names files outside the data
/// directory in its transfer ids, and sends a message id that does not name
/// its payload: each record is dead-lettered as an identifier problem, no
/// file appears outside the data directory, and its next valid filing is
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_ids_cannot_name_files_outside_the_data_directory() {
    use ecointegra_proto::v1::{Chunk, MessageType};

    let federation = Federation::new("hostile-path", &["senamhi", "oefa"]);
    let oefa = federation.start("oefa").await;
    let senamhi = federation.start("senamhi").await;
    let mut origin = senamhi.client.clone();
    let inbox = federation.topic_inbox("oefa");
    // senamhi's own key: a listed institution, signing what it likes.
    let hostile = listed_sealer(&federation, "senamhi");
    let oefa_key = federation.identity("oefa").encryption_public_key();
    let target = federation.root.join("pwned");
    let traversal = format!("../../../../../../../..{}", target.display());
    let data = b"%PDF-1.7 not yours".to_vec();
    let send = |transfer_id: String, message_id: String| {
        let chunk = Chunk {
            transfer_id,
            document_index: 0,
            seq: 0,
            offset: 0,
            sha256: Sha256::digest(&data).to_vec(),
            data: data.clone().into(),
        };
        hostile
            .seal_encrypted(
                message_id,
                MessageType::Chunk,
                "oefa",
                &oefa_key,
                &chunk.encode_to_vec(),
            )
            .unwrap()
            .encode_to_vec()
    };
    for transfer_id in [traversal.clone(), target.display().to_string()] {
        let record = send(transfer_id.clone(), format!("{transfer_id}/chunk/0/0"));
        produce_raw(&inbox, "x", &record).await;
    }
    // A well-formed chunk under a message id naming another transfer.
    let record = send("ab".repeat(16), format!("{}/chunk/0/0", "cd".repeat(16)));
    produce_raw(&inbox, "y", &record).await;

    deliver_sample(&mut origin, "oefa").await;

    let letters = read_dead_letters(&federation.topic_dlq("oefa"), 3);
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert!(
        letters
            .iter()
            .all(|l| l.reason_code == "identifier" && l.claimed_sender == "senamhi"),
        "{letters:#?}"
    );
    assert!(
        !target.exists(),
        "a file was written outside the data directory"
    );
    assert!(!std::path::Path::new(&format!("{}.0", target.display())).exists());
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

/// A listed institution (minam) that does not hold senamhi's filing tries to
/// file it as its own, to forward it, and to answer it, each with a
/// well-formed manifest: each is dead-lettered for its custody, oefa holds
/// only senamhi's copy, and the citizen's timeline shows no step of minam.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filing_can_be_sent_on_only_by_who_holds_it() {
    use ecointegra_proto::v1::{DocumentDigest, Manifest, MessageType, Transfer, TransferKind};

    let federation = Federation::new("hostile-custody", &["senamhi", "oefa", "minam"]);
    let senamhi = federation.start("senamhi").await;
    let oefa = federation.start("oefa").await;
    let mut origin = senamhi.client.clone();
    let doc = Doc::new("oficio.pdf", 5_000, 11);
    let filed = submit(
        &mut origin,
        header("oefa", "Propia"),
        std::slice::from_ref(&doc),
    )
    .await
    .unwrap();
    let held = wait_for_status(
        &mut origin,
        &filed.tracking_code,
        FilingStatus::Delivered,
        WAIT,
    )
    .await;

    let hostile = listed_sealer(&federation, "minam");
    let oefa_key = federation.identity("oefa").encryption_public_key();
    let manifest = |kind: TransferKind, hop: u32| {
        let transfer_id = ecointegra_node::ids::bound_transfer_id("minam", &filed.tracking_code);
        let manifest = Manifest {
            transfer: Some(Transfer {
                transfer_id: transfer_id.clone(),
                tracking_code: filed.tracking_code.clone(),
                origin: "minam".into(),
                destination: "oefa".into(),
                subject: "Ajena".into(),
                kind: kind as i32,
                hop,
                related_transfer_id: held.transfer_id.clone(),
                filed_at: "oefa".into(),
                ..Default::default()
            }),
            documents: vec![DocumentDigest {
                index: 0,
                name: "falso.pdf".into(),
                media_type: "application/pdf".into(),
                size: 0,
                sha256: Sha256::digest(b"").to_vec(),
                chunk_count: 0,
                data: Vec::new(),
            }],
            attempt: 1,
            chunk_size: 1024,
            probe: false,
        };
        hostile
            .seal_encrypted(
                format!("{transfer_id}/manifest/1"),
                MessageType::Manifest,
                "oefa",
                &oefa_key,
                &manifest.encode_to_vec(),
            )
            .unwrap()
            .encode_to_vec()
    };
    for (kind, hop) in [
        (TransferKind::Original, 1),
        (TransferKind::Forward, 2),
        (TransferKind::Answer, 2),
    ] {
        produce_raw(&federation.topic_inbox("oefa"), "x", &manifest(kind, hop)).await;
    }
    let letters = read_dead_letters(&federation.topic_dlq("oefa"), 3);
    assert_eq!(letters.len(), 3, "{letters:#?}");
    assert!(
        letters
            .iter()
            .all(|l| l.reason_code == "chain" && l.claimed_sender == "minam"),
        "{letters:#?}"
    );
    // oefa holds senamhi's filing once, as senamhi sent it.
    assert_eq!(inbound_count(&federation, "oefa"), 1);
    let at_oefa = get(&mut oefa.client.clone(), &filed.tracking_code)
        .await
        .unwrap();
    assert_eq!(at_oefa.origin, "senamhi");
    assert_eq!(at_oefa.documents[0].sha256, doc.sha256_hex());
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

/// A listed institution with no part in senamhi's filing publishes signed
/// tracking events for it: a registration with its own verifier and a lower
/// step number (to take over the citizen's code), and an ARCHIVED step. Each
/// is dead-lettered; the citizen's code still works, the other code does not,
/// and the timeline shows only senamhi's and oefa's steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_custody_chain_changes_what_a_citizen_sees() {
    use ecointegra_proto::v1::{MessageType, TrackingEvent};

    let federation = Federation::new("hostile-tracking", &["senamhi", "oefa", "minam"]);
    let senamhi = federation.start("senamhi").await;
    let oefa = federation.start("oefa").await;
    let mut origin = senamhi.client.clone();
    let filed = deliver_sample(&mut origin, "oefa").await;
    let mut citizen = TrackingServiceClient::connect(format!("http://{}", senamhi.grpc_addr()))
        .await
        .unwrap();
    let mut track = async |verification: &str| {
        citizen
            .track(TrackRequest {
                tracking_code: filed.tracking_code.clone(),
                verification_code: verification.into(),
            })
            .await
            .map(|r| r.into_inner())
    };
    let before = eventually("senamhi's portal to show 3 steps", async || {
        match track(&filed.verification_code).await {
            Ok(t) if t.timeline.len() >= 3 => Ok(t),
            other => Err(other.map(|t| t.timeline.len()).map_err(|e| e.code())),
        }
    })
    .await;

    let minam = listed_sealer(&federation, "minam");
    let stolen = "ZZZZ-ZZZZ-ZZZZ-ZZZZ";
    let forged = [
        TrackingEvent {
            event_id: "minam/forged-registration".into(),
            tracking_code: filed.tracking_code.clone(),
            institution: "minam".into(),
            status: FilingStatus::Registered as i32,
            seq: 0,
            verifier: ecointegra_node::verification::verifier(&filed.tracking_code, stolen),
            holder: "minam".into(),
            ..Default::default()
        },
        TrackingEvent {
            event_id: "minam/forged-archive".into(),
            tracking_code: filed.tracking_code.clone(),
            institution: "minam".into(),
            status: FilingStatus::Archived as i32,
            seq: 1 << 39,
            holder: "minam".into(),
            ..Default::default()
        },
    ];
    let tracking = format!("{}.tracking", federation.prefix);
    for event in &forged {
        let sealed = minam.seal(
            event.event_id.clone(),
            MessageType::TrackingEvent,
            ecointegra_node::ids::BROADCAST,
            event.encode_to_vec(),
        );
        produce_raw(&tracking, &filed.tracking_code, &sealed.encode_to_vec()).await;
    }
    // The registration is refused outright; the archive, a well-formed step
    // of someone with no part in the filing, is kept but never shown.
    let letters = read_dead_letters(&federation.topic_dlq("senamhi"), 1);
    assert_eq!(letters[0].reason_code, "identifier", "{letters:#?}");
    assert_eq!(letters[0].claimed_sender, "minam");
    // A valid filing after the forgeries shows senamhi consumed past them.
    deliver_sample(&mut origin, "oefa").await;

    let after = track(&filed.verification_code).await.unwrap();
    assert_eq!(after.timeline, before.timeline);
    assert_eq!(after.status, before.status);
    assert!(after.timeline.iter().all(|e| e.institution != "minam"));
    assert_eq!(
        track(stolen).await.unwrap_err().code(),
        tonic::Code::NotFound,
        "the forged verification code opens nothing"
    );
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

/// A node reads its own steps back from the tracking topic and takes one as
/// known without verifying it only if it is, byte for byte, the envelope it
/// signed and stored. senamhi's registration replayed changes nothing and is
/// not dead-lettered; the same event id under senamhi's name with another
/// status, signed by minam, is dead-lettered at senamhi as at oefa, and the
/// timeline keeps senamhi's own step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_knows_its_own_steps_only_byte_for_byte() {
    use ecointegra_proto::v1::{Envelope, MessageType};

    let federation = Federation::new("hostile-own-steps", &["senamhi", "oefa", "minam"]);
    let senamhi = federation.start("senamhi").await;
    let oefa = federation.start("oefa").await;
    let mut origin = senamhi.client.clone();
    let filed = deliver_sample(&mut origin, "oefa").await;
    let store = federation.store_path("senamhi");
    registration_known(&store, &filed.tracking_code).await;
    let (event_id, genuine): (String, Vec<u8>) = {
        let conn = rusqlite::Connection::open_with_flags(
            &store,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.query_row(
            "SELECT event_id, envelope FROM tracking_events
             WHERE tracking_code = ?1 AND institution = 'senamhi' AND event_id LIKE '%/REGISTERED'",
            [&filed.tracking_code],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    let mut archived = stored_step(&genuine);
    archived.status = FilingStatus::Archived as i32;
    let mut forged: Envelope = listed_sealer(&federation, "minam").seal(
        event_id.clone(),
        MessageType::TrackingEvent,
        ecointegra_node::ids::BROADCAST,
        archived.encode_to_vec(),
    );
    forged.sender = "senamhi".into();
    let steps = format!(
        "SELECT COUNT(*) FROM tracking_events WHERE tracking_code = '{}'",
        filed.tracking_code
    );
    // Registered, sent, delivered: the timeline as it stays.
    let steps_before = eventually("senamhi to hold 3 steps", async || {
        match count_rows(&store, &steps) {
            n if n >= 3 => Ok(n),
            n => Err(n),
        }
    })
    .await;
    let tracking = format!("{}.tracking", federation.prefix);
    // Same key, same partition: the replay is read before the forgery.
    produce_raw(&tracking, &filed.tracking_code, &genuine).await;
    produce_raw(&tracking, &filed.tracking_code, &forged.encode_to_vec()).await;

    for node in ["senamhi", "oefa"] {
        let letters = read_dead_letters(&federation.topic_dlq(node), 1);
        assert_eq!(letters.len(), 1, "the forgery dead-lettered at {node}");
        assert_eq!(letters[0].reason_code, "signature", "{letters:#?}");
        assert_eq!(letters[0].claimed_sender, "senamhi");
        assert_eq!(letters[0].message_id, event_id);
        assert_eq!(letters[0].original_value, forged.encode_to_vec());
        assert_eq!(
            read_all(&federation.topic_dlq(node)).len(),
            1,
            "only the forgery is dead-lettered at {node}, not the replay"
        );
    }
    let kept = count_rows(
        &store,
        &format!(
            "SELECT COUNT(*) FROM tracking_events WHERE event_id = '{event_id}' AND envelope = x'{}'",
            hex::encode(&genuine)
        ),
    );
    assert_eq!(kept, 1, "senamhi's own step stays as it signed it");
    assert_eq!(count_rows(&store, &steps), steps_before, "no step added");
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

/// Another listed institution learns the id of senamhi's transfer before its
/// chunks arrive (transfer ids are not secret) and sends chunks under it
/// first, with message ids that name them exactly: they are its own, and
/// senamhi's transfer is still assembled from senamhi's chunks and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_institution_cannot_preempt_a_transfer() {
    use ecointegra_proto::v1::{Chunk, MessageType};

    let federation = Federation::new("hostile-preempt", &["senamhi", "oefa", "minam"]);
    let oefa = federation.start("oefa").await;
    // senamhi accepts the filing while Kafka is out of its reach.
    federation.write_config("senamhi", "127.0.0.1:1", "");
    let senamhi = federation.start("senamhi").await;
    let mut origin = senamhi.client.clone();
    let doc = Doc::new("informe.pdf", 3_000_000, 21);
    let filed = submit(
        &mut origin,
        header("oefa", "Mía"),
        std::slice::from_ref(&doc),
    )
    .await
    .unwrap();
    let transfer_id = get(&mut origin, &filed.tracking_code)
        .await
        .unwrap()
        .transfer_id;

    let minam = listed_sealer(&federation, "minam");
    let oefa_key = federation.identity("oefa").encryption_public_key();
    for seq in 0..3u32 {
        let data = vec![seq as u8; 10];
        let chunk = Chunk {
            transfer_id: transfer_id.clone(),
            document_index: 0,
            seq,
            offset: 10 * u64::from(seq),
            sha256: Sha256::digest(&data).to_vec(),
            data: data.into(),
        };
        let sealed = minam
            .seal_encrypted(
                format!("{transfer_id}/chunk/0/{seq}"),
                MessageType::Chunk,
                "oefa",
                &oefa_key,
                &chunk.encode_to_vec(),
            )
            .unwrap();
        produce_raw(
            &federation.topic_inbox("oefa"),
            &transfer_id,
            &sealed.encode_to_vec(),
        )
        .await;
    }

    // Now senamhi reaches Kafka: its transfer goes out after minam's chunks.
    senamhi.shutdown().await;
    federation.write_config("senamhi", &bootstrap(), "");
    let senamhi = federation.start("senamhi").await;
    let mut origin = senamhi.client.clone();
    wait_for_status(
        &mut origin,
        &filed.tracking_code,
        FilingStatus::Delivered,
        WAIT,
    )
    .await;
    let (sha, len) = download_sha256(&mut oefa.client.clone(), &filed.tracking_code, 0).await;
    assert_eq!((sha, len), (doc.sha256_hex(), doc.len));
    assert_eq!(inbound_count(&federation, "oefa"), 1);
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

/// A one-document original transfer as a node would publish it to oefa,
/// crafted by the test playing the listed institution `origin`: its chunks
/// of 1 KiB and its manifest, sealed with `origin`'s key.
struct Crafted {
    sealer: ecointegra_broker::envelope::Sealer,
    oefa_key: [u8; 32],
    origin: String,
    tracking_code: String,
    transfer_id: String,
    document: Vec<u8>,
}

impl Crafted {
    fn new(federation: &Federation, origin: &str, tracking_code: &str, transfer_id: &str) -> Self {
        Crafted {
            sealer: listed_sealer(federation, origin),
            oefa_key: federation.identity("oefa").encryption_public_key(),
            origin: origin.into(),
            tracking_code: tracking_code.into(),
            transfer_id: transfer_id.into(),
            document: random_bytes(3_000),
        }
    }

    fn seal(
        &self,
        id: String,
        kind: ecointegra_proto::v1::MessageType,
        payload: Vec<u8>,
    ) -> Vec<u8> {
        self.sealer
            .seal_encrypted(id, kind, "oefa", &self.oefa_key, &payload)
            .unwrap()
            .encode_to_vec()
    }

    /// The chunks of `bytes` (the document itself, or a corrupt copy).
    fn chunks(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        use ecointegra_proto::v1::{Chunk, MessageType};
        bytes
            .chunks(1024)
            .enumerate()
            .map(|(seq, data)| {
                let chunk = Chunk {
                    transfer_id: self.transfer_id.clone(),
                    document_index: 0,
                    seq: seq as u32,
                    offset: seq as u64 * 1024,
                    sha256: Sha256::digest(data).to_vec(),
                    data: data.to_vec().into(),
                };
                self.seal(
                    format!("{}/chunk/0/{seq}", self.transfer_id),
                    MessageType::Chunk,
                    chunk.encode_to_vec(),
                )
            })
            .collect()
    }

    fn manifest(&self, attempt: u32, probe: bool) -> Vec<u8> {
        self.manifest_carrying(attempt, probe, None)
    }

    /// A manifest for the document; with `inline`, one that carries these
    /// bytes as the document instead of announcing chunks.
    fn manifest_carrying(&self, attempt: u32, probe: bool, inline: Option<&[u8]>) -> Vec<u8> {
        use ecointegra_proto::v1::{DocumentDigest, Manifest, MessageType, Transfer, TransferKind};
        let manifest = Manifest {
            transfer: Some(Transfer {
                transfer_id: self.transfer_id.clone(),
                tracking_code: self.tracking_code.clone(),
                origin: self.origin.clone(),
                destination: "oefa".into(),
                subject: "Preparado".into(),
                kind: TransferKind::Original as i32,
                hop: 1,
                filed_at: self.origin.clone(),
                ..Default::default()
            }),
            documents: vec![DocumentDigest {
                index: 0,
                name: "informe.pdf".into(),
                media_type: "application/pdf".into(),
                size: self.document.len() as u64,
                sha256: Sha256::digest(&self.document).to_vec(),
                chunk_count: match inline {
                    Some(_) => 0,
                    None => self.document.len().div_ceil(1024) as u32,
                },
                data: inline.map(<[u8]>::to_vec).unwrap_or_default(),
            }],
            attempt,
            chunk_size: 1024,
            probe,
        };
        self.seal(
            format!("{}/manifest/{attempt}", self.transfer_id),
            MessageType::Manifest,
            manifest.encode_to_vec(),
        )
    }

    /// Publishes `records` in order, keyed by the transfer id as a node does.
    async fn publish(&self, federation: &Federation, records: &[Vec<u8>]) {
        for record in records {
            produce_raw(&federation.topic_inbox("oefa"), &self.transfer_id, record).await;
        }
    }

    /// Waits until oefa holds the filing, and checks its bytes.
    async fn assert_held(&self, oefa: &mut Client) {
        let sha256 = hex::encode(Sha256::digest(&self.document));
        let held = wait_for_filing(oefa, &self.tracking_code, "the filing at oefa", |_| true).await;
        assert_eq!(held.origin, self.origin);
        assert_eq!(held.transfer_id, self.transfer_id);
        assert_eq!(held.documents[0].sha256, sha256);
        let (downloaded, size) = download_sha256(oefa, &self.tracking_code, 0).await;
        assert_eq!(downloaded, sha256);
        assert_eq!(size, self.document.len() as u64);
    }
}

/// A transfer whose documents arrive corrupt (their bytes differ from the
/// manifest's SHA-256) is dead-lettered for its digest and forgotten: a probe
/// (the manifest alone) for it is then quietly skipped, and the transfer sent
/// again whole, under the same chunk ids, is delivered with the right bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_transfer_sent_again_is_delivered() {
    let federation = Federation::new("hostile-corrupt", &["senamhi", "oefa"]);
    let oefa = federation.start("oefa").await;
    // The test plays senamhi's node, which sends a corrupt copy first.
    let (senamhi, bad) = corrupt_copy(&federation, "SENAMHI-2026-K7Q29XWD");
    // Corrupt, then a probe, then the whole transfer again: one partition.
    let mut records = senamhi.chunks(&bad);
    records.push(senamhi.manifest(1, false));
    records.push(senamhi.manifest(2, true));
    records.extend(senamhi.chunks(&senamhi.document));
    records.push(senamhi.manifest(3, false));
    senamhi.publish(&federation, &records).await;

    // The corrupt copy, and only it, was dead-lettered; the probe was not.
    held_once_after_one_digest_letter(&federation, &senamhi, &oefa).await;
    assert_eq!(
        count_rows(
            &federation.store_path("oefa"),
            "SELECT COUNT(*) FROM dead_letters"
        ),
        1
    );
    oefa.shutdown().await;
}

/// The same for a small filing whose document travels inside its manifest:
/// a copy with one byte changed is dead-lettered for its digest, and the
/// good one sent after it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_small_filing_sent_again_is_delivered() {
    let federation = Federation::new("hostile-corrupt-inline", &["senamhi", "oefa"]);
    let oefa = federation.start("oefa").await;
    let (senamhi, bad) = corrupt_copy(&federation, "SENAMHI-2026-R3EM4TAP");
    let records = [
        senamhi.manifest_carrying(1, false, Some(&bad)),
        senamhi.manifest_carrying(2, false, Some(&senamhi.document)),
    ];
    senamhi.publish(&federation, &records).await;

    held_once_after_one_digest_letter(&federation, &senamhi, &oefa).await;
    oefa.shutdown().await;
}

/// senamhi, played by the test, for filing `code`, and a copy of its
/// document with one byte changed.
fn corrupt_copy(federation: &Federation, code: &str) -> (Crafted, Vec<u8>) {
    let transfer_id = ecointegra_node::ids::bound_transfer_id("senamhi", code);
    let senamhi = Crafted::new(federation, "senamhi", code, &transfer_id);
    let mut bad = senamhi.document.clone();
    bad[2_500] ^= 1;
    (senamhi, bad)
}

/// oefa holds senamhi's filing, once, with the right bytes, and dead-lettered
/// exactly one record, for its digest.
async fn held_once_after_one_digest_letter(
    federation: &Federation,
    senamhi: &Crafted,
    oefa: &Running,
) {
    senamhi.assert_held(&mut oefa.client.clone()).await;
    assert_eq!(inbound_count(federation, "oefa"), 1);
    let letters = read_dead_letters(&federation.topic_dlq("oefa"), 1);
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0].reason_code, "digest", "{letters:#?}");
}

/// A listed institution (minam) that learned senamhi's transfer id (it is
/// on every record's key) gets a complete filing of its own to oefa first,
/// under that id, to make oefa refuse senamhi's as already known. A
/// transfer id is bound to its origin and filing, so minam's is
/// dead-lettered for its id, and senamhi's arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_id_cannot_be_pre_empted() {
    let federation = Federation::new("hostile-preempt", &["senamhi", "oefa", "minam"]);
    let oefa = federation.start("oefa").await;
    let code = "SENAMHI-2026-M4TAPR3E";
    let transfer_id = ecointegra_node::ids::bound_transfer_id("senamhi", code);
    let senamhi = Crafted::new(&federation, "senamhi", code, &transfer_id);
    let minam = Crafted::new(&federation, "minam", "MINAM-2026-9XWDK7Q2", &transfer_id);
    let mut records = minam.chunks(&minam.document);
    records.push(minam.manifest(1, false));
    minam.publish(&federation, &records).await;
    let mut records = senamhi.chunks(&senamhi.document);
    records.push(senamhi.manifest(1, false));
    senamhi.publish(&federation, &records).await;

    let mut client = oefa.client.clone();
    senamhi.assert_held(&mut client).await;
    assert_eq!(inbound_count(&federation, "oefa"), 1);
    let status = get(&mut client, &minam.tracking_code).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let letters = read_dead_letters(&federation.topic_dlq("oefa"), 1);
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0].reason_code, "identifier", "{letters:#?}");
    assert_eq!(letters[0].claimed_sender, "minam", "{letters:#?}");
    oefa.shutdown().await;
}

/// Listed institutions forge receipts for senamhi's transfer to oefa while
/// oefa's node is down: minam signs one as if it had received it, and oefa's
/// own key signs receipts with the wrong origin, hop, previous receipt and
/// tracking code. Each is dead-lettered naming what differs, none marks the
/// filing delivered, and when oefa's node comes up its genuine receipt does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_receipts_are_dead_lettered_and_the_genuine_one_delivers() {
    use ecointegra_proto::v1::{DocumentDigest, GetReceiptRequest, MessageType, Receipt};

    let federation = Federation::new("hostile-receipts", &["senamhi", "oefa", "minam"]);
    let senamhi = federation.start("senamhi").await;
    let mut origin = senamhi.client.clone();
    let doc = Doc::new("acta.pdf", 4_000, 17);
    let filed = submit(
        &mut origin,
        header("oefa", "Acta"),
        std::slice::from_ref(&doc),
    )
    .await
    .unwrap();
    let sent = wait_for_status(&mut origin, &filed.tracking_code, FilingStatus::Sent, WAIT).await;
    let transfer_id = sent.transfer_id.clone();
    // The receipt oefa would sign, but for each forgery.
    let honest = Receipt {
        transfer_id: transfer_id.clone(),
        tracking_code: filed.tracking_code.clone(),
        receiving_institution: "oefa".into(),
        registry_number: "OEFA-2026-999999".into(),
        received_at_ms: ecointegra_broker::now_ms(),
        documents: vec![DocumentDigest {
            index: 0,
            name: doc.name.clone(),
            media_type: "application/pdf".into(),
            size: doc.len,
            sha256: hex::decode(doc.sha256_hex()).unwrap(),
            chunk_count: 1,
            data: Vec::new(),
        }],
        origin: "senamhi".into(),
        previous_receipt_sha256: Vec::new(),
        hop: 1,
    };
    let senamhi_key = federation.identity("senamhi").encryption_public_key();
    let forge = |by: &str, edit: &dyn Fn(&mut Receipt)| {
        let mut receipt = honest.clone();
        edit(&mut receipt);
        let sealer = listed_sealer(&federation, by);
        let id = format!("{transfer_id}/receipt");
        let signed = sealer.seal(
            id.clone(),
            MessageType::Receipt,
            "senamhi",
            receipt.encode_to_vec(),
        );
        sealer
            .seal_encrypted(
                id,
                MessageType::SealedReceipt,
                "senamhi",
                &senamhi_key,
                &signed.encode_to_vec(),
            )
            .unwrap()
            .encode_to_vec()
    };
    let code = &filed.tracking_code;
    let tail = if code.ends_with("FFFF") {
        "0000"
    } else {
        "FFFF"
    };
    let other_code = format!("{}{tail}", &code[..code.len() - 4]);
    // Who signs, what the forgery changes, and what its dead letter says.
    type Forgery<'a> = (&'a str, &'a dyn Fn(&mut Receipt), &'a str);
    let forgeries: [Forgery; 5] = [
        (
            "minam",
            &|r| r.receiving_institution = "minam".into(),
            "signed by minam, but the transfer was sent to oefa",
        ),
        (
            "oefa",
            &|r| r.origin = "minam".into(),
            "names minam as origin, but senamhi sent the transfer",
        ),
        (
            "oefa",
            &|r| r.hop = 2,
            "names hop 2, but the transfer was hop 1",
        ),
        (
            "oefa",
            &|r| r.previous_receipt_sha256 = vec![9; 32],
            "names previous receipt \"0909",
        ),
        (
            "oefa",
            &|r| r.tracking_code = other_code.clone(),
            "names tracking code",
        ),
    ];
    let inbox = federation.topic_inbox("senamhi");
    for (by, edit, _) in &forgeries {
        produce_raw(&inbox, &transfer_id, &forge(by, *edit)).await;
    }

    let letters = read_dead_letters(&federation.topic_dlq("senamhi"), forgeries.len());
    assert_eq!(letters.len(), forgeries.len(), "{letters:#?}");
    for (by, _, why) in &forgeries {
        assert!(
            letters.iter().any(|l| l.reason_code == "receipt"
                && l.claimed_sender == *by
                && l.reason.contains(why)),
            "no dead letter from {by} saying {why:?}: {letters:#?}"
        );
    }
    // Every forgery was applied and refused: the filing is as it was.
    let store = federation.store_path("senamhi");
    assert_eq!(
        get(&mut origin, &filed.tracking_code).await.unwrap().status,
        FilingStatus::Sent as i32,
        "no forged receipt marked the filing delivered"
    );
    assert_eq!(count_rows(&store, "SELECT COUNT(*) FROM receipts"), 0);

    // oefa's node comes up: its genuine receipt delivers the filing.
    let mut oefa = federation.start("oefa").await;
    wait_for_status(
        &mut origin,
        &filed.tracking_code,
        FilingStatus::Delivered,
        WAIT,
    )
    .await;
    let receipt = origin
        .get_receipt(GetReceiptRequest {
            tracking_code: filed.tracking_code.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(receipt.verified);
    let held = get(&mut oefa.client, &filed.tracking_code).await.unwrap();
    assert_eq!(
        receipt.receipt.unwrap().registry_number,
        held.registry_number,
        "the receipt stored is oefa's own"
    );
    assert_eq!(count_rows(&store, "SELECT COUNT(*) FROM receipts"), 1);
    senamhi.shutdown().await;
    oefa.shutdown().await;
}
