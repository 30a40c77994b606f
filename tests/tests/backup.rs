//! A node backed up while filings arrive, its data directory destroyed,
//! restored from the backup and started: it reads on from the positions the
//! backup held, so every filing delivered since is there again, once, with
//! its documents, its receipt and the citizen's timeline; the backup set
//! copies each document once and `backup verify` catches a damaged one.

use ecointegra_proto::v1::FilingStatus;
use ecointegra_tests::*;
use std::path::Path;
use std::process::{Command, Output};

fn cli(args: &[&str], dirs: &[&Path]) -> Output {
    Command::new(binary())
        .args(args)
        .args(dirs)
        .output()
        .unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Files a filing of one distinct document at senamhi for oefa and waits for
/// its receipt. Filings 1 and 4 carry a small document, which oefa keeps
/// inside its store (a snapshot carries it: no file in the set); the others
/// a document kept as a file.
async fn deliver(senamhi: &mut Client, n: u64) -> (String, String, Doc) {
    let size = if n == 1 || n == 4 { 20_000 } else { 40_000 };
    let doc = Doc::new(&format!("anexo-{n}.pdf"), size + n, 100 + n);
    let filed = submit(
        senamhi,
        header("oefa", &format!("Respaldo {n}")),
        std::slice::from_ref(&doc),
    )
    .await
    .unwrap();
    wait_for_status(
        senamhi,
        &filed.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    (filed.tracking_code, filed.verification_code, doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_a_backup_catches_up_and_applies_nothing_twice() {
    let federation = Federation::new("backup", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.start_all().await;
    let mut at_senamhi = senamhi.client.clone();
    let set = federation.root.join("respaldos");
    let config = federation.config_path("oefa");

    // Two filings, then a backup while the node runs. Once oefa's first
    // receipt and tracking events have reached senamhi, senamhi knows oefa
    // reads small filings inside their manifests: the second one goes so.
    let mut filed = Vec::new();
    for n in 0..2 {
        filed.push(deliver(&mut at_senamhi, n).await);
        settled(&federation, &["senamhi", "oefa"]).await;
    }
    let first = ok(cli(
        &["backup", "--config", config.to_str().unwrap(), "--out"],
        &[&set],
    ));
    assert!(
        first.contains("1 document file (1 copied, 0 already in the set)"),
        "{first}"
    );
    let snapshot = std::fs::read_dir(&set)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("manifest.json").exists())
        .expect("a snapshot with a manifest");

    // Three more, and a second backup: it copies only the new documents.
    for n in 2..5 {
        filed.push(deliver(&mut at_senamhi, n).await);
    }
    let second = ok(cli(
        &["backup", "--config", config.to_str().unwrap(), "--out"],
        &[&set],
    ));
    assert!(
        second.contains("3 document files (2 copied, 1 already in the set)"),
        "{second}"
    );
    let verified = ok(cli(&["backup", "verify"], &[&set]));
    assert_eq!(
        verified.lines().filter(|l| l.starts_with("ok: ")).count(),
        2,
        "{verified}"
    );

    // Two more after the last backup; then oefa's data directory is lost.
    for n in 5..7 {
        filed.push(deliver(&mut at_senamhi, n).await);
    }
    oefa.shutdown().await;
    let data_dir = federation.data_dir("oefa");
    std::fs::remove_dir_all(&data_dir).unwrap();

    // Restoring into a directory that is not empty is refused.
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("stray"), b"x").unwrap();
    let refused = cli(
        &["restore", "--config", config.to_str().unwrap()],
        &[&snapshot],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not empty"),
        "{refused:?}"
    );
    std::fs::remove_dir_all(&data_dir).unwrap();

    // The first snapshot, restored: it knows two filings (the second's
    // document inside the store).
    let restored = ok(cli(
        &["restore", "--config", config.to_str().unwrap()],
        &[&snapshot],
    ));
    assert!(restored.contains("1 document file,"), "{restored}");
    assert_eq!(inbound_count(&federation, "oefa"), 2);

    // Started, it reads on from there: all seven, once each, whole.
    let oefa = federation.start("oefa").await;
    let mut at_oefa = oefa.client.clone();
    eventually(
        "oefa to hold all seven filings again",
        async || match inbound_count(&federation, "oefa") {
            7 => Ok(()),
            n => Err(n),
        },
    )
    .await;
    let store = federation.store_path("oefa");
    for (code, verification, doc) in &filed {
        let filing = wait_for_filing(&mut at_oefa, code, "held at oefa", |f| {
            f.status == FilingStatus::Delivered as i32
        })
        .await;
        assert_eq!(filing.documents[0].sha256, doc.sha256_hex());
        let (sha, len) = download_sha256(&mut at_oefa, code, 0).await;
        assert_eq!((sha, len), (doc.sha256_hex(), doc.len));
        // The receipt is at senamhi, and the citizen's timeline is complete
        // at oefa: registered, sent, delivered, each once.
        let receipt = at_senamhi
            .get_receipt(ecointegra_proto::v1::GetReceiptRequest {
                tracking_code: code.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(receipt.verified, "{code}");
        // Looked up once oefa has re-read the tracking topic that far
        // (failed look-ups are rate-limited).
        let sql = format!("SELECT COUNT(*) FROM tracking_events WHERE tracking_code = '{code}'");
        eventually(
            "oefa's timeline to be whole again",
            async || match count_rows(&store, &sql) {
                n if n >= 3 => Ok(()),
                n => Err(n),
            },
        )
        .await;
        let timeline = track(oefa.grpc_addr(), code, verification).await;
        let statuses: Vec<i32> = timeline.iter().map(|e| e.status).collect();
        assert_eq!(
            statuses,
            [
                FilingStatus::Registered as i32,
                FilingStatus::Sent as i32,
                FilingStatus::Delivered as i32
            ],
            "{code}: {timeline:#?}"
        );
    }
    assert_eq!(
        count_rows(
            &store,
            "SELECT COUNT(*) FROM (SELECT tracking_code FROM filings WHERE direction = 2 \
             GROUP BY tracking_code HAVING COUNT(*) > 1)"
        ),
        0,
        "a filing applied twice"
    );

    // A damaged document in the set is caught, and named.
    let (_, _, doc) = &filed[3];
    let blob = set
        .join("blobs")
        .join(&doc.sha256_hex()[..2])
        .join(doc.sha256_hex());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[7] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let damaged = cli(&["backup", "verify"], &[&set]);
    assert!(!damaged.status.success(), "{damaged:?}");
    let said = String::from_utf8_lossy(&damaged.stderr);
    assert!(
        said.contains(&doc.sha256_hex()) && said.contains("damaged"),
        "{said}"
    );
    oefa.shutdown().await;
    senamhi.shutdown().await;
}
