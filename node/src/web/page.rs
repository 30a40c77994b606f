//! The page frame and the small pieces every page is built from, as maud
//! templates: every value spliced into a page is escaped unless it is
//! another piece of markup.

use super::Ctx;
use super::forms::url_encode;
use super::text::Lang;
use crate::grpc::auth::Role;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use ecointegra_broker::directory::Directory;
use ecointegra_proto::v1::{FilingStatus, TimelineEntry, TransferKind};
use maud::{DOCTYPE, Markup, html};

/// A whole page: `title` and `body` in the console's frame.
pub fn render(ctx: &Ctx, status: StatusCode, title: &str, body: Markup) -> Response {
    let t = ctx.t();
    let other = match ctx.lang {
        Lang::Es => Lang::En,
        Lang::En => Lang::Es,
    };
    let page = html! {
        (DOCTYPE)
        html lang=(ctx.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (t.site_name) }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                a.skip href="#contenido" { (t.skip_to_content) }
                header.top {
                    p.brand {
                        span.logo aria-hidden="true" { "◆" }
                        " " (t.site_name) " "
                        span.where { (ctx.institution) }
                    }
                    nav aria-label=(t.nav_label) {
                        a href="/" { (t.nav_tracking) }
                        @match &ctx.session {
                            Some(s) => {
                                @if s.role == Role::Clerk {
                                    a href="/mesa" { (t.nav_inbox) }
                                    a href="/mesa/nuevo" { (t.nav_new) }
                                }
                                @if s.role == Role::Operator {
                                    a href="/operacion" { (t.nav_operations) }
                                }
                                form.inline method="post" action="/salir" {
                                    input type="hidden" name="csrf" value=(s.csrf);
                                    button.link type="submit" { (t.sign_out) " (" (s.name) ")" }
                                }
                            }
                            None => { a href="/entrar" { (t.sign_in) } }
                        }
                        a href={ "/idioma?lang=" (other.code()) "&volver=" (url_encode(&ctx.here)) }
                            lang=(other.code()) hreflang=(other.code()) {
                            (other.texts().language_name)
                        }
                    }
                }
                main id="contenido" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
                footer { p { (t.footer) } }
            }
        }
    };
    (status, Html(page.into_string())).into_response()
}

/// A page with a title and one paragraph of text.
pub fn message(ctx: &Ctx, status: StatusCode, title: &str, text: &str) -> Response {
    render(
        ctx,
        status,
        title,
        html! { p.notice role="alert" { (text) } },
    )
}

/// The sign-in page, with an error when the last attempt failed.
pub fn sign_in(
    ctx: &Ctx,
    csrf: &str,
    back: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let t = ctx.t();
    let body = html! {
        p { (t.sign_in_intro) }
        form.card.narrow method="post" action="/entrar" {
            input type="hidden" name="csrf" value=(csrf);
            @if let Some(back) = back {
                input type="hidden" name="volver" value=(back);
            }
            (input(
                "token",
                t.token_label,
                "",
                error,
                Attrs::new().kind("password").autocomplete("current-password").required(),
                Some(t.token_help),
            ))
            button type="submit" { (t.sign_in) }
        }
    };
    render(ctx, status, t.sign_in_title, body)
}

/// The attributes a form field may have besides its id, name and value.
#[derive(Debug, Default, Clone, Copy)]
pub struct Attrs {
    kind: Option<&'static str>,
    required: bool,
    multiple: bool,
    autocomplete: Option<&'static str>,
    autocapitalize: Option<&'static str>,
    spellcheck: Option<&'static str>,
    inputmode: Option<&'static str>,
    accept: Option<&'static str>,
    min: Option<&'static str>,
    maxlength: Option<&'static str>,
}

impl Attrs {
    pub fn new() -> Self {
        Self::default()
    }

    /// The input's `type`.
    pub fn kind(self, kind: &'static str) -> Self {
        Self {
            kind: Some(kind),
            ..self
        }
    }

    pub fn required(self) -> Self {
        Self {
            required: true,
            ..self
        }
    }

    pub fn multiple(self) -> Self {
        Self {
            multiple: true,
            ..self
        }
    }

    pub fn autocomplete(self, value: &'static str) -> Self {
        Self {
            autocomplete: Some(value),
            ..self
        }
    }

    /// Codes typed in capitals, neither completed nor spell-checked.
    pub fn code(self) -> Self {
        Self {
            autocomplete: Some("off"),
            autocapitalize: Some("characters"),
            ..self
        }
    }

    pub fn no_spellcheck(self) -> Self {
        Self {
            spellcheck: Some("false"),
            ..self
        }
    }

    pub fn numeric(self) -> Self {
        Self {
            inputmode: Some("numeric"),
            ..self
        }
    }

    pub fn accept(self, types: &'static str) -> Self {
        Self {
            accept: Some(types),
            ..self
        }
    }

    pub fn min(self, min: &'static str) -> Self {
        Self {
            min: Some(min),
            ..self
        }
    }

    pub fn maxlength(self, max: &'static str) -> Self {
        Self {
            maxlength: Some(max),
            ..self
        }
    }
}

/// A labelled input with its help text and its error, tied by
/// `aria-describedby` so a screen reader reads them with the field.
pub fn input(
    name: &str,
    label: &str,
    value: &str,
    error: Option<&str>,
    a: Attrs,
    help: Option<&str>,
) -> Markup {
    let id = field_id(name);
    let described = described_by(&id, error, help);
    html! {
        div.field.invalid[error.is_some()] {
            label for=(id) { (label) }
            (notes(&id, error, help))
            input id=(id) name=(field_name(name)) value=(value)
                type=[a.kind] multiple[a.multiple] accept=[a.accept] min=[a.min]
                required[a.required] inputmode=[a.inputmode]
                autocomplete=[a.autocomplete] autocapitalize=[a.autocapitalize]
                spellcheck=[a.spellcheck]
                aria-describedby=[described] aria-invalid=[error.map(|_| "true")];
        }
    }
}

