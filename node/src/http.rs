//! The node's HTTP server: Prometheus metrics at `/metrics`, liveness at
//! `/livez` (the process serves) and readiness at `/readyz` (Kafka answers).
//! Off unless `[http] listen` is set; the bound address is written to
//! `<data_dir>/http.addr`, as the gRPC one is to `grpc.addr`.

use crate::error::{Error, Result};
use crate::node::Shared;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The HTTP server (`/metrics`, `/livez`, `/readyz`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address the HTTP server listens on; port 0 picks a free port. Unset:
    /// no HTTP server.
    pub listen: Option<SocketAddr>,
}

/// Binds the configured address, before the node starts its tasks, so a
/// taken port fails the start.
pub async fn bind(config: &HttpConfig) -> Result<Option<TcpListener>> {
    let Some(listen) = config.listen else {
        return Ok(None);
    };
    TcpListener::bind(listen)
        .await
        .map(Some)
        .map_err(Error::io(format!(
            "cannot listen on {listen} (http.listen)"
        )))
}

/// Serves on `listener` until `cancel` fires; writes `<data_dir>/http.addr`.
pub fn spawn(
    shared: Arc<Shared>,
    listener: Option<TcpListener>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<Option<SocketAddr>> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let addr = listener
        .local_addr()
        .map_err(Error::io("no local address"))?;
    let addr_file = shared.config.data_dir.join("http.addr");
    std::fs::write(&addr_file, addr.to_string())
        .map_err(Error::io(format!("cannot write {}", addr_file.display())))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(shared);
    tracker.spawn(async move {
        tracing::info!(http = %addr, "Serving /metrics, /livez and /readyz.");
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "HTTP server failed.");
        }
    });
    Ok(Some(addr))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let s = shared.clone();
    let gauges = tokio::task::spawn_blocking(move || crate::ops::gauges(&s))
        .await
        .unwrap_or_default();
    let body = crate::metrics::render(shared.institution(), &shared.metrics, &gauges);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn ready(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if *shared.kafka_up.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Kafka is not reachable\n")
    }
}
