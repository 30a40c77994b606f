//! The operator's dashboard (operator role): the queues of every institution
//! refreshing live, deliveries and latency over the last hour, and the dead
//! letters to inspect, replay or discard.

use super::forms::Fields;
use super::page::{self, esc, when};
use super::{Ctx, Web, failure};
use crate::error::Error;
use crate::grpc::auth::Role;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use ecointegra_proto::v1::{DeadLetterState, Direction};
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
    let mut dlq = String::new();
    if letters.is_empty() {
        let _ = write!(dlq, r#"<p class="notice">{}</p>"#, t.dlq_empty);
    } else {
        let _ = write!(
            dlq,
            r#"<div class="table-wrap"><table><thead><tr><th scope="col">#</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th></tr></thead><tbody>"#,
            t.when, t.state, t.reason, t.claimed_sender, t.record_key, t.source
        );
        for l in &letters {
            let _ = write!(
                dlq,
                r#"<tr><td><a href="/operacion/dlq/{id}">{id}</a></td><td>{at}</td><td>{state}</td><td><strong>{code}</strong>: {reason}</td><td>{sender}</td><td><code>{key}</code></td><td>{topic}[{partition}]@{offset}</td></tr>"#,
                id = l.id,
                at = when(l.dead_at_ms, offset),
                state = dead_letter_state(&ctx, l.state),
                code = esc(&l.reason_code),
                reason = esc(&l.reason),
                sender = esc(&l.claimed_sender),
                key = esc(&l.record_key),
                topic = esc(&l.source_topic),
                partition = l.source_partition,
                offset = l.source_offset,
            );
        }
        dlq.push_str("</tbody></table></div>");
    }
    let body = format!(
        r#"<section aria-labelledby="colas"><h2 id="colas">{l_queues}</h2>
<div data-refresh="/operacion/colas" data-every="2000" aria-live="polite">{queues}</div></section>
<section aria-labelledby="grafico"><h2 id="grafico">{l_chart}</h2>
<div data-refresh="/operacion/grafico" data-every="30000">{chart}</div></section>
<section aria-labelledby="dlq"><h2 id="dlq">{l_dlq}</h2>{dlq}</section>"#,
        l_queues = t.queues,
        l_chart = t.last_hour,
        l_dlq = t.dead_letters,
    );
    page::render(&ctx, StatusCode::OK, t.operations_title, &body)
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
    Html(queue_table(&web, &ctx).await).into_response()
}

