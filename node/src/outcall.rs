//! Calls this node makes to other HTTP servers: the institution's webhooks,
//! its document-management system (PIDE), and the hosts an SGD names for its
//! annexes. HTTP/1.1 with hyper's client; `https://` with rustls and the web
//! PKI's roots. Bodies may stream both ways, so no document is held whole.

use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Bytes, Frame, Incoming};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A request body: whole, or streamed.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A body from bytes at hand.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body streamed from a channel: the sender writes the pieces as it
/// produces them (and an error to abort the request).
pub fn channel(capacity: usize) -> (mpsc::Sender<std::io::Result<Bytes>>, Body) {
    use tokio_stream::StreamExt;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(capacity);
    let frames =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(|piece| piece.map(Frame::data));
    (tx, http_body_util::StreamBody::new(frames).boxed())
}

/// Sends a request to `url` with `headers` and `body`; the answer's head,
/// its body to be read (see [`read_capped`]).
pub async fn send(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Result<http::Response<Incoming>, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url} is not an http(s) URL")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("{url} names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            http::header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(http::header::USER_AGENT, "ecointegra");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body).map_err(|e| e.to_string())?;
    if https {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("{host}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        exchange(hyper_util::rt::TokioIo::new(tls), request).await
    } else {
        exchange(hyper_util::rt::TokioIo::new(tcp), request).await
    }
}

async fn exchange<T>(
    io: T,
    request: http::Request<Body>,
) -> Result<http::Response<Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// Reads a whole answer's body, refusing one over `limit` bytes.
pub async fn read_capped(mut body: Incoming, limit: usize) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the answer broke off: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(format!("the answer is over {limit} bytes"));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// `Basic` credentials for an `Authorization` header.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
