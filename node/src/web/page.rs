//! The page frame and the small pieces every page is built from. Every value
//! that is not the console's own text goes through [`esc`].

use super::Ctx;
use super::forms::url_encode;
use super::text::Lang;
use crate::grpc::auth::Role;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use ecointegra_broker::directory::Directory;
use ecointegra_proto::v1::{FilingStatus, TimelineEntry, TransferKind};
use std::fmt::Write as _;

/// Escapes text for HTML content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `title` and `body` (already HTML) in the console's frame.
pub fn render(ctx: &Ctx, status: StatusCode, title: &str, body: &str) -> Response {
    let t = ctx.t();
    let mut nav = String::new();
    let _ = write!(nav, r#"<a href="/">{}</a>"#, t.nav_tracking);
    match &ctx.session {
        Some(s) => {
            if s.role == Role::Clerk {
                let _ = write!(
                    nav,
                    r#"<a href="/mesa">{}</a><a href="/mesa/nuevo">{}</a>"#,
                    t.nav_inbox, t.nav_new
                );
            }
            if s.role == Role::Operator {
                let _ = write!(nav, r#"<a href="/operacion">{}</a>"#, t.nav_operations);
            }
            let _ = write!(
                nav,
                r#"<form method="post" action="/salir" class="inline"><input type="hidden" name="csrf" value="{}"><button type="submit" class="link">{} ({})</button></form>"#,
                esc(&s.csrf),
                t.sign_out,
                esc(&s.name)
            );
        }
        None => {
            let _ = write!(nav, r#"<a href="/entrar">{}</a>"#, t.sign_in);
        }
    }
    let other = match ctx.lang {
        Lang::Es => Lang::En,
        Lang::En => Lang::Es,
    };
    let _ = write!(
        nav,
        r#"<a href="/idioma?lang={}&amp;volver={}" lang="{}" hreflang="{}">{}</a>"#,
        other.code(),
        esc(&url_encode(&ctx.here)),
        other.code(),
        other.code(),
        other.texts().language_name
    );
    let html = format!(
        r##"<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · {site}</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head>
<body>
<a class="skip" href="#contenido">{skip}</a>
<header class="top">
<p class="brand"><span class="logo" aria-hidden="true">◆</span> {site} <span class="where">{institution}</span></p>
<nav aria-label="{nav_label}">{nav}</nav>
</header>
<main id="contenido" tabindex="-1">
<h1>{title}</h1>
{body}
</main>
<footer><p>{footer}</p></footer>
</body>
</html>"##,
        lang = ctx.lang.code(),
        title = esc(title),
        site = t.site_name,
        skip = t.skip_to_content,
        institution = esc(&ctx.institution),
        nav_label = t.nav_label,
        footer = t.footer,
    );
    (status, Html(html)).into_response()
}

/// A page with a title and one paragraph of text.
pub fn message(ctx: &Ctx, status: StatusCode, title: &str, text: &str) -> Response {
    render(
        ctx,
        status,
        title,
        &format!(r#"<p class="notice" role="alert">{}</p>"#, esc(text)),
    )
}

/// The sign-in page, with an error when the last attempt failed.
pub fn sign_in(ctx: &Ctx, back: Option<&str>, error: Option<&str>, status: StatusCode) -> Response {
    let t = ctx.t();
    let back = back.map_or(String::new(), |b| {
        format!(r#"<input type="hidden" name="volver" value="{}">"#, esc(b))
    });
    let body = format!(
        r#"<p>{intro}</p>
<form method="post" action="/entrar" class="card narrow">
{back}
{field}
<button type="submit">{button}</button>
</form>"#,
        intro = t.sign_in_intro,
        field = input(
            "token",
            t.token_label,
            "",
            error,
            r#"type="password" autocomplete="current-password" required"#,
            Some(t.token_help),
        ),
        button = t.sign_in,
    );
    render(ctx, status, t.sign_in_title, &body)
}

/// A labelled input with its help text and its error, tied by
/// `aria-describedby` so a screen reader reads them with the field.
pub fn input(
    name: &str,
    label: &str,
    value: &str,
    error: Option<&str>,
    attributes: &str,
    help: Option<&str>,
) -> String {
    let id = field_id(name);
    let (described, notes) = notes(&id, error, help);
    let (invalid, aria_invalid) = validity(error);
    format!(
        r#"<div class="field{invalid}"><label for="{id}">{label}</label>{notes}<input id="{id}" name="{name}" value="{value}" {attributes}{described}{aria_invalid}></div>"#,
        name = esc(field_name(name)),
        value = esc(value),
    )
}

/// The class suffix and attribute of a field with or without an error.
fn validity(error: Option<&str>) -> (&'static str, &'static str) {
    if error.is_some() {
        (" invalid", r#" aria-invalid="true""#)
    } else {
        ("", "")
    }
}

/// Table rows of documents: name, size, SHA-256.
pub fn document_rows<'a>(documents: impl Iterator<Item = (&'a str, u64, &'a [u8])>) -> String {
    let mut rows = String::new();
    for (name, bytes, sha256) in documents {
        let _ = write!(
            rows,
            r#"<tr><td>{}</td><td>{}</td><td><code class="digest">{}</code></td></tr>"#,
            esc(name),
            size(bytes),
            hex::encode(sha256)
        );
    }
    rows
}

/// A labelled multi-line text field.
pub fn textarea(
    name: &str,
    label: &str,
    value: &str,
    error: Option<&str>,
    attributes: &str,
) -> String {
    let id = field_id(name);
    let (described, notes) = notes(&id, error, None);
    let (invalid, aria_invalid) = validity(error);
    format!(
        r#"<div class="field{invalid}"><label for="{id}">{label}</label>{notes}<textarea id="{id}" name="{name}" rows="3" {attributes}{described}{aria_invalid}>{value}</textarea></div>"#,
        name = esc(field_name(name)),
        value = esc(value),
    )
}

/// A labelled choice among `options` (value, text); `selected` is chosen.
pub fn select(
    name: &str,
    label: &str,
    options: &[(String, String)],
    selected: &str,
    error: Option<&str>,
) -> String {
    let id = field_id(name);
    let (described, notes) = notes(&id, error, None);
    let mut choices = String::new();
    for (value, text) in options {
        let _ = write!(
            choices,
            r#"<option value="{}"{}>{}</option>"#,
            esc(value),
            if value == selected { " selected" } else { "" },
            esc(text)
        );
    }
    format!(
        r#"<div class="field{invalid}"><label for="{id}">{label}</label>{notes}<select id="{id}" name="{name}"{described}>{choices}</select></div>"#,
        invalid = if error.is_some() { " invalid" } else { "" },
        name = esc(field_name(name)),
    )
}

/// A field's element id. `name` may be `form/field` when one page has several
/// forms with a field of the same name: the id is then unique to the form,
/// and the submitted name is `field`.
pub fn field_id(name: &str) -> String {
    format!(
        "f-{}",
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
    )
}

/// The name a field is submitted under (see [`field_id`]).
fn field_name(name: &str) -> &str {
    name.rsplit_once('/').map_or(name, |(_, field)| field)
}

fn notes(id: &str, error: Option<&str>, help: Option<&str>) -> (String, String) {
    let mut ids = Vec::new();
    let mut html = String::new();
    if let Some(help) = help {
        ids.push(format!("{id}-ayuda"));
        let _ = write!(
            html,
            r#"<span class="help" id="{id}-ayuda">{}</span>"#,
            esc(help)
        );
    }
    if let Some(error) = error {
        ids.push(format!("{id}-error"));
        let _ = write!(
            html,
            r#"<span class="error" id="{id}-error">{}</span>"#,
            esc(error)
        );
    }
    let described = if ids.is_empty() {
        String::new()
    } else {
        format!(r#" aria-describedby="{}""#, ids.join(" "))
    };
    (described, html)
}

/// A form's CSRF field.
pub fn csrf(ctx: &Ctx) -> String {
    ctx.session.as_ref().map_or(String::new(), |s| {
        format!(
            r#"<input type="hidden" name="csrf" value="{}">"#,
            esc(&s.csrf)
        )
    })
}

/// A time as people read it at the institution: `28/11/2026 14:03`.
pub fn when(ms: i64, utc_offset_minutes: i32) -> String {
    if ms <= 0 {
        return "—".into();
    }
    let local = ms + i64::from(utc_offset_minutes) * 60_000;
    let (y, m, d) = crate::ids::civil_from_days(local.div_euclid(86_400_000));
    let minutes = local.div_euclid(60_000).rem_euclid(1440);
    format!(
        "{d:02}/{m:02}/{y:04} {:02}:{:02}",
        minutes / 60,
        minutes % 60
    )
}

/// A status as a labelled badge.
pub fn status(ctx: &Ctx, status: FilingStatus) -> String {
    format!(
        r#"<span class="badge s-{}">{}</span>"#,
        crate::lifecycle::workflow::status_name(status).to_lowercase(),
        ctx.lang.status(status)
    )
}

/// A filing's timeline: when, where, what, and the other institution of each
/// step (where it went, or, for a delivery, where it came from).
pub fn timeline(
    ctx: &Ctx,
    directory: &Directory,
    utc_offset_minutes: i32,
    entries: &[TimelineEntry],
) -> String {
    let t = ctx.t();
    let mut out = String::from(r#"<ol class="timeline">"#);
    for entry in entries {
        let step = FilingStatus::try_from(entry.status).unwrap_or_default();
        let mut detail = String::new();
        if !entry.counterpart.is_empty() {
            let word = if step == FilingStatus::Delivered {
                t.coming_from
            } else {
                t.towards
            };
            let other = institution(directory, &entry.counterpart);
            let _ = write!(detail, " {word} {}", esc(&other));
        }
        if entry.transfer_kind == TransferKind::Correction as i32 {
            let _ = write!(detail, " ({})", t.correction);
        }
        let _ = write!(
            out,
            r#"<li><time>{}</time> <strong>{}</strong> {}{detail}</li>"#,
            when(entry.timestamp_ms, utc_offset_minutes),
            esc(&institution(directory, &entry.institution)),
            status(ctx, step),
        );
    }
    out.push_str("</ol>");
    out
}

/// An institution's name as the directory gives it, its id otherwise.
pub fn institution(directory: &Directory, id: &str) -> String {
    match directory.get(id) {
        Some(i) if !i.name.is_empty() => i.name.clone(),
        _ => id.to_uppercase(),
    }
}

/// Escaped text, or a dash when there is none.
pub fn or_dash(text: &str) -> String {
    if text.trim().is_empty() {
        "—".into()
    } else {
        esc(text)
    }
}

/// A byte count for people: `1,2 MB`.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{:.1} MB", b as f64 / (1024.0 * 1024.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn local_time() {
        // 2026-12-31T23:59:00Z is 18:59 in Lima (UTC-5).
        assert_eq!(when(1_798_761_540_000, -300), "31/12/2026 18:59");
        assert_eq!(when(0, -300), "—");
    }
}
