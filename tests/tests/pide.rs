//! The PIDE `IOTramite` adapter, against SGDs played by a SOAP stack that is
//! not the node's: Python's zeep as the sending SGD and a small SOAP server as
//! the receiving one (tests/pide/sgd.py, which tests/pide/setup.sh installs),
//! both written from the contract's table (tests/pide/*.wsdl), never from the
//! node's WSDL.
//!
//! The journey: SGD A → node A → Kafka → node B → SGD B (down at first), then
//! SGD B's cargo → node B → node A → SGD A, pushed and by query. And every bad
//! input the contract can bring, refused with the field named and nothing
//! stored.
//!
//! The SGDs are called as blocking child processes: the nodes run in this
//! test's process on other runtime threads (multi-threaded tests).

use ecointegra_proto::v1::FilingStatus;
use ecointegra_tests::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const RUC_SENAMHI: &str = "20131366028";
const RUC_OEFA: &str = "20521286769";
const RUC_IIAP: &str = "20492966658";
const OPERATOR: &str = "tok-pide-operator";

fn python() -> String {
    std::env::var("ECOINTEGRA_PIDE_PYTHON")
        .expect("ECOINTEGRA_PIDE_PYTHON: tests/run.sh sets it (tests/pide/setup.sh)")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pide/sgd.py")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A receiving SGD (entity side) on `port`, writing what it gets into `dir`.
struct SgdServer(Child);

impl SgdServer {
    fn start(port: u16, dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(python())
            .arg(script())
            .args(["serve", "--port", &port.to_string(), "--dir"])
            .arg(dir)
            .args(["--user", "nodo", "--password", "clave-del-nodo"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // It says when it listens.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.starts_with("listening"), "{line}");
        SgdServer(child)
    }
}

impl Drop for SgdServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The node's hub endpoint, as its SGD calls it.
fn endpoint(federation: &Federation, id: &str) -> String {
    let addr = std::fs::read_to_string(federation.data_dir(id).join("pide.addr")).unwrap();
    format!("http://{}/IOTramite", addr.trim())
}

/// Calls an operation as the sending SGD (zeep with the test's hub WSDL):
/// the `return`, or the Fault's message.
fn call(
    url: &str,
    operation: &str,
    request: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let out = Command::new(python())
        .arg(script())
        .args([
            "call",
            "--endpoint",
            url,
            "--user",
            "sgd",
            "--password",
            "clave-del-sgd",
        ])
        .arg(operation)
        .args(["--json", &request.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => Ok(serde_json::from_str(stdout.trim()).unwrap()),
        Some(2) => {
            let fault: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            Err(fault["fault"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned())
        }
        _ => panic!("sgd.py call failed: {out:?}"),
    }
}

/// POSTs raw bytes: (HTTP status, body).
fn raw(url: &str, body: &[u8], soapaction: &str, auth: bool) -> (u64, String) {
    let file = std::env::temp_dir().join(format!(
        "pide-raw-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&file, body).unwrap();
    let mut command = Command::new(python());
    command
        .arg(script())
        .args([
            "raw",
            "--endpoint",
            url,
            "--soapaction",
            soapaction,
            "--body-file",
        ])
        .arg(&file);
    if auth {
        command.args(["--user", "sgd", "--password", "clave-del-sgd"]);
    }
    let out = command.output().unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        answer["status"].as_u64().unwrap(),
        answer["body"].as_str().unwrap().to_owned(),
    )
}

fn pdf(seed: u64, len: u64) -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n".to_vec();
    bytes.extend(Doc::new("x", len, seed).bytes());
    bytes
}

/// The federation: senamhi (A) and oefa (B) with RUCs and CUO prefixes, and
/// iiap, suspended. `settings(id)` is each node's extra TOML.
fn federation(test: &str, settings: impl Fn(&str) -> String) -> Federation {
    let federation = Federation::new(test, &["senamhi", "oefa", "iiap"]);
    for (id, ruc, prefix) in [
        ("senamhi", RUC_SENAMHI, 11),
        ("oefa", RUC_OEFA, 12),
        ("iiap", RUC_IIAP, 13),
    ] {
        federation.edit_entry(id, |e| {
            e.ruc = ruc.into();
            e.cuo_prefix = prefix;
            if id == "iiap" {
                e.status = ecointegra_proto::v1::EntryStatus::Suspended as i32;
            }
        });
        let password = federation.root.join(format!("{id}-sgd.password"));
        std::fs::write(&password, "clave-del-sgd\n").unwrap();
        let node_password = federation.root.join(format!("{id}-node.password"));
        std::fs::write(&node_password, "clave-del-nodo\n").unwrap();
        let extra = format!(
            "\n[pide]\nlisten = \"127.0.0.1:0\"\nusername = \"sgd\"\npassword_file = \"{}\"\n\
             sgd_username = \"nodo\"\nsgd_password_file = \"{}\"\n{}",
            password.display(),
            node_password.display(),
            settings(id)
        );
        federation.write_config(id, &bootstrap(), &extra);
    }
    federation
}

fn recepcion(cuo: &str, pdf: &Path, annexes_url: &str, annexes: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "vrucentrem": RUC_SENAMHI,
        "vrucentrec": RUC_OEFA,
        "vnomentemi": "Servicio Nacional de Meteorología e Hidrología",
        "vuniorgrem": "Dirección de Hidrología",
        "vcuo": cuo,
        "vcuoref": "",
        "ccodtipdoc": "01",
        "vnumdoc": "OFICIO N° 123-2027-SENAMHI/DHI",
        "dfecdoc": "2027-02-01T08:44:55.857-05:00",
        "vuniorgdst": "Dirección de Evaluación Ambiental",
        "vnomdst": "Ana Torres",
        "vnomcardst": "Directora",
        "vasu": "Informe de caudales del río Rímac <2027> & anexos",
        "snumanx": annexes.len(),
        "snumfol": 7,
        "vurldocanx": annexes_url,
        "bpdfdoc@file": pdf,
        "vnomdoc": "oficio-123.pdf",
        "lstanexos": annexes,
        "ctipdociderem": "1",
        "vnumdociderem": "45781236",
    })
}

/// The tracking and verification codes in an accepted filing's answer.
fn codes(answer: &serde_json::Value) -> (String, String) {
    let text = answer["vdesres"].as_str().unwrap();
    let after = |label: &str| {
        text.split(label)
            .nth(1)
            .unwrap_or_else(|| panic!("{label} in {text}"))
            .trim()
            .split([',', ' '])
            .next()
            .unwrap()
            .to_owned()
    };
    (
        after("código de seguimiento"),
        after("código de verificación"),
    )
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

async fn file_appears(what: &str, path: &Path) {
    eventually(what, async || if path.exists() { Ok(()) } else { Err(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filing_travels_from_one_sgd_to_another_and_its_cargo_comes_back() {
    let (port_a, port_b) = (free_port(), free_port());
    let federation = federation("pide-journey", |id| match id {
        "senamhi" => format!(
            "sgd_url = \"http://127.0.0.1:{port_a}/Tramite\"\n\n[web]\nlisten = \"127.0.0.1:0\"\n"
        ),
        "oefa" => format!(
            "sgd_url = \"http://127.0.0.1:{port_b}/Tramite\"\n\n[auth]\n\
             anonymous_role = \"system\"\n{}",
            token_entry("operador", "operator", OPERATOR)
        ),
        _ => String::new(),
    });
    let dir_a = federation.root.join("sgd-a");
    let dir_b = federation.root.join("sgd-b");
    // SGD A serves its annexes to whoever has their link.
    let informe = Doc::new("informe de caudales.xlsx", 300_000, 7).bytes();
    let plano = pdf(8, 90_000);
    std::fs::create_dir_all(dir_a.join("anexos/lote-1")).unwrap();
    std::fs::write(
        dir_a.join("anexos/lote-1/informe de caudales.xlsx"),
        &informe,
    )
    .unwrap();
    std::fs::write(dir_a.join("anexos/lote-1/plano-año.pdf"), &plano).unwrap();
    let main = pdf(9, 200_000);
    let main_path = federation.root.join("oficio-123.pdf");
    std::fs::write(&main_path, &main).unwrap();
    let _sgd_a = SgdServer::start(port_a, &dir_a, &[]);

    let senamhi = federation.start("senamhi").await;
    let oefa = federation.start("oefa").await;
    let hub_a = endpoint(&federation, "senamhi");

    // The WSDL is served; the document types are the sector's.
    let types = call(&hub_a, "getTipoDocumento", serde_json::json!({})).unwrap();
    assert!(
        types
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["ccodtipdoctra"] == "01" && t["vnomtipdoctra"] == "OFICIO"),
        "{types}"
    );
    // CUOs: 10 digits, senamhi's prefix, never the same twice.
    let cuo = call(&hub_a, "getCUO", serde_json::json!({"ip": "10.0.0.5"})).unwrap();
    let cuo = cuo.as_str().unwrap().to_owned();
    let other = call(
        &hub_a,
        "getCUOEntidad",
        serde_json::json!({"ruc": RUC_SENAMHI, "servicio": "3011"}),
    )
    .unwrap();
    assert!(cuo.len() == 10 && cuo.starts_with("11"), "{cuo}");
    assert_ne!(other.as_str().unwrap(), cuo);

    // SGD A sends the filing, with two annexes at its own annex host.
    let annexes = ["informe de caudales.xlsx", "plano-año.pdf"];
    let url = format!("http://127.0.0.1:{port_a}/anexos/lote-1");
    let request = recepcion(&cuo, &main_path, &url, &annexes);
    let answer = call(&hub_a, "recepcionarTramiteResponse", request.clone()).unwrap();
    assert_eq!(answer["vcodres"], "0000", "{answer}");
    let (code, verification) = codes(&answer);
    // The same request again is answered as the first time, and creates nothing.
    let again = call(&hub_a, "recepcionarTramiteResponse", request).unwrap();
    assert_eq!(again, answer);
    let store_a = federation.store_path("senamhi");
    assert_eq!(
        count_rows(
            &store_a,
            &format!("SELECT COUNT(*) FROM filings WHERE cuo = '{cuo}'")
        ),
        1
    );
    let mut client_a = senamhi.client.clone();
    let filing = get(&mut client_a, &code).await.unwrap();
    assert_eq!(filing.sgd.as_ref().unwrap().cuo, cuo);
    assert_eq!(filing.documents.len(), 3);
    assert_eq!(filing.documents[0].sha256, sha256_hex(&main));
    assert_eq!(filing.documents[1].sha256, sha256_hex(&informe));
    assert_eq!(filing.documents[2].sha256, sha256_hex(&plano));

    // oefa's node has it; its SGD is down, so the delivery waits, and the
    // operator sees why.
    let mut client_b = oefa.client.clone();
    wait_for_status(&mut client_b, &code, FilingStatus::Delivered, PATIENCE).await;
    let store_b = federation.store_path("oefa");
    rows_become(
        "the SGD delivery to fail",
        &store_b,
        "SELECT COUNT(*) FROM notifications WHERE channel = 'sgd' AND attempts > 0 AND sent_at_ms = 0",
        1,
    )
    .await;
    let queue = notification_queue(oefa.grpc_addr(), OPERATOR, "sgd").await;
    assert_eq!((queue.pending, queue.failing), (1, 1), "{queue:?}");
    assert!(queue.last_error.contains("cannot connect"), "{queue:?}");

    // SGD B comes up: it takes the filing once, downloads the annexes by
    // their link, and sends its cargo to oefa's node.
    let hub_b = endpoint(&federation, "oefa");
    let _sgd_b = SgdServer::start(
        port_b,
        &dir_b,
        &[
            "--hub",
            &hub_b,
            "--hub-user",
            "sgd",
            "--hub-password",
            "clave-del-sgd",
        ],
    );
    let received = dir_b.join("received").join(&cuo);
    file_appears("SGD B to take the filing", &received.join("request.json")).await;
    let taken = read_json(&received.join("request.json"));
    assert_eq!(taken["vcuo"], cuo.as_str());
    assert_eq!(taken["vrucentrem"], RUC_SENAMHI);
    assert_eq!(taken["vrucentrec"], RUC_OEFA);
    assert_eq!(
        taken["vasu"],
        "Informe de caudales del río Rímac <2027> & anexos"
    );
    assert_eq!(taken["vnumdoc"], "OFICIO N° 123-2027-SENAMHI/DHI");
    assert_eq!(taken["snumanx"], 2);
    assert_eq!(taken["snumfol"], 7);
    assert_eq!(taken["lstanexos"], serde_json::json!(annexes));
    assert_eq!(
        std::fs::read(received.join("oficio-123.pdf")).unwrap(),
        main
    );
    assert_eq!(
        std::fs::read(received.join("anexos/informe de caudales.xlsx")).unwrap(),
        informe
    );
    assert_eq!(
        std::fs::read(received.join("anexos/plano-año.pdf")).unwrap(),
        plano
    );
    // The annexes' link works with its token only.
    let link = taken["vurldocanx"].as_str().unwrap().to_owned();
    let node_b = std::fs::read_to_string(federation.data_dir("oefa").join("pide.addr")).unwrap();
    let path = link.split_once(node_b.trim()).unwrap().1.to_owned();
    let (status, _) = http_get(node_b.trim(), &format!("{path}plano-a%C3%B1o.pdf")).await;
    assert_eq!(status, 200, "{link}");
    let token = path.trim_start_matches("/anexos/").trim_end_matches('/');
    let guessed = path.replace(token, &"A".repeat(token.len()));
    let (status, _) = http_get(node_b.trim(), &format!("{guessed}plano-a%C3%B1o.pdf")).await;
    assert_eq!(status, 404, "another token opens nothing");

    // The cargo: oefa RECEIVED it under SGD B's registry number...
    let sent = dir_b.join("cargos-sent").join(format!("{cuo}.json"));
    file_appears("SGD B to send its cargo", &sent).await;
    let sent = read_json(&sent);
    assert_eq!(sent["return"]["vcodres"], "0000", "{sent}");
    let registry = sent["request"]["vnumregstd"].as_str().unwrap().to_owned();
    wait_for_status(&mut client_b, &code, FilingStatus::Received, PATIENCE).await;
    let at_b = get(&mut client_b, &code).await.unwrap();
    assert_eq!(at_b.internal_registry_number, registry);
    // ... and senamhi's node pushes it to SGD A.
    let pushed = dir_a.join("cargos").join(format!("{cuo}.json"));
    file_appears("the cargo pushed to SGD A", &pushed).await;
    let pushed = read_json(&pushed);
    assert_eq!(pushed["vcuo"], cuo.as_str());
    assert_eq!(pushed["cflgest"], "R");
    assert_eq!(pushed["vnumregstd"], registry.as_str());
    assert_eq!(pushed["vuniorgstd"], sent["request"]["vuniorgstd"]);
    assert_eq!(pushed["vusuregstd"], sent["request"]["vusuregstd"]);
    let cargo_pdf = std::fs::read(dir_a.join("cargos").join(format!("{cuo}.pdf"))).unwrap();
    assert_eq!(
        sha256_hex(&cargo_pdf),
        sent["request"]["bcarstd"]["sha256"].as_str().unwrap(),
        "SGD A gets SGD B's cargo PDF byte for byte"
    );
    // SGD A may also ask.
    let state = call(
        &hub_a,
        "consultarTramiteResponse",
        serde_json::json!({"vrucentrem": RUC_SENAMHI, "vrucentrec": RUC_OEFA, "vcuo": cuo}),
    )
    .unwrap();
    assert_eq!(state["vcodres"], "0000", "{state}");
    assert_eq!(state["cflgest"], "R");
    assert_eq!(state["vnumregstd"], registry.as_str());
    assert_eq!(state["vcuo"], cuo.as_str());
    use base64::Engine;
    let asked_pdf = base64::engine::general_purpose::STANDARD
        .decode(state["bcarstd"].as_str().unwrap())
        .unwrap();
    assert_eq!(asked_pdf, cargo_pdf);

    // Each SGD got each thing once, and refused nothing.
    let lines = |path: PathBuf| std::fs::read_to_string(path).unwrap().lines().count();
    assert_eq!(lines(received.join("calls")), 1);
    rows_become(
        "the cargo push recorded as sent",
        &store_a,
        "SELECT COUNT(*) FROM notifications WHERE channel = 'sgd' AND sent_at_ms > 0",
        1,
    )
    .await;
    assert_eq!(lines(dir_a.join("cargos").join(format!("{cuo}.calls"))), 1);
    assert!(!dir_a.join("errors.log").exists());
    assert!(!dir_b.join("errors.log").exists());

    // The citizen follows every step, and the registration names the CUO.
    let timeline = eventually("senamhi to know oefa's RECEIVED step", async || {
        let timeline = track(senamhi.grpc_addr(), &code, &verification).await;
        if timeline
            .iter()
            .any(|e| e.status == FilingStatus::Received as i32)
        {
            Ok(timeline)
        } else {
            Err(timeline.len())
        }
    })
    .await;
    let statuses: Vec<i32> = timeline.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [
            FilingStatus::Registered as i32,
            FilingStatus::Sent as i32,
            FilingStatus::Delivered as i32,
            FilingStatus::Received as i32,
        ]
    );
    assert_eq!(timeline[0].cuo, cuo);
    // The citizen's page at senamhi's portal shows the CUO with the steps.
    let web = std::fs::read_to_string(federation.data_dir("senamhi").join("web.addr")).unwrap();
    let (status, page) = http_get(
        web.trim(),
        &format!("/seguimiento?codigo={code}&verificacion={verification}"),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&format!("CUO <code>{cuo}</code>")), "{page}");

    // SGD B observes it after all: senamhi's node pushes the observation.
    let observed = call(
        &hub_b,
        "cargoResponse",
        serde_json::json!({
            "vrucentrem": RUC_OEFA, "vrucentrec": RUC_SENAMHI, "vcuo": cuo,
            "vnumregstd": registry, "vanioregstd": "2027",
            "dfecregstd": "2027-02-02T10:00:00.000-05:00",
            "vuniorgstd": "Dirección de Evaluación Ambiental", "vusuregstd": "atorres",
            "vobs": "Falta el anexo de aforos de enero", "cflgest": "O",
        }),
    )
    .unwrap();
    assert_eq!(observed["vcodres"], "0000", "{observed}");
    wait_for_status(&mut client_a, &code, FilingStatus::Observed, PATIENCE).await;
    let pushes = dir_a.join("cargos").join(format!("{cuo}.calls"));
    eventually("the observation pushed to SGD A", async || {
        match lines(pushes.clone()) {
            2 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    let pushed = read_json(&dir_a.join("cargos").join(format!("{cuo}.json")));
    assert_eq!(pushed["cflgest"], "O");
    assert_eq!(pushed["vobs"], "Falta el anexo de aforos de enero");
    assert_eq!(pushed["vusuregstd"], "atorres");
    let state = call(
        &hub_a,
        "consultarTramiteResponse",
        serde_json::json!({"vrucentrem": RUC_SENAMHI, "vrucentrec": RUC_OEFA, "vcuo": cuo}),
    )
    .unwrap();
    assert_eq!(state["cflgest"], "O", "{state}");
    assert!(!dir_a.join("errors.log").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_naming_the_field_and_store_nothing() {
    let port_a = free_port();
    let federation = federation("pide-hostile", |id| {
        if id == "senamhi" {
            "max_request_bytes = 3000000\nfetch_timeout_secs = 2\n\n\
             [transfer]\nmax_document_size = 1000000\nmax_filing_size = 4000000\n"
                .into()
        } else {
            String::new()
        }
    });
    let dir_a = federation.root.join("sgd-a");
    std::fs::create_dir_all(dir_a.join("anexos")).unwrap();
    std::fs::write(dir_a.join("anexos/informe.xlsx"), b"columnas").unwrap();
    let _sgd_a = SgdServer::start(port_a, &dir_a, &[]);
    let senamhi = federation.start("senamhi").await;
    let hub = endpoint(&federation, "senamhi");
    let store = federation.store_path("senamhi");
    let main = federation.root.join("main.pdf");
    std::fs::write(&main, pdf(1, 5_000)).unwrap();
    let annexes_url = format!("http://127.0.0.1:{port_a}/anexos");

    // What cannot be read is a SOAP Fault.
    let envelope = |operation: &str, inner: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><s:Envelope \
             xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:ws=\"http://ws.wsiopidetramite.segdi.gob.pe/\"><s:Body>\
             <ws:{operation}>{inner}</ws:{operation}></s:Body></s:Envelope>"
        )
    };
    let get_cuo = envelope("getCUO", "<ip>1.2.3.4</ip>");
    assert_eq!(raw(&hub, get_cuo.as_bytes(), "", true).0, 200);
    for (what, body, action, words) in [
        (
            "malformed XML",
            "<s:Envelope><s:Body>".to_owned(),
            "",
            "well-formed",
        ),
        (
            "an entity declaration",
            format!(
                "<?xml version=\"1.0\"?><!DOCTYPE lol [<!ENTITY lol \"lol\">]>{}",
                envelope("getCUO", "<ip>&lol;</ip>")
            ),
            "",
            "DTD",
        ),
        (
            "a wrong SOAPAction",
            get_cuo.clone(),
            "urn:cargoResponse",
            "SOAPAction",
        ),
        (
            "an unknown operation",
            envelope("borrarTramite", "<request/>"),
            "",
            "not an operation",
        ),
    ] {
        let (status, answer) = raw(&hub, body.as_bytes(), action, true);
        assert_eq!(status, 500, "{what}: {answer}");
        assert!(
            answer.contains("<faultstring>") && answer.contains(words),
            "{what}: {answer}"
        );
    }
    let (status, answer) = raw(&hub, get_cuo.as_bytes(), "", false);
    assert_eq!(status, 401, "without credentials: {answer}");
    let huge = vec![b' '; 3_100_000];
    let (status, answer) = raw(&hub, &huge, "", true);
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("max_request_bytes"), "{answer}");

    // Contract-level problems: a RespuestaTramite naming the field.
    let cuo = call(&hub, "getCUO", serde_json::json!({})).unwrap();
    let cuo = cuo.as_str().unwrap().to_owned();
    let good = recepcion(&cuo, &main, &annexes_url, &["informe.xlsx"]);
    let not_pdf = federation.root.join("not.pdf");
    std::fs::write(&not_pdf, b"PK\x03\x04 a zip").unwrap();
    let too_large = federation.root.join("large.pdf");
    std::fs::write(&too_large, pdf(2, 1_100_000)).unwrap();
    let with = |changes: serde_json::Value| {
        let mut request = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                request.as_object_mut().unwrap().remove(k);
            } else {
                request[k] = v.clone();
            }
        }
        request
    };
    let cases = [
        (
            "unknown RUC",
            with(serde_json::json!({"vrucentrec": "20100000001"})),
            "vrucentrec",
        ),
        (
            "suspended RUC",
            with(serde_json::json!({"vrucentrec": RUC_IIAP})),
            "suspended",
        ),
        (
            "another sender's RUC",
            with(serde_json::json!({"vrucentrem": RUC_OEFA})),
            "vrucentrem",
        ),
        (
            "missing main document",
            with(serde_json::json!({"bpdfdoc@file": null})),
            "bpdfdoc",
        ),
        (
            "invalid base64",
            with(serde_json::json!({"bpdfdoc@file": null, "bpdfdoc": "no es base64!"})),
            "base64",
        ),
        (
            "not a PDF",
            with(serde_json::json!({"bpdfdoc@file": not_pdf})),
            "not a PDF",
        ),
        (
            "too large",
            with(serde_json::json!({"bpdfdoc@file": too_large})),
            "max_document_size",
        ),
        (
            "negative folios",
            with(serde_json::json!({"snumfol": -1})),
            "snumfol",
        ),
        (
            "negative annex count",
            with(serde_json::json!({"snumanx": -1})),
            "snumanx",
        ),
        (
            "annex count that disagrees",
            with(serde_json::json!({"snumanx": 3})),
            "snumanx",
        ),
        (
            "CUO missing",
            with(serde_json::json!({"vcuo": null})),
            "vcuo",
        ),
        (
            "CUO malformed",
            with(serde_json::json!({"vcuo": "12AB"})),
            "vcuo",
        ),
        (
            "an annex that is not there",
            with(serde_json::json!({"lstanexos": ["falta.xlsx"]})),
            "lstanexos[0]",
        ),
        (
            "an annex that never finishes",
            with(serde_json::json!({"vurldocanx": format!("http://127.0.0.1:{port_a}/slow")})),
            "within 2 s",
        ),
    ];
    for (what, request, words) in cases {
        let answer = call(&hub, "recepcionarTramiteResponse", request).unwrap();
        assert_ne!(answer["vcodres"], "0000", "{what}: {answer}");
        let description = answer["vdesres"].as_str().unwrap();
        assert!(description.contains(words), "{what}: {description}");
    }
    assert_eq!(
        count_rows(&store, "SELECT COUNT(*) FROM filings"),
        0,
        "nothing stored"
    );
    assert_eq!(count_rows(&store, "SELECT COUNT(*) FROM sgd_requests"), 0);
    let temp = federation.data_dir("senamhi").join("blobs");
    let blobs = walk(&temp);
    assert!(blobs.is_empty(), "no document kept: {blobs:?}");
    assert_eq!(
        count_rows(&store, "SELECT COUNT(*) FROM document_contents"),
        0,
        "no document kept in the store"
    );

    // The CUO, once used, is not used again for other content.
    let answer = call(&hub, "recepcionarTramiteResponse", good.clone()).unwrap();
    assert_eq!(answer["vcodres"], "0000", "{answer}");
    let reused = with(serde_json::json!({"vasu": "Otro asunto"}));
    let answer = call(&hub, "recepcionarTramiteResponse", reused).unwrap();
    assert_ne!(answer["vcodres"], "0000", "{answer}");
    assert!(
        answer["vdesres"].as_str().unwrap().contains("vcuo"),
        "{answer}"
    );
    assert_eq!(count_rows(&store, "SELECT COUNT(*) FROM filings"), 1);
    // A status query for a CUO nobody sent.
    let state = call(
        &hub,
        "consultarTramiteResponse",
        serde_json::json!({"vrucentrem": RUC_SENAMHI, "vrucentrec": RUC_OEFA, "vcuo": "1199999999"}),
    )
    .unwrap();
    assert_eq!(state["vcodres"], "0001", "{state}");
    drop(senamhi);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}
