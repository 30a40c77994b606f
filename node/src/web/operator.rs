//! The operator's dashboard (operator role): the queues of every institution
//! refreshing live, deliveries and latency over the last hour, and the dead
//! letters to inspect, replay or discard.

use super::forms::Fields;
use super::page::{self, Attrs, when};
use super::{Ctx, Web, failure};
use crate::error::Error;
use crate::grpc::auth::Role;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use ecointegra_proto::v1::{DeadLetterState, Direction};
use maud::{Markup, html};
use std::fmt::Write as _;
use std::sync::Arc;

pub async fn dashboard(State(web): State<Arc<Web>>, ctx: Ctx) -> Response {
    if let Err(denied) = ctx.require(Role::Operator) {
        return denied;
    }
    let t = ctx.t();
    let queues = queue_table(&web, &ctx).await;
    let chart = chart_html(&web, &ctx).await;
    let letters = match web.desk.store.run(|s| s.dead_letters(true, 100)).await {
        Ok(l) => l,
        Err(e) => return failure(&ctx, e),
    };
    let offset = web.desk.config.deadlines.utc_offset_minutes;
    let body = html! {
        section aria-labelledby="colas" {
            h2 id="colas" { (t.queues) }
            div data-refresh="/operacion/colas" data-every="2000" aria-live="polite" { (queues) }
        }
        section aria-labelledby="grafico" {
            h2 id="grafico" { (t.last_hour) }
            div data-refresh="/operacion/grafico" data-every="30000" { (chart) }
        }
        section aria-labelledby="dlq" {
            h2 id="dlq" { (t.dead_letters) }
            @if letters.is_empty() {
                p.notice { (t.dlq_empty) }
            } @else {
                div.table-wrap {
                    table {
                        thead {
                            tr {
                                th scope="col" { "#" }
                                th scope="col" { (t.when) }
                                th scope="col" { (t.state) }
                                th scope="col" { (t.reason) }
                                th scope="col" { (t.claimed_sender) }
                                th scope="col" { (t.record_key) }
                                th scope="col" { (t.source) }
                            }
                        }
                        tbody {
                            @for l in &letters {
                                tr {
                                    td { a href={ "/operacion/dlq/" (l.id) } { (l.id) } }
                                    td { (when(l.dead_at_ms, offset)) }
                                    td { (dead_letter_state(&ctx, l.state)) }
                                    td { strong { (l.reason_code) } ": " (l.reason) }
                                    td { (l.claimed_sender) }
                                    td { code { (l.record_key) } }
                                    td {
                                        (l.source_topic) "[" (l.source_partition) "]@"
                                        (l.source_offset)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page::render(&ctx, StatusCode::OK, t.operations_title, body)
}

fn dead_letter_state(ctx: &Ctx, state: i32) -> &'static str {
    let t = ctx.t();
    match DeadLetterState::try_from(state) {
        Ok(DeadLetterState::Open) => t.dlq_open,
        Ok(DeadLetterState::Replayed) => t.dlq_replayed,
        Ok(DeadLetterState::Discarded) => t.dlq_discarded,
        _ => "—",
    }
}

/// The queues as an HTML fragment, refreshed in place every few seconds.
pub async fn queues(State(web): State<Arc<Web>>, ctx: Ctx) -> Response {
    if let Err(denied) = ctx.require(Role::Operator) {
        return denied;
    }
    Html(queue_table(&web, &ctx).await.into_string()).into_response()
}

async fn queue_table(web: &Web, ctx: &Ctx) -> Markup {
    let t = ctx.t();
    let watch = web.services.watch.clone();
    let report =
        match tokio::task::spawn_blocking(move || crate::telemetry::queues::queues(&watch)).await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Queues not readable for the console.");
                return html! { p.notice.bad { (t.unavailable_body) } };
            }
            Err(_) => return html! { p.notice.bad { (t.unavailable_body) } },
        };
    let directory = web.desk.trust.directory();
    let offset = web.desk.config.deadlines.utc_offset_minutes;
    html! {
        p class=(if report.kafka_reachable { "ok" } else { "bad" }) {
            "Kafka: "
            (if report.kafka_reachable { t.reachable } else { t.unreachable })
            " · " (t.updated) " " (when(report.generated_at_ms, offset))
        }
        div.table-wrap {
            table.queues {
                thead {
                    tr {
                        th scope="col" { (t.institution) }
                        th scope="col" { (t.inbox_lag) }
                        th scope="col" { (t.outbox_backlog) }
                        th scope="col" { (t.pending_receipts) }
                        th scope="col" { (t.dlq_open_count) }
                        th scope="col" { (t.last_delivery) }
                        th scope="col" { (t.deliveries_per_minute) }
                    }
                }
                tbody {
                    @for q in &report.institutions {
                        tr class=[q.local.then_some("local")] {
                            th scope="row" { (page::institution(&directory, &q.institution)) }
                            td {
                                @if q.lag_known {
                                    (q.inbox_lag_records) " ("
                                    (format!("{:.0}", q.inbox_lag_seconds)) " s)"
                                } @else {
                                    "—"
                                }
                            }
                            td { (q.outbox_backlog) }
                            td {
                                @if q.pending_receipts > 0 {
                                    (q.pending_receipts) " ("
                                    (format!("{:.0}", q.oldest_pending_receipt_seconds)) " s)"
                                } @else {
                                    "0"
                                }
                            }
                            td {
                                @if q.local { (q.dead_letters_open) } @else { "—" }
                            }
                            td { (when(q.last_delivery_at_ms, offset)) }
                            td { (q.deliveries_last_minute) }
                        }
                    }
                }
            }
        }
        @if !report.notifications.is_empty() {
            h3 { (t.notifications) }
            div.table-wrap {
                table {
                    thead {
                        tr {
                            th scope="col" { (t.channel) }
                            th scope="col" { (t.sent) }
                            th scope="col" { (t.pending) }
                            th scope="col" { (t.failing) }
                            th scope="col" { (t.last_error) }
                        }
                    }
                    tbody {
                        @for n in &report.notifications {
                            tr {
                                td { (n.channel) " " code { (n.target) } }
                                td { (n.sent) }
                                td { (n.pending) }
                                td.bad[n.failing > 0] { (n.failing) }
                                td { (n.last_error) }
                            }
                        }
                    }
                }
            }
        }
        @if !report.troubled.is_empty() {
            h3 { (t.troubled) }
            ul.troubled {
                @for f in &report.troubled {
                    li {
                        code {
                            (if f.tracking_code.is_empty() { &f.transfer_id } else { &f.tracking_code })
                        }
                        @if !f.counterpart.is_empty() {
                            " → " (page::institution(&directory, &f.counterpart))
                        }
                        ": " (f.reason)
                        @if f.dead_letter_id > 0 {
                            " "
                            a href={ "/operacion/dlq/" (f.dead_letter_id) } { "#" (f.dead_letter_id) }
                        }
                    }
                }
            }
        }
    }
}

/// One minute of the last hour.
#[derive(Default, Clone, Copy)]
struct Minute {
    sent: u32,
    received: u32,
    /// Submit-to-receipt latencies of transfers receipted in this minute, ms.
    p50_ms: i64,
    p95_ms: i64,
}

/// Deliveries per minute over the last hour, from the store: transfers this
/// node sent whose receipt came back, and transfers it received; and the
/// submit-to-receipt latency of the former.
async fn last_hour(web: &Web) -> Result<(i64, Vec<Minute>), Error> {
    let now = ecointegra_broker::now_ms();
    let start = (now / 60_000 - 59) * 60_000;
    let rows: Vec<(i64, i64, i64)> = web
        .desk
        .store
        .run(move |s| s.deliveries_since(start))
        .await?;
    let mut minutes = vec![Minute::default(); 60];
    let mut latencies: Vec<Vec<i64>> = vec![Vec::new(); 60];
    for (direction, registered, delivered) in rows {
        let i = ((delivered - start) / 60_000).clamp(0, 59) as usize;
        if direction == Direction::Outbound as i64 {
            minutes[i].sent += 1;
            latencies[i].push((delivered - registered).max(0));
        } else {
            minutes[i].received += 1;
        }
    }
    for (minute, mut l) in minutes.iter_mut().zip(latencies) {
        if l.is_empty() {
            continue;
        }
        l.sort_unstable();
        let at = |q: f64| l[((l.len() as f64 - 1.0) * q).round() as usize];
        minute.p50_ms = at(0.5);
        minute.p95_ms = at(0.95);
    }
    Ok((start, minutes))
}

pub async fn chart(State(web): State<Arc<Web>>, ctx: Ctx) -> Response {
    if let Err(denied) = ctx.require(Role::Operator) {
        return denied;
    }
    Html(chart_html(&web, &ctx).await.into_string()).into_response()
}

/// Two small SVG charts (deliveries per minute, latency p50/p95 per minute)
/// and the same numbers as a table, for screen readers and for copying.
async fn chart_html(web: &Web, ctx: &Ctx) -> Markup {
    let t = ctx.t();
    let (start, minutes) = match last_hour(web).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "Deliveries not readable for the console.");
            return html! { p.notice.bad { (t.unavailable_body) } };
        }
    };
    let offset = web.desk.config.deadlines.utc_offset_minutes;
    let (w, h, pad) = (600.0_f64, 160.0_f64, 30.0_f64);
    let step = (w - pad) / 60.0;
    let max_count = minutes
        .iter()
        .map(|m| m.sent + m.received)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let max_latency = minutes.iter().map(|m| m.p95_ms).max().unwrap_or(0).max(1) as f64;
    let total_sent: u32 = minutes.iter().map(|m| m.sent).sum();
    let total_received: u32 = minutes.iter().map(|m| m.received).sum();
    // SVG coordinates to a tenth.
    let n = |v: f64| format!("{v:.1}");
    let points = |pick: fn(&Minute) -> i64| -> Vec<(f64, f64)> {
        minutes
            .iter()
            .enumerate()
            .filter(|(_, m)| m.sent > 0)
            .map(|(i, m)| {
                (
                    pad + (i as f64 + 0.4) * step,
                    h - pick(m) as f64 / max_latency * (h - 20.0),
                )
            })
            .collect()
    };
    // A line through the minutes with deliveries, and a dot on each (one
    // minute alone has no line).
    let line = |pick: fn(&Minute) -> i64, class: &str| {
        let points = points(pick);
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        html! {
            polyline class=(class) points=(path.join(" ")) {}
            @for (x, y) in &points {
                circle class=(class) cx=(n(*x)) cy=(n(*y)) r="2.5" {}
            }
        }
    };
    html! {
        div.charts {
            figure {
                svg viewBox={ "0 0 " (w) " " (h) } role="img"
                    aria-label={
                        (t.deliveries_per_minute) ": " (total_sent) " " (t.sent_receipted) ", "
                        (total_received) " " (t.received)
                    } {
                    text x="0" y="12" class="axis" { (max_count) }
                    text x="0" y=(h) class="axis" { "0" }
                    @for (i, m) in minutes.iter().enumerate() {
                        @let x = pad + i as f64 * step;
                        @let sent_h = f64::from(m.sent) / max_count * (h - 20.0);
                        @let recv_h = f64::from(m.received) / max_count * (h - 20.0);
                        rect.sent x=(n(x)) y=(n(h - sent_h)) width=(n(step * 0.8)) height=(n(sent_h)) {}
                        rect.received x=(n(x)) y=(n(h - sent_h - recv_h)) width=(n(step * 0.8))
                            height=(n(recv_h)) {}
                    }
                }
                figcaption {
                    (t.deliveries_per_minute) " — " span.key.sent {} " " (t.sent_receipted)
                    " (" (total_sent) ") · " span.key.received {} " " (t.received)
                    " (" (total_received) ")"
                }
            }
            figure {
                svg viewBox={ "0 0 " (w) " " (h) } role="img" aria-label=(t.latency) {
                    text x="0" y="12" class="axis" { (max_latency) " ms" }
                    text x="0" y=(h) class="axis" { "0" }
                    (line(|m| m.p95_ms, "p95"))
                    (line(|m| m.p50_ms, "p50"))
                }
                figcaption {
                    (t.latency) " — " span.key.p50 {} " p50 · " span.key.p95 {} " p95"
                }
            }
        }
        details {
            summary { (t.chart_data) }
            div.table-wrap {
                table {
                    thead {
                        tr {
                            th scope="col" { (t.minute) }
                            th scope="col" { (t.sent_receipted) }
                            th scope="col" { (t.received) }
                            th scope="col" { "p50 ms" }
                            th scope="col" { "p95 ms" }
                        }
                    }
                    tbody {
                        @for (i, m) in minutes.iter().enumerate() {
                            @if m.sent + m.received > 0 {
                                tr {
                                    td { (when(start + i as i64 * 60_000, offset)) }
                                    td { (m.sent) }
                                    td { (m.received) }
                                    td { (m.p50_ms) }
                                    td { (m.p95_ms) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn dead_letter(State(web): State<Arc<Web>>, ctx: Ctx, Path(id): Path<i64>) -> Response {
    if let Err(denied) = ctx.require(Role::Operator) {
        return denied;
    }
    dead_letter_page(&web, &ctx, id, None, None, StatusCode::OK).await
}

async fn dead_letter_page(
    web: &Web,
    ctx: &Ctx,
    id: i64,
    note: Option<(bool, String)>,
    reason_error: Option<&str>,
    status: StatusCode,
) -> Response {
    let t = ctx.t();
    let detail = match web.desk.store.run(move |s| s.dead_letter_detail(id)).await {
        Ok(d) => d,
        Err(e) => return failure(ctx, e),
    };
    let entry = detail.entry.unwrap_or_default();
    let offset = web.desk.config.deadlines.utc_offset_minutes;
    const SHOWN: usize = 1024;
    let mut dump = String::new();
    for (i, line) in detail.original_value[..detail.original_value.len().min(SHOWN)]
        .chunks(16)
        .enumerate()
    {
        let ascii: String = line
            .iter()
            .map(|b| {
                if b.is_ascii_graphic() || *b == b' ' {
                    *b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(
            dump,
            "{:06x}  {:<48} {}",
            i * 16,
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
            ascii
        );
    }
    let body = html! {
        @if let Some((ok, text)) = &note {
            p class={ "notice " (if *ok { "ok" } else { "bad" }) }
                role=(if *ok { "status" } else { "alert" }) { (text) }
        }
        dl.summary.card {
            dt { (t.state) } dd { (dead_letter_state(ctx, entry.state)) }
            dt { (t.reason) } dd { strong { (entry.reason_code) } ": " (entry.reason) }
            dt { (t.when) } dd { (when(entry.dead_at_ms, offset)) }
            dt { (t.claimed_sender) } dd { (page::or_dash(&entry.claimed_sender)) }
            dt { (t.message_id) } dd { code { (page::or_dash(&entry.message_id)) } }
            dt { (t.record_key) } dd { code { (entry.record_key) } }
            dt { (t.source) }
            dd { (entry.source_topic) "[" (entry.source_partition) "]@" (entry.source_offset) }
            dt { "DLQ" }
            dd { (entry.dlq_topic) "[" (entry.dlq_partition) "]@" (entry.dlq_offset) }
            dt { (t.envelope) } dd { (detail.envelope_summary) }
            dt { (t.size) } dd { (page::size(detail.original_value.len() as u64)) }
            @if entry.discarded_at_ms > 0 {
                dt { (t.dlq_discarded) }
                dd {
                    (when(entry.discarded_at_ms, offset)) " · " (entry.discarded_by) " · "
                    (entry.discard_reason)
                }
            } @else if entry.replayed_at_ms > 0 {
                dt { (t.dlq_replayed) } dd { (when(entry.replayed_at_ms, offset)) }
            }
        }
        details {
            summary { (t.original_bytes) }
            pre.dump { (dump) }
        }
        @if entry.state == DeadLetterState::Open as i32 {
            div.actions-grid {
                form.card.action method="post" action={ "/operacion/dlq/" (id) "/reenviar" } novalidate {
                    h2 { (t.replay) }
                    p.help { (t.replay_help) }
                    (page::csrf(ctx))
                    button type="submit" { (t.replay) }
                }
                form.card.action method="post" action={ "/operacion/dlq/" (id) "/descartar" } novalidate {
                    h2 { (t.discard) }
                    (page::csrf(ctx))
                    (page::textarea(
                        "descartar/reason",
                        t.discard_reason,
                        "",
                        reason_error,
                        Attrs::new().required(),
                    ))
                    button.danger type="submit" { (t.discard) }
                }
            }
        }
        p { a href="/operacion" { (t.back_to_operations) } }
    };
    page::render(ctx, status, &format!("{} #{id}", t.dead_letter), body)
}

pub async fn replay(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<i64>,
    Form(form): Form<Fields>,
) -> Response {
    let session = match ctx.posting(Role::Operator, &form) {
        Ok(s) => s,
        Err(denied) => return denied,
    };
    let actor = ctx.actor(&session);
    match crate::consume::dead_letters::replay_for(&web.services.consumers, &actor, id).await {
        Ok(outcome) => {
            tracing::info!(dead_letter = id, operator = %session.name, replayed = outcome.replayed, "Dead letter replayed from the console.");
            Redirect::to(&format!("/operacion/dlq/{id}")).into_response()
        }
        Err(Error::FailedPrecondition(why)) => {
            let note = Some((false, super::text::localize(ctx.lang, &why)));
            dead_letter_page(&web, &ctx, id, note, None, StatusCode::CONFLICT).await
        }
        Err(e) => failure(&ctx, e),
    }
}

pub async fn discard(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<i64>,
    Form(form): Form<Fields>,
) -> Response {
    let session = match ctx.posting(Role::Operator, &form) {
        Ok(s) => s,
        Err(denied) => return denied,
    };
    let reason = form.value("reason");
    let actor = ctx.actor(&session);
    match crate::consume::dead_letters::discard_for(&web.desk.store, &actor, id, "", reason).await {
        Ok(_) => {
            tracing::info!(dead_letter = id, operator = %session.name, "Dead letter discarded from the console.");
            Redirect::to(&format!("/operacion/dlq/{id}")).into_response()
        }
        Err(Error::InvalidArgument(v)) => {
            let why: Vec<String> = v
                .iter()
                .map(|v| super::text::localize(ctx.lang, &v.description))
                .collect();
            let why = why.join(" ");
            dead_letter_page(
                &web,
                &ctx,
                id,
                None,
                Some(&why),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(Error::FailedPrecondition(why)) => {
            let note = Some((false, super::text::localize(ctx.lang, &why)));
            dead_letter_page(&web, &ctx, id, note, None, StatusCode::CONFLICT).await
        }
        Err(e) => failure(&ctx, e),
    }
}
