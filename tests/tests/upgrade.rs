//! A rolling upgrade across an envelope schema change, with two builds of the
//! node: the release before (`ECOINTEGRA_PREVIOUS_BIN`, which tests/run.sh
//! builds from the commit named in `tests/previous-release`), which reads and
//! writes envelope schemas up to [`PREVIOUS_NEWEST`] only, and this one, which
//! reads up to [`NEWEST`] and writes to each institution the newest it has said
//! it reads. The nodes are upgraded one at a time while filings flow between every pair, as a sector
//! would over days: nothing may be lost, dead-lettered or applied twice.

use ecointegra_broker::envelope::{CHUNKS_UNDIGESTED, open_payload};
use ecointegra_broker::keys::SigningIdentity;
use ecointegra_proto::v1::{Chunk, Envelope, GetQueuesRequest, MessageType};
use ecointegra_tests::*;
use prost::Message as _;
use rdkafka::Message as _;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The newest envelope schema this release writes.
const NEWEST: u32 = ecointegra_broker::envelope::SCHEMA_VERSION;
/// The newest the release before reads (and writes).
const PREVIOUS_NEWEST: u32 = 2;

const OPERATOR_TOKEN: &str = "token-de-operador-de-actualizacion";

fn previous_release() -> PathBuf {
    let path = std::env::var("ECOINTEGRA_PREVIOUS_BIN").expect(
        "ECOINTEGRA_PREVIOUS_BIN names the node of the release before: \
         tests/run.sh builds it from the commit in tests/previous-release",
    );
    let path = PathBuf::from(path);
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}

/// The (sender, schema) of every envelope a topic holds now.
fn schemas(topic: &str) -> BTreeSet<(String, u32)> {
    read_all(topic)
        .iter()
        .map(|m| {
            let envelope = Envelope::decode(m.payload().unwrap_or_default()).unwrap();
            (envelope.sender, envelope.schema_version)
        })
        .collect()
}

/// Whether every envelope `topic` holds is of a schema the release before
/// reads, and which institutions wrote them.
fn readable_by_the_release_before(topic: &str) -> BTreeSet<String> {
    let held = schemas(topic);
    assert!(
        held.iter().all(|(_, v)| *v <= PREVIOUS_NEWEST),
        "{topic} holds a schema the release before cannot read: {held:?}"
    );
    held.into_iter().map(|(sender, _)| sender).collect()
}

/// The (envelope schema, length of the chunk's own digest) of every chunk
/// `topic` holds, decrypted with its recipient's key.
fn chunk_digests(topic: &str, recipient: &SigningIdentity) -> Vec<(u32, usize)> {
    read_all(topic)
        .iter()
        .filter_map(|m| Envelope::decode(m.payload()?).ok())
        .filter(|e| e.message_type == MessageType::Chunk as i32)
        .map(|e| {
            let chunk: Chunk =
                open_payload(&e, std::slice::from_ref(recipient)).expect("a chunk opens");
            (e.schema_version, chunk.sha256.len())
        })
        .collect()
}

fn set(senders: &[&str]) -> BTreeSet<String> {
    senders.iter().map(|s| s.to_string()).collect()
}

/// The envelope schema the node at `process` writes to `peer`, as its
/// operator sees it in the queue report.
async fn schema_written(process: &NodeProcess, peer: &str) -> u32 {
    let mut ops = operations_as(process.addr, Some(OPERATOR_TOKEN)).await;
    let report = ops
        .get_queues(GetQueuesRequest {})
        .await
        .unwrap()
        .into_inner();
    report
        .institutions
        .iter()
        .find(|q| q.institution == peer)
        .map_or(0, |q| q.envelope_schema)
}

async fn writes(process: &NodeProcess, of: &str, peer: &str, schema: u32) {
    eventually(
        &format!("{of} to write schema {schema} to {peer}"),
        async || match schema_written(process, peer).await {
            s if s == schema => Ok(()),
            other => Err(other),
        },
    )
    .await;
}

