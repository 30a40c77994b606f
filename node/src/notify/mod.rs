//! Sends the notification outbox ([`crate::store::notifications`]): mail to
//! citizens over SMTP (lettre: STARTTLS, implicit TLS, or plain to a relay on
//! loopback) and JSON calls to the institution's webhooks (hyper's HTTP/1.1
//! client, signed with HMAC-SHA256 as Standard Webhooks do). Each is retried
//! with backoff until it goes: a mail server or an endpoint that is down
//! delays notifications, never loses them. A notification is marked sent once
//! the server accepted it; a crash in between sends it again, with the same
//! Message-ID / `webhook-id`, so receivers can tell.

use crate::config::{Config, SmtpConfig, WebhookConfig};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::notifications::{Pending, Rules, Told};
use crate::trust::Trust;
use base64::Engine;
use ecointegra_proto::v1::FilingStatus;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the outbox is looked at.
const POLL: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
const MAX_BACKOFF_MS: i64 = 10 * 60 * 1000;
const TIMEOUT: Duration = Duration::from_secs(20);

/// Who is told of what, from the configuration.
pub fn rules(config: &Config) -> Rules {
    Rules {
        mail: config.notify.smtp.is_some(),
        webhooks: config
            .notify
            .webhooks
            .iter()
            .map(|h| {
                let statuses = h
                    .events
                    .iter()
                    .filter_map(|e| FilingStatus::from_short_name(e))
                    .collect();
                (h.url.clone(), statuses)
            })
            .collect(),
        sgd: config.pide.as_ref().and_then(|p| p.sgd_url.clone()),
    }
}

/// Sends notifications.
pub struct Notifier {
    store: Store,
    trust: Arc<Trust>,
    mail: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    /// Webhook URL to its signing key.
    hooks: HashMap<String, Vec<u8>>,
    /// The console's address, for the links in mail.
    portal: String,
    /// The institution's SGD, over PIDE.
    sgd: Option<crate::pide::sgd::Sgd>,
}

impl Notifier {
    /// `None` when nothing is to be sent.
    pub fn new(
        config: &Config,
        store: Store,
        blobs: crate::store::blobs::Blobs,
        trust: Arc<Trust>,
    ) -> Result<Option<Self>> {
        let sgd = crate::pide::sgd::Sgd::new(config, store.clone(), blobs, trust.clone())?;
        if config.notify.smtp.is_none() && config.notify.webhooks.is_empty() && sgd.is_none() {
            return Ok(None);
        }
        let mail = config.notify.smtp.as_ref().map(mailer).transpose()?;
        let mut hooks = HashMap::new();
        for hook in &config.notify.webhooks {
            hooks.insert(hook.url.clone(), secret(hook)?);
        }
        let portal = match (&config.web.public_url, config.web.listen) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(addr)) => format!("http://{addr}"),
            (None, None) => String::new(),
        };
        Ok(Some(Self {
            store,
            trust,
            mail,
            hooks,
            portal,
            sgd,
        }))
    }

    async fn send(&self, pending: &Pending) -> std::result::Result<(), String> {
        match pending.channel.as_str() {
            "mail" => self.mail(pending).await,
            "webhook" => self.call(pending).await,
            "sgd" => match &self.sgd {
                Some(sgd) => sgd.send(&pending.told).await,
                None => Err("[pide] sgd_url is not configured".into()),
            },
            other => Err(format!("unknown channel {other}")),
        }
    }

    async fn mail(&self, pending: &Pending) -> std::result::Result<(), String> {
        let Some((transport, from)) = &self.mail else {
            return Err("[notify.smtp] is not configured".into());
        };
        let to: Mailbox = pending
            .target
            .parse()
            .map_err(|e| format!("{:?} is not a mail address: {e}", pending.target))?;
        let text = MailText::of(&pending.told, &self.trust, &self.portal);
        let id = hex::encode(
            &Sha256::digest(format!("{}\0{}", pending.told.event_id, pending.target))[..16],
        );
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(format!(
                "[{}] {}",
                pending.told.tracking_code, text.headline
            ))
            .message_id(Some(format!("<{id}@ecointegra>")))
            .multipart(MultiPart::alternative_plain_html(text.plain(), text.html()))
            .map_err(|e| format!("cannot build the mail: {e}"))?;
        transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| format!("the mail server did not take it: {e}"))
    }

    async fn call(&self, pending: &Pending) -> std::result::Result<(), String> {
        let key = self
            .hooks
            .get(&pending.target)
            .ok_or_else(|| format!("{} is no longer a configured webhook", pending.target))?;
        let told = &pending.told;
        let body = serde_json::to_vec(&serde_json::json!({
            "type": format!("filing.{}", told.status.to_lowercase()),
            "timestamp": crate::ids::format_utc(told.at_ms),
            "data": {
                "tracking_code": told.tracking_code,
                "status": told.status,
                "institution": told.institution,
                "hop": told.hop,
                "holder": told.holder,
                "at_ms": told.at_ms,
            }
        }))
        .expect("JSON serialises");
        let timestamp = (ecointegra_broker::now_ms() / 1000).to_string();
        let signature = sign(key, &told.event_id, &timestamp, &body);
        tokio::time::timeout(
            TIMEOUT,
            post(
                &pending.target,
                &body,
                &[
                    ("webhook-id", told.event_id.as_str()),
                    ("webhook-timestamp", timestamp.as_str()),
                    ("webhook-signature", signature.as_str()),
                ],
            ),
        )
        .await
        .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
    }
}

