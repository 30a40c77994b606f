//! The clerk's desk (clerk role): a new filing with its documents and the
//! printable cargo for the citizen; the inbox with filters; a filing with its
//! documents, timeline and actions. Form fields are named after the gRPC
//! fields they fill, so a broken rule lands next to its field.

use super::forms::{self, Fields, url_encode};
use super::page::{self, esc, when};
use super::{Ctx, Web, failure};
use crate::error::{Error, Violation};
use crate::grpc::auth::Role;
use crate::lifecycle::deadlines::{Calendar, Day};
use crate::lifecycle::workflow::Action;
use crate::store::FilingRow;
use crate::submit::DocPart;
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use ecointegra_proto::v1::{
    Direction, FilingHeader, FilingStatus, IdentityDocumentType, Party, TransferKind,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// Broken rules by form field; those of no field of the form under "".
struct Problems(HashMap<String, String>);

impl Problems {
    fn new(violations: &[Violation], fields: &[&str], ctx: &Ctx) -> Self {
        let mut map: HashMap<String, String> = HashMap::new();
        for v in violations {
            let field = if v.field.starts_with("documents") {
                "documents"
            } else {
                v.field.as_str()
            };
            let key = if fields.contains(&field) { field } else { "" };
            let text = super::text::localize(ctx.lang, &v.description);
            map.entry(key.to_owned())
                .and_modify(|e| {
                    e.push_str("; ");
                    e.push_str(&text)
                })
                .or_insert(text);
        }
        Problems(map)
    }

    fn none() -> Self {
        Problems(HashMap::new())
    }

    fn of(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// A summary at the top of a form, linking to each field at fault.
    /// `scope` is the form's part of its fields' ids (see `page::field_id`).
    fn summary(&self, ctx: &Ctx, scope: &str) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let mut out = format!(
            r#"<div class="error-summary" role="alert" tabindex="-1"><p>{}</p><ul>"#,
            ctx.t().fix_errors
        );
        let mut fields: Vec<_> = self.0.iter().collect();
        fields.sort();
        for (field, text) in fields {
            if field.is_empty() {
                let _ = write!(out, "<li>{}</li>", esc(text));
            } else {
                let id = page::field_id(&format!("{scope}{field}"));
                let _ = write!(out, r##"<li><a href="#{id}">{}</a></li>"##, esc(text));
            }
        }
        out.push_str("</ul></div>");
        out
    }
}

// ---- New filing ----

const FILING_FIELDS: [&str; 10] = [
    "header.sender_party.document_type",
    "header.sender_party.document_number",
    "header.sender_party.name",
    "header.sender_party.email",
    "header.destination",
    "header.subject",
    "header.folio_count",
    "header.filing_type",
    "header.corrects_tracking_code",
    "documents",
];

pub async fn new_form(State(web): State<Arc<Web>>, ctx: Ctx) -> Response {
    if let Err(denied) = ctx.require(Role::Clerk) {
        return denied;
    }
    filing_form(
        &web,
        &ctx,
        &Fields::default(),
        &Problems::none(),
        StatusCode::OK,
    )
}

fn filing_form(
    web: &Web,
    ctx: &Ctx,
    values: &Fields,
    problems: &Problems,
    status: StatusCode,
) -> Response {
    let t = ctx.t();
    let destinations = destinations(web, ctx);
    let id_types = [("DNI", "DNI"), ("RUC", "RUC"), ("CE", t.foreign_id)]
        .map(|(v, l)| (v.to_owned(), l.to_owned()));
    let mut types = vec![("general".to_owned(), t.general.to_owned())];
    types.extend(
        web.desk
            .config
            .deadlines
            .business_days_by_type
            .keys()
            .map(|k| (k.clone(), k.replace('-', " "))),
    );
    // A new key per blank form: sending the same form twice files once.
    let key = match values.value("header.idempotency_key") {
        "" => crate::ids::random_hex(16),
        k => k.to_owned(),
    };
    let body = format!(
        r#"{summary}<form method="post" action="/mesa/nuevo" enctype="multipart/form-data" class="card" data-upload novalidate>
{csrf}<input type="hidden" name="header.idempotency_key" value="{key}">
<fieldset><legend>{l_sender}</legend>
{doc_type}{doc_number}{name}{email}
</fieldset>
<fieldset><legend>{l_filing}</legend>
{destination}{subject}{folios}{filing_type}{corrects}
</fieldset>
<fieldset><legend>{l_documents}</legend>
{documents}
<progress max="100" value="0" hidden data-progress aria-label="{l_progress}"></progress>
<p class="help" data-progress-text aria-live="polite"></p>
</fieldset>
<button type="submit">{l_submit}</button>
</form>"#,
        summary = problems.summary(ctx, ""),
        csrf = page::csrf(ctx),
        key = esc(&key),
        l_sender = t.sender,
        doc_type = page::select(
            "header.sender_party.document_type",
            t.id_type,
            &id_types,
            values.value("header.sender_party.document_type"),
            problems.of("header.sender_party.document_type"),
        ),
        doc_number = page::input(
            "header.sender_party.document_number",
            t.id_number,
            values.value("header.sender_party.document_number"),
            problems.of("header.sender_party.document_number"),
            r#"required inputmode="numeric" autocomplete="off""#,
            Some(t.id_number_help),
        ),
        name = page::input(
            "header.sender_party.name",
            t.sender_name,
            values.value("header.sender_party.name"),
            problems.of("header.sender_party.name"),
            r#"required autocomplete="name""#,
            None,
        ),
        email = page::input(
            "header.sender_party.email",
            t.email_optional,
            values.value("header.sender_party.email"),
            problems.of("header.sender_party.email"),
            r#"type="email" autocomplete="email""#,
            None,
        ),
        l_filing = t.filing,
        destination = page::select(
            "header.destination",
            t.destination,
            &destinations,
            values.value("header.destination"),
            problems.of("header.destination"),
        ),
        subject = page::textarea(
            "header.subject",
            t.subject,
            values.value("header.subject"),
            problems.of("header.subject"),
            r#"required maxlength="500""#,
        ),
        folios = page::input(
            "header.folio_count",
            t.folios,
            values.value("header.folio_count"),
            problems.of("header.folio_count"),
            r#"type="number" min="1" required inputmode="numeric""#,
            None,
        ),
        filing_type = page::select(
            "header.filing_type",
            t.filing_type,
            &types,
            values.value("header.filing_type"),
            problems.of("header.filing_type"),
        ),
        corrects = page::input(
            "header.corrects_tracking_code",
            t.corrects,
            values.value("header.corrects_tracking_code"),
            problems.of("header.corrects_tracking_code"),
            r#"autocomplete="off" autocapitalize="characters""#,
            Some(t.corrects_help),
        ),
        l_documents = t.documents,
        documents = page::input(
            "documents",
            t.pdf_files,
            "",
            problems.of("documents"),
            r#"type="file" multiple accept="application/pdf,.pdf" required"#,
            Some(t.pdf_files_help),
        ),
        l_progress = t.upload_progress,
        l_submit = t.submit_filing,
    );
    page::render(ctx, status, t.new_filing_title, &body)
}

/// The institutions a filing may go to from here, as choices: every other
/// active one of the directory, after a "choose" prompt.
fn destinations(web: &Web, ctx: &Ctx) -> Vec<(String, String)> {
    let directory = web.desk.trust.directory();
    let now = ecointegra_broker::now_ms();
    let mut options = vec![(String::new(), ctx.t().choose.to_owned())];
    options.extend(
        directory
            .institutions()
            .filter(|i| i.id != web.desk.institution() && i.inactive_reason(now).is_none())
            .map(|i| (i.id.clone(), page::institution(&directory, &i.id))),
    );
    options
}

fn filing_header(fields: &Fields) -> Result<FilingHeader, Vec<Violation>> {
    let mut problems = Vec::new();
    let folios = fields.value("header.folio_count").trim();
    let folio_count = match folios.parse::<u32>() {
        Ok(n) => n,
        Err(_) if folios.is_empty() => 0,
        Err(_) => {
            problems.push(Violation::new(
                "header.folio_count",
                "must be a whole number",
            ));
            0
        }
    };
    let document_type = match fields.value("header.sender_party.document_type") {
        "DNI" => IdentityDocumentType::Dni,
        "RUC" => IdentityDocumentType::Ruc,
        "CE" => IdentityDocumentType::Ce,
        _ => IdentityDocumentType::Unspecified,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(FilingHeader {
        destination: fields.value("header.destination").trim().to_owned(),
        subject: fields.value("header.subject").trim().to_owned(),
        sender_party: Some(Party {
            name: fields.value("header.sender_party.name").trim().to_owned(),
            document_type: document_type as i32,
            document_number: fields
                .value("header.sender_party.document_number")
                .trim()
                .to_owned(),
            email: fields.value("header.sender_party.email").trim().to_owned(),
        }),
        folio_count,
        idempotency_key: fields.value("header.idempotency_key").trim().to_owned(),
        filing_type: match fields.value("header.filing_type").trim() {
            "general" => String::new(),
            other => other.to_owned(),
        },
        corrects_tracking_code: fields
            .value("header.corrects_tracking_code")
            .trim()
            .to_owned(),
    })
}

pub async fn new_filing(State(web): State<Arc<Web>>, ctx: Ctx, multipart: Multipart) -> Response {
    let (session, fields, mut documents) = match upload_form(&ctx, multipart).await {
        Ok(form) => form,
        Err(denied) => return denied,
    };
    let header = match filing_header(&fields) {
        Ok(h) => h,
        Err(violations) => {
            drain(&mut documents).await;
            let problems = Problems::new(&violations, &FILING_FIELDS, &ctx);
            return filing_form(
                &web,
                &ctx,
                &fields,
                &problems,
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
    };
    let submitted = crate::submit::accept(&web.desk, header, &mut documents).await;
    // Whatever was not read (the rules failed first) is read and dropped, so
    // the browser gets its answer rather than a reset connection.
    drain(&mut documents).await;
    match submitted {
        Ok(answer) => {
            tracing::info!(
                tracking_code = %answer.tracking_code,
                clerk = %session.name,
                documents = answer.documents.len(),
                "Filing accepted at the desk."
            );
            Redirect::to(&format!(
                "/mesa/tramite/{}/cargo",
                url_encode(&answer.tracking_code)
            ))
            .into_response()
        }
        Err(Error::InvalidArgument(violations)) => {
            let problems = Problems::new(&violations, &FILING_FIELDS, &ctx);
            filing_form(
                &web,
                &ctx,
                &fields,
                &problems,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        Err(other) => failure(&ctx, other),
    }
}

/// A clerk's multipart form: the session (the form must carry its CSRF
/// token), the text fields, and the documents still to be read.
#[allow(clippy::result_large_err)]
async fn upload_form(
    ctx: &Ctx,
    multipart: Multipart,
) -> Result<
    (
        super::Session,
        Fields,
        ReceiverStream<crate::error::Result<DocPart>>,
    ),
    Response,
> {
    ctx.require(Role::Clerk)?;
    let (fields, documents) = forms::upload(multipart)
        .await
        .map_err(|e| failure(ctx, e))?;
    let session = ctx.posting(Role::Clerk, &fields)?;
    Ok((session, fields, documents))
}

async fn drain<S: tokio_stream::Stream + Unpin>(stream: &mut S) {
    while stream.next().await.is_some() {}
}

// ---- Inbox ----

#[derive(Deserialize, Default)]
pub struct InboxQuery {
    #[serde(default)]
    estado: String,
    #[serde(default)]
    desde: String,
    #[serde(default)]
    vence: String,
}

const INBOX_LIMIT: u32 = 200;

pub async fn inbox(State(web): State<Arc<Web>>, ctx: Ctx, Query(q): Query<InboxQuery>) -> Response {
    if let Err(denied) = ctx.require(Role::Clerk) {
        return denied;
    }
    let t = ctx.t();
    let status = FilingStatus::from_str_name(&format!("FILING_STATUS_{}", q.estado.to_uppercase()))
        .filter(|_| !q.estado.is_empty());
    let from = q.desde.trim().to_owned();
    let rows = web
        .desk
        .store
        .run(move |s| s.inbox_filtered(status, &from, INBOX_LIMIT))
        .await;
    let mut rows = match rows {
        Ok(rows) => rows,
        Err(e) => return failure(&ctx, e),
    };
    let calendar = Calendar::new(&web.desk.config.deadlines);
    let offset = web.desk.config.deadlines.utc_offset_minutes;
    let today = Day::of_ms(ecointegra_broker::now_ms(), offset);
    let days_left = |f: &FilingRow| {
        Day::parse(&f.due_date).map(|due| calendar.business_days_between(today, due))
    };
    let open = |f: &FilingRow| matches!(f.status, FilingStatus::Delivered | FilingStatus::Received);
    let warn = web.desk.config.deadlines.warn_business_days as i32;
    if !q.vence.is_empty() {
        rows.retain(|f| open(f) && days_left(f).is_some_and(|d| d <= warn));
    }
    let directory = web.desk.trust.directory();
    let mut statuses = vec![(String::new(), t.any.to_owned())];
    statuses.extend(
        [
            FilingStatus::Delivered,
            FilingStatus::Received,
            FilingStatus::Observed,
            FilingStatus::Rejected,
            FilingStatus::Forwarded,
            FilingStatus::Answered,
            FilingStatus::Archived,
        ]
        .map(|s| {
            (
                crate::lifecycle::workflow::status_name(s).to_lowercase(),
                ctx.lang.status(s).to_owned(),
            )
        }),
    );
    let mut senders = vec![(String::new(), t.any.to_owned())];
    senders.extend(
        directory
            .institutions()
            .filter(|i| i.id != web.desk.institution())
            .map(|i| (i.id.clone(), page::institution(&directory, &i.id))),
    );
    let mut body = format!(
        r#"<form method="get" action="/mesa" class="filters card">{}{}<div class="field check"><input type="checkbox" id="f-vence" name="vence" value="1"{}><label for="f-vence">{}</label></div><button type="submit">{}</button></form>"#,
        page::select(
            "estado",
            t.status,
            &statuses,
            &q.estado.to_lowercase(),
            None
        ),
        page::select("desde", t.from_institution, &senders, &q.desde, None),
        if q.vence.is_empty() { "" } else { " checked" },
        t.due_soon,
        t.filter
    );
    if rows.is_empty() {
        let _ = write!(body, r#"<p class="notice">{}</p>"#, t.inbox_empty);
    } else {
        let _ = write!(
            body,
            r#"<div class="table-wrap"><table class="inbox"><caption>{caption} ({count})</caption><thead><tr><th scope="col">{l_code}</th><th scope="col">{l_subject}</th><th scope="col">{l_sender}</th><th scope="col">{l_from}</th><th scope="col">{l_arrived}</th><th scope="col">{l_status}</th><th scope="col">{l_due}</th></tr></thead><tbody>"#,
            caption = t.inbox_caption,
            count = rows.len(),
            l_code = t.tracking_code,
            l_subject = t.subject,
            l_sender = t.sender,
            l_from = t.from_institution,
            l_arrived = t.arrived,
            l_status = t.status,
            l_due = t.due_date,
        );
        for f in &rows {
            let due = match (days_left(f), open(f)) {
                (Some(d), true) if d < 0 => format!(
                    r#"{} <span class="bad">({})</span>"#,
                    esc(&f.due_date),
                    t.overdue
                ),
                (Some(d), true) if d <= warn => format!(
                    r#"{} <span class="warn">({d} {})</span>"#,
                    esc(&f.due_date),
                    t.days_left
                ),
                _ if f.due_date.is_empty() => "—".into(),
                _ => esc(&f.due_date),
            };
            let _ = write!(
                body,
                r#"<tr><td><a href="/mesa/tramite/{link}">{code}</a></td><td>{subject}</td><td>{sender}</td><td>{from}</td><td>{arrived}</td><td>{status}</td><td>{due}</td></tr>"#,
                link = esc(&url_encode(&f.tracking_code)),
                code = esc(&f.tracking_code),
                subject = esc(&f.subject),
                sender = esc(&f.sender_party.name),
                from = esc(&page::institution(&directory, &f.origin)),
                arrived = when(f.delivered_at_ms, offset),
                status = page::status(&ctx, f.status),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    page::render(&ctx, StatusCode::OK, t.inbox_title, &body)
}

// ---- A filing ----

/// The filing a tracking code names here: the one this institution holds
/// (inbound) if any, else the one it sent.
async fn held(web: &Web, code: &str) -> Result<FilingRow, Error> {
    let code = code.trim().to_uppercase();
    let lookup = code.clone();
    let found = web
        .desk
        .store
        .run(move |s| {
            Ok(match s.latest(&lookup, Direction::Inbound)? {
                Some(f) => Some(f),
                None => s.latest(&lookup, Direction::Outbound)?,
            })
        })
        .await?;
    found.ok_or_else(|| Error::NotFound(format!("filing {code}")))
}

/// What the page of one filing shows besides the filing: a note above, the
/// action forms' values and problems.
struct Shown<'a> {
    done: Option<&'a str>,
    action: &'a str,
    values: &'a Fields,
    problems: Problems,
    failed: Option<String>,
}

pub async fn filing(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(code): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(denied) = ctx.require(Role::Clerk) {
        return denied;
    }
    let shown = Shown {
        done: q.get("hecho").map(String::as_str),
        action: "",
        values: &Fields::default(),
        problems: Problems::none(),
        failed: None,
    };
    filing_page(&web, &ctx, &code, shown, StatusCode::OK).await
}

async fn filing_page(
    web: &Web,
    ctx: &Ctx,
    code: &str,
    shown: Shown<'_>,
    status: StatusCode,
) -> Response {
    let t = ctx.t();
    let filing = match held(web, code).await {
        Ok(f) => f,
        Err(e) => return failure(ctx, e),
    };
    let lookup = filing.tracking_code.clone();
    let timeline = match web.desk.store.run(move |s| s.timeline(&lookup)).await {
        Ok(events) => crate::lifecycle::tracking::on_chain(&filing.tracking_code, events),
        Err(e) => return failure(ctx, e),
    };
    let directory = web.desk.trust.directory();
    let offset = web.desk.config.deadlines.utc_offset_minutes;
    let party = &filing.sender_party;
    let id_type = IdentityDocumentType::try_from(party.document_type)
        .map(|d| {
            d.as_str_name()
                .trim_start_matches("IDENTITY_DOCUMENT_TYPE_")
                .to_owned()
        })
        .unwrap_or_default();
    let link = url_encode(&filing.tracking_code);
    let mut body = String::new();
    if let Some(done) = shown.done {
        let _ = write!(
            body,
            r#"<p class="notice ok" role="status">✓ {} ({})</p>"#,
            t.action_done,
            esc(done)
        );
    }
    if let Some(why) = &shown.failed {
        let _ = write!(
            body,
            r#"<p class="notice bad" role="alert">{}</p>"#,
            esc(why)
        );
    }
    let _ = write!(
        body,
        r#"<dl class="summary card">
<dt>{l_code}</dt><dd class="code">{code}</dd>
<dt>{l_status}</dt><dd>{status}</dd>
<dt>{l_subject}</dt><dd>{subject}</dd>
<dt>{l_sender}</dt><dd>{sender} · {id_type} {id_number}{email}</dd>
<dt>{l_route}</dt><dd>{origin} → {destination}</dd>
<dt>{l_filed_at}</dt><dd>{filed_at}</dd>
<dt>{l_folios}</dt><dd>{folios}</dd>
<dt>{l_registered}</dt><dd>{registered}</dd>
<dt>{l_delivered}</dt><dd>{delivered}</dd>
<dt>{l_registry}</dt><dd>{registry}</dd>
<dt>{l_due}</dt><dd>{due}</dd>
<dt>{l_note}</dt><dd>{note}</dd>
</dl>"#,
        l_code = t.tracking_code,
        code = esc(&filing.tracking_code),
        l_status = t.status,
        status = page::status(ctx, filing.status),
        l_subject = t.subject,
        subject = esc(&filing.subject),
        l_sender = t.sender,
        sender = esc(&party.name),
        id_type = esc(&id_type),
        id_number = esc(&party.document_number),
        email = if party.email.is_empty() {
            String::new()
        } else {
            format!(" · {}", esc(&party.email))
        },
        l_route = t.route,
        origin = esc(&page::institution(&directory, &filing.origin)),
        destination = esc(&page::institution(&directory, &filing.destination)),
        l_filed_at = t.filed_at,
        filed_at = esc(&page::institution(&directory, &filing.filed_at)),
        l_folios = t.folios,
        folios = filing.folio_count,
        l_registered = t.registered,
        registered = when(filing.registered_at_ms, offset),
        l_delivered = t.delivered,
        delivered = when(filing.delivered_at_ms, offset),
        l_registry = t.registry_number,
        registry = esc(&[
            filing.registry_number.as_str(),
            filing.internal_registry_number.as_str(),
            filing.office.as_str()
        ]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" · ")),
        l_due = t.due_date,
        due = page::or_dash(&filing.due_date),
        l_note = t.note,
        note = page::or_dash(&filing.note),
    );
    if filing.direction == Direction::Outbound {
        let _ = write!(
            body,
            r#"<p><a class="button" href="/mesa/tramite/{link}/cargo">{}</a></p>"#,
            t.desk_cargo
        );
    }
    let _ = write!(
        body,
        r#"<h2>{}</h2><div class="table-wrap"><table><thead><tr><th scope="col">{}</th><th scope="col">{}</th><th scope="col">SHA-256</th><th scope="col"><span class="sr-only">{}</span></th></tr></thead><tbody>"#,
        t.documents, t.name, t.size, t.open
    );
    for d in &filing.documents {
        let _ = write!(
            body,
            r#"<tr><td>{name}</td><td>{size}</td><td><code class="digest">{digest}</code></td><td class="actions"><a href="/mesa/tramite/{link}/documento/{i}?ver=1" target="_blank" rel="noopener">{l_view}<span class="sr-only"> {name}</span></a> <a href="/mesa/tramite/{link}/documento/{i}" download>{l_download}<span class="sr-only"> {name}</span></a></td></tr>"#,
            name = esc(&d.name),
            size = page::size(d.size),
            digest = hex::encode(&d.sha256),
            i = d.index,
            l_view = t.view,
            l_download = t.download,
        );
    }
    body.push_str("</tbody></table></div>");
    let entries: Vec<_> = timeline
        .iter()
        .map(crate::lifecycle::tracking::entry)
        .collect();
    let _ = write!(
        body,
        "<h2>{}</h2>{}",
        t.timeline,
        page::timeline(ctx, &directory, offset, &entries)
    );
    if filing.direction == Direction::Inbound {
        body.push_str(&action_forms(web, ctx, &filing, &shown));
    }
    page::render(
        ctx,
        status,
        &format!("{} {}", t.filing, filing.tracking_code),
        &body,
    )
}

/// The action forms the filing's state allows, each with its required fields.
fn action_forms(web: &Web, ctx: &Ctx, filing: &FilingRow, shown: &Shown<'_>) -> String {
    let t = ctx.t();
    let link = url_encode(&filing.tracking_code);
    let blank = Fields::default();
    let mut out = format!(r#"<h2>{}</h2><div class="actions-grid">"#, t.actions);
    let nothing = || String::new();
    let samples: [(&str, &str, Action); 6] = [
        (
            "recibir",
            t.act_receive,
            Action::Receive {
                registry_number: nothing(),
                office: nothing(),
            },
        ),
        (
            "observar",
            t.act_observe,
            Action::Observe { reason: nothing() },
        ),
        (
            "rechazar",
            t.act_reject,
            Action::Reject { reason: nothing() },
        ),
        (
            "derivar",
            t.act_forward,
            Action::Forward {
                destination: nothing(),
                note: nothing(),
            },
        ),
        (
            "atender",
            t.act_answer,
            Action::Answer {
                note: nothing(),
                documents: Vec::new(),
            },
        ),
        (
            "archivar",
            t.act_archive,
            Action::Archive { note: nothing() },
        ),
    ];
    let mut any = false;
    for (slug, title, sample) in samples {
        if !sample.allowed_from().contains(&filing.status) {
            continue;
        }
        any = true;
        let (values, problems) = if shown.action == slug {
            (shown.values, &shown.problems)
        } else {
            (&blank, &Problems::none())
        };
        let fields = match slug {
            "recibir" => format!(
                "{}{}",
                page::input(
                    &format!("{slug}/registry_number"),
                    t.internal_registry,
                    values.value("registry_number"),
                    problems.of("registry_number"),
                    "required",
                    None
                ),
                page::input(
                    &format!("{slug}/office"),
                    t.office,
                    values.value("office"),
                    problems.of("office"),
                    "required",
                    None
                )
            ),
            "observar" | "rechazar" => page::textarea(
                &format!("{slug}/reason"),
                t.reason,
                values.value("reason"),
                problems.of("reason"),
                "required",
            ),
            "derivar" => {
                let options = destinations(web, ctx);
                format!(
                    "{}{}",
                    page::select(
                        &format!("{slug}/destination"),
                        t.destination,
                        &options,
                        values.value("destination"),
                        problems.of("destination")
                    ),
                    page::textarea(
                        &format!("{slug}/note"),
                        t.note,
                        values.value("note"),
                        problems.of("note"),
                        ""
                    )
                )
            }
            "atender" => format!(
                "{}{}",
                page::textarea(
                    &format!("{slug}/note"),
                    t.note,
                    values.value("note"),
                    problems.of("note"),
                    ""
                ),
                page::input(
                    &format!("{slug}/documents"),
                    t.answer_files,
                    "",
                    problems.of("documents"),
                    r#"type="file" multiple required"#,
                    None
                )
            ),
            _ => page::textarea(
                &format!("{slug}/note"),
                t.note,
                values.value("note"),
                problems.of("note"),
                "",
            ),
        };
        let action_id = match values.value("action_id") {
            "" => crate::ids::random_hex(16),
            id => id.to_owned(),
        };
        let enctype = if slug == "atender" {
            r#" enctype="multipart/form-data" data-upload"#
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<form method="post" action="/mesa/tramite/{link}/{slug}" class="card action" novalidate{enctype}><h3>{title}</h3>{summary}{csrf}<input type="hidden" name="action_id" value="{action_id}">{fields}{progress}<button type="submit"{danger}>{title}</button></form>"#,
            danger = if slug == "rechazar" {
                r#" class="danger""#
            } else {
                ""
            },
            summary = problems.summary(ctx, &format!("{slug}/")),
            csrf = page::csrf(ctx),
            action_id = esc(&action_id),
            progress = if slug == "atender" {
                r#"<progress max="100" value="0" hidden data-progress></progress><p class="help" data-progress-text aria-live="polite"></p>"#
            } else {
                ""
            },
        );
    }
    if !any {
        let _ = write!(out, r#"<p class="notice">{}</p>"#, t.no_actions);
    }
    out.push_str("</div>");
    out
}

const ACTION_FIELDS: [&str; 6] = [
    "registry_number",
    "office",
    "reason",
    "destination",
    "note",
    "documents",
];

pub async fn act(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path((code, slug)): Path<(String, String)>,
    axum::extract::Form(fields): axum::extract::Form<Fields>,
) -> Response {
    let session = match ctx.posting(Role::Clerk, &fields) {
        Ok(s) => s,
        Err(denied) => return denied,
    };
    let value = |name: &str| fields.value(name).to_owned();
    let action = match slug.as_str() {
        "recibir" => Action::Receive {
            registry_number: value("registry_number"),
            office: value("office"),
        },
        "observar" => Action::Observe {
            reason: value("reason"),
        },
        "rechazar" => Action::Reject {
            reason: value("reason"),
        },
        "derivar" => Action::Forward {
            destination: value("destination").trim().to_owned(),
            note: value("note"),
        },
        "archivar" => Action::Archive {
            note: value("note"),
        },
        _ => return super::not_found(ctx).await,
    };
    perform(&web, &ctx, &session, &code, &slug, &fields, action).await
}

pub async fn answer(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(code): Path<String>,
    multipart: Multipart,
) -> Response {
    let (session, fields, mut documents) = match upload_form(&ctx, multipart).await {
        Ok(form) => form,
        Err(denied) => return denied,
    };
    let received = crate::submit::receive_documents(&web.desk, &mut documents).await;
    drain(&mut documents).await;
    let action = match received {
        Ok(documents) => Action::Answer {
            note: fields.value("note").to_owned(),
            documents,
        },
        Err(Error::InvalidArgument(violations)) => {
            let shown = Shown {
                done: None,
                action: "atender",
                values: &fields,
                problems: Problems::new(&violations, &ACTION_FIELDS, &ctx),
                failed: None,
            };
            return filing_page(&web, &ctx, &code, shown, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
        Err(other) => return failure(&ctx, other),
    };
    perform(&web, &ctx, &session, &code, "atender", &fields, action).await
}

async fn perform(
    web: &Web,
    ctx: &Ctx,
    session: &super::Session,
    code: &str,
    slug: &str,
    fields: &Fields,
    action: Action,
) -> Response {
    let result = crate::lifecycle::workflow::act(
        &web.desk,
        code.to_owned(),
        fields.value("action_id").to_owned(),
        action,
        "clerk",
    )
    .await;
    let (problems, failed, status) = match result {
        Ok(filing) => {
            tracing::info!(tracking_code = %filing.tracking_code, clerk = %session.name, action = slug, "Clerk action at the desk.");
            return Redirect::to(&format!(
                "/mesa/tramite/{}?hecho={}",
                url_encode(&filing.tracking_code),
                url_encode(slug)
            ))
            .into_response();
        }
        Err(Error::InvalidArgument(violations)) => (
            Problems::new(&violations, &ACTION_FIELDS, ctx),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(Error::FailedPrecondition(why)) => (
            Problems::none(),
            Some(super::text::localize(ctx.lang, &why)),
            StatusCode::CONFLICT,
        ),
        Err(other) => return failure(ctx, other),
    };
    let shown = Shown {
        done: None,
        action: slug,
        values: fields,
        problems,
        failed,
    };
    filing_page(web, ctx, code, shown, status).await
}

// ---- Documents and the desk's cargo ----

#[derive(Deserialize)]
pub struct DocumentQuery {
    ver: Option<String>,
}

/// Media types a browser may show in place; anything else downloads.
const PREVIEWABLE: [&str; 5] = [
    "application/pdf",
    "image/png",
    "image/jpeg",
    "text/plain",
    "image/gif",
];

pub async fn document(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path((code, index)): Path<(String, u32)>,
    Query(q): Query<DocumentQuery>,
) -> Response {
    if let Err(denied) = ctx.require(Role::Clerk) {
        return denied;
    }
    let filing = match held(&web, &code).await {
        Ok(f) => f,
        Err(e) => return failure(&ctx, e),
    };
    let Some(doc) = filing.documents.iter().find(|d| d.index == index) else {
        return failure(&ctx, Error::NotFound(format!("document {index}")));
    };
    let path = web.desk.blobs.path(&doc.sha256);
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            return failure(
                &ctx,
                Error::io(format!("cannot open {}", path.display()))(e),
            );
        }
    };
    let inline = q.ver.is_some() && PREVIEWABLE.contains(&doc.media_type.as_str());
    let content_type = if inline {
        doc.media_type.as_str()
    } else {
        "application/octet-stream"
    };
    let ascii: String = doc
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!(
        "{}; filename=\"{}\"; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        ascii,
        url_encode(&doc.name)
    );
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CONTENT_LENGTH, doc.size.to_string()),
            // A document is shown, never run.
            (
                header::CONTENT_SECURITY_POLICY,
                "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:".to_owned(),
            ),
        ],
        body,
    )
        .into_response()
}

/// The cargo the clerk prints for the citizen: both codes, the documents and
/// their digests, and the destination's signed receipt once it arrived.
pub async fn cargo(State(web): State<Arc<Web>>, ctx: Ctx, Path(code): Path<String>) -> Response {
    if let Err(denied) = ctx.require(Role::Clerk) {
        return denied;
    }
    let t = ctx.t();
    let lookup = code.trim().to_uppercase();
    let filing = match web
        .desk
        .store
        .run(move |s| s.latest(&lookup, Direction::Outbound))
        .await
    {
        Ok(Some(f)) if f.kind != TransferKind::Answer => f,
        Ok(_) => return failure(&ctx, Error::NotFound(format!("filing {code}"))),
        Err(e) => return failure(&ctx, e),
    };
    let directory = web.desk.trust.directory();
    let offset = web.desk.config.deadlines.utc_offset_minutes;
    let track_link = format!(
        "{}/seguimiento?codigo={}",
        ctx.base_url,
        url_encode(&filing.tracking_code)
    );
    let docs = page::document_rows(
        filing
            .documents
            .iter()
            .map(|d| (d.name.as_str(), d.size, d.sha256.as_slice())),
    );
    let body = format!(
        r#"<p class="no-print"><button type="button" data-print>{l_print}</button> <a href="/mesa/tramite/{link}">{l_back}</a> <a href="/cargo?codigo={link}&amp;verificacion={verification_link}">{l_receipt}</a></p>
<section class="card receipt">
<h2>{l_title}</h2>
<dl class="summary">
<dt>{l_code}</dt><dd class="code big">{code}</dd>
<dt>{l_verification}</dt><dd class="code big">{verification}</dd>
<dt>{l_at}</dt><dd>{at} · {when}</dd>
<dt>{l_sender}</dt><dd>{sender}</dd>
<dt>{l_destination}</dt><dd>{destination}</dd>
<dt>{l_subject}</dt><dd>{subject}</dd>
<dt>{l_folios}</dt><dd>{folios}</dd>
<dt>{l_status}</dt><dd>{status}</dd>
</dl>
<table><caption>{l_documents}</caption><thead><tr><th scope="col">{l_name}</th><th scope="col">{l_size}</th><th scope="col">SHA-256</th></tr></thead><tbody>{docs}</tbody></table>
<p>{l_follow} <a href="{track}">{track}</a></p>
<p class="help">{l_keep}</p>
</section>"#,
        l_print = t.print,
        link = esc(&url_encode(&filing.tracking_code)),
        l_back = t.back_to_filing,
        verification_link = esc(&url_encode(&filing.verification_code)),
        l_receipt = t.see_cargo,
        l_title = t.desk_cargo,
        l_code = t.tracking_code,
        code = esc(&filing.tracking_code),
        l_verification = t.verification_code,
        verification = esc(&filing.verification_code),
        l_at = t.filed_at,
        at = esc(&page::institution(&directory, &filing.origin)),
        when = when(filing.registered_at_ms, offset),
        l_sender = t.sender,
        sender = esc(&filing.sender_party.name),
        l_destination = t.destination,
        destination = esc(&page::institution(&directory, &filing.destination)),
        l_subject = t.subject,
        subject = esc(&filing.subject),
        l_folios = t.folios,
        folios = filing.folio_count,
        l_status = t.status,
        status = page::status(&ctx, filing.status),
        l_documents = t.documents,
        l_name = t.name,
        l_size = t.size,
        l_follow = t.follow_at,
        track = esc(&track_link),
        l_keep = t.keep_codes,
    );
    page::render(&ctx, StatusCode::OK, t.desk_cargo, &body)
}
