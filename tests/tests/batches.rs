//! Group commit at the destination: the inbox applies the records it has
//! fetched in batches, one transaction each. A batch must keep every guarantee
//! of one transaction per record: a crash part-way through a backlog loses
//! nothing and repeats nothing, and a bad record among good ones is
//! dead-lettered while the good ones are delivered.

use ecointegra_broker::envelope::Sealer;
use ecointegra_broker::keys::SigningIdentity;
use ecointegra_proto::v1::{Chunk, FilingStatus, MessageType};
use ecointegra_tests::*;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Well-formed transfer ids of chunks that are bad in other ways.
const WRONG_HASH: &str = "0000000000000000000000000000dead";
const OUT_OF_ORDER: &str = "00000000000000000000000000000bad";

/// What the sender and the destination would check for every filing: it is
/// DELIVERED at the origin, the destination holds exactly one copy with the
/// bytes sent, each side holds exactly one receipt for it, and nothing is left
/// half-assembled.
async fn assert_each_delivered_once(
    federation: &Federation,
    origin: &mut Client,
    destination: &mut Client,
    filings: &[(String, Doc)],
) {
    for (code, _) in filings {
        wait_for_status(origin, code, FilingStatus::Delivered, PATIENCE).await;
    }
    for (code, doc) in filings {
        let (sha, len) = download_sha256(destination, code, 0).await;
        assert_eq!((sha, len), (doc.sha256_hex(), doc.len), "{code}");
    }
    let n = filings.len() as i64;
    let destination_store = federation.store_path("oefa");
    assert_eq!(inbound_count(federation, "oefa"), n, "one filing each");
    assert_eq!(
        count_rows(
            &destination_store,
            "SELECT COUNT(DISTINCT tracking_code) FROM filings WHERE direction = 2"
        ),
        n,
        "no filing twice"
    );
    assert_eq!(
        count_rows(&destination_store, "SELECT COUNT(*) FROM receipts"),
        n
    );
    assert_eq!(
        count_rows(
            &federation.store_path("senamhi"),
            "SELECT COUNT(*) FROM receipts"
        ),
        n,
        "one receipt each at the origin"
    );
    assert_eq!(
        count_rows(&destination_store, "SELECT COUNT(*) FROM partials"),
        0,
        "no transfer left half-assembled"
    );
}

/// Submits one filing of one document; returns its tracking code.
async fn submit_one(origin: &mut Client, subject: &str, doc: &Doc) -> String {
    submit(origin, header("oefa", subject), std::slice::from_ref(doc))
        .await
        .unwrap()
        .tracking_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_killed_while_applying_a_backlog_in_batches_loses_and_repeats_nothing() {
    let federation = Federation::new("batchkill", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.spawn_all().await;
    let mut origin = senamhi.client.clone();
    let warm = deliver_sample(&mut origin, "oefa").await;
    let mut filings = vec![(warm.tracking_code, sample_doc())];

    // A backlog piles up while the destination is down: many small filings
    // (dozens to a batch) and a few of several chunks each.
    oefa.kill();
    for i in 0..120u64 {
        let len = if i % 30 == 29 {
            1_500_000
        } else {
            2_000 + i * 7
        };
        let doc = Doc::new(&format!("oficio-{i}.pdf"), len, 100 + i);
        let code = submit_one(&mut origin, &format!("Lote {i}"), &doc).await;
        filings.push((code, doc));
    }
    for (code, _) in &filings[1..] {
        wait_for_status(&mut origin, code, FilingStatus::Sent, PATIENCE).await;
    }

    // The destination comes back and is killed (SIGKILL) while it works
    // through the backlog, batch after batch.
    let oefa = federation.spawn("oefa").await;
    let total = filings.len() as i64;
    // The warm-up filing is stored already: wait for the backlog's first.
    eventually(
        "oefa to apply the backlog's first filing (stored)",
        async || {
            let stored = inbound_count(&federation, "oefa");
            if stored > 1 { Ok(()) } else { Err(stored) }
        },
    )
    .await;
    oefa.kill();
    let stored = inbound_count(&federation, "oefa");
    assert!(
        stored < total,
        "killed part-way through the backlog ({stored} of {total} stored)"
    );

    let oefa = federation.spawn("oefa").await;
    let mut destination = oefa.client.clone();
    assert_each_delivered_once(&federation, &mut origin, &mut destination, &filings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_inside_a_batch_are_dead_lettered_and_the_rest_of_the_batch_applies() {
    let federation = Federation::new("batchdlq", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.start_all().await;
    let mut origin = senamhi.client.clone();
    let inbox = federation.topic_inbox("oefa");
    // The destination creates its topics, then stops: everything below waits
    // in Kafka and reaches it at once, in a few batches.
    let warm = deliver_sample(&mut origin, "oefa").await;
    oefa.shutdown().await;
    let mut filings = vec![(warm.tracking_code, sample_doc())];

    let sealer = Sealer::new(
        "senamhi",
        SigningIdentity::load(&federation.key_path("senamhi")).unwrap(),
    );
    let oefa_key = federation.identity("oefa").encryption_public_key();
    let sealed_chunk = |transfer_id: &str, chunk: Chunk| {
        sealer
            .seal_encrypted(
                format!("{transfer_id}/chunk/0/{}", chunk.seq),
                MessageType::Chunk,
                "oefa",
                &oefa_key,
                &chunk.encode_to_vec(),
            )
            .unwrap()
            .encode_to_vec()
    };
    let data = b"contenido".to_vec();
    for i in 0..12u64 {
        let doc = Doc::new(&format!("oficio-{i}.pdf"), 1_000 + i, 10 + i);
        let code = submit_one(&mut origin, &format!("Entre basura {i}"), &doc).await;
        wait_for_status(&mut origin, &code, FilingStatus::Sent, PATIENCE).await;
        filings.push((code, doc));
        match i {
            // Not an envelope at all.
            3 => produce_raw(&inbox, "garbage", b"\xff\xfe not an envelope").await,
            // Signed by a listed sender, but the data does not match its hash.
            6 => {
                let chunk = Chunk {
                    transfer_id: WRONG_HASH.into(),
                    document_index: 0,
                    seq: 0,
                    offset: 0,
                    sha256: vec![0u8; 32],
                    data: data.clone().into(),
                };
                produce_raw(&inbox, WRONG_HASH, &sealed_chunk(WRONG_HASH, chunk)).await
            }
            // A second chunk whose first never came.
            9 => {
                let chunk = Chunk {
                    transfer_id: OUT_OF_ORDER.into(),
                    document_index: 0,
                    seq: 1,
                    offset: 100,
                    sha256: Sha256::digest(&data).to_vec(),
                    data: data.clone().into(),
                };
                produce_raw(&inbox, OUT_OF_ORDER, &sealed_chunk(OUT_OF_ORDER, chunk)).await
            }
            _ => {}
        }
    }

    let mut oefa = federation.start("oefa").await;
    assert_each_delivered_once(&federation, &mut origin, &mut oefa.client, &filings).await;

    let letters = read_dead_letters(&federation.topic_dlq("oefa"), 3);
    let codes: BTreeSet<&str> = letters.iter().map(|l| l.reason_code.as_str()).collect();
    assert_eq!(
        codes,
        BTreeSet::from(["decode", "chunk-hash", "chunk-order"]),
        "{letters:#?}"
    );
    // Nothing stalled: the destination's stored offsets move past every
    // record of its inbox, bad ones included.
    caught_up(&federation, "oefa", &inbox).await;
    senamhi.shutdown().await;
    oefa.shutdown().await;
}
