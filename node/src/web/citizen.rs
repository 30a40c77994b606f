//! The citizen's pages (public): tracking a filing with its two codes, the
//! cargo de recepción as a printable page, and verifying a printed cargo.
//! An unknown code and a wrong verification code get the same page.

use super::forms::url_encode;
use super::page::{self, Attrs, when};
use super::{Ctx, Web, evidence_download, failure, pdf_response};
use crate::error::Error;
use crate::evidence::pdf::{Cargo, Section};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use ecointegra_proto::v1::{FilingStatus, Receipt, TrackRequest, TrackResponse};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;

#[derive(Deserialize, Default, Clone)]
pub struct Codes {
    #[serde(default)]
    codigo: String,
    #[serde(default)]
    verificacion: String,
}

pub async fn home(ctx: Ctx) -> Response {
    let t = ctx.t();
    let body = html! {
        p { (t.track_intro) }
        (track_form(&ctx, &Codes::default(), None, None))
    };
    page::render(&ctx, StatusCode::OK, t.track_title, body)
}

fn track_form(
    ctx: &Ctx,
    codes: &Codes,
    code_error: Option<&str>,
    verif_error: Option<&str>,
) -> Markup {
    let t = ctx.t();
    let code = Attrs::new().required().code().no_spellcheck();
    html! {
        form.card.narrow method="get" action="/seguimiento" {
            (page::input(
                "codigo",
                t.tracking_code,
                &codes.codigo,
                code_error,
                code,
                Some(t.tracking_code_help),
            ))
            (page::input(
                "verificacion",
                t.verification_code,
                &codes.verificacion,
                verif_error,
                code,
                Some(t.verification_code_help),
            ))
            button type="submit" { (t.track_button) }
        }
    }
}

/// Checks the codes the way gRPC `Track` does (same rate limit, same answer
/// for an unknown and a wrong code); `Err` is the page to show instead.
async fn tracked(web: &Web, ctx: &Ctx, codes: &Codes) -> Result<TrackResponse, Response> {
    let t = ctx.t();
    let (code, verification) = (codes.codigo.trim(), codes.verificacion.trim());
    if code.is_empty() || verification.is_empty() {
        let body = track_form(
            ctx,
            codes,
            code.is_empty().then_some(t.required),
            verification.is_empty().then_some(t.required),
        );
        return Err(page::render(
            ctx,
            StatusCode::UNPROCESSABLE_ENTITY,
            t.track_title,
            body,
        ));
    }
    let request = TrackRequest {
        tracking_code: code.to_owned(),
        verification_code: verification.to_uppercase(),
    };
    match crate::lifecycle::tracking::track(&web.desk, Some(ctx.client), request).await {
        Ok(found) => Ok(found),
        Err(Error::NotFound(_)) => {
            let body = html! {
                p.notice role="alert" { (t.track_not_found) }
                (track_form(ctx, codes, None, None))
            };
            Err(page::render(
                ctx,
                StatusCode::NOT_FOUND,
                t.track_title,
                body,
            ))
        }
        Err(other) => Err(failure(ctx, other)),
    }
}

pub async fn track(State(web): State<Arc<Web>>, ctx: Ctx, Query(codes): Query<Codes>) -> Response {
    if codes.codigo.is_empty() && codes.verificacion.is_empty() {
        return home(ctx).await;
    }
    let found = match tracked(&web, &ctx, &codes).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let t = ctx.t();
    let directory = web.desk.trust.directory();
    let offset = web.desk.config.deadlines.utc_offset_minutes;
    let status = FilingStatus::try_from(found.status).unwrap_or_default();
    let cargo = format!(
        "/cargo?codigo={}&verificacion={}",
        url_encode(&found.tracking_code),
        url_encode(codes.verificacion.trim())
    );
    let body = html! {
        dl.summary.card {
            dt { (t.tracking_code) } dd.code { (found.tracking_code) }
            dt { (t.status) } dd { (page::status(&ctx, status)) }
            dt { (t.current_holder) }
            dd { (page::institution(&directory, &found.current_holder)) }
            dt { (t.due_date) } dd { (page::or_dash(&found.due_date)) }
        }
        h2 { (t.timeline) }
        (page::timeline(&ctx, &directory, offset, &found.timeline))
        @if !found.answer_documents.is_empty() {
            h2 { (t.answer_documents) }
            ul {
                @for d in &found.answer_documents {
                    li {
                        (d.name) " (" (page::size(d.size)) ") "
                        code.digest { (d.sha256) }
                    }
                }
            }
        }
        p { a.button href=(cargo) { (t.see_cargo) } }
    };
    page::render(&ctx, StatusCode::OK, t.track_result_title, body)
}

