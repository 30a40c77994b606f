//! PIDE's hub side, served to this institution's SGD: each operation of
//! `IOTramiteService`, answered as the contract has it. A request the node
//! cannot read is a SOAP Fault; one it reads but refuses is an answer with a
//! `vcodres` other than `0000` and a `vdesres` that names the field, and
//! stores nothing.

use super::Pide;
use super::xml::{self, Call, Fault};
use crate::audit::Actor;
use crate::config::Role;
use crate::error::Error;
use crate::lifecycle::validate;
use crate::lifecycle::workflow::{self, Action};
use crate::store::sgd::SgdRequest;
use crate::submit::DocPart;
use base64::Engine;
use ecointegra_proto::v1::{
    Direction, DocumentHeader, FilingHeader, IdentityDocumentType, Party, SgdCargo, SgdDocument,
};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::sync::mpsc;

/// `vcodres` of success: callers test exactly this string.
const OK: &str = "0000";
/// `vcodres` of a status query for a CUO the node does not know.
const NOT_FOUND: &str = "0001";
/// `vcodres` of a refused request.
const REFUSED: &str = "-1";

/// Why a request is refused: a `vcodres` and a `vdesres`.
struct Refusal {
    code: &'static str,
    description: String,
}

fn refuse(field: &str, why: impl std::fmt::Display) -> Refusal {
    Refusal {
        code: REFUSED,
        description: format!("{field}: {why}"),
    }
}

/// Answers one call.
pub(super) async fn answer(pide: &Pide, call: Call) -> Result<String, Fault> {
    match call.operation.as_str() {
        "recepcionarTramiteResponse" => Ok(result(
            "recepcionarTramiteResponseResponse",
            recepcionar(pide, &call).await,
        )),
        "cargoResponse" => Ok(result("cargoResponseResponse", cargo(pide, &call).await)),
        "consultarTramiteResponse" => Ok(consultar(pide, &call).await),
        "getTipoDocumento" => Ok(document_types(pide)),
        "getCUO" | "getCUOEntidad" => cuo(pide, &call).await,
        other => Err(Fault(format!(
            "operation {other} is not an operation of IOTramite"
        ))),
    }
}

/// A `RespuestaTramite` / `RespuestaCargoTramite`.
fn result(element: &str, outcome: Result<String, Refusal>) -> String {
    let (code, description) = match outcome {
        Ok(description) => (OK, description),
        Err(refusal) => (refusal.code, refusal.description),
    };
    let mut out = String::from("<return>");
    xml::required(&mut out, "vcodres", code);
    xml::required(&mut out, "vdesres", &description);
    out.push_str("</return>");
    xml::message(xml::HUB_NS, element, &out)
}

/// Refuses a request whose `vrucentrem` is not this institution's RUC;
/// returns the RUC.
fn sender_is_me(pide: &Pide, call: &Call) -> Result<String, Refusal> {
    let me = my_ruc(pide)?;
    let sender = call.get("vrucentrem").trim();
    if sender != me {
        return Err(refuse(
            "vrucentrem",
            format!("{sender:?} is not this institution's RUC ({me})"),
        ));
    }
    Ok(me)
}

/// This institution's RUC, or the refusal of a node the directory gives none.
fn my_ruc(pide: &Pide) -> Result<String, Refusal> {
    pide.my_ruc().ok_or_else(|| Refusal {
        code: REFUSED,
        description: "the sector directory gives this institution no RUC; ask the sector \
                      authority to sign its entry with one"
            .into(),
    })
}

fn int(call: &Call, field: &str) -> Result<i64, Refusal> {
    let text = call.get(field).trim();
    if text.is_empty() {
        return Err(refuse(field, "is required (xs:int)"));
    }
    let n: i64 = text
        .parse()
        .map_err(|_| refuse(field, format!("{text:?} is not an integer")))?;
    if n < 0 {
        return Err(refuse(field, format!("{n} is negative")));
    }
    if n > i64::from(i32::MAX) {
        return Err(refuse(field, format!("{n} is above xs:int")));
    }
    Ok(n)
}

