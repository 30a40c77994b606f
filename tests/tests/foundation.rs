//! The foundation: a node against the real broker serves, creates its topics,
//! follows Kafka's availability in its health, rejects bad configuration,
//! and writes plain logs to a file.

use ecointegra_tests::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn health(addr: std::net::SocketAddr) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let answer = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(answer.status).unwrap()
}

async fn wait_health(addr: std::net::SocketAddr, want: ServingStatus) {
    eventually(&format!("health {want:?} at {addr}"), async || {
        let got = health(addr).await;
        if got == want { Ok(()) } else { Err(got) }
    })
    .await
}

fn topics(consumer: &BaseConsumer) -> Vec<String> {
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_in_process_serves_and_creates_its_topics() {
    let federation = Federation::new("serving", &["oefa"]);
    let node = federation.start("oefa").await;
    wait_health(node.grpc_addr(), ServingStatus::Serving).await;

    let prefix = &federation.prefix;
    let wanted = [
        format!("{prefix}.inbox.oefa"),
        format!("{prefix}.dlq.oefa"),
        format!("{prefix}.tracking"),
        format!("{prefix}.directory"),
    ];
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    eventually("the node's topics (missing)", async || {
        let existing = topics(&consumer);
        let missing: Vec<_> = wanted.iter().filter(|t| !existing.contains(t)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    })
    .await;

    // Reflection, in both versions, lists what the node serves (grpcurl
    // speaks v1; Python's grpcio-reflection only v1alpha), and nothing else.
    for services in [
        reflected_services_v1(node.grpc_addr()).await,
        reflected_services_v1alpha(node.grpc_addr()).await,
    ] {
        for served in [
            "ecointegra.v1.FilingService",
            "ecointegra.v1.TrackingService",
            "ecointegra.v1.OperationsService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                services.iter().any(|s| s == served),
                "{served}: {services:?}"
            );
        }
        assert!(
            !services
                .iter()
                .any(|s| s == "opentelemetry.proto.collector.trace.v1.TraceService"),
            "the node does not serve OTLP: {services:?}"
        );
    }

    let addr = node.grpc_addr();
    node.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the server stopped listening after shutdown"
    );
}

/// A node's log written to a file is plain text: colour codes are for a
/// terminal only.
#[tokio::test]
async fn a_log_written_to_a_file_has_no_ansi_escapes() {
    let federation = Federation::new("plainlog", &["oefa"]);
    let node = federation.spawn("oefa").await;
    let log = federation.root.join("oefa.log");
    eventually("the node to log its start", async || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Node started.") {
            Ok(())
        } else {
            Err(text.len())
        }
    })
    .await;
    assert!(node.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Node stopped."), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "an ANSI escape in a log written to a file:\n{text}"
    );
}

/// `ecointegra node run` runs with glibc's allocator tuned for records of
/// half a MiB (README, *Benchmark*, item 38): the process it leaves running,
/// the one whose id its parent knows, has the tunables in its environment
/// (glibc cuts the variable at its first `:` as it reads it, so that is
/// what `/proc` shows; the node's unit test checks glibc takes both). An
/// operator's own `GLIBC_TUNABLES` is kept as given.
#[tokio::test]
async fn a_node_runs_with_its_allocator_tuned_unless_the_operator_said_otherwise() {
    fn tunables(node: &NodeProcess) -> Vec<String> {
        node.environment()
            .into_iter()
            .filter(|entry| entry.starts_with("GLIBC_TUNABLES="))
            .collect()
    }
    let federation = Federation::new("malloc", &["oefa", "senamhi"]);
    let node = federation
        .spawn_env("oefa", &[("GLIBC_TUNABLES", None)])
        .await;
    assert_eq!(
        tunables(&node),
        ["GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4194304"]
    );
    wait_health(node.addr, ServingStatus::Serving).await;

    let own = "glibc.malloc.arena_max=2";
    let node = federation
        .spawn_env("senamhi", &[("GLIBC_TUNABLES", Some(own))])
        .await;
    assert_eq!(tunables(&node), [format!("GLIBC_TUNABLES={own}")]);
}

