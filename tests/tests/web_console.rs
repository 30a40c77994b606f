//! The web console in a real browser (Debian's headless Chromium, driven by
//! playwright-core from tests/browser): a clerk files two PDFs at senamhi for
//! oefa, an oefa clerk receives and forwards them to minam, a citizen tracks
//! them at minam's portal; an operator replays a dead letter. The browser
//! script checks what the pages show; this test checks what the nodes stored.
//! Screenshots of every page go to tests/artifacts/web-console/.

use ecointegra_proto::v1::{Direction, FilingStatus, TransferKind};
use ecointegra_tests::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

const CLERK: &str = "tok-web-clerk";
const OPERATOR: &str = "tok-web-operator";
/// Small enough that a test document can be over it.
const MAX_DOCUMENT: usize = 1 << 20;

fn settings() -> String {
    format!(
        "\n[web]\nlisten = \"127.0.0.1:0\"\n\n[transfer]\nmax_document_size = {MAX_DOCUMENT}\n\n\
         [auth]\nanonymous_role = \"system\"\n{}{}",
        token_entry("mesa", "clerk", CLERK),
        token_entry("noc", "operator", OPERATOR)
    )
}

/// A valid one-page PDF carrying `text`, padded with `padding` bytes of
/// pseudo-random binary data in a stream (as scanned pages are).
fn pdf(text: &str, padding: usize, seed: u64) -> Vec<u8> {
    let content = format!("BT /F1 16 Tf 72 760 Td ({text}) Tj ET");
    let mut state = seed | 1;
    let noise: Vec<u8> = (0..padding)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    out.extend_from_slice(b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n");
    out.extend_from_slice(b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n");
    out.extend_from_slice(b"3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >> endobj\n");
    out.extend_from_slice(
        format!(
            "4 0 obj << /Length {} >> stream\n{content}\nendstream endobj\n",
            content.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(
        b"5 0 obj << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> endobj\n",
    );
    out.extend_from_slice(format!("6 0 obj << /Length {} >> stream\n", noise.len()).as_bytes());
    out.extend_from_slice(&noise);
    out.extend_from_slice(b"\nendstream endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n");
    out
}

fn web_addr(federation: &Federation, id: &str) -> String {
    let text = std::fs::read_to_string(federation.data_dir(id).join("web.addr"))
        .expect("the node wrote web.addr");
    format!("http://{}", text.trim())
}

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/web-console")
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Runs one phase of tests/browser/console.test.mjs; returns its JSON line.
fn run_browser(phase: &str, vars: &[(&str, String)]) -> serde_json::Value {
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in tests/browser (tests/run.sh does)"
    );
    let artifacts = artifacts();
    let output = Command::new("node")
        .arg(browser_dir().join("console.test.mjs"))
        .arg(phase)
        .env("ECO_ARTIFACTS", &artifacts)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser phase {phase} failed ({}); screenshots in {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status,
        artifacts.display()
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{phase} printed {line:?}: {e}"))
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clerks_forward_a_filing_citizen_tracks_it_and_operator_replays_a_dead_letter_in_a_browser()
{
    let federation = Federation::with_settings("web", &["senamhi", "oefa", "minam"], &settings());
    let _nodes: [Running; 3] = federation.start_all().await;

    let pdfs = [
        (
            "solicitud.pdf",
            pdf("Solicitud de informacion ambiental", 300_000, 7),
        ),
        ("anexo-1.pdf", pdf("Anexo 1: coordenadas", 40_000, 11)),
    ];
    let too_big = pdf("Anexo escaneado", MAX_DOCUMENT + 100_000, 13);
    let _ = std::fs::remove_dir_all(artifacts());
    let dir = federation.root.join("uploads");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in &pdfs {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::write(dir.join("anexo-escaneado.pdf"), &too_big).unwrap();
    let answer = pdf("Informe de respuesta", 120_000, 17);
    std::fs::write(dir.join("informe-respuesta.pdf"), &answer).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();

    let desk = run_browser(
        "desk",
        &[
            ("ECO_WEB_SENAMHI", web_addr(&federation, "senamhi")),
            ("ECO_WEB_OEFA", web_addr(&federation, "oefa")),
            ("ECO_WEB_MINAM", web_addr(&federation, "minam")),
            ("ECO_CLERK_TOKEN", CLERK.into()),
            ("ECO_PDF_1", path("solicitud.pdf")),
            ("ECO_PDF_2", path("anexo-1.pdf")),
            ("ECO_PDF_TOO_BIG", path("anexo-escaneado.pdf")),
            ("ECO_PDF_ANSWER", path("informe-respuesta.pdf")),
        ],
    );
    let code = desk["tracking_code"].as_str().unwrap().to_owned();

    // The two refused submissions left nothing: one filing sent, one set of
    // documents, no upload files.
    let senamhi_store = federation.store_path("senamhi");
    let sent = format!(
        "SELECT COUNT(*) FROM filings WHERE direction = {}",
        Direction::Outbound as i32
    );
    assert_eq!(count_rows(&senamhi_store, &sent), 1);
    assert_eq!(
        count_rows(
            &senamhi_store,
            &format!(
                "SELECT COUNT(*) FROM documents d JOIN filings f ON f.id = d.filing_id WHERE f.direction = {}",
                Direction::Outbound as i32
            )
        ),
        2
    );
    assert_eq!(
        files_in(&federation.data_dir("senamhi").join("tmp")),
        0,
        "no half-stored upload"
    );
    // minam holds exactly one copy, byte for byte what the clerk uploaded: the
    // stored digests, and the files themselves.
    assert_eq!(inbound_count(&federation, "minam"), 1);
    let stored: Vec<(String, Vec<u8>, i64)> = {
        let conn = rusqlite::Connection::open(federation.store_path("minam")).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT d.name, d.sha256, d.size FROM documents d JOIN filings f ON f.id = d.filing_id \
                 WHERE f.direction = ?1 AND f.tracking_code = ?2 ORDER BY d.idx",
            )
            .unwrap();
        stmt.query_map(rusqlite::params![Direction::Inbound as i32, code], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    assert_eq!(stored.len(), 2);
    for ((name, bytes), (stored_name, digest, size)) in pdfs.iter().zip(&stored) {
        let hex_digest = hex::encode(digest);
        assert_eq!(stored_name, name);
        assert_eq!(
            hex_digest,
            hex::encode(Sha256::digest(bytes)),
            "{name} at minam"
        );
        assert_eq!(*size, bytes.len() as i64);
        let file = federation
            .data_dir("minam")
            .join("blobs")
            .join(&hex_digest[..2])
            .join(&hex_digest);
        let on_disk = std::fs::read(&file).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&on_disk)),
            hex_digest,
            "{}",
            file.display()
        );
    }
    // oefa's copy was received under the clerk's registry number, then forwarded.
    assert_eq!(
        count_rows(
            &federation.store_path("oefa"),
            &format!(
                "SELECT COUNT(*) FROM filings WHERE direction = {} AND tracking_code = '{code}' \
                 AND status = {} AND internal_registry_number = 'OEFA-INT-2026-0042'",
                Direction::Inbound as i32,
                FilingStatus::Forwarded as i32
            )
        ),
        1
    );

    // The answer travelled back to senamhi, where the citizen filed, intact.
    let answered = format!(
        "SELECT COUNT(*) FROM filings f JOIN documents d ON d.filing_id = f.id \
         WHERE f.direction = {} AND f.kind = {} AND f.tracking_code = '{code}' AND hex(d.sha256) = '{}'",
        Direction::Inbound as i32,
        TransferKind::Answer as i32,
        hex::encode_upper(Sha256::digest(&answer))
    );
    eventually("the answer to reach senamhi", async || {
        (count_rows(&senamhi_store, &answered) >= 1).then_some(())
    })
    .await;
    assert_eq!(count_rows(&senamhi_store, &answered), 1, "exactly one copy");

    // An operator at oefa replays the dead letter of a bad record.
    let key = format!("web-bad-record-{}", std::process::id());
    produce_raw(&federation.topic_inbox("oefa"), &key, b"not an envelope").await;
    let oefa_store = federation.store_path("oefa");
    let letters = |store: &Path| {
        count_rows(
            store,
            &format!("SELECT COUNT(*) FROM dead_letters WHERE record_key = '{key}'"),
        )
    };
    eventually("the bad record to be dead-lettered", async || {
        (letters(&oefa_store) >= 1).then_some(())
    })
    .await;
    let operator = run_browser(
        "operator",
        &[
            ("ECO_WEB_OEFA", web_addr(&federation, "oefa")),
            ("ECO_CLERK_TOKEN", CLERK.into()),
            ("ECO_OPERATOR_TOKEN", OPERATOR.into()),
            ("ECO_DEAD_LETTER_KEY", key.clone()),
        ],
    );
    let id = operator["dead_letter_id"].as_i64().unwrap();
    assert_eq!(
        count_rows(
            &oefa_store,
            &format!(
                "SELECT COUNT(*) FROM dead_letters WHERE id = {id} AND replayed_at_ms > 0 AND discarded_at_ms = 0"
            )
        ),
        1,
        "the console's replay is recorded"
    );
    // The replay really went back to the inbox: still not an envelope, the
    // record was dead-lettered once more, and the operator discarded that one.
    assert_eq!(letters(&oefa_store), 2);
    let discarded = operator["discarded_id"].as_i64().unwrap();
    assert_eq!(
        count_rows(
            &oefa_store,
            &format!(
                "SELECT COUNT(*) FROM dead_letters WHERE id = {discarded} AND discarded_at_ms > 0 \
                      AND discarded_by = 'noc' AND discard_reason LIKE 'Registro de prueba%'"
            )
        ),
        1
    );
}

/// One HTTP/1.1 exchange over a fresh connection: (status, head, body).
async fn http(addr: &str, request: &[u8]) -> (u16, String, String) {
    let (status, head, body) = http_bytes(addr, request).await;
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// [`http`], with the body as bytes (a PDF, a ZIP file).
async fn http_bytes(addr: &str, request: &[u8]) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(answer.len());
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let body = answer.get(split + 4..).unwrap_or_default().to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, body)
}

fn form_post(path: &str, cookie: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The `Set-Cookie` header that sets `name` in a response's head.
fn set_cookie<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// Opens the sign-in form as a browser does: returns its CSRF cookie
/// (`eco_entrada=...`) and the token the form carries.
async fn sign_in_form(addr: &str, headers: &str) -> (String, String) {
    let request =
        format!("GET /entrar HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n");
    let (status, head, page) = http(addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{head}");
    let cookie =
        set_cookie(&head, "eco_entrada").unwrap_or_else(|| panic!("no CSRF cookie: {head}"));
    let csrf = csrf_of(&page);
    assert_eq!(
        cookie.split(';').next().unwrap(),
        format!("eco_entrada={csrf}")
    );
    (cookie.split(';').next().unwrap().to_owned(), csrf)
}

/// Posts the sign-in form (fetched first) with `token` and the extra
/// request `headers` (each ending in CRLF): the answer.
async fn post_sign_in(addr: &str, token: &str, headers: &str) -> (u16, String, String) {
    let (cookie, csrf) = sign_in_form(addr, headers).await;
    let body = format!("csrf={csrf}&token={token}");
    let request = format!(
        "POST /entrar HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nCookie: {cookie}\r\n\
         {headers}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http(addr, request.as_bytes()).await
}

/// Signs in with `token`; returns the session cookie (`eco_sesion=...`).
async fn sign_in(addr: &str, token: &str) -> String {
    let (status, head, _) = post_sign_in(addr, token, "").await;
    assert_eq!(status, 303, "{head}");
    let cookie =
        set_cookie(&head, "eco_sesion").unwrap_or_else(|| panic!("no session cookie: {head}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_checks_roles_and_csrf_and_an_aborted_upload_leaves_nothing() {
    let system = "tok-web-system";
    let federation = Federation::with_settings(
        "web-guard",
        &["senamhi", "oefa"],
        &format!("{}{}", settings(), token_entry("sgd", "system", system)),
    );
    let _nodes: [Running; 2] = federation.start_all().await;
    let addr = web_addr(&federation, "senamhi");
    let get = |path: &str, cookie: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n")
            .into_bytes()
    };

    // Every answer carries the security headers.
    let (status, head, body) = http(&addr, &get("/", "")).await;
    assert_eq!(status, 200);
    let head_lower = head.to_lowercase();
    for header in [
        "content-security-policy: default-src 'self'",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
    ] {
        assert!(head_lower.contains(header), "{header} missing: {head}");
    }
    assert!(body.contains("<html lang=\"es\">"), "Spanish by default");

    // The desk and the dashboard ask for a sign-in; a system token is refused.
    let (status, head, _) = http(&addr, &get("/mesa", "")).await;
    assert_eq!(status, 303);
    assert!(head.contains("location: /entrar?volver=%2Fmesa"), "{head}");
    let (status, _, body) = post_sign_in(&addr, system, "").await;
    assert_eq!(status, 401);
    assert!(body.contains("La clave no es válida"), "{body}");

    // A clerk's form without the session's CSRF token is refused.
    let clerk = sign_in(&addr, CLERK).await;
    let (status, _, _) = http(&addr, &get("/mesa", &clerk)).await;
    assert_eq!(status, 200);
    let (status, _, _) = http(&addr, &get("/operacion", &clerk)).await;
    assert_eq!(status, 403, "a clerk is not an operator");
    let (status, _, body) = http(
        &addr,
        &form_post(
            "/mesa/tramite/SENAMHI-2026-AAAAAAAA/archivar",
            &clerk,
            "action_id=x&note=y",
        ),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Formulario vencido"), "{body}");

    // An upload cut off half-way: no filing, no file left behind.
    let csrf = {
        let (_, _, page) = http(&addr, &get("/mesa/nuevo", &clerk)).await;
        let at = page
            .find("name=\"csrf\" value=\"")
            .expect("the form has a CSRF token")
            + 19;
        page[at..at + 64].to_owned()
    };
    let boundary = "ecointegra-test-boundary";
    let mut fields = String::new();
    for (name, value) in [
        ("csrf", csrf.as_str()),
        ("header.sender_party.document_type", "DNI"),
        ("header.sender_party.document_number", "45781236"),
        ("header.sender_party.name", "María Quispe Mamani"),
        ("header.destination", "oefa"),
        ("header.subject", "Solicitud"),
        ("header.folio_count", "1"),
    ] {
        fields.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    fields.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"documents\"; filename=\"informe.pdf\"\r\n\
         Content-Type: application/pdf\r\n\r\n"
    ));
    // More than an upload holds in memory before it writes (256 KiB), less
    // than the request promises: the document's file exists when the
    // browser goes away.
    let promised = fields.len() + 1_000_000;
    let mut request = format!(
        "POST /mesa/nuevo HTTP/1.1\r\nHost: localhost\r\nCookie: {clerk}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {promised}\r\n\r\n{fields}"
    )
    .into_bytes();
    request.extend(pdf("Informe", 400_000, 3));
    {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(addr.trim_start_matches("http://"))
            .await
            .unwrap();
        stream.write_all(&request).await.unwrap();
        // The upload is under way: its temporary file exists.
        let tmp = federation.data_dir("senamhi").join("tmp");
        eventually("the upload to start (its temporary file)", async || {
            (files_in(&tmp) > 0).then_some(())
        })
        .await;
        // The browser goes away mid-document.
    }
    let tmp = federation.data_dir("senamhi").join("tmp");
    eventually("the cut-off upload's file to go (files left)", async || {
        let left = files_in(&tmp);
        if left == 0 { Ok(()) } else { Err(left) }
    })
    .await;
    assert_eq!(
        count_rows(
            &federation.store_path("senamhi"),
            "SELECT COUNT(*) FROM filings"
        ),
        0
    );

    // Signing out ends the session.
    let (status, _, _) = http(&addr, &form_post("/salir", &clerk, &format!("csrf={csrf}"))).await;
    assert_eq!(status, 303);
    let (status, _, _) = http(&addr, &get("/mesa", &clerk)).await;
    assert_eq!(status, 303, "the old cookie no longer opens the desk");
}

fn get_request(path: &str, cookie: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n"
    )
    .into_bytes()
}

/// A multipart form as a browser sends it: text fields, then files.
fn multipart_post(
    path: &str,
    cookie: &str,
    fields: &[(&str, &str)],
    files: &[(&str, &str, &[u8])],
) -> Vec<u8> {
    let boundary = "ecointegra-test-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .into_bytes(),
        );
    }
    for (name, file, bytes) in files {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n\
                 Content-Type: application/pdf\r\n\r\n"
            )
            .into_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").into_bytes());
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nCookie: {cookie}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend(body);
    request
}

/// The text of a page after the `n`th `marker`, up to the next tag or quote.
fn text_after(page: &str, marker: &str, n: usize) -> String {
    let (at, _) = page
        .match_indices(marker)
        .nth(n)
        .unwrap_or_else(|| panic!("no {marker:?} #{n} in {page}"));
    let rest = &page[at + marker.len()..];
    rest[..rest.find(['<', '"']).unwrap_or(rest.len())].to_owned()
}

/// The CSRF token of the first form of a page.
fn csrf_of(page: &str) -> String {
    text_after(page, "name=\"csrf\" value=\"", 0)
}

/// Markup a citizen or another institution typed: `<`, `>`, `"`, `&` and `'`.
const SUBJECT: &str = r#"Asunto <script>alert("asunto&1")</script> 'de' prueba"#;
const SENDER: &str = r#"María <script>alert("remitente&2")</script> O'Brien"#;
/// A file name cannot hold `/` (nor, from a browser, `"`).
const DOCUMENT: &str = "<script>alert('documento&3')<.pdf";
const ANSWER: &str = "<script>alert('respuesta&4')<.pdf";

/// `page` shows `raw` as text: escaped, never as markup.
fn assert_escaped(what: &str, page: &str, raw: &str) {
    let escaped = raw
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    assert!(
        !page.contains(raw),
        "{what}: the raw markup {raw:?} is in the page:\n{page}"
    );
    assert!(
        !page.contains("<script>alert"),
        "{what}: a script from the input is in the page:\n{page}"
    );
    assert!(
        page.contains(&escaped),
        "{what}: {escaped:?} is not in the page:\n{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_a_filing_is_shown_escaped_to_clerks_and_citizens() {
    let federation = Federation::with_settings("web-escape", &["senamhi", "oefa"], &settings());
    let _senamhi = federation.start("senamhi").await;
    let _oefa = federation.start("oefa").await;
    let senamhi = web_addr(&federation, "senamhi");
    let oefa = web_addr(&federation, "oefa");

    let clerk = sign_in(&senamhi, CLERK).await;
    let (_, _, page) = http(&senamhi, &get_request("/mesa/nuevo", &clerk)).await;
    let csrf = csrf_of(&page);
    let fields = |folios: &'static str| {
        vec![
            ("csrf", csrf.as_str()),
            ("header.sender_party.document_type", "DNI"),
            ("header.sender_party.document_number", "45781236"),
            ("header.sender_party.name", SENDER),
            ("header.destination", "oefa"),
            ("header.subject", SUBJECT),
            ("header.folio_count", folios),
        ]
    };
    let document = pdf("Solicitud", 2_000, 5);

    // A refused form comes back with what was typed, in field values.
    let (status, _, page) = http(
        &senamhi,
        &multipart_post(
            "/mesa/nuevo",
            &clerk,
            &fields(r#""><script>alert("folios&0")</script>"#),
            &[("documents", DOCUMENT, &document)],
        ),
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert_escaped("the refused form's subject", &page, SUBJECT);
    assert_escaped("the refused form's sender", &page, SENDER);
    assert_escaped(
        "the refused form's folios",
        &page,
        r#""><script>alert("folios&0")</script>"#,
    );

    let (status, head, _) = http(
        &senamhi,
        &multipart_post(
            "/mesa/nuevo",
            &clerk,
            &fields("2"),
            &[("documents", DOCUMENT, &document)],
        ),
    )
    .await;
    assert_eq!(status, 303, "{head}");
    let cargo = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("a redirect to the cargo")
        .to_owned();
    let (status, _, page) = http(&senamhi, &get_request(&cargo, &clerk)).await;
    assert_eq!(status, 200);
    for (what, raw) in [
        ("subject", SUBJECT),
        ("sender", SENDER),
        ("document", DOCUMENT),
    ] {
        assert_escaped(&format!("the desk's cargo: {what}"), &page, raw);
    }
    let code = text_after(&page, "class=\"code big\">", 0);
    let verification = text_after(&page, "class=\"code big\">", 1);

    // The clerk at the destination sees the filing as it was typed.
    eventually("the filing to reach oefa", async || {
        match inbound_count(&federation, "oefa") {
            0 => Err(0),
            n => Ok(n),
        }
    })
    .await;
    let oefa_clerk = sign_in(&oefa, CLERK).await;
    let (status, _, page) = http(&oefa, &get_request("/mesa", &oefa_clerk)).await;
    assert_eq!(status, 200);
    assert_escaped("oefa's inbox: subject", &page, SUBJECT);
    assert_escaped("oefa's inbox: sender", &page, SENDER);
    let oefa_csrf = csrf_of(&page);
    let filing = format!("/mesa/tramite/{code}");
    let (status, _, page) = http(&oefa, &get_request(&filing, &oefa_clerk)).await;
    assert_eq!(status, 200);
    for (what, raw) in [
        ("subject", SUBJECT),
        ("sender", SENDER),
        ("document", DOCUMENT),
    ] {
        assert_escaped(&format!("oefa's filing page: {what}"), &page, raw);
    }

    // oefa receives it and answers with a document; the answer goes back.
    let (status, head, _) = http(
        &oefa,
        &form_post(
            &format!("{filing}/recibir"),
            &oefa_clerk,
            &format!("csrf={oefa_csrf}&action_id=r1&registry_number=OEFA-1&office=Mesa"),
        ),
    )
    .await;
    assert_eq!(status, 303, "{head}");
    let answer = pdf("Respuesta", 2_000, 9);
    let (status, head, _) = http(
        &oefa,
        &multipart_post(
            &format!("{filing}/atender"),
            &oefa_clerk,
            &[
                ("csrf", &oefa_csrf),
                ("action_id", "a1"),
                ("note", "Atendido"),
            ],
            &[("documents", ANSWER, &answer)],
        ),
    )
    .await;
    assert_eq!(status, 303, "{head}");
    let answered = format!(
        "SELECT COUNT(*) FROM filings WHERE direction = {} AND kind = {} AND tracking_code = '{code}'",
        Direction::Inbound as i32,
        TransferKind::Answer as i32
    );
    eventually("the answer to reach senamhi", async || {
        match count_rows(&federation.store_path("senamhi"), &answered) {
            0 => Err(0),
            n => Ok(n),
        }
    })
    .await;

    // At senamhi the page names the copy it shows (the answer it received)
    // and links the other one (the record of what it sent), which shows too.
    let (status, _, page) = http(&senamhi, &get_request(&filing, &clerk)).await;
    assert_eq!(status, 200);
    assert!(page.contains("recibida de"), "{page}");
    assert!(page.contains("Otras copias en esta entidad"), "{page}");
    let other = format!("{filing}?copia=");
    let start = page.find(&other).expect("a link to the other copy") + other.len();
    let sent = &page[start..start + 32];
    let (status, _, page) = http(&senamhi, &get_request(&format!("{other}{sent}"), &clerk)).await;
    assert_eq!(status, 200);
    assert!(page.contains("registro del envío a"), "{page}");
    assert_escaped("senamhi's sent copy: document", &page, DOCUMENT);

    // The citizen's timeline lists the answer's documents; the cargo, the
    // documents of every signed receipt.
    let codes = format!("codigo={code}&verificacion={verification}");
    let (status, _, page) =
        http(&senamhi, &get_request(&format!("/seguimiento?{codes}"), "")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("class=\"timeline\""), "{page}");
    assert_escaped("the citizen's timeline: answer", &page, ANSWER);
    let (status, _, page) = http(&senamhi, &get_request(&format!("/cargo?{codes}"), "")).await;
    assert_eq!(status, 200, "{page}");
    assert_escaped("the citizen's cargo: document", &page, DOCUMENT);
    assert_escaped("the citizen's cargo: answer", &page, ANSWER);

    // What a citizen types into the tracking form comes back escaped too.
    let (status, _, page) = http(
        &senamhi,
        &get_request(
            "/seguimiento?codigo=%22%3E%3Cscript%3Ealert(%22codigo%261%22)%3C%2Fscript%3E&verificacion=x",
            "",
        ),
    )
    .await;
    assert_eq!(status, 404, "{page}");
    assert_escaped(
        "the tracking form",
        &page,
        r#""><script>alert("codigo&1")</script>"#,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_short_session_cookie_or_csrf_token_is_refused() {
    let federation = Federation::with_settings("web-tamper", &["senamhi"], &settings());
    let _senamhi = federation.start("senamhi").await;
    let addr = web_addr(&federation, "senamhi");

    // The session cookie keeps its attributes (no Secure over plain HTTP).
    let (status, head, _) = post_sign_in(&addr, CLERK, "").await;
    assert_eq!(status, 303, "{head}");
    let set_cookie =
        set_cookie(&head, "eco_sesion").unwrap_or_else(|| panic!("no session cookie: {head}"));
    let mut attributes: Vec<&str> = set_cookie.split("; ").skip(1).collect();
    attributes.sort_unstable();
    assert_eq!(
        attributes,
        ["HttpOnly", "Path=/", "SameSite=Strict"],
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let id = cookie.strip_prefix("eco_sesion=").unwrap().to_owned();
    assert_eq!(id.len(), 64, "{cookie}");

    let (status, _, page) = http(&addr, &get_request("/mesa", &cookie)).await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&page);
    assert_eq!(csrf.len(), 64, "{csrf}");

    // One character changed, one missing, one more, half, none: no session.
    let flip = |s: &str| {
        let last = if s.ends_with('0') { "1" } else { "0" };
        format!("{}{last}", &s[..s.len() - 1])
    };
    for (what, forged) in [
        ("tampered", flip(&id)),
        ("one short", id[..63].to_owned()),
        ("one long", format!("{id}0")),
        ("half", id[..32].to_owned()),
        ("empty", String::new()),
    ] {
        let (status, head, _) = http(
            &addr,
            &get_request("/mesa", &format!("eco_sesion={forged}")),
        )
        .await;
        assert_eq!(
            status, 303,
            "a {what} session cookie opened the desk: {head}"
        );
        assert!(head.contains("location: /entrar?volver=%2Fmesa"), "{head}");
    }

    // With the real session, a form whose CSRF token is not the session's
    // is refused and changes nothing.
    let archive = "/mesa/tramite/SENAMHI-2026-AAAAAAAA/archivar";
    for (what, forged) in [
        ("tampered", flip(&csrf)),
        ("one short", csrf[..63].to_owned()),
        ("one long", format!("{csrf}0")),
        ("a prefix", csrf[..8].to_owned()),
        ("empty", String::new()),
    ] {
        let (status, _, body) = http(
            &addr,
            &form_post(
                archive,
                &cookie,
                &format!("csrf={forged}&action_id=x&note=y"),
            ),
        )
        .await;
        assert_eq!(status, 403, "a {what} CSRF token was taken: {body}");
        assert!(body.contains("Formulario vencido"), "{body}");
        let (status, _, body) = http(
            &addr,
            &form_post("/salir", &cookie, &format!("csrf={forged}")),
        )
        .await;
        assert_eq!(status, 403, "a {what} CSRF token signed out: {body}");
    }
    let (status, _, _) = http(&addr, &get_request("/mesa", &cookie)).await;
    assert_eq!(status, 200, "the session is still open");

    // The real token signs out, and the cookie is emptied with the same
    // attributes and expired.
    let (status, head, _) = http(
        &addr,
        &form_post("/salir", &cookie, &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, 303, "{head}");
    let cleared = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("the cookie is not cleared: {head}"));
    let mut attributes: Vec<&str> = cleared.split("; ").collect();
    attributes.sort_unstable();
    assert_eq!(
        attributes,
        [
            "HttpOnly",
            "Max-Age=0",
            "Path=/",
            "SameSite=Strict",
            "eco_sesion="
        ],
        "{cleared}"
    );
    let (status, _, _) = http(&addr, &get_request("/mesa", &cookie)).await;
    assert_eq!(status, 303, "the session is closed");
}

/// A GET with extra request `headers` (each ending in CRLF).
fn get_with(path: &str, cookie: &str, headers: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nCookie: {cookie}\r\n\
         {headers}\r\n"
    )
    .into_bytes()
}

/// What an attacker tries on the sign-in: a form posted from elsewhere
/// (no CSRF token), return paths that lead to another site, a forged
/// `X-Forwarded-*` from a client that is not a trusted proxy, and locking
/// every clerk out by failing tracking look-ups behind the shared proxy.
/// Honest use keeps working, and a sign-in outlives a restart of the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_resists_csrf_open_redirects_forged_proxies_and_lock_outs() {
    let proxied = settings().replace("[web]\n", "[web]\ntrusted_proxies = [\"127.0.0.1\"]\n");
    let federation = Federation::with_settings("web-sign-in", &["senamhi"], &proxied);
    let direct = Federation::with_settings("web-sign-in-direct", &["oefa"], &settings());
    let senamhi = federation.start("senamhi").await;
    let oefa = direct.start("oefa").await;
    let addr = web_addr(&federation, "senamhi");
    let oefa_addr = web_addr(&direct, "oefa");

    // CSRF: a sign-in without the form's token, or with another one, is
    // refused, and opens no session.
    let body = format!("token={CLERK}");
    let (status, head, _) = http(&addr, &form_post("/entrar", "", &body)).await;
    assert_eq!(status, 403, "{head}");
    assert!(set_cookie(&head, "eco_sesion").is_none(), "{head}");
    let (cookie, csrf) = sign_in_form(&addr, "").await;
    // The form's token with its last character changed (to another one).
    let last = if csrf.ends_with('0') { '1' } else { '0' };
    let forged = format!("csrf={}{last}&token={CLERK}", &csrf[..63]);
    let (status, head, _) = http(&addr, &form_post("/entrar", &cookie, &forged)).await;
    assert_eq!(status, 403, "{head}");
    assert!(set_cookie(&head, "eco_sesion").is_none(), "{head}");
    let (other_cookie, _) = sign_in_form(&addr, "").await;
    let mixed = format!("csrf={csrf}&token={CLERK}");
    let (status, _, _) = http(&addr, &form_post("/entrar", &other_cookie, &mixed)).await;
    assert_eq!(status, 403, "a token from another form");

    // Return paths: only a path on this site.
    for evil in [
        "/\t/evil.example",
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "/ /evil.example",
        "/\u{1}/evil.example",
        "evil.example",
    ] {
        let volver = url_encode(evil);
        let (cookie, csrf) = sign_in_form(&addr, "").await;
        let body = format!("csrf={csrf}&volver={volver}&token={CLERK}");
        let (status, head, _) = http(&addr, &form_post("/entrar", &cookie, &body)).await;
        assert_eq!(status, 303, "{evil:?}: {head}");
        assert!(head.contains("\r\nlocation: /mesa\r\n"), "{evil:?}: {head}");
        let (status, head, _) = http(
            &addr,
            &get_request(&format!("/idioma?lang=en&volver={volver}"), ""),
        )
        .await;
        assert_eq!(status, 303, "{evil:?}: {head}");
        assert!(head.contains("\r\nlocation: /\r\n"), "{evil:?}: {head}");
    }
    let (cookie, csrf) = sign_in_form(&addr, "").await;
    let back = url_encode("/mesa/nuevo?x=1");
    let body = format!("csrf={csrf}&volver={back}&token={CLERK}");
    let (_, head, _) = http(&addr, &form_post("/entrar", &cookie, &body)).await;
    assert!(head.contains("\r\nlocation: /mesa/nuevo?x=1\r\n"), "{head}");

    // The session cookie is Secure when a trusted proxy says the request
    // came over TLS; a client that says so itself is not believed.
    let https = "X-Forwarded-Proto: https\r\nX-Forwarded-For: 198.51.100.20\r\n";
    let (_, head, _) = post_sign_in(&addr, CLERK, https).await;
    let secure = set_cookie(&head, "eco_sesion").unwrap();
    assert!(secure.contains("; Secure"), "{secure}");
    let (_, head, _) = post_sign_in(&oefa_addr, CLERK, https).await;
    let plain = set_cookie(&head, "eco_sesion").unwrap();
    assert!(
        !plain.contains("Secure"),
        "a forged X-Forwarded-Proto was believed: {plain}"
    );

    // Behind the proxy, one citizen's failed look-ups lock out that citizen
    // only: not the clerks behind the same proxy, not even that citizen's
    // sign-in.
    let citizen = "X-Forwarded-For: 198.51.100.7\r\n";
    let lookup = "/seguimiento?codigo=SENAMHI-2026-AAAAAAAA&verificacion=WRONG123";
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(http(&addr, &get_with(lookup, "", citizen)).await.0);
    }
    assert_eq!(statuses[..10], [404; 10], "{statuses:?}");
    assert_eq!(statuses[10], 429, "{statuses:?}");
    // Another address of the citizen's IPv6 /64 would be the same client;
    // this one is another.
    let clerk = "X-Forwarded-For: 198.51.100.8\r\n";
    assert_eq!(http(&addr, &get_with(lookup, "", clerk)).await.0, 404);
    assert_eq!(post_sign_in(&addr, CLERK, clerk).await.0, 303);
    assert_eq!(post_sign_in(&addr, CLERK, citizen).await.0, 303);
    // Failed sign-ins have their own limit, per client too.
    let guesser = "X-Forwarded-For: 2001:db8:7:7::1\r\n";
    for n in 0..10 {
        let (status, _, _) = post_sign_in(&addr, "guess", guesser).await;
        assert_eq!(status, 401, "attempt {n}");
    }
    let same_64 = "X-Forwarded-For: 2001:db8:7:7:ffff::2\r\n";
    let (status, _, body) = post_sign_in(&addr, CLERK, same_64).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("Demasiados intentos"), "{body}");
    assert_eq!(post_sign_in(&addr, CLERK, clerk).await.0, 303);

    // Without trusted proxies, forwarding headers are ignored: the lock-out
    // is the connection's address, whatever a client writes.
    for n in 0..10 {
        let forged = format!("X-Forwarded-For: 203.0.113.{n}\r\n");
        assert_eq!(post_sign_in(&oefa_addr, "guess", &forged).await.0, 401);
    }
    let fresh = "X-Forwarded-For: 203.0.113.99\r\n";
    assert_eq!(post_sign_in(&oefa_addr, CLERK, fresh).await.0, 429);

    // A session outlives a restart of the node; signing out ends it.
    let session = sign_in(&addr, CLERK).await;
    senamhi.shutdown().await;
    let senamhi = federation.start("senamhi").await;
    let addr = web_addr(&federation, "senamhi");
    let (status, head, page) = http(&addr, &get_request("/mesa", &session)).await;
    assert_eq!(status, 200, "signed out by a restart: {head}");
    let csrf = csrf_of(&page);
    let (status, _, _) = http(
        &addr,
        &form_post("/salir", &session, &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, 303);
    let (status, _, _) = http(&addr, &get_request("/mesa", &session)).await;
    assert_eq!(status, 303, "the session ended");
    senamhi.shutdown().await;
    oefa.shutdown().await;
}

/// Percent-encodes everything but unreserved characters.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs a tool on a file the test wrote; its standard output.
fn tool(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (tests/browser/setup.sh installs it): {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a reader of a PDF sees: its text (pdftotext), and the QR code on its
/// first page, rendered (pdftoppm) and decoded (zbarimg).
fn read_pdf(dir: &Path, name: &str, pdf: &[u8]) -> (String, String) {
    assert!(
        pdf.starts_with(b"%PDF-"),
        "not a PDF: {:?}",
        &pdf[..pdf.len().min(64)]
    );
    std::fs::write(dir.join(format!("{name}.pdf")), pdf).unwrap();
    let text = tool(dir, "pdftotext", &["-layout", &format!("{name}.pdf"), "-"]);
    tool(
        dir,
        "pdftoppm",
        &[
            "-png",
            "-r",
            "150",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            &format!("{name}.pdf"),
            name,
        ],
    );
    let qr = tool(
        dir,
        "zbarimg",
        &["--quiet", "--raw", &format!("{name}.png")],
    );
    (text, qr.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cargos_print_as_pdfs_with_a_qr_code_and_evidence_downloads_verify() {
    let federation = Federation::with_settings("web-pdf", &["senamhi", "oefa"], &settings());
    let [mut senamhi, _oefa] = federation.start_all().await;
    let authority = hex::encode(federation.authority().public_key().as_bytes());
    // Beside the browser test's screenshots, which that test clears.
    let dir = artifacts().with_file_name("cargo-pdf");
    std::fs::create_dir_all(&dir).unwrap();
    let doc = Doc::new("solicitud de información.pdf", 20_000, 3);
    let filed = deliver(
        &mut senamhi.client,
        header("oefa", "Consulta"),
        std::slice::from_ref(&doc),
    )
    .await;
    let code = filed.tracking_code.clone();
    let addr = web_addr(&federation, "senamhi");
    let query = format!(
        "codigo={}&verificacion={}",
        url_encode(&code),
        url_encode(&filed.verification_code)
    );

    // The citizen's cargo de recepción: the receipt, the document's digest,
    // and a QR code of the link that verifies the receipt, which does.
    let (status, head, pdf) =
        http_bytes(&addr, &get_request(&format!("/cargo.pdf?{query}"), "")).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: application/pdf"), "{head}");
    let (text, qr) = read_pdf(&dir, "recepcion", &pdf);
    assert!(
        text.contains("Cargo de recepción") && text.contains(&code),
        "{text}"
    );
    assert!(text.contains(&doc.sha256_hex()), "{text}");
    assert!(text.contains("solicitud de información.pdf"), "{text}");
    let verify_path = format!("/verificar?codigo={code}&recibo=");
    let at = qr.find(&verify_path).unwrap_or_else(|| panic!("QR: {qr}"));
    let (status, _, page) = http(&addr, &get_request(&qr[at..], "")).await;
    assert_eq!(status, 200);
    assert!(page.contains("Cargo auténtico"), "{page}");

    // The clerk's cargo de presentación: both codes, the digest, and a QR
    // code of the tracking link (without the verification code).
    let cookie = sign_in(&addr, CLERK).await;
    let path = format!("/mesa/tramite/{code}/cargo.pdf");
    let (status, _, _) = http_bytes(&addr, &get_request(&path, "")).await;
    assert_eq!(status, 303, "the desk's cargo needs a signed-in clerk");
    let (status, head, pdf) = http_bytes(&addr, &get_request(&path, &cookie)).await;
    assert_eq!(status, 200, "{head}");
    let (text, qr) = read_pdf(&dir, "presentacion", &pdf);
    assert!(
        text.contains(&code) && text.contains(&filed.verification_code),
        "{text}"
    );
    assert!(text.contains(&doc.sha256_hex()), "{text}");
    assert!(qr.ends_with(&format!("/seguimiento?codigo={code}")), "{qr}");
    assert!(!qr.contains(&filed.verification_code), "{qr}");

    // Evidence: the citizen's without documents, the clerk's with them; both
    // verify offline. A wrong verification code gets no bundle.
    let verify = |name: &str, zip: &[u8]| {
        let (ok, text) = verify_evidence(&dir.join(name), zip, &authority, "es");
        assert!(ok, "{name}: {text}");
        text
    };
    let (status, head, zip) =
        http_bytes(&addr, &get_request(&format!("/evidencia?{query}"), "")).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: application/zip"), "{head}");
    let text = verify("ciudadano.zip", &zip);
    assert!(!text.contains("Documento"), "{text}");
    let (status, _, zip) = http_bytes(
        &addr,
        &get_request(&format!("/mesa/tramite/{code}/evidencia"), &cookie),
    )
    .await;
    assert_eq!(status, 200);
    let text = verify("mesa.zip", &zip);
    assert!(
        text.contains("Documento solicitud de información.pdf: íntegro"),
        "{text}"
    );
    let wrong = format!(
        "codigo={}&verificacion=ZZZZ-ZZZZ-ZZZZ-ZZZZ",
        url_encode(&code)
    );
    let (status, _, _) = http_bytes(&addr, &get_request(&format!("/evidencia?{wrong}"), "")).await;
    assert_eq!(status, 404);
}
