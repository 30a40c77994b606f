//! The web console, served by the node itself on its own port: server-rendered
//! HTML in Spanish (English available), a little JavaScript for upload progress
//! and live refresh, and nothing to build. Pages are maud templates compiled
//! into the binary; maud escapes every value spliced into a page, so no call
//! site has to remember to.
//!
//! - [`citizen`]: tracking and the printable cargo, for anyone (public);
//! - [`desk`]: the clerk's desk: new filings, the inbox, a filing and its
//!   actions (clerk role);
//! - [`operator`]: queues, throughput and latency, dead letters (operator role).
//!
//! Clerks and operators sign in with their API token (the same tokens and roles
//! as gRPC); the console keeps a server-side session, in the node's store so
//! restarts keep it, behind an HttpOnly, SameSite=Strict cookie (Secure when
//! the request came over TLS), and every form carries a CSRF token: the
//! session's, or, on the sign-in form, one bound to a cookie of its own.
//! Failed sign-ins are limited per client, apart from tracking look-ups;
//! behind a reverse proxy listed in `web.trusted_proxies` the client is the
//! address the proxy forwarded for. Input goes through the same functions, and
//! so the same rules, as gRPC.

mod citizen;
mod desk;
mod forms;
mod operator;
mod page;
mod text;

use crate::clients::{Limiter, TrustedProxies};
use crate::config::WebConfig;
use crate::error::{Error, Result};
use crate::grpc::Services;
use crate::grpc::auth::{Authenticator, Role};
use crate::lifecycle::Desk;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use text::Lang;

/// Binds the configured address before the node starts its tasks, so a taken
/// port fails the start.
pub async fn bind(config: &WebConfig) -> Result<Option<TcpListener>> {
    crate::telemetry::http::bind_listen(config.listen, "web.listen").await
}

/// Serves the console on `listener` until `cancel` fires; writes
/// `<data_dir>/web.addr`.
pub fn spawn(
    services: Arc<Services>,
    listener: Option<TcpListener>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<Option<SocketAddr>> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let config = services.desk.config.clone();
    let proxies = TrustedProxies::parse(&config.web.trusted_proxies).map_err(|why| {
        Error::Config(crate::config::ConfigError {
            message: format!("web.trusted_proxies: {why}"),
        })
    })?;
    let web = Arc::new(Web {
        auth: Authenticator::new(config.auth.clone()),
        desk: services.desk.clone(),
        services,
        proxies,
        sign_in_limiter: Limiter::default(),
    });
    crate::telemetry::http::serve(
        &config.data_dir,
        listener,
        router(web),
        "web",
        tracker,
        cancel,
    )
    .map(Some)
}

fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(citizen::home))
        .route("/seguimiento", get(citizen::track))
        .route("/cargo", get(citizen::cargo))
        .route("/cargo.pdf", get(citizen::cargo_pdf))
        .route("/evidencia", get(citizen::evidence))
        .route("/baja", get(citizen::unsubscribe))
        .route("/verificar", get(citizen::verify))
        .route("/entrar", get(sign_in_form).post(sign_in))
        .route("/salir", post(sign_out))
        .route("/idioma", get(language))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/mesa", get(desk::inbox))
        .route(
            "/mesa/nuevo",
            get(desk::new_form)
                .post(desk::new_filing)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/mesa/tramite/{code}", get(desk::filing))
        .route("/mesa/tramite/{code}/cargo", get(desk::cargo))
        .route("/mesa/tramite/{code}/cargo.pdf", get(desk::cargo_pdf))
        .route("/mesa/tramite/{code}/evidencia", get(desk::evidence))
        .route(
            "/mesa/tramite/{code}/documento/{index}",
            get(desk::document),
        )
        .route(
            "/mesa/tramite/{code}/atender",
            post(desk::answer).layer(DefaultBodyLimit::disable()),
        )
        .route("/mesa/tramite/{code}/{action}", post(desk::act))
        .route("/operacion", get(operator::dashboard))
        .route("/operacion/colas", get(operator::queues))
        .route("/operacion/grafico", get(operator::chart))
        .route("/operacion/dlq/{id}", get(operator::dead_letter))
        .route("/operacion/dlq/{id}/reenviar", post(operator::replay))
        .route("/operacion/dlq/{id}/descartar", post(operator::discard))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(web)
}

/// The console's state: the node's, who may forward, and failed sign-ins.
pub struct Web {
    /// Intake, clerk actions and citizen look-ups; its store keeps the
    /// sessions.
    desk: Desk,
    /// Queues and dead letters, for operators.
    services: Arc<Services>,
    auth: Authenticator,
    proxies: TrustedProxies,
    sign_in_limiter: Limiter,
}