/// The services a node's reflection lists, asked as a client of one
/// reflection version would.
macro_rules! reflected_services {
    ($name:ident, $version:ident) => {
        async fn $name(addr: std::net::SocketAddr) -> Vec<String> {
            use tonic_reflection::pb::$version::ServerReflectionRequest;
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = ServerReflectionClient::new(channel);
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut answers = client
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap_or_else(|status| panic!("{}: {status}", stringify!($version)))
                .into_inner();
            match answers
                .message()
                .await
                .unwrap()
                .and_then(|a| a.message_response)
            {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    list.service.into_iter().map(|s| s.name).collect()
                }
                other => panic!(
                    "{}: not a list of services: {other:?}",
                    stringify!($version)
                ),
            }
        }
    };
}

reflected_services!(reflected_services_v1, v1);
reflected_services!(reflected_services_v1alpha, v1alpha);

/// A process killed when dropped, so that a failing test leaves none behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ecointegra node run` with `text` as its config; returns its exit code
/// and what it printed on stderr. A node that starts serving with the config
/// fails the test at once (and is killed).
async fn run_with_config(federation: &Federation, text: &str) -> (i32, String) {
    let path = federation.root.join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let stderr = federation.root.join("bad.log");
    let listening = federation.data_dir("oefa").join("grpc.addr");
    let child = std::process::Command::new(binary())
        .args(["node", "run", "--config"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut node = KillOnDrop(child);
    let status = eventually("the node to exit, refusing its config", async || {
        assert!(
            !listening.exists(),
            "the node started serving with this config:\n{text}"
        );
        node.0.try_wait().unwrap().ok_or("still running")
    })
    .await;
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&stderr).unwrap(),
    )
}

#[tokio::test]
async fn bad_config_exits_64_naming_the_field() {
    let federation = Federation::new("config", &["oefa"]);
    let good = std::fs::read_to_string(federation.config_path("oefa")).unwrap();

    // A known key with a value out of its range: refused by the range check
    // (an unknown key would be refused by name alone).
    let (code, stderr) = run_with_config(
        &federation,
        &format!("{good}\n[transfer]\nchunk_size = 4\n"),
    )
    .await;
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("transfer.chunk_size: must be between 1024 and 967232 bytes"),
        "{stderr}"
    );

    let (code, stderr) =
        run_with_config(&federation, &good.replace("127.0.0.1:0", "localhost:port")).await;
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("grpc.listen"), "{stderr}");

    let (code, stderr) = run_with_config(
        &federation,
        &good.replace("partitions = 2", "partitions = 0"),
    )
    .await;
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("kafka.partitions"), "{stderr}");
}

/// Stops and restarts the broker through deploy/kafka/kafka.sh: runs alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_health_follows_the_broker() {
    let federation = Federation::new("health", &["oefa"]);
    let node = federation.start("oefa").await;
    wait_health(node.grpc_addr(), ServingStatus::Serving).await;

    kafka_script(&["stop"]);
    wait_health(node.grpc_addr(), ServingStatus::NotServing).await;

    kafka_script(&["start"]);
    wait_health(node.grpc_addr(), ServingStatus::Serving).await;
    node.shutdown().await;
}

/// SIGTERM stops a node as soon as its calls in flight end, though a client
/// keeps its connection open: the node's tasks all stop (none abandoned at
/// the 30 s cap), and the producer flushes before a supervisor's grace
/// period runs out.
#[tokio::test]
async fn a_connected_client_does_not_hold_a_node_that_is_stopping() {
    let federation = Federation::new("stopping", &["oefa"]);
    let mut node = federation.spawn("oefa").await;
    // The client's connection is open, and idle once this answers.
    let unknown = get(&mut node.client, "OEFA-2026-NOSUCH00").await;
    assert!(unknown.is_err(), "{unknown:?}");
    assert!(node.terminate().success());
    let log = std::fs::read_to_string(federation.root.join("oefa.log")).unwrap();
    assert!(log.contains("Node stopped."), "{log}");
    assert!(!log.contains("did not stop"), "{log}");
}

