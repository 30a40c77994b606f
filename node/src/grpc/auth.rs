//! Who may call what. Every gRPC call is checked against its caller's role
//! before it reaches a service:
//!
//! - `system`: an institutional document system: submit, stream the inbox,
//!   read and act on filings;
//! - `clerk`: read and act on filings, submit at the desk;
//! - `operator`: the operations service;
//! - `public`: tracking only.
//!
//! A caller is identified by its client certificate's subject (mTLS) or by an
//! API token (`authorization: Bearer <token>`), matched by SHA-256 so the
//! configuration never holds a token itself. Tokens are never logged. Callers
//! with neither get `auth.anonymous_role` (default `public`).

use crate::config::AuthConfig;
pub use crate::config::Role;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::task::{Context, Poll};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::codegen::http;

/// Who made a call, as services see it in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    /// The token's or certificate's configured name; never the token.
    pub name: String,
}

/// Who made a gRPC request, as the authentication layer identified them,
/// and from which address.
pub fn actor_of<T>(request: &tonic::Request<T>) -> crate::audit::Actor {
    let address = request.remote_addr().map(|a| a.ip());
    match request.extensions().get::<Caller>() {
        Some(c) => crate::audit::Actor::new(c.name.clone(), c.role, address),
        None => crate::audit::Actor::new("anonymous", Role::Public, address),
    }
}

/// The roles that may call a gRPC method.
pub fn allowed(path: &str) -> &'static [Role] {
    use Role::*;
    const EVERYONE: &[Role] = &[System, Clerk, Operator, Public];
    match path {
        "/ecointegra.v1.TrackingService/Track" => EVERYONE,
        "/ecointegra.v1.FilingService/StreamInbox" => &[System],
        p if p.starts_with("/grpc.health.v1.Health/") => EVERYONE,
        p if p.starts_with("/grpc.reflection.") => EVERYONE,
        p if p.starts_with("/ecointegra.v1.OperationsService/") => &[Operator],
        p if p.starts_with("/ecointegra.v1.FilingService/") => &[System, Clerk],
        _ => &[],
    }
}

/// Identifies callers from their certificate or token.
pub struct Authenticator {
    config: AuthConfig,
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Self {
        Self { config }
    }

    /// The caller of a request: certificate first, then token, then anonymous.
    pub fn identify<B>(&self, request: &http::Request<B>) -> Result<Caller, Status> {
        if let Some(subject) = peer_subject(request)
            && let Some(c) = self
                .config
                .certificates
                .iter()
                .find(|c| c.subject == subject)
        {
            return Ok(Caller {
                role: c.role,
                name: c.subject.clone(),
            });
        }
        if let Some(value) = request.headers().get("authorization") {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    Status::unauthenticated("the authorization header is not a bearer token")
                })?;
            return self
                .by_token(token)
                .ok_or_else(|| Status::unauthenticated("unknown API token"));
        }
        Ok(Caller {
            role: self.config.anonymous_role,
            name: "anonymous".into(),
        })
    }

    /// The caller an API token names, matched by its SHA-256 in constant time.
    pub fn by_token(&self, token: &str) -> Option<Caller> {
        let digest = Sha256::digest(token.trim().as_bytes());
        self.config
            .tokens
            .iter()
            .find(|t| {
                hex::decode(&t.token_sha256)
                    .is_ok_and(|configured| configured.ct_eq(digest.as_slice()).into())
            })
            .map(|t| Caller {
                role: t.role,
                name: t.name.clone(),
            })
    }
}

/// The subject of the client certificate a TLS connection presented.
fn peer_subject<B>(request: &http::Request<B>) -> Option<String> {
    use x509_cert::der::Decode;
    let info = request
        .extensions()
        .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>(
        )?;
    let certs = info.peer_certs()?;
    let first = certs.first()?;
    let cert = x509_cert::Certificate::from_der(first.as_ref()).ok()?;
    Some(cert.tbs_certificate.subject.to_string())
}

/// A tower layer that checks every call before it reaches a service.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let verdict = self.auth.identify(&request).and_then(|caller| {
            if allowed(&path).contains(&caller.role) {
                Ok(caller)
            } else {
                tracing::info!(caller = %caller.name, role = caller.role.name(), method = %path, "Call refused.");
                Err(Status::permission_denied(format!(
                    "the {} role may not call {path}",
                    caller.role.name()
                )))
            }
        });
        match verdict {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                // Take the service that was polled ready; leave a clone behind.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { inner.call(request).await })
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    fn request(path: &str, token: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder().uri(format!("http://node{path}"));
        if let Some(t) = token {
            builder = builder.header("authorization", format!("Bearer {t}"));
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn tokens_map_to_roles_and_roles_to_methods() {
        let auth = Authenticator::new(AuthConfig {
            tokens: vec![TokenConfig {
                name: "sgd".into(),
                role: Role::System,
                token_sha256: hex::encode(Sha256::digest(b"s3cret")),
            }],
            ..AuthConfig::default()
        });
        let caller = auth.identify(&request("/x", Some("s3cret"))).unwrap();
        assert_eq!(caller.role, Role::System);
        assert_eq!(
            auth.identify(&request("/x", None)).unwrap().role,
            Role::Public
        );
        assert_eq!(
            auth.identify(&request("/x", Some("wrong")))
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );

        assert!(allowed("/ecointegra.v1.FilingService/SubmitFiling").contains(&Role::Clerk));
        assert!(!allowed("/ecointegra.v1.FilingService/SubmitFiling").contains(&Role::Public));
        assert!(!allowed("/ecointegra.v1.FilingService/StreamInbox").contains(&Role::Clerk));
        assert!(allowed("/ecointegra.v1.TrackingService/Track").contains(&Role::Public));
        assert!(allowed("/ecointegra.v1.OperationsService/ListQueues").contains(&Role::Operator));
        assert!(!allowed("/ecointegra.v1.OperationsService/ListQueues").contains(&Role::System));
        assert!(allowed("/unknown/Method").is_empty());
    }
}