/// The signed receipts this node holds for a filing, in hop order, each with
/// the SHA-256 of its signed envelope; and whether the chain verifies.
async fn receipts(
    web: &Web,
    code: &str,
) -> Result<(Vec<(Receipt, String)>, Result<(), String>), Error> {
    let lookup = code.to_owned();
    let chain = web
        .desk
        .store
        .run(move |s| s.receipt_chain(&lookup))
        .await?;
    let envelopes: Vec<Vec<u8>> = chain.into_iter().map(|r| r.envelope).collect();
    let digests: Vec<String> = envelopes
        .iter()
        .map(|e| hex::encode(Sha256::digest(e)))
        .collect();
    let directory = web.desk.trust.directory();
    match crate::lifecycle::custody::verify_chain(&envelopes, &directory) {
        Ok(receipts) => Ok((receipts.into_iter().zip(digests).collect(), Ok(()))),
        Err(why) => {
            // Show what can be read, and say the chain does not verify.
            let readable = envelopes
                .iter()
                .zip(digests)
                .filter_map(|(bytes, digest)| {
                    use prost::Message;
                    let sealed = ecointegra_proto::v1::Envelope::decode(bytes.as_slice()).ok()?;
                    Some((Receipt::decode(sealed.payload.as_ref()).ok()?, digest))
                })
                .collect();
            Ok((readable, Err(why)))
        }
    }
}

