//! The PIDE `IOTramite` adapter: an institution's document-management
//! system (SGD) that exchanged filings through PIDE points at its own node
//! instead and changes nothing else.
//!
//! - **Hub side** ([`hub`]): the node serves PIDE's `IOTramiteService` to its
//!   SGD: SOAP 1.1, document/literal, at `/IOTramite` (WSDL at
//!   `/IOTramite?wsdl`), HTTP Basic with the SGD's credentials. A filing the
//!   SGD sends (`recepcionarTramiteResponse`) is filed by the same rules as
//!   `SubmitFiling` and travels over Kafka; `getCUO` issues CUOs;
//!   `consultarTramiteResponse` answers the state at the receiver; the SGD's
//!   `cargoResponse` for a filing delivered to it becomes a Receive or an
//!   Observe.
//! - **Entity side** ([`sgd`]): a filing delivered to this institution goes
//!   to its SGD's `recepcionarTramiteResponse` (the annexes by an expiring
//!   link served here at `/anexos/<token>/<name>`), and the cargo of a
//!   filing the SGD sent is pushed to it by `cargoResponse`. Both go through
//!   the notification outbox: retried with backoff until the SGD answers
//!   `0000`, and visible to operators meanwhile.

mod hub;
pub mod sgd;
pub mod xml;

use crate::config::{Config, PideConfig};
use crate::error::{Error, Result};
use crate::lifecycle::Desk;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The path of the SOAP service.
pub const SERVICE_PATH: &str = "/IOTramite";

/// What the adapter's handlers share.
pub struct Pide {
    desk: Desk,
    config: PideConfig,
    /// The SGD's password.
    password: String,
}

impl Pide {
    /// This institution's RUC, from the signed directory.
    fn my_ruc(&self) -> Option<String> {
        self.desk
            .trust
            .directory()
            .get(self.desk.institution())
            .map(|me| me.ruc.clone())
            .filter(|ruc| !ruc.is_empty())
    }
}

/// Reads a secret from its file (trimmed).
pub fn read_secret(path: &std::path::Path, key: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::FailedPrecondition(format!("{key} {}: {e}", path.display())))
}

/// Binds `[pide] listen`, if the adapter is configured.
pub async fn bind(config: &Config) -> Result<Option<TcpListener>> {
    crate::telemetry::http::bind_listen(config.pide.as_ref().map(|p| p.listen), "pide.listen").await
}

/// Serves the adapter on `listener` until `cancel` fires; writes
/// `<data_dir>/pide.addr`.
pub fn spawn(
    desk: Desk,
    listener: Option<TcpListener>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<()> {
    let (Some(listener), Some(config)) = (listener, desk.config.pide.clone()) else {
        return Ok(());
    };
    let password = read_secret(&config.password_file, "pide.password_file")?;
    let data_dir = desk.config.data_dir.clone();
    let pide = Arc::new(Pide {
        desk,
        config,
        password,
    });
    let app = Router::new()
        .route(SERVICE_PATH, get(wsdl).post(soap))
        .route("/anexos/{token}/{name}", get(annex))
        .with_state(pide);
    crate::telemetry::http::serve(&data_dir, listener, app, "pide", tracker, cancel).map(drop)
}

/// `GET /IOTramite?wsdl`: the service's description.
async fn wsdl(State(pide): State<Arc<Pide>>, RawQuery(query): RawQuery) -> Response {
    if !query.is_some_and(|q| q.eq_ignore_ascii_case("wsdl")) {
        return (
            StatusCode::BAD_REQUEST,
            "POST SOAP 1.1 requests here; the WSDL is at ?wsdl\n",
        )
            .into_response();
    }
    let address = format!("{}{SERVICE_PATH}", sgd::public_url(&pide.config));
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        include_str!("IOTramite.wsdl").replace("{{ADDRESS}}", &xml::escape(&address)),
    )
        .into_response()
}

