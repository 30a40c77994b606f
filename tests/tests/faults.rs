//! Faults: Kafka down, nodes killed mid-transfer, large documents with bounded
//! memory. Nodes run as real `ecointegra` processes so they can be killed.

use ecointegra_proto::v1::FilingStatus;
use ecointegra_tests::*;

async fn assert_one_intact_copy(
    federation: &Federation,
    destination: &mut Client,
    code: &str,
    docs: &[Doc],
) {
    for (index, doc) in docs.iter().enumerate() {
        let (sha, len) = download_sha256(destination, code, index as u32).await;
        assert_eq!((sha, len), (doc.sha256_hex(), doc.len), "{}", doc.name);
    }
    assert_eq!(
        inbound_count(federation, "oefa"),
        1,
        "exactly one filing at the destination"
    );
    assert_eq!(
        count_rows(
            &federation.store_path("oefa"),
            "SELECT COUNT(*) FROM receipts"
        ),
        1
    );
    assert_eq!(
        count_rows(
            &federation.store_path("senamhi"),
            "SELECT COUNT(*) FROM receipts"
        ),
        1
    );
}

/// Stops the broker itself: runs alone.
#[tokio::test]
async fn serial_a_filing_accepted_while_kafka_is_down_is_delivered_when_it_returns() {
    let federation = Federation::new("kafkadown", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.spawn_all().await;
    let mut origin = senamhi.client.clone();
    let destination = oefa.client.clone();
    // Both inboxes exist before the broker goes away.
    deliver_sample(&mut origin, "oefa").await;

    kafka_script(&["stop"]);
    let docs = [Doc::new("durante.pdf", 900_000, 9)];
    let answer = submit(&mut origin, header("oefa", "Con Kafka caído"), &docs)
        .await
        .unwrap();
    // The relay tried to publish it and failed: the outbox entry is set for a
    // retry (next_attempt_at_ms), and no attempt was counted as published.
    let outbox = format!(
        "SELECT COUNT(*) FROM outbox o JOIN filings f ON f.id = o.filing_id \
         WHERE f.tracking_code = '{}' AND o.attempts = 0 AND o.next_attempt_at_ms > 0",
        answer.tracking_code
    );
    eventually("a failed publication of the filing", async || {
        (count_rows(&federation.store_path("senamhi"), &outbox) == 1).then_some(())
    })
    .await;
    let filing = get(&mut origin, &answer.tracking_code).await.unwrap();
    assert_eq!(
        filing.status,
        FilingStatus::Registered as i32,
        "accepted, waiting for Kafka"
    );

    delivered_once_kafka_is_back(&federation, [origin, destination], &answer, &docs[0]).await;
}

/// Starts the broker again; `answer`'s filing of `doc` is then delivered
/// intact, beside the sample delivered before Kafka stopped.
async fn delivered_once_kafka_is_back(
    federation: &Federation,
    clients: [Client; 2],
    answer: &ecointegra_proto::v1::SubmitFilingResponse,
    doc: &Doc,
) {
    kafka_script(&["start"]);
    delivered_beside_the_sample(federation, clients, answer, doc).await;
}

/// `answer`'s filing of `doc` is delivered intact, beside the sample
/// delivered before.
async fn delivered_beside_the_sample(
    federation: &Federation,
    [mut origin, mut destination]: [Client; 2],
    answer: &ecointegra_proto::v1::SubmitFilingResponse,
    doc: &Doc,
) {
    wait_for_status(
        &mut origin,
        &answer.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    let (sha, len) = download_sha256(&mut destination, &answer.tracking_code, 0).await;
    assert_eq!((sha, len), (doc.sha256_hex(), doc.len));
    assert_eq!(
        inbound_count(federation, "oefa"),
        2,
        "the sample and this one"
    );
}

/// Kafka stops while a large document is uploaded, its first chunks already
/// published: the upload goes on without them, the filing is accepted, and
/// once Kafka is back it is delivered whole, once. Stops the broker: runs
/// alone.
#[tokio::test]
async fn serial_kafka_stopping_during_a_large_upload_loses_and_repeats_nothing() {
    let federation = Federation::new("kafkastops", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.spawn_all().await;
    let mut origin = senamhi.client.clone();
    let destination = oefa.client.clone();
    deliver_sample(&mut origin, "oefa").await;

    let doc = Doc::new("interrumpido.pdf", 6 << 20, 11);
    let bytes = doc.bytes();
    let (feed, parts) = streamed_submission(header("oefa", "Kafka se detiene"), &doc);
    let mut client = origin.clone();
    let submission = tokio::spawn(async move { client.submit_filing(parts).await });
    feed_bytes(&feed, &bytes[..2 << 20]).await;
    eventually(
        "oefa to store chunks of the upload (bytes stored)",
        async || {
            let partial = count_rows(
                &federation.store_path("oefa"),
                "SELECT COALESCE(SUM(bytes), 0) FROM partials",
            );
            if partial > 0 { Ok(()) } else { Err(partial) }
        },
    )
    .await;
    kafka_script(&["stop"]);
    feed_bytes(&feed, &bytes[2 << 20..]).await;
    drop(feed);
    let answer = submission.await.unwrap().unwrap().into_inner();
    assert_eq!(answer.documents[0].sha256, doc.sha256_hex());

    delivered_once_kafka_is_back(&federation, [origin, destination], &answer, &doc).await;
}

/// A large document's chunks all went out during its upload (512 KiB each),
/// then Kafka stopped before the manifest could follow, and the origin was
/// restarted with `transfer.chunk_size` halved. Once Kafka is back the
/// manifest announces the chunks that went out, not the new size: the
/// filing is delivered intact and nothing is dead-lettered (announcing the
/// new size, the destination waited for chunks that never come). Stops the
/// broker: runs alone.
#[tokio::test]
async fn serial_a_chunk_size_changed_before_the_manifest_went_out_delivers_intact() {
    let federation = Federation::new("cutsize", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.spawn_all().await;
    let mut origin = senamhi.client.clone();
    deliver_sample(&mut origin, "oefa").await;

    // Four whole chunks: the last goes out as its bytes arrive, before the
    // upload ends.
    let doc = Doc::new("recortado.pdf", 4 * (512 << 10), 12);
    let bytes = doc.bytes();
    let (feed, parts) = streamed_submission(header("oefa", "Otro tamaño de trozo"), &doc);
    let mut client = origin.clone();
    let submission = tokio::spawn(async move { client.submit_filing(parts).await });
    feed_bytes(&feed, &bytes).await;
    let oefa_store = federation.store_path("oefa");
    eventually(
        "oefa to hold every chunk of the upload",
        async || match count_rows(&oefa_store, "SELECT COALESCE(SUM(bytes), 0) FROM partials") {
            held if held == doc.len as i64 => Ok(()),
            held => Err(held),
        },
    )
    .await;
    kafka_script(&["stop"]);
    drop(feed);
    let answer = submission.await.unwrap().unwrap().into_inner();
    let senamhi_store = federation.store_path("senamhi");
    let waiting = format!(
        "SELECT COUNT(*) FROM outbox o JOIN filings f ON f.id = o.filing_id \
         WHERE f.tracking_code = '{}' AND o.attempts = 0 AND o.next_attempt_at_ms > 0 \
         AND o.chunks_out = '0'",
        answer.tracking_code
    );
    eventually(
        "the manifest's publication to fail, the chunks out",
        async || (count_rows(&senamhi_store, &waiting) == 1).then_some(()),
    )
    .await;

    senamhi.kill();
    federation.write_config(
        "senamhi",
        &bootstrap(),
        &format!("\n[transfer]\nchunk_size = {}\n", 256 << 10),
    );
    kafka_script(&["start"]);
    let senamhi = federation.spawn("senamhi").await;
    let clients = [senamhi.client.clone(), oefa.client.clone()];
    delivered_beside_the_sample(&federation, clients, &answer, &doc).await;
    assert_eq!(
        count_rows(&oefa_store, "SELECT COUNT(*) FROM dead_letters"),
        0
    );
}

#[tokio::test]
async fn destination_killed_during_a_50_mib_transfer_gets_it_exactly_once() {
    let federation = Federation::new("destkill", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.spawn_all().await;
    let mut origin = senamhi.client.clone();
    let docs = [Doc::new("expediente.pdf", 50 << 20, 50)];
    let answer = submit(&mut origin, header("oefa", "Expediente grande"), &docs)
        .await
        .unwrap();

    // Kill the destination once it has stored part of the transfer.
    eventually(
        "oefa to store 4 MiB of the transfer (bytes stored)",
        async || {
            let partial = count_rows(
                &federation.store_path("oefa"),
                "SELECT COALESCE(SUM(bytes), 0) FROM partials",
            );
            if partial > 4 << 20 {
                Ok(())
            } else {
                Err(partial)
            }
        },
    )
    .await;
    assert_eq!(inbound_count(&federation, "oefa"), 0, "killed mid-transfer");
    oefa.kill();

    let oefa = federation.spawn("oefa").await;
    let mut destination = oefa.client.clone();
    wait_for_status(
        &mut origin,
        &answer.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    assert_one_intact_copy(&federation, &mut destination, &answer.tracking_code, &docs).await;
}

#[tokio::test]
async fn origin_killed_after_accepting_before_publishing_delivers_exactly_once() {
    let federation = Federation::new("originkill", &["senamhi", "oefa"]);
    let oefa = federation.spawn("oefa").await;
    // The origin cannot reach Kafka: it accepts, but cannot publish.
    federation.write_config("senamhi", "127.0.0.1:1", "");
    let senamhi = federation.spawn("senamhi").await;
    let mut origin = senamhi.client.clone();
    let docs = [
        Doc::new("oficio.pdf", 2 << 20, 21),
        Doc::new("anexo.pdf", 3000, 22),
    ];
    let answer = submit(&mut origin, header("oefa", "Antes del corte"), &docs)
        .await
        .unwrap();
    assert_eq!(
        get(&mut origin, &answer.tracking_code)
            .await
            .unwrap()
            .status,
        FilingStatus::Registered as i32
    );
    senamhi.kill();

    federation.write_config("senamhi", &bootstrap(), "");
    let senamhi = federation.spawn("senamhi").await;
    let mut origin = senamhi.client.clone();
    let mut destination = oefa.client.clone();
    let filing = wait_for_status(
        &mut origin,
        &answer.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    assert_eq!(filing.documents.len(), 2);
    assert_one_intact_copy(&federation, &mut destination, &answer.tracking_code, &docs).await;
}

#[tokio::test]
async fn a_200_mib_document_arrives_with_bounded_destination_memory() {
    let federation = Federation::new("large", &["senamhi", "oefa"]);
    let [senamhi, oefa] = federation.spawn_all().await;
    let mut origin = senamhi.client.clone();
    let mut destination = oefa.client.clone();
    // Let the destination settle (consumer assigned, inbox read) before measuring.
    deliver_sample(&mut origin, "oefa").await;
    let before = oefa.peak_rss_kib();

    let docs = [Doc::new("estudio-impacto.pdf", 200 << 20, 200)];
    let answer = submit(&mut origin, header("oefa", "EIA"), &docs)
        .await
        .unwrap();
    wait_for_status(
        &mut origin,
        &answer.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    let after = oefa.peak_rss_kib();
    let growth_mib = (after.saturating_sub(before)) / 1024;
    eprintln!(
        "destination peak RSS: {} MiB before, {} MiB after (+{growth_mib} MiB)",
        before / 1024,
        after / 1024
    );
    assert!(
        growth_mib < 100,
        "the destination's peak memory grew by {growth_mib} MiB"
    );
    let (sha, len) = download_sha256(&mut destination, &answer.tracking_code, 0).await;
    assert_eq!((sha, len), (docs[0].sha256_hex(), docs[0].len));
}

/// A small file system (tmpfs) mounted over a node's data directory, so the
/// node's disk can fill up; unmounted when dropped. Mounting takes root, as
/// tests/run.sh runs on the project's machines.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, bytes: u64) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes}"))
            .arg("tmpfs")
            .arg(dir)
            .status()
            .expect("mount(8) runs");
        assert!(
            status.success(),
            "cannot mount a {bytes}-byte tmpfs on {} (this test needs root)",
            dir.display()
        );
        SmallDisk(dir.to_owned())
    }

    /// Fills the disk with a file, then frees `leave` bytes of it.
    fn fill_leaving(&self, leave: u64) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        file.set_len(written.saturating_sub(leave)).unwrap();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The destination's disk fills up in the middle of a transfer: its inbox
/// consumer stops at the record it cannot write, reports the stall, and
/// retries; once space is freed the filing arrives whole, once, and nothing
/// was dead-lettered or skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_the_inbox_and_nothing_is_lost() {
    let federation = Federation::new("disk-full", &["senamhi", "oefa"]);
    let disk = SmallDisk::mount(&federation.data_dir("oefa"), 32 << 20);
    let oefa = federation.start("oefa").await;
    let senamhi = federation.start("senamhi").await;
    let mut origin = senamhi.client.clone();
    deliver_sample(&mut origin, "oefa").await;

    // Less room than the next filing's document needs.
    let filler = disk.fill_leaving(256 << 10);
    let docs = [Doc::new("expediente.pdf", 3 << 20, 17)];
    let filed = submit(&mut origin, header("oefa", "Disco lleno"), &docs)
        .await
        .unwrap();
    wait_for_status(
        &mut origin,
        &filed.tracking_code,
        FilingStatus::Sent,
        PATIENCE,
    )
    .await;
    let inbox = federation.topic_inbox("oefa");
    let watch = oefa.node().services().watch.clone();
    let stall = eventually(
        "oefa's inbox consumer to report the full disk",
        async || {
            let watch = watch.clone();
            let report = tokio::task::spawn_blocking(move || {
                ecointegra_node::telemetry::queues::queues(&watch)
            })
            .await
            .unwrap()
            .unwrap();
            report
                .troubled
                .into_iter()
                .find(|t| t.counterpart == inbox && t.reason.contains("stalled"))
                .ok_or(())
        },
    )
    .await;
    assert!(
        stall.reason.contains("disk is full") || stall.reason.contains("No space left on device"),
        "{}",
        stall.reason
    );
    let mut destination = oefa.client.clone();
    let absent = get(&mut destination, &filed.tracking_code)
        .await
        .unwrap_err();
    assert_eq!(absent.code(), tonic::Code::NotFound);
    assert_eq!(
        get(&mut origin, &filed.tracking_code).await.unwrap().status,
        FilingStatus::Sent as i32
    );

    // Space comes back: the consumer resumes by itself.
    std::fs::remove_file(filler).unwrap();
    wait_for_status(
        &mut origin,
        &filed.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    let (sha, len) = download_sha256(&mut destination, &filed.tracking_code, 0).await;
    assert_eq!((sha, len), (docs[0].sha256_hex(), docs[0].len));
    settled(&federation, &["senamhi", "oefa"]).await;
    assert_eq!(inbound_count(&federation, "oefa"), 2);
    assert_eq!(
        count_rows(
            &federation.store_path("oefa"),
            "SELECT COUNT(*) FROM dead_letters"
        ),
        0,
        "nothing dead-lettered"
    );
    senamhi.shutdown().await;
    oefa.shutdown().await;
    drop(disk);
}

/// Every file and directory under `dir` whose mode lets anyone but its owner
/// in.
fn shared_with_others(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        found.push((dir.to_owned(), mode));
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(shared_with_others(&path));
        } else {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                found.push((path, mode));
            }
        }
    }
    found
}

/// A second process started on a node's data directory would corrupt the
/// first one's work: it exits at once, with code 75 and a message naming the
/// directory, and the first goes on. Everything the node wrote under its data
/// directory is readable by its own user only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_a_data_directory_exits_and_the_files_are_private() {
    let federation = Federation::new("datadir", &["senamhi", "oefa"]);
    let oefa = federation.spawn("oefa").await;
    let senamhi = federation.start("senamhi").await;
    let mut origin = senamhi.client.clone();
    deliver_sample(&mut origin, "oefa").await;

    let second = std::process::Command::new(binary())
        .args(["node", "run", "--config"])
        .arg(federation.config_path("oefa"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("in use by another ecointegra process")
            && stderr.contains(&federation.data_dir("oefa").display().to_string()),
        "{stderr}"
    );
    // The first process still works.
    let filed = deliver_sample(&mut origin, "oefa").await;
    let mut destination = oefa.client.clone();
    let (sha, _) = download_sha256(&mut destination, &filed.tracking_code, 0).await;
    assert_eq!(sha, sample_doc().sha256_hex());
    assert_eq!(inbound_count(&federation, "oefa"), 2);
    assert_eq!(shared_with_others(&federation.data_dir("oefa")), []);
    senamhi.shutdown().await;
    oefa.terminate();
}
