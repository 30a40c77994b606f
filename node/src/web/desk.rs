//! The clerk's desk (clerk role): a new filing with its documents and the
//! printable cargo for the citizen; the inbox with filters; a filing with its
//! documents, timeline and actions. Form fields are named after the gRPC
//! fields they fill, so a broken rule lands next to its field.

use super::forms::{self, Fields, url_encode};
use super::page::{self, Attrs, when};
use super::{Ctx, Web, evidence_download, failure, pdf_response};
use crate::error::{Error, Violation};
use crate::evidence::pdf::{Cargo, Section};
use crate::grpc::auth::Role;
use crate::lifecycle::deadlines::{Calendar, Day};
use crate::lifecycle::workflow::Action;
use crate::store::FilingRow;
use crate::submit::DocPart;
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use ecointegra_broker::directory::Directory;
use ecointegra_proto::v1::{
    Direction, FilingHeader, FilingStatus, IdentityDocumentType, Party, TransferKind,
};
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::HashMap;
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
    fn summary(&self, ctx: &Ctx, scope: &str) -> Markup {
        let mut fields: Vec<_> = self.0.iter().collect();
        fields.sort();
        html! {
            @if !fields.is_empty() {
                div.error-summary role="alert" tabindex="-1" {
                    p { (ctx.t().fix_errors) }
                    ul {
                        @for (field, text) in fields {
                            @if field.is_empty() {
                                li { (text) }
                            } @else {
                                li {
                                    a href={ "#" (page::field_id(&format!("{scope}{field}"))) } {
                                        (text)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
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
    let field = |name: &str| (values.value(name), problems.of(name));
    let (doc_type, doc_type_error) = field("header.sender_party.document_type");
    let (doc_number, doc_number_error) = field("header.sender_party.document_number");
    let (name, name_error) = field("header.sender_party.name");
    let (email, email_error) = field("header.sender_party.email");
    let (destination, destination_error) = field("header.destination");
    let (subject, subject_error) = field("header.subject");
    let (folios, folios_error) = field("header.folio_count");
    let (filing_type, filing_type_error) = field("header.filing_type");
    let (corrects, corrects_error) = field("header.corrects_tracking_code");
    let body = html! {
        (problems.summary(ctx, ""))
        form.card method="post" action="/mesa/nuevo" enctype="multipart/form-data"
            data-upload novalidate {
            (page::csrf(ctx))
            input type="hidden" name="header.idempotency_key" value=(key);
            fieldset {
                legend { (t.sender) }
                (page::select(
                    "header.sender_party.document_type",
                    t.id_type,
                    &id_types,
                    doc_type,
                    doc_type_error,
                ))
                (page::input(
                    "header.sender_party.document_number",
                    t.id_number,
                    doc_number,
                    doc_number_error,
                    Attrs::new().required().numeric().autocomplete("off"),
                    Some(t.id_number_help),
                ))
                (page::input(
                    "header.sender_party.name",
                    t.sender_name,
                    name,
                    name_error,
                    Attrs::new().required().autocomplete("name"),
                    None,
                ))
                (page::input(
                    "header.sender_party.email",
                    t.email_optional,
                    email,
                    email_error,
                    Attrs::new().kind("email").autocomplete("email"),
                    None,
                ))
            }
            fieldset {
                legend { (t.filing) }
                (page::select(
                    "header.destination",
                    t.destination,
                    &destinations,
                    destination,
                    destination_error,
                ))
                (page::textarea(
                    "header.subject",
                    t.subject,
                    subject,
                    subject_error,
                    Attrs::new().required().maxlength("500"),
                ))
                (page::input(
                    "header.folio_count",
                    t.folios,
                    folios,
                    folios_error,
                    Attrs::new().kind("number").min("1").required().numeric(),
                    None,
                ))
                (page::select("header.filing_type", t.filing_type, &types, filing_type, filing_type_error))
                (page::input(
                    "header.corrects_tracking_code",
                    t.corrects,
                    corrects,
                    corrects_error,
                    Attrs::new().code(),
                    Some(t.corrects_help),
                ))
            }
            fieldset {
                legend { (t.documents) }
                (page::input(
                    "documents",
                    t.pdf_files,
                    "",
                    problems.of("documents"),
                    Attrs::new().kind("file").multiple().accept("application/pdf,.pdf").required(),
                    Some(t.pdf_files_help),
                ))
                progress max="100" value="0" hidden data-progress aria-label=(t.upload_progress) {}
                p.help data-progress-text aria-live="polite" {}
            }
            button type="submit" { (t.submit_filing) }
        }
    };
    page::render(ctx, status, t.new_filing_title, body)
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
        sgd: None,
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
    let submitted =
        crate::submit::accept(&web.desk, &ctx.actor(&session), header, &mut documents).await;
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
    let status =
        FilingStatus::from_short_name(&q.estado.to_uppercase()).filter(|_| !q.estado.is_empty());
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
    let body = html! {
        form.filters.card method="get" action="/mesa" {
            (page::select("estado", t.status, &statuses, &q.estado.to_lowercase(), None))
            (page::select("desde", t.from_institution, &senders, &q.desde, None))
            div.field.check {
                input type="checkbox" id="f-vence" name="vence" value="1"
                    checked[!q.vence.is_empty()];
                label for="f-vence" { (t.due_soon) }
            }
            button type="submit" { (t.filter) }
        }
        @if rows.is_empty() {
            p.notice { (t.inbox_empty) }
        } @else {
            div.table-wrap {
                table.inbox {
                    caption { (t.inbox_caption) " (" (rows.len()) ")" }
                    thead {
                        tr {
                            th scope="col" { (t.tracking_code) }
                            th scope="col" { (t.subject) }
                            th scope="col" { (t.sender) }
                            th scope="col" { (t.from_institution) }
                            th scope="col" { (t.arrived) }
                            th scope="col" { (t.status) }
                            th scope="col" { (t.due_date) }
                        }
                    }
                    tbody {
                        @for f in &rows {
                            tr {
                                td {
                                    a href={ "/mesa/tramite/" (url_encode(&f.tracking_code)) } {
                                        (f.tracking_code)
                                    }
                                }
                                td { (f.subject) }
                                td { (f.sender_party.name) }
                                td { (page::institution(&directory, &f.origin)) }
                                td { (when(f.delivered_at_ms, offset)) }
                                td { (page::status(&ctx, f.status)) }
                                td {
                                    @match (days_left(f), open(f)) {
                                        (Some(d), true) if d < 0 => {
                                            (f.due_date) " " span.bad { "(" (t.overdue) ")" }
                                        }
                                        (Some(d), true) if d <= warn => {
                                            (f.due_date) " "
                                            span.warn { "(" (d) " " (t.days_left) ")" }
                                        }
                                        _ if f.due_date.is_empty() => { "—" }
                                        _ => { (f.due_date) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page::render(&ctx, StatusCode::OK, t.inbox_title, body)
}

// ---- A filing ----

/// The copy of a filing a tracking code names here: the one `copy` (a
/// transfer id) names; without it, the copy this institution holds
/// (inbound) if any, else the record of what it sent.
async fn held(web: &Web, code: &str, copy: Option<&str>) -> Result<FilingRow, Error> {
    let code = code.trim().to_uppercase();
    let copy = copy
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    if let Some(id) = &copy
        && !crate::ids::is_transfer_id(id)
    {
        return Err(Error::invalid("copia", "is not a transfer id"));
    }
    let lookup = code.clone();
    let found = web
        .desk
        .store
        .run(move |s| s.filing_copy(&lookup, copy.as_deref()))
        .await?;
    found.ok_or_else(|| Error::NotFound(format!("filing {code}")))
}

/// Which copy a row is, in words: "received from OEFA · hop 1".
fn copy_label(ctx: &Ctx, directory: &Directory, row: &FilingRow) -> Markup {
    let t = ctx.t();
    html! {
        @if row.direction == Direction::Inbound {
            (t.copy_held) " " (page::institution(directory, &row.origin))
        } @else {
            (t.copy_sent) " " (page::institution(directory, &row.destination))
        }
        " · " (t.copy_hop) " " (row.hop)
    }
}

/// What the page of one filing shows besides the filing: a note above, the
/// action forms' values and problems.
struct Shown<'a> {
    /// The copy asked for (`?copia=TRANSFER_ID`), if any.
    copy: Option<&'a str>,
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
        copy: q.get("copia").map(String::as_str),
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
    let filing = match held(web, code, shown.copy).await {
        Ok(f) => f,
        Err(e) => return failure(ctx, e),
    };
    let lookup = filing.tracking_code.clone();
    let found = web
        .desk
        .store
        .run(move |s| Ok((s.timeline(&lookup)?, s.filing_copies(&lookup)?)))
        .await;
    let (timeline, copies) = match found {
        Ok((events, copies)) => (
            crate::lifecycle::tracking::on_chain(&filing.tracking_code, events),
            copies,
        ),
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
    let registry = [
        filing.registry_number.as_str(),
        filing.internal_registry_number.as_str(),
        filing.office.as_str(),
    ]
    .iter()
    .filter(|s| !s.is_empty())
    .copied()
    .collect::<Vec<_>>()
    .join(" · ");
    let entries: Vec<_> = timeline
        .iter()
        .map(crate::lifecycle::tracking::entry)
        .collect();
    let body = html! {
        @if let Some(done) = shown.done {
            p.notice.ok role="status" { "✓ " (t.action_done) " (" (done) ")" }
        }
        @if let Some(why) = &shown.failed {
            p.notice.bad role="alert" { (why) }
        }
        dl.summary.card {
            dt { (t.tracking_code) } dd.code { (filing.tracking_code) }
            @if let Some(sgd) = filing.sgd.as_ref().filter(|s| !s.cuo.is_empty()) {
                dt { "CUO (PIDE)" }
                dd.code { (sgd.cuo) }
                @if !sgd.document_number.is_empty() {
                    dt { (t.sgd_document) } dd { (sgd.document_number) }
                }
            }
            dt { (t.copy) } dd { (copy_label(ctx, &directory, &filing)) }
            dt { (t.status) } dd { (page::status(ctx, filing.status)) }
            dt { (t.subject) } dd { (filing.subject) }
            dt { (t.sender) }
            dd {
                (party.name) " · " (id_type) " " (party.document_number)
                @if !party.email.is_empty() { " · " (party.email) }
            }
            dt { (t.route) }
            dd {
                (page::institution(&directory, &filing.origin)) " → "
                (page::institution(&directory, &filing.destination))
            }
            dt { (t.filed_at) } dd { (page::institution(&directory, &filing.filed_at)) }
            dt { (t.folios) } dd { (filing.folio_count) }
            dt { (t.registered) } dd { (when(filing.registered_at_ms, offset)) }
            dt { (t.delivered) } dd { (when(filing.delivered_at_ms, offset)) }
            dt { (t.registry_number) } dd { (registry) }
            dt { (t.due_date) } dd { (page::or_dash(&filing.due_date)) }
            dt { (t.note) } dd { (page::or_dash(&filing.note)) }
        }
        p {
            @if filing.direction == Direction::Outbound {
                a.button href={ "/mesa/tramite/" (link) "/cargo" } { (t.desk_cargo) }
                " "
            }
            a href={ "/mesa/tramite/" (link) "/evidencia" } { (t.download_evidence) }
        }
        h2 { (t.documents) }
        div.table-wrap {
            table {
                thead {
                    tr {
                        th scope="col" { (t.name) }
                        th scope="col" { (t.size) }
                        th scope="col" { "SHA-256" }
                        th scope="col" { span.sr-only { (t.open) } }
                    }
                }
                tbody {
                    @for d in &filing.documents {
                        @let document = format!(
                            "/mesa/tramite/{link}/documento/{}?copia={}",
                            d.index, filing.transfer_id
                        );
                        tr {
                            td { (d.name) }
                            td { (page::size(d.size)) }
                            td { code.digest { (hex::encode(&d.sha256)) } }
                            td.actions {
                                a href={ (document) "&ver=1" } target="_blank" rel="noopener" {
                                    (t.view) span.sr-only { " " (d.name) }
                                }
                                " "
                                a href=(document) download {
                                    (t.download) span.sr-only { " " (d.name) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if copies.len() > 1 {
            h2 { (t.other_copies) }
            ul.copies {
                @for other in copies.iter().filter(|c| c.transfer_id != filing.transfer_id) {
                    li {
                        a href={ "/mesa/tramite/" (link) "?copia=" (other.transfer_id) } {
                            (copy_label(ctx, &directory, other))
                        }
                        " — " (page::status(ctx, other.status))
                    }
                }
            }
        }
        h2 { (t.timeline) }
        (page::timeline(ctx, &directory, offset, &entries))
        @if filing.direction == Direction::Inbound {
            (action_forms(web, ctx, &filing, &shown))
        }
    };
    page::render(
        ctx,
        status,
        &format!("{} {}", t.filing, filing.tracking_code),
        body,
    )
}

/// The action forms the filing's state allows, each with its required fields.
fn action_forms(web: &Web, ctx: &Ctx, filing: &FilingRow, shown: &Shown<'_>) -> Markup {
    let t = ctx.t();
    let link = url_encode(&filing.tracking_code);
    let blank = Fields::default();
    let nothing = || String::new();
    let samples: [(&str, &str, Action); 6] = [
        (
            "recibir",
            t.act_receive,
            Action::Receive {
                registry_number: nothing(),
                office: nothing(),
                cargo: None,
            },
        ),
        (
            "observar",
            t.act_observe,
            Action::Observe {
                reason: nothing(),
                cargo: None,
            },
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
    let allowed: Vec<(&str, &str)> = samples
        .iter()
        .filter(|(_, _, sample)| sample.allowed_from().contains(&filing.status))
        .map(|(slug, title, _)| (*slug, *title))
        .collect();
    html! {
        h2 { (t.actions) }
        div.actions-grid {
            @for (slug, title) in &allowed {
                @let (values, problems) = if shown.action == *slug {
                    (shown.values, &shown.problems)
                } else {
                    (&blank, &Problems::none())
                };
                @let action_id = match values.value("action_id") {
                    "" => crate::ids::random_hex(16),
                    id => id.to_owned(),
                };
                @let upload = *slug == "atender";
                form.card.action method="post" action={ "/mesa/tramite/" (link) "/" (slug) }
                    novalidate enctype=[upload.then_some("multipart/form-data")]
                    data-upload[upload] {
                    h3 { (title) }
                    (problems.summary(ctx, &format!("{slug}/")))
                    (page::csrf(ctx))
                    input type="hidden" name="action_id" value=(action_id);
                    (action_fields(web, ctx, slug, values, problems))
                    @if upload {
                        progress max="100" value="0" hidden data-progress {}
                        p.help data-progress-text aria-live="polite" {}
                    }
                    button type="submit" class=[(*slug == "rechazar").then_some("danger")] { (title) }
                }
            }
            @if allowed.is_empty() {
                p.notice { (t.no_actions) }
            }
        }
    }
}

/// The fields of one action's form.
fn action_fields(web: &Web, ctx: &Ctx, slug: &str, values: &Fields, problems: &Problems) -> Markup {
    let t = ctx.t();
    let name = |field: &str| format!("{slug}/{field}");
    let required = Attrs::new().required();
    html! {
        @match slug {
            "recibir" => {
                (page::input(
                    &name("registry_number"),
                    t.internal_registry,
                    values.value("registry_number"),
                    problems.of("registry_number"),
                    required,
                    None,
                ))
                (page::input(
                    &name("office"),
                    t.office,
                    values.value("office"),
                    problems.of("office"),
                    required,
                    None,
                ))
            }
            "observar" | "rechazar" => {
                (page::textarea(
                    &name("reason"),
                    t.reason,
                    values.value("reason"),
                    problems.of("reason"),
                    required,
                ))
            }
            "derivar" => {
                (page::select(
                    &name("destination"),
                    t.destination,
                    &destinations(web, ctx),
                    values.value("destination"),
                    problems.of("destination"),
                ))
                (page::textarea(
                    &name("note"),
                    t.note,
                    values.value("note"),
                    problems.of("note"),
                    Attrs::new(),
                ))
            }
            "atender" => {
                (page::textarea(
                    &name("note"),
                    t.note,
                    values.value("note"),
                    problems.of("note"),
                    Attrs::new(),
                ))
                (page::input(
                    &name("documents"),
                    t.answer_files,
                    "",
                    problems.of("documents"),
                    Attrs::new().kind("file").multiple().required(),
                    None,
                ))
            }
            _ => {
                (page::textarea(
                    &name("note"),
                    t.note,
                    values.value("note"),
                    problems.of("note"),
                    Attrs::new(),
                ))
            }
        }
    }
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
            cargo: None,
        },
        "observar" => Action::Observe {
            reason: value("reason"),
            cargo: None,
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
                copy: None,
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
        &ctx.actor(session),
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
        copy: None,
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
    /// Which copy's document (a transfer id); without it, the held copy's.
    copia: Option<String>,
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
    let filing = match held(&web, &code, q.copia.as_deref()).await {
        Ok(f) => f,
        Err(e) => return failure(&ctx, e),
    };
    let Some(doc) = filing.documents.iter().find(|d| d.index == index) else {
        return failure(&ctx, Error::NotFound(format!("document {index}")));
    };
    let desk = &web.desk;
    let file = match desk
        .store
        .open_document(&desk.blobs, &doc.sha256, doc.size)
        .await
    {
        Ok(f) => f,
        Err(e) => return failure(&ctx, e),
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

/// The filing this desk registered under `code`, for its cargo de
/// presentación (clerks only); `Err` is the page to show instead.
async fn presented(web: &Web, ctx: &Ctx, code: &str) -> Result<FilingRow, Response> {
    ctx.require(Role::Clerk)?;
    let lookup = code.trim().to_uppercase();
    match web
        .desk
        .store
        .run(move |s| s.latest(&lookup, Direction::Outbound))
        .await
    {
        Ok(Some(f)) if f.kind != TransferKind::Answer => Ok(f),
        Ok(_) => Err(failure(ctx, Error::NotFound(format!("filing {code}")))),
        Err(e) => Err(failure(ctx, e)),
    }
}

/// The cargo de presentación as a PDF: both codes, where and when it was
/// filed, the documents with their SHA-256, and a QR code of the tracking
/// link (the verification code is never in a link).
pub async fn cargo_pdf(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(code): Path<String>,
) -> Response {
    let filing = match presented(&web, &ctx, &code).await {
        Ok(filing) => filing,
        Err(page) => return page,
    };
    let t = ctx.t();
    let directory = web.desk.trust.directory();
    let offset = web.desk.config.deadlines.utc_offset_minutes;
    let cargo = Cargo {
        title: t.desk_cargo.into(),
        issuer: page::institution(&directory, &filing.origin),
        fields: vec![
            (t.tracking_code.into(), filing.tracking_code.clone()),
            (t.verification_code.into(), filing.verification_code.clone()),
        ],
        sections: vec![Section {
            heading: filing.subject.clone(),
            fields: vec![
                (
                    t.filed_at.into(),
                    format!(
                        "{} · {}",
                        page::institution(&directory, &filing.origin),
                        when(filing.registered_at_ms, offset)
                    ),
                ),
                (t.sender.into(), filing.sender_party.name.clone()),
                (
                    t.destination.into(),
                    page::institution(&directory, &filing.destination),
                ),
                (t.folios.into(), filing.folio_count.to_string()),
            ],
            documents: filing
                .documents
                .iter()
                .map(|d| (d.name.clone(), d.size, hex::encode(&d.sha256)))
                .collect(),
            documents_heading: t.documents.into(),
        }],
        link: format!(
            "{}/seguimiento?codigo={}",
            ctx.base_url,
            url_encode(&filing.tracking_code)
        ),
        link_caption: format!("{} {}", t.keep_codes, t.follow_at),
    };
    pdf_response(&filing.tracking_code, &cargo)
}

/// The filing's evidence bundle with its documents, for the clerks of an
/// institution that holds it.
pub async fn evidence(State(web): State<Arc<Web>>, ctx: Ctx, Path(code): Path<String>) -> Response {
    if let Err(denied) = ctx.require(Role::Clerk) {
        return denied;
    }
    evidence_download(&web, &ctx, &code.trim().to_uppercase(), true).await
}

/// The cargo the clerk prints for the citizen: both codes, the documents and
/// their digests, and the destination's signed receipt once it arrived.
pub async fn cargo(State(web): State<Arc<Web>>, ctx: Ctx, Path(code): Path<String>) -> Response {
    let filing = match presented(&web, &ctx, &code).await {
        Ok(filing) => filing,
        Err(page) => return page,
    };
    let t = ctx.t();
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
    let link = url_encode(&filing.tracking_code);
    let receipt_link = format!(
        "/cargo?codigo={link}&verificacion={}",
        url_encode(&filing.verification_code)
    );
    let body = html! {
        p.no-print {
            button type="button" data-print { (t.print) }
            " "
            a href={ "/mesa/tramite/" (link) } { (t.back_to_filing) }
            " "
            a href=(receipt_link) { (t.see_cargo) }
            " "
            a.button href={ "/mesa/tramite/" (link) "/cargo.pdf" } { (t.download_pdf) }
        }
        section.card.receipt {
            h2 { (t.desk_cargo) }
            dl.summary {
                dt { (t.tracking_code) } dd.code.big { (filing.tracking_code) }
                dt { (t.verification_code) } dd.code.big { (filing.verification_code) }
                dt { (t.filed_at) }
                dd {
                    (page::institution(&directory, &filing.origin)) " · "
                    (when(filing.registered_at_ms, offset))
                }
                dt { (t.sender) } dd { (filing.sender_party.name) }
                dt { (t.destination) }
                dd { (page::institution(&directory, &filing.destination)) }
                dt { (t.subject) } dd { (filing.subject) }
                dt { (t.folios) } dd { (filing.folio_count) }
                dt { (t.status) } dd { (page::status(&ctx, filing.status)) }
            }
            table {
                caption { (t.documents) }
                thead {
                    tr {
                        th scope="col" { (t.name) }
                        th scope="col" { (t.size) }
                        th scope="col" { "SHA-256" }
                    }
                }
                tbody { (docs) }
            }
            p { (t.follow_at) " " a href=(track_link) { (track_link) } }
            p.help { (t.keep_codes) }
        }
    };
    page::render(&ctx, StatusCode::OK, t.desk_cargo, body)
}
