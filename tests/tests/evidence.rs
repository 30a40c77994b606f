//! Evidence bundles, exported by a node and checked offline by the real
//! `ecointegra evidence verify` with nothing but the authority's public key:
//! a bundle that verifies; each kind of tampering caught and named; a bundle
//! exported before a key rotation still verifying after it.

use ecointegra_broker::directory::entry_for;
use ecointegra_broker::keys::SigningIdentity;
use ecointegra_proto::v1::{
    Direction, Envelope, ExportEvidenceRequest, FilingStatus, ForwardFilingRequest, Receipt,
    ReceiveFilingRequest, RetiredKey,
};
use ecointegra_tests::*;
use prost::Message;
use std::io::{Read, Write};
use std::path::Path;

async fn export(client: &mut Client, code: &str, with_documents: bool) -> Vec<u8> {
    let mut stream = client
        .export_evidence(ExportEvidenceRequest {
            tracking_code: code.into(),
            with_documents,
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(piece) = stream.message().await.unwrap() {
        bytes.extend_from_slice(&piece.data);
    }
    bytes
}

/// Runs `ecointegra evidence verify`: (exit success, what it printed).
fn verify(dir: &Path, name: &str, bundle: &[u8], authority: &str, lang: &str) -> (bool, String) {
    verify_evidence(&dir.join(name), bundle, authority, lang)
}

/// The entries of a bundle, in order.
fn entries(bundle: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bundle)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).unwrap();
            let name = entry.name().unwrap().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// The bundle with `edit` applied to each entry (None drops it).
fn rewrite(bundle: &[u8], edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries(bundle) {
        if let Some(bytes) = edit(&name, bytes) {
            zip.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(&bytes).unwrap();
        }
    }
    zip.finish().unwrap().into_inner()
}

fn index(bundle: &[u8]) -> serde_json::Value {
    let (_, bytes) = entries(bundle)
        .into_iter()
        .find(|(n, _)| n == "index.json")
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_bundles_verify_offline_and_every_kind_of_tampering_is_named() {
    let federation = Federation::new("evidence", &["senamhi", "oefa", "minam"]);
    let [mut senamhi, mut oefa, mut minam] = federation.start_all().await;
    let authority = hex::encode(federation.authority().public_key().as_bytes());
    let dir = tempdir("evidence-bundles");

    // senamhi files to oefa; oefa receives it and forwards it to minam.
    let doc = Doc::new("denuncia.pdf", 300_000, 7);
    let filed = deliver(
        &mut senamhi.client,
        header("oefa", "Denuncia"),
        std::slice::from_ref(&doc),
    )
    .await;
    let code = filed.tracking_code.clone();
    wait_for_filing(&mut oefa.client, &code, "delivered at oefa", |f| {
        f.status == FilingStatus::Delivered as i32 && f.direction == Direction::Inbound as i32
    })
    .await;
    oefa.client
        .receive_filing(ReceiveFilingRequest {
            tracking_code: code.clone(),
            action_id: "ev-rec".into(),
            registry_number: "OEFA-INT-0100".into(),
            office: "Mesa de partes".into(),
        })
        .await
        .unwrap();
    oefa.client
        .forward_filing(ForwardFilingRequest {
            tracking_code: code.clone(),
            action_id: "ev-fwd".into(),
            destination: "minam".into(),
            note: "Competencia del ministerio".into(),
        })
        .await
        .unwrap();
    wait_for_filing(&mut minam.client, &code, "delivered at minam", |f| {
        f.status == FilingStatus::Delivered as i32 && f.direction == Direction::Inbound as i32
    })
    .await;
    // minam's own DELIVERED step is in its timeline before it is exported.
    let delivered_at_minam = format!(
        "SELECT COUNT(*) FROM tracking_events WHERE tracking_code = '{code}' \
         AND institution = 'minam' AND envelope IS NOT NULL"
    );
    eventually("minam's signed DELIVERED step", async || {
        match count_rows(&federation.store_path("minam"), &delivered_at_minam) {
            0 => Err(()),
            _ => Ok(()),
        }
    })
    .await;

    // The holder's bundle, with documents: two hops, and it verifies.
    let bundle = export(&mut minam.client, &code, true).await;
    let listed = index(&bundle);
    assert_eq!(listed["tracking_code"], code.as_str());
    assert_eq!(listed["receipts"].as_array().unwrap().len(), 2);
    assert_eq!(listed["documents"].as_array().unwrap().len(), 1);
    assert_eq!(listed["documents"][0]["sha256"], doc.sha256_hex().as_str());
    let (ok, text) = verify(&dir, "whole.zip", &bundle, &authority, "es");
    assert!(ok, "{text}");
    assert!(
        text.contains("Veredicto: la evidencia es íntegra"),
        "{text}"
    );
    assert!(text.contains("Constancia 2: minam recibió"), "{text}");
    assert!(text.contains("Documento denuncia.pdf: íntegro"), "{text}");
    let (ok, text) = verify(&dir, "whole-en.zip", &bundle, &authority, "en");
    assert!(
        ok && text.contains("Verdict: the evidence is intact"),
        "{text}"
    );
    // Without documents, for whoever may see the steps but not the content.
    let light = export(&mut minam.client, &code, false).await;
    assert!(index(&light)["documents"].as_array().unwrap().is_empty());
    assert!(verify(&dir, "light.zip", &light, &authority, "es").0);

    // A byte of a document.
    let tampered = rewrite(&bundle, |name, mut bytes| {
        if name.starts_with("documents/") {
            bytes[1000] ^= 1;
        }
        Some(bytes)
    });
    let (ok, text) = verify(&dir, "document.zip", &tampered, &authority, "es");
    assert!(!ok, "{text}");
    assert!(
        text.contains("✗ Documento denuncia.pdf: su SHA-256 es"),
        "{text}"
    );
    assert!(text.contains("la evidencia NO es íntegra: 1 de"), "{text}");

    // A receipt's field: the registry number of hop 1.
    let tampered = rewrite(&bundle, |name, bytes| {
        if name != "receipts/hop-01.envelope" {
            return Some(bytes);
        }
        let mut envelope = Envelope::decode(bytes.as_slice()).unwrap();
        let mut receipt = Receipt::decode(envelope.payload.as_ref()).unwrap();
        receipt.registry_number = "OEFA-2026-999999".into();
        envelope.payload = receipt.encode_to_vec().into();
        Some(envelope.encode_to_vec())
    });
    let (ok, text) = verify(&dir, "receipt.zip", &tampered, &authority, "en");
    assert!(!ok, "{text}");
    assert!(text.contains("✗ Receipt 1: not valid"), "{text}");
    // Receipt 2 names the digest of the genuine receipt 1.
    assert!(text.contains("✗ Chain: receipt 2 does not link"), "{text}");

    // A removed hop: the last receipt, gone from the bundle and its index.
    let tampered = rewrite(&bundle, |name, bytes| match name {
        "receipts/hop-02.envelope" => None,
        "index.json" => {
            let mut index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            index["receipts"].as_array_mut().unwrap().pop();
            Some(serde_json::to_vec(&index).unwrap())
        }
        _ => Some(bytes),
    });
    let (ok, text) = verify(&dir, "hop.zip", &tampered, &authority, "es");
    assert!(!ok, "{text}");
    assert!(
        text.contains("✗ Entrega del salto 2 a minam: falta su constancia"),
        "{text}"
    );

    // A directory entry not signed by the authority: oefa's, re-signed by
    // someone else.
    let rogue = ecointegra_broker::directory::Authority::new(SigningIdentity::generate());
    let forged = rogue
        .sign(&entry_for("oefa", "OEFA", &federation.identity("oefa"), 9))
        .encode_to_vec();
    let tampered = rewrite(&bundle, |name, bytes| {
        Some(if name == "directory/oefa.entry" {
            forged.clone()
        } else {
            bytes
        })
    });
    let (ok, text) = verify(&dir, "directory.zip", &tampered, &authority, "en");
    assert!(!ok, "{text}");
    assert!(
        text.contains("✗ Directory: directory/oefa.entry is not valid: the entry is not signed by the sector authority"),
        "{text}"
    );
    assert!(
        text.contains("✗ Receipt 1: not valid: it is signed by oefa, who is not in the directory"),
        "{text}"
    );

    // A receipt signed with a key retired before it was signed: an entry of
    // oefa's, genuinely the authority's, that retired the key receipt 1 is
    // signed with a second before it signed.
    let signed_at = {
        let (_, bytes) = entries(&bundle)
            .into_iter()
            .find(|(n, _)| n == "receipts/hop-01.envelope")
            .unwrap();
        let envelope = Envelope::decode(bytes.as_slice()).unwrap();
        let receipt = Receipt::decode(envelope.payload.as_ref()).unwrap();
        envelope.created_at_ms.max(receipt.received_at_ms)
    };
    let mut retiring = entry_for("oefa", "OEFA", &SigningIdentity::generate(), 9);
    retiring.retired_signing_keys.push(RetiredKey {
        signing_key: federation.identity("oefa").public_key().as_bytes().to_vec(),
        accept_until_ms: signed_at - 1000,
    });
    let retiring = federation.authority().sign(&retiring).encode_to_vec();
    let tampered = rewrite(&bundle, |name, bytes| {
        Some(if name == "directory/oefa.entry" {
            retiring.clone()
        } else {
            bytes
        })
    });
    let (ok, text) = verify(&dir, "retired.zip", &tampered, &authority, "en");
    assert!(!ok, "{text}");
    assert!(text.contains("with a key oefa retired at"), "{text}");

    // A key rotation after the export: oefa's key retired from now on. The
    // bundle exported before still verifies, and so does one exported after,
    // which carries the new entry.
    federation
        .rotate_key("oefa", 2, ecointegra_broker::now_ms())
        .await;
    federation.directory_version("minam", "oefa", 2).await;
    assert!(verify(&dir, "before-rotation.zip", &bundle, &authority, "es").0);
    let after = export(&mut minam.client, &code, true).await;
    let (ok, text) = verify(&dir, "after-rotation.zip", &after, &authority, "es");
    assert!(ok, "{text}");
    assert!(text.contains("la entrada de oefa (versión 2)"), "{text}");

    // Not held here: nothing to export.
    let missing = minam
        .client
        .export_evidence(ExportEvidenceRequest {
            tracking_code: "OEFA-2026-000000".into(),
            with_documents: false,
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    drop(senamhi);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