/// Files a sample filing from `from` to `to`, waits until `from` holds its
/// receipt, and notes it in `filed`.
async fn deliver_noted(
    filed: &mut Vec<(&'static str, String)>,
    from: &mut NodeProcess,
    to: &'static str,
) {
    filed.push((to, deliver_sample(&mut from.client, to).await.tracking_code));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_across_an_envelope_schema_loses_nothing() {
    let previous = previous_release();
    let settings = format!(
        "\n[auth]\nanonymous_role = \"system\"\n\n{}",
        token_entry("operador", "operator", OPERATOR_TOKEN)
    );
    let federation = Federation::with_settings("upgrade", &["minam", "senamhi", "oefa"], &settings);
    let mut minam = federation.spawn_with("minam", &previous).await;
    let mut senamhi = federation.spawn_with("senamhi", &previous).await;
    let mut oefa = federation.spawn_with("oefa", &previous).await;
    // (destination, tracking code) of every filing, delivered: its origin
    // holds the destination's signed receipt.
    let mut filed: Vec<(&str, String)> = Vec::new();
    deliver_noted(&mut filed, &mut senamhi, "oefa").await;

    // oefa first: it reads what the others write and writes them what they
    // read.
    oefa.terminate();
    oefa = federation.spawn("oefa").await;
    deliver_noted(&mut filed, &mut senamhi, "oefa").await;
    deliver_noted(&mut filed, &mut oefa, "senamhi").await;
    deliver_noted(&mut filed, &mut oefa, "minam").await;
    assert_eq!(
        readable_by_the_release_before(&federation.topic_inbox("senamhi")),
        set(&["oefa"]),
    );

    // Then senamhi: once each has heard the other say so, the two write
    // the newest schema to each other, and still what minam reads to minam
    // and to the tracking topic that minam reads.
    senamhi.terminate();
    senamhi = federation.spawn("senamhi").await;
    deliver_noted(&mut filed, &mut senamhi, "oefa").await;
    writes(&senamhi, "senamhi", "oefa", NEWEST).await;
    writes(&oefa, "oefa", "senamhi", NEWEST).await;
    assert!(schema_written(&oefa, "minam").await <= PREVIOUS_NEWEST);
    deliver_noted(&mut filed, &mut senamhi, "oefa").await;
    deliver_noted(&mut filed, &mut oefa, "senamhi").await;
    deliver_noted(&mut filed, &mut senamhi, "minam").await;
    assert!(schemas(&federation.topic_inbox("oefa")).contains(&("senamhi".into(), NEWEST)));
    assert!(schemas(&federation.topic_inbox("senamhi")).contains(&("oefa".into(), NEWEST)));
    assert_eq!(
        readable_by_the_release_before(&federation.topic_inbox("minam")),
        set(&["oefa", "senamhi"])
    );
    // minam still runs the release before and reads the tracking topic.
    let tracking = format!("{}.tracking", federation.config("oefa").kafka.topic_prefix);
    readable_by_the_release_before(&tracking);

    // Last minam: once every node has heard every other since its upgrade
    // (a filing step each), everyone writes the newest schema, the tracking topic too.
    minam.terminate();
    minam = federation.spawn("minam").await;
    deliver_noted(&mut filed, &mut minam, "oefa").await;
    deliver_noted(&mut filed, &mut oefa, "minam").await;
    deliver_noted(&mut filed, &mut minam, "senamhi").await;
    for (process, of) in [(&minam, "minam"), (&senamhi, "senamhi"), (&oefa, "oefa")] {
        for peer in ["minam", "senamhi", "oefa"] {
            if peer != of {
                writes(process, of, peer, NEWEST).await;
            }
        }
    }
    deliver_noted(&mut filed, &mut senamhi, "minam").await;
    let broadcast = schemas(&tracking);
    assert!(
        broadcast.contains(&("minam".into(), NEWEST)),
        "{broadcast:?}"
    );
    assert!(
        broadcast.contains(&("senamhi".into(), NEWEST)),
        "{broadcast:?}"
    );
    assert!(schemas(&federation.topic_inbox("minam")).contains(&("senamhi".into(), NEWEST)));

    // Chunks carry a SHA-256 of their own to a node that reads no newer than
    // schema 3, and none from schema 4 on (the AEAD, the signature and the
    // document's digest cover them): a document of two chunks still arrives whole.
    let plano = [Doc::new("plano.pdf", 700_000, 7)];
    let sent = deliver(&mut senamhi.client, header("oefa", "Plano"), &plano).await;
    filed.push(("oefa", sent.tracking_code.clone()));
    let (sha, len) = download_sha256(&mut oefa.client, &sent.tracking_code, 0).await;
    assert_eq!((sha, len), (plano[0].sha256_hex(), plano[0].len));
    let digests = chunk_digests(
        &federation.topic_inbox("oefa"),
        &federation.identity("oefa"),
    );
    let newest: Vec<usize> = digests
        .iter()
        .filter(|(schema, _)| *schema == NEWEST)
        .map(|(_, len)| *len)
        .collect();
    assert!(
        newest.len() >= 2 && newest.iter().all(|len| *len == 0),
        "{digests:?}"
    );
    let older: Vec<usize> = digests
        .iter()
        .filter(|(schema, _)| *schema < CHUNKS_UNDIGESTED)
        .map(|(_, len)| *len)
        .collect();
    assert!(
        !older.is_empty() && older.iter().all(|len| *len == 32),
        "{digests:?}"
    );

    // Nothing lost, nothing twice: each filing once at its destination, its
    // whole timeline at every node, no dead letter anywhere.
    for (destination, code) in &filed {
        let at_destination = count_rows(
            &federation.store_path(destination),
            &format!(
                "SELECT COUNT(*) FROM filings WHERE tracking_code = '{code}' AND direction = 2"
            ),
        );
        assert_eq!(at_destination, 1, "{code} at {destination}");
        let events = |id: &str| {
            count_rows(
                &federation.store_path(id),
                &format!("SELECT COUNT(*) FROM tracking_events WHERE tracking_code = '{code}'"),
            )
        };
        eventually(&format!("{code}'s timeline at every node"), async || {
            let counts = [events("minam"), events("senamhi"), events("oefa")];
            if counts[0] >= 3 && counts.iter().all(|c| *c == counts[0]) {
                Ok(())
            } else {
                Err(counts)
            }
        })
        .await;
    }
    for id in ["minam", "senamhi", "oefa"] {
        assert_eq!(
            count_rows(
                &federation.store_path(id),
                "SELECT COUNT(*) FROM dead_letters"
            ),
            0,
            "dead letters at {id}"
        );
    }
    assert_eq!(inbound_count(&federation, "oefa"), 6);
    assert_eq!(inbound_count(&federation, "senamhi"), 3);
    assert_eq!(inbound_count(&federation, "minam"), 4);
}
