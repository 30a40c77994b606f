//! Operations against the real broker: dead letters replayed once the cause is
//! fixed, queues showing a stopped destination, committed consumer-group
//! offsets, Prometheus metrics that count what happened, and one trace across
//! a filing's whole path.

use ecointegra_proto::v1::operations_service_client::OperationsServiceClient;
use ecointegra_proto::v1::{
    DeadLetterEntry, DeadLetterState, DiscardDeadLetterRequest, FilingStatus, GetDeadLetterRequest,
    GetQueuesRequest, GetQueuesResponse, InstitutionQueues, ListDeadLettersRequest,
    ReplayDeadLettersRequest, ResendTransferRequest,
};
use ecointegra_tests::*;
use rdkafka::message::{Headers, Message as _};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::Channel;

const HTTP: &str = "\n[http]\nlisten = \"127.0.0.1:0\"\n";

/// The operations service is for the `operator` role: a token of it.
const OPERATOR_TOKEN: &str = "token-de-operador-de-prueba";

/// Node settings: clients without a token act as the institution's system
/// (as in every test), the operator has a token; then `extra`.
fn settings(extra: &str) -> String {
    use sha2::Digest;
    format!(
        "\n[auth]\nanonymous_role = \"system\"\n\n[[auth.tokens]]\nname = \"operador\"\nrole = \"operator\"\n\
         token_sha256 = \"{}\"\n{extra}",
        hex::encode(sha2::Sha256::digest(OPERATOR_TOKEN))
    )
}

type Bearer = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
type Ops =
    OperationsServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

