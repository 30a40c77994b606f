//! The node's HTTP server: Prometheus metrics at `/metrics`, liveness at
//! `/livez` (the process serves) and readiness at `/readyz` (Kafka answers).
//! Off unless `[http] listen` is set; the bound address is written to
//! `<data_dir>/http.addr`, as the gRPC one is to `grpc.addr`.

use crate::config::HttpConfig;
use crate::error::{Error, Result};
use crate::telemetry::Watch;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Binds the configured address, before the node starts its tasks, so a
/// taken port fails the start.
pub async fn bind(config: &HttpConfig) -> Result<Option<TcpListener>> {
    bind_listen(config.listen, "http.listen").await
}

/// Binds `listen` if it is set; `key` names the setting in errors.
pub async fn bind_listen(listen: Option<SocketAddr>, key: &str) -> Result<Option<TcpListener>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    TcpListener::bind(listen)
        .await
        .map(Some)
        .map_err(Error::io(format!("cannot listen on {listen} ({key})")))
}

/// Serves on `listener` until `cancel` fires; writes `<data_dir>/http.addr`.
pub fn spawn(
    watch: Arc<Watch>,
    listener: Option<TcpListener>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<Option<SocketAddr>> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(watch.clone());
    serve(
        &watch.config.data_dir,
        listener,
        app,
        "http",
        tracker,
        cancel,
    )
    .map(Some)
}

/// Serves `app` on `listener` until `cancel` fires, writing the bound address
/// to `<data_dir>/<name>.addr` so tools find a port-0 listener.
pub fn serve(
    data_dir: &std::path::Path,
    listener: TcpListener,
    app: Router,
    name: &'static str,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<SocketAddr> {
    let addr = listener
        .local_addr()
        .map_err(Error::io("no local address"))?;
    let addr_file = data_dir.join(format!("{name}.addr"));
    crate::store::blobs::write_private(&addr_file, addr.to_string().as_bytes())
        .map_err(Error::io(format!("cannot write {}", addr_file.display())))?;
    tracker.spawn(async move {
        tracing::info!(%addr, "Serving {name}.");
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await;
        if let Err(error) = served {
            tracing::error!(%error, "The {name} server failed.");
        }
    });
    Ok(addr)
}

async fn metrics(State(watch): State<Arc<Watch>>) -> impl IntoResponse {
    let w = watch.clone();
    let gauges = tokio::task::spawn_blocking(move || crate::telemetry::queues::gauges(&w))
        .await
        .unwrap_or_default();
    let body = crate::telemetry::metrics::render(&watch.metrics, gauges);
    (
        [(
            header::CONTENT_TYPE,
            crate::telemetry::metrics::CONTENT_TYPE,
        )],
        body,
    )
}

async fn ready(State(watch): State<Arc<Watch>>) -> impl IntoResponse {
    let stalls = watch.stalls.current();
    let problems = watch.kafka.problems.borrow().clone();
    if !*watch.kafka.up.borrow() && problems.is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Kafka is not reachable\n".to_owned(),
        )
    } else if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(|p| format!("{p}\n")).collect();
        (StatusCode::SERVICE_UNAVAILABLE, lines.concat())
    } else if !stalls.is_empty() {
        let lines: Vec<String> = stalls
            .iter()
            .map(|(topic, s)| format!("consumer of {topic} stalled: {}\n", s.reason))
            .collect();
        (StatusCode::SERVICE_UNAVAILABLE, lines.concat())
    } else {
        (StatusCode::OK, "ready\n".to_owned())
    }
}