/// A filing the SGD sends to another entity.
async fn recepcionar(pide: &Pide, call: &Call) -> Result<String, Refusal> {
    let desk = &pide.desk;
    let me = sender_is_me(pide, call)?;
    let recipient = call.get("vrucentrec").trim();
    let directory = desk.trust.directory();
    let destination = directory
        .by_ruc(recipient)
        .ok_or_else(|| {
            refuse(
                "vrucentrec",
                format!("no institution of the sector directory has RUC {recipient:?}"),
            )
        })?
        .clone();
    drop(directory);
    if let Some(reason) = destination.inactive_reason(ecointegra_broker::now_ms()) {
        return Err(refuse("vrucentrec", reason));
    }
    let cuo = call.get("vcuo").trim();
    if cuo.is_empty() {
        return Err(refuse("vcuo", "is required"));
    }
    if !validate::digits(cuo, 10) {
        return Err(refuse("vcuo", format!("{cuo:?} is not a CUO: 10 digits")));
    }
    let annex_count = int(call, "snumanx")?;
    if annex_count != call.annexes.len() as i64 {
        return Err(refuse(
            "snumanx",
            format!(
                "says {annex_count} annexes; lstanexos names {}",
                call.annexes.len()
            ),
        ));
    }
    let folios = int(call, "snumfol")?;
    if call.get("bpdfdoc").trim().is_empty() {
        return Err(refuse(
            "bpdfdoc",
            "is required: the main document, a PDF in base64",
        ));
    }
    let pdf = xml::base64(call.get("bpdfdoc")).map_err(|why| refuse("bpdfdoc", why))?;
    let max = desk.config.transfer.max_document_size;
    if pdf.len() as u64 > max {
        return Err(refuse(
            "bpdfdoc",
            format!(
                "{} bytes; a document takes at most {max} (transfer.max_document_size)",
                pdf.len()
            ),
        ));
    }
    if !pdf.starts_with(b"%PDF-") {
        return Err(refuse("bpdfdoc", "is not a PDF (a PDF starts with %PDF-)"));
    }
    let main_name = call.get("vnomdoc").trim();
    if main_name.is_empty() {
        return Err(refuse(
            "vnomdoc",
            "is required: the main document's file name",
        ));
    }
    let url = call.get("vurldocanx").trim();
    if !call.annexes.is_empty() && url.is_empty() {
        return Err(refuse(
            "vurldocanx",
            format!("is required to fetch the {} annexes", call.annexes.len()),
        ));
    }
    let sgd = SgdDocument {
        cuo: cuo.to_owned(),
        cuo_ref: call.get("vcuoref").trim().to_owned(),
        sender_ruc: me.clone(),
        recipient_ruc: recipient.to_owned(),
        sender_entity_name: call.get("vnomentemi").trim().to_owned(),
        sender_unit: call.get("vuniorgrem").trim().to_owned(),
        document_type: call.get("ccodtipdoc").trim().to_owned(),
        document_number: call.get("vnumdoc").trim().to_owned(),
        document_date: call.get("dfecdoc").trim().to_owned(),
        destination_unit: call.get("vuniorgdst").trim().to_owned(),
        addressee_name: call.get("vnomdst").trim().to_owned(),
        addressee_position: call.get("vnomcardst").trim().to_owned(),
        sender_person_document_type: call.get("ctipdociderem").trim().to_owned(),
        sender_person_document_number: call.get("vnumdociderem").trim().to_owned(),
        issued_at_destination: false,
    };
    if let Some(broken) = validate::sgd_document(&sgd).pop() {
        return Err(refuse(&broken.field, broken.description));
    }

    // The same CUO: the same request is answered as the first time; other
    // content is refused.
    let digest = request_digest(call);
    let lookup = cuo.to_owned();
    let first = desk
        .store
        .run(move |s| {
            let Some(first) = s.sgd_request(&lookup)? else {
                return Ok(None);
            };
            let verification = s
                .filing_by_transfer(&first.transfer_id)?
                .map(|f| f.data.verification_code)
                .unwrap_or_default();
            Ok(Some((first, verification)))
        })
        .await
        .map_err(|e| Refusal {
            code: REFUSED,
            description: format!("the node cannot take it now; send it again: {e}"),
        })?;
    if let Some((first, verification)) = first {
        return if first.request_sha256 == digest {
            Ok(accepted(&first.tracking_code, &verification))
        } else {
            Err(refuse(
                "vcuo",
                format!(
                    "CUO {cuo} was already used for another filing ({}); a CUO is used once",
                    first.tracking_code
                ),
            ))
        };
    }

    let name = if sgd.sender_entity_name.is_empty() {
        desk.trust
            .directory()
            .get(desk.institution())
            .map(|i| i.name.clone())
            .unwrap_or_default()
    } else {
        sgd.sender_entity_name.clone()
    };
    let header = FilingHeader {
        destination: destination.id.clone(),
        subject: call.get("vasu").trim().to_owned(),
        sender_party: Some(Party {
            name,
            document_type: IdentityDocumentType::Ruc as i32,
            document_number: me.clone(),
            email: String::new(),
        }),
        folio_count: u32::try_from(folios).unwrap_or(u32::MAX),
        idempotency_key: format!("pide:{cuo}"),
        filing_type: String::new(),
        corrects_tracking_code: String::new(),
        sgd: Some(sgd),
    };
    let documents = documents(pide, (main_name.to_owned(), pdf), call.annexes.clone(), url);
    let actor = Actor::new(pide.config.username.clone(), Role::System, None);
    let answer = crate::submit::accept(desk, &actor, header, documents)
        .await
        .map_err(refusal)?;
    let request = SgdRequest {
        request_sha256: digest.clone(),
        tracking_code: answer.tracking_code.clone(),
        transfer_id: answer.transfer_id.clone(),
    };
    let cuo = cuo.to_owned();
    let recorded = desk
        .store
        .run(move |s| s.record_sgd_request(&cuo, &request))
        .await
        .map_err(refusal)?;
    if recorded.request_sha256 != digest {
        return Err(refuse(
            "vcuo",
            "was used at the same time for another filing; a CUO is used once",
        ));
    }
    Ok(accepted(&answer.tracking_code, &answer.verification_code))
}

