//! Trust and confidentiality against the real broker: the signed directory,
//! refused senders, key rotation in flight, impersonation and ciphertext-only
//! topics.

use ecointegra_broker::directory::{Authority, entry_for};
use ecointegra_broker::envelope::Sealer;
use ecointegra_broker::keys::SigningIdentity;
use ecointegra_proto::v1::{
    DeadLetter, Direction, EntryStatus, Envelope, FilingStatus, ForwardFilingRequest,
    GetReceiptRequest, MessageType, Notice, ReceiveFilingRequest,
};
use ecointegra_tests::*;
use prost::Message;
use rdkafka::Message as _;
use std::time::Duration;
use tokio_rustls::rustls::AlertDescription;
use tonic::Code;

fn dead_letters(federation: &Federation, id: &str, count: usize) -> Vec<DeadLetter> {
    read_dead_letters(&federation.topic_dlq(id), count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_topics_carry_no_document_text_and_no_personal_data() {
    let federation = Federation::new("ciphertext", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.start_all().await;
    let (mut origin, mut destination) = (senamhi.client.clone(), oefa.client.clone());

    let secret = b"INFORME CONFIDENCIAL: derrame en la quebrada Huaycoloro. ".repeat(20_000);
    let path = federation.root.join("informe.txt");
    std::fs::write(&path, &secret).unwrap();
    let header = header("oefa", "Denuncia");
    let party = header.sender_party.clone().unwrap();
    let answer = origin
        .submit_filing(ecointegra_node::grpc::client::submission_stream(
            header,
            vec![path],
        ))
        .await
        .unwrap()
        .into_inner();
    wait_for_status(
        &mut origin,
        &answer.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    let (sha, len) = download_sha256(&mut destination, &answer.tracking_code, 0).await;
    assert_eq!(len, secret.len() as u64);
    assert_eq!(
        sha, answer.documents[0].sha256,
        "the destination holds the plaintext"
    );

    let mut records = read_topic(&federation.topic_inbox("oefa"), 4, Duration::from_secs(20));
    records.extend(read_topic(
        &format!("{}.tracking", federation.prefix),
        3,
        Duration::from_secs(20),
    ));
    assert!(
        records.len() >= 5,
        "chunks, manifest and tracking events were read"
    );
    let needles: [&[u8]; 4] = [
        b"CONFIDENCIAL",
        b"Huaycoloro",
        party.name.as_bytes(),
        party.document_number.as_bytes(),
    ];
    for record in &records {
        let bytes = record.payload().unwrap();
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{:?} appears in plaintext on {}",
                String::from_utf8_lossy(needle),
                record.topic()
            );
        }
    }
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

/// Receipts name documents and a registry number: on Kafka they travel
/// encrypted for the origin, the first one and those sent again from the
/// destination's store alike. What the origin's inbox topic holds, read
/// with a plain consumer, shows none of it; the origin still holds the
/// signed receipt in clear, and it verifies through GetReceipt and
/// GetReceiptChain and on its own with the signer's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_cross_kafka_encrypted_and_still_verify() {
    let federation = Federation::with_settings(
        "sealed-receipts",
        &["senamhi", "oefa"],
        "\n[transfer]\nreceipt_timeout_secs = 1\n",
    );
    // oefa's node is down: senamhi sends the transfer again and again, so
    // oefa answers the first copy with its receipt and each later copy with
    // the receipt sent again from its store.
    let senamhi = federation.start("senamhi").await;
    let mut origin = senamhi.client.clone();
    let doc = Doc::new("Informe-Quebrada-Huaycoloro.pdf", 2_000, 5);
    let filed = submit(
        &mut origin,
        header("oefa", "Denuncia"),
        std::slice::from_ref(&doc),
    )
    .await
    .unwrap();
    let code = filed.tracking_code.clone();
    let store = federation.store_path("senamhi");
    eventually(
        "the transfer to be sent three times (attempts)",
        async || {
            let attempts = count_rows(&store, "SELECT COALESCE(MAX(attempts), 0) FROM outbox");
            if attempts >= 3 { Ok(()) } else { Err(attempts) }
        },
    )
    .await;
    let mut oefa = federation.start("oefa").await;
    wait_for_status(&mut origin, &code, FilingStatus::Delivered, PATIENCE).await;
    settled(&federation, &["senamhi", "oefa"]).await;
    let registry_number = get(&mut oefa.client, &code).await.unwrap().registry_number;

    let receipt = origin
        .get_receipt(GetReceiptRequest {
            tracking_code: code.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(receipt.verified, "{receipt:?}");
    let signed = receipt.receipt.clone().unwrap();
    assert_eq!(signed.registry_number, registry_number);
    assert_eq!(signed.documents[0].name, doc.name);
    let envelope = Envelope::decode(receipt.signed_envelope.as_slice()).unwrap();
    assert_eq!(envelope.message_type, MessageType::Receipt as i32);
    let key = ed25519_dalek::VerifyingKey::from_bytes(
        receipt.signer_public_key.as_slice().try_into().unwrap(),
    )
    .unwrap();
    ecointegra_broker::envelope::verify_signature(&envelope, &key)
        .expect("anyone with oefa's key verifies the stored receipt");
    let chain = origin
        .get_receipt_chain(GetReceiptRequest {
            tracking_code: code.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(chain.verified);
    assert_eq!(
        chain.receipts,
        std::slice::from_ref(&receipt.signed_envelope)
    );

    // Every record of senamhi's inbox: senamhi has applied them all.
    let inbox = federation.topic_inbox("senamhi");
    let total = count_rows(
        &store,
        &format!("SELECT COALESCE(SUM(next_offset), 0) FROM inbox_offsets WHERE topic = '{inbox}'"),
    ) as usize;
    let records = read_topic(&inbox, total, Duration::from_secs(30));
    assert_eq!(records.len(), total);
    assert!(
        total >= 2,
        "the receipt, and at least one sent again from oefa's store ({total} records)"
    );
    let digest = hex::decode(doc.sha256_hex()).unwrap();
    let needles: [(&str, &[u8]); 3] = [
        ("the registry number", registry_number.as_bytes()),
        ("the document's name", doc.name.as_bytes()),
        ("the document's SHA-256", &digest),
    ];
    for record in &records {
        let bytes = record.payload().unwrap();
        for (what, needle) in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{what} appears in clear on {inbox}"
            );
        }
        let sealed = Envelope::decode(bytes).unwrap();
        assert_eq!(
            sealed.message_type,
            MessageType::SealedReceipt as i32,
            "{}",
            sealed.message_id
        );
    }
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_senders_and_impostors_go_to_the_dlq_and_a_new_institution_is_picked_up_without_restart()
 {
    let mut federation = Federation::new("trust", &["senamhi", "oefa", "minam"]);
    let iiap = federation.add_unlisted("iiap");
    let mut oefa = federation.start("oefa").await;
    let inbox = federation.topic_inbox("oefa");
    let oefa_key = federation.identity("oefa").encryption_public_key();

    // An institution the directory does not list.
    let stranger = Sealer::new("iiap", iiap.clone());
    let notice = Notice {
        transfer_id: "t-x".into(),
        tracking_code: "IIAP-2026-X".into(),
        ..Default::default()
    };
    let sealed = stranger
        .seal_encrypted(
            "iiap-1".into(),
            MessageType::Notice,
            "oefa",
            &oefa_key,
            &notice.encode_to_vec(),
        )
        .unwrap();
    produce_raw(&inbox, "t-x", &sealed.encode_to_vec()).await;
    // minam's key, claiming to be senamhi.
    let impostor = Sealer::new("senamhi", federation.identity("minam"));
    let forged = impostor
        .seal_encrypted(
            "fake-1".into(),
            MessageType::Notice,
            "oefa",
            &oefa_key,
            &notice.encode_to_vec(),
        )
        .unwrap();
    produce_raw(&inbox, "t-y", &forged.encode_to_vec()).await;
    assert_eq!(dead_letters(&federation, "oefa", 2).len(), 2);
    // A directory entry the authority did not sign.
    let rogue = Authority::new(SigningIdentity::generate());
    federation
        .publish_entry(&rogue.sign(&entry_for("iiap", "IIAP", &iiap, 9)))
        .await;

    let letters = dead_letters(&federation, "oefa", 3);
    let mut seen: Vec<(String, String)> = letters
        .iter()
        .map(|l| (l.reason_code.clone(), l.claimed_sender.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("directory".to_owned(), String::new()),
            ("signature".to_owned(), "senamhi".to_owned()),
            ("unknown-sender".to_owned(), "iiap".to_owned()),
        ],
        "{:?}",
        letters.iter().map(|l| &l.reason).collect::<Vec<_>>()
    );

    // The authority signs iiap in: oefa accepts iiap's filings without a restart.
    federation
        .publish_entry(
            &federation
                .authority()
                .sign(&entry_for("iiap", "IIAP", &iiap, 1)),
        )
        .await;
    let mut iiap_node = federation.start("iiap").await;
    let answer = submit(
        &mut iiap_node.client,
        header("oefa", "Desde la Amazonía"),
        &[Doc::new("a.pdf", 5000, 4)],
    )
    .await
    .unwrap();
    wait_for_status(
        &mut iiap_node.client,
        &answer.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    let (sha, _) = download_sha256(&mut oefa.client, &answer.tracking_code, 0).await;
    assert_eq!(sha, answer.documents[0].sha256);
    oefa.shutdown().await;
    iiap_node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_institution_is_refused_by_its_peers_and_by_its_own_node() {
    let federation = Federation::new("suspend", &["senamhi", "oefa"]);
    let [mut senamhi, oefa] = federation.start_all().await;
    let before = deliver_sample(&mut senamhi.client, "oefa").await;

    let mut entry = entry_for("senamhi", "SENAMHI", &federation.identity("senamhi"), 2);
    entry.status = EntryStatus::Suspended as i32;
    federation
        .publish_entry(&federation.authority().sign(&entry))
        .await;

    // Its own node refuses new submissions once the entry is in force.
    eventually(
        "senamhi's node to refuse a submission as suspended",
        async || match submit(
            &mut senamhi.client,
            header("oefa", "Después"),
            &[Doc::new("b.pdf", 10, 2)],
        )
        .await
        {
            Err(status)
                if status.code() == Code::FailedPrecondition
                    && status.message().contains("suspended") =>
            {
                Ok(())
            }
            other => Err(other.map(|filed| filed.tracking_code)),
        },
    )
    .await;
    // Its messages go to oefa's DLQ.
    let sealer = Sealer::new("senamhi", federation.identity("senamhi"));
    let notice = Notice {
        transfer_id: before.transfer_id.clone(),
        ..Default::default()
    };
    let sealed = sealer
        .seal_encrypted(
            "late-1".into(),
            MessageType::Notice,
            "oefa",
            &federation.identity("oefa").encryption_public_key(),
            &notice.encode_to_vec(),
        )
        .unwrap();
    // oefa has the suspension in force too: its store holds senamhi's entry
    // of version 2, which it records as it applies the entry.
    let entry_version = "SELECT COALESCE(MAX(version), 0) FROM directory_entries \
                         WHERE institution_id = 'senamhi'";
    eventually(
        "oefa to apply senamhi's entry of version 2 (version)",
        async || {
            let version = count_rows(&federation.store_path("oefa"), entry_version);
            if version == 2 { Ok(()) } else { Err(version) }
        },
    )
    .await;
    produce_raw(
        &federation.topic_inbox("oefa"),
        "late",
        &sealed.encode_to_vec(),
    )
    .await;
    let letters = dead_letters(&federation, "oefa", 1);
    assert_eq!(letters[0].reason_code, "sender-inactive", "{letters:#?}");
    assert!(letters[0].reason.contains("suspended"));
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_mid_flight_still_delivers() {
    let federation = Federation::new("rotation", &["senamhi", "oefa"]);
    // oefa's node is down: senamhi's transfer waits in oefa's inbox, signed
    // with senamhi's first key.
    let senamhi = federation.start("senamhi").await;
    let mut origin = senamhi.client.clone();
    let docs = [Doc::new("antes-de-rotar.pdf", 700_000, 8)];
    let in_flight = submit(&mut origin, header("oefa", "En vuelo"), &docs)
        .await
        .unwrap();
    wait_for_status(
        &mut origin,
        &in_flight.tracking_code,
        FilingStatus::Sent,
        PATIENCE,
    )
    .await;
    senamhi.shutdown().await;

    // senamhi rotates: a new key, the old one retired with an hour's grace.
    federation
        .rotate_key("senamhi", 2, ecointegra_broker::now_ms() + 3_600_000)
        .await;

    let [senamhi, oefa] = federation.start_all().await;
    let (mut origin, mut destination) = (senamhi.client.clone(), oefa.client.clone());
    wait_for_status(
        &mut origin,
        &in_flight.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    let (sha, _) = download_sha256(&mut destination, &in_flight.tracking_code, 0).await;
    assert_eq!(
        sha,
        docs[0].sha256_hex(),
        "signed with the old key, delivered after the rotation"
    );

    let after = submit(
        &mut origin,
        header("oefa", "Con la nueva clave"),
        &[Doc::new("n.pdf", 10, 9)],
    )
    .await
    .unwrap();
    wait_for_status(
        &mut origin,
        &after.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

/// A filing delivered senamhi → oefa, its receipt signed with oefa's first
/// key; then oefa's key is rotated through the signed directory, the old key
/// retired there and then; then oefa forwards the filing to minam. minam
/// verifies the receipt the forward carries with the key oefa had when it
/// signed, so the forward is delivered, and the chain verifies at every node
/// holding it, its first receipt still under oefa's old key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filing_receipted_before_a_key_rotation_is_forwarded_after_it_and_its_chain_verifies() {
    let federation = Federation::new("rotation-chain", &["senamhi", "oefa", "minam"]);
    let [senamhi, oefa, mut minam] = federation.start_all().await;
    let mut origin = senamhi.client.clone();
    let filed = deliver_sample(&mut origin, "oefa").await;
    let code = filed.tracking_code.clone();
    // Everything oefa signed with its first key is out and applied.
    settled(&federation, &["senamhi", "oefa", "minam"]).await;
    let tracking = format!("{}.tracking", federation.prefix);
    for id in ["senamhi", "oefa", "minam"] {
        caught_up(&federation, id, &tracking).await;
    }
    oefa.shutdown().await;

    let old = federation
        .rotate_key("oefa", 2, ecointegra_broker::now_ms())
        .await;
    let new = federation.identity("oefa");
    for id in ["senamhi", "minam"] {
        federation.directory_version(id, "oefa", 2).await;
    }
    let mut oefa = federation.start("oefa").await;
    oefa.client
        .receive_filing(ReceiveFilingRequest {
            tracking_code: code.clone(),
            action_id: "rec-1".into(),
            registry_number: "OEFA-INT-0001".into(),
            office: "Mesa de partes".into(),
        })
        .await
        .unwrap();
    oefa.client
        .forward_filing(ForwardFilingRequest {
            tracking_code: code.clone(),
            action_id: "fwd-1".into(),
            destination: "minam".into(),
            note: "Competencia del ministerio".into(),
        })
        .await
        .unwrap();
    let at_minam = wait_for_filing(&mut minam.client, &code, "forwarded to minam", |f| {
        f.status == FilingStatus::Delivered as i32 && f.direction == Direction::Inbound as i32
    })
    .await;
    assert_eq!(at_minam.origin, "oefa");
    assert_eq!(at_minam.documents[0].sha256, sample_doc().sha256_hex());

    // The chain: hop 1 signed by oefa's retired key, hop 2 by minam.
    let chain_at = async |client: &mut Client, hops: usize| {
        eventually(
            &format!("a chain of {hops} receipts"),
            async || match client
                .get_receipt_chain(GetReceiptRequest {
                    tracking_code: code.clone(),
                })
                .await
            {
                Ok(chain) if chain.get_ref().receipts.len() == hops => Ok(chain.into_inner()),
                other => Err(other.map(|c| c.into_inner().receipts.len())),
            },
        )
        .await
    };
    for client in [&mut minam.client, &mut oefa.client] {
        let chain = chain_at(client, 2).await;
        assert!(chain.verified, "the chain across the rotation verifies");
        let first = Envelope::decode(chain.receipts[0].as_slice()).unwrap();
        assert_eq!(first.sender, "oefa");
        ecointegra_broker::envelope::verify_signature(&first, &old.public_key())
            .expect("hop 1 is signed with oefa's old key");
        assert!(ecointegra_broker::envelope::verify_signature(&first, &new.public_key()).is_err());
    }
    // senamhi's copy of the first receipt still verifies, with the old key.
    let chain = chain_at(&mut origin, 1).await;
    assert!(chain.verified);
    let receipt = origin
        .get_receipt(GetReceiptRequest {
            tracking_code: code.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(receipt.verified, "{receipt:?}");
    assert_eq!(receipt.signer_public_key, old.public_key().as_bytes());
    settled(&federation, &["oefa", "minam"]).await;
    assert_eq!(
        count_rows(
            &federation.store_path("minam"),
            "SELECT COUNT(*) FROM dead_letters"
        ),
        0,
        "minam dead-lettered nothing"
    );
    senamhi.shutdown().await;
    oefa.shutdown().await;
    minam.shutdown().await;
}

/// A test CA and certificates it issues (rcgen).
mod pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

    pub struct Ca {
        issuer: CertifiedIssuer<'static, KeyPair>,
    }

    pub struct Issued {
        pub cert_pem: String,
        pub key_pem: String,
    }

    impl Ca {
        pub fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            Self {
                issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
            }
        }

        pub fn pem(&self) -> String {
            self.issuer.pem()
        }

        pub fn issue(&self, common_name: &str, names: &[&str]) -> Issued {
            let mut params =
                CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            Issued {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_allowed_what_it_may_do_and_refused_the_rest() {
    use ecointegra_proto::v1::{GetFilingRequest, StreamInboxRequest, TrackRequest};
    let auth = format!(
        "\n[auth]\nanonymous_role = \"public\"\n{}{}{}",
        token_entry("sgd", "system", "tok-system"),
        token_entry("mesa", "clerk", "tok-clerk"),
        token_entry("noc", "operator", "tok-operator")
    );
    let federation = Federation::with_settings("roles", &["senamhi", "oefa"], &auth);
    let senamhi = federation.start("senamhi").await;
    let addr = senamhi.grpc_addr();
    let get = |code: &str| GetFilingRequest {
        tracking_code: code.into(),
        ..Default::default()
    };

    // system: submit, stream the inbox, read.
    let mut system = client_as(addr, Some("tok-system")).await;
    let filed = system
        .submit_filing(parts(
            header("oefa", "Por rol"),
            &[Doc::new("a.pdf", 10, 1)],
        ))
        .await
        .unwrap()
        .into_inner();
    system.get_filing(get(&filed.tracking_code)).await.unwrap();
    system
        .stream_inbox(StreamInboxRequest::default())
        .await
        .unwrap();

    // clerk: read and submit, but not the system's inbox stream.
    let mut clerk = client_as(addr, Some("tok-clerk")).await;
    clerk.get_filing(get(&filed.tracking_code)).await.unwrap();
    let err = clerk
        .stream_inbox(StreamInboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // operator and public: no filings.
    for token in [Some("tok-operator"), None] {
        let mut other = client_as(addr, token).await;
        let err = other
            .get_filing(get(&filed.tracking_code))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{token:?}: {err:?}");
        let err = other
            .submit_filing(parts(header("oefa", "x"), &[Doc::new("a.pdf", 10, 1)]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{token:?}: {err:?}");
    }
    // public may track.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut tracking =
        ecointegra_proto::v1::tracking_service_client::TrackingServiceClient::new(channel);
    tracking
        .track(TrackRequest {
            tracking_code: filed.tracking_code.clone(),
            verification_code: filed.verification_code.clone(),
        })
        .await
        .unwrap();
    // An unknown token is refused outright.
    let mut wrong = client_as(addr, Some("tok-guessed")).await;
    assert_eq!(
        wrong
            .get_filing(get(&filed.tracking_code))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    senamhi.shutdown().await;
}

/// Calls GetFiling over `endpoint`: `Ok` with the code the node answered
/// with, or `Err` with the connection's failure and every cause of it, when
/// the call never reached the node's services.
async fn get_filing_over(endpoint: tonic::transport::Endpoint) -> Result<Code, String> {
    use ecointegra_proto::v1::GetFilingRequest;
    use ecointegra_proto::v1::filing_service_client::FilingServiceClient;
    fn causes(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {}", causes(&e)))?;
    let answer = FilingServiceClient::new(channel)
        .get_filing(GetFilingRequest {
            tracking_code: "OEFA-2026-NOPE".into(),
            ..Default::default()
        })
        .await;
    match answer {
        Ok(_) => Ok(Code::Ok),
        // A status the transport made up has the transport's error as its source.
        Err(status) if std::error::Error::source(&status).is_some() => {
            Err(format!("call: {}", causes(&status)))
        }
        Err(status) => Ok(status.code()),
    }
}

/// Completes a TLS handshake with the node at `port` as a client presenting
/// `identity`, sending nothing after it, and reads: in TLS 1.3 the server
/// judges the client's certificate after the handshake, and its verdict is
/// the first thing the client reads. (Through a gRPC client the same alert
/// can be lost: the server closes with the client's request unread, and the
/// reset that follows may discard the alert.)
async fn tls_verdict(
    port: u16,
    ca: &pki::Ca,
    identity: Option<&pki::Issued>,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let config = ClientConfig::builder_with_provider(crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => config
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => config.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tls.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("the server neither refused nor closed"))??;
    Ok(answer)
}

/// The TLS alert a [`tls_verdict`] ended with.
fn alert_of(verdict: &std::io::Result<Vec<u8>>) -> Option<AlertDescription> {
    let error = verdict.as_ref().err()?.get_ref()?;
    match error.downcast_ref::<tokio_rustls::rustls::Error>()? {
        tokio_rustls::rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

/// Sends the HTTP/2 connection preface in plaintext to the node at `port`,
/// and returns every byte it answers with until it closes the connection.
async fn plaintext_answer(port: u16) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("the server did not close the connection"))??;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_mtls_refuses_a_missing_or_foreign_client_certificate() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let ca = pki::Ca::new("Sector CA");
    let rogue = pki::Ca::new("Rogue CA");
    let server = ca.issue("oefa-node", &["localhost", "127.0.0.1"]);
    let good = ca.issue("sgd.oefa.gob.pe", &[]);
    let foreign = rogue.issue("sgd.oefa.gob.pe", &[]);

    let federation = Federation::with_settings(
        "mtls",
        &["oefa"],
        "\n[grpc.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key.pem\"\nclient_ca_file = \"ca.pem\"\n\
         [auth]\nanonymous_role = \"public\"\n[[auth.certificates]]\nsubject = \"CN=sgd.oefa.gob.pe\"\nrole = \"clerk\"\n",
    );
    // The config's [grpc.tls] table must follow [grpc]: rewrite it in place.
    let path = federation.config_path("oefa");
    let text = std::fs::read_to_string(&path).unwrap();
    let tls = "[grpc.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key.pem\"\nclient_ca_file = \"ca.pem\"\n";
    std::fs::write(
        &path,
        text.replace(tls, "")
            .replace("[kafka]", &format!("{tls}\n[kafka]")),
    )
    .unwrap();
    std::fs::write(federation.root.join("server.pem"), &server.cert_pem).unwrap();
    std::fs::write(federation.root.join("server.key.pem"), &server.key_pem).unwrap();
    std::fs::write(federation.root.join("ca.pem"), ca.pem()).unwrap();
    let node = federation.start("oefa").await;
    let port = node.grpc_addr().port();
    let over_tls = |identity: Option<&pki::Issued>| {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca.pem()))
            .domain_name("localhost");
        if let Some(id) = identity {
            tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
        }
        Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
    };

    assert_eq!(
        get_filing_over(over_tls(Some(&good))).await,
        Ok(Code::NotFound),
        "a certificate of the sector CA is accepted, with the clerk role \
         (which may look the filing up: it does not exist)"
    );
    // Refused by TLS, before any gRPC answer (an anonymous caller would be
    // answered PERMISSION_DENIED, which is not this refusal), and for the
    // reason a TLS server gives.
    for (case, identity, alert) in [
        (
            "no client certificate",
            None,
            AlertDescription::CertificateRequired,
        ),
        (
            "a certificate of another CA",
            Some(&foreign),
            AlertDescription::UnknownCA,
        ),
    ] {
        let answer = get_filing_over(over_tls(identity)).await;
        assert!(answer.is_err(), "{case}: answered {answer:?}");
        let verdict = tls_verdict(port, &ca, identity).await;
        assert_eq!(alert_of(&verdict), Some(alert), "{case}: {verdict:?}");
    }
    // Plaintext is refused too: the node answers the HTTP/2 preface with one
    // fatal TLS alert record (content type 21, level 2) and closes.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    let answer = get_filing_over(plain).await;
    assert!(answer.is_err(), "plaintext: answered {answer:?}");
    let answer = plaintext_answer(port).await.unwrap();
    assert!(
        answer.len() == 7 && answer[0] == 21 && answer[5] == 2,
        "plaintext: the node answered {answer:?}, not a fatal TLS alert"
    );
    node.shutdown().await;
}

/// An idempotency key belongs to its caller: a second system that guesses
/// another's key ("1") files a filing of its own and learns nothing of the
/// first one's codes, while each caller's own retry still gets its first
/// answer back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_the_callers_own() {
    let auth = format!(
        "\n[auth]\nanonymous_role = \"public\"\n{}{}",
        token_entry("sgd-a", "system", "tok-a"),
        token_entry("sgd-b", "system", "tok-b")
    );
    let federation = Federation::with_settings("idemscope", &["senamhi", "oefa"], &auth);
    let senamhi = federation.start("senamhi").await;
    let addr = senamhi.grpc_addr();
    let submit_as = async |token: &str, subject: &str| {
        let mut h = header("oefa", subject);
        h.idempotency_key = "1".into();
        client_as(addr, Some(token))
            .await
            .submit_filing(parts(h, &[Doc::new("a.pdf", 10, 1)]))
            .await
            .unwrap()
            .into_inner()
    };
    let first = submit_as("tok-a", "De A").await;
    let guessed = submit_as("tok-b", "De B").await;
    assert_ne!(guessed.tracking_code, first.tracking_code);
    assert_ne!(guessed.verification_code, first.verification_code);
    let again = submit_as("tok-a", "De A").await;
    assert_eq!(again.tracking_code, first.tracking_code);
    assert_eq!(again.verification_code, first.verification_code);
    let again = submit_as("tok-b", "De B").await;
    assert_eq!(again.tracking_code, guessed.tracking_code);
    assert_eq!(
        count_rows(
            &federation.store_path("senamhi"),
            "SELECT COUNT(*) FROM filings"
        ),
        2
    );
    senamhi.shutdown().await;
}

/// A document name that would read as another (a right-to-left override
/// turning `fdp.exe` around, a zero-width space) is refused naming the
/// field; one typed with a combining accent is stored in its composed form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_names_cannot_disguise_themselves() {
    let federation = Federation::new("names", &["senamhi", "oefa"]);
    let senamhi = federation.start("senamhi").await;
    let mut client = senamhi.client.clone();
    for disguised in ["factura\u{202E}fdp.exe", "carta\u{200B}.pdf"] {
        let refused = submit(
            &mut client,
            header("oefa", "Disfrazado"),
            &[Doc::new(disguised, 10, 1)],
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().contains("documents[0].name"),
            "{refused:?}"
        );
    }
    let filed = submit(
        &mut client,
        header("oefa", "Con tilde"),
        &[Doc::new("resolucio\u{301}n.pdf", 10, 1)],
    )
    .await
    .unwrap();
    let stored = get(&mut client, &filed.tracking_code).await.unwrap();
    assert_eq!(stored.documents[0].name, "resolución.pdf");
    senamhi.shutdown().await;
}