/// The Standard Webhooks signature: `v1,` and the base64 HMAC-SHA256 of
/// `id.timestamp.body`.
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let tag = ring::hmac::sign(&key, &signed);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

/// Sends due notifications until cancelled.
pub async fn run(notifier: Notifier, cancel: CancellationToken) {
    loop {
        let now = ecointegra_broker::now_ms();
        let due = notifier
            .store
            .run(move |s| s.due_notifications(now, 32))
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "Cannot read the notification outbox.");
                Vec::new()
            });
        for pending in due {
            let outcome = notifier.send(&pending).await.map_err(|why| {
                let wait = (1000i64 << pending.attempts.min(20)).min(MAX_BACKOFF_MS);
                tracing::info!(
                    channel = %pending.channel,
                    tracking_code = %pending.told.tracking_code,
                    attempts = pending.attempts + 1,
                    retry_in_ms = wait,
                    reason = %why,
                    "A notification did not go; it is tried again later."
                );
                (why, ecointegra_broker::now_ms() + wait)
            });
            let id = pending.id;
            if let Err(error) = notifier
                .store
                .run(move |s| s.notification_sent(id, outcome))
                .await
            {
                tracing::warn!(%error, "Cannot record a notification.");
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

fn mailer(smtp: &SmtpConfig) -> Result<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)> {
    let bad =
        |field: &str, why: String| Error::FailedPrecondition(format!("notify.smtp.{field}: {why}"));
    let builder = match smtp.security.as_str() {
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host),
        "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host),
        _ => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &smtp.host,
        )),
    }
    .map_err(|e| bad("host", e.to_string()))?;
    let mut builder = builder.port(smtp.port).timeout(Some(TIMEOUT));
    if let Some(user) = &smtp.username {
        let password = match &smtp.password_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| bad("password_file", format!("{}: {e}", path.display())))?
                .trim()
                .to_owned(),
            None => String::new(),
        };
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    let from = smtp
        .from
        .parse()
        .map_err(|e| bad("from", format!("{:?}: {e}", smtp.from)))?;
    Ok((builder.build(), from))
}

/// A webhook's signing key: `whsec_` and base64 as Standard Webhooks write
/// it, or the file's bytes.
fn secret(hook: &WebhookConfig) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(&hook.secret_file).map_err(|e| {
        Error::FailedPrecondition(format!(
            "notify.webhooks secret_file {}: {e}",
            hook.secret_file.display()
        ))
    })?;
    let text = text.trim();
    Ok(match text.strip_prefix("whsec_") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| {
                Error::FailedPrecondition(format!(
                    "notify.webhooks secret_file {}: not base64 after whsec_: {e}",
                    hook.secret_file.display()
                ))
            })?,
        None => text.as_bytes().to_vec(),
    })
}

/// POSTs a JSON body; Ok on a 2xx answer.
async fn post(url: &str, body: &[u8], headers: &[(&str, &str)]) -> std::result::Result<(), String> {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let response = crate::outcall::send(
        http::Method::POST,
        url,
        &all,
        crate::outcall::full(body.to_vec()),
    )
    .await?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {}", response.status()))
    }
}

/// A notification's words, in Spanish.
struct MailText {
    headline: String,
    lines: Vec<String>,
    links: Vec<(String, String)>,
}

