//! PIDE's entity side, called on this institution's SGD: a filing delivered
//! here goes to the SGD's `recepcionarTramiteResponse` (the main document
//! inline, streamed from its file in base64; the annexes by an expiring link
//! on this node), and the cargo of a filing the SGD sent goes to its
//! `cargoResponse`. The notification outbox calls [`Sgd::send`] until the
//! SGD answers `0000`.

use super::xml;
use crate::config::{Config, PideConfig};
use crate::error::Result;
use crate::lifecycle::Desk;
use crate::store::FilingRow;
use crate::store::Store;
use crate::store::blobs::Blobs;
use crate::store::notifications::Told;
use crate::trust::Trust;
use base64::Engine;
use ecointegra_proto::v1::{Direction, SgdCargo, SgdDocument};
use hyper::body::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The longest an SGD may take to answer one call.
const TIMEOUT: Duration = Duration::from_secs(600);
/// The largest answer read from an SGD.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Bytes of a document encoded per piece of the streamed request: a multiple
/// of 3, so base64 pieces join without padding.
const PIECE: usize = 48 * 1024;

/// How the SGD reaches this node's adapter (for annex links and the WSDL).
pub fn public_url(config: &PideConfig) -> String {
    match &config.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", config.listen),
    }
}

/// A file name as one percent-encoded URL path segment.
pub fn path_segment(name: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(name, KEEP).to_string()
}

/// Calls the institution's SGD.
pub struct Sgd {
    store: Store,
    blobs: Blobs,
    trust: Arc<Trust>,
    config: PideConfig,
    url: String,
    /// The `Authorization` header, when the SGD wants credentials.
    authorization: Option<String>,
    institution: String,
    utc_offset_minutes: i32,
}

impl Sgd {
    /// `None` unless `[pide] sgd_url` is set.
    pub fn new(
        config: &Config,
        store: Store,
        blobs: Blobs,
        trust: Arc<Trust>,
    ) -> Result<Option<Self>> {
        let Some(pide) = &config.pide else {
            return Ok(None);
        };
        let Some(url) = pide.sgd_url.clone() else {
            return Ok(None);
        };
        let authorization = match (&pide.sgd_username, &pide.sgd_password_file) {
            (Some(user), Some(file)) => Some(crate::outcall::basic(
                user,
                &super::read_secret(file, "pide.sgd_password_file")?,
            )),
            (Some(user), None) => Some(crate::outcall::basic(user, "")),
            _ => None,
        };
        Ok(Some(Self {
            store,
            blobs,
            trust,
            config: pide.clone(),
            url,
            authorization,
            institution: config.institution.clone(),
            utc_offset_minutes: config.deadlines.utc_offset_minutes,
        }))
    }

    /// Sends one queued item: a delivery, or a cargo.
    pub async fn send(&self, told: &Told) -> std::result::Result<(), String> {
        let outcome = match told.status.as_str() {
            "DELIVERED" => self.deliver(&told.transfer_id).await,
            "RECEIVED" | "OBSERVED" => self.push_cargo(&told.transfer_id).await,
            other => Err(format!("nothing is sent to the SGD for {other}")),
        };
        outcome.map_err(|why| format!("{}: {why}", self.url))
    }