fn bearer(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let value = format!("Bearer {OPERATOR_TOKEN}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

async fn ops(addr: SocketAddr) -> Ops {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    OperationsServiceClient::with_interceptor(channel, bearer as Bearer)
}

async fn dead_letters(ops: &mut Ops, include_closed: bool) -> Vec<DeadLetterEntry> {
    ops.list_dead_letters(ListDeadLettersRequest {
        include_closed,
        limit: 0,
    })
    .await
    .unwrap()
    .into_inner()
    .dead_letters
}

async fn queues(ops: &mut Ops) -> GetQueuesResponse {
    ops.get_queues(GetQueuesRequest {})
        .await
        .unwrap()
        .into_inner()
}

fn row<'a>(report: &'a GetQueuesResponse, id: &str) -> &'a InstitutionQueues {
    report
        .institutions
        .iter()
        .find(|q| q.institution == id)
        .unwrap_or_else(|| panic!("no row for {id}: {report:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_and_after_the_fix_replays_and_is_delivered_once() {
    let mut federation = Federation::with_settings("poison", &["senamhi", "oefa"], &settings(""));
    // iiap has a key and a node, but the directory does not list it yet.
    let iiap_identity = federation.add_unlisted("iiap");
    let oefa = federation.start("oefa").await;
    let iiap = federation.start("iiap").await;
    let mut origin = iiap.client.clone();
    let mut ops = ops(oefa.grpc_addr()).await;
    let inbox = federation.topic_inbox("oefa");

    // 1.2 MB: three chunks and a manifest, each refused as from an unknown sender.
    let docs = [Doc::new("informe.pdf", 1_200_000, 9)];
    let answer = submit(&mut origin, header("oefa", "Sin directorio"), &docs)
        .await
        .unwrap();
    let letters = eventually("4 dead letters from the inbox", async || {
        let open: Vec<DeadLetterEntry> = dead_letters(&mut ops, false)
            .await
            .into_iter()
            .filter(|d| d.source_topic == inbox)
            .collect();
        if open.len() >= 4 { Ok(open) } else { Err(open) }
    })
    .await;
    assert_eq!(letters.len(), 4, "{letters:#?}");
    for letter in &letters {
        assert_eq!(letter.reason_code, "unknown-sender", "{letter:#?}");
        assert_eq!(letter.claimed_sender, "iiap");
        assert_eq!(letter.record_key, answer.transfer_id);
        assert_eq!(letter.state, DeadLetterState::Open as i32);
        assert!(letter.dead_at_ms > 0 && !letter.reason.is_empty());
        assert_eq!(letter.dlq_topic, federation.topic_dlq("oefa"));
    }
    // Inspect: the original bytes, exactly as on the DLQ topic.
    let detail = ops
        .get_dead_letter(GetDeadLetterRequest { id: letters[0].id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.original_key, answer.transfer_id.as_bytes());
    assert_eq!(detail.original_value.len() as u64, letters[0].size);
    assert!(
        detail.envelope_summary.contains("from iiap"),
        "{}",
        detail.envelope_summary
    );
    let on_topic = read_topic(&federation.topic_dlq("oefa"), 6, Duration::from_secs(10));
    assert!(on_topic.iter().any(|m| {
        use prost::Message as _;
        ecointegra_proto::v1::DeadLetter::decode(m.payload().unwrap())
            .map(|d| d.original_value == detail.original_value)
            .unwrap_or(false)
    }));
    // The queue report names the transfer and the reason.
    let report = queues(&mut ops).await;
    assert!(row(&report, "oefa").dead_letters_open >= 4);
    let trouble: Vec<_> = report
        .troubled
        .iter()
        .filter(|t| t.transfer_id == answer.transfer_id)
        .collect();
    assert_eq!(trouble.len(), 1, "{report:#?}");
    assert!(
        trouble[0].reason.contains("unknown-sender"),
        "{}",
        trouble[0].reason
    );
    assert_eq!(trouble[0].counterpart, "iiap");

    // The fix: the sector authority lists iiap; oefa learns it from the topic.
    let entry = ecointegra_broker::directory::entry_for("iiap", "IIAP", &iiap_identity, 1);
    federation
        .publish_entry(&federation.authority().sign(&entry))
        .await;
    let store = federation.store_path("oefa");
    eventually("oefa to learn iiap's entry", async || {
        (count_rows(
            &store,
            "SELECT COUNT(*) FROM directory_entries WHERE institution_id = 'iiap'",
        ) == 1)
            .then_some(())
    })
    .await;

    // Replay, in order: chunks, then the manifest.
    let ids: Vec<i64> = letters.iter().rev().map(|d| d.id).collect();
    let replayed = ops
        .replay_dead_letters(ReplayDeadLettersRequest {
            ids: ids.clone(),
            all_open: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.outcomes.len(), 4);
    assert!(
        replayed
            .outcomes
            .iter()
            .all(|o| o.replayed && o.topic == inbox)
    );
    wait_for_status(
        &mut origin,
        &answer.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;

    // Replaying again publishes nothing.
    let again = ops
        .replay_dead_letters(ReplayDeadLettersRequest {
            ids,
            all_open: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        again
            .outcomes
            .iter()
            .all(|o| !o.replayed && o.replayed_at_ms > 0),
        "{again:#?}"
    );

    // Delivered once: one filing at oefa, one receipt at iiap, no new dead
    // letter, once both have applied everything in their inboxes.
    settled(&federation, &["oefa", "iiap"]).await;
    assert_eq!(inbound_count(&federation, "oefa"), 1);
    assert_eq!(
        count_rows(
            &federation.store_path("iiap"),
            "SELECT COUNT(*) FROM receipts"
        ),
        1
    );
    let open_inbox: Vec<DeadLetterEntry> = dead_letters(&mut ops, false)
        .await
        .into_iter()
        .filter(|d| d.source_topic == inbox)
        .collect();
    assert!(open_inbox.is_empty(), "{open_inbox:#?}");
    let (sha, len) = download_sha256(&mut oefa.client.clone(), &answer.tracking_code, 0).await;
    assert_eq!((sha, len), (docs[0].sha256_hex(), docs[0].len));

    // Discard: recorded with who and why; a replay of it is refused. iiap's
    // tracking events (REGISTERED, SENT), from a sender oefa did not know
    // then, are still open dead letters.
    let tracking = format!("{}.tracking", federation.prefix);
    let leftover = eventually(
        "an open dead letter of iiap's tracking events",
        async || {
            let open = dead_letters(&mut ops, false).await;
            match open.iter().find(|d| d.source_topic == tracking) {
                Some(letter) => Ok(letter.clone()),
                None => Err(open),
            }
        },
    )
    .await;
    assert_eq!(leftover.reason_code, "unknown-sender", "{leftover:#?}");
    let discarded = ops
        .discard_dead_letter(DiscardDeadLetterRequest {
            id: leftover.id,
            reason: "tracking event already known from another node".into(),
            by: "operador".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(discarded.state, DeadLetterState::Discarded as i32);
    assert_eq!(discarded.discarded_by, "operador");
    assert!(
        !dead_letters(&mut ops, false)
            .await
            .iter()
            .any(|d| d.id == leftover.id),
        "a discarded dead letter is no longer open"
    );
    let refused = ops
        .replay_dead_letters(ReplayDeadLettersRequest {
            ids: vec![leftover.id],
            all_open: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let missing_reason = ops
        .discard_dead_letter(DiscardDeadLetterRequest {
            id: letters[0].id,
            reason: " ".into(),
            by: "operador".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing_reason.code(), tonic::Code::InvalidArgument);
    iiap.shutdown().await;
    oefa.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_destination_shows_growing_lag_and_an_ageing_receipt_until_it_returns() {
    let federation = Federation::with_settings(
        "lag",
        &["senamhi", "oefa"],
        &settings("\n[transfer]\nreceipt_timeout_secs = 3\n"),
    );
    let [senamhi, oefa] = federation.start_all().await;
    let mut origin = senamhi.client.clone();
    let mut ops = ops(senamhi.grpc_addr()).await;
    deliver_sample(&mut origin, "oefa").await;
    oefa.shutdown().await;
    let inbox = federation.topic_inbox("oefa");
    let group = format!("{}.node.oefa", federation.prefix);
    let committed_before: i64 = committed_offsets(&group, &inbox, 2)
        .iter()
        .map(|o| o.max(&0))
        .sum();
    assert!(
        committed_before >= 2,
        "the first transfer's offsets are committed"
    );
    let report = queues(&mut ops).await;
    assert_eq!(row(&report, "oefa").inbox_lag_records, 0, "{report:#?}");
    assert_eq!(row(&report, "senamhi").pending_receipts, 0);
    assert!(row(&report, "oefa").last_delivery_at_ms > 0);

    // oefa is down: a filing for it waits in its inbox.
    let second = submit_sample(&mut origin, "oefa").await;
    let early = eventually("lag at oefa's inbox", async || {
        let report = queues(&mut ops).await;
        let q = row(&report, "oefa").clone();
        if q.lag_known && q.inbox_lag_records > 0 && q.pending_receipts == 1 {
            Ok(q)
        } else {
            Err(q)
        }
    })
    .await;
    // The lag and the receipt's wait age as time passes, and past the receipt
    // timeout the filing shows as in trouble.
    let report = eventually(
        "the lag and the pending receipt to age by 2 s",
        async || {
            let report = queues(&mut ops).await;
            let q = row(&report, "oefa");
            let in_trouble = report
                .troubled
                .iter()
                .any(|t| t.tracking_code == second.tracking_code);
            if q.inbox_lag_seconds > early.inbox_lag_seconds + 2.0
                && q.oldest_pending_receipt_seconds > early.oldest_pending_receipt_seconds + 2.0
                && in_trouble
            {
                Ok(report)
            } else {
                Err(report)
            }
        },
    )
    .await;
    let later = row(&report, "oefa").clone();
    assert!(
        later.inbox_lag_records >= early.inbox_lag_records,
        "{early:?} {later:?}"
    );
    assert!(
        later.inbox_lag_seconds > early.inbox_lag_seconds + 2.0,
        "{early:?} {later:?}"
    );
    assert!(
        later.oldest_pending_receipt_seconds > early.oldest_pending_receipt_seconds + 2.0,
        "{early:?} {later:?}"
    );
    let local = row(&report, "senamhi");
    assert_eq!(local.pending_receipts, 1);
    assert!(local.local && local.lag_known);
    // Past the receipt timeout, the filing is in trouble, and the report says why.
    let trouble = report
        .troubled
        .iter()
        .find(|t| t.tracking_code == second.tracking_code)
        .unwrap_or_else(|| panic!("{report:#?}"));
    assert_eq!(trouble.counterpart, "oefa");
    assert!(
        trouble.reason.contains("no receipt from oefa"),
        "{}",
        trouble.reason
    );
    assert!(
        trouble.reason.contains("has not read"),
        "{}",
        trouble.reason
    );

    // oefa returns: the lag and the pending receipt clear.
    let oefa = federation.start("oefa").await;
    wait_for_status(
        &mut origin,
        &second.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    let cleared = eventually("the queues to clear", async || {
        let report = queues(&mut ops).await;
        let q = row(&report, "oefa");
        if q.lag_known
            && q.inbox_lag_records == 0
            && q.pending_receipts == 0
            && report.troubled.is_empty()
        {
            Ok(report)
        } else {
            Err(report)
        }
    })
    .await;
    assert_eq!(row(&cleared, "oefa").inbox_lag_seconds, 0.0);
    assert!(row(&cleared, "oefa").deliveries_last_minute >= 1);
    // The consumer group's committed offset advanced, as any Kafka tool reads it.
    let committed_after: i64 = committed_offsets(&group, &inbox, 2)
        .iter()
        .map(|o| o.max(&0))
        .sum();
    assert!(
        committed_after >= committed_before + 2,
        "{committed_before} -> {committed_after}"
    );
    let high = read_topic(&inbox, 1000, Duration::from_secs(5)).len() as i64;
    assert_eq!(
        committed_after, high,
        "committed up to the end of the inbox"
    );
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

// ---- Prometheus text format ---------------------------------------------

/// Parses an exposition with `prometheus-parse`, which skips what it cannot
/// read: so first every line that is not a comment must be a sample with a
/// number for its value, and after, every histogram's buckets must be
/// cumulative and end with `+Inf` equal to its `_count`.
fn parse_prometheus(text: &str) -> prometheus_parse::Scrape {
    use prometheus_parse::{LineInfo, Scrape, Value};
    assert!(text.ends_with('\n'), "no final newline:\n{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        match LineInfo::parse(line) {
            LineInfo::Sample { value, .. }
                if value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value) => {}
            _ => panic!("not a sample: {line:?} in\n{text}"),
        }
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    for histogram in &scrape.samples {
        let Value::Histogram(buckets) = &histogram.value else {
            continue;
        };
        let name = &histogram.metric;
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
            "{name}: buckets not ordered and cumulative: {buckets:?}"
        );
        let last = buckets.last().expect("a histogram has buckets");
        let labels: Vec<(&str, &str)> = histogram
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let count = sample(&scrape, &format!("{name}_count"), &labels);
        assert!(
            last.less_than.is_infinite() && last.count == count,
            "{name}: +Inf bucket {last:?} differs from _count {count}"
        );
    }
    scrape
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .find_map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

/// A bare HTTP/1.1 GET: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "a plain body is expected"
    );
    (status, body.to_owned())
}

fn http_addr(federation: &Federation, id: &str) -> SocketAddr {
    std::fs::read_to_string(federation.data_dir(id).join("http.addr"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_what_the_test_caused() {
    let federation = Federation::with_settings("metrics", &["senamhi", "oefa"], &settings(HTTP));
    let [senamhi, oefa] = federation.start_all().await;
    let mut origin = senamhi.client.clone();
    let mut oefa_ops = ops(oefa.grpc_addr()).await;
    let (s_http, o_http) = (
        http_addr(&federation, "senamhi"),
        http_addr(&federation, "oefa"),
    );

    let sizes = [1_000u64, 2_000];
    let mut transfers = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let answer = submit(
            &mut origin,
            header("oefa", &format!("Métrica {i}")),
            &[Doc::new("m.pdf", *size, i as u64)],
        )
        .await
        .unwrap();
        wait_for_status(
            &mut origin,
            &answer.tracking_code,
            FilingStatus::Delivered,
            PATIENCE,
        )
        .await;
        transfers.push(answer.transfer_id);
    }
    produce_raw(
        &federation.topic_inbox("oefa"),
        "basura",
        b"not an envelope",
    )
    .await;
    eventually("the garbage's dead letter", async || {
        (!dead_letters(&mut oefa_ops, false).await.is_empty()).then_some(())
    })
    .await;

    let (status, text) = tokio::task::spawn_blocking(move || http_get(s_http, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let s = parse_prometheus(&text);
    let me = [("institution", "senamhi")];
    assert_eq!(sample(&s, "ecointegra_filings_submitted_total", &me), 2.0);
    assert_eq!(sample(&s, "ecointegra_filings_delivered_total", &me), 2.0);
    assert_eq!(
        sample(&s, "ecointegra_delivery_latency_seconds_count", &me),
        2.0
    );
    assert!(sample(&s, "ecointegra_delivery_latency_seconds_sum", &me) > 0.0);
    assert_eq!(
        sample(
            &s,
            "ecointegra_document_bytes_total",
            &[("institution", "senamhi"), ("direction", "submitted")]
        ),
        3_000.0
    );
    let oefa_inbox = federation.topic_inbox("oefa");
    // What the transfers put on the topic (a chunk and a manifest, or a
    // manifest alone once senamhi knows oefa reads schema 3), keyed by
    // transfer id.
    let transferred = read_all(&oefa_inbox)
        .iter()
        .filter(|r| transfers.iter().any(|t| r.key() == Some(t.as_bytes())))
        .count();
    assert!((3..=4).contains(&transferred), "{transferred} records");
    assert_eq!(
        sample(
            &s,
            "ecointegra_kafka_records_total",
            &[("topic", &oefa_inbox), ("direction", "produced")]
        ),
        transferred as f64
    );
    assert_eq!(sample(&s, "ecointegra_outbox_backlog", &me), 0.0);
    assert_eq!(sample(&s, "ecointegra_pending_receipts", &me), 0.0);
    assert_eq!(sample(&s, "ecointegra_kafka_up", &me), 1.0);
    // Commits are timed: at least the two submissions' (receipts may share one).
    let commits = sample(&s, "ecointegra_store_commit_latency_seconds_count", &me);
    assert!(commits >= 2.0, "{commits} commits timed");
    assert!(sample(&s, "ecointegra_store_commit_latency_seconds_sum", &me) > 0.0);
    assert!(
        !text.contains(&federation.prefix.to_uppercase()),
        "no tracking code in a label"
    );

    let (status, text) = tokio::task::spawn_blocking(move || http_get(o_http, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let o = parse_prometheus(&text);
    let me = [("institution", "oefa")];
    assert_eq!(sample(&o, "ecointegra_filings_received_total", &me), 2.0);
    assert_eq!(sample(&o, "ecointegra_filings_submitted_total", &me), 0.0);
    assert_eq!(
        sample(
            &o,
            "ecointegra_document_bytes_total",
            &[("institution", "oefa"), ("direction", "received")]
        ),
        3_000.0
    );
    assert_eq!(
        sample(
            &o,
            "ecointegra_dead_letters_total",
            &[("institution", "oefa"), ("reason", "decode")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &o,
            "ecointegra_filings_failed_total",
            &[("institution", "oefa"), ("outcome", "dead_letter")]
        ),
        1.0
    );
    assert_eq!(sample(&o, "ecointegra_dead_letters_open", &me), 1.0);
    // The transfers' records and the garbage.
    assert_eq!(
        sample(
            &o,
            "ecointegra_kafka_records_total",
            &[("topic", &oefa_inbox), ("direction", "consumed")]
        ),
        transferred as f64 + 1.0
    );
    assert_eq!(sample(&o, "ecointegra_inbox_lag_records", &me), 0.0);
    let receipts_topic = federation.topic_inbox("senamhi");
    assert_eq!(
        sample(
            &o,
            "ecointegra_kafka_records_total",
            &[("topic", &receipts_topic), ("direction", "produced")]
        ),
        2.0
    );
    for path in ["/livez", "/readyz"] {
        let (status, _) = tokio::task::spawn_blocking(move || http_get(o_http, path))
            .await
            .unwrap();
        assert_eq!(status, 200, "{path}");
    }
    assert_eq!(
        tokio::task::spawn_blocking(move || http_get(o_http, "/nothing"))
            .await
            .unwrap()
            .0,
        404
    );
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

// ---- traces -------------------------------------------------------------

fn traceparent(message: &rdkafka::message::OwnedMessage) -> Option<String> {
    record_header(message, "traceparent")
}

fn record_header(message: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    message.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    })
}

/// (trace id, span id) of a valid version-00 traceparent.
fn ids(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1].len(), 32);
    assert_eq!(parts[2].len(), 16);
    assert!(value.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_travels_with_the_records_and_the_receipt_continues_the_trace() {
    let federation = Federation::new("trace", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.start_all().await;
    let mut origin = senamhi.client.clone();
    let docs = [Doc::new("t.pdf", 600_000, 4)];

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(parts(header("oefa", "Con traza"), &docs));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().unwrap(),
    );
    let traced = origin.submit_filing(request).await.unwrap().into_inner();
    // And one without: it starts a trace of its own.
    let untraced = submit(&mut origin, header("oefa", "Sin traza"), &docs)
        .await
        .unwrap();
    for answer in [&traced, &untraced] {
        wait_for_status(
            &mut origin,
            &answer.tracking_code,
            FilingStatus::Delivered,
            PATIENCE,
        )
        .await;
    }

    // Two chunks and a manifest per transfer in oefa's inbox.
    let records = read_topic(&federation.topic_inbox("oefa"), 6, Duration::from_secs(30));
    assert_eq!(records.len(), 6);
    let key_of =
        |m: &rdkafka::message::OwnedMessage| String::from_utf8(m.key().unwrap().to_vec()).unwrap();
    let mut other_trace = BTreeSet::new();
    for record in &records {
        let value = traceparent(record).expect("every record carries traceparent");
        let (trace, span) = ids(&value);
        assert_ne!(
            span, caller_span,
            "the relay's span is a child, not the caller's span"
        );
        if key_of(record) == traced.transfer_id {
            assert_eq!(trace, trace_id);
        } else {
            assert_eq!(key_of(record), untraced.transfer_id);
            assert_ne!(trace, trace_id);
            other_trace.insert(trace);
        }
    }
    assert_eq!(
        other_trace.len(),
        1,
        "one trace for the whole untraced transfer"
    );

    // The receipts in senamhi's inbox continue each transfer's trace.
    let receipts = read_topic(
        &federation.topic_inbox("senamhi"),
        2,
        Duration::from_secs(30),
    );
    assert_eq!(receipts.len(), 2);
    for receipt in &receipts {
        let (trace, _) = ids(&traceparent(receipt).expect("the receipt carries traceparent"));
        if key_of(receipt) == traced.transfer_id {
            assert_eq!(
                trace, trace_id,
                "the receipt continues the submitter's trace"
            );
        } else {
            assert!(other_trace.contains(&trace));
        }
    }

    // senamhi's steps of each filing in the sector's timeline (REGISTERED,
    // SENT) continue its submission's trace as well.
    let tracking = format!("{}.tracking", federation.prefix);
    let steps = eventually("senamhi's two steps of both filings", async || {
        let steps: Vec<_> = read_all(&tracking)
            .into_iter()
            .filter(|m| {
                use prost::Message as _;
                let envelope =
                    ecointegra_proto::v1::Envelope::decode(m.payload().unwrap()).unwrap();
                envelope.sender == "senamhi"
            })
            .collect();
        if steps.len() == 4 {
            Ok(steps)
        } else {
            Err(steps.len())
        }
    })
    .await;
    for step in &steps {
        let (trace, _) = ids(&traceparent(step).expect("every step carries traceparent"));
        if key_of(step) == traced.tracking_code {
            assert_eq!(trace, trace_id, "the step continues the submitter's trace");
        } else {
            assert_eq!(key_of(step), untraced.tracking_code);
            assert!(
                other_trace.contains(&trace),
                "the step continues its transfer's trace"
            );
        }
    }
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

// ---- re-sends -----------------------------------------------------------

/// (message type, message id, timestamp in ms) of every record on `topic`,
/// once `count` of them are there.
fn records(topic: &str, count: usize) -> Vec<(String, String, i64)> {
    let records = read_topic(topic, count, PATIENCE);
    assert_eq!(records.len(), count, "records on {topic}");
    records
        .iter()
        .map(|m| {
            (
                record_header(m, "ecointegra-message-type")
                    .unwrap()
                    .trim_start_matches("MESSAGE_TYPE_")
                    .to_owned(),
                record_header(m, "ecointegra-message-id").unwrap(),
                m.timestamp().to_millis().unwrap(),
            )
        })
        .collect()
}

/// Without a receipt the relay backs off: after each full send, the manifest
/// alone (a probe); each full send waits twice as long for its receipt as the
/// one before; after `max_sends` full sends it stops, and the queue report
/// says the filing is in trouble and how to re-send it. An operator's re-send
/// goes out whole, and once the destination is back the filing arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_back_off_probe_first_and_stop_until_an_operator_resends() {
    let federation = Federation::with_settings(
        "backoff",
        &["senamhi", "oefa"],
        &settings("\n[transfer]\nreceipt_timeout_secs = 1\nmax_sends = 2\n"),
    );
    // oefa's node is not running: nobody receipts.
    let senamhi = federation.start("senamhi").await;
    let mut origin = senamhi.client.clone();
    let mut ops = ops(senamhi.grpc_addr()).await;
    // Two chunks of 512 KiB.
    let docs = [Doc::new("reenvio.pdf", 600_000, 41)];
    let filed = submit(&mut origin, header("oefa", "Sin acuse"), &docs)
        .await
        .unwrap();
    let trouble = eventually("the relay to give up and say so", async || {
        let report = queues(&mut ops).await;
        report
            .troubled
            .into_iter()
            .find(|t| t.tracking_code == filed.tracking_code && t.reason.contains("stopped"))
            .ok_or(())
    })
    .await;
    assert!(
        trouble.reason.contains("2 full send(s)") && trouble.reason.contains("ecointegra resend"),
        "{}",
        trouble.reason
    );
    assert_eq!(trouble.counterpart, "oefa");

    // Full, probe, full, probe: chunks only in the full sends.
    let inbox = federation.topic_inbox("oefa");
    let sent = records(&inbox, 8);
    let kinds: Vec<&str> = sent.iter().map(|(kind, _, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "CHUNK", "CHUNK", "MANIFEST", "MANIFEST", "CHUNK", "CHUNK", "MANIFEST", "MANIFEST"
        ],
        "{sent:#?}"
    );
    let manifests: Vec<&(String, String, i64)> = sent
        .iter()
        .filter(|(kind, _, _)| kind == "MANIFEST")
        .collect();
    for (i, (_, id, _)) in manifests.iter().enumerate() {
        assert!(id.ends_with(&format!("/manifest/{}", i + 1)), "{id}");
    }
    // The probe after the first full send waited the receipt timeout; the
    // one after the second, twice as long.
    let waited = |after: usize, before: usize| sent[after].2 - sent[before].2;
    assert!(waited(3, 2) >= 1000, "{sent:#?}");
    assert!(waited(4, 3) >= 1000, "{sent:#?}");
    assert!(waited(7, 6) >= 2000, "{sent:#?}");
    let filing = get(&mut origin, &filed.tracking_code).await.unwrap();
    assert_eq!(filing.status, FilingStatus::Sent as i32);

    // Re-sent by hand: whole, at once, and no longer given up.
    let transfer_id = trouble.transfer_id.clone();
    let answer = ops
        .resend_transfer(ResendTransferRequest {
            transfer_id: transfer_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.tracking_code, filed.tracking_code);
    assert_eq!(answer.destination, "oefa");
    let sent = records(&inbox, 11);
    let kinds: Vec<&str> = sent[8..].iter().map(|(kind, _, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["CHUNK", "CHUNK", "MANIFEST"]);
    let report = queues(&mut ops).await;
    assert!(
        !report.troubled.iter().any(|t| t.reason.contains("stopped")),
        "{report:#?}"
    );
    let refused = ops
        .resend_transfer(ResendTransferRequest {
            transfer_id: "../../etc".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    // oefa comes back: one filing from every copy, receipted; nothing left
    // to re-send, and none of the copies or probes dead-lettered.
    let mut oefa = federation.start("oefa").await;
    let delivered = wait_for_status(
        &mut origin,
        &filed.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    assert_eq!(delivered.documents[0].sha256, docs[0].sha256_hex());
    assert_eq!(
        download_sha256(&mut oefa.client, &filed.tracking_code, 0)
            .await
            .0,
        docs[0].sha256_hex()
    );
    settled(&federation, &["senamhi", "oefa"]).await;
    assert_eq!(inbound_count(&federation, "oefa"), 1);
    assert_eq!(
        count_rows(
            &federation.store_path("oefa"),
            "SELECT COUNT(*) FROM dead_letters"
        ),
        0
    );
    let finished = ops
        .resend_transfer(ResendTransferRequest { transfer_id })
        .await
        .unwrap_err();
    assert_eq!(
        finished.code(),
        tonic::Code::FailedPrecondition,
        "{finished:?}"
    );
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

// ---- production topics ----------------------------------------------------

/// A node outside development does not create the sector's topics: it
/// checks them, and while they are missing or short it is not ready and says
/// which and why (`/readyz`, the queue report), instead of creating them
/// with its own settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_node_checks_the_topics_it_does_not_create() {
    let federation = Federation::with_settings("prodtopics", &["senamhi", "oefa"], &settings(HTTP));
    let path = federation.config_path("oefa");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("development = true", "development = false")
        .replace("replication_factor = 1", "replication_factor = 2");
    std::fs::write(&path, text).unwrap();
    let oefa = federation.start("oefa").await;
    let http = http_addr(&federation, "oefa");
    let inbox = federation.topic_inbox("oefa");
    let body = eventually("oefa's /readyz to name its missing inbox", async || {
        let (status, body) = tokio::task::spawn_blocking(move || http_get(http, "/readyz"))
            .await
            .unwrap();
        if status == 503 && body.contains(&format!("topic {inbox} does not exist")) {
            Ok(body)
        } else {
            Err((status, body))
        }
    })
    .await;
    assert!(body.contains("ecointegra sector provision"), "{body}");
    let mut ops = ops(oefa.grpc_addr()).await;
    let report = queues(&mut ops).await;
    assert!(
        report
            .troubled
            .iter()
            .any(|t| t.reason.contains(&format!("topic {inbox} does not exist"))),
        "{report:#?}"
    );
    // Nothing was created behind the operator's back.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .create()
            .unwrap();
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    assert!(
        !metadata
            .topics()
            .iter()
            .any(|t| t.name().starts_with(&federation.prefix)),
        "a production node created topics"
    );
    oefa.shutdown().await;
}