async fn queue_table(web: &Web, ctx: &Ctx) -> String {
    let t = ctx.t();
    let watch = web.services.watch.clone();
    let report =
        match tokio::task::spawn_blocking(move || crate::telemetry::queues::queues(&watch)).await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Queues not readable for the console.");
                return format!(r#"<p class="notice bad">{}</p>"#, t.unavailable_body);
            }
            Err(_) => return format!(r#"<p class="notice bad">{}</p>"#, t.unavailable_body),
        };
    let directory = web.desk.trust.directory();
    let offset = web.desk.config.deadlines.utc_offset_minutes;
    let mut out = format!(
        r#"<p class="{}">Kafka: {} · {} {}</p><div class="table-wrap"><table class="queues"><thead><tr><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th></tr></thead><tbody>"#,
        if report.kafka_reachable { "ok" } else { "bad" },
        if report.kafka_reachable {
            t.reachable
        } else {
            t.unreachable
        },
        t.updated,
        when(report.generated_at_ms, offset),
        t.institution,
        t.inbox_lag,
        t.outbox_backlog,
        t.pending_receipts,
        t.dlq_open_count,
        t.last_delivery,
        t.deliveries_per_minute,
    );
    for q in &report.institutions {
        let lag = if q.lag_known {
            format!("{} ({:.0} s)", q.inbox_lag_records, q.inbox_lag_seconds)
        } else {
            "—".into()
        };
        let pending = if q.pending_receipts > 0 {
            format!(
                "{} ({:.0} s)",
                q.pending_receipts, q.oldest_pending_receipt_seconds
            )
        } else {
            "0".into()
        };
        let _ = write!(
            out,
            r#"<tr{local}><th scope="row">{name}</th><td>{lag}</td><td>{backlog}</td><td>{pending}</td><td>{dlq}</td><td>{last}</td><td>{per_minute}</td></tr>"#,
            local = if q.local { r#" class="local""# } else { "" },
            name = esc(&page::institution(&directory, &q.institution)),
            backlog = q.outbox_backlog,
            dlq = if q.local {
                q.dead_letters_open.to_string()
            } else {
                "—".into()
            },
            last = when(q.last_delivery_at_ms, offset),
            per_minute = q.deliveries_last_minute,
        );
    }
    out.push_str("</tbody></table></div>");
    if !report.troubled.is_empty() {
        let _ = write!(out, "<h3>{}</h3><ul class=\"troubled\">", t.troubled);
        for f in &report.troubled {
            let link = if f.dead_letter_id > 0 {
                format!(
                    r#" <a href="/operacion/dlq/{0}">#{0}</a>"#,
                    f.dead_letter_id
                )
            } else {
                String::new()
            };
            let counterpart = if f.counterpart.is_empty() {
                String::new()
            } else {
                format!(" → {}", esc(&page::institution(&directory, &f.counterpart)))
            };
            let _ = write!(
                out,
                "<li><code>{}</code>{counterpart}: {}{link}</li>",
                esc(if f.tracking_code.is_empty() {
                    &f.transfer_id
                } else {
                    &f.tracking_code
                }),
                esc(&f.reason),
            );
        }
        out.push_str("</ul>");
    }
    out
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
    Html(chart_html(&web, &ctx).await).into_response()
}

/// Two small SVG charts (deliveries per minute, latency p50/p95 per minute)
/// and the same numbers as a table, for screen readers and for copying.
async fn chart_html(web: &Web, ctx: &Ctx) -> String {
    let t = ctx.t();
    let (start, minutes) = match last_hour(web).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "Deliveries not readable for the console.");
            return format!(r#"<p class="notice bad">{}</p>"#, t.unavailable_body);
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
    let mut bars = String::new();
    for (i, m) in minutes.iter().enumerate() {
        let x = pad + i as f64 * step;
        let sent_h = f64::from(m.sent) / max_count * (h - 20.0);
        let recv_h = f64::from(m.received) / max_count * (h - 20.0);
        let _ = write!(
            bars,
            r#"<rect class="sent" x="{x:.1}" y="{:.1}" width="{:.1}" height="{sent_h:.1}"/><rect class="received" x="{x:.1}" y="{:.1}" width="{:.1}" height="{recv_h:.1}"/>"#,
            h - sent_h,
            step * 0.8,
            h - sent_h - recv_h,
            step * 0.8,
        );
    }
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
        let mut svg = format!(r#"<polyline class="{class}" points="{}"/>"#, path.join(" "));
        for (x, y) in &points {
            let _ = write!(
                svg,
                r#"<circle class="{class}" cx="{x:.1}" cy="{y:.1}" r="2.5"/>"#
            );
        }
        svg
    };
    let mut table = String::new();
    for (i, m) in minutes.iter().enumerate() {
        if m.sent + m.received == 0 {
            continue;
        }
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(start + i as i64 * 60_000, offset),
            m.sent,
            m.received,
            m.p50_ms,
            m.p95_ms
        );
    }
    format!(
        r#"<div class="charts">
<figure><svg viewBox="0 0 {w} {h}" role="img" aria-label="{l_throughput}: {total_sent} {l_sent}, {total_received} {l_received}">
<text x="0" y="12" class="axis">{max_count}</text><text x="0" y="{h}" class="axis">0</text>{bars}</svg>
<figcaption>{l_throughput} — <span class="key sent"></span> {l_sent} ({total_sent}) · <span class="key received"></span> {l_received} ({total_received})</figcaption></figure>
<figure><svg viewBox="0 0 {w} {h}" role="img" aria-label="{l_latency}">
<text x="0" y="12" class="axis">{max_latency} ms</text><text x="0" y="{h}" class="axis">0</text>
{p95}{p50}</svg>
<figcaption>{l_latency} — <span class="key p50"></span> p50 · <span class="key p95"></span> p95</figcaption></figure>
</div>
<details><summary>{l_data}</summary><div class="table-wrap"><table><thead><tr><th scope="col">{l_minute}</th><th scope="col">{l_sent}</th><th scope="col">{l_received}</th><th scope="col">p50 ms</th><th scope="col">p95 ms</th></tr></thead><tbody>{table}</tbody></table></div></details>"#,
        l_throughput = t.deliveries_per_minute,
        l_sent = t.sent_receipted,
        l_received = t.received,
        l_latency = t.latency,
        l_data = t.chart_data,
        l_minute = t.minute,
        p95 = line(|m| m.p95_ms, "p95"),
        p50 = line(|m| m.p50_ms, "p50"),
    )
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
            esc(&ascii)
        );
    }
    let mut body = String::new();
    if let Some((ok, text)) = note {
        let _ = write!(
            body,
            r#"<p class="notice {}" role="{}">{}</p>"#,
            if ok { "ok" } else { "bad" },
            if ok { "status" } else { "alert" },
            esc(&text)
        );
    }
    let _ = write!(
        body,
        r#"<dl class="summary card">
<dt>{l_state}</dt><dd>{state}</dd>
<dt>{l_reason}</dt><dd><strong>{code}</strong>: {reason}</dd>
<dt>{l_when}</dt><dd>{at}</dd>
<dt>{l_sender}</dt><dd>{sender}</dd>
<dt>{l_message}</dt><dd><code>{message}</code></dd>
<dt>{l_key}</dt><dd><code>{key}</code></dd>
<dt>{l_source}</dt><dd>{topic}[{partition}]@{source_offset}</dd>
<dt>DLQ</dt><dd>{dlq_topic}[{dlq_partition}]@{dlq_offset}</dd>
<dt>{l_envelope}</dt><dd>{summary}</dd>
<dt>{l_size}</dt><dd>{size}</dd>
{closed}
</dl>
<details><summary>{l_bytes}</summary><pre class="dump">{dump}</pre></details>"#,
        l_state = t.state,
        state = dead_letter_state(ctx, entry.state),
        l_reason = t.reason,
        code = esc(&entry.reason_code),
        reason = esc(&entry.reason),
        l_when = t.when,
        at = when(entry.dead_at_ms, offset),
        l_sender = t.claimed_sender,
        sender = page::or_dash(&entry.claimed_sender),
        l_message = t.message_id,
        message = page::or_dash(&entry.message_id),
        l_key = t.record_key,
        key = esc(&entry.record_key),
        l_source = t.source,
        topic = esc(&entry.source_topic),
        partition = entry.source_partition,
        source_offset = entry.source_offset,
        dlq_topic = esc(&entry.dlq_topic),
        dlq_partition = entry.dlq_partition,
        dlq_offset = entry.dlq_offset,
        l_envelope = t.envelope,
        summary = esc(&detail.envelope_summary),
        l_size = t.size,
        size = page::size(detail.original_value.len() as u64),
        closed = if entry.discarded_at_ms > 0 {
            format!(
                "<dt>{}</dt><dd>{} · {} · {}</dd>",
                t.dlq_discarded,
                when(entry.discarded_at_ms, offset),
                esc(&entry.discarded_by),
                esc(&entry.discard_reason)
            )
        } else if entry.replayed_at_ms > 0 {
            format!(
                "<dt>{}</dt><dd>{}</dd>",
                t.dlq_replayed,
                when(entry.replayed_at_ms, offset)
            )
        } else {
            String::new()
        },
        l_bytes = t.original_bytes,
    );
    if entry.state == DeadLetterState::Open as i32 {
        let _ = write!(
            body,
            r#"<div class="actions-grid"><form method="post" action="/operacion/dlq/{id}/reenviar" class="card action" novalidate><h2>{l_replay}</h2><p class="help">{l_replay_help}</p>{csrf}<button type="submit">{l_replay}</button></form>
<form method="post" action="/operacion/dlq/{id}/descartar" class="card action" novalidate><h2>{l_discard}</h2>{csrf}{reason}<button type="submit" class="danger">{l_discard}</button></form></div>"#,
            l_replay = t.replay,
            l_replay_help = t.replay_help,
            csrf = page::csrf(ctx),
            l_discard = t.discard,
            reason = page::textarea(
                "descartar/reason",
                t.discard_reason,
                "",
                reason_error,
                "required"
            ),
        );
    }
    let _ = write!(
        body,
        r#"<p><a href="/operacion">{}</a></p>"#,
        t.back_to_operations
    );
    page::render(ctx, status, &format!("{} #{id}", t.dead_letter), &body)
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
    match crate::consume::dead_letters::replay(&web.services.consumers, id).await {
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
    let reason = form.value("reason").to_owned();
    let by = session.name.clone();
    match web
        .desk
        .store
        .run(move |s| s.discard_dead_letter(id, &by, &reason))
        .await
    {
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