impl MailText {
    fn of(told: &Told, trust: &Trust, portal: &str) -> Self {
        let directory = trust.directory();
        let name = |id: &str| directory.display_name(id);
        let (at, by, holder) = (
            crate::ids::format_utc(told.at_ms),
            name(&told.institution),
            name(&told.holder),
        );
        let headline = match told.status.as_str() {
            "DELIVERED" => format!("Su trámite fue entregado a {by}"),
            "FORWARDED" => format!("{by} derivó su trámite a {holder}"),
            "OBSERVED" => format!("{by} observó su trámite"),
            "REJECTED" => format!("{by} rechazó su trámite"),
            "ANSWERED" => format!("{by} respondió su trámite"),
            "ARCHIVED" => format!("{by} archivó su trámite"),
            other => format!("Su trámite cambió de estado: {other}"),
        };
        let mut lines = vec![
            format!("Código de seguimiento: {}", told.tracking_code),
            format!("Fecha: {at} (UTC)"),
        ];
        match told.status.as_str() {
            "OBSERVED" => lines.push(format!("Qué corregir: {}", told.reason)),
            "REJECTED" => lines.push(format!("Motivo: {}", told.reason)),
            _ => {}
        }
        let mut links = Vec::new();
        if !portal.is_empty() {
            let code = crate::ids::url_encode(&told.tracking_code);
            let follow = if told.status == "ANSWERED" {
                "Vea la respuesta (con la clave de verificación de su cargo)"
            } else {
                "Siga su trámite (con la clave de verificación de su cargo)"
            };
            links.push((
                follow.to_owned(),
                format!("{portal}/seguimiento?codigo={code}"),
            ));
            links.push((
                "No recibir más correos de este trámite".to_owned(),
                format!(
                    "{portal}/baja?codigo={code}&clave={}",
                    crate::ids::url_encode(&told.unsubscribe)
                ),
            ));
        }
        Self {
            headline,
            lines,
            links,
        }
    }

    fn plain(&self) -> String {
        let mut text = format!("{}.\n\n", self.headline);
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        for (label, url) in &self.links {
            text.push_str(&format!("\n{label}:\n{url}\n"));
        }
        text.push_str("\nEste mensaje lo envía el sistema de trámites del sector ambiental; no lo responda.\n");
        text
    }

    fn html(&self) -> String {
        maud::html! {
            p { strong { (self.headline) "." } }
            @for line in &self.lines { p { (line) } }
            @for (label, url) in &self.links { p { a href=(url) { (label) } } }
            p { small { "Este mensaje lo envía el sistema de trámites del sector ambiental; no lo responda." } }
        }
        .into_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecointegra_broker::directory::{Directory, entry_for};
    use ecointegra_broker::envelope::Sealer;
    use ecointegra_broker::keys::SigningIdentity;

    fn told(status: &str, reason: &str) -> Told {
        Told {
            event_id: format!("oefa/{status}"),
            tracking_code: "SENAMHI-2026-000001".into(),
            status: status.into(),
            institution: "oefa".into(),
            hop: 1,
            holder: "minam".into(),
            at_ms: 1_780_000_000_000,
            reason: reason.into(),
            unsubscribe: "CLAVE&X".into(),
            transfer_id: String::new(),
        }
    }

    #[test]
    fn each_step_reads_as_the_citizen_expects_and_html_is_escaped() {
        let identity = SigningIdentity::generate();
        let mut directory = Directory::default();
        directory
            .insert(&entry_for("oefa", "OEFA", &identity, 1))
            .unwrap();
        directory
            .insert(&entry_for(
                "minam",
                "MINAM",
                &SigningIdentity::generate(),
                1,
            ))
            .unwrap();
        let trust = Trust::new(
            Sealer::new("senamhi", identity.clone()),
            identity.public_key(),
            vec![identity],
            directory,
        );
        let portal = "https://tramites.senamhi.gob.pe";
        for (status, headline, line) in [
            ("DELIVERED", "Su trámite fue entregado a OEFA", ""),
            ("FORWARDED", "OEFA derivó su trámite a MINAM", ""),
            (
                "OBSERVED",
                "OEFA observó su trámite",
                "Qué corregir: <b>Falta</b> la firma",
            ),
            (
                "REJECTED",
                "OEFA rechazó su trámite",
                "Motivo: <b>Falta</b> la firma",
            ),
            ("ANSWERED", "OEFA respondió su trámite", "Vea la respuesta"),
            ("ARCHIVED", "OEFA archivó su trámite", ""),
        ] {
            let text = MailText::of(&told(status, "<b>Falta</b> la firma"), &trust, portal);
            assert_eq!(text.headline, headline);
            let plain = text.plain();
            assert!(plain.contains(line), "{status}: {plain}");
            assert!(plain.contains("Código de seguimiento: SENAMHI-2026-000001"));
            assert!(
                plain.contains(&format!(
                    "{portal}/baja?codigo=SENAMHI-2026-000001&clave=CLAVE%26X"
                )),
                "{plain}"
            );
            let html = text.html();
            assert!(!html.contains("<b>Falta"), "{html}");
        }
        // Without the console's address, no links.
        assert!(
            MailText::of(&told("DELIVERED", ""), &trust, "")
                .links
                .is_empty()
        );
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