/// A signed-in clerk or operator.
#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    /// The token's configured name, e.g. `mesa-senamhi-1`; never the token.
    pub name: String,
    /// Every form of the session carries it back.
    pub csrf: String,
}

const SESSION_COOKIE: &str = "eco_sesion";
const LANG_COOKIE: &str = "eco_idioma";
/// The sign-in form's CSRF token, before there is a session.
const SIGN_IN_COOKIE: &str = "eco_entrada";

/// What every page needs about its request: language, who is signed in,
/// where the request came from.
pub struct Ctx {
    pub lang: Lang,
    pub session: Option<Session>,
    /// The request's path and query, to come back to after switching language
    /// or signing in.
    pub here: String,
    pub client: IpAddr,
    /// The request came over TLS: to a trusted proxy that says so, or to a
    /// `web.public_url` that is https.
    pub tls: bool,
    /// `scheme://host` the request came to, or `web.public_url`.
    pub base_url: String,
    /// This institution's name, for the page header.
    pub institution: String,
}

impl Ctx {
    pub fn t(&self) -> &'static text::Texts {
        self.lang.texts()
    }

    /// Who `session` is, calling from this request's client.
    pub fn actor(&self, session: &Session) -> crate::audit::Actor {
        crate::audit::Actor::new(session.name.clone(), session.role, Some(self.client))
    }

    /// The session if its role is `role`; otherwise the answer to send: the
    /// sign-in page, or 403 for someone signed in with another role.
    #[allow(clippy::result_large_err)] // the Err is the page to send, used at once
    pub fn require(&self, role: Role) -> std::result::Result<&Session, Response> {
        match &self.session {
            Some(s) if s.role == role => Ok(s),
            Some(_) => Err(page::message(
                self,
                StatusCode::FORBIDDEN,
                self.t().forbidden_title,
                self.t().forbidden_body,
            )),
            None => Err(
                Redirect::to(&format!("/entrar?volver={}", forms::url_encode(&self.here)))
                    .into_response(),
            ),
        }
    }

    /// The session of someone with `role` sending `form`: the form must carry
    /// the session's CSRF token. Otherwise the answer to send instead.
    #[allow(clippy::result_large_err)] // the Err is the page to send, used at once
    pub fn posting(
        &self,
        role: Role,
        form: &forms::Fields,
    ) -> std::result::Result<Session, Response> {
        let session = self.require(role)?;
        self.check_csrf(session, form.get("csrf"))?;
        Ok(session.clone())
    }

    /// Checks a form's CSRF token against the session's.
    #[allow(clippy::result_large_err)]
    fn check_csrf(
        &self,
        session: &Session,
        presented: Option<&str>,
    ) -> std::result::Result<(), Response> {
        let ok = presented.is_some_and(|p| p.as_bytes().ct_eq(session.csrf.as_bytes()).into());
        if ok {
            return Ok(());
        }
        Err(page::message(
            self,
            StatusCode::FORBIDDEN,
            self.t().csrf_title,
            self.t().csrf_body,
        ))
    }
}

impl FromRequestParts<Arc<Web>> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        web: &Arc<Web>,
    ) -> std::result::Result<Self, Self::Rejection> {
        let cookies = CookieJar::from_headers(&parts.headers);
        let lang = cookies
            .get(LANG_COOKIE)
            .and_then(|l| Lang::parse(l.value()))
            .unwrap_or_default();
        let session = match cookies.get(SESSION_COOKIE) {
            Some(id) => web.session(id.value()).await,
            None => None,
        };
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
        let origin = web.proxies.origin(peer, &parts.headers);
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            })
            .unwrap_or("localhost");
        let base_url = match &web.desk.config.web.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if origin.tls => format!("https://{host}"),
            None => format!("http://{host}"),
        };
        Ok(Ctx {
            lang,
            session,
            here: parts
                .uri
                .path_and_query()
                .map_or("/".into(), |p| p.as_str().to_owned()),
            client: origin.client,
            tls: origin.tls || base_url.starts_with("https://"),
            base_url,
            institution: page::institution(&web.desk.trust.directory(), web.desk.institution()),
        })
    }
}

impl Web {
    /// The session behind cookie value `id`, if it is current. A store that
    /// cannot be read signs nobody in (and says so in the log).
    async fn session(&self, id: &str) -> Option<Session> {
        let id = id.to_owned();
        let now = ecointegra_broker::now_ms();
        let row = self.desk.store.run(move |s| s.session(&id, now)).await;
        let row = match row {
            Ok(row) => row?,
            Err(e) => {
                tracing::error!(error = %e, "Cannot read a console session.");
                return None;
            }
        };
        let role = match row.role.as_str() {
            "clerk" => Role::Clerk,
            "operator" => Role::Operator,
            _ => return None,
        };
        Some(Session {
            role,
            name: row.name,
            csrf: row.csrf,
        })
    }

