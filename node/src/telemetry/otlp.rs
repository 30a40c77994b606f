//! OTLP/gRPC export of the node's trace spans, when `[telemetry]
//! otlp_endpoint` is set. Spans carry the W3C trace ids that travel on the
//! Kafka records (see [`crate::telemetry::trace`]), so a collector shows one trace per
//! filing across every institution's node.
//!
//! Spans are queued without blocking (a full queue drops the newest and counts
//! it) and sent in batches by one background task; an unreachable collector
//! never slows a transfer down.

use crate::config::TelemetryConfig;
use crate::telemetry::trace::TraceContext;
use ecointegra_proto::otlp::{
    AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans,
    ScopeSpans, Span, any_value, span::SpanKind, trace_service_client::TraceServiceClient,
};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const QUEUE: usize = 4096;
const BATCH: usize = 512;

pub use ecointegra_proto::otlp::span::SpanKind as Kind;

/// One finished span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub context: TraceContext,
    pub parent_span_id: Option<[u8; 8]>,
    pub name: &'static str,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, String)>,
}

/// Queues spans for the exporter task.
pub struct Exporter {
    tx: mpsc::Sender<SpanRecord>,
    pub dropped: AtomicU64,
}

impl Exporter {
    pub fn record(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the exporter task if an endpoint is configured.
pub fn start(
    config: &TelemetryConfig,
    institution: &str,
    cancel: CancellationToken,
) -> Option<Exporter> {
    let endpoint = config.otlp_endpoint.clone()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(endpoint, institution.to_owned(), rx, cancel));
    Some(Exporter {
        tx,
        dropped: AtomicU64::new(0),
    })
}

async fn run(
    endpoint: String,
    institution: String,
    mut rx: mpsc::Receiver<SpanRecord>,
    cancel: CancellationToken,
) {
    let channel = match tonic::transport::Endpoint::from_shared(endpoint.clone()) {
        Ok(e) => e.connect_timeout(Duration::from_secs(5)).connect_lazy(),
        Err(error) => {
            tracing::error!(%endpoint, %error, "The OTLP endpoint is not a URI; traces are not exported.");
            return;
        }
    };
    let mut client = TraceServiceClient::new(channel);
    let resource = Resource {
        attributes: vec![
            attribute("service.name", format!("ecointegra-{institution}")),
            attribute("ecointegra.institution", institution.clone()),
        ],
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let more = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => n > 0,
            _ = cancel.cancelled() => { rx.close(); while let Ok(s) = rx.try_recv() { batch.push(s); } false }
        };
        if !batch.is_empty() {
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(resource.clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "ecointegra".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                        }),
                        spans: batch.drain(..).map(to_otlp).collect(),
                    }],
                }],
            };
            if let Err(status) =
                tokio::time::timeout(Duration::from_secs(10), client.export(request))
                    .await
                    .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("export timed out")))
            {
                tracing::warn!(%endpoint, code = ?status.code(), "Spans not exported.");
            }
        }
        if !more {
            break;
        }
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn attribute(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
    }
}

fn to_otlp(span: SpanRecord) -> Span {
    Span {
        trace_id: span.context.trace_id.to_vec(),
        span_id: span.context.span_id.to_vec(),
        parent_span_id: span.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name: span.name.to_owned(),
        kind: span.kind as i32,
        start_time_unix_nano: nanos(span.start),
        end_time_unix_nano: nanos(span.end),
        attributes: span
            .attributes
            .into_iter()
            .map(|(k, v)| attribute(k, v))
            .collect(),
        status: None,
        flags: span.context.flags as u32,
    }
}
