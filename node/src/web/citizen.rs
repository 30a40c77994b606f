//! The citizen's pages (public): tracking a filing with its two codes, the
//! cargo de recepción as a printable page, and verifying a printed cargo.
//! An unknown code and a wrong verification code get the same page.

use super::forms::url_encode;
use super::page::{self, esc, when};
use super::{Ctx, Web, failure};
use crate::error::Error;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use ecointegra_proto::v1::{FilingStatus, Receipt, TrackRequest, TrackResponse};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::sync::Arc;

#[derive(Deserialize, Default)]
pub struct Codes {
    #[serde(default)]
    codigo: String,
    #[serde(default)]
    verificacion: String,
}

pub async fn home(ctx: Ctx) -> Response {
    let t = ctx.t();
    let body = format!(
        "<p>{}</p>{}",
        t.track_intro,
        track_form(&ctx, &Codes::default(), None, None)
    );
    page::render(&ctx, StatusCode::OK, t.track_title, &body)
}

fn track_form(
    ctx: &Ctx,
    codes: &Codes,
    code_error: Option<&str>,
    verif_error: Option<&str>,
) -> String {
    let t = ctx.t();
    format!(
        r#"<form method="get" action="/seguimiento" class="card narrow">{}{}<button type="submit">{}</button></form>"#,
        page::input(
            "codigo",
            t.tracking_code,
            &codes.codigo,
            code_error,
            r#"required autocomplete="off" autocapitalize="characters" spellcheck="false""#,
            Some(t.tracking_code_help),
        ),
        page::input(
            "verificacion",
            t.verification_code,
            &codes.verificacion,
            verif_error,
            r#"required autocomplete="off" autocapitalize="characters" spellcheck="false""#,
            Some(t.verification_code_help),
        ),
        t.track_button
    )
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
            &body,
        ));
    }
    let request = TrackRequest {
        tracking_code: code.to_owned(),
        verification_code: verification.to_uppercase(),
    };
    match crate::lifecycle::tracking::track(&web.desk, Some(ctx.client), request).await {
        Ok(found) => Ok(found),
        Err(Error::NotFound(_)) => {
            let body = format!(
                r#"<p class="notice" role="alert">{}</p>{}"#,
                t.track_not_found,
                track_form(ctx, codes, None, None)
            );
            Err(page::render(
                ctx,
                StatusCode::NOT_FOUND,
                t.track_title,
                &body,
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
    let mut body = format!(
        r#"<dl class="summary card">
<dt>{l_code}</dt><dd class="code">{code}</dd>
<dt>{l_status}</dt><dd>{status}</dd>
<dt>{l_holder}</dt><dd>{holder}</dd>
<dt>{l_due}</dt><dd>{due}</dd>
</dl>
<h2>{l_timeline}</h2>
{timeline}"#,
        l_code = t.tracking_code,
        code = esc(&found.tracking_code),
        l_status = t.status,
        status = page::status(&ctx, status),
        l_holder = t.current_holder,
        holder = esc(&page::institution(&directory, &found.current_holder)),
        l_due = t.due_date,
        due = page::or_dash(&found.due_date),
        l_timeline = t.timeline,
        timeline = page::timeline(&ctx, &directory, offset, &found.timeline),
    );
    if !found.answer_documents.is_empty() {
        let _ = write!(body, "<h2>{}</h2><ul>", t.answer_documents);
        for d in &found.answer_documents {
            let _ = write!(
                body,
                r#"<li>{} ({}) <code class="digest">{}</code></li>"#,
                esc(&d.name),
                page::size(d.size),
                esc(&d.sha256)
            );
        }
        body.push_str("</ul>");
    }
    let _ = write!(
        body,
        r#"<p><a class="button" href="/cargo?codigo={}&amp;verificacion={}">{}</a></p>"#,
        esc(&url_encode(&found.tracking_code)),
        esc(&url_encode(codes.verificacion.trim())),
        t.see_cargo
    );
    page::render(&ctx, StatusCode::OK, t.track_result_title, &body)
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
                    Some((Receipt::decode(sealed.payload.as_slice()).ok()?, digest))
                })
                .collect();
            Ok((readable, Err(why)))
        }
    }
}