/// A labelled multi-line text field.
pub fn textarea(name: &str, label: &str, value: &str, error: Option<&str>, a: Attrs) -> Markup {
    let id = field_id(name);
    let described = described_by(&id, error, None);
    html! {
        div.field.invalid[error.is_some()] {
            label for=(id) { (label) }
            (notes(&id, error, None))
            textarea id=(id) name=(field_name(name)) rows="3"
                required[a.required] maxlength=[a.maxlength]
                aria-describedby=[described] aria-invalid=[error.map(|_| "true")] {
                (value)
            }
        }
    }
}

/// A labelled choice among `options` (value, text); `selected` is chosen.
pub fn select(
    name: &str,
    label: &str,
    options: &[(String, String)],
    selected: &str,
    error: Option<&str>,
) -> Markup {
    let id = field_id(name);
    let described = described_by(&id, error, None);
    html! {
        div.field.invalid[error.is_some()] {
            label for=(id) { (label) }
            (notes(&id, error, None))
            select id=(id) name=(field_name(name)) aria-describedby=[described] {
                @for (value, text) in options {
                    option value=(value) selected[value == selected] { (text) }
                }
            }
        }
    }
}

/// Table rows of documents: name, size, SHA-256.
pub fn document_rows<'a>(documents: impl Iterator<Item = (&'a str, u64, &'a [u8])>) -> Markup {
    html! {
        @for (name, bytes, sha256) in documents {
            tr {
                td { (name) }
                td { (size(bytes)) }
                td { code.digest { (hex::encode(sha256)) } }
            }
        }
    }
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

/// The ids of a field's help and error, for `aria-describedby`.
fn described_by(id: &str, error: Option<&str>, help: Option<&str>) -> Option<String> {
    let ids: Vec<String> = [help.map(|_| "ayuda"), error.map(|_| "error")]
        .into_iter()
        .flatten()
        .map(|note| format!("{id}-{note}"))
        .collect();
    (!ids.is_empty()).then(|| ids.join(" "))
}

/// A field's help and error, with the ids [`described_by`] names.
fn notes(id: &str, error: Option<&str>, help: Option<&str>) -> Markup {
    html! {
        @if let Some(help) = help {
            span.help id={ (id) "-ayuda" } { (help) }
        }
        @if let Some(error) = error {
            span.error id={ (id) "-error" } { (error) }
        }
    }
}

/// A form's CSRF field.
pub fn csrf(ctx: &Ctx) -> Markup {
    html! {
        @if let Some(s) = &ctx.session {
            input type="hidden" name="csrf" value=(s.csrf);
        }
    }
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
pub fn status(ctx: &Ctx, status: FilingStatus) -> Markup {
    let class = crate::lifecycle::workflow::status_name(status).to_lowercase();
    html! {
        span class={ "badge s-" (class) } { (ctx.lang.status(status)) }
    }
}

/// A filing's timeline: when, where, what, and the other institution of each
/// step (where it went, or, for a delivery, where it came from).
pub fn timeline(
    ctx: &Ctx,
    directory: &Directory,
    utc_offset_minutes: i32,
    entries: &[TimelineEntry],
) -> Markup {
    let t = ctx.t();
    html! {
        ol.timeline {
            @for entry in entries {
                @let step = FilingStatus::try_from(entry.status).unwrap_or_default();
                li {
                    time { (when(entry.timestamp_ms, utc_offset_minutes)) }
                    " "
                    strong { (institution(directory, &entry.institution)) }
                    " "
                    (status(ctx, step))
                    @if !entry.counterpart.is_empty() {
                        " "
                        (if step == FilingStatus::Delivered { t.coming_from } else { t.towards })
                        " "
                        (institution(directory, &entry.counterpart))
                    }
                    @if entry.transfer_kind == TransferKind::Correction as i32 {
                        " (" (t.correction) ")"
                    }
                    @if !entry.cuo.is_empty() {
                        " · CUO " code { (entry.cuo) }
                    }
                }
            }
        }
    }
}

/// An institution's name as the directory gives it, its id otherwise.
pub fn institution(directory: &Directory, id: &str) -> String {
    directory.display_name(id)
}

/// The text, or a dash when there is none.
pub fn or_dash(text: &str) -> &str {
    if text.trim().is_empty() { "—" } else { text }
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
    fn a_field_escapes_its_value_label_and_error() {
        let html = input(
            "header.subject",
            "<b>",
            r#""><script>alert('&')</script>"#,
            Some("<i>"),
            Attrs::new().required(),
            None,
        )
        .into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>") && !html.contains("<i>"), "{html}");
        assert!(
            html.contains(r#"value="&quot;&gt;&lt;script&gt;alert('&amp;')&lt;/script&gt;""#),
            "{html}"
        );
        assert!(html.contains(r#"aria-describedby="f-header-subject-error""#));
        assert!(html.contains(r#"aria-invalid="true""#));
    }

    #[test]
    fn local_time() {
        // 2026-12-31T23:59:00Z is 18:59 in Lima (UTC-5).
        assert_eq!(when(1_798_761_540_000, -300), "31/12/2026 18:59");
        assert_eq!(when(0, -300), "—");
    }
}
