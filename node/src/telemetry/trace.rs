//! Traces across institutions: a W3C `traceparent` header
//! (`00-<trace id>-<span id>-<flags>`) on every Kafka record, so one trace
//! shows a filing's whole path.
//!
//! - The submitting gRPC call carries `traceparent` metadata, or a new trace
//!   starts there. Its context is kept in the store under the transfer id and
//!   the tracking code, before the filing is stored, so the relay finds it.
//! - The relay publishes every record of the transfer as a child span of it.
//! - The destination keeps the context of the first record of each transfer it
//!   reads (keyed by the record key, the transfer id), and its receipt — keyed
//!   by the same transfer id — goes back as a child of that: same trace id.
//! - Each stage logs inside a `tracing` span carrying `trace_id` and `span_id`.
//!
//! With trace export on ([`crate::telemetry::otlp`]), the submitting call,
//! the relay's publication and the processing of each record are also spans
//! exported over OTLP ([`start_span`]): each continues the context it came
//! with, and its own context is the one passed on, so the exported spans and
//! the `traceparent` values are one tree. Without export the ids are drawn
//! here, and the logs and records carry them all the same.
//!
//! Also here: the log subscriber, plain text or JSON (`ECOINTEGRA_LOG_FORMAT`).

use crate::store::Store;
use crate::telemetry::otlp::Otlp;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use rdkafka::message::{Headers, Message};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header and gRPC metadata key.
pub const HEADER: &str = "traceparent";

/// A W3C trace context: which trace, which span within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

fn random<const N: usize>() -> [u8; N] {
    loop {
        let mut bytes = [0u8; N];
        getrandom::fill(&mut bytes).expect("the OS provides random bytes");
        // All-zero ids are invalid.
        if bytes.iter().any(|b| *b != 0) {
            return bytes;
        }
    }
}

impl TraceContext {
    /// A new trace, sampled.
    pub fn root() -> Self {
        Self {
            trace_id: random(),
            span_id: random(),
            flags: 1,
        }
    }

    /// A new span of the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: random(),
            ..*self
        }
    }

    /// Parses a `traceparent` value; anything malformed is None (a new trace
    /// then starts, as the W3C recommendation says).
    pub fn parse(value: &str) -> Option<Self> {
        let parts: Vec<&str> = value.trim().split('-').collect();
        if parts.len() < 4 {
            return None;
        }
        let (version, trace, span, flags) = (parts[0], parts[1], parts[2], parts[3]);
        let lower_hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower_hex(version, 2)
            || version == "ff"
            || !lower_hex(trace, 32)
            || !lower_hex(span, 16)
            || !lower_hex(flags, 2)
        {
            return None;
        }
        // Version 00 has exactly four fields; later versions may add more.
        if version == "00" && parts.len() != 4 {
            return None;
        }
        let mut context = Self {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        hex::decode_to_slice(trace, &mut context.trace_id).ok()?;
        hex::decode_to_slice(span, &mut context.span_id).ok()?;
        if context.trace_id == [0; 16] || context.span_id == [0; 8] {
            return None;
        }
        Some(context)
    }

    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex::encode(self.span_id)
    }

    /// As OpenTelemetry's remote parent.
    fn to_remote(self) -> opentelemetry::Context {
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        ))
    }

    /// The context of an OpenTelemetry span, if it is a valid one.
    fn of_span(span: &tracing::Span) -> Option<Self> {
        let context = span.context();
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then(|| Self {
            trace_id: span_context.trace_id().to_bytes(),
            span_id: span_context.span_id().to_bytes(),
            flags: span_context.trace_flags().to_u8(),
        })
    }
}

/// Starts a span of a filing's path: with trace export on, a `tracing` span
/// (made by `make`) exported over OTLP when dropped, a child of `parent`;
/// without, a disabled span. Either way, the context to pass on: the
/// exported span's own, or a new span id under `parent` (a new trace
/// without one).
pub fn start_span(
    otlp: Option<&Otlp>,
    parent: Option<TraceContext>,
    make: impl FnOnce() -> tracing::Span,
) -> (tracing::Span, TraceContext) {
    let drawn = || parent.map_or_else(TraceContext::root, |p| p.child());
    let Some(otlp) = otlp else {
        return (tracing::Span::none(), drawn());
    };
    let span = otlp.span(make);
    if let Some(parent) = parent {
        // Fails only for a disabled span, which is not exported anyway.
        let _ = span.set_parent(parent.to_remote());
    }
    let context = TraceContext::of_span(&span).unwrap_or_else(drawn);
    (span, context)
}

impl std::fmt::Display for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.span_id(),
            self.flags
        )
    }
}

tokio::task_local! {
    /// The trace of the gRPC call being served.
    pub static CURRENT: TraceContext;
}

/// The caller's context of a gRPC call, from its `traceparent` metadata.
pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<TraceContext> {
    metadata
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
}

/// The trace of the call being served, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// The context kept for records keyed by `key`, which what is sent for them
/// continues (a blocking read: from a store task).
pub fn kept(store: &Store, key: &str) -> Option<TraceContext> {
    store
        .trace_of(key)
        .ok()
        .flatten()
        .and_then(|v| TraceContext::parse(&v))
}

