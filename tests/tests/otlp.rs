//! Trace export: with `[telemetry] otlp_endpoint` set, both nodes send their
//! spans to an OTLP/gRPC collector, and a filing's whole path (the submitting
//! call, the relay, the destination's processing, the receipt) is one trace.

use ecointegra_proto::v1::FilingStatus;
use ecointegra_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One exported span, as the collector received it.
#[derive(Debug, Clone)]
struct Seen {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    start: u64,
    end: u64,
}

/// A collector that keeps every span it receives and checks nothing: the
/// test does (a panic in the server task would only fail the export).
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Seen>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Seen {
                        service: service.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        start: span.start_time_unix_nano,
                        end: span.end_time_unix_nano,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[derive(Clone)]
struct TraceParent(String);

impl tonic::service::Interceptor for TraceParent {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("traceparent", self.0.parse().unwrap());
        Ok(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filings_path_is_exported_as_one_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });

    let federation = Federation::with_settings(
        "otlp",
        &["senamhi", "oefa"],
        &format!("\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\n"),
    );
    let senamhi = federation.start("senamhi").await;
    let oefa = federation.start("oefa").await;
    let trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736";
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", senamhi.grpc_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut traced =
        ecointegra_proto::v1::filing_service_client::FilingServiceClient::with_interceptor(
            channel,
            TraceParent(format!("00-{trace_hex}-00f067aa0ba902b7-01")),
        );
    let answer = traced
        .submit_filing(parts(
            header("oefa", "Trazada"),
            &[Doc::new("t.pdf", 700_000, 1)],
        ))
        .await
        .unwrap()
        .into_inner();
    let mut origin = client(senamhi.grpc_addr()).await;
    wait_for_status(
        &mut origin,
        &answer.tracking_code,
        FilingStatus::Delivered,
        Duration::from_secs(60),
    )
    .await;

    let trace_id = hex::decode(trace_hex).unwrap();
    let want = [
        ("ecointegra-senamhi", "SubmitFiling"),
        ("ecointegra-senamhi", "publish transfer"),
        ("ecointegra-oefa", "process record"),
        // The receipt, processed back at the origin, continues the trace.
        ("ecointegra-senamhi", "process record"),
    ];
    let seen = eventually(
        "every span of the filing's trace at the collector",
        async || {
            let spans = collector.spans.lock().unwrap().clone();
            for span in &spans {
                assert_eq!(span.trace_id.len(), 16, "{span:?}");
                assert_eq!(span.span_id.len(), 8, "{span:?}");
                assert!(span.end >= span.start, "{span:?}");
            }
            let seen: Vec<(String, String)> = spans
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .map(|s| (s.service.clone(), s.name.clone()))
                .collect();
            let missing: Vec<_> = want
                .iter()
                .filter(|(s, n)| !seen.iter().any(|(ss, nn)| ss == s && nn == n))
                .collect();
            if missing.is_empty() {
                Ok(seen)
            } else {
                Err(format!("missing {missing:?}; seen {seen:?}"))
            }
        },
    )
    .await;
    // The destination processed every record of the transfer in this trace.
    let at_oefa = seen
        .iter()
        .filter(|(s, n)| s == "ecointegra-oefa" && n == "process record")
        .count();
    assert!(at_oefa >= 3, "two chunks and the manifest: {seen:?}");
    senamhi.shutdown().await;
    oefa.shutdown().await;
}