/// A SOAP answer: 200 with the message, or 500 (401, 413, 415) with a Fault.
fn soap_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A Fault for a request at fault (SOAP's `Client`).
fn fault(status: StatusCode, reason: &str) -> Response {
    soap_response(status, xml::fault(true, reason))
}

/// `POST /IOTramite`: one SOAP call of the SGD.
async fn soap(State(pide): State<Arc<Pide>>, headers: HeaderMap, body: Body) -> Response {
    if !authorised(&pide, &headers) {
        let mut response = fault(
            StatusCode::UNAUTHORIZED,
            "the SGD's credentials are required",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"IOTramite\""),
        );
        return response;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.to_ascii_lowercase().starts_with("text/xml") {
        return fault(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Content-Type {content_type:?}: SOAP 1.1 requests are text/xml"),
        );
    }
    let limit = pide.config.max_request_bytes;
    let Some(bytes) = read_capped(body, usize::try_from(limit).unwrap_or(usize::MAX)).await else {
        let mut response = fault(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request is over {limit} bytes (pide.max_request_bytes)"),
        );
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    };
    let call = match xml::parse(&bytes, xml::HUB_NS) {
        Ok(call) => call,
        Err(xml::Fault(reason)) => return fault(StatusCode::INTERNAL_SERVER_ERROR, &reason),
    };
    drop(bytes);
    if let Some(action) = headers.get("soapaction").and_then(|v| v.to_str().ok())
        && !action_names(action, &call.operation)
    {
        return fault(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!(
                "SOAPAction {action} does not name operation {}",
                call.operation
            ),
        );
    }
    match hub::answer(&pide, call).await {
        Ok(message) => soap_response(StatusCode::OK, message),
        Err(xml::Fault(reason)) => fault(StatusCode::INTERNAL_SERVER_ERROR, &reason),
    }
}

/// Reads a request's body, keeping at most `limit` bytes: `None` if it is
/// larger. The rest of a larger one is read and dropped (for a few seconds at
/// most), so its sender is not left writing into a full socket and gets the
/// answer.
async fn read_capped(body: Body, limit: usize) -> Option<Vec<u8>> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut kept = Vec::new();
    let mut over = false;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(_))) | Err(_) => return None,
            Ok(None) => break,
        };
        if let Ok(data) = frame.into_data() {
            if over || kept.len() + data.len() > limit {
                over = true;
                kept = Vec::new();
            } else {
                kept.extend_from_slice(&data);
            }
        }
    }
    (!over).then_some(kept)
}

/// Whether a SOAPAction header fits the operation in the body: empty (as
/// the contract's WSDLs declare it), the operation's name, or a URI ending
/// in it.
fn action_names(action: &str, operation: &str) -> bool {
    let action = action.trim().trim_matches('"');
    action.is_empty()
        || action == operation
        || [b'/', b'#', b':'].iter().any(|sep| {
            action
                .strip_suffix(operation)
                .is_some_and(|head| head.as_bytes().last() == Some(sep))
        })
}

/// HTTP Basic with the SGD's user name and password.
fn authorised(pide: &Pide, headers: &HeaderMap) -> bool {
    use base64::Engine;
    use subtle::ConstantTimeEq;
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
    else {
        return false;
    };
    let expected = format!("{}:{}", pide.config.username, pide.password);
    bool::from(given.ct_eq(expected.as_bytes()))
}

/// `GET /anexos/<token>/<name>`: a document of a filing delivered to the
/// SGD, while the link's token is valid.
async fn annex(
    State(pide): State<Arc<Pide>>,
    Path((token, name)): Path<(String, String)>,
) -> Response {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            "no such annex, or the link expired\n",
        )
            .into_response()
    };
    if token.len() > 64 {
        return not_found();
    }
    let store = pide.desk.store.clone();
    let found = store
        .run(move |s| {
            let Some(transfer) = s.sgd_link_transfer(&token)? else {
                return Ok(None);
            };
            Ok(s.filing_by_transfer(&transfer)?
                .and_then(|f| f.data.documents.iter().find(|d| d.name == name).cloned()))
        })
        .await;
    let document = match found {
        Ok(Some(document)) => document,
        Ok(None) => return not_found(),
        Err(error) => {
            tracing::warn!(%error, "Cannot look up an annex link.");
            return (StatusCode::SERVICE_UNAVAILABLE, "try again later\n").into_response();
        }
    };
    let desk = &pide.desk;
    let opened = desk
        .store
        .open_document(&desk.blobs, &document.sha256, document.size)
        .await;
    let file = match opened {
        Ok(file) => file,
        Err(error) => {
            tracing::warn!(%error, "An annex cannot be opened.");
            return not_found();
        }
    };
    (
        [
            (header::CONTENT_TYPE, document.media_type.clone()),
            (header::CONTENT_LENGTH, document.size.to_string()),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soap_actions_must_name_the_operation() {
        for fits in [
            "",
            "\"\"",
            "getCUO",
            "\"urn:getCUO\"",
            "http://x/IOTramite/getCUO",
            "a#getCUO",
        ] {
            assert!(action_names(fits, "getCUO"), "{fits}");
        }
        for other in ["cargoResponse", "\"urn:cargoResponse\"", "xgetCUO"] {
            assert!(!action_names(other, "getCUO"), "{other}");
        }
    }
}
