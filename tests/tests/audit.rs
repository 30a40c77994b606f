//! The audit trail names who: tracking events carry the caller who acted
//! (the configured name of their token) and their role; every
//! state-changing call is in the node's append-only audit log with who,
//! from where, what and how it ended, listed by `ecointegra audit`; a
//! dead letter's discard records the authenticated operator, whatever
//! `--by` says.

use ecointegra_proto::v1::{
    DiscardDeadLetterRequest, FilingStatus, ListAuditLogRequest, ListDeadLettersRequest,
    ReceiveFilingRequest, TrackRequest, TrackingEvent,
};
use ecointegra_tests::*;

const SYSTEM: &str = "tok-audit-system";
const CLERK: &str = "tok-audit-clerk";
const OPERATOR: &str = "tok-audit-operator";

/// The tracking events a node's store holds for `code`, decoded.
fn events(federation: &Federation, id: &str, code: &str) -> Vec<TrackingEvent> {
    let conn = rusqlite::Connection::open_with_flags(
        federation.store_path(id),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    let mut stmt = conn
        .prepare("SELECT envelope FROM tracking_events WHERE tracking_code = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([code], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|bytes| stored_step(&bytes.unwrap()))
        .collect()
}

fn step_in(events: &[TrackingEvent], status: FilingStatus) -> Option<&TrackingEvent> {
    events.iter().find(|e| e.status == status as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_names_who_made_it_and_the_log_keeps_it() {
    let auth = format!(
        "\n[auth]\nanonymous_role = \"public\"\n{}{}{}",
        token_entry("sgd-senamhi", "system", SYSTEM),
        token_entry("mesa-maria", "clerk", CLERK),
        token_entry("noc-juan", "operator", OPERATOR)
    );
    let federation = Federation::with_settings("audit", &["senamhi", "oefa"], &auth);
    let [senamhi, oefa] = federation.start_all().await;

    // The institution's system files; oefa's clerk receives it.
    let mut system = client_as(senamhi.grpc_addr(), Some(SYSTEM)).await;
    let filed = system
        .submit_filing(parts(
            header("oefa", "Auditoría"),
            &[Doc::new("a.pdf", 1000, 1)],
        ))
        .await
        .unwrap()
        .into_inner();
    let code = filed.tracking_code.clone();
    let mut oefa_clerk = client_as(oefa.grpc_addr(), Some(CLERK)).await;
    eventually("the filing to reach oefa", async || {
        oefa_clerk
            .get_filing(ecointegra_proto::v1::GetFilingRequest {
                tracking_code: code.clone(),
                ..Default::default()
            })
            .await
    })
    .await;
    let receive = |action_id: &str| ReceiveFilingRequest {
        tracking_code: code.clone(),
        action_id: action_id.into(),
        registry_number: "OEFA-INT-9".into(),
        office: "Mesa de partes".into(),
    };
    oefa_clerk.receive_filing(receive("r1")).await.unwrap();
    // The same action again under another id: refused, and logged as such.
    let refused = oefa_clerk.receive_filing(receive("r2")).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    // Each step names who took it, at senamhi (REGISTERED, over the tracking
    // topic) and at oefa (RECEIVED); the node's own steps name no one.
    let seen = eventually("oefa's RECEIVED at senamhi", async || {
        let events = events(&federation, "senamhi", &code);
        if events
            .iter()
            .any(|e| e.status == FilingStatus::Received as i32)
        {
            Ok(events)
        } else {
            Err(events)
        }
    })
    .await;
    let step = |status: FilingStatus| {
        step_in(&seen, status).unwrap_or_else(|| panic!("no {status:?} in {seen:#?}"))
    };
    let registered = step(FilingStatus::Registered);
    assert_eq!(
        (registered.actor.as_str(), registered.actor_role.as_str()),
        ("sgd-senamhi", "system")
    );
    let received = step(FilingStatus::Received);
    assert_eq!(
        (received.actor.as_str(), received.actor_role.as_str()),
        ("mesa-maria", "clerk")
    );
    let delivered = step(FilingStatus::Delivered);
    assert_eq!(
        (delivered.actor.as_str(), delivered.actor_role.as_str()),
        ("", "node")
    );
    // A citizen's timeline does not name the institutions' people.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", oefa.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Asked once oefa holds the registration (failed look-ups are limited),
    // until senamhi's SENT has reached it too (over the tracking topic).
    registration_known(&federation.store_path("oefa"), &code).await;
    let mut tracking =
        ecointegra_proto::v1::tracking_service_client::TrackingServiceClient::new(channel);
    let tracked = eventually("the four steps in oefa's timeline", async || {
        let tracked = tracking
            .track(TrackRequest {
                tracking_code: code.clone(),
                verification_code: filed.verification_code.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if tracked.timeline.len() >= 4 {
            Ok(tracked)
        } else {
            Err(tracked)
        }
    })
    .await;
    assert!(
        tracked.timeline.iter().all(|e| e.actor.is_empty()),
        "{tracked:#?}"
    );

    // A dead letter: a record oefa cannot read. The operator discards it
    // with a --by of someone else's name: the authenticated operator is who
    // discarded it, the note stays.
    produce_raw(&federation.topic_inbox("oefa"), "junk", b"not an envelope").await;
    let mut ops = operations_as(oefa.grpc_addr(), Some(OPERATOR)).await;
    let letter = eventually("the junk record to be dead-lettered", async || {
        let open = ops
            .list_dead_letters(ListDeadLettersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .dead_letters;
        open.into_iter().next().ok_or(())
    })
    .await;
    let discarded = ops
        .discard_dead_letter(DiscardDeadLetterRequest {
            id: letter.id,
            reason: "basura de prueba".into(),
            by: "Otra Persona".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(discarded.discarded_by, "noc-juan (Otra Persona)");

    // The audit log: who, role, from where, what, about what, outcome.
    let log = ops
        .list_audit_log(ListAuditLogRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    let lines: Vec<(&str, &str, &str, &str, &str)> = log
        .iter()
        .map(|e| {
            (
                e.actor.as_str(),
                e.role.as_str(),
                e.action.as_str(),
                e.target.as_str(),
                if e.outcome == "ok" { "ok" } else { "error" },
            )
        })
        .collect();
    let id = letter.id.to_string();
    assert_eq!(
        lines,
        [
            ("mesa-maria", "clerk", "receive filing", code.as_str(), "ok"),
            (
                "mesa-maria",
                "clerk",
                "receive filing",
                code.as_str(),
                "error"
            ),
            (
                "noc-juan",
                "operator",
                "discard dead letter",
                id.as_str(),
                "ok"
            ),
        ],
        "{log:#?}"
    );
    assert!(log[1].outcome.contains("RECEIVED"), "{:?}", log[1].outcome);
    assert!(log.iter().all(|e| e.address == "127.0.0.1"), "{log:#?}");
    assert!(
        log.windows(2)
            .all(|w| w[0].id < w[1].id && w[0].at_ms <= w[1].at_ms)
    );
    let mut senamhi_ops = operations_as(senamhi.grpc_addr(), Some(OPERATOR)).await;
    let senamhi_log = senamhi_ops
        .list_audit_log(ListAuditLogRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(senamhi_log.len(), 1, "{senamhi_log:#?}");
    assert_eq!(
        (
            senamhi_log[0].actor.as_str(),
            senamhi_log[0].action.as_str(),
            senamhi_log[0].target.as_str()
        ),
        ("sgd-senamhi", "submit filing", code.as_str())
    );

    // Only operators read it.
    let mut as_clerk = operations_as(oefa.grpc_addr(), Some(CLERK)).await;
    let denied = as_clerk
        .list_audit_log(ListAuditLogRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // `ecointegra audit` prints it.
    let output = std::process::Command::new(binary())
        .args([
            "audit",
            "--node",
            &oefa.grpc_addr().to_string(),
            "--since",
            "1h",
        ])
        .env("ECOINTEGRA_TOKEN", OPERATOR)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(printed.lines().count(), 1 + 3, "{printed}");
    assert!(
        printed.contains("mesa-maria") && printed.contains("receive filing"),
        "{printed}"
    );
    assert!(printed.contains("noc-juan") && printed.contains("discard dead letter"));

    // Append-only: the store itself refuses to change or remove a line.
    oefa.shutdown().await;
    let conn = rusqlite::Connection::open(federation.store_path("oefa")).unwrap();
    for sql in [
        "UPDATE audit_log SET actor = 'nadie'",
        "DELETE FROM audit_log",
    ] {
        let err = conn.execute(sql, []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 3);
    senamhi.shutdown().await;
}
