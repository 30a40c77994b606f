//! gRPC health: SERVING only while Kafka answers a metadata request.

use crate::config::Config;
use crate::kafka::Kafka;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub async fn run(
    config: Arc<Config>,
    kafka: Arc<Kafka>,
    reporter: HealthReporter,
    cancel: CancellationToken,
) {
    let interval = Duration::from_millis(config.health.probe_interval_ms);
    let probe_timeout = interval.clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut last = None;
    loop {
        let publisher = kafka.publisher.clone();
        let up = tokio::task::spawn_blocking(move || publisher.probe(probe_timeout))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
            && !cancel.is_cancelled();
        if last != Some(up) {
            if up {
                tracing::info!("Kafka is reachable; serving.");
            } else {
                tracing::warn!(kafka = %config.kafka.bootstrap_servers, "Kafka is not reachable; not serving.");
            }
            set(&reporter, up).await;
            kafka.up.send_replace(up);
            last = Some(up);
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    set(&reporter, false).await;
    kafka.up.send_replace(false);
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
            ecointegra_proto::v1::filing_service_server::SERVICE_NAME,
            status,
        )
        .await;
}