/// One receipt as the cargo prints it.
fn receipt_card(ctx: &Ctx, web: &Web, receipt: &Receipt, digest: &str, verified: bool) -> Markup {
    let t = ctx.t();
    let directory = web.desk.trust.directory();
    let offset = web.desk.config.deadlines.utc_offset_minutes;
    let link = format!(
        "{}/verificar?codigo={}&recibo={}",
        ctx.base_url,
        url_encode(&receipt.tracking_code),
        digest
    );
    let docs = page::document_rows(
        receipt
            .documents
            .iter()
            .map(|d| (d.name.as_str(), d.size, d.sha256.as_slice())),
    );
    html! {
        section.card.receipt {
            h2 {
                (t.receipt) " " (receipt.hop) ": "
                (page::institution(&directory, &receipt.receiving_institution))
            }
            dl.summary {
                dt { (t.tracking_code) } dd.code { (receipt.tracking_code) }
                dt { (t.sent_by) } dd { (page::institution(&directory, &receipt.origin)) }
                dt { (t.received_at) } dd { (when(receipt.received_at_ms, offset)) }
                dt { (t.registry_number) } dd { (receipt.registry_number) }
                dt { (t.signature) }
                dd {
                    @if verified {
                        span.ok { "✓ " (t.signature_valid) }
                    } @else {
                        span.bad { "✗ " (t.signature_invalid) }
                    }
                }
                dt { (t.receipt_digest) } dd { code.digest { (digest) } }
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
            p.verify { (t.verify_at) " " a href=(link) { (link) } }
        }
    }
}

pub async fn cargo(State(web): State<Arc<Web>>, ctx: Ctx, Query(codes): Query<Codes>) -> Response {
    let found = match tracked(&web, &ctx, &codes).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let t = ctx.t();
    let (receipts, verified) = match receipts(&web, &found.tracking_code).await {
        Ok(r) => r,
        Err(e) => return failure(&ctx, e),
    };
    let query = format!(
        "codigo={}&verificacion={}",
        url_encode(&found.tracking_code),
        url_encode(codes.verificacion.trim())
    );
    let downloads = (format!("/cargo.pdf?{query}"), format!("/evidencia?{query}"));
    let holders = if receipts.is_empty() {
        let directory = web.desk.trust.directory();
        let mut holders: Vec<String> = found
            .timeline
            .iter()
            .map(|e| page::institution(&directory, &e.institution))
            .collect();
        holders.dedup();
        holders.join(", ")
    } else {
        String::new()
    };
    let body = html! {
        @if receipts.is_empty() {
            p.notice { (t.cargo_elsewhere) " " (holders) }
        } @else {
            p.no-print {
                button type="button" data-print { (t.print) }
                " "
                a.button href=(downloads.0) { (t.download_pdf) }
                " "
                a href=(downloads.1) { (t.download_evidence) }
            }
            p { (t.cargo_intro) }
            @if let Err(why) = &verified {
                p.notice.bad role="alert" { (t.chain_invalid) ": " (why) }
            }
            @for (receipt, digest) in &receipts {
                (receipt_card(&ctx, &web, receipt, digest, verified.is_ok()))
            }
        }
    };
    page::render(&ctx, StatusCode::OK, t.cargo_title, body)
}

/// The cargo de recepción as a PDF: every signed receipt this node holds,
/// with its documents' digests, and a QR code of the link that verifies the
/// latest one.
pub async fn cargo_pdf(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Query(codes): Query<Codes>,
) -> Response {
    let found = match tracked(&web, &ctx, &codes).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let (receipts, verified) = match receipts(&web, &found.tracking_code).await {
        Ok(r) => r,
        Err(e) => return failure(&ctx, e),
    };
    let Some((_, latest)) = receipts.last() else {
        // Not held here: the page says who holds it.
        return cargo(State(web), ctx, Query(codes)).await;
    };
    let t = ctx.t();
    let directory = web.desk.trust.directory();
    let offset = web.desk.config.deadlines.utc_offset_minutes;
    let signature = if verified.is_ok() {
        t.signature_valid
    } else {
        t.signature_invalid
    };
    let cargo = Cargo {
        title: t.cargo_title.into(),
        issuer: page::institution(&directory, web.desk.institution()),
        fields: vec![(t.tracking_code.into(), found.tracking_code.clone())],
        sections: receipts
            .iter()
            .map(|(r, digest)| Section {
                heading: format!(
                    "{} {}: {}",
                    t.receipt,
                    r.hop,
                    page::institution(&directory, &r.receiving_institution)
                ),
                fields: vec![
                    (t.sent_by.into(), page::institution(&directory, &r.origin)),
                    (t.received_at.into(), when(r.received_at_ms, offset)),
                    (t.registry_number.into(), r.registry_number.clone()),
                    (t.signature.into(), signature.into()),
                    (t.receipt_digest.into(), digest.clone()),
                ],
                documents: r
                    .documents
                    .iter()
                    .map(|d| (d.name.clone(), d.size, hex::encode(&d.sha256)))
                    .collect(),
                documents_heading: t.documents.into(),
            })
            .collect(),
        link: format!(
            "{}/verificar?codigo={}&recibo={latest}",
            ctx.base_url,
            url_encode(&found.tracking_code)
        ),
        link_caption: t.verify_at.into(),
    };
    pdf_response(&found.tracking_code, &cargo)
}

/// The filing's evidence bundle, without its documents, for whoever holds
/// both codes.
pub async fn evidence(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Query(codes): Query<Codes>,
) -> Response {
    let found = match tracked(&web, &ctx, &codes).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    evidence_download(&web, &ctx, &found.tracking_code, false).await
}

#[derive(Deserialize)]
pub struct Unsubscribe {
    #[serde(default)]
    codigo: String,
    #[serde(default)]
    clave: String,
}

/// The unsubscribe link of a filing's mail: no more mail about it.
pub async fn unsubscribe(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Query(q): Query<Unsubscribe>,
) -> Response {
    let t = ctx.t();
    let (code, key) = (q.codigo.trim().to_uppercase(), q.clave.trim().to_owned());
    match web
        .desk
        .store
        .run(move |s| s.unsubscribe(&code, &key))
        .await
    {
        Ok(true) => page::message(
            &ctx,
            StatusCode::OK,
            t.unsubscribed_title,
            t.unsubscribed_body,
        ),
        Ok(false) => failure(&ctx, Error::NotFound("mail subscription".into())),
        Err(e) => failure(&ctx, e),
    }
}

#[derive(Deserialize)]
pub struct VerifyQuery {
    #[serde(default)]
    codigo: String,
    #[serde(default)]
    recibo: String,
}

/// Verifies a printed cargo: the receipt with this SHA-256, for this
/// tracking code, is held here and its chain of signatures verifies.
pub async fn verify(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Query(q): Query<VerifyQuery>,
) -> Response {
    let t = ctx.t();
    let code = q.codigo.trim().to_uppercase();
    let digest = q.recibo.trim().to_lowercase();
    let (receipts, verified) = match receipts(&web, &code).await {
        Ok(r) => r,
        Err(e) => return failure(&ctx, e),
    };
    let found = receipts.iter().position(|(_, d)| *d == digest);
    let body = match found {
        Some(i) if verified.is_ok() => html! {
            p.notice.ok role="status" { "✓ " (t.verify_ok) }
            (receipt_card(&ctx, &web, &receipts[i].0, &digest, true))
        },
        Some(_) => html! {
            p.notice.bad role="alert" {
                "✗ " (t.chain_invalid) ": " (verified.err().unwrap_or_default())
            }
        },
        None => html! { p.notice.bad role="alert" { "✗ " (t.verify_unknown) } },
    };
    let status = if found.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    page::render(&ctx, status, t.verify_title, body)
}
