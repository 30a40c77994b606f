//! gRPC health: SERVING only while Kafka answers a metadata request.

use crate::node::Shared;
use ecointegra_proto::v1::filing_service_server::FilingServiceServer;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub async fn run(shared: Arc<Shared>, reporter: HealthReporter, cancel: CancellationToken) {
    let interval = Duration::from_millis(shared.config.health.probe_interval_ms);
    let probe_timeout = interval.clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut last = None;
    loop {
        let publisher = shared.publisher.clone();
        let up = tokio::task::spawn_blocking(move || publisher.probe(probe_timeout))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
            && !cancel.is_cancelled();
        if last != Some(up) {
            if up {
                tracing::info!("Kafka is reachable; serving.");
            } else {
                tracing::warn!(kafka = %shared.config.kafka.bootstrap_servers, "Kafka is not reachable; not serving.");
            }
            set(&reporter, up).await;
            shared.kafka_up.send_replace(up);
            last = Some(up);
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    set(&reporter, false).await;
    shared.kafka_up.send_replace(false);
}

async fn set(reporter: &HealthReporter, up: bool) {
    let status = if up {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(
            <FilingServiceServer<crate::service::FilingApi> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}
