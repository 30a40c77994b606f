//! gRPC health: SERVING only while Kafka answers a metadata request. Every
//! probe also records why Kafka does not answer; a node that does not create
//! its topics (production) checks them against the sector's plan at start
//! and every [`TOPIC_CHECK_EVERY`] probes, and is not ready while they fall
//! short (`/readyz`, `queues` and the log say what is missing or wrong).

use crate::config::Config;
use crate::kafka::Kafka;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Probes between two checks of the topics.
const TOPIC_CHECK_EVERY: u32 = 15;

pub async fn run(
    config: Arc<Config>,
    kafka: Arc<Kafka>,
    reporter: HealthReporter,
    cancel: CancellationToken,
) {
    let interval = Duration::from_millis(config.health.probe_interval_ms);
    let probe_timeout = interval.clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut last = None;
    let mut topic_problems: Vec<String> = Vec::new();
    let mut probes = 0u32;
    loop {
        let publisher = kafka.publisher.clone();
        let probed = tokio::task::spawn_blocking(move || publisher.probe(probe_timeout))
            .await
            .unwrap_or_else(|e| {
                Err(ecointegra_broker::Error::Io {
                    context: "the Kafka probe failed".into(),
                    source: std::io::Error::other(e),
                })
            });
        let up = probed.is_ok() && !cancel.is_cancelled();
        if last != Some(up) {
            if up {
                tracing::info!("Kafka is reachable; serving.");
            } else {
                tracing::warn!(kafka = %config.kafka.bootstrap_servers, error = %describe(&probed), "Kafka is not reachable; not serving.");
            }
            set(&reporter, up).await;
            kafka.up.send_replace(up);
            last = Some(up);
        }
        if up && !config.manage_topics() && probes.is_multiple_of(TOPIC_CHECK_EVERY) {
            let checked = check_topics(&config, &kafka).await;
            if checked != topic_problems {
                match checked.is_empty() {
                    true => tracing::info!("The sector's topics are as this node needs them."),
                    false => {
                        tracing::error!(problems = %checked.join("; "), "The sector's topics are not as this node needs them; not ready.")
                    }
                }
                topic_problems = checked;
            }
        }
        probes = probes.wrapping_add(1);
        let problems = if up {
            topic_problems.clone()
        } else {
            vec![format!("Kafka is not reachable: {}", describe(&probed))]
        };
        kafka.problems.send_if_modified(|current| {
            let changed = *current != problems;
            *current = problems;
            changed
        });
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    set(&reporter, false).await;
    kafka.up.send_replace(false);
}

fn describe(probed: &Result<(), ecointegra_broker::Error>) -> String {
    match probed {
        Ok(()) => String::new(),
        Err(error) => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

/// What the node's own topics (its inbox and DLQ, the tracking and
/// directory topics) lack against the sector's plan; empty if nothing.
pub async fn check_topics(config: &Config, kafka: &Kafka) -> Vec<String> {
    let plans =
        ecointegra_broker::topics::node_plans(&kafka.topics, &config.institution, &[], kafka.spec);
    let checked = match kafka.settings.admin() {
        Ok(admin) => {
            ecointegra_broker::topics::check(&admin, &plans, std::time::Duration::from_secs(5))
                .await
        }
        Err(error) => Err(error),
    };
    match checked {
        Ok(problems) => problems
            .into_iter()
            .map(|p| {
                format!(
                    "{p} (the sector operator provisions the topics: ecointegra sector provision)"
                )
            })
            .collect(),
        Err(error) => vec![format!("the sector's topics cannot be checked: {error}")],
    }
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
