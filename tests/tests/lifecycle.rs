//! The filing lifecycle across three institutions against the real broker:
//! clerk actions, corrections, forwarding, answers, the receipt chain and the
//! sector-wide timeline read from every node.

use ecointegra_broker::directory::Directory;
use ecointegra_proto::v1::tracking_service_client::TrackingServiceClient;
use ecointegra_proto::v1::{
    AnswerFilingRequest, AnswerHeader, ArchiveFilingRequest, Direction, DocumentHeader,
    DownloadDocumentRequest, Filing, FilingStatus, ForwardFilingRequest, GetFilingRequest,
    GetReceiptRequest, ObserveFilingRequest, ReceiveFilingRequest, TrackRequest, TrackResponse,
    TransferKind, answer_filing_request, download_document_response,
};
use ecointegra_tests::*;
use std::net::SocketAddr;
use tonic::Code;

type Tracker = TrackingServiceClient<tonic::transport::Channel>;

async fn tracker(addr: SocketAddr) -> Tracker {
    TrackingServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

async fn track(
    tracker: &mut Tracker,
    code: &str,
    verification: &str,
) -> Result<TrackResponse, tonic::Status> {
    tracker
        .track(TrackRequest {
            tracking_code: code.into(),
            verification_code: verification.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Polls a node's tracking until it knows at least `steps` steps of `code`
/// (events from other institutions arrive through the tracking topic); fails
/// with the timeline last seen if it never does.
async fn track_until(
    store: &std::path::Path,
    addr: SocketAddr,
    code: &str,
    verification: &str,
    steps: usize,
) -> TrackResponse {
    // Asked once the node knows the registration: failed look-ups count
    // against the client's limit.
    registration_known(store, code).await;
    let mut tracker = tracker(addr).await;
    let what = format!("{steps} steps in the timeline of {code} at {addr}");
    eventually(&what, async || {
        match track(&mut tracker, code, verification).await {
            Ok(answer) if answer.timeline.len() >= steps => Ok(answer),
            Ok(answer) => Err(Ok(steps_of(&answer))),
            Err(status) => Err(Err(status)),
        }
    })
    .await
}

/// A timeline as (institution, status) steps, to compare and to print.
fn steps_of(answer: &TrackResponse) -> Vec<(String, Option<FilingStatus>)> {
    answer
        .timeline
        .iter()
        .map(|e| (e.institution.clone(), FilingStatus::try_from(e.status).ok()))
        .collect()
}

fn is(status: FilingStatus, direction: Direction) -> impl Fn(&Filing) -> bool {
    move |f| f.status == status as i32 && f.direction == direction as i32
}

fn answer_parts(code: &str, action_id: &str, doc: &Doc) -> Vec<AnswerFilingRequest> {
    use answer_filing_request::Part;
    vec![
        AnswerFilingRequest {
            part: Some(Part::Header(AnswerHeader {
                tracking_code: code.into(),
                action_id: action_id.into(),
                note: "Se adjunta la información solicitada".into(),
            })),
        },
        AnswerFilingRequest {
            part: Some(Part::Document(DocumentHeader {
                name: doc.name.clone(),
                media_type: "application/pdf".into(),
                declared_size: doc.len,
            })),
        },
        AnswerFilingRequest {
            part: Some(Part::Chunk(doc.bytes().into())),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filing_travels_observed_corrected_forwarded_and_answered_with_one_timeline_everywhere() {
    let federation = Federation::new("lifecycle", &["senamhi", "oefa", "minam"]);
    let [mut senamhi, mut oefa, mut minam] = federation.start_all().await;

    // senamhi files to oefa.
    let filed = deliver_sample(&mut senamhi.client, "oefa").await;
    let code = filed.tracking_code.clone();
    wait_for_filing(
        &mut oefa.client,
        &code,
        "delivered at oefa",
        is(FilingStatus::Delivered, Direction::Inbound),
    )
    .await;

    // oefa observes; senamhi sees it and corrects.
    let observed = oefa
        .client
        .observe_filing(ObserveFilingRequest {
            tracking_code: code.clone(),
            action_id: "obs-1".into(),
            reason: "Falta la firma del representante".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(observed.status, FilingStatus::Observed as i32);
    let back = wait_for_filing(
        &mut senamhi.client,
        &code,
        "observed at senamhi",
        is(FilingStatus::Observed, Direction::Outbound),
    )
    .await;
    assert_eq!(back.note, "Falta la firma del representante");

    let mut correction = header("", "Denuncia ambiental (subsanada)");
    correction.corrects_tracking_code = code.clone();
    let corrected_docs = [Doc::new("solicitud-firmada.pdf", 42_000, 2)];
    let corrected = submit(&mut senamhi.client, correction, &corrected_docs)
        .await
        .unwrap();
    assert_eq!(
        corrected.tracking_code, code,
        "a correction keeps the tracking code"
    );
    assert_eq!(corrected.verification_code, filed.verification_code);
    let delivered = wait_for_filing(&mut oefa.client, &code, "correction at oefa", |f| {
        f.kind == TransferKind::Correction as i32 && f.status == FilingStatus::Delivered as i32
    })
    .await;
    assert_eq!(
        delivered.documents[0].sha256,
        corrected_docs[0].sha256_hex()
    );

    // oefa receives and forwards to minam.
    let received = oefa
        .client
        .receive_filing(ReceiveFilingRequest {
            tracking_code: code.clone(),
            action_id: "rec-1".into(),
            registry_number: "OEFA-INT-0077".into(),
            office: "Mesa de partes".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(received.internal_registry_number, "OEFA-INT-0077");
    // A note longer than a manifest may carry is refused, naming the field.
    let too_long = oefa
        .client
        .clone()
        .forward_filing(ForwardFilingRequest {
            tracking_code: code.clone(),
            action_id: "fwd-long".into(),
            destination: "minam".into(),
            note: "x".repeat(2001),
        })
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), Code::InvalidArgument);
    assert!(too_long.message().contains("note"), "{too_long:?}");
    oefa.client
        .forward_filing(ForwardFilingRequest {
            tracking_code: code.clone(),
            action_id: "fwd-1".into(),
            destination: "minam".into(),
            note: "Competencia del ministerio".into(),
        })
        .await
        .unwrap();
    let at_min = wait_for_filing(
        &mut minam.client,
        &code,
        "forwarded to minam",
        is(FilingStatus::Delivered, Direction::Inbound),
    )
    .await;
    assert_eq!(at_min.kind, TransferKind::Forward as i32);
    assert_eq!(at_min.origin, "oefa");
    assert_eq!(at_min.filed_at, "senamhi");
    assert_eq!(
        at_min.documents[0].sha256,
        corrected_docs[0].sha256_hex(),
        "the forwarded documents are the corrected ones"
    );
    assert!(
        !at_min.due_date.is_empty(),
        "the destination sets a due date"
    );

    // minam receives and answers; the answer reaches senamhi.
    minam
        .client
        .receive_filing(ReceiveFilingRequest {
            tracking_code: code.clone(),
            action_id: "rec-2".into(),
            registry_number: "MINAM-2026-9".into(),
            office: "Dirección General".into(),
        })
        .await
        .unwrap();
    let response = Doc::new("respuesta.pdf", 30_000, 3);
    minam
        .client
        .answer_filing(tokio_stream::iter(answer_parts(&code, "ans-1", &response)))
        .await
        .unwrap();
    let answer = wait_for_filing(&mut senamhi.client, &code, "answer at senamhi", |f| {
        f.kind == TransferKind::Answer as i32
    })
    .await;
    assert_eq!(answer.documents[0].sha256, response.sha256_hex());
    let (sha, _) = download_sha256(&mut senamhi.client, &code, 0).await;
    assert_eq!(
        sha,
        response.sha256_hex(),
        "the answer's bytes arrived at the desk where it was filed"
    );

    // oefa keeps three copies: the original and the correction it received,
    // and the record of its forward. GetFiling names the one it returns (the
    // copy oefa holds, by default) and lists them all; each can be asked for.
    let held = get(&mut oefa.client, &code).await.unwrap();
    assert_eq!(held.direction, Direction::Inbound as i32);
    assert_eq!((held.hop, held.kind), (2, TransferKind::Correction as i32));
    assert_eq!(held.status, FilingStatus::Forwarded as i32);
    let copies: Vec<(i32, u32, &str)> = held
        .copies
        .iter()
        .map(|c| (c.direction, c.hop, c.counterpart.as_str()))
        .collect();
    assert_eq!(
        copies,
        [
            (Direction::Inbound as i32, 1, "senamhi"),
            (Direction::Inbound as i32, 2, "senamhi"),
            (Direction::Outbound as i32, 3, "minam"),
        ]
    );
    assert_eq!(held.copies[1].transfer_id, held.transfer_id);
    let copy = async |client: &mut Client, transfer_id: &str| {
        client
            .get_filing(GetFilingRequest {
                tracking_code: code.clone(),
                transfer_id: transfer_id.into(),
            })
            .await
            .map(|r| r.into_inner())
    };
    let sent = copy(&mut oefa.client, &held.copies[2].transfer_id)
        .await
        .unwrap();
    assert_eq!(sent.direction, Direction::Outbound as i32);
    assert_eq!((sent.destination.as_str(), sent.hop), ("minam", 3));
    let first = copy(&mut oefa.client, &held.copies[0].transfer_id)
        .await
        .unwrap();
    assert_eq!(first.kind, TransferKind::Original as i32);
    assert_eq!(first.documents[0].sha256, sample_doc().sha256_hex());
    let mut stream = oefa
        .client
        .download_document(DownloadDocumentRequest {
            tracking_code: code.clone(),
            document_index: 0,
            transfer_id: first.transfer_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(part) = stream.message().await.unwrap() {
        if let Some(download_document_response::Part::Chunk(data)) = part.part {
            bytes.extend_from_slice(&data);
        }
    }
    assert_eq!(bytes, sample_doc().bytes(), "the original copy's document");
    let unknown = copy(&mut oefa.client, &"0".repeat(32)).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let hostile = copy(&mut oefa.client, "../x").await.unwrap_err();
    assert_eq!(hostile.code(), Code::InvalidArgument, "{hostile:?}");

    // The timeline read from each of the three nodes is identical and complete.
    let expected = [
        ("senamhi", FilingStatus::Registered),
        ("senamhi", FilingStatus::Sent),
        ("oefa", FilingStatus::Delivered),
        ("oefa", FilingStatus::Observed),
        ("senamhi", FilingStatus::Registered),
        ("senamhi", FilingStatus::Sent),
        ("oefa", FilingStatus::Delivered),
        ("oefa", FilingStatus::Received),
        ("oefa", FilingStatus::Forwarded),
        ("oefa", FilingStatus::Sent),
        ("minam", FilingStatus::Delivered),
        ("minam", FilingStatus::Received),
        ("minam", FilingStatus::Answered),
        ("senamhi", FilingStatus::Delivered),
    ];
    let mut timelines = Vec::new();
    for (id, addr) in [
        ("senamhi", senamhi.grpc_addr()),
        ("oefa", oefa.grpc_addr()),
        ("minam", minam.grpc_addr()),
    ] {
        let store = federation.store_path(id);
        let answer = track_until(
            &store,
            addr,
            &code,
            &filed.verification_code,
            expected.len(),
        )
        .await;
        let steps: Vec<(String, i32)> = answer
            .timeline
            .iter()
            .map(|e| (e.institution.clone(), e.status))
            .collect();
        let want: Vec<(String, i32)> = expected
            .iter()
            .map(|(i, s)| (i.to_string(), *s as i32))
            .collect();
        assert_eq!(steps, want, "timeline at {addr}");
        assert_eq!(answer.status, FilingStatus::Delivered as i32);
        assert_eq!(
            answer.current_holder, "senamhi",
            "the answer is back where it was filed"
        );
        timelines.push(answer.timeline);
    }
    assert_eq!(
        timelines[0], timelines[1],
        "senamhi and oefa show the same timeline"
    );
    assert_eq!(
        timelines[1], timelines[2],
        "oefa and minam show the same timeline"
    );
    let citizen = track(
        &mut tracker(senamhi.grpc_addr()).await,
        &code,
        &filed.verification_code,
    )
    .await
    .unwrap();
    assert_eq!(
        citizen.answer_documents.len(),
        1,
        "the citizen's view at senamhi shows the answer"
    );

    // The receipt chain verifies end to end, hop by hop.
    let chain = senamhi
        .client
        .get_receipt_chain(GetReceiptRequest {
            tracking_code: code.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(chain.verified);
    assert_eq!(
        chain.receipts.len(),
        4,
        "original, correction, forward and answer"
    );
    let anchor =
        ecointegra_broker::keys::parse_public_key(&federation.authority_public_key).unwrap();
    let directory = Directory::load(&federation.root.join("directory.toml"), &anchor).unwrap();
    let receipts =
        ecointegra_node::lifecycle::custody::verify_chain(&chain.receipts, &directory).unwrap();
    let hops: Vec<(u32, &str)> = receipts
        .iter()
        .map(|r| (r.hop, r.receiving_institution.as_str()))
        .collect();
    assert_eq!(
        hops,
        [(1, "oefa"), (2, "oefa"), (3, "minam"), (4, "senamhi")]
    );
    let mut tampered = chain.receipts.clone();
    tampered.swap(1, 2);
    assert!(ecointegra_node::lifecycle::custody::verify_chain(&tampered, &directory).is_err());

    senamhi.shutdown().await;
    oefa.shutdown().await;
    minam.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_transitions_name_the_state_and_repeated_actions_are_no_ops() {
    let federation = Federation::new("transitions", &["senamhi", "oefa"]);
    let [mut senamhi, mut oefa] = federation.start_all().await;
    let filed = submit_sample(&mut senamhi.client, "oefa").await;
    let code = filed.tracking_code;
    wait_for_filing(
        &mut oefa.client,
        &code,
        "delivered",
        is(FilingStatus::Delivered, Direction::Inbound),
    )
    .await;

    // Forward needs RECEIVED.
    let err = oefa
        .client
        .forward_filing(ForwardFilingRequest {
            tracking_code: code.clone(),
            action_id: "f-early".into(),
            destination: "senamhi".into(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("is DELIVERED"), "{}", err.message());

    let receive = |id: &str| ReceiveFilingRequest {
        tracking_code: code.clone(),
        action_id: id.into(),
        registry_number: "R-1".into(),
        office: "Mesa de partes".into(),
    };
    let first = oefa
        .client
        .receive_filing(receive("r-1"))
        .await
        .unwrap()
        .into_inner();
    let again = oefa
        .client
        .receive_filing(receive("r-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first, again,
        "a repeated action id returns the first answer"
    );
    let err = oefa
        .client
        .receive_filing(receive("r-2"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("is RECEIVED"), "{}", err.message());

    let archive = ArchiveFilingRequest {
        tracking_code: code.clone(),
        action_id: "a-1".into(),
        note: String::new(),
    };
    oefa.client.archive_filing(archive.clone()).await.unwrap();
    oefa.client.archive_filing(archive).await.unwrap();
    let err = oefa
        .client
        .observe_filing(ObserveFilingRequest {
            tracking_code: code.clone(),
            action_id: "o-1".into(),
            reason: "tarde".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("is ARCHIVED"), "{}", err.message());

    // Missing fields are named.
    let err = oefa
        .client
        .observe_filing(ObserveFilingRequest {
            tracking_code: code.clone(),
            action_id: "o-2".into(),
            reason: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("reason"), "{}", err.message());

    // One RECEIVED and one ARCHIVED step, though each was asked twice.
    let store = federation.store_path("oefa");
    let timeline = track_until(&store, oefa.grpc_addr(), &code, &filed.verification_code, 5)
        .await
        .timeline;
    let statuses: Vec<i32> = timeline.iter().map(|e| e.status).collect();
    use FilingStatus::*;
    assert_eq!(
        statuses,
        [Registered, Sent, Delivered, Received, Archived].map(|s| s as i32)
    );
    assert_eq!(count_rows(&store, "SELECT COUNT(*) FROM actions"), 2);
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_tracking_events_do_not_duplicate_the_timeline() {
    let federation = Federation::new("replay", &["senamhi", "oefa"]);
    let [mut senamhi, oefa] = federation.start_all().await;
    let filed = submit_sample(&mut senamhi.client, "oefa").await;
    let code = filed.tracking_code;
    track_until(
        &federation.store_path("oefa"),
        oefa.grpc_addr(),
        &code,
        &filed.verification_code,
        3,
    )
    .await;
    // Publish every tracking record again, then make oefa re-read the topic
    // from the start as well.
    let topic = format!("{}.tracking", federation.prefix);
    let records = read_topic(&topic, 3, std::time::Duration::from_secs(20));
    assert_eq!(records.len(), 3);
    for record in &records {
        use rdkafka::Message as _;
        produce_raw(&topic, &code, record.payload().unwrap()).await;
    }
    oefa.shutdown().await;
    let store = rusqlite::Connection::open(federation.store_path("oefa")).unwrap();
    store
        .execute("DELETE FROM inbox_offsets WHERE topic = ?1", [&topic])
        .unwrap();
    drop(store);
    let oefa = federation.start("oefa").await;
    // oefa has read the three events twice over: its stored offsets are past
    // all six records.
    caught_up(&federation, "oefa", &topic).await;
    let timeline = track(
        &mut tracker(oefa.grpc_addr()).await,
        &code,
        &filed.verification_code,
    )
    .await
    .unwrap()
    .timeline;
    assert_eq!(
        timeline.len(),
        3,
        "REGISTERED, SENT, DELIVERED once each: {timeline:?}"
    );
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_verification_code_is_indistinguishable_from_an_unknown_code() {
    let federation = Federation::with_settings(
        "verification",
        &["senamhi", "oefa"],
        "\n[tracking]\nmax_failures_per_minute = 3\n",
    );
    let mut senamhi = federation.start("senamhi").await;
    let filed = submit_sample(&mut senamhi.client, "oefa").await;
    let mut tracking = tracker(senamhi.grpc_addr()).await;
    let right = track(
        &mut tracking,
        &filed.tracking_code,
        &filed.verification_code.to_lowercase(),
    )
    .await
    .unwrap();
    assert_eq!(
        right.tracking_code, filed.tracking_code,
        "codes are not case-sensitive"
    );

    let wrong = track(&mut tracking, &filed.tracking_code, "ZZZZZZZZ")
        .await
        .unwrap_err();
    let unknown = track(
        &mut tracking,
        "SENAMHI-2026-00000000",
        &filed.verification_code,
    )
    .await
    .unwrap_err();
    assert_eq!(wrong.code(), Code::NotFound);
    assert_eq!(
        (wrong.code(), wrong.message()),
        (unknown.code(), unknown.message())
    );

    // The third failure in a minute is the last one answered.
    let _ = track(&mut tracking, &filed.tracking_code, "YYYYYYYY")
        .await
        .unwrap_err();
    let limited = track(
        &mut tracking,
        &filed.tracking_code,
        &filed.verification_code,
    )
    .await
    .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    senamhi.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_dates_skip_weekends_and_configured_holidays() {
    use ecointegra_node::lifecycle::deadlines::{Calendar, Day};
    // Make the next two weekdays holidays, so they must be skipped.
    let today = Day::of_ms(ecointegra_broker::now_ms(), -300);
    let mut holidays = Vec::new();
    let mut day = today;
    while holidays.len() < 2 {
        day = Day(day.0 + 1);
        if !day.is_weekend() {
            holidays.push(day);
        }
    }
    let listed: Vec<String> = holidays.iter().map(|d| format!("\"{d}\"")).collect();
    let federation = Federation::with_settings(
        "deadlines",
        &["senamhi", "oefa"],
        &format!(
            "\n[deadlines]\ndefault_business_days = 3\nholidays = [{}]\n[deadlines.business_days_by_type]\n\"acceso-a-la-informacion\" = 7\n",
            listed.join(", ")
        ),
    );
    let [mut senamhi, mut oefa] = federation.start_all().await;
    let mut typed = header("oefa", "Acceso a la información");
    typed.filing_type = "acceso-a-la-informacion".into();
    let general = submit(
        &mut senamhi.client,
        header("oefa", "General"),
        &[Doc::new("a.pdf", 10, 1)],
    )
    .await
    .unwrap();
    let access = submit(&mut senamhi.client, typed, &[Doc::new("b.pdf", 10, 2)])
        .await
        .unwrap();

    // Expected dates, counted here by hand: skip Saturdays, Sundays and the holidays.
    let expect = |n: u32| {
        let mut day = today;
        let mut left = n;
        while left > 0 {
            day = Day(day.0 + 1);
            if !day.is_weekend() && !holidays.contains(&day) {
                left -= 1;
            }
        }
        day.to_string()
    };
    let g = wait_for_filing(
        &mut oefa.client,
        &general.tracking_code,
        "general",
        is(FilingStatus::Delivered, Direction::Inbound),
    )
    .await;
    let a = wait_for_filing(
        &mut oefa.client,
        &access.tracking_code,
        "access",
        is(FilingStatus::Delivered, Direction::Inbound),
    )
    .await;
    assert_eq!(g.due_date, expect(3));
    assert_eq!(a.due_date, expect(7), "the type's own period applies");
    let calendar = Calendar::new(&federation.config("oefa").deadlines);
    assert_eq!(calendar.add_business_days(today, 3).to_string(), expect(3));

    // Both are listed as due within their windows; the timeline shows the date.
    let due = oefa
        .client
        .list_due(ecointegra_proto::v1::ListDueRequest { within_days: 31 })
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<(String, i32)> = due
        .filings
        .iter()
        .map(|d| {
            (
                d.filing.as_ref().unwrap().tracking_code.clone(),
                d.business_days_left,
            )
        })
        .collect();
    assert!(
        listed.contains(&(general.tracking_code.clone(), 3)),
        "{listed:?}"
    );
    assert!(
        listed.contains(&(access.tracking_code.clone(), 7)),
        "{listed:?}"
    );
    let timeline = track_until(
        &federation.store_path("oefa"),
        oefa.grpc_addr(),
        &general.tracking_code,
        &general.verification_code,
        3,
    )
    .await;
    assert_eq!(timeline.due_date, expect(3));
    senamhi.shutdown().await;
    oefa.shutdown().await;
}