    async fn filing(&self, transfer_id: &str) -> std::result::Result<FilingRow, String> {
        let id = transfer_id.to_owned();
        self.store
            .run(move |s| s.filing_by_transfer(&id))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("transfer {transfer_id} is not at this node"))
    }

    /// `recepcionarTramiteResponse`: the filing, delivered.
    async fn deliver(&self, transfer_id: &str) -> std::result::Result<(), String> {
        let filing = self.filing(transfer_id).await?;
        if filing.direction != Direction::Inbound {
            return Err(format!("transfer {transfer_id} was not delivered here"));
        }
        let sgd = self.fields_of(&filing).await?;
        let annexes: Vec<String> = filing
            .documents
            .iter()
            .skip(1)
            .map(|d| d.name.clone())
            .collect();
        let link = if annexes.is_empty() {
            String::new()
        } else {
            let expires = ecointegra_broker::now_ms() + self.config.link_minutes as i64 * 60_000;
            let id = transfer_id.to_owned();
            let token = self
                .store
                .run(move |s| s.sgd_link(&id, expires))
                .await
                .map_err(|e| e.to_string())?;
            format!("{}/anexos/{token}/", public_url(&self.config))
        };
        let main = filing
            .documents
            .first()
            .ok_or("the filing has no document")?
            .clone();

        let element = "recepcionarTramiteResponse";
        let mut head = xml::open(xml::ENTITY_NS, element);
        head.push_str("<request>");
        for (name, value) in [
            ("vrucentrem", sgd.sender_ruc.as_str()),
            ("vrucentrec", &sgd.recipient_ruc),
            ("vnomentemi", &sgd.sender_entity_name),
            ("vuniorgrem", &sgd.sender_unit),
            ("vcuo", &sgd.cuo),
            ("vcuoref", &sgd.cuo_ref),
            ("ccodtipdoc", &sgd.document_type),
            ("vnumdoc", &sgd.document_number),
            ("dfecdoc", &sgd.document_date),
            ("vuniorgdst", &sgd.destination_unit),
            ("vnomdst", &sgd.addressee_name),
            ("vnomcardst", &sgd.addressee_position),
            ("vasu", &filing.subject),
        ] {
            xml::field(&mut head, name, value);
        }
        xml::required(&mut head, "snumanx", &annexes.len().to_string());
        xml::required(&mut head, "snumfol", &filing.folio_count.to_string());
        xml::field(&mut head, "vurldocanx", &link);
        head.push_str("<bpdfdoc>");
        let mut tail = String::from("</bpdfdoc>");
        xml::field(&mut tail, "vnomdoc", &main.name);
        for annex in &annexes {
            tail.push_str("<lstanexos>");
            xml::field(&mut tail, "vnomdoc", annex);
            tail.push_str("</lstanexos>");
        }
        xml::field(&mut tail, "ctipdociderem", &sgd.sender_person_document_type);
        xml::field(
            &mut tail,
            "vnumdociderem",
            &sgd.sender_person_document_number,
        );
        tail.push_str("</request>");
        tail.push_str(&xml::close(element));

        let file = self
            .store
            .open_document(&self.blobs, &main.sha256, main.size)
            .await
            .map_err(|e| format!("the main document cannot be opened: {e}"))?;
        let (pieces, body) = crate::outcall::channel(4);
        tokio::spawn(async move {
            let _ = stream_base64(file, head, tail, &pieces).await;
        });
        self.call(body).await
    }

    /// The PIDE fields of an inbound filing; one that came without them
    /// (filed at a desk, not by an SGD) gets a CUO of this node first.
    async fn fields_of(&self, filing: &FilingRow) -> std::result::Result<SgdDocument, String> {
        if let Some(sgd) = filing.sgd.clone().filter(|s| !s.cuo.is_empty()) {
            return Ok(sgd);
        }
        let directory = self.trust.directory();
        let me = directory.get(&self.institution);
        let prefix = me.map_or(0, |i| i.cuo_prefix);
        if prefix == 0 {
            return Err(
                "the sector directory gives this institution no CUO prefix: the filing cannot \
                 be given the CUO its SGD needs"
                    .into(),
            );
        }
        let origin = directory.get(&filing.origin);
        let fields = SgdDocument {
            sender_ruc: origin.map(|o| o.ruc.clone()).unwrap_or_default(),
            recipient_ruc: me.map(|i| i.ruc.clone()).unwrap_or_default(),
            sender_entity_name: origin.map(|o| o.name.clone()).unwrap_or_default(),
            document_date: crate::ids::format_local(
                filing.registered_at_ms,
                self.utc_offset_minutes,
            ),
            sender_person_document_type: String::new(),
            issued_at_destination: true,
            ..SgdDocument::default()
        };
        drop(directory);
        let id = filing.id;
        self.store
            .run(move |s| s.ensure_sgd(id, prefix, |cuo| SgdDocument { cuo, ..fields }))
            .await
            .map_err(|e| e.to_string())
    }

    /// `cargoResponse`: the receiver's cargo of a filing the SGD sent.
    async fn push_cargo(&self, transfer_id: &str) -> std::result::Result<(), String> {
        let filing = self.filing(transfer_id).await?;
        let id = transfer_id.to_owned();
        let cargo = self
            .store
            .run(move |s| s.sgd_cargo(&id))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no cargo of transfer {transfer_id} is here"))?;
        let sgd = filing.sgd.clone().unwrap_or_default();
        let pdf = cargo_pdf_with(&self.trust, self.utc_offset_minutes, &filing, &cargo);
        let element = "cargoResponse";
        let mut out = xml::open(xml::ENTITY_NS, element);
        out.push_str("<request>");
        for (name, value) in [
            ("vcuo", sgd.cuo.as_str()),
            ("vcuoref", &sgd.cuo_ref),
            ("vnumregstd", &cargo.registry_number),
            ("vanioregstd", &cargo.registry_year),
            ("dfecregstd", &cargo.registered_at),
            ("vuniorgstd", &cargo.unit),
            ("vusuregstd", &cargo.user),
        ] {
            xml::field(&mut out, name, value);
        }
        xml::field(
            &mut out,
            "bcarstd",
            &base64::engine::general_purpose::STANDARD.encode(&pdf),
        );
        xml::field(&mut out, "vobs", &cargo.observation);
        xml::field(&mut out, "cflgest", &cargo.flag);
        xml::field(&mut out, "vdesanxstdrec", &cargo.annexes_received);
        out.push_str("</request>");
        out.push_str(&xml::close(element));
        self.call(crate::outcall::full(out)).await
    }

    /// POSTs a SOAP request; Ok when the SGD answers `0000`.
    async fn call(&self, body: crate::outcall::Body) -> std::result::Result<(), String> {
        let mut headers = vec![
            ("content-type", "text/xml; charset=utf-8"),
            ("soapaction", "\"\""),
        ];
        if let Some(auth) = &self.authorization {
            headers.push(("authorization", auth.as_str()));
        }
        let exchange = async {
            let response =
                crate::outcall::send(http::Method::POST, &self.url, &headers, body).await?;
            let status = response.status();
            let bytes = crate::outcall::read_capped(response.into_body(), MAX_ANSWER_BYTES).await?;
            if !status.is_success() && !status.is_server_error() {
                return Err(format!("it answered HTTP {status}"));
            }
            let (code, description) =
                xml::result_code(&bytes).map_err(|why| format!("HTTP {status}: {why}"))?;
            if code == "0000" {
                Ok(())
            } else {
                Err(format!("it answered {code}: {description}"))
            }
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
    }
}

