//! Citizens' verification codes against the real broker: 80-bit codes in
//! groups, typed as people type them at any node, an Argon2id verifier on the
//! tracking topic that everyone reads, and the 8-character codes of filings
//! registered before still working.

use ecointegra_node::verification;
use ecointegra_proto::v1::tracking_service_client::TrackingServiceClient;
use ecointegra_proto::v1::{
    Envelope, FilingStatus, MessageType, TrackRequest, TrackResponse, TrackingEvent, TransferKind,
};
use ecointegra_tests::*;
use prost::Message as _;
use rdkafka::Message as _;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::Code;

async fn track(addr: SocketAddr, code: &str, verification: &str) -> Result<TrackResponse, Code> {
    TrackingServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .track(TrackRequest {
            tracking_code: code.into(),
            verification_code: verification.into(),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|status| status.code())
}

/// Waits until node `id` holds the registration of `code` (it came through
/// the tracking topic), so a look-up there is not a failure that counts
/// against the rate limit.
async fn registered_at(federation: &Federation, id: &str, code: &str) {
    let store = federation.store_path(id);
    eventually(
        &format!("{id} to hold the registration of {code}"),
        async || {
            let sql = format!(
                "SELECT COUNT(*) FROM tracking_events
             WHERE tracking_code = '{code}' AND event_id LIKE '%/REGISTERED'"
            );
            match count_rows(&store, &sql) {
                0 => Err("not yet"),
                _ => Ok(()),
            }
        },
    )
    .await
}

/// The registration events of `code` on the tracking topic, as any reader of
/// Kafka sees them.
async fn registrations_on_topic(federation: &Federation, code: &str) -> Vec<TrackingEvent> {
    let topic = format!("{}.tracking", federation.prefix);
    eventually(
        &format!("the registration of {code} on {topic}"),
        async || {
            let events: Vec<TrackingEvent> = read_topic(&topic, 1000, Duration::from_secs(2))
                .iter()
                .filter_map(|record| Envelope::decode(record.payload()?).ok())
                .filter_map(|envelope| TrackingEvent::decode(envelope.payload.as_ref()).ok())
                .filter(|e| e.tracking_code == code && e.status == FilingStatus::Registered as i32)
                .collect();
            if events.is_empty() {
                Err(())
            } else {
                Ok(events)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grouped_80_bit_code_works_at_another_node_as_typed_and_only_argon2id_travels() {
    let federation = Federation::new("verification-codes", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.start_all().await;
    let filed = submit_sample(&mut senamhi.client.clone(), "oefa").await;

    // Printed in four groups of four characters of Crockford's base32.
    let code = &filed.verification_code;
    let groups: Vec<&str> = code.split('-').collect();
    assert_eq!(groups.len(), 4, "{code}");
    assert!(
        groups.iter().all(|g| g.len() == 4
            && g.bytes()
                .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b))),
        "{code}"
    );
    assert_eq!(verification::normalize(code).unwrap().len() * 5, 80);

    // Typed at another institution's node, lower case and without dashes,
    // with an O for a 0 and an l for a 1 where the code has them.
    registered_at(&federation, "oefa", &filed.tracking_code).await;
    let typed = code
        .replace('-', "")
        .to_lowercase()
        .replace('0', "o")
        .replace('1', "l");
    let found = track(oefa.grpc_addr(), &filed.tracking_code, &typed)
        .await
        .unwrap_or_else(|c| panic!("{typed:?} for {code}: {c:?}"));
    assert_eq!(found.tracking_code, filed.tracking_code);
    assert_eq!(found.timeline[0].status, FilingStatus::Registered as i32);

    // A code one character off is refused, as an unknown filing is.
    let mut wrong = normalize_owned(code);
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'Z' { 'Y' } else { 'Z' });
    assert_eq!(
        track(oefa.grpc_addr(), &filed.tracking_code, &wrong)
            .await
            .err(),
        Some(Code::NotFound)
    );
    assert_eq!(
        track(oefa.grpc_addr(), &filed.tracking_code, "")
            .await
            .err(),
        Some(Code::NotFound)
    );

    // What the tracking topic carries is a salted Argon2id verifier: no
    // SHA-256 of the code, nothing a reader can test a guess against cheaply.
    let published = registrations_on_topic(&federation, &filed.tracking_code).await;
    assert_eq!(published.len(), 1, "{published:#?}");
    let verifier = &published[0].verifier;
    let text = std::str::from_utf8(verifier).unwrap();
    assert!(text.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{text}");
    assert_ne!(
        *verifier,
        verification::legacy_verifier(&filed.tracking_code, &normalize_owned(code))
    );
    assert!(!text.contains(&normalize_owned(code)), "{text}");
    assert!(verification::verifies(
        Some(verifier),
        &filed.tracking_code,
        code
    ));
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

/// A filing registered by a node of the first release: its registration
/// event, signed by its institution, carries the SHA-256 verifier of an
/// 8-character code. Every node still accepts it, and the citizen's code
/// still opens the filing, typed as people type it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_8_character_code_with_its_sha256_verifier_still_works() {
    let federation = Federation::new("legacy-codes", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.start_all().await;
    // A filing of senamhi's, so its nodes are consuming the tracking topic.
    let recent = submit_sample(&mut senamhi.client.clone(), "oefa").await;
    registered_at(&federation, "oefa", &recent.tracking_code).await;

    let year = &recent.tracking_code["SENAMHI-".len().."SENAMHI-".len() + 4];
    let code = format!("SENAMHI-{year}-{}", ecointegra_node::ids::random_code(8));
    let old_code = "9CVZ0ART";
    let registration = TrackingEvent {
        event_id: format!("senamhi/{}/REGISTERED", ecointegra_node::ids::transfer_id()),
        tracking_code: code.clone(),
        institution: "senamhi".into(),
        status: FilingStatus::Registered as i32,
        timestamp_ms: ecointegra_broker::now_ms(),
        hop: 1,
        actor_role: "system".into(),
        holder: "senamhi".into(),
        seq: 1,
        verifier: verification::legacy_verifier(&code, old_code),
        transfer_kind: TransferKind::Original as i32,
        counterpart: "oefa".into(),
        ..Default::default()
    };
    assert_eq!(registration.verifier.len(), 32);
    let sealed = listed_sealer(&federation, "senamhi").seal(
        registration.event_id.clone(),
        MessageType::TrackingEvent,
        ecointegra_node::ids::BROADCAST,
        registration.encode_to_vec(),
    );
    let tracking = format!("{}.tracking", federation.prefix);
    produce_raw(&tracking, &code, &sealed.encode_to_vec()).await;

    for (id, addr) in [("oefa", oefa.grpc_addr()), ("senamhi", senamhi.grpc_addr())] {
        registered_at(&federation, id, &code).await;
        for typed in [old_code, "9cvz-oart", "9CVZOART"] {
            let found = track(addr, &code, typed)
                .await
                .unwrap_or_else(|c| panic!("{typed:?} at {id}: {c:?}"));
            assert_eq!(found.tracking_code, code);
            assert_eq!(found.status, FilingStatus::Registered as i32);
        }
        assert_eq!(
            track(addr, &code, "9CVZ0ARX").await.err(),
            Some(Code::NotFound),
            "{id}"
        );
        // The old code's characters grouped as a new code's are not it.
        assert_eq!(
            track(addr, &code, "9CVZ-0ART-0000-0000").await.err(),
            Some(Code::NotFound),
            "{id}"
        );
    }
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

/// A registration whose verifier would make every node that checks a code
/// against it spend gigabytes (or is no verifier at all) is dead-lettered on
/// arrival, never computed; the node goes on consuming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_with_absurd_argon2_parameters_is_refused_on_arrival() {
    let federation = Federation::new("hostile-verifier", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.start_all().await;
    let recent = submit_sample(&mut senamhi.client.clone(), "oefa").await;
    registered_at(&federation, "oefa", &recent.tracking_code).await;

    let year = &recent.tracking_code["SENAMHI-".len().."SENAMHI-".len() + 4];
    let salt = "c2FsdHNhbHRzYWx0c2FsdA";
    let hash = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let hostile = [
        format!("$argon2id$v=19$m=4194304,t=2,p=1${salt}${hash}"),
        format!("$argon2id$v=19$m=19456,t=1000000,p=1${salt}${hash}"),
        "not a verifier at all".to_owned(),
    ];
    let sealer = listed_sealer(&federation, "senamhi");
    let tracking = format!("{}.tracking", federation.prefix);
    let mut codes = Vec::new();
    for verifier in &hostile {
        let code = format!("SENAMHI-{year}-{}", ecointegra_node::ids::random_code(8));
        let event = TrackingEvent {
            event_id: format!("senamhi/{}/REGISTERED", ecointegra_node::ids::transfer_id()),
            tracking_code: code.clone(),
            institution: "senamhi".into(),
            status: FilingStatus::Registered as i32,
            seq: 1,
            verifier: verifier.as_bytes().to_vec(),
            holder: "senamhi".into(),
            ..Default::default()
        };
        let sealed = sealer.seal(
            event.event_id.clone(),
            MessageType::TrackingEvent,
            ecointegra_node::ids::BROADCAST,
            event.encode_to_vec(),
        );
        produce_raw(&tracking, &code, &sealed.encode_to_vec()).await;
        codes.push(code);
    }
    let letters = read_dead_letters(&federation.topic_dlq("oefa"), hostile.len());
    assert_eq!(letters.len(), hostile.len(), "{letters:#?}");
    for letter in &letters {
        assert_eq!(letter.reason_code, "identifier", "{letter:#?}");
        assert!(letter.reason.contains("verifier"), "{letter:#?}");
    }
    // Still consuming: a filing after them arrives, and none of them is held.
    let after = submit_sample(&mut senamhi.client.clone(), "oefa").await;
    registered_at(&federation, "oefa", &after.tracking_code).await;
    for code in &codes {
        let sql = format!("SELECT COUNT(*) FROM tracking_events WHERE tracking_code = '{code}'");
        assert_eq!(
            count_rows(&federation.store_path("oefa"), &sql),
            0,
            "{code}"
        );
    }
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

fn normalize_owned(code: &str) -> String {
    verification::normalize(code).unwrap()
}