/// What a taken filing is answered: the codes the citizen follows it with.
fn accepted(tracking_code: &str, verification_code: &str) -> String {
    format!(
        "Trámite recibido; código de seguimiento {tracking_code}, código de verificación {verification_code}"
    )
}

/// SHA-256 of what a request says: every field and annex name, in order.
fn request_digest(call: &Call) -> Vec<u8> {
    let mut hash = Sha256::new();
    for (name, value) in &call.fields {
        for part in [name.as_bytes(), value.as_bytes()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
    }
    for annex in &call.annexes {
        hash.update((annex.len() as u64).to_be_bytes());
        hash.update(annex.as_bytes());
    }
    hash.finalize().to_vec()
}

/// A refusal from what the filing rules said, each field named as PIDE
/// names it.
fn refusal(error: Error) -> Refusal {
    match error {
        Error::InvalidArgument(violations) => {
            let first = violations.into_iter().next();
            let (field, why) = first.map_or(("request".to_owned(), String::new()), |v| {
                (pide_field(&v.field), v.description)
            });
            refuse(&field, why)
        }
        other => Refusal {
            code: REFUSED,
            description: other.to_string(),
        },
    }
}

/// PIDE's name for a field of ecointegra's rules.
fn pide_field(field: &str) -> String {
    if let Some(rest) = field.strip_prefix("header.sgd.") {
        return rest.to_owned();
    }
    if let Some(rest) = field.strip_prefix("documents[") {
        let (index, tail) = rest.split_once(']').unwrap_or((rest, ""));
        let name_part = tail.trim_start_matches('.') == "name";
        return match index.parse::<usize>() {
            Ok(0) if name_part => "vnomdoc".into(),
            Ok(0) => "bpdfdoc".into(),
            Ok(i) if name_part => format!("lstanexos[{}].vnomdoc", i - 1),
            Ok(i) => format!("lstanexos[{}]", i - 1),
            Err(_) => "bpdfdoc".into(),
        };
    }
    match field {
        "header.subject" => "vasu",
        "header.folio_count" => "snumfol",
        "header.destination" => "vrucentrec",
        "documents" => "bpdfdoc",
        f if f.starts_with("header.sender_party.name") => "vnomentemi",
        f if f.starts_with("header.sender_party") => "vrucentrem",
        other => other,
    }
    .to_owned()
}

/// The filing's documents as the desk takes them: the main PDF, then each
/// annex fetched from `vurldocanx` as it is read (with the request's size
/// caps and a timeout per annex).
fn documents(
    pide: &Pide,
    (name, pdf): (String, Vec<u8>),
    annexes: Vec<String>,
    base: &str,
) -> tokio_stream::wrappers::ReceiverStream<crate::error::Result<DocPart>> {
    let (tx, rx) = mpsc::channel(4);
    let base = if base.ends_with('/') {
        base.to_owned()
    } else {
        format!("{base}/")
    };
    let timeout = Duration::from_secs(pide.config.fetch_timeout_secs);
    tokio::spawn(async move {
        let main = DocumentHeader {
            name,
            media_type: "application/pdf".into(),
            declared_size: pdf.len() as u64,
        };
        if tx.send(Ok(DocPart::Document(main))).await.is_err()
            || tx.send(Ok(DocPart::Chunk(pdf.into()))).await.is_err()
        {
            return;
        }
        for (i, annex) in annexes.into_iter().enumerate() {
            let url = format!("{base}{}", super::sgd::path_segment(&annex));
            if let Err(why) = fetch(&tx, &annex, &url, timeout).await {
                let _ = tx
                    .send(Err(Error::invalid(
                        format!("documents[{}]", i + 1),
                        format!("{annex:?} cannot be fetched from {url}: {why}"),
                    )))
                    .await;
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Streams one annex into the desk; fails past `timeout` or on any answer
/// but 200.
async fn fetch(
    tx: &mpsc::Sender<crate::error::Result<DocPart>>,
    name: &str,
    url: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let late = || format!("no whole answer within {} s", timeout.as_secs());
    let response = tokio::time::timeout_at(
        deadline,
        crate::outcall::send(
            http::Method::GET,
            url,
            &[],
            crate::outcall::full(Vec::new()),
        ),
    )
    .await
    .map_err(|_| late())??;
    if response.status() != http::StatusCode::OK {
        return Err(format!("it answered {}", response.status()));
    }
    let media_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let header = DocumentHeader {
        name: name.to_owned(),
        media_type,
        declared_size: 0,
    };
    if tx.send(Ok(DocPart::Unsized(header))).await.is_err() {
        return Ok(());
    }
    let mut body = response.into_body();
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| late())?;
        let Some(frame) = frame else {
            return Ok(());
        };
        let frame = frame.map_err(|e| format!("the download broke off: {e}"))?;
        if let Ok(data) = frame.into_data()
            && tx.send(Ok(DocPart::Chunk(data))).await.is_err()
        {
            return Ok(());
        }
    }
}

/// The SGD of a destination answers a filing delivered to it: received
/// (`R`) or observed (`O`).
async fn cargo(pide: &Pide, call: &Call) -> Result<String, Refusal> {
    let desk = &pide.desk;
    let me = my_ruc(pide)?;
    let (sender, recipient) = (call.get("vrucentrem").trim(), call.get("vrucentrec").trim());
    if sender != me && recipient != me {
        return Err(refuse(
            "vrucentrec",
            format!("neither vrucentrem nor vrucentrec is this institution's RUC ({me})"),
        ));
    }
    let cuo = call.get("vcuo").trim().to_owned();
    if !validate::digits(&cuo, 10) {
        return Err(refuse("vcuo", format!("{cuo:?} is not a CUO: 10 digits")));
    }
    let lookup = cuo.clone();
    let filing = desk
        .store
        .run(move |s| s.filing_by_cuo(&lookup, Direction::Inbound))
        .await
        .map_err(refusal)?
        .ok_or_else(|| {
            refuse(
                "vcuo",
                format!("no filing with CUO {cuo} was delivered to this institution"),
            )
        })?;
    let pdf = match call.get("bcarstd").trim() {
        "" => Vec::new(),
        text => {
            let pdf = xml::base64(text).map_err(|why| refuse("bcarstd", why))?;
            if !pdf.starts_with(b"%PDF-") {
                return Err(refuse("bcarstd", "is not a PDF (a PDF starts with %PDF-)"));
            }
            // The cargo travels back in one notice, in one Kafka record.
            let max = desk.config.kafka.max_record_bytes as usize / 2;
            if pdf.len() > max {
                return Err(refuse(
                    "bcarstd",
                    format!("{} bytes; a cargo PDF takes at most {max}", pdf.len()),
                ));
            }
            pdf
        }
    };
    let cargo = SgdCargo {
        flag: call.get("cflgest").trim().to_owned(),
        registry_number: call.get("vnumregstd").trim().to_owned(),
        registry_year: call.get("vanioregstd").trim().to_owned(),
        registered_at: call.get("dfecregstd").trim().to_owned(),
        unit: call.get("vuniorgstd").trim().to_owned(),
        user: call.get("vusuregstd").trim().to_owned(),
        observation: call.get("vobs").trim().to_owned(),
        annexes_received: call.get("vdesanxstdrec").trim().to_owned(),
        pdf,
    };
    if let Some(broken) = validate::sgd_cargo(&cargo).pop() {
        return Err(refuse(&broken.field, broken.description));
    }
    let action = match cargo.flag.as_str() {
        "R" => Action::Receive {
            registry_number: cargo.registry_number.clone(),
            office: cargo.unit.clone(),
            cargo: Some(cargo.clone()),
        },
        _ => Action::Observe {
            reason: cargo.observation.clone(),
            cargo: Some(cargo.clone()),
        },
    };
    let actor = Actor::new(
        if cargo.user.is_empty() {
            pide.config.username.clone()
        } else {
            cargo.user.clone()
        },
        Role::Clerk,
        None,
    );
    workflow::act(
        desk,
        filing.tracking_code.clone(),
        format!("pide-cargo-{cuo}-{}", cargo.flag),
        action,
        &actor,
    )
    .await
    .map_err(|e| match e {
        Error::InvalidArgument(mut v) if !v.is_empty() => {
            let broken = v.remove(0);
            let field = match broken.field.as_str() {
                "registry_number" => "vnumregstd",
                "office" => "vuniorgstd",
                "reason" => "vobs",
                other => other,
            };
            refuse(field, broken.description)
        }
        other => Refusal {
            code: REFUSED,
            description: other.to_string(),
        },
    })?;
    Ok(format!("Cargo registrado para {}", filing.tracking_code))
}

/// The state of a filing the SGD sent, at its receiver: `P` until the
/// receiver's cargo arrives, then `R` or `O` with the cargo's data.
async fn consultar(pide: &Pide, call: &Call) -> String {
    let element = "consultarTramiteResponseResponse";
    let (filing, cargo) = match sent_by_cuo(pide, call).await {
        Ok(found) => found,
        Err(refusal) => return result(element, Err(refusal)),
    };
    let mut out = String::from("<return>");
    xml::required(&mut out, "vcodres", OK);
    let sgd = filing.sgd.clone().unwrap_or_default();
    match &cargo {
        None => {
            xml::required(&mut out, "vdesres", "Pendiente de recepción");
            xml::field(&mut out, "vcuo", &sgd.cuo);
            xml::field(&mut out, "vcuoref", &sgd.cuo_ref);
            xml::required(&mut out, "cflgest", "P");
        }
        Some(cargo) => {
            let pdf = super::sgd::cargo_pdf(&pide.desk, &filing, cargo);
            xml::required(
                &mut out,
                "vdesres",
                if cargo.flag == "O" {
                    "Observado"
                } else {
                    "Recepcionado"
                },
            );
            xml::field(&mut out, "vcuo", &sgd.cuo);
            xml::field(&mut out, "vcuoref", &sgd.cuo_ref);
            xml::field(&mut out, "vnumregstd", &cargo.registry_number);
            xml::field(&mut out, "vanioregstd", &cargo.registry_year);
            xml::field(&mut out, "vuniorgstd", &cargo.unit);
            xml::field(&mut out, "dfecregstd", &cargo.registered_at);
            xml::field(&mut out, "vusuregstd", &cargo.user);
            xml::field(
                &mut out,
                "bcarstd",
                &base64::engine::general_purpose::STANDARD.encode(&pdf),
            );
            xml::field(&mut out, "vobs", &cargo.observation);
            xml::required(&mut out, "cflgest", &cargo.flag);
        }
    }
    out.push_str("</return>");
    xml::message(xml::HUB_NS, element, &out)
}

/// The filing this institution's SGD sent under the request's `vcuo`, and
/// its cargo if one arrived.
async fn sent_by_cuo(
    pide: &Pide,
    call: &Call,
) -> Result<(crate::store::FilingRow, Option<SgdCargo>), Refusal> {
    sender_is_me(pide, call)?;
    let cuo = call.get("vcuo").trim().to_owned();
    if !validate::digits(&cuo, 10) {
        return Err(refuse("vcuo", format!("{cuo:?} is not a CUO: 10 digits")));
    }
    let lookup = cuo.clone();
    pide.desk
        .store
        .run(move |s| {
            let Some(filing) = s.filing_by_cuo(&lookup, Direction::Outbound)? else {
                return Ok(None);
            };
            let cargo = s.sgd_cargo(&filing.transfer_id)?;
            Ok(Some((filing, cargo)))
        })
        .await
        .map_err(|e| Refusal {
            code: REFUSED,
            description: format!("the node cannot answer now: {e}"),
        })?
        .ok_or_else(|| Refusal {
            code: NOT_FOUND,
            description: format!("vcuo: no filing with CUO {cuo} was sent by this institution"),
        })
}

/// `getTipoDocumento`: the configured document types.
fn document_types(pide: &Pide) -> String {
    let mut out = String::new();
    for t in &pide.config.document_types {
        out.push_str("<return>");
        xml::required(&mut out, "ccodtipdoctra", &t.code);
        xml::required(&mut out, "vnomtipdoctra", &t.name);
        out.push_str("</return>");
    }
    xml::message(xml::HUB_NS, "getTipoDocumentoResponse", &out)
}

/// `getCUO` / `getCUOEntidad`: a new CUO of this node.
async fn cuo(pide: &Pide, call: &Call) -> Result<String, Fault> {
    let desk = &pide.desk;
    if call.operation == "getCUOEntidad" {
        let me = pide.my_ruc().unwrap_or_default();
        let ruc = call.get("ruc").trim();
        if ruc != me {
            return Err(Fault(format!(
                "ruc {ruc:?} is not this institution's RUC ({me})"
            )));
        }
    }
    let prefix = desk
        .trust
        .directory()
        .get(desk.institution())
        .map_or(0, |i| i.cuo_prefix);
    if prefix == 0 {
        return Err(Fault(
            "the sector directory gives this institution no CUO prefix; ask the sector \
             authority to sign its entry with one"
                .into(),
        ));
    }
    let cuo = desk
        .store
        .run(move |s| s.next_cuo(prefix))
        .await
        .map_err(|e| Fault(format!("no CUO can be issued now: {e}")))?;
    let response = format!("{}Response", call.operation);
    let mut out = String::new();
    xml::required(&mut out, "return", &cuo);
    Ok(xml::message(xml::HUB_NS, &response, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_fields_are_named_as_pide_names_them() {
        assert_eq!(pide_field("header.subject"), "vasu");
        assert_eq!(pide_field("header.folio_count"), "snumfol");
        assert_eq!(pide_field("header.sgd.vcuoref"), "vcuoref");
        assert_eq!(pide_field("documents[0].name"), "vnomdoc");
        assert_eq!(pide_field("documents[0]"), "bpdfdoc");
        assert_eq!(pide_field("documents[2].name"), "lstanexos[1].vnomdoc");
        assert_eq!(pide_field("documents[3]"), "lstanexos[2]");
        assert_eq!(
            pide_field("header.sender_party.document_number"),
            "vrucentrem"
        );
    }
}