/// One receipt as the cargo prints it.
fn receipt_card(ctx: &Ctx, web: &Web, receipt: &Receipt, digest: &str, verified: bool) -> String {
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
    format!(
        r#"<section class="card receipt">
<h2>{l_receipt} {hop}: {to}</h2>
<dl class="summary">
<dt>{l_code}</dt><dd class="code">{code}</dd>
<dt>{l_from}</dt><dd>{from}</dd>
<dt>{l_received}</dt><dd>{received}</dd>
<dt>{l_registry}</dt><dd>{registry}</dd>
<dt>{l_signature}</dt><dd>{signature}</dd>
<dt>{l_digest}</dt><dd><code class="digest">{digest}</code></dd>
</dl>
<table><caption>{l_documents}</caption><thead><tr><th scope="col">{l_name}</th><th scope="col">{l_size}</th><th scope="col">SHA-256</th></tr></thead><tbody>{docs}</tbody></table>
<p class="verify">{l_verify} <a href="{link}">{link}</a></p>
</section>"#,
        l_receipt = t.receipt,
        hop = receipt.hop,
        to = esc(&page::institution(
            &directory,
            &receipt.receiving_institution
        )),
        l_code = t.tracking_code,
        code = esc(&receipt.tracking_code),
        l_from = t.sent_by,
        from = esc(&page::institution(&directory, &receipt.origin)),
        l_received = t.received_at,
        received = when(receipt.received_at_ms, offset),
        l_registry = t.registry_number,
        registry = esc(&receipt.registry_number),
        l_signature = t.signature,
        signature = if verified {
            format!(r#"<span class="ok">✓ {}</span>"#, t.signature_valid)
        } else {
            format!(r#"<span class="bad">✗ {}</span>"#, t.signature_invalid)
        },
        l_digest = t.receipt_digest,
        l_documents = t.documents,
        l_name = t.name,
        l_size = t.size,
        l_verify = t.verify_at,
        link = esc(&link),
    )
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
    let mut body = String::new();
    if receipts.is_empty() {
        let directory = web.desk.trust.directory();
        let mut holders: Vec<String> = found
            .timeline
            .iter()
            .map(|e| page::institution(&directory, &e.institution))
            .collect();
        holders.dedup();
        let _ = write!(
            body,
            r#"<p class="notice">{} {}</p>"#,
            t.cargo_elsewhere,
            esc(&holders.join(", "))
        );
    } else {
        let _ = write!(
            body,
            r#"<p class="no-print"><button type="button" data-print>{}</button></p><p>{}</p>"#,
            t.print, t.cargo_intro
        );
        if let Err(why) = &verified {
            let _ = write!(
                body,
                r#"<p class="notice bad" role="alert">{}: {}</p>"#,
                t.chain_invalid,
                esc(why)
            );
        }
        for (receipt, digest) in &receipts {
            body.push_str(&receipt_card(&ctx, &web, receipt, digest, verified.is_ok()));
        }
    }
    page::render(&ctx, StatusCode::OK, t.cargo_title, &body)
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
        Some(i) if verified.is_ok() => format!(
            r#"<p class="notice ok" role="status">✓ {}</p>{}"#,
            t.verify_ok,
            receipt_card(&ctx, &web, &receipts[i].0, &digest, true)
        ),
        Some(_) => format!(
            r#"<p class="notice bad" role="alert">✗ {}: {}</p>"#,
            t.chain_invalid,
            esc(verified.err().as_deref().unwrap_or_default())
        ),
        None => format!(
            r#"<p class="notice bad" role="alert">✗ {}</p>"#,
            t.verify_unknown
        ),
    };
    let status = if found.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    page::render(&ctx, status, t.verify_title, &body)
}
