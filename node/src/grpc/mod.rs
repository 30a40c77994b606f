//! The gRPC server: `FilingService`, health checking and reflection.

pub mod auth;
pub mod client;
pub mod drain;
pub mod filing;
pub mod operations;
pub mod tracking;

use crate::consume::Consumers;
use crate::lifecycle::Desk;
use crate::telemetry::Watch;
use ecointegra_proto::v1::filing_service_server::FilingServiceServer;
use ecointegra_proto::v1::tracking_service_server::TrackingServiceServer;
use std::sync::Arc;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

/// The handles the node's interfaces (gRPC and the web console) work with.
pub struct Services {
    /// Intake, clerk actions and citizen look-ups.
    pub desk: Desk,
    /// Dead letters: list, replay, discard.
    pub consumers: Arc<Consumers>,
    /// Queues, lag and gauges for operators.
    pub watch: Arc<Watch>,
    /// The id of the newest inbound filing, for inbox streams.
    pub inbox_head: Arc<tokio::sync::watch::Sender<i64>>,
    /// Trace export, when configured.
    pub otlp: Option<Arc<crate::telemetry::otlp::Otlp>>,
}

/// Serves gRPC until `cancel` fires, then drains in-flight calls.
pub async fn serve(
    services: Arc<Services>,
    listener: tokio::net::TcpListener,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    cancel: CancellationToken,
) {
    // Both reflection versions: grpcurl speaks v1, while Python's
    // grpcio-reflection and other clients still speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ecointegra_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");
    let filing = FilingServiceServer::new(filing::FilingApi {
        services: services.clone(),
        cancel: cancel.clone(),
    })
    .max_decoding_message_size(8 << 20);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &services.desk.config.grpc.tls {
        match server_tls(tls).and_then(|config| {
            builder
                .tls_config(config)
                .map_err(|e| format!("the TLS configuration is not usable: {e}"))
        }) {
            Ok(with_tls) => builder = with_tls,
            Err(error) => {
                tracing::error!(%error, "gRPC server cannot start.");
                cancel.cancel();
                return;
            }
        }
    }
    let auth = Arc::new(crate::grpc::auth::Authenticator::new(
        services.desk.config.auth.clone(),
    ));
    let in_flight = drain::InFlight::default();
    let server = builder
        .layer(drain::counted(in_flight.clone()))
        .layer(crate::grpc::auth::AuthLayer::new(auth))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(filing)
        .add_service(TrackingServiceServer::new(tracking::TrackingApi {
            desk: services.desk.clone(),
        }))
        .add_service(operations::server(services.clone()))
        .serve_with_incoming_shutdown(without_nagle(listener), cancel.cancelled());
    // Stopped once the calls in flight ended, not when every client closed
    // its connection (see drain).
    let drained = async {
        cancel.cancelled().await;
        if tokio::time::timeout(drain::DRAIN_MAX, in_flight.none())
            .await
            .is_err()
        {
            tracing::warn!(
                "gRPC calls still in flight after {} s; stopping them.",
                drain::DRAIN_MAX.as_secs()
            );
        } else {
            tracing::info!("gRPC calls in flight ended; closing the connections.");
        }
    };
    tokio::pin!(server);
    let result = tokio::select! {
        result = &mut server => result,
        () = drained => {
            // A call's last bytes may still wait in its connection's buffers
            // when its body ends: the connections get a moment to send them
            // and close (at once, once their clients answer the GOAWAY's
            // PING); an idle client that does not answer holds it no longer.
            tokio::time::timeout(drain::CLOSE_MAX, &mut server)
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(error) = result {
        tracing::error!(%error, "gRPC server failed.");
        cancel.cancel();
    }
}

/// The accepted connections with Nagle's algorithm off. Given its own
/// listener, tonic ignores its `tcp_nodelay` setting: HTTP/2 window updates
/// then waited for the client's delayed ACKs (about 40 ms each), and a 1 GiB
/// upload crawled at 34 MB/s with both ends idle.
fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, "Cannot turn Nagle's algorithm off for a gRPC connection.");
            }
        })
    })
}

/// The server's TLS settings from its PEM files.
fn server_tls(
    tls: &crate::config::TlsConfig,
) -> std::result::Result<tonic::transport::ServerTlsConfig, String> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
        read(&tls.cert_file)?,
        read(&tls.key_file)?,
    ));
    if let Some(ca) = &tls.client_ca_file {
        config = config
            .client_ca_root(Certificate::from_pem(read(ca)?))
            .client_auth_optional(false);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::without_nagle;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(without_nagle(listener));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = accepted.next().await.unwrap().unwrap();
        assert!(stream.nodelay().unwrap(), "TCP_NODELAY is set");
    }
}
