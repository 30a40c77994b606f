//! The foundation: a node against the real broker serves, creates its topics,
//! follows Kafka's availability in its health, and rejects bad configuration.

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

    // Reflection lists the filing service (grpcurl and friends rely on it).
    let descriptor = ecointegra_proto::FILE_DESCRIPTOR_SET;
    assert!(
        descriptor
            .windows(b"FilingService".len())
            .any(|w| w == b"FilingService")
    );

    let addr = node.grpc_addr();
    node.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the server stopped listening after shutdown"
    );
}

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
