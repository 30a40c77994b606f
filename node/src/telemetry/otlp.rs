//! OTLP/gRPC export of the node's trace spans, when `[telemetry]
//! otlp_endpoint` is set: `tracing` spans go through `tracing-opentelemetry`
//! to the OpenTelemetry SDK, whose batch processor sends them with
//! `opentelemetry-otlp`'s tonic exporter. Spans continue the W3C trace
//! contexts that travel on the Kafka records (see [`crate::telemetry::trace`]),
//! so a collector shows one trace per filing across every institution's node.
//!
//! Each node has its own tracer provider, whose resource names the
//! institution, and its own `tracing` dispatcher holding the OpenTelemetry
//! layer. The spans to export are created in that dispatcher ([`Otlp::span`]):
//! several nodes in one process (as in the tests) export apart, and the log
//! subscriber stays what [`crate::telemetry::trace::init_logging`] made it.
//!
//! The batch processor queues spans without blocking (a full queue drops
//! them) and exports from a thread of its own, so an unreachable collector
//! never slows a transfer down. Its `OTEL_BSP_*` environment variables tune it.

use crate::config::TelemetryConfig;
use opentelemetry::InstrumentationScope;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt as _;

/// How long one export may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A node's trace export.
pub struct Otlp {
    provider: SdkTracerProvider,
    /// A `tracing` dispatcher with only the OpenTelemetry layer.
    dispatch: tracing::Dispatch,
}

/// Starts trace export if an endpoint is configured. Must run inside the
/// Tokio runtime, which drives the exporter's gRPC channel.
pub fn start(config: &TelemetryConfig, institution: &str) -> Option<Otlp> {
    let endpoint = config.otlp_endpoint.clone()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build();
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(error) => {
            tracing::error!(%endpoint, %error, "The OTLP exporter cannot start; traces are not exported.");
            return None;
        }
    };
    let resource = Resource::builder()
        .with_service_name(format!("ecointegra-{institution}"))
        .with_attribute(opentelemetry::KeyValue::new(
            "ecointegra.institution",
            institution.to_owned(),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer_with_scope(
        InstrumentationScope::builder("ecointegra")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
    Some(Otlp {
        provider,
        dispatch: tracing::Dispatch::new(subscriber),
    })
}

impl Otlp {
    /// Creates a span (with `make`, a `tracing` span macro) that is exported
    /// when its last handle is dropped.
    pub fn span(&self, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
        tracing::dispatcher::with_default(&self.dispatch, make)
    }

    /// Exports the spans still queued, then stops.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = done {
            tracing::warn!(%error, "Trace export did not shut down cleanly; some spans may be lost.");
        }
    }
}