/// Writes `head`, the file in base64, and `tail` into a streamed body.
async fn stream_base64(
    mut file: crate::store::blobs::Content,
    head: String,
    tail: String,
    pieces: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) -> std::result::Result<(), ()> {
    let send = |bytes: Bytes| async move { pieces.send(Ok(bytes)).await.map_err(drop) };
    send(Bytes::from(head)).await?;
    let mut buffer = vec![0u8; PIECE];
    loop {
        let mut filled = 0;
        while filled < PIECE {
            match file.read(&mut buffer[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    let _ = pieces.send(Err(e)).await;
                    return Err(());
                }
            }
        }
        if filled > 0 {
            let text = base64::engine::general_purpose::STANDARD.encode(&buffer[..filled]);
            send(Bytes::from(text)).await?;
        }
        if filled < PIECE {
            break;
        }
    }
    send(Bytes::from(tail)).await
}

/// The cargo PDF of a filing: the receiving SGD's own when it sent one,
/// otherwise one this node writes from the cargo's data.
pub fn cargo_pdf(desk: &Desk, filing: &FilingRow, cargo: &SgdCargo) -> Vec<u8> {
    cargo_pdf_with(
        &desk.trust,
        desk.config.deadlines.utc_offset_minutes,
        filing,
        cargo,
    )
}

fn cargo_pdf_with(trust: &Trust, offset: i32, filing: &FilingRow, cargo: &SgdCargo) -> Vec<u8> {
    use crate::evidence::pdf::{Cargo, Section, render};
    if !cargo.pdf.is_empty() {
        return cargo.pdf.clone();
    }
    let directory = trust.directory();
    let name = |id: &str| directory.display_name(id);
    let sgd = filing.sgd.clone().unwrap_or_default();
    let state = if cargo.flag == "O" {
        "Observado"
    } else {
        "Recepcionado"
    };
    let mut fields = vec![
        ("CUO".to_owned(), sgd.cuo.clone()),
        (
            "Código de seguimiento".to_owned(),
            filing.tracking_code.clone(),
        ),
        ("Estado".to_owned(), state.to_owned()),
        (
            "Registro".to_owned(),
            format!("{} ({})", cargo.registry_number, cargo.registry_year),
        ),
        ("Fecha de registro".to_owned(), cargo.registered_at.clone()),
        ("Unidad".to_owned(), cargo.unit.clone()),
        ("Usuario".to_owned(), cargo.user.clone()),
    ];
    if !cargo.observation.is_empty() {
        fields.push(("Observación".to_owned(), cargo.observation.clone()));
    }
    let document = Cargo {
        title: "Cargo de recepción".into(),
        issuer: name(&filing.destination),
        fields,
        sections: vec![Section {
            heading: filing.subject.clone(),
            fields: vec![
                ("Remitente".to_owned(), name(&filing.origin)),
                (
                    "Enviado".to_owned(),
                    crate::ids::format_local(filing.registered_at_ms, offset),
                ),
            ],
            documents: filing
                .documents
                .iter()
                .map(|d| (d.name.clone(), d.size, hex::encode(&d.sha256)))
                .collect(),
            documents_heading: "Documentos".into(),
        }],
        link: String::new(),
        link_caption: String::new(),
    };
    render(&document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annex_names_become_one_path_segment() {
        assert_eq!(path_segment("informe final.pdf"), "informe%20final.pdf");
        assert_eq!(path_segment("a/../b"), "a%2F..%2Fb");
        assert_eq!(path_segment("año.xlsx"), "a%C3%B1o.xlsx");
    }
}
