//! Document transfer between institutions against the real broker: bytes and
//! SHA-256 equal at the destination, the receipt verifies, status DELIVERED,
//! exactly one filing at the destination.

use ecointegra_broker::envelope::Sealer;
use ecointegra_broker::keys::SigningIdentity;
use ecointegra_proto::v1::{
    Chunk, Direction, Envelope, FilingStatus, GetReceiptRequest, ListInboxRequest, MessageType,
    Receipt, StreamInboxRequest,
};
use ecointegra_tests::*;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::time::Duration;
use tonic::Code;

/// A well-formed transfer id for a chunk whose data does not match its hash.
const WRONG_HASH: &str = "0000000000000000000000000000dead";

/// Checks what the sender and the destination would: same bytes, a receipt
/// that verifies and names every digest, exactly one filing at the destination.
async fn assert_delivered(origin: &mut Client, destination: &mut Client, code: &str, docs: &[Doc]) {
    let sent = wait_for_status(origin, code, FilingStatus::Delivered, PATIENCE).await;
    let received = get(destination, code).await.unwrap();
    assert_eq!(received.status, FilingStatus::Delivered as i32);
    assert_eq!(received.direction, Direction::Inbound as i32);
    assert_eq!(received.documents.len(), docs.len());
    for (doc, stored) in docs.iter().zip(&received.documents) {
        let want = doc.sha256_hex();
        assert_eq!(stored.sha256, want, "{}", doc.name);
        assert_eq!(stored.size, doc.len);
        let (got, len) = download_sha256(destination, code, stored.index).await;
        assert_eq!(
            (got, len),
            (want, doc.len),
            "downloaded {} from the destination",
            doc.name
        );
    }
    let receipt = origin
        .get_receipt(GetReceiptRequest {
            tracking_code: code.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(receipt.verified, "the origin verified the receipt");
    // Verify it independently, as a third party holding the signer's key would.
    let envelope = Envelope::decode(receipt.signed_envelope.as_slice()).unwrap();
    let key = ed25519_dalek_key(&receipt.signer_public_key);
    ecointegra_broker::envelope::verify_signature(&envelope, &key).unwrap();
    let signed = Receipt::decode(envelope.payload.as_ref()).unwrap();
    assert_eq!(signed.tracking_code, code);
    assert_eq!(signed.receiving_institution, received.destination);
    assert_eq!(signed.registry_number, received.registry_number);
    let digests: Vec<String> = signed
        .documents
        .iter()
        .map(|d| hex::encode(&d.sha256))
        .collect();
    let wanted: Vec<String> = docs.iter().map(Doc::sha256_hex).collect();
    assert_eq!(digests, wanted);
    assert_eq!(sent.documents.len(), docs.len());
}

/// `payload` with the byte at `at` flipped by `mask`.
fn flipped(payload: &[u8], at: usize, mask: u8) -> prost::bytes::Bytes {
    let mut altered = payload.to_vec();
    altered[at] ^= mask;
    altered.into()
}

fn ed25519_dalek_key(bytes: &[u8]) -> ed25519_dalek::VerifyingKey {
    ed25519_dalek::VerifyingKey::from_bytes(bytes.try_into().unwrap()).unwrap()
}

fn receipt_count(federation: &Federation, id: &str) -> i64 {
    count_rows(&federation.store_path(id), "SELECT COUNT(*) FROM receipts")
}

/// A small filing travels as its manifest alone, with the documents inside,
/// sealed and encrypted like any chunk, once the sender knows the
/// destination reads envelope schema 3 (every envelope and tracking event
/// says what its sender reads: here, the first filing's receipt and tracking
/// events); a larger one goes as chunks.
/// Documents of at most 32 KiB are kept inside each node's store, others as files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_filing_travels_as_one_encrypted_record() {
    let federation = Federation::new("inline", &["senamhi", "oefa"]);
    let [mut senamhi, mut oefa] = federation.start_all().await;

    let small = [
        Doc::new("vacio.pdf", 0, 4),
        Doc::new("carta.pdf", 1024, 5),
        Doc::new("anexo.pdf", 20_000, 6),
        Doc::new("informe.pdf", 100_000, 8),
    ];
    let large = [Doc::new("expediente.pdf", 600_000, 7)];
    let mut transfers = Vec::new();
    for docs in [&large[..], &small[..]] {
        let answer = submit(&mut senamhi.client, header("oefa", "Carta"), docs)
            .await
            .unwrap();
        assert_delivered(
            &mut senamhi.client,
            &mut oefa.client,
            &answer.tracking_code,
            docs,
        )
        .await;
        transfers.push(answer.transfer_id);
        // What oefa signed since has reached senamhi: its receipt, which
        // may have gone out in schema 1 (oefa had not heard senamhi yet),
        // and its tracking events, which say what it reads whatever their
        // schema.
        settled(&federation, &["senamhi", "oefa"]).await;
    }
    assert_eq!(inbound_count(&federation, "oefa"), 2);

    // What crossed Kafka, by transfer: the record key is the transfer id.
    let records = read_all(&federation.topic_inbox("oefa"));
    let kinds = |transfer_id: &str| -> Vec<MessageType> {
        use rdkafka::Message as _;
        records
            .iter()
            .filter(|r| r.key() == Some(transfer_id.as_bytes()))
            .map(|r| {
                Envelope::decode(r.payload().unwrap())
                    .unwrap()
                    .message_type()
            })
            .collect()
    };
    assert_eq!(
        kinds(&transfers[0]),
        [
            MessageType::Chunk,
            MessageType::Chunk,
            MessageType::Manifest
        ]
    );
    assert_eq!(kinds(&transfers[1]), [MessageType::Manifest]);
    // At both ends the documents of at most 32 KiB are kept inside the
    // store, with no file of their own, and the others are a file and only
    // that (at oefa the 100 KB one written from inside the manifest).
    for node in ["senamhi", "oefa"] {
        for doc in small.iter().chain(&large) {
            let in_store = doc.len <= 32 * 1024;
            let hex = doc.sha256_hex();
            let rows = count_rows(
                &federation.store_path(node),
                &format!("SELECT COUNT(*) FROM document_contents WHERE sha256 = x'{hex}'"),
            );
            let file = federation
                .data_dir(node)
                .join("blobs")
                .join(&hex[..2])
                .join(&hex);
            assert_eq!(
                (rows, file.exists()),
                (i64::from(in_store), !in_store),
                "{} at {node}",
                doc.name
            );
        }
    }
    // The documents inside the manifest are not readable on the topic.
    let mut sample = Vec::new();
    small[2].for_each_piece(64, |piece| {
        if sample.is_empty() {
            sample = piece.to_vec();
        }
    });
    for record in &records {
        use rdkafka::Message as _;
        let bytes = record.payload().unwrap();
        assert!(!bytes.windows(sample.len()).any(|w| w == sample));
    }
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_of_0_b_1_kib_and_5_mib_arrive_intact() {
    let federation = Federation::new("sizes", &["senamhi", "oefa"]);
    let [mut senamhi, mut oefa] = federation.start_all().await;

    let docs = [
        Doc::new("vacio.pdf", 0, 1),
        Doc::new("carta.pdf", 1024, 2),
        Doc::new("expediente.pdf", 5 << 20, 3),
    ];
    let answer = submit(
        &mut senamhi.client,
        header("oefa", "Informe de monitoreo"),
        &docs,
    )
    .await
    .unwrap();
    assert_eq!(answer.tracking_code.len(), "SENAMHI-2026-".len() + 8);
    assert!(answer.tracking_code.starts_with("SENAMHI-"));
    // 16 characters of Crockford's base32 (80 bits) in groups of four.
    assert_eq!(answer.verification_code.len(), 16 + 3);
    let returned: Vec<&str> = answer.documents.iter().map(|d| d.sha256.as_str()).collect();
    let wanted: Vec<String> = docs.iter().map(Doc::sha256_hex).collect();
    assert_eq!(
        returned, wanted,
        "the answer names each stored document's SHA-256"
    );

    assert_delivered(
        &mut senamhi.client,
        &mut oefa.client,
        &answer.tracking_code,
        &docs,
    )
    .await;
    assert_eq!(inbound_count(&federation, "oefa"), 1);
    let inbox = oefa
        .client
        .list_inbox(ListInboxRequest {
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inbox.filings.len(), 1);
    assert_eq!(inbox.filings[0].tracking_code, answer.tracking_code);
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_idempotency_key_creates_nothing_new() {
    let federation = Federation::new("idempotency", &["senamhi", "oefa"]);
    let mut senamhi = federation.start("senamhi").await;
    let docs = [Doc::new("a.pdf", 10_000, 7)];
    let mut h = header("oefa", "Solicitud");
    h.idempotency_key = "dms-4711".into();
    let first = submit(&mut senamhi.client, h.clone(), &docs).await.unwrap();
    let second = submit(&mut senamhi.client, h, &docs).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        count_rows(
            &federation.store_path("senamhi"),
            "SELECT COUNT(*) FROM filings"
        ),
        1
    );
    senamhi.shutdown().await;
}

/// Submissions that arrive together are stored together (one hop, one
/// write): each still gets its own answer, for its own documents, and a key
/// used twice in one batch still makes one filing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_stored_together_each_get_their_own_answer() {
    let federation = Federation::new("together", &["senamhi", "oefa"]);
    let senamhi = federation.start("senamhi").await;
    let calls: Vec<_> = (0..24u64)
        .map(|i| {
            let mut client = senamhi.client.clone();
            // Every third one retries one key, with one document.
            let (key, doc) = if i % 3 == 0 {
                ("dms-retried".to_owned(), Doc::new("same.pdf", 900, 1))
            } else {
                (
                    format!("dms-{i}"),
                    Doc::new(&format!("d{i}.pdf"), 900 + i, 100 + i),
                )
            };
            tokio::spawn(async move {
                let mut h = header("oefa", "Solicitud");
                h.idempotency_key = key;
                let answer = submit(&mut client, h, std::slice::from_ref(&doc)).await;
                (i, doc, answer.expect("accepted"))
            })
        })
        .collect();
    let mut retried = BTreeSet::new();
    let mut codes = BTreeSet::new();
    for call in calls {
        let (i, doc, answer) = call.await.unwrap();
        assert_eq!(answer.documents.len(), 1, "submission {i}");
        assert_eq!(
            answer.documents[0].sha256,
            doc.sha256_hex(),
            "submission {i}'s own document"
        );
        if i % 3 == 0 {
            retried.insert(answer.tracking_code.clone());
        }
        codes.insert(answer.tracking_code);
    }
    assert_eq!(
        retried.len(),
        1,
        "one filing for the key used 8 times: {retried:?}"
    );
    assert_eq!(
        codes.len(),
        17,
        "16 filings of their own and the retried one"
    );
    assert_eq!(
        count_rows(
            &federation.store_path("senamhi"),
            "SELECT COUNT(*) FROM filings"
        ),
        17
    );
    senamhi.shutdown().await;
}

/// Every bad submission gets INVALID_ARGUMENT naming the field, and leaves
/// nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field() {
    use tonic_types::StatusExt;
    let federation = Federation::with_settings(
        "badinput",
        &["senamhi", "oefa"],
        "\n[transfer]\nmax_document_size = 100000\nmax_filing_size = 150000\n",
    );
    let senamhi = federation.start("senamhi").await;
    let mut origin = senamhi.client.clone();
    let doc = [Doc::new("ok.pdf", 100, 1)];
    let many: Vec<Doc> = (0..101)
        .map(|i| Doc::new(&format!("anexo-{i}.pdf"), 10, i))
        .collect();

    let mut cases: Vec<(&str, ecointegra_proto::v1::FilingHeader, Vec<Doc>)> = vec![
        ("header.destination", header("nadie", "x"), doc.to_vec()),
        ("header.subject", header("oefa", "   "), doc.to_vec()),
        ("documents", header("oefa", "x"), vec![]),
        (
            "documents[0].declared_size",
            header("oefa", "x"),
            vec![Doc::new("big.pdf", 100_001, 1)],
        ),
        (
            "documents[0].name",
            header("oefa", "x"),
            vec![Doc::new("../etc/passwd", 10, 1)],
        ),
        (
            "documents[0].name",
            header("oefa", "x"),
            vec![Doc::new("a\u{7}b.pdf", 10, 1)],
        ),
        // Two documents each allowed, together over transfer.max_filing_size.
        (
            "documents",
            header("oefa", "x"),
            vec![Doc::new("a.pdf", 90_000, 1), Doc::new("b.pdf", 90_000, 2)],
        ),
        // One document more than a filing may carry.
        ("documents[100]", header("oefa", "x"), many),
    ];
    let mut bad_dni = header("oefa", "x");
    bad_dni.sender_party.as_mut().unwrap().document_number = "1234".into();
    cases.push(("header.sender_party.document_number", bad_dni, doc.to_vec()));
    let mut bad_ruc = header("oefa", "x");
    let party = bad_ruc.sender_party.as_mut().unwrap();
    party.document_type = ecointegra_proto::v1::IdentityDocumentType::Ruc as i32;
    party.document_number = "20131368828".into();
    cases.push(("header.sender_party.document_number", bad_ruc, doc.to_vec()));

    for (field, header, docs) in cases {
        let status = submit(&mut origin, header, &docs).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let fields: Vec<String> = status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        assert!(
            fields.iter().any(|f| f == field),
            "{field} not named in {fields:?}"
        );
    }

    // Streamed size different from the declared size, both ways.
    for (declared, streamed) in [(50u64, 100u64), (100, 50)] {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        use ecointegra_proto::v1::{
            DocumentHeader, SubmitFilingRequest, submit_filing_request::Part,
        };
        for part in [
            Part::Header(header("oefa", "x")),
            Part::Document(DocumentHeader {
                name: "a.pdf".into(),
                media_type: "application/pdf".into(),
                declared_size: declared,
            }),
            Part::Chunk(vec![7u8; streamed as usize].into()),
        ] {
            tx.send(SubmitFilingRequest { part: Some(part) })
                .await
                .unwrap();
        }
        drop(tx);
        let status = origin
            .submit_filing(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap_err();
        let fields: Vec<String> = status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["documents[0].declared_size"], "{status:?}");
    }

    let store = federation.store_path("senamhi");
    assert_eq!(count_rows(&store, "SELECT COUNT(*) FROM filings"), 0);
    assert_eq!(count_rows(&store, "SELECT COUNT(*) FROM outbox"), 0);
    let leftovers = std::fs::read_dir(federation.data_dir("senamhi").join("tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "a rejected upload leaves no file behind");
    senamhi.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_a_consumer_reset_to_offset_zero_change_nothing() {
    let federation = Federation::new("duplicates", &["senamhi", "oefa"]);
    let [senamhi, mut oefa] = federation.start_all().await;
    let mut origin = senamhi.client.clone();
    let docs = [Doc::new("informe.pdf", 1_300_000, 11)];
    let code = submit(&mut origin, header("oefa", "Duplicados"), &docs)
        .await
        .unwrap()
        .tracking_code;
    assert_delivered(&mut origin, &mut oefa.client, &code, &docs).await;
    oefa.shutdown().await;

    // Publish every record of the transfer a second time.
    let inbox = federation.topic_inbox("oefa");
    let records = read_topic(&inbox, 4, Duration::from_secs(30));
    assert_eq!(records.len(), 4, "3 chunks and a manifest");
    // The group's committed offsets point just past the last record read on
    // each partition: no gap, no repeat on the next start.
    let group = format!("{}.node.oefa", federation.prefix);
    let mut per_partition = [0i64; 2];
    for record in &records {
        use rdkafka::Message as _;
        per_partition[record.partition() as usize] =
            per_partition[record.partition() as usize].max(record.offset() + 1);
    }
    let committed: Vec<i64> = committed_offsets(&group, &inbox, 2)
        .into_iter()
        .zip(per_partition)
        .map(|(c, end)| if end == 0 { c.max(0) } else { c })
        .collect();
    assert_eq!(committed, per_partition.to_vec());
    for record in &records {
        use rdkafka::Message as _;
        let key = String::from_utf8_lossy(record.key().unwrap()).into_owned();
        produce_raw(&inbox, &key, record.payload().unwrap()).await;
    }
    // Forget the destination's own offsets and reset its consumer group to 0:
    // the node re-reads everything from the beginning.
    let store = rusqlite::Connection::open(federation.store_path("oefa")).unwrap();
    store.execute("DELETE FROM inbox_offsets", []).unwrap();
    drop(store);
    reset_group(&group, &inbox);

    let oefa = federation.start("oefa").await;
    // oefa has re-read all 8 records of its inbox, and any receipt it sent
    // again has reached senamhi and been applied there.
    settled(&federation, &["senamhi", "oefa"]).await;
    assert_eq!(
        inbound_count(&federation, "oefa"),
        1,
        "still exactly one filing"
    );
    assert_eq!(receipt_count(&federation, "oefa"), 1);
    assert_eq!(
        receipt_count(&federation, "senamhi"),
        1,
        "still exactly one receipt at the origin"
    );
    let filing = get(&mut origin, &code).await.unwrap();
    assert_eq!(filing.status, FilingStatus::Delivered as i32);
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

fn reset_group(group: &str, topic: &str) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..2 {
        list.add_partition_offset(topic, partition, Offset::Offset(0))
            .unwrap();
    }
    consumer.commit(&list, CommitMode::Sync).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_go_to_the_dlq_and_the_partition_moves_on() {
    let federation = Federation::new("dlq", &["senamhi", "oefa"]);
    let [mut senamhi, mut oefa] = federation.start_all().await;
    let inbox = federation.topic_inbox("oefa");
    // Make sure the inbox exists before writing to it directly.
    deliver_sample(&mut senamhi.client, "oefa").await;

    let sealer = Sealer::new(
        "senamhi",
        SigningIdentity::load(&federation.key_path("senamhi")).unwrap(),
    );
    // 1. Garbage.
    produce_raw(&inbox, "garbage", b"\xff\xfe this is not an envelope").await;
    // 2. A bad signature: a sealed chunk whose payload was changed afterwards.
    let data = b"contenido".to_vec();
    let chunk = Chunk {
        transfer_id: "t-bad-signature".into(),
        document_index: 0,
        seq: 0,
        offset: 0,
        sha256: Sha256::digest(&data).to_vec(),
        data: data.into(),
    };
    let mut forged = sealer.seal(
        "t-bad-signature/chunk/0/0".into(),
        MessageType::Chunk,
        "oefa",
        chunk.encode_to_vec(),
    );
    forged.payload = flipped(&forged.payload, 3, 0x55);
    produce_raw(&inbox, "t-bad-signature", &forged.encode_to_vec()).await;
    // 3. A properly signed chunk whose data does not match its hash.
    let wrong = Chunk {
        sha256: vec![0u8; 32],
        transfer_id: WRONG_HASH.into(),
        ..chunk
    };
    let oefa_key = federation.identity("oefa").encryption_public_key();
    let sealed = sealer
        .seal_encrypted(
            format!("{WRONG_HASH}/chunk/0/0"),
            MessageType::Chunk,
            "oefa",
            &oefa_key,
            &wrong.encode_to_vec(),
        )
        .unwrap();
    produce_raw(&inbox, WRONG_HASH, &sealed.encode_to_vec()).await;
    // 4. A chunk whose ciphertext was changed after sealing, its encapsulated
    // key and AEAD tag left as they were: from schema 5 that is what its
    // signature names, so the signature holds and the decryption refuses it.
    // 5. The same in schema 6 (sealed in a session: the encapsulated key and
    // the salt, 48 bytes, come before the ciphertext).
    for (schema, key, at) in [
        (
            ecointegra_broker::envelope::CHUNKS_TAG_SIGNED,
            "t-altered",
            40,
        ),
        (
            ecointegra_broker::envelope::SESSION_SEALED,
            "t-altered-6",
            60,
        ),
    ] {
        let mut altered = sealer
            .seal_encrypted_as(
                schema,
                format!("{key}/chunk/0/0"),
                MessageType::Chunk,
                "oefa",
                &oefa_key,
                &wrong.encode_to_vec(),
            )
            .unwrap();
        altered.payload = flipped(&altered.payload, at, 0x55);
        produce_raw(&inbox, key, &altered.encode_to_vec()).await;
    }

    // A valid filing right after them is delivered.
    let docs = [Doc::new("despues.pdf", 700_000, 5)];
    let answer = submit(
        &mut senamhi.client,
        header("oefa", "Después de la basura"),
        &docs,
    )
    .await
    .unwrap();
    assert_delivered(
        &mut senamhi.client,
        &mut oefa.client,
        &answer.tracking_code,
        &docs,
    )
    .await;

    let letters = read_dead_letters(&federation.topic_dlq("oefa"), 5);
    let codes: BTreeSet<&str> = letters.iter().map(|l| l.reason_code.as_str()).collect();
    assert_eq!(
        codes,
        BTreeSet::from(["decode", "signature", "chunk-hash", "decrypt"]),
        "{letters:#?}"
    );
    let undecrypted = letters.iter().filter(|l| l.reason_code == "decrypt");
    assert_eq!(undecrypted.count(), 2, "one per schema: {letters:#?}");
    for letter in &letters {
        assert!(!letter.reason.is_empty());
        assert!(
            !letter.original_value.is_empty(),
            "the original bytes are kept"
        );
        assert_eq!(letter.source_topic, inbox);
    }
    let garbage = letters.iter().find(|l| l.reason_code == "decode").unwrap();
    assert_eq!(garbage.original_value, b"\xff\xfe this is not an envelope");
    let hash = letters
        .iter()
        .find(|l| l.reason_code == "chunk-hash")
        .unwrap();
    assert_eq!(hash.claimed_sender, "senamhi");
    assert_eq!(inbound_count(&federation, "oefa"), 2);
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_inbox_resumes_from_its_cursor_missing_nothing() {
    let federation = Federation::new("stream", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.start_all().await;
    let (mut origin, mut destination) = (senamhi.client.clone(), oefa.client.clone());
    let docs = [Doc::new("a.pdf", 2_000, 3)];

    let mut submitted = Vec::new();
    let mut seen = Vec::new();
    let mut stream = destination
        .stream_inbox(StreamInboxRequest {
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    for i in 0..3 {
        let answer = submit(&mut origin, header("oefa", &format!("Lote {i}")), &docs)
            .await
            .unwrap();
        submitted.push(answer.tracking_code);
    }
    // Take two events, then disconnect.
    let mut cursor = String::new();
    for _ in 0..2 {
        let event = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(event.filing.unwrap().tracking_code);
        cursor = event.cursor;
    }
    drop(stream);
    for i in 3..5 {
        let answer = submit(&mut origin, header("oefa", &format!("Lote {i}")), &docs)
            .await
            .unwrap();
        submitted.push(answer.tracking_code);
    }
    let mut stream = destination
        .stream_inbox(StreamInboxRequest { cursor })
        .await
        .unwrap()
        .into_inner();
    while seen.len() < 5 {
        let event = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(event.filing.unwrap().tracking_code);
    }
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 5, "{seen:?}");
    assert_eq!(unique, submitted.iter().collect::<BTreeSet<_>>());
    // No duplicates: a sixth filing, delivered after the five, is the next
    // event; a repeat of any of the five would have come before it.
    let sixth = submit(&mut origin, header("oefa", "Lote 5"), &docs)
        .await
        .unwrap();
    let next = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        next.filing.unwrap().tracking_code,
        sixth.tracking_code,
        "an extra event arrived before the sixth filing's"
    );
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_receipt_in_time_the_transfer_is_sent_again_and_stored_once() {
    let federation = Federation::with_settings(
        "resend",
        &["senamhi", "oefa"],
        "\n[transfer]\nreceipt_timeout_secs = 1\n",
    );
    // oefa's node is not running: nobody answers, so senamhi keeps re-sending.
    let senamhi = federation.start("senamhi").await;
    let mut origin = senamhi.client.clone();
    let docs = [Doc::new("reenvio.pdf", 600_000, 31)];
    let answer = submit(&mut origin, header("oefa", "Sin acuse"), &docs)
        .await
        .unwrap();
    let store = federation.store_path("senamhi");
    eventually(
        "the transfer to be sent three times (attempts)",
        async || {
            let attempts = count_rows(&store, "SELECT COALESCE(MAX(attempts), 0) FROM outbox");
            if attempts >= 3 { Ok(()) } else { Err(attempts) }
        },
    )
    .await;
    let filing = get(&mut origin, &answer.tracking_code).await.unwrap();
    assert_eq!(
        filing.status,
        FilingStatus::Sent as i32,
        "sent, not yet receipted"
    );

    // oefa comes up and finds three copies of the transfer in its inbox.
    let mut oefa = federation.start("oefa").await;
    assert_delivered(&mut origin, &mut oefa.client, &answer.tracking_code, &docs).await;
    // oefa has applied every copy in its inbox, and senamhi every receipt
    // oefa sent again for them.
    settled(&federation, &["senamhi", "oefa"]).await;
    assert_eq!(
        inbound_count(&federation, "oefa"),
        1,
        "one filing from three copies"
    );
    assert_eq!(receipt_count(&federation, "senamhi"), 1);
    assert_eq!(
        count_rows(&store, "SELECT COUNT(*) FROM outbox WHERE kind = 1"),
        0,
        "the receipt ends the transfer's outbox entry"
    );
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

/// The envelopes of chunks and manifests `sender` published to `topic`:
/// (chunk message ids, manifest message ids).
fn published_by(topic: &str, sender: &str) -> (Vec<String>, Vec<String>) {
    let (mut chunks, mut manifests) = (Vec::new(), Vec::new());
    for record in read_all(topic) {
        let Some(payload) = rdkafka::Message::payload(&record) else {
            continue;
        };
        let Ok(envelope) = Envelope::decode(payload) else {
            continue;
        };
        if envelope.sender != sender {
            continue;
        }
        if envelope.message_type == MessageType::Chunk as i32 {
            chunks.push(envelope.message_id);
        } else if envelope.message_type == MessageType::Manifest as i32 {
            manifests.push(envelope.message_id);
        }
    }
    (chunks, manifests)
}

/// A large document's chunks go out while it is still being uploaded, so a
/// large filing does not take the upload's time and then the transfer's.
/// Half-way through the upload the destination's inbox already holds its
/// first chunks; once the filing is durable its manifest follows alone, and
/// each chunk travels exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_document_travels_while_it_is_uploaded_each_chunk_once() {
    let federation = Federation::new("cut-through", &["senamhi", "oefa"]);
    let [mut senamhi, mut oefa] = federation.start_all().await;
    let topic = federation.topic_inbox("oefa");
    // The inbox is there, and a small filing (its manifest alone) in it.
    deliver_sample(&mut senamhi.client, "oefa").await;
    // Six chunks of 512 KiB, the last one short.
    let doc = Doc::new("expediente.pdf", 5 * (512 << 10) + 1000, 41);
    let bytes = doc.bytes();
    let (feed, parts) = streamed_submission(header("oefa", "Expediente grande"), &doc);
    let mut client = senamhi.client.clone();
    let submission = tokio::spawn(async move { client.submit_filing(parts).await });

    let half = 3 * (512 << 10) + 100;
    feed_bytes(&feed, &bytes[..half]).await;
    eventually(
        "the first chunks to reach the destination's inbox during the upload",
        async || {
            // The sample went as one chunk and its manifest: three more.
            let (chunks, _) = published_by(&topic, "senamhi");
            if chunks.len() > 3 {
                Ok(())
            } else {
                Err(chunks)
            }
        },
    )
    .await;
    feed_bytes(&feed, &bytes[half..]).await;
    drop(feed);
    let answer = submission.await.unwrap().unwrap().into_inner();

    assert_delivered(
        &mut senamhi.client,
        &mut oefa.client,
        &answer.tracking_code,
        &[doc],
    )
    .await;
    let (chunks, manifests) = published_by(&topic, "senamhi");
    let of_it = |ids: Vec<String>| -> Vec<String> {
        ids.into_iter()
            .filter(|id| id.starts_with(&answer.transfer_id))
            .collect()
    };
    let (chunks, manifests) = (of_it(chunks), of_it(manifests));
    let unique: BTreeSet<&String> = chunks.iter().collect();

    assert_eq!(unique.len(), 6, "every chunk went out: {chunks:?}");
    assert_eq!(chunks.len(), 6, "no chunk went out twice: {chunks:?}");
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    assert_eq!(inbound_count(&federation, "oefa"), 2);
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

/// An upload abandoned after its first chunks went out registers nothing at
/// the origin, and the destination forgets those chunks once
/// `transfer.partial_expiry_secs` passed without their manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_an_abandoned_upload_are_forgotten_at_the_destination() {
    let federation = Federation::with_settings(
        "abandoned",
        &["senamhi", "oefa"],
        // Long enough that the sample's own chunk never expires before its
        // manifest, even on a loaded machine.
        "\n[transfer]\npartial_expiry_secs = 5\n",
    );
    let [mut senamhi, oefa] = federation.start_all().await;
    // Both nodes serving (a node publishes chunks ahead only once it has
    // seen Kafka answer).
    deliver_sample(&mut senamhi.client, "oefa").await;
    let doc = Doc::new("inconcluso.pdf", 4 * (512 << 10), 43);
    let bytes = doc.bytes();
    let (feed, parts) = streamed_submission(header("oefa", "Subida abandonada"), &doc);
    let mut client = senamhi.client.clone();
    let submission = tokio::spawn(async move { client.submit_filing(parts).await });
    feed_bytes(&feed, &bytes[..2 * (512 << 10)]).await;
    let oefa_store = federation.store_path("oefa");
    let partial_dir = federation.data_dir("oefa").join("partial");
    let partial_files = || std::fs::read_dir(&partial_dir).unwrap().count();
    eventually("the destination to hold partial chunks", async || {
        let held = count_rows(&oefa_store, "SELECT COUNT(*) FROM partials");
        if held > 0 && partial_files() > 0 {
            Ok(())
        } else {
            Err((held, partial_files()))
        }
    })
    .await;
    // The client gives up half-way.
    drop(feed);
    let refused = submission.await.unwrap().unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("documents[0].declared_size"),
        "{refused:?}"
    );
    assert_eq!(
        count_rows(
            &federation.store_path("senamhi"),
            "SELECT COUNT(*) FROM filings"
        ),
        1,
        "the sample alone"
    );
    eventually("the destination to forget the chunks", async || {
        let held = count_rows(&oefa_store, "SELECT COUNT(*) FROM partials");
        if held == 0 && partial_files() == 0 {
            Ok(())
        } else {
            Err((held, partial_files()))
        }
    })
    .await;
    assert_eq!(inbound_count(&federation, "oefa"), 1, "the sample alone");
    senamhi.shutdown().await;
    oefa.shutdown().await;
}
