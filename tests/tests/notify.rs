//! Notifications: the citizen is mailed each step of their filing once,
//! through a real SMTP server (Python's aiosmtpd, which tests/mail/setup.sh
//! installs) that is down at first; the institution's webhook is called once
//! per step, signed, after failing twice.

use ecointegra_proto::v1::{FilingStatus, ObserveFilingRequest};
use ecointegra_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OPERATOR: &str = "tok-notify-operator";
const SECRET: &[u8] = b"clave-de-prueba-de-webhooks-32b!";

/// The SMTP server, writing what it takes into a Maildir.
struct Smtpd(Child);

impl Smtpd {
    fn start(port: u16, maildir: &Path) -> Self {
        let python = std::env::var("ECOINTEGRA_SMTPD_PYTHON")
            .expect("ECOINTEGRA_SMTPD_PYTHON: tests/run.sh sets it (tests/mail/setup.sh)");
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .spawn()
            .unwrap();
        Smtpd(child)
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every mail in the Maildir, as a mail client reads it.
fn mails(maildir: &Path) -> Vec<serde_json::Value> {
    if !maildir.join("new").exists() {
        return Vec::new();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("mail/read_maildir.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(maildir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One call the webhook receiver got: its headers and body, and whether it
/// was accepted.
#[derive(Debug, Clone)]
struct Call {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    accepted: bool,
}

/// An HTTP endpoint that answers 500 to its first `failures` calls, then 204.
async fn receiver(failures: usize) -> (u16, Arc<Mutex<Vec<Call>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut data = Vec::new();
            let mut buffer = [0u8; 4096];
            let (head, body_start) = loop {
                let n = stream.read(&mut buffer).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), 0);
                }
                data.extend_from_slice(&buffer[..n]);
                if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (String::from_utf8_lossy(&data[..at]).into_owned(), at + 4);
                }
            };
            let headers: BTreeMap<String, String> = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
                .collect();
            let length: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while data.len() < body_start + length {
                let n = stream.read(&mut buffer).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buffer[..n]);
            }
            let accepted = {
                let mut calls = seen.lock().unwrap();
                let accepted = calls.len() >= failures;
                calls.push(Call {
                    headers,
                    body: data[body_start..].to_vec(),
                    accepted,
                });
                accepted
            };
            let answer: &[u8] = if accepted {
                b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            };
            let _ = stream.write_all(answer).await;
            let _ = stream.shutdown().await;
        }
    });
    (port, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citizens_are_mailed_each_step_once_and_webhooks_are_retried_until_taken() {
    let federation = Federation::new("notify", &["senamhi", "oefa"]);
    let root: PathBuf = federation.data_dir("senamhi").parent().unwrap().to_owned();
    let smtp_port = free_port();
    let (hook_port, calls) = receiver(2).await;
    use base64::Engine;
    std::fs::write(
        root.join("webhook.secret"),
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(SECRET)
        ),
    )
    .unwrap();
    federation.write_config(
        "senamhi",
        &bootstrap(),
        &format!(
            "\n[web]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://tramites.senamhi.gob.pe\"\n\n\
             [notify.smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"none\"\n\
             from = \"Mesa de partes SENAMHI <mesa@senamhi.gob.pe>\"\n\n\
             [auth]\nanonymous_role = \"system\"\n{}",
            token_entry("noc", "operator", OPERATOR)
        ),
    );
    federation.write_config(
        "oefa",
        &bootstrap(),
        &format!(
            "\n[[notify.webhooks]]\nurl = \"http://127.0.0.1:{hook_port}/ecointegra\"\n\
             events = [\"DELIVERED\", \"OBSERVED\"]\nsecret_file = \"webhook.secret\"\n"
        ),
    );
    let [mut senamhi, mut oefa] = federation.start_all().await;
    let store = federation.store_path("senamhi");
    let maildir = root.join("maildir");

    // Filed at senamhi with the citizen's address; delivered to oefa, which
    // observes it.
    let filed = deliver_sample(&mut senamhi.client, "oefa").await;
    let code = filed.tracking_code.clone();
    oefa.client
        .observe_filing(ObserveFilingRequest {
            tracking_code: code.clone(),
            action_id: "obs-notify".into(),
            reason: "Falta la firma del representante".into(),
        })
        .await
        .unwrap();
    wait_for_status(&mut senamhi.client, &code, FilingStatus::Observed, PATIENCE).await;

    // The mail server is down: both mails wait, and the operator sees why.
    let failing = "SELECT COUNT(*) FROM notifications WHERE channel = 'mail' \
                   AND sent_at_ms = 0 AND attempts > 0";
    rows_become("both mails to fail once", &store, failing, 2).await;
    let mail = notification_queue(senamhi.grpc_addr(), OPERATOR, "mail").await;
    assert_eq!(
        (mail.pending, mail.failing, mail.sent),
        (2, 2, 0),
        "{mail:?}"
    );
    assert!(mail.target.is_empty(), "no address in the queue report");
    assert!(mail.last_error.contains("mail server"), "{mail:?}");

    // It comes up: each step is mailed, once.
    let _smtpd = Smtpd::start(smtp_port, &maildir);
    let sent = "SELECT COUNT(*) FROM notifications WHERE channel = 'mail' AND sent_at_ms > 0";
    rows_become("both mails sent", &store, sent, 2).await;
    let mails = mails(&maildir);
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let ids: std::collections::BTreeSet<&str> = mails
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{mails:#?}");
    let by_subject = |words: &str| {
        mails
            .iter()
            .find(|m| m["subject"].as_str().unwrap().contains(words))
            .unwrap_or_else(|| panic!("no mail about {words:?}: {mails:#?}"))
    };
    let delivered = by_subject("fue entregado a");
    let observed = by_subject("observó su trámite");
    for mail in [delivered, observed] {
        assert_eq!(mail["to"], "maria.quispe@example.pe");
        assert!(
            mail["subject"]
                .as_str()
                .unwrap()
                .starts_with(&format!("[{code}] "))
        );
        assert_eq!(mail["content_type"], "multipart/alternative");
        assert!(mail["html"].as_str().unwrap().contains(&code));
        let plain = mail["plain"].as_str().unwrap();
        assert!(
            plain.contains(&format!("Código de seguimiento: {code}")),
            "{plain}"
        );
        assert!(
            plain.contains("https://tramites.senamhi.gob.pe/seguimiento?codigo="),
            "{plain}"
        );
        assert!(
            !plain.contains("45781236"),
            "no document number in mail: {plain}"
        );
    }
    let plain = observed["plain"].as_str().unwrap();
    assert!(
        plain.contains("Qué corregir: Falta la firma del representante"),
        "{plain}"
    );

    // The unsubscribe link stops mail about the filing: its correction is
    // delivered, and nobody is mailed of it.
    let link = plain
        .lines()
        .find(|l| l.contains("/baja?"))
        .unwrap()
        .trim()
        .replace("https://tramites.senamhi.gob.pe", "");
    let web = std::fs::read_to_string(federation.data_dir("senamhi").join("web.addr")).unwrap();
    let (status, page) = http_get(web.trim(), &link).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Ya no recibirá correos"), "{page}");
    let from_oefa = format!(
        "SELECT COUNT(*) FROM tracking_events WHERE tracking_code = '{code}' AND institution = 'oefa'"
    );
    let steps_before = count_rows(&store, &from_oefa);
    let mut correction = header("", "Consulta (subsanada)");
    correction.corrects_tracking_code = code.clone();
    submit(&mut senamhi.client, correction, &[sample_doc()])
        .await
        .unwrap();
    wait_for_filing(
        &mut senamhi.client,
        &code,
        "the correction delivered",
        |f| f.status == FilingStatus::Delivered as i32,
    )
    .await;
    // senamhi has oefa's DELIVERED step of the correction: it would have
    // queued its mail by now.
    eventually(
        "oefa's step of the correction at senamhi",
        async || match count_rows(&store, &from_oefa) {
            n if n > steps_before => Ok(()),
            n => Err(n),
        },
    )
    .await;
    let queued = "SELECT COUNT(*) FROM notifications WHERE channel = 'mail'";
    assert_eq!(count_rows(&store, queued), 2);

    // oefa's webhook: failed twice, then every DELIVERED and OBSERVED step
    // of what oefa holds taken once, each signed.
    let oefa_store = federation.store_path("oefa");
    let wanted = format!(
        "SELECT COUNT(*) FROM notifications WHERE channel = 'webhook' AND tracking_code = '{code}'"
    );
    let taken = format!("{wanted} AND sent_at_ms > 0");
    eventually("every webhook call taken", async || {
        let (queued, done) = (
            count_rows(&oefa_store, &wanted),
            count_rows(&oefa_store, &taken),
        );
        if queued >= 3 && done == queued {
            Ok(())
        } else {
            Err((queued, done))
        }
    })
    .await;
    let calls = calls.lock().unwrap().clone();
    let refused = calls.iter().filter(|c| !c.accepted).count();
    assert_eq!(refused, 2, "{calls:#?}");
    let accepted: Vec<&Call> = calls.iter().filter(|c| c.accepted).collect();
    let ids: std::collections::BTreeSet<&str> = accepted
        .iter()
        .map(|c| c.headers["webhook-id"].as_str())
        .collect();
    assert_eq!(
        ids.len(),
        accepted.len(),
        "each step taken once: {calls:#?}"
    );
    assert_eq!(accepted.len() as i64, count_rows(&oefa_store, &taken));
    let mut statuses = Vec::new();
    for call in &calls {
        let id = &call.headers["webhook-id"];
        let timestamp = &call.headers["webhook-timestamp"];
        let expected = ecointegra_node::notify::sign(SECRET, id, timestamp, &call.body);
        assert_eq!(call.headers["webhook-signature"], expected, "{call:#?}");
        let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body["data"]["tracking_code"], code.as_str());
        if call.accepted {
            statuses.push(body["data"]["status"].as_str().unwrap().to_owned());
        }
    }
    statuses.sort();
    assert_eq!(
        statuses,
        ["DELIVERED", "DELIVERED", "OBSERVED"],
        "{calls:#?}"
    );
}