    /// Opens a session for `name` with `role`; returns the cookie's value.
    async fn open_session(&self, role: Role, name: String) -> Result<String> {
        let id = crate::ids::random_hex(32);
        let minutes = i64::from(self.desk.config.web.session_minutes.max(1));
        let now = ecointegra_broker::now_ms();
        let row = crate::store::sessions::SessionRow {
            role: role.name().to_owned(),
            name,
            csrf: crate::ids::random_hex(32),
            expires_at_ms: now + minutes * 60_000,
        };
        let cookie = id.clone();
        self.desk
            .store
            .run(move |s| s.open_session(&id, &row, now))
            .await?;
        Ok(cookie)
    }

    async fn close_session(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.desk.store.run(move |s| s.close_session(&id)).await
    }
}

/// The session cookie: HttpOnly, SameSite=Strict, and Secure when the
/// console is reached over HTTPS.
fn session_cookie(value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .build()
}

/// A path on this site to go back to, never another site: it starts with a
/// single `/` and has no backslash, whitespace or control character (which
/// browsers skip or turn into `/`: `/\t/evil.example` goes to another site).
fn local_path(path: Option<&str>) -> Option<&str> {
    path.filter(|p| {
        p.starts_with('/')
            && !p.starts_with("//")
            && p.len() <= 2048
            && !p
                .chars()
                .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    })
}

/// The sign-in form's CSRF cookie: HttpOnly, SameSite=Strict, for the
/// sign-in page alone, and gone after an hour.
fn sign_in_cookie(value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((SIGN_IN_COOKIE, value))
        .path("/entrar")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(time::Duration::hours(1))
        .build()
}

#[derive(Deserialize)]
struct SignInQuery {
    volver: Option<String>,
}

/// The sign-in form, with a fresh CSRF token in it and in its cookie.
async fn sign_in_form(ctx: Ctx, jar: CookieJar, Query(q): Query<SignInQuery>) -> Response {
    let token = crate::ids::random_hex(32);
    let form = page::sign_in(
        &ctx,
        &token,
        local_path(q.volver.as_deref()),
        None,
        StatusCode::OK,
    );
    (jar.add(sign_in_cookie(token, ctx.tls)), form).into_response()
}