/// The trace a submission continues, logged; kept under its transfer id and
/// tracking code (with [`keep_submission`]) in the transaction that stores
/// it, so the relay continues it.
pub fn submission_context(tracking_code: &str) -> TraceContext {
    let context = current().unwrap_or_else(TraceContext::root);
    tracing::info!(
        trace_id = %context.trace_id(),
        span_id = %context.span_id(),
        %tracking_code,
        "Submission traced."
    );
    context
}

/// Keeps a submission's context in the caller's transaction: for its
/// transfer and for its filing's tracking steps.
pub fn keep_submission(
    c: &rusqlite::Connection,
    transfer_id: &str,
    tracking_code: &str,
    context: &TraceContext,
) -> crate::error::Result<()> {
    let parent = context.to_string();
    crate::store::traces::keep(c, transfer_id, &parent)?;
    crate::store::traces::keep_for_steps(c, tracking_code, &parent)
}

/// The `traceparent` for a record keyed by `key`: a child of the context
/// kept under it, or a new trace (a blocking read: from a store task).
pub fn outgoing(store: &Store, key: &str) -> String {
    kept(store, key)
        .map_or_else(TraceContext::root, |p| p.child())
        .to_string()
}

/// A record read from Kafka, as its trace continues here.
pub struct Incoming {
    /// The span to process it in.
    pub span: tracing::Span,
    /// Its exported span (`process record`), when trace export is on and the
    /// record came with a trace; it ends when the record's batch is done.
    pub exported: tracing::Span,
    /// The context to keep under the record key (in the transaction that
    /// applies the record), so what this node sends back for it continues
    /// the same trace.
    pub keep: Option<(String, TraceContext)>,
}

/// A record read from Kafka: its trace continues here. `keep` asks for its
/// context to be kept under its key.
pub fn on_record(
    otlp: Option<&Otlp>,
    record: &rdkafka::message::OwnedMessage,
    keep: bool,
) -> Incoming {
    let parent = record.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == HEADER)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(TraceContext::parse)
    });
    let Some(parent) = parent else {
        return Incoming {
            span: tracing::info_span!("record", topic = record.topic(), offset = record.offset()),
            exported: tracing::Span::none(),
            keep: None,
        };
    };
    let (exported, context) = start_span(otlp, Some(parent), || {
        let message_type = record
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == ecointegra_broker::kafka::headers::MESSAGE_TYPE)
            })
            .and_then(|h| h.value)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        tracing::info_span!(
            "process record",
            otel.kind = "consumer",
            messaging.destination.name = record.topic(),
            messaging.kafka.offset = record.offset(),
            ecointegra.message_type = %message_type,
        )
    });
    let keep = record
        .key()
        .and_then(|k| std::str::from_utf8(k).ok())
        .filter(|_| keep)
        .map(|key| (key.to_owned(), context));
    let span = tracing::info_span!(
        "record",
        topic = record.topic(),
        offset = record.offset(),
        trace_id = %context.trace_id(),
        span_id = %context.span_id(),
        parent_span_id = %parent.span_id()
    );
    Incoming {
        span,
        exported,
        keep,
    }
}

/// Keeps a context under a record key (first one wins), in the caller's
/// transaction.
pub fn keep(
    c: &rusqlite::Connection,
    key: &str,
    context: &TraceContext,
) -> crate::error::Result<()> {
    crate::store::traces::keep(c, key, &context.to_string())
}

/// Installs the log subscriber: `ECOINTEGRA_LOG` filters (default `info`),
/// `ECOINTEGRA_LOG_FORMAT=json` writes one JSON object per line (with the
/// current span's fields, trace ids included); anything else, plain text,
/// coloured only when stderr is a terminal (never in a file or a pipe).
pub fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ECOINTEGRA_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let json = std::env::var("ECOINTEGRA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_w3c_example() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(value).unwrap();
        assert_eq!(context.to_string(), value);
        let child = context.child();
        assert_eq!(child.trace_id, context.trace_id);
        assert_ne!(child.span_id, context.span_id);
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        // A later version may carry more fields.
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }

    #[test]
    fn without_export_the_context_is_drawn_under_the_parent() {
        let parent = TraceContext::root();
        let (span, child) = start_span(None, Some(parent), || unreachable!());
        assert!(span.is_none());
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        let (_, root) = start_span(None, None, || unreachable!());
        assert_ne!(root.trace_id, parent.trace_id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_exported_span_continues_its_parent_and_its_context_is_passed_on() {
        // Nothing listens there: the export fails, which is not what is tested.
        let config = crate::config::TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:9".into()),
        };
        let otlp = crate::telemetry::otlp::start(&config, "oefa").unwrap();
        let parent =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let (span, context) =
            start_span(Some(&otlp), Some(parent), || tracing::info_span!("child"));
        assert!(!span.is_none());
        assert_eq!(context.trace_id, parent.trace_id);
        assert_ne!(context.span_id, parent.span_id);
        assert_eq!(context.flags, 1, "sampled, as its parent");
        let (root_span, root) = start_span(Some(&otlp), None, || tracing::info_span!("root"));
        assert_ne!(root.trace_id, parent.trace_id);
        drop((span, root_span));
        otlp.shutdown().await;
    }

    #[test]
    fn a_root_is_valid() {
        let root = TraceContext::root();
        assert_eq!(TraceContext::parse(&root.to_string()), Some(root));
    }
}