/// A download in progress when SIGTERM comes goes on to its last byte, the
/// bytes still in the connection's buffers when the call ends included; the
/// node stops once it has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_in_flight_ends_before_its_node_stops() {
    use ecointegra_proto::v1::download_document_response::Part;
    use ecointegra_proto::v1::{DownloadDocumentRequest, DownloadDocumentResponse};
    use sha2::{Digest, Sha256};
    let federation = Federation::new("stopdownload", &["oefa", "iiap"]);
    let [oefa, mut iiap] = federation.spawn_all().await;
    // Far larger than the HTTP/2 windows and socket buffers: most of it is
    // still at the node when it is told to stop.
    const LEN: u64 = 64 << 20;
    let doc = Doc::new("expediente.pdf", LEN, 9);
    let filed = deliver(&mut iiap.client, header("oefa", "Grande"), &[doc]).await;
    // The downloading system's own channel, kept open through the stop (the
    // node's handle, with its channel, goes with the node: its connection
    // closing would end the download from the client's side). Its HTTP/2
    // window is small: the node's last bytes wait in the connection's
    // buffers until the client reads on.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", oefa.addr))
        .unwrap()
        .initial_stream_window_size(64 << 10)
        .initial_connection_window_size(64 << 10)
        .connect()
        .await
        .unwrap();
    let mut downloader =
        ecointegra_proto::v1::filing_service_client::FilingServiceClient::new(channel)
            .max_decoding_message_size(8 << 20);
    let mut stream = downloader
        .download_document(DownloadDocumentRequest {
            tracking_code: filed.tracking_code.clone(),
            document_index: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    // The next message's length, hashed; None at the stream's end.
    let mut read = async |stream: &mut tonic::Streaming<DownloadDocumentResponse>| {
        let message = stream.message().await.unwrap()?;
        let Some(Part::Chunk(data)) = message.part else {
            return Some(0);
        };
        hasher.update(&data);
        Some(data.len() as u64)
    };
    received += read(&mut stream)
        .await
        .expect("the download's first message");
    let pid = oefa.pid();
    let stopping = tokio::task::spawn_blocking(move || oefa.terminate());
    eventually("the node to have been told to stop", async || {
        let log = std::fs::read_to_string(federation.root.join("oefa.log")).unwrap();
        log.contains("Shutdown requested.").then_some(())
    })
    .await;
    // Read all but the last message: the node can then hand that one to its
    // connection and end the call, while most of its bytes wait in the
    // connection's buffers for the client's window. Once the node says its
    // calls ended, the client reads them: the node must not have gone.
    let mut last = 0;
    while LEN - received > last {
        last = read(&mut stream)
            .await
            .expect("the download's next message");
        received += last;
    }
    eventually("the node to see its calls ended", async || {
        let log = std::fs::read_to_string(federation.root.join("oefa.log")).unwrap();
        log.contains("gRPC calls in flight ended").then_some(())
    })
    .await;
    while let Some(length) = read(&mut stream).await {
        received += length;
    }
    assert_eq!(received, LEN, "node {pid} cut the download short");
    assert_eq!(hex::encode(hasher.finalize()), filed.documents[0].sha256);
    assert!(stopping.await.unwrap().success());
    let log = std::fs::read_to_string(federation.root.join("oefa.log")).unwrap();
    assert!(log.contains("Node stopped."), "{log}");
    assert!(!log.contains("still in flight"), "{log}");
    iiap.terminate();
}

/// A command whose reader went away before it printed (`| head`, `| grep -q`
/// in a script, as `deploy/demo.sh` does) ends quietly with status 141, as a
/// Unix tool ended by SIGPIPE: no panic and no backtrace on the terminal.
#[test]
fn a_command_whose_reader_went_away_ends_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(binary())
        .args(["keys", "token", "--role", "clerk", "--name", "lector"])
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}