async fn sign_in(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    jar: CookieJar,
    Form(form): Form<forms::Fields>,
) -> Response {
    let t = ctx.t();
    let back = local_path(form.get("volver"));
    // The form must carry the token its cookie holds: another site cannot
    // sign a browser in (to an account of the attacker's).
    let Some(expected) = jar.get(SIGN_IN_COOKIE).map(|c| c.value().to_owned()) else {
        return page::message(&ctx, StatusCode::FORBIDDEN, t.csrf_title, t.csrf_body);
    };
    let presented = form.get("csrf").unwrap_or_default();
    if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return page::message(&ctx, StatusCode::FORBIDDEN, t.csrf_title, t.csrf_body);
    }
    let limit = web.desk.config.web.max_sign_in_failures_per_minute;
    if web.sign_in_limiter.blocked(ctx.client, limit) {
        return page::sign_in(
            &ctx,
            &expected,
            back,
            Some(t.too_many_attempts),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let caller = form.get("token").and_then(|token| web.auth.by_token(token));
    let Some(caller) = caller.filter(|c| matches!(c.role, Role::Clerk | Role::Operator)) else {
        web.sign_in_limiter.fail(ctx.client);
        tracing::warn!(client = %ctx.client, "Web console sign-in refused.");
        let nobody = crate::audit::Actor::new("anonymous", Role::Public, Some(ctx.client));
        let refused: std::result::Result<(), &str> =
            Err("refused: not a clerk's or operator's token");
        web.desk
            .store
            .audit(&nobody, "console sign-in", "", &refused)
            .await;
        return page::sign_in(
            &ctx,
            &expected,
            back,
            Some(t.sign_in_failed),
            StatusCode::UNAUTHORIZED,
        );
    };
    tracing::info!(user = %caller.name, role = caller.role.name(), "Web console sign-in.");
    let home = match caller.role {
        Role::Operator => "/operacion",
        _ => "/mesa",
    };
    let actor = crate::audit::Actor::new(caller.name.clone(), caller.role, Some(ctx.client));
    let opened = web.open_session(caller.role, caller.name).await;
    web.desk
        .store
        .audit(&actor, "console sign-in", "", &opened)
        .await;
    let id = match opened {
        Ok(id) => id,
        Err(e) => return failure(&ctx, e),
    };
    let mut used = sign_in_cookie(String::new(), ctx.tls);
    used.set_max_age(time::Duration::ZERO);
    let target = back.unwrap_or(home);
    (
        jar.add(used).add(session_cookie(id, ctx.tls)),
        Redirect::to(target),
    )
        .into_response()
}

async fn sign_out(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    jar: CookieJar,
    Form(form): Form<forms::Fields>,
) -> Response {
    if let Some(session) = &ctx.session
        && let Err(denied) = ctx.check_csrf(session, form.get("csrf"))
    {
        return denied;
    }
    if let Some(id) = jar.get(SESSION_COOKIE) {
        let closed = web.close_session(id.value()).await;
        if let Some(session) = &ctx.session {
            let actor = ctx.actor(session);
            web.desk
                .store
                .audit(&actor, "console sign-out", "", &closed)
                .await;
        }
        if let Err(e) = closed {
            return failure(&ctx, e);
        }
    }
    // Emptied and expired at once, with the attributes it was set with.
    let mut gone = session_cookie(String::new(), ctx.tls);
    gone.set_max_age(time::Duration::ZERO);
    (jar.add(gone), Redirect::to("/")).into_response()
}

#[derive(Deserialize)]
struct LanguageQuery {
    lang: String,
    volver: Option<String>,
}

async fn language(jar: CookieJar, Query(q): Query<LanguageQuery>) -> Response {
    let lang = Lang::parse(&q.lang).unwrap_or_default();
    let cookie = Cookie::build((LANG_COOKIE, lang.code()))
        .path("/")
        .max_age(time::Duration::days(365))
        .same_site(SameSite::Lax);
    let back = local_path(q.volver.as_deref()).unwrap_or("/");
    (jar.add(cookie), Redirect::to(back)).into_response()
}

async fn css() -> Response {
    static_file("text/css; charset=utf-8", include_str!("console.css"))
}

async fn js() -> Response {
    static_file("text/javascript; charset=utf-8", include_str!("console.js"))
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn not_found(ctx: Ctx) -> Response {
    page::message(
        &ctx,
        StatusCode::NOT_FOUND,
        ctx.t().not_found_title,
        ctx.t().not_found_body,
    )
}

/// Headers every answer carries: no inline script, no framing by other
/// sites, no referrer (tracking codes travel in URLs), no caching of pages
/// that show filings.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'",
        ));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A filing's evidence bundle as a download (see [`crate::evidence`]).
async fn evidence_download(web: &Web, ctx: &Ctx, code: &str, with_documents: bool) -> Response {
    let file = match crate::evidence::bundle(&web.desk, code, with_documents).await {
        Ok(file) => file,
        Err(e) => return failure(ctx, e),
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or_default();
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        tokio::fs::File::from_std(file),
        256 * 1024,
    ));
    (
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"evidencia-{}.zip\"", file_stem(code)),
            ),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response()
}

/// A tracking code as part of a download's file name: letters, digits, `-`.
fn file_stem(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// A cargo as a PDF file, shown inline.
fn pdf_response(code: &str, cargo: &crate::evidence::pdf::Cargo) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/pdf".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"cargo-{}.pdf\"", file_stem(code)),
            ),
        ],
        crate::evidence::pdf::render(cargo),
    )
        .into_response()
}

/// The answer to a failed call: a page saying what went wrong, in the
/// reader's language; internal details stay in the log.
fn failure(ctx: &Ctx, error: Error) -> Response {
    let t = ctx.t();
    match error {
        Error::NotFound(_) => page::message(
            ctx,
            StatusCode::NOT_FOUND,
            t.not_found_title,
            t.not_found_body,
        ),
        Error::FailedPrecondition(why) => page::message(
            ctx,
            StatusCode::CONFLICT,
            t.not_possible_title,
            &text::localize(ctx.lang, &why),
        ),
        Error::InvalidArgument(violations) => {
            let why: Vec<String> = violations
                .iter()
                .map(|v| format!("{}: {}", v.field, text::localize(ctx.lang, &v.description)))
                .collect();
            page::message(
                ctx,
                StatusCode::UNPROCESSABLE_ENTITY,
                t.invalid_title,
                &why.join("; "),
            )
        }
        Error::ResourceExhausted(_) => page::message(
            ctx,
            StatusCode::TOO_MANY_REQUESTS,
            t.too_many_title,
            t.too_many_attempts,
        ),
        Error::ShuttingDown => page::message(
            ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            t.unavailable_title,
            t.unavailable_body,
        ),
        other => {
            tracing::error!(error = %other, "Web console request failed.");
            page::message(
                ctx,
                StatusCode::INTERNAL_SERVER_ERROR,
                t.unavailable_title,
                t.internal_body,
            )
        }
    }
}
